//! The `hallmark-server` binary as an operator runs it: JSON logs (parsed
//! to learn the bound addresses), the metrics endpoint, signals.

#![allow(
    dead_code,
    unreachable_pub,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic
)]

use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::time::{Duration, Instant};

use rustix::process::{Pid, Signal, kill_process};

pub const BIN: &str = env!("CARGO_BIN_EXE_hallmark-server");
/// Generous: a hang becomes a failure, a slow machine does not.
pub const WAIT: Duration = Duration::from_secs(60);

/// An issuer run as the real binary with `--log-format json`.
pub struct Daemon {
    pub dir: tempfile::TempDir,
    pub config: PathBuf,
    pub child: Option<Child>,
    pub log: PathBuf,
    pub node_addr: Option<SocketAddr>,
    pub metrics_addr: Option<SocketAddr>,
    starts: u32,
}

impl Daemon {
    /// `server.toml` says `log_format = "text"` (the flag must win), the
    /// metrics endpoint on a free loopback port, hourly checkpoints (so only
    /// shutdown and the test sign them); `extra` is appended.
    pub fn new(extra: &str) -> Daemon {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("server.toml");
        std::fs::write(
            &config,
            format!(
                "trust_domain = \"example.org\"\ndata_dir = \"{}\"\nbind_address = \"127.0.0.1:0\"\nadmin_socket = \"{}\"\nlog_format = \"text\"\nlog_level = \"info\"\n{extra}\n[metrics]\naddress = \"127.0.0.1:0\"\n[audit]\ncheckpoint_interval = \"1h\"\n",
                dir.path().join("data").display(),
                dir.path().join("admin.sock").display(),
            ),
        )
        .unwrap();
        let log = dir.path().join("daemon-0.log");
        Daemon {
            dir,
            config,
            child: None,
            log,
            node_addr: None,
            metrics_addr: None,
            starts: 0,
        }
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    pub fn socket(&self) -> PathBuf {
        self.path("admin.sock")
    }

    pub fn data_dir(&self) -> PathBuf {
        self.path("data")
    }

    /// Starts the daemon (with `args` after the config) and waits until it
    /// logs that it is up; learns the node API and metrics addresses from
    /// the JSON log.
    pub fn start(&mut self, args: &[&str]) {
        assert!(self.child.is_none(), "already running");
        self.starts += 1;
        self.log = self.path(&format!("daemon-{}.log", self.starts));
        let log = std::fs::File::create(&self.log).unwrap();
        let child = Command::new(BIN)
            .args(["run", "--config", self.config.to_str().unwrap()])
            .args(["--log-format", "json"])
            .args(args)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        self.child = Some(child);
        let deadline = Instant::now() + WAIT;
        loop {
            let lines = self.log_lines();
            let up = lines
                .iter()
                .find(|l| l["fields"]["message"] == "hallmark-server is up");
            let metrics = lines
                .iter()
                .find(|l| l["fields"]["message"] == "serving /metrics, /live and /ready");
            if let (Some(up), Some(metrics)) = (up, metrics) {
                self.node_addr = Some(up["fields"]["node_api"].as_str().unwrap().parse().unwrap());
                self.metrics_addr = Some(
                    metrics["fields"]["address"]
                        .as_str()
                        .unwrap()
                        .parse()
                        .unwrap(),
                );
                return;
            }
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                panic!("daemon exited early: {status}: {}", self.log_text());
            }
            assert!(
                Instant::now() < deadline,
                "daemon did not come up: {}",
                self.log_text()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Every complete line of the current log, each of which must be a
    /// JSON object with a level and fields (structured, not text).
    pub fn log_lines(&self) -> Vec<serde_json::Value> {
        let text = self.log_text();
        let complete = match text.rfind('\n') {
            Some(end) => &text[..end],
            None => "",
        };
        complete
            .lines()
            .filter(|l| !l.is_empty())
            .map(|line| {
                let value: serde_json::Value = serde_json::from_str(line)
                    .unwrap_or_else(|e| panic!("log line is not JSON ({e}): {line}"));
                assert!(value["level"].is_string(), "no level: {line}");
                assert!(value["fields"].is_object(), "no fields: {line}");
                value
            })
            .collect()
    }

    /// Sends `signal` and waits for the process to exit.
    pub fn signal(&mut self, signal: Signal) -> ExitStatus {
        let mut child = self.child.take().expect("not running");
        let pid = Pid::from_child(&child);
        kill_process(pid, signal).unwrap();
        let deadline = Instant::now() + WAIT;
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                return status;
            }
            assert!(Instant::now() < deadline, "daemon ignored {signal:?}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGKILL: no shutdown path at all.
    pub fn kill9(&mut self) {
        let status = self.signal(Signal::KILL);
        assert!(!status.success());
    }

    /// Runs the operator CLI against this issuer's socket.
    pub fn cli(&self, args: &[&str]) -> Output {
        let socket = self.socket();
        Command::new(BIN)
            .args(args)
            .args(["--socket", socket.to_str().unwrap()])
            .output()
            .unwrap()
    }

    /// A CLI command that must succeed; its stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.cli(args);
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    /// A CLI command with `--output json` that must succeed.
    pub fn json(&self, args: &[&str]) -> serde_json::Value {
        let mut all = args.to_vec();
        all.extend(["--output", "json"]);
        serde_json::from_str(&self.ok(&all)).unwrap()
    }

    /// Saves the audit public key (read offline from the data directory).
    pub fn save_key(&self) -> PathBuf {
        let out = Command::new(BIN)
            .args([
                "audit",
                "key",
                "--data-dir",
                self.data_dir().to_str().unwrap(),
            ])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let path = self.path("audit.pub");
        std::fs::write(&path, out.stdout).unwrap();
        path
    }

    /// `audit verify --key KEY --include-unsigned --output json` (every
    /// record, the unsigned tail too): exit code and report.
    pub fn verify(&self, key: &Path) -> (i32, serde_json::Value) {
        let out = self.cli(&[
            "audit",
            "verify",
            "--key",
            key.to_str().unwrap(),
            "--include-unsigned",
            "--output",
            "json",
        ]);
        let report = serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stderr)));
        (out.status.code().expect("verify was killed"), report)
    }

    /// Every audit record (not checkpoints) from `audit export`, parsed.
    pub fn audit_records(&self) -> Vec<serde_json::Value> {
        self.ok(&["audit", "export"])
            .lines()
            .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
            .filter(|v| v.get("checkpoint").is_none())
            .collect()
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// One HTTP/1.1 GET: the status code and the body.
pub fn http_get(addr: SocketAddr, path: &str) -> std::io::Result<(u16, String)> {
    let mut tcp = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
    tcp.set_read_timeout(Some(Duration::from_secs(10)))?;
    tcp.write_all(format!("GET {path} HTTP/1.1\r\nHost: hallmark\r\n\r\n").as_bytes())?;
    let mut raw = String::new();
    tcp.read_to_string(&mut raw)?;
    let code = raw
        .get(9..12)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("not HTTP: {raw}")))?;
    let body = raw
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    Ok((code, body))
}

/// The value of one unlabelled or labelled series in a `/metrics` body.
pub fn metric(body: &str, series: &str) -> Option<f64> {
    body.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}
