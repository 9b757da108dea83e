//! Why a signed gold image is refused.

use super::canonical::CanonicalError;
use super::manifest::FieldError;
use super::types::{RiskTier, Timestamp};

/// Why an envelope was refused by [`verify_envelope`](super::verify_envelope).
///
/// [`ImageError::class`] tells the API layer which status code to answer:
/// malformed input is `InvalidArgument`, a well-formed image that the
/// signature policy refuses is `PermissionDenied`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ImageError {
    /// The envelope exceeds the size limit. (Malformed.)
    #[error("envelope is {size} bytes, the limit is {limit} bytes")]
    TooLarge {
        /// Size received.
        size: usize,
        /// The limit.
        limit: usize,
    },
    /// The envelope is not DSSE JSON: truncated, not JSON, a missing or
    /// unknown field. (Malformed.)
    #[error("envelope is not a DSSE JSON envelope: {0}")]
    MalformedEnvelope(String),
    /// The payload type is not the gold-image type. (Malformed.)
    #[error(
        "envelope payloadType is {found:?}, expected \"application/vnd.hallmark.gold-image+json\""
    )]
    WrongPayloadType {
        /// The payload type found.
        found: String,
    },
    /// A base64 field does not decode. (Malformed.)
    #[error("envelope field {field}: not standard base64 with padding")]
    BadBase64 {
        /// `payload` or `signatures[i].sig`.
        field: String,
    },
    /// A signature's keyid is not 64 lowercase hex characters. (Malformed.)
    #[error(
        "envelope field signatures[{index}].keyid: expected 64 lowercase hex characters (sha256 of the signer's SPKI)"
    )]
    BadKeyId {
        /// Index of the signature.
        index: usize,
    },
    /// More signatures than any policy needs. (Malformed.)
    #[error("envelope has {count} signatures, at most {limit} are accepted")]
    TooManySignatures {
        /// Number of signatures.
        count: usize,
        /// The limit.
        limit: usize,
    },
    /// The payload is not the canonical JSON of a valid gold image. (Malformed.)
    #[error(transparent)]
    Payload(#[from] CanonicalError),
    /// A field is invalid in the issuer's context: SPIFFE ID outside the
    /// trust domain, TTL above the cap. (Malformed.)
    #[error("payload {0}")]
    Field(FieldError),
    /// `not_after` has passed: the image is retired. (Malformed at
    /// registration; the matcher skips such images.)
    #[error("payload field not_after: {not_after} has passed, the image is retired")]
    Retired {
        /// The image's `not_after`.
        not_after: Timestamp,
    },
    /// A trusted key's signature does not verify. (Refused.)
    #[error("signature by trusted key {keyid} does not verify")]
    BadSignature {
        /// The trusted key's id.
        keyid: String,
    },
    /// The same key signed more than once. (Refused: a key counts once,
    /// and honest tooling never signs twice.)
    #[error("key {keyid} signed more than once")]
    DuplicateSigner {
        /// The key id seen twice.
        keyid: String,
    },
    /// No signature is from a trusted key. (Refused.)
    #[error("no signature is from a trusted signer (unknown keyids: {})", keyids.join(", "))]
    UnknownSigners {
        /// Key ids of the untrusted signatures.
        keyids: Vec<String>,
    },
    /// Fewer distinct trusted signatures than the risk tier requires. (Refused.)
    #[error(
        "risk tier {tier} needs {required} distinct trusted signatures, found {found}{}",
        if unknown.is_empty() { String::new() } else { format!(" (ignored untrusted keyids: {})", unknown.join(", ")) }
    )]
    TooFewSignatures {
        /// The image's risk tier.
        tier: RiskTier,
        /// Signatures required.
        required: usize,
        /// Distinct trusted signatures found.
        found: usize,
        /// Key ids of untrusted signatures, which did not count.
        unknown: Vec<String>,
    },
}

/// The two families of refusal, for mapping to API status codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ErrorClass {
    /// The input is malformed or invalid: `InvalidArgument`.
    Malformed,
    /// The input is well-formed but the signature policy refuses it:
    /// `PermissionDenied`.
    Refused,
}

impl ImageError {
    /// Which family this refusal belongs to.
    pub fn class(&self) -> ErrorClass {
        match self {
            ImageError::BadSignature { .. }
            | ImageError::DuplicateSigner { .. }
            | ImageError::UnknownSigners { .. }
            | ImageError::TooFewSignatures { .. } => ErrorClass::Refused,
            _ => ErrorClass::Malformed,
        }
    }
}
