//! The issuer's half of the kill switch over the raw node API: minting stops
//! the moment `CreateRevocation` returns (no waiting: the next call is
//! refused), `Sync` pushes every change to every agent, a revoked agent is
//! refused everywhere with the revocation attached, and the set survives a
//! restart and comes first on a new stream.

use hallmark_ca::key::CaKey;
use hallmark_proto::admin::ListAgentsRequest;
use hallmark_proto::node::node_client::NodeClient;
use hallmark_proto::node::{
    MintJwtSvidRequest, MintX509SvidsRequest, RevocationKind, SyncRequest, SyncResponse,
    TreeEvidence, WorkloadEvidence,
};
use hallmark_proto::{REVOCATION_METADATA, decode_revocation};
use tonic::Code;
use tonic::transport::Channel;

use crate::common::*;
use crate::kill::{KillEnv, WAIT};

/// An attested raw agent with mutual TLS, optionally with a chosen ID.
async fn raw_agent(env: &KillEnv, spiffe_id: &str) -> (NodeClient<Channel>, String) {
    let token = env.server.token_with(0, spiffe_id).await;
    let mut anonymous = env.server.node_client(None).await.unwrap();
    let (key, result) = attest_join_token(&mut anonymous, &token).await.unwrap();
    let svid = result.svid.unwrap();
    let client = env
        .server
        .node_client(Some((&svid.cert_chain, &key.pkcs8_der())))
        .await
        .unwrap();
    (client, svid.spiffe_id)
}

fn evidence(env: &KillEnv) -> WorkloadEvidence {
    WorkloadEvidence {
        pid: 4242,
        exe_path: "/usr/bin/agent".into(),
        exe_sha256: env.code.clone(),
        model: Some(TreeEvidence {
            dir: "/models/tiny".into(),
            digest: env.model_digest.clone(),
            files: vec![],
        }),
        loaded_code: Some(Default::default()),
        ..WorkloadEvidence::default()
    }
}

async fn mint(node: &mut NodeClient<Channel>, env: &KillEnv) -> Result<Vec<String>, tonic::Status> {
    let keys: Vec<Vec<u8>> = (0..2)
        .map(|_| CaKey::generate().unwrap().public_key_der())
        .collect();
    let response = node
        .mint_x509_svids(MintX509SvidsRequest {
            evidence: Some(evidence(env)),
            public_keys: keys,
        })
        .await?
        .into_inner();
    Ok(response.svids.into_iter().map(|s| s.image).collect())
}

async fn next_sync(
    stream: &mut tonic::Streaming<SyncResponse>,
) -> Result<SyncResponse, tonic::Status> {
    tokio::time::timeout(WAIT, stream.message())
        .await
        .expect("no sync message in time")
        .map(|m| m.expect("sync stream ended without a status"))
}

/// The revocation a refusal carries in `hallmark-revocation-bin`.
fn attached(status: &tonic::Status) -> hallmark_proto::node::Revocation {
    let bytes = status
        .metadata()
        .get_bin(REVOCATION_METADATA)
        .unwrap_or_else(|| panic!("no revocation attached to {status:?}"))
        .to_bytes()
        .unwrap();
    decode_revocation(&bytes).unwrap()
}

#[tokio::test]
async fn minting_stops_the_moment_the_kill_returns_and_resumes_on_lift() {
    let env = KillEnv::start().await;
    let (mut node, _) = raw_agent(&env, "").await;
    assert_eq!(
        mint(&mut node, &env).await.unwrap(),
        ["alpha@1.0.0", "beta@1.0.0"]
    );

    let image = env.kill("image", "alpha", "leaked signing key").await;
    // No wait: the very next call is refused for alpha, beta still mints.
    assert_eq!(mint(&mut node, &env).await.unwrap(), ["beta@1.0.0"]);
    let jwts = node
        .mint_jwt_svid(MintJwtSvidRequest {
            evidence: Some(evidence(&env)),
            audience: vec!["payments".into()],
            spiffe_id: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        jwts.svids
            .iter()
            .map(|s| s.image.as_str())
            .collect::<Vec<_>>(),
        ["beta@1.0.0"]
    );

    let code = env.kill("code", &env.code, "backdoored binary").await;
    let err = mint(&mut node, &env).await.unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);
    assert_eq!(
        err.message(),
        format!(
            "no gold image matches: alpha@1.0.0: revoked: kill {} (image alpha): leaked signing key; beta@1.0.0: revoked: kill {} (code {}): backdoored binary",
            image.id, code.id, env.code
        )
    );

    env.lift(&code.id).await;
    assert_eq!(mint(&mut node, &env).await.unwrap(), ["beta@1.0.0"]);
    env.lift(&image.id).await;
    assert_eq!(
        mint(&mut node, &env).await.unwrap(),
        ["alpha@1.0.0", "beta@1.0.0"]
    );
}

#[tokio::test]
async fn every_sync_stream_is_told_at_once_and_a_revoked_agent_is_refused_everywhere() {
    let env = KillEnv::start().await;
    let a_id = format!("spiffe://{TRUST_DOMAIN}/hallmark/agent/join_token/node-a");
    let (mut a, _) = raw_agent(&env, &a_id).await;
    let (mut b, b_id) = raw_agent(&env, "").await;
    let mut a_sync = a.sync(SyncRequest {}).await.unwrap().into_inner();
    let mut b_sync = b.sync(SyncRequest {}).await.unwrap().into_inner();
    for stream in [&mut a_sync, &mut b_sync] {
        let first = next_sync(stream).await.unwrap();
        assert!(first.snapshot);
        assert!(first.revocations.is_empty());
    }

    let kill = env.kill("node", &a_id, "stolen laptop").await;
    // A is told, then refused with the revocation attached.
    let told = next_sync(&mut a_sync).await.unwrap();
    assert_eq!(told.revocations.len(), 1);
    let pushed = &told.revocations[0];
    assert_eq!(
        (
            pushed.id.as_str(),
            pushed.kind,
            pushed.target.as_str(),
            pushed.reason.as_str()
        ),
        (
            kill.id.as_str(),
            RevocationKind::Node as i32,
            a_id.as_str(),
            "stolen laptop"
        )
    );
    let refused = next_sync(&mut a_sync).await.unwrap_err();
    assert_eq!(refused.code(), Code::PermissionDenied);
    assert_eq!(attached(&refused).id, kill.id);
    // B is told and keeps its stream, its calls, its identity.
    let told = next_sync(&mut b_sync).await.unwrap();
    assert!(!told.snapshot);
    assert_eq!(told.revocations, std::slice::from_ref(pushed));
    assert_eq!(
        mint(&mut b, &env).await.unwrap(),
        ["alpha@1.0.0", "beta@1.0.0"]
    );

    // Every mTLS call of A is refused, naming the kill.
    for err in [
        mint(&mut a, &env).await.unwrap_err(),
        a.sync(SyncRequest {}).await.unwrap_err(),
    ] {
        assert_eq!(err.code(), Code::PermissionDenied);
        assert!(
            err.message()
                .contains(&format!("kill {} (node {a_id}): stolen laptop", kill.id)),
            "{}",
            err.message()
        );
        assert_eq!(attached(&err).id, kill.id);
    }
    // A cannot come back under the same ID, and its node SVIDs are forgotten.
    let token = env.server.token_with(0, &a_id).await;
    let mut anonymous = env.server.node_client(None).await.unwrap();
    let err = attest_join_token(&mut anonymous, &token).await.unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);
    assert_eq!(attached(&err).id, kill.id);
    let agents = env
        .server
        .admin()
        .await
        .list_agents(ListAgentsRequest {})
        .await
        .unwrap()
        .into_inner()
        .agents;
    let listed = |id: &str| agents.iter().find(|x| x.spiffe_id == id).unwrap().clone();
    assert_eq!(listed(&a_id).svid_serial, "");
    assert_ne!(listed(&b_id).svid_serial, "");

    // After the lift B hears it, A's old SVID stays dead, and A attests anew.
    env.lift(&kill.id).await;
    assert!(next_sync(&mut b_sync).await.unwrap().revocations.is_empty());
    let err = mint(&mut a, &env).await.unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);
    assert!(
        err.message().contains("no longer honoured"),
        "{}",
        err.message()
    );
    let (mut again, id) = raw_agent(&env, &a_id).await;
    assert_eq!(id, a_id);
    assert_eq!(
        mint(&mut again, &env).await.unwrap(),
        ["alpha@1.0.0", "beta@1.0.0"]
    );
}

#[tokio::test]
async fn revocations_survive_an_issuer_restart_and_come_in_the_first_sync_message() {
    let mut env = KillEnv::start().await;
    let kill = env
        .kill("spiffe_id", "spiffe://example.org/alpha", "offboarded")
        .await;
    env.server.restart().await;
    let (mut node, _) = raw_agent(&env, "").await;
    assert_eq!(mint(&mut node, &env).await.unwrap(), ["beta@1.0.0"]);
    let mut sync = node.sync(SyncRequest {}).await.unwrap().into_inner();
    let first = next_sync(&mut sync).await.unwrap();
    assert!(first.snapshot);
    assert_eq!(
        first
            .revocations
            .iter()
            .map(|r| r.id.as_str())
            .collect::<Vec<_>>(),
        [kill.id.as_str()]
    );
}
