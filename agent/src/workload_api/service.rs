//! The `SpiffeWorkloadAPI` gRPC service on the agent's Unix socket.
//!
//! Every call checks the security header, identifies the caller from the
//! socket's peer credentials, measures it through the [`EvidenceSource`] and
//! asks the issuer for credentials of the gold images the evidence matches.
//! `FetchX509SVID` streams: the first message as soon as the SVIDs exist,
//! a new one when the bundle changes, and at half-life the workload is
//! measured again and its SVIDs rotate — a process that exec'd another
//! binary or whose files changed loses its identity then. The stream ends
//! when the process exits.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use futures::Stream;
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

use hallmark_ca::key::CaKey;
use hallmark_proto::evidence_digest;
use hallmark_proto::node::WorkloadEvidence;
use hallmark_proto::workload::spiffe_workload_api_server::SpiffeWorkloadApi;
use hallmark_proto::workload::{
    JwtBundlesRequest, JwtBundlesResponse, Jwtsvid, JwtsvidRequest, JwtsvidResponse,
    ValidateJwtsvidRequest, ValidateJwtsvidResponse, X509BundlesRequest, X509BundlesResponse,
    X509svid, X509svidRequest, X509svidResponse,
};

use super::cache::{CacheKey, SvidCache, SvidSet, WorkloadSvid};
use super::evidence::{Caller, EvidenceSource};
use super::socket::Peer;
use super::{
    check_security_header, jwt_bundles_response, validate_jwt_svid_request, x509_bundles_response,
};
use crate::daemon::{Inner, signalled};
use crate::persist::NodeSvid;

/// How often a streaming workload is checked for having exited.
const LIVENESS_POLL: Duration = Duration::from_secs(1);

/// The Workload API service.
#[derive(Clone)]
pub(crate) struct WorkloadService {
    agent: Arc<Inner>,
    source: Arc<dyn EvidenceSource>,
    cache: SvidCache,
    /// Becomes `true` when the agent stops: streams end so shutdown is prompt.
    shutdown: watch::Receiver<bool>,
}

impl std::fmt::Debug for WorkloadService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WorkloadService")
            .field("cached", &self.cache.len())
            .finish_non_exhaustive()
    }
}

type BoxStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send + 'static>>;

impl WorkloadService {
    pub(crate) fn new(
        agent: Arc<Inner>,
        source: Arc<dyn EvidenceSource>,
        shutdown: watch::Receiver<bool>,
    ) -> Self {
        Self {
            agent,
            source,
            cache: SvidCache::default(),
            shutdown,
        }
    }

    /// Measures the caller on the blocking pool.
    async fn measure(&self, caller: &Caller) -> Result<WorkloadEvidence, Status> {
        let source = self.source.clone();
        let caller = caller.clone();
        let hints = self.agent.hints();
        tokio::task::spawn_blocking(move || source.evidence(&caller, &hints))
            .await
            .map_err(|e| Status::internal(format!("attestation task failed: {e}")))?
            .map_err(|e| e.to_status())
    }

    /// The caller's current X.509-SVIDs: from the cache while fresh, else
    /// minted for keys generated here.
    async fn x509_svids(
        &self,
        caller: &Caller,
    ) -> Result<(WorkloadEvidence, Arc<SvidSet>), Status> {
        let evidence = self.measure(caller).await?;
        let now = self.agent.now();
        let key = CacheKey {
            pid: caller.pid,
            start_time: evidence.start_time,
            evidence_digest: evidence_digest(&evidence),
        };
        if let Some(set) = self.cache.get(&key, now) {
            return Ok((evidence, set));
        }
        let mut wanted = 1;
        loop {
            let keys: Vec<CaKey> = (0..wanted)
                .map(|_| CaKey::generate())
                .collect::<Result<_, _>>()
                .map_err(|e| Status::internal(format!("key generation failed: {e}")))?;
            let response = self
                .agent
                .mint_x509(
                    evidence.clone(),
                    keys.iter().map(CaKey::public_key_der).collect(),
                )
                .await?;
            if response.unminted_matches > 0 && wanted == 1 {
                wanted = 1 + response.unminted_matches as usize;
                continue;
            }
            let mut svids = Vec::with_capacity(response.svids.len());
            for minted in response.svids {
                let Some(svid) = minted.svid else { continue };
                let Some(key) = keys.get(minted.key_index as usize) else {
                    continue;
                };
                let node = NodeSvid::new(svid.cert_chain, key.clone()).map_err(|e| {
                    Status::internal(format!("issuer returned an unreadable SVID: {e}"))
                })?;
                svids.push(WorkloadSvid {
                    spiffe_id: node.spiffe_id.as_str().to_owned(),
                    key_pkcs8: key.pkcs8_der(),
                    chain: node.chain,
                    image: minted.image,
                    not_before: node.not_before,
                    not_after: node.not_after,
                });
            }
            if svids.is_empty() {
                return Err(Status::permission_denied(
                    "no gold image matches this workload",
                ));
            }
            let set = Arc::new(SvidSet::new(svids));
            self.cache.insert(key, set.clone(), now);
            return Ok((evidence, set));
        }
    }

    fn x509_response(&self, set: &SvidSet) -> X509svidResponse {
        let bundle = self.agent.bundle().x509_der_concat();
        X509svidResponse {
            svids: set
                .svids
                .iter()
                .map(|s| X509svid {
                    spiffe_id: s.spiffe_id.clone(),
                    x509_svid: s.chain.concat(),
                    x509_svid_key: s.key_pkcs8.clone(),
                    bundle: bundle.clone(),
                    hint: s.image.clone(),
                })
                .collect(),
            crl: vec![],
            federated_bundles: HashMap::new(),
        }
    }

    /// Streams a workload's SVIDs until it goes away or loses its identity.
    async fn stream_x509(self, caller: Caller, tx: mpsc::Sender<Result<X509svidResponse, Status>>) {
        let mut status = self.agent.status_receiver();
        let mut down = self.shutdown.clone();
        let mut sequence = status.borrow_and_update().bundle_sequence;
        loop {
            let (evidence, set) = match self.x509_svids(&caller).await {
                Ok(found) => found,
                Err(refusal) => {
                    // The standard: a workload with no identity gets PermissionDenied.
                    let _ = tx.send(Err(refusal)).await;
                    return;
                }
            };
            if tx.send(Ok(self.x509_response(&set))).await.is_err() {
                return;
            }
            loop {
                tokio::select! {
                    () = self.agent.sleep_until(set.renew_at) => break,
                    changed = status.changed() => {
                        if changed.is_err() {
                            return;
                        }
                        let now_sequence = status.borrow_and_update().bundle_sequence;
                        if now_sequence != sequence {
                            sequence = now_sequence;
                            if tx.send(Ok(self.x509_response(&set))).await.is_err() {
                                return;
                            }
                        }
                    }
                    () = tokio::time::sleep(LIVENESS_POLL) => {
                        let source = self.source.clone();
                        let e = evidence.clone();
                        let c = caller.clone();
                        let alive = tokio::task::spawn_blocking(move || source.alive(&c, &e))
                            .await
                            .unwrap_or(false);
                        if !alive {
                            self.cache.forget_process(caller.pid, evidence.start_time);
                            return;
                        }
                    }
                    () = tx.closed() => return,
                    () = signalled(&mut down) => {
                        let _ = tx.send(Err(Status::unavailable("the agent is shutting down"))).await;
                        return;
                    }
                }
            }
        }
    }
}

/// The caller's identity from the Unix socket's peer credentials and the
/// pidfd taken when its connection was accepted.
fn caller<T>(request: &Request<T>) -> Result<Caller, Status> {
    let peer = request.extensions().get::<Peer>().ok_or_else(|| {
        Status::unauthenticated("cannot read the caller's credentials from the socket")
    })?;
    let pid = peer.pid.ok_or_else(|| {
        Status::unauthenticated("the caller's pid is not visible (another pid namespace?)")
    })?;
    let process = peer.process.clone().ok_or_else(|| {
        Status::permission_denied(format!("process {pid} exited before it could be attested"))
    })?;
    Ok(Caller {
        pid,
        process,
        uid: peer.uid,
        gid: peer.gid,
    })
}

#[tonic::async_trait]
impl SpiffeWorkloadApi for WorkloadService {
    type FetchX509SVIDStream = BoxStream<X509svidResponse>;
    type FetchX509BundlesStream = BoxStream<X509BundlesResponse>;
    type FetchJWTBundlesStream = BoxStream<JwtBundlesResponse>;

    #[tracing::instrument(skip_all)]
    async fn fetch_x509svid(
        &self,
        request: Request<X509svidRequest>,
    ) -> Result<Response<Self::FetchX509SVIDStream>, Status> {
        check_security_header(request.metadata())?;
        let caller = caller(&request)?;
        let (tx, rx) = mpsc::channel(4);
        tokio::spawn(self.clone().stream_x509(caller, tx));
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    #[tracing::instrument(skip_all)]
    async fn fetch_x509_bundles(
        &self,
        request: Request<X509BundlesRequest>,
    ) -> Result<Response<Self::FetchX509BundlesStream>, Status> {
        check_security_header(request.metadata())?;
        let agent = self.agent.clone();
        Ok(Response::new(Box::pin(bundle_stream(
            agent,
            self.shutdown.clone(),
            x509_bundles_response,
        ))))
    }

    #[tracing::instrument(skip_all)]
    async fn fetch_jwtsvid(
        &self,
        request: Request<JwtsvidRequest>,
    ) -> Result<Response<JwtsvidResponse>, Status> {
        check_security_header(request.metadata())?;
        let caller = caller(&request)?;
        let wanted = request.into_inner();
        if wanted.audience.iter().all(String::is_empty) {
            return Err(Status::invalid_argument("audience must be specified"));
        }
        let evidence = self.measure(&caller).await?;
        let minted = self
            .agent
            .mint_jwt(evidence, wanted.audience, wanted.spiffe_id)
            .await?;
        Ok(Response::new(JwtsvidResponse {
            svids: minted
                .svids
                .into_iter()
                .map(|s| Jwtsvid {
                    spiffe_id: s.spiffe_id,
                    svid: s.token,
                    hint: s.image,
                })
                .collect(),
        }))
    }

    #[tracing::instrument(skip_all)]
    async fn fetch_jwt_bundles(
        &self,
        request: Request<JwtBundlesRequest>,
    ) -> Result<Response<Self::FetchJWTBundlesStream>, Status> {
        check_security_header(request.metadata())?;
        let agent = self.agent.clone();
        Ok(Response::new(Box::pin(bundle_stream(
            agent,
            self.shutdown.clone(),
            jwt_bundles_response,
        ))))
    }

    #[tracing::instrument(skip_all)]
    async fn validate_jwtsvid(
        &self,
        request: Request<ValidateJwtsvidRequest>,
    ) -> Result<Response<ValidateJwtsvidResponse>, Status> {
        check_security_header(request.metadata())?;
        let bundle = self.agent.bundle();
        validate_jwt_svid_request(request.get_ref(), &bundle, self.agent.now()).map(Response::new)
    }
}

/// A stream of bundle messages: one now, one on every bundle change.
fn bundle_stream<T: Send + 'static>(
    agent: Arc<Inner>,
    mut down: watch::Receiver<bool>,
    render: fn(&hallmark_ca::bundle::Bundle) -> T,
) -> impl Stream<Item = Result<T, Status>> + Send + 'static {
    let (tx, rx) = mpsc::channel(4);
    tokio::spawn(async move {
        let mut status = agent.status_receiver();
        let mut sequence = status.borrow_and_update().bundle_sequence;
        if tx.send(Ok(render(&agent.bundle()))).await.is_err() {
            return;
        }
        loop {
            tokio::select! {
                changed = status.changed() => {
                    if changed.is_err() {
                        return;
                    }
                    let now_sequence = status.borrow_and_update().bundle_sequence;
                    if now_sequence != sequence {
                        sequence = now_sequence;
                        if tx.send(Ok(render(&agent.bundle()))).await.is_err() {
                            return;
                        }
                    }
                }
                () = tx.closed() => return,
                () = signalled(&mut down) => return,
            }
        }
    });
    ReceiverStream::new(rx)
}
