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

use hallmark_attestors::workload::cmdline::{NATIVE_ENV, NODE_ENV, PYTHON_ENV};
use hallmark_ca::id::SpiffeId;
use hallmark_proto::node::WorkloadEvidence;

use crate::image::GoldImage;
use crate::image::types::Interpreter;

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
    /// The image binds an app tree but was signed without
    /// `code.interpreter` (by an earlier release): it never matches.
    InterpreterUnset,
    /// The agent reported no main program in the image's dialect.
    ProgramNotMeasured {
        /// `python` or `node`.
        dialect: String,
    },
    /// The main program could not be read or resolved.
    ProgramUnknown {
        /// Why, from the agent.
        detail: String,
    },
    /// Inline code, standard input or an interactive session, which the
    /// image does not allow.
    InlineNotAllowed {
        /// `inline`, `stdin` or `interactive`.
        kind: String,
    },
    /// The main program is not a file of the app tree.
    ProgramOutsideAppTree {
        /// The script or module as resolved.
        path: String,
    },
    /// Code run before the main program is not in the app tree.
    PreloadOutsideAppTree {
        /// The preload or package file.
        path: String,
    },
    /// An environment variable that changes what the process loads is set
    /// and the image does not pin it.
    LoaderEnvSet {
        /// Its name.
        name: String,
    },
    /// The agent did not report the loaded code.
    LoadedCodeNotMeasured,
    /// Loaded native code that a non-root uid could have written, whose
    /// digest the image does not allow.
    UnprotectedCode {
        /// The mapped file's path.
        path: String,
        /// Its content digest.
        sha256: String,
    },
    /// The image requires the model loaded; the agent did not check it.
    ModelLoadNotMeasured,
    /// A model weight file is neither open nor mapped by the process.
    ModelNotLoaded {
        /// The file's path in the model tree.
        file: String,
        /// The process.
        pid: u32,
    },
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
            Mismatch::InterpreterUnset => write!(
                f,
                "image binds an app tree without code.interpreter: re-sign it with code.interpreter = \"python\", \"node\" or \"none\""
            ),
            Mismatch::ProgramNotMeasured { dialect } => write!(
                f,
                "the agent did not report the {dialect} main program (enable the app_tree attestor; upgrade the agent)"
            ),
            Mismatch::ProgramUnknown { detail } => {
                write!(f, "cannot tell the main program: {detail}")
            }
            Mismatch::InlineNotAllowed { kind } => {
                let what = match kind.as_str() {
                    "inline" => "inline code (-c, -e, -p)",
                    "stdin" => "a program read from standard input",
                    _ => "an interactive session (no program, -i, --inspect)",
                };
                write!(f, "{what} is not allowed by the image (code.allow_inline)")
            }
            Mismatch::ProgramOutsideAppTree { path } => {
                write!(f, "main program {path} is outside the app tree")
            }
            Mismatch::PreloadOutsideAppTree { path } => write!(
                f,
                "code run before the main program, {path}, is outside the app tree"
            ),
            Mismatch::LoaderEnvSet { name } => write!(
                f,
                "{name} is set (it changes what the process loads): unset it, or pin its value in the image's env"
            ),
            Mismatch::LoadedCodeNotMeasured => {
                write!(
                    f,
                    "the agent did not report the loaded code (upgrade the agent)"
                )
            }
            Mismatch::UnprotectedCode { path, sha256 } => write!(
                f,
                "loaded code {path} is writable by the workload and not allowed by the image (sha256 {sha256}): add the digest to code.libraries or install the file root-owned"
            ),
            Mismatch::ModelLoadNotMeasured => write!(
                f,
                "the agent did not check whether the model is loaded (upgrade the agent)"
            ),
            Mismatch::ModelNotLoaded { file, pid } => write!(
                f,
                "model is not loaded: {file} is neither open nor mapped by process {pid}"
            ),
        }
    }
}

/// What agents must measure for one executable digest (sent over `Sync`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CodeHints {
    /// Where its images say the app tree lives.
    pub app: BTreeSet<String>,
    /// Where its images say the model lives.
    pub model: BTreeSet<String>,
    /// The dialects its interpreter images read the command line in.
    pub interpreters: BTreeSet<&'static str>,
    /// Some image requires the model's weights open or mapped.
    pub require_loaded: bool,
    /// How many images bind the executable: the most SVIDs one workload
    /// of it can get (the keys an agent sends).
    pub images: usize,
}

impl CodeHints {
    /// Whether there is nothing to send.
    pub fn is_empty(&self) -> bool {
        self.app.is_empty()
            && self.model.is_empty()
            && self.interpreters.is_empty()
            && !self.require_loaded
            && self.images <= 1
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

    /// What the agent must measure for `code_sha256` beyond the process:
    /// the path hints, the dialects of its interpreter images and whether
    /// one requires the model loaded.
    pub fn code_hints(&self, code_sha256: &str) -> CodeHints {
        let (app, model) = self.path_hints(code_sha256);
        let mut hints = CodeHints {
            app,
            model,
            ..CodeHints::default()
        };
        for candidate in self.by_code.get(code_sha256).into_iter().flatten() {
            let image = &candidate.image;
            hints.images += 1;
            match image.code.interpreter {
                Some(Interpreter::Python) => {
                    hints.interpreters.insert("python");
                }
                Some(Interpreter::Node) => {
                    hints.interpreters.insert("node");
                }
                Some(Interpreter::None) | None => {}
            }
            hints.require_loaded |= image.model.as_ref().is_some_and(|m| m.require_loaded);
        }
        hints
    }

    /// Hints for every executable digest that has any (for `Sync`).
    pub fn all_path_hints(&self) -> Vec<(String, CodeHints)> {
        let mut hints: Vec<_> = self
            .by_code
            .keys()
            .map(|code| (code.clone(), self.code_hints(code)))
            .filter(|(_, h)| !h.is_empty())
            .collect();
        hints.sort_by(|a, b| a.0.cmp(&b.0));
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
    if image.model.as_ref().is_some_and(|m| m.require_loaded) {
        model_loaded(evidence)?;
    }
    for (name, value) in &image.env {
        if evidence.env.get(name.as_str()) != Some(value) {
            return Err(Mismatch::EnvMismatch(name.as_str().to_owned()));
        }
    }
    loader_env(image, evidence)?;
    if image.code.app_digest.is_some() {
        main_program(image, evidence)?;
    }
    loaded_code(image, evidence)?;
    if let Some(reason) = revocations.revoked(image, evidence, node.agent) {
        return Err(Mismatch::Revoked(reason));
    }
    Ok(())
}

/// Environment variables that change what the process loads: refused
/// unless the image pins them (its `env`, whose exact value is then
/// required). The dynamic loader's for every image; the interpreters' for
/// images that bind an app tree (Python ignores its own under `-E`/`-I`).
fn loader_env(image: &GoldImage, evidence: &WorkloadEvidence) -> Result<(), Mismatch> {
    let python_isolated = image.code.interpreter == Some(Interpreter::Python)
        && evidence
            .programs
            .iter()
            .any(|p| p.dialect == "python" && p.flags.iter().any(|f| f == "E" || f == "I"));
    for name in &evidence.loader_env {
        let interpreter = PYTHON_ENV.contains(&name.as_str()) || NODE_ENV.contains(&name.as_str());
        let applies = NATIVE_ENV.contains(&name.as_str())
            || (interpreter
                && image.code.app_digest.is_some()
                && !(python_isolated && PYTHON_ENV.contains(&name.as_str())));
        let pinned = image.env.keys().any(|k| k.as_str() == name);
        if applies && !pinned {
            return Err(Mismatch::LoaderEnvSet { name: name.clone() });
        }
    }
    Ok(())
}

/// The interpreter's main program lies in the app tree, or is inline code
/// the image allows.
fn main_program(image: &GoldImage, evidence: &WorkloadEvidence) -> Result<(), Mismatch> {
    let dialect = match image.code.interpreter {
        None => return Err(Mismatch::InterpreterUnset),
        Some(Interpreter::Python) => "python",
        Some(Interpreter::Node) => "node",
        Some(Interpreter::None) => return Ok(()),
    };
    let Some(program) = evidence.programs.iter().find(|p| p.dialect == dialect) else {
        return Err(Mismatch::ProgramNotMeasured {
            dialect: dialect.to_owned(),
        });
    };
    match program.kind.as_str() {
        "script" | "module" => {
            if !program.detail.is_empty() {
                return Err(Mismatch::ProgramUnknown {
                    detail: program.detail.clone(),
                });
            }
            if !program.in_app_tree {
                return Err(Mismatch::ProgramOutsideAppTree {
                    path: program.path.clone(),
                });
            }
        }
        kind @ ("inline" | "stdin" | "interactive") => {
            if !image.code.allow_inline {
                return Err(Mismatch::InlineNotAllowed {
                    kind: kind.to_owned(),
                });
            }
        }
        _ => {
            return Err(Mismatch::ProgramUnknown {
                detail: if program.detail.is_empty() {
                    format!("unknown program kind {:?}", program.kind)
                } else {
                    program.detail.clone()
                },
            });
        }
    }
    if let Some(path) = program.outside_app_tree.first() {
        return Err(Mismatch::PreloadOutsideAppTree { path: path.clone() });
    }
    Ok(())
}

/// Every unprotected executable mapping has a digest the image allows.
fn loaded_code(image: &GoldImage, evidence: &WorkloadEvidence) -> Result<(), Mismatch> {
    let Some(code) = &evidence.loaded_code else {
        return Err(Mismatch::LoadedCodeNotMeasured);
    };
    for file in &code.unprotected {
        let allowed = image
            .code
            .libraries
            .iter()
            .chain(&image.code.sha256)
            .any(|d| d.as_str() == file.sha256);
        if !allowed {
            return Err(Mismatch::UnprotectedCode {
                path: file.path.clone(),
                sha256: file.sha256.clone(),
            });
        }
    }
    Ok(())
}

/// `model.require_loaded`: every weight file is open or mapped.
fn model_loaded(evidence: &WorkloadEvidence) -> Result<(), Mismatch> {
    let Some(loaded) = &evidence.model_loaded else {
        return Err(Mismatch::ModelLoadNotMeasured);
    };
    if let Some(file) = loaded.not_loaded.first() {
        return Err(Mismatch::ModelNotLoaded {
            file: file.clone(),
            pid: evidence.pid,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests;
