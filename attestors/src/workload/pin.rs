//! Pinning the process being measured, so a recycled pid cannot be
//! attested in its place.
//!
//! A pid is only a number: the process can exit and the kernel can hand
//! the number to another process while the agent reads `/proc/<pid>`. A
//! pidfd refers to one process for as long as the descriptor lives, and
//! becomes readable when that process exits. The agent takes the pidfd of
//! the socket peer itself (`SO_PEERPIDFD`, Linux 6.5+) or opens one with
//! `pidfd_open` right after accepting the connection; the attestor then
//! reads the start time before and after measuring and, last, checks that
//! the pinned process has not exited. A process that is still alive holds
//! its pid, so everything read under `/proc/<pid>` in between was its own.

use std::fmt;
use std::os::fd::OwnedFd;
use std::sync::Arc;

use rustix::event::{PollFd, PollFlags, Timespec, poll};
use rustix::process::{Pid, PidfdFlags, pidfd_open};

use super::AttestError;

/// A process to measure: its pid and, where the kernel has pidfds, a
/// descriptor pinning it.
#[derive(Clone)]
pub struct PinnedProcess {
    pid: i32,
    pidfd: Option<Arc<OwnedFd>>,
    start_time: Option<u64>,
}

impl fmt::Debug for PinnedProcess {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PinnedProcess")
            .field("pid", &self.pid)
            .field("pidfd", &self.pidfd.is_some())
            .field("start_time", &self.start_time)
            .finish()
    }
}

impl PinnedProcess {
    /// Pins `pid` with a pidfd the caller already holds (from
    /// `SO_PEERPIDFD`).
    pub fn with_pidfd(pid: i32, pidfd: OwnedFd) -> Self {
        Self {
            pid,
            pidfd: Some(Arc::new(pidfd)),
            start_time: None,
        }
    }

    /// Pins `pid` with `pidfd_open`. On a kernel without pidfds (before
    /// 5.3) the process is pinned by its start time only.
    pub fn open(pid: i32) -> Result<Self, AttestError> {
        let raw = Pid::from_raw(pid).ok_or(AttestError::ProcessGone { pid })?;
        match pidfd_open(raw, PidfdFlags::empty()) {
            Ok(fd) => Ok(Self::with_pidfd(pid, fd)),
            Err(rustix::io::Errno::SRCH) => Err(AttestError::ProcessGone { pid }),
            Err(rustix::io::Errno::NOSYS) => Ok(Self::unpinned(pid)),
            Err(e) => Err(AttestError::Read {
                path: format!("pidfd of {pid}"),
                reason: e.to_string(),
            }),
        }
    }

    /// A pid with no pidfd: pinned only by the start time read around the
    /// measurement (and [`Self::expect_start_time`] when known). For tests
    /// with a fake `/proc` and kernels without pidfds.
    pub fn unpinned(pid: i32) -> Self {
        Self {
            pid,
            pidfd: None,
            start_time: None,
        }
    }

    /// Requires the process to have this start time: the pid was seen with
    /// it earlier (at connect time, or at the previous measurement), so
    /// another start time means the pid now names another process.
    pub fn expect_start_time(mut self, start_time: u64) -> Self {
        self.start_time = Some(start_time);
        self
    }

    /// The pid.
    pub fn pid(&self) -> i32 {
        self.pid
    }

    /// The start time this process must have, when known.
    pub fn expected_start_time(&self) -> Option<u64> {
        self.start_time
    }

    /// Whether a pidfd pins the process.
    pub fn has_pidfd(&self) -> bool {
        self.pidfd.is_some()
    }

    /// Whether the pinned process has exited. Without a pidfd this cannot
    /// be told and is `false`: the start-time checks decide then.
    pub fn exited(&self) -> bool {
        let Some(fd) = &self.pidfd else {
            return false;
        };
        let mut fds = [PollFd::new(fd.as_ref(), PollFlags::IN)];
        let now = Timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        match poll(&mut fds, Some(&now)) {
            // A pidfd polls readable once its process has exited.
            Ok(n) => n > 0 && !fds[0].revents().is_empty(),
            // Poll failing on our own descriptor: treat as gone (fail closed).
            Err(_) => true,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pidfd_tells_when_its_process_exits() {
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .unwrap();
        let pid = i32::try_from(child.id()).unwrap();
        let pinned = PinnedProcess::open(pid).unwrap();
        assert!(pinned.has_pidfd());
        assert!(!pinned.exited());
        child.kill().unwrap();
        child.wait().unwrap();
        assert!(pinned.exited(), "the pidfd must report the exit");
    }

    #[test]
    fn opening_a_pid_that_does_not_exist_is_process_gone() {
        // Above the kernel's pid_max (at most 2^22), so never a process.
        let pid = (1 << 22) + 17;
        assert_eq!(
            PinnedProcess::open(pid).unwrap_err(),
            AttestError::ProcessGone { pid }
        );
    }
}
