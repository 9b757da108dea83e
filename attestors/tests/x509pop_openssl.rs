//! x509pop with keys and certificates made by the openssl CLI, as
//! `docs/deployment.md`'s recipe makes them: SEC1 EC keys (`openssl ecparam
//! -genkey`), PKCS#1 and PKCS#8 RSA keys, a v3 node certificate, and the
//! reason given for a v1 one. Skipped (saying so) without `openssl`.

#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::Path;
use std::process::Command;
use std::time::SystemTime;

use hallmark_attestors::node::x509pop::{
    X509PopSigner, X509PopVerifier, challenge_message, new_nonce, verify_response,
};

/// Runs `openssl args` in `dir`; panics with its stderr on failure.
fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn read(dir: &Path, name: &str) -> String {
    std::fs::read_to_string(dir.join(name)).unwrap()
}

fn der(pem_text: &str) -> Vec<u8> {
    pem::parse(pem_text).unwrap().into_contents()
}

/// The provisioning CA and a node certificate for `node.key` made by the
/// `node_key` command, as the docs' recipe makes them (`ext`: the node
/// certificate's extension file; `None` asks for no extensions).
fn recipe(dir: &Path, node_key: &[&str], ext: Option<&str>) {
    openssl(
        dir,
        &[
            "ecparam",
            "-name",
            "prime256v1",
            "-genkey",
            "-noout",
            "-out",
            "ca.key",
        ],
    );
    openssl(
        dir,
        &[
            "req",
            "-x509",
            "-new",
            "-key",
            "ca.key",
            "-subj",
            "/CN=Provisioning CA",
            "-days",
            "3650",
            "-out",
            "ca.pem",
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign",
        ],
    );
    openssl(dir, node_key);
    openssl(
        dir,
        &[
            "req",
            "-new",
            "-key",
            "node.key",
            "-subj",
            "/CN=node-1.example",
            "-out",
            "node.csr",
        ],
    );
    let mut sign = vec![
        "x509",
        "-req",
        "-in",
        "node.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-days",
        "365",
        "-out",
        "node.pem",
    ];
    if let Some(ext) = ext {
        std::fs::write(dir.join("node.ext"), ext).unwrap();
        sign.extend(["-extfile", "node.ext"]);
    }
    openssl(dir, &sign);
}

/// A SEC1 P-256 node key, as `openssl ecparam -genkey` writes it.
const EC_NODE_KEY: &[&str] = &[
    "ecparam",
    "-name",
    "prime256v1",
    "-genkey",
    "-noout",
    "-out",
    "node.key",
];

const NODE_EXT: &str = "basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\n";

fn have_openssl() -> bool {
    let found = Command::new("openssl").arg("version").output().is_ok();
    if !found {
        eprintln!("skipped: openssl is not installed");
    }
    found
}

#[test]
fn keys_and_certificates_from_the_openssl_recipe_attest() {
    if !have_openssl() {
        return;
    }
    let cases: [(&str, &[&str], &str); 4] = [
        ("SEC1 P-256", EC_NODE_KEY, "EC PRIVATE KEY"),
        (
            "SEC1 P-384",
            &[
                "ecparam",
                "-name",
                "secp384r1",
                "-genkey",
                "-noout",
                "-out",
                "node.key",
            ],
            "EC PRIVATE KEY",
        ),
        (
            "PKCS#1 RSA",
            &["genrsa", "-traditional", "-out", "node.key", "2048"],
            "RSA PRIVATE KEY",
        ),
        (
            "PKCS#8 RSA",
            &["genrsa", "-out", "node.key", "2048"],
            "PRIVATE KEY",
        ),
    ];
    for (what, node_key, tag) in cases {
        let dir = tempfile::tempdir().unwrap();
        recipe(dir.path(), node_key, Some(NODE_EXT));
        let key = read(dir.path(), "node.key");
        assert!(key.contains(&format!("BEGIN {tag}")), "{what}: {key}");
        let signer = X509PopSigner::from_pem(&read(dir.path(), "node.pem"), &key)
            .unwrap_or_else(|e| panic!("{what}: {e}"));
        let verifier = X509PopVerifier::new(vec![der(&read(dir.path(), "ca.pem"))]).unwrap();
        let accepted = verifier
            .verify_chain(&signer.chain_der(), SystemTime::now())
            .unwrap_or_else(|e| panic!("{what}: {e}"));
        assert_eq!(accepted.node_id.len(), 64, "{what}");
        let message = challenge_message(&new_nonce().unwrap(), b"agent key");
        let signature = signer.sign(&message).unwrap();
        verify_response(&signer.chain_der()[0], &message, &signature)
            .unwrap_or_else(|e| panic!("{what}: {e}"));
    }
}

#[test]
fn a_node_certificate_without_extensions_is_not_blamed_on_the_key() {
    if !have_openssl() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    recipe(dir.path(), EC_NODE_KEY, None);
    let text = Command::new("openssl")
        .args(["x509", "-noout", "-text", "-in", "node.pem"])
        .current_dir(dir.path())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&text.stdout).into_owned();
    let result =
        X509PopSigner::from_pem(&read(dir.path(), "node.pem"), &read(dir.path(), "node.key"));
    if text.contains("Version: 1 ") {
        let err = result.unwrap_err().to_string();
        assert!(
            err.contains("X.509 v1 certificate") && err.contains("-extfile"),
            "{err}"
        );
    } else if let Err(err) = result {
        // This openssl writes v3 by default; whatever is refused, the key
        // is not blamed for it.
        assert!(!err.to_string().contains("does not match"), "{err}");
    }
    // A key of a kind x509pop does not take (beside a usable v3
    // certificate) says which it takes.
    let v3 = tempfile::tempdir().unwrap();
    recipe(v3.path(), EC_NODE_KEY, Some(NODE_EXT));
    let err = X509PopSigner::from_pem(
        &read(v3.path(), "node.pem"),
        "-----BEGIN DSA PRIVATE KEY-----\nAAAA\n-----END DSA PRIVATE KEY-----\n",
    )
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("EC PRIVATE KEY") && err.contains("RSA PRIVATE KEY"),
        "{err}"
    );
}
