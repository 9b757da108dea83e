//! The admin API's Unix socket: created owner-only, and a client for the CLI.

use std::io;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use hyper_util::rt::TokioIo;
use tokio::net::{UnixListener, UnixStream};
use tokio_stream::wrappers::UnixListenerStream;
use tonic::transport::{Channel, Endpoint};

/// Errors opening or reaching the admin socket.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SocketError {
    /// Another process is serving on that socket.
    #[error("admin socket {0} is in use by a running server")]
    InUse(PathBuf),
    /// A file system or socket operation failed.
    #[error("admin socket {path}: {source}")]
    Io {
        /// The socket path.
        path: PathBuf,
        /// The error.
        #[source]
        source: io::Error,
    },
    /// The CLI could not connect.
    #[error(
        "cannot reach the issuer's admin socket {path} (is `hallmark-server run` up, and is this the socket from its config?): {source}"
    )]
    Connect {
        /// The socket path.
        path: PathBuf,
        /// The error.
        #[source]
        source: tonic::transport::Error,
    },
}

/// A bound admin socket.
#[derive(Debug)]
pub struct AdminSocket {
    /// The stream of accepted connections, for tonic.
    pub incoming: UnixListenerStream,
    /// The uid owning the socket (the issuer's own).
    pub owner_uid: u32,
}

/// Binds `path` with mode 0600, creating its directory (0700) if needed. A
/// stale socket file from a crashed server is replaced; a live one is not.
pub async fn bind(path: &Path) -> Result<AdminSocket, SocketError> {
    let err = |source| SocketError::Io {
        path: path.to_owned(),
        source,
    };
    if let Some(dir) = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty() && !d.exists())
    {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(err)?;
    }
    if path.exists() {
        if UnixStream::connect(path).await.is_ok() {
            return Err(SocketError::InUse(path.to_owned()));
        }
        std::fs::remove_file(path).map_err(err)?;
    }
    let listener = UnixListener::bind(path).map_err(err)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).map_err(err)?;
    let owner_uid = std::fs::metadata(path).map_err(err)?.uid();
    Ok(AdminSocket {
        incoming: UnixListenerStream::new(listener),
        owner_uid,
    })
}

/// Connects the CLI to the admin socket.
pub async fn connect(path: &Path) -> Result<Channel, SocketError> {
    let socket = path.to_owned();
    // The URI is required by tonic but unused: the connector dials the socket.
    let endpoint = Endpoint::from_static("http://admin.hallmark.invalid");
    endpoint
        .connect_with_connector(tower::service_fn(move |_| {
            let socket = socket.clone();
            async move { Ok::<_, io::Error>(TokioIo::new(UnixStream::connect(socket).await?)) }
        }))
        .await
        .map_err(|source| SocketError::Connect {
            path: path.to_owned(),
            source,
        })
}
