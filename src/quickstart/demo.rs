//! What an operator prepares for the demo workload: a signing key, a model
//! directory, and the signed gold image.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use anyhow::Context as _;
use sha2::{Digest as _, Sha256};

use hallmark_agent::persist::write_atomic;
use hallmark_attestors::tree::{TreeLimits, digest_tree};
use hallmark_server::image::{Algorithm, Envelope, GoldImage, SigningKey, canonical};

/// The demo image's name, version and SPIFFE ID.
pub(crate) const IMAGE_NAME: &str = "demo-agent";
pub(crate) const IMAGE_VERSION: &str = "1.0.0";
pub(crate) const SPIFFE_ID: &str = "spiffe://example.org/demo-agent";
/// The demo model's name and version.
pub(crate) const MODEL_NAME: &str = "demo-model";
pub(crate) const MODEL_VERSION: &str = "1.0.0";

/// `hallmark-server image keygen`: an Ed25519 key pair, the private key
/// written 0600 as PKCS#8 PEM next to its public key.
pub(crate) fn keygen(path: &Path) -> anyhow::Result<SigningKey> {
    let der = SigningKey::generate_pkcs8(Algorithm::Ed25519)?;
    let key = SigningKey::from_pkcs8_der(&der)?;
    write_atomic(path, SigningKey::pkcs8_pem(&der).as_bytes(), 0o600)?;
    write_atomic(
        &path.with_extension("key.pub"),
        key.public_key().to_pem().as_bytes(),
        0o644,
    )?;
    Ok(key)
}

/// A small model directory and its canonical tree digest.
pub(crate) fn model_dir(dir: &Path) -> anyhow::Result<(PathBuf, String, usize)> {
    std::fs::create_dir_all(dir.join("tokenizer"))?;
    std::fs::write(
        dir.join("config.json"),
        br#"{"architecture":"demo","layers":2,"hidden":64}"#,
    )?;
    std::fs::write(
        dir.join("tokenizer/vocab.txt"),
        b"<s>\n</s>\nhallmark\nidentity\n",
    )?;
    // A megabyte of deterministic "weights".
    let weights: Vec<u8> = (0..1_048_576u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8)
        .collect();
    std::fs::write(dir.join("weights.bin"), weights)?;
    let tree = digest_tree(dir, &TreeLimits::default())
        .with_context(|| format!("cannot digest {}", dir.display()))?;
    let files = tree.files.len();
    Ok((dir.to_owned(), tree.digest, files))
}

/// SHA-256 of the running executable, read through `/proc/self/exe` (the
/// file this process runs, whatever its path says now), as the agent
/// measures it.
pub(crate) fn own_exe_sha256() -> anyhow::Result<String> {
    let bytes = std::fs::read("/proc/self/exe").context("cannot read /proc/self/exe")?;
    Ok(hex::encode(Sha256::digest(bytes)))
}

/// The gold image manifest (the TOML an operator writes).
pub(crate) fn manifest(code_sha256: &str, model_digest: &str, model_path: &Path) -> String {
    let not_after =
        humantime::format_rfc3339_seconds(SystemTime::now() + Duration::from_secs(365 * 24 * 3600))
            .to_string();
    let not_after = not_after.get(..10).unwrap_or("2099-12-31");
    format!(
        r#"name = "{IMAGE_NAME}"
version = "{IMAGE_VERSION}"
spiffe_id = "{SPIFFE_ID}"
owner = "quickstart@example.org"
purpose = "the quickstart's demo workload"
risk_tier = "low"
not_after = {not_after}
[code]
sha256 = ["{code_sha256}"]
[model]
name = "{MODEL_NAME}"
version = "{MODEL_VERSION}"
digest = "{model_digest}"
path = "{}"
"#,
        model_path.display()
    )
}

/// `hallmark-server image sign`: the manifest's canonical payload in a DSSE
/// envelope signed by `key`, written to `out`.
pub(crate) fn sign(manifest: &str, key: &SigningKey, out: &Path) -> anyhow::Result<Vec<u8>> {
    let image = GoldImage::from_toml(manifest).context("the demo manifest does not parse")?;
    let envelope = Envelope::sign(&canonical::encode(&image), key)?.to_json();
    write_atomic(out, &envelope, 0o644)?;
    Ok(envelope)
}
