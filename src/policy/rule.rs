//! The rules of a [`Policy`](super::Policy) and how each one judges an
//! [`Identity`].

use std::collections::BTreeSet;
use std::fmt;

use hallmark_ca::id::SpiffeId;

use super::Denied;
use crate::binding::RiskTier;
use crate::svid::Identity;
use crate::version::VersionReq;

#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Rule {
    Any,
    SpiffeIdIn(BTreeSet<SpiffeId>),
    SpiffeIdUnder(SpiffeId),
    Image { name: String, req: VersionReq },
    Model { name: String, req: VersionReq },
    CodeDigestIn(BTreeSet<String>),
    ModelDigestIn(BTreeSet<String>),
    RiskTierAtMost(RiskTier),
    Scope(String),
    Issuer(String),
    All(Vec<Rule>),
    AnyOf(Vec<Rule>),
}

impl Rule {
    pub(super) fn check(&self, identity: &Identity) -> Result<(), Denied> {
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
            Rule::Issuer(expected) if identity.issuer() == Some(expected.as_str()) => Ok(()),
            Rule::Issuer(expected) => Err(Denied::Issuer {
                expected: expected.clone(),
                found: identity.issuer().map(str::to_owned),
            }),
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
            Rule::Issuer(issuer) => write!(f, "jwt issuer {issuer}"),
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
