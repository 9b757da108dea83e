//! A real node agent against a real issuer: attestation with both attestors,
//! persisted identity across agent restarts, `Sync` across issuer restarts,
//! eviction and re-attestation.

use std::path::Path;
use std::time::{Duration, SystemTime};

use hallmark_agent::config::AgentSettings;
use hallmark_agent::{Agent, AgentHandle};
use hallmark_proto::admin::{AgentRequest, ListAgentsRequest};

use crate::common::*;
use crate::x509pop_fixture::ProvisioningCa;

/// How long to wait for an agent to reach a state.
const WAIT: Duration = Duration::from_secs(20);

/// An agent config for `server`: `extra` is top-level keys, `tables` goes last.
fn agent_toml(server: &TestServer, data_dir: &Path, extra: &str, tables: &str) -> String {
    let bootstrap = server.path("bootstrap.pem");
    std::fs::write(&bootstrap, server.bundle().to_pem()).unwrap();
    format!(
        "trust_domain = \"{TRUST_DOMAIN}\"\n\
         server_address = \"{}\"\n\
         data_dir = \"{}\"\n\
         socket_path = \"{}\"\n\
         {extra}\n\
         [bootstrap]\n\
         bundle_path = \"{}\"\n\
         {tables}\n",
        server.addr(),
        data_dir.display(),
        data_dir.join("workload.sock").display(),
        bootstrap.display(),
    )
}

async fn start_agent(toml: &str, join_token: Option<String>) -> AgentHandle {
    let mut settings = AgentSettings::from_toml_str(toml).unwrap();
    if let Some(token) = join_token {
        settings.join_token = Some(token);
    }
    Agent::start(settings).await.unwrap()
}

/// Waits until `check` holds for the agent's status.
async fn wait_for(
    agent: &AgentHandle,
    what: &str,
    check: impl Fn(&hallmark_agent::AgentStatus) -> bool,
) {
    let mut status = agent.status();
    let reached = tokio::time::timeout(WAIT, status.wait_for(|s| check(s)))
        .await
        .is_ok_and(|r| r.is_ok());
    assert!(
        reached,
        "agent did not reach: {what}; last status {:?}",
        *agent.status().borrow()
    );
}

async fn listed_serial(server: &TestServer, spiffe_id: &str) -> Option<String> {
    server
        .admin()
        .await
        .list_agents(ListAgentsRequest {})
        .await
        .unwrap()
        .into_inner()
        .agents
        .into_iter()
        .find(|a| a.spiffe_id == spiffe_id)
        .map(|a| a.svid_serial)
}

#[tokio::test]
async fn agent_attests_with_a_join_token_and_resumes_after_restart() {
    let server = TestServer::start().await;
    let data = server.path("agent-data");
    let toml = agent_toml(&server, &data, "", "");
    let agent = start_agent(&toml, Some(server.token().await)).await;
    wait_for(&agent, "attested and syncing", |s| {
        s.attested && s.sync_connected
    })
    .await;
    let id = agent.spiffe_id().unwrap();
    assert!(
        id.as_str()
            .starts_with("spiffe://example.org/hallmark/agent/join_token/")
    );
    assert_eq!(
        listed_serial(&server, id.as_str()).await,
        agent.node_svid_serial(),
        "the issuer lists the agent with the SVID it holds"
    );
    assert_eq!(
        agent.bundle().x509_authorities,
        server.bundle().x509_authorities
    );

    // Files holding a key are owner-only.
    use std::os::unix::fs::PermissionsExt;
    let mut keys = 0;
    for entry in std::fs::read_dir(&data).unwrap() {
        let path = entry.unwrap().path();
        let text = std::fs::read(&path).unwrap_or_default();
        if String::from_utf8_lossy(&text).contains("PRIVATE KEY") {
            keys += 1;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600, "{}", path.display());
        }
    }
    assert!(keys > 0, "the agent persisted its node key");
    agent.shutdown().await;

    // Restart without a token: the persisted node SVID is reused.
    let agent = start_agent(&toml, None).await;
    wait_for(&agent, "resumed and syncing", |s| {
        s.attested && s.sync_connected
    })
    .await;
    assert_eq!(agent.spiffe_id().unwrap(), id);
    assert_eq!(server.agent_count().await, 1);
    agent.shutdown().await;
}

#[tokio::test]
async fn agent_without_identity_or_token_refuses_to_start() {
    let server = TestServer::start().await;
    let data = server.path("agent-data");
    let toml = agent_toml(&server, &data, "", "");
    let settings = AgentSettings::from_toml_str(&toml).unwrap();
    let err = Agent::start(settings).await.expect_err("start must fail");
    assert!(err.to_string().contains("join token"), "{err}");
}

#[tokio::test]
async fn agent_refuses_an_issuer_outside_its_bootstrap_bundle() {
    let server = TestServer::start().await;
    let impostor_bundle = TestServer::start().await.bundle();
    let data = server.path("agent-data");
    let toml = agent_toml(&server, &data, "", "");
    // Replace the bootstrap bundle with another issuer's.
    std::fs::write(server.path("bootstrap.pem"), impostor_bundle.to_pem()).unwrap();
    let mut settings = AgentSettings::from_toml_str(&toml).unwrap();
    settings.join_token = Some(server.token().await);
    assert!(Agent::start(settings).await.is_err());
    assert_eq!(server.agent_count().await, 0);
}

#[tokio::test]
async fn agent_sync_survives_an_issuer_restart() {
    let mut server = TestServer::start().await;
    let data = server.path("agent-data");
    let toml = agent_toml(&server, &data, "sync_backoff_max = \"1s\"", "");
    let agent = start_agent(&toml, Some(server.token().await)).await;
    wait_for(&agent, "syncing", |s| s.sync_connected).await;
    let connects = agent.status().borrow().sync_connects;

    server.restart().await;

    wait_for(&agent, "sync reconnected", |s| {
        s.sync_connected && s.sync_connects > connects
    })
    .await;
    agent.shutdown().await;
    server.stop().await;
}

#[tokio::test]
async fn x509pop_agent_re_attests_by_itself_after_eviction() {
    let provisioning = ProvisioningCa::new();
    let roots = vec![provisioning.root_der()];
    let server = TestServer::start_with(|s| s.x509pop_roots = Some(roots)).await;
    let node = provisioning.node_cert("node-1", SystemTime::now() + Duration::from_secs(86400));
    let cert = server.path("node.pem");
    let key = server.path("node.key");
    std::fs::write(&cert, &node.cert_pem).unwrap();
    std::fs::write(&key, &node.key_pem).unwrap();
    let data = server.path("agent-data");
    let tables = format!(
        "[x509pop]\ncert_path = \"{}\"\nkey_path = \"{}\"\n",
        cert.display(),
        key.display()
    );
    let toml = agent_toml(&server, &data, "sync_backoff_max = \"1s\"", &tables);
    let agent = start_agent(&toml, None).await;
    wait_for(&agent, "attested", |s| s.attested && s.sync_connected).await;
    let id = agent.spiffe_id().unwrap();
    assert_eq!(
        id.as_str(),
        format!(
            "spiffe://{TRUST_DOMAIN}/hallmark/agent/x509pop/{}",
            node.sha256_hex()
        )
    );
    let before = agent.node_svid_serial().unwrap();

    server
        .admin()
        .await
        .evict_agent(AgentRequest {
            spiffe_id: id.as_str().into(),
        })
        .await
        .unwrap();

    wait_for(&agent, "re-attested", |s| {
        s.attested && s.sync_connected && s.svid_serial.as_deref() != Some(before.as_str())
    })
    .await;
    let after = agent.node_svid_serial().unwrap();
    assert_eq!(listed_serial(&server, id.as_str()).await, Some(after));
    agent.shutdown().await;
}

#[tokio::test]
async fn insecure_bootstrap_trusts_the_first_issuer_then_its_bundle() {
    let server = TestServer::start().await;
    let data = server.path("agent-data");
    let toml = format!(
        "trust_domain = \"{TRUST_DOMAIN}\"\nserver_address = \"{}\"\ndata_dir = \"{}\"\n[bootstrap]\ninsecure_bootstrap = true\n",
        server.addr(),
        data.display()
    );
    let agent = start_agent(&toml, Some(server.token().await)).await;
    wait_for(&agent, "attested and syncing", |s| {
        s.attested && s.sync_connected
    })
    .await;
    // From then on the agent verifies the issuer against the bundle it got.
    assert_eq!(
        agent.bundle().x509_authorities,
        server.bundle().x509_authorities
    );
    assert!(data.join("bundle.pem").exists());
    agent.shutdown().await;
}
