//! X.509-SVIDs minted by self-signed and upstream-signed CAs, cross-checked
//! with the `spiffe` crate, rustls-webpki and x509-parser.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "test code: a failure is a test failure"
)]

mod common;

use std::time::Duration;

use common::{Workload, id, mint, operator_intermediate, operator_root, t0, td, webpki_verify};
use hallmark_ca::CaError;
use hallmark_ca::id::TrustDomain;
use hallmark_ca::key::CaKey;
use hallmark_ca::manager::{CaConfig, CaManager};
use hallmark_ca::x509::{
    BINDING_EXTENSION_OID, CLOCK_SKEW_BACKDATE, SvidExtension, SvidRequest, UpstreamCa,
    X509Authority, X509Svid, binding_from_cert,
};
use x509_parser::extensions::{GeneralName, ParsedExtension};
use x509_parser::oid_registry::{OID_X509_EXT_KEY_USAGE, OID_X509_EXT_SUBJECT_ALT_NAME};

const BINDING_JSON: &[u8] = br#"{"code_sha256":"ab12","image":"summarizer@1.0.0","model":{"digest":"sha256:00","name":"m","version":"1"},"node":"spiffe://example.org/hallmark/agent/join_token/t1","owner":"alice","risk_tier":"high"}"#;

/// Everything DESIGN.md "Credentials" requires of a leaf, checked with
/// x509-parser, plus the `spiffe` crate and webpki accepting it.
fn check_leaf(svid: &X509Svid, ca: &X509Authority, workload: &Workload, ttl: Duration) {
    let now = t0();
    // Code we did not write accepts it.
    let parsed = spiffe::X509Svid::parse_from_der(&svid.cert_chain.concat(), &workload.pkcs8())
        .expect("spiffe crate parses the svid");
    assert_eq!(parsed.spiffe_id().to_string(), svid.spiffe_id.as_str());
    assert_eq!(parsed.cert_chain().len(), svid.cert_chain.len());
    webpki_verify(
        &svid.cert_chain,
        ca.root_der(),
        webpki::KeyUsage::client_auth(),
        now,
    )
    .unwrap();
    webpki_verify(
        &svid.cert_chain,
        ca.root_der(),
        webpki::KeyUsage::server_auth(),
        now,
    )
    .unwrap();

    let (_, leaf) = x509_parser::parse_x509_certificate(svid.leaf_der()).unwrap();
    // Exactly one URI SAN, the SPIFFE ID.
    let san = leaf.subject_alternative_name().unwrap().unwrap().value;
    let uris: Vec<_> = san
        .general_names
        .iter()
        .filter_map(|n| match n {
            GeneralName::URI(u) => Some(*u),
            _ => None,
        })
        .collect();
    assert_eq!(uris, vec![svid.spiffe_id.as_str()]);
    // Not a CA, and says so.
    let bc = leaf
        .basic_constraints()
        .unwrap()
        .expect("basicConstraints present");
    assert!(!bc.value.ca);
    // keyUsage digitalSignature only, critical.
    let ku_ext = leaf
        .extensions()
        .iter()
        .find(|e| e.oid == OID_X509_EXT_KEY_USAGE)
        .unwrap();
    assert!(ku_ext.critical);
    let ku = leaf.key_usage().unwrap().unwrap().value;
    assert!(ku.digital_signature());
    assert!(!ku.key_cert_sign() && !ku.crl_sign());
    // EKU serverAuth + clientAuth.
    let eku = leaf.extended_key_usage().unwrap().unwrap().value;
    assert!(eku.server_auth && eku.client_auth);
    // 128-bit positive serial, reported in the same form.
    let serial = leaf.raw_serial();
    let significant: Vec<u8> = serial.iter().copied().skip_while(|b| *b == 0).collect();
    assert_eq!(significant.len(), 16, "serial is 128 bits");
    assert_eq!(svid.serial, hex::encode(&significant));
    assert_eq!(
        svid.serial,
        hallmark_ca::tls::leaf_serial(svid.leaf_der()).unwrap()
    );
    // The node API's single parse gives the same ID and serial.
    let (id, serial) = hallmark_ca::tls::peer_id_and_serial(svid.leaf_der()).unwrap();
    assert_eq!(id, svid.spiffe_id);
    assert_eq!(serial, svid.serial);
    // authorityKeyIdentifier = the CA's subjectKeyIdentifier.
    let (_, ca_cert) = x509_parser::parse_x509_certificate(ca.cert_der()).unwrap();
    let ski = ca_cert
        .extensions()
        .iter()
        .find_map(|e| match e.parsed_extension() {
            ParsedExtension::SubjectKeyIdentifier(k) => Some(k.0.to_vec()),
            _ => None,
        })
        .unwrap();
    let aki = leaf
        .extensions()
        .iter()
        .find_map(|e| match e.parsed_extension() {
            ParsedExtension::AuthorityKeyIdentifier(a) => {
                a.key_identifier.as_ref().map(|k| k.0.to_vec())
            }
            _ => None,
        })
        .expect("authorityKeyIdentifier present");
    assert_eq!(aki, ski);
    // Validity within the CA's and within the TTL.
    let nb = leaf.validity().not_before.timestamp();
    let na = leaf.validity().not_after.timestamp();
    let ca_nb = ca_cert.validity().not_before.timestamp();
    let ca_na = ca_cert.validity().not_after.timestamp();
    assert!(nb >= ca_nb && na <= ca_na);
    let now_s = now.duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64;
    assert!(nb >= now_s - 60 && nb <= now_s);
    assert!(na <= now_s + ttl.as_secs() as i64);
    assert_eq!(
        svid.not_after,
        std::time::UNIX_EPOCH + Duration::from_secs(na as u64)
    );
    assert_eq!(
        svid.not_before,
        std::time::UNIX_EPOCH + Duration::from_secs(nb as u64)
    );
}

#[test]
fn self_signed_ca_mints_spec_conformant_svids() {
    let now = t0();
    let ca = X509Authority::self_signed(
        &td(),
        CaKey::generate().unwrap(),
        Duration::from_secs(86_400),
        now,
    )
    .unwrap();
    assert!(ca.is_self_signed());
    assert_eq!(ca.root_der(), ca.cert_der());
    assert!(ca.chain_der().is_empty());
    assert_eq!(ca.not_before(), now - CLOCK_SKEW_BACKDATE);
    assert_eq!(ca.not_after(), now + Duration::from_secs(86_400));
    // The CA certificate carries the trust domain ID as its URI SAN.
    let (_, ca_cert) = x509_parser::parse_x509_certificate(ca.cert_der()).unwrap();
    let san = ca_cert.subject_alternative_name().unwrap().unwrap().value;
    assert!(matches!(
        san.general_names[..],
        [GeneralName::URI("spiffe://example.org")]
    ));
    let ku = ca_cert.key_usage().unwrap().unwrap().value;
    assert!(ku.key_cert_sign() && ku.crl_sign());

    let workload = Workload::new();
    let ttl = Duration::from_secs(300);
    let svid = mint(&ca, &id("/agents/summarizer"), &workload, ttl, &[], now);
    // A self-signed root is not sent in the chain.
    assert_eq!(svid.cert_chain.len(), 1);
    check_leaf(&svid, &ca, &workload, ttl);
    // Minting right at CA creation: the backdate does not precede the CA.
    assert_eq!(svid.not_before, ca.not_before());
}

#[test]
fn dns_names_follow_the_uri_san() {
    let now = t0();
    let ca = X509Authority::self_signed(
        &td(),
        CaKey::generate().unwrap(),
        Duration::from_secs(3600),
        now,
    )
    .unwrap();
    let workload = Workload::new();
    let dns = vec!["api.internal".to_owned(), "api".to_owned()];
    let spiffe_id = id("/api");
    let svid = ca
        .mint_svid(
            &SvidRequest {
                spiffe_id: &spiffe_id,
                public_key_der: &workload.spki(),
                ttl: Duration::from_secs(60),
                dns_names: &dns,
                extensions: &[],
            },
            now,
        )
        .unwrap();
    let (_, leaf) = x509_parser::parse_x509_certificate(svid.leaf_der()).unwrap();
    let names = &leaf
        .subject_alternative_name()
        .unwrap()
        .unwrap()
        .value
        .general_names;
    assert_eq!(names.len(), 3);
    assert!(matches!(
        names[0],
        GeneralName::URI("spiffe://example.org/api")
    ));
    assert!(matches!(names[1], GeneralName::DNSName("api.internal")));
    spiffe::X509Svid::parse_from_der(&svid.cert_chain.concat(), &workload.pkcs8()).unwrap();
}

#[test]
fn binding_extension_round_trips_byte_for_byte() {
    let now = t0();
    let ca = X509Authority::self_signed(
        &td(),
        CaKey::generate().unwrap(),
        Duration::from_secs(3600),
        now,
    )
    .unwrap();
    let workload = Workload::new();
    let svid = mint(
        &ca,
        &id("/agents/summarizer"),
        &workload,
        Duration::from_secs(300),
        &[SvidExtension::binding(BINDING_JSON)],
        now,
    );
    // x509-parser finds the extension by OID, non-critical, OCTET STRING inside.
    let (_, leaf) = x509_parser::parse_x509_certificate(svid.leaf_der()).unwrap();
    let ext = leaf
        .extensions()
        .iter()
        .find(|e| {
            e.oid
                .iter()
                .is_some_and(|arcs| arcs.eq(BINDING_EXTENSION_OID.iter().copied()))
        })
        .expect("binding extension present");
    assert!(!ext.critical);
    let (_, octets) = <x509_parser::asn1_rs::OctetString<'_> as x509_parser::asn1_rs::FromDer<
        '_,
        x509_parser::asn1_rs::Error,
    >>::from_der(ext.value)
    .unwrap();
    assert_eq!(octets.as_cow().as_ref(), BINDING_JSON);
    assert_eq!(
        binding_from_cert(svid.leaf_der()).unwrap().as_deref(),
        Some(BINDING_JSON)
    );
    // The spiffe crate and webpki still accept it (unknown non-critical extension).
    check_leaf(&svid, &ca, &workload, Duration::from_secs(300));
    // No binding: None.
    let plain = mint(
        &ca,
        &id("/plain"),
        &workload,
        Duration::from_secs(60),
        &[],
        now,
    );
    assert_eq!(binding_from_cert(plain.leaf_der()).unwrap(), None);
    // Sanity: the SAN extension is not critical because the subject is not empty.
    let san = leaf
        .extensions()
        .iter()
        .find(|e| e.oid == OID_X509_EXT_SUBJECT_ALT_NAME)
        .unwrap();
    assert!(!san.critical);
}

#[test]
fn leaf_never_outlives_the_ca_and_ttl_is_capped_by_the_manager() {
    let now = t0();
    let ca = X509Authority::self_signed(
        &td(),
        CaKey::generate().unwrap(),
        Duration::from_secs(600),
        now,
    )
    .unwrap();
    let workload = Workload::new();
    let later = now + Duration::from_secs(500);
    let svid = mint(
        &ca,
        &id("/w"),
        &workload,
        Duration::from_secs(3600),
        &[],
        later,
    );
    assert_eq!(svid.not_after, ca.not_after());

    let mut config = CaConfig::new(td());
    config.max_svid_ttl = Duration::from_secs(120);
    let manager = CaManager::generate(config, now).unwrap();
    let spiffe_id = id("/w");
    let spki = workload.spki();
    let req = SvidRequest {
        spiffe_id: &spiffe_id,
        public_key_der: &spki,
        ttl: Duration::from_secs(3600),
        dns_names: &[],
        extensions: &[],
    };
    let capped = manager.mint_x509_svid(&req, now).unwrap();
    assert_eq!(capped.not_after, now + Duration::from_secs(120));
    let node = manager.mint_node_svid(&req, now).unwrap();
    assert_eq!(node.not_after, now + Duration::from_secs(3600));
}

#[test]
fn intermediate_under_a_single_certificate_upstream() {
    let now = t0();
    let upstream_ca = operator_root(
        &rcgen::PKCS_ECDSA_P384_SHA384,
        now + Duration::from_secs(7200),
    );
    let upstream = UpstreamCa::from_pem(&upstream_ca.cert_pem, &upstream_ca.key_pem).unwrap();
    assert_eq!(upstream.root_der(), upstream_ca.root_der.as_slice());
    // TTL longer than the upstream's remaining life: capped.
    let ca = X509Authority::signed_by_upstream(
        &td(),
        CaKey::generate().unwrap(),
        &upstream,
        Duration::from_secs(86_400),
        now,
    )
    .unwrap();
    assert_eq!(ca.not_after(), upstream_ca.not_after);
    assert!(!ca.is_self_signed());
    assert_eq!(ca.root_der(), upstream_ca.root_der.as_slice());
    assert_eq!(ca.chain_der(), std::slice::from_ref(&upstream_ca.root_der));

    let workload = Workload::new();
    let svid = mint(
        &ca,
        &id("/agents/a"),
        &workload,
        Duration::from_secs(300),
        &[],
        now,
    );
    // Leaf + our intermediate; the upstream root is the anchor, not sent.
    assert_eq!(
        svid.cert_chain,
        vec![svid.cert_chain[0].clone(), ca.cert_der().to_vec()]
    );
    check_leaf(&svid, &ca, &workload, Duration::from_secs(300));
}

#[test]
fn intermediate_under_an_upstream_intermediate_sends_the_whole_chain() {
    let now = t0();
    let op = operator_intermediate(now + Duration::from_secs(30 * 86_400));
    let upstream = UpstreamCa::from_pem(&op.cert_pem, &op.key_pem).unwrap();
    assert_eq!(upstream.chain().len(), 2);
    assert_eq!(upstream.root_der(), op.root_der.as_slice());
    let ca = X509Authority::signed_by_upstream(
        &td(),
        CaKey::generate().unwrap(),
        &upstream,
        Duration::from_secs(86_400),
        now,
    )
    .unwrap();
    let workload = Workload::new();
    let svid = mint(
        &ca,
        &id("/agents/b"),
        &workload,
        Duration::from_secs(300),
        &[],
        now,
    );
    assert_eq!(
        svid.cert_chain.len(),
        3,
        "leaf, hallmark ca, operator intermediate"
    );
    assert_eq!(svid.cert_chain[2], upstream.cert_der());
    check_leaf(&svid, &ca, &workload, Duration::from_secs(300));

    // Restoring from parts gives the same chain behaviour.
    let restored = X509Authority::from_parts(
        ca.cert_der().to_vec(),
        ca.key().clone(),
        ca.chain_der().to_vec(),
    )
    .unwrap();
    let again = mint(
        &restored,
        &id("/agents/b"),
        &workload,
        Duration::from_secs(300),
        &[],
        now,
    );
    assert_eq!(again.cert_chain[1..], svid.cert_chain[1..]);
    webpki_verify(
        &again.cert_chain,
        &op.root_der,
        webpki::KeyUsage::client_auth(),
        now,
    )
    .unwrap();
}

#[test]
fn upstream_must_be_a_ca_and_match_its_key() {
    let op = operator_root(
        &rcgen::PKCS_ECDSA_P256_SHA256,
        t0() + Duration::from_secs(3600),
    );
    let other = operator_root(
        &rcgen::PKCS_ECDSA_P256_SHA256,
        t0() + Duration::from_secs(3600),
    );
    assert!(matches!(
        UpstreamCa::from_pem(&op.cert_pem, &other.key_pem),
        Err(CaError::KeyMismatch)
    ));
    // A leaf certificate is not a CA.
    let key = rcgen::KeyPair::generate().unwrap();
    let leaf = rcgen::CertificateParams::new(vec!["leaf.example".to_owned()])
        .unwrap()
        .self_signed(&key)
        .unwrap();
    assert!(matches!(
        UpstreamCa::from_pem(&leaf.pem(), &key.serialize_pem()),
        Err(CaError::NotACa(_))
    ));
    assert!(matches!(
        UpstreamCa::from_pem("", &key.serialize_pem()),
        Err(CaError::InvalidPem(_))
    ));
}

#[test]
fn minting_refuses_bad_requests() {
    let now = t0();
    let ca = X509Authority::self_signed(
        &td(),
        CaKey::generate().unwrap(),
        Duration::from_secs(3600),
        now,
    )
    .unwrap();
    let workload = Workload::new();
    let spki = workload.spki();
    let good = id("/w");
    let req = |spiffe_id, public_key_der, ttl| SvidRequest {
        spiffe_id,
        public_key_der,
        ttl,
        dns_names: &[],
        extensions: &[],
    };
    assert!(matches!(
        ca.mint_svid(&req(&good, &spki, Duration::ZERO), now),
        Err(CaError::ZeroTtl)
    ));
    let foreign = hallmark_ca::id::SpiffeId::parse("spiffe://other.org/w").unwrap();
    assert!(matches!(
        ca.mint_svid(&req(&foreign, &spki, Duration::from_secs(60)), now),
        Err(CaError::WrongTrustDomain { .. })
    ));
    assert!(matches!(
        ca.mint_svid(&req(&good, b"not a key", Duration::from_secs(60)), now),
        Err(CaError::InvalidPublicKey(_))
    ));
    let td_id = td().id();
    assert!(matches!(
        ca.mint_svid(&req(&td_id, &spki, Duration::from_secs(60)), now),
        Err(CaError::TrustDomainIdAsLeaf)
    ));
    assert!(matches!(
        ca.mint_svid(
            &req(&good, &spki, Duration::from_secs(60)),
            now + Duration::from_secs(3600)
        ),
        Err(CaError::AuthorityNotValid { .. })
    ));
}

#[test]
fn restore_refuses_a_key_that_is_not_the_certificates() {
    let now = t0();
    let ca = X509Authority::self_signed(
        &td(),
        CaKey::generate().unwrap(),
        Duration::from_secs(3600),
        now,
    )
    .unwrap();
    let wrong = CaKey::generate().unwrap();
    assert!(matches!(
        X509Authority::from_parts(ca.cert_der().to_vec(), wrong, Vec::new()),
        Err(CaError::KeyMismatch)
    ));
    let restored =
        X509Authority::from_parts(ca.cert_der().to_vec(), ca.key().clone(), Vec::new()).unwrap();
    assert_eq!(
        restored.trust_domain(),
        &TrustDomain::new("example.org").unwrap()
    );
    assert_eq!(restored.not_after(), ca.not_after());
}

#[test]
fn serials_are_unique() {
    let now = t0();
    let ca = X509Authority::self_signed(
        &td(),
        CaKey::generate().unwrap(),
        Duration::from_secs(3600),
        now,
    )
    .unwrap();
    let workload = Workload::new();
    let mut seen = std::collections::HashSet::new();
    for _ in 0..200 {
        let svid = mint(&ca, &id("/w"), &workload, Duration::from_secs(60), &[], now);
        assert_eq!(svid.serial.len(), 32);
        assert!(seen.insert(svid.serial));
    }
}
