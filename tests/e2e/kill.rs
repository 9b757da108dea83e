//! The kill switch end to end: a real issuer, real agents measuring this
//! test process with the /proc attestor, and the `spiffe` crate's client
//! (code we did not write) watching the workload's identity disappear.
//!
//! Two gold images match this process: `alpha` (binds a model) and `beta`
//! (binds none), so every stream starts with two SVIDs and a revocation of
//! one leaves the other: the first message after a kill must be exactly the
//! survivors, which shows both the withdrawal and that nothing else moved.
//! No assertion depends on timing: every wait is for a condition, with a
//! generous timeout that only turns a hang into a failure.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use hyper_util::rt::TokioIo;
use sha2::{Digest, Sha256};
use tokio_stream::{Stream, StreamExt};
use tonic::Code;
use tonic::transport::{Channel, Endpoint};

use hallmark_agent::config::AgentSettings;
use hallmark_agent::{Agent, AgentHandle};
use hallmark_attestors::tree::{TreeLimits, digest_tree};
use hallmark_proto::admin::{CreateRevocationRequest, LiftRevocationRequest, Revocation};
use hallmark_proto::revocations::revocations_client::RevocationsClient;
use hallmark_proto::revocations::{WatchRevocationsRequest, WatchRevocationsResponse};
use hallmark_proto::workload::spiffe_workload_api_client::SpiffeWorkloadApiClient;
use hallmark_proto::workload::{JwtsvidRequest, ValidateJwtsvidRequest, X509svidRequest};
use hallmark_server::config::ServerSettings;
use hallmark_server::image::{Algorithm, GoldImage, SigningKey, TrustedSigners};

use crate::common::*;

/// How long to wait for a condition before calling it a hang.
pub const WAIT: Duration = Duration::from_secs(30);
pub const ALPHA: &str = "spiffe://example.org/alpha";
pub const BETA: &str = "spiffe://example.org/beta";

/// This process's executable digest (what both images allow).
pub fn own_exe_sha256() -> String {
    let bytes = std::fs::read("/proc/self/exe").unwrap();
    hex::encode(Sha256::digest(bytes))
}

/// An issuer with `alpha` and `beta` registered for this process.
pub struct KillEnv {
    pub server: TestServer,
    pub model_digest: String,
    pub code: String,
}

/// A running agent serving the Workload API.
pub struct TestAgent {
    pub handle: AgentHandle,
    pub socket: PathBuf,
    pub data: PathBuf,
}

impl KillEnv {
    pub async fn start() -> Self {
        Self::start_with(|_| {}).await
    }

    pub async fn start_with(tweak: impl FnOnce(&mut ServerSettings)) -> Self {
        let key =
            SigningKey::from_pkcs8_der(&SigningKey::generate_pkcs8(Algorithm::Ed25519).unwrap())
                .unwrap();
        let mut signers = TrustedSigners::new();
        signers.insert(key.public_key().clone());
        let server = TestServer::start_with(|s| {
            s.trusted_signers = Arc::new(signers);
            tweak(s);
        })
        .await;
        let model_dir = server.path("model");
        std::fs::create_dir_all(&model_dir).unwrap();
        std::fs::write(model_dir.join("weights.bin"), b"tiny model weights").unwrap();
        let model_digest = digest_tree(&model_dir, &TreeLimits::default())
            .unwrap()
            .digest;
        let code = own_exe_sha256();
        let model = format!(
            "[model]\nname = \"tiny\"\nversion = \"1.0\"\ndigest = \"{model_digest}\"\npath = \"{}\"\n",
            model_dir.display()
        );
        for (name, extra) in [("alpha", model.as_str()), ("beta", "")] {
            let image = GoldImage::from_toml(&format!(
                "name = \"{name}\"\nversion = \"1.0.0\"\nspiffe_id = \"spiffe://example.org/{name}\"\nowner = \"alice@example.org\"\npurpose = \"kill switch tests\"\nrisk_tier = \"low\"\nnot_after = 2099-12-31\n[code]\nsha256 = [\"{code}\"]\n{extra}"
            ))
            .unwrap();
            server.register_image(&image, &key).await.unwrap();
        }
        Self {
            server,
            model_digest,
            code,
        }
    }

    /// An agent with its own data dir and socket, talking to the issuer.
    pub async fn agent(&self, name: &str) -> TestAgent {
        self.agent_at(name, &self.server.addr().to_string(), "")
            .await
    }

    /// An agent reaching the issuer at `address`, with `tables` appended.
    pub async fn agent_at(&self, name: &str, address: &str, tables: &str) -> TestAgent {
        let data = self.server.path(&format!("{name}-data"));
        let socket = self.server.path(&format!("{name}.sock"));
        let bootstrap = self.server.path("bootstrap.pem");
        std::fs::write(&bootstrap, self.server.bundle().to_pem()).unwrap();
        let toml = format!(
            "trust_domain = \"{TRUST_DOMAIN}\"\nserver_address = \"{address}\"\ndata_dir = \"{}\"\nsocket_path = \"{}\"\nsync_backoff_max = \"500ms\"\n[bootstrap]\nbundle_path = \"{}\"\n{tables}",
            data.display(),
            socket.display(),
            bootstrap.display(),
        );
        let mut settings = AgentSettings::from_toml_str(&toml).unwrap();
        if tables.is_empty() {
            settings.join_token = Some(self.server.token().await);
        }
        let handle = Agent::start(settings).await.unwrap();
        let agent = TestAgent {
            handle,
            socket,
            data,
        };
        agent
            .wait_status("attested and syncing", |s| s.attested && s.sync_connected)
            .await;
        agent
    }

    /// `CreateRevocation` of `field` = `value`, as `kill` sends it.
    pub async fn kill(&self, field: &str, value: &str, reason: &str) -> Revocation {
        self.try_kill(field, value, reason).await.unwrap()
    }

    pub async fn try_kill(
        &self,
        field: &str,
        value: &str,
        reason: &str,
    ) -> Result<Revocation, tonic::Status> {
        let mut request = CreateRevocationRequest {
            reason: reason.into(),
            ..CreateRevocationRequest::default()
        };
        let slot = match field {
            "spiffe_id" => &mut request.spiffe_id,
            "image" => &mut request.image,
            "code" => &mut request.code_sha256,
            "model" => &mut request.model_digest,
            "node" => &mut request.node,
            other => panic!("no target field {other}"),
        };
        *slot = value.into();
        self.server
            .admin()
            .await
            .create_revocation(request)
            .await
            .map(tonic::Response::into_inner)
    }

    pub async fn lift(&self, id: &str) -> Revocation {
        self.server
            .admin()
            .await
            .lift_revocation(LiftRevocationRequest {
                id: id.into(),
                reason: "all clear".into(),
            })
            .await
            .unwrap()
            .into_inner()
    }
}

impl TestAgent {
    pub async fn spiffe(&self) -> spiffe::WorkloadApiClient {
        spiffe::WorkloadApiClient::connect_to(format!("unix:{}", self.socket.display()))
            .await
            .unwrap()
    }

    pub async fn raw(&self) -> SpiffeWorkloadApiClient<Channel> {
        SpiffeWorkloadApiClient::new(unix_channel(&self.socket).await)
    }

    /// The Workload API extension: the agent's revocations.
    pub async fn watch(&self) -> tonic::Streaming<WatchRevocationsResponse> {
        RevocationsClient::new(unix_channel(&self.socket).await)
            .watch_revocations(with_header(WatchRevocationsRequest {}))
            .await
            .unwrap()
            .into_inner()
    }

    /// Waits until the agent enforces revocation `id` (as relying parties see it).
    pub async fn wait_revoked(&self, id: &str) {
        let mut watch = self.watch().await;
        let found = tokio::time::timeout(WAIT, async {
            while let Some(message) = watch.message().await.unwrap() {
                if message.revocations.iter().any(|r| r.id == id) {
                    return true;
                }
            }
            false
        })
        .await;
        assert_eq!(found, Ok(true), "agent never applied revocation {id}");
    }

    pub async fn wait_status(
        &self,
        what: &str,
        check: impl Fn(&hallmark_agent::AgentStatus) -> bool,
    ) {
        let mut status = self.handle.status();
        let reached = tokio::time::timeout(WAIT, status.wait_for(|s| check(s)))
            .await
            .is_ok_and(|r| r.is_ok());
        assert!(
            reached,
            "agent did not reach: {what}; last status {:?}",
            *self.handle.status().borrow()
        );
    }
}

pub async fn unix_channel(socket: &Path) -> Channel {
    let socket = socket.to_owned();
    Endpoint::from_static("http://workload.invalid")
        .connect_with_connector(tower::service_fn(move |_| {
            let socket = socket.clone();
            async move {
                Ok::<_, std::io::Error>(TokioIo::new(
                    tokio::net::UnixStream::connect(socket).await?,
                ))
            }
        }))
        .await
        .unwrap()
}

pub fn with_header<T>(message: T) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request
        .metadata_mut()
        .insert("workload.spiffe.io", "true".parse().unwrap());
    request
}

/// The SPIFFE IDs of the next message of an X.509 context stream, sorted.
pub async fn next_ids(
    stream: &mut (impl Stream<Item = Result<spiffe::X509Context, spiffe::WorkloadApiError>> + Unpin),
) -> Result<Vec<String>, spiffe::WorkloadApiError> {
    let message = tokio::time::timeout(WAIT, stream.next())
        .await
        .expect("no stream message in time")
        .expect("the stream ended without a status");
    message.map(|context| {
        let mut ids: Vec<String> = context
            .svids()
            .iter()
            .map(|s| s.spiffe_id().to_string())
            .collect();
        ids.sort();
        ids
    })
}

/// A fresh fetch's SPIFFE IDs, sorted.
pub async fn fetched_ids(client: &spiffe::WorkloadApiClient) -> Vec<String> {
    let mut ids: Vec<String> = client
        .fetch_all_x509_svids()
        .await
        .unwrap()
        .iter()
        .map(|s| s.spiffe_id().to_string())
        .collect();
    ids.sort();
    ids
}

/// Streams this process's SVIDs; the first message carries both images.
async fn open_stream(
    agent: &TestAgent,
) -> impl Stream<Item = Result<spiffe::X509Context, spiffe::WorkloadApiError>> + Unpin + use<> {
    let client = agent.spiffe().await;
    let mut stream = client.stream_x509_contexts().await.unwrap();
    assert_eq!(next_ids(&mut stream).await.unwrap(), [ALPHA, BETA]);
    stream
}

/// A kill of `field` = `value` covering `alpha` only: the open stream's next
/// message carries exactly `beta`, new fetches get only `beta`, a JWT for
/// `alpha` is refused; the lift gives `alpha` back.
async fn alpha_alone_is_withdrawn(field: &str, value: impl FnOnce(&KillEnv) -> String) {
    let env = KillEnv::start().await;
    let agent = env.agent("a").await;
    let mut stream = open_stream(&agent).await;

    let kill = env.kill(field, &value(&env), "compromised build").await;
    assert_eq!(next_ids(&mut stream).await.unwrap(), [BETA]);
    let client = agent.spiffe().await;
    assert_eq!(fetched_ids(&client).await, [BETA]);
    let alpha = spiffe::SpiffeId::new(ALPHA).unwrap();
    let err = client
        .fetch_jwt_svid(["payments"], Some(&alpha))
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            spiffe::WorkloadApiError::PermissionDenied(_)
                | spiffe::WorkloadApiError::NoIdentityIssued
        ),
        "{err:?}"
    );
    let beta = spiffe::SpiffeId::new(BETA).unwrap();
    client
        .fetch_jwt_svid(["payments"], Some(&beta))
        .await
        .unwrap();

    // The lift gives alpha back to the open stream (it had one withheld)
    // and to new fetches.
    env.lift(&kill.id).await;
    assert_eq!(next_ids(&mut stream).await.unwrap(), [ALPHA, BETA]);
    assert_eq!(fetched_ids(&client).await, [ALPHA, BETA]);
    agent.handle.shutdown().await;
}

#[tokio::test]
async fn killing_an_image_withdraws_its_svid_and_spares_the_other_image() {
    alpha_alone_is_withdrawn("image", |_| "alpha".into()).await;
}

#[tokio::test]
async fn killing_an_image_version_withdraws_its_svid_and_spares_the_other_image() {
    alpha_alone_is_withdrawn("image", |_| "alpha@1.0.0".into()).await;
}

#[tokio::test]
async fn killing_a_spiffe_id_withdraws_its_svid_and_spares_the_other_id() {
    alpha_alone_is_withdrawn("spiffe_id", |_| ALPHA.into()).await;
}

#[tokio::test]
async fn killing_a_model_withdraws_the_svid_that_binds_it_and_spares_the_other() {
    alpha_alone_is_withdrawn("model", |env| env.model_digest.clone()).await;
}

#[tokio::test]
async fn killing_the_code_leaves_the_workload_no_identity_until_lifted() {
    let env = KillEnv::start().await;
    let agent = env.agent("a").await;
    let mut stream = open_stream(&agent).await;

    let kill = env.kill("code", &env.code, "backdoored binary").await;
    // Both SVIDs bind this executable: the stream is left with none, which
    // the standard answers with PermissionDenied (SPIRE's wording, which the
    // spiffe crate reads as "no identity issued").
    let err = next_ids(&mut stream).await.unwrap_err();
    assert!(
        matches!(err, spiffe::WorkloadApiError::NoIdentityIssued),
        "{err:?}"
    );
    // A raw client sees the exact status and which kill refused it.
    let mut raw = agent.raw().await;
    let mut fresh = raw
        .fetch_x509svid(with_header(X509svidRequest {}))
        .await
        .unwrap()
        .into_inner();
    let err = fresh.message().await.unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);
    assert!(
        err.message().contains(&format!(
            "kill {} (code {}): backdoored binary",
            kill.id, env.code
        )),
        "{}",
        err.message()
    );
    let err = raw
        .fetch_jwtsvid(with_header(JwtsvidRequest {
            audience: vec!["payments".into()],
            spiffe_id: String::new(),
        }))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);
    assert!(err.message().contains(&kill.id), "{}", err.message());

    env.lift(&kill.id).await;
    let client = agent.spiffe().await;
    assert_eq!(fetched_ids(&client).await, [ALPHA, BETA]);
    agent.handle.shutdown().await;
}

#[tokio::test]
async fn validate_jwt_svid_rejects_a_revoked_token_and_accepts_others() {
    let env = KillEnv::start().await;
    let agent = env.agent("a").await;
    let client = agent.spiffe().await;
    let alpha = spiffe::SpiffeId::new(ALPHA).unwrap();
    let beta = spiffe::SpiffeId::new(BETA).unwrap();
    let alpha_jwt = client
        .fetch_jwt_svid(["payments"], Some(&alpha))
        .await
        .unwrap();
    let beta_jwt = client
        .fetch_jwt_svid(["payments"], Some(&beta))
        .await
        .unwrap();
    client
        .validate_jwt_token("payments", alpha_jwt.token())
        .await
        .unwrap();

    // The model is in alpha's `hallmark` claim, not in beta's.
    let kill = env
        .kill("model", &env.model_digest, "poisoned weights")
        .await;
    agent.wait_revoked(&kill.id).await;
    let mut raw = agent.raw().await;
    let err = raw
        .validate_jwtsvid(with_header(ValidateJwtsvidRequest {
            audience: "payments".into(),
            svid: alpha_jwt.token().into(),
        }))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert_eq!(
        err.message(),
        format!(
            "JWT-SVID refused: revoked by kill {} (model {}): poisoned weights",
            kill.id, env.model_digest
        )
    );
    assert!(
        client
            .validate_jwt_token("payments", alpha_jwt.token())
            .await
            .is_err()
    );
    let validated = client
        .validate_jwt_token("payments", beta_jwt.token())
        .await
        .unwrap();
    assert_eq!(validated.spiffe_id().to_string(), BETA);

    env.lift(&kill.id).await;
    let mut watch = agent.watch().await;
    tokio::time::timeout(WAIT, async {
        while let Some(m) = watch.message().await.unwrap() {
            if m.revocations.is_empty() {
                return;
            }
        }
    })
    .await
    .unwrap();
    client
        .validate_jwt_token("payments", alpha_jwt.token())
        .await
        .unwrap();
    agent.handle.shutdown().await;
}

#[tokio::test]
async fn relying_parties_watch_the_revocations_in_force() {
    let env = KillEnv::start().await;
    let agent = env.agent("a").await;

    // The security header rule of the Workload API applies.
    let err = RevocationsClient::new(unix_channel(&agent.socket).await)
        .watch_revocations(WatchRevocationsRequest {})
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(
        err.message().contains("workload.spiffe.io"),
        "{}",
        err.message()
    );

    let mut watch = agent.watch().await;
    let first = watch.message().await.unwrap().unwrap();
    assert!(first.revocations.is_empty());
    assert!(first.synced);

    let kill = env.kill("image", "alpha", "prompt injection").await;
    let message = tokio::time::timeout(WAIT, watch.message())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert!(message.synced);
    assert_eq!(message.revocations.len(), 1);
    let seen = &message.revocations[0];
    assert_eq!(seen.id, kill.id);
    assert_eq!(
        seen.kind,
        hallmark_proto::revocations::RevocationKind::Image as i32
    );
    assert_eq!(seen.target, "alpha");
    assert_eq!(seen.reason, "prompt injection");
    assert_eq!(seen.created_at, kill.created_at);

    env.lift(&kill.id).await;
    let message = tokio::time::timeout(WAIT, watch.message())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert!(message.revocations.is_empty(), "{message:?}");
    agent.handle.shutdown().await;
}
