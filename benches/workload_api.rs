//! End-to-end latency of the SPIFFE Workload API: a real issuer and a real
//! agent in this process (node API over mutual TLS on loopback, the Workload
//! API on a Unix socket), the agent measuring callers with its default
//! `/proc` attestor, and raw tonic clients.
//!
//! - `cached`: this process fetches `FetchX509SVID` N times in a row on one
//!   connection; its SVID is cached, so each call is attestation (every
//!   file digest cached) plus a cache lookup. Time from sending the request
//!   to the first stream message. `FetchX509Bundles` is timed the same way
//!   on the same connection: the stream without attestation.
//! - `first`: child processes (this binary re-executed in child mode), one
//!   after another, each a new pid the agent has never seen but running a
//!   binary whose hash the agent has cached. Each child connects, then
//!   times its own request to its first SVID (attestation, a fresh key
//!   pair, `MintX509Svids` on the issuer, the audit record) and prints it.
//!
//! `cargo bench --bench workload_api -- [--requests N] [--children N] [--json PATH]`
//! (defaults 2,000 and 200). Without `--bench` (as `cargo test` runs a
//! bench target) it does a short smoke run; `--list` (test discovery)
//! lists nothing. Every request has a timeout and the whole run a deadline,
//! so it always ends by itself.

// A bench crate has no public API to document.
#![allow(missing_docs)]

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, bail, ensure};
use hyper_util::rt::TokioIo;
use serde_json::json;
use sha2::{Digest, Sha256};
use tonic::transport::{Channel, Endpoint};

use hallmark_agent::Agent;
use hallmark_agent::config::AgentSettings;
use hallmark_attestors::tree::{TreeLimits, digest_tree};
use hallmark_ca::clock::SystemClock;
use hallmark_ca::id::TrustDomain;
use hallmark_proto::admin::admin_client::AdminClient;
use hallmark_proto::admin::{GenerateJoinTokenRequest, RegisterImageRequest};
use hallmark_proto::workload::spiffe_workload_api_client::SpiffeWorkloadApiClient;
use hallmark_proto::workload::{X509BundlesRequest, X509svidRequest};
use hallmark_server::config::ServerSettings;
use hallmark_server::image::{
    Algorithm, Envelope, GoldImage, SigningKey, TrustedSigners, canonical,
};

/// Set (to the Workload API socket path) in a child process.
const CHILD_ENV: &str = "HALLMARK_BENCH_WORKLOAD_CHILD";
/// Longest wait for any one request or child.
const STEP_TIMEOUT: Duration = Duration::from_secs(10);
/// The whole measurement stops here, with what it has.
const DEADLINE: Duration = Duration::from_secs(90);
const SPIFFE_ID: &str = "spiffe://example.org/bench/workload";

struct Options {
    requests: usize,
    children: usize,
    json: Option<PathBuf>,
}

fn main() -> ExitCode {
    if let Ok(socket) = std::env::var(CHILD_ENV) {
        return report(child(Path::new(&socket)));
    }
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.iter().any(|a| a == "--list") {
        // Test discovery (cargo test / nextest): this target holds no tests.
        return ExitCode::SUCCESS;
    }
    report(parse(&args).and_then(|options| {
        tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .context("tokio runtime")?
            .block_on(run(options))
    }))
}

fn report(result: anyhow::Result<()>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("workload_api bench: {error:#}");
            ExitCode::FAILURE
        }
    }
}

fn parse(args: &[String]) -> anyhow::Result<Options> {
    let bench = args.iter().any(|a| a == "--bench");
    let mut options = if bench {
        Options {
            requests: 2_000,
            children: 200,
            json: None,
        }
    } else {
        // A smoke run, as for criterion benches under `cargo test`.
        Options {
            requests: 20,
            children: 3,
            json: None,
        }
    };
    let mut args = args.iter();
    while let Some(arg) = args.next() {
        let mut value = |name: &str| {
            args.next()
                .with_context(|| format!("{name} needs a value"))
                .cloned()
        };
        match arg.as_str() {
            "--requests" => options.requests = value(arg)?.parse().context("--requests")?,
            "--children" => options.children = value(arg)?.parse().context("--children")?,
            "--json" => options.json = Some(PathBuf::from(value(arg)?)),
            // cargo passes --bench; criterion-style filters are ignored.
            _ => {}
        }
    }
    Ok(options)
}

/// Child mode: one request to the agent at `socket`, its latency printed in
/// nanoseconds on stdout.
fn child(socket: &Path) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("tokio runtime")?;
    let elapsed = runtime.block_on(async {
        let mut client = raw_client(socket).await?;
        tokio::time::timeout(STEP_TIMEOUT, fetch_x509(&mut client))
            .await
            .context("no SVID in time")?
    })?;
    println!("{}", elapsed.as_nanos());
    Ok(())
}

async fn raw_client(socket: &Path) -> anyhow::Result<SpiffeWorkloadApiClient<Channel>> {
    let socket = socket.to_owned();
    let channel = Endpoint::from_static("http://workload.invalid")
        .connect_with_connector(tower::service_fn(move |_| {
            let socket = socket.clone();
            async move {
                Ok::<_, std::io::Error>(TokioIo::new(
                    tokio::net::UnixStream::connect(socket).await?,
                ))
            }
        }))
        .await
        .context("connect to the Workload API socket")?;
    Ok(SpiffeWorkloadApiClient::new(channel))
}

fn with_header<T>(message: T) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request.metadata_mut().insert(
        hallmark_proto::WORKLOAD_API_HEADER,
        tonic::metadata::MetadataValue::from_static("true"),
    );
    request
}

/// One `FetchX509SVID`: the time from sending the request to the first
/// stream message, which must hold the expected SVID.
async fn fetch_x509(client: &mut SpiffeWorkloadApiClient<Channel>) -> anyhow::Result<Duration> {
    let request = with_header(X509svidRequest {});
    let start = Instant::now();
    let mut stream = client.fetch_x509svid(request).await?.into_inner();
    let first = stream.message().await?.context("stream ended")?;
    let elapsed = start.elapsed();
    ensure!(
        first
            .svids
            .first()
            .is_some_and(|s| s.spiffe_id == SPIFFE_ID),
        "unexpected SVIDs: {:?}",
        first.svids.iter().map(|s| &s.spiffe_id).collect::<Vec<_>>()
    );
    Ok(elapsed)
}

/// One `FetchX509Bundles`: the same stream shape on the same socket but no
/// attestation, so the transport's share of a cached `FetchX509SVID`.
async fn fetch_bundles(client: &mut SpiffeWorkloadApiClient<Channel>) -> anyhow::Result<Duration> {
    let request = with_header(X509BundlesRequest {});
    let start = Instant::now();
    let mut stream = client.fetch_x509_bundles(request).await?.into_inner();
    let first = stream.message().await?.context("stream ended")?;
    let elapsed = start.elapsed();
    ensure!(!first.bundles.is_empty(), "no bundle");
    Ok(elapsed)
}

struct Deployment {
    _dir: tempfile::TempDir,
    server: hallmark_server::server::ServerHandle,
    agent: hallmark_agent::AgentHandle,
    socket: PathBuf,
    model_files: Vec<PathBuf>,
}

/// An issuer trusting one operator key, a gold image for this executable
/// (with a small model) registered over the admin API, and an agent joined
/// with a token, as in agent/tests/api_cli.rs.
async fn deploy(exe_sha256: &str) -> anyhow::Result<Deployment> {
    // Under cargo's per-target scratch dir: on disk, so the issuer's
    // durable writes cost what they cost on a real host (not a tmpfs).
    let base = Path::new(env!("CARGO_TARGET_TMPDIR"));
    std::fs::create_dir_all(base)?;
    let dir = tempfile::Builder::new()
        .prefix("workload-bench")
        .tempdir_in(base)?;
    let key = SigningKey::from_pkcs8_der(&SigningKey::generate_pkcs8(Algorithm::Ed25519)?)?;
    let mut signers = TrustedSigners::new();
    signers.insert(key.public_key().clone());
    let mut settings = ServerSettings::for_dirs(
        TrustDomain::new("example.org")?,
        dir.path().join("server"),
        dir.path().join("admin.sock"),
    );
    settings.trusted_signers = Arc::new(signers);
    let server = hallmark_server::server::start_with_clock(settings, Arc::new(SystemClock)).await?;
    let mut admin = AdminClient::new(
        hallmark_server::admin::socket::connect(&dir.path().join("admin.sock")).await?,
    );

    let model_dir = dir.path().join("model");
    std::fs::create_dir_all(&model_dir)?;
    let model_files = vec![
        model_dir.join("weights.safetensors"),
        model_dir.join("config.json"),
    ];
    std::fs::write(&model_files[0], vec![7u8; 1 << 20])?;
    std::fs::write(&model_files[1], br#"{"layers":2}"#)?;
    let model_digest = digest_tree(&model_dir, &TreeLimits::default())?.digest;
    let image = GoldImage::from_toml(&format!(
        r#"
        name = "bench-workload"
        version = "1.0.0"
        spiffe_id = "{SPIFFE_ID}"
        owner = "bench@example.org"
        purpose = "benchmarks"
        risk_tier = "low"
        not_after = 2099-12-31
        [code]
        sha256 = ["{exe_sha256}"]
        [model]
        name = "tiny"
        version = "1.0"
        digest = "{model_digest}"
        path = "{}"
        "#,
        model_dir.display()
    ))?;
    let envelope = Envelope::sign(&canonical::encode(&image), &key)?.to_json();
    #[allow(
        clippy::needless_update,
        reason = "the admin message may gain fields this bench does not need"
    )]
    let register = RegisterImageRequest {
        envelope,
        ..Default::default()
    };
    admin.register_image(register).await?;
    let token = admin
        .generate_join_token(GenerateJoinTokenRequest::default())
        .await?
        .into_inner()
        .token;

    let bootstrap = dir.path().join("bootstrap.pem");
    std::fs::write(&bootstrap, server.authority().bundle().to_pem())?;
    let socket = dir.path().join("workload.sock");
    let mut agent_settings = AgentSettings::from_toml_str(&format!(
        "trust_domain = \"example.org\"\nserver_address = \"{}\"\ndata_dir = \"{}\"\nsocket_path = \"{}\"\n[bootstrap]\nbundle_path = \"{}\"\n",
        server.node_addr(),
        dir.path().join("agent").display(),
        socket.display(),
        bootstrap.display()
    ))?;
    agent_settings.join_token = Some(token);
    let agent = Agent::start(agent_settings).await?;
    // The first Sync message carries the model path hint.
    let mut status = agent.status();
    tokio::time::timeout(
        Duration::from_secs(20),
        status.wait_for(|s| s.sync_connected),
    )
    .await
    .context("agent did not connect to the issuer")??;
    Ok(Deployment {
        _dir: dir,
        server,
        agent,
        socket,
        model_files,
    })
}

/// Waits until every file in `paths` last changed longer ago than the
/// agent's racy window: a file changed moments ago is hashed at every
/// measurement until it settles (attestors' `FileCache`), which would put a
/// full hash of a freshly built binary or freshly written model into every
/// "cached" request.
async fn settle(paths: &[&Path]) -> anyhow::Result<()> {
    let wanted = hallmark_attestors::workload::RACY_WINDOW + Duration::from_millis(500);
    for path in paths {
        let meta = std::fs::metadata(path).with_context(|| format!("stat {}", path.display()))?;
        let ctime =
            UNIX_EPOCH + Duration::new(meta.ctime().try_into()?, meta.ctime_nsec().try_into()?);
        let age = SystemTime::now().duration_since(ctime).unwrap_or_default();
        if age < wanted {
            tokio::time::sleep(wanted - age).await;
        }
    }
    Ok(())
}

async fn run(options: Options) -> anyhow::Result<()> {
    let exe = std::env::current_exe().context("current_exe")?;
    let exe_sha256 = hex::encode(Sha256::digest(std::fs::read("/proc/self/exe")?));
    let d = deploy(&exe_sha256).await?;
    let mut files = vec![exe.as_path()];
    files.extend(d.model_files.iter().map(PathBuf::as_path));
    settle(&files).await?;
    let started = Instant::now();
    let result = measure(&options, &d, &exe).await;
    d.agent.shutdown().await;
    d.server.shutdown().await;
    let m = result?;
    let elapsed = started.elapsed();

    println!(
        "workload_api: {} cached requests, {} child processes, {:.1} s",
        m.cached.len(),
        m.first.len(),
        elapsed.as_secs_f64()
    );
    println!(
        "{:<50} {:>6} {:>9} {:>9} {:>9} {:>9} {:>9}",
        "figure", "n", "p50 ms", "p90 ms", "p99 ms", "max ms", "mean ms"
    );
    let rows = [
        ("cached FetchX509SVID (request to first message)", &m.cached),
        ("FetchX509Bundles (request to first message)", &m.bundles),
        ("first SVID, new process (request to first SVID)", &m.first),
        ("child process wall time (spawn to exit)", &m.wall),
    ];
    let mut json_rows = serde_json::Map::new();
    for (name, samples) in rows {
        let s = Stats::of(samples);
        println!(
            "{name:<50} {:>6} {:>9.3} {:>9.3} {:>9.3} {:>9.3} {:>9.3}",
            s.n, s.p50, s.p90, s.p99, s.max, s.mean
        );
        json_rows.insert(name.to_owned(), s.json());
    }
    if let Some(path) = &options.json {
        let doc = json!({
            "bench": "workload_api",
            "requests": options.requests,
            "children": options.children,
            "unit": "ms",
            "figures": json_rows,
        });
        std::fs::write(path, serde_json::to_vec_pretty(&doc)?)
            .with_context(|| format!("write {}", path.display()))?;
    }
    Ok(())
}

struct Measured {
    cached: Vec<Duration>,
    bundles: Vec<Duration>,
    first: Vec<Duration>,
    wall: Vec<Duration>,
}

async fn measure(options: &Options, d: &Deployment, exe: &Path) -> anyhow::Result<Measured> {
    let deadline = Instant::now() + DEADLINE;
    let mut client = raw_client(&d.socket).await?;
    // Warm-up: the first call mints this process's SVID; the rest settle
    // the connection and the caches.
    for _ in 0..50 {
        step(fetch_x509(&mut client)).await?;
    }
    let mut cached = Vec::with_capacity(options.requests);
    for _ in 0..options.requests {
        if Instant::now() > deadline {
            eprintln!("deadline reached after {} cached requests", cached.len());
            break;
        }
        cached.push(step(fetch_x509(&mut client)).await?);
    }
    let mut bundles = Vec::with_capacity(options.requests);
    for _ in 0..options.requests {
        if Instant::now() > deadline {
            eprintln!("deadline reached after {} bundle requests", bundles.len());
            break;
        }
        bundles.push(step(fetch_bundles(&mut client)).await?);
    }
    drop(client);

    let mut first = Vec::with_capacity(options.children);
    let mut wall = Vec::with_capacity(options.children);
    for _ in 0..options.children {
        if Instant::now() > deadline {
            eprintln!("deadline reached after {} children", first.len());
            break;
        }
        let spawned = Instant::now();
        let output = step(async {
            Ok(tokio::process::Command::new(exe)
                .env(CHILD_ENV, &d.socket)
                .kill_on_drop(true)
                .output()
                .await?)
        })
        .await?;
        wall.push(spawned.elapsed());
        if !output.status.success() {
            bail!(
                "child failed ({}): {}",
                output.status,
                String::from_utf8_lossy(&output.stderr)
            );
        }
        let nanos: u64 = String::from_utf8_lossy(&output.stdout)
            .trim()
            .parse()
            .context("child output")?;
        first.push(Duration::from_nanos(nanos));
    }
    Ok(Measured {
        cached,
        bundles,
        first,
        wall,
    })
}

async fn step<T>(work: impl Future<Output = anyhow::Result<T>>) -> anyhow::Result<T> {
    tokio::time::timeout(STEP_TIMEOUT, work)
        .await
        .context("timed out")?
}

/// Latency percentiles in milliseconds (nearest rank).
struct Stats {
    n: usize,
    p50: f64,
    p90: f64,
    p99: f64,
    max: f64,
    mean: f64,
}

impl Stats {
    fn of(samples: &[Duration]) -> Stats {
        let mut ms: Vec<f64> = samples.iter().map(|d| d.as_secs_f64() * 1e3).collect();
        ms.sort_by(f64::total_cmp);
        let rank = |p: f64| {
            if ms.is_empty() {
                return f64::NAN;
            }
            let i = ((p * ms.len() as f64).ceil() as usize).clamp(1, ms.len()) - 1;
            ms[i]
        };
        Stats {
            n: ms.len(),
            p50: rank(0.50),
            p90: rank(0.90),
            p99: rank(0.99),
            max: rank(1.0),
            mean: ms.iter().sum::<f64>() / ms.len().max(1) as f64,
        }
    }

    fn json(&self) -> serde_json::Value {
        json!({
            "n": self.n,
            "p50": self.p50,
            "p90": self.p90,
            "p99": self.p99,
            "max": self.max,
            "mean": self.mean,
        })
    }
}
