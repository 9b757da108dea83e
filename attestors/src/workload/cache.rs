//! Content digests cached by file identity, charged to a per-uid budget.
//!
//! A file's identity is (device, inode, size, mtime, ctime), both times to
//! the nanosecond: rewriting a file changes its mtime and ctime (ctime
//! cannot be set from user space), so a changed file never hits a stale
//! entry. A file is hashed through the descriptor that was opened and
//! checked against the identity before and after reading; a file that
//! changed while it was read is refused rather than cached.
//!
//! File times have a granularity (a clock tick on kernels without
//! fine-grained timestamps), so a file rewritten within the same tick as it
//! was hashed could keep its identity. As git does for its index, a digest
//! is therefore only cached once the file's ctime is older than
//! [`RACY_WINDOW`]: a file changed moments ago is hashed at every
//! measurement until it settles.

use std::collections::HashMap;
use std::fs::{File, Metadata};
use std::io::{self, Read, Seek, SeekFrom};
use std::os::unix::fs::MetadataExt;
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use sha2::{Digest, Sha256};

use super::budget::HashBudget;
use crate::tree::{FileHasher, TreeFile, changed_error};

/// (device, inode, size, mtime s, mtime ns, ctime s, ctime ns).
pub(crate) type FileKey = (u64, u64, u64, i64, i64, i64, i64);

/// Entries kept before arbitrary ones are evicted: enough for a large
/// Python environment (tens of thousands of files) plus the models of a
/// busy node, at about 100 bytes an entry.
pub(crate) const CACHE_CAPACITY: usize = 100_000;

/// Reads of one file before it is reported as changed.
const READ_ATTEMPTS: usize = 3;

/// Files whose ctime is younger than this are hashed but not cached.
pub const RACY_WINDOW: Duration = Duration::from_secs(2);

/// The key of a file's current content.
pub(crate) fn file_key(meta: &Metadata) -> FileKey {
    (
        meta.dev(),
        meta.ino(),
        meta.len(),
        meta.mtime(),
        meta.mtime_nsec(),
        meta.ctime(),
        meta.ctime_nsec(),
    )
}

/// SHA-256 digests of file contents by identity.
#[derive(Debug)]
pub struct FileCache {
    entries: Mutex<HashMap<FileKey, [u8; 32]>>,
    racy_window: Duration,
}

impl Default for FileCache {
    fn default() -> Self {
        Self::with_racy_window(RACY_WINDOW)
    }
}

impl FileCache {
    /// A cache that trusts file identities older than `racy_window`
    /// ([`RACY_WINDOW`] by default; tests and benchmarks pass zero).
    pub fn with_racy_window(racy_window: Duration) -> Self {
        Self {
            entries: Mutex::new(HashMap::new()),
            racy_window,
        }
    }

    /// How many digests are cached.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// Whether nothing is cached.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The cached digest of the content `meta` identifies, if any.
    pub(crate) fn get(&self, meta: &Metadata) -> Option<[u8; 32]> {
        self.lock().get(&file_key(meta)).copied()
    }

    /// Hashes the open `file`, whose metadata was `meta` when it was chosen,
    /// from the cache when it is known, else reading it after charging its
    /// size to `uid`'s budget.
    ///
    /// A digest counts only if the file's identity was the same before and
    /// after the whole read. Metadata can move without the content moving
    /// (a hard link made or removed changes the ctime: build tools do that
    /// to executables), so a read that saw the identity change is retried
    /// a few times from the start with the new identity, as long as the size
    /// is the one listed; then the file is reported as changed.
    pub(crate) fn digest_open(
        &self,
        file: &mut File,
        meta: &Metadata,
        uid: u32,
        budget: &HashBudget,
    ) -> io::Result<[u8; 32]> {
        let mut meta = meta.clone();
        for _ in 0..READ_ATTEMPTS {
            if let Some(digest) = self.digest_once(file, &meta, uid, budget)? {
                return Ok(digest);
            }
            file.seek(SeekFrom::Start(0))?;
            let now = file.metadata()?;
            if now.len() != meta.len() {
                break;
            }
            meta = now;
        }
        Err(changed_error())
    }

    /// One read; `None` when the identity moved during it.
    fn digest_once(
        &self,
        file: &mut File,
        meta: &Metadata,
        uid: u32,
        budget: &HashBudget,
    ) -> io::Result<Option<[u8; 32]>> {
        let key = file_key(meta);
        if let Some(hit) = self.lock().get(&key) {
            return Ok(Some(*hit));
        }
        budget.charge(uid, meta.len()).map_err(io::Error::other)?;
        let mut hasher = Sha256::new();
        let mut buf = vec![0u8; crate::tree::read_buffer_len(meta.len())];
        let mut total = 0u64;
        let mut reader = file.take(meta.len().saturating_add(1));
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
        let file = reader.into_inner();
        if total != meta.len() || file_key(&file.metadata()?) != key {
            return Ok(None);
        }
        let digest: [u8; 32] = hasher.finalize().into();
        if !self.settled(meta) {
            return Ok(Some(digest));
        }
        let mut entries = self.lock();
        if entries.len() >= CACHE_CAPACITY
            && let Some(victim) = entries.keys().next().copied()
        {
            entries.remove(&victim);
        }
        entries.insert(key, digest);
        Ok(Some(digest))
    }

    /// Whether the file's last change is older than the racy window.
    fn settled(&self, meta: &Metadata) -> bool {
        if self.racy_window.is_zero() {
            return true;
        }
        let changed = u64::try_from(meta.ctime())
            .ok()
            .map(|secs| UNIX_EPOCH + Duration::new(secs, 0));
        let now = SystemTime::now();
        changed.is_some_and(|c| {
            now.duration_since(c)
                .is_ok_and(|age| age > self.racy_window)
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<FileKey, [u8; 32]>> {
        // The map holds plain values: a panic elsewhere cannot leave it torn.
        self.entries.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// A [`FileHasher`] for tree digests that reads through a [`FileCache`]
/// and charges misses to one uid's budget.
#[derive(Debug)]
pub(crate) struct CachingHasher<'a> {
    pub(crate) cache: &'a FileCache,
    pub(crate) budget: &'a HashBudget,
    pub(crate) uid: u32,
}

impl FileHasher for CachingHasher<'_> {
    fn sha256(&self, file: &TreeFile<'_>, meta: &Metadata) -> io::Result<[u8; 32]> {
        // A digest cached under the identity the listing just saw needs no
        // open: opening would only fstat the same inode again, and nothing
        // is read. (An entry is cached only after a whole read under one
        // identity, outside the racy window; any change since moves ctime.)
        if let Some(hit) = self.cache.get(meta) {
            return Ok(hit);
        }
        let mut file = file.open()?;
        let opened = file.metadata()?;
        // The file opened must be the one listed (no swap for a symlink or
        // another file in between) and still of the size the digest line
        // records; the digest is taken under the identity it has now.
        if !opened.is_file()
            || opened.dev() != meta.dev()
            || opened.ino() != meta.ino()
            || opened.len() != meta.len()
        {
            return Err(changed_error());
        }
        self.cache
            .digest_open(&mut file, &opened, self.uid, self.budget)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::tree::{TreeError, TreeLimits, digest_tree, digest_tree_with};

    /// A hasher charging uid 1.
    fn uid1<'a>(cache: &'a FileCache, budget: &'a HashBudget) -> CachingHasher<'a> {
        CachingHasher {
            cache,
            budget,
            uid: 1,
        }
    }

    #[test]
    fn cached_tree_digest_equals_the_streaming_one_and_costs_no_budget_the_second_time() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("a.bin"), vec![7u8; 3000]).unwrap();
        std::fs::create_dir(dir.path().join("sub")).unwrap();
        std::fs::write(dir.path().join("sub/b.txt"), b"hello").unwrap();
        let cache = FileCache::with_racy_window(Duration::ZERO);
        // Exactly enough for one pass.
        let budget = HashBudget::new(3005, Duration::from_secs(3600));
        let hasher = uid1(&cache, &budget);
        let limits = TreeLimits::default();
        let first = digest_tree_with(dir.path(), &limits, &hasher).unwrap();
        assert_eq!(first, digest_tree(dir.path(), &limits).unwrap());
        assert_eq!(cache.len(), 2);
        // Cached: no budget left, still digests.
        let second = digest_tree_with(dir.path(), &limits, &hasher).unwrap();
        assert_eq!(second.digest, first.digest);
    }

    #[test]
    fn a_file_changed_moments_ago_is_not_cached() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("fresh.bin"), b"new").unwrap();
        let cache = FileCache::default();
        let budget = HashBudget::unlimited();
        let hasher = uid1(&cache, &budget);
        digest_tree_with(dir.path(), &TreeLimits::default(), &hasher).unwrap();
        assert!(
            cache.is_empty(),
            "a file younger than the racy window is not trusted"
        );
    }

    #[test]
    fn a_changed_file_is_hashed_again() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("weights.bin");
        std::fs::write(&file, b"aaaa").unwrap();
        // Even with nothing held back as racy, a rewrite changes the identity.
        let cache = FileCache::with_racy_window(Duration::ZERO);
        let budget = HashBudget::unlimited();
        let hasher = uid1(&cache, &budget);
        let limits = TreeLimits::default();
        let before = digest_tree_with(dir.path(), &limits, &hasher).unwrap();
        std::fs::write(&file, b"aaaab").unwrap();
        let after = digest_tree_with(dir.path(), &limits, &hasher).unwrap();
        assert_ne!(before.digest, after.digest);
        assert_eq!(after, digest_tree(dir.path(), &limits).unwrap());
    }

    #[test]
    fn a_metadata_only_change_between_listing_and_reading_is_not_a_content_change() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("agent-bin");
        std::fs::write(&file, b"binary").unwrap();
        let listed = std::fs::symlink_metadata(&file).unwrap();
        // A build tool hard-links the file: its ctime moves, its content not.
        std::fs::hard_link(&file, dir.path().join("uplifted")).unwrap();
        let cache = FileCache::with_racy_window(Duration::ZERO);
        let budget = HashBudget::unlimited();
        let hasher = uid1(&cache, &budget);
        let digest = hasher.sha256(&TreeFile::at(&file), &listed).unwrap();
        assert_eq!(digest, <[u8; 32]>::from(Sha256::digest(b"binary")));
        // A real rewrite to another size between listing and reading is a
        // change (for a file not cached under the listed identity).
        let cold = FileCache::with_racy_window(Duration::ZERO);
        let cold = uid1(&cold, &budget);
        let listed = std::fs::symlink_metadata(&file).unwrap();
        std::fs::write(&file, b"binary v2").unwrap();
        assert!(cold.sha256(&TreeFile::at(&file), &listed).is_err());
    }

    #[test]
    fn a_file_cached_under_the_listed_identity_is_not_opened_again() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("lib.py");
        std::fs::write(&file, b"print('hi')").unwrap();
        let cache = FileCache::with_racy_window(Duration::ZERO);
        let budget = HashBudget::unlimited();
        let hasher = uid1(&cache, &budget);
        let listed = std::fs::symlink_metadata(&file).unwrap();
        let digest = hasher.sha256(&TreeFile::at(&file), &listed).unwrap();
        // Gone after the listing: the digest is that of the content the
        // listing saw (a measurement is of one moment), and it needed no
        // open, which would now fail.
        std::fs::remove_file(&file).unwrap();
        assert_eq!(
            hasher.sha256(&TreeFile::at(&file), &listed).unwrap(),
            digest
        );
        // A listing made now sees nothing to hash; another identity misses.
        std::fs::write(&file, b"print('bye')").unwrap();
        let relisted = std::fs::symlink_metadata(&file).unwrap();
        assert_ne!(
            hasher.sha256(&TreeFile::at(&file), &relisted).unwrap(),
            digest
        );
    }

    #[test]
    fn an_over_budget_tree_is_refused_with_the_budget_error() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("big.bin"), vec![0u8; 4096]).unwrap();
        let cache = FileCache::default();
        let budget = HashBudget::new(1024, Duration::from_secs(60));
        let hasher = CachingHasher {
            cache: &cache,
            budget: &budget,
            uid: 1000,
        };
        let err = digest_tree_with(dir.path(), &TreeLimits::default(), &hasher).unwrap_err();
        let TreeError::Io { source, .. } = err else {
            panic!("expected an I/O error carrying the budget refusal, got {err:?}")
        };
        let refusal = source
            .get_ref()
            .and_then(|e| e.downcast_ref::<super::super::budget::BudgetExceeded>())
            .unwrap();
        assert_eq!((refusal.uid, refusal.requested), (1000, 4096));
        assert!(cache.is_empty());
    }
}
