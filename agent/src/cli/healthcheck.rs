//! `hallmark-agent healthcheck`: is the agent running and answering on its
//! Workload API socket, with a valid node identity? (`--shallow`: only the
//! node identity on disk.)

use std::path::PathBuf;
use std::time::SystemTime;

use anyhow::Context as _;
use clap::Args;

use crate::cli::api::Output;
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
    /// Only check the node SVID on disk; do not dial the running agent.
    #[arg(long)]
    pub shallow: bool,
    /// The Workload API socket to dial (default: the config's
    /// `socket_path`, else the default socket).
    #[arg(long)]
    pub socket: Option<PathBuf>,
    /// Output format (`json`: one object, `healthy` true or false, also
    /// when unhealthy; the exit code is the same).
    #[arg(long, value_enum, default_value_t)]
    pub output: Output,
}

/// What a healthy agent showed.
struct Healthy {
    spiffe_id: String,
    serial: String,
    not_after: SystemTime,
    /// The socket dialled (`None` with `--shallow`).
    socket: Option<PathBuf>,
}

/// How long the running agent has to answer.
const DIAL_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// Exits non-zero unless the data directory holds an unexpired node SVID
/// (of the configured trust domain, when a config is given) and, unless
/// `--shallow`, the agent answers a Workload API call on its socket.
pub async fn run(args: HealthcheckArgs) -> anyhow::Result<()> {
    let result = check(&args).await;
    if args.quiet {
        return result.map(drop);
    }
    match (args.output, &result) {
        (Output::Text, Ok(healthy)) => outln!(
            "Agent is healthy: {} (node SVID {} valid until {})",
            healthy.spiffe_id,
            healthy.serial,
            humantime::format_rfc3339_seconds(healthy.not_after)
        )?,
        (Output::Text, Err(_)) => {}
        (Output::Json, Ok(healthy)) => outln!(
            "{}",
            serde_json::json!({
                "healthy": true,
                "spiffe_id": healthy.spiffe_id,
                "serial": healthy.serial,
                "not_after": humantime::format_rfc3339_seconds(healthy.not_after).to_string(),
                "socket": healthy.socket.as_ref().map(|s| s.display().to_string()),
            })
        )?,
        (Output::Json, Err(error)) => outln!(
            "{}",
            serde_json::json!({ "healthy": false, "error": crate::cli::report(error) })
        )?,
    }
    result.map(drop)
}

async fn check(args: &HealthcheckArgs) -> anyhow::Result<Healthy> {
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
    let socket = if args.shallow {
        None
    } else {
        let socket = match (&args.socket, &settings) {
            (Some(socket), _) => socket.clone(),
            (None, Some(settings)) => settings.socket_path.clone(),
            (None, None) => PathBuf::from(crate::config::DEFAULT_SOCKET_PATH),
        };
        dial(&socket).await?;
        Some(socket)
    };
    Ok(Healthy {
        spiffe_id: svid.spiffe_id.to_string(),
        serial: svid.serial.to_string(),
        not_after: svid.not_after,
        socket,
    })
}

/// Asks the running agent for its JWT bundles. Any gRPC answer, a refusal
/// of this caller included, proves an agent serves the socket; no answer
/// (nothing listening, a stale socket file, a hung agent) is unhealthy.
async fn dial(socket: &std::path::Path) -> anyhow::Result<()> {
    use hallmark_proto::workload::JwtBundlesRequest;
    let call = async {
        let mut client = crate::cli::api::connect(socket).await?;
        match client
            .fetch_jwt_bundles(crate::cli::api::request(JwtBundlesRequest {}))
            .await
        {
            Ok(mut stream) => match stream.get_mut().message().await {
                Ok(_) => Ok(()),
                Err(status) => answered(status),
            },
            Err(status) => answered(status),
        }
    };
    tokio::time::timeout(DIAL_TIMEOUT, call)
        .await
        .map_err(|_| {
            anyhow::anyhow!(
                "the agent did not answer on {} within {DIAL_TIMEOUT:?}",
                socket.display()
            )
        })?
        .with_context(|| {
            format!(
                "the agent is not running or not serving the Workload API at {} (--shallow checks only the node SVID on disk)",
                socket.display()
            )
        })
}

fn answered(status: tonic::Status) -> anyhow::Result<()> {
    match status.code() {
        tonic::Code::Unavailable | tonic::Code::Unknown | tonic::Code::Internal => Err(
            anyhow::anyhow!("{} ({:?})", status.message(), status.code()),
        ),
        _ => Ok(()),
    }
}
