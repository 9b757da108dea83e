//! Gold images against a running issuer, as an operator drives them:
//! keygen, sign, cosign, register, list, show, retire, and every refusal
//! with its message and nothing stored.

#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_hallmark-server");
const CODE: &str = "1111111111111111111111111111111111111111111111111111111111111111";

fn run(args: &[&str]) -> Output {
    Command::new(BIN).args(args).output().unwrap()
}

fn ok(args: &[&str]) -> String {
    let out = run(args);
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn fails(args: &[&str]) -> String {
    let out = run(args);
    assert!(!out.status.success(), "{args:?} should fail");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

struct Daemon(Child);

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

struct Env {
    dir: tempfile::TempDir,
    socket: String,
    _daemon: Daemon,
}

impl Env {
    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn p(&self, name: &str) -> String {
        self.path(name).display().to_string()
    }

    fn manifest(&self, file: &str, name: &str, tier: &str, extra: &str) -> String {
        let text = format!(
            "name = \"{name}\"\nversion = \"1.0.0\"\nspiffe_id = \"spiffe://example.org/{name}\"\nowner = \"alice@example.org\"\npurpose = \"tests\"\nrisk_tier = \"{tier}\"\nnot_after = 2099-12-31\n{extra}\n[code]\nsha256 = [\"{CODE}\"]\n"
        );
        std::fs::write(self.path(file), text).unwrap();
        self.p(file)
    }

    fn sign(&self, manifest: &str, key: &str, out: &str) -> String {
        ok(&[
            "image",
            "sign",
            "--key",
            &self.p(key),
            manifest,
            "--out",
            &self.p(out),
        ]);
        self.p(out)
    }

    /// Every stored image, retired ones included.
    fn image_count(&self) -> usize {
        self.listed(&["--all"])
    }

    fn listed(&self, flags: &[&str]) -> usize {
        let mut args = vec![
            "image",
            "list",
            "--socket",
            &self.socket,
            "--output",
            "json",
        ];
        args.extend_from_slice(flags);
        let out = ok(&args);
        let list: serde_json::Value = serde_json::from_str(&out).unwrap();
        list["images"].as_array().unwrap().len()
    }
}

fn start() -> Env {
    let dir = tempfile::tempdir().unwrap();
    for key in ["alice", "bob", "mallory"] {
        ok(&[
            "image",
            "keygen",
            "--out",
            &dir.path().join(format!("{key}.key")).display().to_string(),
        ]);
    }
    let config = dir.path().join("server.toml");
    std::fs::write(
        &config,
        format!(
            "trust_domain = \"example.org\"\ndata_dir = \"{}\"\nbind_address = \"127.0.0.1:0\"\nadmin_socket = \"{}\"\n[images]\ntrusted_signers = [\"{}\", \"{}\"]\n",
            dir.path().join("data").display(),
            dir.path().join("admin.sock").display(),
            dir.path().join("alice.key.pub").display(),
            dir.path().join("bob.key.pub").display(),
        ),
    )
    .unwrap();
    let child = Command::new(BIN)
        .args(["run", "--config", config.to_str().unwrap()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let daemon = Daemon(child);
    let socket = dir.path().join("admin.sock").display().to_string();
    let deadline = Instant::now() + Duration::from_secs(30);
    while !run(&["healthcheck", "--socket", &socket]).status.success() {
        assert!(Instant::now() < deadline, "daemon did not come up");
        std::thread::sleep(Duration::from_millis(100));
    }
    Env {
        dir,
        socket,
        _daemon: daemon,
    }
}

fn tamper(path: &str, edit: impl FnOnce(&mut serde_json::Value)) -> String {
    let mut envelope: serde_json::Value =
        serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap();
    edit(&mut envelope);
    let out = format!("{path}.tampered.json");
    std::fs::write(&out, serde_json::to_vec(&envelope).unwrap()).unwrap();
    out
}

#[test]
fn register_show_list_retire_round_trip() {
    let env = start();
    let manifest = env.manifest(
        "invoice.toml",
        "invoice-agent",
        "low",
        "scopes = [\"invoices:read\"]\nreview_by = 2000-01-01",
    );
    let signed = env.sign(&manifest, "alice.key", "invoice.dsse.json");
    ok(&[
        "image",
        "verify",
        &signed,
        "--trusted",
        &env.p("alice.key.pub"),
    ]);

    let out = ok(&[
        "image",
        "register",
        &signed,
        "--socket",
        &env.socket,
        "--output",
        "json",
    ]);
    let registered: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(registered["created"], true);
    assert_eq!(
        registered["image"]["spiffe_id"],
        "spiffe://example.org/invoice-agent"
    );
    assert_eq!(registered["image"]["signers"].as_array().unwrap().len(), 1);

    // Same bytes again: idempotent.
    let out = ok(&[
        "image",
        "register",
        &signed,
        "--socket",
        &env.socket,
        "--output",
        "json",
    ]);
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&out).unwrap()["created"],
        false
    );

    let out = ok(&[
        "image",
        "show",
        "invoice-agent@1.0.0",
        "--socket",
        &env.socket,
        "--output",
        "json",
    ]);
    let shown: serde_json::Value = serde_json::from_str(&out).unwrap();
    let image = &shown["images"][0];
    assert_eq!(image["owner"], "alice@example.org");
    assert_eq!(image["purpose"], "tests");
    assert_eq!(image["risk_tier"], "low");
    assert_eq!(image["scopes"][0], "invoices:read");
    assert_eq!(image["code_sha256"][0], CODE);
    assert_eq!(
        image["review_overdue"], true,
        "review_by 2000-01-01 has passed"
    );
    assert_eq!(image["manifest"]["name"], "invoice-agent");
    let file: serde_json::Value = serde_json::from_slice(&std::fs::read(&signed).unwrap()).unwrap();
    assert_eq!(image["envelope"], file, "show returns the stored envelope");
    let text = ok(&["image", "show", "invoice-agent", "--socket", &env.socket]);
    assert!(text.contains("review overdue"), "{text}");

    // Different content under the same name@version.
    let changed = env.manifest("changed.toml", "invoice-agent", "low", "purpose2 = 1");
    let err = fails(&[
        "image",
        "sign",
        "--key",
        &env.p("alice.key"),
        &changed,
        "--out",
        &env.p("x.json"),
    ]);
    assert!(err.contains("purpose2"), "{err}");
    let changed = env.manifest("changed.toml", "invoice-agent", "medium", "");
    let changed = env.sign(&changed, "alice.key", "changed.dsse.json");
    let err = fails(&["image", "register", &changed, "--socket", &env.socket]);
    assert!(
        err.contains("different content") && err.contains("AlreadyExists"),
        "{err}"
    );

    let out = ok(&[
        "image",
        "retire",
        "invoice-agent@1.0.0",
        "--reason",
        "replaced by 1.1",
        "--socket",
        &env.socket,
    ]);
    assert!(out.contains("Retired invoice-agent@1.0.0"), "{out}");
    assert_eq!(env.listed(&[]), 0, "image list hides retired images");
    assert_eq!(env.image_count(), 1);
    let text = ok(&["image", "list", "--socket", &env.socket]);
    assert!(text.contains("1 retired not shown"), "{text}");
    let out = ok(&[
        "image",
        "list",
        "--all",
        "--socket",
        &env.socket,
        "--output",
        "json",
    ]);
    let list: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(list["images"][0]["retired"], true);
    assert_eq!(list["images"][0]["status"], "retired");
    assert_eq!(list["images"][0]["retired_reason"], "replaced by 1.1");
    assert!(list["images"][0]["retired_by_uid"].is_u64());
    let text = ok(&["image", "list", "--all", "--socket", &env.socket]);
    assert!(
        text.contains("invoice-agent@1.0.0") && text.contains("retired"),
        "{text}"
    );
    let err = fails(&[
        "image",
        "retire",
        "invoice-agent@1.0.0",
        "--reason",
        "again",
        "--socket",
        &env.socket,
    ]);
    assert!(
        err.contains("already retired") && err.contains("FailedPrecondition"),
        "{err}"
    );
    let err = fails(&["image", "register", &signed, "--socket", &env.socket]);
    assert!(err.contains("retired"), "{err}");
    let err = fails(&[
        "image",
        "retire",
        "nope@1",
        "--reason",
        "x",
        "--socket",
        &env.socket,
    ]);
    assert!(err.contains("NotFound"), "{err}");
    let err = fails(&[
        "image",
        "retire",
        "invoice-agent@1.0.0",
        "--reason",
        " ",
        "--socket",
        &env.socket,
    ]);
    assert!(err.contains("reason"), "{err}");
    let err = fails(&["image", "show", "nope", "--socket", &env.socket]);
    assert!(err.contains("NotFound"), "{err}");
}

#[test]
fn high_risk_images_need_two_distinct_trusted_signers() {
    let env = start();
    let manifest = env.manifest("pay.toml", "payments-agent", "high", "");
    let signed = env.sign(&manifest, "alice.key", "pay.dsse.json");
    let err = fails(&["image", "register", &signed, "--socket", &env.socket]);
    assert!(err.contains("PermissionDenied"), "{err}");
    assert!(err.contains("signature"), "{err}");
    assert_eq!(env.image_count(), 0);

    // The same key twice does not count twice.
    let doubled = tamper(&signed, |e| {
        let sig = e["signatures"][0].clone();
        e["signatures"].as_array_mut().unwrap().push(sig);
    });
    let err = fails(&["image", "register", &doubled, "--socket", &env.socket]);
    assert!(err.contains("PermissionDenied"), "{err}");
    assert_eq!(env.image_count(), 0);

    // An untrusted key does not count either.
    ok(&["image", "cosign", "--key", &env.p("mallory.key"), &signed]);
    let err = fails(&["image", "register", &signed, "--socket", &env.socket]);
    assert!(err.contains("PermissionDenied"), "{err}");
    assert_eq!(env.image_count(), 0);

    ok(&["image", "cosign", "--key", &env.p("bob.key"), &signed]);
    let out = ok(&[
        "image",
        "register",
        &signed,
        "--socket",
        &env.socket,
        "--output",
        "json",
    ]);
    let registered: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(registered["image"]["signers"].as_array().unwrap().len(), 2);
    assert_eq!(env.image_count(), 1);
}

#[test]
fn malformed_envelopes_are_refused_and_nothing_is_stored() {
    let env = start();
    // Unknown signer only.
    let manifest = env.manifest("m.toml", "agent-a", "low", "");
    let by_mallory = env.sign(&manifest, "mallory.key", "mallory.dsse.json");
    let err = fails(&["image", "register", &by_mallory, "--socket", &env.socket]);
    assert!(err.contains("PermissionDenied"), "{err}");

    let good = env.sign(&manifest, "alice.key", "good.dsse.json");
    // A flipped signature byte.
    let bad_sig = tamper(&good, |e| {
        let sig = e["signatures"][0]["sig"].as_str().unwrap().to_owned();
        let first = if sig.starts_with('A') { "B" } else { "A" };
        let flipped = format!("{first}{}", sig.get(1..).unwrap());
        e["signatures"][0]["sig"] = flipped.into();
    });
    let err = fails(&["image", "register", &bad_sig, "--socket", &env.socket]);
    assert!(err.contains("PermissionDenied"), "{err}");
    // Wrong payload type.
    let wrong_type = tamper(&good, |e| e["payloadType"] = "application/json".into());
    let err = fails(&["image", "register", &wrong_type, "--socket", &env.socket]);
    assert!(
        err.contains("InvalidArgument") && err.contains("payload"),
        "{err}"
    );
    // Another trust domain.
    let foreign = env.manifest("f.toml", "agent-b", "low", "");
    let text = std::fs::read_to_string(&foreign)
        .unwrap()
        .replace("spiffe://example.org/", "spiffe://other.org/");
    std::fs::write(&foreign, text).unwrap();
    let foreign = env.sign(&foreign, "alice.key", "foreign.dsse.json");
    let err = fails(&["image", "register", &foreign, "--socket", &env.socket]);
    assert!(
        err.contains("InvalidArgument") && err.contains("spiffe_id"),
        "{err}"
    );
    // TTL above the 300 s cap.
    let long = env.manifest("t.toml", "agent-c", "low", "x509_ttl = 3600");
    let long = env.sign(&long, "alice.key", "long.dsse.json");
    let err = fails(&["image", "register", &long, "--socket", &env.socket]);
    assert!(
        err.contains("InvalidArgument") && err.contains("x509_ttl"),
        "{err}"
    );
    // Truncated and non-JSON files: the CLI names the file.
    let bytes = std::fs::read(&good).unwrap();
    std::fs::write(env.path("cut.json"), &bytes[..bytes.len() / 2]).unwrap();
    let err = fails(&[
        "image",
        "register",
        &env.p("cut.json"),
        "--socket",
        &env.socket,
    ]);
    assert!(err.contains("cut.json"), "{err}");
    // Oversized.
    std::fs::write(env.path("big.json"), vec![b' '; 70 * 1024]).unwrap();
    let err = fails(&[
        "image",
        "register",
        &env.p("big.json"),
        "--socket",
        &env.socket,
    ]);
    assert!(err.contains("big.json") && err.contains("limit"), "{err}");

    assert_eq!(env.image_count(), 0);
}

/// `image list` filters as SPIRE's `entry show` does (`--spiffe-id`,
/// `--owner`, `--risk-tier`, `--review-overdue`), and `agent list`'s and
/// `agent show`'s; `--version` names the commit.
#[test]
fn list_filters_select_what_operators_ask_for() {
    let env = start();
    for (name, tier, owner, extra) in [
        (
            "invoice-agent",
            "low",
            "alice@example.org",
            "review_by = 2000-01-01",
        ),
        ("billing-agent", "medium", "bob@example.org", ""),
        ("report-agent", "low", "bob@example.org", ""),
    ] {
        let file = format!("{name}.toml");
        let manifest = env.manifest(&file, name, tier, extra);
        let text = std::fs::read_to_string(&manifest)
            .unwrap()
            .replace("alice@example.org", owner);
        std::fs::write(&manifest, text).unwrap();
        let signed = env.sign(&manifest, "alice.key", &format!("{name}.dsse.json"));
        ok(&["image", "register", &signed, "--socket", &env.socket]);
    }
    let names = |filters: &[&str]| -> Vec<String> {
        let mut args = vec!["image", "list", "--socket", &env.socket, "--output", "json"];
        args.extend_from_slice(filters);
        let listed: serde_json::Value = serde_json::from_str(&ok(&args)).unwrap();
        let mut names: Vec<String> = listed["images"]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| i["name"].as_str().unwrap().to_owned())
            .collect();
        names.sort();
        names
    };
    assert_eq!(names(&[]).len(), 3);
    assert_eq!(
        names(&["--owner", "bob@example.org"]),
        ["billing-agent", "report-agent"]
    );
    assert_eq!(names(&["--risk-tier", "medium"]), ["billing-agent"]);
    assert_eq!(
        names(&["--spiffe-id", "spiffe://example.org/report-agent"]),
        ["report-agent"]
    );
    assert_eq!(names(&["--review-overdue"]), ["invoice-agent"]);
    assert_eq!(
        names(&["--owner", "bob@example.org", "--risk-tier", "low"]),
        ["report-agent"]
    );
    assert!(names(&["--owner", "carol@example.org"]).is_empty());
    let err = fails(&[
        "image",
        "list",
        "--risk-tier",
        "severe",
        "--socket",
        &env.socket,
    ]);
    assert!(
        err.contains("not one of low, medium, high, critical"),
        "{err}"
    );

    // Agents: none attested here; the filters and `show` still answer.
    let listed = ok(&[
        "agent",
        "list",
        "--banned",
        "--attestor",
        "x509pop",
        "--socket",
        &env.socket,
    ]);
    assert!(listed.contains("Found 0 attested agents"), "{listed}");
    let err = fails(&[
        "agent",
        "list",
        "--attestor",
        "tpm",
        "--socket",
        &env.socket,
    ]);
    assert!(
        err.contains("join_token") && err.contains("x509pop"),
        "{err}"
    );
    let id = "spiffe://example.org/hallmark/agent/join_token/00";
    ok(&["agent", "ban", id, "--socket", &env.socket]);
    let shown: serde_json::Value = serde_json::from_str(&ok(&[
        "agent",
        "show",
        id,
        "--socket",
        &env.socket,
        "--output",
        "json",
    ]))
    .unwrap();
    assert_eq!(shown["spiffe_id"], id);
    assert_eq!(shown["banned"], true);
    let banned = ok(&["agent", "list", "--banned", "--socket", &env.socket]);
    assert!(banned.contains(id), "{banned}");
    let err = fails(&[
        "agent",
        "show",
        "spiffe://example.org/hallmark/agent/join_token/01",
        "--socket",
        &env.socket,
    ]);
    assert!(
        err.contains("no agent") && err.contains("agent list"),
        "{err}"
    );

    let version = ok(&["--version"]);
    assert!(version.starts_with("hallmark-server "), "{version}");
    assert!(version.contains("(commit "), "{version}");
}
