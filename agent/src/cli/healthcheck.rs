//! `hallmark-agent healthcheck`: is there a valid node identity?

use std::path::PathBuf;

use anyhow::Context as _;
use clap::Args;

use crate::config::AgentSettings;
use crate::persist::DataDir;

/// Flags of `healthcheck`.
#[derive(Debug, Clone, Args)]
pub struct HealthcheckArgs {
    /// The agent's config file.
    #[arg(long, short)]
    pub config: PathBuf,
    /// Print nothing; the exit code tells.
    #[arg(long)]
    pub quiet: bool,
}

/// Exits non-zero unless the data directory holds an unexpired node SVID.
pub fn run(args: HealthcheckArgs) -> anyhow::Result<()> {
    let settings = AgentSettings::from_file(&args.config)?;
    let data = DataDir::open(&settings.data_dir)?;
    let svid = data
        .load_svid()?
        .context("the agent holds no node SVID: it has not attested, or the issuer refused it")?;
    let now = settings.clock.now();
    anyhow::ensure!(
        now < svid.not_after,
        "the node SVID of {} expired at {}",
        svid.spiffe_id,
        humantime::format_rfc3339_seconds(svid.not_after)
    );
    if !args.quiet {
        println!(
            "Agent is healthy: {} (node SVID {} valid until {})",
            svid.spiffe_id,
            svid.serial,
            humantime::format_rfc3339_seconds(svid.not_after)
        );
    }
    Ok(())
}
