//! The Hallmark binding: what an SVID proves about the workload it was
//! issued to. The same object is the X.509 binding extension's content and
//! the JWT-SVID's `hallmark` claim:
//!
//! ```json
//! {"code_sha256":"…","image":"name@version","model":{"digest":"sha256:…","name":"…","version":"…"},"node":"spiffe://…","owner":"…","risk_tier":"low"}
//! ```
//!
//! Compact JSON, keys sorted; `model` is absent when the image names none.

use serde_json::{Map, Value};

use hallmark_ca::id::SpiffeId;

use crate::image::GoldImage;

/// The binding object for a workload running `code_sha256` that matched
/// `image` through the agent `node`.
pub fn binding_object(image: &GoldImage, code_sha256: &str, node: &SpiffeId) -> Map<String, Value> {
    // Inserted in sorted key order, so the output is sorted whether or not
    // serde_json preserves insertion order.
    let mut object = Map::new();
    object.insert("code_sha256".into(), Value::String(code_sha256.to_owned()));
    object.insert("image".into(), Value::String(image.image_ref()));
    if let Some(model) = &image.model {
        let mut m = Map::new();
        m.insert(
            "digest".into(),
            Value::String(model.digest.as_str().to_owned()),
        );
        m.insert("name".into(), Value::String(model.name.clone()));
        m.insert("version".into(), Value::String(model.version.clone()));
        object.insert("model".into(), Value::Object(m));
    }
    object.insert("node".into(), Value::String(node.as_str().to_owned()));
    object.insert("owner".into(), Value::String(image.owner.clone()));
    object.insert(
        "risk_tier".into(),
        Value::String(image.risk_tier.as_str().to_owned()),
    );
    object
}

/// The binding as compact JSON bytes, for the X.509 extension.
pub fn binding_json(image: &GoldImage, code_sha256: &str, node: &SpiffeId) -> Vec<u8> {
    // Serializing a map of strings cannot fail.
    serde_json::to_vec(&Value::Object(binding_object(image, code_sha256, node))).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn binding_is_compact_sorted_and_complete() {
        let image = GoldImage::from_toml(
            r#"
            name = "invoice-agent"
            version = "1.2.0"
            spiffe_id = "spiffe://example.org/invoice-agent"
            owner = "alice@example.org"
            purpose = "reads invoices"
            risk_tier = "high"
            not_after = 2099-12-31
            [code]
            sha256 = ["1111111111111111111111111111111111111111111111111111111111111111"]
            [model]
            name = "llama"
            version = "3.1"
            digest = "sha256:2222222222222222222222222222222222222222222222222222222222222222"
        "#,
        )
        .unwrap();
        let node = SpiffeId::parse("spiffe://example.org/hallmark/agent/x509pop/ab").unwrap();
        let json = String::from_utf8(binding_json(
            &image,
            "1111111111111111111111111111111111111111111111111111111111111111",
            &node,
        ))
        .unwrap();
        assert_eq!(
            json,
            r#"{"code_sha256":"1111111111111111111111111111111111111111111111111111111111111111","image":"invoice-agent@1.2.0","model":{"digest":"sha256:2222222222222222222222222222222222222222222222222222222222222222","name":"llama","version":"3.1"},"node":"spiffe://example.org/hallmark/agent/x509pop/ab","owner":"alice@example.org","risk_tier":"high"}"#
        );
    }
}
