//! The walk behind every tree digest: resolve the directory in a [`View`],
//! list it through descriptors (checking names, limits and the reader's
//! permissions, and resolving followed links) before anything is hashed,
//! then hash in canonical order.

use std::collections::HashSet;
use std::fs::{self, File, Metadata};
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use rustix::fs::{Mode, OFlags, ResolveFlags, fstat, openat, openat2, readlinkat};
use sha2::{Digest, Sha256};

use super::access::Access;
use super::view::{
    Floor, ResolveError, Resolved, Step, View, acl_of_entry, acl_of_fd, dup_step, fd_path, join,
    resolve,
};
use super::{
    ChangedMarker, EntryKind, FileHasher, Links, TreeDigest, TreeEntry, TreeError, TreeFile,
    TreeLimits, text, type_name,
};

/// Deepest directory nesting walked.
pub(crate) const MAX_DEPTH: usize = 256;

/// Digests the tree at `path` as seen in `view`.
pub(crate) fn digest_in(
    view: &View,
    path: &Path,
    links: Links,
    limits: &TreeLimits,
    hasher: &dyn FileHasher,
) -> Result<TreeDigest, TreeError> {
    let declared = text(path, path.to_str())?;
    let chain = match resolve(view, start(view, path, declared)?, declared, Floor::InRoot) {
        Ok(Resolved::Dir(chain)) => chain,
        Ok(Resolved::File(..)) => {
            return Err(TreeError::NotADirectory {
                path: path.to_path_buf(),
            });
        }
        Err(e) => return Err(resolve_error(view, path, e)),
    };
    let Some(tree) = chain.last() else {
        return Err(TreeError::NotADirectory {
            path: path.to_path_buf(),
        });
    };
    let mut walk = Walk {
        view,
        hasher,
        links,
        limits,
        shown: declared.trim_end_matches('/').to_owned(),
        root: model_root(&chain, declared)?,
        items: Vec::new(),
        entries: 0,
        total: 0,
        dirs: HashSet::new(),
        dir_links: Vec::new(),
    };
    if walk.shown.is_empty() {
        walk.shown = "/".into();
    }
    if !view
        .reader()
        .may(&tree.stat, Access::List, || acl_of_fd(tree.fd.as_fd()))
    {
        return Err(walk.forbidden(walk.shown.clone(), Access::List));
    }
    walk.dirs.insert((tree.stat.st_dev, tree.stat.st_ino));
    walk.dir(tree.fd.as_fd(), "", 0)?;
    for (rel, shown, target, id) in std::mem::take(&mut walk.dir_links) {
        if !walk.dirs.contains(&id) {
            return Err(TreeError::LinkToDirectory {
                path: shown.into(),
                target,
            });
        }
        walk.items.push(Item {
            rel,
            shown: PathBuf::from(shown),
            kind: Listed::Symlink(target),
        });
    }
    let Walk {
        mut items, root, ..
    } = walk;
    items.sort_unstable_by(|a, b| a.rel.as_bytes().cmp(b.rel.as_bytes()));
    hash(items, tree.fd.as_fd(), root.fd.as_fd(), hasher)
}

/// Whether `path` is a directory in `view` (`false` when nothing, or
/// something else, is there).
pub(crate) fn is_dir_in(view: &View, path: &Path) -> Result<bool, TreeError> {
    let declared = text(path, path.to_str())?;
    match resolve(view, start(view, path, declared)?, declared, Floor::InRoot) {
        Ok(Resolved::Dir(_)) => Ok(true),
        Ok(Resolved::File(..)) | Err(ResolveError::Missing { .. }) => Ok(false),
        Err(e) => Err(resolve_error(view, path, e)),
    }
}

fn start(view: &View, path: &Path, declared: &str) -> Result<Vec<Step>, TreeError> {
    view.start(declared)
        .map_err(|e| resolve_error(view, path, e))
}

/// The error for a path that could not be resolved.
fn resolve_error(view: &View, path: &Path, error: ResolveError) -> TreeError {
    let shown = |s: String| if s.is_empty() { "/".into() } else { s };
    match error {
        ResolveError::Missing { shown: s, source } | ResolveError::Io { shown: s, source } => {
            TreeError::Io {
                path: shown(s).into(),
                source,
            }
        }
        ResolveError::Forbidden { shown: s } => TreeError::Forbidden {
            path: shown(s).into(),
            uid: view.reader().uid(),
            access: Access::Search.verb(),
        },
        ResolveError::NonUtf8 { shown: s } => TreeError::NonUtf8 {
            path: shown(s).into(),
        },
        ResolveError::Leaves | ResolveError::Loop => TreeError::Io {
            path: path.to_path_buf(),
            source: io::Error::from(rustix::io::Errno::LOOP),
        },
    }
}

/// The directory symlinks may lead into, and where the tree is in it.
#[derive(Debug)]
struct ModelRoot {
    fd: OwnedFd,
    /// The tree's path from the root, `""` or `snapshots/<rev>/`.
    prefix: String,
    /// The root as shown in errors.
    shown: String,
}

/// The model root of a tree reached by `chain`: the repository directory
/// of a Hugging Face cache snapshot (`<repo>/snapshots/<rev>` with a
/// `<repo>/blobs` directory), else the tree itself.
fn model_root(chain: &[Step], shown: &str) -> Result<ModelRoot, TreeError> {
    let io = |source: io::Error| TreeError::Io {
        path: shown.into(),
        source,
    };
    let n = chain.len();
    if n >= 3 && chain[n - 2].name == "snapshots" && !chain[n - 1].name.is_empty() {
        let repo = &chain[n - 3];
        let blobs = rustix::fs::statat(&repo.fd, "blobs", rustix::fs::AtFlags::SYMLINK_NOFOLLOW);
        if blobs.is_ok_and(|s| rustix::fs::FileType::from_raw_mode(s.st_mode).is_dir()) {
            let step = dup_step(repo.fd.as_fd(), repo.shown.clone())
                .map_err(|_| io(io::Error::from(rustix::io::Errno::NOENT)))?;
            return Ok(ModelRoot {
                fd: step.fd,
                prefix: format!("snapshots/{}/", chain[n - 1].name),
                shown: match Path::new(shown.trim_end_matches('/'))
                    .parent()
                    .and_then(Path::parent)
                {
                    Some(p) if !p.as_os_str().is_empty() => p.display().to_string(),
                    _ => format!("{shown}/../.."),
                },
            });
        }
    }
    let Some(tree) = chain.last() else {
        return Err(io(io::Error::from(rustix::io::Errno::NOENT)));
    };
    let step = dup_step(tree.fd.as_fd(), tree.shown.clone())
        .map_err(|_| io(io::Error::from(rustix::io::Errno::NOENT)))?;
    Ok(ModelRoot {
        fd: step.fd,
        prefix: String::new(),
        shown: shown.to_owned(),
    })
}

/// One entry found by the walk, before hashing.
struct Item {
    rel: String,
    shown: PathBuf,
    kind: Listed,
}

enum Listed {
    /// A regular file of the tree: its metadata.
    File(Metadata),
    /// A followed link: its target text, the target's metadata and its
    /// path from the model root.
    Link {
        target: String,
        meta: Metadata,
        from_root: String,
    },
    /// A link recorded, not followed.
    Symlink(String),
}

struct Walk<'a> {
    view: &'a View,
    /// Told of every listed entry (charging, cancellation).
    hasher: &'a dyn FileHasher,
    links: Links,
    limits: &'a TreeLimits,
    /// The tree's path as the reader named it.
    shown: String,
    /// Where followed links may lead.
    root: ModelRoot,
    items: Vec<Item>,
    entries: usize,
    total: u64,
    /// (device, inode) of every directory of the tree.
    dirs: HashSet<(u64, u64)>,
    /// Links to directories: (relative path, shown path, target, the
    /// directory's identity).
    dir_links: Vec<(String, String, String, (u64, u64))>,
}

impl Walk<'_> {
    /// Lists the directory `fd` (relative path `prefix`, `""` or `a/b/`).
    fn dir(&mut self, fd: BorrowedFd<'_>, prefix: &str, depth: usize) -> Result<(), TreeError> {
        if depth >= MAX_DEPTH {
            return Err(TreeError::TooDeep {
                root: self.shown.clone().into(),
                limit: MAX_DEPTH,
            });
        }
        let here = self.show(prefix.trim_end_matches('/'));
        let io_err = |path: &str| {
            let path = PathBuf::from(path);
            move |source| TreeError::Io { path, source }
        };
        // The listing opens the directory this descriptor holds, not a path.
        let mut listed = Vec::new();
        for dirent in fs::read_dir(fd_path(fd)).map_err(io_err(&here))? {
            let dirent = dirent.map_err(io_err(&here))?;
            self.entries += 1;
            if self.entries > self.limits.max_entries {
                return Err(TreeError::TooManyEntries {
                    root: self.shown.clone().into(),
                    limit: self.limits.max_entries,
                });
            }
            let file_name = dirent.file_name();
            let shown = join(&here, &file_name.to_string_lossy());
            let name = text(Path::new(&shown), file_name.to_str())?.to_owned();
            // fstatat on the listed directory, not following links.
            let meta = dirent.metadata().map_err(io_err(&shown))?;
            self.hasher
                .listed(Path::new(&shown), &meta)
                .map_err(io_err(&shown))?;
            listed.push((name, shown, meta));
        }
        let mut subdirs = Vec::new();
        for (name, shown, meta) in listed {
            let rel = format!("{prefix}{name}");
            let ft = meta.file_type();
            if ft.is_dir() {
                if !self
                    .view
                    .reader()
                    .may(&meta, Access::List, || acl_of_entry(fd, &name))
                {
                    return Err(self.forbidden(shown, Access::List));
                }
                subdirs.push((name, rel, shown, meta));
            } else if ft.is_symlink() {
                let target = readlinkat(fd, name.as_str(), Vec::new())
                    .map_err(|e| TreeError::Io {
                        path: shown.clone().into(),
                        source: e.into(),
                    })?
                    .into_string()
                    .map_err(|_| TreeError::NonUtf8 {
                        path: shown.clone().into(),
                    })?;
                text(Path::new(&shown), Some(&target))?;
                if target.contains("  ") || target.ends_with(' ') {
                    return Err(TreeError::Ambiguous {
                        path: shown.into(),
                        reason: "symlink target contains two consecutive spaces or ends with a space",
                    });
                }
                match self.links {
                    Links::Record => self.items.push(Item {
                        rel,
                        shown: shown.into(),
                        kind: Listed::Symlink(target),
                    }),
                    Links::Follow => self.follow(prefix, rel, shown, target)?,
                }
            } else if ft.is_file() {
                if !self
                    .view
                    .reader()
                    .may(&meta, Access::Read, || acl_of_entry(fd, &name))
                {
                    return Err(self.forbidden(shown, Access::Read));
                }
                self.count(&shown, meta.len())?;
                self.items.push(Item {
                    rel,
                    shown: shown.into(),
                    kind: Listed::File(meta),
                });
            } else {
                return Err(TreeError::UnsupportedFileType {
                    path: shown.into(),
                    kind: type_name(&ft),
                });
            }
        }
        for (name, rel, shown, meta) in subdirs {
            let sub = openat(
                fd,
                name.as_str(),
                OFlags::PATH | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                Mode::empty(),
            )
            .map_err(|e| TreeError::Io {
                path: shown.clone().into(),
                source: e.into(),
            })?;
            let now = fstat(&sub).map_err(|e| TreeError::Io {
                path: shown.clone().into(),
                source: e.into(),
            })?;
            if (now.st_dev, now.st_ino) != (meta.dev(), meta.ino()) {
                return Err(TreeError::Changed { path: shown.into() });
            }
            self.dirs.insert((meta.dev(), meta.ino()));
            self.dir(sub.as_fd(), &format!("{rel}/"), depth + 1)?;
        }
        Ok(())
    }

    /// Resolves the link at `rel` (in the directory `prefix`) beneath the
    /// model root and records what it leads to.
    fn follow(
        &mut self,
        prefix: &str,
        rel: String,
        shown: String,
        target: String,
    ) -> Result<(), TreeError> {
        let root = &self.root;
        let from_root = format!("{}{prefix}{target}", root.prefix);
        let start = dup_step(root.fd.as_fd(), root.shown.clone()).map_err(|_| TreeError::Io {
            path: root.shown.clone().into(),
            source: io::Error::from(rustix::io::Errno::NOENT),
        })?;
        let link = |shown: &str, target: &str| (PathBuf::from(shown), target.to_owned());
        match resolve(self.view, vec![start], &from_root, Floor::Beneath) {
            Ok(Resolved::File(chain, name, meta)) => {
                if !meta.is_file() {
                    return Err(TreeError::UnsupportedFileType {
                        path: shown.into(),
                        kind: type_name(&meta.file_type()),
                    });
                }
                let parent = chain.last().map(|s| s.fd.as_fd());
                if !self.view.reader().may(&meta, Access::Read, || {
                    parent.and_then(|fd| acl_of_entry(fd, &name))
                }) {
                    let at = chain.last().map_or(String::new(), |s| s.shown.clone());
                    return Err(self.forbidden(join(&at, &name), Access::Read));
                }
                self.count(&shown, meta.len())?;
                let mut path: Vec<&str> = chain.iter().skip(1).map(|s| s.name.as_str()).collect();
                path.push(&name);
                let from_root = path.join("/");
                self.items.push(Item {
                    rel,
                    shown: shown.into(),
                    kind: Listed::Link {
                        target,
                        meta,
                        from_root,
                    },
                });
                Ok(())
            }
            Ok(Resolved::Dir(chain)) => {
                let id = chain
                    .last()
                    .map_or((0, 0), |s| (s.stat.st_dev, s.stat.st_ino));
                self.dir_links.push((rel, shown, target, id));
                Ok(())
            }
            Err(ResolveError::Leaves) => {
                let (path, target) = link(&shown, &target);
                Err(TreeError::LinkLeavesRoot {
                    path,
                    target,
                    root: root.shown.clone().into(),
                })
            }
            Err(ResolveError::Loop) => {
                let (path, target) = link(&shown, &target);
                Err(TreeError::LinkLoop { path, target })
            }
            Err(ResolveError::Missing { .. }) => {
                let (path, target) = link(&shown, &target);
                Err(TreeError::DanglingLink { path, target })
            }
            Err(ResolveError::Forbidden { shown: at }) => Err(self.forbidden(at, Access::Search)),
            Err(ResolveError::NonUtf8 { shown: at }) => Err(TreeError::NonUtf8 { path: at.into() }),
            Err(ResolveError::Io { shown: at, source }) => Err(TreeError::Io {
                path: at.into(),
                source,
            }),
        }
    }

    /// Counts a file of `size` bytes against the limits.
    fn count(&mut self, shown: &str, size: u64) -> Result<(), TreeError> {
        if size > self.limits.max_file_size {
            return Err(TreeError::FileTooLarge {
                path: shown.into(),
                size,
                limit: self.limits.max_file_size,
            });
        }
        self.total = self.total.saturating_add(size);
        if self.total > self.limits.max_total_bytes {
            return Err(TreeError::TotalTooLarge {
                root: self.shown.clone().into(),
                limit: self.limits.max_total_bytes,
            });
        }
        Ok(())
    }

    fn forbidden(&self, path: String, access: Access) -> TreeError {
        TreeError::Forbidden {
            path: if path.is_empty() {
                "/".into()
            } else {
                path.into()
            },
            uid: self.view.reader().uid(),
            access: access.verb(),
        }
    }

    /// The shown path of `rel` (`""`: the tree itself).
    fn show(&self, rel: &str) -> String {
        if rel.is_empty() {
            self.shown.clone()
        } else {
            join(&self.shown, rel)
        }
    }
}

/// Hashes the listed items in order: tree files below `tree`, followed
/// links' targets below `root`.
fn hash(
    items: Vec<Item>,
    tree: BorrowedFd<'_>,
    root: BorrowedFd<'_>,
    hasher: &dyn FileHasher,
) -> Result<TreeDigest, TreeError> {
    let mut files = Vec::with_capacity(items.len());
    let mut outer = Sha256::new();
    for item in items {
        let content = |base: BorrowedFd<'_>, rel: &str, meta: &Metadata| {
            let file = TreeFile {
                shown: &item.shown,
                below: Some((base, rel)),
            };
            hasher.sha256(&file, meta).map_err(|source| {
                if source.get_ref().is_some_and(|e| e.is::<ChangedMarker>()) {
                    TreeError::Changed {
                        path: item.shown.clone(),
                    }
                } else {
                    TreeError::Io {
                        path: item.shown.clone(),
                        source,
                    }
                }
            })
        };
        let kind = match &item.kind {
            Listed::File(meta) => EntryKind::File {
                size: meta.len(),
                sha256: content(tree, &item.rel, meta)?,
            },
            Listed::Link {
                target,
                meta,
                from_root,
            } => EntryKind::Link {
                target: target.clone(),
                size: meta.len(),
                sha256: content(root, from_root, meta)?,
            },
            Listed::Symlink(target) => EntryKind::Symlink {
                target: target.clone(),
            },
        };
        let entry = TreeEntry {
            path: item.rel,
            kind,
        };
        outer.update(entry.line().as_bytes());
        files.push(entry);
    }
    Ok(TreeDigest {
        digest: format!("sha256:{}", hex::encode(outer.finalize())),
        files,
    })
}

/// Opens the regular file at `rel` below `base` without following any
/// link (`rel` holds only names found by the walk): as an `O_PATH`
/// descriptor first, so a file swapped for a FIFO or a device is never
/// opened for reading, then reopened for reading through that descriptor.
pub(crate) fn open_below(base: BorrowedFd<'_>, rel: &str) -> io::Result<File> {
    let flags = OFlags::PATH | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    let fd = match openat2(
        base,
        rel,
        flags,
        Mode::empty(),
        ResolveFlags::BENEATH | ResolveFlags::NO_SYMLINKS | ResolveFlags::NO_MAGICLINKS,
    ) {
        Ok(fd) => fd,
        // Before Linux 5.6: one name at a time, none followed.
        Err(rustix::io::Errno::NOSYS) => open_names(base, rel, flags)?,
        Err(e) => return Err(e.into()),
    };
    if !fstat(&fd)
        .map(|s| rustix::fs::FileType::from_raw_mode(s.st_mode).is_file())
        .unwrap_or(false)
    {
        return Err(super::changed_error());
    }
    File::open(fd_path(fd.as_fd()))
}

fn open_names(base: BorrowedFd<'_>, rel: &str, flags: OFlags) -> io::Result<OwnedFd> {
    let names: Vec<&str> = rel.split('/').filter(|n| !n.is_empty()).collect();
    let Some((last, dirs)) = names.split_last() else {
        return Err(io::Error::from(rustix::io::Errno::NOENT));
    };
    let mut cur: Option<OwnedFd> = None;
    for name in dirs {
        if *name == ".." || *name == "." {
            return Err(io::Error::from(rustix::io::Errno::XDEV));
        }
        let dir = cur.as_ref().map_or(base, |fd| fd.as_fd());
        cur = Some(openat(
            dir,
            *name,
            flags | OFlags::DIRECTORY,
            Mode::empty(),
        )?);
    }
    let dir = cur.as_ref().map_or(base, |fd| fd.as_fd());
    Ok(openat(dir, *last, flags, Mode::empty())?)
}
