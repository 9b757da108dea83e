//! The checks that make the audit log fail closed when its files were
//! tampered with: at open (the log must extend its newest signed
//! checkpoint, whose chain must be whole), against the database's anchor
//! (neither may be rolled back or replaced alone), and before each new
//! checkpoint (the records about to be signed must be the ones this issuer
//! wrote). Each failure is an [`AuditError::Tampered`] that names the
//! sequence number and says what to do.

use super::AuditError;
use super::record::{AuditRecord, CheckpointHash, RecordHash, SignedCheckpoint};
use crate::image::PublicKey;
use crate::store::{AnchorStore, AuditAnchor, AuditStore, Mark};

/// What to do about any tampering found at start.
pub(crate) const WHAT_TO_DO: &str = "see the whole log with `hallmark-server audit verify --data-dir <DIR>`; restore the data directory from one backup, or start a new log with `hallmark-server audit reset --reason <why>` (the old files are kept)";

/// The newest signed checkpoint this issuer knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Signed {
    /// The record it covers (0: no checkpoint yet).
    pub seq: u64,
    /// That record's hash.
    pub head: RecordHash,
    /// The checkpoint line's hash ([`RecordHash::GENESIS`] when none).
    pub hash: CheckpointHash,
    /// The database generation it names (`None`: an unchained checkpoint of
    /// an older issuer, or none).
    pub store_generation: Option<u64>,
}

impl Signed {
    const NONE: Signed = Signed {
        seq: 0,
        head: RecordHash::GENESIS,
        hash: RecordHash::GENESIS,
        store_generation: None,
    };
}

/// The verified state of a log at open.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Opened {
    /// The next record's sequence number.
    pub next: u64,
    /// The newest record's hash (the next record's `prev`).
    pub head: RecordHash,
    /// The newest checkpoint.
    pub signed: Signed,
}

fn tampered(what: String) -> AuditError {
    AuditError::Tampered(format!("audit log tampered with: {what}; {WHAT_TO_DO}"))
}

/// Verifies that the stored log extends its newest checkpoint: the
/// checkpoint is signed by `key` and names the checkpoint before it, the
/// record it covers hashes to its head, and every record after it chains
/// on without a gap.
pub(crate) fn verify_open(store: &dyn AuditStore, key: &PublicKey) -> Result<Opened, AuditError> {
    let signed = match store.last_audit_checkpoint()? {
        None => Signed::NONE,
        Some((stored_seq, bytes)) => {
            let checkpoint = SignedCheckpoint::decode(&bytes).map_err(|e| {
                tampered(format!(
                    "the newest checkpoint (stored for seq {stored_seq}) is unreadable ({e})"
                ))
            })?;
            let cp = &checkpoint.checkpoint;
            if cp.seq != stored_seq || !checkpoint.verify(key) {
                return Err(tampered(format!(
                    "the newest checkpoint (seq {}) is not signed by the audit key {}: it was forged or altered",
                    cp.seq,
                    key.keyid()
                )));
            }
            if let Some(chain) = &cp.chain {
                let before = store.audit_checkpoint_before(cp.seq)?;
                let expected = before
                    .as_ref()
                    .map_or(RecordHash::GENESIS, |(_, b)| RecordHash::of(b));
                if chain.prev != expected {
                    return Err(tampered(format!(
                        "the checkpoint at seq {} was signed after a checkpoint that checkpoints.log no longer holds ({}): checkpoints were removed or replaced",
                        cp.seq,
                        before.map_or("it holds none before it".to_owned(), |(s, _)| format!(
                            "the one before it covers seq {s}"
                        ))
                    )));
                }
            }
            Signed {
                seq: cp.seq,
                head: cp.head,
                hash: checkpoint.hash(),
                store_generation: cp.chain.map(|c| c.store_generation),
            }
        }
    };
    let last = store.last_audit_record()?.map_or(0, |(seq, _)| seq);
    if last < signed.seq {
        return Err(tampered(format!(
            "records.log ends at seq {last} but a signed checkpoint covers seq {}: records {}..{} were removed",
            signed.seq,
            last + 1,
            signed.seq
        )));
    }
    let head = chain_from(store, &signed, last)?;
    Ok(Opened {
        next: last + 1,
        head,
        signed,
    })
}

/// Reads the records after `signed` up to `until` and checks that they
/// chain on from it without a gap (and that the record `signed` covers
/// still hashes to its head); returns the hash of record `until`.
fn chain_from(
    store: &dyn AuditStore,
    signed: &Signed,
    until: u64,
) -> Result<RecordHash, AuditError> {
    let mut expected_seq = signed.seq.max(1);
    let mut prev = RecordHash::GENESIS;
    let mut head = signed.head;
    while expected_seq <= until {
        let page = store.audit_records(expected_seq, super::PAGE)?;
        if page.is_empty() {
            break;
        }
        for (seq, bytes) in page {
            if seq > until {
                return Ok(head);
            }
            let hash = RecordHash::of(&bytes);
            if seq == signed.seq {
                if hash != signed.head {
                    return Err(tampered(format!(
                        "seq {seq} does not match the signed checkpoint that covers it: the log was rewritten up to seq {seq}"
                    )));
                }
                prev = hash;
                expected_seq = seq + 1;
                continue;
            }
            if expected_seq == signed.seq {
                return Err(tampered(format!(
                    "seq {expected_seq}, which the newest signed checkpoint covers, was removed"
                )));
            }
            if seq != expected_seq {
                return Err(tampered(format!(
                    "seq {seq} follows seq {}: records after the newest checkpoint were removed or inserted",
                    expected_seq - 1
                )));
            }
            let record = AuditRecord::decode(&bytes)
                .map_err(|e| tampered(format!("seq {seq} after the newest checkpoint is {e}")))?;
            if record.prev != prev {
                return Err(tampered(format!(
                    "seq {seq} does not chain to seq {}: records after the newest checkpoint were rewritten",
                    seq - 1
                )));
            }
            prev = hash;
            head = hash;
            expected_seq = seq + 1;
        }
    }
    if expected_seq <= until {
        return Err(tampered(format!(
            "records.log ends at seq {} before seq {until}",
            expected_seq - 1
        )));
    }
    Ok(head)
}

/// Before a checkpoint over record `seq` (hash `head`, as this issuer wrote
/// it) is signed: the stored records since the last checkpoint must be
/// the ones this issuer wrote, and the stored newest checkpoint the one it
/// signed.
pub(crate) fn verify_since(
    store: &dyn AuditStore,
    signed: &Signed,
    seq: u64,
    head: RecordHash,
) -> Result<(), AuditError> {
    let stored_checkpoint = store
        .last_audit_checkpoint()?
        .map_or(RecordHash::GENESIS, |(_, b)| RecordHash::of(&b));
    if stored_checkpoint != signed.hash {
        return Err(tampered(format!(
            "checkpoints.log no longer ends with the checkpoint this issuer signed over seq {}: it was changed while the issuer ran",
            signed.seq
        )));
    }
    let stored = chain_from(store, signed, seq)?;
    if stored != head {
        return Err(tampered(format!(
            "the stored records up to seq {seq} are not the ones this issuer wrote: records.log was changed while the issuer ran"
        )));
    }
    Ok(())
}

/// Checks the database's [`AuditAnchor`] against the opened log, in both
/// directions; writes the first anchor of a new or pre-anchor database.
pub(crate) fn check_anchor(
    anchor: &dyn AnchorStore,
    store: &dyn AuditStore,
    opened: &Opened,
) -> Result<(), AuditError> {
    let last = opened.next - 1;
    match anchor.audit_anchor()? {
        Some(stored) => {
            if let Some(record) = &stored.record {
                if record.seq > last {
                    return Err(tampered(format!(
                        "the database saw the audit log reach seq {}, but records.log ends at {}: records were removed, or the audit files replaced",
                        record.seq,
                        if last == 0 {
                            "nothing".to_owned()
                        } else {
                            format!("seq {last}")
                        }
                    )));
                }
                let found = store
                    .audit_record(record.seq)?
                    .map(|b| RecordHash::of(&b).to_hex());
                if found.as_deref() != Some(record.hash.as_str()) {
                    return Err(tampered(format!(
                        "seq {} is not the record the database saw written: the log was rewritten up to seq {}",
                        record.seq, record.seq
                    )));
                }
            }
            if let Some(checkpoint) = &stored.checkpoint {
                let found = store
                    .audit_checkpoints(checkpoint.seq, 1)?
                    .into_iter()
                    .next()
                    .filter(|(seq, _)| *seq == checkpoint.seq)
                    .map(|(_, b)| RecordHash::of(&b).to_hex());
                if found.as_deref() != Some(checkpoint.hash.as_str()) {
                    return Err(tampered(format!(
                        "the database saw a checkpoint signed over seq {} that checkpoints.log does not hold: checkpoints were removed or replaced",
                        checkpoint.seq
                    )));
                }
            }
            if let Some(generation) = opened.signed.store_generation
                && anchor.generation() < generation
            {
                return Err(tampered(format!(
                    "the checkpoint at seq {} was signed when the database had made {generation} writes, but it has made {}: the database was rolled back or replaced",
                    opened.signed.seq,
                    anchor.generation()
                )));
            }
        }
        None if anchor.is_pristine()? => {
            if last > 0 {
                return Err(tampered(format!(
                    "the audit log holds records up to seq {last} but the database is empty: the database was removed or replaced (a new CA would go on under the old log)"
                )));
            }
            // A new issuer: anchor the empty log before the first record.
            anchor.put_audit_anchor(AuditAnchor::default())?;
        }
        None => {
            if opened.signed.store_generation.is_some() {
                return Err(tampered(format!(
                    "the database keeps no audit anchor, but the checkpoint at seq {} was signed by an issuer that keeps one: the database was replaced",
                    opened.signed.seq
                )));
            }
            tracing::warn!(target: "hallmark::audit", "the database predates audit anchors: anchoring the audit log now");
            anchor.put_audit_anchor(current(opened))?;
        }
    }
    Ok(())
}

/// The anchor of the opened log.
pub(crate) fn current(opened: &Opened) -> AuditAnchor {
    AuditAnchor {
        record: (opened.next > 1).then(|| Mark {
            seq: opened.next - 1,
            hash: opened.head.to_hex(),
        }),
        checkpoint: (opened.signed.seq > 0).then(|| Mark {
            seq: opened.signed.seq,
            hash: opened.signed.hash.to_hex(),
        }),
    }
}
