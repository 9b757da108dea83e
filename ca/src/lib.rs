//! Hallmark's certificate authority: SPIFFE identities, keys, X.509-SVID and
//! JWT-SVID minting, trust bundles, key rotation, and the rustls verifiers
//! that check SVIDs on the node API's mutual TLS.
//!
//! What this crate owns:
//! - [`id`]: [`TrustDomain`](id::TrustDomain) and [`SpiffeId`](id::SpiffeId), parsed per the SPIFFE-ID standard;
//! - [`key`]: [`CaKey`](key::CaKey), the P-256 signing key, behind rcgen's `SigningKey`;
//! - [`x509`]: self-signed or upstream-signed CAs and X.509-SVIDs per DESIGN.md,
//!   including the Hallmark binding extension;
//! - [`jwt`]: ES256 JWT-SVIDs, the bounds on their audience, and their validation against a bundle;
//! - [`bundle`]: trust bundles as SPIFFE JWKS and PEM, and a swappable [`SharedBundle`](bundle::SharedBundle);
//! - [`manager`]: active/next/retired authorities and their rotation, persisted as [`CaState`](manager::CaState);
//! - [`verify`]: X.509-SVID verification (x509-parser + rustls-webpki);
//! - [`version`]: what the image and model versions in a binding mean (numeric
//!   comparison), one rule for the issuer, agents and relying parties;
//! - [`tls`]: rustls client/server certificate verifiers and a certificate resolver;
//! - [`clock`]: the time seam ([`ManualClock`](clock::ManualClock) for tests).
//!
//! What it does not: no gRPC, no disk, no async runtime, no configuration
//! files. Time is always passed in as `now`; keys come and go as bytes
//! ([`CaState`](manager::CaState)) and the caller stores them.
//!
//! # Example
//!
//! ```
//! use std::time::{Duration, SystemTime};
//!
//! use hallmark_ca::id::{SpiffeId, TrustDomain};
//! use hallmark_ca::manager::{CaConfig, CaManager};
//! use hallmark_ca::verify::{Usage, verify_x509_svid};
//! use hallmark_ca::x509::{SvidExtension, SvidRequest};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let now = SystemTime::now();
//! let td = TrustDomain::new("example.org")?;
//! let ca = CaManager::generate(CaConfig::new(td.clone()), now)?;
//!
//! // The workload's key stays with the workload; the CA only sees its public key.
//! let workload_key = hallmark_ca::key::CaKey::generate()?;
//! let id = SpiffeId::new(&td, "/agents/summarizer")?;
//! let binding = SvidExtension::binding(br#"{"image":"summarizer@1.0"}"#);
//! let svid = ca.mint_x509_svid(
//!     &SvidRequest {
//!         spiffe_id: &id,
//!         public_key_der: &workload_key.public_key_der(),
//!         ttl: Duration::from_secs(3600), // capped at max_svid_ttl (300 s)
//!         dns_names: &[],
//!         extensions: &[binding],
//!     },
//!     now,
//! )?;
//! assert!(svid.not_after <= now + Duration::from_secs(300));
//!
//! let verified = verify_x509_svid(&svid.cert_chain, &ca.bundle(), Usage::ClientAuth, now)?;
//! assert_eq!(verified.spiffe_id, id);
//! assert_eq!(verified.binding.as_deref(), Some(&br#"{"image":"summarizer@1.0"}"#[..]));
//! # Ok(())
//! # }
//! ```

pub mod bundle;
pub mod clock;
mod error;
pub mod id;
pub mod jwt;
pub mod key;
pub mod manager;
pub mod tls;
mod util;
pub mod verify;
pub mod version;
pub mod x509;

pub use error::CaError;

#[cfg(test)]
mod tests {
    /// The daemons share these across threads and tasks.
    #[test]
    fn shared_types_are_send_and_sync() {
        fn assert_send_sync<T: Send + Sync>() {}
        assert_send_sync::<crate::manager::CaManager>();
        assert_send_sync::<crate::x509::X509Authority>();
        assert_send_sync::<crate::x509::UpstreamCa>();
        assert_send_sync::<crate::jwt::JwtKey>();
        assert_send_sync::<crate::bundle::SharedBundle>();
        assert_send_sync::<crate::tls::SvidCertResolver>();
        assert_send_sync::<crate::tls::SpiffeClientVerifier>();
        assert_send_sync::<crate::tls::SpiffeServerVerifier>();
        assert_send_sync::<crate::CaError>();
        assert_send_sync::<crate::verify::VerifyError>();
        assert_send_sync::<crate::jwt::JwtError>();
    }
}
