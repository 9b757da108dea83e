//! Attacks on the Workload API socket itself (issue 12, attacks 1 and 8),
//! with real processes: a connection used by a process other than the one
//! that connected (a forked child, a descriptor passed over `SCM_RIGHTS`),
//! a connection carried across `exec`, and connection and stream floods
//! from another uid while a legitimate workload keeps getting SVIDs.

use std::io::{BufRead, BufReader};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hyper_util::rt::TokioIo;
use sha2::{Digest, Sha256};
use tonic::transport::Endpoint;

use hallmark_agent::Agent;
use hallmark_agent::config::AgentSettings;
use hallmark_proto::workload::spiffe_workload_api_client::SpiffeWorkloadApiClient;
use hallmark_proto::workload::{X509svidRequest, X509svidResponse};
use hallmark_server::image::{Algorithm, GoldImage, SigningKey, TrustedSigners};

use crate::common::{TRUST_DOMAIN, TestServer};
use crate::workload_api::{first_x509_on, own_exe_sha256, raw_client, with_header};

const SLEEP: &str = "/usr/bin/sleep";
const PYTHON: &str = "/usr/bin/python3";
const SLEEPER_ID: &str = "spiffe://example.org/sleeper";
const SELF_ID: &str = "spiffe://example.org/test-agent";

/// An issuer with `images` registered (each `(name, spiffe path, sha256)`)
/// and an agent serving the Workload API on a socket every uid can reach.
struct Deployment {
    server: TestServer,
    agent: hallmark_agent::AgentHandle,
    socket: PathBuf,
    _socket_dir: tempfile::TempDir,
}

async fn deploy(images: &[(&str, &str, String)], workload_toml: &str) -> Deployment {
    deploy_with(images, workload_toml, "", false).await
}

/// [`deploy`] with `top` lines in every image (e.g. `x509_ttl = 20`) and,
/// with `manual_clock`, the agent on the issuer's manual clock.
async fn deploy_with(
    images: &[(&str, &str, String)],
    workload_toml: &str,
    top: &str,
    manual_clock: bool,
) -> Deployment {
    let key = SigningKey::from_pkcs8_der(&SigningKey::generate_pkcs8(Algorithm::Ed25519).unwrap())
        .unwrap();
    let mut signers = TrustedSigners::new();
    signers.insert(key.public_key().clone());
    let server = TestServer::start_with(|s| s.trusted_signers = Arc::new(signers)).await;
    for (name, path, sha256) in images {
        let text = format!(
            r#"
            name = "{name}"
            version = "1.0.0"
            spiffe_id = "spiffe://example.org/{path}"
            owner = "alice@example.org"
            purpose = "socket attack tests"
            risk_tier = "low"
            not_after = 2099-12-31
            {top}
            [code]
            sha256 = ["{sha256}"]
            "#
        );
        let image = GoldImage::from_toml(&text).unwrap();
        server.register_image(&image, &key).await.unwrap();
    }
    let bootstrap = server.path("bootstrap.pem");
    std::fs::write(&bootstrap, server.bundle().to_pem()).unwrap();
    // The server's temp dir is 0700: the socket lives where uid 65534 can
    // reach it too.
    let socket_dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(socket_dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let socket = socket_dir.path().join("api.sock");
    let toml = format!(
        "trust_domain = \"{TRUST_DOMAIN}\"\nserver_address = \"{}\"\ndata_dir = \"{}\"\nsocket_path = \"{}\"\n[bootstrap]\nbundle_path = \"{}\"\n[workload]\n{workload_toml}\n",
        server.addr(),
        server.path("agent-data").display(),
        socket.display(),
        bootstrap.display(),
    );
    let mut settings = AgentSettings::from_toml_str(&toml).unwrap();
    settings.join_token = Some(server.token().await);
    if manual_clock {
        settings.clock = Arc::new(server.clock.clone());
    }
    let agent = Agent::start(settings).await.unwrap();
    let mut status = agent.status();
    tokio::time::timeout(
        Duration::from_secs(20),
        status.wait_for(|s| s.sync_connected),
    )
    .await
    .unwrap()
    .unwrap();
    Deployment {
        server,
        agent,
        socket,
        _socket_dir: socket_dir,
    }
}

fn sha256_of(path: &str) -> String {
    hex::encode(Sha256::digest(std::fs::read(path).unwrap()))
}

/// The image bound to `/usr/bin/sleep` (no `[unix]` constraint): any
/// process running sleep is entitled to it.
fn sleeper() -> (&'static str, &'static str, String) {
    ("sleeper", "sleeper", sha256_of(SLEEP))
}

/// The image bound to this test binary.
fn this_binary() -> (&'static str, &'static str, String) {
    ("test-agent", "test-agent", own_exe_sha256())
}

/// The helper role of this binary: `--exact attack_socket::<name> --ignored`.
fn helper_args(name: &str) -> Vec<String> {
    [
        "--exact",
        &format!("attack_socket::{name}"),
        "--ignored",
        "--nocapture",
        "--test-threads=1",
    ]
    .map(str::to_owned)
    .to_vec()
}

/// Reads `child`'s stdout until a line with `OUTCOME=`; returns what follows.
async fn outcome(child: &mut Child) -> String {
    let stdout = child.stdout.take().unwrap();
    tokio::time::timeout(
        Duration::from_secs(60),
        tokio::task::spawn_blocking(move || {
            BufReader::new(stdout)
                .lines()
                .map_while(Result::ok)
                // libtest may print "test <name> ... " on the same line first.
                .find_map(|l| l.split_once("OUTCOME=").map(|(_, o)| o.trim().to_owned()))
                .unwrap_or_else(|| "no outcome printed".to_owned())
        }),
    )
    .await
    .expect("the helper reports an outcome")
    .unwrap()
}

/// A Workload API client over one already connected stream.
async fn client_over(
    stream: std::os::unix::net::UnixStream,
) -> SpiffeWorkloadApiClient<tonic::transport::Channel> {
    stream.set_nonblocking(true).unwrap();
    let stream = Arc::new(Mutex::new(Some(
        tokio::net::UnixStream::from_std(stream).unwrap(),
    )));
    let channel = Endpoint::from_static("http://workload.invalid")
        .connect_with_connector(tower::service_fn(move |_| {
            let taken = stream.lock().unwrap().take();
            async move {
                taken
                    .map(TokioIo::new)
                    .ok_or_else(|| std::io::Error::other("the connection was used once"))
            }
        }))
        .await
        .unwrap();
    SpiffeWorkloadApiClient::new(channel)
}

/// Prints the outcome of a `FetchX509SVID` as one `OUTCOME=` line.
fn print_outcome(result: Result<X509svidResponse, tonic::Status>) {
    match result {
        Ok(response) => {
            let ids: Vec<_> = response.svids.iter().map(|s| s.spiffe_id.clone()).collect();
            println!("OUTCOME=svid {}", ids.join(","));
        }
        Err(status) => println!("OUTCOME=refused {:?} {}", status.code(), status.message()),
    }
}

/// Waits (bounded) until process `pid` runs `exe`.
fn wait_for_exe(pid: &str, exe: &str) {
    for _ in 0..1000 {
        if std::fs::read_link(format!("/proc/{pid}/exe")).is_ok_and(|p| p == Path::new(exe)) {
            return;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    panic!("process {pid} never ran {exe}");
}

/// Not a test of its own: the process that speaks on a connection it did
/// not open. It takes descriptor `HALLMARK_TEST_FD` (inherited, or passed
/// to its parent over `SCM_RIGHTS`) as an owned descriptor with
/// `pidfd_getfd` on its own pidfd, waits until the process that connected
/// (`HALLMARK_TEST_CONNECTOR`) runs sleep, sends `FetchX509SVID` and prints
/// the outcome.
#[test]
#[ignore = "helper process, run by the attack_socket tests"]
fn speak_on_a_connection_of_another_process() {
    let (Ok(fd), Ok(connector)) = (
        std::env::var("HALLMARK_TEST_FD"),
        std::env::var("HALLMARK_TEST_CONNECTOR"),
    ) else {
        return;
    };
    wait_for_exe(&connector, SLEEP);
    let stream = take_fd(fd.parse().unwrap());
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async move {
        let mut client = client_over(stream).await;
        print_outcome(first_x509_on(&mut client).await);
    });
}

/// Not a test of its own: a process that connected before it exec'd this
/// binary (descriptor `HALLMARK_TEST_FD` kept across the exec) asks on that
/// connection; then it opens a connection of its own and asks again.
#[test]
#[ignore = "helper process, run by the attack_socket tests"]
fn ask_after_exec() {
    let (Ok(fd), Ok(socket)) = (
        std::env::var("HALLMARK_TEST_FD"),
        std::env::var("HALLMARK_TEST_SOCKET"),
    ) else {
        return;
    };
    let stream = take_fd(fd.parse().unwrap());
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async move {
        let mut carried = client_over(stream).await;
        print_outcome(first_x509_on(&mut carried).await);
        let mut own = raw_client(Path::new(&socket)).await;
        print_outcome(first_x509_on(&mut own).await);
    });
}

/// A descriptor of this process, by number, as an owned socket: a
/// duplicate taken through this process's own pidfd (no `unsafe`).
fn take_fd(fd: i32) -> std::os::unix::net::UnixStream {
    let own = rustix::process::pidfd_open(
        rustix::process::getpid(),
        rustix::process::PidfdFlags::empty(),
    )
    .unwrap();
    let owned =
        rustix::process::pidfd_getfd(&own, fd, rustix::process::PidfdGetfdFlags::empty()).unwrap();
    std::os::unix::net::UnixStream::from(owned)
}

/// Kills and reaps `child`.
fn finish(mut child: Child) {
    let _ = child.kill();
    let _ = child.wait();
}

#[tokio::test]
async fn a_forked_child_cannot_use_the_connection_of_a_parent_that_execd_a_registered_binary() {
    let d = deploy(&[sleeper()], "").await;
    // python3 connects and forks. The parent exec's sleep (registered);
    // the child exec's this binary's helper role, which keeps the
    // connection and asks on it once the parent runs sleep.
    let script = r#"
import os, socket, sys
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
s.connect(sys.argv[1])
s.set_inheritable(True)
parent = os.getpid()
if os.fork() == 0:
    os.environ["HALLMARK_TEST_FD"] = str(s.fileno())
    os.environ["HALLMARK_TEST_CONNECTOR"] = str(parent)
    os.execv(sys.argv[2], [sys.argv[2]] + sys.argv[3:])
os.execv("/usr/bin/sleep", ["sleep", "30"])
"#;
    let mut child = Command::new(PYTHON)
        .arg("-c")
        .arg(script)
        .arg(&d.socket)
        .arg(std::env::current_exe().unwrap())
        .args(helper_args("speak_on_a_connection_of_another_process"))
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let outcome = outcome(&mut child).await;
    println!("forked child: {outcome}");
    finish(child);
    assert!(
        outcome.starts_with("refused PermissionDenied"),
        "the child must not get sleep's SVID: {outcome}"
    );
    assert!(
        outcome.contains("each process must open its own connection"),
        "{outcome}"
    );
    assert!(!outcome.contains(SLEEPER_ID));
    assert_eq!(minted(&d.server).await, 0, "nothing was minted for sleep");
    // The issuer never saw the request, but its audit log shows the
    // refusal: the agent reports what it refuses itself.
    let reported = reported_refusal(&d.server, "sender").await;
    assert_eq!(reported["fields"]["call"], "x509");
    assert_eq!(reported["fields"]["uid"], 0);
    assert!(
        reported["fields"]["reason"]
            .as_str()
            .unwrap()
            .contains("each process must open its own connection"),
        "{reported}"
    );
    d.agent.shutdown().await;
}

/// How many `svid_minted` records the issuer's audit log holds.
async fn minted(server: &TestServer) -> usize {
    crate::common::audit_records(server)
        .await
        .into_iter()
        .filter(|r| r["kind"] == "svid_minted")
        .count()
}

/// The first `workload_refused` record with `refused_by` = `by`, waiting
/// (bounded) for the agent's next report.
async fn reported_refusal(server: &TestServer, by: &str) -> serde_json::Value {
    for _ in 0..100 {
        if let Some(record) = crate::common::audit_records(server)
            .await
            .into_iter()
            .find(|r| r["kind"] == "workload_refused" && r["fields"]["refused_by"] == by)
        {
            return record;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    panic!("no workload_refused record by {by} in the issuer's audit log");
}

#[tokio::test]
async fn a_connection_passed_over_scm_rights_cannot_be_used_by_its_receiver() {
    let d = deploy(&[sleeper()], "").await;
    let rendezvous_dir = tempfile::tempdir().unwrap();
    let rendezvous = rendezvous_dir.path().join("pass.sock");
    // The receiver: an unrelated process (not a fork of the connector)
    // that gets the connection over SCM_RIGHTS and exec's the helper with it.
    let receiver_script = r#"
import os, socket, struct, sys
l = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
l.bind(sys.argv[1])
l.listen()
print("READY", flush=True)
c, _ = l.accept()
pid, _, _ = struct.unpack("iII", c.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, 12))
_, fds, _, _ = socket.recv_fds(c, 1, 1)
os.set_inheritable(fds[0], True)
os.environ["HALLMARK_TEST_FD"] = str(fds[0])
os.environ["HALLMARK_TEST_CONNECTOR"] = str(pid)
os.execv(sys.argv[2], [sys.argv[2]] + sys.argv[3:])
"#;
    let mut receiver = Command::new(PYTHON)
        .arg("-c")
        .arg(receiver_script)
        .arg(&rendezvous)
        .arg(std::env::current_exe().unwrap())
        .args(helper_args("speak_on_a_connection_of_another_process"))
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(receiver.stdout.take().unwrap());
    let mut ready = String::new();
    lines.read_line(&mut ready).unwrap();
    assert_eq!(ready.trim(), "READY");
    receiver.stdout = Some(lines.into_inner());
    // The connector: connects to the agent, passes the connection, and
    // exec's sleep (registered).
    let connector_script = r#"
import os, socket, sys
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
s.connect(sys.argv[1])
r = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
r.connect(sys.argv[2])
socket.send_fds(r, [b"x"], [s.fileno()])
os.execv("/usr/bin/sleep", ["sleep", "30"])
"#;
    let connector = Command::new(PYTHON)
        .arg("-c")
        .arg(connector_script)
        .arg(&d.socket)
        .arg(&rendezvous)
        .spawn()
        .unwrap();
    let outcome = outcome(&mut receiver).await;
    println!("receiver: {outcome}");
    finish(receiver);
    finish(connector);
    assert!(
        outcome.starts_with("refused PermissionDenied"),
        "the receiver must not get sleep's SVID: {outcome}"
    );
    assert!(outcome.contains("written by pid"), "{outcome}");
    assert!(!outcome.contains(SLEEPER_ID));
    d.agent.shutdown().await;
}

#[tokio::test]
async fn a_process_that_execs_a_registered_binary_and_then_asks_gets_its_svid() {
    let d = deploy(&[this_binary()], "").await;
    // python3 connects, keeps the connection across an exec into this
    // (registered) binary, which asks on the carried connection (refused:
    // a connection belongs to the program that opened it) and then on a
    // connection of its own (the same process, now registered: served).
    let script = r#"
import os, socket, sys
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
s.connect(sys.argv[1])
# The agent's HTTP/2 SETTINGS arrive once it has accepted the connection
# (and seen which program connected): exec only then.
s.recv(1, socket.MSG_PEEK)
s.set_inheritable(True)
os.environ["HALLMARK_TEST_FD"] = str(s.fileno())
os.environ["HALLMARK_TEST_SOCKET"] = sys.argv[1]
os.execv(sys.argv[2], [sys.argv[2]] + sys.argv[3:])
"#;
    let mut child = Command::new(PYTHON)
        .arg("-c")
        .arg(script)
        .arg(&d.socket)
        .arg(std::env::current_exe().unwrap())
        .args(helper_args("ask_after_exec"))
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    let stdout = child.stdout.take().unwrap();
    let outcomes: Vec<String> = tokio::task::spawn_blocking(move || {
        BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
            .filter_map(|l| l.split_once("OUTCOME=").map(|(_, o)| o.trim().to_owned()))
            .take(2)
            .collect()
    })
    .await
    .unwrap();
    finish(child);
    assert_eq!(outcomes.len(), 2, "{outcomes:?}");
    assert!(
        outcomes[0].starts_with("refused PermissionDenied"),
        "{outcomes:?}"
    );
    assert!(
        outcomes[0].contains(&format!(
            "process {pid} executed another program since it connected"
        )),
        "{outcomes:?}"
    );
    assert_eq!(outcomes[1], format!("svid {SELF_ID}"), "{outcomes:?}");
    d.agent.shutdown().await;
}

/// Not a test of its own: a flood from another uid. On one connection it
/// opens `HALLMARK_TEST_STREAMS` bundle streams it never reads after the
/// first message, then `HALLMARK_TEST_FLOOD` idle connections (nothing
/// written), printing one `FLOOD` line per outcome; then it waits until
/// every idle connection has been closed by the agent (bounded), prints
/// `OUTCOME=done` and waits to be killed.
#[test]
#[ignore = "helper process, run by the attack_socket tests"]
fn flood_child() {
    let (Ok(socket), Ok(connections), Ok(streams)) = (
        std::env::var("HALLMARK_TEST_SOCKET"),
        std::env::var("HALLMARK_TEST_FLOOD"),
        std::env::var("HALLMARK_TEST_STREAMS"),
    ) else {
        return;
    };
    let connections: usize = connections.parse().unwrap();
    let streams: usize = streams.parse().unwrap();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async move {
        let mut client = raw_client(Path::new(&socket)).await;
        let mut open = Vec::new();
        for _ in 0..streams {
            let result = client
                .fetch_x509_bundles(with_header(hallmark_proto::workload::X509BundlesRequest {}))
                .await;
            match result {
                Ok(response) => {
                    println!("FLOOD stream ok");
                    open.push(response.into_inner());
                }
                Err(status) => {
                    println!("FLOOD stream {:?} {}", status.code(), status.message());
                }
            }
        }
        let mut idle = Vec::new();
        for _ in 0..connections {
            idle.push(tokio::net::UnixStream::connect(&socket).await.unwrap());
        }
        // Wait (bounded) until the agent has closed every idle connection:
        // a closed one reads to EOF.
        let mut closed = vec![false; idle.len()];
        for _ in 0..600 {
            for (conn, closed) in idle.iter().zip(closed.iter_mut()) {
                let mut buf = [0u8; 4096];
                while !*closed {
                    match conn.try_read(&mut buf) {
                        Ok(0) => *closed = true,
                        Ok(_) => continue,
                        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                        Err(_) => *closed = true,
                    }
                }
            }
            if closed.iter().all(|c| *c) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let count = closed.iter().filter(|c| **c).count();
        println!("FLOOD idle closed {count} of {}", idle.len());
        println!("OUTCOME=done");
        tokio::time::sleep(Duration::from_secs(60)).await;
        drop(open);
    });
}

#[tokio::test]
async fn floods_from_another_uid_are_limited_and_other_uids_keep_getting_svids() {
    let d = deploy(
        &[this_binary()],
        "max_connections_per_uid = 4\nmax_streams_per_uid = 3\nidle_timeout = \"1s\"\n",
    )
    .await;
    // uid 65534 asks for 5 streams on one connection (3 allowed), then
    // opens 10 idle connections: 3 more are admitted (4 per uid) and
    // closed after the 1 s idle timeout, 7 are closed unread at accept.
    let mut flood = Command::new(std::env::current_exe().unwrap())
        .args(helper_args("flood_child"))
        .env("HALLMARK_TEST_SOCKET", &d.socket)
        .env("HALLMARK_TEST_FLOOD", "10")
        .env("HALLMARK_TEST_STREAMS", "5")
        .uid(65534)
        .gid(65534)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = flood.stdout.take().unwrap();
    let (lines_tx, mut lines_rx) = tokio::sync::mpsc::unbounded_channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if lines_tx.send(line).is_err() {
                return;
            }
        }
    });
    // Meanwhile this process (uid 0) keeps getting SVIDs.
    let mut flood_lines = Vec::new();
    let mut served = 0;
    loop {
        let mut client = raw_client(&d.socket).await;
        let response = first_x509_on(&mut client).await.unwrap();
        assert_eq!(response.svids[0].spiffe_id, SELF_ID);
        served += 1;
        match tokio::time::timeout(Duration::from_millis(50), lines_rx.recv()).await {
            Ok(Some(line)) => {
                let done = line.contains("OUTCOME=done");
                flood_lines.push(line);
                if done {
                    break;
                }
            }
            Ok(None) => panic!("the flood ended early: {flood_lines:?}"),
            Err(_) => {}
        }
        while let Ok(line) = lines_rx.try_recv() {
            flood_lines.push(line);
        }
        if flood_lines.iter().any(|l| l.contains("OUTCOME=done")) {
            break;
        }
    }
    finish(flood);
    assert!(served > 0);
    let streams: Vec<&String> = flood_lines
        .iter()
        .filter(|l| l.contains("FLOOD stream"))
        .collect();
    assert_eq!(streams.len(), 5, "{flood_lines:?}");
    let ok = streams.iter().filter(|l| l.ends_with("stream ok")).count();
    assert_eq!(ok, 3, "three streams per uid: {flood_lines:?}");
    let refused = streams
        .iter()
        .filter(|l| {
            l.contains("ResourceExhausted")
                && l.contains("uid 65534 already has 3 open Workload API streams")
                && l.contains("workload.max_streams_per_uid")
        })
        .count();
    assert_eq!(refused, 2, "{flood_lines:?}");
    // All ten idle connections are gone: seven closed at accept (over four
    // per uid), three at the idle timeout; the stream connection stays.
    assert!(
        flood_lines
            .iter()
            .any(|l| l.contains("FLOOD idle closed 10 of 10")),
        "{flood_lines:?}"
    );
    d.agent.shutdown().await;
}

/// Not a test of its own: a registered process (this binary) opens a
/// `FetchX509SVID` stream, prints the first message, keeps the connection
/// across an exec (CLOEXEC cleared) and exec's sleep (also registered)
/// without ever reading again.
#[test]
#[ignore = "helper process, run by the attack_socket tests"]
fn open_a_stream_then_exec_sleep() {
    let Ok(socket) = std::env::var("HALLMARK_TEST_SOCKET") else {
        return;
    };
    let stream = std::os::unix::net::UnixStream::connect(&socket).unwrap();
    rustix::io::fcntl_setfd(&stream, rustix::io::FdFlags::empty()).unwrap();
    let kept = stream.try_clone().unwrap();
    rustix::io::fcntl_setfd(&kept, rustix::io::FdFlags::empty()).unwrap();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let (stream_alive, _client) = runtime.block_on(async move {
        let mut client = client_over(stream).await;
        let mut svids = client
            .fetch_x509svid(with_header(X509svidRequest {}))
            .await
            .unwrap()
            .into_inner();
        let first = svids.message().await.unwrap().unwrap();
        print_outcome(Ok(first));
        (svids, client)
    });
    // The exec replaces this process; `kept` (and the stream) carry over.
    let error = Command::new(SLEEP).arg("30").exec();
    drop((stream_alive, kept, runtime));
    panic!("exec sleep: {error}");
}

#[tokio::test]
async fn a_stream_ends_when_its_process_execs_another_registered_program() {
    let d = deploy_with(&[this_binary(), sleeper()], "", "x509_ttl = 20", true).await;
    // Once the CA is older than the backdate, leaves start 30 s in the past
    // (see a_short_lived_svid_rotates_at_half_its_life... in attestation.rs).
    d.server.clock.advance(Duration::from_secs(60));
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args(helper_args("open_a_stream_then_exec_sleep"))
        .env("HALLMARK_TEST_SOCKET", &d.socket)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id().to_string();
    let outcome = outcome(&mut child).await;
    assert_eq!(outcome, format!("svid {SELF_ID}"));
    tokio::task::spawn_blocking(move || wait_for_exe(&pid, SLEEP))
        .await
        .unwrap();
    let metrics = d.agent.metrics().clone();
    let open = || metrics.streams(hallmark_agent::metrics::StreamMethod::FetchX509Svid);
    assert_eq!(open(), 1, "the stream is still open after the exec");
    // Past half of the 20 s granted: the stream re-measures its process,
    // which now runs sleep, and ends instead of streaming sleep's SVID.
    d.server.clock.advance(Duration::from_secs(11));
    tokio::time::timeout(Duration::from_secs(30), async {
        while open() != 0 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("the stream ends at its rotation");
    finish(child);
    let minted: Vec<String> = crate::common::audit_records(&d.server)
        .await
        .into_iter()
        .filter(|r| r["kind"] == "svid_minted")
        .map(|r| r.to_string())
        .collect();
    assert_eq!(minted.len(), 1, "only the first SVID: {minted:?}");
    assert!(minted[0].contains(SELF_ID), "{minted:?}");
    d.agent.shutdown().await;
}

/// Not a test of its own: opens `HALLMARK_TEST_STREAMS` `FetchX509SVID`
/// streams over connections of 100 streams each, reads only the first
/// message of each, prints `OUTCOME=open`, and closes them all (exits) when
/// its stdin closes.
#[test]
#[ignore = "helper process, run by measure_agent_memory_with_many_unread_streams"]
fn many_streams_child() {
    let (Ok(socket), Ok(streams)) = (
        std::env::var("HALLMARK_TEST_SOCKET"),
        std::env::var("HALLMARK_TEST_STREAMS"),
    ) else {
        return;
    };
    let streams: usize = streams.parse().unwrap();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async move {
        let mut open = Vec::new();
        let mut client = raw_client(Path::new(&socket)).await;
        for i in 0..streams {
            if i % 100 == 0 {
                client = raw_client(Path::new(&socket)).await;
            }
            let mut stream = client
                .fetch_x509svid(with_header(X509svidRequest {}))
                .await
                .unwrap()
                .into_inner();
            stream.message().await.unwrap().unwrap();
            open.push(stream);
        }
        println!("OUTCOME=open");
        let mut line = String::new();
        let _ = std::io::stdin().read_line(&mut line);
        drop(open);
    });
}

/// Agent memory with many unread streams, and after they close: prints
/// this process's RSS (issuer and agent in process; the streams' client is
/// a child). `cargo nextest run --workspace --run-ignored only -E
/// 'test(measure_agent_memory)' --no-capture`.
#[tokio::test]
#[ignore = "a measurement, not a test"]
async fn measure_agent_memory_with_many_unread_streams() {
    let streams = std::env::var("HALLMARK_MEASURE_STREAMS").unwrap_or_else(|_| "20000".into());
    let d = deploy(
        &[this_binary()],
        "max_connections_per_uid = 1000\nmax_streams_per_uid = 100000\n",
    )
    .await;
    let rss = || {
        let status = std::fs::read_to_string("/proc/self/status").unwrap();
        status
            .lines()
            .find(|l| l.starts_with("VmRSS:"))
            .unwrap()
            .to_owned()
    };
    let mut warm = raw_client(&d.socket).await;
    first_x509_on(&mut warm).await.unwrap();
    println!("MEASURE before: {}", rss());
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args(helper_args("many_streams_child"))
        .env("HALLMARK_TEST_SOCKET", &d.socket)
        .env("HALLMARK_TEST_STREAMS", &streams)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let outcome = outcome(&mut child).await;
    assert_eq!(outcome, "open");
    println!("MEASURE {streams} streams open: {}", rss());
    drop(child.stdin.take());
    child.wait().unwrap();
    let metrics = d.agent.metrics().clone();
    while metrics.streams(hallmark_agent::metrics::StreamMethod::FetchX509Svid) > 0 {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    println!("MEASURE after they closed: {}", rss());
    d.agent.shutdown().await;
}

/// What a gRPC client writes for one `FetchX509SVID`, in one go: the
/// HTTP/2 preface, empty SETTINGS, the request's HEADERS (HPACK literals
/// without indexing) and its one empty message with END_STREAM.
fn raw_fetch_x509svid() -> Vec<u8> {
    fn frame(out: &mut Vec<u8>, kind: u8, flags: u8, stream: u32, payload: &[u8]) {
        out.extend_from_slice(&u32::try_from(payload.len()).unwrap().to_be_bytes()[1..]);
        out.extend_from_slice(&[kind, flags]);
        out.extend_from_slice(&stream.to_be_bytes());
        out.extend_from_slice(payload);
    }
    let mut block = Vec::new();
    for (name, value) in [
        (":method", "POST"),
        (":scheme", "http"),
        (":path", "/SpiffeWorkloadAPI/FetchX509SVID"),
        (":authority", "localhost"),
        ("content-type", "application/grpc"),
        ("te", "trailers"),
        ("workload.spiffe.io", "true"),
    ] {
        block.push(0);
        for s in [name, value] {
            block.push(u8::try_from(s.len()).unwrap());
            block.extend_from_slice(s.as_bytes());
        }
    }
    let mut out = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
    frame(&mut out, 0x4, 0, 0, &[]);
    frame(&mut out, 0x1, 0x4, 1, &block);
    frame(&mut out, 0x0, 0x1, 1, &[0, 0, 0, 0, 0]);
    out
}

/// Issue 12, attack 1, the race: a process connects, writes a whole
/// request, forks a child that keeps the connection and only reads, and
/// exec's a registered program, all before the agent accepts. The agent
/// then sees the registered program both when it accepts and when it
/// measures, and the request carries the connecting pid. It must not
/// answer: the agent asks every new connection to echo an unpredictable
/// HTTP/2 PING, and only a process still speaking HTTP/2 after the accept
/// (not sleep, and not the child, whose write would be foreign) can.
#[tokio::test]
async fn a_request_written_before_an_exec_that_beats_the_accept_is_not_answered() {
    let d = deploy(&[sleeper(), this_binary()], "challenge_timeout = \"2s\"").await;
    let request = hex::encode(raw_fetch_x509svid());
    let script = r#"
import os, socket, sys
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
s.connect(sys.argv[1])
s.sendall(bytes.fromhex(sys.argv[2]))
if os.fork() == 0:
    s.settimeout(8)
    data = b""
    try:
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
    except socket.timeout:
        pass
    got = "svid" if sys.argv[3].encode() in data else "nothing"
    print("OUTCOME=%s after %d bytes" % (got, len(data)), flush=True)
    os._exit(0)
os.execv("/usr/bin/sleep", ["sleep", "30"])
"#;
    let mut child = Command::new(PYTHON)
        .arg("-c")
        .arg(script)
        .arg(&d.socket)
        .arg(&request)
        .arg(SLEEPER_ID)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    // The agent runs on this test's one thread: blocking it here keeps the
    // connection unaccepted until the connecting process runs sleep, so
    // the attacker wins the race every time.
    wait_for_exe(&child.id().to_string(), SLEEP);
    let outcome = outcome(&mut child).await;
    println!("child of the process that exec'd sleep: {outcome}");
    finish(child);
    assert!(
        outcome.starts_with("nothing"),
        "the child must not read sleep's SVID: {outcome}"
    );
    assert_eq!(minted(&d.server).await, 0, "nothing was minted for sleep");
    let reported = reported_refusal(&d.server, "challenge").await;
    assert!(
        reported["fields"]["reason"]
            .as_str()
            .unwrap()
            .contains("workload.challenge_timeout"),
        "{reported}"
    );

    // The same bytes from a process that stays what it is and answers the
    // agent's PING: served (the request above was a valid one).
    let got = tokio::time::timeout(
        Duration::from_secs(20),
        raw_exchange(&d.socket, &raw_fetch_x509svid(), SELF_ID.as_bytes()),
    )
    .await
    .expect("the answering client gets its SVID");
    assert!(got, "the answering client gets its SVID");
    d.agent.shutdown().await;
}

/// Writes `request` on a new connection, then reads frames, echoing every
/// PING as a PING ACK, until `wanted` appears in what was read (`true`) or
/// the connection ends (`false`).
async fn raw_exchange(socket: &Path, request: &[u8], wanted: &[u8]) -> bool {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut io = tokio::net::UnixStream::connect(socket).await.unwrap();
    io.write_all(request).await.unwrap();
    let mut seen = Vec::new();
    loop {
        let mut head = [0u8; 9];
        if io.read_exact(&mut head).await.is_err() {
            return false;
        }
        let len = usize::from(head[0]) << 16 | usize::from(head[1]) << 8 | usize::from(head[2]);
        let mut payload = vec![0; len];
        if io.read_exact(&mut payload).await.is_err() {
            return false;
        }
        if head[3] == 0x6 && head[4] & 0x1 == 0 {
            let mut ack = vec![0, 0, 8, 0x6, 0x1, 0, 0, 0, 0];
            ack.extend_from_slice(&payload);
            io.write_all(&ack).await.unwrap();
        }
        seen.extend_from_slice(&head);
        seen.extend_from_slice(&payload);
        if seen.windows(wanted.len()).any(|w| w == wanted) {
            return true;
        }
    }
}
