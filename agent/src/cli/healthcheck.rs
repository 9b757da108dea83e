//! `hallmark-agent healthcheck`: is there a valid node identity?

use std::path::PathBuf;
use std::time::SystemTime;

use anyhow::Context as _;
use clap::Args;

use crate::cli::output::outln;
use crate::config::AgentSettings;
use crate::persist::DataDir;

/// Flags of `healthcheck`: the data directory comes from `--data-dir` or
/// from the config file.
#[derive(Debug, Clone, Args)]
#[command(group(clap::ArgGroup::new("source").required(true).multiple(true).args(["config", "data_dir"])))]
pub struct HealthcheckArgs {
    /// The agent's config file.
    #[arg(long, short)]
    pub config: Option<PathBuf>,
    /// The agent's data directory (overrides the config's `data_dir`).
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Print nothing; the exit code tells.
    #[arg(long)]
    pub quiet: bool,
}

/// Exits non-zero unless the data directory holds an unexpired node SVID
/// (of the configured trust domain, when a config is given).
pub fn run(args: HealthcheckArgs) -> anyhow::Result<()> {
    let settings = args
        .config
        .as_deref()
        .map(AgentSettings::from_file)
        .transpose()?;
    let data_dir = match (&args.data_dir, &settings) {
        (Some(dir), _) => dir.clone(),
        (None, Some(settings)) => settings.data_dir.clone(),
        (None, None) => anyhow::bail!("pass --config or --data-dir"),
    };
    // Read-only: a health check must not create or chmod the data directory.
    let data = DataDir::existing(&data_dir)?;
    let svid = data
        .load_svid()?
        .context("the agent holds no node SVID: it has not attested, or the issuer refused it")?;
    let now = settings
        .as_ref()
        .map_or_else(SystemTime::now, |s| s.clock.now());
    anyhow::ensure!(
        now < svid.not_after,
        "the node SVID of {} expired at {}",
        svid.spiffe_id,
        humantime::format_rfc3339_seconds(svid.not_after)
    );
    if let Some(settings) = &settings {
        anyhow::ensure!(
            svid.usable_at(&settings.trust_domain, now),
            "the node SVID is for {}, not trust domain {}",
            svid.spiffe_id,
            settings.trust_domain
        );
    }
    if !args.quiet {
        outln!(
            "Agent is healthy: {} (node SVID {} valid until {})",
            svid.spiffe_id,
            svid.serial,
            humantime::format_rfc3339_seconds(svid.not_after)
        )?;
    }
    Ok(())
}
