//! The tamper-evident audit log.
//!
//! Every [`SecurityEvent`](crate::events::SecurityEvent) becomes one
//! append-only record in the audit files (`audit/records.log` and
//! `audit/checkpoints.log` in the data directory, one `<seq> <canonical
//! JSON>` line each; [`crate::store::FileAuditStore`]); each record holds the SHA-256 of the
//! record before it, and the issuer signs checkpoints over the newest
//! record with a dedicated audit key. `hallmark-server audit verify` checks
//! the chain and the checkpoints ([`verify`]).
//!
//! # Records
//!
//! A record is a JSON object with exactly these members:
//!
//! | member   | value |
//! |----------|-------|
//! | `seq`    | sequence number: 1 for the first record, +1 for each next one, no gaps |
//! | `time`   | when the issuer wrote it: RFC 3339 UTC with exactly nine fractional digits, `2026-01-01T00:00:00.000000000Z` |
//! | `kind`   | what happened: `svid_minted`, `node_attested`, `admin_call`, ... (the [`SecurityEvent`](crate::events::SecurityEvent) variant in snake case) |
//! | `fields` | the event's structured fields (object; strings, integers, booleans, `null`, arrays of strings) |
//! | `prev`   | the hash of record `seq - 1` (64 lowercase hex); 64 zeros for seq 1 |
//!
//! **Canonical bytes.** A record is stored, exported (one per line) and
//! hashed as its canonical JSON: object keys sorted by their UTF-8 bytes at
//! every level; no whitespace; integers in plain decimal (no floats); strings
//! with the minimal escapes (`\"`, `\\`, `\b`, `\f`, `\n`, `\r`, `\t`, other
//! control characters as `\u00xx` lowercase), everything else, non-ASCII
//! included, as is. These are the rules of the gold image payloads
//! ([`crate::image::canonical`]). A record is canonical if and only if
//! reading it and encoding it again gives back the same bytes; verification
//! refuses any other form. Because strings escape newlines, a record never
//! contains a newline byte.
//!
//! **Hash.** `hash(record) = SHA-256(canonical bytes)`, with nothing
//! prepended: for an export line, `printf %s "$line" | sha256sum` is the next
//! line's `prev`.
//!
//! # Checkpoints
//!
//! A checkpoint says "record `seq` hashes to `head`", which through the chain
//! commits to every record up to `seq`. Its body is
//! `{"head":<hex>,"key_id":<hex>,"prev":<hex>,"seq":<n>,"store_generation":<n>,"time":<RFC 3339>}`
//! (canonical JSON; `key_id` is the hex SHA-256 of the audit public key's
//! SPKI DER; `prev` is the SHA-256 of the previous checkpoint's canonical
//! line, 64 zeros for the first, so checkpoints are a chain of their own;
//! `store_generation` is how many durable writes the issuer's database had
//! made, see [`crate::store::AnchorStore`]). The audit key signs
//! `b"hallmark.audit.checkpoint.v2\n" || canonical body` (Ed25519). A
//! checkpoint is stored and exported as the canonical line
//! `{"checkpoint":<body>,"signature":<base64 of the signature>}`.
//! Checkpoints of issuers before the chain have neither `prev` nor
//! `store_generation` and are signed under `hallmark.audit.checkpoint.v1\n`;
//! they still verify, and none may follow a chained one.
//!
//! The issuer signs one every `[audit] checkpoint_interval` (when records
//! were added), on `audit checkpoint`, and on clean shutdown after a final
//! `issuer_stopping` record, so a cleanly stopped issuer leaves no unsigned
//! tail. Each checkpoint also goes to the configured [`witness`]es.
//!
//! # Tampering the issuer itself notices
//!
//! At open the log must extend its newest signed checkpoint: the checkpoint
//! verifies and names the one stored before it, the record it covers
//! hashes to its head, and every later record chains on. The database's
//! anchor (the newest durable record and checkpoint it saw) must be in the
//! log, and the database must be at least as new as the newest checkpoint
//! says; an audit log beside an empty database is refused. Before each
//! checkpoint the issuer re-reads the records since the last one and
//! compares them with what it wrote, and every second it checks that its
//! files are still linked at their paths; either failing halts the log
//! (every append, so every mint, is refused; `/ready` reports why). Any
//! of these is an [`AuditError::Tampered`] or [`AuditError::Halted`] that
//! names the sequence number and what to do (`audit verify --data-dir`,
//! restore, or `audit reset`).
//!
//! # The audit key
//!
//! An Ed25519 key in `audit.key` in the data directory (PKCS#8 PEM, 0600,
//! written atomically), never beside the records ([`key`]). Someone who can
//! rewrite the data directory's records can change, remove, insert or
//! reorder records, but cannot sign a checkpoint over the result: `audit
//! verify` names the first sequence number that no longer fits. Records
//! after the newest checkpoint, which nothing signs yet, are reported as an
//! unverifiable tail, never as verified. Pin the public key (`audit key`
//! prints it; `audit verify --key FILE`) so that a replaced key file is
//! caught too.
//!
//! # Writing is part of the operation
//!
//! Appending takes a short lock: the sequence number, time and `prev` are
//! assigned and the record is copied into the journal's buffer under it, so sequence numbers are
//! gap-free and strictly increasing however many callers race. The record
//! is durable once the store has written and `fdatasync`ed it; callers await that before they
//! answer (an SVID is not returned, an admin call reports the failure if
//! the record cannot be written). Concurrent callers share flushes: one
//! flush makes every record appended before it durable (group commit), so
//! auditing costs far less than one fsync per mint.
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use std::sync::Arc;
//! use hallmark_server::audit::{AuditLog, verify};
//! use hallmark_server::events::{EventSink, SecurityEvent};
//! use hallmark_server::store::FileAuditStore;
//!
//! let dir = tempfile::tempdir()?;
//! let store = Arc::new(FileAuditStore::open(dir.path(), None)?);
//! let clock = Arc::new(hallmark_ca::clock::SystemClock);
//! let log = AuditLog::open_in(dir.path(), store, clock)?;
//! log.record(SecurityEvent::IssuerStopping { version: "demo" }).await?;
//! log.checkpoint().await?;
//! let entries = hallmark_server::audit::export(&log, 1)?;
//! let report = verify::verify(entries, log.public_key(), Default::default());
//! assert_eq!(report.verdict, verify::Verdict::Verified);
//! # Ok(())
//! # }
//! ```

mod error;
mod integrity;
pub mod key;
mod log;
pub mod record;
pub mod verify;
pub mod witness;

pub use error::AuditError;
pub use log::{AuditLog, LogState, Observed, PAGE};
pub use record::{
    AuditRecord, Checkpoint, CheckpointChain, CheckpointHash, Entry, RecordHash, SignedCheckpoint,
};
pub use witness::{WitnessConfig, Witnesses};

/// Every stored entry from record `from` on, in order, each checkpoint
/// right after the record it covers (and checkpoints beyond the last
/// record at the end, so that a truncated log shows as truncated). Reads
/// the whole log into memory; the admin API streams it page by page
/// instead.
pub fn export(log: &AuditLog, from: u64) -> Result<Vec<Entry>, AuditError> {
    let mut out = Vec::new();
    let mut merge = Merge::new(from);
    loop {
        let (entries, done) = merge.next_page(log, u64::MAX, u64::MAX)?;
        out.extend(entries);
        if done {
            return Ok(out);
        }
    }
}

/// Reads records and checkpoints page by page and interleaves them by
/// sequence number: the shared cursor of [`export`] and the admin API's
/// `ReadAudit` stream.
#[derive(Debug, Clone)]
pub struct Merge {
    next_record: u64,
    next_checkpoint: u64,
}

impl Merge {
    /// Starts at record `from` (and the checkpoints covering `from` or later).
    pub fn new(from: u64) -> Self {
        Self {
            next_record: from.max(1),
            next_checkpoint: from.max(1),
        }
    }

    /// The next entries, with records up to `records_until` (a durable
    /// head, so that a record a crash could still take away is never
    /// served) and checkpoints up to `checkpoints_until`; `true` once no
    /// record up to `records_until` is left. Checkpoints past the last
    /// record are served once the records are exhausted: a checkpoint
    /// beyond every stored record is how truncation shows.
    pub fn next_page(
        &mut self,
        log: &AuditLog,
        records_until: u64,
        checkpoints_until: u64,
    ) -> Result<(Vec<Entry>, bool), AuditError> {
        let records: Vec<(u64, Vec<u8>)> = log
            .records(self.next_record)?
            .into_iter()
            .take_while(|(seq, _)| *seq <= records_until)
            .collect();
        let records_done = records.len() < PAGE;
        let bound = match records.last() {
            Some((seq, _)) if !records_done => (*seq).min(checkpoints_until),
            _ => checkpoints_until,
        };
        let mut checkpoints: Vec<(u64, Vec<u8>)> = Vec::new();
        loop {
            let page = log.checkpoints(self.next_checkpoint)?;
            let full = page.len() >= PAGE;
            let mut past_bound = false;
            for (seq, bytes) in page {
                if seq > bound {
                    past_bound = true;
                    break;
                }
                self.next_checkpoint = seq.saturating_add(1);
                checkpoints.push((seq, bytes));
            }
            if !full || past_bound {
                break;
            }
        }
        let mut out = Vec::with_capacity(records.len() + checkpoints.len());
        let mut checkpoints = checkpoints.into_iter().peekable();
        for (seq, bytes) in records {
            while let Some((_, cp)) = checkpoints.next_if(|(c, _)| *c < seq) {
                out.push(Entry::Checkpoint(cp));
            }
            out.push(Entry::Record(bytes));
            self.next_record = seq.saturating_add(1);
        }
        out.extend(checkpoints.map(|(_, cp)| Entry::Checkpoint(cp)));
        Ok((out, records_done))
    }
}
