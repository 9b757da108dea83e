//! Security events: the seam where the tamper-evident audit log plugs in.
//!
//! Every security-relevant outcome (attestation accepted or refused, SVID
//! issued, admin call) is reported here as a structured [`SecurityEvent`].
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
