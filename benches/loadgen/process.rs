//! Child daemons (the issuer, the agent): started with their output in a
//! log file, stopped with SIGTERM, and killed when dropped, so that an
//! error or a timeout anywhere in the run never leaves one behind.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use rustix::process::{Pid, Signal, kill_process};

use crate::stats::Rss;

/// A running daemon; killed (SIGKILL) and reaped when dropped.
#[derive(Debug)]
pub(crate) struct Daemon {
    name: &'static str,
    child: Option<Child>,
    log: PathBuf,
}

impl Daemon {
    /// Starts `program args...` with stdout and stderr in `log`.
    pub(crate) fn spawn(
        name: &'static str,
        program: &Path,
        args: &[&str],
        log: PathBuf,
    ) -> anyhow::Result<Daemon> {
        let out = File::create(&log).with_context(|| format!("create {}", log.display()))?;
        let err = out.try_clone().context("dup log file")?;
        let child = Command::new(program)
            .args(args)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .with_context(|| {
                format!(
                    "cannot start {} (build it: cargo build --release --bin hallmark-server --bin hallmark-agent)",
                    program.display()
                )
            })?;
        Ok(Daemon {
            name,
            child: Some(child),
            log,
        })
    }

    pub(crate) fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }

    pub(crate) fn rss(&self) -> Option<Rss> {
        Rss::of(self.pid())
    }

    /// Fails with the end of the daemon's log if it has exited.
    pub(crate) fn check_running(&mut self) -> anyhow::Result<()> {
        if let Some(child) = self.child.as_mut()
            && let Some(status) = child.try_wait().context("wait")?
        {
            bail!(
                "{} exited ({status}); last lines of its log:\n{}",
                self.name,
                self.log_tail()
            );
        }
        Ok(())
    }

    /// The last lines of the daemon's log.
    pub(crate) fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(15)..].join("\n")
    }

    /// SIGTERM, then up to `grace` for a clean exit, then SIGKILL.
    pub(crate) fn stop(mut self, grace: Duration) -> anyhow::Result<()> {
        let Some(mut child) = self.child.take() else {
            return Ok(());
        };
        if let Some(pid) = i32::try_from(child.id()).ok().and_then(Pid::from_raw) {
            let _ = kill_process(pid, Signal::TERM);
        }
        let deadline = Instant::now() + grace;
        loop {
            if let Some(status) = child.try_wait().context("wait")? {
                if !status.success() {
                    eprintln!("note: {} exited with {status}", self.name);
                }
                return Ok(());
            }
            if Instant::now() >= deadline {
                eprintln!("note: {} did not stop within {grace:?}: killed", self.name);
                let _ = child.kill();
                let _ = child.wait();
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// A free TCP port on loopback. The port is released before the daemon
/// binds it; nothing else on this machine races for ephemeral ports in
/// that instant in practice, and a lost race fails the start loudly.
pub(crate) fn free_port() -> anyhow::Result<u16> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").context("bind 127.0.0.1:0")?;
    Ok(listener.local_addr()?.port())
}

/// Raises this process's open-file limit to its hard limit so thousands of
/// connections fit (children inherit it). Returns the soft limit in force.
pub(crate) fn raise_nofile_limit() -> u64 {
    use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};
    let limit = getrlimit(Resource::Nofile);
    if limit.maximum != limit.current {
        let _ = setrlimit(
            Resource::Nofile,
            Rlimit {
                current: limit.maximum,
                maximum: limit.maximum,
            },
        );
    }
    getrlimit(Resource::Nofile).current.unwrap_or(u64::MAX)
}

/// Where the daemons are: next to this binary (`target/release/`) unless
/// given.
pub(crate) fn sibling_binary(name: &str) -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe().context("current_exe")?;
    let dir = exe.parent().context("binary has no directory")?;
    Ok(dir.join(name))
}
