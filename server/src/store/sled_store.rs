//! The embedded store: one sled database in the data directory.

use std::path::Path;

use serde::Serialize;
use serde::de::DeserializeOwned;

use hallmark_ca::id::SpiffeId;

use super::{ImageRecord, JoinTokenRecord, NodeRecord, Store, StoreError, TokenUse};

const CA_STATE_KEY: &[u8] = b"ca_state";

/// A [`Store`] on sled 0.34. Each kind of record lives in its own tree; every
/// write is followed by a flush (fsync) before it returns.
#[derive(Debug, Clone)]
pub struct SledStore {
    db: sled::Db,
    meta: sled::Tree,
    tokens: sled::Tree,
    nodes: sled::Tree,
    images: sled::Tree,
}

impl SledStore {
    /// Opens (or creates) the store in `dir`. The directory is created with
    /// owner-only permissions: it holds the CA's private keys.
    pub fn open(dir: &Path) -> Result<Self, StoreError> {
        create_private_dir(dir)?;
        let db = sled::Config::new()
            .path(dir.join("db"))
            .mode(sled::Mode::HighThroughput)
            .open()
            .map_err(|e| {
                StoreError::Backend(format!("cannot open store in {}: {e}", dir.display()))
            })?;
        Ok(Self {
            meta: db.open_tree("meta")?,
            tokens: db.open_tree("join_tokens")?,
            nodes: db.open_tree("nodes")?,
            images: db.open_tree("images")?,
            db,
        })
    }

    /// Flushes everything to disk; the database closes when the last clone
    /// of this store is dropped.
    pub fn flush_and_close(&self) -> Result<(), StoreError> {
        self.flush()
    }

    fn flush(&self) -> Result<(), StoreError> {
        self.db.flush()?;
        Ok(())
    }
}

fn create_private_dir(dir: &Path) -> Result<(), StoreError> {
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

    fn put_image_if_absent(&self, image: &ImageRecord) -> Result<Option<ImageRecord>, StoreError> {
        let key = image.key();
        match self
            .images
            .compare_and_swap(key.as_bytes(), None::<&[u8]>, Some(encode(image)?))?
        {
            Ok(()) => {
                self.flush()?;
                Ok(None)
            }
            Err(existing) => existing
                .current
                .map(|v| decode(key.as_bytes(), &v))
                .transpose(),
        }
    }

    fn put_image(&self, image: &ImageRecord) -> Result<(), StoreError> {
        self.images.insert(image.key().as_bytes(), encode(image)?)?;
        self.flush()
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
                    attestor: NodeAttestorKind::X509pop,
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
