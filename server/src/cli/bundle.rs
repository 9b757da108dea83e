//! `hallmark-server bundle show` and `bundle list` (the federated bundles).

use clap::{Args, Subcommand, ValueEnum};
use hallmark_proto::admin::{FederatedBundle, ListFederatedBundlesRequest, ShowBundleRequest};
use serde_json::json;

use super::{AdminArgs, Output, print_json, rpc_error, timestamp};
use crate::cli::output::{out, outln};

/// `bundle` verbs.
#[derive(Debug, Subcommand)]
pub enum BundleCommand {
    /// Print the trust bundle.
    Show(ShowArgs),
    /// List the bundles of the federated trust domains (SPIFFE
    /// Federation), with where each comes from and how its last refresh went.
    #[command(visible_alias = "list-federated")]
    List(ListArgs),
}

/// Bundle formats.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, ValueEnum)]
pub enum BundleFormat {
    /// The X.509 authorities as PEM certificates.
    #[default]
    Pem,
    /// The SPIFFE bundle format (JWKS with X.509 and JWT authorities).
    Jwks,
}

/// Flags of `bundle show`.
#[derive(Debug, Args)]
pub struct ShowArgs {
    /// Output format.
    #[arg(long, value_enum, default_value_t)]
    pub format: BundleFormat,
    /// How to reach the issuer.
    #[command(flatten)]
    pub admin: AdminArgs,
}

/// Flags of `bundle list`.
#[derive(Debug, Args)]
pub struct ListArgs {
    /// Only this trust domain (`partner.example` or `spiffe://partner.example`).
    #[arg(long)]
    pub id: Option<String>,
    /// How to print each bundle in text output.
    #[arg(long, value_enum, default_value_t)]
    pub format: BundleFormat,
    /// Text, or JSON for scripts.
    #[arg(long, value_enum, default_value_t)]
    pub output: Output,
    /// How to reach the issuer.
    #[command(flatten)]
    pub admin: AdminArgs,
}

/// Runs a `bundle` command.
pub async fn run(cmd: BundleCommand) -> anyhow::Result<()> {
    match cmd {
        BundleCommand::Show(args) => show(args).await,
        BundleCommand::List(args) => list(args).await,
    }
}

async fn show(args: ShowArgs) -> anyhow::Result<()> {
    let mut client = args.admin.client().await?;
    let bundle = client
        .show_bundle(ShowBundleRequest {})
        .await
        .map_err(|s| rpc_error("bundle show", s))?
        .into_inner();
    match args.format {
        BundleFormat::Pem => out!("{}", bundle.pem)?,
        BundleFormat::Jwks => outln!("{}", bundle.jwks)?,
    }
    Ok(())
}

async fn list(args: ListArgs) -> anyhow::Result<()> {
    let mut client = args.admin.client().await?;
    let bundles = client
        .list_federated_bundles(ListFederatedBundlesRequest {
            trust_domain: args.id.clone().unwrap_or_default(),
        })
        .await
        .map_err(|s| rpc_error("bundle list", s))?
        .into_inner()
        .bundles;
    if args.output == Output::Json {
        let items: Vec<serde_json::Value> = bundles.iter().map(to_json).collect();
        return print_json(&json!(items));
    }
    if bundles.is_empty() {
        outln!("no federated trust domains (see [[federation.trust_domains]] in server.toml)")?;
        return Ok(());
    }
    for (i, b) in bundles.iter().enumerate() {
        if i > 0 {
            outln!()?;
        }
        outln!("Trust domain      : {}", b.trust_domain)?;
        outln!(
            "Endpoint          : {} ({})",
            b.bundle_endpoint_url,
            b.profile
        )?;
        if !b.endpoint_spiffe_id.is_empty() {
            outln!("Endpoint SPIFFE ID: {}", b.endpoint_spiffe_id)?;
        }
        if b.present {
            outln!(
                "Bundle            : sequence {}, refresh hint {}s, from {}",
                b.sequence,
                b.refresh_hint_seconds,
                b.source
            )?;
        } else {
            outln!("Bundle            : none yet")?;
        }
        outln!("Last success      : {}", timestamp(b.last_success))?;
        outln!("Next refresh      : {}", timestamp(b.next_refresh))?;
        if !b.last_error.is_empty() {
            outln!("Last error        : {}", b.last_error)?;
        }
        if b.present {
            match args.format {
                BundleFormat::Pem => out!("{}", b.pem)?,
                BundleFormat::Jwks => outln!("{}", b.jwks)?,
            }
        }
    }
    Ok(())
}

fn to_json(b: &FederatedBundle) -> serde_json::Value {
    let bundle: serde_json::Value = if b.present {
        serde_json::from_str(&b.jwks).unwrap_or(serde_json::Value::Null)
    } else {
        serde_json::Value::Null
    };
    let time = |secs: i64| (secs > 0).then(|| timestamp(secs));
    json!({
        "trust_domain": b.trust_domain,
        "bundle_endpoint_url": b.bundle_endpoint_url,
        "profile": b.profile,
        "endpoint_spiffe_id": (!b.endpoint_spiffe_id.is_empty()).then_some(&b.endpoint_spiffe_id),
        "bundle": bundle,
        "sequence": b.present.then_some(b.sequence),
        "refresh_hint_seconds": b.present.then_some(b.refresh_hint_seconds),
        "source": (!b.source.is_empty()).then_some(&b.source),
        "last_success": time(b.last_success),
        "last_attempt": time(b.last_attempt),
        "next_refresh": time(b.next_refresh),
        "last_error": (!b.last_error.is_empty()).then_some(&b.last_error),
    })
}
