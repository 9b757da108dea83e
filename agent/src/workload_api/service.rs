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
//!
//! Revocations (the kill switch, [`crate::revocation`]) apply everywhere:
//! an SVID or token a revocation covers is never served, cached SVIDs it
//! covers are dropped at once, and every open stream that held one gets a
//! message without it right away (`PermissionDenied` when none is left).
//! After a lift, a stream that had SVIDs withheld fetches afresh.

use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::Stream;
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

use hallmark_attestors::workload::Cancel;
use hallmark_ca::jwt::{AudienceError, check_audience, validate_jwt_svid};
use hallmark_ca::key::CaKey;
use hallmark_proto::evidence_digest;
use hallmark_proto::node::WorkloadEvidence;
use hallmark_proto::workload::spiffe_workload_api_server::SpiffeWorkloadApi;
use hallmark_proto::workload::{
    JwtBundlesRequest, JwtBundlesResponse, Jwtsvid, JwtsvidRequest, JwtsvidResponse,
    ValidateJwtsvidRequest, ValidateJwtsvidResponse, X509BundlesRequest, X509BundlesResponse,
    X509svid, X509svidRequest, X509svidResponse,
};

use super::cache::{CacheKey, SvidCache, SvidSet, WorkloadSvid, rotation_start};
use super::connection::{ConnectionState, StreamSlot};
use super::evidence::{Caller, EvidenceError, EvidenceSource};
use super::socket::{ExeIdentity, Peer};
use super::walks::WalkLimiter;
use super::{
    check_security_header, federated_x509, jwt_bundles_response, validate_jwt_svid_request,
    x509_bundles_response,
};
use crate::backoff::Backoff;
use crate::daemon::refusals::RefusedBy;
use crate::daemon::{Inner, signalled};
use crate::federated::FederatedBundles;
use crate::metrics::{Source, StreamMethod};
use crate::persist::NodeSvid;
use crate::revocation::{Bound, RevocationSet, revoked};

/// The most keys the issuer takes in one `MintX509Svids` call.
const MAX_KEYS_PER_CALL: usize = 16;
/// How often a streaming workload is checked for having exited.
const LIVENESS_POLL: Duration = Duration::from_secs(1);
/// First and longest wait between renewal attempts while the issuer is
/// unreachable and cached SVIDs are served.
const STALE_RETRY_BASE: Duration = Duration::from_millis(500);
const STALE_RETRY_MAX: Duration = Duration::from_secs(5);

/// The Workload API service.
#[derive(Clone)]
pub(crate) struct WorkloadService {
    agent: Arc<Inner>,
    source: Arc<dyn EvidenceSource>,
    cache: SvidCache,
    /// How many measurements run at once, per uid and in all.
    walks: Arc<WalkLimiter>,
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
        let cache = SvidCache::default();
        tokio::spawn(prune_revoked(
            cache.clone(),
            agent.revocations_receiver(),
            shutdown.clone(),
        ));
        let limits = agent.workload_settings();
        let walks = Arc::new(WalkLimiter::new(
            limits.max_walks,
            limits.max_walks_per_uid,
            limits.walk_wait,
        ));
        Self {
            agent,
            source,
            cache,
            walks,
            shutdown,
        }
    }

    /// Withholds the SVIDs a revocation covers; `PermissionDenied` naming
    /// the revocation when none is left (reported to the issuer).
    fn enforce(&self, set: Arc<SvidSet>, caller: &Caller) -> Result<Arc<SvidSet>, Status> {
        let Some(revocations) = self.agent.revocations() else {
            return Ok(set);
        };
        match set.without_revoked(&revocations) {
            None => Ok(set),
            Some((kept, revocation)) if kept.svids.is_empty() => {
                Err(self.report(RefusedBy::Revoked, "x509", caller, revoked(&revocation)))
            }
            Some((kept, _)) => Ok(Arc::new(kept)),
        }
    }

    /// Counts a refusal decided here for the issuer's audit log, and logs it.
    fn report(
        &self,
        kind: RefusedBy,
        call: &'static str,
        caller: &Caller,
        status: Status,
    ) -> Status {
        tracing::warn!(
            pid = caller.pid,
            uid = caller.uid,
            refused_by = kind.as_str(),
            "refused: {}",
            status.message()
        );
        self.agent
            .refusals()
            .record(kind, call, caller.pid, caller.uid, &status);
        status
    }

    /// Measures the caller on the blocking pool, within the walk limits.
    /// Refused when a process other than the caller wrote on its
    /// connection, when the caller has not echoed the agent's PING, or
    /// when the caller runs another executable than when it connected
    /// (checked after the measurement, so an exec during it is caught
    /// too). Every refusal is reported to the issuer, as one of `call`
    /// (`x509`, `jwt`). Dropping this future (the client went away) stops
    /// the measurement; its place is freed when the walk has actually
    /// stopped.
    async fn measure(
        &self,
        caller: &Caller,
        call: &'static str,
    ) -> Result<WorkloadEvidence, Status> {
        self.measure_checked(caller)
            .await
            .map_err(|(kind, status)| match kind {
                Some(kind) => self.report(kind, call, caller, status),
                None => status,
            })
    }

    /// [`Self::measure`], each refusal with what refused (`None`: nothing
    /// to report, such as a client that went away).
    async fn measure_checked(
        &self,
        caller: &Caller,
    ) -> Result<WorkloadEvidence, (Option<RefusedBy>, Status)> {
        let sender = |status| (Some(RefusedBy::Sender), status);
        refuse_foreign(caller).map_err(sender)?;
        // The liveness challenge (see `connection`): the request may have
        // been written by a program the process ran before the accept.
        let timeout = self.agent.workload_settings().challenge_timeout;
        caller
            .connection
            .challenge_answered(timeout)
            .await
            .map_err(|status| (Some(RefusedBy::Challenge), status))?;
        refuse_foreign(caller).map_err(sender)?;
        let permit = self
            .walks
            .acquire(caller.uid)
            .await
            .map_err(|e| (Some(RefusedBy::Limit), e.to_status()))?;
        let source = self.source.clone();
        let measured = caller.clone();
        let hints = self.agent.hints();
        let cancel = Cancel::default();
        let _cancel_on_drop = cancel.guard();
        let (evidence, exe_now) = tokio::task::spawn_blocking(move || {
            let _permit = permit;
            let evidence = source.evidence(&measured, &hints, &cancel);
            (evidence, ExeIdentity::of(measured.pid).ok())
        })
        .await
        .map_err(|e| {
            (
                None,
                Status::internal(format!("attestation task failed: {e}")),
            )
        })?;
        let evidence = evidence.map_err(|e| {
            let kind = match e {
                EvidenceError::Cancelled => None,
                EvidenceError::ResourceExhausted { .. } => Some(RefusedBy::Limit),
                _ => Some(RefusedBy::Evidence),
            };
            (kind, e.to_status())
        })?;
        // The sender check again: bytes read while measuring count too.
        refuse_foreign(caller).map_err(sender)?;
        if caller.exe.is_none() || exe_now != caller.exe {
            return Err((
                Some(RefusedBy::Exec),
                Status::permission_denied(format!(
                    "process {} executed another program since it connected to the Workload API (or its executable could not be read): a connection and its streams belong to the program that opened them; open a new connection from the program that asks",
                    caller.pid
                )),
            ));
        }
        Ok(evidence)
    }

    /// The caller's current X.509-SVIDs and where they came from: from the
    /// cache while fresh, else minted for keys generated here. While the
    /// issuer is unreachable (`Unavailable`), cached SVIDs past their
    /// half-life are served until they expire; then the caller gets the
    /// `Unavailable` (fail closed).
    async fn x509_svids(
        &self,
        caller: &Caller,
    ) -> Result<(WorkloadEvidence, Arc<SvidSet>, Source), Status> {
        if let Some(own) = self.agent.own_revocation() {
            return Err(revoked(&own));
        }
        let evidence = self.measure(caller, "x509").await?;
        let now = self.agent.now();
        let key = CacheKey {
            pid: caller.pid,
            start_time: evidence.start_time,
            evidence_digest: evidence_digest(&evidence),
        };
        if let Some(set) = self.cache.get(&key, now) {
            return Ok((evidence, self.enforce(set, caller)?, Source::Cache));
        }
        match self.mint_x509_set(&evidence).await {
            Ok(set) => {
                // A revocation may have arrived while the issuer was minting.
                let set = self.enforce(set, caller)?;
                self.cache.insert(key, set.clone(), now);
                Ok((evidence, set, Source::Issuer))
            }
            Err(status) if status.code() == tonic::Code::Unavailable => {
                let Some(cached) = self.cache.get_unexpired(&key, self.agent.now()) else {
                    return Err(status);
                };
                tracing::warn!(
                    pid = caller.pid,
                    error = %status.message(),
                    "issuer unavailable: serving cached SVIDs until they expire"
                );
                Ok((evidence, self.enforce(cached, caller)?, Source::StaleCache))
            }
            Err(status) => Err(self.for_caller(caller, &evidence, status)),
        }
    }

    /// An issuer's refusal as `caller` may read it: the digest of its
    /// executable withheld when it could not read the executable itself
    /// (mode 0711), so the agent is no oracle for the content of programs
    /// a uid may run but not read. The issuer's audit record keeps the
    /// digest for the operator.
    fn for_caller(&self, caller: &Caller, evidence: &WorkloadEvidence, status: Status) -> Status {
        let digest = evidence.exe_sha256.as_str();
        if digest.is_empty()
            || !status.message().contains(digest)
            || self.source.may_read_executable(caller)
        {
            return status;
        }
        Status::new(
            status.code(),
            status.message().replace(
                digest,
                "(withheld: this process cannot read its own executable; the issuer's audit log names it)",
            ),
        )
    }

    /// Mints X.509-SVIDs for `evidence`, one per matching image, for keys
    /// generated here.
    async fn mint_x509_set(&self, evidence: &WorkloadEvidence) -> Result<Arc<SvidSet>, Status> {
        // As many keys as images bind the executable (the issuer's hint):
        // one round trip, unless the images changed since the last Sync.
        let mut wanted = self
            .agent
            .hints()
            .path_hints
            .get(&evidence.exe_sha256)
            .map_or(1, |h| h.max_svids as usize)
            .clamp(1, MAX_KEYS_PER_CALL);
        let mut retried = false;
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
            if response.svids.is_empty() && response.unminted_matches > 0 && !retried {
                // More images match than the hint said: the issuer signed
                // nothing and says how many keys to send.
                wanted = (response.unminted_matches as usize).clamp(1, MAX_KEYS_PER_CALL);
                retried = true;
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
                let binding = binding_of(&node.chain);
                let text = |key: &str| {
                    binding
                        .as_ref()
                        .and_then(|b| b.get(key))
                        .and_then(serde_json::Value::as_str)
                        .map(str::to_owned)
                };
                svids.push(WorkloadSvid {
                    spiffe_id: node.spiffe_id.as_str().to_owned(),
                    key_pkcs8: key.pkcs8_der(),
                    code_sha256: text("code_sha256").unwrap_or_else(|| evidence.exe_sha256.clone()),
                    model_digest: binding
                        .as_ref()
                        .and_then(|b| b.pointer("/model/digest"))
                        .and_then(serde_json::Value::as_str)
                        .map(str::to_owned),
                    node: text("node").unwrap_or_else(|| self.agent_id()),
                    chain: node.chain,
                    image: minted.image,
                    not_before: rotation_start(node.not_before, self.agent.now()),
                    not_after: node.not_after,
                });
            }
            if svids.is_empty() {
                return Err(Status::permission_denied(
                    "no gold image matches this workload",
                ));
            }
            return Ok(Arc::new(SvidSet::new(svids)));
        }
    }

    /// `FetchJWTSVID`: JWT-SVIDs are minted per call (they are not cached).
    async fn jwt_svids(
        &self,
        request: Request<JwtsvidRequest>,
    ) -> Result<Response<JwtsvidResponse>, Status> {
        check_security_header(request.metadata())?;
        let caller = caller(&request)?;
        let _active = caller.connection.begin();
        let wanted = request.into_inner();
        // Bounded before anything is measured or sent to the issuer (which
        // checks the same bounds).
        let audiences = check_audience(&wanted.audience).map_err(|e| match e {
            AudienceError::Missing => Status::invalid_argument("audience must be specified"),
            other => Status::invalid_argument(other.to_string()),
        })?;
        if let Some(own) = self.agent.own_revocation() {
            return Err(revoked(&own));
        }
        let evidence = self.measure(&caller, "jwt").await?;
        let audience = audiences.first().cloned().unwrap_or_default();
        let minted = self
            .agent
            .mint_jwt(evidence.clone(), audiences, wanted.spiffe_id)
            .await
            .map_err(|status| self.for_caller(&caller, &evidence, status))?;
        // A revocation may have arrived while the issuer was minting: the
        // tokens' own `hallmark` claims say what they are bound to.
        let revocations = self.agent.revocations().unwrap_or_default();
        let (bundle, now, node) = (self.agent.bundle(), self.agent.now(), self.agent_id());
        let mut withheld = None;
        let svids: Vec<Jwtsvid> = minted
            .svids
            .into_iter()
            .filter(|s| {
                let claims = validate_jwt_svid(&s.token, &audience, &bundle, now)
                    .ok()
                    .map(|v| v.claims);
                let binding = claims.as_ref().and_then(|c| c.get("hallmark"));
                let bound = match binding {
                    Some(_) => Bound::from_binding(&s.spiffe_id, binding),
                    None => Bound {
                        spiffe_id: &s.spiffe_id,
                        image: &s.image,
                        code_sha256: &evidence.exe_sha256,
                        model_digest: None,
                        node: &node,
                    },
                };
                match revocations.covering(&bound) {
                    None => true,
                    Some(revocation) => {
                        withheld.get_or_insert_with(|| revocation.clone());
                        false
                    }
                }
            })
            .map(|s| Jwtsvid {
                spiffe_id: s.spiffe_id,
                svid: s.token,
                hint: s.image,
            })
            .collect();
        if let (true, Some(revocation)) = (svids.is_empty(), &withheld) {
            return Err(self.report(RefusedBy::Revoked, "jwt", &caller, revoked(revocation)));
        }
        Ok(Response::new(JwtsvidResponse { svids }))
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
            federated_bundles: federated_x509(&self.agent.federated()),
        }
    }

    /// Opens a stream slot of `caller`'s uid and follows its X.509-SVIDs
    /// (as `FetchX509SVID` streams them, and SDS serves them) on the
    /// returned channel.
    pub(crate) fn watch_x509(
        &self,
        caller: Caller,
    ) -> Result<mpsc::Receiver<Result<X509svidResponse, Status>>, Status> {
        let slot = caller
            .connection
            .open_stream()
            .map_err(|status| self.report(RefusedBy::Limit, "x509", &caller, status))?;
        let (tx, rx) = mpsc::channel(4);
        tokio::spawn(self.clone().stream_x509(caller, slot, tx));
        Ok(rx)
    }

    /// Streams a workload's SVIDs until it goes away or loses its identity.
    async fn stream_x509(
        self,
        caller: Caller,
        slot: StreamSlot,
        tx: mpsc::Sender<Result<X509svidResponse, Status>>,
    ) {
        let _slot = slot;
        let mut status = self.agent.status_receiver();
        let mut down = self.shutdown.clone();
        let mut sequence = bundles_version(&status.borrow_and_update());
        let mut revocations = self.agent.revocations_receiver();
        let mut known = revocations.borrow_and_update().clone();
        let metrics = self.agent.metrics();
        let _open = metrics.stream(StreamMethod::FetchX509Svid);
        let mut retry = Backoff::new(STALE_RETRY_BASE, STALE_RETRY_MAX);
        let mut sent: Option<Arc<SvidSet>> = None;
        loop {
            let started = Instant::now();
            // A client gone while it is measured stops the walk at once.
            let found = tokio::select! {
                found = self.x509_svids(&caller) => found,
                () = tx.closed() => return,
            };
            let (evidence, mut set, source) = match found {
                Ok(found) => found,
                Err(mut refusal) => {
                    metrics.failed("x509", refusal.code(), started.elapsed());
                    if refusal.code() == tonic::Code::Unavailable && sent.is_some() {
                        // Fail closed: what the workload holds has expired
                        // (or is about to) and cannot be renewed.
                        metrics.expired();
                        refusal = Status::unavailable(format!(
                            "the cached SVIDs expired and could not be renewed: {}",
                            refusal.message()
                        ));
                    }
                    // The standard: a workload with no identity gets PermissionDenied.
                    let _ = tx.send(Err(refusal)).await;
                    return;
                }
            };
            metrics.fetched("x509", source, started.elapsed());
            if !sent.as_ref().is_some_and(|s| same_svids(s, &set)) {
                if tx.send(Ok(self.x509_response(&set))).await.is_err() {
                    return;
                }
                sent = Some(set.clone());
            }
            // Measure again at half-life; while the issuer is unreachable,
            // retry with backoff until the SVIDs expire.
            let (wake_at, retry_in) = if source == Source::StaleCache {
                (set.expires_at(), Some(retry.next_delay()))
            } else {
                retry.reset();
                (set.renew_at, None)
            };
            loop {
                tokio::select! {
                    () = self.agent.sleep_until(wake_at) => break,
                    () = sleep_opt(retry_in) => break,
                    changed = status.changed() => {
                        if changed.is_err() {
                            return;
                        }
                        let now_sequence = bundles_version(&status.borrow_and_update());
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
                            // Usually nobody is left to read this; when the pid
                            // was recycled, the reader learns why.
                            let _ = tx
                                .send(Err(Status::permission_denied(format!(
                                    "process {} exited or its pid now names another process: its identity is withdrawn",
                                    caller.pid
                                ))))
                                .await;
                            return;
                        }
                    }
                    changed = revocations.changed() => {
                        if changed.is_err() {
                            return;
                        }
                        let Some(current) = revocations.borrow_and_update().clone() else {
                            continue;
                        };
                        let lifted = known.as_ref().is_some_and(|before| {
                            before.iter().any(|r| current.iter().all(|now| now.id != r.id))
                        });
                        known = Some(current.clone());
                        if lifted && set.withheld {
                            // A lift may give back what was withheld: fetch afresh.
                            self.cache.forget_process(caller.pid, evidence.start_time);
                            break;
                        }
                        if let Some((kept, revocation)) = set.without_revoked(&current) {
                            if kept.svids.is_empty() {
                                // The standard: no identity left is PermissionDenied.
                                let _ = tx.send(Err(revoked(&revocation))).await;
                                return;
                            }
                            set = Arc::new(kept);
                            if tx.send(Ok(self.x509_response(&set))).await.is_err() {
                                return;
                            }
                            sent = Some(set.clone());
                        }
                    }
                    refusal = caller.connection.tainted() => {
                        // Another process wrote on this connection: the
                        // stream ends now rather than at its next rotation.
                        let _ = tx.send(Err(refusal)).await;
                        return;
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

    /// This agent's SPIFFE ID, as bound into the credentials it obtains.
    fn agent_id(&self) -> String {
        self.agent
            .status_receiver()
            .borrow()
            .spiffe_id
            .as_ref()
            .map(|id| id.as_str().to_owned())
            .unwrap_or_default()
    }
}

/// The caller's identity from the Unix socket's peer credentials and the
/// pidfd taken when its connection was accepted (whether it alone wrote
/// on the connection is checked when it is measured).
pub(crate) fn caller<T>(request: &Request<T>) -> Result<Caller, Status> {
    let peer = peer(request)?;
    let pid = peer.pid.ok_or_else(|| {
        Status::unauthenticated("the caller's pid is not visible (another pid namespace?)")
    })?;
    let process = peer.process.clone().ok_or_else(|| {
        Status::permission_denied(format!("process {pid} exited before it could be attested"))
    })?;
    let caller = Caller {
        pid,
        process,
        uid: peer.uid,
        gid: peer.gid,
        exe: peer.exe,
        connection: peer.connection.clone(),
    };
    Ok(caller)
}

fn peer<T>(request: &Request<T>) -> Result<&Peer, Status> {
    request.extensions().get::<Peer>().ok_or_else(|| {
        Status::unauthenticated("cannot read the caller's credentials from the socket")
    })
}

/// Refuses a request on a connection another process wrote on.
/// When the process that connected has exited, the refusal says so (that
/// is why nobody else may speak for it).
fn refuse_foreign(caller: &Caller) -> Result<(), Status> {
    caller.connection.check_sender().map_err(|refusal| {
        if caller.process.exited() {
            Status::permission_denied(format!(
                "process {} exited after it connected, and another process wrote on its connection: {}",
                caller.pid,
                refusal.message()
            ))
        } else {
            refusal
        }
    })
}

/// A stream slot of the request's connection (the uid's stream limit),
/// after the sender check.
pub(crate) fn open_stream<T>(request: &Request<T>) -> Result<StreamSlot, Status> {
    let connection: &std::sync::Arc<ConnectionState> = &peer(request)?.connection;
    connection.check_sender()?;
    connection.open_stream()
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
        let rx = self.watch_x509(caller)?;
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    #[tracing::instrument(skip_all)]
    async fn fetch_x509_bundles(
        &self,
        request: Request<X509BundlesRequest>,
    ) -> Result<Response<Self::FetchX509BundlesStream>, Status> {
        check_security_header(request.metadata())?;
        let slot = open_stream(&request)?;
        let agent = self.agent.clone();
        Ok(Response::new(Box::pin(bundle_stream(
            agent,
            slot,
            self.shutdown.clone(),
            x509_bundles_response,
            StreamMethod::FetchX509Bundles,
        ))))
    }

    #[tracing::instrument(skip_all)]
    async fn fetch_jwtsvid(
        &self,
        request: Request<JwtsvidRequest>,
    ) -> Result<Response<JwtsvidResponse>, Status> {
        let started = Instant::now();
        let result = self.jwt_svids(request).await;
        match &result {
            Ok(_) => self
                .agent
                .metrics()
                .fetched("jwt", Source::Issuer, started.elapsed()),
            Err(status) => self
                .agent
                .metrics()
                .failed("jwt", status.code(), started.elapsed()),
        }
        result
    }

    #[tracing::instrument(skip_all)]
    async fn fetch_jwt_bundles(
        &self,
        request: Request<JwtBundlesRequest>,
    ) -> Result<Response<Self::FetchJWTBundlesStream>, Status> {
        check_security_header(request.metadata())?;
        let slot = open_stream(&request)?;
        let agent = self.agent.clone();
        Ok(Response::new(Box::pin(bundle_stream(
            agent,
            slot,
            self.shutdown.clone(),
            jwt_bundles_response,
            StreamMethod::FetchJwtBundles,
        ))))
    }

    #[tracing::instrument(skip_all)]
    async fn validate_jwtsvid(
        &self,
        request: Request<ValidateJwtsvidRequest>,
    ) -> Result<Response<ValidateJwtsvidResponse>, Status> {
        check_security_header(request.metadata())?;
        let connection = &peer(&request)?.connection;
        connection.check_sender()?;
        let _active = connection.begin();
        let bundle = self.agent.bundle();
        let revocations = self.agent.revocations().ok_or_else(|| {
            Status::unavailable(
                "this agent has not received the revocations in force from the issuer yet: retry shortly",
            )
        })?;
        validate_jwt_svid_request(
            request.get_ref(),
            &bundle,
            &self.agent.federated(),
            &revocations,
            self.agent.now(),
        )
        .map(Response::new)
    }
}

/// Whether two sets hold the same SVIDs (the same leaf certificates).
fn same_svids(a: &SvidSet, b: &SvidSet) -> bool {
    a.svids.len() == b.svids.len()
        && a.svids
            .iter()
            .zip(&b.svids)
            .all(|(x, y)| x.chain.first() == y.chain.first())
}

/// Sleeps for `delay`, or forever without one.
async fn sleep_opt(delay: Option<Duration>) {
    match delay {
        Some(delay) => tokio::time::sleep(delay).await,
        None => std::future::pending().await,
    }
}

/// The binding extension of a workload SVID's leaf, as JSON.
fn binding_of(chain: &[Vec<u8>]) -> Option<serde_json::Value> {
    let bytes = hallmark_ca::x509::binding_from_cert(chain.first()?).ok()??;
    serde_json::from_slice(&bytes).ok()
}

/// Drops cached SVIDs as revocations arrive, and after a lift forgets the
/// entries that had SVIDs withheld, so they are minted afresh.
async fn prune_revoked(
    cache: SvidCache,
    mut revocations: watch::Receiver<Option<Arc<RevocationSet>>>,
    mut down: watch::Receiver<bool>,
) {
    let mut known = revocations.borrow_and_update().clone();
    loop {
        tokio::select! {
            changed = revocations.changed() => if changed.is_err() { return },
            () = signalled(&mut down) => return,
        }
        let Some(current) = revocations.borrow_and_update().clone() else {
            continue;
        };
        let dropped = cache.revoke(&current);
        if dropped > 0 {
            tracing::info!(dropped, "revoked SVIDs dropped from the cache");
        }
        if known.as_ref().is_some_and(|before| {
            before
                .iter()
                .any(|r| current.iter().all(|now| now.id != r.id))
        }) {
            cache.forget_withheld();
        }
        known = Some(current);
    }
}

/// What bundle streams follow: the own bundle's sequence and the
/// federated bundles' generation (a change of either is a new message).
fn bundles_version(status: &crate::daemon::AgentStatus) -> (u64, u64) {
    (status.bundle_sequence, status.federated_generation)
}

/// A stream of bundle messages: one now, one on every bundle change
/// (own or federated).
fn bundle_stream<T: Send + 'static>(
    agent: Arc<Inner>,
    slot: StreamSlot,
    mut down: watch::Receiver<bool>,
    render: fn(&hallmark_ca::bundle::Bundle, &FederatedBundles) -> T,
    method: StreamMethod,
) -> impl Stream<Item = Result<T, Status>> + Send + 'static {
    let (tx, rx) = mpsc::channel(4);
    tokio::spawn(async move {
        let _slot = slot;
        let _open = agent.metrics().stream(method);
        let mut status = agent.status_receiver();
        let mut sequence = bundles_version(&status.borrow_and_update());
        if tx
            .send(Ok(render(&agent.bundle(), &agent.federated())))
            .await
            .is_err()
        {
            return;
        }
        loop {
            tokio::select! {
                changed = status.changed() => {
                    if changed.is_err() {
                        return;
                    }
                    let now_sequence = bundles_version(&status.borrow_and_update());
                    if now_sequence != sequence {
                        sequence = now_sequence;
                        if tx.send(Ok(render(&agent.bundle(), &agent.federated()))).await.is_err() {
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
