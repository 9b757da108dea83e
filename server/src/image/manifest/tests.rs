#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests"
)]

use super::*;
use crate::image::test_support::{FULL_TOML, MIN_TOML};
use crate::image::types::Interpreter;

/// The error of `toml`, as `(field, reason)`.
fn err(toml: &str) -> (String, String) {
    let e = GoldImage::from_toml(toml).unwrap_err();
    (e.field, e.reason)
}

/// `MIN_TOML` with `line` added at the top level (before `[code]`).
fn min_with(line: &str) -> String {
    MIN_TOML.replacen("[code]", &format!("{line}\n[code]"), 1)
}

#[test]
fn full_manifest_reads_every_field() {
    let image = GoldImage::from_toml(FULL_TOML).unwrap();
    assert_eq!(image.image_ref(), "invoice-agent@1.4.2");
    assert_eq!(
        image.spiffe_id.as_str(),
        "spiffe://example.org/agents/invoice"
    );
    let digests: Vec<_> = image
        .code
        .sha256
        .iter()
        .map(|d| d.as_str().chars().next().unwrap())
        .collect();
    assert_eq!(digests, ['a', 'b'], "a set, sorted");
    assert_eq!(image.code.path.as_deref(), Some("/usr/bin/python3.12"));
    assert!(image.code.app_digest.is_some());
    let model = image.model.as_ref().unwrap();
    assert_eq!(model.name, "meta-llama/Llama-3.1-8B-Instruct");
    assert_eq!(model.path.as_deref(), Some("/models/llama-3.1-8b"));
    assert_eq!(image.env.len(), 2);
    assert_eq!(
        image.unix,
        Some(UnixConstraint {
            uid: Some(1001),
            gid: Some(1001),
            any_uid: false,
        })
    );
    let nodes = image.nodes.as_ref().unwrap();
    assert_eq!(
        nodes.attestors.iter().collect::<Vec<_>>(),
        [&NodeAttestorKind::X509Pop]
    );
    assert_eq!(image.x509_ttl, Some(300));
    assert_eq!(image.jwt_ttl, Some(120));
    assert_eq!(image.risk_tier, RiskTier::High);
    assert_eq!(image.scopes.len(), 2);
    assert_eq!(image.review_by.unwrap().to_string(), "2030-01-31T23:59:59Z");
    assert_eq!(image.not_after.to_string(), "2030-06-30T10:00:00Z");
}

#[test]
fn minimal_manifest_reads() {
    let image = GoldImage::from_toml(MIN_TOML).unwrap();
    assert!(image.model.is_none() && image.unix.is_none() && image.nodes.is_none());
    assert!(image.env.is_empty() && image.scopes.is_empty() && image.dns_names.is_empty());
    assert_eq!(image.not_after.to_string(), "2030-12-31T23:59:59Z");
}

#[test]
fn errors_name_the_field() {
    let bad_second = FULL_TOML.replace(
        "\"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\"",
        "\"AAAA\"",
    );
    assert_eq!(
        err(&bad_second),
        (
            "code.sha256[1]".into(),
            "expected 64 lowercase hex characters".into()
        )
    );
    let e = GoldImage::from_toml(&bad_second).unwrap_err();
    assert_eq!(
        e.to_string(),
        "field code.sha256[1]: expected 64 lowercase hex characters"
    );

    let bad_model = FULL_TOML.replace("sha256:dddd", "sha1:dddd");
    assert_eq!(err(&bad_model).0, "model.digest");
    assert_eq!(
        err(&MIN_TOML.replace("owner = \"bob\"\n", "")),
        ("owner".into(), "is required".into())
    );
    assert_eq!(
        err(&MIN_TOML.replace("\"low\"", "\"extreme\"")).0,
        "risk_tier"
    );
    assert_eq!(err(&min_with("x509_ttl = 0")).0, "x509_ttl");
    assert_eq!(err(&min_with("x509_ttl = 30.5")).0, "x509_ttl");
    assert!(err(&min_with("x509_ttl = 30.5")).1.contains("integer"));
    assert_eq!(err(&min_with("jwt_ttl = \"60\"")).0, "jwt_ttl");
    assert_eq!(err(&min_with("review_by = 2031-01-01")).0, "review_by");
    assert_eq!(err(&min_with("dns_names = [\"a..b\"]")).0, "dns_names[0]");
    assert_eq!(err(&min_with("scopes = [\"a b\"]")).0, "scopes[0]");
    assert_eq!(
        err(&min_with("scopes = [\"x\", \"x\"]")),
        ("scopes[1]".into(), "\"x\" is listed twice".into())
    );
    assert_eq!(
        err(&MIN_TOML.replace("2030-12-31", "2030-12-31T10:00:00")).0,
        "not_after"
    );
    assert_eq!(
        err(&MIN_TOML.replace("2030-12-31", "\"next year\"")).0,
        "not_after"
    );
    assert_eq!(
        err(&format!("{MIN_TOML}[env]\n\"BAD-NAME\" = \"x\"\n")).0,
        "env.BAD-NAME"
    );
    assert_eq!(err(&format!("{MIN_TOML}[unix]\nuid = -1\n")).0, "unix.uid");
    assert_eq!(
        err(&format!("{MIN_TOML}[nodes]\nattestors = [\"k8s\"]\n")).0,
        "nodes.attestors[0]"
    );
    assert_eq!(
        err(&format!("{MIN_TOML}app_path = \"/opt/x\"\n")).0,
        "code.app_path"
    );
    assert_eq!(err(&format!("{MIN_TOML}path = \"bin/x\"\n")).0, "code.path");
    assert_eq!(
        err(&MIN_TOML.replace("sha256 = [", "sha256 = [] #")).0,
        "code.sha256"
    );
    assert_eq!(
        err(&format!(
            "{MIN_TOML}[model]\nname = \"m\"\nversion = \"1\"\n"
        )),
        ("model.digest".into(), "is required".into())
    );
}

#[test]
fn unknown_fields_are_refused_at_every_level() {
    assert_eq!(
        err(&min_with("nmae = \"x\"")),
        ("nmae".into(), "unknown field".into())
    );
    assert_eq!(
        err(&format!("{MIN_TOML}shasum = []\n")),
        ("code.shasum".into(), "unknown field".into())
    );
    let model = "[model]\nname = \"m\"\nversion = \"1\"\ndigest = \"sha256:dddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddd\"\n";
    assert!(GoldImage::from_toml(&format!("{MIN_TOML}{model}")).is_ok());
    assert_eq!(
        err(&format!("{MIN_TOML}{model}quantized = \"q4\"\n")).0,
        "model.quantized"
    );
    assert_eq!(
        err(&format!("{MIN_TOML}[unix]\nuid = 1\nuser = \"x\"\n")).0,
        "unix.user"
    );
    assert_eq!(
        err(&format!("{MIN_TOML}[nodes]\nattestor = []\n")).0,
        "nodes.attestor"
    );
    assert_eq!(err(&format!("{MIN_TOML}[extra]\n")).0, "extra");
    // A misspelt required key is reported as unknown, not as missing.
    assert_eq!(
        err(&MIN_TOML.replace("owner =", "ownr =")),
        ("ownr".into(), "unknown field".into())
    );
}

#[test]
fn spiffe_id_must_be_a_workload_id() {
    for (id, why) in [
        ("spiffe://example.org", "trust domain"),
        ("spiffe://example.org/hallmark/server", "reserved"),
        ("spiffe://example.org/hallmark", "reserved"),
        ("spiffe://Example.org/x", "trust domain"),
        ("https://example.org/x", "spiffe://"),
        ("spiffe://example.org/a//b", "empty segment"),
    ] {
        let (field, reason) = err(&MIN_TOML.replace("spiffe://example.org/echo", id));
        assert_eq!(field, "spiffe_id", "{id}");
        assert!(reason.contains(why), "{id}: {reason}");
    }
    assert!(GoldImage::from_toml(&MIN_TOML.replace("/echo", "/hallmarks/x")).is_ok());
}

#[test]
fn empty_sections_are_absent() {
    let toml = format!("{MIN_TOML}[unix]\n[nodes]\nattestors = []\n[env]\n");
    let image = GoldImage::from_toml(&toml).unwrap();
    assert_eq!(image, GoldImage::from_toml(MIN_TOML).unwrap());
}

#[test]
fn governance_dates() {
    let image = GoldImage::from_toml(&min_with("review_by = 2026-03-01")).unwrap();
    let at = |s: &str| Timestamp::parse(s).unwrap().to_system_time();
    assert!(!image.review_overdue(at("2026-03-01T23:59:58Z")));
    assert!(image.review_overdue(at("2026-03-01T23:59:59Z")));
    assert!(!image.expired(at("2030-12-31T23:59:58Z")));
    assert!(image.expired(at("2030-12-31T23:59:59Z")));
}

#[test]
fn toml_syntax_errors_are_reported() {
    let (field, reason) = err("name = ");
    assert_eq!(field, "(root)");
    assert!(!reason.is_empty());
}

#[test]
fn interpreter_libraries_and_require_loaded_read_and_round_trip() {
    let app = "sha256:cccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccc";
    let lib = "e".repeat(64);
    let text = MIN_TOML.to_owned()
        + &format!(
            "app_digest = \"{app}\"\ninterpreter = \"python\"\nallow_inline = true\nlibraries = [\"{lib}\"]\n[model]\nname = \"m\"\nversion = \"1\"\ndigest = \"{app}\"\nrequire_loaded = true\n[unix]\nuid = 1000\n"
        );
    let image = GoldImage::from_toml(&text).unwrap();
    assert_eq!(image.code.interpreter, Some(Interpreter::Python));
    assert!(image.code.allow_inline);
    assert_eq!(image.code.libraries.len(), 1);
    assert!(image.model.as_ref().unwrap().require_loaded);
    assert!(image.check_new().is_ok());
    let json = crate::image::canonical::encode(&image);
    let text_json = String::from_utf8(json.clone()).unwrap();
    assert!(text_json.contains("\"allow_inline\":true"), "{text_json}");
    assert!(text_json.contains("\"interpreter\":\"python\""));
    assert!(text_json.contains("\"require_loaded\":true"));
    assert_eq!(crate::image::canonical::decode(&json).unwrap(), image);
    // Defaults are left out of the canonical form.
    let plain = GoldImage::from_toml(MIN_TOML).unwrap();
    assert!(!plain.code.allow_inline && plain.code.libraries.is_empty());
    let json = String::from_utf8(crate::image::canonical::encode(&plain)).unwrap();
    assert!(!json.contains("allow_inline") && !json.contains("libraries"));
}

#[test]
fn the_new_code_fields_are_checked() {
    let app = "sha256:cccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccc";
    let with = |lines: &str| MIN_TOML.to_owned() + lines;
    assert_eq!(
        err(&with("interpreter = \"ruby\"\n")),
        (
            "code.interpreter".into(),
            "\"ruby\" is not one of python, node, none".into()
        )
    );
    assert_eq!(
        err(&with("interpreter = \"python\"\n")).1,
        "interpreter needs app_digest"
    );
    assert_eq!(
        err(&with(&format!(
            "app_digest = \"{app}\"\ninterpreter = \"none\"\nallow_inline = true\n"
        )))
        .0,
        "code.allow_inline"
    );
    assert_eq!(
        err(&with(&format!(
            "app_digest = \"{app}\"\nallow_inline = 1\n"
        )))
        .1,
        "expected true or false, found a number"
    );
    assert_eq!(err(&with("libraries = [\"ABC\"]\n")).0, "code.libraries[0]");
    // An app tree without interpreter reads (an image an earlier release
    // stored) but is refused for signing, verifying and registering.
    let old = GoldImage::from_toml(&with(&format!("app_digest = \"{app}\"\n"))).unwrap();
    let e = old.check_new().unwrap_err();
    assert_eq!(e.field, "code.interpreter");
    assert!(e.reason.contains("add interpreter = \"python\""), "{e}");
}

#[test]
fn an_interpreter_image_pins_its_account_or_says_any_uid() {
    let app = "sha256:cccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccc";
    let image = |interpreter: &str, unix: &str| {
        MIN_TOML.to_owned()
            + &format!("app_digest = \"{app}\"\ninterpreter = \"{interpreter}\"\n{unix}")
    };
    // Without [unix]: reads (a stored image still loads), refused when new.
    for interpreter in ["python", "node"] {
        let e = GoldImage::from_toml(&image(interpreter, ""))
            .unwrap()
            .check_new()
            .unwrap_err();
        assert_eq!(e.field, "unix.uid");
        assert!(
            e.reason.starts_with(&format!(
                "required with code.interpreter = \"{interpreter}\": add [unix] uid (or gid)"
            )),
            "{e}"
        );
        assert!(e.reason.contains("set [unix] any_uid = true"), "{e}");
    }
    // A pinned uid or gid, or the explicit any_uid, is accepted.
    for unix in [
        "[unix]\nuid = 1000\n",
        "[unix]\ngid = 1000\n",
        "[unix]\nany_uid = true\n",
    ] {
        let parsed = GoldImage::from_toml(&image("python", unix)).unwrap();
        parsed.check_new().unwrap();
        let json = crate::image::canonical::encode(&parsed);
        assert_eq!(crate::image::canonical::decode(&json).unwrap(), parsed);
        let text = String::from_utf8(json).unwrap();
        assert_eq!(
            text.contains("\"any_uid\":true"),
            unix.contains("any_uid"),
            "{text}"
        );
    }
    // An image that runs its own code reads the tree as data: no rule.
    GoldImage::from_toml(&image("none", ""))
        .unwrap()
        .check_new()
        .unwrap();
    // any_uid contradicts a pinned account, and means nothing without an
    // interpreter; false is the default and stays out of the canonical form.
    assert_eq!(
        err(&image("python", "[unix]\nuid = 7\nany_uid = true\n")),
        (
            "unix.any_uid".into(),
            "any_uid contradicts uid and gid: keep one".into()
        )
    );
    let (field, reason) = err(&image("none", "[unix]\nany_uid = true\n"));
    assert_eq!(field, "unix.any_uid");
    assert!(
        reason.starts_with("any_uid is for interpreter images"),
        "{reason}"
    );
    let off = GoldImage::from_toml(&image("python", "[unix]\nuid = 7\nany_uid = false\n")).unwrap();
    let text = String::from_utf8(crate::image::canonical::encode(&off)).unwrap();
    assert!(!text.contains("any_uid"), "{text}");
}
