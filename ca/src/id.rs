//! SPIFFE identifiers: [`TrustDomain`] and [`SpiffeId`], parsed per the
//! SPIFFE-ID standard. Once you hold one, it is valid.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// The URI scheme of every SPIFFE ID, with its authority separator.
const SCHEME_PREFIX: &str = "spiffe://";

/// The maximum length of a SPIFFE ID in bytes (SPIFFE-ID standard, 2.3).
pub const MAX_SPIFFE_ID_LEN: usize = 2048;

/// Why a string is not a valid trust domain or SPIFFE ID.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum IdError {
    /// The input was empty.
    #[error("spiffe id is empty")]
    Empty,
    /// The input does not start with `spiffe://`.
    #[error("spiffe id must start with \"spiffe://\"")]
    WrongScheme,
    /// The trust domain part is empty.
    #[error("trust domain is empty")]
    EmptyTrustDomain,
    /// The trust domain contains a character outside `[a-z0-9._-]`.
    #[error(
        "trust domain contains {0:?}: only lowercase letters, digits, '.', '-' and '_' are allowed"
    )]
    BadTrustDomainChar(char),
    /// The authority carries a port (`:`), which SPIFFE IDs must not have.
    #[error("spiffe id must not contain a port")]
    PortNotAllowed,
    /// The authority carries user info (`@`), which SPIFFE IDs must not have.
    #[error("spiffe id must not contain user info")]
    UserInfoNotAllowed,
    /// The ID carries a query (`?`).
    #[error("spiffe id must not contain a query")]
    QueryNotAllowed,
    /// The ID carries a fragment (`#`).
    #[error("spiffe id must not contain a fragment")]
    FragmentNotAllowed,
    /// A path segment is empty (`//` in the path).
    #[error("path contains an empty segment")]
    EmptySegment,
    /// A path segment is `.` or `..`.
    #[error("path contains a dot segment ('.' or '..')")]
    DotSegment,
    /// A path segment contains a character outside `[A-Za-z0-9._-]`.
    #[error("path contains {0:?}: only letters, digits, '.', '-' and '_' are allowed in segments")]
    BadPathChar(char),
    /// The path ends with `/`.
    #[error("path must not end with '/'")]
    TrailingSlash,
    /// A path was given that does not start with `/`.
    #[error("path must be empty or start with '/'")]
    PathNotAbsolute,
    /// The ID is longer than [`MAX_SPIFFE_ID_LEN`] bytes.
    #[error("spiffe id is {0} bytes long, the maximum is 2048")]
    TooLong(usize),
    /// A trust domain was expected but a SPIFFE ID with a path was given.
    #[error("expected a trust domain, got a spiffe id with a path")]
    UnexpectedPath,
}

/// A SPIFFE trust domain name such as `example.org`.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TrustDomain(String);

impl TrustDomain {
    /// Parses a trust domain from `example.org` or `spiffe://example.org`.
    pub fn new(input: &str) -> Result<TrustDomain, IdError> {
        if input.is_empty() {
            return Err(IdError::EmptyTrustDomain);
        }
        if input.contains(":/") {
            let id = SpiffeId::parse(input)?;
            if !id.path().is_empty() {
                return Err(IdError::UnexpectedPath);
            }
            return Ok(id.trust_domain());
        }
        validate_trust_domain(input)?;
        Ok(TrustDomain(input.to_owned()))
    }

    /// The trust domain name, e.g. `example.org`.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The SPIFFE ID of the trust domain itself, e.g. `spiffe://example.org`.
    pub fn id(&self) -> SpiffeId {
        SpiffeId {
            uri: format!("{SCHEME_PREFIX}{}", self.0),
            td_len: self.0.len(),
        }
    }
}

impl fmt::Display for TrustDomain {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for TrustDomain {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TrustDomain({})", self.0)
    }
}

impl FromStr for TrustDomain {
    type Err = IdError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        TrustDomain::new(s)
    }
}

impl Serialize for TrustDomain {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for TrustDomain {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        TrustDomain::new(&s).map_err(serde::de::Error::custom)
    }
}

/// A SPIFFE ID such as `spiffe://example.org/hallmark/server`.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SpiffeId {
    /// The full URI.
    uri: String,
    /// Length of the trust domain part, which starts right after the scheme.
    td_len: usize,
}

impl SpiffeId {
    /// Parses a SPIFFE ID per the SPIFFE-ID standard.
    pub fn parse(input: &str) -> Result<SpiffeId, IdError> {
        if input.is_empty() {
            return Err(IdError::Empty);
        }
        if input.len() > MAX_SPIFFE_ID_LEN {
            return Err(IdError::TooLong(input.len()));
        }
        let rest = input
            .strip_prefix(SCHEME_PREFIX)
            .ok_or(IdError::WrongScheme)?;
        let (td, path) = match rest.find('/') {
            Some(i) => rest.split_at(i),
            None => (rest, ""),
        };
        // Query and fragment markers may appear in either part; name them first.
        if let Some(c) = rest.chars().find(|c| matches!(c, '?' | '#')) {
            return Err(if c == '?' {
                IdError::QueryNotAllowed
            } else {
                IdError::FragmentNotAllowed
            });
        }
        validate_trust_domain(td)?;
        validate_path(path)?;
        Ok(SpiffeId {
            uri: input.to_owned(),
            td_len: td.len(),
        })
    }

    /// Builds the SPIFFE ID `spiffe://<td><path>`; `path` is empty or starts with `/`.
    pub fn new(td: &TrustDomain, path: &str) -> Result<SpiffeId, IdError> {
        validate_path(path)?;
        let uri = format!("{SCHEME_PREFIX}{}{path}", td.as_str());
        if uri.len() > MAX_SPIFFE_ID_LEN {
            return Err(IdError::TooLong(uri.len()));
        }
        Ok(SpiffeId {
            uri,
            td_len: td.as_str().len(),
        })
    }

    /// The trust domain this ID belongs to.
    pub fn trust_domain(&self) -> TrustDomain {
        TrustDomain(self.td_str().to_owned())
    }

    /// The path, e.g. `/hallmark/server`; empty for a trust domain ID.
    pub fn path(&self) -> &str {
        self.uri
            .get(SCHEME_PREFIX.len() + self.td_len..)
            .unwrap_or_default()
    }

    /// The whole URI.
    pub fn as_str(&self) -> &str {
        &self.uri
    }

    /// True when this ID is in trust domain `td`.
    pub fn is_member_of(&self, td: &TrustDomain) -> bool {
        self.td_str() == td.as_str()
    }

    /// Segment-wise path prefix test: `/a/b` is under `/a`, `/ab` is not.
    /// An empty prefix (or `/`) matches every ID.
    pub fn has_path_prefix(&self, prefix: &str) -> bool {
        let prefix = prefix.strip_suffix('/').unwrap_or(prefix);
        let path = self.path();
        if prefix.is_empty() {
            return true;
        }
        match path.strip_prefix(prefix) {
            Some(rest) => rest.is_empty() || rest.starts_with('/'),
            None => false,
        }
    }

    fn td_str(&self) -> &str {
        self.uri
            .get(SCHEME_PREFIX.len()..SCHEME_PREFIX.len() + self.td_len)
            .unwrap_or_default()
    }
}

impl fmt::Display for SpiffeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.uri)
    }
}

impl fmt::Debug for SpiffeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SpiffeId({})", self.uri)
    }
}

impl FromStr for SpiffeId {
    type Err = IdError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        SpiffeId::parse(s)
    }
}

impl Serialize for SpiffeId {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.uri)
    }
}

impl<'de> Deserialize<'de> for SpiffeId {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        SpiffeId::parse(&s).map_err(serde::de::Error::custom)
    }
}

fn validate_trust_domain(td: &str) -> Result<(), IdError> {
    if td.is_empty() {
        return Err(IdError::EmptyTrustDomain);
    }
    for c in td.chars() {
        match c {
            'a'..='z' | '0'..='9' | '.' | '-' | '_' => {}
            ':' => return Err(IdError::PortNotAllowed),
            '@' => return Err(IdError::UserInfoNotAllowed),
            '?' => return Err(IdError::QueryNotAllowed),
            '#' => return Err(IdError::FragmentNotAllowed),
            other => return Err(IdError::BadTrustDomainChar(other)),
        }
    }
    Ok(())
}

fn validate_path(path: &str) -> Result<(), IdError> {
    if path.is_empty() {
        return Ok(());
    }
    let Some(rest) = path.strip_prefix('/') else {
        return Err(IdError::PathNotAbsolute);
    };
    if rest.is_empty() || rest.ends_with('/') {
        return Err(IdError::TrailingSlash);
    }
    for segment in rest.split('/') {
        if segment.is_empty() {
            return Err(IdError::EmptySegment);
        }
        if segment == "." || segment == ".." {
            return Err(IdError::DotSegment);
        }
        for c in segment.chars() {
            match c {
                'a'..='z' | 'A'..='Z' | '0'..='9' | '.' | '-' | '_' => {}
                '?' => return Err(IdError::QueryNotAllowed),
                '#' => return Err(IdError::FragmentNotAllowed),
                other => return Err(IdError::BadPathChar(other)),
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_valid_ids() {
        let id = SpiffeId::parse("spiffe://example.org/hallmark/server").unwrap();
        assert_eq!(id.trust_domain().as_str(), "example.org");
        assert_eq!(id.path(), "/hallmark/server");
        assert_eq!(id.to_string(), "spiffe://example.org/hallmark/server");
        let root = SpiffeId::parse("spiffe://a-b_c.9").unwrap();
        assert_eq!(root.path(), "");
        assert_eq!(root, TrustDomain::new("a-b_c.9").unwrap().id());
        let built = SpiffeId::new(&TrustDomain::new("example.org").unwrap(), "/A.b-c_d/e").unwrap();
        assert_eq!(built.as_str(), "spiffe://example.org/A.b-c_d/e");
    }

    #[test]
    fn rejects_invalid_ids_precisely() {
        let cases: &[(&str, IdError)] = &[
            ("", IdError::Empty),
            ("http://example.org/a", IdError::WrongScheme),
            ("SPIFFE://example.org/a", IdError::WrongScheme),
            ("spiffe:///a", IdError::EmptyTrustDomain),
            ("spiffe://Example.org/a", IdError::BadTrustDomainChar('E')),
            ("spiffe://example.org:8080/a", IdError::PortNotAllowed),
            ("spiffe://user@example.org/a", IdError::UserInfoNotAllowed),
            ("spiffe://example.org/a?x=1", IdError::QueryNotAllowed),
            ("spiffe://example.org/a#frag", IdError::FragmentNotAllowed),
            ("spiffe://example.org/a//b", IdError::EmptySegment),
            ("spiffe://example.org/a/./b", IdError::DotSegment),
            ("spiffe://example.org/a/..", IdError::DotSegment),
            ("spiffe://example.org/a b", IdError::BadPathChar(' ')),
            ("spiffe://example.org/a/", IdError::TrailingSlash),
            ("spiffe://example.org/", IdError::TrailingSlash),
        ];
        for (input, want) in cases {
            assert_eq!(SpiffeId::parse(input).as_ref(), Err(want), "{input}");
        }
        let long = format!("spiffe://example.org/{}", "a".repeat(2048));
        assert!(matches!(SpiffeId::parse(&long), Err(IdError::TooLong(_))));
    }

    #[test]
    fn trust_domain_forms() {
        let td = TrustDomain::new("spiffe://example.org").unwrap();
        assert_eq!(td, "example.org".parse().unwrap());
        assert_eq!(td.id().as_str(), "spiffe://example.org");
        assert_eq!(
            TrustDomain::new("spiffe://example.org/x"),
            Err(IdError::UnexpectedPath)
        );
        assert_eq!(TrustDomain::new(""), Err(IdError::EmptyTrustDomain));
        assert_eq!(
            TrustDomain::new("exa/mple"),
            Err(IdError::BadTrustDomainChar('/'))
        );
    }

    #[test]
    fn membership_and_prefix() {
        let td = TrustDomain::new("example.org").unwrap();
        let other = TrustDomain::new("example.com").unwrap();
        let id = SpiffeId::parse("spiffe://example.org/a/b").unwrap();
        assert!(id.is_member_of(&td));
        assert!(!id.is_member_of(&other));
        assert!(id.has_path_prefix("/a"));
        assert!(id.has_path_prefix("/a/"));
        assert!(id.has_path_prefix("/a/b"));
        assert!(id.has_path_prefix(""));
        assert!(!id.has_path_prefix("/a/b/c"));
        let ab = SpiffeId::parse("spiffe://example.org/ab").unwrap();
        assert!(!ab.has_path_prefix("/a"));
    }

    #[test]
    fn serde_as_string() {
        let id = SpiffeId::parse("spiffe://example.org/w").unwrap();
        let json = serde_json::to_string(&id).unwrap();
        assert_eq!(json, "\"spiffe://example.org/w\"");
        let back: SpiffeId = serde_json::from_str(&json).unwrap();
        assert_eq!(back, id);
        assert!(serde_json::from_str::<SpiffeId>("\"spiffe://x/a/\"").is_err());
        let td: TrustDomain = serde_json::from_str("\"example.org\"").unwrap();
        assert_eq!(serde_json::to_string(&td).unwrap(), "\"example.org\"");
    }
}
