//! Per-node limits on the calls that mint: a token bucket per node SPIFFE ID.
//!
//! An attested node is trusted with its workloads' credentials, not with
//! the issuer's capacity: a compromised or broken agent calling
//! `MintX509Svids`, `MintJwtSvid` or `RenewAgentSvid` in a loop would burn
//! the issuer's signing time and grow the audit log by a record per
//! credential. Each node gets [`NodeLimits::burst`] credentials at once
//! (an X.509 call costs one per key it sends, a JWT call one), refilled at
//! [`NodeLimits::per_second`]; node SVID renewals have a bucket of their
//! own ([`RENEWAL_LIMITS`]). A call beyond that is refused with
//! `ResourceExhausted`, naming the limit and when to retry, before anything
//! is matched or signed. The defaults leave a node with hundreds of
//! workloads far inside the limit (see `conf/server.toml`).
//!
//! The check is one short lock and a map lookup per call (see the `limit`
//! benches in `benches/audit.rs`). Buckets of idle nodes are full, and a
//! full bucket is the same as none, so they are dropped whenever the map
//! has doubled since the last clean-up: memory follows the nodes calling.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use hallmark_ca::clock::Clock;
use hallmark_ca::id::SpiffeId;

/// Default [`NodeLimits::per_second`]: a node with 500 workloads, each
/// renewing its X.509-SVID every 150 s and fetching a JWT-SVID every 5 s,
/// asks for about 103 a second.
pub const DEFAULT_MINT_PER_SECOND: u32 = 200;
/// Default [`NodeLimits::burst`]: every workload of a 500-workload node
/// starting at once, with an X.509-SVID and a JWT-SVID each, twice over.
pub const DEFAULT_MINT_BURST: u32 = 2000;
/// `RenewAgentSvid`'s own bucket per node, apart from the minting one so
/// that a node's workloads using up its minting budget never keep its
/// agent from renewing its node SVID (every half hour with the default 1h
/// SVID): 10 at once, one a second after that.
pub const RENEWAL_LIMITS: NodeLimits = NodeLimits {
    per_second: 1,
    burst: 10,
};
/// The map is cleaned when it reaches this size at the least.
const MIN_CLEAN_AT: usize = 1024;

/// Per-node limits on minting (`[agents]` `mint_rate` and `mint_burst` in
/// `server.toml`), in credentials: an X.509 call costs one per key, a JWT
/// call one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NodeLimits {
    /// Sustained credentials per second per node.
    pub per_second: u32,
    /// Credentials a node may ask for at once (the bucket's size).
    pub burst: u32,
}

impl Default for NodeLimits {
    fn default() -> Self {
        Self {
            per_second: DEFAULT_MINT_PER_SECOND,
            burst: DEFAULT_MINT_BURST,
        }
    }
}

/// A call refused by [`CallLimiter::admit`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum LimitError {
    /// The node used its burst and the refill has not caught up.
    #[error(
        "agent {node} exceeded its minting limit of {} credentials per second (bursts of {}): retry in {} ms",
        limits.per_second,
        limits.burst,
        retry_after.as_millis()
    )]
    Exceeded {
        /// The node.
        node: SpiffeId,
        /// The limits in force.
        limits: NodeLimits,
        /// When the next call will be admitted.
        retry_after: Duration,
    },
}

/// Token buckets per node; shared by the node API's handlers.
#[derive(Debug)]
pub struct CallLimiter {
    limits: NodeLimits,
    clock: Arc<dyn Clock>,
    state: Mutex<State>,
}

#[derive(Debug)]
struct State {
    buckets: HashMap<SpiffeId, Bucket>,
    clean_at: usize,
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    at: SystemTime,
}

impl CallLimiter {
    /// Buckets of `limits`, refilled by `clock`.
    pub fn new(limits: NodeLimits, clock: Arc<dyn Clock>) -> Self {
        // Settings are validated (both at least 1); a zero here would
        // divide by zero, so it is raised rather than trusted.
        let limits = NodeLimits {
            per_second: limits.per_second.max(1),
            burst: limits.burst.max(1),
        };
        Self {
            limits,
            clock,
            state: Mutex::new(State {
                buckets: HashMap::new(),
                clean_at: MIN_CLEAN_AT,
            }),
        }
    }

    /// The limits in force.
    pub fn limits(&self) -> NodeLimits {
        self.limits
    }

    /// Takes `cost` (the credentials a call asks for: its keys for
    /// X.509-SVIDs, 1 otherwise) from `node`'s bucket, or says when it may
    /// call again. A cost above the burst is taken as the burst.
    pub fn admit(&self, node: &SpiffeId, cost: u32) -> Result<(), LimitError> {
        let now = self.clock.now();
        let burst = f64::from(self.limits.burst);
        let cost = f64::from(cost.clamp(1, self.limits.burst));
        let rate = f64::from(self.limits.per_second);
        // Only counts and times are behind the lock: a panic cannot leave
        // them inconsistent, so poisoning is ignored.
        let mut state = self
            .state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let tokens = match state.buckets.get_mut(node) {
            Some(bucket) => {
                let elapsed = now.duration_since(bucket.at).unwrap_or_default();
                bucket.tokens = (bucket.tokens + elapsed.as_secs_f64() * rate).min(burst);
                bucket.at = now;
                if bucket.tokens >= cost {
                    bucket.tokens -= cost;
                    return Ok(());
                }
                bucket.tokens
            }
            None => {
                if state.buckets.len() >= state.clean_at {
                    state.clean(now, rate, burst);
                }
                state.buckets.insert(
                    node.clone(),
                    Bucket {
                        tokens: burst - cost,
                        at: now,
                    },
                );
                return Ok(());
            }
        };
        let retry_after = Duration::from_secs_f64((cost - tokens) / rate);
        Err(LimitError::Exceeded {
            node: node.clone(),
            limits: self.limits,
            // Rounded up to the millisecond the message shows.
            retry_after: retry_after.max(Duration::from_millis(1)),
        })
    }

    /// Nodes with a bucket (tests).
    pub fn tracked(&self) -> usize {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .buckets
            .len()
    }
}

impl State {
    /// Drops the buckets that have refilled (the same as no bucket).
    fn clean(&mut self, now: SystemTime, rate: f64, burst: f64) {
        self.buckets.retain(|_, b| {
            let elapsed = now.duration_since(b.at).unwrap_or_default();
            b.tokens + elapsed.as_secs_f64() * rate < burst
        });
        self.clean_at = (self.buckets.len() * 2).max(MIN_CLEAN_AT);
    }
}

#[cfg(test)]
mod tests {
    use hallmark_ca::clock::ManualClock;

    use super::*;

    fn node(n: usize) -> SpiffeId {
        SpiffeId::parse(&format!(
            "spiffe://example.org/hallmark/agent/join_token/{n}"
        ))
        .unwrap()
    }

    #[test]
    fn a_node_gets_its_burst_then_the_refill_rate() {
        let clock = ManualClock::new(SystemTime::UNIX_EPOCH + Duration::from_secs(1_000));
        let limiter = CallLimiter::new(
            NodeLimits {
                per_second: 2,
                burst: 3,
            },
            Arc::new(clock.clone()),
        );
        let a = node(1);
        for _ in 0..3 {
            limiter.admit(&a, 1).unwrap();
        }
        let err = limiter.admit(&a, 1).unwrap_err();
        let LimitError::Exceeded { retry_after, .. } = &err;
        assert_eq!(*retry_after, Duration::from_millis(500));
        let text = err.to_string();
        assert!(
            text.contains("2 credentials per second")
                && text.contains("bursts of 3")
                && text.contains("retry in 500 ms")
                && text.contains(a.as_str()),
            "{text}"
        );
        // Another node is not affected.
        limiter.admit(&node(2), 1).unwrap();
        // Half a second refills one call, not two.
        clock.advance(Duration::from_millis(500));
        limiter.admit(&a, 1).unwrap();
        assert!(limiter.admit(&a, 1).is_err());
        // A long pause refills to the burst, never beyond.
        clock.advance(Duration::from_secs(3_600));
        for _ in 0..3 {
            limiter.admit(&a, 1).unwrap();
        }
        assert!(limiter.admit(&a, 1).is_err());
    }

    #[test]
    fn a_call_costs_what_it_asks_for() {
        let clock = ManualClock::new(SystemTime::UNIX_EPOCH + Duration::from_secs(1_000));
        let limiter = CallLimiter::new(
            NodeLimits {
                per_second: 4,
                burst: 16,
            },
            Arc::new(clock.clone()),
        );
        let a = node(1);
        limiter.admit(&a, 10).unwrap();
        let err = limiter.admit(&a, 10).unwrap_err();
        let LimitError::Exceeded { retry_after, .. } = err;
        // 6 left, 4 more needed at 4 a second.
        assert_eq!(retry_after, Duration::from_secs(1));
        limiter.admit(&a, 6).unwrap();
        // More than the burst costs the burst: possible once it is full.
        clock.advance(Duration::from_secs(4));
        limiter.admit(&a, 100).unwrap();
        assert!(limiter.admit(&a, 1).is_err());
    }

    #[test]
    fn a_clock_going_back_refills_nothing() {
        let clock = ManualClock::new(SystemTime::UNIX_EPOCH + Duration::from_secs(1_000));
        let limiter = CallLimiter::new(
            NodeLimits {
                per_second: 1,
                burst: 1,
            },
            Arc::new(clock.clone()),
        );
        limiter.admit(&node(1), 1).unwrap();
        clock.set(SystemTime::UNIX_EPOCH + Duration::from_secs(10));
        assert!(limiter.admit(&node(1), 1).is_err());
    }

    #[test]
    fn idle_nodes_are_forgotten() {
        let clock = ManualClock::new(SystemTime::UNIX_EPOCH + Duration::from_secs(1_000));
        let limiter = CallLimiter::new(
            NodeLimits {
                per_second: 10,
                burst: 10,
            },
            Arc::new(clock.clone()),
        );
        for n in 0..MIN_CLEAN_AT {
            limiter.admit(&node(n), 1).unwrap();
        }
        assert_eq!(limiter.tracked(), MIN_CLEAN_AT);
        // One second later every bucket has refilled: the next new node
        // cleans them up instead of growing the map.
        clock.advance(Duration::from_secs(1));
        limiter.admit(&node(MIN_CLEAN_AT), 1).unwrap();
        assert_eq!(limiter.tracked(), 1);
    }
}
