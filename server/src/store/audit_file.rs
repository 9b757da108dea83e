//! The audit log's own files: `<data_dir>/audit/records.log` and
//! `<data_dir>/audit/checkpoints.log`, append-only [`Journal`]s with one
//! `<seq> <canonical JSON>` line per record or signed checkpoint.
//!
//! The audit log is the issuer's hottest write (one record per SVID, each
//! durable before the SVID is returned), and needs none of what a database
//! gives: records are never updated or deleted, only appended in sequence
//! order and read back in order. Kept in sled, each record paid for a tree
//! insert, sled's page cache and its flush threads (about a third of the
//! issuer's CPU under minting load); here an append is a copy into a
//! buffer, and a group commit is one `write` and one `fdatasync`.
//!
//! Issuers before this store kept the log in the sled trees `audit` and
//! `audit_checkpoints`; [`FileAuditStore::open`] moves such a log into the
//! files once, durably, and then empties the trees.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::StoreError;
use super::audit::{Appended, AuditStore, StoreFuture};
use super::journal::Journal;
use super::sled_store::SledStore;

/// Directory under the data directory that holds the audit files.
pub const AUDIT_DIR: &str = "audit";
/// The records journal's file name.
pub const RECORDS_FILE: &str = "records.log";
/// The checkpoints journal's file name.
pub const CHECKPOINTS_FILE: &str = "checkpoints.log";

/// The entries of the audit files, as read by [`FileAuditStore::read_unlocked`].
#[derive(Debug, Clone, Default)]
pub struct StoredLog {
    /// `(seq, record)`, in file order.
    pub records: Vec<(u64, Vec<u8>)>,
    /// `(seq covered, checkpoint)`, in file order.
    pub checkpoints: Vec<(u64, Vec<u8>)>,
}

/// The audit log's records and checkpoints in append-only files.
#[derive(Debug, Clone)]
pub struct FileAuditStore {
    records: Arc<Journal>,
    checkpoints: Arc<Journal>,
}

impl FileAuditStore {
    /// Opens (creating) the audit files of the issuer whose data directory
    /// is `data_dir`, and moves a log still kept in `legacy`'s trees into
    /// them.
    pub fn open(data_dir: &Path, legacy: Option<&SledStore>) -> Result<Self, StoreError> {
        let dir = Self::dir(data_dir);
        super::sled_store::create_private_dir(&dir)?;
        let store = Self {
            records: Arc::new(Journal::open(&dir.join(RECORDS_FILE))?),
            checkpoints: Arc::new(Journal::open(&dir.join(CHECKPOINTS_FILE))?),
        };
        if let Some(legacy) = legacy {
            store.migrate(legacy)?;
        }
        Ok(store)
    }

    /// The records and the checkpoints stored in `data_dir`'s audit files,
    /// read without locking or changing them (for offline verification,
    /// also while an issuer runs on them).
    pub fn read_unlocked(data_dir: &Path) -> Result<StoredLog, StoreError> {
        let dir = Self::dir(data_dir);
        Ok(StoredLog {
            records: super::journal::read_unlocked(&dir.join(RECORDS_FILE))?,
            checkpoints: super::journal::read_unlocked(&dir.join(CHECKPOINTS_FILE))?,
        })
    }

    /// Where the audit files of `data_dir` are.
    pub fn dir(data_dir: &Path) -> PathBuf {
        data_dir.join(AUDIT_DIR)
    }

    /// Copies the records and checkpoints of an older issuer's sled trees
    /// into the files (only into empty files, so a log is never merged
    /// with another), syncs them, then empties the trees.
    fn migrate(&self, legacy: &SledStore) -> Result<(), StoreError> {
        let Some((legacy_last, _)) = legacy.legacy_last_audit_record()? else {
            return Ok(());
        };
        match self.records.last()? {
            Some((last, _)) if last >= legacy_last => {
                // An earlier migration copied them and stopped before the
                // trees were emptied.
                tracing::warn!(target: "hallmark::audit", "emptying the old audit trees, already copied to the audit files");
            }
            Some((last, _)) => {
                return Err(StoreError::Corrupt {
                    key: "audit".into(),
                    reason: format!(
                        "the database holds audit records up to {legacy_last} and the audit files only up to {last}: restore the data directory from one backup"
                    ),
                });
            }
            None => {
                let (records, checkpoints) = legacy.legacy_audit_copy(|kind, seq, bytes| {
                    let journal = if kind == "checkpoint" {
                        &self.checkpoints
                    } else {
                        &self.records
                    };
                    journal.append(seq, bytes).map(|_| ())
                })?;
                self.records.sync()?;
                self.checkpoints.sync()?;
                tracing::info!(target: "hallmark::audit", records, checkpoints, "moved the audit log from the database to the audit files");
            }
        }
        legacy.legacy_audit_clear()
    }
}

impl AuditStore for FileAuditStore {
    fn append_audit_record(&self, seq: u64, record: &[u8]) -> Result<Appended, StoreError> {
        Ok(if self.records.append(seq, record)? {
            Appended::Appended
        } else {
            Appended::Exists
        })
    }

    fn flush_audit(&self) -> StoreFuture {
        let records = self.records.clone();
        let checkpoints = self.checkpoints.clone();
        Box::pin(async move {
            tokio::task::spawn_blocking(move || {
                records.sync()?;
                checkpoints.sync()
            })
            .await
            .map_err(|e| StoreError::Backend(format!("audit flush task failed: {e}")))?
        })
    }

    fn last_audit_record(&self) -> Result<Option<(u64, Vec<u8>)>, StoreError> {
        self.records.last()
    }

    fn audit_record(&self, seq: u64) -> Result<Option<Vec<u8>>, StoreError> {
        self.records.get(seq)
    }

    fn audit_records(&self, from: u64, limit: usize) -> Result<Vec<(u64, Vec<u8>)>, StoreError> {
        self.records.range(from, limit)
    }

    fn put_audit_checkpoint(&self, seq: u64, checkpoint: &[u8]) -> Result<(), StoreError> {
        if self.checkpoints.append(seq, checkpoint)? {
            Ok(())
        } else {
            Err(StoreError::Backend(format!(
                "a checkpoint covering record {seq} or later is already stored"
            )))
        }
    }

    fn last_audit_checkpoint(&self) -> Result<Option<(u64, Vec<u8>)>, StoreError> {
        self.checkpoints.last()
    }

    fn audit_checkpoints(
        &self,
        from: u64,
        limit: usize,
    ) -> Result<Vec<(u64, Vec<u8>)>, StoreError> {
        self.checkpoints.range(from, limit)
    }

    fn audit_checkpoint_before(&self, seq: u64) -> Result<Option<(u64, Vec<u8>)>, StoreError> {
        self.checkpoints.before(seq)
    }

    fn audit_failure(&self) -> Option<String> {
        self.records
            .failure()
            .or_else(|| self.checkpoints.failure())
    }

    fn recover_audit(&self) -> Result<bool, StoreError> {
        let records = self.records.recover()?;
        let checkpoints = self.checkpoints.recover()?;
        Ok(records || checkpoints)
    }

    fn check_audit_files(&self) -> Result<(), String> {
        self.records.check_linked()?;
        self.checkpoints.check_linked()
    }
}

#[cfg(test)]
mod tests;
