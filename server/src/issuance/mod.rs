//! Issuance: which registered gold images a workload's evidence matches, and
//! the binding document its SVIDs carry.
//!
//! The [`matcher::Matcher`] is built from images whose signatures were
//! verified when they were loaded; it indexes them by executable digest so a
//! lookup costs the same with ten images or ten thousand. A refusal names,
//! for each candidate image, the first constraint that failed.

pub mod binding;
pub mod matcher;

use std::sync::{Arc, RwLock};

use arc_swap::ArcSwap;

use tokio::sync::watch;

use matcher::Matcher;

/// The images the issuer currently mints for, swapped whole when the set of
/// registered images changes; `Sync` streams follow the generation number.
#[derive(Debug)]
pub struct ImageSet {
    current: ArcSwap<Matcher>,
    generation: watch::Sender<u64>,
}

impl Default for ImageSet {
    fn default() -> Self {
        Self {
            current: ArcSwap::from_pointee(Matcher::default()),
            generation: watch::channel(0).0,
        }
    }
}

impl ImageSet {
    /// The matcher in force.
    pub fn current(&self) -> Arc<Matcher> {
        self.current.load_full()
    }

    /// Puts a new matcher in force and tells the `Sync` streams.
    pub fn replace(&self, matcher: Matcher) {
        self.current.store(Arc::new(matcher));
        self.generation.send_modify(|g| *g += 1);
    }

    /// Follows replacements.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.generation.subscribe()
    }
}

pub use hallmark_proto::evidence_digest;

/// A workload's class, for aggregating its refusals
/// ([`crate::events::RefusalLimiter`]): the hex SHA-256 of what it runs
/// (executable digest, application tree digest, model digest), without its
/// pid, uid, start time, paths or environment. A process restarted in a
/// loop is one class; another executable is another.
pub fn workload_class(evidence: &hallmark_proto::node::WorkloadEvidence) -> String {
    use sha2::{Digest, Sha256};
    let mut hasher = Sha256::new();
    hasher.update(b"exe_sha256=");
    hasher.update(evidence.exe_sha256.as_bytes());
    for (key, tree) in [("app", &evidence.app), ("model", &evidence.model)] {
        hasher.update(b"\n");
        hasher.update(key.as_bytes());
        hasher.update(b"=");
        if let Some(tree) = tree {
            hasher.update(tree.digest.as_bytes());
        }
    }
    hex::encode(hasher.finalize())
}

use std::time::{Duration, SystemTime};

use hallmark_ca::id::TrustDomain;

use crate::convert::unix_secs;
use crate::image::{ImageContext, ImageError, SignaturePolicy, TrustedSigners, VerifiedImage};
use crate::store::{ImageRecord, ImageRetire, Retirement, Store, StoreError};
use matcher::Candidate;

/// What a gold image must satisfy to be registered and to mint. The
/// signers and the signature policy can be replaced while the issuer runs
/// (`SIGHUP`); the trust domain and the TTL cap cannot.
#[derive(Debug)]
pub struct ImagePolicy {
    trusted: RwLock<(Arc<TrustedSigners>, SignaturePolicy)>,
    /// The issuer's trust domain.
    pub trust_domain: TrustDomain,
    /// Cap on image TTLs.
    pub max_svid_ttl: Duration,
}

impl ImagePolicy {
    /// A policy with these signers and signature counts.
    pub fn new(
        signers: Arc<TrustedSigners>,
        policy: SignaturePolicy,
        trust_domain: TrustDomain,
        max_svid_ttl: Duration,
    ) -> Self {
        Self {
            trusted: RwLock::new((signers, policy)),
            trust_domain,
            max_svid_ttl,
        }
    }

    /// Keys whose signatures count now.
    pub fn signers(&self) -> Arc<TrustedSigners> {
        self.trusted
            .read()
            .map_or_else(|e| e.into_inner().0.clone(), |t| t.0.clone())
    }

    /// Signatures required per risk tier now.
    pub fn signature_policy(&self) -> SignaturePolicy {
        self.trusted
            .read()
            .map_or_else(|e| e.into_inner().1, |t| t.1)
    }

    /// Replaces the signers and the signature policy (a reload).
    pub fn replace(&self, signers: Arc<TrustedSigners>, policy: SignaturePolicy) {
        match self.trusted.write() {
            Ok(mut trusted) => *trusted = (signers, policy),
            Err(poisoned) => *poisoned.into_inner() = (signers, policy),
        }
    }

    /// The verification context at `now`.
    pub fn context(&self, now: SystemTime) -> ImageContext {
        ImageContext {
            trust_domain: self.trust_domain.clone(),
            max_svid_ttl: self.max_svid_ttl,
            now,
        }
    }

    /// Re-verifies a stored envelope with today's signers and policy, as of
    /// its registration time (so an image past `not_after` still reads; the
    /// matcher skips it as retired).
    pub fn verify_stored(&self, record: &ImageRecord) -> Result<VerifiedImage, ImageError> {
        let registered = SystemTime::UNIX_EPOCH + Duration::from_secs(record.registered_at);
        crate::image::verify_envelope(
            record.envelope.as_bytes(),
            &self.signers(),
            &self.signature_policy(),
            &self.context(registered),
        )
    }
}

/// Builds the matcher from the store, re-verifying every envelope: the store
/// is not trusted. An image that no longer verifies is logged and left out.
pub fn load_matcher(store: &dyn Store, policy: &ImagePolicy) -> Result<Matcher, StoreError> {
    let mut candidates = Vec::new();
    for record in store.images()? {
        match policy.verify_stored(&record) {
            Ok(verified) => candidates.push(Candidate {
                image: verified.image,
                signers: verified.signers,
                retired: record.retired.is_some(),
            }),
            Err(error) => tracing::error!(
                image = %record.key(),
                %error,
                "stored gold image does not verify; it will not mint"
            ),
        }
    }
    Ok(Matcher::new(candidates))
}

/// Marks images past `not_after` retired (once: a retirement is atomic in
/// the store, so an operator's concurrent one is never overwritten).
/// Returns the records this call retired.
pub fn retire_expired(
    store: &dyn Store,
    policy: &ImagePolicy,
    now: SystemTime,
) -> Result<Vec<ImageRecord>, StoreError> {
    let mut retired = Vec::new();
    for record in store.images()? {
        if record.retired.is_some() {
            continue;
        }
        let Ok(verified) = policy.verify_stored(&record) else {
            continue;
        };
        if verified.image.expired(now) {
            let retirement = Retirement {
                at: unix_secs(now),
                reason: "not_after passed".into(),
                uid: None,
            };
            if let ImageRetire::Retired(record) =
                store.retire_image(&record.name, &record.version, &retirement)?
            {
                retired.push(record);
            }
        }
    }
    Ok(retired)
}

#[cfg(test)]
mod tests {
    use hallmark_proto::node::{TreeEvidence, WorkloadEvidence};

    use super::*;

    fn evidence(pid: u32, uid: u32, exe: &str, model: &str) -> WorkloadEvidence {
        WorkloadEvidence {
            pid,
            uid,
            start_time: u64::from(pid) * 3,
            exe_path: format!("/proc/{pid}/exe"),
            exe_sha256: exe.into(),
            model: Some(TreeEvidence {
                dir: format!("/tmp/{pid}/model"),
                digest: model.into(),
                files: vec![],
            }),
            ..Default::default()
        }
    }

    #[test]
    fn the_workload_class_is_what_runs_not_which_process() {
        let a = workload_class(&evidence(10, 1000, "aa", "sha256:m1"));
        assert_eq!(a, workload_class(&evidence(99, 0, "aa", "sha256:m1")));
        assert_eq!(a.len(), 64);
        assert_ne!(a, workload_class(&evidence(10, 1000, "bb", "sha256:m1")));
        assert_ne!(a, workload_class(&evidence(10, 1000, "aa", "sha256:m2")));
        let mut no_model = evidence(10, 1000, "aa", "sha256:m1");
        no_model.model = None;
        assert_ne!(a, workload_class(&no_model));
        // The per-process digest does move with the pid.
        assert_ne!(
            evidence_digest(&evidence(10, 1000, "aa", "sha256:m1")),
            evidence_digest(&evidence(99, 1000, "aa", "sha256:m1"))
        );
    }
}
