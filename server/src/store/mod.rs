//! Persistence: the [`Store`] trait and the records the issuer must not lose.
//!
//! Everything the issuer must keep across restarts goes through a `Store`: CA
//! keys and state, attested nodes, join tokens, gold images, revocations and
//! the last good bundles of federated trust domains.
//! Every write method returns only once the write is durable, so an operator
//! action is never acknowledged before it would survive a crash. The audit
//! log has its own append-only files ([`FileAuditStore`] behind
//! [`AuditStore`]), whose appends are made durable in groups by an explicit
//! flush (see [`crate::audit`]).
//!
//! The embedded default is [`SledStore`]; a PostgreSQL store for several
//! issuers behind one name is the planned second implementation.

mod anchor;
mod audit;
mod audit_file;
mod journal;
mod lock;
mod sled_store;

use serde::{Deserialize, Serialize};

use hallmark_ca::id::SpiffeId;

use crate::federation::FederatedBundleRecord;
use crate::revocation::{Lift, LiftOutcome, Revocation, RevocationId};

pub use anchor::{AnchorStore, AuditAnchor, Mark};
pub use audit::{Appended, AuditStore, StoreFuture};
pub use audit_file::{AUDIT_DIR, CHECKPOINTS_FILE, FileAuditStore, RECORDS_FILE, StoredLog};
pub use lock::{DataDirLock, LOCK_FILE};
pub use sled_store::SledStore;
pub use sled_store::audit::{
    CHECKPOINTS_TREE as LEGACY_AUDIT_CHECKPOINTS_TREE, RECORDS_TREE as LEGACY_AUDIT_RECORDS_TREE,
};

/// Errors from the store.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The underlying database failed (I/O, corruption, lock held by another process).
    #[error("store backend error: {0}")]
    Backend(String),
    /// A stored record could not be decoded: the data is corrupt or from an
    /// incompatible version.
    #[error("stored record {key:?} is corrupt: {reason}")]
    Corrupt {
        /// The record's key.
        key: String,
        /// Why decoding failed.
        reason: String,
    },
    /// Another process holds the data directory (the message says which).
    #[error("{0}")]
    Locked(String),
}

impl From<sled::Error> for StoreError {
    fn from(e: sled::Error) -> Self {
        StoreError::Backend(e.to_string())
    }
}

/// The node attestor that admitted an agent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum NodeAttestorKind {
    /// A single-use join token.
    JoinToken,
    /// Proof of possession of a provisioned node certificate.
    X509pop,
}

impl NodeAttestorKind {
    /// The name used in SPIFFE IDs, config and the CLI.
    pub fn as_str(self) -> &'static str {
        match self {
            NodeAttestorKind::JoinToken => "join_token",
            NodeAttestorKind::X509pop => "x509pop",
        }
    }
}

/// A node SVID the issuer minted for an agent and still honours.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IssuedSvid {
    /// Lowercase hex serial.
    pub serial: String,
    /// Expiry, seconds since the Unix epoch.
    pub expires_at: u64,
}

/// An attested node agent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeRecord {
    /// The agent's SPIFFE ID.
    pub spiffe_id: SpiffeId,
    /// How it attested; `None` for an agent banned while not on record
    /// (evicted first, or banned before it ever attested): nothing is known
    /// of it but its ID.
    pub attestor: Option<NodeAttestorKind>,
    /// The attestor's node identifier; empty when `attestor` is `None`.
    pub node_id: String,
    /// Banned agents cannot attest again until unbanned.
    pub banned: bool,
    /// First successful attestation, seconds since the Unix epoch; 0 when
    /// `attestor` is `None`.
    pub first_attested_at: u64,
    /// Latest successful attestation.
    pub last_attested_at: u64,
    /// Node SVIDs the issuer still honours for this agent (newest last).
    /// Only these serials authenticate the agent on the node API, so an
    /// eviction or ban takes effect at once even though the certificates
    /// themselves are still within their validity.
    pub svids: Vec<IssuedSvid>,
}

impl NodeRecord {
    /// The record of a ban on an agent that is not on record: it keeps the
    /// agent from attesting until an operator lifts the ban.
    pub fn ban_only(spiffe_id: SpiffeId) -> NodeRecord {
        NodeRecord {
            spiffe_id,
            attestor: None,
            node_id: String::new(),
            banned: true,
            first_attested_at: 0,
            last_attested_at: 0,
            svids: Vec::new(),
        }
    }

    /// Whether the agent attested since this record was written (a record
    /// written by [`NodeRecord::ban_only`] has not).
    pub fn attested(&self) -> bool {
        self.attestor.is_some()
    }

    /// The newest node SVID.
    pub fn current_svid(&self) -> Option<&IssuedSvid> {
        self.svids.last()
    }

    /// Whether `serial` is an honoured, unexpired node SVID of this agent.
    pub fn honours(&self, serial: &str, now: u64) -> bool {
        !self.banned
            && self
                .svids
                .iter()
                .any(|s| s.serial == serial && s.expires_at > now)
    }

    /// Records a newly minted SVID and forgets expired ones.
    pub fn push_svid(&mut self, svid: IssuedSvid, now: u64) {
        self.svids.retain(|s| s.expires_at > now);
        self.svids.push(svid);
    }
}

/// A join token, stored by the hash of its secret.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JoinTokenRecord {
    /// sha256 hex of the token: the token itself is never stored.
    pub token_hash: String,
    /// The SPIFFE ID the agent that uses it receives.
    pub spiffe_id: SpiffeId,
    /// Creation time, seconds since the Unix epoch.
    pub created_at: u64,
    /// Expiry, seconds since the Unix epoch.
    pub expires_at: u64,
    /// When it was used, if it was. Used tokens are kept until they expire so
    /// that a second use is reported as reuse, not as an unknown token.
    pub used_at: Option<u64>,
}

/// A registered gold image: the envelope exactly as received, re-verified
/// whenever it is loaded (the store is not trusted to keep it honest).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageRecord {
    /// Image name.
    pub name: String,
    /// Image version.
    pub version: String,
    /// The DSSE envelope (JSON text) as registered.
    pub envelope: String,
    /// Hex SHA-256 of the canonical payload: the image's content identity.
    pub payload_sha256: String,
    /// Registration time, seconds since the Unix epoch.
    pub registered_at: u64,
    /// The registering operator's uid.
    pub registered_by_uid: Option<u32>,
    /// Set once the image is retired.
    pub retired: Option<Retirement>,
}

/// Why and when an image was retired.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Retirement {
    /// Seconds since the Unix epoch.
    pub at: u64,
    /// The operator's reason, or `not_after passed`.
    pub reason: String,
    /// The operator's uid; `None` for automatic retirement.
    pub uid: Option<u32>,
}

impl ImageRecord {
    /// The store key, `name@version`.
    pub fn key(&self) -> String {
        format!("{}@{}", self.name, self.version)
    }
}

/// Outcome of [`Store::put_image_if_absent`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ImagePut {
    /// The image was stored.
    Created,
    /// `name@version` was already stored (nothing was written): here it is.
    Existing(ImageRecord),
}

/// Outcome of [`Store::retire_image`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ImageRetire {
    /// The image is now retired; the record as stored.
    Retired(ImageRecord),
    /// It was retired before (nothing was written).
    AlreadyRetired(ImageRecord),
    /// No such `name@version`.
    NotFound,
}

/// Outcome of [`Store::replace_image_envelope`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum EnvelopeReplace {
    /// The envelope was replaced; the record as stored.
    Replaced(ImageRecord),
    /// The stored payload differs from the one expected, or the image is
    /// gone: nothing was written.
    Mismatch,
}

/// Outcome of [`Store::consume_join_token`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum TokenUse {
    /// The token was valid and is now used up.
    Consumed(JoinTokenRecord),
    /// No token with that hash exists.
    Unknown,
    /// The token expired.
    Expired(JoinTokenRecord),
    /// The token was used before.
    AlreadyUsed(JoinTokenRecord),
}

/// Durable storage for the issuer.
///
/// Implementations must make every write durable before returning, and
/// [`Store::consume_join_token`] must be atomic: of two concurrent uses of
/// one token, exactly one succeeds.
pub trait Store: Send + Sync + std::fmt::Debug + 'static {
    /// The persisted CA state (opaque JSON from `hallmark_ca`), if any.
    fn ca_state(&self) -> Result<Option<Vec<u8>>, StoreError>;
    /// Replaces the persisted CA state.
    fn put_ca_state(&self, state: &[u8]) -> Result<(), StoreError>;

    /// Stores a new join token.
    fn put_join_token(&self, token: &JoinTokenRecord) -> Result<(), StoreError>;
    /// Atomically marks a token used if it exists, is unused and unexpired.
    fn consume_join_token(&self, token_hash: &str, now: u64) -> Result<TokenUse, StoreError>;
    /// The join token with this hash, without using it.
    fn join_token(&self, token_hash: &str) -> Result<Option<JoinTokenRecord>, StoreError>;
    /// Deletes tokens that expired before `now`; returns how many.
    fn prune_join_tokens(&self, now: u64) -> Result<usize, StoreError>;
    /// Number of stored tokens (used or not).
    fn join_token_count(&self) -> Result<usize, StoreError>;

    /// One node by SPIFFE ID.
    fn node(&self, id: &SpiffeId) -> Result<Option<NodeRecord>, StoreError>;
    /// Inserts or replaces a node.
    fn put_node(&self, node: &NodeRecord) -> Result<(), StoreError>;
    /// Deletes a node; returns what was there.
    fn remove_node(&self, id: &SpiffeId) -> Result<Option<NodeRecord>, StoreError>;
    /// Every node, ordered by SPIFFE ID.
    fn nodes(&self) -> Result<Vec<NodeRecord>, StoreError>;

    /// One image by name and version.
    fn image(&self, name: &str, version: &str) -> Result<Option<ImageRecord>, StoreError>;
    /// Stores an image unless `name@version` exists; atomic (of two
    /// concurrent registrations exactly one creates). Returns the existing
    /// record when there is one, and stores nothing.
    fn put_image_if_absent(&self, image: &ImageRecord) -> Result<ImagePut, StoreError>;
    /// Replaces only the envelope of `name@version`, atomically, if its
    /// stored payload is still `payload_sha256` (a later cosignature of the
    /// same image). Everything else, retirement included, is kept as stored.
    fn replace_image_envelope(
        &self,
        name: &str,
        version: &str,
        payload_sha256: &str,
        envelope: &str,
    ) -> Result<EnvelopeReplace, StoreError>;
    /// Marks `name@version` retired unless it already is; atomic, so an
    /// image is retired exactly once (by an operator or automatically).
    fn retire_image(
        &self,
        name: &str,
        version: &str,
        retirement: &Retirement,
    ) -> Result<ImageRetire, StoreError>;
    /// Every image, ordered by `name@version`.
    fn images(&self) -> Result<Vec<ImageRecord>, StoreError>;

    /// Stores a new revocation unless one with its id exists; atomic.
    /// `false`: the id is taken and nothing was written.
    fn put_revocation_if_absent(&self, revocation: &Revocation) -> Result<bool, StoreError>;
    /// Marks revocation `id` lifted unless it already is; atomic, so a
    /// revocation is lifted exactly once.
    fn lift_revocation(&self, id: &RevocationId, lift: &Lift) -> Result<LiftOutcome, StoreError>;
    /// Every revocation, lifted ones included, ordered by id.
    fn revocations(&self) -> Result<Vec<Revocation>, StoreError>;

    /// The last good bundle of every federated trust domain, ordered by
    /// trust domain.
    fn federated_bundles(&self) -> Result<Vec<FederatedBundleRecord>, StoreError>;
    /// Inserts or replaces the bundle of `record.trust_domain`.
    fn put_federated_bundle(&self, record: &FederatedBundleRecord) -> Result<(), StoreError>;
    /// Forgets a trust domain's bundle (federation ended); whether one was stored.
    fn remove_federated_bundle(&self, trust_domain: &str) -> Result<bool, StoreError>;
}
