//! `hallmark-agent`: parse the command line, install logging, dispatch.

use std::io::IsTerminal as _;
use std::process::ExitCode;

use clap::Parser;
use hallmark_agent::cli::{Cli, Command, dispatch, output, report};
use tracing_subscriber::EnvFilter;

/// jemalloc, built (`JEMALLOC_SYS_WITH_MALLOC_CONF` in `.cargo/config.toml`)
/// to give freed pages back to the kernel at once, as the issuer's: what a
/// burst of connections and streams used is returned when they close
/// (glibc kept it in its per-thread arenas; see BENCHMARKS.md).
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let (format, level) = match &cli.command {
        Command::Run(args) => match args.logging() {
            Ok(logging) => logging,
            Err(error) => {
                eprintln!("error: {}", report(&error));
                return ExitCode::FAILURE;
            }
        },
        _ => ("text".to_owned(), "warn".to_owned()),
    };
    let filter = match EnvFilter::try_from_default_env().or_else(|_| EnvFilter::try_new(&level)) {
        Ok(filter) => filter,
        Err(error) => {
            eprintln!("error: log_level {level:?} is not a valid filter: {error}");
            return ExitCode::FAILURE;
        }
    };
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    match format.as_str() {
        "text" => builder.init(),
        "json" => builder.json().init(),
        other => {
            eprintln!("error: log_format {other:?} is not supported: use \"text\" or \"json\"");
            return ExitCode::FAILURE;
        }
    }
    match dispatch(cli).await {
        Ok(()) => ExitCode::SUCCESS,
        // `... | head -1`: the reader had what it wanted.
        Err(error) if output::is_closed(&error) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {}", report(&error));
            ExitCode::FAILURE
        }
    }
}
