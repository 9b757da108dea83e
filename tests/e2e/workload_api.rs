//! The SPIFFE Workload API served by a real agent, fetched with the `spiffe`
//! crate's client (code we did not write) and with raw gRPC for the exact
//! status of each refusal. The caller is this test process: its executable
//! digest is what the gold image allows.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use hyper_util::rt::TokioIo;
use sha2::{Digest, Sha256};
use tonic::Code;
use tonic::transport::{Channel, Endpoint};

use hallmark_agent::Agent;
use hallmark_agent::config::AgentSettings;
use hallmark_agent::workload_api::evidence::EvidenceSource;
use hallmark_attestors::tree::{TreeLimits, digest_tree};
use hallmark_proto::admin::{ListImagesRequest, RetireImageRequest};
use hallmark_proto::workload::spiffe_workload_api_client::SpiffeWorkloadApiClient;
use hallmark_proto::workload::{JwtsvidRequest, ValidateJwtsvidRequest, X509svidRequest};
use hallmark_server::image::{Algorithm, GoldImage, SigningKey, TrustedSigners};

use crate::common::*;

/// The executable's digest, cached by (device, inode, size, mtime): the
/// debug test binary is large.
fn exe_digest(pid: i32) -> Option<String> {
    use std::os::unix::fs::MetadataExt;
    type Key = (u64, u64, u64, i64);
    static CACHE: std::sync::Mutex<Option<HashMap<Key, String>>> = std::sync::Mutex::new(None);
    let path = format!("/proc/{pid}/exe");
    let meta = std::fs::metadata(&path).ok()?;
    let key = (meta.dev(), meta.ino(), meta.size(), meta.mtime());
    if let Some(hit) = CACHE
        .lock()
        .unwrap()
        .get_or_insert_with(HashMap::new)
        .get(&key)
    {
        return Some(hit.clone());
    }
    let digest = hex::encode(Sha256::digest(std::fs::read(&path).ok()?));
    CACHE
        .lock()
        .unwrap()
        .get_or_insert_with(HashMap::new)
        .insert(key, digest.clone());
    Some(digest)
}

pub fn own_exe_sha256() -> String {
    exe_digest(i32::try_from(std::process::id()).unwrap()).unwrap()
}

fn image_for_this_process(
    model_dir: &Path,
    model_digest: &str,
    top: &str,
    code_extra: &str,
    extra: &str,
) -> GoldImage {
    let text = format!(
        r#"
        name = "test-agent"
        version = "1.0.0"
        spiffe_id = "spiffe://example.org/test-agent"
        owner = "alice@example.org"
        purpose = "end-to-end tests"
        risk_tier = "low"
        not_after = 2099-12-31
        {top}
        [code]
        sha256 = ["{}"]
        {code_extra}
        [model]
        name = "tiny"
        version = "1.0"
        digest = "{model_digest}"
        path = "{}"
        {extra}
        "#,
        own_exe_sha256(),
        model_dir.display()
    );
    GoldImage::from_toml(&text).unwrap()
}

pub struct Deployment {
    pub _server: TestServer,
    pub agent: hallmark_agent::AgentHandle,
    pub socket: PathBuf,
    pub model_dir: PathBuf,
}

/// How [`deploy_with`] varies the standard deployment.
#[derive(Default)]
pub struct Variant<'a> {
    /// Top-level lines of the image manifest (e.g. `x509_ttl = 20`).
    pub top: &'a str,
    /// The agent runs on the issuer's manual clock.
    pub manual_clock: bool,
    /// Lines added to the image's `[code]` table.
    pub code_extra: &'a str,
    /// Tables appended to the image manifest.
    pub extra: &'a str,
    /// Lines appended to `agent.toml` (after `[bootstrap]`: start a table).
    pub agent_toml: &'a str,
    /// Files created under the server dir before the image is built, as
    /// (relative path, content); `app/...` is the app tree.
    pub files: &'a [(&'a str, &'a [u8])],
    /// The evidence source (default: the real /proc attestor).
    pub evidence: Option<MakeEvidence<'a>>,
    /// Builds the model under the server dir (the argument) and returns its
    /// directory, registered as `model.path` (default: `model/` with two
    /// small files).
    pub model: Option<&'a dyn Fn(&Path) -> PathBuf>,
}

/// Builds the agent's evidence source from its settings.
pub type MakeEvidence<'a> = Box<dyn FnOnce(&AgentSettings) -> Arc<dyn EvidenceSource> + 'a>;

/// An issuer, an agent serving the Workload API, and a model directory
/// registered for this test process.
async fn deploy(extra: &str) -> Deployment {
    deploy_with(Variant {
        extra,
        ..Variant::default()
    })
    .await
}

/// [`deploy`] with a [`Variant`].
pub async fn deploy_with(variant: Variant<'_>) -> Deployment {
    // An operator key the issuer trusts; the image is signed with it and
    // registered over the admin API as `image register` does.
    let key = SigningKey::from_pkcs8_der(&SigningKey::generate_pkcs8(Algorithm::Ed25519).unwrap())
        .unwrap();
    let mut signers = TrustedSigners::new();
    signers.insert(key.public_key().clone());
    let server = TestServer::start_with(|s| s.trusted_signers = Arc::new(signers)).await;
    let model_dir = match variant.model {
        Some(build) => build(&server.path("")),
        None => {
            let model_dir = server.path("model");
            std::fs::create_dir_all(&model_dir).unwrap();
            std::fs::write(model_dir.join("weights.bin"), b"tiny model weights").unwrap();
            std::fs::write(model_dir.join("config.json"), b"{\"layers\":1}").unwrap();
            model_dir
        }
    };
    let digest = digest_tree(&model_dir, &TreeLimits::default())
        .unwrap()
        .digest;
    for (path, content) in variant.files {
        let path = server.path(path);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, content).unwrap();
    }
    let code_extra = variant
        .code_extra
        .replace("{dir}", &server.path("").display().to_string());
    let image =
        image_for_this_process(&model_dir, &digest, variant.top, &code_extra, variant.extra);
    let registered = server.register_image(&image, &key).await.unwrap();
    assert!(registered.created);
    let bootstrap = server.path("bootstrap.pem");
    std::fs::write(&bootstrap, server.bundle().to_pem()).unwrap();
    let socket = server.path("workload.sock");
    let toml = format!(
        "trust_domain = \"{TRUST_DOMAIN}\"\nserver_address = \"{}\"\ndata_dir = \"{}\"\nsocket_path = \"{}\"\n[bootstrap]\nbundle_path = \"{}\"\n{}\n",
        server.addr(),
        server.path("agent-data").display(),
        socket.display(),
        bootstrap.display(),
        variant.agent_toml,
    );
    let mut settings = AgentSettings::from_toml_str(&toml).unwrap();
    settings.join_token = Some(server.token().await);
    if variant.manual_clock {
        settings.clock = Arc::new(server.clock.clone());
    }
    let agent = match variant.evidence {
        // The agent measures this process with its default /proc attestor.
        None => Agent::start(settings).await.unwrap(),
        Some(make) => {
            let source = make(&settings);
            Agent::start_with_evidence(settings, Some(source))
                .await
                .unwrap()
        }
    };
    // Wait for the first Sync message: it carries the path hints.
    let mut status = agent.status();
    tokio::time::timeout(
        Duration::from_secs(20),
        status.wait_for(|s| s.sync_connected),
    )
    .await
    .unwrap()
    .unwrap();
    Deployment {
        _server: server,
        agent,
        socket,
        model_dir,
    }
}

pub async fn raw_client(socket: &Path) -> SpiffeWorkloadApiClient<Channel> {
    let socket = socket.to_owned();
    let channel = Endpoint::from_static("http://workload.invalid")
        .connect_with_connector(tower::service_fn(move |_| {
            let socket = socket.clone();
            async move {
                Ok::<_, std::io::Error>(TokioIo::new(
                    tokio::net::UnixStream::connect(socket).await?,
                ))
            }
        }))
        .await
        .unwrap();
    SpiffeWorkloadApiClient::new(channel)
}

/// `err` has `code` and its message names `needle`.
pub fn assert_status(err: &tonic::Status, code: Code, needle: &str) {
    assert_eq!(err.code(), code, "{err:?}");
    assert!(
        err.message().contains(needle),
        "{needle}: {}",
        err.message()
    );
}

pub fn with_header<T>(message: T) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request
        .metadata_mut()
        .insert("workload.spiffe.io", "true".parse().unwrap());
    request
}

/// The first message of a new `FetchX509SVID` stream on a new connection.
pub async fn first_x509(
    socket: &Path,
) -> Result<hallmark_proto::workload::X509svidResponse, tonic::Status> {
    first_x509_on(&mut raw_client(socket).await).await
}

/// The first message of a new `FetchX509SVID` stream on `client`.
pub async fn first_x509_on(
    client: &mut SpiffeWorkloadApiClient<Channel>,
) -> Result<hallmark_proto::workload::X509svidResponse, tonic::Status> {
    let mut stream = client
        .fetch_x509svid(with_header(X509svidRequest {}))
        .await?
        .into_inner();
    stream
        .message()
        .await?
        .ok_or_else(|| tonic::Status::unknown("stream ended without a message"))
}

#[tokio::test]
async fn spiffe_client_fetches_svids_bound_to_code_and_model() {
    let d = deploy("").await;
    let client = spiffe::WorkloadApiClient::connect_to(format!("unix:{}", d.socket.display()))
        .await
        .unwrap();
    let svid = client.fetch_x509_svid().await.unwrap();
    assert_eq!(
        svid.spiffe_id().to_string(),
        "spiffe://example.org/test-agent"
    );
    let binding = hallmark_ca::x509::binding_from_cert(svid.leaf().as_bytes())
        .unwrap()
        .unwrap();
    let binding: serde_json::Value = serde_json::from_slice(&binding).unwrap();
    assert_eq!(binding["code_sha256"], own_exe_sha256());
    assert_eq!(binding["model"]["name"], "tiny");
    let bundles = client.fetch_x509_bundles().await.unwrap();
    let td = spiffe::TrustDomain::new("example.org").unwrap();
    assert!(bundles.get(&td).is_some());

    // JWT-SVID: fetched, then validated by the agent and by a JWT library.
    let jwt = client.fetch_jwt_svid(["payments"], None).await.unwrap();
    assert_eq!(
        jwt.spiffe_id().to_string(),
        "spiffe://example.org/test-agent"
    );
    let validated = client
        .validate_jwt_token("payments", jwt.token())
        .await
        .unwrap();
    assert_eq!(
        validated.spiffe_id().to_string(),
        "spiffe://example.org/test-agent"
    );
    let mut raw = raw_client(&d.socket).await;
    let jwks = raw
        .fetch_jwt_bundles(with_header(hallmark_proto::workload::JwtBundlesRequest {}))
        .await
        .unwrap()
        .into_inner()
        .message()
        .await
        .unwrap()
        .unwrap()
        .bundles
        .remove("spiffe://example.org")
        .unwrap();
    let jwks: jsonwebtoken::jwk::JwkSet = serde_json::from_slice(&jwks).unwrap();
    let kid = jsonwebtoken::decode_header(jwt.token())
        .unwrap()
        .kid
        .unwrap();
    let key = jsonwebtoken::DecodingKey::from_jwk(jwks.find(&kid).unwrap()).unwrap();
    let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::ES256);
    validation.set_audience(&["payments"]);
    let claims = jsonwebtoken::decode::<serde_json::Value>(jwt.token(), &key, &validation)
        .unwrap()
        .claims;
    assert_eq!(claims["hallmark"]["model"]["version"], "1.0");
    d.agent.shutdown().await;
}

#[tokio::test]
async fn refusals_have_the_exact_status() {
    let d = deploy("").await;
    let mut raw = raw_client(&d.socket).await;

    // No security header.
    let err = raw.fetch_x509svid(X509svidRequest {}).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    let err = raw
        .validate_jwtsvid(ValidateJwtsvidRequest {
            audience: "a".into(),
            svid: "b".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);

    // JWT without audience.
    let err = raw
        .fetch_jwtsvid(with_header(JwtsvidRequest {
            audience: vec![],
            spiffe_id: String::new(),
        }))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);

    // Audiences are bounded before anything is measured or minted: a 1 MB
    // audience, and one audience too many.
    let huge = "a".repeat(1 << 20);
    let err = raw
        .fetch_jwtsvid(with_header(JwtsvidRequest {
            audience: vec![huge],
            spiffe_id: String::new(),
        }))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
    assert!(
        err.message().contains("at most 2048 bytes"),
        "{}",
        err.message()
    );
    let err = raw
        .fetch_jwtsvid(with_header(JwtsvidRequest {
            audience: (0..17).map(|i| format!("aud-{i}")).collect(),
            spiffe_id: String::new(),
        }))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
    assert!(
        err.message().contains("at most 16 audiences"),
        "{}",
        err.message()
    );
    // At the limits (a 2048-byte SPIFFE ID is the longest the standard
    // requires support for), a token is minted.
    let longest = format!("spiffe://example.org/{}", "s".repeat(2048 - 21));
    assert_eq!(longest.len(), 2048);
    let mut at_limit: Vec<String> = (0..15).map(|i| format!("aud-{i}")).collect();
    at_limit.push(longest);
    let minted = raw
        .fetch_jwtsvid(with_header(JwtsvidRequest {
            audience: at_limit,
            spiffe_id: String::new(),
        }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(minted.svids.len(), 1);

    // A token signed by another issuer's key.
    let foreign = {
        let ca = hallmark_ca::manager::CaManager::generate(
            hallmark_ca::manager::CaConfig::new("example.org".parse().unwrap()),
            std::time::SystemTime::now(),
        )
        .unwrap();
        ca.mint_jwt_svid(
            &hallmark_ca::jwt::JwtSvidClaims {
                spiffe_id: "spiffe://example.org/test-agent".parse().unwrap(),
                audience: vec!["payments".into()],
                ttl: Duration::from_secs(60),
                extra: serde_json::Map::new(),
            },
            std::time::SystemTime::now(),
        )
        .unwrap()
        .token
    };
    let err = raw
        .validate_jwtsvid(with_header(ValidateJwtsvidRequest {
            audience: "payments".into(),
            svid: foreign,
        }))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);

    // A model file changed by one byte: the identity is refused.
    let weights = d.model_dir.join("weights.bin");
    let mut bytes = std::fs::read(&weights).unwrap();
    bytes[0] ^= 1;
    std::fs::write(&weights, bytes).unwrap();
    let mut stream = raw
        .fetch_x509svid(with_header(X509svidRequest {}))
        .await
        .unwrap()
        .into_inner();
    let err = stream.message().await.unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);
    assert!(
        err.message().contains("model digest mismatch"),
        "{}",
        err.message()
    );
    d.agent.shutdown().await;
}

#[tokio::test]
async fn a_process_without_a_matching_image_is_denied() {
    // The image requires an environment value this process does not have.
    let d = deploy("[env]\nHALLMARK_TEST_ROLE = \"payments\"\n").await;
    let mut raw = raw_client(&d.socket).await;
    let mut stream = raw
        .fetch_x509svid(with_header(X509svidRequest {}))
        .await
        .unwrap()
        .into_inner();
    let err = stream.message().await.unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);
    assert!(
        err.message().contains("env mismatch (HALLMARK_TEST_ROLE)"),
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
    d.agent.shutdown().await;
}

#[tokio::test]
async fn a_retired_image_stops_minting_at_once() {
    let d = deploy("").await;
    let mut raw = raw_client(&d.socket).await;
    let mut stream = raw
        .fetch_x509svid(with_header(X509svidRequest {}))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(stream.message().await.unwrap().unwrap().svids.len(), 1);

    let mut admin = d._server.admin().await;
    admin
        .retire_image(RetireImageRequest {
            name: "test-agent".into(),
            version: "1.0.0".into(),
            reason: "compromised build".into(),
        })
        .await
        .unwrap();
    let err = raw
        .fetch_jwtsvid(with_header(JwtsvidRequest {
            audience: vec!["payments".into()],
            spiffe_id: String::new(),
        }))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);
    assert!(err.message().contains("image retired"), "{}", err.message());
    d.agent.shutdown().await;
}

#[tokio::test]
async fn images_past_not_after_are_retired_automatically() {
    let d = deploy("").await;
    let server = &d._server;
    // The manifest's not_after is 2099-12-31.
    server
        .clock
        .set(std::time::UNIX_EPOCH + Duration::from_secs(4_102_531_200));
    server.handle().run_maintenance();
    let images = server
        .admin()
        .await
        .list_images(ListImagesRequest {})
        .await
        .unwrap()
        .into_inner()
        .images;
    assert!(images[0].retired);
    assert_eq!(images[0].retired_reason, "not_after passed");
    d.agent.shutdown().await;
}

#[tokio::test]
async fn issuer_unreachable_and_nothing_cached_is_unavailable() {
    let mut d = deploy("").await;
    d._server.stop().await;
    let mut raw = raw_client(&d.socket).await;
    let err = raw
        .fetch_jwtsvid(with_header(JwtsvidRequest {
            audience: vec!["payments".into()],
            spiffe_id: String::new(),
        }))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unavailable, "{err:?}");
    let mut stream = raw
        .fetch_x509svid(with_header(X509svidRequest {}))
        .await
        .unwrap()
        .into_inner();
    let err = stream.message().await.unwrap_err();
    assert_eq!(err.code(), Code::Unavailable, "{err:?}");
    d.agent.shutdown().await;
}
