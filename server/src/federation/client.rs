//! Fetching a bundle from a bundle endpoint over HTTPS (rustls, hyper's
//! HTTP/1.1 client), authenticated per the endpoint's profile: Web PKI
//! roots for `https_web`, an X509-SVID of the configured SPIFFE ID for
//! `https_spiffe`. Temporary and permanent redirects are followed (at most
//! [`MAX_REDIRECTS`], to URLs that are valid bundle endpoint URLs, with the
//! same authentication) and never remembered, as the standard recommends.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Limited};
use hyper::header::{ACCEPT, HOST, LOCATION};
use hyper::{Request, StatusCode};
use hyper_util::rt::TokioIo;
use rustls::ClientConfig;
use rustls::RootCertStore;
use rustls_pki_types::{CertificateDer, ServerName};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use hallmark_ca::bundle::{Bundle, SharedBundle};
use hallmark_ca::clock::Clock;
use hallmark_ca::id::SpiffeId;
use hallmark_ca::tls::{ClockTimeProvider, SpiffeServerVerifier};

use super::url::EndpointUrl;

/// Largest bundle document accepted.
pub const MAX_BUNDLE_BYTES: usize = 1024 * 1024;
/// Deadline for one fetch, redirects included.
pub const FETCH_TIMEOUT: Duration = Duration::from_secs(15);
/// Most redirects followed in one fetch.
pub const MAX_REDIRECTS: usize = 3;

/// Why a fetch failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FetchError {
    /// The TCP connection failed.
    #[error("cannot connect to {addr}: {source}")]
    Connect {
        /// `host:port`.
        addr: String,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// The TLS handshake failed: for https_spiffe, most often the endpoint
    /// presented another SPIFFE ID, or an SVID the bundle does not verify.
    #[error("tls handshake with {addr} failed: {reason}")]
    Tls {
        /// `host:port`.
        addr: String,
        /// The rustls error, spelled out.
        reason: String,
    },
    /// The host is not a DNS name or IP address.
    #[error("{0:?} is not a valid TLS server name")]
    ServerName(String),
    /// The HTTP exchange failed.
    #[error("http: {0}")]
    Http(String),
    /// The endpoint answered with another status than 200.
    #[error("the endpoint answered {0}")]
    Status(StatusCode),
    /// A redirect without a usable `Location`, or too many.
    #[error("redirect refused: {0}")]
    Redirect(String),
    /// The body was larger than [`MAX_BUNDLE_BYTES`].
    #[error("the bundle is larger than {MAX_BUNDLE_BYTES} bytes")]
    TooLarge,
    /// No answer within [`FETCH_TIMEOUT`].
    #[error("no answer within {}s", FETCH_TIMEOUT.as_secs())]
    Timeout,
    /// The TLS configuration could not be built.
    #[error("tls configuration: {0}")]
    Config(String),
}

/// How to authenticate the endpoint for one fetch.
#[derive(Clone)]
pub enum Verify {
    /// Web PKI against these roots (DER).
    Web(Arc<Vec<Vec<u8>>>),
    /// An X509-SVID of `id`, verified against `bundle` (the bundle of the
    /// ID's trust domain, as known now).
    Spiffe {
        /// The expected SPIFFE ID.
        id: SpiffeId,
        /// Its trust domain's bundle.
        bundle: Bundle,
    },
}

/// GETs the bundle document at `url`, following redirects; certificates
/// are checked at `clock`'s time.
pub async fn fetch(
    url: &EndpointUrl,
    verify: &Verify,
    clock: Arc<dyn Clock>,
) -> Result<Bytes, FetchError> {
    tokio::time::timeout(FETCH_TIMEOUT, fetch_following(url, verify, clock))
        .await
        .map_err(|_| FetchError::Timeout)?
}

async fn fetch_following(
    url: &EndpointUrl,
    verify: &Verify,
    clock: Arc<dyn Clock>,
) -> Result<Bytes, FetchError> {
    let config = Arc::new(client_config(verify, clock)?);
    let mut current = url.clone();
    for _ in 0..=MAX_REDIRECTS {
        match get(&current, config.clone()).await? {
            Answer::Body(body) => return Ok(body),
            Answer::Redirect(location) => {
                current = EndpointUrl::parse(&location)
                    .map_err(|reason| FetchError::Redirect(format!("to {location:?}: {reason}")))?;
                tracing::debug!(from = %url, to = %current, "bundle endpoint redirected");
            }
        }
    }
    Err(FetchError::Redirect(format!(
        "more than {MAX_REDIRECTS} redirects"
    )))
}

enum Answer {
    Body(Bytes),
    Redirect(String),
}

async fn get(url: &EndpointUrl, config: Arc<ClientConfig>) -> Result<Answer, FetchError> {
    let addr = format!("{}:{}", url.host_header_host(), url.port());
    let tcp = TcpStream::connect((url.host(), url.port()))
        .await
        .map_err(|source| FetchError::Connect {
            addr: addr.clone(),
            source,
        })?;
    let name = ServerName::try_from(url.host().to_owned())
        .map_err(|_| FetchError::ServerName(url.host().to_owned()))?;
    let tls = TlsConnector::from(config)
        .connect(name, tcp)
        .await
        .map_err(|e| FetchError::Tls {
            addr: addr.clone(),
            reason: tls_reason(&e),
        })?;
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
        .await
        .map_err(|e| FetchError::Http(e.to_string()))?;
    let driver = tokio::spawn(async move {
        if let Err(error) = connection.await {
            tracing::debug!(%error, "bundle endpoint connection ended");
        }
    });
    let request = Request::get(url.path())
        .header(HOST, url.host_header())
        .header(ACCEPT, "application/json")
        .body(Empty::<Bytes>::new())
        .map_err(|e| FetchError::Http(e.to_string()))?;
    let response = sender
        .send_request(request)
        .await
        .map_err(|e| FetchError::Http(e.to_string()));
    let answer = match response {
        Err(e) => Err(e),
        Ok(response) => {
            let status = response.status();
            if status.is_redirection() {
                match response
                    .headers()
                    .get(LOCATION)
                    .and_then(|l| l.to_str().ok())
                {
                    Some(location) => Ok(Answer::Redirect(location.to_owned())),
                    None => Err(FetchError::Redirect(format!("{status} without Location"))),
                }
            } else if status != StatusCode::OK {
                Err(FetchError::Status(status))
            } else {
                Limited::new(response.into_body(), MAX_BUNDLE_BYTES)
                    .collect()
                    .await
                    .map(|body| Answer::Body(body.to_bytes()))
                    .map_err(|e| {
                        if e.is::<http_body_util::LengthLimitError>() {
                            FetchError::TooLarge
                        } else {
                            FetchError::Http(e.to_string())
                        }
                    })
            }
        }
    };
    driver.abort();
    answer
}

fn client_config(verify: &Verify, clock: Arc<dyn Clock>) -> Result<ClientConfig, FetchError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder =
        ClientConfig::builder_with_details(provider, Arc::new(ClockTimeProvider::new(clock)))
            .with_safe_default_protocol_versions()
            .map_err(|e| FetchError::Config(e.to_string()))?;
    let mut config = match verify {
        Verify::Web(roots) => {
            let mut store = RootCertStore::empty();
            let (_, ignored) = store
                .add_parsable_certificates(roots.iter().map(|d| CertificateDer::from(d.clone())));
            if store.is_empty() {
                return Err(FetchError::Config(format!(
                    "none of the {ignored} endpoint CA certificates is usable"
                )));
            }
            builder.with_root_certificates(store).with_no_client_auth()
        }
        Verify::Spiffe { id, bundle } => {
            let expected = id.clone();
            let verifier = SpiffeServerVerifier::with_svid_authorizer(
                SharedBundle::new(bundle.clone()),
                Arc::new(move |svid| {
                    if svid.spiffe_id == expected {
                        Ok(())
                    } else {
                        Err(format!(
                            "the endpoint presented an X509-SVID for {}, expected {expected}",
                            svid.spiffe_id
                        )
                        .into())
                    }
                }),
            );
            builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(verifier))
                .with_no_client_auth()
        }
    };
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

/// The handshake error, with the reason a certificate was refused spelled
/// out (rustls' `Display` shows only the variant for some).
fn tls_reason(error: &std::io::Error) -> String {
    let Some(inner) = error
        .get_ref()
        .and_then(|e| e.downcast_ref::<rustls::Error>())
    else {
        return error.to_string();
    };
    match inner {
        rustls::Error::InvalidCertificate(rustls::CertificateError::Other(other)) => {
            format!("the endpoint's certificate was refused: {}", other.0)
        }
        rustls::Error::InvalidCertificate(rustls::CertificateError::UnknownIssuer) => {
            "the endpoint's certificate was refused: UnknownIssuer (it does not chain to the CAs it is checked against: for https_spiffe the bundle of the endpoint SPIFFE ID's trust domain, for https_web endpoint_ca or the system's CA file)".to_owned()
        }
        rustls::Error::InvalidCertificate(cert) => {
            format!("the endpoint's certificate was refused: {cert:?}")
        }
        other => other.to_string(),
    }
}

impl EndpointUrl {
    /// The host as written in `host:port` (IPv6 in brackets).
    fn host_header_host(&self) -> String {
        if self.host().contains(':') {
            format!("[{}]", self.host())
        } else {
            self.host().to_owned()
        }
    }
}
