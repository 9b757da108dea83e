//! Verifying SVIDs as a relying party: an X.509-SVID chain or a JWT-SVID
//! against a trust bundle, with the Hallmark binding read into an
//! [`Identity`] that a [`Policy`](crate::policy::Policy) can judge.
//!
//! X.509-SVIDs are checked per the SPIFFE X509-SVID standard by
//! [`hallmark_ca::verify`]: the leaf is not a CA, has keyUsage
//! digitalSignature and neither keyCertSign nor cRLSign, exactly one URI SAN
//! that is a SPIFFE ID with a path in the bundle's trust domain, is within
//! its validity, has the EKU for its use, and chains to an X.509 authority
//! of the bundle (rustls-webpki). JWT-SVIDs are checked per the JWT-SVID
//! standard by [`hallmark_ca::jwt::validate_jwt_svid`]: `alg` (never `none`
//! or HS*), `kid` in the bundle, signature, `exp` (no leeway), `aud`
//! contains the audience, `sub` a SPIFFE ID of the trust domain.
//!
//! ```
//! use std::time::{Duration, SystemTime};
//! use hallmark::ca::id::{SpiffeId, TrustDomain};
//! use hallmark::ca::manager::{CaConfig, CaManager};
//! use hallmark::ca::verify::Usage;
//! use hallmark::ca::x509::{SvidExtension, SvidRequest};
//! use hallmark::svid::verify_x509_svid;
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let now = SystemTime::now();
//! let td = TrustDomain::new("example.org")?;
//! let ca = CaManager::generate(CaConfig::new(td.clone()), now)?;
//! let key = hallmark::ca::key::CaKey::generate()?;
//! let id = SpiffeId::new(&td, "/summarizer")?;
//! let svid = ca.mint_x509_svid(&SvidRequest {
//!     spiffe_id: &id,
//!     public_key_der: &key.public_key_der(),
//!     ttl: Duration::from_secs(300),
//!     dns_names: &[],
//!     extensions: &[],
//! }, now)?;
//!
//! let identity = verify_x509_svid(&svid.cert_chain, &ca.bundle(), Usage::ClientAuth, now)?;
//! assert_eq!(identity.spiffe_id, id);
//! assert!(identity.binding.is_none()); // a plain SVID: no Hallmark binding
//! # Ok(())
//! # }
//! ```

use std::time::SystemTime;

use rustls_pki_types::CertificateDer;
use serde_json::Value;

use hallmark_ca::bundle::Bundle;
use hallmark_ca::id::SpiffeId;
use hallmark_ca::jwt::{JwtError, validate_jwt_svid};
use hallmark_ca::verify::{Usage, VerifiedSvid, VerifyError};

use crate::binding::{Binding, BindingError};

/// A verified credential: who it names and what it is bound to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// The SPIFFE ID.
    pub spiffe_id: SpiffeId,
    /// The Hallmark binding; `None` when the credential carries none (an
    /// SVID from another SPIFFE issuer): policies that look at the binding
    /// refuse such credentials.
    pub binding: Option<Binding>,
    /// Facts of the credential itself.
    pub credential: Credential,
}

/// The credential an [`Identity`] was read from.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Credential {
    /// An X.509-SVID.
    X509 {
        /// The leaf's serial, lowercase hex without leading zero bytes.
        serial: String,
        /// The leaf's expiry.
        not_after: SystemTime,
    },
    /// A JWT-SVID.
    Jwt {
        /// The token id (`jti`), if present.
        jti: Option<String>,
        /// The expiry (`exp`).
        expires_at: SystemTime,
        /// The approved actions (`scope`, space-separated in the token).
        scopes: Vec<String>,
        /// The issuer (`iss`), when the token names one (an issuer with
        /// `[oidc] issuer` configured sets it; the JWT-SVID standard does
        /// not require it).
        issuer: Option<String>,
    },
}

impl Identity {
    /// When the credential expires.
    pub fn expires_at(&self) -> SystemTime {
        match &self.credential {
            Credential::X509 { not_after, .. } => *not_after,
            Credential::Jwt { expires_at, .. } => *expires_at,
        }
    }

    /// The JWT `iss`, if the credential is a JWT-SVID that has one.
    pub fn issuer(&self) -> Option<&str> {
        match &self.credential {
            Credential::X509 { .. } => None,
            Credential::Jwt { issuer, .. } => issuer.as_deref(),
        }
    }

    /// The JWT `scope` values; empty for X.509-SVIDs.
    pub fn scopes(&self) -> &[String] {
        match &self.credential {
            Credential::X509 { .. } => &[],
            Credential::Jwt { scopes, .. } => scopes,
        }
    }

    /// From an SVID the `hallmark-ca` verifier accepted (the rustls
    /// verifiers hand over this form).
    pub fn from_verified(svid: &VerifiedSvid) -> Result<Identity, BindingError> {
        Ok(Identity {
            spiffe_id: svid.spiffe_id.clone(),
            binding: svid
                .binding
                .as_deref()
                .map(Binding::from_json)
                .transpose()?,
            credential: Credential::X509 {
                serial: svid.serial.clone(),
                not_after: svid.not_after,
            },
        })
    }
}

/// Why a credential is not a valid SVID.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SvidError {
    /// The X.509-SVID failed verification.
    #[error(transparent)]
    X509(#[from] VerifyError),
    /// The JWT-SVID failed validation.
    #[error(transparent)]
    Jwt(#[from] JwtError),
    /// The credential verified but its Hallmark binding is malformed.
    #[error(transparent)]
    Binding(#[from] BindingError),
}

/// Verifies an X.509-SVID chain (leaf first, DER) against `bundle` for
/// `usage` at `now`, and reads its binding.
pub fn verify_x509_svid(
    chain: &[impl AsRef<[u8]>],
    bundle: &Bundle,
    usage: Usage,
    now: SystemTime,
) -> Result<Identity, SvidError> {
    let verified = hallmark_ca::verify::verify_x509_svid(chain, bundle, usage, now)?;
    Ok(Identity::from_verified(&verified)?)
}

/// Validates a JWT-SVID for `audience` against the JWT authorities of
/// `bundle` at `now`, and reads its `hallmark` and `scope` claims.
pub fn verify_jwt_svid(
    token: &str,
    audience: &str,
    bundle: &Bundle,
    now: SystemTime,
) -> Result<Identity, SvidError> {
    let validated = validate_jwt_svid(token, audience, bundle, now)?;
    let claims = &validated.claims;
    let binding = match claims.get("hallmark") {
        None | Some(Value::Null) => None,
        Some(value) => Some(Binding::from_value(value)?),
    };
    let scopes = match claims.get("scope") {
        Some(Value::String(scope)) => scope.split_whitespace().map(str::to_owned).collect(),
        _ => Vec::new(),
    };
    // `validate_jwt_svid` checked `exp` is a number in the future.
    let exp = claims.get("exp").and_then(Value::as_f64).unwrap_or(0.0);
    let expires_at = SystemTime::UNIX_EPOCH
        + std::time::Duration::from_secs_f64(if exp.is_finite() { exp.max(0.0) } else { 0.0 });
    Ok(Identity {
        spiffe_id: validated.spiffe_id,
        binding,
        credential: Credential::Jwt {
            jti: claims.get("jti").and_then(Value::as_str).map(str::to_owned),
            expires_at,
            scopes,
            issuer: claims.get("iss").and_then(Value::as_str).map(str::to_owned),
        },
    })
}

/// The identity in the certificates a TLS peer presented (rustls's
/// `peer_certificates()`), read without verifying them: use it after a
/// handshake that a verifier of this crate accepted, to know who is on the
/// other end.
pub fn peer_identity(certs: &[CertificateDer<'_>]) -> Result<Identity, SvidError> {
    let leaf = certs.first().ok_or(VerifyError::EmptyChain)?;
    let spiffe_id = hallmark_ca::tls::peer_spiffe_id(certs)?;
    let (serial, not_after) = leaf_facts(leaf).map_err(VerifyError::Malformed)?;
    Ok(Identity {
        spiffe_id,
        binding: Binding::from_cert(leaf)?,
        credential: Credential::X509 { serial, not_after },
    })
}

/// A leaf's serial (lowercase hex, as the CA writes it) and expiry.
pub(crate) fn leaf_facts(der: &[u8]) -> Result<(String, SystemTime), String> {
    let serial = hallmark_ca::tls::leaf_serial(der).map_err(|e| e.to_string())?;
    let (_, cert) = x509_parser::parse_x509_certificate(der).map_err(|e| e.to_string())?;
    let secs = cert.validity().not_after.timestamp();
    let not_after =
        SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(u64::try_from(secs).unwrap_or(0));
    Ok((serial, not_after))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::{Fixture, binding};

    #[test]
    fn x509_svids_verify_and_carry_their_binding() {
        let f = Fixture::new();
        let b = binding("summarizer@2.0.0", Some(("llama", "3.1")));
        let (chain, _) = f.x509("/summarizer", Some(&b));
        let identity = verify_x509_svid(&chain, &f.ca.bundle(), Usage::ClientAuth, f.now).unwrap();
        assert_eq!(identity.spiffe_id, f.id("/summarizer"));
        assert_eq!(identity.binding, Some(Binding::from_value(&b).unwrap()));
        // Read back without verification, as after a handshake.
        let certs: Vec<CertificateDer<'_>> = chain
            .iter()
            .map(|c| CertificateDer::from(c.as_slice()))
            .collect();
        assert_eq!(peer_identity(&certs).unwrap(), identity);
        assert!(matches!(
            peer_identity(&[]),
            Err(SvidError::X509(VerifyError::EmptyChain))
        ));
    }

    #[test]
    fn a_malformed_binding_makes_the_svid_invalid() {
        let f = Fixture::new();
        let mut b = binding("summarizer@2.0.0", None);
        b["risk_tier"] = "extreme".into();
        let (chain, _) = f.x509("/summarizer", Some(&b));
        assert!(matches!(
            verify_x509_svid(&chain, &f.ca.bundle(), Usage::ClientAuth, f.now),
            Err(SvidError::Binding(BindingError::Invalid {
                member: "risk_tier",
                ..
            }))
        ));
    }

    #[test]
    fn spiffe_rules_are_enforced() {
        let f = Fixture::new();
        let (chain, _) = f.x509("/summarizer", None);
        let late = f.now + std::time::Duration::from_secs(301);
        assert!(matches!(
            verify_x509_svid(&chain, &f.ca.bundle(), Usage::ClientAuth, late),
            Err(SvidError::X509(VerifyError::Expired))
        ));
        let mut elsewhere = f.ca.bundle();
        elsewhere.trust_domain = hallmark_ca::id::TrustDomain::new("other.org").unwrap();
        assert!(matches!(
            verify_x509_svid(&chain, &elsewhere, Usage::ClientAuth, f.now),
            Err(SvidError::X509(VerifyError::WrongTrustDomain { .. }))
        ));
        // The CA certificate itself is not an SVID.
        let root = f.ca.bundle().x509_authorities[0].clone();
        assert!(matches!(
            verify_x509_svid(&[root], &f.ca.bundle(), Usage::ClientAuth, f.now),
            Err(SvidError::X509(
                VerifyError::LeafIsCa | VerifyError::MissingSpiffeId
            ))
        ));
    }

    #[test]
    fn jwt_identity_reads_scopes_jti_and_expiry() {
        let f = Fixture::new();
        let token = f.jwt("/summarizer", "aud", None, Some("a  b"));
        let identity = verify_jwt_svid(&token, "aud", &f.ca.bundle(), f.now).unwrap();
        assert!(identity.binding.is_none());
        assert_eq!(identity.scopes(), ["a", "b"]);
        match &identity.credential {
            Credential::Jwt {
                jti, expires_at, ..
            } => {
                assert_eq!(jti.as_ref().map(String::len), Some(32));
                let ttl = expires_at.duration_since(f.now).unwrap_or_default();
                assert!(
                    ttl <= std::time::Duration::from_secs(300)
                        && ttl > std::time::Duration::from_secs(290),
                    "{ttl:?}"
                );
            }
            other => panic!("{other:?}"),
        }
    }
}
