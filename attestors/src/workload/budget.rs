//! The per-uid hashing budget: a local process cannot make the agent hash
//! without bound.
//!
//! Each uid has a token bucket of bytes: it holds at most `capacity` bytes
//! and refills at `capacity / window`. Every byte the agent actually reads
//! to hash on behalf of a caller (cache misses only: a cached file costs
//! nothing) is taken from the caller's bucket first; a request the bucket
//! cannot cover is refused before any of it is read, so an exhausted uid
//! costs the agent no I/O at all.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Default [`HashBudget`] capacity: 128 GiB per uid.
pub const DEFAULT_BUDGET_BYTES: u64 = 128 << 30;
/// Default [`HashBudget`] window: the bucket refills fully in one hour.
pub const DEFAULT_BUDGET_WINDOW: Duration = Duration::from_secs(3600);

/// A uid asked for more hashing than its budget has left.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "uid {uid} asked the agent to hash {requested} bytes with {available} left of its budget \
     ({capacity} bytes per {window_secs} s); retry in {retry_after_secs} s"
)]
pub struct BudgetExceeded {
    /// The caller's uid.
    pub uid: u32,
    /// Bytes this request needed.
    pub requested: u64,
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
    /// A budget of `capacity` bytes per uid, refilled over `window`.
    /// A zero window means the bucket refills instantly (no budget).
    pub fn new(capacity: u64, window: Duration) -> Self {
        Self {
            capacity,
            window,
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// No limit at all (tests and benchmarks).
    pub fn unlimited() -> Self {
        Self::new(u64::MAX, Duration::ZERO)
    }

    /// The per-uid capacity in bytes.
    pub fn capacity(&self) -> u64 {
        self.capacity
    }

    /// Takes `bytes` from `uid`'s bucket, or refuses without taking any.
    pub fn charge(&self, uid: u32, bytes: u64) -> Result<(), BudgetExceeded> {
        self.charge_at(uid, bytes, Instant::now())
    }

    /// [`Self::charge`] at a given instant (the clock seam for tests).
    pub fn charge_at(&self, uid: u32, bytes: u64, now: Instant) -> Result<(), BudgetExceeded> {
        if self.window.is_zero() || bytes == 0 {
            return Ok(());
        }
        let mut buckets = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        if buckets.len() > 4096 {
            let stale = self.window.saturating_mul(FORGET_AFTER_WINDOWS);
            buckets.retain(|_, b| now.saturating_duration_since(b.at) < stale);
        }
        let bucket = buckets.entry(uid).or_insert(Bucket {
            tokens: self.capacity,
            at: now,
        });
        let refilled = self.refill(bucket.tokens, now.saturating_duration_since(bucket.at));
        if refilled < bytes {
            bucket.tokens = refilled;
            bucket.at = now;
            let missing = bytes - refilled;
            return Err(BudgetExceeded {
                uid,
                requested: bytes,
                available: refilled,
                capacity: self.capacity,
                window_secs: self.window.as_secs(),
                retry_after_secs: if bytes > self.capacity {
                    u64::MAX
                } else {
                    self.time_to_refill(missing).as_secs().max(1)
                },
            });
        }
        bucket.tokens = refilled - bytes;
        bucket.at = now;
        Ok(())
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
        let budget = HashBudget::new(1000, Duration::from_secs(10));
        let t0 = Instant::now();
        budget.charge_at(7, 600, t0).unwrap();
        let refused = budget.charge_at(7, 600, t0).unwrap_err();
        assert_eq!(
            (refused.uid, refused.available, refused.requested),
            (7, 400, 600)
        );
        assert_eq!(refused.retry_after_secs, 2);
        // Another uid has its own bucket.
        budget.charge_at(8, 1000, t0).unwrap();
        // Half the window later, half the capacity is back.
        budget
            .charge_at(7, 800, t0 + Duration::from_secs(5))
            .unwrap();
        assert!(
            budget
                .charge_at(7, 200, t0 + Duration::from_secs(5))
                .is_err()
        );
        // Never more than the capacity, however long it waited.
        assert!(
            budget
                .charge_at(7, 1001, t0 + Duration::from_secs(999))
                .is_err()
        );
        budget
            .charge_at(7, 1000, t0 + Duration::from_secs(999))
            .unwrap();
    }

    #[test]
    fn a_refusal_takes_nothing() {
        let budget = HashBudget::new(100, Duration::from_secs(100));
        let t0 = Instant::now();
        assert!(budget.charge_at(1, 101, t0).is_err());
        budget.charge_at(1, 100, t0).unwrap();
    }

    #[test]
    fn unlimited_never_refuses() {
        let budget = HashBudget::unlimited();
        budget.charge(0, u64::MAX).unwrap();
        budget.charge(0, u64::MAX).unwrap();
    }
}
