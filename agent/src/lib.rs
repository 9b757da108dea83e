//! The Hallmark node agent.
//!
//! Runs on every host and Kubernetes node. It attests the node to the issuer
//! (join token or x509pop), keeps its node SVID (persisted, renewed at
//! half-life, re-attested when refused if x509pop is configured), and follows
//! the trust bundle over the issuer's `Sync` stream with reconnection and
//! jittered backoff. The SPIFFE Workload API it serves to local workloads
//! builds on this, and enforces the kill switch's revocations (see
//! [`revocation`]), which it also relays to relying parties.
//!
//! This crate owns the agent's I/O, configuration, daemon and CLI; it does
//! not mint or verify certificates itself (`hallmark-ca`) nor define how a
//! node proves itself (`hallmark-attestors`).
//!
//! ```no_run
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! use hallmark_agent::{Agent, config::AgentSettings};
//! let mut settings = AgentSettings::from_file("conf/agent.toml".as_ref())?;
//! settings.join_token = Some("<token from hallmark-server token generate>".into());
//! let agent = Agent::start(settings).await?;
//! println!("attested as {:?}", agent.spiffe_id());
//! agent.shutdown().await;
//! # Ok(())
//! # }
//! ```

pub mod attest;
pub mod backoff;
pub mod cli;
pub mod client;
pub mod config;
mod daemon;
pub mod error;
pub mod federated;
pub mod metrics;
pub mod persist;
pub mod revocation;
pub mod workload_api;

pub use daemon::{Agent, AgentHandle, AgentStatus};
pub use error::AgentError;
