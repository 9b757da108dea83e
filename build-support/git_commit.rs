//! Build script of the two daemons: `HALLMARK_GIT_COMMIT`, the commit the
//! binary was built from (12 hex digits), for `--version`. Outside a git
//! checkout (a source tarball, a container build without `.git`) it is
//! `unknown`. Rebuilds only when HEAD moves.

use std::path::Path;
use std::process::Command;

fn git(args: &[&str]) -> Option<String> {
    let out = Command::new("git").args(args).output().ok()?;
    if !out.status.success() {
        return None;
    }
    let text = String::from_utf8(out.stdout).ok()?;
    let text = text.trim();
    (!text.is_empty()).then(|| text.to_owned())
}

fn main() {
    let commit = git(&["rev-parse", "--short=12", "HEAD"]).unwrap_or_else(|| "unknown".to_owned());
    println!("cargo:rustc-env=HALLMARK_GIT_COMMIT={commit}");
    // Watch only files that exist: a missing one would rerun this every build.
    let mut watched = false;
    if let Some(git_dir) = git(&["rev-parse", "--absolute-git-dir"]) {
        let head = Path::new(&git_dir).join("HEAD");
        let mut files = vec![head];
        if let (Some(reference), Some(common)) = (
            git(&["symbolic-ref", "-q", "HEAD"]),
            git(&["rev-parse", "--git-common-dir"]),
        ) {
            let common = Path::new(&git_dir).join(common);
            files.push(common.join(&reference));
            files.push(common.join("packed-refs"));
        }
        for file in files.into_iter().filter(|f| f.exists()) {
            println!("cargo:rerun-if-changed={}", file.display());
            watched = true;
        }
    }
    if !watched {
        // Not a checkout: nothing can change the answer but this script.
        println!("cargo:rerun-if-changed=../build-support/git_commit.rs");
    }
}
