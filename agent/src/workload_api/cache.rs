//! Workload SVIDs cached per (pid, start time, evidence digest), valid until
//! their half-life, when the workload is measured again and they rotate.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

/// One workload SVID and its key (PKCS#8), as served to the workload.
#[derive(Clone)]
pub struct WorkloadSvid {
    /// The SPIFFE ID.
    pub spiffe_id: String,
    /// DER chain, leaf first.
    pub chain: Vec<Vec<u8>>,
    /// PKCS#8 private key (generated on this node).
    pub key_pkcs8: Vec<u8>,
    /// `name@version` of the gold image (served as the hint).
    pub image: String,
    /// Start of validity.
    pub not_before: SystemTime,
    /// End of validity.
    pub not_after: SystemTime,
}

impl std::fmt::Debug for WorkloadSvid {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WorkloadSvid")
            .field("spiffe_id", &self.spiffe_id)
            .field("image", &self.image)
            .field("not_after", &self.not_after)
            .finish_non_exhaustive()
    }
}

/// The SVIDs of one workload.
#[derive(Debug, Clone)]
pub struct SvidSet {
    /// The SVIDs.
    pub svids: Vec<WorkloadSvid>,
    /// When to re-measure and rotate: the earliest half-life.
    pub renew_at: SystemTime,
}

impl SvidSet {
    /// A set from SVIDs; `renew_at` is the earliest half-life among them.
    pub fn new(svids: Vec<WorkloadSvid>) -> Self {
        let renew_at = svids
            .iter()
            .map(|s| {
                let life = s.not_after.duration_since(s.not_before).unwrap_or_default();
                s.not_before + life / 2
            })
            .min()
            .unwrap_or(SystemTime::UNIX_EPOCH);
        Self { svids, renew_at }
    }
}

/// Cache key: the process and what it was measured to be.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct CacheKey {
    /// Process id.
    pub pid: i32,
    /// Process start time (pins the pid).
    pub start_time: u64,
    /// `hallmark_proto::evidence_digest` of the evidence.
    pub evidence_digest: String,
}

/// The cache.
#[derive(Debug, Default, Clone)]
pub struct SvidCache {
    entries: Arc<Mutex<HashMap<CacheKey, Arc<SvidSet>>>>,
}

impl SvidCache {
    /// A still-fresh set for `key`.
    pub fn get(&self, key: &CacheKey, now: SystemTime) -> Option<Arc<SvidSet>> {
        let entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        entries.get(key).filter(|set| now < set.renew_at).cloned()
    }

    /// Stores a set, dropping entries whose SVIDs all expired.
    pub fn insert(&self, key: CacheKey, set: Arc<SvidSet>, now: SystemTime) {
        let mut entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        entries.retain(|_, s| s.svids.iter().any(|svid| svid.not_after > now));
        entries.insert(key, set);
    }

    /// Forgets every entry of a process (it exited).
    pub fn forget_process(&self, pid: i32, start_time: u64) {
        let mut entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        entries.retain(|k, _| !(k.pid == pid && k.start_time == start_time));
    }

    /// Number of cached workloads.
    pub fn len(&self) -> usize {
        self.entries.lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    /// Whether nothing is cached.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn svid(start: SystemTime, life: u64) -> WorkloadSvid {
        WorkloadSvid {
            spiffe_id: "spiffe://example.org/w".into(),
            chain: vec![],
            key_pkcs8: vec![],
            image: "w@1".into(),
            not_before: start,
            not_after: start + Duration::from_secs(life),
        }
    }

    #[test]
    fn fresh_until_half_life_then_refetched_and_forgotten_on_exit() {
        let t0 = SystemTime::now();
        let cache = SvidCache::default();
        let key = CacheKey {
            pid: 7,
            start_time: 1,
            evidence_digest: "d".into(),
        };
        let set = Arc::new(SvidSet::new(vec![svid(t0, 300), svid(t0, 100)]));
        assert_eq!(set.renew_at, t0 + Duration::from_secs(50));
        cache.insert(key.clone(), set, t0);
        assert!(cache.get(&key, t0 + Duration::from_secs(49)).is_some());
        assert!(cache.get(&key, t0 + Duration::from_secs(50)).is_none());
        let other = CacheKey {
            evidence_digest: "changed".into(),
            ..key.clone()
        };
        assert!(
            cache.get(&other, t0).is_none(),
            "changed evidence never hits"
        );
        cache.forget_process(7, 1);
        assert!(cache.is_empty());
    }
}
