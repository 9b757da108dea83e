//! Signed gold images: the registration unit of Hallmark.
//!
//! An operator writes a TOML manifest ([`manifest`]); `image sign` turns it
//! into canonical JSON ([`canonical`]) inside a DSSE envelope ([`dsse`]);
//! other operators `image cosign` it; the issuer and `image verify` check it
//! with [`verify_envelope`] against the trusted public keys and the
//! signature policy of the image's risk tier.
//!
//! This module does no network I/O and keeps no state; storing and serving
//! images belongs to the store and the admin API.
//!
//! ```
//! use hallmark_server::image::{
//!     Algorithm, Envelope, GoldImage, ImageContext, SignaturePolicy, SigningKey,
//!     TrustedSigners, canonical, verify_envelope,
//! };
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let image = GoldImage::from_toml(r#"
//!     name = "invoice-agent"
//!     version = "1.0.0"
//!     spiffe_id = "spiffe://example.org/invoice-agent"
//!     owner = "alice@example.org"
//!     purpose = "reads invoices"
//!     risk_tier = "low"
//!     not_after = 2099-12-31
//!     [code]
//!     sha256 = ["0000000000000000000000000000000000000000000000000000000000000000"]
//! "#)?;
//! let key = SigningKey::from_pkcs8_der(&SigningKey::generate_pkcs8(Algorithm::Ed25519)?)?;
//! let envelope = Envelope::sign(&canonical::encode(&image), &key)?.to_json();
//!
//! let mut signers = TrustedSigners::new();
//! signers.insert(key.public_key().clone());
//! let ctx = ImageContext::new("example.org".parse()?);
//! let verified = verify_envelope(&envelope, &signers, &SignaturePolicy::default(), &ctx)?;
//! assert_eq!(verified.signers, [key.keyid()]);
//! # Ok(())
//! # }
//! ```

pub mod canonical;
pub mod dsse;
pub mod error;
pub mod manifest;
mod reader;
pub mod text;
pub mod types;
pub mod verify;

pub use dsse::{Algorithm, Envelope, KeyError, PAYLOAD_TYPE, PublicKey, SigningKey, pae};
pub use error::{ErrorClass, ImageError};
pub use manifest::{FieldError, GoldImage};
pub use types::{Interpreter, RiskTier, Timestamp};
pub use verify::{
    DEFAULT_MAX_SVID_TTL, ImageContext, MAX_ENVELOPE_BYTES, SignaturePolicy, TrustedSigners,
    VerifiedImage, verify_envelope,
};

#[cfg(test)]
mod test_support;
