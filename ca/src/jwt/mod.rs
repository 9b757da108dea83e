//! JWT-SVIDs: the ES256 signing key ([`JwtKey`]), minting, the optional
//! issuer ([`JwtIssuer`], the `iss` claim), and validation against a bundle
//! ([`validate_jwt_svid`]).
//!
//! The JWS compact form is built here (base64url of the header and claims,
//! signed by [`CaKey::sign_jws`]) because jsonwebtoken's `EncodingKey` only
//! takes raw key bytes, which an HSM-backed key would not have. Tests
//! cross-check every token with jsonwebtoken.

use std::fmt;
use std::time::{Duration, SystemTime};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ring::rand::{SecureRandom, SystemRandom};
use serde::Serialize;
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

use crate::error::CaError;
use crate::id::SpiffeId;
use crate::key::CaKey;
use crate::util::{truncate_secs, unix_secs};

mod audience;
mod issuer;
mod validate;

pub use audience::{AudienceError, MAX_AUDIENCE_BYTES, MAX_AUDIENCES, check_audience};
pub use issuer::{IssuerError, JwtIssuer, MAX_ISSUER_BYTES};
pub use validate::{JwtError, ValidatedJwt, validate_jwt_svid};

/// The JWS algorithm every JWT-SVID is signed with (the keys are ECDSA P-256).
pub const JWT_SVID_ALG: &str = "ES256";

/// Claims the minter sets itself; `extra` must not contain them.
pub const RESERVED_CLAIMS: &[&str] = &["sub", "aud", "iat", "exp", "jti", "nbf", "iss"];

/// An ES256 JWT-SVID signing key with its key id and validity.
#[derive(Clone)]
pub struct JwtKey {
    kid: String,
    key: CaKey,
    not_before: SystemTime,
    not_after: SystemTime,
}

/// What a JWT-SVID asserts.
#[derive(Debug, Clone, PartialEq)]
pub struct JwtSvidClaims {
    /// The subject (`sub`).
    pub spiffe_id: SpiffeId,
    /// The audience (`aud`, always an array); must not be empty.
    pub audience: Vec<String>,
    /// Requested lifetime; `exp` never exceeds the key's not_after.
    pub ttl: Duration,
    /// Further claims, e.g. the `hallmark` binding object and `scope`.
    pub extra: Map<String, Value>,
}

/// A minted JWT-SVID. `Debug` redacts the token (it is a bearer credential).
#[derive(Clone, PartialEq, Eq)]
pub struct JwtSvid {
    /// The compact JWS.
    pub token: String,
    /// The subject.
    pub spiffe_id: SpiffeId,
    /// The token id (`jti`), 128 random bits in lowercase hex.
    pub jti: String,
    /// The expiry (`exp`).
    pub expires_at: SystemTime,
}

#[derive(Serialize)]
struct Header<'a> {
    alg: &'static str,
    kid: &'a str,
    typ: &'static str,
}

impl JwtKey {
    /// Generates a fresh key valid from `now` for `ttl`.
    pub fn generate(now: SystemTime, ttl: Duration) -> Result<JwtKey, CaError> {
        if ttl.is_zero() {
            return Err(CaError::ZeroTtl);
        }
        let key = CaKey::generate()?;
        let kid = kid_for(&key.public_key_der());
        Ok(JwtKey::from_parts(
            kid,
            key,
            truncate_secs(now),
            truncate_secs(now + ttl),
        ))
    }

    /// Assembles a key from persisted parts.
    pub fn from_parts(
        kid: String,
        key: CaKey,
        not_before: SystemTime,
        not_after: SystemTime,
    ) -> JwtKey {
        JwtKey {
            kid,
            key,
            not_before,
            not_after,
        }
    }

    /// The key id (`kid`).
    pub fn kid(&self) -> &str {
        &self.kid
    }

    /// The public key (SubjectPublicKeyInfo DER).
    pub fn public_key_der(&self) -> Vec<u8> {
        self.key.public_key_der()
    }

    /// Start of validity.
    pub fn not_before(&self) -> SystemTime {
        self.not_before
    }

    /// End of validity; no token outlives it.
    pub fn not_after(&self) -> SystemTime {
        self.not_after
    }

    /// The signing key.
    pub fn key(&self) -> &CaKey {
        &self.key
    }

    /// Mints a JWT-SVID: header `{"alg":"ES256","kid":..,"typ":"JWT"}`, claims
    /// `sub`, `aud` (array), `iat`, `exp = min(now + ttl, not_after)`, `jti`, plus `extra`.
    /// No `iss`: see [`JwtKey::mint_issued`].
    pub fn mint(&self, claims: &JwtSvidClaims, now: SystemTime) -> Result<JwtSvid, CaError> {
        self.mint_issued(claims, None, now)
    }

    /// [`JwtKey::mint`], with `iss` set to `issuer` when there is one.
    pub fn mint_issued(
        &self,
        claims: &JwtSvidClaims,
        issuer: Option<&JwtIssuer>,
        now: SystemTime,
    ) -> Result<JwtSvid, CaError> {
        if claims.ttl.is_zero() {
            return Err(CaError::ZeroTtl);
        }
        if claims.audience.is_empty() || claims.audience.iter().any(String::is_empty) {
            return Err(CaError::EmptyAudience);
        }
        check_audience(&claims.audience)?;
        if claims.spiffe_id.path().is_empty() {
            return Err(CaError::TrustDomainIdAsLeaf);
        }
        if let Some(reserved) = claims
            .extra
            .keys()
            .find(|k| RESERVED_CLAIMS.contains(&k.as_str()))
        {
            return Err(CaError::ReservedClaim(reserved.clone()));
        }
        if now >= self.not_after {
            return Err(CaError::AuthorityNotValid {
                not_after: self.not_after,
            });
        }
        let iat = unix_secs(now);
        let exp = unix_secs(now + claims.ttl).min(unix_secs(self.not_after));
        let jti = random_hex()?;

        let mut body = claims.extra.clone();
        body.insert("sub".into(), Value::from(claims.spiffe_id.as_str()));
        body.insert("aud".into(), Value::from(claims.audience.clone()));
        body.insert("iat".into(), Value::from(iat));
        body.insert("exp".into(), Value::from(exp));
        body.insert("jti".into(), Value::from(jti.clone()));
        if let Some(issuer) = issuer {
            body.insert("iss".into(), Value::from(issuer.as_str()));
        }

        let header = Header {
            alg: JWT_SVID_ALG,
            kid: &self.kid,
            typ: "JWT",
        };
        let header = serde_json::to_vec(&header).map_err(CaError::Json)?;
        let body = serde_json::to_vec(&body).map_err(CaError::Json)?;
        let mut token = URL_SAFE_NO_PAD.encode(header);
        token.push('.');
        token.push_str(&URL_SAFE_NO_PAD.encode(body));
        let signature = self.key.sign_jws(token.as_bytes())?;
        token.push('.');
        token.push_str(&URL_SAFE_NO_PAD.encode(signature));

        Ok(JwtSvid {
            token,
            spiffe_id: claims.spiffe_id.clone(),
            jti,
            expires_at: crate::util::from_unix_secs(exp),
        })
    }
}

/// The key id Hallmark derives from a public key: base64url (no padding) of
/// the first 16 bytes of SHA-256 over the SubjectPublicKeyInfo DER.
pub fn kid_for(spki_der: &[u8]) -> String {
    let digest = Sha256::digest(spki_der);
    URL_SAFE_NO_PAD.encode(&digest[..16])
}

fn random_hex() -> Result<String, CaError> {
    let mut bytes = [0u8; 16];
    SystemRandom::new()
        .fill(&mut bytes)
        .map_err(|_| CaError::Random)?;
    Ok(hex::encode(bytes))
}

impl fmt::Debug for JwtKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JwtKey")
            .field("kid", &self.kid)
            .field("not_before", &self.not_before)
            .field("not_after", &self.not_after)
            .field("key", &self.key)
            .finish()
    }
}

impl fmt::Debug for JwtSvid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JwtSvid")
            .field("token", &"[redacted]")
            .field("spiffe_id", &self.spiffe_id)
            .field("jti", &self.jti)
            .field("expires_at", &self.expires_at)
            .finish()
    }
}
