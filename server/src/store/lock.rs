//! One issuer per data directory: an exclusive lock on `<data_dir>/lock`,
//! which also holds the pid of the issuer (or operator command) that took
//! it, so that a second one is told who holds the directory instead of a
//! raw `WouldBlock` from deep inside the database.

use std::fs::{File, OpenOptions};
use std::io::{Read as _, Seek as _, Write as _};
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};

use super::StoreError;

/// The lock file's name in the data directory.
pub const LOCK_FILE: &str = "lock";

/// Held while an issuer (or `audit reset`) uses a data directory; released
/// when dropped (or when the process dies).
#[derive(Debug)]
pub struct DataDirLock {
    _file: File,
    path: PathBuf,
}

impl DataDirLock {
    /// Takes the lock of `data_dir` (created 0700 if missing) and writes
    /// this process's pid into it. Fails with who holds it otherwise.
    pub fn acquire(data_dir: &Path) -> Result<DataDirLock, StoreError> {
        super::sled_store::create_private_dir(data_dir)?;
        let path = data_dir.join(LOCK_FILE);
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(&path)
            .map_err(|e| StoreError::Backend(format!("cannot open {}: {e}", path.display())))?;
        if rustix::fs::flock(&file, rustix::fs::FlockOperation::NonBlockingLockExclusive).is_err() {
            let mut holder = String::new();
            let _ = file.read_to_string(&mut holder);
            let holder = holder.trim();
            return Err(StoreError::Locked(format!(
                "another hallmark-server{} holds the data directory {}: stop it first, or give this one its own data_dir",
                if holder.is_empty() {
                    String::new()
                } else {
                    format!(" (pid {holder})")
                },
                data_dir.display()
            )));
        }
        let pid = std::process::id();
        file.set_len(0)
            .and_then(|()| file.rewind())
            .and_then(|()| writeln!(file, "{pid}"))
            .and_then(|()| file.sync_data())
            .map_err(|e| StoreError::Backend(format!("cannot write {}: {e}", path.display())))?;
        Ok(DataDirLock { _file: file, path })
    }

    /// The lock file.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_holder_is_told_the_first_ones_pid() {
        let dir = tempfile::tempdir().unwrap();
        let first = DataDirLock::acquire(dir.path()).unwrap();
        let error = DataDirLock::acquire(dir.path()).unwrap_err().to_string();
        assert!(
            error.contains(&format!(
                "another hallmark-server (pid {}) holds the data directory",
                std::process::id()
            )),
            "{error}"
        );
        assert!(!error.contains("WouldBlock"), "{error}");
        drop(first);
        DataDirLock::acquire(dir.path()).unwrap();
    }
}
