//! Hashing during workload attestation, against the raw SHA-256 throughput
//! of this machine.
//!
//! - `sha256/*`: the raw limit, sha2 (what the attestors use) and ring over
//!   one 64 MiB buffer in memory;
//! - `exe/*`: the executable of this bench process measured through the
//!   real `/proc` by [`ProcessAttestor`] (the `unix` attestor): `cold` with
//!   an empty [`FileCache`] each iteration, `cached` with one attestor whose
//!   cache already holds the binary (`cached_all_attestors`: the agent's
//!   default catalog, so also the environment and cgroup reads);
//! - `model/*` and `app_tree/*`: the canonical tree digest of a generated
//!   model directory (8 x 16 MiB weights plus small config files) and of an
//!   application tree of 5,000 small files (like site-packages): `cold` with
//!   [`digest_tree`], `cached` through a [`ProcessAttestor`] whose request
//!   hints the directory for this executable's digest, so the `model` or
//!   `app_tree` attestor uses its per-file cache;
//! - `evidence_digest`: the digest the agent caches SVIDs under and the
//!   issuer audits refusals with;
//! - `cache_flood/*`: 2,000 empty files walked by one uid into a full cache
//!   (1,002 entries) that another uid half holds, every file a miss that
//!   displaces one of the walker's own entries (`fair_cache`), against
//!   `digest_tree` of the same files (`no_cache`): the cost of the fair
//!   share bookkeeping on the miss path;
//! - `walk_limits/acquire_release`: taking and giving back a place under the
//!   agent's per-uid and global measurement limits (every measurement does).
//!
//! The `cached` attestors charge the agent's default budget (128 GiB per
//! hour, 4 KiB per uncached entry: the directories of the app tree are
//! charged at every walk), with a cache of the default capacity.
//!
//! Throughput is in bytes of file content, so cold and cached read as GB/s
//! next to the raw limit. "Cold" is a cold *digest cache*: the files are in
//! the page cache (they were just written or read), as they are for a
//! binary or a model that is running. Under `cargo test` or nextest
//! (criterion's test mode: each benchmark once) the inputs are small.

// A bench crate has no public API to document.
#![allow(missing_docs)]
// Setup failures abort the bench with a message; there is no caller to
// return an error to.
#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::collections::HashMap;
use std::hint::black_box;
use std::path::{Path, PathBuf};
use std::time::Duration;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use sha2::{Digest, Sha256};

use hallmark_agent::workload_api::walks::WalkLimiter;
use hallmark_attestors::tree::{TreeLimits, digest_tree};
use hallmark_attestors::workload::{
    AttestorKind, DEFAULT_BUDGET_BYTES, DEFAULT_BUDGET_WINDOW, FileCache, HashBudget,
    PinnedProcess, ProcRoot, ProcessAttestor, Request, WorkloadAttestors,
};
use hallmark_proto::node::{FileDigest, TreeEvidence, WorkloadEvidence};

const MIB: usize = 1 << 20;

/// A deterministic byte stream (xorshift64*), so generated trees are the
/// same from run to run without a random-number dependency.
struct Bytes(u64);

impl Bytes {
    fn fill(&mut self, buf: &mut [u8]) {
        for chunk in buf.chunks_mut(8) {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            let word = self.0.wrapping_mul(0x2545_f491_4f6c_dd1d).to_le_bytes();
            chunk.copy_from_slice(&word[..chunk.len()]);
        }
    }

    fn below(&mut self, n: u64) -> u64 {
        let mut word = [0; 8];
        self.fill(&mut word);
        u64::from_le_bytes(word) % n
    }
}

/// Under cargo's per-target scratch dir (on disk, not a tmpfs).
fn scratch(name: &str) -> tempfile::TempDir {
    let base = Path::new(env!("CARGO_TARGET_TMPDIR"));
    std::fs::create_dir_all(base).unwrap();
    tempfile::Builder::new()
        .prefix(name)
        .tempdir_in(base)
        .unwrap()
}

/// `files` weight shards of `shard` bytes plus small config files; returns
/// the total content size.
fn write_model(dir: &Path, files: usize, shard: usize) -> u64 {
    let mut bytes = Bytes(0x9e37_79b9_7f4a_7c15);
    let mut buf = vec![0; shard];
    let mut total = 0;
    for i in 0..files {
        bytes.fill(&mut buf);
        let name = format!("model-{:05}-of-{files:05}.safetensors", i + 1);
        std::fs::write(dir.join(name), &buf).unwrap();
        total += shard as u64;
    }
    for (name, content) in [
        (
            "config.json",
            &br#"{"architectures":["LlamaForCausalLM"],"hidden_size":4096}"#[..],
        ),
        (
            "generation_config.json",
            br#"{"temperature":0.6,"top_p":0.9}"#,
        ),
        ("tokenizer_config.json", br#"{"model_max_length":131072}"#),
    ] {
        std::fs::write(dir.join(name), content).unwrap();
        total += content.len() as u64;
    }
    total
}

/// `files` files of 1-8 KiB in 100 package directories of nested modules;
/// returns the total content size.
fn write_app_tree(dir: &Path, files: usize) -> u64 {
    let mut bytes = Bytes(0x51_7cc1_b727_220a);
    let mut buf = vec![0; 8 * 1024];
    let mut total = 0;
    for i in 0..files {
        let package = dir.join(format!("site-packages/pkg{:03}", i % 100));
        let module = package.join(format!("sub{}", (i / 100) % 5));
        std::fs::create_dir_all(&module).unwrap();
        let len = 1024 + bytes.below(7 * 1024 + 1) as usize;
        bytes.fill(&mut buf[..len]);
        std::fs::write(module.join(format!("mod{i:05}.py")), &buf[..len]).unwrap();
        total += len as u64;
    }
    total
}

/// Whether this is a measurement (`cargo bench` passes `--bench`) rather
/// than criterion's test mode (`cargo test`, nextest), which runs each
/// benchmark once: that only needs small inputs.
fn measuring() -> bool {
    std::env::args().any(|a| a == "--bench")
}

fn own_exe() -> (PathBuf, u64, String) {
    let path = PathBuf::from("/proc/self/exe");
    let content = std::fs::read(&path).unwrap();
    (
        std::fs::read_link(&path).unwrap(),
        content.len() as u64,
        hex::encode(Sha256::digest(&content)),
    )
}

fn attestor(kinds: &[AttestorKind]) -> ProcessAttestor {
    ProcessAttestor::new(ProcRoot::default(), TreeLimits::default())
        .with_attestors(WorkloadAttestors::from_kinds(kinds).unwrap())
        .with_cache(FileCache::with_racy_window(Duration::ZERO))
        .with_budget(HashBudget::new(DEFAULT_BUDGET_BYTES, DEFAULT_BUDGET_WINDOW))
}

fn me() -> PinnedProcess {
    PinnedProcess::open(i32::try_from(std::process::id()).unwrap()).unwrap()
}

fn sha256(c: &mut Criterion) {
    let mut buf = vec![0; if measuring() { 64 * MIB } else { MIB }];
    Bytes(1).fill(&mut buf);
    let mut group = c.benchmark_group("sha256");
    group.throughput(Throughput::Bytes(buf.len() as u64));
    group.sample_size(10);
    group.bench_function("sha2", |b| b.iter(|| Sha256::digest(black_box(&buf))));
    group.bench_function("ring", |b| {
        b.iter(|| ring::digest::digest(&ring::digest::SHA256, black_box(&buf)));
    });
    group.finish();
}

fn exe(c: &mut Criterion) {
    let (path, size, _) = own_exe();
    eprintln!("executable: {} ({size} bytes)", path.display());
    let process = me();
    let request = Request::default();
    let mut group = c.benchmark_group("exe");
    group.throughput(Throughput::Bytes(size));
    group.sample_size(20);
    group.bench_function("cold", |b| {
        b.iter(|| {
            attestor(&[AttestorKind::Unix])
                .attest(&process, &request)
                .unwrap()
        });
    });
    let cached = attestor(&[AttestorKind::Unix]);
    cached.attest(&process, &request).unwrap();
    group.sample_size(100);
    group.bench_function("cached", |b| {
        b.iter(|| cached.attest(&process, &request).unwrap());
    });
    // What the agent runs by default (unix, app_tree, model, env: the last
    // reads the cgroup), with nothing hinted: the floor of a cached fetch.
    let all = attestor(&AttestorKind::ALL);
    all.attest(&process, &request).unwrap();
    group.bench_function("cached_all_attestors", |b| {
        b.iter(|| all.attest(&process, &request).unwrap());
    });
    group.finish();
}

/// `cold` and `cached` digests of the tree at `dir` (`total` content bytes),
/// hinted to the attestor of `kind` for this executable.
fn tree(c: &mut Criterion, name: &str, dir: &Path, total: u64, kind: AttestorKind) {
    let (_, _, exe_sha256) = own_exe();
    let hint = HashMap::from([(exe_sha256, vec![dir.display().to_string()])]);
    let request = match kind {
        AttestorKind::Model => Request {
            model_paths: hint,
            ..Request::default()
        },
        _ => Request {
            app_paths: hint,
            ..Request::default()
        },
    };
    let process = me();
    let cached = attestor(&[AttestorKind::Unix, kind]);
    let evidence = cached.attest(&process, &request).unwrap();
    let measured = match kind {
        AttestorKind::Model => evidence.model,
        _ => evidence.app,
    };
    let cold_digest = digest_tree(dir, &TreeLimits::default()).unwrap().digest;
    assert_eq!(
        measured.map(|t| t.digest),
        Some(cold_digest),
        "the attestor measured the generated tree"
    );

    let mut group = c.benchmark_group(name);
    group.throughput(Throughput::Bytes(total));
    group.sample_size(10);
    group.bench_function("cold", |b| {
        b.iter(|| digest_tree(black_box(dir), &TreeLimits::default()).unwrap());
    });
    group.bench_function("cached", |b| {
        b.iter(|| cached.attest(&process, &request).unwrap());
    });
    group.finish();
}

fn trees(c: &mut Criterion) {
    let model = scratch("model");
    let total = if measuring() {
        write_model(model.path(), 8, 16 * MIB)
    } else {
        write_model(model.path(), 2, MIB)
    };
    tree(c, "model", model.path(), total, AttestorKind::Model);
    drop(model);

    let app = scratch("app");
    let total = write_app_tree(app.path(), if measuring() { 5_000 } else { 50 });
    tree(c, "app_tree", app.path(), total, AttestorKind::AppTree);
}

fn evidence(c: &mut Criterion) {
    #[allow(
        clippy::needless_update,
        reason = "every field is set today; the wire message may gain more"
    )]
    let evidence = WorkloadEvidence {
        pid: 4242,
        uid: 1000,
        gid: 1000,
        supplementary_gids: vec![4, 24, 27],
        exe_path: "/opt/agent/bin/python3.12".into(),
        exe_sha256: "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08".into(),
        start_time: 123_456_789,
        app: Some(TreeEvidence {
            dir: "/opt/agent/app".into(),
            digest: "sha256:4444444444444444444444444444444444444444444444444444444444444444"
                .into(),
            files: vec![],
        }),
        model: Some(TreeEvidence {
            dir: "/models/llama-3.1-8b".into(),
            digest: "sha256:2222222222222222222222222222222222222222222222222222222222222222"
                .into(),
            // What the agent sends: one digest per weight shard and config file.
            files: (0..11)
                .map(|i| FileDigest {
                    path: format!("model-{i:05}.safetensors"),
                    sha256: hex::encode(Sha256::digest(i.to_string())),
                })
                .collect(),
        }),
        env: HashMap::from([
            ("HALLMARK_ENV".to_owned(), "prod".to_owned()),
            ("REGION".to_owned(), "eu-west-1".to_owned()),
            ("TENANT".to_owned(), "acme".to_owned()),
        ]),
        cgroup_path:
            "/kubepods.slice/kubepods-burstable.slice/cri-containerd-0123456789abcdef.scope".into(),
        container_id: "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef".into(),
        ..WorkloadEvidence::default()
    };
    let mut group = c.benchmark_group("evidence");
    group.throughput(Throughput::Elements(1));
    group.bench_function("evidence_digest", |b| {
        b.iter(|| hallmark_proto::evidence_digest(black_box(&evidence)));
    });
    group.finish();
}

/// A process of `uid` (a fake `/proc/<pid>` under `root`, running this
/// executable) declaring `model` as its model directory.
fn fake_process(root: &Path, pid: u32, uid: u32, model: &Path) {
    let dir = root.join(pid.to_string());
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("status"),
        format!("Name:\tbench\nUid:\t{uid}\t{uid}\t{uid}\t{uid}\nGid:\t{uid}\t{uid}\t{uid}\t{uid}\nGroups:\t\n"),
    )
    .unwrap();
    std::fs::write(
        dir.join("stat"),
        format!("{pid} (bench) S 1 1 1 0 -1 0 0 0 0 0 0 0 0 0 20 0 1 0 1000 0 0"),
    )
    .unwrap();
    std::fs::write(
        dir.join("environ"),
        format!("HALLMARK_MODEL_DIR={}\0", model.display()),
    )
    .unwrap();
    std::fs::write(dir.join("cgroup"), "0::/bench\n").unwrap();
    let exe = std::fs::read_link("/proc/self/exe").unwrap();
    std::os::unix::fs::symlink(exe, dir.join("exe")).unwrap();
    // Its view is this process's own; it maps no code beyond its executable.
    std::os::unix::fs::symlink("/", dir.join("root")).unwrap();
    std::os::unix::fs::symlink("/", dir.join("cwd")).unwrap();
    std::fs::write(dir.join("maps"), "").unwrap();
}

fn cache_flood(c: &mut Criterion) {
    let files = if measuring() { 2_000 } else { 20 };
    let scratch = scratch("flood");
    let (flood, other) = (scratch.path().join("flood"), scratch.path().join("other"));
    for (dir, n) in [(&flood, files), (&other, files / 4)] {
        std::fs::create_dir_all(dir).unwrap();
        for i in 0..n {
            std::fs::write(dir.join(format!("empty-{i:05}")), b"").unwrap();
        }
    }
    let proc = scratch.path().join("proc");
    fake_process(&proc, 10, 1000, &other);
    fake_process(&proc, 11, 65534, &flood);
    let attestor = ProcessAttestor::new(ProcRoot::new(&proc), TreeLimits::default())
        .with_attestors(
            WorkloadAttestors::from_kinds(&[AttestorKind::Unix, AttestorKind::Model]).unwrap(),
        )
        .with_cache(FileCache::with_racy_window(Duration::ZERO).with_capacity(files / 2 + 2))
        .with_budget(HashBudget::new(u64::MAX / 2, Duration::from_secs(3600)));
    // uid 1000 holds a quarter of the cache (and the executable).
    attestor
        .attest(&PinnedProcess::unpinned(10), &Request::default())
        .unwrap();
    let mut group = c.benchmark_group("cache_flood");
    group.throughput(Throughput::Elements(files as u64));
    group.sample_size(10);
    group.bench_function("fair_cache", |b| {
        b.iter(|| {
            attestor
                .attest(&PinnedProcess::unpinned(11), &Request::default())
                .unwrap()
        });
    });
    group.bench_function("no_cache", |b| {
        b.iter(|| digest_tree(black_box(&flood), &TreeLimits::default()).unwrap());
    });
    group.finish();
    assert_eq!(
        attestor.cache().entries_of(1000),
        files / 4 + 1,
        "the other uid kept its entries through the flood"
    );
}

fn walk_limits(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    let limiter = WalkLimiter::new(4, 2, Duration::from_secs(5));
    c.bench_function("walk_limits/acquire_release", |b| {
        b.iter(|| runtime.block_on(limiter.acquire(black_box(1000))).unwrap());
    });
}

/// The checks of issue 12 on a real python process (Debian's python3.11)
/// that runs an app tree script and maps its model: the loaded-code
/// classification (every fetch), the main program (images with
/// `code.interpreter`) and `model.require_loaded`, all with digests cached.
fn code(c: &mut Criterion) {
    let dir = scratch("code");
    std::fs::create_dir_all(dir.path().join("app")).unwrap();
    std::fs::create_dir_all(dir.path().join("model")).unwrap();
    std::fs::write(dir.path().join("model/model.safetensors"), vec![1u8; 4096]).unwrap();
    std::fs::write(
        dir.path().join("app/main.py"),
        "import mmap, sys, time\nf = open(sys.argv[1], 'rb')\nm = mmap.mmap(f.fileno(), 0, prot=mmap.PROT_READ)\nprint('ready', flush=True)\ntime.sleep(600)\n",
    )
    .unwrap();
    let mut child = std::process::Command::new("/usr/bin/python3")
        .arg("app/main.py")
        .arg(dir.path().join("model/model.safetensors"))
        .current_dir(dir.path())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(child.stdout.take().unwrap()),
        &mut line,
    )
    .unwrap();
    let python = hex::encode(Sha256::digest(
        std::fs::read(std::fs::canonicalize("/usr/bin/python3").unwrap()).unwrap(),
    ));
    let pinned = PinnedProcess::open(i32::try_from(child.id()).unwrap()).unwrap();
    let app = dir.path().join("app").display().to_string();
    let model = dir.path().join("model").display().to_string();
    let plain = Request::default();
    let mut program = Request::default();
    program.app_paths.insert(python.clone(), vec![app]);
    program.interpreters.insert(
        python.clone(),
        vec![hallmark_attestors::workload::cmdline::Dialect::Python],
    );
    let mut loaded = Request::default();
    loaded.model_paths.insert(python.clone(), vec![model]);
    loaded.require_loaded.insert(python);
    let all = attestor(&AttestorKind::ALL);
    let mut group = c.benchmark_group("code");
    group.sample_size(100);
    for (name, request) in [
        ("python_cached", &plain),
        ("python_cached_main_program", &program),
        ("python_cached_require_loaded", &loaded),
    ] {
        let evidence = all.attest(&pinned, request).unwrap();
        assert!(
            evidence
                .loaded_code
                .is_some_and(|l| l.unprotected.is_empty())
        );
        group.bench_function(name, |b| b.iter(|| all.attest(&pinned, request).unwrap()));
    }
    group.finish();
    child.kill().unwrap();
    child.wait().unwrap();
}

criterion_group!(
    benches,
    sha256,
    exe,
    trees,
    evidence,
    cache_flood,
    walk_limits,
    code
);
criterion_main!(benches);
