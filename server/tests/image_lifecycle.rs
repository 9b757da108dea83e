//! A gold image's life over the admin API, in process on a manual clock:
//! register (idempotent, cosignatures kept, immutable), show, review overdue,
//! retire by hand and automatically past `not_after`, and re-verification of
//! what the store holds.

#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use hallmark_proto::admin::{RetireImageRequest, ShowImageRequest};
use hallmark_server::events::SecurityEvent;
use tonic::Code;

use support::{Issuer, START, key, manifest, payload, sign};

fn retire(name: &str, version: &str, reason: &str) -> RetireImageRequest {
    RetireImageRequest {
        name: name.into(),
        version: version.into(),
        reason: reason.into(),
    }
}

fn show(name: &str, version: &str) -> ShowImageRequest {
    ShowImageRequest {
        name: name.into(),
        version: version.into(),
    }
}

#[tokio::test]
async fn same_payload_is_idempotent_and_a_later_cosignature_is_kept() {
    let (alice, bob) = (key(), key());
    let mut issuer = Issuer::start(&[&alice, &bob]).await;
    let low = payload(&manifest("invoice", "low", "scopes = [\"invoices:read\"]"));
    let once = sign(&low, &[&alice]);

    let (image, created) = issuer.register(once.clone()).await.unwrap();
    assert!(created);
    assert_eq!(image.signers, [alice.keyid()]);
    assert_eq!(image.registered_at, START as i64);
    assert!(image.registered_by_uid.is_some());

    let (again, created) = issuer.register(once.clone()).await.unwrap();
    assert!(!created);
    assert_eq!(again, image);

    // A cosigned envelope of the same payload replaces the stored one.
    issuer.clock.advance(support::secs(60));
    let twice = sign(&low, &[&alice, &bob]);
    let (richer, created) = issuer.register(twice.clone()).await.unwrap();
    assert!(!created);
    assert_eq!(richer.signers.len(), 2);
    assert_eq!(richer.registered_at, START as i64, "registration time kept");
    // ... and a poorer one afterwards does not replace it back.
    let (kept, _) = issuer.register(once).await.unwrap();
    assert_eq!(kept.signers.len(), 2);
    let shown = issuer
        .admin
        .show_image(show("invoice", "1.0.0"))
        .await
        .unwrap()
        .into_inner()
        .images;
    assert_eq!(shown.len(), 1);
    assert_eq!(
        shown[0].envelope, twice,
        "the stored envelope, byte for byte"
    );
    assert_eq!(shown[0].canonical_json.as_bytes(), low.as_slice());
    assert_eq!(shown[0].scopes, ["invoices:read"]);

    // The cosignature is its own audit kind, between the registrations.
    let registered: Vec<&str> = issuer
        .events
        .events()
        .into_iter()
        .filter_map(|e| match e {
            SecurityEvent::ImageRegistered { created: true, .. } => Some("created"),
            SecurityEvent::ImageRegistered { created: false, .. } => Some("unchanged"),
            SecurityEvent::ImageCosigned { .. } => Some("cosigned"),
            _ => None,
        })
        .collect();
    assert_eq!(
        registered,
        ["created", "unchanged", "cosigned", "unchanged"]
    );
}

#[tokio::test]
async fn name_at_version_is_immutable_and_retirement_is_final() {
    let alice = key();
    let mut issuer = Issuer::start(&[&alice]).await;
    let first = sign(&payload(&manifest("invoice", "low", "")), &[&alice]);
    issuer.register(first.clone()).await.unwrap();

    let other = sign(&payload(&manifest("invoice", "medium", "")), &[&alice]);
    let err = issuer.register(other).await.unwrap_err();
    assert_eq!(err.code(), Code::AlreadyExists);
    assert_eq!(
        err.message(),
        "invoice@1.0.0 is registered with different content: publish a new version"
    );
    let before = issuer.list().await;
    assert_eq!(before.len(), 1);
    assert_eq!(before[0].risk_tier, "low");

    // Retire: reason required, unknown is NotFound, malformed is InvalidArgument.
    for (request, code) in [
        (retire("invoice", "1.0.0", "  "), Code::InvalidArgument),
        (retire("invoice", "", "x"), Code::InvalidArgument),
        (retire("../etc", "1", "x"), Code::InvalidArgument),
        (retire("invoice", "2.0.0", "x"), Code::NotFound),
    ] {
        let err = issuer.admin.retire_image(request).await.unwrap_err();
        assert_eq!(err.code(), code, "{}", err.message());
    }
    assert_eq!(
        issuer.list().await,
        before,
        "refused retirements change nothing"
    );

    issuer.clock.advance(support::secs(10));
    let retired = issuer
        .admin
        .retire_image(retire("invoice", "1.0.0", "CVE-2026-1 in the parser"))
        .await
        .unwrap()
        .into_inner();
    assert!(retired.retired);
    assert_eq!(retired.retired_reason, "CVE-2026-1 in the parser");
    assert_eq!(retired.retired_at, START as i64 + 10);
    assert!(retired.retired_by_uid.is_some());
    let listed = issuer.list().await;
    assert_eq!(listed, std::slice::from_ref(&retired));

    let err = issuer
        .admin
        .retire_image(retire("invoice", "1.0.0", "again"))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition);
    assert!(
        err.message().contains("already retired"),
        "{}",
        err.message()
    );
    let err = issuer.register(first).await.unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition);
    assert_eq!(
        err.message(),
        "invoice@1.0.0 is retired: publish a new version"
    );
    assert_eq!(issuer.list().await, listed);

    let retirements: Vec<_> = issuer
        .events
        .events()
        .into_iter()
        .filter(|e| matches!(e, SecurityEvent::ImageRetired { .. }))
        .collect();
    assert_eq!(retirements.len(), 1);
}

#[tokio::test]
async fn show_finds_versions_and_refuses_bad_names() {
    let alice = key();
    let mut issuer = Issuer::start(&[&alice]).await;
    for version in ["1.0.0", "1.1.0"] {
        let toml = manifest("invoice", "low", "").replace("1.0.0", version);
        issuer
            .register(sign(&payload(&toml), &[&alice]))
            .await
            .unwrap();
    }
    let all = issuer
        .admin
        .show_image(show("invoice", ""))
        .await
        .unwrap()
        .into_inner()
        .images;
    let versions: Vec<_> = all.iter().map(|i| i.version.as_str()).collect();
    assert_eq!(versions, ["1.0.0", "1.1.0"]);
    for (name, version, code) in [
        ("invoice", "9", Code::NotFound),
        ("nothing", "", Code::NotFound),
        ("", "", Code::InvalidArgument),
        ("in voice", "", Code::InvalidArgument),
        ("invoice", "1/0", Code::InvalidArgument),
    ] {
        let err = issuer
            .admin
            .show_image(show(name, version))
            .await
            .unwrap_err();
        assert_eq!(err.code(), code, "{name}@{version}: {}", err.message());
    }
}

#[tokio::test]
async fn overdue_reviews_and_automatic_retirement_follow_the_clock() {
    let alice = key();
    let mut issuer = Issuer::start(&[&alice]).await;
    let toml = manifest("invoice", "low", "review_by = 2027-01-01");
    issuer
        .register(sign(&payload(&toml), &[&alice]))
        .await
        .unwrap();
    let listed = issuer.list().await;
    assert!(!listed[0].review_overdue);
    // A date means its last second: 2027-01-01T23:59:59Z.
    assert_eq!(listed[0].review_by, 1_798_847_999);
    issuer.advance_to(1_798_847_999 - 1);
    assert!(!issuer.list().await[0].review_overdue);

    issuer.advance_to(1_798_847_999);
    issuer.handle().run_maintenance();
    let listed = issuer.list().await;
    assert!(listed[0].review_overdue);
    assert!(!listed[0].retired, "an overdue review does not retire");

    // 2031-01-01: past not_after (2030-12-31). Listed as retired at once.
    issuer.advance_to(1_924_992_000);
    let listed = issuer.list().await;
    assert!(listed[0].retired);
    assert_eq!(listed[0].retired_reason, "not_after passed");
    issuer.handle().run_maintenance();
    issuer.handle().run_maintenance();
    let listed = issuer.list().await;
    assert!(listed[0].retired);
    assert_eq!(listed[0].retired_reason, "not_after passed");
    assert_eq!(listed[0].retired_at, 1_924_992_000);
    assert_eq!(listed[0].retired_by_uid, None, "automatic");
    let automatic: Vec<_> = issuer
        .events
        .events()
        .into_iter()
        .filter_map(|e| match e {
            SecurityEvent::ImageRetired { image, reason, uid } => Some((image, reason, uid)),
            _ => None,
        })
        .collect();
    assert_eq!(
        automatic,
        [(
            "invoice@1.0.0".to_owned(),
            "not_after passed".to_owned(),
            None
        )],
        "retired once, audited"
    );
    // An operator can no longer retire it: it is retired, durably.
    let mut issuer = issuer.restart(&[&alice]).await;
    let err = issuer
        .admin
        .retire_image(retire("invoice", "1.0.0", "late"))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition);
    assert!(
        err.message().contains("not_after passed"),
        "{}",
        err.message()
    );
}

#[tokio::test]
async fn stored_images_are_re_verified_when_read() {
    let (alice, bob) = (key(), key());
    let mut issuer = Issuer::start(&[&alice, &bob]).await;
    issuer
        .register(sign(&payload(&manifest("by-alice", "low", "")), &[&alice]))
        .await
        .unwrap();
    issuer
        .register(sign(&payload(&manifest("by-bob", "low", "")), &[&bob]))
        .await
        .unwrap();
    assert_eq!(issuer.handle().images().current().len(), 2);

    // Alice's key is no longer trusted: her image is reported, not hidden,
    // and does not mint.
    let mut issuer = issuer.restart(&[&bob]).await;
    let listed = issuer.list().await;
    assert_eq!(listed.len(), 2);
    let by_alice = listed.iter().find(|i| i.name == "by-alice").unwrap();
    assert!(
        by_alice
            .verification_error
            .contains("no signature is from a trusted signer"),
        "{}",
        by_alice.verification_error
    );
    assert!(by_alice.spiffe_id.is_empty());
    let by_bob = listed.iter().find(|i| i.name == "by-bob").unwrap();
    assert!(by_bob.verification_error.is_empty());
    assert_eq!(issuer.handle().images().current().len(), 1);
}
