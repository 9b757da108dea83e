#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests"
)]

use proptest::prelude::*;

use super::*;
use crate::image::test_support::key;

#[test]
fn pae_matches_the_spec_example() {
    // The worked example of the DSSE protocol description.
    assert_eq!(
        pae("http://example.com/HelloWorld", b"hello world"),
        b"DSSEv1 29 http://example.com/HelloWorld 11 hello world"
    );
    assert_eq!(pae("", b""), b"DSSEv1 0  0 ");
}

#[test]
fn keys_sign_and_verify_both_algorithms() {
    for alg in [Algorithm::Ed25519, Algorithm::P256] {
        let k = key(alg);
        assert_eq!(k.algorithm(), alg);
        let sig = k.sign(b"message").unwrap();
        assert!(k.public_key().verify(b"message", &sig));
        assert!(!k.public_key().verify(b"messagf", &sig));
        assert!(
            !key(alg).public_key().verify(b"message", &sig),
            "another key"
        );
        // keyid is the sha256 of the SPKI DER.
        assert_eq!(
            k.keyid(),
            hex::encode(Sha256::digest(k.public_key().spki_der()))
        );
    }
}

#[test]
fn pem_round_trips() {
    for alg in [Algorithm::Ed25519, Algorithm::P256] {
        let der = SigningKey::generate_pkcs8(alg).unwrap();
        let pem_text = SigningKey::pkcs8_pem(&der);
        assert!(pem_text.starts_with("-----BEGIN PRIVATE KEY-----"));
        let k = SigningKey::from_pem(&pem_text).unwrap();
        let public = PublicKey::from_pem(&k.public_key().to_pem()).unwrap();
        assert_eq!(&public, k.public_key());
        assert!(
            k.public_key()
                .to_pem()
                .starts_with("-----BEGIN PUBLIC KEY-----")
        );
    }
    assert_eq!(
        PublicKey::from_pem("garbage").unwrap_err(),
        KeyError::Pem("PUBLIC KEY")
    );
    let der = SigningKey::generate_pkcs8(Algorithm::P256).unwrap();
    assert!(
        PublicKey::from_pem(&SigningKey::pkcs8_pem(&der)).is_err(),
        "a private key is not a public key"
    );
    assert!(matches!(
        SigningKey::from_pkcs8_der(b"nope"),
        Err(KeyError::BadPrivateKey)
    ));
}

#[test]
fn debug_redacts_the_private_key() {
    let der = SigningKey::generate_pkcs8(Algorithm::Ed25519).unwrap();
    let k = SigningKey::from_pkcs8_der(&der).unwrap();
    let shown = format!("{k:?}");
    assert!(shown.contains("<redacted>"), "{shown}");
    assert!(
        !shown.contains(&hex::encode(&der[der.len() - 32..])),
        "{shown}"
    );
    assert!(!shown.contains(&STANDARD.encode(&der)), "{shown}");
}

#[test]
fn envelope_json_shape() {
    let k = key(Algorithm::Ed25519);
    let env = Envelope::sign(b"{}", &k).unwrap();
    let v: serde_json::Value = serde_json::from_slice(&env.to_json()).unwrap();
    assert_eq!(v["payloadType"], PAYLOAD_TYPE);
    assert_eq!(v["payload"], "e30=");
    assert_eq!(v["signatures"][0]["keyid"], k.keyid());
    let sig = STANDARD
        .decode(v["signatures"][0]["sig"].as_str().unwrap())
        .unwrap();
    assert!(k.public_key().verify(&pae(PAYLOAD_TYPE, b"{}"), &sig));
}

proptest! {
    #[test]
    fn pae_is_stable_and_length_prefixed(t in ".{0,20}", body in prop::collection::vec(any::<u8>(), 0..64)) {
        let out = pae(&t, &body);
        prop_assert_eq!(&out, &pae(&t, &body));
        let head = format!("DSSEv1 {} {} {} ", t.len(), t, body.len());
        prop_assert_eq!(&out[..head.len()], head.as_bytes());
        prop_assert_eq!(&out[head.len()..], &body[..]);
    }

    #[test]
    fn pae_is_injective(a in ".{0,6}", b in prop::collection::vec(any::<u8>(), 0..8),
                        c in ".{0,6}", d in prop::collection::vec(any::<u8>(), 0..8)) {
        prop_assume!((&a, &b) != (&c, &d));
        prop_assert_ne!(pae(&a, &b), pae(&c, &d));
    }
}
