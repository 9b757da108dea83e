//! The main program of an interpreter: what its command line runs, resolved
//! in the workload's view, and whether it is a file of the measured app
//! tree.
//!
//! A script counts as inside the app tree when both hold: the inode it
//! resolves to is one the app-tree walk hashed (so its content is covered
//! by the app digest), and its canonical path in the workload's view is the
//! app directory's canonical path joined with that file's path in the tree.
//! The second condition matters because an interpreter puts the script's
//! directory first on its import path: a hard link of the approved script
//! in a directory of the attacker's would run with the attacker's modules.
//! For `python3 -m pkg.mod` the module is looked up in the working
//! directory, which Python puts first on `sys.path` (unless `-I` or `-P`,
//! where the agent cannot tell which file runs and says so); the packages'
//! `__init__.py` files it imports on the way must be in the tree as well.

use std::collections::HashMap;
use std::fs::Metadata;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::sync::Mutex;

use super::cmdline::{self, Dialect, Invocation, ProgramKind};
use super::resolve::{Resolved, View};
use super::{Identity, TreeEvidence};
use crate::tree::{FileHasher, TreeFile};

/// What an interpreter runs, as measured.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProgramEvidence {
    /// The dialect the command line was read in (from the image).
    pub dialect: Dialect,
    /// How the program is given; `None` when the command line could not be
    /// read with certainty (see `detail`).
    pub kind: Option<ProgramKind>,
    /// The script or module as resolved (canonical, workload view), or as
    /// given when it could not be resolved.
    pub path: String,
    /// Whether the program (and every package or preload it runs first)
    /// is a file of the measured app tree.
    pub in_app_tree: bool,
    /// Code run before the main program that is not in the app tree.
    pub outside: Vec<String>,
    /// Python's `-I`, `-E`, `-s`, `-P`, `-i` when present.
    pub flags: Vec<char>,
    /// Why the program could not be read or resolved; empty otherwise.
    pub detail: String,
}

/// Measures the main program of the process `args` came from (its
/// `cmdline`, `argv[0]` included) in `dialect`.
pub(crate) fn measure(
    dialect: Dialect,
    args: &[String],
    view: Result<&View, &String>,
    app: Option<&TreeEvidence>,
) -> ProgramEvidence {
    let mut evidence = ProgramEvidence {
        dialect,
        kind: None,
        path: String::new(),
        in_app_tree: false,
        outside: Vec::new(),
        flags: Vec::new(),
        detail: String::new(),
    };
    let (kind, target, preloads, flags) =
        match cmdline::parse(dialect, args.get(1..).unwrap_or_default()) {
            Invocation::Parsed {
                kind,
                target,
                preloads,
                flags,
            } => (kind, target, preloads, flags),
            Invocation::Unparsed(why) => {
                evidence.detail = why;
                return evidence;
            }
            #[allow(
                unreachable_patterns,
                reason = "non_exhaustive in this crate is exhaustive"
            )]
            _ => return evidence,
        };
    evidence.kind = Some(kind);
    evidence.path = target.clone();
    evidence.flags = flags;
    if !matches!(kind, ProgramKind::Script | ProgramKind::Module) {
        return evidence;
    }
    let view = match view {
        Ok(view) => view,
        Err(why) => {
            evidence.detail = why.clone();
            return evidence;
        }
    };
    let tree = match app.map(|a| (a, view.resolve(&a.dir))) {
        Some((a, Ok(dir))) if dir.is_dir() => Some((a, dir.path)),
        _ => None,
    };
    let inside = |file: &Resolved| -> bool {
        let Some((app, dir)) = &tree else {
            return false;
        };
        app.files.get(&file.identity()).is_some_and(|rel| {
            let joined = if dir == "/" {
                format!("/{rel}")
            } else {
                format!("{dir}/{rel}")
            };
            joined == file.path
        })
    };
    let found = match kind {
        ProgramKind::Module => python_module(view, &target, &evidence.flags),
        _ => script(view, dialect, &target).map(|f| (f, Vec::new())),
    };
    match found {
        Ok((main, packages)) => {
            evidence.path = main.path.clone();
            evidence.in_app_tree = inside(&main);
            for package in packages.iter().filter(|p| !inside(p)) {
                evidence.outside.push(package.path.clone());
            }
        }
        Err(why) => {
            evidence.detail = why;
            return evidence;
        }
    }
    for module in preloads {
        let is_path =
            module.starts_with('/') || module.starts_with("./") || module.starts_with("../");
        let resolved = if is_path {
            script(view, dialect, &module).ok()
        } else {
            None
        };
        match resolved {
            Some(file) if inside(&file) => {}
            Some(file) => evidence.outside.push(file.path),
            None => evidence.outside.push(module),
        }
    }
    evidence
}

/// A script file: a file, or a directory's entry point; node also tries
/// the `.js`, `.mjs` and `.cjs` extensions.
fn script(view: &View, dialect: Dialect, target: &str) -> Result<Resolved, String> {
    let mut candidates = vec![target.to_owned()];
    if dialect == Dialect::Node {
        candidates.extend([".js", ".mjs", ".cjs"].map(|ext| format!("{target}{ext}")));
    }
    let mut first_error = None;
    for candidate in candidates {
        match view.resolve(&candidate) {
            Ok(file) if file.is_dir() => {
                let entry = match dialect {
                    Dialect::Python => "__main__.py",
                    Dialect::Node => "index.js",
                };
                return view.resolve(&format!("{}/{entry}", file.path));
            }
            Ok(file) => return Ok(file),
            Err(e) => {
                first_error.get_or_insert(e);
            }
        }
    }
    Err(first_error.unwrap_or_else(|| format!("{target}: not found")))
}

/// `python3 -m a.b.c` from the working directory: the file that runs and
/// the package `__init__.py` files imported before it.
fn python_module(
    view: &View,
    module: &str,
    flags: &[char],
) -> Result<(Resolved, Vec<Resolved>), String> {
    if flags.contains(&'I') || flags.contains(&'P') {
        return Err(format!(
            "python -m {module} with -I or -P does not search the working directory: the agent cannot tell which file runs"
        ));
    }
    let parts: Vec<&str> = module.split('.').collect();
    let identifier = |p: &str| {
        !p.is_empty()
            && !p.starts_with(|c: char| c.is_ascii_digit())
            && p.chars().all(|c| c.is_alphanumeric() || c == '_')
    };
    if !parts.iter().all(|p| identifier(p)) {
        return Err(format!("{module:?} is not a module name"));
    }
    let cwd = view.cwd()?.to_owned();
    let mut base = if cwd == "/" {
        String::new()
    } else {
        cwd.clone()
    };
    let mut packages = Vec::new();
    let not_found = || format!("module {module} is not found in the working directory {cwd}");
    let (last, parents) = parts.split_last().ok_or_else(not_found)?;
    for part in parents {
        base = format!("{base}/{part}");
        match view.resolve(&base) {
            Ok(dir) if dir.is_dir() => {}
            _ => return Err(not_found()),
        }
        if let Ok(init) = view.resolve(&format!("{base}/__init__.py")) {
            packages.push(init);
        }
    }
    let path = format!("{base}/{last}");
    let package = view.resolve(&path).ok().filter(Resolved::is_dir);
    if package.is_some()
        && let Ok(init) = view.resolve(&format!("{path}/__init__.py"))
    {
        packages.push(init);
        let main = view
            .resolve(&format!("{path}/__main__.py"))
            .map_err(|_| not_found())?;
        return Ok((main, packages));
    }
    if let Ok(file) = view.resolve(&format!("{path}.py")) {
        return Ok((file, packages));
    }
    if package.is_some() {
        let main = view
            .resolve(&format!("{path}/__main__.py"))
            .map_err(|_| not_found())?;
        return Ok((main, packages));
    }
    Err(not_found())
}

/// A [`FileHasher`] that records the identity and tree path of every file
/// it hashes (the app and model walks), so that the script, the loaded
/// libraries and the open weights can be matched to measured files by
/// inode rather than by name.
pub(crate) struct Recording<'a> {
    pub(crate) inner: &'a dyn FileHasher,
    pub(crate) root: &'a Path,
    pub(crate) seen: Mutex<HashMap<Identity, String>>,
}

impl FileHasher for Recording<'_> {
    fn sha256(&self, file: &TreeFile<'_>, meta: &Metadata) -> std::io::Result<[u8; 32]> {
        let digest = self.inner.sha256(file, meta)?;
        if let Some(rel) = file
            .path()
            .strip_prefix(self.root)
            .ok()
            .and_then(|p| p.to_str())
        {
            self.seen
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert((meta.dev(), meta.ino()), rel.to_owned());
        }
        Ok(digest)
    }

    fn listed(&self, path: &Path, meta: &Metadata) -> std::io::Result<()> {
        self.inner.listed(path, meta)
    }
}

impl Recording<'_> {
    /// What was recorded.
    pub(crate) fn into_seen(self) -> HashMap<Identity, String> {
        self.seen.into_inner().unwrap_or_else(|p| p.into_inner())
    }
}
