//! Flooding the audit log (issue 13, attack 5): one source refused again and
//! again leaves a bounded number of audit records (the first refusal in
//! full, then one `refusals_suppressed` record carrying the count), and the
//! issuer goes on serving well-behaved nodes meanwhile.
//!
//! Every assertion is on counts, never on durations. The issuer runs on a
//! manual clock, so the whole flood falls in one aggregation interval; the
//! interval's end is reached by advancing that clock, or by a clean shutdown,
//! which writes every open count.

use std::collections::HashMap;

use tonic::Code;
use tonic::transport::Channel;

use hallmark_ca::key::CaKey;
use hallmark_proto::node::node_client::NodeClient;
use hallmark_proto::node::{
    AttestParams, JoinTokenParams, MintX509SvidsRequest, RenewAgentSvidRequest, TreeEvidence,
    WorkloadEvidence, attest_params,
};
use hallmark_server::image::GoldImage;
use hallmark_server::issuance::matcher::{Candidate, Matcher};

use crate::common::*;

const CODE: &str = "1111111111111111111111111111111111111111111111111111111111111111";
const MODEL: &str = "sha256:2222222222222222222222222222222222222222222222222222222222222222";
/// An executable no image allows.
const UNREGISTERED: &str = "9999999999999999999999999999999999999999999999999999999999999999";
/// Concurrent callers in a flood.
const WORKERS: usize = 16;

fn image() -> Candidate {
    let text = format!(
        r#"
        name = "invoice-agent"
        version = "1.0.0"
        spiffe_id = "spiffe://example.org/invoice-agent"
        owner = "alice@example.org"
        purpose = "reads invoices"
        risk_tier = "low"
        not_after = 2099-12-31
        [code]
        sha256 = ["{CODE}"]
        [model]
        name = "llama"
        version = "3.1"
        digest = "{MODEL}"
        "#
    );
    Candidate {
        image: GoldImage::from_toml(&text).unwrap(),
        signers: vec![],
        retired: false,
    }
}

fn evidence(exe_sha256: &str, pid: u32) -> WorkloadEvidence {
    WorkloadEvidence {
        pid,
        uid: 1000,
        gid: 1000,
        exe_path: "/usr/bin/python3".into(),
        exe_sha256: exe_sha256.into(),
        start_time: u64::from(pid) * 7,
        model: Some(TreeEvidence {
            dir: "/models/llama".into(),
            digest: MODEL.into(),
            files: vec![],
        }),
        env: HashMap::new(),
        loaded_code: Some(Default::default()),
        ..Default::default()
    }
}

fn mint_request(exe_sha256: &str, pid: u32) -> MintX509SvidsRequest {
    MintX509SvidsRequest {
        evidence: Some(evidence(exe_sha256, pid)),
        public_keys: vec![CaKey::generate().unwrap().public_key_der()],
    }
}

/// An attested raw agent connection with mutual TLS, and its SPIFFE ID.
async fn node(server: &TestServer) -> (NodeClient<Channel>, String) {
    let token = server.token().await;
    let mut client = server.node_client(None).await.unwrap();
    let (key, result) = attest_join_token(&mut client, &token).await.unwrap();
    let svid = result.svid.unwrap();
    let client = server
        .node_client(Some((&svid.cert_chain, &key.pkcs8_der())))
        .await
        .unwrap();
    (client, svid.spiffe_id)
}

/// `calls` calls of `call` from [`WORKERS`] concurrent tasks; each outcome's
/// status code, counted.
async fn flood<F, Fut>(calls: usize, call: F) -> HashMap<Code, usize>
where
    F: Fn(usize) -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = Code> + Send,
{
    let mut tasks = tokio::task::JoinSet::new();
    for worker in 0..WORKERS {
        let call = call.clone();
        tasks.spawn(async move {
            let mut codes = Vec::new();
            for i in (worker..calls).step_by(WORKERS) {
                codes.push(call(i).await);
            }
            codes
        });
    }
    let mut counted = HashMap::new();
    while let Some(codes) = tasks.join_next().await {
        for code in codes.unwrap() {
            *counted.entry(code).or_insert(0) += 1;
        }
    }
    counted
}

/// Mints one SVID `times` times for the registered image, one call after
/// the other; every call must succeed.
async fn well_behaved(mut client: NodeClient<Channel>, times: u32) -> usize {
    let mut minted = 0;
    for pid in 0..times {
        let response = client
            .mint_x509_svids(mint_request(CODE, 10_000 + pid))
            .await
            .expect("a well-behaved node gets its SVIDs during the flood")
            .into_inner();
        minted += response.svids.len();
    }
    minted
}

fn of_kind<'a>(
    records: &'a [serde_json::Value],
    kind: &'a str,
) -> impl Iterator<Item = &'a serde_json::Value> + 'a {
    records.iter().filter(move |r| r["kind"] == kind)
}

#[tokio::test]
async fn an_attest_flood_from_one_peer_leaves_one_refusal_and_one_count() {
    const FLOOD: usize = 1_000;
    let mut server = TestServer::start().await;
    server.handle().images().replace(Matcher::new([image()]));
    let (good, _) = node(&server).await;

    // Unauthenticated Attest calls over one TLS connection (HTTP/2 streams
    // on one channel), each refused, while another node mints.
    let anonymous = server.node_client(None).await.unwrap();
    let flooding = flood(FLOOD, move |_| {
        let mut client = anonymous.clone();
        async move {
            let params = AttestParams {
                public_key: CaKey::generate().unwrap().public_key_der(),
                attestor: Some(attest_params::Attestor::JoinToken(JoinTokenParams {
                    token: "not-a-token".into(),
                })),
            };
            match attest_once(&mut client, params).await {
                Ok(_) => Code::Ok,
                Err(status) => status.code(),
            }
        }
    });
    let (codes, minted) = tokio::join!(flooding, well_behaved(good, 20));
    assert_eq!(codes.get(&Code::InvalidArgument), Some(&FLOOD), "{codes:?}");
    assert_eq!(minted, 20);

    let before = audit_records(&server).await;
    let refused: Vec<_> = of_kind(&before, "node_attestation_refused").collect();
    assert_eq!(
        refused.len(),
        1,
        "the first refusal from the peer is recorded in full, the others only counted"
    );
    assert!(
        refused[0]["fields"]["reason"]
            .as_str()
            .unwrap()
            .contains("join token is malformed"),
        "{}",
        refused[0]
    );
    let first_seq = refused[0]["seq"].as_u64().unwrap();

    // A clean shutdown writes the count of the interval still open.
    server.restart().await;
    let after = audit_records(&server).await;
    assert_eq!(of_kind(&after, "node_attestation_refused").count(), 1);
    let counts: Vec<_> = of_kind(&after, "refusals_suppressed").collect();
    assert_eq!(counts.len(), 1, "{counts:#?}");
    let fields = &counts[0]["fields"];
    assert_eq!(fields["source"], "127.0.0.1", "per IP, not per port");
    assert_eq!(fields["refused_kind"], "node_attestation_refused");
    assert_eq!(fields["count"].as_u64(), Some(FLOOD as u64 - 1));
    assert_eq!(fields["first_seq"].as_u64(), Some(first_seq));
    assert_eq!(fields["reason"], refused[0]["fields"]["reason"]);
    assert!(
        fields["interval_start"].as_str().unwrap() <= fields["interval_end"].as_str().unwrap(),
        "{fields}"
    );
    assert_eq!(of_kind(&after, "svid_minted").count(), 20);
    // Everything else the flood left is a handful of records (start,
    // stop, the well-behaved node's), not one per call.
    assert!(
        after.len() < 40,
        "{} records after {FLOOD} refused calls",
        after.len()
    );
}

#[tokio::test]
async fn a_node_flooding_refused_svid_requests_leaves_one_refusal_and_one_count() {
    const FLOOD: usize = 500;
    let mut server = TestServer::start().await;
    server.handle().images().replace(Matcher::new([image()]));
    let (good, _) = node(&server).await;
    let (bad, bad_id) = node(&server).await;

    // A new process each time (another pid, another start time, so another
    // evidence digest), always the same unregistered executable.
    let flooding = flood(FLOOD, move |i| {
        let mut client = bad.clone();
        async move {
            let pid = u32::try_from(i).unwrap() + 100;
            match client
                .mint_x509_svids(mint_request(UNREGISTERED, pid))
                .await
            {
                Ok(_) => Code::Ok,
                Err(status) => status.code(),
            }
        }
    });
    let (codes, minted) = tokio::join!(flooding, well_behaved(good, 20));
    assert_eq!(
        codes.get(&Code::PermissionDenied),
        Some(&FLOOD),
        "{codes:?}"
    );
    assert_eq!(minted, 20);

    server.restart().await;
    let records = audit_records(&server).await;
    let refused: Vec<_> = of_kind(&records, "svid_refused").collect();
    assert_eq!(refused.len(), 1, "{refused:#?}");
    assert_eq!(refused[0]["fields"]["node"], bad_id.as_str());
    let counts: Vec<_> = of_kind(&records, "refusals_suppressed").collect();
    assert_eq!(counts.len(), 1, "{counts:#?}");
    let fields = &counts[0]["fields"];
    assert_eq!(fields["source"], bad_id.as_str());
    assert_eq!(fields["refused_kind"], "svid_refused");
    assert_eq!(fields["count"].as_u64(), Some(FLOOD as u64 - 1));
    assert_eq!(fields["first_seq"], refused[0]["seq"]);
    assert_eq!(
        fields["workload"], refused[0]["fields"]["workload"],
        "the workload class does not depend on the pid"
    );
    assert_eq!(of_kind(&records, "svid_minted").count(), 20);
    assert!(records.len() < 40, "{} records", records.len());
}

#[tokio::test]
async fn an_unregistered_local_process_asking_again_and_again_is_counted_not_logged() {
    use crate::workload_api::{Variant, deploy_with, first_x509_on, raw_client};
    const ASKS: usize = 200;
    // The image requires an environment value this process does not have:
    // through the real agent, every fetch is a refusal at the issuer.
    let mut d = deploy_with(Variant {
        extra: "[env]\nHALLMARK_TEST_ROLE = \"payments\"\n",
        ..Variant::default()
    })
    .await;
    let mut raw = raw_client(&d.socket).await;
    for _ in 0..ASKS {
        let err = first_x509_on(&mut raw).await.unwrap_err();
        assert_eq!(err.code(), Code::PermissionDenied, "{err:?}");
    }
    let node = d.agent.spiffe_id().unwrap().to_string();
    d.agent.shutdown().await;
    d._server.restart().await;

    let records = audit_records(&d._server).await;
    let refused: Vec<_> = of_kind(&records, "svid_refused").collect();
    assert_eq!(refused.len(), 1, "{refused:#?}");
    let counts: Vec<_> = of_kind(&records, "refusals_suppressed").collect();
    assert_eq!(counts.len(), 1, "{counts:#?}");
    assert_eq!(counts[0]["fields"]["source"], node.as_str());
    assert_eq!(counts[0]["fields"]["count"].as_u64(), Some(ASKS as u64 - 1));
}

#[tokio::test]
async fn a_node_over_its_minting_limit_is_told_when_to_retry_and_others_still_mint() {
    use hallmark_server::node::NodeLimits;
    const OVER: usize = 50;
    let mut server = TestServer::start_with(|s| {
        s.node_limits = NodeLimits {
            per_second: 1,
            burst: 5,
        }
    })
    .await;
    server.handle().images().replace(Matcher::new([image()]));
    let (mut greedy, greedy_id) = node(&server).await;
    let (good, _) = node(&server).await;
    for pid in 0..5 {
        greedy
            .mint_x509_svids(mint_request(CODE, pid))
            .await
            .expect("within the burst");
    }
    // The manual clock stands still: nothing refills.
    let mut refused = 0;
    for pid in 0..OVER {
        let err = greedy
            .mint_x509_svids(mint_request(CODE, 100 + u32::try_from(pid).unwrap()))
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::ResourceExhausted, "{err:?}");
        assert!(
            err.message().contains(&greedy_id)
                && err
                    .message()
                    .contains("1 credentials per second (bursts of 5)")
                && err.message().contains("retry in 1000 ms"),
            "{}",
            err.message()
        );
        assert_eq!(
            err.metadata()
                .get("grpc-retry-pushback-ms")
                .and_then(|v| v.to_str().ok()),
            Some("1000")
        );
        refused += 1;
    }
    assert_eq!(refused, OVER);
    // JWT-SVIDs come out of the same budget.
    let err = greedy
        .mint_jwt_svid(hallmark_proto::node::MintJwtSvidRequest {
            evidence: Some(evidence(CODE, 1)),
            audience: vec!["payments".into()],
            spiffe_id: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::ResourceExhausted);
    // Its agent can still renew its node SVID: renewals have a bucket of
    // their own, with a limit of its own.
    for _ in 0..hallmark_server::node::RENEWAL_LIMITS.burst {
        greedy
            .renew_agent_svid(RenewAgentSvidRequest {
                public_key: CaKey::generate().unwrap().public_key_der(),
            })
            .await
            .expect("renewal is not starved by minting");
    }
    let err = greedy
        .renew_agent_svid(RenewAgentSvidRequest {
            public_key: CaKey::generate().unwrap().public_key_der(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::ResourceExhausted, "{err:?}");
    // Another node has a budget of its own.
    assert_eq!(well_behaved(good, 5).await, 5);
    // A second later one more credential is allowed.
    server.clock.advance(std::time::Duration::from_secs(1));
    greedy
        .mint_x509_svids(mint_request(CODE, 7))
        .await
        .expect("refilled");

    server.restart().await;
    let records = audit_records(&server).await;
    assert_eq!(of_kind(&records, "svid_minted").count(), 5 + 5 + 1);
    let limited: Vec<_> = of_kind(&records, "node_rate_limited").collect();
    assert_eq!(limited.len(), 3, "one per call in full: {limited:#?}");
    assert!(
        limited
            .iter()
            .all(|r| r["fields"]["node"] == greedy_id.as_str())
    );
    let mut counts: Vec<(String, u64)> = of_kind(&records, "refusals_suppressed")
        .map(|r| {
            assert_eq!(r["fields"]["refused_kind"], "node_rate_limited");
            assert_eq!(r["fields"]["source"], greedy_id.as_str());
            (
                r["fields"]["reason"].as_str().unwrap().to_owned(),
                r["fields"]["count"].as_u64().unwrap(),
            )
        })
        .collect();
    counts.sort();
    assert_eq!(counts, [("mint_x509_svids".to_owned(), OVER as u64 - 1)]);
}

#[tokio::test]
async fn a_count_is_written_at_the_first_refusal_after_its_interval() {
    let server = TestServer::start().await;
    let mut client = server.node_client(None).await.unwrap();
    let refuse = |client: &mut NodeClient<Channel>| {
        let mut client = client.clone();
        async move {
            let err = attest_join_token(&mut client, "not-a-token")
                .await
                .unwrap_err();
            assert_eq!(err.code(), Code::InvalidArgument);
        }
    };
    for _ in 0..10 {
        refuse(&mut client).await;
    }
    server
        .clock
        .advance(hallmark_server::events::DEFAULT_REFUSAL_INTERVAL);
    refuse(&mut client).await;
    let kinds: Vec<String> = audit_records(&server)
        .await
        .into_iter()
        .map(|r| r["kind"].as_str().unwrap().to_owned())
        .filter(|k| k.contains("refus"))
        .collect();
    assert_eq!(
        kinds,
        [
            "node_attestation_refused",
            "refusals_suppressed",
            "node_attestation_refused"
        ]
    );
    let records = audit_records(&server).await;
    let count = of_kind(&records, "refusals_suppressed").next().unwrap();
    assert_eq!(count["fields"]["count"], 9);
}

#[tokio::test]
async fn a_count_is_written_by_the_periodic_flush_once_the_flood_stops() {
    use std::time::Duration;
    // A short interval: the flush runs every second of real time and
    // closes what the manual clock says has ended.
    let server =
        TestServer::start_with(|s| s.refusal_limits.interval = Duration::from_secs(4)).await;
    let mut client = server.node_client(None).await.unwrap();
    for _ in 0..5 {
        let err = attest_join_token(&mut client, "not-a-token")
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument);
    }
    server.clock.advance(Duration::from_secs(5));
    // Waits for the flush (not a timing assertion: only for it to happen).
    let mut count = None;
    for _ in 0..300 {
        let records = audit_records(&server).await;
        if let Some(record) = of_kind(&records, "refusals_suppressed").next() {
            count = record["fields"]["count"].as_u64();
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(count, Some(4), "the periodic flush wrote the count");
}
