//! Whether a process has its model loaded (`model.require_loaded`): every
//! weight file of the measured model tree is open (`/proc/<pid>/fd`) or
//! mapped (`/proc/<pid>/map_files`) by the process, matched by inode to the
//! files the model walk digested — never by name.
//!
//! Weight files are the regular files of the model tree whose name ends in
//! one of [`WEIGHT_EXTENSIONS`]; a tree with none of them counts all its
//! files. Tokenizers and configs are read once and closed by every loader,
//! so they cannot be required. The check suits loaders that keep the
//! weights mapped or open while serving (llama.cpp, safetensors with mmap,
//! GGUF); a loader that copies the weights and closes the files does not
//! pass it, and must not use the option.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::os::unix::fs::MetadataExt;

use super::proc::ProcRoot;
use super::{AttestError, Identity};

/// File name endings that mark model weights.
pub const WEIGHT_EXTENSIONS: &[&str] = &[
    ".safetensors",
    ".gguf",
    ".bin",
    ".pt",
    ".pth",
    ".onnx",
    ".ckpt",
    ".h5",
    ".msgpack",
    ".npz",
];

/// Whether the model's weights are loaded.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ModelLoaded {
    /// How many weight files the model tree has.
    pub weight_files: usize,
    /// The weight files (paths in the model tree) that are neither open
    /// nor mapped, sorted.
    pub not_loaded: Vec<String>,
}

/// Checks the weight files among `files` (the model walk's identities)
/// against the process's open and mapped files.
pub(crate) fn measure(
    proc: &ProcRoot,
    pid: i32,
    files: &HashMap<Identity, String>,
) -> Result<ModelLoaded, AttestError> {
    let weights: Vec<(&Identity, &String)> = {
        let marked: Vec<_> = files
            .iter()
            .filter(|(_, path)| WEIGHT_EXTENSIONS.iter().any(|ext| path.ends_with(ext)))
            .collect();
        if marked.is_empty() {
            files.iter().collect()
        } else {
            marked
        }
    };
    let mut held = HashSet::new();
    for dir in ["fd", "map_files"] {
        let path = proc.pid_path(pid, dir);
        let entries = std::fs::read_dir(&path).map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => AttestError::ProcessGone { pid },
            _ => AttestError::Read {
                path: path.display().to_string(),
                reason: e.to_string(),
            },
        })?;
        for entry in entries.flatten() {
            // stat follows the magic link to the open or mapped inode; an
            // entry gone since the listing is simply not held.
            if let Ok(meta) = std::fs::metadata(entry.path()) {
                held.insert((meta.dev(), meta.ino()));
            }
        }
    }
    let not_loaded: BTreeSet<String> = weights
        .iter()
        .filter(|(id, _)| !held.contains(*id))
        .map(|(_, path)| (*path).clone())
        .collect();
    Ok(ModelLoaded {
        weight_files: weights.len(),
        not_loaded: not_loaded.into_iter().collect(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(path: &std::path::Path) -> Identity {
        let m = std::fs::metadata(path).unwrap();
        (m.dev(), m.ino())
    }

    #[test]
    fn weights_count_when_open_or_mapped() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        for f in ["a.safetensors", "b.safetensors", "config.json"] {
            std::fs::write(d.join(f), f).unwrap();
        }
        let files: HashMap<Identity, String> = ["a.safetensors", "b.safetensors", "config.json"]
            .into_iter()
            .map(|f| (id(&d.join(f)), f.to_owned()))
            .collect();
        let proc = d.join("proc");
        std::fs::create_dir_all(proc.join("7/fd")).unwrap();
        std::fs::create_dir_all(proc.join("7/map_files")).unwrap();
        std::os::unix::fs::symlink(d.join("a.safetensors"), proc.join("7/fd/3")).unwrap();
        std::os::unix::fs::symlink(d.join("config.json"), proc.join("7/fd/4")).unwrap();
        let proc = ProcRoot::new(&proc);
        let got = measure(&proc, 7, &files).unwrap();
        assert_eq!(got.weight_files, 2);
        assert_eq!(got.not_loaded, ["b.safetensors"]);
        std::os::unix::fs::symlink(
            d.join("b.safetensors"),
            d.join("proc/7/map_files/1000-2000"),
        )
        .unwrap();
        assert!(measure(&proc, 7, &files).unwrap().not_loaded.is_empty());
        // A tree without weight extensions: every file is a weight.
        let plain = HashMap::from([(id(&d.join("config.json")), "config.json".to_owned())]);
        assert_eq!(
            measure(&proc, 7, &plain).unwrap().not_loaded,
            Vec::<String>::new()
        );
        assert_eq!(
            measure(&ProcRoot::new(d), 7, &plain).unwrap_err(),
            AttestError::ProcessGone { pid: 7 }
        );
    }
}
