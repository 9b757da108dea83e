//! The bundle endpoint: this trust domain's bundle, as SPIFFE bundle JSON,
//! over HTTPS on `[federation.bundle_endpoint] address`. `https_web`
//! presents the operator's certificate, `https_spiffe` the issuer's own
//! X509-SVID (`spiffe://<td>/hallmark/server`, minted by its CA and renewed
//! at half-life or when the CA changes, so the endpoint follows rotation).
//!
//! Every path answers `GET` and `HEAD` with the bundle (as SPIRE's does;
//! the path is the operator's to choose in the URL they hand out); other
//! methods get 405. No client authentication, as the standard requires.
//! Runs on the same hardened HTTP/1.1 server as `/metrics` and OIDC.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{ALLOW, CACHE_CONTROL, CONTENT_TYPE, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use rustls::ServerConfig as TlsServerConfig;
use tokio_rustls::TlsAcceptor;

use hallmark_ca::bundle::SharedBundle;
use hallmark_metrics::Endpoint;
use hallmark_metrics::http::serve_http;

use super::config::{BundleEndpointSettings, EndpointTls};
use crate::authority::Authority;

/// Longest time a client may cache the bundle.
const MAX_CACHE: Duration = Duration::from_secs(300);

/// Serves the bundle until `shutdown` resolves.
pub async fn serve(
    settings: &BundleEndpointSettings,
    authority: &Authority,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<Endpoint> {
    let config = match &settings.tls {
        EndpointTls::Web { config, .. } => config.clone(),
        EndpointTls::Spiffe => spiffe_tls(authority)?,
    };
    let bundle = authority.shared_bundle();
    let handler = Arc::new(move |request: &Request<Incoming>| respond(&bundle, request.method()));
    serve_http(
        "federation",
        settings.address,
        Some(TlsAcceptor::from(config)),
        handler,
        shutdown,
    )
    .await
}

/// TLS with the issuer's own SVID, read from its resolver at each
/// handshake (so renewal needs no restart).
fn spiffe_tls(authority: &Authority) -> std::io::Result<Arc<TlsServerConfig>> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = TlsServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(std::io::Error::other)?
        .with_no_client_auth()
        .with_cert_resolver(authority.server_cert());
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

fn respond(bundle: &SharedBundle, method: &Method) -> Response<Full<Bytes>> {
    if method != Method::GET && method != Method::HEAD {
        let mut response = Response::new(Full::new(Bytes::from_static(b"use GET\n")));
        *response.status_mut() = StatusCode::METHOD_NOT_ALLOWED;
        response
            .headers_mut()
            .insert(ALLOW, HeaderValue::from_static("GET, HEAD"));
        return response;
    }
    let bundle = bundle.load();
    let max_age = bundle.refresh_hint.min(MAX_CACHE).as_secs();
    let mut response = Response::new(Full::new(Bytes::from(bundle.to_jwks())));
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    if let Ok(cache) = HeaderValue::from_str(&format!("public, max-age={max_age}")) {
        headers.insert(CACHE_CONTROL, cache);
    }
    response
}
