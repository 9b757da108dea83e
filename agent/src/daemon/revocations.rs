//! The agent's revocation state: the set last received from the issuer
//! (persisted), published to the Workload API, and the agent's own
//! revocation (see [`crate::revocation`]).

use std::sync::Arc;

use tokio::sync::watch;

use super::Inner;
use crate::revocation::{Revocation, RevocationSet};

impl Inner {
    /// The revocations in force as this agent knows them; `None` until it
    /// has a set (from the issuer, or saved by an earlier run).
    pub(crate) fn revocations(&self) -> Option<Arc<RevocationSet>> {
        self.revocations.borrow().clone()
    }

    /// Follows the revocation set.
    pub(crate) fn revocations_receiver(&self) -> watch::Receiver<Option<Arc<RevocationSet>>> {
        self.revocations.subscribe()
    }

    /// The node revocation naming this agent, if it is revoked.
    pub(crate) fn own_revocation(&self) -> Option<Revocation> {
        let id = self.status.borrow().spiffe_id.clone()?;
        self.revocations()?.node(id.as_str()).cloned()
    }

    /// Puts the set from a `Sync` message in force: saved, then published
    /// (only when it changed, so bundle updates do not wake every stream).
    /// If it names this agent, the node SVID is dropped.
    pub(super) fn apply_revocations(&self, set: RevocationSet) {
        let changed = self.revocations.send_if_modified(|current| {
            if current.as_deref() == Some(&set) {
                return false;
            }
            *current = Some(Arc::new(set.clone()));
            true
        });
        if changed {
            tracing::info!(in_force = set.len(), "revocations updated");
            if let Err(error) = set.save(&self.settings.data_dir) {
                // Enforced in memory regardless; only a restart before the
                // next `Sync` would miss it.
                tracing::warn!(%error, "cannot save the revocation set");
            }
        }
        if let Some(own) = self.own_revocation() {
            self.revoked(&own);
        }
    }

    /// The issuer refused this agent because `revocation` names it: enforce
    /// it at once (it may not have seen the set: it was away).
    pub(super) fn apply_own_revocation(&self, revocation: Revocation) {
        let set = self
            .revocations()
            .map(|s| s.with(revocation.clone()))
            .unwrap_or_else(|| RevocationSet::new(vec![revocation]));
        self.apply_revocations(set);
    }

    /// This agent is revoked: forget the node SVID. The issuer ends the
    /// `Sync` stream right after telling it, and that refusal wakes the
    /// identity task, which re-attests if it can (x509pop): refused until
    /// the revocation is lifted.
    fn revoked(&self, revocation: &Revocation) {
        if self.current().is_none() {
            return;
        }
        tracing::error!(id = %revocation.id, reason = %revocation.reason, "this agent is revoked: dropping its node SVID and refusing every workload");
        self.drop_identity(&format!(
            "this agent is revoked by {}",
            revocation.describe()
        ));
    }
}
