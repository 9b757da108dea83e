//! `watch`: a workload that follows its X.509-SVID stream and prints every
//! update: each rotation (the agent re-measures the process at half-life
//! and sends a fresh SVID), and the moment the identity is withdrawn (a
//! kill, or a changed binary or model).
//!
//! It uses the `spiffe` crate's Workload API client, as any SPIFFE workload
//! would, and reads the Hallmark binding with this crate.
//!
//! ```sh
//! SPIFFE_ENDPOINT_SOCKET=unix:///tmp/hallmark/agent/api.sock \
//!   cargo run --example watch -- --updates 3 --seconds 600
//! ```
//!
//! The agent must know an image for this binary (`target/debug/examples/watch`):
//! see docs/relying-parties.md, "Examples". It stops after `--updates` messages, after
//! `--seconds`, or when the identity is withdrawn, whichever comes first.

use std::time::{Duration, SystemTime};

use anyhow::Context as _;
use rustls_pki_types::CertificateDer;
use tokio_stream::StreamExt as _;

use hallmark::svid::{Credential, peer_identity};

/// What the watch does and when it stops.
#[derive(Debug, Clone)]
pub struct WatchOptions {
    /// The Workload API address, `unix:///path`.
    pub endpoint: String,
    /// Stop after this many stream messages.
    pub max_updates: usize,
    /// Stop after this long.
    pub deadline: Duration,
}

/// One message of the stream, as the workload sees its default SVID.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Update {
    /// The SPIFFE ID.
    pub spiffe_id: String,
    /// The leaf serial.
    pub serial: String,
    /// When the SVID expires.
    pub not_after: SystemTime,
    /// The gold image, `name@version`.
    pub image: Option<String>,
    /// SHA-256 of the executable the agent measured.
    pub code_sha256: Option<String>,
    /// The model name and version the binding names.
    pub model: Option<(String, String)>,
}

/// Why the watch stopped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum End {
    /// `max_updates` messages arrived.
    Updates,
    /// The deadline passed.
    Deadline,
    /// The agent withdrew the identity; its reason.
    Withdrawn(String),
    /// The agent closed the stream.
    Closed,
}

/// Follows the stream, calling `on_update` for each message, until one of
/// the stop conditions.
pub async fn watch(
    options: &WatchOptions,
    mut on_update: impl FnMut(&Update),
) -> anyhow::Result<(Vec<Update>, End)> {
    let client = spiffe::WorkloadApiClient::connect_to(&options.endpoint)
        .await
        .with_context(|| format!("cannot reach the Workload API at {}", options.endpoint))?;
    let mut stream = client
        .stream_x509_contexts()
        .await
        .context("the agent refused FetchX509SVID")?;
    let mut updates = Vec::new();
    let deadline = tokio::time::sleep(options.deadline);
    tokio::pin!(deadline);
    let end = loop {
        if updates.len() >= options.max_updates {
            break End::Updates;
        }
        let next = tokio::select! {
            () = &mut deadline => break End::Deadline,
            next = stream.next() => next,
        };
        match next {
            None => break End::Closed,
            // PermissionDenied: the standard's "no identity" (a kill, or the
            // process no longer matches its gold image).
            Some(Err(error)) => break End::Withdrawn(error.to_string()),
            Some(Ok(context)) => {
                let svid = context
                    .default_svid()
                    .context("a stream message without an SVID")?;
                let update = describe(svid.leaf().as_bytes())?;
                on_update(&update);
                updates.push(update);
            }
        }
    };
    Ok((updates, end))
}

fn describe(leaf: &[u8]) -> anyhow::Result<Update> {
    let identity = peer_identity(&[CertificateDer::from(leaf)])?;
    let serial = match &identity.credential {
        Credential::X509 { serial, .. } => serial.clone(),
        _ => String::new(),
    };
    let binding = identity.binding.as_ref();
    Ok(Update {
        spiffe_id: identity.spiffe_id.to_string(),
        serial,
        not_after: identity.expires_at(),
        image: binding.map(|b| b.image.to_string()),
        code_sha256: binding.map(|b| b.code_sha256.to_string()),
        model: binding
            .and_then(|b| b.model.as_ref())
            .map(|m| (m.name.clone(), m.version.clone())),
    })
}

/// Prints an update the way the example and the quickstart show it.
pub fn print_update(update: &Update) {
    let left = update
        .not_after
        .duration_since(SystemTime::now())
        .unwrap_or_default();
    println!("SVID {} serial {}", update.spiffe_id, update.serial);
    println!(
        "  expires {} (in {}s)",
        humantime::format_rfc3339_seconds(update.not_after),
        left.as_secs()
    );
    if let Some(image) = &update.image {
        println!("  image   {image}");
    }
    if let Some(code) = &update.code_sha256 {
        println!("  code    sha256 {code}");
    }
    match &update.model {
        Some((name, version)) => println!("  model   {name} {version}"),
        None => println!("  model   (none bound)"),
    }
}

#[derive(Debug, clap::Parser)]
struct Args {
    /// Stop after this many stream messages.
    #[arg(long, default_value_t = 3)]
    updates: usize,
    /// Stop after this many seconds.
    #[arg(long, default_value_t = 600)]
    seconds: u64,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = <Args as clap::Parser>::parse();
    let endpoint = std::env::var("SPIFFE_ENDPOINT_SOCKET")
        .context("set SPIFFE_ENDPOINT_SOCKET=unix:///path/to/the/agent/api.sock")?;
    let options = WatchOptions {
        endpoint,
        max_updates: args.updates,
        deadline: Duration::from_secs(args.seconds),
    };
    let (_, end) = watch(&options, print_update).await?;
    match end {
        End::Updates => println!("stopping after {} updates", args.updates),
        End::Deadline => println!("stopping after {} seconds", args.seconds),
        End::Withdrawn(reason) => println!("identity withdrawn: {reason}"),
        End::Closed => println!("the agent closed the stream"),
    }
    Ok(())
}
