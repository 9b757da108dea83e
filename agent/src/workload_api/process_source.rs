//! The default evidence source: the `/proc` process attestor.

use hallmark_attestors::tree::TreeLimits;
use hallmark_attestors::workload::{AttestError, ProcRoot, ProcessAttestor, Request};
use hallmark_proto::node::{TreeEvidence, WorkloadEvidence};

use super::evidence::{AttestationHints, Caller, EvidenceError, EvidenceSource};

/// Measures callers through `/proc`.
#[derive(Debug)]
pub struct ProcessEvidence {
    attestor: ProcessAttestor,
}

impl ProcessEvidence {
    /// Reads `proc` with hashing `limits`.
    pub fn new(proc: ProcRoot, limits: TreeLimits) -> Self {
        Self {
            attestor: ProcessAttestor::new(proc, limits),
        }
    }
}

impl Default for ProcessEvidence {
    fn default() -> Self {
        Self::new(ProcRoot::default(), TreeLimits::default())
    }
}

impl EvidenceSource for ProcessEvidence {
    fn evidence(
        &self,
        caller: &Caller,
        hints: &AttestationHints,
    ) -> Result<WorkloadEvidence, EvidenceError> {
        let request = Request {
            env_names: hints.env_names.clone(),
            app_paths: hints
                .path_hints
                .iter()
                .map(|(code, h)| (code.clone(), h.app_paths.clone()))
                .collect(),
            model_paths: hints
                .path_hints
                .iter()
                .map(|(code, h)| (code.clone(), h.model_paths.clone()))
                .collect(),
        };
        let evidence = self
            .attestor
            .attest(caller.pid, &request)
            .map_err(|e| match e {
                AttestError::ProcessGone { .. } | AttestError::ProcessChanged { .. } => {
                    EvidenceError::ProcessGone
                }
                AttestError::TooLarge { .. } => EvidenceError::ResourceExhausted {
                    uid: caller.uid,
                    detail: e.to_string(),
                },
                other => EvidenceError::Failed(other.to_string()),
            })?;
        // The socket's peer credentials and /proc must agree.
        if evidence.uid != caller.uid {
            return Err(EvidenceError::ProcessGone);
        }
        let tree = |t: hallmark_attestors::workload::TreeEvidence| TreeEvidence {
            dir: t.dir,
            digest: t.digest,
            files: vec![],
        };
        Ok(WorkloadEvidence {
            pid: u32::try_from(evidence.pid).unwrap_or(0),
            uid: evidence.uid,
            gid: evidence.gid,
            supplementary_gids: evidence.supplementary_gids,
            exe_path: evidence.exe_path,
            exe_sha256: evidence.exe_sha256,
            start_time: evidence.start_time,
            app: evidence.app.map(tree),
            model: evidence.model.map(tree),
            env: evidence.env.into_iter().collect(),
            cgroup_path: evidence.cgroup_path,
            container_id: evidence.container_id.unwrap_or_default(),
        })
    }

    fn alive(&self, caller: &Caller, evidence: &WorkloadEvidence) -> bool {
        self.attestor.alive(caller.pid, evidence.start_time)
    }
}
