//! `audit export`, `audit verify --from-export` on tampered copies of an
//! export, and `audit tail [-f]`, through the real binary.

#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod audit_support;

use std::io::BufRead as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::Value;

use audit_support::{BIN, Node, cli, code, parse_report, stderr, stdout};
use hallmark_server::audit::AuditRecord;
use hallmark_server::image::{Algorithm, SigningKey};

/// A running issuer with some history, a checkpoint over all of it taken
/// just before the export, the export's lines and the pinned key.
fn exported() -> (Node, Vec<String>, PathBuf) {
    let mut node = Node::new("");
    node.start();
    node.ok(&["token", "generate"]);
    node.ok(&["token", "generate", "--ttl", "5m"]);
    node.ok(&["agent", "list"]);
    let key = node.save_key();
    node.ok(&["audit", "checkpoint"]);
    let lines: Vec<String> = node
        .ok(&["audit", "export", "--output", "jsonl"])
        .lines()
        .map(str::to_owned)
        .collect();
    (node, lines, key)
}

/// The position of the record line with `seq`.
fn line_of(lines: &[String], seq: u64) -> usize {
    lines
        .iter()
        .position(|l| record(l).is_some_and(|r| r.seq == seq))
        .unwrap()
}

fn record(line: &str) -> Option<AuditRecord> {
    AuditRecord::decode(line.as_bytes()).ok()
}

fn first_of(lines: &[String], kind: &str) -> u64 {
    lines
        .iter()
        .filter_map(|l| record(l))
        .find(|r| r.kind == kind)
        .unwrap()
        .seq
}

/// Writes `lines` to a file and verifies it offline with `key`.
fn verify_file(dir: &Path, name: &str, lines: &[String], key: &Path) -> (i32, Value) {
    let path = dir.join(name);
    std::fs::write(&path, lines.join("\n") + "\n").unwrap();
    let out = cli(&[
        "audit",
        "verify",
        "--from-export",
        path.to_str().unwrap(),
        "--key",
        key.to_str().unwrap(),
        "--output",
        "json",
    ]);
    parse_report(&out)
}

fn problems(report: &Value) -> Vec<(u64, String)> {
    report["problems"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p["seq"].as_u64().unwrap(),
                p["kind"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

fn tampered(report: (i32, Value)) -> Vec<(u64, String)> {
    let (code, report) = report;
    assert_eq!(code, 2, "{report:#}");
    assert_eq!(report["result"], "tampered");
    problems(&report)
}

#[test]
fn an_export_is_the_stored_log_and_verifies_offline() {
    let (node, lines, key) = exported();
    // Every line is one canonical record or checkpoint; records run from 1.
    let seqs: Vec<u64> = lines
        .iter()
        .filter_map(|l| record(l))
        .map(|r| r.seq)
        .collect();
    assert_eq!(seqs, (1..=seqs.len() as u64).collect::<Vec<_>>());
    assert!(lines.last().unwrap().starts_with("{\"checkpoint\":"));
    // Each record's prev is `sha256sum` of the line before it.
    use sha2::Digest as _;
    let records: Vec<&String> = lines.iter().filter(|l| record(l).is_some()).collect();
    for pair in records.windows(2) {
        let hash = hex::encode(sha2::Sha256::digest(pair[0].as_bytes()));
        assert_eq!(record(pair[1]).unwrap().prev.to_hex(), hash);
    }
    let (code, report) = verify_file(node.dir.path(), "ok.jsonl", &lines, &key);
    assert_eq!(code, 0, "{report:#}");
    assert_eq!(report["result"], "verified");
    assert_eq!(report["verified_through"], seqs.len() as u64);

    // Text output says so too, and without --key the issuer's key is used.
    let path = node.path("ok.jsonl");
    let out = node.run(&["audit", "verify", "--from-export", path.to_str().unwrap()]);
    assert_eq!(code_of(&out), 0, "{}", stderr(&out));
    let text = stdout(&out);
    assert!(text.contains("Result          : VERIFIED"), "{text}");
    assert!(text.contains("pin it with --key"), "{text}");
}

fn code_of(out: &std::process::Output) -> i32 {
    code(out)
}

#[test]
fn each_kind_of_tampering_with_an_export_is_named() {
    let (node, lines, key) = exported();
    let dir = node.dir.path();
    let seq = first_of(&lines, "token_generated");

    let mut changed = lines.clone();
    let at = line_of(&changed, seq);
    let mut r = record(&changed[at]).unwrap();
    r.fields.insert("uid".into(), 4242.into());
    changed[at] = String::from_utf8(r.encode()).unwrap();
    assert_eq!(
        tampered(verify_file(dir, "changed.jsonl", &changed, &key)),
        [(seq, "changed".to_owned())]
    );

    let mut edited = lines.clone();
    edited[at] = edited[at].replacen(",\"", ", \"", 1);
    assert_eq!(
        tampered(verify_file(dir, "edited.jsonl", &edited, &key)),
        [(seq, "malformed".to_owned())]
    );

    let mut deleted = lines.clone();
    deleted.remove(at);
    assert_eq!(
        tampered(verify_file(dir, "deleted.jsonl", &deleted, &key)),
        [(seq, "missing".to_owned())]
    );

    let mut inserted = lines.clone();
    let forged = AuditRecord {
        kind: "agent_unbanned".into(),
        ..record(&lines[at]).unwrap()
    };
    inserted.insert(at, String::from_utf8(forged.encode()).unwrap());
    let (code, report) = verify_file(dir, "inserted.jsonl", &inserted, &key);
    assert_eq!(
        tampered((code, report.clone())),
        [(seq, "inserted".to_owned())]
    );
    assert_eq!(report["problems"][0]["position"], at as u64 + 1, "the line");

    let mut reordered = lines.clone();
    reordered.swap(at, line_of(&lines, seq + 1));
    assert_eq!(
        tampered(verify_file(dir, "reordered.jsonl", &reordered, &key)),
        [(seq, "reordered".to_owned())]
    );

    // Records cut from under the final checkpoint.
    let last = record(&lines[lines.len() - 2]).unwrap().seq;
    let mut truncated = lines.clone();
    truncated.drain(line_of(&lines, last - 1)..lines.len() - 1);
    assert_eq!(
        tampered(verify_file(dir, "truncated.jsonl", &truncated, &key)),
        [(last - 1, "truncated".to_owned())]
    );

    // Verified with the wrong key.
    let other = dir.join("other.pub");
    let k = SigningKey::from_pkcs8_der(&SigningKey::generate_pkcs8(Algorithm::Ed25519).unwrap())
        .unwrap();
    std::fs::write(&other, k.public_key().to_pem()).unwrap();
    let found = tampered(verify_file(dir, "ok.jsonl", &lines, &other));
    assert_eq!(found, [(last, "unknown_key".to_owned())]);
}

#[test]
fn records_after_the_newest_checkpoint_are_an_unverifiable_tail() {
    let (node, _, key) = exported();
    node.ok(&["token", "generate"]);
    let lines: Vec<String> = node
        .ok(&["audit", "export"])
        .lines()
        .map(str::to_owned)
        .collect();
    let checkpoint_line = lines
        .iter()
        .rposition(|l| l.starts_with("{\"checkpoint\":"))
        .unwrap();
    assert!(
        checkpoint_line < lines.len() - 2,
        "records follow the checkpoint"
    );
    let (code, report) = verify_file(node.dir.path(), "tail.jsonl", &lines, &key);
    assert_eq!(code, 3, "{report:#}");
    assert_eq!(report["result"], "unverifiable_tail");
    // Cutting the tail short is still an unverifiable tail, not success.
    let cut = &lines[..lines.len() - 1];
    let (code, report) = verify_file(node.dir.path(), "cut.jsonl", cut, &key);
    assert_eq!(code, 3, "{report:#}");
    assert!(problems(&report).is_empty());
    let first = report["unverifiable_tail"]["first_seq"].as_u64().unwrap();
    assert_eq!(Some(first - 1), report["verified_through"].as_u64());
}

#[test]
fn export_since_a_sequence_number_or_a_time() {
    let (node, lines, key) = exported();
    let out = node.ok(&["audit", "export", "--since", "3"]);
    let partial: Vec<String> = out.lines().map(str::to_owned).collect();
    assert_eq!(record(&partial[0]).unwrap().seq, 3);
    // As a full log it lacks seq 1..2; accepted as a partial export.
    assert_eq!(
        tampered(verify_file(node.dir.path(), "p.jsonl", &partial, &key)),
        [(1, "missing".to_owned())]
    );
    let path = node.path("p.jsonl");
    let out = cli(&[
        "audit",
        "verify",
        "--from-export",
        path.to_str().unwrap(),
        "--key",
        key.to_str().unwrap(),
        "--partial",
        "--output",
        "json",
    ]);
    let (code, report) = parse_report(&out);
    assert!(code == 0 || code == 3, "{report:#}");
    assert!(problems(&report).is_empty(), "{report:#}");
    assert_eq!(report["partial"], true);

    let all = node.ok(&["audit", "export", "--since", "2000-01-01T00:00:00Z"]);
    assert_eq!(all.lines().next().unwrap(), lines[0]);
    let none = node.ok(&["audit", "export", "--since", "2999-01-01T00:00:00Z"]);
    assert_eq!(none, "");
    let out = node.run(&["audit", "export", "--since", "someday"]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("--since"), "{}", stderr(&out));
}

#[test]
fn tail_prints_the_newest_records_and_follows_until_the_issuer_stops() {
    let mut node = Node::new("");
    node.start();
    node.ok(&["agent", "list"]);
    let text = node.ok(&["audit", "tail", "-n", "2"]);
    let shown: Vec<&str> = text.lines().collect();
    assert_eq!(shown.len(), 2, "{text}");
    assert!(
        shown[1].contains("admin_call") && shown[1].contains("method=ListAgents"),
        "{text}"
    );
    let json = node.ok(&["audit", "tail", "-n", "1", "--output", "json"]);
    let last = AuditRecord::decode(json.trim_end().as_bytes()).unwrap();
    assert_eq!(last.kind, "admin_call");

    let mut follower = Command::new(BIN)
        .args([
            "audit",
            "tail",
            "-f",
            "-n",
            "0",
            "--output",
            "json",
            "--socket",
            &node.socket(),
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let out = follower.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(out).lines() {
            let Ok(line) = line else { return };
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    // The follower's own call is the first thing it sees.
    let first = rx.recv_timeout(Duration::from_secs(60)).unwrap();
    assert!(first.contains("\"method\":\"ReadAudit\""), "{first}");
    node.ok(&[
        "token",
        "generate",
        "--spiffe-id",
        "spiffe://example.org/hallmark/agent/join_token/followed",
    ]);
    let seen = loop {
        let line = rx
            .recv_timeout(Duration::from_secs(60))
            .expect("the new record reaches the follower");
        if line.contains("followed") {
            break line;
        }
    };
    assert_eq!(
        AuditRecord::decode(seen.as_bytes()).unwrap().kind,
        "token_generated"
    );
    node.stop();
    let status = follower.wait().unwrap();
    assert!(
        status.success(),
        "a follower ends cleanly when the issuer stops"
    );
}
