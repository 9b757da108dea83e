//! The load generator tables of BENCHMARKS.md, from the runs in
//! [`super::run`]: the load generator table (issuance, attestation, the
//! Workload API, idle memory) and the kill propagation table, each figure
//! with its command, the load average before it, and issue 6's target.

use std::fmt::Write as _;

use super::cell::{Row, group_digits, met, percent, rate, short_ms, table};
use super::criterion::RawLimits;
use super::run::{Kind, Latency, Mint, Rss, Run, SyncStreams};

/// Issue 6: X.509-SVID issuance over mTLS at this fraction of one core's
/// rcgen leaf rate.
const ISSUANCE_TARGET: f64 = 0.75;
/// Issue 6: cached `FetchX509SVID` p99, ms.
const CACHED_P99_MS: f64 = 1.0;
/// Issue 6: first SVID of a new process, p99, ms.
const FIRST_P99_MS: f64 = 5.0;
/// Issue 6: kill propagation p99, ms, with [`SYNC_TARGET_AGENTS`] agents.
const KILL_P99_MS: f64 = 100.0;
/// Issue 6: the issuer's RSS with [`SYNC_TARGET_AGENTS`] agents, MB.
const SYNC_RSS_MB: f64 = 300.0;
/// The fleet size issue 6's `Sync` targets are set for.
const SYNC_TARGET_AGENTS: f64 = 10_000.0;
/// Issue 6: idle RSS, MB.
const AGENT_IDLE_MB: f64 = 30.0;
const SERVER_IDLE_MB: f64 = 50.0;

/// The load generator table and the raw limits it is compared with, or
/// `None` without any mint, attest or workload-fetch run.
pub(crate) fn load_table(runs: &[Run], raw: RawLimits) -> anyhow::Result<Option<String>> {
    let mut mints: Vec<(&Run, &Mint)> = filter(runs, |k| match k {
        Kind::Mint(m) => Some(m),
        _ => None,
    });
    // X.509 first, by keys per call, then JWT.
    mints.sort_by(|a, b| {
        (!a.1.x509, a.1.per_call)
            .partial_cmp(&(!b.1.x509, b.1.per_call))
            .unwrap_or(std::cmp::Ordering::Equal)
    });
    let attests = filter(runs, |k| match k {
        Kind::Attest(a) => Some(a),
        _ => None,
    });
    let mut workloads = filter(runs, |k| match k {
        Kind::Workload(w) => Some(w),
        _ => None,
    });
    workloads.sort_by(|a, b| a.1.connections.total_cmp(&b.1.connections));
    let syncs = sync_runs(runs);
    if mints.is_empty() && attests.is_empty() && workloads.is_empty() {
        return Ok(None);
    }

    let mut rows = Vec::new();
    for (run, m) in &mints {
        rows.push(mint_row(run, m, raw));
    }
    for (run, a) in &attests {
        rows.push(Row(vec![
            "join-token attestations (fresh TLS connection each, handshake included)".into(),
            command(run),
            run.load.clone(),
            format!(
                "**{}**; {}{} (join tokens made at {})",
                rate(Some(a.per_s)),
                percentiles(&a.latency, false),
                errors(a.errors),
                rate(Some(a.tokens_per_s))
            ),
            format!("{:.2} / {:.2}", a.cpu.server, a.cpu.loadgen),
            mib_peak(a.server),
            String::new(),
            String::new(),
            String::new(),
        ]));
    }
    for (run, w) in &workloads {
        let plural = if w.connections == 1.0 { "" } else { "s" };
        rows.push(Row(vec![
            format!(
                "cached `FetchX509SVID`, {} connection{plural}",
                w.connections
            ),
            command(run),
            run.load.clone(),
            format!(
                "{}; {}{}",
                rate(Some(w.fetches_per_s)),
                percentiles(&w.cached, true),
                errors(w.cached_errors)
            ),
            "not measured".into(),
            format!(
                "issuer {}; agent {} after the cached fetches",
                mib(w.server),
                mib(w.agent_after_cached)
            ),
            String::new(),
            String::new(),
            met(
                Some(w.cached.p99 < CACHED_P99_MS && w.cached_errors == 0.0),
                &format!("p99 < {CACHED_P99_MS} ms"),
            ),
        ]));
    }
    for (run, w) in workloads.iter().filter(|(_, w)| w.children > 0.0) {
        rows.push(Row(vec![
            format!(
                "first SVID, {} new processes, {} at a time (this binary in child mode; binary hash cached)",
                group_digits(w.children),
                w.child_concurrency
            ),
            command(run),
            run.load.clone(),
            format!(
                "request -> SVID {}; connect + request p99 {} ms; spawn -> exit p50 {}, p99 {} ms{}",
                percentiles(&w.request_to_svid, true),
                short_ms(w.connect_to_svid.p99),
                short_ms(w.spawn_to_exit.p50),
                short_ms(w.spawn_to_exit.p99),
                errors(w.first_errors)
            ),
            "not measured".into(),
            format!("agent {} at the end of the run", mib(w.agent_end)),
            String::new(),
            String::new(),
            met(
                Some(w.request_to_svid.p99 < FIRST_P99_MS && w.first_errors == 0.0),
                &format!("p99 < {FIRST_P99_MS} ms"),
            ),
        ]));
    }
    // Idle memory: the agent before the run with the most children, the
    // issuer before the smallest sync-streams run attests anyone.
    if let Some((run, w)) = workloads
        .iter()
        .max_by(|a, b| a.1.children.total_cmp(&b.1.children))
    {
        rows.push(Row(vec![
            "agent RSS, idle (joined, no workload yet)".into(),
            command(run),
            run.load.clone(),
            format!(
                "**{}** idle; {} after the cached fetches; {} at the end",
                mib(w.agent_idle),
                mib(w.agent_after_cached),
                mib(w.agent_end)
            ),
            String::new(),
            String::new(),
            String::new(),
            String::new(),
            idle_target(w.agent_idle, AGENT_IDLE_MB),
        ]));
    }
    if let Some((run, s)) = syncs.first() {
        rows.push(Row(vec![
            "issuer RSS, idle (started, before any agent)".into(),
            command(run),
            run.load.clone(),
            format!("**{}**", mib(s.idle)),
            String::new(),
            String::new(),
            String::new(),
            String::new(),
            idle_target(s.idle, SERVER_IDLE_MB),
        ]));
    }

    let mut out = String::new();
    table(
        &mut out,
        &[
            "figure",
            "command (`hallmark-loadgen ...`)",
            "load",
            "ours",
            "CPU: issuer / load generator (cores)",
            "RSS (the issuer's unless named)",
            "bounded by (1 core, same run)",
            "ratio",
            "target (issue 6)",
        ],
        &rows,
    )?;
    writeln!(out)?;
    writeln!(
        out,
        "Raw limits in the same run (`cargo bench --bench crypto_limits`, criterion medians, one core): rcgen leaf from an SPKI {}, ring P-256 sign {}, `hallmark_ca` X.509-SVID mint {}, JWT-SVID mint {}. Issue 6's issuance target, {:.0}% of the rcgen rate: {}.",
        rate(raw.rcgen_leaf),
        rate(raw.p256_sign),
        rate(raw.x509_mint),
        rate(raw.jwt_mint),
        ISSUANCE_TARGET * 100.0,
        rate(raw.rcgen_leaf.map(|r| r * ISSUANCE_TARGET)),
    )?;
    writeln!(out)?;
    Ok(Some(out))
}

/// The kill propagation table, or `None` without any sync-streams run or
/// workload-fetch run with kills.
pub(crate) fn kill_table(runs: &[Run]) -> anyhow::Result<Option<String>> {
    let syncs = sync_runs(runs);
    let streams = filter(runs, |k| match k {
        Kind::Workload(w) if w.kills > 0.0 && w.streams > 0.0 => Some(w),
        _ => None,
    });
    if syncs.is_empty() && streams.is_empty() {
        return Ok(None);
    }
    let mut rows = Vec::new();
    for (run, s) in &syncs {
        let at_target = s.agents >= SYNC_TARGET_AGENTS;
        let scope = if at_target {
            String::new()
        } else {
            format!(
                " (issue 6 sets it for {})",
                group_digits(SYNC_TARGET_AGENTS)
            )
        };
        let per_kill = match (
            s.per_kill_p99.iter().copied().reduce(f64::min),
            s.per_kill_p99.iter().copied().reduce(f64::max),
        ) {
            (Some(lo), Some(hi)) => format!("; per kill p99 {}-{}", short_ms(lo), short_ms(hi)),
            _ => String::new(),
        };
        let missed = if s.missed > 0.0 {
            format!("; **{} deliveries missed**", group_digits(s.missed))
        } else {
            String::new()
        };
        rows.push(Row(vec![
            format!(
                "{} `Sync` streams, {} kills (n = {})",
                group_digits(s.agents),
                s.kills,
                group_digits(s.kill.count)
            ),
            command(run),
            run.load.clone(),
            format!(
                "{}; lift p99 {}{per_kill}; `CreateRevocation` p50 {} ms{missed}",
                percentiles(&s.kill, true),
                short_ms(s.lift.p99),
                short_ms(s.kill_rpc.p50)
            ),
            format!(
                "{:.0} ms ({:.1} µs per stream) / {:.0} ms",
                s.cpu_per_kill.server,
                s.cpu_per_kill.server * 1e3 / s.agents.max(1.0),
                s.cpu_per_kill.loadgen
            ),
            format!(
                "**{}** with the streams ({} connected before any stream opens; idle {})",
                mib_peak(s.connected),
                mib(s.attested),
                mib(s.idle)
            ),
            format!(
                "{}{scope}",
                met(
                    Some(s.kill.p99 < KILL_P99_MS && s.missed == 0.0),
                    &format!("p99 < {KILL_P99_MS} ms"),
                )
            ),
        ]));
        if at_target {
            rows.push(Row(vec![
                format!(
                    "issuer RSS, {} agents connected with their streams",
                    group_digits(s.agents)
                ),
                "same run".into(),
                String::new(),
                format!("**{}**", mib(s.connected)),
                String::new(),
                String::new(),
                rss_target(s.connected, SYNC_RSS_MB, "< "),
            ]));
        }
    }
    for (run, w) in &streams {
        let missed = if w.missed > 0.0 {
            format!("; **{} streams missed**", group_digits(w.missed))
        } else {
            String::new()
        };
        rows.push(Row(vec![
            format!(
                "{} workload streams on one agent, {} kills (n = {})",
                w.streams,
                w.kills,
                group_digits(w.kill_to_gone.count)
            ),
            command(run),
            run.load.clone(),
            format!("{}{missed}", percentiles(&w.kill_to_gone, true)),
            "not measured".into(),
            format!("issuer {}; agent {}", mib(w.server), mib(w.agent_end)),
            met(
                Some(w.kill_to_gone.p99 < KILL_P99_MS && w.missed == 0.0),
                &format!("p99 < {KILL_P99_MS} ms"),
            ),
        ]));
    }
    let mut out = String::new();
    table(
        &mut out,
        &[
            "figure",
            "command (`hallmark-loadgen ...`)",
            "load before the kills",
            "kill -> seen by every stream",
            "CPU per kill: issuer / load generator",
            "issuer RSS",
            "target (issue 6)",
        ],
        &rows,
    )?;
    writeln!(out)?;
    Ok(Some(out))
}

fn mint_row(run: &Run, m: &Mint, raw: RawLimits) -> Row {
    let (figure, bound_name, bound) = if m.x509 {
        let keys = if m.per_call == 1.0 { "key" } else { "keys" };
        (
            format!("X.509-SVIDs, {} {keys} per call", m.per_call),
            "rcgen leaf from an SPKI",
            raw.rcgen_leaf,
        )
    } else {
        let tokens = if m.per_call == 1.0 { "token" } else { "tokens" };
        (
            format!("JWT-SVIDs, {} {tokens} per call", m.per_call),
            "ring P-256 sign",
            raw.p256_sign,
        )
    };
    let calls = if m.per_call == 1.0 {
        String::new()
    } else {
        format!(
            " ({})",
            rate(Some(m.calls_per_s)).replace(" /s", " calls/s")
        )
    };
    let per_call_us = m.cpu.server / m.calls_per_s.max(f64::MIN_POSITIVE) * 1e6;
    let per_svid = if m.per_call == 1.0 {
        String::new()
    } else {
        format!(", {:.0} µs per SVID", per_call_us / m.per_call)
    };
    let target = if m.x509 {
        met(
            bound.map(|b| m.credentials_per_s >= ISSUANCE_TARGET * b),
            &format!(">= {:.0}% of rcgen", ISSUANCE_TARGET * 100.0),
        )
    } else {
        String::new()
    };
    Row(vec![
        figure,
        command(run),
        run.load.clone(),
        format!(
            "**{}**{calls}; {}{}",
            rate(Some(m.credentials_per_s)),
            percentiles(&m.latency, false),
            errors(m.errors)
        ),
        format!(
            "{:.2} ({} µs per call{per_svid}) / {:.2}",
            m.cpu.server,
            group_digits(per_call_us),
            m.cpu.loadgen
        ),
        mib_peak(m.server),
        format!("{bound_name}: {}", rate(bound)),
        percent(Some(m.credentials_per_s), bound),
        target,
    ])
}

/// Sync runs by fleet size.
fn sync_runs(runs: &[Run]) -> Vec<(&Run, &SyncStreams)> {
    let mut syncs = filter(runs, |k| match k {
        Kind::Sync(s) => Some(s),
        _ => None,
    });
    syncs.sort_by(|a, b| a.1.agents.total_cmp(&b.1.agents));
    syncs
}

fn filter<'a, T>(
    runs: &'a [Run],
    pick: impl Fn(&'a Kind) -> Option<&'a T>,
) -> Vec<(&'a Run, &'a T)> {
    runs.iter()
        .filter_map(|r| pick(&r.kind).map(|k| (r, k)))
        .collect()
}

/// The command in backticks, without the binary's name.
fn command(run: &Run) -> String {
    let args = run
        .command
        .strip_prefix("hallmark-loadgen")
        .unwrap_or(&run.command)
        .trim();
    format!("`{args}`")
}

/// `p50 3.56 ms, p90 5.10, p99 6.85, max 16.4`, the percentiles in bold
/// for the figures whose target is a latency.
fn percentiles(l: &Latency, bold: bool) -> String {
    let text = format!(
        "p50 {} ms, p90 {}, p99 {}",
        short_ms(l.p50),
        short_ms(l.p90),
        short_ms(l.p99)
    );
    let text = if bold { format!("**{text}**") } else { text };
    format!("{text}, max {}", short_ms(l.max))
}

fn errors(n: f64) -> String {
    if n > 0.0 {
        format!(", **{} errors**", group_digits(n))
    } else {
        String::new()
    }
}

fn mib(rss: Option<Rss>) -> String {
    rss.map_or("n/a".into(), |r| format!("{:.1} MiB", r.rss))
}

/// With the peak (`VmHWM`) when it is above the figure.
fn mib_peak(rss: Option<Rss>) -> String {
    match rss {
        Some(r) if r.peak > r.rss => format!("{:.1} MiB (peak {:.1})", r.rss, r.peak),
        _ => mib(rss),
    }
}

fn idle_target(rss: Option<Rss>, limit_mb: f64) -> String {
    rss_target(rss, limit_mb, "idle < ")
}

fn rss_target(rss: Option<Rss>, limit_mb: f64, what: &str) -> String {
    let status = met(
        rss.map(|r| r.mb() < limit_mb),
        &format!("{what}{limit_mb} MB"),
    );
    match rss {
        Some(r) => format!("{status} ({:.1} MB)", r.mb()),
        None => status,
    }
}

#[cfg(test)]
mod tests {
    use super::super::run::parse;
    use super::super::run::tests::{mint_json, sync_json, workload_json};

    use super::*;

    fn raw() -> RawLimits {
        RawLimits {
            rcgen_leaf: Some(50_000.0),
            p256_sign: Some(57_000.0),
            x509_mint: Some(46_000.0),
            jwt_mint: Some(49_000.0),
        }
    }

    #[test]
    fn issuance_is_compared_with_the_rcgen_rate() {
        let runs = [
            parse("k16", &mint_json(16, 40_000.0)).unwrap(),
            parse("k1", &mint_json(1, 8_728.0)).unwrap(),
        ];
        let table = load_table(&runs, raw()).unwrap().unwrap();
        let rows: Vec<&str> = table.lines().filter(|l| l.starts_with("| X.509")).collect();
        // Sorted by keys per call; 8,728 is 17% of 50,000, 40,000 is 80%.
        assert!(
            rows[0].starts_with("| X.509-SVIDs, 1 key per call |"),
            "{table}"
        );
        assert!(
            rows[0].contains("| 17% | >= 75% of rcgen: **missed** |"),
            "{table}"
        );
        assert!(
            rows[1].starts_with("| X.509-SVIDs, 16 keys per call |"),
            "{table}"
        );
        assert!(rows[1].contains("**40,000 /s** (2,500 calls/s)"), "{table}");
        assert!(
            rows[1].contains("| 80% | >= 75% of rcgen: met |"),
            "{table}"
        );
        assert!(
            rows[1].contains("`--mode mint-x509 --keys-per-call 16`"),
            "{table}"
        );
        assert!(table.contains("rcgen rate: 37,500 /s."), "{table}");
        // No kill table from mint runs alone.
        assert_eq!(kill_table(&runs).unwrap(), None);
    }

    #[test]
    fn workload_targets_are_judged_on_p99() {
        let runs = [
            parse("cached-1", &workload_json(1, 0, 0.44)).unwrap(),
            parse("fetch", &workload_json(8, 200, 1.82)).unwrap(),
        ];
        let table = load_table(&runs, raw()).unwrap().unwrap();
        let line = |prefix: &str| {
            table
                .lines()
                .find(|l| l.starts_with(prefix))
                .unwrap_or_else(|| panic!("no {prefix} in {table}"))
                .to_owned()
        };
        assert!(line("| cached `FetchX509SVID`, 1 connection |").ends_with("p99 < 1 ms: met |"));
        assert!(
            line("| cached `FetchX509SVID`, 8 connections |").ends_with("p99 < 1 ms: **missed** |")
        );
        assert!(line("| first SVID, 200 new processes").ends_with("p99 < 5 ms: met |"));
        // 10.2 MiB is 10.7 MB.
        assert!(line("| agent RSS, idle").ends_with("idle < 30 MB: met (10.7 MB) |"));
        // A failed fetch is not hidden behind a good p99.
        let mut failing = workload_json(1, 0, 0.44);
        failing["cached"]["errors"] = serde_json::json!(3);
        let table2 = load_table(&[parse("f", &failing).unwrap()], raw())
            .unwrap()
            .unwrap();
        assert!(table2.contains(", **3 errors**"), "{table2}");
        assert!(table2.contains("p99 < 1 ms: **missed** |"), "{table2}");
        // Without a sync-streams run there is no issuer idle figure.
        assert!(!table.contains("issuer RSS, idle"));
    }

    #[test]
    fn kill_targets_apply_at_ten_thousand_agents() {
        let runs = [
            parse("sync-10000", &sync_json(10_000, 197.4, 419.0)).unwrap(),
            parse("sync-1k", &sync_json(1_000, 24.9, 55.7)).unwrap(),
            parse("fetch", &workload_json(8, 200, 1.8)).unwrap(),
        ];
        let table = kill_table(&runs).unwrap().unwrap();
        let rows: Vec<&str> = table
            .lines()
            .skip(2)
            .filter(|l| l.starts_with('|'))
            .collect();
        assert_eq!(rows.len(), 4, "{table}");
        assert!(rows[0].starts_with("| 1,000 `Sync` streams, 5 kills (n = 1,000) |"));
        assert!(rows[0].ends_with("p99 < 100 ms: met (issue 6 sets it for 10,000) |"));
        assert!(rows[1].starts_with("| 10,000 `Sync` streams"));
        assert!(rows[1].contains("per kill p99 192-197"), "{}", rows[1]);
        assert!(rows[1].ends_with("p99 < 100 ms: **missed** |"));
        // 419 MiB is 439.4 MB.
        assert!(
            rows[2].ends_with("< 300 MB: **missed** (439.4 MB) |"),
            "{}",
            rows[2]
        );
        assert!(rows[3].starts_with("| 100 workload streams on one agent, 5 kills"));
        assert!(rows[3].ends_with("p99 < 100 ms: met |"));
        // The issuer's idle RSS is read from the smallest sync run.
        let load = load_table(&runs, raw()).unwrap().unwrap();
        assert!(load.contains("| **11.9 MiB** |"), "{load}");
        assert!(load.contains("idle < 50 MB: met (12.5 MB) |"), "{load}");
    }

    #[test]
    fn no_runs_no_tables() {
        assert_eq!(load_table(&[], raw()).unwrap(), None);
        assert_eq!(kill_table(&[]).unwrap(), None);
    }
}
