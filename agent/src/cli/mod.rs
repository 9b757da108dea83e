//! `hallmark-agent <command>`.

pub mod api;
pub mod healthcheck;
pub mod run;

use clap::{Parser, Subcommand};

/// `hallmark-agent`: the Hallmark node agent.
#[derive(Debug, Parser)]
#[command(name = "hallmark-agent", version, about)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Top-level commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the agent daemon.
    Run(run::RunArgs),
    /// Check the agent's node identity.
    Healthcheck(healthcheck::HealthcheckArgs),
    /// Use the Workload API as a workload would.
    #[command(subcommand)]
    Api(api::ApiCommand),
}

/// Runs a parsed command.
pub async fn dispatch(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Run(args) => run::run(args).await,
        Command::Healthcheck(args) => healthcheck::run(args),
        Command::Api(cmd) => api::run(cmd).await,
    }
}
