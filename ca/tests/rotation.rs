//! Rotation with a manual clock: the next key is published before it signs,
//! old credentials verify until they expire, then the old key leaves the
//! bundle; persisted state restores to the same bundle.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "test code: a failure is a test failure"
)]

mod common;

use std::time::Duration;

use common::{Workload, id, t0, td};
use hallmark_ca::CaError;
use hallmark_ca::clock::{Clock, ManualClock};
use hallmark_ca::jwt::{JwtError, JwtSvidClaims, validate_jwt_svid};
use hallmark_ca::manager::{AuthorityRole, CaConfig, CaManager, CaState};
use hallmark_ca::verify::{Usage, VerifyError, verify_x509_svid};
use hallmark_ca::x509::{SvidRequest, X509Svid};

const HOUR: Duration = Duration::from_secs(3600);

fn mint_x509(manager: &CaManager, workload: &Workload, now: std::time::SystemTime) -> X509Svid {
    let spiffe_id = id("/w");
    manager
        .mint_x509_svid(
            &SvidRequest {
                spiffe_id: &spiffe_id,
                public_key_der: &workload.spki(),
                ttl: Duration::from_secs(300),
                dns_names: &[],
                extensions: &[],
            },
            now,
        )
        .unwrap()
}

fn node_svid(manager: &CaManager, workload: &Workload, now: std::time::SystemTime) -> X509Svid {
    let spiffe_id = id("/hallmark/agent/join_token/t1");
    manager
        .mint_node_svid(
            &SvidRequest {
                spiffe_id: &spiffe_id,
                public_key_der: &workload.spki(),
                ttl: HOUR,
                dns_names: &[],
                extensions: &[],
            },
            now,
        )
        .unwrap()
}

fn jwt_claims() -> JwtSvidClaims {
    JwtSvidClaims {
        spiffe_id: id("/w"),
        audience: vec!["api".into()],
        ttl: Duration::from_secs(300),
        extra: serde_json::Map::new(),
    }
}

#[test]
fn x509_and_jwt_rotation_over_a_ca_lifetime() {
    let clock = ManualClock::new(t0());
    let mut manager = CaManager::generate(CaConfig::new(td()), clock.now()).unwrap();
    let workload = Workload::new();
    let first_ca = manager.active_x509().clone();
    let first_jwt = manager.active_jwt().clone();
    assert_eq!(
        manager.bundle().x509_authorities,
        vec![first_ca.root_der().to_vec()]
    );
    assert_eq!(manager.sequence(), 1);
    assert!(
        !manager.rotate(clock.now()).unwrap(),
        "nothing to do at start"
    );

    // Before half-life: no change.
    clock.advance(11 * HOUR);
    assert!(!manager.rotate(clock.now()).unwrap());
    assert_eq!(manager.sequence(), 1);

    // Past half-life: next CA and JWT key are published, not yet signing.
    clock.advance(HOUR + Duration::from_secs(1));
    assert!(manager.rotate(clock.now()).unwrap());
    assert_eq!(manager.sequence(), 2);
    let next_ca = manager.next_x509().unwrap().clone();
    let next_jwt = manager.next_jwt().unwrap().clone();
    let bundle = manager.bundle();
    assert_eq!(
        bundle.x509_authorities,
        vec![first_ca.root_der().to_vec(), next_ca.root_der().to_vec()]
    );
    assert!(bundle.jwt_authority(next_jwt.kid()).is_some());
    let svid = mint_x509(&manager, &workload, clock.now());
    assert_eq!(
        svid_issuer_root(&svid, &manager),
        first_ca.root_der(),
        "active still signs"
    );
    let token = manager.mint_jwt_svid(&jwt_claims(), clock.now()).unwrap();
    assert_eq!(
        jsonwebtoken::decode_header(&token.token)
            .unwrap()
            .kid
            .as_deref(),
        Some(first_jwt.kid())
    );

    // Past 5/6: the prepared ones activate. Old credentials still verify.
    clock.set(t0() + 20 * HOUR + Duration::from_secs(1));
    let old_svid = mint_x509(&manager, &workload, clock.now());
    let old_node = node_svid(&manager, &workload, clock.now());
    let old_token = manager.mint_jwt_svid(&jwt_claims(), clock.now()).unwrap();
    assert!(manager.rotate(clock.now()).unwrap());
    assert_eq!(
        manager.sequence(),
        2,
        "activation does not change the bundle"
    );
    assert!(std::sync::Arc::ptr_eq(manager.active_x509(), &next_ca));
    assert!(std::sync::Arc::ptr_eq(manager.active_jwt(), &next_jwt));
    let new_svid = mint_x509(&manager, &workload, clock.now());
    let bundle = manager.bundle();
    let verified = verify_x509_svid(
        &new_svid.cert_chain,
        &bundle,
        Usage::ClientAuth,
        clock.now(),
    )
    .unwrap();
    assert_eq!(verified.serial, new_svid.serial);
    // The new SVID chains to the new CA only.
    let mut only_old = bundle.clone();
    only_old.x509_authorities = vec![first_ca.root_der().to_vec()];
    assert!(matches!(
        verify_x509_svid(
            &new_svid.cert_chain,
            &only_old,
            Usage::ClientAuth,
            clock.now()
        ),
        Err(VerifyError::UnknownAuthority)
    ));
    verify_x509_svid(
        &old_svid.cert_chain,
        &bundle,
        Usage::ClientAuth,
        clock.now(),
    )
    .unwrap();
    let new_token = manager.mint_jwt_svid(&jwt_claims(), clock.now()).unwrap();
    assert_eq!(
        jsonwebtoken::decode_header(&new_token.token)
            .unwrap()
            .kid
            .as_deref(),
        Some(next_jwt.kid())
    );
    validate_jwt_svid(&old_token.token, "api", &bundle, clock.now()).unwrap();
    validate_jwt_svid(&new_token.token, "api", &bundle, clock.now()).unwrap();

    // After deactivation + max_svid_ttl, the old JWT key leaves the bundle.
    clock.advance(Duration::from_secs(301));
    assert!(manager.rotate(clock.now()).unwrap());
    assert_eq!(manager.sequence(), 3);
    let bundle = manager.bundle();
    assert!(bundle.jwt_authority(first_jwt.kid()).is_none());
    assert!(matches!(
        validate_jwt_svid(
            &old_token.token,
            "api",
            &bundle,
            clock.now() - Duration::from_secs(302)
        ),
        Err(JwtError::UnknownKeyId(_))
    ));
    // The old CA stays: the node SVID it signed (1 h) is still valid.
    assert_eq!(bundle.x509_authorities.len(), 2);
    verify_x509_svid(
        &old_node.cert_chain,
        &bundle,
        Usage::ClientAuth,
        clock.now(),
    )
    .unwrap();
    assert!(old_node.not_after <= first_ca.not_after());

    // After the old CA's not_after, its root is gone (and everything it signed expired).
    clock.set(first_ca.not_after());
    manager.rotate(clock.now()).unwrap();
    let bundle = manager.bundle();
    assert!(
        !bundle
            .x509_authorities
            .contains(&first_ca.root_der().to_vec())
    );
    assert_eq!(bundle.x509_authorities[0], next_ca.root_der());
    assert!(matches!(
        verify_x509_svid(
            &old_node.cert_chain,
            &bundle,
            Usage::ClientAuth,
            clock.now()
        ),
        Err(VerifyError::Expired)
    ));
    // The new CA is itself at half-life now: its successor is published.
    assert!(manager.next_x509().is_some());
}

#[test]
fn a_next_key_prepared_late_is_published_for_one_rotation_before_it_signs() {
    // After a long downtime the first rotate sees the CA past 5/6 with nothing prepared.
    let mut manager = CaManager::generate(CaConfig::new(td()), t0()).unwrap();
    let first = manager.active_x509().clone();
    let late = t0() + 21 * HOUR;
    assert!(manager.rotate(late).unwrap());
    assert!(
        std::sync::Arc::ptr_eq(manager.active_x509(), &first),
        "not activated in the same call"
    );
    let next = manager.next_x509().unwrap().clone();
    assert!(
        manager
            .bundle()
            .x509_authorities
            .contains(&next.root_der().to_vec())
    );
    assert!(manager.rotate(late + Duration::from_secs(5)).unwrap());
    assert!(std::sync::Arc::ptr_eq(manager.active_x509(), &next));
}

#[test]
fn state_round_trip_keeps_the_bundle_and_keeps_minting() {
    let mut manager = CaManager::generate(CaConfig::new(td()), t0()).unwrap();
    manager.rotate(t0() + 13 * HOUR).unwrap();
    manager.rotate(t0() + 21 * HOUR).unwrap();
    let state = manager.state();
    assert!(state.x509.iter().any(|e| e.role == AuthorityRole::Retired));
    let json = serde_json::to_string(&state).unwrap();
    let back: CaState = serde_json::from_str(&json).unwrap();
    assert_eq!(back, state);
    // Debug never shows key material.
    let dbg = format!("{state:?}");
    assert!(dbg.contains("[redacted]"));
    for entry in &state.x509 {
        assert!(!dbg.contains(&entry.key_pkcs8));
    }
    for entry in &state.jwt {
        assert!(!dbg.contains(&entry.key_pkcs8));
    }

    let now = t0() + 21 * HOUR;
    let restored = CaManager::restore(CaConfig::new(td()), back, now).unwrap();
    assert_eq!(restored.bundle(), manager.bundle());
    assert_eq!(restored.active_jwt().kid(), manager.active_jwt().kid());
    let workload = Workload::new();
    let svid = mint_x509(&restored, &workload, now);
    verify_x509_svid(&svid.cert_chain, &manager.bundle(), Usage::ServerAuth, now).unwrap();
    let token = restored.mint_jwt_svid(&jwt_claims(), now).unwrap();
    validate_jwt_svid(&token.token, "api", &manager.bundle(), now).unwrap();
}

#[test]
fn restore_refuses_mismatched_keys_and_other_trust_domains() {
    let manager = CaManager::generate(CaConfig::new(td()), t0()).unwrap();
    let other = CaManager::generate(CaConfig::new(td()), t0()).unwrap();

    let mut swapped = manager.state();
    swapped.x509[0].key_pkcs8 = other.state().x509[0].key_pkcs8.clone();
    assert!(matches!(
        CaManager::restore(CaConfig::new(td()), swapped, t0()),
        Err(CaError::KeyMismatch)
    ));
    let mut swapped_jwt = manager.state();
    swapped_jwt.jwt[0].key_pkcs8 = other.state().jwt[0].key_pkcs8.clone();
    assert!(matches!(
        CaManager::restore(CaConfig::new(td()), swapped_jwt, t0()),
        Err(CaError::KeyMismatch)
    ));
    let foreign = CaConfig::new(hallmark_ca::id::TrustDomain::new("other.org").unwrap());
    assert!(matches!(
        CaManager::restore(foreign, manager.state(), t0()),
        Err(CaError::WrongTrustDomain { .. })
    ));
    let mut no_active = manager.state();
    no_active.x509.clear();
    assert!(matches!(
        CaManager::restore(CaConfig::new(td()), no_active, t0()),
        Err(CaError::InvalidState(_))
    ));
}

#[test]
fn upstream_rotation_publishes_one_root() {
    let op = common::operator_root(&rcgen::PKCS_ECDSA_P256_SHA256, t0() + 30 * 24 * HOUR);
    let mut config = CaConfig::new(td());
    config.upstream = Some(std::sync::Arc::new(
        hallmark_ca::x509::UpstreamCa::from_pem(&op.cert_pem, &op.key_pem).unwrap(),
    ));
    let mut manager = CaManager::generate(config, t0()).unwrap();
    manager.rotate(t0() + 13 * HOUR).unwrap();
    assert!(manager.next_x509().is_some());
    assert_eq!(manager.bundle().x509_authorities, vec![op.root_der.clone()]);
    let workload = Workload::new();
    let svid = mint_x509(&manager, &workload, t0() + 13 * HOUR);
    assert_eq!(svid.cert_chain.len(), 2);
    verify_x509_svid(
        &svid.cert_chain,
        &manager.bundle(),
        Usage::ClientAuth,
        t0() + 13 * HOUR,
    )
    .unwrap();
}

/// Which bundle root the SVID chains to.
fn svid_issuer_root<'a>(svid: &X509Svid, manager: &'a CaManager) -> &'a [u8] {
    let candidates = [Some(manager.active_x509()), manager.next_x509()];
    for ca in candidates.into_iter().flatten() {
        if common::webpki_verify(
            &svid.cert_chain,
            ca.root_der(),
            webpki::KeyUsage::client_auth(),
            svid.not_before,
        )
        .is_ok()
        {
            return ca.root_der();
        }
    }
    panic!("svid chains to no known ca");
}
