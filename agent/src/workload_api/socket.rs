//! The Workload API socket: any local process may connect (who it is, is
//! decided by attestation, not by file permissions).

use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::Path;

use tokio::net::UnixListener;
use tokio_stream::wrappers::UnixListenerStream;

use crate::error::AgentError;

/// Binds the socket at `path`: creates its directory (0755), replaces a
/// stale socket file, and opens the socket to every local user (0777).
pub fn bind(path: &Path) -> Result<UnixListenerStream, AgentError> {
    if let Some(dir) = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty() && !d.exists())
    {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o755)
            .create(dir)
            .map_err(|e| AgentError::io(dir, e))?;
    }
    if path.exists() {
        if std::os::unix::net::UnixStream::connect(path).is_ok() {
            return Err(AgentError::io(
                path,
                std::io::Error::other("in use by a running agent"),
            ));
        }
        std::fs::remove_file(path).map_err(|e| AgentError::io(path, e))?;
    }
    let listener = UnixListener::bind(path).map_err(|e| AgentError::io(path, e))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o777))
        .map_err(|e| AgentError::io(path, e))?;
    Ok(UnixListenerStream::new(listener))
}
