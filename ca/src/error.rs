//! [`CaError`]: what can go wrong creating keys and authorities and minting.

use std::time::SystemTime;

use crate::id::TrustDomain;

/// An error from key handling, certificate or token minting, or rotation.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CaError {
    /// The system random source failed while generating a key.
    #[error("key generation failed")]
    KeyGeneration,
    /// The system random source failed (serial numbers, token ids).
    #[error("system random source failed")]
    Random,
    /// A private key could not be loaded (wrong format, curve or encoding).
    #[error("invalid private key: {0}")]
    InvalidPrivateKey(String),
    /// A signing operation failed.
    #[error("signing failed")]
    Signing,
    /// rcgen refused to build a certificate.
    #[error("building certificate failed")]
    Certificate(#[source] rcgen::Error),
    /// A certificate could not be parsed.
    #[error("invalid certificate: {0}")]
    InvalidCertificate(String),
    /// PEM input could not be decoded or held no usable block.
    #[error("invalid pem: {0}")]
    InvalidPem(String),
    /// A certificate that must be a CA is not one (basicConstraints CA:true, keyCertSign).
    #[error("certificate is not a ca: {0}")]
    NotACa(&'static str),
    /// The private key does not belong to the certificate.
    #[error("private key does not match the certificate's public key")]
    KeyMismatch,
    /// A CA certificate carries no SPIFFE trust-domain URI SAN.
    #[error("ca certificate has no spiffe trust domain uri san")]
    MissingTrustDomain,
    /// A SPIFFE ID or certificate belongs to another trust domain than the CA's.
    #[error("spiffe id is in trust domain {found}, the ca serves {expected}")]
    WrongTrustDomain {
        /// The CA's trust domain.
        expected: TrustDomain,
        /// The trust domain that was given.
        found: TrustDomain,
    },
    /// A leaf was requested for the bare trust-domain ID (no path).
    #[error("a workload spiffe id must have a path, not only the trust domain")]
    TrustDomainIdAsLeaf,
    /// The requester's SubjectPublicKeyInfo could not be parsed or uses an unsupported algorithm.
    #[error("invalid public key")]
    InvalidPublicKey(#[source] rcgen::Error),
    /// A DNS name is not a valid IA5 string.
    #[error("invalid dns name {0:?}")]
    InvalidDnsName(String),
    /// A TTL of zero was requested.
    #[error("ttl must be greater than zero")]
    ZeroTtl,
    /// The signing authority (CA or JWT key) is expired or not yet valid at `now`.
    #[error("signing authority is not valid at this time (valid until {not_after:?})")]
    AuthorityNotValid {
        /// The authority's expiry.
        not_after: SystemTime,
    },
    /// A JWT-SVID was requested without an audience.
    #[error("jwt-svid audience must not be empty")]
    EmptyAudience,
    /// A JWT-SVID was requested for too many or too long audiences.
    #[error("jwt-svid audience: {0}")]
    Audience(#[from] crate::jwt::AudienceError),
    /// An extra JWT claim tries to set a claim the minter owns.
    #[error("claim {0:?} is reserved and set by the minter")]
    ReservedClaim(String),
    /// JSON encoding failed.
    #[error("json encoding failed")]
    Json(#[source] serde_json::Error),
    /// Persisted CA state is malformed or inconsistent.
    #[error("invalid ca state: {0}")]
    InvalidState(String),
    /// A certificate chain was empty.
    #[error("certificate chain is empty")]
    EmptyChain,
    /// rustls refused the certificate or key.
    #[error("tls: {0}")]
    Tls(#[source] rustls::Error),
}
