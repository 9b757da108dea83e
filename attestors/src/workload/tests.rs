use std::collections::BTreeSet;
use std::path::Path;

use sha2::{Digest, Sha256};

use super::*;

/// A fake /proc/<pid>; its exe is a symlink to a fake binary, as the real one is.
fn fake_proc(root: &Path, pid: i32, start: u64, environ: &str) {
    let dir = root.join(pid.to_string());
    std::fs::create_dir_all(&dir).unwrap();
    let stat = format!("{pid} (my (odd) name) S 1 1 1 0 -1 0 0 0 0 0 0 0 0 0 20 0 1 0 {start} 0 0");
    std::fs::write(dir.join("stat"), stat).unwrap();
    std::fs::write(
        dir.join("status"),
        "Name:\tagent\nUid:\t1000\t1000\t1000\t1000\nGid:\t100\t100\t100\t100\nGroups:\t100 27 \n",
    )
    .unwrap();
    std::fs::write(dir.join("environ"), environ.replace(';', "\0")).unwrap();
    std::fs::write(dir.join("cgroup"), "0::/system.slice/docker-3f4a0c0e5b2d9f8a7c6b5a493827160f0e1d2c3b4a5968778695a4b3c2d1e0f9.scope\n").unwrap();
    let binary = root.join(format!("binary-{pid}"));
    std::fs::write(&binary, b"#!fake binary").unwrap();
    std::os::unix::fs::symlink(&binary, dir.join("exe")).unwrap();
    // No code mapped beyond what the test adds; the root is the real one.
    std::fs::write(dir.join("maps"), "").unwrap();
    std::os::unix::fs::symlink("/", dir.join("root")).unwrap();
    std::os::unix::fs::symlink("/", dir.join("cwd")).unwrap();
}

#[test]
fn loader_environment_names_are_reported_without_values() {
    let root = tempfile::tempdir().unwrap();
    fake_proc(
        root.path(),
        43,
        1,
        "PATH=/bin;LD_PRELOAD=/tmp/evil.so;PYTHONPATH=/tmp/x;NODE_OPTIONS=;LD_LIBRARY_PATH=/opt;",
    );
    let attestor = ProcessAttestor::new(ProcRoot::new(root.path()), TreeLimits::default());
    let evidence = attestor
        .attest(&PinnedProcess::unpinned(43), &Request::default())
        .unwrap();
    assert_eq!(
        evidence.loader_env,
        BTreeSet::from(["LD_PRELOAD", "NODE_OPTIONS", "PYTHONPATH"].map(String::from))
    );
    assert!(evidence.env.is_empty());
    assert!(!format!("{evidence:?}").contains("evil"));
    assert_eq!(evidence.loaded_code, Some(mappings::LoadedCode::default()));
    assert!(evidence.programs.is_empty() && evidence.model_loaded.is_none());
}

#[test]
fn fake_proc_evidence_keeps_only_requested_env() {
    let root = tempfile::tempdir().unwrap();
    fake_proc(
        root.path(),
        42,
        777,
        "PATH=/bin;API_KEY=secret;INVOICE_ENV=prod;",
    );
    let attestor = ProcessAttestor::new(ProcRoot::new(root.path()), TreeLimits::default());
    let request = Request {
        env_names: BTreeSet::from(["INVOICE_ENV".to_owned()]),
        ..Request::default()
    };
    let evidence = attestor
        .attest(&PinnedProcess::unpinned(42), &request)
        .unwrap();
    assert_eq!(evidence.start_time, 777);
    assert_eq!((evidence.uid, evidence.gid), (1000, 100));
    assert_eq!(evidence.supplementary_gids, [100, 27]);
    assert_eq!(evidence.env.len(), 1);
    assert_eq!(evidence.env["INVOICE_ENV"], "prod");
    assert_eq!(
        evidence.exe_sha256,
        hex::encode(Sha256::digest(b"#!fake binary"))
    );
    assert!(evidence.container_id.is_some());
    assert!(
        !format!("{evidence:?}").contains("prod"),
        "Debug never shows env values"
    );
    let pinned = PinnedProcess::unpinned(42);
    assert!(attestor.alive(&pinned, 777));
    assert!(!attestor.alive(&pinned, 778));
}

#[test]
fn exited_process_is_gone() {
    let root = tempfile::tempdir().unwrap();
    let attestor = ProcessAttestor::new(ProcRoot::new(root.path()), TreeLimits::default());
    assert_eq!(
        attestor
            .attest(&PinnedProcess::unpinned(99), &Request::default())
            .unwrap_err(),
        AttestError::ProcessGone { pid: 99 }
    );
}

#[test]
fn declared_and_hinted_trees_are_digested() {
    let root = tempfile::tempdir().unwrap();
    let model = root.path().join("model");
    std::fs::create_dir_all(&model).unwrap();
    std::fs::write(model.join("w.bin"), b"weights").unwrap();
    let app = root.path().join("app");
    std::fs::create_dir_all(&app).unwrap();
    std::fs::write(app.join("main.py"), b"print(1)").unwrap();
    fake_proc(
        root.path(),
        7,
        1,
        &format!("HALLMARK_MODEL_DIR={};", model.display()),
    );
    let attestor = ProcessAttestor::new(ProcRoot::new(root.path()), TreeLimits::default());
    let exe = hex::encode(Sha256::digest(b"#!fake binary"));
    let request = Request {
        app_paths: HashMap::from([(exe, vec!["/nonexistent".into(), app.display().to_string()])]),
        ..Request::default()
    };
    let evidence = attestor
        .attest(&PinnedProcess::unpinned(7), &request)
        .unwrap();
    let expected_model = crate::tree::digest_tree(&model, &TreeLimits::default())
        .unwrap()
        .digest;
    assert_eq!(evidence.model.unwrap().digest, expected_model);
    assert_eq!(evidence.app.unwrap().dir, app.display().to_string());
}

#[test]
fn oversized_executable_is_refused() {
    let root = tempfile::tempdir().unwrap();
    fake_proc(root.path(), 5, 1, "");
    let limits = TreeLimits {
        max_file_size: 4,
        ..TreeLimits::default()
    };
    let attestor = ProcessAttestor::new(ProcRoot::new(root.path()), limits);
    assert!(matches!(
        attestor
            .attest(&PinnedProcess::unpinned(5), &Request::default())
            .unwrap_err(),
        AttestError::TooLarge { .. }
    ));
}

#[test]
fn a_real_process_is_measured_through_its_running_inode() {
    let mut child = std::process::Command::new("sleep")
        .arg("30")
        .spawn()
        .unwrap();
    let pid = i32::try_from(child.id()).unwrap();
    let attestor = ProcessAttestor::new(ProcRoot::default(), TreeLimits::default());
    let pinned = PinnedProcess::open(pid).unwrap();
    let evidence = attestor.attest(&pinned, &Request::default()).unwrap();
    let exe = std::fs::read_link(format!("/proc/{pid}/exe")).unwrap();
    assert_eq!(
        evidence.exe_sha256,
        hex::encode(Sha256::digest(std::fs::read(&exe).unwrap()))
    );
    assert_eq!(evidence.exe_path, exe.display().to_string());
    // A second measurement of the same binary hits the cache and agrees.
    assert_eq!(
        attestor
            .attest(&pinned, &Request::default())
            .unwrap()
            .exe_sha256,
        evidence.exe_sha256
    );
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(!attestor.alive(&pinned, evidence.start_time));
    assert!(matches!(
        attestor.attest(&pinned, &Request::default()).unwrap_err(),
        AttestError::ProcessGone { .. }
    ));
}

#[test]
fn a_pid_reused_since_connect_is_refused() {
    // The agent saw pid 31 start at tick 500 when it connected; /proc now
    // shows a process with the same pid that started at tick 900.
    let root = tempfile::tempdir().unwrap();
    fake_proc(root.path(), 31, 900, "");
    let attestor = ProcessAttestor::new(ProcRoot::new(root.path()), TreeLimits::default());
    let pinned = PinnedProcess::unpinned(31).expect_start_time(500);
    let err = attestor.attest(&pinned, &Request::default()).unwrap_err();
    assert_eq!(err, AttestError::ProcessChanged { pid: 31 });
    assert_eq!(
        err.to_string(),
        "process 31 was replaced during attestation (pid reused)"
    );
    // The same pid with the start time it had at connect is measured.
    let pinned = PinnedProcess::unpinned(31).expect_start_time(900);
    attestor.attest(&pinned, &Request::default()).unwrap();
}

#[test]
fn only_the_requested_environment_is_read_and_attestors_can_be_left_out() {
    let root = tempfile::tempdir().unwrap();
    let model = root.path().join("model");
    std::fs::create_dir_all(&model).unwrap();
    std::fs::write(model.join("w.bin"), b"weights").unwrap();
    fake_proc(
        root.path(),
        8,
        3,
        &format!("TOKEN=hunter2;HALLMARK_MODEL_DIR={};", model.display()),
    );
    let attestors = WorkloadAttestors::from_names(&["unix", "env"]).unwrap();
    let attestor = ProcessAttestor::new(ProcRoot::new(root.path()), TreeLimits::default())
        .with_attestors(attestors);
    let evidence = attestor
        .attest(&PinnedProcess::unpinned(8), &Request::default())
        .unwrap();
    assert!(evidence.model.is_none(), "the model attestor is not in use");
    assert!(evidence.env.is_empty(), "no name was requested");
    assert!(evidence.container_id.is_some());
    assert!(!evidence.exe_sha256.is_empty());
}

#[test]
fn a_uid_over_its_hashing_budget_is_refused_and_cached_files_cost_nothing() {
    let root = tempfile::tempdir().unwrap();
    let model = root.path().join("model");
    std::fs::create_dir_all(&model).unwrap();
    std::fs::write(model.join("w.bin"), vec![1u8; 10_000]).unwrap();
    let declared = format!("HALLMARK_MODEL_DIR={};", model.display());
    fake_proc(root.path(), 12, 1, &declared);
    fake_proc(root.path(), 13, 1, &declared);
    // Enough for the fake binary and one pass over the model.
    let budget = HashBudget::new(10_100, std::time::Duration::from_secs(3600)).with_entry_cost(0);
    let attestor = ProcessAttestor::new(ProcRoot::new(root.path()), TreeLimits::default())
        .with_budget(budget)
        .with_cache(FileCache::with_racy_window(std::time::Duration::ZERO));
    attestor
        .attest(&PinnedProcess::unpinned(12), &Request::default())
        .unwrap();
    // The same files again come from the cache: no budget needed.
    attestor
        .attest(&PinnedProcess::unpinned(12), &Request::default())
        .unwrap();
    // A new file in the model must be hashed, and uid 1000 has nothing left.
    std::fs::write(model.join("extra.bin"), vec![2u8; 5_000]).unwrap();
    let err = attestor
        .attest(&PinnedProcess::unpinned(13), &Request::default())
        .unwrap_err();
    let AttestError::BudgetExhausted(exceeded) = &err else {
        panic!("expected a budget refusal, got {err:?}");
    };
    assert_eq!((exceeded.uid, exceeded.requested), (1000, 5_000));
    assert!(err.to_string().contains("uid 1000"), "{err}");
}

#[test]
fn paths_are_resolved_in_the_process_root_and_read_with_its_credentials() {
    use std::os::unix::fs::PermissionsExt;
    let proc_root = tempfile::tempdir().unwrap();
    // The process's own root (another mount namespace, say): /models/m
    // there is not /models/m here.
    let container = tempfile::tempdir().unwrap();
    let model = container.path().join("models/m");
    std::fs::create_dir_all(&model).unwrap();
    std::fs::write(model.join("w.bin"), b"weights").unwrap();
    std::fs::create_dir_all(container.path().join("work")).unwrap();
    fake_proc(proc_root.path(), 9, 1, "HALLMARK_MODEL_DIR=../models/m;");
    let dir = proc_root.path().join("9");
    for (name, target) in [
        ("root", container.path().to_path_buf()),
        ("cwd", container.path().join("work")),
    ] {
        std::fs::remove_file(dir.join(name)).unwrap();
        std::os::unix::fs::symlink(target, dir.join(name)).unwrap();
    }
    let attestor = ProcessAttestor::new(ProcRoot::new(proc_root.path()), TreeLimits::default());
    let exe = hex::encode(Sha256::digest(b"#!fake binary"));
    let request = Request {
        app_paths: HashMap::from([(exe, vec!["/models/m".into()])]),
        ..Request::default()
    };
    let evidence = attestor
        .attest(&PinnedProcess::unpinned(9), &request)
        .unwrap();
    let expected = crate::tree::digest_tree(&model, &TreeLimits::default())
        .unwrap()
        .digest;
    let measured = evidence.model.unwrap();
    assert_eq!(
        measured.dir, "../models/m",
        "the path as the process names it"
    );
    assert_eq!(measured.digest, expected);
    assert_eq!(evidence.app.unwrap().digest, expected);

    // uid 1000 may not read the weights: refused, naming them.
    std::fs::set_permissions(model.join("w.bin"), std::fs::Permissions::from_mode(0o600)).unwrap();
    let err = attestor
        .attest(&PinnedProcess::unpinned(9), &Request::default())
        .unwrap_err();
    assert!(
        matches!(&err, AttestError::Read { path, reason } if path == "../models/m/w.bin" && reason.contains("uid 1000 may not read")),
        "{err}"
    );
}
