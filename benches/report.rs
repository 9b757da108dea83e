//! Turns the results of the other benches into the tables of BENCHMARKS.md.
//!
//! Reads criterion's estimates (`target/criterion/**/new/estimates.json`,
//! the median of each benchmark) and the workload bench's JSON, describes
//! the machine, and replaces the part of BENCHMARKS.md between
//! [`BEGIN`] and [`END`]. Run by `benches/run.sh` after the benches:
//!
//! `cargo bench --bench report -- --workload target/bench-results/workload_api.json
//!  --load-before "0.12 0.30 0.41" --write BENCHMARKS.md`
//!
//! Without `--bench` (as `cargo test` runs a bench target) and with
//! `--list` (test discovery) it does nothing.

// A bench crate has no public API to document.
#![allow(missing_docs)]

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, bail};
use serde_json::Value;

const BEGIN: &str = "<!-- results:begin (benches/run.sh regenerates this part) -->";
const END: &str = "<!-- results:end -->";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if !args.iter().any(|a| a == "--bench") || args.iter().any(|a| a == "--list") {
        return ExitCode::SUCCESS;
    }
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("report: {error:#}");
            ExitCode::FAILURE
        }
    }
}

struct Options {
    workload: Option<PathBuf>,
    load_before: Option<String>,
    write: Option<PathBuf>,
}

fn run(args: &[String]) -> anyhow::Result<()> {
    let mut options = Options {
        workload: None,
        load_before: None,
        write: None,
    };
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        let mut value = || {
            it.next()
                .cloned()
                .with_context(|| format!("{arg} needs a value"))
        };
        match arg.as_str() {
            "--workload" => options.workload = Some(PathBuf::from(value()?)),
            "--load-before" => options.load_before = Some(value()?),
            "--write" => options.write = Some(PathBuf::from(value()?)),
            _ => {}
        }
    }
    let target = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .parent()
        .context("target dir")?
        .to_owned();
    // benches/run.sh sets CRITERION_HOME; criterion's default otherwise.
    let criterion = Criterion(
        std::env::var_os("CRITERION_HOME")
            .map(PathBuf::from)
            .unwrap_or_else(|| target.join("criterion")),
    );
    let workload = match &options.workload {
        Some(path) => Some(
            serde_json::from_slice::<Value>(
                &std::fs::read(path).with_context(|| format!("read {}", path.display()))?,
            )
            .with_context(|| format!("parse {}", path.display()))?,
        ),
        None => None,
    };

    let mut out = String::new();
    machine(&mut out, options.load_before.as_deref())?;
    results(&mut out, &criterion, workload.as_ref())?;
    print!("{out}");
    if let Some(path) = &options.write {
        let doc =
            std::fs::read_to_string(path).with_context(|| format!("read {}", path.display()))?;
        let (Some(begin), Some(end)) = (doc.find(BEGIN), doc.find(END)) else {
            bail!("{} has no {BEGIN} ... {END} section", path.display());
        };
        let updated = format!("{}{BEGIN}\n{out}{}", &doc[..begin], &doc[end..]);
        std::fs::write(path, updated).with_context(|| format!("write {}", path.display()))?;
        eprintln!("report: updated {}", path.display());
    }
    Ok(())
}

fn machine(out: &mut String, load_before: Option<&str>) -> anyhow::Result<()> {
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
    let load_after = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let load_after: Vec<&str> = load_after.split_whitespace().take(3).collect();
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
        load_after.join(" ")
    )?;
    writeln!(out)?;
    Ok(())
}

fn yes(b: bool) -> &'static str {
    if b { "yes" } else { "no" }
}

/// Criterion's results under `target/criterion`.
struct Criterion(PathBuf);

impl Criterion {
    /// The median time of one iteration, in nanoseconds.
    fn ns(&self, id: &str) -> Option<f64> {
        let path = self.0.join(id).join("new/estimates.json");
        let estimates: Value = serde_json::from_slice(&std::fs::read(path).ok()?).ok()?;
        estimates["median"]["point_estimate"].as_f64()
    }

    /// The bytes or elements one iteration processes.
    fn throughput(&self, id: &str) -> Option<f64> {
        let path = self.0.join(id).join("new/benchmark.json");
        let benchmark: Value = serde_json::from_slice(&std::fs::read(path).ok()?).ok()?;
        let t = &benchmark["throughput"];
        t["Bytes"].as_f64().or_else(|| t["Elements"].as_f64())
    }

    /// Operations per second.
    fn rate(&self, id: &str) -> Option<f64> {
        Some(self.throughput(id)? * 1e9 / self.ns(id)?)
    }

    /// GB/s (10^9 bytes per second).
    fn gbps(&self, id: &str) -> Option<f64> {
        Some(self.throughput(id)? / self.ns(id)?)
    }
}

/// One row: figure, ours, what bounds it, the bound, ratio, target.
struct Row {
    figure: String,
    ours: String,
    bound_name: String,
    bound: String,
    ratio: String,
    target: String,
}

fn row(figure: &str, ours: String, bound_name: &str, bound: String, ratio: String) -> Row {
    Row {
        figure: figure.into(),
        ours,
        bound_name: bound_name.into(),
        bound,
        ratio,
        target: String::new(),
    }
}

fn rate(v: Option<f64>) -> String {
    v.map_or("n/a".into(), |v| format!("{} /s", group_digits(v)))
}

fn gb(v: Option<f64>) -> String {
    v.map_or("n/a".into(), |v| format!("{v:.2} GB/s"))
}

fn time(ns: Option<f64>) -> String {
    match ns {
        None => "n/a".into(),
        Some(ns) if ns < 1e3 => format!("{ns:.0} ns"),
        Some(ns) if ns < 1e6 => format!("{:.1} µs", ns / 1e3),
        Some(ns) => format!("{:.2} ms", ns / 1e6),
    }
}

fn ms(v: Option<f64>) -> String {
    v.map_or("n/a".into(), |v| format!("{v:.3} ms"))
}

fn percent(a: Option<f64>, b: Option<f64>) -> String {
    match (a, b) {
        (Some(a), Some(b)) if b > 0.0 => format!("{:.0}%", 100.0 * a / b),
        _ => "n/a".into(),
    }
}

fn times(a: Option<f64>, b: Option<f64>) -> String {
    match (a, b) {
        (Some(a), Some(b)) if b > 0.0 => format!("{:.2}x", a / b),
        _ => "n/a".into(),
    }
}

fn group_digits(v: f64) -> String {
    let digits = format!("{:.0}", v);
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

fn met(ok: Option<bool>, what: &str) -> String {
    match ok {
        Some(true) => format!("{what}: met"),
        Some(false) => format!("{what}: **not met**"),
        None => format!("{what}: n/a"),
    }
}

fn results(out: &mut String, c: &Criterion, workload: Option<&Value>) -> anyhow::Result<()> {
    let sha = c.gbps("sha256/sha2");
    let mut rows = vec![
        row(
            "X.509-SVID mint from an SPKI (`CaManager`, 1 core)",
            rate(c.rate("hallmark_ca/x509_svid_mint")),
            "rcgen leaf from an SPKI",
            rate(c.rate("raw/rcgen_leaf_from_spki")),
            percent(
                c.rate("hallmark_ca/x509_svid_mint"),
                c.rate("raw/rcgen_leaf_from_spki"),
            ),
        ),
        row(
            "rcgen leaf from an SPKI",
            rate(c.rate("raw/rcgen_leaf_from_spki")),
            "ring P-256 sign",
            rate(c.rate("raw/ring_p256_sign")),
            percent(
                c.rate("raw/rcgen_leaf_from_spki"),
                c.rate("raw/ring_p256_sign"),
            ),
        ),
        row(
            "JWT-SVID mint (`CaManager`, 1 core)",
            rate(c.rate("hallmark_ca/jwt_svid_mint")),
            "ring P-256 sign",
            rate(c.rate("raw/ring_p256_sign")),
            percent(
                c.rate("hallmark_ca/jwt_svid_mint"),
                c.rate("raw/ring_p256_sign"),
            ),
        ),
        row(
            "workload key pair (`CaKey::generate`)",
            rate(c.rate("hallmark_ca/workload_key_generate")),
            "ring P-256 key generation",
            rate(c.rate("raw/ring_p256_keygen")),
            percent(
                c.rate("hallmark_ca/workload_key_generate"),
                c.rate("raw/ring_p256_keygen"),
            ),
        ),
        row(
            "ECDSA P-256 verify (a CSR check would cost this)",
            rate(c.rate("raw/ring_p256_verify")),
            "ring P-256 sign",
            rate(c.rate("raw/ring_p256_sign")),
            percent(c.rate("raw/ring_p256_verify"), c.rate("raw/ring_p256_sign")),
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
        r.target = met(big.zip(small).map(|(b, s)| b <= 2.0 * s), "flat within 2x");
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
                    r.target = met(v.map(|v| v < limit_ms), &format!("p99 < {limit_ms} ms"));
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
    writeln!(
        out,
        "| figure | ours | bounded by | bound | ratio | target (issues 4, 6) |"
    )?;
    writeln!(out, "|---|---|---|---|---|---|")?;
    for r in rows {
        writeln!(
            out,
            "| {} | {} | {} | {} | {} | {} |",
            r.figure, r.ours, r.bound_name, r.bound, r.ratio, r.target
        )?;
    }
    writeln!(out)?;
    Ok(())
}
