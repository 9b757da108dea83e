//! Stopping a measurement whose caller went away.
//!
//! The agent measures on a blocking thread while the request that asked
//! for it lives on the async side. When the client disconnects, the request
//! future is dropped; a [`CancelGuard`] it holds then sets the shared flag,
//! and the walk, which checks the flag for every listed entry, before every
//! file and before every read chunk (at most 256 KiB), stops with
//! [`AttestError::Cancelled`](super::AttestError::Cancelled). Bytes charged
//! for a file but not read are refunded to the uid's budget.
//!
//! ```
//! use hallmark_attestors::workload::Cancel;
//! let cancel = Cancel::default();
//! let guard = cancel.guard();
//! assert!(!cancel.is_cancelled());
//! drop(guard); // the request future went away
//! assert!(cancel.is_cancelled());
//! ```

use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

/// A flag shared between a request and the measurement it started.
#[derive(Debug, Clone, Default)]
pub struct Cancel(Arc<AtomicBool>);

impl Cancel {
    /// Asks the measurement to stop.
    pub fn cancel(&self) {
        self.0.store(true, Ordering::Relaxed);
    }

    /// Whether the measurement should stop.
    pub fn is_cancelled(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }

    /// A guard that cancels when dropped: held by the request future, so
    /// a dropped request stops its measurement.
    pub fn guard(&self) -> CancelGuard {
        CancelGuard(self.clone())
    }

    /// `Err` once cancelled, for the `?` in a walk.
    pub(crate) fn check(&self) -> io::Result<()> {
        if self.is_cancelled() {
            Err(cancelled_error())
        } else {
            Ok(())
        }
    }
}

/// Cancels its [`Cancel`] when dropped.
#[derive(Debug)]
pub struct CancelGuard(Cancel);

impl Drop for CancelGuard {
    fn drop(&mut self) {
        self.0.cancel();
    }
}

/// The I/O error a walk stops with when cancelled.
pub(crate) fn cancelled_error() -> io::Error {
    io::Error::other(Cancelled)
}

/// Whether `error` is the cancellation of a walk.
pub(crate) fn is_cancelled(error: &io::Error) -> bool {
    error.get_ref().is_some_and(|e| e.is::<Cancelled>())
}

/// Marks an I/O error raised because the caller went away.
#[derive(Debug)]
struct Cancelled;

impl std::fmt::Display for Cancelled {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("the caller went away: measurement stopped")
    }
}

impl std::error::Error for Cancelled {}
