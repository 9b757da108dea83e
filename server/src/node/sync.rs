//! The `Sync` stream: the full current state, first as a snapshot, then
//! again after every change (bundle, federated bundles, images,
//! revocations), until the agent
//! goes away, is evicted, banned or revoked, or the issuer stops.
//!
//! The stream is polled directly by the HTTP/2 stream that carries it: no
//! task and no channel per agent. With thousands of agents connected that
//! saves, on every kill, one task wake-up per agent, and for as long as
//! they stay connected, a channel buffer per agent (about 6 KiB: a block of
//! 32 slots). Changes coalesce as before: the watch channels hold only the
//! newest state, so an agent that reads slowly gets the newest full state
//! when it reads next, and none can fall behind.

use std::sync::Arc;

use futures::Stream;
use tokio::sync::{broadcast, watch};
use tonic::Status;

use hallmark_ca::bundle::Bundle;
use hallmark_ca::id::SpiffeId;
use hallmark_proto::node::{PathHints, SyncResponse};

use super::NodeEvent;
use crate::convert::bundle_to_proto;
use crate::federation::FederatedBundles;
use crate::issuance::ImageSet;
use crate::issuance::matcher::Matcher;
use crate::metrics::StreamGuard;
use crate::revocation::{RevocationIndex, revoked_status};

/// What one agent's `Sync` stream follows; subscribed by the handler
/// before it authenticates the agent, so no change in between is missed.
pub(super) struct SyncFeeds {
    pub(super) agent: SpiffeId,
    pub(super) kills: watch::Receiver<Arc<RevocationIndex>>,
    pub(super) bundles: watch::Receiver<Arc<Bundle>>,
    pub(super) federated: watch::Receiver<Arc<FederatedBundles>>,
    pub(super) node_events: broadcast::Receiver<NodeEvent>,
    pub(super) shutdown: watch::Receiver<bool>,
    pub(super) images: Arc<ImageSet>,
    pub(super) generations: watch::Receiver<u64>,
    /// Counts the stream as connected until it is dropped (held, not read).
    pub(super) _connected: StreamGuard,
}

/// What the stream yields next.
enum Next {
    Snapshot,
    /// Waits for a change, then sends the full state.
    Change,
    /// Ends the stream with this status.
    Fail(Status),
    Done,
}

/// The `Sync` response stream of one agent.
pub(super) fn sync_stream(
    feeds: SyncFeeds,
) -> impl Stream<Item = Result<SyncResponse, Status>> + Send + 'static {
    futures::stream::unfold((feeds, Next::Snapshot), |(mut feeds, next)| async move {
        let item = match next {
            Next::Done => return None,
            Next::Fail(status) => return Some((Err(status), (feeds, Next::Done))),
            Next::Snapshot => {
                let (message, then) = feeds.state(true);
                tracing::debug!(agent = %feeds.agent, "sync stream opened");
                (Ok(message), then)
            }
            Next::Change => match feeds.changed().await {
                Ok(()) => {
                    let (message, then) = feeds.state(false);
                    (Ok(message), then)
                }
                Err(Some(status)) => (Err(status), Next::Done),
                Err(None) => return None,
            },
        };
        Some((item.0, (feeds, item.1)))
    })
}

impl SyncFeeds {
    /// The full current state, marking every feed seen, and what follows
    /// it: the next change, or, when the revocations name this agent (it
    /// has been told, and is now refused), the end of the stream.
    fn state(&mut self, snapshot: bool) -> (SyncResponse, Next) {
        let bundle = self.bundles.borrow_and_update().clone();
        let federated = self.federated.borrow_and_update().clone();
        self.generations.borrow_and_update();
        let revocations = self.kills.borrow_and_update().clone();
        let mut message = sync_message(snapshot, &bundle, &self.images.current(), &revocations);
        message.federated_bundles = federated.values().map(|b| bundle_to_proto(b)).collect();
        let next = match revocations.node(&self.agent) {
            None => Next::Change,
            Some(revocation) => {
                tracing::warn!(agent = %self.agent, id = %revocation.id, "agent revoked: its sync stream ends");
                Next::Fail(revoked_status(&self.agent, revocation))
            }
        };
        (message, next)
    }

    /// Waits until something the agent follows changes; `Err` when the
    /// stream must end instead, with the status to end it with (`None`:
    /// end it quietly).
    async fn changed(&mut self) -> Result<(), Option<Status>> {
        loop {
            tokio::select! {
                changed = self.bundles.changed() => {
                    // The sender goes away when the issuer shuts down.
                    return changed.map_err(|_| Some(Status::unavailable("issuer shutting down")));
                }
                changed = self.generations.changed() => return changed.map_err(|_| None),
                changed = self.federated.changed() => return changed.map_err(|_| None),
                changed = self.kills.changed() => return changed.map_err(|_| None),
                event = self.node_events.recv() => match event {
                    Ok(NodeEvent::Removed { agent, reason }) if agent == self.agent => {
                        return Err(Some(Status::permission_denied(format!(
                            "agent {agent} was {reason}"
                        ))));
                    }
                    Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => continue,
                    Err(broadcast::error::RecvError::Closed) => return Err(None),
                },
                () = crate::server::shutdown_signalled(&mut self.shutdown) => {
                    return Err(Some(Status::unavailable("issuer shutting down")));
                }
            }
        }
    }
}

/// A `Sync` message: every message carries the full current state.
fn sync_message(
    snapshot: bool,
    bundle: &Bundle,
    matcher: &Matcher,
    revocations: &RevocationIndex,
) -> SyncResponse {
    SyncResponse {
        snapshot,
        revocations: revocations.to_proto().to_vec(),
        federated_bundles: Vec::new(),
        bundle: Some(bundle_to_proto(bundle)),
        env_names: matcher.env_names().iter().cloned().collect(),
        path_hints: matcher
            .all_path_hints()
            .into_iter()
            .map(|(code, hints)| {
                (
                    code,
                    PathHints {
                        app_paths: hints.app.into_iter().collect(),
                        model_paths: hints.model.into_iter().collect(),
                        interpreters: hints.interpreters.into_iter().map(str::to_owned).collect(),
                        require_loaded: hints.require_loaded,
                        max_svids: if hints.images > 1 {
                            u32::try_from(hints.images).unwrap_or(u32::MAX)
                        } else {
                            0
                        },
                    },
                )
            })
            .collect(),
    }
}
