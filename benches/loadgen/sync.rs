//! `sync-streams`: `--agents` simulated agents, each attested with its own
//! join token and holding one `Sync` stream on its own mutual-TLS
//! connection (a connection carries one client certificate, so one agent:
//! streams cannot share connections without sharing an identity). Once
//! every stream has delivered its snapshot, the issuer's RSS is read, then
//! `--kills` times: a kill (CreateRevocation of the registered image's
//! SPIFFE ID over the admin socket) and, per agent, the time from just
//! before the RPC until its stream delivers a message carrying the new
//! revocation; then the lift, timed the same way until every stream has
//! delivered a message without it.

use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde_json::{Value, json};
use tokio::sync::mpsc;
use tokio::task::JoinSet;

use hallmark_proto::node::SyncRequest;

use crate::Options;
use crate::issuer::Issuer;
use crate::mint::{CODE, print_rss};
use crate::node::Target;
use crate::stats::{Rss, Samples, cpu_time, load_average, open_fds, rate};

/// Longest wait for every stream to deliver one message.
const PROPAGATION_TIMEOUT: Duration = Duration::from_secs(60);
/// Longest wait for all streams to open.
const OPEN_TIMEOUT: Duration = Duration::from_secs(300);
/// Pause between a lift and the next kill.
const PAUSE: Duration = Duration::from_millis(500);

/// What a stream delivered, stamped when it arrived.
#[derive(Debug)]
enum Event {
    Message {
        agent: usize,
        at: Instant,
        snapshot: bool,
        revocations: Vec<String>,
    },
    Ended {
        agent: usize,
        why: String,
    },
}

pub(crate) async fn run_sync(options: &Options) -> anyhow::Result<Value> {
    let n = options.agents.max(1);
    let mut issuer = Issuer::start(&options.issuer).await?;
    let idle = issuer.rss();
    let spiffe_id = issuer
        .register_image("sync-target", &[CODE.to_owned()])
        .await?;
    let target = Target {
        address: issuer.address.clone(),
        trust_domain: issuer.trust_domain.clone(),
        bundle: issuer.bundle.clone(),
    };

    let began = Instant::now();
    let tokens = issuer.tokens(n, 64).await?;
    let token_time = began.elapsed();
    let began = Instant::now();
    let (agents, attest_samples) = target.agents(tokens, options.concurrency).await?;
    let attest_time = began.elapsed();
    eprintln!(
        "{n} agents attested in {:.1} s ({} /s)",
        attest_time.as_secs_f64(),
        rate(n, attest_time)
    );

    // The connections are up (mutual TLS, HTTP/2), no stream yet.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let attested = issuer.rss();
    let attested_fds = open_fds(issuer.pid());

    // One task per stream: it stamps every message the moment it arrives.
    let (tx, mut rx) = mpsc::unbounded_channel();
    let mut streams = JoinSet::new();
    let began = Instant::now();
    for (i, agent) in agents.iter().enumerate() {
        let mut client = agent.client.clone();
        let tx = tx.clone();
        streams.spawn(async move {
            let ended = |why: String| Event::Ended { agent: i, why };
            let mut stream = match client.sync(SyncRequest {}).await {
                Ok(response) => response.into_inner(),
                Err(status) => {
                    let _ = tx.send(ended(format!("Sync refused: {status}")));
                    return;
                }
            };
            loop {
                match stream.message().await {
                    Ok(Some(message)) => {
                        let event = Event::Message {
                            agent: i,
                            at: Instant::now(),
                            snapshot: message.snapshot,
                            revocations: message.revocations.into_iter().map(|r| r.id).collect(),
                        };
                        if tx.send(event).is_err() {
                            return;
                        }
                    }
                    Ok(None) => {
                        let _ = tx.send(ended("stream ended".into()));
                        return;
                    }
                    Err(status) => {
                        let _ = tx.send(ended(format!("stream failed: {status}")));
                        return;
                    }
                }
            }
        });
    }
    drop(tx);
    let mut snapshots = vec![false; n];
    let mut have = 0;
    let deadline = tokio::time::Instant::now() + OPEN_TIMEOUT;
    while have < n {
        let event = tokio::time::timeout_at(deadline, rx.recv())
            .await
            .with_context(|| format!("only {have} of {n} Sync streams opened in {OPEN_TIMEOUT:?}"))?
            .context("every stream ended")?;
        match event {
            Event::Message {
                agent, snapshot, ..
            } => {
                if snapshot && !snapshots[agent] {
                    snapshots[agent] = true;
                    have += 1;
                }
            }
            Event::Ended { agent, why } => {
                issuer.check_running()?;
                bail!("agent {agent}'s Sync stream: {why}");
            }
        }
    }
    let open_time = began.elapsed();
    eprintln!(
        "{n} Sync streams open with their snapshot in {:.1} s",
        open_time.as_secs_f64()
    );
    // Let allocations settle (connection buffers, first-message state).
    tokio::time::sleep(Duration::from_secs(2)).await;
    let connected = issuer.rss();
    let connected_fds = open_fds(issuer.pid());
    let load_start = load_average();

    let mut kills = Vec::new();
    let mut lifts = Vec::new();
    let mut rpcs = Samples::default();
    let mut all_kills = Samples::default();
    let mut all_lifts = Samples::default();
    let mut missed = 0usize;
    let mut dead = vec![false; n];
    let server_pid = issuer.pid().to_string();
    let cpu = |pid: &str| cpu_time(pid).unwrap_or_default();
    let mut server_cpu = Duration::ZERO;
    let mut loadgen_cpu = Duration::ZERO;
    for round in 0..options.kills {
        while let Ok(event) = rx.try_recv() {
            if let Event::Ended { agent, why } = event
                && !dead[agent]
            {
                dead[agent] = true;
                eprintln!("agent {agent}: {why}");
            }
        }
        let (server_before, own_before) = (cpu(&server_pid), cpu("self"));
        let t0 = Instant::now();
        let id = issuer.kill_spiffe_id(&spiffe_id).await?;
        rpcs.push(t0.elapsed());
        let (samples, lost) =
            propagation(&mut rx, &mut dead, t0, |ids: &[String]| ids.contains(&id)).await;
        server_cpu += cpu(&server_pid).saturating_sub(server_before);
        loadgen_cpu += cpu("self").saturating_sub(own_before);
        missed += lost;
        let kill = samples.summary();
        eprintln!("kill {round}: {kill}{}", lost_note(lost));
        all_kills.extend(samples);
        kills.push(kill);

        let t1 = Instant::now();
        issuer.lift(&id).await?;
        let (samples, lost) =
            propagation(&mut rx, &mut dead, t1, |ids: &[String]| !ids.contains(&id)).await;
        missed += lost;
        let lift = samples.summary();
        eprintln!("lift {round}: {lift}{}", lost_note(lost));
        all_lifts.extend(samples);
        lifts.push(lift);
        tokio::time::sleep(PAUSE).await;
    }
    let load_end = load_average();
    let end = issuer.rss();
    let kill = all_kills.summary();
    let lift = all_lifts.summary();
    let attest = attest_samples.summary();

    println!(
        "sync-streams: {n} agents (one mTLS connection and one Sync stream each), {} kills",
        options.kills
    );
    println!(
        "  setup: {n} join tokens in {:.1} s; attested {} agents/s (concurrency {}), attestation {attest}; streams open in {:.1} s",
        token_time.as_secs_f64(),
        rate(n, attest_time),
        options.concurrency,
        open_time.as_secs_f64()
    );
    println!(
        "  kill propagation (kill RPC start -> message with the revocation, every agent, every kill): {kill}"
    );
    for (i, k) in kills.iter().enumerate() {
        println!("    kill {i}: {k}");
    }
    let per_kill = |total: Duration| total / u32::try_from(options.kills.max(1)).unwrap_or(1);
    println!(
        "    CPU per kill (10 ms ticks): server {:?} ({:.1} us per stream), load generator {:?}",
        per_kill(server_cpu),
        per_kill(server_cpu).as_secs_f64() * 1e6 / n as f64,
        per_kill(loadgen_cpu)
    );
    println!("  lift propagation: {lift}");
    println!("  CreateRevocation RPC itself: {}", rpcs.summary());
    if missed > 0 {
        println!(
            "  MISSED: {missed} agent deliveries did not arrive within {PROPAGATION_TIMEOUT:?}"
        );
    }
    match (idle, attested, connected) {
        (Some(i), Some(a), Some(c)) => println!(
            "  server RSS: idle {i}; {n} agents connected, no stream {a}; with {n} streams {c}"
        ),
        _ => println!("  server RSS: unknown"),
    }
    println!(
        "  server open files: {} with the agents connected, {} with the streams",
        attested_fds.unwrap_or(0),
        connected_fds.unwrap_or(0)
    );
    print_rss(&issuer, end);
    println!("  load average: {load_start} (before the kills), {load_end} (end)");

    let report = json!({
        "mode": "sync-streams",
        "agents": n,
        "kills": options.kills,
        "attest_concurrency": options.concurrency,
        "setup": {
            "tokens_s": token_time.as_secs_f64(),
            "attest_s": attest_time.as_secs_f64(),
            "attest_per_s": rate(n, attest_time),
            "attest_latency": attest.to_json(),
            "streams_open_s": open_time.as_secs_f64(),
        },
        "kill_propagation": kill.to_json(),
        "kill_propagation_per_kill": kills.iter().map(|s| s.to_json()).collect::<Vec<_>>(),
        "lift_propagation": lift.to_json(),
        "lift_propagation_per_lift": lifts.iter().map(|s| s.to_json()).collect::<Vec<_>>(),
        "kill_rpc": rpcs.summary().to_json(),
        "cpu_per_kill_ms": {
            "server": per_kill(server_cpu).as_secs_f64() * 1e3,
            "loadgen": per_kill(loadgen_cpu).as_secs_f64() * 1e3,
        },
        "missed": missed,
        "server_idle": idle.map(Rss::to_json),
        "server_attested": attested.map(Rss::to_json),
        "server_open_files": { "attested": attested_fds, "streams": connected_fds },
        "server_connected": connected.map(Rss::to_json),
        "server_end": end.map(Rss::to_json),
        "loadgen": Rss::of_self().map(Rss::to_json),
        "load_average": { "start": load_start, "end": load_end },
    });
    // Close the streams and connections before the issuer stops.
    streams.shutdown().await;
    drop(agents);
    issuer.stop()?;
    Ok(report)
}

fn lost_note(lost: usize) -> String {
    if lost == 0 {
        String::new()
    } else {
        format!("  ({lost} agents MISSED it)")
    }
}

/// Per agent, the time from `t0` until its first message (stamped on
/// arrival) for which `wanted(revocation ids)` holds. Returns the samples
/// and how many agents got none (within [`PROPAGATION_TIMEOUT`], or
/// because their stream had ended).
async fn propagation(
    rx: &mut mpsc::UnboundedReceiver<Event>,
    dead: &mut [bool],
    t0: Instant,
    wanted: impl Fn(&[String]) -> bool,
) -> (Samples, usize) {
    let n = dead.len();
    // Agents whose stream ended earlier cannot get it.
    let mut seen = dead.to_vec();
    let mut ended = dead.iter().filter(|d| **d).count();
    let mut samples = Samples::with_capacity(n);
    let deadline = tokio::time::Instant::now() + PROPAGATION_TIMEOUT;
    while samples.len() + ended < n {
        let Ok(Some(event)) = tokio::time::timeout_at(deadline, rx.recv()).await else {
            break;
        };
        match event {
            Event::Message {
                agent,
                at,
                revocations,
                ..
            } => {
                if !seen[agent] && at >= t0 && wanted(&revocations) {
                    seen[agent] = true;
                    samples.push(at - t0);
                }
            }
            Event::Ended { agent, why } => {
                if !dead[agent] {
                    dead[agent] = true;
                    eprintln!("agent {agent}: {why}");
                }
                if !seen[agent] {
                    seen[agent] = true;
                    ended += 1;
                }
            }
        }
    }
    let lost = n - samples.len();
    (samples, lost)
}
