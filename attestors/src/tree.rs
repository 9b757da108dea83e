//! The canonical tree digest of a model or application directory.
//!
//! # Format
//!
//! Walk the directory; sort entries by relative path (bytes, `/` separator);
//! each file or link contributes one line, directories contribute nothing,
//! any other file type is an error. The digest is the SHA-256 of the lines
//! in that order, written `sha256:<hex>`. The lines:
//!
//! - a regular file: `<sha256-hex>  <size>  <relative-path>\n`;
//! - a symbolic link recorded, not followed: `symlink  <target>  <relative-path>\n`;
//! - a symbolic link followed to a regular file (model trees, below):
//!   `link  <sha256-hex>  <size>  <target>  <relative-path>\n`, where
//!   `<target>` is the link's text and the digest and size are those of
//!   the content it leads to.
//!
//! So that the lines stay injective (two different trees never yield the
//! same lines), paths and symlink targets must be valid UTF-8 without
//! control characters, and a symlink target must not contain two
//! consecutive spaces nor end with a space: a line's kind is told by its
//! first field (64 hex digits, `symlink` or `link`), the fixed-form fields
//! that follow cannot hold two spaces, and the target ends at the first
//! two spaces after them. Such trees are refused with an error naming the
//! path. A tree without links digests exactly as it always has.
//!
//! # Links
//!
//! [`Links::Record`] (application trees, `image digest --app`): a link is
//! recorded by its text and never opened, as before. A Python venv's
//! `bin/python -> /usr/bin/python3` leaves the tree, so refusing such links
//! would refuse every venv; links inside the tree lead to content the walk
//! digests anyway. The limit: content reached through a link that leaves
//! an application tree is not measured (only the link's text is).
//!
//! [`Links::Follow`] (model trees, the default of `image digest`): a link
//! whose target stays inside the *model root* is followed and the content
//! it leads to is digested (the `link` line), so overwriting the file a link
//! points to changes the digest. "Inside" means the target is relative and
//! resolves, through any further links, without `..` ever climbing above
//! the model root (`RESOLVE_BENEATH`); an absolute target, a target above
//! the root, a dangling link or a loop is refused with an error naming the
//! link and its target. A link to a directory is never walked (so there is
//! no cycle to guard against): it is accepted, and recorded with a
//! `symlink` line, only when the directory is itself part of the tree
//! (its content is digested where it is), and refused otherwise.
//!
//! The model root is the tree itself, except for the Hugging Face cache
//! layout: when the tree is `<repo>/snapshots/<rev>` and `<repo>` holds a
//! `blobs` directory, the root is `<repo>`, so the snapshot's
//! `model.safetensors -> ../../blobs/<sha>` links are followed. The root
//! only decides which links are accepted: an accepted tree digests the same
//! whatever its root.
//!
//! # Where and as whom
//!
//! A tree is resolved and read in a [`View`]: a root and a working
//! directory held as descriptors (the agent uses the workload's
//! `/proc/<pid>/root` and `/proc/<pid>/cwd`, so a workload's paths are
//! resolved in its own mount namespace; `image digest` uses its own), walked
//! name by name without the kernel ever following a link, and a
//! [`Reader`]: the process's own permissions ([`Reader::Caller`]), or a
//! workload's credentials ([`Reader::As`]), checked on every directory the
//! path goes through (search), every directory of the tree (list) and every
//! file read (read) before anything is hashed.
//!
//! Hashing work is bounded by [`TreeLimits`], checked on the whole listing
//! before any file is read. File contents are hashed through a [`FileHasher`],
//! the seam where the agent plugs in its per-file cache.
//!
//! ```no_run
//! use hallmark_attestors::tree::{TreeLimits, digest_tree};
//! let tree = digest_tree("/models/llama".as_ref(), &TreeLimits::default())?;
//! println!("{}", tree.digest); // sha256:...
//! # Ok::<(), hallmark_attestors::tree::TreeError>(())
//! ```

use std::fs::{self, File, Metadata};
use std::io::{self, Read};
use std::os::fd::BorrowedFd;
use std::os::unix::fs::{FileTypeExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

mod access;
pub(crate) mod view;
mod walk;

pub(crate) use access::Access;
pub use access::{Credentials, Reader};
pub use view::View;
pub(crate) use view::acl_of_fd;

/// Default [`TreeLimits::max_file_size`]: 16 GiB.
pub const DEFAULT_MAX_FILE_SIZE: u64 = 16 << 30;
/// Default [`TreeLimits::max_total_bytes`]: 64 GiB.
pub const DEFAULT_MAX_TOTAL_BYTES: u64 = 64 << 30;
/// Default [`TreeLimits::max_entries`]: one million.
pub const DEFAULT_MAX_ENTRIES: usize = 1_000_000;

/// Most bytes read at a time when hashing a file.
const CHUNK: usize = 256 * 1024;

/// A read buffer for a file of `len` bytes: one chunk at most, and no
/// bigger than the file (plus the byte that shows it grew), so hashing a
/// 4 KiB file does not zero 256 KiB first.
pub(crate) fn read_buffer_len(len: u64) -> usize {
    usize::try_from(len.saturating_add(1)).map_or(CHUNK, |n| n.min(CHUNK))
}

/// Bounds on the work one digest may cost.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TreeLimits {
    /// Largest regular file accepted, in bytes.
    pub max_file_size: u64,
    /// Largest sum of regular file sizes accepted, in bytes.
    pub max_total_bytes: u64,
    /// Most entries (files, symlinks and directories below the root) accepted.
    pub max_entries: usize,
}

impl Default for TreeLimits {
    fn default() -> Self {
        TreeLimits {
            max_file_size: DEFAULT_MAX_FILE_SIZE,
            max_total_bytes: DEFAULT_MAX_TOTAL_BYTES,
            max_entries: DEFAULT_MAX_ENTRIES,
        }
    }
}

/// The digest of a tree and the entries it covers, in canonical order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TreeDigest {
    /// `sha256:<64 lowercase hex>`.
    pub digest: String,
    /// Every file and link, sorted by relative path bytes.
    pub files: Vec<TreeEntry>,
}

/// One file or symlink of a tree.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TreeEntry {
    /// Path relative to the root, `/`-separated.
    pub path: String,
    /// What the entry is, with its content digest or link target.
    pub kind: EntryKind,
}

/// The kinds of entries a tree digest records.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum EntryKind {
    /// A regular file.
    File {
        /// Size in bytes (the number of bytes hashed).
        size: u64,
        /// SHA-256 of the content.
        sha256: [u8; 32],
    },
    /// A symbolic link, not followed.
    Symlink {
        /// The link's target, as stored in the link.
        target: String,
    },
    /// A symbolic link followed to a regular file inside the model root.
    Link {
        /// The link's target, as stored in the link.
        target: String,
        /// Size in bytes of the content it leads to.
        size: u64,
        /// SHA-256 of that content.
        sha256: [u8; 32],
    },
}

/// How a tree's symbolic links are treated (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Links {
    /// Model trees: links inside the model root are followed and their
    /// content digested; any other link is refused.
    #[default]
    Follow,
    /// Application trees: links are recorded by their text, never opened.
    Record,
}

impl TreeEntry {
    /// The entry's line in the digest input, with its trailing newline.
    pub fn line(&self) -> String {
        match &self.kind {
            EntryKind::File { size, sha256 } => {
                format!("{}  {size}  {}\n", hex::encode(sha256), self.path)
            }
            EntryKind::Symlink { target } => format!("symlink  {target}  {}\n", self.path),
            EntryKind::Link {
                target,
                size,
                sha256,
            } => format!(
                "link  {}  {size}  {target}  {}\n",
                hex::encode(sha256),
                self.path
            ),
        }
    }

    /// The size of a regular file or of a followed link's content; `None`
    /// for a link recorded, not followed.
    pub fn size(&self) -> Option<u64> {
        match &self.kind {
            EntryKind::File { size, .. } | EntryKind::Link { size, .. } => Some(*size),
            EntryKind::Symlink { .. } => None,
        }
    }

    /// The lowercase hex SHA-256 of a regular file or of a followed link's
    /// content; `None` for a link recorded, not followed.
    pub fn sha256_hex(&self) -> Option<String> {
        match &self.kind {
            EntryKind::File { sha256, .. } | EntryKind::Link { sha256, .. } => {
                Some(hex::encode(sha256))
            }
            EntryKind::Symlink { .. } => None,
        }
    }
}

/// Why a tree could not be digested.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TreeError {
    /// The path does not lead to a directory.
    #[error("{path}: not a directory")]
    NotADirectory {
        /// The root given.
        path: PathBuf,
    },
    /// Reading the file system failed.
    #[error("{path}: {source}")]
    Io {
        /// The path being read.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// A path or symlink target is not valid UTF-8.
    #[error("{path}: path or symlink target is not valid UTF-8")]
    NonUtf8 {
        /// The offending path.
        path: PathBuf,
    },
    /// A path or symlink target would make the line format ambiguous.
    #[error("{path}: {reason}")]
    Ambiguous {
        /// The offending path.
        path: PathBuf,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// An entry is neither a regular file, a directory nor a symlink.
    #[error("{path}: unsupported file type {kind} (only regular files, directories and symlinks)")]
    UnsupportedFileType {
        /// The offending path.
        path: PathBuf,
        /// `fifo`, `socket`, `block device`, `char device` or `unknown`.
        kind: &'static str,
    },
    /// A file exceeds [`TreeLimits::max_file_size`].
    #[error("{path}: {size} bytes exceeds the per-file limit of {limit} bytes")]
    FileTooLarge {
        /// The offending file.
        path: PathBuf,
        /// Its size.
        size: u64,
        /// The limit.
        limit: u64,
    },
    /// The files together exceed [`TreeLimits::max_total_bytes`].
    #[error("{root}: tree holds more than the limit of {limit} bytes")]
    TotalTooLarge {
        /// The root.
        root: PathBuf,
        /// The limit.
        limit: u64,
    },
    /// The tree has more than [`TreeLimits::max_entries`] entries.
    #[error("{root}: tree has more than the limit of {limit} entries")]
    TooManyEntries {
        /// The root.
        root: PathBuf,
        /// The limit.
        limit: usize,
    },
    /// A file changed (replaced, grew or shrank) while it was being hashed.
    #[error("{path}: file changed while it was being hashed")]
    Changed {
        /// The file.
        path: PathBuf,
    },
    /// The tree nests directories deeper than the walk goes.
    #[error("{root}: tree nests directories deeper than {limit} levels")]
    TooDeep {
        /// The root.
        root: PathBuf,
        /// The limit.
        limit: usize,
    },
    /// The reader may not search, list or read a path the digest needs.
    #[error(
        "{path}: uid {uid} may not {access} it, and the agent reads only what the workload itself can read"
    )]
    Forbidden {
        /// The path, as the reader names it.
        path: PathBuf,
        /// The reader's uid.
        uid: u32,
        /// `search`, `list` or `read`.
        access: &'static str,
    },
    /// A model tree's link leads outside the model root.
    #[error(
        "{path}: symbolic link to {target} leaves the model root {root} (model links are followed only within it)"
    )]
    LinkLeavesRoot {
        /// The link.
        path: PathBuf,
        /// Its target.
        target: String,
        /// The model root.
        root: PathBuf,
    },
    /// A model tree's link leads nowhere.
    #[error("{path}: symbolic link to {target} leads to nothing")]
    DanglingLink {
        /// The link.
        path: PathBuf,
        /// Its target.
        target: String,
    },
    /// A model tree's link goes through too many links.
    #[error("{path}: symbolic link to {target} goes through too many links")]
    LinkLoop {
        /// The link.
        path: PathBuf,
        /// Its target.
        target: String,
    },
    /// A model tree's link leads to a directory that is not in the tree.
    #[error(
        "{path}: symbolic link to {target} leads to a directory outside the tree (links to directories are not walked)"
    )]
    LinkToDirectory {
        /// The link.
        path: PathBuf,
        /// Its target.
        target: String,
    },
}

/// Computes the SHA-256 of one regular file's content.
///
/// The agent implements this with a cache keyed on the file's identity
/// (device, inode, size, mtime, ctime); [`StreamingHasher`] always reads.
pub trait FileHasher {
    /// Hashes the regular file `file`, whose metadata at listing was
    /// `meta`. Must fail rather than hash something else if the file is no
    /// longer the one `meta` describes.
    fn sha256(&self, file: &TreeFile<'_>, meta: &Metadata) -> Result<[u8; 32], io::Error>;

    /// Called for every entry the walk lists (file, directory or symlink),
    /// with its metadata (links not followed), before anything is hashed;
    /// an error stops the walk. The agent charges and cancels walks here;
    /// the default does nothing.
    fn listed(&self, path: &Path, meta: &Metadata) -> Result<(), io::Error> {
        let _ = (path, meta);
        Ok(())
    }
}

/// A file of a tree, for a [`FileHasher`]: its path as shown, and how to
/// open it without following a link.
#[derive(Debug, Clone, Copy)]
pub struct TreeFile<'a> {
    shown: &'a Path,
    below: Option<(BorrowedFd<'a>, &'a str)>,
}

impl<'a> TreeFile<'a> {
    /// The file at `path`, opened by that path (its last component not
    /// followed if it is a link).
    pub fn at(path: &'a Path) -> Self {
        TreeFile {
            shown: path,
            below: None,
        }
    }

    /// The path of the file, as its reader names it.
    pub fn path(&self) -> &Path {
        self.shown
    }

    /// Opens the file for reading. A tree's file is opened below the
    /// directory the walk holds, no link followed on the way, and never if
    /// it is no longer a regular file (a FIFO or device swapped in).
    pub fn open(&self) -> io::Result<File> {
        match self.below {
            Some((base, rel)) => walk::open_below(base, rel),
            None => fs::OpenOptions::new()
                .read(true)
                .custom_flags(
                    (rustix::fs::OFlags::NOFOLLOW
                        | rustix::fs::OFlags::NONBLOCK
                        | rustix::fs::OFlags::NOCTTY)
                        .bits() as i32,
                )
                .open(self.shown),
        }
    }
}

/// A [`FileHasher`] that streams the file in fixed-size chunks, never
/// holding more than one chunk in memory.
#[derive(Debug, Clone, Copy, Default)]
pub struct StreamingHasher;

impl FileHasher for StreamingHasher {
    fn sha256(&self, file: &TreeFile<'_>, meta: &Metadata) -> Result<[u8; 32], io::Error> {
        let file = file.open()?;
        let opened = file.metadata()?;
        // The file opened must be the one listed: a swap for another file
        // between listing and opening is refused.
        if !opened.is_file() || opened.dev() != meta.dev() || opened.ino() != meta.ino() {
            return Err(changed_error());
        }
        let mut hasher = Sha256::new();
        let mut buf = vec![0u8; read_buffer_len(meta.len())];
        let mut reader = file.take(meta.len().saturating_add(1));
        let mut total = 0u64;
        loop {
            let n = match reader.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            total += n as u64;
            hasher.update(buf.get(..n).unwrap_or_default());
        }
        if total != meta.len() {
            return Err(changed_error());
        }
        Ok(hasher.finalize().into())
    }
}

/// The error a [`FileHasher`] returns when the file changed under it; the
/// digest reports it as [`TreeError::Changed`].
pub(crate) fn changed_error() -> io::Error {
    io::Error::other(ChangedMarker)
}

/// Marks an I/O error raised because the file changed under the hasher.
#[derive(Debug)]
pub(crate) struct ChangedMarker;

impl std::fmt::Display for ChangedMarker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("file changed while it was being hashed")
    }
}

impl std::error::Error for ChangedMarker {}

/// Digests the model tree at `root` (links followed within the model
/// root) in this process's own view, with [`StreamingHasher`].
pub fn digest_tree(root: &Path, limits: &TreeLimits) -> Result<TreeDigest, TreeError> {
    digest_tree_with(root, limits, &StreamingHasher)
}

/// Digests the model tree at `root` (links followed within the model
/// root) in this process's own view, hashing file contents through `hasher`.
pub fn digest_tree_with(
    root: &Path,
    limits: &TreeLimits,
    hasher: &dyn FileHasher,
) -> Result<TreeDigest, TreeError> {
    let view = View::own().map_err(|source| TreeError::Io {
        path: root.to_path_buf(),
        source,
    })?;
    digest_tree_in(&view, root, Links::Follow, limits, hasher)
}

/// Digests the tree at `path`, resolved in `view` and read as its reader
/// may, treating links as `links` says.
pub fn digest_tree_in(
    view: &View,
    path: &Path,
    links: Links,
    limits: &TreeLimits,
    hasher: &dyn FileHasher,
) -> Result<TreeDigest, TreeError> {
    walk::digest_in(view, path, links, limits, hasher)
}

/// Whether `path` leads to a directory in `view`: `false` when nothing or
/// a non-directory is there; an error when the view's reader may not
/// search a directory on the way.
pub fn is_dir_in(view: &View, path: &Path) -> Result<bool, TreeError> {
    walk::is_dir_in(view, path)
}

/// Checks that a name or target is UTF-8 text without control characters.
pub(crate) fn text<'a>(path: &Path, s: Option<&'a str>) -> Result<&'a str, TreeError> {
    let s = s.ok_or_else(|| TreeError::NonUtf8 {
        path: path.to_path_buf(),
    })?;
    if s.chars().any(char::is_control) {
        return Err(TreeError::Ambiguous {
            path: path.to_path_buf(),
            reason: "path or symlink target contains a control character",
        });
    }
    Ok(s)
}

pub(crate) fn type_name(ft: &fs::FileType) -> &'static str {
    if ft.is_fifo() {
        "fifo"
    } else if ft.is_socket() {
        "socket"
    } else if ft.is_block_device() {
        "block device"
    } else if ft.is_char_device() {
        "char device"
    } else {
        "unknown"
    }
}

#[cfg(test)]
mod tests;
