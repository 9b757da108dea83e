//! A small client of the agent's Workload API for relying parties: where
//! the socket is ([`Endpoint`]), and sources that follow the agent's
//! streams into the holders rustls and the verifiers read:
//!
//! - [`X509Source`]: this workload's own X.509-SVID (in a
//!   [`SvidCertResolver`] for rustls) and its trust domain's X.509 bundle (in
//!   a [`SharedBundle`] for the verifiers), both replaced as the agent rotates
//!   them, so one TLS config serves for the workload's whole life;
//! - [`JwtBundleSource`]: the trust domain's JWT-SVID keys, for validating
//!   tokens locally.
//!
//! Any SPIFFE client library works against the same socket (the `spiffe`
//! crate, go-spiffe, py-spiffe); these exist so the relying-party types of
//! this crate have their inputs without glue.
//!
//! ```no_run
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! use hallmark::workload::{Endpoint, SvidSelector, X509Source};
//! // In `main`: the address SPIFFE clients take from SPIFFE_ENDPOINT_SOCKET.
//! let endpoint = Endpoint::parse("unix:///run/hallmark/agent/api.sock")?;
//! let source = X509Source::start(&endpoint, SvidSelector::Default).await?;
//! let svid = source.current().svid.expect("the first message carries an SVID");
//! println!("{} until {:?}", svid.spiffe_id, svid.not_after);
//! # Ok(())
//! # }
//! ```

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use hyper_util::rt::TokioIo;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tonic::transport::{Channel, Endpoint as TonicEndpoint};

use hallmark_agent::backoff::Backoff;
use hallmark_ca::bundle::{Bundle, BundleError, SharedBundle};
use hallmark_ca::id::{SpiffeId, TrustDomain};
use hallmark_ca::tls::SvidCertResolver;
use hallmark_proto::WORKLOAD_API_HEADER;
use hallmark_proto::workload::spiffe_workload_api_client::SpiffeWorkloadApiClient;
use hallmark_proto::workload::{JwtBundlesRequest, X509svidRequest, X509svidResponse};

use crate::binding::Binding;

/// Reconnection backoff after a stream ends or fails.
const BACKOFF_BASE: Duration = Duration::from_millis(200);
const BACKOFF_MAX: Duration = Duration::from_secs(5);

/// Where the agent's Workload API is: a Unix socket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    socket: PathBuf,
}

/// Why a Workload API source could not start or what it last saw.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum WorkloadError {
    /// The address is not `unix:///path` (or `unix:/path`).
    #[error("workload api address {0:?} is not unix:///path")]
    BadEndpoint(String),
    /// The agent answered with an error (`PermissionDenied`: no identity
    /// for this process; `Unavailable`: the agent cannot reach its issuer
    /// and has nothing cached).
    #[error("the workload api refused: {} ({:?})", .0.message(), .0.code())]
    Refused(#[source] tonic::Status),
    /// The agent ended the stream without a message.
    #[error("the workload api closed the stream without a message")]
    Closed,
    /// The SVID the selector names is not among those the agent returned.
    #[error("the agent returned no svid for {0}")]
    NoSuchSvid(SpiffeId),
    /// The agent sent material that does not parse.
    #[error("the workload api sent an unusable {what}: {reason}")]
    Malformed {
        /// What was unusable.
        what: &'static str,
        /// Why.
        reason: String,
    },
}

impl Endpoint {
    /// Parses the address SPIFFE clients read from `SPIFFE_ENDPOINT_SOCKET`:
    /// `unix:///path/to/api.sock` (or `unix:/path`).
    pub fn parse(address: &str) -> Result<Endpoint, WorkloadError> {
        let path = address
            .strip_prefix("unix://")
            .or_else(|| address.strip_prefix("unix:"))
            .filter(|p| p.starts_with('/'))
            .ok_or_else(|| WorkloadError::BadEndpoint(address.to_owned()))?;
        Ok(Endpoint {
            socket: PathBuf::from(path),
        })
    }

    /// The socket at `path`.
    pub fn from_path(path: impl Into<PathBuf>) -> Endpoint {
        Endpoint {
            socket: path.into(),
        }
    }

    /// The socket's path.
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// The address as `unix:///path` (what `SPIFFE_ENDPOINT_SOCKET` holds).
    pub fn address(&self) -> String {
        format!("unix://{}", self.socket.display())
    }

    /// A gRPC channel to the socket. It connects on first use and again
    /// after the agent restarts.
    pub fn channel(&self) -> Channel {
        let socket = self.socket.clone();
        TonicEndpoint::from_static("http://workload-api.invalid")
            .connect_timeout(Duration::from_secs(5))
            .connect_with_connector_lazy(tower::service_fn(move |_| {
                let socket = socket.clone();
                async move {
                    Ok::<_, std::io::Error>(TokioIo::new(
                        tokio::net::UnixStream::connect(socket).await?,
                    ))
                }
            }))
    }
}

/// `message` as a Workload API request: with the `workload.spiffe.io: true`
/// header the agent requires of every call.
pub fn request<T>(message: T) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request.metadata_mut().insert(
        WORKLOAD_API_HEADER,
        tonic::metadata::MetadataValue::from_static("true"),
    );
    request
}

/// Which of the workload's SVIDs a source follows, when several gold
/// images match it.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum SvidSelector {
    /// The first one the agent lists (the standard's default SVID).
    Default,
    /// The one with this SPIFFE ID.
    SpiffeId(SpiffeId),
}

/// One X.509-SVID as an [`X509Source`] holds it (the key stays in the
/// source's resolver).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SvidInfo {
    /// Its SPIFFE ID.
    pub spiffe_id: SpiffeId,
    /// Its serial, lowercase hex.
    pub serial: String,
    /// Its expiry.
    pub not_after: SystemTime,
    /// Its Hallmark binding (`None` from an issuer that sets none).
    pub binding: Option<Binding>,
    /// The certificate chain, leaf first (DER).
    pub chain: Vec<Vec<u8>>,
}

/// What an [`X509Source`] currently holds.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct X509State {
    /// The current SVID; `None` once the agent withdrew it.
    pub svid: Option<SvidInfo>,
    /// Changes applied so far (the first SVID is 1): it grows on every
    /// rotation, bundle change and withdrawal.
    pub updates: u64,
    /// Why the identity is gone, while it is (a kill, a changed binary or
    /// model: the agent's `PermissionDenied` message).
    pub withdrawn: Option<String>,
}

/// Follows this workload's `FetchX509SVID` stream: the selected SVID goes
/// into a [`SvidCertResolver`] (so rustls presents the current certificate
/// at every handshake) and its trust domain's bundle into a
/// [`SharedBundle`] (so the verifiers trust the current authorities).
///
/// When the agent withdraws the identity (`PermissionDenied`) the resolver
/// is cleared: new handshakes fail instead of presenting a revoked
/// certificate. The source reconnects with backoff and picks the identity
/// up again if it comes back (a lifted kill). Dropping every clone stops it.
#[derive(Debug, Clone)]
pub struct X509Source {
    resolver: Arc<SvidCertResolver>,
    bundle: SharedBundle,
    state: watch::Receiver<X509State>,
    _task: Arc<AbortOnDrop>,
}

impl X509Source {
    /// Connects and waits for the first SVID (an error if the agent refuses
    /// the first fetch, or the selected SVID is not in it).
    pub async fn start(
        endpoint: &Endpoint,
        selector: SvidSelector,
    ) -> Result<X509Source, WorkloadError> {
        let mut client = SpiffeWorkloadApiClient::new(endpoint.channel());
        let mut stream = client
            .fetch_x509svid(request(X509svidRequest {}))
            .await
            .map_err(WorkloadError::Refused)?
            .into_inner();
        let first = stream
            .message()
            .await
            .map_err(WorkloadError::Refused)?
            .ok_or(WorkloadError::Closed)?;
        let resolver = Arc::new(SvidCertResolver::new());
        let (svid, bundle) = select(&first, &selector)?;
        let shared = SharedBundle::new(bundle);
        install(&resolver, &first, &svid, &selector)?;
        let (tx, rx) = watch::channel(X509State {
            svid: Some(svid),
            updates: 1,
            withdrawn: None,
        });
        let task = tokio::spawn(follow_x509(
            client,
            stream,
            selector,
            Arc::clone(&resolver),
            shared.clone(),
            tx,
        ));
        Ok(X509Source {
            resolver,
            bundle: shared,
            state: rx,
            _task: Arc::new(AbortOnDrop(task)),
        })
    }

    /// The resolver holding the current SVID: give it to rustls as the
    /// client and server certificate resolver.
    pub fn resolver(&self) -> Arc<SvidCertResolver> {
        Arc::clone(&self.resolver)
    }

    /// The trust domain's current X.509 bundle.
    pub fn bundle(&self) -> SharedBundle {
        self.bundle.clone()
    }

    /// What the source holds now.
    pub fn current(&self) -> X509State {
        self.state.borrow().clone()
    }

    /// A receiver that sees every update (rotation, bundle change,
    /// withdrawal).
    pub fn updates(&self) -> watch::Receiver<X509State> {
        self.state.clone()
    }
}

/// Follows `FetchJWTBundles` for one trust domain into a [`SharedBundle`]
/// whose JWT authorities validate JWT-SVIDs locally (see
/// [`Policy::verify_jwt`](crate::policy::Policy::verify_jwt)). Reconnects
/// with backoff; until then the last keys stay in force. Dropping every
/// clone stops it.
#[derive(Debug, Clone)]
pub struct JwtBundleSource {
    bundle: SharedBundle,
    updates: watch::Receiver<u64>,
    _task: Arc<AbortOnDrop>,
}

impl JwtBundleSource {
    /// Connects and waits for the first bundle of `trust_domain`.
    pub async fn start(
        endpoint: &Endpoint,
        trust_domain: TrustDomain,
    ) -> Result<JwtBundleSource, WorkloadError> {
        let mut client = SpiffeWorkloadApiClient::new(endpoint.channel());
        let mut stream = client
            .fetch_jwt_bundles(request(JwtBundlesRequest {}))
            .await
            .map_err(WorkloadError::Refused)?
            .into_inner();
        let first = stream
            .message()
            .await
            .map_err(WorkloadError::Refused)?
            .ok_or(WorkloadError::Closed)?;
        let bundle = SharedBundle::new(jwt_bundle(&first.bundles, &trust_domain)?);
        let (tx, rx) = watch::channel(1);
        let task = tokio::spawn(follow_jwt(client, stream, trust_domain, bundle.clone(), tx));
        Ok(JwtBundleSource {
            bundle,
            updates: rx,
            _task: Arc::new(AbortOnDrop(task)),
        })
    }

    /// The trust domain's current bundle (JWT authorities filled in).
    pub fn bundle(&self) -> SharedBundle {
        self.bundle.clone()
    }

    /// A receiver counting bundle updates applied (the first is 1).
    pub fn updates(&self) -> watch::Receiver<u64> {
        self.updates.clone()
    }
}

/// Aborts a background task when the last handle goes away.
#[derive(Debug)]
pub(crate) struct AbortOnDrop(pub(crate) JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

async fn follow_x509(
    mut client: SpiffeWorkloadApiClient<Channel>,
    mut stream: tonic::Streaming<X509svidResponse>,
    selector: SvidSelector,
    resolver: Arc<SvidCertResolver>,
    bundle: SharedBundle,
    state: watch::Sender<X509State>,
) {
    let mut backoff = Backoff::new(BACKOFF_BASE, BACKOFF_MAX);
    loop {
        loop {
            match stream.message().await {
                Ok(Some(message)) => {
                    backoff.reset();
                    match select(&message, &selector).and_then(|(svid, b)| {
                        install(&resolver, &message, &svid, &selector).map(|()| (svid, b))
                    }) {
                        Ok((svid, new_bundle)) => {
                            bundle.store(new_bundle);
                            state.send_modify(|s| {
                                s.svid = Some(svid);
                                s.updates += 1;
                                s.withdrawn = None;
                            });
                        }
                        Err(error) => {
                            // The selected identity is not (or no longer) in
                            // the set: it was withdrawn.
                            withdraw(&resolver, &state, &error.to_string());
                        }
                    }
                }
                Ok(None) => break,
                Err(status) => {
                    if status.code() == tonic::Code::PermissionDenied {
                        withdraw(&resolver, &state, status.message());
                    }
                    break;
                }
            }
        }
        // Reconnect: the agent restarted, or the identity may come back.
        loop {
            tokio::time::sleep(backoff.next_delay()).await;
            match client.fetch_x509svid(request(X509svidRequest {})).await {
                Ok(response) => {
                    stream = response.into_inner();
                    break;
                }
                Err(status) if status.code() == tonic::Code::PermissionDenied => {
                    withdraw(&resolver, &state, status.message());
                }
                Err(_) => {}
            }
        }
    }
}

/// The identity is gone: nothing to present any more. Watchers are told
/// once, not again on every refused reconnection.
fn withdraw(resolver: &SvidCertResolver, state: &watch::Sender<X509State>, reason: &str) {
    resolver.clear();
    state.send_if_modified(|s| {
        if s.svid.is_none() && s.withdrawn.as_deref() == Some(reason) {
            return false;
        }
        s.svid = None;
        s.updates += 1;
        s.withdrawn = Some(reason.to_owned());
        true
    });
}

async fn follow_jwt(
    mut client: SpiffeWorkloadApiClient<Channel>,
    mut stream: tonic::Streaming<hallmark_proto::workload::JwtBundlesResponse>,
    trust_domain: TrustDomain,
    bundle: SharedBundle,
    updates: watch::Sender<u64>,
) {
    let mut backoff = Backoff::new(BACKOFF_BASE, BACKOFF_MAX);
    loop {
        while let Ok(Some(message)) = stream.message().await {
            backoff.reset();
            match jwt_bundle(&message.bundles, &trust_domain) {
                Ok(new_bundle) => {
                    bundle.store(new_bundle);
                    updates.send_modify(|n| *n += 1);
                }
                Err(error) => {
                    tracing::warn!(%error, "ignoring an unusable jwt bundle from the agent");
                }
            }
        }
        loop {
            tokio::time::sleep(backoff.next_delay()).await;
            if let Ok(response) = client
                .fetch_jwt_bundles(request(JwtBundlesRequest {}))
                .await
            {
                stream = response.into_inner();
                break;
            }
        }
    }
}

/// The selected SVID of a message, and its trust domain's bundle.
fn select(
    message: &X509svidResponse,
    selector: &SvidSelector,
) -> Result<(SvidInfo, Bundle), WorkloadError> {
    let svid = match selector {
        SvidSelector::Default => message.svids.first().ok_or(WorkloadError::Closed)?,
        SvidSelector::SpiffeId(id) => message
            .svids
            .iter()
            .find(|s| s.spiffe_id == id.as_str())
            .ok_or_else(|| WorkloadError::NoSuchSvid(id.clone()))?,
    };
    let malformed =
        |what: &'static str| move |reason: String| WorkloadError::Malformed { what, reason };
    let spiffe_id = SpiffeId::parse(&svid.spiffe_id).map_err(|e| WorkloadError::Malformed {
        what: "spiffe id",
        reason: e.to_string(),
    })?;
    let chain = split_der(&svid.x509_svid).map_err(malformed("certificate chain"))?;
    let leaf = chain
        .first()
        .ok_or_else(|| malformed("certificate chain")("empty".into()))?;
    let (serial, not_after) = crate::svid::leaf_facts(leaf).map_err(malformed("certificate"))?;
    let binding = Binding::from_cert(leaf).map_err(|e| WorkloadError::Malformed {
        what: "binding",
        reason: e.to_string(),
    })?;
    let mut bundle = Bundle::new(spiffe_id.trust_domain());
    bundle.x509_authorities = split_der(&svid.bundle).map_err(malformed("bundle"))?;
    Ok((
        SvidInfo {
            spiffe_id,
            serial,
            not_after,
            binding,
            chain,
        },
        bundle,
    ))
}

/// Puts the selected SVID's chain and key into the resolver.
fn install(
    resolver: &SvidCertResolver,
    message: &X509svidResponse,
    svid: &SvidInfo,
    selector: &SvidSelector,
) -> Result<(), WorkloadError> {
    let key = message
        .svids
        .iter()
        .find(|s| s.spiffe_id == svid.spiffe_id.as_str())
        .map(|s| s.x509_svid_key.as_slice())
        .ok_or_else(|| match selector {
            SvidSelector::SpiffeId(id) => WorkloadError::NoSuchSvid(id.clone()),
            SvidSelector::Default => WorkloadError::Closed,
        })?;
    resolver
        .set(svid.chain.clone(), key)
        .map_err(|e| WorkloadError::Malformed {
            what: "svid key",
            reason: e.to_string(),
        })
}

fn jwt_bundle(
    bundles: &std::collections::HashMap<String, Vec<u8>>,
    trust_domain: &TrustDomain,
) -> Result<Bundle, WorkloadError> {
    let jwks = bundles
        .get(trust_domain.id().as_str())
        .ok_or_else(|| WorkloadError::Malformed {
            what: "jwt bundle set",
            reason: format!("it has no bundle for {trust_domain}"),
        })?;
    Bundle::from_jwks(trust_domain.clone(), jwks).map_err(|e: BundleError| {
        WorkloadError::Malformed {
            what: "jwt bundle",
            reason: e.to_string(),
        }
    })
}

/// Splits concatenated DER certificates (the Workload API's chain and
/// bundle fields).
pub(crate) fn split_der(mut der: &[u8]) -> Result<Vec<Vec<u8>>, String> {
    let mut out = Vec::new();
    while !der.is_empty() {
        let (rest, _) = x509_parser::parse_x509_certificate(der).map_err(|e| e.to_string())?;
        let used = der.len() - rest.len();
        out.push(der[..used].to_vec());
        der = rest;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_are_unix_socket_addresses() {
        let e = Endpoint::parse("unix:///run/hallmark/api.sock").unwrap();
        assert_eq!(e.socket(), Path::new("/run/hallmark/api.sock"));
        assert_eq!(e.address(), "unix:///run/hallmark/api.sock");
        assert_eq!(
            Endpoint::parse("unix:/tmp/a.sock").unwrap().socket(),
            Path::new("/tmp/a.sock")
        );
        for bad in ["tcp://127.0.0.1:1", "/tmp/a.sock", "unix://relative", ""] {
            assert!(
                matches!(Endpoint::parse(bad), Err(WorkloadError::BadEndpoint(_))),
                "{bad}"
            );
        }
    }

    #[test]
    fn requests_carry_the_security_header() {
        let r = request(X509svidRequest {});
        assert_eq!(r.metadata().get(WORKLOAD_API_HEADER).unwrap(), "true");
    }
}
