//! The audit log over the admin API: `ReadAudit` (tail, export, verify),
//! `AuditKey`, `CheckpointAudit`.
//!
//! The issuer only serves the log; verification happens in the CLI, with a
//! key the operator may pin, so that an issuer (or a database) that lies
//! cannot make its own history look verified.

use std::pin::Pin;

use futures::Stream;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Status;

use hallmark_proto::admin::{
    AuditEntry, AuditKeyResponse, CheckpointAuditResponse, ReadAuditRequest, audit_entry,
    read_audit_request,
};

use super::AdminApi;
use crate::audit::{AuditError, AuditLog, Entry, Merge};

/// The `ReadAudit` stream.
pub(crate) type AuditStream = Pin<Box<dyn Stream<Item = Result<AuditEntry, Status>> + Send>>;

impl AdminApi {
    /// `ReadAudit`: the stream, and what the audit record says was read.
    pub(super) fn read_audit(
        &self,
        request: &ReadAuditRequest,
    ) -> Result<(AuditStream, String), Status> {
        let log = self.audit.clone();
        // The snapshot ends at what is durable now, before this call's own
        // record is written: an export is exactly the history before it.
        let durable = log.state().durable;
        let (from, what) = match &request.start {
            None => (1, "from seq 1".to_owned()),
            Some(read_audit_request::Start::SinceSeq(seq)) => {
                ((*seq).max(1), format!("from seq {seq}"))
            }
            Some(read_audit_request::Start::Last(n)) => (
                durable.saturating_sub(*n).saturating_add(1),
                format!("last {n}"),
            ),
            Some(read_audit_request::Start::SinceTime(text)) => {
                let time = humantime::parse_rfc3339_weak(text).map_err(|e| {
                    Status::invalid_argument(format!(
                        "since_time {text:?} is not an RFC 3339 time ({e}): write e.g. 2026-01-01T00:00:00Z"
                    ))
                })?;
                let seq = log.first_seq_at(time).map_err(read_status)?;
                (seq, format!("since {text} (seq {seq})"))
            }
        };
        let follow = request.follow;
        let (tx, rx) = mpsc::channel(64);
        let until = if follow {
            Until::Live
        } else {
            // Checkpoints signed after this call are left out with their
            // records; every checkpoint already stored is served, even one
            // beyond the newest record (that is what truncation looks like).
            let stored = log.last_stored_checkpoint().map_err(read_status)?;
            Until::Fixed {
                records: if request.signed_only {
                    durable.min(log.state().checkpointed)
                } else {
                    durable
                },
                checkpoints: durable.max(stored),
            }
        };
        tokio::spawn(serve(log, from, until, tx));
        let outcome = format!(
            "read audit log {what}{}",
            if follow {
                ", following"
            } else if request.signed_only {
                ", up to the newest checkpoint"
            } else {
                ""
            }
        );
        Ok((Box::pin(ReceiverStream::new(rx)), outcome))
    }

    /// `AuditKey`.
    pub(super) fn audit_key(&self) -> AuditKeyResponse {
        let key = self.audit.public_key();
        AuditKeyResponse {
            public_key_pem: key.to_pem(),
            key_id: key.keyid().to_owned(),
            algorithm: key.algorithm().to_string(),
        }
    }

    /// `CheckpointAudit`: signs now, or reports the newest checkpoint.
    pub(super) async fn checkpoint_audit(&self) -> Result<CheckpointAuditResponse, Status> {
        let created = self.audit.checkpoint().await.map_err(read_status)?;
        let (newest, made) = match created {
            Some(signed) => (Some(signed.encode()), true),
            None => (
                self.audit
                    .checkpoints(self.audit.state().checkpointed)
                    .map_err(read_status)?
                    .into_iter()
                    .next()
                    .map(|(_, bytes)| bytes),
                false,
            ),
        };
        Ok(CheckpointAuditResponse {
            created: made,
            checkpoint: newest.unwrap_or_default(),
        })
    }
}

/// How far a `ReadAudit` stream reads.
#[derive(Debug, Clone, Copy)]
enum Until {
    /// Records and checkpoints up to these sequence numbers, then the
    /// stream ends.
    Fixed {
        /// Last record.
        records: u64,
        /// Last checkpoint.
        checkpoints: u64,
    },
    /// Everything that becomes durable, until the issuer stops.
    Live,
}

async fn serve(
    log: AuditLog,
    from: u64,
    until: Until,
    tx: mpsc::Sender<Result<AuditEntry, Status>>,
) {
    let mut state = log.subscribe();
    let mut merge = Merge::new(from);
    loop {
        let now = *state.borrow_and_update();
        let (records, checkpoints) = match until {
            Until::Fixed {
                records,
                checkpoints,
            } => (records, checkpoints),
            Until::Live => (now.durable, now.durable),
        };
        loop {
            let (entries, done) = match merge.next_page(&log, records, checkpoints) {
                Ok(page) => page,
                Err(error) => {
                    let _ = tx.send(Err(read_status(error))).await;
                    return;
                }
            };
            for entry in entries {
                if tx.send(Ok(to_proto(entry))).await.is_err() {
                    return;
                }
            }
            if done {
                break;
            }
        }
        if matches!(until, Until::Fixed { .. }) {
            return;
        }
        if now.stopping {
            let _ = tx
                .send(Err(Status::unavailable("the issuer is shutting down")))
                .await;
            return;
        }
        tokio::select! {
            changed = state.changed() => if changed.is_err() { return },
            () = tx.closed() => return,
        }
    }
}

fn to_proto(entry: Entry) -> AuditEntry {
    AuditEntry {
        entry: Some(match entry {
            Entry::Record(bytes) => audit_entry::Entry::Record(bytes),
            Entry::Checkpoint(bytes) => audit_entry::Entry::Checkpoint(bytes),
        }),
    }
}

/// A failure to read the log (the store) is transient.
fn read_status(error: AuditError) -> Status {
    tracing::error!(%error, "audit log read failed");
    Status::unavailable(format!("audit log unavailable: {error}"))
}
