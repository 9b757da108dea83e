//! The load generator's result files (`hallmark-loadgen --json`, one per
//! run in `target/bench-results/loadgen/`), read into typed runs.
//!
//! Parsing is strict: a field the tables read that is missing or of the
//! wrong type fails the report with the file and the field, so a truncated
//! or foreign file never becomes a row of `n/a`. A JSON `null`, which the
//! load generator writes for an RSS it could not read from `/proc`, is
//! `None`.

use std::path::Path;

use anyhow::{Context, bail};
use serde_json::Value;

/// One run of the load generator: its file name without `.json`, the
/// command (without `--json`), the 1-minute load average just before it
/// measured, and what it measured.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Run {
    pub(crate) name: String,
    pub(crate) command: String,
    pub(crate) load: String,
    pub(crate) kind: Kind,
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Kind {
    Mint(Mint),
    Attest(Attest),
    Sync(SyncStreams),
    Workload(Workload),
}

/// `mint-x509` and `mint-jwt`.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Mint {
    pub(crate) x509: bool,
    pub(crate) per_call: f64,
    pub(crate) calls_per_s: f64,
    pub(crate) credentials_per_s: f64,
    pub(crate) errors: f64,
    pub(crate) latency: Latency,
    pub(crate) cpu: Cpu,
    pub(crate) server: Option<Rss>,
}

/// `attest`.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Attest {
    pub(crate) per_s: f64,
    pub(crate) tokens_per_s: f64,
    pub(crate) errors: f64,
    pub(crate) latency: Latency,
    pub(crate) cpu: Cpu,
    pub(crate) server: Option<Rss>,
}

/// `sync-streams`.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct SyncStreams {
    pub(crate) agents: f64,
    pub(crate) kills: f64,
    pub(crate) kill: Latency,
    /// p99 of each kill on its own.
    pub(crate) per_kill_p99: Vec<f64>,
    pub(crate) lift: Latency,
    pub(crate) kill_rpc: Latency,
    /// CPU per kill, ms.
    pub(crate) cpu_per_kill: Cpu,
    pub(crate) missed: f64,
    pub(crate) idle: Option<Rss>,
    pub(crate) attested: Option<Rss>,
    pub(crate) connected: Option<Rss>,
}

/// `workload-fetch`.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Workload {
    pub(crate) connections: f64,
    pub(crate) fetches_per_s: f64,
    pub(crate) cached_errors: f64,
    pub(crate) cached: Latency,
    pub(crate) children: f64,
    pub(crate) child_concurrency: f64,
    pub(crate) first_errors: f64,
    pub(crate) request_to_svid: Latency,
    pub(crate) connect_to_svid: Latency,
    pub(crate) spawn_to_exit: Latency,
    pub(crate) streams: f64,
    pub(crate) kills: f64,
    pub(crate) missed: f64,
    pub(crate) kill_to_gone: Latency,
    pub(crate) agent_idle: Option<Rss>,
    pub(crate) agent_after_cached: Option<Rss>,
    pub(crate) agent_end: Option<Rss>,
    pub(crate) server: Option<Rss>,
}

/// Latency percentiles, ms.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Latency {
    pub(crate) count: f64,
    pub(crate) p50: f64,
    pub(crate) p90: f64,
    pub(crate) p99: f64,
    pub(crate) max: f64,
}

/// CPU the issuer and the load generator used: cores (mint, attest) or
/// ms per kill (sync-streams).
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Cpu {
    pub(crate) server: f64,
    pub(crate) loadgen: f64,
}

/// Resident memory, MiB.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Rss {
    pub(crate) rss: f64,
    pub(crate) peak: f64,
}

impl Rss {
    /// In MB (10^6 bytes), as issue 6's targets are given.
    pub(crate) fn mb(self) -> f64 {
        self.rss * 1.048_576
    }
}

/// Every `*.json` in `dir`, in name order; none if `dir` does not exist.
pub(crate) fn read_dir(dir: &Path) -> anyhow::Result<Vec<Run>> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e).with_context(|| format!("read {}", dir.display())),
    };
    let mut paths = Vec::new();
    for entry in entries {
        let path = entry
            .with_context(|| format!("read {}", dir.display()))?
            .path();
        if path.extension().is_some_and(|e| e == "json") {
            paths.push(path);
        }
    }
    paths.sort();
    let mut runs = Vec::new();
    for path in paths {
        let name = path
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        let bytes = std::fs::read(&path).with_context(|| format!("read {}", path.display()))?;
        let run = serde_json::from_slice::<Value>(&bytes)
            .map_err(anyhow::Error::from)
            .and_then(|v| parse(&name, &v))
            .with_context(|| format!("{} is not a hallmark-loadgen result", path.display()))?;
        runs.push(run);
    }
    Ok(runs)
}

/// One result document, as `hallmark-loadgen --json` writes it.
pub(crate) fn parse(name: &str, v: &Value) -> anyhow::Result<Run> {
    let kind = match text(v, "mode")?.as_str() {
        mode @ ("mint-x509" | "mint-jwt") => Kind::Mint(Mint {
            x509: mode == "mint-x509",
            per_call: num(v, "credentials_per_call")?,
            calls_per_s: num(v, "calls_per_s")?,
            credentials_per_s: num(v, "credentials_per_s")?,
            errors: num(v, "errors")?,
            latency: latency(v, "latency")?,
            cpu: cores(v)?,
            server: rss(v, "server")?,
        }),
        "attest" => Kind::Attest(Attest {
            per_s: num(v, "attestations_per_s")?,
            tokens_per_s: num(v, "tokens_per_s")?,
            errors: num(v, "errors")?,
            latency: latency(v, "latency")?,
            cpu: cores(v)?,
            server: rss(v, "server")?,
        }),
        "sync-streams" => Kind::Sync(SyncStreams {
            agents: num(v, "agents")?,
            kills: num(v, "kills")?,
            kill: latency(v, "kill_propagation")?,
            per_kill_p99: {
                let per_kill = field(v, "kill_propagation_per_kill")?
                    .as_array()
                    .context("`kill_propagation_per_kill` is not an array")?;
                let mut p99 = Vec::new();
                for (i, k) in per_kill.iter().enumerate() {
                    p99.push(
                        num(k, "p99_ms")
                            .with_context(|| format!("in `kill_propagation_per_kill`, kill {i}"))?,
                    );
                }
                p99
            },
            lift: latency(v, "lift_propagation")?,
            kill_rpc: latency(v, "kill_rpc")?,
            cpu_per_kill: Cpu {
                server: num(v, "cpu_per_kill_ms.server")?,
                loadgen: num(v, "cpu_per_kill_ms.loadgen")?,
            },
            missed: num(v, "missed")?,
            idle: rss(v, "server_idle")?,
            attested: rss(v, "server_attested")?,
            connected: rss(v, "server_connected")?,
        }),
        "workload-fetch" => Kind::Workload(Workload {
            connections: num(v, "cached.connections")?,
            fetches_per_s: num(v, "cached.fetches_per_s")?,
            cached_errors: num(v, "cached.errors")?,
            cached: latency(v, "cached.latency")?,
            children: num(v, "first_fetch.children")?,
            child_concurrency: num(v, "first_fetch.child_concurrency")?,
            first_errors: num(v, "first_fetch.errors")?,
            request_to_svid: latency(v, "first_fetch.request_to_svid")?,
            connect_to_svid: latency(v, "first_fetch.connect_to_svid")?,
            spawn_to_exit: latency(v, "first_fetch.spawn_to_exit")?,
            streams: num(v, "kill_streams.streams")?,
            kills: num(v, "kill_streams.kills")?,
            missed: num(v, "kill_streams.missed")?,
            kill_to_gone: latency(v, "kill_streams.kill_to_gone")?,
            agent_idle: rss(v, "agent_idle")?,
            agent_after_cached: rss(v, "agent_after_cached")?,
            agent_end: rss(v, "agent_end")?,
            server: rss(v, "server")?,
        }),
        other => bail!("unknown mode {other:?}"),
    };
    let command = text(v, "command").context(
        "(results from a hallmark-loadgen older than the `command` field: rerun benches/run.sh --only loadgen)",
    )?;
    let load = text(v, "load_average.start")?
        .split_whitespace()
        .next()
        .unwrap_or("unknown")
        .to_owned();
    Ok(Run {
        name: name.to_owned(),
        command,
        load,
        kind,
    })
}

/// `cpu_cores`: the cores the issuer and the load generator used over the
/// measured window.
fn cores(v: &Value) -> anyhow::Result<Cpu> {
    Ok(Cpu {
        server: num(v, "cpu_cores.server")?,
        loadgen: num(v, "cpu_cores.loadgen")?,
    })
}

/// The value at a dotted path (`latency.p99_ms`).
fn field<'a>(v: &'a Value, path: &str) -> anyhow::Result<&'a Value> {
    let mut at = v;
    for key in path.split('.') {
        at = at
            .get(key)
            .with_context(|| format!("`{path}` is missing"))?;
    }
    Ok(at)
}

fn num(v: &Value, path: &str) -> anyhow::Result<f64> {
    field(v, path)?
        .as_f64()
        .with_context(|| format!("`{path}` is not a number"))
}

fn text(v: &Value, path: &str) -> anyhow::Result<String> {
    Ok(field(v, path)?
        .as_str()
        .with_context(|| format!("`{path}` is not a string"))?
        .to_owned())
}

/// A `Summary::to_json` object.
fn latency(v: &Value, path: &str) -> anyhow::Result<Latency> {
    let l = field(v, path)?;
    let ms = |name: &str| num(l, name).with_context(|| format!("in `{path}`"));
    Ok(Latency {
        count: ms("count")?,
        p50: ms("p50_ms")?,
        p90: ms("p90_ms")?,
        p99: ms("p99_ms")?,
        max: ms("max_ms")?,
    })
}

/// An `Rss::to_json` object, or `null` when `/proc` could not be read.
fn rss(v: &Value, path: &str) -> anyhow::Result<Option<Rss>> {
    let r = field(v, path)?;
    if r.is_null() {
        return Ok(None);
    }
    let mib = |name: &str| num(r, name).with_context(|| format!("in `{path}`"));
    Ok(Some(Rss {
        rss: mib("rss_mib")?,
        peak: mib("peak_rss_mib")?,
    }))
}

#[cfg(test)]
pub(crate) mod tests {
    use serde_json::json;

    use super::*;

    pub(crate) fn summary(p50: f64, p99: f64) -> Value {
        json!({ "count": 1000, "p50_ms": p50, "p90_ms": p50 * 1.5, "p99_ms": p99, "max_ms": p99 * 2.0, "mean_ms": p50 })
    }

    pub(crate) fn rss_json(mib: f64) -> Value {
        json!({ "rss_mib": mib, "peak_rss_mib": mib + 1.0 })
    }

    pub(crate) fn mint_json(keys: u32, per_s: f64) -> Value {
        json!({
            "mode": "mint-x509",
            "command": format!("hallmark-loadgen --mode mint-x509 --keys-per-call {keys}"),
            "credentials_per_call": keys,
            "calls_per_s": per_s / f64::from(keys),
            "credentials_per_s": per_s,
            "errors": 0,
            "latency": summary(3.5, 6.8),
            "cpu_cores": { "server": 1.43, "loadgen": 0.47 },
            "server": rss_json(70.0),
            "loadgen": rss_json(10.0),
            "load_average": { "start": "0.96 0.93 1.24", "end": "1.01 0.57 0.84" },
        })
    }

    pub(crate) fn sync_json(agents: u32, p99: f64, connected_mib: f64) -> Value {
        json!({
            "mode": "sync-streams",
            "command": format!("hallmark-loadgen --mode sync-streams --agents {agents} --kills 5"),
            "agents": agents,
            "kills": 5,
            "kill_propagation": summary(p99 / 2.0, p99),
            "kill_propagation_per_kill": [summary(10.0, p99 - 5.3), summary(10.0, p99)],
            "lift_propagation": summary(10.0, p99),
            "kill_rpc": summary(19.8, 30.0),
            "cpu_per_kill_ms": { "server": 206.0, "loadgen": 142.0 },
            "missed": 0,
            "server_idle": rss_json(11.9),
            "server_attested": rss_json(336.6),
            "server_connected": rss_json(connected_mib),
            "server_end": rss_json(connected_mib),
            "load_average": { "start": "2.06 1.46 1.39", "end": "1.90 1.43 1.39" },
        })
    }

    pub(crate) fn workload_json(connections: u32, children: u32, cached_p99: f64) -> Value {
        json!({
            "mode": "workload-fetch",
            "command": "hallmark-loadgen --mode workload-fetch",
            "cached": {
                "connections": connections, "duration_s": 10.0, "ok": 100, "errors": 0,
                "first_error": null, "fetches_per_s": 3289.5, "latency": summary(0.3, cached_p99),
            },
            "first_fetch": {
                "children": children, "child_concurrency": 1, "errors": 0,
                "request_to_svid": summary(1.2, 1.6), "connect_to_svid": summary(1.3, 1.7),
                "spawn_to_exit": summary(2.7, 3.3),
            },
            "kill_streams": {
                "streams": 100, "kills": 5, "missed": 0,
                "kill_to_gone": summary(10.0, 20.0), "kill_rpc": summary(0.8, 11.0),
            },
            "agent_idle": rss_json(10.2),
            "agent_after_cached": rss_json(12.3),
            "agent_end": rss_json(17.1),
            "server": null,
            "load_average": { "start": "1.48 1.36 1.36", "end": "2.20 1.54 1.42" },
        })
    }

    #[test]
    fn a_mint_run_is_read() {
        let run = parse("mint-x509-k16", &mint_json(16, 22_750.4)).unwrap();
        assert_eq!(run.load, "0.96");
        assert_eq!(
            run.command,
            "hallmark-loadgen --mode mint-x509 --keys-per-call 16"
        );
        let Kind::Mint(m) = run.kind else {
            panic!("not a mint run: {:?}", run.kind)
        };
        assert!(m.x509);
        assert_eq!(m.per_call, 16.0);
        assert_eq!(m.latency.p99, 6.8);
        assert_eq!(m.server.unwrap().rss, 70.0);
    }

    #[test]
    fn null_rss_is_not_available_but_a_missing_one_is_malformed() {
        let run = parse("w", &workload_json(1, 0, 0.4)).unwrap();
        let Kind::Workload(w) = run.kind else {
            panic!("not a workload run")
        };
        assert_eq!(w.server, None);

        let mut v = workload_json(1, 0, 0.4);
        v.as_object_mut().unwrap().remove("server");
        let error = format!("{:#}", parse("w", &v).unwrap_err());
        assert!(error.contains("`server` is missing"), "{error}");
    }

    #[test]
    fn malformed_documents_name_the_field() {
        let mut v = mint_json(1, 8_728.0);
        v["latency"]["p99_ms"] = json!("fast");
        let error = format!("{:#}", parse("m", &v).unwrap_err());
        assert!(error.contains("`p99_ms` is not a number"), "{error}");
        assert!(error.contains("in `latency`"), "{error}");

        let mut v = mint_json(1, 8_728.0);
        v.as_object_mut().unwrap().remove("command");
        let error = format!("{:#}", parse("m", &v).unwrap_err());
        assert!(error.contains("`command` is missing"), "{error}");

        let error = format!("{:#}", parse("m", &json!({ "mode": "warp" })).unwrap_err());
        assert!(error.contains("unknown mode \"warp\""), "{error}");
        assert!(parse("m", &json!([1, 2])).is_err());
    }

    #[test]
    fn a_missing_directory_has_no_runs() {
        let runs = read_dir(Path::new("/nonexistent/hallmark/loadgen")).unwrap();
        assert!(runs.is_empty());
    }

    #[test]
    fn a_truncated_file_fails_with_its_path() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("attest.json"), "{\"mode\": \"attest\", ").unwrap();
        let error = format!("{:#}", read_dir(dir.path()).unwrap_err());
        assert!(
            error.contains("attest.json is not a hallmark-loadgen result"),
            "{error}"
        );
    }
}
