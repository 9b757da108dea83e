//! Issue 12, attacks 3, 5 and 6: paths a workload names are measured in its
//! own view and with its own permissions, and model symlinks are followed.
//!
//! - Attack 3 (mount namespaces): a workload in its own mount namespace
//!   bind-mounts other content over the approved model directory. The agent
//!   measures what the workload sees (`/proc/<pid>/root`), so it is refused;
//!   and a workload whose approved model exists only in its namespace gets
//!   its SVID.
//! - Attack 5 (models behind symlinks): a Hugging Face cache snapshot links
//!   to `../../blobs/<sha>`; overwriting a blob changes the model digest,
//!   and a link leaving the model root is refused, naming the link.
//! - Attack 6 (digest oracle): a uid-65534 process naming a root-only
//!   directory that holds an approved model is refused, naming the
//!   directory it cannot read, before anything is hashed.
//!
//! The workload is always a child process (this test binary, run as the
//! ignored helper [`fetch_child`]): the process that connects is the one
//! measured.

use std::io::{BufRead, BufReader};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use tonic::Code;

use hallmark_proto::workload::X509svidRequest;

use crate::common::audit_records;
use crate::workload_api::{Deployment, Variant, deploy_with, raw_client, with_header};

/// Not a test of its own: the workload of the tests below. It connects to
/// the socket in `HALLMARK_TEST_SOCKET`, asks for its X.509-SVIDs and prints
/// `RESULT=OK <spiffe id>` or `RESULT=ERR <code> <message>`.
#[tokio::test]
#[ignore = "helper process, run by the attack_paths tests"]
async fn fetch_child() {
    let Some(socket) = std::env::var_os("HALLMARK_TEST_SOCKET") else {
        return;
    };
    let mut raw = raw_client(Path::new(&socket)).await;
    let first = async {
        raw.fetch_x509svid(with_header(X509svidRequest {}))
            .await?
            .into_inner()
            .message()
            .await
    };
    match first.await {
        Ok(Some(m)) => println!("RESULT=OK {}", m.svids[0].spiffe_id),
        Ok(None) => println!("RESULT=ERR Unknown stream ended"),
        Err(status) => println!("RESULT=ERR {:?} {}", status.code(), status.message()),
    }
}

/// What the workload got.
#[derive(Debug)]
enum Outcome {
    Svid(String),
    Refused(Code, String),
}

impl Outcome {
    fn refused(&self, code: Code, needle: &str) -> &str {
        match self {
            Outcome::Refused(c, message) if *c == code && message.contains(needle) => message,
            other => panic!("expected {code:?} naming {needle:?}, got {other:?}"),
        }
    }

    fn svid(&self) {
        assert!(
            matches!(self, Outcome::Svid(id) if id == "spiffe://example.org/test-agent"),
            "expected the SVID, got {self:?}"
        );
    }
}

/// Runs `command` (which ends by exec'ing [`fetch_child`]) and reads what it got.
async fn run_child(mut command: Command, socket: &Path) -> Outcome {
    command
        .env("HALLMARK_TEST_SOCKET", socket)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    tokio::task::spawn_blocking(move || {
        let mut child = command.spawn().unwrap();
        let stdout = child.stdout.take().unwrap();
        let line = BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
            .find_map(|l| l.split_once("RESULT=").map(|(_, r)| r.to_owned()));
        let output = child.wait_with_output().unwrap();
        let Some(line) = line else {
            panic!(
                "the workload printed no result: {}",
                String::from_utf8_lossy(&output.stderr)
            )
        };
        if let Some(id) = line.strip_prefix("OK ") {
            return Outcome::Svid(id.to_owned());
        }
        let rest = line.strip_prefix("ERR ").unwrap();
        let (code, message) = rest.split_once(' ').unwrap();
        let code = match code {
            "PermissionDenied" => Code::PermissionDenied,
            "ResourceExhausted" => Code::ResourceExhausted,
            "InvalidArgument" => Code::InvalidArgument,
            "Unavailable" => Code::Unavailable,
            _ => Code::Unknown,
        };
        Outcome::Refused(code, message.to_owned())
    })
    .await
    .unwrap()
}

/// The libtest arguments that run [`fetch_child`].
const CHILD_ARGS: &[&str] = &[
    "--exact",
    "attack_paths::fetch_child",
    "--ignored",
    "--nocapture",
    "--test-threads=1",
];

/// The workload, in a new private mount namespace where `setup` (a shell
/// script) runs first.
fn in_own_mount_namespace(setup: &str) -> Command {
    let exe = std::env::current_exe().unwrap();
    let script = format!("set -e\n{setup}\nexec \"$0\" \"$@\"");
    let mut command = Command::new("unshare");
    command
        .args(["--mount", "--propagation", "private", "sh", "-c", &script])
        .arg(exe)
        .args(CHILD_ARGS);
    command
}

/// The workload, as it is.
fn plain() -> Command {
    let mut command = Command::new(std::env::current_exe().unwrap());
    command.args(CHILD_ARGS);
    command
}

/// The workload as uid/gid 65534, with `HALLMARK_MODEL_DIR` = `model_dir`.
fn as_nobody(model_dir: &Path) -> Command {
    let mut command = Command::new(std::env::current_exe().unwrap());
    command
        .args(CHILD_ARGS)
        .env("HALLMARK_MODEL_DIR", model_dir)
        .uid(65534)
        .gid(65534);
    command
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), to.join(entry.file_name())).unwrap();
    }
}

/// The reasons of the audited refusals so far.
async fn refusals(d: &Deployment) -> Vec<String> {
    audit_records(&d._server)
        .await
        .into_iter()
        .filter(|r| r["kind"] == "svid_refused")
        .map(|r| r["fields"]["reason"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test]
async fn a_workload_that_mounts_other_content_over_the_approved_model_is_refused() {
    let d = deploy_with(Variant::default()).await;
    let evil = d._server.path("evil");
    std::fs::create_dir_all(&evil).unwrap();
    std::fs::write(evil.join("weights.bin"), b"backdoored weights").unwrap();
    std::fs::write(evil.join("config.json"), b"{\"layers\":1}").unwrap();
    // In the agent's view the approved model is untouched; in the
    // workload's, the image's model.path shows the other content.
    let setup = format!(
        "mount --bind '{}' '{}'",
        evil.display(),
        d.model_dir.display()
    );
    let outcome = run_child(in_own_mount_namespace(&setup), &d.socket).await;
    outcome.refused(Code::PermissionDenied, "model digest mismatch");
    assert!(
        refusals(&d)
            .await
            .iter()
            .any(|r| r.contains("model digest mismatch")),
        "the refusal is audited"
    );
    d.agent.shutdown().await;
}

#[tokio::test]
async fn a_workload_whose_approved_model_exists_only_in_its_namespace_gets_its_svid() {
    let d = deploy_with(Variant::default()).await;
    let approved = d._server.path("approved");
    copy_dir(&d.model_dir, &approved);
    // The agent's view of model.path no longer holds the approved model...
    std::fs::write(d.model_dir.join("weights.bin"), b"other weights").unwrap();
    // ...the workload's does: a tmpfs of its own, filled from a copy that
    // is then removed, so the approved bytes exist only in its namespace.
    let setup = format!(
        "mount -t tmpfs hallmark-e2e '{model}'\ncp '{approved}'/* '{model}'/\nrm -rf '{approved}'",
        model = d.model_dir.display(),
        approved = approved.display()
    );
    run_child(in_own_mount_namespace(&setup), &d.socket)
        .await
        .svid();
    assert!(!approved.exists());
    d.agent.shutdown().await;
}

/// A Hugging Face cache repository under `base`: two blobs, a snapshot
/// linking to them, a ref. Returns the snapshot directory.
fn hf_cache(base: &Path) -> PathBuf {
    let repo = base.join("hub/models--org--tiny");
    std::fs::create_dir_all(repo.join("blobs")).unwrap();
    std::fs::create_dir_all(repo.join("refs")).unwrap();
    let snapshot = repo.join("snapshots/0123abcd");
    std::fs::create_dir_all(&snapshot).unwrap();
    std::fs::write(repo.join("blobs/aaaa"), b"tiny model weights").unwrap();
    std::fs::write(repo.join("blobs/bbbb"), b"{\"layers\":1}").unwrap();
    std::fs::write(repo.join("refs/main"), b"0123abcd").unwrap();
    std::os::unix::fs::symlink("../../blobs/aaaa", snapshot.join("model.safetensors")).unwrap();
    std::os::unix::fs::symlink("../../blobs/bbbb", snapshot.join("config.json")).unwrap();
    snapshot
}

#[tokio::test]
async fn overwriting_a_hugging_face_blob_changes_the_model_digest() {
    let d = deploy_with(Variant {
        model: Some(&hf_cache),
        ..Variant::default()
    })
    .await;
    run_child(plain(), &d.socket).await.svid();

    let blob = d._server.path("hub/models--org--tiny/blobs/aaaa");
    std::fs::write(&blob, b"tiny model weights, poisoned").unwrap();
    run_child(plain(), &d.socket)
        .await
        .refused(Code::PermissionDenied, "model digest mismatch");
    assert!(
        refusals(&d)
            .await
            .iter()
            .any(|r| r.contains("model digest mismatch")),
        "the refusal is audited"
    );

    // Restored, then a link that leaves the model root: refused, naming
    // the link and its target.
    std::fs::write(&blob, b"tiny model weights").unwrap();
    let outside = d._server.path("outside.json");
    std::fs::write(&outside, b"{\"layers\":1}").unwrap();
    let link = d.model_dir.join("config.json");
    std::fs::remove_file(&link).unwrap();
    std::os::unix::fs::symlink("../../../../../outside.json", &link).unwrap();
    let outcome = run_child(plain(), &d.socket).await;
    let message = outcome.refused(Code::PermissionDenied, "leaves the model root");
    assert!(
        message.contains("config.json") && message.contains("../../../../../outside.json"),
        "{message}"
    );
    d.agent.shutdown().await;
}

#[tokio::test]
async fn a_workload_cannot_have_the_agent_digest_a_directory_it_cannot_read() {
    let d = deploy_with(Variant::default()).await;
    // uid 65534 must reach the socket: the test's temp dir is 0700.
    std::fs::set_permissions(d._server.path(""), std::fs::Permissions::from_mode(0o755)).unwrap();
    // A root-only directory holding a model with the approved digest.
    let secret = d._server.path("secret");
    copy_dir(&d.model_dir, &secret.join("model"));
    std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o700)).unwrap();
    let outcome = run_child(as_nobody(&secret.join("model")), &d.socket).await;
    let message = outcome.refused(Code::PermissionDenied, "uid 65534");
    assert!(message.contains(&secret.display().to_string()), "{message}");
    assert!(
        !message.contains("sha256:"),
        "no digest is echoed: {message}"
    );

    // The same model where uid 65534 can read it: the SVID.
    let public = d._server.path("public");
    copy_dir(&d.model_dir, &public.join("model"));
    run_child(as_nobody(&public.join("model")), &d.socket)
        .await
        .svid();

    // A file inside a readable directory that the uid cannot read.
    std::fs::set_permissions(
        public.join("model/weights.bin"),
        std::fs::Permissions::from_mode(0o600),
    )
    .unwrap();
    let outcome = run_child(as_nobody(&public.join("model")), &d.socket).await;
    let message = outcome.refused(Code::PermissionDenied, "uid 65534");
    assert!(message.contains("weights.bin"), "{message}");
    d.agent.shutdown().await;
}

/// Issue 12, attack 6, the executable: a uid may run a program it cannot
/// read (mode 0711), and "code digest unknown" named its digest, telling
/// the uid something about the program's content. The refusal withholds it
/// from such a process; one that can read its executable is told, and the
/// issuer's audit log names it.
#[tokio::test]
async fn a_workload_that_cannot_read_its_executable_is_not_told_its_digest() {
    use sha2::{Digest, Sha256};
    let d = deploy_with(Variant::default()).await;
    // uid 65534 must reach the socket and the programs: the temp dir is 0700.
    std::fs::set_permissions(d._server.path(""), std::fs::Permissions::from_mode(0o755)).unwrap();
    // This binary with one byte more: the same program, a digest no image
    // allows.
    let mut program = std::fs::read(std::env::current_exe().unwrap()).unwrap();
    program.push(0);
    let digest = hex::encode(Sha256::digest(&program));
    let bin = d._server.path("bin");
    std::fs::create_dir(&bin).unwrap();
    std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(0o755)).unwrap();
    for (mode, told) in [(0o711, false), (0o755, true)] {
        let exe = bin.join(format!("e2e-{mode:o}"));
        std::fs::write(&exe, &program).unwrap();
        std::fs::set_permissions(&exe, std::fs::Permissions::from_mode(mode)).unwrap();
        let mut command = Command::new(&exe);
        command.args(CHILD_ARGS).uid(65534).gid(65534);
        let outcome = run_child(command, &d.socket).await;
        let message = outcome.refused(Code::PermissionDenied, "code digest unknown");
        assert_eq!(message.contains(&digest), told, "mode {mode:o}: {message}");
        if !told {
            assert!(message.contains("withheld"), "{message}");
        }
    }
    let audited = refusals(&d)
        .await
        .iter()
        .filter(|r| r.contains(&digest))
        .count();
    // The first refusal is audited in full (the second, alike, may be
    // folded into the flood limiter's count).
    assert!(audited >= 1, "the operator sees the withheld digest");
    d.agent.shutdown().await;
}
