//! The federation client against real HTTPS servers on loopback: a bundle
//! endpoint behind a temporary redirect is followed with the same Web PKI
//! check; a redirect to plain HTTP, a redirect loop, an error status, an
//! oversized body, and a certificate from another CA are refused with the
//! reason.

#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use tokio_rustls::TlsAcceptor;

use hallmark_ca::clock::SystemClock;
use hallmark_metrics::Endpoint;
use hallmark_metrics::http::serve_http;
use hallmark_server::federation::client::{FetchError, MAX_BUNDLE_BYTES, Verify, fetch};
use hallmark_server::federation::url::EndpointUrl;

/// A CA and a server configuration with a certificate for 127.0.0.1 it signed.
fn web_pki() -> (Vec<u8>, Arc<rustls::ServerConfig>) {
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let issuer = rcgen::Issuer::new(ca_params, ca_key);
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = rcgen::CertificateParams::new(vec!["127.0.0.1".to_owned()])
        .unwrap()
        .signed_by(&key, &issuer)
        .unwrap();
    let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(
        vec![cert.der().clone()],
        rustls_pki_types::PrivateKeyDer::try_from(key.serialize_der()).unwrap(),
    )
    .unwrap();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    (ca.der().to_vec(), Arc::new(config))
}

/// Serves `answer(path)` over TLS on a free loopback port.
async fn serve(
    tls: Arc<rustls::ServerConfig>,
    answer: impl Fn(&str) -> Response<Full<Bytes>> + Send + Sync + 'static,
) -> Endpoint {
    serve_http(
        "test",
        SocketAddr::from(([127, 0, 0, 1], 0)),
        Some(TlsAcceptor::from(tls)),
        Arc::new(move |request: &Request<Incoming>| answer(request.uri().path())),
        std::future::pending(),
    )
    .await
    .unwrap()
}

fn redirect(status: StatusCode, location: String) -> Response<Full<Bytes>> {
    Response::builder()
        .status(status)
        .header("Location", location)
        .body(Full::new(Bytes::new()))
        .unwrap()
}

#[tokio::test]
async fn redirects_are_followed_with_the_same_check_and_bad_answers_refused() {
    let (ca, tls) = web_pki();
    let bundle = r#"{"keys":[],"spiffe_sequence":1}"#;
    let target = serve(tls.clone(), move |path| match path {
        "/bundle.json" => Response::new(Full::new(Bytes::from(bundle))),
        "/huge" => Response::new(Full::new(Bytes::from(vec![b' '; MAX_BUNDLE_BYTES + 1]))),
        _ => {
            let mut r = Response::new(Full::new(Bytes::new()));
            *r.status_mut() = StatusCode::NOT_FOUND;
            r
        }
    })
    .await;
    let to = target.local_addr().port();
    let front = serve(tls.clone(), move |path| match path {
        "/moved" => redirect(
            StatusCode::TEMPORARY_REDIRECT,
            format!("https://127.0.0.1:{to}/bundle.json"),
        ),
        "/plain" => redirect(
            StatusCode::FOUND,
            format!("http://127.0.0.1:{to}/bundle.json"),
        ),
        _ => redirect(StatusCode::FOUND, "https://127.0.0.1:1/never".into()),
    })
    .await;
    let port = front.local_addr().port();
    let looping = serve(tls, |_| redirect(StatusCode::FOUND, "/loop".into())).await;
    let web = Verify::Web(Arc::new(vec![ca]));
    let clock = Arc::new(SystemClock);
    let url = |port: u16, path: &str| {
        EndpointUrl::parse(&format!("https://127.0.0.1:{port}{path}")).unwrap()
    };

    let body = fetch(&url(port, "/moved"), &web, clock.clone())
        .await
        .unwrap();
    assert_eq!(body, bundle.as_bytes());

    let err = fetch(&url(port, "/plain"), &web, clock.clone())
        .await
        .unwrap_err();
    assert!(matches!(err, FetchError::Redirect(_)), "{err}");
    assert!(err.to_string().contains("HTTPS"), "{err}");

    // A relative Location is not a bundle endpoint URL either.
    let err = fetch(&url(looping.local_addr().port(), "/"), &web, clock.clone())
        .await
        .unwrap_err();
    assert!(matches!(err, FetchError::Redirect(_)), "{err}");

    let err = fetch(&url(to, "/missing"), &web, clock.clone())
        .await
        .unwrap_err();
    assert_eq!(err.to_string(), "the endpoint answered 404 Not Found");

    let err = fetch(&url(to, "/huge"), &web, clock.clone())
        .await
        .unwrap_err();
    assert!(matches!(err, FetchError::TooLarge), "{err}");

    // Another CA's roots: the handshake is refused, with the reason.
    let (other_ca, _) = web_pki();
    let err = fetch(
        &url(to, "/bundle.json"),
        &Verify::Web(Arc::new(vec![other_ca])),
        clock,
    )
    .await
    .unwrap_err();
    assert!(matches!(err, FetchError::Tls { .. }), "{err}");
    // Both test CAs have the same (empty) name: webpki tries the other
    // CA's key and finds the signature bad.
    assert!(
        err.to_string()
            .contains("the endpoint's certificate was refused: BadSignature"),
        "{err}"
    );
}
