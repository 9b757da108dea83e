//! `hallmark-agent <command>`.

pub mod api;
pub mod healthcheck;
pub mod output;
pub mod run;

use clap::{Parser, Subcommand};

/// `hallmark-agent`: the Hallmark node agent.
#[derive(Debug, Parser)]
#[command(
    name = "hallmark-agent",
    version = concat!(env!("CARGO_PKG_VERSION"), " (commit ", env!("HALLMARK_GIT_COMMIT"), ")"),
    about
)]
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

/// An error and its causes on one line, for the terminal. Our error types
/// put their source's text in their own message (so `%error` in logs is
/// complete) and also chain it as `source()`: a cause whose text is already
/// shown is skipped instead of printed twice.
pub fn report(error: &anyhow::Error) -> String {
    let mut out = String::new();
    for cause in error.chain() {
        let text = cause.to_string();
        if out.contains(&text) {
            continue;
        }
        if !out.is_empty() {
            out.push_str(": ");
        }
        out.push_str(&text);
    }
    out
}

/// Runs a parsed command.
pub async fn dispatch(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Run(args) => run::run(args).await,
        Command::Healthcheck(args) => healthcheck::run(args).await,
        Command::Api(cmd) => api::run(cmd).await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn report_prints_each_cause_once() {
        let io = std::io::Error::other("disk on fire");
        let error = anyhow::Error::new(crate::AgentError::io("/data/key".as_ref(), io))
            .context("cannot start hallmark-agent");
        assert_eq!(
            report(&error),
            "cannot start hallmark-agent: /data/key: disk on fire"
        );
    }
}
