//! `hallmark-server bundle show`.

use clap::{Args, Subcommand, ValueEnum};
use hallmark_proto::admin::ShowBundleRequest;

use super::{AdminArgs, rpc_error};
use crate::cli::output::{out, outln};

/// `bundle` verbs.
#[derive(Debug, Subcommand)]
pub enum BundleCommand {
    /// Print the trust bundle.
    Show(ShowArgs),
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

/// Runs a `bundle` command.
pub async fn run(cmd: BundleCommand) -> anyhow::Result<()> {
    let BundleCommand::Show(args) = cmd;
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
