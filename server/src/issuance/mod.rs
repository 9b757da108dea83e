//! Issuance: which registered gold images a workload's evidence matches, and
//! the binding document its SVIDs carry.
//!
//! The [`matcher::Matcher`] is built from images whose signatures were
//! verified when they were loaded; it indexes them by executable digest so a
//! lookup costs the same with ten images or ten thousand. A refusal names,
//! for each candidate image, the first constraint that failed.

pub mod binding;
pub mod matcher;

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};

use sha2::{Digest, Sha256};
use tokio::sync::watch;

use hallmark_proto::node::WorkloadEvidence;

use matcher::Matcher;

/// The images the issuer currently mints for, swapped whole when the set of
/// registered images changes; `Sync` streams follow the generation number.
#[derive(Debug)]
pub struct ImageSet {
    current: RwLock<Arc<Matcher>>,
    generation: watch::Sender<u64>,
}

impl Default for ImageSet {
    fn default() -> Self {
        Self {
            current: RwLock::new(Arc::new(Matcher::default())),
            generation: watch::channel(0).0,
        }
    }
}

impl ImageSet {
    /// The matcher in force.
    pub fn current(&self) -> Arc<Matcher> {
        match self.current.read() {
            Ok(guard) => guard.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// Puts a new matcher in force and tells the `Sync` streams.
    pub fn replace(&self, matcher: Matcher) {
        let matcher = Arc::new(matcher);
        match self.current.write() {
            Ok(mut guard) => *guard = matcher,
            Err(poisoned) => *poisoned.into_inner() = matcher,
        }
        self.generation.send_modify(|g| *g += 1);
    }

    /// Follows replacements.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.generation.subscribe()
    }
}

/// A digest of the evidence for caches and the audit trail: SHA-256 over a
/// canonical text form (fields in a fixed order, environment sorted by
/// name), lowercase hex. Environment values enter only through the hash.
pub fn evidence_digest(evidence: &WorkloadEvidence) -> String {
    let mut hasher = Sha256::new();
    let mut line = |key: &str, value: &str| {
        hasher.update(key.as_bytes());
        hasher.update(b"=");
        hasher.update(value.as_bytes());
        hasher.update(b"\n");
    };
    line("pid", &evidence.pid.to_string());
    line("uid", &evidence.uid.to_string());
    line("gid", &evidence.gid.to_string());
    let gids: Vec<String> = evidence
        .supplementary_gids
        .iter()
        .map(u32::to_string)
        .collect();
    line("gids", &gids.join(","));
    line("exe_path", &evidence.exe_path);
    line("exe_sha256", &evidence.exe_sha256);
    line("start_time", &evidence.start_time.to_string());
    for (key, tree) in [("app", &evidence.app), ("model", &evidence.model)] {
        if let Some(tree) = tree {
            line(key, &format!("{} {}", tree.digest, tree.dir));
        }
    }
    let env: BTreeMap<&String, &String> = evidence.env.iter().collect();
    for (name, value) in env {
        line(&format!("env.{name}"), value);
    }
    line("cgroup", &evidence.cgroup_path);
    line("container", &evidence.container_id);
    hex::encode(hasher.finalize())
}
