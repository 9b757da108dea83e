//! Canonical JSON of a gold image: the exact bytes that are signed.
//!
//! Rules: object keys sorted by their UTF-8 bytes; no insignificant
//! whitespace; integers only (no floats, no exponents); strings with the
//! minimal escapes (`\"`, `\\`, `\b`, `\f`, `\n`, `\r`, `\t`, other control
//! characters as `\u00xx` lowercase; everything else, including non-ASCII
//! and `/`, written as is); absent optional fields, empty lists, tables and
//! maps omitted (never `null`); every list is a set, sorted by the bytes of
//! its items (duplicates are refused when reading). Dates are RFC 3339 UTC
//! strings with one-second precision (`2027-06-30T23:59:59Z`).
//!
//! A payload is canonical if and only if reading it as a [`GoldImage`] and
//! encoding that again gives back the same bytes ([`decode`]).

use serde_json::{Map, Value};

use super::manifest::{FieldError, GoldImage};

/// Why a payload is not an acceptable canonical gold image.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CanonicalError {
    /// The payload is not JSON.
    #[error("payload is not JSON: {0}")]
    NotJson(String),
    /// The payload is JSON but a field is missing, unknown or invalid.
    #[error("payload {0}")]
    Field(#[from] FieldError),
    /// The payload is a valid gold image, but not in canonical form.
    #[error(
        "payload is not canonical JSON (sorted keys, no whitespace, sorted sets, no empty or null fields): re-sign it with `hallmark-server image sign`"
    )]
    NotCanonical,
}

/// Encodes a gold image as canonical JSON.
pub fn encode(image: &GoldImage) -> Vec<u8> {
    encode_value(&to_value(image))
}

/// Reads a payload as a gold image and checks it is canonical.
pub fn decode(payload: &[u8]) -> Result<GoldImage, CanonicalError> {
    let value: Value =
        serde_json::from_slice(payload).map_err(|e| CanonicalError::NotJson(e.to_string()))?;
    let image = GoldImage::from_value(&value)?;
    if encode(&image) != payload {
        return Err(CanonicalError::NotCanonical);
    }
    Ok(image)
}

/// Whether `payload` is exactly the canonical encoding of a gold image.
pub fn is_canonical(payload: &[u8]) -> bool {
    decode(payload).is_ok()
}

/// The JSON value of a gold image, following the manifest's field names.
pub fn to_value(image: &GoldImage) -> Value {
    let mut root = Fields::default();
    root.str("name", image.name.as_str());
    root.str("version", image.version.as_str());
    root.str("spiffe_id", image.spiffe_id.as_str());

    let mut code = Fields::default();
    code.set("sha256", image.code.sha256.iter().map(|d| d.as_str()));
    code.opt_str("path", image.code.path.as_deref());
    code.opt_str(
        "app_digest",
        image.code.app_digest.as_ref().map(|d| d.as_str()),
    );
    code.opt_str("app_path", image.code.app_path.as_deref());
    code.opt_str("interpreter", image.code.interpreter.map(|i| i.as_str()));
    code.flag("allow_inline", image.code.allow_inline);
    code.set("libraries", image.code.libraries.iter().map(|d| d.as_str()));
    root.obj("code", code);

    if let Some(model) = &image.model {
        let mut m = Fields::default();
        m.str("name", &model.name);
        m.str("version", &model.version);
        m.str("digest", model.digest.as_str());
        m.opt_str("path", model.path.as_deref());
        m.flag("require_loaded", model.require_loaded);
        root.obj("model", m);
    }
    let mut env = Fields::default();
    for (name, value) in &image.env {
        env.str(name.as_str(), value);
    }
    root.obj("env", env);
    if let Some(unix) = &image.unix {
        let mut u = Fields::default();
        u.opt_int("uid", unix.uid.map(u64::from));
        u.opt_int("gid", unix.gid.map(u64::from));
        u.flag("any_uid", unix.any_uid);
        root.obj("unix", u);
    }
    if let Some(nodes) = &image.nodes {
        let mut n = Fields::default();
        n.set(
            "spiffe_id_prefixes",
            nodes.spiffe_id_prefixes.iter().map(|i| i.as_str()),
        );
        n.set("attestors", nodes.attestors.iter().map(|a| a.as_str()));
        root.obj("nodes", n);
    }
    root.opt_int("x509_ttl", image.x509_ttl);
    root.opt_int("jwt_ttl", image.jwt_ttl);
    root.set("dns_names", image.dns_names.iter().map(String::as_str));
    root.str("owner", &image.owner);
    root.str("purpose", &image.purpose);
    root.str("risk_tier", image.risk_tier.as_str());
    root.set("scopes", image.scopes.iter().map(String::as_str));
    root.opt_str(
        "review_by",
        image.review_by.map(|t| t.to_string()).as_deref(),
    );
    root.str("not_after", &image.not_after.to_string());
    Value::Object(root.0)
}

/// Encodes any JSON value by the canonical rules. Floats are written by
/// their shortest representation, but gold images never hold any (the
/// reader accepts integers only, so a float-bearing payload is refused
/// before its encoding matters).
pub fn encode_value(value: &Value) -> Vec<u8> {
    let mut out = Vec::new();
    write_value(&mut out, value);
    out
}

fn write_value(out: &mut Vec<u8>, value: &Value) {
    match value {
        Value::Null => out.extend_from_slice(b"null"),
        Value::Bool(b) => out.extend_from_slice(if *b { b"true" } else { b"false" }),
        Value::Number(n) => out.extend_from_slice(n.to_string().as_bytes()),
        Value::String(s) => write_string(out, s),
        Value::Array(items) => {
            out.push(b'[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_value(out, item);
            }
            out.push(b']');
        }
        Value::Object(map) => write_object(out, map),
    }
}

/// Appends the canonical encoding of the object `map` to `out` (what
/// [`encode_value`] does for `Value::Object`, without building one).
pub(crate) fn write_object(out: &mut Vec<u8>, map: &serde_json::Map<String, Value>) {
    // Sort here rather than trust the map's order: serde_json keeps
    // insertion order when another crate enables `preserve_order`.
    let mut entries: Vec<(&String, &Value)> = map.iter().collect();
    entries.sort_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
    out.push(b'{');
    for (i, (k, v)) in entries.into_iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        write_string(out, k);
        out.push(b':');
        write_value(out, v);
    }
    out.push(b'}');
}

/// Appends the canonical encoding of the string `s` to `out`.
pub(crate) fn write_string(out: &mut Vec<u8>, s: &str) {
    // Every character that needs an escape is ASCII, and no byte of a
    // multi-byte UTF-8 sequence is, so the string is copied in runs of
    // bytes between escapes (audit records are encoded on every mint).
    let bytes = s.as_bytes();
    out.reserve(bytes.len() + 2);
    out.push(b'"');
    let mut run = 0;
    for (i, &b) in bytes.iter().enumerate() {
        let escape: &[u8] = match b {
            b'"' => b"\\\"",
            b'\\' => b"\\\\",
            0x08 => b"\\b",
            0x0c => b"\\f",
            b'\n' => b"\\n",
            b'\r' => b"\\r",
            b'\t' => b"\\t",
            0x00..=0x1f => {
                out.extend_from_slice(&bytes[run..i]);
                out.extend_from_slice(format!("\\u{b:04x}").as_bytes());
                run = i + 1;
                continue;
            }
            _ => continue,
        };
        out.extend_from_slice(&bytes[run..i]);
        out.extend_from_slice(escape);
        run = i + 1;
    }
    out.extend_from_slice(&bytes[run..]);
    out.push(b'"');
}

/// Builds an object, leaving out absent and empty fields.
#[derive(Default)]
struct Fields(Map<String, Value>);

impl Fields {
    fn str(&mut self, key: &str, value: &str) {
        self.0
            .insert(key.to_owned(), Value::String(value.to_owned()));
    }

    fn opt_str(&mut self, key: &str, value: Option<&str>) {
        if let Some(v) = value {
            self.str(key, v);
        }
    }

    /// A boolean whose default is `false`: written only when `true`.
    fn flag(&mut self, key: &str, value: bool) {
        if value {
            self.0.insert(key.to_owned(), Value::Bool(true));
        }
    }

    fn opt_int(&mut self, key: &str, value: Option<u64>) {
        if let Some(v) = value {
            self.0.insert(key.to_owned(), Value::from(v));
        }
    }

    fn set<'s>(&mut self, key: &str, items: impl Iterator<Item = &'s str>) {
        let mut items: Vec<&str> = items.collect();
        items.sort_unstable_by(|a, b| a.as_bytes().cmp(b.as_bytes()));
        if !items.is_empty() {
            let array = items
                .into_iter()
                .map(|s| Value::String(s.to_owned()))
                .collect();
            self.0.insert(key.to_owned(), Value::Array(array));
        }
    }

    fn obj(&mut self, key: &str, fields: Fields) {
        if !fields.0.is_empty() {
            self.0.insert(key.to_owned(), Value::Object(fields.0));
        }
    }
}

#[cfg(test)]
mod tests;
