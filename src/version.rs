//! Versions of gold images and models, compared numerically.
//!
//! A [`Version`] is one or more dot-separated decimal components: `3`,
//! `3.1`, `2024.07.15`. Components compare as numbers, left to right, and a
//! missing trailing component counts as 0, so `3.10 > 3.9` and
//! `3.1 == 3.1.0`. Leading zeros do not matter (`2024.07 == 2024.7`).
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

/// A numeric dotted version (see the [module docs](self)).
#[derive(Debug, Clone)]
pub struct Version {
    components: Vec<u64>,
    text: String,
}

/// Why a version or version requirement could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum VersionError {
    /// The version is not dot-separated decimal numbers.
    #[error("{0:?} is not a numeric dotted version (such as 3, 3.1 or 2024.07.15)")]
    NotNumeric(String),
    /// A component does not fit in 64 bits.
    #[error("{0:?} has a component too large to compare")]
    TooLarge(String),
    /// A requirement is not `*`, or comparisons (`>=`, `>`, `<=`, `<`, `=`)
    /// joined by commas.
    #[error("{0:?} is not a version requirement (such as \"*\", \">= 3.1\" or \">= 3.1, < 4\")")]
    BadRequirement(String),
}

impl Version {
    /// Parses a numeric dotted version.
    pub fn parse(text: &str) -> Result<Version, VersionError> {
        let mut components = Vec::new();
        for part in text.split('.') {
            if part.is_empty() || !part.bytes().all(|b| b.is_ascii_digit()) {
                return Err(VersionError::NotNumeric(text.to_owned()));
            }
            components.push(
                part.parse::<u64>()
                    .map_err(|_| VersionError::TooLarge(text.to_owned()))?,
            );
        }
        Ok(Version {
            components,
            text: text.to_owned(),
        })
    }

    /// The numeric components, as written (trailing zeros kept).
    pub fn components(&self) -> &[u64] {
        &self.components
    }

    /// The version as it was written.
    pub fn as_str(&self) -> &str {
        &self.text
    }
}

impl FromStr for Version {
    type Err = VersionError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Version::parse(s)
    }
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl Ord for Version {
    fn cmp(&self, other: &Self) -> Ordering {
        let len = self.components.len().max(other.components.len());
        for i in 0..len {
            let a = self.components.get(i).copied().unwrap_or(0);
            let b = other.components.get(i).copied().unwrap_or(0);
            match a.cmp(&b) {
                Ordering::Equal => {}
                unequal => return unequal,
            }
        }
        Ordering::Equal
    }
}

impl PartialOrd for Version {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl PartialEq for Version {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl Eq for Version {}

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
    fn components_compare_as_numbers_and_missing_ones_are_zero() {
        assert!(v("3.10") > v("3.9"));
        assert!(v("10") > v("9.99"));
        assert_eq!(v("3.1"), v("3.1.0"));
        assert_eq!(v("3.1.0.0"), v("3.1"));
        assert!(v("3.1.1") > v("3.1"));
        assert_eq!(v("2024.07"), v("2024.7"));
        assert!(v("0.0.1") > v("0"));
        assert_eq!(v("3.1.0").to_string(), "3.1.0");
        assert_eq!(v("3.1.0").components(), &[3, 1, 0]);
    }

    #[test]
    fn non_numeric_versions_are_refused() {
        for bad in [
            "",
            ".",
            "1.",
            ".1",
            "1..2",
            "v1",
            "1.0.0-rc.1",
            "2024-07",
            "1 .2",
            "+1",
            "-1",
            "1.a",
        ] {
            assert_eq!(
                Version::parse(bad).unwrap_err(),
                VersionError::NotNumeric(bad.into()),
                "{bad:?}"
            );
        }
        assert!(matches!(
            Version::parse("1.99999999999999999999"),
            Err(VersionError::TooLarge(_))
        ));
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
