//! Bundles: SPIFFE JWKS and PEM round trips, exact JWK members, sequence.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "test code: a failure is a test failure"
)]

mod common;

use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use common::{operator_intermediate, t0, td};
use hallmark_ca::bundle::{Bundle, BundleError, JwtAuthority, SharedBundle};
use hallmark_ca::manager::{CaConfig, CaManager};
use rcgen::PublicKeyData;
use serde_json::{Value, json};

fn manager_bundle() -> (CaManager, Bundle) {
    let mut config = CaConfig::new(td());
    config.refresh_hint = Duration::from_secs(120);
    let mut manager = CaManager::generate(config, t0()).unwrap();
    // Past half-life: a next CA and JWT key are published too.
    manager
        .rotate(t0() + Duration::from_secs(13 * 3600))
        .unwrap();
    let bundle = manager.bundle();
    (manager, bundle)
}

fn without_expiry(mut bundle: Bundle) -> Bundle {
    for a in &mut bundle.jwt_authorities {
        a.expires_at = None;
    }
    bundle
}

#[test]
fn jwks_has_the_spiffe_members_and_round_trips() {
    let (manager, bundle) = manager_bundle();
    assert_eq!(bundle.x509_authorities.len(), 2);
    assert_eq!(bundle.jwt_authorities.len(), 2);
    let doc: Value = serde_json::from_str(&bundle.to_jwks()).unwrap();
    assert_eq!(doc["spiffe_sequence"], bundle.sequence);
    assert_eq!(doc["spiffe_refresh_hint"], 120);
    let keys = doc["keys"].as_array().unwrap();
    assert_eq!(keys.len(), 4);

    let x509 = &keys[0];
    assert_eq!(x509["use"], "x509-svid");
    assert_eq!(x509["kty"], "EC");
    assert_eq!(x509["crv"], "P-256");
    let x5c = x509["x5c"].as_array().unwrap();
    assert_eq!(x5c.len(), 1);
    assert_eq!(
        STANDARD.decode(x5c[0].as_str().unwrap()).unwrap(),
        bundle.x509_authorities[0]
    );
    // x and y are the CA key's coordinates.
    let point = manager.active_x509().key().public_key_point().to_vec();
    assert_eq!(
        URL_SAFE_NO_PAD.decode(x509["x"].as_str().unwrap()).unwrap(),
        point[1..33]
    );
    assert_eq!(
        URL_SAFE_NO_PAD.decode(x509["y"].as_str().unwrap()).unwrap(),
        point[33..]
    );
    assert!(x509.get("kid").is_none());

    let jwt = &keys[2];
    assert_eq!(jwt["use"], "jwt-svid");
    assert_eq!(jwt["kty"], "EC");
    assert_eq!(jwt["crv"], "P-256");
    assert_eq!(jwt["kid"], manager.active_jwt().kid());
    assert!(jwt.get("x5c").is_none());

    let parsed = Bundle::from_jwks(td(), bundle.to_jwks().as_bytes()).unwrap();
    assert_eq!(parsed, without_expiry(bundle.clone()));

    let jwt_only: Value = serde_json::from_str(&bundle.jwt_jwks()).unwrap();
    let jwt_keys = jwt_only["keys"].as_array().unwrap();
    assert_eq!(jwt_keys.len(), 2);
    assert!(jwt_keys.iter().all(|k| k["use"] == "jwt-svid"));
}

#[test]
fn pem_and_der_forms() {
    let (_, bundle) = manager_bundle();
    let pem = bundle.to_pem();
    assert_eq!(pem.matches("-----BEGIN CERTIFICATE-----").count(), 2);
    let parsed = Bundle::from_pem(td(), &pem).unwrap();
    assert_eq!(parsed.x509_authorities, bundle.x509_authorities);
    assert!(parsed.jwt_authorities.is_empty());
    assert_eq!(bundle.x509_der_concat(), bundle.x509_authorities.concat());
    assert!(matches!(
        Bundle::from_pem(td(), ""),
        Err(BundleError::EmptyPem)
    ));
}

#[test]
fn other_key_types_round_trip() {
    // An Ed25519 X.509 authority (an operator intermediate) and a P-384 JWT key.
    let op = operator_intermediate(t0() + Duration::from_secs(86_400));
    let pem_certs = pem::parse_many(&op.cert_pem).unwrap();
    let ed_cert = pem_certs[0].contents().to_vec();
    let p384 = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P384_SHA384).unwrap();
    let mut bundle = Bundle::new(td());
    bundle.x509_authorities = vec![ed_cert.clone()];
    bundle.jwt_authorities = vec![JwtAuthority {
        key_id: "p384".into(),
        public_key_der: p384.subject_public_key_info(),
        expires_at: None,
    }];
    bundle.sequence = 7;
    let doc: Value = serde_json::from_str(&bundle.to_jwks()).unwrap();
    assert_eq!(doc["keys"][0]["kty"], "OKP");
    assert_eq!(doc["keys"][0]["crv"], "Ed25519");
    assert_eq!(doc["keys"][1]["crv"], "P-384");
    let parsed = Bundle::from_jwks(td(), bundle.to_jwks().as_bytes()).unwrap();
    assert_eq!(parsed, bundle);
}

#[test]
fn from_jwks_follows_the_standard() {
    // Unknown `use` is ignored; defaults apply.
    let doc = json!({"keys": [{"use": "something-else", "kty": "EC"}]});
    let parsed = Bundle::from_jwks(td(), doc.to_string().as_bytes()).unwrap();
    assert!(parsed.x509_authorities.is_empty() && parsed.jwt_authorities.is_empty());
    assert_eq!(parsed.sequence, 0);
    // x509-svid with two certificates in x5c is refused.
    let (_, bundle) = manager_bundle();
    let b64 = STANDARD.encode(&bundle.x509_authorities[0]);
    let two = json!({"keys": [{"use": "x509-svid", "kty": "EC", "x5c": [b64, b64]}]});
    assert!(matches!(
        Bundle::from_jwks(td(), two.to_string().as_bytes()),
        Err(BundleError::BadX5c)
    ));
    // jwt-svid without kid is refused.
    let mut jwk: Value =
        serde_json::from_str::<Value>(&bundle.jwt_jwks()).unwrap()["keys"][0].clone();
    jwk.as_object_mut().unwrap().remove("kid");
    let no_kid = json!({"keys": [jwk]});
    assert!(matches!(
        Bundle::from_jwks(td(), no_kid.to_string().as_bytes()),
        Err(BundleError::MissingKeyId)
    ));
    assert!(matches!(
        Bundle::from_jwks(td(), b"{}"),
        Err(BundleError::MissingKeys)
    ));
    assert!(matches!(
        Bundle::from_jwks(td(), b"nope"),
        Err(BundleError::Json(_))
    ));
}

#[test]
fn shared_bundle_swaps_for_every_clone() {
    let shared = SharedBundle::new(Bundle::new(td()));
    let reader = shared.clone();
    assert_eq!(reader.load().sequence, 0);
    let mut next = Bundle::new(td());
    next.sequence = 5;
    shared.store(next);
    assert_eq!(reader.load().sequence, 5);
}

#[test]
fn oidc_jwks_holds_every_jwt_key_for_generic_jwt_libraries() {
    // Active and next JWT keys (past half-life), then the next activated:
    // the old key stays published while tokens it signed may live.
    let (mut manager, bundle) = manager_bundle();
    let doc: Value = serde_json::from_str(&bundle.oidc_jwks()).unwrap();
    assert_eq!(doc.as_object().unwrap().len(), 1, "only `keys`: {doc}");
    let keys = doc["keys"].as_array().unwrap();
    assert_eq!(keys.len(), 2);
    let kids: Vec<&str> = keys.iter().map(|k| k["kid"].as_str().unwrap()).collect();
    let expected: Vec<&str> = bundle
        .jwt_authorities
        .iter()
        .map(|a| a.key_id.as_str())
        .collect();
    assert_eq!(kids, expected);
    for key in keys {
        assert_eq!(key["use"], "sig");
        assert_eq!(key["alg"], "ES256");
        assert_eq!(key["kty"], "EC");
        assert_eq!(key["crv"], "P-256");
        assert!(key.get("x5c").is_none());
    }
    // The members describe the same key as the SPIFFE form.
    let spiffe: Value = serde_json::from_str(&bundle.jwt_jwks()).unwrap();
    for (oidc, spiffe) in keys.iter().zip(spiffe["keys"].as_array().unwrap()) {
        assert_eq!(oidc["x"], spiffe["x"]);
        assert_eq!(oidc["y"], spiffe["y"]);
    }

    let old = manager.active_jwt().kid().to_owned();
    manager
        .rotate(t0() + Duration::from_secs(21 * 3600))
        .unwrap();
    assert_ne!(
        manager.active_jwt().kid(),
        old,
        "the next key was activated"
    );
    let doc: Value = serde_json::from_str(&manager.bundle().oidc_jwks()).unwrap();
    assert!(
        doc["keys"]
            .as_array()
            .unwrap()
            .iter()
            .any(|k| k["kid"] == old),
        "the retired key is still published: {doc}"
    );

    // Other key types get their own `alg`; an unreadable key is left out.
    let p384 = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P384_SHA384).unwrap();
    let ed = rcgen::KeyPair::generate_for(&rcgen::PKCS_ED25519).unwrap();
    let mut other = Bundle::new(td());
    for (kid, der) in [
        ("p384", p384.subject_public_key_info()),
        ("ed", ed.subject_public_key_info()),
        ("junk", b"not a key".to_vec()),
    ] {
        other.jwt_authorities.push(JwtAuthority {
            key_id: kid.into(),
            public_key_der: der,
            expires_at: None,
        });
    }
    let doc: Value = serde_json::from_str(&other.oidc_jwks()).unwrap();
    let keys = doc["keys"].as_array().unwrap();
    assert_eq!(keys.len(), 2, "{doc}");
    assert_eq!(
        (&keys[0]["kid"], &keys[0]["alg"]),
        (&json!("p384"), &json!("ES384"))
    );
    assert_eq!(
        (&keys[1]["kid"], &keys[1]["alg"]),
        (&json!("ed"), &json!("EdDSA"))
    );
}
