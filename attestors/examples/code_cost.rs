//! What the checks of issue 12 cost per cached measurement, on a real
//! python process (Debian's python3.11) that runs an app-tree script and
//! maps its model: `cargo run --release -p hallmark-attestors --example
//! code_cost`. Prints the median and p99 of 2,000 cached measurements for
//! the bare executable (unix attestor only, loaded code included), the
//! default catalog, the main-program check and `require_loaded`.

use std::io::BufRead;
use std::time::{Duration, Instant};

use hallmark_attestors::tree::TreeLimits;
use hallmark_attestors::workload::cmdline::Dialect;
use hallmark_attestors::workload::{
    AttestorKind, FileCache, HashBudget, PinnedProcess, ProcRoot, ProcessAttestor, Request,
    WorkloadAttestors,
};
use sha2::{Digest, Sha256};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    std::fs::create_dir_all(dir.path().join("app"))?;
    std::fs::create_dir_all(dir.path().join("model"))?;
    let weights = dir.path().join("model/model.safetensors");
    std::fs::write(&weights, vec![1u8; 4096])?;
    std::fs::write(
        dir.path().join("app/main.py"),
        "import mmap, sys, time\nf = open(sys.argv[1], 'rb')\nm = mmap.mmap(f.fileno(), 0, prot=mmap.PROT_READ)\nprint('ready', flush=True)\ntime.sleep(600)\n",
    )?;
    let mut child = std::process::Command::new("/usr/bin/python3")
        .arg("app/main.py")
        .arg(&weights)
        .current_dir(dir.path())
        .stdout(std::process::Stdio::piped())
        .spawn()?;
    let mut line = String::new();
    std::io::BufReader::new(child.stdout.take().ok_or("no stdout")?).read_line(&mut line)?;
    let python = hex::encode(Sha256::digest(std::fs::read(std::fs::canonicalize(
        "/usr/bin/python3",
    )?)?));
    let pinned = PinnedProcess::open(i32::try_from(child.id())?)?;
    let app = dir.path().join("app").display().to_string();
    let model = dir.path().join("model").display().to_string();
    let mut program = Request::default();
    program.app_paths.insert(python.clone(), vec![app]);
    program
        .interpreters
        .insert(python.clone(), vec![Dialect::Python]);
    let mut loaded = Request::default();
    loaded.model_paths.insert(python.clone(), vec![model]);
    loaded.require_loaded.insert(python);
    let attestor = |kinds: &[AttestorKind]| -> Result<ProcessAttestor, Box<dyn std::error::Error>> {
        Ok(
            ProcessAttestor::new(ProcRoot::default(), TreeLimits::default())
                .with_attestors(WorkloadAttestors::from_kinds(kinds)?)
                .with_cache(FileCache::with_racy_window(Duration::ZERO))
                .with_budget(HashBudget::unlimited()),
        )
    };
    let unix = attestor(&[AttestorKind::Unix])?;
    let all = attestor(&AttestorKind::ALL)?;
    let plain = Request::default();
    for (name, att, request) in [
        ("unix only (exe + loaded code)", &unix, &plain),
        ("default catalog, nothing hinted", &all, &plain),
        ("+ main program (app tree hinted)", &all, &program),
        ("+ require_loaded (model hinted)", &all, &loaded),
    ] {
        let evidence = att.attest(&pinned, request)?;
        assert!(
            evidence
                .loaded_code
                .is_some_and(|l| l.unprotected.is_empty())
        );
        let mut times = Vec::with_capacity(2000);
        for _ in 0..2000 {
            let start = Instant::now();
            att.attest(&pinned, request)?;
            times.push(start.elapsed());
        }
        times.sort();
        println!(
            "{name}: p50 {:?} p99 {:?}",
            times[times.len() / 2],
            times[times.len() * 99 / 100]
        );
    }
    child.kill()?;
    child.wait()?;
    Ok(())
}
