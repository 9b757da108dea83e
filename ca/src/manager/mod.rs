//! [`CaManager`]: the trust domain's active, next and retired X.509 CAs and
//! JWT keys, rotation, and the bundle they publish.
//!
//! Rotation (call [`CaManager::rotate`] periodically, e.g. every few seconds):
//! - past half of the active authority's lifetime, the next one is prepared
//!   and published in the bundle at once, before it signs anything;
//! - past 5/6 of the lifetime (or when the active one could no longer cover a
//!   full `max_svid_ttl`), a next one prepared in an *earlier* call is
//!   activated (so it has been published for at least one rotation period);
//! - a retired X.509 CA leaves the bundle after its own `not_after` (leaves
//!   are capped at it); a retired JWT key after its deactivation plus
//!   `max_svid_ttl` (or its `not_after`, if sooner).

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use crate::bundle::{Bundle, DEFAULT_REFRESH_HINT, JwtAuthority};
use crate::error::CaError;
use crate::id::TrustDomain;
use crate::jwt::{JwtIssuer, JwtKey, JwtSvid, JwtSvidClaims};
use crate::key::CaKey;
use crate::x509::{SvidRequest, UpstreamCa, X509Authority, X509Svid};

mod state;

pub use state::{AuthorityRole, CaState, JwtKeyState, X509AuthorityState};

/// The default TTL of node (agent) SVIDs, minted with [`CaManager::mint_node_svid`].
pub const DEFAULT_NODE_SVID_TTL: Duration = Duration::from_secs(3600);

/// CA settings.
#[derive(Debug, Clone)]
pub struct CaConfig {
    /// The trust domain.
    pub trust_domain: TrustDomain,
    /// Lifetime of each X.509 CA (default 24 h).
    pub ca_ttl: Duration,
    /// Lifetime of each JWT signing key (default 24 h).
    pub jwt_key_ttl: Duration,
    /// Cap on every workload SVID's TTL, X.509 and JWT (default 300 s).
    pub max_svid_ttl: Duration,
    /// The bundle's refresh hint (default 5 min).
    pub refresh_hint: Duration,
    /// The upstream CA; `None` makes self-signed roots.
    pub upstream: Option<Arc<UpstreamCa>>,
    /// The `iss` of every JWT-SVID (the OpenID Connect issuer relying
    /// parties discover the keys from); `None` (the default) mints tokens
    /// without `iss`, as the JWT-SVID standard allows.
    pub jwt_issuer: Option<JwtIssuer>,
}

impl CaConfig {
    /// The defaults for `trust_domain`.
    pub fn new(trust_domain: TrustDomain) -> CaConfig {
        CaConfig {
            trust_domain,
            ca_ttl: Duration::from_secs(24 * 3600),
            jwt_key_ttl: Duration::from_secs(24 * 3600),
            max_svid_ttl: Duration::from_secs(300),
            refresh_hint: DEFAULT_REFRESH_HINT,
            upstream: None,
            jwt_issuer: None,
        }
    }
}

#[derive(Debug, Clone)]
struct RetiredJwt {
    key: Arc<JwtKey>,
    drop_after: SystemTime,
}

/// Owns the signing authorities of a trust domain and rotates them.
#[derive(Debug)]
pub struct CaManager {
    config: CaConfig,
    active_x509: Arc<X509Authority>,
    next_x509: Option<Arc<X509Authority>>,
    retired_x509: Vec<Arc<X509Authority>>,
    active_jwt: Arc<JwtKey>,
    next_jwt: Option<Arc<JwtKey>>,
    retired_jwt: Vec<RetiredJwt>,
    sequence: u64,
}

impl CaManager {
    /// Creates fresh authorities valid from `now`. The bundle starts at sequence 1.
    pub fn generate(config: CaConfig, now: SystemTime) -> Result<CaManager, CaError> {
        let active_x509 = Arc::new(new_x509(&config, now)?);
        let active_jwt = Arc::new(JwtKey::generate(now, config.jwt_key_ttl)?);
        Ok(CaManager {
            config,
            active_x509,
            next_x509: None,
            retired_x509: Vec::new(),
            active_jwt,
            next_jwt: None,
            retired_jwt: Vec::new(),
            sequence: 1,
        })
    }

    /// Restores from persisted state, re-checking every key against its
    /// certificate (X.509) or key id (JWT) and the trust domain.
    pub fn restore(
        config: CaConfig,
        state: CaState,
        now: SystemTime,
    ) -> Result<CaManager, CaError> {
        // `now` is part of the signature so restore can later refuse state
        // from the future; expired authorities are dropped by `rotate`.
        let _ = now;
        let mut active_x509 = None;
        let mut next_x509 = None;
        let mut retired_x509 = Vec::new();
        for entry in state.x509 {
            let cert = state::unb64("x509 cert_der", &entry.cert_der)?;
            let chain = entry
                .chain_der
                .iter()
                .map(|c| state::unb64("x509 chain_der", c))
                .collect::<Result<Vec<_>, _>>()?;
            let key = CaKey::from_pkcs8_der(&state::unb64("x509 key_pkcs8", &entry.key_pkcs8)?)?;
            let authority = Arc::new(X509Authority::from_parts(cert, key, chain)?);
            if authority.trust_domain() != &config.trust_domain {
                return Err(CaError::WrongTrustDomain {
                    expected: config.trust_domain.clone(),
                    found: authority.trust_domain().clone(),
                });
            }
            match entry.role {
                AuthorityRole::Active => set_once(&mut active_x509, authority, "active x509")?,
                AuthorityRole::Next => set_once(&mut next_x509, authority, "next x509")?,
                AuthorityRole::Retired => retired_x509.push(authority),
            }
        }
        let mut active_jwt = None;
        let mut next_jwt = None;
        let mut retired_jwt = Vec::new();
        for entry in state.jwt {
            let key = CaKey::from_pkcs8_der(&state::unb64("jwt key_pkcs8", &entry.key_pkcs8)?)?;
            if crate::jwt::kid_for(&key.public_key_der()) != entry.kid {
                return Err(CaError::KeyMismatch);
            }
            let key = Arc::new(JwtKey::from_parts(
                entry.kid,
                key,
                crate::util::from_unix_secs(entry.not_before),
                crate::util::from_unix_secs(entry.not_after),
            ));
            match entry.role {
                AuthorityRole::Active => set_once(&mut active_jwt, key, "active jwt")?,
                AuthorityRole::Next => set_once(&mut next_jwt, key, "next jwt")?,
                AuthorityRole::Retired => {
                    let drop_after = entry
                        .drop_after
                        .map_or(key.not_after(), crate::util::from_unix_secs);
                    retired_jwt.push(RetiredJwt { key, drop_after });
                }
            }
        }
        Ok(CaManager {
            active_x509: active_x509
                .ok_or_else(|| CaError::InvalidState("no active x509 authority".into()))?,
            active_jwt: active_jwt
                .ok_or_else(|| CaError::InvalidState("no active jwt key".into()))?,
            config,
            next_x509,
            retired_x509,
            next_jwt,
            retired_jwt,
            sequence: state.sequence,
        })
    }

    /// The persisted form of this manager.
    pub fn state(&self) -> CaState {
        let x509_entry = |role, a: &X509Authority| X509AuthorityState {
            role,
            cert_der: state::b64(a.cert_der()),
            chain_der: a.chain_der().iter().map(|c| state::b64(c)).collect(),
            key_pkcs8: state::b64(&a.key().pkcs8_der()),
        };
        let jwt_entry = |role, k: &JwtKey, drop_after: Option<SystemTime>| JwtKeyState {
            role,
            kid: k.kid().to_owned(),
            key_pkcs8: state::b64(&k.key().pkcs8_der()),
            not_before: crate::util::unix_secs(k.not_before()),
            not_after: crate::util::unix_secs(k.not_after()),
            drop_after: drop_after.map(crate::util::unix_secs),
        };
        let mut x509 = vec![x509_entry(AuthorityRole::Active, &self.active_x509)];
        x509.extend(
            self.next_x509
                .iter()
                .map(|a| x509_entry(AuthorityRole::Next, a)),
        );
        x509.extend(
            self.retired_x509
                .iter()
                .map(|a| x509_entry(AuthorityRole::Retired, a)),
        );
        let mut jwt = vec![jwt_entry(AuthorityRole::Active, &self.active_jwt, None)];
        jwt.extend(
            self.next_jwt
                .iter()
                .map(|k| jwt_entry(AuthorityRole::Next, k, None)),
        );
        jwt.extend(
            self.retired_jwt
                .iter()
                .map(|r| jwt_entry(AuthorityRole::Retired, &r.key, Some(r.drop_after))),
        );
        CaState {
            x509,
            jwt,
            sequence: self.sequence,
        }
    }

    /// Advances rotation to `now` (see the module docs). Returns whether
    /// anything changed (persist [`CaManager::state`] and republish the bundle
    /// then). The bundle sequence increments whenever the bundle's content changes.
    pub fn rotate(&mut self, now: SystemTime) -> Result<bool, CaError> {
        let before = self.bundle_content();
        let mut changed = false;
        let max_ttl = self.config.max_svid_ttl;

        // X.509: drop expired retired CAs, activate a prepared one, prepare the next.
        let n = self.retired_x509.len();
        self.retired_x509.retain(|a| a.not_after() > now);
        changed |= self.retired_x509.len() != n;
        let active = Arc::clone(&self.active_x509);
        if due(active.not_before(), active.not_after(), max_ttl, now)
            && let Some(next) = self.next_x509.take()
        {
            self.activate_x509(next);
            changed = true;
        }
        let active = Arc::clone(&self.active_x509);
        if self.next_x509.is_none() && past_half(active.not_before(), active.not_after(), now) {
            self.next_x509 = Some(Arc::new(new_x509(&self.config, now)?));
            changed = true;
        }
        // An active CA that can no longer sign at all is replaced at once.
        if now >= self.active_x509.not_after()
            && let Some(next) = self.next_x509.take()
        {
            self.activate_x509(next);
            changed = true;
        }

        // JWT: the same, but a retired key leaves after deactivation + max_svid_ttl.
        let n = self.retired_jwt.len();
        self.retired_jwt.retain(|r| r.drop_after > now);
        changed |= self.retired_jwt.len() != n;
        let active = Arc::clone(&self.active_jwt);
        if due(active.not_before(), active.not_after(), max_ttl, now)
            && let Some(next) = self.next_jwt.take()
        {
            self.activate_jwt(next, now);
            changed = true;
        }
        let active = Arc::clone(&self.active_jwt);
        if self.next_jwt.is_none() && past_half(active.not_before(), active.not_after(), now) {
            self.next_jwt = Some(Arc::new(JwtKey::generate(now, self.config.jwt_key_ttl)?));
            changed = true;
        }
        if now >= self.active_jwt.not_after()
            && let Some(next) = self.next_jwt.take()
        {
            self.activate_jwt(next, now);
            changed = true;
        }

        if self.bundle_content() != before {
            self.sequence += 1;
        }
        Ok(changed)
    }

    fn activate_x509(&mut self, next: Arc<X509Authority>) {
        let old = std::mem::replace(&mut self.active_x509, next);
        self.retired_x509.push(old);
    }

    fn activate_jwt(&mut self, next: Arc<JwtKey>, now: SystemTime) {
        let old = std::mem::replace(&mut self.active_jwt, next);
        let drop_after = (now + self.config.max_svid_ttl).min(old.not_after());
        self.retired_jwt.push(RetiredJwt {
            key: old,
            drop_after,
        });
    }

    /// The X.509 CA that signs now.
    pub fn active_x509(&self) -> &Arc<X509Authority> {
        &self.active_x509
    }

    /// The prepared (published, not yet signing) X.509 CA, if any.
    pub fn next_x509(&self) -> Option<&Arc<X509Authority>> {
        self.next_x509.as_ref()
    }

    /// The JWT key that signs now.
    pub fn active_jwt(&self) -> &Arc<JwtKey> {
        &self.active_jwt
    }

    /// The prepared (published, not yet signing) JWT key, if any.
    pub fn next_jwt(&self) -> Option<&Arc<JwtKey>> {
        self.next_jwt.as_ref()
    }

    /// The current bundle: roots of retired, active and next CAs (deduplicated:
    /// under an upstream CA they share one root) and their JWT keys.
    pub fn bundle(&self) -> Bundle {
        let (x509_authorities, jwt_authorities) = self.bundle_content();
        Bundle {
            trust_domain: self.config.trust_domain.clone(),
            x509_authorities,
            jwt_authorities,
            sequence: self.sequence,
            refresh_hint: self.config.refresh_hint,
        }
    }

    /// The bundle sequence number.
    pub fn sequence(&self) -> u64 {
        self.sequence
    }

    /// The trust domain.
    pub fn trust_domain(&self) -> &TrustDomain {
        &self.config.trust_domain
    }

    /// The configuration.
    pub fn config(&self) -> &CaConfig {
        &self.config
    }

    /// Mints a workload X.509-SVID with the active CA; the TTL is capped at `max_svid_ttl`.
    pub fn mint_x509_svid(
        &self,
        req: &SvidRequest<'_>,
        now: SystemTime,
    ) -> Result<X509Svid, CaError> {
        let capped = SvidRequest {
            ttl: req.ttl.min(self.config.max_svid_ttl),
            ..*req
        };
        self.active_x509.mint_svid(&capped, now)
    }

    /// Mints a node (agent) or issuer SVID with the active CA: the TTL is
    /// *not* capped at `max_svid_ttl` (see [`DEFAULT_NODE_SVID_TTL`]), only at
    /// the CA's own expiry.
    pub fn mint_node_svid(
        &self,
        req: &SvidRequest<'_>,
        now: SystemTime,
    ) -> Result<X509Svid, CaError> {
        self.active_x509.mint_svid(req, now)
    }

    /// Mints a JWT-SVID with the active key; the TTL is capped at
    /// `max_svid_ttl`, and `iss` is the configured `jwt_issuer`, if any.
    pub fn mint_jwt_svid(
        &self,
        claims: &JwtSvidClaims,
        now: SystemTime,
    ) -> Result<JwtSvid, CaError> {
        let issuer = self.config.jwt_issuer.as_ref();
        if claims.ttl > self.config.max_svid_ttl {
            let mut capped = claims.clone();
            capped.ttl = self.config.max_svid_ttl;
            return self.active_jwt.mint_issued(&capped, issuer, now);
        }
        self.active_jwt.mint_issued(claims, issuer, now)
    }

    fn bundle_content(&self) -> (Vec<Vec<u8>>, Vec<JwtAuthority>) {
        let mut roots: Vec<Vec<u8>> = Vec::new();
        let authorities = self
            .retired_x509
            .iter()
            .chain(std::iter::once(&self.active_x509))
            .chain(self.next_x509.iter());
        for a in authorities {
            if !roots.iter().any(|r| r.as_slice() == a.root_der()) {
                roots.push(a.root_der().to_vec());
            }
        }
        let keys = self
            .retired_jwt
            .iter()
            .map(|r| &r.key)
            .chain(std::iter::once(&self.active_jwt))
            .chain(self.next_jwt.iter())
            .map(|k| JwtAuthority {
                key_id: k.kid().to_owned(),
                public_key_der: k.public_key_der(),
                expires_at: Some(k.not_after()),
            })
            .collect();
        (roots, keys)
    }
}

fn new_x509(config: &CaConfig, now: SystemTime) -> Result<X509Authority, CaError> {
    let key = CaKey::generate()?;
    match &config.upstream {
        Some(upstream) => X509Authority::signed_by_upstream(
            &config.trust_domain,
            key,
            upstream,
            config.ca_ttl,
            now,
        ),
        None => X509Authority::self_signed(&config.trust_domain, key, config.ca_ttl, now),
    }
}

fn lifetime(not_before: SystemTime, not_after: SystemTime) -> Duration {
    not_after.duration_since(not_before).unwrap_or_default()
}

fn past_half(not_before: SystemTime, not_after: SystemTime, now: SystemTime) -> bool {
    now >= not_before + lifetime(not_before, not_after) / 2
}

/// Activation is due past 5/6 of the lifetime, or when the authority could no
/// longer cover a full `max_ttl`.
fn due(not_before: SystemTime, not_after: SystemTime, max_ttl: Duration, now: SystemTime) -> bool {
    let five_sixths = not_before + lifetime(not_before, not_after) / 6 * 5;
    now >= five_sixths || now + max_ttl > not_after
}

fn set_once<T>(slot: &mut Option<T>, value: T, what: &str) -> Result<(), CaError> {
    if slot.is_some() {
        return Err(CaError::InvalidState(format!("more than one {what}")));
    }
    *slot = Some(value);
    Ok(())
}
