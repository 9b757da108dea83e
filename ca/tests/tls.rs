//! In-memory rustls handshakes (no sockets) with SVIDs on both sides.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "test code: a failure is a test failure"
)]

mod common;

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use common::{Workload, id, td};
use hallmark_ca::CaError;
use hallmark_ca::bundle::SharedBundle;
use hallmark_ca::id::SpiffeId;
use hallmark_ca::manager::{CaConfig, CaManager};
use hallmark_ca::tls::{
    Authorizer, SpiffeClientVerifier, SpiffeServerVerifier, SvidCertResolver, peer_spiffe_id,
};
use hallmark_ca::x509::SvidRequest;
use rustls::client::ResolvesClientCert;
use rustls::{CertificateError, ClientConnection, ServerConnection};
use rustls_pki_types::ServerName;

/// Mints an SVID for `path` and loads it into a fresh resolver.
fn resolver_for(ca: &CaManager, path: &str) -> SvidCertResolver {
    let workload = Workload::new();
    let spiffe_id = id(path);
    let svid = ca
        .mint_node_svid(
            &SvidRequest {
                spiffe_id: &spiffe_id,
                public_key_der: &workload.spki(),
                ttl: Duration::from_secs(600),
                dns_names: &[],
                extensions: &[],
            },
            SystemTime::now(),
        )
        .unwrap();
    let resolver = SvidCertResolver::new();
    resolver.set(svid.cert_chain, &workload.pkcs8()).unwrap();
    resolver
}

fn agents_only() -> Authorizer {
    Arc::new(|id: &SpiffeId| id.has_path_prefix("/hallmark/agent"))
}

struct Setup {
    server_bundle: SharedBundle,
    client_bundle: SharedBundle,
    server_cert: SvidCertResolver,
    client_cert: SvidCertResolver,
    authorize: Authorizer,
    mandatory: bool,
    expected_server: SpiffeId,
}

fn connect(
    s: &Setup,
) -> (
    ClientConnection,
    ServerConnection,
    Result<(), rustls::Error>,
) {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let server_config = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_client_cert_verifier(Arc::new(SpiffeClientVerifier::new(
            s.server_bundle.clone(),
            s.authorize.clone(),
            s.mandatory,
        )))
        .with_cert_resolver(Arc::new(s.server_cert.clone()));
    let client_config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(SpiffeServerVerifier::new(
            s.client_bundle.clone(),
            s.expected_server.clone(),
        )))
        .with_client_cert_resolver(Arc::new(s.client_cert.clone()));
    let mut client = ClientConnection::new(
        Arc::new(client_config),
        ServerName::try_from("ignored.invalid").unwrap(),
    )
    .unwrap();
    let mut server = ServerConnection::new(Arc::new(server_config)).unwrap();
    let result = drive(&mut client, &mut server);
    (client, server, result)
}

/// Shuttles TLS records between the two ends until both finish or one fails.
fn drive(
    client: &mut ClientConnection,
    server: &mut ServerConnection,
) -> Result<(), rustls::Error> {
    for _ in 0..32 {
        let mut buf = Vec::new();
        while client.wants_write() {
            client.write_tls(&mut buf).unwrap();
        }
        let mut rd = buf.as_slice();
        while !rd.is_empty() {
            server.read_tls(&mut rd).unwrap();
            server.process_new_packets()?;
        }
        let mut buf = Vec::new();
        while server.wants_write() {
            server.write_tls(&mut buf).unwrap();
        }
        let mut rd = buf.as_slice();
        while !rd.is_empty() {
            client.read_tls(&mut rd).unwrap();
            client.process_new_packets()?;
        }
        if !client.is_handshaking()
            && !server.is_handshaking()
            && !client.wants_write()
            && !server.wants_write()
        {
            return Ok(());
        }
    }
    panic!("handshake did not finish");
}

fn setup(ca: &CaManager) -> Setup {
    let bundle = SharedBundle::new(ca.bundle());
    Setup {
        server_bundle: bundle.clone(),
        client_bundle: bundle,
        server_cert: resolver_for(ca, "/hallmark/server"),
        client_cert: resolver_for(ca, "/hallmark/agent/join_token/t1"),
        authorize: agents_only(),
        mandatory: true,
        expected_server: id("/hallmark/server"),
    }
}

fn ca() -> CaManager {
    CaManager::generate(CaConfig::new(td()), SystemTime::now()).unwrap()
}

#[test]
fn mutual_svid_handshake_succeeds() {
    let ca = ca();
    let s = setup(&ca);
    let (client, server, result) = connect(&s);
    result.unwrap();
    let client_certs = server.peer_certificates().unwrap();
    assert_eq!(
        peer_spiffe_id(client_certs).unwrap(),
        id("/hallmark/agent/join_token/t1")
    );
    assert_eq!(
        peer_spiffe_id(client.peer_certificates().unwrap()).unwrap(),
        id("/hallmark/server")
    );
}

#[test]
fn client_cert_from_another_ca_is_refused() {
    let ca = ca();
    let other = ca_other();
    let mut s = setup(&ca);
    s.client_cert = resolver_for(&other, "/hallmark/agent/join_token/t1");
    let (_, _, result) = connect(&s);
    assert!(matches!(
        result,
        Err(rustls::Error::InvalidCertificate(
            CertificateError::UnknownIssuer
        ))
    ));
}

fn ca_other() -> CaManager {
    ca()
}

#[test]
fn server_with_the_wrong_spiffe_id_is_refused() {
    let ca = ca();
    let mut s = setup(&ca);
    s.server_cert = resolver_for(&ca, "/impostor");
    let (_, _, result) = connect(&s);
    assert!(matches!(
        result,
        Err(rustls::Error::InvalidCertificate(
            CertificateError::ApplicationVerificationFailure
        ))
    ));
}

#[test]
fn unauthorized_client_is_refused() {
    let ca = ca();
    let mut s = setup(&ca);
    s.client_cert = resolver_for(&ca, "/workloads/not-an-agent");
    let (_, _, result) = connect(&s);
    assert!(matches!(
        result,
        Err(rustls::Error::InvalidCertificate(
            CertificateError::ApplicationVerificationFailure
        ))
    ));
}

#[test]
fn anonymous_client_only_when_not_mandatory() {
    let ca = ca();
    let mut s = setup(&ca);
    s.client_cert = SvidCertResolver::new();
    assert!(!s.client_cert.has_certs());
    s.mandatory = false;
    let (_, server, result) = connect(&s);
    result.unwrap();
    assert!(server.peer_certificates().is_none());
    s.mandatory = true;
    let (_, _, result) = connect(&s);
    assert!(matches!(
        result,
        Err(rustls::Error::NoCertificatesPresented)
    ));
}

#[test]
fn bundle_swap_takes_effect_without_new_configs() {
    let ca = ca();
    let other = ca_other();
    let mut s = setup(&ca);
    s.client_cert = resolver_for(&other, "/hallmark/agent/join_token/t1");
    assert!(connect(&s).2.is_err());
    // The server learns the other CA's root (e.g. after a rotation) through the shared bundle.
    let mut merged = ca.bundle();
    merged
        .x509_authorities
        .extend(other.bundle().x509_authorities);
    merged.sequence += 1;
    s.server_bundle.store(merged);
    connect(&s).2.unwrap();
}

#[test]
fn resolver_refuses_a_key_that_is_not_the_leafs() {
    let ca = ca();
    let workload = Workload::new();
    let stranger = Workload::new();
    let spiffe_id = id("/w");
    let svid = ca
        .mint_x509_svid(
            &SvidRequest {
                spiffe_id: &spiffe_id,
                public_key_der: &workload.spki(),
                ttl: Duration::from_secs(60),
                dns_names: &[],
                extensions: &[],
            },
            SystemTime::now(),
        )
        .unwrap();
    let resolver = SvidCertResolver::new();
    assert!(matches!(
        resolver.set(svid.cert_chain.clone(), &stranger.pkcs8()),
        Err(CaError::KeyMismatch)
    ));
    assert!(matches!(
        resolver.set(Vec::new(), &workload.pkcs8()),
        Err(CaError::EmptyChain)
    ));
    assert!(resolver.current().is_none());
    resolver.set(svid.cert_chain, &workload.pkcs8()).unwrap();
    assert!(resolver.has_certs());
    resolver.clear();
    assert!(!resolver.has_certs());
}

#[test]
fn svid_authorizers_see_the_whole_verified_svid_and_their_refusal_is_the_error() {
    use hallmark_ca::tls::{Refusal, SvidAuthorizer};
    use hallmark_ca::verify::VerifiedSvid;

    let ca = ca();
    let s = setup(&ca);
    let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
    let record = Arc::clone(&seen);
    let only_agents: SvidAuthorizer = Arc::new(move |svid: &VerifiedSvid| {
        record.lock().unwrap().push(svid.clone());
        if svid.spiffe_id.has_path_prefix("/hallmark/agent") {
            Ok(())
        } else {
            Err(Refusal::from(format!("{} is not an agent", svid.spiffe_id)))
        }
    });
    let only_server: SvidAuthorizer = Arc::new(|svid: &VerifiedSvid| {
        if svid.spiffe_id == id("/hallmark/server") {
            Ok(())
        } else {
            Err("not the issuer".into())
        }
    });
    let handshake = |client_cert: &SvidCertResolver| {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let server_config = rustls::ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_client_cert_verifier(Arc::new(SpiffeClientVerifier::with_svid_authorizer(
                s.server_bundle.clone(),
                Arc::clone(&only_agents),
            )))
            .with_cert_resolver(Arc::new(s.server_cert.clone()));
        let client_config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(SpiffeServerVerifier::with_svid_authorizer(
                s.client_bundle.clone(),
                Arc::clone(&only_server),
            )))
            .with_client_cert_resolver(Arc::new(client_cert.clone()));
        let mut client = ClientConnection::new(
            Arc::new(client_config),
            ServerName::try_from("ignored.invalid").unwrap(),
        )
        .unwrap();
        let mut server = ServerConnection::new(Arc::new(server_config)).unwrap();
        drive(&mut client, &mut server)
    };

    handshake(&s.client_cert).unwrap();
    {
        let seen = seen.lock().unwrap();
        assert_eq!(seen.len(), 1);
        assert_eq!(seen[0].spiffe_id, id("/hallmark/agent/join_token/t1"));
        assert_eq!(
            seen[0].serial,
            hallmark_ca::tls::leaf_serial(s.client_cert.current().unwrap().cert[0].as_ref())
                .unwrap()
        );
    }
    let err = handshake(&resolver_for(&ca, "/workloads/w")).unwrap_err();
    match err {
        rustls::Error::InvalidCertificate(CertificateError::Other(other)) => {
            assert_eq!(
                other.0.to_string(),
                "spiffe://example.org/workloads/w is not an agent"
            );
        }
        other => panic!("{other:?}"),
    }
    // Mandatory: no certificate, no handshake.
    assert!(matches!(
        handshake(&SvidCertResolver::new()),
        Err(rustls::Error::NoCertificatesPresented)
    ));
}
