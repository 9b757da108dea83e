//! The identity task: attestation, renewal at half-life, and recovery
//! (x509pop re-attestation) when the issuer refuses the node SVID.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use super::{Inner, signalled, sleep_until};
use crate::attest::{AttestMethod, attest, renew};
use crate::backoff::Backoff;
use crate::client::{connect, insecure_tls_config};
use crate::error::AgentError;

impl Inner {
    /// Attests, persists the SVID and bundle, and puts them in use.
    pub(super) async fn attest_with(&self, method: &AttestMethod) -> Result<(), AgentError> {
        // Attest anonymously: an old certificate may be expired or refused.
        self.resolver.clear();
        let tls = if self.bundle.load().x509_authorities.is_empty() {
            insecure_tls_config(
                self.bundle.clone(),
                self.resolver.clone(),
                self.settings.clock.clone(),
            )?
        } else {
            self.tls.clone()
        };
        let mut client = connect(&self.settings.server_address, tls).await?;
        let (svid, bundle) = attest(&mut client, method, &self.settings.trust_domain).await?;
        tracing::info!(attestor = method.name(), spiffe_id = %svid.spiffe_id, serial = %svid.serial, "node attested");
        self.data.save_svid(&svid)?;
        self.apply_bundle(bundle)?;
        self.install(svid)
    }

    /// Renews at half-life; re-attests (x509pop) when the identity is refused.
    pub(super) async fn identity_loop(self: Arc<Self>, mut shutdown: watch::Receiver<bool>) {
        let mut backoff = Backoff::new(Duration::from_millis(500), self.settings.sync_backoff_max);
        loop {
            let Some(svid) = self.current() else {
                if !self.recover(&mut shutdown).await {
                    return;
                }
                continue;
            };
            tokio::select! {
                () = sleep_until(&*self.settings.clock, svid.renew_at()) => {}
                () = self.identity_lost.notified() => {
                    let reason = self.status.borrow().last_error.clone();
                    self.drop_identity(reason.as_deref().unwrap_or("the issuer refused the node SVID"));
                    continue;
                }
                () = signalled(&mut shutdown) => return,
            }
            let renewed = async {
                let mut client = connect(&self.settings.server_address, self.tls.clone()).await?;
                renew(&mut client).await
            }
            .await;
            match renewed.and_then(|new| {
                self.data.save_svid(&new)?;
                tracing::info!(serial = %new.serial, "node SVID renewed");
                self.install(new)
            }) {
                Ok(()) => backoff.reset(),
                Err(error) if error.is_identity_refused() => self.drop_identity(&error.to_string()),
                Err(error) => {
                    tracing::warn!(%error, "node SVID renewal failed; will retry");
                    self.record_error(&error);
                    if self.settings.clock.now() >= svid.not_after {
                        self.drop_identity("the node SVID expired before it could be renewed");
                        continue;
                    }
                    tokio::select! {
                        () = tokio::time::sleep(backoff.next_delay()) => {}
                        () = signalled(&mut shutdown) => return,
                    }
                }
            }
        }
    }

    /// Gets a new identity after the old one was refused. Returns `false`
    /// when the agent is shutting down.
    async fn recover(&self, shutdown: &mut watch::Receiver<bool>) -> bool {
        let Some(signer) = self.x509pop.clone() else {
            tracing::error!(
                "this agent has no node SVID and cannot re-attest by itself: generate a new join token with `hallmark-server token generate` and restart it with --join-token"
            );
            signalled(shutdown).await;
            return false;
        };
        let method = AttestMethod::X509Pop(signer);
        let mut backoff = Backoff::new(Duration::from_millis(500), self.settings.sync_backoff_max);
        loop {
            match self.attest_with(&method).await {
                Ok(()) => return true,
                Err(error) => {
                    tracing::warn!(%error, "x509pop re-attestation failed; will retry");
                    self.record_error(&error);
                }
            }
            tokio::select! {
                () = tokio::time::sleep(backoff.next_delay()) => {}
                () = signalled(shutdown) => return false,
            }
        }
    }
}
