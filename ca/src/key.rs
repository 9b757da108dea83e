//! [`CaKey`]: the ECDSA P-256 key every Hallmark authority signs with.
//!
//! Minting never learns where a key lives: [`CaKey`] implements rcgen's
//! [`SigningKey`] and [`PublicKeyData`], and JWS signing goes through
//! [`CaKey::sign_jws`]. Today the key is held in memory (ring); an HSM-backed
//! key becomes another private variant behind the same methods.

use std::fmt;
use std::sync::{Arc, OnceLock};

use rcgen::{PublicKeyData, SignatureAlgorithm, SigningKey};
use ring::rand::SystemRandom;
use ring::signature::{
    ECDSA_P256_SHA256_ASN1_SIGNING, ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair,
};

use crate::error::CaError;

/// An ECDSA P-256 private key. Cheap to clone (shared).
///
/// `Debug` prints a redaction and the public key fingerprint, never the key.
#[derive(Clone)]
pub struct CaKey {
    inner: Arc<SoftwareKey>,
}

struct SoftwareKey {
    /// Signs with ASN.1 DER signatures (X.509).
    x509: EcdsaKeyPair,
    /// Signs with fixed-width r||s signatures (JWS ES256). Parsed on first
    /// use: most keys never sign a JWS (every workload key the agent
    /// generates, every X.509 CA key), and each parse re-derives the public
    /// key, a third of the cost of generating one.
    jws: OnceLock<EcdsaKeyPair>,
    pkcs8: Vec<u8>,
    public_point: Vec<u8>,
    spki: Vec<u8>,
}

impl CaKey {
    /// Generates a fresh P-256 key from the system random source.
    pub fn generate() -> Result<CaKey, CaError> {
        let rng = SystemRandom::new();
        let doc = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, &rng)
            .map_err(|_| CaError::KeyGeneration)?;
        CaKey::from_pkcs8_der(doc.as_ref())
    }

    /// Loads a P-256 key from PKCS#8 DER (as written by [`CaKey::pkcs8_der`]).
    pub fn from_pkcs8_der(der: &[u8]) -> Result<CaKey, CaError> {
        let rng = SystemRandom::new();
        let x509 = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, der, &rng)
            .map_err(|e| CaError::InvalidPrivateKey(e.to_string()))?;
        let public_point = x509.public_key().as_ref().to_vec();
        let spki = PointKey(&public_point).subject_public_key_info();
        Ok(CaKey {
            inner: Arc::new(SoftwareKey {
                x509,
                jws: OnceLock::new(),
                pkcs8: der.to_vec(),
                public_point,
                spki,
            }),
        })
    }

    /// The private key as PKCS#8 DER, for persistence. Treat as secret.
    pub fn pkcs8_der(&self) -> Vec<u8> {
        self.inner.pkcs8.clone()
    }

    /// The public key as SubjectPublicKeyInfo DER.
    pub fn public_key_der(&self) -> Vec<u8> {
        self.inner.spki.clone()
    }

    /// The public key as an uncompressed SEC1 point (`04 || x || y`).
    pub fn public_key_point(&self) -> &[u8] {
        &self.inner.public_point
    }

    /// Signs `msg` for a JWS with ES256: the fixed 64-byte `r || s` form.
    pub fn sign_jws(&self, msg: &[u8]) -> Result<Vec<u8>, CaError> {
        let rng = SystemRandom::new();
        let jws = match self.inner.jws.get() {
            Some(jws) => jws,
            None => {
                // The same document already parsed as the X.509 key pair.
                let parsed = EcdsaKeyPair::from_pkcs8(
                    &ECDSA_P256_SHA256_FIXED_SIGNING,
                    &self.inner.pkcs8,
                    &rng,
                )
                .map_err(|e| CaError::InvalidPrivateKey(e.to_string()))?;
                self.inner.jws.get_or_init(|| parsed)
            }
        };
        let sig = jws.sign(&rng, msg).map_err(|_| CaError::Signing)?;
        Ok(sig.as_ref().to_vec())
    }

    /// True when `spki_der` is this key's SubjectPublicKeyInfo.
    pub fn matches_spki(&self, spki_der: &[u8]) -> bool {
        self.inner.spki == spki_der
    }
}

impl PublicKeyData for CaKey {
    fn der_bytes(&self) -> &[u8] {
        &self.inner.public_point
    }

    fn algorithm(&self) -> &'static SignatureAlgorithm {
        &rcgen::PKCS_ECDSA_P256_SHA256
    }
}

impl SigningKey for CaKey {
    fn sign(&self, msg: &[u8]) -> Result<Vec<u8>, rcgen::Error> {
        let sig = self
            .inner
            .x509
            .sign(&SystemRandom::new(), msg)
            .map_err(|_| rcgen::Error::RingUnspecified)?;
        Ok(sig.as_ref().to_vec())
    }
}

impl fmt::Debug for CaKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use sha2::Digest;
        let fp = sha2::Sha256::digest(&self.inner.spki);
        f.debug_struct("CaKey")
            .field("alg", &"ECDSA P-256")
            .field("spki_sha256", &hex::encode(&fp[..8]))
            .field("private", &"[redacted]")
            .finish()
    }
}

/// A P-256 public point seen as rcgen public key data, to encode its SPKI.
pub(crate) struct PointKey<'a>(pub(crate) &'a [u8]);

impl PublicKeyData for PointKey<'_> {
    fn der_bytes(&self) -> &[u8] {
        self.0
    }

    fn algorithm(&self) -> &'static SignatureAlgorithm {
        &rcgen::PKCS_ECDSA_P256_SHA256
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ring::signature::{ECDSA_P256_SHA256_FIXED, UnparsedPublicKey};
    use x509_parser::prelude::FromDer;

    #[test]
    fn round_trips_and_signs() {
        let key = CaKey::generate().unwrap();
        let again = CaKey::from_pkcs8_der(&key.pkcs8_der()).unwrap();
        assert_eq!(key.public_key_der(), again.public_key_der());
        assert!(again.matches_spki(&key.public_key_der()));
        // The SPKI is what x509-parser reads back as an EC P-256 key.
        let der = key.public_key_der();
        let (_, spki) = x509_parser::x509::SubjectPublicKeyInfo::from_der(&der).unwrap();
        assert_eq!(
            spki.subject_public_key.data.as_ref(),
            key.public_key_point()
        );
        let sig = key.sign_jws(b"msg").unwrap();
        assert_eq!(sig.len(), 64);
        UnparsedPublicKey::new(&ECDSA_P256_SHA256_FIXED, key.public_key_point())
            .verify(b"msg", &sig)
            .unwrap();
        let der_sig = SigningKey::sign(&key, b"msg").unwrap();
        assert_eq!(der_sig[0], 0x30, "x509 signatures are DER sequences");
    }

    #[test]
    fn debug_redacts() {
        let key = CaKey::generate().unwrap();
        let dbg = format!("{key:?}");
        assert!(dbg.contains("[redacted]"));
        let b64 =
            base64::Engine::encode(&base64::engine::general_purpose::STANDARD, key.pkcs8_der());
        assert!(!dbg.contains(&b64[..20]));
        assert!(!dbg.contains(&hex::encode(key.pkcs8_der())[..20]));
    }

    #[test]
    fn rejects_garbage() {
        assert!(matches!(
            CaKey::from_pkcs8_der(b"nope"),
            Err(CaError::InvalidPrivateKey(_))
        ));
    }
}
