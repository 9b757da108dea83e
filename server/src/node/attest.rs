//! Node attestation: turns an `Attest` stream into an admitted agent.
//!
//! The flow per attestor:
//! - `join_token`: the presented token is hashed and consumed atomically in
//!   the store (single use); unknown, expired and reused tokens are refused
//!   with different messages.
//! - `x509pop`: the node certificate must chain to a provisioning CA from
//!   the config; the issuer sends a fresh nonce and the agent signs it bound
//!   to the key its node SVID will certify. The node ID is the sha256 of the
//!   node certificate.
//!
//! Then: a banned agent, or one a node revocation names (the kill switch),
//! is refused; otherwise the node SVID is minted, the node record written
//! durably, and only then is the SVID returned.

use std::time::Duration;

use tokio::sync::mpsc;
use tonic::{Status, Streaming};

use hallmark_attestors::node::{join_token, x509pop};
use hallmark_ca::id::SpiffeId;
use hallmark_proto::node::{
    AttestParams, AttestRequest, AttestResponse, AttestResult, Challenge, attest_params,
    attest_request, attest_response,
};

use super::{NodeApi, store_status};
use crate::convert::{bundle_to_proto, svid_to_proto, unix_secs};
use crate::revocation::revoked_status;
use crate::store::{IssuedSvid, NodeAttestorKind, NodeRecord, TokenUse};

/// How long an agent has to complete the whole attestation exchange.
pub(crate) const ATTESTATION_TIMEOUT: Duration = Duration::from_secs(30);

/// The identity an attestor proved.
struct Admitted {
    spiffe_id: SpiffeId,
    attestor: NodeAttestorKind,
    node_id: String,
}

/// A refusal: the status for the agent and the attestor name for the audit trail.
pub(crate) struct Refusal {
    pub(crate) attestor: &'static str,
    pub(crate) status: Status,
}

impl Refusal {
    fn new(attestor: &'static str, status: Status) -> Self {
        Self { attestor, status }
    }
}

impl NodeApi {
    /// Runs one attestation exchange to its result.
    pub(crate) async fn run_attestation(
        &self,
        inbound: &mut Streaming<AttestRequest>,
        outbound: &mpsc::Sender<Result<AttestResponse, Status>>,
    ) -> Result<(AttestResult, NodeAttestorKind, String), Refusal> {
        let params = match next_step(inbound).await {
            Ok(Some(attest_request::Step::Params(params))) => params,
            Ok(Some(_)) => {
                return Err(Refusal::new(
                    "unknown",
                    Status::invalid_argument(
                        "the first attestation message must carry AttestParams",
                    ),
                ));
            }
            Ok(None) => {
                return Err(Refusal::new(
                    "unknown",
                    Status::invalid_argument("attestation stream closed before AttestParams"),
                ));
            }
            Err(status) => return Err(Refusal::new("unknown", status)),
        };
        let AttestParams {
            public_key,
            attestor,
        } = params;
        if public_key.is_empty() {
            return Err(Refusal::new(
                "unknown",
                Status::invalid_argument(
                    "AttestParams.public_key is empty: send the SubjectPublicKeyInfo (DER) of the node SVID key",
                ),
            ));
        }
        let admitted = match attestor {
            Some(attest_params::Attestor::JoinToken(p)) => self.admit_join_token(&p.token)?,
            Some(attest_params::Attestor::X509pop(p)) => {
                self.admit_x509pop(p.cert_chain, &public_key, inbound, outbound)
                    .await?
            }
            None => {
                return Err(Refusal::new(
                    "unknown",
                    Status::invalid_argument(
                        "AttestParams names no attestor: set join_token or x509pop",
                    ),
                ));
            }
        };
        let attestor = admitted.attestor.as_str();
        let result = self
            .admit(admitted, &public_key)
            .map_err(|status| Refusal::new(attestor, status))?;
        Ok(result)
    }

    fn admit_join_token(&self, token: &str) -> Result<Admitted, Refusal> {
        let refuse = |status| Refusal::new("join_token", status);
        join_token::check_format(token).map_err(|e| {
            refuse(Status::invalid_argument(format!(
                "join token is malformed: {e}"
            )))
        })?;
        let now = unix_secs(self.clock.now());
        // A banned or revoked agent is refused before its token is used,
        // so that after `agent unban` (or `kill lift`) the same token works.
        let hash = join_token::token_hash(token);
        if let Some(record) = self
            .store
            .join_token(&hash)
            .map_err(|e| refuse(store_status(e)))?
        {
            self.refuse_barred(&record.spiffe_id).map_err(refuse)?;
        }
        let outcome = self
            .store
            .consume_join_token(&hash, now)
            .map_err(|e| refuse(store_status(e)))?;
        match outcome {
            TokenUse::Consumed(record) => Ok(Admitted {
                spiffe_id: record.spiffe_id,
                attestor: NodeAttestorKind::JoinToken,
                node_id: join_token::node_id(token),
            }),
            TokenUse::Unknown => Err(refuse(Status::unauthenticated(
                "join token unknown: generate one with `hallmark-server token generate`",
            ))),
            TokenUse::Expired(record) => Err(refuse(Status::unauthenticated(format!(
                "join token expired at {} (unix seconds): generate a new one",
                record.expires_at
            )))),
            TokenUse::AlreadyUsed(record) => Err(refuse(Status::permission_denied(format!(
                "join token already used at {} (unix seconds): tokens are single use",
                record.used_at.unwrap_or_default()
            )))),
        }
    }

    async fn admit_x509pop(
        &self,
        chain: Vec<Vec<u8>>,
        public_key: &[u8],
        inbound: &mut Streaming<AttestRequest>,
        outbound: &mpsc::Sender<Result<AttestResponse, Status>>,
    ) -> Result<Admitted, Refusal> {
        let refuse = |status| Refusal::new("x509pop", status);
        let Some(verifier) = &self.x509pop else {
            return Err(refuse(Status::failed_precondition(
                "the x509pop attestor is not enabled on this issuer (set agents.x509pop_ca)",
            )));
        };
        if chain.is_empty() {
            return Err(refuse(Status::invalid_argument(
                "x509pop: cert_chain is empty: send the node certificate first",
            )));
        }
        let node = verifier
            .verify_chain(&chain, self.clock.now())
            .map_err(|e| {
                refuse(Status::unauthenticated(format!(
                    "x509pop: node certificate refused: {e}"
                )))
            })?;
        let nonce = x509pop::new_nonce()
            .map_err(|e| refuse(Status::unavailable(format!("cannot make a challenge: {e}"))))?;
        let challenge = AttestResponse {
            step: Some(attest_response::Step::Challenge(Challenge {
                nonce: nonce.to_vec(),
            })),
        };
        outbound
            .send(Ok(challenge))
            .await
            .map_err(|_| refuse(Status::cancelled("agent went away during the challenge")))?;
        let signature = match next_step(inbound).await {
            Ok(Some(attest_request::Step::ChallengeResponse(r))) => r.signature,
            Ok(_) => {
                return Err(refuse(Status::invalid_argument(
                    "x509pop: expected a ChallengeResponse after the Challenge",
                )));
            }
            Err(status) => return Err(refuse(status)),
        };
        let message = x509pop::challenge_message(&nonce, public_key);
        x509pop::verify_response(&chain[0], &message, &signature).map_err(|e| {
            refuse(Status::unauthenticated(format!(
                "x509pop: challenge signature refused: {e}"
            )))
        })?;
        let spiffe_id = SpiffeId::new(
            &self.trust_domain,
            &format!("/hallmark/agent/x509pop/{}", node.node_id),
        )
        .map_err(|e| {
            refuse(Status::internal(format!(
                "cannot form agent SPIFFE ID: {e}"
            )))
        })?;
        Ok(Admitted {
            spiffe_id,
            attestor: NodeAttestorKind::X509pop,
            node_id: node.node_id,
        })
    }

    /// Refuses an agent that is banned or that a node revocation names;
    /// otherwise its record, if it has one.
    fn refuse_barred(&self, agent: &SpiffeId) -> Result<Option<NodeRecord>, Status> {
        let existing = self.store.node(agent).map_err(store_status)?;
        if existing.as_ref().is_some_and(|n| n.banned) {
            return Err(Status::permission_denied(format!(
                "agent {agent} is banned: an operator must run `hallmark-server agent unban` first"
            )));
        }
        if let Some(revocation) = self.revocations.current().node(agent) {
            return Err(revoked_status(agent, revocation));
        }
        Ok(existing)
    }

    /// Checks bans, mints the node SVID, records the node durably.
    fn admit(
        &self,
        admitted: Admitted,
        public_key: &[u8],
    ) -> Result<(AttestResult, NodeAttestorKind, String), Status> {
        let existing = self.refuse_barred(&admitted.spiffe_id)?;
        let svid = self
            .authority
            .mint_node_svid(&admitted.spiffe_id, public_key, self.agent_svid_ttl)
            .map_err(|e| Status::invalid_argument(format!("cannot issue node SVID: {e}")))?;
        let now = unix_secs(self.clock.now());
        let record = NodeRecord {
            spiffe_id: admitted.spiffe_id.clone(),
            attestor: Some(admitted.attestor),
            node_id: admitted.node_id,
            banned: false,
            first_attested_at: existing
                .filter(NodeRecord::attested)
                .map_or(now, |n| n.first_attested_at),
            last_attested_at: now,
            // A fresh attestation replaces every SVID honoured before it.
            svids: vec![IssuedSvid {
                serial: svid.serial.clone(),
                expires_at: unix_secs(svid.not_after),
            }],
        };
        self.store.put_node(&record).map_err(store_status)?;
        let result = AttestResult {
            svid: Some(svid_to_proto(&svid)),
            bundle: Some(bundle_to_proto(&self.authority.bundle())),
        };
        Ok((result, admitted.attestor, svid.serial))
    }
}

async fn next_step(
    inbound: &mut Streaming<AttestRequest>,
) -> Result<Option<attest_request::Step>, Status> {
    match inbound.message().await? {
        None => Ok(None),
        Some(AttestRequest { step: None }) => Err(Status::invalid_argument(
            "attestation message carries no step",
        )),
        Some(AttestRequest { step: Some(step) }) => Ok(Some(step)),
    }
}
