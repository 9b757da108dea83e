//! Every registration refusal over the admin API, in process: the exact
//! status code, a message naming what to fix, a refusal in the audit trail,
//! and nothing stored.

#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use hallmark_server::events::SecurityEvent;
use hallmark_server::image::SigningKey;
use tonic::Code;

use support::{Issuer, edited_payload, key, manifest, payload, sign, tamper};

/// Registers `envelope`, expects `code` with `fragment` in the message,
/// then checks that nothing was stored and that the refusal was audited.
async fn refused(issuer: &mut Issuer, envelope: Vec<u8>, code: Code, fragment: &str) {
    let before = issuer.list().await;
    let status = issuer.register(envelope).await.unwrap_err();
    assert_eq!(status.code(), code, "{}", status.message());
    assert!(
        status.message().contains(fragment),
        "{:?} does not contain {fragment:?}",
        status.message()
    );
    assert_eq!(issuer.list().await, before, "a refusal stored something");
    let last = issuer.events.events().into_iter().rev().find(|e| {
        matches!(
            e,
            SecurityEvent::ImageRegistered { .. } | SecurityEvent::ImageRegistrationRefused { .. }
        )
    });
    match last {
        Some(SecurityEvent::ImageRegistrationRefused {
            code: audited,
            reason,
            uid,
            ..
        }) => {
            assert_eq!(audited, format!("{code:?}"));
            assert_eq!(reason, status.message());
            assert!(uid.is_some(), "the caller's uid is audited");
        }
        other => panic!("no refusal audited: {other:?}"),
    }
}

struct Keys {
    alice: SigningKey,
    bob: SigningKey,
    mallory: SigningKey,
}

async fn issuer() -> (Issuer, Keys) {
    let keys = Keys {
        alice: key(),
        bob: key(),
        mallory: key(),
    };
    let issuer = Issuer::start(&[&keys.alice, &keys.bob]).await;
    (issuer, keys)
}

#[tokio::test]
async fn signature_refusals_are_permission_denied() {
    let (mut issuer, k) = issuer().await;
    let low = payload(&manifest("agent-a", "low", ""));
    let high = payload(&manifest("agent-h", "high", ""));

    // A trusted key's signature that does not verify.
    let good = sign(&low, &[&k.alice]);
    let bad_sig = tamper(&good, |e| {
        let sig = e["signatures"][0]["sig"].as_str().unwrap().to_owned();
        let flipped = if sig.starts_with('A') { "B" } else { "A" };
        e["signatures"][0]["sig"] = format!("{flipped}{}", &sig[1..]).into();
    });
    refused(
        &mut issuer,
        bad_sig,
        Code::PermissionDenied,
        "does not verify",
    )
    .await;
    // Signed by a key the issuer does not trust.
    refused(
        &mut issuer,
        sign(&low, &[&k.mallory]),
        Code::PermissionDenied,
        "no signature is from a trusted signer",
    )
    .await;
    // The same key twice counts once, and is refused outright.
    let twice = tamper(&sign(&high, &[&k.alice]), |e| {
        let first = e["signatures"][0].clone();
        e["signatures"].as_array_mut().unwrap().push(first);
    });
    refused(
        &mut issuer,
        twice,
        Code::PermissionDenied,
        "signed more than once",
    )
    .await;
    // Too few for the tier; an untrusted second signature does not help.
    refused(
        &mut issuer,
        sign(&high, &[&k.alice]),
        Code::PermissionDenied,
        "risk tier high needs 2 distinct trusted signatures, found 1",
    )
    .await;
    refused(
        &mut issuer,
        sign(&high, &[&k.alice, &k.mallory]),
        Code::PermissionDenied,
        "ignored untrusted keyids",
    )
    .await;

    // Two distinct trusted signers: accepted.
    let (image, created) = issuer
        .register(sign(&high, &[&k.alice, &k.bob]))
        .await
        .unwrap();
    assert!(created);
    let mut expected = vec![k.alice.keyid().to_owned(), k.bob.keyid().to_owned()];
    expected.sort();
    assert_eq!(image.signers, expected);
    assert_eq!(issuer.list().await.len(), 1);
}

#[tokio::test]
async fn malformed_envelopes_are_invalid_argument() {
    let (mut issuer, k) = issuer().await;
    let low = payload(&manifest("agent-a", "low", ""));
    let good = sign(&low, &[&k.alice]);

    let wrong_type = tamper(&good, |e| e["payloadType"] = "application/json".into());
    refused(
        &mut issuer,
        wrong_type,
        Code::InvalidArgument,
        "payloadType",
    )
    .await;
    refused(
        &mut issuer,
        good[..good.len() / 2].to_vec(),
        Code::InvalidArgument,
        "not a DSSE JSON envelope",
    )
    .await;
    refused(
        &mut issuer,
        b"name = \"toml, not json\"".to_vec(),
        Code::InvalidArgument,
        "not a DSSE JSON envelope",
    )
    .await;
    let unknown_envelope_field = tamper(&good, |e| e["extra"] = 1.into());
    refused(
        &mut issuer,
        unknown_envelope_field,
        Code::InvalidArgument,
        "extra",
    )
    .await;
    let mut big = good.clone();
    big.resize(70 * 1024, b' ');
    refused(
        &mut issuer,
        big,
        Code::InvalidArgument,
        "the limit is 65536",
    )
    .await;
    assert!(issuer.list().await.is_empty());
}

#[tokio::test]
async fn invalid_payloads_are_invalid_argument_naming_the_field() {
    let (mut issuer, k) = issuer().await;
    let toml = manifest("agent-a", "low", "");
    let signed = |payload: &[u8]| sign(payload, &[&k.alice]);

    // Valid image, not canonical: whitespace.
    let pretty = serde_json::to_vec_pretty(
        &serde_json::from_slice::<serde_json::Value>(&payload(&toml)).unwrap(),
    )
    .unwrap();
    refused(
        &mut issuer,
        signed(&pretty),
        Code::InvalidArgument,
        "not canonical JSON",
    )
    .await;
    let unknown = edited_payload(&toml, |v| v["colour"] = "blue".into());
    refused(
        &mut issuer,
        signed(&unknown),
        Code::InvalidArgument,
        "colour",
    )
    .await;
    let digest = edited_payload(&toml, |v| v["code"]["sha256"][0] = "ABC123".into());
    refused(
        &mut issuer,
        signed(&digest),
        Code::InvalidArgument,
        "code.sha256",
    )
    .await;
    let model = edited_payload(&manifest("agent-m", "low", ""), |v| {
        v["model"] = serde_json::json!({"name": "m", "version": "1", "digest": "sha256:00"});
    });
    refused(
        &mut issuer,
        signed(&model),
        Code::InvalidArgument,
        "model.digest",
    )
    .await;
    let foreign = payload(
        &manifest("agent-a", "low", "")
            .replace("spiffe://example.org/agent-a", "spiffe://other.org/agent-a"),
    );
    refused(
        &mut issuer,
        signed(&foreign),
        Code::InvalidArgument,
        "spiffe_id: spiffe://other.org/agent-a is not in trust domain example.org",
    )
    .await;
    let malformed_id = edited_payload(&toml, |v| v["spiffe_id"] = "https://example.org/x".into());
    refused(
        &mut issuer,
        signed(&malformed_id),
        Code::InvalidArgument,
        "spiffe_id",
    )
    .await;
    let ttl = payload(&manifest("agent-a", "low", "x509_ttl = 301"));
    refused(
        &mut issuer,
        signed(&ttl),
        Code::InvalidArgument,
        "x509_ttl: 301 seconds exceeds the issuer's max_svid_ttl of 300 seconds",
    )
    .await;
    // The issuer's clock says 2026-01-01.
    let past = payload(&manifest("agent-a", "low", "").replace("2030-12-31", "2025-06-30"));
    refused(
        &mut issuer,
        signed(&past),
        Code::InvalidArgument,
        "not_after: 2025-06-30",
    )
    .await;
    assert!(issuer.list().await.is_empty());
}

#[tokio::test]
async fn registration_without_trusted_signers_is_a_failed_precondition() {
    let alice = key();
    let mut issuer = Issuer::start(&[]).await;
    refused(
        &mut issuer,
        sign(&payload(&manifest("agent-a", "low", "")), &[&alice]),
        Code::FailedPrecondition,
        "set images.trusted_signers in server.toml",
    )
    .await;
}

#[tokio::test]
async fn bidi_and_invisible_controls_in_text_fields_are_refused_naming_the_field() {
    let (mut issuer, k) = issuer().await;
    let toml = manifest("agent-a", "low", "");
    let signed = |payload: &[u8]| sign(payload, &[&k.alice]);
    // U+202E makes "alice@example.org\u{202E}gro.evil" display as
    // "alice@example.orglive.org": a signer approves what they do not see.
    for (field, value, shown) in [
        ("owner", "alice@example.org\u{202E}gro.evil", "U+202E"),
        ("owner", "al\u{200F}ice", "U+200F"),
        ("purpose", "reads \u{2066}invoices\u{2069}", "U+2066"),
        ("purpose", "tests\u{061C}", "U+061C"),
        ("purpose", "tests\u{2028}approved", "U+2028"),
        ("owner", "al\u{200B}ice", "U+200B"),
    ] {
        let edited = edited_payload(&toml, |v| v[field] = value.into());
        refused(
            &mut issuer,
            signed(&edited),
            Code::InvalidArgument,
            &format!("field {field}: contains {shown}"),
        )
        .await;
    }
    let model = edited_payload(&toml, |v| {
        v["model"] = serde_json::json!({
            "name": "llama\u{202D}", "version": "1",
            "digest": format!("sha256:{}", "2".repeat(64)),
        });
    });
    refused(
        &mut issuer,
        signed(&model),
        Code::InvalidArgument,
        "field model.name: contains U+202D",
    )
    .await;
    let scopes = edited_payload(&toml, |v| v["scopes"] = serde_json::json!(["pay\u{202E}"]));
    refused(
        &mut issuer,
        signed(&scopes),
        Code::InvalidArgument,
        "scopes[0]",
    )
    .await;
    // Scripts that need joiners (ZWNJ in Persian names) are not refused.
    let joiner = edited_payload(&toml, |v| v["owner"] = "\u{0645}\u{200C}\u{0646}".into());
    issuer.register(signed(&joiner)).await.unwrap();
}

#[tokio::test]
async fn non_canonical_and_numerically_equal_versions_are_refused() {
    let (mut issuer, k) = issuer().await;
    let signed = |payload: &[u8]| sign(payload, &[&k.alice]);
    let with_version = |version: &str| {
        edited_payload(&manifest("agent-v", "low", ""), |v| {
            v["version"] = version.into();
        })
    };
    issuer
        .register(signed(&with_version("1.0.0")))
        .await
        .unwrap();
    // Leading zeros: relying parties (`hallmark::version`) read 1.0.00 as
    // 1.0.0, so it is refused with the form to write instead.
    refused(
        &mut issuer,
        signed(&with_version("1.0.00")),
        Code::InvalidArgument,
        "field version: \"1.0.00\" is not canonical: write \"1.0.0\"",
    )
    .await;
    refused(
        &mut issuer,
        signed(&with_version("01.0.0")),
        Code::InvalidArgument,
        "write \"1.0.0\"",
    )
    .await;
    // Canonical but numerically equal to a registered version: the same
    // version to every relying party and to the kill switch.
    refused(
        &mut issuer,
        signed(&with_version("1.0")),
        Code::AlreadyExists,
        "agent-v@1.0 is the same version as the registered agent-v@1.0.0",
    )
    .await;
    // Non-numeric versions are compared as written, and another name may
    // use any version.
    issuer
        .register(signed(&with_version("1.0.0-rc.01")))
        .await
        .unwrap();
    issuer.register(signed(&with_version("1.1"))).await.unwrap();
    let other = edited_payload(&manifest("agent-w", "low", ""), |v| {
        v["version"] = "1.0".into();
    });
    issuer.register(signed(&other)).await.unwrap();
    assert_eq!(issuer.list().await.len(), 4);
}
