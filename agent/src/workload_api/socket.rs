//! The Workload API socket: any local process may connect (who it is, is
//! decided by attestation, not by file permissions).
//!
//! Each accepted connection carries its peer's credentials and a pidfd
//! pinning the peer process: the kernel's own (`SO_PEERPIDFD`, the process
//! that connected, Linux 6.5+) or, on older kernels, one opened with
//! `pidfd_open` as the connection is accepted. Attestation measures that
//! process and nothing else, so a pid recycled after the connection cannot
//! be attested in its place.
//!
//! What a connection reads passes through [`AuthorityRewrite`] on its way to
//! the HTTP/2 server, so gRPC clients that send the socket path as
//! `:authority` (gRPC C-core, grpc-java) are served: see
//! [`super::authority`]. What it writes carries one more frame, the
//! liveness challenge's PING, right after the server's first frame (see
//! [`super::connection`]).

use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use futures::{Future, Stream};
use hallmark_attestors::workload::PinnedProcess;
use nix::sys::socket::{ControlMessageOwned, MsgFlags, UnixCredentials};
use tokio::io::{AsyncRead, AsyncWrite, Interest, ReadBuf};
use tokio::net::{UnixListener, UnixStream};
use tonic::transport::server::Connected;

use super::authority::{AuthorityRewrite, PING_LEN};
use super::connection::{ConnectionState, Slot, UidLimits};
use crate::config::WorkloadSettings;
use crate::error::AgentError;

/// First and longest pause of the accept loop while the agent is out of
/// descriptors or memory (`EMFILE`, `ENFILE`, `ENOBUFS`, `ENOMEM`): the
/// listener stays readable, so retrying at once would spin.
const ACCEPT_PAUSE_MIN: Duration = Duration::from_millis(10);
const ACCEPT_PAUSE_MAX: Duration = Duration::from_secs(1);

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
    /// The file the peer ran when its connection was accepted (device,
    /// inode of `/proc/<pid>/exe`); `None` when it could not be read.
    pub exe: Option<ExeIdentity>,
    /// Who wrote on the connection, and what is in flight on it.
    pub connection: Arc<ConnectionState>,
}

/// A running executable's file identity: device and inode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExeIdentity {
    /// Device.
    pub dev: u64,
    /// Inode.
    pub ino: u64,
}

impl ExeIdentity {
    /// The file `pid` runs now, through `/proc/<pid>/exe`.
    pub fn of(pid: i32) -> io::Result<Self> {
        let meta = std::fs::metadata(format!("/proc/{pid}/exe"))?;
        Ok(Self {
            dev: meta.dev(),
            ino: meta.ino(),
        })
    }
}

/// An accepted connection and its [`Peer`]. Reads go through `recvmsg` so
/// the kernel names the writer of every chunk (see
/// [`super::connection`]), then through the `:authority` rewrite; a
/// connection idle for the configured timeout ends its reads with
/// `TimedOut`, which closes it, and one whose HTTP/2 framing the rewrite
/// cannot follow ends them with `InvalidData`.
#[derive(Debug)]
pub struct PeerStream {
    io: UnixStream,
    peer: Peer,
    /// Room for one `SCM_CREDENTIALS` message, reused by every read.
    cmsg: Vec<u8>,
    /// What the client wrote, as the HTTP/2 server should read it.
    rewrite: AuthorityRewrite,
    /// The liveness challenge's PING, on its way out.
    challenge: Challenge,
    idle_timeout: Duration,
    idle: Pin<Box<tokio::time::Sleep>>,
    /// The uid's connection slot, released when the connection closes.
    _slot: Slot,
}

impl Connected for PeerStream {
    type ConnectInfo = Peer;

    fn connect_info(&self) -> Peer {
        self.peer.clone()
    }
}

impl PeerStream {
    /// Closes an idle connection: `Ready(Err)` once the connection has had
    /// nothing in flight for the idle timeout, else `Pending` with a timer
    /// armed for the moment it could be.
    fn poll_idle(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        loop {
            if self.idle.as_mut().poll(cx).is_pending() {
                return Poll::Pending;
            }
            let now = Instant::now();
            match self.peer.connection.idle_deadline(self.idle_timeout) {
                Some(deadline) if deadline <= now => {
                    tracing::debug!(
                        pid = self.peer.pid,
                        uid = self.peer.uid,
                        "closing an idle Workload API connection"
                    );
                    return Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        "idle Workload API connection closed",
                    )));
                }
                Some(deadline) => self.idle.as_mut().reset(deadline.into()),
                None => self.idle.as_mut().reset((now + self.idle_timeout).into()),
            }
        }
    }
}

impl AsyncRead for PeerStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        loop {
            if this.rewrite.has_output() {
                this.rewrite.read_into(buf);
                return Poll::Ready(Ok(()));
            }
            match this.io.poll_read_ready(cx) {
                Poll::Pending => return this.poll_idle(cx),
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Ready(Ok(())) => {}
            }
            let fd = this.io.as_raw_fd();
            // Read into the caller's buffer, then hand the bytes to the
            // rewrite; what it gives back replaces them.
            let data = buf.initialize_unfilled();
            let cmsg = &mut this.cmsg;
            match this
                .io
                .try_io(Interest::READABLE, || receive(fd, data, cmsg))
            {
                Ok((0, _)) => return Poll::Ready(Ok(())),
                Ok((n, writer)) => {
                    this.peer.connection.wrote(writer);
                    if let Err(error) = this.rewrite.feed(&data[..n]) {
                        tracing::debug!(
                            pid = this.peer.pid,
                            uid = this.peer.uid,
                            %error,
                            "closing a Workload API connection"
                        );
                        return Poll::Ready(Err(io::Error::new(io::ErrorKind::InvalidData, error)));
                    }
                    if this.rewrite.take_answer() {
                        this.peer.connection.answered();
                    }
                    // Back to the top: hand over what the rewrite gave
                    // back, or read on if it holds only part of a frame.
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
    }
}

/// One `recvmsg`: the bytes read and the writer's (pid, uid) from
/// `SCM_CREDENTIALS` (`None`: the kernel sent none, or the control data was
/// truncated because the peer also sent descriptors, which the kernel then
/// closes: fail closed).
fn receive(
    fd: std::os::fd::RawFd,
    data: &mut [u8],
    cmsg: &mut [u8],
) -> io::Result<(usize, Option<(i32, u32)>)> {
    let mut iov = [io::IoSliceMut::new(data)];
    let msg = nix::sys::socket::recvmsg::<()>(
        fd,
        &mut iov,
        Some(cmsg),
        MsgFlags::MSG_CMSG_CLOEXEC | MsgFlags::MSG_DONTWAIT,
    )
    .map_err(io::Error::from)?;
    let writer = msg.cmsgs().ok().and_then(|mut cmsgs| {
        cmsgs.find_map(|c| match c {
            ControlMessageOwned::ScmCredentials(c) => Some((c.pid(), c.uid())),
            _ => None,
        })
    });
    Ok((msg.bytes, writer))
}

impl AsyncWrite for PeerStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        std::task::ready!(this.challenge.poll_send(&mut this.io, cx))?;
        let allowed = this.challenge.allowance(buf);
        let n = std::task::ready!(Pin::new(&mut this.io).poll_write(cx, &buf[..allowed]))?;
        this.challenge.passed(&buf[..n]);
        // The PING goes out at once if it can; else before the next write
        // or at the flush that follows every write of h2.
        if let Poll::Ready(Err(e)) = this.challenge.poll_send(&mut this.io, cx) {
            tracing::debug!(error = %e, "writing the liveness challenge failed");
        }
        Poll::Ready(Ok(n))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        std::task::ready!(this.challenge.poll_send(&mut this.io, cx))?;
        Pin::new(&mut this.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        if self.challenge.is_sent() {
            return Pin::new(&mut self.io).poll_write_vectored(cx, bufs);
        }
        let first = bufs
            .iter()
            .find(|b| !b.is_empty())
            .map_or(&[][..], |b| &b[..]);
        self.poll_write(cx, first)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }
}

/// The agent's PING of the liveness challenge (see [`super::connection`]),
/// written right after the first frame the HTTP/2 server writes: a
/// server's connection preface is its SETTINGS frame, and nothing may come
/// before it (RFC 9113 §3.4).
#[derive(Debug)]
struct Challenge {
    /// The PING frame: header, then the challenge.
    frame: [u8; FRAME_HEADER_LEN + PING_LEN],
    state: Outbound,
}

const FRAME_HEADER_LEN: usize = 9;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outbound {
    /// The server's first frame is going out: its header so far, and, once
    /// the header is complete, how many payload bytes are left.
    First {
        head: [u8; FRAME_HEADER_LEN],
        head_len: usize,
        payload_left: usize,
    },
    /// The PING is due; this many of its bytes are written.
    Ping(usize),
    /// The PING is written: everything passes.
    Sent,
}

impl Challenge {
    fn new(challenge: [u8; PING_LEN]) -> Self {
        let mut frame = [0; FRAME_HEADER_LEN + PING_LEN];
        // Length 8, type PING, no flags, stream 0.
        frame[..5].copy_from_slice(&[0, 0, PING_LEN as u8, 0x6, 0]);
        frame[FRAME_HEADER_LEN..].copy_from_slice(&challenge);
        Self {
            frame,
            state: Outbound::First {
                head: [0; FRAME_HEADER_LEN],
                head_len: 0,
                payload_left: 0,
            },
        }
    }

    fn is_sent(&self) -> bool {
        self.state == Outbound::Sent
    }

    /// How many bytes of `buf` may be written before the PING: up to the
    /// end of the server's first frame, everything once it is out.
    fn allowance(&self, buf: &[u8]) -> usize {
        let Outbound::First {
            mut head,
            head_len,
            payload_left,
        } = self.state
        else {
            return buf.len();
        };
        let end = if head_len < FRAME_HEADER_LEN {
            let rest = FRAME_HEADER_LEN - head_len;
            let Some(tail) = buf.get(..rest) else {
                return buf.len();
            };
            head[head_len..].copy_from_slice(tail);
            rest + frame_len(&head)
        } else {
            payload_left
        };
        end.min(buf.len())
    }

    /// `written` went out (at most [`Self::allowance`]).
    fn passed(&mut self, mut written: &[u8]) {
        let Outbound::First {
            head,
            head_len,
            payload_left,
        } = &mut self.state
        else {
            return;
        };
        if *head_len < FRAME_HEADER_LEN {
            let n = (FRAME_HEADER_LEN - *head_len).min(written.len());
            head[*head_len..*head_len + n].copy_from_slice(&written[..n]);
            *head_len += n;
            written = &written[n..];
            if *head_len < FRAME_HEADER_LEN {
                return;
            }
            *payload_left = frame_len(head);
        }
        *payload_left -= written.len().min(*payload_left);
        if *payload_left == 0 {
            self.state = Outbound::Ping(0);
        }
    }

    /// Writes what is left of a due PING: `Ready(Ok)` when nothing is left
    /// to write before the caller's bytes.
    fn poll_send(&mut self, io: &mut UnixStream, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while let Outbound::Ping(done) = self.state {
            let n = std::task::ready!(Pin::new(&mut *io).poll_write(cx, &self.frame[done..]))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.state = if done + n == self.frame.len() {
                Outbound::Sent
            } else {
                Outbound::Ping(done + n)
            };
        }
        Poll::Ready(Ok(()))
    }
}

/// The payload length in a frame header.
fn frame_len(head: &[u8; FRAME_HEADER_LEN]) -> usize {
    usize::from(head[0]) << 16 | usize::from(head[1]) << 8 | usize::from(head[2])
}

/// The connections accepted on the Workload API socket.
pub type Incoming = Pin<Box<dyn Stream<Item = io::Result<PeerStream>> + Send>>;

/// Binds the socket at `path`: creates its directory (0755), replaces a
/// stale socket file, and opens the socket to every local user (0777).
/// Connections beyond a uid's `max_connections_per_uid` are closed unread
/// as they are accepted; the stream never yields an error (tonic would
/// retry at once), and pauses while the agent is out of descriptors.
pub fn bind(path: &Path, settings: &WorkloadSettings) -> Result<Incoming, AgentError> {
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
    // On the listener, before any client can connect: accepted sockets
    // inherit it (at connect since Linux 6.16, so even bytes written before
    // the accept carry their writer; on older kernels such bytes come
    // without credentials and taint the connection: fail closed).
    nix::sys::socket::setsockopt(&listener, nix::sys::socket::sockopt::PassCred, &true)
        .map_err(|e| AgentError::io(path, io::Error::from(e)))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o777))
        .map_err(|e| AgentError::io(path, e))?;
    let acceptor = Arc::new(Acceptor {
        listener,
        limits: UidLimits::new(
            settings.max_connections_per_uid,
            settings.max_streams_per_uid,
        ),
        idle_timeout: settings.idle_timeout,
    });
    Ok(Box::pin(futures::stream::unfold(
        acceptor,
        |acceptor| async move {
            let stream = acceptor.next().await;
            Some((Ok(stream), acceptor))
        },
    )))
}

struct Acceptor {
    listener: UnixListener,
    limits: Arc<UidLimits>,
    idle_timeout: Duration,
}

impl Acceptor {
    /// The next connection the agent admits.
    async fn next(&self) -> PeerStream {
        let mut pause = ACCEPT_PAUSE_MIN;
        loop {
            let io = match self.listener.accept().await {
                Ok((io, _)) => io,
                Err(e) if out_of_resources(&e) => {
                    tracing::warn!(error = %e, pause = ?pause, "cannot accept Workload API connections (out of descriptors or memory): pausing; raise LimitNOFILE or lower workload.max_connections_per_uid");
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(ACCEPT_PAUSE_MAX);
                    continue;
                }
                Err(e) => {
                    // The client went away before the accept.
                    tracing::debug!(error = %e, "accepting a Workload API connection failed");
                    continue;
                }
            };
            pause = ACCEPT_PAUSE_MIN;
            if let Some(stream) = self.admit(io) {
                return stream;
            }
        }
    }

    /// The accepted connection with its peer, or `None` when it is closed
    /// at once (its uid holds its connection limit, or its peer is unreadable).
    fn admit(&self, io: UnixStream) -> Option<PeerStream> {
        let cred = match io.peer_cred() {
            Ok(cred) => cred,
            Err(error) => {
                tracing::debug!(%error, "cannot read a Workload API peer's credentials");
                return None;
            }
        };
        let Some(slot) = self.limits.connection(cred.uid()) else {
            tracing::warn!(
                uid = cred.uid(),
                pid = cred.pid(),
                limit = self.limits.max_connections(),
                "closing a Workload API connection unread: its uid holds workload.max_connections_per_uid connections"
            );
            return None;
        };
        let peer = match peer_of(&io, cred, &self.limits) {
            Ok(peer) => peer,
            Err(error) => {
                tracing::debug!(%error, "cannot pin a Workload API peer");
                return None;
            }
        };
        let challenge: [u8; PING_LEN] = rand::random();
        Some(PeerStream {
            io,
            peer,
            cmsg: nix::cmsg_space!(UnixCredentials),
            rewrite: AuthorityRewrite::with_challenge(challenge),
            challenge: Challenge::new(challenge),
            idle_timeout: self.idle_timeout,
            idle: Box::pin(tokio::time::sleep(self.idle_timeout)),
            _slot: slot,
        })
    }
}

/// Whether an accept error means the agent is out of a resource (retrying
/// at once would spin).
fn out_of_resources(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error().map(nix::errno::Errno::from_raw),
        Some(
            nix::errno::Errno::EMFILE
                | nix::errno::Errno::ENFILE
                | nix::errno::Errno::ENOBUFS
                | nix::errno::Errno::ENOMEM
        )
    )
}

/// The peer's credentials, pinned process and executable.
fn peer_of(
    io: &UnixStream,
    cred: tokio::net::unix::UCred,
    limits: &Arc<UidLimits>,
) -> io::Result<Peer> {
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
    let exe = pid.and_then(|pid| ExeIdentity::of(pid).ok());
    Ok(Peer {
        pid,
        uid: cred.uid(),
        gid: cred.gid(),
        process,
        exe,
        connection: Arc::new(ConnectionState::new(pid, cred.uid(), limits.clone())),
    })
}

#[cfg(test)]
mod tests {
    use futures::StreamExt;

    use super::*;

    #[tokio::test]
    async fn an_accepted_connection_knows_and_pins_its_peer() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("api.sock");
        let mut incoming = bind(&path, &WorkloadSettings::default()).unwrap();
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

    /// The example configuration's layout: the data directory and the
    /// socket side by side under directories the agent creates. An
    /// unprivileged workload (uid 65534) must reach the socket: the data
    /// directory's parents used to be created 0700 with it.
    #[tokio::test]
    async fn an_unprivileged_process_reaches_a_socket_beside_the_data_directory() {
        use std::os::unix::fs::PermissionsExt;
        if own_uid() != 0 {
            eprintln!("skipped: needs root to run a process as uid 65534");
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let agent_dir = dir.path().join("hallmark/agent");
        crate::persist::DataDir::open(&agent_dir.join("data")).unwrap();
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&agent_dir.join("data")), 0o700);
        assert_eq!(mode(&agent_dir) & 0o005, 0o005, "others may search it");
        let path = agent_dir.join("api.sock");
        let mut incoming = bind(&path, &WorkloadSettings::default()).unwrap();
        let accept = tokio::spawn(async move { incoming.next().await.map(|s| s.is_ok()) });
        let status = tokio::process::Command::new("python3")
            .arg("-c")
            .arg("import socket, sys; socket.socket(socket.AF_UNIX).connect(sys.argv[1])")
            .arg(&path)
            .uid(65534)
            .gid(65534)
            .status()
            .await
            .unwrap();
        assert!(
            status.success(),
            "uid 65534 could not connect to {}",
            path.display()
        );
        assert_eq!(accept.await.unwrap(), Some(true));
    }

    #[test]
    fn the_challenge_goes_out_right_after_the_first_frame() {
        let mut c = Challenge::new([1; PING_LEN]);
        // A SETTINGS frame with one setting (6 bytes), then more frames.
        let mut out = vec![0, 0, 6, 0x4, 0, 0, 0, 0, 0, 0, 3, 0, 0, 0, 100];
        out.extend([0, 0, 4, 0x8, 0, 0, 0, 0, 0, 0, 0, 1, 0]);
        // Written in pieces: part of the header, then everything.
        assert_eq!(c.allowance(&out[..4]), 4);
        c.passed(&out[..4]);
        assert!(matches!(c.state, Outbound::First { .. }));
        assert_eq!(c.allowance(&out[4..]), 11, "up to the end of SETTINGS");
        c.passed(&out[4..10]);
        assert_eq!(c.allowance(&out[10..]), 5);
        c.passed(&out[10..15]);
        assert_eq!(c.state, Outbound::Ping(0));
        assert_eq!(&c.frame[..9], &[0, 0, 8, 0x6, 0, 0, 0, 0, 0]);
        assert_eq!(&c.frame[9..], &[1; 8]);
        // An empty first frame: the PING is due right after its header.
        let mut c = Challenge::new([2; PING_LEN]);
        let empty = [0, 0, 0, 0x4, 0, 0, 0, 0, 0, 0xff];
        assert_eq!(c.allowance(&empty), 9);
        c.passed(&empty[..9]);
        assert_eq!(c.state, Outbound::Ping(0));
    }

    #[tokio::test]
    async fn the_peer_reads_the_first_frame_then_the_ping_then_the_rest() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let (a, mut b) = UnixStream::pair().unwrap();
        let mut c = Challenge::new([3; PING_LEN]);
        let mut io = a;
        let first = [0, 0, 0, 0x4, 0, 0, 0, 0, 0];
        let second = [0, 0, 0, 0x4, 0x1, 0, 0, 0, 0];
        let mut written = Vec::new();
        for chunk in [&first[..], &second[..]] {
            let mut chunk = chunk;
            while !chunk.is_empty() {
                std::future::poll_fn(|cx| c.poll_send(&mut io, cx))
                    .await
                    .unwrap();
                let allowed = c.allowance(chunk);
                io.write_all(&chunk[..allowed]).await.unwrap();
                c.passed(&chunk[..allowed]);
                written.extend_from_slice(&chunk[..allowed]);
                chunk = &chunk[allowed..];
            }
        }
        std::future::poll_fn(|cx| c.poll_send(&mut io, cx))
            .await
            .unwrap();
        assert!(c.is_sent());
        drop(io);
        let mut read = Vec::new();
        b.read_to_end(&mut read).await.unwrap();
        let mut expected = first.to_vec();
        expected.extend_from_slice(&c.frame);
        expected.extend_from_slice(&second);
        assert_eq!(read, expected);
    }

    /// The cost of each check this module adds, per operation. Run with
    /// `cargo test -p hallmark-agent --lib -- --ignored --nocapture
    /// check_costs` (local code unoptimized; the syscalls dominate).
    #[test]
    #[ignore = "a measurement, not a test"]
    fn check_costs() {
        use std::io::{Read, Write};
        const N: u32 = 20_000;
        let per = |start: Instant| start.elapsed() / N;
        let pid = i32::try_from(std::process::id()).unwrap();
        let start = Instant::now();
        for _ in 0..N {
            ExeIdentity::of(pid).unwrap();
        }
        println!("ExeIdentity::of (stat /proc/<pid>/exe): {:?}", per(start));

        let (mut a, mut b) = std::os::unix::net::UnixStream::pair().unwrap();
        let mut data = [0u8; 512];
        let start = Instant::now();
        for _ in 0..N {
            a.write_all(&data[..100]).unwrap();
            b.read_exact(&mut data[..100]).unwrap();
        }
        println!("write + read (100 bytes), no credentials: {:?}", per(start));
        nix::sys::socket::setsockopt(&b, nix::sys::socket::sockopt::PassCred, &true).unwrap();
        let mut cmsg = nix::cmsg_space!(UnixCredentials);
        let start = Instant::now();
        for _ in 0..N {
            a.write_all(&data[..100]).unwrap();
            let (n, writer) = receive(b.as_raw_fd(), &mut data, &mut cmsg).unwrap();
            assert_eq!((n, writer.map(|w| w.0)), (100, Some(pid)));
        }
        println!(
            "write + recvmsg with SCM_CREDENTIALS (100 bytes): {:?}",
            per(start)
        );

        let limits = UidLimits::new(64, 128);
        let state = Arc::new(ConnectionState::new(Some(pid), 0, limits.clone()));
        let start = Instant::now();
        for _ in 0..N {
            state.wrote(Some((pid, 0)));
            state.check_sender().unwrap();
            drop(state.begin());
        }
        println!("sender record + check + activity guard: {:?}", per(start));
        let start = Instant::now();
        for _ in 0..N {
            drop(state.open_stream().unwrap());
        }
        println!("stream slot taken and returned: {:?}", per(start));
        let start = Instant::now();
        for _ in 0..N {
            drop(limits.connection(0).unwrap());
        }
        println!("connection slot taken and returned: {:?}", per(start));
    }

    fn own_uid() -> u32 {
        use std::os::unix::fs::MetadataExt;
        std::fs::metadata("/proc/self").unwrap().uid()
    }
}
