//! Starting the agent from what a previous run left on disk.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use hallmark_ca::clock::ManualClock;
use hallmark_ca::id::TrustDomain;
use hallmark_ca::key::CaKey;

use super::Agent;
use crate::config::AgentSettings;
use crate::error::AgentError;
use crate::persist::tests::minted_svid;
use crate::persist::{DataDir, NodeSvid};

/// A data directory holding a 1 h node SVID, and settings pointing at an
/// issuer address nobody listens on (so any attestation attempt would fail).
fn previous_run(dir: &std::path::Path) -> (AgentSettings, NodeSvid) {
    let td = TrustDomain::new("example.org").unwrap();
    let (ca, svid) = minted_svid(
        &td,
        CaKey::generate().unwrap(),
        Duration::from_secs(3600),
        SystemTime::now(),
    );
    let data_dir = dir.join("data");
    DataDir::open(&data_dir).unwrap().save_svid(&svid).unwrap();
    let bootstrap = dir.join("bootstrap.pem");
    let root = pem::encode(&pem::Pem::new("CERTIFICATE", ca.root_der().to_vec()));
    std::fs::write(&bootstrap, root).unwrap();
    let closed_port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let toml = format!(
        "trust_domain = \"example.org\"\n\
         server_address = \"127.0.0.1:{closed_port}\"\n\
         data_dir = \"{}\"\n\
         sync_backoff_max = \"1s\"\n\
         [bootstrap]\n\
         bundle_path = \"{}\"\n",
        data_dir.display(),
        bootstrap.display()
    );
    (AgentSettings::from_toml_str(&toml).unwrap(), svid)
}

#[tokio::test]
async fn restart_resumes_with_a_valid_persisted_svid_and_no_token() {
    let dir = tempfile::tempdir().unwrap();
    let (settings, svid) = previous_run(dir.path());
    assert!(settings.join_token.is_none() && settings.x509pop.is_none());
    let agent = Agent::start(settings).await.unwrap();
    assert_eq!(agent.spiffe_id(), Some(svid.spiffe_id.clone()));
    assert_eq!(agent.node_svid_serial(), Some(svid.serial.clone()));
    let status = agent.status().borrow().clone();
    assert!(status.attested);
    assert_eq!(status.svid_expires_at, Some(svid.not_after));
    assert!(!status.sync_connected);
    // The bootstrap bundle is what the agent trusts until Sync says otherwise.
    assert_eq!(agent.bundle().x509_authorities.len(), 1);
    tokio::time::timeout(Duration::from_secs(10), agent.shutdown())
        .await
        .unwrap();
}

#[tokio::test]
async fn expired_persisted_svid_is_not_reused() {
    let dir = tempfile::tempdir().unwrap();
    let (mut settings, svid) = previous_run(dir.path());
    let clock = ManualClock::new(svid.not_after + Duration::from_secs(1));
    settings.clock = Arc::new(clock);
    let err = Agent::start(settings).await.unwrap_err();
    assert!(matches!(err, AgentError::NoIdentity), "{err}");
}
