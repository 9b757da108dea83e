//! The node API client: TLS 1.3 to the issuer, verifying its SVID against the
//! agent's current bundle and presenting the agent's node SVID once it has one.
//!
//! The verifier reads a [`SharedBundle`] and the client certificate comes
//! from a [`SvidCertResolver`], so one `ClientConfig` serves for the agent's
//! whole life: bundle rotations and SVID renewals need no rebuild.

use std::sync::Arc;
use std::time::Duration;

use hyper_util::rt::TokioIo;
use rustls::ClientConfig;
use rustls::client::danger::ServerCertVerifier;
use rustls_pki_types::ServerName;
use tokio::net::TcpStream;
use tonic::transport::{Channel, Endpoint};

use hallmark_ca::bundle::SharedBundle;
use hallmark_ca::clock::Clock;
use hallmark_ca::id::SpiffeId;
use hallmark_ca::tls::{ClockTimeProvider, SpiffeServerVerifier, SvidCertResolver};
use hallmark_proto::node::node_client::NodeClient;

use crate::error::AgentError;

const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// TLS configuration verifying the issuer against `bundle`.
pub fn tls_config(
    bundle: SharedBundle,
    server_id: SpiffeId,
    resolver: Arc<SvidCertResolver>,
    clock: Arc<dyn Clock>,
) -> Result<Arc<ClientConfig>, AgentError> {
    build(
        Arc::new(SpiffeServerVerifier::new(bundle, server_id)),
        resolver,
        clock,
    )
}

/// TLS configuration that trusts whatever issuer answers: only for the first
/// attestation with `insecure_bootstrap = true`.
pub fn insecure_tls_config(
    bundle: SharedBundle,
    resolver: Arc<SvidCertResolver>,
    clock: Arc<dyn Clock>,
) -> Result<Arc<ClientConfig>, AgentError> {
    build(
        Arc::new(SpiffeServerVerifier::trust_on_first_use(bundle)),
        resolver,
        clock,
    )
}

fn build(
    verifier: Arc<dyn ServerCertVerifier>,
    resolver: Arc<SvidCertResolver>,
    clock: Arc<dyn Clock>,
) -> Result<Arc<ClientConfig>, AgentError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config =
        ClientConfig::builder_with_details(provider, Arc::new(ClockTimeProvider::new(clock)))
            .with_protocol_versions(&[&rustls::version::TLS13])?
            .dangerous()
            .with_custom_certificate_verifier(verifier)
            .with_client_cert_resolver(resolver);
    config.alpn_protocols = vec![b"h2".to_vec()];
    // No session resumption: a resumed TLS 1.3 session keeps the identity of
    // the handshake that made it (for the first attestation: none), so every
    // connection must present the current node SVID afresh.
    config.resumption = rustls::client::Resumption::disabled();
    Ok(Arc::new(config))
}

/// Opens a node API client to `address` with `tls`.
pub async fn connect(
    address: &str,
    tls: Arc<ClientConfig>,
) -> Result<NodeClient<Channel>, AgentError> {
    let connector = tokio_rustls::TlsConnector::from(tls);
    let target = address.to_owned();
    let endpoint = Endpoint::from_shared(format!("http://{address}")).map_err(|source| {
        AgentError::Connect {
            address: address.to_owned(),
            source,
        }
    })?;
    let channel = endpoint
        .connect_timeout(CONNECT_TIMEOUT)
        .http2_keep_alive_interval(Duration::from_secs(30))
        .keep_alive_timeout(Duration::from_secs(10))
        .connect_with_connector(tower::service_fn(move |_| {
            let connector = connector.clone();
            let target = target.clone();
            async move {
                let tcp = TcpStream::connect(&target).await?;
                tcp.set_nodelay(true)?;
                // The verifier checks the SPIFFE ID, not a DNS name; rustls
                // still wants a name for SNI.
                let name =
                    ServerName::try_from("hallmark-server").map_err(std::io::Error::other)?;
                let tls = connector.connect(name, tcp).await?;
                Ok::<_, std::io::Error>(TokioIo::new(tls))
            }
        }))
        .await
        .map_err(|source| AgentError::Connect {
            address: address.to_owned(),
            source,
        })?;
    Ok(NodeClient::new(channel))
}
