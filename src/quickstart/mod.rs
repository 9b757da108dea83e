//! The quickstart: a complete Hallmark deployment in a temp dir on
//! loopback, step by step, then cleaned up.
//!
//! An operator key, an issuer (embedded store) trusting it, a node agent
//! attesting with a join token, a demo model, a signed gold image for the
//! demo workload (this binary, re-executed as a separate process), the
//! workload fetching its identity over the Workload API, a relying party
//! accepting its JWT-SVID with a [`Policy`], the kill switch taking the
//! identity away, and `audit verify`.

mod demo;
pub(crate) mod workload;

use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, SystemTime};

use anyhow::Context as _;
use tokio::io::{AsyncBufReadExt as _, BufReader};
use tokio::sync::mpsc;

use hallmark::ca::id::{SpiffeId, TrustDomain};
use hallmark::policy::Policy;
use hallmark::revocation::Revocations;
use hallmark::workload::Endpoint;
use hallmark_agent::Agent;
use hallmark_agent::config::AgentSettings;
use hallmark_proto::admin::admin_client::AdminClient;
use hallmark_proto::admin::{
    AuditEntry, CheckpointAuditRequest, CreateRevocationRequest, GenerateJoinTokenRequest,
    ListAgentsRequest, ReadAuditRequest, RegisterImageRequest, audit_entry,
};
use hallmark_server::audit::Entry;
use hallmark_server::audit::verify::{Options, Verdict, verify};
use hallmark_server::config::ServerSettings;
use hallmark_server::image::TrustedSigners;

const TRUST_DOMAIN: &str = "example.org";
/// How long any one step may take before the quickstart gives up.
const STEP_TIMEOUT: Duration = Duration::from_secs(30);

fn step(n: u32, text: &str) {
    println!("[{n}] {text}");
}

fn detail(text: &str) {
    println!("    {text}");
}

/// Runs the quickstart end to end.
pub(crate) async fn run() -> anyhow::Result<()> {
    let dir = tempfile::Builder::new()
        .prefix("hallmark-quickstart-")
        .tempdir()
        .context("cannot create a temp dir")?;
    println!("Hallmark quickstart in {}", dir.path().display());
    run_in(dir.path()).await?;
    dir.close().context("cannot remove the temp dir")?;
    println!("Done: everything ran on loopback in a temp dir, which is now removed.");
    Ok(())
}

async fn run_in(dir: &Path) -> anyhow::Result<()> {
    step(
        1,
        "creating an operator signing key (`hallmark-server image keygen`)",
    );
    let key_path = dir.join("operator.key");
    let key = demo::keygen(&key_path)?;
    detail(&format!(
        "{} (Ed25519, mode 0600), keyid {}",
        key_path.display(),
        key.keyid()
    ));

    step(
        2,
        "starting the issuer (embedded store, node API on loopback), trusting that key",
    );
    let td = TrustDomain::new(TRUST_DOMAIN)?;
    let mut settings =
        ServerSettings::for_dirs(td, dir.join("server-data"), dir.join("admin.sock"));
    let mut signers = TrustedSigners::new();
    signers.insert(key.public_key().clone());
    settings.trusted_signers = std::sync::Arc::new(signers);
    let data_dir = settings.data_dir.clone();
    let admin_socket = settings.admin_socket.clone();
    let server = hallmark_server::server::start(settings).await?;
    let bundle = server.authority().bundle();
    detail(&format!(
        "issuer {} on {}; trust bundle sequence {}",
        server.authority().server_id(),
        server.node_addr(),
        bundle.sequence
    ));
    let mut admin = AdminClient::new(hallmark_server::admin::socket::connect(&admin_socket).await?);

    step(
        3,
        "starting a node agent that attests with a single-use join token",
    );
    let token = admin
        .generate_join_token(GenerateJoinTokenRequest {
            ttl_seconds: 600,
            spiffe_id: String::new(),
        })
        .await
        .context("token generate")?
        .into_inner();
    let bootstrap = dir.join("bootstrap.pem");
    std::fs::write(&bootstrap, bundle.to_pem())?;
    let socket = dir.join("workload.sock");
    let toml = format!(
        "trust_domain = \"{TRUST_DOMAIN}\"\nserver_address = \"{}\"\ndata_dir = \"{}\"\nsocket_path = \"{}\"\n[bootstrap]\nbundle_path = \"{}\"\n",
        server.node_addr(),
        dir.join("agent-data").display(),
        socket.display(),
        bootstrap.display()
    );
    let mut agent_settings = AgentSettings::from_toml_str(&toml)?;
    agent_settings.join_token = Some(token.token);
    let agent = Agent::start(agent_settings).await?;
    let mut status = agent.status();
    tokio::time::timeout(
        STEP_TIMEOUT,
        status.wait_for(|s| s.attested && s.sync_connected),
    )
    .await
    .context("the agent did not attest within 30 s")??;
    let agent_id = agent
        .spiffe_id()
        .context("the agent reports no identity after attesting")?;
    detail(&format!("agent attested as {agent_id}"));
    detail(&format!("Workload API on {}", socket.display()));
    let agents = admin
        .list_agents(ListAgentsRequest {})
        .await
        .context("agent list")?
        .into_inner()
        .agents;
    anyhow::ensure!(
        agents.iter().any(|a| a.spiffe_id == agent_id.as_str()),
        "the issuer does not list the attested agent"
    );

    let result = with_agent(dir, &data_dir, &socket, &key, &mut admin).await;
    step(10, "shutting down the agent and the issuer");
    agent.shutdown().await;
    server.shutdown().await;
    result
}

/// Steps 4 to 9, with the issuer and the agent running.
async fn with_agent(
    dir: &Path,
    data_dir: &Path,
    socket: &Path,
    key: &hallmark_server::image::SigningKey,
    admin: &mut AdminClient<tonic::transport::Channel>,
) -> anyhow::Result<()> {
    step(
        4,
        "building a demo model directory (`hallmark-server image digest`)",
    );
    let (model_path, model_digest, files) = demo::model_dir(&dir.join("models/demo-model"))?;
    detail(&format!("{} ({files} files)", model_path.display()));
    detail(&format!("canonical digest {model_digest}"));

    step(
        5,
        "signing and registering a gold image for the demo workload binary",
    );
    let code = demo::own_exe_sha256()?;
    let manifest = demo::manifest(&code, &model_digest, &model_path);
    for line in manifest.lines() {
        detail(&format!("| {line}"));
    }
    let envelope = demo::sign(&manifest, key, &dir.join("demo-agent.dsse.json"))?;
    let registered = admin
        .register_image(RegisterImageRequest { envelope })
        .await
        .map_err(|s| anyhow::anyhow!("image register: {}", s.message()))?
        .into_inner();
    anyhow::ensure!(registered.created, "the image was already registered");
    detail(&format!(
        "registered {}@{} (DSSE, signed by keyid {})",
        demo::IMAGE_NAME,
        demo::IMAGE_VERSION,
        key.keyid()
    ));

    step(
        6,
        "running the workload: a separate process fetching its SVID over the Workload API",
    );
    let endpoint = Endpoint::from_path(socket);
    let jwt_path = dir.join("workload.jwt");
    let mut workload = spawn_workload(&endpoint, &jwt_path, &model_path)?;
    workload.wait_for_line(workload::READY).await?;

    step(
        7,
        "a relying party checks the workload's JWT-SVID with hallmark::Policy",
    );
    let revocations = Revocations::watch(&endpoint).await?;
    let policy = Policy::spiffe_id(SpiffeId::parse(demo::SPIFFE_ID)?)
        .and(Policy::model(demo::MODEL_NAME, ">= 1.0".parse()?))
        .with_revocations(revocations.clone());
    let token = std::fs::read_to_string(&jwt_path).context("the workload wrote no JWT-SVID")?;
    detail(&format!("policy: {policy}"));
    let bundle = jwt_bundle(admin).await?;
    let caller = policy
        .verify_jwt(&token, workload::AUDIENCE, &bundle, SystemTime::now())
        .context("the relying party refused the workload's token")?;
    detail(&format!(
        "accepted {} (audience {:?})",
        caller.spiffe_id,
        workload::AUDIENCE
    ));

    step(
        8,
        "the kill switch: `hallmark-server kill --image demo-agent`",
    );
    let revocation = admin
        .create_revocation(CreateRevocationRequest {
            image: demo::IMAGE_NAME.into(),
            reason: "quickstart: demonstrating the kill switch".into(),
            ..CreateRevocationRequest::default()
        })
        .await
        .map_err(|s| anyhow::anyhow!("kill: {}", s.message()))?
        .into_inner();
    detail(&format!(
        "kill {} (image {}): {} by uid {}",
        revocation.id,
        revocation.target,
        revocation.reason,
        revocation
            .created_by_uid
            .map_or_else(|| "?".to_owned(), |u| u.to_string())
    ));
    workload.finish().await?;
    let mut updates = revocations.updates();
    tokio::time::timeout(
        STEP_TIMEOUT,
        updates.wait_for(|s| s.set.iter().any(|r| r.id == revocation.id)),
    )
    .await
    .context("the relying party did not learn of the kill within 30 s")??;
    match policy.verify_jwt(&token, workload::AUDIENCE, &bundle, SystemTime::now()) {
        Ok(_) => anyhow::bail!("the relying party still accepts the killed workload's token"),
        Err(refusal) => detail(&format!(
            "the relying party now refuses the same, still unexpired token: {refusal}"
        )),
    }

    step(
        9,
        "verifying the audit log (`hallmark-server audit verify`)",
    );
    audit_verify(admin, data_dir).await
}

/// The trust domain's bundle, as `hallmark-server bundle show --format jwks` prints it.
async fn jwt_bundle(
    admin: &mut AdminClient<tonic::transport::Channel>,
) -> anyhow::Result<hallmark::ca::bundle::Bundle> {
    let response = admin
        .show_bundle(hallmark_proto::admin::ShowBundleRequest {})
        .await
        .map_err(|s| anyhow::anyhow!("bundle show: {}", s.message()))?
        .into_inner();
    Ok(hallmark::ca::bundle::Bundle::from_jwks(
        TrustDomain::new(TRUST_DOMAIN)?,
        response.jwks.as_bytes(),
    )?)
}

/// The demo workload's process and its output.
struct Workload {
    child: tokio::process::Child,
    lines: mpsc::UnboundedReceiver<String>,
}

fn spawn_workload(endpoint: &Endpoint, jwt_out: &Path, model: &Path) -> anyhow::Result<Workload> {
    let exe = std::env::current_exe().context("cannot find this executable")?;
    let mut child = tokio::process::Command::new(exe)
        .arg("quickstart-workload")
        .arg("--jwt-out")
        .arg(jwt_out)
        .env("SPIFFE_ENDPOINT_SOCKET", endpoint.address())
        .env("HALLMARK_MODEL_DIR", model)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .context("cannot start the workload")?;
    let pid = child.id().unwrap_or_default();
    detail(&format!(
        "workload pid {pid}: {} quickstart-workload",
        std::env::args().next().unwrap_or_default()
    ));
    let stdout = child.stdout.take().context("no stdout pipe")?;
    let (tx, lines) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        let mut reader = BufReader::new(stdout).lines();
        while let Ok(Some(line)) = reader.next_line().await {
            println!("    workload | {line}");
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    Ok(Workload { child, lines })
}

impl Workload {
    /// Waits until the workload prints `wanted`.
    async fn wait_for_line(&mut self, wanted: &str) -> anyhow::Result<()> {
        let found = tokio::time::timeout(STEP_TIMEOUT, async {
            while let Some(line) = self.lines.recv().await {
                if line == wanted {
                    return true;
                }
            }
            false
        })
        .await;
        match found {
            Ok(true) => Ok(()),
            Ok(false) => {
                let status = self.child.wait().await?;
                anyhow::bail!("the workload exited ({status}) before it held its identity")
            }
            Err(_) => anyhow::bail!("the workload did not get its identity within 30 s"),
        }
    }

    /// Waits for the workload to exit, successfully.
    async fn finish(mut self) -> anyhow::Result<()> {
        let status = tokio::time::timeout(STEP_TIMEOUT, self.child.wait())
            .await
            .context("the workload did not lose its identity within 30 s")??;
        // Let the last lines through.
        while self.lines.recv().await.is_some() {}
        anyhow::ensure!(status.success(), "the workload failed: {status}");
        Ok(())
    }
}

/// Signs a checkpoint, reads the log and verifies it with the audit key
/// pinned from the data directory (as `audit verify --key` does).
async fn audit_verify(
    admin: &mut AdminClient<tonic::transport::Channel>,
    data_dir: &Path,
) -> anyhow::Result<()> {
    let key_path = hallmark_server::audit::key::key_path(data_dir);
    let key = hallmark_server::audit::key::load(&key_path)?
        .with_context(|| format!("no audit key at {}", key_path.display()))?
        .public_key()
        .clone();
    // A record may land between the checkpoint and the read (the agent
    // renewing, say): sign again then.
    for _ in 0..3 {
        admin
            .checkpoint_audit(CheckpointAuditRequest {})
            .await
            .map_err(|s| anyhow::anyhow!("audit checkpoint: {}", s.message()))?;
        let mut stream = admin
            .read_audit(ReadAuditRequest {
                start: None,
                follow: false,
                signed_only: true,
            })
            .await
            .map_err(|s| anyhow::anyhow!("audit export: {}", s.message()))?
            .into_inner();
        let mut entries = Vec::new();
        while let Some(entry) = stream
            .message()
            .await
            .map_err(|s| anyhow::anyhow!("audit export: {}", s.message()))?
        {
            entries.extend(entry_of(entry));
        }
        let report = verify(entries, &key, Options::default());
        match report.verdict {
            Verdict::Verified => {
                let checkpoint = report.last_checkpoint.as_ref();
                detail(&format!(
                    "verified: {} records (seq 1..{}), hash-chained and covered by a checkpoint signed with audit key {}",
                    report.records,
                    report.last_seq.unwrap_or_default(),
                    checkpoint.map_or("?", |c| c.key_id.as_str()),
                ));
                return Ok(());
            }
            Verdict::UnverifiableTail => continue,
            Verdict::Tampered | Verdict::Empty | _ => {
                anyhow::bail!(
                    "audit verify: {} ({:?})",
                    report.verdict.as_str(),
                    report.problems
                )
            }
        }
    }
    anyhow::bail!("audit verify: records keep arriving after every checkpoint")
}

fn entry_of(entry: AuditEntry) -> Option<Entry> {
    match entry.entry? {
        audit_entry::Entry::Record(bytes) => Some(Entry::Record(bytes)),
        audit_entry::Entry::Checkpoint(bytes) => Some(Entry::Checkpoint(bytes)),
    }
}
