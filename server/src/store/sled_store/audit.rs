//! The audit log in sled: tree `audit` (key: sequence number, 8 bytes big
//! endian; value: the record's canonical bytes) and tree
//! `audit_checkpoints` (same key: the sequence number a checkpoint covers;
//! value: the signed checkpoint's canonical bytes).

use super::SledStore;
use crate::store::StoreError;
use crate::store::audit::{Appended, AuditStore, StoreFuture};

/// Name of the records tree (tests that tamper with the store open it).
pub const RECORDS_TREE: &str = "audit";
/// Name of the checkpoints tree.
pub const CHECKPOINTS_TREE: &str = "audit_checkpoints";

fn seq_of(key: &[u8]) -> Result<u64, StoreError> {
    let bytes: [u8; 8] = key.try_into().map_err(|_| StoreError::Corrupt {
        key: hex::encode(key),
        reason: "an audit key is not an 8-byte sequence number: the audit tree was written by something other than the issuer".into(),
    })?;
    Ok(u64::from_be_bytes(bytes))
}

fn entries(
    iter: impl Iterator<Item = sled::Result<(sled::IVec, sled::IVec)>>,
    limit: usize,
) -> Result<Vec<(u64, Vec<u8>)>, StoreError> {
    iter.take(limit)
        .map(|entry| {
            let (key, value) = entry?;
            Ok((seq_of(&key)?, value.to_vec()))
        })
        .collect()
}

fn last(tree: &sled::Tree) -> Result<Option<(u64, Vec<u8>)>, StoreError> {
    tree.last()?
        .map(|(key, value)| Ok((seq_of(&key)?, value.to_vec())))
        .transpose()
}

impl AuditStore for SledStore {
    fn append_audit_record(&self, seq: u64, record: &[u8]) -> Result<Appended, StoreError> {
        match self
            .audit
            .compare_and_swap(seq.to_be_bytes(), None::<&[u8]>, Some(record))?
        {
            Ok(()) => Ok(Appended::Appended),
            Err(_) => Ok(Appended::Exists),
        }
    }

    fn flush_audit(&self) -> StoreFuture {
        let db = self.db.clone();
        Box::pin(async move {
            db.flush_async().await?;
            Ok(())
        })
    }

    fn last_audit_record(&self) -> Result<Option<(u64, Vec<u8>)>, StoreError> {
        last(&self.audit)
    }

    fn audit_record(&self, seq: u64) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self.audit.get(seq.to_be_bytes())?.map(|v| v.to_vec()))
    }

    fn audit_records(&self, from: u64, limit: usize) -> Result<Vec<(u64, Vec<u8>)>, StoreError> {
        entries(self.audit.range(from.to_be_bytes()..), limit)
    }

    fn put_audit_checkpoint(&self, seq: u64, checkpoint: &[u8]) -> Result<(), StoreError> {
        self.audit_checkpoints
            .insert(seq.to_be_bytes(), checkpoint)?;
        Ok(())
    }

    fn last_audit_checkpoint(&self) -> Result<Option<(u64, Vec<u8>)>, StoreError> {
        last(&self.audit_checkpoints)
    }

    fn audit_checkpoints(
        &self,
        from: u64,
        limit: usize,
    ) -> Result<Vec<(u64, Vec<u8>)>, StoreError> {
        entries(self.audit_checkpoints.range(from.to_be_bytes()..), limit)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn records_append_once_and_read_back_in_order() {
        let dir = tempfile::tempdir().unwrap();
        {
            let store = SledStore::open(dir.path()).unwrap();
            assert_eq!(store.last_audit_record().unwrap(), None);
            for seq in [1u64, 2, 3, 256] {
                assert_eq!(
                    store
                        .append_audit_record(seq, format!("r{seq}").as_bytes())
                        .unwrap(),
                    Appended::Appended
                );
            }
            assert_eq!(
                store.append_audit_record(2, b"forged").unwrap(),
                Appended::Exists
            );
            store.put_audit_checkpoint(3, b"c3").unwrap();
            store.flush_audit().await.unwrap();
        }
        let store = SledStore::open(dir.path()).unwrap();
        assert_eq!(store.audit_record(2).unwrap().unwrap(), b"r2");
        assert_eq!(
            store.last_audit_record().unwrap(),
            Some((256, b"r256".to_vec()))
        );
        let page = store.audit_records(2, 2).unwrap();
        assert_eq!(page, [(2, b"r2".to_vec()), (3, b"r3".to_vec())]);
        assert_eq!(store.audit_records(4, 10).unwrap().len(), 1);
        assert_eq!(
            store.last_audit_checkpoint().unwrap(),
            Some((3, b"c3".to_vec()))
        );
        assert_eq!(store.audit_checkpoints(4, 10).unwrap(), []);
    }
}
