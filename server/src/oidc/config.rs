//! `[oidc]` in `server.toml`: the raw section and its validated form.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::ServerConfig as TlsServerConfig;
use serde::Deserialize;

use hallmark_ca::jwt::JwtIssuer;

use super::JWKS_PATH;
use crate::config::ConfigError;
use crate::tls::ReloadableCert;

/// `[oidc]` in `server.toml`. Absent: no endpoint, and JWT-SVIDs carry no `iss`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OidcSection {
    /// The OpenID Connect issuer, exactly as relying parties are told it
    /// (`https://host[/path]`, no trailing slash): the `iss` of every
    /// JWT-SVID and the discovery document's `issuer`.
    pub issuer: Option<String>,
    /// `IP:port` to serve the discovery document and the JWKS on. Without
    /// it nothing is served (publish the documents elsewhere), but tokens
    /// still carry `iss`.
    pub listen: Option<String>,
    /// The JWKS URL the discovery document names, when a proxy or CDN
    /// publishes it somewhere else than `<issuer>/keys`.
    pub jwks_uri: Option<String>,
    /// Certificate chain (PEM) to serve HTTPS with; needs `key`.
    pub cert: Option<PathBuf>,
    /// The certificate's private key (PEM: PKCS#8, SEC1 or PKCS#1).
    pub key: Option<PathBuf>,
}

/// The validated `[oidc]` section.
#[derive(Debug, Clone)]
pub struct OidcSettings {
    /// The issuer (`iss`, discovery `issuer`).
    pub issuer: JwtIssuer,
    /// The discovery document's `jwks_uri`.
    pub jwks_uri: String,
    /// Where to serve the documents (`None`: not served here).
    pub listen: Option<SocketAddr>,
    /// HTTPS, when configured.
    pub tls: Option<OidcTls>,
}

/// The endpoint's TLS: the files it came from and the rustls config built
/// from them (so a bad certificate or key is refused by `config check`).
#[derive(Debug, Clone)]
pub struct OidcTls {
    /// The certificate chain file.
    pub cert: PathBuf,
    /// The private key file.
    pub key: PathBuf,
    /// The certificate served, which `SIGHUP` reads again.
    pub certificate: Arc<ReloadableCert>,
    /// The server configuration (HTTP/1.1 only).
    pub config: Arc<TlsServerConfig>,
}

impl OidcSettings {
    /// Whether `other` would run the same endpoint and mint the same `iss`
    /// (a `SIGHUP` reload names `oidc` as needing a restart otherwise).
    pub fn same_as(&self, other: &OidcSettings) -> bool {
        let files = |s: &OidcSettings| s.tls.as_ref().map(|t| (t.cert.clone(), t.key.clone()));
        self.issuer == other.issuer
            && self.jwks_uri == other.jwks_uri
            && self.listen == other.listen
            && files(self) == files(other)
    }
}

/// Checks `[oidc]`; `Ok(None)` when the section sets nothing.
pub(crate) fn resolve(section: &OidcSection) -> Result<Option<OidcSettings>, ConfigError> {
    let Some(issuer_text) = &section.issuer else {
        if section.listen.is_some()
            || section.jwks_uri.is_some()
            || section.cert.is_some()
            || section.key.is_some()
        {
            return Err(invalid(
                "oidc.issuer",
                "missing: [oidc] needs the issuer URL relying parties trust, e.g. issuer = \"https://oidc.example.com\"".into(),
            ));
        }
        return Ok(None);
    };
    let issuer = JwtIssuer::new(issuer_text).map_err(|e| invalid("oidc.issuer", e.to_string()))?;
    let jwks_uri = match &section.jwks_uri {
        None => issuer.url(JWKS_PATH),
        Some(text) => JwtIssuer::new(text)
            .map_err(|e| {
                invalid(
                    "oidc.jwks_uri",
                    e.to_string().replace("the issuer", "the JWKS URL"),
                )
            })?
            .to_string(),
    };
    let listen = match &section.listen {
        None => None,
        Some(text) => Some(text.parse::<SocketAddr>().map_err(|_| {
            invalid(
                "oidc.listen",
                format!("{text:?} is not an IP:port address, e.g. \"0.0.0.0:8443\""),
            )
        })?),
    };
    let tls = match (&section.cert, &section.key) {
        (None, None) => None,
        (Some(cert), Some(key)) => {
            if listen.is_none() {
                return Err(invalid(
                    "oidc.cert",
                    "a certificate without oidc.listen serves nothing: set oidc.listen too, or remove oidc.cert and oidc.key".into(),
                ));
            }
            let (certificate, config) = tls_server_config(cert, key, "oidc.cert", "oidc.key")?;
            Some(OidcTls {
                cert: cert.clone(),
                key: key.clone(),
                certificate,
                config,
            })
        }
        (Some(_), None) => {
            return Err(invalid(
                "oidc.key",
                "missing: oidc.cert needs oidc.key, the certificate's private key (PEM)".into(),
            ));
        }
        (None, Some(_)) => {
            return Err(invalid(
                "oidc.cert",
                "missing: oidc.key needs oidc.cert, the certificate chain (PEM)".into(),
            ));
        }
    };
    Ok(Some(OidcSettings {
        issuer,
        jwks_uri,
        listen,
        tls,
    }))
}

/// The certificate of `cert` and `key`, replaceable on `SIGHUP`, and a
/// rustls server config serving it (HTTP/1.1); errors name `cert_key` or
/// `key_key` (the config keys the files came from). The federation bundle
/// endpoint's https_web profile uses it too.
pub(crate) fn tls_server_config(
    cert: &Path,
    key: &Path,
    cert_key: &'static str,
    key_key: &'static str,
) -> Result<(Arc<ReloadableCert>, Arc<TlsServerConfig>), ConfigError> {
    let reloadable = ReloadableCert::load(cert, key, cert_key, key_key)?;
    let config = reloadable.server_config()?;
    Ok((reloadable, config))
}

fn invalid(key: &'static str, reason: String) -> ConfigError {
    ConfigError::Invalid { key, reason }
}
