//! Workload API refusals the agent decides itself, reported to the issuer's
//! audit log (`ReportRefusals`).
//!
//! The issuer audits every request it refuses, but many refusals happen on
//! the node before the issuer is asked: a process writing on another's
//! connection, an unanswered liveness challenge, an exec since connecting,
//! a path the workload cannot read, a walk, budget or stream limit, a
//! revocation enforced on the node. Those are the traces of an attack on
//! the node, so they belong in the central audit log too. The agent
//! gathers them, counting alike ones (same kind, call, uid, executable and
//! reason), and sends what it has every [`REPORT_INTERVAL`]. Memory is
//! bounded: at most [`MAX_PENDING`] distinct refusals wait; beyond that
//! they are counted per kind and call under one overflow entry. A report
//! the issuer does not take (unreachable) is kept for the next one, within
//! the same bound.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tonic::Status;

use hallmark_proto::node::{AgentRefusal, ReportRefusalsRequest};

use super::{Inner, signalled};

/// How often pending refusals are sent.
pub(crate) const REPORT_INTERVAL: Duration = Duration::from_secs(2);
/// Most distinct refusals waiting (the issuer takes 256 per report).
pub(crate) const MAX_PENDING: usize = 256;
/// Most bytes of a reason kept (what the issuer keeps).
const MAX_REASON_BYTES: usize = 512;
/// The reason of the overflow entries.
const OVERFLOW_REASON: &str =
    "more refusals of this kind than the agent could report one by one: see the agent's log";

/// What refused on the agent (the report's `kind`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum RefusedBy {
    /// Another process wrote on the connection.
    Sender,
    /// The liveness challenge was not answered.
    Challenge,
    /// The process exec'd since it connected.
    Exec,
    /// The evidence could not be gathered (unreadable path, gone, ...).
    Evidence,
    /// A walk, budget, connection or stream limit.
    Limit,
    /// A revocation in force on the node.
    Revoked,
}

impl RefusedBy {
    /// The name in the report and the audit record.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            RefusedBy::Sender => "sender",
            RefusedBy::Challenge => "challenge",
            RefusedBy::Exec => "exec",
            RefusedBy::Evidence => "evidence",
            RefusedBy::Limit => "limit",
            RefusedBy::Revoked => "revoked",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Key {
    kind: RefusedBy,
    call: &'static str,
    uid: u32,
    exe_path: String,
    reason: String,
}

/// Refusals waiting to be reported.
#[derive(Debug, Default)]
pub(crate) struct RefusalReports {
    pending: std::sync::Mutex<HashMap<Key, (i32, u64)>>,
}

impl RefusalReports {
    /// Counts one refusal of `call` (`x509`, `jwt`) for process `pid`.
    pub(crate) fn record(
        &self,
        kind: RefusedBy,
        call: &'static str,
        pid: i32,
        uid: u32,
        status: &Status,
    ) {
        let exe_path = std::fs::read_link(format!("/proc/{pid}/exe"))
            .map(|p| p.display().to_string())
            .unwrap_or_default();
        let reason = format!("{:?}: {}", status.code(), status.message());
        let mut key = Key {
            kind,
            call,
            uid,
            exe_path,
            reason: cut(reason, MAX_REASON_BYTES),
        };
        let mut pending = self.lock();
        if !pending.contains_key(&key) && pending.len() >= MAX_PENDING {
            key = Key {
                kind,
                call,
                uid: 0,
                exe_path: String::new(),
                reason: OVERFLOW_REASON.to_owned(),
            };
        }
        let entry = pending.entry(key).or_insert((pid, 0));
        entry.0 = pid;
        entry.1 += 1;
    }

    /// Takes what is pending, as report entries.
    pub(crate) fn take(&self) -> Vec<AgentRefusal> {
        self.lock()
            .drain()
            .map(|(key, (pid, count))| AgentRefusal {
                kind: key.kind.as_str().to_owned(),
                call: key.call.to_owned(),
                reason: key.reason,
                uid: key.uid,
                pid,
                exe_path: key.exe_path,
                count,
            })
            .collect()
    }

    /// Puts back a report the issuer did not take, within the bound.
    fn restore(&self, refusals: Vec<AgentRefusal>) {
        let mut pending = self.lock();
        for r in refusals {
            let Some(kind) = kind_of(&r.kind) else {
                continue;
            };
            let call = if r.call == "jwt" { "jwt" } else { "x509" };
            let key = Key {
                kind,
                call,
                uid: r.uid,
                exe_path: r.exe_path,
                reason: r.reason,
            };
            if pending.len() >= MAX_PENDING && !pending.contains_key(&key) {
                continue;
            }
            let entry = pending.entry(key).or_insert((r.pid, 0));
            entry.1 += r.count;
        }
    }

    /// How many distinct refusals wait.
    #[cfg(test)]
    pub(crate) fn pending(&self) -> usize {
        self.lock().len()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Key, (i32, u64)>> {
        self.pending
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

fn kind_of(name: &str) -> Option<RefusedBy> {
    [
        RefusedBy::Sender,
        RefusedBy::Challenge,
        RefusedBy::Exec,
        RefusedBy::Evidence,
        RefusedBy::Limit,
        RefusedBy::Revoked,
    ]
    .into_iter()
    .find(|k| k.as_str() == name)
}

/// `s` cut to at most `max` bytes, at a character boundary.
fn cut(mut s: String, max: usize) -> String {
    if s.len() > max {
        let mut end = max;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        s.truncate(end);
    }
    s
}

impl Inner {
    /// Sends pending refusals every [`REPORT_INTERVAL`] until shutdown, and
    /// once more at shutdown.
    pub(crate) async fn report_loop(self: Arc<Self>, mut shutdown: watch::Receiver<bool>) {
        loop {
            let stop = tokio::select! {
                () = tokio::time::sleep(REPORT_INTERVAL) => false,
                () = signalled(&mut shutdown) => true,
            };
            self.send_refusals().await;
            if stop {
                return;
            }
        }
    }

    async fn send_refusals(&self) {
        let refusals = self.refusals.take();
        if refusals.is_empty() {
            return;
        }
        let sent = match self.node_client().await {
            Ok(mut client) => client
                .report_refusals(ReportRefusalsRequest {
                    refusals: refusals.clone(),
                })
                .await
                .map(|_| ()),
            Err(status) => Err(status),
        };
        if let Err(status) = sent {
            tracing::warn!(
                code = ?status.code(),
                error = %status.message(),
                refusals = refusals.len(),
                "could not report workload refusals to the issuer: kept for the next report"
            );
            self.refusals.restore(refusals);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn alike_refusals_are_counted_and_the_pending_set_is_bounded() {
        let reports = RefusalReports::default();
        let denied = Status::permission_denied("no");
        for _ in 0..3 {
            reports.record(RefusedBy::Sender, "x509", 7, 1000, &denied);
        }
        reports.record(RefusedBy::Sender, "jwt", 7, 1000, &denied);
        let mut taken = reports.take();
        taken.sort_by(|a, b| a.call.cmp(&b.call));
        assert_eq!(taken.len(), 2);
        assert_eq!(
            (
                taken[1].call.as_str(),
                taken[1].count,
                taken[1].kind.as_str()
            ),
            ("x509", 3, "sender")
        );
        assert_eq!(taken[1].reason, "PermissionDenied: no");
        assert_eq!(reports.pending(), 0);

        for uid in 0..(MAX_PENDING as u32 + 50) {
            reports.record(RefusedBy::Limit, "x509", 1, uid, &denied);
        }
        // MAX_PENDING distinct ones, then one overflow entry counting the rest.
        assert_eq!(reports.pending(), MAX_PENDING + 1);
        let overflow: Vec<_> = reports
            .take()
            .into_iter()
            .filter(|r| r.reason == OVERFLOW_REASON)
            .collect();
        assert_eq!(overflow.len(), 1);
        assert_eq!(overflow[0].count, 50);

        // A report the issuer did not take comes back, counts kept.
        reports.record(RefusedBy::Exec, "x509", 1, 5, &denied);
        let taken = reports.take();
        reports.restore(taken.clone());
        reports.restore(taken);
        assert_eq!(reports.take()[0].count, 2);
    }

    #[test]
    fn reasons_are_cut_at_a_character_boundary() {
        let long = "é".repeat(MAX_REASON_BYTES);
        // An odd limit falls inside a two-byte character.
        let max = MAX_REASON_BYTES - 1;
        let cut = cut(long, max);
        assert_eq!(cut.len(), max - 1);
        assert!(cut.chars().all(|c| c == 'é'));
    }
}
