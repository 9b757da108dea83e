//! The Workload API's calls to the issuer: a mutual-TLS node API client
//! reused while the node SVID is current, and the mapping of the issuer's
//! refusals to what a workload sees.

use hallmark_proto::node::node_client::NodeClient;
use hallmark_proto::node::{
    MintJwtSvidRequest, MintJwtSvidResponse, MintX509SvidsRequest, MintX509SvidsResponse,
    WorkloadEvidence,
};
use tonic::Status;
use tonic::transport::Channel;

use super::Inner;
use crate::client::connect;
use crate::revocation::{revocation_in, revoked};

impl Inner {
    /// A mutual-TLS client for the issuer, reused while the node SVID is current.
    pub(super) async fn node_client(&self) -> Result<NodeClient<Channel>, Status> {
        let serial = self.current().map(|s| s.serial).ok_or_else(|| {
            Status::unavailable(
                "this agent holds no node SVID: it cannot reach the issuer for workloads",
            )
        })?;
        let mut slot = self.channel.lock().await;
        if let Some((_, client)) = slot.as_ref().filter(|(cached, _)| *cached == serial) {
            return Ok(client.clone());
        }
        let client = connect(&self.settings.server_address, self.tls.clone())
            .await
            .map_err(|e| Status::unavailable(format!("issuer unreachable: {e}")))?;
        *slot = Some((serial, client.clone()));
        Ok(client)
    }

    /// Maps the issuer's answer for a workload call to what the workload sees.
    async fn issuer_status(&self, status: Status) -> Status {
        if let Some(revocation) = revocation_in(&status) {
            // This agent is revoked (it may not have heard yet: the sync
            // stream was down): enforce it, and tell the workload why.
            self.apply_own_revocation(revocation.clone());
            return revoked(&revocation);
        }
        match status.code() {
            tonic::Code::PermissionDenied | tonic::Code::InvalidArgument => status,
            tonic::Code::Unauthenticated => {
                // Our node SVID was refused: the identity task recovers.
                self.identity_lost.notify_one();
                Status::unavailable(format!(
                    "this agent's node identity was refused: {}",
                    status.message()
                ))
            }
            _ => {
                // The connection may be dead: reconnect next time.
                *self.channel.lock().await = None;
                Status::unavailable(format!("issuer unavailable: {}", status.message()))
            }
        }
    }

    /// Asks the issuer for workload X.509-SVIDs.
    pub(crate) async fn mint_x509(
        &self,
        evidence: WorkloadEvidence,
        public_keys: Vec<Vec<u8>>,
    ) -> Result<MintX509SvidsResponse, Status> {
        let mut client = self.node_client().await?;
        match client
            .mint_x509_svids(MintX509SvidsRequest {
                evidence: Some(evidence),
                public_keys,
            })
            .await
        {
            Ok(response) => Ok(response.into_inner()),
            Err(status) => Err(self.issuer_status(status).await),
        }
    }

    /// Asks the issuer for workload JWT-SVIDs.
    pub(crate) async fn mint_jwt(
        &self,
        evidence: WorkloadEvidence,
        audience: Vec<String>,
        spiffe_id: String,
    ) -> Result<MintJwtSvidResponse, Status> {
        let mut client = self.node_client().await?;
        match client
            .mint_jwt_svid(MintJwtSvidRequest {
                evidence: Some(evidence),
                audience,
                spiffe_id,
            })
            .await
        {
            Ok(response) => Ok(response.into_inner()),
            Err(status) => Err(self.issuer_status(status).await),
        }
    }
}
