//! The Workload API socket: any local process may connect (who it is, is
//! decided by attestation, not by file permissions).
//!
//! Each accepted connection carries its peer's credentials and a pidfd
//! pinning the peer process: the kernel's own (`SO_PEERPIDFD`, the process
//! that connected, Linux 6.5+) or, on older kernels, one opened with
//! `pidfd_open` as the connection is accepted. Attestation measures that
//! process and nothing else, so a pid recycled after the connection cannot
//! be attested in its place.

use std::io;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::Path;
use std::pin::Pin;
use std::task::{Context, Poll};

use futures::{Stream, StreamExt};
use hallmark_attestors::workload::PinnedProcess;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{UnixListener, UnixStream};
use tokio_stream::wrappers::UnixListenerStream;
use tonic::transport::server::Connected;

use crate::error::AgentError;

/// Who is on the other end of a Workload API connection.
#[derive(Debug, Clone)]
pub struct Peer {
    /// pid from `SO_PEERCRED`; `None` when not visible (another pid namespace).
    pub pid: Option<i32>,
    /// uid from `SO_PEERCRED`.
    pub uid: u32,
    /// gid from `SO_PEERCRED`.
    pub gid: u32,
    /// The peer process, pinned; `None` when its pid is not visible (another
    /// pid namespace) or it exited before the connection was accepted.
    pub process: Option<PinnedProcess>,
}

/// An accepted connection and its [`Peer`].
#[derive(Debug)]
pub struct PeerStream {
    io: UnixStream,
    peer: Peer,
}

impl Connected for PeerStream {
    type ConnectInfo = Peer;

    fn connect_info(&self) -> Peer {
        self.peer.clone()
    }
}

impl AsyncRead for PeerStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl AsyncWrite for PeerStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }
}

/// The connections accepted on the Workload API socket.
pub type Incoming = Pin<Box<dyn Stream<Item = io::Result<PeerStream>> + Send>>;

/// Binds the socket at `path`: creates its directory (0755), replaces a
/// stale socket file, and opens the socket to every local user (0777).
pub fn bind(path: &Path) -> Result<Incoming, AgentError> {
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
    Ok(Box::pin(UnixListenerStream::new(listener).map(
        |accepted| {
            let io = accepted?;
            let peer = peer_of(&io)?;
            Ok(PeerStream { io, peer })
        },
    )))
}

/// The peer's credentials and pinned process.
fn peer_of(io: &UnixStream) -> io::Result<Peer> {
    let cred = io.peer_cred()?;
    let pid = cred.pid().filter(|pid| *pid > 0);
    let process = match pid {
        None => None,
        Some(pid) => match nix::sys::socket::getsockopt(io, nix::sys::socket::sockopt::PeerPidfd) {
            Ok(pidfd) => Some(PinnedProcess::with_pidfd(pid, pidfd)),
            // Before Linux 6.5: open a pidfd now, as close to the connect
            // as the agent can get.
            Err(nix::errno::Errno::ENOPROTOOPT) => PinnedProcess::open(pid).ok(),
            // The peer already exited (the kernel refuses a pidfd of a
            // reaped process).
            Err(nix::errno::Errno::ESRCH) => None,
            Err(e) => return Err(io::Error::from(e)),
        },
    };
    Ok(Peer {
        pid,
        uid: cred.uid(),
        gid: cred.gid(),
        process,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn an_accepted_connection_knows_and_pins_its_peer() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("api.sock");
        let mut incoming = bind(&path).unwrap();
        let client = UnixStream::connect(&path).await.unwrap();
        let accepted = incoming.next().await.unwrap().unwrap();
        let peer = accepted.connect_info();
        assert_eq!(peer.pid, Some(i32::try_from(std::process::id()).unwrap()));
        assert_eq!(peer.uid, own_uid());
        let process = peer.process.unwrap();
        assert_eq!(process.pid(), i32::try_from(std::process::id()).unwrap());
        assert!(
            process.has_pidfd(),
            "SO_PEERPIDFD or pidfd_open pins the peer"
        );
        assert!(!process.exited());
        drop(client);
        // The socket is open to every local user; attestation decides who is who.
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o777);
    }

    fn own_uid() -> u32 {
        use std::os::unix::fs::MetadataExt;
        std::fs::metadata("/proc/self").unwrap().uid()
    }
}
