//! `hallmark.workload.v1.Revocations/WatchRevocations`: the revocations in
//! force, for relying parties on the node.
//!
//! A separate gRPC service on the Workload API socket, so SPIFFE clients
//! never see it (the standard's service and messages are untouched). The
//! same security header rule applies. Each message carries the full set and
//! whether it is current (`synced`: the agent's `Sync` stream with the
//! issuer is open); one is sent at once and one on every change of either.
//! Any local process may watch: revocations, like bundles, are not secret.

use std::pin::Pin;
use std::sync::Arc;

use futures::Stream;
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

use hallmark_proto::revocations::revocations_server::Revocations;
use hallmark_proto::revocations::{WatchRevocationsRequest, WatchRevocationsResponse};

use super::check_security_header;
use crate::daemon::{Inner, signalled};

/// The `Revocations` service.
#[derive(Clone)]
pub(crate) struct RevocationService {
    agent: Arc<Inner>,
    shutdown: watch::Receiver<bool>,
}

impl std::fmt::Debug for RevocationService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RevocationService").finish_non_exhaustive()
    }
}

impl RevocationService {
    pub(crate) fn new(agent: Arc<Inner>, shutdown: watch::Receiver<bool>) -> Self {
        Self { agent, shutdown }
    }

    fn message(&self) -> WatchRevocationsResponse {
        WatchRevocationsResponse {
            revocations: self
                .agent
                .revocations()
                .map(|set| set.to_wire())
                .unwrap_or_default(),
            synced: self.agent.status_receiver().borrow().sync_connected,
        }
    }
}

type BoxStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send + 'static>>;

#[tonic::async_trait]
impl Revocations for RevocationService {
    type WatchRevocationsStream = BoxStream<WatchRevocationsResponse>;

    #[tracing::instrument(skip_all)]
    async fn watch_revocations(
        &self,
        request: Request<WatchRevocationsRequest>,
    ) -> Result<Response<Self::WatchRevocationsStream>, Status> {
        check_security_header(request.metadata())?;
        let slot = super::service::open_stream(&request)?;
        let service = self.clone();
        let (tx, rx) = mpsc::channel(4);
        tokio::spawn(async move {
            let _slot = slot;
            let _open = service
                .agent
                .metrics()
                .stream(crate::metrics::StreamMethod::WatchRevocations);
            let mut revocations = service.agent.revocations_receiver();
            let mut status = service.agent.status_receiver();
            let mut down = service.shutdown.clone();
            revocations.borrow_and_update();
            let mut last = service.message();
            if tx.send(Ok(last.clone())).await.is_err() {
                return;
            }
            loop {
                tokio::select! {
                    changed = revocations.changed() => if changed.is_err() { return },
                    changed = status.changed() => if changed.is_err() { return },
                    () = tx.closed() => return,
                    () = signalled(&mut down) => {
                        let _ = tx.send(Err(Status::unavailable("the agent is shutting down"))).await;
                        return;
                    }
                }
                revocations.borrow_and_update();
                status.borrow_and_update();
                let next = service.message();
                // Status changes that touch neither the set nor `synced`
                // (renewals, bundles) are not news.
                if next != last {
                    last = next;
                    if tx.send(Ok(last.clone())).await.is_err() {
                        return;
                    }
                }
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }
}
