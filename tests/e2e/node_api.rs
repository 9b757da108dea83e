//! The issuer's node API driven by a raw client: attestation with both
//! attestors, every refusal with its exact status, renewal, eviction, bans,
//! restart and CA rotation.

use std::time::{Duration, SystemTime};

use tonic::Code;

use hallmark_ca::clock::Clock;
use hallmark_ca::key::CaKey;
use hallmark_proto::admin::{AgentRequest, ListAgentsRequest};
use hallmark_proto::node::{
    AgentRefusal, RenewAgentSvidRequest, ReportRefusalsRequest, SyncRequest,
};

use crate::common::*;
use crate::x509pop_fixture::{ProvisioningCa, attest_x509pop};

#[tokio::test]
async fn join_token_attestation_issues_a_verifiable_node_svid() {
    let server = TestServer::start().await;
    let token = server.token().await;
    let mut client = server.node_client(None).await.unwrap();
    let (key, result) = attest_join_token(&mut client, &token).await.unwrap();
    let svid = result.svid.unwrap();
    let node_id = &hallmark_attestors::node::join_token::node_id(&token);
    let expected = format!("spiffe://{TRUST_DOMAIN}/hallmark/agent/join_token/{node_id}");
    assert_eq!(svid.spiffe_id, expected);
    let parsed = cross_verify(&svid.cert_chain, &key, &server.bundle(), server.clock.now());
    assert_eq!(parsed, expected);
    // The bundle returned is the issuer's.
    let bundle = result.bundle.unwrap();
    assert_eq!(bundle.x509_authorities, server.bundle().x509_authorities);
    // Node SVIDs last the configured hour.
    let ttl = svid.expires_at - unix(server.clock.now());
    assert!((3500..=3600).contains(&ttl), "node SVID TTL {ttl}");

    let agents = server
        .admin()
        .await
        .list_agents(ListAgentsRequest {})
        .await
        .unwrap()
        .into_inner()
        .agents;
    assert_eq!(agents.len(), 1);
    assert_eq!(agents[0].spiffe_id, expected);
    assert_eq!(agents[0].attestor, "join_token");
}

#[tokio::test]
async fn join_token_refusals_say_why_and_store_nothing() {
    let server = TestServer::start().await;
    let mut client = server.node_client(None).await.unwrap();

    // Reused.
    let token = server.token().await;
    attest_join_token(&mut client, &token).await.unwrap();
    let err = attest_join_token(&mut client, &token).await.unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied, "{err:?}");
    assert!(err.message().contains("already used"), "{}", err.message());

    // Unknown (well-formed, never issued).
    let unknown = hallmark_attestors::node::join_token::generate();
    let err = attest_join_token(&mut client, &unknown).await.unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated, "{err:?}");
    assert!(err.message().contains("unknown"), "{}", err.message());

    // Expired.
    let short = server.token_with(60, "").await;
    server.clock.advance(Duration::from_secs(61));
    let err = attest_join_token(&mut client, &short).await.unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated, "{err:?}");
    assert!(err.message().contains("expired"), "{}", err.message());

    // Malformed.
    let err = attest_join_token(&mut client, "not a token")
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");

    // Only the first, successful attestation left a record.
    assert_eq!(server.agent_count().await, 1);
}

#[tokio::test]
async fn join_token_with_chosen_agent_id_and_refused_ids() {
    let server = TestServer::start().await;
    let chosen = format!("spiffe://{TRUST_DOMAIN}/hallmark/agent/k8s/node-7");
    let token = server.token_with(0, &chosen).await;
    let mut client = server.node_client(None).await.unwrap();
    let (_, result) = attest_join_token(&mut client, &token).await.unwrap();
    assert_eq!(result.svid.unwrap().spiffe_id, chosen);

    // A node may never receive a workload's or another trust domain's ID.
    let mut admin = server.admin().await;
    for bad in [
        format!("spiffe://{TRUST_DOMAIN}/invoice-agent"),
        "spiffe://other.org/hallmark/agent/x".to_owned(),
        "not-an-id".to_owned(),
    ] {
        let err = admin
            .generate_join_token(hallmark_proto::admin::GenerateJoinTokenRequest {
                ttl_seconds: 0,
                spiffe_id: bad.clone(),
            })
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument, "{bad}: {err:?}");
    }
}

#[tokio::test]
async fn x509pop_attestation_and_refusals() {
    let provisioning = ProvisioningCa::new();
    let other = ProvisioningCa::new();
    let roots = vec![provisioning.root_der()];
    let server = TestServer::start_with(|s| s.x509pop_roots = Some(roots)).await;
    let mut client = server.node_client(None).await.unwrap();

    let node = provisioning.node_cert("node-a", SystemTime::now() + Duration::from_secs(86400));
    let (key, result) = attest_x509pop(&mut client, &node, false).await.unwrap();
    let svid = result.svid.unwrap();
    let expected = format!(
        "spiffe://{TRUST_DOMAIN}/hallmark/agent/x509pop/{}",
        node.sha256_hex()
    );
    assert_eq!(svid.spiffe_id, expected);
    cross_verify(&svid.cert_chain, &key, &server.bundle(), server.clock.now());

    // Certificate from a CA the issuer does not trust.
    let stranger = other.node_cert("node-b", SystemTime::now() + Duration::from_secs(86400));
    let err = attest_x509pop(&mut client, &stranger, false)
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated, "{err:?}");

    // Right certificate, signature over the wrong nonce.
    let node_c = provisioning.node_cert("node-c", SystemTime::now() + Duration::from_secs(86400));
    let err = attest_x509pop(&mut client, &node_c, true)
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated, "{err:?}");
    assert!(err.message().contains("signature"), "{}", err.message());

    // Expired node certificate.
    let expired = provisioning.node_cert("node-d", SystemTime::now() - Duration::from_secs(60));
    let err = attest_x509pop(&mut client, &expired, false)
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated, "{err:?}");

    assert_eq!(server.agent_count().await, 1);
}

#[tokio::test]
async fn x509pop_is_refused_when_not_configured() {
    let provisioning = ProvisioningCa::new();
    let server = TestServer::start().await;
    let mut client = server.node_client(None).await.unwrap();
    let node = provisioning.node_cert("node-a", SystemTime::now() + Duration::from_secs(86400));
    let err = attest_x509pop(&mut client, &node, false).await.unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition, "{err:?}");
    assert_eq!(server.agent_count().await, 0);
}

#[tokio::test]
async fn node_calls_require_a_node_svid_from_this_ca() {
    let server = TestServer::start().await;
    // No client certificate: the handshake passes (for Attest), the call does not.
    let mut anonymous = server.node_client(None).await.unwrap();
    let err = anonymous
        .renew_agent_svid(RenewAgentSvidRequest {
            public_key: CaKey::generate().unwrap().public_key_der(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated, "{err:?}");
    let err = anonymous.sync(SyncRequest {}).await.unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated, "{err:?}");

    // A certificate from another issuer's CA fails the TLS handshake.
    let other = TestServer::start().await;
    let token = other.token().await;
    let mut other_client = other.node_client(None).await.unwrap();
    let (key, result) = attest_join_token(&mut other_client, &token).await.unwrap();
    let chain = result.svid.unwrap().cert_chain;
    // Either the connect fails or the first call does; it never succeeds.
    let outcome = tokio::time::timeout(Duration::from_secs(10), async {
        match server.node_client(Some((&chain, &key.pkcs8_der()))).await {
            Err(_) => None,
            Ok(mut client) => client
                .renew_agent_svid(RenewAgentSvidRequest {
                    public_key: key.public_key_der(),
                })
                .await
                .err()
                .map(|s| s.code()),
        }
    })
    .await
    .unwrap();
    assert!(
        matches!(
            outcome,
            None | Some(Code::Unavailable) | Some(Code::Unknown)
        ),
        "foreign certificate was not refused at the TLS layer: {outcome:?}"
    );
    assert_eq!(server.agent_count().await, 0);
}

#[tokio::test]
async fn renewal_rotates_the_node_svid() {
    let server = TestServer::start().await;
    let token = server.token().await;
    let mut client = server.node_client(None).await.unwrap();
    let (key, result) = attest_join_token(&mut client, &token).await.unwrap();
    let chain = result.svid.unwrap().cert_chain;

    let mut mtls = server
        .node_client(Some((&chain, &key.pkcs8_der())))
        .await
        .unwrap();
    let new_key = CaKey::generate().unwrap();
    let renewed = mtls
        .renew_agent_svid(RenewAgentSvidRequest {
            public_key: new_key.public_key_der(),
        })
        .await
        .unwrap()
        .into_inner()
        .svid
        .unwrap();
    assert_ne!(renewed.cert_chain[0], chain[0]);
    cross_verify(
        &renewed.cert_chain,
        &new_key,
        &server.bundle(),
        server.clock.now(),
    );

    // The new SVID authenticates too; the list shows its serial.
    let mut mtls2 = server
        .node_client(Some((&renewed.cert_chain, &new_key.pkcs8_der())))
        .await
        .unwrap();
    mtls2.sync(SyncRequest {}).await.unwrap();

    // An empty key is malformed input.
    let err = mtls2
        .renew_agent_svid(RenewAgentSvidRequest { public_key: vec![] })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    let err = mtls2
        .renew_agent_svid(RenewAgentSvidRequest {
            public_key: vec![1, 2, 3],
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
}

#[tokio::test]
async fn evicted_agent_cannot_renew_and_loses_its_sync_stream() {
    let server = TestServer::start().await;
    let token = server.token().await;
    let mut client = server.node_client(None).await.unwrap();
    let (key, result) = attest_join_token(&mut client, &token).await.unwrap();
    let svid = result.svid.unwrap();
    let mut mtls = server
        .node_client(Some((&svid.cert_chain, &key.pkcs8_der())))
        .await
        .unwrap();
    let mut sync = mtls.sync(SyncRequest {}).await.unwrap().into_inner();
    let first = sync.message().await.unwrap().unwrap();
    assert!(first.snapshot);

    server
        .admin()
        .await
        .evict_agent(AgentRequest {
            spiffe_id: svid.spiffe_id.clone(),
        })
        .await
        .unwrap();

    let ended = tokio::time::timeout(Duration::from_secs(5), sync.message())
        .await
        .unwrap();
    let err = ended.unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied, "{err:?}");

    let err = mtls
        .renew_agent_svid(RenewAgentSvidRequest {
            public_key: key.public_key_der(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied, "{err:?}");
    assert_eq!(server.agent_count().await, 0);

    // Evicting again: not found.
    let err = server
        .admin()
        .await
        .evict_agent(AgentRequest {
            spiffe_id: svid.spiffe_id,
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
}

#[tokio::test]
async fn banned_agent_cannot_attest_until_unbanned() {
    let provisioning = ProvisioningCa::new();
    let roots = vec![provisioning.root_der()];
    let server = TestServer::start_with(|s| s.x509pop_roots = Some(roots)).await;
    let node = provisioning.node_cert("node-a", SystemTime::now() + Duration::from_secs(86400));
    let mut client = server.node_client(None).await.unwrap();
    let (key, result) = attest_x509pop(&mut client, &node, false).await.unwrap();
    let svid = result.svid.unwrap();
    let mut admin = server.admin().await;
    let banned = admin
        .ban_agent(AgentRequest {
            spiffe_id: svid.spiffe_id.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(banned.banned);

    // Its SVID stops working at once, and it cannot re-attest.
    let mut mtls = server
        .node_client(Some((&svid.cert_chain, &key.pkcs8_der())))
        .await
        .unwrap();
    let err = mtls.sync(SyncRequest {}).await.unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied, "{err:?}");
    let err = attest_x509pop(&mut client, &node, false).await.unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied, "{err:?}");
    assert!(err.message().contains("banned"), "{}", err.message());

    // Evicting a banned agent would silently lift the ban: refused.
    let err = admin
        .evict_agent(AgentRequest {
            spiffe_id: svid.spiffe_id.clone(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition);

    admin
        .unban_agent(AgentRequest {
            spiffe_id: svid.spiffe_id.clone(),
        })
        .await
        .unwrap();
    attest_x509pop(&mut client, &node, false).await.unwrap();
    let err = admin
        .unban_agent(AgentRequest {
            spiffe_id: svid.spiffe_id,
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition);
}

#[tokio::test]
async fn evicted_agent_can_be_banned_and_then_cannot_attest_again() {
    let provisioning = ProvisioningCa::new();
    let roots = vec![provisioning.root_der()];
    let mut server = TestServer::start_with(|s| s.x509pop_roots = Some(roots)).await;
    let node = provisioning.node_cert("node-a", SystemTime::now() + Duration::from_secs(86400));
    let mut client = server.node_client(None).await.unwrap();
    let (_, result) = attest_x509pop(&mut client, &node, false).await.unwrap();
    let agent = result.svid.unwrap().spiffe_id;
    let mut admin = server.admin().await;
    admin
        .evict_agent(AgentRequest {
            spiffe_id: agent.clone(),
        })
        .await
        .unwrap();

    // No longer on record, and still bannable: the operator evicted first,
    // then learned the node was stolen.
    let banned = admin
        .ban_agent(AgentRequest {
            spiffe_id: agent.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(banned.banned);
    assert_eq!(banned.spiffe_id, agent);
    assert_eq!(banned.attestor, "", "nothing is known of an evicted agent");

    // The ban is recorded and audited, and holds across a restart.
    let records = audit_records(&server).await;
    assert!(
        records
            .iter()
            .any(|r| r["kind"] == "agent_banned" && r["fields"]["agent"] == agent.as_str()),
        "no agent_banned record"
    );
    drop(admin);
    drop(client);
    server.restart().await;
    let mut client = server.node_client(None).await.unwrap();
    let err = attest_x509pop(&mut client, &node, false).await.unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied, "{err:?}");
    assert!(err.message().contains("banned"), "{}", err.message());
    let mut admin = server.admin().await;
    let listed = admin
        .list_agents(ListAgentsRequest {})
        .await
        .unwrap()
        .into_inner()
        .agents;
    assert_eq!(listed.len(), 1);
    assert!(listed[0].banned);

    // Unbanning an agent that was never re-attested forgets it entirely,
    // and it may attest again.
    admin
        .unban_agent(AgentRequest {
            spiffe_id: agent.clone(),
        })
        .await
        .unwrap();
    assert_eq!(server.agent_count().await, 0);
    let (_, result) = attest_x509pop(&mut client, &node, false).await.unwrap();
    assert_eq!(result.svid.unwrap().spiffe_id, agent);
    let listed = admin
        .list_agents(ListAgentsRequest {})
        .await
        .unwrap()
        .into_inner()
        .agents;
    assert_eq!(listed[0].attestor, "x509pop");
    assert!(listed[0].first_attested_at > 0);

    // A ban of an ID outside the agents' namespace is still malformed input.
    let err = admin
        .ban_agent(AgentRequest {
            spiffe_id: format!("spiffe://{TRUST_DOMAIN}/workload"),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
}

#[tokio::test]
async fn a_banned_agents_refused_attempt_does_not_use_up_its_join_token() {
    let server = TestServer::start().await;
    let first = server.token().await;
    let mut client = server.node_client(None).await.unwrap();
    let (_, result) = attest_join_token(&mut client, &first).await.unwrap();
    let agent = result.svid.unwrap().spiffe_id;
    let mut admin = server.admin().await;
    admin
        .ban_agent(AgentRequest {
            spiffe_id: agent.clone(),
        })
        .await
        .unwrap();
    // A new token for the same agent, tried while it is banned: refused,
    // and still unused.
    let second = server.token_with(0, &agent).await;
    let err = attest_join_token(&mut client, &second).await.unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied, "{err:?}");
    assert!(err.message().contains("is banned"), "{}", err.message());
    admin
        .unban_agent(AgentRequest {
            spiffe_id: agent.clone(),
        })
        .await
        .unwrap();
    let (_, result) = attest_join_token(&mut client, &second).await.unwrap();
    assert_eq!(result.svid.unwrap().spiffe_id, agent);
}

#[tokio::test]
async fn restart_keeps_ca_nodes_and_tokens() {
    let mut server = TestServer::start().await;
    let token = server.token().await;
    let spare = server.token().await;
    let mut client = server.node_client(None).await.unwrap();
    let (key, result) = attest_join_token(&mut client, &token).await.unwrap();
    let svid = result.svid.unwrap();
    let bundle_before = server.bundle();
    drop(client);

    server.restart().await;

    assert_eq!(
        server.bundle().x509_authorities,
        bundle_before.x509_authorities
    );
    assert_eq!(server.agent_count().await, 1);
    // The node SVID minted before the restart still authenticates.
    let mut mtls = server
        .node_client(Some((&svid.cert_chain, &key.pkcs8_der())))
        .await
        .unwrap();
    mtls.sync(SyncRequest {}).await.unwrap();
    // The used token stays used, the spare one still works.
    let mut client = server.node_client(None).await.unwrap();
    let err = attest_join_token(&mut client, &token).await.unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);
    attest_join_token(&mut client, &spare).await.unwrap();
}

#[tokio::test]
async fn ca_and_jwt_key_rotation_reach_agents_over_sync() {
    // Node SVIDs long enough to outlive the jumps of the test clock.
    let server =
        TestServer::start_with(|s| s.agent_svid_ttl = Duration::from_secs(48 * 3600)).await;
    let token = server.token().await;
    let mut client = server.node_client(None).await.unwrap();
    let (key, result) = attest_join_token(&mut client, &token).await.unwrap();
    let svid = result.svid.unwrap();
    let mut mtls = server
        .node_client(Some((&svid.cert_chain, &key.pkcs8_der())))
        .await
        .unwrap();
    let mut sync = mtls.sync(SyncRequest {}).await.unwrap().into_inner();
    let snapshot = sync.message().await.unwrap().unwrap().bundle.unwrap();
    assert_eq!(snapshot.x509_authorities.len(), 1);
    assert_eq!(snapshot.jwt_authorities.len(), 1);
    let old_root = snapshot.x509_authorities[0].clone();
    let old_kid = snapshot.jwt_authorities[0].key_id.clone();

    // Past half-life: the next CA and JWT key are published before they sign.
    server.clock.advance(Duration::from_secs(13 * 3600));
    assert!(server.handle().authority().tick().unwrap());
    let update = tokio::time::timeout(Duration::from_secs(5), sync.message())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert!(!update.snapshot);
    let published = update.bundle.unwrap();
    assert!(published.sequence > snapshot.sequence);
    assert_eq!(published.x509_authorities.len(), 2);
    assert_eq!(published.jwt_authorities.len(), 2);
    // Still signed by the old CA.
    let token = server.token().await;
    let mut client = server.node_client(None).await.unwrap();
    let (k, r) = attest_join_token(&mut client, &token).await.unwrap();
    let chain = r.svid.unwrap().cert_chain;
    assert!(chains_to(&chain, &old_root));
    cross_verify(&chain, &k, &server.bundle(), server.clock.now());

    // Past 5/6: the prepared CA signs; the old root stays published.
    server.clock.advance(Duration::from_secs(8 * 3600));
    server.handle().authority().tick().unwrap();
    let token = server.token().await;
    let mut client = server.node_client(None).await.unwrap();
    let (k, r) = attest_join_token(&mut client, &token).await.unwrap();
    let chain = r.svid.unwrap().cert_chain;
    assert!(
        !chains_to(&chain, &old_root),
        "new SVIDs must chain to the new CA"
    );
    cross_verify(&chain, &k, &server.bundle(), server.clock.now());
    let bundle = server.bundle();
    assert!(bundle.x509_authorities.contains(&old_root));
    assert!(bundle.jwt_authorities.iter().any(|a| a.key_id == old_kid));

    // After the old CA expired, its root leaves the bundle.
    server.clock.advance(Duration::from_secs(4 * 3600));
    server.handle().authority().tick().unwrap();
    let bundle = server.bundle();
    assert!(!bundle.x509_authorities.contains(&old_root));
    assert!(!bundle.x509_authorities.is_empty());
}

/// Whether `chain`'s leaf was issued by the CA whose certificate is `root`.
fn chains_to(chain: &[Vec<u8>], root: &[u8]) -> bool {
    use x509_parser::prelude::*;
    let (_, leaf) = X509Certificate::from_der(&chain[0]).unwrap();
    let (_, ca) = X509Certificate::from_der(root).unwrap();
    leaf.verify_signature(Some(ca.public_key())).is_ok()
}

/// `ReportRefusals`: what an agent refused itself lands in the issuer's
/// audit log, named after the reporting node; malformed reports are
/// refused whole, and only an attested agent may report.
#[tokio::test]
async fn reported_workload_refusals_are_audited_under_the_reporting_node() {
    let server = TestServer::start().await;
    let token = server.token().await;
    let mut client = server.node_client(None).await.unwrap();
    let (key, result) = attest_join_token(&mut client, &token).await.unwrap();
    let svid = result.svid.unwrap();
    let refusal = |kind: &str, count| AgentRefusal {
        kind: kind.into(),
        call: "x509".into(),
        reason: format!("PermissionDenied: {} é", "x".repeat(2000)),
        uid: 1000,
        pid: 4242,
        exe_path: "/usr/bin/python3.11".into(),
        count,
    };
    // Unauthenticated: refused.
    let err = client
        .report_refusals(ReportRefusalsRequest {
            refusals: vec![refusal("sender", 1)],
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated, "{err:?}");

    let mut agent = server
        .node_client(Some((&svid.cert_chain, &key.pkcs8_der())))
        .await
        .unwrap();
    for (bad, needle) in [
        (
            vec![refusal("rumour", 1)],
            "unknown refusal kind \"rumour\"",
        ),
        (vec![refusal("sender", 0)], "count must be at least 1"),
        (vec![refusal("sender", 1); 257], "more than 256"),
    ] {
        let err = agent
            .report_refusals(ReportRefusalsRequest { refusals: bad })
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
        assert!(err.message().contains(needle), "{}", err.message());
    }
    let mut call = refusal("challenge", 3);
    call.call = "jwt".into();
    agent
        .report_refusals(ReportRefusalsRequest {
            refusals: vec![refusal("sender", 2), call],
        })
        .await
        .unwrap();
    let records: Vec<_> = audit_records(&server)
        .await
        .into_iter()
        .filter(|r| r["kind"] == "workload_refused")
        .collect();
    assert_eq!(records.len(), 2, "{records:#?}");
    let node = &svid.spiffe_id;
    let sender = records
        .iter()
        .find(|r| r["fields"]["refused_by"] == "sender")
        .unwrap();
    assert_eq!(sender["fields"]["node"], node.as_str());
    assert_eq!(sender["fields"]["call"], "x509");
    assert_eq!(sender["fields"]["uid"], 1000);
    assert_eq!(sender["fields"]["pid"], 4242);
    assert_eq!(sender["fields"]["count"], 2);
    assert_eq!(sender["fields"]["exe_path"], "/usr/bin/python3.11");
    let reason = sender["fields"]["reason"].as_str().unwrap();
    assert!(reason.len() <= 512 && reason.starts_with("PermissionDenied: xxx"));
    let challenge = records
        .iter()
        .find(|r| r["fields"]["refused_by"] == "challenge")
        .unwrap();
    assert_eq!(challenge["fields"]["call"], "jwt");
    assert_eq!(challenge["fields"]["count"], 3);
}
