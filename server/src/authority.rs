//! The issuer's signing authority: the CA manager from `hallmark-ca`, kept
//! durable in the store, rotated on a timer, and published to whoever follows
//! the trust bundle (the node API's TLS verifier and every agent's `Sync`).

use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, SystemTime};

use tokio::sync::watch;

use hallmark_ca::bundle::{Bundle, SharedBundle};
use hallmark_ca::clock::Clock;
use hallmark_ca::id::SpiffeId;
use hallmark_ca::key::CaKey;
use hallmark_ca::manager::{CaConfig, CaManager, CaState};
use hallmark_ca::tls::SvidCertResolver;
use hallmark_ca::x509::{SvidRequest, X509Svid};

use crate::store::{Store, StoreError};

/// Lifetime of the issuer's own TLS server SVID.
const SERVER_SVID_TTL: Duration = Duration::from_secs(3600);

/// Errors from the authority.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AuthorityError {
    /// The CA refused or failed an operation.
    #[error("certificate authority: {0}")]
    Ca(#[from] hallmark_ca::CaError),
    /// A SPIFFE ID could not be formed.
    #[error("identity: {0}")]
    Id(#[from] hallmark_ca::id::IdError),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The persisted CA state could not be decoded.
    #[error("persisted CA state is unreadable: {0}")]
    State(String),
    /// An internal lock was poisoned by a panic elsewhere.
    #[error("internal lock poisoned")]
    Poisoned,
}

/// The issuer's CA, persisted and rotated.
#[derive(Debug)]
pub struct Authority {
    ca: RwLock<CaManager>,
    store: Arc<dyn Store>,
    clock: Arc<dyn Clock>,
    shared: SharedBundle,
    bundle_tx: watch::Sender<Arc<Bundle>>,
    server_id: SpiffeId,
    server_cert: Arc<SvidCertResolver>,
    /// (not_before, not_after, issuing CA certificate) of the issuer's own SVID.
    server_svid: Mutex<Option<(SystemTime, SystemTime, Vec<u8>)>>,
}

impl Authority {
    /// Loads the CA from the store, or creates and durably stores a new one,
    /// then mints the issuer's own TLS SVID.
    pub fn open(
        config: CaConfig,
        store: Arc<dyn Store>,
        clock: Arc<dyn Clock>,
    ) -> Result<Arc<Self>, AuthorityError> {
        let now = clock.now();
        let mut ca = match store.ca_state()? {
            Some(bytes) => {
                let state: CaState = serde_json::from_slice(&bytes)
                    .map_err(|e| AuthorityError::State(e.to_string()))?;
                CaManager::restore(config, state, now)?
            }
            None => {
                let ca = CaManager::generate(config, now)?;
                persist(&*store, &ca)?;
                tracing::info!(trust_domain = %ca.trust_domain(), "created a new certificate authority");
                ca
            }
        };
        if ca.rotate(now)? {
            persist(&*store, &ca)?;
        }
        let bundle = ca.bundle();
        let server_id = SpiffeId::new(ca.trust_domain(), "/hallmark/server")?;
        let (bundle_tx, _) = watch::channel(Arc::new(bundle.clone()));
        let authority = Arc::new(Self {
            ca: RwLock::new(ca),
            store,
            clock,
            shared: SharedBundle::new(bundle),
            bundle_tx,
            server_id,
            server_cert: Arc::new(SvidCertResolver::new()),
            server_svid: Mutex::new(None),
        });
        authority.refresh_server_svid(true)?;
        Ok(authority)
    }

    /// Rotates the CA if it is due, persists and publishes any change, and
    /// renews the issuer's own SVID at half-life or after a CA switch.
    /// Returns whether the bundle changed.
    pub fn tick(&self) -> Result<bool, AuthorityError> {
        let now = self.clock.now();
        let changed = {
            let mut ca = self.ca.write().map_err(|_| AuthorityError::Poisoned)?;
            let changed = ca.rotate(now)?;
            if changed {
                persist(&*self.store, &ca)?;
            }
            changed
        };
        if changed {
            let bundle = self.bundle();
            tracing::info!(sequence = bundle.sequence, "trust bundle changed");
            self.shared.store(bundle.clone());
            self.bundle_tx.send_replace(Arc::new(bundle));
        }
        self.refresh_server_svid(false)?;
        Ok(changed)
    }

    /// The current trust bundle.
    pub fn bundle(&self) -> Bundle {
        match self.ca.read() {
            Ok(ca) => ca.bundle(),
            Err(poisoned) => poisoned.into_inner().bundle(),
        }
    }

    /// The bundle as shared with the TLS verifier.
    pub fn shared_bundle(&self) -> SharedBundle {
        self.shared.clone()
    }

    /// Follows bundle changes.
    pub fn subscribe(&self) -> watch::Receiver<Arc<Bundle>> {
        self.bundle_tx.subscribe()
    }

    /// The issuer's SPIFFE ID (`spiffe://<td>/hallmark/server`).
    pub fn server_id(&self) -> &SpiffeId {
        &self.server_id
    }

    /// The TLS certificate resolver holding the issuer's own SVID.
    pub fn server_cert(&self) -> Arc<SvidCertResolver> {
        self.server_cert.clone()
    }

    /// Expiry of the active X.509 CA.
    pub fn ca_not_after(&self) -> Result<SystemTime, AuthorityError> {
        let ca = self.ca.read().map_err(|_| AuthorityError::Poisoned)?;
        Ok(ca.active_x509().not_after())
    }

    /// Mints a node (agent) SVID: not capped by the workload `max_svid_ttl`.
    pub fn mint_node_svid(
        &self,
        spiffe_id: &SpiffeId,
        public_key_der: &[u8],
        ttl: Duration,
    ) -> Result<X509Svid, AuthorityError> {
        let ca = self.ca.read().map_err(|_| AuthorityError::Poisoned)?;
        let request = SvidRequest {
            spiffe_id,
            public_key_der,
            ttl,
            dns_names: &[],
            extensions: &[],
        };
        Ok(ca.mint_node_svid(&request, self.clock.now())?)
    }

    /// Mints a workload X.509-SVID; the TTL is capped at `max_svid_ttl`.
    pub fn mint_workload_svid(
        &self,
        request: &SvidRequest<'_>,
    ) -> Result<X509Svid, AuthorityError> {
        let ca = self.ca.read().map_err(|_| AuthorityError::Poisoned)?;
        Ok(ca.mint_x509_svid(request, self.clock.now())?)
    }

    /// Mints a JWT-SVID; the TTL is capped at `max_svid_ttl`.
    pub fn mint_jwt_svid(
        &self,
        claims: &hallmark_ca::jwt::JwtSvidClaims,
    ) -> Result<hallmark_ca::jwt::JwtSvid, AuthorityError> {
        let ca = self.ca.read().map_err(|_| AuthorityError::Poisoned)?;
        Ok(ca.mint_jwt_svid(claims, self.clock.now())?)
    }

    /// The cap on every workload SVID's lifetime.
    pub fn max_svid_ttl(&self) -> Duration {
        match self.ca.read() {
            Ok(ca) => ca.config().max_svid_ttl,
            Err(poisoned) => poisoned.into_inner().config().max_svid_ttl,
        }
    }

    fn refresh_server_svid(&self, force: bool) -> Result<(), AuthorityError> {
        let now = self.clock.now();
        let active_ca = {
            let ca = self.ca.read().map_err(|_| AuthorityError::Poisoned)?;
            ca.active_x509().cert_der().to_vec()
        };
        let mut current = self
            .server_svid
            .lock()
            .map_err(|_| AuthorityError::Poisoned)?;
        let due = match &*current {
            None => true,
            Some((not_before, not_after, issuer)) => {
                let half =
                    *not_before + not_after.duration_since(*not_before).unwrap_or_default() / 2;
                now >= half || *issuer != active_ca
            }
        };
        if !(due || force) {
            return Ok(());
        }
        let key = CaKey::generate()?;
        let svid = self.mint_node_svid(&self.server_id, &key.public_key_der(), SERVER_SVID_TTL)?;
        self.server_cert
            .set(svid.cert_chain.clone(), &key.pkcs8_der())?;
        tracing::debug!(serial = %svid.serial, "issuer TLS SVID renewed");
        *current = Some((svid.not_before, svid.not_after, active_ca));
        Ok(())
    }
}

fn persist(store: &dyn Store, ca: &CaManager) -> Result<(), AuthorityError> {
    let bytes =
        serde_json::to_vec(&ca.state()).map_err(|e| AuthorityError::State(e.to_string()))?;
    store.put_ca_state(&bytes)?;
    Ok(())
}
