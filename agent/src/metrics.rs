//! The agent's Prometheus metrics and health, served on `[metrics] address`
//! (off unless configured) by [`hallmark_metrics::serve`].
//!
//! Labels are closed sets (method, SVID type, where the SVIDs came from, a
//! status code class); no SPIFFE ID, pid or path is ever a label. Every
//! series is created up front and its handle kept, so an update on the
//! Workload API's hot path is one relaxed atomic addition.
//!
//! | metric | type | labels |
//! |---|---|---|
//! | `hallmark_agent_workload_api_streams` | gauge | `method` (`fetch_x509svid`, `fetch_x509_bundles`, `fetch_jwt_bundles`, `watch_revocations`) |
//! | `hallmark_agent_svid_fetches_total` | counter | `type` (`x509`, `jwt`), `source` (`cache`, `issuer`, `stale_cache`) |
//! | `hallmark_agent_svid_fetch_errors_total` | counter | `type`, `code` (`permission_denied`, `unavailable`, `invalid_argument`, `resource_exhausted`, `unauthenticated`, `other`) |
//! | `hallmark_agent_fetch_duration_seconds` | histogram | `type` (measure + cache or mint) |
//! | `hallmark_agent_svids_expired_total` | counter | (withdrawn because they expired while the issuer was unreachable) |
//! | `hallmark_agent_sync_connected` | gauge | 1 while the `Sync` stream is up |
//! | `hallmark_agent_sync_connects_total` | counter | `Sync` streams established |
//! | `hallmark_agent_node_svid_expiry_timestamp_seconds` | gauge | |
//! | `hallmark_agent_bundle_sequence` | gauge | |
//! | `hallmark_agent_revocations_in_force` | gauge | |
//! | `hallmark_agent_ready` | gauge | 1 when `/ready` answers 200 |
//! | `hallmark_agent_build_info` | gauge | `version` |

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::{Family, MetricConstructor};
use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
use prometheus_client::metrics::info::Info;
use prometheus_client::registry::Registry;
use tokio::sync::watch;

use hallmark_ca::clock::Clock;
use hallmark_metrics::{Health, Histogram, LATENCY_BUCKETS};

use crate::daemon::AgentStatus;
use crate::revocation::RevocationSet;

type Labels = Vec<(&'static str, &'static str)>;

const TYPES: [&str; 2] = ["x509", "jwt"];
const SOURCES: [&str; 3] = ["cache", "issuer", "stale_cache"];
const CODES: [&str; 6] = [
    "permission_denied",
    "unavailable",
    "invalid_argument",
    "resource_exhausted",
    "unauthenticated",
    "other",
];

/// A Workload API method with a long-lived stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum StreamMethod {
    /// `FetchX509SVID`.
    FetchX509Svid,
    /// `FetchX509Bundles`.
    FetchX509Bundles,
    /// `FetchJWTBundles`.
    FetchJwtBundles,
    /// `hallmark.workload.v1.Revocations/WatchRevocations`.
    WatchRevocations,
}

impl StreamMethod {
    const ALL: [StreamMethod; 4] = [
        StreamMethod::FetchX509Svid,
        StreamMethod::FetchX509Bundles,
        StreamMethod::FetchJwtBundles,
        StreamMethod::WatchRevocations,
    ];

    fn as_str(self) -> &'static str {
        match self {
            StreamMethod::FetchX509Svid => "fetch_x509svid",
            StreamMethod::FetchX509Bundles => "fetch_x509_bundles",
            StreamMethod::FetchJwtBundles => "fetch_jwt_bundles",
            StreamMethod::WatchRevocations => "watch_revocations",
        }
    }

    fn index(self) -> usize {
        Self::ALL.iter().position(|m| *m == self).unwrap_or(0)
    }
}

/// Where a workload's SVIDs came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Source {
    /// Cached and before their half-life.
    Cache,
    /// Minted by the issuer for this request.
    Issuer,
    /// Cached, past their half-life but unexpired, served because the
    /// issuer could not be reached.
    StaleCache,
}

/// The agent's counters, gauges and histograms; every update is atomic.
#[derive(Debug)]
pub struct AgentMetrics {
    streams: [Gauge; 4],
    fetches: [[Counter; 3]; 2],
    errors: [[Counter; 6]; 2],
    latency: [Histogram; 2],
    expired: Counter,
    streams_family: Family<Labels, Gauge>,
    fetches_family: Family<Labels, Counter>,
    errors_family: Family<Labels, Counter>,
    latency_family: Family<Labels, Histogram, fn() -> Histogram>,
}

fn latency_histogram() -> Histogram {
    Histogram::new(LATENCY_BUCKETS)
}

fn child<M: Clone, C: MetricConstructor<M>>(family: &Family<Labels, M, C>, labels: Labels) -> M {
    family.get_or_create(&labels).clone()
}

impl Default for AgentMetrics {
    fn default() -> Self {
        Self::new()
    }
}

impl AgentMetrics {
    /// Every series, at zero.
    pub fn new() -> Self {
        let streams_family = Family::<Labels, Gauge>::default();
        let fetches_family = Family::<Labels, Counter>::default();
        let errors_family = Family::<Labels, Counter>::default();
        let latency_family: Family<Labels, Histogram, fn() -> Histogram> =
            Family::new_with_constructor(latency_histogram);
        Self {
            streams: StreamMethod::ALL
                .map(|m| child(&streams_family, vec![("method", m.as_str())])),
            fetches: TYPES
                .map(|t| SOURCES.map(|s| child(&fetches_family, vec![("type", t), ("source", s)]))),
            errors: TYPES
                .map(|t| CODES.map(|c| child(&errors_family, vec![("type", t), ("code", c)]))),
            latency: TYPES.map(|t| child(&latency_family, vec![("type", t)])),
            expired: Counter::default(),
            streams_family,
            fetches_family,
            errors_family,
            latency_family,
        }
    }

    /// Counts an open stream of `method` until the guard is dropped.
    pub fn stream(&self, method: StreamMethod) -> StreamGuard {
        let gauge = self.streams[method.index()].clone();
        gauge.inc();
        StreamGuard(gauge)
    }

    /// Open streams of `method` now.
    pub fn streams(&self, method: StreamMethod) -> i64 {
        self.streams[method.index()].get()
    }

    /// A successful fetch of `svid_type` that took `elapsed`.
    pub fn fetched(&self, svid_type: &str, source: Source, elapsed: Duration) {
        let t = type_index(svid_type);
        let s = match source {
            Source::Cache => 0,
            Source::Issuer => 1,
            Source::StaleCache => 2,
        };
        self.fetches[t][s].inc();
        self.latency[t].observe(elapsed);
    }

    /// Successful fetches of `svid_type` from `source` so far.
    pub fn fetches(&self, svid_type: &str, source: Source) -> u64 {
        let s = match source {
            Source::Cache => 0,
            Source::Issuer => 1,
            Source::StaleCache => 2,
        };
        self.fetches[type_index(svid_type)][s].get()
    }

    /// A refused or failed fetch of `svid_type`.
    pub fn failed(&self, svid_type: &str, code: tonic::Code, elapsed: Duration) {
        let c = match code {
            tonic::Code::PermissionDenied => 0,
            tonic::Code::Unavailable => 1,
            tonic::Code::InvalidArgument => 2,
            tonic::Code::ResourceExhausted => 3,
            tonic::Code::Unauthenticated => 4,
            _ => 5,
        };
        let t = type_index(svid_type);
        self.errors[t][c].inc();
        self.latency[t].observe(elapsed);
    }

    /// Cached SVIDs expired while the issuer was unreachable: withdrawn.
    pub fn expired(&self) {
        self.expired.inc();
    }

    /// A registry with every metric, plus the gauges read from the agent's
    /// status at each scrape.
    pub fn registry(&self, state: AgentState) -> Registry {
        let mut registry = Registry::with_prefix("hallmark_agent");
        registry.register(
            "workload_api_streams",
            "Workload API streams open now",
            self.streams_family.clone(),
        );
        registry.register(
            "svid_fetches",
            "SVIDs served to workloads, by where they came from",
            self.fetches_family.clone(),
        );
        registry.register(
            "svid_fetch_errors",
            "Workload SVID fetches answered with an error, by status",
            self.errors_family.clone(),
        );
        registry.register(
            "fetch_duration_seconds",
            "Time to produce a workload's SVIDs (measure, then cache or mint)",
            self.latency_family.clone(),
        );
        registry.register(
            "svids_expired",
            "Cached SVIDs withdrawn because they expired while the issuer was unreachable",
            self.expired.clone(),
        );
        registry.register(
            "build",
            "The agent's version",
            Info::new(vec![("version", env!("CARGO_PKG_VERSION"))]),
        );
        registry.register_collector(Box::new(state));
        registry
    }
}

fn type_index(svid_type: &str) -> usize {
    usize::from(svid_type == "jwt")
}

/// Decrements a stream gauge when dropped.
#[derive(Debug)]
pub struct StreamGuard(Gauge);

impl Drop for StreamGuard {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// What `/ready` and the scrape-time gauges read: the agent's status.
#[derive(Debug, Clone)]
pub struct AgentState {
    /// The agent's status.
    pub status: watch::Receiver<AgentStatus>,
    /// The revocations in force.
    pub revocations: watch::Receiver<Option<Arc<RevocationSet>>>,
    /// Time.
    pub clock: Arc<dyn Clock>,
}

impl Health for AgentState {
    /// Ready: a node SVID that is still valid, and a `Sync` stream that has
    /// delivered its snapshot (so bundle and revocations are current).
    fn ready(&self) -> Result<(), String> {
        let status = self.status.borrow();
        match status.svid_expires_at {
            None => return Err("no node SVID: the agent is not attested".into()),
            Some(not_after) if not_after <= self.clock.now() => {
                return Err("the node SVID has expired".into());
            }
            Some(_) => {}
        }
        if !status.sync_connected {
            return Err(match &status.last_error {
                Some(error) => format!("not synced with the issuer: {error}"),
                None => "not synced with the issuer yet".into(),
            });
        }
        Ok(())
    }
}

fn unix(t: SystemTime) -> i64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

impl Collector for AgentState {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
        let status = self.status.borrow().clone();
        let gauge = |encoder: &mut DescriptorEncoder<'_>, name: &str, help: &str, value: i64| {
            let metric_encoder = encoder.encode_descriptor(name, help, None, MetricType::Gauge)?;
            ConstGauge::new(value).encode(metric_encoder)
        };
        gauge(
            &mut encoder,
            "sync_connected",
            "1 while the Sync stream to the issuer is up",
            i64::from(status.sync_connected),
        )?;
        let connects = encoder.encode_descriptor(
            "sync_connects",
            "Sync streams established with the issuer",
            None,
            MetricType::Counter,
        )?;
        ConstCounter::new(status.sync_connects).encode(connects)?;
        if let Some(not_after) = status.svid_expires_at {
            gauge(
                &mut encoder,
                "node_svid_expiry_timestamp_seconds",
                "notAfter of the node SVID in use, seconds since the Unix epoch",
                unix(not_after),
            )?;
        }
        gauge(
            &mut encoder,
            "bundle_sequence",
            "Sequence number of the trust bundle in use",
            i64::try_from(status.bundle_sequence).unwrap_or(i64::MAX),
        )?;
        let in_force = self
            .revocations
            .borrow()
            .as_ref()
            .map_or(0, |set| set.iter().count());
        gauge(
            &mut encoder,
            "revocations_in_force",
            "Revocations (kills) the agent enforces now",
            i64::try_from(in_force).unwrap_or(i64::MAX),
        )?;
        drop(status);
        gauge(
            &mut encoder,
            "ready",
            "1 when the agent is ready (valid node SVID, synced)",
            i64::from(self.ready().is_ok()),
        )
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use hallmark_ca::clock::ManualClock;

    use super::*;

    #[test]
    fn ready_needs_a_valid_node_svid_and_a_synced_stream() {
        let clock = ManualClock::new(SystemTime::UNIX_EPOCH + Duration::from_secs(1_000));
        let (status, rx) = watch::channel(AgentStatus::default());
        let state = AgentState {
            status: rx,
            revocations: watch::channel(None).1,
            clock: Arc::new(clock.clone()),
        };
        assert!(state.ready().unwrap_err().contains("not attested"));
        status.send_modify(|s| {
            s.svid_expires_at = Some(SystemTime::UNIX_EPOCH + Duration::from_secs(2_000));
            s.last_error = Some("issuer unreachable".into());
        });
        assert!(
            state.ready().unwrap_err().contains("issuer unreachable"),
            "{:?}",
            state.ready()
        );
        status.send_modify(|s| s.sync_connected = true);
        assert_eq!(state.ready(), Ok(()));
        clock.advance(Duration::from_secs(1_000));
        assert!(state.ready().unwrap_err().contains("expired"));

        let metrics = AgentMetrics::new();
        let guard = metrics.stream(StreamMethod::FetchX509Svid);
        metrics.fetched("x509", Source::StaleCache, Duration::from_micros(80));
        metrics.failed("jwt", tonic::Code::Unavailable, Duration::from_millis(1));
        let registry = metrics.registry(state);
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
        for line in [
            "hallmark_agent_workload_api_streams{method=\"fetch_x509svid\"} 1",
            "hallmark_agent_svid_fetches_total{type=\"x509\",source=\"stale_cache\"} 1",
            "hallmark_agent_svid_fetch_errors_total{type=\"jwt\",code=\"unavailable\"} 1",
            "hallmark_agent_fetch_duration_seconds_count{type=\"x509\"} 1",
            "hallmark_agent_sync_connected 1",
            "hallmark_agent_ready 0",
            "hallmark_agent_build_info{version=",
        ] {
            assert!(text.contains(line), "{line} missing from\n{text}");
        }
        drop(guard);
        assert_eq!(metrics.streams(StreamMethod::FetchX509Svid), 0);
    }
}
