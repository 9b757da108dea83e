//! Turns the results of the other benches into the tables of BENCHMARKS.md.
//!
//! Reads criterion's estimates (`target/criterion/**/new/estimates.json`,
//! the median of each benchmark), the workload bench's JSON and the load
//! generator's JSON files (`target/bench-results/loadgen/*.json`, one per
//! run), describes the machine, and replaces the marked regions of
//! BENCHMARKS.md, each between `<!-- NAME:begin ... -->` and
//! `<!-- NAME:end -->`:
//!
//! - `results` and `audit`, from criterion and the workload bench
//!   (`--only criterion`);
//! - `loadgen` and `kill`, from the load generator's files and criterion's
//!   raw limits (`--only loadgen`).
//!
//! Without `--only` it does both. A region whose inputs are all missing
//! (say, the load generator has not run) is left as it is, with a note on
//! stderr; a malformed input fails the report before anything is written.
//! Run by `benches/run.sh` after the benches:
//!
//! `cargo bench --bench report -- --workload target/bench-results/workload_api.json
//!  --load-before "0.12 0.30 0.41" --write BENCHMARKS.md`
//!
//! Without `--bench` (as `cargo test` runs a bench target) and with
//! `--list` (test discovery) it does nothing. Its unit tests run as the
//! `bench_report` test target (test_harness.rs).

// A bench crate has no public API to document.
#![allow(missing_docs)]
// `cargo check`/`clippy --all-targets` build this `harness = false` bench
// with cfg(test) but without the test harness, which drops the `#[test]`
// functions and leaves the tests' imports and helpers unused; the tests
// run from test_harness.rs (where `main` is unused instead).
#![cfg_attr(test, allow(dead_code, unused_imports))]

mod cell;
mod criterion;
mod doc;
mod loadgen;
mod run;

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, bail};
use serde_json::Value;

use criterion::{Criterion, RawLimits};

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if !args.iter().any(|a| a == "--bench") || args.iter().any(|a| a == "--list") {
        return ExitCode::SUCCESS;
    }
    match options(&args).and_then(|o| report(&o)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("report: {error:#}");
            ExitCode::FAILURE
        }
    }
}

/// Which half of benches/run.sh the report is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Half {
    Criterion,
    Loadgen,
}

#[derive(Debug, Default, PartialEq)]
struct Options {
    /// `None`: both.
    only: Option<Half>,
    workload: Option<PathBuf>,
    loadgen: Option<PathBuf>,
    load_before: Option<String>,
    load_after: Option<String>,
    write: Option<PathBuf>,
}

fn options(args: &[String]) -> anyhow::Result<Options> {
    let mut options = Options::default();
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        let mut value = || {
            it.next()
                .cloned()
                .with_context(|| format!("{arg} needs a value"))
        };
        match arg.as_str() {
            "--only" => {
                options.only = Some(match value()?.as_str() {
                    "criterion" => Half::Criterion,
                    "loadgen" => Half::Loadgen,
                    other => bail!("--only takes criterion or loadgen, not {other:?}"),
                })
            }
            "--workload" => options.workload = Some(PathBuf::from(value()?)),
            "--loadgen" => options.loadgen = Some(PathBuf::from(value()?)),
            "--load-before" => options.load_before = Some(value()?),
            "--load-after" => options.load_after = Some(value()?),
            "--write" => options.write = Some(PathBuf::from(value()?)),
            // `--bench`, and whatever cargo passes a bench.
            _ => {}
        }
    }
    Ok(options)
}

fn report(options: &Options) -> anyhow::Result<()> {
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
    let wants = |half| options.only.is_none_or(|only| only == half);

    // Every input is read and checked before anything is written.
    let mut regions: Vec<(&str, String)> = Vec::new();
    if wants(Half::Criterion) {
        let workload = match &options.workload {
            Some(path) => Some(read_workload(path)?),
            None => None,
        };
        let mut out = String::new();
        criterion::machine(
            &mut out,
            options.load_before.as_deref(),
            options.load_after.as_deref(),
        )?;
        criterion::results(&mut out, &criterion, workload.as_ref())?;
        regions.push(("results", out));
        match criterion::audit(&criterion)? {
            Some(out) => regions.push(("audit", out)),
            None => eprintln!(
                "report: no criterion results for the audit bench in {}: the audit region is left as it is",
                criterion.0.display()
            ),
        }
    }
    if wants(Half::Loadgen) {
        let dir = options
            .loadgen
            .clone()
            .unwrap_or_else(|| target.join("bench-results/loadgen"));
        let runs = run::read_dir(&dir)?;
        let raw = RawLimits::of(&criterion);
        for (name, table) in [
            ("loadgen", loadgen::load_table(&runs, raw)?),
            ("kill", loadgen::kill_table(&runs)?),
        ] {
            match table {
                Some(out) => regions.push((name, out)),
                None => eprintln!(
                    "report: no load generator results for the {name} region in {}: it is left as it is",
                    dir.display()
                ),
            }
        }
    }

    for (name, out) in &regions {
        println!("<!-- {name} -->\n{out}");
    }
    if let Some(path) = &options.write {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("read {}", path.display()))?;
        let mut updated = text.clone();
        for (name, out) in &regions {
            updated = doc::replace(&updated, name, out)
                .with_context(|| format!("in {}", path.display()))?;
        }
        if updated == text {
            eprintln!("report: {} unchanged", path.display());
        } else {
            doc::write(path, &updated)?;
            let names: Vec<&str> = regions.iter().map(|(name, _)| *name).collect();
            eprintln!("report: updated {} ({})", path.display(), names.join(", "));
        }
    }
    Ok(())
}

/// The workload bench's JSON (benches/workload_api.rs), checked.
fn read_workload(path: &Path) -> anyhow::Result<Value> {
    let bytes = std::fs::read(path).with_context(|| format!("read {}", path.display()))?;
    let value = serde_json::from_slice::<Value>(&bytes)
        .map_err(anyhow::Error::from)
        .and_then(|v| criterion::check_workload(&v).map(|()| v))
        .with_context(|| format!("{} is not a workload_api result", path.display()))?;
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(s: &str) -> Vec<String> {
        s.split_whitespace().map(String::from).collect()
    }

    #[test]
    fn options_are_parsed() {
        let o = options(&args("--bench --only loadgen --loadgen dir --write B.md")).unwrap();
        assert_eq!(o.only, Some(Half::Loadgen));
        assert_eq!(o.loadgen, Some(PathBuf::from("dir")));
        assert_eq!(o.write, Some(PathBuf::from("B.md")));
        assert_eq!(options(&args("--bench")).unwrap().only, None);
    }

    #[test]
    fn bad_options_are_refused() {
        let error = options(&args("--only everything")).unwrap_err().to_string();
        assert!(
            error.contains("--only takes criterion or loadgen"),
            "{error}"
        );
        let error = options(&args("--write")).unwrap_err().to_string();
        assert_eq!(error, "--write needs a value");
    }

    #[test]
    fn a_workload_file_without_its_figures_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("workload_api.json");
        std::fs::write(&path, r#"{"bench": "workload_api", "figures": {}}"#).unwrap();
        let error = format!("{:#}", read_workload(&path).unwrap_err());
        assert!(error.contains("is not a workload_api result"), "{error}");
        assert!(error.contains("is missing or not a number"), "{error}");
    }
}
