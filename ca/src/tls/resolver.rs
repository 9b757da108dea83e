//! [`SvidCertResolver`]: our own SVID for rustls, swappable on rotation.

use std::fmt;
use std::sync::{Arc, PoisonError, RwLock};

use rustls::SignatureScheme;
use rustls::client::ResolvesClientCert;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

use crate::error::CaError;

/// Holds the current certificate chain and key for both sides of a TLS
/// connection. Clones share the same slot, so `set` after a rotation is seen
/// by the next handshake of every config holding the resolver.
#[derive(Clone, Default)]
pub struct SvidCertResolver {
    current: Arc<RwLock<Option<Arc<CertifiedKey>>>>,
}

impl SvidCertResolver {
    /// An empty resolver: a client presents no certificate, a server aborts the handshake.
    pub fn new() -> SvidCertResolver {
        SvidCertResolver::default()
    }

    /// Installs `cert_chain` (leaf first, DER) with its PKCS#8 private key,
    /// loaded by the ring provider; the key must match the leaf.
    pub fn set(&self, cert_chain: Vec<Vec<u8>>, key_pkcs8_der: &[u8]) -> Result<(), CaError> {
        if cert_chain.is_empty() {
            return Err(CaError::EmptyChain);
        }
        let chain: Vec<CertificateDer<'static>> =
            cert_chain.into_iter().map(CertificateDer::from).collect();
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key_pkcs8_der.to_vec()));
        let provider = rustls::crypto::ring::default_provider();
        let certified = CertifiedKey::from_der(chain, key, &provider).map_err(|e| match e {
            rustls::Error::InconsistentKeys(_) => CaError::KeyMismatch,
            other => CaError::Tls(other),
        })?;
        *self.current.write().unwrap_or_else(PoisonError::into_inner) = Some(Arc::new(certified));
        Ok(())
    }

    /// Removes the certificate.
    pub fn clear(&self) {
        *self.current.write().unwrap_or_else(PoisonError::into_inner) = None;
    }

    /// The current certificate and key, if set.
    pub fn current(&self) -> Option<Arc<CertifiedKey>> {
        self.current
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

impl fmt::Debug for SvidCertResolver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SvidCertResolver")
            .field("has_cert", &self.current().is_some())
            .finish()
    }
}

impl ResolvesServerCert for SvidCertResolver {
    fn resolve(&self, _client_hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.current()
    }
}

impl ResolvesClientCert for SvidCertResolver {
    fn resolve(
        &self,
        _root_hint_subjects: &[&[u8]],
        _sigschemes: &[SignatureScheme],
    ) -> Option<Arc<CertifiedKey>> {
        self.current()
    }

    fn has_certs(&self) -> bool {
        self.current().is_some()
    }
}
