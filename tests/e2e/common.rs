//! Shared harness: an issuer on loopback and a temp dir, a raw node API
//! client with or without a client certificate, and helpers to attest.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use hyper_util::rt::TokioIo;
use tempfile::TempDir;
use tokio::net::TcpStream;
use tonic::Status;
use tonic::transport::{Channel, Endpoint};

use hallmark_ca::bundle::{Bundle, SharedBundle};
use hallmark_ca::clock::{Clock, ManualClock};
use hallmark_ca::id::{SpiffeId, TrustDomain};
use hallmark_ca::key::CaKey;
use hallmark_ca::tls::{ClockTimeProvider, SpiffeServerVerifier, SvidCertResolver};
use hallmark_proto::admin::admin_client::AdminClient;
use hallmark_proto::admin::{
    GenerateJoinTokenRequest, RegisterImageRequest, RegisterImageResponse,
};
use hallmark_proto::node::node_client::NodeClient;
use hallmark_proto::node::{
    AttestParams, AttestRequest, AttestResult, JoinTokenParams, attest_params, attest_request,
    attest_response,
};
use hallmark_server::config::ServerSettings;
use hallmark_server::image::{Envelope, GoldImage, SigningKey, canonical};
use hallmark_server::server::{ServerHandle, start_with_clock};

pub const TRUST_DOMAIN: &str = "example.org";

/// An issuer in a temp dir with a manual clock.
pub struct TestServer {
    pub dir: TempDir,
    pub settings: ServerSettings,
    pub clock: ManualClock,
    pub handle: Option<ServerHandle>,
}

impl TestServer {
    pub async fn start() -> Self {
        Self::start_with(|_| {}).await
    }

    pub async fn start_with(tweak: impl FnOnce(&mut ServerSettings)) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let td = TrustDomain::new(TRUST_DOMAIN).unwrap();
        let mut settings = ServerSettings::for_dirs(
            td,
            dir.path().join("server-data"),
            dir.path().join("admin.sock"),
        );
        tweak(&mut settings);
        let clock = ManualClock::new(SystemTime::now());
        let handle = start_with_clock(settings.clone(), Arc::new(clock.clone()))
            .await
            .unwrap();
        // Later restarts must come back on the same port so agents can reconnect.
        settings.bind_address = handle.node_addr();
        Self {
            dir,
            settings,
            clock,
            handle: Some(handle),
        }
    }

    pub fn handle(&self) -> &ServerHandle {
        self.handle.as_ref().unwrap()
    }

    pub fn addr(&self) -> std::net::SocketAddr {
        self.handle().node_addr()
    }

    pub fn bundle(&self) -> Bundle {
        self.handle().authority().bundle()
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    pub async fn restart(&mut self) {
        self.handle.take().unwrap().shutdown().await;
        let handle = start_with_clock(self.settings.clone(), Arc::new(self.clock.clone()))
            .await
            .unwrap();
        self.handle = Some(handle);
    }

    pub async fn stop(&mut self) {
        if let Some(handle) = self.handle.take() {
            handle.shutdown().await;
        }
    }

    /// Signs `image` with `key` (one signature) and registers it.
    pub async fn register_image(
        &self,
        image: &GoldImage,
        key: &SigningKey,
    ) -> Result<RegisterImageResponse, Status> {
        let envelope = Envelope::sign(&canonical::encode(image), key)
            .unwrap()
            .to_json();
        self.admin()
            .await
            .register_image(RegisterImageRequest { envelope })
            .await
            .map(tonic::Response::into_inner)
    }

    pub async fn admin(&self) -> AdminClient<Channel> {
        let channel = hallmark_server::admin::socket::connect(&self.settings.admin_socket)
            .await
            .unwrap();
        AdminClient::new(channel)
    }

    pub async fn token(&self) -> String {
        self.token_with(0, "").await
    }

    pub async fn token_with(&self, ttl_seconds: u64, spiffe_id: &str) -> String {
        self.admin()
            .await
            .generate_join_token(GenerateJoinTokenRequest {
                ttl_seconds,
                spiffe_id: spiffe_id.into(),
            })
            .await
            .unwrap()
            .into_inner()
            .token
    }

    pub async fn agent_count(&self) -> usize {
        self.admin()
            .await
            .list_agents(hallmark_proto::admin::ListAgentsRequest {})
            .await
            .unwrap()
            .into_inner()
            .agents
            .len()
    }

    /// A raw node API client; `cert` is (chain, PKCS#8 key) for mutual TLS.
    pub async fn node_client(
        &self,
        cert: Option<(&[Vec<u8>], &[u8])>,
    ) -> Result<NodeClient<Channel>, tonic::transport::Error> {
        node_client(
            self.addr(),
            self.bundle(),
            Arc::new(self.clock.clone()),
            cert,
        )
        .await
    }
}

pub fn server_id() -> SpiffeId {
    SpiffeId::parse(&format!("spiffe://{TRUST_DOMAIN}/hallmark/server")).unwrap()
}

/// Dials the node API over TLS 1.3, verifying the issuer's SVID against `bundle`.
pub async fn node_client(
    addr: std::net::SocketAddr,
    bundle: Bundle,
    clock: Arc<dyn Clock>,
    cert: Option<(&[Vec<u8>], &[u8])>,
) -> Result<NodeClient<Channel>, tonic::transport::Error> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier = SpiffeServerVerifier::new(SharedBundle::new(bundle), server_id());
    let resolver = SvidCertResolver::new();
    if let Some((chain, key)) = cert {
        resolver.set(chain.to_vec(), key).unwrap();
    }
    let mut config = rustls::ClientConfig::builder_with_details(
        provider,
        Arc::new(ClockTimeProvider::new(clock)),
    )
    .with_protocol_versions(&[&rustls::version::TLS13])
    .unwrap()
    .dangerous()
    .with_custom_certificate_verifier(Arc::new(verifier))
    .with_client_cert_resolver(Arc::new(resolver));
    config.alpn_protocols = vec![b"h2".to_vec()];
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let channel = Endpoint::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect_timeout(Duration::from_secs(5))
        .connect_with_connector(tower::service_fn(move |_| {
            let connector = connector.clone();
            async move {
                let tcp = TcpStream::connect(addr).await?;
                let name = rustls_pki_types::ServerName::try_from("hallmark-server")
                    .map_err(std::io::Error::other)?;
                let tls = connector.connect(name, tcp).await?;
                Ok::<_, std::io::Error>(TokioIo::new(tls))
            }
        }))
        .await?;
    Ok(NodeClient::new(channel))
}

/// Attests with a join token; returns the node SVID key and the result.
pub async fn attest_join_token(
    client: &mut NodeClient<Channel>,
    token: &str,
) -> Result<(CaKey, AttestResult), Status> {
    let key = CaKey::generate().unwrap();
    let params = AttestParams {
        public_key: key.public_key_der(),
        attestor: Some(attest_params::Attestor::JoinToken(JoinTokenParams {
            token: token.into(),
        })),
    };
    let result = attest_once(client, params).await?;
    Ok((key, result))
}

/// Runs an attestation that needs no challenge.
pub async fn attest_once(
    client: &mut NodeClient<Channel>,
    params: AttestParams,
) -> Result<AttestResult, Status> {
    let request = AttestRequest {
        step: Some(attest_request::Step::Params(params)),
    };
    let mut responses = client
        .attest(tokio_stream::iter(vec![request]))
        .await?
        .into_inner();
    match responses.message().await? {
        Some(response) => match response.step {
            Some(attest_response::Step::Result(result)) => Ok(result),
            other => panic!("unexpected attestation step {other:?}"),
        },
        None => panic!("attestation stream ended without result"),
    }
}

/// Parses and verifies a node SVID with code we did not write: the `spiffe`
/// crate's X.509-SVID parser and rustls-webpki's chain verification.
pub fn cross_verify(chain: &[Vec<u8>], key: &CaKey, bundle: &Bundle, now: SystemTime) -> String {
    let chain_der: Vec<u8> = chain.concat();
    let svid = spiffe::X509Svid::parse_from_der(&chain_der, &key.pkcs8_der())
        .expect("the spiffe crate accepts the SVID");
    let spiffe_id = svid.spiffe_id().to_string();

    let leaf = rustls_pki_types::CertificateDer::from(chain[0].as_slice());
    let end_entity = webpki::EndEntityCert::try_from(&leaf).unwrap();
    let anchors: Vec<_> = bundle
        .x509_authorities
        .iter()
        .map(|der| {
            webpki::anchor_from_trusted_cert(&rustls_pki_types::CertificateDer::from(
                der.as_slice(),
            ))
            .unwrap()
            .to_owned()
        })
        .collect();
    let intermediates: Vec<_> = chain[1..]
        .iter()
        .map(|c| rustls_pki_types::CertificateDer::from(c.as_slice()))
        .collect();
    let time = rustls_pki_types::UnixTime::since_unix_epoch(
        now.duration_since(SystemTime::UNIX_EPOCH).unwrap(),
    );
    end_entity
        .verify_for_usage(
            webpki::ALL_VERIFICATION_ALGS,
            &anchors,
            &intermediates,
            time,
            webpki::KeyUsage::client_auth(),
            None,
            None,
        )
        .expect("rustls-webpki verifies the chain against the bundle");
    spiffe_id
}

/// Seconds since the Unix epoch.
pub fn unix(t: SystemTime) -> i64 {
    t.duration_since(SystemTime::UNIX_EPOCH).unwrap().as_secs() as i64
}

/// Every audit record so far, as JSON.
pub async fn audit_records(server: &TestServer) -> Vec<serde_json::Value> {
    read_audit(server.admin().await).await
}

/// Every audit record so far, as JSON, read through `admin`.
pub async fn read_audit(mut admin: AdminClient<Channel>) -> Vec<serde_json::Value> {
    let mut stream = admin
        .read_audit(hallmark_proto::admin::ReadAuditRequest {
            start: None,
            follow: false,
            signed_only: false,
        })
        .await
        .unwrap()
        .into_inner();
    let mut records = Vec::new();
    while let Some(entry) = stream.message().await.unwrap() {
        if let Some(hallmark_proto::admin::audit_entry::Entry::Record(bytes)) = entry.entry {
            records.push(serde_json::from_slice(&bytes).unwrap());
        }
    }
    records
}

/// A loopback TCP relay to the issuer that can be cut (every connection
/// dropped, new ones refused: the issuer is unreachable) and restored.
pub struct Relay {
    pub addr: std::net::SocketAddr,
    open: tokio::sync::watch::Sender<bool>,
}

impl Relay {
    pub async fn to(target: std::net::SocketAddr) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (open, _) = tokio::sync::watch::channel(true);
        let gates = open.clone();
        tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                let mut gate = gates.subscribe();
                if !*gate.borrow_and_update() {
                    continue;
                }
                tokio::spawn(async move {
                    let Ok(mut outbound) = tokio::net::TcpStream::connect(target).await else {
                        return;
                    };
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
                        _ = gate.wait_for(|open| !*open) => {}
                    }
                });
            }
        });
        Self { addr, open }
    }

    pub fn cut(&self) {
        self.open.send_replace(false);
    }

    pub fn restore(&self) {
        self.open.send_replace(true);
    }
}
