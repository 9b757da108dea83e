//! Live revocations for relying parties: the kill switch, as the local agent
//! knows it, consulted by a [`Policy`](crate::policy::Policy) at every check
//! (every TLS handshake, every token).
//!
//! [`Revocations::watch`] follows the agent's
//! `hallmark.workload.v1.Revocations/WatchRevocations` stream (served on the
//! Workload API socket): the full set in force arrives at once and again on
//! every change, within the time it takes the issuer to push a message down
//! its open `Sync` streams. A credential is covered as the agent and the
//! issuer decide it ([`RevocationSet::covering`]): by SPIFFE ID, image (every
//! version or one), code digest, model digest or node.
//!
//! **Staleness.** The agent says whether it follows the issuer (`synced`).
//! While it does not (the issuer is unreachable), or while this watch is
//! disconnected from the agent, the set may miss newer kills. By default the
//! last set stays in force and credentials it does not cover are accepted
//! (they expire within their TTL of at most 300 s anyway);
//! [`Revocations::fail_closed_when_stale`] refuses every credential instead.
//!
//! ```no_run
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! use hallmark::policy::Policy;
//! use hallmark::revocation::Revocations;
//! use hallmark::workload::Endpoint;
//! let endpoint = Endpoint::parse("unix:///run/hallmark/agent/api.sock")?;
//! let revocations = Revocations::watch(&endpoint).await?;
//! let policy = Policy::any_identity().with_revocations(revocations);
//! # Ok(())
//! # }
//! ```

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use hallmark_agent::backoff::Backoff;
pub use hallmark_agent::revocation::{Bound, Revocation, RevocationKind, RevocationSet};
use hallmark_proto::revocations::revocations_client::RevocationsClient;
use hallmark_proto::revocations::{
    self as wire, WatchRevocationsRequest, WatchRevocationsResponse,
};

use crate::policy::Denied;
use crate::svid::Identity;
use crate::workload::{AbortOnDrop, Endpoint, WorkloadError, request};

const BACKOFF_BASE: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(5);

/// What a [`Revocations`] knows now.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RevocationState {
    /// The revocations in force, as last received.
    pub set: RevocationSet,
    /// The agent follows the issuer and this watch follows the agent: the
    /// set is current.
    pub synced: bool,
    /// Messages received so far (the first is 1); grows on every change.
    pub updates: u64,
}

/// The revocations in force, followed live from the agent or fixed. Cheap
/// to clone; clones share the same state. Dropping the last clone of a
/// watching one stops the watch.
#[derive(Debug, Clone)]
pub struct Revocations {
    state: watch::Receiver<RevocationState>,
    fail_closed: bool,
    _task: Option<Arc<AbortOnDrop>>,
}

impl Revocations {
    /// Connects to the agent's `WatchRevocations` and waits for the first
    /// set. The watch then runs in the background, reconnecting with
    /// backoff when the agent goes away (the state is not `synced`
    /// meanwhile).
    pub async fn watch(endpoint: &Endpoint) -> Result<Revocations, WorkloadError> {
        let mut client = RevocationsClient::new(endpoint.channel());
        let mut stream = client
            .watch_revocations(request(WatchRevocationsRequest {}))
            .await
            .map_err(WorkloadError::Refused)?
            .into_inner();
        let first = stream
            .message()
            .await
            .map_err(WorkloadError::Refused)?
            .ok_or(WorkloadError::Closed)?;
        let (tx, rx) = watch::channel(state_of(&first, 1));
        let task = tokio::spawn(follow(client, stream, tx));
        Ok(Revocations {
            state: rx,
            fail_closed: false,
            _task: Some(Arc::new(AbortOnDrop(task))),
        })
    }

    /// A fixed set (always `synced`): for tests, or a relying party that
    /// gets its revocations some other way.
    pub fn fixed(set: RevocationSet) -> Revocations {
        let (_tx, rx) = watch::channel(RevocationState {
            set,
            synced: true,
            updates: 1,
        });
        Revocations {
            state: rx,
            fail_closed: false,
            _task: None,
        }
    }

    /// Refuse every credential while the set may be stale (see the
    /// [module docs](self)).
    pub fn fail_closed_when_stale(mut self) -> Revocations {
        self.fail_closed = true;
        self
    }

    /// The current state.
    pub fn state(&self) -> RevocationState {
        self.state.borrow().clone()
    }

    /// A receiver that sees every change of the state.
    pub fn updates(&self) -> watch::Receiver<RevocationState> {
        self.state.clone()
    }

    /// Refuses `identity` if a revocation in force covers it, or if the set
    /// may be stale and this watch fails closed.
    pub fn check(&self, identity: &Identity) -> Result<(), Denied> {
        let state = self.state.borrow();
        if self.fail_closed && !state.synced {
            return Err(Denied::RevocationsStale);
        }
        let bound = match &identity.binding {
            Some(binding) => binding.bound(&identity.spiffe_id),
            None => Bound {
                spiffe_id: identity.spiffe_id.as_str(),
                ..Bound::default()
            },
        };
        match state.set.covering(&bound) {
            Some(revocation) => Err(Denied::Revoked(revocation.clone())),
            None => Ok(()),
        }
    }
}

async fn follow(
    mut client: RevocationsClient<tonic::transport::Channel>,
    mut stream: tonic::Streaming<WatchRevocationsResponse>,
    state: watch::Sender<RevocationState>,
) {
    let mut backoff = Backoff::new(BACKOFF_BASE, BACKOFF_MAX);
    loop {
        while let Ok(Some(message)) = stream.message().await {
            backoff.reset();
            state.send_modify(|s| *s = state_of(&message, s.updates + 1));
        }
        // The agent went away: keep the set, say it may be stale.
        state.send_if_modified(|s| std::mem::replace(&mut s.synced, false));
        loop {
            tokio::time::sleep(backoff.next_delay()).await;
            if let Ok(response) = client
                .watch_revocations(request(WatchRevocationsRequest {}))
                .await
            {
                stream = response.into_inner();
                break;
            }
        }
    }
}

fn state_of(message: &WatchRevocationsResponse, updates: u64) -> RevocationState {
    RevocationState {
        set: RevocationSet::new(message.revocations.iter().filter_map(from_wire).collect()),
        synced: message.synced,
        updates,
    }
}

/// The relying-party wire form; `None` for a kind this version does not
/// know (logged: it cannot be enforced).
fn from_wire(revocation: &wire::Revocation) -> Option<Revocation> {
    let kind = match wire::RevocationKind::try_from(revocation.kind).ok() {
        Some(wire::RevocationKind::SpiffeId) => RevocationKind::SpiffeId,
        Some(wire::RevocationKind::Image) => RevocationKind::Image,
        Some(wire::RevocationKind::Code) => RevocationKind::Code,
        Some(wire::RevocationKind::Model) => RevocationKind::Model,
        Some(wire::RevocationKind::Node) => RevocationKind::Node,
        Some(wire::RevocationKind::Unspecified) | None => {
            tracing::warn!(id = %revocation.id, kind = revocation.kind, "revocation of an unknown kind ignored: upgrade hallmark");
            return None;
        }
    };
    Some(Revocation {
        id: revocation.id.clone(),
        kind,
        target: revocation.target.clone(),
        reason: revocation.reason.clone(),
        created_at: revocation.created_at,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wire_revocations_round_trip_and_unknown_kinds_are_skipped() {
        let r = Revocation {
            id: "0123456789abcdef".into(),
            kind: RevocationKind::Model,
            target: "sha256:aa".into(),
            reason: "poisoned".into(),
            created_at: 7,
        };
        assert_eq!(from_wire(&r.to_wire()), Some(r.clone()));
        let mut unknown = r.to_wire();
        unknown.kind = 42;
        assert_eq!(from_wire(&unknown), None);
        let message = WatchRevocationsResponse {
            revocations: vec![r.to_wire(), unknown],
            synced: true,
        };
        let state = state_of(&message, 3);
        assert_eq!(state.set.len(), 1);
        assert!(state.synced);
        assert_eq!(state.updates, 3);
    }
}
