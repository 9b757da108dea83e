#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::{Duration, SystemTime};

use http_body_util::BodyExt;

use hallmark_ca::manager::{CaConfig, CaManager};

use super::*;
use crate::config::{ConfigError, ServerConfig, ServerOverrides, ServerSettings};

fn settings(issuer: &str) -> OidcSettings {
    let issuer = JwtIssuer::new(issuer).unwrap();
    OidcSettings {
        jwks_uri: issuer.url(JWKS_PATH),
        issuer,
        listen: None,
        tls: None,
    }
}

fn bundle() -> (CaManager, SharedBundle) {
    let now = SystemTime::now();
    let mut config = CaConfig::new("example.org".parse().unwrap());
    config.refresh_hint = Duration::from_secs(60);
    let mut ca = CaManager::generate(config, now).unwrap();
    // Past half-life: the next key is published beside the active one.
    ca.rotate(now + Duration::from_secs(13 * 3600)).unwrap();
    let shared = SharedBundle::new(ca.bundle());
    (ca, shared)
}

async fn body(response: Response<Full<Bytes>>) -> (StatusCode, String, String, Value) {
    let status = response.status();
    let header = |name| {
        response
            .headers()
            .get(name)
            .map(|v: &HeaderValue| v.to_str().unwrap().to_owned())
            .unwrap_or_default()
    };
    let (content_type, cache) = (header(CONTENT_TYPE), header(CACHE_CONTROL));
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    let json = serde_json::from_slice(&bytes)
        .unwrap_or(Value::String(String::from_utf8_lossy(&bytes).into_owned()));
    (status, content_type, cache, json)
}

#[test]
fn discovery_document_has_what_relying_parties_read() {
    let s = settings("https://oidc.example.com/td");
    let doc = discovery_document(&s.issuer, &s.jwks_uri);
    assert_eq!(
        doc,
        json!({
            "issuer": "https://oidc.example.com/td",
            "jwks_uri": "https://oidc.example.com/td/keys",
            "response_types_supported": ["id_token"],
            "subject_types_supported": ["public"],
            "id_token_signing_alg_values_supported": ["ES256"],
            "claims_supported": ["sub", "aud", "exp", "iat", "iss", "jti"],
        })
    );
}

#[tokio::test]
async fn serves_both_documents_under_the_issuer_path_and_refuses_the_rest() {
    let (ca, shared) = bundle();
    let documents = Documents::new(&settings("https://oidc.example.com/td"), shared);

    for path in ["/td/.well-known/openid-configuration", DISCOVERY_PATH] {
        let (status, content_type, cache, doc) = body(documents.respond(&Method::GET, path)).await;
        assert_eq!(status, StatusCode::OK, "{path}");
        assert_eq!(content_type, "application/json");
        assert_eq!(cache, "public, max-age=60", "the bundle's refresh hint");
        assert_eq!(doc["issuer"], "https://oidc.example.com/td");
    }
    for path in ["/td/keys", JWKS_PATH] {
        let (status, content_type, _, jwks) = body(documents.respond(&Method::GET, path)).await;
        assert_eq!(status, StatusCode::OK, "{path}");
        assert_eq!(content_type, "application/jwk-set+json");
        let kids: Vec<&str> = jwks["keys"]
            .as_array()
            .unwrap()
            .iter()
            .map(|k| k["kid"].as_str().unwrap())
            .collect();
        assert_eq!(
            kids,
            [ca.active_jwt().kid(), ca.next_jwt().unwrap().kid()],
            "active and next keys"
        );
        assert!(jwks["keys"][0]["use"] == "sig" && jwks["keys"][0]["alg"] == "ES256");
    }
    let (status, _, _, _) = body(documents.respond(&Method::HEAD, JWKS_PATH)).await;
    assert_eq!(status, StatusCode::OK);

    for path in [
        "/",
        "/td",
        "/td/keys/",
        "/other/keys",
        "/metrics",
        "/.well-known",
    ] {
        let (status, content_type, _, text) = body(documents.respond(&Method::GET, path)).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{path}");
        assert_eq!(content_type, "text/plain; charset=utf-8");
        assert!(
            text.as_str()
                .unwrap()
                .contains("/td/.well-known/openid-configuration and /td/keys"),
            "{text}"
        );
    }
    for method in [Method::POST, Method::PUT, Method::DELETE, Method::OPTIONS] {
        let response = documents.respond(&method, JWKS_PATH);
        assert_eq!(response.headers()[ALLOW], "GET, HEAD");
        assert_eq!(
            response.status(),
            StatusCode::METHOD_NOT_ALLOWED,
            "{method}"
        );
    }
}

#[tokio::test]
async fn jwks_follows_the_shared_bundle_and_caps_the_cache() {
    let (mut ca, shared) = bundle();
    let documents = Documents::new(&settings("http://127.0.0.1:8443"), shared.clone());
    let old = ca.active_jwt().kid().to_owned();
    // The next key activates; the old one stays while its tokens may live.
    let later = SystemTime::now() + Duration::from_secs(21 * 3600);
    ca.rotate(later).unwrap();
    let mut rotated = ca.bundle();
    rotated.refresh_hint = Duration::from_secs(3600);
    shared.store(rotated);
    let (_, _, cache, jwks) = body(documents.respond(&Method::GET, JWKS_PATH)).await;
    assert_eq!(cache, "public, max-age=300", "capped at five minutes");
    let kids: Vec<&str> = jwks["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["kid"].as_str().unwrap())
        .collect();
    assert!(kids.contains(&old.as_str()), "{kids:?}");
    assert!(kids.contains(&ca.active_jwt().kid()), "{kids:?}");
}

fn resolve_text(text: &str) -> Result<ServerSettings, ConfigError> {
    ServerSettings::resolve(
        ServerConfig::from_toml_str(&format!("trust_domain = \"example.org\"\n{text}"))?,
        ServerOverrides::default(),
    )
}

fn refused(text: &str) -> (&'static str, String) {
    match resolve_text(text) {
        Err(ConfigError::Invalid { key, reason }) => (key, reason),
        other => panic!("{text}: {other:?}"),
    }
}

#[test]
fn config_is_off_by_default_and_sets_iss_when_configured() {
    let off = resolve_text("").unwrap();
    assert!(off.oidc.is_none());
    assert!(off.ca.jwt_issuer.is_none());

    let on = resolve_text(
        "[oidc]\nissuer = \"https://oidc.example.com\"\nlisten = \"127.0.0.1:8443\"\n",
    )
    .unwrap();
    let oidc = on.oidc.unwrap();
    assert_eq!(oidc.issuer.as_str(), "https://oidc.example.com");
    assert_eq!(oidc.jwks_uri, "https://oidc.example.com/keys");
    assert_eq!(oidc.listen, Some("127.0.0.1:8443".parse().unwrap()));
    assert!(oidc.tls.is_none());
    assert_eq!(on.ca.jwt_issuer, Some(oidc.issuer.clone()));

    // An issuer alone: tokens carry `iss`, the documents are published elsewhere.
    let elsewhere = resolve_text(
        "[oidc]\nissuer = \"https://bucket.s3.amazonaws.com/td\"\njwks_uri = \"https://bucket.s3.amazonaws.com/td/jwks.json\"\n",
    )
    .unwrap();
    let oidc = elsewhere.oidc.unwrap();
    assert_eq!(oidc.listen, None);
    assert_eq!(
        oidc.jwks_uri,
        "https://bucket.s3.amazonaws.com/td/jwks.json"
    );
    assert_eq!(
        elsewhere.ca.jwt_issuer.unwrap().as_str(),
        "https://bucket.s3.amazonaws.com/td"
    );
}

#[test]
fn bad_oidc_config_is_refused_with_the_key_and_what_to_write() {
    let cases: &[(&str, &str, &str)] = &[
        (
            "[oidc]\nlisten = \"127.0.0.1:8443\"\n",
            "oidc.issuer",
            "missing",
        ),
        (
            "[oidc]\nissuer = \"http://oidc.example.com\"\n",
            "oidc.issuer",
            "https://",
        ),
        (
            "[oidc]\nissuer = \"https://oidc.example.com/\"\n",
            "oidc.issuer",
            "trailing slash",
        ),
        (
            "[oidc]\nissuer = \"https://oidc.example.com?td=1\"\n",
            "oidc.issuer",
            "no query",
        ),
        (
            "[oidc]\nissuer = \"https://oidc.example.com\"\nlisten = \"localhost:8443\"\n",
            "oidc.listen",
            "IP:port",
        ),
        (
            "[oidc]\nissuer = \"https://oidc.example.com\"\njwks_uri = \"https://cdn.example.com/keys/\"\n",
            "oidc.jwks_uri",
            "the JWKS URL",
        ),
        (
            "[oidc]\nissuer = \"https://oidc.example.com\"\nlisten = \"127.0.0.1:8443\"\ncert = \"/etc/hallmark/oidc.pem\"\n",
            "oidc.key",
            "oidc.cert needs oidc.key",
        ),
        (
            "[oidc]\nissuer = \"https://oidc.example.com\"\nlisten = \"127.0.0.1:8443\"\nkey = \"/etc/hallmark/oidc.key\"\n",
            "oidc.cert",
            "oidc.key needs oidc.cert",
        ),
        (
            "[oidc]\nissuer = \"https://oidc.example.com\"\ncert = \"/a.pem\"\nkey = \"/a.key\"\n",
            "oidc.cert",
            "set oidc.listen",
        ),
        (
            "[oidc]\nissuer = \"https://oidc.example.com\"\nlisten = \"127.0.0.1:8443\"\ncert = \"/nonexistent/oidc.pem\"\nkey = \"/nonexistent/oidc.key\"\n",
            "oidc.cert",
            "/nonexistent/oidc.pem",
        ),
    ];
    for (text, key, words) in cases {
        let (found, reason) = refused(text);
        assert_eq!(found, *key, "{text}: {reason}");
        assert!(reason.contains(words), "{text}: {reason}");
    }
    let err = resolve_text("[oidc]\nissuer = \"https://x.org\"\nport = 1\n").unwrap_err();
    assert!(err.to_string().contains("port"), "{err}");
}

#[test]
fn tls_files_are_loaded_and_a_mismatched_or_garbled_key_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let cert = rcgen::generate_simple_self_signed(vec!["oidc.example.com".into()]).unwrap();
    let other = rcgen::KeyPair::generate().unwrap();
    let write = |name: &str, text: &str| {
        let path = dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        path.display().to_string()
    };
    let cert_path = write("cert.pem", &cert.cert.pem());
    let key_path = write("key.pem", &cert.signing_key.serialize_pem());
    let other_path = write("other.pem", &other.serialize_pem());
    let garbled = write("garbled.pem", "-----BEGIN PRIVATE KEY-----\nnot base64!\n");
    let empty = write("empty.pem", "no pem here\n");
    let section = |c: &str, k: &str| {
        format!(
            "[oidc]\nissuer = \"https://oidc.example.com\"\nlisten = \"127.0.0.1:0\"\ncert = {c:?}\nkey = {k:?}\n"
        )
    };

    let ok = resolve_text(&section(&cert_path, &key_path)).unwrap();
    let tls = ok.oidc.unwrap().tls.unwrap();
    assert_eq!(tls.config.alpn_protocols, [b"http/1.1".to_vec()]);

    let (key, reason) = refused(&section(&cert_path, &other_path));
    assert_eq!(key, "oidc.key", "{reason}");
    assert!(
        reason.contains("not a usable certificate and key"),
        "{reason}"
    );
    let (key, reason) = refused(&section(&cert_path, &garbled));
    assert_eq!(key, "oidc.key", "{reason}");
    assert!(reason.contains("garbled.pem"), "{reason}");
    let (key, reason) = refused(&section(&empty, &key_path));
    assert_eq!(key, "oidc.cert", "{reason}");
    assert!(reason.contains("no CERTIFICATE"), "{reason}");
}
