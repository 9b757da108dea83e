//! Authorization policies over verified credentials: who may call, bound to
//! what code and which model.
//!
//! A [`Policy`] is a tree of rules combined with [`Policy::and`] and
//! [`Policy::or`]. Each rule looks at the verified [`Identity`]: its SPIFFE
//! ID, and the Hallmark binding the issuer put in the credential (image,
//! model, code digest, risk tier), or a JWT-SVID's scopes and issuer. A
//! rule about the binding refuses credentials that carry none. Optionally, a policy also
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

use std::fmt;
use std::sync::Arc;
use std::time::SystemTime;

use hallmark_ca::bundle::{Bundle, SharedBundle};
use hallmark_ca::id::SpiffeId;
use hallmark_ca::tls::{SpiffeClientVerifier, SpiffeServerVerifier, SvidAuthorizer};
use hallmark_ca::verify::Usage;

use crate::binding::RiskTier;
use crate::revocation::Revocations;
use crate::svid::{Identity, SvidError, verify_jwt_svid, verify_x509_svid};
use crate::version::VersionReq;

mod denied;
mod rule;
#[cfg(test)]
mod tests;

pub use denied::Denied;
use rule::Rule;

/// An authorization policy (see the [module docs](self)). Cheap to clone.
#[derive(Clone)]
pub struct Policy {
    rule: Arc<Rule>,
    revocations: Option<Revocations>,
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

    /// A JWT-SVID whose `iss` is exactly `issuer` (never an X.509-SVID).
    /// Tokens carry `iss` when the issuer has `[oidc] issuer` configured;
    /// a relying party that also accepts tokens from other issuers sharing
    /// the trust domain's keys can pin the one it expects.
    pub fn jwt_issuer(issuer: &str) -> Policy {
        Policy::from_rule(Rule::Issuer(issuer.to_owned()))
    }

    /// Both this and `other` hold. The result consults this policy's
    /// revocations, or else `other`'s.
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

    /// This or `other` holds. The result consults this policy's
    /// revocations, or else `other`'s: a revoked credential is refused
    /// whichever alternative it satisfies.
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
