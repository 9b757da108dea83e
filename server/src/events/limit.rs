//! Refusals, rate-limited and aggregated before they reach the audit log.
//!
//! A refusal costs its source nothing and the issuer one durable audit
//! record, so without a limit anyone who can reach the node API could fill
//! the issuer's disk (and a full disk fails the issuer closed for every
//! node). [`RefusalLimiter`] is an [`EventSink`] in front of the audit log
//! that lets every other event through untouched and, for refusals, keeps
//! one *bucket* per (source, workload, refused kind, reason):
//!
//! - the first refusal of a bucket is recorded in full and opens an
//!   interval of [`RefusalLimits::interval`];
//! - later refusals in that interval are only counted;
//! - when the interval closes (on the bucket's next refusal after it, on the
//!   periodic [`RefusalLimiter::run`], or on clean shutdown with
//!   [`RefusalLimiter::close`]) one
//!   [`SecurityEvent::RefusalsSuppressed`] record carries the count, the
//!   interval and the sequence number of the full record (nothing is written
//!   when nothing was suppressed).
//!
//! The source is the peer's IP address for unauthenticated calls (every
//! port of one address is one source) and the node's SPIFFE ID for what an
//! authenticated node reports; a workload refusal's bucket also names the
//! workload's class ([`crate::issuance::workload_class`]: its code, app tree
//! and model digests, not its pid or uid), so a process restarted in a loop
//! stays one bucket.
//!
//! Memory is bounded: at most [`RefusalLimits::max_sources`] sources are
//! tracked at once, each with at most [`RefusalLimits::reasons_per_source`]
//! buckets of its own plus one per refused kind for its other reasons
//! (reason `*`); refusals from sources beyond that go to one overflow bucket
//! per refused kind (source `*`). Every refusal is therefore either recorded
//! or counted, and the records one interval can add are bounded whatever the
//! sources do (docs/audit.md, "Worst-case growth per hour", has the arithmetic).
//!
//! A suppressed refusal resolves at once: it grants nothing, and its count
//! is written with the aggregate. A full record resolves once durable, as
//! with the audit log itself; if it cannot be written its bucket is dropped,
//! so the next refusal tries to record in full again (and fails closed the
//! same way).

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

use tokio::sync::watch;

use hallmark_ca::clock::Clock;
use hallmark_ca::id::SpiffeId;

use super::{EventSink, Recorded, SecurityEvent};
use crate::audit::record::format_time;

/// Default [`RefusalLimits::interval`].
pub const DEFAULT_REFUSAL_INTERVAL: Duration = Duration::from_secs(60);
/// Default [`RefusalLimits::max_sources`].
pub const DEFAULT_REFUSAL_SOURCES: usize = 256;
/// Default [`RefusalLimits::reasons_per_source`].
pub const DEFAULT_REFUSAL_REASONS_PER_SOURCE: usize = 4;
/// The reason (and, for the overflow bucket, the source) of a bucket that
/// counts refusals of several reasons (or sources).
pub const ANY: &str = "*";
/// Longest reason, in bytes, a bucket is told apart by; longer reasons are
/// compared on this prefix (the full record keeps the whole text).
const REASON_KEY_BYTES: usize = 256;
/// Most sweeps of closed buckets per second of the clock when the source
/// cap is reached (a sweep visits every bucket).
const SWEEP_EVERY: Duration = Duration::from_secs(1);

/// How refusals are limited (`[audit]` `refusal_*` in `server.toml`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RefusalLimits {
    /// How long a bucket counts after its first, fully recorded refusal.
    pub interval: Duration,
    /// Most sources tracked at once; the others share the overflow bucket.
    pub max_sources: usize,
    /// Most (workload, kind, reason) buckets per source; its other refusals
    /// share the source's reason-`*` bucket.
    pub reasons_per_source: usize,
}

impl Default for RefusalLimits {
    fn default() -> Self {
        Self {
            interval: DEFAULT_REFUSAL_INTERVAL,
            max_sources: DEFAULT_REFUSAL_SOURCES,
            reasons_per_source: DEFAULT_REFUSAL_REASONS_PER_SOURCE,
        }
    }
}

impl RefusalLimits {
    /// Most buckets open at once: each tracked source's own reasons plus
    /// its reason-`*` bucket per kind it can be refused, and the overflow
    /// buckets. Each bucket writes at most two records per interval.
    pub fn max_buckets(&self) -> usize {
        let per_source = self.reasons_per_source + KINDS_PER_SOURCE;
        self.max_sources
            .saturating_mul(per_source)
            .saturating_add(REFUSED_KINDS.len())
    }
}

/// The event kinds this limiter aggregates.
pub const REFUSED_KINDS: [&str; 4] = [
    "node_attestation_refused",
    "svid_refused",
    "workload_refused",
    "node_rate_limited",
];
/// Most refused kinds one source can produce (a node: `svid_refused`,
/// `workload_refused` and `node_rate_limited`; a peer:
/// `node_attestation_refused`).
const KINDS_PER_SOURCE: usize = 3;

/// An [`EventSink`] that aggregates refusals per source and interval before
/// they reach `sink` (see the module docs). Cheap to clone.
#[derive(Debug, Clone)]
pub struct RefusalLimiter {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    sink: Arc<dyn EventSink>,
    clock: Arc<dyn Clock>,
    limits: RefusalLimits,
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    buckets: HashMap<Key, Bucket>,
    /// Open buckets per source (overflow excluded).
    sources: HashMap<Source, usize>,
    /// Tells a bucket apart from a later one with the same key.
    generation: u64,
    last_sweep: Option<SystemTime>,
    /// After [`RefusalLimiter::close`]: every refusal is recorded in full.
    closed: bool,
}

/// Who was refused.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Source {
    /// An unauthenticated peer, by IP address (`None`: unknown).
    Peer(Option<IpAddr>),
    /// An authenticated node agent.
    Node(SpiffeId),
    /// Every source beyond [`RefusalLimits::max_sources`].
    Overflow,
}

impl std::fmt::Display for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Source::Peer(Some(ip)) => write!(f, "{ip}"),
            Source::Peer(None) => f.write_str("unknown"),
            Source::Node(id) => write!(f, "{id}"),
            Source::Overflow => f.write_str(ANY),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Key {
    source: Source,
    /// The workload class of a workload refusal.
    workload: Option<String>,
    kind: &'static str,
    reason: String,
}

#[derive(Debug)]
struct Bucket {
    start: SystemTime,
    end: SystemTime,
    /// Refusals counted, not recorded.
    count: u64,
    /// The full record's sequence number, when the sink numbers records.
    first_seq: Option<u64>,
    generation: u64,
}

impl RefusalLimiter {
    /// Aggregates the refusals reported to it before they reach `sink`.
    pub fn new(sink: Arc<dyn EventSink>, clock: Arc<dyn Clock>, limits: RefusalLimits) -> Self {
        Self {
            inner: Arc::new(Inner {
                sink,
                clock,
                limits,
                state: Mutex::new(State::default()),
            }),
        }
    }

    /// Writes the aggregate of every bucket whose interval has closed.
    /// Returns the records written, to await.
    pub fn flush_closed(&self) -> Recorded {
        let now = self.inner.clock.now();
        let mut state = self.inner.lock();
        let closed: Vec<Key> = state
            .buckets
            .iter()
            .filter(|(_, b)| b.end <= now)
            .map(|(k, _)| k.clone())
            .collect();
        let written = closed
            .into_iter()
            .filter_map(|key| self.inner.close_bucket(&mut state, &key, now))
            .collect();
        state.last_sweep = Some(now);
        combine(written)
    }

    /// Writes the aggregate of every open bucket, intervals cut at now, and
    /// records every later refusal in full: for a clean shutdown, before
    /// the last record and checkpoint.
    pub fn close(&self) -> Recorded {
        let now = self.inner.clock.now();
        let mut state = self.inner.lock();
        state.closed = true;
        let keys: Vec<Key> = state.buckets.keys().cloned().collect();
        let written = keys
            .into_iter()
            .filter_map(|key| self.inner.close_bucket(&mut state, &key, now))
            .collect();
        combine(written)
    }

    /// How many buckets are open (at most [`RefusalLimits::max_buckets`]).
    pub fn open_buckets(&self) -> usize {
        self.inner.lock().buckets.len()
    }

    /// Flushes closed buckets every quarter interval (at least every
    /// second, at most every minute) until `shutdown`, so a count is
    /// written when its flood stops. The final flush is [`Self::close`]'s,
    /// on shutdown.
    pub async fn run(self, mut shutdown: watch::Receiver<bool>) {
        let every =
            (self.inner.limits.interval / 4).clamp(Duration::from_secs(1), Duration::from_secs(60));
        let mut ticker = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = ticker.tick() => {}
                () = crate::server::shutdown_signalled(&mut shutdown) => return,
            }
            if let Err(error) = self.flush_closed().await {
                tracing::error!(target: "hallmark::audit", %error, "suppressed refusal counts not written");
            }
        }
    }
}

impl EventSink for RefusalLimiter {
    fn record(&self, event: SecurityEvent) -> Recorded {
        let Some(key) = refusal_key(&event) else {
            return self.inner.sink.record(event);
        };
        self.inner.refusal(key, event)
    }
}

impl Inner {
    fn lock(&self) -> MutexGuard<'_, State> {
        // The state is a cache of counts: a panic while it was held leaves
        // it usable (at worst a count is off), so poisoning is ignored.
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn refusal(self: &Arc<Self>, key: Key, event: SecurityEvent) -> Recorded {
        let now = self.clock.now();
        let mut state = self.lock();
        if state.closed {
            return self.sink.record(event);
        }
        let mut written = Vec::new();
        let key = match self.place(&mut state, key, now, &mut written) {
            Placed::Counted => return combine(written),
            Placed::Open(key) => key,
        };
        // The first of its interval: recorded in full, after the aggregate
        // of the interval it ends (if any), both under the lock so the log
        // keeps that order.
        let full = self.sink.record(event);
        state.generation += 1;
        let generation = state.generation;
        if key.source != Source::Overflow {
            *state.sources.entry(key.source.clone()).or_insert(0) += 1;
        }
        state.buckets.insert(
            key.clone(),
            Bucket {
                start: now,
                end: now + self.limits.interval,
                count: 0,
                first_seq: full.seq(),
                generation,
            },
        );
        drop(state);
        let this = Arc::clone(self);
        written.push(Recorded::new(async move {
            let result = full.await;
            if result.is_err() {
                this.forget(&key, generation);
            }
            result
        }));
        combine(written)
    }

    /// Finds the bucket for `key`: counts the refusal in an open one, or
    /// returns the key of the bucket to open (closing an ended interval
    /// first, its aggregate pushed to `written`).
    fn place(
        &self,
        state: &mut State,
        key: Key,
        now: SystemTime,
        written: &mut Vec<Recorded>,
    ) -> Placed {
        let mut key = key;
        loop {
            if let Some(bucket) = state.buckets.get_mut(&key) {
                if now < bucket.end {
                    bucket.count += 1;
                    return Placed::Counted;
                }
                written.extend(self.close_bucket(state, &key, now));
            }
            // A new bucket: within the caps, or a shared one.
            let Some(shared) = self.over_cap(state, &key, now, written) else {
                return Placed::Open(key);
            };
            key = shared;
        }
    }

    /// The shared bucket `key` falls in when opening it would exceed a cap.
    fn over_cap(
        &self,
        state: &mut State,
        key: &Key,
        now: SystemTime,
        written: &mut Vec<Recorded>,
    ) -> Option<Key> {
        if key.source == Source::Overflow || key.reason == ANY {
            // Shared buckets are always allowed: at most one per source and
            // kind, and the overflow one per kind.
            return None;
        }
        let open = state.sources.get(&key.source).copied().unwrap_or(0);
        if open == 0 && state.sources.len() >= self.limits.max_sources {
            self.sweep(state, now, written);
            if state.sources.len() >= self.limits.max_sources {
                return Some(Key {
                    source: Source::Overflow,
                    workload: None,
                    kind: key.kind,
                    reason: ANY.to_owned(),
                });
            }
        }
        if open >= self.limits.reasons_per_source {
            return Some(Key {
                source: key.source.clone(),
                workload: None,
                kind: key.kind,
                reason: ANY.to_owned(),
            });
        }
        None
    }

    /// Closes every ended bucket, at most once per [`SWEEP_EVERY`].
    fn sweep(&self, state: &mut State, now: SystemTime, written: &mut Vec<Recorded>) {
        let due = state
            .last_sweep
            .is_none_or(|last| now.duration_since(last).unwrap_or_default() >= SWEEP_EVERY);
        if !due {
            return;
        }
        state.last_sweep = Some(now);
        let closed: Vec<Key> = state
            .buckets
            .iter()
            .filter(|(_, b)| b.end <= now)
            .map(|(k, _)| k.clone())
            .collect();
        for key in closed {
            written.extend(self.close_bucket(state, &key, now));
        }
    }

    /// Removes `key`'s bucket; records its aggregate if it counted any.
    fn close_bucket(&self, state: &mut State, key: &Key, now: SystemTime) -> Option<Recorded> {
        let bucket = state.buckets.remove(key)?;
        release(state, &key.source);
        if bucket.count == 0 {
            return None;
        }
        Some(self.sink.record(SecurityEvent::RefusalsSuppressed {
            source: key.source.to_string(),
            workload: key.workload.clone(),
            refused_kind: key.kind,
            reason: key.reason.clone(),
            count: bucket.count,
            interval_start: format_time(bucket.start),
            interval_end: format_time(bucket.end.min(now)),
            first_seq: bucket.first_seq,
        }))
    }

    /// Drops the bucket opened as `generation` (its full record failed), so
    /// the next refusal is recorded in full again.
    fn forget(&self, key: &Key, generation: u64) {
        let mut state = self.lock();
        // A later bucket with the same key is not this one's to drop.
        if state
            .buckets
            .get(key)
            .is_none_or(|b| b.generation != generation)
        {
            return;
        }
        let Some(bucket) = state.buckets.remove(key) else {
            return;
        };
        release(&mut state, &key.source);
        if bucket.count > 0 {
            tracing::error!(
                target: "hallmark::audit",
                source = %key.source,
                kind = key.kind,
                count = bucket.count,
                "a refusal was not recorded: the refusals counted after it are not recorded either"
            );
        }
    }
}

enum Placed {
    /// Counted in an open bucket.
    Counted,
    /// Open a bucket with this key.
    Open(Key),
}

/// One outcome for several records: ready at once when there are none.
fn combine(mut written: Vec<Recorded>) -> Recorded {
    match written.len() {
        0 => Recorded::ready(Ok(())),
        1 => written.remove(0),
        _ => Recorded::new(Recorded::all(written)),
    }
}

fn release(state: &mut State, source: &Source) {
    if let Some(open) = state.sources.get_mut(source) {
        *open = open.saturating_sub(1);
        if *open == 0 {
            state.sources.remove(source);
        }
    }
}

/// The bucket key of a refusal; `None` for every other event.
fn refusal_key(event: &SecurityEvent) -> Option<Key> {
    let (source, workload, kind, reason) = match event {
        SecurityEvent::NodeAttestationRefused { peer, reason, .. } => (
            Source::Peer(peer_ip(peer)),
            None,
            "node_attestation_refused",
            reason.as_str(),
        ),
        SecurityEvent::SvidRefused {
            node,
            reason,
            workload,
            ..
        } => (
            Source::Node(node.clone()),
            Some(workload.clone()),
            "svid_refused",
            reason.as_str(),
        ),
        // The class: what refused which call of which uid running what.
        SecurityEvent::WorkloadRefused {
            node,
            refused_by,
            call,
            reason,
            uid,
            exe_path,
            ..
        } => (
            Source::Node(node.clone()),
            Some(format!(
                "{refused_by} {call} uid {uid} {}",
                exe_path.as_deref().unwrap_or("(executable unknown)")
            )),
            "workload_refused",
            reason.as_str(),
        ),
        SecurityEvent::NodeRateLimited { node, call, .. } => {
            (Source::Node(node.clone()), None, "node_rate_limited", *call)
        }
        _ => return None,
    };
    Some(Key {
        source,
        workload,
        kind,
        reason: truncate(reason, REASON_KEY_BYTES).to_owned(),
    })
}

/// The IP address of a peer written `ip:port` (or a bare IP).
fn peer_ip(peer: &str) -> Option<IpAddr> {
    peer.parse::<SocketAddr>()
        .map(|a| a.ip())
        .or_else(|_| peer.parse::<IpAddr>())
        .ok()
        .map(|ip| ip.to_canonical())
}

/// The longest prefix of `text` of at most `max` bytes, on a char boundary.
pub(crate) fn truncate(text: &str, max: usize) -> &str {
    if text.len() <= max {
        return text;
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

#[cfg(test)]
mod tests;
