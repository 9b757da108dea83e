//! Bundle endpoint URLs (SPIFFE Federation 5.2.1.1 and 5.2.2.1): `https`,
//! no user info; host, port and path otherwise free.

use std::fmt;

use hyper::Uri;

/// A checked bundle endpoint URL.
#[derive(Clone, PartialEq, Eq)]
pub struct EndpointUrl {
    text: String,
    host: String,
    port: u16,
    path: String,
}

impl EndpointUrl {
    /// Parses and checks `text`; the error says what is wrong.
    pub fn parse(text: &str) -> Result<EndpointUrl, String> {
        let uri: Uri = text
            .parse()
            .map_err(|e| format!("not a URL ({e}): write https://host[:port]/path"))?;
        match uri.scheme_str() {
            Some("https") => {}
            Some(other) => {
                return Err(format!(
                    "the scheme is {other:?}: bundle endpoints are served over HTTPS, write https://"
                ));
            }
            None => return Err("no scheme: write https://host[:port]/path".into()),
        }
        let authority = uri
            .authority()
            .ok_or("no host: write https://host[:port]/path")?;
        if authority.as_str().contains('@') {
            return Err(
                "user info (user@) is not allowed in a bundle endpoint URL: remove it".into(),
            );
        }
        let host = authority.host();
        let host = host
            .strip_prefix('[')
            .and_then(|h| h.strip_suffix(']'))
            .unwrap_or(host);
        if host.is_empty() {
            return Err("no host: write https://host[:port]/path".into());
        }
        let port = authority.port_u16().unwrap_or(443);
        let path = uri
            .path_and_query()
            .map_or_else(|| "/".to_owned(), |p| p.as_str().to_owned());
        Ok(EndpointUrl {
            text: text.to_owned(),
            host: host.to_owned(),
            port,
            path,
        })
    }

    /// The URL as configured.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// The host, without brackets for IPv6.
    pub fn host(&self) -> &str {
        &self.host
    }

    /// The port (443 by default).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Path and query (`/` when empty).
    pub fn path(&self) -> &str {
        &self.path
    }

    /// The `Host` header value.
    pub(crate) fn host_header(&self) -> String {
        let host = if self.host.contains(':') {
            format!("[{}]", self.host)
        } else {
            self.host.clone()
        };
        if self.port == 443 {
            host
        } else {
            format!("{host}:{}", self.port)
        }
    }
}

impl fmt::Display for EndpointUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl fmt::Debug for EndpointUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "EndpointUrl({:?})", self.text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn https_urls_parse_and_others_are_refused_with_the_reason() {
        let url = EndpointUrl::parse("https://bundles.example.com:8443/td/bundle.json").unwrap();
        assert_eq!(
            (url.host(), url.port(), url.path()),
            ("bundles.example.com", 8443, "/td/bundle.json")
        );
        assert_eq!(url.host_header(), "bundles.example.com:8443");
        let url = EndpointUrl::parse("https://[::1]").unwrap();
        assert_eq!((url.host(), url.port(), url.path()), ("::1", 443, "/"));
        assert_eq!(url.host_header(), "[::1]");
        for (text, reason) in [
            ("http://example.com/", "HTTPS"),
            ("https://user@example.com/", "user info"),
            ("example.com/bundle", "https://host"),
            ("https://", "URL"),
        ] {
            let err = EndpointUrl::parse(text).unwrap_err();
            assert!(err.contains(reason), "{text}: {err}");
        }
    }
}
