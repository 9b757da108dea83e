//! What a version in a binding means: gold image and model versions,
//! compared numerically. One rule for everyone who compares them: the
//! issuer (registration, kill switch), the agent (kill switch) and relying
//! parties (`hallmark::version`, which re-exports [`Version`]).
//!
//! A [`Version`] is one or more dot-separated decimal components: `3`,
//! `3.1`, `2024.07.15`. Components compare as numbers, left to right, and a
//! missing trailing component counts as 0, so `3.10 > 3.9` and
//! `3.1 == 3.1.0`. Leading zeros do not matter (`2024.07 == 2024.7`); the
//! [canonical](Version::canonical) spelling has none. A version string that
//! is not a `Version` (`1.0.0-rc.1`, `v2`) equals only itself
//! ([`same_version`]).
//!
//! ```
//! use hallmark_ca::version::{Version, comparison_key, same_version};
//! let v: Version = "3.10".parse()?;
//! assert!(v > "3.9".parse()?);
//! assert_eq!("3.1".parse::<Version>()?, "3.1.0".parse()?);
//! assert_eq!(Version::parse("1.0.00")?.canonical(), "1.0.0");
//! assert!(same_version("1.0.00", "1.0"));
//! assert_eq!(comparison_key("1.0.00"), comparison_key("1"));
//! assert!(!same_version("1.0-rc.1", "1.0-rc.01"));
//! # Ok::<(), hallmark_ca::version::VersionError>(())
//! ```

use std::borrow::Cow;
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
    /// A requirement (`hallmark::version::VersionReq`) is not `*`, or
    /// comparisons (`>=`, `>`, `<=`, `<`, `=`) joined by commas.
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

    /// The spelling without leading zeros (`1.0.00` is `1.0.0`, `2024.07`
    /// is `2024.7`); trailing components are kept, so `1.0` stays `1.0`.
    pub fn canonical(&self) -> String {
        let parts: Vec<String> = self.components.iter().map(u64::to_string).collect();
        parts.join(".")
    }
}

/// Whether two version strings name the same version: numerically when both
/// are [`Version`]s, else only when they are the same text.
pub fn same_version(a: &str, b: &str) -> bool {
    comparison_key(a) == comparison_key(b)
}

/// A key that is equal for two version strings exactly when
/// [`same_version`] holds, for indexing by version: a [`Version`] without
/// leading zeros and trailing zero components (`1.0.00` and `1` are `1`,
/// `0.0` is `0`), any other string as written (it never parses as a
/// `Version`, so it never collides with one).
pub fn comparison_key(text: &str) -> Cow<'_, str> {
    match Version::parse(text) {
        Ok(version) => {
            let significant = version
                .components
                .iter()
                .rposition(|&c| c != 0)
                .map_or(1, |last| last + 1);
            let parts: Vec<String> = version.components[..significant]
                .iter()
                .map(u64::to_string)
                .collect();
            Cow::Owned(parts.join("."))
        }
        Err(_) => Cow::Borrowed(text),
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
    fn canonical_drops_leading_zeros_only() {
        for (written, canonical) in [
            ("1.0.0", "1.0.0"),
            ("1.0.00", "1.0.0"),
            ("01.0", "1.0"),
            ("2024.07.15", "2024.7.15"),
            ("0", "0"),
            ("000", "0"),
            ("1.0", "1.0"),
        ] {
            assert_eq!(v(written).canonical(), canonical, "{written}");
            assert_eq!(v(written), v(canonical));
        }
    }

    #[test]
    fn same_version_is_numeric_for_versions_and_textual_otherwise() {
        assert!(same_version("1.0.0", "1.0.00"));
        assert!(same_version("1", "1.0.0"));
        assert!(!same_version("1.0.0", "1.0.1"));
        assert!(same_version("1.0-rc.1", "1.0-rc.1"));
        assert!(!same_version("1.0-rc.1", "1.0-rc.01"));
        assert!(!same_version("1.0", "1.0-rc.1"));
        assert!(!same_version("v1", "1"));
    }

    #[test]
    fn comparison_keys_are_equal_exactly_when_versions_are() {
        for (text, key) in [
            ("1.0.00", "1"),
            ("1", "1"),
            ("0.0", "0"),
            ("0", "0"),
            ("01.020.0", "1.20"),
            ("2024.07.15", "2024.7.15"),
            ("1.0-rc.1", "1.0-rc.1"),
        ] {
            assert_eq!(comparison_key(text), key, "{text}");
        }
        let texts = [
            "1", "1.0", "1.0.00", "01", "1.1", "1.01.0", "10", "0", "0.0", "1-rc", "v1",
        ];
        for a in texts {
            for b in texts {
                let numeric = match (Version::parse(a), Version::parse(b)) {
                    (Ok(x), Ok(y)) => x == y,
                    _ => a == b,
                };
                assert_eq!(same_version(a, b), numeric, "{a} {b}");
            }
        }
    }
}
