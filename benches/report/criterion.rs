//! What criterion measured (`<CRITERION_HOME>/<id>/new/*.json`) and the
//! tables made from it: the machine, the results table (with the workload
//! bench's JSON), the audit cost table and the raw limits the load
//! generator's figures are compared with.

use std::fmt::Write as _;
use std::path::PathBuf;

use serde_json::Value;

use super::cell::{Row, gb, met, ms, percent, rate, table, time, times};

/// Criterion's results under `target/criterion`.
pub(crate) struct Criterion(pub(crate) PathBuf);

impl Criterion {
    /// The median time of one iteration, in nanoseconds.
    pub(crate) fn ns(&self, id: &str) -> Option<f64> {
        let path = self.0.join(id).join("new/estimates.json");
        let estimates: Value = serde_json::from_slice(&std::fs::read(path).ok()?).ok()?;
        estimates["median"]["point_estimate"].as_f64()
    }

    /// The bytes or elements one iteration processes.
    pub(crate) fn throughput(&self, id: &str) -> Option<f64> {
        let path = self.0.join(id).join("new/benchmark.json");
        let benchmark: Value = serde_json::from_slice(&std::fs::read(path).ok()?).ok()?;
        let t = &benchmark["throughput"];
        t["Bytes"].as_f64().or_else(|| t["Elements"].as_f64())
    }

    /// Operations per second.
    pub(crate) fn rate(&self, id: &str) -> Option<f64> {
        Some(self.throughput(id)? * 1e9 / self.ns(id)?)
    }

    /// GB/s (10^9 bytes per second).
    pub(crate) fn gbps(&self, id: &str) -> Option<f64> {
        Some(self.throughput(id)? / self.ns(id)?)
    }
}

/// The machine table: cores, CPU, memory, kernel, rustc, and the load
/// average before and after the criterion benches (`after` defaults to
/// now).
pub(crate) fn machine(
    out: &mut String,
    load_before: Option<&str>,
    load_after: Option<&str>,
) -> anyhow::Result<()> {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let field = |name: &str| {
        cpuinfo
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_once(':'))
            .map(|(_, v)| v.trim().to_owned())
            .unwrap_or_else(|| "unknown".into())
    };
    let flags = field("flags");
    let has = |flag: &str| flags.split(' ').any(|f| f == flag);
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let mem_kib: u64 = meminfo
        .lines()
        .find(|l| l.starts_with("MemTotal:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let rustc =
        std::process::Command::new(std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into()))
            .arg("--version")
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
            .unwrap_or_else(|_| "unknown".into());
    let now = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let now = now.split_whitespace().take(3).collect::<Vec<_>>().join(" ");
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());

    writeln!(out, "### Machine\n")?;
    writeln!(out, "| | |\n|---|---|")?;
    writeln!(out, "| cores (`nproc`) | {cores} |")?;
    writeln!(out, "| CPU | {} |", field("model name"))?;
    writeln!(
        out,
        "| CPU features used by the crypto | sha_ni: {}, avx2: {}, aes: {} |",
        yes(has("sha_ni")),
        yes(has("avx2")),
        yes(has("aes"))
    )?;
    writeln!(
        out,
        "| memory | {:.1} GiB |",
        mem_kib as f64 / (1 << 20) as f64
    )?;
    writeln!(out, "| kernel | {} |", kernel.trim())?;
    writeln!(out, "| rustc | {rustc} |")?;
    writeln!(
        out,
        "| load average (1, 5, 15 min) | before: {}; after: {} |",
        load_before.unwrap_or("not recorded"),
        load_after.unwrap_or(&now)
    )?;
    writeln!(out)?;
    Ok(())
}

fn yes(b: bool) -> &'static str {
    if b { "yes" } else { "no" }
}

/// The results table: criterion's figures against their raw limits, and
/// the workload bench's (already checked by [`check_workload`]).
pub(crate) fn results(
    out: &mut String,
    c: &Criterion,
    workload: Option<&Value>,
) -> anyhow::Result<()> {
    let sha = c.gbps("sha256/sha2");
    let mut rows = vec![
        rate_row(
            c,
            "X.509-SVID mint from an SPKI (`CaManager`, 1 core)",
            "hallmark_ca/x509_svid_mint",
            "rcgen leaf from an SPKI",
            "raw/rcgen_leaf_from_spki",
        ),
        rate_row(
            c,
            "rcgen leaf from an SPKI",
            "raw/rcgen_leaf_from_spki",
            "ring P-256 sign",
            "raw/ring_p256_sign",
        ),
        rate_row(
            c,
            "JWT-SVID mint (`CaManager`, 1 core)",
            "hallmark_ca/jwt_svid_mint",
            "ring P-256 sign",
            "raw/ring_p256_sign",
        ),
        rate_row(
            c,
            "workload key pair (`CaKey::generate`)",
            "hallmark_ca/workload_key_generate",
            "ring P-256 key generation",
            "raw/ring_p256_keygen",
        ),
        rate_row(
            c,
            "ECDSA P-256 verify (a CSR check would cost this)",
            "raw/ring_p256_verify",
            "ring P-256 sign",
            "raw/ring_p256_sign",
        ),
        row(
            "trust bundle build / as JWKS / as PEM",
            format!(
                "{} / {} / {}",
                time(c.ns("hallmark_ca/bundle_build")),
                time(c.ns("hallmark_ca/bundle_jwks")),
                time(c.ns("hallmark_ca/bundle_pem"))
            ),
            "",
            String::new(),
            String::new(),
        ),
        row(
            "SHA-256, ring (for comparison)",
            gb(c.gbps("sha256/ring")),
            "sha2 SHA-256",
            gb(sha),
            percent(c.gbps("sha256/ring"), sha),
        ),
        row(
            "executable hash, cold cache (`ProcessAttestor`)",
            gb(c.gbps("exe/cold")),
            "sha2 SHA-256",
            gb(sha),
            percent(c.gbps("exe/cold"), sha),
        ),
        row(
            "executable attestation, digest cached",
            format!(
                "{} ({} effective)",
                time(c.ns("exe/cached")),
                gb(c.gbps("exe/cached"))
            ),
            "sha2 SHA-256",
            gb(sha),
            times(c.gbps("exe/cached"), sha),
        ),
        row(
            "process attestation, default catalog, digests cached",
            time(c.ns("exe/cached_all_attestors")),
            "",
            String::new(),
            String::new(),
        ),
        row(
            "app tree digest (5,000 small files), cold (`digest_tree`)",
            gb(c.gbps("app_tree/cold")),
            "sha2 SHA-256",
            gb(sha),
            percent(c.gbps("app_tree/cold"), sha),
        ),
        row(
            "app tree attestation, digests cached",
            format!(
                "{} ({} effective)",
                time(c.ns("app_tree/cached")),
                gb(c.gbps("app_tree/cached"))
            ),
            "sha2 SHA-256",
            gb(sha),
            times(c.gbps("app_tree/cached"), sha),
        ),
        row(
            "model digest (8 x 16 MiB + configs), cold (`digest_tree`)",
            gb(c.gbps("model/cold")),
            "sha2 SHA-256",
            gb(sha),
            percent(c.gbps("model/cold"), sha),
        ),
        row(
            "model attestation, digests cached",
            format!(
                "{} ({} effective)",
                time(c.ns("model/cached")),
                gb(c.gbps("model/cached"))
            ),
            "sha2 SHA-256",
            gb(sha),
            times(c.gbps("model/cached"), sha),
        ),
        row(
            "evidence digest",
            time(c.ns("evidence/evidence_digest")),
            "",
            String::new(),
            String::new(),
        ),
    ];
    for (kind, label) in [
        ("hit", "hit"),
        ("miss_unknown_code", "miss, unknown code digest"),
        ("miss_constraint", "miss, model mismatch"),
    ] {
        let big = c.ns(&format!("matcher/{kind}/10000"));
        let small = c.ns(&format!("matcher/{kind}/10"));
        let mut r = row(
            &format!("matcher {label}, 10,000 images"),
            time(big),
            "same with 10 images",
            time(small),
            times(big, small),
        );
        r.0[5] = met(big.zip(small).map(|(b, s)| b <= 2.0 * s), "flat within 2x");
        rows.push(r);
    }
    if let Some(w) = workload {
        let f = &w["figures"];
        let cached = &f["cached FetchX509SVID (request to first message)"];
        let bundles = &f["FetchX509Bundles (request to first message)"];
        let first = &f["first SVID, new process (request to first SVID)"];
        let wall = &f["child process wall time (spawn to exit)"];
        // The floor of a cached fetch is measuring the caller with every
        // digest cached; of a first fetch, that plus a key pair and a mint.
        let attest_ns = c.ns("exe/cached_all_attestors");
        // The floor of a cached fetch: the same stream without attestation
        // (FetchX509Bundles, p50 of this run) plus the attestation.
        let floor_cached = attest_ns
            .zip(bundles["p50"].as_f64())
            .map(|(a, b)| a / 1e6 + b);
        let floor_first = attest_ns
            .zip(c.ns("hallmark_ca/workload_key_generate"))
            .zip(c.ns("hallmark_ca/x509_svid_mint"))
            .map(|((a, k), m)| (a + k + m) / 1e6);
        for (label, stats, bound_name, bound, limit_ms) in [
            (
                "cached `FetchX509SVID`",
                cached,
                "`FetchX509Bundles` p50 + attestation with digests cached",
                floor_cached,
                1.0,
            ),
            (
                "first SVID, new process (binary hash cached)",
                first,
                "cached attestation + key pair + mint",
                floor_first,
                5.0,
            ),
        ] {
            for p in ["p50", "p99"] {
                let v = stats[p].as_f64();
                let detail = if p == "p50" {
                    format!("n = {}", stats["n"])
                } else {
                    format!(
                        "p90 {}, max {}",
                        ms(stats["p90"].as_f64()),
                        ms(stats["max"].as_f64())
                    )
                };
                let mut r = row(
                    &format!("{label} {p} ({detail})"),
                    ms(v),
                    bound_name,
                    ms(bound),
                    times(v, bound),
                );
                if p == "p99" {
                    r.0[5] = met(v.map(|v| v < limit_ms), &format!("p99 < {limit_ms} ms"));
                }
                rows.push(r);
            }
        }
        rows.push(row(
            "`FetchX509Bundles` p50 / p99 (same stream, no attestation)",
            format!(
                "{} / {}",
                ms(bundles["p50"].as_f64()),
                ms(bundles["p99"].as_f64())
            ),
            "",
            String::new(),
            String::new(),
        ));
        rows.push(row(
            "child process, spawn to exit (context)",
            format!(
                "p50 {} / p99 {}",
                ms(wall["p50"].as_f64()),
                ms(wall["p99"].as_f64())
            ),
            "",
            String::new(),
            String::new(),
        ));
    }

    writeln!(out, "### Results\n")?;
    writeln!(
        out,
        "Criterion figures are medians; rates are for one core. Ratios: ours / bound (for cached attestation, how many times faster than hashing the content)."
    )?;
    writeln!(out)?;
    table(
        out,
        &[
            "figure",
            "ours",
            "bounded by",
            "bound",
            "ratio",
            "target (issues 4, 6)",
        ],
        &rows,
    )?;
    writeln!(out)?;
    Ok(())
}

/// A results row: figure, ours, what bounds it, the bound, the ratio, and
/// an empty target cell.
/// A row comparing the rate of criterion bench `ours` with that of `bound`.
fn rate_row(c: &Criterion, figure: &str, ours: &str, bound_name: &str, bound: &str) -> Row {
    row(
        figure,
        rate(c.rate(ours)),
        bound_name,
        rate(c.rate(bound)),
        percent(c.rate(ours), c.rate(bound)),
    )
}

fn row(figure: &str, ours: String, bound_name: &str, bound: String, ratio: String) -> Row {
    Row(vec![
        figure.into(),
        ours,
        bound_name.into(),
        bound,
        ratio,
        String::new(),
    ])
}

/// The workload bench's figures the results table reads.
const WORKLOAD_FIGURES: [&str; 4] = [
    "cached FetchX509SVID (request to first message)",
    "FetchX509Bundles (request to first message)",
    "first SVID, new process (request to first SVID)",
    "child process wall time (spawn to exit)",
];

/// Fails unless the workload bench's JSON has every figure the results
/// table reads, each with its percentiles, so that a truncated or foreign
/// file is refused instead of written as a row of `n/a`.
pub(crate) fn check_workload(w: &Value) -> anyhow::Result<()> {
    for figure in WORKLOAD_FIGURES {
        for field in ["n", "p50", "p90", "p99", "max"] {
            if w["figures"][figure][field].as_f64().is_none() {
                anyhow::bail!("figures.\"{figure}\".{field} is missing or not a number");
            }
        }
    }
    Ok(())
}

/// A benchmark a rate is compared with, and how the table calls it.
type Versus = Option<(&'static str, &'static str)>;

/// The audit benchmarks (benches/audit.rs): id, what it measures, and the
/// benchmark its rate is compared with.
const AUDIT: [(&str, &str, Versus); 11] = [
    (
        "audit/append",
        "one `svid_minted` record appended (canonical JSON, hash chain, the store write), not yet durable",
        None,
    ),
    (
        "audit/durable_1",
        "append and wait until durable, one caller: a store flush per record",
        None,
    ),
    ("audit/durable_64", "64 callers at once: group commit", None),
    (
        "audit/record",
        "`EventSink::record` on the log: append, the durability future made but not awaited",
        None,
    ),
    (
        "audit/record_limited",
        "the same through the `RefusalLimiter` the issuer puts in front of the log (a mint is not a refusal: passed through)",
        Some(("audit/record", "the log alone")),
    ),
    (
        "limit/refusal_counted",
        "a refusal in an open interval: counted, nothing written",
        None,
    ),
    (
        "limit/node_admit",
        "the per-node minting limit's check on every mint call (token bucket, one lock), a node within its limit",
        None,
    ),
    (
        "mint/x509",
        "one X.509-SVID through `CaManager` (binding extension)",
        None,
    ),
    (
        "mint/x509_append",
        "mint + append, one caller",
        Some(("mint/x509", "mint alone")),
    ),
    (
        "mint/x509_64",
        "64 tasks on a 2-worker runtime, mint alone",
        None,
    ),
    (
        "mint/x509_audited_64",
        "same, each mint's record made durable before the task ends (as the issuer does before it answers)",
        Some(("mint/x509_64", "64 mints alone")),
    ),
];

/// The audit cost table, or `None` when criterion has none of its
/// results (the audit bench has not run).
pub(crate) fn audit(c: &Criterion) -> anyhow::Result<Option<String>> {
    if AUDIT.iter().all(|(id, _, _)| c.ns(id).is_none()) {
        return Ok(None);
    }
    let mut rows = Vec::new();
    for (id, what, versus) in AUDIT {
        let ns = c.ns(id);
        let per = c.throughput(id).unwrap_or(1.0);
        let took = if per > 1.0 {
            format!(
                "{} per {per:.0} ({} each)",
                time(ns),
                time(ns.map(|ns| ns / per))
            )
        } else {
            time(ns)
        };
        let mut rate_cell = rate(c.rate(id));
        if let Some((versus, alone)) = versus {
            write!(
                rate_cell,
                " ({} of {alone})",
                percent(c.rate(id), c.rate(versus))
            )?;
        }
        rows.push(Row(vec![format!("`{id}`"), what.into(), took, rate_cell]));
    }
    let mut out = String::new();
    writeln!(
        out,
        "Medians of `cargo bench --bench audit`, from the run whose machine and load average are in the Results section; rates in records or SVIDs per second."
    )?;
    writeln!(out)?;
    table(&mut out, &["benchmark", "what", "time", "rate"], &rows)?;
    writeln!(out)?;
    Ok(Some(out))
}

/// The raw limits the load generator's figures are bounded by, measured
/// by criterion (crypto_limits) in the same run: one core each.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct RawLimits {
    /// rcgen signing a leaf from an SPKI, per second.
    pub(crate) rcgen_leaf: Option<f64>,
    /// ring ECDSA P-256 signatures per second.
    pub(crate) p256_sign: Option<f64>,
    /// `CaManager` X.509-SVID mints per second.
    pub(crate) x509_mint: Option<f64>,
    /// `CaManager` JWT-SVID mints per second.
    pub(crate) jwt_mint: Option<f64>,
}

impl RawLimits {
    pub(crate) fn of(c: &Criterion) -> RawLimits {
        RawLimits {
            rcgen_leaf: c.rate("raw/rcgen_leaf_from_spki"),
            p256_sign: c.rate("raw/ring_p256_sign"),
            x509_mint: c.rate("hallmark_ca/x509_svid_mint"),
            jwt_mint: c.rate("hallmark_ca/jwt_svid_mint"),
        }
    }
}
