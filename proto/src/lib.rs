//! Hallmark's gRPC definitions, generated at build time from `proto/` with a
//! pure-Rust protobuf compiler (no system `protoc`).
//!
//! This crate owns the wire types only: the SPIFFE Workload API exactly as the
//! standard defines it ([`workload`]), the node API between agents and the
//! issuer ([`node`]), the operator admin API ([`admin`]), and Hallmark's
//! Workload API extension for relying parties ([`revocations`]), and the
//! codec the generated code uses ([`codec`]: prost with small buffers). It
//! knows nothing about certificates, attestation or I/O.
//!
//! ```
//! use hallmark_proto::workload::X509svidRequest;
//! let _request = X509svidRequest {};
//! ```

pub mod codec;

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

/// Hallmark's Workload API extension (`hallmark.workload.v1`): the
/// `Revocations` service relying parties watch, on the agent's socket.
#[allow(missing_docs, unreachable_pub, clippy::all, clippy::pedantic)]
pub mod revocations {
    tonic::include_proto!("hallmark.workload.v1");
}

/// Envoy's secret discovery service (SDS v3), the subset the agent serves
/// on its socket: Envoy's package and field numbers, so the same on the
/// wire (see `proto/envoy/README.md`).
#[allow(missing_docs, unreachable_pub, clippy::all, clippy::pedantic)]
pub mod xds {
    /// `envoy.*`.
    pub mod envoy {
        /// `envoy.config.*`.
        pub mod config {
            /// `envoy.config.core.*`.
            pub mod core {
                /// `envoy.config.core.v3`: `Node`, `DataSource`.
                pub mod v3 {
                    tonic::include_proto!("envoy.config.core.v3");
                }
            }
        }
        /// `envoy.extensions.*`.
        pub mod extensions {
            /// `envoy.extensions.transport_sockets.*`.
            pub mod transport_sockets {
                /// `envoy.extensions.transport_sockets.tls.*`.
                pub mod tls {
                    /// `envoy.extensions.transport_sockets.tls.v3`: `Secret`.
                    pub mod v3 {
                        tonic::include_proto!("envoy.extensions.transport_sockets.tls.v3");
                    }
                }
            }
        }
        /// `envoy.service.*`.
        pub mod service {
            /// `envoy.service.discovery.*`.
            pub mod discovery {
                /// `envoy.service.discovery.v3`: the xDS request and response.
                pub mod v3 {
                    tonic::include_proto!("envoy.service.discovery.v3");
                }
            }
            /// `envoy.service.secret.*`.
            pub mod secret {
                /// `envoy.service.secret.v3`: `SecretDiscoveryService`.
                pub mod v3 {
                    tonic::include_proto!("envoy.service.secret.v3");
                }
            }
        }
    }
    /// `google.*`.
    pub mod google {
        /// `google.rpc`: `Status` (an xDS NACK's detail).
        pub mod rpc {
            tonic::include_proto!("google.rpc");
        }
    }
}

/// The binary metadata key on node API refusals of a revoked agent: an
/// encoded [`node::Revocation`] (see [`encode_revocation`]).
pub const REVOCATION_METADATA: &str = "hallmark-revocation-bin";

/// A revocation as the bytes of [`REVOCATION_METADATA`].
pub fn encode_revocation(revocation: &node::Revocation) -> Vec<u8> {
    prost::Message::encode_to_vec(revocation)
}

/// The revocation in [`REVOCATION_METADATA`] bytes, if they hold one.
pub fn decode_revocation(bytes: &[u8]) -> Option<node::Revocation> {
    <node::Revocation as prost::Message>::decode(bytes).ok()
}

/// The metadata header every Workload API request must carry, with value `true`.
pub const WORKLOAD_API_HEADER: &str = "workload.spiffe.io";

/// A digest of the evidence for caches and the audit trail: SHA-256 over a
/// canonical text form (fields in a fixed order, environment sorted by
/// name), lowercase hex. Environment values enter only through the hash.
pub fn evidence_digest(evidence: &node::WorkloadEvidence) -> String {
    use sha2::{Digest, Sha256};
    use std::collections::BTreeMap;
    let mut hasher = Sha256::new();
    let mut line = |key: &str, value: &str| {
        hasher.update(key.as_bytes());
        hasher.update(b"=");
        hasher.update(value.as_bytes());
        hasher.update(b"\n");
    };
    line("pid", &evidence.pid.to_string());
    line("uid", &evidence.uid.to_string());
    line("gid", &evidence.gid.to_string());
    let gids: Vec<String> = evidence
        .supplementary_gids
        .iter()
        .map(u32::to_string)
        .collect();
    line("gids", &gids.join(","));
    line("exe_path", &evidence.exe_path);
    line("exe_sha256", &evidence.exe_sha256);
    line("start_time", &evidence.start_time.to_string());
    for (key, tree) in [("app", &evidence.app), ("model", &evidence.model)] {
        if let Some(tree) = tree {
            line(key, &format!("{} {}", tree.digest, tree.dir));
        }
    }
    let env: BTreeMap<&String, &String> = evidence.env.iter().collect();
    for (name, value) in env {
        line(&format!("env.{name}"), value);
    }
    line("cgroup", &evidence.cgroup_path);
    line("container", &evidence.container_id);
    // What is loaded moves the digest, so a cached SVID is never served to
    // a process whose program, libraries or loaded model changed.
    for p in &evidence.programs {
        line(
            &format!("program.{}", p.dialect),
            &format!(
                "{} {} {} {} {} {}",
                p.kind,
                p.in_app_tree,
                p.path,
                p.outside_app_tree.join(","),
                p.flags.join(","),
                p.detail
            ),
        );
    }
    if let Some(code) = &evidence.loaded_code {
        line("loaded_code", "");
        for f in &code.unprotected {
            line("loaded", &format!("{} {}", f.sha256, f.path));
        }
    }
    line("loader_env", &evidence.loader_env.join(","));
    if let Some(m) = &evidence.model_loaded {
        line(
            "model_loaded",
            &format!("{} {}", m.weight_files, m.not_loaded.join(",")),
        );
    }
    hex::encode(hasher.finalize())
}
