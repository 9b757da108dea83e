//! Workload attestation: what a calling process is.
//!
//! [`ProcessAttestor`] measures a [`PinnedProcess`] through `/proc` (a root
//! path, so tests can point it at a fake tree) with the catalog of
//! [`WorkloadAttestor`]s chosen in `agent.toml`: `unix` (uid/gid,
//! supplementary groups, the SHA-256 of the executable that is running,
//! read through `/proc/<pid>/exe` — the running inode, never a path
//! lookup — and its path), `app_tree` and `model` (canonical tree digests
//! of the declared or hinted directories), and `env` (only the environment
//! variables it is asked for, the cgroup path and the container id).
//!
//! The process is pinned: its start time is read before and after
//! measuring (and must equal the one seen at connect time when given), and
//! last its pidfd must show it still running, so a recycled pid is refused.
//! Hashing goes through a [`FileCache`] keyed by file identity and is
//! charged to the caller's uid in a [`HashBudget`] (bytes and entries), so
//! a local process can neither make the agent re-hash what it already knows
//! nor hash without bound; the cache is shared fairly between uids, and a
//! measurement stops when its [`Cancel`] is set (the caller went away).
//!
//! ```no_run
//! use hallmark_attestors::workload::{PinnedProcess, ProcessAttestor, Request};
//! let attestor = ProcessAttestor::default();
//! let me = PinnedProcess::open(std::process::id() as i32)?;
//! let evidence = attestor.attest(&me, &Request::default())?;
//! println!("{} {}", evidence.exe_path, evidence.exe_sha256);
//! # Ok::<(), hallmark_attestors::workload::AttestError>(())
//! ```

mod attestor;
mod budget;
mod cache;
mod cancel;
mod cgroup;
pub mod cmdline;
pub mod loaded;
pub mod mappings;
mod pin;
mod proc;
pub mod program;
mod resolve;
mod view;

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::path::Path;

use crate::tree::TreeLimits;

pub use attestor::{AttestorKind, CatalogError, Measuring, WorkloadAttestor, WorkloadAttestors};
pub use budget::{
    BudgetExceeded, DEFAULT_BUDGET_BYTES, DEFAULT_BUDGET_WINDOW, DEFAULT_ENTRY_COST, HashBudget,
};
pub use cache::{DEFAULT_CACHE_ENTRIES, FileCache, RACY_WINDOW};
pub use cancel::{Cancel, CancelGuard};
pub use cgroup::container_id;
pub use pin::PinnedProcess;
pub use proc::ProcRoot;
pub use view::may_read_executable;

use cmdline::Dialect;
use loaded::ModelLoaded;
use mappings::{LoadedCode, ProtectionCache};
use program::ProgramEvidence;

/// A file's identity: (device, inode).
pub type Identity = (u64, u64);

/// Environment variable naming the application tree a workload runs.
pub const APP_DIR_ENV: &str = "HALLMARK_APP_DIR";
/// Environment variable naming the model directory a workload loads.
pub const MODEL_DIR_ENV: &str = "HALLMARK_MODEL_DIR";

/// Why a process could not be measured.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AttestError {
    /// The process exited.
    #[error("process {pid} exited")]
    ProcessGone {
        /// The pid.
        pid: i32,
    },
    /// The pid now names another process (its start time changed).
    #[error("process {pid} was replaced during attestation (pid reused)")]
    ProcessChanged {
        /// The pid.
        pid: i32,
    },
    /// A file is larger than the agent will hash.
    #[error("{path} is {size} bytes, over the {limit}-byte hashing limit")]
    TooLarge {
        /// The file.
        path: String,
        /// Its size.
        size: u64,
        /// The limit.
        limit: u64,
    },
    /// A tree holds more files or bytes than the agent will hash.
    #[error("{reason}")]
    TreeTooLarge {
        /// Which limit, on which tree.
        reason: String,
    },
    /// The caller's uid has used up its hashing budget.
    #[error(transparent)]
    BudgetExhausted(BudgetExceeded),
    /// The caller went away and the measurement was stopped.
    #[error("the caller went away: measurement stopped")]
    Cancelled,
    /// Reading the process or its files failed.
    #[error("cannot read {path}: {reason}")]
    Read {
        /// What was read.
        path: String,
        /// Why it failed.
        reason: String,
    },
}

/// A measured directory.
#[derive(Clone, PartialEq, Eq)]
pub struct TreeEvidence {
    /// The directory.
    pub dir: String,
    /// `sha256:<hex>`.
    pub digest: String,
    /// The identity of every file the walk hashed, with its path in the
    /// tree: what scripts, libraries and weights are matched against.
    pub files: HashMap<Identity, String>,
}

impl std::fmt::Debug for TreeEvidence {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TreeEvidence")
            .field("dir", &self.dir)
            .field("digest", &self.digest)
            .field("files", &self.files.len())
            .finish()
    }
}

/// Everything measured about one process.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Evidence {
    /// Process id.
    pub pid: i32,
    /// Real uid.
    pub uid: u32,
    /// Real gid.
    pub gid: u32,
    /// Supplementary groups.
    pub supplementary_gids: Vec<u32>,
    /// Path of the running executable.
    pub exe_path: String,
    /// Lowercase hex SHA-256 of the running executable.
    pub exe_sha256: String,
    /// Start time in clock ticks since boot (pins the pid).
    pub start_time: u64,
    /// The application tree, when declared or hinted.
    pub app: Option<TreeEvidence>,
    /// The model directory, when declared or hinted.
    pub model: Option<TreeEvidence>,
    /// Only the requested environment variables.
    pub env: BTreeMap<String, String>,
    /// The cgroup path.
    pub cgroup_path: String,
    /// The container id, when the cgroup names one.
    pub container_id: Option<String>,
    /// The interpreter's main program, once per dialect the issuer's
    /// images give this executable.
    pub programs: Vec<ProgramEvidence>,
    /// The loaded native code only the image can allow; `None` when not
    /// measured.
    pub loaded_code: Option<LoadedCode>,
    /// Which environment variables that change what the process loads are
    /// set (names only; values are never read).
    pub loader_env: BTreeSet<String>,
    /// Whether the model's weight files are open or mapped, when some
    /// image for this executable requires it.
    pub model_loaded: Option<ModelLoaded>,
}

impl std::fmt::Debug for Evidence {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Environment values can be sensitive: names only.
        f.debug_struct("Evidence")
            .field("pid", &self.pid)
            .field("uid", &self.uid)
            .field("exe_path", &self.exe_path)
            .field("exe_sha256", &self.exe_sha256)
            .field("start_time", &self.start_time)
            .field("app", &self.app)
            .field("model", &self.model)
            .field("env_names", &self.env.keys().collect::<Vec<_>>())
            .field("container_id", &self.container_id)
            .field("programs", &self.programs)
            .field("loaded_code", &self.loaded_code)
            .field("loader_env", &self.loader_env)
            .field("model_loaded", &self.model_loaded)
            .finish()
    }
}

/// What to measure beyond the process itself.
#[derive(Debug, Clone, Default)]
pub struct Request {
    /// Environment variable names to read (all others are never read into evidence).
    pub env_names: BTreeSet<String>,
    /// Fallback application directories per executable digest.
    pub app_paths: HashMap<String, Vec<String>>,
    /// Fallback model directories per executable digest.
    pub model_paths: HashMap<String, Vec<String>>,
    /// Set when the caller went away: the measurement stops.
    pub cancel: Cancel,
    /// Per executable digest: the dialects its images read the command
    /// line in (`code.interpreter`).
    pub interpreters: HashMap<String, Vec<Dialect>>,
    /// Executable digests some image of which sets `model.require_loaded`.
    pub require_loaded: HashSet<String>,
}

/// Measures processes with a catalog of attestors, a file cache and a
/// per-uid hashing budget.
#[derive(Debug)]
pub struct ProcessAttestor {
    proc: ProcRoot,
    limits: TreeLimits,
    attestors: WorkloadAttestors,
    cache: FileCache,
    budget: HashBudget,
    protection: ProtectionCache,
}

impl Default for ProcessAttestor {
    /// The real `/proc`, default limits, every attestor, the default budget.
    fn default() -> Self {
        Self::new(ProcRoot::default(), TreeLimits::default())
    }
}

impl ProcessAttestor {
    /// An attestor reading `proc` with hashing `limits`, every built-in
    /// attestor and the default per-uid budget.
    pub fn new(proc: ProcRoot, limits: TreeLimits) -> Self {
        Self {
            proc,
            limits,
            attestors: WorkloadAttestors::default(),
            cache: FileCache::default(),
            budget: HashBudget::new(DEFAULT_BUDGET_BYTES, DEFAULT_BUDGET_WINDOW),
            protection: ProtectionCache::default(),
        }
    }

    /// Uses these attestors.
    pub fn with_attestors(mut self, attestors: WorkloadAttestors) -> Self {
        self.attestors = attestors;
        self
    }

    /// Charges hashing to this budget.
    pub fn with_budget(mut self, budget: HashBudget) -> Self {
        self.budget = budget;
        self
    }

    /// Caches file digests in this cache.
    pub fn with_cache(mut self, cache: FileCache) -> Self {
        self.cache = cache;
        self
    }

    /// The attestors in use.
    pub fn attestors(&self) -> &WorkloadAttestors {
        &self.attestors
    }

    /// How many file digests are cached.
    pub fn cached_files(&self) -> usize {
        self.cache.len()
    }

    /// The file cache (its statistics: entries per uid, files and bytes
    /// hashed).
    pub fn cache(&self) -> &FileCache {
        &self.cache
    }

    /// The hashing budget (what each uid has left).
    pub fn budget(&self) -> &HashBudget {
        &self.budget
    }

    /// Measures `process`.
    pub fn attest(
        &self,
        process: &PinnedProcess,
        request: &Request,
    ) -> Result<Evidence, AttestError> {
        let pid = process.pid();
        let before = self.proc.start_time(pid)?;
        if process.expected_start_time().is_some_and(|t| t != before) {
            return Err(AttestError::ProcessChanged { pid });
        }
        let wanted = |name: &str| {
            name == APP_DIR_ENV || name == MODEL_DIR_ENV || request.env_names.contains(name)
        };
        let flagged: Vec<&str> = cmdline::NATIVE_ENV
            .iter()
            .chain(cmdline::PYTHON_ENV)
            .chain(cmdline::NODE_ENV)
            .copied()
            .collect();
        let (environ, loader_env) = self.proc.environ_scan(pid, wanted, &flagged)?;
        let measuring = Measuring {
            pid,
            proc: &self.proc,
            request,
            environ,
            cache: &self.cache,
            budget: &self.budget,
            limits: &self.limits,
            cancel: &request.cancel,
            view: resolve::View::open(&self.proc, pid),
        };
        let mut evidence = Evidence {
            pid,
            start_time: before,
            loader_env,
            ..Evidence::default()
        };
        for attestor in self.attestors.iter() {
            if request.cancel.is_cancelled() {
                return Err(AttestError::Cancelled);
            }
            attestor.attest(&measuring, &mut evidence)?;
        }
        // Not an attestor one may leave out: the loaded code is part of
        // what every image binds.
        evidence.loaded_code = Some(mappings::measure(&mappings::Context {
            proc: &self.proc,
            pid,
            uid: evidence.uid,
            view: measuring.view.as_ref().ok(),
            app: evidence.app.as_ref().map(|a| &a.files),
            cache: &self.cache,
            budget: &self.budget,
            protection: &self.protection,
            max_file_size: self.limits.max_file_size,
            cancel: &request.cancel,
        })?);
        let after = self.proc.start_time(pid)?;
        if before != after {
            return Err(AttestError::ProcessChanged { pid });
        }
        // Last: the pinned process is still running, so it held the pid
        // through everything read above.
        if process.exited() {
            return Err(AttestError::ProcessGone { pid });
        }
        Ok(evidence)
    }

    /// Whether `process` could read the executable it runs (see
    /// [`may_read_executable`]); `false` when that cannot be told.
    pub fn may_read_executable(&self, process: &PinnedProcess) -> bool {
        may_read_executable(&self.proc, process.pid()).unwrap_or(false)
    }

    /// Whether `process` still runs with `start_time`.
    pub fn alive(&self, process: &PinnedProcess, start_time: u64) -> bool {
        !process.exited()
            && self
                .proc
                .start_time(process.pid())
                .is_ok_and(|t| t == start_time)
    }
}

/// Reads a whole small `/proc` file.
fn read_small(path: &Path, pid: i32) -> Result<Vec<u8>, AttestError> {
    std::fs::read(path).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => AttestError::ProcessGone { pid },
        _ => AttestError::Read {
            path: path.display().to_string(),
            reason: e.to_string(),
        },
    })
}

#[cfg(test)]
mod tests;
