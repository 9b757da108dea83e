//! How `audit` commands print: tail lines, checkpoints and verification
//! reports, as text for people and JSON for scripts.

use serde_json::{Value, json};

use crate::audit::record::format_time;
use crate::audit::verify::{Report, Verdict};
use crate::audit::{AuditRecord, Entry, RecordHash, SignedCheckpoint};
use crate::cli::output::outln;
use crate::image::PublicKey;

/// One entry as a line for people: `seq time kind key=value ...`.
pub(super) fn text_line(entry: &Entry) -> String {
    match entry {
        Entry::Record(bytes) => match AuditRecord::decode(bytes) {
            Ok(record) => {
                let fields: Vec<String> = record
                    .fields
                    .iter()
                    .map(|(k, v)| format!("{k}={}", field_text(v)))
                    .collect();
                format!(
                    "{:>8}  {}  {}  {}",
                    record.seq,
                    format_time(record.time),
                    record.kind,
                    fields.join(" ")
                )
            }
            Err(error) => format!(
                "       ?  UNREADABLE RECORD ({error}): {}",
                String::from_utf8_lossy(bytes)
            ),
        },
        Entry::Checkpoint(bytes) => match SignedCheckpoint::decode(bytes) {
            Ok(signed) => format!(
                "{:>8}  {}  checkpoint  covers seq {} head={} key_id={}",
                "--",
                format_time(signed.checkpoint.time),
                signed.checkpoint.seq,
                signed.checkpoint.head,
                signed.checkpoint.key_id
            ),
            Err(error) => format!("      --  UNREADABLE CHECKPOINT ({error})"),
        },
    }
}

fn field_text(value: &Value) -> String {
    match value {
        Value::String(s)
            if !s.is_empty() && !s.contains(char::is_whitespace) && !s.contains('"') =>
        {
            s.clone()
        }
        other => other.to_string(),
    }
}

pub(super) fn checkpoint_json(checkpoint: &crate::audit::Checkpoint) -> Value {
    json!({
        "seq": checkpoint.seq,
        "head": checkpoint.head.to_hex(),
        "time": format_time(checkpoint.time),
        "key_id": checkpoint.key_id,
        "prev": checkpoint.chain.map(|c| c.prev.to_hex()),
        "store_generation": checkpoint.chain.map(|c| c.store_generation),
    })
}

pub(super) fn report_json(report: &Report, key: &PublicKey, pinned: bool, source: &str) -> Value {
    json!({
        "result": report.verdict.as_str(),
        "source": source,
        "key_id": key.keyid(),
        "key_pinned": pinned,
        "records": report.records,
        "first_seq": report.first_seq,
        "last_seq": report.last_seq,
        "head": report.head.as_ref().map(RecordHash::to_hex),
        "checkpoints": report.checkpoints,
        "last_checkpoint": report.last_checkpoint.as_ref().map(checkpoint_json),
        "verified_through": report.verified_through,
        "unverifiable_tail": report.tail.map(|t| json!({
            "first_seq": t.first_seq,
            "last_seq": t.last_seq,
            "records": t.records,
        })),
        "partial": report.partial,
        "problems": report.problems.iter().map(|p| json!({
            "seq": p.seq,
            "kind": p.kind.as_str(),
            "position": p.position,
            "message": p.message,
        })).collect::<Vec<_>>(),
    })
}

pub(super) fn print_report(
    report: &Report,
    key: &PublicKey,
    pinned: bool,
    source: &str,
) -> anyhow::Result<()> {
    outln!("Source          : {source}")?;
    outln!(
        "Audit key       : {} ({})",
        key.keyid(),
        if pinned {
            "pinned with --key"
        } else {
            "as reported by the issuer: pin it with --key"
        }
    )?;
    let range = match (report.first_seq, report.last_seq) {
        (Some(first), Some(last)) => format!(" (seq {first}..{last})"),
        _ => String::new(),
    };
    outln!("Records         : {}{range}", report.records)?;
    outln!("Checkpoints     : {}", report.checkpoints)?;
    if report.partial {
        outln!(
            "Partial export  : starts at seq {}; what precedes it is not checked",
            report.first_seq.unwrap_or(0)
        )?;
    }
    match (&report.last_checkpoint, report.verified_through) {
        (Some(cp), Some(through)) => outln!(
            "Verified        : seq {}..{through} (newest valid checkpoint at seq {}, signed {})",
            report.first_seq.unwrap_or(1),
            cp.seq,
            humantime::format_rfc3339_seconds(cp.time)
        )?,
        _ => outln!("Verified        : nothing")?,
    }
    if let Some(tail) = report.tail {
        outln!(
            "Unverifiable    : seq {}..{} ({} record{} after the newest checkpoint: they chain, but nothing signs them yet)",
            tail.first_seq,
            tail.last_seq,
            tail.records,
            if tail.records == 1 { "" } else { "s" }
        )?;
    }
    for problem in &report.problems {
        let seq = problem
            .seq
            .map_or_else(|| "?".to_owned(), |s| s.to_string());
        let at = problem
            .position
            .map(|p| format!(" (entry {p})"))
            .unwrap_or_default();
        outln!(
            "PROBLEM         : seq {seq} {}{at}: {}",
            problem.kind.as_str(),
            problem.message
        )?;
    }
    let verdict = match report.verdict {
        Verdict::Verified => "VERIFIED",
        Verdict::UnverifiableTail => "UNVERIFIABLE TAIL",
        Verdict::Tampered => "TAMPERED",
        Verdict::Empty => "EMPTY",
    };
    outln!("Result          : {verdict}")?;
    Ok(())
}
