//! What the socket and the service share about one Workload API
//! connection: who wrote its bytes (the sender check), whether anything is
//! in flight on it (the idle timeout), and the per-uid limits on open
//! connections and streams.
//!
//! The sender check. Linux records the writing process in every chunk of
//! data queued on a Unix stream socket, and with `SO_PASSCRED` on the
//! receiving end it reports it with each `recvmsg` (`SCM_CREDENTIALS`) and
//! never returns the bytes of two writers in one call. The socket compares
//! every writer's pid with the pid of the process that connected (pinned
//! by a pidfd): a write by any other pid (a forked child, a process the
//! descriptor was passed to over `SCM_RIGHTS`, a writer in a pid namespace
//! the agent cannot see, pid 0) taints the connection for good, and every
//! request on a tainted connection is refused.
//!
//! Why a pid is enough (no `SCM_PIDFD` needed): the pinned process was
//! alive when it connected, and attestation checks, after it has read the
//! request, that it is still alive (its pidfd has not signalled exit). A
//! process alive at both moments was alive when the request was written,
//! and two live processes never share a pid, so a write reported with the
//! pinned pid came from the pinned process. A dead pinned process is
//! refused anyway (`ProcessGone`), whoever inherited its pid number.
//! (`SCM_PIDFD` would say the same with a descriptor; nix does not expose
//! it and taking it without `unsafe` would leak one descriptor per read.)
//!
//! The liveness challenge. The executable is recorded when the agent
//! accepts a connection, and a later exec is refused. But a process can
//! connect, write a whole request, fork a child that keeps the connection,
//! and exec a registered program, all before the agent accepts: the
//! request then carries the pinned pid, and the program recorded and
//! measured is the registered one, though the request was written by the
//! code that ran before the exec. So the agent writes an HTTP/2 PING with
//! 8 unpredictable bytes on every new connection, right after its
//! SETTINGS (after the accept, so after the executable was recorded), and
//! answers nothing that needs a measurement until the PING comes back from
//! the pinned pid. Every HTTP/2 client answers a PING without being asked
//! (RFC 9113 §6.7), so honest clients never notice; the process in the race
//! cannot: it now runs the registered program, which does not speak HTTP/2
//! on a descriptor it did not open, and an answer written by the child is
//! foreign. A process that answers and then execs is caught by the
//! executable check.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::watch;
use tonic::Status;

/// A process other than the pinned one that wrote on a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ForeignSender {
    /// Its pid as the agent sees it; 0 when the kernel did not say (a pid
    /// namespace the agent cannot see, or no credentials).
    pub pid: i32,
    /// Its uid, when the kernel said.
    pub uid: Option<u32>,
}

/// The state of one connection, shared by the socket and every request on it.
#[derive(Debug)]
pub struct ConnectionState {
    /// The pid that connected (`None`: not visible).
    pinned: Option<i32>,
    foreign: watch::Sender<Option<ForeignSender>>,
    /// Whether the pinned process echoed the agent's PING (see the module docs).
    answered: watch::Sender<bool>,
    /// Requests in flight and open streams.
    active: AtomicUsize,
    /// When `active` last dropped to zero (or the connection was accepted).
    idle_since: Mutex<Instant>,
    limits: Arc<UidLimits>,
    uid: u32,
}

impl ConnectionState {
    pub(crate) fn new(pinned: Option<i32>, uid: u32, limits: Arc<UidLimits>) -> Self {
        Self {
            pinned,
            foreign: watch::channel(None).0,
            answered: watch::channel(false).0,
            active: AtomicUsize::new(0),
            idle_since: Mutex::new(Instant::now()),
            limits,
            uid,
        }
    }

    /// Records the writer of bytes just read (`None`: the kernel gave no
    /// credentials). The first foreign writer taints the connection.
    pub(crate) fn wrote(&self, writer: Option<(i32, u32)>) {
        let foreign = match (writer, self.pinned) {
            (Some((pid, _)), Some(pinned)) if pid == pinned => return,
            (Some((pid, uid)), _) => ForeignSender {
                pid,
                uid: Some(uid),
            },
            (None, _) => ForeignSender { pid: 0, uid: None },
        };
        let tainted = self.foreign.send_if_modified(|current| {
            if current.is_some() {
                return false;
            }
            *current = Some(foreign);
            true
        });
        if tainted {
            tracing::warn!(
                pinned = self.pinned,
                writer_pid = foreign.pid,
                writer_uid = foreign.uid,
                "a process other than the one that connected wrote on a Workload API connection: every request on it is refused"
            );
        }
    }

    /// The first foreign writer, if any.
    pub fn foreign(&self) -> Option<ForeignSender> {
        *self.foreign.borrow()
    }

    /// `PermissionDenied` naming the foreign writer, if the connection is
    /// tainted.
    pub(crate) fn check_sender(&self) -> Result<(), Status> {
        match self.foreign() {
            None => Ok(()),
            Some(foreign) => Err(self.foreign_refusal(foreign)),
        }
    }

    fn foreign_refusal(&self, foreign: ForeignSender) -> Status {
        let pinned = self
            .pinned
            .map_or_else(|| "an unseen pid".to_owned(), |p| format!("pid {p}"));
        let writer = match (foreign.pid, foreign.uid) {
            (0, _) => "a process the agent cannot identify (another pid namespace?)".to_owned(),
            (pid, Some(uid)) => format!("pid {pid} (uid {uid})"),
            (pid, None) => format!("pid {pid}"),
        };
        Status::permission_denied(format!(
            "a request on this connection was written by {writer}, not by {pinned} which connected: each process must open its own connection to the Workload API"
        ))
    }

    /// Records that the connection's PING came back (the bytes were read
    /// with [`Self::wrote`] first, so a foreign echo taints the connection).
    pub(crate) fn answered(&self) {
        self.answered
            .send_if_modified(|answered| !std::mem::replace(answered, true));
    }

    /// Waits until the process that connected has echoed the agent's PING,
    /// at most `timeout`; `PermissionDenied` when it has not by then.
    pub(crate) async fn challenge_answered(&self, timeout: Duration) -> Result<(), Status> {
        let mut answered = self.answered.subscribe();
        if let Ok(Ok(_)) = tokio::time::timeout(timeout, answered.wait_for(|a| *a)).await {
            return Ok(());
        }
        let pinned = self.pinned.map_or_else(
            || "the process that connected".to_owned(),
            |p| format!("process {p}"),
        );
        Err(Status::permission_denied(format!(
            "{pinned} did not answer the agent's HTTP/2 PING on this connection within {} (workload.challenge_timeout): every HTTP/2 client answers it unasked; a request written by a program that has since executed another one is never answered",
            humantime::format_duration(timeout)
        )))
    }

    /// Resolves once the connection is tainted, with the refusal.
    pub(crate) async fn tainted(&self) -> Status {
        let mut rx = self.foreign.subscribe();
        let foreign = match rx.wait_for(Option::is_some).await {
            Ok(seen) => *seen,
            // The sender lives as long as `self`: never reached.
            Err(_) => None,
        };
        match foreign {
            Some(foreign) => self.foreign_refusal(foreign),
            None => std::future::pending().await,
        }
    }

    /// Marks a request in flight until the guard drops.
    pub(crate) fn begin(self: &Arc<Self>) -> Active {
        self.active.fetch_add(1, Ordering::AcqRel);
        Active {
            connection: self.clone(),
        }
    }

    /// Opens a stream: counts against the uid's stream limit and keeps the
    /// connection active until the guard drops.
    pub(crate) fn open_stream(self: &Arc<Self>) -> Result<StreamSlot, Status> {
        let slot = self.limits.stream(self.uid)?;
        Ok(StreamSlot {
            _slot: slot,
            _active: self.begin(),
        })
    }

    /// When the connection becomes idle for `timeout`, as of now: `None`
    /// while something is in flight.
    pub(crate) fn idle_deadline(&self, timeout: Duration) -> Option<Instant> {
        if self.active.load(Ordering::Acquire) > 0 {
            return None;
        }
        let since = *self
            .idle_since
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        Some(since + timeout)
    }
}

/// A request in flight (see [`ConnectionState::begin`]).
#[derive(Debug)]
pub(crate) struct Active {
    connection: Arc<ConnectionState>,
}

impl Drop for Active {
    fn drop(&mut self) {
        let mut since = self
            .connection
            .idle_since
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        *since = Instant::now();
        self.connection.active.fetch_sub(1, Ordering::AcqRel);
    }
}

/// An open stream (see [`ConnectionState::open_stream`]).
#[derive(Debug)]
pub(crate) struct StreamSlot {
    _slot: Slot,
    _active: Active,
}

/// Per-uid counts of open connections and streams, and their limits.
#[derive(Debug)]
pub struct UidLimits {
    max_connections: usize,
    max_streams: usize,
    counts: Mutex<HashMap<(Kind, u32), usize>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Kind {
    Connection,
    Stream,
}

impl UidLimits {
    /// At most `max_connections` connections and `max_streams` streams per uid.
    pub fn new(max_connections: usize, max_streams: usize) -> Arc<Self> {
        Arc::new(Self {
            max_connections,
            max_streams,
            counts: Mutex::new(HashMap::new()),
        })
    }

    /// A connection slot for `uid`, or `None` when it holds its limit.
    pub(crate) fn connection(self: &Arc<Self>, uid: u32) -> Option<Slot> {
        self.take(Kind::Connection, uid, self.max_connections)
    }

    /// A stream slot for `uid`, or `ResourceExhausted` naming the limit.
    fn stream(self: &Arc<Self>, uid: u32) -> Result<Slot, Status> {
        self.take(Kind::Stream, uid, self.max_streams)
            .ok_or_else(|| {
                Status::resource_exhausted(format!(
                    "uid {uid} already has {} open Workload API streams, the most workload.max_streams_per_uid allows: close streams that are no longer read, or raise the limit in agent.toml",
                    self.max_streams
                ))
            })
    }

    /// Open connections (`Kind::Connection`) of `uid`.
    pub fn connections(&self, uid: u32) -> usize {
        self.count(Kind::Connection, uid)
    }

    /// Open streams of `uid`.
    pub fn streams(&self, uid: u32) -> usize {
        self.count(Kind::Stream, uid)
    }

    /// The connection limit per uid.
    pub fn max_connections(&self) -> usize {
        self.max_connections
    }

    fn count(&self, kind: Kind, uid: u32) -> usize {
        self.lock().get(&(kind, uid)).copied().unwrap_or(0)
    }

    fn take(self: &Arc<Self>, kind: Kind, uid: u32, max: usize) -> Option<Slot> {
        let mut counts = self.lock();
        let count = counts.entry((kind, uid)).or_insert(0);
        if *count >= max {
            return None;
        }
        *count += 1;
        Some(Slot {
            limits: self.clone(),
            kind,
            uid,
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<(Kind, u32), usize>> {
        self.counts
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// One open connection or stream of a uid; released on drop.
#[derive(Debug)]
pub(crate) struct Slot {
    limits: Arc<UidLimits>,
    kind: Kind,
    uid: u32,
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut counts = self.limits.lock();
        if let Some(count) = counts.get_mut(&(self.kind, self.uid)) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                counts.remove(&(self.kind, self.uid));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_foreign_writer_taints_the_connection_for_good() {
        let state = ConnectionState::new(Some(100), 0, UidLimits::new(1, 1));
        state.wrote(Some((100, 0)));
        assert!(state.check_sender().is_ok());
        state.wrote(Some((101, 65534)));
        state.wrote(Some((102, 0)));
        state.wrote(Some((100, 0)));
        let err = state.check_sender().unwrap_err();
        assert_eq!(err.code(), tonic::Code::PermissionDenied);
        assert!(
            err.message()
                .contains("written by pid 101 (uid 65534), not by pid 100 which connected"),
            "{}",
            err.message()
        );
    }

    #[test]
    fn bytes_without_credentials_are_foreign() {
        let state = ConnectionState::new(Some(100), 0, UidLimits::new(1, 1));
        state.wrote(None);
        assert!(
            state
                .check_sender()
                .unwrap_err()
                .message()
                .contains("cannot identify")
        );
    }

    #[test]
    fn slots_are_counted_per_uid_and_returned() {
        let limits = UidLimits::new(2, 1);
        let a = limits.connection(7).unwrap();
        let _b = limits.connection(7).unwrap();
        assert!(limits.connection(7).is_none());
        assert!(
            limits.connection(8).is_some(),
            "another uid is not affected"
        );
        drop(a);
        assert!(limits.connection(7).is_some());
        let state = Arc::new(ConnectionState::new(Some(1), 7, limits.clone()));
        let stream = state.open_stream().unwrap();
        let err = state.open_stream().unwrap_err();
        assert_eq!(err.code(), tonic::Code::ResourceExhausted);
        assert!(err.message().contains("workload.max_streams_per_uid"));
        assert!(state.idle_deadline(Duration::from_secs(1)).is_none());
        drop(stream);
        assert_eq!(limits.streams(7), 0);
        assert!(state.idle_deadline(Duration::from_secs(1)).is_some());
    }
}
