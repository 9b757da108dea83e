//! SPIFFE Federation end to end: two issuers with different trust domains,
//! each serving a bundle endpoint (`example.org` with `https_web` and a
//! Web PKI certificate from a CA made here, `b.example` with `https_spiffe`
//! and its own X509-SVID), each federating with the other; an agent of
//! `example.org` serving `b.example`'s bundle over the Workload API; B's CA
//! and JWT key rotating and the agent's streams following; refusals (an
//! endpoint presenting another SPIFFE ID, a bundle of another trust
//! domain) keeping the last good bundle; a restart keeping what was
//! fetched. py-spiffe (grpcio) reads the federated bundle through the
//! agent, and Python's `ssl` reads the https_web endpoint.
//!
//! Both issuers run on the system clock (the endpoints' certificates are
//! checked at the issuers' own time), with B's CA living 40
//! seconds so that a rotation happens within the test.

use std::collections::BTreeSet;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use sha2::{Digest, Sha256};
use tokio_stream::StreamExt;
use tonic::transport::Channel;

use hallmark_agent::config::AgentSettings;
use hallmark_agent::{Agent, AgentHandle};
use hallmark_ca::bundle::Bundle;
use hallmark_ca::clock::SystemClock;
use hallmark_ca::id::TrustDomain;
use hallmark_ca::manager::{CaConfig, CaManager};
use hallmark_proto::admin::admin_client::AdminClient;
use hallmark_proto::admin::{
    GenerateJoinTokenRequest, ListFederatedBundlesRequest, RegisterImageRequest,
};
use hallmark_proto::workload::spiffe_workload_api_client::SpiffeWorkloadApiClient;
use hallmark_proto::workload::{
    JwtBundlesRequest, ValidateJwtsvidRequest, X509BundlesRequest, X509svidRequest,
};
use hallmark_server::config::{ServerConfig, ServerOverrides, ServerSettings};
use hallmark_server::image::{Algorithm, Envelope, GoldImage, SigningKey, canonical};
use hallmark_server::server::{ServerHandle, start_with_clock};

use crate::common::read_audit;
use crate::kill::{TestAgent, WAIT, own_exe_sha256, unix_channel, with_header};
use crate::py_spiffe::venv_python;
use hallmark_proto::xds::envoy::config::core::v3::data_source;
use hallmark_proto::xds::envoy::extensions::transport_sockets::tls::v3::{Secret, secret};
use hallmark_proto::xds::envoy::service::discovery::v3::DiscoveryRequest;
use hallmark_proto::xds::envoy::service::secret::v3::secret_discovery_service_client::SecretDiscoveryServiceClient;

const A: &str = "example.org";
const B: &str = "b.example";
const B_KEY: &str = "spiffe://b.example";
const SCRIPT: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/interop/py_spiffe_federation.py"
);

#[tokio::test]
async fn two_issuers_federate_and_agents_serve_the_foreign_bundle() {
    if std::env::var_os("RUST_LOG").is_some() {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_test_writer()
            .try_init();
    }
    let dir = tempfile::tempdir().unwrap();
    let web = WebPki::new(dir.path());
    let a_port = free_port();

    // B first: it federates with A's https_web endpoint (not up yet: its
    // first fetches fail and are retried).
    let b_settings = {
        let mut s = settings(
            dir.path(),
            B,
            &format!(
                "[ca]\nrefresh_hint = \"1s\"\n[federation.bundle_endpoint]\naddress = \"127.0.0.1:0\"\nprofile = \"https_spiffe\"\n[[federation.trust_domains]]\ntrust_domain = \"{A}\"\nbundle_endpoint_url = \"https://127.0.0.1:{a_port}/bundle\"\nprofile = \"https_web\"\nendpoint_ca = \"{}\"\n",
                web.ca.display()
            ),
        );
        // CAs are backdated 30 s: with 40 s to live, the next CA is
        // published 5 s after start and activated 23 s later.
        s.ca.ca_ttl = Duration::from_secs(40);
        s.ca.jwt_key_ttl = Duration::from_secs(40);
        s.ca.max_svid_ttl = Duration::from_secs(2);
        s
    };
    let b = start(b_settings).await;
    let b_url = format!(
        "https://127.0.0.1:{}/",
        b.bundle_endpoint_addr().unwrap().port()
    );
    let b_bootstrap = dir.path().join("b.json");
    let b_bootstrap_bundle = b.authority().bundle();
    assert_eq!(b_bootstrap_bundle.x509_authorities.len(), 1);
    std::fs::write(&b_bootstrap, b_bootstrap_bundle.to_jwks()).unwrap();
    // Two relationships that must be refused: `c.example` is served B's
    // bundle (CAs of b.example), `d.example`'s endpoint is expected to be
    // another SPIFFE ID than the one B presents. Both start from a
    // bootstrap bundle of their own, which must stay in force.
    let c_bootstrap = bootstrap_of(dir.path(), "c.example");
    let d_bootstrap = bootstrap_of(dir.path(), "d.example");

    let signer =
        SigningKey::from_pkcs8_der(&SigningKey::generate_pkcs8(Algorithm::Ed25519).unwrap())
            .unwrap();
    let a_text = format!(
        "[federation.bundle_endpoint]\naddress = \"127.0.0.1:{a_port}\"\nprofile = \"https_web\"\ncert = \"{}\"\nkey = \"{}\"\n\
         [[federation.trust_domains]]\ntrust_domain = \"{B}\"\nbundle_endpoint_url = \"{b_url}\"\nprofile = \"https_spiffe\"\nendpoint_spiffe_id = \"spiffe://{B}/hallmark/server\"\nbundle = \"{}\"\n\
         [[federation.trust_domains]]\ntrust_domain = \"c.example\"\nbundle_endpoint_url = \"{b_url}\"\nprofile = \"https_spiffe\"\nendpoint_spiffe_id = \"spiffe://{B}/hallmark/server\"\nbundle = \"{}\"\n\
         [[federation.trust_domains]]\ntrust_domain = \"d.example\"\nbundle_endpoint_url = \"{b_url}\"\nprofile = \"https_spiffe\"\nendpoint_spiffe_id = \"spiffe://{B}/not-the-bundle-server\"\nbundle = \"{}\"\n",
        web.cert.display(),
        web.key.display(),
        b_bootstrap.display(),
        c_bootstrap.display(),
        d_bootstrap.display(),
    );
    let mut a_settings = settings(dir.path(), A, &a_text);
    let mut signers = hallmark_server::image::TrustedSigners::new();
    signers.insert(signer.public_key().clone());
    a_settings.trusted_signers = Arc::new(signers);
    let a = start(a_settings.clone()).await;
    assert_eq!(a.bundle_endpoint_addr().unwrap().port(), a_port);
    register_beta(&a, &signer).await;

    // A fetched B's bundle over https_spiffe; B fetched A's over https_web.
    let b_status = wait_relation(&a, B, |f| f.source == "endpoint").await;
    let b_bundle =
        Bundle::from_jwks(TrustDomain::new(B).unwrap(), b_status.jwks.as_bytes()).unwrap();
    assert_eq!(
        b_bundle.x509_authorities,
        b.authority().bundle().x509_authorities
    );
    assert_eq!(b_status.profile, "https_spiffe");
    let a_in_b = wait_relation(&b, A, |f| f.source == "endpoint").await;
    assert_eq!(a_in_b.profile, "https_web");
    let a_bundle = Bundle::from_jwks(TrustDomain::new(A).unwrap(), a_in_b.jwks.as_bytes()).unwrap();
    assert_eq!(
        a_bundle.x509_authorities,
        a.authority().bundle().x509_authorities
    );
    assert_eq!(
        kids(&a_bundle),
        kids(&a.authority().bundle()),
        "B holds A's JWT keys"
    );

    // Refused: a bundle of another trust domain, and the wrong endpoint
    // SPIFFE ID. The bootstrap bundles stay in force.
    let c = wait_relation(&a, "c.example", |f| !f.last_error.is_empty()).await;
    assert!(
        c.last_error
            .contains("is a CA of trust domain b.example, not c.example"),
        "{}",
        c.last_error
    );
    assert_eq!(c.source, "bootstrap");
    assert_eq!(c.jwks, std::fs::read_to_string(&c_bootstrap).unwrap());
    let d = wait_relation(&a, "d.example", |f| !f.last_error.is_empty()).await;
    assert!(
        d.last_error.contains(
            "presented an X509-SVID for spiffe://b.example/hallmark/server, expected spiffe://b.example/not-the-bundle-server"
        ),
        "{}",
        d.last_error
    );
    assert_eq!(d.source, "bootstrap");
    let records = audit_kinds(&a).await;
    let refused: BTreeSet<&str> = records
        .iter()
        .filter(|r| r["kind"] == "federated_bundle_refused")
        .filter_map(|r| r["fields"]["trust_domain"].as_str())
        .collect();
    assert!(
        refused.contains("c.example") && refused.contains("d.example"),
        "{refused:?}"
    );
    assert!(
        records
            .iter()
            .any(|r| r["kind"] == "federated_bundle_updated" && r["fields"]["trust_domain"] == B)
    );

    // An agent of A: B's bundle in FetchX509Bundles, FetchJWTBundles and
    // the X509SVIDResponse, each under B's trust domain.
    let agent = agent_of(&a, dir.path()).await;
    agent
        .wait_status("federated bundles received", |s| s.federated_generation > 0)
        .await;
    // B may publish its next CA meanwhile: what the agent serves is B's
    // bundle as A held it before or after these calls.
    let held_before = current_b(&a).await;
    let mut client = agent.raw().await;
    let mut x509_bundles = client
        .fetch_x509_bundles(with_header(X509BundlesRequest {}))
        .await
        .unwrap()
        .into_inner();
    let first = x509_bundles.next().await.unwrap().unwrap();
    let keys: BTreeSet<&str> = first.bundles.keys().map(String::as_str).collect();
    assert_eq!(
        keys,
        BTreeSet::from([
            "spiffe://example.org",
            B_KEY,
            "spiffe://c.example",
            "spiffe://d.example"
        ])
    );
    let first_b = first.bundles[B_KEY].clone();
    let jwt = client
        .fetch_jwt_bundles(with_header(JwtBundlesRequest {}))
        .await
        .unwrap()
        .into_inner()
        .next()
        .await
        .unwrap()
        .unwrap();
    let jwks: Value = serde_json::from_slice(&jwt.bundles[B_KEY]).unwrap();
    let served_kids: BTreeSet<String> = jwks["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["kid"].as_str().unwrap().to_owned())
        .collect();
    let jwt_kids = served_kids;
    let svids = client
        .fetch_x509svid(with_header(X509svidRequest {}))
        .await
        .unwrap()
        .into_inner()
        .next()
        .await
        .unwrap()
        .unwrap();
    assert_eq!(svids.svids[0].spiffe_id, "spiffe://example.org/beta");
    let held_after = current_b(&a).await;
    let held = [&held_before, &held_after];
    for der in [&first_b, &svids.federated_bundles[B_KEY]] {
        assert!(
            held.iter().any(|b| *der == b.x509_der_concat()),
            "the agent served a bundle of B that A never held"
        );
    }
    assert!(held.iter().any(|b| jwt_kids == kids(b)), "{jwt_kids:?}");
    assert!(!svids.federated_bundles.contains_key("spiffe://example.org"));

    // Envoy's SDS on the same socket serves B's bundle under B's trust
    // domain ID, as a validation context of B's CA certificates.
    let sds = SecretDiscoveryServiceClient::new(unix_channel(&agent.socket).await)
        .fetch_secrets(DiscoveryRequest {
            resource_names: vec![B_KEY.to_owned(), "ROOTCA".to_owned()],
            ..DiscoveryRequest::default()
        })
        .await
        .unwrap()
        .into_inner();
    let secrets: Vec<Secret> = sds
        .resources
        .iter()
        .map(|any| prost::Message::decode(any.value.as_slice()).unwrap())
        .collect();
    assert_eq!(
        secrets.iter().map(|s| s.name.as_str()).collect::<Vec<_>>(),
        [B_KEY, "ROOTCA"]
    );
    let Some(secret::Type::ValidationContext(b_context)) = &secrets[0].r#type else {
        panic!("{:?}", secrets[0])
    };
    let Some(data_source::Specifier::InlineBytes(b_pem)) = b_context
        .trusted_ca
        .as_ref()
        .and_then(|t| t.specifier.clone())
    else {
        panic!("{b_context:?}")
    };
    let b_ders: Vec<Vec<u8>> = pem::parse_many(&b_pem)
        .unwrap()
        .into_iter()
        .map(pem::Pem::into_contents)
        .collect();
    assert!(
        held.iter().any(|b| b_ders.concat() == b.x509_der_concat()),
        "SDS served a bundle of B that A never held"
    );

    // ValidateJWTSVID on A's agent accepts a JWT-SVID minted by B, checked
    // with B's bundle.
    let token = b
        .authority()
        .mint_jwt_svid(&hallmark_ca::jwt::JwtSvidClaims {
            spiffe_id: hallmark_ca::id::SpiffeId::parse("spiffe://b.example/partner").unwrap(),
            audience: vec!["spiffe://example.org/beta".into()],
            ttl: Duration::from_secs(60),
            extra: serde_json::Map::new(),
        })
        .unwrap()
        .token;
    let validated = client
        .validate_jwtsvid(with_header(ValidateJwtsvidRequest {
            audience: "spiffe://example.org/beta".into(),
            svid: token,
        }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(validated.spiffe_id, "spiffe://b.example/partner");

    // The spiffe crate (code we did not write) parses them per trust domain.
    let bundles = agent.spiffe().await.fetch_x509_bundles().await.unwrap();
    let b_td = spiffe::TrustDomain::new(B).unwrap();
    let parsed = bundles
        .get(&b_td)
        .expect("the spiffe crate finds B's bundle");
    assert!(!parsed.authorities().is_empty());

    // B rotates (its CA lives 40 s, backdated 30 s): its next CA is
    // published 5 s after it started, A refreshes on B's 1 s hint, and the
    // open FetchX509Bundles stream gets a message with the new CA.
    let initial: Vec<Vec<u8>> = b_bootstrap_bundle.x509_authorities.clone();
    let mut message = first.bundles[B_KEY].clone();
    let rotated = tokio::time::timeout(WAIT, async {
        loop {
            let certs = split_der(&message);
            if certs.iter().any(|c| !initial.contains(c)) {
                return certs;
            }
            message = x509_bundles.next().await.unwrap().unwrap().bundles[B_KEY].clone();
        }
    })
    .await
    .unwrap_or_else(|_| {
        panic!(
            "the agent's FetchX509Bundles stream never showed B's rotation; A: {:?}; B now: {:?}",
            a.federation().status(),
            b.authority().bundle()
        )
    });
    // What the agent served is a bundle of B's: every CA names b.example.
    let mut served = Bundle::new(TrustDomain::new(B).unwrap());
    served.x509_authorities = rotated.clone();
    served.check_trust_domain().unwrap();
    let now_b = current_b(&a).await;
    assert!(now_b.sequence > b_bootstrap_bundle.sequence);
    assert!(
        now_b.x509_authorities.iter().any(|c| !initial.contains(c)),
        "A holds B's new CA"
    );

    // py-spiffe sees B's bundle through the agent; Python's ssl reads A's
    // https_web endpoint with the test CA.
    if let Some(python) = venv_python("the py-spiffe federation check").await {
        let shas = |bundle: &Bundle| -> BTreeSet<String> {
            bundle
                .x509_authorities
                .iter()
                .map(|c| hex::encode(Sha256::digest(c)))
                .collect()
        };
        let b_before = current_b(&a).await;
        let out = run_python(
            &python,
            &agent.socket,
            &format!("https://127.0.0.1:{a_port}/bundle"),
            &web.ca,
        )
        .await;
        let b_after = current_b(&a).await;
        // B may rotate while the script runs: what py-spiffe saw under B's
        // trust domain is B's CAs of one of those moments.
        let seen: BTreeSet<String> = serde_json::from_value(out["x509"][B].clone()).unwrap();
        assert!(
            seen == shas(&b_before) || seen == shas(&b_after),
            "py-spiffe saw {seen:?} for {B}; A held {:?} then {:?}",
            shas(&b_before),
            shas(&b_after)
        );
        let seen_kids: BTreeSet<String> = serde_json::from_value(out["jwt"][B].clone()).unwrap();
        assert!(
            seen_kids == kids(&b_before) || seen_kids == kids(&b_after),
            "{out}"
        );
        let a_now = a.authority().bundle();
        let own: BTreeSet<String> = serde_json::from_value(out["x509"][A].clone()).unwrap();
        assert_eq!(own, shas(&a_now));
        let endpoint = &out["endpoint"];
        assert_eq!(endpoint["status"], 200);
        assert_eq!(endpoint["content_type"], "application/json");
        assert_eq!(endpoint["sequence"], a_now.sequence);
        assert_eq!(endpoint["refresh_hint"], a_now.refresh_hint.as_secs());
        assert_eq!(
            serde_json::from_value::<BTreeSet<String>>(endpoint["x509"].clone()).unwrap(),
            shas(&a_now)
        );
        assert_eq!(
            serde_json::from_value::<BTreeSet<String>>(endpoint["kids"].clone()).unwrap(),
            kids(&a_now)
        );
    }
    let agent_settings = agent.settings.clone();
    let agent_socket = agent.socket.clone();
    agent.agent.handle.shutdown().await;

    // A restart of A with B gone: the last good bundle comes back from the
    // store, and stays while B cannot be reached.
    let last = current_b(&a).await;
    b.shutdown().await;
    a.shutdown().await;
    let a = start(a_settings).await;
    let after = wait_relation(&a, B, |f| !f.last_error.is_empty()).await;
    assert_eq!(after.source, "store");
    let kept = Bundle::from_jwks(TrustDomain::new(B).unwrap(), after.jwks.as_bytes()).unwrap();
    assert!(kept.same_content(&last) || kept.sequence >= last.sequence);
    assert!(
        after.last_error.contains("cannot connect"),
        "{}",
        after.last_error
    );
    a.shutdown().await;

    // The agent, restarted while its issuer is down, serves the federated
    // bundles it persisted.
    let persisted = hallmark_agent::federated::load(
        &agent_settings
            .data_dir
            .join(hallmark_agent::federated::FEDERATED_FILE),
    )
    .unwrap();
    let persisted_b = persisted[&TrustDomain::new(B).unwrap()].clone();
    let handle = Agent::start(agent_settings).await.unwrap();
    let served = SpiffeWorkloadApiClient::new(unix_channel(&agent_socket).await)
        .fetch_x509_bundles(with_header(X509BundlesRequest {}))
        .await
        .unwrap()
        .into_inner()
        .next()
        .await
        .unwrap()
        .unwrap();
    assert_eq!(served.bundles[B_KEY], persisted_b.x509_der_concat());
    assert!(served.bundles.contains_key("spiffe://example.org"));
    handle.shutdown().await;
}

/// Server settings from `server.toml` text (the path operators take),
/// in `dir/<td>`, on loopback, refreshing and rotating quickly.
fn settings(dir: &Path, td: &str, extra: &str) -> ServerSettings {
    let home = dir.join(td);
    std::fs::create_dir_all(&home).unwrap();
    let text = format!(
        "trust_domain = \"{td}\"\ndata_dir = \"{}\"\nadmin_socket = \"{}\"\nbind_address = \"127.0.0.1:0\"\n[agents]\nsvid_ttl = \"24h\"\n{extra}",
        home.join("data").display(),
        home.join("admin.sock").display(),
    );
    let mut settings = ServerSettings::resolve(
        ServerConfig::from_toml_str(&text).unwrap(),
        ServerOverrides::default(),
    )
    .unwrap();
    settings.federation.refresh_floor = Duration::from_millis(200);
    settings.rotation_interval = Duration::from_millis(200);
    settings
}

async fn start(settings: ServerSettings) -> ServerHandle {
    start_with_clock(settings, Arc::new(SystemClock))
        .await
        .unwrap()
}

async fn admin(server: &ServerHandle) -> AdminClient<Channel> {
    AdminClient::new(
        hallmark_server::admin::socket::connect(server.admin_socket())
            .await
            .unwrap(),
    )
}

/// The federated bundle status of `td` once `ready` holds (within [`WAIT`]).
async fn wait_relation(
    server: &ServerHandle,
    td: &str,
    ready: impl Fn(&hallmark_proto::admin::FederatedBundle) -> bool,
) -> hallmark_proto::admin::FederatedBundle {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let listed = admin(server)
            .await
            .list_federated_bundles(ListFederatedBundlesRequest {
                trust_domain: td.into(),
            })
            .await
            .unwrap()
            .into_inner()
            .bundles;
        if let Some(found) = listed.into_iter().find(|f| ready(f)) {
            return found;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the relationship with {td} never became ready"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Concatenated DER certificates, one by one.
fn split_der(mut der: &[u8]) -> Vec<Vec<u8>> {
    let mut certs = Vec::new();
    while !der.is_empty() {
        let (rest, _) = x509_parser::parse_x509_certificate(der).unwrap();
        certs.push(der[..der.len() - rest.len()].to_vec());
        der = rest;
    }
    certs
}

/// B's bundle as A holds it now.
async fn current_b(a: &ServerHandle) -> Bundle {
    (*a.federation().bundles()[&TrustDomain::new(B).unwrap()]).clone()
}

fn kids(bundle: &Bundle) -> BTreeSet<String> {
    bundle
        .jwt_authorities
        .iter()
        .map(|k| k.key_id.clone())
        .collect()
}

async fn audit_kinds(server: &ServerHandle) -> Vec<Value> {
    read_audit(admin(server).await).await
}

/// A bootstrap bundle of a trust domain of its own, written to `dir`.
fn bootstrap_of(dir: &Path, td: &str) -> PathBuf {
    let bundle = CaManager::generate(
        CaConfig::new(TrustDomain::new(td).unwrap()),
        std::time::SystemTime::now(),
    )
    .unwrap()
    .bundle();
    let path = dir.join(format!("{td}.json"));
    std::fs::write(&path, bundle.to_jwks()).unwrap();
    path
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// `beta` for this test process's executable.
async fn register_beta(server: &ServerHandle, key: &SigningKey) {
    let image = GoldImage::from_toml(&format!(
        "name = \"beta\"\nversion = \"1.0.0\"\nspiffe_id = \"spiffe://example.org/beta\"\nowner = \"alice@example.org\"\npurpose = \"federation tests\"\nrisk_tier = \"low\"\nnot_after = 2099-12-31\n[code]\nsha256 = [\"{}\"]\n",
        own_exe_sha256()
    ))
    .unwrap();
    let envelope = Envelope::sign(&canonical::encode(&image), key)
        .unwrap()
        .to_json();
    admin(server)
        .await
        .register_image(RegisterImageRequest { envelope })
        .await
        .unwrap();
}

/// A [`TestAgent`] and the settings it started with (to start it again).
struct FedAgent {
    agent: TestAgent,
    settings: AgentSettings,
}

impl std::ops::Deref for FedAgent {
    type Target = TestAgent;
    fn deref(&self) -> &TestAgent {
        &self.agent
    }
}

/// An agent of `server` (trust domain `example.org`) serving the Workload API.
async fn agent_of(server: &ServerHandle, dir: &Path) -> FedAgent {
    let data = dir.join("agent-data");
    let socket = dir.join("agent.sock");
    let bootstrap = dir.join("agent-bootstrap.pem");
    std::fs::write(&bootstrap, server.authority().bundle().to_pem()).unwrap();
    let toml = format!(
        "trust_domain = \"{A}\"\nserver_address = \"{}\"\ndata_dir = \"{}\"\nsocket_path = \"{}\"\nsync_backoff_max = \"500ms\"\n[bootstrap]\nbundle_path = \"{}\"\n",
        server.node_addr(),
        data.display(),
        socket.display(),
        bootstrap.display(),
    );
    let mut settings = AgentSettings::from_toml_str(&toml).unwrap();
    settings.join_token = Some(
        admin(server)
            .await
            .generate_join_token(GenerateJoinTokenRequest {
                ttl_seconds: 0,
                spiffe_id: String::new(),
            })
            .await
            .unwrap()
            .into_inner()
            .token,
    );
    let handle: AgentHandle = Agent::start(settings.clone()).await.unwrap();
    let agent = TestAgent {
        handle,
        socket,
        data,
    };
    agent
        .wait_status("attested and syncing", |s| s.attested && s.sync_connected)
        .await;
    settings.join_token = None;
    FedAgent { agent, settings }
}

/// A CA made here and a certificate for 127.0.0.1 it signed: the https_web
/// endpoint's Web PKI (tests cannot use a public CA).
struct WebPki {
    ca: PathBuf,
    cert: PathBuf,
    key: PathBuf,
}

impl WebPki {
    fn new(dir: &Path) -> WebPki {
        let ca_key = rcgen::KeyPair::generate().unwrap();
        let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "Federation test Web CA");
        ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        ca_params.key_usages = vec![
            rcgen::KeyUsagePurpose::KeyCertSign,
            rcgen::KeyUsagePurpose::CrlSign,
        ];
        let ca_cert = ca_params.self_signed(&ca_key).unwrap();
        let issuer = rcgen::Issuer::new(ca_params, ca_key);
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(vec!["127.0.0.1".to_owned()]).unwrap();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "127.0.0.1");
        params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
        params.use_authority_key_identifier_extension = true;
        let cert = params.signed_by(&key, &issuer).unwrap();
        let paths = WebPki {
            ca: dir.join("web-ca.pem"),
            cert: dir.join("web-cert.pem"),
            key: dir.join("web-key.pem"),
        };
        std::fs::write(&paths.ca, ca_cert.pem()).unwrap();
        std::fs::write(&paths.cert, cert.pem()).unwrap();
        std::fs::write(&paths.key, key.serialize_pem()).unwrap();
        paths
    }
}

/// tests/interop/py_spiffe_federation.py; its one JSON line.
async fn run_python(python: &Path, socket: &Path, url: &str, ca: &Path) -> Value {
    let child = tokio::process::Command::new(python)
        .arg(SCRIPT)
        .arg(url)
        .arg(ca)
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
    let output = tokio::time::timeout(Duration::from_secs(90), child.wait_with_output())
        .await
        .expect("py_spiffe_federation.py hung")
        .unwrap();
    assert!(
        output.status.success(),
        "py_spiffe_federation.py failed ({}):\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).unwrap()
}
