//! Telemetry shared by both Hallmark daemons: a lock-free latency
//! [`Histogram`] that plugs into `prometheus-client`, and the small HTTP
//! endpoint ([`serve`]) that exposes `/metrics`, `/live` and `/ready`.
//!
//! What this crate owns: metric primitives whose updates on the hot path are
//! single atomic operations, the exposition endpoint, and the hardened
//! HTTP/1.1 server it runs on ([`http::serve_http`], optionally over TLS),
//! which the issuer's OpenID Connect endpoint shares. What it does not:
//! which metrics exist (`hallmark-server` and `hallmark-agent` each define
//! theirs in their `metrics` module), what "ready" means (the daemon passes
//! a [`Health`]), or the encoding itself (`prometheus-client` writes the
//! OpenMetrics text).
//!
//! ```no_run
//! # async fn run() -> std::io::Result<()> {
//! use std::sync::Arc;
//! use std::time::Duration;
//!
//! use hallmark_metrics::{Health, Histogram, LATENCY_BUCKETS, serve};
//! use prometheus_client::registry::Registry;
//!
//! #[derive(Debug)]
//! struct AlwaysReady;
//! impl Health for AlwaysReady {
//!     fn ready(&self) -> Result<(), String> {
//!         Ok(())
//!     }
//! }
//!
//! let latency = Histogram::new(LATENCY_BUCKETS);
//! let mut registry = Registry::with_prefix("demo");
//! registry.register("request_duration_seconds", "Request latency", latency.clone());
//! latency.observe(Duration::from_micros(250));
//! let endpoint = serve(
//!     "127.0.0.1:9090".parse().unwrap(),
//!     Arc::new(registry),
//!     Arc::new(AlwaysReady),
//!     std::future::pending(),
//! )
//! .await?;
//! println!("metrics on http://{}/metrics", endpoint.local_addr());
//! # Ok(())
//! # }
//! ```

mod endpoint;
mod exposition;
mod histogram;
pub mod http;

pub use endpoint::{Health, serve};
pub use histogram::{Histogram, LATENCY_BUCKETS};
pub use http::Endpoint;
