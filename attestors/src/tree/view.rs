//! Where a tree's path is resolved, and as whom it is read.
//!
//! A [`View`] is a root directory and a working directory, both held as
//! descriptors: for the agent, a workload's `/proc/<pid>/root` and
//! `/proc/<pid>/cwd`, so every path the workload names is resolved in its
//! own mount namespace; for `image digest`, this process's own `/` and `.`.
//!
//! Paths are resolved here one name at a time, each name opened with
//! `O_PATH | O_NOFOLLOW` relative to the directory reached so far, so the
//! kernel never follows a link or resolves a path in the agent's
//! namespace. Symbolic links are expanded by this code: an absolute target
//! restarts from the view's root and `..` never climbs above it (the
//! semantics of `openat2`'s `RESOLVE_IN_ROOT`), a procfs "magic" link is
//! only its text (`RESOLVE_NO_MAGICLINKS`), and after 40 links resolution
//! stops, as the kernel's does. Resolving name by name is what lets the
//! [`Reader`] check, before each lookup, that the reader may search the
//! directory it looks in, as the kernel would check the workload itself.
//! Below the model root the same resolver runs in the stricter mode where
//! `..` above the root or an absolute target is refused
//! (`RESOLVE_BENEATH`).

use std::fs::Metadata;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::path::Path;

use rustix::fs::{FileType, Mode, OFlags, Stat, fstat, openat, readlinkat};

use super::access::{Access, Reader};

/// Most symbolic links expanded in one resolution (the kernel's limit).
const MAX_LINKS: usize = 40;

/// A root and a working directory to resolve paths in, and the reader
/// whose permissions apply.
#[derive(Debug)]
pub struct View {
    root: OwnedFd,
    root_id: (u64, u64),
    cwd: OwnedFd,
    reader: Reader,
}

impl View {
    /// This process's own `/` and `.`; the kernel checks its permissions.
    pub fn own() -> io::Result<View> {
        View::open(Path::new("/"), Path::new("."), Reader::Caller)
    }

    /// The view whose root is the directory `root` leads to (following it:
    /// `/proc/<pid>/root` leads to that process's root in its own mount
    /// namespace) and whose working directory is the one `cwd` leads to.
    pub fn open(root: &Path, cwd: &Path, reader: Reader) -> io::Result<View> {
        let dir = |path: &Path| {
            openat(
                rustix::fs::CWD,
                path,
                OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
                Mode::empty(),
            )
            .map_err(io::Error::from)
        };
        let root = dir(root)?;
        let cwd = dir(cwd)?;
        let stat = fstat(&root)?;
        Ok(View {
            root_id: (stat.st_dev, stat.st_ino),
            root,
            cwd,
            reader,
        })
    }

    /// Whose permissions apply.
    pub fn reader(&self) -> &Reader {
        &self.reader
    }
}

/// A directory reached by resolution.
#[derive(Debug)]
pub(crate) struct Step {
    /// An `O_PATH` descriptor of the directory.
    pub(crate) fd: OwnedFd,
    /// Its name in its parent; empty for the starting point.
    pub(crate) name: String,
    /// The path shown in errors.
    pub(crate) shown: String,
    /// Its status, for permission checks.
    pub(crate) stat: Stat,
}

/// What a path resolved to.
#[derive(Debug)]
pub(crate) enum Resolved {
    /// A directory: the chain of directories from the starting point to it.
    Dir(Vec<Step>),
    /// A regular file (or other non-directory): the chain to its parent,
    /// its name and its metadata.
    File(Vec<Step>, String, Metadata),
}

/// How `..` and absolute targets behave at the floor of a resolution.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Floor {
    /// The view's root: `..` stays there, an absolute target restarts there.
    InRoot,
    /// A model root: `..` above it or an absolute target leaves it.
    Beneath,
}

/// Why a resolution failed; the caller names the path it was resolving.
#[derive(Debug)]
pub(crate) enum ResolveError {
    /// Nothing at `shown`, or a non-directory where a directory was needed.
    Missing { shown: String, source: io::Error },
    /// The reader may not search the directory `shown`.
    Forbidden { shown: String },
    /// The path leaves the floor (beneath mode only).
    Leaves,
    /// More than [`MAX_LINKS`] links.
    Loop,
    /// A link target or name that is not UTF-8.
    NonUtf8 { shown: String },
    /// Reading failed.
    Io { shown: String, source: io::Error },
}

/// Resolves `path` (a relative path never leaves the floor in beneath
/// mode) from `start`: the chain of directories already reached, whose
/// first element is the floor in beneath mode. The final component is
/// followed when it is a link.
pub(crate) fn resolve(
    view: &View,
    mut chain: Vec<Step>,
    path: &str,
    floor: Floor,
) -> Result<Resolved, ResolveError> {
    let mut pending: Vec<String> = components(path);
    if path.starts_with('/') {
        match floor {
            Floor::InRoot => chain = vec![view.root_step()?],
            Floor::Beneath => return Err(ResolveError::Leaves),
        }
    }
    let mut links = 0usize;
    // Pending components are kept reversed: the next one is last.
    pending.reverse();
    while let Some(name) = pending.pop() {
        let Some(cur) = chain.last() else {
            return Err(ResolveError::Leaves);
        };
        // Every lookup, `..` included, needs search permission on the
        // directory it is made in.
        if !view
            .reader
            .may(&cur.stat, Access::Search, || acl_of_fd(cur.fd.as_fd()))
        {
            return Err(ResolveError::Forbidden {
                shown: cur.shown.clone(),
            });
        }
        if name == "." {
            continue;
        }
        if name == ".." {
            if chain.len() > 1 {
                chain.pop();
                continue;
            }
            match floor {
                Floor::Beneath => return Err(ResolveError::Leaves),
                Floor::InRoot => {
                    let bottom = &chain[0];
                    if (bottom.stat.st_dev, bottom.stat.st_ino) == view.root_id {
                        continue;
                    }
                    // Above a working directory that is not the root: the
                    // kernel's parent, which is where the workload's own
                    // `..` goes.
                    let shown = join(&bottom.shown, "..");
                    let step = open_step(bottom.fd.as_fd(), "..", shown)?;
                    chain = vec![step];
                    continue;
                }
            }
        }
        let shown = join(&cur.shown, &name);
        let fd = match openat(
            &cur.fd,
            name.as_str(),
            OFlags::PATH | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
        ) {
            Ok(fd) => fd,
            Err(e) if e == rustix::io::Errno::NOENT || e == rustix::io::Errno::NOTDIR => {
                return Err(ResolveError::Missing {
                    shown,
                    source: e.into(),
                });
            }
            Err(e) => {
                return Err(ResolveError::Io {
                    shown,
                    source: e.into(),
                });
            }
        };
        let stat = fstat(&fd).map_err(|e| ResolveError::Io {
            shown: shown.clone(),
            source: e.into(),
        })?;
        match FileType::from_raw_mode(stat.st_mode) {
            FileType::Directory => chain.push(Step {
                fd,
                name,
                shown,
                stat,
            }),
            FileType::Symlink => {
                links += 1;
                if links > MAX_LINKS {
                    return Err(ResolveError::Loop);
                }
                let target = readlinkat(&fd, "", Vec::new()).map_err(|e| ResolveError::Io {
                    shown: shown.clone(),
                    source: e.into(),
                })?;
                let target = target
                    .into_string()
                    .map_err(|_| ResolveError::NonUtf8 { shown })?;
                if target.starts_with('/') {
                    match floor {
                        Floor::InRoot => chain = vec![view.root_step()?],
                        Floor::Beneath => return Err(ResolveError::Leaves),
                    }
                }
                pending.extend(components(&target).into_iter().rev());
            }
            _ if pending.is_empty() => {
                let meta =
                    std::fs::File::from(fd)
                        .metadata()
                        .map_err(|source| ResolveError::Io {
                            shown: shown.clone(),
                            source,
                        })?;
                return Ok(Resolved::File(chain, name, meta));
            }
            _ => {
                return Err(ResolveError::Missing {
                    shown,
                    source: io::Error::from(rustix::io::Errno::NOTDIR),
                });
            }
        }
    }
    Ok(Resolved::Dir(chain))
}

impl View {
    /// The starting chain of a path: the root for an absolute one, the
    /// working directory for a relative one.
    pub(crate) fn start(&self, path: &str) -> Result<Vec<Step>, ResolveError> {
        if path.starts_with('/') {
            Ok(vec![self.root_step()?])
        } else {
            let shown = ".".to_owned();
            Ok(vec![dup_step(self.cwd.as_fd(), shown)?])
        }
    }

    fn root_step(&self) -> Result<Step, ResolveError> {
        dup_step(self.root.as_fd(), String::new())
    }
}

/// A step for a directory the caller already holds.
pub(crate) fn dup_step(fd: BorrowedFd<'_>, shown: String) -> Result<Step, ResolveError> {
    open_step(fd, ".", shown)
}

/// Opens `name` in `dir` as a directory step (no link followed).
pub(crate) fn open_step(
    dir: BorrowedFd<'_>,
    name: &str,
    shown: String,
) -> Result<Step, ResolveError> {
    let io = |shown: &String| {
        let shown = shown.clone();
        move |e: rustix::io::Errno| ResolveError::Io {
            shown,
            source: e.into(),
        }
    };
    let fd = openat(
        dir,
        name,
        OFlags::PATH | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(io(&shown))?;
    let stat = fstat(&fd).map_err(io(&shown))?;
    Ok(Step {
        fd,
        name: String::new(),
        shown,
        stat,
    })
}

/// The POSIX access ACL of the directory an `O_PATH` descriptor holds.
pub(crate) fn acl_of_fd(fd: BorrowedFd<'_>) -> Option<Vec<u8>> {
    // getxattr follows the /proc/self/fd magic link to the directory itself.
    read_acl(&fd_path(fd), true)
}

/// The POSIX access ACL of `name` in `dir`, not following a link.
pub(crate) fn acl_of_entry(dir: BorrowedFd<'_>, name: &str) -> Option<Vec<u8>> {
    read_acl(&format!("{}/{name}", fd_path(dir)), false)
}

/// `system.posix_acl_access` of `path`: `None` when it has none. An ACL
/// that cannot be read is reported as an empty one, which the access check
/// refuses (fail closed).
fn read_acl(path: &str, follow: bool) -> Option<Vec<u8>> {
    const NAME: &str = "system.posix_acl_access";
    let mut buf = vec![0u8; 512];
    let got = if follow {
        rustix::fs::getxattr(path, NAME, &mut buf[..])
    } else {
        rustix::fs::lgetxattr(path, NAME, &mut buf[..])
    };
    match got {
        Ok(n) => {
            buf.truncate(n);
            Some(buf)
        }
        Err(e) if e == rustix::io::Errno::NODATA || e == rustix::io::Errno::OPNOTSUPP => None,
        Err(_) => Some(Vec::new()),
    }
}

/// The path through which this process reaches an open descriptor: the
/// directory itself, whatever its path is in any namespace.
pub(crate) fn fd_path(fd: BorrowedFd<'_>) -> String {
    format!("/proc/self/fd/{}", fd.as_raw_fd())
}

/// `a/b` from a shown directory and a name.
pub(crate) fn join(dir: &str, name: &str) -> String {
    if dir == "." {
        name.to_owned()
    } else if dir.is_empty() {
        format!("/{name}")
    } else if dir.ends_with('/') {
        format!("{dir}{name}")
    } else {
        format!("{dir}/{name}")
    }
}

/// The non-empty components of a path.
fn components(path: &str) -> Vec<String> {
    path.split('/')
        .filter(|c| !c.is_empty())
        .map(str::to_owned)
        .collect()
}
