//! `hallmark-server audit tail | export | verify | key | checkpoint`.
//!
//! Verification runs here, in the CLI, not in the issuer: the issuer (over
//! its admin socket) or an export file only supplies the entries, and the
//! checkpoints are checked with the audit public key, pinned with `--key`.
//!
//! `audit verify` exits 0 when every record is covered by a valid
//! checkpoint, 2 when it finds tampering (each problem is named with its
//! kind: `changed`, `missing`, `inserted`, `reordered`, `truncated`,
//! `malformed`, `bad_signature`, `unknown_key`, `checkpoint_missing`,
//! `witness_missing`), 3 when nothing is wrong but some records (or all,
//! or none exist) are not signed by a checkpoint yet (an unverifiable
//! tail), and 1 when it cannot run.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use anyhow::Context as _;
use clap::{Args, Subcommand, ValueEnum};
use serde_json::json;
use tokio_stream::StreamExt as _;

use hallmark_proto::admin::admin_client::AdminClient;
use hallmark_proto::admin::{
    AuditKeyRequest, CheckpointAuditRequest, ReadAuditRequest, audit_entry, read_audit_request,
};
use tonic::transport::Channel;

use super::{AdminArgs, Exit, Output, print_json, rpc_error};
use crate::cli::output::{out, outln, stdout_error};
use render::{checkpoint_json, print_report, report_json, text_line};

mod offline;
mod render;
use crate::audit::record::format_time;
use crate::audit::verify::{Options, Verdict, check_witness, verify};
use crate::audit::{Entry, SignedCheckpoint, key};
use crate::image::{PublicKey, SigningKey};

/// Exit status of `audit verify` when it finds tampering.
pub const EXIT_TAMPERED: u8 = 2;
/// Exit status of `audit verify` when records are not signed yet.
pub const EXIT_UNVERIFIABLE: u8 = 3;

/// `audit` verbs.
#[derive(Debug, Subcommand)]
pub enum AuditCommand {
    /// Print the newest records (and checkpoints); `-f` keeps following.
    Tail(TailArgs),
    /// Write records and checkpoints as JSON lines, exactly as stored.
    Export(ExportArgs),
    /// Check the hash chain and the signed checkpoints.
    Verify(VerifyArgs),
    /// Print the audit public key (PEM) that verifies checkpoints.
    Key(KeyArgs),
    /// Sign a checkpoint over the newest record now.
    Checkpoint(CheckpointArgs),
    /// Start a new audit log on a stopped issuer (the old files are kept).
    Reset(offline::ResetArgs),
}

/// Flags of `audit tail`.
#[derive(Debug, Args)]
pub struct TailArgs {
    /// How many of the newest records to print first.
    #[arg(short = 'n', long, default_value_t = 20)]
    pub lines: u64,
    /// Keep printing new records as they are written (until the issuer stops).
    #[arg(short, long)]
    pub follow: bool,
    /// `text`, or `json` for the raw JSON lines.
    #[arg(long, value_enum, default_value_t)]
    pub output: Output,
    /// How to reach the issuer.
    #[command(flatten)]
    pub admin: AdminArgs,
}

/// Export formats.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, ValueEnum)]
pub enum ExportFormat {
    /// One JSON object per line: each record's canonical bytes as stored
    /// and hashed, each checkpoint right after the record it covers.
    #[default]
    Jsonl,
}

/// Flags of `audit export`.
#[derive(Debug, Args)]
pub struct ExportArgs {
    /// Start at a sequence number (`120`), a time (`2026-01-01T00:00:00Z`)
    /// or an age (`1h`): the first record written since then.
    #[arg(long)]
    pub since: Option<String>,
    /// Output format.
    #[arg(long, value_enum, default_value_t)]
    pub output: ExportFormat,
    /// How to reach the issuer.
    #[command(flatten)]
    pub admin: AdminArgs,
}

/// Flags of `audit verify`.
#[derive(Debug, Args)]
pub struct VerifyArgs {
    /// Verify an `audit export` file instead of the running issuer's log
    /// (the issuer's own `records.log` lines, `<seq> <record>`, are read
    /// too).
    #[arg(long, value_name = "FILE", conflicts_with = "data_dir")]
    pub from_export: Option<PathBuf>,
    /// Verify the audit files of a data directory directly (the issuer may
    /// be stopped, or refusing to start); the key defaults to the
    /// directory's `audit.key`.
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// A witness file (one checkpoint per line, as `[[audit.witness]]`
    /// writes them; syslog prefixes are skipped): fail unless the log holds
    /// every checkpoint in it.
    #[arg(long, value_name = "FILE")]
    pub witness: Option<PathBuf>,
    /// The audit public key (PEM, from `audit key`) to verify with. Without
    /// it the key the issuer reports is used, which an attacker who
    /// replaced the issuer's key file would also control.
    #[arg(long, value_name = "FILE")]
    pub key: Option<PathBuf>,
    /// Against a running issuer, `audit verify` first has it sign a
    /// checkpoint and then proves the log up to that checkpoint (records
    /// written after it, by this call or others, are left for the next
    /// run). With this flag nothing is signed and every record is read:
    /// those after the newest checkpoint are an unverifiable tail (exit 3).
    #[arg(long, conflicts_with_all = ["from_export", "data_dir"])]
    pub include_unsigned: bool,
    /// Accept an export that starts after seq 1 (`audit export --since`):
    /// what precedes its first record is not checked.
    #[arg(long, requires = "from_export")]
    pub partial: bool,
    /// Output format.
    #[arg(long, value_enum, default_value_t)]
    pub output: Output,
    /// How to reach the issuer.
    #[command(flatten)]
    pub admin: AdminArgs,
}

/// Flags of `audit key`.
#[derive(Debug, Args)]
pub struct KeyArgs {
    /// Read the key file of a (stopped or running) issuer's data directory
    /// instead of asking the issuer.
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// `text` prints the PEM.
    #[arg(long, value_enum, default_value_t)]
    pub output: Output,
    /// How to reach the issuer.
    #[command(flatten)]
    pub admin: AdminArgs,
}

/// Flags of `audit checkpoint`.
#[derive(Debug, Args)]
pub struct CheckpointArgs {
    /// Output format.
    #[arg(long, value_enum, default_value_t)]
    pub output: Output,
    /// How to reach the issuer.
    #[command(flatten)]
    pub admin: AdminArgs,
}

/// Runs an `audit` command.
pub async fn run(cmd: AuditCommand) -> anyhow::Result<()> {
    match cmd {
        AuditCommand::Tail(args) => tail(args).await,
        AuditCommand::Export(args) => export(args).await,
        AuditCommand::Verify(args) => verify_command(args).await,
        AuditCommand::Key(args) => key_command(args).await,
        AuditCommand::Checkpoint(args) => checkpoint(args).await,
        AuditCommand::Reset(args) => offline::reset(args).await,
    }
}

async fn tail(args: TailArgs) -> anyhow::Result<()> {
    let mut client = args.admin.client().await?;
    let request = ReadAuditRequest {
        start: Some(read_audit_request::Start::Last(args.lines)),
        follow: args.follow,
        signed_only: false,
    };
    let mut stream = client
        .read_audit(request)
        .await
        .map_err(|s| rpc_error("audit tail", s))?
        .into_inner();
    let mut out = std::io::stdout().lock();
    while let Some(entry) = stream.next().await {
        let entry = match entry {
            Ok(entry) => entry,
            // A follower ends when the issuer stops: not an error of ours.
            Err(status) if args.follow && status.code() == tonic::Code::Unavailable => {
                eprintln!("audit tail: {}", status.message());
                return Ok(());
            }
            Err(status) => return Err(rpc_error("audit tail", status)),
        };
        let Some(entry) = from_proto(entry) else {
            continue;
        };
        let line = match args.output {
            Output::Json => String::from_utf8_lossy(entry.bytes()).into_owned(),
            Output::Text => text_line(&entry),
        };
        writeln!(out, "{line}").map_err(stdout_error)?;
        out.flush().map_err(stdout_error)?;
    }
    Ok(())
}

async fn export(args: ExportArgs) -> anyhow::Result<()> {
    let start = match &args.since {
        None => None,
        Some(since) => Some(parse_since(since, SystemTime::now())?),
    };
    let mut client = args.admin.client().await?;
    let entries = read_all(&mut client, start, false, "audit export").await?;
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    for entry in entries {
        out.write_all(entry.bytes())
            .and_then(|()| out.write_all(b"\n"))
            .map_err(stdout_error)?;
    }
    out.flush().map_err(stdout_error)?;
    Ok(())
}

async fn verify_command(args: VerifyArgs) -> anyhow::Result<()> {
    let pinned = match &args.key {
        Some(path) => Some(read_public_key(path)?),
        None => None,
    };
    let pinned = match (pinned, &args.data_dir) {
        (None, Some(dir)) => Some(
            key::load(&key::key_path(dir))?
                .with_context(|| {
                    format!(
                        "{} does not exist: pass --key FILE",
                        key::key_path(dir).display()
                    )
                })?
                .public_key()
                .clone(),
        ),
        (pinned, _) => pinned,
    };
    let (entries, source) = match (&args.from_export, &args.data_dir) {
        (Some(path), _) => (read_export(path)?, path.display().to_string()),
        (None, Some(dir)) => (
            offline::read_data_dir(dir)?,
            format!("the audit files in {}", dir.display()),
        ),
        (None, None) => {
            let mut client = args.admin.client().await?;
            let signed_only = !args.include_unsigned;
            if signed_only {
                client
                    .checkpoint_audit(CheckpointAuditRequest {})
                    .await
                    .map_err(|s| rpc_error("audit verify (signing a checkpoint first)", s))?;
            }
            let entries = read_all(&mut client, None, signed_only, "audit verify").await?;
            (
                entries,
                if signed_only {
                    "the issuer's audit log, up to the checkpoint signed for this verification"
                        .to_owned()
                } else {
                    "the issuer's audit log".to_owned()
                },
            )
        }
    };
    let key = match pinned {
        Some(key) => key,
        None => {
            let mut client = args.admin.client().await.context(
                "no --key given, and the issuer cannot be asked for its audit key: pass --key FILE (the output of `hallmark-server audit key`)",
            )?;
            issuer_key(&mut client).await?
        }
    };
    let options = Options {
        allow_partial: args.partial,
    };
    let witnessed = match &args.witness {
        Some(path) => Some(
            std::fs::read(path)
                .with_context(|| format!("cannot read --witness {}", path.display()))?,
        ),
        None => None,
    };
    let witness_problems = witnessed.map(|bytes| {
        let lines: Vec<Vec<u8>> = bytes
            .split(|b| *b == b'\n')
            .filter(|l| !l.is_empty())
            .map(<[u8]>::to_vec)
            .collect();
        let (problems, skipped) = check_witness(&entries, &lines, &key);
        if skipped > 0 {
            eprintln!(
                "audit verify: {skipped} line(s) of the witness are not checkpoints signed by audit key {} (skipped)",
                key.keyid()
            );
        }
        problems
    });
    let report = verify(entries, &key, options).with_problems(witness_problems.unwrap_or_default());
    let pinned = args.key.is_some();
    match args.output {
        Output::Json => print_json(&report_json(&report, &key, pinned, &source))?,
        Output::Text => print_report(&report, &key, pinned, &source)?,
    }
    match report.verdict {
        Verdict::Verified => Ok(()),
        Verdict::Tampered => Err(Exit {
            code: EXIT_TAMPERED,
            message: format!(
                "audit log verification FAILED: {} problem{} found, first at seq {}",
                report.problems.len(),
                if report.problems.len() == 1 { "" } else { "s" },
                report.problems[0]
                    .seq
                    .map_or_else(|| "?".to_owned(), |s| s.to_string())
            ),
        }
        .into()),
        Verdict::UnverifiableTail => Err(Exit {
            code: EXIT_UNVERIFIABLE,
            message: match report.tail {
                Some(tail) => format!(
                    "no tampering found, but seq {}..{} are not signed by a checkpoint yet (unverifiable tail)",
                    tail.first_seq, tail.last_seq
                ),
                None => "no tampering found, but nothing is signed yet".to_owned(),
            },
        }
        .into()),
        Verdict::Empty => Err(Exit {
            code: EXIT_UNVERIFIABLE,
            message: "the audit log is empty: nothing is proven".to_owned(),
        }
        .into()),
    }
}

async fn key_command(args: KeyArgs) -> anyhow::Result<()> {
    let key = match &args.data_dir {
        Some(dir) => {
            let path = key::key_path(dir);
            key::load(&path)?
                .with_context(|| format!("{} does not exist", path.display()))?
                .public_key()
                .clone()
        }
        None => {
            let mut client = args.admin.client().await?;
            issuer_key(&mut client).await?
        }
    };
    match args.output {
        Output::Json => print_json(&json!({
            "key_id": key.keyid(),
            "algorithm": key.algorithm().to_string(),
            "public_key_pem": key.to_pem(),
        })),
        Output::Text => {
            out!("{}", key.to_pem())?;
            Ok(())
        }
    }
}

async fn checkpoint(args: CheckpointArgs) -> anyhow::Result<()> {
    let mut client = args.admin.client().await?;
    let response = client
        .checkpoint_audit(CheckpointAuditRequest {})
        .await
        .map_err(|s| rpc_error("audit checkpoint", s))?
        .into_inner();
    let signed = if response.checkpoint.is_empty() {
        None
    } else {
        Some(SignedCheckpoint::decode(&response.checkpoint).map_err(|e| {
            anyhow::anyhow!("the issuer answered with an unreadable checkpoint: {e}")
        })?)
    };
    match args.output {
        Output::Json => print_json(&json!({
            "created": response.created,
            "checkpoint": signed.as_ref().map(|s| checkpoint_json(&s.checkpoint)),
        })),
        Output::Text => {
            match &signed {
                Some(s) => outln!(
                    "{} checkpoint at seq {} (head {})",
                    if response.created {
                        "Signed"
                    } else {
                        "Already current:"
                    },
                    s.checkpoint.seq,
                    s.checkpoint.head
                )?,
                None => outln!("The audit log is empty: nothing to sign")?,
            }
            Ok(())
        }
    }
}

async fn read_all(
    client: &mut AdminClient<Channel>,
    start: Option<read_audit_request::Start>,
    signed_only: bool,
    what: &str,
) -> anyhow::Result<Vec<Entry>> {
    let mut stream = client
        .read_audit(ReadAuditRequest {
            start,
            follow: false,
            signed_only,
        })
        .await
        .map_err(|s| rpc_error(what, s))?
        .into_inner();
    let mut entries = Vec::new();
    while let Some(entry) = stream.next().await {
        let entry = entry.map_err(|s| rpc_error(what, s))?;
        entries.extend(from_proto(entry));
    }
    Ok(entries)
}

async fn issuer_key(client: &mut AdminClient<Channel>) -> anyhow::Result<PublicKey> {
    let response = client
        .audit_key(AuditKeyRequest {})
        .await
        .map_err(|s| rpc_error("audit key", s))?
        .into_inner();
    PublicKey::from_pem(&response.public_key_pem)
        .map_err(|e| anyhow::anyhow!("the issuer's audit key is unreadable: {e}"))
}

fn from_proto(entry: hallmark_proto::admin::AuditEntry) -> Option<Entry> {
    match entry.entry? {
        audit_entry::Entry::Record(bytes) => Some(Entry::Record(bytes)),
        audit_entry::Entry::Checkpoint(bytes) => Some(Entry::Checkpoint(bytes)),
    }
}

/// Reads an export: one entry per line; the final newline is optional.
fn read_export(path: &Path) -> anyhow::Result<Vec<Entry>> {
    let bytes = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    let mut lines: Vec<&[u8]> = bytes.split(|b| *b == b'\n').collect();
    if lines.last().is_some_and(|l| l.is_empty()) {
        lines.pop();
    }
    Ok(lines
        .into_iter()
        .map(|line| Entry::from_line(strip_journal_seq(line)))
        .collect())
}

/// A line of the issuer's own journal, `<seq> {...}`, read as its entry.
fn strip_journal_seq(line: &[u8]) -> &[u8] {
    match line.iter().position(|&b| b == b' ') {
        Some(space)
            if space > 0
                && line[..space].iter().all(u8::is_ascii_digit)
                && line.get(space + 1) == Some(&b'{') =>
        {
            &line[space + 1..]
        }
        _ => line,
    }
}

/// A public key file: `PUBLIC KEY` PEM, or the private key file itself.
fn read_public_key(path: &Path) -> anyhow::Result<PublicKey> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read --key {}", path.display()))?;
    PublicKey::from_pem(&text)
        .or_else(|_| SigningKey::from_pem(&text).map(|k| k.public_key().clone()))
        .map_err(|e| {
            anyhow::anyhow!(
                "--key {}: not a PUBLIC KEY PEM (use the output of `hallmark-server audit key`): {e}",
                path.display()
            )
        })
}

/// `--since`: digits are a sequence number, an RFC 3339 time is a time,
/// a duration (`90m`) is that long before `now`.
fn parse_since(text: &str, now: SystemTime) -> anyhow::Result<read_audit_request::Start> {
    if !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit()) {
        let seq: u64 = text
            .parse()
            .with_context(|| format!("--since {text}: sequence number too large"))?;
        return Ok(read_audit_request::Start::SinceSeq(seq));
    }
    if let Ok(time) = humantime::parse_rfc3339_weak(text) {
        return Ok(read_audit_request::Start::SinceTime(format_time(time)));
    }
    if let Ok(age) = humantime::parse_duration(text) {
        let time = now.checked_sub(age).unwrap_or(SystemTime::UNIX_EPOCH);
        return Ok(read_audit_request::Start::SinceTime(format_time(time)));
    }
    anyhow::bail!(
        "--since {text:?}: give a sequence number (120), a time (2026-01-01T00:00:00Z) or an age (1h)"
    )
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, UNIX_EPOCH};

    use super::*;

    #[test]
    fn since_is_a_sequence_number_a_time_or_an_age() {
        let now = UNIX_EPOCH + Duration::from_secs(1_767_225_600);
        assert_eq!(
            parse_since("120", now).unwrap(),
            read_audit_request::Start::SinceSeq(120)
        );
        assert_eq!(
            parse_since("2026-01-01T00:00:00Z", now).unwrap(),
            read_audit_request::Start::SinceTime("2026-01-01T00:00:00.000000000Z".into())
        );
        assert_eq!(
            parse_since("1h", now).unwrap(),
            read_audit_request::Start::SinceTime("2025-12-31T23:00:00.000000000Z".into())
        );
        assert!(parse_since("yesterday", now).is_err());
    }
}
