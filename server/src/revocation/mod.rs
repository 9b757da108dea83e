//! The kill switch: revocations, kept durable in the store and in force in
//! memory, and pushed to every agent.
//!
//! A [`Revocation`] names one [`RevocationTarget`] (a workload SPIFFE ID,
//! an image name or `name@version`, an executable digest, a model digest,
//! or an agent), with the operator's reason and uid. Its life:
//!
//! 1. `CreateRevocation` (the admin API, `hallmark-server kill`) validates
//!    the request (exactly one target, well-formed, known to the issuer; a
//!    reason) and calls [`Revocations::create`], which, under one writer
//!    lock, writes the record durably, puts the new set in force for
//!    minting, and publishes it to the `Sync` streams. Memory is changed only
//!    after the store, so the set in force is never one the issuer would not
//!    find again after a crash.
//! 2. Minting holds a read guard on the set in force ([`Revocations::filter`])
//!    from the match to the signed credential, so once `create` returns no
//!    credential the revocation matches is signed: a mint that was under way
//!    finishes before the new set goes in force, every later one sees it.
//!    The refusal names the revocation's id, target and reason.
//! 3. Every `Sync` stream follows [`Revocations::subscribe`] and sends its
//!    agent the full set at once (a watch channel, so a burst of changes
//!    coalesces into the latest set and no stream can fall behind). The
//!    first message of a stream carries the set too, so an agent that was
//!    away learns every revocation before it serves again.
//! 4. A node revocation also makes the node API refuse the agent itself
//!    (every call, and attestation), with the revocation attached to the
//!    status (`hallmark-revocation-bin`), and the admin API stops honouring
//!    the node SVIDs it held: after a lift the agent must attest afresh.
//! 5. `LiftRevocation` marks the record lifted (kept, for the record and so
//!    that lifting twice is told apart from an unknown id) and the new set
//!    is published the same way.
//!
//! What a target matches is defined once, in [`RevocationTarget::matches`]
//! for the issuer and in the wire documentation (`revocations.proto`) for
//! agents and relying parties, which see only credentials.
//!
//! ```
//! use hallmark_server::revocation::{RevocationTarget, TargetRequest};
//! let td = "example.org".parse().unwrap();
//! let target = RevocationTarget::from_request(
//!     &TargetRequest { image: "invoice-agent@1.2.0", ..TargetRequest::default() },
//!     &td,
//! ).unwrap();
//! assert_eq!(target.to_string(), "image invoice-agent@1.2.0");
//! ```

mod set;
mod target;
mod wire;

use std::fmt;

use serde::{Deserialize, Serialize};

pub use set::{RevocationError, RevocationGuard, RevocationIndex, Revocations};
pub use target::{RevocationKind, RevocationTarget, TargetError, TargetRequest};
pub use wire::{revoked_status, to_admin_proto, to_node_proto};

/// Longest reason, in bytes.
pub const MAX_REASON_BYTES: usize = 1024;

/// A revocation's id: 16 lowercase hex characters (64 random bits).
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct RevocationId(String);

impl RevocationId {
    /// A fresh random id.
    pub fn generate() -> Self {
        RevocationId(format!("{:016x}", rand::random::<u64>()))
    }

    /// Checks `text` is 16 lowercase hex characters.
    pub fn parse(text: &str) -> Result<Self, String> {
        if text.len() == 16
            && text
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        {
            Ok(RevocationId(text.to_owned()))
        } else {
            Err(format!(
                "{text:?} is not a revocation id: ids are 16 lowercase hex characters, as `kill` and `kill list` print them"
            ))
        }
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for RevocationId {
    type Error = String;
    fn try_from(text: String) -> Result<Self, String> {
        RevocationId::parse(&text)
    }
}

impl From<RevocationId> for String {
    fn from(id: RevocationId) -> String {
        id.0
    }
}

impl fmt::Display for RevocationId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for RevocationId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "RevocationId({})", self.0)
    }
}

/// A revocation as stored: in force until `lifted` is set.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Revocation {
    /// Its id.
    pub id: RevocationId,
    /// What it revokes.
    pub target: RevocationTarget,
    /// The operator's reason.
    pub reason: String,
    /// Creation order: 1 for the first revocation of this issuer, then one
    /// more for each (times have whole seconds; this orders kills made in
    /// the same second).
    #[serde(default)]
    pub seq: u64,
    /// Creation time, seconds since the Unix epoch.
    pub created_at: u64,
    /// The operator's uid, from the admin socket's peer credentials.
    pub created_by_uid: Option<u32>,
    /// Set once lifted.
    pub lifted: Option<Lift>,
}

impl Revocation {
    /// Whether it is in force.
    pub fn in_force(&self) -> bool {
        self.lifted.is_none()
    }

    /// How a refusal names it: `kill <id> (<target>): <reason>`.
    pub fn describe(&self) -> String {
        format!("kill {} ({}): {}", self.id, self.target, self.reason)
    }
}

/// When, why and by whom a revocation was lifted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lift {
    /// Seconds since the Unix epoch.
    pub at: u64,
    /// The operator's reason.
    pub reason: String,
    /// The operator's uid.
    pub uid: Option<u32>,
}

/// Outcome of [`crate::store::Store::lift_revocation`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum LiftOutcome {
    /// It is now lifted; the record as stored.
    Lifted(Revocation),
    /// It was lifted before (nothing was written).
    AlreadyLifted(Revocation),
    /// No revocation has that id.
    NotFound,
}

/// Checks an operator's reason: one line of text, not blank, at most
/// [`MAX_REASON_BYTES`]. Returns it trimmed.
pub fn check_reason(reason: &str) -> Result<String, String> {
    let reason = reason.trim();
    if reason.is_empty() {
        return Err("reason is required: say why (it is kept and audited)".into());
    }
    if reason.len() > MAX_REASON_BYTES {
        return Err(format!(
            "reason is {} bytes: at most {MAX_REASON_BYTES} are kept",
            reason.len()
        ));
    }
    if reason.chars().any(char::is_control) {
        return Err("reason must be one line of text without control characters".into());
    }
    Ok(reason.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_16_lowercase_hex() {
        let id = RevocationId::generate();
        assert_eq!(RevocationId::parse(id.as_str()).unwrap(), id);
        for bad in [
            "",
            "0123456789abcde",
            "0123456789abcdef0",
            "0123456789ABCDEF",
            "kill-12345678901",
        ] {
            let err = RevocationId::parse(bad).unwrap_err();
            assert!(err.contains("16 lowercase hex"), "{bad}: {err}");
        }
    }

    #[test]
    fn reasons_are_one_trimmed_line() {
        assert_eq!(check_reason("  leaked key \t").unwrap(), "leaked key");
        assert!(check_reason("").unwrap_err().contains("required"));
        assert!(check_reason("   ").unwrap_err().contains("required"));
        assert!(check_reason("a\nb").unwrap_err().contains("one line"));
        assert!(
            check_reason(&"x".repeat(MAX_REASON_BYTES + 1))
                .unwrap_err()
                .contains("at most 1024")
        );
        assert!(check_reason(&"x".repeat(MAX_REASON_BYTES)).is_ok());
    }

    #[test]
    fn records_round_trip_through_json_and_refuse_bad_ids() {
        let revocation = Revocation {
            id: RevocationId::parse("00000000000000aa").unwrap(),
            target: RevocationTarget::Code(
                crate::image::types::Sha256Hex::new(&"1".repeat(64)).unwrap(),
            ),
            reason: "leaked".into(),
            seq: 1,
            created_at: 5,
            created_by_uid: Some(1000),
            lifted: None,
        };
        let json = serde_json::to_string(&revocation).unwrap();
        assert_eq!(
            serde_json::from_str::<Revocation>(&json).unwrap(),
            revocation
        );
        let tampered = json.replace("00000000000000aa", "not-an-id");
        assert!(serde_json::from_str::<Revocation>(&tampered).is_err());
        let tampered = json.replace(&"1".repeat(64), "abc");
        assert!(serde_json::from_str::<Revocation>(&tampered).is_err());
    }
}
