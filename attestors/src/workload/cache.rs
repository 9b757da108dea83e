//! Content digests cached by file identity, charged to a per-uid budget,
//! the cache shared fairly between uids.
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
//!
//! # Sharing the cache between uids
//!
//! The cache holds at most `capacity` entries ([`DEFAULT_CACHE_ENTRIES`];
//! about 200 bytes each with their bookkeeping, so 20 MB by default). Each
//! entry remembers the uid that paid for it (whose budget the read was
//! charged to). When the cache is full, a new entry of uid U displaces:
//!
//! - U's own least recently used entry, if U already holds at least its
//!   fair share: the entries cached divided by the number of uids holding
//!   entries, U counted;
//! - otherwise the least recently used entry of the uid holding the most
//!   entries.
//!
//! So a uid loses entries to others only while it holds at least as many
//! as every other uid, hence at least the mean: a uid holding less than
//! its fair share keeps every entry whatever other uids make the agent
//! hash. A uid flooding the cache with a directory of 300,000 files only
//! displaces its own entries once it holds its share. "Least recently used"
//! is approximated with a second chance (CLOCK): every hit marks an entry;
//! a marked entry at the head of its payer's queue is unmarked and moved
//! to the back instead of being displaced.
//!
//! An entry can be hit by uids other than its payer (a file both can read:
//! helper checks make sure a uid is only measured on files it may read).
//! When the payer's share is displaced, an entry another uid hit since it
//! was last considered is handed to that uid (it then counts against that
//! uid's share) instead of being dropped: a uid cannot evict the digests of
//! another's model by hashing that model first and then flooding its own
//! share.

use std::collections::{HashMap, VecDeque};
use std::fs::{File, Metadata};
use std::io::{self, Read, Seek, SeekFrom};
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use sha2::{Digest, Sha256};

use super::budget::HashBudget;
use super::cancel::{Cancel, cancelled_error};
use crate::tree::{FileHasher, TreeFile, changed_error};

/// (device, inode, size, mtime s, mtime ns, ctime s, ctime ns).
pub(crate) type FileKey = (u64, u64, u64, i64, i64, i64, i64);

/// Default capacity of a [`FileCache`], in entries: enough for a large
/// Python environment (tens of thousands of files) plus the models of a
/// busy node, at about 200 bytes an entry (20 MB).
pub const DEFAULT_CACHE_ENTRIES: usize = 100_000;

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

/// SHA-256 digests of file contents by identity, shared fairly per uid.
#[derive(Debug)]
pub struct FileCache {
    entries: Mutex<Entries>,
    capacity: usize,
    racy_window: Duration,
    files_hashed: AtomicU64,
    bytes_hashed: AtomicU64,
}

impl Default for FileCache {
    fn default() -> Self {
        Self::with_racy_window(RACY_WINDOW)
    }
}

impl FileCache {
    /// A cache of [`DEFAULT_CACHE_ENTRIES`] that trusts file identities
    /// older than `racy_window` ([`RACY_WINDOW`] by default; tests and
    /// benchmarks pass zero).
    pub fn with_racy_window(racy_window: Duration) -> Self {
        Self {
            entries: Mutex::new(Entries::default()),
            capacity: DEFAULT_CACHE_ENTRIES,
            racy_window,
            files_hashed: AtomicU64::new(0),
            bytes_hashed: AtomicU64::new(0),
        }
    }

    /// Holds at most `entries` digests (zero: caches nothing).
    pub fn with_capacity(mut self, entries: usize) -> Self {
        self.capacity = entries;
        self
    }

    /// The most digests it holds.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// How many digests are cached.
    pub fn len(&self) -> usize {
        self.lock().map.len()
    }

    /// Whether nothing is cached.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// How many cached digests `uid` paid for.
    pub fn entries_of(&self, uid: u32) -> usize {
        self.lock().owners.get(&uid).map_or(0, VecDeque::len)
    }

    /// Files read and hashed in full so far (cache misses).
    pub fn files_hashed(&self) -> u64 {
        self.files_hashed.load(Ordering::Relaxed)
    }

    /// Bytes read to hash so far, partial reads included.
    pub fn bytes_hashed(&self) -> u64 {
        self.bytes_hashed.load(Ordering::Relaxed)
    }

    /// The cached digest of the content `meta` identifies, if any, marked
    /// as used by `uid`.
    pub(crate) fn get(&self, meta: &Metadata, uid: u32) -> Option<[u8; 32]> {
        self.lock().hit(&file_key(meta), uid)
    }

    /// Hashes the open `file`, whose metadata was `meta` when it was chosen,
    /// from the cache when it is known, else reading it after charging its
    /// size and one entry to `uid`'s budget. Stops (refunding what it did
    /// not read) once `cancel` is set.
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
        cancel: &Cancel,
    ) -> io::Result<[u8; 32]> {
        let mut meta = meta.clone();
        for _ in 0..READ_ATTEMPTS {
            if let Some(digest) = self.digest_once(file, &meta, uid, budget, cancel)? {
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
        cancel: &Cancel,
    ) -> io::Result<Option<[u8; 32]>> {
        let key = file_key(meta);
        if let Some(hit) = self.lock().hit(&key, uid) {
            return Ok(Some(hit));
        }
        cancel.check()?;
        budget
            .charge_entries(uid, 1, meta.len())
            .map_err(io::Error::other)?;
        let mut hasher = Sha256::new();
        let mut buf = vec![0u8; crate::tree::read_buffer_len(meta.len())];
        let mut total = 0u64;
        let mut reader = file.take(meta.len().saturating_add(1));
        loop {
            if cancel.is_cancelled() {
                budget.refund(uid, meta.len().saturating_sub(total));
                return Err(cancelled_error());
            }
            let n = match reader.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            total += n as u64;
            self.bytes_hashed.fetch_add(n as u64, Ordering::Relaxed);
            hasher.update(buf.get(..n).unwrap_or_default());
        }
        let file = reader.into_inner();
        if total != meta.len() || file_key(&file.metadata()?) != key {
            return Ok(None);
        }
        self.files_hashed.fetch_add(1, Ordering::Relaxed);
        let digest: [u8; 32] = hasher.finalize().into();
        if self.settled(meta) {
            self.lock().insert(key, digest, uid, self.capacity);
        }
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

    fn lock(&self) -> std::sync::MutexGuard<'_, Entries> {
        // Every change to the entries and queues is made without a panic
        // point in between: a panic elsewhere cannot leave them torn.
        self.entries.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The cached digests and, per paying uid, its entries in displacement
/// order. Every entry is in exactly one queue: its payer's.
#[derive(Debug, Default)]
struct Entries {
    map: HashMap<FileKey, Entry>,
    owners: HashMap<u32, VecDeque<FileKey>>,
}

#[derive(Debug)]
struct Entry {
    digest: [u8; 32],
    /// The uid whose budget paid for the read (whose share it counts in).
    payer: u32,
    /// Hit since it was last considered for displacement.
    referenced: bool,
    /// Another uid that hit it since it was last considered.
    also_used_by: Option<u32>,
}

impl Entries {
    fn hit(&mut self, key: &FileKey, uid: u32) -> Option<[u8; 32]> {
        let entry = self.map.get_mut(key)?;
        entry.referenced = true;
        if entry.payer != uid {
            entry.also_used_by = Some(uid);
        }
        Some(entry.digest)
    }

    fn insert(&mut self, key: FileKey, digest: [u8; 32], uid: u32, capacity: usize) {
        // Another walk may have cached the same file meanwhile: one entry.
        if capacity == 0 || self.map.contains_key(&key) {
            return;
        }
        while self.map.len() >= capacity {
            if !self.displace_one(uid) {
                return;
            }
        }
        self.map.insert(
            key,
            Entry {
                digest,
                payer: uid,
                referenced: false,
                also_used_by: None,
            },
        );
        self.owners.entry(uid).or_default().push_back(key);
    }

    /// Whose share gives way to a new entry of `inserting`: its own when
    /// it holds at least the mean, else the largest holder's.
    fn payer_to_displace(&self, inserting: u32) -> Option<u32> {
        let mine = self.owners.get(&inserting).map_or(0, VecDeque::len);
        let holders = self.owners.len() + usize::from(mine == 0);
        if mine > 0 && mine.saturating_mul(holders) >= self.map.len() {
            return Some(inserting);
        }
        self.owners
            .iter()
            .max_by_key(|(uid, queue)| (queue.len(), **uid == inserting))
            .map(|(uid, _)| *uid)
    }

    /// Drops one entry, or hands one to another uid that used it; `false`
    /// when nothing could be displaced (the cache is empty).
    fn displace_one(&mut self, inserting: u32) -> bool {
        let Some(payer) = self.payer_to_displace(inserting) else {
            return false;
        };
        let Some(queue) = self.owners.get_mut(&payer) else {
            return false;
        };
        let mut handed = None;
        // Each pass unmarks what it skips, so this ends within two turns
        // of the queue.
        while let Some(key) = queue.pop_front() {
            let Some(entry) = self.map.get_mut(&key) else {
                continue;
            };
            if entry.referenced {
                entry.referenced = false;
                queue.push_back(key);
                continue;
            }
            match entry.also_used_by.take() {
                Some(user) if user != payer => {
                    entry.payer = user;
                    handed = Some((key, user));
                }
                _ => {
                    self.map.remove(&key);
                }
            }
            break;
        }
        if queue.is_empty() {
            self.owners.remove(&payer);
        }
        if let Some((key, user)) = handed {
            self.owners.entry(user).or_default().push_back(key);
        }
        true
    }
}

/// A [`FileHasher`] for tree digests that reads through a [`FileCache`],
/// charges misses, directories and symlinks to one uid's budget, and stops
/// when its walk is cancelled.
#[derive(Debug)]
pub(crate) struct CachingHasher<'a> {
    pub(crate) cache: &'a FileCache,
    pub(crate) budget: &'a HashBudget,
    pub(crate) uid: u32,
    pub(crate) cancel: &'a Cancel,
}

impl FileHasher for CachingHasher<'_> {
    fn sha256(&self, file: &TreeFile<'_>, meta: &Metadata) -> io::Result<[u8; 32]> {
        self.cancel.check()?;
        // A digest cached under the identity the listing just saw needs no
        // open: opening would only fstat the same inode again, and nothing
        // is read. (An entry is cached only after a whole read under one
        // identity, outside the racy window; any change since moves ctime.)
        if let Some(hit) = self.cache.get(meta, self.uid) {
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
            .digest_open(&mut file, &opened, self.uid, self.budget, self.cancel)
    }

    fn listed(&self, _path: &Path, meta: &Metadata) -> io::Result<()> {
        self.cancel.check()?;
        // Regular files are charged when they miss the cache; directories
        // and symlinks are never cached, so every walk pays for them.
        if !meta.is_file() {
            self.budget
                .charge_entries(self.uid, 1, 0)
                .map_err(io::Error::other)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::tree::{TreeError, TreeLimits, digest_tree, digest_tree_with};

    /// Never cancelled.
    static NEVER: std::sync::LazyLock<Cancel> = std::sync::LazyLock::new(Cancel::default);

    /// A hasher charging uid 1.
    fn uid1<'a>(cache: &'a FileCache, budget: &'a HashBudget) -> CachingHasher<'a> {
        hasher(cache, budget, 1)
    }

    fn hasher<'a>(cache: &'a FileCache, budget: &'a HashBudget, uid: u32) -> CachingHasher<'a> {
        CachingHasher {
            cache,
            budget,
            uid,
            cancel: &NEVER,
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
        let budget = HashBudget::new(3005, Duration::from_secs(3600)).with_entry_cost(0);
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
        let budget = HashBudget::new(1024, Duration::from_secs(60)).with_entry_cost(0);
        let hasher = hasher(&cache, &budget, 1000);
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

    /// `n` files of `size` bytes, named `f0000`..., under `dir`.
    fn files(dir: &Path, n: usize, size: usize) {
        std::fs::create_dir_all(dir).unwrap();
        for i in 0..n {
            std::fs::write(dir.join(format!("f{i:04}")), vec![b'x'; size]).unwrap();
        }
    }

    /// A budget nothing can be charged to: any miss is refused.
    fn broke() -> HashBudget {
        HashBudget::new(0, Duration::from_secs(3600))
    }

    #[test]
    fn a_uid_below_its_fair_share_keeps_every_entry_through_a_flood() {
        let dir = tempfile::tempdir().unwrap();
        let (model, flood) = (dir.path().join("model"), dir.path().join("flood"));
        files(&model, 5, 1000);
        files(&flood, 300, 0);
        let cache = FileCache::with_racy_window(Duration::ZERO).with_capacity(40);
        let budget = HashBudget::unlimited();
        let limits = TreeLimits::default();
        let victim = digest_tree_with(&model, &limits, &hasher(&cache, &budget, 0)).unwrap();
        // Another uid makes the agent hash 300 empty files, twice.
        for _ in 0..2 {
            digest_tree_with(&flood, &limits, &hasher(&cache, &budget, 65534)).unwrap();
        }
        assert_eq!(cache.len(), 40, "the cache stays within its capacity");
        assert_eq!(cache.entries_of(0), 5);
        assert_eq!(cache.entries_of(65534), 35);
        // The victim's digests are all still cached: a walk that may not
        // hash anything succeeds.
        let hashed = cache.files_hashed();
        let again = digest_tree_with(&model, &limits, &hasher(&cache, &broke(), 0)).unwrap();
        assert_eq!(again, victim);
        assert_eq!(cache.files_hashed(), hashed);
    }

    #[test]
    fn the_largest_holder_gives_way_until_the_shares_are_even() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (dir.path().join("a"), dir.path().join("b"));
        files(&a, 10, 1);
        files(&b, 20, 2);
        let cache = FileCache::with_racy_window(Duration::ZERO).with_capacity(10);
        let budget = HashBudget::unlimited();
        let limits = TreeLimits::default();
        digest_tree_with(&a, &limits, &hasher(&cache, &budget, 1)).unwrap();
        assert_eq!(cache.entries_of(1), 10);
        // uid 2 is below its share (half of a full cache): uid 1 gives way
        // until both hold five; then uid 2 displaces its own.
        digest_tree_with(&b, &limits, &hasher(&cache, &budget, 2)).unwrap();
        assert_eq!((cache.entries_of(1), cache.entries_of(2)), (5, 5));
        // The five uid 1 kept are the ones it used last... all untouched
        // here, so the first five listed gave way first (FIFO among equals).
        let hashed = cache.files_hashed();
        for i in 5..10 {
            let meta = std::fs::symlink_metadata(a.join(format!("f{i:04}"))).unwrap();
            assert!(cache.get(&meta, 1).is_some(), "f{i:04}");
        }
        assert_eq!(cache.files_hashed(), hashed);
    }

    #[test]
    fn a_recently_used_entry_gets_a_second_chance() {
        let dir = tempfile::tempdir().unwrap();
        let a = dir.path().join("a");
        files(&a, 4, 1);
        let cache = FileCache::with_racy_window(Duration::ZERO).with_capacity(4);
        let budget = HashBudget::unlimited();
        let h = hasher(&cache, &budget, 1);
        digest_tree_with(&a, &TreeLimits::default(), &h).unwrap();
        // f0000 is used again; a new file displaces f0001, the oldest unused.
        let first = std::fs::symlink_metadata(a.join("f0000")).unwrap();
        assert!(cache.get(&first, 1).is_some());
        std::fs::write(a.join("f0004"), b"new").unwrap();
        let new = std::fs::symlink_metadata(a.join("f0004")).unwrap();
        h.sha256(&TreeFile::at(&a.join("f0004")), &new).unwrap();
        assert!(cache.get(&first, 1).is_some());
        let second = std::fs::symlink_metadata(a.join("f0001")).unwrap();
        assert!(cache.get(&second, 1).is_none());
        assert_eq!(cache.len(), 4);
    }

    #[test]
    fn hashing_a_victims_files_first_does_not_let_a_flood_evict_them() {
        let dir = tempfile::tempdir().unwrap();
        let (model, flood) = (dir.path().join("model"), dir.path().join("flood"));
        files(&model, 5, 1000);
        files(&flood, 100, 0);
        let cache = FileCache::with_racy_window(Duration::ZERO).with_capacity(20);
        let budget = HashBudget::unlimited();
        let limits = TreeLimits::default();
        // The attacker pays for the victim's (readable) model first; the
        // victim then uses those entries.
        digest_tree_with(&model, &limits, &hasher(&cache, &budget, 65534)).unwrap();
        digest_tree_with(&model, &limits, &hasher(&cache, &broke(), 0)).unwrap();
        assert_eq!(cache.entries_of(0), 0);
        digest_tree_with(&flood, &limits, &hasher(&cache, &budget, 65534)).unwrap();
        // The entries the victim used were handed to it, not dropped.
        assert_eq!(cache.entries_of(0), 5);
        assert_eq!(cache.len(), 20);
        digest_tree_with(&model, &limits, &hasher(&cache, &broke(), 0)).unwrap();
    }

    #[test]
    fn empty_files_directories_and_symlinks_cost_the_entry_cost() {
        let dir = tempfile::tempdir().unwrap();
        files(dir.path(), 100, 0);
        for sub in ["d1", "d2", "d1/d3"] {
            std::fs::create_dir(dir.path().join(sub)).unwrap();
        }
        std::os::unix::fs::symlink("f0000", dir.path().join("link")).unwrap();
        let cache = FileCache::with_racy_window(Duration::ZERO);
        // A window of ~30 years: no measurable refill during the test.
        let budget = HashBudget::new(20_000, Duration::from_secs(1 << 30)).with_entry_cost(100);
        let h = uid1(&cache, &budget);
        digest_tree_with(dir.path(), &TreeLimits::default(), &h).unwrap();
        // 100 files, 3 directories, 1 symlink.
        assert_eq!(budget.remaining(1), 20_000 - 104 * 100);
        // Cached files are free again; directories and symlinks are not.
        digest_tree_with(dir.path(), &TreeLimits::default(), &h).unwrap();
        assert_eq!(budget.remaining(1), 20_000 - 108 * 100);
        // With no entry cost, 100 empty files would have cost nothing.
        let free = HashBudget::new(1, Duration::from_secs(1 << 30)).with_entry_cost(0);
        let cold = FileCache::with_racy_window(Duration::ZERO);
        std::fs::remove_file(dir.path().join("link")).unwrap();
        for sub in ["d1/d3", "d1", "d2"] {
            std::fs::remove_dir(dir.path().join(sub)).unwrap();
        }
        digest_tree_with(dir.path(), &TreeLimits::default(), &uid1(&cold, &free)).unwrap();
        assert_eq!(free.remaining(1), 1);
    }

    /// Delegates to a [`CachingHasher`] and cancels its walk after `after`
    /// files, as a client going away mid-tree would.
    struct CancelAfter<'a> {
        inner: CachingHasher<'a>,
        after: usize,
        seen: std::cell::Cell<usize>,
    }

    impl FileHasher for CancelAfter<'_> {
        fn sha256(&self, file: &TreeFile<'_>, meta: &Metadata) -> io::Result<[u8; 32]> {
            let digest = self.inner.sha256(file, meta)?;
            self.seen.set(self.seen.get() + 1);
            if self.seen.get() == self.after {
                self.inner.cancel.cancel();
            }
            Ok(digest)
        }

        fn listed(&self, path: &Path, meta: &Metadata) -> io::Result<()> {
            self.inner.listed(path, meta)
        }
    }

    #[test]
    fn a_cancelled_walk_stops_at_the_next_file_and_is_charged_only_what_it_read() {
        let dir = tempfile::tempdir().unwrap();
        files(dir.path(), 10, 100);
        let cache = FileCache::with_racy_window(Duration::ZERO);
        let budget = HashBudget::new(1 << 20, Duration::from_secs(1 << 30)).with_entry_cost(10);
        let cancel = Cancel::default();
        let walk = CancelAfter {
            inner: CachingHasher {
                cache: &cache,
                budget: &budget,
                uid: 1,
                cancel: &cancel,
            },
            after: 3,
            seen: std::cell::Cell::new(0),
        };
        let err = digest_tree_with(dir.path(), &TreeLimits::default(), &walk).unwrap_err();
        let TreeError::Io { source, .. } = &err else {
            panic!("expected the cancellation, got {err:?}")
        };
        assert!(super::super::cancel::is_cancelled(source), "{err}");
        assert_eq!((cache.files_hashed(), cache.len()), (3, 3));
        assert_eq!(budget.remaining(1), (1 << 20) - 3 * 110);
        // Cancelled before the walk: nothing listed is charged or read.
        let before = budget.remaining(1);
        let err = digest_tree_with(dir.path(), &TreeLimits::default(), &walk.inner).unwrap_err();
        assert!(
            matches!(&err, TreeError::Io { source, .. } if super::super::cancel::is_cancelled(source))
        );
        assert_eq!(budget.remaining(1), before);
        assert_eq!(cache.files_hashed(), 3);
    }

    #[test]
    fn a_cancelled_read_stops_within_a_chunk_and_refunds_the_rest() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("huge.bin");
        // Sparse: 64 GiB of zeros that take no disk, minutes to hash.
        let size: u64 = 64 << 30;
        File::create(&path).unwrap().set_len(size).unwrap();
        let cache = FileCache::with_racy_window(Duration::ZERO);
        let capacity = 1u64 << 40;
        // A window so long that nothing measurable refills during the test.
        let budget = HashBudget::new(capacity, Duration::from_secs(1 << 60)).with_entry_cost(10);
        let cancel = Cancel::default();
        let meta = std::fs::symlink_metadata(&path).unwrap();
        let result = std::thread::scope(|scope| {
            let walk = scope.spawn(|| {
                CachingHasher {
                    cache: &cache,
                    budget: &budget,
                    uid: 1,
                    cancel: &cancel,
                }
                .sha256(&TreeFile::at(&path), &meta)
            });
            // Reading has started.
            while cache.bytes_hashed() == 0 && !walk.is_finished() {
                std::thread::yield_now();
            }
            cancel.cancel();
            walk.join().unwrap()
        });
        let err = result.unwrap_err();
        assert!(super::super::cancel::is_cancelled(&err), "{err}");
        let read = cache.bytes_hashed();
        assert!(read > 0 && read < size, "{read}");
        assert!(cache.is_empty());
        // Charged the entry and the bytes read, not the 64 GiB.
        assert_eq!(budget.remaining(1), capacity - 10 - read);
    }
}
