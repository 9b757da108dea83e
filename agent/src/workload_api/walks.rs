//! How many measurements (executable, app tree and model walks of one
//! request) run at once: at most `max_walks_per_uid` for one uid and
//! `max_walks` in all (`[workload]` in `agent.toml`).
//!
//! A request over a limit waits in line, for at most `walk_wait`, then is
//! refused with `ResourceExhausted` naming the limit. Waiting, not an
//! immediate refusal, because the legitimate case of many measurements of
//! one uid at once is a service starting several worker processes
//! together: the first walk fills the cache, the others then take
//! microseconds each, and none of them should fail. A waiting request
//! holds no thread and no walk memory, and gives up its place as soon as
//! its client goes away.
//!
//! The permit travels with the measurement onto its blocking thread and is
//! released only when the walk has returned, so a walk cancelled because
//! its client left still counts until it has actually stopped: the global
//! limit bounds walks running, not requests waiting. That bound is what
//! keeps the agent's memory bounded (see docs/security-model.md).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Per-uid semaphores kept before idle ones are forgotten.
const KEEP_IDLE_UIDS: usize = 1024;

/// A measurement over one of the limits.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum WalkLimitError {
    /// The uid already runs as many measurements as it may.
    #[error(
        "uid {uid} already has {limit} measurements running, the most workload.max_walks_per_uid allows, and none finished within {waited_ms} ms: retry when they finish"
    )]
    PerUid {
        /// The caller's uid.
        uid: u32,
        /// `max_walks_per_uid`.
        limit: usize,
        /// How long the request waited, in milliseconds.
        waited_ms: u128,
    },
    /// The agent runs as many measurements as it may.
    #[error(
        "the agent already runs {limit} measurements, the most workload.max_walks allows, and none finished within {waited_ms} ms: retry shortly"
    )]
    Global {
        /// `max_walks`.
        limit: usize,
        /// How long the request waited, in milliseconds.
        waited_ms: u128,
    },
}

impl WalkLimitError {
    /// The Workload API status for this error.
    pub fn to_status(&self) -> tonic::Status {
        tonic::Status::resource_exhausted(self.to_string())
    }
}

/// The measurement limits.
#[derive(Debug)]
pub struct WalkLimiter {
    global: Arc<Semaphore>,
    per_uid: Mutex<HashMap<u32, Arc<Semaphore>>>,
    global_max: usize,
    per_uid_max: usize,
    wait: Duration,
}

/// The right to run one measurement; dropping it frees the place.
#[derive(Debug)]
pub struct WalkPermit {
    _uid: OwnedSemaphorePermit,
    _global: OwnedSemaphorePermit,
}

impl WalkLimiter {
    /// At most `per_uid_max` measurements per uid and `global_max` in all;
    /// a request waits up to `wait` for a place.
    pub fn new(global_max: usize, per_uid_max: usize, wait: Duration) -> Self {
        Self {
            global: Arc::new(Semaphore::new(global_max)),
            per_uid: Mutex::new(HashMap::new()),
            global_max,
            per_uid_max,
            wait,
        }
    }

    /// A place for one measurement of `uid`, waiting up to the configured
    /// time for one.
    pub async fn acquire(&self, uid: u32) -> Result<WalkPermit, WalkLimitError> {
        let started = tokio::time::Instant::now();
        let deadline = started + self.wait;
        let mine = self.semaphore_of(uid);
        let uid_permit = match mine.clone().try_acquire_owned() {
            Ok(permit) => permit,
            Err(_) => tokio::time::timeout_at(deadline, mine.acquire_owned())
                .await
                .ok()
                .and_then(Result::ok)
                .ok_or_else(|| WalkLimitError::PerUid {
                    uid,
                    limit: self.per_uid_max,
                    waited_ms: started.elapsed().as_millis(),
                })?,
        };
        let global_permit = match self.global.clone().try_acquire_owned() {
            Ok(permit) => permit,
            Err(_) => tokio::time::timeout_at(deadline, self.global.clone().acquire_owned())
                .await
                .ok()
                .and_then(Result::ok)
                .ok_or_else(|| WalkLimitError::Global {
                    limit: self.global_max,
                    waited_ms: started.elapsed().as_millis(),
                })?,
        };
        Ok(WalkPermit {
            _uid: uid_permit,
            _global: global_permit,
        })
    }

    /// Measurements running now (for tests and statistics).
    pub fn running(&self) -> usize {
        self.global_max
            .saturating_sub(self.global.available_permits())
    }

    fn semaphore_of(&self, uid: u32) -> Arc<Semaphore> {
        // Plain map of handles: a panic elsewhere cannot leave it torn.
        let mut map = self.per_uid.lock().unwrap_or_else(|p| p.into_inner());
        if map.len() > KEEP_IDLE_UIDS {
            let max = self.per_uid_max;
            // Only the map holds an idle uid's semaphore, all places free.
            map.retain(|_, s| Arc::strong_count(s) > 1 || s.available_permits() < max);
        }
        map.entry(uid)
            .or_insert_with(|| Arc::new(Semaphore::new(self.per_uid_max)))
            .clone()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[tokio::test]
    async fn a_uid_over_its_limit_waits_then_is_refused_naming_the_limit() {
        let limiter = WalkLimiter::new(3, 2, Duration::from_millis(20));
        let a = limiter.acquire(7).await.unwrap();
        let _b = limiter.acquire(7).await.unwrap();
        let err = limiter.acquire(7).await.unwrap_err();
        assert!(matches!(
            err,
            WalkLimitError::PerUid {
                uid: 7,
                limit: 2,
                ..
            }
        ));
        assert_eq!(err.to_status().code(), tonic::Code::ResourceExhausted);
        assert!(
            err.to_string().contains("workload.max_walks_per_uid"),
            "{err}"
        );
        // Another uid still has a place; then the agent is full.
        let c = limiter.acquire(8).await.unwrap();
        assert_eq!(limiter.running(), 3);
        let err = limiter.acquire(9).await.unwrap_err();
        assert!(matches!(err, WalkLimitError::Global { limit: 3, .. }));
        assert!(err.to_string().contains("workload.max_walks"), "{err}");
        drop(c);
        // A place freed while waiting is taken.
        let limiter = Arc::new(limiter);
        let waiting = tokio::spawn({
            let limiter = limiter.clone();
            async move { limiter.acquire(7).await.map(|_| ()) }
        });
        drop(a);
        waiting.await.unwrap().unwrap();
    }

    #[tokio::test]
    async fn idle_uids_are_forgotten() {
        let limiter = WalkLimiter::new(4, 1, Duration::ZERO);
        let held = limiter.acquire(0).await.unwrap();
        for uid in 1..=(KEEP_IDLE_UIDS as u32 + 10) {
            drop(limiter.acquire(uid).await.unwrap());
        }
        let kept = limiter.per_uid.lock().unwrap().len();
        assert!(kept <= KEEP_IDLE_UIDS + 1, "{kept}");
        // The busy uid was kept: it is still limited.
        assert!(limiter.acquire(0).await.is_err());
        drop(held);
    }
}
