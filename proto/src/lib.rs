//! Hallmark's gRPC definitions, generated at build time from `proto/` with a
//! pure-Rust protobuf compiler (no system `protoc`).
//!
//! This crate owns the wire types only: the SPIFFE Workload API exactly as the
//! standard defines it ([`workload`]), the node API between agents and the
//! issuer ([`node`]) and the operator admin API ([`admin`]). It knows nothing
//! about certificates, attestation or I/O.
//!
//! ```
//! use hallmark_proto::workload::X509svidRequest;
//! let _request = X509svidRequest {};
//! ```

/// The SPIFFE Workload API (`/SpiffeWorkloadAPI/*`), as the standard defines it.
#[allow(missing_docs, unreachable_pub, clippy::all, clippy::pedantic)]
pub mod workload {
    // Generated code: the standard's proto declares no package, so prost names
    // the file `_.rs`.
    tonic::include_proto!("_");
}

/// The node API (`hallmark.node.v1`): attestation, renewal and sync.
#[allow(missing_docs, unreachable_pub, clippy::all, clippy::pedantic)]
pub mod node {
    tonic::include_proto!("hallmark.node.v1");
}

/// The admin API (`hallmark.admin.v1`): the operator CLI's calls.
#[allow(missing_docs, unreachable_pub, clippy::all, clippy::pedantic)]
pub mod admin {
    tonic::include_proto!("hallmark.admin.v1");
}

/// The metadata header every Workload API request must carry, with value `true`.
pub const WORKLOAD_API_HEADER: &str = "workload.spiffe.io";
