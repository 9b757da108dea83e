//! Resolving one path as the workload sees it: inside its root
//! (`/proc/<pid>/root`), relative paths against its own working directory,
//! symbolic links followed one component at a time without ever leaving
//! that root (an absolute link target restarts at the workload's root, `..`
//! stops there), as the kernel does for the process itself.
//!
//! The result is the canonical path in the workload's view and the status
//! of the inode it leads to (taken from the descriptor the walk opened).

use std::os::fd::OwnedFd;
use std::os::unix::ffi::OsStrExt;

use rustix::fs::{FileType, Mode, OFlags, Stat, fstat, openat, readlinkat};

use super::proc::ProcRoot;

/// Most symbolic links followed while resolving one path (as Linux's 40).
const MAX_LINKS: usize = 40;

/// A path resolved in the workload's view.
#[derive(Debug)]
pub(crate) struct Resolved {
    /// Canonical absolute path in the workload's view (no `.`, `..` or
    /// symbolic links).
    pub(crate) path: String,
    /// The file's status.
    pub(crate) stat: Stat,
}

impl Resolved {
    /// (device, inode).
    pub(crate) fn identity(&self) -> (u64, u64) {
        (self.stat.st_dev, self.stat.st_ino)
    }

    /// Whether it is a directory.
    pub(crate) fn is_dir(&self) -> bool {
        FileType::from_raw_mode(self.stat.st_mode) == FileType::Directory
    }
}

/// The workload's root and working directory, opened once per measurement.
#[derive(Debug)]
pub(crate) struct View {
    root: OwnedFd,
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
        let root = openat(
            rustix::fs::CWD,
            &root_path,
            OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| format!("cannot open {}: {e}", root_path.display()))?;
        let mut view = View {
            root,
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
        use std::os::unix::fs::MetadataExt;
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

    /// Resolves an absolute `path` inside the root.
    fn resolve_abs(&self, path: &str) -> Result<Resolved, String> {
        let fail = |why: String| format!("{path}: {why}");
        // Components still to walk, the next one last.
        let mut pending: Vec<String> = components(path).rev().map(str::to_owned).collect();
        // The canonical components walked so far, each with its descriptor.
        let mut walked: Vec<(String, OwnedFd, Stat)> = Vec::new();
        let mut links = 0;
        while let Some(name) = pending.pop() {
            match name.as_str() {
                "" | "." => continue,
                ".." => {
                    walked.pop();
                    continue;
                }
                _ => {}
            }
            let parent = walked.last().map_or(&self.root, |(_, fd, _)| fd);
            if let Some((_, _, st)) = walked.last()
                && FileType::from_raw_mode(st.st_mode) != FileType::Directory
            {
                return Err(fail("a component is not a directory".into()));
            }
            let fd = openat(
                parent,
                name.as_str(),
                OFlags::PATH | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                Mode::empty(),
            )
            .map_err(|e| fail(e.to_string()))?;
            let st = fstat(&fd).map_err(|e| fail(e.to_string()))?;
            if FileType::from_raw_mode(st.st_mode) == FileType::Symlink {
                links += 1;
                if links > MAX_LINKS {
                    return Err(fail("too many levels of symbolic links".into()));
                }
                let target = readlinkat(&fd, "", Vec::new()).map_err(|e| fail(e.to_string()))?;
                let target = target.to_string_lossy().into_owned();
                if target.starts_with('/') {
                    walked.clear();
                }
                pending.extend(
                    components(&target)
                        .rev()
                        .map(str::to_owned)
                        .collect::<Vec<_>>(),
                );
                continue;
            }
            walked.push((name, fd, st));
        }
        let canonical = if walked.is_empty() {
            "/".to_owned()
        } else {
            walked
                .iter()
                .map(|(name, _, _)| format!("/{name}"))
                .collect()
        };
        match walked.pop() {
            Some((_, _, stat)) => Ok(Resolved {
                path: canonical,
                stat,
            }),
            None => {
                let fd = openat(
                    &self.root,
                    ".",
                    OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
                    Mode::empty(),
                )
                .map_err(|e| fail(e.to_string()))?;
                let stat = fstat(&fd).map_err(|e| fail(e.to_string()))?;
                Ok(Resolved {
                    path: canonical,
                    stat,
                })
            }
        }
    }

    /// Whether `path` (absolute, canonical as the kernel prints it in
    /// `maps`) leads, in the workload's view, through directories that
    /// only root can change to the inode `identity`: every directory from
    /// the root down owned by root and not group- or world-writable, no
    /// symbolic link on the way.
    pub(crate) fn root_protected(&self, path: &str, identity: (u64, u64)) -> bool {
        let protected = |st: &Stat| st.st_uid == 0 && st.st_mode & 0o022 == 0;
        let Ok(root) = fstat(&self.root) else {
            return false;
        };
        if !protected(&root) {
            return false;
        }
        let names: Vec<&str> = components(path).filter(|c| !c.is_empty()).collect();
        let mut dir: Option<OwnedFd> = None;
        for (i, name) in names.iter().enumerate() {
            if matches!(*name, "." | "..") {
                return false;
            }
            let parent = dir.as_ref().unwrap_or(&self.root);
            let Ok(fd) = openat(
                parent,
                *name,
                OFlags::PATH | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                Mode::empty(),
            ) else {
                return false;
            };
            let Ok(st) = fstat(&fd) else { return false };
            if i + 1 == names.len() {
                return (st.st_dev, st.st_ino) == identity;
            }
            if FileType::from_raw_mode(st.st_mode) != FileType::Directory || !protected(&st) {
                return false;
            }
            dir = Some(fd);
        }
        false
    }

    /// (device, inode) of the workload's root directory.
    pub(crate) fn root_identity(&self) -> Option<(u64, u64)> {
        fstat(&self.root).ok().map(|st| (st.st_dev, st.st_ino))
    }
}

/// `/`-separated components.
fn components(path: &str) -> impl DoubleEndedIterator<Item = &str> {
    path.split('/')
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
