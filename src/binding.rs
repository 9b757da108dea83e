//! The Hallmark binding, typed: what a credential proves about the workload
//! it was issued to.
//!
//! The issuer puts the same object in every X.509-SVID (a non-critical
//! extension, OID [`BINDING_EXTENSION_OID`], holding compact JSON) and in
//! every JWT-SVID (the `hallmark` claim):
//!
//! ```json
//! {"code_sha256":"…","image":"name@version","model":{"digest":"sha256:…","name":"…","version":"…"},
//!  "node":"spiffe://…/hallmark/agent/…","owner":"…","risk_tier":"low"}
//! ```
//!
//! `model` is absent when the gold image names none. Members this version
//! does not know are ignored (a newer issuer may add some); a known member
//! that is missing or malformed makes the whole binding malformed, never
//! silently absent.
//!
//! ```
//! use hallmark::binding::Binding;
//! let json = br#"{"code_sha256":"1111111111111111111111111111111111111111111111111111111111111111","image":"invoice-agent@1.4.0","model":{"digest":"sha256:2222222222222222222222222222222222222222222222222222222222222222","name":"llama-3.1-8b","version":"3.1"},"node":"spiffe://example.org/hallmark/agent/x509pop/ab","owner":"alice@example.org","risk_tier":"high"}"#;
//! let binding = Binding::from_json(json)?;
//! assert_eq!(binding.image.name(), "invoice-agent");
//! assert_eq!(binding.model.as_ref().map(|m| m.version.as_str()), Some("3.1"));
//! # Ok::<(), hallmark::binding::BindingError>(())
//! ```

use std::fmt;

use serde_json::{Map, Value};

use hallmark_agent::revocation::Bound;
use hallmark_ca::id::SpiffeId;
pub use hallmark_ca::x509::BINDING_EXTENSION_OID;
pub use hallmark_server::image::RiskTier;
use hallmark_server::image::types::{ImageName, ImageVersion, Sha256Hex, TreeDigestStr};

/// A parsed binding (see the [module docs](self)).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Binding {
    /// SHA-256 of the executable the agent measured (64 lowercase hex).
    pub code_sha256: Sha256Hex,
    /// The gold image the workload matched.
    pub image: ImageRef,
    /// The model the image requires, if it names one.
    pub model: Option<ModelBinding>,
    /// The node agent that attested the workload.
    pub node: SpiffeId,
    /// The image's accountable owner.
    pub owner: String,
    /// The image's risk tier.
    pub risk_tier: RiskTier,
}

/// A gold image reference, `name@version`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ImageRef {
    reference: String,
    name: ImageName,
    version: ImageVersion,
}

impl ImageRef {
    /// Parses `name@version` (the image name and version syntax of gold images).
    pub fn parse(reference: &str) -> Result<ImageRef, BindingError> {
        let (name, version) = reference.split_once('@').ok_or(BindingError::Invalid {
            member: "image",
            reason: format!("{reference:?} is not name@version"),
        })?;
        Ok(ImageRef {
            reference: reference.to_owned(),
            name: ImageName::new(name).map_err(|reason| invalid("image", reason))?,
            version: ImageVersion::new(version).map_err(|reason| invalid("image", reason))?,
        })
    }

    /// The image name.
    pub fn name(&self) -> &str {
        self.name.as_str()
    }

    /// The image version, as registered (compare with
    /// [`VersionReq::matches_str`](crate::version::VersionReq::matches_str)).
    pub fn version(&self) -> &str {
        self.version.as_str()
    }

    /// `name@version`.
    pub fn as_str(&self) -> &str {
        &self.reference
    }
}

/// The model a binding names.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ModelBinding {
    /// The model's name.
    pub name: String,
    /// The model's version, as registered.
    pub version: String,
    /// The canonical digest of the model tree that was measured.
    pub digest: TreeDigestStr,
}

/// Why a binding could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum BindingError {
    /// The extension's content is not a JSON object.
    #[error("binding is not a json object")]
    NotAnObject,
    /// A member every binding has is missing.
    #[error("binding has no {0:?}")]
    Missing(&'static str),
    /// A member has the wrong type or an invalid value.
    #[error("binding member {member:?} is invalid: {reason}")]
    Invalid {
        /// The member (`model.digest` for nested ones).
        member: &'static str,
        /// What is wrong with it.
        reason: String,
    },
    /// The certificate could not be read for its extensions.
    #[error("cannot read the certificate's binding extension: {0}")]
    Certificate(String),
}

impl Binding {
    /// Parses the binding extension's content (compact JSON).
    pub fn from_json(json: &[u8]) -> Result<Binding, BindingError> {
        let value: Value = serde_json::from_slice(json).map_err(|_| BindingError::NotAnObject)?;
        Binding::from_value(&value)
    }

    /// Parses the binding object (a JWT-SVID's `hallmark` claim).
    pub fn from_value(value: &Value) -> Result<Binding, BindingError> {
        let object = value.as_object().ok_or(BindingError::NotAnObject)?;
        let image = ImageRef::parse(text(object, "image")?)?;
        let model = match object.get("model") {
            None | Some(Value::Null) => None,
            Some(Value::Object(model)) => Some(ModelBinding {
                name: nested(model, "name", "model.name")?.to_owned(),
                version: nested(model, "version", "model.version")?.to_owned(),
                digest: TreeDigestStr::new(nested(model, "digest", "model.digest")?)
                    .map_err(|reason| invalid("model.digest", reason))?,
            }),
            Some(_) => return Err(invalid("model", "not an object".into())),
        };
        let node = text(object, "node")?;
        let node = SpiffeId::parse(node).map_err(|e| invalid("node", e.to_string()))?;
        Ok(Binding {
            code_sha256: Sha256Hex::new(text(object, "code_sha256")?)
                .map_err(|reason| invalid("code_sha256", reason))?,
            image,
            model,
            node,
            owner: text(object, "owner")?.to_owned(),
            risk_tier: RiskTier::new(text(object, "risk_tier")?)
                .map_err(|reason| invalid("risk_tier", reason))?,
        })
    }

    /// Reads the binding extension of an X.509 certificate (DER): `None`
    /// when it has none (an SVID from an issuer other than Hallmark).
    ///
    /// This reads; it does not verify. Use it on a certificate that a
    /// verifier already accepted, or call
    /// [`verify_x509_svid`](crate::svid::verify_x509_svid), which does both.
    pub fn from_cert(cert_der: &[u8]) -> Result<Option<Binding>, BindingError> {
        match hallmark_ca::x509::binding_from_cert(cert_der) {
            Ok(Some(json)) => Binding::from_json(&json).map(Some),
            Ok(None) => Ok(None),
            Err(e) => Err(BindingError::Certificate(e.to_string())),
        }
    }

    /// What a revocation can cover, for this binding and `spiffe_id`.
    pub fn bound<'a>(&'a self, spiffe_id: &'a SpiffeId) -> Bound<'a> {
        Bound {
            spiffe_id: spiffe_id.as_str(),
            image: self.image.as_str(),
            code_sha256: self.code_sha256.as_str(),
            model_digest: self.model.as_ref().map(|m| m.digest.as_str()),
            node: self.node.as_str(),
        }
    }
}

impl fmt::Display for ImageRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.reference)
    }
}

fn invalid(member: &'static str, reason: String) -> BindingError {
    BindingError::Invalid { member, reason }
}

fn text<'a>(object: &'a Map<String, Value>, member: &'static str) -> Result<&'a str, BindingError> {
    match object.get(member) {
        None | Some(Value::Null) => Err(BindingError::Missing(member)),
        Some(Value::String(s)) => Ok(s),
        Some(_) => Err(invalid(member, "not a string".into())),
    }
}

fn nested<'a>(
    object: &'a Map<String, Value>,
    key: &str,
    member: &'static str,
) -> Result<&'a str, BindingError> {
    match object.get(key) {
        None | Some(Value::Null) => Err(BindingError::Missing(member)),
        Some(Value::String(s)) => Ok(s),
        Some(_) => Err(invalid(member, "not a string".into())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CODE: &str = "1111111111111111111111111111111111111111111111111111111111111111";
    const MODEL: &str = "sha256:2222222222222222222222222222222222222222222222222222222222222222";
    const NODE: &str = "spiffe://example.org/hallmark/agent/x509pop/ab";

    fn full() -> Value {
        serde_json::json!({
            "code_sha256": CODE,
            "image": "invoice-agent@1.4.0",
            "model": {"digest": MODEL, "name": "llama", "version": "3.1"},
            "node": NODE,
            "owner": "alice@example.org",
            "risk_tier": "high",
        })
    }

    #[test]
    fn reads_every_member() {
        let b = Binding::from_value(&full()).unwrap();
        assert_eq!(b.code_sha256.as_str(), CODE);
        assert_eq!(b.image.to_string(), "invoice-agent@1.4.0");
        assert_eq!(b.image.version(), "1.4.0");
        assert_eq!(b.image.name(), "invoice-agent");
        let model = b.model.as_ref().unwrap();
        assert_eq!(
            (model.name.as_str(), model.version.as_str()),
            ("llama", "3.1")
        );
        assert_eq!(model.digest.as_str(), MODEL);
        assert_eq!(b.node.as_str(), NODE);
        assert_eq!(b.owner, "alice@example.org");
        assert_eq!(b.risk_tier, RiskTier::High);
        // The extension's bytes parse the same.
        let again = Binding::from_json(full().to_string().as_bytes()).unwrap();
        assert_eq!(again, b);
    }

    #[test]
    fn model_is_optional_unknown_members_are_ignored() {
        let mut v = full();
        v.as_object_mut().unwrap().remove("model");
        v["app_digest"] = "sha256:whatever a newer issuer adds".into();
        let b = Binding::from_value(&v).unwrap();
        assert_eq!(b.model, None);
    }

    #[test]
    fn malformed_members_are_errors_naming_the_member() {
        let cases: [(&str, Value, BindingError); 8] = [
            (
                "image",
                "no-version".into(),
                BindingError::Invalid {
                    member: "image",
                    reason: "\"no-version\" is not name@version".into(),
                },
            ),
            (
                "code_sha256",
                "sha256:11".into(),
                BindingError::Invalid {
                    member: "code_sha256",
                    reason: "expected 64 lowercase hex characters".into(),
                },
            ),
            (
                "node",
                "https://example.org".into(),
                BindingError::Invalid {
                    member: "node",
                    reason: String::new(),
                },
            ),
            (
                "risk_tier",
                "extreme".into(),
                BindingError::Invalid {
                    member: "risk_tier",
                    reason: String::new(),
                },
            ),
            ("owner", Value::Null, BindingError::Missing("owner")),
            (
                "owner",
                5.into(),
                BindingError::Invalid {
                    member: "owner",
                    reason: "not a string".into(),
                },
            ),
            (
                "model",
                "llama".into(),
                BindingError::Invalid {
                    member: "model",
                    reason: "not an object".into(),
                },
            ),
            (
                "model",
                serde_json::json!({"name": "m", "version": "1"}),
                BindingError::Missing("model.digest"),
            ),
        ];
        for (member, value, expected) in cases {
            let mut v = full();
            v[member] = value;
            let err = Binding::from_value(&v).unwrap_err();
            match (&err, &expected) {
                (
                    BindingError::Invalid { member: m, reason },
                    BindingError::Invalid {
                        member: em,
                        reason: er,
                    },
                ) => {
                    assert_eq!(m, em);
                    assert!(reason.contains(er.as_str()), "{reason}");
                }
                _ => assert_eq!(err, expected),
            }
        }
        assert_eq!(
            Binding::from_json(b"[1]").unwrap_err(),
            BindingError::NotAnObject
        );
        assert_eq!(
            Binding::from_json(b"{").unwrap_err(),
            BindingError::NotAnObject
        );
    }

    #[test]
    fn bound_names_what_revocations_match() {
        let b = Binding::from_value(&full()).unwrap();
        let id = SpiffeId::parse("spiffe://example.org/invoice").unwrap();
        let bound = b.bound(&id);
        assert_eq!(bound.image, "invoice-agent@1.4.0");
        assert_eq!(bound.code_sha256, CODE);
        assert_eq!(bound.model_digest, Some(MODEL));
        assert_eq!(bound.node, NODE);
        assert_eq!(bound.spiffe_id, "spiffe://example.org/invoice");
    }
}
