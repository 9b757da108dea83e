//! A real issuer as a child process: `hallmark-server run --config` in a
//! temp dir, on 127.0.0.1 with a free port, trusting one signer key made
//! here; driven over its admin socket like the operator CLI drives it.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use tempfile::TempDir;
use tokio::task::JoinSet;
use tonic::transport::Channel;

use hallmark_ca::bundle::Bundle;
use hallmark_ca::id::TrustDomain;
use hallmark_proto::admin::admin_client::AdminClient;
use hallmark_proto::admin::{
    CreateRevocationRequest, GenerateJoinTokenRequest, HealthcheckRequest, LiftRevocationRequest,
    RegisterImageRequest, ShowBundleRequest,
};
use hallmark_server::image::{Algorithm, Envelope, GoldImage, SigningKey, canonical};

use crate::process::{Daemon, free_port};
use crate::stats::Rss;

pub(crate) const TRUST_DOMAIN: &str = "example.org";
/// How long the issuer may take to come up.
const START_TIMEOUT: Duration = Duration::from_secs(30);
/// Lifetime of the join tokens made here (enough for 10,000 attestations).
const TOKEN_TTL_SECS: u64 = 3600;
/// `[agents] mint_rate` and `mint_burst`: a few simulated agents drive the
/// issuer to its signing limit (thousands of credentials a second each,
/// far beyond a real node's default limit of 200), and the figures measure
/// the issuer's capacity, so the per-node limit is set out of reach.
const MINT_LIMIT: u32 = 1_000_000_000;

/// How to start the issuer.
#[derive(Debug, Clone)]
pub(crate) struct IssuerOptions {
    pub(crate) binary: PathBuf,
    pub(crate) log_level: String,
}

/// A running issuer; stopped (and its temp dir removed) when dropped.
#[derive(Debug)]
pub(crate) struct Issuer {
    // Declared first so it is dropped (killed) before the directory goes.
    daemon: Daemon,
    dir: TempDir,
    pub(crate) address: String,
    pub(crate) trust_domain: TrustDomain,
    pub(crate) bundle: Bundle,
    admin: AdminClient<Channel>,
    signer: SigningKey,
}

impl Issuer {
    pub(crate) async fn start(options: &IssuerOptions) -> anyhow::Result<Issuer> {
        let dir = tempfile::Builder::new()
            .prefix("hallmark-loadgen-")
            .tempdir()
            .context("temp dir")?;
        let path = |name: &str| dir.path().join(name);
        let signer_der = SigningKey::generate_pkcs8(Algorithm::Ed25519)?;
        let signer = SigningKey::from_pkcs8_der(&signer_der)?;
        std::fs::write(path("signer.pub"), signer.public_key().to_pem())?;
        let port = free_port()?;
        let address = format!("127.0.0.1:{port}");
        let config = format!(
            "trust_domain = \"{TRUST_DOMAIN}\"\n\
             data_dir = \"{}\"\n\
             bind_address = \"{address}\"\n\
             admin_socket = \"{}\"\n\
             log_level = \"{}\"\n\
             [images]\n\
             trusted_signers = [\"{}\"]\n\
             [agents]\n\
             mint_rate = {MINT_LIMIT}\n\
             mint_burst = {MINT_LIMIT}\n",
            path("data").display(),
            path("admin.sock").display(),
            options.log_level,
            path("signer.pub").display(),
        );
        std::fs::write(path("server.toml"), config)?;
        let config_path = path("server.toml");
        let mut daemon = Daemon::spawn(
            "hallmark-server",
            &options.binary,
            &["run", "--config", &config_path.display().to_string()],
            path("server.log"),
        )?;
        let admin = wait_for_admin(&mut daemon, &path("admin.sock")).await?;
        let mut issuer = Issuer {
            daemon,
            dir,
            address,
            trust_domain: TRUST_DOMAIN.parse().context("trust domain")?,
            bundle: Bundle::new(TRUST_DOMAIN.parse().context("trust domain")?),
            admin,
            signer,
        };
        let pem = issuer
            .admin
            .show_bundle(ShowBundleRequest {})
            .await
            .context("ShowBundle")?
            .into_inner()
            .pem;
        issuer.bundle = Bundle::from_pem(issuer.trust_domain.clone(), &pem)?;
        std::fs::write(issuer.path("bundle.pem"), pem)?;
        Ok(issuer)
    }

    /// A file in the issuer's temp dir (the agent lives there too).
    pub(crate) fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    pub(crate) fn pid(&self) -> u32 {
        self.daemon.pid()
    }

    pub(crate) fn rss(&self) -> Option<Rss> {
        self.daemon.rss()
    }

    pub(crate) fn check_running(&mut self) -> anyhow::Result<()> {
        self.daemon.check_running()
    }

    pub(crate) fn admin(&self) -> AdminClient<Channel> {
        self.admin.clone()
    }

    /// Registers `name@1.0.0` (low risk, one signature) issuing
    /// `spiffe://example.org/loadgen/<name>` to executables whose digest is
    /// one of `code`; returns the SPIFFE ID.
    pub(crate) async fn register_image(
        &self,
        name: &str,
        code: &[String],
    ) -> anyhow::Result<String> {
        let spiffe_id = format!("spiffe://{TRUST_DOMAIN}/loadgen/{name}");
        let digests: Vec<String> = code.iter().map(|c| format!("\"{c}\"")).collect();
        let manifest = format!(
            "name = \"{name}\"\nversion = \"1.0.0\"\nspiffe_id = \"{spiffe_id}\"\n\
             owner = \"loadgen@example.org\"\npurpose = \"load generation\"\n\
             risk_tier = \"low\"\nnot_after = 2099-12-31\n\
             [code]\nsha256 = [{}]\n",
            digests.join(", ")
        );
        let image = GoldImage::from_toml(&manifest).context("manifest")?;
        let payload = canonical::encode(&image);
        let envelope = Envelope::sign(&payload, &self.signer)?.to_json();
        self.admin()
            .register_image(RegisterImageRequest { envelope })
            .await
            .with_context(|| format!("RegisterImage {name}"))?;
        Ok(spiffe_id)
    }

    pub(crate) async fn token(&self) -> anyhow::Result<String> {
        Ok(self
            .admin()
            .generate_join_token(GenerateJoinTokenRequest {
                ttl_seconds: TOKEN_TTL_SECS,
                spiffe_id: String::new(),
            })
            .await
            .context("GenerateJoinToken")?
            .into_inner()
            .token)
    }

    /// `n` join tokens, `concurrency` requests at a time on the admin socket.
    pub(crate) async fn tokens(&self, n: usize, concurrency: usize) -> anyhow::Result<Vec<String>> {
        let mut tokens = Vec::with_capacity(n);
        let mut tasks = JoinSet::new();
        let next = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        for _ in 0..concurrency.clamp(1, n.max(1)) {
            let mut admin = self.admin();
            let next = next.clone();
            tasks.spawn(async move {
                let mut mine = Vec::new();
                while next.fetch_add(1, std::sync::atomic::Ordering::Relaxed) < n {
                    let token = admin
                        .generate_join_token(GenerateJoinTokenRequest {
                            ttl_seconds: TOKEN_TTL_SECS,
                            spiffe_id: String::new(),
                        })
                        .await
                        .context("GenerateJoinToken")?
                        .into_inner()
                        .token;
                    mine.push(token);
                }
                anyhow::Ok(mine)
            });
        }
        while let Some(joined) = tasks.join_next().await {
            tokens.extend(joined.context("token task")??);
        }
        Ok(tokens)
    }

    /// `kill --spiffe-id`; returns the revocation id.
    pub(crate) async fn kill_spiffe_id(&self, spiffe_id: &str) -> anyhow::Result<String> {
        Ok(self
            .admin()
            .create_revocation(CreateRevocationRequest {
                spiffe_id: spiffe_id.to_owned(),
                reason: "loadgen kill propagation".into(),
                ..Default::default()
            })
            .await
            .context("CreateRevocation")?
            .into_inner()
            .id)
    }

    pub(crate) async fn lift(&self, id: &str) -> anyhow::Result<()> {
        self.admin()
            .lift_revocation(LiftRevocationRequest {
                id: id.to_owned(),
                reason: "loadgen lift".into(),
            })
            .await
            .context("LiftRevocation")?;
        Ok(())
    }

    /// SIGTERM and a clean shutdown (the audit log signs its checkpoint).
    pub(crate) fn stop(self) -> anyhow::Result<()> {
        let Issuer { daemon, dir, .. } = self;
        let result = daemon.stop(Duration::from_secs(15));
        drop(dir);
        result
    }
}

async fn wait_for_admin(
    daemon: &mut Daemon,
    socket: &Path,
) -> anyhow::Result<AdminClient<Channel>> {
    let deadline = Instant::now() + START_TIMEOUT;
    loop {
        daemon.check_running()?;
        if socket.exists()
            && let Ok(channel) = hallmark_server::admin::socket::connect(socket).await
        {
            let mut admin = AdminClient::new(channel);
            if admin.healthcheck(HealthcheckRequest {}).await.is_ok() {
                return Ok(admin);
            }
        }
        if Instant::now() >= deadline {
            bail!(
                "the issuer did not answer on {} within {START_TIMEOUT:?}; its log:\n{}",
                socket.display(),
                daemon.log_tail()
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
