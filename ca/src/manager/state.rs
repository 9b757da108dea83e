//! [`CaState`]: the persisted form of a [`super::CaManager`] (keys and
//! certificates as base64 strings). The server stores it; `Debug` redacts keys.

use std::fmt;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde::{Deserialize, Serialize};

use crate::error::CaError;

/// Everything needed to restore a CA manager. Holds private keys: store it
/// like a key file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CaState {
    /// The X.509 authorities (one active, at most one next, any retired).
    pub x509: Vec<X509AuthorityState>,
    /// The JWT keys (one active, at most one next, any retired).
    pub jwt: Vec<JwtKeyState>,
    /// The bundle sequence number.
    pub sequence: u64,
}

/// The role of an authority in rotation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AuthorityRole {
    /// Signs now.
    Active,
    /// Prepared and published, signs after activation.
    Next,
    /// No longer signs; published until what it signed has expired.
    Retired,
}

/// One persisted X.509 authority.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct X509AuthorityState {
    /// Its role.
    pub role: AuthorityRole,
    /// The CA certificate, base64 DER.
    pub cert_der: String,
    /// Certificates above it up to and including the root, base64 DER (empty if self-signed).
    pub chain_der: Vec<String>,
    /// The private key, base64 PKCS#8 DER. Secret.
    pub key_pkcs8: String,
}

/// One persisted JWT signing key.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JwtKeyState {
    /// Its role.
    pub role: AuthorityRole,
    /// The key id.
    pub kid: String,
    /// The private key, base64 PKCS#8 DER. Secret.
    pub key_pkcs8: String,
    /// Start of validity, Unix seconds.
    pub not_before: u64,
    /// End of validity, Unix seconds.
    pub not_after: u64,
    /// For a retired key: when it leaves the bundle, Unix seconds.
    pub drop_after: Option<u64>,
}

impl fmt::Debug for X509AuthorityState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("X509AuthorityState")
            .field("role", &self.role)
            .field("cert_der_len", &self.cert_der.len())
            .field("chain_len", &self.chain_der.len())
            .field("key_pkcs8", &"[redacted]")
            .finish()
    }
}

impl fmt::Debug for JwtKeyState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JwtKeyState")
            .field("role", &self.role)
            .field("kid", &self.kid)
            .field("key_pkcs8", &"[redacted]")
            .field("not_before", &self.not_before)
            .field("not_after", &self.not_after)
            .field("drop_after", &self.drop_after)
            .finish()
    }
}

pub(crate) fn b64(bytes: &[u8]) -> String {
    STANDARD.encode(bytes)
}

pub(crate) fn unb64(what: &str, s: &str) -> Result<Vec<u8>, CaError> {
    STANDARD
        .decode(s)
        .map_err(|_| CaError::InvalidState(format!("{what} is not base64")))
}
