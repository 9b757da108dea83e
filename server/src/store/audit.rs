//! Storage for the audit log: append-only records keyed by sequence
//! number, and the signed checkpoints over them.
//!
//! Unlike the rest of the [`Store`](super::Store), appends are *not* durable
//! on return: [`AuditStore::flush_audit`] makes everything appended so far
//! durable at once, so that the log can commit many concurrent records with
//! one flush (group commit, see [`crate::audit`]). The store treats records
//! and checkpoints as opaque bytes; their format belongs to the audit log.

use std::future::Future;
use std::pin::Pin;

use super::StoreError;

/// A store operation that completes later.
pub type StoreFuture = Pin<Box<dyn Future<Output = Result<(), StoreError>> + Send + 'static>>;

/// Outcome of [`AuditStore::append_audit_record`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Appended {
    /// The record was appended (not yet durable).
    Appended,
    /// A record with that sequence number exists: nothing was written.
    Exists,
}

/// Where the audit log keeps its records and checkpoints.
pub trait AuditStore: Send + Sync + std::fmt::Debug + 'static {
    /// Stores record `seq` unless one exists under `seq` (atomic). Not
    /// durable until a later [`AuditStore::flush_audit`] resolves.
    fn append_audit_record(&self, seq: u64, record: &[u8]) -> Result<Appended, StoreError>;

    /// Makes every record and checkpoint appended before the call durable.
    fn flush_audit(&self) -> StoreFuture;

    /// The record with the highest sequence number, if any.
    fn last_audit_record(&self) -> Result<Option<(u64, Vec<u8>)>, StoreError>;

    /// Record `seq`, if stored.
    fn audit_record(&self, seq: u64) -> Result<Option<Vec<u8>>, StoreError>;

    /// Up to `limit` records with sequence numbers `>= from`, in order.
    fn audit_records(&self, from: u64, limit: usize) -> Result<Vec<(u64, Vec<u8>)>, StoreError>;

    /// Stores the checkpoint covering record `seq`; an error if one covering
    /// `seq` or a later record is stored. Not durable until a later
    /// [`AuditStore::flush_audit`].
    fn put_audit_checkpoint(&self, seq: u64, checkpoint: &[u8]) -> Result<(), StoreError>;

    /// The checkpoint with the highest `seq`, if any.
    fn last_audit_checkpoint(&self) -> Result<Option<(u64, Vec<u8>)>, StoreError>;

    /// Up to `limit` checkpoints with `seq >= from`, in order.
    fn audit_checkpoints(&self, from: u64, limit: usize)
    -> Result<Vec<(u64, Vec<u8>)>, StoreError>;

    /// The checkpoint with the highest `seq` below `seq`, if any.
    fn audit_checkpoint_before(&self, seq: u64) -> Result<Option<(u64, Vec<u8>)>, StoreError>;

    /// Why appends are refused (a write or sync failed), if they are.
    fn audit_failure(&self) -> Option<String>;

    /// After a failed write or sync: writes again everything not known to
    /// be on disk and syncs it; `Ok(true)` once appends are accepted again
    /// (`Ok(false)`: nothing had failed). Blocking.
    fn recover_audit(&self) -> Result<bool, StoreError>;

    /// Whether the files are still the ones opened (not removed or replaced
    /// under the running issuer); the reason if not.
    fn check_audit_files(&self) -> Result<(), String>;
}
