//! The README's quickstart command, run as a newcomer would: the binary's
//! output is checked step by step, and it must exit 0 and clean up.

use std::process::Command;

use sha2::{Digest, Sha256};

#[test]
fn quickstart_runs_a_workload_kills_it_verifies_the_audit_log_and_exits_zero() {
    let exe = env!("CARGO_BIN_EXE_hallmark");
    let out = Command::new(exe).arg("quickstart").output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "quickstart failed\nstdout:\n{stdout}\nstderr:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // Every step, in order.
    let steps: Vec<&str> = stdout.lines().filter(|l| l.starts_with('[')).collect();
    assert_eq!(steps.len(), 10, "{stdout}");
    for (i, line) in steps.iter().enumerate() {
        assert!(line.starts_with(&format!("[{}] ", i + 1)), "{stdout}");
    }

    // The workload is this binary, measured by the agent: its digest is the
    // one the gold image names and the SVID's binding carries.
    let code = hex::encode(Sha256::digest(std::fs::read(exe).unwrap()));
    let expected = [
        "agent attested as spiffe://example.org/hallmark/agent/join_token/".to_owned(),
        format!("| sha256 = [\"{code}\"]"),
        "registered demo-agent@1.0.0 (DSSE, signed by keyid ".to_owned(),
        "workload | SPIFFE ID    spiffe://example.org/demo-agent".to_owned(),
        format!("workload | code         sha256 {code} (this very executable)"),
        "workload | model        demo-model 1.0.0 (sha256:".to_owned(),
        "workload | image        demo-agent@1.0.0, owner quickstart@example.org, risk tier low".to_owned(),
        "workload | expires      ".to_owned(),
        "accepted spiffe://example.org/demo-agent (audience \"quickstart-relying-party\")".to_owned(),
        "workload | identity withdrawn by the agent: no identity issued: revoked by kill ".to_owned(),
        "workload | a new FetchX509SVID is refused: PermissionDenied: ".to_owned(),
        "the relying party now refuses the same, still unexpired token: spiffe://example.org/demo-agent is not authorized: revoked by kill ".to_owned(),
        "verified: ".to_owned(),
        "Done".to_owned(),
    ];
    let mut rest = stdout.as_ref();
    for needle in &expected {
        let at = rest
            .find(needle.as_str())
            .unwrap_or_else(|| panic!("missing (or out of order) {needle:?} in\n{stdout}"));
        rest = &rest[at + needle.len()..];
    }
    // The SVID lives at most 300 s.
    let expiry = stdout
        .lines()
        .find(|l| l.contains("workload | expires"))
        .unwrap();
    let secs: u64 = expiry
        .split("(in ")
        .nth(1)
        .and_then(|s| s.split(' ').next())
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("{expiry}"));
    assert!((1..=300).contains(&secs), "{expiry}");

    // It cleaned up after itself.
    let dir_line = stdout.lines().next().unwrap();
    let dir = dir_line.rsplit(' ').next().unwrap();
    assert!(dir.contains("hallmark-quickstart-"), "{dir_line}");
    assert!(!std::path::Path::new(dir).exists(), "{dir} left behind");
}
