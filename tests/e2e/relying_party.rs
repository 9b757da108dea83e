//! The relying-party library against a real issuer and agent: the Workload
//! API sources follow rotation, withdrawal and a lift; a policy with live
//! revocations refuses a killed workload's still-valid certificate at the
//! handshake; the revocation set says when it may be stale, and a policy
//! can fail closed then. The workload is this test process.

use std::sync::Arc;

use tokio::net::{TcpListener, TcpStream};

use hallmark::ca::tls::SvidCertResolver;
use hallmark::policy::{Denied, Policy, PolicyError};
use hallmark::revocation::Revocations;
use hallmark::svid::{Identity, peer_identity};
use hallmark::workload::{SvidSelector, X509Source};
use hallmark_proto::admin::LiftRevocationRequest;
use rustls_pki_types::CertificateDer;

use crate::examples::{ExampleEnv, Image, WAIT, admin, id};

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The identity in an SVID the source holds now.
fn held(source: &X509Source) -> (Vec<Vec<u8>>, Identity) {
    let svid = source.current().svid.expect("the source holds an SVID");
    let certs: Vec<CertificateDer<'_>> = svid
        .chain
        .iter()
        .map(|c| CertificateDer::from(c.as_slice()))
        .collect();
    let identity = peer_identity(&certs).unwrap();
    (svid.chain.clone(), identity)
}

#[tokio::test]
async fn x509_source_follows_rotation_then_withdrawal_then_a_lift() {
    let env = ExampleEnv::start(&[Image {
        name: "rp-follow",
        model_version: "1.0",
    }])
    .await;
    let source = X509Source::start(&env.endpoint, SvidSelector::SpiffeId(id("rp-follow")))
        .await
        .unwrap();
    let first = source.current().svid.unwrap();
    assert_eq!(first.spiffe_id, id("rp-follow"));
    assert_eq!(
        first.binding.as_ref().unwrap().image.as_str(),
        "rp-follow@1.0.0"
    );
    let resolver = source.resolver();
    let leaf = |r: &SvidCertResolver| r.current().map(|k| k.cert[0].as_ref().to_vec());
    assert_eq!(leaf(&resolver), Some(first.chain[0].clone()));

    // Rotation: a new SVID, in the resolver too.
    let mut updates = source.updates();
    let rotated = tokio::time::timeout(
        WAIT,
        updates.wait_for(|s| s.svid.as_ref().is_some_and(|v| v.serial != first.serial)),
    )
    .await
    .unwrap()
    .unwrap()
    .svid
    .clone()
    .unwrap();
    assert_eq!(leaf(&resolver), Some(rotated.chain[0].clone()));

    // A kill: withdrawn, and the resolver holds nothing to present.
    let kill = env.kill_image("rp-follow").await;
    let gone = tokio::time::timeout(WAIT, updates.wait_for(|s| s.svid.is_none()))
        .await
        .unwrap()
        .unwrap()
        .clone();
    let reason = gone.withdrawn.unwrap();
    assert!(
        reason.contains(&format!("revoked by kill {kill}")),
        "{reason}"
    );
    assert!(resolver.current().is_none());

    // A lift: the source picks the identity up again by itself.
    admin(&env.admin_socket)
        .await
        .lift_revocation(LiftRevocationRequest {
            id: kill,
            reason: "all clear".into(),
        })
        .await
        .unwrap();
    let back = tokio::time::timeout(WAIT, updates.wait_for(|s| s.svid.is_some()))
        .await
        .unwrap()
        .unwrap()
        .clone();
    assert_eq!(back.withdrawn, None);
    assert!(resolver.current().is_some());
    env.stop().await;
}

#[tokio::test]
async fn a_killed_workloads_still_valid_certificate_is_refused_at_the_handshake() {
    let env = ExampleEnv::start(&[
        Image {
            name: "rp-client",
            model_version: "1.0",
        },
        Image {
            name: "rp-server",
            model_version: "1.0",
        },
    ])
    .await;
    // The server: its SVID from the agent, clients checked by a policy that
    // follows the agent's revocations.
    let server_svid = X509Source::start(&env.endpoint, SvidSelector::SpiffeId(id("rp-server")))
        .await
        .unwrap();
    let revocations = Revocations::watch(&env.endpoint).await.unwrap();
    let clients = Policy::spiffe_id(id("rp-client")).with_revocations(revocations.clone());
    let mut config = rustls::ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .with_client_cert_verifier(clients.client_verifier(server_svid.bundle()))
        .with_cert_resolver(server_svid.resolver());
    config.session_storage = Arc::new(rustls::server::NoServerSessionStorage {});
    config.send_tls13_tickets = 0;
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (results_tx, mut results) = tokio::sync::mpsc::unbounded_channel();
    let server = tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let outcome = match acceptor.accept(tcp).await {
                Ok(tls) => Ok(peer_identity(tls.get_ref().1.peer_certificates().unwrap())
                    .unwrap()
                    .spiffe_id),
                Err(error) => Err(PolicyError::in_handshake_error(&error).map(ToString::to_string)),
            };
            let _ = results_tx.send(outcome);
        }
    });

    // The client holds on to its certificate, as a compromised workload
    // would after its identity was withdrawn.
    let client_svid = X509Source::start(&env.endpoint, SvidSelector::SpiffeId(id("rp-client")))
        .await
        .unwrap();
    let held = Held(client_svid.resolver().current().unwrap());
    let client_config = Arc::new(
        rustls::ClientConfig::builder_with_provider(provider())
            .with_protocol_versions(&[&rustls::version::TLS13])
            .unwrap()
            .dangerous()
            .with_custom_certificate_verifier(
                Policy::spiffe_id(id("rp-server")).server_verifier(client_svid.bundle()),
            )
            .with_client_cert_resolver(Arc::new(held)),
    );
    let connect = || {
        let config = Arc::clone(&client_config);
        async move {
            let tcp = TcpStream::connect(addr).await.unwrap();
            let name = rustls_pki_types::ServerName::try_from("rp-server.invalid").unwrap();
            // In TLS 1.3 the client finishes before the server has judged
            // its certificate: the server's verdict is what counts.
            let _ = tokio_rustls::TlsConnector::from(config)
                .connect(name, tcp)
                .await;
        }
    };

    connect().await;
    let accepted = tokio::time::timeout(WAIT, results.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(accepted, Ok(id("rp-client")));

    let kill = env.kill_image("rp-client").await;
    let mut state = revocations.updates();
    tokio::time::timeout(WAIT, state.wait_for(|s| s.set.iter().any(|r| r.id == kill)))
        .await
        .unwrap()
        .unwrap();
    // The held certificate is still within its validity and chains to the
    // bundle; the revocation refuses it.
    connect().await;
    let refused = tokio::time::timeout(WAIT, results.recv())
        .await
        .unwrap()
        .unwrap();
    let reason = refused.unwrap_err().expect("a policy refusal");
    assert_eq!(
        reason,
        format!(
            "spiffe://example.org/rp-client is not authorized: revoked by kill {kill} (image rp-client): example test kill"
        )
    );
    server.abort();
    env.stop().await;
}

/// A client certificate resolver that always presents one certificate.
#[derive(Debug)]
struct Held(Arc<rustls::sign::CertifiedKey>);

impl rustls::client::ResolvesClientCert for Held {
    fn resolve(
        &self,
        _root_hints: &[&[u8]],
        _schemes: &[rustls::SignatureScheme],
    ) -> Option<Arc<rustls::sign::CertifiedKey>> {
        Some(Arc::clone(&self.0))
    }

    fn has_certs(&self) -> bool {
        true
    }
}

#[tokio::test]
async fn revocations_say_when_they_may_be_stale_and_policies_can_fail_closed() {
    let mut env = ExampleEnv::start(&[Image {
        name: "rp-stale",
        model_version: "1.0",
    }])
    .await;
    let source = X509Source::start(&env.endpoint, SvidSelector::Default)
        .await
        .unwrap();
    let (_, identity) = held(&source);
    let revocations = Revocations::watch(&env.endpoint).await.unwrap();
    let mut state = revocations.updates();
    tokio::time::timeout(WAIT, state.wait_for(|s| s.synced))
        .await
        .unwrap()
        .unwrap();
    let tolerant = Policy::any_identity().with_revocations(revocations.clone());
    let strict =
        Policy::any_identity().with_revocations(revocations.clone().fail_closed_when_stale());
    tolerant.check(&identity).unwrap();
    strict.check(&identity).unwrap();

    // The agent goes away: the set may now miss kills.
    env.agent.take().unwrap().shutdown().await;
    tokio::time::timeout(WAIT, state.wait_for(|s| !s.synced))
        .await
        .unwrap()
        .unwrap();
    tolerant.check(&identity).unwrap();
    assert_eq!(strict.check(&identity), Err(Denied::RevocationsStale));
    env.stop().await;
}
