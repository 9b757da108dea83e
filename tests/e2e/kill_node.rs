//! Node kills and agents that were away: real agents, the `spiffe` crate's
//! client, and a loopback TCP relay between an agent and the issuer that a
//! test can cut and restore, so an agent misses a kill while it still
//! serves from its cache, and must apply it before anything else when it is
//! back.

use std::time::{Duration, SystemTime};

use tonic::Code;

use hallmark_proto::workload::X509svidRequest;

use crate::common::Relay;
use crate::kill::*;
use crate::x509pop_fixture::ProvisioningCa;

/// Waits for a WatchRevocations message satisfying `check`; returns it.
async fn watch_until(
    watch: &mut tonic::Streaming<hallmark_proto::revocations::WatchRevocationsResponse>,
    check: impl Fn(&hallmark_proto::revocations::WatchRevocationsResponse) -> bool,
) -> hallmark_proto::revocations::WatchRevocationsResponse {
    tokio::time::timeout(WAIT, async {
        loop {
            let message = watch.message().await.unwrap().expect("watch ended");
            if check(&message) {
                return message;
            }
        }
    })
    .await
    .expect("the agent never reached the expected revocation state")
}

async fn open_stream(
    agent: &TestAgent,
) -> impl tokio_stream::Stream<Item = Result<spiffe::X509Context, spiffe::WorkloadApiError>>
+ Unpin
+ use<> {
    let mut stream = agent.spiffe().await.stream_x509_contexts().await.unwrap();
    assert_eq!(next_ids(&mut stream).await.unwrap(), [ALPHA, BETA]);
    stream
}

/// The stream's next message is the workload being refused its identity.
async fn refused(
    stream: &mut (
             impl tokio_stream::Stream<Item = Result<spiffe::X509Context, spiffe::WorkloadApiError>>
             + Unpin
         ),
) {
    let err = next_ids(stream).await.unwrap_err();
    assert!(
        matches!(err, spiffe::WorkloadApiError::NoIdentityIssued),
        "{err:?}"
    );
}

/// A fresh FetchX509SVID is refused with PermissionDenied naming `kill`.
async fn fresh_fetch_refused(agent: &TestAgent, kill: &str) {
    let mut raw = agent.raw().await;
    let mut stream = raw
        .fetch_x509svid(with_header(X509svidRequest {}))
        .await
        .unwrap()
        .into_inner();
    let err = stream.message().await.unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);
    assert!(
        err.message().contains(&format!("kill {kill} (node ")),
        "{}",
        err.message()
    );
}

/// Proves a revocation changed nothing on `agent`: a second kill (of
/// `alpha`) is the first thing its open stream reports, with `beta` intact.
async fn probe_untouched(
    env: &KillEnv,
    agent: &TestAgent,
    stream: &mut (
             impl tokio_stream::Stream<Item = Result<spiffe::X509Context, spiffe::WorkloadApiError>>
             + Unpin
         ),
) {
    env.kill("image", "alpha", "probe").await;
    assert_eq!(next_ids(stream).await.unwrap(), [BETA]);
    assert_eq!(fetched_ids(&agent.spiffe().await).await, [BETA]);
}

#[tokio::test]
async fn killing_one_agent_stops_it_serving_and_spares_the_other_agent() {
    let env = KillEnv::start().await;
    let a = env.agent("a").await;
    let b = env.agent("b").await;
    let mut a_stream = open_stream(&a).await;
    let mut b_stream = open_stream(&b).await;
    let a_id = a.handle.spiffe_id().unwrap();

    let kill = env.kill("node", a_id.as_str(), "host compromised").await;
    refused(&mut a_stream).await;
    a.wait_status("node SVID dropped", |s| !s.attested).await;
    assert!(a.handle.spiffe_id().is_none());
    assert!(!a.data.join("agent_svid.pem").exists());
    fresh_fetch_refused(&a, &kill.id).await;
    let err = a
        .spiffe()
        .await
        .fetch_jwt_svid(["payments"], None)
        .await
        .unwrap_err();
    assert!(
        matches!(err, spiffe::WorkloadApiError::NoIdentityIssued),
        "{err:?}"
    );

    // B was told (relying parties on B see the kill) and serves on.
    b.wait_revoked(&kill.id).await;
    assert!(b.handle.status().borrow().attested);
    probe_untouched(&env, &b, &mut b_stream).await;
    a.handle.shutdown().await;
    b.handle.shutdown().await;
}

#[tokio::test]
async fn an_agent_away_during_a_kill_applies_it_before_serving_again() {
    let env = KillEnv::start().await;
    let relay = Relay::to(env.server.addr()).await;
    let agent = env.agent_at("a", &relay.addr.to_string(), "").await;
    let mut stream = open_stream(&agent).await;
    let mut watch = agent.watch().await;
    watch_until(&mut watch, |m| m.synced && m.revocations.is_empty()).await;

    relay.cut();
    watch_until(&mut watch, |m| !m.synced).await;
    let kill = env.kill("image", "alpha", "exfiltration").await;
    // Away, the agent does not know: it serves what it has cached.
    assert_eq!(fetched_ids(&agent.spiffe().await).await, [ALPHA, BETA]);

    relay.restore();
    // Back: the first thing the workload hears is alpha's withdrawal, and
    // the agent never reports itself in sync without the kill.
    assert_eq!(next_ids(&mut stream).await.unwrap(), [BETA]);
    let back = watch_until(&mut watch, |m| m.synced).await;
    assert_eq!(
        back.revocations
            .iter()
            .map(|r| r.id.as_str())
            .collect::<Vec<_>>(),
        [kill.id.as_str()]
    );
    assert_eq!(fetched_ids(&agent.spiffe().await).await, [BETA]);
    agent.handle.shutdown().await;
}

#[tokio::test]
async fn an_agent_revoked_while_away_stops_serving_when_it_is_back() {
    let env = KillEnv::start().await;
    let relay = Relay::to(env.server.addr()).await;
    let a = env.agent_at("a", &relay.addr.to_string(), "").await;
    let b = env.agent("b").await;
    let mut a_stream = open_stream(&a).await;
    let mut b_stream = open_stream(&b).await;
    let mut a_watch = a.watch().await;
    watch_until(&mut a_watch, |m| m.synced).await;
    let a_id = a.handle.spiffe_id().unwrap();

    relay.cut();
    watch_until(&mut a_watch, |m| !m.synced).await;
    let kill = env.kill("node", a_id.as_str(), "stolen laptop").await;

    relay.restore();
    // The issuer refuses A's node SVID with the revocation attached: A
    // enforces it although it never got a Sync message with it.
    refused(&mut a_stream).await;
    a.wait_status("node SVID dropped", |s| !s.attested).await;
    fresh_fetch_refused(&a, &kill.id).await;
    watch_until(&mut a_watch, |m| {
        m.revocations.iter().any(|r| r.id == kill.id)
    })
    .await;

    b.wait_revoked(&kill.id).await;
    probe_untouched(&env, &b, &mut b_stream).await;
    a.handle.shutdown().await;
    b.handle.shutdown().await;
}

#[tokio::test]
async fn lifting_a_node_kill_lets_an_x509pop_agent_attest_and_serve_again() {
    let provisioning = ProvisioningCa::new();
    let roots = vec![provisioning.root_der()];
    let env = KillEnv::start_with(|s| s.x509pop_roots = Some(roots)).await;
    let node = provisioning.node_cert("node-1", SystemTime::now() + Duration::from_secs(86400));
    let cert = env.server.path("node.pem");
    let key = env.server.path("node.key");
    std::fs::write(&cert, &node.cert_pem).unwrap();
    std::fs::write(&key, &node.key_pem).unwrap();
    let tables = format!(
        "[x509pop]\ncert_path = \"{}\"\nkey_path = \"{}\"\n",
        cert.display(),
        key.display()
    );
    let agent = env
        .agent_at("a", &env.server.addr().to_string(), &tables)
        .await;
    let mut stream = open_stream(&agent).await;
    let id = agent.handle.spiffe_id().unwrap();

    let kill = env.kill("node", id.as_str(), "firmware alert").await;
    refused(&mut stream).await;
    agent
        .wait_status("node SVID dropped", |s| !s.attested)
        .await;
    fresh_fetch_refused(&agent, &kill.id).await;

    // The agent keeps trying to re-attest; the lift lets it through.
    env.lift(&kill.id).await;
    agent
        .wait_status("re-attested and syncing", |s| {
            s.attested && s.sync_connected
        })
        .await;
    assert_eq!(agent.handle.spiffe_id(), Some(id));
    assert_eq!(fetched_ids(&agent.spiffe().await).await, [ALPHA, BETA]);
    agent.handle.shutdown().await;
}
