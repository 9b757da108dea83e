//! What the database knows of the audit log, so that neither can be rolled
//! back or replaced alone.
//!
//! The database keeps an [`AuditAnchor`]: the newest audit record it has
//! seen durable (sequence number and hash) and the newest checkpoint signed
//! (sequence number and line hash). It is written with every durable write
//! of the database and after every checkpoint. In the other direction,
//! every signed checkpoint names the database's [generation](AnchorStore::generation)
//! (how many durable writes it has made). At start the issuer refuses a log
//! that does not contain the anchor, and a database older than the newest
//! checkpoint says (see [`crate::audit`]).

use serde::{Deserialize, Serialize};

use super::StoreError;

/// One point of the audit log: a record or a checkpoint, by sequence
/// number and hash (64 lowercase hex).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Mark {
    /// The sequence number.
    pub seq: u64,
    /// The record's hash, or the checkpoint line's hash.
    pub hash: String,
}

/// What the database knows of the audit log.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditAnchor {
    /// The newest record known durable.
    pub record: Option<Mark>,
    /// The newest checkpoint known signed.
    pub checkpoint: Option<Mark>,
}

impl AuditAnchor {
    /// The newer of each part of `self` and `other`: anchors only move
    /// forward, whatever order concurrent writers store them in.
    #[must_use]
    pub fn merge(self, other: AuditAnchor) -> AuditAnchor {
        let newer = |a: Option<Mark>, b: Option<Mark>| match (a, b) {
            (Some(a), Some(b)) => Some(if b.seq > a.seq { b } else { a }),
            (a, b) => a.or(b),
        };
        AuditAnchor {
            record: newer(self.record, other.record),
            checkpoint: newer(self.checkpoint, other.checkpoint),
        }
    }
}

/// The database side of the anchor (implemented by [`super::SledStore`]).
pub trait AnchorStore: Send + Sync + std::fmt::Debug + 'static {
    /// How many durable writes the database has made (0 for a new one).
    fn generation(&self) -> u64;

    /// The anchor stored, if any.
    fn audit_anchor(&self) -> Result<Option<AuditAnchor>, StoreError>;

    /// Remembers `anchor` (merged with what is remembered) to be written
    /// with the database's next durable write. No I/O.
    fn note_audit_anchor(&self, anchor: AuditAnchor);

    /// Merges `anchor` into the stored one and makes it durable now.
    fn put_audit_anchor(&self, anchor: AuditAnchor) -> Result<(), StoreError>;

    /// Replaces the stored anchor (for `audit reset`, which starts a new
    /// log) and makes it durable now.
    fn replace_audit_anchor(&self, anchor: AuditAnchor) -> Result<(), StoreError>;

    /// Whether the database holds nothing an issuer wrote: no CA and no
    /// write ever made.
    fn is_pristine(&self) -> Result<bool, StoreError>;

    /// Whether the database's files are still the ones opened (not removed
    /// or replaced under the running issuer); the reason if not.
    fn check_files(&self) -> Result<(), String>;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mark(seq: u64) -> Option<Mark> {
        Some(Mark {
            seq,
            hash: format!("{seq:064x}"),
        })
    }

    #[test]
    fn merging_keeps_the_newer_of_each_part() {
        let a = AuditAnchor {
            record: mark(9),
            checkpoint: mark(4),
        };
        let b = AuditAnchor {
            record: mark(7),
            checkpoint: mark(8),
        };
        let merged = a.clone().merge(b.clone());
        assert_eq!(merged.record, mark(9));
        assert_eq!(merged.checkpoint, mark(8));
        assert_eq!(b.merge(a), merged);
        assert_eq!(
            AuditAnchor::default()
                .merge(AuditAnchor {
                    record: None,
                    checkpoint: mark(1)
                })
                .checkpoint,
            mark(1)
        );
    }
}
