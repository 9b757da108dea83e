//! The audit key: an Ed25519 key, kept in its own file in the data
//! directory (`audit.key`, PKCS#8 PEM, mode 0600), never in the database.
//!
//! Someone who can rewrite the database can change records, but cannot sign
//! a checkpoint over the changed history without this file.

use std::fs::{self, OpenOptions};
use std::io::Write as _;
use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};

use crate::image::{Algorithm, SigningKey};

use super::AuditError;

/// The key file's name in the data directory.
pub const KEY_FILE: &str = "audit.key";

/// The key file of the issuer whose data directory is `data_dir`.
pub fn key_path(data_dir: &Path) -> PathBuf {
    data_dir.join(KEY_FILE)
}

/// Reads the audit key, if the file exists. A file readable by anyone but
/// its owner is refused: it would let others sign checkpoints.
pub fn load(path: &Path) -> Result<Option<SigningKey>, AuditError> {
    let err = |reason: String| AuditError::Key {
        path: path.to_owned(),
        reason,
    };
    let metadata = match fs::metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(err(format!("cannot read: {e}"))),
    };
    let mode = metadata.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(err(format!(
            "mode {mode:o} lets others read the audit key: run `chmod 600 {}`",
            path.display()
        )));
    }
    let text = fs::read_to_string(path).map_err(|e| err(format!("cannot read: {e}")))?;
    SigningKey::from_pem(&text)
        .map(Some)
        .map_err(|e| err(format!("not a PKCS#8 private key PEM: {e}")))
}

/// Generates a new Ed25519 audit key and writes it to `path` atomically
/// (temporary file, fsync, rename, fsync of the directory), mode 0600.
/// Refuses to replace an existing file.
pub fn create(path: &Path) -> Result<SigningKey, AuditError> {
    let err = |reason: String| AuditError::Key {
        path: path.to_owned(),
        reason,
    };
    let der = SigningKey::generate_pkcs8(Algorithm::Ed25519)
        .map_err(|e| err(format!("cannot generate: {e}")))?;
    let key = SigningKey::from_pkcs8_der(&der).map_err(|e| err(format!("cannot load: {e}")))?;
    let pem = SigningKey::pkcs8_pem(&der);
    let dir = path
        .parent()
        .ok_or_else(|| err("has no parent directory".into()))?;
    let tmp = dir.join(format!(".{KEY_FILE}.tmp.{}", std::process::id()));
    let written = (|| -> std::io::Result<()> {
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)?;
        file.write_all(pem.as_bytes())?;
        file.sync_all()?;
        // A hard link fails if the target exists, so an existing key is
        // never replaced, even by a concurrent writer.
        fs::hard_link(&tmp, path)?;
        fs::remove_file(&tmp)?;
        fs::File::open(dir)?.sync_all()
    })();
    if let Err(e) = written {
        let _ = fs::remove_file(&tmp);
        return Err(err(format!("cannot write: {e}")));
    }
    Ok(key)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_key_file_is_private_and_never_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let path = key_path(dir.path());
        assert!(load(&path).unwrap().is_none());
        let key = create(&path).unwrap();
        let mode = fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        assert_eq!(key.algorithm(), Algorithm::Ed25519);
        let loaded = load(&path).unwrap().unwrap();
        assert_eq!(loaded.keyid(), key.keyid());
        assert!(create(&path).is_err(), "an existing key is kept");
        assert_eq!(load(&path).unwrap().unwrap().keyid(), key.keyid());
        let leftovers: Vec<_> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(leftovers, [std::ffi::OsString::from(KEY_FILE)]);

        fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
        let err = load(&path).unwrap_err().to_string();
        assert!(err.contains("chmod 600"), "{err}");
    }
}
