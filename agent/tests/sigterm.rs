//! The real `hallmark-agent` process against an in-process issuer: JSON
//! logs when `--log-format json` overrides the file, `/ready` once synced,
//! SIGTERM exits 0 and removes the Workload API socket, and a restart on
//! the same data directory resumes the same node identity without a token.

#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rustix::process::{Pid, Signal, kill_process};

use hallmark_proto::admin::GenerateJoinTokenRequest;
use hallmark_proto::admin::admin_client::AdminClient;
use hallmark_server::config::ServerSettings;

const BIN: &str = env!("CARGO_BIN_EXE_hallmark-agent");
const WAIT: Duration = Duration::from_secs(60);

/// The log's complete lines, each of which must be a JSON object.
fn lines(log: &Path) -> Vec<serde_json::Value> {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let complete = text.rfind('\n').map_or("", |end| &text[..end]);
    complete
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l)
                .unwrap_or_else(|e| panic!("log line is not JSON ({e}): {l}"));
            assert!(v["level"].is_string() && v["fields"].is_object(), "{l}");
            v
        })
        .collect()
}

/// Waits for a log line with `message`; its fields.
fn wait_line(child: &mut Child, log: &Path, message: &str) -> serde_json::Value {
    let deadline = Instant::now() + WAIT;
    loop {
        if let Some(line) = lines(log)
            .into_iter()
            .find(|l| l["fields"]["message"] == message)
        {
            return line["fields"].clone();
        }
        if let Some(status) = child.try_wait().unwrap() {
            panic!(
                "agent exited: {status}: {}",
                std::fs::read_to_string(log).unwrap()
            );
        }
        assert!(Instant::now() < deadline, "no {message:?} in the log");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn get(addr: SocketAddr, path: &str) -> u16 {
    let mut tcp = TcpStream::connect(addr).unwrap();
    tcp.write_all(format!("GET {path} HTTP/1.1\r\nHost: a\r\n\r\n").as_bytes())
        .unwrap();
    let mut raw = String::new();
    tcp.read_to_string(&mut raw).unwrap();
    raw[9..12].parse().unwrap()
}

fn terminate(mut child: Child) -> std::process::ExitStatus {
    kill_process(Pid::from_child(&child), Signal::TERM).unwrap();
    let deadline = Instant::now() + WAIT;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        assert!(Instant::now() < deadline, "the agent ignored SIGTERM");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_removes_the_socket_and_a_restart_keeps_the_node_identity() {
    let dir = tempfile::tempdir().unwrap();
    let settings = ServerSettings::for_dirs(
        "example.org".parse().unwrap(),
        dir.path().join("server"),
        dir.path().join("admin.sock"),
    );
    let issuer = hallmark_server::server::start(settings).await.unwrap();
    let channel = hallmark_server::admin::socket::connect(issuer.admin_socket())
        .await
        .unwrap();
    let token = AdminClient::new(channel)
        .generate_join_token(GenerateJoinTokenRequest::default())
        .await
        .unwrap()
        .into_inner()
        .token;
    let bootstrap = dir.path().join("bootstrap.pem");
    std::fs::write(&bootstrap, issuer.authority().bundle().to_pem()).unwrap();
    let socket = dir.path().join("agent").join("api.sock");
    let config = dir.path().join("agent.toml");
    std::fs::write(
        &config,
        format!(
            "trust_domain = \"example.org\"\nserver_address = \"{}\"\ndata_dir = \"{}\"\nsocket_path = \"{}\"\nlog_format = \"text\"\nsync_backoff_max = \"500ms\"\n[bootstrap]\nbundle_path = \"{}\"\n[metrics]\naddress = \"127.0.0.1:0\"\n",
            issuer.node_addr(),
            dir.path().join("agent-data").display(),
            socket.display(),
            bootstrap.display()
        ),
    )
    .unwrap();
    let run = |log: &Path, token: Option<&str>| {
        let mut command = Command::new(BIN);
        command
            .args(["run", "--config", config.to_str().unwrap()])
            .args(["--log-format", "json"]);
        if let Some(token) = token {
            command.args(["--join-token", token]);
        }
        command
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(log).unwrap())
            .spawn()
            .unwrap()
    };

    let log = dir.path().join("agent-1.log");
    let mut agent = run(&log, Some(&token));
    let up = wait_line(&mut agent, &log, "hallmark-agent is up");
    let agent_id = up["spiffe_id"].as_str().unwrap().to_owned();
    let metrics: SocketAddr =
        wait_line(&mut agent, &log, "serving /metrics, /live and /ready")["address"]
            .as_str()
            .unwrap()
            .parse()
            .unwrap();
    assert_eq!(get(metrics, "/live"), 200);
    let deadline = Instant::now() + WAIT;
    while get(metrics, "/ready") != 200 {
        assert!(Instant::now() < deadline, "the agent never became ready");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(socket.exists());
    let healthcheck = |extra: &[&str]| {
        Command::new(BIN)
            .args(["healthcheck", "-c", config.to_str().unwrap()])
            .args(extra)
            .output()
            .unwrap()
    };
    let out = healthcheck(&[]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let json = |out: &std::process::Output| -> serde_json::Value {
        serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stdout)))
    };
    let out = healthcheck(&["--output", "json"]);
    assert!(out.status.success());
    let healthy = json(&out);
    assert_eq!(healthy["healthy"], true);
    assert_eq!(healthy["spiffe_id"], agent_id.as_str());
    assert_eq!(healthy["socket"], socket.display().to_string());
    assert!(
        healthy["not_after"].as_str().unwrap().ends_with('Z'),
        "RFC 3339: {healthy}"
    );

    let status = terminate(agent);
    assert_eq!(
        status.code(),
        Some(0),
        "{}",
        std::fs::read_to_string(&log).unwrap()
    );
    assert!(!socket.exists(), "the Workload API socket is removed");
    lines(&log);
    // Stopped: the health check dials the agent and fails; `--shallow`
    // only looks at the node SVID on disk.
    let out = healthcheck(&[]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("the agent is not running"), "{stderr}");
    let out = healthcheck(&["--output", "json"]);
    assert!(!out.status.success());
    let unhealthy = json(&out);
    assert_eq!(unhealthy["healthy"], false);
    assert!(
        unhealthy["error"]
            .as_str()
            .unwrap()
            .contains("the agent is not running"),
        "{unhealthy}"
    );
    assert!(healthcheck(&["--shallow"]).status.success());
    let out = healthcheck(&["--shallow", "--output", "json"]);
    assert_eq!(json(&out)["healthy"], true);
    assert_eq!(json(&out)["socket"], serde_json::Value::Null);

    // No token this time: the node SVID on disk is the identity.
    let log = dir.path().join("agent-2.log");
    let mut agent = run(&log, None);
    let resumed = wait_line(&mut agent, &log, "resuming with the persisted node SVID");
    assert_eq!(resumed["spiffe_id"], agent_id.as_str());
    let up = wait_line(&mut agent, &log, "hallmark-agent is up");
    assert_eq!(up["spiffe_id"], agent_id.as_str());
    assert_eq!(terminate(agent).code(), Some(0));
    assert!(!socket.exists());
    issuer.shutdown().await;
}
