//! `mint-x509`, `mint-jwt` and `attest`: closed-loop load on the node API.
//!
//! `--concurrency` workers each send one request at a time for
//! `--duration` (after `--warmup`, whose requests are not counted), spread
//! over `--agents` simulated agents, each on its own mutual-TLS connection.
//! The workload public keys come from a pool made before the clock starts:
//! the issuer cannot tell, and the load generator's own key generation
//! would otherwise compete with the issuer for the same two cores.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use serde_json::{Value, json};
use tokio::task::JoinSet;

use hallmark_ca::key::CaKey;
use hallmark_proto::node::{MintJwtSvidRequest, MintX509SvidsRequest, WorkloadEvidence};

use crate::issuer::Issuer;
use crate::node::Target;
use crate::stats::{Rss, Samples, cpu_time, load_average, rate};
use crate::{Mode, Options};

/// The executable digest the simulated workloads present (the images allow it).
pub(crate) const CODE: &str = "1111111111111111111111111111111111111111111111111111111111111111";
/// Public keys reused round-robin by the X.509 mints.
const KEY_POOL: usize = 256;
/// Longest wait for one request.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// What one worker saw in the measured window.
#[derive(Default)]
pub(crate) struct Tally {
    pub(crate) samples: Samples,
    pub(crate) credentials: usize,
    pub(crate) errors: usize,
    pub(crate) first_error: Option<String>,
}

impl Tally {
    fn merge(&mut self, other: Tally) {
        self.samples.extend(other.samples);
        self.credentials += other.credentials;
        self.errors += other.errors;
        if self.first_error.is_none() {
            self.first_error = other.first_error;
        }
    }

    fn error(&mut self, message: String) {
        self.errors += 1;
        self.first_error.get_or_insert(message);
    }
}

fn evidence() -> WorkloadEvidence {
    WorkloadEvidence {
        pid: 4242,
        uid: 1000,
        gid: 1000,
        exe_path: "/usr/local/bin/loadgen-workload".into(),
        exe_sha256: CODE.into(),
        start_time: 1,
        loaded_code: Some(Default::default()),
        ..Default::default()
    }
}

/// `mint-x509` / `mint-jwt`: `--keys-per-call` images all match the
/// workload, so each call mints that many credentials.
pub(crate) async fn run_mint(options: &Options) -> anyhow::Result<Value> {
    let issuer = Issuer::start(&options.issuer).await?;
    let per_call = options.keys_per_call.max(1);
    for i in 0..per_call {
        issuer
            .register_image(&format!("mint-{i}"), &[CODE.to_owned()])
            .await?;
    }
    let agents = options.agents.max(1);
    let tokens = issuer.tokens(agents, 16).await?;
    let target = Target {
        address: issuer.address.clone(),
        trust_domain: issuer.trust_domain.clone(),
        bundle: issuer.bundle.clone(),
    };
    let (agents, _) = target.agents(tokens, 16).await?;
    let keys: Arc<Vec<Vec<u8>>> = Arc::new(
        (0..KEY_POOL)
            .map(|_| CaKey::generate().map(|k| k.public_key_der()))
            .collect::<Result<_, _>>()?,
    );
    let x509 = options.mode == Mode::MintX509;
    let clients: Arc<Vec<_>> = Arc::new(agents.iter().map(|a| a.client.clone()).collect());
    let load_start = load_average();
    let cpu = CpuMeter::start(&issuer, options.warmup);
    let (window, tally) = closed_loop(options, move |worker, n| {
        let mut client = clients[worker % clients.len()].clone();
        let keys = keys.clone();
        async move {
            if x509 {
                let first = worker.wrapping_mul(7919).wrapping_add(n * per_call);
                let public_keys = (0..per_call)
                    .map(|j| keys[(first + j) % keys.len()].clone())
                    .collect();
                let response = client
                    .mint_x509_svids(MintX509SvidsRequest {
                        evidence: Some(evidence()),
                        public_keys,
                    })
                    .await?;
                Ok(response.into_inner().svids.len())
            } else {
                let response = client
                    .mint_jwt_svid(MintJwtSvidRequest {
                        evidence: Some(evidence()),
                        audience: vec!["loadgen".into()],
                        spiffe_id: String::new(),
                    })
                    .await?;
                Ok(response.into_inner().svids.len())
            }
        }
    })
    .await?;
    let (server_cpu, own_cpu) = cpu.stop().await;
    let load_end = load_average();
    let server = issuer.rss();
    let summary = tally.samples.summary();
    let calls = tally.samples.len();
    let what = if x509 { "X.509-SVIDs" } else { "JWT-SVIDs" };
    println!(
        "{}: {} agents, concurrency {}, {} credential(s) per call, {:.1} s measured",
        options.mode.name(),
        agents.len(),
        options.concurrency,
        per_call,
        window.as_secs_f64()
    );
    println!(
        "  calls: {calls} ok, {} errors; {} calls/s; {} {what}/s",
        tally.errors,
        rate(calls, window),
        rate(tally.credentials, window)
    );
    if let Some(e) = &tally.first_error {
        println!("  first error: {e}");
    }
    println!("  latency per call: {summary}");
    print_cpu(server_cpu, own_cpu, window, calls);
    print_rss(&issuer, server);
    println!("  load average: {load_start} (start), {load_end} (end)");
    let report = json!({
        "mode": options.mode.name(),
        "agents": agents.len(),
        "concurrency": options.concurrency,
        "credentials_per_call": per_call,
        "duration_s": window.as_secs_f64(),
        "calls_ok": calls,
        "errors": tally.errors,
        "first_error": tally.first_error,
        "calls_per_s": rate(calls, window),
        "credentials_per_s": rate(tally.credentials, window),
        "latency": summary.to_json(),
        "cpu_cores": { "server": cores(server_cpu, window), "loadgen": cores(own_cpu, window) },
        "server": server.map(Rss::to_json),
        "loadgen": Rss::of_self().map(Rss::to_json),
        "load_average": { "start": load_start, "end": load_end },
    });
    issuer.stop()?;
    Ok(report)
}

/// `attest`: join-token attestations, each on a fresh TLS connection
/// without a client certificate (handshake included in the latency), from
/// a pool of `--tokens` tokens made before the clock starts.
pub(crate) async fn run_attest(options: &Options) -> anyhow::Result<Value> {
    let issuer = Issuer::start(&options.issuer).await?;
    let made = Instant::now();
    let tokens = Arc::new(issuer.tokens(options.tokens, 32).await?);
    let token_rate = rate(tokens.len(), made.elapsed());
    let target = Target {
        address: issuer.address.clone(),
        trust_domain: issuer.trust_domain.clone(),
        bundle: issuer.bundle.clone(),
    };
    let next = Arc::new(AtomicUsize::new(0));
    let load_start = load_average();
    let cpu = CpuMeter::start(&issuer, options.warmup);
    let pool = (target.clone(), tokens.clone(), next.clone());
    let (window, tally) = closed_loop(options, move |_, _| {
        let (target, tokens, next) = (pool.0.clone(), pool.1.clone(), pool.2.clone());
        async move {
            let i = next.fetch_add(1, Ordering::Relaxed);
            let token = tokens.get(i).ok_or(Exhausted)?;
            target.attest(token).await?;
            Ok(1)
        }
    })
    .await?;
    let (server_cpu, own_cpu) = cpu.stop().await;
    let load_end = load_average();
    let server = issuer.rss();
    let summary = tally.samples.summary();
    let used = next.load(Ordering::Relaxed).min(tokens.len());
    println!(
        "attest: concurrency {}, {:.1} s measured, {} tokens made ({token_rate} tokens/s over the admin socket)",
        options.concurrency,
        window.as_secs_f64(),
        tokens.len()
    );
    println!(
        "  attestations: {} ok, {} errors; {} attestations/s",
        tally.samples.len(),
        tally.errors,
        rate(tally.samples.len(), window)
    );
    if used >= tokens.len() {
        println!("  note: the token pool ran out; raise --tokens for a longer run");
    }
    if let Some(e) = &tally.first_error {
        println!("  first error: {e}");
    }
    println!("  latency (TLS connect + Attest): {summary}");
    print_cpu(server_cpu, own_cpu, window, tally.samples.len());
    print_rss(&issuer, server);
    println!("  load average: {load_start} (start), {load_end} (end)");
    let report = json!({
        "mode": "attest",
        "concurrency": options.concurrency,
        "duration_s": window.as_secs_f64(),
        "tokens": tokens.len(),
        "tokens_per_s": token_rate,
        "attestations_ok": tally.samples.len(),
        "errors": tally.errors,
        "first_error": tally.first_error,
        "attestations_per_s": rate(tally.samples.len(), window),
        "latency": summary.to_json(),
        "cpu_cores": { "server": cores(server_cpu, window), "loadgen": cores(own_cpu, window) },
        "server": server.map(Rss::to_json),
        "loadgen": Rss::of_self().map(Rss::to_json),
        "load_average": { "start": load_start, "end": load_end },
    });
    issuer.stop()?;
    Ok(report)
}

pub(crate) fn print_rss(issuer: &Issuer, server: Option<Rss>) {
    match server {
        Some(rss) => println!("  server RSS (pid {}): {rss}", issuer.pid()),
        None => println!("  server RSS: unknown"),
    }
    if let Some(own) = Rss::of_self() {
        println!("  load generator RSS: {own}");
    }
}

/// CPU used by the issuer and by this process over the measured window
/// (sampled when the warm-up ends and when the window closes).
pub(crate) struct CpuMeter {
    server_pid: String,
    start: tokio::task::JoinHandle<(Duration, Duration)>,
}

impl CpuMeter {
    pub(crate) fn start(issuer: &Issuer, warmup: Duration) -> CpuMeter {
        let server_pid = issuer.pid().to_string();
        let pid = server_pid.clone();
        let start = tokio::spawn(async move {
            tokio::time::sleep(warmup).await;
            (
                cpu_time(&pid).unwrap_or_default(),
                cpu_time("self").unwrap_or_default(),
            )
        });
        CpuMeter { server_pid, start }
    }

    /// (issuer, load generator) CPU time since the warm-up ended.
    pub(crate) async fn stop(self) -> (Duration, Duration) {
        let (server, own) = (
            cpu_time(&self.server_pid).unwrap_or_default(),
            cpu_time("self").unwrap_or_default(),
        );
        let (server_start, own_start) = self.start.await.unwrap_or_default();
        (
            server.saturating_sub(server_start),
            own.saturating_sub(own_start),
        )
    }
}

/// Cores kept busy: CPU time over wall time.
pub(crate) fn cores(cpu: Duration, window: Duration) -> f64 {
    if window.is_zero() {
        return 0.0;
    }
    (cpu.as_secs_f64() / window.as_secs_f64() * 100.0).round() / 100.0
}

fn print_cpu(server: Duration, own: Duration, window: Duration, calls: usize) {
    let per_call = |cpu: Duration| cpu.as_secs_f64() * 1e6 / calls.max(1) as f64;
    println!(
        "  CPU: issuer {:.2} cores ({:.0} us per call), load generator {:.2} cores ({:.0} us per call)",
        cores(server, window),
        per_call(server),
        cores(own, window),
        per_call(own)
    );
}

/// The token pool is used up: the worker stops.
#[derive(Debug)]
struct Exhausted;

impl std::fmt::Display for Exhausted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("token pool exhausted")
    }
}

impl std::error::Error for Exhausted {}

/// Runs `--concurrency` workers, each calling `call(worker, n)` one at a
/// time until the window ends; requests that start in the warm-up are not
/// counted. Returns the measured window and what the workers saw.
pub(crate) async fn closed_loop<F, Fut>(
    options: &Options,
    call: F,
) -> anyhow::Result<(Duration, Tally)>
where
    F: Fn(usize, usize) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = anyhow::Result<usize>> + Send + 'static,
{
    let call = Arc::new(call);
    let start = Instant::now();
    let measure_from = start + options.warmup;
    let end = measure_from + options.duration;
    let mut tasks = JoinSet::new();
    for worker in 0..options.concurrency.max(1) {
        let call = call.clone();
        tasks.spawn(async move {
            let mut tally = Tally::default();
            let mut last = measure_from;
            for n in 0.. {
                let begun = Instant::now();
                if begun >= end {
                    break;
                }
                let outcome = tokio::time::timeout(REQUEST_TIMEOUT, call(worker, n)).await;
                let done = Instant::now();
                let counted = begun >= measure_from;
                match outcome {
                    Ok(Err(e)) if e.is::<Exhausted>() => break,
                    _ if !counted => continue,
                    Ok(Ok(credentials)) => {
                        tally.samples.push(done - begun);
                        tally.credentials += credentials;
                    }
                    Ok(Err(e)) => tally.error(format!("{e:#}")),
                    Err(_) => tally.error(format!("no answer within {REQUEST_TIMEOUT:?}")),
                }
                last = last.max(done);
            }
            (tally, last)
        });
    }
    let mut tally = Tally::default();
    let mut last = measure_from;
    while let Some(joined) = tasks.join_next().await {
        let (t, l) = joined.context("worker")?;
        tally.merge(t);
        last = last.max(l);
    }
    // The window closes at its end, or earlier when the work ran out.
    let window = end.min(last).saturating_duration_since(measure_from);
    Ok((window, tally))
}
