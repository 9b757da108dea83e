//! The running audit log: appends hash-chained records under a short lock,
//! makes them durable with group commit, and signs checkpoints.

use std::future::Future;
use std::path::Path;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, SystemTime};

use serde_json::{Map, Value};
use tokio::sync::watch;

use hallmark_ca::clock::Clock;

use super::record::{
    AuditRecord, Checkpoint, CheckpointChain, RecordHash, SignedCheckpoint, encode_body,
    encode_with_body,
};
use super::witness::Witnesses;
use super::{AuditError, integrity, key};
use crate::events::{EventSink, Recorded, SecurityEvent};
use crate::image::{PublicKey, SigningKey};
use crate::store::{AnchorStore, Appended, AuditAnchor, AuditStore, Mark};

/// How many records one store read returns.
pub const PAGE: usize = 512;

/// How far the log has got.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LogState {
    /// Every record up to this sequence number is durable (0: none).
    pub durable: u64,
    /// The newest checkpoint covers records up to here (0: none).
    pub checkpointed: u64,
    /// The issuer is shutting down: followers of the log should end.
    pub stopping: bool,
}

/// The issuer's audit log. Cheap to clone; clones share one log.
///
/// Appending is synchronous and takes a short lock (sequence number, time,
/// previous hash, one store insert), so concurrent callers get gap-free,
/// strictly increasing sequence numbers. Durability is asynchronous: each
/// caller awaits a flush, and the first waiter's flush covers every record
/// appended before it started (group commit), so concurrent mints share
/// fsyncs instead of queueing for one each.
#[derive(Debug, Clone)]
pub struct AuditLog {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    store: Arc<dyn AuditStore>,
    clock: Arc<dyn Clock>,
    key: SigningKey,
    chain: Mutex<Chain>,
    /// What was verified at open.
    opened: integrity::Opened,
    /// The newest checkpoint signed (or verified at open).
    signed: Mutex<integrity::Signed>,
    /// The database the log is anchored to.
    anchor: OnceLock<Arc<dyn AnchorStore>>,
    /// Where checkpoints also go.
    witnesses: OnceLock<Arc<Witnesses>>,
    /// Why the log stopped for good, if it did.
    halted: OnceLock<String>,
    /// Held by the one caller flushing; the others queue behind it and
    /// usually find their record already durable.
    flushing: tokio::sync::Mutex<()>,
    /// One checkpoint at a time.
    checkpointing: tokio::sync::Mutex<()>,
    state: watch::Sender<LogState>,
}

#[derive(Debug)]
struct Chain {
    /// The next record's sequence number.
    next: u64,
    /// The next record's `prev`.
    head: RecordHash,
    /// Set when the store already held a record this log was about to
    /// write: something else writes to the log, so nothing more is appended.
    conflict: Option<u64>,
}

impl AuditLog {
    /// Opens the log of the issuer whose data directory is `data_dir`: loads
    /// `audit.key` there, or creates it if the log has never been signed.
    ///
    /// Refuses a key that did not sign the stored checkpoints, and a missing
    /// key when checkpoints exist: a new key would leave the signed history
    /// unverifiable, so the operator must restore the old one.
    pub fn open_in(
        data_dir: &Path,
        store: Arc<dyn AuditStore>,
        clock: Arc<dyn Clock>,
    ) -> Result<AuditLog, AuditError> {
        let path = key::key_path(data_dir);
        let signer = store
            .last_audit_checkpoint()?
            .and_then(|(_, bytes)| SignedCheckpoint::decode(&bytes).ok())
            .map(|c| c.checkpoint.key_id);
        let key = match (key::load(&path)?, signer) {
            (Some(key), Some(signer)) if key.keyid() != signer => {
                return Err(AuditError::KeyMismatch(format!(
                    "{} is audit key {} but the audit log's checkpoints are signed by key {signer}: restore the audit key that signed them",
                    path.display(),
                    key.keyid()
                )));
            }
            (Some(key), _) => key,
            (None, Some(signer)) => {
                return Err(AuditError::KeyMismatch(format!(
                    "{} is missing but the audit log's checkpoints are signed by key {signer}: restore it from a backup (a new key would leave the signed history unverifiable)",
                    path.display()
                )));
            }
            (None, None) => {
                let key = key::create(&path)?;
                tracing::info!(key_id = %key.keyid(), path = %path.display(), "created the audit key");
                key
            }
        };
        AuditLog::open(store, key, clock)
    }

    /// Opens the log on `store`, continuing its chain, with `key` signing
    /// checkpoints.
    ///
    /// Refuses a log that does not extend its newest signed checkpoint
    /// ([`AuditError::Tampered`], naming the sequence number): a checkpoint
    /// not signed by `key` or not chained to the one before it, records
    /// removed up to it, or records after it that do not chain on.
    pub fn open(
        store: Arc<dyn AuditStore>,
        key: SigningKey,
        clock: Arc<dyn Clock>,
    ) -> Result<AuditLog, AuditError> {
        let opened = integrity::verify_open(store.as_ref(), key.public_key())?;
        let (state, _) = watch::channel(LogState {
            durable: opened.next - 1,
            checkpointed: opened.signed.seq,
            stopping: false,
        });
        Ok(AuditLog {
            inner: Arc::new(Inner {
                store,
                clock,
                key,
                chain: Mutex::new(Chain {
                    next: opened.next,
                    head: opened.head,
                    conflict: None,
                }),
                opened,
                signed: Mutex::new(opened.signed),
                anchor: OnceLock::new(),
                witnesses: OnceLock::new(),
                halted: OnceLock::new(),
                flushing: tokio::sync::Mutex::new(()),
                checkpointing: tokio::sync::Mutex::new(()),
                state,
            }),
        })
    }

    /// Ties the log to the issuer's database (see [`crate::store::AnchorStore`]):
    /// checks the database's anchor against the log in both directions,
    /// then keeps the anchor current with every durable record and
    /// checkpoint. Call once, before the first record.
    pub fn anchor(&self, anchor: Arc<dyn AnchorStore>) -> Result<(), AuditError> {
        let inner = &self.inner;
        integrity::check_anchor(anchor.as_ref(), inner.store.as_ref(), &inner.opened)?;
        anchor.note_audit_anchor(integrity::current(&inner.opened));
        // Set once; a second call keeps the first database.
        let _ = inner.anchor.set(anchor);
        Ok(())
    }

    /// Sends every checkpoint signed from now on to `witnesses` too.
    pub fn witness(&self, witnesses: Arc<Witnesses>) {
        let _ = self.inner.witnesses.set(witnesses);
    }

    /// `Ok` while the log accepts records; otherwise why not (halted on
    /// tampering, or a write or sync failed and recovery has not succeeded
    /// yet). What `/ready` reports.
    pub fn health(&self) -> Result<(), String> {
        if let Some(why) = self.inner.halted_reason() {
            return Err(format!(
                "the audit log is halted: {why}; restart the issuer after restoring its data directory"
            ));
        }
        if let Some(why) = self.inner.store.audit_failure() {
            return Err(format!(
                "the audit journal cannot write ({why}); minting is refused until the disk accepts writes again"
            ));
        }
        Ok(())
    }

    /// Stops appending for good (until a restart): every record, and so
    /// every mint and admin change, is refused with `why`.
    pub fn halt(&self, why: &str) {
        self.inner.halt(why);
    }

    /// One round of upkeep: halts the log if its files or the database's
    /// were removed or replaced; tries to recover a journal whose write
    /// or sync failed. [`AuditLog::run_upkeep`] calls it every `every`.
    pub async fn upkeep(&self) {
        let inner = &self.inner;
        if inner.halted_reason().is_some() {
            return;
        }
        let files = inner.store.check_audit_files().and_then(|()| {
            inner
                .anchor
                .get()
                .map_or(Ok(()), |anchor| anchor.check_files())
        });
        if let Err(why) = files {
            inner.halt(&why);
            return;
        }
        if inner.store.audit_failure().is_some() {
            let store = inner.store.clone();
            match tokio::task::spawn_blocking(move || store.recover_audit()).await {
                Ok(Ok(_)) => {}
                Ok(Err(error)) => {
                    tracing::warn!(target: "hallmark::audit", %error, "the audit journal still cannot write; retrying");
                }
                Err(error) => {
                    tracing::error!(target: "hallmark::audit", %error, "audit recovery task failed")
                }
            }
        }
    }

    /// Runs [`AuditLog::upkeep`] every `every` until `shutdown`.
    pub async fn run_upkeep(self, every: Duration, shutdown: watch::Receiver<bool>) {
        let mut ticks = Ticks::new(every, shutdown);
        while ticks.next().await {
            self.upkeep().await;
        }
    }

    /// Appends `event` as the next record and returns its sequence number.
    /// The record is not durable yet: await [`AuditLog::durable`] (or use
    /// the [`EventSink`] implementation, which does both).
    pub fn append(&self, event: &SecurityEvent) -> Result<u64, AuditError> {
        let (kind, fields) = event
            .record_parts()
            .map_err(|e| AuditError::Encode(e.to_string()))?;
        let seq = self.append_parts(kind, fields)?;
        // `svid_minted` logs at debug only: skip its span too unless enabled.
        let minted = matches!(event, SecurityEvent::SvidMinted { .. });
        if !minted || tracing::enabled!(target: "hallmark::audit", tracing::Level::DEBUG) {
            let _span = tracing::info_span!("audit", seq).entered();
            crate::events::log_event(event);
        }
        Ok(seq)
    }

    fn append_parts(&self, kind: String, fields: Map<String, Value>) -> Result<u64, AuditError> {
        let inner = &self.inner;
        // Everything that does not depend on the record's place in the log
        // is encoded before the lock, to keep the lock short.
        let body = encode_body(&kind, &fields);
        let mut chain = inner.chain.lock().map_err(|_| AuditError::Poisoned)?;
        if let Some(why) = inner.halted_reason() {
            return Err(AuditError::Halted(why));
        }
        if let Some(seq) = chain.conflict {
            return Err(AuditError::Conflict(seq));
        }
        let seq = chain.next;
        let bytes = encode_with_body(&body, chain.head, seq, inner.clock.now());
        match inner.store.append_audit_record(seq, &bytes)? {
            Appended::Appended => {}
            Appended::Exists => {
                chain.conflict = Some(seq);
                tracing::error!(
                    target: "hallmark::audit",
                    seq,
                    "an audit record this issuer did not write is in the store: appending stops; run `hallmark-server audit verify`"
                );
                return Err(AuditError::Conflict(seq));
            }
        }
        chain.next += 1;
        chain.head = RecordHash::of(&bytes);
        Ok(seq)
    }

    /// Resolves once record `seq` (and every record before it) is durable.
    pub fn durable(
        &self,
        seq: u64,
    ) -> impl Future<Output = Result<(), AuditError>> + Send + 'static {
        let inner = self.inner.clone();
        async move { inner.wait_durable(seq).await }
    }

    /// Signs a checkpoint over the newest record, durably, unless the
    /// newest checkpoint already covers it. Returns the new checkpoint.
    ///
    /// First checks that the stored records since the last checkpoint are
    /// the ones this issuer wrote and that the stored newest checkpoint is
    /// the one it signed: if not, the log halts and nothing is signed.
    /// The checkpoint names the one before it and the database's
    /// generation; once durable, it is the database's new anchor and goes
    /// to the witnesses.
    pub async fn checkpoint(&self) -> Result<Option<SignedCheckpoint>, AuditError> {
        let inner = &self.inner;
        let _one = inner.checkpointing.lock().await;
        if let Some(why) = inner.halted_reason() {
            return Err(AuditError::Halted(why));
        }
        let (seq, head) = {
            let chain = inner.chain.lock().map_err(|_| AuditError::Poisoned)?;
            (chain.next - 1, chain.head)
        };
        if seq == 0 || inner.state.borrow().checkpointed >= seq {
            return Ok(None);
        }
        // Never sign a head that a crash could still take away.
        inner.wait_durable(seq).await?;
        let before = *inner.signed.lock().map_err(|_| AuditError::Poisoned)?;
        if let Err(error) = integrity::verify_since(inner.store.as_ref(), &before, seq, head) {
            inner.halt(&error.to_string());
            return Err(error);
        }
        let store_generation = inner.anchor.get().map_or(0, |a| a.generation());
        let signed = Checkpoint {
            seq,
            head,
            time: inner.clock.now(),
            key_id: inner.key.keyid().to_owned(),
            chain: Some(CheckpointChain {
                prev: before.hash,
                store_generation,
            }),
        }
        .sign(&inner.key)
        .map_err(|e| AuditError::Sign(e.to_string()))?;
        let line = signed.encode();
        inner.store.put_audit_checkpoint(seq, &line)?;
        inner.store.flush_audit().await?;
        let hash = RecordHash::of(&line);
        *inner.signed.lock().map_err(|_| AuditError::Poisoned)? = integrity::Signed {
            seq,
            head,
            hash,
            store_generation: Some(store_generation),
        };
        inner
            .state
            .send_modify(|s| s.checkpointed = s.checkpointed.max(seq));
        tracing::info!(target: "hallmark::audit", seq, head = %head, "audit checkpoint signed");
        if let Some(anchor) = inner.anchor.get() {
            let stored = anchor.put_audit_anchor(AuditAnchor {
                record: Some(Mark {
                    seq,
                    hash: head.to_hex(),
                }),
                checkpoint: Some(Mark {
                    seq,
                    hash: hash.to_hex(),
                }),
            });
            if let Err(error) = stored {
                // The anchor lags behind; the next database write or
                // checkpoint moves it on.
                tracing::error!(target: "hallmark::audit", %error, seq, "cannot record the checkpoint in the database");
            }
        }
        if let Some(witnesses) = inner.witnesses.get() {
            witnesses.send(seq, line).await;
        }
        Ok(Some(signed))
    }

    /// Signs a checkpoint every `every` until `shutdown` (the shutdown
    /// checkpoint itself is [`ServerHandle::shutdown`]'s job, after the
    /// last calls have been recorded).
    ///
    /// [`ServerHandle::shutdown`]: crate::server::ServerHandle::shutdown
    pub async fn run_checkpoints(self, every: Duration, shutdown: watch::Receiver<bool>) {
        let mut ticks = Ticks::new(every, shutdown);
        while ticks.next().await {
            if let Err(error) = self.checkpoint().await {
                tracing::error!(target: "hallmark::audit", %error, "audit checkpoint failed; will retry");
            }
        }
    }

    /// Tells followers of the log ([`AuditLog::subscribe`]) that the issuer
    /// is shutting down. Appending still works.
    pub fn stop_followers(&self) {
        self.inner.state.send_modify(|s| s.stopping = true);
    }

    /// The audit public key, which verifies checkpoints.
    pub fn public_key(&self) -> &PublicKey {
        self.inner.key.public_key()
    }

    /// How far the log has got.
    pub fn state(&self) -> LogState {
        *self.inner.state.borrow()
    }

    /// Follows [`AuditLog::state`]: changes when records become durable
    /// and when checkpoints are signed.
    pub fn subscribe(&self) -> watch::Receiver<LogState> {
        self.inner.state.subscribe()
    }

    /// Up to [`PAGE`] stored records from sequence number `from`, in order.
    pub fn records(&self, from: u64) -> Result<Vec<(u64, Vec<u8>)>, AuditError> {
        Ok(self.inner.store.audit_records(from, PAGE)?)
    }

    /// The sequence number the newest stored checkpoint covers (0: none),
    /// whether or not it verifies.
    pub fn last_stored_checkpoint(&self) -> Result<u64, AuditError> {
        Ok(self
            .inner
            .store
            .last_audit_checkpoint()?
            .map_or(0, |(seq, _)| seq))
    }

    /// Up to [`PAGE`] stored checkpoints covering `from` or later, in order.
    pub fn checkpoints(&self, from: u64) -> Result<Vec<(u64, Vec<u8>)>, AuditError> {
        Ok(self.inner.store.audit_checkpoints(from, PAGE)?)
    }

    /// The sequence number of the first record written at or after `time`
    /// (the end of the log when there is none). Records are in time order,
    /// so an unreadable record is skipped rather than ending the search.
    pub fn first_seq_at(&self, time: SystemTime) -> Result<u64, AuditError> {
        let mut from = 1;
        loop {
            let page = self.records(from)?;
            let Some((last, _)) = page.last() else {
                return Ok(from);
            };
            let last = *last;
            for (seq, bytes) in page {
                if AuditRecord::decode(&bytes).is_ok_and(|r| r.time >= time) {
                    return Ok(seq);
                }
            }
            from = last.saturating_add(1);
        }
    }
}

/// A tick every `every` (the first one `every` from now; late ticks are
/// delayed, not bunched) until shutdown.
struct Ticks {
    ticker: tokio::time::Interval,
    shutdown: watch::Receiver<bool>,
}

impl Ticks {
    fn new(every: Duration, shutdown: watch::Receiver<bool>) -> Self {
        let mut ticker = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        Self { ticker, shutdown }
    }

    /// `true` at the next tick, `false` once shutdown is signalled.
    async fn next(&mut self) -> bool {
        tokio::select! {
            _ = self.ticker.tick() => true,
            () = crate::server::shutdown_signalled(&mut self.shutdown) => false,
        }
    }
}

impl Inner {
    /// Why the log halted, if it did (a lock-free read on the append path).
    fn halted_reason(&self) -> Option<String> {
        self.halted.get().cloned()
    }

    /// Halts the log for good; the first reason stays.
    fn halt(&self, why: &str) {
        if self.halted.set(why.to_owned()).is_ok() {
            tracing::error!(target: "hallmark::audit", reason = why, "the audit log halts: no record is appended and nothing is minted until the issuer restarts");
        }
    }

    async fn wait_durable(&self, seq: u64) -> Result<(), AuditError> {
        if self.state.borrow().durable >= seq {
            return Ok(());
        }
        let _turn = self.flushing.lock().await;
        if self.state.borrow().durable >= seq {
            // Someone else's flush covered it.
            return Ok(());
        }
        // Everything appended until now goes in this one flush.
        let (target, head) = {
            let chain = self.chain.lock().map_err(|_| AuditError::Poisoned)?;
            (chain.next.saturating_sub(1), chain.head)
        };
        self.store.flush_audit().await?;
        if let Some(anchor) = self.anchor.get() {
            anchor.note_audit_anchor(AuditAnchor {
                record: Some(Mark {
                    seq: target,
                    hash: head.to_hex(),
                }),
                checkpoint: None,
            });
        }
        self.state.send_if_modified(|s| {
            let advance = s.durable < target;
            s.durable = s.durable.max(target);
            advance
        });
        Ok(())
    }
}

impl EventSink for AuditLog {
    fn record(&self, event: SecurityEvent) -> Recorded {
        match self.append(&event) {
            Ok(seq) => Recorded::new(self.durable(seq)).numbered(seq),
            Err(error) => {
                tracing::error!(target: "hallmark::audit", %error, ?event, "audit record not written");
                Recorded::ready(Err(error))
            }
        }
    }
}

/// The audit log first, then an observer that sees each event once it has
/// been appended (tests pass one that keeps them, or one that fails).
#[derive(Debug)]
pub struct Observed {
    log: AuditLog,
    observer: Arc<dyn EventSink>,
}

impl Observed {
    /// Records to `log`, then tells `observer`.
    pub fn new(log: AuditLog, observer: Arc<dyn EventSink>) -> Self {
        Self { log, observer }
    }
}

impl EventSink for Observed {
    fn record(&self, event: SecurityEvent) -> Recorded {
        let seq = match self.log.append(&event) {
            Ok(seq) => seq,
            Err(error) => {
                tracing::error!(target: "hallmark::audit", %error, ?event, "audit record not written");
                return Recorded::ready(Err(error));
            }
        };
        let durable = self.log.durable(seq);
        let observed = self.observer.record(event);
        Recorded::new(async move {
            durable.await?;
            observed.await
        })
        .numbered(seq)
    }
}

#[cfg(test)]
mod tests;
