//! Tampering with the stored audit log, as someone who can write the
//! issuer's database would: stop the issuer, edit its sled store, start it
//! again, and `audit verify` (with the audit key pinned) must say which
//! sequence number and what is wrong.

#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod audit_support;

use std::path::{Path, PathBuf};

use serde_json::Value;

use audit_support::{Node, Store};
use hallmark_server::audit::{AuditRecord, Checkpoint, RecordHash, SignedCheckpoint};
use hallmark_server::image::{Algorithm, SigningKey};

/// An issuer that wrote some history and stopped cleanly (so a checkpoint
/// covers all of it), and its audit public key.
fn stopped_issuer() -> (Node, PathBuf) {
    let mut node = Node::new("");
    node.start();
    for _ in 0..3 {
        node.ok(&["token", "generate"]);
    }
    node.ok(&["agent", "list"]);
    let key = node.save_key();
    node.stop();
    (node, key)
}

/// The first stored record of `kind`.
fn first_of(store: &Store, kind: &str) -> u64 {
    (1..=store.last_seq())
        .find(|&seq| store.record(seq).kind == kind)
        .unwrap_or_else(|| panic!("no {kind} record"))
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

/// Restarts the issuer and verifies with the pinned key: tampering found.
/// The issuer refuses to start when the damage reaches its newest
/// checkpoint or what its database saw; otherwise it starts. Either way
/// `audit verify` (offline, or against the running issuer) names it.
fn tampered(node: &mut Node, key: &Path) -> Value {
    let (code, report) = match node.try_start() {
        Ok(()) => node.verify(key),
        Err(log) => {
            assert!(log.contains("audit log tampered with"), "{log}");
            node.verify_offline(&["--key", key.to_str().unwrap()])
        }
    };
    assert_eq!(code, 2, "{report:#}");
    assert_eq!(report["result"], "tampered", "{report:#}");
    report
}

#[test]
fn untouched_history_verifies_after_a_restart_and_a_checkpoint() {
    let (mut node, key) = stopped_issuer();
    node.start();
    // The restart's own records are not signed yet.
    let (code, report) = node.verify_all(&key);
    assert_eq!(code, 3, "{report:#}");
    assert_eq!(report["result"], "unverifiable_tail");
    assert!(problems(&report).is_empty());
    let signed_before = report["verified_through"].as_u64().unwrap();
    assert_eq!(report["unverifiable_tail"]["first_seq"], signed_before + 1);
    node.ok(&["audit", "checkpoint"]);
    let (code, report) = node.verify(&key);
    assert_eq!(code, 0, "{report:#}");
    assert_eq!(report["result"], "verified");
    assert_eq!(report["verified_through"], report["last_seq"]);
    assert_eq!(report["key_pinned"], true);
}

#[test]
fn a_changed_record_is_named() {
    let (mut node, key) = stopped_issuer();
    let store = Store::open(&node.data_dir());
    let seq = first_of(&store, "token_generated");
    let mut record = store.record(seq);
    record.fields.insert(
        "spiffe_id".into(),
        "spiffe://example.org/hallmark/agent/join_token/innocent".into(),
    );
    store.put(seq, &record.encode());
    store.close();
    let report = tampered(&mut node, &key);
    assert_eq!(
        problems(&report),
        [(seq, "changed".to_owned())],
        "{report:#}"
    );
    let message = report["problems"][0]["message"].as_str().unwrap();
    assert!(
        message.contains(&format!("seq {seq} was changed")),
        "{message}"
    );
    assert!(report["verified_through"].is_null(), "{report:#}");
}

#[test]
fn a_deleted_record_is_named() {
    let (mut node, key) = stopped_issuer();
    let store = Store::open(&node.data_dir());
    let seq = first_of(&store, "token_generated");
    store.remove(seq);
    store.close();
    let report = tampered(&mut node, &key);
    assert_eq!(
        problems(&report),
        [(seq, "missing".to_owned())],
        "{report:#}"
    );
}

#[test]
fn an_inserted_record_is_named() {
    let (mut node, key) = stopped_issuer();
    let store = Store::open(&node.data_dir());
    let seq = first_of(&store, "token_generated");
    // Make room by moving every later record up one key, then slip in a
    // record that chains to its predecessor.
    let last = store.last_seq();
    for s in (seq..=last).rev() {
        let bytes = store.get(s);
        store.put(s + 1, &bytes);
    }
    let genuine = store.record(seq + 1);
    let forged = AuditRecord {
        kind: "agent_unbanned".into(),
        ..genuine
    };
    store.put(seq, &forged.encode());
    store.close();
    let report = tampered(&mut node, &key);
    let found = problems(&report);
    assert_eq!(found[0], (seq, "inserted".to_owned()), "{report:#}");
    // The shifted keys also leave one sequence number unused at the end.
    assert!(
        found[1..].iter().all(|(_, kind)| kind == "missing"),
        "{report:#}"
    );
}

#[test]
fn reordered_records_are_named() {
    let (mut node, key) = stopped_issuer();
    let store = Store::open(&node.data_dir());
    let seq = first_of(&store, "token_generated");
    let (a, b) = (store.get(seq), store.get(seq + 1));
    store.put(seq, &b);
    store.put(seq + 1, &a);
    store.close();
    let report = tampered(&mut node, &key);
    assert_eq!(
        problems(&report),
        [(seq, "reordered".to_owned())],
        "{report:#}"
    );
}

#[test]
fn truncated_checkpointed_history_is_refused_at_start_and_named_offline() {
    let (mut node, key) = stopped_issuer();
    let store = Store::open(&node.data_dir());
    let last = store.last_seq();
    store.remove(last);
    store.remove(last - 1);
    store.close();
    // The issuer does not go on over a log shorter than its checkpoint.
    let (_, log) = node.start_refused();
    assert!(
        log.contains(&format!(
            "records.log ends at seq {} but a signed checkpoint covers seq {last}: records {}..{last} were removed",
            last - 2,
            last - 1
        )),
        "{log}"
    );
    let (code, report) = node.verify_offline(&["--key", key.to_str().unwrap()]);
    assert_eq!(code, 2, "{report:#}");
    assert_eq!(
        problems(&report),
        [(last - 1, "truncated".to_owned())],
        "{report:#}"
    );
}

#[test]
fn a_truncated_unsigned_tail_is_an_unverifiable_tail_not_success() {
    let mut node = Node::new("");
    node.start();
    node.ok(&["token", "generate"]);
    node.ok(&["audit", "checkpoint"]);
    node.ok(&["token", "generate"]);
    node.ok(&["token", "generate"]);
    let key = node.save_key();
    // A crash leaves records after the newest checkpoint; cut two of them.
    node.crash();
    let store = Store::open(&node.data_dir());
    let last = store.last_seq();
    store.remove(last);
    store.remove(last - 1);
    store.close();
    node.start();
    let (code, report) = node.verify_all(&key);
    assert_eq!(code, 3, "{report:#}");
    assert_eq!(report["result"], "unverifiable_tail");
    assert!(problems(&report).is_empty(), "{report:#}");
    let through = report["verified_through"].as_u64().unwrap();
    assert!(through < last - 1);
    assert_eq!(report["unverifiable_tail"]["first_seq"], through + 1);
}

#[test]
fn a_forged_or_missing_checkpoint_never_verifies() {
    let (mut node, key) = stopped_issuer();
    let store = Store::open(&node.data_dir());
    let (cp_key, cp_bytes) = store.checkpoints().pop().unwrap();
    let signed = SignedCheckpoint::decode(&cp_bytes).unwrap();
    // Signed by someone else, claiming the audit key's id.
    let forger =
        SigningKey::from_pkcs8_der(&SigningKey::generate_pkcs8(Algorithm::Ed25519).unwrap())
            .unwrap();
    let mut forged = signed.checkpoint.clone().sign(&forger).unwrap();
    forged.checkpoint.key_id = signed.checkpoint.key_id.clone();
    store.put_checkpoint(cp_key, &forged.encode());
    store.close();
    let (_, log) = node.start_refused();
    assert!(
        log.contains(&format!(
            "the newest checkpoint (seq {}) is not signed by the audit key",
            signed.checkpoint.seq
        )),
        "{log}"
    );
    let (code, report) = node.verify_offline(&["--key", key.to_str().unwrap()]);
    assert_eq!(code, 2, "{report:#}");
    assert_eq!(
        problems(&report),
        [(signed.checkpoint.seq, "bad_signature".to_owned())],
        "{report:#}"
    );

    // Without checkpoints nothing is proven: never "verified", and the
    // issuer, whose database saw them signed, does not start.
    let store = Store::open(&node.data_dir());
    store.clear_checkpoints();
    store.close();
    let (_, log) = node.start_refused();
    assert!(log.contains("checkpoints.log does not hold"), "{log}");
    let (code, report) = node.verify_offline(&["--key", key.to_str().unwrap()]);
    assert_eq!(code, 3, "{report:#}");
    assert!(report["verified_through"].is_null());
    assert_eq!(report["unverifiable_tail"]["first_seq"], 1);
}

#[test]
fn history_resigned_with_a_replaced_key_fails_against_the_pinned_key() {
    let (mut node, key) = stopped_issuer();
    let store = Store::open(&node.data_dir());
    let seq = first_of(&store, "token_generated");
    // The attacker rewrites a record, rebuilds the chain after it, and
    // re-signs (and re-chains) every checkpoint with a key of their own,
    // which they also put in place of the issuer's key file.
    let attacker = SigningKey::generate_pkcs8(Algorithm::Ed25519).unwrap();
    let signer = SigningKey::from_pkcs8_der(&attacker).unwrap();
    let last = store.last_seq();
    let mut prev = store.hash(seq - 1);
    for s in seq..=last {
        let mut record = store.record(s);
        if s == seq {
            record.fields.insert("uid".into(), 4242.into());
        }
        record.prev = prev;
        let bytes = record.encode();
        prev = RecordHash::of(&bytes);
        store.put(s, &bytes);
    }
    let checkpoints = store.checkpoints();
    let mut prev_checkpoint = RecordHash::GENESIS;
    for (cp_key, bytes) in checkpoints {
        let old = SignedCheckpoint::decode(&bytes).unwrap().checkpoint;
        let resigned = Checkpoint {
            head: store.hash(old.seq),
            key_id: signer.keyid().to_owned(),
            chain: old.chain.map(|c| hallmark_server::audit::CheckpointChain {
                prev: prev_checkpoint,
                ..c
            }),
            ..old
        }
        .sign(&signer)
        .unwrap();
        prev_checkpoint = resigned.hash();
        store.put_checkpoint(cp_key, &resigned.encode());
    }
    store.close();
    let key_file = node.data_dir().join("audit.key");
    std::fs::remove_file(&key_file).unwrap();
    {
        use std::io::Write as _;
        use std::os::unix::fs::OpenOptionsExt as _;
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&key_file)
            .unwrap();
        file.write_all(SigningKey::pkcs8_pem(&attacker).as_bytes())
            .unwrap();
    }
    // The database saw other records and checkpoints: no start.
    let (_, log) = node.start_refused();
    assert!(log.contains("audit log tampered with"), "{log}");
    // Trusting the key file in the data directory, the forgery passes...
    let (_, unpinned) = node.verify_offline(&[]);
    assert!(problems(&unpinned).is_empty(), "{unpinned:#}");
    assert_eq!(unpinned["key_pinned"], false);
    // ...against the pinned key it does not.
    let (code, report) = node.verify_offline(&["--key", key.to_str().unwrap()]);
    assert_eq!(code, 2, "{report:#}");
    assert!(
        problems(&report)
            .iter()
            .all(|(_, kind)| kind == "unknown_key"),
        "{report:#}"
    );
    assert!(!problems(&report).is_empty());
}

#[test]
fn the_files_of_a_stopped_issuer_verify_offline_without_a_false_alarm() {
    let (node, key) = stopped_issuer();
    let key = key.to_str().unwrap();
    // The data directory itself: every record is signed (clean stop).
    let (code, report) = node.verify_offline(&["--key", key]);
    assert_eq!(code, 0, "{report:#}");
    assert_eq!(report["result"], "verified");
    // Its key file is found there when none is pinned (and said so).
    let (code, report) = node.verify_offline(&[]);
    assert_eq!(code, 0, "{report:#}");
    assert_eq!(report["key_pinned"], false);
    // The journal file read as an export: its `<seq> ` prefixes are
    // understood; it holds no checkpoints, so nothing is proven, but
    // nothing is called tampering either.
    let records = node.data_dir().join("audit/records.log");
    let out = audit_support::cli(&[
        "audit",
        "verify",
        "--from-export",
        records.to_str().unwrap(),
        "--key",
        key,
        "--output",
        "json",
    ]);
    let (code, report) = audit_support::parse_report(&out);
    assert_eq!(code, 3, "{report:#}");
    assert!(problems(&report).is_empty(), "{report:#}");
}

#[test]
fn verify_on_a_running_issuer_is_clean_and_health_probes_write_nothing() {
    let mut node = Node::new("");
    node.start();
    node.ok(&["token", "generate"]);
    let key = node.save_key();
    let before = Store::open(&node.data_dir()).last_seq();
    for _ in 0..5 {
        node.ok(&["healthcheck"]);
    }
    assert_eq!(Store::open(&node.data_dir()).last_seq(), before);
    // verify signs a checkpoint first and proves the log up to it, so
    // the common case is clean, run after run.
    for _ in 0..2 {
        let (code, report) = node.verify(&key);
        assert_eq!(code, 0, "{report:#}");
        assert_eq!(report["result"], "verified");
    }
    // Reading everything, its own records are an unsigned tail.
    let (code, report) = node.verify_all(&key);
    assert_eq!(code, 3, "{report:#}");
}
