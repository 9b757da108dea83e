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
    /// A shell completion script on stdout (`completions bash >
    /// /etc/bash_completion.d/hallmark-agent`).
    Completions(DocsArgs),
    /// Man pages for every command, written into a directory.
    Man(ManArgs),
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
        Command::Completions(args) => completions(&args),
        Command::Man(args) => man(&args),
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

/// `completions SHELL`.
#[derive(Debug, clap::Args)]
pub struct DocsArgs {
    /// The shell.
    #[arg(value_enum)]
    pub shell: clap_complete::Shell,
}

/// `man --out DIR`.
#[derive(Debug, clap::Args)]
pub struct ManArgs {
    /// Where to write the pages (created if missing).
    #[arg(long, value_name = "DIR")]
    pub out: std::path::PathBuf,
}

/// Writes the completion script for `shell` to stdout.
fn completions(args: &DocsArgs) -> anyhow::Result<()> {
    use clap::CommandFactory as _;
    use std::io::Write as _;
    let mut script = Vec::new();
    clap_complete::generate(
        args.shell,
        &mut Cli::command(),
        "hallmark-agent",
        &mut script,
    );
    std::io::stdout()
        .lock()
        .write_all(&script)
        .map_err(output::stdout_error)
}

/// Writes one man page per command and subcommand into `args.out`.
fn man(args: &ManArgs) -> anyhow::Result<()> {
    use anyhow::Context as _;
    use clap::CommandFactory as _;
    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("cannot create {}", args.out.display()))?;
    clap_mangen::generate_to(Cli::command(), &args.out)
        .with_context(|| format!("cannot write man pages into {}", args.out.display()))?;
    let mut pages: Vec<_> = std::fs::read_dir(&args.out)
        .with_context(|| format!("cannot list {}", args.out.display()))?
        .filter_map(|e| e.ok().map(|e| e.file_name().to_string_lossy().into_owned()))
        .filter(|name| name.starts_with("hallmark-agent") && name.ends_with(".1"))
        .collect();
    pages.sort();
    output::write(format_args!(
        "wrote {} man pages into {}\n",
        pages.len(),
        args.out.display()
    ))
}
