//! Hallmark: short-lived SPIFFE identities for AI agents, bound to the exact
//! code and model they run.
//!
//! This root crate is the entry point for relying parties and newcomers. It
//! re-exports the building blocks; the relying-party helpers (SVID and
//! binding verification, authorization policies for rustls and JWT-SVIDs)
//! grow here on top of them.
//!
//! ```
//! use hallmark::ca::id::SpiffeId;
//! let id = SpiffeId::parse("spiffe://example.org/invoice-agent").unwrap();
//! assert_eq!(id.trust_domain().as_str(), "example.org");
//! ```

pub use hallmark_agent as agent;
pub use hallmark_attestors as attestors;
pub use hallmark_ca as ca;
pub use hallmark_proto as proto;
pub use hallmark_server as server;
