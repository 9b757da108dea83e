//! `ReportRefusals`: Workload API requests an agent refused itself.
//!
//! The issuer never sees these requests (the agent refused them before
//! asking it), so without a report the central audit log would not show an
//! attack on a node's Workload API at all. What an agent reports is what it
//! says: the record names the node (authenticated by its node SVID) as the
//! source. Each report is checked (bounded sizes, known kinds) and recorded
//! through the refusal limiter, which bounds what one node can write.

use tonic::Status;

use hallmark_proto::node::{AgentRefusal, ReportRefusalsRequest, ReportRefusalsResponse};

use super::{NodeApi, audit_status};
use crate::events::SecurityEvent;
use crate::events::limit::truncate;
use crate::store::NodeRecord;

/// Most refusals one report may carry.
pub(crate) const MAX_REFUSALS_PER_REPORT: usize = 256;
/// Most bytes of a refusal's reason kept (cut at a character boundary).
pub(crate) const MAX_REASON_BYTES: usize = 512;
/// Most bytes of an executable path kept.
const MAX_PATH_BYTES: usize = 512;
/// What may refuse on an agent.
pub(crate) const REFUSAL_KINDS: [&str; 6] = [
    "sender",
    "challenge",
    "exec",
    "evidence",
    "limit",
    "revoked",
];
/// The Workload API calls that can be refused.
const CALLS: [&str; 2] = ["x509", "jwt"];

impl NodeApi {
    /// Records each refusal of `request` as a `workload_refused` event and
    /// answers once the records are durable.
    pub(crate) async fn report_refusals(
        &self,
        agent: &NodeRecord,
        request: ReportRefusalsRequest,
    ) -> Result<ReportRefusalsResponse, Status> {
        if request.refusals.len() > MAX_REFUSALS_PER_REPORT {
            return Err(Status::invalid_argument(format!(
                "a report carries {} refusals, more than {MAX_REFUSALS_PER_REPORT}: send them in several reports",
                request.refusals.len()
            )));
        }
        let events = request
            .refusals
            .into_iter()
            .map(|refusal| event_of(agent, refusal))
            .collect::<Result<Vec<_>, Status>>()?;
        let records: Vec<_> = events.into_iter().map(|e| self.events.record(e)).collect();
        for record in records {
            record
                .await
                .map_err(|e| audit_status("reported workload refusals", &e))?;
        }
        Ok(ReportRefusalsResponse {})
    }
}

/// The audit event for one reported refusal, or `InvalidArgument` naming
/// what is wrong with it.
fn event_of(agent: &NodeRecord, refusal: AgentRefusal) -> Result<SecurityEvent, Status> {
    if !REFUSAL_KINDS.contains(&refusal.kind.as_str()) {
        return Err(Status::invalid_argument(format!(
            "unknown refusal kind {:?}: expected one of {}",
            truncate(&refusal.kind, 64),
            REFUSAL_KINDS.join(", ")
        )));
    }
    if !CALLS.contains(&refusal.call.as_str()) {
        return Err(Status::invalid_argument(format!(
            "unknown Workload API call {:?}: expected one of {}",
            truncate(&refusal.call, 64),
            CALLS.join(", ")
        )));
    }
    if refusal.count == 0 {
        return Err(Status::invalid_argument(
            "a refusal's count must be at least 1",
        ));
    }
    Ok(SecurityEvent::WorkloadRefused {
        node: agent.spiffe_id.clone(),
        refused_by: refusal.kind,
        call: refusal.call,
        reason: truncate(&refusal.reason, MAX_REASON_BYTES).to_owned(),
        uid: refusal.uid,
        pid: refusal.pid,
        exe_path: Some(truncate(&refusal.exe_path, MAX_PATH_BYTES))
            .filter(|p| !p.is_empty())
            .map(str::to_owned),
        count: refusal.count,
    })
}
