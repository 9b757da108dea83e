//! Verification of a signed gold image: what registration, the matcher and
//! `image verify` all run.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use hallmark_ca::id::TrustDomain;
use sha2::{Digest, Sha256};

use super::canonical;
use super::dsse::{self, Envelope, KeyError, PAYLOAD_TYPE, PublicKey};
use super::error::ImageError;
use super::manifest::{FieldError, GoldImage};
use super::types::RiskTier;

/// Largest envelope accepted, in bytes.
pub const MAX_ENVELOPE_BYTES: usize = 64 * 1024;
/// Most signatures accepted on one envelope.
pub const MAX_SIGNATURES: usize = 16;
/// Default and hard default cap on SVID lifetimes.
pub const DEFAULT_MAX_SVID_TTL: Duration = Duration::from_secs(300);

/// The public keys whose signatures count, by keyid.
#[derive(Debug, Clone, Default)]
pub struct TrustedSigners {
    keys: BTreeMap<String, PublicKey>,
}

/// A trusted signer file that could not be read.
#[derive(Debug, thiserror::Error)]
#[error("{path}: {reason}")]
pub struct SignerFileError {
    /// The file.
    pub path: PathBuf,
    /// What went wrong.
    pub reason: String,
}

impl TrustedSigners {
    /// An empty set.
    pub fn new() -> TrustedSigners {
        TrustedSigners::default()
    }

    /// Adds a key; returns `false` if it was already present.
    pub fn insert(&mut self, key: PublicKey) -> bool {
        self.keys.insert(key.keyid().to_owned(), key).is_none()
    }

    /// Loads `PUBLIC KEY` PEM files (one key per file).
    pub fn load(paths: &[PathBuf]) -> Result<TrustedSigners, SignerFileError> {
        let mut signers = TrustedSigners::new();
        for path in paths {
            let err = |reason: String| SignerFileError {
                path: path.clone(),
                reason,
            };
            let text = std::fs::read_to_string(path).map_err(|e| err(e.to_string()))?;
            let key = PublicKey::from_pem(&text).map_err(|e: KeyError| err(e.to_string()))?;
            signers.insert(key);
        }
        Ok(signers)
    }

    /// Loads one file; see [`TrustedSigners::load`].
    pub fn load_one(path: &Path) -> Result<TrustedSigners, SignerFileError> {
        TrustedSigners::load(&[path.to_path_buf()])
    }

    /// The key with this id.
    pub fn get(&self, keyid: &str) -> Option<&PublicKey> {
        self.keys.get(keyid)
    }

    /// The key ids, sorted.
    pub fn keyids(&self) -> impl Iterator<Item = &str> {
        self.keys.keys().map(String::as_str)
    }

    /// Number of keys.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// Whether there are no keys.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }
}

/// How many distinct trusted signatures each risk tier needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SignaturePolicy {
    required: [usize; 4],
}

/// A signature policy that would accept unsigned images or can never be met.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("signature policy for risk tier {tier}: {reason}")]
pub struct PolicyError {
    /// The tier.
    pub tier: RiskTier,
    /// What is wrong.
    pub reason: String,
}

impl Default for SignaturePolicy {
    /// low 1, medium 1, high 2, critical 2.
    fn default() -> Self {
        SignaturePolicy {
            required: [1, 1, 2, 2],
        }
    }
}

impl SignaturePolicy {
    /// A policy; each count must be from 1 to [`MAX_SIGNATURES`].
    pub fn new(
        low: usize,
        medium: usize,
        high: usize,
        critical: usize,
    ) -> Result<SignaturePolicy, PolicyError> {
        let required = [low, medium, high, critical];
        for (tier, n) in RiskTier::ALL.into_iter().zip(required) {
            if n == 0 || n > MAX_SIGNATURES {
                return Err(PolicyError {
                    tier,
                    reason: format!("{n} signatures: must be from 1 to {MAX_SIGNATURES}"),
                });
            }
        }
        Ok(SignaturePolicy { required })
    }

    /// Distinct trusted signatures required for `tier`.
    pub fn required(&self, tier: RiskTier) -> usize {
        let index = RiskTier::ALL
            .iter()
            .position(|t| *t == tier)
            .unwrap_or(RiskTier::ALL.len() - 1);
        self.required.get(index).copied().unwrap_or(usize::MAX)
    }
}

/// What the issuer knows that the image must fit.
#[derive(Debug, Clone)]
pub struct ImageContext {
    /// The issuer's trust domain.
    pub trust_domain: TrustDomain,
    /// Cap on `x509_ttl` and `jwt_ttl`.
    pub max_svid_ttl: Duration,
    /// The current time (for `not_after`).
    pub now: SystemTime,
}

impl ImageContext {
    /// A context with the default TTL cap and the current time.
    pub fn new(trust_domain: TrustDomain) -> ImageContext {
        ImageContext {
            trust_domain,
            max_svid_ttl: DEFAULT_MAX_SVID_TTL,
            now: SystemTime::now(),
        }
    }
}

/// A gold image whose envelope, signatures and fields all verified.
#[derive(Debug, Clone)]
pub struct VerifiedImage {
    /// The image.
    pub image: GoldImage,
    /// The envelope bytes as received.
    pub envelope: Vec<u8>,
    /// Key ids of the distinct trusted signers that counted, sorted.
    pub signers: Vec<String>,
    /// Key ids of signatures from untrusted keys, which did not count.
    pub unknown_signers: Vec<String>,
    /// Lowercase hex SHA-256 of the payload (the canonical JSON): equal
    /// payloads mean the same image, whatever the signatures.
    pub payload_sha256: String,
}

/// Verifies an envelope completely.
///
/// Order: size, envelope syntax, payload type, every signature (a trusted
/// key's bad signature is an error; a duplicate keyid is an error; untrusted
/// keys are collected and do not count), then the payload (canonical JSON of
/// a valid gold image), the tier's signature count, and the fields that
/// depend on the issuer (trust domain, TTL cap, `not_after`).
pub fn verify_envelope(
    bytes: &[u8],
    signers: &TrustedSigners,
    policy: &SignaturePolicy,
    ctx: &ImageContext,
) -> Result<VerifiedImage, ImageError> {
    if bytes.len() > MAX_ENVELOPE_BYTES {
        return Err(ImageError::TooLarge {
            size: bytes.len(),
            limit: MAX_ENVELOPE_BYTES,
        });
    }
    let envelope = parse_envelope(bytes)?;
    let payload = envelope
        .decode_payload()
        .map_err(|_| ImageError::BadBase64 {
            field: "payload".to_owned(),
        })?;
    let message = dsse::pae(&envelope.payload_type, &payload);

    let mut seen = BTreeSet::new();
    let mut trusted = Vec::new();
    let mut unknown = Vec::new();
    for (index, s) in envelope.signatures.iter().enumerate() {
        if !is_keyid(&s.keyid) {
            return Err(ImageError::BadKeyId { index });
        }
        if !seen.insert(s.keyid.as_str()) {
            return Err(ImageError::DuplicateSigner {
                keyid: s.keyid.clone(),
            });
        }
        let sig = dsse::decode_base64(&s.sig).map_err(|_| ImageError::BadBase64 {
            field: format!("signatures[{index}].sig"),
        })?;
        match signers.get(&s.keyid) {
            Some(key) if key.verify(&message, &sig) => trusted.push(s.keyid.clone()),
            Some(_) => {
                return Err(ImageError::BadSignature {
                    keyid: s.keyid.clone(),
                });
            }
            None => unknown.push(s.keyid.clone()),
        }
    }
    if trusted.is_empty() && !unknown.is_empty() {
        return Err(ImageError::UnknownSigners { keyids: unknown });
    }

    let image = canonical::decode(&payload)?;
    let required = policy.required(image.risk_tier);
    if trusted.len() < required {
        return Err(ImageError::TooFewSignatures {
            tier: image.risk_tier,
            required,
            found: trusted.len(),
            unknown,
        });
    }
    check_context(&image, ctx)?;
    trusted.sort();
    Ok(VerifiedImage {
        image,
        envelope: bytes.to_vec(),
        signers: trusted,
        unknown_signers: unknown,
        payload_sha256: hex::encode(Sha256::digest(&payload)),
    })
}

/// Parses envelope JSON and checks its payload type (no signature checked).
pub fn parse_envelope(bytes: &[u8]) -> Result<Envelope, ImageError> {
    let envelope: Envelope =
        serde_json::from_slice(bytes).map_err(|e| ImageError::MalformedEnvelope(e.to_string()))?;
    if envelope.payload_type != PAYLOAD_TYPE {
        return Err(ImageError::WrongPayloadType {
            found: envelope.payload_type,
        });
    }
    if envelope.signatures.len() > MAX_SIGNATURES {
        return Err(ImageError::TooManySignatures {
            count: envelope.signatures.len(),
            limit: MAX_SIGNATURES,
        });
    }
    Ok(envelope)
}

/// The checks that need the issuer's context.
pub fn check_context(image: &GoldImage, ctx: &ImageContext) -> Result<(), ImageError> {
    let td = &ctx.trust_domain;
    if !image.spiffe_id.is_member_of(td) {
        return Err(ImageError::Field(FieldError::new(
            "spiffe_id",
            format!("{} is not in trust domain {td}", image.spiffe_id),
        )));
    }
    if let Some(nodes) = &image.nodes {
        for (i, prefix) in nodes.spiffe_id_prefixes.iter().enumerate() {
            if !prefix.is_member_of(td) {
                return Err(ImageError::Field(FieldError::new(
                    format!("nodes.spiffe_id_prefixes[{i}]"),
                    format!("{prefix} is not in trust domain {td}"),
                )));
            }
        }
    }
    let cap = ctx.max_svid_ttl.as_secs();
    for (field, ttl) in [("x509_ttl", image.x509_ttl), ("jwt_ttl", image.jwt_ttl)] {
        if let Some(ttl) = ttl
            && ttl > cap
        {
            return Err(ImageError::Field(FieldError::new(
                field,
                format!("{ttl} seconds exceeds the issuer's max_svid_ttl of {cap} seconds"),
            )));
        }
    }
    if image.expired(ctx.now) {
        return Err(ImageError::Retired {
            not_after: image.not_after,
        });
    }
    Ok(())
}

fn is_keyid(s: &str) -> bool {
    s.len() == 64
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

#[cfg(test)]
mod tests;
