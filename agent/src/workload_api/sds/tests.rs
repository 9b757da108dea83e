#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests"
)]

use std::collections::HashMap;

use hallmark_proto::workload::X509svid;

use super::*;

/// A self-signed certificate (any certificate will do: SDS re-encodes).
fn cert(name: &str) -> Vec<u8> {
    let key = rcgen::KeyPair::generate().unwrap();
    let params = rcgen::CertificateParams::new(vec![name.to_owned()]).unwrap();
    params.self_signed(&key).unwrap().der().to_vec()
}

fn response() -> X509svidResponse {
    let (leaf, intermediate, root, other_root) =
        (cert("leaf"), cert("mid"), cert("root"), cert("other"));
    let svid = |id: &str| X509svid {
        spiffe_id: id.to_owned(),
        x509_svid: [leaf.clone(), intermediate.clone()].concat(),
        x509_svid_key: b"pkcs8".to_vec(),
        bundle: root.clone(),
        hint: String::new(),
    };
    X509svidResponse {
        svids: vec![
            svid("spiffe://example.org/a"),
            svid("spiffe://example.org/b"),
        ],
        crl: vec![],
        federated_bundles: HashMap::from([("spiffe://partner.org".to_owned(), other_root)]),
    }
}

fn names(secrets: &[Secret]) -> Vec<&str> {
    secrets.iter().map(|s| s.name.as_str()).collect()
}

/// The inline bytes of a data source (all the agent sends).
fn inline_bytes(source: Option<&DataSource>) -> Vec<u8> {
    match source.and_then(|s| s.specifier.as_ref()) {
        Some(data_source::Specifier::InlineBytes(b)) => b.clone(),
        other => panic!("{other:?}"),
    }
}

/// A TLS certificate's chain and key, as PEM text.
fn certificate_of(secret: &Secret) -> (String, String) {
    let Some(secret::Type::TlsCertificate(tls)) = &secret.r#type else {
        panic!("{secret:?}")
    };
    let text = |s| String::from_utf8(inline_bytes(s)).unwrap();
    (
        text(tls.certificate_chain.as_ref()),
        text(tls.private_key.as_ref()),
    )
}

#[test]
fn default_names_and_ids_select_svids_and_bundles() {
    let settings = SdsSettings::default();
    let current = response();
    let (found, unknown) = secrets(
        &settings,
        &[
            "default".into(),
            "ROOTCA".into(),
            "spiffe://example.org/b".into(),
            "spiffe://partner.org".into(),
            "spiffe://example.org".into(),
            "nope".into(),
            "default".into(),
        ],
        &current,
    );
    assert_eq!(
        names(&found),
        [
            "default",
            "ROOTCA",
            "spiffe://example.org/b",
            "spiffe://partner.org",
            "spiffe://example.org"
        ]
    );
    assert_eq!(unknown, ["nope"]);
    // The chain is every certificate, leaf first, as PEM; the key PKCS#8.
    let (chain, key) = certificate_of(&found[0]);
    let blocks = pem::parse_many(&chain).unwrap();
    assert_eq!(blocks.len(), 2);
    assert_eq!(
        blocks[0].contents(),
        &current.svids[0].x509_svid[..blocks[0].contents().len()]
    );
    assert_eq!(
        pem::parse(key).unwrap().contents(),
        current.svids[0].x509_svid_key.as_slice()
    );
    let Some(secret::Type::ValidationContext(ctx)) = &found[1].r#type else {
        panic!()
    };
    let ca = inline_bytes(ctx.trusted_ca.as_ref());
    assert_eq!(
        pem::parse(ca).unwrap().contents(),
        current.svids[0].bundle.as_slice()
    );
}

#[test]
fn no_names_is_every_svid_and_bundle_by_id() {
    let (found, unknown) = secrets(&SdsSettings::default(), &[], &response());
    assert!(unknown.is_empty());
    assert_eq!(
        names(&found),
        [
            "spiffe://example.org",
            "spiffe://example.org/a",
            "spiffe://example.org/b",
            "spiffe://partner.org"
        ]
    );
}

#[test]
fn configured_names_replace_the_defaults() {
    let settings = SdsSettings {
        default_svid_name: "workload-cert".into(),
        default_bundle_name: "trust".into(),
    };
    let (found, unknown) = secrets(
        &settings,
        &["workload-cert".into(), "trust".into(), "default".into()],
        &response(),
    );
    assert_eq!(names(&found), ["workload-cert", "trust"]);
    assert_eq!(unknown, ["default"]);
}

#[test]
fn responses_carry_secrets_as_any_of_the_secret_type() {
    let (found, _) = secrets(&SdsSettings::default(), &["default".into()], &response());
    let response = discovery_response(found.clone(), 3, "7");
    assert_eq!(response.type_url, SECRET_TYPE_URL);
    assert_eq!(
        (response.version_info.as_str(), response.nonce.as_str()),
        ("3", "7")
    );
    assert_eq!(response.resources.len(), 1);
    assert_eq!(response.resources[0].type_url, SECRET_TYPE_URL);
    assert_eq!(
        Secret::decode(response.resources[0].value.as_slice()).unwrap(),
        found[0]
    );
    assert!(check_type("").is_ok() && check_type(SECRET_TYPE_URL).is_ok());
    let refusal = check_type("type.googleapis.com/envoy.config.cluster.v3.Cluster").unwrap_err();
    assert_eq!(refusal.code(), tonic::Code::InvalidArgument);
    assert!(refusal.message().contains("secret discovery service"));
    assert!(same_names(
        &["a".into(), "b".into(), "a".into()],
        &["b".into(), "a".into()]
    ));
    assert!(!same_names(&["a".into()], &["a".into(), "b".into()]));
    assert_eq!(
        trust_domain_id("spiffe://example.org/x/y").as_deref(),
        Some("spiffe://example.org")
    );
    assert_eq!(trust_domain_id("https://example.org/x"), None);
}
