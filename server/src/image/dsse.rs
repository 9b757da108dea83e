//! DSSE envelopes and the operators' signing keys.
//!
//! An envelope is `{"payloadType", "payload", "signatures": [{"keyid", "sig"}]}`
//! with `payload` and `sig` in standard base64 with padding (the only
//! encoding accepted). Signatures are over the pre-authentication encoding
//! [`pae`]. A `keyid` is the lowercase hex SHA-256 of the signer's
//! SubjectPublicKeyInfo DER and is required. Keys are Ed25519 or ECDSA P-256
//! (SHA-256, ASN.1 DER signatures); private keys are PKCS#8 PEM
//! (`PRIVATE KEY`), public keys SPKI PEM (`PUBLIC KEY`).

use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use ring::rand::SystemRandom;
use ring::signature::{self, EcdsaKeyPair, Ed25519KeyPair, KeyPair as _, UnparsedPublicKey};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// The DSSE payload type of a gold image.
pub const PAYLOAD_TYPE: &str = "application/vnd.hallmark.gold-image+json";

/// DER prefix of an Ed25519 SubjectPublicKeyInfo (RFC 8410), before the 32-byte key.
const ED25519_SPKI_PREFIX: &[u8] = &[
    0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00,
];
/// DER prefix of a P-256 SubjectPublicKeyInfo (RFC 5480), before the
/// 65-byte uncompressed point.
const P256_SPKI_PREFIX: &[u8] = &[
    0x30, 0x59, 0x30, 0x13, 0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01, 0x06, 0x08, 0x2a,
    0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07, 0x03, 0x42, 0x00,
];

/// The pre-authentication encoding:
/// `"DSSEv1" SP LEN(type) SP type SP LEN(body) SP body`, LEN in ASCII decimal.
pub fn pae(payload_type: &str, payload: &[u8]) -> Vec<u8> {
    let mut out = format!(
        "DSSEv1 {} {payload_type} {} ",
        payload_type.len(),
        payload.len()
    )
    .into_bytes();
    out.extend_from_slice(payload);
    out
}

/// A DSSE envelope as it appears on the wire (base64 not yet decoded).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Envelope {
    /// The payload type; must be [`PAYLOAD_TYPE`].
    #[serde(rename = "payloadType")]
    pub payload_type: String,
    /// The payload, standard base64.
    pub payload: String,
    /// The signatures.
    pub signatures: Vec<EnvelopeSignature>,
}

/// One signature of an envelope.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EnvelopeSignature {
    /// Hex SHA-256 of the signer's SPKI DER.
    pub keyid: String,
    /// The signature over [`pae`], standard base64.
    pub sig: String,
}

impl Envelope {
    /// Signs `payload` with `key` into a new envelope of [`PAYLOAD_TYPE`].
    pub fn sign(payload: &[u8], key: &SigningKey) -> Result<Envelope, KeyError> {
        let mut envelope = Envelope {
            payload_type: PAYLOAD_TYPE.to_owned(),
            payload: STANDARD.encode(payload),
            signatures: Vec::new(),
        };
        envelope.add_signature(payload, key)?;
        Ok(envelope)
    }

    /// Adds `key`'s signature over `payload`, which must be the decoded
    /// payload of this envelope.
    pub fn add_signature(&mut self, payload: &[u8], key: &SigningKey) -> Result<(), KeyError> {
        let sig = key.sign(&pae(&self.payload_type, payload))?;
        self.signatures.push(EnvelopeSignature {
            keyid: key.keyid().to_owned(),
            sig: STANDARD.encode(sig),
        });
        Ok(())
    }

    /// Decodes the payload.
    pub fn decode_payload(&self) -> Result<Vec<u8>, base64::DecodeError> {
        STANDARD.decode(&self.payload)
    }

    /// The envelope as pretty JSON with a trailing newline.
    pub fn to_json(&self) -> Vec<u8> {
        // Serializing plain strings and vectors cannot fail.
        let mut out = serde_json::to_vec_pretty(self).unwrap_or_default();
        out.push(b'\n');
        out
    }
}

/// Decodes standard base64 (with padding).
pub fn decode_base64(s: &str) -> Result<Vec<u8>, base64::DecodeError> {
    STANDARD.decode(s)
}

/// Signature algorithms of operator keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Algorithm {
    /// Ed25519.
    Ed25519,
    /// ECDSA over P-256 with SHA-256, ASN.1 DER signatures.
    P256,
}

impl fmt::Display for Algorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Algorithm::Ed25519 => "ed25519",
            Algorithm::P256 => "p256",
        })
    }
}

/// Why a key could not be made, read or used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum KeyError {
    /// The text is not PEM, or holds no block of the expected label.
    #[error("not a PEM file with a {0:?} block")]
    Pem(&'static str),
    /// The private key is not a PKCS#8 Ed25519 or P-256 key.
    #[error("not a PKCS#8 Ed25519 or ECDSA P-256 private key")]
    BadPrivateKey,
    /// The public key is not an Ed25519 or P-256 SubjectPublicKeyInfo.
    #[error("not an Ed25519 or ECDSA P-256 SubjectPublicKeyInfo public key")]
    BadPublicKey,
    /// Key generation or signing failed in the crypto library.
    #[error("the crypto library failed to generate or sign")]
    Crypto,
}

/// An operator's private signing key. `Debug` never prints the key.
pub struct SigningKey {
    inner: Inner,
    public: PublicKey,
}

enum Inner {
    Ed25519(Ed25519KeyPair),
    P256(EcdsaKeyPair),
}

impl SigningKey {
    /// Generates a key; returns its PKCS#8 DER, to be written as PEM.
    pub fn generate_pkcs8(algorithm: Algorithm) -> Result<Vec<u8>, KeyError> {
        let rng = SystemRandom::new();
        let doc = match algorithm {
            Algorithm::Ed25519 => Ed25519KeyPair::generate_pkcs8(&rng),
            Algorithm::P256 => {
                EcdsaKeyPair::generate_pkcs8(&signature::ECDSA_P256_SHA256_ASN1_SIGNING, &rng)
            }
        }
        .map_err(|_| KeyError::Crypto)?;
        Ok(doc.as_ref().to_vec())
    }

    /// Reads a PKCS#8 DER private key (Ed25519 or P-256).
    pub fn from_pkcs8_der(der: &[u8]) -> Result<SigningKey, KeyError> {
        if let Ok(pair) = Ed25519KeyPair::from_pkcs8_maybe_unchecked(der) {
            let public = PublicKey::from_raw(Algorithm::Ed25519, pair.public_key().as_ref())?;
            return Ok(SigningKey {
                inner: Inner::Ed25519(pair),
                public,
            });
        }
        let rng = SystemRandom::new();
        let pair = EcdsaKeyPair::from_pkcs8(&signature::ECDSA_P256_SHA256_ASN1_SIGNING, der, &rng)
            .map_err(|_| KeyError::BadPrivateKey)?;
        let public = PublicKey::from_raw(Algorithm::P256, pair.public_key().as_ref())?;
        Ok(SigningKey {
            inner: Inner::P256(pair),
            public,
        })
    }

    /// Reads a `PRIVATE KEY` PEM (PKCS#8).
    pub fn from_pem(text: &str) -> Result<SigningKey, KeyError> {
        let der = pem_block(text, "PRIVATE KEY")?;
        SigningKey::from_pkcs8_der(&der)
    }

    /// PKCS#8 DER as `PRIVATE KEY` PEM.
    pub fn pkcs8_pem(der: &[u8]) -> String {
        pem::encode(&pem::Pem::new("PRIVATE KEY", der.to_vec()))
    }

    /// The key's algorithm.
    pub fn algorithm(&self) -> Algorithm {
        self.public.algorithm
    }

    /// The matching public key.
    pub fn public_key(&self) -> &PublicKey {
        &self.public
    }

    /// The key id: hex SHA-256 of the public key's SPKI DER.
    pub fn keyid(&self) -> &str {
        &self.public.keyid
    }

    /// Signs `message` (Ed25519, or ECDSA P-256/SHA-256 in ASN.1 DER).
    pub fn sign(&self, message: &[u8]) -> Result<Vec<u8>, KeyError> {
        match &self.inner {
            Inner::Ed25519(pair) => Ok(pair.sign(message).as_ref().to_vec()),
            Inner::P256(pair) => pair
                .sign(&SystemRandom::new(), message)
                .map(|s| s.as_ref().to_vec())
                .map_err(|_| KeyError::Crypto),
        }
    }
}

impl fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SigningKey")
            .field("algorithm", &self.public.algorithm)
            .field("keyid", &self.public.keyid)
            .field("private_key", &"<redacted>")
            .finish()
    }
}

/// A public key that may sign gold images.
#[derive(Clone, PartialEq, Eq)]
pub struct PublicKey {
    algorithm: Algorithm,
    /// The raw key: 32 bytes (Ed25519) or a 65-byte uncompressed point.
    raw: Vec<u8>,
    spki_der: Vec<u8>,
    keyid: String,
}

impl PublicKey {
    fn from_raw(algorithm: Algorithm, raw: &[u8]) -> Result<PublicKey, KeyError> {
        let prefix = match algorithm {
            Algorithm::Ed25519 => ED25519_SPKI_PREFIX,
            Algorithm::P256 => P256_SPKI_PREFIX,
        };
        let mut spki_der = prefix.to_vec();
        spki_der.extend_from_slice(raw);
        PublicKey::from_spki_der(&spki_der)
    }

    /// Reads a SubjectPublicKeyInfo DER (Ed25519, or P-256 uncompressed).
    pub fn from_spki_der(der: &[u8]) -> Result<PublicKey, KeyError> {
        // DER is unique, so for these two fixed-size key types the encoding
        // is exactly the prefix followed by the key bytes.
        let (algorithm, raw) = if let Some(raw) = der.strip_prefix(ED25519_SPKI_PREFIX) {
            (Algorithm::Ed25519, raw)
        } else if let Some(raw) = der.strip_prefix(P256_SPKI_PREFIX) {
            (Algorithm::P256, raw)
        } else {
            return Err(KeyError::BadPublicKey);
        };
        let ok = match algorithm {
            Algorithm::Ed25519 => raw.len() == 32,
            Algorithm::P256 => raw.len() == 65 && raw.first() == Some(&0x04),
        };
        if !ok {
            return Err(KeyError::BadPublicKey);
        }
        Ok(PublicKey {
            algorithm,
            raw: raw.to_vec(),
            spki_der: der.to_vec(),
            keyid: hex::encode(Sha256::digest(der)),
        })
    }

    /// Reads a `PUBLIC KEY` PEM (SPKI).
    pub fn from_pem(text: &str) -> Result<PublicKey, KeyError> {
        PublicKey::from_spki_der(&pem_block(text, "PUBLIC KEY")?)
    }

    /// The key as `PUBLIC KEY` PEM.
    pub fn to_pem(&self) -> String {
        pem::encode(&pem::Pem::new("PUBLIC KEY", self.spki_der.clone()))
    }

    /// The key's algorithm.
    pub fn algorithm(&self) -> Algorithm {
        self.algorithm
    }

    /// The key id: hex SHA-256 of the SPKI DER.
    pub fn keyid(&self) -> &str {
        &self.keyid
    }

    /// The SPKI DER.
    pub fn spki_der(&self) -> &[u8] {
        &self.spki_der
    }

    /// Whether `sig` is this key's valid signature over `message`.
    pub fn verify(&self, message: &[u8], sig: &[u8]) -> bool {
        let alg: &dyn signature::VerificationAlgorithm = match self.algorithm {
            Algorithm::Ed25519 => &signature::ED25519,
            Algorithm::P256 => &signature::ECDSA_P256_SHA256_ASN1,
        };
        UnparsedPublicKey::new(alg, &self.raw)
            .verify(message, sig)
            .is_ok()
    }
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PublicKey({}, {})", self.algorithm, self.keyid)
    }
}

fn pem_block(text: &str, label: &'static str) -> Result<Vec<u8>, KeyError> {
    pem::parse_many(text)
        .map_err(|_| KeyError::Pem(label))?
        .into_iter()
        .find(|p| p.tag() == label)
        .map(|p| p.into_contents())
        .ok_or(KeyError::Pem(label))
}

#[cfg(test)]
mod tests;
