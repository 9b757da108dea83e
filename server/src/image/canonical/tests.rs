#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests"
)]

use std::collections::{BTreeMap, BTreeSet};

use proptest::prelude::*;

use super::*;
use crate::image::test_support::{FULL_TOML, MIN_TOML};
use crate::image::types::EnvName;

#[test]
fn minimal_image_encodes_to_these_bytes() {
    let image = GoldImage::from_toml(MIN_TOML).unwrap();
    let expected = concat!(
        r#"{"code":{"sha256":["0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"]},"#,
        r#""name":"echo","not_after":"2030-12-31T23:59:59Z","owner":"bob","purpose":"tests","#,
        r#""risk_tier":"low","spiffe_id":"spiffe://example.org/echo","version":"1"}"#
    );
    assert_eq!(String::from_utf8(encode(&image)).unwrap(), expected);
}

#[test]
fn full_image_round_trips() {
    let image = GoldImage::from_toml(FULL_TOML).unwrap();
    let bytes = encode(&image);
    assert_eq!(decode(&bytes).unwrap(), image);
    let text = String::from_utf8(bytes).unwrap();
    assert!(text.contains(r#""sha256":["aaaa"#), "sets sorted: {text}");
    assert!(
        text.contains(r#""env":{"HF_HUB_OFFLINE":"1","INVOICE_MODE":"draft-only"}"#),
        "{text}"
    );
    assert!(text.contains(r#""unix":{"gid":1001,"uid":1001}"#), "{text}");
    assert!(
        !text.contains(' ') || text.contains("Alice Martin"),
        "no whitespace outside strings"
    );
}

#[test]
fn strings_use_minimal_escapes() {
    let v = serde_json::json!({"b": "q\"\\/\u{1}\n\té", "a": [1, -2]});
    assert_eq!(
        String::from_utf8(encode_value(&v)).unwrap(),
        "{\"a\":[1,-2],\"b\":\"q\\\"\\\\/\\u0001\\n\\té\"}"
    );
}

#[test]
fn non_canonical_payloads_are_refused() {
    let canonical = String::from_utf8(encode(&GoldImage::from_toml(FULL_TOML).unwrap())).unwrap();
    assert!(is_canonical(canonical.as_bytes()));
    let variants = [
        canonical.replacen(",", ", ", 1), // whitespace
        format!("{canonical}\n"),         // trailing newline
        canonical.replacen("{\"code\"", "{\"x509_ttl\":300,\"code\"", 1), // duplicate key, unsorted
        canonical.replacen("\"jwt_ttl\":120", "\"jwt_ttl\":1.2e2", 1), // float
        canonical.replacen("\"aaaa", "\"AAAA", 0).replacen(
            &format!("\"{}\",\"{}\"", "a".repeat(64), "b".repeat(64)),
            &format!("\"{}\",\"{}\"", "b".repeat(64), "a".repeat(64)),
            1,
        ), // unsorted set
        canonical.replacen("\"dns_names\"", "\"scopesx\":[],\"dns_names\"", 1), // unknown field
        canonical.replacen("invoice-agent", "invoice\\u002dagent", 1), // needless escape
    ];
    for v in &variants {
        assert_ne!(v, &canonical);
        assert!(decode(v.as_bytes()).is_err(), "accepted {v}");
    }
    let min = String::from_utf8(encode(&GoldImage::from_toml(MIN_TOML).unwrap())).unwrap();
    for extra in ["\"env\":{},", "\"dns_names\":[],", "\"jwt_ttl\":null,"] {
        let v = min.replacen("\"name\"", &format!("{extra}\"name\""), 1);
        assert!(decode(v.as_bytes()).is_err(), "accepted {v}");
    }
    assert_eq!(
        decode(b"{\"nope\":1,")
            .unwrap_err()
            .to_string()
            .split(':')
            .next(),
        Some("payload is not JSON")
    );
    match decode(variants[5].as_bytes()).unwrap_err() {
        CanonicalError::Field(e) => assert_eq!(e.field, "scopesx"),
        other => panic!("{other:?}"),
    }
}

fn arb_image() -> impl Strategy<Value = GoldImage> {
    let text = "[^\\p{Cc}]{1,12}".prop_filter("not blank", |s: &String| !s.trim().is_empty());
    let env_value = any::<String>().prop_filter("no NUL", |s| !s.contains('\0'));
    (
        text.clone(),
        text,
        prop::collection::btree_map("[A-Z_][A-Z0-9_]{0,6}", env_value, 0..4),
        prop::collection::btree_set("[a-z]{1,8}(:[a-z]{1,5})?", 0..4),
        prop::collection::btree_set("[0-9a-f]{64}", 1..4),
        prop::option::of(1u64..=300),
        prop::option::of(any::<u32>()),
    )
        .prop_map(|(owner, purpose, env, scopes, digests, ttl, uid)| {
            let mut image = GoldImage::from_toml(FULL_TOML).unwrap();
            image.owner = owner;
            image.purpose = purpose;
            image.env = env
                .into_iter()
                .map(|(k, v)| (EnvName::new(&k).unwrap(), v))
                .collect::<BTreeMap<_, _>>();
            image.scopes = scopes;
            image.code.sha256 = digests
                .iter()
                .map(|d| crate::image::types::Sha256Hex::new(d).unwrap())
                .collect::<BTreeSet<_>>();
            image.x509_ttl = ttl;
            image.unix = uid.map(|uid| crate::image::manifest::UnixConstraint {
                uid: Some(uid),
                gid: None,
                any_uid: false,
            });
            image
        })
}

proptest! {
    #[test]
    fn encoding_is_stable(image in arb_image()) {
        let bytes = encode(&image);
        let back = decode(&bytes).unwrap();
        prop_assert_eq!(&back, &image);
        prop_assert_eq!(encode(&back), bytes.clone());
        // What serde_json reads is what we wrote.
        let v: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
        prop_assert_eq!(encode_value(&v), bytes);
    }
}

/// The escaping rules one character at a time, as the module docs state
/// them: what the run-copying `write_string` must agree with.
fn escaped_by_chars(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if u32::from(c) < 0x20 => out.push_str(&format!("\\u{:04x}", u32::from(c))),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

proptest! {
    #[test]
    fn strings_escape_exactly_the_documented_characters(
        s in "(\\PC|[\u{0}-\u{1f}\"\\\\\u{7f}])*",
    ) {
        let bytes = encode_value(&serde_json::Value::String(s.clone()));
        prop_assert_eq!(String::from_utf8(bytes.clone()).unwrap(), escaped_by_chars(&s));
        let back: String = serde_json::from_slice(&bytes).unwrap();
        prop_assert_eq!(back, s);
    }
}
