//! The node API: agents attest, renew their node SVID and follow `Sync`.
//!
//! `Attest` is the only call open to a TLS client without a certificate.
//! Every other call is authenticated twice: the TLS layer verifies the
//! client's node SVID chains to the current bundle (see [`listener`]), and
//! [`NodeApi::authenticate`] checks that the issuer still honours that exact
//! SVID for that agent and that no revocation names the agent, so eviction,
//! bans and kills take effect on the next call.
//!
//! The calls that mint (`MintX509Svids` and `MintJwtSvid` from one budget,
//! `RenewAgentSvid` from its own) are limited per node ([`limit`]): over
//! its limit a node is answered
//! `ResourceExhausted` with the limit and when to retry, and the refusal is
//! audited as `node_rate_limited` (aggregated like every refusal, see
//! [`crate::events::RefusalLimiter`]).
//!
//! `Sync` carries the revocations in force in every message (see
//! [`crate::revocation`]): a kill or lift reaches every open stream as soon
//! as it is in force, and a stream whose own agent is revoked gets that last
//! message and then `PermissionDenied`.

mod attest;
pub mod limit;
pub mod listener;
mod mint;
mod report;
mod sync;

pub use limit::{CallLimiter, LimitError, NodeLimits, RENEWAL_LIMITS};
pub use mint::{MAX_AUDIENCE_BYTES, MAX_AUDIENCES, MAX_KEYS_PER_CALL};

use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use futures::Stream;
use tokio::sync::{broadcast, mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

use hallmark_attestors::node::x509pop::X509PopVerifier;
use hallmark_ca::clock::Clock;
use hallmark_ca::id::{SpiffeId, TrustDomain};
use hallmark_ca::tls::peer_id_and_serial;
use hallmark_proto::node::node_server::Node;
use hallmark_proto::node::{
    AttestRequest, AttestResponse, MintJwtSvidRequest, MintJwtSvidResponse, MintX509SvidsRequest,
    MintX509SvidsResponse, RenewAgentSvidRequest, RenewAgentSvidResponse, ReportRefusalsRequest,
    ReportRefusalsResponse, SyncRequest, SyncResponse, attest_response,
};

use crate::audit::AuditError;
use crate::authority::Authority;
use crate::convert::{svid_to_proto, unix_secs};
use crate::events::{EventSink, SecurityEvent};
use crate::federation::FederatedBundles;
use crate::issuance::ImageSet;
use crate::metrics::{RefusalReason, ServerMetrics};
use crate::revocation::{Revocations, revoked_status};
use crate::store::{IssuedSvid, NodeRecord, Store, StoreError};

/// Something that changed about an agent, told to its open streams.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum NodeEvent {
    /// The agent was evicted or banned: its streams end now.
    Removed {
        /// The agent.
        agent: SpiffeId,
        /// `evicted` or `banned`.
        reason: &'static str,
    },
}

/// The node API service.
#[derive(Debug, Clone)]
pub struct NodeApi {
    inner: Arc<NodeApiInner>,
}

/// Shared state of the node API.
#[derive(Debug)]
pub struct NodeApiInner {
    authority: Arc<Authority>,
    store: Arc<dyn Store>,
    clock: Arc<dyn Clock>,
    events: Arc<dyn EventSink>,
    node_events: broadcast::Sender<NodeEvent>,
    trust_domain: TrustDomain,
    agent_svid_ttl: Duration,
    x509pop: Option<X509PopVerifier>,
    images: Arc<ImageSet>,
    revocations: Arc<Revocations>,
    shutdown: watch::Receiver<bool>,
    metrics: Arc<ServerMetrics>,
    federated: watch::Receiver<Arc<FederatedBundles>>,
    /// `MintX509Svids` and `MintJwtSvid`, per node.
    mints: CallLimiter,
    /// `RenewAgentSvid`, per node.
    renewals: CallLimiter,
}

impl std::ops::Deref for NodeApi {
    type Target = NodeApiInner;
    fn deref(&self) -> &NodeApiInner {
        &self.inner
    }
}

/// What the node API is built from.
#[derive(Debug)]
pub struct NodeApiParts {
    /// The CA.
    pub authority: Arc<Authority>,
    /// The store.
    pub store: Arc<dyn Store>,
    /// Time.
    pub clock: Arc<dyn Clock>,
    /// Where security events go.
    pub events: Arc<dyn EventSink>,
    /// Evictions and bans, from the admin API.
    pub node_events: broadcast::Sender<NodeEvent>,
    /// The trust domain.
    pub trust_domain: TrustDomain,
    /// Node SVID lifetime.
    pub agent_svid_ttl: Duration,
    /// The x509pop verifier, when the attestor is enabled.
    pub x509pop: Option<X509PopVerifier>,
    /// The registered images the issuer mints for.
    pub images: Arc<ImageSet>,
    /// The kill switch's revocations in force.
    pub revocations: Arc<Revocations>,
    /// Becomes `true` when the issuer shuts down: long-lived streams end.
    pub shutdown: watch::Receiver<bool>,
    /// Counters, gauges and latencies.
    pub metrics: Arc<ServerMetrics>,
    /// Per-node limits on the calls that mint.
    pub limits: NodeLimits,
    /// The federated trust domains' bundles, sent on `Sync`.
    pub federated: watch::Receiver<Arc<FederatedBundles>>,
}

impl NodeApi {
    /// Builds the service.
    pub fn new(parts: NodeApiParts) -> Self {
        let NodeApiParts {
            authority,
            store,
            clock,
            events,
            node_events,
            trust_domain,
            agent_svid_ttl,
            x509pop,
            images,
            revocations,
            shutdown,
            metrics,
            limits,
            federated,
        } = parts;
        Self {
            inner: Arc::new(NodeApiInner {
                mints: CallLimiter::new(limits, clock.clone()),
                renewals: CallLimiter::new(RENEWAL_LIMITS, clock.clone()),
                authority,
                store,
                clock,
                events,
                node_events,
                trust_domain,
                agent_svid_ttl,
                x509pop,
                images,
                revocations,
                shutdown,
                metrics,
                federated,
            }),
        }
    }

    /// Checks that the caller presented a node SVID the issuer still honours
    /// and returns its agent's record.
    fn authenticate<T>(&self, request: &Request<T>) -> Result<NodeRecord, Status> {
        let certs = request.peer_certs().ok_or_else(|| {
            Status::unauthenticated(
                "this call requires mutual TLS with the agent's node SVID: attest first",
            )
        })?;
        let leaf = certs.first().ok_or_else(|| {
            Status::unauthenticated("no client certificate presented: attest first")
        })?;
        // One parse for both: this runs on every call.
        let (agent, serial) = peer_id_and_serial(leaf.as_ref()).map_err(|e| {
            Status::unauthenticated(format!("client certificate is not an SVID: {e}"))
        })?;
        let record = self
            .store
            .node(&agent)
            .map_err(store_status)?
            .ok_or_else(|| {
                Status::permission_denied(format!(
                    "agent {agent} is not attested (evicted?): attest again"
                ))
            })?;
        if record.banned {
            return Err(Status::permission_denied(format!(
                "agent {agent} is banned"
            )));
        }
        if let Some(revocation) = self.revocations.current().node(&agent) {
            return Err(revoked_status(&agent, revocation));
        }
        if !record.honours(&serial, unix_secs(self.clock.now())) {
            return Err(Status::permission_denied(format!(
                "node SVID {serial} of agent {agent} is no longer honoured: attest again"
            )));
        }
        Ok(record)
    }

    /// Takes `cost` from the node's bucket in `limiter` ([`limit`]). Over
    /// it, the refusal is audited (aggregated per node and call) and
    /// answered `ResourceExhausted`; `svid_type` counts it in the metrics.
    async fn within_limits(
        &self,
        limiter: &CallLimiter,
        agent: &NodeRecord,
        call: &'static str,
        svid_type: Option<&'static str>,
        cost: usize,
    ) -> Result<(), Status> {
        let cost = u32::try_from(cost).unwrap_or(u32::MAX);
        let Err(limited) = limiter.admit(&agent.spiffe_id, cost) else {
            return Ok(());
        };
        if let Some(kind) = svid_type {
            self.metrics.refused(kind, RefusalReason::RateLimited);
        }
        let status = limit_status(&limited);
        self.events
            .record(SecurityEvent::NodeRateLimited {
                node: agent.spiffe_id.clone(),
                call,
                reason: limited.to_string(),
            })
            .await
            .map_err(|e| audit_status(&format!("refused ({})", status.message()), &e))?;
        Err(status)
    }
}

/// `ResourceExhausted` for a node over its limit. The message names the
/// limit and when to retry; `grpc-retry-pushback-ms` (gRPC's retry
/// pushback) says the same to clients with a retry policy.
fn limit_status(limited: &LimitError) -> Status {
    let mut status = Status::resource_exhausted(limited.to_string());
    let LimitError::Exceeded { retry_after, .. } = limited;
    if let Ok(value) = retry_after.as_millis().to_string().parse() {
        status
            .metadata_mut()
            .insert("grpc-retry-pushback-ms", value);
    }
    status
}

/// Maps a store failure to a transient gRPC status.
pub(crate) fn store_status(e: StoreError) -> Status {
    tracing::error!(error = %e, "store failure");
    Status::unavailable(format!("issuer store unavailable: {e}"))
}

/// The status when an outcome's audit record cannot be written: the outcome
/// is not delivered (fail closed), and the message says so. `what` is what
/// the caller would otherwise have been told.
pub(crate) fn audit_status(what: &str, e: &AuditError) -> Status {
    tracing::error!(error = %e, what, "audit record not written: failing closed");
    Status::unavailable(format!(
        "{what}: its audit record could not be written ({e}); the issuer's audit log needs attention"
    ))
}

type BoxStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send + 'static>>;

#[tonic::async_trait]
impl Node for NodeApi {
    type AttestStream = BoxStream<AttestResponse>;
    type SyncStream = BoxStream<SyncResponse>;

    #[tracing::instrument(skip_all)]
    async fn attest(
        &self,
        request: Request<Streaming<AttestRequest>>,
    ) -> Result<Response<Self::AttestStream>, Status> {
        let peer = request
            .remote_addr()
            .map(|a| a.to_string())
            .unwrap_or_else(|| "unknown".into());
        let mut inbound = request.into_inner();
        let (tx, rx) = mpsc::channel(4);
        let api = self.clone();
        tokio::spawn(async move {
            let outcome = tokio::time::timeout(
                attest::ATTESTATION_TIMEOUT,
                api.run_attestation(&mut inbound, &tx),
            )
            .await
            .unwrap_or_else(|_| {
                Err(attest::Refusal {
                    attestor: "unknown",
                    status: Status::deadline_exceeded("attestation did not complete in 30s"),
                })
            });
            // The outcome is told to the agent only once it is audited.
            let message = match outcome {
                Ok((result, attestor, serial)) => {
                    let audited = match result
                        .svid
                        .as_ref()
                        .and_then(|svid| SpiffeId::parse(&svid.spiffe_id).ok())
                    {
                        Some(agent) => {
                            api.events
                                .record(SecurityEvent::NodeAttested {
                                    agent,
                                    attestor: attestor.as_str(),
                                    serial,
                                    peer,
                                })
                                .await
                        }
                        None => Ok(()),
                    };
                    match audited {
                        Ok(()) => {
                            api.metrics.attestation(attestor.as_str(), true);
                            Ok(AttestResponse {
                                step: Some(attest_response::Step::Result(result)),
                            })
                        }
                        Err(error) => Err(audit_status("the node SVID was not issued", &error)),
                    }
                }
                Err(refusal) => {
                    api.metrics.attestation(refusal.attestor, false);
                    let audited = api
                        .events
                        .record(SecurityEvent::NodeAttestationRefused {
                            attestor: refusal.attestor,
                            reason: refusal.status.message().to_owned(),
                            peer,
                        })
                        .await;
                    match audited {
                        Ok(()) => Err(refusal.status),
                        Err(error) => Err(audit_status(
                            &format!("attestation refused ({})", refusal.status.message()),
                            &error,
                        )),
                    }
                }
            };
            // The agent may have gone away; nothing to do then.
            let _ = tx.send(message).await;
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    #[tracing::instrument(skip_all)]
    async fn renew_agent_svid(
        &self,
        request: Request<RenewAgentSvidRequest>,
    ) -> Result<Response<RenewAgentSvidResponse>, Status> {
        let record = self.authenticate(&request)?;
        self.within_limits(&self.renewals, &record, "renew_agent_svid", None, 1)
            .await?;
        let public_key = request.into_inner().public_key;
        if public_key.is_empty() {
            return Err(Status::invalid_argument(
                "public_key is empty: send the SubjectPublicKeyInfo (DER) of the new key",
            ));
        }
        let svid = self
            .authority
            .mint_node_svid(&record.spiffe_id, &public_key, self.agent_svid_ttl)
            .map_err(|e| Status::invalid_argument(format!("cannot issue node SVID: {e}")))?;
        // Re-read before writing so an eviction or ban that raced with this
        // call is not undone.
        let mut current = self
            .store
            .node(&record.spiffe_id)
            .map_err(store_status)?
            .filter(|n| !n.banned)
            .ok_or_else(|| {
                Status::permission_denied(format!(
                    "agent {} was evicted or banned: attest again",
                    record.spiffe_id
                ))
            })?;
        current.push_svid(
            IssuedSvid {
                serial: svid.serial.clone(),
                expires_at: unix_secs(svid.not_after),
            },
            unix_secs(self.clock.now()),
        );
        self.store.put_node(&current).map_err(store_status)?;
        self.events
            .record(SecurityEvent::NodeSvidRenewed {
                agent: record.spiffe_id.clone(),
                serial: svid.serial.clone(),
            })
            .await
            .map_err(|e| audit_status("the renewed node SVID was not issued", &e))?;
        Ok(Response::new(RenewAgentSvidResponse {
            svid: Some(svid_to_proto(&svid)),
        }))
    }

    #[tracing::instrument(skip_all)]
    async fn mint_x509_svids(
        &self,
        request: Request<MintX509SvidsRequest>,
    ) -> Result<Response<MintX509SvidsResponse>, Status> {
        let agent = self.authenticate(&request)?;
        // One per key asked for (an empty or oversized list is refused
        // later, and costs one or the most a call can ask).
        let keys = request
            .get_ref()
            .public_keys
            .len()
            .clamp(1, MAX_KEYS_PER_CALL);
        self.within_limits(&self.mints, &agent, "mint_x509_svids", Some("x509"), keys)
            .await?;
        self.mint_x509(&agent, request.into_inner())
            .await
            .map(Response::new)
    }

    #[tracing::instrument(skip_all)]
    async fn mint_jwt_svid(
        &self,
        request: Request<MintJwtSvidRequest>,
    ) -> Result<Response<MintJwtSvidResponse>, Status> {
        let agent = self.authenticate(&request)?;
        self.within_limits(&self.mints, &agent, "mint_jwt_svid", Some("jwt"), 1)
            .await?;
        self.mint_jwt(&agent, request.into_inner())
            .await
            .map(Response::new)
    }

    #[tracing::instrument(skip_all)]
    async fn report_refusals(
        &self,
        request: Request<ReportRefusalsRequest>,
    ) -> Result<Response<ReportRefusalsResponse>, Status> {
        let agent = self.authenticate(&request)?;
        // One token of the node's mint bucket per report (an agent reports
        // at most every few seconds).
        self.within_limits(&self.mints, &agent, "report_refusals", None, 1)
            .await?;
        self.report_refusals(&agent, request.into_inner())
            .await
            .map(Response::new)
    }

    #[tracing::instrument(skip_all)]
    async fn sync(
        &self,
        request: Request<SyncRequest>,
    ) -> Result<Response<Self::SyncStream>, Status> {
        // Subscribed before authenticating: a kill that lands in between is
        // in the first message, and the stream ends right after it.
        let kills = self.revocations.subscribe();
        let record = self.authenticate(&request)?;
        let images = self.images.clone();
        let generations = images.subscribe();
        let stream = sync::sync_stream(sync::SyncFeeds {
            agent: record.spiffe_id,
            kills,
            bundles: self.authority.subscribe(),
            federated: self.federated.clone(),
            node_events: self.node_events.subscribe(),
            shutdown: self.shutdown.clone(),
            images,
            generations,
            _connected: self.metrics.sync_stream(),
        });
        Ok(Response::new(Box::pin(stream)))
    }
}
