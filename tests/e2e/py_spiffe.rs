//! py-spiffe, unmodified, against a real agent: the `spiffe` package from
//! PyPI (pinned in tests/interop/requirements.txt) on grpcio, the gRPC
//! C-core client that Python, Ruby, PHP, C++ and C# share. grpcio sends the
//! percent-encoded socket path as the HTTP/2 `:authority`, which the `h2`
//! crate refuses (see hallmark-agent's `workload_api::authority`).
//!
//! The caller is Debian's python3 running tests/interop/py_spiffe_check.py
//! from an app tree that two gold images bind (`alpha`, which also binds a
//! model, and `beta`). The script checks every answer with py-spiffe's own
//! code and reports JSON lines; this test checks those and drives the kills.
//!
//! The venv comes from tests/interop/setup-venv.sh (which .ci/run runs
//! first). The test skips, loudly, only if that script cannot build the
//! venv (no PyPI, no python3-venv); anything else py-spiffe meets fails it.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use sha2::{Digest, Sha256};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader, Lines};
use tokio::process::{Child, ChildStdout};

use hallmark_attestors::tree::{TreeLimits, digest_tree};
use hallmark_server::image::{Algorithm, GoldImage, SigningKey, TrustedSigners};

use crate::common::*;
use crate::kill::{ALPHA, BETA, KillEnv};

const INTEROP: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/interop");
/// How long one step of the script may take before it counts as a hang.
const STEP: Duration = Duration::from_secs(90);

#[tokio::test]
async fn py_spiffe_fetches_validates_and_watches_its_identity_killed() {
    init_tracing();
    let Some(python) = venv_python("the py-spiffe conformance test").await else {
        return;
    };
    let (env, interpreter) = deploy(&python, "py_spiffe_check.py").await;
    let agent = env.agent("a").await;

    let mut script = Script::start(
        &python,
        &env.server.path("app"),
        "py_spiffe_check.py",
        &agent.socket,
    );
    let fetched = script.next("fetched").await;
    assert_eq!(fetched["x509_ids"], serde_json::json!([ALPHA, BETA]));
    assert_eq!(fetched["jwt_sub"], ALPHA);
    assert!(fetched["x509_authorities"].as_u64().unwrap() >= 1);
    assert!(!fetched["jwt_authorities"].as_array().unwrap().is_empty());

    // The watched stream: both identities, then alpha killed, then the code
    // both images bind killed, which leaves none and ends the stream.
    let first = script.next("context").await;
    assert_eq!(first["ids"], serde_json::json!([ALPHA, BETA]));
    env.kill("image", "alpha", "compromised build").await;
    let update = script.next("context").await;
    assert_eq!(update["ids"], serde_json::json!([BETA]));

    let kill = env
        .kill("code", &interpreter, "backdoored interpreter")
        .await;
    let ended = script.next("ended").await;
    assert!(
        ended["error"]
            .as_str()
            .unwrap()
            .contains("PERMISSION_DENIED"),
        "{ended}"
    );
    // A fresh fetch is refused with the standard's code and the agent's
    // reason, through grpcio's error details.
    let refused = script.next("refused").await;
    let error = refused["error"].as_str().unwrap();
    assert!(error.contains("PERMISSION_DENIED"), "{error}");
    assert!(
        error.contains(&format!("kill {} (code {interpreter})", kill.id)),
        "{error}"
    );
    script.finish().await;
    agent.handle.shutdown().await;
}

/// Logs of the issuer and agent on the test's output when `RUST_LOG` is
/// set (`RUST_LOG=h2=debug` shows what the HTTP/2 layer refuses).
fn init_tracing() {
    if std::env::var_os("RUST_LOG").is_some() {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_test_writer()
            .try_init();
    }
}

/// The venv's python, built or reused by tests/interop/setup-venv.sh; `None`
/// (after saying so, loudly, naming the skipped `test`) when the venv
/// cannot be built.
pub(crate) async fn venv_python(test: &str) -> Option<PathBuf> {
    let setup = Path::new(INTEROP).join("setup-venv.sh");
    let output = tokio::process::Command::new("bash")
        .arg(&setup)
        .output()
        .await
        .unwrap();
    if !output.status.success() {
        eprintln!(
            "\n\
             ************************************************************\n\
             SKIPPED: {test}. {} failed ({}):\n{}\n\
             Without PyPI or python3-venv, the Python packages cannot be installed;\n\
             .ci/run installs both and fails if it cannot.\n\
             ************************************************************\n",
            setup.display(),
            output.status,
            String::from_utf8_lossy(&output.stderr).trim_end(),
        );
        return None;
    }
    let venv = std::env::var_os("HALLMARK_INTEROP_VENV").map_or_else(
        || Path::new(env!("CARGO_MANIFEST_DIR")).join("target/interop-venv"),
        PathBuf::from,
    );
    Some(venv.join("bin/python"))
}

/// An issuer with `alpha` (app tree and model) and `beta` (app tree)
/// registered for `python`'s interpreter, the app tree holding
/// tests/interop/`script`; returns the env and the interpreter's digest.
pub(crate) async fn deploy(python: &Path, script: &str) -> (KillEnv, String) {
    let key = SigningKey::from_pkcs8_der(&SigningKey::generate_pkcs8(Algorithm::Ed25519).unwrap())
        .unwrap();
    let mut signers = TrustedSigners::new();
    signers.insert(key.public_key().clone());
    let server = TestServer::start_with(|s| s.trusted_signers = Arc::new(signers)).await;

    let app = server.path("app");
    std::fs::create_dir_all(&app).unwrap();
    std::fs::copy(Path::new(INTEROP).join(script), app.join(script)).unwrap();
    let model = server.path("model");
    std::fs::create_dir_all(&model).unwrap();
    std::fs::write(model.join("weights.bin"), b"tiny model weights").unwrap();
    let limits = TreeLimits::default();
    let app_digest = digest_tree(&app, &limits).unwrap().digest;
    let model_digest = digest_tree(&model, &limits).unwrap().digest;
    // The venv's python is a link to Debian's; the agent measures the file
    // that runs.
    let interpreter = hex::encode(Sha256::digest(
        std::fs::read(std::fs::canonicalize(python).unwrap()).unwrap(),
    ));

    let code = format!(
        "[code]\nsha256 = [\"{interpreter}\"]\napp_digest = \"{app_digest}\"\napp_path = \"{}\"\ninterpreter = \"python\"\n",
        app.display()
    );
    let model_table = format!(
        "[model]\nname = \"tiny\"\nversion = \"1.0\"\ndigest = \"{model_digest}\"\npath = \"{}\"\n",
        model.display()
    );
    // An interpreter image pins the account that runs it: this test's.
    let uid = std::os::unix::fs::MetadataExt::uid(&std::fs::metadata("/proc/self").unwrap());
    let unix = format!("[unix]\nuid = {uid}\n");
    for (name, tables) in [
        ("alpha", format!("{code}{model_table}{unix}")),
        ("beta", format!("{code}{unix}")),
    ] {
        let image = GoldImage::from_toml(&format!(
            "name = \"{name}\"\nversion = \"1.0.0\"\nspiffe_id = \"spiffe://example.org/{name}\"\nowner = \"alice@example.org\"\npurpose = \"py-spiffe conformance\"\nrisk_tier = \"low\"\nnot_after = 2099-12-31\n{tables}"
        ))
        .unwrap();
        server.register_image(&image, &key).await.unwrap();
    }
    let env = KillEnv {
        server,
        model_digest,
        code: interpreter.clone(),
    };
    (env, interpreter)
}

/// A script of tests/interop running, its JSON-line events read one by one.
pub(crate) struct Script {
    child: Child,
    lines: Lines<BufReader<ChildStdout>>,
    stderr: tokio::task::JoinHandle<String>,
}

impl Script {
    pub(crate) fn start(python: &Path, app: &Path, script: &str, socket: &Path) -> Self {
        let mut child = tokio::process::Command::new(python)
            .arg(app.join(script))
            .args([ALPHA, BETA])
            .current_dir(app)
            // Only what a workload needs: no PYTHONPATH or the like (the
            // agent refuses those unless the image pins them).
            .env_clear()
            .env(
                "SPIFFE_ENDPOINT_SOCKET",
                format!("unix:{}", socket.display()),
            )
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let mut err = child.stderr.take().unwrap();
        let stderr = tokio::spawn(async move {
            let mut text = String::new();
            let _ = err.read_to_string(&mut text).await;
            text
        });
        Self {
            child,
            lines,
            stderr,
        }
    }

    /// The next event, which must be `event`.
    pub(crate) async fn next(&mut self, event: &str) -> Value {
        let line = match tokio::time::timeout(STEP, self.lines.next_line()).await {
            Ok(Ok(Some(line))) => line,
            Ok(Ok(None)) => self.fail(&format!("exited before `{event}`")).await,
            Ok(Err(e)) => self.fail(&format!("unreadable output ({e})")).await,
            Err(_) => self.fail(&format!("no `{event}` in {STEP:?}")).await,
        };
        let value: Value = serde_json::from_str(&line).unwrap_or(Value::Null);
        if value["event"] != event {
            self.fail(&format!("printed {line:?}, expected `{event}`"))
                .await;
        }
        value
    }

    /// The script must end on its own, successfully, with nothing more to say.
    pub(crate) async fn finish(mut self) {
        match tokio::time::timeout(STEP, self.lines.next_line()).await {
            Ok(Ok(None)) => {}
            Ok(Ok(Some(line))) => self.fail(&format!("printed {line:?} after the end")).await,
            other => self.fail(&format!("did not end ({other:?})")).await,
        }
        let status = tokio::time::timeout(STEP, self.child.wait())
            .await
            .unwrap()
            .unwrap();
        if !status.success() {
            self.fail(&format!("exited with {status}")).await;
        }
    }

    async fn fail(&mut self, what: &str) -> ! {
        let _ = self.child.start_kill();
        let _ = self.child.wait().await;
        let stderr = (&mut self.stderr).await.unwrap_or_default();
        panic!("the interop script {what}; its stderr:\n{stderr}");
    }
}
