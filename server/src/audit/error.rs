//! Errors of the audit log.

use std::path::PathBuf;

use crate::store::StoreError;

/// Why an audit record or checkpoint could not be written, or the log could
/// not be opened.
///
/// Every operation that writes an audit record fails with this error when
/// the write fails: the operation is then not acknowledged (an SVID is not
/// returned, an operator is told).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AuditError {
    /// The store failed to append, flush or read the log.
    #[error("audit store: {0}")]
    Store(#[from] StoreError),
    /// A record with this sequence number is already stored, though this
    /// issuer did not write it: something else writes to the log. Nothing
    /// more is appended until an operator looks.
    #[error(
        "audit record {0} already exists but this issuer did not write it: the audit log is being written by something else"
    )]
    Conflict(u64),
    /// An event could not be turned into a record.
    #[error("cannot encode the audit record: {0}")]
    Encode(String),
    /// The audit key could not be generated, read, written or used.
    #[error("audit key {}: {reason}", path.display())]
    Key {
        /// The key file.
        path: PathBuf,
        /// What went wrong and what to do.
        reason: String,
    },
    /// Signing a checkpoint failed in the crypto library.
    #[error("cannot sign the audit checkpoint: {0}")]
    Sign(String),
    /// The stored log does not fit the audit key: its checkpoints were
    /// signed by another key.
    #[error("{0}")]
    KeyMismatch(String),
    /// The stored log, its checkpoints and the database do not fit together:
    /// someone changed, removed or replaced them. The message names the
    /// sequence number and what to do.
    #[error("{0}")]
    Tampered(String),
    /// The issuer stopped writing the audit log (and so stopped minting)
    /// because it found its files removed, replaced or rewritten while it
    /// ran; a restart runs the start-up checks.
    #[error("the audit log is halted: {0}")]
    Halted(String),
    /// An internal lock was poisoned by a panic elsewhere.
    #[error("audit log lock poisoned")]
    Poisoned,
}
