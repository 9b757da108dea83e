//! Authorization policies over verified credentials: who may call, bound to
//! what code and which model.
//!
//! A [`Policy`] is a tree of rules combined with [`Policy::and`] and
//! [`Policy::or`]. Each rule looks at the verified [`Identity`]: its SPIFFE
//! ID, and the Hallmark binding the issuer put in the credential (image,
//! model, code digest, risk tier), or a JWT-SVID's scopes. A rule about the
//! binding refuses credentials that carry none. Optionally, a policy also
//! consults live [`Revocations`] from the agent, so a killed identity is
//! refused at the next handshake or token.
//!
//! One policy serves everywhere a credential arrives:
//! - [`Policy::client_verifier`] and [`Policy::server_verifier`]: rustls
//!   verifiers (they extend `hallmark-ca`'s SPIFFE verifiers, which check the
//!   chain per the SPIFFE rules against a [`SharedBundle`] that can rotate);
//! - [`Policy::verify_jwt`]: a JWT-SVID for an audience, against a bundle;
//! - [`Policy::verify_x509`]: an X.509-SVID chain received some other way;
//! - [`Policy::check`]: an [`Identity`] already verified.
//!
//! Versions compare numerically ([`crate::version`]): `3.10 > 3.9`, and a
//! version that is not numeric-dotted never satisfies a comparison.
//!
//! ```
//! use hallmark::ca::id::SpiffeId;
//! use hallmark::policy::Policy;
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! // The billing service, or any image of the payments team's agent, but
//! // only with llama-3.1 at 3.1 or later.
//! let policy = Policy::spiffe_id_in([SpiffeId::parse("spiffe://example.org/billing")?])
//!     .or(Policy::image("payments-agent", "*".parse()?))
//!     .and(Policy::model("llama-3.1", ">= 3.1".parse()?));
//! assert_eq!(
//!     policy.to_string(),
//!     "(spiffe id in {spiffe://example.org/billing} or image payments-agent) and model llama-3.1 >= 3.1"
//! );
//! # Ok(())
//! # }
//! ```

use std::collections::BTreeSet;
use std::fmt;
use std::sync::Arc;
use std::time::SystemTime;

use hallmark_ca::bundle::{Bundle, SharedBundle};
use hallmark_ca::id::SpiffeId;
use hallmark_ca::tls::{SpiffeClientVerifier, SpiffeServerVerifier, SvidAuthorizer};
use hallmark_ca::verify::Usage;

use crate::binding::RiskTier;
use crate::revocation::{Revocation, Revocations};
use crate::svid::{Identity, SvidError, verify_jwt_svid, verify_x509_svid};
use crate::version::VersionReq;

/// An authorization policy (see the [module docs](self)). Cheap to clone.
#[derive(Clone)]
pub struct Policy {
    rule: Arc<Rule>,
    revocations: Option<Revocations>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Rule {
    Any,
    SpiffeIdIn(BTreeSet<SpiffeId>),
    SpiffeIdUnder(SpiffeId),
    Image { name: String, req: VersionReq },
    Model { name: String, req: VersionReq },
    CodeDigestIn(BTreeSet<String>),
    ModelDigestIn(BTreeSet<String>),
    RiskTierAtMost(RiskTier),
    Scope(String),
    All(Vec<Rule>),
    AnyOf(Vec<Rule>),
}

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

/// Why a credential was rejected: not a valid SVID, or refused by the policy.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PolicyError {
    /// The credential is not a valid SVID for this bundle (and audience).
    #[error(transparent)]
    Invalid(#[from] SvidError),
    /// The credential is valid and the policy refuses it.
    #[error("{spiffe_id} is not authorized: {reason}")]
    Denied {
        /// Whose credential.
        spiffe_id: SpiffeId,
        /// Why.
        reason: Denied,
    },
}

impl PolicyError {
    /// The refusal that made a TLS handshake fail, if a verifier of this
    /// crate refused the peer: rustls reports it as
    /// `InvalidCertificate(Other(..))`, which prints as debug output, and
    /// tokio-rustls wraps that in an `io::Error`. Walks `error` and its
    /// sources for it.
    ///
    /// ```
    /// use hallmark::policy::PolicyError;
    /// let error = std::io::Error::other("connection reset");
    /// assert!(PolicyError::in_handshake_error(&error).is_none());
    /// ```
    pub fn in_handshake_error<'a>(
        error: &'a (dyn std::error::Error + 'static),
    ) -> Option<&'a PolicyError> {
        let mut next = Some(error);
        while let Some(current) = next {
            if let Some(found) = current.downcast_ref::<PolicyError>() {
                return Some(found);
            }
            if let Some(rustls::Error::InvalidCertificate(rustls::CertificateError::Other(other))) =
                current.downcast_ref::<rustls::Error>()
            {
                let inner: &(dyn std::error::Error + 'static) = &*other.0;
                return inner.downcast_ref::<PolicyError>();
            }
            next = match current.downcast_ref::<std::io::Error>() {
                Some(io) => match io.get_ref() {
                    Some(inner) => Some(inner as &(dyn std::error::Error + 'static)),
                    None => current.source(),
                },
                None => current.source(),
            };
        }
        None
    }
}

impl Policy {
    /// Any credential that verifies (its SPIFFE ID is in the bundle's trust
    /// domain: the verifiers check that).
    pub fn any_identity() -> Policy {
        Policy::from_rule(Rule::Any)
    }

    /// The SPIFFE ID is `id`.
    pub fn spiffe_id(id: SpiffeId) -> Policy {
        Policy::spiffe_id_in([id])
    }

    /// The SPIFFE ID is one of `ids`.
    pub fn spiffe_id_in(ids: impl IntoIterator<Item = SpiffeId>) -> Policy {
        Policy::from_rule(Rule::SpiffeIdIn(ids.into_iter().collect()))
    }

    /// The SPIFFE ID is `prefix` or below it (path segments: `/agents`
    /// covers `/agents/a`, not `/agentsmith`).
    pub fn spiffe_id_under(prefix: SpiffeId) -> Policy {
        Policy::from_rule(Rule::SpiffeIdUnder(prefix))
    }

    /// The bound gold image is named `name`, with a version satisfying `req`.
    pub fn image(name: &str, req: VersionReq) -> Policy {
        Policy::from_rule(Rule::Image {
            name: name.to_owned(),
            req,
        })
    }

    /// The bound model is named `name`, with a version satisfying `req`.
    pub fn model(name: &str, req: VersionReq) -> Policy {
        Policy::from_rule(Rule::Model {
            name: name.to_owned(),
            req,
        })
    }

    /// The executable's SHA-256 (64 hex, as `sha256sum` prints it; case
    /// does not matter) is one of `digests`.
    pub fn code_digest_in<S: AsRef<str>>(digests: impl IntoIterator<Item = S>) -> Policy {
        Policy::from_rule(Rule::CodeDigestIn(
            digests
                .into_iter()
                .map(|d| d.as_ref().to_ascii_lowercase())
                .collect(),
        ))
    }

    /// The bound model's canonical digest (`sha256:<hex>`, as `image
    /// digest` prints it) is one of `digests`.
    pub fn model_digest_in<S: AsRef<str>>(digests: impl IntoIterator<Item = S>) -> Policy {
        Policy::from_rule(Rule::ModelDigestIn(
            digests
                .into_iter()
                .map(|d| d.as_ref().to_ascii_lowercase())
                .collect(),
        ))
    }

    /// The bound image's risk tier is `max` or lower.
    pub fn risk_tier_at_most(max: RiskTier) -> Policy {
        Policy::from_rule(Rule::RiskTierAtMost(max))
    }

    /// A JWT-SVID whose `scope` claim grants `scope` (never an X.509-SVID).
    pub fn scope(scope: &str) -> Policy {
        Policy::from_rule(Rule::Scope(scope.to_owned()))
    }

    /// Both this and `other` hold. Revocations of either are kept (this
    /// one's first).
    pub fn and(self, other: Policy) -> Policy {
        let revocations = self.revocations.clone().or(other.revocations.clone());
        let mut rules = Vec::new();
        for rule in [self.rule, other.rule] {
            match Arc::unwrap_or_clone(rule) {
                Rule::All(inner) => rules.extend(inner),
                Rule::Any => {}
                rule => rules.push(rule),
            }
        }
        let rule = match rules.len() {
            0 => Rule::Any,
            1 => rules.remove(0),
            _ => Rule::All(rules),
        };
        Policy {
            rule: Arc::new(rule),
            revocations,
        }
    }

    /// This or `other` holds.
    pub fn or(self, other: Policy) -> Policy {
        let revocations = self.revocations.clone().or(other.revocations.clone());
        let mut rules = Vec::new();
        for rule in [self.rule, other.rule] {
            match Arc::unwrap_or_clone(rule) {
                Rule::AnyOf(inner) => rules.extend(inner),
                rule => rules.push(rule),
            }
        }
        Policy {
            rule: Arc::new(Rule::AnyOf(rules)),
            revocations,
        }
    }

    /// Also refuse what `revocations` covers (checked after the rules).
    pub fn with_revocations(mut self, revocations: Revocations) -> Policy {
        self.revocations = Some(revocations);
        self
    }

    /// Judges an identity that already verified.
    pub fn check(&self, identity: &Identity) -> Result<(), Denied> {
        self.rule.check(identity)?;
        match &self.revocations {
            Some(revocations) => revocations.check(identity),
            None => Ok(()),
        }
    }

    /// Verifies an X.509-SVID chain (leaf first, DER) against `bundle` for
    /// `usage` at `now`, then judges it.
    pub fn verify_x509(
        &self,
        chain: &[impl AsRef<[u8]>],
        bundle: &Bundle,
        usage: Usage,
        now: SystemTime,
    ) -> Result<Identity, PolicyError> {
        let identity = verify_x509_svid(chain, bundle, usage, now)?;
        self.judge(identity)
    }

    /// Validates a JWT-SVID for `audience` against the JWT authorities of
    /// `bundle` at `now` (a [`JwtBundleSource`](crate::workload::JwtBundleSource)
    /// keeps one current, or parse a SPIFFE bundle/JWKS with
    /// [`Bundle::from_jwks`]), then judges its `sub`, `hallmark` binding
    /// claim and `scope`.
    ///
    /// ```
    /// # use std::time::{Duration, SystemTime};
    /// # use hallmark::ca::id::{SpiffeId, TrustDomain};
    /// # use hallmark::ca::manager::{CaConfig, CaManager};
    /// # use hallmark::ca::jwt::JwtSvidClaims;
    /// use hallmark::policy::{Denied, Policy, PolicyError};
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let now = SystemTime::now();
    /// # let td = TrustDomain::new("example.org")?;
    /// # let ca = CaManager::generate(CaConfig::new(td.clone()), now)?;
    /// # let binding = serde_json::json!({"code_sha256": "1".repeat(64), "image": "summarizer@2.0.0",
    /// #     "model": {"digest": format!("sha256:{}", "2".repeat(64)), "name": "llama", "version": "3.0"},
    /// #     "node": "spiffe://example.org/hallmark/agent/join_token/ab", "owner": "alice@example.org", "risk_tier": "low"});
    /// # let mut extra = serde_json::Map::new();
    /// # extra.insert("hallmark".into(), binding);
    /// # let token = ca.mint_jwt_svid(&JwtSvidClaims { spiffe_id: SpiffeId::new(&td, "/summarizer")?,
    /// #     audience: vec!["payments".into()], ttl: Duration::from_secs(300), extra }, now)?.token;
    /// // `token` is a JWT-SVID for audience "payments" bound to llama 3.0.
    /// let policy = Policy::model("llama", ">= 3.1".parse()?);
    /// match policy.verify_jwt(&token, "payments", &ca.bundle(), now) {
    ///     Err(PolicyError::Denied { reason: Denied::Model { .. }, .. }) => {}
    ///     other => panic!("{other:?}"),
    /// }
    /// assert!(Policy::model("llama", ">= 3".parse()?).verify_jwt(&token, "payments", &ca.bundle(), now).is_ok());
    /// # Ok(())
    /// # }
    /// ```
    pub fn verify_jwt(
        &self,
        token: &str,
        audience: &str,
        bundle: &Bundle,
        now: SystemTime,
    ) -> Result<Identity, PolicyError> {
        let identity = verify_jwt_svid(token, audience, bundle, now)?;
        self.judge(identity)
    }

    /// A rustls client certificate verifier for servers: it requires a
    /// client X.509-SVID that verifies against the current `bundle` and
    /// that this policy accepts. A refusal fails the handshake, with the
    /// reason as the server-side error message.
    pub fn client_verifier(&self, bundle: SharedBundle) -> Arc<SpiffeClientVerifier> {
        Arc::new(SpiffeClientVerifier::with_svid_authorizer(
            bundle,
            self.authorizer(),
        ))
    }

    /// A rustls server certificate verifier for clients: the server's
    /// X.509-SVID must verify against the current `bundle` and be accepted
    /// by this policy (the DNS name the client dials is ignored: SVIDs name
    /// workloads, not hosts).
    pub fn server_verifier(&self, bundle: SharedBundle) -> Arc<SpiffeServerVerifier> {
        Arc::new(SpiffeServerVerifier::with_svid_authorizer(
            bundle,
            self.authorizer(),
        ))
    }

    fn authorizer(&self) -> SvidAuthorizer {
        let policy = self.clone();
        Arc::new(move |svid| {
            let identity = Identity::from_verified(svid)?;
            policy.check(&identity).map_err(|reason| {
                tracing::debug!(spiffe_id = %identity.spiffe_id, %reason, "peer refused by policy");
                Box::new(PolicyError::Denied {
                    spiffe_id: identity.spiffe_id,
                    reason,
                }) as _
            })
        })
    }

    fn judge(&self, identity: Identity) -> Result<Identity, PolicyError> {
        match self.check(&identity) {
            Ok(()) => Ok(identity),
            Err(reason) => Err(PolicyError::Denied {
                spiffe_id: identity.spiffe_id,
                reason,
            }),
        }
    }

    fn from_rule(rule: Rule) -> Policy {
        Policy {
            rule: Arc::new(rule),
            revocations: None,
        }
    }
}

impl fmt::Debug for Policy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Policy")
            .field("rule", &self.rule.to_string())
            .field("revocations", &self.revocations.is_some())
            .finish()
    }
}

/// The rules in words: `spiffe id in {…} and model llama >= 3.1`.
impl fmt::Display for Policy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.rule.fmt(f)?;
        if self.revocations.is_some() {
            f.write_str(", not revoked")?;
        }
        Ok(())
    }
}

impl Rule {
    fn check(&self, identity: &Identity) -> Result<(), Denied> {
        let binding = || {
            identity.binding.as_ref().ok_or_else(|| Denied::NoBinding {
                rule: self.to_string(),
            })
        };
        match self {
            Rule::Any => Ok(()),
            Rule::SpiffeIdIn(ids) if ids.contains(&identity.spiffe_id) => Ok(()),
            Rule::SpiffeIdIn(_) => Err(Denied::SpiffeId {
                found: identity.spiffe_id.clone(),
                allowed: id_set(self),
            }),
            Rule::SpiffeIdUnder(prefix) => {
                if identity.spiffe_id.trust_domain() == prefix.trust_domain()
                    && identity.spiffe_id.has_path_prefix(prefix.path())
                {
                    Ok(())
                } else {
                    Err(Denied::SpiffeIdPrefix {
                        found: identity.spiffe_id.clone(),
                        prefix: prefix.clone(),
                    })
                }
            }
            Rule::Image { name, req } => {
                let image = &binding()?.image;
                if image.name() == name && req.matches_str(image.version()) {
                    Ok(())
                } else {
                    Err(Denied::Image {
                        rule: self.to_string(),
                        found: image.to_string(),
                    })
                }
            }
            Rule::Model { name, req } => match &binding()?.model {
                Some(model) if model.name == *name && req.matches_str(&model.version) => Ok(()),
                model => Err(Denied::Model {
                    rule: self.to_string(),
                    found: model.as_ref().map(|m| format!("{} {}", m.name, m.version)),
                }),
            },
            Rule::CodeDigestIn(digests) => {
                let code = binding()?.code_sha256.as_str();
                if digests.contains(code) {
                    Ok(())
                } else {
                    Err(Denied::CodeDigest(code.to_owned()))
                }
            }
            Rule::ModelDigestIn(digests) => match &binding()?.model {
                Some(model) if digests.contains(model.digest.as_str()) => Ok(()),
                model => Err(Denied::ModelDigest(
                    model.as_ref().map(|m| m.digest.as_str().to_owned()),
                )),
            },
            Rule::RiskTierAtMost(max) => {
                let found = binding()?.risk_tier;
                if found <= *max {
                    Ok(())
                } else {
                    Err(Denied::RiskTier { max: *max, found })
                }
            }
            Rule::Scope(scope) if identity.scopes().iter().any(|s| s == scope) => Ok(()),
            Rule::Scope(scope) => Err(Denied::Scope(scope.clone())),
            Rule::All(rules) => rules.iter().try_for_each(|r| r.check(identity)),
            Rule::AnyOf(rules) => {
                let mut reasons = Vec::with_capacity(rules.len());
                for rule in rules {
                    match rule.check(identity) {
                        Ok(()) => return Ok(()),
                        Err(reason) => reasons.push(reason),
                    }
                }
                Err(Denied::NoneOf(reasons))
            }
        }
    }
}

impl fmt::Display for Rule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let versioned =
            |f: &mut fmt::Formatter<'_>, what: &str, name: &str, req: &VersionReq| match req {
                VersionReq::Any => write!(f, "{what} {name}"),
                req => write!(f, "{what} {name} {req}"),
            };
        let list = |f: &mut fmt::Formatter<'_>, rules: &[Rule], word: &str| {
            for (i, rule) in rules.iter().enumerate() {
                if i > 0 {
                    write!(f, " {word} ")?;
                }
                if matches!(rule, Rule::All(_) | Rule::AnyOf(_)) {
                    write!(f, "({rule})")?;
                } else {
                    write!(f, "{rule}")?;
                }
            }
            Ok(())
        };
        match self {
            Rule::Any => f.write_str("any identity"),
            Rule::SpiffeIdIn(_) => write!(f, "spiffe id in {}", id_set(self)),
            Rule::SpiffeIdUnder(prefix) => write!(f, "spiffe id under {prefix}"),
            Rule::Image { name, req } => versioned(f, "image", name, req),
            Rule::Model { name, req } => versioned(f, "model", name, req),
            Rule::CodeDigestIn(digests) => write!(f, "code digest in {{{}}}", join(digests)),
            Rule::ModelDigestIn(digests) => write!(f, "model digest in {{{}}}", join(digests)),
            Rule::RiskTierAtMost(max) => write!(f, "risk tier at most {max}"),
            Rule::Scope(scope) => write!(f, "scope {scope}"),
            Rule::All(rules) => list(f, rules, "and"),
            Rule::AnyOf(rules) => list(f, rules, "or"),
        }
    }
}

fn id_set(rule: &Rule) -> String {
    match rule {
        Rule::SpiffeIdIn(ids) => format!(
            "{{{}}}",
            ids.iter()
                .map(SpiffeId::as_str)
                .collect::<Vec<_>>()
                .join(", ")
        ),
        _ => String::new(),
    }
}

fn join(items: &BTreeSet<String>) -> String {
    items
        .iter()
        .map(String::as_str)
        .collect::<Vec<_>>()
        .join(", ")
}

fn none_of(reasons: &[Denied]) -> String {
    let all: Vec<String> = reasons.iter().map(ToString::to_string).collect();
    format!("no alternative holds: {}", all.join("; or "))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::revocation::{RevocationKind, RevocationSet};
    use crate::test_support::{
        CODE, Fixture, MODEL_DIGEST, NODE, Side, binding, handshake, provider,
    };

    fn req(s: &str) -> VersionReq {
        s.parse().unwrap()
    }

    fn identity(f: &Fixture, path: &str, b: Option<serde_json::Value>) -> Identity {
        let (chain, _) = f.x509(path, b.as_ref());
        verify_x509_svid(&chain, &f.ca.bundle(), Usage::ClientAuth, f.now).unwrap()
    }

    #[test]
    fn each_rule_accepts_what_it_names_and_says_why_not() {
        let f = Fixture::new();
        let billing = f.id("/billing");
        let who = identity(
            &f,
            "/billing",
            Some(binding("billing-agent@1.4.0", Some(("llama", "3.10")))),
        );
        let bare = identity(&f, "/billing", None);
        let no_model = identity(&f, "/billing", Some(binding("billing-agent@1.4.0", None)));

        let ok = |p: Policy| p.check(&who).unwrap();
        let denied = |p: Policy, i: &Identity| p.check(i).unwrap_err();

        ok(Policy::any_identity());
        ok(Policy::spiffe_id(billing.clone()));
        ok(Policy::spiffe_id_under(f.id("/billing")));
        ok(Policy::image("billing-agent", req(">= 1.4")));
        ok(Policy::image("billing-agent", VersionReq::Any));
        ok(Policy::model("llama", req(">= 3.9")));
        ok(Policy::model("llama", req(">= 3.1, < 4")));
        ok(Policy::code_digest_in([CODE.to_ascii_uppercase()]));
        ok(Policy::model_digest_in([MODEL_DIGEST]));
        ok(Policy::risk_tier_at_most(RiskTier::Medium));

        assert_eq!(
            denied(Policy::spiffe_id_in([f.id("/a"), f.id("/b")]), &who).to_string(),
            "spiffe id spiffe://example.org/billing is not one of {spiffe://example.org/a, spiffe://example.org/b}"
        );
        assert_eq!(
            denied(Policy::spiffe_id_under(f.id("/bill")), &who).to_string(),
            "spiffe id spiffe://example.org/billing is not under spiffe://example.org/bill"
        );
        assert_eq!(
            denied(Policy::image("billing-agent", req(">= 2")), &who).to_string(),
            "image billing-agent@1.4.0 does not satisfy image billing-agent >= 2"
        );
        assert!(matches!(
            denied(Policy::image("other", VersionReq::Any), &who),
            Denied::Image { .. }
        ));
        assert_eq!(
            denied(Policy::model("llama", req(">= 4")), &who).to_string(),
            "model llama 3.10 does not satisfy model llama >= 4"
        );
        assert_eq!(
            denied(Policy::model("llama", VersionReq::Any), &no_model).to_string(),
            "the credential binds no model, so it does not satisfy model llama"
        );
        assert_eq!(
            denied(Policy::code_digest_in(["ab".repeat(32)]), &who),
            Denied::CodeDigest(CODE.into())
        );
        assert_eq!(
            denied(Policy::model_digest_in(["sha256:00"]), &no_model).to_string(),
            "a credential without a model is not allowed"
        );
        assert_eq!(
            denied(Policy::risk_tier_at_most(RiskTier::Low), &who).to_string(),
            "risk tier medium is above the allowed low"
        );
        assert_eq!(
            denied(Policy::scope("payments:propose"), &who),
            Denied::Scope("payments:propose".into())
        );
        // Rules about the binding refuse credentials that carry none; the
        // SPIFFE ID alone still works.
        assert_eq!(
            denied(Policy::model("llama", VersionReq::Any), &bare).to_string(),
            "the credential carries no hallmark binding (model llama needs it)"
        );
        Policy::spiffe_id(billing).check(&bare).unwrap();
    }

    #[test]
    fn versions_compare_numerically_and_non_numeric_ones_fail_closed() {
        let f = Fixture::new();
        let at = |v: &str| identity(&f, "/x", Some(binding("x@1", Some(("m", v)))));
        let p = Policy::model("m", req(">= 3.9"));
        assert!(p.check(&at("3.10")).is_ok());
        assert!(p.check(&at("3.9.0")).is_ok());
        assert!(p.check(&at("3.8.99")).is_err());
        assert!(p.check(&at("3.9-rc1")).is_err());
        assert!(p.check(&at("2024-07")).is_err());
        assert!(
            Policy::model("m", VersionReq::Any)
                .check(&at("2024-07"))
                .is_ok()
        );
    }

    #[test]
    fn combinators_nest_flatten_and_explain() {
        let f = Fixture::new();
        let who = identity(
            &f,
            "/billing",
            Some(binding("billing-agent@1.4.0", Some(("llama", "3.0")))),
        );
        let p = Policy::spiffe_id(f.id("/ops"))
            .or(Policy::image("billing-agent", VersionReq::Any))
            .and(Policy::model("llama", req(">= 3.1")));
        assert_eq!(
            p.to_string(),
            "(spiffe id in {spiffe://example.org/ops} or image billing-agent) and model llama >= 3.1"
        );
        assert_eq!(
            p.check(&who).unwrap_err().to_string(),
            "model llama 3.0 does not satisfy model llama >= 3.1"
        );
        let either = Policy::spiffe_id(f.id("/ops")).or(Policy::model("llama", req(">= 3.1")));
        assert_eq!(
            either.check(&who).unwrap_err().to_string(),
            "no alternative holds: spiffe id spiffe://example.org/billing is not one of {spiffe://example.org/ops}; or model llama 3.0 does not satisfy model llama >= 3.1"
        );
        // `or` and `and` flatten; `any_identity` is the unit of `and`.
        let three = Policy::spiffe_id(f.id("/a"))
            .or(Policy::spiffe_id(f.id("/b")))
            .or(Policy::spiffe_id(f.id("/billing")));
        assert_eq!(three.to_string().matches(" or ").count(), 2);
        three.check(&who).unwrap();
        let unit = Policy::any_identity().and(Policy::image("billing-agent", VersionReq::Any));
        assert_eq!(unit.to_string(), "image billing-agent");
        assert_eq!(Policy::any_identity().to_string(), "any identity");
    }

    fn revoked(kind: RevocationKind, target: &str) -> Revocations {
        Revocations::fixed(RevocationSet::new(vec![Revocation {
            id: "0123456789abcdef".into(),
            kind,
            target: target.into(),
            reason: "prompt injection".into(),
            created_at: 1,
        }]))
    }

    #[test]
    fn revocations_refuse_what_they_cover_after_the_rules() {
        let f = Fixture::new();
        let who = identity(
            &f,
            "/billing",
            Some(binding("billing-agent@1.4.0", Some(("llama", "3.1")))),
        );
        let base = Policy::spiffe_id(f.id("/billing"));
        for (kind, target) in [
            (RevocationKind::SpiffeId, "spiffe://example.org/billing"),
            (RevocationKind::Image, "billing-agent"),
            (RevocationKind::Image, "billing-agent@1.4.0"),
            (RevocationKind::Code, CODE),
            (RevocationKind::Model, MODEL_DIGEST),
            (RevocationKind::Node, NODE),
        ] {
            let err = base
                .clone()
                .with_revocations(revoked(kind, target))
                .check(&who)
                .unwrap_err();
            assert_eq!(
                err.to_string(),
                format!(
                    "revoked by kill 0123456789abcdef ({} {target}): prompt injection",
                    kind.as_str()
                )
            );
        }
        base.clone()
            .with_revocations(revoked(RevocationKind::Image, "billing-agent@1.5.0"))
            .check(&who)
            .unwrap();
        assert!(
            base.clone()
                .with_revocations(revoked(RevocationKind::Code, CODE))
                .to_string()
                .ends_with(", not revoked")
        );
        // A credential without a binding is covered by its SPIFFE ID only.
        let bare = identity(&f, "/billing", None);
        base.clone()
            .with_revocations(revoked(RevocationKind::Node, NODE))
            .check(&bare)
            .unwrap();
        assert!(
            base.with_revocations(revoked(
                RevocationKind::SpiffeId,
                "spiffe://example.org/billing"
            ))
            .check(&bare)
            .is_err()
        );
    }

    #[test]
    fn jwt_svids_are_validated_then_judged_on_their_claims() {
        let f = Fixture::new();
        let bundle = f.ca.bundle();
        let token = f.jwt(
            "/billing",
            "payments",
            Some(binding("billing-agent@1.4.0", Some(("llama", "3.1")))),
            Some("invoices:read payments:propose"),
        );
        let p = Policy::model("llama", req(">= 3.1")).and(Policy::scope("payments:propose"));
        let identity = p.verify_jwt(&token, "payments", &bundle, f.now).unwrap();
        assert_eq!(identity.spiffe_id, f.id("/billing"));
        assert_eq!(identity.scopes(), ["invoices:read", "payments:propose"]);
        assert!(identity.expires_at() > f.now);
        assert_eq!(
            identity.binding.unwrap().image.as_str(),
            "billing-agent@1.4.0"
        );

        // Wrong audience: invalid, not merely denied.
        assert!(matches!(
            p.verify_jwt(&token, "other", &bundle, f.now),
            Err(PolicyError::Invalid(SvidError::Jwt(
                hallmark_ca::jwt::JwtError::AudienceMismatch
            )))
        ));
        // Another trust domain's keys: invalid.
        let other = Fixture::new();
        assert!(matches!(
            p.verify_jwt(&token, "payments", &other.ca.bundle(), f.now),
            Err(PolicyError::Invalid(SvidError::Jwt(
                hallmark_ca::jwt::JwtError::UnknownKeyId(_)
            )))
        ));
        // Expired.
        assert!(matches!(
            p.verify_jwt(
                &token,
                "payments",
                &bundle,
                f.now + std::time::Duration::from_secs(301)
            ),
            Err(PolicyError::Invalid(SvidError::Jwt(
                hallmark_ca::jwt::JwtError::Expired
            )))
        ));
        // Valid but refused: an old model, a missing scope.
        let old = f.jwt(
            "/billing",
            "payments",
            Some(binding("billing-agent@1.4.0", Some(("llama", "3.0")))),
            Some("payments:propose"),
        );
        let err = p.verify_jwt(&old, "payments", &bundle, f.now).unwrap_err();
        assert_eq!(
            err.to_string(),
            "spiffe://example.org/billing is not authorized: model llama 3.0 does not satisfy model llama >= 3.1"
        );
        let unscoped = f.jwt(
            "/billing",
            "payments",
            Some(binding("billing-agent@1.4.0", Some(("llama", "3.1")))),
            None,
        );
        assert!(matches!(
            p.verify_jwt(&unscoped, "payments", &bundle, f.now),
            Err(PolicyError::Denied {
                reason: Denied::Scope(_),
                ..
            })
        ));
        // A malformed binding claim is an invalid credential.
        let mut broken = binding("billing-agent@1.4.0", None);
        broken["code_sha256"] = "nope".into();
        let broken = f.jwt("/billing", "payments", Some(broken), None);
        assert!(matches!(
            Policy::any_identity().verify_jwt(&broken, "payments", &bundle, f.now),
            Err(PolicyError::Invalid(SvidError::Binding(_)))
        ));
        // Revoked tokens are refused.
        let killed = Policy::any_identity()
            .with_revocations(revoked(RevocationKind::Image, "billing-agent"));
        assert!(matches!(
            killed.verify_jwt(&token, "payments", &bundle, f.now),
            Err(PolicyError::Denied {
                reason: Denied::Revoked(_),
                ..
            })
        ));
    }

    #[test]
    fn x509_svids_are_verified_then_judged() {
        let f = Fixture::new();
        let (chain, _) = f.x509(
            "/billing",
            Some(&binding("billing-agent@1.4.0", Some(("llama", "3.1")))),
        );
        let p = Policy::model("llama", req(">= 3.1"));
        let bundle = f.ca.bundle();
        let identity = p
            .verify_x509(&chain, &bundle, Usage::ServerAuth, f.now)
            .unwrap();
        match &identity.credential {
            crate::svid::Credential::X509 { serial, not_after } => {
                assert_eq!(*serial, hallmark_ca::tls::leaf_serial(&chain[0]).unwrap());
                assert!(*not_after > f.now);
            }
            other => panic!("{other:?}"),
        }
        assert!(identity.scopes().is_empty());
        let other = Fixture::new();
        assert!(matches!(
            p.verify_x509(&chain, &other.ca.bundle(), Usage::ServerAuth, f.now),
            Err(PolicyError::Invalid(SvidError::X509(
                hallmark_ca::verify::VerifyError::UnknownAuthority
            )))
        ));
        assert!(matches!(
            Policy::model("llama", req(">= 4")).verify_x509(
                &chain,
                &bundle,
                Usage::ServerAuth,
                f.now
            ),
            Err(PolicyError::Denied { .. })
        ));
    }

    fn server_config(f: &Fixture, policy: &Policy) -> Arc<rustls::ServerConfig> {
        Arc::new(
            rustls::ServerConfig::builder_with_provider(provider())
                .with_safe_default_protocol_versions()
                .unwrap()
                .with_client_cert_verifier(policy.client_verifier(f.bundle()))
                .with_cert_resolver(f.resolver(
                    "/server",
                    Some(&binding("server@2.0.0", Some(("llama", "3.1")))),
                )),
        )
    }

    fn client_config(
        f: &Fixture,
        policy: &Policy,
        model_version: &str,
    ) -> Arc<rustls::ClientConfig> {
        Arc::new(
            rustls::ClientConfig::builder_with_provider(provider())
                .with_safe_default_protocol_versions()
                .unwrap()
                .dangerous()
                .with_custom_certificate_verifier(policy.server_verifier(f.bundle()))
                .with_client_cert_resolver(f.resolver(
                    "/client",
                    Some(&binding("client@1.0.0", Some(("llama", model_version)))),
                )),
        )
    }

    #[test]
    fn rustls_verifiers_apply_the_policy_on_both_sides() {
        let f = Fixture::new();
        let for_clients =
            Policy::spiffe_id(f.id("/client")).and(Policy::model("llama", req(">= 3.1")));
        let for_server =
            Policy::spiffe_id(f.id("/server")).and(Policy::model("llama", req(">= 3")));

        let (client, server) = handshake(
            server_config(&f, &for_clients),
            client_config(&f, &for_server, "3.1"),
        )
        .unwrap();
        let peer = crate::svid::peer_identity(server.peer_certificates().unwrap()).unwrap();
        assert_eq!(peer.spiffe_id, f.id("/client"));
        assert_eq!(peer.binding.unwrap().model.unwrap().version, "3.1");
        let peer = crate::svid::peer_identity(client.peer_certificates().unwrap()).unwrap();
        assert_eq!(peer.spiffe_id, f.id("/server"));

        // The server refuses a client bound to an older model, saying why.
        let (side, err) = handshake(
            server_config(&f, &for_clients),
            client_config(&f, &for_server, "3.0"),
        )
        .unwrap_err();
        assert_eq!(side, Side::Server);
        assert_eq!(
            PolicyError::in_handshake_error(&err).unwrap().to_string(),
            "spiffe://example.org/client is not authorized: model llama 3.0 does not satisfy model llama >= 3.1"
        );
        // tokio-rustls hands it over inside an io::Error.
        let io = std::io::Error::new(std::io::ErrorKind::InvalidData, err);
        assert!(matches!(
            PolicyError::in_handshake_error(&io),
            Some(PolicyError::Denied {
                reason: Denied::Model { .. },
                ..
            })
        ));

        // The client refuses a server its policy does not name.
        let wrong_server = Policy::spiffe_id(f.id("/elsewhere"));
        let (side, err) = handshake(
            server_config(&f, &for_clients),
            client_config(&f, &wrong_server, "3.1"),
        )
        .unwrap_err();
        assert_eq!(side, Side::Client);
        assert!(matches!(
            PolicyError::in_handshake_error(&err),
            Some(PolicyError::Denied { reason: Denied::SpiffeId { .. }, spiffe_id }) if *spiffe_id == f.id("/server")
        ));

        // A revocation refuses at the next handshake.
        let killed = for_clients.with_revocations(revoked(RevocationKind::Image, "client"));
        let (side, err) = handshake(
            server_config(&f, &killed),
            client_config(&f, &for_server, "3.1"),
        )
        .unwrap_err();
        assert_eq!(side, Side::Server);
        let refusal = PolicyError::in_handshake_error(&err).unwrap().to_string();
        assert!(
            refusal.contains("revoked by kill 0123456789abcdef (image client)"),
            "{refusal}"
        );
    }

    #[test]
    fn rustls_verifiers_still_check_the_chain_and_require_a_client_certificate() {
        let f = Fixture::new();
        let other = Fixture::new();
        let any = Policy::any_identity();
        // A client certificate from another CA of the same trust domain.
        let (side, err) =
            handshake(server_config(&f, &any), client_config(&other, &any, "3.1")).unwrap_err();
        // The client distrusts the server first (its bundle is the other CA's).
        assert_eq!(side, Side::Client);
        assert!(matches!(
            err,
            rustls::Error::InvalidCertificate(rustls::CertificateError::UnknownIssuer)
        ));
        // No client certificate at all.
        let anonymous = Arc::new(
            rustls::ClientConfig::builder_with_provider(provider())
                .with_safe_default_protocol_versions()
                .unwrap()
                .dangerous()
                .with_custom_certificate_verifier(any.server_verifier(f.bundle()))
                .with_no_client_auth(),
        );
        let (side, err) = handshake(server_config(&f, &any), anonymous).unwrap_err();
        assert_eq!(side, Side::Server);
        assert!(
            matches!(err, rustls::Error::NoCertificatesPresented),
            "{err:?}"
        );
    }
}
