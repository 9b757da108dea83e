//! `hallmark-server image ...`: signed gold images.
//!
//! The offline verbs need no server: `keygen`, `digest`, `sign`, `cosign`,
//! `verify`. `verify` runs exactly what the issuer runs at registration.

use std::fs::{self, OpenOptions};
use std::io::Write as _;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use anyhow::{Context as _, anyhow, bail};
use clap::{Args, Subcommand, ValueEnum};

use hallmark_attestors::tree::{Links, StreamingHasher, TreeLimits, View, digest_tree_in};
use hallmark_ca::id::TrustDomain;

use crate::cli::output::{out, outln};
use crate::image::verify::{SignerFileError, parse_envelope};
use crate::image::{
    Algorithm, DEFAULT_MAX_SVID_TTL, Envelope, GoldImage, ImageContext, MAX_ENVELOPE_BYTES,
    SignaturePolicy, SigningKey, TrustedSigners, VerifiedImage, canonical, verify_envelope,
};

/// `image` verbs.
#[derive(Debug, Subcommand)]
pub enum ImageCommand {
    /// Create a signing key pair: KEY (PKCS#8 PEM, mode 0600) and KEY.pub.
    Keygen(KeygenArgs),
    /// Print the canonical digest of a model or application directory.
    Digest(DigestArgs),
    /// Sign a TOML manifest into a DSSE envelope.
    Sign(SignArgs),
    /// Add a signature to an envelope without touching its payload.
    Cosign(CosignArgs),
    /// Check an envelope offline exactly as the issuer would.
    Verify(VerifyArgs),
    /// Register a signed envelope with the issuer.
    Register(super::image_admin::RegisterArgs),
    /// List registered images (review and retirement status).
    List(super::image_admin::ListArgs),
    /// Show a registered image: NAME or NAME@VERSION.
    Show(super::image_admin::ShowArgs),
    /// Retire NAME@VERSION: it stops minting at once.
    Retire(super::image_admin::RetireArgs),
}

/// Key algorithms offered by `keygen`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, ValueEnum)]
pub enum KeyAlgorithm {
    /// Ed25519.
    #[default]
    Ed25519,
    /// ECDSA P-256 with SHA-256.
    P256,
}

/// `image keygen`.
#[derive(Debug, Args)]
pub struct KeygenArgs {
    /// Private key file to write; the public key goes to KEY.pub.
    #[arg(long, value_name = "KEY")]
    pub out: PathBuf,
    /// Key algorithm.
    #[arg(long, value_enum, default_value_t)]
    pub algorithm: KeyAlgorithm,
    /// Overwrite existing files.
    #[arg(long)]
    pub force: bool,
}

/// `image digest`.
#[derive(Debug, Args)]
pub struct DigestArgs {
    /// The directory.
    #[arg(value_name = "DIR")]
    pub dir: PathBuf,
    /// Also print the line of every file and symlink.
    #[arg(long)]
    pub list: bool,
    /// DIR is an application tree (`code.app_digest`): symbolic links are
    /// recorded by their target and never followed. Without it DIR is a
    /// model (`model.digest`): links are followed within the model root
    /// (DIR, or the repository of a Hugging Face snapshot
    /// `<repo>/snapshots/<rev>`) and any other link is refused.
    #[arg(long)]
    pub app: bool,
}

/// `image sign`.
#[derive(Debug, Args)]
pub struct SignArgs {
    /// Private key (PKCS#8 PEM).
    #[arg(long, value_name = "KEY")]
    pub key: PathBuf,
    /// The TOML manifest.
    #[arg(value_name = "MANIFEST.toml")]
    pub manifest: PathBuf,
    /// Envelope file to write.
    #[arg(long, value_name = "IMAGE.dsse.json")]
    pub out: PathBuf,
}

/// `image cosign`.
#[derive(Debug, Args)]
pub struct CosignArgs {
    /// Private key (PKCS#8 PEM).
    #[arg(long, value_name = "KEY")]
    pub key: PathBuf,
    /// The envelope, rewritten in place.
    #[arg(value_name = "IMAGE.dsse.json")]
    pub envelope: PathBuf,
}

/// `image verify`.
#[derive(Debug, Args)]
pub struct VerifyArgs {
    /// The envelope.
    #[arg(value_name = "IMAGE.dsse.json")]
    pub envelope: PathBuf,
    /// Trusted public keys (SPKI PEM).
    #[arg(long, value_name = "KEY.pub", num_args = 1.., required = true)]
    pub trusted: Vec<PathBuf>,
    /// Trust domain (default: the one of the image's own SPIFFE ID).
    #[arg(long)]
    pub trust_domain: Option<String>,
    /// Cap on SVID lifetimes, e.g. `300s` or `5m`.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "300s")]
    pub max_svid_ttl: Duration,
}

/// Runs an `image` verb.
pub async fn run(cmd: ImageCommand) -> anyhow::Result<()> {
    match cmd {
        ImageCommand::Keygen(args) => keygen(&args),
        ImageCommand::Digest(args) => digest(&args),
        ImageCommand::Sign(args) => sign(&args),
        ImageCommand::Cosign(args) => cosign(&args),
        ImageCommand::Verify(args) => verify(&args),
        ImageCommand::Register(args) => super::image_admin::register(args).await,
        ImageCommand::List(args) => super::image_admin::list(args).await,
        ImageCommand::Show(args) => super::image_admin::show(args).await,
        ImageCommand::Retire(args) => super::image_admin::retire(args).await,
    }
}

fn keygen(args: &KeygenArgs) -> anyhow::Result<()> {
    let public_path = with_suffix(&args.out, ".pub");
    for path in [&args.out, &public_path] {
        if !args.force && fs::symlink_metadata(path).is_ok() {
            bail!(
                "{}: already exists (use --force to overwrite)",
                path.display()
            );
        }
    }
    let algorithm = match args.algorithm {
        KeyAlgorithm::Ed25519 => Algorithm::Ed25519,
        KeyAlgorithm::P256 => Algorithm::P256,
    };
    let der = SigningKey::generate_pkcs8(algorithm)?;
    let key = SigningKey::from_pkcs8_der(&der)?;
    write_atomic(&args.out, SigningKey::pkcs8_pem(&der).as_bytes(), 0o600)?;
    write_atomic(&public_path, key.public_key().to_pem().as_bytes(), 0o644)?;
    outln!(
        "private key  {} ({algorithm}, mode 0600)",
        args.out.display()
    )?;
    outln!("public key   {}", public_path.display())?;
    outln!("keyid        {}", key.keyid())?;
    Ok(())
}

fn digest(args: &DigestArgs) -> anyhow::Result<()> {
    let links = if args.app {
        Links::Record
    } else {
        Links::Follow
    };
    let view = View::own().context("cannot open this process's root and working directory")?;
    let tree = digest_tree_in(
        &view,
        &args.dir,
        links,
        &TreeLimits::default(),
        &StreamingHasher,
    )?;
    if args.list {
        for entry in &tree.files {
            out!("{}", entry.line())?;
        }
    }
    outln!("{}", tree.digest)?;
    Ok(())
}

fn sign(args: &SignArgs) -> anyhow::Result<()> {
    let key = read_key(&args.key)?;
    let text = read_text(&args.manifest)?;
    let image =
        GoldImage::from_toml(&text).map_err(|e| anyhow!("{}: {e}", args.manifest.display()))?;
    image
        .check_new()
        .map_err(|e| anyhow!("{}: {e}", args.manifest.display()))?;
    if image.expired(SystemTime::now()) {
        bail!(
            "{}: field not_after: {} has passed",
            args.manifest.display(),
            image.not_after
        );
    }
    let payload = canonical::encode(&image);
    let envelope = Envelope::sign(&payload, &key)?.to_json();
    if envelope.len() > MAX_ENVELOPE_BYTES {
        bail!(
            "{}: the signed image is {} bytes, the issuer accepts at most {MAX_ENVELOPE_BYTES}",
            args.manifest.display(),
            envelope.len()
        );
    }
    write_atomic(&args.out, &envelope, 0o644)?;
    for (field, ttl) in [("x509_ttl", image.x509_ttl), ("jwt_ttl", image.jwt_ttl)] {
        if ttl.is_some_and(|t| t > DEFAULT_MAX_SVID_TTL.as_secs()) {
            eprintln!("warning: field {field} exceeds the default max_svid_ttl of 300 seconds");
        }
    }
    outln!(
        "signed {} as {} -> {}",
        image.image_ref(),
        key.keyid(),
        args.out.display()
    )?;
    Ok(())
}

fn cosign(args: &CosignArgs) -> anyhow::Result<()> {
    let key = read_key(&args.key)?;
    let path = args.envelope.display();
    let bytes = read_envelope(&args.envelope)?;
    let mut envelope = parse_envelope(&bytes).map_err(|e| anyhow!("{path}: {e}"))?;
    let payload = envelope
        .decode_payload()
        .map_err(|_| anyhow!("{path}: envelope field payload: not standard base64"))?;
    let image = canonical::decode(&payload).map_err(|e| anyhow!("{path}: {e}"))?;
    if envelope.signatures.iter().any(|s| s.keyid == key.keyid()) {
        bail!("{path}: key {} has already signed this image", key.keyid());
    }
    envelope.add_signature(&payload, &key)?;
    write_atomic(&args.envelope, &envelope.to_json(), 0o644)?;
    outln!(
        "cosigned {} as {} ({} signatures)",
        image.image_ref(),
        key.keyid(),
        envelope.signatures.len()
    )?;
    Ok(())
}

fn verify(args: &VerifyArgs) -> anyhow::Result<()> {
    let path = args.envelope.display();
    let signers = TrustedSigners::load(&args.trusted).map_err(|e: SignerFileError| anyhow!(e))?;
    let bytes = read_envelope(&args.envelope)?;
    let trust_domain = match &args.trust_domain {
        Some(td) => TrustDomain::new(td).with_context(|| format!("--trust-domain {td:?}"))?,
        None => own_trust_domain(&bytes).map_err(|e| anyhow!("{path}: {e}"))?,
    };
    let ctx = ImageContext {
        trust_domain,
        max_svid_ttl: args.max_svid_ttl,
        now: SystemTime::now(),
    };
    let policy = SignaturePolicy::default();
    let verified =
        verify_envelope(&bytes, &signers, &policy, &ctx).map_err(|e| anyhow!("{path}: {e}"))?;
    verified
        .image
        .check_new()
        .map_err(|e| anyhow!("{path}: payload {e}"))?;
    print_summary(&verified, &policy, &ctx)?;
    Ok(())
}

/// The trust domain of the image's own SPIFFE ID (read, not yet trusted:
/// `verify_envelope` then checks everything).
fn own_trust_domain(bytes: &[u8]) -> anyhow::Result<TrustDomain> {
    let envelope = parse_envelope(bytes)?;
    let payload = envelope
        .decode_payload()
        .map_err(|_| anyhow!("envelope field payload: not standard base64"))?;
    Ok(canonical::decode(&payload)?.spiffe_id.trust_domain())
}

fn print_summary(
    v: &VerifiedImage,
    policy: &SignaturePolicy,
    ctx: &ImageContext,
) -> anyhow::Result<()> {
    let i = &v.image;
    outln!("image        {}", i.image_ref())?;
    outln!("spiffe_id    {}", i.spiffe_id)?;
    outln!("owner        {}", i.owner)?;
    outln!("purpose      {}", i.purpose)?;
    outln!("risk_tier    {}", i.risk_tier)?;
    for d in &i.code.sha256 {
        outln!("code.sha256  {d}")?;
    }
    if let Some(app) = &i.code.app_digest {
        outln!("code.app     {app}")?;
    }
    if let Some(m) = &i.model {
        outln!("model        {} {} {}", m.name, m.version, m.digest)?;
    }
    if let Some(r) = i.review_by {
        let overdue = if i.review_overdue(ctx.now) {
            " (overdue)"
        } else {
            ""
        };
        outln!("review_by    {r}{overdue}")?;
    }
    outln!("not_after    {}", i.not_after)?;
    for s in &v.signers {
        outln!("signer       {s} (trusted)")?;
    }
    for s in &v.unknown_signers {
        outln!("signer       {s} (unknown, not counted)")?;
    }
    outln!("payload      sha256:{}", v.payload_sha256)?;
    outln!(
        "policy       ok: {} distinct trusted signatures, risk tier {} needs {}",
        v.signers.len(),
        i.risk_tier,
        policy.required(i.risk_tier)
    )?;
    Ok(())
}

fn read_key(path: &Path) -> anyhow::Result<SigningKey> {
    let text = read_text(path)?;
    SigningKey::from_pem(&text).map_err(|e| anyhow!("{}: {e}", path.display()))
}

fn read_text(path: &Path) -> anyhow::Result<String> {
    fs::read_to_string(path).with_context(|| format!("{}: cannot read", path.display()))
}

/// Reads an envelope, refusing files over the issuer's limit before reading.
fn read_envelope(path: &Path) -> anyhow::Result<Vec<u8>> {
    let meta = fs::metadata(path).with_context(|| format!("{}: cannot read", path.display()))?;
    if meta.len() > MAX_ENVELOPE_BYTES as u64 {
        bail!(
            "{}: {} bytes, the limit is {MAX_ENVELOPE_BYTES}",
            path.display(),
            meta.len()
        );
    }
    fs::read(path).with_context(|| format!("{}: cannot read", path.display()))
}

fn with_suffix(path: &Path, suffix: &str) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(suffix);
    PathBuf::from(s)
}

/// Writes `data` to a temporary file beside `path` with `mode`, syncs it,
/// and renames it over `path`.
fn write_atomic(path: &Path, data: &[u8], mode: u32) -> anyhow::Result<()> {
    let tmp = with_suffix(path, &format!(".tmp.{}", std::process::id()));
    let result = (|| -> std::io::Result<()> {
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(&tmp)?;
        file.write_all(data)?;
        file.sync_all()?;
        fs::rename(&tmp, path)
    })();
    if let Err(e) = result {
        let _ = fs::remove_file(&tmp);
        return Err(e).with_context(|| format!("{}: cannot write", path.display()));
    }
    Ok(())
}
