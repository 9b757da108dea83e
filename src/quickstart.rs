//! The quickstart's steps.

use std::time::{Duration, UNIX_EPOCH};

use anyhow::Context as _;

use hallmark_agent::Agent;
use hallmark_agent::config::AgentSettings;
use hallmark_ca::id::TrustDomain;
use hallmark_proto::admin::admin_client::AdminClient;
use hallmark_proto::admin::{GenerateJoinTokenRequest, ListAgentsRequest};
use hallmark_server::config::ServerSettings;

const TRUST_DOMAIN: &str = "example.org";

fn step(n: u32, text: &str) {
    println!("[{n}] {text}");
}

/// Runs the quickstart end to end.
pub(crate) async fn run() -> anyhow::Result<()> {
    let dir = tempfile::Builder::new()
        .prefix("hallmark-quickstart-")
        .tempdir()
        .context("cannot create a temp dir")?;
    println!("Hallmark quickstart in {}", dir.path().display());

    step(
        1,
        "starting the issuer (embedded store, node API on loopback)",
    );
    let td = TrustDomain::new(TRUST_DOMAIN)?;
    let settings = ServerSettings::for_dirs(
        td,
        dir.path().join("server-data"),
        dir.path().join("admin.sock"),
    );
    let admin_socket = settings.admin_socket.clone();
    let server = hallmark_server::server::start(settings).await?;
    let bundle = server.authority().bundle();
    println!(
        "    issuer {} on {}; trust bundle sequence {}",
        server.authority().server_id(),
        server.node_addr(),
        bundle.sequence
    );

    step(2, "creating a single-use join token over the admin socket");
    let channel = hallmark_server::admin::socket::connect(&admin_socket).await?;
    let mut admin = AdminClient::new(channel);
    let token = admin
        .generate_join_token(GenerateJoinTokenRequest {
            ttl_seconds: 600,
            spiffe_id: String::new(),
        })
        .await
        .context("token generate")?
        .into_inner();
    println!("    token for {} (valid 10 minutes)", token.spiffe_id);

    step(
        3,
        "starting a node agent that trusts the issuer's bundle and attests with the token",
    );
    let bootstrap = dir.path().join("bootstrap.pem");
    std::fs::write(&bootstrap, bundle.to_pem())?;
    let agent_data = dir.path().join("agent-data");
    let toml = format!(
        "trust_domain = \"{TRUST_DOMAIN}\"\nserver_address = \"{}\"\ndata_dir = \"{}\"\nsocket_path = \"{}\"\n[bootstrap]\nbundle_path = \"{}\"\n",
        server.node_addr(),
        agent_data.display(),
        dir.path().join("workload.sock").display(),
        bootstrap.display()
    );
    let mut agent_settings = AgentSettings::from_toml_str(&toml)?;
    agent_settings.join_token = Some(token.token);
    let agent = Agent::start(agent_settings).await?;
    let mut status = agent.status();
    tokio::time::timeout(
        Duration::from_secs(30),
        status.wait_for(|s| s.attested && s.sync_connected),
    )
    .await
    .context("the agent did not attest within 30s")??;
    let agent_id = agent
        .spiffe_id()
        .context("the agent reports no identity after attesting")?;
    println!("    agent attested as {agent_id}");
    if let Some(serial) = agent.node_svid_serial() {
        println!("    node SVID serial {serial}, renewed at half-life over mutual TLS");
    }
    println!("    Sync stream open: the agent follows the trust bundle as the CA rotates");

    step(4, "the operator's view: `hallmark-server agent list`");
    let agents = admin
        .list_agents(ListAgentsRequest {})
        .await
        .context("agent list")?
        .into_inner()
        .agents;
    for listed in &agents {
        let expires =
            UNIX_EPOCH + Duration::from_secs(u64::try_from(listed.svid_expires_at).unwrap_or(0));
        println!(
            "    {}  attestor={}  node SVID expires {}",
            listed.spiffe_id,
            listed.attestor,
            humantime::format_rfc3339_seconds(expires)
        );
    }
    anyhow::ensure!(
        agents.iter().any(|a| a.spiffe_id == agent_id.as_str()),
        "the issuer does not list the attested agent"
    );

    step(5, "shutting down and cleaning up");
    agent.shutdown().await;
    server.shutdown().await;
    dir.close().context("cannot remove the temp dir")?;
    println!("Done: issuer and agent attested over mutual TLS, then stopped cleanly.");
    Ok(())
}
