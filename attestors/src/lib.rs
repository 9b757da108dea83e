//! Attestation: how nodes and workloads prove what they are.
//!
//! This crate owns the evidence side of Hallmark: node attestation (join
//! tokens, x509pop) and the canonical tree digest of model and application
//! directories (workload attestors join it). It reads processes, files and
//! certificates; it knows nothing about the network, the store or gRPC.
//!
//! ```
//! use hallmark_attestors::node::join_token;
//! let token = join_token::generate();
//! assert!(join_token::check_format(&token).is_ok());
//! assert_eq!(join_token::node_id(&token).len(), 32);
//! ```

pub mod node;
pub mod tree;
pub mod workload;
