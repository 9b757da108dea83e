//! The admin API: what the operator CLI calls over the local Unix socket.
//!
//! Every call is reported as a [`SecurityEvent::AdminCall`] with the caller's
//! uid from the socket's peer credentials. Callers other than the issuer's
//! own user and root are refused even if the socket's permissions were
//! loosened by hand.

mod audit;
mod federation;
mod image;
mod kill;
pub mod socket;

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::broadcast;
use tonic::transport::server::UdsConnectInfo;
use tonic::{Request, Response, Status};

use hallmark_attestors::node::join_token;
use hallmark_ca::clock::Clock;
use hallmark_ca::id::{SpiffeId, TrustDomain};
use hallmark_proto::admin::admin_server::Admin;
use hallmark_proto::admin::{
    Agent, AgentRequest, GenerateJoinTokenRequest, GenerateJoinTokenResponse, HealthcheckRequest,
    HealthcheckResponse, Image, ListAgentsRequest, ListAgentsResponse, ListImagesRequest,
    ListImagesResponse, RegisterImageRequest, RegisterImageResponse, RetireImageRequest,
    ShowBundleRequest, ShowBundleResponse, ShowImageRequest, ShowImageResponse,
};
use hallmark_proto::admin::{
    AuditKeyRequest, AuditKeyResponse, CheckpointAuditRequest, CheckpointAuditResponse,
    ReadAuditRequest,
};
use hallmark_proto::admin::{
    CreateRevocationRequest, LiftRevocationRequest, ListRevocationsRequest,
    ListRevocationsResponse, Revocation,
};
use hallmark_proto::admin::{ListFederatedBundlesRequest, ListFederatedBundlesResponse};

use crate::audit::{AuditError, AuditLog};
use crate::authority::Authority;
use crate::convert::{unix_i64, unix_secs};
use crate::events::{EventSink, Recorded, SecurityEvent};
use crate::federation::Federation;
use crate::issuance::{ImagePolicy, ImageSet};
use crate::metrics::ServerMetrics;
use crate::node::{NodeEvent, store_status};
use crate::revocation::{Revocations, to_admin_proto};
use crate::store::{JoinTokenRecord, NodeAttestorKind, NodeRecord, Store};

/// Longest join token lifetime an operator may ask for.
pub const MAX_JOIN_TOKEN_TTL: Duration = Duration::from_secs(7 * 24 * 3600);

/// The admin API service.
#[derive(Debug, Clone)]
pub struct AdminApi {
    authority: Arc<Authority>,
    store: Arc<dyn Store>,
    clock: Arc<dyn Clock>,
    events: Arc<dyn EventSink>,
    node_events: broadcast::Sender<NodeEvent>,
    trust_domain: TrustDomain,
    join_token_ttl: Duration,
    /// The issuer's own uid: with root, the only caller allowed.
    owner_uid: Option<u32>,
    images: Arc<ImageSet>,
    image_policy: Arc<ImagePolicy>,
    revocations: Arc<Revocations>,
    audit: AuditLog,
    metrics: Arc<ServerMetrics>,
    federation: Arc<Federation>,
    /// Serializes image registrations (see `register_checked`).
    registrations: Arc<std::sync::Mutex<()>>,
}

/// What the admin API is built from.
#[derive(Debug)]
pub struct AdminApiParts {
    /// The CA.
    pub authority: Arc<Authority>,
    /// The store.
    pub store: Arc<dyn Store>,
    /// Time.
    pub clock: Arc<dyn Clock>,
    /// Where security events go.
    pub events: Arc<dyn EventSink>,
    /// Tells open agent streams about evictions and bans.
    pub node_events: broadcast::Sender<NodeEvent>,
    /// The trust domain.
    pub trust_domain: TrustDomain,
    /// Default join token lifetime.
    pub join_token_ttl: Duration,
    /// The uid that owns the admin socket.
    pub owner_uid: Option<u32>,
    /// The images the issuer mints for (reloaded on change).
    pub images: Arc<ImageSet>,
    /// Signers, policy and limits for gold images.
    pub image_policy: Arc<ImagePolicy>,
    /// The kill switch's revocations.
    pub revocations: Arc<Revocations>,
    /// The audit log (read by `audit tail`, `export`, `verify`).
    pub audit: AuditLog,
    /// Counters (kills created and lifted).
    pub metrics: Arc<ServerMetrics>,
    /// The federated trust domains (`bundle list`).
    pub federation: Arc<Federation>,
}

impl AdminApi {
    /// Builds the service.
    pub fn new(parts: AdminApiParts) -> Self {
        let AdminApiParts {
            authority,
            store,
            clock,
            events,
            node_events,
            trust_domain,
            join_token_ttl,
            owner_uid,
            images,
            image_policy,
            revocations,
            audit,
            metrics,
            federation,
        } = parts;
        Self {
            registrations: Arc::default(),
            federation,
            metrics,
            audit,
            revocations,
            images,
            image_policy,
            authority,
            store,
            clock,
            events,
            node_events,
            trust_domain,
            join_token_ttl,
            owner_uid,
        }
    }

    /// Checks the caller, runs `call`, and audits it: the records `call`
    /// wrote, then the [`SecurityEvent::AdminCall`] with its outcome. The
    /// answer goes out only once they are durable; if they cannot be
    /// written the caller is told (`Unavailable`), including whether the
    /// action itself was carried out.
    async fn audited<T, R>(
        &self,
        method: &'static str,
        request: &Request<T>,
        call: impl FnOnce(&mut Call<'_>) -> Result<(R, String), Status>,
    ) -> Result<Response<R>, Status> {
        let (uid, allowed) = self.caller(request);
        let mut audit = Call {
            uid,
            events: self.events.as_ref(),
            written: Vec::new(),
        };
        let result = allowed.and_then(|()| call(&mut audit));
        self.answer(method, audit, result).await
    }

    /// The caller's uid, and whether it may use the admin API.
    fn caller<T>(&self, request: &Request<T>) -> (Option<u32>, Result<(), Status>) {
        let uid = request
            .extensions()
            .get::<UdsConnectInfo>()
            .and_then(|info| info.peer_cred)
            .map(|cred| cred.uid());
        let allowed = match (uid, self.owner_uid) {
            (Some(uid), Some(owner)) if uid != owner && uid != 0 => Err(Status::permission_denied(
                format!("uid {uid} may not use the admin API: run as uid {owner} or root"),
            )),
            _ => Ok(()),
        };
        (uid, allowed)
    }

    /// Audits a call's outcome (see [`AdminApi::audited`]) and answers.
    async fn answer<R>(
        &self,
        method: &'static str,
        audit: Call<'_>,
        result: Result<(R, String), Status>,
    ) -> Result<Response<R>, Status> {
        let uid = audit.uid;
        let (code, outcome) = match &result {
            Ok((_, what)) => ("Ok".to_owned(), what.clone()),
            Err(status) => (
                format!("{:?}", status.code()),
                format!("refused: {}", status.message()),
            ),
        };
        let mut written = audit.written;
        written.push(self.events.record(SecurityEvent::AdminCall {
            method,
            uid,
            code,
            outcome,
        }));
        if let Err(error) = Recorded::all(written).await {
            return Err(audit_failed(method, &result, &error));
        }
        result.map(|(response, _)| Response::new(response))
    }

    fn agent_id(&self, text: &str) -> Result<SpiffeId, Status> {
        let id = SpiffeId::parse(text)
            .map_err(|e| Status::invalid_argument(format!("{text:?} is not a SPIFFE ID: {e}")))?;
        if !id.is_member_of(&self.trust_domain) || !id.has_path_prefix("/hallmark/agent") {
            return Err(Status::invalid_argument(format!(
                "{id} is not an agent ID: agent IDs look like spiffe://{}/hallmark/agent/<attestor>/<id>",
                self.trust_domain
            )));
        }
        Ok(id)
    }

    fn existing_agent(&self, id: &SpiffeId) -> Result<NodeRecord, Status> {
        self.store
            .node(id)
            .map_err(store_status)?
            .ok_or_else(|| Status::not_found(format!("no agent {id} on record")))
    }
}

/// One admin call being served: the caller, and the audit records its work
/// wrote (each is durable before the answer goes out).
pub(crate) struct Call<'a> {
    uid: Option<u32>,
    events: &'a dyn EventSink,
    written: Vec<Recorded>,
}

impl Call<'_> {
    /// The caller's uid from the socket's peer credentials.
    pub(crate) fn uid(&self) -> Option<u32> {
        self.uid
    }

    /// Appends `event` to the audit log now; [`AdminApi::audited`] waits
    /// for it to be durable before answering.
    pub(crate) fn record(&mut self, event: SecurityEvent) {
        self.written.push(self.events.record(event));
    }
}

/// The answer when an admin call's audit records cannot be written.
fn audit_failed<R>(
    method: &str,
    result: &Result<(R, String), Status>,
    error: &AuditError,
) -> Status {
    tracing::error!(method, %error, "admin call not audited");
    match result {
        Ok((_, outcome)) => Status::unavailable(format!(
            "{method} was carried out ({outcome}) but its audit record could not be written: {error}; the issuer's audit log needs attention"
        )),
        Err(status) => Status::unavailable(format!(
            "{method} was refused ({}) and its audit record could not be written: {error}; the issuer's audit log needs attention",
            status.message()
        )),
    }
}

/// The wire form of a node record.
fn agent_to_proto(node: &NodeRecord) -> Agent {
    let current = node.current_svid();
    Agent {
        spiffe_id: node.spiffe_id.as_str().to_owned(),
        attestor: node
            .attestor
            .map_or("", NodeAttestorKind::as_str)
            .to_owned(),
        node_id: node.node_id.clone(),
        banned: node.banned,
        first_attested_at: i64::try_from(node.first_attested_at).unwrap_or(i64::MAX),
        last_attested_at: i64::try_from(node.last_attested_at).unwrap_or(i64::MAX),
        svid_serial: current.map(|s| s.serial.clone()).unwrap_or_default(),
        svid_expires_at: current
            .map(|s| i64::try_from(s.expires_at).unwrap_or(i64::MAX))
            .unwrap_or(0),
    }
}

#[tonic::async_trait]
impl Admin for AdminApi {
    async fn healthcheck(
        &self,
        request: Request<HealthcheckRequest>,
    ) -> Result<Response<HealthcheckResponse>, Status> {
        let health = || {
            let agents = self.store.nodes().map_err(store_status)?.len() as u64;
            let ca_expires_at = self
                .authority
                .ca_not_after()
                .map_err(|e| Status::internal(e.to_string()))?;
            Ok((
                HealthcheckResponse {
                    trust_domain: self.trust_domain.as_str().to_owned(),
                    version: env!("CARGO_PKG_VERSION").to_owned(),
                    agents,
                    ca_expires_at: unix_i64(ca_expires_at),
                },
                "healthy".to_owned(),
            ))
        };
        // Probes every few seconds would fill the audit log with records
        // that say nothing: an allowed health check is counted in metrics
        // instead. A refused one is a security event and is audited.
        if self.caller(&request).1.is_ok() {
            self.metrics.healthcheck();
            return health().map(|(response, _)| Response::new(response));
        }
        self.audited("Healthcheck", &request, |_| health()).await
    }

    async fn generate_join_token(
        &self,
        request: Request<GenerateJoinTokenRequest>,
    ) -> Result<Response<GenerateJoinTokenResponse>, Status> {
        let params = request.get_ref().clone();
        self.audited("GenerateJoinToken", &request, |call| {
            let ttl = match params.ttl_seconds {
                0 => self.join_token_ttl,
                secs => Duration::from_secs(secs),
            };
            if ttl > MAX_JOIN_TOKEN_TTL {
                return Err(Status::invalid_argument(format!(
                    "ttl {}s exceeds the 7 day maximum for join tokens",
                    ttl.as_secs()
                )));
            }
            let token = join_token::generate();
            let spiffe_id = if params.spiffe_id.is_empty() {
                SpiffeId::new(
                    &self.trust_domain,
                    &format!("/hallmark/agent/join_token/{}", join_token::node_id(&token)),
                )
                .map_err(|e| Status::internal(format!("cannot form agent ID: {e}")))?
            } else {
                self.agent_id(&params.spiffe_id)?
            };
            let now = self.clock.now();
            let record = JoinTokenRecord {
                token_hash: join_token::token_hash(&token),
                spiffe_id: spiffe_id.clone(),
                created_at: unix_secs(now),
                expires_at: unix_secs(now + ttl),
                used_at: None,
            };
            self.store.put_join_token(&record).map_err(store_status)?;
            call.record(SecurityEvent::TokenGenerated {
                spiffe_id: spiffe_id.clone(),
                token_id: join_token::node_id(&token),
                expires_at: record.expires_at,
                uid: call.uid(),
            });
            let outcome = format!("join token for {spiffe_id}, valid {}s", ttl.as_secs());
            Ok((
                GenerateJoinTokenResponse {
                    token,
                    expires_at: unix_i64(now + ttl),
                    spiffe_id: spiffe_id.as_str().to_owned(),
                },
                outcome,
            ))
        })
        .await
    }

    async fn list_agents(
        &self,
        request: Request<ListAgentsRequest>,
    ) -> Result<Response<ListAgentsResponse>, Status> {
        self.audited("ListAgents", &request, |_| {
            let agents: Vec<Agent> = self
                .store
                .nodes()
                .map_err(store_status)?
                .iter()
                .map(agent_to_proto)
                .collect();
            let outcome = format!("{} agents", agents.len());
            Ok((ListAgentsResponse { agents }, outcome))
        })
        .await
    }

    async fn evict_agent(&self, request: Request<AgentRequest>) -> Result<Response<Agent>, Status> {
        let id_text = request.get_ref().spiffe_id.clone();
        self.audited("EvictAgent", &request, |call| {
            let id = self.agent_id(&id_text)?;
            let node = self.existing_agent(&id)?;
            if node.banned {
                return Err(Status::failed_precondition(format!(
                    "agent {id} is banned; evicting would lift the ban: run `agent unban` first if that is what you want"
                )));
            }
            let removed = self
                .store
                .remove_node(&id)
                .map_err(store_status)?
                .ok_or_else(|| Status::not_found(format!("no agent {id} on record")))?;
            let _ = self.node_events.send(NodeEvent::Removed {
                agent: id.clone(),
                reason: "evicted",
            });
            call.record(SecurityEvent::AgentEvicted {
                agent: id.clone(),
                uid: call.uid(),
            });
            Ok((agent_to_proto(&removed), format!("evicted {id}")))
        })
        .await
    }

    async fn ban_agent(&self, request: Request<AgentRequest>) -> Result<Response<Agent>, Status> {
        let id_text = request.get_ref().spiffe_id.clone();
        self.audited("BanAgent", &request, |call| {
            let id = self.agent_id(&id_text)?;
            // An agent that is not on record (evicted, or not attested yet)
            // is banned all the same: the record of the ban is what keeps
            // it from attesting again.
            let existing = self.store.node(&id).map_err(store_status)?;
            let on_record = existing.as_ref().is_some_and(NodeRecord::attested);
            let mut node = existing.unwrap_or_else(|| NodeRecord::ban_only(id.clone()));
            node.banned = true;
            node.svids.clear();
            self.store.put_node(&node).map_err(store_status)?;
            let _ = self.node_events.send(NodeEvent::Removed {
                agent: id.clone(),
                reason: "banned",
            });
            call.record(SecurityEvent::AgentBanned {
                agent: id.clone(),
                on_record,
                uid: call.uid(),
            });
            let outcome = if on_record {
                format!("banned {id}")
            } else {
                format!("banned {id} (not on record: it may not attest)")
            };
            Ok((agent_to_proto(&node), outcome))
        })
        .await
    }

    async fn unban_agent(&self, request: Request<AgentRequest>) -> Result<Response<Agent>, Status> {
        let id_text = request.get_ref().spiffe_id.clone();
        self.audited("UnbanAgent", &request, |call| {
            let id = self.agent_id(&id_text)?;
            let mut node = self.existing_agent(&id)?;
            if !node.banned {
                return Err(Status::failed_precondition(format!(
                    "agent {id} is not banned"
                )));
            }
            node.banned = false;
            if node.attested() {
                self.store.put_node(&node).map_err(store_status)?;
            } else {
                // Nothing but the ban was on record: forget the agent, as
                // if it had never been banned.
                self.store.remove_node(&id).map_err(store_status)?;
            }
            call.record(SecurityEvent::AgentUnbanned {
                agent: id.clone(),
                uid: call.uid(),
            });
            Ok((
                agent_to_proto(&node),
                format!("unbanned {id}; it must attest again"),
            ))
        })
        .await
    }

    async fn register_image(
        &self,
        request: Request<RegisterImageRequest>,
    ) -> Result<Response<RegisterImageResponse>, Status> {
        let envelope = request.get_ref().envelope.clone();
        self.audited("RegisterImage", &request, |call| {
            let (image, created) = self.register_image(&envelope, call)?;
            let outcome = format!(
                "{} {}@{} signed by {}",
                if created {
                    "registered"
                } else {
                    "already registered"
                },
                image.name,
                image.version,
                image.signers.join(",")
            );
            Ok((
                RegisterImageResponse {
                    image: Some(image),
                    created,
                },
                outcome,
            ))
        })
        .await
    }

    async fn list_images(
        &self,
        request: Request<ListImagesRequest>,
    ) -> Result<Response<ListImagesResponse>, Status> {
        self.audited("ListImages", &request, |_| {
            let images = self.list_images()?;
            let outcome = format!("{} images", images.len());
            Ok((ListImagesResponse { images }, outcome))
        })
        .await
    }

    async fn show_image(
        &self,
        request: Request<ShowImageRequest>,
    ) -> Result<Response<ShowImageResponse>, Status> {
        let wanted = request.get_ref().clone();
        self.audited("ShowImage", &request, |_| {
            let images = self.show_image(&wanted.name, &wanted.version)?;
            Ok((
                ShowImageResponse { images },
                format!("showed {}", wanted.name),
            ))
        })
        .await
    }

    async fn retire_image(
        &self,
        request: Request<RetireImageRequest>,
    ) -> Result<Response<Image>, Status> {
        let wanted = request.get_ref().clone();
        self.audited("RetireImage", &request, |call| {
            let image = self.retire_image(&wanted.name, &wanted.version, &wanted.reason, call)?;
            let outcome = format!(
                "retired {}@{}: {}",
                image.name, image.version, wanted.reason
            );
            Ok((image, outcome))
        })
        .await
    }

    async fn create_revocation(
        &self,
        request: Request<CreateRevocationRequest>,
    ) -> Result<Response<Revocation>, Status> {
        let wanted = request.get_ref().clone();
        self.audited("CreateRevocation", &request, |call| {
            let revocation = self.create_revocation(&wanted, call)?;
            let outcome = format!("killed {}: {}", revocation.id, revocation.target);
            Ok((to_admin_proto(&revocation), outcome))
        })
        .await
    }

    async fn list_revocations(
        &self,
        request: Request<ListRevocationsRequest>,
    ) -> Result<Response<ListRevocationsResponse>, Status> {
        self.audited("ListRevocations", &request, |_| {
            let revocations = self.list_revocations()?;
            let outcome = format!("{} revocations", revocations.len());
            Ok((ListRevocationsResponse { revocations }, outcome))
        })
        .await
    }

    async fn lift_revocation(
        &self,
        request: Request<LiftRevocationRequest>,
    ) -> Result<Response<Revocation>, Status> {
        let wanted = request.get_ref().clone();
        self.audited("LiftRevocation", &request, |call| {
            let revocation = self.lift_revocation(&wanted, call)?;
            let outcome = format!("lifted {}: {}", revocation.id, revocation.target);
            Ok((to_admin_proto(&revocation), outcome))
        })
        .await
    }

    type ReadAuditStream = audit::AuditStream;

    async fn read_audit(
        &self,
        request: Request<ReadAuditRequest>,
    ) -> Result<Response<Self::ReadAuditStream>, Status> {
        let wanted = request.get_ref().clone();
        self.audited("ReadAudit", &request, |_| self.read_audit(&wanted))
            .await
    }

    async fn audit_key(
        &self,
        request: Request<AuditKeyRequest>,
    ) -> Result<Response<AuditKeyResponse>, Status> {
        self.audited("AuditKey", &request, |_| {
            let key = self.audit_key();
            let outcome = format!("audit key {}", key.key_id);
            Ok((key, outcome))
        })
        .await
    }

    async fn checkpoint_audit(
        &self,
        request: Request<CheckpointAuditRequest>,
    ) -> Result<Response<CheckpointAuditResponse>, Status> {
        // Audited before signing, so that the new checkpoint covers the
        // request for it (and `audit verify` right after finds no tail).
        let (uid, allowed) = self.caller(&request);
        let audit = Call {
            uid,
            events: self.events.as_ref(),
            written: Vec::new(),
        };
        // A refusal (or a failure to audit the request) ends the call here.
        let requested = allowed.map(|()| ((), "checkpoint requested".to_owned()));
        self.answer("CheckpointAudit", audit, requested).await?;
        let response = self.checkpoint_audit().await?;
        Ok(Response::new(response))
    }

    async fn show_bundle(
        &self,
        request: Request<ShowBundleRequest>,
    ) -> Result<Response<ShowBundleResponse>, Status> {
        self.audited("ShowBundle", &request, |_| {
            let bundle = self.authority.bundle();
            Ok((
                ShowBundleResponse {
                    pem: bundle.to_pem(),
                    jwks: bundle.to_jwks(),
                    sequence: bundle.sequence,
                },
                format!("bundle sequence {}", bundle.sequence),
            ))
        })
        .await
    }

    async fn list_federated_bundles(
        &self,
        request: Request<ListFederatedBundlesRequest>,
    ) -> Result<Response<ListFederatedBundlesResponse>, Status> {
        let wanted = request.get_ref().trust_domain.clone();
        self.audited("ListFederatedBundles", &request, |_| {
            federation::list(&self.federation, &wanted)
        })
        .await
    }
}
