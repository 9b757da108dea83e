//! The gold-image manifest: what the operator writes (TOML) and what is
//! signed (canonical JSON), read into one validated [`GoldImage`].
//!
//! Both formats go through the same reader over a JSON value, which names
//! the exact field of every problem (`code.sha256[1]: expected 64 lowercase
//! hex characters`) and refuses unknown fields at every level.
//!
//! Every list is a set: its order carries no meaning, duplicates are refused,
//! and the canonical form sorts it. Empty lists, tables and maps are the same
//! as absent ones and are omitted from the canonical form.

use std::collections::{BTreeMap, BTreeSet};
use std::time::SystemTime;

use hallmark_ca::id::SpiffeId;
use hallmark_ca::version::Version;
use serde_json::{Map, Value};

use super::reader::{Obj, opt, req};
use super::text;
use super::types::{
    EnvName, ImageName, ImageVersion, Interpreter, NodeAttestorKind, RiskTier, Sha256Hex,
    Timestamp, TreeDigestStr,
};

/// The top-level keys of a manifest.
const TOP_KEYS: &[&str] = &[
    "name",
    "version",
    "spiffe_id",
    "code",
    "model",
    "env",
    "unix",
    "nodes",
    "x509_ttl",
    "jwt_ttl",
    "dns_names",
    "owner",
    "purpose",
    "risk_tier",
    "scopes",
    "review_by",
    "not_after",
];

/// Path prefix reserved for the issuer's and agents' own identities.
const RESERVED_PATH: &str = "/hallmark";

/// A manifest field that is missing, of the wrong type, unknown or invalid.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("field {field}: {reason}")]
pub struct FieldError {
    /// Path of the field, e.g. `code.sha256[1]` (`(root)` for the document).
    pub field: String,
    /// What is wrong and what is expected.
    pub reason: String,
}

impl FieldError {
    /// A field error at `field`.
    pub fn new(field: impl Into<String>, reason: impl Into<String>) -> FieldError {
        FieldError {
            field: field.into(),
            reason: reason.into(),
        }
    }
}

/// A validated gold image: every field has been checked, except what needs
/// the issuer's context (trust domain, TTL cap, the current time), which
/// [`verify`](super::verify) checks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GoldImage {
    /// Image name; `name@version` is immutable once registered.
    pub name: ImageName,
    /// Image version.
    pub version: ImageVersion,
    /// The SPIFFE ID workloads matching this image receive.
    pub spiffe_id: SpiffeId,
    /// Constraints on the executable and application tree.
    pub code: CodeConstraint,
    /// The model that must be present.
    pub model: Option<ModelConstraint>,
    /// Required exact values of environment variables.
    pub env: BTreeMap<EnvName, String>,
    /// Required uid/gid.
    pub unix: Option<UnixConstraint>,
    /// Constraints on the node agent.
    pub nodes: Option<NodeConstraint>,
    /// X.509-SVID lifetime in seconds (the server's cap when absent).
    pub x509_ttl: Option<u64>,
    /// JWT-SVID lifetime in seconds (the server's cap when absent).
    pub jwt_ttl: Option<u64>,
    /// DNS SANs.
    pub dns_names: BTreeSet<String>,
    /// Accountable human owner.
    pub owner: String,
    /// Approved purpose.
    pub purpose: String,
    /// Risk tier, which sets the number of signatures required.
    pub risk_tier: RiskTier,
    /// Approved actions/tools, carried in the JWT `scope` claim.
    pub scopes: BTreeSet<String>,
    /// When the image is due for review.
    pub review_by: Option<Timestamp>,
    /// When the image retires: no SVID is minted after it.
    pub not_after: Timestamp,
}

/// `[code]`: which executable (and application tree) may run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CodeConstraint {
    /// Allowed SHA-256 digests of the executable (at least one).
    pub sha256: BTreeSet<Sha256Hex>,
    /// Required absolute executable path.
    pub path: Option<String>,
    /// Canonical tree digest of the application tree.
    pub app_digest: Option<TreeDigestStr>,
    /// Where the application tree lives when the workload does not say.
    pub app_path: Option<String>,
    /// How the executable runs the app tree; required with `app_digest`
    /// for new images ([`GoldImage::check_new`]). An image stored without
    /// it still loads, and never matches.
    pub interpreter: Option<Interpreter>,
    /// Code on the command line (`-c`, `-e`), standard input and
    /// interactive sessions are allowed (default `false`).
    pub allow_inline: bool,
    /// Digests of loaded native code the image allows beyond protected
    /// (root-owned) files and the app tree: libraries the workload's uid
    /// could write.
    pub libraries: BTreeSet<Sha256Hex>,
}

/// `[model]`: the model that must be present.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelConstraint {
    /// Model name, e.g. `meta-llama/Llama-3.1-8B-Instruct`.
    pub name: String,
    /// Model version.
    pub version: String,
    /// Canonical tree digest of the model directory.
    pub digest: TreeDigestStr,
    /// Where the model lives when the workload does not say.
    pub path: Option<String>,
    /// The process must have the model's weight files open or mapped.
    pub require_loaded: bool,
}

/// `[unix]`: required process credentials (at least one is set, or
/// `any_uid`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UnixConstraint {
    /// Required uid.
    pub uid: Option<u32>,
    /// Required gid.
    pub gid: Option<u32>,
    /// An interpreter image that processes of every uid may obtain: the
    /// operator accepts that another uid can make the interpreter run its
    /// own code before the app ([`GoldImage::check_new`]).
    pub any_uid: bool,
}

/// `[nodes]`: which agents may obtain this identity (at least one list is
/// non-empty). An agent must match one prefix if any is given, and one
/// attestor if any is given.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeConstraint {
    /// Node SPIFFE ID prefixes (path-segment prefixes).
    pub spiffe_id_prefixes: BTreeSet<SpiffeId>,
    /// Node attestor kinds.
    pub attestors: BTreeSet<NodeAttestorKind>,
}

impl GoldImage {
    /// Parses and validates an operator's TOML manifest.
    pub fn from_toml(text: &str) -> Result<GoldImage, FieldError> {
        let table: toml::Table =
            toml::from_str(text).map_err(|e| FieldError::new("(root)", e.to_string()))?;
        let value = toml_to_json("", toml::Value::Table(table))?;
        GoldImage::from_value(&value)
    }

    /// Reads and validates a gold image from a JSON value (the payload).
    pub fn from_value(value: &Value) -> Result<GoldImage, FieldError> {
        let mut o = Obj::root(value, TOP_KEYS)?;
        let code = {
            let mut c = o
                .obj(
                    "code",
                    &[
                        "sha256",
                        "path",
                        "app_digest",
                        "app_path",
                        "interpreter",
                        "allow_inline",
                        "libraries",
                    ],
                )?
                .ok_or_else(|| o.missing("code"))?;
            let code = CodeConstraint {
                sha256: c.set("sha256", Sha256Hex::new)?,
                path: c.opt_str("path", abs_path)?,
                app_digest: c.opt_str("app_digest", TreeDigestStr::new)?,
                app_path: c.opt_str("app_path", abs_path)?,
                interpreter: c.opt_str("interpreter", Interpreter::new)?,
                allow_inline: c.opt_bool("allow_inline")?,
                libraries: c.set("libraries", Sha256Hex::new)?,
            };
            if code.sha256.is_empty() {
                return Err(c.field_error("sha256", "at least one executable digest is required"));
            }
            if code.app_path.is_some() && code.app_digest.is_none() {
                return Err(c.field_error("app_path", "app_path needs app_digest"));
            }
            if code.interpreter.is_some() && code.app_digest.is_none() {
                return Err(c.field_error("interpreter", "interpreter needs app_digest"));
            }
            if code.allow_inline
                && !matches!(
                    code.interpreter,
                    Some(Interpreter::Python | Interpreter::Node)
                )
            {
                return Err(c.field_error(
                    "allow_inline",
                    "allow_inline needs interpreter = \"python\" or \"node\"",
                ));
            }
            c.finish()?;
            code
        };
        let model = match o.obj(
            "model",
            &["name", "version", "digest", "path", "require_loaded"],
        )? {
            None => None,
            Some(mut m) => {
                let model = ModelConstraint {
                    name: req(m.opt_str("name", |s| text(s, 256))?, &m, "name")?,
                    version: req(m.opt_str("version", |s| text(s, 128))?, &m, "version")?,
                    digest: req(m.opt_str("digest", TreeDigestStr::new)?, &m, "digest")?,
                    path: m.opt_str("path", abs_path)?,
                    require_loaded: m.opt_bool("require_loaded")?,
                };
                m.finish()?;
                Some(model)
            }
        };
        let unix = match o.obj("unix", &["uid", "gid", "any_uid"])? {
            None => None,
            Some(mut u) => {
                let unix = UnixConstraint {
                    uid: u.opt_u32("uid")?,
                    gid: u.opt_u32("gid")?,
                    any_uid: u.opt_bool("any_uid")?,
                };
                let pinned = unix.uid.is_some() || unix.gid.is_some();
                if unix.any_uid && pinned {
                    return Err(
                        u.field_error("any_uid", "any_uid contradicts uid and gid: keep one")
                    );
                }
                if unix.any_uid
                    && !matches!(
                        code.interpreter,
                        Some(Interpreter::Python | Interpreter::Node)
                    )
                {
                    return Err(u.field_error(
                        "any_uid",
                        "any_uid is for interpreter images (code.interpreter = \"python\" or \"node\"); other images leave [unix] out to admit every uid",
                    ));
                }
                u.finish()?;
                opt(pinned || unix.any_uid, unix)
            }
        };
        let nodes = match o.obj("nodes", &["spiffe_id_prefixes", "attestors"])? {
            None => None,
            Some(mut n) => {
                let nodes = NodeConstraint {
                    spiffe_id_prefixes: n.set("spiffe_id_prefixes", |s| {
                        SpiffeId::parse(s).map_err(|e| e.to_string())
                    })?,
                    attestors: n.set("attestors", NodeAttestorKind::new)?,
                };
                n.finish()?;
                opt(
                    !nodes.spiffe_id_prefixes.is_empty() || !nodes.attestors.is_empty(),
                    nodes,
                )
            }
        };
        let image = GoldImage {
            name: req(o.opt_str("name", ImageName::new)?, &o, "name")?,
            version: req(o.opt_str("version", ImageVersion::new)?, &o, "version")?,
            spiffe_id: req(o.opt_str("spiffe_id", workload_id)?, &o, "spiffe_id")?,
            code,
            model,
            env: o.env("env")?,
            unix,
            nodes,
            x509_ttl: o.opt_ttl("x509_ttl")?,
            jwt_ttl: o.opt_ttl("jwt_ttl")?,
            dns_names: o.set("dns_names", dns_name)?,
            owner: req(o.opt_str("owner", |s| text(s, 256))?, &o, "owner")?,
            purpose: req(o.opt_str("purpose", |s| text(s, 4096))?, &o, "purpose")?,
            risk_tier: req(o.opt_str("risk_tier", RiskTier::new)?, &o, "risk_tier")?,
            scopes: o.set("scopes", scope)?,
            review_by: o.opt_str("review_by", Timestamp::parse)?,
            not_after: req(o.opt_str("not_after", Timestamp::parse)?, &o, "not_after")?,
        };
        if image.review_by.is_some_and(|r| r > image.not_after) {
            return Err(FieldError::new(
                "review_by",
                "must not be later than not_after",
            ));
        }
        o.finish()?;
        Ok(image)
    }

    /// What a newly signed or registered image must hold to that an image
    /// stored by an earlier release may not (it still loads, and is shown
    /// safely):
    /// - `code.interpreter` wherever `code.app_digest` is set;
    /// - a numeric version in its canonical spelling (`1.0.0`, not
    ///   `1.0.00`): relying parties, agents and the kill switch compare
    ///   versions numerically ([`hallmark_ca::version`]), so two spellings
    ///   would be two registrations of one version;
    /// - free text (owner, purpose, model name and version, paths) without
    ///   characters that show nothing or reorder the text around them
    ///   ([`text::check`](super::text::check));
    /// - with `code.interpreter = "python"` or `"node"`, a pinned uid or
    ///   gid in `[unix]`, or an explicit `[unix] any_uid = true`. An
    ///   interpreter finds much of what it runs before the app from what
    ///   its caller chose: Python its standard library and `pyvenv.cfg`
    ///   from `argv[0]`, site-packages (and the `.pth` files in them, which
    ///   run code) from `$HOME`; Node its global module folders from
    ///   `$HOME`. A process of another uid can so run its own code inside
    ///   the approved interpreter and app, and that code can rewrite the
    ///   command line and environment the agent reads afterwards. Pinning
    ///   the account is what makes the main-program check a binding.
    pub fn check_new(&self) -> Result<(), FieldError> {
        if self.code.app_digest.is_some() && self.code.interpreter.is_none() {
            return Err(FieldError::new(
                "code.interpreter",
                "required with code.app_digest: add interpreter = \"python\" or \"node\" (the agent then checks the main program is in the app tree) or \"none\" (the executable runs its own code and reads the app tree as data)",
            ));
        }
        if let Some(interpreter @ (Interpreter::Python | Interpreter::Node)) = self.code.interpreter
            && self
                .unix
                .is_none_or(|u| u.uid.is_none() && u.gid.is_none() && !u.any_uid)
        {
            return Err(FieldError::new(
                "unix.uid",
                format!(
                    "required with code.interpreter = \"{}\": add [unix] uid (or gid) = the account that runs this agent. A process of any other uid can make the interpreter run code of its own before the app ({}) and then rewrite the command line the agent reads. To accept that, set [unix] any_uid = true instead",
                    interpreter.as_str(),
                    match interpreter {
                        Interpreter::Node => "global module folders under $HOME",
                        _ =>
                            "a standard library and pyvenv.cfg found from argv[0], site-packages and .pth files under $HOME",
                    }
                ),
            ));
        }
        if let Ok(version) = Version::parse(self.version.as_str()) {
            let canonical = version.canonical();
            if canonical != self.version.as_str() {
                return Err(FieldError::new(
                    "version",
                    format!(
                        "{:?} is not canonical: write {canonical:?} (versions compare numerically, so both name the same version)",
                        self.version.as_str()
                    ),
                ));
            }
        }
        let model = self.model.as_ref();
        let texts = [
            ("owner", Some(self.owner.as_str())),
            ("purpose", Some(self.purpose.as_str())),
            ("model.name", model.map(|m| m.name.as_str())),
            ("model.version", model.map(|m| m.version.as_str())),
            ("model.path", model.and_then(|m| m.path.as_deref())),
            ("code.path", self.code.path.as_deref()),
            ("code.app_path", self.code.app_path.as_deref()),
        ];
        for (field, value) in texts {
            if let Some(value) = value {
                text::check(value).map_err(|reason| FieldError::new(field, reason))?;
            }
        }
        Ok(())
    }

    /// `name@version`.
    pub fn image_ref(&self) -> String {
        format!("{}@{}", self.name, self.version)
    }

    /// Whether `review_by` has passed at `now`.
    pub fn review_overdue(&self, now: SystemTime) -> bool {
        self.review_by.is_some_and(|r| r.to_system_time() <= now)
    }

    /// Whether `not_after` has passed at `now` (the image is retired).
    pub fn expired(&self, now: SystemTime) -> bool {
        self.not_after.to_system_time() <= now
    }
}

/// Converts TOML to JSON: dates and date-times become strings, floats are
/// refused (integers only).
fn toml_to_json(path: &str, v: toml::Value) -> Result<Value, FieldError> {
    let here = |p: &str| {
        if p.is_empty() {
            "(root)".to_owned()
        } else {
            p.to_owned()
        }
    };
    Ok(match v {
        toml::Value::String(s) => Value::String(s),
        toml::Value::Integer(i) => Value::from(i),
        toml::Value::Float(_) => {
            return Err(FieldError::new(
                here(path),
                "floats are not allowed: use an integer",
            ));
        }
        toml::Value::Boolean(b) => Value::Bool(b),
        toml::Value::Datetime(d) => Value::String(d.to_string()),
        toml::Value::Array(items) => Value::Array(
            items
                .into_iter()
                .enumerate()
                .map(|(i, item)| toml_to_json(&format!("{path}[{i}]"), item))
                .collect::<Result<_, _>>()?,
        ),
        toml::Value::Table(t) => {
            let mut map = Map::new();
            for (k, item) in t {
                let child = if path.is_empty() {
                    k.clone()
                } else {
                    format!("{path}.{k}")
                };
                map.insert(k, toml_to_json(&child, item)?);
            }
            Value::Object(map)
        }
    })
}

/// A workload SPIFFE ID: well-formed, with a path, outside `/hallmark`.
fn workload_id(s: &str) -> Result<SpiffeId, String> {
    let id = SpiffeId::parse(s).map_err(|e| format!("{s:?}: {e}"))?;
    if id.path().is_empty() {
        return Err(format!("{s:?} names a trust domain, not a workload"));
    }
    if id.path() == RESERVED_PATH || id.path().starts_with("/hallmark/") {
        return Err(format!(
            "{s:?}: paths under /hallmark are reserved for the issuer and agents"
        ));
    }
    Ok(id)
}

/// Non-empty text without control characters, at most `max` bytes.
fn text(s: &str, max: usize) -> Result<String, String> {
    if s.trim().is_empty() {
        Err("must not be empty".to_owned())
    } else if s.chars().any(char::is_control) {
        Err("must not contain control characters".to_owned())
    } else if s.len() > max {
        Err(format!("is {} bytes long, the maximum is {max}", s.len()))
    } else {
        Ok(s.to_owned())
    }
}

/// An absolute path without control characters.
fn abs_path(s: &str) -> Result<String, String> {
    let s = text(s, 4096)?;
    if !s.starts_with('/') {
        return Err(format!("{s:?} must be an absolute path"));
    }
    Ok(s)
}

/// A DNS name: dot-separated labels of letters, digits and inner hyphens.
fn dns_name(s: &str) -> Result<String, String> {
    let label_ok = |l: &str| {
        (1..=63).contains(&l.len())
            && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
            && !l.starts_with('-')
            && !l.ends_with('-')
    };
    if s.len() <= 253 && s.split('.').all(label_ok) {
        Ok(s.to_owned())
    } else {
        Err(format!("{s:?} is not a valid DNS name"))
    }
}

/// An OAuth scope token (RFC 6749 section 3.3): no spaces, quotes or backslashes.
fn scope(s: &str) -> Result<String, String> {
    let ok = |b: u8| b == 0x21 || (0x23..=0x5b).contains(&b) || (0x5d..=0x7e).contains(&b);
    if !s.is_empty() && s.len() <= 256 && s.bytes().all(ok) {
        Ok(s.to_owned())
    } else {
        Err(format!(
            "{s:?} is not a valid scope (printable ASCII, no spaces, '\"' or '\\')"
        ))
    }
}

#[cfg(test)]
mod tests;
