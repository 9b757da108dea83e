//! JWT-SVIDs for relying parties outside SPIFFE: PyJWT, unmodified, finds
//! the issuer's keys the OpenID Connect way (discovery document, then
//! `jwt.PyJWKClient` on its `jwks_uri`) and validates a JWT-SVID minted by
//! the running issuer over the node API, with `iss`, `aud` and the
//! signature checked; then refuses the token altered, for another audience
//! or issuer, and forged under the same `kid`.
//!
//! The venv (PyJWT and cryptography, pinned in tests/interop/requirements.txt)
//! comes from tests/interop/setup-venv.sh; the test skips, loudly, only if
//! that script cannot build it, as the py-spiffe test does.

use std::net::{SocketAddr, TcpListener};
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use serde_json::{Value, json};

use hallmark_ca::jwt::JwtIssuer;
use hallmark_proto::node::MintJwtSvidRequest;
use hallmark_server::issuance::matcher::Matcher;
use hallmark_server::oidc::OidcSettings;

use crate::common::*;
use crate::mint::{agent, evidence, invoice_image};
use crate::py_spiffe::venv_python;

const SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/interop/pyjwt_check.py");
const AUDIENCE: &str = "sts.amazonaws.com";

#[tokio::test]
async fn pyjwt_validates_jwt_svids_through_discovery_and_refuses_altered_ones() {
    let Some(python) = venv_python("the PyJWT OpenID Connect interop test").await else {
        return;
    };
    // The issuer URL names the port, so it is chosen before the issuer
    // starts: a free loopback port, released just before the issuer binds it.
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let issuer = format!("http://127.0.0.1:{port}");
    let oidc = {
        let issuer = JwtIssuer::new(&issuer).unwrap();
        OidcSettings {
            jwks_uri: issuer.url("/keys"),
            issuer,
            listen: Some(SocketAddr::from(([127, 0, 0, 1], port))),
            tls: None,
        }
    };
    let server = TestServer::start_with(|s| s.oidc = Some(oidc)).await;
    assert_eq!(
        server.handle().oidc_addr(),
        Some(SocketAddr::from(([127, 0, 0, 1], port)))
    );
    server
        .handle()
        .images()
        .replace(Matcher::new([invoice_image("")]));
    let mut node = agent(&server).await;
    let minted = node
        .mint_jwt_svid(MintJwtSvidRequest {
            evidence: Some(evidence()),
            audience: vec![AUDIENCE.into()],
            spiffe_id: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    let token = minted.svids[0].token.clone();
    let kid = jsonwebtoken::decode_header(&token).unwrap().kid.unwrap();

    let events = run(&python, &[&issuer, &token, AUDIENCE]).await;
    let [discovery, valid, refused] = events.as_slice() else {
        panic!("expected three events, got {events:?}");
    };
    assert_eq!(discovery["event"], "discovery");
    assert_eq!(discovery["issuer"], issuer.as_str());
    assert_eq!(discovery["jwks_uri"], format!("{issuer}/keys"));
    assert_eq!(discovery["algorithms"], json!(["ES256"]));
    assert_eq!(discovery["discovery_type"], "application/json");
    assert_eq!(discovery["jwks_type"], "application/jwk-set+json");
    let served: Vec<String> = server
        .bundle()
        .jwt_authorities
        .iter()
        .map(|a| a.key_id.clone())
        .collect();
    assert_eq!(discovery["kids"], json!(served));

    assert_eq!(valid["event"], "valid");
    assert_eq!(valid["kid"], kid.as_str());
    assert_eq!(valid["alg"], "ES256");
    assert_eq!(valid["sub"], "spiffe://example.org/invoice-agent");
    assert_eq!(valid["iss"], issuer.as_str());
    assert_eq!(valid["aud"], json!([AUDIENCE]));

    assert_eq!(refused["event"], "refused");
    assert_eq!(refused["altered_signature"], "InvalidSignatureError");
    assert_eq!(refused["wrong_audience"], "InvalidAudienceError");
    assert_eq!(refused["wrong_issuer"], "InvalidIssuerError");
    assert_eq!(refused["forged"], "InvalidSignatureError");
}

/// Runs the script with `args`; its JSON lines, once it exited successfully.
async fn run(python: &Path, args: &[&str]) -> Vec<Value> {
    let child = tokio::process::Command::new(python)
        .arg(SCRIPT)
        .args(args)
        .env_clear()
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let output = tokio::time::timeout(Duration::from_secs(60), child.wait_with_output())
        .await
        .expect("pyjwt_check.py did not finish in 60 s")
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "pyjwt_check.py exited with {}:\nstdout:\n{stdout}\nstderr:\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    stdout
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect()
}
