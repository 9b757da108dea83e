//! The OpenID Connect endpoint of a running issuer, over loopback: the
//! discovery document and the JWKS as a relying party fetches them (plain
//! HTTP and HTTPS), `iss` in JWT-SVIDs minted over the node API, key
//! rotation seen through the JWKS, and `config check` on bad `[oidc]`
//! sections.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod audit_support;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::Value;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

use audit_support::{attest, cli, evidence, node_client, stderr, stdout};
use hallmark_ca::clock::{Clock, ManualClock};
use hallmark_ca::jwt::JwtIssuer;
use hallmark_proto::admin::GenerateJoinTokenRequest;
use hallmark_proto::admin::admin_client::AdminClient;
use hallmark_proto::node::MintJwtSvidRequest;
use hallmark_server::config::ServerSettings;
use hallmark_server::image::GoldImage;
use hallmark_server::issuance::matcher::{Candidate, Matcher};
use hallmark_server::oidc::{OidcSettings, OidcTls};
use hallmark_server::server::{ServerHandle, start_with_clock};

const CODE: &str = "1111111111111111111111111111111111111111111111111111111111111111";
const ISSUER: &str = "https://oidc.example.com/prod";

struct Running {
    _dir: tempfile::TempDir,
    clock: ManualClock,
    handle: ServerHandle,
}

/// An issuer on loopback with `oidc`, one image for [`CODE`], on a manual
/// clock that starts at the real time (so a JWT library checking `exp`
/// against the real clock accepts fresh tokens).
async fn start(oidc: Option<OidcSettings>) -> Running {
    let dir = tempfile::tempdir().unwrap();
    let mut settings = ServerSettings::for_dirs(
        "example.org".parse().unwrap(),
        dir.path().join("data"),
        dir.path().join("admin.sock"),
    );
    settings.oidc = oidc;
    let clock = ManualClock::new(SystemTime::now());
    let handle = start_with_clock(settings, Arc::new(clock.clone()))
        .await
        .unwrap();
    let image = GoldImage::from_toml(&format!(
        "name = \"billing\"\nversion = \"1.0.0\"\nspiffe_id = \"spiffe://example.org/billing\"\nowner = \"alice@example.org\"\npurpose = \"tests\"\nrisk_tier = \"low\"\nnot_after = 2099-12-31\n[code]\nsha256 = [\"{CODE}\"]\n"
    ))
    .unwrap();
    handle.images().replace(Matcher::new([Candidate {
        image,
        signers: vec![],
        retired: false,
    }]));
    Running {
        _dir: dir,
        clock,
        handle,
    }
}

fn oidc(issuer: &str, tls: Option<OidcTls>) -> OidcSettings {
    let issuer = JwtIssuer::new(issuer).unwrap();
    OidcSettings {
        jwks_uri: issuer.url("/keys"),
        issuer,
        listen: Some(SocketAddr::from(([127, 0, 0, 1], 0))),
        tls,
    }
}

/// A JWT-SVID for audience `sts.amazonaws.com`, minted over the node API
/// by a freshly attested agent.
async fn mint(running: &Running) -> String {
    let handle = &running.handle;
    let channel = hallmark_server::admin::socket::connect(handle.admin_socket())
        .await
        .unwrap();
    let token = AdminClient::new(channel)
        .generate_join_token(GenerateJoinTokenRequest {
            ttl_seconds: 0,
            spiffe_id: String::new(),
        })
        .await
        .unwrap()
        .into_inner()
        .token;
    let clock: Arc<dyn Clock> = Arc::new(running.clock.clone());
    let bundle = handle.authority().bundle();
    let mut anonymous = node_client(handle.node_addr(), bundle.clone(), clock.clone(), None).await;
    let (key, result) = attest(&mut anonymous, &token).await.unwrap();
    let svid = result.svid.unwrap();
    let mut node = node_client(
        handle.node_addr(),
        bundle,
        clock,
        Some((&svid.cert_chain, &key.pkcs8_der())),
    )
    .await;
    let response = node
        .mint_jwt_svid(MintJwtSvidRequest {
            evidence: Some(evidence(CODE)),
            audience: vec!["sts.amazonaws.com".into()],
            spiffe_id: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    response.svids[0].token.clone()
}

fn claims(token: &str) -> Value {
    let body = token.split('.').nth(1).unwrap();
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(body).unwrap()).unwrap()
}

/// One HTTP/1.1 request over `stream`: status, headers (lowercase names), body.
async fn request<S: AsyncRead + AsyncWrite + Unpin>(
    mut stream: S,
    method: &str,
    path: &str,
) -> (u16, Vec<(String, String)>, String) {
    stream
        .write_all(
            format!(
                "{method} {path} HTTP/1.1\r\nHost: oidc.example.com\r\nConnection: close\r\n\r\n"
            )
            .as_bytes(),
        )
        .await
        .unwrap();
    let mut raw = Vec::new();
    // A TLS peer may close without close_notify after the response: what
    // was read is what counts.
    let _ = stream.read_to_end(&mut raw).await;
    let raw = String::from_utf8(raw).unwrap();
    let (head, body) = raw.split_once("\r\n\r\n").unwrap();
    let mut lines = head.lines();
    let status = lines.next().unwrap()[9..12].parse().unwrap();
    let headers = lines
        .map(|l| {
            let (k, v) = l.split_once(':').unwrap();
            (k.trim().to_ascii_lowercase(), v.trim().to_owned())
        })
        .collect();
    (status, headers, body.to_owned())
}

async fn get(addr: SocketAddr, method: &str, path: &str) -> (u16, Vec<(String, String)>, String) {
    request(TcpStream::connect(addr).await.unwrap(), method, path).await
}

fn header<'a>(headers: &'a [(String, String)], name: &str) -> &'a str {
    headers
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
        .unwrap_or_else(|| panic!("no {name} in {headers:?}"))
}

fn kids(jwks: &Value) -> Vec<String> {
    jwks["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["kid"].as_str().unwrap().to_owned())
        .collect()
}

/// Validates `token` with jsonwebtoken (code we did not write), with the
/// key the served JWKS holds for its `kid`, requiring `issuer`.
fn validate(token: &str, jwks: &Value, issuer: &str) -> Result<Value, jsonwebtoken::errors::Error> {
    let kid = jsonwebtoken::decode_header(token).unwrap().kid.unwrap();
    let set: jsonwebtoken::jwk::JwkSet = serde_json::from_value(jwks.clone()).unwrap();
    let jwk = set.find(&kid).expect("the token's kid is served");
    let key = jsonwebtoken::DecodingKey::from_jwk(jwk).unwrap();
    let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::ES256);
    validation.set_audience(&["sts.amazonaws.com"]);
    validation.set_issuer(&[issuer]);
    validation.set_required_spec_claims(&["exp", "sub", "aud", "iss"]);
    jsonwebtoken::decode::<Value>(token, &key, &validation).map(|d| d.claims)
}

#[tokio::test]
async fn discovery_and_jwks_are_served_and_validate_tokens_that_carry_iss() {
    let running = start(Some(oidc(ISSUER, None))).await;
    let addr = running.handle.oidc_addr().expect("the endpoint is up");

    let (status, headers, body) = get(addr, "GET", "/prod/.well-known/openid-configuration").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(header(&headers, "content-type"), "application/json");
    assert_eq!(header(&headers, "cache-control"), "public, max-age=300");
    let discovery: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(discovery["issuer"], ISSUER);
    assert_eq!(discovery["jwks_uri"], format!("{ISSUER}/keys"));
    assert_eq!(
        discovery["response_types_supported"],
        serde_json::json!(["id_token"])
    );
    assert_eq!(
        discovery["subject_types_supported"],
        serde_json::json!(["public"])
    );
    assert_eq!(
        discovery["id_token_signing_alg_values_supported"],
        serde_json::json!(["ES256"])
    );

    let (status, headers, body) = get(addr, "GET", "/prod/keys").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(header(&headers, "content-type"), "application/jwk-set+json");
    let jwks: Value = serde_json::from_str(&body).unwrap();
    let bundle = running.handle.authority().bundle();
    let expected: Vec<String> = bundle
        .jwt_authorities
        .iter()
        .map(|a| a.key_id.clone())
        .collect();
    assert_eq!(kids(&jwks), expected);
    // A proxy that strips the issuer's path reaches the same documents.
    assert_eq!(get(addr, "GET", "/keys").await.2, body);

    assert_eq!(get(addr, "GET", "/").await.0, 404);
    assert_eq!(get(addr, "GET", "/prod/jwks.json").await.0, 404);
    let (status, headers, _) = get(addr, "POST", "/prod/keys").await;
    assert_eq!(status, 405);
    assert_eq!(header(&headers, "allow"), "GET, HEAD");
    let (status, _, body) = get(addr, "HEAD", "/prod/keys").await;
    assert_eq!((status, body.as_str()), (200, ""));

    // The token carries the issuer exactly, and validates with the served keys.
    let token = mint(&running).await;
    assert_eq!(claims(&token)["iss"], ISSUER);
    let validated = validate(&token, &jwks, ISSUER).unwrap();
    assert_eq!(validated["sub"], "spiffe://example.org/billing");
    assert!(validate(&token, &jwks, &format!("{ISSUER}/")).is_err());
    // Hallmark's own validator accepts it too.
    hallmark_ca::jwt::validate_jwt_svid(&token, "sts.amazonaws.com", &bundle, running.clock.now())
        .unwrap();
    running.handle.shutdown().await;
    assert!(
        TcpStream::connect(addr).await.is_err(),
        "closed at shutdown"
    );
}

#[tokio::test]
async fn tokens_signed_before_a_rotation_still_validate_with_the_served_keys() {
    let running = start(Some(oidc(ISSUER, None))).await;
    let addr = running.handle.oidc_addr().unwrap();
    let before = mint(&running).await;
    let old_kid = jsonwebtoken::decode_header(&before).unwrap().kid.unwrap();
    let served = || async {
        serde_json::from_str::<Value>(&get(addr, "GET", "/prod/keys").await.2).unwrap()
    };
    assert_eq!(kids(&served().await), [old_kid.as_str()]);

    // Past half of the key's life the next key is published before it signs...
    running.clock.advance(Duration::from_secs(13 * 3600));
    running.handle.run_maintenance();
    let jwks = served().await;
    assert_eq!(kids(&jwks).len(), 2, "{jwks}");
    assert_eq!(kids(&jwks)[0], old_kid);
    // ...then it signs, and the old key is still served for live tokens.
    running.clock.advance(Duration::from_secs(8 * 3600));
    running.handle.run_maintenance();
    let active = running.handle.authority().bundle();
    let jwks = served().await;
    assert!(kids(&jwks).contains(&old_kid), "{jwks}");
    assert_eq!(
        kids(&jwks),
        active
            .jwt_authorities
            .iter()
            .map(|a| a.key_id.clone())
            .collect::<Vec<_>>()
    );
    validate(&before, &jwks, ISSUER).unwrap();
    running.handle.shutdown().await;
}

#[tokio::test]
async fn without_oidc_nothing_is_served_and_tokens_have_no_iss() {
    let running = start(None).await;
    assert_eq!(running.handle.oidc_addr(), None);
    let token = mint(&running).await;
    let claims = claims(&token);
    assert!(claims.get("iss").is_none(), "{claims}");
    assert_eq!(claims["sub"], "spiffe://example.org/billing");
    running.handle.shutdown().await;
}

#[tokio::test]
async fn an_issuer_without_listen_sets_iss_and_serves_nothing() {
    let mut settings = oidc(ISSUER, None);
    settings.listen = None;
    let running = start(Some(settings)).await;
    assert_eq!(running.handle.oidc_addr(), None);
    assert_eq!(claims(&mint(&running).await)["iss"], ISSUER);
    running.handle.shutdown().await;
}

#[tokio::test]
async fn https_serves_the_configured_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let cert = rcgen::generate_simple_self_signed(vec!["oidc.example.com".into()]).unwrap();
    let cert_path = dir.path().join("oidc.pem");
    let key_path = dir.path().join("oidc.key");
    std::fs::write(&cert_path, cert.cert.pem()).unwrap();
    std::fs::write(&key_path, cert.signing_key.serialize_pem()).unwrap();
    // Through the config, as `run` reads it.
    let file = hallmark_server::config::ServerConfig::from_toml_str(&format!(
        "trust_domain = \"example.org\"\n[oidc]\nissuer = \"https://oidc.example.com\"\nlisten = \"127.0.0.1:0\"\ncert = {:?}\nkey = {:?}\n",
        cert_path.display().to_string(),
        key_path.display().to_string()
    ))
    .unwrap();
    let settings = ServerSettings::resolve(file, Default::default()).unwrap();
    let running = start(settings.oidc).await;
    let addr = running.handle.oidc_addr().unwrap();

    let mut roots = rustls::RootCertStore::empty();
    roots.add(cert.cert.der().clone()).unwrap();
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let name = rustls_pki_types::ServerName::try_from("oidc.example.com").unwrap();
    let tls = connector
        .connect(name, TcpStream::connect(addr).await.unwrap())
        .await
        .unwrap();
    let (status, _, body) = request(tls, "GET", "/.well-known/openid-configuration").await;
    assert_eq!(status, 200, "{body}");
    let discovery: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(discovery["jwks_uri"], "https://oidc.example.com/keys");

    // Plain HTTP on the TLS port gets no document.
    let mut tcp = TcpStream::connect(addr).await.unwrap();
    tcp.write_all(b"GET /keys HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut raw = Vec::new();
    let _ = tcp.read_to_end(&mut raw).await;
    assert!(!String::from_utf8_lossy(&raw).contains("\"keys\""));
    running.handle.shutdown().await;
}

#[test]
fn config_check_refuses_bad_oidc_sections_and_names_a_good_one() {
    let dir = tempfile::tempdir().unwrap();
    let check = |name: &str, oidc: &str| {
        let path = dir.path().join(name);
        std::fs::write(
            &path,
            format!(
                "trust_domain = \"example.org\"\ndata_dir = \"/nonexistent/data\"\n[oidc]\n{oidc}"
            ),
        )
        .unwrap();
        cli(&["config", "check", path.to_str().unwrap()])
    };
    let out = check(
        "good.toml",
        "issuer = \"https://oidc.example.com\"\nlisten = \"127.0.0.1:8443\"\n",
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stdout(&out)
            .contains("OIDC issuer https://oidc.example.com served on 127.0.0.1:8443 over http"),
        "{}",
        stdout(&out)
    );
    for (name, oidc, expected) in [
        (
            "slash.toml",
            "issuer = \"https://oidc.example.com/\"\n",
            "oidc.issuer",
        ),
        (
            "http.toml",
            "issuer = \"http://oidc.example.com\"\n",
            "must start with \"https://\"",
        ),
        (
            "query.toml",
            "issuer = \"https://oidc.example.com/?a=b\"\n",
            "no query",
        ),
        (
            "nokey.toml",
            "issuer = \"https://oidc.example.com\"\nlisten = \"127.0.0.1:8443\"\ncert = \"/etc/oidc.pem\"\n",
            "oidc.cert needs oidc.key",
        ),
    ] {
        let out = check(name, oidc);
        assert_eq!(out.status.code(), Some(1), "{name}: {}", stderr(&out));
        assert!(stderr(&out).contains(expected), "{name}: {}", stderr(&out));
    }
}
