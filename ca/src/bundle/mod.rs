//! Trust bundles: the X.509 roots and JWT public keys of a trust domain, in
//! the SPIFFE bundle (JWKS) format and as PEM, and [`SharedBundle`], the
//! swappable holder TLS verifiers read on every handshake.

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwap;

use crate::id::{SpiffeId, TrustDomain};
use crate::util::{parse_cert, uri_sans};

mod jwks;

/// The refresh hint used when a bundle does not carry one (SPIFFE suggests five minutes).
pub const DEFAULT_REFRESH_HINT: Duration = Duration::from_secs(300);

/// The trust bundle of one trust domain.
#[derive(Clone, PartialEq, Eq)]
pub struct Bundle {
    /// The trust domain the bundle is for.
    pub trust_domain: TrustDomain,
    /// X.509 trust anchors (DER root certificates).
    pub x509_authorities: Vec<Vec<u8>>,
    /// JWT-SVID signing keys.
    pub jwt_authorities: Vec<JwtAuthority>,
    /// Incremented on every change (`spiffe_sequence`).
    pub sequence: u64,
    /// How often consumers should refresh (`spiffe_refresh_hint`, whole seconds).
    pub refresh_hint: Duration,
}

/// One JWT-SVID signing key in a bundle.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JwtAuthority {
    /// The key id (`kid`).
    pub key_id: String,
    /// The public key (SubjectPublicKeyInfo DER).
    pub public_key_der: Vec<u8>,
    /// When the key expires, if known. Not carried in JWKS (the format has no
    /// such member), so bundles parsed from JWKS have `None`.
    pub expires_at: Option<SystemTime>,
}

/// Why a bundle could not be parsed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BundleError {
    /// The document is not JSON of the expected shape.
    #[error("bundle is not valid json")]
    Json(#[source] serde_json::Error),
    /// The document has no `keys` array.
    #[error("bundle has no \"keys\" array")]
    MissingKeys,
    /// A member has the wrong JSON type.
    #[error("bundle member {0:?} has the wrong type")]
    WrongType(&'static str),
    /// An `x509-svid` key does not hold exactly one `x5c` certificate.
    #[error("x509-svid key must have exactly one x5c certificate")]
    BadX5c,
    /// A certificate could not be decoded or parsed.
    #[error("invalid certificate in bundle: {0}")]
    InvalidCertificate(String),
    /// A `jwt-svid` key has no `kid`.
    #[error("jwt-svid key has no kid")]
    MissingKeyId,
    /// A `jwt-svid` key has a type or curve this crate does not support.
    #[error("unsupported jwk: {0}")]
    UnsupportedKey(String),
    /// A JWK member is missing or malformed.
    #[error("invalid jwk member {0:?}")]
    InvalidJwk(&'static str),
    /// The PEM input could not be decoded.
    #[error("invalid pem: {0}")]
    InvalidPem(String),
    /// The PEM input holds no certificate.
    #[error("pem bundle holds no certificate")]
    EmptyPem,
    /// An X.509 authority names another trust domain in its URI SAN
    /// (`spiffe://<trust domain>`): the bundle is not for this trust domain.
    #[error("x509-svid authority {index} is a CA of trust domain {found}, not {expected}")]
    WrongTrustDomain {
        /// The authority's position among the bundle's X.509 authorities.
        index: usize,
        /// The trust domain the bundle was fetched for.
        expected: String,
        /// The trust domain the authority names.
        found: String,
    },
    /// The bundle holds neither X.509 nor JWT authorities.
    #[error("bundle holds no x509-svid or jwt-svid keys")]
    Empty,
}

impl Bundle {
    /// An empty bundle for `td` (sequence 0, default refresh hint).
    pub fn new(trust_domain: TrustDomain) -> Bundle {
        Bundle {
            trust_domain,
            x509_authorities: Vec::new(),
            jwt_authorities: Vec::new(),
            sequence: 0,
            refresh_hint: DEFAULT_REFRESH_HINT,
        }
    }

    /// All X.509 authorities as concatenated PEM `CERTIFICATE` blocks.
    pub fn to_pem(&self) -> String {
        let blocks: Vec<pem::Pem> = self
            .x509_authorities
            .iter()
            .map(|der| pem::Pem::new("CERTIFICATE", der.clone()))
            .collect();
        pem::encode_many_config(
            &blocks,
            pem::EncodeConfig::new().set_line_ending(pem::LineEnding::LF),
        )
    }

    /// All X.509 authorities as concatenated DER (the Workload API's `bundle` fields).
    pub fn x509_der_concat(&self) -> Vec<u8> {
        self.x509_authorities.concat()
    }

    /// Parses a PEM bundle (X.509 authorities only; sequence 0, default refresh hint).
    pub fn from_pem(trust_domain: TrustDomain, pem_text: &str) -> Result<Bundle, BundleError> {
        let blocks =
            pem::parse_many(pem_text).map_err(|e| BundleError::InvalidPem(e.to_string()))?;
        let mut bundle = Bundle::new(trust_domain);
        for block in blocks.into_iter().filter(|b| b.tag() == "CERTIFICATE") {
            let der = block.into_contents();
            parse_cert(&der).map_err(BundleError::InvalidCertificate)?;
            bundle.x509_authorities.push(der);
        }
        if bundle.x509_authorities.is_empty() {
            return Err(BundleError::EmptyPem);
        }
        Ok(bundle)
    }

    /// Checks a bundle received for [`Bundle::trust_domain`] (a federated
    /// trust domain's, fetched from its bundle endpoint): it holds at least
    /// one authority, and no X.509 authority names another trust domain in
    /// a SPIFFE URI SAN (SPIFFE CAs, Hallmark's and SPIRE's, carry
    /// `spiffe://<trust domain>`; an authority without one is accepted, as
    /// the standard does not require it).
    pub fn check_trust_domain(&self) -> Result<(), BundleError> {
        if self.x509_authorities.is_empty() && self.jwt_authorities.is_empty() {
            return Err(BundleError::Empty);
        }
        for (index, der) in self.x509_authorities.iter().enumerate() {
            let cert = parse_cert(der).map_err(BundleError::InvalidCertificate)?;
            let uris = uri_sans(&cert).map_err(BundleError::InvalidCertificate)?;
            for id in uris.iter().filter_map(|u| SpiffeId::parse(u).ok()) {
                let found = id.trust_domain();
                if found != self.trust_domain {
                    return Err(BundleError::WrongTrustDomain {
                        index,
                        expected: self.trust_domain.as_str().to_owned(),
                        found: found.as_str().to_owned(),
                    });
                }
            }
        }
        Ok(())
    }

    /// Whether `other` holds the same authorities, sequence and refresh
    /// hint (JWT key expiry, which the JWKS form does not carry, aside).
    pub fn same_content(&self, other: &Bundle) -> bool {
        let keys = |b: &Bundle| -> Vec<(String, Vec<u8>)> {
            b.jwt_authorities
                .iter()
                .map(|a| (a.key_id.clone(), a.public_key_der.clone()))
                .collect()
        };
        self.trust_domain == other.trust_domain
            && self.x509_authorities == other.x509_authorities
            && keys(self) == keys(other)
            && self.sequence == other.sequence
            && self.refresh_hint == other.refresh_hint
    }

    /// The JWT authority with key id `kid`, if any.
    pub fn jwt_authority(&self, kid: &str) -> Option<&JwtAuthority> {
        self.jwt_authorities.iter().find(|a| a.key_id == kid)
    }
}

impl fmt::Debug for Bundle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kids: Vec<&str> = self
            .jwt_authorities
            .iter()
            .map(|a| a.key_id.as_str())
            .collect();
        f.debug_struct("Bundle")
            .field("trust_domain", &self.trust_domain)
            .field("x509_authorities", &self.x509_authorities.len())
            .field("jwt_kids", &kids)
            .field("sequence", &self.sequence)
            .field("refresh_hint", &self.refresh_hint)
            .finish()
    }
}

/// A cheaply cloneable, thread-safe holder of the current bundle. Clones
/// share the same slot, so a `store` is seen by every TLS verifier at its next
/// handshake without rebuilding TLS configs.
#[derive(Clone)]
pub struct SharedBundle {
    current: Arc<ArcSwap<Bundle>>,
}

impl SharedBundle {
    /// A holder starting with `bundle`.
    pub fn new(bundle: Bundle) -> SharedBundle {
        SharedBundle {
            current: Arc::new(ArcSwap::from_pointee(bundle)),
        }
    }

    /// The current bundle.
    pub fn load(&self) -> Arc<Bundle> {
        self.current.load_full()
    }

    /// Replaces the current bundle.
    pub fn store(&self, bundle: Bundle) {
        self.current.store(Arc::new(bundle));
    }
}

impl fmt::Debug for SharedBundle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("SharedBundle").field(&self.load()).finish()
    }
}
