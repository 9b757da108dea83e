//! The `audit` verbs that work on a data directory rather than a running
//! issuer: `audit verify --data-dir` (reads the audit files without
//! locking them) and `audit reset` (starts a new log on a stopped issuer).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context as _;
use clap::Args;
use serde_json::json;

use super::super::{Output, print_json};
use crate::audit::{AuditLog, Entry, RecordHash};
use crate::config::{DEFAULT_DATA_DIR, ServerConfig};
use crate::events::{EventSink as _, SecurityEvent};
use crate::store::{
    AUDIT_DIR, AnchorStore, AuditAnchor, DataDirLock, FileAuditStore, SledStore, StoredLog,
};

/// Flags of `audit reset`.
#[derive(Debug, Args)]
pub struct ResetArgs {
    /// Why a new log is started (recorded as the new log's first record).
    #[arg(long, value_name = "TEXT")]
    pub reason: String,
    /// The issuer's data directory (default: the config's `data_dir`).
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// Server config file to read `data_dir` from.
    #[arg(short = 'c', long)]
    pub config: Option<PathBuf>,
    /// Output format.
    #[arg(long, value_enum, default_value_t)]
    pub output: Output,
}

/// The data directory from `--data-dir`, else the config's, else the default.
pub(super) fn data_dir(flag: Option<&Path>, config: Option<&Path>) -> anyhow::Result<PathBuf> {
    if let Some(dir) = flag {
        return Ok(dir.to_owned());
    }
    if let Some(config) = config {
        let file = ServerConfig::from_file(config)?;
        if let Some(dir) = file.data_dir {
            return Ok(dir);
        }
    }
    Ok(PathBuf::from(DEFAULT_DATA_DIR))
}

/// Every entry of the audit files in `data_dir`, each checkpoint right
/// after the record it covers (the order of `audit export`).
pub(super) fn read_data_dir(data_dir: &Path) -> anyhow::Result<Vec<Entry>> {
    let audit = FileAuditStore::dir(data_dir);
    if !audit.is_dir() {
        anyhow::bail!(
            "{} does not exist: is {} an issuer's data directory?",
            audit.display(),
            data_dir.display()
        );
    }
    let StoredLog {
        records,
        checkpoints,
    } = FileAuditStore::read_unlocked(data_dir)?;
    Ok(interleave(records, checkpoints))
}

fn interleave(records: Vec<(u64, Vec<u8>)>, checkpoints: Vec<(u64, Vec<u8>)>) -> Vec<Entry> {
    let mut out = Vec::with_capacity(records.len() + checkpoints.len());
    let mut checkpoints = checkpoints.into_iter().peekable();
    for (seq, bytes) in records {
        while let Some((_, cp)) = checkpoints.next_if(|(c, _)| *c < seq) {
            out.push(Entry::Checkpoint(cp));
        }
        out.push(Entry::Record(bytes));
    }
    out.extend(checkpoints.map(|(_, cp)| Entry::Checkpoint(cp)));
    out
}

/// `audit reset`: moves the old audit files aside (never deletes them),
/// starts a new log whose first record names the old head and the reason,
/// signs a checkpoint over it, and anchors the database to the new log.
/// The issuer must be stopped (its locks are taken).
pub(super) async fn reset(args: ResetArgs) -> anyhow::Result<()> {
    if args.reason.trim().is_empty() {
        anyhow::bail!("--reason must say why the audit log is started over");
    }
    let data_dir = data_dir(args.data_dir.as_deref(), args.config.as_deref())?;
    let _lock = DataDirLock::acquire(&data_dir)?;
    let store = Arc::new(SledStore::open(&data_dir).with_context(|| {
        format!(
            "cannot open the database in {}: stop the issuer first",
            data_dir.display()
        )
    })?);
    let old = FileAuditStore::read_unlocked(&data_dir)?;
    let old_anchor = store.audit_anchor().ok().flatten();
    let old_dir = FileAuditStore::dir(&data_dir);
    let moved_to = if old_dir.exists() {
        // Holding the journal locks proves no issuer writes them.
        FileAuditStore::open(&data_dir, None)
            .with_context(|| format!("cannot lock {}: stop the issuer first", old_dir.display()))?;
        let stamp = humantime::format_rfc3339_seconds(std::time::SystemTime::now())
            .to_string()
            .replace(':', "");
        let to = data_dir.join(format!("{AUDIT_DIR}.reset-{stamp}"));
        std::fs::rename(&old_dir, &to)
            .with_context(|| format!("cannot move {} to {}", old_dir.display(), to.display()))?;
        Some(to)
    } else {
        None
    };
    store.replace_audit_anchor(AuditAnchor::default())?;
    let files = Arc::new(FileAuditStore::open(&data_dir, None)?);
    let clock = Arc::new(hallmark_ca::clock::SystemClock);
    let log = AuditLog::open_in(&data_dir, files, clock)?;
    log.anchor(store.clone())?;
    let last = old.records.last();
    let checkpoint = old.checkpoints.last();
    log.record(SecurityEvent::AuditReset {
        reason: args.reason.clone(),
        uid: Some(rustix::process::getuid().as_raw()),
        old_last_seq: last.map_or(0, |(seq, _)| *seq),
        old_head: last.map(|(_, b)| RecordHash::of(b).to_hex()),
        old_checkpoint_seq: checkpoint.map_or(0, |(seq, _)| *seq),
        old_checkpoint: checkpoint.map(|(_, b)| RecordHash::of(b).to_hex()),
        old_anchor_seq: old_anchor.and_then(|a| a.record).map(|m| m.seq),
        moved_to: moved_to.as_ref().map(|p| p.display().to_string()),
    })
    .await?;
    let signed = log
        .checkpoint()
        .await?
        .context("the new audit log has no record to sign")?;
    store.flush_and_close()?;
    match args.output {
        Output::Json => print_json(&json!({
            "old_last_seq": last.map(|(seq, _)| *seq),
            "moved_to": moved_to.as_ref().map(|p| p.display().to_string()),
            "new_checkpoint_seq": signed.checkpoint.seq,
        })),
        Output::Text => {
            println!(
                "Started a new audit log in {}: seq 1 records the reset ({}).",
                FileAuditStore::dir(&data_dir).display(),
                args.reason
            );
            match (&moved_to, last) {
                (Some(to), Some((seq, _))) => println!(
                    "The old log (records up to seq {seq}) is kept in {}; its witnesses' files belong to it: start new witness files.",
                    to.display()
                ),
                (Some(to), None) => {
                    println!("The old (empty) audit files are in {}.", to.display())
                }
                (None, _) => println!("There was no audit log before."),
            }
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checkpoints_follow_the_record_they_cover() {
        let r = |s: u64| (s, format!("r{s}").into_bytes());
        let c = |s: u64| (s, format!("c{s}").into_bytes());
        let entries = interleave(vec![r(1), r(2), r(3)], vec![c(1), c(3), c(5)]);
        let order: Vec<String> = entries
            .iter()
            .map(|e| String::from_utf8_lossy(e.bytes()).into_owned())
            .collect();
        assert_eq!(order, ["r1", "c1", "r2", "r3", "c3", "c5"]);
    }
}
