//! Latency samples, their percentiles, and what the run prints and writes.

use std::fmt;
use std::time::Duration;

use serde_json::{Value, json};

/// Latency samples in nanoseconds. Every loop that fills one is bounded in
/// time and count, so the vector stays small (8 bytes a sample).
#[derive(Debug, Default, Clone)]
pub(crate) struct Samples(Vec<u64>);

impl Samples {
    pub(crate) fn with_capacity(n: usize) -> Self {
        Samples(Vec::with_capacity(n))
    }

    pub(crate) fn push(&mut self, elapsed: Duration) {
        self.0
            .push(u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX));
    }

    pub(crate) fn extend(&mut self, other: Samples) {
        self.0.extend(other.0);
    }

    pub(crate) fn len(&self) -> usize {
        self.0.len()
    }

    /// Percentiles by nearest rank (p99 of 1,000 samples is the 990th).
    pub(crate) fn summary(&self) -> Summary {
        let mut sorted = self.0.clone();
        sorted.sort_unstable();
        let rank = |p: f64| -> Duration {
            if sorted.is_empty() {
                return Duration::ZERO;
            }
            let n = sorted.len() as f64;
            let index = ((p / 100.0 * n).ceil() as usize).clamp(1, sorted.len()) - 1;
            Duration::from_nanos(sorted[index])
        };
        let total: u128 = sorted.iter().map(|&n| u128::from(n)).sum();
        let mean = if sorted.is_empty() {
            Duration::ZERO
        } else {
            Duration::from_nanos(u64::try_from(total / sorted.len() as u128).unwrap_or(u64::MAX))
        };
        Summary {
            count: sorted.len(),
            p50: rank(50.0),
            p90: rank(90.0),
            p99: rank(99.0),
            max: sorted
                .last()
                .map_or(Duration::ZERO, |&n| Duration::from_nanos(n)),
            mean,
        }
    }
}

/// What a set of samples says.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Summary {
    pub(crate) count: usize,
    pub(crate) p50: Duration,
    pub(crate) p90: Duration,
    pub(crate) p99: Duration,
    pub(crate) max: Duration,
    pub(crate) mean: Duration,
}

impl Summary {
    /// Milliseconds, for JSON.
    pub(crate) fn to_json(self) -> Value {
        let ms = |d: Duration| (d.as_secs_f64() * 1e6).round() / 1e3;
        json!({
            "count": self.count,
            "p50_ms": ms(self.p50),
            "p90_ms": ms(self.p90),
            "p99_ms": ms(self.p99),
            "max_ms": ms(self.max),
            "mean_ms": ms(self.mean),
        })
    }
}

impl fmt::Display for Summary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ms = |d: Duration| d.as_secs_f64() * 1e3;
        write!(
            f,
            "p50 {:.3} ms  p90 {:.3} ms  p99 {:.3} ms  max {:.3} ms  (n = {})",
            ms(self.p50),
            ms(self.p90),
            ms(self.p99),
            ms(self.max),
            self.count
        )
    }
}

/// The 1-, 5- and 15-minute load averages, as `/proc/loadavg` has them.
pub(crate) fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "unknown".into())
}

/// Resident and peak resident memory of a process, in KiB, from
/// `/proc/<pid>/status` (`VmRSS`, `VmHWM`).
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Rss {
    pub(crate) rss_kib: u64,
    pub(crate) peak_kib: u64,
}

impl Rss {
    pub(crate) fn of(pid: u32) -> Option<Rss> {
        Rss::parse(&std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?)
    }

    pub(crate) fn of_self() -> Option<Rss> {
        Rss::parse(&std::fs::read_to_string("/proc/self/status").ok()?)
    }

    fn parse(status: &str) -> Option<Rss> {
        let field = |name: &str| -> Option<u64> {
            status
                .lines()
                .find_map(|l| l.strip_prefix(name))?
                .split_whitespace()
                .next()?
                .parse()
                .ok()
        };
        Some(Rss {
            rss_kib: field("VmRSS:")?,
            peak_kib: field("VmHWM:")?,
        })
    }

    pub(crate) fn to_json(self) -> Value {
        json!({ "rss_mib": mib(self.rss_kib), "peak_rss_mib": mib(self.peak_kib) })
    }
}

impl fmt::Display for Rss {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{:.1} MiB (peak {:.1} MiB)",
            mib(self.rss_kib),
            mib(self.peak_kib)
        )
    }
}

fn mib(kib: u64) -> f64 {
    (kib as f64 / 1024.0 * 10.0).round() / 10.0
}

/// CPU time (user + system) a process has used, from `/proc/<pid>/stat`
/// (`self` for this process).
pub(crate) fn cpu_time(pid: &str) -> Option<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the parenthesised command name; utime and stime are the
    // 14th and 15th fields of the whole line.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    // USER_HZ is 100 on Linux.
    Some(Duration::from_millis(ticks * 10))
}

/// How many file descriptors a process has open (connections included).
pub(crate) fn open_fds(pid: u32) -> Option<usize> {
    Some(std::fs::read_dir(format!("/proc/{pid}/fd")).ok()?.count())
}

/// Operations per second over `elapsed`.
pub(crate) fn rate(count: usize, elapsed: Duration) -> f64 {
    if elapsed.is_zero() {
        return 0.0;
    }
    (count as f64 / elapsed.as_secs_f64() * 10.0).round() / 10.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        let mut s = Samples::default();
        for i in 1..=1000u64 {
            s.push(Duration::from_micros(i));
        }
        let sum = s.summary();
        assert_eq!(sum.count, 1000);
        assert_eq!(sum.p50, Duration::from_micros(500));
        assert_eq!(sum.p90, Duration::from_micros(900));
        assert_eq!(sum.p99, Duration::from_micros(990));
        assert_eq!(sum.max, Duration::from_micros(1000));
    }

    #[test]
    fn empty_and_single() {
        assert_eq!(Samples::default().summary().p99, Duration::ZERO);
        let mut s = Samples::default();
        s.push(Duration::from_millis(3));
        assert_eq!(s.summary().p50, Duration::from_millis(3));
        assert_eq!(s.summary().max, Duration::from_millis(3));
    }

    #[test]
    fn own_cpu_time_is_read() {
        assert!(cpu_time("self").is_some());
    }

    #[test]
    fn status_fields_are_read() {
        let rss = Rss::parse("Name:\tx\nVmHWM:\t  2048 kB\nVmRSS:\t  1024 kB\n").unwrap();
        assert_eq!(rss.rss_kib, 1024);
        assert_eq!(rss.peak_kib, 2048);
    }
}
