//! The view a workload's paths are measured in: its own root and working
//! directory (`/proc/<pid>/root`, `/proc/<pid>/cwd`: its mount namespace,
//! not the agent's), read only where its own credentials could read.

use std::os::fd::AsFd;

use crate::tree::{Access, Credentials, Reader, View, acl_of_fd};

use super::AttestError;
use super::proc::ProcRoot;

/// The view of process `pid`, read as its fs uid, fs gid and supplementary
/// groups (a workload running as uid 0 is not checked).
pub(crate) fn workload_view(proc: &ProcRoot, pid: i32) -> Result<View, AttestError> {
    let reader = reader_of(proc, pid)?;
    let root = proc.pid_path(pid, "root");
    View::open(&root, &proc.pid_path(pid, "cwd"), reader).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => AttestError::ProcessGone { pid },
        _ => AttestError::Read {
            path: root.display().to_string(),
            reason: e.to_string(),
        },
    })
}

/// Process `pid`'s file-system credentials, as a reader.
fn reader_of(proc: &ProcRoot, pid: i32) -> Result<Reader, AttestError> {
    let status = proc.status(pid)?;
    Ok(if status.fsuid == 0 {
        Reader::Caller
    } else {
        Reader::As(Credentials {
            uid: status.fsuid,
            gid: status.fsgid,
            groups: status.groups,
        })
    })
}

/// Whether process `pid` could read the executable it runs (mode bits and
/// ACL, as for trees). A program may be executable without being readable
/// (mode 0711): then its digest is something the process may not learn
/// from the agent, not even in a refusal.
pub fn may_read_executable(proc: &ProcRoot, pid: i32) -> Result<bool, AttestError> {
    let reader = reader_of(proc, pid)?;
    let path = proc.pid_path(pid, "exe");
    let gone = |e: std::io::Error| match e.kind() {
        std::io::ErrorKind::NotFound => AttestError::ProcessGone { pid },
        _ => AttestError::Read {
            path: path.display().to_string(),
            reason: e.to_string(),
        },
    };
    let file = std::fs::File::open(&path).map_err(gone)?;
    let meta = file.metadata().map_err(gone)?;
    Ok(reader.may(&meta, Access::Read, || acl_of_fd(file.as_fd())))
}
