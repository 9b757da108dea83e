//! `hallmark-server`: parse the command line, install logging, dispatch.

use std::io::IsTerminal as _;
use std::process::ExitCode;

use clap::Parser;
use hallmark_server::cli::{Cli, Command, dispatch, output};
use tracing_subscriber::EnvFilter;

/// jemalloc instead of glibc malloc, configured at build time
/// (`JEMALLOC_SYS_WITH_MALLOC_CONF` in `.cargo/config.toml`) to give freed
/// pages back to the kernel at once (`dirty_decay_ms:0,muzzy_decay_ms:0`).
/// With thousands of agents connected most of each connection's HTTP/2
/// write and read buffers (16 and 8 KiB in h2) is never written; glibc
/// carves them out of memory the TLS handshakes and attestations already
/// dirtied, so all of it is resident, while jemalloc serves them from
/// pages it has returned, so only what is written is. 10,000 agents with
/// their Sync streams: 377 instead of 411 MiB (see the commit message).
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let (format, level) = match &cli.command {
        Command::Run(args) => match args.logging() {
            Ok(logging) => logging,
            Err(error) => {
                eprintln!("error: {error:#}");
                return ExitCode::FAILURE;
            }
        },
        _ => ("text".to_owned(), "warn".to_owned()),
    };
    if let Err(error) = install_tracing(&format, &level) {
        eprintln!("error: {error:#}");
        return ExitCode::FAILURE;
    }
    match dispatch(cli).await {
        Ok(()) => ExitCode::SUCCESS,
        // `... | head -1`: the reader had what it wanted.
        Err(error) if output::is_closed(&error) => ExitCode::SUCCESS,
        Err(error) => {
            if format == "json" {
                // One JSON object per line on stderr, like every other log
                // line of a JSON-logging issuer.
                tracing::error!(error = %format!("{error:#}"), "hallmark-server failed");
            } else {
                eprintln!("error: {error:#}");
            }
            match error.downcast_ref::<hallmark_server::cli::Exit>() {
                Some(exit) => ExitCode::from(exit.code),
                None => ExitCode::FAILURE,
            }
        }
    }
}

fn install_tracing(format: &str, level: &str) -> anyhow::Result<()> {
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(level))
        .map_err(|e| anyhow::anyhow!("log_level {level:?} is not a valid filter: {e}"))?;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    match format {
        "text" => builder.init(),
        "json" => builder.json().init(),
        other => anyhow::bail!("log_format {other:?} is not supported: use \"text\" or \"json\""),
    }
    Ok(())
}
