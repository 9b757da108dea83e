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

use tokio::sync::watch;

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

pub use hallmark_proto::evidence_digest;
