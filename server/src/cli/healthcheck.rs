//! `hallmark-server healthcheck`.

use clap::Args;
use hallmark_proto::admin::HealthcheckRequest;

use super::{AdminArgs, Output, print_json, rpc_error, timestamp};
use crate::cli::output::outln;

/// Flags of `healthcheck`.
#[derive(Debug, Args)]
pub struct HealthcheckArgs {
    /// Print nothing; the exit code tells.
    #[arg(long)]
    pub quiet: bool,
    /// Output format.
    #[arg(long, value_enum, default_value_t)]
    pub output: Output,
    /// How to reach the issuer.
    #[command(flatten)]
    pub admin: AdminArgs,
}

/// Runs `healthcheck`: exits non-zero when the issuer does not answer.
pub async fn run(args: HealthcheckArgs) -> anyhow::Result<()> {
    let mut client = args.admin.client().await?;
    let health = client
        .healthcheck(HealthcheckRequest {})
        .await
        .map_err(|s| rpc_error("healthcheck", s))?
        .into_inner();
    if args.quiet {
        return Ok(());
    }
    match args.output {
        Output::Json => print_json(&serde_json::json!({
            "healthy": true,
            "trust_domain": health.trust_domain,
            "version": health.version,
            "agents": health.agents,
            "ca_expires_at": health.ca_expires_at,
        })),
        Output::Text => {
            outln!(
                "Server is healthy: trust domain {}, {} agents, CA valid until {}",
                health.trust_domain,
                health.agents,
                timestamp(health.ca_expires_at)
            )?;
            Ok(())
        }
    }
}
