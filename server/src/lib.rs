//! The Hallmark issuer: attests node agents, runs the certificate authority,
//! and serves the node API and the operator admin API.
//!
//! This crate owns I/O, configuration, the daemon and the operator CLI. It
//! does not know how certificates are built (that is `hallmark-ca`) nor how a
//! node proves itself (that is `hallmark-attestors`); it wires them to the
//! network and the store.
//!
//! ```no_run
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! use hallmark_server::config::{ServerConfig, ServerOverrides, ServerSettings};
//! let file = ServerConfig::from_file("conf/server.toml".as_ref())?;
//! let settings = ServerSettings::resolve(file, ServerOverrides::default())?;
//! let server = hallmark_server::server::start(settings).await?;
//! println!("node API on {}", server.node_addr());
//! server.shutdown().await;
//! # Ok(())
//! # }
//! ```

pub mod admin;
pub mod audit;
pub mod authority;
pub mod cli;
pub mod config;
pub mod convert;
pub mod events;
pub mod federation;
pub mod image;
pub mod issuance;
pub mod metrics;
pub mod node;
pub mod oidc;
pub mod revocation;
pub mod server;
pub mod store;
pub mod tls;
