//! The embedded store: one sled database in the data directory.

pub(super) mod audit;

use std::os::unix::fs::MetadataExt as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use serde::Serialize;
use serde::de::DeserializeOwned;

use hallmark_ca::id::SpiffeId;

use super::anchor::{AnchorStore, AuditAnchor};
use super::{
    EnvelopeReplace, ImagePut, ImageRecord, ImageRetire, JoinTokenRecord, NodeRecord, Retirement,
    Store, StoreError, TokenUse,
};
use crate::federation::FederatedBundleRecord;
use crate::revocation::{Lift, LiftOutcome, Revocation, RevocationId};

const CA_STATE_KEY: &[u8] = b"ca_state";
/// Durable writes made so far (u64, big endian).
const GENERATION_KEY: &[u8] = b"generation";
/// The [`AuditAnchor`] (JSON).
const ANCHOR_KEY: &[u8] = b"audit_anchor";

/// Bytes of pages sled keeps in memory. sled's default is 1 GiB, and every
/// audit record passes through the cache, so under mint load the issuer's
/// RSS grew by about 1 KiB per credential until that gigabyte was full.
/// What is read on hot paths (agents' node records, tokens, the newest
/// audit records) fits in a small fraction of this.
const CACHE_CAPACITY: u64 = 64 * 1024 * 1024;

/// A [`Store`] on sled 0.34. Each kind of record lives in its own tree; every
/// write is followed by a flush (fsync) before it returns.
#[derive(Debug, Clone)]
pub struct SledStore {
    db: sled::Db,
    meta: sled::Tree,
    tokens: sled::Tree,
    nodes: sled::Tree,
    images: sled::Tree,
    revocations: sled::Tree,
    federated: sled::Tree,
    audit: sled::Tree,
    audit_checkpoints: sled::Tree,
    /// The generation known durable.
    generation: Arc<AtomicU64>,
    /// The anchor to write with the next durable write.
    pending_anchor: Arc<Mutex<Option<AuditAnchor>>>,
    /// The database directory and file, and their (device, inode) at open.
    files: Arc<Vec<(PathBuf, (u64, u64))>>,
}

impl SledStore {
    /// Opens (or creates) the store in `dir`. The directory is created with
    /// owner-only permissions: it holds the CA's private keys.
    pub fn open(dir: &Path) -> Result<Self, StoreError> {
        create_private_dir(dir)?;
        let db = sled::Config::new()
            .path(dir.join("db"))
            .mode(sled::Mode::HighThroughput)
            .cache_capacity(CACHE_CAPACITY)
            .open()
            .map_err(|e| {
                StoreError::Backend(format!("cannot open store in {}: {e}", dir.display()))
            })?;
        let meta = db.open_tree("meta")?;
        let generation = match meta.get(GENERATION_KEY)? {
            Some(bytes) => {
                u64::from_be_bytes(bytes.as_ref().try_into().map_err(|_| StoreError::Corrupt {
                    key: "meta/generation".into(),
                    reason: "not an 8-byte counter".into(),
                })?)
            }
            None => 0,
        };
        let mut files = Vec::new();
        for path in [dir.join("db"), dir.join("db").join("db")] {
            if let Ok(meta) = std::fs::metadata(&path) {
                files.push((path, (meta.dev(), meta.ino())));
            }
        }
        Ok(Self {
            meta,
            tokens: db.open_tree("join_tokens")?,
            nodes: db.open_tree("nodes")?,
            images: db.open_tree("images")?,
            revocations: db.open_tree("revocations")?,
            federated: db.open_tree("federated_bundles")?,
            audit: db.open_tree(audit::RECORDS_TREE)?,
            audit_checkpoints: db.open_tree(audit::CHECKPOINTS_TREE)?,
            db,
            generation: Arc::new(AtomicU64::new(generation)),
            pending_anchor: Arc::new(Mutex::new(None)),
            files: Arc::new(files),
        })
    }

    /// Flushes everything to disk; the database closes when the last clone
    /// of this store is dropped.
    pub fn flush_and_close(&self) -> Result<(), StoreError> {
        self.flush()
    }

    /// Makes every write durable, with the next generation and the newest
    /// audit anchor noted ([`AnchorStore`]).
    fn flush(&self) -> Result<(), StoreError> {
        let pending = self
            .pending_anchor
            .lock()
            .map_or(None, |mut pending| pending.take());
        if let Some(anchor) = pending {
            self.merge_anchor(anchor)?;
        }
        let generation = self
            .meta
            .update_and_fetch(GENERATION_KEY, |old| {
                let old = old
                    .and_then(|b| <[u8; 8]>::try_from(b).ok())
                    .map_or(0, u64::from_be_bytes);
                Some(old.saturating_add(1).to_be_bytes().to_vec())
            })?
            .and_then(|b| <[u8; 8]>::try_from(b.as_ref()).ok())
            .map_or(0, u64::from_be_bytes);
        self.db.flush()?;
        self.generation.fetch_max(generation, Ordering::AcqRel);
        Ok(())
    }

    /// Merges `anchor` into the stored one (not durable by itself). A
    /// stored anchor that does not decode is left as it is, for the start
    /// check to report.
    fn merge_anchor(&self, anchor: AuditAnchor) -> Result<(), StoreError> {
        self.meta.update_and_fetch(ANCHOR_KEY, |old| match old {
            None => serde_json::to_vec(&anchor).ok(),
            Some(old) => match serde_json::from_slice::<AuditAnchor>(old) {
                Ok(stored) => serde_json::to_vec(&stored.merge(anchor.clone())).ok(),
                Err(_) => Some(old.to_vec()),
            },
        })?;
        Ok(())
    }
}

impl AnchorStore for SledStore {
    fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    fn audit_anchor(&self) -> Result<Option<AuditAnchor>, StoreError> {
        self.meta
            .get(ANCHOR_KEY)?
            .map(|bytes| decode(b"meta/audit_anchor", &bytes))
            .transpose()
    }

    fn note_audit_anchor(&self, anchor: AuditAnchor) {
        if let Ok(mut pending) = self.pending_anchor.lock() {
            *pending = Some(match pending.take() {
                Some(noted) => noted.merge(anchor),
                None => anchor,
            });
        }
    }

    fn put_audit_anchor(&self, anchor: AuditAnchor) -> Result<(), StoreError> {
        self.note_audit_anchor(anchor);
        self.flush()
    }

    fn replace_audit_anchor(&self, anchor: AuditAnchor) -> Result<(), StoreError> {
        if let Ok(mut pending) = self.pending_anchor.lock() {
            *pending = None;
        }
        self.meta.insert(ANCHOR_KEY, encode(&anchor)?)?;
        self.flush()
    }

    fn is_pristine(&self) -> Result<bool, StoreError> {
        Ok(self.generation() == 0 && self.meta.get(CA_STATE_KEY)?.is_none())
    }

    fn check_files(&self) -> Result<(), String> {
        for (path, identity) in self.files.iter() {
            match std::fs::metadata(path) {
                Ok(meta) if (meta.dev(), meta.ino()) == *identity => {}
                Ok(_) => {
                    return Err(format!(
                        "{} was replaced under the running issuer",
                        path.display()
                    ));
                }
                Err(e) => {
                    return Err(format!(
                        "{} was removed under the running issuer ({e})",
                        path.display()
                    ));
                }
            }
        }
        Ok(())
    }
}

/// What an [`SledStore::update_image`] change function decides.
enum Change<R> {
    /// Write this record.
    Write(ImageRecord),
    /// Write nothing; report this.
    Refuse(R),
}

/// Outcome of [`SledStore::update_image`].
enum Updated<R> {
    /// The new record was written and flushed.
    Written(ImageRecord),
    /// The change function refused; nothing was written.
    Refused(R),
    /// No record under the key.
    Absent,
}

impl SledStore {
    /// Read-modify-write of one image with compare-and-swap: if another
    /// writer changed the record in between, `change` runs again on the new
    /// value, so no update is lost (a retirement is never undone by a
    /// concurrent envelope replacement, and vice versa).
    fn update_image<R>(
        &self,
        key: &str,
        change: impl Fn(&ImageRecord) -> Change<R>,
    ) -> Result<Updated<R>, StoreError> {
        loop {
            let Some(current) = self.images.get(key.as_bytes())? else {
                return Ok(Updated::Absent);
            };
            let record: ImageRecord = decode(key.as_bytes(), &current)?;
            let new = match change(&record) {
                Change::Write(new) => new,
                Change::Refuse(refusal) => return Ok(Updated::Refused(refusal)),
            };
            if self
                .images
                .compare_and_swap(key.as_bytes(), Some(current), Some(encode(&new)?))?
                .is_ok()
            {
                self.flush()?;
                return Ok(Updated::Written(new));
            }
        }
    }
}

pub(crate) fn create_private_dir(dir: &Path) -> Result<(), StoreError> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|e| StoreError::Backend(format!("cannot create {}: {e}", dir.display())))?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
        .map_err(|e| StoreError::Backend(format!("cannot restrict {}: {e}", dir.display())))?;
    Ok(())
}

fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>, StoreError> {
    serde_json::to_vec(value).map_err(|e| StoreError::Backend(format!("cannot encode record: {e}")))
}

fn decode<T: DeserializeOwned>(key: &[u8], bytes: &[u8]) -> Result<T, StoreError> {
    serde_json::from_slice(bytes).map_err(|e| StoreError::Corrupt {
        key: String::from_utf8_lossy(key).into_owned(),
        reason: e.to_string(),
    })
}

impl Store for SledStore {
    fn ca_state(&self) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self.meta.get(CA_STATE_KEY)?.map(|v| v.to_vec()))
    }

    fn put_ca_state(&self, state: &[u8]) -> Result<(), StoreError> {
        self.meta.insert(CA_STATE_KEY, state)?;
        self.flush()
    }

    fn put_join_token(&self, token: &JoinTokenRecord) -> Result<(), StoreError> {
        self.tokens
            .insert(token.token_hash.as_bytes(), encode(token)?)?;
        self.flush()
    }

    fn join_token(&self, token_hash: &str) -> Result<Option<JoinTokenRecord>, StoreError> {
        let key = token_hash.as_bytes();
        self.tokens
            .get(key)?
            .map(|bytes| decode(key, &bytes))
            .transpose()
    }

    fn consume_join_token(&self, token_hash: &str, now: u64) -> Result<TokenUse, StoreError> {
        let key = token_hash.as_bytes();
        loop {
            let Some(current) = self.tokens.get(key)? else {
                return Ok(TokenUse::Unknown);
            };
            let record: JoinTokenRecord = decode(key, &current)?;
            if record.used_at.is_some() {
                return Ok(TokenUse::AlreadyUsed(record));
            }
            if record.expires_at <= now {
                return Ok(TokenUse::Expired(record));
            }
            let mut used = record.clone();
            used.used_at = Some(now);
            // Compare-and-swap: of two concurrent uses exactly one wins; the
            // loser re-reads and sees the token used.
            match self
                .tokens
                .compare_and_swap(key, Some(current), Some(encode(&used)?))?
            {
                Ok(()) => {
                    self.flush()?;
                    return Ok(TokenUse::Consumed(record));
                }
                Err(_) => continue,
            }
        }
    }

    fn prune_join_tokens(&self, now: u64) -> Result<usize, StoreError> {
        let mut removed = 0;
        for entry in self.tokens.iter() {
            let (key, value) = entry?;
            let record: JoinTokenRecord = decode(&key, &value)?;
            if record.expires_at <= now {
                self.tokens.remove(key)?;
                removed += 1;
            }
        }
        if removed > 0 {
            self.flush()?;
        }
        Ok(removed)
    }

    fn join_token_count(&self) -> Result<usize, StoreError> {
        Ok(self.tokens.len())
    }

    fn node(&self, id: &SpiffeId) -> Result<Option<NodeRecord>, StoreError> {
        let key = id.as_str().as_bytes();
        self.nodes.get(key)?.map(|v| decode(key, &v)).transpose()
    }

    fn put_node(&self, node: &NodeRecord) -> Result<(), StoreError> {
        self.nodes
            .insert(node.spiffe_id.as_str().as_bytes(), encode(node)?)?;
        self.flush()
    }

    fn remove_node(&self, id: &SpiffeId) -> Result<Option<NodeRecord>, StoreError> {
        let key = id.as_str().as_bytes();
        let old = self.nodes.remove(key)?;
        self.flush()?;
        old.map(|v| decode(key, &v)).transpose()
    }

    fn nodes(&self) -> Result<Vec<NodeRecord>, StoreError> {
        self.nodes
            .iter()
            .map(|entry| {
                let (key, value) = entry?;
                decode(&key, &value)
            })
            .collect()
    }

    fn image(&self, name: &str, version: &str) -> Result<Option<ImageRecord>, StoreError> {
        let key = format!("{name}@{version}");
        self.images
            .get(key.as_bytes())?
            .map(|v| decode(key.as_bytes(), &v))
            .transpose()
    }

    fn put_image_if_absent(&self, image: &ImageRecord) -> Result<ImagePut, StoreError> {
        let key = image.key();
        match self
            .images
            .compare_and_swap(key.as_bytes(), None::<&[u8]>, Some(encode(image)?))?
        {
            Ok(()) => {
                self.flush()?;
                Ok(ImagePut::Created)
            }
            Err(conflict) => match conflict.current {
                Some(v) => Ok(ImagePut::Existing(decode(key.as_bytes(), &v)?)),
                // Only reachable if the record were deleted between the
                // two halves of the swap, which no method does; report it
                // as the backend fault it would be.
                None => Err(StoreError::Backend(format!(
                    "image {key} vanished during insert"
                ))),
            },
        }
    }

    fn replace_image_envelope(
        &self,
        name: &str,
        version: &str,
        payload_sha256: &str,
        envelope: &str,
    ) -> Result<EnvelopeReplace, StoreError> {
        let key = format!("{name}@{version}");
        self.update_image(&key, |record| {
            if record.payload_sha256 != payload_sha256 {
                return Change::Refuse(EnvelopeReplace::Mismatch);
            }
            Change::Write(ImageRecord {
                envelope: envelope.to_owned(),
                ..record.clone()
            })
        })
        .map(|outcome| match outcome {
            Updated::Written(record) => EnvelopeReplace::Replaced(record),
            Updated::Refused(refusal) => refusal,
            Updated::Absent => EnvelopeReplace::Mismatch,
        })
    }

    fn retire_image(
        &self,
        name: &str,
        version: &str,
        retirement: &Retirement,
    ) -> Result<ImageRetire, StoreError> {
        let key = format!("{name}@{version}");
        self.update_image(&key, |record| {
            if record.retired.is_some() {
                return Change::Refuse(ImageRetire::AlreadyRetired(record.clone()));
            }
            Change::Write(ImageRecord {
                retired: Some(retirement.clone()),
                ..record.clone()
            })
        })
        .map(|outcome| match outcome {
            Updated::Written(record) => ImageRetire::Retired(record),
            Updated::Refused(refusal) => refusal,
            Updated::Absent => ImageRetire::NotFound,
        })
    }

    fn images(&self) -> Result<Vec<ImageRecord>, StoreError> {
        self.images
            .iter()
            .map(|entry| {
                let (key, value) = entry?;
                decode(&key, &value)
            })
            .collect()
    }

    fn put_revocation_if_absent(&self, revocation: &Revocation) -> Result<bool, StoreError> {
        let key = revocation.id.as_str().as_bytes();
        let swapped =
            self.revocations
                .compare_and_swap(key, None::<&[u8]>, Some(encode(revocation)?))?;
        if swapped.is_ok() {
            self.flush()?;
        }
        Ok(swapped.is_ok())
    }

    fn lift_revocation(&self, id: &RevocationId, lift: &Lift) -> Result<LiftOutcome, StoreError> {
        let key = id.as_str().as_bytes();
        // Compare-and-swap: of two concurrent lifts exactly one writes.
        loop {
            let Some(current) = self.revocations.get(key)? else {
                return Ok(LiftOutcome::NotFound);
            };
            let record: Revocation = decode(key, &current)?;
            if record.lifted.is_some() {
                return Ok(LiftOutcome::AlreadyLifted(record));
            }
            let lifted = Revocation {
                lifted: Some(lift.clone()),
                ..record
            };
            if self
                .revocations
                .compare_and_swap(key, Some(current), Some(encode(&lifted)?))?
                .is_ok()
            {
                self.flush()?;
                return Ok(LiftOutcome::Lifted(lifted));
            }
        }
    }

    fn revocations(&self) -> Result<Vec<Revocation>, StoreError> {
        self.revocations
            .iter()
            .map(|entry| {
                let (key, value) = entry?;
                decode(&key, &value)
            })
            .collect()
    }

    fn federated_bundles(&self) -> Result<Vec<FederatedBundleRecord>, StoreError> {
        self.federated
            .iter()
            .map(|entry| {
                let (key, value) = entry?;
                decode(&key, &value)
            })
            .collect()
    }

    fn put_federated_bundle(&self, record: &FederatedBundleRecord) -> Result<(), StoreError> {
        self.federated
            .insert(record.trust_domain.as_bytes(), encode(record)?)?;
        self.flush()
    }

    fn remove_federated_bundle(&self, trust_domain: &str) -> Result<bool, StoreError> {
        let removed = self.federated.remove(trust_domain.as_bytes())?.is_some();
        if removed {
            self.flush()?;
        }
        Ok(removed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{IssuedSvid, NodeAttestorKind};

    fn token(hash: &str, expires_at: u64) -> JoinTokenRecord {
        JoinTokenRecord {
            token_hash: hash.into(),
            spiffe_id: SpiffeId::parse("spiffe://example.org/hallmark/agent/join_token/ab")
                .unwrap(),
            created_at: 1,
            expires_at,
            used_at: None,
        }
    }

    #[test]
    fn token_is_single_use_and_reports_why() {
        let dir = tempfile::tempdir().unwrap();
        let store = SledStore::open(dir.path()).unwrap();
        store.put_join_token(&token("aa", 100)).unwrap();
        store.put_join_token(&token("bb", 10)).unwrap();
        assert!(matches!(
            store.consume_join_token("aa", 50).unwrap(),
            TokenUse::Consumed(_)
        ));
        assert!(matches!(
            store.consume_join_token("aa", 51).unwrap(),
            TokenUse::AlreadyUsed(_)
        ));
        assert!(matches!(
            store.consume_join_token("bb", 50).unwrap(),
            TokenUse::Expired(_)
        ));
        assert_eq!(
            store.consume_join_token("cc", 50).unwrap(),
            TokenUse::Unknown
        );
        assert_eq!(store.prune_join_tokens(60).unwrap(), 1);
        assert_eq!(store.join_token_count().unwrap(), 1);
    }

    #[test]
    fn records_survive_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let id = SpiffeId::parse("spiffe://example.org/hallmark/agent/x509pop/ff").unwrap();
        {
            let store = SledStore::open(dir.path()).unwrap();
            store.put_ca_state(b"{\"ca\":1}").unwrap();
            store
                .put_node(&NodeRecord {
                    spiffe_id: id.clone(),
                    attestor: Some(NodeAttestorKind::X509pop),
                    node_id: "ff".into(),
                    banned: false,
                    first_attested_at: 1,
                    last_attested_at: 2,
                    svids: vec![IssuedSvid {
                        serial: "01".into(),
                        expires_at: 9,
                    }],
                })
                .unwrap();
        }
        let store = SledStore::open(dir.path()).unwrap();
        assert_eq!(store.ca_state().unwrap().unwrap(), b"{\"ca\":1}");
        let node = store.node(&id).unwrap().unwrap();
        assert!(node.honours("01", 5));
        assert!(!node.honours("01", 9));
        assert!(!node.honours("02", 5));
        assert_eq!(store.nodes().unwrap().len(), 1);
        assert!(store.remove_node(&id).unwrap().is_some());
        assert!(store.node(&id).unwrap().is_none());
    }

    fn image(name: &str, payload: &str) -> ImageRecord {
        ImageRecord {
            name: name.into(),
            version: "1".into(),
            envelope: format!("{{\"e\":\"{payload}\"}}"),
            payload_sha256: payload.into(),
            registered_at: 5,
            registered_by_uid: Some(1000),
            retired: None,
        }
    }

    fn retirement(reason: &str, uid: Option<u32>) -> Retirement {
        Retirement {
            at: 9,
            reason: reason.into(),
            uid,
        }
    }

    #[test]
    fn an_image_is_created_once_and_then_reported() {
        let dir = tempfile::tempdir().unwrap();
        let store = SledStore::open(dir.path()).unwrap();
        assert_eq!(
            store.put_image_if_absent(&image("a", "p1")).unwrap(),
            ImagePut::Created
        );
        let other = image("a", "p2");
        assert_eq!(
            store.put_image_if_absent(&other).unwrap(),
            ImagePut::Existing(image("a", "p1"))
        );
        assert_eq!(store.image("a", "1").unwrap(), Some(image("a", "p1")));
        assert_eq!(store.image("a", "2").unwrap(), None);
        assert_eq!(store.images().unwrap(), [image("a", "p1")]);
    }

    #[test]
    fn an_image_is_retired_once_and_stays_retired() {
        let dir = tempfile::tempdir().unwrap();
        {
            let store = SledStore::open(dir.path()).unwrap();
            store.put_image_if_absent(&image("a", "p1")).unwrap();
            assert_eq!(
                store
                    .retire_image("b", "1", &retirement("x", None))
                    .unwrap(),
                ImageRetire::NotFound
            );
            let ImageRetire::Retired(first) = store
                .retire_image("a", "1", &retirement("compromised", Some(0)))
                .unwrap()
            else {
                panic!("not retired");
            };
            assert_eq!(first.retired, Some(retirement("compromised", Some(0))));
            let ImageRetire::AlreadyRetired(again) = store
                .retire_image("a", "1", &retirement("not_after passed", None))
                .unwrap()
            else {
                panic!("retired twice");
            };
            assert_eq!(again, first);
            // A later cosignature replaces the envelope, not the retirement.
            let EnvelopeReplace::Replaced(richer) = store
                .replace_image_envelope("a", "1", "p1", "{\"richer\":1}")
                .unwrap()
            else {
                panic!("not replaced");
            };
            assert_eq!(richer.envelope, "{\"richer\":1}");
            assert_eq!(richer.retired, first.retired);
            assert_eq!(
                store.replace_image_envelope("a", "1", "p2", "{}").unwrap(),
                EnvelopeReplace::Mismatch
            );
            assert_eq!(
                store.replace_image_envelope("zz", "1", "p1", "{}").unwrap(),
                EnvelopeReplace::Mismatch
            );
        }
        let store = SledStore::open(dir.path()).unwrap();
        let stored = store.image("a", "1").unwrap().unwrap();
        assert_eq!(stored.envelope, "{\"richer\":1}");
        assert_eq!(stored.retired, Some(retirement("compromised", Some(0))));
    }

    #[test]
    fn every_durable_write_counts_and_carries_the_noted_anchor() {
        use crate::store::{AnchorStore, AuditAnchor, Mark};
        let dir = tempfile::tempdir().unwrap();
        let mark = |seq: u64| Mark {
            seq,
            hash: format!("{seq:064x}"),
        };
        {
            let store = SledStore::open(dir.path()).unwrap();
            assert!(store.is_pristine().unwrap());
            assert_eq!(store.generation(), 0);
            assert_eq!(store.audit_anchor().unwrap(), None);
            store.note_audit_anchor(AuditAnchor {
                record: Some(mark(5)),
                checkpoint: None,
            });
            store.put_join_token(&token("h", 10)).unwrap();
            assert_eq!(store.generation(), 1);
            assert!(!store.is_pristine().unwrap());
            // An older anchor never moves the stored one back.
            store
                .put_audit_anchor(AuditAnchor {
                    record: Some(mark(3)),
                    checkpoint: Some(mark(2)),
                })
                .unwrap();
            assert_eq!(store.generation(), 2);
            store.check_files().unwrap();
        }
        let store = SledStore::open(dir.path()).unwrap();
        assert_eq!(store.generation(), 2);
        assert_eq!(
            store.audit_anchor().unwrap(),
            Some(AuditAnchor {
                record: Some(mark(5)),
                checkpoint: Some(mark(2)),
            })
        );
        store
            .replace_audit_anchor(AuditAnchor {
                record: Some(mark(1)),
                checkpoint: None,
            })
            .unwrap();
        assert_eq!(store.audit_anchor().unwrap().unwrap().record, Some(mark(1)));
        std::fs::remove_dir_all(dir.path().join("db")).unwrap();
        let error = store.check_files().unwrap_err();
        assert!(
            error.contains("was removed under the running issuer"),
            "{error}"
        );
    }

    #[test]
    fn data_dir_is_private() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        let _store = SledStore::open(&data).unwrap();
        let mode = std::fs::metadata(&data).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o700);
    }
}
