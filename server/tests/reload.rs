//! `SIGHUP`: the issuer re-reads its config and applies the trusted
//! signers and signature policy without a restart (it used to die without
//! a checkpoint); a config that does not load changes nothing.

#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod audit_support;

use audit_support::{Node, Store, cli, eventually, stderr};

const CODE: &str = "4444444444444444444444444444444444444444444444444444444444444444";

fn hup(node: &Node) {
    let pid = node.daemon.as_ref().unwrap().id().to_string();
    let status = std::process::Command::new("kill")
        .args(["-HUP", &pid])
        .status()
        .unwrap();
    assert!(status.success());
}

#[test]
fn sighup_applies_new_trusted_signers_and_survives_a_broken_config() {
    let mut node = Node::new("");
    let key = node.path("alice.key");
    let out = cli(&["image", "keygen", "--out", key.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    let manifest = node.path("agent.toml");
    std::fs::write(
        &manifest,
        format!(
            "name = \"agent\"\nversion = \"1.0.0\"\nspiffe_id = \"spiffe://example.org/agent\"\nowner = \"alice@example.org\"\npurpose = \"tests\"\nrisk_tier = \"low\"\nnot_after = 2099-12-31\n[code]\nsha256 = [\"{CODE}\"]\n"
        ),
    )
    .unwrap();
    let signed = node.path("agent.signed.json");
    let out = cli(&[
        "image",
        "sign",
        "--key",
        key.to_str().unwrap(),
        manifest.to_str().unwrap(),
        "--out",
        signed.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    node.start();
    let register = || node.run(&["image", "register", signed.to_str().unwrap()]);
    let refused = register();
    assert!(!refused.status.success());
    assert!(stderr(&refused).contains("no trusted signers are configured"));

    // A broken config on SIGHUP: logged, nothing changes, still serving.
    let good = std::fs::read_to_string(&node.config).unwrap();
    std::fs::write(&node.config, format!("{good}\nnot toml at all [")).unwrap();
    hup(&node);
    std::thread::sleep(std::time::Duration::from_millis(300));
    assert!(node.run(&["healthcheck"]).status.success());

    // The signer added to the config counts after SIGHUP, no restart.
    std::fs::write(
        &node.config,
        good.replace(
            "[audit]",
            &format!(
                "[images]\ntrusted_signers = [\"{}.pub\"]\n[audit]",
                key.display()
            ),
        ),
    )
    .unwrap();
    let pid = node.daemon.as_ref().unwrap().id();
    hup(&node);
    eventually("the reload to apply", || {
        register().status.success().then_some(())
    });
    assert_eq!(node.daemon.as_ref().unwrap().id(), pid, "same process");
    node.stop();
    let store = Store::open(&node.data_dir());
    let reloaded = (1..=store.last_seq())
        .map(|seq| store.record(seq))
        .find(|r| r.kind == "config_reloaded")
        .expect("the reload is audited");
    assert_eq!(reloaded.fields["signers"].as_array().unwrap().len(), 1);
}

#[test]
fn config_check_validates_without_starting() {
    let node = Node::new("");
    let config = node.config.to_str().unwrap();
    let out = cli(&["config", "check", config]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(audit_support::stdout(&out).contains("OK (trust domain example.org"));
    assert!(!node.data_dir().exists(), "nothing is created");
    let bad = node.path("bad.toml");
    std::fs::write(
        &bad,
        std::fs::read_to_string(&node.config)
            .unwrap()
            .replace("[audit]", "[audit]\nrefusal_sources = 0"),
    )
    .unwrap();
    let out = cli(&["config", "check", bad.to_str().unwrap()]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("refusal_sources"), "{}", stderr(&out));
}

/// A self-signed certificate for `localhost` written to `cert`/`key`; its DER.
fn write_cert(cert: &std::path::Path, key: &std::path::Path) -> Vec<u8> {
    let pair = rcgen::KeyPair::generate().unwrap();
    let made = rcgen::CertificateParams::new(vec!["localhost".to_owned()])
        .unwrap()
        .self_signed(&pair)
        .unwrap();
    std::fs::write(cert, made.pem()).unwrap();
    std::fs::write(key, pair.serialize_pem()).unwrap();
    made.der().to_vec()
}

/// The leaf certificate the endpoint at `port` presents, trusting the
/// self-signed certificates `trusted`.
fn served_leaf(port: u16, trusted: &[&Vec<u8>]) -> Vec<u8> {
    use std::io::Write as _;
    use std::sync::Arc;
    let mut roots = rustls::RootCertStore::empty();
    for der in trusted {
        roots
            .add(rustls_pki_types::CertificateDer::from(der.to_vec()))
            .unwrap();
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let conn =
        rustls::ClientConnection::new(Arc::new(config), "localhost".try_into().unwrap()).unwrap();
    let tcp = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    let mut tls = rustls::StreamOwned::new(conn, tcp);
    tls.write_all(b"GET /.well-known/openid-configuration HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .unwrap();
    tls.flush().unwrap();
    tls.conn.peer_certificates().unwrap()[0].as_ref().to_vec()
}

/// An ACME renewal: the OIDC endpoint's certificate files are replaced and
/// `SIGHUP` serves the new one, no restart; a half-written renewal is
/// refused and the certificate in use stays.
#[test]
fn sighup_serves_a_renewed_oidc_certificate() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    let first = write_cert(&cert, &key);
    let mut node = Node::new(&format!(
        "[oidc]\nissuer = \"https://localhost:{port}\"\nlisten = \"127.0.0.1:{port}\"\ncert = \"{}\"\nkey = \"{}\"\n",
        cert.display(),
        key.display()
    ));
    node.start();
    assert_eq!(served_leaf(port, &[&first]), first);

    let renewed = write_cert(&cert, &key);
    let both = [&first, &renewed];
    hup(&node);
    eventually("the renewed certificate", || {
        (served_leaf(port, &both) == renewed).then_some(())
    });

    // A renewal caught half-written (the key of another certificate):
    // the config does not load, nothing changes.
    let _ = write_cert(&dir.path().join("other.pem"), &key);
    hup(&node);
    std::thread::sleep(std::time::Duration::from_millis(300));
    assert_eq!(served_leaf(port, &both), renewed);
    assert!(node.run(&["healthcheck"]).status.success());
}
