//! Where the Workload API gets evidence about a caller: the seam between the
//! gRPC service and the workload attestors.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use hallmark_attestors::workload::{Cancel, PinnedProcess};
use hallmark_proto::node::{PathHints, WorkloadEvidence};

use super::connection::ConnectionState;
use super::socket::ExeIdentity;

/// The process on the other end of a Workload API connection, from the
/// socket's peer credentials.
#[derive(Debug, Clone)]
pub struct Caller {
    /// Process id.
    pub pid: i32,
    /// The process, pinned by a pidfd taken when the connection was accepted.
    pub process: PinnedProcess,
    /// User id.
    pub uid: u32,
    /// Group id.
    pub gid: u32,
    /// The file the process ran when it connected: a request is honoured
    /// only while it still runs that file.
    pub exe: Option<ExeIdentity>,
    /// The connection the request came on (who wrote on it, what is open).
    pub connection: Arc<ConnectionState>,
}

/// What the issuer told the agent about measuring workloads (over `Sync`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AttestationHints {
    /// The only environment variable names evidence may include.
    pub env_names: BTreeSet<String>,
    /// Per executable digest: image-declared app tree and model locations.
    pub path_hints: HashMap<String, PathHints>,
}

/// Why evidence could not be gathered.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum EvidenceError {
    /// The process exited.
    #[error("the calling process exited before it could be attested")]
    ProcessGone,
    /// The pid now names another process than the one that connected.
    #[error("the calling process was replaced during attestation (pid reused)")]
    ProcessReplaced,
    /// The caller exceeded a hashing limit or its uid's budget.
    #[error("refused to hash for uid {uid}: {detail}")]
    ResourceExhausted {
        /// The caller's uid.
        uid: u32,
        /// What limit was hit.
        detail: String,
    },
    /// Reading the process or its files failed.
    #[error("cannot attest the caller: {0}")]
    Failed(String),
    /// The caller went away and the measurement was stopped.
    #[error("the caller went away: measurement stopped")]
    Cancelled,
}

impl EvidenceError {
    /// The Workload API status for this error.
    pub fn to_status(&self) -> tonic::Status {
        match self {
            EvidenceError::ProcessGone | EvidenceError::ProcessReplaced => {
                tonic::Status::permission_denied(self.to_string())
            }
            EvidenceError::ResourceExhausted { .. } => {
                tonic::Status::resource_exhausted(self.to_string())
            }
            EvidenceError::Failed(_) => tonic::Status::permission_denied(self.to_string()),
            EvidenceError::Cancelled => tonic::Status::cancelled(self.to_string()),
        }
    }
}

/// Measures calling processes. Implementations block (they hash files); the
/// service runs them on the blocking pool.
pub trait EvidenceSource: Send + Sync + std::fmt::Debug + 'static {
    /// Gathers evidence about `caller`, reading only the hinted environment
    /// names; stops with [`EvidenceError::Cancelled`] once `cancel` is set
    /// (the caller went away).
    fn evidence(
        &self,
        caller: &Caller,
        hints: &AttestationHints,
        cancel: &Cancel,
    ) -> Result<WorkloadEvidence, EvidenceError>;

    /// Whether the process attested as `evidence` still runs (same pid, same
    /// start time).
    fn alive(&self, caller: &Caller, evidence: &WorkloadEvidence) -> bool;

    /// Whether `caller` could read the executable it runs itself; when not,
    /// its digest is withheld from what the caller is told.
    fn may_read_executable(&self, caller: &Caller) -> bool;
}
