//! The SPIFFE Workload API as the agent serves it, in pieces that do not
//! depend on how SVIDs are obtained: the socket and its connections (with
//! the `:authority` rewrite that lets every gRPC client in), the security
//! header check, the bundle messages, and JWT-SVID validation. The gRPC
//! service that streams SVIDs to attested workloads is built from these.

pub mod authority;
mod bundles;
pub mod cache;
pub mod connection;
pub mod evidence;
pub mod process_source;
pub(crate) mod revocations;
pub mod sds;
mod security;
pub(crate) mod service;
pub mod socket;
mod validate;
pub mod walks;

pub use bundles::{federated_x509, jwt_bundles_response, trust_domain_key, x509_bundles_response};
pub use security::{SECURITY_HEADER_VALUE, check_security_header};
pub use validate::{json_to_struct, validate_jwt_svid_request};
