//! What a revocation names, how an operator's request becomes one, and what
//! it matches at issuance.

use std::fmt;

use serde::{Deserialize, Serialize};

use hallmark_ca::id::{SpiffeId, TrustDomain};
use hallmark_ca::version::{comparison_key, same_version};
use hallmark_proto::node::WorkloadEvidence;

use crate::image::GoldImage;
use crate::image::types::{ImageName, ImageVersion, Sha256Hex, TreeDigestStr};

/// The kinds of target: a closed set from the design.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum RevocationKind {
    /// A workload SPIFFE ID.
    SpiffeId,
    /// An image, every version or one.
    Image,
    /// An executable digest.
    Code,
    /// A model digest.
    Model,
    /// An agent.
    Node,
}

impl RevocationKind {
    /// The name used in the CLI's JSON, the store and the audit trail.
    pub fn as_str(self) -> &'static str {
        match self {
            RevocationKind::SpiffeId => "spiffe_id",
            RevocationKind::Image => "image",
            RevocationKind::Code => "code",
            RevocationKind::Model => "model",
            RevocationKind::Node => "node",
        }
    }
}

/// What one revocation revokes.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "StoredTarget", into = "StoredTarget")]
#[non_exhaustive]
pub enum RevocationTarget {
    /// Every credential with this SPIFFE ID.
    SpiffeId(SpiffeId),
    /// Every credential of the image: all versions of `name`, or one.
    Image {
        /// The image name.
        name: ImageName,
        /// One version; `None` for every version.
        version: Option<ImageVersion>,
    },
    /// Every credential of a workload running this executable.
    Code(Sha256Hex),
    /// Every credential bound to this model: of every image that requires it.
    Model(TreeDigestStr),
    /// The agent itself and every credential minted through it.
    Node(SpiffeId),
}

/// The target fields of a `CreateRevocation` request; empty means absent.
#[derive(Debug, Clone, Copy, Default)]
pub struct TargetRequest<'a> {
    /// A workload SPIFFE ID.
    pub spiffe_id: &'a str,
    /// `name` or `name@version`.
    pub image: &'a str,
    /// 64 lowercase hex.
    pub code_sha256: &'a str,
    /// `sha256:<64 lowercase hex>`.
    pub model_digest: &'a str,
    /// An agent's SPIFFE ID.
    pub node: &'a str,
}

/// Why a request names no valid target. Every message says what to fix.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TargetError {
    /// No target field is set.
    #[error(
        "name what to revoke: exactly one of spiffe_id, image, code_sha256, model_digest or node (the CLI's --spiffe-id, --image, --code, --model, --node)"
    )]
    Missing,
    /// Several target fields are set.
    #[error(
        "a revocation names exactly one target, this request names {}: revoke them one at a time",
        .0.join(" and ")
    )]
    Several(Vec<&'static str>),
    /// The SPIFFE ID does not parse.
    #[error("{value:?} is not a SPIFFE ID: {reason}")]
    BadSpiffeId {
        /// What was sent.
        value: String,
        /// Why it does not parse.
        reason: String,
    },
    /// The SPIFFE ID is in another trust domain.
    #[error(
        "{id} is not in this issuer's trust domain {trust_domain}: nothing here could match it"
    )]
    ForeignTrustDomain {
        /// The ID.
        id: SpiffeId,
        /// The issuer's trust domain.
        trust_domain: TrustDomain,
    },
    /// A workload SPIFFE ID target names an agent.
    #[error("{0} is an agent ID, not a workload's: revoke an agent with node (--node)")]
    AgentAsWorkload(SpiffeId),
    /// A node target is not an agent ID.
    #[error(
        "{id} is not an agent ID: agent IDs look like spiffe://{trust_domain}/hallmark/agent/<attestor>/<id> (`agent list` shows them)"
    )]
    NotAnAgent {
        /// The ID.
        id: SpiffeId,
        /// The issuer's trust domain.
        trust_domain: TrustDomain,
    },
    /// The image reference is malformed.
    #[error("image {value:?} is malformed: {reason} (write NAME or NAME@VERSION)")]
    BadImage {
        /// What was sent.
        value: String,
        /// Why.
        reason: String,
    },
    /// The code digest is malformed.
    #[error("code digest {value:?} is malformed: {reason}")]
    BadCode {
        /// What was sent.
        value: String,
        /// Why.
        reason: String,
    },
    /// The model digest is malformed.
    #[error("model digest {value:?} is malformed: {reason}")]
    BadModel {
        /// What was sent.
        value: String,
        /// Why.
        reason: String,
    },
}

impl RevocationTarget {
    /// The target an operator asked for, checked against the trust domain.
    pub fn from_request(
        request: &TargetRequest<'_>,
        trust_domain: &TrustDomain,
    ) -> Result<Self, TargetError> {
        let fields = [
            ("spiffe_id", request.spiffe_id),
            ("image", request.image),
            ("code_sha256", request.code_sha256),
            ("model_digest", request.model_digest),
            ("node", request.node),
        ];
        let set: Vec<(&'static str, &str)> =
            fields.into_iter().filter(|(_, v)| !v.is_empty()).collect();
        let (field, value) = match set.as_slice() {
            [] => return Err(TargetError::Missing),
            [one] => *one,
            several => {
                return Err(TargetError::Several(
                    several.iter().map(|(f, _)| *f).collect(),
                ));
            }
        };
        let in_domain = |value: &str| -> Result<SpiffeId, TargetError> {
            let id = SpiffeId::parse(value).map_err(|e| TargetError::BadSpiffeId {
                value: value.to_owned(),
                reason: e.to_string(),
            })?;
            if !id.is_member_of(trust_domain) {
                return Err(TargetError::ForeignTrustDomain {
                    id,
                    trust_domain: trust_domain.clone(),
                });
            }
            Ok(id)
        };
        match field {
            "spiffe_id" => {
                let id = in_domain(value)?;
                if is_agent_id(&id) {
                    return Err(TargetError::AgentAsWorkload(id));
                }
                Ok(RevocationTarget::SpiffeId(id))
            }
            "node" => {
                let id = in_domain(value)?;
                if !is_agent_id(&id) {
                    return Err(TargetError::NotAnAgent {
                        id,
                        trust_domain: trust_domain.clone(),
                    });
                }
                Ok(RevocationTarget::Node(id))
            }
            "image" => parse_image(value),
            "code_sha256" => parse_code(value),
            _ => parse_model(value),
        }
    }

    /// Rebuilds a target from its kind and canonical text (the store and
    /// wire form), checking its syntax only.
    pub fn from_parts(kind: RevocationKind, value: &str) -> Result<Self, TargetError> {
        let spiffe_id = |value: &str| {
            SpiffeId::parse(value).map_err(|e| TargetError::BadSpiffeId {
                value: value.to_owned(),
                reason: e.to_string(),
            })
        };
        match kind {
            RevocationKind::SpiffeId => spiffe_id(value).map(RevocationTarget::SpiffeId),
            RevocationKind::Node => spiffe_id(value).map(RevocationTarget::Node),
            RevocationKind::Image => parse_image(value),
            RevocationKind::Code => parse_code(value),
            RevocationKind::Model => parse_model(value),
        }
    }

    /// Its kind.
    pub fn kind(&self) -> RevocationKind {
        match self {
            RevocationTarget::SpiffeId(_) => RevocationKind::SpiffeId,
            RevocationTarget::Image { .. } => RevocationKind::Image,
            RevocationTarget::Code(_) => RevocationKind::Code,
            RevocationTarget::Model(_) => RevocationKind::Model,
            RevocationTarget::Node(_) => RevocationKind::Node,
        }
    }

    /// Its canonical text: the SPIFFE ID, `name` or `name@version`, or the digest.
    pub fn value(&self) -> String {
        match self {
            RevocationTarget::SpiffeId(id) | RevocationTarget::Node(id) => id.as_str().to_owned(),
            RevocationTarget::Image {
                name,
                version: None,
            } => name.as_str().to_owned(),
            RevocationTarget::Image {
                name,
                version: Some(version),
            } => format!("{name}@{version}"),
            RevocationTarget::Code(digest) => digest.as_str().to_owned(),
            RevocationTarget::Model(digest) => digest.as_str().to_owned(),
        }
    }

    /// The key under which the revocation index finds this target: its
    /// [value](RevocationTarget::value), with an image version replaced by
    /// its [comparison key](hallmark_ca::version::comparison_key), so that
    /// `invoice@1.0.00`, `invoice@1.0` and `invoice@1` are one target.
    pub fn index_key(&self) -> String {
        match self {
            RevocationTarget::Image {
                name,
                version: Some(version),
            } => image_key(name.as_str(), version.as_str()),
            _ => self.value(),
        }
    }

    /// Whether a credential for `image`, minted for a workload measured as
    /// `evidence` through agent `node`, falls under this revocation.
    pub fn matches(&self, image: &GoldImage, evidence: &WorkloadEvidence, node: &SpiffeId) -> bool {
        match self {
            RevocationTarget::SpiffeId(id) => image.spiffe_id == *id,
            RevocationTarget::Image { name, version } => {
                image.name == *name
                    && version
                        .as_ref()
                        .is_none_or(|v| same_version(image.version.as_str(), v.as_str()))
            }
            RevocationTarget::Code(digest) => evidence.exe_sha256 == digest.as_str(),
            // What the credential binds, not what was measured: an image
            // that does not require a model mints without binding one, and a
            // model revocation must mean the same to the issuer, the agents
            // and relying parties, who only see the binding.
            RevocationTarget::Model(digest) => image
                .model
                .as_ref()
                .is_some_and(|m| m.digest.as_str() == digest.as_str()),
            RevocationTarget::Node(agent) => node == agent,
        }
    }
}

impl fmt::Display for RevocationTarget {
    /// `<kind> <value>`, e.g. `image invoice-agent@1.2.0`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.kind().as_str(), self.value())
    }
}

/// The [`RevocationTarget::index_key`] of `name@version`.
pub(crate) fn image_key(name: &str, version: &str) -> String {
    format!("{name}@{}", comparison_key(version))
}

fn is_agent_id(id: &SpiffeId) -> bool {
    id.has_path_prefix("/hallmark/agent")
}

fn parse_image(value: &str) -> Result<RevocationTarget, TargetError> {
    let bad = |reason: String| TargetError::BadImage {
        value: value.to_owned(),
        reason,
    };
    let (name, version) = match value.split_once('@') {
        Some((name, version)) => (name, Some(version)),
        None => (value, None),
    };
    let name = ImageName::new(name).map_err(|e| bad(format!("name: {e}")))?;
    let version = version
        .map(|v| ImageVersion::new(v).map_err(|e| bad(format!("version: {e}"))))
        .transpose()?;
    Ok(RevocationTarget::Image { name, version })
}

fn parse_code(value: &str) -> Result<RevocationTarget, TargetError> {
    Sha256Hex::new(value)
        .map(RevocationTarget::Code)
        .map_err(|reason| TargetError::BadCode {
            value: value.to_owned(),
            reason: if value.starts_with("sha256:") {
                "an executable digest is its bare SHA-256, 64 lowercase hex characters without \"sha256:\" (for a model use model_digest, --model)".to_owned()
            } else {
                format!("{reason} (the executable's SHA-256, as `sha256sum` prints it)")
            },
        })
}

fn parse_model(value: &str) -> Result<RevocationTarget, TargetError> {
    TreeDigestStr::new(value)
        .map(RevocationTarget::Model)
        .map_err(|reason| TargetError::BadModel {
            value: value.to_owned(),
            reason: format!("{reason} (as `hallmark-server image digest DIR` prints it)"),
        })
}

/// The store's form of a target.
#[derive(Serialize, Deserialize)]
struct StoredTarget {
    kind: RevocationKind,
    value: String,
}

impl TryFrom<StoredTarget> for RevocationTarget {
    type Error = TargetError;
    fn try_from(stored: StoredTarget) -> Result<Self, TargetError> {
        RevocationTarget::from_parts(stored.kind, &stored.value)
    }
}

impl From<RevocationTarget> for StoredTarget {
    fn from(target: RevocationTarget) -> Self {
        StoredTarget {
            kind: target.kind(),
            value: target.value(),
        }
    }
}

#[cfg(test)]
mod tests {
    use hallmark_proto::node::TreeEvidence;

    use super::*;

    const CODE: &str = "1111111111111111111111111111111111111111111111111111111111111111";
    const MODEL: &str = "sha256:2222222222222222222222222222222222222222222222222222222222222222";
    const OTHER: &str = "sha256:3333333333333333333333333333333333333333333333333333333333333333";

    fn td() -> TrustDomain {
        TrustDomain::new("example.org").unwrap()
    }

    fn request(field: &str, value: &'static str) -> TargetRequest<'static> {
        let mut r = TargetRequest::default();
        match field {
            "spiffe_id" => r.spiffe_id = value,
            "image" => r.image = value,
            "code" => r.code_sha256 = value,
            "model" => r.model_digest = value,
            _ => r.node = value,
        }
        r
    }

    fn parse(field: &str, value: &'static str) -> Result<RevocationTarget, TargetError> {
        RevocationTarget::from_request(&request(field, value), &td())
    }

    #[test]
    fn each_kind_parses_and_prints_canonically() {
        for (field, value, printed) in [
            (
                "spiffe_id",
                "spiffe://example.org/invoice",
                "spiffe_id spiffe://example.org/invoice",
            ),
            ("image", "invoice", "image invoice"),
            ("image", "invoice@1.2.0+b1", "image invoice@1.2.0+b1"),
            (
                "code",
                CODE,
                "code 1111111111111111111111111111111111111111111111111111111111111111",
            ),
            (
                "model",
                MODEL,
                "model sha256:2222222222222222222222222222222222222222222222222222222222222222",
            ),
            (
                "node",
                "spiffe://example.org/hallmark/agent/join_token/ab",
                "node spiffe://example.org/hallmark/agent/join_token/ab",
            ),
        ] {
            let target = parse(field, value).unwrap();
            assert_eq!(target.to_string(), printed);
            assert_eq!(
                RevocationTarget::from_parts(target.kind(), &target.value()).unwrap(),
                target
            );
        }
    }

    #[test]
    fn bad_requests_say_what_to_fix() {
        assert_eq!(
            RevocationTarget::from_request(&TargetRequest::default(), &td()),
            Err(TargetError::Missing)
        );
        let two = TargetRequest {
            image: "a",
            code_sha256: CODE,
            ..TargetRequest::default()
        };
        let err = RevocationTarget::from_request(&two, &td()).unwrap_err();
        assert_eq!(
            err.to_string(),
            "a revocation names exactly one target, this request names image and code_sha256: revoke them one at a time"
        );
        let cases: [(&str, &'static str, &str); 11] = [
            ("spiffe_id", "invoice", "is not a SPIFFE ID"),
            (
                "spiffe_id",
                "spiffe://other.org/invoice",
                "not in this issuer's trust domain example.org",
            ),
            (
                "spiffe_id",
                "spiffe://example.org/hallmark/agent/x509pop/ab",
                "revoke an agent with node (--node)",
            ),
            ("node", "spiffe://example.org/invoice", "is not an agent ID"),
            ("node", "ab", "is not a SPIFFE ID"),
            (
                "image",
                "bad name",
                "image \"bad name\" is malformed: name:",
            ),
            ("image", "invoice@", "version:"),
            ("code", "abc", "expected 64 lowercase hex characters"),
            ("code", MODEL, "without \"sha256:\""),
            (
                "model",
                CODE,
                "expected \"sha256:\" followed by 64 lowercase hex",
            ),
            ("model", "sha256:ABC", "image digest DIR"),
        ];
        for (field, value, needle) in cases {
            let err = parse(field, value).unwrap_err().to_string();
            assert!(err.contains(needle), "{field}={value}: {err}");
        }
    }

    fn image(name: &str, version: &str, model: Option<&str>) -> GoldImage {
        let model = model
            .map(|d| format!("[model]\nname = \"m\"\nversion = \"1\"\ndigest = \"{d}\"\n"))
            .unwrap_or_default();
        GoldImage::from_toml(&format!(
            "name = \"{name}\"\nversion = \"{version}\"\nspiffe_id = \"spiffe://example.org/{name}\"\nowner = \"o\"\npurpose = \"p\"\nrisk_tier = \"low\"\nnot_after = 2099-12-31\n[code]\nsha256 = [\"{CODE}\"]\n{model}"
        ))
        .unwrap()
    }

    fn evidence(model: Option<&str>) -> WorkloadEvidence {
        WorkloadEvidence {
            exe_sha256: CODE.into(),
            model: model.map(|d| TreeEvidence {
                dir: "/m".into(),
                digest: d.into(),
                files: vec![],
            }),
            loaded_code: Some(Default::default()),
            ..WorkloadEvidence::default()
        }
    }

    #[test]
    fn each_kind_matches_only_what_it_names() {
        let node = SpiffeId::parse("spiffe://example.org/hallmark/agent/join_token/ab").unwrap();
        let other_node =
            SpiffeId::parse("spiffe://example.org/hallmark/agent/join_token/cd").unwrap();
        let invoice = image("invoice", "1.0.0", Some(MODEL));
        let invoice2 = image("invoice", "2.0.0", None);
        let ledger = image("ledger", "1.0.0", None);
        let ev = evidence(Some(MODEL));
        let hits = |target: &RevocationTarget| -> Vec<bool> {
            [&invoice, &invoice2, &ledger]
                .iter()
                .map(|i| target.matches(i, &ev, &node))
                .collect()
        };
        assert_eq!(
            hits(&parse("spiffe_id", "spiffe://example.org/ledger").unwrap()),
            [false, false, true]
        );
        assert_eq!(
            hits(&parse("image", "invoice").unwrap()),
            [true, true, false]
        );
        assert_eq!(
            hits(&parse("image", "invoice@2.0.0").unwrap()),
            [false, true, false]
        );
        assert_eq!(hits(&parse("code", CODE).unwrap()), [true, true, true]);
        // Only the image that binds the model, although the workload was
        // measured with it for all three.
        assert_eq!(hits(&parse("model", MODEL).unwrap()), [true, false, false]);
        assert!(!parse("model", OTHER).unwrap().matches(&invoice, &ev, &node));
        // Versions compare as `hallmark::version` compares them: an image
        // stored as 1.0.00 by an earlier release is 1.0.0 to the kill switch.
        let legacy = image("invoice", "1.0.00", None);
        for target in [
            "invoice@1.0.0",
            "invoice@1.0.00",
            "invoice@1",
            "invoice@01.0",
        ] {
            let target = parse("image", target).unwrap();
            assert!(target.matches(&legacy, &ev, &node), "{target}");
            assert!(target.matches(&invoice, &ev, &node), "{target}");
        }
        assert_eq!(
            hits(&parse("image", "invoice@2").unwrap()),
            [false, true, false]
        );
        let rc = image("invoice", "1.0-rc.1", None);
        assert!(
            parse("image", "invoice@1.0-rc.1")
                .unwrap()
                .matches(&rc, &ev, &node)
        );
        assert!(
            !parse("image", "invoice@1.0-rc.01")
                .unwrap()
                .matches(&rc, &ev, &node)
        );
        assert!(
            !parse("image", "invoice@1.0")
                .unwrap()
                .matches(&rc, &ev, &node)
        );
        let revoked_node = RevocationTarget::Node(node.clone());
        assert_eq!(hits(&revoked_node), [true, true, true]);
        assert!(!revoked_node.matches(&invoice, &ev, &other_node));
    }
}
