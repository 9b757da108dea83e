//! Workload SVIDs cached per (pid, start time, evidence digest), valid until
//! their half-life, when the workload is measured again and they rotate.
//! Each SVID keeps what it is bound to, so a revocation drops exactly the
//! SVIDs it covers ([`SvidCache::revoke`], [`SvidSet::without_revoked`]).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use crate::revocation::{Bound, Revocation, RevocationSet};

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
    /// Where its lifetime counts from for rotation: the certificate's
    /// notBefore, or when the agent received it if that is later (the
    /// issuer backdates leaves for clock skew, and half of a backdated
    /// lifetime could already be over on arrival).
    pub not_before: SystemTime,
    /// End of validity.
    pub not_after: SystemTime,
    /// The executable digest the SVID binds.
    pub code_sha256: String,
    /// The model digest the SVID binds, if its image names one.
    pub model_digest: Option<String>,
    /// The agent that obtained it (the binding's `node`).
    pub node: String,
}

impl WorkloadSvid {
    /// What the SVID is bound to, for revocations.
    pub fn bound(&self) -> Bound<'_> {
        Bound {
            spiffe_id: &self.spiffe_id,
            image: &self.image,
            code_sha256: &self.code_sha256,
            model_digest: self.model_digest.as_deref(),
            node: &self.node,
        }
    }
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
    /// Some SVIDs were withheld because a revocation covered them: a lift
    /// may give them back, so the set is fetched afresh then.
    pub withheld: bool,
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
        Self {
            svids,
            renew_at,
            withheld: false,
        }
    }

    /// When the first of its SVIDs expires.
    pub fn expires_at(&self) -> SystemTime {
        self.svids
            .iter()
            .map(|s| s.not_after)
            .min()
            .unwrap_or(SystemTime::UNIX_EPOCH)
    }

    /// The SVIDs still valid at `now` (past their half-life or not);
    /// `None` when every one has expired.
    pub fn unexpired(&self, now: SystemTime) -> Option<SvidSet> {
        let svids: Vec<WorkloadSvid> = self
            .svids
            .iter()
            .filter(|s| now < s.not_after)
            .cloned()
            .collect();
        if svids.is_empty() {
            return None;
        }
        let mut set = SvidSet::new(svids);
        set.withheld = self.withheld;
        Some(set)
    }

    /// The set without the SVIDs `revocations` covers, and the first
    /// revocation that removed one; `None` when it covers none of them.
    pub fn without_revoked(&self, revocations: &RevocationSet) -> Option<(SvidSet, Revocation)> {
        if revocations.is_empty() {
            return None;
        }
        let mut first = None;
        let kept: Vec<WorkloadSvid> = self
            .svids
            .iter()
            .filter(|svid| match revocations.covering(&svid.bound()) {
                Some(revocation) => {
                    first.get_or_insert_with(|| revocation.clone());
                    false
                }
                None => true,
            })
            .cloned()
            .collect();
        first.map(|revocation| {
            let mut set = SvidSet::new(kept);
            set.withheld = true;
            (set, revocation)
        })
    }
}

/// Where an SVID's lifetime counts from for rotation: its notBefore, or
/// when it was received if that is later. The issuer backdates leaves for
/// clock skew; half of a backdated lifetime can be over on arrival (a 20 s
/// SVID backdated 30 s), and counting from notBefore would rotate at once,
/// again and again.
pub fn rotation_start(not_before: SystemTime, received_at: SystemTime) -> SystemTime {
    not_before.max(received_at)
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

    /// The SVIDs cached for `key` that have not expired, even past their
    /// half-life: what the agent serves while the issuer is unreachable.
    /// The same `Arc` while the whole set is still valid.
    pub fn get_unexpired(&self, key: &CacheKey, now: SystemTime) -> Option<Arc<SvidSet>> {
        let entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        let set = entries.get(key)?;
        if set.svids.iter().all(|s| now < s.not_after) && !set.svids.is_empty() {
            return Some(set.clone());
        }
        set.unexpired(now).map(Arc::new)
    }

    /// Stores a set, dropping entries whose SVIDs all expired.
    pub fn insert(&self, key: CacheKey, set: Arc<SvidSet>, now: SystemTime) {
        let mut entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        entries.retain(|_, s| s.svids.iter().any(|svid| svid.not_after > now));
        entries.insert(key, set);
    }

    /// Drops every cached SVID `revocations` covers (an entry left with none
    /// goes); returns how many SVIDs were dropped.
    pub fn revoke(&self, revocations: &RevocationSet) -> usize {
        let mut entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        let mut dropped = 0;
        entries.retain(|_, set| match set.without_revoked(revocations) {
            None => true,
            Some((kept, _)) => {
                dropped += set.svids.len() - kept.svids.len();
                let keep = !kept.svids.is_empty();
                *set = Arc::new(kept);
                keep
            }
        });
        dropped
    }

    /// Forgets every entry that had SVIDs withheld (after a lift, so they
    /// are minted afresh).
    pub fn forget_withheld(&self) {
        let mut entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        entries.retain(|_, set| !set.withheld);
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
    use crate::revocation::RevocationKind;

    fn svid(start: SystemTime, life: u64) -> WorkloadSvid {
        WorkloadSvid {
            spiffe_id: "spiffe://example.org/w".into(),
            chain: vec![],
            key_pkcs8: vec![],
            image: "w@1".into(),
            not_before: start,
            not_after: start + Duration::from_secs(life),
            code_sha256: "c0de".into(),
            model_digest: None,
            node: "spiffe://example.org/hallmark/agent/join_token/ab".into(),
        }
    }

    fn image_svid(image: &str) -> WorkloadSvid {
        WorkloadSvid {
            image: image.into(),
            ..svid(SystemTime::now(), 300)
        }
    }

    fn kill(kind: RevocationKind, target: &str) -> RevocationSet {
        RevocationSet::new(vec![Revocation {
            id: "0123456789abcdef".into(),
            kind,
            target: target.into(),
            reason: "r".into(),
            created_at: 0,
        }])
    }

    #[test]
    fn a_revocation_drops_exactly_the_svids_it_covers() {
        let now = SystemTime::now();
        let cache = SvidCache::default();
        let key = |pid| CacheKey {
            pid,
            start_time: 1,
            evidence_digest: "d".into(),
        };
        let both = Arc::new(SvidSet::new(vec![image_svid("a@1"), image_svid("b@1")]));
        cache.insert(key(1), both.clone(), now);
        cache.insert(key(2), Arc::new(SvidSet::new(vec![image_svid("a@1")])), now);
        cache.insert(key(3), Arc::new(SvidSet::new(vec![image_svid("c@1")])), now);

        let (kept, why) = both
            .without_revoked(&kill(RevocationKind::Image, "a"))
            .unwrap();
        assert_eq!(kept.svids.len(), 1);
        assert_eq!(kept.svids[0].image, "b@1");
        assert_eq!(why.id, "0123456789abcdef");
        assert!(
            both.without_revoked(&kill(RevocationKind::Image, "z"))
                .is_none()
        );
        assert!(both.without_revoked(&RevocationSet::default()).is_none());

        assert_eq!(cache.revoke(&kill(RevocationKind::Image, "a")), 2);
        assert_eq!(cache.get(&key(1), now).unwrap().svids.len(), 1);
        assert!(cache.get(&key(2), now).is_none(), "left with none: gone");
        assert_eq!(cache.get(&key(3), now).unwrap().svids[0].image, "c@1");
        // A node revocation of another agent touches nothing.
        assert_eq!(
            cache.revoke(&kill(
                RevocationKind::Node,
                "spiffe://example.org/hallmark/agent/join_token/cd"
            )),
            0
        );
        assert_eq!(cache.len(), 2);
        assert!(cache.get(&key(1), now).unwrap().withheld);
        cache.forget_withheld();
        assert!(cache.get(&key(1), now).is_none());
        assert!(!cache.get(&key(3), now).unwrap().withheld);
    }

    #[test]
    fn a_backdated_short_svid_rotates_at_half_its_life_from_arrival() {
        let received = SystemTime::now();
        let backdated = received - Duration::from_secs(30);
        let mut svid = svid(backdated, 50); // notBefore -30 s, notAfter +20 s
        svid.not_before = rotation_start(svid.not_before, received);
        let set = SvidSet::new(vec![svid]);
        assert_eq!(set.renew_at, received + Duration::from_secs(10));
        // A leaf that is not backdated keeps its own start.
        let later = received + Duration::from_secs(5);
        assert_eq!(rotation_start(later, received), later);
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

    #[test]
    fn unexpired_svids_stay_available_past_half_life_until_they_expire() {
        let t0 = SystemTime::now();
        let cache = SvidCache::default();
        let key = CacheKey {
            pid: 7,
            start_time: 1,
            evidence_digest: "d".into(),
        };
        let set = Arc::new(SvidSet::new(vec![svid(t0, 300), svid(t0, 200)]));
        assert_eq!(set.expires_at(), t0 + Duration::from_secs(200));
        cache.insert(key.clone(), set.clone(), t0);
        let late = t0 + Duration::from_secs(160);
        assert!(cache.get(&key, late).is_none(), "past half-life: not fresh");
        let stale = cache.get_unexpired(&key, late).unwrap();
        assert!(Arc::ptr_eq(&stale, &set), "the same set while all valid");
        let one_left = cache
            .get_unexpired(&key, t0 + Duration::from_secs(250))
            .unwrap();
        assert_eq!(one_left.svids.len(), 1);
        assert_eq!(one_left.expires_at(), t0 + Duration::from_secs(300));
        assert!(
            cache
                .get_unexpired(&key, t0 + Duration::from_secs(300))
                .is_none(),
            "expired SVIDs are never served"
        );
    }
}
