//! Raw cryptographic limits of this machine next to Hallmark's own minting
//! paths, so BENCHMARKS.md can state each figure as a ratio of the limit it
//! is bounded by.
//!
//! - `raw/*`: ECDSA P-256 key generation, signing and verification with
//!   `ring`, and rcgen signing a bare leaf for a public key (the floor of
//!   any X.509-SVID mint).
//! - `hallmark_ca/*`: the issuer's real paths through [`CaManager`]: an
//!   X.509-SVID from a SubjectPublicKeyInfo with the binding extension, a
//!   JWT-SVID with the `hallmark` claim, and the trust bundle as PEM and
//!   SPIFFE JWKS.
//!
//! Every benchmark reports elements (operations) per second.

// A bench crate has no public API to document.
#![allow(missing_docs)]
// Setup failures abort the bench with a message; there is no caller to
// return an error to.
#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::hint::black_box;
use std::time::{Duration, SystemTime};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use rcgen::{
    CertificateParams, DistinguishedName, IsCa, Issuer, KeyPair, PublicKeyData as _, SanType,
    SubjectPublicKeyInfo,
};
use ring::rand::SystemRandom;
use ring::signature::{
    ECDSA_P256_SHA256_ASN1, ECDSA_P256_SHA256_ASN1_SIGNING, EcdsaKeyPair, KeyPair as _,
    UnparsedPublicKey,
};
use serde_json::{Map, Value, json};

use hallmark_ca::id::{SpiffeId, TrustDomain};
use hallmark_ca::jwt::JwtSvidClaims;
use hallmark_ca::key::CaKey;
use hallmark_ca::manager::{CaConfig, CaManager};
use hallmark_ca::x509::{SvidExtension, SvidRequest};

/// About the size of a leaf's to-be-signed bytes: what a CA signs per SVID.
const MESSAGE: [u8; 512] = [0x5a; 512];

/// A binding document of realistic size (DESIGN.md "Credentials").
const BINDING: &str = concat!(
    r#"{"code_sha256":"9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08","#,
    r#""image":"summarizer@1.4.2","model":{"digest":"sha256:2c26b46b68ffc68ff99b453c1d30413413422d706483bfa0f98a5e886266e7ae","#,
    r#""name":"llama","version":"3.1"},"node":"spiffe://example.org/hallmark/agent/join_token/5f1c","#,
    r#""owner":"alice@example.org","risk_tier":"medium"}"#
);

fn raw(c: &mut Criterion) {
    let rng = SystemRandom::new();
    let mut group = c.benchmark_group("raw");
    group.throughput(Throughput::Elements(1));

    group.bench_function("ring_p256_keygen", |b| {
        b.iter(|| EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, &rng).unwrap());
    });

    let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, &rng).unwrap();
    let key =
        EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, pkcs8.as_ref(), &rng).unwrap();
    group.bench_function("ring_p256_sign", |b| {
        b.iter(|| key.sign(&rng, black_box(&MESSAGE)).unwrap());
    });

    let signature = key.sign(&rng, &MESSAGE).unwrap();
    let public = UnparsedPublicKey::new(&ECDSA_P256_SHA256_ASN1, key.public_key().as_ref());
    group.bench_function("ring_p256_verify", |b| {
        b.iter(|| {
            public
                .verify(black_box(&MESSAGE), signature.as_ref())
                .unwrap();
        });
    });

    // rcgen: a CA key and issuer parsed once, then one leaf per iteration for
    // a public key given as SPKI DER, as the issuer receives it.
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::default();
    ca_params.is_ca = IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca_params.subject_alt_names = vec![SanType::URI("spiffe://example.org".try_into().unwrap())];
    let issuer = Issuer::new(ca_params, ca_key);
    let leaf_key = KeyPair::generate().unwrap();
    let spki_der = leaf_key.subject_public_key_info();
    group.bench_function("rcgen_leaf_from_spki", |b| {
        b.iter(|| {
            let public = SubjectPublicKeyInfo::from_der(black_box(&spki_der)).unwrap();
            let mut params = CertificateParams::default();
            params.distinguished_name = DistinguishedName::new();
            params.subject_alt_names = vec![SanType::URI(
                "spiffe://example.org/agents/summarizer".try_into().unwrap(),
            )];
            params.signed_by(&public, &issuer).unwrap()
        });
    });
    group.finish();
}

fn hallmark_ca(c: &mut Criterion) {
    let now = SystemTime::now();
    let td = TrustDomain::new("example.org").unwrap();
    let mut ca = CaManager::generate(CaConfig::new(td.clone()), now).unwrap();
    // Publish a next X.509 CA and JWT key as during rotation, so the bundle
    // holds what it holds half of the time.
    ca.rotate(now + Duration::from_secs(13 * 3600)).unwrap();
    let id = SpiffeId::new(&td, "/agents/summarizer").unwrap();
    let workload_spki = CaKey::generate().unwrap().public_key_der();
    let extensions = [SvidExtension::binding(BINDING.as_bytes())];

    let mut group = c.benchmark_group("hallmark_ca");
    group.throughput(Throughput::Elements(1));

    group.bench_function("x509_svid_mint", |b| {
        let request = SvidRequest {
            spiffe_id: &id,
            public_key_der: &workload_spki,
            ttl: Duration::from_secs(300),
            dns_names: &[],
            extensions: &extensions,
        };
        b.iter(|| ca.mint_x509_svid(black_box(&request), now).unwrap());
    });

    let binding: Value = serde_json::from_str(BINDING).unwrap();
    let mut extra = Map::new();
    extra.insert("hallmark".into(), binding);
    extra.insert("scope".into(), json!("summarize search"));
    let claims = JwtSvidClaims {
        spiffe_id: id.clone(),
        audience: vec!["payments".into()],
        ttl: Duration::from_secs(300),
        extra,
    };
    group.bench_function("jwt_svid_mint", |b| {
        b.iter(|| ca.mint_jwt_svid(black_box(&claims), now).unwrap());
    });

    group.bench_function("workload_key_generate", |b| {
        b.iter(|| CaKey::generate().unwrap());
    });

    group.bench_function("bundle_build", |b| b.iter(|| ca.bundle()));
    let bundle = ca.bundle();
    group.bench_function("bundle_pem", |b| b.iter(|| black_box(&bundle).to_pem()));
    group.bench_function("bundle_jwks", |b| b.iter(|| black_box(&bundle).to_jwks()));
    group.bench_function("bundle_jwt_jwks", |b| {
        b.iter(|| black_box(&bundle).jwt_jwks());
    });
    group.finish();
}

criterion_group!(benches, raw, hallmark_ca);
criterion_main!(benches);
