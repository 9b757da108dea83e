//! The canonical tree digest of a model or application directory.
//!
//! Walk the directory; sort entries by relative path (bytes, `/` separator);
//! a regular file contributes `<sha256-hex>  <size>  <relative-path>\n`, a
//! symbolic link (never followed) contributes `symlink  <target>  <path>\n`;
//! directories contribute nothing; any other file type is an error. The
//! digest is the SHA-256 of those lines in that order, written `sha256:<hex>`.
//!
//! So that the line format stays injective (two different trees never yield
//! the same lines), paths and symlink targets must be valid UTF-8 without
//! control characters, and a symlink target must not contain two consecutive
//! spaces nor end with a space. Such trees are refused with an error naming
//! the path.
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
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

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
    /// Every file and symlink, sorted by relative path bytes.
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
}

impl TreeEntry {
    /// The entry's line in the digest input, with its trailing newline.
    pub fn line(&self) -> String {
        match &self.kind {
            EntryKind::File { size, sha256 } => {
                format!("{}  {size}  {}\n", hex::encode(sha256), self.path)
            }
            EntryKind::Symlink { target } => format!("symlink  {target}  {}\n", self.path),
        }
    }

    /// The size of a regular file; `None` for a symlink.
    pub fn size(&self) -> Option<u64> {
        match &self.kind {
            EntryKind::File { size, .. } => Some(*size),
            EntryKind::Symlink { .. } => None,
        }
    }

    /// The lowercase hex SHA-256 of a regular file; `None` for a symlink.
    pub fn sha256_hex(&self) -> Option<String> {
        match &self.kind {
            EntryKind::File { sha256, .. } => Some(hex::encode(sha256)),
            EntryKind::Symlink { .. } => None,
        }
    }
}

/// Why a tree could not be digested.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TreeError {
    /// The root is not a directory (symlinks to directories included).
    #[error("{path}: not a directory (symbolic links are not followed)")]
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
}

/// Computes the SHA-256 of one regular file's content.
///
/// The agent implements this with a cache keyed on the file's identity
/// (device, inode, size, mtime, ctime); [`StreamingHasher`] always reads.
pub trait FileHasher {
    /// Hashes the regular file at `path`, whose `symlink_metadata` is `meta`.
    /// Must fail rather than hash something else if the file is no longer
    /// the one `meta` describes.
    fn sha256(&self, path: &Path, meta: &Metadata) -> Result<[u8; 32], io::Error>;

    /// Called for every entry the walk lists (file, directory or symlink),
    /// with its `symlink_metadata`, before anything is hashed; an error
    /// stops the walk. The agent charges and cancels walks here; the
    /// default does nothing.
    fn listed(&self, path: &Path, meta: &Metadata) -> Result<(), io::Error> {
        let _ = (path, meta);
        Ok(())
    }
}

/// A [`FileHasher`] that streams the file in fixed-size chunks, never
/// holding more than one chunk in memory.
#[derive(Debug, Clone, Copy, Default)]
pub struct StreamingHasher;

impl FileHasher for StreamingHasher {
    fn sha256(&self, path: &Path, meta: &Metadata) -> Result<[u8; 32], io::Error> {
        let file = File::open(path)?;
        let opened = file.metadata()?;
        // The file opened must be the one listed: a swap for a symlink or
        // another file between listing and opening is refused.
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
struct ChangedMarker;

impl std::fmt::Display for ChangedMarker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("file changed while it was being hashed")
    }
}

impl std::error::Error for ChangedMarker {}

/// Digests the tree at `root` with [`StreamingHasher`].
pub fn digest_tree(root: &Path, limits: &TreeLimits) -> Result<TreeDigest, TreeError> {
    digest_tree_with(root, limits, &StreamingHasher)
}

/// Digests the tree at `root`, hashing file contents through `hasher`.
pub fn digest_tree_with(
    root: &Path,
    limits: &TreeLimits,
    hasher: &dyn FileHasher,
) -> Result<TreeDigest, TreeError> {
    let listed = list(root, limits, hasher)?;
    let mut files = Vec::with_capacity(listed.len());
    let mut outer = Sha256::new();
    for item in listed {
        let kind = match item.kind {
            Listed::File(meta) => {
                let sha256 = hasher.sha256(&item.abs, &meta).map_err(|source| {
                    if source.get_ref().is_some_and(|e| e.is::<ChangedMarker>()) {
                        TreeError::Changed {
                            path: item.abs.clone(),
                        }
                    } else {
                        TreeError::Io {
                            path: item.abs.clone(),
                            source,
                        }
                    }
                })?;
                EntryKind::File {
                    size: meta.len(),
                    sha256,
                }
            }
            Listed::Symlink(target) => EntryKind::Symlink { target },
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

/// One entry found by the walk, before hashing.
struct Item {
    rel: String,
    abs: PathBuf,
    kind: Listed,
}

enum Listed {
    File(Metadata),
    Symlink(String),
}

/// Walks the tree without following symlinks, checks names and limits, and
/// returns the files and symlinks sorted by relative path bytes.
fn list(root: &Path, limits: &TreeLimits, hasher: &dyn FileHasher) -> Result<Vec<Item>, TreeError> {
    let io_err = |path: &Path| {
        let path = path.to_path_buf();
        move |source| TreeError::Io { path, source }
    };
    let meta = fs::symlink_metadata(root).map_err(io_err(root))?;
    if !meta.is_dir() {
        return Err(TreeError::NotADirectory {
            path: root.to_path_buf(),
        });
    }
    let mut items = Vec::new();
    let mut entries = 0usize;
    let mut total = 0u64;
    // (absolute dir, its relative prefix: "" or "a/b/")
    let mut stack = vec![(root.to_path_buf(), String::new())];
    while let Some((dir, prefix)) = stack.pop() {
        for dirent in fs::read_dir(&dir).map_err(io_err(&dir))? {
            let dirent = dirent.map_err(io_err(&dir))?;
            let abs = dirent.path();
            entries += 1;
            if entries > limits.max_entries {
                return Err(TreeError::TooManyEntries {
                    root: root.to_path_buf(),
                    limit: limits.max_entries,
                });
            }
            let file_name = dirent.file_name();
            let name = text(&abs, file_name.to_str())?;
            let rel = format!("{prefix}{name}");
            // fstatat on the directory, not following symlinks (the same
            // as symlink_metadata without resolving the path again).
            let meta = dirent.metadata().map_err(io_err(&abs))?;
            hasher.listed(&abs, &meta).map_err(io_err(&abs))?;
            let ft = meta.file_type();
            if ft.is_dir() {
                stack.push((abs, format!("{rel}/")));
            } else if ft.is_symlink() {
                let target = fs::read_link(&abs).map_err(io_err(&abs))?;
                let target = text(&abs, target.to_str())?.to_owned();
                if target.contains("  ") || target.ends_with(' ') {
                    return Err(TreeError::Ambiguous {
                        path: abs,
                        reason: "symlink target contains two consecutive spaces or ends with a space",
                    });
                }
                items.push(Item {
                    rel,
                    abs,
                    kind: Listed::Symlink(target),
                });
            } else if ft.is_file() {
                let size = meta.len();
                if size > limits.max_file_size {
                    return Err(TreeError::FileTooLarge {
                        path: abs,
                        size,
                        limit: limits.max_file_size,
                    });
                }
                total = total.saturating_add(size);
                if total > limits.max_total_bytes {
                    return Err(TreeError::TotalTooLarge {
                        root: root.to_path_buf(),
                        limit: limits.max_total_bytes,
                    });
                }
                items.push(Item {
                    rel,
                    abs,
                    kind: Listed::File(meta),
                });
            } else {
                return Err(TreeError::UnsupportedFileType {
                    path: abs,
                    kind: type_name(&ft),
                });
            }
        }
    }
    items.sort_unstable_by(|a, b| a.rel.as_bytes().cmp(b.rel.as_bytes()));
    Ok(items)
}

/// Checks that a name or target is UTF-8 text without control characters.
fn text<'a>(path: &Path, s: Option<&'a str>) -> Result<&'a str, TreeError> {
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

fn type_name(ft: &fs::FileType) -> &'static str {
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
