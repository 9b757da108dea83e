//! `hallmark`: the quickstart. Runs a complete Hallmark deployment in a temp
//! dir on loopback with the embedded store, shows each step, and cleans up.
//! `hallmark quickstart-workload` (hidden) is the demo workload the
//! quickstart runs as a separate process.

mod quickstart;

use std::io::IsTerminal as _;
use std::path::PathBuf;
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
    /// Run a whole deployment on loopback in a temp dir: an issuer, a node
    /// agent, a signed gold image, a workload fetching its identity, a
    /// relying party checking it, the kill switch, `audit verify`; then
    /// shut everything down and clean up.
    Quickstart {
        /// Show the daemons' logs too.
        #[arg(long)]
        verbose: bool,
    },
    /// The quickstart's demo workload: fetches its identity from the agent
    /// at `SPIFFE_ENDPOINT_SOCKET` and holds it until it is withdrawn.
    #[command(hide = true)]
    QuickstartWorkload {
        /// Where to write a JWT-SVID for the relying party (0600).
        #[arg(long)]
        jwt_out: PathBuf,
    },
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Quickstart { verbose } => {
            // Without --verbose, only problems: the kill switch's own
            // warnings and audit lines are what the quickstart shows anyway.
            let level = if verbose {
                "info"
            } else {
                "warn,hallmark::audit=error,hallmark_server::revocation=error"
            };
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
        Command::QuickstartWorkload { jwt_out } => {
            let endpoint = std::env::var("SPIFFE_ENDPOINT_SOCKET")
                .map_err(|_| "SPIFFE_ENDPOINT_SOCKET is not set".to_owned())
                .and_then(|address| {
                    hallmark::workload::Endpoint::parse(&address).map_err(|e| e.to_string())
                });
            let result = match endpoint {
                Ok(endpoint) => quickstart::workload::run(&endpoint, &jwt_out).await,
                Err(error) => Err(anyhow::anyhow!(error)),
            };
            match result {
                Ok(()) => ExitCode::SUCCESS,
                Err(error) => {
                    eprintln!("demo workload failed: {error:#}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}
