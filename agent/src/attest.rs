//! The agent's half of node attestation and renewal.

use std::sync::Arc;

use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::Channel;

use hallmark_attestors::node::x509pop::{X509PopSigner, challenge_message};
use hallmark_ca::bundle::{Bundle, JwtAuthority};
use hallmark_ca::id::TrustDomain;
use hallmark_ca::key::CaKey;
use hallmark_proto::node::node_client::NodeClient;
use hallmark_proto::node::{
    self, AttestParams, AttestRequest, ChallengeResponse, JoinTokenParams, RenewAgentSvidRequest,
    X509PopParams, attest_params, attest_request, attest_response,
};

use crate::error::AgentError;
use crate::persist::NodeSvid;

/// How this agent proves its node.
#[derive(Debug, Clone)]
pub enum AttestMethod {
    /// A single-use join token.
    JoinToken(String),
    /// The node certificate and key.
    X509Pop(Arc<X509PopSigner>),
}

impl AttestMethod {
    /// The attestor's name.
    pub fn name(&self) -> &'static str {
        match self {
            AttestMethod::JoinToken(_) => "join_token",
            AttestMethod::X509Pop(_) => "x509pop",
        }
    }
}

/// Attests and returns the node SVID and the issuer's bundle.
pub async fn attest(
    client: &mut NodeClient<Channel>,
    method: &AttestMethod,
    td: &TrustDomain,
) -> Result<(NodeSvid, Bundle), AgentError> {
    let key = CaKey::generate()?;
    let public_key = key.public_key_der();
    let attestor = match method {
        AttestMethod::JoinToken(token) => attest_params::Attestor::JoinToken(JoinTokenParams {
            token: token.clone(),
        }),
        AttestMethod::X509Pop(signer) => attest_params::Attestor::X509pop(X509PopParams {
            cert_chain: signer.chain_der(),
        }),
    };
    let (tx, rx) = mpsc::channel(2);
    let first = AttestRequest {
        step: Some(attest_request::Step::Params(AttestParams {
            public_key: public_key.clone(),
            attestor: Some(attestor),
        })),
    };
    tx.send(first)
        .await
        .map_err(|_| AgentError::BadResponse("attestation stream closed".into()))?;
    let refused = |status| AgentError::Refused {
        call: "Attest",
        status,
    };
    let mut responses = client
        .attest(ReceiverStream::new(rx))
        .await
        .map_err(refused)?
        .into_inner();
    loop {
        let response =
            responses.message().await.map_err(refused)?.ok_or_else(|| {
                AgentError::BadResponse("attestation ended without a result".into())
            })?;
        match response.step {
            Some(attest_response::Step::Challenge(challenge)) => {
                let AttestMethod::X509Pop(signer) = method else {
                    return Err(AgentError::BadResponse(
                        "the issuer sent a challenge to a join token attestation".into(),
                    ));
                };
                let message = challenge_message(&challenge.nonce, &public_key);
                let signature = signer
                    .sign(&message)
                    .map_err(|e| AgentError::X509Pop(e.to_string()))?;
                tx.send(AttestRequest {
                    step: Some(attest_request::Step::ChallengeResponse(ChallengeResponse {
                        signature,
                    })),
                })
                .await
                .map_err(|_| AgentError::BadResponse("attestation stream closed".into()))?;
            }
            Some(attest_response::Step::Result(result)) => {
                let svid = result
                    .svid
                    .ok_or_else(|| AgentError::BadResponse("result without an SVID".into()))?;
                let bundle = result
                    .bundle
                    .ok_or_else(|| AgentError::BadResponse("result without a bundle".into()))?;
                let node_svid = NodeSvid::new(svid.cert_chain, key)?;
                return Ok((node_svid, bundle_from_proto(bundle, td)?));
            }
            None => return Err(AgentError::BadResponse("empty attestation step".into())),
        }
    }
}

/// Renews the node SVID with a fresh key.
pub async fn renew(client: &mut NodeClient<Channel>) -> Result<NodeSvid, AgentError> {
    let key = CaKey::generate()?;
    let svid = client
        .renew_agent_svid(RenewAgentSvidRequest {
            public_key: key.public_key_der(),
        })
        .await
        .map_err(|status| AgentError::Refused {
            call: "RenewAgentSvid",
            status,
        })?
        .into_inner()
        .svid
        .ok_or_else(|| AgentError::BadResponse("renewal without an SVID".into()))?;
    NodeSvid::new(svid.cert_chain, key)
}

/// A wire bundle, checked to be of our trust domain.
pub fn bundle_from_proto(bundle: node::Bundle, td: &TrustDomain) -> Result<Bundle, AgentError> {
    if bundle.trust_domain != td.as_str() {
        return Err(AgentError::BadResponse(format!(
            "bundle for trust domain {:?}, expected {td}",
            bundle.trust_domain
        )));
    }
    if bundle.x509_authorities.is_empty() {
        return Err(AgentError::BadResponse(
            "bundle without X.509 authorities".into(),
        ));
    }
    Ok(convert_bundle(bundle, td))
}

/// A wire bundle as `td`'s bundle, unchecked (a zero `expires_at` is no
/// expiry).
pub(crate) fn convert_bundle(bundle: node::Bundle, td: &TrustDomain) -> Bundle {
    Bundle {
        trust_domain: td.clone(),
        x509_authorities: bundle.x509_authorities,
        jwt_authorities: bundle
            .jwt_authorities
            .into_iter()
            .map(|a| JwtAuthority {
                key_id: a.key_id,
                public_key_der: a.public_key,
                expires_at: u64::try_from(a.expires_at)
                    .ok()
                    .filter(|s| *s > 0)
                    .map(|s| std::time::UNIX_EPOCH + std::time::Duration::from_secs(s)),
            })
            .collect(),
        sequence: bundle.sequence,
        refresh_hint: std::time::Duration::from_secs(
            u64::try_from(bundle.refresh_hint_seconds).unwrap_or(0),
        ),
    }
}
