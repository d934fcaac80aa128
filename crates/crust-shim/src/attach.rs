//! The attach socket of a container's init process, for CRI Attach.
//!
//! Contract (crustd is the client):
//! - At Create the shim listens on a unix `SOCK_STREAM` socket named
//!   [`SOCKET_NAME`] in the container's bundle directory, mode 0600. It binds
//!   through an `O_PATH` fd of the bundle (`/proc/self/fd/<fd>/<name>`), as
//!   bundle paths may be longer than a socket address allows; clients connect
//!   the same way. The file is removed at Delete.
//! - Each client gets every byte of the process's output from the moment it
//!   is accepted, as the frames of [`crust_shim_proto::attach`] (stream
//!   [`STDOUT`], also a terminal's output, or [`STDERR`]), payloads as the
//!   copier read them (at most 8 KiB). Output goes to its usual
//!   destinations (CRI log, FIFOs) as well; a stream whose destination is
//!   empty (`/dev/null`) is not read, so it is not attached either, and a
//!   stream going to a FIFO flows only once that FIFO has a reader.
//! - The shim never reads from a client, and clients never slow the
//!   container: frames are sent without blocking into a large socket
//!   buffer ([`SEND_BUFFER`]). A client that cannot take a whole frame at
//!   once (its buffer is full) or that hung up is dropped: the shim shuts
//!   its connection down, possibly mid-frame, and it gets no more output.
//! - At most [`MAX_CLIENTS`] clients at a time; further connections are
//!   closed at once.
//! - Once every output stream of the process reached EOF (or, for a process
//!   without output streams, once its exit is reported), every client's
//!   connection is shut down (EOF), and later connections are accepted and
//!   shut down at once, so an attach to an exited container ends at once.
//!
//! Threads: none of its own. Copier threads send the frames as they copy;
//! the shim's main loop (monitor.rs) accepts connections, as it already
//! polls everything else that is not a copy or an RPC: a thread per
//! container would cost a stack and kernel task per container for an event
//! (a new attach session) that is rare and takes microseconds.

use std::fs;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use nix::errno::Errno;
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::socket::{
    AddressFamily, Backlog, MsgFlags, SockFlag, SockType, UnixAddr, bind, listen, sendmsg,
    setsockopt, sockopt,
};
use nix::unistd::{UnlinkatFlags, unlinkat};

use crust_shim_proto::attach::{HEADER_LEN, encode_header};
pub use crust_shim_proto::attach::{STDERR, STDOUT};
/// The socket's name in the bundle directory.
pub use crust_shim_proto::bundle::ATTACH_SOCKET as SOCKET_NAME;

/// Most clients attached to one process at a time.
pub const MAX_CLIENTS: usize = 16;
/// Send buffer asked for each client: how much output a client may lag
/// behind before it is dropped.
pub const SEND_BUFFER: usize = 1024 * 1024;

/// The header of a frame of `len` payload bytes on `stream`.
pub fn frame_header(stream: u8, len: usize) -> [u8; HEADER_LEN] {
    encode_header(stream, len).expect("frame payloads are at most a copy buffer")
}

/// The clients attached to one process's output. Shared by its output
/// copiers (which send), the main loop (which adds) and its stdio (which
/// closes every client once the output ended).
#[derive(Default)]
pub struct Attachers {
    inner: Mutex<Clients>,
    /// Number of clients, read without the lock by copiers on every chunk.
    count: AtomicUsize,
}

#[derive(Default)]
struct Clients {
    conns: Vec<UnixStream>,
    /// The output ended: no more clients.
    closed: bool,
}

impl Attachers {
    fn lock(&self) -> MutexGuard<'_, Clients> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Takes a new client, or hangs up on it (output ended, or too many).
    pub fn add(&self, conn: UnixStream) {
        let mut c = self.lock();
        // Clients that left while no output flowed would hold their slots
        // until the next send.
        prune_hung_up(&mut c.conns);
        if c.closed || c.conns.len() >= MAX_CLIENTS {
            hang_up(&conn);
            return;
        }
        // Root may go past net.core.wmem_max; anyone else gets what it allows.
        if setsockopt(&conn, sockopt::SndBufForce, &SEND_BUFFER).is_err() {
            let _ = setsockopt(&conn, sockopt::SndBuf, &SEND_BUFFER);
        }
        c.conns.push(conn);
        self.count.store(c.conns.len(), Ordering::Release);
    }

    /// Sends one chunk of output to every client, dropping those that
    /// cannot take it whole right now.
    pub fn send(&self, stream: u8, data: &[u8]) {
        if data.is_empty() || self.count.load(Ordering::Acquire) == 0 {
            return;
        }
        let header = frame_header(stream, data.len());
        let mut c = self.lock();
        c.conns.retain(|conn| {
            let ok = send_frame(conn.as_fd(), &header, data);
            if !ok {
                hang_up(conn);
            }
            ok
        });
        self.count.store(c.conns.len(), Ordering::Release);
    }

    /// The output ended: every client sees EOF, later ones at once.
    pub fn close(&self) {
        let mut c = self.lock();
        c.closed = true;
        for conn in c.conns.drain(..) {
            hang_up(&conn);
        }
        self.count.store(0, Ordering::Release);
    }

    #[cfg(test)]
    pub fn clients(&self) -> usize {
        self.count.load(Ordering::Acquire)
    }
}

/// Drops the clients that closed their end (POLLHUP: both directions shut;
/// a client that only shut down its writing side stays).
fn prune_hung_up(conns: &mut Vec<UnixStream>) {
    if conns.is_empty() {
        return;
    }
    let gone: Vec<bool> = {
        let mut fds: Vec<PollFd> = conns
            .iter()
            .map(|c| PollFd::new(c.as_fd(), PollFlags::empty()))
            .collect();
        if poll(&mut fds, PollTimeout::ZERO).is_err() {
            return;
        }
        fds.iter()
            .map(|f| {
                f.revents()
                    .is_some_and(|r| r.intersects(PollFlags::POLLHUP | PollFlags::POLLERR))
            })
            .collect()
    };
    let mut i = 0;
    conns.retain(|_| {
        i += 1;
        !gone[i - 1]
    });
}

/// One whole frame without blocking, or false.
fn send_frame(fd: BorrowedFd<'_>, header: &[u8; HEADER_LEN], data: &[u8]) -> bool {
    let iov = [io::IoSlice::new(header), io::IoSlice::new(data)];
    let flags = MsgFlags::MSG_DONTWAIT | MsgFlags::MSG_NOSIGNAL;
    loop {
        match sendmsg::<()>(fd.as_raw_fd(), &iov, &[], flags, None) {
            Ok(n) => return n == header.len() + data.len(),
            Err(Errno::EINTR) => continue,
            Err(_) => return false,
        }
    }
}

/// Ends a connection for the peer even where a forked helper or a
/// container init not yet exec'd still holds a copy of the fd.
fn hang_up(conn: &UnixStream) {
    let _ = conn.shutdown(std::net::Shutdown::Both);
}

/// An `O_PATH` fd of a directory (close-on-exec).
pub fn open_path(dir: &Path) -> io::Result<OwnedFd> {
    Ok(fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_PATH | libc::O_DIRECTORY)
        .open(dir)?
        .into())
}

/// The listening socket of one container, and the clients it attached.
pub struct AttachSocket {
    listener: UnixListener,
    /// The bundle directory (`O_PATH`), to unlink the socket by.
    dir: OwnedFd,
    attachers: Arc<Attachers>,
    removed: AtomicBool,
}

impl AttachSocket {
    /// Listens on [`SOCKET_NAME`] in `bundle`, replacing a stale socket of
    /// that name.
    pub fn bind(bundle: &Path) -> io::Result<AttachSocket> {
        let dir = open_path(bundle)?;
        let path = format!("/proc/self/fd/{}/{SOCKET_NAME}", dir.as_raw_fd());
        if fs::symlink_metadata(&path)
            .is_ok_and(|m| std::os::unix::fs::FileTypeExt::is_socket(&m.file_type()))
        {
            let _ = fs::remove_file(&path);
        }
        let sock = nix::sys::socket::socket(
            AddressFamily::Unix,
            SockType::Stream,
            SockFlag::SOCK_CLOEXEC | SockFlag::SOCK_NONBLOCK,
            None,
        )?;
        bind(sock.as_raw_fd(), &UnixAddr::new(path.as_str())?)?;
        let socket = AttachSocket {
            listener: UnixListener::from(sock),
            dir,
            attachers: Arc::new(Attachers::default()),
            removed: AtomicBool::new(false),
        };
        // Restricted before it listens: nobody can connect in between.
        fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o600))?;
        listen(&socket.listener, Backlog::new(MAX_CLIENTS as i32)?)?;
        Ok(socket)
    }

    pub fn attachers(&self) -> &Arc<Attachers> {
        &self.attachers
    }

    pub fn fd(&self) -> BorrowedFd<'_> {
        self.listener.as_fd()
    }

    /// Accepts every pending connection (the listener is non-blocking).
    /// Returns how many.
    pub fn accept(&self) -> usize {
        let mut n = 0;
        loop {
            match self.listener.accept() {
                Ok((conn, _)) => {
                    self.attachers.add(conn);
                    n += 1;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return n,
                // ECONNABORTED and the like: that connection is gone.
                Err(e) if e.raw_os_error() == Some(libc::ECONNABORTED) => {}
                Err(e) => {
                    log::warn!("accept on attach socket: {e}");
                    return n;
                }
            }
        }
    }

    /// Removes the socket file and hangs up on every client (Delete).
    pub fn remove(&self) {
        if !self.removed.swap(true, Ordering::SeqCst) {
            let _ = unlinkat(
                Some(self.dir.as_raw_fd()),
                SOCKET_NAME,
                UnlinkatFlags::NoRemoveDir,
            );
        }
        self.attachers.close();
    }
}

impl Drop for AttachSocket {
    fn drop(&mut self) {
        self.remove();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crust_shim_proto::attach::{FrameError, decode};
    use std::io::Read;

    /// Reads frames until EOF; a dropped client may end mid-frame.
    fn frames(mut r: impl Read, may_truncate: bool) -> Vec<(u8, Vec<u8>)> {
        let mut all = Vec::new();
        r.read_to_end(&mut all).unwrap();
        let mut out = Vec::new();
        let mut rest = &all[..];
        while !rest.is_empty() {
            match decode(rest) {
                Ok((frame, next)) => {
                    out.push((frame.stream, frame.payload.to_vec()));
                    rest = next;
                }
                Err(FrameError::Truncated) => {
                    assert!(may_truncate, "truncated frame");
                    break;
                }
                Err(e) => panic!("{e}"),
            }
        }
        out
    }

    #[test]
    fn frame_header_is_stream_and_big_endian_length() {
        assert_eq!(frame_header(STDOUT, 0), [1, 0, 0, 0, 0]);
        assert_eq!(frame_header(STDERR, 5), [2, 0, 0, 0, 5]);
        assert_eq!(frame_header(STDOUT, 8192), [1, 0, 0, 0x20, 0]);
        assert_eq!(frame_header(STDERR, 0x0A_0B0C), [2, 0, 0x0A, 0x0B, 0x0C]);
    }

    #[test]
    fn clients_get_frames_then_eof() {
        let a = Attachers::default();
        let (ours, theirs) = UnixStream::pair().unwrap();
        a.send(STDOUT, b"before");
        a.add(ours);
        assert_eq!(a.clients(), 1);
        a.send(STDOUT, b"hello\n");
        a.send(STDERR, b"oops");
        a.send(STDOUT, b"");
        a.close();
        assert_eq!(a.clients(), 0);
        assert_eq!(
            frames(&theirs, false),
            vec![(1, b"hello\n".to_vec()), (2, b"oops".to_vec())]
        );
        // Closed: a new client is hung up on at once.
        let (ours, mut theirs) = UnixStream::pair().unwrap();
        a.add(ours);
        let mut buf = [0u8; 1];
        assert_eq!(theirs.read(&mut buf).unwrap(), 0);
    }

    #[test]
    fn slow_and_gone_clients_are_dropped_and_others_kept() {
        let a = Attachers::default();
        let (slow, slow_peer) = UnixStream::pair().unwrap();
        let (gone, gone_peer) = UnixStream::pair().unwrap();
        let (good, mut good_peer) = UnixStream::pair().unwrap();
        a.add(slow);
        a.add(gone);
        a.add(good);
        drop(gone_peer);
        // Far more than any send buffer: the slow client (never reading)
        // is dropped, sending never blocks, the reading client gets it all.
        let chunk = vec![b'x'; 8192];
        let mut frame = vec![0u8; HEADER_LEN + chunk.len()];
        for _ in 0..2048 {
            a.send(STDOUT, &chunk);
            good_peer.read_exact(&mut frame).unwrap();
            assert_eq!(frame[..HEADER_LEN], frame_header(STDOUT, chunk.len()));
            assert_eq!(frame[HEADER_LEN..], chunk[..]);
        }
        assert_eq!(a.clients(), 1, "the slow and the gone client are dropped");
        a.close();
        let mut buf = [0u8; 1];
        assert_eq!(good_peer.read(&mut buf).unwrap(), 0, "EOF at close");
        // The slow client got whole frames up to its limit, then EOF.
        let slow_frames = frames(&slow_peer, true);
        assert!(!slow_frames.is_empty() && slow_frames.len() < 2048);
        assert!(slow_frames.iter().all(|(s, p)| *s == STDOUT && p == &chunk));
    }

    #[test]
    fn at_most_max_clients() {
        let a = Attachers::default();
        let mut peers = Vec::new();
        for _ in 0..MAX_CLIENTS + 2 {
            let (ours, theirs) = UnixStream::pair().unwrap();
            a.add(ours);
            peers.push(theirs);
        }
        assert_eq!(a.clients(), MAX_CLIENTS);
        let mut buf = [0u8; 1];
        let extra = &mut peers[MAX_CLIENTS];
        assert_eq!(extra.read(&mut buf).unwrap(), 0, "extra client hung up on");
    }

    #[test]
    fn clients_that_left_free_their_slots() {
        let a = Attachers::default();
        let mut peers = Vec::new();
        for _ in 0..MAX_CLIENTS {
            let (ours, theirs) = UnixStream::pair().unwrap();
            a.add(ours);
            peers.push(theirs);
        }
        assert_eq!(a.clients(), MAX_CLIENTS);
        drop(peers);
        // Half-closed (no more writing) is still attached.
        let (ours, half) = UnixStream::pair().unwrap();
        half.shutdown(std::net::Shutdown::Write).unwrap();
        a.add(ours);
        assert_eq!(a.clients(), 1, "the clients that left are gone");
        let (ours, mut theirs) = UnixStream::pair().unwrap();
        a.add(ours);
        assert_eq!(a.clients(), 2);
        a.send(STDOUT, b"x");
        let mut buf = [0u8; 6];
        theirs.read_exact(&mut buf).unwrap();
        assert_eq!(buf, [1, 0, 0, 0, 1, b'x']);
        (&half).read_exact(&mut buf).unwrap();
        assert_eq!(buf, [1, 0, 0, 0, 1, b'x']);
    }

    #[test]
    fn binds_in_a_long_bundle_path_and_removes() {
        let dir = tempfile::tempdir().unwrap();
        let bundle = dir.path().join("b".repeat(120));
        fs::create_dir(&bundle).unwrap();
        let sock = AttachSocket::bind(&bundle).unwrap();
        let path = bundle.join(SOCKET_NAME);
        let meta = fs::symlink_metadata(&path).unwrap();
        assert_eq!(
            std::os::unix::fs::PermissionsExt::mode(&meta.permissions()) & 0o777,
            0o600
        );
        // Connect the way crustd does: through an O_PATH fd of the bundle.
        let d = open_path(&bundle).unwrap();
        let mut client =
            UnixStream::connect(format!("/proc/self/fd/{}/{SOCKET_NAME}", d.as_raw_fd())).unwrap();
        assert_eq!(sock.accept(), 1);
        sock.attachers().send(STDERR, b"e");
        let mut buf = [0u8; 6];
        client.read_exact(&mut buf).unwrap();
        assert_eq!(buf, [2, 0, 0, 0, 1, b'e']);
        // A stale socket of that name is replaced.
        drop(sock);
        assert!(!path.exists(), "removed");
        assert_eq!(client.read(&mut buf).unwrap(), 0, "EOF once removed");
        let stale = std::os::unix::net::UnixListener::bind(format!(
            "/proc/self/fd/{}/{SOCKET_NAME}",
            d.as_raw_fd()
        ))
        .unwrap();
        drop(stale);
        let again = AttachSocket::bind(&bundle).unwrap();
        again.remove();
        assert!(!path.exists());
    }
}
