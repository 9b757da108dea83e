//! The default evidence source: the `/proc` process attestor.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use hallmark_attestors::workload::{
    AttestError, Cancel, FileCache, HashBudget, ProcRoot, ProcessAttestor, Request,
};
use hallmark_proto::node::{TreeEvidence, WorkloadEvidence};

use super::evidence::{AttestationHints, Caller, EvidenceError, EvidenceSource};
use crate::config::WorkloadSettings;

/// Measures callers through `/proc`.
#[derive(Debug)]
pub struct ProcessEvidence {
    attestor: ProcessAttestor,
    /// Measurements running now.
    running: AtomicUsize,
    /// Measurements stopped because their caller went away.
    cancelled: AtomicU64,
}

impl ProcessEvidence {
    /// Reads `proc` with the attestors, limits, budget and cache size of
    /// `settings`.
    pub fn new(proc: ProcRoot, settings: &WorkloadSettings) -> Self {
        Self::with_cache(proc, settings, FileCache::default())
    }

    /// [`Self::new`] with a given file cache (tests and benchmarks pass one
    /// that trusts freshly written files), sized by `settings`.
    pub fn with_cache(proc: ProcRoot, settings: &WorkloadSettings, cache: FileCache) -> Self {
        Self {
            attestor: ProcessAttestor::new(proc, settings.limits)
                .with_attestors(settings.attestors.clone())
                .with_budget(
                    HashBudget::new(settings.hash_budget, settings.hash_budget_window)
                        .with_entry_cost(settings.hash_entry_cost),
                )
                .with_cache(cache.with_capacity(settings.cache_entries)),
            running: AtomicUsize::new(0),
            cancelled: AtomicU64::new(0),
        }
    }

    /// Measurements running now.
    pub fn running(&self) -> usize {
        self.running.load(Ordering::Relaxed)
    }

    /// Measurements stopped so far because their caller went away.
    pub fn cancelled(&self) -> u64 {
        self.cancelled.load(Ordering::Relaxed)
    }

    /// The attestor (its cache and budget statistics).
    pub fn attestor(&self) -> &ProcessAttestor {
        &self.attestor
    }
}

impl Default for ProcessEvidence {
    fn default() -> Self {
        Self::new(ProcRoot::default(), &WorkloadSettings::default())
    }
}

impl EvidenceSource for ProcessEvidence {
    fn evidence(
        &self,
        caller: &Caller,
        hints: &AttestationHints,
        cancel: &Cancel,
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
            cancel: cancel.clone(),
        };
        self.running.fetch_add(1, Ordering::Relaxed);
        let measured = self.attestor.attest(&caller.process, &request);
        self.running.fetch_sub(1, Ordering::Relaxed);
        if matches!(measured, Err(AttestError::Cancelled)) {
            self.cancelled.fetch_add(1, Ordering::Relaxed);
            tracing::info!(
                pid = caller.pid,
                uid = caller.uid,
                "caller went away: measurement stopped"
            );
        }
        let evidence = measured.map_err(|e| match e {
            AttestError::ProcessGone { .. } => EvidenceError::ProcessGone,
            AttestError::ProcessChanged { .. } => EvidenceError::ProcessReplaced,
            AttestError::Cancelled => EvidenceError::Cancelled,
            AttestError::TooLarge { .. }
            | AttestError::TreeTooLarge { .. }
            | AttestError::BudgetExhausted(_) => EvidenceError::ResourceExhausted {
                uid: caller.uid,
                detail: e.to_string(),
            },
            other => EvidenceError::Failed(other.to_string()),
        })?;
        // The socket's peer credentials and /proc must agree.
        if evidence.uid != caller.uid {
            return Err(EvidenceError::ProcessReplaced);
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
        self.attestor.alive(&caller.process, evidence.start_time)
    }
}
