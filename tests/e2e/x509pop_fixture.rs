//! A provisioning CA and node certificates made with rcgen at test time, and
//! the agent's half of the x509pop exchange.

use std::time::{Duration, SystemTime};

use sha2::{Digest, Sha256};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Status;
use tonic::transport::Channel;

use hallmark_attestors::node::x509pop::{X509PopSigner, challenge_message};
use hallmark_ca::key::CaKey;
use hallmark_proto::node::node_client::NodeClient;
use hallmark_proto::node::{
    AttestParams, AttestRequest, AttestResult, ChallengeResponse, X509PopParams, attest_params,
    attest_request, attest_response,
};

pub struct ProvisioningCa {
    issuer: rcgen::Issuer<'static, rcgen::KeyPair>,
    der: Vec<u8>,
}

pub struct NodeCert {
    pub der: Vec<u8>,
    pub cert_pem: String,
    pub key_pem: String,
}

impl NodeCert {
    pub fn sha256_hex(&self) -> String {
        hex::encode(Sha256::digest(&self.der))
    }
}

impl ProvisioningCa {
    pub fn new() -> Self {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "Provisioning CA");
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params.key_usages = vec![
            rcgen::KeyUsagePurpose::KeyCertSign,
            rcgen::KeyUsagePurpose::CrlSign,
        ];
        let cert = params.self_signed(&key).unwrap();
        Self {
            der: cert.der().to_vec(),
            issuer: rcgen::Issuer::new(params, key),
        }
    }

    pub fn root_der(&self) -> Vec<u8> {
        self.der.clone()
    }

    pub fn node_cert(&self, name: &str, not_after: SystemTime) -> NodeCert {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params =
            rcgen::CertificateParams::new(vec![format!("{name}.nodes.example.org")]).unwrap();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, name);
        params.not_before = (not_after - Duration::from_secs(2 * 86400)).into();
        params.not_after = not_after.into();
        params.key_usages = vec![rcgen::KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        NodeCert {
            der: cert.der().to_vec(),
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        }
    }
}

/// Runs the x509pop exchange; `wrong_nonce` signs a different nonce.
pub async fn attest_x509pop(
    client: &mut NodeClient<Channel>,
    node: &NodeCert,
    wrong_nonce: bool,
) -> Result<(CaKey, AttestResult), Status> {
    let signer = X509PopSigner::from_pem(&node.cert_pem, &node.key_pem).unwrap();
    let key = CaKey::generate().unwrap();
    let (tx, rx) = mpsc::channel(2);
    tx.send(AttestRequest {
        step: Some(attest_request::Step::Params(AttestParams {
            public_key: key.public_key_der(),
            attestor: Some(attest_params::Attestor::X509pop(X509PopParams {
                cert_chain: signer.chain_der(),
            })),
        })),
    })
    .await
    .unwrap();
    let mut responses = client.attest(ReceiverStream::new(rx)).await?.into_inner();
    loop {
        let Some(response) = responses.message().await? else {
            panic!("attestation ended without a result");
        };
        match response.step {
            Some(attest_response::Step::Challenge(challenge)) => {
                let mut nonce = challenge.nonce.clone();
                if wrong_nonce {
                    nonce[0] ^= 1;
                }
                let message = challenge_message(&nonce, &key.public_key_der());
                let signature = signer.sign(&message).unwrap();
                tx.send(AttestRequest {
                    step: Some(attest_request::Step::ChallengeResponse(ChallengeResponse {
                        signature,
                    })),
                })
                .await
                .unwrap();
            }
            Some(attest_response::Step::Result(result)) => return Ok((key, result)),
            None => panic!("empty attestation step"),
        }
    }
}
