//! The `hallmark-server` binary as an operator uses it: config errors, the
//! daemon, and the admin commands with `--output json`.

#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_hallmark-server");

fn run(args: &[&str]) -> Output {
    Command::new(BIN).args(args).output().unwrap()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// A daemon child process, killed on drop.
struct Daemon {
    child: Child,
    socket: PathBuf,
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn write_config(dir: &Path, extra: &str) -> PathBuf {
    let config = dir.join("server.toml");
    std::fs::write(
        &config,
        format!(
            "trust_domain = \"example.org\"\ndata_dir = \"{}\"\nbind_address = \"127.0.0.1:0\"\nadmin_socket = \"{}\"\n{extra}",
            dir.join("data").display(),
            dir.join("admin.sock").display()
        ),
    )
    .unwrap();
    config
}

fn start(config: &Path, socket: PathBuf) -> Daemon {
    let child = Command::new(BIN)
        .args(["run", "--config", config.to_str().unwrap()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut daemon = Daemon { child, socket };
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let out = run(&["healthcheck", "--socket", daemon.socket.to_str().unwrap()]);
        if out.status.success() {
            return daemon;
        }
        if let Some(status) = daemon.child.try_wait().unwrap() {
            panic!("daemon exited early: {status}");
        }
        assert!(
            Instant::now() < deadline,
            "daemon did not come up: {}",
            stderr(&out)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn malformed_config_exits_non_zero_naming_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        (
            "trust_domain = \"example.org\"\nbind_adress = \"127.0.0.1:1\"\n",
            "bind_adress",
        ),
        ("trust_domain = \"Not A Domain!\"\n", "trust_domain"),
        (
            "trust_domain = \"example.org\"\n[ca]\nmax_svid_ttl = \"1h\"\n",
            "ca.max_svid_ttl",
        ),
        (
            "trust_domain = \"example.org\"\n[agents]\nsvid_ttl = \"forever\"\n",
            "svid_ttl",
        ),
        (
            "trust_domain = \"example.org\"\nbind_address = 8081\n",
            "bind_address",
        ),
    ];
    for (i, (text, key)) in cases.iter().enumerate() {
        let path = dir.path().join(format!("bad{i}.toml"));
        std::fs::write(&path, text).unwrap();
        let out = run(&["run", "--config", path.to_str().unwrap()]);
        assert!(!out.status.success(), "case {i} should fail");
        let err = stderr(&out);
        assert!(
            err.contains(key),
            "case {i}: error does not name {key}: {err}"
        );
    }
    let out = run(&[
        "run",
        "--config",
        dir.path().join("missing.toml").to_str().unwrap(),
    ]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("missing.toml"), "{}", stderr(&out));
}

#[test]
fn admin_commands_against_a_running_daemon() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), "");
    let daemon = start(&config, dir.path().join("admin.sock"));
    let socket = daemon.socket.to_str().unwrap().to_owned();

    // The admin socket is owner-only.
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&daemon.socket)
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);

    let out = run(&[
        "token", "generate", "--socket", &socket, "--ttl", "5m", "--output", "json",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let token: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(token["token"].as_str().unwrap().len(), 64);
    assert!(
        token["spiffe_id"]
            .as_str()
            .unwrap()
            .starts_with("spiffe://example.org/hallmark/agent/join_token/")
    );

    // --config finds the socket from the file.
    let out = run(&[
        "agent",
        "list",
        "--config",
        config.to_str().unwrap(),
        "--output",
        "json",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let agents: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(agents["agents"].as_array().unwrap().len(), 0);

    let out = run(&["bundle", "show", "--socket", &socket, "--format", "jwks"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let jwks: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let keys = jwks["keys"].as_array().unwrap();
    assert!(keys.iter().any(|k| k["use"] == "x509-svid"));
    assert!(keys.iter().any(|k| k["use"] == "jwt-svid"));

    let out = run(&["bundle", "show", "--socket", &socket]);
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("-----BEGIN CERTIFICATE-----"));

    // Bad input gets a CLI error that says what to fix, and a non-zero exit.
    let out = run(&[
        "agent",
        "evict",
        "spiffe://example.org/workload",
        "--socket",
        &socket,
    ]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("not an agent ID"), "{}", stderr(&out));
    let out = run(&[
        "agent",
        "unban",
        "spiffe://example.org/hallmark/agent/join_token/00",
        "--socket",
        &socket,
    ]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("no agent"), "{}", stderr(&out));
    let out = run(&["token", "generate", "--socket", &socket, "--ttl", "30d"]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("7 day"), "{}", stderr(&out));

    // Nothing was stored by the refused calls.
    let out = run(&["agent", "list", "--socket", &socket, "--output", "json"]);
    let agents: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(agents["agents"].as_array().unwrap().len(), 0);
}

#[test]
fn healthcheck_fails_without_a_server() {
    let dir = tempfile::tempdir().unwrap();
    let out = run(&[
        "healthcheck",
        "--socket",
        dir.path().join("none.sock").to_str().unwrap(),
    ]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("none.sock"), "{}", stderr(&out));
}

#[test]
fn a_second_server_refuses_a_live_admin_socket() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), "");
    let _daemon = start(&config, dir.path().join("admin.sock"));
    let other = dir.path().join("other");
    std::fs::create_dir(&other).unwrap();
    let out = Command::new(BIN)
        .args([
            "run",
            "--config",
            config.to_str().unwrap(),
            "--data-dir",
            other.join("data").to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(stderr(&out).contains("in use"), "{}", stderr(&out));
}

/// Runs `args` with stdout a pipe whose reader is already gone, as in
/// `hallmark-server image list | head -1` once `head` has exited.
fn run_into_closed_pipe(args: &[&str]) -> Output {
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    Command::new(BIN)
        .args(args)
        .stdout(writer)
        .stderr(Stdio::piped())
        .output()
        .unwrap()
}

#[test]
fn listing_into_a_closed_pipe_exits_quietly() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), "");
    let daemon = start(&config, dir.path().join("admin.sock"));
    let socket = daemon.socket.to_str().unwrap().to_owned();
    for args in [
        &["image", "list"][..],
        &["image", "list", "--output", "json"],
        &["agent", "list"],
        &["kill", "list"],
        &["audit", "tail"],
        &["audit", "export"],
        &["bundle", "show"],
        &["healthcheck"],
    ] {
        let mut args = args.to_vec();
        args.extend(["--socket", &socket]);
        let out = run_into_closed_pipe(&args);
        assert_eq!(
            out.status.code(),
            Some(0),
            "{args:?} exited with {:?}: {}",
            out.status,
            stderr(&out)
        );
        assert!(
            out.stderr.is_empty(),
            "{args:?} wrote to stderr: {}",
            stderr(&out)
        );
    }
    // Other failures to write are still errors, named as such.
    let full = std::fs::OpenOptions::new()
        .write(true)
        .open("/dev/full")
        .unwrap();
    let out = Command::new(BIN)
        .args(["agent", "list", "--socket", &socket])
        .stdout(full)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("cannot write to stdout"),
        "{}",
        stderr(&out)
    );
    assert!(!stderr(&out).contains("panicked"), "{}", stderr(&out));
}

/// Shell completions (bash parses them; zsh and fish are generated) and a
/// man page per command, from the same clap definitions as `--help`.
#[test]
fn completions_and_man_pages_are_generated_from_the_cli() {
    let dir = tempfile::tempdir().unwrap();
    let out = run(&["completions", "bash"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let script = dir.path().join("hallmark-server.bash");
    std::fs::write(&script, &out.stdout).unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("hallmark-server") && text.contains("--review-overdue"));
    let syntax = Command::new("bash")
        .arg("-n")
        .arg(&script)
        .output()
        .unwrap();
    assert!(syntax.status.success(), "{}", stderr(&syntax));
    for shell in ["zsh", "fish", "elvish", "powershell"] {
        let out = run(&["completions", shell]);
        assert!(out.status.success() && !out.stdout.is_empty(), "{shell}");
    }
    let err = run(&["completions", "tcsh"]);
    assert!(!err.status.success());
    assert!(stderr(&err).contains("possible values"), "{}", stderr(&err));

    let man = dir.path().join("man");
    let out = run(&["man", "--out", man.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    let page = std::fs::read_to_string(man.join("hallmark-server-image-list.1")).unwrap();
    assert!(page.contains("review\\-overdue"), "{page}");
    assert!(man.join("hallmark-server.1").exists());
    assert!(String::from_utf8_lossy(&out.stdout).contains("man pages into"));
}

/// `[federation]` through the binary: `config check` names what it would
/// serve and fetch, and refuses the issuer's own trust domain; `bundle
/// list` (and `list-federated`) shows a federated trust domain whose
/// endpoint is down, with its bootstrap bundle kept and the error.
#[test]
fn federation_config_and_bundle_list() {
    use hallmark_ca::id::TrustDomain;
    use hallmark_ca::manager::{CaConfig, CaManager};

    let dir = tempfile::tempdir().unwrap();
    let partner = CaManager::generate(
        CaConfig::new(TrustDomain::new("partner.example").unwrap()),
        std::time::SystemTime::now(),
    )
    .unwrap()
    .bundle();
    let bootstrap = dir.path().join("partner.json");
    std::fs::write(&bootstrap, partner.to_jwks()).unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    // Nothing listens on the partner's endpoint: a port just released.
    let down = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let config = write_config(
        dir.path(),
        &format!(
            "[federation.bundle_endpoint]\naddress = \"127.0.0.1:{port}\"\nprofile = \"https_spiffe\"\n[[federation.trust_domains]]\ntrust_domain = \"partner.example\"\nbundle_endpoint_url = \"https://127.0.0.1:{down}/\"\nprofile = \"https_spiffe\"\nendpoint_spiffe_id = \"spiffe://partner.example/spire/server\"\nbundle = \"{}\"\n",
            bootstrap.display()
        ),
    );
    let out = run(&["config", "check", config.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains(&format!(
            "bundle endpoint on 127.0.0.1:{port} (https_spiffe), federated with partner.example"
        )),
        "{text}"
    );
    let own = write_config(
        &{
            let d = dir.path().join("own");
            std::fs::create_dir_all(&d).unwrap();
            d
        },
        "[[federation.trust_domains]]\ntrust_domain = \"example.org\"\nbundle_endpoint_url = \"https://x.example/\"\nprofile = \"https_web\"\n",
    );
    let out = run(&["config", "check", own.to_str().unwrap()]);
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(
        err.contains("federation.trust_domains.trust_domain")
            && err.contains("this issuer's own trust domain"),
        "{err}"
    );

    let daemon = start(&config, dir.path().join("admin.sock"));
    let socket = daemon.socket.to_str().unwrap().to_owned();
    // Wait for the first (failed) fetch.
    let deadline = Instant::now() + Duration::from_secs(30);
    let listed = loop {
        let out = run(&["bundle", "list", "--socket", &socket, "--output", "json"]);
        assert!(out.status.success(), "{}", stderr(&out));
        let listed: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        if listed[0]["last_error"].is_string() {
            break listed;
        }
        assert!(Instant::now() < deadline, "no fetch attempt: {listed}");
        std::thread::sleep(Duration::from_millis(200));
    };
    let entry = &listed[0];
    assert_eq!(listed.as_array().unwrap().len(), 1);
    assert_eq!(entry["trust_domain"], "partner.example");
    assert_eq!(entry["profile"], "https_spiffe");
    assert_eq!(
        entry["endpoint_spiffe_id"],
        "spiffe://partner.example/spire/server"
    );
    assert_eq!(entry["source"], "bootstrap");
    assert_eq!(
        entry["bundle"],
        serde_json::from_str::<serde_json::Value>(&partner.to_jwks()).unwrap()
    );
    assert!(
        entry["last_error"]
            .as_str()
            .unwrap()
            .contains(&format!("cannot connect to 127.0.0.1:{down}")),
        "{entry}"
    );
    assert!(entry["next_refresh"].is_string());

    let out = run(&["bundle", "list", "--socket", &socket]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("Trust domain      : partner.example")
            && text.contains("from bootstrap")
            && text.contains("Last error        : ")
            && text.contains("-----BEGIN CERTIFICATE-----"),
        "{text}"
    );
    let out = run(&[
        "bundle",
        "list-federated",
        "--socket",
        &socket,
        "--id",
        "spiffe://partner.example",
        "--format",
        "jwks",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(String::from_utf8_lossy(&out.stdout).contains("\"spiffe_sequence\""));
    let out = run(&[
        "bundle",
        "list",
        "--socket",
        &socket,
        "--id",
        "nope.example",
    ]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("nope.example is not a federated trust domain"),
        "{}",
        stderr(&out)
    );
}
