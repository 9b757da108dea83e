//! `hallmark-server image register | list | show | retire`: the image verbs
//! that talk to a running issuer.

use std::path::PathBuf;

use anyhow::Context as _;
use clap::Args;
use hallmark_proto::admin::{
    Image, ListImagesRequest, RegisterImageRequest, RetireImageRequest, ShowImageRequest,
};

use super::{AdminArgs, Output, print_json, rpc_error, timestamp};
use crate::cli::output::outln;
use crate::image::MAX_ENVELOPE_BYTES;
use crate::image::text::escape;

/// `image register`.
#[derive(Debug, Args)]
pub struct RegisterArgs {
    /// The signed envelope (`IMAGE.dsse.json`).
    pub envelope: PathBuf,
    /// Output format.
    #[arg(long, value_enum, default_value_t)]
    pub output: Output,
    /// How to reach the issuer.
    #[command(flatten)]
    pub admin: AdminArgs,
}

/// `image list`.
#[derive(Debug, Args)]
pub struct ListArgs {
    /// Include retired images (explicitly retired or past `not_after`).
    #[arg(long)]
    pub all: bool,
    /// Only images that grant this SPIFFE ID.
    #[arg(long, value_name = "SPIFFE_ID")]
    pub spiffe_id: Option<String>,
    /// Only images of this owner (exact match).
    #[arg(long)]
    pub owner: Option<String>,
    /// Only images of this risk tier.
    #[arg(long, value_name = "TIER", value_parser = crate::image::RiskTier::new)]
    pub risk_tier: Option<crate::image::RiskTier>,
    /// Only images whose review date has passed.
    #[arg(long)]
    pub review_overdue: bool,
    /// Output format.
    #[arg(long, value_enum, default_value_t)]
    pub output: Output,
    /// How to reach the issuer.
    #[command(flatten)]
    pub admin: AdminArgs,
}

/// `image show`.
#[derive(Debug, Args)]
pub struct ShowArgs {
    /// `NAME` (every version) or `NAME@VERSION`.
    pub image: String,
    /// Output format.
    #[arg(long, value_enum, default_value_t)]
    pub output: Output,
    /// How to reach the issuer.
    #[command(flatten)]
    pub admin: AdminArgs,
}

/// `image retire`.
#[derive(Debug, Args)]
pub struct RetireArgs {
    /// `NAME@VERSION`.
    pub image: String,
    /// Why (recorded in the audit trail).
    #[arg(long)]
    pub reason: String,
    /// Output format.
    #[arg(long, value_enum, default_value_t)]
    pub output: Output,
    /// How to reach the issuer.
    #[command(flatten)]
    pub admin: AdminArgs,
}

fn image_json(image: &Image) -> serde_json::Value {
    let mut value = serde_json::json!({
        "name": image.name,
        "version": image.version,
        "status": status_word(image),
        "spiffe_id": image.spiffe_id,
        "owner": image.owner,
        "purpose": image.purpose,
        "risk_tier": image.risk_tier,
        "signers": image.signers,
        "unknown_signers": image.unknown_signers,
        "payload_sha256": image.payload_sha256,
        "registered_at": image.registered_at,
        "registered_by_uid": image.registered_by_uid,
        "review_by": image.review_by,
        "not_after": image.not_after,
        "review_overdue": image.review_overdue,
        "retired": image.retired,
        "retired_reason": image.retired_reason,
        "retired_at": image.retired_at,
        "retired_by_uid": image.retired_by_uid,
        "code_sha256": image.code_sha256,
        "model": image.model,
        "scopes": image.scopes,
        "env_names": image.env_names,
    });
    if !image.verification_error.is_empty() {
        value["verification_error"] = image.verification_error.clone().into();
    }
    if !image.canonical_json.is_empty() {
        value["manifest"] =
            serde_json::from_str(&image.canonical_json).unwrap_or(serde_json::Value::Null);
    }
    if !image.envelope.is_empty() {
        value["envelope"] =
            serde_json::from_slice(&image.envelope).unwrap_or(serde_json::Value::Null);
    }
    value
}

fn status_word(image: &Image) -> &'static str {
    if !image.verification_error.is_empty() {
        "INVALID"
    } else if image.retired {
        "retired"
    } else if image.review_overdue {
        "review overdue"
    } else {
        "active"
    }
}

fn uid_text(uid: Option<u32>) -> String {
    uid.map_or_else(|| "unknown uid".to_owned(), |u| format!("uid {u}"))
}

/// `image show`'s text. Text an earlier release let into a signed image
/// (control and bidirectional characters) is escaped: see
/// [`crate::image::text`].
fn print_image(image: &Image) -> anyhow::Result<()> {
    outln!(
        "Image         : {}@{} ({})",
        image.name,
        image.version,
        status_word(image)
    )?;
    if !image.verification_error.is_empty() {
        outln!(
            "Verification  : FAILED: {}",
            escape(&image.verification_error)
        )?;
        outln!("                (the image does not mint until this is fixed)")?;
    }
    outln!("SPIFFE ID     : {}", image.spiffe_id)?;
    outln!("Owner         : {}", escape(&image.owner))?;
    outln!("Purpose       : {}", escape(&image.purpose))?;
    outln!("Risk tier     : {}", image.risk_tier)?;
    outln!("Code sha256   : {}", image.code_sha256.join(", "))?;
    if !image.model.is_empty() {
        outln!("Model         : {}", escape(&image.model))?;
    }
    if !image.env_names.is_empty() {
        outln!("Env required  : {}", image.env_names.join(", "))?;
    }
    if !image.scopes.is_empty() {
        outln!("Scopes        : {}", escape(&image.scopes.join(" ")))?;
    }
    outln!("Signers       : {}", image.signers.join(", "))?;
    if !image.unknown_signers.is_empty() {
        outln!(
            "Untrusted sigs: {} (did not count)",
            image.unknown_signers.join(", ")
        )?;
    }
    let overdue = if image.review_overdue {
        " (OVERDUE)"
    } else {
        ""
    };
    outln!("Review by     : {}{overdue}", timestamp(image.review_by))?;
    outln!("Not after     : {}", timestamp(image.not_after))?;
    outln!(
        "Registered    : {} by {}",
        timestamp(image.registered_at),
        uid_text(image.registered_by_uid)
    )?;
    outln!("Payload sha256: {}", image.payload_sha256)?;
    if image.retired {
        let by = image
            .retired_by_uid
            .map_or_else(|| "automatically".to_owned(), |uid| format!("by uid {uid}"));
        outln!(
            "Retired       : {} {by}: {}",
            timestamp(image.retired_at),
            escape(&image.retired_reason)
        )?;
    }
    Ok(())
}

fn split_ref(text: &str) -> (String, String) {
    match text.split_once('@') {
        Some((name, version)) => (name.to_owned(), version.to_owned()),
        None => (text.to_owned(), String::new()),
    }
}

/// `image register`.
pub async fn register(args: RegisterArgs) -> anyhow::Result<()> {
    let path = &args.envelope;
    let size = std::fs::metadata(path)
        .with_context(|| format!("{}: cannot read", path.display()))?
        .len();
    if size > MAX_ENVELOPE_BYTES as u64 {
        anyhow::bail!(
            "{}: {size} bytes is larger than the {MAX_ENVELOPE_BYTES}-byte limit for an envelope",
            path.display()
        );
    }
    let envelope =
        std::fs::read(path).with_context(|| format!("{}: cannot read", path.display()))?;
    serde_json::from_slice::<serde_json::Value>(&envelope)
        .with_context(|| format!("{}: not a JSON DSSE envelope (truncated?)", path.display()))?;
    let mut client = args.admin.client().await?;
    let response = client
        .register_image(RegisterImageRequest { envelope })
        .await
        .map_err(|s| rpc_error(&format!("image register {}", path.display()), s))?
        .into_inner();
    let image = response.image.context("the issuer returned no image")?;
    match args.output {
        Output::Json => print_json(&serde_json::json!({
            "created": response.created,
            "image": image_json(&image),
        })),
        Output::Text => {
            let verb = if response.created {
                "Registered"
            } else {
                "Already registered"
            };
            outln!(
                "{verb} {}@{} as {}",
                image.name,
                image.version,
                image.spiffe_id
            )?;
            outln!("Signed by {}", image.signers.join(", "))?;
            Ok(())
        }
    }
}

/// `image list`.
pub async fn list(args: ListArgs) -> anyhow::Result<()> {
    let mut client = args.admin.client().await?;
    let mut images = client
        .list_images(ListImagesRequest {})
        .await
        .map_err(|s| rpc_error("image list", s))?
        .into_inner()
        .images;
    // The API lists every image; retired ones are shown on request. An
    // image that fails verification is always shown (unless a filter
    // excludes it).
    let total = images.len();
    if !args.all {
        images.retain(|i| !i.retired || !i.verification_error.is_empty());
    }
    let hidden = total - images.len();
    images.retain(|image| args.selects(image));
    match args.output {
        Output::Json => print_json(&serde_json::json!({
            "images": images.iter().map(image_json).collect::<Vec<_>>(),
        })),
        Output::Text => {
            outln!(
                "{} registered image{}{}",
                images.len(),
                if images.len() == 1 { "" } else { "s" },
                if hidden > 0 {
                    format!(" ({hidden} retired not shown: --all)")
                } else {
                    String::new()
                }
            )?;
            for image in &images {
                outln!(
                    "{:<40} {:<15} {:<9} {:<30} {}",
                    format!("{}@{}", image.name, image.version),
                    status_word(image),
                    image.risk_tier,
                    escape(&image.owner),
                    image.spiffe_id
                )?;
            }
            Ok(())
        }
    }
}

impl ListArgs {
    /// Whether `image` passes every filter given.
    fn selects(&self, image: &Image) -> bool {
        self.spiffe_id
            .as_ref()
            .is_none_or(|id| *id == image.spiffe_id)
            && self.owner.as_ref().is_none_or(|o| *o == image.owner)
            && self
                .risk_tier
                .is_none_or(|tier| tier.as_str() == image.risk_tier)
            && (!self.review_overdue || image.review_overdue)
    }
}

/// `image show`.
pub async fn show(args: ShowArgs) -> anyhow::Result<()> {
    let (name, version) = split_ref(&args.image);
    let mut client = args.admin.client().await?;
    let images = client
        .show_image(ShowImageRequest { name, version })
        .await
        .map_err(|s| rpc_error(&format!("image show {}", args.image), s))?
        .into_inner()
        .images;
    match args.output {
        Output::Json => print_json(&serde_json::json!({
            "images": images.iter().map(image_json).collect::<Vec<_>>(),
        })),
        Output::Text => {
            for (i, image) in images.iter().enumerate() {
                if i > 0 {
                    outln!()?;
                }
                print_image(image)?;
            }
            Ok(())
        }
    }
}

/// `image retire`.
pub async fn retire(args: RetireArgs) -> anyhow::Result<()> {
    let (name, version) = split_ref(&args.image);
    if version.is_empty() {
        anyhow::bail!("{}: name a version to retire, as NAME@VERSION", args.image);
    }
    let mut client = args.admin.client().await?;
    let image = client
        .retire_image(RetireImageRequest {
            name,
            version,
            reason: args.reason,
        })
        .await
        .map_err(|s| rpc_error(&format!("image retire {}", args.image), s))?
        .into_inner();
    match args.output {
        Output::Json => print_json(&image_json(&image)),
        Output::Text => {
            outln!(
                "Retired {}@{}: it mints no more SVIDs",
                image.name,
                image.version
            )?;
            Ok(())
        }
    }
}
