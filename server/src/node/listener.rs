//! The node API's TLS listener.
//!
//! TLS 1.3 only, ALPN `h2`. The server certificate is the issuer's own SVID
//! (swapped in place on renewal); client certificates are verified against
//! the live trust bundle, so a CA rotation needs no restart. A client without
//! a certificate is let through the handshake (it can only `Attest`); a
//! client with a certificate that does not chain to the bundle, or whose
//! SVID is not an agent ID, fails the handshake.
//!
//! Handshakes run on their own tasks with a deadline, so a slow or hostile
//! client cannot stall the accept loop.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use futures::Stream;
use rustls::ServerConfig;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;
use tokio_stream::wrappers::ReceiverStream;

use hallmark_ca::clock::Clock;
use hallmark_ca::id::SpiffeId;
use hallmark_ca::tls::{ClockTimeProvider, SpiffeClientVerifier};

use crate::authority::Authority;

const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// The TLS configuration of the node API.
pub fn tls_config(
    authority: &Authority,
    clock: Arc<dyn Clock>,
) -> Result<Arc<ServerConfig>, rustls::Error> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier = SpiffeClientVerifier::new(
        authority.shared_bundle(),
        Arc::new(|id: &SpiffeId| id.has_path_prefix("/hallmark/agent")),
        false,
    );
    let mut config =
        ServerConfig::builder_with_details(provider, Arc::new(ClockTimeProvider::new(clock)))
            .with_protocol_versions(&[&rustls::version::TLS13])?
            .with_client_cert_verifier(Arc::new(verifier))
            .with_cert_resolver(authority.server_cert());
    config.alpn_protocols = vec![b"h2".to_vec()];
    // No resumption: every connection proves its client certificate afresh,
    // so an anonymous (attestation) session can never be resumed into an
    // authenticated one, and a refused SVID cannot ride on an old session.
    config.session_storage = Arc::new(rustls::server::NoServerSessionStorage {});
    config.send_tls13_tickets = 0;
    Ok(Arc::new(config))
}

/// Binds `addr` and returns the bound address and the stream of established
/// TLS connections for tonic's `serve_with_incoming`. The accept loop stops
/// when the stream is dropped.
pub async fn bind(
    addr: SocketAddr,
    tls: Arc<ServerConfig>,
) -> std::io::Result<(
    SocketAddr,
    impl Stream<Item = Result<TlsStream<TcpStream>, std::io::Error>> + Send + 'static,
)> {
    let listener = TcpListener::bind(addr).await?;
    let local = listener.local_addr()?;
    let acceptor = TlsAcceptor::from(tls);
    let (tx, rx) = mpsc::channel(64);
    tokio::spawn(async move {
        loop {
            tokio::select! {
                accepted = listener.accept() => match accepted {
                    Ok((tcp, peer)) => {
                        let _ = tcp.set_nodelay(true);
                        let acceptor = acceptor.clone();
                        let tx = tx.clone();
                        tokio::spawn(async move {
                            match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                                Ok(Ok(stream)) => {
                                    let _ = tx.send(Ok(stream)).await;
                                }
                                Ok(Err(error)) => {
                                    tracing::warn!(%peer, %error, "node API TLS handshake refused");
                                }
                                Err(_) => tracing::warn!(%peer, "node API TLS handshake timed out"),
                            }
                        });
                    }
                    Err(error) => {
                        // Out of file descriptors and the like: back off, keep serving.
                        tracing::warn!(%error, "node API accept failed");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                },
                () = tx.closed() => break,
            }
        }
    });
    Ok((local, ReceiverStream::new(rx)))
}
