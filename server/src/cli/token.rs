//! `hallmark-server token generate`.

use std::time::Duration;

use clap::{Args, Subcommand};
use hallmark_proto::admin::GenerateJoinTokenRequest;

use super::{AdminArgs, Output, print_json, rpc_error, timestamp};
use crate::cli::output::outln;

/// `token` verbs.
#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Create a single-use join token for a node agent.
    Generate(GenerateArgs),
}

/// Flags of `token generate`.
#[derive(Debug, Args)]
pub struct GenerateArgs {
    /// How long the token stays valid, e.g. `10m`, `1h` (default: the server's `agents.join_token_ttl`).
    #[arg(long, value_parser = humantime::parse_duration)]
    pub ttl: Option<Duration>,
    /// SPIFFE ID for the agent, under `spiffe://<td>/hallmark/agent/`.
    #[arg(long)]
    pub spiffe_id: Option<String>,
    /// Output format.
    #[arg(long, value_enum, default_value_t)]
    pub output: Output,
    /// How to reach the issuer.
    #[command(flatten)]
    pub admin: AdminArgs,
}

/// Runs a `token` command.
pub async fn run(cmd: TokenCommand) -> anyhow::Result<()> {
    let TokenCommand::Generate(args) = cmd;
    let mut client = args.admin.client().await?;
    let ttl_seconds = match args.ttl {
        Some(ttl) if ttl.as_secs() == 0 => anyhow::bail!("--ttl must be at least one second"),
        Some(ttl) => ttl.as_secs(),
        None => 0,
    };
    let response = client
        .generate_join_token(GenerateJoinTokenRequest {
            ttl_seconds,
            spiffe_id: args.spiffe_id.unwrap_or_default(),
        })
        .await
        .map_err(|s| rpc_error("token generate", s))?
        .into_inner();
    match args.output {
        Output::Json => print_json(&serde_json::json!({
            "token": response.token,
            "spiffe_id": response.spiffe_id,
            "expires_at": response.expires_at,
        })),
        Output::Text => {
            outln!("Token: {}", response.token)?;
            outln!("SPIFFE ID: {}", response.spiffe_id)?;
            outln!("Expires: {}", timestamp(response.expires_at))?;
            Ok(())
        }
    }
}
