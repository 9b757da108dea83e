//! Helpers for the audit tests: the `hallmark-server` binary as a daemon
//! and as the operator CLI, direct access to a stopped issuer's sled store,
//! and a node API client that attests with a join token and mints.

#![allow(
    dead_code,
    unreachable_pub,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic
)]

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tonic::Status;
use tonic::transport::{Channel, Endpoint};

use hallmark_ca::bundle::{Bundle, SharedBundle};
use hallmark_ca::clock::Clock;
use hallmark_ca::id::SpiffeId;
use hallmark_ca::key::CaKey;
use hallmark_ca::tls::{ClockTimeProvider, SpiffeServerVerifier, SvidCertResolver};
use hallmark_proto::node::node_client::NodeClient;
use hallmark_proto::node::{
    AttestParams, AttestRequest, AttestResult, JoinTokenParams, WorkloadEvidence, attest_params,
    attest_request, attest_response,
};
use hallmark_server::audit::{AuditRecord, RecordHash};
use hallmark_server::store::{CHECKPOINTS_FILE, FileAuditStore, RECORDS_FILE};

pub const BIN: &str = env!("CARGO_BIN_EXE_hallmark-server");

/// Runs the CLI.
pub fn cli(args: &[&str]) -> Output {
    Command::new(BIN).args(args).output().unwrap()
}

pub fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

pub fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// The exit status, or a panic with the output if the process was killed.
pub fn code(out: &Output) -> i32 {
    out.status
        .code()
        .unwrap_or_else(|| panic!("killed: {}", stderr(out)))
}

/// An issuer in a temp dir, run as the real binary.
pub struct Node {
    pub dir: tempfile::TempDir,
    pub config: PathBuf,
    pub daemon: Option<Child>,
}

impl Node {
    /// Writes `server.toml` (checkpoints every hour unless `extra` says
    /// otherwise, so that only the test decides when they happen).
    pub fn new(extra: &str) -> Node {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("server.toml");
        let audit = if extra.contains("[audit]") {
            ""
        } else {
            "[audit]\ncheckpoint_interval = \"1h\"\n"
        };
        std::fs::write(
            &config,
            format!(
                "trust_domain = \"example.org\"\ndata_dir = \"{}\"\nbind_address = \"127.0.0.1:0\"\nadmin_socket = \"{}\"\nlog_level = \"warn\"\n{extra}\n{audit}",
                dir.path().join("data").display(),
                dir.path().join("admin.sock").display()
            ),
        )
        .unwrap();
        Node {
            dir,
            config,
            daemon: None,
        }
    }

    /// Like [`Node::new`], with `/ready` served on a free loopback port.
    pub fn with_metrics(extra: &str) -> (Node, u16) {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let node = Node::new(&format!(
            "{extra}\n[metrics]\naddress = \"127.0.0.1:{port}\"\n"
        ));
        (node, port)
    }

    pub fn socket(&self) -> String {
        self.dir.path().join("admin.sock").display().to_string()
    }

    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Starts the daemon and waits until its admin socket answers.
    pub fn start(&mut self) {
        if let Err(log) = self.try_start() {
            panic!("daemon exited early: {log}");
        }
    }

    /// Starts the daemon; its log if it exits instead of answering.
    pub fn try_start(&mut self) -> Result<(), String> {
        assert!(self.daemon.is_none(), "already running");
        let log = std::fs::File::create(self.path("daemon.log")).unwrap();
        let child = Command::new(BIN)
            .args(["run", "--config", self.config.to_str().unwrap()])
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        self.daemon = Some(child);
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let out = cli(&["healthcheck", "--socket", &self.socket()]);
            if out.status.success() {
                return Ok(());
            }
            if let Some(status) = self.daemon.as_mut().unwrap().try_wait().unwrap() {
                self.daemon = None;
                return Err(format!(
                    "{status}: {}",
                    std::fs::read_to_string(self.path("daemon.log")).unwrap_or_default()
                ));
            }
            assert!(Instant::now() < deadline, "daemon did not come up");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Starts the daemon expecting it to refuse: waits for it to exit and
    /// returns its exit status and log.
    pub fn start_refused(&mut self) -> (i32, String) {
        assert!(self.daemon.is_none(), "already running");
        let out = Command::new(BIN)
            .args(["run", "--config", self.config.to_str().unwrap()])
            .output()
            .unwrap();
        let log = format!("{}{}", stdout(&out), stderr(&out));
        assert!(
            !out.status.success(),
            "the daemon was expected to refuse to start: {log}"
        );
        (code(&out), log)
    }

    /// `audit verify --data-dir --output json` (offline), with `extra`
    /// flags; the exit status and the report.
    pub fn verify_offline(&self, extra: &[&str]) -> (i32, serde_json::Value) {
        let data = self.data_dir();
        let mut args = vec![
            "audit",
            "verify",
            "--data-dir",
            data.to_str().unwrap(),
            "--output",
            "json",
        ];
        args.extend_from_slice(extra);
        parse_report(&cli(&args))
    }

    /// Stops the daemon cleanly (SIGTERM): it writes its shutdown
    /// checkpoint and closes the store.
    pub fn stop(&mut self) {
        let mut child = self.daemon.take().expect("not running");
        let status = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
        let status = child.wait().unwrap();
        assert!(status.success(), "daemon exited with {status}");
    }

    /// Kills the daemon (SIGKILL): no shutdown checkpoint.
    pub fn crash(&mut self) {
        let mut child = self.daemon.take().expect("not running");
        child.kill().unwrap();
        child.wait().unwrap();
    }

    /// Runs a CLI command against this issuer's socket.
    pub fn run(&self, args: &[&str]) -> Output {
        let mut all: Vec<&str> = args.to_vec();
        let socket = self.socket();
        all.extend(["--socket", &socket]);
        cli(&all)
    }

    /// Runs a CLI command that must succeed; its stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(out.status.success(), "{args:?}: {}", stderr(&out));
        stdout(&out)
    }

    /// `audit verify --output json` with the key pinned from `key`; the
    /// exit status and the report.
    pub fn verify(&self, key: &Path) -> (i32, serde_json::Value) {
        let out = self.run(&[
            "audit",
            "verify",
            "--key",
            key.to_str().unwrap(),
            "--output",
            "json",
        ]);
        parse_report(&out)
    }

    /// `audit verify --include-unsigned` (every record, nothing signed
    /// first) with the key pinned: the exit status and the report.
    pub fn verify_all(&self, key: &Path) -> (i32, serde_json::Value) {
        parse_report(&self.run(&[
            "audit",
            "verify",
            "--key",
            key.to_str().unwrap(),
            "--include-unsigned",
            "--output",
            "json",
        ]))
    }

    /// Saves `audit key` to `audit.pub` in the temp dir.
    pub fn save_key(&self) -> PathBuf {
        let path = self.path("audit.pub");
        std::fs::write(&path, self.ok(&["audit", "key"])).unwrap();
        path
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        if let Some(mut child) = self.daemon.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// `GET /ready` on `port`: the status code and the body.
pub fn ready(port: u16) -> (u16, String) {
    use std::io::{Read as _, Write as _};
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    stream
        .write_all(b"GET /ready HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    let status = response
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("not an HTTP response: {response}"));
    let body = response
        .split_once("\r\n\r\n")
        .map_or(String::new(), |(_, b)| b.to_owned());
    (status, body)
}

/// Polls `check` every 100 ms until it returns `Some`, for up to 30 s.
pub fn eventually<T>(what: &str, mut check: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(value) = check() {
            return value;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

pub fn parse_report(out: &Output) -> (i32, serde_json::Value) {
    let report = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {} / {}", stdout(out), stderr(out)));
    (code(out), report)
}

/// The stopped issuer's audit files, read and rewritten directly (as an
/// attacker who can write the data directory would). Changes are written
/// back by [`Store::close`].
pub struct Store {
    dir: PathBuf,
    records: RefCell<BTreeMap<u64, Vec<u8>>>,
    checkpoints: RefCell<BTreeMap<u64, Vec<u8>>>,
}

impl Store {
    pub fn open(data_dir: &Path) -> Store {
        let dir = FileAuditStore::dir(data_dir);
        let read = |name: &str| -> BTreeMap<u64, Vec<u8>> {
            let bytes = std::fs::read(dir.join(name)).unwrap();
            bytes
                .split(|&b| b == b'\n')
                .filter(|line| !line.is_empty())
                .map(|line| {
                    let space = line.iter().position(|&b| b == b' ').unwrap();
                    let seq = std::str::from_utf8(&line[..space])
                        .unwrap()
                        .parse()
                        .unwrap();
                    (seq, line[space + 1..].to_vec())
                })
                .collect()
        };
        Store {
            records: RefCell::new(read(RECORDS_FILE)),
            checkpoints: RefCell::new(read(CHECKPOINTS_FILE)),
            dir,
        }
    }

    pub fn get(&self, seq: u64) -> Vec<u8> {
        self.records.borrow()[&seq].clone()
    }

    pub fn record(&self, seq: u64) -> AuditRecord {
        AuditRecord::decode(&self.get(seq)).unwrap()
    }

    pub fn put(&self, seq: u64, bytes: &[u8]) {
        self.records.borrow_mut().insert(seq, bytes.to_vec());
    }

    pub fn remove(&self, seq: u64) {
        self.records.borrow_mut().remove(&seq).unwrap();
    }

    pub fn last_seq(&self) -> u64 {
        *self.records.borrow().keys().next_back().unwrap()
    }

    pub fn hash(&self, seq: u64) -> RecordHash {
        RecordHash::of(&self.get(seq))
    }

    /// The stored checkpoints, in order.
    pub fn checkpoints(&self) -> Vec<(u64, Vec<u8>)> {
        self.checkpoints
            .borrow()
            .iter()
            .map(|(seq, bytes)| (*seq, bytes.clone()))
            .collect()
    }

    pub fn put_checkpoint(&self, seq: u64, bytes: &[u8]) {
        self.checkpoints.borrow_mut().insert(seq, bytes.to_vec());
    }

    pub fn clear_checkpoints(&self) {
        self.checkpoints.borrow_mut().clear();
    }

    /// Writes the files back, in sequence order.
    pub fn close(self) {
        let write = |name: &str, entries: &BTreeMap<u64, Vec<u8>>| {
            let mut out = Vec::new();
            for (seq, bytes) in entries {
                out.extend_from_slice(format!("{seq} ").as_bytes());
                out.extend_from_slice(bytes);
                out.push(b'\n');
            }
            std::fs::write(self.dir.join(name), out).unwrap();
        };
        write(RECORDS_FILE, &self.records.borrow());
        write(CHECKPOINTS_FILE, &self.checkpoints.borrow());
    }
}

/// The uid this test runs as (the admin socket's peer credentials).
pub fn my_uid(path: &Path) -> u32 {
    use std::os::unix::fs::MetadataExt as _;
    std::fs::metadata(path).unwrap().uid()
}

pub fn server_id() -> SpiffeId {
    SpiffeId::parse("spiffe://example.org/hallmark/server").unwrap()
}

/// Dials the node API over TLS 1.3, verifying the issuer against `bundle`;
/// `cert` is (chain, PKCS#8 key) for mutual TLS.
pub async fn node_client(
    addr: std::net::SocketAddr,
    bundle: Bundle,
    clock: Arc<dyn Clock>,
    cert: Option<(&[Vec<u8>], &[u8])>,
) -> NodeClient<Channel> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier = SpiffeServerVerifier::new(SharedBundle::new(bundle), server_id());
    let resolver = SvidCertResolver::new();
    if let Some((chain, key)) = cert {
        resolver.set(chain.to_vec(), key).unwrap();
    }
    let mut config = rustls::ClientConfig::builder_with_details(
        provider,
        Arc::new(ClockTimeProvider::new(clock)),
    )
    .with_protocol_versions(&[&rustls::version::TLS13])
    .unwrap()
    .dangerous()
    .with_custom_certificate_verifier(Arc::new(verifier))
    .with_client_cert_resolver(Arc::new(resolver));
    config.alpn_protocols = vec![b"h2".to_vec()];
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let channel = Endpoint::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect_with_connector(tower::service_fn(move |_| {
            let connector = connector.clone();
            async move {
                let tcp = TcpStream::connect(addr).await?;
                let name = rustls_pki_types::ServerName::try_from("hallmark-server")
                    .map_err(std::io::Error::other)?;
                let tls = connector.connect(name, tcp).await?;
                Ok::<_, std::io::Error>(TokioIo::new(tls))
            }
        }))
        .await
        .unwrap();
    NodeClient::new(channel)
}

/// Attests with a join token: the node SVID key and the result.
pub async fn attest(
    client: &mut NodeClient<Channel>,
    token: &str,
) -> Result<(CaKey, AttestResult), Status> {
    let key = CaKey::generate().unwrap();
    let params = AttestParams {
        public_key: key.public_key_der(),
        attestor: Some(attest_params::Attestor::JoinToken(JoinTokenParams {
            token: token.into(),
        })),
    };
    let request = AttestRequest {
        step: Some(attest_request::Step::Params(params)),
    };
    let mut responses = client
        .attest(tokio_stream::iter(vec![request]))
        .await?
        .into_inner();
    match responses.message().await? {
        Some(response) => match response.step {
            Some(attest_response::Step::Result(result)) => Ok((key, result)),
            other => panic!("unexpected attestation step {other:?}"),
        },
        None => panic!("attestation stream ended without result"),
    }
}

/// Evidence of a process running the executable `code`.
pub fn evidence(code: &str) -> WorkloadEvidence {
    WorkloadEvidence {
        pid: 4242,
        uid: 1000,
        gid: 1000,
        exe_path: "/usr/bin/agent".into(),
        exe_sha256: code.into(),
        start_time: 1,
        loaded_code: Some(Default::default()),
        ..WorkloadEvidence::default()
    }
}
