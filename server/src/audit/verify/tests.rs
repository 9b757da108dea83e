use std::time::{Duration, UNIX_EPOCH};

use serde_json::Map;

use super::*;
use crate::audit::record::CheckpointChain;
use crate::image::{Algorithm, SigningKey};

fn key() -> SigningKey {
    SigningKey::from_pkcs8_der(&SigningKey::generate_pkcs8(Algorithm::Ed25519).unwrap()).unwrap()
}

/// Records 1..=n; a checkpoint after each seq in `checkpoints`.
fn log(n: u64, checkpoints: &[u64], key: &SigningKey) -> Vec<Entry> {
    let mut prev = RecordHash::GENESIS;
    let mut prev_checkpoint = RecordHash::GENESIS;
    let mut out = Vec::new();
    for seq in 1..=n {
        let mut fields = Map::new();
        fields.insert("n".into(), seq.into());
        let bytes = AuditRecord {
            seq,
            time: UNIX_EPOCH + Duration::from_secs(1_767_225_600 + seq),
            kind: "admin_call".into(),
            fields,
            prev,
        }
        .encode();
        prev = RecordHash::of(&bytes);
        out.push(Entry::Record(bytes));
        if checkpoints.contains(&seq) {
            let signed = Checkpoint {
                seq,
                head: prev,
                time: UNIX_EPOCH + Duration::from_secs(1_767_225_600 + seq),
                key_id: key.keyid().to_owned(),
                chain: Some(CheckpointChain {
                    prev: prev_checkpoint,
                    store_generation: seq,
                }),
            }
            .sign(key)
            .unwrap();
            prev_checkpoint = signed.hash();
            out.push(Entry::Checkpoint(signed.encode()));
        }
    }
    out
}

fn position_of(entries: &[Entry], seq: u64) -> usize {
    entries
        .iter()
        .position(|e| match e {
            Entry::Record(b) => AuditRecord::decode(b).unwrap().seq == seq,
            Entry::Checkpoint(_) => false,
        })
        .unwrap()
}

fn run(entries: Vec<Entry>, key: &SigningKey) -> Report {
    verify(entries, key.public_key(), Options::default())
}

fn only_problem(report: &Report) -> &Problem {
    assert_eq!(report.verdict, Verdict::Tampered, "{report:#?}");
    assert_eq!(report.problems.len(), 1, "{report:#?}");
    &report.problems[0]
}

#[test]
fn an_untouched_log_verifies_and_its_unsigned_tail_is_labelled() {
    let k = key();
    let report = run(log(10, &[4, 10], &k), &k);
    assert_eq!(report.verdict, Verdict::Verified, "{report:#?}");
    assert_eq!(report.verified_through, Some(10));
    assert_eq!(report.records, 10);
    assert_eq!(report.checkpoints, 2);
    assert_eq!(report.tail, None);

    let report = run(log(10, &[4], &k), &k);
    assert_eq!(report.verdict, Verdict::UnverifiableTail);
    assert_eq!(report.verified_through, Some(4));
    assert_eq!(
        report.tail,
        Some(Tail {
            first_seq: 5,
            last_seq: 10,
            records: 6
        })
    );
    assert!(report.problems.is_empty());

    let report = run(log(3, &[], &k), &k);
    assert_eq!(report.verdict, Verdict::UnverifiableTail);
    assert_eq!(report.verified_through, None);

    assert_eq!(run(Vec::new(), &k).verdict, Verdict::Empty);
}

#[test]
fn a_changed_record_is_named() {
    let k = key();
    let mut entries = log(10, &[10], &k);
    let at = position_of(&entries, 5);
    let mut record = AuditRecord::decode(entries[at].bytes()).unwrap();
    record.fields.insert("n".into(), 55.into());
    entries[at] = Entry::Record(record.encode());
    let report = run(entries, &k);
    let problem = only_problem(&report);
    assert_eq!((problem.seq, problem.kind), (Some(5), ProblemKind::Changed));
    assert!(
        problem.message.contains("seq 5 was changed"),
        "{}",
        problem.message
    );
    assert_eq!(report.verified_through, None);
}

#[test]
fn a_record_edited_by_hand_is_not_canonical() {
    let k = key();
    let mut entries = log(6, &[6], &k);
    let at = position_of(&entries, 2);
    let text = String::from_utf8(entries[at].bytes().to_vec()).unwrap();
    entries[at] = Entry::Record(text.replacen("\"n\":2", "\"n\": 2", 1).into_bytes());
    let report = run(entries, &k);
    let problem = only_problem(&report);
    assert_eq!(
        (problem.seq, problem.kind),
        (Some(2), ProblemKind::Malformed)
    );
    assert_eq!(problem.position, Some(at + 1));
}

#[test]
fn a_deleted_record_is_named() {
    let k = key();
    let mut entries = log(10, &[10], &k);
    entries.remove(position_of(&entries, 6));
    let report = run(entries, &k);
    let problem = only_problem(&report);
    assert_eq!((problem.seq, problem.kind), (Some(6), ProblemKind::Missing));

    let mut entries = log(10, &[10], &k);
    entries.remove(position_of(&entries, 1));
    let problem = only_problem(&run(entries, &k)).clone();
    assert_eq!((problem.seq, problem.kind), (Some(1), ProblemKind::Missing));
}

#[test]
fn an_inserted_record_is_named() {
    let k = key();
    let mut entries = log(10, &[10], &k);
    let at = position_of(&entries, 4);
    let genuine = AuditRecord::decode(entries[position_of(&entries, 4)].bytes()).unwrap();
    // A forger chains a record of their own to seq 3 and gives it seq 4.
    let mut forged = genuine.clone();
    forged.kind = "svid_minted".into();
    entries.insert(at, Entry::Record(forged.encode()));
    let report = run(entries, &k);
    let problem = only_problem(&report);
    assert_eq!(
        (problem.seq, problem.kind),
        (Some(4), ProblemKind::Inserted)
    );
    assert_eq!(problem.position, Some(at + 1), "the forged line");
}

#[test]
fn reordered_records_are_named() {
    let k = key();
    let mut entries = log(10, &[10], &k);
    let (a, b) = (position_of(&entries, 3), position_of(&entries, 4));
    entries.swap(a, b);
    let report = run(entries, &k);
    let problem = only_problem(&report);
    assert_eq!(
        (problem.seq, problem.kind),
        (Some(3), ProblemKind::Reordered)
    );
    assert!(
        problem.message.contains("after seq 4"),
        "{}",
        problem.message
    );
}

#[test]
fn truncation_below_a_checkpoint_is_tampering_above_it_an_unverifiable_tail() {
    let k = key();
    let mut entries = log(10, &[8], &k);
    // Keep the checkpoint line but cut records 6..=10.
    entries.retain(|e| match e {
        Entry::Record(b) => AuditRecord::decode(b).unwrap().seq <= 5,
        Entry::Checkpoint(_) => true,
    });
    let report = run(entries, &k);
    let problem = only_problem(&report);
    assert_eq!(
        (problem.seq, problem.kind),
        (Some(6), ProblemKind::Truncated)
    );
    assert!(problem.message.contains("6..8"), "{}", problem.message);

    // Cutting only records after the newest checkpoint cannot be told from
    // those records never having been written: an unverifiable tail, not
    // success and not tampering.
    let mut entries = log(10, &[8], &k);
    entries.truncate(position_of(&entries, 10));
    let report = run(entries, &k);
    assert_eq!(report.verdict, Verdict::UnverifiableTail, "{report:#?}");
    assert_eq!(report.tail.map(|t| (t.first_seq, t.last_seq)), Some((9, 9)));
}

#[test]
fn a_rewritten_history_fails_its_checkpoint() {
    let k = key();
    // Someone rebuilt the whole chain with one record changed: every link
    // holds, but the signed head does not.
    let original = log(6, &[6], &k);
    let mut rebuilt = Vec::new();
    let mut prev = RecordHash::GENESIS;
    for entry in &original {
        if let Entry::Record(bytes) = entry {
            let mut record = AuditRecord::decode(bytes).unwrap();
            if record.seq == 3 {
                record.kind = "rewritten".into();
            }
            record.prev = prev;
            let bytes = record.encode();
            prev = RecordHash::of(&bytes);
            rebuilt.push(Entry::Record(bytes));
        } else {
            rebuilt.push(entry.clone());
        }
    }
    let problem = only_problem(&run(rebuilt, &k)).clone();
    assert_eq!((problem.seq, problem.kind), (Some(6), ProblemKind::Changed));
    assert!(problem.message.contains("rewritten"), "{}", problem.message);
}

#[test]
fn forged_and_foreign_checkpoints_are_refused() {
    let k = key();
    let forger = key();
    // Signed by another key that claims to be the audit key.
    let mut entries = log(4, &[], &k);
    let head = RecordHash::of(entries[3].bytes());
    let mut forged = Checkpoint {
        seq: 4,
        head,
        time: UNIX_EPOCH,
        key_id: k.keyid().to_owned(),
        chain: None,
    }
    .sign(&forger)
    .unwrap();
    forged.checkpoint.key_id = k.keyid().to_owned();
    entries.push(Entry::Checkpoint(forged.encode()));
    let problem = only_problem(&run(entries, &k)).clone();
    assert_eq!(
        (problem.seq, problem.kind),
        (Some(4), ProblemKind::BadSignature)
    );

    // A whole log signed by another key, checked against the pinned one.
    let problem = only_problem(&run(log(4, &[4], &forger), &k)).clone();
    assert_eq!(
        (problem.seq, problem.kind),
        (Some(4), ProblemKind::UnknownKey)
    );
}

#[test]
fn a_partial_export_is_checked_from_its_first_record() {
    let k = key();
    let mut entries = log(10, &[3, 10], &k);
    entries.drain(..position_of(&entries, 5));
    let report = verify(
        entries.clone(),
        k.public_key(),
        Options {
            allow_partial: true,
        },
    );
    assert_eq!(report.verdict, Verdict::Verified, "{report:#?}");
    assert!(report.partial);
    assert_eq!(report.first_seq, Some(5));
    // Read as a whole log, the start is missing, and so is the checkpoint
    // the first one here names.
    let report = run(entries, &k);
    let kinds: Vec<ProblemKind> = report.problems.iter().map(|p| p.kind).collect();
    assert_eq!(
        kinds,
        [ProblemKind::Missing, ProblemKind::CheckpointMissing],
        "{report:#?}"
    );
}

#[test]
fn an_unreadable_line_is_reported_where_it_is() {
    let k = key();
    let mut entries = log(5, &[5], &k);
    entries.insert(2, Entry::from_line(b"not json at all"));
    let report = run(entries, &k);
    assert_eq!(report.verdict, Verdict::Tampered);
    assert!(
        report
            .problems
            .iter()
            .any(|p| p.kind == ProblemKind::Malformed && p.position == Some(3)),
        "{report:#?}"
    );
}

#[test]
fn a_removed_checkpoint_breaks_the_checkpoint_chain() {
    let k = key();
    let entries = log(9, &[3, 6, 9], &k);
    assert_eq!(run(entries.clone(), &k).verdict, Verdict::Verified);
    // Remove the middle checkpoint (the one after seq 6).
    let removed: Vec<Entry> = entries
        .iter()
        .filter(|e| {
            !matches!(e, Entry::Checkpoint(b)
                if SignedCheckpoint::decode(b).unwrap().checkpoint.seq == 6)
        })
        .cloned()
        .collect();
    let report = run(removed, &k);
    let problem = only_problem(&report).clone();
    assert_eq!(
        (problem.seq, problem.kind),
        (Some(9), ProblemKind::CheckpointMissing)
    );
    assert!(
        problem.message.contains("covers seq 3"),
        "{}",
        problem.message
    );
    assert_eq!(report.verified_through, Some(3));
    // Removing the first one: the second names a predecessor never seen.
    let first_gone: Vec<Entry> = entries
        .iter()
        .filter(|e| {
            !matches!(e, Entry::Checkpoint(b)
                if SignedCheckpoint::decode(b).unwrap().checkpoint.seq == 3)
        })
        .cloned()
        .collect();
    let problem = only_problem(&run(first_gone, &k)).clone();
    assert_eq!(
        (problem.seq, problem.kind),
        (Some(6), ProblemKind::CheckpointMissing)
    );
}

#[test]
fn a_witness_proves_the_log_holds_what_it_saw() {
    let k = key();
    let entries = log(6, &[3, 6], &k);
    let witnessed: Vec<Vec<u8>> = entries
        .iter()
        .filter_map(|e| match e {
            Entry::Checkpoint(b) => {
                let mut line = b"Dec  3 12:00:00 host hallmark-audit: ".to_vec();
                line.extend_from_slice(b);
                Some(line)
            }
            Entry::Record(_) => None,
        })
        .collect();
    assert_eq!(check_witness(&entries, &witnessed, k.public_key()).0, []);
    // The log rolled back to before the second checkpoint.
    let rolled_back: Vec<Entry> = entries[..4].to_vec();
    let (problems, skipped) = check_witness(&rolled_back, &witnessed, k.public_key());
    assert_eq!(skipped, 0);
    assert_eq!(problems.len(), 1);
    assert_eq!(
        (problems[0].seq, problems[0].kind),
        (Some(6), ProblemKind::WitnessMissing)
    );
    let report = run(rolled_back, &k).with_problems(problems);
    assert_eq!(report.verdict, Verdict::Tampered);
    // Lines another key signed are not evidence.
    let foreign = log(3, &[3], &key());
    let foreign_lines: Vec<Vec<u8>> = foreign
        .iter()
        .filter_map(|e| match e {
            Entry::Checkpoint(b) => Some(b.clone()),
            Entry::Record(_) => None,
        })
        .collect();
    assert_eq!(check_witness(&entries, &foreign_lines, k.public_key()).1, 1);
}
