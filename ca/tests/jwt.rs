//! JWT-SVIDs: minted tokens validate with jsonwebtoken; `validate_jwt_svid`
//! rejects crafted bad tokens with the precise error.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "test code: a failure is a test failure"
)]

mod common;

use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use common::{id, t0, td};
use hallmark_ca::CaError;
use hallmark_ca::bundle::{Bundle, JwtAuthority};
use hallmark_ca::jwt::{
    AudienceError, JwtError, JwtKey, JwtSvidClaims, kid_for, validate_jwt_svid,
};
use hallmark_ca::key::CaKey;
use serde_json::{Value, json};

fn claims(audience: &[&str], ttl: u64) -> JwtSvidClaims {
    let mut extra = serde_json::Map::new();
    extra.insert(
        "hallmark".into(),
        json!({"image": "summarizer@1.0.0", "risk_tier": "high"}),
    );
    extra.insert("scope".into(), json!("read:mail send:mail"));
    JwtSvidClaims {
        spiffe_id: id("/agents/summarizer"),
        audience: audience.iter().map(|s| s.to_string()).collect(),
        ttl: Duration::from_secs(ttl),
        extra,
    }
}

fn bundle_with(keys: &[&JwtKey]) -> Bundle {
    let mut bundle = Bundle::new(td());
    bundle.jwt_authorities = keys
        .iter()
        .map(|k| JwtAuthority {
            key_id: k.kid().to_owned(),
            public_key_der: k.public_key_der(),
            expires_at: Some(k.not_after()),
        })
        .collect();
    bundle
}

/// Signs arbitrary header and claims with `key` (ES256), to craft tokens.
fn craft(key: &CaKey, header: &Value, claims: &Value) -> String {
    let input = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(header.to_string()),
        URL_SAFE_NO_PAD.encode(claims.to_string())
    );
    let sig = key.sign_jws(input.as_bytes()).unwrap();
    format!("{input}.{}", URL_SAFE_NO_PAD.encode(sig))
}

fn unix(t: std::time::SystemTime) -> u64 {
    t.duration_since(std::time::UNIX_EPOCH).unwrap().as_secs()
}

#[test]
fn minted_token_validates_with_jsonwebtoken() {
    let now = std::time::SystemTime::now();
    let key = JwtKey::generate(now, Duration::from_secs(3600)).unwrap();
    assert_eq!(key.kid(), kid_for(&key.public_key_der()));
    let svid = key.mint(&claims(&["mail-api", "audit"], 300), now).unwrap();
    assert_eq!(svid.jti.len(), 32);
    assert!(
        !format!("{svid:?}").contains(&svid.token),
        "debug redacts the token"
    );

    let header = jsonwebtoken::decode_header(&svid.token).unwrap();
    assert_eq!(header.alg, jsonwebtoken::Algorithm::ES256);
    assert_eq!(header.kid.as_deref(), Some(key.kid()));
    assert_eq!(header.typ.as_deref(), Some("JWT"));

    // The decoding key comes from the bundle's JWKS, as a relying party would get it.
    let jwks: Value = serde_json::from_str(&bundle_with(&[&key]).jwt_jwks()).unwrap();
    let jwk = &jwks["keys"][0];
    assert_eq!(jwk["kid"], key.kid());
    assert_eq!(jwk["use"], "jwt-svid");
    let decoding = jsonwebtoken::DecodingKey::from_ec_components(
        jwk["x"].as_str().unwrap(),
        jwk["y"].as_str().unwrap(),
    )
    .unwrap();
    let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::ES256);
    validation.set_audience(&["audit"]);
    validation.set_required_spec_claims(&["exp", "sub", "aud"]);
    let data = jsonwebtoken::decode::<Value>(&svid.token, &decoding, &validation).unwrap();
    assert_eq!(data.claims["sub"], "spiffe://example.org/agents/summarizer");
    assert_eq!(data.claims["aud"], json!(["mail-api", "audit"]));
    assert_eq!(data.claims["iat"], unix(now));
    assert_eq!(data.claims["exp"], unix(now) + 300);
    assert_eq!(data.claims["jti"], svid.jti);
    assert_eq!(data.claims["hallmark"]["image"], "summarizer@1.0.0");
    assert_eq!(data.claims["scope"], "read:mail send:mail");
    assert_eq!(
        svid.expires_at,
        std::time::UNIX_EPOCH + Duration::from_secs(unix(now) + 300)
    );

    // Also from the SPKI DER via jsonwebtoken's EC DER path (raw point).
    let point = key.key().public_key_point().to_vec();
    let decoding = jsonwebtoken::DecodingKey::from_ec_der(&point);
    jsonwebtoken::decode::<Value>(&svid.token, &decoding, &validation).unwrap();

    // And our own validator agrees.
    let ok = validate_jwt_svid(&svid.token, "mail-api", &bundle_with(&[&key]), now).unwrap();
    assert_eq!(ok.spiffe_id, id("/agents/summarizer"));
    assert_eq!(ok.claims["scope"], "read:mail send:mail");
}

#[test]
fn iss_is_set_only_when_an_issuer_is_configured_and_validation_accepts_both() {
    use hallmark_ca::jwt::JwtIssuer;
    use hallmark_ca::manager::{CaConfig, CaManager};

    let now = t0();
    let issuer = JwtIssuer::new("https://oidc.example.com/td").unwrap();
    let mut config = CaConfig::new(td());
    config.jwt_issuer = Some(issuer.clone());
    let with = CaManager::generate(config, now).unwrap();
    let without = CaManager::generate(CaConfig::new(td()), now).unwrap();
    let issued = with.mint_jwt_svid(&claims(&["aws"], 60), now).unwrap();
    let plain = without.mint_jwt_svid(&claims(&["aws"], 60), now).unwrap();

    let claims_of = |token: &str| -> Value {
        let body = token.split('.').nth(1).unwrap();
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(body).unwrap()).unwrap()
    };
    assert_eq!(
        claims_of(&issued.token)["iss"],
        "https://oidc.example.com/td"
    );
    assert!(claims_of(&plain.token).get("iss").is_none());

    // jsonwebtoken requires the exact issuer when asked to.
    let jwks: Value = serde_json::from_str(&with.bundle().oidc_jwks()).unwrap();
    let jwk: jsonwebtoken::jwk::Jwk = serde_json::from_value(jwks["keys"][0].clone()).unwrap();
    let decoding = jsonwebtoken::DecodingKey::from_jwk(&jwk).unwrap();
    let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::ES256);
    validation.set_audience(&["aws"]);
    validation.set_issuer(&["https://oidc.example.com/td"]);
    validation.validate_exp = false;
    jsonwebtoken::decode::<Value>(&issued.token, &decoding, &validation).unwrap();
    validation.set_issuer(&["https://oidc.example.com/td/"]);
    assert!(jsonwebtoken::decode::<Value>(&issued.token, &decoding, &validation).is_err());

    // Our validator accepts tokens with and without `iss`.
    validate_jwt_svid(&issued.token, "aws", &with.bundle(), now).unwrap();
    validate_jwt_svid(&plain.token, "aws", &without.bundle(), now).unwrap();
}

#[test]
fn exp_is_capped_at_the_key_expiry() {
    let now = t0();
    let key = JwtKey::generate(now, Duration::from_secs(100)).unwrap();
    let svid = key.mint(&claims(&["a"], 300), now).unwrap();
    assert_eq!(svid.expires_at, key.not_after());
}

#[test]
fn validation_rejects_bad_tokens_precisely() {
    let now = t0();
    let key = JwtKey::generate(now, Duration::from_secs(3600)).unwrap();
    let other = JwtKey::generate(now, Duration::from_secs(3600)).unwrap();
    let bundle = bundle_with(&[&key]);
    let good = key.mint(&claims(&["mail-api"], 300), now).unwrap();

    // Signed by a key the bundle does not have.
    let foreign = other.mint(&claims(&["mail-api"], 300), now).unwrap();
    assert!(
        matches!(validate_jwt_svid(&foreign.token, "mail-api", &bundle, now), Err(JwtError::UnknownKeyId(k)) if k == other.kid())
    );
    // Signed by another key but claiming our kid: bad signature.
    let header = json!({"alg": "ES256", "kid": key.kid(), "typ": "JWT"});
    let body = json!({"sub": "spiffe://example.org/w", "aud": ["mail-api"], "exp": unix(now) + 60});
    let forged = craft(other.key(), &header, &body);
    assert!(matches!(
        validate_jwt_svid(&forged, "mail-api", &bundle, now),
        Err(JwtError::BadSignature)
    ));
    // Tampered claims.
    let mut parts: Vec<&str> = good.token.split('.').collect();
    let tampered_body = URL_SAFE_NO_PAD.encode(body.to_string());
    parts[1] = &tampered_body;
    assert!(matches!(
        validate_jwt_svid(&parts.join("."), "mail-api", &bundle, now),
        Err(JwtError::BadSignature)
    ));

    // Expired: exactly at exp, and after.
    assert!(matches!(
        validate_jwt_svid(&good.token, "mail-api", &bundle, good.expires_at),
        Err(JwtError::Expired)
    ));
    assert!(matches!(
        validate_jwt_svid(
            &good.token,
            "mail-api",
            &bundle,
            good.expires_at + Duration::from_secs(1000)
        ),
        Err(JwtError::Expired)
    ));
    assert!(
        validate_jwt_svid(
            &good.token,
            "mail-api",
            &bundle,
            good.expires_at - Duration::from_secs(1)
        )
        .is_ok()
    );
    // Wrong audience.
    assert!(matches!(
        validate_jwt_svid(&good.token, "other-api", &bundle, now),
        Err(JwtError::AudienceMismatch)
    ));

    // alg none, unsigned.
    let none = format!(
        "{}.{}.",
        URL_SAFE_NO_PAD.encode(json!({"alg": "none", "kid": key.kid()}).to_string()),
        URL_SAFE_NO_PAD.encode(body.to_string())
    );
    assert!(
        matches!(validate_jwt_svid(&none, "mail-api", &bundle, now), Err(JwtError::UnsupportedAlgorithm(a)) if a == "none")
    );
    // HS256 keyed with the public key (the classic confusion attack).
    let hs_input = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(json!({"alg": "HS256", "kid": key.kid()}).to_string()),
        URL_SAFE_NO_PAD.encode(body.to_string())
    );
    let mac_key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &key.public_key_der());
    let tag = ring::hmac::sign(&mac_key, hs_input.as_bytes());
    let hs = format!("{hs_input}.{}", URL_SAFE_NO_PAD.encode(tag.as_ref()));
    assert!(
        matches!(validate_jwt_svid(&hs, "mail-api", &bundle, now), Err(JwtError::UnsupportedAlgorithm(a)) if a == "HS256")
    );
    // ES384 header on a P-256 key.
    let es384 = craft(key.key(), &json!({"alg": "ES384", "kid": key.kid()}), &body);
    assert!(matches!(
        validate_jwt_svid(&es384, "mail-api", &bundle, now),
        Err(JwtError::AlgorithmMismatch(_))
    ));
    // Unknown kid, missing kid.
    let unknown = craft(key.key(), &json!({"alg": "ES256", "kid": "nope"}), &body);
    assert!(
        matches!(validate_jwt_svid(&unknown, "mail-api", &bundle, now), Err(JwtError::UnknownKeyId(k)) if k == "nope")
    );
    let no_kid = craft(key.key(), &json!({"alg": "ES256"}), &body);
    assert!(matches!(
        validate_jwt_svid(&no_kid, "mail-api", &bundle, now),
        Err(JwtError::MissingKeyId)
    ));
    // Missing aud, missing exp, sub of another trust domain, sub not a SPIFFE ID.
    let header = json!({"alg": "ES256", "kid": key.kid()});
    let no_aud = craft(
        key.key(),
        &header,
        &json!({"sub": "spiffe://example.org/w", "exp": unix(now) + 60}),
    );
    assert!(matches!(
        validate_jwt_svid(&no_aud, "mail-api", &bundle, now),
        Err(JwtError::MissingAudience)
    ));
    let no_exp = craft(
        key.key(),
        &header,
        &json!({"sub": "spiffe://example.org/w", "aud": "mail-api"}),
    );
    assert!(matches!(
        validate_jwt_svid(&no_exp, "mail-api", &bundle, now),
        Err(JwtError::MissingExpiry)
    ));
    let foreign_td = craft(
        key.key(),
        &header,
        &json!({"sub": "spiffe://evil.org/w", "aud": "mail-api", "exp": unix(now) + 60}),
    );
    assert!(matches!(
        validate_jwt_svid(&foreign_td, "mail-api", &bundle, now),
        Err(JwtError::WrongTrustDomain { .. })
    ));
    let bad_sub = craft(
        key.key(),
        &header,
        &json!({"sub": "alice", "aud": "mail-api", "exp": unix(now) + 60}),
    );
    assert!(matches!(
        validate_jwt_svid(&bad_sub, "mail-api", &bundle, now),
        Err(JwtError::InvalidSubject(_))
    ));
    // A string aud is accepted (RFC 7519).
    let string_aud = craft(
        key.key(),
        &header,
        &json!({"sub": "spiffe://example.org/w", "aud": "mail-api", "exp": unix(now) + 60}),
    );
    assert!(validate_jwt_svid(&string_aud, "mail-api", &bundle, now).is_ok());
    // Garbage.
    assert!(matches!(
        validate_jwt_svid("a.b", "mail-api", &bundle, now),
        Err(JwtError::Malformed(_))
    ));
    assert!(matches!(
        validate_jwt_svid("!!.b.c", "mail-api", &bundle, now),
        Err(JwtError::Malformed(_))
    ));
}

#[test]
fn minting_refuses_bad_claims() {
    let now = t0();
    let key = JwtKey::generate(now, Duration::from_secs(3600)).unwrap();
    assert!(matches!(
        key.mint(&claims(&[], 60), now),
        Err(CaError::EmptyAudience)
    ));
    assert!(matches!(
        key.mint(&claims(&[""], 60), now),
        Err(CaError::EmptyAudience)
    ));
    assert!(matches!(
        key.mint(&claims(&["a"], 0), now),
        Err(CaError::ZeroTtl)
    ));
    // The minter bounds the audience too, whoever its caller is.
    let huge = "a".repeat(1 << 20);
    assert!(matches!(
        key.mint(&claims(&[&huge], 60), now),
        Err(CaError::Audience(AudienceError::TooLong { index: 0, .. }))
    ));
    let many: Vec<String> = (0..17).map(|i| i.to_string()).collect();
    let many: Vec<&str> = many.iter().map(String::as_str).collect();
    assert!(matches!(
        key.mint(&claims(&many, 60), now),
        Err(CaError::Audience(AudienceError::TooMany { count: 17 }))
    ));
    let mut reserved = claims(&["a"], 60);
    reserved.extra.insert("exp".into(), json!(1));
    assert!(matches!(key.mint(&reserved, now), Err(CaError::ReservedClaim(c)) if c == "exp"));
    assert!(matches!(
        key.mint(&claims(&["a"], 60), now + Duration::from_secs(3600)),
        Err(CaError::AuthorityNotValid { .. })
    ));
}
