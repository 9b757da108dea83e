//! The audit trail against someone with write access to the issuer's data
//! directory (issue 13): each attack that used to end in VERIFIED, or in an
//! issuer that went on minting over rewritten or missing state, is now
//! refused at start, halts the running issuer, or is named by `audit
//! verify` (with a witness for a rollback of everything).

#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod audit_support;

use std::path::Path;

use serde_json::Value;

use audit_support::{Node, Store, eventually, ready};
use hallmark_server::audit::{RecordHash, SignedCheckpoint};

const CODE: &str = "3333333333333333333333333333333333333333333333333333333333333333";

/// A witness file beside the data directory (another mount in production).
fn witnessed(extra: &str) -> (Node, std::path::PathBuf) {
    let tmp = tempfile::tempdir().unwrap().keep();
    let witness = tmp.join("witness.log");
    let node = Node::new(&format!(
        "{extra}\n[audit]\ncheckpoint_interval = \"1h\"\n[[audit.witness]]\nfile = \"{}\"\n",
        witness.display()
    ));
    (node, witness)
}

/// History with a checkpointed `kill_created` in the middle: tokens, a
/// checkpoint, the kill, a checkpoint, more tokens; then a clean stop (a
/// final checkpoint). Returns the kill's sequence number.
fn history(node: &mut Node) -> u64 {
    node.start();
    node.ok(&["token", "generate"]);
    node.ok(&["audit", "checkpoint"]);
    node.ok(&["kill", "--code", CODE, "--reason", "stolen model weights"]);
    node.ok(&["audit", "checkpoint"]);
    node.ok(&["token", "generate"]);
    node.ok(&["token", "generate"]);
    node.stop();
    let store = Store::open(&node.data_dir());
    (1..=store.last_seq())
        .find(|&seq| store.record(seq).kind == "kill_created")
        .unwrap()
}

/// Drops record `seq`, renumbers and re-chains every later record (no key
/// needed), and deletes the checkpoints from `seq` on: the attack of
/// issue 13, item 1.
fn drop_and_rechain(node: &Node, seq: u64) {
    let store = Store::open(&node.data_dir());
    let last = store.last_seq();
    let mut prev = store.hash(seq - 1);
    for s in seq + 1..=last {
        let mut record = store.record(s);
        record.seq = s - 1;
        record.prev = prev;
        let bytes = record.encode();
        prev = RecordHash::of(&bytes);
        store.put(s - 1, &bytes);
    }
    store.remove(last);
    let keep: Vec<(u64, Vec<u8>)> = store
        .checkpoints()
        .into_iter()
        .filter(|(s, _)| *s < seq)
        .collect();
    store.clear_checkpoints();
    for (s, bytes) in keep {
        store.put_checkpoint(s, &bytes);
    }
    store.close();
}

fn kinds(report: &Value) -> Vec<String> {
    report["problems"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["kind"].as_str().unwrap().to_owned())
        .collect()
}

#[test]
fn a_rechained_log_after_a_checkpoint_is_refused_at_start_and_named_by_the_witness() {
    let (mut node, witness) = witnessed("");
    let kill = history(&mut node);
    node.start();
    let key = node.save_key();
    node.stop();
    drop_and_rechain(&node, kill);

    let (_, log) = node.start_refused();
    assert!(log.contains("audit log tampered with"), "{log}");
    assert!(log.contains("the database saw"), "{log}");
    assert!(log.contains("audit reset --reason"), "{log}");

    // Offline, the witness proves the forged log lacks what it saw signed.
    let witness = witness.to_str().unwrap();
    let (code, report) =
        node.verify_offline(&["--key", key.to_str().unwrap(), "--witness", witness]);
    assert_eq!(code, 2, "{report:#}");
    assert!(
        kinds(&report).iter().any(|k| k == "witness_missing"),
        "{report:#}"
    );
}

#[test]
fn a_deleted_checkpoints_log_is_refused_at_start_until_an_audit_reset() {
    let mut node = Node::new("");
    history(&mut node);
    let checkpoints = node.data_dir().join("audit/checkpoints.log");
    std::fs::remove_file(&checkpoints).unwrap();
    let (_, log) = node.start_refused();
    assert!(
        log.contains("checkpoints.log does not hold: checkpoints were removed or replaced"),
        "{log}"
    );

    // Starting over is an explicit, recorded act.
    let old = Store::open(&node.data_dir());
    let (old_last, old_head) = (old.last_seq(), old.hash(old.last_seq()));
    drop(old);
    let config = node.config.to_str().unwrap().to_owned();
    let out = audit_support::cli(&[
        "audit",
        "reset",
        "--reason",
        "checkpoints.log lost in incident 42",
        "-c",
        &config,
    ]);
    assert!(out.status.success(), "{}", audit_support::stderr(&out));
    let moved: Vec<_> = std::fs::read_dir(node.data_dir())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.starts_with("audit.reset-"))
        .collect();
    assert_eq!(moved.len(), 1, "the old files are kept");
    node.start();
    let key = node.save_key();
    node.ok(&["audit", "checkpoint"]);
    let (code, report) = node.verify(&key);
    assert_eq!(code, 0, "{report:#}");
    let store = Store::open(&node.data_dir());
    let first = store.record(1);
    assert_eq!(first.kind, "audit_reset");
    assert_eq!(
        first.fields["reason"],
        "checkpoints.log lost in incident 42"
    );
    assert_eq!(first.fields["old_last_seq"], old_last);
    assert_eq!(first.fields["old_head"], old_head.to_hex());
}

#[test]
fn emptied_audit_files_are_refused_at_start() {
    let mut node = Node::new("");
    history(&mut node);
    for name in ["records.log", "checkpoints.log"] {
        std::fs::write(node.data_dir().join("audit").join(name), b"").unwrap();
    }
    let (_, log) = node.start_refused();
    assert!(
        log.contains("but records.log ends at nothing: records were removed"),
        "{log}"
    );
}

#[test]
fn an_audit_log_beside_an_empty_database_is_refused_and_so_is_the_reverse() {
    let mut node = Node::new("");
    history(&mut node);
    let db = node.data_dir().join("db");
    let saved = node.path("db.saved");
    std::fs::rename(&db, &saved).unwrap();
    let (_, log) = node.start_refused();
    assert!(log.contains("but the database is empty"), "{log}");

    std::fs::remove_dir_all(&db).ok();
    std::fs::rename(&saved, &db).unwrap();
    std::fs::remove_dir_all(node.data_dir().join("audit")).unwrap();
    let (_, log) = node.start_refused();
    assert!(log.contains("records.log ends at nothing"), "{log}");
}

#[test]
fn a_rollback_of_the_whole_data_directory_is_caught_by_the_witness() {
    let (mut node, witness) = witnessed("");
    node.start();
    node.ok(&["token", "generate"]);
    let key = node.save_key();
    node.stop();
    let backup = node.path("backup");
    copy_dir(&node.data_dir(), &backup);
    node.start();
    node.ok(&["kill", "--code", CODE, "--reason", "compromised"]);
    node.stop();
    // Store, records and checkpoints rolled back together: consistent, so
    // the issuer starts, and the log alone verifies...
    std::fs::remove_dir_all(node.data_dir()).unwrap();
    copy_dir(&backup, &node.data_dir());
    node.start();
    node.ok(&["audit", "checkpoint"]);
    let (code, _) = node.verify(&key);
    assert_eq!(code, 0);
    // ...but not against the witness.
    let out = node.run(&[
        "audit",
        "verify",
        "--key",
        key.to_str().unwrap(),
        "--witness",
        witness.to_str().unwrap(),
        "--output",
        "json",
    ]);
    let (code, report) = audit_support::parse_report(&out);
    assert_eq!(code, 2, "{report:#}");
    assert_eq!(report["result"], "tampered");
    assert!(
        kinds(&report).iter().all(|k| k == "witness_missing"),
        "{report:#}"
    );
}

#[test]
fn a_removed_audit_directory_under_a_running_issuer_halts_it_and_fails_ready() {
    let (mut node, port) = Node::with_metrics("");
    node.start();
    node.ok(&["token", "generate"]);
    assert_eq!(ready(port).0, 200);
    std::fs::remove_dir_all(node.data_dir().join("audit")).unwrap();
    let body = eventually("/ready to fail", || {
        let (status, body) = ready(port);
        (status == 503).then_some(body)
    });
    assert!(
        body.contains("records.log was removed under the running issuer"),
        "{body}"
    );
    let out = node.run(&["token", "generate"]);
    assert!(!out.status.success());
    assert!(
        audit_support::stderr(&out).contains("the audit log is halted"),
        "{}",
        audit_support::stderr(&out)
    );
}

#[test]
fn a_removed_database_under_a_running_issuer_halts_it_and_the_restart_is_refused() {
    let (mut node, port) = Node::with_metrics("");
    node.start();
    node.ok(&["token", "generate"]);
    std::fs::remove_dir_all(node.data_dir().join("db")).unwrap();
    let body = eventually("/ready to fail", || {
        let (status, body) = ready(port);
        (status == 503).then_some(body)
    });
    assert!(
        body.contains("was removed under the running issuer"),
        "{body}"
    );
    assert!(!node.run(&["token", "generate"]).status.success());
    node.crash();
    let (_, log) = node.start_refused();
    assert!(log.contains("but the database is empty"), "{log}");
}

#[test]
fn a_deleted_middle_checkpoint_is_named_offline() {
    let mut node = Node::new("");
    history(&mut node);
    node.start();
    let key = node.save_key();
    node.stop();
    let store = Store::open(&node.data_dir());
    let checkpoints = store.checkpoints();
    assert!(checkpoints.len() >= 3, "{}", checkpoints.len());
    let (removed, _) = checkpoints[1].clone();
    store.clear_checkpoints();
    for (seq, bytes) in checkpoints.iter().filter(|(s, _)| *s != removed) {
        store.put_checkpoint(*seq, bytes);
    }
    store.close();
    let (code, report) = node.verify_offline(&["--key", key.to_str().unwrap()]);
    assert_eq!(code, 2, "{report:#}");
    assert_eq!(kinds(&report), ["checkpoint_missing"], "{report:#}");
    let chained = SignedCheckpoint::decode(&checkpoints[2].1).unwrap();
    assert!(chained.checkpoint.chain.is_some());
}

/// A second issuer's config: its own admin socket, `node`'s data directory.
fn second_config(node: &Node) -> std::path::PathBuf {
    let second = node.path("second.toml");
    let config = std::fs::read_to_string(&node.config)
        .unwrap()
        .replace("admin.sock", "admin2.sock");
    std::fs::write(&second, config).unwrap();
    second
}

fn copy_dir(from: &Path, to: &Path) {
    let status = std::process::Command::new("cp")
        .args(["-a", from.to_str().unwrap(), to.to_str().unwrap()])
        .status()
        .unwrap();
    assert!(status.success());
}

/// Whether this machine lets an unprivileged user mount a tmpfs in a new
/// user and mount namespace (root always can).
fn can_mount_tmpfs() -> bool {
    std::process::Command::new("unshare")
        .args(["-rm", "sh", "-c", "mount -t tmpfs -o size=1m tmpfs /mnt"])
        .status()
        .is_ok_and(|s| s.success())
}

#[test]
fn a_full_disk_fails_closed_and_the_issuer_recovers_once_space_is_back() {
    if !can_mount_tmpfs() {
        eprintln!("SKIPPED: cannot mount a tmpfs in a user namespace here (`unshare -rm` refused)");
        return;
    }
    let (mut node, port) = Node::with_metrics("");
    let audit = node.data_dir().join("audit");
    std::fs::create_dir_all(&audit).unwrap();
    // The issuer runs in its own mount namespace, with its audit directory
    // on a 2 MiB tmpfs that the test can fill through /proc/<pid>/root.
    let script = format!(
        "mount -t tmpfs -o size=2m,mode=0700 tmpfs {} && exec {} run --config {}",
        audit.display(),
        audit_support::BIN,
        node.config.display()
    );
    let log = std::fs::File::create(node.path("daemon.log")).unwrap();
    let child = std::process::Command::new("unshare")
        .args(["-rm", "sh", "-c", &script])
        .stdout(std::process::Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap();
    let pid = child.id();
    node.daemon = Some(child);
    eventually("the issuer to answer", || {
        node.run(&["healthcheck"]).status.success().then_some(())
    });
    node.ok(&["token", "generate"]);
    assert_eq!(ready(port).0, 200);

    let filler = Path::new(&format!("/proc/{pid}/root"))
        .join(audit.strip_prefix("/").unwrap())
        .join("filler");
    fill(&filler);
    // Some appends may still fit in the journal's last page; one soon
    // does not, and that call is refused.
    let refused = (0..50).find_map(|_| {
        let out = node.run(&["token", "generate"]);
        (!out.status.success()).then(|| audit_support::stderr(&out))
    });
    let refused = refused.expect("a full disk must refuse the call");
    assert!(refused.contains("No space left on device"), "{refused}");
    let body = eventually("/ready to fail", || {
        let (status, body) = ready(port);
        (status == 503).then_some(body)
    });
    assert!(body.contains("the audit journal cannot write"), "{body}");
    assert!(!node.run(&["token", "generate"]).status.success());

    std::fs::remove_file(&filler).unwrap();
    eventually("/ready to recover", || (ready(port).0 == 200).then_some(()));
    node.ok(&["token", "generate"]);
    let key = node.save_key();
    node.ok(&["audit", "checkpoint"]);
    let (code, report) = node.verify(&key);
    assert_eq!(code, 0, "nothing lost, nothing forged: {report:#}");
}

fn fill(path: &Path) {
    use std::io::Write as _;
    let mut file = std::fs::File::create(path).unwrap();
    let block = vec![0u8; 64 * 1024];
    loop {
        match file.write(&block) {
            Ok(0) => break,
            Ok(_) => {}
            Err(e) if e.raw_os_error() == Some(28) => break,
            Err(e) => panic!("filling {}: {e}", path.display()),
        }
    }
    // Fill the last partial block too.
    while file.write(&[0u8]).is_ok_and(|n| n == 1) {}
}

#[test]
fn a_second_issuer_on_the_same_data_directory_is_told_who_holds_it() {
    let mut node = Node::new("");
    node.start();
    let first = node.daemon.as_ref().unwrap().id();
    let second = second_config(&node);
    let out = audit_support::cli(&["run", "--config", second.to_str().unwrap()]);
    assert!(!out.status.success());
    let stderr = audit_support::stderr(&out);
    let expected = format!("another hallmark-server (pid {first}) holds the data directory");
    assert_eq!(stderr.matches(&expected).count(), 1, "said once: {stderr}");
    assert!(!stderr.contains("WouldBlock"), "{stderr}");
    // And `audit reset` does not touch a running issuer's log.
    let out = audit_support::cli(&[
        "audit",
        "reset",
        "--reason",
        "x",
        "--data-dir",
        node.data_dir().to_str().unwrap(),
    ]);
    assert!(!out.status.success());
    assert!(audit_support::stderr(&out).contains(&expected));
    assert!(
        node.data_dir().join("audit/records.log").exists(),
        "nothing moved"
    );
    assert!(
        !std::fs::read_dir(node.data_dir()).unwrap().any(|e| e
            .unwrap()
            .file_name()
            .to_string_lossy()
            .starts_with("audit.reset-")),
        "nothing moved"
    );
}

#[test]
fn a_fatal_start_up_error_is_json_when_logs_are() {
    let mut node = Node::new("");
    node.start();
    let second = second_config(&node);
    let out = audit_support::cli(&[
        "run",
        "--config",
        second.to_str().unwrap(),
        "--log-format",
        "json",
    ]);
    assert!(!out.status.success());
    let stderr = audit_support::stderr(&out);
    let last: Value = serde_json::from_str(stderr.lines().last().unwrap())
        .unwrap_or_else(|e| panic!("{e}: not JSON: {stderr}"));
    assert_eq!(last["level"], "ERROR", "{last}");
    assert!(
        last["fields"]["error"]
            .as_str()
            .unwrap()
            .contains("holds the data directory"),
        "{last}"
    );
}

#[test]
fn json_logs_carry_uids_as_integers() {
    let mut node = Node::new("");
    let config = std::fs::read_to_string(&node.config).unwrap().replace(
        "log_level = \"warn\"",
        "log_level = \"info\"\nlog_format = \"json\"",
    );
    std::fs::write(&node.config, config).unwrap();
    node.start();
    node.ok(&["token", "generate"]);
    node.stop();
    let log = std::fs::read_to_string(node.path("daemon.log")).unwrap();
    let line: Value = log
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .find(|v| v["fields"]["message"] == "join token generated")
        .unwrap_or_else(|| panic!("no token record logged: {log}"));
    assert!(line["fields"]["uid"].is_u64(), "{line}");
}
