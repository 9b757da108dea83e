//! What `image list` and `image show` print for text an image stored by an
//! earlier release may hold: control characters (bidirectional overrides
//! among them) are escaped, so the terminal shows what was signed.

#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::process::Command;

use sha2::{Digest, Sha256};

use hallmark_server::store::{ImageRecord, SledStore, Store};

use support::{Issuer, START, data_dir, edited_payload, key, manifest, sign};

const BIN: &str = env!("CARGO_BIN_EXE_hallmark-server");

#[tokio::test]
async fn image_list_and_show_escape_control_characters() {
    let alice = key();
    let mut issuer = Issuer::start(&[&alice]).await;
    // Registration refuses these now; an image stored before that still
    // loads, so write one into the store as an older release would have.
    let payload = edited_payload(&manifest("legacy", "low", ""), |v| {
        v["owner"] = "alice@example.org\u{202E}gro.evil".into();
        v["purpose"] = "reads \u{2066}invoices\u{2069}".into();
    });
    let envelope = sign(&payload, &[&alice]);
    issuer.handle.take().unwrap().shutdown().await;
    {
        let store = SledStore::open(&data_dir(&issuer)).unwrap();
        store
            .put_image_if_absent(&ImageRecord {
                name: "legacy".into(),
                version: "1.0.0".into(),
                envelope: String::from_utf8(envelope).unwrap(),
                payload_sha256: hex::encode(Sha256::digest(&payload)),
                registered_at: START,
                registered_by_uid: None,
                retired: None,
            })
            .unwrap();
    }
    let issuer = Issuer::start_in(issuer.dir, &[&alice], issuer.clock).await;
    let socket = issuer.handle().admin_socket().display().to_string();

    // The CLI talks to this test's runtime: run it off the runtime's thread.
    let run = |args: &[&str]| {
        let mut command = Command::new(BIN);
        command.args(args).args(["--socket", &socket]);
        let what = format!("{args:?}");
        async move {
            let out = tokio::task::spawn_blocking(move || command.output().unwrap())
                .await
                .unwrap();
            assert!(
                out.status.success(),
                "{what}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            String::from_utf8(out.stdout).unwrap()
        }
    };
    let list = run(&["image", "list"]).await;
    assert!(list.contains("legacy@1.0.0"), "{list}");
    assert!(list.contains("active"), "the image still verifies: {list}");
    let show = run(&["image", "show", "legacy@1.0.0"]).await;
    for text in [&list, &show] {
        assert!(
            !text.contains(['\u{202E}', '\u{2066}', '\u{2069}']),
            "raw bidirectional controls reach the terminal: {text:?}"
        );
        assert!(
            text.contains("alice@example.org\\u{202e}gro.evil"),
            "{text}"
        );
    }
    assert!(show.contains("reads \\u{2066}invoices\\u{2069}"), "{show}");
    // JSON is data for scripts: the exact string, JSON-encoded.
    let json: serde_json::Value =
        serde_json::from_str(&run(&["image", "list", "--output", "json"]).await).unwrap();
    assert_eq!(
        json["images"][0]["owner"],
        "alice@example.org\u{202E}gro.evil"
    );
}
