//! The operator CLI: `hallmark-server <noun> <verb>`, following SPIRE's habits.
//!
//! `run` starts the daemon; every other command talks to a running issuer
//! over its admin socket, found from `--socket`, else the `admin_socket` of
//! `--config`, else the built-in default.

pub mod agent;
pub mod audit;
pub mod bundle;
pub mod config;
pub mod healthcheck;
pub mod image;
pub mod image_admin;
pub mod kill;
pub mod output;
pub mod run;
pub mod token;

use std::path::PathBuf;

use anyhow::Context as _;
use clap::{Args, Parser, Subcommand, ValueEnum};

use hallmark_proto::admin::admin_client::AdminClient;
use tonic::transport::Channel;

use crate::cli::output::outln;
use crate::config::{DEFAULT_ADMIN_SOCKET, ServerConfig};

/// `hallmark-server`: the Hallmark issuer and its operator CLI.
#[derive(Debug, Parser)]
#[command(
    name = "hallmark-server",
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
    /// Run the issuer daemon.
    Run(run::RunArgs),
    /// Join tokens for node attestation.
    #[command(subcommand)]
    Token(token::TokenCommand),
    /// Attested node agents.
    #[command(subcommand)]
    Agent(agent::AgentCommand),
    /// The trust bundle.
    #[command(subcommand)]
    Bundle(bundle::BundleCommand),
    /// Check that the issuer is up and answering on its admin socket.
    Healthcheck(healthcheck::HealthcheckArgs),
    /// Signed gold images: keys, digests, signing and verification.
    #[command(subcommand)]
    Image(image::ImageCommand),
    /// The kill switch: revoke a SPIFFE ID, image, binary, model or agent
    /// everywhere at once (`kill list`, `kill lift ID` to undo).
    Kill(kill::KillCommand),
    /// The tamper-evident audit log: tail, export, verify, key, checkpoint.
    #[command(subcommand)]
    Audit(audit::AuditCommand),
    /// The issuer's config file: `config check FILE` validates it.
    #[command(subcommand)]
    Config(config::ConfigCommand),
    /// A shell completion script on stdout (`completions bash >
    /// /etc/bash_completion.d/hallmark-server`).
    Completions(DocsArgs),
    /// Man pages for every command, written into a directory.
    Man(ManArgs),
}

/// A command failed in a way its exit status tells apart (for example
/// `audit verify`: 2 tampered, 3 unverifiable tail); `main` exits with
/// `code` after printing `message`.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct Exit {
    /// The process exit status.
    pub code: u8,
    /// What to print on stderr.
    pub message: String,
}

/// Output format for commands that print records.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, ValueEnum)]
pub enum Output {
    /// Human-readable text.
    #[default]
    Text,
    /// JSON, for scripts.
    Json,
}

/// How to reach the admin socket.
#[derive(Debug, Clone, Args)]
pub struct AdminArgs {
    /// Path of the issuer's admin socket.
    #[arg(long, env = "HALLMARK_ADMIN_SOCKET")]
    pub socket: Option<PathBuf>,
    /// Server config file to read `admin_socket` from.
    #[arg(long, short)]
    pub config: Option<PathBuf>,
}

impl AdminArgs {
    /// The socket path: `--socket`, else the config's, else the default.
    pub fn socket_path(&self) -> anyhow::Result<PathBuf> {
        if let Some(socket) = &self.socket {
            return Ok(socket.clone());
        }
        if let Some(config) = &self.config {
            let file = ServerConfig::from_file(config)?;
            if let Some(socket) = file.admin_socket {
                return Ok(socket);
            }
        }
        Ok(PathBuf::from(DEFAULT_ADMIN_SOCKET))
    }

    /// Connects to the admin API.
    pub async fn client(&self) -> anyhow::Result<AdminClient<Channel>> {
        let path = self.socket_path()?;
        let channel = crate::admin::socket::connect(&path).await?;
        Ok(AdminClient::new(channel))
    }
}

/// Runs a parsed command.
pub async fn dispatch(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Run(args) => run::run(args).await,
        Command::Token(cmd) => token::run(cmd).await,
        Command::Agent(cmd) => agent::run(cmd).await,
        Command::Bundle(cmd) => bundle::run(cmd).await,
        Command::Healthcheck(args) => healthcheck::run(args).await,
        Command::Image(cmd) => image::run(cmd).await,
        Command::Kill(cmd) => kill::run(cmd).await,
        Command::Audit(cmd) => audit::run(cmd).await,
        Command::Config(cmd) => config::run(cmd),
        Command::Completions(args) => completions(&args),
        Command::Man(args) => man(&args),
    }
}

/// Turns a gRPC error into a CLI error that says what the issuer said.
pub(crate) fn rpc_error(what: &str, status: tonic::Status) -> anyhow::Error {
    anyhow::anyhow!("{what} failed: {} ({:?})", status.message(), status.code())
}

/// Formats a Unix timestamp for humans (RFC 3339, UTC).
pub(crate) fn timestamp(secs: i64) -> String {
    match u64::try_from(secs) {
        Ok(s) if s > 0 => humantime::format_rfc3339_seconds(
            std::time::UNIX_EPOCH + std::time::Duration::from_secs(s),
        )
        .to_string(),
        _ => "-".to_owned(),
    }
}

/// Prints a value as pretty JSON.
pub(crate) fn print_json(value: &serde_json::Value) -> anyhow::Result<()> {
    outln!(
        "{}",
        serde_json::to_string_pretty(value).context("cannot encode JSON")?
    )?;
    Ok(())
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
        "hallmark-server",
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
        .filter(|name| name.starts_with("hallmark-server") && name.ends_with(".1"))
        .collect();
    pages.sort();
    output::write(format_args!(
        "wrote {} man pages into {}\n",
        pages.len(),
        args.out.display()
    ))
}
