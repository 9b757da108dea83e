//! `hallmark-server run`: the daemon.

use std::path::PathBuf;

use anyhow::Context as _;
use clap::Args;

use crate::config::{ServerConfig, ServerOverrides, ServerSettings};

/// Flags of `run`; each overrides the config file.
#[derive(Debug, Clone, Args)]
pub struct RunArgs {
    /// The config file (`server.toml`).
    #[arg(long, short)]
    pub config: Option<PathBuf>,
    /// Trust domain, e.g. `example.org`.
    #[arg(long)]
    pub trust_domain: Option<String>,
    /// Data directory of the embedded store.
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Node API listen address (`IP:port`).
    #[arg(long)]
    pub bind_address: Option<String>,
    /// Admin socket path.
    #[arg(long)]
    pub admin_socket: Option<PathBuf>,
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
    /// Reads the config file (or an empty config without `--config`).
    pub fn file(&self) -> anyhow::Result<ServerConfig> {
        match &self.config {
            Some(path) => Ok(ServerConfig::from_file(path)?),
            None => Ok(ServerConfig::default()),
        }
    }

    /// The log format and level: flags, then the file, then `text`/`info`.
    pub fn logging(&self) -> anyhow::Result<(String, String)> {
        let file = self.file()?;
        let format = self
            .log_format
            .clone()
            .or(file.log_format)
            .unwrap_or_else(|| "text".into());
        let level = self
            .log_level
            .clone()
            .or(file.log_level)
            .unwrap_or_else(|| "info".into());
        Ok((format, level))
    }
}

/// Runs the issuer until SIGINT or SIGTERM.
pub async fn run(args: RunArgs) -> anyhow::Result<()> {
    let file = args.file()?;
    let overrides = ServerOverrides {
        trust_domain: args.trust_domain.clone(),
        data_dir: args.data_dir.clone(),
        bind_address: args.bind_address.clone(),
        admin_socket: args.admin_socket.clone(),
        metrics_address: args.metrics_address.clone(),
    };
    let settings = ServerSettings::resolve(file, overrides.clone())?;
    let server = crate::server::start(settings)
        .await
        .context("cannot start hallmark-server")?;
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).context("cannot install SIGTERM handler")?;
    let mut hup = signal(SignalKind::hangup()).context("cannot install SIGHUP handler")?;
    loop {
        tokio::select! {
            _ = term.recv() => break,
            result = tokio::signal::ctrl_c() => {
                result.context("cannot install SIGINT handler")?;
                break;
            }
            _ = hup.recv() => reload(&server, &args, &overrides).await,
        }
    }
    tracing::info!("shutting down");
    server.shutdown().await;
    Ok(())
}

/// `SIGHUP`: re-reads the config file and applies what can change while
/// running. A config that does not load is logged and changes nothing.
async fn reload(server: &crate::server::ServerHandle, args: &RunArgs, overrides: &ServerOverrides) {
    let settings = args
        .file()
        .and_then(|file| Ok(ServerSettings::resolve(file, overrides.clone())?));
    let settings = match settings {
        Ok(settings) => settings,
        Err(error) => {
            tracing::error!(error = %format!("{error:#}"), "SIGHUP: the config does not load; nothing changed");
            return;
        }
    };
    match server.reload(&settings).await {
        Ok(ignored) if ignored.is_empty() => {
            tracing::info!("SIGHUP: reloaded the trusted signers and signature policy");
        }
        Ok(ignored) => tracing::warn!(
            needs_restart = ?ignored,
            "SIGHUP: reloaded the trusted signers and signature policy; these changed settings need a restart"
        ),
        Err(error) => tracing::error!(%error, "SIGHUP: reload failed"),
    }
}
