//! Matching workload evidence against registered gold images.
//!
//! Images are indexed by every executable digest they allow, so a lookup is
//! one hash probe plus the constraint checks of the few images that share a
//! binary, whatever the number of registered images. Every constraint of an
//! image must hold for it to match; a workload may match several images and
//! then receives one SVID per image.

use std::collections::{BTreeSet, HashMap};
use std::fmt;
use std::sync::Arc;
use std::time::SystemTime;

use hallmark_ca::id::SpiffeId;
use hallmark_proto::node::WorkloadEvidence;

use crate::image::GoldImage;

/// A registered image the matcher may select, already signature-verified.
#[derive(Debug, Clone)]
pub struct Candidate {
    /// The image.
    pub image: GoldImage,
    /// Key IDs of the trusted signers that counted for it.
    pub signers: Vec<String>,
    /// Retired by an operator (images past `not_after` are also skipped).
    pub retired: bool,
}

/// The agent that sent the evidence.
#[derive(Debug, Clone, Copy)]
pub struct NodeContext<'a> {
    /// The agent's SPIFFE ID.
    pub agent: &'a SpiffeId,
    /// How the agent attested (`join_token`, `x509pop`).
    pub attestor: &'a str,
}

/// Lets the kill switch veto an otherwise matching image.
pub trait RevocationFilter: Send + Sync {
    /// `Some(reason)` when a revocation covers this image, workload or node.
    fn revoked(
        &self,
        image: &GoldImage,
        evidence: &WorkloadEvidence,
        node: &SpiffeId,
    ) -> Option<String>;
}

/// No revocations.
#[derive(Debug, Default, Clone, Copy)]
pub struct NoRevocations;

impl RevocationFilter for NoRevocations {
    fn revoked(&self, _: &GoldImage, _: &WorkloadEvidence, _: &SpiffeId) -> Option<String> {
        None
    }
}

/// Why one image did not match. Environment values are never included.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Mismatch {
    /// The image is retired or past its `not_after`.
    ImageRetired,
    /// A revocation covers it.
    Revoked(String),
    /// The agent is not among the image's allowed nodes.
    NodeNotAllowed,
    /// The executable runs from another path than the image requires.
    CodePathMismatch,
    /// The process runs as another uid.
    UidMismatch {
        /// Required.
        expected: u32,
        /// Observed.
        found: u32,
    },
    /// The process runs with another primary gid.
    GidMismatch {
        /// Required.
        expected: u32,
        /// Observed.
        found: u32,
    },
    /// The image binds an application tree but none was measured.
    AppTreeMissing,
    /// The application tree's digest differs.
    AppTreeMismatch,
    /// The image requires a model but none was measured.
    ModelMissing,
    /// The model's digest differs.
    ModelMismatch,
    /// A required environment variable is missing or has another value.
    EnvMismatch(String),
}

impl fmt::Display for Mismatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Mismatch::ImageRetired => write!(f, "image retired"),
            Mismatch::Revoked(reason) => write!(f, "revoked: {reason}"),
            Mismatch::NodeNotAllowed => write!(f, "node not allowed"),
            Mismatch::CodePathMismatch => write!(f, "executable path differs"),
            Mismatch::UidMismatch { expected, found } => {
                write!(
                    f,
                    "uid mismatch (runs as {found}, image requires {expected})"
                )
            }
            Mismatch::GidMismatch { expected, found } => {
                write!(
                    f,
                    "gid mismatch (runs as {found}, image requires {expected})"
                )
            }
            Mismatch::AppTreeMissing => write!(f, "app tree missing"),
            Mismatch::AppTreeMismatch => write!(f, "app tree mismatch"),
            Mismatch::ModelMissing => write!(f, "model missing"),
            Mismatch::ModelMismatch => write!(f, "model digest mismatch"),
            Mismatch::EnvMismatch(name) => write!(f, "env mismatch ({name})"),
        }
    }
}

/// No image matched.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NoMatch {
    /// The executable digest that was looked up.
    pub code_sha256: String,
    /// For every image registered for that digest, why it did not match.
    /// Empty: the digest is in no registered image.
    pub reasons: Vec<(String, Mismatch)>,
}

impl fmt::Display for NoMatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.reasons.is_empty() {
            return write!(
                f,
                "code digest unknown: no gold image allows executable sha256 {}",
                self.code_sha256
            );
        }
        write!(f, "no gold image matches: ")?;
        for (i, (image, why)) in self.reasons.iter().enumerate() {
            if i > 0 {
                write!(f, "; ")?;
            }
            write!(f, "{image}: {why}")?;
        }
        Ok(())
    }
}

impl std::error::Error for NoMatch {}

/// The image index.
#[derive(Debug, Default, Clone)]
pub struct Matcher {
    by_code: HashMap<String, Vec<Arc<Candidate>>>,
    env_names: BTreeSet<String>,
    images: usize,
}

impl Matcher {
    /// Indexes `candidates`.
    pub fn new(candidates: impl IntoIterator<Item = Candidate>) -> Self {
        let mut matcher = Matcher::default();
        for candidate in candidates {
            let candidate = Arc::new(candidate);
            matcher.images += 1;
            matcher
                .env_names
                .extend(candidate.image.env.keys().map(|k| k.as_str().to_owned()));
            for digest in &candidate.image.code.sha256 {
                matcher
                    .by_code
                    .entry(digest.as_str().to_owned())
                    .or_default()
                    .push(candidate.clone());
            }
        }
        for list in matcher.by_code.values_mut() {
            list.sort_by_key(|c| c.image.image_ref());
        }
        matcher
    }

    /// Number of indexed images.
    pub fn len(&self) -> usize {
        self.images
    }

    /// Whether no image is indexed.
    pub fn is_empty(&self) -> bool {
        self.images == 0
    }

    /// The environment variable names some image references: the only ones
    /// agents may read into evidence.
    pub fn env_names(&self) -> &BTreeSet<String> {
        &self.env_names
    }

    /// Where the images for `code_sha256` say the application tree and the
    /// model live, for agents measuring a workload that declared neither.
    pub fn path_hints(&self, code_sha256: &str) -> (BTreeSet<String>, BTreeSet<String>) {
        let mut app = BTreeSet::new();
        let mut model = BTreeSet::new();
        for candidate in self.by_code.get(code_sha256).into_iter().flatten() {
            app.extend(candidate.image.code.app_path.clone());
            model.extend(candidate.image.model.as_ref().and_then(|m| m.path.clone()));
        }
        (app, model)
    }

    /// Path hints for every executable digest that has any (for `Sync`).
    pub fn all_path_hints(&self) -> Vec<(String, BTreeSet<String>, BTreeSet<String>)> {
        let mut hints: Vec<_> = self
            .by_code
            .keys()
            .map(|code| {
                let (app, model) = self.path_hints(code);
                (code.clone(), app, model)
            })
            .filter(|(_, app, model)| !(app.is_empty() && model.is_empty()))
            .collect();
        hints.sort();
        hints
    }

    /// Every image the evidence satisfies (sorted by `name@version`), or why none does.
    pub fn match_evidence(
        &self,
        evidence: &WorkloadEvidence,
        node: NodeContext<'_>,
        revocations: &dyn RevocationFilter,
        now: SystemTime,
    ) -> Result<Vec<Arc<Candidate>>, NoMatch> {
        let candidates = self
            .by_code
            .get(&evidence.exe_sha256)
            .map(Vec::as_slice)
            .unwrap_or_default();
        let mut matched = Vec::new();
        let mut reasons = Vec::new();
        for candidate in candidates {
            match check(candidate, evidence, node, revocations, now) {
                Ok(()) => matched.push(candidate.clone()),
                Err(why) => reasons.push((candidate.image.image_ref(), why)),
            }
        }
        if matched.is_empty() {
            return Err(NoMatch {
                code_sha256: evidence.exe_sha256.clone(),
                reasons,
            });
        }
        Ok(matched)
    }
}

/// The first constraint of `candidate` that the evidence fails.
fn check(
    candidate: &Candidate,
    evidence: &WorkloadEvidence,
    node: NodeContext<'_>,
    revocations: &dyn RevocationFilter,
    now: SystemTime,
) -> Result<(), Mismatch> {
    let image = &candidate.image;
    if candidate.retired || image.expired(now) {
        return Err(Mismatch::ImageRetired);
    }
    if let Some(nodes) = &image.nodes {
        let prefix_ok = nodes.spiffe_id_prefixes.is_empty()
            || nodes.spiffe_id_prefixes.iter().any(|prefix| {
                node.agent.trust_domain() == prefix.trust_domain()
                    && node.agent.has_path_prefix(prefix.path())
            });
        let attestor_ok = nodes.attestors.is_empty()
            || nodes.attestors.iter().any(|a| a.as_str() == node.attestor);
        if !(prefix_ok && attestor_ok) {
            return Err(Mismatch::NodeNotAllowed);
        }
    }
    if image
        .code
        .path
        .as_ref()
        .is_some_and(|path| *path != evidence.exe_path)
    {
        return Err(Mismatch::CodePathMismatch);
    }
    if let Some(unix) = &image.unix {
        if let Some(expected) = unix.uid.filter(|uid| *uid != evidence.uid) {
            return Err(Mismatch::UidMismatch {
                expected,
                found: evidence.uid,
            });
        }
        if let Some(expected) = unix.gid.filter(|gid| *gid != evidence.gid) {
            return Err(Mismatch::GidMismatch {
                expected,
                found: evidence.gid,
            });
        }
    }
    if let Some(expected) = &image.code.app_digest {
        match &evidence.app {
            None => return Err(Mismatch::AppTreeMissing),
            Some(app) if app.digest != expected.as_str() => return Err(Mismatch::AppTreeMismatch),
            Some(_) => {}
        }
    }
    if let Some(model) = &image.model {
        match &evidence.model {
            None => return Err(Mismatch::ModelMissing),
            Some(found) if found.digest != model.digest.as_str() => {
                return Err(Mismatch::ModelMismatch);
            }
            Some(_) => {}
        }
    }
    for (name, value) in &image.env {
        if evidence.env.get(name.as_str()) != Some(value) {
            return Err(Mismatch::EnvMismatch(name.as_str().to_owned()));
        }
    }
    if let Some(reason) = revocations.revoked(image, evidence, node.agent) {
        return Err(Mismatch::Revoked(reason));
    }
    Ok(())
}

#[cfg(test)]
mod tests;
