//! Crash safety of the real `hallmark-server` process: SIGKILL while
//! several clients mint as fast as they can, then a restart on the same
//! data directory and port. The store opens; registrations and the
//! revocation are intact and still enforced; every SVID a client was
//! given is in the audit log (writes that acknowledge are durable first);
//! `audit verify` finds nothing tampered (the records after the last
//! checkpoint are reported as an unverifiable tail, never as tampering);
//! an in-process agent reconnects by itself; and an agent restarted on its
//! data directory keeps its node identity without a new token.

#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod audit_support;
mod ops_support;

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};

use hallmark_agent::Agent;
use hallmark_agent::config::AgentSettings;
use hallmark_ca::bundle::Bundle;
use hallmark_ca::clock::SystemClock;
use hallmark_ca::id::TrustDomain;
use hallmark_ca::key::CaKey;
use hallmark_proto::admin::RegisterImageRequest;
use hallmark_proto::admin::admin_client::AdminClient;
use hallmark_proto::node::MintX509SvidsRequest;
use hallmark_server::image::{Algorithm, Envelope, GoldImage, SigningKey, canonical};

use audit_support::{attest, evidence, node_client};
use ops_support::{Daemon, WAIT, http_get, metric};

const SVC: &str = "2222222222222222222222222222222222222222222222222222222222222222";
const OTHER: &str = "3333333333333333333333333333333333333333333333333333333333333333";
/// Mints acknowledged before the crash.
const BEFORE_CRASH: usize = 60;

fn envelope(key: &SigningKey, name: &str, code: &str) -> Vec<u8> {
    let image = GoldImage::from_toml(&format!(
        "name = \"{name}\"\nversion = \"1.0.0\"\nspiffe_id = \"spiffe://example.org/{name}\"\nowner = \"ops@example.org\"\npurpose = \"reliability tests\"\nrisk_tier = \"low\"\nnot_after = 2099-12-31\n[code]\nsha256 = [\"{code}\"]\n"
    ))
    .unwrap();
    Envelope::sign(&canonical::encode(&image), key)
        .unwrap()
        .to_json()
}

async fn agent(daemon: &Daemon, token: Option<String>) -> hallmark_agent::AgentHandle {
    let toml = format!(
        "trust_domain = \"example.org\"\nserver_address = \"{}\"\ndata_dir = \"{}\"\nsocket_path = \"{}\"\nsync_backoff_max = \"500ms\"\n[bootstrap]\nbundle_path = \"{}\"\n",
        daemon.node_addr.unwrap(),
        daemon.path("agent-data").display(),
        daemon.path("agent.sock").display(),
        daemon.path("bootstrap.pem").display(),
    );
    let mut settings = AgentSettings::from_toml_str(&toml).unwrap();
    settings.join_token = token;
    Agent::start(settings).await.unwrap()
}

async fn wait_synced(agent: &hallmark_agent::AgentHandle, connects: u64) {
    let mut status = agent.status();
    let reached = tokio::time::timeout(
        WAIT,
        status.wait_for(|s| s.attested && s.sync_connected && s.sync_connects >= connects),
    )
    .await
    .is_ok_and(|r| r.is_ok());
    assert!(
        reached,
        "agent never synced: {:?}",
        *agent.status().borrow()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_during_sustained_minting_loses_nothing_acknowledged() {
    let keys = tempfile::tempdir().unwrap();
    let signer =
        SigningKey::from_pkcs8_der(&SigningKey::generate_pkcs8(Algorithm::Ed25519).unwrap())
            .unwrap();
    let public = keys.path().join("ops.pub");
    std::fs::write(&public, signer.public_key().to_pem()).unwrap();
    let mut daemon = Daemon::new(&format!(
        "[images]\ntrusted_signers = [\"{}\"]\n",
        public.display()
    ));
    daemon.start(&[]);
    let node_addr = daemon.node_addr.unwrap();

    // Registrations and a revocation that must survive the crash.
    let channel = hallmark_server::admin::socket::connect(&daemon.socket())
        .await
        .unwrap();
    let mut admin = AdminClient::new(channel);
    for (name, code) in [("svc", SVC), ("other", OTHER)] {
        admin
            .register_image(RegisterImageRequest {
                envelope: envelope(&signer, name, code),
            })
            .await
            .unwrap();
    }
    drop(admin);
    let kill = daemon.json(&["kill", "--image", "other", "--reason", "drill"]);
    let kill_id = kill["id"].as_str().unwrap().to_owned();
    let key = daemon.save_key();

    let td = TrustDomain::new("example.org").unwrap();
    let pem = daemon.ok(&["bundle", "show", "--format", "pem"]);
    std::fs::write(daemon.path("bootstrap.pem"), &pem).unwrap();
    let bundle = Bundle::from_pem(td.clone(), &pem).unwrap();

    // An agent that must reconnect by itself after the crash.
    let token = daemon.json(&["token", "generate"])["token"]
        .as_str()
        .unwrap()
        .to_owned();
    let running_agent = agent(&daemon, Some(token)).await;
    wait_synced(&running_agent, 1).await;
    let agent_id = running_agent.spiffe_id().unwrap();

    // A raw node client: attest, then mint from four tasks at once.
    let token = daemon.json(&["token", "generate"])["token"]
        .as_str()
        .unwrap()
        .to_owned();
    let clock = Arc::new(SystemClock);
    let mut anonymous = node_client(node_addr, bundle.clone(), clock.clone(), None).await;
    let (node_key, result) = attest(&mut anonymous, &token).await.unwrap();
    let node_chain = result.svid.unwrap().cert_chain;
    let node_pkcs8 = node_key.pkcs8_der();
    let client = node_client(
        node_addr,
        bundle.clone(),
        clock.clone(),
        Some((&node_chain, &node_pkcs8)),
    )
    .await;
    let workload_key = CaKey::generate().unwrap().public_key_der();
    let acknowledged = Arc::new(Mutex::new(Vec::<String>::new()));
    let (enough, mut enough_rx) = tokio::sync::watch::channel(false);
    let enough = Arc::new(enough);
    let mut minters = Vec::new();
    for _ in 0..4 {
        let mut client = client.clone();
        let acknowledged = acknowledged.clone();
        let enough = enough.clone();
        let public_keys = vec![workload_key.clone()];
        minters.push(tokio::spawn(async move {
            // Bounded: the crash ends the loop long before this.
            for _ in 0..100_000 {
                let request = MintX509SvidsRequest {
                    evidence: Some(evidence(SVC)),
                    public_keys: public_keys.clone(),
                };
                let Ok(response) = client.mint_x509_svids(request).await else {
                    return;
                };
                let svid = response.into_inner().svids.remove(0).svid.unwrap();
                let serial = hallmark_ca::tls::leaf_serial(&svid.cert_chain[0]).unwrap();
                let mut all = acknowledged.lock().unwrap();
                all.push(serial);
                if all.len() >= BEFORE_CRASH {
                    enough.send_replace(true);
                }
            }
        }));
    }
    tokio::time::timeout(WAIT, enough_rx.wait_for(|done| *done))
        .await
        .expect("minting did not get going")
        .unwrap();
    // Mid-flight: the minters are still sending.
    daemon.kill9();
    for minter in minters {
        tokio::time::timeout(WAIT, minter)
            .await
            .expect("a minter hung after the crash")
            .unwrap();
    }
    let acknowledged: BTreeSet<String> = acknowledged.lock().unwrap().iter().cloned().collect();
    assert!(acknowledged.len() >= BEFORE_CRASH);

    // Restart on the same data directory and port.
    daemon.start(&["--bind-address", &node_addr.to_string()]);
    assert_eq!(daemon.node_addr, Some(node_addr));

    let images = daemon.ok(&["image", "list", "--all", "--output", "json"]);
    assert!(
        images.contains("\"svc@1.0.0\"") || images.contains("\"svc\""),
        "{images}"
    );
    assert!(images.contains("other"), "{images}");
    let kills = daemon.ok(&["kill", "list", "--output", "json"]);
    assert!(kills.contains(&kill_id), "{kills}");

    // Every SVID a client was handed has its audit record.
    let minted: BTreeSet<String> = daemon
        .audit_records()
        .iter()
        .filter(|r| r["kind"] == "svid_minted")
        .map(|r| r["fields"]["id"].as_str().unwrap().to_owned())
        .collect();
    let missing: Vec<_> = acknowledged.difference(&minted).collect();
    assert!(
        missing.is_empty(),
        "acknowledged but not audited: {missing:?}"
    );

    // Nothing reads as tampering; the unsigned tail is reported as such.
    let (code, report) = daemon.verify(&key);
    assert!(
        report["problems"].as_array().unwrap().is_empty(),
        "{report:#}"
    );
    match code {
        0 => assert_eq!(report["result"], "verified", "{report:#}"),
        3 => {
            assert_eq!(report["result"], "unverifiable_tail", "{report:#}");
            assert!(report["unverifiable_tail"]["first_seq"].as_u64().is_some());
        }
        other => panic!("audit verify exited {other}: {report:#}"),
    }
    // Signing a checkpoint now covers the tail: the whole history verifies.
    daemon.ok(&["audit", "checkpoint"]);
    let (code, report) = daemon.verify(&key);
    assert_eq!(code, 0, "{report:#}");

    // The agent reconnected by itself; the node SVID still mints, and the
    // revocation is still enforced.
    wait_synced(&running_agent, 2).await;
    let mut client = node_client(
        node_addr,
        bundle.clone(),
        clock.clone(),
        Some((&node_chain, &node_pkcs8)),
    )
    .await;
    client
        .mint_x509_svids(MintX509SvidsRequest {
            evidence: Some(evidence(SVC)),
            public_keys: vec![workload_key.clone()],
        })
        .await
        .expect("minting works after the restart");
    let refused = client
        .mint_x509_svids(MintX509SvidsRequest {
            evidence: Some(evidence(OTHER)),
            public_keys: vec![workload_key.clone()],
        })
        .await
        .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::PermissionDenied);
    assert!(
        refused.message().contains(&kill_id),
        "{}",
        refused.message()
    );

    // The restarted issuer's metrics count exactly that (a new process
    // starts from zero): one mint, one refusal by a kill, one Sync stream.
    let (status, body) = http_get(daemon.metrics_addr.unwrap(), "/metrics").unwrap();
    assert_eq!(status, 200);
    for (series, value) in [
        ("hallmark_server_svids_minted_total{type=\"x509\"}", 1.0),
        (
            "hallmark_server_svids_refused_total{type=\"x509\",reason=\"revoked\"}",
            1.0,
        ),
        (
            "hallmark_server_svids_refused_total{type=\"x509\",reason=\"code_digest_unknown\"}",
            0.0,
        ),
        (
            "hallmark_server_mint_duration_seconds_count{type=\"x509\"}",
            2.0,
        ),
        ("hallmark_server_sync_streams", 1.0),
        ("hallmark_server_revocations_in_force", 1.0),
        ("hallmark_server_images_registered", 2.0),
        ("hallmark_server_ready", 1.0),
    ] {
        assert_eq!(metric(&body, series), Some(value), "{series} in\n{body}");
    }

    // An agent restarted on its data directory keeps its node identity:
    // no token, same SPIFFE ID.
    running_agent.shutdown().await;
    assert!(!daemon.path("agent.sock").exists());
    let restarted = agent(&daemon, None).await;
    assert_eq!(restarted.spiffe_id(), Some(agent_id));
    wait_synced(&restarted, 1).await;
    restarted.shutdown().await;
}
