//! Every program in `examples/` run against a real issuer and agent.
//!
//! The example files are compiled into this test binary (`#[path]`), so the
//! code their `main` runs is the code tested here, without building the
//! examples separately. The workload is therefore this test process: its
//! executable digest is what the gold images allow. Images use a short
//! `x509_ttl`, so the agent rotates SVIDs every couple of seconds and the
//! examples can be seen to follow rotations; nothing asserts a duration,
//! every wait is for a condition under a generous timeout.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tempfile::TempDir;

use hallmark::ca::id::{SpiffeId, TrustDomain};
use hallmark::revocation::Revocations;
use hallmark::version::VersionReq;
use hallmark::workload::Endpoint;
use hallmark_agent::config::AgentSettings;
use hallmark_agent::{Agent, AgentHandle};
use hallmark_attestors::tree::{TreeLimits, digest_tree};
use hallmark_proto::admin::admin_client::AdminClient;
use hallmark_proto::admin::{
    CreateRevocationRequest, GenerateJoinTokenRequest, RegisterImageRequest,
};
use hallmark_server::config::ServerSettings;
use hallmark_server::image::{
    Algorithm, Envelope, GoldImage, SigningKey, TrustedSigners, canonical,
};
use hallmark_server::server::ServerHandle;

use crate::workload_api::own_exe_sha256;

#[path = "../../examples/jwt_relying_party.rs"]
#[allow(dead_code, reason = "the example's main is not called here")]
mod jwt_relying_party;
#[path = "../../examples/mtls.rs"]
#[allow(dead_code, reason = "the example's main is not called here")]
mod mtls;
#[path = "../../examples/watch.rs"]
#[allow(dead_code, reason = "the example's main is not called here")]
mod watch;

/// How long to wait for a condition before calling it a hang.
pub const WAIT: Duration = Duration::from_secs(60);
/// SVID lifetime of the examples' images: the leaf is backdated 30 s, so
/// half-life (rotation) comes about 2 s after each mint.
const X509_TTL: u64 = 34;
pub const MODEL: &str = "demo-model";

/// An issuer (system clock: rotations happen in real time) and an agent,
/// with gold images for this test process.
pub struct ExampleEnv {
    _dir: TempDir,
    server: Option<ServerHandle>,
    pub admin_socket: PathBuf,
    pub agent: Option<AgentHandle>,
    pub endpoint: Endpoint,
}

/// One gold image for this process: `name` at `spiffe://example.org/<name>`
/// binding the demo model at `model_version`.
pub struct Image<'a> {
    pub name: &'a str,
    pub model_version: &'a str,
}

impl ExampleEnv {
    pub async fn start(images: &[Image<'_>]) -> ExampleEnv {
        let dir = tempfile::tempdir().unwrap();
        let key =
            SigningKey::from_pkcs8_der(&SigningKey::generate_pkcs8(Algorithm::Ed25519).unwrap())
                .unwrap();
        let mut signers = TrustedSigners::new();
        signers.insert(key.public_key().clone());
        let mut settings = ServerSettings::for_dirs(
            TrustDomain::new("example.org").unwrap(),
            dir.path().join("server-data"),
            dir.path().join("admin.sock"),
        );
        settings.trusted_signers = Arc::new(signers);
        let admin_socket = settings.admin_socket.clone();
        let server = hallmark_server::server::start(settings).await.unwrap();

        let model_dir = dir.path().join("model");
        std::fs::create_dir_all(&model_dir).unwrap();
        std::fs::write(model_dir.join("weights.bin"), b"demo weights").unwrap();
        let digest = digest_tree(&model_dir, &TreeLimits::default())
            .unwrap()
            .digest;
        let code = own_exe_sha256();
        let mut admin = admin(&admin_socket).await;
        for image in images {
            let manifest = format!(
                "name = \"{name}\"\nversion = \"1.0.0\"\nspiffe_id = \"spiffe://example.org/{name}\"\nowner = \"alice@example.org\"\npurpose = \"examples\"\nrisk_tier = \"low\"\nnot_after = 2099-12-31\nx509_ttl = {X509_TTL}\n[code]\nsha256 = [\"{code}\"]\n[model]\nname = \"{MODEL}\"\nversion = \"{version}\"\ndigest = \"{digest}\"\npath = \"{path}\"\n",
                name = image.name,
                version = image.model_version,
                path = model_dir.display(),
            );
            let image = GoldImage::from_toml(&manifest).unwrap();
            let envelope = Envelope::sign(&canonical::encode(&image), &key)
                .unwrap()
                .to_json();
            admin
                .register_image(RegisterImageRequest { envelope })
                .await
                .unwrap();
        }

        let token = admin
            .generate_join_token(GenerateJoinTokenRequest {
                ttl_seconds: 600,
                spiffe_id: String::new(),
            })
            .await
            .unwrap()
            .into_inner()
            .token;
        let bootstrap = dir.path().join("bootstrap.pem");
        std::fs::write(&bootstrap, server.authority().bundle().to_pem()).unwrap();
        let socket = dir.path().join("workload.sock");
        let toml = format!(
            "trust_domain = \"example.org\"\nserver_address = \"{}\"\ndata_dir = \"{}\"\nsocket_path = \"{}\"\n[bootstrap]\nbundle_path = \"{}\"\n",
            server.node_addr(),
            dir.path().join("agent-data").display(),
            socket.display(),
            bootstrap.display(),
        );
        let mut agent_settings = AgentSettings::from_toml_str(&toml).unwrap();
        agent_settings.join_token = Some(token);
        let agent = Agent::start(agent_settings).await.unwrap();
        let mut status = agent.status();
        tokio::time::timeout(WAIT, status.wait_for(|s| s.attested && s.sync_connected))
            .await
            .unwrap()
            .unwrap();
        ExampleEnv {
            _dir: dir,
            server: Some(server),
            admin_socket,
            agent: Some(agent),
            endpoint: Endpoint::from_path(socket),
        }
    }

    /// `hallmark-server kill --image NAME`; returns the revocation id once
    /// the agent enforces it.
    pub async fn kill_image(&self, name: &str) -> String {
        let watch = Revocations::watch(&self.endpoint).await.unwrap();
        let revocation = admin(&self.admin_socket)
            .await
            .create_revocation(CreateRevocationRequest {
                image: name.into(),
                reason: "example test kill".into(),
                ..CreateRevocationRequest::default()
            })
            .await
            .unwrap()
            .into_inner();
        let mut updates = watch.updates();
        tokio::time::timeout(
            WAIT,
            updates.wait_for(|s| s.set.iter().any(|r| r.id == revocation.id)),
        )
        .await
        .unwrap()
        .unwrap();
        revocation.id
    }

    pub async fn stop(mut self) {
        if let Some(agent) = self.agent.take() {
            agent.shutdown().await;
        }
        if let Some(server) = self.server.take() {
            server.shutdown().await;
        }
    }
}

pub async fn admin(socket: &std::path::Path) -> AdminClient<tonic::transport::Channel> {
    AdminClient::new(
        hallmark_server::admin::socket::connect(socket)
            .await
            .unwrap(),
    )
}

pub fn id(name: &str) -> SpiffeId {
    SpiffeId::parse(&format!("spiffe://example.org/{name}")).unwrap()
}

#[tokio::test]
async fn watch_follows_rotations_and_sees_the_identity_withdrawn() {
    let env = ExampleEnv::start(&[Image {
        name: "watcher",
        model_version: "2.1.0",
    }])
    .await;
    let options = watch::WatchOptions {
        endpoint: env.endpoint.address(),
        max_updates: usize::MAX,
        deadline: WAIT,
    };
    // Kill the image once the stream has shown a rotation (a second SVID).
    let (rotated_tx, mut rotated_rx) = tokio::sync::mpsc::unbounded_channel();
    let watching = tokio::spawn(async move {
        let mut seen = 0;
        watch::watch(&options, move |_| {
            seen += 1;
            if seen == 2 {
                let _ = rotated_tx.send(());
            }
        })
        .await
    });
    tokio::time::timeout(WAIT, rotated_rx.recv())
        .await
        .expect("the stream showed no rotation")
        .unwrap();
    env.kill_image("watcher").await;
    let (updates, end) = tokio::time::timeout(WAIT, watching)
        .await
        .unwrap()
        .unwrap()
        .unwrap();

    assert!(matches!(end, watch::End::Withdrawn(_)), "{end:?}");
    assert!(updates.len() >= 2, "{updates:?}");
    assert_ne!(
        updates[0].serial, updates[1].serial,
        "a rotation brings a new SVID"
    );
    for update in &updates {
        assert_eq!(update.spiffe_id, "spiffe://example.org/watcher");
        assert_eq!(update.image.as_deref(), Some("watcher@1.0.0"));
        assert_eq!(
            update.code_sha256.as_deref(),
            Some(own_exe_sha256().as_str())
        );
        assert_eq!(update.model, Some((MODEL.to_owned(), "2.1.0".to_owned())));
    }
    env.stop().await;
}

#[tokio::test]
async fn mtls_pair_authorizes_both_ways_and_keeps_going_across_rotations() {
    let env = ExampleEnv::start(&[
        Image {
            name: "mtls-client",
            model_version: "2.1.0",
        },
        Image {
            name: "mtls-server",
            model_version: "2.1.0",
        },
    ])
    .await;
    let options = mtls::PairOptions {
        endpoint: env.endpoint.clone(),
        server_id: id("mtls-server"),
        client_id: id("mtls-client"),
        model: MODEL.into(),
        model_version: ">= 2.0".parse().unwrap(),
        interval: Duration::from_millis(100),
        until: mtls::Until {
            exchanges: 10,
            rotations: 1,
            deadline: WAIT,
        },
        verbose: false,
    };
    let report = mtls::run_pair(&options).await.unwrap();
    assert!(!report.deadline_hit, "{report:?}");
    assert_eq!(report.failures, 0, "{report:?}");
    assert!(report.exchanges >= 10, "{report:?}");
    // Both sides rotated, and the loop carried on with the new certificates.
    assert!(report.client_serials.len() >= 2, "{report:?}");
    assert!(report.server_serials.len() >= 2, "{report:?}");
    assert!(report.connections >= 2, "{report:?}");
    let server = report.server.as_ref().unwrap();
    assert_eq!(server.spiffe_id, id("mtls-server"));
    assert!(report.refused.is_empty(), "{report:?}");
    assert!(!report.accepted.is_empty());
    for client in &report.accepted {
        assert_eq!(client.spiffe_id, id("mtls-client"));
        let model = client.binding.as_ref().unwrap().model.as_ref().unwrap();
        assert_eq!(
            (model.name.as_str(), model.version.as_str()),
            (MODEL, "2.1.0")
        );
    }
    env.stop().await;
}

#[tokio::test]
async fn mtls_server_refuses_a_client_bound_to_an_older_model() {
    let env = ExampleEnv::start(&[
        Image {
            name: "mtls-client",
            model_version: "2.1.0",
        },
        Image {
            name: "mtls-server",
            model_version: "2.1.0",
        },
    ])
    .await;
    let strict = hallmark::Policy::spiffe_id(id("mtls-client"))
        .and(hallmark::Policy::model(MODEL, ">= 3".parse().unwrap()));
    let server = mtls::Server::start(&env.endpoint, id("mtls-server"), strict, false)
        .await
        .unwrap();
    let servers = hallmark::Policy::spiffe_id(id("mtls-server"));
    // The loop keeps trying; it ends at its deadline without one answer.
    let report = mtls::run_client(
        &env.endpoint,
        id("mtls-client"),
        servers,
        server.addr,
        Duration::from_millis(100),
        mtls::Until {
            exchanges: 1,
            rotations: 0,
            deadline: Duration::from_secs(2),
        },
        false,
    )
    .await
    .unwrap();
    let (accepted, refused) = server.stop();
    assert_eq!(report.exchanges, 0, "{report:?}");
    assert!(accepted.is_empty());
    assert!(!refused.is_empty());
    assert_eq!(
        refused[0],
        "spiffe://example.org/mtls-client is not authorized: model demo-model 2.1.0 does not satisfy model demo-model >= 3"
    );
    env.stop().await;
}

#[tokio::test]
async fn jwt_service_accepts_approved_models_for_its_audience_and_follows_kills() {
    let env = ExampleEnv::start(&[
        Image {
            name: "jwt-approved",
            model_version: "2.1.0",
        },
        Image {
            name: "jwt-legacy",
            model_version: "1.0.0",
        },
    ])
    .await;
    let policy = hallmark::Policy::model(MODEL, VersionReq::at_least("2.0".parse().unwrap()));
    let service = jwt_relying_party::Service::start(
        &env.endpoint,
        TrustDomain::new("example.org").unwrap(),
        "payments".into(),
        policy,
    )
    .await
    .unwrap();
    let outcomes = jwt_relying_party::call_with_own_tokens(
        &env.endpoint,
        service.addr,
        "payments",
        "elsewhere",
    )
    .await
    .unwrap();
    let summary: Vec<(&str, &str, u16, &str)> = outcomes
        .iter()
        .map(|o| {
            (
                o.spiffe_id.as_str(),
                o.audience.as_str(),
                o.status.as_u16(),
                o.body.as_str(),
            )
        })
        .collect();
    assert_eq!(
        summary,
        [
            (
                "spiffe://example.org/jwt-approved",
                "payments",
                200,
                "hello spiffe://example.org/jwt-approved running demo-model 2.1.0"
            ),
            (
                "spiffe://example.org/jwt-legacy",
                "payments",
                403,
                "spiffe://example.org/jwt-legacy is not allowed: model demo-model 1.0.0 does not satisfy model demo-model >= 2.0"
            ),
            (
                "spiffe://example.org/jwt-approved",
                "elsewhere",
                401,
                "invalid JWT-SVID: audience mismatch"
            ),
        ]
    );

    // A kill: the token the service accepted is still signed and unexpired,
    // and the service refuses it from the moment it learns of the kill.
    let approved = spiffe::WorkloadApiClient::connect_to(env.endpoint.address())
        .await
        .unwrap()
        .fetch_jwt_svid(["payments"], None)
        .await
        .unwrap();
    let id = env.kill_image("jwt-approved").await;
    let answer = tokio::time::timeout(WAIT, async {
        loop {
            let (status, body) = jwt_relying_party::call(service.addr, approved.token())
                .await
                .unwrap();
            if status.as_u16() != 200 {
                return (status.as_u16(), body);
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .unwrap();
    assert_eq!(answer.0, 403);
    assert!(
        answer.1.contains(&format!(
            "revoked by kill {id} (image jwt-approved): example test kill"
        )),
        "{}",
        answer.1
    );
    service.stop();
    env.stop().await;
}
