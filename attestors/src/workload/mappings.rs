//! The native code a process has loaded: every file-backed executable
//! mapping in `/proc/<pid>/maps`, each opened through
//! `/proc/<pid>/map_files/<range>` (the mapped inode, never a path lookup)
//! and classified:
//!
//! 1. the main executable (bound by `code.sha256`);
//! 2. a file of the measured app tree (its inode is one the app-tree walk
//!    hashed: a virtualenv's extension modules, covered by the app digest);
//! 3. protected: owned by root, not group- or world-writable, and reached
//!    in the workload's view through directories that are all owned by
//!    root and not group- or world-writable, so that no other uid can have
//!    chosen its content. The same rule holds for workloads running as
//!    root: root can rewrite system files (and ptrace the agent), so a
//!    root workload is trusted not to;
//! 4. anything else is unprotected: it is digested (through the file
//!    cache, charged to the workload's uid) and reported with its path, so
//!    the issuer can require its digest in the image's `code.libraries`.
//!
//! The vDSO, anonymous and special mappings are not files. Classifications
//! are cached per (file identity, path, workload root), like digests: only
//! root can change a root-owned directory, so a cached "protected" stays
//! true against every other uid.

use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::sync::Mutex;

use super::budget::HashBudget;
use super::cache::{FileCache, FileKey, file_key};
use super::cancel::Cancel;
use super::proc::ProcRoot;
use super::resolve::View;
use super::{AttestError, Identity, read_small};

/// Classifications kept before the cache is cleared.
const CLASS_CAPACITY: usize = 20_000;

/// The loaded code that only the image can allow.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LoadedCode {
    /// Executable mappings of files the workload's uid (or another
    /// non-root uid) could have written, sorted by path.
    pub unprotected: Vec<LoadedFile>,
}

/// One unprotected mapped file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoadedFile {
    /// Its path as the kernel names it in `maps`.
    pub path: String,
    /// Lowercase hex SHA-256 of the mapped inode's content.
    pub sha256: String,
}

/// Whether mapped files are protected, by (identity, path, root).
#[derive(Debug, Default)]
pub struct ProtectionCache {
    entries: Mutex<HashMap<(FileKey, String, Identity), bool>>,
}

impl ProtectionCache {
    fn get(&self, key: &(FileKey, String, Identity)) -> Option<bool> {
        self.lock().get(key).copied()
    }

    fn put(&self, key: (FileKey, String, Identity), protected: bool) {
        let mut entries = self.lock();
        if entries.len() >= CLASS_CAPACITY {
            entries.clear();
        }
        entries.insert(key, protected);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<(FileKey, String, Identity), bool>> {
        // Plain values: a panic elsewhere cannot leave the map torn.
        self.entries.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// One executable file mapping.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Mapping {
    /// `start-end`, the name of its `map_files` entry.
    pub(crate) range: String,
    /// The path the kernel prints.
    pub(crate) path: String,
}

/// The file-backed executable mappings in a `maps` text, one per file
/// (by the device and inode printed).
pub(crate) fn executable_mappings(maps: &str) -> Vec<Mapping> {
    let mut seen = HashSet::new();
    let mut out = Vec::new();
    for line in maps.lines() {
        let mut fields = line.splitn(6, ' ');
        let (Some(range), Some(perms), Some(_offset), Some(dev), Some(inode)) = (
            fields.next(),
            fields.next(),
            fields.next(),
            fields.next(),
            fields.next(),
        ) else {
            continue;
        };
        let path = fields.next().unwrap_or_default().trim_start();
        if perms.as_bytes().get(2) != Some(&b'x') || inode == "0" || !path.starts_with('/') {
            continue;
        }
        if seen.insert((dev.to_owned(), inode.to_owned())) {
            out.push(Mapping {
                range: range.to_owned(),
                path: path.to_owned(),
            });
        }
    }
    out
}

/// What measuring the loaded code needs.
pub(crate) struct Context<'a> {
    pub(crate) proc: &'a ProcRoot,
    pub(crate) pid: i32,
    pub(crate) uid: u32,
    pub(crate) view: Option<&'a View>,
    pub(crate) app: Option<&'a HashMap<Identity, String>>,
    pub(crate) cache: &'a FileCache,
    pub(crate) budget: &'a HashBudget,
    pub(crate) protection: &'a ProtectionCache,
    pub(crate) max_file_size: u64,
    /// Set when the caller went away: hashing stops.
    pub(crate) cancel: &'a Cancel,
}

/// Classifies every executable mapping of the process.
pub(crate) fn measure(cx: &Context<'_>) -> Result<LoadedCode, AttestError> {
    let pid = cx.pid;
    let maps = read_small(&cx.proc.pid_path(pid, "maps"), pid)?;
    let maps = String::from_utf8_lossy(&maps);
    let exe = std::fs::metadata(cx.proc.pid_path(pid, "exe")).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => AttestError::ProcessGone { pid },
        _ => AttestError::Read {
            path: cx.proc.pid_path(pid, "exe").display().to_string(),
            reason: e.to_string(),
        },
    })?;
    let exe = identity(&exe);
    let root = cx.view.and_then(View::root_identity).unwrap_or((0, 0));
    let mut unprotected = Vec::new();
    for mapping in executable_mappings(&maps) {
        let entry = cx
            .proc
            .pid_path(pid, &format!("map_files/{}", mapping.range));
        let mut file = match File::open(&entry) {
            Ok(file) => file,
            // Unmapped since maps was read: no longer loaded.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => {
                return Err(AttestError::Read {
                    path: entry.display().to_string(),
                    reason: e.to_string(),
                });
            }
        };
        let read_err = |e: std::io::Error| AttestError::Read {
            path: mapping.path.clone(),
            reason: e.to_string(),
        };
        let meta = file.metadata().map_err(read_err)?;
        let id = identity(&meta);
        if id == exe || cx.app.is_some_and(|app| app.contains_key(&id)) || !meta.is_file() {
            continue;
        }
        let key = (file_key(&meta), mapping.path.clone(), root);
        let protected = match cx.protection.get(&key) {
            Some(p) => p,
            None => {
                use std::os::unix::fs::MetadataExt;
                let p = meta.uid() == 0
                    && meta.mode() & 0o022 == 0
                    && cx.view.is_some_and(|v| v.root_protected(&mapping.path, id));
                cx.protection.put(key, p);
                p
            }
        };
        if protected {
            continue;
        }
        if meta.len() > cx.max_file_size {
            return Err(AttestError::TooLarge {
                path: mapping.path,
                size: meta.len(),
                limit: cx.max_file_size,
            });
        }
        let digest = cx
            .cache
            .digest_open(&mut file, &meta, cx.uid, cx.budget, cx.cancel)
            .map_err(|e| match super::attestor::budget_refusal(&e) {
                Some(exceeded) => AttestError::BudgetExhausted(exceeded),
                None if super::cancel::is_cancelled(&e) => AttestError::Cancelled,
                None => read_err(e),
            })?;
        unprotected.push(LoadedFile {
            path: mapping.path,
            sha256: hex::encode(digest),
        });
    }
    unprotected.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(LoadedCode { unprotected })
}

fn identity(meta: &std::fs::Metadata) -> Identity {
    use std::os::unix::fs::MetadataExt;
    (meta.dev(), meta.ino())
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn maps_lines_yield_one_entry_per_executable_file() {
        let maps = "\
55d0c0a00000-55d0c0a28000 r--p 00000000 fd:01 1234 /usr/bin/python3.11
55d0c0a28000-55d0c0c00000 r-xp 00028000 fd:01 1234 /usr/bin/python3.11
7f0000000000-7f0000001000 r-xp 00001000 fd:01 99   /tmp/x/evil.so
7f0000002000-7f0000003000 r-xp 00002000 fd:01 99   /tmp/x/evil.so
7f0000004000-7f0000005000 rw-p 00000000 00:00 0
7f0000006000-7f0000007000 r-xp 00000000 00:00 0    [vdso]
7f0000008000-7f0000009000 r-xp 00000000 fd:01 77   /tmp/with space.so (deleted)
";
        let got: Vec<_> = executable_mappings(maps)
            .into_iter()
            .map(|m| (m.range, m.path))
            .collect();
        assert_eq!(
            got,
            [
                (
                    "55d0c0a28000-55d0c0c00000".into(),
                    "/usr/bin/python3.11".into()
                ),
                ("7f0000000000-7f0000001000".into(), "/tmp/x/evil.so".into()),
                (
                    "7f0000008000-7f0000009000".into(),
                    "/tmp/with space.so (deleted)".into()
                ),
            ]
        );
    }

    /// A fake `/proc/7` mapping three files: the "executable", a file of
    /// the app tree and a writable library; the root is `/`.
    #[test]
    fn mappings_are_classified() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        std::fs::write(d.join("exe"), b"exe").unwrap();
        std::fs::write(d.join("inapp.so"), b"app").unwrap();
        std::fs::write(d.join("evil.so"), b"evil").unwrap();
        let proc = d.join("proc");
        std::fs::create_dir_all(proc.join("7/map_files")).unwrap();
        std::os::unix::fs::symlink("/", proc.join("7/root")).unwrap();
        std::os::unix::fs::symlink("/", proc.join("7/cwd")).unwrap();
        std::os::unix::fs::symlink(d.join("exe"), proc.join("7/exe")).unwrap();
        let sh = std::fs::canonicalize("/bin/sh").unwrap();
        let mut maps = String::new();
        for (i, file) in [
            d.join("exe"),
            d.join("inapp.so"),
            d.join("evil.so"),
            sh.clone(),
        ]
        .iter()
        .enumerate()
        {
            let range = format!("{i:x}000-{i:x}fff");
            std::os::unix::fs::symlink(file, proc.join(format!("7/map_files/{range}"))).unwrap();
            maps.push_str(&format!(
                "{range} r-xp 00000000 fd:01 {} {}\n",
                100 + i,
                file.display()
            ));
        }
        // Unmapped between reading maps and opening map_files: skipped.
        maps.push_str("f000-ffff r-xp 00000000 fd:01 999 /gone.so\n");
        std::fs::write(proc.join("7/maps"), maps).unwrap();
        let proc = ProcRoot::new(&proc);
        let view = View::open(&proc, 7).unwrap();
        let inapp = std::fs::metadata(d.join("inapp.so")).unwrap();
        let app = HashMap::from([(identity(&inapp), "inapp.so".to_owned())]);
        let cache = FileCache::with_racy_window(Duration::ZERO);
        let budget = HashBudget::unlimited();
        let protection = ProtectionCache::default();
        let cx = Context {
            proc: &proc,
            pid: 7,
            uid: 1000,
            view: Some(&view),
            app: Some(&app),
            cache: &cache,
            budget: &budget,
            protection: &protection,
            max_file_size: 1 << 30,
            cancel: &Cancel::default(),
        };
        let loaded = measure(&cx).unwrap();
        let evil = d.join("evil.so").display().to_string();
        assert_eq!(
            loaded.unprotected,
            [LoadedFile {
                path: evil,
                sha256: hex::encode(<sha2::Sha256 as sha2::Digest>::digest(b"evil")),
            }]
        );
        // Cached: the same answer, and /bin/sh was classified protected once.
        assert_eq!(measure(&cx).unwrap(), loaded);
        assert_eq!(protection.lock().values().filter(|p| **p).count(), 1);
        // Without the app tree's identities, its file is unprotected too.
        let cx = Context { app: None, ..cx };
        assert_eq!(measure(&cx).unwrap().unprotected.len(), 2);
    }
}
