//! Versions of gold images and models, compared numerically.
//!
//! [`Version`] is `hallmark_ca::version::Version`: the issuer (which
//! refuses a second spelling of a registered version), the agents and the
//! kill switch compare versions by the same rule as relying parties do here.
//!
//! A [`Version`] is one or more dot-separated decimal components: `3`,
//! `3.1`, `2024.07.15`. Components compare as numbers, left to right, and a
//! missing trailing component counts as 0, so `3.10 > 3.9` and
//! `3.1 == 3.1.0`. Leading zeros do not matter (`2024.07 == 2024.7`); an
//! image registered today spells its version without them.
//!
//! Anything else (`2024-07`, `1.0.0-rc.1`, `v2`) is not a [`Version`]: a
//! credential whose binding carries such a version never satisfies a
//! minimum or maximum ([`VersionReq::matches_str`] answers `false`), because
//! guessing how `1.0.0-rc.1` relates to `1.0.0` is how a pre-release slips
//! past `>= 1.0.0`. Use [`VersionReq::Any`] to accept any version string.
//!
//! ```
//! use hallmark::version::{Version, VersionReq};
//! let v: Version = "3.10".parse()?;
//! assert!(v > "3.9".parse()?);
//! assert_eq!("3.1".parse::<Version>()?, "3.1.0".parse()?);
//!
//! let req: VersionReq = ">= 3.1, < 4".parse()?;
//! assert!(req.matches_str("3.1.2"));
//! assert!(!req.matches_str("4.0"));
//! assert!(!req.matches_str("3.1-rc1"));
//! # Ok::<(), hallmark::version::VersionError>(())
//! ```

use std::cmp::Ordering;
use std::fmt;
use std::str::FromStr;

pub use hallmark_ca::version::{Version, VersionError, comparison_key, same_version};

/// A requirement on a version: any, or a conjunction of comparisons.
///
/// Parsed from `*` or from comparisons joined by commas, each one of `>=`,
/// `>`, `<=`, `<`, `=` followed by a [`Version`]: `>= 3.1`, `>= 3.1, < 4`,
/// `= 2.0`. Whitespace around operators and commas is ignored.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum VersionReq {
    /// Any version string at all, numeric or not.
    Any,
    /// Every comparison holds (a numeric version is required).
    All(Vec<Comparison>),
}

/// One comparison of a [`VersionReq`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Comparison {
    /// How to compare.
    pub op: Op,
    /// With what.
    pub version: Version,
}

/// A comparison operator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Op {
    /// `>=`
    AtLeast,
    /// `>`
    Above,
    /// `<=`
    AtMost,
    /// `<`
    Below,
    /// `=` (numerically: `3.1 = 3.1.0`)
    Exactly,
}

impl Op {
    fn as_str(self) -> &'static str {
        match self {
            Op::AtLeast => ">=",
            Op::Above => ">",
            Op::AtMost => "<=",
            Op::Below => "<",
            Op::Exactly => "=",
        }
    }

    fn holds(self, ordering: Ordering) -> bool {
        match self {
            Op::AtLeast => ordering != Ordering::Less,
            Op::Above => ordering == Ordering::Greater,
            Op::AtMost => ordering != Ordering::Greater,
            Op::Below => ordering == Ordering::Less,
            Op::Exactly => ordering == Ordering::Equal,
        }
    }
}

impl VersionReq {
    /// `>= version`.
    pub fn at_least(version: Version) -> VersionReq {
        VersionReq::All(vec![Comparison {
            op: Op::AtLeast,
            version,
        }])
    }

    /// `= version` (numerically).
    pub fn exactly(version: Version) -> VersionReq {
        VersionReq::All(vec![Comparison {
            op: Op::Exactly,
            version,
        }])
    }

    /// This requirement and also `< version`.
    pub fn below(self, version: Version) -> VersionReq {
        let below = Comparison {
            op: Op::Below,
            version,
        };
        match self {
            VersionReq::Any => VersionReq::All(vec![below]),
            VersionReq::All(mut all) => {
                all.push(below);
                VersionReq::All(all)
            }
        }
    }

    /// Whether `version` satisfies every comparison.
    pub fn matches(&self, version: &Version) -> bool {
        match self {
            VersionReq::Any => true,
            VersionReq::All(all) => all.iter().all(|c| c.op.holds(version.cmp(&c.version))),
        }
    }

    /// Whether the version string `text` satisfies the requirement: always
    /// for [`VersionReq::Any`]; otherwise `text` must be a numeric
    /// [`Version`] that satisfies every comparison.
    pub fn matches_str(&self, text: &str) -> bool {
        match self {
            VersionReq::Any => true,
            VersionReq::All(_) => Version::parse(text).is_ok_and(|v| self.matches(&v)),
        }
    }
}

impl FromStr for VersionReq {
    type Err = VersionError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || VersionError::BadRequirement(s.to_owned());
        if s.trim() == "*" {
            return Ok(VersionReq::Any);
        }
        let mut all = Vec::new();
        for part in s.split(',') {
            let part = part.trim();
            let (op, rest) = [
                (">=", Op::AtLeast),
                ("<=", Op::AtMost),
                (">", Op::Above),
                ("<", Op::Below),
                ("=", Op::Exactly),
            ]
            .into_iter()
            .find_map(|(prefix, op)| part.strip_prefix(prefix).map(|rest| (op, rest)))
            .ok_or_else(bad)?;
            let version = Version::parse(rest.trim())?;
            all.push(Comparison { op, version });
        }
        Ok(VersionReq::All(all))
    }
}

impl fmt::Display for VersionReq {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            VersionReq::Any => f.write_str("*"),
            VersionReq::All(all) => {
                for (i, c) in all.iter().enumerate() {
                    if i > 0 {
                        f.write_str(", ")?;
                    }
                    write!(f, "{} {}", c.op.as_str(), c.version)?;
                }
                Ok(())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(s: &str) -> Version {
        s.parse().unwrap()
    }

    #[test]
    fn requirements_parse_match_and_print() {
        let req: VersionReq = ">= 3.1, < 4".parse().unwrap();
        assert_eq!(req.to_string(), ">= 3.1, < 4");
        assert!(req.matches_str("3.1"));
        assert!(req.matches_str("3.1.0"));
        assert!(req.matches_str("3.99"));
        assert!(!req.matches_str("3.0.9"));
        assert!(!req.matches_str("4"));
        assert!(!req.matches_str("4.0.0"));
        // Not numeric: never satisfies a comparison, always satisfies `*`.
        assert!(!req.matches_str("3.5-rc1"));
        assert!(VersionReq::Any.matches_str("3.5-rc1"));
        assert_eq!("*".parse::<VersionReq>().unwrap(), VersionReq::Any);

        let exact: VersionReq = "=2".parse().unwrap();
        assert!(exact.matches_str("2.0"));
        assert!(!exact.matches_str("2.0.1"));
        let open: VersionReq = ">1, <=2".parse().unwrap();
        assert!(!open.matches_str("1.0"));
        assert!(open.matches_str("1.0.1"));
        assert!(open.matches_str("2"));
        assert!(!open.matches_str("2.0.1"));

        assert_eq!(
            VersionReq::at_least(v("1.2")).below(v("2")),
            ">=1.2,<2".parse().unwrap()
        );
        assert_eq!(
            VersionReq::Any.below(v("2")),
            "<2".parse::<VersionReq>().unwrap()
        );
        assert!(VersionReq::exactly(v("1")).matches(&v("1.0")));

        for bad in ["", "3.1", "~3", ">=", ">= 3.1,", "=> 3"] {
            assert!(bad.parse::<VersionReq>().is_err(), "{bad:?}");
        }
    }
}
