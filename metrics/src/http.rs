//! The small HTTP/1.1 server under the telemetry endpoint and the issuer's
//! OpenID Connect endpoint: GET-only documents computed in memory, for
//! clients that may misbehave. HTTP/1.1 only, one request per connection,
//! a deadline on the TLS handshake and the request head, a deadline on the
//! whole connection, and a cap on concurrent connections, so a slow or
//! hostile client cannot tie the daemon up. TLS (rustls) is optional.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio::task::JoinHandle;
use tokio_rustls::TlsAcceptor;

/// Most connections served at once; more are closed at accept.
const MAX_CONNECTIONS: usize = 32;
/// Deadline for a client to finish the TLS handshake and send its request head.
const HEADER_TIMEOUT: Duration = Duration::from_secs(5);
/// Deadline for one whole connection.
const CONNECTION_TIMEOUT: Duration = Duration::from_secs(10);

/// Answers one request. Runs on the connection's task, so it must be quick
/// (the documents served are built in memory).
pub type Handler = Arc<dyn Fn(&Request<Incoming>) -> Response<Full<Bytes>> + Send + Sync>;

/// A running endpoint.
#[derive(Debug)]
pub struct Endpoint {
    addr: SocketAddr,
    task: JoinHandle<()>,
}

impl Endpoint {
    /// The bound address (port 0 in the config picks a free one).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Waits until the accept loop has stopped (after the shutdown future
    /// passed to [`serve_http`] resolved).
    pub async fn stopped(self) {
        let _ = self.task.await;
    }
}

/// Binds `addr` and answers every request with `handler` until `shutdown`
/// resolves; over TLS when `tls` is given. `name` names the endpoint in
/// log messages (`metrics`, `oidc`).
pub async fn serve_http(
    name: &'static str,
    addr: SocketAddr,
    tls: Option<TlsAcceptor>,
    handler: Handler,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<Endpoint> {
    let listener = TcpListener::bind(addr).await?;
    let local = listener.local_addr()?;
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let task = tokio::spawn(async move {
        tokio::pin!(shutdown);
        loop {
            let (tcp, peer) = tokio::select! {
                accepted = listener.accept() => match accepted {
                    Ok(accepted) => accepted,
                    Err(error) => {
                        // Out of file descriptors and the like: back off.
                        tracing::warn!(%error, endpoint = name, "accept failed");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                },
                () = &mut shutdown => return,
            };
            let Ok(slot) = slots.clone().try_acquire_owned() else {
                tracing::debug!(%peer, endpoint = name, "busy: connection closed");
                continue;
            };
            let handler = handler.clone();
            let tls = tls.clone();
            tokio::spawn(async move {
                let served = tokio::time::timeout(CONNECTION_TIMEOUT, async move {
                    match tls {
                        None => serve_connection(tcp, handler).await,
                        Some(acceptor) => {
                            let stream = tokio::time::timeout(HEADER_TIMEOUT, acceptor.accept(tcp))
                                .await
                                .map_err(|_| "tls handshake timed out".to_owned())?
                                .map_err(|e| format!("tls handshake failed: {e}"))?;
                            serve_connection(stream, handler).await
                        }
                    }
                })
                .await;
                match served {
                    Ok(Ok(())) => {}
                    Ok(Err(error)) => {
                        tracing::debug!(%peer, endpoint = name, %error, "connection failed");
                    }
                    Err(_) => tracing::debug!(%peer, endpoint = name, "connection timed out"),
                }
                drop(slot);
            });
        }
    });
    Ok(Endpoint { addr: local, task })
}

async fn serve_connection<S>(stream: S, handler: Handler) -> Result<(), String>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let service = service_fn(move |request| {
        let response = handler(&request);
        async move { Ok::<_, Infallible>(response) }
    });
    http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_TIMEOUT)
        .keep_alive(false)
        .serve_connection(TokioIo::new(stream), service)
        .await
        .map_err(|e| e.to_string())
}
