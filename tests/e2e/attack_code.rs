//! Attacks on the code binding with real processes: an interpreter image
//! (Debian's /usr/bin/python3.11 plus an app tree) run with another
//! program, inline code, a hard-linked script or `PYTHONPATH`; native code
//! injected with `LD_PRELOAD` from a directory the workload's uid owns; and
//! `model.require_loaded` with a process that maps the weights and one
//! that does not.
//!
//! The caller is python itself: a small relay script connects to the
//! agent's socket and to a socket this test listens on, and copies bytes
//! both ways, so every Workload API message the agent reads was written by
//! the python process being attested. The test speaks gRPC through it.

use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hyper_util::rt::TokioIo;
use sha2::{Digest, Sha256};
use tonic::Code;
use tonic::transport::Endpoint;

use hallmark_agent::Agent;
use hallmark_agent::config::AgentSettings;
use hallmark_attestors::tree::{TreeLimits, digest_tree};
use hallmark_proto::workload::X509svidRequest;
use hallmark_proto::workload::spiffe_workload_api_client::SpiffeWorkloadApiClient;
use hallmark_server::image::{Algorithm, GoldImage, SigningKey, TrustedSigners};

use crate::common::*;
use crate::workload_api::{assert_status, with_header};

/// The relay: maps the model when asked, then copies bytes between the
/// agent's socket and the test's.
const RELAY: &str = r#"
import os, socket, threading
keep = []
model = os.environ.get("MAP_MODEL")
if model:
    import mmap
    with open(model, "rb") as f:
        keep.append(mmap.mmap(f.fileno(), 0, prot=mmap.PROT_READ))
agent = socket.socket(socket.AF_UNIX)
agent.connect(os.environ["AGENT_SOCKET"])
test = socket.socket(socket.AF_UNIX)
test.connect(os.environ["RELAY_SOCKET"])
def pump(src, dst):
    try:
        while True:
            data = src.recv(65536)
            if not data:
                break
            dst.sendall(data)
    except OSError:
        pass
    try:
        dst.shutdown(socket.SHUT_WR)
    except OSError:
        pass
t = threading.Thread(target=pump, args=(agent, test), daemon=True)
t.start()
pump(test, agent)
t.join()
"#;

const PYTHON: &str = "/usr/bin/python3";

/// The real file behind /usr/bin/python3 and its digest.
fn python_sha256() -> String {
    let real = std::fs::canonicalize(PYTHON).unwrap();
    hex::encode(Sha256::digest(std::fs::read(real).unwrap()))
}

/// An issuer and an agent; `dir` (world-readable) holds `app/main.py` (the
/// relay) and `model/` (weights and a config).
struct Env {
    server: TestServer,
    agent: hallmark_agent::AgentHandle,
    socket: PathBuf,
    dir: PathBuf,
    _tmp: tempfile::TempDir,
}

/// The fields `{dir}`, `{app}`, `{model}` and `{python}` in `images` are
/// filled in; each image is a manifest body after the governance header.
async fn deploy(images: &[(&str, &str)], prepare: impl FnOnce(&Path)) -> Env {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().to_path_buf();
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::create_dir_all(dir.join("app")).unwrap();
    std::fs::write(dir.join("app/main.py"), RELAY).unwrap();
    std::fs::create_dir_all(dir.join("model")).unwrap();
    std::fs::write(dir.join("model/model.safetensors"), vec![7u8; 8192]).unwrap();
    std::fs::write(dir.join("model/config.json"), b"{\"layers\":1}").unwrap();
    prepare(&dir);
    let limits = TreeLimits::default();
    let app = digest_tree(&dir.join("app"), &limits).unwrap().digest;
    let model = digest_tree(&dir.join("model"), &limits).unwrap().digest;

    let (server, key) = signing_server().await;
    // The workload socket lives in the server's dir: callers of other uids
    // must reach it.
    std::fs::set_permissions(server.path(""), std::fs::Permissions::from_mode(0o755)).unwrap();
    let python = python_sha256();
    for (name, body) in images {
        let body = body
            .replace("{dir}", &dir.display().to_string())
            .replace("{app}", &app)
            .replace("{model}", &model)
            .replace("{python}", &python);
        let text = format!(
            "name = \"{name}\"\nversion = \"1\"\nspiffe_id = \"spiffe://example.org/{name}\"\nowner = \"alice@example.org\"\npurpose = \"attack tests\"\nrisk_tier = \"low\"\nnot_after = 2099-12-31\n{body}"
        );
        let image = GoldImage::from_toml(&text).unwrap();
        server.register_image(&image, &key).await.unwrap();
    }
    let bootstrap = server.path("bootstrap.pem");
    std::fs::write(&bootstrap, server.bundle().to_pem()).unwrap();
    let socket = server.path("workload.sock");
    let toml = format!(
        "trust_domain = \"{TRUST_DOMAIN}\"\nserver_address = \"{}\"\ndata_dir = \"{}\"\nsocket_path = \"{}\"\n[bootstrap]\nbundle_path = \"{}\"\n",
        server.addr(),
        server.path("agent-data").display(),
        socket.display(),
        bootstrap.display(),
    );
    let mut settings = AgentSettings::from_toml_str(&toml).unwrap();
    settings.join_token = Some(server.token().await);
    let agent = Agent::start(settings).await.unwrap();
    let mut status = agent.status();
    tokio::time::timeout(
        Duration::from_secs(20),
        status.wait_for(|s| s.sync_connected),
    )
    .await
    .unwrap()
    .unwrap();
    Env {
        server,
        agent,
        socket,
        dir,
        _tmp: tmp,
    }
}

/// How to start the python caller.
#[derive(Default)]
struct Run<'a> {
    args: &'a [&'a str],
    /// Working directory (default: the env's dir).
    cwd: Option<&'a Path>,
    vars: &'a [(&'a str, &'a str)],
    /// Run as nobody (65534) instead of root.
    nobody: bool,
}

/// Starts python with `run`, and fetches the first X.509-SVID message
/// through its relay. Returns the result and python's pid.
async fn fetch(env: &Env, run: Run<'_>) -> (Result<Vec<String>, tonic::Status>, u32) {
    static N: AtomicUsize = AtomicUsize::new(0);
    let relay = env
        .dir
        .join(format!("relay-{}.sock", N.fetch_add(1, Ordering::Relaxed)));
    let listener = tokio::net::UnixListener::bind(&relay).unwrap();
    std::fs::set_permissions(&relay, std::fs::Permissions::from_mode(0o777)).unwrap();
    let mut cmd = std::process::Command::new(PYTHON);
    cmd.args(run.args)
        .current_dir(run.cwd.unwrap_or(&env.dir))
        .env_clear()
        .env("AGENT_SOCKET", &env.socket)
        .env("RELAY_SOCKET", &relay)
        .envs(run.vars.iter().copied())
        .stdout(std::process::Stdio::null());
    if run.nobody {
        cmd.uid(65534).gid(65534);
    }
    let mut child = cmd.spawn().unwrap();
    let pid = child.id();
    let (stream, _) = tokio::time::timeout(Duration::from_secs(30), listener.accept())
        .await
        .expect("python connects to the relay socket")
        .unwrap();
    let stream = Arc::new(Mutex::new(Some(stream)));
    let channel = Endpoint::from_static("http://workload.invalid")
        .connect_with_connector(tower::service_fn(move |_| {
            let taken = stream.lock().unwrap().take();
            async move {
                taken
                    .map(TokioIo::new)
                    .ok_or_else(|| std::io::Error::other("the relay was used once"))
            }
        }))
        .await
        .unwrap();
    let mut client = SpiffeWorkloadApiClient::new(channel);
    let result = async {
        let mut stream = client
            .fetch_x509svid(with_header(X509svidRequest {}))
            .await?
            .into_inner();
        let first = stream
            .message()
            .await?
            .ok_or_else(|| tonic::Status::unknown("stream ended without a message"))?;
        Ok(first.svids.into_iter().map(|s| s.spiffe_id).collect())
    }
    .await;
    child.kill().unwrap();
    child.wait().unwrap();
    (result, pid)
}

/// An audited refusal whose reason contains `needle`.
async fn assert_audited(server: &TestServer, needle: &str) {
    let refused = audit_records(server)
        .await
        .into_iter()
        .filter(|r| r["kind"] == "svid_refused")
        .any(|r| {
            r["fields"]["reason"]
                .as_str()
                .is_some_and(|s| s.contains(needle))
        });
    assert!(refused, "no audited refusal naming {needle:?}");
}

const STRICT: &str = r#"
[code]
sha256 = ["{python}"]
app_digest = "{app}"
app_path = "{dir}/app"
interpreter = "python"
[unix]
uid = 0
"#;

const INLINE: &str = r#"
[code]
sha256 = ["{python}"]
app_digest = "{app}"
app_path = "{dir}/app"
interpreter = "python"
allow_inline = true
[unix]
uid = 0
"#;

/// One interpreter attack: what it is, python's arguments, environment
/// and working directory, and the outcome (the SPIFFE IDs issued, or the
/// refusal's reason).
type Case<'a> = (
    &'a str,
    Vec<&'a str>,
    Vec<(&'a str, &'a str)>,
    Option<&'a Path>,
    Result<Vec<&'a str>, String>,
);

#[tokio::test]
async fn python_gets_the_identity_only_for_its_app_tree_program() {
    let env = deploy(&[("strict", STRICT), ("inline", INLINE)], |dir| {
        std::fs::create_dir_all(dir.join("other")).unwrap();
        std::fs::write(dir.join("other/other.py"), RELAY).unwrap();
        std::fs::create_dir_all(dir.join("other/app")).unwrap();
        std::fs::write(dir.join("other/app/main.py"), RELAY).unwrap();
        std::fs::create_dir_all(dir.join("linked")).unwrap();
        std::fs::hard_link(dir.join("app/main.py"), dir.join("linked/main.py")).unwrap();
    })
    .await;
    let d = |p: &str| env.dir.join(p).display().to_string();
    let (main, other, linked, shadow) = (
        d("app/main.py"),
        d("other/other.py"),
        d("linked/main.py"),
        d("other/app/main.py"),
    );
    let outside = |p: &str| Err(format!("main program {p} is outside the app tree"));
    let both = Ok(vec![
        "spiffe://example.org/inline",
        "spiffe://example.org/strict",
    ]);
    let other_dir = env.dir.join("other");
    let cases: Vec<Case<'_>> = vec![
        (
            "the app's script, relative, no HALLMARK_APP_DIR (app_path is the fallback)",
            vec!["app/main.py"],
            vec![],
            None,
            both.clone(),
        ),
        (
            "the app's script, absolute, from /",
            vec!["-u", &main],
            vec![],
            Some(Path::new("/")),
            both.clone(),
        ),
        (
            "another script: the app tree still measures as approved, the program is not in it",
            vec![&other],
            vec![],
            None,
            outside(&other),
        ),
        (
            "the approved script hard-linked next to the attacker's modules",
            vec!["linked/main.py"],
            vec![],
            None,
            outside(&linked),
        ),
        (
            "inline code: only the image that allows it",
            vec!["-c", RELAY],
            vec![],
            None,
            Ok(vec!["spiffe://example.org/inline"]),
        ),
        (
            "PYTHONPATH changes what the script imports",
            vec!["app/main.py"],
            vec![("PYTHONPATH", "/tmp")],
            None,
            Err("PYTHONPATH is set".to_owned()),
        ),
        (
            "... unless python ignores its environment",
            vec!["-E", "app/main.py"],
            vec![("PYTHONPATH", "/tmp")],
            None,
            both.clone(),
        ),
        (
            "the module form, from the working directory (-B: no __pycache__ in the tree)",
            vec!["-B", "-m", "app.main"],
            vec![],
            None,
            both.clone(),
        ),
        (
            "the same module name from the attacker's directory",
            vec!["-B", "-m", "app.main"],
            vec![],
            Some(&other_dir),
            outside(&shadow),
        ),
    ];
    for (what, args, vars, cwd, outcome) in cases {
        let (result, _) = fetch(
            &env,
            Run {
                args: &args,
                vars: &vars,
                cwd,
                ..Run::default()
            },
        )
        .await;
        match (outcome, result) {
            (Ok(want), Ok(mut got)) => {
                got.sort();
                assert_eq!(got, want, "{what}");
            }
            (Err(why), Err(err)) => {
                assert_status(&err, Code::PermissionDenied, &why);
                assert!(
                    !err.message().contains("/tmp\""),
                    "values never echoed ({what})"
                );
                assert_audited(&env.server, &why).await;
            }
            (want, got) => panic!("{what}: expected {want:?}, got {got:?}"),
        }
    }
    env.agent.shutdown().await;
}

/// Python's startup runs code its caller chose before the app: here the
/// user's site-packages under `$HOME` and a `.pth` file in it (argv[0]
/// choosing the standard library and `pyvenv.cfg` is another way). With
/// `[unix] any_uid` a process of another uid so runs its own code inside
/// the approved interpreter and app, and gets the identity: the opt-out
/// means exactly that. An image that pins the uid refuses it.
#[tokio::test]
async fn startup_code_of_another_uid_needs_an_image_that_pins_the_uid() {
    let any = STRICT.replace("[unix]\nuid = 0", "[unix]\nany_uid = true");
    for (name, image) in [("pinned", STRICT), ("any", any.as_str())] {
        let env = deploy(&[(name, image)], |dir| {
            let home = dir.join("nobody-home");
            let site = std::process::Command::new(PYTHON)
                .args(["-c", "import site; print(site.getusersitepackages())"])
                .env_clear()
                .env("HOME", &home)
                .output()
                .unwrap();
            let site = PathBuf::from(String::from_utf8(site.stdout).unwrap().trim());
            assert!(site.starts_with(&home), "{}", site.display());
            std::fs::create_dir_all(&site).unwrap();
            std::fs::write(
                site.join("attack.pth"),
                "import os; open(os.path.join(os.environ['HOME'], 'ran'), 'w').write('attacker code ran')\n",
            )
            .unwrap();
            chown_nobody(&home);
        })
        .await;
        let script = env.dir.join("app/main.py").display().to_string();
        let home = env.dir.join("nobody-home");
        let home_var = home.display().to_string();
        let (result, _) = fetch(
            &env,
            Run {
                args: &[&script],
                vars: &[("HOME", &home_var)],
                nobody: true,
                ..Run::default()
            },
        )
        .await;
        assert_eq!(
            std::fs::read_to_string(home.join("ran")).unwrap(),
            "attacker code ran",
            "the attacker's code ran in the process being measured"
        );
        if name == "any" {
            assert_eq!(result.unwrap(), ["spiffe://example.org/any"]);
        } else {
            let why = "pinned@1: uid mismatch (runs as 65534, image requires 0)";
            assert_status(&result.unwrap_err(), Code::PermissionDenied, why);
            assert_audited(&env.server, why).await;
        }
        // The account the image names gets it.
        let (ok, _) = fetch(
            &env,
            Run {
                args: &[&script],
                ..Run::default()
            },
        )
        .await;
        assert_eq!(ok.unwrap(), [format!("spiffe://example.org/{name}")]);
        env.agent.shutdown().await;
    }
}

/// `chown -R 65534:65534 path`.
fn chown_nobody(path: &Path) {
    std::os::unix::fs::chown(path, Some(65534), Some(65534)).unwrap();
    if path.is_dir() {
        for entry in std::fs::read_dir(path).unwrap() {
            chown_nobody(&entry.unwrap().path());
        }
    }
}

/// Refused at registration, naming the field and what to add: an app tree
/// without `code.interpreter`, and an interpreter image that pins no uid.
#[tokio::test]
async fn app_tree_images_without_interpreter_or_account_are_refused_at_registration() {
    let (server, key) = signing_server().await;
    for (name, interpreter, field, fix) in [
        (
            "old",
            "",
            "code.interpreter",
            "add interpreter = \"python\"",
        ),
        (
            "loose",
            "interpreter = \"python\"\n",
            "unix.uid",
            "add [unix] uid (or gid) = the account that runs this agent",
        ),
    ] {
        let text = format!(
            "name = \"{name}\"\nversion = \"1\"\nspiffe_id = \"spiffe://example.org/{name}\"\nowner = \"a\"\npurpose = \"p\"\nrisk_tier = \"low\"\nnot_after = 2099-12-31\n[code]\nsha256 = [\"{}\"]\napp_digest = \"sha256:{}\"\n{interpreter}",
            "1".repeat(64),
            "2".repeat(64)
        );
        let image = GoldImage::from_toml(&text).unwrap();
        let err = server.register_image(&image, &key).await.unwrap_err();
        assert_status(&err, Code::InvalidArgument, field);
        assert!(err.message().contains(fix), "{err:?}");
    }
}

/// An issuer that trusts a fresh signing key, and the key.
async fn signing_server() -> (TestServer, SigningKey) {
    let key = SigningKey::from_pkcs8_der(&SigningKey::generate_pkcs8(Algorithm::Ed25519).unwrap())
        .unwrap();
    let mut signers = TrustedSigners::new();
    signers.insert(key.public_key().clone());
    let server = TestServer::start_with(|s| s.trusted_signers = Arc::new(signers)).await;
    (server, key)
}

/// A copy of the system's libm in a directory owned by nobody (65534):
/// harmless code, but code the workload's uid could have rewritten.
fn writable_libm(dir: &Path) -> (String, String) {
    let system = std::fs::canonicalize("/lib/x86_64-linux-gnu/libm.so.6").unwrap();
    let lib_dir = dir.join("nobody-lib");
    std::fs::create_dir_all(&lib_dir).unwrap();
    let lib = lib_dir.join("libm.so.6");
    std::fs::copy(&system, &lib).unwrap();
    std::os::unix::fs::chown(&lib_dir, Some(65534), Some(65534)).unwrap();
    std::os::unix::fs::chown(&lib, Some(65534), Some(65534)).unwrap();
    let digest = hex::encode(Sha256::digest(std::fs::read(&lib).unwrap()));
    (lib.display().to_string(), digest)
}

#[tokio::test]
async fn injected_native_code_is_refused_unless_the_image_allows_it() {
    // Images without an app tree: what binds them is the executable and,
    // now, what it has loaded.
    let plain = "[code]\nsha256 = [\"{python}\"]\n";
    let pinned =
        "[code]\nsha256 = [\"{python}\"]\n[env]\nLD_PRELOAD = \"{dir}/nobody-lib/libm.so.6\"\n";
    let env = deploy(&[("plain", plain), ("pinned", pinned)], |dir| {
        writable_libm(dir);
    })
    .await;
    let lib = env.dir.join("nobody-lib/libm.so.6").display().to_string();
    let digest = hex::encode(Sha256::digest(std::fs::read(&lib).unwrap()));
    let script = env.dir.join("app/main.py").display().to_string();
    // Without LD_PRELOAD: both images.
    let (ok, _) = fetch(
        &env,
        Run {
            args: &[&script],
            nobody: true,
            ..Run::default()
        },
    )
    .await;
    assert_eq!(ok.unwrap(), ["spiffe://example.org/plain"]);
    // With it: the plain image refuses the variable, the image that pins
    // it refuses the writable library it loads, naming the file.
    let (err, _) = fetch(
        &env,
        Run {
            args: &[&script],
            vars: &[("LD_PRELOAD", &lib)],
            nobody: true,
            ..Run::default()
        },
    )
    .await;
    let err = err.unwrap_err();
    assert_status(&err, Code::PermissionDenied, "plain@1: LD_PRELOAD is set");
    let why = format!(
        "pinned@1: loaded code {lib} is writable by the workload and not allowed by the image (sha256 {digest})"
    );
    assert_status(&err, Code::PermissionDenied, &why);
    assert_audited(&env.server, &format!("loaded code {lib} is writable")).await;
    env.agent.shutdown().await;

    // The same library, allowed by digest in code.libraries.
    let allowed = "[code]\nsha256 = [\"{python}\"]\nlibraries = [\"{libm}\"]\n[env]\nLD_PRELOAD = \"{dir}/nobody-lib/libm.so.6\"\n"
        .replace("{libm}", &digest);
    let env = deploy(&[("allowed", &allowed)], |dir| {
        writable_libm(dir);
    })
    .await;
    let lib = env.dir.join("nobody-lib/libm.so.6").display().to_string();
    let script = env.dir.join("app/main.py").display().to_string();
    let (ok, _) = fetch(
        &env,
        Run {
            args: &[&script],
            vars: &[("LD_PRELOAD", &lib)],
            nobody: true,
            ..Run::default()
        },
    )
    .await;
    assert_eq!(ok.unwrap(), ["spiffe://example.org/allowed"]);
    env.agent.shutdown().await;
}

#[tokio::test]
async fn require_loaded_needs_the_weights_mapped() {
    let image = "[code]\nsha256 = [\"{python}\"]\n[model]\nname = \"tiny\"\nversion = \"1\"\ndigest = \"{model}\"\npath = \"{dir}/model\"\nrequire_loaded = true\n";
    let env = deploy(&[("loaded", image)], |_| {}).await;
    let script = env.dir.join("app/main.py").display().to_string();
    let weights = env
        .dir
        .join("model/model.safetensors")
        .display()
        .to_string();
    // Maps the weights (and closes the file: the mapping alone counts).
    let (ok, _) = fetch(
        &env,
        Run {
            args: &[&script],
            vars: &[("MAP_MODEL", &weights)],
            ..Run::default()
        },
    )
    .await;
    assert_eq!(ok.unwrap(), ["spiffe://example.org/loaded"]);
    // The model is present and approved, but this process never loaded it.
    let (err, pid) = fetch(
        &env,
        Run {
            args: &[&script],
            ..Run::default()
        },
    )
    .await;
    let why = format!(
        "model is not loaded: model.safetensors is neither open nor mapped by process {pid}"
    );
    assert_status(&err.unwrap_err(), Code::PermissionDenied, &why);
    assert_audited(&env.server, &why).await;
    env.agent.shutdown().await;
}
