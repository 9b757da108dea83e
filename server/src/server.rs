//! The issuer daemon: opens the store, audit log and CA, serves the node API
//! on TCP and the admin API on its Unix socket, rotates the CA, signs audit
//! checkpoints, and shuts down cleanly (with a final audit checkpoint).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio::sync::{broadcast, watch};
use tokio::task::JoinHandle;

use hallmark_attestors::node::x509pop::X509PopVerifier;
use hallmark_ca::clock::Clock;
use hallmark_proto::admin::admin_server::AdminServer;
use hallmark_proto::node::node_server::NodeServer;

use crate::admin::socket::SocketError;
use crate::admin::{AdminApi, AdminApiParts, socket};
use crate::audit::{AuditError, AuditLog, Observed, Witnesses};
use crate::authority::{Authority, AuthorityError};
use crate::config::ServerSettings;
use crate::convert::unix_secs;
use crate::events::{EventSink, RefusalLimiter, SecurityEvent};
use crate::federation::Federation;
use crate::issuance::{ImagePolicy, ImageSet, load_matcher, retire_expired};
use crate::metrics::{IssuerState, ServerMetrics};
use crate::node::{NodeApi, NodeApiParts, listener};
use crate::revocation::Revocations;
use crate::store::{DataDirLock, FileAuditStore, SledStore, Store, StoreError};

/// How often the issuer checks that its audit and database files are still
/// the ones it opened, and retries a failed audit journal.
const AUDIT_UPKEEP_EVERY: Duration = Duration::from_secs(1);

/// How long shutdown waits for in-flight calls before cutting them off.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// Errors starting the issuer.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServerError {
    /// The store could not be opened.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The CA could not be loaded or created.
    #[error(transparent)]
    Authority(#[from] AuthorityError),
    /// The TLS configuration was refused.
    #[error("node API TLS configuration: {0}")]
    Tls(#[from] rustls::Error),
    /// The node API address could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// The admin socket could not be created.
    #[error(transparent)]
    AdminSocket(#[from] SocketError),
    /// The x509pop provisioning CA is unusable.
    #[error("agents.x509pop_ca: {0}")]
    X509Pop(String),
    /// The audit log could not be opened or written (the message says
    /// which file or which sequence number).
    #[error(transparent)]
    Audit(#[from] AuditError),
    /// The metrics address could not be bound.
    #[error("metrics.address {addr}: {source}")]
    Metrics {
        /// The address.
        addr: SocketAddr,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// The federation bundle endpoint's address could not be bound.
    #[error("federation.bundle_endpoint.address {addr}: {source}")]
    BundleEndpoint {
        /// The address.
        addr: SocketAddr,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// The OpenID Connect endpoint's address could not be bound.
    #[error("oidc.listen {addr}: {source}")]
    Oidc {
        /// The address.
        addr: SocketAddr,
        /// The error.
        #[source]
        source: std::io::Error,
    },
}

/// A running issuer.
#[derive(Debug)]
pub struct ServerHandle {
    node_addr: SocketAddr,
    admin_socket: PathBuf,
    authority: Arc<Authority>,
    images: Arc<ImageSet>,
    upkeep: Maintenance,
    store: Arc<SledStore>,
    audit: AuditLog,
    refusals: RefusalLimiter,
    shutdown: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
    metrics: Arc<ServerMetrics>,
    serving: Arc<AtomicBool>,
    metrics_endpoint: Option<hallmark_metrics::Endpoint>,
    oidc_endpoint: Option<hallmark_metrics::Endpoint>,
    oidc: Option<crate::oidc::OidcSettings>,
    federation: Arc<Federation>,
    bundle_endpoint: Option<hallmark_metrics::Endpoint>,
    data_dir: PathBuf,
    trust_domain: hallmark_ca::id::TrustDomain,
    /// Released last, after the store is closed.
    _lock: DataDirLock,
}

/// Starts the issuer with the system clock.
pub async fn start(settings: ServerSettings) -> Result<ServerHandle, ServerError> {
    start_with_clock(settings, Arc::new(hallmark_ca::clock::SystemClock)).await
}

/// Starts the issuer with the given clock (tests pass a manual one).
pub async fn start_with_clock(
    settings: ServerSettings,
    clock: Arc<dyn Clock>,
) -> Result<ServerHandle, ServerError> {
    start_observed(settings, clock, None).await
}

/// Starts the issuer with the given clock; every security event is told to
/// `events` once the audit log has appended it. Tests pass a sink that
/// keeps the events, or one that fails: the issuer then fails closed
/// exactly as when the audit log itself cannot write.
pub async fn start_with_events(
    settings: ServerSettings,
    clock: Arc<dyn Clock>,
    events: Arc<dyn EventSink>,
) -> Result<ServerHandle, ServerError> {
    start_observed(settings, clock, Some(events)).await
}

async fn start_observed(
    settings: ServerSettings,
    clock: Arc<dyn Clock>,
    observer: Option<Arc<dyn EventSink>>,
) -> Result<ServerHandle, ServerError> {
    // First, so that a second issuer is told who holds the directory.
    let lock = DataDirLock::acquire(&settings.data_dir)?;
    let store = Arc::new(SledStore::open(&settings.data_dir)?);
    let dyn_store: Arc<dyn Store> = store.clone();
    let audit_store = Arc::new(FileAuditStore::open(&settings.data_dir, Some(&store))?);
    let audit = AuditLog::open_in(&settings.data_dir, audit_store, clock.clone())?;
    // Before the first record: the database and the log must fit together.
    audit.anchor(store.clone())?;
    if !settings.audit_witnesses.is_empty() {
        audit.witness(Arc::new(Witnesses::new(&settings.audit_witnesses)));
    }
    let events: Arc<dyn EventSink> = match observer {
        Some(observer) => Arc::new(Observed::new(audit.clone(), observer)),
        None => Arc::new(audit.clone()),
    };
    // Refusals are counted per source and interval, not recorded one by one.
    let refusals = RefusalLimiter::new(events, clock.clone(), settings.refusal_limits);
    let events: Arc<dyn EventSink> = Arc::new(refusals.clone());
    events
        .record(SecurityEvent::IssuerStarted {
            version: env!("CARGO_PKG_VERSION"),
            audit_key_id: audit.public_key().keyid().to_owned(),
        })
        .await?;
    let mut ca_config = settings.ca.clone();
    if let Some(oidc) = &settings.oidc {
        // One source of truth for `iss`, however the settings were built.
        ca_config.jwt_issuer = Some(oidc.issuer.clone());
    }
    let authority = Authority::open(ca_config, dyn_store.clone(), clock.clone())?;
    let federation = Federation::open(
        settings.federation.clone(),
        settings.trust_domain.clone(),
        authority.clone(),
        dyn_store.clone(),
        events.clone(),
        clock.clone(),
    )
    .await?;
    let (node_events, _) = broadcast::channel(256);
    let (shutdown, shutdown_rx) = watch::channel(false);
    let x509pop = settings
        .x509pop_roots
        .clone()
        .map(X509PopVerifier::new)
        .transpose()
        .map_err(|e| ServerError::X509Pop(e.to_string()))?;

    let image_policy = Arc::new(ImagePolicy::new(
        settings.trusted_signers.clone(),
        settings.signature_policy,
        settings.trust_domain.clone(),
        settings.ca.max_svid_ttl,
    ));
    let images = Arc::new(ImageSet::default());
    images.replace(load_matcher(&*dyn_store, &image_policy)?);
    let revocations = Arc::new(Revocations::load(dyn_store.clone())?);
    let metrics = Arc::new(ServerMetrics::new());
    let node_api = NodeApi::new(NodeApiParts {
        authority: authority.clone(),
        store: dyn_store.clone(),
        clock: clock.clone(),
        events: events.clone(),
        node_events: node_events.clone(),
        trust_domain: settings.trust_domain.clone(),
        agent_svid_ttl: settings.agent_svid_ttl,
        x509pop,
        images: images.clone(),
        revocations: revocations.clone(),
        shutdown: shutdown_rx.clone(),
        metrics: metrics.clone(),
        limits: settings.node_limits,
        federated: federation.subscribe(),
    });
    let tls = listener::tls_config(&authority, clock.clone())?;
    let (node_addr, incoming) =
        listener::bind(settings.bind_address, tls)
            .await
            .map_err(|source| ServerError::Bind {
                addr: settings.bind_address,
                source,
            })?;
    let admin_socket = socket::bind(&settings.admin_socket).await?;
    let admin_api = AdminApi::new(AdminApiParts {
        authority: authority.clone(),
        store: dyn_store.clone(),
        clock: clock.clone(),
        events: events.clone(),
        node_events,
        trust_domain: settings.trust_domain.clone(),
        join_token_ttl: settings.join_token_ttl,
        owner_uid: Some(admin_socket.owner_uid),
        images: images.clone(),
        image_policy: image_policy.clone(),
        revocations: revocations.clone(),
        audit: audit.clone(),
        metrics: metrics.clone(),
        federation: federation.clone(),
    });

    let serving = Arc::new(AtomicBool::new(false));
    let metrics_endpoint = match settings.metrics_address {
        None => None,
        Some(addr) => {
            let state = IssuerState {
                serving: serving.clone(),
                authority: authority.clone(),
                images: images.clone(),
                revocations,
                clock: clock.clone(),
                audit: audit.clone(),
                store: dyn_store.clone(),
            };
            let registry = Arc::new(metrics.registry(state.clone()));
            let mut down = shutdown_rx.clone();
            let endpoint = hallmark_metrics::serve(addr, registry, Arc::new(state), async move {
                shutdown_signalled(&mut down).await;
            })
            .await
            .map_err(|source| ServerError::Metrics { addr, source })?;
            tracing::info!(address = %endpoint.local_addr(), "serving /metrics, /live and /ready");
            Some(endpoint)
        }
    };

    let oidc_endpoint = match &settings.oidc {
        None => None,
        Some(oidc) => match oidc.listen {
            None => {
                tracing::info!(
                    issuer = %oidc.issuer,
                    jwks_uri = %oidc.jwks_uri,
                    "JWT-SVIDs carry iss; the OpenID Connect documents are not served here (no oidc.listen)"
                );
                None
            }
            Some(addr) => {
                let mut down = shutdown_rx.clone();
                let endpoint =
                    crate::oidc::serve(addr, oidc, authority.shared_bundle(), async move {
                        shutdown_signalled(&mut down).await;
                    })
                    .await
                    .map_err(|source| ServerError::Oidc { addr, source })?;
                tracing::info!(
                    address = %endpoint.local_addr(),
                    issuer = %oidc.issuer,
                    tls = oidc.tls.is_some(),
                    "serving OpenID Connect discovery and JWKS"
                );
                Some(endpoint)
            }
        },
    };

    let bundle_endpoint = match &settings.federation.bundle_endpoint {
        None => None,
        Some(endpoint) => {
            let mut down = shutdown_rx.clone();
            let addr = endpoint.address;
            let served = crate::federation::endpoint::serve(endpoint, &authority, async move {
                shutdown_signalled(&mut down).await;
            })
            .await
            .map_err(|source| ServerError::BundleEndpoint { addr, source })?;
            tracing::info!(
                address = %served.local_addr(),
                profile = endpoint.profile().as_str(),
                "serving the SPIFFE bundle endpoint"
            );
            Some(served)
        }
    };

    let mut tasks = Vec::new();
    tasks.push(tokio::spawn(federation.clone().run(shutdown_rx.clone())));
    let mut down = shutdown_rx.clone();
    tasks.push(tokio::spawn(async move {
        let result = tonic::transport::Server::builder()
            .add_service(NodeServer::new(node_api))
            .serve_with_incoming_shutdown(incoming, async move {
                shutdown_signalled(&mut down).await;
            })
            .await;
        if let Err(error) = result {
            tracing::error!(%error, "node API server failed");
        }
    }));
    let mut down = shutdown_rx.clone();
    tasks.push(tokio::spawn(async move {
        let result = tonic::transport::Server::builder()
            .add_service(AdminServer::new(admin_api))
            .serve_with_incoming_shutdown(admin_socket.incoming, async move {
                shutdown_signalled(&mut down).await;
            })
            .await;
        if let Err(error) = result {
            tracing::error!(%error, "admin API server failed");
        }
    }));
    let upkeep = Maintenance {
        authority: authority.clone(),
        store: dyn_store,
        clock,
        events,
        images: images.clone(),
        image_policy,
    };
    tasks.push(tokio::spawn(refusals.clone().run(shutdown_rx.clone())));
    tasks.push(tokio::spawn(
        upkeep
            .clone()
            .run(settings.rotation_interval, shutdown_rx.clone()),
    ));
    tasks.push(tokio::spawn(
        audit
            .clone()
            .run_upkeep(AUDIT_UPKEEP_EVERY, shutdown_rx.clone()),
    ));
    tasks.push(tokio::spawn(
        audit
            .clone()
            .run_checkpoints(settings.audit_checkpoint_interval, shutdown_rx),
    ));

    serving.store(true, Ordering::Release);
    tracing::info!(
        trust_domain = %settings.trust_domain,
        node_api = %node_addr,
        admin_socket = %settings.admin_socket.display(),
        "hallmark-server is up"
    );
    Ok(ServerHandle {
        node_addr,
        admin_socket: settings.admin_socket,
        authority,
        images,
        upkeep,
        store,
        audit,
        refusals,
        shutdown,
        tasks,
        metrics,
        serving,
        metrics_endpoint,
        oidc_endpoint,
        oidc: settings.oidc,
        federation,
        bundle_endpoint,
        data_dir: settings.data_dir,
        trust_domain: settings.trust_domain,
        _lock: lock,
    })
}

/// Resolves once `shutdown` becomes `true` (or its sender is gone), without
/// holding a watch guard across an await point.
pub(crate) async fn shutdown_signalled(shutdown: &mut watch::Receiver<bool>) {
    loop {
        if *shutdown.borrow_and_update() {
            return;
        }
        if shutdown.changed().await.is_err() {
            return;
        }
    }
}

/// Periodic upkeep: CA rotation, join token clean-up, retirement of images
/// past `not_after`.
#[derive(Debug, Clone)]
struct Maintenance {
    authority: Arc<Authority>,
    store: Arc<dyn Store>,
    clock: Arc<dyn Clock>,
    events: Arc<dyn EventSink>,
    images: Arc<ImageSet>,
    image_policy: Arc<ImagePolicy>,
}

impl Maintenance {
    async fn run(self, every: Duration, mut shutdown: watch::Receiver<bool>) {
        let mut ticker = tokio::time::interval(every);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = ticker.tick() => {}
                () = shutdown_signalled(&mut shutdown) => return,
            }
            self.once();
        }
    }

    /// One round of upkeep.
    fn once(&self) {
        if let Err(error) = self.authority.tick() {
            tracing::error!(%error, "CA rotation failed; will retry");
        }
        let now = self.clock.now();
        match self.store.prune_join_tokens(unix_secs(now)) {
            Ok(0) => {}
            Ok(n) => tracing::debug!(pruned = n, "expired join tokens removed"),
            Err(error) => tracing::warn!(%error, "join token clean-up failed"),
        }
        match retire_expired(&*self.store, &self.image_policy, now) {
            Ok(retired) if retired.is_empty() => {}
            Ok(retired) => {
                for record in retired {
                    let reason = record
                        .retired
                        .map(|r| r.reason)
                        .unwrap_or_else(|| "not_after passed".into());
                    let image = format!("{}@{}", record.name, record.version);
                    // Appended now, in order; nobody waits for an answer,
                    // so only a failure to make it durable is reported.
                    let recorded = self.events.record(SecurityEvent::ImageRetired {
                        image: image.clone(),
                        reason,
                        uid: None,
                    });
                    tokio::spawn(async move {
                        if let Err(error) = recorded.await {
                            tracing::error!(%image, %error, "automatic retirement not audited");
                        }
                    });
                }
                match load_matcher(&*self.store, &self.image_policy) {
                    Ok(matcher) => self.images.replace(matcher),
                    Err(error) => tracing::error!(%error, "cannot reload images"),
                }
            }
            Err(error) => tracing::warn!(%error, "automatic image retirement failed"),
        }
    }
}

impl ServerHandle {
    /// The node API's bound address.
    pub fn node_addr(&self) -> SocketAddr {
        self.node_addr
    }

    /// The admin socket path.
    pub fn admin_socket(&self) -> &std::path::Path {
        &self.admin_socket
    }

    /// The CA (tests inspect the bundle and force rotation through it).
    pub fn authority(&self) -> &Arc<Authority> {
        &self.authority
    }

    /// Runs one round of upkeep now (rotation, clean-up, retirement), as the
    /// timer would; tests use it with a manual clock.
    pub fn run_maintenance(&self) {
        self.upkeep.once();
    }

    /// The images the issuer mints for.
    pub fn images(&self) -> &Arc<ImageSet> {
        &self.images
    }

    /// The audit log.
    pub fn audit(&self) -> &AuditLog {
        &self.audit
    }

    /// The issuer's metrics.
    pub fn metrics(&self) -> &Arc<ServerMetrics> {
        &self.metrics
    }

    /// Where `/metrics`, `/live` and `/ready` are served, if configured.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics_endpoint
            .as_ref()
            .map(hallmark_metrics::Endpoint::local_addr)
    }

    /// Where the OpenID Connect discovery document and JWKS are served, if
    /// `oidc.listen` is configured.
    pub fn oidc_addr(&self) -> Option<SocketAddr> {
        self.oidc_endpoint
            .as_ref()
            .map(hallmark_metrics::Endpoint::local_addr)
    }

    /// Where the SPIFFE bundle endpoint is served, if configured.
    pub fn bundle_endpoint_addr(&self) -> Option<SocketAddr> {
        self.bundle_endpoint
            .as_ref()
            .map(hallmark_metrics::Endpoint::local_addr)
    }

    /// The federated trust domains and their bundles.
    pub fn federation(&self) -> &Arc<Federation> {
        &self.federation
    }

    /// Applies the settings that can change without a restart (`SIGHUP`):
    /// the trusted signers and the signature policy. Every stored image is
    /// verified again with them (an image whose signer was removed stops
    /// minting, as after a restart), the reload is audited, and a
    /// checkpoint is signed. Settings that need a restart are named in
    /// the returned list and left as they are.
    pub async fn reload(&self, settings: &ServerSettings) -> Result<Vec<String>, ServerError> {
        let upkeep = &self.upkeep;
        upkeep
            .image_policy
            .replace(settings.trusted_signers.clone(), settings.signature_policy);
        let matcher = load_matcher(&*upkeep.store, &upkeep.image_policy)?;
        let minting = matcher.len();
        self.images.replace(matcher);
        let mut ignored = Vec::new();
        if settings.trust_domain != self.trust_domain {
            ignored.push("trust_domain".to_owned());
        }
        if settings.data_dir != self.data_dir {
            ignored.push("data_dir".to_owned());
        }
        if settings.admin_socket != self.admin_socket {
            ignored.push("admin_socket".to_owned());
        }
        let oidc_same = match (&settings.oidc, &self.oidc) {
            (None, None) => true,
            (Some(new), Some(old)) => new.same_as(old),
            _ => false,
        };
        if !oidc_same {
            ignored.push("oidc".to_owned());
        }
        let federation_same = settings.federation.same_as(self.federation.settings());
        if !federation_same {
            ignored.push("federation".to_owned());
        }
        // Same files: read them again (a renewed certificate is served
        // from the next handshake on).
        let oidc_cert = self
            .oidc
            .as_ref()
            .filter(|_| oidc_same)
            .and_then(|o| o.tls.as_ref())
            .map(|t| ("oidc", t.certificate.clone()));
        let endpoint_cert = match self.federation.settings().bundle_endpoint.as_ref() {
            Some(crate::federation::BundleEndpointSettings {
                tls: crate::federation::EndpointTls::Web { certificate, .. },
                ..
            }) if federation_same => Some(("federation.bundle_endpoint", certificate.clone())),
            _ => None,
        };
        for (section, certificate) in oidc_cert.into_iter().chain(endpoint_cert) {
            match certificate.reload() {
                Ok(true) => {
                    tracing::info!(section, "SIGHUP: serving the renewed certificate")
                }
                Ok(false) => {}
                Err(error) => {
                    tracing::error!(section, %error, "SIGHUP: the certificate was not reloaded; the one in use stays")
                }
            }
        }
        upkeep
            .events
            .record(SecurityEvent::ConfigReloaded {
                signers: settings
                    .trusted_signers
                    .keyids()
                    .map(str::to_owned)
                    .collect(),
                images_minting: minting as u64,
                needs_restart: ignored.clone(),
            })
            .await?;
        self.audit.checkpoint().await?;
        Ok(ignored)
    }

    /// Stops serving: long-lived streams end with `Unavailable`, in-flight
    /// calls get a grace period, the admin socket is removed, the counts of
    /// refusals still being aggregated, an `issuer_stopping` record and a
    /// checkpoint covering them are written,
    /// and the store is flushed and closed before this returns.
    pub async fn shutdown(mut self) {
        // Not ready from now on: a load balancer stops sending new work.
        self.serving.store(false, Ordering::Release);
        let _ = self.shutdown.send(true);
        self.audit.stop_followers();
        for task in self.tasks.drain(..) {
            let abort = task.abort_handle();
            if tokio::time::timeout(SHUTDOWN_GRACE, task).await.is_err() {
                tracing::warn!("in-flight calls did not finish in time; cutting them off");
                abort.abort();
            }
        }
        let _ = std::fs::remove_file(&self.admin_socket);
        if let Some(endpoint) = self.metrics_endpoint.take() {
            endpoint.stopped().await;
        }
        if let Some(endpoint) = self.oidc_endpoint.take() {
            endpoint.stopped().await;
        }
        if let Some(endpoint) = self.bundle_endpoint.take() {
            endpoint.stopped().await;
        }
        // The counts of refusals still open, before the last record.
        if let Err(error) = self.refusals.close().await {
            tracing::error!(target: "hallmark::audit", %error, "suppressed refusal counts not written at shutdown");
        }
        let stopping = self.upkeep.events.record(SecurityEvent::IssuerStopping {
            version: env!("CARGO_PKG_VERSION"),
        });
        match stopping.await {
            Ok(()) => {
                if let Err(error) = self.audit.checkpoint().await {
                    tracing::error!(target: "hallmark::audit", %error, "shutdown audit checkpoint failed");
                }
            }
            Err(error) => {
                tracing::error!(target: "hallmark::audit", %error, "shutdown audit record not written");
            }
        }
        let store = self.store.clone();
        let ServerHandle {
            authority,
            images,
            upkeep,
            store: handle_store,
            audit,
            refusals,
            federation,
            ..
        } = self;
        drop((
            authority,
            images,
            upkeep,
            handle_store,
            audit,
            refusals,
            federation,
        ));
        // Wait for short-lived tasks (attestations) to drop their references,
        // so that the database is closed when this returns.
        for _ in 0..100 {
            if Arc::strong_count(&store) == 1 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        if let Err(error) = store.flush_and_close() {
            tracing::warn!(%error, "store flush on shutdown failed");
        }
        tracing::info!("hallmark-server stopped");
    }
}
