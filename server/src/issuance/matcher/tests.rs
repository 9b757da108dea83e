use std::collections::HashMap;
use std::time::{Duration, SystemTime};

use hallmark_ca::id::SpiffeId;
use hallmark_proto::node::{TreeEvidence, WorkloadEvidence};

use super::*;

const CODE: &str = "1111111111111111111111111111111111111111111111111111111111111111";
const OTHER_CODE: &str = "3333333333333333333333333333333333333333333333333333333333333333";
const MODEL: &str = "sha256:2222222222222222222222222222222222222222222222222222222222222222";
const APP: &str = "sha256:4444444444444444444444444444444444444444444444444444444444444444";

fn image(name: &str, extra: &str) -> Candidate {
    let text = format!(
        r#"
        name = "{name}"
        version = "1.0.0"
        spiffe_id = "spiffe://example.org/{name}"
        owner = "alice@example.org"
        purpose = "tests"
        risk_tier = "low"
        not_after = 2099-12-31
        {extra}
        "#
    );
    Candidate {
        image: GoldImage::from_toml(&text).unwrap(),
        signers: vec!["k".into()],
        retired: false,
    }
}

fn full(name: &str) -> Candidate {
    image(
        name,
        &format!(
            r#"
            [code]
            sha256 = ["{CODE}"]
            path = "/opt/agent/bin/python3"
            app_digest = "{APP}"
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
            "#
        ),
    )
}

fn evidence() -> WorkloadEvidence {
    WorkloadEvidence {
        pid: 42,
        uid: 1000,
        gid: 1000,
        exe_path: "/opt/agent/bin/python3".into(),
        exe_sha256: CODE.into(),
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
        ..Default::default()
    }
}

fn agent() -> SpiffeId {
    SpiffeId::parse("spiffe://example.org/hallmark/agent/x509pop/abcd").unwrap()
}

fn run(
    matcher: &Matcher,
    evidence: &WorkloadEvidence,
    agent: &SpiffeId,
    attestor: &str,
) -> Result<Vec<String>, NoMatch> {
    matcher
        .match_evidence(
            evidence,
            NodeContext { agent, attestor },
            &NoRevocations,
            SystemTime::now(),
        )
        .map(|m| m.iter().map(|c| c.image.image_ref()).collect())
}

fn refusal(matcher: &Matcher, evidence: &WorkloadEvidence) -> Mismatch {
    let err = run(matcher, evidence, &agent(), "x509pop").unwrap_err();
    assert_eq!(err.reasons.len(), 1, "{err}");
    err.reasons[0].1.clone()
}

#[test]
fn full_match() {
    let matcher = Matcher::new([full("invoice")]);
    assert_eq!(
        run(&matcher, &evidence(), &agent(), "x509pop").unwrap(),
        ["invoice@1.0.0"]
    );
    assert_eq!(
        matcher.env_names().iter().collect::<Vec<_>>(),
        ["HALLMARK_ENV"]
    );
    let (app, model) = matcher.path_hints(CODE);
    assert!(app.is_empty() && model.is_empty());
}

#[test]
fn each_constraint_is_named_when_it_fails() {
    let matcher = Matcher::new([full("invoice")]);
    let mut e = evidence();
    e.exe_sha256 = OTHER_CODE.into();
    let err = run(&matcher, &e, &agent(), "x509pop").unwrap_err();
    assert!(err.reasons.is_empty());
    assert!(err.to_string().contains("code digest unknown"), "{err}");

    let mut e = evidence();
    e.app.as_mut().unwrap().digest = MODEL.into();
    assert_eq!(refusal(&matcher, &e), Mismatch::AppTreeMismatch);
    let mut e = evidence();
    e.app = None;
    assert_eq!(refusal(&matcher, &e), Mismatch::AppTreeMissing);
    let mut e = evidence();
    e.model.as_mut().unwrap().digest = APP.into();
    assert_eq!(refusal(&matcher, &e), Mismatch::ModelMismatch);
    let mut e = evidence();
    e.model = None;
    assert_eq!(refusal(&matcher, &e), Mismatch::ModelMissing);
    let mut e = evidence();
    e.env.insert("HALLMARK_ENV".into(), "staging".into());
    let why = refusal(&matcher, &e);
    assert_eq!(why, Mismatch::EnvMismatch("HALLMARK_ENV".into()));
    assert!(
        !why.to_string().contains("staging"),
        "values are never shown"
    );
    let mut e = evidence();
    e.uid = 0;
    assert_eq!(
        refusal(&matcher, &e),
        Mismatch::UidMismatch {
            expected: 1000,
            found: 0
        }
    );
    let mut e = evidence();
    e.gid = 5;
    assert_eq!(
        refusal(&matcher, &e),
        Mismatch::GidMismatch {
            expected: 1000,
            found: 5
        }
    );
    let mut e = evidence();
    e.exe_path = "/tmp/python3".into();
    assert_eq!(refusal(&matcher, &e), Mismatch::CodePathMismatch);

    let join = SpiffeId::parse("spiffe://example.org/hallmark/agent/join_token/ab").unwrap();
    let err = run(&matcher, &evidence(), &join, "join_token").unwrap_err();
    assert_eq!(err.reasons[0].1, Mismatch::NodeNotAllowed);
    // Right prefix, wrong attestor.
    let err = run(&matcher, &evidence(), &agent(), "join_token").unwrap_err();
    assert_eq!(err.reasons[0].1, Mismatch::NodeNotAllowed);
    // A prefix is segment-wise: x509pop-evil is not under x509pop.
    let evil = SpiffeId::parse("spiffe://example.org/hallmark/agent/x509pop-evil/ab").unwrap();
    let err = run(&matcher, &evidence(), &evil, "x509pop").unwrap_err();
    assert_eq!(err.reasons[0].1, Mismatch::NodeNotAllowed);
}

#[test]
fn retired_expired_and_revoked_images_do_not_match() {
    let mut retired = full("invoice");
    retired.retired = true;
    let matcher = Matcher::new([retired]);
    assert_eq!(refusal(&matcher, &evidence()), Mismatch::ImageRetired);

    let matcher = Matcher::new([full("invoice")]);
    let err = matcher
        .match_evidence(
            &evidence(),
            NodeContext {
                agent: &agent(),
                attestor: "x509pop",
            },
            &NoRevocations,
            SystemTime::UNIX_EPOCH + Duration::from_secs(4_200_000_000),
        )
        .unwrap_err();
    assert_eq!(err.reasons[0].1, Mismatch::ImageRetired);

    struct All;
    impl RevocationFilter for All {
        fn revoked(&self, image: &GoldImage, _: &WorkloadEvidence, _: &SpiffeId) -> Option<String> {
            Some(format!("kill of {}", image.image_ref()))
        }
    }
    let err = matcher
        .match_evidence(
            &evidence(),
            NodeContext {
                agent: &agent(),
                attestor: "x509pop",
            },
            &All,
            SystemTime::now(),
        )
        .unwrap_err();
    assert!(matches!(&err.reasons[0].1, Mismatch::Revoked(r) if r.contains("invoice")));
}

#[test]
fn one_binary_several_images_and_many_images() {
    let plain = |name: &str, code: &str| image(name, &format!("[code]\nsha256 = [\"{code}\"]\n"));
    let mut images: Vec<Candidate> = (0..10_000)
        .map(|i| plain(&format!("filler-{i}"), &format!("{i:064x}")))
        .collect();
    images.push(plain("alpha", CODE));
    images.push(plain("beta", CODE));
    let matcher = Matcher::new(images);
    assert_eq!(matcher.len(), 10_002);
    let mut e = evidence();
    e.app = None;
    e.model = None;
    assert_eq!(
        run(&matcher, &e, &agent(), "x509pop").unwrap(),
        ["alpha@1.0.0", "beta@1.0.0"]
    );
    let hint_image = image(
        "hinted",
        &format!(
            "[code]\nsha256 = [\"{OTHER_CODE}\"]\napp_path = \"/srv/app\"\napp_digest = \"{APP}\"\n[model]\nname = \"m\"\nversion = \"1\"\ndigest = \"{MODEL}\"\npath = \"/models/m\"\n"
        ),
    );
    let matcher = Matcher::new([hint_image]);
    let (app, model) = matcher.path_hints(OTHER_CODE);
    assert!(app.contains("/srv/app") && model.contains("/models/m"));
}
