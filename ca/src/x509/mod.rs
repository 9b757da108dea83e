//! X.509: the operator's [`UpstreamCa`], Hallmark's signing [`X509Authority`],
//! and X.509-SVID minting ([`X509Authority::mint_svid`]).

use std::time::Duration;

mod authority;
mod svid;
mod upstream;

pub use authority::X509Authority;
pub use svid::{BINDING_EXTENSION_OID, SvidExtension, SvidRequest, X509Svid, binding_from_cert};
pub use upstream::UpstreamCa;

/// How far `not_before` is backdated from `now` on CAs and leaves, to tolerate
/// clock skew between the issuer and relying parties (at most 60 s by design).
pub const CLOCK_SKEW_BACKDATE: Duration = Duration::from_secs(30);
