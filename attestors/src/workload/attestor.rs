//! The workload attestors and the catalog of those in use.
//!
//! Each [`WorkloadAttestor`] adds one kind of measurement to a process's
//! [`Evidence`]. The catalog ([`WorkloadAttestors`]) is a plain value built
//! from `agent.toml` and checked when it is built: `unix` identifies the
//! process (uid, gid, executable) and always runs first, because the others
//! depend on it (the executable digest selects the image's path hints, the
//! uid pays for the hashing). Leaving an attestor out fails closed: an image
//! that binds a model never matches evidence without one.

use std::collections::BTreeMap;
use std::fmt;
use std::fs::File;
use std::path::PathBuf;
use std::sync::Arc;

use super::budget::{BudgetExceeded, HashBudget};
use super::cache::{CachingHasher, FileCache};
use super::cancel::{Cancel, is_cancelled};
use super::loaded;
use super::proc::ProcRoot;
use super::program::{self, Recording};
use super::resolve::View;
use super::view::workload_view;
use super::{
    APP_DIR_ENV, AttestError, Evidence, MODEL_DIR_ENV, Request, TreeEvidence, container_id,
};
use crate::tree::{Links, TreeError, TreeLimits, digest_tree_in, is_dir_in};

/// One kind of workload measurement.
pub trait WorkloadAttestor: Send + Sync + fmt::Debug {
    /// The name used in `agent.toml`.
    fn name(&self) -> &'static str;

    /// Adds this attestor's measurements of `process` to `evidence`.
    fn attest(&self, process: &Measuring<'_>, evidence: &mut Evidence) -> Result<(), AttestError>;
}

/// The attestors built into the agent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum AttestorKind {
    /// uid, gid, supplementary groups, executable path and digest.
    Unix,
    /// The application tree (what an interpreter runs).
    AppTree,
    /// The model directory.
    Model,
    /// Allow-listed environment values, cgroup path and container id.
    Env,
}

impl AttestorKind {
    /// Every built-in attestor, in the order they run.
    pub const ALL: [AttestorKind; 4] = [
        AttestorKind::Unix,
        AttestorKind::AppTree,
        AttestorKind::Model,
        AttestorKind::Env,
    ];

    /// The name used in `agent.toml`.
    pub fn as_str(self) -> &'static str {
        match self {
            AttestorKind::Unix => "unix",
            AttestorKind::AppTree => "app_tree",
            AttestorKind::Model => "model",
            AttestorKind::Env => "env",
        }
    }

    /// The attestor named `name`.
    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.as_str() == name)
    }

    fn build(self) -> Arc<dyn WorkloadAttestor> {
        match self {
            AttestorKind::Unix => Arc::new(UnixAttestor),
            AttestorKind::AppTree => Arc::new(AppTreeAttestor),
            AttestorKind::Model => Arc::new(ModelAttestor),
            AttestorKind::Env => Arc::new(EnvAttestor),
        }
    }
}

/// Why a catalog could not be built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CatalogError {
    /// A name that is no attestor.
    #[error("unknown workload attestor {name:?} (known: unix, app_tree, model, env)")]
    Unknown {
        /// The name given.
        name: String,
    },
    /// An attestor named twice.
    #[error("workload attestor {name:?} is listed twice")]
    Duplicate {
        /// The name given.
        name: String,
    },
    /// `unix` is missing.
    #[error("the unix workload attestor identifies the calling process and cannot be left out")]
    UnixRequired,
}

/// The workload attestors in use, in the order they run.
#[derive(Debug, Clone)]
pub struct WorkloadAttestors {
    kinds: Vec<AttestorKind>,
    attestors: Vec<Arc<dyn WorkloadAttestor>>,
}

impl Default for WorkloadAttestors {
    /// All of them.
    fn default() -> Self {
        Self::from_kinds(&AttestorKind::ALL).unwrap_or_else(|_| unreachable_catalog())
    }
}

/// `ALL` holds `unix` once and nothing twice, so building it cannot fail.
fn unreachable_catalog() -> WorkloadAttestors {
    WorkloadAttestors {
        kinds: vec![AttestorKind::Unix],
        attestors: vec![Arc::new(UnixAttestor)],
    }
}

impl WorkloadAttestors {
    /// The catalog of the attestors named in `agent.toml`.
    pub fn from_names<S: AsRef<str>>(names: &[S]) -> Result<Self, CatalogError> {
        let kinds = names
            .iter()
            .map(|n| {
                AttestorKind::parse(n.as_ref()).ok_or_else(|| CatalogError::Unknown {
                    name: n.as_ref().to_owned(),
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        Self::from_kinds(&kinds)
    }

    /// The catalog of `kinds` (run in the canonical order, `unix` first).
    pub fn from_kinds(kinds: &[AttestorKind]) -> Result<Self, CatalogError> {
        let mut sorted = kinds.to_vec();
        sorted.sort();
        if let Some(pair) = sorted.windows(2).find(|w| w[0] == w[1]) {
            return Err(CatalogError::Duplicate {
                name: pair[0].as_str().to_owned(),
            });
        }
        if sorted.first() != Some(&AttestorKind::Unix) {
            return Err(CatalogError::UnixRequired);
        }
        Ok(Self {
            attestors: sorted.iter().map(|k| k.build()).collect(),
            kinds: sorted,
        })
    }

    /// The kinds in use, in order.
    pub fn kinds(&self) -> &[AttestorKind] {
        &self.kinds
    }

    pub(crate) fn iter(&self) -> impl Iterator<Item = &Arc<dyn WorkloadAttestor>> {
        self.attestors.iter()
    }
}

/// What an attestor may read about the process being measured.
#[derive(Debug)]
pub struct Measuring<'a> {
    pub(crate) pid: i32,
    pub(crate) proc: &'a ProcRoot,
    pub(crate) request: &'a Request,
    /// Only the requested names and the two declared-directory names.
    pub(crate) environ: BTreeMap<String, String>,
    pub(crate) cache: &'a FileCache,
    pub(crate) budget: &'a HashBudget,
    pub(crate) limits: &'a TreeLimits,
    /// Set when the caller went away: the walk stops.
    pub(crate) cancel: &'a Cancel,
    /// The workload's root and working directory (why not, when they could
    /// not be opened).
    pub(crate) view: Result<View, String>,
}

impl Measuring<'_> {
    /// The pid being measured.
    pub fn pid(&self) -> i32 {
        self.pid
    }

    /// What the issuer asked to measure.
    pub fn request(&self) -> &Request {
        self.request
    }

    /// The value of an environment variable the request named (or of
    /// `HALLMARK_APP_DIR` / `HALLMARK_MODEL_DIR`); `None` for any other.
    pub fn env(&self, name: &str) -> Option<&str> {
        self.environ.get(name).map(String::as_str)
    }

    /// The canonical digest of the directory the workload declared in
    /// `declared_env`, else the first hinted directory that exists, with its
    /// links treated as `links` says; hashing is charged to `uid`.
    ///
    /// Every path is resolved in the workload's own view (its root and
    /// working directory, so its mount namespace) and read only where its
    /// own credentials could read it; the evidence names the path as the
    /// workload names it.
    fn tree(
        &self,
        declared_env: &str,
        hints: Option<&Vec<String>>,
        uid: u32,
        links: Links,
    ) -> Result<Option<TreeEvidence>, AttestError> {
        let declared = self.env(declared_env);
        if declared.is_none() && hints.is_none_or(|h| h.is_empty()) {
            return Ok(None);
        }
        let view = workload_view(self.proc, self.pid)?;
        let dir = match declared {
            Some(dir) => Some(PathBuf::from(dir)),
            None => {
                let mut found = None;
                for hint in hints.into_iter().flatten().map(PathBuf::from) {
                    if is_dir_in(&view, &hint).map_err(|e| tree_error(&hint, e))? {
                        found = Some(hint);
                        break;
                    }
                }
                found
            }
        };
        let Some(dir) = dir else { return Ok(None) };
        let hasher = CachingHasher {
            cache: self.cache,
            budget: self.budget,
            uid,
            cancel: self.cancel,
        };
        let recording = Recording {
            inner: &hasher,
            root: &dir,
            seen: Default::default(),
        };
        let digest = digest_tree_in(&view, &dir, links, self.limits, &recording)
            .map_err(|e| tree_error(&dir, e))?;
        Ok(Some(TreeEvidence {
            dir: dir.display().to_string(),
            digest: digest.digest,
            files: recording.into_seen(),
        }))
    }
}

/// A tree that could not be digested: over a limit, or unreadable.
fn tree_error(dir: &std::path::Path, error: TreeError) -> AttestError {
    match error {
        TreeError::Io { source, .. } if is_cancelled(&source) => AttestError::Cancelled,
        TreeError::Io { source, .. } => match budget_refusal(&source) {
            Some(exceeded) => AttestError::BudgetExhausted(exceeded),
            None => AttestError::Read {
                path: dir.display().to_string(),
                reason: source.to_string(),
            },
        },
        TreeError::FileTooLarge { path, size, limit } => AttestError::TooLarge {
            path: path.display().to_string(),
            size,
            limit,
        },
        TreeError::Forbidden { path, uid, access } => AttestError::Read {
            path: path.display().to_string(),
            reason: format!(
                "uid {uid} may not {access} it, and the agent reads only what the workload itself can read"
            ),
        },
        TreeError::TotalTooLarge { .. }
        | TreeError::TooManyEntries { .. }
        | TreeError::TooDeep { .. } => AttestError::TreeTooLarge {
            reason: error.to_string(),
        },
        other => AttestError::Read {
            path: dir.display().to_string(),
            reason: other.to_string(),
        },
    }
}

/// The budget refusal an I/O error from the caching hasher carries.
pub(crate) fn budget_refusal(error: &std::io::Error) -> Option<BudgetExceeded> {
    error
        .get_ref()
        .and_then(|e| e.downcast_ref::<BudgetExceeded>())
        .cloned()
}

/// uid, gid, groups, and the executable that is running.
#[derive(Debug)]
struct UnixAttestor;

impl WorkloadAttestor for UnixAttestor {
    fn name(&self) -> &'static str {
        AttestorKind::Unix.as_str()
    }

    fn attest(&self, process: &Measuring<'_>, evidence: &mut Evidence) -> Result<(), AttestError> {
        let pid = process.pid;
        let status = process.proc.status(pid)?;
        evidence.uid = status.uid;
        evidence.gid = status.gid;
        evidence.supplementary_gids = status.groups;
        evidence.exe_path = process.proc.exe_path(pid)?;
        let path = process.proc.pid_path(pid, "exe");
        let read_err = |e: std::io::Error| match e.kind() {
            std::io::ErrorKind::NotFound => AttestError::ProcessGone { pid },
            _ if is_cancelled(&e) => AttestError::Cancelled,
            _ => match budget_refusal(&e) {
                Some(exceeded) => AttestError::BudgetExhausted(exceeded),
                None => AttestError::Read {
                    path: path.display().to_string(),
                    reason: e.to_string(),
                },
            },
        };
        // Opening /proc/<pid>/exe opens the inode that is running, whatever
        // is at its path now.
        let mut file = File::open(&path).map_err(read_err)?;
        let meta = file.metadata().map_err(read_err)?;
        if !meta.is_file() {
            return Err(AttestError::Read {
                path: path.display().to_string(),
                reason: "not a regular file".into(),
            });
        }
        if meta.len() > process.limits.max_file_size {
            return Err(AttestError::TooLarge {
                path: path.display().to_string(),
                size: meta.len(),
                limit: process.limits.max_file_size,
            });
        }
        let digest = process
            .cache
            .digest_open(&mut file, &meta, status.uid, process.budget, process.cancel)
            .map_err(read_err)?;
        evidence.exe_sha256 = hex::encode(digest);
        Ok(())
    }
}

/// The application tree: `HALLMARK_APP_DIR`, else the image's `code.app_path`.
#[derive(Debug)]
struct AppTreeAttestor;

impl WorkloadAttestor for AppTreeAttestor {
    fn name(&self) -> &'static str {
        AttestorKind::AppTree.as_str()
    }

    fn attest(&self, process: &Measuring<'_>, evidence: &mut Evidence) -> Result<(), AttestError> {
        let hints = process.request.app_paths.get(&evidence.exe_sha256);
        evidence.app = process.tree(APP_DIR_ENV, hints, evidence.uid, Links::Record)?;
        // The main program, read in each dialect the images of this
        // executable declare (usually one).
        if let Some(dialects) = process.request.interpreters.get(&evidence.exe_sha256) {
            let args = process.proc.cmdline(process.pid)?;
            evidence.programs = dialects
                .iter()
                .map(|d| program::measure(*d, &args, process.view.as_ref(), evidence.app.as_ref()))
                .collect();
        }
        Ok(())
    }
}

/// The model directory: `HALLMARK_MODEL_DIR`, else the image's `model.path`.
#[derive(Debug)]
struct ModelAttestor;

impl WorkloadAttestor for ModelAttestor {
    fn name(&self) -> &'static str {
        AttestorKind::Model.as_str()
    }

    fn attest(&self, process: &Measuring<'_>, evidence: &mut Evidence) -> Result<(), AttestError> {
        let hints = process.request.model_paths.get(&evidence.exe_sha256);
        evidence.model = process.tree(MODEL_DIR_ENV, hints, evidence.uid, Links::Follow)?;
        // Only when an image asks: listing every descriptor costs.
        if process
            .request
            .require_loaded
            .contains(&evidence.exe_sha256)
            && let Some(model) = &evidence.model
        {
            evidence.model_loaded = Some(loaded::measure(process.proc, process.pid, &model.files)?);
        }
        Ok(())
    }
}

/// Only the environment values registered images reference; the cgroup
/// path and the container id.
#[derive(Debug)]
struct EnvAttestor;

impl WorkloadAttestor for EnvAttestor {
    fn name(&self) -> &'static str {
        AttestorKind::Env.as_str()
    }

    fn attest(&self, process: &Measuring<'_>, evidence: &mut Evidence) -> Result<(), AttestError> {
        evidence.env = process
            .request
            .env_names
            .iter()
            .filter_map(|name| Some((name.clone(), process.env(name)?.to_owned())))
            .collect();
        evidence.cgroup_path = process.proc.cgroup(process.pid)?;
        evidence.container_id = container_id(&evidence.cgroup_path);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_catalog_runs_unix_first_and_refuses_bad_lists() {
        let catalog = WorkloadAttestors::from_names(&["model", "unix", "env"]).unwrap();
        assert_eq!(
            catalog.kinds(),
            [AttestorKind::Unix, AttestorKind::Model, AttestorKind::Env]
        );
        let names: Vec<_> = catalog.iter().map(|a| a.name()).collect();
        assert_eq!(names, ["unix", "model", "env"]);
        assert_eq!(
            WorkloadAttestors::from_names(&["model"]).unwrap_err(),
            CatalogError::UnixRequired
        );
        assert_eq!(
            WorkloadAttestors::from_names(&["unix", "docker"]).unwrap_err(),
            CatalogError::Unknown {
                name: "docker".into()
            }
        );
        assert_eq!(
            WorkloadAttestors::from_names(&["unix", "env", "env"]).unwrap_err(),
            CatalogError::Duplicate { name: "env".into() }
        );
        assert_eq!(WorkloadAttestors::default().kinds(), AttestorKind::ALL);
    }
}
