//! `hallmark-agent run`.

use std::path::PathBuf;

use anyhow::Context as _;
use clap::Args;

use crate::Agent;
use crate::config::{AgentConfig, AgentSettings};

/// Flags of `run`; each overrides the config file.
#[derive(Debug, Clone, Args)]
pub struct RunArgs {
    /// The config file (`agent.toml`).
    #[arg(long, short)]
    pub config: PathBuf,
    /// Join token for the first attestation (from `hallmark-server token generate`).
    #[arg(long)]
    pub join_token: Option<String>,
    /// The issuer's node API (`host:port`).
    #[arg(long)]
    pub server_address: Option<String>,
    /// Data directory.
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Serve `/metrics`, `/live` and `/ready` on this `IP:port`.
    #[arg(long)]
    pub metrics_address: Option<String>,
    /// Log format: `text` or `json`.
    #[arg(long)]
    pub log_format: Option<String>,
    /// Log level or `EnvFilter` directive.
    #[arg(long)]
    pub log_level: Option<String>,
}

impl RunArgs {
    /// The log format and level: flags, then the file, then `text`/`info`.
    pub fn logging(&self) -> anyhow::Result<(String, String)> {
        let file = AgentConfig::from_file(&self.config)?;
        Ok((
            self.log_format
                .clone()
                .or(file.log_format)
                .unwrap_or_else(|| "text".into()),
            self.log_level
                .clone()
                .or(file.log_level)
                .unwrap_or_else(|| "info".into()),
        ))
    }
}

/// Runs the agent until SIGINT or SIGTERM.
pub async fn run(args: RunArgs) -> anyhow::Result<()> {
    let mut file = AgentConfig::from_file(&args.config)?;
    if args.server_address.is_some() {
        file.server_address = args.server_address.clone();
    }
    if args.data_dir.is_some() {
        file.data_dir = args.data_dir.clone();
    }
    if args.join_token.is_some() {
        file.join_token = args.join_token.clone();
    }
    if let Some(address) = &args.metrics_address {
        file.metrics = Some(crate::config::MetricsSection {
            address: Some(address.clone()),
        });
    }
    let settings = AgentSettings::resolve(file)?;
    let agent = Agent::start(settings)
        .await
        .context("cannot start hallmark-agent")?;
    if let Some(id) = agent.spiffe_id() {
        tracing::info!(spiffe_id = %id, "hallmark-agent is up");
    }
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).context("cannot install SIGTERM handler")?;
    tokio::select! {
        _ = term.recv() => {}
        result = tokio::signal::ctrl_c() => result.context("cannot install SIGINT handler")?,
    }
    tracing::info!("shutting down");
    agent.shutdown().await;
    Ok(())
}
