#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests"
)]

use proptest::prelude::*;

use super::*;
use crate::image::canonical::{CanonicalError, encode, encode_value};
use crate::image::dsse::{Algorithm, SigningKey};
use crate::image::error::ErrorClass;
use crate::image::test_support::{FULL_TOML, MIN_TOML, ctx, key, sign_payload, sign_toml};

fn trust(keys: &[&SigningKey]) -> TrustedSigners {
    let mut t = TrustedSigners::new();
    for k in keys {
        t.insert(k.public_key().clone());
    }
    t
}

fn verify(bytes: &[u8], signers: &TrustedSigners) -> Result<VerifiedImage, ImageError> {
    verify_envelope(bytes, signers, &SignaturePolicy::default(), &ctx())
}

/// The canonical payload of MIN_TOML as a JSON value, for crafting bad ones.
fn min_value() -> serde_json::Value {
    serde_json::from_slice(&encode(&GoldImage::from_toml(MIN_TOML).unwrap())).unwrap()
}

#[test]
fn round_trip_low_tier() {
    let k = key(Algorithm::Ed25519);
    let bytes = sign_toml(MIN_TOML, &[&k]);
    let v = verify(&bytes, &trust(&[&k])).unwrap();
    assert_eq!(v.image, GoldImage::from_toml(MIN_TOML).unwrap());
    assert_eq!(v.signers, [k.keyid()]);
    assert_eq!(v.envelope, bytes);
    assert_eq!(
        v.payload_sha256,
        hex::encode(Sha256::digest(encode(&v.image)))
    );
}

#[test]
fn high_tier_needs_two_distinct_signers() {
    let (a, b) = (key(Algorithm::Ed25519), key(Algorithm::P256));
    let signers = trust(&[&a, &b]);
    let once = sign_toml(FULL_TOML, &[&a]);
    let err = verify(&once, &signers).unwrap_err();
    assert_eq!(
        err,
        ImageError::TooFewSignatures {
            tier: RiskTier::High,
            required: 2,
            found: 1,
            unknown: vec![]
        }
    );
    assert_eq!(err.class(), ErrorClass::Refused);
    let both = sign_toml(FULL_TOML, &[&a, &b]);
    let v = verify(&both, &signers).unwrap();
    let mut expected = vec![a.keyid().to_owned(), b.keyid().to_owned()];
    expected.sort();
    assert_eq!(v.signers, expected);
}

#[test]
fn same_key_twice_is_refused() {
    let a = key(Algorithm::Ed25519);
    let bytes = sign_toml(FULL_TOML, &[&a, &a]);
    let err = verify(&bytes, &trust(&[&a])).unwrap_err();
    assert_eq!(
        err,
        ImageError::DuplicateSigner {
            keyid: a.keyid().to_owned()
        }
    );
    assert_eq!(err.class(), ErrorClass::Refused);
}

#[test]
fn unknown_signers_do_not_count() {
    let (a, stranger) = (key(Algorithm::Ed25519), key(Algorithm::Ed25519));
    let only_stranger = sign_toml(MIN_TOML, &[&stranger]);
    let err = verify(&only_stranger, &trust(&[&a])).unwrap_err();
    assert_eq!(
        err,
        ImageError::UnknownSigners {
            keyids: vec![stranger.keyid().to_owned()]
        }
    );
    assert_eq!(err.class(), ErrorClass::Refused);

    let mixed = sign_toml(FULL_TOML, &[&a, &stranger]);
    let err = verify(&mixed, &trust(&[&a])).unwrap_err();
    assert!(
        matches!(&err, ImageError::TooFewSignatures { found: 1, unknown, .. } if unknown == &[stranger.keyid()])
    );
    assert!(err.to_string().contains(stranger.keyid()), "{err}");

    let low = sign_toml(MIN_TOML, &[&a, &stranger]);
    let v = verify(&low, &trust(&[&a])).unwrap();
    assert_eq!(v.unknown_signers, [stranger.keyid()]);
}

#[test]
fn bad_signature_from_a_trusted_key_is_an_error() {
    let (a, b) = (key(Algorithm::P256), key(Algorithm::Ed25519));
    let bytes = sign_toml(MIN_TOML, &[&a, &b]);
    let mut env: Envelope = serde_json::from_slice(&bytes).unwrap();
    env.signatures[1].sig = env.signatures[0].sig.clone(); // b's slot, a's signature
    let err = verify(&env.to_json(), &trust(&[&a, &b])).unwrap_err();
    assert_eq!(
        err,
        ImageError::BadSignature {
            keyid: b.keyid().to_owned()
        }
    );
}

#[test]
fn malformed_envelopes() {
    let k = key(Algorithm::Ed25519);
    let signers = trust(&[&k]);
    let good = sign_toml(MIN_TOML, &[&k]);
    let malformed = |bytes: &[u8]| {
        let e = verify(bytes, &signers).unwrap_err();
        assert_eq!(e.class(), ErrorClass::Malformed, "{e}");
        e
    };
    assert!(matches!(
        malformed(&good[..good.len() / 2]),
        ImageError::MalformedEnvelope(_)
    ));
    assert!(matches!(
        malformed(b"not json"),
        ImageError::MalformedEnvelope(_)
    ));
    let missing =
        malformed(br#"{"payloadType":"application/vnd.hallmark.gold-image+json","signatures":[]}"#);
    assert!(
        missing.to_string().contains("missing field `payload`"),
        "{missing}"
    );
    let big = vec![b' '; MAX_ENVELOPE_BYTES + 1];
    assert_eq!(
        malformed(&big),
        ImageError::TooLarge {
            size: MAX_ENVELOPE_BYTES + 1,
            limit: MAX_ENVELOPE_BYTES
        }
    );

    let mut env: Envelope = serde_json::from_slice(&good).unwrap();
    env.payload_type = "application/json".into();
    assert!(matches!(
        malformed(&env.to_json()),
        ImageError::WrongPayloadType { .. }
    ));

    let mut env: Envelope = serde_json::from_slice(&good).unwrap();
    env.payload.push('!');
    assert_eq!(
        malformed(&env.to_json()),
        ImageError::BadBase64 {
            field: "payload".into()
        }
    );

    let mut env: Envelope = serde_json::from_slice(&good).unwrap();
    env.signatures[0].keyid = "abc".into();
    assert_eq!(malformed(&env.to_json()), ImageError::BadKeyId { index: 0 });
}

#[test]
fn payload_problems_are_malformed_and_name_the_field() {
    let k = key(Algorithm::Ed25519);
    let signers = trust(&[&k]);
    let check = |value: serde_json::Value, field: &str| {
        let bytes = sign_payload(&encode_value(&value), &[&k]);
        let err = verify(&bytes, &signers).unwrap_err();
        assert_eq!(err.class(), ErrorClass::Malformed, "{err}");
        match &err {
            ImageError::Payload(CanonicalError::Field(f)) | ImageError::Field(f) => {
                assert_eq!(f.field, field, "{err}")
            }
            other => panic!("{field}: {other:?}"),
        }
    };
    let mut v = min_value();
    v["ttl"] = 5.into();
    check(v, "ttl");
    let mut v = min_value();
    v["spiffe_id"] = "spiffe://other.org/echo".into();
    check(v, "spiffe_id");
    let mut v = min_value();
    v["spiffe_id"] = "spiffe://example.org/echo/".into();
    check(v, "spiffe_id");
    let mut v = min_value();
    v["code"]["sha256"] = serde_json::json!(["0123"]);
    check(v, "code.sha256[0]");
    let mut v = min_value();
    v["x509_ttl"] = 301.into();
    check(v, "x509_ttl");

    let not_canonical = sign_payload(&serde_json::to_vec_pretty(&min_value()).unwrap(), &[&k]);
    assert_eq!(
        verify(&not_canonical, &signers).unwrap_err(),
        ImageError::Payload(CanonicalError::NotCanonical)
    );

    let mut v = min_value();
    v["not_after"] = "2025-12-31T23:59:59Z".into();
    let err = verify(&sign_payload(&encode_value(&v), &[&k]), &signers).unwrap_err();
    assert!(matches!(err, ImageError::Retired { .. }), "{err}");
    assert!(err.to_string().contains("not_after"), "{err}");
}

#[test]
fn ttl_cap_comes_from_the_context() {
    let k = key(Algorithm::Ed25519);
    let bytes = sign_toml(FULL_TOML, &[&k, &key(Algorithm::P256)]);
    let mut signers = trust(&[&k]);
    let policy = SignaturePolicy::new(1, 1, 1, 1).unwrap();
    let mut c = ctx();
    assert!(verify_envelope(&bytes, &signers, &policy, &c).is_ok());
    c.max_svid_ttl = Duration::from_secs(299);
    let err = verify_envelope(&bytes, &signers, &policy, &c).unwrap_err();
    assert!(err.to_string().contains("x509_ttl"), "{err}");
    c.trust_domain = "other.org".parse().unwrap();
    signers.insert(k.public_key().clone());
    assert!(
        verify_envelope(&bytes, &signers, &policy, &c)
            .unwrap_err()
            .to_string()
            .contains("spiffe_id")
    );
}

#[test]
fn policy_refuses_zero() {
    assert!(SignaturePolicy::new(0, 1, 1, 1).is_err());
    assert!(SignaturePolicy::new(1, 1, 1, MAX_SIGNATURES + 1).is_err());
    let p = SignaturePolicy::default();
    let counts: Vec<_> = RiskTier::ALL.iter().map(|t| p.required(*t)).collect();
    assert_eq!(counts, [1, 1, 2, 2]);
}

#[test]
fn trusted_signers_load_pem_files() {
    let dir = tempfile::tempdir().unwrap();
    let k = key(Algorithm::P256);
    let path = dir.path().join("k.pub");
    std::fs::write(&path, k.public_key().to_pem()).unwrap();
    let t = TrustedSigners::load_one(&path).unwrap();
    assert_eq!(t.keyids().collect::<Vec<_>>(), [k.keyid()]);
    let missing = dir.path().join("none.pub");
    let err = TrustedSigners::load_one(&missing).unwrap_err();
    assert!(err.to_string().contains("none.pub"), "{err}");
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn any_flipped_byte_fails(in_sig in any::<bool>(), index in any::<prop::sample::Index>(), bit in 0u8..8) {
        let k = key(Algorithm::Ed25519);
        let signers = trust(&[&k]);
        let bytes = sign_toml(MIN_TOML, &[&k]);
        let mut env: Envelope = serde_json::from_slice(&bytes).unwrap();
        if in_sig {
            let mut sig = dsse::decode_base64(&env.signatures[0].sig).unwrap();
            let i = index.index(sig.len());
            sig[i] ^= 1 << bit;
            env.signatures[0].sig = base64::Engine::encode(&base64::engine::general_purpose::STANDARD, sig);
        } else {
            let mut payload = env.decode_payload().unwrap();
            let i = index.index(payload.len());
            payload[i] ^= 1 << bit;
            env.payload = base64::Engine::encode(&base64::engine::general_purpose::STANDARD, payload);
        }
        let err = verify(&env.to_json(), &signers).unwrap_err();
        prop_assert_eq!(err, ImageError::BadSignature { keyid: k.keyid().to_owned() });
    }
}
