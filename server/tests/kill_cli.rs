//! The kill switch as an operator drives it: `kill`, `kill list`, `kill
//! lift` against a running issuer process, every refusal with its exact
//! message and status and nothing stored, and the audit trail of a kill.

#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::os::unix::fs::MetadataExt as _;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_hallmark-server");
const CODE: &str = "1111111111111111111111111111111111111111111111111111111111111111";
const MODEL: &str = "sha256:2222222222222222222222222222222222222222222222222222222222222222";

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
    fn start() -> Env {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().to_owned();
        let p = |name: &str| root.join(name).display().to_string();
        ok(&["image", "keygen", "--out", &p("alice.key")]);
        std::fs::write(
            dir.path().join("server.toml"),
            format!(
                "trust_domain = \"example.org\"\ndata_dir = \"{}\"\nbind_address = \"127.0.0.1:0\"\nadmin_socket = \"{}\"\n[images]\ntrusted_signers = [\"{}\"]\n",
                p("data"),
                p("admin.sock"),
                p("alice.key.pub"),
            ),
        )
        .unwrap();
        let child = Command::new(BIN)
            .args(["run", "--config", &p("server.toml")])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let env = Env {
            socket: p("admin.sock"),
            dir,
            _daemon: Daemon(child),
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        while !run(&["healthcheck", "--socket", &env.socket])
            .status
            .success()
        {
            assert!(Instant::now() < deadline, "daemon did not come up");
            std::thread::sleep(Duration::from_millis(100));
        }
        // One registered image, `alpha@1.0.0`, issuing spiffe://example.org/alpha.
        let manifest = env.dir.path().join("alpha.toml");
        std::fs::write(
            &manifest,
            format!(
                "name = \"alpha\"\nversion = \"1.0.0\"\nspiffe_id = \"spiffe://example.org/alpha\"\nowner = \"alice@example.org\"\npurpose = \"tests\"\nrisk_tier = \"low\"\nnot_after = 2099-12-31\n[code]\nsha256 = [\"{CODE}\"]\n"
            ),
        )
        .unwrap();
        let envelope = p("alpha.dsse.json");
        ok(&[
            "image",
            "sign",
            "--key",
            &p("alice.key"),
            manifest.to_str().unwrap(),
            "--out",
            &envelope,
        ]);
        ok(&["image", "register", &envelope, "--socket", &env.socket]);
        env
    }

    /// `kill` with `args`, plus the socket.
    fn kill(&self, args: &[&str]) -> Output {
        let mut all = vec!["kill"];
        all.extend_from_slice(args);
        all.extend_from_slice(&["--socket", &self.socket]);
        run(&all)
    }

    fn lift(&self, args: &[&str]) -> Output {
        let mut all = vec!["kill", "lift"];
        all.extend_from_slice(args);
        all.extend_from_slice(&["--socket", &self.socket]);
        run(&all)
    }

    /// `kill list --output json`'s revocations.
    fn listed(&self) -> Vec<serde_json::Value> {
        let out = ok(&["kill", "list", "--socket", &self.socket, "--output", "json"]);
        let list: serde_json::Value = serde_json::from_str(&out).unwrap();
        list["revocations"].as_array().unwrap().clone()
    }

    fn uid(&self) -> u32 {
        std::fs::metadata(self.dir.path()).unwrap().uid()
    }
}

/// The command failed with exactly `expected` on stderr (after `error: `).
fn fails_with(out: &Output, expected: &str) {
    assert!(!out.status.success(), "should fail: {expected}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    let first = stderr.lines().next().unwrap_or_default();
    assert_eq!(first, format!("error: {expected}"), "full stderr: {stderr}");
}

#[test]
fn every_bad_kill_is_refused_with_what_to_fix_and_stores_nothing() {
    let env = Env::start();
    let agent = "spiffe://example.org/hallmark/agent/join_token/ab";
    let cases: Vec<(Vec<&str>, String)> = vec![
        // Exactly one target: clap refuses before anything is sent.
        (
            vec!["--image", "alpha", "--code", CODE, "--reason", "r"],
            "the argument '--image <NAME[@VERSION]>' cannot be used with '--code <SHA256>'".into(),
        ),
        (
            vec!["--reason", "r"],
            "the following required arguments were not provided:".into(),
        ),
        (
            vec!["--image", "alpha"],
            "the following required arguments were not provided:".into(),
        ),
        // Malformed targets.
        (
            vec!["--spiffe-id", "not-a-spiffe-id", "--reason", "r"],
            "kill failed: \"not-a-spiffe-id\" is not a SPIFFE ID: ".into(),
        ),
        (
            vec!["--spiffe-id", "spiffe://other.org/alpha", "--reason", "r"],
            "kill failed: spiffe://other.org/alpha is not in this issuer's trust domain example.org: nothing here could match it (InvalidArgument)".into(),
        ),
        (
            vec!["--spiffe-id", agent, "--reason", "r"],
            format!("kill failed: {agent} is an agent ID, not a workload's: revoke an agent with node (--node) (InvalidArgument)"),
        ),
        (
            vec!["--node", "spiffe://example.org/alpha", "--reason", "r"],
            "kill failed: spiffe://example.org/alpha is not an agent ID: agent IDs look like spiffe://example.org/hallmark/agent/<attestor>/<id> (`agent list` shows them) (InvalidArgument)".into(),
        ),
        (
            vec!["--image", "al pha", "--reason", "r"],
            "kill failed: image \"al pha\" is malformed: name:".into(),
        ),
        (
            vec!["--code", "abc", "--reason", "r"],
            "kill failed: code digest \"abc\" is malformed: expected 64 lowercase hex characters (the executable's SHA-256, as `sha256sum` prints it) (InvalidArgument)".into(),
        ),
        (
            vec!["--code", MODEL, "--reason", "r"],
            format!("kill failed: code digest \"{MODEL}\" is malformed: an executable digest is its bare SHA-256, 64 lowercase hex characters without \"sha256:\" (for a model use model_digest, --model) (InvalidArgument)"),
        ),
        (
            vec!["--model", CODE, "--reason", "r"],
            format!("kill failed: model digest \"{CODE}\" is malformed: expected \"sha256:\" followed by 64 lowercase hex characters (as `hallmark-server image digest DIR` prints it) (InvalidArgument)"),
        ),
        // Unknown names: a typo must not look like a kill that worked.
        (
            vec!["--image", "ghost", "--reason", "r"],
            "kill failed: no image ghost is registered (`image list --all` shows them) (NotFound)".into(),
        ),
        (
            vec!["--image", "alpha@9.9.9", "--reason", "r"],
            "kill failed: no image alpha@9.9.9 is registered (`image list --all` shows them) (NotFound)".into(),
        ),
        (
            vec!["--spiffe-id", "spiffe://example.org/ghost", "--reason", "r"],
            "kill failed: no registered image issues spiffe://example.org/ghost (`image list --all` shows their SPIFFE IDs) (NotFound)".into(),
        ),
        (
            vec!["--node", agent, "--reason", "r"],
            format!("kill failed: no agent {agent} on record (`agent list` shows them) (NotFound)"),
        ),
        // Reasons.
        (
            vec!["--image", "alpha", "--reason", ""],
            "kill failed: reason is required: say why (it is kept and audited) (InvalidArgument)".into(),
        ),
        (
            vec!["--image", "alpha", "--reason", "  "],
            "kill failed: reason is required: say why (it is kept and audited) (InvalidArgument)".into(),
        ),
        (
            vec!["--image", "alpha", "--reason", "two\nlines"],
            "kill failed: reason must be one line of text without control characters (InvalidArgument)".into(),
        ),
    ];
    for (args, expected) in &cases {
        let out = env.kill(args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?} should fail");
        assert!(
            stderr.starts_with(&format!("error: {expected}")),
            "{args:?}:\nexpected: error: {expected}\ngot: {stderr}"
        );
        assert!(env.listed().is_empty(), "{args:?} stored something");
    }
    // Usage errors exit 2 (clap), refusals 1.
    assert_eq!(env.kill(&["--reason", "r"]).status.code(), Some(2));
    assert_eq!(
        env.kill(&["--image", "ghost", "--reason", "r"])
            .status
            .code(),
        Some(1)
    );
}

#[test]
fn kill_list_and_lift_show_what_is_in_force_and_refuse_bad_lifts() {
    let env = Env::start();
    let made = env.kill(&[
        "--image",
        "alpha",
        "--reason",
        "leaked signing key",
        "--output",
        "json",
    ]);
    assert!(
        made.status.success(),
        "{}",
        String::from_utf8_lossy(&made.stderr)
    );
    let made: serde_json::Value = serde_json::from_slice(&made.stdout).unwrap();
    let id = made["id"].as_str().unwrap().to_owned();
    assert_eq!(id.len(), 16);
    assert!(id.bytes().all(|b| b.is_ascii_hexdigit()));
    assert_eq!(made["status"], "in_force");
    assert_eq!(made["kind"], "image");
    assert_eq!(made["target"], "alpha");
    assert_eq!(made["reason"], "leaked signing key");
    assert_eq!(made["created_by_uid"], env.uid());
    assert!(made["created_at"].as_i64().unwrap() > 1_700_000_000);
    assert!(made.get("lifted_at").is_none());

    // The same target again, while in force: nothing new stored.
    fails_with(
        &env.kill(&["--image", "alpha", "--reason", "again"]),
        &format!(
            "kill failed: image alpha is already revoked by kill {id} (leaked signing key): lift that one first to change the reason (AlreadyExists)"
        ),
    );
    assert_eq!(env.listed().len(), 1);

    let text = env.kill(&["--code", CODE, "--reason", "backdoored binary"]);
    assert!(text.status.success());
    let text = String::from_utf8_lossy(&text.stdout).into_owned();
    let code_id = text
        .strip_prefix("Revocation ")
        .and_then(|t| t.split_whitespace().next())
        .unwrap()
        .to_owned();
    assert!(
        text.starts_with(&format!(
            "Revocation {code_id} in force: nothing it matches is issued, and every agent has been told\n"
        )),
        "{text}"
    );
    assert!(
        text.contains(&format!("Target    : code {CODE}\n")),
        "{text}"
    );
    assert!(text.contains("Reason    : backdoored binary\n"), "{text}");

    let list = ok(&["kill", "list", "--socket", &env.socket]);
    assert!(
        list.starts_with("Found 2 revocations (2 in force)\n"),
        "{list}"
    );
    assert!(list.contains(&format!("ID        : {id}\nStatus    : in force\nTarget    : image alpha\nReason    : leaked signing key\nCreated   : ")), "{list}");
    assert!(list.contains(&format!("by uid {}\n", env.uid())), "{list}");

    // Bad lifts: nothing changes.
    for (args, expected) in [
        (
            vec!["xyz", "--reason", "r"],
            "kill lift xyz failed: \"xyz\" is not a revocation id: ids are 16 lowercase hex characters, as `kill` and `kill list` print them (InvalidArgument)".to_owned(),
        ),
        (
            vec!["00000000000000ff", "--reason", "r"],
            "kill lift 00000000000000ff failed: no revocation 00000000000000ff: `kill list` shows every revocation and its id (NotFound)".to_owned(),
        ),
        (
            vec![id.as_str(), "--reason", ""],
            format!("kill lift {id} failed: reason is required: say why (it is kept and audited) (InvalidArgument)"),
        ),
    ] {
        fails_with(&env.lift(&args), &expected);
    }
    fails_with(
        &env.lift(&[&id]),
        "the following required arguments were not provided:",
    );
    assert!(env.listed().iter().all(|r| r["status"] == "in_force"));

    let lifted = env.lift(&[&id, "--reason", "key rotated", "--output", "json"]);
    assert!(lifted.status.success());
    let lifted: serde_json::Value = serde_json::from_slice(&lifted.stdout).unwrap();
    assert_eq!(lifted["status"], "lifted");
    assert_eq!(lifted["lift_reason"], "key rotated");
    assert_eq!(lifted["lifted_by_uid"], env.uid());
    let out = env.lift(&[&id, "--reason", "twice"]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.starts_with(&format!(
            "error: kill lift {id} failed: kill {id} was already lifted at "
        )),
        "{stderr}"
    );
    assert!(
        stderr.contains(" (key rotated) (FailedPrecondition)"),
        "{stderr}"
    );

    // The history stays, oldest first; a lifted target can be revoked again.
    let listed = env.listed();
    assert_eq!(listed.len(), 2);
    assert_eq!(listed[0]["id"], id.as_str());
    assert_eq!(listed[0]["status"], "lifted");
    assert_eq!(listed[0]["lift_reason"], "key rotated");
    assert_eq!(listed[1]["id"], code_id.as_str());
    assert_eq!(listed[1]["status"], "in_force");
    let list = ok(&["kill", "list", "--socket", &env.socket]);
    assert!(
        list.starts_with("Found 2 revocations (1 in force)\n"),
        "{list}"
    );
    assert!(list.contains(": key rotated\n"), "{list}");
    assert!(
        env.kill(&["--image", "alpha", "--reason", "again"])
            .status
            .success()
    );
    assert_eq!(env.listed().len(), 3);

    // The audit trail has the kill and the lift, with the operator's uid.
    let export = ok(&["audit", "export", "--socket", &env.socket]);
    let records: Vec<serde_json::Value> = export
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    let text = serde_json::to_string(&records).unwrap();
    for (kind, reason) in [
        ("kill_created", "leaked signing key"),
        ("kill_lifted", "key rotated"),
    ] {
        assert!(
            text.contains(kind) && text.contains(reason),
            "no {kind} record in {export}"
        );
    }
}
