//! Fixtures shared by the image module's tests.

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "test fixtures")]

use std::time::{Duration, UNIX_EPOCH};

use super::{Algorithm, Envelope, GoldImage, ImageContext, SigningKey, canonical};

/// A manifest using every field.
pub(super) const FULL_TOML: &str = r#"
name = "invoice-agent"
version = "1.4.2"
spiffe_id = "spiffe://example.org/agents/invoice"
x509_ttl = 300
jwt_ttl = 120
dns_names = ["invoice.internal", "api.invoice.internal"]
owner = "Alice Martin <alice@example.org>"
purpose = "Reads supplier invoices and drafts payments for approval"
risk_tier = "high"
scopes = ["payments:draft", "invoices:read"]
review_by = 2030-01-31
not_after = "2030-06-30T12:00:00+02:00"

[code]
sha256 = [
  "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb",
  "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
]
path = "/usr/bin/python3.12"
app_digest = "sha256:cccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccc"
app_path = "/opt/invoice-agent"

[model]
name = "meta-llama/Llama-3.1-8B-Instruct"
version = "2024-07"
digest = "sha256:dddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddd"
path = "/models/llama-3.1-8b"

[env]
INVOICE_MODE = "draft-only"
HF_HUB_OFFLINE = "1"

[unix]
uid = 1001
gid = 1001

[nodes]
spiffe_id_prefixes = ["spiffe://example.org/hallmark/agent/x509pop"]
attestors = ["x509pop"]
"#;

/// The smallest valid manifest, risk tier low.
pub(super) const MIN_TOML: &str = r#"
name = "echo"
version = "1"
spiffe_id = "spiffe://example.org/echo"
owner = "bob"
purpose = "tests"
risk_tier = "low"
not_after = 2030-12-31
[code]
sha256 = ["0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"]
"#;

/// A fresh key.
pub(super) fn key(algorithm: Algorithm) -> SigningKey {
    SigningKey::from_pkcs8_der(&SigningKey::generate_pkcs8(algorithm).unwrap()).unwrap()
}

/// Signs a manifest with each key in turn.
pub(super) fn sign_toml(toml: &str, keys: &[&SigningKey]) -> Vec<u8> {
    let image = GoldImage::from_toml(toml).unwrap();
    sign_payload(&canonical::encode(&image), keys)
}

/// Signs raw payload bytes with each key in turn.
pub(super) fn sign_payload(payload: &[u8], keys: &[&SigningKey]) -> Vec<u8> {
    let (first, rest) = keys.split_first().unwrap();
    let mut envelope = Envelope::sign(payload, first).unwrap();
    for k in rest {
        envelope.add_signature(payload, k).unwrap();
    }
    envelope.to_json()
}

/// `example.org`, default cap, 2026-01-01T00:00:00Z.
pub(super) fn ctx() -> ImageContext {
    let mut ctx = ImageContext::new("example.org".parse().unwrap());
    ctx.now = UNIX_EPOCH + Duration::from_secs(1_767_225_600);
    ctx
}
