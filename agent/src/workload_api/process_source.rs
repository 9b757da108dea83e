//! The default evidence source: the `/proc` process attestor.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use hallmark_attestors::workload::cmdline::Dialect;
use hallmark_attestors::workload::program::ProgramEvidence;
use hallmark_attestors::workload::{
    AttestError, Cancel, FileCache, HashBudget, ProcRoot, ProcessAttestor, Request,
};
use hallmark_proto::node::{
    FileDigest, LoadedCode, MainProgram, ModelLoaded, TreeEvidence, WorkloadEvidence,
};

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
            // Dialects this agent does not know are left out: the issuer
            // then finds no program evidence for them and refuses.
            interpreters: hints
                .path_hints
                .iter()
                .filter(|(_, h)| !h.interpreters.is_empty())
                .map(|(code, h)| {
                    let dialects = h
                        .interpreters
                        .iter()
                        .filter_map(|d| Dialect::parse(d))
                        .collect();
                    (code.clone(), dialects)
                })
                .collect(),
            require_loaded: hints
                .path_hints
                .iter()
                .filter(|(_, h)| h.require_loaded)
                .map(|(code, _)| code.clone())
                .collect(),
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
        let program = |p: ProgramEvidence| MainProgram {
            dialect: p.dialect.as_str().to_owned(),
            kind: p.kind.map(|k| k.as_str().to_owned()).unwrap_or_default(),
            path: p.path,
            in_app_tree: p.in_app_tree,
            outside_app_tree: p.outside,
            flags: p.flags.iter().map(char::to_string).collect(),
            detail: p.detail,
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
            programs: evidence.programs.into_iter().map(program).collect(),
            loaded_code: evidence.loaded_code.map(|code| LoadedCode {
                unprotected: code
                    .unprotected
                    .into_iter()
                    .map(|f| FileDigest {
                        path: f.path,
                        sha256: f.sha256,
                    })
                    .collect(),
            }),
            loader_env: evidence.loader_env.into_iter().collect(),
            model_loaded: evidence.model_loaded.map(|m| ModelLoaded {
                weight_files: u32::try_from(m.weight_files).unwrap_or(u32::MAX),
                not_loaded: m.not_loaded,
            }),
        })
    }

    fn alive(&self, caller: &Caller, evidence: &WorkloadEvidence) -> bool {
        self.attestor.alive(&caller.process, evidence.start_time)
    }

    fn may_read_executable(&self, caller: &Caller) -> bool {
        self.attestor.may_read_executable(&caller.process)
    }
}
