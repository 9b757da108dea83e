//! The README's quickstart command, run as a newcomer would.

use std::process::Command;

#[test]
fn quickstart_attests_an_agent_and_exits_zero() {
    let out = Command::new(env!("CARGO_BIN_EXE_hallmark"))
        .arg("quickstart")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "quickstart failed\nstdout:\n{stdout}\nstderr:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("agent attested as spiffe://example.org/hallmark/agent/join_token/"),
        "{stdout}"
    );
    assert!(stdout.contains("Done"), "{stdout}");
    // It cleaned up after itself.
    let dir_line = stdout.lines().next().unwrap();
    let dir = dir_line.rsplit(' ').next().unwrap();
    assert!(!std::path::Path::new(dir).exists(), "{dir} left behind");
}
