use std::os::unix::fs::PermissionsExt as _;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::UNIX_EPOCH;

use hallmark_ca::clock::ManualClock;

use super::*;
use crate::audit::verify::{Options, Verdict, verify};
use crate::audit::{Entry, export};
use crate::store::{FileAuditStore, StoreError, StoreFuture};

/// An audit store that fails appends or flushes on demand and counts flushes.
#[derive(Debug)]
struct Flaky {
    inner: FileAuditStore,
    fail_append: AtomicBool,
    fail_flush: AtomicBool,
    flushes: Arc<AtomicUsize>,
}

impl Flaky {
    fn open(dir: &Path) -> Arc<Flaky> {
        Arc::new(Flaky {
            inner: FileAuditStore::open(dir, None).unwrap(),
            fail_append: AtomicBool::new(false),
            fail_flush: AtomicBool::new(false),
            flushes: Arc::new(AtomicUsize::new(0)),
        })
    }
}

impl AuditStore for Flaky {
    fn append_audit_record(&self, seq: u64, record: &[u8]) -> Result<Appended, StoreError> {
        if self.fail_append.load(Ordering::SeqCst) {
            return Err(StoreError::Backend("disk full".into()));
        }
        self.inner.append_audit_record(seq, record)
    }
    fn flush_audit(&self) -> StoreFuture {
        if self.fail_flush.load(Ordering::SeqCst) {
            return Box::pin(async { Err(StoreError::Backend("fsync failed".into())) });
        }
        let flushes = self.flushes.clone();
        let flush = self.inner.flush_audit();
        Box::pin(async move {
            flushes.fetch_add(1, Ordering::SeqCst);
            flush.await
        })
    }
    fn last_audit_record(&self) -> Result<Option<(u64, Vec<u8>)>, StoreError> {
        self.inner.last_audit_record()
    }
    fn audit_record(&self, seq: u64) -> Result<Option<Vec<u8>>, StoreError> {
        self.inner.audit_record(seq)
    }
    fn audit_records(&self, from: u64, limit: usize) -> Result<Vec<(u64, Vec<u8>)>, StoreError> {
        self.inner.audit_records(from, limit)
    }
    fn put_audit_checkpoint(&self, seq: u64, checkpoint: &[u8]) -> Result<(), StoreError> {
        self.inner.put_audit_checkpoint(seq, checkpoint)
    }
    fn last_audit_checkpoint(&self) -> Result<Option<(u64, Vec<u8>)>, StoreError> {
        self.inner.last_audit_checkpoint()
    }
    fn audit_checkpoints(
        &self,
        from: u64,
        limit: usize,
    ) -> Result<Vec<(u64, Vec<u8>)>, StoreError> {
        self.inner.audit_checkpoints(from, limit)
    }
    fn audit_checkpoint_before(&self, seq: u64) -> Result<Option<(u64, Vec<u8>)>, StoreError> {
        self.inner.audit_checkpoint_before(seq)
    }
    fn audit_failure(&self) -> Option<String> {
        self.inner.audit_failure()
    }
    fn recover_audit(&self) -> Result<bool, StoreError> {
        self.inner.recover_audit()
    }
    fn check_audit_files(&self) -> Result<(), String> {
        self.inner.check_audit_files()
    }
}

fn clock() -> Arc<ManualClock> {
    Arc::new(ManualClock::new(
        UNIX_EPOCH + Duration::from_secs(1_767_225_600),
    ))
}

fn event(n: u32) -> SecurityEvent {
    SecurityEvent::AdminCall {
        method: "Healthcheck",
        uid: Some(n),
        code: "Ok".into(),
        outcome: format!("call {n}"),
    }
}

fn decoded(log: &AuditLog) -> Vec<AuditRecord> {
    export(log, 1)
        .unwrap()
        .into_iter()
        .filter_map(|e| match e {
            Entry::Record(bytes) => Some(AuditRecord::decode(&bytes).unwrap()),
            Entry::Checkpoint(_) => None,
        })
        .collect()
}

#[tokio::test]
async fn concurrent_records_get_gap_free_sequence_numbers_and_share_one_flush() {
    let dir = tempfile::tempdir().unwrap();
    let store = Flaky::open(dir.path());
    let log = AuditLog::open_in(dir.path(), store.clone(), clock()).unwrap();
    // Appended at the call, in call order; durable together.
    let pending: Vec<Recorded> = (0..10).map(|n| log.record(event(n))).collect();
    Recorded::all(pending).await.unwrap();
    assert_eq!(store.flushes.load(Ordering::SeqCst), 1, "one group commit");
    assert_eq!(log.state().durable, 10);

    // Racing tasks on a multi-threaded runtime: still gap-free.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(4)
        .build()
        .unwrap();
    let racing = log.clone();
    tokio::task::spawn_blocking(move || {
        runtime.block_on(async move {
            let tasks: Vec<_> = (10..74)
                .map(|n| {
                    let log = racing.clone();
                    tokio::spawn(async move { log.record(event(n)).await })
                })
                .collect();
            for task in tasks {
                task.await.unwrap().unwrap();
            }
        })
    })
    .await
    .unwrap();
    let records = decoded(&log);
    let seqs: Vec<u64> = records.iter().map(|r| r.seq).collect();
    assert_eq!(seqs, (1..=74).collect::<Vec<_>>());
    let mut prev = RecordHash::GENESIS;
    for (record, (_, bytes)) in records.iter().zip(log.records(1).unwrap()) {
        assert_eq!(record.prev, prev, "seq {}", record.seq);
        prev = RecordHash::of(&bytes);
    }
    assert!(store.flushes.load(Ordering::SeqCst) <= 65);
    assert_eq!(log.state().durable, 74);
}

#[tokio::test]
async fn a_failed_append_uses_no_sequence_number_and_fails_the_caller() {
    let dir = tempfile::tempdir().unwrap();
    let store = Flaky::open(dir.path());
    let log = AuditLog::open_in(dir.path(), store.clone(), clock()).unwrap();
    log.record(event(1)).await.unwrap();
    store.fail_append.store(true, Ordering::SeqCst);
    let err = log.record(event(2)).await.unwrap_err();
    assert!(err.to_string().contains("disk full"), "{err}");
    store.fail_append.store(false, Ordering::SeqCst);
    log.record(event(3)).await.unwrap();
    let records = decoded(&log);
    assert_eq!(records.iter().map(|r| r.seq).collect::<Vec<_>>(), [1, 2]);
    assert_eq!(records[1].fields["outcome"], "call 3");
}

#[tokio::test]
async fn a_failed_flush_fails_its_waiters_and_a_later_flush_covers_them() {
    let dir = tempfile::tempdir().unwrap();
    let store = Flaky::open(dir.path());
    let log = AuditLog::open_in(dir.path(), store.clone(), clock()).unwrap();
    store.fail_flush.store(true, Ordering::SeqCst);
    let err = log.record(event(1)).await.unwrap_err();
    assert!(err.to_string().contains("fsync failed"), "{err}");
    assert_eq!(log.state().durable, 0, "not durable, not claimed so");
    assert!(
        log.checkpoint().await.is_err(),
        "no checkpoint over a head that is not durable"
    );
    store.fail_flush.store(false, Ordering::SeqCst);
    log.record(event(2)).await.unwrap();
    assert_eq!(log.state().durable, 2);
}

#[tokio::test]
async fn a_record_someone_else_wrote_stops_appending() {
    let dir = tempfile::tempdir().unwrap();
    let store = Flaky::open(dir.path());
    let log = AuditLog::open_in(dir.path(), store.clone(), clock()).unwrap();
    log.record(event(1)).await.unwrap();
    store.inner.append_audit_record(2, b"forged").unwrap();
    assert!(matches!(
        log.record(event(2)).await,
        Err(AuditError::Conflict(2))
    ));
    assert!(matches!(
        log.record(event(3)).await,
        Err(AuditError::Conflict(2))
    ));
    assert_eq!(store.inner.audit_record(2).unwrap().unwrap(), b"forged");
}

#[tokio::test]
async fn checkpoints_sign_the_durable_head_once_and_reopen_continues_the_chain() {
    let dir = tempfile::tempdir().unwrap();
    let store = Flaky::open(dir.path());
    let clock = clock();
    let key_id;
    {
        let log = AuditLog::open_in(dir.path(), store.clone(), clock.clone()).unwrap();
        key_id = log.public_key().keyid().to_owned();
        assert!(log.checkpoint().await.unwrap().is_none(), "nothing to sign");
        log.record(event(1)).await.unwrap();
        log.record(event(2)).await.unwrap();
        let signed = log.checkpoint().await.unwrap().unwrap();
        assert_eq!(signed.checkpoint.seq, 2);
        assert_eq!(
            signed.checkpoint.head,
            RecordHash::of(&store.inner.audit_record(2).unwrap().unwrap())
        );
        assert!(signed.verify(log.public_key()));
        assert_eq!(log.state().checkpointed, 2);
        assert!(log.checkpoint().await.unwrap().is_none(), "already signed");
    }
    let log = AuditLog::open_in(dir.path(), store.clone(), clock).unwrap();
    assert_eq!(log.public_key().keyid(), key_id, "the key file is reused");
    assert_eq!(
        log.state(),
        LogState {
            durable: 2,
            checkpointed: 2,
            stopping: false
        }
    );
    log.record(event(3)).await.unwrap();
    log.checkpoint().await.unwrap().unwrap();
    let report = verify(
        export(&log, 1).unwrap(),
        log.public_key(),
        Options::default(),
    );
    assert_eq!(report.verdict, Verdict::Verified, "{report:?}");
    assert_eq!(report.verified_through, Some(3));
}

#[tokio::test]
async fn a_log_shorter_than_its_checkpoint_is_refused_naming_the_removed_records() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = Flaky::open(dir.path());
        let log = AuditLog::open_in(dir.path(), store, clock()).unwrap();
        for n in 1..=4 {
            log.record(event(n)).await.unwrap();
        }
        log.checkpoint().await.unwrap().unwrap();
    }
    {
        let path = FileAuditStore::dir(dir.path()).join(crate::store::RECORDS_FILE);
        let text = std::fs::read_to_string(&path).unwrap();
        let kept: String = text
            .lines()
            .filter(|line| !line.starts_with("3 ") && !line.starts_with("4 "))
            .map(|line| format!("{line}\n"))
            .collect();
        assert_eq!(kept.lines().count(), 2);
        std::fs::write(&path, kept).unwrap();
    }
    let store = Flaky::open(dir.path());
    let error = AuditLog::open_in(dir.path(), store, clock()).unwrap_err();
    assert!(matches!(error, AuditError::Tampered(_)), "{error}");
    assert!(
        error.to_string().contains(
            "records.log ends at seq 2 but a signed checkpoint covers seq 4: records 3..4 were removed"
        ),
        "{error}"
    );
}

#[tokio::test]
async fn records_after_the_checkpoint_must_chain_on_at_open() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = Flaky::open(dir.path());
        let log = AuditLog::open_in(dir.path(), store, clock()).unwrap();
        for n in 1..=2 {
            log.record(event(n)).await.unwrap();
        }
        log.checkpoint().await.unwrap().unwrap();
        for n in 3..=4 {
            log.record(event(n)).await.unwrap();
        }
    }
    let path = FileAuditStore::dir(dir.path()).join(crate::store::RECORDS_FILE);
    let text = std::fs::read_to_string(&path).unwrap();
    // Change seq 3 (unsigned, after the checkpoint) without re-chaining.
    std::fs::write(&path, text.replacen("call 3", "call X", 1)).unwrap();
    let store = Flaky::open(dir.path());
    let error = AuditLog::open_in(dir.path(), store, clock()).unwrap_err();
    assert!(
        error.to_string().contains(
            "seq 4 does not chain to seq 3: records after the newest checkpoint were rewritten"
        ),
        "{error}"
    );
}

#[tokio::test]
async fn a_checkpoint_over_records_changed_while_running_halts_the_log() {
    let dir = tempfile::tempdir().unwrap();
    let store = Flaky::open(dir.path());
    let log = AuditLog::open_in(dir.path(), store, clock()).unwrap();
    for n in 1..=3 {
        log.record(event(n)).await.unwrap();
    }
    log.checkpoint().await.unwrap().unwrap();
    log.record(event(4)).await.unwrap();
    log.record(event(5)).await.unwrap();
    // Someone rewrites seq 4 in place while the issuer runs (same inode).
    let path = FileAuditStore::dir(dir.path()).join(crate::store::RECORDS_FILE);
    let text = std::fs::read_to_string(&path).unwrap();
    let forged = text.replacen("call 4", "call Y", 1);
    assert_ne!(forged, text);
    {
        use std::io::{Seek as _, Write as _};
        let mut file = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
        file.seek(std::io::SeekFrom::Start(0)).unwrap();
        file.write_all(forged.as_bytes()).unwrap();
    }
    let error = log.checkpoint().await.unwrap_err();
    assert!(matches!(error, AuditError::Tampered(_)), "{error}");
    assert!(log.health().unwrap_err().contains("halted"));
    let refused = log.record(event(6)).await.unwrap_err();
    assert!(matches!(refused, AuditError::Halted(_)), "{refused}");
    assert_eq!(log.state().checkpointed, 3, "nothing was signed");
}

#[tokio::test]
async fn the_key_must_be_the_one_that_signed_the_log() {
    let dir = tempfile::tempdir().unwrap();
    let store = Flaky::open(dir.path());
    {
        let log = AuditLog::open_in(dir.path(), store.clone(), clock()).unwrap();
        log.record(event(1)).await.unwrap();
        log.checkpoint().await.unwrap().unwrap();
    }
    let path = key::key_path(dir.path());
    let original = std::fs::read(&path).unwrap();
    std::fs::remove_file(&path).unwrap();
    let err = AuditLog::open_in(dir.path(), store.clone(), clock()).unwrap_err();
    assert!(err.to_string().contains("is missing"), "{err}");
    assert!(!path.exists(), "no replacement key was made");
    key::create(&path).unwrap();
    let err = AuditLog::open_in(dir.path(), store.clone(), clock()).unwrap_err();
    assert!(err.to_string().contains("restore the audit key"), "{err}");
    std::fs::remove_file(&path).unwrap();
    std::fs::write(&path, original).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    AuditLog::open_in(dir.path(), store, clock()).unwrap();
}

#[tokio::test]
async fn the_observer_sees_only_what_the_log_appended_and_its_failure_counts() {
    #[derive(Debug, Default)]
    struct Refuses(AtomicUsize);
    impl EventSink for Refuses {
        fn record(&self, _: SecurityEvent) -> Recorded {
            self.0.fetch_add(1, Ordering::SeqCst);
            Recorded::ready(Err(AuditError::Encode("observer refuses".into())))
        }
    }
    let dir = tempfile::tempdir().unwrap();
    let store = Flaky::open(dir.path());
    let log = AuditLog::open_in(dir.path(), store.clone(), clock()).unwrap();
    let observer = Arc::new(Refuses::default());
    let sink = Observed::new(log.clone(), observer.clone());
    assert!(sink.record(event(1)).await.is_err());
    assert_eq!(observer.0.load(Ordering::SeqCst), 1);
    store.fail_append.store(true, Ordering::SeqCst);
    assert!(sink.record(event(2)).await.is_err());
    assert_eq!(
        observer.0.load(Ordering::SeqCst),
        1,
        "not told: not appended"
    );
}

#[test]
fn record_kinds_and_fields_come_from_the_event() {
    let agent = hallmark_ca::id::SpiffeId::parse("spiffe://example.org/hallmark/agent/x").unwrap();
    let (kind, fields) = SecurityEvent::SvidMinted {
        kind: "x509",
        id: "ab".into(),
        spiffe_id: hallmark_ca::id::SpiffeId::parse("spiffe://example.org/w").unwrap(),
        image: "w@1".into(),
        code_sha256: "11".into(),
        model_digest: None,
        node: agent.clone(),
        ttl_secs: 300,
    }
    .record_parts()
    .unwrap();
    assert_eq!(kind, "svid_minted");
    assert_eq!(
        serde_json::Value::Object(fields),
        serde_json::json!({
            "svid_type": "x509", "id": "ab", "spiffe_id": "spiffe://example.org/w",
            "image": "w@1", "code_sha256": "11", "model_digest": null,
            "node": "spiffe://example.org/hallmark/agent/x", "ttl_secs": 300,
        })
    );
    let (kind, fields) = SecurityEvent::AgentBanned {
        agent,
        on_record: false,
        uid: Some(1000),
    }
    .record_parts()
    .unwrap();
    assert_eq!(kind, "agent_banned");
    assert_eq!(fields["uid"], 1000);
    assert_eq!(fields["on_record"], false);
}

#[tokio::test]
async fn the_checkpoint_task_signs_new_records_and_ends_on_shutdown() {
    let dir = tempfile::tempdir().unwrap();
    let store = Flaky::open(dir.path());
    let log = AuditLog::open_in(dir.path(), store, clock()).unwrap();
    log.record(event(1)).await.unwrap();
    let mut state = log.subscribe();
    let (stop, stopped) = watch::channel(false);
    let task = tokio::spawn(
        log.clone()
            .run_checkpoints(Duration::from_millis(5), stopped),
    );
    // Waits for the event, not for a time: the first tick signs seq 1.
    while state.borrow_and_update().checkpointed < 1 {
        state.changed().await.unwrap();
    }
    log.record(event(2)).await.unwrap();
    while state.borrow_and_update().checkpointed < 2 {
        state.changed().await.unwrap();
    }
    stop.send(true).unwrap();
    task.await.unwrap();
    let (seq, bytes) = log.inner.store.last_audit_checkpoint().unwrap().unwrap();
    assert_eq!(seq, 2);
    assert!(
        SignedCheckpoint::decode(&bytes)
            .unwrap()
            .verify(log.public_key())
    );
}
