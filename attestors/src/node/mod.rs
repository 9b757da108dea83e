//! Node attestation: how a node agent proves which node it runs on.
//!
//! - [`join_token`]: a single-use secret handed to the agent by an operator.
//! - [`x509pop`]: proof of possession of a node certificate issued by a
//!   provisioning CA the issuer trusts.
//!
//! Both halves live here (the issuer's checks and the agent's answers) so that
//! the byte formats they share are defined once. Nothing here touches the
//! network or the store.

pub mod join_token;
pub mod x509pop;
