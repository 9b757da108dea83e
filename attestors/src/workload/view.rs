//! The view a workload's paths are measured in: its own root and working
//! directory (`/proc/<pid>/root`, `/proc/<pid>/cwd`: its mount namespace,
//! not the agent's), read only where its own credentials could read.

use crate::tree::{Credentials, Reader, View};

use super::AttestError;
use super::proc::ProcRoot;

/// The view of process `pid`, read as its fs uid, fs gid and supplementary
/// groups (a workload running as uid 0 is not checked).
pub(crate) fn workload_view(proc: &ProcRoot, pid: i32) -> Result<View, AttestError> {
    let status = proc.status(pid)?;
    let reader = if status.fsuid == 0 {
        Reader::Caller
    } else {
        Reader::As(Credentials {
            uid: status.fsuid,
            gid: status.fsgid,
            groups: status.groups,
        })
    };
    let root = proc.pid_path(pid, "root");
    View::open(&root, &proc.pid_path(pid, "cwd"), reader).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => AttestError::ProcessGone { pid },
        _ => AttestError::Read {
            path: root.display().to_string(),
            reason: e.to_string(),
        },
    })
}
