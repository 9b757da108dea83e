//! `mtls`: two workloads talk mutual TLS with their Hallmark X.509-SVIDs,
//! each authorizing the other by SPIFFE ID and by the model its binding
//! names, while the agent rotates their certificates underneath.
//!
//! Both sides fetch their SVIDs from the agent ([`X509Source`]: the current
//! certificate in a rustls resolver, the trust bundle in a shared holder the
//! verifiers read), and both follow the kill switch ([`Revocations`]). The
//! client keeps a request loop going across rotations: when its SVID
//! rotates, or the server's certificate is about to expire, it opens a new
//! connection with the current certificates and carries on; the server
//! closes a connection when the client certificate it was opened with
//! expires. Session resumption is off on both sides, so every connection
//! proves its current certificate (and is checked against the current
//! revocations).
//!
//! ```sh
//! SPIFFE_ENDPOINT_SOCKET=unix:///tmp/hallmark/agent/api.sock \
//!   cargo run --example mtls -- --seconds 20
//! ```
//!
//! This binary plays both workloads (two tasks, one SVID each), so the
//! agent must know two gold images for it, `spiffe://example.org/mtls-server`
//! and `spiffe://example.org/mtls-client`, both binding the model
//! `demo-model` at 2.0 or later: see docs/relying-parties.md, "Examples".

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime};

use anyhow::Context as _;
use rustls_pki_types::ServerName;
use tokio::io::{AsyncBufReadExt as _, AsyncWriteExt as _, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

use hallmark::ca::id::SpiffeId;
use hallmark::policy::{Policy, PolicyError};
use hallmark::revocation::Revocations;
use hallmark::svid::{Credential, Identity, peer_identity};
use hallmark::version::VersionReq;
use hallmark::workload::{Endpoint, SvidSelector, X509Source};

/// How long a request may take before the connection counts as broken.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// Reconnect this long before the server's certificate expires.
const EXPIRY_MARGIN: Duration = Duration::from_secs(1);

/// The two workloads and what each requires of the other.
#[derive(Debug, Clone)]
pub struct PairOptions {
    /// The agent's Workload API.
    pub endpoint: Endpoint,
    /// The server workload's SPIFFE ID.
    pub server_id: SpiffeId,
    /// The client workload's SPIFFE ID.
    pub client_id: SpiffeId,
    /// The model both must be bound to.
    pub model: String,
    /// Its required version.
    pub model_version: VersionReq,
    /// Pause between requests.
    pub interval: Duration,
    /// When to stop.
    pub until: Until,
    /// Print what happens.
    pub verbose: bool,
}

/// When the client loop stops: once it made `exchanges` requests and saw
/// both sides rotate `rotations` times, or at `deadline`.
#[derive(Debug, Clone, Copy)]
pub struct Until {
    /// Requests answered.
    pub exchanges: u64,
    /// Rotations seen on each side (new client SVIDs used, new server
    /// certificates met).
    pub rotations: usize,
    /// The latest stop.
    pub deadline: Duration,
}

/// What the client loop saw.
#[derive(Debug, Clone, Default)]
pub struct Report {
    /// Requests answered.
    pub exchanges: u64,
    /// Requests that failed (each one is retried on a new connection).
    pub failures: u64,
    /// Connections opened.
    pub connections: u64,
    /// Serials of the client SVIDs the client connected with, in order.
    pub client_serials: Vec<String>,
    /// Serials of the server certificates the client met, in order.
    pub server_serials: Vec<String>,
    /// The server as the client verified it (last connection).
    pub server: Option<Identity>,
    /// The clients the server accepted, in order.
    pub accepted: Vec<Identity>,
    /// Handshakes the server refused, with the reason.
    pub refused: Vec<String>,
    /// The deadline ended the loop before its goal was reached.
    pub deadline_hit: bool,
}

/// What the server records.
#[derive(Debug, Default)]
struct ServerLog {
    accepted: Vec<Identity>,
    refused: Vec<String>,
}

/// The server workload: accepts mutual TLS from clients `clients` allows.
pub struct Server {
    /// Where it listens (loopback).
    pub addr: SocketAddr,
    log: Arc<Mutex<ServerLog>>,
    task: JoinHandle<()>,
    _source: X509Source,
}

impl Server {
    /// Fetches the server's SVID and listens on an ephemeral loopback port.
    pub async fn start(
        endpoint: &Endpoint,
        own_id: SpiffeId,
        clients: Policy,
        verbose: bool,
    ) -> anyhow::Result<Server> {
        let source = X509Source::start(endpoint, SvidSelector::SpiffeId(own_id))
            .await
            .context("the server workload has no SVID")?;
        let mut config = rustls::ServerConfig::builder_with_provider(provider())
            .with_protocol_versions(&[&rustls::version::TLS13])?
            .with_client_cert_verifier(clients.client_verifier(source.bundle()))
            .with_cert_resolver(source.resolver());
        // No resumption: a resumed session would skip the client certificate
        // (and the revocation check) of the connection that resumes it.
        config.session_storage = Arc::new(rustls::server::NoServerSessionStorage {});
        config.send_tls13_tickets = 0;
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let log = Arc::new(Mutex::new(ServerLog::default()));
        let task = tokio::spawn(accept_loop(listener, acceptor, Arc::clone(&log), verbose));
        Ok(Server {
            addr,
            log,
            task,
            _source: source,
        })
    }

    /// Stops accepting; returns the clients accepted and the refusals.
    pub fn stop(self) -> (Vec<Identity>, Vec<String>) {
        self.task.abort();
        let mut log = self.log.lock().unwrap_or_else(PoisonError::into_inner);
        (
            std::mem::take(&mut log.accepted),
            std::mem::take(&mut log.refused),
        )
    }
}

async fn accept_loop(
    listener: TcpListener,
    acceptor: tokio_rustls::TlsAcceptor,
    log: Arc<Mutex<ServerLog>>,
    verbose: bool,
) {
    let mut connections = tokio::task::JoinSet::new();
    while let Ok((tcp, _)) = listener.accept().await {
        let acceptor = acceptor.clone();
        let log = Arc::clone(&log);
        connections.spawn(async move {
            let tls = match acceptor.accept(tcp).await {
                Ok(tls) => tls,
                Err(error) => {
                    let reason = match PolicyError::in_handshake_error(&error) {
                        Some(refusal) => refusal.to_string(),
                        None => error.to_string(),
                    };
                    if verbose {
                        println!("[server] refused a client: {reason}");
                    }
                    log.lock()
                        .unwrap_or_else(PoisonError::into_inner)
                        .refused
                        .push(reason);
                    return;
                }
            };
            let Some(peer) = tls
                .get_ref()
                .1
                .peer_certificates()
                .and_then(|c| peer_identity(c).ok())
            else {
                return;
            };
            if verbose {
                println!("[server] accepted {}", describe(&peer));
            }
            let expires = peer.expires_at();
            log.lock()
                .unwrap_or_else(PoisonError::into_inner)
                .accepted
                .push(peer);
            // Serve until the client goes away, or until the certificate
            // this connection was authenticated with expires.
            let until_expiry = expires
                .duration_since(SystemTime::now())
                .unwrap_or_default();
            let _ = tokio::time::timeout(until_expiry, serve(tls)).await;
        });
        // Reap finished connections.
        while connections.try_join_next().is_some() {}
    }
}

/// Answers `ping N` with `pong N` until the client closes.
async fn serve(tls: tokio_rustls::server::TlsStream<TcpStream>) -> std::io::Result<()> {
    let (read, mut write) = tokio::io::split(tls);
    let mut lines = BufReader::new(read).lines();
    while let Some(line) = lines.next_line().await? {
        let n = line.strip_prefix("ping ").unwrap_or("?");
        write.write_all(format!("pong {n}\n").as_bytes()).await?;
    }
    Ok(())
}

/// One client connection and what it was opened with.
struct Connection {
    lines: tokio::io::Lines<
        BufReader<tokio::io::ReadHalf<tokio_rustls::client::TlsStream<TcpStream>>>,
    >,
    write: tokio::io::WriteHalf<tokio_rustls::client::TlsStream<TcpStream>>,
    own_serial: String,
    server_expires: SystemTime,
}

/// The client workload's loop: requests to `addr`, whose server must
/// satisfy `servers`, until `until`.
pub async fn run_client(
    endpoint: &Endpoint,
    own_id: SpiffeId,
    servers: Policy,
    addr: SocketAddr,
    interval: Duration,
    until: Until,
    verbose: bool,
) -> anyhow::Result<Report> {
    let source = X509Source::start(endpoint, SvidSelector::SpiffeId(own_id))
        .await
        .context("the client workload has no SVID")?;
    let mut config = rustls::ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .dangerous()
        .with_custom_certificate_verifier(servers.server_verifier(source.bundle()))
        .with_client_cert_resolver(source.resolver());
    config.resumption = rustls::client::Resumption::disabled();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));

    let mut report = Report::default();
    let mut connection: Option<Connection> = None;
    let deadline = tokio::time::Instant::now() + until.deadline;
    let mut n: u64 = 0;
    loop {
        let done = report.exchanges >= until.exchanges
            && report.client_serials.len() > until.rotations
            && report.server_serials.len() > until.rotations;
        if done {
            break;
        }
        if tokio::time::Instant::now() >= deadline {
            report.deadline_hit = true;
            break;
        }
        let own_serial = serial_of(&source);
        let stale = connection.as_ref().is_none_or(|c| {
            Some(&c.own_serial) != own_serial.as_ref()
                || SystemTime::now() + EXPIRY_MARGIN >= c.server_expires
        });
        if stale {
            if let Some(old) = connection.take()
                && verbose
            {
                println!(
                    "[client] reconnecting (was using client SVID {})",
                    old.own_serial
                );
            }
            match connect(&connector, addr, &source).await {
                Ok((fresh, server)) => {
                    report.connections += 1;
                    push_new(&mut report.client_serials, &fresh.own_serial);
                    if let Credential::X509 { serial, .. } = &server.credential {
                        push_new(&mut report.server_serials, serial);
                    }
                    if verbose {
                        println!(
                            "[client] connected with SVID {} to {}",
                            fresh.own_serial,
                            describe(&server)
                        );
                    }
                    report.server = Some(server);
                    connection = Some(fresh);
                }
                Err(error) => {
                    report.failures += 1;
                    if verbose {
                        println!("[client] connection failed: {error:#}");
                    }
                    tokio::time::sleep(interval).await;
                    continue;
                }
            }
        }
        let Some(conn) = connection.as_mut() else {
            continue;
        };
        n += 1;
        match tokio::time::timeout(REQUEST_TIMEOUT, exchange(conn, n)).await {
            Ok(Ok(())) => report.exchanges += 1,
            Ok(Err(error)) => {
                report.failures += 1;
                connection = None;
                if verbose {
                    println!("[client] request {n} failed: {error:#}");
                }
            }
            Err(_) => {
                report.failures += 1;
                connection = None;
                if verbose {
                    println!("[client] request {n} timed out");
                }
            }
        }
        tokio::time::sleep(interval).await;
    }
    Ok(report)
}

async fn connect(
    connector: &tokio_rustls::TlsConnector,
    addr: SocketAddr,
    source: &X509Source,
) -> anyhow::Result<(Connection, Identity)> {
    let own_serial = serial_of(source).context("the client has no SVID right now")?;
    let tcp = TcpStream::connect(addr).await?;
    // SVIDs name workloads, not hosts: the verifier ignores the name.
    let name = ServerName::try_from("mtls-server.invalid")?;
    let tls =
        connector.connect(name, tcp).await.map_err(
            |error| match PolicyError::in_handshake_error(&error) {
                Some(refusal) => anyhow::anyhow!("server refused by policy: {refusal}"),
                None => anyhow::Error::new(error).context("handshake failed"),
            },
        )?;
    let server = peer_identity(
        tls.get_ref()
            .1
            .peer_certificates()
            .context("the server presented no certificate")?,
    )?;
    let server_expires = server.expires_at();
    let (read, write) = tokio::io::split(tls);
    Ok((
        Connection {
            lines: BufReader::new(read).lines(),
            write,
            own_serial,
            server_expires,
        },
        server,
    ))
}

async fn exchange(conn: &mut Connection, n: u64) -> anyhow::Result<()> {
    conn.write
        .write_all(format!("ping {n}\n").as_bytes())
        .await?;
    let line = conn
        .lines
        .next_line()
        .await?
        .context("the server closed the connection")?;
    anyhow::ensure!(line == format!("pong {n}"), "unexpected answer {line:?}");
    Ok(())
}

fn serial_of(source: &X509Source) -> Option<String> {
    source.current().svid.map(|s| s.serial)
}

fn push_new(list: &mut Vec<String>, serial: &str) {
    if list.last().map(String::as_str) != Some(serial) {
        list.push(serial.to_owned());
    }
}

fn describe(identity: &Identity) -> String {
    let model = identity
        .binding
        .as_ref()
        .and_then(|b| b.model.as_ref())
        .map_or_else(
            || "no model".to_owned(),
            |m| format!("model {} {}", m.name, m.version),
        );
    let serial = match &identity.credential {
        Credential::X509 { serial, .. } => serial.as_str(),
        _ => "",
    };
    format!("{} ({model}, serial {serial})", identity.spiffe_id)
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Runs both workloads: the server, then the client loop against it, each
/// requiring the other's SPIFFE ID and model, both following the agent's
/// revocations.
pub async fn run_pair(options: &PairOptions) -> anyhow::Result<Report> {
    let revocations = Revocations::watch(&options.endpoint)
        .await
        .context("cannot follow the agent's revocations")?;
    let model = Policy::model(&options.model, options.model_version.clone());
    let clients = Policy::spiffe_id(options.client_id.clone())
        .and(model.clone())
        .with_revocations(revocations.clone());
    let servers = Policy::spiffe_id(options.server_id.clone())
        .and(model)
        .with_revocations(revocations);
    if options.verbose {
        println!("[server] accepts: {clients}");
        println!("[client] accepts: {servers}");
    }
    let server = Server::start(
        &options.endpoint,
        options.server_id.clone(),
        clients,
        options.verbose,
    )
    .await?;
    let result = run_client(
        &options.endpoint,
        options.client_id.clone(),
        servers,
        server.addr,
        options.interval,
        options.until,
        options.verbose,
    )
    .await;
    let (accepted, refused) = server.stop();
    let mut report = result?;
    report.accepted = accepted;
    report.refused = refused;
    Ok(report)
}

#[derive(Debug, clap::Parser)]
struct Args {
    /// The server workload's SPIFFE ID.
    #[arg(long, default_value = "spiffe://example.org/mtls-server")]
    server_id: String,
    /// The client workload's SPIFFE ID.
    #[arg(long, default_value = "spiffe://example.org/mtls-client")]
    client_id: String,
    /// The model both sides must be bound to.
    #[arg(long, default_value = "demo-model")]
    model: String,
    /// Its required version.
    #[arg(long, default_value = ">= 2.0")]
    model_version: String,
    /// Stop after this many seconds.
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// Or once this many requests were answered and `--rotations` seen.
    #[arg(long, default_value_t = u64::MAX)]
    exchanges: u64,
    /// Rotations to see on each side before stopping.
    #[arg(long, default_value_t = 0)]
    rotations: usize,
    /// Milliseconds between requests.
    #[arg(long, default_value_t = 500)]
    interval_ms: u64,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = <Args as clap::Parser>::parse();
    let address = std::env::var("SPIFFE_ENDPOINT_SOCKET")
        .context("set SPIFFE_ENDPOINT_SOCKET=unix:///path/to/the/agent/api.sock")?;
    let options = PairOptions {
        endpoint: Endpoint::parse(&address)?,
        server_id: SpiffeId::parse(&args.server_id)?,
        client_id: SpiffeId::parse(&args.client_id)?,
        model: args.model,
        model_version: args.model_version.parse()?,
        interval: Duration::from_millis(args.interval_ms),
        until: Until {
            exchanges: args.exchanges,
            rotations: args.rotations,
            deadline: Duration::from_secs(args.seconds),
        },
        verbose: true,
    };
    let report = run_pair(&options).await?;
    println!(
        "{} requests answered over {} connections, {} failed; client SVIDs used: {}; server certificates met: {}",
        report.exchanges,
        report.connections,
        report.failures,
        report.client_serials.len(),
        report.server_serials.len()
    );
    Ok(())
}
