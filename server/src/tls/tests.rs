#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests"
)]

use std::sync::Arc;

use rustls::{ClientConfig, ClientConnection, RootCertStore, ServerConnection};

use super::*;

/// A self-signed certificate for `localhost`: (cert PEM, key PEM, DER).
fn self_signed() -> (String, String, Vec<u8>) {
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = rcgen::CertificateParams::new(vec!["localhost".to_owned()])
        .unwrap()
        .self_signed(&key)
        .unwrap();
    (cert.pem(), key.serialize_pem(), cert.der().to_vec())
}

/// The leaf a client sees in a handshake with `config` (trusting `ca`).
fn served(config: Arc<ServerConfig>, ca: &[u8]) -> Vec<u8> {
    let mut roots = RootCertStore::empty();
    roots.add(CertificateDer::from(ca.to_vec())).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let client_config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let mut client =
        ClientConnection::new(Arc::new(client_config), "localhost".try_into().unwrap()).unwrap();
    let mut server = ServerConnection::new(config).unwrap();
    for _ in 0..10 {
        let mut wire = Vec::new();
        client.write_tls(&mut wire).unwrap();
        server.read_tls(&mut wire.as_slice()).unwrap();
        server.process_new_packets().unwrap();
        let mut back = Vec::new();
        server.write_tls(&mut back).unwrap();
        client.read_tls(&mut back.as_slice()).unwrap();
        client.process_new_packets().unwrap();
        if !client.is_handshaking() {
            break;
        }
    }
    client.peer_certificates().unwrap()[0].as_ref().to_vec()
}

#[test]
fn a_renewed_certificate_is_served_after_reload_and_a_bad_one_is_not() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    let (a_cert, a_key, a_der) = self_signed();
    std::fs::write(&cert, &a_cert).unwrap();
    std::fs::write(&key, &a_key).unwrap();
    let reloadable = ReloadableCert::load(&cert, &key, "oidc.cert", "oidc.key").unwrap();
    let config = reloadable.server_config().unwrap();
    assert_eq!(config.alpn_protocols, [b"http/1.1".to_vec()]);
    assert_eq!(served(config.clone(), &a_der), a_der);
    assert!(!reloadable.reload().unwrap(), "same files: unchanged");

    // Renewed: the same config serves the new certificate.
    let (b_cert, b_key, b_der) = self_signed();
    std::fs::write(&cert, &b_cert).unwrap();
    std::fs::write(&key, &b_key).unwrap();
    assert!(reloadable.reload().unwrap());
    assert_eq!(reloadable.leaf(), b_der);
    assert_eq!(served(config.clone(), &b_der), b_der);

    // Half-written or mismatched files: refused, naming the key; B stays.
    std::fs::write(&key, &a_key).unwrap();
    let err = reloadable.reload().unwrap_err();
    assert!(
        matches!(&err, ConfigError::Invalid { key: "oidc.key", reason } if reason.contains("not a usable certificate and key")),
        "{err}"
    );
    std::fs::write(&cert, "not pem").unwrap();
    let err = reloadable.reload().unwrap_err();
    assert!(
        matches!(&err, ConfigError::Invalid { key: "oidc.cert", reason } if reason.contains("no CERTIFICATE block")),
        "{err}"
    );
    assert_eq!(served(config, &b_der), b_der);
    assert_eq!(
        reloadable.files(),
        (cert.as_path(), key.as_path()),
        "the files it watches"
    );
}
