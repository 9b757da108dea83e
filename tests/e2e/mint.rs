//! Workload credentials from the issuer: SVIDs bound to code and model,
//! checked with code we did not write, and every refusal's exact status.

use std::collections::HashMap;
use tonic::Code;

use hallmark_ca::clock::Clock;
use hallmark_ca::key::CaKey;
use hallmark_ca::x509::binding_from_cert;
use hallmark_proto::node::{
    MintJwtSvidRequest, MintX509SvidsRequest, TreeEvidence, WorkloadEvidence,
};
use hallmark_server::image::GoldImage;
use hallmark_server::issuance::matcher::{Candidate, Matcher};

use crate::common::*;

const CODE: &str = "1111111111111111111111111111111111111111111111111111111111111111";
const MODEL: &str = "sha256:2222222222222222222222222222222222222222222222222222222222222222";

pub(crate) fn invoice_image(extra: &str) -> Candidate {
    let text = format!(
        r#"
        name = "invoice-agent"
        version = "1.0.0"
        spiffe_id = "spiffe://example.org/invoice-agent"
        owner = "alice@example.org"
        purpose = "reads invoices"
        risk_tier = "low"
        scopes = ["invoices:read", "payments:propose"]
        not_after = 2099-12-31
        x509_ttl = 120
        [code]
        sha256 = ["{CODE}"]
        [model]
        name = "llama"
        version = "3.1"
        digest = "{MODEL}"
        {extra}
        "#
    );
    Candidate {
        image: GoldImage::from_toml(&text).unwrap(),
        signers: vec![],
        retired: false,
    }
}

pub(crate) fn evidence() -> WorkloadEvidence {
    WorkloadEvidence {
        pid: 4242,
        uid: 1000,
        gid: 1000,
        exe_path: "/usr/bin/python3".into(),
        exe_sha256: CODE.into(),
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

/// An attested raw agent connection with mutual TLS.
pub(crate) async fn agent(
    server: &TestServer,
) -> hallmark_proto::node::node_client::NodeClient<tonic::transport::Channel> {
    let token = server.token().await;
    let mut client = server.node_client(None).await.unwrap();
    let (key, result) = attest_join_token(&mut client, &token).await.unwrap();
    let chain = result.svid.unwrap().cert_chain;
    server
        .node_client(Some((&chain, &key.pkcs8_der())))
        .await
        .unwrap()
}

#[tokio::test]
async fn x509_svid_is_bound_to_code_and_model() {
    let server = TestServer::start().await;
    server
        .handle()
        .images()
        .replace(Matcher::new([invoice_image("")]));
    let mut node = agent(&server).await;
    let key = CaKey::generate().unwrap();
    let response = node
        .mint_x509_svids(MintX509SvidsRequest {
            evidence: Some(evidence()),
            public_keys: vec![key.public_key_der()],
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(response.svids.len(), 1);
    assert_eq!(response.unminted_matches, 0);
    let minted = &response.svids[0];
    assert_eq!(minted.image, "invoice-agent@1.0.0");
    let svid = minted.svid.as_ref().unwrap();
    let id = cross_verify(&svid.cert_chain, &key, &server.bundle(), server.clock.now());
    assert_eq!(id, "spiffe://example.org/invoice-agent");
    // The image's 120 s TTL applies (under the 300 s cap).
    let ttl = svid.expires_at - unix(server.clock.now());
    assert!((110..=120).contains(&ttl), "ttl {ttl}");

    let binding: serde_json::Value =
        serde_json::from_slice(&binding_from_cert(&svid.cert_chain[0]).unwrap().unwrap()).unwrap();
    assert_eq!(binding["code_sha256"], CODE);
    assert_eq!(binding["image"], "invoice-agent@1.0.0");
    assert_eq!(binding["model"]["digest"], MODEL);
    assert_eq!(binding["model"]["name"], "llama");
    assert_eq!(binding["model"]["version"], "3.1");
    assert_eq!(binding["owner"], "alice@example.org");
    assert_eq!(binding["risk_tier"], "low");
    assert!(
        binding["node"]
            .as_str()
            .unwrap()
            .starts_with("spiffe://example.org/hallmark/agent/join_token/")
    );
}

#[tokio::test]
async fn jwt_svid_validates_with_a_jwt_library_we_did_not_write() {
    let server = TestServer::start().await;
    server
        .handle()
        .images()
        .replace(Matcher::new([invoice_image("")]));
    let mut node = agent(&server).await;
    let response = node
        .mint_jwt_svid(MintJwtSvidRequest {
            evidence: Some(evidence()),
            audience: vec!["payments".into()],
            spiffe_id: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(response.svids.len(), 1);
    let token = &response.svids[0].token;
    let header = jsonwebtoken::decode_header(token).unwrap();
    assert_eq!(header.alg, jsonwebtoken::Algorithm::ES256);
    let kid = header.kid.unwrap();
    // The JWKS we publish, read by the JWT library.
    let jwks: jsonwebtoken::jwk::JwkSet =
        serde_json::from_str(&server.bundle().jwt_jwks()).unwrap();
    let jwk = jwks
        .find(&kid)
        .expect("the token's kid is in the published JWKS");
    let key = jsonwebtoken::DecodingKey::from_jwk(jwk).unwrap();
    let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::ES256);
    validation.set_audience(&["payments"]);
    let claims = jsonwebtoken::decode::<serde_json::Value>(token, &key, &validation)
        .unwrap()
        .claims;
    assert_eq!(claims["sub"], "spiffe://example.org/invoice-agent");
    assert_eq!(claims["scope"], "invoices:read payments:propose");
    assert_eq!(claims["hallmark"]["model"]["version"], "3.1");
    let exp = claims["exp"].as_i64().unwrap();
    assert!(exp - unix(server.clock.now()) <= 300);
}

#[tokio::test]
async fn refusals_name_the_failed_constraint() {
    // One node, a dozen distinct refusals in one interval: more reasons
    // than a source gets in full by default (the others would only be
    // counted, see tests/e2e/flood.rs). Every one is checked in full here.
    let server = TestServer::start_with(|s| {
        s.refusal_limits.reasons_per_source =
            hallmark_server::config::MAX_REFUSAL_REASONS_PER_SOURCE;
    })
    .await;
    server
        .handle()
        .images()
        .replace(Matcher::new([invoice_image(
            "[env]\nHALLMARK_ENV = \"prod\"\n[unix]\nuid = 1000\n",
        )]));
    let mut node = agent(&server).await;
    let key = CaKey::generate().unwrap().public_key_der();
    let mut with_env = evidence();
    with_env.env.insert("HALLMARK_ENV".into(), "prod".into());
    let mint = |e: WorkloadEvidence, keys: Vec<Vec<u8>>| MintX509SvidsRequest {
        evidence: Some(e),
        public_keys: keys,
    };
    // Sanity: the full evidence is accepted.
    node.mint_x509_svids(mint(with_env.clone(), vec![key.clone()]))
        .await
        .unwrap();

    let cases: Vec<(WorkloadEvidence, Vec<Vec<u8>>, Code, &str)> = vec![
        (
            {
                let mut e = with_env.clone();
                e.exe_sha256 = "3".repeat(64);
                e
            },
            vec![key.clone()],
            Code::PermissionDenied,
            "code digest unknown",
        ),
        (
            {
                let mut e = with_env.clone();
                e.model.as_mut().unwrap().digest = format!("sha256:{}", "5".repeat(64));
                e
            },
            vec![key.clone()],
            Code::PermissionDenied,
            "model digest mismatch",
        ),
        (
            {
                let mut e = with_env.clone();
                e.env.insert("HALLMARK_ENV".into(), "dev".into());
                e
            },
            vec![key.clone()],
            Code::PermissionDenied,
            "env mismatch (HALLMARK_ENV)",
        ),
        (
            {
                let mut e = with_env.clone();
                e.uid = 0;
                e
            },
            vec![key.clone()],
            Code::PermissionDenied,
            "uid mismatch",
        ),
        (
            {
                let mut e = with_env.clone();
                e.exe_sha256 = "not hex".into();
                e
            },
            vec![key.clone()],
            Code::InvalidArgument,
            "exe_sha256",
        ),
        (
            with_env.clone(),
            vec![],
            Code::InvalidArgument,
            "public_keys",
        ),
        (
            with_env.clone(),
            vec![vec![0x30, 0x03, 1, 2, 3]],
            Code::InvalidArgument,
            "public_keys[0]",
        ),
        (
            // A good key first: nothing is minted for it either.
            with_env.clone(),
            vec![key.clone(), vec![0x30, 0x03, 1, 2, 3]],
            Code::InvalidArgument,
            "public_keys[1]",
        ),
    ];
    let needles: Vec<&str> = cases.iter().map(|c| c.3).collect();
    for (e, keys, code, needle) in cases {
        let err = node.mint_x509_svids(mint(e, keys)).await.unwrap_err();
        assert_eq!(err.code(), code, "{needle}: {err:?}");
        assert!(
            err.message().contains(needle),
            "{needle}: {}",
            err.message()
        );
        assert!(
            !err.message().contains("dev"),
            "env values never leak: {}",
            err.message()
        );
    }
    let err = node
        .mint_x509_svids(MintX509SvidsRequest {
            evidence: None,
            public_keys: vec![key.clone()],
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);

    let err = node
        .mint_jwt_svid(MintJwtSvidRequest {
            evidence: Some(with_env.clone()),
            audience: vec![],
            spiffe_id: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(err.message().contains("audience"));
    // An agent cannot have the issuer sign a 1 MB audience either.
    let err = node
        .mint_jwt_svid(MintJwtSvidRequest {
            evidence: Some(with_env.clone()),
            audience: vec!["a".repeat(1 << 20)],
            spiffe_id: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
    assert!(
        err.message().contains("at most 2048 bytes"),
        "{}",
        err.message()
    );
    let err = node
        .mint_jwt_svid(MintJwtSvidRequest {
            evidence: Some(with_env),
            audience: vec!["payments".into()],
            spiffe_id: "spiffe://example.org/someone-else".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);

    // Every refusal is in the audit log, with its reason and the digest of
    // the evidence it was about.
    let refused: Vec<serde_json::Value> = audit_records(&server)
        .await
        .into_iter()
        .filter(|r| r["kind"] == "svid_refused")
        .collect();
    for needle in needles
        .iter()
        .chain(&["evidence is missing", "audience", "not entitled"])
    {
        let record = refused
            .iter()
            .find(|r| r["fields"]["reason"].as_str().unwrap().contains(needle))
            .unwrap_or_else(|| panic!("no audited refusal for {needle:?}: {refused:#?}"));
        let digest = record["fields"]["evidence_digest"].as_str().unwrap();
        if *needle == "evidence is missing" {
            assert_eq!(digest, "none");
        } else {
            assert_eq!(digest.len(), 64, "{record}");
        }
        assert!(
            !record.to_string().contains("\"dev\""),
            "env values never reach the audit log: {record}"
        );
    }
    // Only the sanity check above minted: nothing refused was, not even
    // for the good key beside a bad one.
    let minted = audit_records(&server)
        .await
        .into_iter()
        .filter(|r| r["kind"] == "svid_minted")
        .count();
    assert_eq!(minted, 1);
}

#[tokio::test]
async fn node_constraints_and_mutual_tls_apply_to_minting() {
    let server = TestServer::start().await;
    server
        .handle()
        .images()
        .replace(Matcher::new([invoice_image(
            "[nodes]\nattestors = [\"x509pop\"]\n",
        )]));
    let mut node = agent(&server).await;
    let err = node
        .mint_x509_svids(MintX509SvidsRequest {
            evidence: Some(evidence()),
            public_keys: vec![CaKey::generate().unwrap().public_key_der()],
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);
    assert!(
        err.message().contains("node not allowed"),
        "{}",
        err.message()
    );
    assert!(
        audit_records(&server)
            .await
            .iter()
            .any(|r| r["kind"] == "svid_refused"
                && r["fields"]["reason"]
                    .as_str()
                    .unwrap()
                    .contains("node not allowed")),
        "the node refusal is audited"
    );

    // Without a node SVID nothing is minted.
    let mut anonymous = server.node_client(None).await.unwrap();
    let err = anonymous
        .mint_x509_svids(MintX509SvidsRequest {
            evidence: Some(evidence()),
            public_keys: vec![CaKey::generate().unwrap().public_key_der()],
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated);
}

/// A second image for the same code and model.
fn second_image() -> Candidate {
    let text = format!(
        "name = \"invoice-auditor\"\nversion = \"1.0.0\"\nspiffe_id = \"spiffe://example.org/invoice-auditor\"\nowner = \"alice@example.org\"\npurpose = \"audits invoices\"\nrisk_tier = \"low\"\nnot_after = 2099-12-31\n[code]\nsha256 = [\"{CODE}\"]\n[model]\nname = \"llama\"\nversion = \"3.1\"\ndigest = \"{MODEL}\"\n"
    );
    Candidate {
        image: GoldImage::from_toml(&text).unwrap(),
        signers: vec![],
        retired: false,
    }
}

/// What the audit log says was minted.
async fn minted(server: &TestServer) -> Vec<String> {
    audit_records(server)
        .await
        .into_iter()
        .filter(|r| r["kind"] == "svid_minted")
        .map(|r| {
            r["fields"]["spiffe_id"]
                .as_str()
                .unwrap_or_default()
                .to_owned()
        })
        .collect()
}

#[tokio::test]
async fn fewer_keys_than_matching_images_signs_nothing_and_says_how_many() {
    let server = TestServer::start().await;
    server
        .handle()
        .images()
        .replace(Matcher::new([invoice_image(""), second_image()]));
    let mut node = agent(&server).await;
    let keys: Vec<CaKey> = (0..2).map(|_| CaKey::generate().unwrap()).collect();
    let response = node
        .mint_x509_svids(MintX509SvidsRequest {
            evidence: Some(evidence()),
            public_keys: vec![keys[0].public_key_der()],
        })
        .await
        .unwrap()
        .into_inner();
    assert!(response.svids.is_empty(), "nothing is signed");
    assert_eq!(response.unminted_matches, 2);
    assert!(
        minted(&server).await.is_empty(),
        "nothing is audited as minted"
    );
    let response = node
        .mint_x509_svids(MintX509SvidsRequest {
            evidence: Some(evidence()),
            public_keys: keys.iter().map(CaKey::public_key_der).collect(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(response.svids.len(), 2);
    assert_eq!(response.unminted_matches, 0);
    let mut ids = minted(&server).await;
    ids.sort();
    assert_eq!(
        ids,
        [
            "spiffe://example.org/invoice-agent",
            "spiffe://example.org/invoice-auditor"
        ]
    );
}

/// Through a real agent: a workload two images match gets both SVIDs from
/// one call (the agent sends as many keys as the issuer's hint says), and
/// the audit log holds exactly one `svid_minted` per SVID delivered.
#[tokio::test]
async fn a_two_image_workload_costs_one_mint_and_audits_what_it_holds() {
    let env = crate::kill::KillEnv::start().await;
    let agent = env.agent("a").await;
    let client = agent.spiffe().await;
    let mut delivered = crate::kill::fetched_ids(&client).await;
    delivered.sort();
    assert_eq!(delivered, [crate::kill::ALPHA, crate::kill::BETA]);
    let mut audited = minted(&env.server).await;
    audited.sort();
    assert_eq!(audited, delivered, "one svid_minted per SVID delivered");
    agent.handle.shutdown().await;
}
