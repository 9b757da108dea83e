//! The sync task: one `Sync` stream at a time while the agent has an
//! identity; every message's revocations are applied first (so a reconnected
//! agent enforces what was revoked while it was away before anything else),
//! then its bundle and the federated bundles are applied and persisted; a
//! lost stream is reopened after
//! a jittered backoff. A refusal that names a revocation of this agent
//! (`hallmark-revocation-bin`) is enforced as such.

use std::sync::Arc;
use std::time::Duration;

use hallmark_proto::node::SyncRequest;
use tokio::sync::watch;

use super::{Inner, signalled, status_reaches};
use crate::attest::bundle_from_proto;
use crate::backoff::Backoff;
use crate::client::connect;
use crate::error::AgentError;
use crate::revocation::{RevocationSet, revocation_in};
use crate::workload_api::evidence::AttestationHints;

impl Inner {
    /// Keeps a `Sync` stream open while the agent has an identity.
    pub(super) async fn sync_loop(self: Arc<Self>, mut shutdown: watch::Receiver<bool>) {
        let mut backoff = Backoff::new(Duration::from_millis(200), self.settings.sync_backoff_max);
        let mut status = self.status.subscribe();
        loop {
            // Wait for an identity.
            tokio::select! {
                live = status_reaches(&mut status, |s| s.attested) => if !live { return },
                () = signalled(&mut shutdown) => return,
            }
            let outcome = self.sync_once(&mut shutdown, &mut backoff).await;
            self.status.send_modify(|s| s.sync_connected = false);
            match outcome {
                Ok(()) => return,
                Err(error) if error.is_identity_refused() => {
                    if let AgentError::Refused { status, .. } = &error
                        && let Some(revocation) = revocation_in(status)
                    {
                        self.apply_own_revocation(revocation);
                    }
                    tracing::warn!(%error, "the issuer refused the node SVID on the sync stream");
                    self.record_error(&error);
                    self.identity_lost.notify_one();
                    // Wait until the identity task has dropped the refused SVID.
                    tokio::select! {
                        _ = status_reaches(&mut status, |s| !s.attested) => {}
                        () = signalled(&mut shutdown) => return,
                    }
                }
                Err(error) => {
                    tracing::warn!(%error, "sync stream lost; reconnecting");
                    self.record_error(&error);
                }
            }
            tokio::select! {
                () = tokio::time::sleep(backoff.next_delay()) => {}
                () = signalled(&mut shutdown) => return,
            }
        }
    }

    /// One `Sync` stream, until it fails (`Err`) or the agent stops (`Ok`).
    async fn sync_once(
        &self,
        shutdown: &mut watch::Receiver<bool>,
        backoff: &mut Backoff,
    ) -> Result<(), AgentError> {
        let mut client = connect(&self.settings.server_address, self.tls.clone()).await?;
        let refused = |status| AgentError::Refused {
            call: "Sync",
            status,
        };
        let mut stream = client
            .sync(SyncRequest {})
            .await
            .map_err(refused)?
            .into_inner();
        let mut first = true;
        loop {
            let message = tokio::select! {
                message = stream.message() => message.map_err(refused)?,
                () = signalled(shutdown) => return Ok(()),
            };
            let Some(update) = message else {
                return Err(AgentError::BadResponse(
                    "the issuer closed the sync stream".into(),
                ));
            };
            // Before anything else: what is revoked stops now.
            self.apply_revocations(RevocationSet::from_node(&update.revocations));
            if let Some(bundle) = update.bundle {
                self.apply_bundle(bundle_from_proto(bundle, &self.settings.trust_domain)?)?;
            }
            // Every message carries the full set: a trust domain missing
            // from it is no longer federated.
            self.apply_federated(crate::federated::from_proto(
                update.federated_bundles,
                &self.settings.trust_domain,
            )?)?;
            let hints = Arc::new(AttestationHints {
                env_names: update.env_names.into_iter().collect(),
                path_hints: update.path_hints.into_iter().collect(),
            });
            self.hints.store(hints);
            if first {
                first = false;
                backoff.reset();
                self.status.send_modify(|s| {
                    s.sync_connected = true;
                    s.sync_connects += 1;
                    s.last_error = None;
                });
                tracing::info!("sync stream established");
            }
        }
    }
}
