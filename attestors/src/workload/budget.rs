//! The per-uid hashing budget: a local process cannot make the agent hash
//! without bound.
//!
//! Each uid has a token bucket of bytes: it holds at most `capacity` bytes
//! and refills at `capacity / window`. Every byte the agent actually reads
//! to hash on behalf of a caller (cache misses only: a cached file costs
//! nothing) is taken from the caller's bucket first; a request the bucket
//! cannot cover is refused before any of it is read, so an exhausted uid
//! costs the agent no I/O at all.
//!
//! Bytes are not the only cost: opening, checking and hashing a file, or
//! listing a directory entry, costs the agent about as much as reading a
//! few KiB, whatever the file's size. So every entry the cache does not
//! answer also costs [`HashBudget::entry_cost`] bytes (default
//! [`DEFAULT_ENTRY_COST`], 4 KiB): a regular file on a cache miss costs its
//! size plus the entry cost; a directory or symbolic link costs the entry
//! cost at every walk (nothing caches them). A directory of 300,000 empty
//! files therefore costs its uid 1.2 GB of budget, not nothing. A walk
//! stopped part way (its client went away) is refunded what it did not
//! read ([`HashBudget::refund`]).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Default [`HashBudget`] capacity: 128 GiB per uid.
pub const DEFAULT_BUDGET_BYTES: u64 = 128 << 30;
/// Default [`HashBudget`] window: the bucket refills fully in one hour.
pub const DEFAULT_BUDGET_WINDOW: Duration = Duration::from_secs(3600);
/// Default [`HashBudget::entry_cost`]: each entry the cache does not answer
/// costs as much as 4 KiB of content.
pub const DEFAULT_ENTRY_COST: u64 = 4 << 10;

/// A uid asked for more hashing than its budget has left.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "uid {uid} asked the agent to hash {bytes} bytes, costing {requested} with {entry_cost} per \
     file or directory entry, with {available} left of its budget ({capacity} bytes per \
     {window_secs} s); retry in {retry_after_secs} s"
)]
pub struct BudgetExceeded {
    /// The caller's uid.
    pub uid: u32,
    /// What this request would have cost: `bytes` plus `entries` times
    /// `entry_cost`.
    pub requested: u64,
    /// Bytes of content it needed read.
    pub bytes: u64,
    /// Entries (files, directories, symlinks) it needed handled.
    pub entries: u64,
    /// The cost of one entry, in bytes.
    pub entry_cost: u64,
    /// Bytes left in the bucket.
    pub available: u64,
    /// The bucket's capacity.
    pub capacity: u64,
    /// The refill window in seconds.
    pub window_secs: u64,
    /// When the bucket will hold `requested` bytes again (if ever; a
    /// request larger than the capacity never fits).
    pub retry_after_secs: u64,
}

/// Token buckets of hashable bytes, one per uid.
#[derive(Debug)]
pub struct HashBudget {
    capacity: u64,
    window: Duration,
    entry_cost: u64,
    buckets: Mutex<HashMap<u32, Bucket>>,
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: u64,
    at: Instant,
}

/// Buckets untouched for this many windows are full again and can be
/// forgotten, so the map does not grow with every uid ever seen.
const FORGET_AFTER_WINDOWS: u32 = 2;

impl HashBudget {
    /// A budget of `capacity` bytes per uid, refilled over `window`, with
    /// [`DEFAULT_ENTRY_COST`] per entry. A zero window means the bucket
    /// refills instantly (no budget).
    pub fn new(capacity: u64, window: Duration) -> Self {
        Self {
            capacity,
            window,
            entry_cost: DEFAULT_ENTRY_COST,
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// No limit at all (tests and benchmarks).
    pub fn unlimited() -> Self {
        Self::new(u64::MAX, Duration::ZERO)
    }

    /// Charges `cost` bytes for every entry the cache does not answer
    /// (zero: only content bytes count).
    pub fn with_entry_cost(mut self, cost: u64) -> Self {
        self.entry_cost = cost;
        self
    }

    /// The per-uid capacity in bytes.
    pub fn capacity(&self) -> u64 {
        self.capacity
    }

    /// What one entry costs, in bytes.
    pub fn entry_cost(&self) -> u64 {
        self.entry_cost
    }

    /// Takes `bytes` from `uid`'s bucket, or refuses without taking any.
    pub fn charge(&self, uid: u32, bytes: u64) -> Result<(), BudgetExceeded> {
        self.charge_at(uid, 0, bytes, Instant::now())
    }

    /// Takes `bytes` of content plus `entries` times the entry cost from
    /// `uid`'s bucket, or refuses without taking any.
    pub fn charge_entries(&self, uid: u32, entries: u64, bytes: u64) -> Result<(), BudgetExceeded> {
        self.charge_at(uid, entries, bytes, Instant::now())
    }

    /// Gives back `bytes` charged but never read (a walk stopped part way),
    /// never above the capacity.
    pub fn refund(&self, uid: u32, bytes: u64) {
        if self.window.is_zero() || bytes == 0 {
            return;
        }
        let now = Instant::now();
        let mut buckets = self.lock();
        if let Some(bucket) = buckets.get_mut(&uid) {
            let refilled = self.refill(bucket.tokens, now.saturating_duration_since(bucket.at));
            bucket.tokens = refilled.saturating_add(bytes).min(self.capacity);
            bucket.at = now;
        }
    }

    /// What `uid` has left now.
    pub fn remaining(&self, uid: u32) -> u64 {
        if self.window.is_zero() {
            return self.capacity;
        }
        let now = Instant::now();
        self.lock().get(&uid).map_or(self.capacity, |b| {
            self.refill(b.tokens, now.saturating_duration_since(b.at))
        })
    }

    /// [`Self::charge_entries`] at a given instant (the clock seam for tests).
    pub fn charge_at(
        &self,
        uid: u32,
        entries: u64,
        bytes: u64,
        now: Instant,
    ) -> Result<(), BudgetExceeded> {
        let cost = entries
            .saturating_mul(self.entry_cost)
            .saturating_add(bytes);
        if self.window.is_zero() || cost == 0 {
            return Ok(());
        }
        let mut buckets = self.lock();
        if buckets.len() > 4096 {
            let stale = self.window.saturating_mul(FORGET_AFTER_WINDOWS);
            buckets.retain(|_, b| now.saturating_duration_since(b.at) < stale);
        }
        let bucket = buckets.entry(uid).or_insert(Bucket {
            tokens: self.capacity,
            at: now,
        });
        let refilled = self.refill(bucket.tokens, now.saturating_duration_since(bucket.at));
        if refilled < cost {
            bucket.tokens = refilled;
            bucket.at = now;
            let missing = cost - refilled;
            return Err(BudgetExceeded {
                uid,
                requested: cost,
                bytes,
                entries,
                entry_cost: self.entry_cost,
                available: refilled,
                capacity: self.capacity,
                window_secs: self.window.as_secs(),
                retry_after_secs: if cost > self.capacity {
                    u64::MAX
                } else {
                    self.time_to_refill(missing).as_secs().max(1)
                },
            });
        }
        bucket.tokens = refilled - cost;
        bucket.at = now;
        Ok(())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u32, Bucket>> {
        // Plain numbers: a panic elsewhere cannot leave the map torn.
        self.buckets.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Tokens after `elapsed` of refilling from `tokens`.
    fn refill(&self, tokens: u64, elapsed: Duration) -> u64 {
        // capacity * elapsed / window, in u128 so huge capacities cannot overflow.
        let gained = u128::from(self.capacity) * elapsed.as_nanos() / self.window.as_nanos();
        let total = u128::from(tokens).saturating_add(gained);
        u64::try_from(total.min(u128::from(self.capacity))).unwrap_or(self.capacity)
    }

    fn time_to_refill(&self, bytes: u64) -> Duration {
        let nanos = u128::from(bytes) * self.window.as_nanos() / u128::from(self.capacity.max(1));
        Duration::from_nanos(u64::try_from(nanos).unwrap_or(u64::MAX))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_uid_is_refused_past_its_budget_and_refills_over_the_window() {
        let budget = HashBudget::new(1000, Duration::from_secs(10)).with_entry_cost(0);
        let t0 = Instant::now();
        budget.charge_at(7, 0, 600, t0).unwrap();
        let refused = budget.charge_at(7, 0, 600, t0).unwrap_err();
        assert_eq!(
            (refused.uid, refused.available, refused.requested),
            (7, 400, 600)
        );
        assert_eq!(refused.retry_after_secs, 2);
        // Another uid has its own bucket.
        budget.charge_at(8, 0, 1000, t0).unwrap();
        // Half the window later, half the capacity is back.
        budget
            .charge_at(7, 0, 800, t0 + Duration::from_secs(5))
            .unwrap();
        assert!(
            budget
                .charge_at(7, 0, 200, t0 + Duration::from_secs(5))
                .is_err()
        );
        // Never more than the capacity, however long it waited.
        assert!(
            budget
                .charge_at(7, 0, 1001, t0 + Duration::from_secs(999))
                .is_err()
        );
        budget
            .charge_at(7, 0, 1000, t0 + Duration::from_secs(999))
            .unwrap();
    }

    #[test]
    fn a_refusal_takes_nothing() {
        let budget = HashBudget::new(100, Duration::from_secs(100)).with_entry_cost(0);
        let t0 = Instant::now();
        assert!(budget.charge_at(1, 0, 101, t0).is_err());
        budget.charge_at(1, 0, 100, t0).unwrap();
    }

    #[test]
    fn entries_cost_their_entry_cost_even_when_empty() {
        // 300,000 empty files are not free: each costs the entry cost.
        let budget = HashBudget::new(10 * DEFAULT_ENTRY_COST, Duration::from_secs(3600));
        let t0 = Instant::now();
        for _ in 0..10 {
            budget.charge_at(5, 1, 0, t0).unwrap();
        }
        let refused = budget.charge_at(5, 1, 0, t0).unwrap_err();
        assert_eq!(
            (refused.requested, refused.bytes, refused.entries),
            (DEFAULT_ENTRY_COST, 0, 1)
        );
        assert!(
            refused
                .to_string()
                .contains("4096 per file or directory entry"),
            "{refused}"
        );
        // A file costs its size plus one entry.
        let budget = HashBudget::new(10_000, Duration::from_secs(3600)).with_entry_cost(100);
        budget.charge_at(5, 1, 9_900, t0).unwrap();
        assert!(budget.charge_at(5, 1, 0, t0).is_err());
    }

    #[test]
    fn a_refund_gives_back_what_was_not_read_up_to_the_capacity() {
        let budget = HashBudget::new(1_000_000, Duration::from_secs(1_000_000)).with_entry_cost(0);
        budget.charge(3, 900_000).unwrap();
        assert!(budget.remaining(3) < 101_000);
        budget.refund(3, 600_000);
        let left = budget.remaining(3);
        assert!((700_000..702_000).contains(&left), "{left}");
        budget.refund(3, u64::MAX);
        assert_eq!(budget.remaining(3), 1_000_000);
        // A uid never charged has nothing to refund and a full bucket.
        budget.refund(4, 10);
        assert_eq!(budget.remaining(4), 1_000_000);
    }

    #[test]
    fn unlimited_never_refuses() {
        let budget = HashBudget::unlimited();
        budget.charge(0, u64::MAX).unwrap();
        budget.charge_entries(0, u64::MAX, u64::MAX).unwrap();
    }
}
