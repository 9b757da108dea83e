//! What the audit log holds after a normal day, in process: a join token,
//! an attestation, a registration, X.509 and JWT mints, a refused mint, a
//! cosignature, a kill and its lift, a retirement, ban, unban and eviction,
//! with every admin call and the caller's uid; and that a mint or an admin
//! call whose audit record cannot be written fails closed.

#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod audit_support;
mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use base64::Engine as _;
use serde_json::{Value, json};
use tonic::Code;
use tonic::transport::Channel;

use audit_support::{attest, evidence, my_uid, node_client};
use hallmark_ca::clock::ManualClock;
use hallmark_ca::key::CaKey;
use hallmark_ca::tls::leaf_serial;
use hallmark_proto::admin::{
    AgentRequest, CreateRevocationRequest, GenerateJoinTokenRequest, LiftRevocationRequest,
    RegisterImageRequest, RetireImageRequest,
};
use hallmark_proto::node::node_client::NodeClient;
use hallmark_proto::node::{MintJwtSvidRequest, MintX509SvidsRequest};
use hallmark_server::audit::verify::{Options, Verdict, verify};
use hallmark_server::audit::{AuditError, AuditRecord, Entry, export};
use hallmark_server::config::ServerSettings;
use hallmark_server::events::{EventSink, Recorded, SecurityEvent};
use hallmark_server::image::{SignaturePolicy, TrustedSigners};
use hallmark_server::server::start_with_events;
use hallmark_server::store::StoreError;
use support::{CODE, Issuer, START, key, manifest, payload, secs, sign};

const OTHER_CODE: &str = "2222222222222222222222222222222222222222222222222222222222222222";

async fn token(admin: &mut hallmark_proto::admin::admin_client::AdminClient<Channel>) -> String {
    admin
        .generate_join_token(GenerateJoinTokenRequest {
            ttl_seconds: 0,
            spiffe_id: String::new(),
        })
        .await
        .unwrap()
        .into_inner()
        .token
}

/// Attests with `token`; a mutual-TLS node client and the agent's ID.
async fn agent(
    handle: &hallmark_server::server::ServerHandle,
    clock: &ManualClock,
    token: &str,
) -> (NodeClient<Channel>, String) {
    let bundle = handle.authority().bundle();
    let clock: Arc<dyn hallmark_ca::clock::Clock> = Arc::new(clock.clone());
    let mut anonymous = node_client(handle.node_addr(), bundle.clone(), clock.clone(), None).await;
    let (key, result) = attest(&mut anonymous, token).await.unwrap();
    let svid = result.svid.unwrap();
    let client = node_client(
        handle.node_addr(),
        bundle,
        clock,
        Some((&svid.cert_chain, &key.pkcs8_der())),
    )
    .await;
    (client, svid.spiffe_id)
}

fn x509_request(code: &str) -> MintX509SvidsRequest {
    MintX509SvidsRequest {
        evidence: Some(evidence(code)),
        public_keys: vec![CaKey::generate().unwrap().public_key_der()],
    }
}

fn jwt_request() -> MintJwtSvidRequest {
    MintJwtSvidRequest {
        evidence: Some(evidence(CODE)),
        audience: vec!["billing".into()],
        spiffe_id: String::new(),
    }
}

fn records(log: &hallmark_server::audit::AuditLog) -> Vec<AuditRecord> {
    export(log, 1)
        .unwrap()
        .into_iter()
        .filter_map(|e| match e {
            Entry::Record(bytes) => Some(AuditRecord::decode(&bytes).unwrap()),
            Entry::Checkpoint(_) => None,
        })
        .collect()
}

#[tokio::test]
async fn a_normal_flow_is_recorded_in_order_with_its_fields() {
    let (alice, bob) = (key(), key());
    let mut issuer = Issuer::start(&[&alice, &bob]).await;
    let uid = Value::from(my_uid(issuer.dir.path()));
    let handle = issuer.handle.take().unwrap();

    let token = token(&mut issuer.admin).await;
    let (mut node, agent_id) = agent(&handle, &issuer.clock, &token).await;
    let low = payload(&manifest("invoice", "low", ""));
    issuer.register(sign(&low, &[&alice])).await.unwrap();

    let minted = node
        .mint_x509_svids(x509_request(CODE))
        .await
        .unwrap()
        .into_inner();
    let chain = &minted.svids[0].svid.as_ref().unwrap().cert_chain;
    let serial = leaf_serial(&chain[0]).unwrap();
    let jwt = node
        .mint_jwt_svid(jwt_request())
        .await
        .unwrap()
        .into_inner();
    let claims: Value = serde_json::from_slice(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(jwt.svids[0].token.split('.').nth(1).unwrap())
            .unwrap(),
    )
    .unwrap();
    let refused = node
        .mint_x509_svids(x509_request(OTHER_CODE))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::PermissionDenied);

    issuer.register(sign(&low, &[&alice, &bob])).await.unwrap();
    let kill = issuer
        .admin
        .create_revocation(CreateRevocationRequest {
            image: "invoice@1.0.0".into(),
            reason: "suspected prompt injection".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    issuer
        .admin
        .lift_revocation(LiftRevocationRequest {
            id: kill.id.clone(),
            reason: "false alarm".into(),
        })
        .await
        .unwrap();
    let retire = RetireImageRequest {
        name: "invoice".into(),
        version: "1.0.0".into(),
        reason: "superseded".into(),
    };
    issuer.admin.retire_image(retire.clone()).await.unwrap();
    let again = issuer.admin.retire_image(retire).await.unwrap_err();
    assert_eq!(again.code(), Code::FailedPrecondition);
    let agent_request = AgentRequest {
        spiffe_id: agent_id.clone(),
    };
    issuer.admin.ban_agent(agent_request.clone()).await.unwrap();
    issuer
        .admin
        .unban_agent(agent_request.clone())
        .await
        .unwrap();
    issuer.admin.evict_agent(agent_request).await.unwrap();

    let log = handle.audit().clone();
    let all = records(&log);
    let kinds: Vec<&str> = all.iter().map(|r| r.kind.as_str()).collect();
    assert_eq!(
        kinds,
        [
            "issuer_started",
            "token_generated",
            "admin_call",
            "node_attested",
            "image_registered",
            "admin_call",
            "svid_minted",
            "svid_minted",
            "svid_refused",
            "image_cosigned",
            "admin_call",
            "kill_created",
            "admin_call",
            "kill_lifted",
            "admin_call",
            "image_retired",
            "admin_call",
            "admin_call",
            "agent_banned",
            "admin_call",
            "agent_unbanned",
            "admin_call",
            "agent_evicted",
            "admin_call",
        ]
    );
    let seqs: Vec<u64> = all.iter().map(|r| r.seq).collect();
    assert_eq!(seqs, (1..=all.len() as u64).collect::<Vec<_>>());
    let f = |i: usize| Value::Object(all[i].fields.clone());
    let start_time = std::time::UNIX_EPOCH + secs(START);
    assert!(
        all.iter().all(|r| r.time == start_time),
        "the issuer's clock"
    );

    assert_eq!(f(1)["uid"], uid);
    assert_eq!(f(1)["token_id"].as_str().unwrap().len(), 32);
    assert!(
        !f(1).to_string().contains(&token),
        "the token is never recorded"
    );
    assert_eq!(
        f(2),
        json!({"method": "GenerateJoinToken", "uid": uid, "code": "Ok",
               "outcome": f(2)["outcome"].clone()})
    );
    assert_eq!(f(3)["agent"], agent_id);
    assert_eq!(f(3)["attestor"], "join_token");
    assert_eq!(f(4)["created"], true);
    assert_eq!(f(4)["signers"], json!([alice.keyid()]));
    assert_eq!(f(4)["uid"], uid);
    assert_eq!(
        f(6),
        json!({
            "svid_type": "x509", "id": serial, "spiffe_id": "spiffe://example.org/invoice",
            "image": "invoice@1.0.0", "code_sha256": CODE, "model_digest": null,
            "node": agent_id, "ttl_secs": 300,
        })
    );
    assert_eq!(f(7)["svid_type"], "jwt");
    assert_eq!(f(7)["id"], claims["jti"]);
    assert_eq!(f(7)["ttl_secs"], 300);
    assert_eq!(f(8)["node"], agent_id);
    assert_eq!(f(8)["reason"], refused.message());
    assert_eq!(f(8)["evidence_digest"].as_str().unwrap().len(), 64);
    assert_eq!(f(9)["signers"].as_array().unwrap().len(), 2);
    assert_eq!(f(11)["id"], kill.id);
    assert_eq!(f(11)["reason"], "suspected prompt injection");
    assert_eq!(f(11)["uid"], uid);
    assert_eq!(f(13)["reason"], "false alarm");
    assert_eq!(f(15)["reason"], "superseded");
    assert_eq!(f(15)["uid"], uid);
    assert_eq!(f(17)["method"], "RetireImage");
    assert_eq!(f(17)["code"], "FailedPrecondition");
    assert!(f(17)["outcome"].as_str().unwrap().starts_with("refused: "));
    assert_eq!(all[18].kind, "agent_banned");
    assert_eq!(
        f(18),
        json!({"agent": agent_id, "on_record": true, "uid": uid})
    );
    for (i, kind) in [(20, "agent_unbanned"), (22, "agent_evicted")] {
        assert_eq!(all[i].kind, kind);
        assert_eq!(f(i), json!({"agent": agent_id, "uid": uid}));
    }
    for i in (0..all.len()).filter(|&i| all[i].kind == "admin_call") {
        assert_eq!(f(i)["uid"], uid, "seq {}", all[i].seq);
    }

    // The chain holds; once checkpointed, all of it is proven.
    let report = verify(
        export(&log, 1).unwrap(),
        log.public_key(),
        Options::default(),
    );
    assert_eq!(report.verdict, Verdict::UnverifiableTail);
    log.checkpoint().await.unwrap().unwrap();
    let report = verify(
        export(&log, 1).unwrap(),
        log.public_key(),
        Options::default(),
    );
    assert_eq!(report.verdict, Verdict::Verified, "{report:#?}");

    // A clean shutdown ends the log with `issuer_stopping` and signs it.
    drop(log);
    handle.shutdown().await;
    let reopened = Issuer::start_in(issuer.dir, &[&alice], issuer.clock).await;
    let log = reopened.handle().audit();
    let after = records(log);
    assert_eq!(after[all.len()].kind, "issuer_stopping");
    let report = verify(
        export(log, 1).unwrap(),
        log.public_key(),
        Options::default(),
    );
    assert_eq!(report.verified_through, Some(all.len() as u64 + 1));
}

/// Fails every event while switched on.
#[derive(Debug, Default)]
struct Failing(AtomicBool);

impl EventSink for Failing {
    fn record(&self, _: SecurityEvent) -> Recorded {
        if self.0.load(Ordering::SeqCst) {
            Recorded::ready(Err(AuditError::Store(StoreError::Backend(
                "injected audit failure".into(),
            ))))
        } else {
            Recorded::ready(Ok(()))
        }
    }
}

#[tokio::test]
async fn operations_whose_audit_record_fails_are_not_acknowledged() {
    let alice = key();
    let dir = tempfile::tempdir().unwrap();
    let mut settings = ServerSettings::for_dirs(
        "example.org".parse().unwrap(),
        dir.path().join("data"),
        dir.path().join("admin.sock"),
    );
    let mut signers = TrustedSigners::new();
    signers.insert(alice.public_key().clone());
    settings.trusted_signers = Arc::new(signers);
    settings.signature_policy = SignaturePolicy::default();
    let clock = ManualClock::new(std::time::UNIX_EPOCH + secs(START));
    let failing = Arc::new(Failing::default());
    let handle = start_with_events(settings, Arc::new(clock.clone()), failing.clone())
        .await
        .unwrap();
    let channel = hallmark_server::admin::socket::connect(handle.admin_socket())
        .await
        .unwrap();
    let mut admin = hallmark_proto::admin::admin_client::AdminClient::new(channel);
    let first = token(&mut admin).await;
    let spare = token(&mut admin).await;
    let (mut node, _) = agent(&handle, &clock, &first).await;
    let envelope = sign(&payload(&manifest("invoice", "low", "")), &[&alice]);
    admin
        .register_image(RegisterImageRequest {
            envelope: envelope.clone(),
        })
        .await
        .unwrap();
    node.mint_x509_svids(x509_request(CODE)).await.unwrap();

    failing.0.store(true, Ordering::SeqCst);
    let err = node.mint_x509_svids(x509_request(CODE)).await.unwrap_err();
    assert_eq!(err.code(), Code::Unavailable);
    assert!(
        err.message().contains("not issued") && err.message().contains("injected audit failure"),
        "{}",
        err.message()
    );
    let err = node.mint_jwt_svid(jwt_request()).await.unwrap_err();
    assert_eq!(err.code(), Code::Unavailable, "{}", err.message());
    let err = node
        .mint_x509_svids(x509_request(OTHER_CODE))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unavailable, "{}", err.message());
    assert!(err.message().starts_with("refused ("), "{}", err.message());

    let bundle = handle.authority().bundle();
    let mut anonymous =
        node_client(handle.node_addr(), bundle, Arc::new(clock.clone()), None).await;
    let err = attest(&mut anonymous, &spare).await.unwrap_err();
    assert_eq!(err.code(), Code::Unavailable);
    assert!(
        err.message().contains("node SVID was not issued"),
        "{}",
        err.message()
    );

    let err = admin
        .generate_join_token(GenerateJoinTokenRequest {
            ttl_seconds: 0,
            spiffe_id: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unavailable);
    assert!(
        err.message().contains("GenerateJoinToken was carried out"),
        "{}",
        err.message()
    );
    let err = admin
        .register_image(RegisterImageRequest { envelope })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unavailable, "{}", err.message());

    failing.0.store(false, Ordering::SeqCst);
    let minted = node.mint_x509_svids(x509_request(CODE)).await.unwrap();
    assert_eq!(minted.into_inner().svids.len(), 1);
    handle.shutdown().await;
}
