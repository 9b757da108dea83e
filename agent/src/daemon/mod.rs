//! The running agent: identity, renewal, and the `Sync` stream.
//!
//! Two tasks share the agent's state ([`Inner`], defined here with the
//! state transitions every task uses):
//! - the *identity* task (`identity.rs`) renews the node SVID at half-life
//!   and, when the issuer stops honouring it (evicted, banned), drops it and
//!   re-attests with x509pop if configured;
//! - the *sync* task (`sync.rs`) keeps the `Sync` stream open, applies every
//!   bundle it carries, persists it, and reconnects with jittered backoff;
//!   it applies the revocations each message carries first (`revocations.rs`,
//!   and [`crate::revocation`] for what the agent does with them).
//!
//! The Workload API reaches the issuer through `issuer.rs`.

mod identity;
mod issuer;
pub(crate) mod refusals;
mod revocations;
mod sync;
#[cfg(test)]
mod tests;

use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use rustls::ClientConfig;
use tokio::sync::{Notify, watch};
use tokio::task::JoinHandle;

use hallmark_attestors::node::x509pop::X509PopSigner;
use hallmark_ca::bundle::{Bundle, SharedBundle};
use hallmark_ca::id::SpiffeId;
use hallmark_ca::tls::SvidCertResolver;
use hallmark_proto::node::node_client::NodeClient;
use hallmark_proto::revocations::revocations_server::RevocationsServer;
use hallmark_proto::workload::spiffe_workload_api_server::SpiffeWorkloadApiServer;
use hallmark_proto::xds::envoy::service::secret::v3::secret_discovery_service_server::SecretDiscoveryServiceServer;
use tonic::transport::Channel;

use crate::attest::AttestMethod;
use crate::client::tls_config;
use crate::config::{AgentSettings, Bootstrap};
use crate::error::AgentError;
use crate::federated::FederatedBundles;
use crate::metrics::{AgentMetrics, AgentState};
use crate::persist::{DataDir, NodeSvid, load_bundle_file};
use crate::workload_api::evidence::{AttestationHints, EvidenceSource};
use crate::workload_api::service::WorkloadService;

/// How long `shutdown` waits for the tasks before aborting them.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// What the agent is doing, for health checks and tests.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AgentStatus {
    /// The agent holds a node SVID the issuer issued.
    pub attested: bool,
    /// The agent's SPIFFE ID.
    pub spiffe_id: Option<SpiffeId>,
    /// Serial of the node SVID in use.
    pub svid_serial: Option<String>,
    /// Expiry of the node SVID in use.
    pub svid_expires_at: Option<SystemTime>,
    /// Sequence of the newest bundle received.
    pub bundle_sequence: u64,
    /// Incremented whenever the federated trust domains' bundles change.
    pub federated_generation: u64,
    /// A `Sync` stream is open and has delivered its snapshot.
    pub sync_connected: bool,
    /// How many times a `Sync` stream was established.
    pub sync_connects: u64,
    /// The latest error, if the last attempt failed.
    pub last_error: Option<String>,
}

/// The node agent.
#[derive(Debug)]
pub struct Agent;

/// A running agent.
#[derive(Debug)]
pub struct AgentHandle {
    inner: Arc<Inner>,
    shutdown: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
    socket: Option<std::path::PathBuf>,
    metrics_endpoint: Option<hallmark_metrics::Endpoint>,
}

pub(crate) struct Inner {
    settings: AgentSettings,
    data: DataDir,
    bundle: SharedBundle,
    resolver: Arc<SvidCertResolver>,
    tls: Arc<ClientConfig>,
    svid: Mutex<Option<NodeSvid>>,
    x509pop: Option<Arc<X509PopSigner>>,
    status: watch::Sender<AgentStatus>,
    identity_lost: Notify,
    hints: arc_swap::ArcSwap<AttestationHints>,
    /// The kill switch's revocations in force, as last received (`None`
    /// until the agent has a set).
    revocations: watch::Sender<Option<Arc<crate::revocation::RevocationSet>>>,
    /// A mutual-TLS channel to the issuer, reused while the node SVID it was
    /// opened with is current.
    channel: tokio::sync::Mutex<Option<(String, NodeClient<Channel>)>>,
    /// Counters, gauges and latencies.
    metrics: Arc<AgentMetrics>,
    /// Workload API refusals decided here, waiting to be reported.
    refusals: refusals::RefusalReports,
    /// The federated trust domains' bundles, as last received.
    federated: arc_swap::ArcSwap<FederatedBundles>,
}

impl std::fmt::Debug for Inner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Inner")
            .field("status", &*self.status.borrow())
            .finish_non_exhaustive()
    }
}

impl Agent {
    /// Starts the agent: resumes with the persisted node SVID if it is still
    /// valid, otherwise attests (join token first, then x509pop), then runs
    /// renewal and `Sync` in the background.
    pub async fn start(settings: AgentSettings) -> Result<AgentHandle, AgentError> {
        let source: Arc<dyn EvidenceSource> =
            Arc::new(crate::workload_api::process_source::ProcessEvidence::new(
                hallmark_attestors::workload::ProcRoot::default(),
                &settings.workload,
            ));
        Self::start_with_evidence(settings, Some(source)).await
    }

    /// Starts the agent and, with an evidence source, serves the SPIFFE
    /// Workload API on `socket_path` (`None`: node identity only).
    pub async fn start_with_evidence(
        settings: AgentSettings,
        evidence: Option<Arc<dyn EvidenceSource>>,
    ) -> Result<AgentHandle, AgentError> {
        let td = settings.trust_domain.clone();
        let data = DataDir::open(&settings.data_dir)?;
        let bootstrap = match &settings.bootstrap {
            Bootstrap::Bundle(path) => Some(load_bundle_file(path, &td)?),
            Bootstrap::Insecure => {
                tracing::warn!(
                    "insecure_bootstrap is set: the first issuer to answer is trusted without verification"
                );
                None
            }
        };
        let persisted = match data.load_bundle(&td) {
            Ok(bundle) => bundle,
            Err(error) => {
                tracing::warn!(%error, "ignoring unreadable persisted bundle");
                None
            }
        };
        let initial = persisted.or(bootstrap).unwrap_or_else(|| Bundle {
            trust_domain: td.clone(),
            x509_authorities: vec![],
            jwt_authorities: vec![],
            sequence: 0,
            refresh_hint: Duration::ZERO,
        });
        let sequence = initial.sequence;
        let bundle = SharedBundle::new(initial);
        let resolver = Arc::new(SvidCertResolver::new());
        let tls = tls_config(
            bundle.clone(),
            settings.server_id.clone(),
            resolver.clone(),
            settings.clock.clone(),
        )?;
        let x509pop = match &settings.x509pop {
            None => None,
            Some(files) => {
                let read = |p: &std::path::Path| {
                    std::fs::read_to_string(p).map_err(|e| AgentError::io(p, e))
                };
                let signer =
                    X509PopSigner::from_pem(&read(&files.cert_path)?, &read(&files.key_path)?)
                        .map_err(|e| {
                            AgentError::X509Pop(format!("{}: {e}", files.cert_path.display()))
                        })?;
                Some(Arc::new(signer))
            }
        };
        let now = settings.clock.now();
        let resumed = match data.load_svid() {
            Ok(svid) => svid.filter(|s| s.usable_at(&td, now)),
            Err(error) => {
                tracing::warn!(%error, "ignoring unreadable persisted node SVID");
                None
            }
        };
        let (status, _) = watch::channel(AgentStatus {
            bundle_sequence: sequence,
            ..AgentStatus::default()
        });
        // What the last run knew is enforced until the issuer says otherwise.
        let revocations = match crate::revocation::RevocationSet::load(&settings.data_dir) {
            Ok(set) => set.map(Arc::new),
            Err(error) => {
                tracing::warn!(%error, "ignoring unreadable saved revocations");
                None
            }
        };
        let federated_path = settings.data_dir.join(crate::federated::FEDERATED_FILE);
        let federated = match crate::federated::load(&federated_path) {
            Ok(set) => set,
            Err(error) => {
                tracing::warn!(%error, "ignoring unreadable persisted federated bundles");
                FederatedBundles::new()
            }
        };
        let inner = Arc::new(Inner {
            federated: arc_swap::ArcSwap::from_pointee(federated),
            settings,
            data,
            bundle,
            resolver,
            tls,
            svid: Mutex::new(None),
            x509pop,
            status,
            identity_lost: Notify::new(),
            hints: arc_swap::ArcSwap::from_pointee(AttestationHints::default()),
            revocations: watch::channel(revocations).0,
            channel: tokio::sync::Mutex::new(None),
            metrics: Arc::new(AgentMetrics::new()),
            refusals: refusals::RefusalReports::default(),
        });
        match resumed {
            Some(svid) => {
                tracing::info!(spiffe_id = %svid.spiffe_id, serial = %svid.serial, "resuming with the persisted node SVID");
                inner.install(svid)?;
            }
            None => {
                let method = match (&inner.settings.join_token, &inner.x509pop) {
                    (Some(token), _) => AttestMethod::JoinToken(token.clone()),
                    (None, Some(signer)) => AttestMethod::X509Pop(signer.clone()),
                    (None, None) => return Err(AgentError::NoIdentity),
                };
                inner.attest_with(&method).await?;
            }
        }

        let (shutdown, shutdown_rx) = watch::channel(false);
        let metrics_endpoint = match inner.settings.metrics_address {
            None => None,
            Some(addr) => {
                let state = AgentState {
                    status: inner.status.subscribe(),
                    revocations: inner.revocations.subscribe(),
                    clock: inner.settings.clock.clone(),
                };
                let registry = Arc::new(inner.metrics.registry(state.clone()));
                let mut down = shutdown_rx.clone();
                let endpoint =
                    hallmark_metrics::serve(addr, registry, Arc::new(state), async move {
                        signalled(&mut down).await;
                    })
                    .await
                    .map_err(|e| AgentError::Metrics(format!("metrics.address {addr}: {e}")))?;
                tracing::info!(address = %endpoint.local_addr(), "serving /metrics, /live and /ready");
                Some(endpoint)
            }
        };
        let mut tasks = vec![
            tokio::spawn(inner.clone().identity_loop(shutdown_rx.clone())),
            tokio::spawn(inner.clone().sync_loop(shutdown_rx.clone())),
            tokio::spawn(inner.clone().report_loop(shutdown_rx.clone())),
        ];
        let socket = match evidence {
            None => None,
            Some(source) => {
                let path = inner.settings.socket_path.clone();
                let incoming = crate::workload_api::socket::bind(&path, &inner.settings.workload)?;
                let service = WorkloadService::new(inner.clone(), source, shutdown_rx.clone());
                let sds = crate::workload_api::sds::SdsService::new(
                    service.clone(),
                    inner.settings.sds.clone(),
                );
                let revocations = crate::workload_api::revocations::RevocationService::new(
                    inner.clone(),
                    shutdown_rx.clone(),
                );
                let mut down = shutdown_rx;
                tasks.push(tokio::spawn(async move {
                    let result = tonic::transport::Server::builder()
                        .add_service(SpiffeWorkloadApiServer::new(service))
                        .add_service(RevocationsServer::new(revocations))
                        .add_service(SecretDiscoveryServiceServer::new(sds))
                        .serve_with_incoming_shutdown(incoming, async move {
                            signalled(&mut down).await;
                        })
                        .await;
                    if let Err(error) = result {
                        tracing::error!(%error, "Workload API server failed");
                    }
                }));
                tracing::info!(socket = %path.display(), "serving the SPIFFE Workload API");
                Some(path)
            }
        };
        Ok(AgentHandle {
            inner,
            shutdown,
            tasks,
            socket,
            metrics_endpoint,
        })
    }
}

impl AgentHandle {
    /// The agent's SPIFFE ID, while it holds a node SVID.
    pub fn spiffe_id(&self) -> Option<SpiffeId> {
        self.inner.current().map(|s| s.spiffe_id)
    }

    /// Serial of the node SVID in use.
    pub fn node_svid_serial(&self) -> Option<String> {
        self.inner.current().map(|s| s.serial)
    }

    /// The current trust bundle.
    pub fn bundle(&self) -> Arc<Bundle> {
        self.inner.bundle.load()
    }

    /// The federated trust domains' bundles, as last received.
    pub fn federated_bundles(&self) -> Arc<FederatedBundles> {
        self.inner.federated()
    }

    /// The trust bundle as shared with the TLS verifier (for the Workload API).
    pub fn shared_bundle(&self) -> SharedBundle {
        self.inner.bundle.clone()
    }

    /// Follows the agent's status.
    pub fn status(&self) -> watch::Receiver<AgentStatus> {
        self.inner.status.subscribe()
    }

    /// The Workload API socket, when served.
    pub fn socket_path(&self) -> Option<&std::path::Path> {
        self.socket.as_deref()
    }

    /// The agent's metrics.
    pub fn metrics(&self) -> &Arc<AgentMetrics> {
        &self.inner.metrics
    }

    /// Where `/metrics`, `/live` and `/ready` are served, if configured.
    pub fn metrics_addr(&self) -> Option<std::net::SocketAddr> {
        self.metrics_endpoint
            .as_ref()
            .map(hallmark_metrics::Endpoint::local_addr)
    }

    /// Stops the background tasks, closes connections, removes the socket.
    pub async fn shutdown(mut self) {
        let _ = self.shutdown.send(true);
        for task in self.tasks.drain(..) {
            let abort = task.abort_handle();
            if tokio::time::timeout(SHUTDOWN_GRACE, task).await.is_err() {
                abort.abort();
            }
        }
        if let Some(path) = &self.socket {
            let _ = std::fs::remove_file(path);
        }
        if let Some(endpoint) = self.metrics_endpoint.take() {
            endpoint.stopped().await;
        }
    }
}

impl Inner {
    /// The issuer's hints for measuring workloads.
    pub(crate) fn hints(&self) -> Arc<AttestationHints> {
        self.hints.load_full()
    }

    /// The agent's clock.
    pub(crate) fn now(&self) -> SystemTime {
        self.settings.clock.now()
    }

    /// The `[workload]` settings.
    pub(crate) fn workload_settings(&self) -> &crate::config::WorkloadSettings {
        &self.settings.workload
    }

    /// Sleeps until the agent's clock reads `deadline`.
    pub(crate) async fn sleep_until(&self, deadline: SystemTime) {
        sleep_until(&*self.settings.clock, deadline).await;
    }

    /// The agent's metrics.
    /// Workload API refusals decided here, to be reported to the issuer.
    pub(crate) fn refusals(&self) -> &refusals::RefusalReports {
        &self.refusals
    }

    pub(crate) fn metrics(&self) -> &AgentMetrics {
        &self.metrics
    }

    /// The current trust bundle.
    pub(crate) fn bundle(&self) -> Arc<Bundle> {
        self.bundle.load()
    }

    /// The federated trust domains' bundles, as last received.
    pub(crate) fn federated(&self) -> Arc<FederatedBundles> {
        self.federated.load_full()
    }

    /// Replaces the federated bundles if they changed: persisted first,
    /// then served, then every Workload API stream is told.
    pub(super) fn apply_federated(&self, bundles: FederatedBundles) -> Result<(), AgentError> {
        if crate::federated::same(&self.federated(), &bundles) {
            return Ok(());
        }
        crate::federated::save(
            &self
                .settings
                .data_dir
                .join(crate::federated::FEDERATED_FILE),
            &bundles,
        )?;
        let names: Vec<String> = bundles.keys().map(|td| td.as_str().to_owned()).collect();
        self.federated.store(Arc::new(bundles));
        self.status
            .send_modify(|s| s.federated_generation = s.federated_generation.wrapping_add(1));
        tracing::info!(trust_domains = ?names, "federated bundles updated");
        Ok(())
    }

    /// Follows the agent's status (bundle sequence, identity).
    pub(crate) fn status_receiver(&self) -> watch::Receiver<AgentStatus> {
        self.status.subscribe()
    }

    pub(super) fn current(&self) -> Option<NodeSvid> {
        match self.svid.lock() {
            Ok(guard) => guard.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    pub(super) fn set_current(&self, svid: Option<NodeSvid>) {
        match self.svid.lock() {
            Ok(mut guard) => *guard = svid,
            Err(poisoned) => *poisoned.into_inner() = svid,
        }
    }

    /// Puts a node SVID in use: TLS client certificate, state, status.
    pub(super) fn install(&self, svid: NodeSvid) -> Result<(), AgentError> {
        self.resolver
            .set(svid.chain.clone(), &svid.key.pkcs8_der())?;
        self.status.send_modify(|s| {
            s.attested = true;
            s.spiffe_id = Some(svid.spiffe_id.clone());
            s.svid_serial = Some(svid.serial.clone());
            s.svid_expires_at = Some(svid.not_after);
            s.last_error = None;
        });
        self.set_current(Some(svid));
        Ok(())
    }

    /// Forgets a node SVID the issuer refused.
    pub(super) fn drop_identity(&self, reason: &str) {
        tracing::warn!(%reason, "the issuer no longer honours this agent's node SVID; dropping it");
        self.resolver.clear();
        self.set_current(None);
        if let Err(error) = self.data.remove_svid() {
            tracing::warn!(%error, "cannot remove the refused node SVID from disk");
        }
        self.status.send_modify(|s| {
            s.attested = false;
            s.svid_serial = None;
            s.svid_expires_at = None;
            s.sync_connected = false;
            s.last_error = Some(reason.to_owned());
        });
    }

    pub(super) fn record_error(&self, error: &AgentError) {
        let text = error.to_string();
        self.status.send_modify(|s| s.last_error = Some(text));
    }

    pub(super) fn apply_bundle(&self, bundle: Bundle) -> Result<(), AgentError> {
        if bundle.sequence == self.bundle.load().sequence
            && bundle.x509_authorities == self.bundle.load().x509_authorities
        {
            return Ok(());
        }
        self.data.save_bundle(&bundle)?;
        let sequence = bundle.sequence;
        self.bundle.store(bundle);
        self.status.send_modify(|s| s.bundle_sequence = sequence);
        tracing::info!(sequence, "trust bundle updated");
        Ok(())
    }
}

/// Sleeps until `clock` reads `deadline`, checking at least every second so a
/// clock that jumps (a test clock, a suspended laptop) is followed.
pub(super) async fn sleep_until(clock: &dyn hallmark_ca::clock::Clock, deadline: SystemTime) {
    loop {
        let Ok(left) = deadline.duration_since(clock.now()) else {
            return;
        };
        if left.is_zero() {
            return;
        }
        tokio::time::sleep(left.min(Duration::from_secs(1))).await;
    }
}

/// Resolves once the status satisfies `check` (`true`), or the agent is gone
/// (`false`), without holding a watch guard across an await point.
pub(super) async fn status_reaches(
    status: &mut watch::Receiver<AgentStatus>,
    check: impl Fn(&AgentStatus) -> bool,
) -> bool {
    loop {
        if check(&status.borrow_and_update()) {
            return true;
        }
        if status.changed().await.is_err() {
            return false;
        }
    }
}

/// Resolves once shutdown is signalled (or its sender is gone).
pub(crate) async fn signalled(shutdown: &mut watch::Receiver<bool>) {
    loop {
        if *shutdown.borrow_and_update() {
            return;
        }
        if shutdown.changed().await.is_err() {
            return;
        }
    }
}
