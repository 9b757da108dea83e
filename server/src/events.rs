//! Security events: what the tamper-evident audit log records.
//!
//! Every security-relevant outcome (attestation accepted or refused, SVID
//! issued or refused, gold image registered, cosigned, refused or retired,
//! kill and lift, join token generated, agent evicted, banned or unbanned,
//! admin call) is reported here as a structured [`SecurityEvent`] to an
//! [`EventSink`]. The issuer's sink is the audit log
//! ([`crate::audit::AuditLog`]); its record kind and fields come from this
//! enum's serde form (kind = the variant in snake case, fields = the
//! variant's fields), so adding a kind is adding a variant here, plus its
//! log line in [`log_event`].
//!
//! Writing the record is part of the operation: [`EventSink::record`]
//! returns a [`Recorded`] future, and a caller that acts on the outcome
//! (returns an SVID, answers an operator) awaits it first and fails closed
//! when it fails.
//!
//! Refusals are the exception to one record per event: the issuer's sink is
//! wrapped in a [`RefusalLimiter`], which records the first refusal per
//! source, reason and interval in full and only counts the others, so that
//! nobody can fill the audit log by being refused.

pub(crate) mod limit;

pub use limit::{
    ANY, DEFAULT_REFUSAL_INTERVAL, DEFAULT_REFUSAL_REASONS_PER_SOURCE, DEFAULT_REFUSAL_SOURCES,
    REFUSED_KINDS, RefusalLimiter, RefusalLimits,
};

use std::fmt::Debug;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use serde::Serialize;
use serde_json::{Map, Value};

use hallmark_ca::id::SpiffeId;

pub use crate::audit::AuditError;

/// Something the audit trail must show.
///
/// The serde form is the audit record's `kind` (the variant's name in snake
/// case) and `fields` (the variant's fields by name; `None` is `null`).
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "kind", content = "fields", rename_all = "snake_case")]
#[non_exhaustive]
pub enum SecurityEvent {
    /// The issuer started (and opened its audit log).
    IssuerStarted {
        /// The issuer's version.
        version: &'static str,
        /// Key id of the audit key that signs checkpoints.
        audit_key_id: String,
    },
    /// The issuer is shutting down cleanly; a checkpoint covering this
    /// record follows.
    IssuerStopping {
        /// The issuer's version.
        version: &'static str,
    },
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
        #[serde(rename = "svid_type")]
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
        #[serde(rename = "svid_type")]
        kind: &'static str,
        /// The agent that asked.
        node: SpiffeId,
        /// Why, as told to the agent.
        reason: String,
        /// Digest of the evidence (see `issuance::evidence_digest`).
        evidence_digest: String,
        /// The workload's class: what it runs, without its pid, uid or
        /// start time (see `issuance::workload_class`), `none` without
        /// evidence. Refusals are aggregated per node and class.
        workload: String,
    },
    /// Workload API requests an agent refused itself (the issuer never saw
    /// them), as the agent reported them (`ReportRefusals`).
    WorkloadRefused {
        /// The agent that refused and reported.
        node: SpiffeId,
        /// What refused: `sender`, `challenge`, `exec`, `evidence`, `limit`
        /// or `revoked`.
        refused_by: String,
        /// The Workload API call: `x509` or `jwt`.
        call: String,
        /// The code and message the workload got.
        reason: String,
        /// The workload's uid.
        uid: u32,
        /// The workload's pid (of the last refusal counted).
        pid: i32,
        /// The workload's executable, when the agent could read it.
        exe_path: Option<String>,
        /// How many alike refusals the agent counted in this one.
        count: u64,
    },
    /// A node's minting call was refused for exceeding its per-node limit
    /// (`ResourceExhausted`).
    NodeRateLimited {
        /// The agent.
        node: SpiffeId,
        /// The call: `mint_x509_svids`, `mint_jwt_svid` or `renew_agent_svid`.
        call: &'static str,
        /// Why, as told to the agent (the limit and when to retry).
        reason: String,
    },
    /// Refusals counted but not recorded one by one: the first refusal of
    /// this source, kind and reason in the interval was recorded in full
    /// (`first_seq`), and `count` more followed before `interval_end`.
    RefusalsSuppressed {
        /// The peer's IP address (unauthenticated calls), the node's SPIFFE
        /// ID (what a node reports), or `*` for the sources beyond the
        /// limiter's capacity.
        source: String,
        /// The workload class of workload refusals (`null` otherwise).
        workload: Option<String>,
        /// The kind of the refusals counted (`node_attestation_refused`,
        /// `svid_refused`, `workload_refused`, `node_rate_limited`).
        refused_kind: &'static str,
        /// Their reason (the call, for `node_rate_limited`), or `*` for
        /// the bucket that counts a source's reasons beyond its own cap.
        reason: String,
        /// How many refusals were counted and not recorded.
        count: u64,
        /// When the first refusal was recorded (RFC 3339).
        interval_start: String,
        /// When the interval ended, or when it was cut short by shutdown.
        interval_end: String,
        /// The sequence number of the first refusal's full record.
        first_seq: Option<u64>,
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
    /// A registered gold image gained trusted signatures (a cosigned
    /// envelope of the same payload replaced the stored one).
    ImageCosigned {
        /// `name@version`.
        image: String,
        /// Hex SHA-256 of the canonical payload.
        payload_sha256: String,
        /// Key ids of the trusted signers that count now.
        signers: Vec<String>,
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
    /// A join token was generated (the token itself is never recorded).
    TokenGenerated {
        /// The agent ID the token admits.
        spiffe_id: SpiffeId,
        /// The token's node id (a prefix of its hash, as in the agent ID).
        token_id: String,
        /// Expiry, seconds since the Unix epoch.
        expires_at: u64,
        /// The operator's uid.
        uid: Option<u32>,
    },
    /// An agent was evicted: it must attest again.
    AgentEvicted {
        /// The agent.
        agent: SpiffeId,
        /// The operator's uid.
        uid: Option<u32>,
    },
    /// An agent was banned: it cannot attest until unbanned.
    AgentBanned {
        /// The agent.
        agent: SpiffeId,
        /// Whether it was on record (attested) when banned; `false` for an
        /// agent evicted before, or not attested yet.
        on_record: bool,
        /// The operator's uid.
        uid: Option<u32>,
    },
    /// An agent's ban was lifted.
    AgentUnbanned {
        /// The agent.
        agent: SpiffeId,
        /// The operator's uid.
        uid: Option<u32>,
    },
    /// The issuer re-read its config (`SIGHUP`): the trusted signers and
    /// signature policy now in force.
    ConfigReloaded {
        /// Key ids of the trusted signers now.
        signers: Vec<String>,
        /// Gold images that verify (and so may mint) with them.
        images_minting: u64,
        /// Changed settings that only a restart applies.
        needs_restart: Vec<String>,
    },
    /// An operator started a new audit log (`hallmark-server audit reset`):
    /// always the first record of the new log, naming the old one's head.
    AuditReset {
        /// Why, as the operator gave it.
        reason: String,
        /// The operator's uid.
        uid: Option<u32>,
        /// The old log's last record (0: it had none).
        old_last_seq: u64,
        /// That record's hash (`null` when none).
        old_head: Option<String>,
        /// The seq the old log's newest checkpoint covered (0: none).
        old_checkpoint_seq: u64,
        /// That checkpoint line's hash.
        old_checkpoint: Option<String>,
        /// What the database's anchor said of the old log.
        old_anchor_seq: Option<u64>,
        /// Where the old audit files were moved.
        moved_to: Option<String>,
    },
    /// A federated trust domain's bundle changed: fetched from its bundle
    /// endpoint (or first fetched after a bootstrap bundle), checked,
    /// stored, and sent to every agent.
    FederatedBundleUpdated {
        /// The federated trust domain.
        trust_domain: String,
        /// The bundle endpoint it came from.
        endpoint: String,
        /// Its `spiffe_sequence`.
        sequence: u64,
        /// How many X.509 authorities it holds.
        x509_authorities: u64,
        /// The key ids of its JWT authorities.
        jwt_key_ids: Vec<String>,
        /// SHA-256 of the bundle document as stored (hex).
        sha256: String,
    },
    /// A federated bundle refresh failed or its bundle was refused; the
    /// last good bundle stays in force. Recorded once per distinct reason
    /// (the retries in between are logged, not recorded).
    FederatedBundleRefused {
        /// The federated trust domain.
        trust_domain: String,
        /// The bundle endpoint.
        endpoint: String,
        /// Why.
        reason: String,
    },
    /// A trust domain is no longer federated (it left the config): its
    /// stored bundle was deleted and agents no longer receive it.
    FederationEnded {
        /// The trust domain.
        trust_domain: String,
    },
    /// An operator called the admin API.
    AdminCall {
        /// The RPC name.
        method: &'static str,
        /// The caller's uid from the socket's peer credentials.
        uid: Option<u32>,
        /// The gRPC status code answered (`Ok` on success).
        code: String,
        /// What it did, or why it failed.
        outcome: String,
    },
}

impl SecurityEvent {
    /// The audit record's `kind` and `fields` for this event.
    pub fn record_parts(&self) -> Result<(String, Map<String, Value>), serde_json::Error> {
        use serde::ser::Error as _;
        let mut value = match serde_json::to_value(self)? {
            Value::Object(object) => object,
            _ => return Err(serde_json::Error::custom("an event is not an object")),
        };
        let kind = match value.remove("kind") {
            Some(Value::String(kind)) => kind,
            _ => return Err(serde_json::Error::custom("an event has no kind")),
        };
        let fields = match value.remove("fields") {
            Some(Value::Object(fields)) => fields,
            None => Map::new(),
            Some(_) => {
                return Err(serde_json::Error::custom(
                    "an event's fields are not an object",
                ));
            }
        };
        Ok((kind, fields))
    }
}

/// The outcome of [`EventSink::record`]: resolves once the record is
/// durable, or with the error that kept it from being written.
#[must_use = "an audit record is durable only once this resolves; act on its error"]
pub struct Recorded {
    durable: Pin<Box<dyn Future<Output = Result<(), AuditError>> + Send + 'static>>,
    seq: Option<u64>,
}

impl Recorded {
    /// Wraps the future that makes a record durable.
    pub fn new(durable: impl Future<Output = Result<(), AuditError>> + Send + 'static) -> Self {
        Recorded {
            durable: Box::pin(durable),
            seq: None,
        }
    }

    /// An outcome known at once.
    pub fn ready(result: Result<(), AuditError>) -> Self {
        Recorded::new(std::future::ready(result))
    }

    /// Says which sequence number the record took in the log.
    pub fn numbered(mut self, seq: u64) -> Self {
        self.seq = Some(seq);
        self
    }

    /// The record's sequence number in the log, when the sink numbers its
    /// records (the audit log does) and the record was appended.
    pub fn seq(&self) -> Option<u64> {
        self.seq
    }

    /// Awaits every outcome; the first error, if any. The records keep the
    /// order in which they were recorded however they are awaited.
    pub async fn all(recorded: Vec<Recorded>) -> Result<(), AuditError> {
        futures::future::try_join_all(recorded).await.map(|_| ())
    }
}

impl Future for Recorded {
    type Output = Result<(), AuditError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        self.durable.as_mut().poll(cx)
    }
}

impl Debug for Recorded {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Recorded")
            .field("seq", &self.seq)
            .finish_non_exhaustive()
    }
}

/// Receives security events.
pub trait EventSink: Send + Sync + Debug + 'static {
    /// Records one event. The record takes its place in the log when this
    /// is called (so records keep the order of the calls, however their
    /// futures are awaited); the returned future resolves once it is
    /// durable, or with the error that kept it from being written.
    fn record(&self, event: SecurityEvent) -> Recorded;
}

/// Writes events as structured logs on the `hallmark::audit` target.
#[derive(Debug, Default)]
pub struct TracingSink;

impl EventSink for TracingSink {
    fn record(&self, event: SecurityEvent) -> Recorded {
        log_event(&event);
        Recorded::ready(Ok(()))
    }
}

/// Writes one event as a structured log line on the `hallmark::audit`
/// target (the audit log does too, inside a span naming the record's seq).
pub fn log_event(event: &SecurityEvent) {
    match event {
        SecurityEvent::IssuerStarted {
            version,
            audit_key_id,
        } => {
            tracing::info!(target: "hallmark::audit", version, %audit_key_id, "issuer started");
        }
        SecurityEvent::FederatedBundleUpdated {
            trust_domain,
            endpoint,
            sequence,
            x509_authorities,
            jwt_key_ids,
            sha256,
        } => {
            tracing::info!(target: "hallmark::audit", %trust_domain, %endpoint, sequence, x509_authorities, ?jwt_key_ids, %sha256, "federated bundle updated");
        }
        SecurityEvent::FederatedBundleRefused {
            trust_domain,
            endpoint,
            reason,
        } => {
            tracing::warn!(target: "hallmark::audit", %trust_domain, %endpoint, %reason, "federated bundle refused");
        }
        SecurityEvent::FederationEnded { trust_domain } => {
            tracing::warn!(target: "hallmark::audit", %trust_domain, "federation ended");
        }
        SecurityEvent::IssuerStopping { version } => {
            tracing::info!(target: "hallmark::audit", version, "issuer stopping");
        }
        SecurityEvent::ConfigReloaded {
            signers,
            images_minting,
            needs_restart,
        } => {
            tracing::warn!(target: "hallmark::audit", ?signers, images_minting, ?needs_restart, "config reloaded");
        }
        SecurityEvent::AuditReset {
            reason,
            old_last_seq,
            old_head,
            moved_to,
            ..
        } => {
            tracing::warn!(target: "hallmark::audit", %reason, old_last_seq, ?old_head, ?moved_to, "a new audit log was started");
        }
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
            // The hottest event (one per SVID, tens of thousands a second
            // under load): the audit log is its record, `audit tail -f`
            // follows it, and a log line per SVID cost ~5% of the issuer's
            // CPU. Refusals stay at info.
            tracing::debug!(target: "hallmark::audit", kind, %id, %spiffe_id, %image, %code_sha256, ?model_digest, %node, ttl_secs, "svid minted");
        }
        SecurityEvent::SvidRefused {
            kind,
            node,
            reason,
            evidence_digest,
            workload,
        } => {
            tracing::warn!(target: "hallmark::audit", kind, %node, %reason, %evidence_digest, %workload, "svid refused");
        }
        SecurityEvent::WorkloadRefused {
            node,
            refused_by,
            call,
            reason,
            uid,
            pid,
            exe_path,
            count,
        } => {
            tracing::warn!(target: "hallmark::audit", %node, %refused_by, %call, %reason, uid, pid, ?exe_path, count, "workload refused by its agent");
        }
        SecurityEvent::NodeRateLimited { node, call, reason } => {
            tracing::warn!(target: "hallmark::audit", %node, call, %reason, "node rate limited");
        }
        SecurityEvent::RefusalsSuppressed {
            source,
            workload,
            refused_kind,
            reason,
            count,
            interval_start,
            interval_end,
            first_seq,
        } => {
            tracing::warn!(target: "hallmark::audit", %source, ?workload, refused_kind, %reason, count, %interval_start, %interval_end, ?first_seq, "refusals counted, not recorded one by one");
        }
        SecurityEvent::ImageRegistered {
            image,
            payload_sha256,
            signers,
            created,
            uid,
        } => {
            tracing::info!(target: "hallmark::audit", %image, %payload_sha256, ?signers, created, uid, "image registered");
        }
        SecurityEvent::ImageCosigned {
            image,
            payload_sha256,
            signers,
            uid,
        } => {
            tracing::info!(target: "hallmark::audit", %image, %payload_sha256, ?signers, uid, "image cosigned");
        }
        SecurityEvent::ImageRegistrationRefused {
            envelope_sha256,
            code,
            reason,
            uid,
        } => {
            tracing::warn!(target: "hallmark::audit", %envelope_sha256, %code, %reason, uid, "image registration refused");
        }
        SecurityEvent::ImageRetired { image, reason, uid } => {
            let automatic = uid.is_none();
            tracing::info!(target: "hallmark::audit", %image, %reason, uid, automatic, "image retired");
        }
        SecurityEvent::KillCreated {
            id,
            target,
            reason,
            uid,
        } => {
            tracing::warn!(target: "hallmark::audit", %id, %target, %reason, uid, "kill created");
        }
        SecurityEvent::KillLifted {
            id,
            target,
            reason,
            uid,
        } => {
            tracing::warn!(target: "hallmark::audit", %id, %target, %reason, uid, "kill lifted");
        }
        SecurityEvent::TokenGenerated {
            spiffe_id,
            token_id,
            expires_at,
            uid,
        } => {
            tracing::info!(target: "hallmark::audit", %spiffe_id, %token_id, expires_at, uid, "join token generated");
        }
        SecurityEvent::AgentEvicted { agent, uid } => {
            tracing::warn!(target: "hallmark::audit", %agent, uid, "agent evicted");
        }
        SecurityEvent::AgentBanned {
            agent,
            on_record,
            uid,
        } => {
            tracing::warn!(target: "hallmark::audit", %agent, on_record, uid, "agent banned");
        }
        SecurityEvent::AgentUnbanned { agent, uid } => {
            tracing::info!(target: "hallmark::audit", %agent, uid, "agent unbanned");
        }
        SecurityEvent::AdminCall {
            method,
            uid,
            code,
            outcome,
        } => {
            tracing::info!(target: "hallmark::audit", method, uid, %code, %outcome, "admin call");
        }
    }
}
