//! The audit record and checkpoint formats: what is stored, exported,
//! hashed and signed. The encodings are specified in the [module
//! docs](super); this file is their only implementation.

use std::fmt;
use std::time::SystemTime;

use base64::Engine as _;
use serde_json::{Map, Value};
use sha2::{Digest as _, Sha256};

use crate::image::canonical::{encode_value, write_object, write_string};
use crate::image::{PublicKey, SigningKey};

/// The bytes that precede a checkpoint's canonical body in the message the
/// audit key signs, so that the key's signatures cannot be mistaken for
/// anything else: chained checkpoints (with `prev` and `store_generation`).
pub const CHECKPOINT_CONTEXT: &[u8] = b"hallmark.audit.checkpoint.v2\n";

/// The context of the unchained checkpoints that issuers before the chain
/// signed (no `prev`, no `store_generation`); still verified, never written.
pub const LEGACY_CHECKPOINT_CONTEXT: &[u8] = b"hallmark.audit.checkpoint.v1\n";

/// A SHA-256 digest in the chain: the hash of one record's canonical bytes.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RecordHash([u8; 32]);

impl RecordHash {
    /// The `prev` of the first record: 32 zero bytes.
    pub const GENESIS: RecordHash = RecordHash([0; 32]);

    /// The hash of a record's canonical bytes (exactly as stored).
    pub fn of(record_bytes: &[u8]) -> RecordHash {
        RecordHash(Sha256::digest(record_bytes).into())
    }

    /// Parses 64 lowercase hex characters.
    pub fn from_hex(text: &str) -> Option<RecordHash> {
        if text.len() != 64 || text.bytes().any(|b| b.is_ascii_uppercase()) {
            return None;
        }
        let mut out = [0u8; 32];
        hex::decode_to_slice(text, &mut out).ok()?;
        Some(RecordHash(out))
    }

    /// Lowercase hex.
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }
}

impl fmt::Display for RecordHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl fmt::Debug for RecordHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "RecordHash({})", self.to_hex())
    }
}

/// Why stored or exported bytes are not a valid record or checkpoint.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum FormatError {
    /// Not a JSON object.
    #[error("not a JSON object: {0}")]
    NotJson(String),
    /// A member is missing, unknown or of the wrong type.
    #[error("member `{0}` is missing or malformed")]
    Member(&'static str),
    /// Well-formed, but not in canonical form (the bytes would hash
    /// differently from what the issuer wrote).
    #[error("not in canonical form (sorted keys, no whitespace, minimal escapes)")]
    NotCanonical,
}

/// One audit record: the unit that is hash-chained.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditRecord {
    /// Position in the log: 1 for the first record, then +1 each.
    pub seq: u64,
    /// When the issuer wrote it (UTC, nanosecond precision).
    pub time: SystemTime,
    /// What happened, e.g. `svid_minted` (see [`crate::events::SecurityEvent`]).
    pub kind: String,
    /// The event's structured fields.
    pub fields: Map<String, Value>,
    /// Hash of the previous record, [`RecordHash::GENESIS`] for seq 1.
    pub prev: RecordHash,
}

impl AuditRecord {
    /// The canonical bytes: what is stored, exported as one line, and hashed.
    pub fn encode(&self) -> Vec<u8> {
        let body = encode_body(&self.kind, &self.fields);
        encode_with_body(&body, self.prev, self.seq, self.time)
    }

    /// Reads a record, requiring exactly the canonical encoding.
    pub fn decode(bytes: &[u8]) -> Result<AuditRecord, FormatError> {
        let value: Value =
            serde_json::from_slice(bytes).map_err(|e| FormatError::NotJson(e.to_string()))?;
        let Value::Object(mut object) = value else {
            return Err(FormatError::NotJson("not an object".into()));
        };
        let record = AuditRecord {
            fields: match object.remove("fields") {
                Some(Value::Object(fields)) => fields,
                _ => return Err(FormatError::Member("fields")),
            },
            kind: match object.remove("kind") {
                Some(Value::String(kind)) if !kind.is_empty() => kind,
                _ => return Err(FormatError::Member("kind")),
            },
            prev: object
                .remove("prev")
                .as_ref()
                .and_then(Value::as_str)
                .and_then(RecordHash::from_hex)
                .ok_or(FormatError::Member("prev"))?,
            seq: object
                .remove("seq")
                .as_ref()
                .and_then(Value::as_u64)
                .filter(|s| *s > 0)
                .ok_or(FormatError::Member("seq"))?,
            time: object
                .remove("time")
                .as_ref()
                .and_then(Value::as_str)
                .and_then(parse_time)
                .ok_or(FormatError::Member("time"))?,
        };
        if !object.is_empty() {
            return Err(FormatError::NotCanonical);
        }
        if record.encode() != bytes {
            return Err(FormatError::NotCanonical);
        }
        Ok(record)
    }
}

/// The part of a record's canonical bytes that does not depend on its
/// place in the log (`"fields":{...},"kind":"..."`), so the log can encode
/// it before taking its lock.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct EncodedBody(Vec<u8>);

/// Encodes `fields` and `kind` (see [`EncodedBody`]).
pub(crate) fn encode_body(kind: &str, fields: &Map<String, Value>) -> EncodedBody {
    let mut out = Vec::with_capacity(512);
    out.extend_from_slice(b"\"fields\":");
    write_object(&mut out, fields);
    out.extend_from_slice(b",\"kind\":");
    write_string(&mut out, kind);
    EncodedBody(out)
}

/// A record's canonical bytes from its encoded body and its place in the
/// log. The members are written in their sorted order (`fields`, `kind`,
/// `prev`, `seq`, `time`), which is what canonical JSON requires.
pub(crate) fn encode_with_body(
    body: &EncodedBody,
    prev: RecordHash,
    seq: u64,
    time: SystemTime,
) -> Vec<u8> {
    let mut out = Vec::with_capacity(body.0.len() + 160);
    out.push(b'{');
    out.extend_from_slice(&body.0);
    out.extend_from_slice(b",\"prev\":\"");
    out.extend_from_slice(prev.to_hex().as_bytes());
    out.extend_from_slice(b"\",\"seq\":");
    out.extend_from_slice(seq.to_string().as_bytes());
    out.extend_from_slice(b",\"time\":\"");
    out.extend_from_slice(format_time(time).as_bytes());
    out.extend_from_slice(b"\"}");
    out
}

/// The signed statement "the log's record `seq` hashes to `head`".
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checkpoint {
    /// The sequence number of the newest record it covers.
    pub seq: u64,
    /// The hash of record `seq`: through the chain, it commits to every
    /// record up to `seq`.
    pub head: RecordHash,
    /// When it was signed.
    pub time: SystemTime,
    /// Key id (hex SHA-256 of the SPKI) of the audit key that signs it.
    pub key_id: String,
    /// The chain of checkpoints: `None` only in the unchained checkpoints
    /// of issuers before it.
    pub chain: Option<CheckpointChain>,
}

/// What makes checkpoints a chain of their own, and ties them to the
/// database: the members `prev` and `store_generation`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CheckpointChain {
    /// [`CheckpointHash`] of the checkpoint signed before this one
    /// ([`RecordHash::GENESIS`] for the first): removing a checkpoint breaks
    /// the chain.
    pub prev: RecordHash,
    /// How many durable writes the issuer's database had made when this
    /// checkpoint was signed: a database rolled back to before it is
    /// caught at start.
    pub store_generation: u64,
}

/// The hash of a signed checkpoint's canonical line, which the next
/// checkpoint names as `prev` and the database keeps as its anchor.
pub type CheckpointHash = RecordHash;

impl Checkpoint {
    fn body(&self) -> Value {
        let mut body = Map::new();
        body.insert("head".into(), Value::String(self.head.to_hex()));
        body.insert("key_id".into(), Value::String(self.key_id.clone()));
        body.insert("seq".into(), Value::from(self.seq));
        body.insert("time".into(), Value::String(format_time(self.time)));
        if let Some(chain) = &self.chain {
            body.insert("prev".into(), Value::String(chain.prev.to_hex()));
            body.insert(
                "store_generation".into(),
                Value::from(chain.store_generation),
            );
        }
        Value::Object(body)
    }

    /// The exact bytes the audit key signs: [`CHECKPOINT_CONTEXT`] followed
    /// by the canonical JSON of `{head, key_id, prev, seq,
    /// store_generation, time}` ([`LEGACY_CHECKPOINT_CONTEXT`] and `{head,
    /// key_id, seq, time}` for an unchained one).
    pub fn signed_message(&self) -> Vec<u8> {
        let context = if self.chain.is_some() {
            CHECKPOINT_CONTEXT
        } else {
            LEGACY_CHECKPOINT_CONTEXT
        };
        let mut message = context.to_vec();
        message.extend_from_slice(&encode_value(&self.body()));
        message
    }

    /// Signs the checkpoint.
    pub fn sign(self, key: &SigningKey) -> Result<SignedCheckpoint, crate::image::KeyError> {
        let signature = key.sign(&self.signed_message())?;
        Ok(SignedCheckpoint {
            checkpoint: self,
            signature,
        })
    }
}

/// A checkpoint with the audit key's signature.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedCheckpoint {
    /// What is signed.
    pub checkpoint: Checkpoint,
    /// Ed25519 (or ECDSA P-256 ASN.1) signature over
    /// [`Checkpoint::signed_message`].
    pub signature: Vec<u8>,
}

impl SignedCheckpoint {
    /// The canonical line: `{"checkpoint":{...},"signature":"<base64>"}`.
    pub fn encode(&self) -> Vec<u8> {
        let mut object = Map::new();
        object.insert("checkpoint".into(), self.checkpoint.body());
        object.insert(
            "signature".into(),
            Value::String(base64::engine::general_purpose::STANDARD.encode(&self.signature)),
        );
        encode_value(&Value::Object(object))
    }

    /// Reads a checkpoint line, requiring the canonical encoding.
    pub fn decode(bytes: &[u8]) -> Result<SignedCheckpoint, FormatError> {
        let value: Value =
            serde_json::from_slice(bytes).map_err(|e| FormatError::NotJson(e.to_string()))?;
        let body = value
            .get("checkpoint")
            .and_then(Value::as_object)
            .ok_or(FormatError::Member("checkpoint"))?;
        let text = |name: &'static str| {
            body.get(name)
                .and_then(Value::as_str)
                .ok_or(FormatError::Member(name))
        };
        let checkpoint = Checkpoint {
            seq: body
                .get("seq")
                .and_then(Value::as_u64)
                .filter(|s| *s > 0)
                .ok_or(FormatError::Member("seq"))?,
            head: RecordHash::from_hex(text("head")?).ok_or(FormatError::Member("head"))?,
            time: parse_time(text("time")?).ok_or(FormatError::Member("time"))?,
            key_id: text("key_id")?.to_owned(),
            chain: match (body.get("prev"), body.get("store_generation")) {
                (None, None) => None,
                (prev, generation) => Some(CheckpointChain {
                    prev: prev
                        .and_then(Value::as_str)
                        .and_then(RecordHash::from_hex)
                        .ok_or(FormatError::Member("prev"))?,
                    store_generation: generation
                        .and_then(Value::as_u64)
                        .ok_or(FormatError::Member("store_generation"))?,
                }),
            },
        };
        let signature = value
            .get("signature")
            .and_then(Value::as_str)
            .and_then(|s| base64::engine::general_purpose::STANDARD.decode(s).ok())
            .ok_or(FormatError::Member("signature"))?;
        let signed = SignedCheckpoint {
            checkpoint,
            signature,
        };
        if signed.encode() != bytes {
            return Err(FormatError::NotCanonical);
        }
        Ok(signed)
    }

    /// The hash of [`SignedCheckpoint::encode`]: what the next checkpoint
    /// names as `prev`.
    pub fn hash(&self) -> CheckpointHash {
        RecordHash::of(&self.encode())
    }

    /// Whether `key` signed this checkpoint (and the checkpoint names it).
    pub fn verify(&self, key: &PublicKey) -> bool {
        self.checkpoint.key_id == key.keyid()
            && key.verify(&self.checkpoint.signed_message(), &self.signature)
    }
}

/// One line of an export (or one message of `ReadAudit`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Entry {
    /// A record's canonical bytes.
    Record(Vec<u8>),
    /// A signed checkpoint's canonical bytes.
    Checkpoint(Vec<u8>),
}

impl Entry {
    /// Classifies an export line: a JSON object with a `checkpoint` member
    /// is a checkpoint, anything else (even unreadable bytes) a record, so
    /// that a damaged line is reported where it is.
    pub fn from_line(line: &[u8]) -> Entry {
        let is_checkpoint = serde_json::from_slice::<Value>(line)
            .ok()
            .is_some_and(|v| v.get("checkpoint").is_some());
        if is_checkpoint {
            Entry::Checkpoint(line.to_vec())
        } else {
            Entry::Record(line.to_vec())
        }
    }

    /// The bytes, as one export line (without the newline).
    pub fn bytes(&self) -> &[u8] {
        match self {
            Entry::Record(b) | Entry::Checkpoint(b) => b,
        }
    }
}

/// RFC 3339 UTC with exactly nine fractional digits.
pub fn format_time(time: SystemTime) -> String {
    humantime::format_rfc3339_nanos(time).to_string()
}

fn parse_time(text: &str) -> Option<SystemTime> {
    let time = humantime::parse_rfc3339(text).ok()?;
    // Only the form `format_time` writes is canonical.
    (format_time(time) == text).then_some(time)
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, UNIX_EPOCH};

    use proptest::prelude::*;

    use super::*;
    use crate::image::Algorithm;

    fn record(seq: u64, fields: Map<String, Value>) -> AuditRecord {
        AuditRecord {
            seq,
            time: UNIX_EPOCH + Duration::new(1_767_225_600, 5),
            kind: "svid_minted".into(),
            fields,
            prev: RecordHash::GENESIS,
        }
    }

    #[test]
    fn the_encoding_is_exactly_as_documented() {
        let mut fields = Map::new();
        fields.insert("spiffe_id".into(), "spiffe://example.org/a".into());
        fields.insert("ttl_secs".into(), 300.into());
        fields.insert("model_digest".into(), Value::Null);
        let bytes = record(7, fields).encode();
        assert_eq!(
            String::from_utf8(bytes.clone()).unwrap(),
            "{\"fields\":{\"model_digest\":null,\"spiffe_id\":\"spiffe://example.org/a\",\"ttl_secs\":300},\"kind\":\"svid_minted\",\"prev\":\"0000000000000000000000000000000000000000000000000000000000000000\",\"seq\":7,\"time\":\"2026-01-01T00:00:00.000000005Z\"}"
        );
        // The hash is plain SHA-256 of those bytes: `sha256sum` of an export line.
        assert_eq!(
            RecordHash::of(&bytes).to_hex(),
            hex::encode(Sha256::digest(&bytes))
        );
    }

    #[test]
    fn decode_refuses_anything_but_the_canonical_bytes() {
        let bytes = record(3, Map::new()).encode();
        assert_eq!(AuditRecord::decode(&bytes).unwrap(), record(3, Map::new()));
        let text = String::from_utf8(bytes).unwrap();
        for bad in [
            text.replacen("{\"fields\"", "{ \"fields\"", 1),
            text.replacen("\"seq\":3", "\"seq\":3.0", 1),
            text.replacen("\"seq\":3", "\"seq\":0", 1),
            text.replacen(".000000005Z", ".000000005+00:00", 1),
            text.replacen("\"prev\":\"0", "\"prev\":\"A", 1),
            text.replacen("}", ",\"extra\":1}", 1),
            text.replacen("\"kind\":\"svid_minted\"", "\"kind\":\"\"", 1),
        ] {
            assert!(AuditRecord::decode(bad.as_bytes()).is_err(), "{bad}");
        }
    }

    #[test]
    fn checkpoints_sign_and_verify_only_with_their_key() {
        let key =
            SigningKey::from_pkcs8_der(&SigningKey::generate_pkcs8(Algorithm::Ed25519).unwrap())
                .unwrap();
        let other =
            SigningKey::from_pkcs8_der(&SigningKey::generate_pkcs8(Algorithm::Ed25519).unwrap())
                .unwrap();
        let checkpoint = Checkpoint {
            seq: 9,
            head: RecordHash::of(b"x"),
            time: UNIX_EPOCH + Duration::from_secs(1_767_225_600),
            key_id: key.keyid().to_owned(),
            chain: Some(CheckpointChain {
                prev: RecordHash::GENESIS,
                store_generation: 3,
            }),
        };
        let message = checkpoint.signed_message();
        assert!(message.starts_with(CHECKPOINT_CONTEXT));
        let signed = checkpoint.sign(&key).unwrap();
        assert!(signed.verify(key.public_key()));
        assert!(!signed.verify(other.public_key()));
        let line = signed.encode();
        assert!(line.starts_with(b"{\"checkpoint\":{\"head\":"));
        assert_eq!(SignedCheckpoint::decode(&line).unwrap(), signed);
        assert!(matches!(Entry::from_line(&line), Entry::Checkpoint(_)));
        let mut moved = signed.clone();
        moved.checkpoint.seq = 10;
        assert!(!moved.verify(key.public_key()));
        // The chain is signed: neither link can be moved.
        let mut relinked = signed.clone();
        relinked.checkpoint.chain = Some(CheckpointChain {
            prev: RecordHash::of(b"other"),
            store_generation: 3,
        });
        assert!(!relinked.verify(key.public_key()));
        let mut unchained = signed.clone();
        unchained.checkpoint.chain = None;
        assert!(!unchained.verify(key.public_key()));
    }

    #[test]
    fn unchained_checkpoints_of_older_issuers_still_read_and_verify() {
        let key =
            SigningKey::from_pkcs8_der(&SigningKey::generate_pkcs8(Algorithm::Ed25519).unwrap())
                .unwrap();
        let legacy = Checkpoint {
            seq: 4,
            head: RecordHash::of(b"y"),
            time: UNIX_EPOCH + Duration::from_secs(1_767_225_600),
            key_id: key.keyid().to_owned(),
            chain: None,
        };
        assert!(
            legacy
                .signed_message()
                .starts_with(LEGACY_CHECKPOINT_CONTEXT)
        );
        let signed = legacy.sign(&key).unwrap();
        let line = signed.encode();
        assert!(!String::from_utf8_lossy(&line).contains("prev"));
        let read = SignedCheckpoint::decode(&line).unwrap();
        assert_eq!(read.checkpoint.chain, None);
        assert!(read.verify(key.public_key()));
        // Half a chain is malformed.
        let half = String::from_utf8(line).unwrap().replacen(
            "\"seq\":4",
            "\"seq\":4,\"store_generation\":1",
            1,
        );
        assert!(SignedCheckpoint::decode(half.as_bytes()).is_err());
    }

    fn field_value() -> impl Strategy<Value = Value> {
        prop_oneof![
            any::<u64>().prop_map(Value::from),
            any::<bool>().prop_map(Value::from),
            ".*".prop_map(Value::from),
            Just(Value::Null),
            proptest::collection::vec(".*", 0..3).prop_map(Value::from),
        ]
    }

    proptest! {
        #[test]
        fn encode_then_decode_is_the_identity(
            seq in 1u64..,
            secs in 0u64..4_000_000_000,
            nanos in 0u32..1_000_000_000,
            kind in "[a-z_]{1,20}",
            fields in proptest::collection::btree_map(".*", field_value(), 0..6),
            prev in any::<[u8; 32]>(),
        ) {
            let record = AuditRecord {
                seq,
                time: UNIX_EPOCH + Duration::new(secs, nanos),
                kind,
                fields: fields.into_iter().collect(),
                prev: RecordHash(prev),
            };
            let bytes = record.encode();
            prop_assert!(!bytes.contains(&b'\n'), "one line per record");
            // The assembled bytes are exactly the generic canonical JSON.
            let mut object = Map::new();
            object.insert("fields".into(), Value::Object(record.fields.clone()));
            object.insert("kind".into(), Value::String(record.kind.clone()));
            object.insert("prev".into(), Value::String(record.prev.to_hex()));
            object.insert("seq".into(), Value::from(record.seq));
            object.insert("time".into(), Value::String(format_time(record.time)));
            prop_assert_eq!(&bytes, &encode_value(&Value::Object(object)));
            prop_assert_eq!(AuditRecord::decode(&bytes).unwrap(), record);
        }
    }
}
