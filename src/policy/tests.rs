//! Unit tests of policies: rules, combinators, revocations, JWT-SVIDs,
//! X.509-SVIDs and the rustls verifiers (handshakes in memory).

use super::*;
use crate::revocation::{Revocation, RevocationKind, RevocationSet};
use crate::test_support::{CODE, Fixture, MODEL_DIGEST, NODE, Side, binding, handshake, provider};

fn req(s: &str) -> VersionReq {
    s.parse().unwrap()
}

fn identity(f: &Fixture, path: &str, b: Option<serde_json::Value>) -> Identity {
    let (chain, _) = f.x509(path, b.as_ref());
    verify_x509_svid(&chain, &f.ca.bundle(), Usage::ClientAuth, f.now).unwrap()
}

#[test]
fn each_rule_accepts_what_it_names_and_says_why_not() {
    let f = Fixture::new();
    let billing = f.id("/billing");
    let who = identity(
        &f,
        "/billing",
        Some(binding("billing-agent@1.4.0", Some(("llama", "3.10")))),
    );
    let bare = identity(&f, "/billing", None);
    let no_model = identity(&f, "/billing", Some(binding("billing-agent@1.4.0", None)));

    let ok = |p: Policy| p.check(&who).unwrap();
    let denied = |p: Policy, i: &Identity| p.check(i).unwrap_err();

    ok(Policy::any_identity());
    ok(Policy::spiffe_id(billing.clone()));
    ok(Policy::spiffe_id_under(f.id("/billing")));
    ok(Policy::image("billing-agent", req(">= 1.4")));
    ok(Policy::image("billing-agent", VersionReq::Any));
    ok(Policy::model("llama", req(">= 3.9")));
    ok(Policy::model("llama", req(">= 3.1, < 4")));
    ok(Policy::code_digest_in([CODE.to_ascii_uppercase()]));
    ok(Policy::model_digest_in([MODEL_DIGEST]));
    ok(Policy::risk_tier_at_most(RiskTier::Medium));

    assert_eq!(
        denied(Policy::spiffe_id_in([f.id("/a"), f.id("/b")]), &who).to_string(),
        "spiffe id spiffe://example.org/billing is not one of {spiffe://example.org/a, spiffe://example.org/b}"
    );
    assert_eq!(
        denied(Policy::spiffe_id_under(f.id("/bill")), &who).to_string(),
        "spiffe id spiffe://example.org/billing is not under spiffe://example.org/bill"
    );
    assert_eq!(
        denied(Policy::image("billing-agent", req(">= 2")), &who).to_string(),
        "image billing-agent@1.4.0 does not satisfy image billing-agent >= 2"
    );
    assert!(matches!(
        denied(Policy::image("other", VersionReq::Any), &who),
        Denied::Image { .. }
    ));
    assert_eq!(
        denied(Policy::model("llama", req(">= 4")), &who).to_string(),
        "model llama 3.10 does not satisfy model llama >= 4"
    );
    assert_eq!(
        denied(Policy::model("llama", VersionReq::Any), &no_model).to_string(),
        "the credential binds no model, so it does not satisfy model llama"
    );
    assert_eq!(
        denied(Policy::code_digest_in(["ab".repeat(32)]), &who),
        Denied::CodeDigest(CODE.into())
    );
    assert_eq!(
        denied(Policy::model_digest_in(["sha256:00"]), &no_model).to_string(),
        "a credential without a model is not allowed"
    );
    assert_eq!(
        denied(Policy::risk_tier_at_most(RiskTier::Low), &who).to_string(),
        "risk tier medium is above the allowed low"
    );
    assert_eq!(
        denied(Policy::scope("payments:propose"), &who),
        Denied::Scope("payments:propose".into())
    );
    // Rules about the binding refuse credentials that carry none; the
    // SPIFFE ID alone still works.
    assert_eq!(
        denied(Policy::model("llama", VersionReq::Any), &bare).to_string(),
        "the credential carries no hallmark binding (model llama needs it)"
    );
    Policy::spiffe_id(billing).check(&bare).unwrap();
}

#[test]
fn versions_compare_numerically_and_non_numeric_ones_fail_closed() {
    let f = Fixture::new();
    let at = |v: &str| identity(&f, "/x", Some(binding("x@1", Some(("m", v)))));
    let p = Policy::model("m", req(">= 3.9"));
    assert!(p.check(&at("3.10")).is_ok());
    assert!(p.check(&at("3.9.0")).is_ok());
    assert!(p.check(&at("3.8.99")).is_err());
    assert!(p.check(&at("3.9-rc1")).is_err());
    assert!(p.check(&at("2024-07")).is_err());
    assert!(
        Policy::model("m", VersionReq::Any)
            .check(&at("2024-07"))
            .is_ok()
    );
}

#[test]
fn combinators_nest_flatten_and_explain() {
    let f = Fixture::new();
    let who = identity(
        &f,
        "/billing",
        Some(binding("billing-agent@1.4.0", Some(("llama", "3.0")))),
    );
    let p = Policy::spiffe_id(f.id("/ops"))
        .or(Policy::image("billing-agent", VersionReq::Any))
        .and(Policy::model("llama", req(">= 3.1")));
    assert_eq!(
        p.to_string(),
        "(spiffe id in {spiffe://example.org/ops} or image billing-agent) and model llama >= 3.1"
    );
    assert_eq!(
        p.check(&who).unwrap_err().to_string(),
        "model llama 3.0 does not satisfy model llama >= 3.1"
    );
    let either = Policy::spiffe_id(f.id("/ops")).or(Policy::model("llama", req(">= 3.1")));
    assert_eq!(
        either.check(&who).unwrap_err().to_string(),
        "no alternative holds: spiffe id spiffe://example.org/billing is not one of {spiffe://example.org/ops}; or model llama 3.0 does not satisfy model llama >= 3.1"
    );
    // `or` and `and` flatten; `any_identity` is the unit of `and`.
    let three = Policy::spiffe_id(f.id("/a"))
        .or(Policy::spiffe_id(f.id("/b")))
        .or(Policy::spiffe_id(f.id("/billing")));
    assert_eq!(three.to_string().matches(" or ").count(), 2);
    three.check(&who).unwrap();
    let unit = Policy::any_identity().and(Policy::image("billing-agent", VersionReq::Any));
    assert_eq!(unit.to_string(), "image billing-agent");
    assert_eq!(Policy::any_identity().to_string(), "any identity");
}

fn revoked(kind: RevocationKind, target: &str) -> Revocations {
    Revocations::fixed(RevocationSet::new(vec![Revocation {
        id: "0123456789abcdef".into(),
        kind,
        target: target.into(),
        reason: "prompt injection".into(),
        created_at: 1,
    }]))
}

#[test]
fn revocations_refuse_what_they_cover_after_the_rules() {
    let f = Fixture::new();
    let who = identity(
        &f,
        "/billing",
        Some(binding("billing-agent@1.4.0", Some(("llama", "3.1")))),
    );
    let base = Policy::spiffe_id(f.id("/billing"));
    for (kind, target) in [
        (RevocationKind::SpiffeId, "spiffe://example.org/billing"),
        (RevocationKind::Image, "billing-agent"),
        (RevocationKind::Image, "billing-agent@1.4.0"),
        (RevocationKind::Code, CODE),
        (RevocationKind::Model, MODEL_DIGEST),
        (RevocationKind::Node, NODE),
    ] {
        let err = base
            .clone()
            .with_revocations(revoked(kind, target))
            .check(&who)
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            format!(
                "revoked by kill 0123456789abcdef ({} {target}): prompt injection",
                kind.as_str()
            )
        );
    }
    base.clone()
        .with_revocations(revoked(RevocationKind::Image, "billing-agent@1.5.0"))
        .check(&who)
        .unwrap();
    assert!(
        base.clone()
            .with_revocations(revoked(RevocationKind::Code, CODE))
            .to_string()
            .ends_with(", not revoked")
    );
    // A credential without a binding is covered by its SPIFFE ID only.
    let bare = identity(&f, "/billing", None);
    base.clone()
        .with_revocations(revoked(RevocationKind::Node, NODE))
        .check(&bare)
        .unwrap();
    assert!(
        base.with_revocations(revoked(
            RevocationKind::SpiffeId,
            "spiffe://example.org/billing"
        ))
        .check(&bare)
        .is_err()
    );
}

#[test]
fn jwt_svids_are_validated_then_judged_on_their_claims() {
    let f = Fixture::new();
    let bundle = f.ca.bundle();
    let token = f.jwt(
        "/billing",
        "payments",
        Some(binding("billing-agent@1.4.0", Some(("llama", "3.1")))),
        Some("invoices:read payments:propose"),
    );
    let p = Policy::model("llama", req(">= 3.1")).and(Policy::scope("payments:propose"));
    let identity = p.verify_jwt(&token, "payments", &bundle, f.now).unwrap();
    assert_eq!(identity.spiffe_id, f.id("/billing"));
    assert_eq!(identity.scopes(), ["invoices:read", "payments:propose"]);
    assert!(identity.expires_at() > f.now);
    assert_eq!(
        identity.binding.unwrap().image.as_str(),
        "billing-agent@1.4.0"
    );

    // Wrong audience: invalid, not merely denied.
    assert!(matches!(
        p.verify_jwt(&token, "other", &bundle, f.now),
        Err(PolicyError::Invalid(SvidError::Jwt(
            hallmark_ca::jwt::JwtError::AudienceMismatch
        )))
    ));
    // Another trust domain's keys: invalid.
    let other = Fixture::new();
    assert!(matches!(
        p.verify_jwt(&token, "payments", &other.ca.bundle(), f.now),
        Err(PolicyError::Invalid(SvidError::Jwt(
            hallmark_ca::jwt::JwtError::UnknownKeyId(_)
        )))
    ));
    // Expired.
    assert!(matches!(
        p.verify_jwt(
            &token,
            "payments",
            &bundle,
            f.now + std::time::Duration::from_secs(301)
        ),
        Err(PolicyError::Invalid(SvidError::Jwt(
            hallmark_ca::jwt::JwtError::Expired
        )))
    ));
    // Valid but refused: an old model, a missing scope.
    let old = f.jwt(
        "/billing",
        "payments",
        Some(binding("billing-agent@1.4.0", Some(("llama", "3.0")))),
        Some("payments:propose"),
    );
    let err = p.verify_jwt(&old, "payments", &bundle, f.now).unwrap_err();
    assert_eq!(
        err.to_string(),
        "spiffe://example.org/billing is not authorized: model llama 3.0 does not satisfy model llama >= 3.1"
    );
    let unscoped = f.jwt(
        "/billing",
        "payments",
        Some(binding("billing-agent@1.4.0", Some(("llama", "3.1")))),
        None,
    );
    assert!(matches!(
        p.verify_jwt(&unscoped, "payments", &bundle, f.now),
        Err(PolicyError::Denied {
            reason: Denied::Scope(_),
            ..
        })
    ));
    // A malformed binding claim is an invalid credential.
    let mut broken = binding("billing-agent@1.4.0", None);
    broken["code_sha256"] = "nope".into();
    let broken = f.jwt("/billing", "payments", Some(broken), None);
    assert!(matches!(
        Policy::any_identity().verify_jwt(&broken, "payments", &bundle, f.now),
        Err(PolicyError::Invalid(SvidError::Binding(_)))
    ));
    // Revoked tokens are refused.
    let killed =
        Policy::any_identity().with_revocations(revoked(RevocationKind::Image, "billing-agent"));
    assert!(matches!(
        killed.verify_jwt(&token, "payments", &bundle, f.now),
        Err(PolicyError::Denied {
            reason: Denied::Revoked(_),
            ..
        })
    ));
}

#[test]
fn x509_svids_are_verified_then_judged() {
    let f = Fixture::new();
    let (chain, _) = f.x509(
        "/billing",
        Some(&binding("billing-agent@1.4.0", Some(("llama", "3.1")))),
    );
    let p = Policy::model("llama", req(">= 3.1"));
    let bundle = f.ca.bundle();
    let identity = p
        .verify_x509(&chain, &bundle, Usage::ServerAuth, f.now)
        .unwrap();
    match &identity.credential {
        crate::svid::Credential::X509 { serial, not_after } => {
            assert_eq!(*serial, hallmark_ca::tls::leaf_serial(&chain[0]).unwrap());
            assert!(*not_after > f.now);
        }
        other => panic!("{other:?}"),
    }
    assert!(identity.scopes().is_empty());
    let other = Fixture::new();
    assert!(matches!(
        p.verify_x509(&chain, &other.ca.bundle(), Usage::ServerAuth, f.now),
        Err(PolicyError::Invalid(SvidError::X509(
            hallmark_ca::verify::VerifyError::UnknownAuthority
        )))
    ));
    assert!(matches!(
        Policy::model("llama", req(">= 4")).verify_x509(&chain, &bundle, Usage::ServerAuth, f.now),
        Err(PolicyError::Denied { .. })
    ));
}

fn server_config(f: &Fixture, policy: &Policy) -> Arc<rustls::ServerConfig> {
    Arc::new(
        rustls::ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_client_cert_verifier(policy.client_verifier(f.bundle()))
            .with_cert_resolver(f.resolver(
                "/server",
                Some(&binding("server@2.0.0", Some(("llama", "3.1")))),
            )),
    )
}

fn client_config(f: &Fixture, policy: &Policy, model_version: &str) -> Arc<rustls::ClientConfig> {
    Arc::new(
        rustls::ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .unwrap()
            .dangerous()
            .with_custom_certificate_verifier(policy.server_verifier(f.bundle()))
            .with_client_cert_resolver(f.resolver(
                "/client",
                Some(&binding("client@1.0.0", Some(("llama", model_version)))),
            )),
    )
}

#[test]
fn rustls_verifiers_apply_the_policy_on_both_sides() {
    let f = Fixture::new();
    let for_clients = Policy::spiffe_id(f.id("/client")).and(Policy::model("llama", req(">= 3.1")));
    let for_server = Policy::spiffe_id(f.id("/server")).and(Policy::model("llama", req(">= 3")));

    let (client, server) = handshake(
        server_config(&f, &for_clients),
        client_config(&f, &for_server, "3.1"),
    )
    .unwrap();
    let peer = crate::svid::peer_identity(server.peer_certificates().unwrap()).unwrap();
    assert_eq!(peer.spiffe_id, f.id("/client"));
    assert_eq!(peer.binding.unwrap().model.unwrap().version, "3.1");
    let peer = crate::svid::peer_identity(client.peer_certificates().unwrap()).unwrap();
    assert_eq!(peer.spiffe_id, f.id("/server"));

    // The server refuses a client bound to an older model, saying why.
    let (side, err) = handshake(
        server_config(&f, &for_clients),
        client_config(&f, &for_server, "3.0"),
    )
    .unwrap_err();
    assert_eq!(side, Side::Server);
    assert_eq!(
        PolicyError::in_handshake_error(&err).unwrap().to_string(),
        "spiffe://example.org/client is not authorized: model llama 3.0 does not satisfy model llama >= 3.1"
    );
    // tokio-rustls hands it over inside an io::Error.
    let io = std::io::Error::new(std::io::ErrorKind::InvalidData, err);
    assert!(matches!(
        PolicyError::in_handshake_error(&io),
        Some(PolicyError::Denied {
            reason: Denied::Model { .. },
            ..
        })
    ));

    // The client refuses a server its policy does not name.
    let wrong_server = Policy::spiffe_id(f.id("/elsewhere"));
    let (side, err) = handshake(
        server_config(&f, &for_clients),
        client_config(&f, &wrong_server, "3.1"),
    )
    .unwrap_err();
    assert_eq!(side, Side::Client);
    assert!(matches!(
        PolicyError::in_handshake_error(&err),
        Some(PolicyError::Denied { reason: Denied::SpiffeId { .. }, spiffe_id }) if *spiffe_id == f.id("/server")
    ));

    // A revocation refuses at the next handshake.
    let killed = for_clients.with_revocations(revoked(RevocationKind::Image, "client"));
    let (side, err) = handshake(
        server_config(&f, &killed),
        client_config(&f, &for_server, "3.1"),
    )
    .unwrap_err();
    assert_eq!(side, Side::Server);
    let refusal = PolicyError::in_handshake_error(&err).unwrap().to_string();
    assert!(
        refusal.contains("revoked by kill 0123456789abcdef (image client)"),
        "{refusal}"
    );
}

#[test]
fn rustls_verifiers_still_check_the_chain_and_require_a_client_certificate() {
    let f = Fixture::new();
    let other = Fixture::new();
    let any = Policy::any_identity();
    // A client certificate from another CA of the same trust domain.
    let (side, err) =
        handshake(server_config(&f, &any), client_config(&other, &any, "3.1")).unwrap_err();
    // The client distrusts the server first (its bundle is the other CA's).
    assert_eq!(side, Side::Client);
    assert!(matches!(
        err,
        rustls::Error::InvalidCertificate(rustls::CertificateError::UnknownIssuer)
    ));
    // No client certificate at all.
    let anonymous = Arc::new(
        rustls::ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .unwrap()
            .dangerous()
            .with_custom_certificate_verifier(any.server_verifier(f.bundle()))
            .with_no_client_auth(),
    );
    let (side, err) = handshake(server_config(&f, &any), anonymous).unwrap_err();
    assert_eq!(side, Side::Server);
    assert!(
        matches!(err, rustls::Error::NoCertificatesPresented),
        "{err:?}"
    );
}

#[test]
fn jwt_issuer_rule_pins_iss_and_tokens_without_iss_still_validate() {
    use hallmark_ca::jwt::{JwtIssuer, JwtSvidClaims};
    use hallmark_ca::manager::{CaConfig, CaManager};

    let f = Fixture::new();
    let issuer = "https://oidc.example.com";
    let mut config = CaConfig::new(f.td.clone());
    config.jwt_issuer = Some(JwtIssuer::new(issuer).unwrap());
    let issuing = CaManager::generate(config, f.now).unwrap();
    let issued = issuing
        .mint_jwt_svid(
            &JwtSvidClaims {
                spiffe_id: f.id("/summarizer"),
                audience: vec!["aws".into()],
                ttl: std::time::Duration::from_secs(60),
                extra: serde_json::Map::new(),
            },
            f.now,
        )
        .unwrap()
        .token;
    let plain = f.jwt("/summarizer", "aws", None, None);

    // Without the rule, both validate; the identity says which has `iss`.
    let any = Policy::any_identity();
    let with = any
        .verify_jwt(&issued, "aws", &issuing.bundle(), f.now)
        .unwrap();
    assert_eq!(with.issuer(), Some(issuer));
    let without = any
        .verify_jwt(&plain, "aws", &f.ca.bundle(), f.now)
        .unwrap();
    assert_eq!(without.issuer(), None);

    let pinned = Policy::jwt_issuer(issuer);
    assert_eq!(pinned.to_string(), "jwt issuer https://oidc.example.com");
    pinned
        .verify_jwt(&issued, "aws", &issuing.bundle(), f.now)
        .unwrap();
    match pinned.verify_jwt(&plain, "aws", &f.ca.bundle(), f.now) {
        Err(PolicyError::Denied {
            reason:
                Denied::Issuer {
                    expected,
                    found: None,
                },
            ..
        }) => assert_eq!(expected, issuer),
        other => panic!("{other:?}"),
    }
    let other = Policy::jwt_issuer("https://oidc.example.com/");
    let err = other
        .verify_jwt(&issued, "aws", &issuing.bundle(), f.now)
        .unwrap_err();
    assert!(
        err.to_string().contains(
            "issuer \"https://oidc.example.com\" is not the required issuer \"https://oidc.example.com/\""
        ),
        "{err}"
    );
    // An X.509-SVID has no issuer claim.
    let (chain, _) = f.x509("/summarizer", None);
    let x509 =
        crate::svid::verify_x509_svid(&chain, &f.ca.bundle(), Usage::ClientAuth, f.now).unwrap();
    assert!(matches!(
        pinned.check(&x509),
        Err(Denied::Issuer { found: None, .. })
    ));
}
