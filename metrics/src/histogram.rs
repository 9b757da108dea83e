//! A fixed-bucket latency histogram whose `observe` is three relaxed atomic
//! additions.
//!
//! `prometheus-client`'s own histogram takes a mutex on every observation;
//! this one is used on the issuance and Workload API hot paths, where many
//! tasks observe concurrently, so it keeps one atomic counter per bucket
//! and the sum in nanoseconds, and only adds them up when scraped. A scrape
//! may see an observation in `_count` but not yet in its bucket (or the
//! other way round); Prometheus tolerates that, as it does for every
//! client library's lock-free histogram.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use prometheus_client::encoding::{EncodeMetric, MetricEncoder, NoLabelSet};
use prometheus_client::metrics::{MetricType, TypedMetric};

/// Upper bounds in seconds for request latencies, from 100 µs to 10 s: a
/// cached Workload API fetch sits in the first buckets, a mint in the
/// millisecond ones, and an issuer that stalls shows in the last.
pub const LATENCY_BUCKETS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0,
];

/// A latency histogram; clones share the same counters.
#[derive(Debug, Clone)]
pub struct Histogram {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    /// Upper bounds in seconds, ascending.
    bounds: &'static [f64],
    /// Observations per bucket (not cumulative); one more than `bounds`
    /// for `+Inf`.
    buckets: Box<[AtomicU64]>,
    count: AtomicU64,
    sum_nanos: AtomicU64,
}

impl Histogram {
    /// A histogram with these upper bounds (seconds, ascending; `+Inf` is
    /// implied).
    pub fn new(bounds: &'static [f64]) -> Self {
        let buckets = (0..=bounds.len()).map(|_| AtomicU64::new(0)).collect();
        Self {
            inner: Arc::new(Inner {
                bounds,
                buckets,
                count: AtomicU64::new(0),
                sum_nanos: AtomicU64::new(0),
            }),
        }
    }

    /// Records one duration.
    pub fn observe(&self, elapsed: Duration) {
        let seconds = elapsed.as_secs_f64();
        let index = self
            .inner
            .bounds
            .iter()
            .position(|bound| seconds <= *bound)
            .unwrap_or(self.inner.bounds.len());
        if let Some(bucket) = self.inner.buckets.get(index) {
            bucket.fetch_add(1, Ordering::Relaxed);
        }
        let nanos = u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX);
        self.inner.sum_nanos.fetch_add(nanos, Ordering::Relaxed);
        self.inner.count.fetch_add(1, Ordering::Relaxed);
    }

    /// Number of observations so far.
    pub fn count(&self) -> u64 {
        self.inner.count.load(Ordering::Relaxed)
    }

    /// Sum of all observations.
    pub fn sum(&self) -> Duration {
        Duration::from_nanos(self.inner.sum_nanos.load(Ordering::Relaxed))
    }
}

impl TypedMetric for Histogram {
    const TYPE: MetricType = MetricType::Histogram;
}

impl EncodeMetric for Histogram {
    fn encode(&self, mut encoder: MetricEncoder<'_>) -> Result<(), std::fmt::Error> {
        let buckets: Vec<(f64, u64)> = self
            .inner
            .bounds
            .iter()
            .copied()
            .chain(std::iter::once(f64::INFINITY))
            .zip(self.inner.buckets.iter())
            .map(|(bound, count)| (bound, count.load(Ordering::Relaxed)))
            .collect();
        // The count shown is the buckets' total, so `_count` always equals
        // the `+Inf` bucket, as the exposition format requires.
        let count = buckets.iter().map(|(_, n)| n).sum();
        encoder.encode_histogram::<NoLabelSet>(self.sum().as_secs_f64(), count, &buckets, None)
    }

    fn metric_type(&self) -> MetricType {
        Self::TYPE
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use prometheus_client::encoding::text::encode;
    use prometheus_client::registry::Registry;

    use super::*;

    #[test]
    fn observations_land_in_cumulative_buckets_with_sum_and_count() {
        let histogram = Histogram::new(&[0.001, 0.01, 0.1]);
        let mut registry = Registry::with_prefix("t");
        registry.register("latency_seconds", "test", histogram.clone());
        histogram.observe(Duration::from_micros(500)); // <= 1 ms
        histogram.observe(Duration::from_millis(1)); // exactly on a bound
        histogram.observe(Duration::from_millis(50)); // <= 100 ms
        histogram.observe(Duration::from_secs(3)); // +Inf
        let mut text = String::new();
        encode(&mut text, &registry).unwrap();
        assert!(
            text.contains("# TYPE t_latency_seconds histogram"),
            "{text}"
        );
        assert!(text.contains("t_latency_seconds_count 4\n"), "{text}");
        assert!(text.contains("t_latency_seconds_sum 3.0515\n"), "{text}");
        assert!(
            text.contains("t_latency_seconds_bucket{le=\"0.001\"} 2\n"),
            "{text}"
        );
        assert!(
            text.contains("t_latency_seconds_bucket{le=\"0.01\"} 2\n"),
            "{text}"
        );
        assert!(
            text.contains("t_latency_seconds_bucket{le=\"0.1\"} 3\n"),
            "{text}"
        );
        assert!(
            text.contains("t_latency_seconds_bucket{le=\"+Inf\"} 4\n"),
            "{text}"
        );
        assert_eq!(histogram.count(), 4);
    }

    #[test]
    fn clones_share_counters_across_threads() {
        let histogram = Histogram::new(LATENCY_BUCKETS);
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let h = histogram.clone();
                std::thread::spawn(move || {
                    for _ in 0..1000 {
                        h.observe(Duration::from_micros(300));
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert_eq!(histogram.count(), 4000);
        assert_eq!(histogram.sum(), Duration::from_micros(300) * 4000);
    }
}
