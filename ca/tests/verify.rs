//! `verify_x509_svid` on good and deliberately bad certificates (made with
//! rcgen, signed by a Hallmark CA key) gives the precise error.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "test code: a failure is a test failure"
)]

mod common;

use std::time::Duration;

use common::{Workload, id, mint, t0, td};
use hallmark_ca::bundle::Bundle;
use hallmark_ca::id::TrustDomain;
use hallmark_ca::key::CaKey;
use hallmark_ca::verify::{Usage, VerifyError, verify_x509_svid};
use hallmark_ca::x509::{SvidExtension, X509Authority};
use rcgen::{CertificateParams, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyUsagePurpose, SanType};

fn ca_for(td: &TrustDomain) -> X509Authority {
    X509Authority::self_signed(
        td,
        CaKey::generate().unwrap(),
        Duration::from_secs(86_400),
        t0(),
    )
    .unwrap()
}

fn bundle_of(ca: &X509Authority) -> Bundle {
    let mut bundle = Bundle::new(ca.trust_domain().clone());
    bundle.x509_authorities = vec![ca.root_der().to_vec()];
    bundle
}

/// A leaf built by hand with rcgen and signed by `ca`, for malformed cases.
fn custom_leaf(ca: &X509Authority, edit: impl FnOnce(&mut CertificateParams)) -> Vec<u8> {
    let issuer = Issuer::from_ca_cert_der(&ca.cert_der().into(), ca.key().clone()).unwrap();
    let mut params = CertificateParams::default();
    params.not_before = (t0() - Duration::from_secs(10)).into();
    params.not_after = (t0() + Duration::from_secs(300)).into();
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];
    params.subject_alt_names = vec![SanType::URI("spiffe://example.org/w".try_into().unwrap())];
    params.use_authority_key_identifier_extension = true;
    edit(&mut params);
    let key = rcgen::KeyPair::generate().unwrap();
    params.signed_by(&key, &issuer).unwrap().der().to_vec()
}

fn verify_one(
    der: Vec<u8>,
    bundle: &Bundle,
    usage: Usage,
) -> Result<hallmark_ca::verify::VerifiedSvid, VerifyError> {
    verify_x509_svid(&[der], bundle, usage, t0())
}

#[test]
fn a_good_svid_verifies_with_its_binding() {
    let ca = ca_for(&td());
    let svid = mint(
        &ca,
        &id("/w"),
        &Workload::new(),
        Duration::from_secs(300),
        &[SvidExtension::binding(b"{}")],
        t0(),
    );
    let verified =
        verify_x509_svid(&svid.cert_chain, &bundle_of(&ca), Usage::ServerAuth, t0()).unwrap();
    assert_eq!(verified.spiffe_id, id("/w"));
    assert_eq!(verified.serial, svid.serial);
    assert_eq!(verified.not_after, svid.not_after);
    assert_eq!(verified.binding.as_deref(), Some(&b"{}"[..]));
    // The hand-built control leaf verifies too, so each bad case below fails for its one defect.
    verify_one(custom_leaf(&ca, |_| {}), &bundle_of(&ca), Usage::ClientAuth).unwrap();
}

#[test]
fn wrong_trust_domain_and_unknown_root() {
    let ours = ca_for(&td());
    let other_td = TrustDomain::new("other.org").unwrap();
    let theirs = ca_for(&other_td);
    let foreign = mint(
        &theirs,
        &hallmark_ca::id::SpiffeId::new(&other_td, "/w").unwrap(),
        &Workload::new(),
        Duration::from_secs(300),
        &[],
        t0(),
    );
    assert!(matches!(
        verify_x509_svid(&foreign.cert_chain, &bundle_of(&ours), Usage::ClientAuth, t0()),
        Err(VerifyError::WrongTrustDomain { expected, found }) if expected == td() && found == other_td
    ));
    // Same trust domain, but a CA the bundle does not hold.
    let rogue = ca_for(&td());
    let svid = mint(
        &rogue,
        &id("/w"),
        &Workload::new(),
        Duration::from_secs(300),
        &[],
        t0(),
    );
    assert!(matches!(
        verify_x509_svid(&svid.cert_chain, &bundle_of(&ours), Usage::ClientAuth, t0()),
        Err(VerifyError::UnknownAuthority)
    ));
    assert!(matches!(
        verify_x509_svid(
            &svid.cert_chain,
            &Bundle::new(td()),
            Usage::ClientAuth,
            t0()
        ),
        Err(VerifyError::UnknownAuthority)
    ));
}

#[test]
fn ca_certificate_as_leaf_is_refused() {
    let ca = ca_for(&td());
    assert!(matches!(
        verify_one(ca.cert_der().to_vec(), &bundle_of(&ca), Usage::ClientAuth),
        Err(VerifyError::LeafIsCa)
    ));
}

#[test]
fn uri_san_rules() {
    let ca = ca_for(&td());
    let bundle = bundle_of(&ca);
    let two = custom_leaf(&ca, |p| {
        p.subject_alt_names
            .push(SanType::URI("spiffe://example.org/x".try_into().unwrap()));
    });
    assert!(matches!(
        verify_one(two, &bundle, Usage::ClientAuth),
        Err(VerifyError::MultipleUriSans(2))
    ));
    let none = custom_leaf(&ca, |p| {
        p.subject_alt_names = vec![SanType::DnsName("w.example.org".try_into().unwrap())];
    });
    assert!(matches!(
        verify_one(none, &bundle, Usage::ClientAuth),
        Err(VerifyError::MissingSpiffeId)
    ));
    let not_spiffe = custom_leaf(&ca, |p| {
        p.subject_alt_names = vec![SanType::URI("https://example.org/w".try_into().unwrap())];
    });
    assert!(matches!(
        verify_one(not_spiffe, &bundle, Usage::ClientAuth),
        Err(VerifyError::InvalidSpiffeId(_))
    ));
    let td_only = custom_leaf(&ca, |p| {
        p.subject_alt_names = vec![SanType::URI("spiffe://example.org".try_into().unwrap())];
    });
    assert!(matches!(
        verify_one(td_only, &bundle, Usage::ClientAuth),
        Err(VerifyError::TrustDomainIdAsLeaf)
    ));
}

#[test]
fn key_usage_rules() {
    let ca = ca_for(&td());
    let bundle = bundle_of(&ca);
    let no_ds = custom_leaf(&ca, |p| {
        p.key_usages = vec![KeyUsagePurpose::KeyEncipherment]
    });
    assert!(matches!(
        verify_one(no_ds, &bundle, Usage::ClientAuth),
        Err(VerifyError::MissingDigitalSignature)
    ));
    let no_ku = custom_leaf(&ca, |p| p.key_usages.clear());
    assert!(matches!(
        verify_one(no_ku, &bundle, Usage::ClientAuth),
        Err(VerifyError::MissingDigitalSignature)
    ));
    let cert_sign = custom_leaf(&ca, |p| p.key_usages.push(KeyUsagePurpose::KeyCertSign));
    assert!(matches!(
        verify_one(cert_sign, &bundle, Usage::ClientAuth),
        Err(VerifyError::LeafHasCaKeyUsage)
    ));
    let server_only = custom_leaf(&ca, |p| {
        p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth]
    });
    assert!(matches!(
        verify_one(server_only.clone(), &bundle, Usage::ClientAuth),
        Err(VerifyError::WrongUsage(Usage::ClientAuth))
    ));
    verify_one(server_only, &bundle, Usage::ServerAuth).unwrap();
}

#[test]
fn validity_rules() {
    let ca = ca_for(&td());
    let bundle = bundle_of(&ca);
    let svid = mint(
        &ca,
        &id("/w"),
        &Workload::new(),
        Duration::from_secs(300),
        &[],
        t0(),
    );
    assert!(matches!(
        verify_x509_svid(&svid.cert_chain, &bundle, Usage::ClientAuth, svid.not_after),
        Err(VerifyError::Expired)
    ));
    assert!(matches!(
        verify_x509_svid(
            &svid.cert_chain,
            &bundle,
            Usage::ClientAuth,
            svid.not_before - Duration::from_secs(1)
        ),
        Err(VerifyError::NotYetValid)
    ));
    let empty: [Vec<u8>; 0] = [];
    assert!(matches!(
        verify_x509_svid(&empty, &bundle, Usage::ClientAuth, t0()),
        Err(VerifyError::EmptyChain)
    ));
    assert!(matches!(
        verify_one(b"junk".to_vec(), &bundle, Usage::ClientAuth),
        Err(VerifyError::Malformed(_))
    ));
}
