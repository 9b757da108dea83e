//! The audit log as issuers before [`FileAuditStore`] kept it: sled tree
//! `audit` (key: sequence number, 8 bytes big endian; value: the record's
//! canonical bytes) and tree `audit_checkpoints` (same key: the sequence
//! number a checkpoint covers; value: the signed checkpoint). Only read, to
//! move such a log into the audit files, and then emptied.
//!
//! [`FileAuditStore`]: crate::store::FileAuditStore

use super::SledStore;
use crate::store::StoreError;

/// Name of the old records tree.
pub const RECORDS_TREE: &str = "audit";
/// Name of the old checkpoints tree.
pub const CHECKPOINTS_TREE: &str = "audit_checkpoints";

fn seq_of(key: &[u8]) -> Result<u64, StoreError> {
    let bytes: [u8; 8] = key.try_into().map_err(|_| StoreError::Corrupt {
        key: hex::encode(key),
        reason: "an audit key is not an 8-byte sequence number: the audit tree was written by something other than the issuer".into(),
    })?;
    Ok(u64::from_be_bytes(bytes))
}

impl SledStore {
    /// The newest record in the old audit tree, if any.
    pub(crate) fn legacy_last_audit_record(&self) -> Result<Option<(u64, Vec<u8>)>, StoreError> {
        self.audit
            .last()?
            .map(|(key, value)| Ok((seq_of(&key)?, value.to_vec())))
            .transpose()
    }

    /// Calls `copy(kind, seq, bytes)` for every old record (`kind`
    /// "record"), then every old checkpoint ("checkpoint"), in sequence
    /// order; returns how many of each.
    pub(crate) fn legacy_audit_copy(
        &self,
        mut copy: impl FnMut(&str, u64, &[u8]) -> Result<(), StoreError>,
    ) -> Result<(u64, u64), StoreError> {
        let mut counts = [0u64; 2];
        for (i, (kind, tree)) in [
            ("record", &self.audit),
            ("checkpoint", &self.audit_checkpoints),
        ]
        .into_iter()
        .enumerate()
        {
            for entry in tree.iter() {
                let (key, value) = entry?;
                copy(kind, seq_of(&key)?, &value)?;
                counts[i] += 1;
            }
        }
        Ok((counts[0], counts[1]))
    }

    /// Empties the old audit trees, durably.
    pub(crate) fn legacy_audit_clear(&self) -> Result<(), StoreError> {
        self.audit.clear()?;
        self.audit_checkpoints.clear()?;
        self.db.flush()?;
        Ok(())
    }
}

#[cfg(test)]
impl SledStore {
    /// Writes `bytes` under `seq` in the old audit tree `tree`, as an
    /// issuer before the audit files did.
    pub(crate) fn legacy_insert_for_tests(&self, tree: &str, seq: u64, bytes: &[u8]) {
        let tree = if tree == RECORDS_TREE {
            &self.audit
        } else {
            &self.audit_checkpoints
        };
        tree.insert(seq.to_be_bytes(), bytes).unwrap();
    }
}
