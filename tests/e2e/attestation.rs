//! Workload attestation through a real agent: the app tree of an
//! interpreted agent, uid constraints, a process that exits between connect
//! and attestation, a recycled pid (on a fake /proc), and the per-uid
//! hashing budget. Each refusal has its exact status and names its cause.

use std::io::{BufRead, BufReader};
use std::os::fd::AsRawFd;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hyper_util::rt::TokioIo;
use tonic::Code;
use tonic::transport::Endpoint;

use hallmark_agent::workload_api::process_source::ProcessEvidence;
use hallmark_attestors::workload::{FileCache, ProcRoot};
use hallmark_proto::workload::spiffe_workload_api_client::SpiffeWorkloadApiClient;
use hallmark_proto::workload::{JwtsvidRequest, X509svidRequest};

use crate::workload_api::{
    Variant, assert_status, deploy_with, first_x509, raw_client, with_header,
};

#[tokio::test]
async fn an_interpreted_agent_is_bound_by_its_app_tree() {
    // This process plays the interpreter; its "script" and an installed
    // package live in the app tree the image names through code.app_path.
    let files: &[(&str, &[u8])] = &[
        ("app/agent.py", b"print('pay invoices')\n"),
        (
            "app/site-packages/ledger/__init__.py",
            b"def pay(x):\n    return x\n",
        ),
    ];
    let dir = tempfile::tempdir().unwrap();
    let app = dir.path().join("app");
    for (path, content) in files {
        let path = dir.path().join(path);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, content).unwrap();
    }
    let app_digest = hallmark_attestors::tree::digest_tree(
        &app,
        &hallmark_attestors::tree::TreeLimits::default(),
    )
    .unwrap()
    .digest;
    let code_extra =
        format!("app_digest = \"{app_digest}\"\napp_path = \"{{dir}}app\"\ninterpreter = \"none\"");
    let d = deploy_with(Variant {
        code_extra: &code_extra,
        files,
        ..Variant::default()
    })
    .await;
    let app = d._server.path("app");
    let ok = first_x509(&d.socket).await.unwrap();
    assert_eq!(ok.svids.len(), 1);

    // An installed package changed: refused, naming the constraint.
    std::fs::write(
        app.join("site-packages/ledger/__init__.py"),
        b"def pay(x):\n    return x * 100\n",
    )
    .unwrap();
    let err = first_x509(&d.socket).await.unwrap_err();
    assert_status(&err, Code::PermissionDenied, "app tree mismatch");

    // Restored, then the script itself changed: refused again.
    std::fs::write(
        app.join("site-packages/ledger/__init__.py"),
        b"def pay(x):\n    return x\n",
    )
    .unwrap();
    first_x509(&d.socket).await.unwrap();
    std::fs::write(app.join("agent.py"), b"print('pay everyone')\n").unwrap();
    let err = first_x509(&d.socket).await.unwrap_err();
    assert_status(&err, Code::PermissionDenied, "app tree mismatch");
    d.agent.shutdown().await;
}

#[tokio::test]
async fn a_process_running_as_another_uid_is_denied() {
    let d = deploy_with(Variant {
        extra: "[unix]\nuid = 4242\n",
        ..Variant::default()
    })
    .await;
    let err = first_x509(&d.socket).await.unwrap_err();
    assert_status(&err, Code::PermissionDenied, "uid mismatch");
    d.agent.shutdown().await;
}

/// Not a test of its own: the child process of
/// [`a_process_that_exited_after_connecting_is_denied`]. It connects to the
/// socket named in `HALLMARK_TEST_CONNECT`, prints the descriptor number and
/// waits to be killed.
#[test]
#[ignore = "helper process, run by a_process_that_exited_after_connecting_is_denied"]
fn connect_and_wait_child() {
    let Some(path) = std::env::var_os("HALLMARK_TEST_CONNECT") else {
        return;
    };
    let stream = std::os::unix::net::UnixStream::connect(path).unwrap();
    println!("FD={}", stream.as_raw_fd());
    std::thread::sleep(Duration::from_secs(60));
}

#[tokio::test]
async fn a_process_that_exited_after_connecting_is_denied() {
    let d = deploy_with(Variant::default()).await;
    // A child connects (so the agent's peer is the child), this process
    // takes a copy of the connected socket (pidfd_getfd), and the child
    // exits before anything is asked on the connection.
    let mut child = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "attestation::connect_and_wait_child",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("HALLMARK_TEST_CONNECT", &d.socket)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let child_pid = i32::try_from(child.id()).unwrap();
    let stdout = child.stdout.take().unwrap();
    let fd: i32 = tokio::task::spawn_blocking(move || {
        BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
            // libtest may print "test <name> ... " on the same line first.
            .find_map(|l| l.split_once("FD=").map(|(_, n)| n.trim().parse().unwrap()))
            .expect("the child prints its descriptor")
    })
    .await
    .unwrap();
    let pidfd = rustix::process::pidfd_open(
        rustix::process::Pid::from_raw(child_pid).unwrap(),
        rustix::process::PidfdFlags::empty(),
    )
    .unwrap();
    let stolen =
        rustix::process::pidfd_getfd(&pidfd, fd, rustix::process::PidfdGetfdFlags::empty())
            .unwrap();
    child.kill().unwrap();
    child.wait().unwrap();

    let stream = std::os::unix::net::UnixStream::from(stolen);
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
    let mut client = SpiffeWorkloadApiClient::new(channel);
    let err = client
        .fetch_jwtsvid(with_header(JwtsvidRequest {
            audience: vec!["payments".into()],
            spiffe_id: String::new(),
        }))
        .await
        .unwrap_err();
    assert_status(&err, Code::PermissionDenied, "exited");
    d.agent.shutdown().await;
}

/// A fake `/proc/<pid>` for this process: its real status, environment and
/// cgroup, its real executable, and a start time the test controls.
fn fake_proc_of_self(root: &Path, start_time: u64) {
    let pid = std::process::id();
    let dir = root.join(pid.to_string());
    std::fs::create_dir_all(&dir).unwrap();
    for file in ["status", "cgroup"] {
        std::fs::copy(format!("/proc/self/{file}"), dir.join(file)).unwrap();
    }
    std::fs::write(dir.join("environ"), b"").unwrap();
    let exe = std::fs::read_link("/proc/self/exe").unwrap();
    let link = dir.join("exe");
    if !link.exists() {
        std::os::unix::fs::symlink(exe, link).unwrap();
        // No mapped code beyond the executable; the root is the real one.
        std::fs::write(dir.join("maps"), b"").unwrap();
        std::os::unix::fs::symlink("/", dir.join("root")).unwrap();
        std::os::unix::fs::symlink("/", dir.join("cwd")).unwrap();
    }
    // Its root and working directory, where its paths are resolved.
    for name in ["root", "cwd"] {
        let link = dir.join(name);
        if std::fs::symlink_metadata(&link).is_err() {
            std::os::unix::fs::symlink("/", link).unwrap();
        }
    }
    write_start_time(root, start_time);
}

fn write_start_time(root: &Path, start_time: u64) {
    let pid = std::process::id();
    let stat = format!("{pid} (e2e) S 1 1 1 0 -1 0 0 0 0 0 0 0 0 0 20 0 1 0 {start_time} 0 0");
    std::fs::write(root.join(pid.to_string()).join("stat"), stat).unwrap();
}

#[tokio::test]
async fn a_recycled_pid_loses_the_identity_of_the_process_that_connected() {
    let proc_root = tempfile::tempdir().unwrap();
    fake_proc_of_self(proc_root.path(), 1000);
    let root = proc_root.path().to_owned();
    let d = deploy_with(Variant {
        evidence: Some(Box::new(move |settings| {
            Arc::new(ProcessEvidence::with_cache(
                ProcRoot::new(root),
                &settings.workload,
                FileCache::default(),
            ))
        })),
        ..Variant::default()
    })
    .await;
    let mut raw = raw_client(&d.socket).await;
    let mut stream = raw
        .fetch_x509svid(with_header(X509svidRequest {}))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(stream.message().await.unwrap().unwrap().svids.len(), 1);

    // The pid now names a process that started later.
    write_start_time(proc_root.path(), 2000);
    let err = tokio::time::timeout(Duration::from_secs(30), stream.message())
        .await
        .expect("the agent notices within its liveness interval")
        .unwrap_err();
    assert_status(&err, Code::PermissionDenied, "now names another process");
    d.agent.shutdown().await;
}

#[tokio::test]
async fn a_uid_over_its_hashing_budget_gets_resource_exhausted() {
    // Budget: this executable plus 1000 bytes, and no file may be larger.
    let exe_size = std::fs::metadata("/proc/self/exe").unwrap().len();
    let budget = exe_size + 1000;
    let agent_toml = format!(
        "[workload]\nmax_file_size = {budget}\nhash_budget = {budget}\nhash_budget_window = \"10years\"\nhash_entry_cost = 0\n"
    );
    let d = deploy_with(Variant {
        agent_toml: &agent_toml,
        ..Variant::default()
    })
    .await;
    first_x509(&d.socket).await.unwrap();
    // A new 2000-byte file in the model: more than the uid has left.
    std::fs::write(d.model_dir.join("adapter.bin"), vec![9u8; 2000]).unwrap();
    let err = first_x509(&d.socket).await.unwrap_err();
    assert_status(&err, Code::ResourceExhausted, "hash 2000 bytes");
    d.agent.shutdown().await;
}

#[tokio::test]
async fn a_short_lived_svid_rotates_at_half_its_life_from_issue_not_from_its_backdated_start() {
    // Leaves are backdated for clock skew: counting half-life from notBefore
    // would put the rotation of a 20 s SVID in the past on arrival, and the
    // agent would mint again and again.
    let d = deploy_with(Variant {
        top: "x509_ttl = 20",
        manual_clock: true,
        ..Variant::default()
    })
    .await;
    // Once the CA is older than the backdate, leaves start 30 s in the past.
    d._server.clock.advance(Duration::from_secs(60));
    let mut raw = raw_client(&d.socket).await;
    let mut stream = raw
        .fetch_x509svid(with_header(X509svidRequest {}))
        .await
        .unwrap()
        .into_inner();
    let serial = |m: &hallmark_proto::workload::X509svidResponse| {
        let (_, cert) = x509_parser::parse_x509_certificate(&m.svids[0].x509_svid).unwrap();
        cert.raw_serial_as_string()
    };
    let first = serial(&stream.message().await.unwrap().unwrap());
    // Past half of the 20 s granted: the stream rotates once.
    d._server.clock.advance(Duration::from_secs(11));
    let second = tokio::time::timeout(Duration::from_secs(30), stream.message())
        .await
        .expect("the SVID rotates at half-life")
        .unwrap()
        .unwrap();
    assert_ne!(serial(&second), first);
    let minted = crate::common::audit_records(&d._server)
        .await
        .into_iter()
        .filter(|r| r["kind"] == "svid_minted" && r["fields"]["svid_type"] == "x509")
        .count();
    assert_eq!(minted, 2, "one SVID at the start, one at the rotation");
    d.agent.shutdown().await;
}
