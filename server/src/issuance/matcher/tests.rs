use std::collections::HashMap;
use std::time::{Duration, SystemTime};

use hallmark_ca::id::SpiffeId;
use hallmark_proto::node::{
    FileDigest, LoadedCode, MainProgram, ModelLoaded, TreeEvidence, WorkloadEvidence,
};

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
        programs: vec![MainProgram {
            dialect: "python".into(),
            kind: "script".into(),
            path: "/opt/agent/app/main.py".into(),
            in_app_tree: true,
            ..Default::default()
        }],
        loaded_code: Some(LoadedCode::default()),
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

#[test]
fn the_main_program_must_be_in_the_app_tree() {
    let matcher = Matcher::new([full("invoice")]);
    let program = |f: &dyn Fn(&mut MainProgram)| {
        let mut e = evidence();
        f(&mut e.programs[0]);
        e
    };
    let outside = program(&|p| {
        p.path = "/tmp/other.py".into();
        p.in_app_tree = false;
    });
    let why = refusal(&matcher, &outside);
    assert_eq!(
        why.to_string(),
        "main program /tmp/other.py is outside the app tree"
    );
    let inline = program(&|p| {
        p.kind = "inline".into();
        p.path.clear();
    });
    assert_eq!(
        refusal(&matcher, &inline).to_string(),
        "inline code (-c, -e, -p) is not allowed by the image (code.allow_inline)"
    );
    let stdin = program(&|p| p.kind = "stdin".into());
    assert!(
        refusal(&matcher, &stdin)
            .to_string()
            .contains("standard input")
    );
    let interactive = program(&|p| p.kind = "interactive".into());
    assert!(
        refusal(&matcher, &interactive)
            .to_string()
            .contains("interactive session")
    );
    let unknown = program(&|p| {
        p.kind.clear();
        p.detail = "unknown python option -Z".into();
    });
    assert_eq!(
        refusal(&matcher, &unknown),
        Mismatch::ProgramUnknown {
            detail: "unknown python option -Z".into()
        }
    );
    let unresolved = program(&|p| {
        p.in_app_tree = false;
        p.detail = "module app.main is not found in the working directory /".into();
    });
    assert!(matches!(
        refusal(&matcher, &unresolved),
        Mismatch::ProgramUnknown { .. }
    ));
    let package = program(&|p| p.outside_app_tree = vec!["/tmp/evil/__init__.py".into()]);
    assert_eq!(
        refusal(&matcher, &package),
        Mismatch::PreloadOutsideAppTree {
            path: "/tmp/evil/__init__.py".into()
        }
    );
    let mut none = evidence();
    none.programs.clear();
    assert!(
        refusal(&matcher, &none)
            .to_string()
            .contains("did not report the python main program")
    );
    let mut node = evidence();
    node.programs[0].dialect = "node".into();
    assert_eq!(
        refusal(&matcher, &node),
        Mismatch::ProgramNotMeasured {
            dialect: "python".into()
        }
    );

    // allow_inline lets inline code through; an image with interpreter
    // "none" does not look at the command line.
    let allow = image(
        "inline",
        &format!(
            "[code]\nsha256 = [\"{CODE}\"]\napp_digest = \"{APP}\"\ninterpreter = \"python\"\nallow_inline = true\n"
        ),
    );
    let data = image(
        "data",
        &format!("[code]\nsha256 = [\"{CODE}\"]\napp_digest = \"{APP}\"\ninterpreter = \"none\"\n"),
    );
    let matcher = Matcher::new([allow, data]);
    assert_eq!(
        run(&matcher, &inline, &agent(), "x").unwrap(),
        ["data@1.0.0", "inline@1.0.0"]
    );
    assert_eq!(
        run(&matcher, &outside, &agent(), "x").unwrap(),
        ["data@1.0.0"]
    );
}

#[test]
fn an_image_stored_without_interpreter_never_matches() {
    // What an earlier release signed: app_digest without interpreter.
    let old = image(
        "old",
        &format!("[code]\nsha256 = [\"{CODE}\"]\napp_digest = \"{APP}\"\n"),
    );
    assert!(old.image.check_new().is_err());
    let matcher = Matcher::new([old]);
    let why = refusal(&matcher, &evidence());
    assert_eq!(why, Mismatch::InterpreterUnset);
    assert!(
        why.to_string().contains("re-sign it with code.interpreter"),
        "{why}"
    );
}

#[test]
fn loader_environment_is_refused_unless_pinned() {
    let matcher = Matcher::new([full("invoice")]);
    for name in [
        "LD_PRELOAD",
        "LD_AUDIT",
        "PYTHONPATH",
        "PYTHONSTARTUP",
        "NODE_OPTIONS",
    ] {
        let mut e = evidence();
        e.loader_env = vec![name.into()];
        let why = refusal(&matcher, &e);
        assert_eq!(why, Mismatch::LoaderEnvSet { name: name.into() });
        assert!(
            why.to_string().starts_with(&format!("{name} is set")),
            "{why}"
        );
    }
    // Python ignores its own variables under -E / -I.
    let mut e = evidence();
    e.loader_env = vec!["PYTHONPATH".into()];
    e.programs[0].flags = vec!["E".into()];
    assert!(run(&matcher, &e, &agent(), "x509pop").is_ok());
    // Without an app tree only the dynamic loader's variables count.
    let plain = image("plain", &format!("[code]\nsha256 = [\"{CODE}\"]\n"));
    let matcher = Matcher::new([plain]);
    let mut e = evidence();
    e.loader_env = vec!["PYTHONPATH".into()];
    assert!(run(&matcher, &e, &agent(), "x").is_ok());
    e.loader_env = vec!["LD_PRELOAD".into()];
    assert!(run(&matcher, &e, &agent(), "x").is_err());
    // Pinned in env: its exact value is required instead.
    let pinned = image(
        "pinned",
        &format!("[code]\nsha256 = [\"{CODE}\"]\n[env]\nLD_PRELOAD = \"/opt/lib/x.so\"\n"),
    );
    let matcher = Matcher::new([pinned]);
    assert_eq!(
        refusal(&matcher, &e),
        Mismatch::EnvMismatch("LD_PRELOAD".into())
    );
    e.env.insert("LD_PRELOAD".into(), "/opt/lib/x.so".into());
    assert!(run(&matcher, &e, &agent(), "x").is_ok());
}

#[test]
fn unprotected_loaded_code_needs_its_digest_in_the_image() {
    let lib = "5".repeat(64);
    let mut e = evidence();
    e.loaded_code = Some(LoadedCode {
        unprotected: vec![FileDigest {
            path: "/tmp/x/evil.so".into(),
            sha256: lib.clone(),
        }],
    });
    let matcher = Matcher::new([full("invoice")]);
    let why = refusal(&matcher, &e);
    assert_eq!(
        why.to_string(),
        format!(
            "loaded code /tmp/x/evil.so is writable by the workload and not allowed by the image (sha256 {lib}): add the digest to code.libraries or install the file root-owned"
        )
    );
    let allowed = image(
        "allowed",
        &format!("[code]\nsha256 = [\"{CODE}\"]\nlibraries = [\"{lib}\"]\n"),
    );
    let matcher = Matcher::new([allowed]);
    assert!(run(&matcher, &e, &agent(), "x").is_ok());
    e.loaded_code = None;
    assert_eq!(refusal(&matcher, &e), Mismatch::LoadedCodeNotMeasured);
}

#[test]
fn require_loaded_needs_every_weight_file_held() {
    let text = format!(
        "[code]\nsha256 = [\"{CODE}\"]\n[model]\nname = \"m\"\nversion = \"1\"\ndigest = \"{MODEL}\"\nrequire_loaded = true\n"
    );
    let matcher = Matcher::new([image("loaded", &text)]);
    assert!(matcher.code_hints(CODE).require_loaded);
    let mut e = evidence();
    assert_eq!(refusal(&matcher, &e), Mismatch::ModelLoadNotMeasured);
    e.model_loaded = Some(ModelLoaded {
        weight_files: 2,
        not_loaded: vec!["model.safetensors".into()],
    });
    assert_eq!(
        refusal(&matcher, &e).to_string(),
        "model is not loaded: model.safetensors is neither open nor mapped by process 42"
    );
    e.model_loaded = Some(ModelLoaded {
        weight_files: 2,
        not_loaded: vec![],
    });
    assert!(run(&matcher, &e, &agent(), "x").is_ok());
}

#[test]
fn hints_carry_dialects_and_require_loaded() {
    let matcher = Matcher::new([full("invoice")]);
    let hints = matcher.all_path_hints();
    assert_eq!(hints.len(), 1);
    assert_eq!(hints[0].0, CODE);
    assert_eq!(hints[0].1.interpreters, BTreeSet::from(["python"]));
    assert!(!hints[0].1.require_loaded);
}
