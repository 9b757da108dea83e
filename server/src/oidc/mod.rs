//! The issuer's OpenID Connect endpoint, so JWT-SVIDs work with relying
//! parties outside SPIFFE: cloud workload identity federation (AWS STS,
//! GCP, Azure) and generic JWT libraries (PyJWT's `PyJWKClient`).
//!
//! Configured by `[oidc]` (off by default, see [`OidcSection`]), it serves
//! two documents, both computed from memory:
//! - `GET <path>/.well-known/openid-configuration`: the discovery document
//!   ([`discovery_document`]);
//! - `GET <path>/keys`: the JWT-SVID signing keys as a plain JWK set
//!   ([`Bundle::oidc_jwks`](hallmark_ca::bundle::Bundle::oidc_jwks)):
//!   active, next and retired keys whose tokens may still be alive;
//!
//! where `<path>` is the issuer's path (often empty); both are also served
//! without it, for a proxy that strips it. `HEAD` works as `GET`; any other
//! method is 405, any other path 404. Like `/metrics`, requests are neither
//! audited nor counted: the documents are public and fetching them changes
//! nothing.
//!
//! ```
//! use hallmark_ca::jwt::JwtIssuer;
//! use hallmark_server::oidc::discovery_document;
//! let issuer = JwtIssuer::new("https://oidc.example.com")?;
//! let doc = discovery_document(&issuer, "https://oidc.example.com/keys");
//! assert_eq!(doc["issuer"], "https://oidc.example.com");
//! assert_eq!(doc["id_token_signing_alg_values_supported"][0], "ES256");
//! # Ok::<(), hallmark_ca::jwt::IssuerError>(())
//! ```

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{ALLOW, CACHE_CONTROL, CONTENT_TYPE, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use serde_json::{Value, json};

use hallmark_ca::bundle::SharedBundle;
use hallmark_ca::jwt::{JWT_SVID_ALG, JwtIssuer};
use hallmark_metrics::Endpoint;
use hallmark_metrics::http::serve_http;

mod config;
#[cfg(test)]
mod tests;

pub use config::{OidcSection, OidcSettings, OidcTls};
pub(crate) use config::{resolve, tls_server_config};

/// The discovery document's path under the issuer (OpenID Connect
/// Discovery 1.0, section 4).
pub const DISCOVERY_PATH: &str = "/.well-known/openid-configuration";

/// The JWKS path under the issuer (the default `jwks_uri`).
pub const JWKS_PATH: &str = "/keys";

/// `Content-Type` of the JWKS (RFC 7517, section 8.5.1).
const JWKS_CONTENT_TYPE: &str = "application/jwk-set+json";

/// Longest time a client may cache either document: keys are published
/// well before they sign (at half of the previous key's life), so five
/// minutes of staleness never hides a key that signs.
const MAX_CACHE: Duration = Duration::from_secs(300);

/// The discovery document: what a relying party needs to validate
/// JWT-SVIDs as OpenID Connect ID tokens (`issuer`, `jwks_uri`, the
/// signing algorithm), plus the members the standard requires of every
/// provider. There is no authorization endpoint: tokens come from the
/// SPIFFE Workload API, not from a browser flow.
pub fn discovery_document(issuer: &JwtIssuer, jwks_uri: &str) -> Value {
    json!({
        "issuer": issuer.as_str(),
        "jwks_uri": jwks_uri,
        "response_types_supported": ["id_token"],
        "subject_types_supported": ["public"],
        "id_token_signing_alg_values_supported": [JWT_SVID_ALG],
        "claims_supported": ["sub", "aud", "exp", "iat", "iss", "jti"],
    })
}

/// Binds `addr` (`settings.listen` in the daemon) and serves the documents
/// until `shutdown` resolves. The JWKS is read from `bundle` at each
/// request, so rotation shows at once.
pub async fn serve(
    addr: SocketAddr,
    settings: &OidcSettings,
    bundle: SharedBundle,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<Endpoint> {
    let documents = Arc::new(Documents::new(settings, bundle));
    let tls = settings
        .tls
        .as_ref()
        .map(|t| tokio_rustls::TlsAcceptor::from(t.config.clone()));
    let handler = Arc::new(move |request: &Request<Incoming>| {
        documents.respond(request.method(), request.uri().path())
    });
    serve_http("oidc", addr, tls, handler, shutdown).await
}

/// What the endpoint serves.
struct Documents {
    /// The discovery document, serialized once.
    discovery: Bytes,
    bundle: SharedBundle,
    /// The issuer's path (`""` or `/a/b`).
    prefix: String,
}

/// Which document a path names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Document {
    Discovery,
    Jwks,
}

impl Documents {
    fn new(settings: &OidcSettings, bundle: SharedBundle) -> Documents {
        let discovery = discovery_document(&settings.issuer, &settings.jwks_uri).to_string();
        Documents {
            discovery: Bytes::from(discovery),
            bundle,
            prefix: settings.issuer.path().to_owned(),
        }
    }

    fn document(&self, path: &str) -> Option<Document> {
        let relative = path.strip_prefix(self.prefix.as_str());
        [Some(path), relative]
            .into_iter()
            .flatten()
            .find_map(|p| match p {
                DISCOVERY_PATH => Some(Document::Discovery),
                JWKS_PATH => Some(Document::Jwks),
                _ => None,
            })
    }

    fn respond(&self, method: &Method, path: &str) -> Response<Full<Bytes>> {
        let Some(document) = self.document(path) else {
            return text(
                StatusCode::NOT_FOUND,
                format!(
                    "not found: the endpoints are {0}{DISCOVERY_PATH} and {0}{JWKS_PATH}\n",
                    self.prefix
                ),
            );
        };
        if method != Method::GET && method != Method::HEAD {
            let mut response = text(StatusCode::METHOD_NOT_ALLOWED, "use GET\n".into());
            response
                .headers_mut()
                .insert(ALLOW, HeaderValue::from_static("GET, HEAD"));
            return response;
        }
        let bundle = self.bundle.load();
        let (body, content_type) = match document {
            Document::Discovery => (self.discovery.clone(), "application/json"),
            Document::Jwks => (Bytes::from(bundle.oidc_jwks()), JWKS_CONTENT_TYPE),
        };
        let max_age = bundle.refresh_hint.min(MAX_CACHE).as_secs();
        let mut response = Response::new(Full::new(body));
        let headers = response.headers_mut();
        headers.insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
        if let Ok(cache) = HeaderValue::from_str(&format!("public, max-age={max_age}")) {
            headers.insert(CACHE_CONTROL, cache);
        }
        response
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
