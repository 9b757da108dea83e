//! `hallmark`: the quickstart. Runs a complete Hallmark deployment in a temp
//! dir on loopback with the embedded store, shows each step, and cleans up.

mod quickstart;

use std::io::IsTerminal as _;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Hallmark: short-lived SPIFFE identities bound to code and model.
#[derive(Debug, Parser)]
#[command(name = "hallmark", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Start an issuer and a node agent on loopback in a temp dir, attest the
    /// node, show the result, and shut everything down.
    Quickstart {
        /// Show the daemons' logs too.
        #[arg(long)]
        verbose: bool,
    },
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Quickstart { verbose } => {
            let level = if verbose { "info" } else { "warn" };
            tracing_subscriber::fmt()
                .with_env_filter(
                    tracing_subscriber::EnvFilter::try_from_default_env()
                        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(level)),
                )
                .with_ansi(std::io::stderr().is_terminal())
                .with_writer(std::io::stderr)
                .init();
            match quickstart::run().await {
                Ok(()) => ExitCode::SUCCESS,
                Err(error) => {
                    eprintln!("quickstart failed: {error:#}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}
