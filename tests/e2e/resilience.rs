//! The agent through an issuer outage: a real issuer and agent sharing a
//! manual clock, this test process as the workload, and a loopback relay
//! between agent and issuer that the test cuts and restores. While the
//! issuer is unreachable the agent keeps serving the SVIDs it has cached,
//! past their half-life, until they expire; then it fails closed
//! (`Unavailable`, the stream's SVIDs withdrawn); when the issuer is back
//! it reconnects and serves fresh SVIDs by itself. Time moves by the manual
//! clock, never by sleeping; every wait is for a condition.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpStream;
use tonic::Code;

use hallmark_agent::Agent;
use hallmark_agent::config::AgentSettings;
use hallmark_agent::metrics::Source;
use hallmark_proto::workload::{X509svidRequest, X509svidResponse};

use crate::common::{Relay, TRUST_DOMAIN};
use crate::kill::{ALPHA, BETA, KillEnv, TestAgent, WAIT, fetched_ids, with_header};

/// An agent on the issuer's manual clock, reaching it through `relay`.
async fn agent_on_clock(env: &KillEnv, relay: &Relay) -> TestAgent {
    let data = env.server.path("r-data");
    let socket = env.server.path("r.sock");
    let bootstrap = env.server.path("bootstrap.pem");
    std::fs::write(&bootstrap, env.server.bundle().to_pem()).unwrap();
    let toml = format!(
        "trust_domain = \"{TRUST_DOMAIN}\"\nserver_address = \"{}\"\ndata_dir = \"{}\"\nsocket_path = \"{}\"\nsync_backoff_max = \"500ms\"\n[bootstrap]\nbundle_path = \"{}\"\n[metrics]\naddress = \"127.0.0.1:0\"\n",
        relay.addr,
        data.display(),
        socket.display(),
        bootstrap.display(),
    );
    let mut settings = AgentSettings::from_toml_str(&toml).unwrap();
    settings.join_token = Some(env.server.token().await);
    settings.clock = Arc::new(env.server.clock.clone());
    let handle = Agent::start(settings).await.unwrap();
    let agent = TestAgent {
        handle,
        socket,
        data,
    };
    agent
        .wait_status("attested and syncing", |s| s.attested && s.sync_connected)
        .await;
    agent
}

/// The leaf serials of a FetchX509SVID message, in SPIFFE ID order.
fn serials(message: &X509svidResponse) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = message
        .svids
        .iter()
        .map(|svid| {
            let (_, cert) = x509_parser::parse_x509_certificate(&svid.x509_svid).unwrap();
            (svid.spiffe_id.clone(), cert.raw_serial_as_string())
        })
        .collect();
    out.sort();
    out
}

/// The first message of a new FetchX509SVID stream.
async fn fetch_once(agent: &TestAgent) -> Result<X509svidResponse, tonic::Status> {
    let mut raw = agent.raw().await;
    let mut stream = raw
        .fetch_x509svid(with_header(X509svidRequest {}))
        .await?
        .into_inner();
    tokio::time::timeout(WAIT, stream.message())
        .await
        .expect("no answer in time")
        .map(|m| m.expect("stream ended without a message"))
}

/// Waits until `check` holds of the agent's metrics.
async fn wait_metric(agent: &TestAgent, what: &str, check: impl Fn(&TestAgent) -> bool) {
    tokio::time::timeout(WAIT, async {
        while !check(agent) {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .unwrap_or_else(|_| panic!("never reached: {what}"));
}

#[tokio::test]
async fn cached_svids_outlive_an_issuer_outage_until_they_expire_then_the_agent_recovers() {
    let env = KillEnv::start().await;
    let relay = Relay::to(env.server.addr()).await;
    let agent = agent_on_clock(&env, &relay).await;
    let metrics = agent.handle.metrics_addr().expect("metrics configured");

    // A workload follows its SVIDs: both images, 300 s each.
    let mut raw = agent.raw().await;
    let mut stream = raw
        .fetch_x509svid(with_header(X509svidRequest {}))
        .await
        .unwrap()
        .into_inner();
    let first = stream.message().await.unwrap().unwrap();
    let before = serials(&first);
    let ids: Vec<&str> = before.iter().map(|(id, _)| id.as_str()).collect();
    assert_eq!(ids, [ALPHA, BETA]);
    assert_eq!(http(metrics, "/ready").await.0, 200);

    // The issuer becomes unreachable.
    relay.cut();
    agent.wait_status("sync lost", |s| !s.sync_connected).await;
    let (code, body) = http(metrics, "/ready").await;
    assert_eq!(code, 503, "not ready while not synced: {body}");

    // Past the half-life (150 s), before expiry: the stream's rotation
    // cannot reach the issuer, so it keeps what it has...
    env.server.clock.advance(Duration::from_secs(200));
    wait_metric(&agent, "a rotation served from the stale cache", |a| {
        a.handle.metrics().fetches("x509", Source::StaleCache) >= 1
    })
    .await;
    // ...and a new fetch gets the same cached SVIDs, not Unavailable.
    let during = fetch_once(&agent).await.expect("cached SVIDs are served");
    assert_eq!(
        serials(&during),
        before,
        "the very SVIDs cached before the outage"
    );

    // At expiry the agent fails closed: the open stream ends with
    // Unavailable (its SVIDs are withdrawn), and so does a new fetch.
    env.server.clock.advance(Duration::from_secs(101));
    let ended = tokio::time::timeout(WAIT, stream.message())
        .await
        .expect("the stream must be told")
        .expect_err("expired SVIDs are never served");
    assert_eq!(ended.code(), Code::Unavailable, "{ended:?}");
    assert!(ended.message().contains("expired"), "{}", ended.message());
    let refused = fetch_once(&agent).await.expect_err("nothing valid is left");
    assert_eq!(refused.code(), Code::Unavailable, "{refused:?}");
    let (_, body) = http(metrics, "/metrics").await;
    assert!(
        body.contains("hallmark_agent_svids_expired_total 1\n"),
        "{body}"
    );

    // The issuer is back: the agent reconnects by itself and serves fresh
    // SVIDs, to raw gRPC and to the spiffe crate's client alike.
    relay.restore();
    agent
        .wait_status("synced again", |s| s.sync_connected && s.sync_connects >= 2)
        .await;
    let after = fetch_once(&agent)
        .await
        .expect("fresh SVIDs after recovery");
    let after = serials(&after);
    assert_eq!(
        after.iter().map(|(id, _)| id.as_str()).collect::<Vec<_>>(),
        [ALPHA, BETA]
    );
    for ((_, old), (_, new)) in before.iter().zip(&after) {
        assert_ne!(old, new, "minted afresh");
    }
    assert_eq!(fetched_ids(&agent.spiffe().await).await, [ALPHA, BETA]);
    assert_eq!(http(metrics, "/ready").await.0, 200);
    agent.handle.shutdown().await;
}

/// One HTTP GET against the agent's metrics endpoint: status and body.
async fn http(addr: SocketAddr, path: &str) -> (u16, String) {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let mut tcp = TcpStream::connect(addr).await.unwrap();
    tcp.write_all(format!("GET {path} HTTP/1.1\r\nHost: agent\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut raw = String::new();
    tcp.read_to_string(&mut raw).await.unwrap();
    let code = raw[9..12].parse().unwrap();
    (code, raw.split_once("\r\n\r\n").unwrap().1.to_owned())
}
