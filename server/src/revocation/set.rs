//! The revocations in force: an index for the hot path, kept in step with
//! the store by one writer, and published to the `Sync` streams.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError, RwLock, RwLockReadGuard};

use tokio::sync::watch;

use hallmark_ca::id::SpiffeId;
use hallmark_proto::node::{self, WorkloadEvidence};

use super::target::image_key;
use super::wire::to_node_proto;
use super::{Lift, LiftOutcome, Revocation, RevocationId, RevocationKind, RevocationTarget};
use crate::image::GoldImage;
use crate::issuance::matcher::RevocationFilter;
use crate::store::{Store, StoreError};

/// Why a kill or a lift was refused, or failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RevocationError {
    /// A revocation in force already names the target.
    #[error(
        "{} is already revoked by kill {} ({}): lift that one first to change the reason",
        .0.target, .0.id, .0.reason
    )]
    AlreadyRevoked(Box<Revocation>),
    /// No revocation has the id.
    #[error("no revocation {0}: `kill list` shows every revocation and its id")]
    NotFound(RevocationId),
    /// The revocation was lifted before.
    #[error("kill {} was already lifted at {} ({})", .0.id, lifted_at(.0), lift_reason(.0))]
    AlreadyLifted(Box<Revocation>),
    /// Random ids kept colliding with stored ones: the random source is broken.
    #[error("cannot allocate a fresh revocation id: the random source repeats itself")]
    IdExhausted,
    /// The store failed; nothing changed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

fn lifted_at(revocation: &Revocation) -> String {
    let at = revocation.lifted.as_ref().map(|l| l.at).unwrap_or_default();
    humantime::format_rfc3339_seconds(std::time::UNIX_EPOCH + std::time::Duration::from_secs(at))
        .to_string()
}

fn lift_reason(revocation: &Revocation) -> &str {
    revocation
        .lifted
        .as_ref()
        .map(|l| l.reason.as_str())
        .unwrap_or_default()
}

/// The revocations in force, indexed by what they name.
#[derive(Debug, Default)]
pub struct RevocationIndex {
    /// Ordered by id.
    all: Vec<Arc<Revocation>>,
    by_kind: HashMap<RevocationKind, HashMap<String, Arc<Revocation>>>,
    /// The wire form, built once per change for every `Sync` stream.
    proto: Arc<Vec<node::Revocation>>,
}

impl RevocationIndex {
    /// Indexes the revocations among `revocations` that are in force.
    pub fn new(revocations: impl IntoIterator<Item = Revocation>) -> Self {
        let mut all: Vec<Arc<Revocation>> = revocations
            .into_iter()
            .filter(Revocation::in_force)
            .map(Arc::new)
            .collect();
        all.sort_by(|a, b| a.id.cmp(&b.id));
        all.dedup_by(|a, b| a.id == b.id);
        let mut by_kind: HashMap<RevocationKind, HashMap<String, Arc<Revocation>>> = HashMap::new();
        for revocation in &all {
            by_kind
                .entry(revocation.target.kind())
                .or_default()
                .entry(revocation.target.index_key())
                .or_insert_with(|| revocation.clone());
        }
        let proto = Arc::new(all.iter().map(|r| to_node_proto(r)).collect());
        Self {
            all,
            by_kind,
            proto,
        }
    }

    /// Number in force.
    pub fn len(&self) -> usize {
        self.all.len()
    }

    /// Whether none is in force.
    pub fn is_empty(&self) -> bool {
        self.all.is_empty()
    }

    /// Every revocation in force, ordered by id.
    pub fn iter(&self) -> impl Iterator<Item = &Revocation> {
        self.all.iter().map(|r| &**r)
    }

    /// The wire form for `Sync`, ordered by id.
    pub fn to_proto(&self) -> Arc<Vec<node::Revocation>> {
        self.proto.clone()
    }

    /// The revocation in force that names exactly `target`.
    pub fn for_target(&self, target: &RevocationTarget) -> Option<&Revocation> {
        self.get(target.kind(), &target.index_key())
    }

    /// The node revocation of `agent`, if one is in force.
    pub fn node(&self, agent: &SpiffeId) -> Option<&Revocation> {
        self.get(RevocationKind::Node, agent.as_str())
    }

    /// The first revocation in force that covers a credential for `image`
    /// minted for `evidence` through `node`.
    pub fn covering(
        &self,
        image: &GoldImage,
        evidence: &WorkloadEvidence,
        node: &SpiffeId,
    ) -> Option<&Revocation> {
        if self.all.is_empty() {
            return None;
        }
        let found = self
            .node(node)
            .or_else(|| self.get(RevocationKind::SpiffeId, image.spiffe_id.as_str()))
            .or_else(|| {
                let key = image_key(image.name.as_str(), image.version.as_str());
                self.get(RevocationKind::Image, &key)
            })
            .or_else(|| self.get(RevocationKind::Image, image.name.as_str()))
            .or_else(|| self.get(RevocationKind::Code, &evidence.exe_sha256))
            .or_else(|| {
                image
                    .model
                    .as_ref()
                    .and_then(|m| self.get(RevocationKind::Model, m.digest.as_str()))
            });
        debug_assert!(found.is_none_or(|r| r.target.matches(image, evidence, node)));
        found
    }

    fn get(&self, kind: RevocationKind, value: &str) -> Option<&Revocation> {
        self.by_kind.get(&kind)?.get(value).map(|r| &**r)
    }
}

impl RevocationFilter for RevocationIndex {
    fn revoked(
        &self,
        image: &GoldImage,
        evidence: &WorkloadEvidence,
        node: &SpiffeId,
    ) -> Option<String> {
        self.covering(image, evidence, node)
            .map(Revocation::describe)
    }
}

/// The set in force, held while minting: a kill waits for the mints under
/// way and every later one sees it.
#[derive(Debug)]
pub struct RevocationGuard<'a>(RwLockReadGuard<'a, Arc<RevocationIndex>>);

impl std::ops::Deref for RevocationGuard<'_> {
    type Target = RevocationIndex;
    fn deref(&self) -> &RevocationIndex {
        &self.0
    }
}

/// The kill switch's state: the store holds the truth, memory the set in
/// force, and one writer at a time moves both (the writer lock holds the
/// next creation sequence number).
pub struct Revocations {
    store: Arc<dyn Store>,
    in_force: RwLock<Arc<RevocationIndex>>,
    published: watch::Sender<Arc<RevocationIndex>>,
    writer: Mutex<u64>,
}

impl std::fmt::Debug for Revocations {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Revocations")
            .field("in_force", &self.current().len())
            .finish_non_exhaustive()
    }
}

impl Revocations {
    /// Loads the revocations in force from the store.
    pub fn load(store: Arc<dyn Store>) -> Result<Self, StoreError> {
        let stored = store.revocations()?;
        let next_seq = stored.iter().map(|r| r.seq).max().unwrap_or(0) + 1;
        let index = Arc::new(RevocationIndex::new(stored));
        if !index.is_empty() {
            tracing::info!(in_force = index.len(), "revocations loaded");
        }
        Ok(Self {
            store,
            in_force: RwLock::new(index.clone()),
            published: watch::channel(index).0,
            writer: Mutex::new(next_seq),
        })
    }

    /// The set in force, for a mint to hold from match to signature.
    pub fn filter(&self) -> RevocationGuard<'_> {
        RevocationGuard(self.in_force.read().unwrap_or_else(PoisonError::into_inner))
    }

    /// A snapshot of the set in force.
    pub fn current(&self) -> Arc<RevocationIndex> {
        self.filter().0.clone()
    }

    /// Follows the set in force (for `Sync` streams): the latest set, once
    /// per change or burst of changes.
    pub fn subscribe(&self) -> watch::Receiver<Arc<RevocationIndex>> {
        self.published.subscribe()
    }

    /// Every revocation on record, lifted ones included, oldest first.
    pub fn list(&self) -> Result<Vec<Revocation>, StoreError> {
        let mut all = self.store.revocations()?;
        all.sort_by(|a, b| (a.seq, a.created_at, &a.id).cmp(&(b.seq, b.created_at, &b.id)));
        Ok(all)
    }

    /// Revokes `target`: durable, then in force, then published. `reason`
    /// must already be checked ([`super::check_reason`]).
    pub fn create(
        &self,
        target: RevocationTarget,
        reason: String,
        uid: Option<u32>,
        now: u64,
    ) -> Result<Revocation, RevocationError> {
        let mut next_seq = self.writer.lock().unwrap_or_else(PoisonError::into_inner);
        let current = self.current();
        if let Some(existing) = current.for_target(&target) {
            return Err(RevocationError::AlreadyRevoked(Box::new(existing.clone())));
        }
        // 64 random bits: a collision is astronomically unlikely, and the
        // store's insert-if-absent turns one into a retry, never an overwrite.
        for _ in 0..4 {
            let revocation = Revocation {
                id: RevocationId::generate(),
                target: target.clone(),
                reason: reason.clone(),
                seq: *next_seq,
                created_at: now,
                created_by_uid: uid,
                lifted: None,
            };
            if self.store.put_revocation_if_absent(&revocation)? {
                *next_seq += 1;
                let next = current
                    .iter()
                    .cloned()
                    .chain(std::iter::once(revocation.clone()));
                self.install(RevocationIndex::new(next));
                tracing::warn!(id = %revocation.id, target = %revocation.target, reason = %revocation.reason, uid, "revocation in force");
                return Ok(revocation);
            }
        }
        Err(RevocationError::IdExhausted)
    }

    /// Lifts revocation `id`: durable, then out of force, then published.
    pub fn lift(
        &self,
        id: &RevocationId,
        reason: String,
        uid: Option<u32>,
        now: u64,
    ) -> Result<Revocation, RevocationError> {
        let _writer = self.writer.lock().unwrap_or_else(PoisonError::into_inner);
        let lift = Lift {
            at: now,
            reason,
            uid,
        };
        match self.store.lift_revocation(id, &lift)? {
            LiftOutcome::Lifted(revocation) => {
                let next = self
                    .current()
                    .iter()
                    .filter(|r| r.id != *id)
                    .cloned()
                    .collect::<Vec<_>>();
                self.install(RevocationIndex::new(next));
                tracing::warn!(id = %revocation.id, target = %revocation.target, reason = %lift.reason, uid, "revocation lifted");
                Ok(revocation)
            }
            LiftOutcome::AlreadyLifted(revocation) => {
                Err(RevocationError::AlreadyLifted(Box::new(revocation)))
            }
            LiftOutcome::NotFound => Err(RevocationError::NotFound(id.clone())),
        }
    }

    /// Puts `index` in force (waiting for mints under way) and publishes it.
    fn install(&self, index: RevocationIndex) {
        let index = Arc::new(index);
        *self
            .in_force
            .write()
            .unwrap_or_else(PoisonError::into_inner) = index.clone();
        self.published.send_replace(index);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::SledStore;

    fn revocations() -> (tempfile::TempDir, Arc<dyn Store>, Revocations) {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn Store> = Arc::new(SledStore::open(dir.path()).unwrap());
        let set = Revocations::load(store.clone()).unwrap();
        (dir, store, set)
    }

    fn code(c: char) -> RevocationTarget {
        RevocationTarget::from_parts(RevocationKind::Code, &c.to_string().repeat(64)).unwrap()
    }

    #[test]
    fn create_and_lift_move_store_memory_and_subscribers_together() {
        let (_dir, store, set) = revocations();
        let mut sub = set.subscribe();
        sub.borrow_and_update();
        let made = set.create(code('1'), "leaked".into(), Some(7), 10).unwrap();
        assert!(sub.has_changed().unwrap());
        assert_eq!(sub.borrow_and_update().len(), 1);
        assert_eq!(set.current().for_target(&code('1')).unwrap().id, made.id);
        assert_eq!(store.revocations().unwrap(), std::slice::from_ref(&made));

        // The same target again is refused while in force; nothing stored.
        let err = set.create(code('1'), "again".into(), None, 11).unwrap_err();
        assert!(matches!(err, RevocationError::AlreadyRevoked(ref r) if r.id == made.id));
        assert!(
            err.to_string()
                .contains(&format!("already revoked by kill {}", made.id))
        );
        assert_eq!(store.revocations().unwrap().len(), 1);
        assert!(!sub.has_changed().unwrap());

        let lifted = set
            .lift(&made.id, "false alarm".into(), Some(8), 12)
            .unwrap();
        assert_eq!(lifted.lifted.as_ref().unwrap().reason, "false alarm");
        assert!(set.current().is_empty());
        assert!(sub.borrow_and_update().is_empty());
        let err = set.lift(&made.id, "twice".into(), None, 13).unwrap_err();
        assert!(
            err.to_string()
                .contains("already lifted at 1970-01-01T00:00:12Z (false alarm)"),
            "{err}"
        );
        let unknown = RevocationId::parse("00000000000000ff").unwrap();
        assert!(matches!(
            set.lift(&unknown, "x".into(), None, 14),
            Err(RevocationError::NotFound(_))
        ));

        // A lifted target may be revoked again; the history is kept.
        set.create(code('1'), "for real".into(), None, 15).unwrap();
        assert_eq!(set.list().unwrap().len(), 2);
        assert_eq!(set.list().unwrap()[0].id, made.id, "oldest first");
    }

    #[test]
    fn an_image_version_is_one_target_however_it_is_spelled() {
        let (_dir, _store, set) = revocations();
        let target = |version: &str| {
            RevocationTarget::from_parts(RevocationKind::Image, &format!("invoice@{version}"))
                .unwrap()
        };
        let made = set
            .create(target("1.0.0"), "bad build".into(), None, 10)
            .unwrap();
        // Another spelling of the version is the same target.
        for again in ["1.0", "1.0.00", "01"] {
            let err = set
                .create(target(again), "again".into(), None, 11)
                .unwrap_err();
            assert!(
                matches!(err, RevocationError::AlreadyRevoked(ref r) if r.id == made.id),
                "{again}: {err}"
            );
        }
        // At mint time it covers the image whatever spelling it was stored
        // with (an earlier release accepted 1.0.00), and no other version.
        let image = |version: &str| {
            GoldImage::from_toml(&format!(
                "name = \"invoice\"\nversion = \"{version}\"\nspiffe_id = \"spiffe://example.org/invoice\"\nowner = \"o\"\npurpose = \"p\"\nrisk_tier = \"low\"\nnot_after = 2099-12-31\n[code]\nsha256 = [\"{}\"]\n",
                "1".repeat(64)
            ))
            .unwrap()
        };
        let evidence = WorkloadEvidence::default();
        let node = SpiffeId::parse("spiffe://example.org/hallmark/agent/join_token/ab").unwrap();
        let index = set.current();
        for covered in ["1.0.0", "1.0.00", "1"] {
            let found = index.covering(&image(covered), &evidence, &node);
            assert_eq!(found.map(|r| &r.id), Some(&made.id), "{covered}");
        }
        assert!(index.covering(&image("1.0.1"), &evidence, &node).is_none());
        assert!(index.covering(&image("10"), &evidence, &node).is_none());
    }

    #[test]
    fn kills_in_the_same_second_are_listed_in_the_order_they_were_made() {
        let dir = tempfile::tempdir().unwrap();
        let made: Vec<RevocationId> = {
            let store: Arc<dyn Store> = Arc::new(SledStore::open(dir.path()).unwrap());
            let set = Revocations::load(store).unwrap();
            ['1', '2', '3', '4']
                .into_iter()
                .map(|c| set.create(code(c), "r".into(), None, 7).unwrap().id)
                .collect()
        };
        // Also across a restart: numbering resumes after the highest.
        let store: Arc<dyn Store> = Arc::new(SledStore::open(dir.path()).unwrap());
        let set = Revocations::load(store).unwrap();
        let last = set.create(code('5'), "r".into(), None, 7).unwrap();
        let listed: Vec<RevocationId> = set.list().unwrap().into_iter().map(|r| r.id).collect();
        assert_eq!(listed[..4], made[..]);
        assert_eq!(listed[4], last.id);
        assert_eq!(last.seq, 5);
    }

    #[test]
    fn the_set_in_force_survives_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let (kept, lifted) = {
            let store: Arc<dyn Store> = Arc::new(SledStore::open(dir.path()).unwrap());
            let set = Revocations::load(store).unwrap();
            let kept = set.create(code('1'), "a".into(), None, 1).unwrap();
            let lifted = set.create(code('2'), "b".into(), None, 2).unwrap();
            set.lift(&lifted.id, "c".into(), None, 3).unwrap();
            (kept, lifted)
        };
        let store: Arc<dyn Store> = Arc::new(SledStore::open(dir.path()).unwrap());
        let set = Revocations::load(store).unwrap();
        let current = set.current();
        assert_eq!(
            current.iter().map(|r| r.id.clone()).collect::<Vec<_>>(),
            [kept.id]
        );
        assert!(current.for_target(&lifted.target).is_none());
        assert_eq!(current.to_proto().len(), 1);
    }
}
