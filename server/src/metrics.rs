//! The issuer's Prometheus metrics and health, served on `[metrics] address`
//! (off unless configured) by [`hallmark_metrics::serve`].
//!
//! Every label is a closed set known at compile time: SVID type, the kind
//! of constraint that refused a mint ([`RefusalReason`]), the node
//! attestor, the revocation kind. No SPIFFE ID, image name or free-text
//! reason is ever a label, so the number of series is fixed and nothing an
//! agent sends can grow it. Every series is created up front and the
//! handles kept, so an update on the hot path is one relaxed atomic
//! addition (no map lookup, no lock).
//!
//! | metric | type | labels |
//! |---|---|---|
//! | `hallmark_server_svids_minted_total` | counter | `type` (`x509`, `jwt`) |
//! | `hallmark_server_svids_refused_total` | counter | `type`, `reason` ([`RefusalReason`]) |
//! | `hallmark_server_mint_duration_seconds` | histogram | `type` |
//! | `hallmark_server_node_attestations_total` | counter | `attestor` (`join_token`, `x509pop`, `unknown`), `result` (`accepted`, `refused`) |
//! | `hallmark_server_kills_created_total` / `_kills_lifted_total` | counter | `kind` (`spiffe_id`, `image`, `code`, `model`, `node`) |
//! | `hallmark_server_revocations_in_force` | gauge | |
//! | `hallmark_server_images_registered` | gauge | |
//! | `hallmark_server_agents_attested` | gauge | (agents on record and not banned) |
//! | `process_*` | | the standard process metrics (CPU, resident memory, open fds, start time), unprefixed |
//! | `hallmark_server_sync_streams` | gauge | (connected agents' `Sync` streams) |
//! | `hallmark_server_ca_expiry_timestamp_seconds` | gauge | (the active X.509 CA's `notAfter`) |
//! | `hallmark_server_ready` | gauge | 1 when `/ready` answers 200 |
//! | `hallmark_server_admin_healthchecks_total` | counter | (admin `Healthcheck` calls answered; not audited) |
//! | `hallmark_server_build_info` | gauge | `version` |

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime};

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
use prometheus_client::metrics::info::Info;
use prometheus_client::registry::Registry;

use hallmark_ca::clock::Clock;
use hallmark_metrics::{Health, Histogram, LATENCY_BUCKETS};

use crate::authority::Authority;
use crate::issuance::ImageSet;
use crate::issuance::matcher::{Mismatch, NoMatch};
use crate::revocation::{RevocationKind, Revocations};

type Labels = Vec<(&'static str, &'static str)>;

/// The two workload credential types.
const SVID_TYPES: [&str; 2] = ["x509", "jwt"];
/// Node attestors, `unknown` for a refusal before the attestor is known.
const ATTESTORS: [&str; 3] = ["join_token", "x509pop", "unknown"];
const KILL_KINDS: [RevocationKind; 5] = [
    RevocationKind::SpiffeId,
    RevocationKind::Image,
    RevocationKind::Code,
    RevocationKind::Model,
    RevocationKind::Node,
];

/// Why a workload credential was refused: the `reason` label. The kind of
/// the constraint that failed, never the refusal's text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum RefusalReason {
    /// No registered image allows the executable's digest.
    CodeDigestUnknown,
    /// The image is retired or past `not_after`.
    ImageRetired,
    /// A revocation (kill) covers it.
    Revoked,
    /// The agent is not among the image's allowed nodes.
    NodeNotAllowed,
    /// The executable path differs from the image's.
    CodePathMismatch,
    /// Another uid.
    UidMismatch,
    /// Another gid.
    GidMismatch,
    /// The image binds an application tree; none was measured.
    AppTreeMissing,
    /// The application tree's digest differs.
    AppTreeMismatch,
    /// The image requires a model; none was measured.
    ModelMissing,
    /// The model's digest differs.
    ModelMismatch,
    /// A required environment variable is missing or differs.
    EnvMismatch,
    /// The interpreter's main program is not in the app tree, or is inline
    /// code the image does not allow.
    MainProgram,
    /// An environment variable that changes what the process loads is set.
    LoaderEnv,
    /// Loaded native code the image does not allow.
    LoadedCode,
    /// The model's weights are not open or mapped (`model.require_loaded`).
    ModelNotLoaded,
    /// A JWT-SVID for a SPIFFE ID the workload does not match.
    NotEntitled,
    /// Malformed request (evidence, keys, audience).
    InvalidRequest,
    /// The node exceeded its per-node minting limit.
    RateLimited,
    /// The outcome's audit record could not be written (failed closed).
    AuditUnavailable,
    /// Signing or another internal failure.
    Internal,
}

impl RefusalReason {
    const ALL: [RefusalReason; 21] = [
        RefusalReason::CodeDigestUnknown,
        RefusalReason::ImageRetired,
        RefusalReason::Revoked,
        RefusalReason::NodeNotAllowed,
        RefusalReason::CodePathMismatch,
        RefusalReason::UidMismatch,
        RefusalReason::GidMismatch,
        RefusalReason::AppTreeMissing,
        RefusalReason::AppTreeMismatch,
        RefusalReason::ModelMissing,
        RefusalReason::ModelMismatch,
        RefusalReason::EnvMismatch,
        RefusalReason::MainProgram,
        RefusalReason::LoaderEnv,
        RefusalReason::LoadedCode,
        RefusalReason::ModelNotLoaded,
        RefusalReason::NotEntitled,
        RefusalReason::InvalidRequest,
        RefusalReason::RateLimited,
        RefusalReason::AuditUnavailable,
        RefusalReason::Internal,
    ];

    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            RefusalReason::CodeDigestUnknown => "code_digest_unknown",
            RefusalReason::ImageRetired => "image_retired",
            RefusalReason::Revoked => "revoked",
            RefusalReason::NodeNotAllowed => "node_not_allowed",
            RefusalReason::CodePathMismatch => "code_path_mismatch",
            RefusalReason::UidMismatch => "uid_mismatch",
            RefusalReason::GidMismatch => "gid_mismatch",
            RefusalReason::AppTreeMissing => "app_tree_missing",
            RefusalReason::AppTreeMismatch => "app_tree_mismatch",
            RefusalReason::ModelMissing => "model_missing",
            RefusalReason::ModelMismatch => "model_mismatch",
            RefusalReason::EnvMismatch => "env_mismatch",
            RefusalReason::MainProgram => "main_program",
            RefusalReason::LoaderEnv => "loader_env",
            RefusalReason::LoadedCode => "loaded_code",
            RefusalReason::ModelNotLoaded => "model_not_loaded",
            RefusalReason::NotEntitled => "not_entitled",
            RefusalReason::InvalidRequest => "invalid_request",
            RefusalReason::RateLimited => "rate_limited",
            RefusalReason::AuditUnavailable => "audit_unavailable",
            RefusalReason::Internal => "internal",
        }
    }

    fn index(self) -> usize {
        Self::ALL.iter().position(|r| *r == self).unwrap_or(0)
    }

    /// The reason of a refusal by the matcher. With several candidate
    /// images, a revocation wins (it is what an operator watches for after
    /// a kill); otherwise the first image's (in `name@version` order).
    pub fn of_no_match(no_match: &NoMatch) -> Self {
        if no_match
            .reasons
            .iter()
            .any(|(_, why)| matches!(why, Mismatch::Revoked(_)))
        {
            return RefusalReason::Revoked;
        }
        match no_match.reasons.first() {
            None => RefusalReason::CodeDigestUnknown,
            Some((_, why)) => Self::of_mismatch(why),
        }
    }

    fn of_mismatch(mismatch: &Mismatch) -> Self {
        match mismatch {
            Mismatch::ImageRetired => RefusalReason::ImageRetired,
            Mismatch::Revoked(_) => RefusalReason::Revoked,
            Mismatch::NodeNotAllowed => RefusalReason::NodeNotAllowed,
            Mismatch::CodePathMismatch => RefusalReason::CodePathMismatch,
            Mismatch::UidMismatch { .. } => RefusalReason::UidMismatch,
            Mismatch::GidMismatch { .. } => RefusalReason::GidMismatch,
            Mismatch::AppTreeMissing => RefusalReason::AppTreeMissing,
            Mismatch::AppTreeMismatch => RefusalReason::AppTreeMismatch,
            Mismatch::ModelMissing => RefusalReason::ModelMissing,
            Mismatch::ModelMismatch => RefusalReason::ModelMismatch,
            Mismatch::EnvMismatch(_) => RefusalReason::EnvMismatch,
            Mismatch::InterpreterUnset
            | Mismatch::ProgramNotMeasured { .. }
            | Mismatch::ProgramUnknown { .. }
            | Mismatch::InlineNotAllowed { .. }
            | Mismatch::ProgramOutsideAppTree { .. }
            | Mismatch::PreloadOutsideAppTree { .. } => RefusalReason::MainProgram,
            Mismatch::LoaderEnvSet { .. } => RefusalReason::LoaderEnv,
            Mismatch::LoadedCodeNotMeasured | Mismatch::UnprotectedCode { .. } => {
                RefusalReason::LoadedCode
            }
            Mismatch::ModelLoadNotMeasured | Mismatch::ModelNotLoaded { .. } => {
                RefusalReason::ModelNotLoaded
            }
        }
    }

    /// The reason of a refusal that no constraint check made, from the
    /// status it was answered with.
    pub fn of_status(code: tonic::Code) -> Self {
        match code {
            tonic::Code::InvalidArgument => RefusalReason::InvalidRequest,
            tonic::Code::ResourceExhausted => RefusalReason::RateLimited,
            tonic::Code::PermissionDenied => RefusalReason::NotEntitled,
            tonic::Code::Unavailable => RefusalReason::AuditUnavailable,
            _ => RefusalReason::Internal,
        }
    }
}

/// The issuer's counters, gauges and histograms. Cheap to share (`Arc`);
/// every update is an atomic operation.
#[derive(Debug)]
pub struct ServerMetrics {
    minted: [Counter; 2],
    refused: [[Counter; RefusalReason::ALL.len()]; 2],
    mint_latency: [Histogram; 2],
    attestations: [[Counter; 2]; 3],
    kills_created: [Counter; 5],
    kills_lifted: [Counter; 5],
    sync_streams: Gauge,
    healthchecks: Counter,
    minted_family: Family<Labels, Counter>,
    refused_family: Family<Labels, Counter>,
    latency_family: Family<Labels, Histogram, fn() -> Histogram>,
    attestations_family: Family<Labels, Counter>,
    kills_created_family: Family<Labels, Counter>,
    kills_lifted_family: Family<Labels, Counter>,
}

fn latency_histogram() -> Histogram {
    Histogram::new(LATENCY_BUCKETS)
}

fn child<M: Clone, C>(family: &Family<Labels, M, C>, labels: Labels) -> M
where
    C: prometheus_client::metrics::family::MetricConstructor<M>,
{
    family.get_or_create(&labels).clone()
}

impl Default for ServerMetrics {
    fn default() -> Self {
        Self::new()
    }
}

impl ServerMetrics {
    /// Every series, at zero.
    pub fn new() -> Self {
        let minted_family = Family::<Labels, Counter>::default();
        let refused_family = Family::<Labels, Counter>::default();
        let latency_family: Family<Labels, Histogram, fn() -> Histogram> =
            Family::new_with_constructor(latency_histogram);
        let attestations_family = Family::<Labels, Counter>::default();
        let kills_created_family = Family::<Labels, Counter>::default();
        let kills_lifted_family = Family::<Labels, Counter>::default();
        let minted = SVID_TYPES.map(|t| child(&minted_family, vec![("type", t)]));
        let refused = SVID_TYPES.map(|t| {
            RefusalReason::ALL
                .map(|r| child(&refused_family, vec![("type", t), ("reason", r.as_str())]))
        });
        let mint_latency = SVID_TYPES.map(|t| child(&latency_family, vec![("type", t)]));
        let attestations = ATTESTORS.map(|a| {
            ["accepted", "refused"].map(|result| {
                child(
                    &attestations_family,
                    vec![("attestor", a), ("result", result)],
                )
            })
        });
        let kills_created =
            KILL_KINDS.map(|k| child(&kills_created_family, vec![("kind", k.as_str())]));
        let kills_lifted =
            KILL_KINDS.map(|k| child(&kills_lifted_family, vec![("kind", k.as_str())]));
        Self {
            minted,
            refused,
            mint_latency,
            attestations,
            kills_created,
            kills_lifted,
            sync_streams: Gauge::default(),
            healthchecks: Counter::default(),
            minted_family,
            refused_family,
            latency_family,
            attestations_family,
            kills_created_family,
            kills_lifted_family,
        }
    }

    /// `n` credentials of `svid_type` (`x509`, `jwt`) were issued.
    pub fn minted(&self, svid_type: &str, n: usize) {
        self.minted[type_index(svid_type)].inc_by(n as u64);
    }

    /// A mint of `svid_type` was refused.
    pub fn refused(&self, svid_type: &str, reason: RefusalReason) {
        self.refused[type_index(svid_type)][reason.index()].inc();
    }

    /// How long one mint call took, refused or not.
    pub fn mint_latency(&self, svid_type: &str, elapsed: Duration) {
        self.mint_latency[type_index(svid_type)].observe(elapsed);
    }

    /// A node attestation ended; `attestor` as in the audit record.
    pub fn attestation(&self, attestor: &str, accepted: bool) {
        let a = ATTESTORS
            .iter()
            .position(|known| *known == attestor)
            .unwrap_or(ATTESTORS.len() - 1);
        self.attestations[a][usize::from(!accepted)].inc();
    }

    /// A revocation of `kind` was created.
    pub fn kill_created(&self, kind: RevocationKind) {
        self.kills_created[kill_index(kind)].inc();
    }

    /// A revocation of `kind` was lifted.
    pub fn kill_lifted(&self, kind: RevocationKind) {
        self.kills_lifted[kill_index(kind)].inc();
    }

    /// Counts an open `Sync` stream until the guard is dropped.
    pub fn sync_stream(self: &Arc<Self>) -> StreamGuard {
        self.sync_streams.inc();
        StreamGuard(self.sync_streams.clone())
    }

    /// An admin `Healthcheck` was answered (not audited: probes would fill
    /// the log).
    pub fn healthcheck(&self) {
        self.healthchecks.inc();
    }

    /// Admin health checks answered so far.
    pub fn healthchecks(&self) -> u64 {
        self.healthchecks.get()
    }

    /// Connected `Sync` streams now.
    pub fn sync_streams(&self) -> i64 {
        self.sync_streams.get()
    }

    /// A registry with every metric, plus the gauges read from the
    /// issuer's state at each scrape.
    pub fn registry(&self, state: IssuerState) -> Registry {
        let mut registry = Registry::with_prefix("hallmark_server");
        registry.register(
            "svids_minted",
            "Workload SVIDs issued (delivered after their audit record was durable)",
            self.minted_family.clone(),
        );
        registry.register(
            "svids_refused",
            "Workload SVID requests refused, by the kind of constraint that failed",
            self.refused_family.clone(),
        );
        registry.register(
            "mint_duration_seconds",
            "Time to answer MintX509Svids / MintJwtSvid (match, sign, audit)",
            self.latency_family.clone(),
        );
        registry.register(
            "node_attestations",
            "Node attestations, accepted or refused",
            self.attestations_family.clone(),
        );
        registry.register(
            "kills_created",
            "Revocations created (the kill switch)",
            self.kills_created_family.clone(),
        );
        registry.register(
            "kills_lifted",
            "Revocations lifted",
            self.kills_lifted_family.clone(),
        );
        registry.register(
            "sync_streams",
            "Agents' Sync streams open now",
            self.sync_streams.clone(),
        );
        registry.register(
            "admin_healthchecks",
            "Admin API health checks answered by the issuer's own user or root (counted here, not audited)",
            self.healthchecks.clone(),
        );
        registry.register(
            "build",
            "The issuer's version",
            Info::new(vec![("version", env!("CARGO_PKG_VERSION"))]),
        );
        registry.register_collector(Box::new(state));
        registry
    }
}

fn type_index(svid_type: &str) -> usize {
    usize::from(svid_type == "jwt")
}

fn kill_index(kind: RevocationKind) -> usize {
    KILL_KINDS.iter().position(|k| *k == kind).unwrap_or(0)
}

/// Decrements the `Sync` stream gauge when dropped.
#[derive(Debug)]
pub struct StreamGuard(Gauge);

impl Drop for StreamGuard {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// What `/ready` and the scrape-time gauges read: the issuer's live state.
#[derive(Debug, Clone)]
pub struct IssuerState {
    /// Set once the store, audit log and CA are open and the listeners
    /// bound; cleared when shutdown begins.
    pub serving: Arc<AtomicBool>,
    /// The CA.
    pub authority: Arc<Authority>,
    /// The images in force.
    pub images: Arc<ImageSet>,
    /// The revocations in force.
    pub revocations: Arc<Revocations>,
    /// Time.
    pub clock: Arc<dyn Clock>,
    /// The audit log: not ready while it cannot write.
    pub audit: crate::audit::AuditLog,
    /// The store, for the agents gauge.
    pub store: Arc<dyn crate::store::Store>,
}

impl Health for IssuerState {
    fn ready(&self) -> Result<(), String> {
        if !self.serving.load(Ordering::Acquire) {
            return Err("the issuer is starting or shutting down".into());
        }
        self.audit.health()?;
        let not_after = self
            .authority
            .ca_not_after()
            .map_err(|e| format!("the CA is not usable: {e}"))?;
        if not_after <= self.clock.now() {
            return Err("the active X.509 CA has expired".into());
        }
        Ok(())
    }
}

impl Collector for IssuerState {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
        let gauge = |encoder: &mut DescriptorEncoder<'_>, name: &str, help: &str, value: i64| {
            let metric = ConstGauge::new(value);
            let metric_encoder = encoder.encode_descriptor(name, help, None, MetricType::Gauge)?;
            metric.encode(metric_encoder)
        };
        let in_force = i64::try_from(self.revocations.current().len()).unwrap_or(i64::MAX);
        gauge(
            &mut encoder,
            "revocations_in_force",
            "Revocations (kills) in force now",
            in_force,
        )?;
        let images = i64::try_from(self.images.current().len()).unwrap_or(i64::MAX);
        gauge(
            &mut encoder,
            "images_registered",
            "Gold images the issuer mints for (verified, not retired)",
            images,
        )?;
        if let Ok(nodes) = self.store.nodes() {
            let attested = nodes.iter().filter(|n| !n.banned).count();
            gauge(
                &mut encoder,
                "agents_attested",
                "Agents on record and not banned (each attested at least once)",
                i64::try_from(attested).unwrap_or(i64::MAX),
            )?;
        }
        if let Ok(not_after) = self.authority.ca_not_after() {
            let secs = not_after
                .duration_since(SystemTime::UNIX_EPOCH)
                .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
                .unwrap_or(0);
            gauge(
                &mut encoder,
                "ca_expiry_timestamp_seconds",
                "notAfter of the active X.509 CA, seconds since the Unix epoch",
                secs,
            )?;
        }
        gauge(
            &mut encoder,
            "ready",
            "1 when the issuer is ready (store open, CA loaded, serving)",
            i64::from(self.ready().is_ok()),
        )?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn refusal_reasons_are_a_closed_set_of_distinct_labels() {
        let labels: std::collections::BTreeSet<_> =
            RefusalReason::ALL.iter().map(|r| r.as_str()).collect();
        assert_eq!(labels.len(), RefusalReason::ALL.len());
        for reason in RefusalReason::ALL {
            assert_eq!(RefusalReason::ALL[reason.index()], reason);
        }
    }

    #[test]
    fn a_no_match_is_labelled_by_its_constraint_and_a_kill_wins() {
        let unknown = NoMatch {
            code_sha256: "00".repeat(32),
            reasons: vec![],
        };
        assert_eq!(
            RefusalReason::of_no_match(&unknown),
            RefusalReason::CodeDigestUnknown
        );
        let two = NoMatch {
            code_sha256: "00".repeat(32),
            reasons: vec![
                ("a@1".into(), Mismatch::ModelMismatch),
                ("b@1".into(), Mismatch::Revoked("kill 1 (image b)".into())),
            ],
        };
        assert_eq!(RefusalReason::of_no_match(&two), RefusalReason::Revoked);
        let env = NoMatch {
            code_sha256: "00".repeat(32),
            reasons: vec![("a@1".into(), Mismatch::EnvMismatch("SECRET_NAME".into()))],
        };
        assert_eq!(RefusalReason::of_no_match(&env), RefusalReason::EnvMismatch);
    }

    #[test]
    fn updates_reach_the_registered_series() {
        let metrics = Arc::new(ServerMetrics::new());
        metrics.minted("x509", 2);
        metrics.refused("jwt", RefusalReason::Revoked);
        metrics.attestation("join_token", true);
        metrics.attestation("bogus", false);
        metrics.kill_created(RevocationKind::Model);
        metrics.mint_latency("x509", Duration::from_millis(2));
        let guard = metrics.sync_stream();
        assert_eq!(metrics.sync_streams(), 1);
        let mut registry = Registry::with_prefix("hallmark_server");
        registry.register("svids_minted", "m", metrics.minted_family.clone());
        registry.register("svids_refused", "r", metrics.refused_family.clone());
        registry.register(
            "node_attestations",
            "a",
            metrics.attestations_family.clone(),
        );
        registry.register("kills_created", "k", metrics.kills_created_family.clone());
        registry.register("mint_duration_seconds", "l", metrics.latency_family.clone());
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
        for line in [
            "hallmark_server_svids_minted_total{type=\"x509\"} 2",
            "hallmark_server_svids_minted_total{type=\"jwt\"} 0",
            "hallmark_server_svids_refused_total{type=\"jwt\",reason=\"revoked\"} 1",
            "hallmark_server_svids_refused_total{type=\"x509\",reason=\"code_digest_unknown\"} 0",
            "hallmark_server_node_attestations_total{attestor=\"join_token\",result=\"accepted\"} 1",
            "hallmark_server_node_attestations_total{attestor=\"unknown\",result=\"refused\"} 1",
            "hallmark_server_kills_created_total{kind=\"model\"} 1",
            "hallmark_server_mint_duration_seconds_count{type=\"x509\"} 1",
        ] {
            assert!(text.contains(line), "{line} missing from\n{text}");
        }
        drop(guard);
        assert_eq!(metrics.sync_streams(), 0);
    }
}
