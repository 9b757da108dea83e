//! Web PKI server certificates the issuer serves HTTPS with (the OIDC
//! discovery endpoint, the federation bundle endpoint's `https_web`
//! profile): read from PEM files, checked, and replaced in place on
//! `SIGHUP`, so a renewed certificate (ACME renews every 60 to 90 days)
//! needs no restart. Connections already open keep the certificate they
//! were made with; the next handshake gets the new one.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use arc_swap::ArcSwap;
use rustls::ServerConfig;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use crate::config::ConfigError;

/// A certificate chain and key from two files, replaceable while served.
#[derive(Debug)]
pub struct ReloadableCert {
    cert: PathBuf,
    key: PathBuf,
    /// The config keys the files come from, for errors.
    cert_key: &'static str,
    key_key: &'static str,
    current: ArcSwap<CertifiedKey>,
}

impl ReloadableCert {
    /// Reads and checks `cert` (PEM chain, leaf first) and `key` (PEM:
    /// PKCS#8, SEC1 or PKCS#1); errors name `cert_key` or `key_key`.
    pub fn load(
        cert: &Path,
        key: &Path,
        cert_key: &'static str,
        key_key: &'static str,
    ) -> Result<Arc<Self>, ConfigError> {
        let current = read(cert, key, cert_key, key_key)?;
        Ok(Arc::new(Self {
            cert: cert.to_owned(),
            key: key.to_owned(),
            cert_key,
            key_key,
            current: ArcSwap::from_pointee(current),
        }))
    }

    /// The two files.
    pub fn files(&self) -> (&Path, &Path) {
        (&self.cert, &self.key)
    }

    /// Reads the files again and serves what they hold now; on any error
    /// the certificate in use stays. `Ok(true)` when the chain changed.
    pub fn reload(&self) -> Result<bool, ConfigError> {
        let fresh = read(&self.cert, &self.key, self.cert_key, self.key_key)?;
        let changed = fresh.cert != self.current.load().cert;
        self.current.store(Arc::new(fresh));
        Ok(changed)
    }

    /// The leaf certificate served now (DER).
    pub fn leaf(&self) -> Vec<u8> {
        self.current
            .load()
            .cert
            .first()
            .map(|c| c.as_ref().to_vec())
            .unwrap_or_default()
    }

    /// A rustls server configuration serving this certificate, offering
    /// HTTP/1.1.
    pub fn server_config(self: &Arc<Self>) -> Result<Arc<ServerConfig>, ConfigError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| invalid(self.cert_key, e.to_string()))?
            .with_no_client_auth()
            .with_cert_resolver(self.clone());
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Arc::new(config))
    }
}

impl ResolvesServerCert for ReloadableCert {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current.load_full())
    }
}

fn invalid(key: &'static str, reason: String) -> ConfigError {
    ConfigError::Invalid { key, reason }
}

/// The chain and key of the two files, checked to belong together.
fn read(
    cert: &Path,
    key: &Path,
    cert_key: &'static str,
    key_key: &'static str,
) -> Result<CertifiedKey, ConfigError> {
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .and_then(|certs| certs.collect::<Result<_, _>>())
        .map_err(|e| invalid(cert_key, format!("{}: {e}", cert.display())))?;
    if chain.is_empty() {
        return Err(invalid(
            cert_key,
            format!("{} holds no CERTIFICATE block", cert.display()),
        ));
    }
    let private = PrivateKeyDer::from_pem_file(key).map_err(|e| {
        invalid(
            key_key,
            format!(
                "{}: {e} (expected a PEM private key: PKCS#8, SEC1 or PKCS#1)",
                key.display()
            ),
        )
    })?;
    let unusable = |e: rustls::Error| {
        invalid(
            key_key,
            format!(
                "{} / {} are not a usable certificate and key: {e}",
                cert.display(),
                key.display()
            ),
        )
    };
    let signing = rustls::crypto::ring::sign::any_supported_type(&private).map_err(unusable)?;
    let certified = CertifiedKey::new(chain, signing);
    certified.keys_match().map_err(unusable)?;
    Ok(certified)
}

#[cfg(test)]
mod tests;
