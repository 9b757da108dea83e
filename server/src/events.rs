//! Security events: the seam where the tamper-evident audit log plugs in.
//!
//! Every security-relevant outcome (attestation accepted or refused, SVID
//! issued, gold image registered, refused or retired, admin call) is
//! reported here as a structured [`SecurityEvent`].
//! Today the sink writes them to the `hallmark::audit` tracing target; the
//! audit-log capability replaces [`EventSink`]'s implementation with a durable,
//! hash-chained store without touching the call sites.

use std::fmt::Debug;

use hallmark_ca::id::SpiffeId;

/// Something the audit trail must show.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum SecurityEvent {
    /// A node agent attested.
    NodeAttested {
        /// The agent's SPIFFE ID.
        agent: SpiffeId,
        /// `join_token` or `x509pop`.
        attestor: &'static str,
        /// Serial of the node SVID issued.
        serial: String,
        /// Where the agent connected from.
        peer: String,
    },
    /// A node attestation was refused.
    NodeAttestationRefused {
        /// `join_token`, `x509pop`, or `unknown` before the attestor is known.
        attestor: &'static str,
        /// Why, as told to the agent.
        reason: String,
        /// Where the agent connected from.
        peer: String,
    },
    /// An agent renewed its node SVID.
    NodeSvidRenewed {
        /// The agent.
        agent: SpiffeId,
        /// The new serial.
        serial: String,
    },
    /// A workload credential was issued.
    SvidMinted {
        /// `x509` or `jwt`.
        kind: &'static str,
        /// Serial (X.509) or `jti` (JWT).
        id: String,
        /// The workload's SPIFFE ID.
        spiffe_id: SpiffeId,
        /// `name@version` of the gold image.
        image: String,
        /// The executable digest.
        code_sha256: String,
        /// The model digest, if the image binds one.
        model_digest: Option<String>,
        /// The agent that asked.
        node: SpiffeId,
        /// Lifetime in seconds.
        ttl_secs: u64,
    },
    /// A workload credential was refused.
    SvidRefused {
        /// `x509` or `jwt`.
        kind: &'static str,
        /// The agent that asked.
        node: SpiffeId,
        /// Why, as told to the agent.
        reason: String,
        /// Digest of the evidence (see `issuance::evidence_digest`).
        evidence_digest: String,
    },
    /// A gold image was registered, or registered again (idempotently).
    ImageRegistered {
        /// `name@version`.
        image: String,
        /// Hex SHA-256 of the canonical payload.
        payload_sha256: String,
        /// Key ids of the trusted signers that counted.
        signers: Vec<String>,
        /// `false` when `name@version` was already registered with this
        /// payload (the envelope may have gained cosignatures).
        created: bool,
        /// The operator's uid.
        uid: Option<u32>,
    },
    /// A gold image registration was refused; nothing was stored.
    ImageRegistrationRefused {
        /// Hex SHA-256 of the envelope bytes received, to correlate with
        /// the operator's file.
        envelope_sha256: String,
        /// The status code answered.
        code: String,
        /// Why, as told to the operator.
        reason: String,
        /// The operator's uid.
        uid: Option<u32>,
    },
    /// A gold image was retired: it mints no more.
    ImageRetired {
        /// `name@version`.
        image: String,
        /// The operator's reason, or `not_after passed`.
        reason: String,
        /// The operator's uid; `None` for automatic retirement.
        uid: Option<u32>,
    },
    /// The kill switch: a revocation was created and is in force.
    KillCreated {
        /// The revocation's id.
        id: String,
        /// What it revokes, `<kind> <value>` (e.g. `image invoice@1.0.0`).
        target: String,
        /// The operator's reason.
        reason: String,
        /// The operator's uid.
        uid: Option<u32>,
    },
    /// A revocation was lifted.
    KillLifted {
        /// The revocation's id.
        id: String,
        /// What it revoked, `<kind> <value>`.
        target: String,
        /// The operator's reason for lifting it.
        reason: String,
        /// The operator's uid.
        uid: Option<u32>,
    },
    /// An operator called the admin API.
    AdminCall {
        /// The RPC name.
        method: &'static str,
        /// The caller's uid from the socket's peer credentials.
        uid: Option<u32>,
        /// What it did, or why it failed.
        outcome: String,
    },
}

/// Receives security events.
pub trait EventSink: Send + Sync + Debug + 'static {
    /// Records one event.
    fn record(&self, event: SecurityEvent);
}

/// Writes events as structured logs on the `hallmark::audit` target.
#[derive(Debug, Default)]
pub struct TracingSink;

impl EventSink for TracingSink {
    fn record(&self, event: SecurityEvent) {
        match event {
            SecurityEvent::NodeAttested {
                agent,
                attestor,
                serial,
                peer,
            } => {
                tracing::info!(target: "hallmark::audit", %agent, attestor, %serial, %peer, "node attested");
            }
            SecurityEvent::NodeAttestationRefused {
                attestor,
                reason,
                peer,
            } => {
                tracing::warn!(target: "hallmark::audit", attestor, %reason, %peer, "node attestation refused");
            }
            SecurityEvent::NodeSvidRenewed { agent, serial } => {
                tracing::info!(target: "hallmark::audit", %agent, %serial, "node svid renewed");
            }
            SecurityEvent::SvidMinted {
                kind,
                id,
                spiffe_id,
                image,
                code_sha256,
                model_digest,
                node,
                ttl_secs,
            } => {
                tracing::info!(target: "hallmark::audit", kind, %id, %spiffe_id, %image, %code_sha256, ?model_digest, %node, ttl_secs, "svid minted");
            }
            SecurityEvent::SvidRefused {
                kind,
                node,
                reason,
                evidence_digest,
            } => {
                tracing::warn!(target: "hallmark::audit", kind, %node, %reason, %evidence_digest, "svid refused");
            }
            SecurityEvent::ImageRegistered {
                image,
                payload_sha256,
                signers,
                created,
                uid,
            } => {
                tracing::info!(target: "hallmark::audit", %image, %payload_sha256, ?signers, created, ?uid, "image registered");
            }
            SecurityEvent::ImageRegistrationRefused {
                envelope_sha256,
                code,
                reason,
                uid,
            } => {
                tracing::warn!(target: "hallmark::audit", %envelope_sha256, %code, %reason, ?uid, "image registration refused");
            }
            SecurityEvent::ImageRetired { image, reason, uid } => {
                let automatic = uid.is_none();
                tracing::info!(target: "hallmark::audit", %image, %reason, ?uid, automatic, "image retired");
            }
            SecurityEvent::KillCreated {
                id,
                target,
                reason,
                uid,
            } => {
                tracing::warn!(target: "hallmark::audit", %id, %target, %reason, ?uid, "kill created");
            }
            SecurityEvent::KillLifted {
                id,
                target,
                reason,
                uid,
            } => {
                tracing::warn!(target: "hallmark::audit", %id, %target, %reason, ?uid, "kill lifted");
            }
            SecurityEvent::AdminCall {
                method,
                uid,
                outcome,
            } => {
                tracing::info!(target: "hallmark::audit", method, ?uid, %outcome, "admin call");
            }
        }
    }
}
