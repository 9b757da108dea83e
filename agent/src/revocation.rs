//! The kill switch on the node: the revocations the agent enforces, and what
//! a credential must be bound to for one of them to cover it.
//!
//! The issuer sends the full set of revocations in force on every `Sync`
//! message (see `hallmark-server`'s `revocation` module). The agent:
//! - applies each set before anything else in the message, persists it
//!   (`revocations.json` in the data directory, so a restarted agent
//!   enforces what it last knew before it reaches the issuer again), and
//!   publishes it to the Workload API;
//! - drops every cached SVID a revocation covers and sends each affected
//!   `FetchX509SVID` stream the SVIDs it has left, or `PermissionDenied`
//!   when none is left; refuses fetches a revocation covers;
//!   `ValidateJWTSVID` rejects tokens a revocation covers (by the `sub` and
//!   the `hallmark` binding claim);
//! - when a node revocation names this agent (in a set, or attached to a
//!   refusal as `hallmark-revocation-bin`), drops its node SVID and stops
//!   serving SVIDs: every SVID it minted has `node` = this agent, so all are
//!   covered, and every fetch is refused until the issuer lifts it and the
//!   agent attests again;
//! - relays the set to relying parties (`hallmark.workload.v1.Revocations`).
//!
//! Matching sees only what a credential is bound to ([`Bound`]): relying
//! parties can apply [`RevocationSet::covering`] to SVIDs and tokens they
//! receive from anywhere.
//!
//! ```
//! use hallmark_agent::revocation::{Bound, Revocation, RevocationKind, RevocationSet};
//! let set = RevocationSet::new(vec![Revocation {
//!     id: "0123456789abcdef".into(),
//!     kind: RevocationKind::Image,
//!     target: "invoice-agent".into(),
//!     reason: "prompt injection found".into(),
//!     created_at: 0,
//! }]);
//! let bound = Bound { spiffe_id: "spiffe://example.org/invoice", image: "invoice-agent@1.2.0", ..Bound::default() };
//! assert_eq!(set.covering(&bound).unwrap().id, "0123456789abcdef");
//! ```

use std::path::Path;

use serde::{Deserialize, Serialize};
use tonic::Status;

use hallmark_ca::version::same_version;
use hallmark_proto::{REVOCATION_METADATA, decode_revocation, node, revocations as wire};

use crate::error::AgentError;
use crate::persist::write_atomic;

/// The file in the data directory holding the last set received.
pub const REVOCATIONS_FILE: &str = "revocations.json";

/// What a revocation names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum RevocationKind {
    /// A SPIFFE ID.
    SpiffeId,
    /// `name` (every version) or `name@version`.
    Image,
    /// An executable digest.
    Code,
    /// A model digest.
    Model,
    /// An agent's SPIFFE ID.
    Node,
}

impl RevocationKind {
    /// The name used in logs and files.
    pub fn as_str(self) -> &'static str {
        match self {
            RevocationKind::SpiffeId => "spiffe_id",
            RevocationKind::Image => "image",
            RevocationKind::Code => "code",
            RevocationKind::Model => "model",
            RevocationKind::Node => "node",
        }
    }

    fn from_node(kind: i32) -> Option<Self> {
        match node::RevocationKind::try_from(kind).ok()? {
            node::RevocationKind::SpiffeId => Some(RevocationKind::SpiffeId),
            node::RevocationKind::Image => Some(RevocationKind::Image),
            node::RevocationKind::Code => Some(RevocationKind::Code),
            node::RevocationKind::Model => Some(RevocationKind::Model),
            node::RevocationKind::Node => Some(RevocationKind::Node),
            node::RevocationKind::Unspecified => None,
        }
    }

    fn to_wire(self) -> wire::RevocationKind {
        match self {
            RevocationKind::SpiffeId => wire::RevocationKind::SpiffeId,
            RevocationKind::Image => wire::RevocationKind::Image,
            RevocationKind::Code => wire::RevocationKind::Code,
            RevocationKind::Model => wire::RevocationKind::Model,
            RevocationKind::Node => wire::RevocationKind::Node,
        }
    }
}

/// One revocation in force.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Revocation {
    /// Its id.
    pub id: String,
    /// What `target` is.
    pub kind: RevocationKind,
    /// The SPIFFE ID, image reference or digest.
    pub target: String,
    /// The operator's reason.
    pub reason: String,
    /// Seconds since the Unix epoch.
    pub created_at: i64,
}

impl Revocation {
    /// From the node API's form; `None` for a kind this agent does not know
    /// (a newer issuer): it cannot be enforced and is logged.
    pub fn from_node(revocation: &node::Revocation) -> Option<Self> {
        let Some(kind) = RevocationKind::from_node(revocation.kind) else {
            tracing::warn!(id = %revocation.id, kind = revocation.kind, "revocation of an unknown kind ignored: upgrade this agent");
            return None;
        };
        Some(Revocation {
            id: revocation.id.clone(),
            kind,
            target: revocation.target.clone(),
            reason: revocation.reason.clone(),
            created_at: revocation.created_at,
        })
    }

    /// The relying-party form (`hallmark.workload.v1`).
    pub fn to_wire(&self) -> wire::Revocation {
        wire::Revocation {
            id: self.id.clone(),
            kind: self.kind.to_wire().into(),
            target: self.target.clone(),
            reason: self.reason.clone(),
            created_at: self.created_at,
        }
    }

    /// How refusals name it: `kill <id> (<kind> <target>): <reason>`.
    pub fn describe(&self) -> String {
        format!(
            "kill {} ({} {}): {}",
            self.id,
            self.kind.as_str(),
            self.target,
            self.reason
        )
    }

    /// Whether it covers a credential bound to `bound`.
    pub fn covers(&self, bound: &Bound<'_>) -> bool {
        let target = self.target.as_str();
        match self.kind {
            RevocationKind::SpiffeId => bound.spiffe_id == target,
            // Versions compare numerically, as the issuer and relying
            // parties compare them (`1.0.00` is `1.0.0`).
            RevocationKind::Image => match (bound.image.split_once('@'), target.split_once('@')) {
                (Some((name, version)), Some((t_name, t_version))) => {
                    name == t_name && same_version(version, t_version)
                }
                (Some((name, _)), None) => name == target,
                (None, _) => false,
            },
            RevocationKind::Code => bound.code_sha256 == target,
            RevocationKind::Model => bound.model_digest == Some(target),
            RevocationKind::Node => bound.node == target,
        }
    }
}

/// What a credential is bound to: its SPIFFE ID and its Hallmark binding
/// (the X.509 binding extension, or the JWT-SVID `hallmark` claim). Empty
/// fields match nothing.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Bound<'a> {
    /// The SPIFFE ID.
    pub spiffe_id: &'a str,
    /// `name@version` of the gold image.
    pub image: &'a str,
    /// The executable digest.
    pub code_sha256: &'a str,
    /// The model digest the binding names.
    pub model_digest: Option<&'a str>,
    /// The agent that obtained the credential.
    pub node: &'a str,
}

impl<'a> Bound<'a> {
    /// From a SPIFFE ID and a binding object (`{"code_sha256", "image",
    /// "model": {"digest"}, "node", ...}`); a missing binding binds only the ID.
    pub fn from_binding(spiffe_id: &'a str, binding: Option<&'a serde_json::Value>) -> Self {
        let text = |key: &str| {
            binding
                .and_then(|b| b.get(key))
                .and_then(serde_json::Value::as_str)
                .unwrap_or_default()
        };
        Bound {
            spiffe_id,
            image: text("image"),
            code_sha256: text("code_sha256"),
            model_digest: binding
                .and_then(|b| b.get("model"))
                .and_then(|m| m.get("digest"))
                .and_then(serde_json::Value::as_str),
            node: text("node"),
        }
    }
}

/// The revocations in force, as the agent last received them.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RevocationSet {
    /// Ordered by id.
    revocations: Vec<Revocation>,
}

impl RevocationSet {
    /// A set of `revocations`.
    pub fn new(mut revocations: Vec<Revocation>) -> Self {
        revocations.sort_by(|a, b| a.id.cmp(&b.id));
        revocations.dedup_by(|a, b| a.id == b.id);
        Self { revocations }
    }

    /// The set a `Sync` message carries.
    pub fn from_node(revocations: &[node::Revocation]) -> Self {
        Self::new(
            revocations
                .iter()
                .filter_map(Revocation::from_node)
                .collect(),
        )
    }

    /// This set plus `revocation`.
    pub fn with(&self, revocation: Revocation) -> Self {
        let mut all = self.revocations.clone();
        all.push(revocation);
        Self::new(all)
    }

    /// Number of revocations.
    pub fn len(&self) -> usize {
        self.revocations.len()
    }

    /// Whether none is in force.
    pub fn is_empty(&self) -> bool {
        self.revocations.is_empty()
    }

    /// The revocations, ordered by id.
    pub fn iter(&self) -> impl Iterator<Item = &Revocation> {
        self.revocations.iter()
    }

    /// The first revocation that covers a credential bound to `bound`.
    pub fn covering(&self, bound: &Bound<'_>) -> Option<&Revocation> {
        self.revocations.iter().find(|r| r.covers(bound))
    }

    /// The node revocation of `agent`, if any.
    pub fn node(&self, agent: &str) -> Option<&Revocation> {
        self.revocations
            .iter()
            .find(|r| r.kind == RevocationKind::Node && r.target == agent)
    }

    /// The relying-party form.
    pub fn to_wire(&self) -> Vec<wire::Revocation> {
        self.revocations.iter().map(Revocation::to_wire).collect()
    }

    /// The set saved in `data_dir`, if there is one.
    pub fn load(data_dir: &Path) -> Result<Option<Self>, AgentError> {
        let path = data_dir.join(REVOCATIONS_FILE);
        match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map(Some)
                .map_err(|e| AgentError::Corrupt(path, e.to_string())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(AgentError::io(&path, e)),
        }
    }

    /// Saves the set in `data_dir` (atomically, 0600).
    pub fn save(&self, data_dir: &Path) -> Result<(), AgentError> {
        let bytes = serde_json::to_vec(self)
            .map_err(|e| AgentError::Corrupt(data_dir.join(REVOCATIONS_FILE), e.to_string()))?;
        write_atomic(&data_dir.join(REVOCATIONS_FILE), &bytes, 0o600)
    }
}

/// The revocation an issuer refusal names (`hallmark-revocation-bin`): the
/// refused agent is itself revoked.
pub fn revocation_in(status: &Status) -> Option<Revocation> {
    let bytes = status
        .metadata()
        .get_bin(REVOCATION_METADATA)?
        .to_bytes()
        .ok()?;
    Revocation::from_node(&decode_revocation(&bytes)?)
}

/// `PermissionDenied` for a credential `revocation` covers. The message
/// starts as SPIRE's does ("no identity issued"), which SPIFFE client
/// libraries recognise as "no identity (yet)" rather than as a failure.
pub fn revoked(revocation: &Revocation) -> Status {
    Status::permission_denied(format!(
        "no identity issued: revoked by {}",
        revocation.describe()
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn revocation(id: &str, kind: RevocationKind, target: &str) -> Revocation {
        Revocation {
            id: id.into(),
            kind,
            target: target.into(),
            reason: "r".into(),
            created_at: 1,
        }
    }

    const NODE: &str = "spiffe://example.org/hallmark/agent/join_token/ab";

    fn bound() -> Bound<'static> {
        Bound {
            spiffe_id: "spiffe://example.org/invoice",
            image: "invoice@1.0.0",
            code_sha256: "c0de",
            model_digest: Some("sha256:aa"),
            node: NODE,
        }
    }

    #[test]
    fn each_kind_covers_what_it_names_and_nothing_else() {
        let b = bound();
        let covers = |kind, target: &str| revocation("1", kind, target).covers(&b);
        assert!(covers(
            RevocationKind::SpiffeId,
            "spiffe://example.org/invoice"
        ));
        assert!(!covers(
            RevocationKind::SpiffeId,
            "spiffe://example.org/invoice2"
        ));
        assert!(covers(RevocationKind::Image, "invoice"));
        assert!(covers(RevocationKind::Image, "invoice@1.0.0"));
        assert!(!covers(RevocationKind::Image, "invoice@2.0.0"));
        assert!(!covers(RevocationKind::Image, "invoi"));
        assert!(!covers(RevocationKind::Image, "invoice@1.1"));
        assert!(covers(RevocationKind::Code, "c0de"));
        assert!(!covers(RevocationKind::Code, "c0d"));
        assert!(covers(RevocationKind::Model, "sha256:aa"));
        assert!(!covers(RevocationKind::Model, "sha256:bb"));
        assert!(covers(RevocationKind::Node, NODE));
        assert!(!covers(
            RevocationKind::Node,
            "spiffe://example.org/hallmark/agent/join_token/cd"
        ));
        // An empty binding matches only by SPIFFE ID.
        let bare = Bound {
            spiffe_id: "spiffe://example.org/invoice",
            ..Bound::default()
        };
        assert!(!revocation("1", RevocationKind::Code, "").covers(&Bound {
            code_sha256: "x",
            ..bare
        }));
        assert!(!revocation("1", RevocationKind::Image, "invoice").covers(&bare));
    }

    #[test]
    fn image_versions_compare_as_relying_parties_compare_them() {
        // `hallmark::version` reads these as one version: so does the kill
        // switch, whichever spelling the kill or the binding uses.
        let image = |bound_image: &'static str, target: &str| {
            revocation("1", RevocationKind::Image, target).covers(&Bound {
                image: bound_image,
                ..bound()
            })
        };
        for target in [
            "invoice@1.0.0",
            "invoice@1.0.00",
            "invoice@1",
            "invoice@01.0",
        ] {
            assert!(image("invoice@1.0.0", target), "{target}");
            assert!(image("invoice@1.0.00", target), "{target}");
        }
        assert!(!image("invoice@1.0.0", "invoice@1.0.1"));
        assert!(!image("invoice@1.0.0", "ledger@1.0.0"));
        assert!(!image("invoice@1.0.00", "invoice@10.0"));
        // Versions that are not numeric compare as written.
        assert!(image("invoice@1.0-rc.1", "invoice@1.0-rc.1"));
        assert!(!image("invoice@1.0-rc.1", "invoice@1.0-rc.01"));
        assert!(!image("invoice@1.0-rc.1", "invoice@1.0"));
    }

    #[test]
    fn bindings_read_from_jwt_claims() {
        let claims = serde_json::json!({
            "code_sha256": "c0de",
            "image": "invoice@1.0.0",
            "model": {"digest": "sha256:aa", "name": "m", "version": "1"},
            "node": NODE,
        });
        let b = Bound::from_binding("spiffe://example.org/invoice", Some(&claims));
        assert_eq!(b, bound());
        let none = Bound::from_binding("spiffe://example.org/invoice", None);
        assert_eq!(none.image, "");
        assert_eq!(none.model_digest, None);
    }

    #[test]
    fn sets_come_from_sync_round_trip_on_disk_and_skip_unknown_kinds() {
        let wire = vec![
            node::Revocation {
                id: "2".into(),
                kind: node::RevocationKind::Node as i32,
                target: NODE.into(),
                reason: "stolen".into(),
                created_at: 5,
            },
            node::Revocation {
                id: "1".into(),
                kind: 99,
                target: "x".into(),
                reason: "from the future".into(),
                created_at: 5,
            },
        ];
        let set = RevocationSet::from_node(&wire);
        assert_eq!(set.len(), 1);
        assert_eq!(set.node(NODE).unwrap().reason, "stolen");
        assert!(
            set.node("spiffe://example.org/hallmark/agent/join_token/cd")
                .is_none()
        );
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(RevocationSet::load(dir.path()).unwrap(), None);
        set.save(dir.path()).unwrap();
        assert_eq!(RevocationSet::load(dir.path()).unwrap(), Some(set.clone()));
        std::fs::write(dir.path().join(REVOCATIONS_FILE), b"{").unwrap();
        assert!(RevocationSet::load(dir.path()).is_err());
        let more = set.with(revocation("0", RevocationKind::Code, "c0de"));
        assert_eq!(
            more.iter().map(|r| r.id.as_str()).collect::<Vec<_>>(),
            ["0", "2"]
        );
        assert_eq!(more.to_wire()[1].kind, wire::RevocationKind::Node as i32);
    }

    #[test]
    fn refusals_carry_the_revocation_and_read_like_spire() {
        let r = revocation("0123456789abcdef", RevocationKind::Node, NODE);
        let node_form = node::Revocation {
            id: r.id.clone(),
            kind: node::RevocationKind::Node as i32,
            target: r.target.clone(),
            reason: r.reason.clone(),
            created_at: 1,
        };
        let mut metadata = tonic::metadata::MetadataMap::new();
        metadata.insert_bin(
            REVOCATION_METADATA,
            tonic::metadata::MetadataValue::from_bytes(&hallmark_proto::encode_revocation(
                &node_form,
            )),
        );
        let status = Status::with_metadata(tonic::Code::PermissionDenied, "revoked", metadata);
        assert_eq!(revocation_in(&status), Some(r.clone()));
        assert_eq!(revocation_in(&Status::permission_denied("banned")), None);
        let refusal = revoked(&r);
        assert_eq!(refusal.code(), tonic::Code::PermissionDenied);
        assert!(
            refusal
                .message()
                .starts_with("no identity issued: revoked by kill 0123456789abcdef (node ")
        );
    }
}
