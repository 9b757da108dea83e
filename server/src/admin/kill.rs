//! The kill switch over the admin API: create, list and lift revocations.
//!
//! Decisions worth knowing:
//! - Everything is checked before anything is written, so every refusal
//!   stores nothing: exactly one target, well formed, in the trust domain;
//!   a one-line reason. Names must be known to the issuer (a registered
//!   image name or `name@version`, a SPIFFE ID a registered image issues, an
//!   agent on record): a typo must not look like a kill that worked. Digests
//!   are taken as given (revoking a binary or model before any image names
//!   it is legitimate, and a mistyped 64-hex digest is not a typo one makes).
//! - One revocation in force per target: the same target again is
//!   `AlreadyExists` naming the revocation in force.
//! - A node revocation also forgets the node SVIDs the issuer honoured for
//!   that agent: lifting the revocation does not bring a possibly stolen
//!   credential back; the agent attests again.
//! - Lifted revocations are kept: `kill list` shows the history, and lifting
//!   twice (`FailedPrecondition`) is told apart from an unknown id
//!   (`NotFound`).

use tonic::Status;

use hallmark_ca::id::SpiffeId;
use hallmark_ca::version::same_version;
use hallmark_proto::admin::{self, CreateRevocationRequest, LiftRevocationRequest};

use super::{AdminApi, Call};
use crate::convert::unix_secs;
use crate::events::SecurityEvent;
use crate::node::store_status;
use crate::revocation::{
    Revocation, RevocationError, RevocationId, RevocationTarget, TargetRequest, check_reason,
    to_admin_proto,
};

impl AdminApi {
    /// `CreateRevocation`: the revocation as stored and in force.
    pub(super) fn create_revocation(
        &self,
        request: &CreateRevocationRequest,
        call: &mut Call<'_>,
    ) -> Result<Revocation, Status> {
        let uid = call.uid();
        let target = RevocationTarget::from_request(
            &TargetRequest {
                spiffe_id: &request.spiffe_id,
                image: &request.image,
                code_sha256: &request.code_sha256,
                model_digest: &request.model_digest,
                node: &request.node,
            },
            &self.trust_domain,
        )
        .map_err(|e| Status::invalid_argument(e.to_string()))?;
        let reason = check_reason(&request.reason).map_err(Status::invalid_argument)?;
        self.check_known(&target)?;
        let revocation = self
            .revocations
            .create(target, reason, uid, unix_secs(self.clock.now()))
            .map_err(revocation_status)?;
        if let RevocationTarget::Node(agent) = &revocation.target {
            self.forget_node_svids(agent);
        }
        self.metrics.kill_created(revocation.target.kind());
        call.record(SecurityEvent::KillCreated {
            id: revocation.id.to_string(),
            target: revocation.target.to_string(),
            reason: revocation.reason.clone(),
            uid,
        });
        Ok(revocation)
    }

    /// `ListRevocations`: every revocation, oldest first.
    pub(super) fn list_revocations(&self) -> Result<Vec<admin::Revocation>, Status> {
        Ok(self
            .revocations
            .list()
            .map_err(store_status)?
            .iter()
            .map(to_admin_proto)
            .collect())
    }

    /// `LiftRevocation`: the revocation as stored, now lifted.
    pub(super) fn lift_revocation(
        &self,
        request: &LiftRevocationRequest,
        call: &mut Call<'_>,
    ) -> Result<Revocation, Status> {
        let uid = call.uid();
        let id = RevocationId::parse(&request.id).map_err(Status::invalid_argument)?;
        let reason = check_reason(&request.reason).map_err(Status::invalid_argument)?;
        let revocation = self
            .revocations
            .lift(&id, reason.clone(), uid, unix_secs(self.clock.now()))
            .map_err(revocation_status)?;
        self.metrics.kill_lifted(revocation.target.kind());
        call.record(SecurityEvent::KillLifted {
            id: revocation.id.to_string(),
            target: revocation.target.to_string(),
            reason,
            uid,
        });
        Ok(revocation)
    }

    /// `NotFound` unless the issuer knows what a named target names.
    fn check_known(&self, target: &RevocationTarget) -> Result<(), Status> {
        let unknown = match target {
            RevocationTarget::Node(agent) => self
                .store
                .node(agent)
                .map_err(store_status)?
                .is_none()
                .then(|| format!("no agent {agent} on record (`agent list` shows them)")),
            RevocationTarget::Image { name, version } => {
                let known = self.store.images().map_err(store_status)?.iter().any(|r| {
                    r.name == name.as_str()
                        && version
                            .as_ref()
                            .is_none_or(|v| same_version(&r.version, v.as_str()))
                });
                (!known).then(|| {
                    format!(
                        "no image {} is registered (`image list --all` shows them)",
                        target.value()
                    )
                })
            }
            RevocationTarget::SpiffeId(id) => (!self.issues(id)?).then(|| {
                format!(
                    "no registered image issues {id} (`image list --all` shows their SPIFFE IDs)"
                )
            }),
            // Digests are revocable before any image names them.
            _ => None,
        };
        unknown.map_or(Ok(()), |message| Err(Status::not_found(message)))
    }

    /// Whether a registered image (retired ones included) issues `id`. The
    /// stored envelopes are re-verified: the store is not trusted.
    fn issues(&self, id: &SpiffeId) -> Result<bool, Status> {
        Ok(self
            .store
            .images()
            .map_err(store_status)?
            .iter()
            .filter_map(|record| self.image_policy.verify_stored(record).ok())
            .any(|verified| verified.image.spiffe_id == *id))
    }

    /// Stops honouring every node SVID of a revoked agent. The revocation is
    /// in force whatever happens here (the node API refuses the agent on
    /// it); this only makes sure a lift does not revive those credentials.
    fn forget_node_svids(&self, agent: &SpiffeId) {
        let result = self.store.node(agent).and_then(|node| match node {
            Some(mut node) if !node.svids.is_empty() => {
                node.svids.clear();
                self.store.put_node(&node)
            }
            _ => Ok(()),
        });
        if let Err(error) = result {
            tracing::error!(%agent, %error, "cannot forget the revoked agent's node SVIDs; the revocation is in force regardless");
        }
    }
}

/// The admin status for a kill switch refusal.
fn revocation_status(error: RevocationError) -> Status {
    match error {
        RevocationError::AlreadyRevoked(_) => Status::already_exists(error.to_string()),
        RevocationError::NotFound(_) => Status::not_found(error.to_string()),
        RevocationError::AlreadyLifted(_) => Status::failed_precondition(error.to_string()),
        RevocationError::Store(e) => store_status(e),
        _ => Status::internal(error.to_string()),
    }
}
