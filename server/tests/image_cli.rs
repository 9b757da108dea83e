//! The offline `image` verbs, run through the built binary.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests"
)]

use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;
use std::process::{Command, Output};

fn hallmark(args: &[&str], dir: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_hallmark-server"))
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap()
}

fn ok(args: &[&str], dir: &Path) -> String {
    let out = hallmark(args, dir);
    assert!(
        out.status.success(),
        "{args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn fails(args: &[&str], dir: &Path) -> String {
    let out = hallmark(args, dir);
    assert!(!out.status.success(), "{args:?} succeeded");
    String::from_utf8(out.stderr).unwrap()
}

const MANIFEST: &str = r#"
name = "invoice-agent"
version = "1.0.0"
spiffe_id = "spiffe://example.org/agents/invoice"
owner = "alice"
purpose = "reads invoices"
risk_tier = "high"
x509_ttl = 300
not_after = 2099-06-30
review_by = 2099-01-31

[code]
sha256 = ["0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"]

[model]
name = "tiny"
version = "1"
digest = "MODEL_DIGEST"
"#;

#[test]
fn keygen_digest_sign_cosign_verify() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    ok(&["image", "keygen", "--out", "alice.key"], d);
    ok(
        &["image", "keygen", "--out", "bob.key", "--algorithm", "p256"],
        d,
    );
    let mode = std::fs::metadata(d.join("alice.key"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    assert!(
        std::fs::read_to_string(d.join("bob.key.pub"))
            .unwrap()
            .contains("BEGIN PUBLIC KEY")
    );
    let err = fails(&["image", "keygen", "--out", "alice.key"], d);
    assert!(err.contains("already exists"), "{err}");

    std::fs::create_dir_all(d.join("model/sub")).unwrap();
    std::fs::write(d.join("model/hello.txt"), "hello\n").unwrap();
    std::fs::write(d.join("model/sub/data.bin"), "abc").unwrap();
    let digest = ok(&["image", "digest", "model"], d).trim().to_owned();
    assert!(
        digest.starts_with("sha256:") && digest.len() == 71,
        "{digest}"
    );

    std::fs::write(
        d.join("image.toml"),
        MANIFEST.replace("MODEL_DIGEST", &digest),
    )
    .unwrap();
    ok(
        &[
            "image",
            "sign",
            "--key",
            "alice.key",
            "image.toml",
            "--out",
            "image.dsse.json",
        ],
        d,
    );
    let signed_once = std::fs::read(d.join("image.dsse.json")).unwrap();

    // High risk: one signature is not enough.
    let verify = [
        "image",
        "verify",
        "image.dsse.json",
        "--trusted",
        "alice.key.pub",
        "bob.key.pub",
    ];
    let err = fails(&verify, d);
    assert!(
        err.contains("image.dsse.json") && err.contains("needs 2"),
        "{err}"
    );

    ok(
        &["image", "cosign", "--key", "bob.key", "image.dsse.json"],
        d,
    );
    let err = fails(
        &["image", "cosign", "--key", "bob.key", "image.dsse.json"],
        d,
    );
    assert!(err.contains("already signed"), "{err}");
    let out = ok(&verify, d);
    assert!(out.contains("invoice-agent@1.0.0"), "{out}");
    assert!(out.contains("policy       ok: 2"), "{out}");

    // Cosigning kept the payload byte for byte.
    let payload = |b: &[u8]| {
        let v: serde_json::Value = serde_json::from_slice(b).unwrap();
        v["payload"].as_str().unwrap().to_owned()
    };
    assert_eq!(
        payload(&signed_once),
        payload(&std::fs::read(d.join("image.dsse.json")).unwrap())
    );

    // Another trust domain, a lower TTL cap.
    let err = fails(&[&verify[..], &["--trust-domain", "other.org"]].concat(), d);
    assert!(err.contains("field spiffe_id"), "{err}");
    let err = fails(&[&verify[..], &["--max-svid-ttl", "60s"]].concat(), d);
    assert!(err.contains("field x509_ttl"), "{err}");
    // Only bob trusted: alice's signature is unknown and does not count.
    let err = fails(
        &[
            "image",
            "verify",
            "image.dsse.json",
            "--trusted",
            "bob.key.pub",
        ],
        d,
    );
    assert!(err.contains("ignored untrusted"), "{err}");
}

#[test]
fn sign_errors_name_the_file_and_field() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    ok(&["image", "keygen", "--out", "k"], d);
    let bad = MANIFEST.replace("MODEL_DIGEST", "sha256:1234");
    std::fs::write(d.join("bad.toml"), bad).unwrap();
    let err = fails(
        &["image", "sign", "--key", "k", "bad.toml", "--out", "x.json"],
        d,
    );
    assert!(err.contains("bad.toml: field model.digest:"), "{err}");
    assert!(!d.join("x.json").exists());

    std::fs::write(
        d.join("typo.toml"),
        format!(
            "ownr = \"x\"\n{}",
            MANIFEST.replace("MODEL_DIGEST", "sha256:1234")
        ),
    )
    .unwrap();
    let err = fails(
        &[
            "image",
            "sign",
            "--key",
            "k",
            "typo.toml",
            "--out",
            "x.json",
        ],
        d,
    );
    assert!(
        err.contains("typo.toml: field ownr: unknown field"),
        "{err}"
    );

    // Text that displays differently from what is signed, and a version
    // relying parties read as another spelling of 1.0.0.
    let good = MANIFEST.replace(
        "MODEL_DIGEST",
        "sha256:2222222222222222222222222222222222222222222222222222222222222222",
    );
    for (file, text, expected) in [
        (
            "bidi.toml",
            good.replace("owner = \"alice\"", "owner = \"alice\u{202E}eve\""),
            "bidi.toml: field owner: contains U+202E",
        ),
        (
            "zeros.toml",
            good.replace("version = \"1.0.0\"", "version = \"1.0.00\""),
            "zeros.toml: field version: \"1.0.00\" is not canonical: write \"1.0.0\"",
        ),
    ] {
        std::fs::write(d.join(file), text).unwrap();
        let err = fails(&["image", "sign", "--key", "k", file, "--out", "x.json"], d);
        assert!(err.contains(expected), "{err}");
        assert!(!d.join("x.json").exists());
    }

    std::fs::write(d.join("garbage.json"), "{\"payloadType\":").unwrap();
    let err = fails(
        &["image", "verify", "garbage.json", "--trusted", "k.pub"],
        d,
    );
    assert!(
        err.contains("garbage.json") && err.contains("not a DSSE JSON envelope"),
        "{err}"
    );
}

#[test]
fn digest_refuses_a_fifo() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::create_dir(d.join("m")).unwrap();
    assert!(
        Command::new("mkfifo")
            .arg(d.join("m/pipe"))
            .status()
            .unwrap()
            .success()
    );
    let err = fails(&["image", "digest", "m"], d);
    assert!(err.contains("m/pipe") && err.contains("fifo"), "{err}");
}

#[test]
fn digest_follows_hugging_face_links_and_refuses_links_leaving_the_model() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let repo = d.join("hub/models--org--tiny");
    std::fs::create_dir_all(repo.join("blobs")).unwrap();
    std::fs::create_dir_all(repo.join("snapshots/r1")).unwrap();
    std::fs::write(repo.join("blobs/aaaa"), "weights").unwrap();
    std::os::unix::fs::symlink(
        "../../blobs/aaaa",
        repo.join("snapshots/r1/model.safetensors"),
    )
    .unwrap();
    let snapshot = "hub/models--org--tiny/snapshots/r1";
    let listed = ok(&["image", "digest", "--list", snapshot], d);
    let lines: Vec<&str> = listed.lines().collect();
    assert_eq!(lines.len(), 2, "{listed}");
    assert!(
        lines[0].starts_with("link  ")
            && lines[0].ends_with("  7  ../../blobs/aaaa  model.safetensors"),
        "{listed}"
    );
    // The same digest as the agent computes.
    let expected = hallmark_attestors::tree::digest_tree(
        &d.join(snapshot),
        &hallmark_attestors::tree::TreeLimits::default(),
    )
    .unwrap()
    .digest;
    assert_eq!(lines[1], expected);

    // Overwriting the blob changes the digest; recorded as an app tree, not.
    let app = ok(&["image", "digest", "--app", snapshot], d);
    std::fs::write(repo.join("blobs/aaaa"), "poisoned").unwrap();
    assert_ne!(ok(&["image", "digest", snapshot], d).trim(), expected);
    assert_eq!(ok(&["image", "digest", "--app", snapshot], d), app);

    // A link leaving the model root: refused, naming the link and its target.
    std::fs::write(d.join("outside.bin"), "x").unwrap();
    std::os::unix::fs::symlink(
        "../../../../../outside.bin",
        repo.join("snapshots/r1/extra"),
    )
    .unwrap();
    let err = fails(&["image", "digest", snapshot], d);
    assert!(
        err.contains("snapshots/r1/extra")
            && err.contains("../../../../../outside.bin")
            && err.contains("leaves the model root"),
        "{err}"
    );
}
