//! Hallmark: short-lived SPIFFE identities for AI agents, bound to the exact
//! code and model they run.
//!
//! This root crate is the library for **relying parties**: services that
//! receive a Hallmark credential (an X.509-SVID over mutual TLS, or a
//! JWT-SVID in a request) and must decide whether to trust the caller. It
//! also re-exports the building blocks ([`ca`], [`agent`], [`server`],
//! [`attestors`], [`proto`]) and hosts the quickstart binary.
//!
//! What it owns:
//! - [`svid`]: verify an X.509-SVID chain or a JWT-SVID against a trust
//!   bundle per the SPIFFE rules, into an [`Identity`];
//! - [`binding`]: the Hallmark binding (code digest, gold image, model,
//!   node, owner, risk tier) read into a typed [`Binding`];
//! - [`policy`]: [`Policy`], composable authorization rules ("SPIFFE ID in
//!   this set, image X, model Y at version >= Z, code digest in this set"),
//!   usable as rustls client and server certificate verifiers and as a
//!   JWT-SVID check;
//! - [`version`]: numeric dotted [`Version`]s and requirements (`>= 3.1, < 4`);
//! - [`revocation`]: live [`Revocations`] from the agent's kill-switch
//!   stream, consulted by policies at every handshake and token;
//! - [`workload`]: a small Workload API client that keeps a workload's own
//!   SVID and its trust bundles current for rustls and the verifiers.
//!
//! What it does not: mint, attest or store anything (that is the issuer and
//! the agent); read the process environment (pass `SPIFFE_ENDPOINT_SOCKET`
//! in from `main`).
//!
//! # Example: a mutual-TLS server that only talks to approved agents
//!
//! ```
//! use std::sync::Arc;
//! use hallmark::Policy;
//! use hallmark::ca::bundle::{Bundle, SharedBundle};
//! use hallmark::ca::id::{SpiffeId, TrustDomain};
//! use hallmark::ca::tls::SvidCertResolver;
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! // Callers: the invoice agent, running llama-3.1 at 3.1 or later, built
//! // from a binary this team approved.
//! let policy = Policy::spiffe_id(SpiffeId::parse("spiffe://example.org/invoice-agent")?)
//!     .and(Policy::model("llama-3.1", ">= 3.1".parse()?))
//!     .and(Policy::code_digest_in(["3b1f0c6a2e9d4f5b8c7a6e5d4c3b2a1f0e9d8c7b6a5f4e3d2c1b0a9f8e7d6c5b"]));
//!
//! // In a service these two follow the agent: see `hallmark::workload::X509Source`.
//! let bundle = SharedBundle::new(Bundle::new(TrustDomain::new("example.org")?));
//! let own_svid = Arc::new(SvidCertResolver::new());
//!
//! let config = rustls::ServerConfig::builder_with_provider(Arc::new(
//!     rustls::crypto::ring::default_provider(),
//! ))
//! .with_protocol_versions(&[&rustls::version::TLS13])?
//! .with_client_cert_verifier(policy.client_verifier(bundle))
//! .with_cert_resolver(own_svid);
//! # let _ = config;
//! # Ok(())
//! # }
//! ```
//!
//! The same policy checks JWT-SVIDs with [`Policy::verify_jwt`], and a
//! client verifies its server with [`Policy::server_verifier`]. The
//! `examples/` directory has complete programs against a real agent.

pub mod binding;
pub mod policy;
pub mod revocation;
pub mod svid;
pub mod version;
pub mod workload;

#[cfg(test)]
mod test_support;

pub use binding::Binding;
pub use policy::{Denied, Policy, PolicyError};
pub use revocation::Revocations;
pub use svid::{Identity, SvidError};
pub use version::{Version, VersionReq};

pub use hallmark_agent as agent;
pub use hallmark_attestors as attestors;
pub use hallmark_ca as ca;
pub use hallmark_proto as proto;
pub use hallmark_server as server;
