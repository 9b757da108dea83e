//! [`JwtIssuer`]: the `iss` of JWT-SVIDs, which is also the OpenID
//! Connect issuer that relying parties outside SPIFFE (cloud workload
//! identity federation, OIDC libraries) discover keys from.
//!
//! Relying parties compare the issuer byte for byte with what they were
//! configured with (Azure matches it exactly; AWS and GCP build the
//! discovery URL by appending `/.well-known/openid-configuration`), so only
//! one spelling of a URL is accepted: `https://host[:port][/path]`, no
//! trailing slash, no query, fragment or user info, no `.` or `..` or empty
//! path segments, a lowercase host, and only unreserved characters (RFC
//! 3986: letters, digits, `-`, `.`, `_`, `~`) in the path. Plain `http` is
//! accepted only for a loopback host (`127.0.0.1` and the rest of
//! 127.0.0.0/8, `[::1]`, `localhost`), for tests.
//!
//! ```
//! use hallmark_ca::jwt::{IssuerError, JwtIssuer};
//! let issuer = JwtIssuer::new("https://oidc.example.com/hallmark")?;
//! assert_eq!(issuer.path(), "/hallmark");
//! assert_eq!(issuer.url("/keys"), "https://oidc.example.com/hallmark/keys");
//! assert!(matches!(JwtIssuer::new("https://oidc.example.com/"), Err(IssuerError::TrailingSlash(_))));
//! assert!(matches!(JwtIssuer::new("http://oidc.example.com"), Err(IssuerError::NotHttps(_))));
//! # Ok::<(), IssuerError>(())
//! ```

use std::fmt;
use std::net::{IpAddr, Ipv6Addr};

/// Longest issuer URL accepted, in bytes (AWS IAM takes provider URLs of
/// up to 255 characters; this bound is for sanity, not for AWS).
pub const MAX_ISSUER_BYTES: usize = 1024;

/// A checked issuer URL (see the [module docs](self)).
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct JwtIssuer {
    url: String,
    /// Where the path starts in `url` (`url.len()` when there is none).
    path_start: usize,
}

/// Why an issuer URL is refused. Each message says what to write instead.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum IssuerError {
    /// Empty, or longer than [`MAX_ISSUER_BYTES`].
    #[error("the issuer must be a URL of 1 to {MAX_ISSUER_BYTES} bytes")]
    Length,
    /// Not `https://` (and not `http://` with a loopback host).
    #[error(
        "{0:?}: the issuer must start with \"https://\" (plain http is accepted only for a loopback host such as http://127.0.0.1:8443, for tests)"
    )]
    NotHttps(String),
    /// Ends with `/`.
    #[error(
        "{0:?}: remove the trailing slash (relying parties compare the issuer byte for byte and append /.well-known/openid-configuration to it)"
    )]
    TrailingSlash(String),
    /// Has a query (`?`) or fragment (`#`).
    #[error("{0:?}: an issuer has no query or fragment (OpenID Connect Discovery 1.0, section 3)")]
    QueryOrFragment(String),
    /// Has user info (`user@host`).
    #[error("{0:?}: an issuer has no user name or password")]
    UserInfo(String),
    /// The host is missing or malformed, or not lowercase.
    #[error("{url:?}: bad host: {reason}")]
    Host {
        /// The URL.
        url: String,
        /// What is wrong.
        reason: &'static str,
    },
    /// The port is not a number from 1 to 65535.
    #[error("{0:?}: the port must be a number from 1 to 65535")]
    Port(String),
    /// The path has an empty, `.` or `..` segment, or a character outside the unreserved set.
    #[error(
        "{url:?}: bad path: {reason} (use only letters, digits, '-', '.', '_', '~' between single slashes)"
    )]
    Path {
        /// The URL.
        url: String,
        /// What is wrong.
        reason: String,
    },
}

impl JwtIssuer {
    /// Checks `url` (see the [module docs](self)).
    pub fn new(url: &str) -> Result<JwtIssuer, IssuerError> {
        if url.is_empty() || url.len() > MAX_ISSUER_BYTES {
            return Err(IssuerError::Length);
        }
        let owned = || url.to_owned();
        if url.contains(['?', '#']) {
            return Err(IssuerError::QueryOrFragment(owned()));
        }
        let (secure, rest) = if let Some(rest) = url.strip_prefix("https://") {
            (true, rest)
        } else if let Some(rest) = url.strip_prefix("http://") {
            (false, rest)
        } else {
            return Err(IssuerError::NotHttps(owned()));
        };
        let (authority, path) = match rest.find('/') {
            Some(i) => rest.split_at(i),
            None => (rest, ""),
        };
        if authority.contains('@') {
            return Err(IssuerError::UserInfo(owned()));
        }
        let host = check_authority(url, authority)?;
        if url.ends_with('/') {
            return Err(IssuerError::TrailingSlash(owned()));
        }
        if !secure && !is_loopback(host) {
            return Err(IssuerError::NotHttps(owned()));
        }
        check_path(url, path)?;
        Ok(JwtIssuer {
            url: url.to_owned(),
            path_start: url.len() - path.len(),
        })
    }

    /// The URL, exactly as configured (the `iss` claim and the discovery
    /// document's `issuer`).
    pub fn as_str(&self) -> &str {
        &self.url
    }

    /// The path part: empty, or `/` followed by segments.
    pub fn path(&self) -> &str {
        self.url.get(self.path_start..).unwrap_or_default()
    }

    /// The issuer followed by `suffix` (which should start with `/`), e.g.
    /// `url("/.well-known/openid-configuration")`.
    pub fn url(&self, suffix: &str) -> String {
        format!("{}{suffix}", self.url)
    }
}

impl fmt::Display for JwtIssuer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.url)
    }
}

impl fmt::Debug for JwtIssuer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("JwtIssuer").field(&self.url).finish()
    }
}

impl std::str::FromStr for JwtIssuer {
    type Err = IssuerError;

    fn from_str(s: &str) -> Result<JwtIssuer, IssuerError> {
        JwtIssuer::new(s)
    }
}

/// The host of `host[:port]` once both are well formed.
fn check_authority<'a>(url: &str, authority: &'a str) -> Result<&'a str, IssuerError> {
    let bad_host = |reason| IssuerError::Host {
        url: url.to_owned(),
        reason,
    };
    let (host, port) = if authority.starts_with('[') {
        let end = authority
            .find(']')
            .ok_or_else(|| bad_host("an IPv6 address needs its closing ']'"))?;
        let (host, rest) = authority.split_at(end + 1);
        let inner = host.get(1..host.len() - 1).unwrap_or_default();
        if inner.parse::<Ipv6Addr>().is_err() {
            return Err(bad_host("not an IPv6 address"));
        }
        match rest {
            "" => (host, None),
            _ => match rest.strip_prefix(':') {
                Some(port) => (host, Some(port)),
                None => return Err(bad_host("unexpected text after the IPv6 address")),
            },
        }
    } else {
        match authority.split_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (authority, None),
        }
    };
    if host.is_empty() {
        return Err(bad_host("missing"));
    }
    if !host.starts_with('[') {
        if host.bytes().any(|b| b.is_ascii_uppercase()) {
            return Err(bad_host(
                "write it in lowercase (relying parties compare the issuer byte for byte)",
            ));
        }
        let label_ok = |label: &str| {
            !label.is_empty()
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        };
        if !host.split('.').all(label_ok) {
            return Err(bad_host(
                "use a DNS name (letters, digits, '-' between dots) or an IP address",
            ));
        }
    }
    if let Some(port) = port {
        let valid = !port.is_empty()
            && port.bytes().all(|b| b.is_ascii_digit())
            && !port.starts_with('0')
            && port.parse::<u16>().is_ok_and(|p| p != 0);
        if !valid {
            return Err(IssuerError::Port(url.to_owned()));
        }
    }
    Ok(host)
}

fn check_path(url: &str, path: &str) -> Result<(), IssuerError> {
    let bad = |reason: String| IssuerError::Path {
        url: url.to_owned(),
        reason,
    };
    if path.is_empty() {
        return Ok(());
    }
    for segment in path.split('/').skip(1) {
        match segment {
            "" => return Err(bad("empty segment (\"//\")".into())),
            "." | ".." => return Err(bad(format!("{segment:?} segment"))),
            _ => {}
        }
        if let Some(c) = segment
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_' | '~')))
        {
            return Err(bad(format!("character {c:?}")));
        }
    }
    Ok(())
}

fn is_loopback(host: &str) -> bool {
    if host == "localhost" {
        return true;
    }
    let bare = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    bare.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_one_spelling_of_https_urls_and_loopback_http() {
        for url in [
            "https://oidc.example.com",
            "https://oidc.example.com:8443",
            "https://oidc.example.com/hallmark/prod-1",
            "https://s3.eu-west-1.amazonaws.com/my-bucket",
            "https://10.0.0.7",
            "https://[2001:db8::1]:443/x",
            "http://127.0.0.1:8443",
            "http://127.0.0.2",
            "http://localhost:1234/td",
            "http://[::1]:8443",
        ] {
            let issuer = JwtIssuer::new(url).unwrap_or_else(|e| panic!("{url}: {e}"));
            assert_eq!(issuer.as_str(), url);
            assert_eq!(issuer.to_string(), url);
        }
        let issuer: JwtIssuer = "https://oidc.example.com:8443/a/b".parse().unwrap();
        assert_eq!(issuer.path(), "/a/b");
        assert_eq!(
            issuer.url("/keys"),
            "https://oidc.example.com:8443/a/b/keys"
        );
        assert_eq!(JwtIssuer::new("https://x.org").unwrap().path(), "");
    }

    #[test]
    fn refuses_every_other_spelling_with_the_reason() {
        let cases: &[(&str, &str)] = &[
            ("", "1 to"),
            ("oidc.example.com", "must start with \"https://\""),
            ("HTTPS://oidc.example.com", "must start with \"https://\""),
            ("ftp://oidc.example.com", "must start with \"https://\""),
            ("http://oidc.example.com", "loopback"),
            ("http://10.0.0.1:8080", "loopback"),
            ("https://oidc.example.com/", "trailing slash"),
            ("https://oidc.example.com/td/", "trailing slash"),
            ("https://oidc.example.com?x=1", "no query"),
            ("https://oidc.example.com/td#frag", "no query"),
            ("https://user@oidc.example.com", "user name"),
            ("https://", "missing"),
            ("https://:443", "missing"),
            ("https://OIDC.example.com", "lowercase"),
            ("https://oidc..example.com", "DNS name"),
            ("https://oidc_x.example.com", "DNS name"),
            ("https://-oidc.example.com", "DNS name"),
            ("https://[::1", "closing"),
            ("https://[zz::1]", "not an IPv6"),
            ("https://[::1]x", "unexpected"),
            ("https://oidc.example.com:", "port"),
            ("https://oidc.example.com:0", "port"),
            ("https://oidc.example.com:065", "port"),
            ("https://oidc.example.com:65536", "port"),
            ("https://oidc.example.com:https", "port"),
            ("https://oidc.example.com//td", "empty segment"),
            ("https://oidc.example.com/a/../b", "\"..\""),
            ("https://oidc.example.com/./b", "\".\""),
            ("https://oidc.example.com/a b", "' '"),
            ("https://oidc.example.com/%41", "'%'"),
            ("https://oidc.example.com/é", "'é'"),
        ];
        for (url, expected) in cases {
            let err = JwtIssuer::new(url).expect_err(url);
            assert!(err.to_string().contains(expected), "{url}: {err}");
        }
        let long = format!("https://x.org/{}", "a".repeat(MAX_ISSUER_BYTES));
        assert_eq!(JwtIssuer::new(&long), Err(IssuerError::Length));
    }
}
