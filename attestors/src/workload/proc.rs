//! Reading `/proc/<pid>/...` under a configurable root (tests use a fake tree).

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

use super::{AttestError, read_small};

/// Where `/proc` is.
#[derive(Debug, Clone)]
pub struct ProcRoot {
    root: PathBuf,
}

impl Default for ProcRoot {
    fn default() -> Self {
        Self {
            root: PathBuf::from("/proc"),
        }
    }
}

/// Credentials from `/proc/<pid>/status`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Status {
    pub(crate) uid: u32,
    pub(crate) gid: u32,
    pub(crate) groups: Vec<u32>,
    /// The fs uid (the fourth `Uid:` value): what file access is checked with.
    pub(crate) fsuid: u32,
    /// The fs gid (the fourth `Gid:` value).
    pub(crate) fsgid: u32,
}

impl ProcRoot {
    /// A `/proc` at `root`.
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }

    pub(crate) fn pid_path(&self, pid: i32, file: &str) -> PathBuf {
        self.root.join(pid.to_string()).join(file)
    }

    /// Field 22 of `stat`: start time in clock ticks since boot.
    pub(crate) fn start_time(&self, pid: i32) -> Result<u64, AttestError> {
        let path = self.pid_path(pid, "stat");
        let text = String::from_utf8_lossy(&read_small(&path, pid)?).into_owned();
        // The command name (field 2) may hold spaces and parentheses: parse
        // after its last ')'.
        let malformed = || AttestError::Read {
            path: path.display().to_string(),
            reason: "malformed stat".into(),
        };
        let rest = text
            .rfind(')')
            .and_then(|i| text.get(i + 2..))
            .ok_or_else(malformed)?;
        rest.split(' ')
            .nth(19)
            .and_then(|f| f.parse().ok())
            .ok_or_else(malformed)
    }

    pub(crate) fn status(&self, pid: i32) -> Result<Status, AttestError> {
        let path = self.pid_path(pid, "status");
        let text = String::from_utf8_lossy(&read_small(&path, pid)?).into_owned();
        let field = |name: &str| {
            text.lines()
                .find_map(|l| l.strip_prefix(name))
                .map(str::trim)
                .unwrap_or_default()
                .to_owned()
        };
        let first = |line: String| line.split_whitespace().next().and_then(|v| v.parse().ok());
        let fourth = |line: String| line.split_whitespace().nth(3).and_then(|v| v.parse().ok());
        let malformed = || AttestError::Read {
            path: path.display().to_string(),
            reason: "malformed status".into(),
        };
        Ok(Status {
            uid: first(field("Uid:")).ok_or_else(malformed)?,
            gid: first(field("Gid:")).ok_or_else(malformed)?,
            fsuid: fourth(field("Uid:")).ok_or_else(malformed)?,
            fsgid: fourth(field("Gid:")).ok_or_else(malformed)?,
            groups: field("Groups:")
                .split_whitespace()
                .filter_map(|g| g.parse().ok())
                .collect(),
        })
    }

    pub(crate) fn exe_path(&self, pid: i32) -> Result<String, AttestError> {
        let path = self.pid_path(pid, "exe");
        std::fs::read_link(&path)
            .map(|p| p.display().to_string())
            .map_err(|e| match e.kind() {
                std::io::ErrorKind::NotFound => AttestError::ProcessGone { pid },
                _ => AttestError::Read {
                    path: path.display().to_string(),
                    reason: e.to_string(),
                },
            })
    }

    /// The values of the environment variables `wanted` accepts (nothing
    /// else is kept: the environment holds secrets), and which of the
    /// names in `flagged` are set: names only, their values are never read.
    pub(crate) fn environ_scan(
        &self,
        pid: i32,
        wanted: impl Fn(&str) -> bool,
        flagged: &[&str],
    ) -> Result<(BTreeMap<String, String>, BTreeSet<String>), AttestError> {
        let bytes = read_small(&self.pid_path(pid, "environ"), pid)?;
        let mut values = BTreeMap::new();
        let mut set = BTreeSet::new();
        for kv in bytes.split(|b| *b == 0) {
            let name = kv.split(|b| *b == b'=').next().unwrap_or_default();
            if let Some(flag) = flagged.iter().find(|f| f.as_bytes() == name) {
                set.insert((*flag).to_owned());
            }
            let Some((k, v)) = std::str::from_utf8(kv).ok().and_then(|s| s.split_once('=')) else {
                continue;
            };
            if wanted(k) {
                values.insert(k.to_owned(), v.to_owned());
            }
        }
        Ok((values, set))
    }

    /// The command line, one string per argument (lossy UTF-8).
    pub(crate) fn cmdline(&self, pid: i32) -> Result<Vec<String>, AttestError> {
        let bytes = read_small(&self.pid_path(pid, "cmdline"), pid)?;
        let bytes = bytes.strip_suffix(&[0]).unwrap_or(&bytes);
        Ok(bytes
            .split(|b| *b == 0)
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect())
    }

    /// The cgroup v2 path (`0::/...`), or the first line's path on v1.
    pub(crate) fn cgroup(&self, pid: i32) -> Result<String, AttestError> {
        let text =
            String::from_utf8_lossy(&read_small(&self.pid_path(pid, "cgroup"), pid)?).into_owned();
        let v2 = text.lines().find_map(|l| l.strip_prefix("0::"));
        let any = text.lines().find_map(|l| l.splitn(3, ':').nth(2));
        Ok(v2.or(any).unwrap_or_default().to_owned())
    }
}
