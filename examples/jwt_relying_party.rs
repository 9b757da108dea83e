//! `jwt_relying_party`: an HTTP service that accepts only JWT-SVIDs for its
//! audience whose Hallmark binding names an approved model, and a caller
//! that presents its own.
//!
//! The service validates tokens itself, against the trust domain's JWT keys
//! that it follows from the agent ([`JwtBundleSource`]): signature, expiry,
//! audience, then the policy on the `hallmark` claim. It also follows the
//! kill switch ([`Revocations`]): a killed identity's tokens are refused at
//! once, although they stay cryptographically valid until they expire.
//! Answers: `200` with who called, `401` for a token that is not a valid
//! JWT-SVID for this audience, `403` for a valid one the policy refuses
//! (the body says why).
//!
//! The caller side fetches JWT-SVIDs with the `spiffe` crate, as any SPIFFE
//! workload would: one for every identity the agent grants it, plus one for
//! another audience, and shows each answer.
//!
//! ```sh
//! SPIFFE_ENDPOINT_SOCKET=unix:///tmp/hallmark/agent/api.sock \
//!   cargo run --example jwt_relying_party -- --model demo-model --model-version ">= 2.0"
//! ```
//!
//! The agent must know a gold image for this binary
//! (`target/debug/examples/jwt_relying_party`): see docs/relying-parties.md, "Examples".

use std::net::SocketAddr;
use std::time::{Duration, SystemTime};

use anyhow::Context as _;
use http_body_util::{BodyExt as _, Empty, Full};
use hyper::body::Bytes;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

use hallmark::ca::bundle::SharedBundle;
use hallmark::ca::id::TrustDomain;
use hallmark::policy::{Policy, PolicyError};
use hallmark::revocation::Revocations;
use hallmark::version::VersionReq;
use hallmark::workload::{Endpoint, JwtBundleSource};

/// The service: where it listens, and its task.
pub struct Service {
    /// Loopback address.
    pub addr: SocketAddr,
    task: JoinHandle<()>,
    _keys: JwtBundleSource,
}

impl Service {
    /// Follows the JWT keys of `trust_domain` and the revocations from the
    /// agent at `endpoint`, and serves `GET /` on an ephemeral loopback port,
    /// accepting tokens for `audience` that `policy` allows.
    pub async fn start(
        endpoint: &Endpoint,
        trust_domain: TrustDomain,
        audience: String,
        policy: Policy,
    ) -> anyhow::Result<Service> {
        let keys = JwtBundleSource::start(endpoint, trust_domain)
            .await
            .context("cannot fetch the JWT bundle")?;
        let revocations = Revocations::watch(endpoint)
            .await
            .context("cannot follow the agent's revocations")?;
        let policy = policy.with_revocations(revocations);
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let bundle = keys.bundle();
        let task = tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let (bundle, policy, audience) = (bundle.clone(), policy.clone(), audience.clone());
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |request| {
                        let answer = authorize(&request, &bundle, &policy, &audience);
                        async move { Ok::<_, std::convert::Infallible>(answer) }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(tcp), service)
                        .await;
                });
            }
        });
        Ok(Service {
            addr,
            task,
            _keys: keys,
        })
    }

    /// Stops serving.
    pub fn stop(self) {
        self.task.abort();
    }
}

/// The service's decision for one request.
fn authorize(
    request: &Request<hyper::body::Incoming>,
    bundle: &SharedBundle,
    policy: &Policy,
    audience: &str,
) -> Response<Full<Bytes>> {
    let token = request
        .headers()
        .get(hyper::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    let Some(token) = token else {
        return answer(
            StatusCode::UNAUTHORIZED,
            "a JWT-SVID is required (Authorization: Bearer ...)".into(),
        );
    };
    match policy.verify_jwt(token, audience, &bundle.load(), SystemTime::now()) {
        Ok(caller) => {
            let model = caller
                .binding
                .as_ref()
                .and_then(|b| b.model.as_ref())
                .map_or_else(String::new, |m| {
                    format!(" running {} {}", m.name, m.version)
                });
            answer(StatusCode::OK, format!("hello {}{model}", caller.spiffe_id))
        }
        Err(PolicyError::Denied { spiffe_id, reason }) => answer(
            StatusCode::FORBIDDEN,
            format!("{spiffe_id} is not allowed: {reason}"),
        ),
        Err(invalid) => answer(
            StatusCode::UNAUTHORIZED,
            format!("invalid JWT-SVID: {invalid}"),
        ),
    }
}

fn answer(status: StatusCode, body: String) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response
}

/// Calls the service at `addr` with `token`: the status and the body.
pub async fn call(addr: SocketAddr, token: &str) -> anyhow::Result<(StatusCode, String)> {
    let tcp = TcpStream::connect(addr).await?;
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(tcp)).await?;
    let driver = tokio::spawn(connection);
    let request = Request::get("/")
        .header(hyper::header::HOST, addr.to_string())
        .header(hyper::header::AUTHORIZATION, format!("Bearer {token}"))
        .body(Empty::<Bytes>::new())?;
    let response = sender.send_request(request).await?;
    let status = response.status();
    let body = response.into_body().collect().await?.to_bytes();
    driver.abort();
    Ok((status, String::from_utf8_lossy(&body).into_owned()))
}

/// One call of the demo.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// The identity whose token was sent.
    pub spiffe_id: String,
    /// The audience the token was fetched for.
    pub audience: String,
    /// The service's answer.
    pub status: StatusCode,
    /// Its body.
    pub body: String,
}

/// The caller side: fetches a JWT-SVID for `audience` for every identity
/// the agent grants this workload, and one for `other_audience` (the
/// service must refuse it), and calls the service with each.
pub async fn call_with_own_tokens(
    endpoint: &Endpoint,
    addr: SocketAddr,
    audience: &str,
    other_audience: &str,
) -> anyhow::Result<Vec<Outcome>> {
    let client = spiffe::WorkloadApiClient::connect_to(endpoint.address())
        .await
        .context("cannot reach the Workload API")?;
    let mut outcomes = Vec::new();
    let mut tokens = Vec::new();
    for svid in client
        .fetch_all_jwt_svids([audience], None)
        .await
        .context("the agent refused FetchJWTSVID")?
    {
        tokens.push((
            svid.spiffe_id().to_string(),
            audience,
            svid.token().to_owned(),
        ));
    }
    let other = client
        .fetch_jwt_svid([other_audience], None)
        .await
        .context("the agent refused FetchJWTSVID")?;
    tokens.push((
        other.spiffe_id().to_string(),
        other_audience,
        other.token().to_owned(),
    ));
    for (spiffe_id, audience, token) in tokens {
        let (status, body) = call(addr, &token).await?;
        outcomes.push(Outcome {
            spiffe_id,
            audience: audience.to_owned(),
            status,
            body,
        });
    }
    Ok(outcomes)
}

#[derive(Debug, clap::Parser)]
struct Args {
    /// The trust domain whose tokens the service accepts.
    #[arg(long, default_value = "example.org")]
    trust_domain: String,
    /// The service's audience.
    #[arg(long, default_value = "payments")]
    audience: String,
    /// The approved model.
    #[arg(long, default_value = "demo-model")]
    model: String,
    /// Its approved versions.
    #[arg(long, default_value = ">= 2.0")]
    model_version: String,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = <Args as clap::Parser>::parse();
    let address = std::env::var("SPIFFE_ENDPOINT_SOCKET")
        .context("set SPIFFE_ENDPOINT_SOCKET=unix:///path/to/the/agent/api.sock")?;
    let endpoint = Endpoint::parse(&address)?;
    let version: VersionReq = args.model_version.parse()?;
    let policy = Policy::model(&args.model, version);
    let service = Service::start(
        &endpoint,
        TrustDomain::new(&args.trust_domain)?,
        args.audience.clone(),
        policy.clone(),
    )
    .await?;
    println!(
        "service on http://{} accepts JWT-SVIDs for audience {:?} with: {policy}, not revoked",
        service.addr, args.audience
    );
    let outcomes = tokio::time::timeout(
        Duration::from_secs(30),
        call_with_own_tokens(
            &endpoint,
            service.addr,
            &args.audience,
            "some-other-service",
        ),
    )
    .await
    .context("the calls did not finish within 30 s")??;
    for o in &outcomes {
        println!(
            "{} (token for {:?}): {} {}",
            o.spiffe_id,
            o.audience,
            o.status.as_u16(),
            o.body
        );
    }
    service.stop();
    Ok(())
}
