//! `hallmark-loadgen`: end-to-end load on a real issuer (and agent) from a
//! separate process.
//!
//! The load generator starts `hallmark-server run` as a child process in a
//! temp dir (127.0.0.1, a free port), registers gold images and makes join
//! tokens over its admin socket, drives the node API over mutual-TLS gRPC
//! with simulated agents (the agent's own client code, one connection and
//! node SVID per agent), and at the end prints throughput, latency
//! percentiles and the issuer's RSS (`/proc/<pid>/status`), then stops it.
//! `workload-fetch` also starts `hallmark-agent run` and drives its SPIFFE
//! Workload API over the Unix socket. Everything stays on this machine.
//!
//! ```text
//! hallmark-loadgen --mode mint-x509 --concurrency 32 --agents 16 --duration 10s
//! hallmark-loadgen --mode sync-streams --agents 10000 --kills 5 --json out.json
//! hallmark-loadgen --mode workload-fetch --concurrency 8 --children 200
//! ```
//!
//! Every loop is bounded in time and count; the whole run has a deadline
//! (`--timeout`); child daemons are killed and temp dirs removed on every
//! exit path (errors, the deadline, Ctrl-C) because they are owned by
//! values whose `Drop` does it. benches/run.sh runs every figure of
//! BENCHMARKS.md with it; `--json` files record the command they came from.

mod issuer;
mod mint;
mod node;
mod process;
mod stats;
mod sync;
mod workload;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::{Parser, ValueEnum};

use issuer::IssuerOptions;

/// End-to-end load on a real Hallmark issuer over mutual-TLS gRPC.
#[derive(Debug, Parser)]
#[command(name = "hallmark-loadgen", version, about)]
struct Cli {
    /// What to load.
    #[arg(long, value_enum)]
    mode: Mode,
    /// Requests in flight (mint, attest), attestations in flight while
    /// setting up (sync-streams), connections (workload-fetch, cached).
    #[arg(long, default_value_t = 32)]
    concurrency: usize,
    /// Measured time (mint, attest, workload-fetch cached).
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    duration: Duration,
    /// Unmeasured time before it.
    #[arg(long, default_value = "2s", value_parser = humantime::parse_duration)]
    warmup: Duration,
    /// Simulated agents, each attested and on its own mTLS connection.
    #[arg(long, default_value_t = 16)]
    agents: usize,
    /// Keys per MintX509Svids call (that many images match, so that many
    /// SVIDs per call); for mint-jwt, tokens per call.
    #[arg(long, default_value_t = 1)]
    keys_per_call: usize,
    /// Join tokens made before an `attest` run (the most it can attest).
    #[arg(long, default_value_t = 20_000)]
    tokens: usize,
    /// Kills (each followed by a lift) in sync-streams and workload-fetch.
    #[arg(long, default_value_t = 5)]
    kills: usize,
    /// Workload processes holding a stream during a workload-fetch kill.
    #[arg(long, default_value_t = 100)]
    streams: usize,
    /// Spread those processes over this many uids (60000, 60001, ...; needs
    /// root): the agent admits at most 64 connections per uid, so a flood
    /// larger than that comes from several accounts. 0 runs them all as the
    /// load generator's own uid.
    #[arg(long, default_value_t = 0)]
    stream_uids: u32,
    /// New processes for the workload-fetch first-fetch case.
    #[arg(long, default_value_t = 200)]
    children: usize,
    /// How many of those run at once.
    #[arg(long, default_value_t = 1)]
    child_concurrency: usize,
    /// The issuer binary (default: next to this one).
    #[arg(long)]
    server_bin: Option<PathBuf>,
    /// The agent binary (default: next to this one).
    #[arg(long)]
    agent_bin: Option<PathBuf>,
    /// The issuer's log level (`info` is the shipped default: one line per
    /// audited event).
    #[arg(long, default_value = "info")]
    server_log_level: String,
    /// Write the results as JSON here.
    #[arg(long)]
    json: Option<PathBuf>,
    /// The whole run stops here, cleaning up.
    #[arg(long, default_value = "15m", value_parser = humantime::parse_duration)]
    timeout: Duration,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Mode {
    MintX509,
    MintJwt,
    Attest,
    SyncStreams,
    WorkloadFetch,
}

impl Mode {
    fn name(self) -> &'static str {
        match self {
            Mode::MintX509 => "mint-x509",
            Mode::MintJwt => "mint-jwt",
            Mode::Attest => "attest",
            Mode::SyncStreams => "sync-streams",
            Mode::WorkloadFetch => "workload-fetch",
        }
    }
}

/// The resolved options every mode reads.
#[derive(Debug, Clone)]
struct Options {
    mode: Mode,
    concurrency: usize,
    duration: Duration,
    warmup: Duration,
    agents: usize,
    keys_per_call: usize,
    tokens: usize,
    kills: usize,
    streams: usize,
    stream_uids: u32,
    children: usize,
    child_concurrency: usize,
    issuer: IssuerOptions,
    agent_binary: PathBuf,
}

fn main() -> ExitCode {
    if let Ok(spec) = std::env::var(workload::CHILD_ENV) {
        return exit(workload::child(&spec));
    }
    let cli = Cli::parse();
    let command = command_line(std::env::args());
    exit(run(cli, command))
}

fn exit(result: anyhow::Result<()>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("hallmark-loadgen: {error:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli, command: String) -> anyhow::Result<()> {
    if cli.keys_per_call > hallmark_server::node::MAX_KEYS_PER_CALL {
        bail!(
            "--keys-per-call is at most {}",
            hallmark_server::node::MAX_KEYS_PER_CALL
        );
    }
    let files = process::raise_nofile_limit();
    // Each simulated agent holds a connection; attestation opens another.
    let needed = (cli.agents as u64) + (cli.concurrency as u64) * 2 + 256;
    if cli.mode == Mode::SyncStreams && files < needed {
        bail!(
            "{} agents need about {needed} open files; the limit is {files} (ulimit -n)",
            cli.agents
        );
    }
    let options = Options {
        mode: cli.mode,
        concurrency: cli.concurrency.max(1),
        duration: cli.duration,
        warmup: cli.warmup,
        agents: cli.agents,
        keys_per_call: cli.keys_per_call,
        tokens: cli.tokens,
        kills: cli.kills,
        streams: cli.streams,
        stream_uids: cli.stream_uids,
        children: cli.children,
        child_concurrency: cli.child_concurrency,
        issuer: IssuerOptions {
            binary: match cli.server_bin {
                Some(path) => path,
                None => process::sibling_binary("hallmark-server")?,
            },
            log_level: cli.server_log_level,
        },
        agent_binary: match cli.agent_bin {
            Some(path) => path,
            None => process::sibling_binary("hallmark-agent")?,
        },
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("tokio runtime")?;
    let mut report = runtime.block_on(async {
        let work = async {
            match options.mode {
                Mode::MintX509 | Mode::MintJwt => mint::run_mint(&options).await,
                Mode::Attest => mint::run_attest(&options).await,
                Mode::SyncStreams => sync::run_sync(&options).await,
                Mode::WorkloadFetch => workload::run_workload(&options).await,
            }
        };
        // Dropping `work` on the deadline or Ctrl-C drops the daemons it
        // owns, which kills them, and the temp dirs, which removes them.
        tokio::select! {
            report = work => report,
            () = tokio::time::sleep(cli.timeout) => bail!("the run took longer than --timeout {:?}", cli.timeout),
            _ = tokio::signal::ctrl_c() => bail!("interrupted"),
        }
    })?;
    // Tasks still holding connections end with the runtime.
    runtime.shutdown_timeout(Duration::from_secs(5));
    if let Some(fields) = report.as_object_mut() {
        fields.insert("command".into(), command.into());
    }
    if let Some(path) = &cli.json {
        let mut text = serde_json::to_string_pretty(&report)?;
        text.push('\n');
        std::fs::write(path, text).with_context(|| format!("write {}", path.display()))?;
        eprintln!("results written to {}", path.display());
    }
    Ok(())
}

/// The command line as a reader would retype it: `hallmark-loadgen` and the
/// arguments, without `--json` (where the results went, not what ran);
/// arguments with characters a shell would take apart are single-quoted.
fn command_line(args: impl IntoIterator<Item = String>) -> String {
    let mut words = vec!["hallmark-loadgen".to_owned()];
    let mut args = args.into_iter().skip(1);
    while let Some(arg) = args.next() {
        if arg == "--json" {
            args.next();
            continue;
        }
        if arg.starts_with("--json=") {
            continue;
        }
        let plain = !arg.is_empty()
            && arg
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_./=:,+@%".contains(c));
        words.push(if plain {
            arg
        } else {
            format!("'{}'", arg.replace('\'', r"'\''"))
        });
    }
    words.join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(args: &[&str]) -> String {
        command_line(args.iter().map(|a| a.to_string()))
    }

    #[test]
    fn the_command_leaves_out_where_the_json_went() {
        assert_eq!(
            line(&[
                "target/release/hallmark-loadgen",
                "--mode",
                "mint-x509",
                "--json",
                "out/k1.json",
                "--duration",
                "10s",
                "--json=x.json",
            ]),
            "hallmark-loadgen --mode mint-x509 --duration 10s"
        );
    }

    #[test]
    fn odd_arguments_are_quoted() {
        assert_eq!(
            line(&[
                "lg",
                "--server-log-level",
                "hallmark=debug,warn",
                "a b",
                "it's"
            ]),
            r"hallmark-loadgen --server-log-level hallmark=debug,warn 'a b' 'it'\''s'"
        );
    }
}
