//! `workload-fetch`: the SPIFFE Workload API of a real agent
//! (`hallmark-agent run`, a child process attested to the child issuer
//! with a join token), measured over its Unix socket. The agent attests
//! callers with its real `/proc` attestor, so the registered image allows
//! this binary's own SHA-256.
//!
//! 1. Cached: `--concurrency` connections from this process, each calling
//!    `FetchX509SVID` in a loop (request to first stream message); the
//!    SVID is cached for this pid, so each call is attestation (digests
//!    cached) and a cache lookup.
//! 2. First fetch: `--children` new processes (this binary in child mode),
//!    `--child-concurrency` at a time; each times its own connect and
//!    request to its first SVID (a new pid: fresh key, `MintX509Svids` on
//!    the issuer, its audit record). The binary's hash is cached by then.
//! 3. Kill: `--streams` new processes each hold a `FetchX509SVID` stream;
//!    a kill of the image's SPIFFE ID, then per process the wall-clock
//!    time from just before the kill RPC until its stream shows the SVID
//!    gone (a message without it, or PermissionDenied). Lift, repeat
//!    `--kills` times with fresh processes.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, bail};
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use tokio::io::AsyncBufReadExt;
use tokio::net::UnixStream;
use tokio::sync::mpsc;
use tonic::transport::{Channel, Endpoint};

use hallmark_proto::workload::spiffe_workload_api_client::SpiffeWorkloadApiClient;
use hallmark_proto::workload::{X509svidRequest, X509svidResponse};

use crate::Options;
use crate::issuer::{Issuer, TRUST_DOMAIN};
use crate::mint::{closed_loop, print_rss};
use crate::process::Daemon;
use crate::stats::{Rss, Samples, load_average, rate};

/// Set in a child process: `fetch:<socket>` or `hold:<socket>`.
pub(crate) const CHILD_ENV: &str = "HALLMARK_LOADGEN_CHILD";
/// Longest wait for the agent to serve its first SVID.
const AGENT_TIMEOUT: Duration = Duration::from_secs(30);
/// Longest a child may live (first-fetch children) or wait for anything.
const CHILD_TIMEOUT: Duration = Duration::from_secs(30);
/// Longest wait for every holding child to see its SVID removed.
const GONE_TIMEOUT: Duration = Duration::from_secs(60);

pub(crate) type WorkloadClient = SpiffeWorkloadApiClient<Channel>;

/// A running agent on a socket in the issuer's temp dir.
pub(crate) struct AgentDaemon {
    daemon: Daemon,
    pub(crate) socket: PathBuf,
}

impl AgentDaemon {
    pub(crate) async fn start(issuer: &Issuer, binary: &Path) -> anyhow::Result<AgentDaemon> {
        let token = issuer.token().await?;
        let socket = issuer.path("agent.sock");
        let config = format!(
            "trust_domain = \"{TRUST_DOMAIN}\"\n\
             server_address = \"{}\"\n\
             data_dir = \"{}\"\n\
             socket_path = \"{}\"\n\
             log_level = \"info\"\n\
             [bootstrap]\n\
             bundle_path = \"{}\"\n",
            issuer.address,
            issuer.path("agent-data").display(),
            socket.display(),
            issuer.path("bundle.pem").display(),
        );
        let config_path = issuer.path("agent.toml");
        std::fs::write(&config_path, config)?;
        let mut daemon = Daemon::spawn(
            "hallmark-agent",
            binary,
            &[
                "run",
                "--config",
                &config_path.display().to_string(),
                "--join-token",
                &token,
            ],
            issuer.path("agent.log"),
        )?;
        let deadline = Instant::now() + AGENT_TIMEOUT;
        let mut last_error = String::new();
        loop {
            daemon.check_running()?;
            if socket.exists() {
                match async {
                    let mut client = connect(&socket).await?;
                    first_svid(&mut client).await
                }
                .await
                {
                    Ok(_) => break,
                    Err(e) => last_error = format!("{e:#}"),
                }
            }
            if Instant::now() >= deadline {
                bail!(
                    "the agent served no SVID within {AGENT_TIMEOUT:?} ({last_error}); its log:\n{}",
                    daemon.log_tail()
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Ok(AgentDaemon { daemon, socket })
    }

    pub(crate) fn rss(&self) -> Option<Rss> {
        self.daemon.rss()
    }

    pub(crate) fn stop(self) -> anyhow::Result<()> {
        self.daemon.stop(Duration::from_secs(10))
    }
}

/// One Workload API connection (its own Unix socket connection).
pub(crate) async fn connect(socket: &Path) -> anyhow::Result<WorkloadClient> {
    let path = socket.to_owned();
    // The URI is required by tonic but unused: the connector dials the socket.
    let channel = Endpoint::from_static("http://workload.hallmark.invalid")
        .connect_with_connector(tower::service_fn(move |_| {
            let path = path.clone();
            async move { Ok::<_, std::io::Error>(TokioIo::new(UnixStream::connect(path).await?)) }
        }))
        .await
        .with_context(|| format!("connect {}", socket.display()))?;
    Ok(SpiffeWorkloadApiClient::new(channel))
}

fn x509_request() -> tonic::Request<X509svidRequest> {
    let mut request = tonic::Request::new(X509svidRequest {});
    request.metadata_mut().insert(
        "workload.spiffe.io",
        tonic::metadata::MetadataValue::from_static("true"),
    );
    request
}

/// `FetchX509SVID` until the first message, which must hold an SVID.
pub(crate) async fn first_svid(client: &mut WorkloadClient) -> anyhow::Result<X509svidResponse> {
    let mut stream = client.fetch_x509svid(x509_request()).await?.into_inner();
    let first = stream.message().await?.context("stream ended")?;
    if first.svids.is_empty() {
        bail!("first message without an SVID");
    }
    Ok(first)
}

/// SHA-256 of this process's executable, as the agent's attestor sees it.
pub(crate) fn own_exe_sha256() -> anyhow::Result<String> {
    let mut file = std::fs::File::open("/proc/self/exe").context("open /proc/self/exe")?;
    let mut hasher = Sha256::new();
    std::io::copy(&mut file, &mut hasher).context("read /proc/self/exe")?;
    Ok(hasher
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect())
}

pub(crate) async fn run_workload(options: &Options) -> anyhow::Result<Value> {
    let issuer = Issuer::start(&options.issuer).await?;
    let spiffe_id = issuer
        .register_image("workload", &[own_exe_sha256()?])
        .await?;
    let agent = AgentDaemon::start(&issuer, &options.agent_binary).await?;
    let agent_idle = agent.rss();
    let load_start = load_average();

    // 1. Cached fetches.
    let mut clients = Vec::with_capacity(options.concurrency);
    for _ in 0..options.concurrency.max(1) {
        let mut client = connect(&agent.socket).await?;
        first_svid(&mut client).await?;
        clients.push(client);
    }
    let clients = std::sync::Arc::new(clients);
    let feed = clients.clone();
    let (window, cached) = closed_loop(options, move |worker, _| {
        let mut client = feed[worker % feed.len()].clone();
        async move {
            first_svid(&mut client).await?;
            Ok(1)
        }
    })
    .await?;
    drop(clients);
    let cached_summary = cached.samples.summary();
    let agent_loaded = agent.rss();

    // 2. First fetch from new processes.
    let (first_fetch, first_connect, first_wall, first_errors) =
        first_fetches(options, &agent.socket).await?;

    // 3. Kill with held streams.
    let (gone, gone_missed, kill_rpcs, agent_held) =
        kill_streams(options, &issuer, &agent, &spiffe_id).await?;
    let load_end = load_average();
    let server = issuer.rss();
    // The streams' processes have exited: give the agent a moment to see
    // their connections close, then see what it kept.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let agent_end = agent.rss();

    println!(
        "workload-fetch: one agent, SPIFFE Workload API over its Unix socket, measured by its /proc attestor"
    );
    println!(
        "  cached FetchX509SVID, {} connections, {:.1} s: {} ok, {} errors, {} fetches/s",
        options.concurrency,
        window.as_secs_f64(),
        cached.samples.len(),
        cached.errors,
        rate(cached.samples.len(), window)
    );
    if let Some(e) = &cached.first_error {
        println!("    first error: {e}");
    }
    println!("    latency (request -> first message): {cached_summary}");
    println!(
        "  first fetch, {} new processes ({} at a time), {} failed:",
        options.children, options.child_concurrency, first_errors
    );
    println!("    request -> first SVID (timed in the child): {first_fetch}");
    println!("    connect + request -> first SVID (in the child): {first_connect}");
    println!("    spawn -> exit (the parent's view, process start included): {first_wall}");
    println!(
        "  kill with {} held streams (one process each), {} kills: kill RPC start -> stream shows the SVID gone: {gone}",
        options.streams, options.kills
    );
    if gone_missed > 0 {
        println!("    MISSED: {gone_missed} streams did not see it within {GONE_TIMEOUT:?}");
    }
    println!("    CreateRevocation RPC itself: {kill_rpcs}");
    match (agent_idle, agent_loaded, agent_held, agent_end) {
        (Some(i), Some(l), Some(h), Some(e)) => println!(
            "  agent RSS: idle {i}; after the cached run {l}; holding the {} streams {h}; at the end, streams closed {e}",
            options.streams
        ),
        _ => println!("  agent RSS: unknown"),
    }
    print_rss(&issuer, server);
    println!("  load average: {load_start} (start), {load_end} (end)");

    let report = json!({
        "mode": "workload-fetch",
        "cached": {
            "connections": options.concurrency,
            "duration_s": window.as_secs_f64(),
            "ok": cached.samples.len(),
            "errors": cached.errors,
            "first_error": cached.first_error,
            "fetches_per_s": rate(cached.samples.len(), window),
            "latency": cached_summary.to_json(),
        },
        "first_fetch": {
            "children": options.children,
            "child_concurrency": options.child_concurrency,
            "errors": first_errors,
            "request_to_svid": first_fetch.to_json(),
            "connect_to_svid": first_connect.to_json(),
            "spawn_to_exit": first_wall.to_json(),
        },
        "kill_streams": {
            "streams": options.streams,
            "kills": options.kills,
            "missed": gone_missed,
            "kill_to_gone": gone.to_json(),
            "kill_rpc": kill_rpcs.to_json(),
        },
        "agent_idle": agent_idle.map(Rss::to_json),
        "agent_after_cached": agent_loaded.map(Rss::to_json),
        "agent_holding_streams": agent_held.map(Rss::to_json),
        "agent_end": agent_end.map(Rss::to_json),
        "server": server.map(Rss::to_json),
        "load_average": { "start": load_start, "end": load_end },
    });
    agent.stop()?;
    issuer.stop()?;
    Ok(report)
}

/// Spawns this binary in child mode `mode` against `socket`, its stdout piped.
fn spawn_child(mode: &str, socket: &Path) -> anyhow::Result<tokio::process::Child> {
    spawn_child_as(mode, socket, None)
}

/// [`spawn_child`] running as `uid` (and gid) when given.
fn spawn_child_as(
    mode: &str,
    socket: &Path,
    uid: Option<u32>,
) -> anyhow::Result<tokio::process::Child> {
    let exe = std::env::current_exe().context("current_exe")?;
    let mut command = tokio::process::Command::new(exe);
    if let Some(uid) = uid {
        command.uid(uid).gid(uid);
    }
    command
        .env(CHILD_ENV, format!("{mode}:{}", socket.display()))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .context("spawn child")
}

type FirstFetch = (
    crate::stats::Summary,
    crate::stats::Summary,
    crate::stats::Summary,
    usize,
);

async fn first_fetches(options: &Options, socket: &Path) -> anyhow::Result<FirstFetch> {
    let mut fetch = Samples::with_capacity(options.children);
    let mut connect = Samples::with_capacity(options.children);
    let mut wall = Samples::with_capacity(options.children);
    let mut errors = 0;
    let mut remaining = options.children;
    while remaining > 0 {
        let batch = remaining.min(options.child_concurrency.max(1));
        remaining -= batch;
        let mut running = Vec::with_capacity(batch);
        for _ in 0..batch {
            let started = Instant::now();
            running.push((started, spawn_child("fetch", socket)?));
        }
        for (started, child) in running {
            let output = tokio::time::timeout(CHILD_TIMEOUT, child.wait_with_output()).await;
            let elapsed = started.elapsed();
            let Ok(Ok(output)) = output else {
                errors += 1;
                continue;
            };
            let text = String::from_utf8_lossy(&output.stdout);
            let mut fields = text.split_whitespace();
            match (
                output.status.success(),
                fields.next(),
                fields.next().and_then(|f| f.parse::<u64>().ok()),
                fields.next().and_then(|f| f.parse::<u64>().ok()),
            ) {
                (true, Some("ok"), Some(request), Some(with_connect)) => {
                    fetch.push(Duration::from_nanos(request));
                    connect.push(Duration::from_nanos(with_connect));
                    wall.push(elapsed);
                }
                _ => errors += 1,
            }
        }
    }
    Ok((fetch.summary(), connect.summary(), wall.summary(), errors))
}

/// Kill -> gone, streams that missed it, the kill RPCs, and the agent's
/// RSS once the first round's streams all held an SVID.
type KillStreams = (
    crate::stats::Summary,
    usize,
    crate::stats::Summary,
    Option<Rss>,
);

async fn kill_streams(
    options: &Options,
    issuer: &Issuer,
    agent: &AgentDaemon,
    spiffe_id: &str,
) -> anyhow::Result<KillStreams> {
    let socket = agent.socket.as_path();
    if options.stream_uids > 0 {
        // Other uids reach the socket by its path (the directory stays
        // unlistable).
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(issuer.path(""), std::fs::Permissions::from_mode(0o711))
            .context("open the run's directory to the stream uids")?;
    }
    let mut held = None;
    let mut gone = Samples::default();
    let mut rpcs = Samples::default();
    let mut missed = 0;
    for round in 0..options.kills {
        // Each child says `ready` once it holds its SVID, then
        // `gone <unix ns>` when its stream shows it removed.
        let (tx, mut rx) = mpsc::unbounded_channel::<(usize, String)>();
        let mut children = Vec::with_capacity(options.streams);
        for i in 0..options.streams {
            let uid = (options.stream_uids > 0).then(|| 60_000 + i as u32 % options.stream_uids);
            let mut child = spawn_child_as("hold", socket, uid)?;
            let stdout = child.stdout.take().context("child stdout")?;
            let tx = tx.clone();
            tokio::spawn(async move {
                let mut lines = tokio::io::BufReader::new(stdout).lines();
                while let Ok(Some(line)) = lines.next_line().await {
                    if tx.send((i, line)).is_err() {
                        return;
                    }
                }
            });
            children.push(child);
        }
        drop(tx);
        let deadline = tokio::time::Instant::now() + CHILD_TIMEOUT;
        let mut ready = 0;
        while ready < options.streams {
            let (_, line) = tokio::time::timeout_at(deadline, rx.recv())
                .await
                .with_context(|| {
                    format!(
                        "only {ready} of {} workload streams held an SVID within {CHILD_TIMEOUT:?}",
                        options.streams
                    )
                })?
                .context("every child ended")?;
            if line == "ready" {
                ready += 1;
            } else {
                bail!("a workload child said {line:?} before the kill");
            }
        }
        if round == 0 {
            held = agent.rss();
        }
        let t0_wall = unix_nanos(SystemTime::now());
        let t0 = Instant::now();
        let id = issuer.kill_spiffe_id(spiffe_id).await?;
        rpcs.push(t0.elapsed());
        let deadline = tokio::time::Instant::now() + GONE_TIMEOUT;
        let mut seen = vec![false; options.streams];
        let mut count = 0;
        while count < options.streams {
            let Ok(Some((i, line))) = tokio::time::timeout_at(deadline, rx.recv()).await else {
                break;
            };
            let at = line
                .strip_prefix("gone ")
                .and_then(|rest| rest.split_whitespace().next())
                .and_then(|ns| ns.parse::<u128>().ok());
            if let Some(at) = at
                && !seen[i]
            {
                seen[i] = true;
                count += 1;
                let nanos = u64::try_from(at.saturating_sub(t0_wall)).unwrap_or(u64::MAX);
                gone.push(Duration::from_nanos(nanos));
            }
        }
        missed += options.streams - count;
        eprintln!(
            "kill {round}: {count} of {} streams saw the SVID gone",
            options.streams
        );
        issuer.lift(&id).await?;
        for mut child in children {
            let _ = tokio::time::timeout(Duration::from_secs(5), child.wait()).await;
            let _ = child.start_kill();
        }
    }
    Ok((gone.summary(), missed, rpcs.summary(), held))
}

fn unix_nanos(t: SystemTime) -> u128 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_nanos())
}

/// Child mode (`HALLMARK_LOADGEN_CHILD`): `fetch:<socket>` prints
/// `ok <request ns> <connect+request ns>`; `hold:<socket>` prints `ready`
/// once it holds an SVID and `gone <unix ns> <why>` when its stream shows
/// it removed.
pub(crate) fn child(spec: &str) -> anyhow::Result<()> {
    let (mode, socket) = spec.split_once(':').context("child spec is mode:socket")?;
    let socket = PathBuf::from(socket);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("tokio runtime")?;
    runtime.block_on(async {
        tokio::time::timeout(CHILD_TIMEOUT * 2, async {
            match mode {
                "fetch" => child_fetch(&socket).await,
                "hold" => child_hold(&socket).await,
                other => bail!("unknown child mode {other:?}"),
            }
        })
        .await
        .context("child timed out")?
    })
}

async fn child_fetch(socket: &Path) -> anyhow::Result<()> {
    let begun = Instant::now();
    let mut client = connect(socket).await?;
    let asked = Instant::now();
    first_svid(&mut client).await?;
    let done = Instant::now();
    println!(
        "ok {} {}",
        (done - asked).as_nanos(),
        (done - begun).as_nanos()
    );
    Ok(())
}

async fn child_hold(socket: &Path) -> anyhow::Result<()> {
    let mut client = connect(socket).await?;
    // Right after a lift the agent may not have applied it yet: retry.
    let deadline = Instant::now() + CHILD_TIMEOUT;
    let (mut stream, held) = loop {
        let mut stream = client.fetch_x509svid(x509_request()).await?.into_inner();
        match stream.message().await {
            Ok(Some(first)) if !first.svids.is_empty() => {
                break (stream, first.svids[0].spiffe_id.clone());
            }
            _ if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            other => bail!("no SVID to hold: {other:?}"),
        }
    };
    println!("ready");
    let why = loop {
        match stream.message().await {
            Ok(Some(message)) => {
                if message.svids.iter().all(|s| s.spiffe_id != held) {
                    break "removed".to_owned();
                }
            }
            Ok(None) => break "ended".to_owned(),
            Err(status) => break format!("{:?}", status.code()),
        }
    };
    println!("gone {} {why}", unix_nanos(SystemTime::now()));
    Ok(())
}
