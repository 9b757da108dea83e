//! JWT-SVID validation against a trust bundle (the Workload API's
//! `ValidateJWTSVID` and relying parties use it).

use std::time::SystemTime;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ring::signature::{self, UnparsedPublicKey, VerificationAlgorithm};
use serde::Deserialize;
use serde_json::{Map, Value};

use crate::bundle::Bundle;
use crate::id::{IdError, SpiffeId, TrustDomain};
use crate::util::{KeyKind, parse_spki, unix_secs};

/// Why a JWT-SVID was rejected. Each variant maps to one message a caller can show.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum JwtError {
    /// The token is not a well-formed compact JWS with JSON header and claims.
    #[error("malformed token: {0}")]
    Malformed(&'static str),
    /// The header's `alg` is not one of ES256, ES384, RS256, PS256 (`none` and HS* never are).
    #[error("unsupported algorithm {0:?}")]
    UnsupportedAlgorithm(String),
    /// The header has no `kid`.
    #[error("token header has no key id")]
    MissingKeyId,
    /// No JWT authority in the bundle has this `kid`.
    #[error("unknown key id {0:?}")]
    UnknownKeyId(String),
    /// The `alg` does not fit the type of the bundle key named by `kid`.
    #[error("algorithm {0} does not match the key's type")]
    AlgorithmMismatch(String),
    /// The bundle key named by `kid` could not be parsed or has an unsupported type.
    #[error("bundle key {0:?} is unusable")]
    UnusableKey(String),
    /// The signature does not verify with the bundle key.
    #[error("bad signature")]
    BadSignature,
    /// The claims have no numeric `exp`.
    #[error("token has no exp claim")]
    MissingExpiry,
    /// `exp` is at or before now (no leeway).
    #[error("token expired")]
    Expired,
    /// `nbf` is after now.
    #[error("token not yet valid")]
    NotYetValid,
    /// The claims have no `aud`.
    #[error("token has no audience")]
    MissingAudience,
    /// `aud` does not contain the expected audience.
    #[error("audience mismatch")]
    AudienceMismatch,
    /// The claims have no string `sub`.
    #[error("token has no subject")]
    MissingSubject,
    /// `sub` is not a SPIFFE ID.
    #[error("subject is not a spiffe id")]
    InvalidSubject(#[source] IdError),
    /// `sub` is in another trust domain than the bundle's.
    #[error("subject is in trust domain {found}, expected {expected}")]
    WrongTrustDomain {
        /// The bundle's trust domain.
        expected: TrustDomain,
        /// The subject's trust domain.
        found: TrustDomain,
    },
}

/// A JWT-SVID that passed validation.
#[derive(Debug, Clone, PartialEq)]
pub struct ValidatedJwt {
    /// The subject.
    pub spiffe_id: SpiffeId,
    /// All claims of the token.
    pub claims: Map<String, Value>,
}

#[derive(Deserialize)]
struct Header {
    alg: String,
    kid: Option<String>,
}

/// Validates a JWT-SVID for `audience` against `bundle` at `now`.
///
/// Checks, in order: compact form; `alg` is ES256, ES384, RS256 or PS256 and
/// matches the type of the bundle key named by `kid`; the signature; `exp`
/// strictly after `now` with **no leeway** (the issuer backdates nothing in
/// JWTs and TTLs are short, so skew is the caller's clock's business); `nbf`
/// if present; `aud` contains `audience`; `sub` is a SPIFFE ID of the bundle's
/// trust domain.
pub fn validate_jwt_svid(
    token: &str,
    audience: &str,
    bundle: &Bundle,
    now: SystemTime,
) -> Result<ValidatedJwt, JwtError> {
    let mut parts = token.split('.');
    let (Some(header_b64), Some(claims_b64), Some(sig_b64), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(JwtError::Malformed("expected three dot-separated parts"));
    };
    let header_json = URL_SAFE_NO_PAD
        .decode(header_b64)
        .map_err(|_| JwtError::Malformed("header is not base64url"))?;
    let header: Header = serde_json::from_slice(&header_json)
        .map_err(|_| JwtError::Malformed("header is not a json object with alg"))?;

    let alg: &'static dyn VerificationAlgorithm = match header.alg.as_str() {
        "ES256" => &signature::ECDSA_P256_SHA256_FIXED,
        "ES384" => &signature::ECDSA_P384_SHA384_FIXED,
        "RS256" => &signature::RSA_PKCS1_2048_8192_SHA256,
        "PS256" => &signature::RSA_PSS_2048_8192_SHA256,
        other => return Err(JwtError::UnsupportedAlgorithm(other.to_owned())),
    };
    let kid = header.kid.ok_or(JwtError::MissingKeyId)?;
    let authority = bundle
        .jwt_authorities
        .iter()
        .find(|a| a.key_id == kid)
        .ok_or_else(|| JwtError::UnknownKeyId(kid.clone()))?;
    let key =
        parse_spki(&authority.public_key_der).ok_or_else(|| JwtError::UnusableKey(kid.clone()))?;
    let fits = matches!(
        (header.alg.as_str(), key.kind),
        ("ES256", KeyKind::EcP256)
            | ("ES384", KeyKind::EcP384)
            | ("RS256", KeyKind::Rsa)
            | ("PS256", KeyKind::Rsa)
    );
    if !fits {
        return Err(JwtError::AlgorithmMismatch(header.alg));
    }

    let signature = URL_SAFE_NO_PAD
        .decode(sig_b64)
        .map_err(|_| JwtError::Malformed("signature is not base64url"))?;
    let signing_input_len = header_b64.len() + 1 + claims_b64.len();
    let signing_input = token
        .get(..signing_input_len)
        .ok_or(JwtError::Malformed("truncated token"))?;
    UnparsedPublicKey::new(alg, &key.key)
        .verify(signing_input.as_bytes(), &signature)
        .map_err(|_| JwtError::BadSignature)?;

    let claims_json = URL_SAFE_NO_PAD
        .decode(claims_b64)
        .map_err(|_| JwtError::Malformed("claims are not base64url"))?;
    let claims: Map<String, Value> = serde_json::from_slice(&claims_json)
        .map_err(|_| JwtError::Malformed("claims are not a json object"))?;

    let now_secs = unix_secs(now);
    let exp = claims
        .get("exp")
        .and_then(numeric_date)
        .ok_or(JwtError::MissingExpiry)?;
    if exp <= now_secs {
        return Err(JwtError::Expired);
    }
    if let Some(nbf) = claims.get("nbf") {
        let nbf = numeric_date(nbf).ok_or(JwtError::Malformed("nbf is not a number"))?;
        if nbf > now_secs {
            return Err(JwtError::NotYetValid);
        }
    }

    let audience_ok = match claims.get("aud") {
        None | Some(Value::Null) => return Err(JwtError::MissingAudience),
        Some(Value::String(aud)) => aud == audience,
        Some(Value::Array(auds)) if auds.is_empty() => return Err(JwtError::MissingAudience),
        Some(Value::Array(auds)) => auds.iter().any(|a| a.as_str() == Some(audience)),
        Some(_) => return Err(JwtError::Malformed("aud is neither a string nor an array")),
    };
    if !audience_ok {
        return Err(JwtError::AudienceMismatch);
    }

    let sub = claims
        .get("sub")
        .and_then(Value::as_str)
        .ok_or(JwtError::MissingSubject)?;
    let spiffe_id = SpiffeId::parse(sub).map_err(JwtError::InvalidSubject)?;
    if !spiffe_id.is_member_of(&bundle.trust_domain) {
        return Err(JwtError::WrongTrustDomain {
            expected: bundle.trust_domain.clone(),
            found: spiffe_id.trust_domain(),
        });
    }
    Ok(ValidatedJwt { spiffe_id, claims })
}

/// A JWT NumericDate as whole seconds (fractions truncated, negatives as 0).
fn numeric_date(v: &Value) -> Option<u64> {
    if let Some(n) = v.as_u64() {
        return Some(n);
    }
    let f = v.as_f64()?;
    if f.is_finite() {
        // `as` saturates, which is what we want for far-future dates.
        Some(f.max(0.0) as u64)
    } else {
        None
    }
}
