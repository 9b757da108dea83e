//! Verification of an audit log, from the issuer or from an export file:
//! the same entries either way (records and signed checkpoints, in the
//! order they were read).
//!
//! What it checks: every record is in canonical form; sequence numbers run
//! from 1 (or, for a partial export, from the first one) without gaps,
//! duplicates or reordering; every record's `prev` is the hash of the
//! record before it; every checkpoint is signed by the audit key and its
//! head is the hash of the record it covers. What a checkpoint covers is
//! then proven; records after the newest valid checkpoint chain correctly
//! but nothing signs them yet: they are reported as an unverifiable tail,
//! because removing some of them cannot be told from their never having
//! been written.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::Value;

use super::record::{AuditRecord, Checkpoint, Entry, RecordHash, SignedCheckpoint};
use crate::image::PublicKey;

/// What verification concluded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Verdict {
    /// Every record is covered by a valid checkpoint.
    Verified,
    /// No tampering found, but records after the newest checkpoint (or all
    /// of them, when there is none) are not signed yet.
    UnverifiableTail,
    /// At least one [`Problem`].
    Tampered,
    /// There are no records: nothing is proven.
    Empty,
}

impl Verdict {
    /// `verified`, `unverifiable_tail`, `tampered`, `empty`.
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Verified => "verified",
            Verdict::UnverifiableTail => "unverifiable_tail",
            Verdict::Tampered => "tampered",
            Verdict::Empty => "empty",
        }
    }
}

/// The kind of a [`Problem`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
#[non_exhaustive]
pub enum ProblemKind {
    /// A record or checkpoint is unreadable or not in canonical form.
    Malformed,
    /// A record's content differs from what the chain or a checkpoint says.
    Changed,
    /// Sequence numbers are missing between records.
    Missing,
    /// A record appears that the chain does not account for.
    Inserted,
    /// Records are out of sequence order.
    Reordered,
    /// The log ends before a signed checkpoint's sequence number.
    Truncated,
    /// A checkpoint's signature does not verify.
    BadSignature,
    /// A checkpoint names an audit key other than the one verifying.
    UnknownKey,
    /// A checkpoint names a previous checkpoint the log does not hold:
    /// checkpoints were removed (or replaced).
    CheckpointMissing,
    /// A witness holds a checkpoint the log does not: the log was rolled
    /// back or rewritten.
    WitnessMissing,
}

impl ProblemKind {
    /// Snake-case name for JSON output.
    pub fn as_str(self) -> &'static str {
        match self {
            ProblemKind::Malformed => "malformed",
            ProblemKind::Changed => "changed",
            ProblemKind::Missing => "missing",
            ProblemKind::Inserted => "inserted",
            ProblemKind::Reordered => "reordered",
            ProblemKind::Truncated => "truncated",
            ProblemKind::BadSignature => "bad_signature",
            ProblemKind::UnknownKey => "unknown_key",
            ProblemKind::CheckpointMissing => "checkpoint_missing",
            ProblemKind::WitnessMissing => "witness_missing",
        }
    }
}

/// One thing found wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// The (first) sequence number concerned, when known.
    pub seq: Option<u64>,
    /// What kind of problem.
    pub kind: ProblemKind,
    /// 1-based position of the entry in the input (the line of an export
    /// file), when one entry is to blame.
    pub position: Option<usize>,
    /// What is wrong, for people.
    pub message: String,
}

/// Records after the newest valid checkpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tail {
    /// First unsigned sequence number.
    pub first_seq: u64,
    /// Last one.
    pub last_seq: u64,
    /// How many records.
    pub records: u64,
}

/// The outcome of [`verify`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    /// The conclusion.
    pub verdict: Verdict,
    /// Record entries read.
    pub records: u64,
    /// Lowest sequence number read.
    pub first_seq: Option<u64>,
    /// Highest sequence number read.
    pub last_seq: Option<u64>,
    /// Hash of the record with the highest sequence number.
    pub head: Option<RecordHash>,
    /// Checkpoint entries read.
    pub checkpoints: u64,
    /// The newest checkpoint that verified (signature and head).
    pub last_checkpoint: Option<Checkpoint>,
    /// Every record up to here is proven by a valid checkpoint and no
    /// problem concerns it.
    pub verified_through: Option<u64>,
    /// Records after the newest valid checkpoint.
    pub tail: Option<Tail>,
    /// The input starts after seq 1 (a partial export): what precedes its
    /// first record is not checked.
    pub partial: bool,
    /// Everything found wrong, in sequence order.
    pub problems: Vec<Problem>,
}

impl Report {
    /// Adds problems found by another check (a witness): the verdict
    /// becomes tampered, and nothing from the first problem on counts as
    /// verified.
    #[must_use]
    pub fn with_problems(mut self, more: Vec<Problem>) -> Report {
        if more.is_empty() {
            return self;
        }
        self.problems.extend(more);
        self.problems
            .sort_by_key(|p| (p.seq.unwrap_or(0), p.kind, p.position));
        let first = self.problems.iter().map(|p| p.seq.unwrap_or(0)).min();
        if let (Some(first), Some(through)) = (first, self.verified_through)
            && through >= first
        {
            self.verified_through = self
                .last_checkpoint
                .as_ref()
                .map(|c| c.seq)
                .filter(|s| *s < first)
                .or(None);
        }
        self.verdict = Verdict::Tampered;
        self
    }
}

/// How to read the input.
#[derive(Debug, Clone, Copy, Default)]
pub struct Options {
    /// Accept a first record after seq 1 (`audit export --since`); without
    /// it, records before the first one read are reported missing.
    pub allow_partial: bool,
}

/// One record entry as read.
struct Read {
    position: usize,
    seq: Option<u64>,
    prev: Option<RecordHash>,
    hash: RecordHash,
    well_formed: bool,
}

/// Verifies `entries` against the audit public key `key`.
pub fn verify(
    entries: impl IntoIterator<Item = Entry>,
    key: &PublicKey,
    options: Options,
) -> Report {
    let mut problems = Vec::new();
    let mut reads = Vec::new();
    let mut checkpoint_entries = Vec::new();
    for (index, entry) in entries.into_iter().enumerate() {
        let position = index + 1;
        match entry {
            Entry::Record(bytes) => reads.push(read_record(position, &bytes, &mut problems)),
            Entry::Checkpoint(bytes) => checkpoint_entries.push((position, bytes)),
        }
    }

    // Stream order: a record whose sequence number is not above every one
    // before it is reordered, unless another record claims the same number
    // (then it is an insertion, judged below).
    let mut by_seq: BTreeMap<u64, Vec<usize>> = BTreeMap::new();
    for (i, read) in reads.iter().enumerate() {
        if let Some(seq) = read.seq {
            by_seq.entry(seq).or_default().push(i);
        }
    }
    let mut highest: Option<(u64, usize)> = None;
    for read in &reads {
        let Some(seq) = read.seq else { continue };
        match highest {
            Some((top, _)) if seq < top && by_seq.get(&seq).is_some_and(|v| v.len() == 1) => {
                problems.push(Problem {
                    seq: Some(seq),
                    kind: ProblemKind::Reordered,
                    position: Some(read.position),
                    message: format!("seq {seq} appears after seq {top}: records were reordered"),
                });
            }
            Some((top, _)) if seq <= top => {}
            _ => highest = Some((seq, read.position)),
        }
    }

    // Duplicates: the genuine record is the one the next record chains to.
    let mut chosen: BTreeMap<u64, usize> = BTreeMap::new();
    for (&seq, indices) in &by_seq {
        if indices.len() == 1 {
            chosen.insert(seq, indices[0]);
            continue;
        }
        let next_prevs: BTreeSet<RecordHash> = by_seq
            .get(&(seq + 1))
            .into_iter()
            .flatten()
            .filter_map(|&i| reads[i].prev)
            .collect();
        let genuine: Vec<usize> = indices
            .iter()
            .copied()
            .filter(|&i| next_prevs.contains(&reads[i].hash))
            .collect();
        let keep = match genuine.as_slice() {
            [one] => *one,
            _ => indices[0],
        };
        chosen.insert(seq, keep);
        for &i in indices {
            if genuine.len() == 1 && i == keep {
                continue;
            }
            problems.push(Problem {
                seq: Some(seq),
                kind: ProblemKind::Inserted,
                position: Some(reads[i].position),
                message: if genuine.len() == 1 {
                    format!(
                        "a second record claims seq {seq} and nothing chains to it: it was inserted"
                    )
                } else {
                    format!(
                        "{} records claim seq {seq}: records were inserted",
                        indices.len()
                    )
                },
            });
        }
    }

    let first_seq = chosen.keys().next().copied();
    let last_seq = chosen.keys().next_back().copied();
    let partial = options.allow_partial && first_seq.is_some_and(|s| s > 1);

    // Gaps.
    if let Some(first) = first_seq
        && first > 1
        && !partial
    {
        problems.push(missing(1, first - 1));
    }
    let seqs: Vec<u64> = chosen.keys().copied().collect();
    for pair in seqs.windows(2) {
        if pair[1] > pair[0] + 1 {
            problems.push(missing(pair[0] + 1, pair[1] - 1));
        }
    }

    // Links.
    for (&seq, &i) in &chosen {
        let read = &reads[i];
        if !read.well_formed {
            continue;
        }
        if seq == 1 {
            if read.prev != Some(RecordHash::GENESIS) {
                problems.push(Problem {
                    seq: Some(1),
                    kind: ProblemKind::Changed,
                    position: Some(read.position),
                    message: "seq 1 does not chain to the genesis hash: it was changed".into(),
                });
            }
            continue;
        }
        let Some(&before) = chosen.get(&(seq - 1)) else {
            continue;
        };
        let before = &reads[before];
        if before.well_formed && read.prev != Some(before.hash) {
            problems.push(Problem {
                seq: Some(seq - 1),
                kind: ProblemKind::Changed,
                position: Some(before.position),
                message: format!(
                    "seq {} does not hash to the prev recorded in seq {seq}: seq {} was changed (or seq {seq}'s prev)",
                    seq - 1,
                    seq - 1
                ),
            });
        }
    }

    // Checkpoints, each naming the one before it.
    let mut valid: Vec<Checkpoint> = Vec::new();
    let mut previous: Option<(u64, RecordHash, bool)> = None;
    for (index, (position, bytes)) in checkpoint_entries.iter().enumerate() {
        let before = previous.replace((
            lenient_checkpoint_seq(bytes).unwrap_or(0),
            RecordHash::of(bytes),
            false,
        ));
        let position = Some(*position);
        let signed = match SignedCheckpoint::decode(bytes) {
            Ok(signed) => signed,
            Err(error) => {
                problems.push(Problem {
                    seq: lenient_checkpoint_seq(bytes),
                    kind: ProblemKind::Malformed,
                    position,
                    message: format!("checkpoint is unreadable: {error}"),
                });
                continue;
            }
        };
        let cp = &signed.checkpoint;
        if partial && first_seq.is_some_and(|f| cp.seq < f) {
            continue;
        }
        if cp.key_id != key.keyid() {
            problems.push(Problem {
                seq: Some(cp.seq),
                kind: ProblemKind::UnknownKey,
                position,
                message: format!(
                    "the checkpoint at seq {} names audit key {}, not the verifying key {}",
                    cp.seq,
                    cp.key_id,
                    key.keyid()
                ),
            });
            continue;
        }
        if !signed.verify(key) {
            problems.push(Problem {
                seq: Some(cp.seq),
                kind: ProblemKind::BadSignature,
                position,
                message: format!(
                    "the checkpoint at seq {}: signature does not verify: it was forged or altered",
                    cp.seq
                ),
            });
            continue;
        }
        if let Some(problem) = chain_problem(cp, before, index == 0 && partial, position) {
            problems.push(problem);
        }
        if let Some(p) = previous.as_mut() {
            p.2 = cp.chain.is_some();
        }
        match chosen.get(&cp.seq) {
            Some(&i) if reads[i].hash == cp.head => valid.push(cp.clone()),
            Some(&i) => problems.push(Problem {
                seq: Some(cp.seq),
                kind: ProblemKind::Changed,
                position: Some(reads[i].position),
                message: format!(
                    "seq {} does not match the signed checkpoint at seq {}: the history up to it was rewritten",
                    cp.seq, cp.seq
                ),
            }),
            None if last_seq.is_none_or(|last| cp.seq > last) => {
                let from = last_seq.map_or(1, |l| l + 1);
                problems.push(Problem {
                    seq: Some(from),
                    kind: ProblemKind::Truncated,
                    position,
                    message: format!(
                        "the log ends {} but a signed checkpoint covers seq {}: records {from}..{} were removed",
                        last_seq.map_or("before seq 1".to_owned(), |l| format!("at seq {l}")),
                        cp.seq,
                        cp.seq
                    ),
                });
            }
            // Inside a gap, already reported as missing.
            None => {}
        }
    }

    problems.sort_by_key(|p| (p.seq.unwrap_or(0), p.kind, p.position));
    valid.sort_by_key(|c| c.seq);
    let last_checkpoint = valid.last().cloned();
    let first_problem = problems.iter().map(|p| p.seq.unwrap_or(0)).min();
    let verified_through = valid
        .iter()
        .map(|c| c.seq)
        .filter(|&s| first_problem.is_none_or(|p| s < p))
        .max();
    let signed_up_to = last_checkpoint.as_ref().map_or(0, |c| c.seq);
    let tail = last_seq.filter(|&last| last > signed_up_to).map(|last| {
        let first = chosen
            .range(signed_up_to + 1..)
            .next()
            .map_or(last, |(s, _)| *s);
        Tail {
            first_seq: first,
            last_seq: last,
            records: chosen.range(signed_up_to + 1..).count() as u64,
        }
    });
    let verdict = if !problems.is_empty() {
        Verdict::Tampered
    } else if reads.is_empty() {
        Verdict::Empty
    } else if tail.is_some() {
        Verdict::UnverifiableTail
    } else {
        Verdict::Verified
    };
    Report {
        verdict,
        records: reads.len() as u64,
        first_seq,
        last_seq,
        head: last_seq
            .and_then(|s| chosen.get(&s))
            .map(|&i| reads[i].hash),
        checkpoints: checkpoint_entries.len() as u64,
        last_checkpoint,
        verified_through,
        tail,
        partial,
        problems,
    }
}

/// Whether checkpoint `cp` links to `before` (the seq, line hash and
/// chainedness of the checkpoint entry read before it, `None` for the
/// first): a chained checkpoint must name exactly it (the genesis hash when
/// it is the first), and an unchained one may not follow a chained one.
fn chain_problem(
    cp: &Checkpoint,
    before: Option<(u64, RecordHash, bool)>,
    starts_partial_export: bool,
    position: Option<usize>,
) -> Option<Problem> {
    match (&cp.chain, before) {
        (None, Some((_, _, true))) => Some(Problem {
            seq: Some(cp.seq),
            kind: ProblemKind::Inserted,
            position,
            message: format!(
                "the checkpoint at seq {} is unchained but follows chained checkpoints: it was inserted",
                cp.seq
            ),
        }),
        (None, _) => None,
        (Some(_), None) if starts_partial_export => None,
        (Some(chain), before) => {
            let expected = before.map_or(RecordHash::GENESIS, |(_, hash, _)| hash);
            (chain.prev != expected).then(|| Problem {
                seq: Some(cp.seq),
                kind: ProblemKind::CheckpointMissing,
                position,
                message: match before {
                    Some((seq, _, _)) => format!(
                        "the checkpoint at seq {} was signed after a checkpoint the log does not hold (the one before it here covers seq {seq}): checkpoints were removed or replaced",
                        cp.seq
                    ),
                    None => format!(
                        "the checkpoint at seq {} was signed after an earlier checkpoint the log does not hold: checkpoints were removed",
                        cp.seq
                    ),
                },
            })
        }
    }
}

/// Checks that the verified log holds every checkpoint a witness saw:
/// `witnessed` are the witness's lines (a line may carry a prefix such as a
/// syslog header before the checkpoint's JSON), `entries` the log.
/// Checkpoints the witness holds that `key` did not sign are not evidence
/// and are skipped (counted in the second value).
pub fn check_witness(
    entries: &[Entry],
    witnessed: &[Vec<u8>],
    key: &PublicKey,
) -> (Vec<Problem>, usize) {
    let in_log: BTreeSet<&[u8]> = entries
        .iter()
        .filter_map(|e| match e {
            Entry::Checkpoint(b) => Some(b.as_slice()),
            Entry::Record(_) => None,
        })
        .collect();
    let mut problems = Vec::new();
    let mut skipped = 0;
    for (index, line) in witnessed.iter().enumerate() {
        let Some(start) = line.windows(14).position(|w| w == b"{\"checkpoint\":") else {
            continue;
        };
        let json = line[start..].trim_ascii_end();
        let Ok(signed) = SignedCheckpoint::decode(json) else {
            skipped += 1;
            continue;
        };
        if !signed.verify(key) {
            skipped += 1;
            continue;
        }
        if !in_log.contains(json) {
            let cp = &signed.checkpoint;
            problems.push(Problem {
                seq: Some(cp.seq),
                kind: ProblemKind::WitnessMissing,
                position: Some(index + 1),
                message: format!(
                    "the witness holds a checkpoint over seq {} (head {}) that the log does not: the log was rolled back or rewritten",
                    cp.seq, cp.head
                ),
            });
        }
    }
    (problems, skipped)
}

fn missing(from: u64, to: u64) -> Problem {
    Problem {
        seq: Some(from),
        kind: ProblemKind::Missing,
        position: None,
        message: if from == to {
            format!("seq {from} is missing: it was deleted")
        } else {
            format!("seq {from}..{to} are missing: they were deleted")
        },
    }
}

fn read_record(position: usize, bytes: &[u8], problems: &mut Vec<Problem>) -> Read {
    let hash = RecordHash::of(bytes);
    match AuditRecord::decode(bytes) {
        Ok(record) => Read {
            position,
            seq: Some(record.seq),
            prev: Some(record.prev),
            hash,
            well_formed: true,
        },
        Err(error) => {
            // Still place it by the sequence number it claims, so that the
            // problem is reported where it is and not also as a gap.
            let value: Option<Value> = serde_json::from_slice(bytes).ok();
            let seq = value
                .as_ref()
                .and_then(|v| v.get("seq"))
                .and_then(Value::as_u64);
            problems.push(Problem {
                seq,
                kind: ProblemKind::Malformed,
                position: Some(position),
                message: match seq {
                    Some(seq) => format!("seq {seq} is {error}: it was changed"),
                    None => format!("a record is unreadable ({error}): it was changed"),
                },
            });
            Read {
                position,
                seq,
                prev: None,
                hash,
                well_formed: false,
            }
        }
    }
}

fn lenient_checkpoint_seq(bytes: &[u8]) -> Option<u64> {
    serde_json::from_slice::<Value>(bytes)
        .ok()?
        .get("checkpoint")?
        .get("seq")?
        .as_u64()
}

#[cfg(test)]
mod tests;
