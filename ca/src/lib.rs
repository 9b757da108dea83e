//! placeholder
pub mod bundle;
pub mod clock;
mod error;
pub mod id;
pub mod jwt;
pub mod key;
mod util;
pub mod x509;

pub use error::CaError;
