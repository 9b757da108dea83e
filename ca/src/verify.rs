//! X.509-SVID verification per the SPIFFE X509-SVID standard: leaf checks
//! with x509-parser, chain building with rustls-webpki.

use std::time::{SystemTime, UNIX_EPOCH};

use rustls_pki_types::{CertificateDer, UnixTime};
use webpki::{EndEntityCert, KeyUsage};

use crate::bundle::Bundle;
use crate::error::CaError;
use crate::id::{IdError, SpiffeId, TrustDomain};
use crate::util::{from_asn1, parse_cert, serial_hex, uri_sans};
use crate::x509::binding_from_cert;

/// What the SVID is being used for; selects the required EKU.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Usage {
    /// A TLS client certificate (EKU clientAuth).
    ClientAuth,
    /// A TLS server certificate (EKU serverAuth).
    ServerAuth,
}

/// A verified X.509-SVID.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedSvid {
    /// The SPIFFE ID of the leaf.
    pub spiffe_id: SpiffeId,
    /// The leaf serial, lowercase hex without leading zero bytes (as [`crate::x509::X509Svid::serial`]).
    pub serial: String,
    /// The leaf's expiry.
    pub not_after: SystemTime,
    /// The Hallmark binding extension's JSON, if present.
    pub binding: Option<Vec<u8>>,
}

/// Why an X.509-SVID was rejected.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum VerifyError {
    /// No certificate was presented.
    #[error("certificate chain is empty")]
    EmptyChain,
    /// A certificate could not be parsed.
    #[error("malformed certificate: {0}")]
    Malformed(String),
    /// The leaf is a CA certificate (basicConstraints CA:true).
    #[error("leaf certificate is a ca")]
    LeafIsCa,
    /// The leaf lacks keyUsage digitalSignature.
    #[error("leaf certificate lacks key usage digitalSignature")]
    MissingDigitalSignature,
    /// The leaf has keyCertSign or cRLSign.
    #[error("leaf certificate has ca key usage (keyCertSign or cRLSign)")]
    LeafHasCaKeyUsage,
    /// The leaf has no URI SAN.
    #[error("leaf certificate has no uri san")]
    MissingSpiffeId,
    /// The leaf has more than one URI SAN.
    #[error("leaf certificate has {0} uri sans, exactly one is allowed")]
    MultipleUriSans(usize),
    /// The URI SAN is not a SPIFFE ID.
    #[error("leaf uri san is not a spiffe id")]
    InvalidSpiffeId(#[source] IdError),
    /// The SPIFFE ID is the bare trust domain (no path).
    #[error("leaf spiffe id has no path")]
    TrustDomainIdAsLeaf,
    /// The SPIFFE ID is in another trust domain than the bundle's.
    #[error("spiffe id is in trust domain {found}, expected {expected}")]
    WrongTrustDomain {
        /// The bundle's trust domain.
        expected: TrustDomain,
        /// The leaf's trust domain.
        found: TrustDomain,
    },
    /// The leaf (or a certificate in the chain) has expired.
    #[error("certificate expired")]
    Expired,
    /// The leaf (or a certificate in the chain) is not valid yet.
    #[error("certificate not yet valid")]
    NotYetValid,
    /// The chain does not lead to any X.509 authority in the bundle.
    #[error("certificate is not signed by a trusted authority of the bundle")]
    UnknownAuthority,
    /// The leaf's EKU does not allow the requested usage.
    #[error("certificate is not valid for {0:?}")]
    WrongUsage(Usage),
    /// The SPIFFE ID was not the one expected or allowed.
    #[error("spiffe id {0} is not authorized here")]
    Unauthorized(SpiffeId),
    /// Chain verification failed for another reason.
    #[error("certificate chain verification failed")]
    Chain(#[source] webpki::Error),
}

/// Verifies an X.509-SVID chain (leaf first) against `bundle` for `usage` at `now`.
pub fn verify_x509_svid(
    chain: &[impl AsRef<[u8]>],
    bundle: &Bundle,
    usage: Usage,
    now: SystemTime,
) -> Result<VerifiedSvid, VerifyError> {
    let leaf_der = chain.first().ok_or(VerifyError::EmptyChain)?.as_ref();
    let leaf = parse_cert(leaf_der).map_err(VerifyError::Malformed)?;

    let is_ca = leaf
        .basic_constraints()
        .map_err(|e| VerifyError::Malformed(e.to_string()))?
        .is_some_and(|bc| bc.value.ca);
    if is_ca {
        return Err(VerifyError::LeafIsCa);
    }
    let ku = leaf
        .key_usage()
        .map_err(|e| VerifyError::Malformed(e.to_string()))?
        .ok_or(VerifyError::MissingDigitalSignature)?;
    if ku.value.key_cert_sign() || ku.value.crl_sign() {
        return Err(VerifyError::LeafHasCaKeyUsage);
    }
    if !ku.value.digital_signature() {
        return Err(VerifyError::MissingDigitalSignature);
    }
    let spiffe_id = leaf_spiffe_id(&leaf)?;
    if !spiffe_id.is_member_of(&bundle.trust_domain) {
        return Err(VerifyError::WrongTrustDomain {
            expected: bundle.trust_domain.clone(),
            found: spiffe_id.trust_domain(),
        });
    }
    let not_before = from_asn1(leaf.validity().not_before);
    let not_after = from_asn1(leaf.validity().not_after);
    if now >= not_after {
        return Err(VerifyError::Expired);
    }
    if now < not_before {
        return Err(VerifyError::NotYetValid);
    }

    let anchors: Vec<_> = bundle
        .x509_authorities
        .iter()
        .filter_map(|der| {
            let der = CertificateDer::from(der.as_slice());
            webpki::anchor_from_trusted_cert(&der)
                .ok()
                .map(|a| a.to_owned())
        })
        .collect();
    if anchors.is_empty() {
        return Err(VerifyError::UnknownAuthority);
    }
    let intermediates: Vec<CertificateDer<'_>> = chain
        .iter()
        .skip(1)
        .map(|c| CertificateDer::from(c.as_ref()))
        .collect();
    let leaf_cert_der = CertificateDer::from(leaf_der);
    let end_entity = EndEntityCert::try_from(&leaf_cert_der).map_err(VerifyError::Chain)?;
    let key_usage = match usage {
        Usage::ClientAuth => KeyUsage::client_auth(),
        Usage::ServerAuth => KeyUsage::server_auth(),
    };
    let since_epoch = now.duration_since(UNIX_EPOCH).unwrap_or_default();
    end_entity
        .verify_for_usage(
            webpki::ALL_VERIFICATION_ALGS,
            &anchors,
            &intermediates,
            UnixTime::since_unix_epoch(since_epoch),
            key_usage,
            None,
            None,
        )
        .map_err(|e| match e {
            webpki::Error::UnknownIssuer => VerifyError::UnknownAuthority,
            webpki::Error::CertExpired { .. } => VerifyError::Expired,
            webpki::Error::CertNotValidYet { .. } => VerifyError::NotYetValid,
            webpki::Error::RequiredEkuNotFoundContext(_) => VerifyError::WrongUsage(usage),
            webpki::Error::CaUsedAsEndEntity => VerifyError::LeafIsCa,
            other => VerifyError::Chain(other),
        })?;

    let binding = binding_from_cert(leaf_der).map_err(|e| match e {
        CaError::InvalidCertificate(msg) => VerifyError::Malformed(msg),
        other => VerifyError::Malformed(other.to_string()),
    })?;
    Ok(VerifiedSvid {
        spiffe_id,
        serial: serial_hex(leaf.raw_serial()),
        not_after,
        binding,
    })
}

/// The SPIFFE ID of a leaf: its single URI SAN, which must be a SPIFFE ID with a path.
pub(crate) fn leaf_spiffe_id(
    leaf: &x509_parser::certificate::X509Certificate<'_>,
) -> Result<SpiffeId, VerifyError> {
    let uris = uri_sans(leaf).map_err(VerifyError::Malformed)?;
    let uri = match uris.as_slice() {
        [] => return Err(VerifyError::MissingSpiffeId),
        [one] => *one,
        many => return Err(VerifyError::MultipleUriSans(many.len())),
    };
    let id = SpiffeId::parse(uri).map_err(VerifyError::InvalidSpiffeId)?;
    if id.path().is_empty() {
        return Err(VerifyError::TrustDomainIdAsLeaf);
    }
    Ok(id)
}
