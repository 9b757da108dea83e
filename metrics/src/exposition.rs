//! What `/metrics` writes besides the registry: the standard `process_*`
//! metrics (as every Prometheus client library exports them), and the
//! Prometheus text format 0.0.4 for scrapers that do not ask for
//! OpenMetrics (promtool before 2.43 and some agents refuse OpenMetrics'
//! `info` type and `# EOF`).

use std::fmt::Write as _;

/// The Prometheus text exposition format's content type.
pub(crate) const PROMETHEUS_TEXT: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Whether an `Accept` header asks for OpenMetrics (Prometheus 2.x sends
/// `application/openmetrics-text;version=1.0.0,...;q=0.5,...`); without
/// one, or with anything else, the Prometheus text format is served.
pub(crate) fn wants_openmetrics(accept: Option<&str>) -> bool {
    accept.is_some_and(|accept| {
        accept.split(',').any(|part| {
            let mut params = part.split(';').map(str::trim);
            let media = params.next().unwrap_or_default();
            let q = params
                .find_map(|p| p.strip_prefix("q="))
                .and_then(|q| q.parse::<f32>().ok())
                .unwrap_or(1.0);
            media.eq_ignore_ascii_case("application/openmetrics-text") && q > 0.0
        })
    })
}

/// Appends the `process_*` metrics of this process, in OpenMetrics text,
/// read from `/proc/self` (nothing is written for what cannot be read).
pub(crate) fn process_metrics(out: &mut String) {
    // Linux reports /proc times in USER_HZ, which is 100 on every
    // architecture's user ABI.
    const TICKS: f64 = 100.0;
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after `(comm)`, which may itself hold spaces: state is field 3.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map_or(Vec::new(), |(_, rest)| rest.split_whitespace().collect());
    let field = |n: usize| fields.get(n - 3).and_then(|f| f.parse::<f64>().ok());
    if let (Some(utime), Some(stime)) = (field(14), field(15)) {
        metric(
            out,
            "process_cpu_seconds",
            "counter",
            "Total user and system CPU time spent in seconds",
            "process_cpu_seconds_total",
            (utime + stime) / TICKS,
        );
    }
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let kib = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|n| n.parse::<f64>().ok())
            .map(|n| n * 1024.0)
    };
    if let Some(rss) = kib("VmRSS:") {
        metric(
            out,
            "process_resident_memory_bytes",
            "gauge",
            "Resident memory size in bytes",
            "process_resident_memory_bytes",
            rss,
        );
    }
    if let Some(size) = kib("VmSize:") {
        metric(
            out,
            "process_virtual_memory_bytes",
            "gauge",
            "Virtual memory size in bytes",
            "process_virtual_memory_bytes",
            size,
        );
    }
    if let Ok(entries) = std::fs::read_dir("/proc/self/fd") {
        metric(
            out,
            "process_open_fds",
            "gauge",
            "Number of open file descriptors",
            "process_open_fds",
            entries.count() as f64,
        );
    }
    let limits = std::fs::read_to_string("/proc/self/limits").unwrap_or_default();
    if let Some(max) = limits
        .lines()
        .find_map(|l| l.strip_prefix("Max open files"))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse::<f64>().ok())
    {
        metric(
            out,
            "process_max_fds",
            "gauge",
            "Maximum number of open file descriptors",
            "process_max_fds",
            max,
        );
    }
    let boot = std::fs::read_to_string("/proc/stat")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("btime "))
        .and_then(|n| n.trim().parse::<f64>().ok());
    if let (Some(boot), Some(start)) = (boot, field(22)) {
        metric(
            out,
            "process_start_time_seconds",
            "gauge",
            "Start time of the process since unix epoch in seconds",
            "process_start_time_seconds",
            boot + start / TICKS,
        );
    }
}

fn metric(out: &mut String, family: &str, kind: &str, help: &str, sample: &str, value: f64) {
    // Writing to a String cannot fail.
    let _ = write!(
        out,
        "# HELP {family} {help}.\n# TYPE {family} {kind}\n{sample} {value}\n"
    );
}

/// Rewrites OpenMetrics text as the Prometheus text format 0.0.4: counter
/// families are named by their `_total` sample, `info` families become
/// gauges named `<name>_info`, `# UNIT` and `# EOF` go, samples stay.
pub(crate) fn to_prometheus_text(openmetrics: &str) -> String {
    let mut out = String::with_capacity(openmetrics.len());
    let mut help: Option<(&str, &str)> = None;
    for line in openmetrics.lines() {
        if line == "# EOF" || line.starts_with("# UNIT ") {
            continue;
        }
        if let Some(rest) = line.strip_prefix("# HELP ") {
            help = Some(rest.split_once(' ').unwrap_or((rest, "")));
            continue;
        }
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').unwrap_or((rest, "untyped"));
            let (name, kind) = match kind {
                "counter" if !name.ends_with("_total") => (format!("{name}_total"), "counter"),
                "info" => (format!("{name}_info"), "gauge"),
                "stateset" => (name.to_owned(), "gauge"),
                "gaugehistogram" => (name.to_owned(), "histogram"),
                "unknown" => (name.to_owned(), "untyped"),
                other => (name.to_owned(), other),
            };
            if let Some((_, text)) = help.take() {
                let _ = writeln!(out, "# HELP {name} {text}");
            }
            let _ = writeln!(out, "# TYPE {name} {kind}");
            continue;
        }
        out.push_str(line);
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scrapers_that_ask_for_openmetrics_get_it_and_the_rest_get_prometheus_text() {
        assert!(wants_openmetrics(Some(
            "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1"
        )));
        assert!(!wants_openmetrics(None));
        assert!(!wants_openmetrics(Some("text/plain;version=0.0.4")));
        assert!(!wants_openmetrics(Some("*/*")));
        assert!(!wants_openmetrics(Some("application/openmetrics-text;q=0")));
    }

    #[test]
    fn openmetrics_is_rewritten_as_prometheus_text() {
        let openmetrics = "# HELP t_things things done.\n# TYPE t_things counter\nt_things_total 1\n# HELP t_build version.\n# TYPE t_build info\nt_build_info{version=\"0.1.0\"} 1\n# HELP t_up up.\n# TYPE t_up gauge\n# UNIT t_up seconds\nt_up 3\n# EOF\n";
        assert_eq!(
            to_prometheus_text(openmetrics),
            "# HELP t_things_total things done.\n# TYPE t_things_total counter\nt_things_total 1\n# HELP t_build_info version.\n# TYPE t_build_info gauge\nt_build_info{version=\"0.1.0\"} 1\n# HELP t_up up.\n# TYPE t_up gauge\nt_up 3\n"
        );
    }

    #[test]
    fn process_metrics_are_read_from_proc() {
        let mut out = String::new();
        process_metrics(&mut out);
        for name in [
            "process_cpu_seconds_total ",
            "process_resident_memory_bytes ",
            "process_open_fds ",
            "process_max_fds ",
            "process_start_time_seconds ",
        ] {
            assert!(out.contains(&format!("\n{name}")), "{name}: {out}");
        }
        let rss: f64 = out
            .lines()
            .find_map(|l| l.strip_prefix("process_resident_memory_bytes "))
            .unwrap()
            .parse()
            .unwrap();
        assert!(
            rss > 1_000_000.0,
            "a test process is bigger than 1 MB: {rss}"
        );
    }
}
