//! `hallmark-server kill (--spiffe-id ID | --image NAME[@VERSION] | --code
//! SHA256 | --model DIGEST | --node AGENT-ID) --reason TEXT`, `kill list`,
//! `kill lift ID --reason TEXT`: the kill switch.
//!
//! Exactly one target is enforced here (clap refuses two, or none, before
//! anything is sent); everything else (formats, trust domain, whether the
//! issuer knows the target, the reason) is checked by the issuer, so the
//! CLI and raw API callers get the same answers.

use anyhow::Context as _;
use clap::{Args, Subcommand};
use hallmark_proto::admin::{
    CreateRevocationRequest, LiftRevocationRequest, ListRevocationsRequest, Revocation,
    RevocationKind,
};

use super::{AdminArgs, Output, print_json, rpc_error, timestamp};
use crate::cli::output::outln;
use crate::image::text::escape;

/// `kill`: creates a revocation, or runs one of its verbs.
#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true, subcommand_negates_reqs = true)]
pub struct KillCommand {
    /// `list` or `lift`; none to create a revocation.
    #[command(subcommand)]
    pub verb: Option<KillVerb>,
    /// What to revoke, and why.
    #[command(flatten)]
    pub create: CreateArgs,
}

/// `kill` verbs.
#[derive(Debug, Subcommand)]
pub enum KillVerb {
    /// List every revocation, lifted ones included, oldest first.
    List(ListArgs),
    /// Lift a revocation: what it matched may be issued again.
    Lift(LiftArgs),
}

/// The flags of `kill` itself.
#[derive(Debug, Args)]
pub struct CreateArgs {
    /// What to revoke: exactly one.
    #[command(flatten)]
    pub target: TargetArgs,
    /// Why (required; kept with the revocation and audited).
    #[arg(long, required = true)]
    pub reason: Option<String>,
    /// Output format.
    #[arg(long, value_enum, default_value_t)]
    pub output: Output,
    /// How to reach the issuer.
    #[command(flatten)]
    pub admin: AdminArgs,
}

/// The targets of `kill`.
#[derive(Debug, Args)]
#[group(required = true, multiple = false)]
pub struct TargetArgs {
    /// Every credential with this workload SPIFFE ID.
    #[arg(long, value_name = "ID")]
    pub spiffe_id: Option<String>,
    /// Every credential of a gold image: NAME (all versions) or NAME@VERSION.
    #[arg(long, value_name = "NAME[@VERSION]")]
    pub image: Option<String>,
    /// Every workload running the executable with this SHA-256 (64 hex).
    #[arg(long, value_name = "SHA256")]
    pub code: Option<String>,
    /// Every credential bound to this model digest (sha256:<hex>), i.e. of
    /// every image that requires the model.
    #[arg(long, value_name = "DIGEST")]
    pub model: Option<String>,
    /// An agent (spiffe://<td>/hallmark/agent/...): refused by the issuer,
    /// and every credential minted through it.
    #[arg(long, value_name = "AGENT-ID")]
    pub node: Option<String>,
}

/// `kill list`.
#[derive(Debug, Args)]
pub struct ListArgs {
    /// Output format.
    #[arg(long, value_enum, default_value_t)]
    pub output: Output,
    /// How to reach the issuer.
    #[command(flatten)]
    pub admin: AdminArgs,
}

/// `kill lift`.
#[derive(Debug, Args)]
pub struct LiftArgs {
    /// The revocation's id, as `kill` and `kill list` print it.
    pub id: String,
    /// Why (required; kept with the revocation and audited).
    #[arg(long)]
    pub reason: String,
    /// Output format.
    #[arg(long, value_enum, default_value_t)]
    pub output: Output,
    /// How to reach the issuer.
    #[command(flatten)]
    pub admin: AdminArgs,
}

/// Runs a `kill` command.
pub async fn run(cmd: KillCommand) -> anyhow::Result<()> {
    match cmd.verb {
        None => create(cmd.create).await,
        Some(KillVerb::List(args)) => list(args).await,
        Some(KillVerb::Lift(args)) => lift(args).await,
    }
}

async fn create(args: CreateArgs) -> anyhow::Result<()> {
    let target = args.target;
    let request = CreateRevocationRequest {
        spiffe_id: target.spiffe_id.unwrap_or_default(),
        image: target.image.unwrap_or_default(),
        code_sha256: target.code.unwrap_or_default(),
        model_digest: target.model.unwrap_or_default(),
        node: target.node.unwrap_or_default(),
        reason: args.reason.context("--reason is required")?,
    };
    let mut client = args.admin.client().await?;
    let revocation = client
        .create_revocation(request)
        .await
        .map_err(|s| rpc_error("kill", s))?
        .into_inner();
    match args.output {
        Output::Json => print_json(&revocation_json(&revocation)),
        Output::Text => {
            outln!(
                "Revocation {} in force: nothing it matches is issued, and every agent has been told",
                revocation.id
            )?;
            print_revocation(&revocation)?;
            Ok(())
        }
    }
}

async fn list(args: ListArgs) -> anyhow::Result<()> {
    let mut client = args.admin.client().await?;
    let revocations = client
        .list_revocations(ListRevocationsRequest {})
        .await
        .map_err(|s| rpc_error("kill list", s))?
        .into_inner()
        .revocations;
    match args.output {
        Output::Json => print_json(&serde_json::json!({
            "revocations": revocations.iter().map(revocation_json).collect::<Vec<_>>(),
        })),
        Output::Text => {
            let in_force = revocations.iter().filter(|r| !r.lifted).count();
            outln!(
                "Found {} revocation{} ({in_force} in force)",
                revocations.len(),
                if revocations.len() == 1 { "" } else { "s" },
            )?;
            for revocation in &revocations {
                outln!()?;
                print_revocation(revocation)?;
            }
            Ok(())
        }
    }
}

async fn lift(args: LiftArgs) -> anyhow::Result<()> {
    let mut client = args.admin.client().await?;
    let revocation = client
        .lift_revocation(LiftRevocationRequest {
            id: args.id.clone(),
            reason: args.reason,
        })
        .await
        .map_err(|s| rpc_error(&format!("kill lift {}", args.id), s))?
        .into_inner();
    match args.output {
        Output::Json => print_json(&revocation_json(&revocation)),
        Output::Text => {
            outln!(
                "Revocation {} lifted: what it matched may be issued again",
                revocation.id
            )?;
            print_revocation(&revocation)?;
            Ok(())
        }
    }
}

fn kind_name(revocation: &Revocation) -> &'static str {
    match RevocationKind::try_from(revocation.kind) {
        Ok(RevocationKind::SpiffeId) => "spiffe_id",
        Ok(RevocationKind::Image) => "image",
        Ok(RevocationKind::Code) => "code",
        Ok(RevocationKind::Model) => "model",
        Ok(RevocationKind::Node) => "node",
        Ok(RevocationKind::Unspecified) | Err(_) => "unknown",
    }
}

fn revocation_json(revocation: &Revocation) -> serde_json::Value {
    let mut value = serde_json::json!({
        "id": revocation.id,
        "status": if revocation.lifted { "lifted" } else { "in_force" },
        "kind": kind_name(revocation),
        "target": revocation.target,
        "reason": revocation.reason,
        "created_at": revocation.created_at,
        "created_by_uid": revocation.created_by_uid,
    });
    if revocation.lifted {
        value["lifted_at"] = revocation.lifted_at.into();
        value["lift_reason"] = revocation.lift_reason.clone().into();
        value["lifted_by_uid"] = revocation.lifted_by_uid.into();
    }
    value
}

fn uid_text(uid: Option<u32>) -> String {
    uid.map_or_else(|| "unknown uid".to_owned(), |u| format!("uid {u}"))
}

fn print_revocation(revocation: &Revocation) -> anyhow::Result<()> {
    outln!("ID        : {}", revocation.id)?;
    outln!(
        "Status    : {}",
        if revocation.lifted {
            "lifted"
        } else {
            "in force"
        }
    )?;
    outln!(
        "Target    : {} {}",
        kind_name(revocation),
        revocation.target
    )?;
    outln!("Reason    : {}", escape(&revocation.reason))?;
    outln!(
        "Created   : {} by {}",
        timestamp(revocation.created_at),
        uid_text(revocation.created_by_uid)
    )?;
    if revocation.lifted {
        outln!(
            "Lifted    : {} by {}: {}",
            timestamp(revocation.lifted_at),
            uid_text(revocation.lifted_by_uid),
            escape(&revocation.lift_reason)
        )?;
    }
    Ok(())
}
