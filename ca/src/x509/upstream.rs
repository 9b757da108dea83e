//! [`UpstreamCa`]: an operator's CA that signs Hallmark's intermediate CAs.

use std::fmt;
use std::time::SystemTime;

use rcgen::{Issuer, KeyPair, PublicKeyData};

use crate::error::CaError;
use crate::util::{from_asn1, parse_cert};

/// An operator's upstream CA: its certificate (plus any chain up to its root)
/// and its private key. Hallmark CAs are then intermediates under it.
pub struct UpstreamCa {
    issuer: Issuer<'static, KeyPair>,
    /// The upstream CA certificate first, then its chain up to and including the root.
    chain: Vec<Vec<u8>>,
    not_before: SystemTime,
    not_after: SystemTime,
}

impl UpstreamCa {
    /// Loads an upstream CA from PEM.
    ///
    /// `cert_pem` holds the CA certificate first, optionally followed by its
    /// intermediates up to the root (the last certificate is the trust anchor
    /// relying parties get; a single certificate is its own anchor).
    /// `key_pem` is a PKCS#8 private key of any type rcgen/ring accept
    /// (P-256, P-384, Ed25519, ...). The certificate must be a CA and its
    /// public key must match the key.
    pub fn from_pem(cert_pem: &str, key_pem: &str) -> Result<UpstreamCa, CaError> {
        let blocks = pem::parse_many(cert_pem).map_err(|e| CaError::InvalidPem(e.to_string()))?;
        let chain: Vec<Vec<u8>> = blocks
            .into_iter()
            .filter(|b| b.tag() == "CERTIFICATE")
            .map(pem::Pem::into_contents)
            .collect();
        let Some(first) = chain.first() else {
            return Err(CaError::InvalidPem(
                "no CERTIFICATE block in upstream certificate".to_owned(),
            ));
        };
        let key =
            KeyPair::from_pem(key_pem).map_err(|e| CaError::InvalidPrivateKey(e.to_string()))?;

        let cert = parse_cert(first).map_err(CaError::InvalidCertificate)?;
        let is_ca = cert
            .basic_constraints()
            .map_err(|e| CaError::InvalidCertificate(e.to_string()))?
            .is_some_and(|bc| bc.value.ca);
        if !is_ca {
            return Err(CaError::NotACa("basicConstraints CA:true is missing"));
        }
        let ku = cert
            .key_usage()
            .map_err(|e| CaError::InvalidCertificate(e.to_string()))?;
        if ku.is_some_and(|ku| !ku.value.key_cert_sign()) {
            return Err(CaError::NotACa("keyUsage lacks keyCertSign"));
        }
        if cert.public_key().subject_public_key.data.as_ref() != key.der_bytes() {
            return Err(CaError::KeyMismatch);
        }
        for der in chain.iter().skip(1) {
            parse_cert(der).map_err(CaError::InvalidCertificate)?;
        }
        let not_before = from_asn1(cert.validity().not_before);
        let not_after = from_asn1(cert.validity().not_after);
        let issuer = Issuer::from_ca_cert_der(&first.as_slice().into(), key)
            .map_err(CaError::Certificate)?;
        Ok(UpstreamCa {
            issuer,
            chain,
            not_before,
            not_after,
        })
    }

    /// The upstream CA certificate (DER).
    pub fn cert_der(&self) -> &[u8] {
        self.chain.first().map(Vec::as_slice).unwrap_or_default()
    }

    /// The root of the upstream chain (DER): the trust anchor relying parties get.
    pub fn root_der(&self) -> &[u8] {
        self.chain.last().map(Vec::as_slice).unwrap_or_default()
    }

    /// The upstream CA certificate followed by its chain up to and including the root.
    pub fn chain(&self) -> &[Vec<u8>] {
        &self.chain
    }

    /// Start of the upstream certificate's validity.
    pub fn not_before(&self) -> SystemTime {
        self.not_before
    }

    /// End of the upstream certificate's validity; intermediates are capped at it.
    pub fn not_after(&self) -> SystemTime {
        self.not_after
    }

    pub(crate) fn issuer(&self) -> &Issuer<'static, KeyPair> {
        &self.issuer
    }
}

impl fmt::Debug for UpstreamCa {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UpstreamCa")
            .field("chain_len", &self.chain.len())
            .field("not_after", &self.not_after)
            .field("key", &"[redacted]")
            .finish()
    }
}
