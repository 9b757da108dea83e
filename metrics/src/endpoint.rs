//! The telemetry HTTP endpoint: `GET /metrics` (OpenMetrics text from a
//! `prometheus-client` registry), `GET /live` and `GET /ready`, on the
//! hardened HTTP/1.1 server of [`crate::http`].
//!
//! It is meant for a local or cluster-internal scraper and carries no
//! secrets (metric labels are closed sets: no SPIFFE IDs, no reasons as
//! free text).

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{ACCEPT, ALLOW, CONTENT_TYPE, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use prometheus_client::registry::Registry;

use crate::exposition;
use crate::http::{Endpoint, serve_http};

/// The OpenMetrics text exposition format, as `prometheus-client` writes it.
const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// What `/live` and `/ready` report; each daemon says what they mean for it.
pub trait Health: Send + Sync + std::fmt::Debug + 'static {
    /// `Ok` when the daemon can do its job now; otherwise what it waits for.
    fn ready(&self) -> Result<(), String>;

    /// `Ok` while the daemon is not wedged (a restart would not help
    /// otherwise). By default: it answers, so it is live.
    fn live(&self) -> Result<(), String> {
        Ok(())
    }
}

/// Binds `addr` and serves the endpoint (plain HTTP) until `shutdown` resolves.
pub async fn serve(
    addr: SocketAddr,
    registry: Arc<Registry>,
    health: Arc<dyn Health>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<Endpoint> {
    let handler =
        Arc::new(move |request: &Request<Incoming>| respond(request, &registry, &*health));
    serve_http("metrics", addr, None, handler, shutdown).await
}

/// The answer to one request.
fn respond(
    request: &Request<Incoming>,
    registry: &Registry,
    health: &dyn Health,
) -> Response<Full<Bytes>> {
    let path = request.uri().path();
    if !matches!(path, "/metrics" | "/live" | "/ready") {
        return text(
            StatusCode::NOT_FOUND,
            "not found: the endpoints are /metrics, /live and /ready\n".into(),
        );
    }
    if request.method() != Method::GET && request.method() != Method::HEAD {
        let mut response = text(StatusCode::METHOD_NOT_ALLOWED, "use GET\n".into());
        response
            .headers_mut()
            .insert(ALLOW, HeaderValue::from_static("GET, HEAD"));
        return response;
    }
    match path {
        "/metrics" => {
            let mut body = String::with_capacity(8 * 1024);
            match prometheus_client::encoding::text::encode_registry(&mut body, registry) {
                Ok(()) => {
                    exposition::process_metrics(&mut body);
                    let openmetrics = exposition::wants_openmetrics(
                        request.headers().get(ACCEPT).and_then(|v| v.to_str().ok()),
                    );
                    let (body, content_type) = if openmetrics {
                        body.push_str("# EOF\n");
                        (body, OPENMETRICS)
                    } else {
                        (
                            exposition::to_prometheus_text(&body),
                            exposition::PROMETHEUS_TEXT,
                        )
                    };
                    let mut response = Response::new(Full::new(Bytes::from(body)));
                    response
                        .headers_mut()
                        .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
                    response
                }
                Err(_) => text(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "metrics could not be encoded\n".into(),
                ),
            }
        }
        "/live" => health_answer(health.live(), "live"),
        _ => health_answer(health.ready(), "ready"),
    }
}

fn health_answer(state: Result<(), String>, word: &str) -> Response<Full<Bytes>> {
    match state {
        Ok(()) => text(StatusCode::OK, format!("{word}\n")),
        Err(reason) => text(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not {word}: {reason}\n"),
        ),
    }
}

fn text(status: StatusCode, body: String) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use std::sync::atomic::{AtomicBool, Ordering};

    use prometheus_client::metrics::counter::Counter;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpStream;

    use super::*;

    #[derive(Debug, Default)]
    struct Flag(AtomicBool);

    impl Health for Flag {
        fn ready(&self) -> Result<(), String> {
            if self.0.load(Ordering::SeqCst) {
                Ok(())
            } else {
                Err("store not open".into())
            }
        }
    }

    /// One raw HTTP/1.1 request; the status line's code and the body.
    async fn get(addr: SocketAddr, method: &str, path: &str) -> (u16, String) {
        let mut tcp = TcpStream::connect(addr).await.unwrap();
        tcp.write_all(format!("{method} {path} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes())
            .await
            .unwrap();
        let mut raw = String::new();
        tcp.read_to_string(&mut raw).await.unwrap();
        let code = raw[9..12].parse().unwrap();
        let body = raw.split_once("\r\n\r\n").unwrap().1.to_owned();
        (code, body)
    }

    async fn get_accepting(addr: SocketAddr, path: &str, accept: &str) -> (u16, String) {
        let mut tcp = TcpStream::connect(addr).await.unwrap();
        tcp.write_all(
            format!("GET {path} HTTP/1.1\r\nHost: x\r\nAccept: {accept}\r\n\r\n").as_bytes(),
        )
        .await
        .unwrap();
        let mut raw = String::new();
        tcp.read_to_string(&mut raw).await.unwrap();
        let code = raw[9..12].parse().unwrap();
        let body = raw.split_once("\r\n\r\n").unwrap().1.to_owned();
        (code, body)
    }

    #[tokio::test]
    async fn serves_metrics_health_and_refuses_the_rest() {
        let counter: Counter = Counter::default();
        let mut registry = Registry::with_prefix("t");
        registry.register("things", "things done", counter.clone());
        counter.inc();
        let flag = Arc::new(Flag::default());
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let endpoint = serve(
            "127.0.0.1:0".parse().unwrap(),
            Arc::new(registry),
            flag.clone(),
            async move {
                let _ = stopped.await;
            },
        )
        .await
        .unwrap();
        let addr = endpoint.local_addr();

        // A scraper that asks for OpenMetrics gets it...
        let (code, body) = get_accepting(
            addr,
            "/metrics",
            "application/openmetrics-text;version=1.0.0",
        )
        .await;
        assert_eq!(code, 200);
        assert!(body.contains("t_things_total 1\n"), "{body}");
        assert!(body.contains("\nprocess_resident_memory_bytes "), "{body}");
        assert!(body.ends_with("# EOF\n"), "{body}");
        // ...anyone else the Prometheus text format.
        let (code, body) = get(addr, "GET", "/metrics").await;
        assert_eq!(code, 200);
        assert!(
            body.contains("# TYPE t_things_total counter\nt_things_total 1\n"),
            "{body}"
        );
        assert!(!body.contains("# EOF"), "{body}");
        assert_eq!(get(addr, "GET", "/live").await, (200, "live\n".into()));
        assert_eq!(
            get(addr, "GET", "/ready").await,
            (503, "not ready: store not open\n".into())
        );
        flag.0.store(true, Ordering::SeqCst);
        assert_eq!(get(addr, "GET", "/ready").await, (200, "ready\n".into()));
        assert_eq!(get(addr, "GET", "/").await.0, 404);
        assert_eq!(get(addr, "POST", "/metrics").await.0, 405);

        stop.send(()).unwrap();
        endpoint.stopped().await;
        assert!(
            TcpStream::connect(addr).await.is_err(),
            "the listener is closed after shutdown"
        );
    }
}
