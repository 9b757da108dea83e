//! `hallmark-agent api ...` as a workload runs it: the CLI process is the
//! caller, measured by the agent's /proc attestor, and its executable digest
//! is what the registered gold image allows.

#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::process::Output;
use std::sync::Arc;
use std::time::Duration;

use sha2::{Digest, Sha256};

use hallmark_agent::Agent;
use hallmark_agent::config::AgentSettings;
use hallmark_ca::clock::SystemClock;
use hallmark_ca::id::TrustDomain;
use hallmark_proto::admin::admin_client::AdminClient;
use hallmark_proto::admin::{GenerateJoinTokenRequest, RegisterImageRequest};
use hallmark_server::config::ServerSettings;
use hallmark_server::image::{
    Algorithm, Envelope, GoldImage, SigningKey, TrustedSigners, canonical,
};

const CLI: &str = env!("CARGO_BIN_EXE_hallmark-agent");

async fn cli(args: Vec<String>, env: Option<(&'static str, String)>) -> Output {
    tokio::task::spawn_blocking(move || {
        let mut command = std::process::Command::new(CLI);
        command.args(args);
        if let Some((name, value)) = env {
            command.env(name, value);
        }
        command.output().unwrap()
    })
    .await
    .unwrap()
}

#[tokio::test]
async fn api_fetch_write_and_validate() {
    let dir = tempfile::tempdir().unwrap();
    let key = SigningKey::from_pkcs8_der(&SigningKey::generate_pkcs8(Algorithm::Ed25519).unwrap())
        .unwrap();
    let mut signers = TrustedSigners::new();
    signers.insert(key.public_key().clone());
    let mut settings = ServerSettings::for_dirs(
        TrustDomain::new("example.org").unwrap(),
        dir.path().join("server"),
        dir.path().join("admin.sock"),
    );
    settings.trusted_signers = Arc::new(signers);
    let server = hallmark_server::server::start_with_clock(settings, Arc::new(SystemClock))
        .await
        .unwrap();
    let mut admin = AdminClient::new(
        hallmark_server::admin::socket::connect(&dir.path().join("admin.sock"))
            .await
            .unwrap(),
    );

    let cli_sha256 = hex::encode(Sha256::digest(std::fs::read(CLI).unwrap()));
    let image = GoldImage::from_toml(&format!(
        "name = \"cli\"\nversion = \"1\"\nspiffe_id = \"spiffe://example.org/cli\"\nowner = \"ops@example.org\"\npurpose = \"tests\"\nrisk_tier = \"low\"\nnot_after = 2099-01-01\n[code]\nsha256 = [\"{cli_sha256}\"]\n"
    ))
    .unwrap();
    let envelope = Envelope::sign(&canonical::encode(&image), &key)
        .unwrap()
        .to_json();
    admin
        .register_image(RegisterImageRequest { envelope })
        .await
        .unwrap();
    let token = admin
        .generate_join_token(GenerateJoinTokenRequest {
            ttl_seconds: 0,
            spiffe_id: String::new(),
        })
        .await
        .unwrap()
        .into_inner()
        .token;

    let bootstrap = dir.path().join("bootstrap.pem");
    std::fs::write(&bootstrap, server.authority().bundle().to_pem()).unwrap();
    let socket = dir.path().join("api.sock");
    let mut agent_settings = AgentSettings::from_toml_str(&format!(
        "trust_domain = \"example.org\"\nserver_address = \"{}\"\ndata_dir = \"{}\"\nsocket_path = \"{}\"\n[bootstrap]\nbundle_path = \"{}\"\n",
        server.node_addr(),
        dir.path().join("agent").display(),
        socket.display(),
        bootstrap.display()
    ))
    .unwrap();
    agent_settings.join_token = Some(token);
    let agent = Agent::start(agent_settings).await.unwrap();
    let mut status = agent.status();
    tokio::time::timeout(
        Duration::from_secs(20),
        status.wait_for(|s| s.sync_connected),
    )
    .await
    .unwrap()
    .unwrap();

    let out_dir = dir.path().join("out");
    let socket_arg = socket.display().to_string();
    let args = |list: &[&str]| list.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
    let out = cli(
        args(&[
            "api",
            "fetch",
            "x509",
            "--socket",
            &socket_arg,
            "--write",
            &out_dir.display().to_string(),
        ]),
        None,
    )
    .await;
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("spiffe://example.org/cli"), "{stdout}");
    assert!(
        stdout.contains(&cli_sha256),
        "the binding names the CLI's code digest: {stdout}"
    );
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(out_dir.join("svid.key"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    let chain = std::fs::read_to_string(out_dir.join("svid.pem")).unwrap();
    assert!(chain.starts_with("-----BEGIN CERTIFICATE-----"));
    assert!(
        std::fs::read_to_string(out_dir.join("bundle.pem"))
            .unwrap()
            .contains("BEGIN CERTIFICATE")
    );

    // `hallmark-agent api fetch x509 | head -1` once `head` has exited: a
    // quiet exit, no panic.
    for list in [
        &["api", "fetch", "x509", "--socket", &socket_arg][..],
        &[
            "api",
            "fetch",
            "jwt",
            "--audience",
            "payments",
            "--socket",
            &socket_arg,
        ],
    ] {
        let args = args(list);
        let out = tokio::task::spawn_blocking(move || {
            let (reader, writer) = std::io::pipe().unwrap();
            drop(reader);
            std::process::Command::new(CLI)
                .args(args)
                .stdout(writer)
                .stderr(std::process::Stdio::piped())
                .output()
                .unwrap()
        })
        .await
        .unwrap();
        assert_eq!(
            out.status.code(),
            Some(0),
            "{list:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            out.stderr.is_empty(),
            "{list:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    // SPIFFE_ENDPOINT_SOCKET is honoured.
    let out = cli(
        args(&["api", "fetch", "jwt", "--audience", "payments"]),
        Some((
            "SPIFFE_ENDPOINT_SOCKET",
            format!("unix://{}", socket.display()),
        )),
    )
    .await;
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let token = stdout.lines().nth(1).unwrap().to_owned();

    let out = cli(
        args(&[
            "api",
            "validate",
            "jwt",
            "--socket",
            &socket_arg,
            "--audience",
            "payments",
            &token,
        ]),
        None,
    )
    .await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        String::from_utf8_lossy(&out.stdout)
            .contains("Valid JWT-SVID for spiffe://example.org/cli")
    );
    let out = cli(
        args(&[
            "api",
            "validate",
            "jwt",
            "--socket",
            &socket_arg,
            "--audience",
            "ledger",
            &token,
        ]),
        None,
    )
    .await;
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("audience"));

    // `--output json`: one object a script can read, RFC 3339 times, JWT
    // times as integers; `-c` reads the socket from the agent's config.
    let json = |out: std::process::Output| -> serde_json::Value {
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).unwrap()
    };
    let x509 = json(
        cli(
            args(&[
                "api",
                "fetch",
                "x509",
                "--socket",
                &socket_arg,
                "--output",
                "json",
            ]),
            None,
        )
        .await,
    );
    let svid = &x509["svids"][0];
    assert_eq!(svid["spiffe_id"], "spiffe://example.org/cli");
    assert!(
        svid["expires_at"].as_str().unwrap().ends_with('Z'),
        "{svid}"
    );
    assert!(svid["binding"].is_object(), "{svid}");
    assert!(!x509.to_string().contains("PRIVATE"), "no key is printed");
    let config = dir.path().join("cli-agent.toml");
    std::fs::write(
        &config,
        format!(
            "trust_domain = \"example.org\"\nserver_address = \"127.0.0.1:1\"\ndata_dir = \"{}\"\nsocket_path = \"{}\"\n",
            dir.path().join("unused").display(),
            socket.display()
        ),
    )
    .unwrap();
    let jwt = json(
        cli(
            args(&[
                "api",
                "fetch",
                "jwt",
                "--audience",
                "payments",
                "-c",
                &config.display().to_string(),
                "--output",
                "json",
            ]),
            None,
        )
        .await,
    );
    let token = jwt["svids"][0]["token"].as_str().unwrap().to_owned();
    assert_eq!(jwt["svids"][0]["spiffe_id"], "spiffe://example.org/cli");
    let validated = json(
        cli(
            args(&[
                "api",
                "validate",
                "jwt",
                "--socket",
                &socket_arg,
                "--audience",
                "payments",
                "--output",
                "json",
                &token,
            ]),
            None,
        )
        .await,
    );
    assert_eq!(validated["spiffe_id"], "spiffe://example.org/cli");
    assert!(validated["claims"]["exp"].is_i64(), "{validated}");

    // `api watch` follows the stream: it prints the SVID, and when the agent
    // goes away it says the identity was withdrawn and exits non-zero.
    let mut watch = std::process::Command::new(CLI)
        .args(["api", "watch", "--socket", &socket_arg])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = watch.stdout.take().unwrap();
    let (first_update, stdout) = tokio::task::spawn_blocking(move || {
        use std::io::BufRead;
        let mut reader = std::io::BufReader::new(stdout);
        let mut seen = String::new();
        let mut line = String::new();
        while reader.read_line(&mut line).unwrap() > 0 {
            seen.push_str(&line);
            line.clear();
            if seen.contains("SPIFFE ID : spiffe://example.org/cli") {
                break;
            }
        }
        (seen, reader)
    })
    .await
    .unwrap();
    assert!(first_update.contains("--- update at"), "{first_update}");
    assert!(
        first_update.contains("SPIFFE ID : spiffe://example.org/cli"),
        "{first_update}"
    );
    agent.shutdown().await;
    let out = tokio::task::spawn_blocking(move || {
        // Read to the end: a reader that went away would make the watch's
        // last lines a broken pipe, which exits quietly (status 0).
        let mut stdout = stdout;
        let mut rest = String::new();
        let _ = std::io::Read::read_to_string(&mut stdout, &mut rest);
        watch.wait_with_output().unwrap()
    })
    .await
    .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("shutting down"), "{stderr}");

    server.shutdown().await;
}

/// Shell completions and man pages for `hallmark-agent`.
#[test]
fn completions_and_man_pages_are_generated_from_the_cli() {
    let dir = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(CLI)
        .args(["completions", "bash"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let script = dir.path().join("hallmark-agent.bash");
    std::fs::write(&script, &out.stdout).unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).contains("validate"));
    let syntax = std::process::Command::new("bash")
        .arg("-n")
        .arg(&script)
        .status()
        .unwrap();
    assert!(syntax.success());
    let man = dir.path().join("man");
    let out = std::process::Command::new(CLI)
        .args(["man", "--out"])
        .arg(&man)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(man.join("hallmark-agent-api-fetch-x509.1").exists());
}
