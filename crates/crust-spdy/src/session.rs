//! A SPDY/3.1 session over one byte stream, multiplexing streams the way
//! moby/spdystream (and so kubectl, crictl and the kubelet) expects.
//!
//! Tasks: one reader task decodes frames and routes them; one writer task
//! owns the header compressor and serialises every outgoing frame to the
//! socket, in the order the frames were queued; a third task waits for
//! both and then marks the session closed. All handles ([`Session`],
//! [`Stream`], [`StreamReader`], [`StreamWriter`]) talk to them through
//! shared state and an ordered queue.
//!
//! # Flow control
//!
//! SPDY/3.1 adds per-stream and per-session windows (64 KiB initially,
//! reopened by WINDOW_UPDATE). spdystream (v0.5, vendored by cri-tools and
//! client-go) does not implement them: it never sends WINDOW_UPDATE, its
//! `Serve` loop drops received WINDOW_UPDATE and SETTINGS frames in the
//! "unhandled frame type" branch, and `Stream.Write` sends one DATA frame
//! per call with no window check. So this session never blocks its own
//! sends on the peer's window (a peer that counts would otherwise be the
//! only thing to stop us, and spdystream does not), but it does send
//! WINDOW_UPDATE, per stream and for the session (stream 0), as its
//! readers consume data, so a peer that enforces windows keeps sending.
//!
//! # Back-pressure
//!
//! Received data is queued per stream in a bounded channel
//! ([`STREAM_QUEUE`] frames). When a stream's reader stops reading and its
//! queue is full, the reader task waits, so the whole session stops
//! reading from the socket (head-of-line blocking, as spdystream's
//! unbuffered per-stream channels do) until that reader reads, drops its
//! [`StreamReader`], or the session ends. Newly opened peer streams are
//! queued the same way on the accept channel. Outgoing DATA is limited by
//! a per-session budget of queued-but-unwritten bytes ([`SEND_BUDGET`]):
//! writers wait while the socket is slower than they are.

use std::collections::HashMap;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, ready};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, oneshot, watch};
use tokio_util::sync::PollSemaphore;
use tracing::{debug, trace, warn};

use crate::frame::{
    DEFAULT_MAX_DATA_FRAME, Decoder, Encoder, Frame, Headers, MAX_HEADER_BLOCK, goaway_status,
    rst_status,
};

/// Largest DATA payload this side sends: writes are cut at this size.
pub const MAX_WRITE_CHUNK: usize = 64 * 1024;

/// Received DATA frames queued per stream before the session stops
/// reading from the socket.
pub const STREAM_QUEUE: usize = 8;

/// Bytes of outgoing DATA queued for the writer task before writers wait.
pub const SEND_BUDGET: usize = 512 * 1024;

/// Consumed bytes (per stream and per session) that trigger a
/// WINDOW_UPDATE: half SPDY/3.1's initial 64 KiB window.
const WINDOW_UPDATE_THRESHOLD: u32 = 32 * 1024;

/// Outgoing bytes encoded before the writer task writes them out.
const WRITE_BATCH: usize = 256 * 1024;

/// How long [`Session::close`] keeps reading (and discarding) after
/// GOAWAY, so the peer's last frames do not turn the close into a TCP
/// reset that could destroy data the peer has not read yet.
const CLOSE_DRAIN: Duration = Duration::from_secs(2);

/// How long the writer may take to flush after the reader has ended.
const WRITER_GRACE: Duration = Duration::from_secs(5);
/// Control frames (PING answers, RST_STREAM, WINDOW_UPDATE, SYN_REPLY)
/// that may wait for the socket before the peer counts as not reading.
const MAX_QUEUED_CONTROL: usize = 4096;

/// Which end of the connection this is. Server-initiated stream ids are
/// even, client-initiated ones odd (so are PING ids).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Server,
    Client,
}

impl Role {
    /// Parity (id % 2) of ids this side initiates.
    fn parity(self) -> u32 {
        match self {
            Role::Server => 0,
            Role::Client => 1,
        }
    }
}

/// Per-session limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Streams the peer may have open at once; further SYN_STREAMs are
    /// answered with RST_STREAM (REFUSED_STREAM).
    pub max_streams: usize,
    /// Largest DATA payload accepted from the peer; a larger frame is a
    /// protocol error that ends the session.
    pub max_data_frame: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            // SPDY/3's recommended minimum for MAX_CONCURRENT_STREAMS.
            max_streams: 100,
            max_data_frame: DEFAULT_MAX_DATA_FRAME,
        }
    }
}

/// Session and stream errors.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The session has ended (GOAWAY, connection closed or failed, or
    /// [`Session::close`]).
    #[error("SPDY session closed")]
    Closed,
    /// The peer reset the stream (RST_STREAM) instead of replying.
    #[error("SPDY stream reset by peer (status {0})")]
    Reset(u32),
    /// The stream is no longer open (finished or reset).
    #[error("SPDY stream {0} is not open")]
    StreamClosed(u32),
    /// This side has used all 2^30 of its stream ids.
    #[error("SPDY stream ids exhausted")]
    StreamIdsExhausted,
    /// [`Stream::reply`] on a stream this side opened.
    #[error("SPDY stream {0} was opened by this side; only the peer's streams get a reply")]
    NotPeerStream(u32),
    /// The header block would exceed what peers accept.
    #[error("SPDY header block too large")]
    HeadersTooLarge,
}

/// What the writer task is asked to do, in order.
enum Out {
    Frame(Frame),
    /// A frame [`Shared::push`] counted in `queued_control`.
    Control(Frame),
    /// DATA holding part of the send budget until it is written.
    Data(Frame, OwnedSemaphorePermit),
    /// Write what is queued, shut the write side down, and stop.
    Close,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stop {
    Running,
    /// Local close: stop handling frames, read and discard until EOF.
    Drain,
    /// Stop reading now.
    Abort,
}

struct Entry {
    /// Sends received data to the stream's reader; `None` once the peer
    /// has finished (or never will send).
    data_tx: Option<mpsc::Sender<Bytes>>,
    /// For streams this side opened, until SYN_REPLY (or RST) arrives.
    reply_tx: Option<oneshot::Sender<Result<Headers, Error>>>,
    peer_opened: bool,
    /// SYN_REPLY sent (peer-opened streams; always true for ours).
    replied: bool,
    local_fin: bool,
    remote_fin: bool,
    /// Consumed bytes not yet announced by WINDOW_UPDATE.
    unacked: u32,
}

struct State {
    ended: bool,
    streams: HashMap<u32, Entry>,
    next_id: u32,
    /// Highest stream id the peer has opened (0: none yet).
    last_peer_id: u32,
    /// Open streams in `streams` that the peer initiated.
    peer_streams: usize,
    next_ping: u32,
    pings: HashMap<u32, oneshot::Sender<()>>,
    /// Session-level consumed bytes not yet announced.
    session_unacked: u32,
}

struct Shared {
    role: Role,
    limits: Limits,
    state: Mutex<State>,
    out: mpsc::UnboundedSender<Out>,
    /// Control frames queued and not yet written: a peer that sends PINGs
    /// (or anything we must answer) but never reads would otherwise grow
    /// the queue without bound.
    queued_control: AtomicUsize,
    budget: Arc<Semaphore>,
    stop: watch::Sender<Stop>,
    closed: watch::Sender<bool>,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock cannot leave State inconsistent
        // in a way that matters more than losing the session; go on.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn push(&self, frame: Frame) {
        if self.queued_control.fetch_add(1, Ordering::Relaxed) >= MAX_QUEUED_CONTROL {
            // The peer does not read what we owe it: stop reading it. The
            // reader then ends the session and the stuck writer is
            // aborted after its grace period.
            self.queued_control.fetch_sub(1, Ordering::Relaxed);
            if self.stop.send_if_modified(|s| {
                let running = *s == Stop::Running;
                if running {
                    *s = Stop::Abort;
                }
                running
            }) {
                warn!("SPDY peer does not read its control frames; ending the session");
            }
            return;
        }
        // Fails only once the writer task is gone, i.e. the session ended.
        let _ = self.out.send(Out::Control(frame));
    }

    /// Ends the session once: streams see EOF (after what is queued for
    /// them), pending opens and pings fail, writers get errors, the
    /// writer task flushes what is queued (plus GOAWAY with `goaway`
    /// status, if given) and shuts the socket's write side.
    fn end(&self, goaway: Option<u32>, stop: Stop) {
        {
            let mut st = self.lock();
            if st.ended {
                return;
            }
            st.ended = true;
            for (_, entry) in st.streams.drain() {
                if let Some(tx) = entry.reply_tx {
                    let _ = tx.send(Err(Error::Closed));
                }
            }
            st.peer_streams = 0;
            st.pings.clear();
            if let Some(status) = goaway {
                let _ = self.out.send(Out::Frame(Frame::GoAway {
                    last_good_stream_id: st.last_peer_id,
                    status,
                }));
            }
            let _ = self.out.send(Out::Close);
        }
        self.budget.close();
        self.stop.send_if_modified(|s| {
            if *s == Stop::Running {
                *s = stop;
                true
            } else {
                false
            }
        });
    }

    /// Removes a stream's entry (its reader sees EOF once its queue is
    /// drained).
    fn remove(st: &mut State, id: u32) -> Option<Entry> {
        let entry = st.streams.remove(&id)?;
        if entry.peer_opened {
            st.peer_streams = st.peer_streams.saturating_sub(1);
        }
        Some(entry)
    }

    fn remote_finished(st: &mut State, id: u32) {
        if let Some(entry) = st.streams.get_mut(&id) {
            entry.remote_fin = true;
            entry.data_tx = None;
            if entry.local_fin {
                Self::remove(st, id);
            }
        }
    }

    /// Accounts for `n` bytes a reader consumed (or the session dropped)
    /// and sends WINDOW_UPDATEs as thresholds are crossed.
    fn consumed(&self, id: Option<u32>, n: usize) {
        let n = u32::try_from(n).unwrap_or(u32::MAX);
        if n == 0 {
            return;
        }
        let mut st = self.lock();
        if st.ended {
            return;
        }
        st.session_unacked = st.session_unacked.saturating_add(n);
        if st.session_unacked >= WINDOW_UPDATE_THRESHOLD {
            let delta = std::mem::take(&mut st.session_unacked).min(0x7fff_ffff);
            self.push(Frame::WindowUpdate {
                stream_id: 0,
                delta,
            });
        }
        let Some(id) = id else { return };
        let Some(entry) = st.streams.get_mut(&id) else {
            return;
        };
        if entry.remote_fin {
            return;
        }
        entry.unacked = entry.unacked.saturating_add(n);
        if entry.unacked >= WINDOW_UPDATE_THRESHOLD {
            let delta = std::mem::take(&mut entry.unacked).min(0x7fff_ffff);
            self.push(Frame::WindowUpdate {
                stream_id: id,
                delta,
            });
        }
    }

    /// Queues DATA on stream `id` (empty with `fin` to finish it), first
    /// replying to a peer stream nobody replied to: spdystream drops data
    /// on a stream before its reply.
    fn send_data(
        &self,
        id: u32,
        data: Bytes,
        fin: bool,
        permit: Option<OwnedSemaphorePermit>,
    ) -> io::Result<()> {
        let mut st = self.lock();
        if st.ended {
            return Err(io::Error::new(io::ErrorKind::BrokenPipe, Error::Closed));
        }
        let Some(entry) = st.streams.get_mut(&id) else {
            return Err(io::Error::new(
                io::ErrorKind::BrokenPipe,
                Error::StreamClosed(id),
            ));
        };
        if entry.local_fin {
            if fin && data.is_empty() {
                return Ok(());
            }
            return Err(io::Error::new(
                io::ErrorKind::BrokenPipe,
                Error::StreamClosed(id),
            ));
        }
        if !entry.replied {
            entry.replied = true;
            self.push(Frame::SynReply {
                stream_id: id,
                fin: false,
                headers: Vec::new(),
            });
        }
        let frame = Frame::Data {
            stream_id: id,
            fin,
            data,
        };
        let _ = match permit {
            Some(p) => self.out.send(Out::Data(frame, p)),
            None => self.out.send(Out::Frame(frame)),
        };
        if fin {
            entry.local_fin = true;
            if entry.remote_fin {
                Self::remove(&mut st, id);
            }
        }
        Ok(())
    }

    /// The last writer handle of stream `id` is gone: finish the stream
    /// if nobody did (an unreplied peer stream gets a SYN_REPLY with FIN).
    fn writer_dropped(&self, id: u32) {
        let mut st = self.lock();
        if st.ended {
            return;
        }
        let Some(entry) = st.streams.get_mut(&id) else {
            return;
        };
        if entry.local_fin {
            return;
        }
        entry.local_fin = true;
        if entry.replied {
            self.push(Frame::Data {
                stream_id: id,
                fin: true,
                data: Bytes::new(),
            });
        } else {
            entry.replied = true;
            self.push(Frame::SynReply {
                stream_id: id,
                fin: true,
                headers: Vec::new(),
            });
        }
        if entry.remote_fin {
            Self::remove(&mut st, id);
        }
    }

    fn reset(&self, id: u32, status: u32) {
        let mut st = self.lock();
        if st.ended {
            return;
        }
        if Self::remove(&mut st, id).is_some() {
            self.push(Frame::RstStream {
                stream_id: id,
                status,
            });
        }
    }
}

fn check_headers(headers: &Headers) -> Result<(), Error> {
    let size: usize = 4 + headers
        .iter()
        .map(|(n, v)| 8 + n.len() + v.len())
        .sum::<usize>();
    if size > MAX_HEADER_BLOCK {
        return Err(Error::HeadersTooLarge);
    }
    Ok(())
}

/// A SPDY session: a cheap, cloneable handle. Dropping the handles does
/// not end the session; [`Session::close`] does, as does the peer.
#[derive(Clone)]
pub struct Session {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("role", &self.shared.role)
            .finish_non_exhaustive()
    }
}

impl Session {
    /// Starts a session over `io` (spawning its tasks on the current tokio
    /// runtime). The receiver yields the streams the peer opens; they
    /// wait for [`Stream::reply`] (or a first write, which replies with
    /// no headers). Dropping the receiver refuses further peer streams.
    pub fn new<IO>(io: IO, role: Role, limits: Limits) -> (Session, mpsc::Receiver<Stream>)
    where
        IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let (out_tx, out_rx) = mpsc::unbounded_channel();
        let (accept_tx, accept_rx) = mpsc::channel(limits.max_streams.clamp(1, 64));
        let (stop, _) = watch::channel(Stop::Running);
        let (closed, _) = watch::channel(false);
        let first = match role {
            Role::Server => 2,
            Role::Client => 1,
        };
        let shared = Arc::new(Shared {
            role,
            limits,
            state: Mutex::new(State {
                ended: false,
                streams: HashMap::new(),
                next_id: first,
                last_peer_id: 0,
                peer_streams: 0,
                next_ping: first,
                pings: HashMap::new(),
                session_unacked: 0,
            }),
            out: out_tx,
            queued_control: AtomicUsize::new(0),
            budget: Arc::new(Semaphore::new(SEND_BUDGET)),
            stop,
            closed,
        });
        let (rd, wr) = tokio::io::split(io);
        let sh = shared.clone();
        tokio::spawn(async move {
            let reader = tokio::spawn(read_task(sh.clone(), rd, accept_tx));
            let mut writer = tokio::spawn(write_task(sh.clone(), wr, out_rx));
            let _ = reader.await;
            // The reader ends only after the session has ended (it ends it
            // itself, or was stopped by whoever did), so the writer has
            // been told to finish.
            sh.end(None, Stop::Abort);
            if tokio::time::timeout(WRITER_GRACE, &mut writer)
                .await
                .is_err()
            {
                debug!("SPDY writer did not finish in time; aborting it");
                writer.abort();
                let _ = writer.await;
            }
            sh.closed.send_replace(true);
        });
        (Session { shared }, accept_rx)
    }

    /// Opens a stream: sends SYN_STREAM with `headers` and waits for the
    /// peer's SYN_REPLY (spdystream's `CreateStream(headers, nil, false)`
    /// followed by `Wait()`). A RST_STREAM in reply gives
    /// [`Error::Reset`].
    pub async fn open_stream(&self, headers: Headers) -> Result<Stream, Error> {
        check_headers(&headers)?;
        let (reply_tx, reply_rx) = oneshot::channel();
        let (data_tx, data_rx) = mpsc::channel(STREAM_QUEUE);
        let id = {
            let mut st = self.shared.lock();
            if st.ended {
                return Err(Error::Closed);
            }
            let id = st.next_id;
            if id > 0x7fff_ffff {
                return Err(Error::StreamIdsExhausted);
            }
            st.next_id += 2;
            st.streams.insert(
                id,
                Entry {
                    data_tx: Some(data_tx),
                    reply_tx: Some(reply_tx),
                    peer_opened: false,
                    replied: true,
                    local_fin: false,
                    remote_fin: false,
                    unacked: 0,
                },
            );
            self.shared.push(Frame::SynStream {
                stream_id: id,
                associated_to: 0,
                priority: 0,
                fin: false,
                unidirectional: false,
                headers: headers.clone(),
            });
            id
        };
        debug!(stream = id, ?headers, "SPDY stream opened");
        match reply_rx.await {
            Ok(Ok(_reply_headers)) => Ok(Stream::new(
                self.shared.clone(),
                id,
                headers,
                false,
                data_rx,
            )),
            Ok(Err(e)) => Err(e),
            Err(_) => Err(Error::Closed),
        }
    }

    /// Sends a PING and waits for the peer's echo; returns the round trip.
    pub async fn ping(&self) -> Result<Duration, Error> {
        let (tx, rx) = oneshot::channel();
        {
            let mut st = self.shared.lock();
            if st.ended {
                return Err(Error::Closed);
            }
            let id = st.next_ping;
            st.next_ping = if id >= 0x7fff_fffd {
                id % 2 + 2
            } else {
                id + 2
            };
            st.pings.insert(id, tx);
            self.shared.push(Frame::Ping { id });
        }
        let start = Instant::now();
        rx.await.map_err(|_| Error::Closed)?;
        Ok(start.elapsed())
    }

    /// Ends the session: GOAWAY (naming the last peer stream accepted)
    /// after everything already queued, then the connection is closed.
    /// Returns once it is (see [`Session::closed`]); that can take up to
    /// a couple of seconds if the peer does not close its side.
    pub async fn close(&self) {
        self.shared.end(Some(goaway_status::OK), Stop::Drain);
        self.closed().await;
    }

    /// Resolves once the connection is gone: the peer closed it or sent
    /// GOAWAY, it failed, the peer broke the protocol, or
    /// [`Session::close`] was called.
    pub async fn closed(&self) {
        let mut rx = self.shared.closed.subscribe();
        let _ = rx.wait_for(|closed| *closed).await;
    }

    /// Whether the session has ended (the connection may still be
    /// flushing; [`Session::closed`] waits for that).
    pub fn is_ended(&self) -> bool {
        self.shared.lock().ended
    }
}

/// One SPDY stream: its opening headers, a reader and a writer. Also
/// `AsyncRead` + `AsyncWrite` itself; [`Stream::split`] separates them.
pub struct Stream {
    headers: Headers,
    peer_opened: bool,
    reader: StreamReader,
    writer: StreamWriter,
}

impl std::fmt::Debug for Stream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Stream")
            .field("id", &self.id())
            .field("headers", &self.headers)
            .field("peer_opened", &self.peer_opened)
            .finish_non_exhaustive()
    }
}

impl Stream {
    fn new(
        shared: Arc<Shared>,
        id: u32,
        headers: Headers,
        peer_opened: bool,
        rx: mpsc::Receiver<Bytes>,
    ) -> Self {
        let guard = Arc::new(WriterGuard {
            id,
            shared: shared.clone(),
            finished: AtomicBool::new(false),
        });
        Stream {
            headers,
            peer_opened,
            reader: StreamReader {
                id,
                shared: shared.clone(),
                rx,
                pending: Bytes::new(),
            },
            writer: StreamWriter {
                sem: PollSemaphore::new(shared.budget.clone()),
                guard,
            },
        }
    }

    pub fn id(&self) -> u32 {
        self.reader.id
    }

    /// The SYN_STREAM headers (the peer's for accepted streams, ours for
    /// opened ones).
    pub fn headers(&self) -> &Headers {
        &self.headers
    }

    /// The first header named `name` (ASCII case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// Accepts a peer-opened stream with SYN_REPLY. Idempotent; the first
    /// write on an unreplied stream replies with no headers by itself.
    pub async fn reply(&self, headers: Headers) -> Result<(), Error> {
        let id = self.id();
        if !self.peer_opened {
            return Err(Error::NotPeerStream(id));
        }
        check_headers(&headers)?;
        let shared = &self.writer.guard.shared;
        let mut st = shared.lock();
        if st.ended {
            return Err(Error::Closed);
        }
        let Some(entry) = st.streams.get_mut(&id) else {
            return Err(Error::StreamClosed(id));
        };
        if !entry.replied {
            entry.replied = true;
            shared.push(Frame::SynReply {
                stream_id: id,
                fin: false,
                headers,
            });
        }
        Ok(())
    }

    /// Resets the stream (RST_STREAM with `status`, see
    /// [`rst_status`](crate::frame::rst_status)): both directions end at
    /// once.
    pub fn reset(&self, status: u32) {
        self.writer.reset(status);
    }

    pub fn split(self) -> (StreamReader, StreamWriter) {
        (self.reader, self.writer)
    }
}

impl AsyncRead for Stream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.reader).poll_read(cx, buf)
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.writer).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.writer).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.writer).poll_shutdown(cx)
    }
}

/// The receiving half of a stream. Ends (EOF / `None`) when the peer
/// finishes the stream (FIN), resets it, or the session ends; data
/// queued before that is still delivered.
pub struct StreamReader {
    id: u32,
    shared: Arc<Shared>,
    rx: mpsc::Receiver<Bytes>,
    /// Rest of a chunk partly returned by `poll_read`.
    pending: Bytes,
}

impl std::fmt::Debug for StreamReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StreamReader")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

impl StreamReader {
    pub fn id(&self) -> u32 {
        self.id
    }

    /// The next chunk of data (one DATA frame's payload, or what a
    /// partial `poll_read` left of it); `None` at the end of the stream.
    pub async fn recv(&mut self) -> Option<Bytes> {
        if !self.pending.is_empty() {
            return Some(std::mem::take(&mut self.pending));
        }
        let chunk = self.rx.recv().await?;
        self.shared.consumed(Some(self.id), chunk.len());
        Some(chunk)
    }
}

impl AsyncRead for StreamReader {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if buf.remaining() == 0 {
            return Poll::Ready(Ok(()));
        }
        if self.pending.is_empty() {
            match ready!(self.rx.poll_recv(cx)) {
                None => return Poll::Ready(Ok(())),
                Some(chunk) => {
                    self.shared.consumed(Some(self.id), chunk.len());
                    self.pending = chunk;
                }
            }
        }
        let n = self.pending.len().min(buf.remaining());
        let chunk = self.pending.split_to(n);
        buf.put_slice(&chunk);
        Poll::Ready(Ok(()))
    }
}

/// Finishes the stream when the last writer handle goes away.
struct WriterGuard {
    id: u32,
    shared: Arc<Shared>,
    /// FIN sent through a writer handle: further shutdowns are no-ops.
    finished: AtomicBool,
}

impl Drop for WriterGuard {
    fn drop(&mut self) {
        if !self.finished.load(Ordering::Acquire) {
            self.shared.writer_dropped(self.id);
        }
    }
}

/// The sending half of a stream; clones share the stream. Each write is
/// sent as DATA frames of at most [`MAX_WRITE_CHUNK`] bytes;
/// `poll_shutdown` sends an empty DATA frame with FIN. When the last
/// clone is dropped without that, FIN is sent then. Writes fail once the
/// stream is finished or reset or the session has ended.
pub struct StreamWriter {
    sem: PollSemaphore,
    guard: Arc<WriterGuard>,
}

impl std::fmt::Debug for StreamWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StreamWriter")
            .field("id", &self.guard.id)
            .finish_non_exhaustive()
    }
}

impl Clone for StreamWriter {
    fn clone(&self) -> Self {
        Self {
            sem: PollSemaphore::new(self.guard.shared.budget.clone()),
            guard: self.guard.clone(),
        }
    }
}

impl StreamWriter {
    pub fn id(&self) -> u32 {
        self.guard.id
    }

    /// Resets the stream (RST_STREAM with `status`).
    pub fn reset(&self, status: u32) {
        self.guard.shared.reset(self.guard.id, status);
    }

    /// Sends FIN (like `shutdown`, without needing `&mut`).
    pub fn finish(&self) -> io::Result<()> {
        if self.guard.finished.load(Ordering::Acquire) {
            return Ok(());
        }
        self.guard
            .shared
            .send_data(self.guard.id, Bytes::new(), true, None)?;
        self.guard.finished.store(true, Ordering::Release);
        Ok(())
    }
}

impl AsyncWrite for StreamWriter {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        if buf.is_empty() {
            return Poll::Ready(Ok(0));
        }
        let want = buf.len().min(MAX_WRITE_CHUNK);
        // `want` <= 64 KiB always fits in u32 and in the budget.
        let Some(permit) = ready!(self.sem.poll_acquire_many(cx, want as u32)) else {
            return Poll::Ready(Err(io::Error::new(
                io::ErrorKind::BrokenPipe,
                Error::Closed,
            )));
        };
        let n = want.min(permit.num_permits());
        let data = Bytes::copy_from_slice(&buf[..n]);
        self.guard
            .shared
            .send_data(self.guard.id, data, false, Some(permit))?;
        Poll::Ready(Ok(n))
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(self.finish())
    }
}

/// Why the frame loop stopped.
enum ReadEnd {
    Eof,
    GoAway,
    Io(io::Error),
    Protocol(String),
}

async fn read_task<R>(shared: Arc<Shared>, mut rd: R, accept_tx: mpsc::Sender<Stream>)
where
    R: AsyncRead + Unpin,
{
    let mut stop = shared.stop.subscribe();
    let end = tokio::select! {
        end = read_frames(&shared, &mut rd, &accept_tx) => Some(end),
        _ = stop.wait_for(|s| *s != Stop::Running) => None,
    };
    drop(accept_tx);
    match end {
        None => {}
        Some(ReadEnd::Eof) => {
            debug!("SPDY connection closed by peer");
            shared.end(None, Stop::Abort);
        }
        Some(ReadEnd::GoAway) => {
            debug!("SPDY GOAWAY received");
            shared.end(None, Stop::Abort);
        }
        Some(ReadEnd::Io(e)) => {
            debug!(error = %e, "SPDY connection read failed");
            shared.end(None, Stop::Abort);
        }
        Some(ReadEnd::Protocol(e)) => {
            warn!(error = %e, "SPDY protocol error from peer; sending GOAWAY");
            shared.end(Some(goaway_status::PROTOCOL_ERROR), Stop::Abort);
        }
    }
    if *stop.borrow() == Stop::Drain {
        let mut scratch = vec![0u8; 16 * 1024];
        let _ = tokio::time::timeout(CLOSE_DRAIN, async {
            while let Ok(n) = rd.read(&mut scratch).await {
                if n == 0 {
                    break;
                }
            }
        })
        .await;
    }
}

async fn read_frames<R>(
    shared: &Arc<Shared>,
    rd: &mut R,
    accept_tx: &mpsc::Sender<Stream>,
) -> ReadEnd
where
    R: AsyncRead + Unpin,
{
    let mut decoder = Decoder::new(shared.limits.max_data_frame);
    let mut buf = BytesMut::with_capacity(16 * 1024);
    loop {
        loop {
            match decoder.decode(&mut buf) {
                Ok(Some(frame)) => {
                    if let Some(end) = handle_frame(shared, frame, accept_tx).await {
                        return end;
                    }
                }
                Ok(None) => break,
                Err(e) => return ReadEnd::Protocol(e.to_string()),
            }
        }
        if buf.capacity() - buf.len() < 4096 {
            buf.reserve(16 * 1024);
        }
        match rd.read_buf(&mut buf).await {
            Ok(0) => {
                return if buf.is_empty() {
                    ReadEnd::Eof
                } else {
                    ReadEnd::Io(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "connection closed inside a frame",
                    ))
                };
            }
            Ok(_) => {}
            Err(e) => return ReadEnd::Io(e),
        }
    }
}

/// Routes one received frame; `Some` ends the session.
async fn handle_frame(
    shared: &Arc<Shared>,
    frame: Frame,
    accept_tx: &mpsc::Sender<Stream>,
) -> Option<ReadEnd> {
    match frame {
        Frame::Data {
            stream_id,
            fin,
            data,
        } => {
            trace!(stream = stream_id, len = data.len(), fin, "SPDY DATA");
            let len = data.len();
            let tx = {
                let st = shared.lock();
                st.streams.get(&stream_id).and_then(|e| e.data_tx.clone())
            };
            match tx {
                Some(tx) if len > 0 => {
                    // Waits while the stream's reader is behind: this is
                    // the session's back-pressure.
                    if tx.send(data).await.is_err() {
                        // Reader dropped: the data is discarded.
                        shared.consumed(None, len);
                    }
                }
                Some(_) => {}
                None => {
                    trace!(stream = stream_id, "DATA for a stream not open; dropped");
                    shared.consumed(None, len);
                }
            }
            if fin {
                Shared::remote_finished(&mut shared.lock(), stream_id);
            }
        }
        Frame::SynStream {
            stream_id,
            fin,
            unidirectional,
            headers,
            ..
        } => {
            let (data_tx, data_rx) = mpsc::channel(STREAM_QUEUE);
            {
                let mut st = shared.lock();
                if st.ended {
                    return None;
                }
                if stream_id % 2 == shared.role.parity() || stream_id <= st.last_peer_id {
                    return Some(ReadEnd::Protocol(format!(
                        "SYN_STREAM with invalid stream id {stream_id} (last {})",
                        st.last_peer_id
                    )));
                }
                st.last_peer_id = stream_id;
                if st.peer_streams >= shared.limits.max_streams || accept_tx.is_closed() {
                    debug!(stream = stream_id, "refusing SPDY stream");
                    shared.push(Frame::RstStream {
                        stream_id,
                        status: rst_status::REFUSED_STREAM,
                    });
                    return None;
                }
                st.peer_streams += 1;
                st.streams.insert(
                    stream_id,
                    Entry {
                        data_tx: (!fin).then_some(data_tx),
                        reply_tx: None,
                        peer_opened: true,
                        replied: unidirectional,
                        local_fin: unidirectional,
                        remote_fin: fin,
                        unacked: 0,
                    },
                );
            }
            debug!(stream = stream_id, ?headers, "SPDY stream accepted");
            let stream = Stream::new(shared.clone(), stream_id, headers, true, data_rx);
            if let Err(mpsc::error::SendError(stream)) = accept_tx.send(stream).await {
                let (reader, writer) = stream.split();
                drop(reader);
                writer.reset(rst_status::REFUSED_STREAM);
            }
        }
        Frame::SynReply {
            stream_id,
            fin,
            headers,
            ..
        } => {
            let mut st = shared.lock();
            let Some(entry) = st.streams.get_mut(&stream_id) else {
                debug!(
                    stream = stream_id,
                    "SYN_REPLY for a stream not open; ignored"
                );
                return None;
            };
            if entry.peer_opened {
                debug!(stream = stream_id, "SYN_REPLY for a peer stream; ignored");
                return None;
            }
            let Some(tx) = entry.reply_tx.take() else {
                debug!(stream = stream_id, "duplicate SYN_REPLY; ignored");
                return None;
            };
            if tx.send(Ok(headers)).is_err() {
                // Whoever opened it stopped waiting.
                Shared::remove(&mut st, stream_id);
                shared.push(Frame::RstStream {
                    stream_id,
                    status: rst_status::CANCEL,
                });
                return None;
            }
            if fin {
                Shared::remote_finished(&mut st, stream_id);
            }
        }
        Frame::Headers { stream_id, fin, .. } => {
            if fin {
                Shared::remote_finished(&mut shared.lock(), stream_id);
            }
        }
        Frame::RstStream { stream_id, status } => {
            debug!(stream = stream_id, status, "SPDY RST_STREAM received");
            let mut st = shared.lock();
            if let Some(tx) = Shared::remove(&mut st, stream_id).and_then(|e| e.reply_tx) {
                let _ = tx.send(Err(Error::Reset(status)));
            }
        }
        Frame::Settings { entries } => {
            debug!(?entries, "SPDY SETTINGS received (ignored)");
        }
        Frame::Ping { id } => {
            if id % 2 != shared.role.parity() {
                shared.push(Frame::Ping { id });
            } else if let Some(tx) = shared.lock().pings.remove(&id) {
                let _ = tx.send(());
            }
        }
        Frame::GoAway {
            last_good_stream_id,
            status,
        } => {
            debug!(last_good_stream_id, status, "SPDY GOAWAY");
            return Some(ReadEnd::GoAway);
        }
        Frame::WindowUpdate { stream_id, delta } => {
            trace!(
                stream = stream_id,
                delta, "SPDY WINDOW_UPDATE (not enforced)"
            );
        }
    }
    None
}

async fn write_task<W>(shared: Arc<Shared>, mut wr: W, mut rx: mpsc::UnboundedReceiver<Out>)
where
    W: AsyncWrite + Unpin,
{
    let mut encoder = Encoder::new();
    let mut buf = BytesMut::with_capacity(16 * 1024);
    let mut permits = Vec::new();
    let mut closing = false;
    while !closing {
        let Some(first) = rx.recv().await else {
            break;
        };
        let mut next = Some(first);
        while let Some(item) = next.take() {
            let frame = match item {
                Out::Frame(f) => f,
                Out::Control(f) => {
                    shared.queued_control.fetch_sub(1, Ordering::Relaxed);
                    f
                }
                Out::Data(f, p) => {
                    permits.push(p);
                    f
                }
                Out::Close => {
                    closing = true;
                    break;
                }
            };
            trace!(?frame, "SPDY send");
            if let Err(e) = encoder.encode(&frame, &mut buf) {
                // Only a caller's oversized or invalid frame gets here;
                // header blocks are size-checked before queuing.
                warn!(error = %e, "cannot encode SPDY frame; dropped");
            }
            if buf.len() < WRITE_BATCH {
                next = rx.try_recv().ok();
            }
        }
        if !buf.is_empty() {
            let res = async {
                wr.write_all(&buf).await?;
                wr.flush().await
            }
            .await;
            if let Err(e) = res {
                debug!(error = %e, "SPDY connection write failed");
                shared.end(None, Stop::Abort);
                return;
            }
            buf.clear();
            permits.clear();
        }
    }
    let _ = wr.shutdown().await;
}

#[cfg(test)]
mod tests;
