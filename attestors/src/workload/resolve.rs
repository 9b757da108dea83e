//! Resolving one path as the workload sees it: inside its root
//! (`/proc/<pid>/root`), relative paths against its own working directory,
//! symbolic links followed one component at a time without ever leaving
//! that root (an absolute link target restarts at the workload's root, `..`
//! stops there), as the kernel does for the process itself.
//!
//! The walk is the tree reader's ([`crate::tree::View`], in its
//! `RESOLVE_IN_ROOT` mode, reading as the agent): one resolver for every
//! path the agent looks up in a workload's view. This adds what the
//! main-program and loaded-code checks need: the canonical path in the
//! workload's view, the working directory as a path, and whether a path
//! leads through directories only root can change.

use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;

use rustix::fs::{FileType, fstat};

use super::proc::ProcRoot;
use crate::tree::Reader;
use crate::tree::view::{Floor, ResolveError, Step, resolve};

/// A path resolved in the workload's view.
#[derive(Debug)]
pub(crate) struct Resolved {
    /// Canonical absolute path in the workload's view (no `.`, `..` or
    /// symbolic links).
    pub(crate) path: String,
    /// (device, inode) of what it leads to.
    identity: (u64, u64),
    is_dir: bool,
}

impl Resolved {
    /// (device, inode).
    pub(crate) fn identity(&self) -> (u64, u64) {
        self.identity
    }

    /// Whether it is a directory.
    pub(crate) fn is_dir(&self) -> bool {
        self.is_dir
    }
}

/// The workload's root and working directory, opened once per measurement.
#[derive(Debug)]
pub(crate) struct View {
    tree: crate::tree::View,
    /// The working directory's canonical path in the workload's view, when
    /// it could be established.
    cwd: Result<String, String>,
}

impl View {
    /// Opens the root of `pid` and establishes its working directory: the
    /// path `/proc/<pid>/cwd` reads as, checked by resolving it inside the
    /// root and comparing the inode with the working directory itself
    /// (the link is written relative to the reader's root, not always the
    /// workload's).
    pub(crate) fn open(proc: &ProcRoot, pid: i32) -> Result<View, String> {
        let root_path = proc.pid_path(pid, "root");
        let cwd_path = proc.pid_path(pid, "cwd");
        // The working directory only matters for relative paths: a view
        // without it still resolves absolute ones.
        let tree = crate::tree::View::open(&root_path, &cwd_path, Reader::Caller)
            .or_else(|_| crate::tree::View::open(&root_path, &root_path, Reader::Caller))
            .map_err(|e| format!("cannot open {}: {e}", root_path.display()))?;
        let mut view = View {
            tree,
            cwd: Err(String::new()),
        };
        view.cwd = view.establish_cwd(proc, pid);
        Ok(view)
    }

    fn establish_cwd(&self, proc: &ProcRoot, pid: i32) -> Result<String, String> {
        let link = proc.pid_path(pid, "cwd");
        let unknown =
            |why: String| format!("cannot tell the working directory of process {pid}: {why}");
        let text = std::fs::read_link(&link).map_err(|e| unknown(e.to_string()))?;
        let text = String::from_utf8(text.as_os_str().as_bytes().to_vec())
            .map_err(|_| unknown("not UTF-8".into()))?;
        if !text.starts_with('/') {
            return Err(unknown(format!("{text:?} is not a path in its view")));
        }
        let cwd = std::fs::metadata(&link).map_err(|e| unknown(e.to_string()))?;
        let resolved = self.resolve_abs(&text).map_err(unknown)?;
        if resolved.identity() != (cwd.dev(), cwd.ino()) {
            return Err(unknown(format!(
                "{text} in its root is not its working directory"
            )));
        }
        Ok(resolved.path)
    }

    /// The working directory, canonical, in the workload's view.
    pub(crate) fn cwd(&self) -> Result<&str, String> {
        self.cwd.as_deref().map_err(Clone::clone)
    }

    /// Resolves `path` (relative ones against the workload's working
    /// directory).
    pub(crate) fn resolve(&self, path: &str) -> Result<Resolved, String> {
        if path.starts_with('/') {
            return self.resolve_abs(path);
        }
        let cwd = self.cwd()?;
        self.resolve_abs(&format!("{cwd}/{path}"))
    }

    /// Resolves an absolute `path` inside the root; also the directories
    /// walked through (root first).
    fn resolve_chain(&self, path: &str) -> Result<(Resolved, Vec<Step>), String> {
        let fail = |e: ResolveError| {
            let why = match e {
                ResolveError::Missing { source, .. } | ResolveError::Io { source, .. } => {
                    source.to_string()
                }
                ResolveError::Loop => "too many levels of symbolic links".to_owned(),
                ResolveError::NonUtf8 { shown } => format!("{shown} is not UTF-8"),
                // Neither happens in this mode, reading as the agent.
                ResolveError::Forbidden { shown } => format!("{shown} may not be searched"),
                ResolveError::Leaves => "leaves the root".to_owned(),
            };
            format!("{path}: {why}")
        };
        let start = self.tree.start("/").map_err(fail)?;
        let canonical = |chain: &[Step], last: Option<&str>| {
            let mut out: String = chain
                .iter()
                .skip(1)
                .map(|step| format!("/{}", step.name))
                .collect();
            if let Some(name) = last {
                out.push('/');
                out.push_str(name);
            }
            if out.is_empty() {
                out.push('/');
            }
            out
        };
        match resolve(&self.tree, start, path, Floor::InRoot).map_err(fail)? {
            crate::tree::view::Resolved::Dir(chain) => {
                let last = chain.last().map(|s| (s.stat.st_dev, s.stat.st_ino));
                let resolved = Resolved {
                    path: canonical(&chain, None),
                    identity: last.unwrap_or_default(),
                    is_dir: true,
                };
                Ok((resolved, chain))
            }
            crate::tree::view::Resolved::File(chain, name, meta) => {
                let resolved = Resolved {
                    path: canonical(&chain, Some(&name)),
                    identity: (meta.dev(), meta.ino()),
                    is_dir: meta.is_dir(),
                };
                Ok((resolved, chain))
            }
        }
    }

    /// Resolves an absolute `path` inside the root.
    fn resolve_abs(&self, path: &str) -> Result<Resolved, String> {
        self.resolve_chain(path).map(|(resolved, _)| resolved)
    }

    /// Whether `path` (absolute, canonical as the kernel prints it in
    /// `maps`) leads, in the workload's view, through directories that
    /// only root can change to the inode `identity`: every directory from
    /// the root down owned by root and not group- or world-writable, no
    /// symbolic link on the way (the canonical path is the path itself).
    pub(crate) fn root_protected(&self, path: &str, identity: (u64, u64)) -> bool {
        let protected = |uid: u32, mode: u32| uid == 0 && mode & 0o022 == 0;
        let Ok((resolved, chain)) = self.resolve_chain(path) else {
            return false;
        };
        resolved.path == path
            && resolved.identity() == identity
            && !resolved.is_dir()
            && chain
                .iter()
                .all(|step| protected(step.stat.st_uid, step.stat.st_mode))
    }

    /// (device, inode) of the workload's root directory.
    pub(crate) fn root_identity(&self) -> Option<(u64, u64)> {
        let start = self.tree.start("/").ok()?;
        let root = start.first()?;
        let st = fstat(&root.fd).ok()?;
        (FileType::from_raw_mode(st.st_mode) == FileType::Directory)
            .then_some((st.st_dev, st.st_ino))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A fake `/proc/<pid>` whose root is `root` and cwd `cwd`.
    fn fake(root: &std::path::Path, cwd: &std::path::Path) -> (tempfile::TempDir, ProcRoot) {
        let proc = tempfile::tempdir().unwrap();
        std::fs::create_dir(proc.path().join("7")).unwrap();
        std::os::unix::fs::symlink(root, proc.path().join("7/root")).unwrap();
        std::os::unix::fs::symlink(cwd, proc.path().join("7/cwd")).unwrap();
        let p = ProcRoot::new(proc.path());
        (proc, p)
    }

    #[test]
    fn paths_resolve_inside_the_workload_root() {
        let root = tempfile::tempdir().unwrap();
        let r = root.path();
        std::fs::create_dir_all(r.join("srv/app/lib")).unwrap();
        std::fs::write(r.join("srv/app/main.py"), b"x").unwrap();
        std::os::unix::fs::symlink("/srv/app", r.join("link")).unwrap();
        std::os::unix::fs::symlink("../../../../../etc/passwd", r.join("srv/up")).unwrap();
        std::os::unix::fs::symlink("lib/../main.py", r.join("srv/app/rel")).unwrap();
        // The fake cwd link reads as the real path, which does not exist
        // inside the fake root: the working directory is unknown.
        let (_p, proc) = fake(r, &r.join("srv/app"));
        let view = View::open(&proc, 7).unwrap();
        assert!(view.cwd().is_err());
        assert_eq!(
            view.resolve("/link/main.py").unwrap().path,
            "/srv/app/main.py"
        );
        assert_eq!(
            view.resolve("/srv/app/rel").unwrap().path,
            "/srv/app/main.py"
        );
        assert_eq!(
            view.resolve("/../../srv/./app/lib/..").unwrap().path,
            "/srv/app"
        );
        // `..` stops at the root: /etc/passwd of the fake root, absent.
        assert!(view.resolve("/srv/up").is_err());
        assert!(view.resolve("main.py").is_err(), "no cwd, no relative path");
        let main = view.resolve("/srv/app/main.py").unwrap();
        assert!(!main.is_dir());
        assert!(view.resolve("/srv/app/main.py/x").is_err());
    }

    #[test]
    fn the_real_working_directory_is_established() {
        let pid = i32::try_from(std::process::id()).unwrap();
        let view = View::open(&ProcRoot::default(), pid).unwrap();
        let cwd = std::env::current_dir().unwrap().canonicalize().unwrap();
        assert_eq!(view.cwd().unwrap(), cwd.to_str().unwrap());
        assert_eq!(
            view.resolve("Cargo.toml").unwrap().path,
            cwd.join("Cargo.toml").to_str().unwrap()
        );
    }

    #[test]
    fn protection_needs_root_owned_unwritable_directories_all_the_way() {
        let pid = i32::try_from(std::process::id()).unwrap();
        let view = View::open(&ProcRoot::default(), pid).unwrap();
        let id = |p: &str| {
            use std::os::unix::fs::MetadataExt;
            let m = std::fs::metadata(p).unwrap();
            (m.dev(), m.ino())
        };
        let libc = std::fs::canonicalize("/bin/sh").unwrap();
        let libc = libc.to_str().unwrap();
        assert!(view.root_protected(libc, id(libc)));
        assert!(!view.root_protected(libc, (0, 1)), "another inode");
        // A root-owned file in a world-writable directory is not protected.
        let dir = tempfile::tempdir_in("/tmp").unwrap();
        let file = dir.path().join("lib.so");
        std::fs::write(&file, b"x").unwrap();
        let file = file.to_str().unwrap();
        assert!(!view.root_protected(file, id(file)));
    }
}
