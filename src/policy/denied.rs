//! Why a policy refused a credential.

use hallmark_ca::id::SpiffeId;

use crate::binding::RiskTier;
use crate::revocation::Revocation;

/// Why a policy refused a verified credential.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Denied {
    /// The SPIFFE ID is not in the allowed set.
    #[error("spiffe id {found} is not one of {allowed}")]
    SpiffeId {
        /// The credential's SPIFFE ID.
        found: SpiffeId,
        /// The allowed set, as written in the policy.
        allowed: String,
    },
    /// The SPIFFE ID is not under the required path.
    #[error("spiffe id {found} is not under {prefix}")]
    SpiffeIdPrefix {
        /// The credential's SPIFFE ID.
        found: SpiffeId,
        /// The required prefix.
        prefix: SpiffeId,
    },
    /// The rule needs the Hallmark binding and the credential has none.
    #[error("the credential carries no hallmark binding ({rule} needs it)")]
    NoBinding {
        /// The rule that needed it.
        rule: String,
    },
    /// The image name or version does not satisfy the rule.
    #[error("image {found} does not satisfy {rule}")]
    Image {
        /// The rule.
        rule: String,
        /// The bound image, `name@version`.
        found: String,
    },
    /// The model name or version does not satisfy the rule, or there is no model.
    #[error("{} does not satisfy {rule}", found.as_ref().map_or_else(|| "the credential binds no model, so it".to_owned(), |m| format!("model {m}")))]
    Model {
        /// The rule.
        rule: String,
        /// The bound model, `name version`; `None` when the image binds none.
        found: Option<String>,
    },
    /// The code digest is not in the allowed set.
    #[error("code digest {0} is not allowed")]
    CodeDigest(String),
    /// The model digest is not in the allowed set, or there is no model.
    #[error("{} is not allowed", .0.as_ref().map_or_else(|| "a credential without a model".to_owned(), |d| format!("model digest {d}")))]
    ModelDigest(Option<String>),
    /// The risk tier is above the allowed maximum.
    #[error("risk tier {found} is above the allowed {max}")]
    RiskTier {
        /// The maximum.
        max: RiskTier,
        /// The bound tier.
        found: RiskTier,
    },
    /// A JWT-SVID without the scope (X.509-SVIDs carry no scopes).
    #[error("scope {0:?} is not granted")]
    Scope(String),
    /// Not a JWT-SVID from the required issuer (`iss`): another issuer,
    /// none, or an X.509-SVID.
    #[error("{} is not the required issuer {expected:?}", found.as_ref().map_or_else(|| "a credential without iss".to_owned(), |f| format!("issuer {f:?}")))]
    Issuer {
        /// The required `iss`.
        expected: String,
        /// The token's `iss`, if any.
        found: Option<String>,
    },
    /// No alternative of an `or` holds; each one's reason, in order.
    #[error("{}", none_of(.0))]
    NoneOf(Vec<Denied>),
    /// A revocation in force covers the credential.
    #[error("revoked by {}", .0.describe())]
    Revoked(Revocation),
    /// The revocation set may be stale and the policy fails closed.
    #[error(
        "the agent's revocations may be stale (it does not follow the issuer right now) and this policy fails closed"
    )]
    RevocationsStale,
}

fn none_of(reasons: &[Denied]) -> String {
    let all: Vec<String> = reasons.iter().map(ToString::to_string).collect();
    format!("no alternative holds: {}", all.join("; or "))
}
