//! x509pop: the node holds a certificate (and its key) from a provisioning CA
//! the issuer trusts; it proves possession by signing a fresh nonce.
//!
//! The signed message is domain separated and bound to the key the node SVID
//! will certify:
//!
//! ```text
//! "hallmark x509pop v1" 0x00 || nonce || SHA-256(SubjectPublicKeyInfo of the node SVID key)
//! ```
//!
//! so a signature cannot be replayed for another attestation nor lifted onto
//! a different SVID key. The node ID is the SHA-256 of the node certificate:
//! the same node always gets the same agent ID.

use std::time::{SystemTime, UNIX_EPOCH};

use ring::rand::{SecureRandom, SystemRandom};
use ring::signature::{
    ECDSA_P256_SHA256_ASN1_SIGNING, ECDSA_P384_SHA384_ASN1_SIGNING, EcdsaKeyPair, Ed25519KeyPair,
    RsaKeyPair,
};
use rustls_pki_types::{CertificateDer, TrustAnchor, UnixTime};
use sha2::{Digest, Sha256};
use webpki::{EndEntityCert, KeyUsage};

/// Domain separation prefix of the challenge message.
pub const CHALLENGE_CONTEXT: &[u8] = b"hallmark x509pop v1\0";

/// Errors of x509pop on either side.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum X509PopError {
    /// No provisioning CA certificate was configured, or one does not parse.
    #[error("provisioning CA certificate unusable: {0}")]
    BadRoot(String),
    /// The node presented no certificate.
    #[error("no node certificate presented")]
    EmptyChain,
    /// The node certificate does not parse.
    #[error("node certificate malformed: {0}")]
    Malformed(String),
    /// The node certificate does not chain to a provisioning CA, is expired,
    /// not yet valid, or not usable for client authentication.
    #[error("node certificate not trusted: {0}")]
    Untrusted(String),
    /// The challenge signature does not verify with the node certificate's key.
    #[error("challenge signature does not verify with the node certificate's key")]
    BadSignature,
    /// The node's private key is not PKCS#8 P-256, P-384 or Ed25519, or does
    /// not match its certificate.
    #[error("node key unusable: {0}")]
    BadKey(String),
    /// The PEM input has no certificate.
    #[error("no CERTIFICATE block in the node certificate PEM")]
    NoCertificate,
    /// The system random source failed.
    #[error("system randomness unavailable")]
    Random,
}

/// A node the issuer accepted: its certificate chained to a provisioning CA.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct X509PopNode {
    /// Lowercase hex SHA-256 of the node certificate (DER).
    pub node_id: String,
}

/// The issuer's side: trusted provisioning CAs.
#[derive(Debug)]
pub struct X509PopVerifier {
    roots: Vec<TrustAnchor<'static>>,
}

impl X509PopVerifier {
    /// Trusts the given provisioning CA certificates (DER).
    pub fn new(roots_der: Vec<Vec<u8>>) -> Result<Self, X509PopError> {
        if roots_der.is_empty() {
            return Err(X509PopError::BadRoot("no certificate given".into()));
        }
        let roots = roots_der
            .iter()
            .map(|der| {
                webpki::anchor_from_trusted_cert(&CertificateDer::from(der.as_slice()))
                    .map(|a| a.to_owned())
                    .map_err(|e| X509PopError::BadRoot(format!("{e:?}")))
            })
            .collect::<Result<_, _>>()?;
        Ok(Self { roots })
    }

    /// Verifies a node's chain (leaf first) at `now`.
    pub fn verify_chain(
        &self,
        chain: &[Vec<u8>],
        now: SystemTime,
    ) -> Result<X509PopNode, X509PopError> {
        let leaf = chain.first().ok_or(X509PopError::EmptyChain)?;
        let leaf_der = CertificateDer::from(leaf.as_slice());
        let end_entity = EndEntityCert::try_from(&leaf_der)
            .map_err(|e| X509PopError::Malformed(format!("{e:?}")))?;
        let intermediates: Vec<CertificateDer<'_>> = chain[1..]
            .iter()
            .map(|c| CertificateDer::from(c.as_slice()))
            .collect();
        let time = UnixTime::since_unix_epoch(now.duration_since(UNIX_EPOCH).unwrap_or_default());
        end_entity
            .verify_for_usage(
                webpki::ALL_VERIFICATION_ALGS,
                &self.roots,
                &intermediates,
                time,
                KeyUsage::client_auth(),
                None,
                None,
            )
            .map_err(|e| X509PopError::Untrusted(describe(&e)))?;
        Ok(X509PopNode {
            node_id: hex::encode(Sha256::digest(leaf)),
        })
    }
}

fn describe(e: &webpki::Error) -> String {
    match e {
        webpki::Error::UnknownIssuer | webpki::Error::InvalidSignatureForPublicKey => {
            "issued by a CA this issuer does not trust".into()
        }
        webpki::Error::CertExpired { .. } => "expired".into(),
        webpki::Error::CertNotValidYet { .. } => "not yet valid".into(),
        other => format!("{other:?}"),
    }
}

/// A fresh random nonce.
pub fn new_nonce() -> Result<[u8; 32], X509PopError> {
    let mut nonce = [0u8; 32];
    SystemRandom::new()
        .fill(&mut nonce)
        .map_err(|_| X509PopError::Random)?;
    Ok(nonce)
}

/// The bytes the node signs for `nonce`, bound to the node SVID key.
pub fn challenge_message(nonce: &[u8], agent_public_key_der: &[u8]) -> Vec<u8> {
    let mut message = Vec::with_capacity(CHALLENGE_CONTEXT.len() + nonce.len() + 32);
    message.extend_from_slice(CHALLENGE_CONTEXT);
    message.extend_from_slice(nonce);
    message.extend_from_slice(&Sha256::digest(agent_public_key_der));
    message
}

/// Checks the node's signature over `message` with its certificate's key
/// (ECDSA P-256/P-384, Ed25519, RSA PKCS#1 or PSS with SHA-256).
pub fn verify_response(
    leaf_der: &[u8],
    message: &[u8],
    signature: &[u8],
) -> Result<(), X509PopError> {
    let der = CertificateDer::from(leaf_der);
    let cert =
        EndEntityCert::try_from(&der).map_err(|e| X509PopError::Malformed(format!("{e:?}")))?;
    let algorithms: [&dyn rustls_pki_types::SignatureVerificationAlgorithm; 5] = [
        webpki::ring::ECDSA_P256_SHA256,
        webpki::ring::ECDSA_P384_SHA384,
        webpki::ring::ED25519,
        webpki::ring::RSA_PKCS1_2048_8192_SHA256,
        webpki::ring::RSA_PSS_2048_8192_SHA256_LEGACY_KEY,
    ];
    if algorithms
        .iter()
        .any(|alg| cert.verify_signature(*alg, message, signature).is_ok())
    {
        Ok(())
    } else {
        Err(X509PopError::BadSignature)
    }
}

enum NodeKey {
    Ecdsa(EcdsaKeyPair),
    Ed25519(Ed25519KeyPair),
    Rsa(RsaKeyPair),
}

impl NodeKey {
    /// A node key from its PEM block: PKCS#8 (`PRIVATE KEY`: ECDSA P-256 or
    /// P-384, Ed25519, RSA), SEC1 (`EC PRIVATE KEY`, what `openssl ecparam
    /// -genkey` writes) or PKCS#1 (`RSA PRIVATE KEY`), as SPIRE's x509pop
    /// takes them.
    fn from_pem_block(block: &pem::Pem) -> Result<Self, X509PopError> {
        let rng = SystemRandom::new();
        let der = block.contents();
        match block.tag() {
            "PRIVATE KEY" => {
                if let Ok(k) = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, der, &rng)
                {
                    Ok(NodeKey::Ecdsa(k))
                } else if let Ok(k) =
                    EcdsaKeyPair::from_pkcs8(&ECDSA_P384_SHA384_ASN1_SIGNING, der, &rng)
                {
                    Ok(NodeKey::Ecdsa(k))
                } else if let Ok(k) = Ed25519KeyPair::from_pkcs8_maybe_unchecked(der) {
                    Ok(NodeKey::Ed25519(k))
                } else if let Ok(k) = RsaKeyPair::from_pkcs8(der) {
                    Ok(NodeKey::Rsa(k))
                } else {
                    Err(X509PopError::BadKey(
                        "not a PKCS#8 ECDSA P-256, P-384, Ed25519 or RSA (2048 bits or more) key"
                            .into(),
                    ))
                }
            }
            "EC PRIVATE KEY" => {
                let pkcs8 = sec1_to_pkcs8(der)?;
                EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, &pkcs8, &rng)
                    .or_else(|_| {
                        EcdsaKeyPair::from_pkcs8(&ECDSA_P384_SHA384_ASN1_SIGNING, &pkcs8, &rng)
                    })
                    .map(NodeKey::Ecdsa)
                    .map_err(|e| {
                        X509PopError::BadKey(format!(
                            "not a SEC1 P-256 or P-384 key with its public key included ({e})"
                        ))
                    })
            }
            "RSA PRIVATE KEY" => RsaKeyPair::from_der(der).map(NodeKey::Rsa).map_err(|e| {
                X509PopError::BadKey(format!("not a PKCS#1 RSA key of 2048 bits or more ({e})"))
            }),
            other => Err(X509PopError::BadKey(format!(
                "expected a \"PRIVATE KEY\" (PKCS#8), \"EC PRIVATE KEY\" (SEC1) or \"RSA PRIVATE KEY\" (PKCS#1) PEM block, found {other:?}"
            ))),
        }
    }
}

/// A SEC1 `ECPrivateKey` (RFC 5915) wrapped as PKCS#8 (RFC 5208), which is
/// what ring reads, its curve taken from the key's own parameters.
fn sec1_to_pkcs8(der: &[u8]) -> Result<Vec<u8>, X509PopError> {
    use sec1::der::{Decode as _, Encode as _};
    let bad = |e: &dyn std::fmt::Display| X509PopError::BadKey(format!("unreadable SEC1 key: {e}"));
    let key = sec1::EcPrivateKey::from_der(der).map_err(|e| bad(&e))?;
    let curve = key
        .parameters
        .and_then(|p| p.named_curve())
        .ok_or_else(|| X509PopError::BadKey("the SEC1 key does not name its curve".into()))?;
    sec1::pkcs8::PrivateKeyInfo {
        algorithm: sec1::pkcs8::AlgorithmIdentifierRef {
            oid: sec1::ALGORITHM_OID,
            parameters: Some((&curve).into()),
        },
        private_key: der,
        public_key: None,
    }
    .to_der()
    .map_err(|e| bad(&e))
}

/// The agent's side: the node certificate chain and its private key.
pub struct X509PopSigner {
    chain: Vec<Vec<u8>>,
    key: NodeKey,
}

impl std::fmt::Debug for X509PopSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("X509PopSigner")
            .field("chain_len", &self.chain.len())
            .field("key", &"<redacted>")
            .finish()
    }
}

impl X509PopSigner {
    /// Loads the node certificate (first PEM block, then intermediates) and
    /// its PKCS#8 private key, and checks that they belong together.
    pub fn from_pem(cert_chain_pem: &str, key_pem: &str) -> Result<Self, X509PopError> {
        let chain: Vec<Vec<u8>> = pem::parse_many(cert_chain_pem)
            .map_err(|e| X509PopError::Malformed(e.to_string()))?
            .into_iter()
            .filter(|b| b.tag() == "CERTIFICATE")
            .map(|b| b.into_contents())
            .collect();
        if chain.is_empty() {
            return Err(X509PopError::NoCertificate);
        }
        // The certificate first: a key cannot be matched against a
        // certificate webpki cannot use (an X.509 v1 certificate, as
        // `openssl x509 -req` makes without `-extfile`, among them).
        EndEntityCert::try_from(&CertificateDer::from(chain[0].as_slice())).map_err(|e| {
            X509PopError::Malformed(format!(
                "the node certificate cannot be used ({e:?}){}",
                if matches!(e, webpki::Error::UnsupportedCertVersion) {
                    ": it is an X.509 v1 certificate; issue a v3 one (openssl x509 -req ... -extfile with basicConstraints=critical,CA:FALSE and keyUsage=digitalSignature)"
                } else {
                    ""
                }
            ))
        })?;
        let key_block = pem::parse(key_pem).map_err(|e| X509PopError::BadKey(e.to_string()))?;
        let key = NodeKey::from_pem_block(&key_block)?;
        let signer = Self { chain, key };
        // Prove the key matches the certificate before the issuer has to.
        let probe = challenge_message(&[0u8; 32], b"self-check");
        let signature = signer.sign(&probe)?;
        verify_response(&signer.chain[0], &probe, &signature).map_err(|_| {
            X509PopError::BadKey("the key does not match the node certificate".into())
        })?;
        Ok(signer)
    }

    /// The node certificate chain (DER, leaf first).
    pub fn chain_der(&self) -> Vec<Vec<u8>> {
        self.chain.clone()
    }

    /// Signs `message` with the node key.
    pub fn sign(&self, message: &[u8]) -> Result<Vec<u8>, X509PopError> {
        match &self.key {
            NodeKey::Ecdsa(key) => key
                .sign(&SystemRandom::new(), message)
                .map(|s| s.as_ref().to_vec())
                .map_err(|_| X509PopError::Random),
            NodeKey::Ed25519(key) => Ok(key.sign(message).as_ref().to_vec()),
            NodeKey::Rsa(key) => {
                let mut signature = vec![0; key.public().modulus_len()];
                key.sign(
                    &ring::signature::RSA_PKCS1_SHA256,
                    &SystemRandom::new(),
                    message,
                    &mut signature,
                )
                .map_err(|_| X509PopError::Random)?;
                Ok(signature)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    struct Ca {
        issuer: rcgen::Issuer<'static, rcgen::KeyPair>,
        der: Vec<u8>,
    }

    fn ca() -> Ca {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        let name = format!(
            "Provisioning CA {}",
            hex::encode(&key.public_key_raw()[1..9])
        );
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, name);
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params.key_usages = vec![rcgen::KeyUsagePurpose::KeyCertSign];
        let cert = params.self_signed(&key).unwrap();
        Ca {
            der: cert.der().to_vec(),
            issuer: rcgen::Issuer::new(params, key),
        }
    }

    fn node(
        ca: &Ca,
        alg: &'static rcgen::SignatureAlgorithm,
        not_after: SystemTime,
    ) -> (String, String, Vec<u8>) {
        let key = rcgen::KeyPair::generate_for(alg).unwrap();
        let mut params = rcgen::CertificateParams::new(vec!["node.example".into()]).unwrap();
        params.not_before = (not_after - Duration::from_secs(86400 * 2)).into();
        params.not_after = not_after.into();
        let cert = params.signed_by(&key, &ca.issuer).unwrap();
        (cert.pem(), key.serialize_pem(), cert.der().to_vec())
    }

    fn tomorrow() -> SystemTime {
        SystemTime::now() + Duration::from_secs(86400)
    }

    #[test]
    fn good_chain_and_signature_accepted_for_each_key_type() {
        let ca = ca();
        let verifier = X509PopVerifier::new(vec![ca.der.clone()]).unwrap();
        for alg in [
            &rcgen::PKCS_ECDSA_P256_SHA256,
            &rcgen::PKCS_ECDSA_P384_SHA384,
            &rcgen::PKCS_ED25519,
        ] {
            let (cert_pem, key_pem, der) = node(&ca, alg, tomorrow());
            let signer = X509PopSigner::from_pem(&cert_pem, &key_pem).unwrap();
            let accepted = verifier
                .verify_chain(&signer.chain_der(), SystemTime::now())
                .unwrap();
            assert_eq!(accepted.node_id, hex::encode(Sha256::digest(&der)));
            let nonce = new_nonce().unwrap();
            let message = challenge_message(&nonce, b"agent key");
            let signature = signer.sign(&message).unwrap();
            verify_response(&der, &message, &signature).unwrap();
        }
    }

    #[test]
    fn foreign_ca_and_expired_certificates_refused() {
        let ours = ca();
        let theirs = ca();
        let verifier = X509PopVerifier::new(vec![ours.der.clone()]).unwrap();
        let (_, _, foreign) = node(&theirs, &rcgen::PKCS_ECDSA_P256_SHA256, tomorrow());
        let err = verifier
            .verify_chain(&[foreign], SystemTime::now())
            .unwrap_err();
        assert!(err.to_string().contains("does not trust"), "{err}");
        let (_, _, expired) = node(
            &ours,
            &rcgen::PKCS_ECDSA_P256_SHA256,
            SystemTime::now() - Duration::from_secs(60),
        );
        let err = verifier
            .verify_chain(&[expired], SystemTime::now())
            .unwrap_err();
        assert!(err.to_string().contains("expired"), "{err}");
        assert!(matches!(
            verifier.verify_chain(&[], SystemTime::now()),
            Err(X509PopError::EmptyChain)
        ));
        assert!(matches!(
            verifier.verify_chain(&[vec![1, 2, 3]], SystemTime::now()),
            Err(X509PopError::Malformed(_))
        ));
    }

    #[test]
    fn signature_bound_to_nonce_agent_key_and_node_key() {
        let ca = ca();
        let (cert_pem, key_pem, der) = node(&ca, &rcgen::PKCS_ECDSA_P256_SHA256, tomorrow());
        let signer = X509PopSigner::from_pem(&cert_pem, &key_pem).unwrap();
        let nonce = new_nonce().unwrap();
        let signature = signer.sign(&challenge_message(&nonce, b"key A")).unwrap();
        let mut other_nonce = nonce;
        other_nonce[0] ^= 1;
        assert!(
            verify_response(&der, &challenge_message(&other_nonce, b"key A"), &signature).is_err()
        );
        assert!(verify_response(&der, &challenge_message(&nonce, b"key B"), &signature).is_err());
        // Another node's key cannot answer for this certificate.
        let (_, other_key, _) = node(&ca, &rcgen::PKCS_ECDSA_P256_SHA256, tomorrow());
        assert!(matches!(
            X509PopSigner::from_pem(&cert_pem, &other_key),
            Err(X509PopError::BadKey(_))
        ));
    }

    #[test]
    fn not_yet_valid_certificate_refused() {
        let ca = ca();
        let verifier = X509PopVerifier::new(vec![ca.der.clone()]).unwrap();
        // Valid from tomorrow (the helper makes two-day certificates).
        let (_, _, future) = node(
            &ca,
            &rcgen::PKCS_ECDSA_P256_SHA256,
            SystemTime::now() + Duration::from_secs(86400 * 3),
        );
        let err = verifier
            .verify_chain(std::slice::from_ref(&future), SystemTime::now())
            .unwrap_err();
        assert!(err.to_string().contains("not yet valid"), "{err}");
        // The same certificate is accepted once its time has come.
        let later = SystemTime::now() + Duration::from_secs(86400 * 2);
        assert!(verifier.verify_chain(&[future], later).is_ok());
    }

    #[test]
    fn another_nodes_signature_over_the_right_message_refused() {
        let ca = ca();
        let (_, _, victim) = node(&ca, &rcgen::PKCS_ECDSA_P256_SHA256, tomorrow());
        let (thief_pem, thief_key, _) = node(&ca, &rcgen::PKCS_ECDSA_P256_SHA256, tomorrow());
        let thief = X509PopSigner::from_pem(&thief_pem, &thief_key).unwrap();
        let message = challenge_message(&new_nonce().unwrap(), b"agent key");
        let signature = thief.sign(&message).unwrap();
        assert!(matches!(
            verify_response(&victim, &message, &signature),
            Err(X509PopError::BadSignature)
        ));
        assert!(matches!(
            verify_response(&victim, &message, b"not a signature"),
            Err(X509PopError::BadSignature)
        ));
    }

    #[test]
    fn no_roots_refused() {
        assert!(matches!(
            X509PopVerifier::new(vec![]),
            Err(X509PopError::BadRoot(_))
        ));
        assert!(matches!(
            X509PopVerifier::new(vec![vec![0]]),
            Err(X509PopError::BadRoot(_))
        ));
    }
}
