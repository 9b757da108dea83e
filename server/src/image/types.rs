//! Checked newtypes for gold-image fields: once you hold one, it is valid.
//!
//! Constructors return the reason as a `String` on failure; the manifest
//! reader prefixes it with the field path.

use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use time::format_description::well_known::Rfc3339;
use time::{Date, Month, OffsetDateTime, Time};

/// Longest image name or version, in bytes.
const MAX_NAME_LEN: usize = 128;

/// Defines a string newtype with `as_str`, `Display` and `Debug`.
macro_rules! string_newtype {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(String);

        impl $name {
            /// The value as a string slice.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({:?})", stringify!($name), self.0)
            }
        }
    };
}

string_newtype!(
    /// A SHA-256 digest as 64 lowercase hex characters (an executable's digest).
    Sha256Hex
);

impl Sha256Hex {
    /// Checks `s` is exactly 64 lowercase hex characters.
    pub fn new(s: &str) -> Result<Sha256Hex, String> {
        if is_sha256_hex(s) {
            Ok(Sha256Hex(s.to_owned()))
        } else {
            Err("expected 64 lowercase hex characters".to_owned())
        }
    }
}

string_newtype!(
    /// A canonical tree digest, `sha256:<64 lowercase hex>` (models, app trees).
    TreeDigestStr
);

impl TreeDigestStr {
    /// Checks `s` is `sha256:` followed by 64 lowercase hex characters.
    pub fn new(s: &str) -> Result<TreeDigestStr, String> {
        match s.strip_prefix("sha256:") {
            Some(hex) if is_sha256_hex(hex) => Ok(TreeDigestStr(s.to_owned())),
            _ => Err("expected \"sha256:\" followed by 64 lowercase hex characters".to_owned()),
        }
    }
}

string_newtype!(
    /// An image name: `[A-Za-z0-9][A-Za-z0-9._-]*`, at most 128 bytes.
    ImageName
);

impl ImageName {
    /// Checks the image name syntax.
    pub fn new(s: &str) -> Result<ImageName, String> {
        check_name(s, "").map(|()| ImageName(s.to_owned()))
    }
}

string_newtype!(
    /// An image version: `[A-Za-z0-9][A-Za-z0-9._+-]*`, at most 128 bytes.
    ImageVersion
);

impl ImageVersion {
    /// Checks the image version syntax.
    pub fn new(s: &str) -> Result<ImageVersion, String> {
        check_name(s, "+").map(|()| ImageVersion(s.to_owned()))
    }
}

string_newtype!(
    /// An environment variable name: `[A-Za-z_][A-Za-z0-9_]*`.
    EnvName
);

impl EnvName {
    /// Checks the environment variable name syntax.
    pub fn new(s: &str) -> Result<EnvName, String> {
        let mut chars = s.chars();
        let first_ok = chars
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_');
        if first_ok && chars.all(|c| c.is_ascii_alphanumeric() || c == '_') && s.len() <= 256 {
            Ok(EnvName(s.to_owned()))
        } else {
            Err(format!(
                "{s:?} is not a valid environment variable name ([A-Za-z_][A-Za-z0-9_]*)"
            ))
        }
    }
}

/// How the executable runs the app tree (`code.interpreter`): which command
/// line grammar the agent reads its main program with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum Interpreter {
    /// CPython: the main program (script or `-m` module) must be in the app tree.
    Python,
    /// Node.js: the main script and every preload must be in the app tree.
    Node,
    /// The executable runs its own code and reads the app tree as data.
    None,
}

impl Interpreter {
    /// Parses `python`, `node` or `none`.
    pub fn new(s: &str) -> Result<Interpreter, String> {
        match s {
            "python" => Ok(Interpreter::Python),
            "node" => Ok(Interpreter::Node),
            "none" => Ok(Interpreter::None),
            _ => Err(format!("{s:?} is not one of python, node, none")),
        }
    }

    /// The lowercase name.
    pub fn as_str(self) -> &'static str {
        match self {
            Interpreter::Python => "python",
            Interpreter::Node => "node",
            Interpreter::None => "none",
        }
    }
}

impl fmt::Display for Interpreter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How much harm the agent could do: decides how many signatures it needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum RiskTier {
    /// Low risk.
    Low,
    /// Medium risk.
    Medium,
    /// High risk.
    High,
    /// Critical risk.
    Critical,
}

impl RiskTier {
    /// All tiers, lowest first.
    pub const ALL: [RiskTier; 4] = [
        RiskTier::Low,
        RiskTier::Medium,
        RiskTier::High,
        RiskTier::Critical,
    ];

    /// Parses `low`, `medium`, `high` or `critical`.
    pub fn new(s: &str) -> Result<RiskTier, String> {
        match s {
            "low" => Ok(RiskTier::Low),
            "medium" => Ok(RiskTier::Medium),
            "high" => Ok(RiskTier::High),
            "critical" => Ok(RiskTier::Critical),
            _ => Err(format!("{s:?} is not one of low, medium, high, critical")),
        }
    }

    /// The lowercase name.
    pub fn as_str(self) -> &'static str {
        match self {
            RiskTier::Low => "low",
            RiskTier::Medium => "medium",
            RiskTier::High => "high",
            RiskTier::Critical => "critical",
        }
    }
}

impl fmt::Display for RiskTier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The node attestors a gold image may restrict its agents to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum NodeAttestorKind {
    /// `join_token`.
    JoinToken,
    /// `x509pop`.
    X509Pop,
}

impl NodeAttestorKind {
    /// Parses `join_token` or `x509pop`.
    pub fn new(s: &str) -> Result<NodeAttestorKind, String> {
        match s {
            "join_token" => Ok(NodeAttestorKind::JoinToken),
            "x509pop" => Ok(NodeAttestorKind::X509Pop),
            _ => Err(format!("{s:?} is not one of join_token, x509pop")),
        }
    }

    /// The name used in manifests and node SPIFFE IDs.
    pub fn as_str(self) -> &'static str {
        match self {
            NodeAttestorKind::JoinToken => "join_token",
            NodeAttestorKind::X509Pop => "x509pop",
        }
    }
}

impl fmt::Display for NodeAttestorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An instant with one-second precision, written RFC 3339 in UTC
/// (`2027-06-30T23:59:59Z`).
///
/// Parsed from an RFC 3339 date-time with an offset (normalised to UTC,
/// fractional seconds refused) or from a bare date `2027-06-30`, which means
/// the last second of that day in UTC: a date is inclusive, like X.509's
/// `notAfter`.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Timestamp(i64);

impl Timestamp {
    /// Parses a date or an RFC 3339 date-time.
    pub fn parse(s: &str) -> Result<Timestamp, String> {
        if s.len() == 10 && !s.contains('T') {
            return parse_date(s)
                .map(|d| {
                    Timestamp(d.with_time(Time::MIDNIGHT).assume_utc().unix_timestamp() + 86_399)
                })
                .ok_or_else(|| format!("{s:?} is not a valid date (YYYY-MM-DD)"));
        }
        let t = OffsetDateTime::parse(s, &Rfc3339).map_err(|_| {
            format!("{s:?} is not a date (YYYY-MM-DD) or an RFC 3339 date-time with an offset")
        })?;
        if t.nanosecond() != 0 {
            return Err(format!("{s:?}: fractional seconds are not supported"));
        }
        Ok(Timestamp(t.unix_timestamp()))
    }

    /// Seconds since the Unix epoch.
    pub fn unix_seconds(self) -> i64 {
        self.0
    }

    /// The instant as a `SystemTime`.
    pub fn to_system_time(self) -> SystemTime {
        match u64::try_from(self.0) {
            Ok(s) => UNIX_EPOCH + Duration::from_secs(s),
            Err(_) => UNIX_EPOCH - Duration::from_secs(self.0.unsigned_abs()),
        }
    }
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Both fallbacks are unreachable for values built by `parse`, which
        // only accepts years 0000..=9999.
        let t = OffsetDateTime::from_unix_timestamp(self.0).map_err(|_| fmt::Error)?;
        let s = t.format(&Rfc3339).map_err(|_| fmt::Error)?;
        f.write_str(&s)
    }
}

impl fmt::Debug for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Timestamp({self})")
    }
}

/// `YYYY-MM-DD`.
fn parse_date(s: &str) -> Option<Date> {
    let b = s.as_bytes();
    if b.get(4) != Some(&b'-') || b.get(7) != Some(&b'-') {
        return None;
    }
    let num = |r: std::ops::Range<usize>| -> Option<u16> {
        let part = s.get(r)?;
        if !part.bytes().all(|c| c.is_ascii_digit()) {
            return None;
        }
        part.parse().ok()
    };
    let year = i32::from(num(0..4)?);
    let month = Month::try_from(u8::try_from(num(5..7)?).ok()?).ok()?;
    let day = u8::try_from(num(8..10)?).ok()?;
    Date::from_calendar_date(year, month, day).ok()
}

fn is_sha256_hex(s: &str) -> bool {
    s.len() == 64
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// `[A-Za-z0-9][A-Za-z0-9._-]*` plus `extra` characters, at most 128 bytes.
fn check_name(s: &str, extra: &str) -> Result<(), String> {
    let mut chars = s.chars();
    let first_ok = chars.next().is_some_and(|c| c.is_ascii_alphanumeric());
    let rest_ok = chars
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') || extra.contains(c));
    if first_ok && rest_ok && s.len() <= MAX_NAME_LEN {
        Ok(())
    } else {
        Err(format!(
            "{s:?} must start with a letter or digit, use only letters, digits, '.', '_', '-'{} and be at most {MAX_NAME_LEN} bytes",
            if extra.is_empty() { "" } else { ", '+'" }
        ))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "tests")]

    use super::*;

    #[test]
    fn digests() {
        let h = "ab".repeat(32);
        assert!(Sha256Hex::new(&h).is_ok());
        assert!(Sha256Hex::new(&h.to_uppercase()).is_err());
        assert!(Sha256Hex::new(&h[..62]).is_err());
        assert!(TreeDigestStr::new(&format!("sha256:{h}")).is_ok());
        assert!(TreeDigestStr::new(&h).is_err());
        assert!(TreeDigestStr::new(&format!("sha512:{h}")).is_err());
    }

    #[test]
    fn names() {
        assert!(ImageName::new("invoice-agent").is_ok());
        assert!(ImageName::new("a@b").is_err());
        assert!(ImageName::new("-a").is_err());
        assert!(ImageName::new("").is_err());
        assert!(ImageVersion::new("1.2.3+build.7").is_ok());
        assert!(ImageName::new("1.2.3+build.7").is_err());
        assert!(EnvName::new("_HOME1").is_ok());
        assert!(EnvName::new("1A").is_err());
        assert!(EnvName::new("A=B").is_err());
    }

    #[test]
    fn timestamps() {
        let d = Timestamp::parse("2027-06-30").unwrap();
        assert_eq!(d.to_string(), "2027-06-30T23:59:59Z");
        let t = Timestamp::parse("2027-06-30T12:00:00+02:00").unwrap();
        assert_eq!(t.to_string(), "2027-06-30T10:00:00Z");
        assert_eq!(Timestamp::parse(&t.to_string()).unwrap(), t);
        assert!(
            Timestamp::parse("2027-06-30T12:00:00").is_err(),
            "no offset"
        );
        assert!(Timestamp::parse("2027-06-30T12:00:00.5Z").is_err());
        assert!(Timestamp::parse("2027-02-30").is_err());
        assert!(Timestamp::parse("2027-6-300").is_err());
        assert!(d > t);
    }
}
