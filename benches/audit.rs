//! Audit append cost per mint: does writing the tamper-evident audit record
//! (and waiting for it to be durable, as the issuer does before it returns
//! an SVID) halve issuance throughput?
//!
//! - `audit/append`: one record appended under the log's lock (hash chain,
//!   canonical JSON, the copy into the journal buffer), not yet durable.
//! - `audit/durable_1`: append and wait until durable, one caller at a
//!   time: every record pays a full store flush (the worst case).
//! - `audit/durable_64`: 64 callers at once, as concurrent mints do: they
//!   share flushes (group commit).
//! - `mint/x509_64` vs `mint/x509_audited_64`: 64 tasks on a two-worker
//!   runtime (the issuer's shape on this machine), each minting one
//!   X.509-SVID through the CA, without and with its `svid_minted` record
//!   made durable. The ratio of the two is the figure in BENCHMARKS.md.
//! - `mint/x509` and `mint/x509_append`: one caller, mint alone and mint
//!   plus the append (no wait), the per-mint CPU cost of the record.
//! - `audit/record` vs `audit/record_limited`: `EventSink::record` on the
//!   log, and through the `RefusalLimiter` the issuer puts in front of it
//!   (issue 13): a mint's record is not a refusal, so the limiter must cost
//!   it nothing measurable.
//! - `limit/refusal_counted`: a refusal the limiter only counts (the
//!   flood's cost per call, nothing written).
//! - `limit/node_admit`: the per-node minting limit's check, which every
//!   mint call passes, for a node within its limit.
//!
//! The store is the audit journal files in a temp dir on the same disk as
//! the issuer's data, anchored to a sled database there (issue 13).
//! Every benchmark reports elements (records or SVIDs) per second.

// A bench crate has no public API to document.
#![allow(missing_docs)]
// Setup failures abort the bench with a message; there is no caller to
// return an error to.
#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::hint::black_box;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use tokio::runtime::Runtime;
use tokio::task::JoinSet;

use hallmark_ca::clock::SystemClock;
use hallmark_ca::id::{SpiffeId, TrustDomain};
use hallmark_ca::key::CaKey;
use hallmark_ca::manager::{CaConfig, CaManager};
use hallmark_ca::x509::{SvidExtension, SvidRequest};
use hallmark_server::audit::AuditLog;
use hallmark_server::events::{EventSink, RefusalLimiter, RefusalLimits, SecurityEvent};
use hallmark_server::node::{CallLimiter, NodeLimits};
use hallmark_server::store::{FileAuditStore, SledStore};

/// Concurrent callers in the group-commit cases.
const CALLERS: usize = 64;

/// The binding document of a typical SVID (DESIGN.md "Credentials").
const BINDING: &str = concat!(
    r#"{"code_sha256":"9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08","#,
    r#""image":"summarizer@1.4.2","model":{"digest":"sha256:2c26b46b68ffc68ff99b453c1d30413413422d706483bfa0f98a5e886266e7ae","#,
    r#""name":"llama","version":"3.1"},"node":"spiffe://example.org/hallmark/agent/join_token/5f1c","#,
    r#""owner":"alice@example.org","risk_tier":"medium"}"#
);

struct Fixture {
    // Dropped last: the log and store live in it.
    _dir: tempfile::TempDir,
    log: AuditLog,
    ca: Arc<CaManager>,
    workload: SpiffeId,
    node: SpiffeId,
    spki: Vec<u8>,
    serial: AtomicU64,
}

impl Fixture {
    fn new() -> Fixture {
        let dir = tempfile::Builder::new()
            .prefix("hallmark-audit-bench-")
            .tempdir()
            .unwrap();
        let store = Arc::new(FileAuditStore::open(dir.path(), None).unwrap());
        let log = AuditLog::open_in(dir.path(), store, Arc::new(SystemClock)).unwrap();
        // Anchored to a database, as in the issuer: each group commit
        // notes the durable head for the database's next write.
        let database = Arc::new(SledStore::open(dir.path()).unwrap());
        log.anchor(database).unwrap();
        let td = TrustDomain::new("example.org").unwrap();
        let ca = CaManager::generate(CaConfig::new(td.clone()), SystemTime::now()).unwrap();
        Fixture {
            _dir: dir,
            log,
            ca: Arc::new(ca),
            workload: SpiffeId::new(&td, "/agents/summarizer").unwrap(),
            node: SpiffeId::new(&td, "/hallmark/agent/join_token/5f1c0123456789abcdef").unwrap(),
            spki: CaKey::generate().unwrap().public_key_der(),
            serial: AtomicU64::new(1),
        }
    }

    /// The record the issuer writes for one minted X.509-SVID.
    fn minted(&self, serial: String) -> SecurityEvent {
        SecurityEvent::SvidMinted {
            kind: "x509",
            id: serial,
            spiffe_id: self.workload.clone(),
            image: "summarizer@1.4.2".into(),
            code_sha256: "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08".into(),
            model_digest: Some(
                "sha256:2c26b46b68ffc68ff99b453c1d30413413422d706483bfa0f98a5e886266e7ae".into(),
            ),
            node: self.node.clone(),
            ttl_secs: 300,
        }
    }

    fn next_serial(&self) -> String {
        format!("{:032x}", self.serial.fetch_add(1, Ordering::Relaxed))
    }

    /// One X.509-SVID, as `MintX509Svids` mints it; returns its serial.
    fn mint(&self) -> String {
        let extensions = [SvidExtension::binding(BINDING.as_bytes())];
        let request = SvidRequest {
            spiffe_id: &self.workload,
            public_key_der: &self.spki,
            ttl: Duration::from_secs(300),
            dns_names: &[],
            extensions: &extensions,
        };
        self.ca
            .mint_x509_svid(black_box(&request), SystemTime::now())
            .unwrap()
            .serial
    }
}

fn runtime() -> Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

fn audit(c: &mut Criterion) {
    let fixture = Arc::new(Fixture::new());
    let rt = runtime();
    let mut group = c.benchmark_group("audit");

    group.throughput(Throughput::Elements(1));
    group.bench_function("append", |b| {
        b.iter(|| {
            fixture
                .log
                .append(&fixture.minted(fixture.next_serial()))
                .unwrap()
        });
    });
    group.bench_function("durable_1", |b| {
        b.iter(|| {
            rt.block_on(fixture.log.record(fixture.minted(fixture.next_serial())))
                .unwrap();
        });
    });

    // Both leave the durability future unawaited: the flushes are
    // `durable_*`'s subject, this is the CPU on the caller's path.
    let limited = RefusalLimiter::new(
        Arc::new(fixture.log.clone()),
        Arc::new(SystemClock),
        RefusalLimits::default(),
    );
    group.bench_function("record", |b| {
        b.iter(|| drop(fixture.log.record(fixture.minted(fixture.next_serial()))));
    });
    group.bench_function("record_limited", |b| {
        b.iter(|| drop(limited.record(fixture.minted(fixture.next_serial()))));
    });

    group.throughput(Throughput::Elements(CALLERS as u64));
    group.bench_function("durable_64", |b| {
        b.iter(|| {
            rt.block_on(async {
                let mut tasks = JoinSet::new();
                for _ in 0..CALLERS {
                    let f = fixture.clone();
                    tasks.spawn(async move { f.log.record(f.minted(f.next_serial())).await });
                }
                while let Some(done) = tasks.join_next().await {
                    done.unwrap().unwrap();
                }
            });
        });
    });
    group.finish();
}

fn mint(c: &mut Criterion) {
    let fixture = Arc::new(Fixture::new());
    let rt = runtime();
    let mut group = c.benchmark_group("mint");

    group.throughput(Throughput::Elements(1));
    group.bench_function("x509", |b| b.iter(|| fixture.mint()));
    group.bench_function("x509_append", |b| {
        b.iter(|| {
            let serial = fixture.mint();
            fixture.log.append(&fixture.minted(serial)).unwrap()
        });
    });

    group.throughput(Throughput::Elements(CALLERS as u64));
    group.bench_function("x509_64", |b| {
        b.iter(|| {
            rt.block_on(async {
                let mut tasks = JoinSet::new();
                for _ in 0..CALLERS {
                    let f = fixture.clone();
                    tasks.spawn(async move { black_box(f.mint()) });
                }
                while let Some(done) = tasks.join_next().await {
                    done.unwrap();
                }
            });
        });
    });
    group.bench_function("x509_audited_64", |b| {
        b.iter(|| {
            rt.block_on(async {
                let mut tasks = JoinSet::new();
                for _ in 0..CALLERS {
                    let f = fixture.clone();
                    tasks.spawn(async move {
                        let serial = f.mint();
                        f.log.record(f.minted(serial)).await
                    });
                }
                while let Some(done) = tasks.join_next().await {
                    done.unwrap().unwrap();
                }
            });
        });
    });
    group.finish();
}

fn limit(c: &mut Criterion) {
    let fixture = Arc::new(Fixture::new());
    let mut group = c.benchmark_group("limit");
    group.throughput(Throughput::Elements(1));

    // An interval longer than the run: after the first, every refusal is
    // only counted.
    let limiter = RefusalLimiter::new(
        Arc::new(fixture.log.clone()),
        Arc::new(SystemClock),
        RefusalLimits {
            interval: Duration::from_secs(24 * 3600),
            ..RefusalLimits::default()
        },
    );
    let refusal = || SecurityEvent::NodeAttestationRefused {
        attestor: "join_token",
        reason: "join token is malformed: expected 64 hex characters".into(),
        peer: "192.0.2.7:40123".into(),
    };
    drop(limiter.record(refusal()));
    group.bench_function("refusal_counted", |b| {
        b.iter(|| drop(limiter.record(black_box(refusal()))));
    });

    // Limits no bench run reaches, on a map holding 1,000 nodes.
    let admit = CallLimiter::new(
        NodeLimits {
            per_second: u32::MAX,
            burst: u32::MAX,
        },
        Arc::new(SystemClock),
    );
    let td = TrustDomain::new("example.org").unwrap();
    let nodes: Vec<SpiffeId> = (0..1_000)
        .map(|n| SpiffeId::new(&td, &format!("/hallmark/agent/join_token/{n:032x}")).unwrap())
        .collect();
    for node in &nodes {
        admit.admit(node, 1).unwrap();
    }
    let mut next = 0;
    group.bench_function("node_admit", |b| {
        b.iter(|| {
            next = (next + 1) % nodes.len();
            admit.admit(black_box(&nodes[next]), 1).unwrap();
        });
    });
    group.finish();
}

criterion_group!(benches, audit, mint, limit);
criterion_main!(benches);
