//! End-to-end tests: a real issuer (and agents) on loopback and temp dirs,
//! checked with code we did not write where it matters.

// Test helpers are shared between this binary's modules with `pub`; the
// binary has no public API for `unreachable_pub` to protect.
#![allow(
    missing_docs,
    unreachable_pub,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic
)]

mod agent;
mod attack_cache;
mod attack_code;
mod attack_paths;
mod attack_socket;
mod attestation;
mod authority;
mod common;
mod examples;
mod federation;
mod flood;
mod kill;
mod kill_issuer;
mod kill_node;
mod mint;
mod node_api;
mod oidc_pyjwt;
mod py_spiffe;
mod quickstart;
mod relying_party;
mod resilience;
mod sds;
mod workload_api;
mod x509pop_fixture;
