//! Workload attestation: what a calling process is.
//!
//! [`ProcessAttestor`] measures a process through `/proc` (a root path, so
//! tests can point it at a fake tree): the SHA-256 of the executable that is
//! running (read through `/proc/<pid>/exe`, the running inode, never a path
//! lookup), its path, uid/gid and supplementary groups, the application
//! tree and model directory (canonical tree digests), only the environment
//! variables it is asked for, and its cgroup and container id. The process
//! start time is read before and after measuring, so a pid recycled during
//! attestation is refused.

mod cgroup;
mod proc;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fs::File;
use std::io::Read;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use sha2::{Digest, Sha256};

use crate::tree::{TreeDigest, TreeLimits, digest_tree};

pub use cgroup::container_id;
pub use proc::ProcRoot;

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
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TreeEvidence {
    /// The directory.
    pub dir: String,
    /// `sha256:<hex>`.
    pub digest: String,
}

/// Everything measured about one process.
#[derive(Clone, PartialEq, Eq)]
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
}

/// Measures processes, caching executable digests by file identity.
#[derive(Debug)]
pub struct ProcessAttestor {
    proc: ProcRoot,
    limits: TreeLimits,
    exe_cache: Mutex<HashMap<FileKey, String>>,
}

/// (device, inode, size, mtime, ctime): a file's content identity for caching.
type FileKey = (u64, u64, u64, i64, i64);

const EXE_CACHE_CAP: usize = 4096;

impl ProcessAttestor {
    /// An attestor reading `proc` with hashing `limits`.
    pub fn new(proc: ProcRoot, limits: TreeLimits) -> Self {
        Self {
            proc,
            limits,
            exe_cache: Mutex::new(HashMap::new()),
        }
    }

    /// Measures process `pid`.
    pub fn attest(&self, pid: i32, request: &Request) -> Result<Evidence, AttestError> {
        let before = self.proc.start_time(pid)?;
        let status = self.proc.status(pid)?;
        let exe_path = self.proc.exe_path(pid)?;
        let exe_sha256 = self.exe_digest(pid)?;
        let environ = self.proc.environ(pid)?;
        let env: BTreeMap<String, String> = environ
            .iter()
            .filter(|(k, _)| request.env_names.contains(*k))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        let app = self.tree(environ.get(APP_DIR_ENV), request.app_paths.get(&exe_sha256))?;
        let model = self.tree(
            environ.get(MODEL_DIR_ENV),
            request.model_paths.get(&exe_sha256),
        )?;
        let cgroup_path = self.proc.cgroup(pid)?;
        let after = self.proc.start_time(pid)?;
        if before != after {
            return Err(AttestError::ProcessChanged { pid });
        }
        Ok(Evidence {
            pid,
            uid: status.uid,
            gid: status.gid,
            supplementary_gids: status.groups,
            exe_path,
            exe_sha256,
            start_time: before,
            app,
            model,
            env,
            container_id: container_id(&cgroup_path),
            cgroup_path,
        })
    }

    /// Whether `pid` still runs with `start_time`.
    pub fn alive(&self, pid: i32, start_time: u64) -> bool {
        self.proc.start_time(pid).is_ok_and(|t| t == start_time)
    }

    fn exe_digest(&self, pid: i32) -> Result<String, AttestError> {
        let path = self.proc.pid_path(pid, "exe");
        let read_err = |e: std::io::Error| match e.kind() {
            std::io::ErrorKind::NotFound => AttestError::ProcessGone { pid },
            _ => AttestError::Read {
                path: path.display().to_string(),
                reason: e.to_string(),
            },
        };
        // Opening /proc/<pid>/exe opens the inode that is running.
        let mut file = File::open(&path).map_err(read_err)?;
        let meta = file.metadata().map_err(read_err)?;
        if !meta.is_file() {
            return Err(AttestError::Read {
                path: path.display().to_string(),
                reason: "not a regular file".into(),
            });
        }
        if meta.len() > self.limits.max_file_size {
            return Err(AttestError::TooLarge {
                path: path.display().to_string(),
                size: meta.len(),
                limit: self.limits.max_file_size,
            });
        }
        let key = (
            meta.dev(),
            meta.ino(),
            meta.len(),
            meta.mtime(),
            meta.ctime(),
        );
        if let Some(hit) = self.cache().get(&key) {
            return Ok(hit.clone());
        }
        let mut hasher = Sha256::new();
        let mut buf = vec![0u8; 256 * 1024];
        loop {
            let n = file.read(&mut buf).map_err(read_err)?;
            if n == 0 {
                break;
            }
            hasher.update(&buf[..n]);
        }
        let digest = hex::encode(hasher.finalize());
        let mut cache = self.cache();
        if cache.len() >= EXE_CACHE_CAP {
            cache.clear();
        }
        cache.insert(key, digest.clone());
        Ok(digest)
    }

    fn cache(&self) -> std::sync::MutexGuard<'_, HashMap<FileKey, String>> {
        self.exe_cache.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The declared directory wins; else the first hinted one that exists.
    fn tree(
        &self,
        declared: Option<&String>,
        hinted: Option<&Vec<String>>,
    ) -> Result<Option<TreeEvidence>, AttestError> {
        let dir = match declared {
            Some(dir) => Some(PathBuf::from(dir)),
            None => hinted
                .into_iter()
                .flatten()
                .map(PathBuf::from)
                .find(|p| p.is_dir()),
        };
        let Some(dir) = dir else { return Ok(None) };
        let digest: TreeDigest =
            digest_tree(&dir, &self.limits).map_err(|e| AttestError::Read {
                path: dir.display().to_string(),
                reason: e.to_string(),
            })?;
        Ok(Some(TreeEvidence {
            dir: dir.display().to_string(),
            digest: digest.digest,
        }))
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
