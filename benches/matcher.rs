//! The issuer's matcher ([`Matcher::match_evidence`]) with 10, 1,000 and
//! 10,000 registered gold images, each allowing its own executable digest
//! and carrying every constraint kind (code path, app tree, model, env,
//! uid/gid, nodes), so a hit checks all of them.
//!
//! - `hit`: the evidence satisfies one image;
//! - `miss_unknown_code`: no image allows the executable digest;
//! - `miss_constraint`: the digest is known but the model differs (the
//!   refusal names the image and the failed constraint).
//!
//! The lookup is a hash probe by executable digest, so the three sizes
//! should cost the same (issue 6: flat within 2x from 10 to 10,000).

// A bench crate has no public API to document.
#![allow(missing_docs)]
// Setup failures abort the bench with a message; there is no caller to
// return an error to.
#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::collections::HashMap;
use std::hint::black_box;
use std::time::SystemTime;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use sha2::{Digest, Sha256};

use hallmark_ca::id::SpiffeId;
use hallmark_proto::node::{MainProgram, TreeEvidence, WorkloadEvidence};
use hallmark_server::image::GoldImage;
use hallmark_server::issuance::matcher::{Candidate, Matcher, NoRevocations, NodeContext};

const MODEL: &str = "sha256:2222222222222222222222222222222222222222222222222222222222222222";
const OTHER_MODEL: &str = "sha256:5555555555555555555555555555555555555555555555555555555555555555";
const APP: &str = "sha256:4444444444444444444444444444444444444444444444444444444444444444";
const AGENT: &str = "spiffe://example.org/hallmark/agent/x509pop/abcd";

fn code_digest(i: usize) -> String {
    hex::encode(Sha256::digest(format!("agent binary {i}")))
}

/// Image `i`, allowing only [`code_digest`]`(i)`, with every constraint set.
fn image(i: usize) -> Candidate {
    let text = format!(
        r#"
        name = "agent-{i:05}"
        version = "1.0.0"
        spiffe_id = "spiffe://example.org/agents/agent-{i:05}"
        owner = "alice@example.org"
        purpose = "benchmarks"
        risk_tier = "low"
        not_after = 2099-12-31
        [code]
        sha256 = ["{code}"]
        path = "/opt/agent/bin/python3"
        app_digest = "{APP}"
        interpreter = "python"
        [model]
        name = "llama"
        version = "3.1"
        digest = "{MODEL}"
        [env]
        HALLMARK_ENV = "prod"
        [unix]
        uid = 1000
        gid = 1000
        [nodes]
        spiffe_id_prefixes = ["spiffe://example.org/hallmark/agent/x509pop"]
        attestors = ["x509pop"]
        "#,
        code = code_digest(i),
    );
    Candidate {
        image: GoldImage::from_toml(&text).unwrap(),
        signers: vec!["bench".into()],
        retired: false,
    }
}

/// Evidence for a process running [`code_digest`]`(i)` that satisfies image `i`.
fn evidence(i: usize) -> WorkloadEvidence {
    WorkloadEvidence {
        pid: 4242,
        uid: 1000,
        gid: 1000,
        exe_path: "/opt/agent/bin/python3".into(),
        exe_sha256: code_digest(i),
        start_time: 123_456_789,
        app: Some(TreeEvidence {
            dir: "/opt/agent/app".into(),
            digest: APP.into(),
            files: vec![],
        }),
        model: Some(TreeEvidence {
            dir: "/models/llama".into(),
            digest: MODEL.into(),
            files: vec![],
        }),
        env: HashMap::from([("HALLMARK_ENV".to_owned(), "prod".to_owned())]),
        programs: vec![MainProgram {
            dialect: "python".into(),
            kind: "script".into(),
            path: "/opt/agent/app/main.py".into(),
            in_app_tree: true,
            ..MainProgram::default()
        }],
        loaded_code: Some(Default::default()),
        ..WorkloadEvidence::default()
    }
}

fn matcher(c: &mut Criterion) {
    let agent = SpiffeId::parse(AGENT).unwrap();
    let node = NodeContext {
        agent: &agent,
        attestor: "x509pop",
    };
    let now = SystemTime::now();
    let mut group = c.benchmark_group("matcher");
    group.throughput(Throughput::Elements(1));
    for n in [10, 1_000, 10_000] {
        let matcher = Matcher::new((0..n).map(image));
        assert_eq!(matcher.len(), n);
        let target = n / 2;

        let hit = evidence(target);
        let matched = matcher
            .match_evidence(&hit, node, &NoRevocations, now)
            .unwrap();
        assert_eq!(matched.len(), 1);
        group.bench_with_input(BenchmarkId::new("hit", n), &hit, |b, e| {
            b.iter(|| {
                matcher
                    .match_evidence(black_box(e), node, &NoRevocations, now)
                    .unwrap()
            });
        });

        let mut unknown = evidence(target);
        unknown.exe_sha256 = code_digest(n + 1);
        assert!(
            matcher
                .match_evidence(&unknown, node, &NoRevocations, now)
                .is_err()
        );
        group.bench_with_input(
            BenchmarkId::new("miss_unknown_code", n),
            &unknown,
            |b, e| {
                b.iter(|| {
                    matcher
                        .match_evidence(black_box(e), node, &NoRevocations, now)
                        .unwrap_err()
                });
            },
        );

        let mut other_model = evidence(target);
        if let Some(model) = other_model.model.as_mut() {
            model.digest = OTHER_MODEL.into();
        }
        let refusal = matcher
            .match_evidence(&other_model, node, &NoRevocations, now)
            .unwrap_err();
        assert_eq!(refusal.reasons.len(), 1);
        group.bench_with_input(
            BenchmarkId::new("miss_constraint", n),
            &other_model,
            |b, e| {
                b.iter(|| {
                    matcher
                        .match_evidence(black_box(e), node, &NoRevocations, now)
                        .unwrap_err()
                });
            },
        );
    }
    group.finish();
}

criterion_group!(benches, matcher);
criterion_main!(benches);
