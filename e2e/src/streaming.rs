//! Test clients for the Kubernetes streaming protocols a CRI runtime's
//! streaming server speaks (the URLs the Exec, Attach and PortForward RPCs
//! return, e.g. `http://127.0.0.1:PORT/exec/TOKEN`), written after what
//! kubectl and crictl do (client-go `tools/remotecommand`,
//! `tools/portforward`, apimachinery `util/httpstream`):
//!
//! - remotecommand (exec, attach) over SPDY/3.1: [`spdy_start`],
//!   [`spdy_exec`];
//! - remotecommand over WebSocket: [`ws_start`], [`ws_exec`];
//! - port-forward over SPDY ([`SpdyPortForward`]) and WebSocket
//!   ([`WsPortForward`]).
//!
//! Exec and attach give an [`Interactive`] handle: send stdin, resize,
//! close stdin, read output as it comes, then [`Interactive::wait`] for
//! the [`ExecOutput`] (output plus the exit status from the error
//! stream), or [`Interactive::close`] to hang up (attach).
//!
//! Nothing here has timeouts of its own except where noted: wrap calls in
//! `tokio::time::timeout`. Errors are `io::Error`s with a message.

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU32, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use crust_spdy::{Limits, Role, Session, StreamReader, StreamWriter};
use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;

/// remotecommand protocols a SPDY client offers, newest first (as
/// client-go does).
pub const SPDY_REMOTECOMMAND_PROTOCOLS: &[&str] = &[
    "v4.channel.k8s.io",
    "v3.channel.k8s.io",
    "v2.channel.k8s.io",
    "channel.k8s.io",
];

/// The SPDY port-forward protocol.
pub const SPDY_PORTFORWARD_PROTOCOL: &str = "portforward.k8s.io";

/// WebSocket remotecommand subprotocols (v5 adds the stdin close signal;
/// base64 sends text messages).
pub const WS_V5: &str = "v5.channel.k8s.io";
pub const WS_V4: &str = "v4.channel.k8s.io";
pub const WS_V1: &str = "channel.k8s.io";
pub const WS_BASE64: &str = "base64.channel.k8s.io";

/// remotecommand channel numbers (WebSocket).
pub const CHANNEL_STDIN: u8 = 0;
pub const CHANNEL_STDOUT: u8 = 1;
pub const CHANNEL_STDERR: u8 = 2;
pub const CHANNEL_ERROR: u8 = 3;
pub const CHANNEL_RESIZE: u8 = 4;
/// v5 close signal: a message `[255, channel]`.
pub const CHANNEL_CLOSE: u8 = 255;

fn err(msg: impl Into<String>) -> io::Error {
    io::Error::other(msg.into())
}

// ---------------------------------------------------------------------------
// Options, results, status

/// Which streams an exec/attach session opens; must match the flags of
/// the CRI request that produced the URL.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StreamOptions {
    pub stdin: bool,
    pub stdout: bool,
    /// Ignored with `tty` (a terminal merges stderr into stdout).
    pub stderr: bool,
    pub tty: bool,
    /// With `tty`: a terminal size (width, height) sent as soon as the
    /// resize stream is open, as kubectl sends the local terminal's.
    pub initial_size: Option<(u16, u16)>,
}

impl StreamOptions {
    /// stdout and stderr, no stdin, no tty.
    pub fn output() -> Self {
        Self {
            stdout: true,
            stderr: true,
            ..Self::default()
        }
    }

    /// stdin, stdout and stderr, no tty.
    pub fn with_stdin() -> Self {
        Self {
            stdin: true,
            ..Self::output()
        }
    }

    /// stdin and stdout on a terminal of `width` x `height`.
    pub fn tty(width: u16, height: u16) -> Self {
        Self {
            stdin: true,
            stdout: true,
            stderr: false,
            tty: true,
            initial_size: Some((width, height)),
        }
    }
}

/// The remote command's end, from the error stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteStatus {
    /// `Success`, or an empty error stream (the pre-v4 way to say it).
    pub success: bool,
    /// 0 on success; the `ExitCode` cause of a `NonZeroExitCode` failure;
    /// `None` for other failures.
    pub exit_code: Option<i32>,
    /// `reason` of a v4 Status (e.g. `NonZeroExitCode`), else empty.
    pub reason: String,
    /// `message` of a v4 Status, or the text of a pre-v4 error stream.
    pub message: String,
    /// The error stream as received.
    pub raw: String,
}

/// Interprets what a remotecommand error stream carried: a v4+ JSON
/// `metav1.Status` (exit code from `details.causes[reason=ExitCode]`),
/// nothing (success), or pre-v4 plain text (a failure message).
pub fn parse_status(raw: &[u8]) -> RemoteStatus {
    let text = String::from_utf8_lossy(raw).into_owned();
    let mut status = RemoteStatus {
        success: false,
        exit_code: None,
        reason: String::new(),
        message: String::new(),
        raw: text.clone(),
    };
    if text.trim().is_empty() {
        status.success = true;
        status.exit_code = Some(0);
        return status;
    }
    let Ok(json) = serde_json::from_str::<serde_json::Value>(&text) else {
        status.message = text.trim().to_string();
        return status;
    };
    let Some(obj) = json.as_object().filter(|o| o.contains_key("status")) else {
        status.message = text.trim().to_string();
        return status;
    };
    let field = |name: &str| {
        obj.get(name)
            .and_then(|v| v.as_str())
            .unwrap_or_default()
            .to_string()
    };
    status.reason = field("reason");
    status.message = field("message");
    if field("status") == "Success" {
        status.success = true;
        status.exit_code = Some(0);
        return status;
    }
    status.exit_code = json
        .pointer("/details/causes")
        .and_then(|c| c.as_array())
        .into_iter()
        .flatten()
        .find(|c| c.get("reason").and_then(|r| r.as_str()) == Some("ExitCode"))
        .and_then(|c| c.get("message")?.as_str()?.trim().parse().ok());
    status
}

/// Everything an exec or attach session produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecOutput {
    /// The negotiated protocol (e.g. `v4.channel.k8s.io`).
    pub protocol: String,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
    pub status: RemoteStatus,
}

impl ExecOutput {
    pub fn exit_code(&self) -> Option<i32> {
        self.status.exit_code
    }

    pub fn stdout_str(&self) -> String {
        String::from_utf8_lossy(&self.stdout).into_owned()
    }

    pub fn stderr_str(&self) -> String {
        String::from_utf8_lossy(&self.stderr).into_owned()
    }
}

/// A piece of output, as it arrives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Output {
    Stdout(Vec<u8>),
    Stderr(Vec<u8>),
}

enum Input {
    Stdin(Vec<u8>),
    CloseStdin,
    Resize(u16, u16),
    Close,
}

fn resize_json(width: u16, height: u16) -> Vec<u8> {
    // client-go's json.Encoder output for remotecommand.TerminalSize.
    format!("{{\"Width\":{width},\"Height\":{height}}}\n").into_bytes()
}

/// A running exec or attach session.
pub struct Interactive {
    protocol: String,
    input: mpsc::UnboundedSender<Input>,
    output: mpsc::UnboundedReceiver<Output>,
    /// Resolves to the error stream's content.
    status: JoinHandle<io::Result<Vec<u8>>>,
    pump: JoinHandle<()>,
    stdout: Vec<u8>,
    stderr: Vec<u8>,
}

impl Interactive {
    /// The negotiated protocol.
    pub fn protocol(&self) -> &str {
        &self.protocol
    }

    fn send(&self, input: Input) -> io::Result<()> {
        self.input
            .send(input)
            .map_err(|_| err("streaming session is gone"))
    }

    /// Queues `data` for the remote stdin (needs `stdin` in the options).
    pub fn send_stdin(&self, data: impl Into<Vec<u8>>) -> io::Result<()> {
        self.send(Input::Stdin(data.into()))
    }

    /// Closes the remote stdin: FIN on SPDY, the `[255, 0]` close signal
    /// on WebSocket v5. Pre-v5 WebSocket protocols cannot close stdin:
    /// there it does nothing.
    pub fn close_stdin(&self) -> io::Result<()> {
        self.send(Input::CloseStdin)
    }

    /// Sends a terminal resize (needs `tty`).
    pub fn resize(&self, width: u16, height: u16) -> io::Result<()> {
        self.send(Input::Resize(width, height))
    }

    /// The next piece of output (also kept for [`Interactive::stdout`] and
    /// the final [`ExecOutput`]); `None` once stdout and stderr ended.
    pub async fn next_output(&mut self) -> Option<Output> {
        let out = self.output.recv().await?;
        match &out {
            Output::Stdout(d) => self.stdout.extend_from_slice(d),
            Output::Stderr(d) => self.stderr.extend_from_slice(d),
        }
        Some(out)
    }

    /// Output received so far on stdout.
    pub fn stdout(&self) -> &[u8] {
        &self.stdout
    }

    /// Output received so far on stderr.
    pub fn stderr(&self) -> &[u8] {
        &self.stderr
    }

    /// Reads output until stdout or stderr (so far, as text) contains
    /// `needle`; returns stdout + stderr so far. Fails on timeout or when
    /// the output ends first, saying what arrived.
    pub async fn read_until(&mut self, needle: &str, within: Duration) -> io::Result<String> {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let so_far = format!(
                "{}{}",
                String::from_utf8_lossy(&self.stdout),
                String::from_utf8_lossy(&self.stderr)
            );
            if String::from_utf8_lossy(&self.stdout).contains(needle)
                || String::from_utf8_lossy(&self.stderr).contains(needle)
            {
                return Ok(so_far);
            }
            match tokio::time::timeout_at(deadline, self.next_output()).await {
                Ok(Some(_)) => {}
                Ok(None) => {
                    return Err(err(format!(
                        "output ended without {needle:?}; got {so_far:?}"
                    )));
                }
                Err(_) => {
                    return Err(err(format!(
                        "no {needle:?} within {within:?}; got {so_far:?}"
                    )));
                }
            }
        }
    }

    /// Waits for the command to end: reads the rest of the output and
    /// the error stream, then closes the connection.
    pub async fn wait(mut self) -> io::Result<ExecOutput> {
        while self.next_output().await.is_some() {}
        let raw = (&mut self.status)
            .await
            .map_err(|e| err(format!("error stream task: {e}")))??;
        let _ = self.input.send(Input::Close);
        let _ = tokio::time::timeout(Duration::from_secs(5), &mut self.pump).await;
        Ok(ExecOutput {
            protocol: std::mem::take(&mut self.protocol),
            stdout: std::mem::take(&mut self.stdout),
            stderr: std::mem::take(&mut self.stderr),
            status: parse_status(&raw),
        })
    }

    /// Hangs up without waiting for the command (detach from an attach).
    pub async fn close(mut self) {
        let _ = self.input.send(Input::Close);
        let _ = tokio::time::timeout(Duration::from_secs(5), &mut self.pump).await;
    }
}

impl Drop for Interactive {
    fn drop(&mut self) {
        let _ = self.input.send(Input::Close);
    }
}

// ---------------------------------------------------------------------------
// URLs and the SPDY upgrade

struct Target {
    /// `host:port`, for connecting and the Host header.
    authority: String,
    /// Path and query.
    path: String,
}

fn parse_url(url: &str) -> io::Result<Target> {
    let rest = url
        .strip_prefix("http://")
        .or_else(|| url.strip_prefix("ws://"))
        .ok_or_else(|| err(format!("unsupported streaming URL {url:?} (http:// only)")))?;
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    if authority.is_empty() {
        return Err(err(format!("no host in {url:?}")));
    }
    let has_port = match authority.rfind(']') {
        Some(i) => authority[i..].contains(':'),
        None => authority.contains(':'),
    };
    let authority = if has_port {
        authority.to_string()
    } else {
        format!("{authority}:80")
    };
    Ok(Target {
        authority,
        path: path.to_string(),
    })
}

/// A byte stream that first yields bytes already read past the HTTP
/// response head.
struct Prefixed<S> {
    prefix: Vec<u8>,
    pos: usize,
    inner: S,
}

impl<S: AsyncRead + Unpin> AsyncRead for Prefixed<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if self.pos < self.prefix.len() {
            let n = (self.prefix.len() - self.pos).min(buf.remaining());
            let start = self.pos;
            buf.put_slice(&self.prefix[start..start + n]);
            self.pos += n;
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Prefixed<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// A parsed HTTP/1.1 response head.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResponseHead {
    pub status: u16,
    pub status_line: String,
    /// Names lowercased, in order.
    pub headers: Vec<(String, String)>,
}

impl ResponseHead {
    /// All values of header `name` (case-insensitive).
    pub fn header_values(&self, name: &str) -> Vec<&str> {
        self.headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
            .collect()
    }
}

/// Parses an HTTP/1.x response head (without the final blank line).
pub fn parse_response_head(head: &str) -> io::Result<ResponseHead> {
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default().to_string();
    let mut parts = status_line.splitn(3, ' ');
    let version = parts.next().unwrap_or_default();
    if !version.starts_with("HTTP/1.") {
        return Err(err(format!("not an HTTP/1 response: {status_line:?}")));
    }
    let status = parts
        .next()
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| err(format!("bad status line {status_line:?}")))?;
    let headers = lines
        .filter(|l| !l.is_empty())
        .filter_map(|l| {
            let (n, v) = l.split_once(':')?;
            Some((n.trim().to_ascii_lowercase(), v.trim().to_string()))
        })
        .collect();
    Ok(ResponseHead {
        status,
        status_line,
        headers,
    })
}

/// POSTs an upgrade to SPDY/3.1 offering `protocols` (one
/// `X-Stream-Protocol-Version` header each) and starts a client session
/// on the upgraded connection. Returns it with the protocol the server
/// chose (empty if it named none). A non-101 answer is an error quoting
/// the status line and the start of the body.
pub async fn spdy_connect(url: &str, protocols: &[&str]) -> io::Result<(Session, String)> {
    let target = parse_url(url)?;
    let mut tcp = TcpStream::connect(&target.authority).await?;
    tcp.set_nodelay(true)?;
    let mut req = format!(
        "POST {} HTTP/1.1\r\nHost: {}\r\nConnection: Upgrade\r\nUpgrade: SPDY/3.1\r\n",
        target.path, target.authority
    );
    for p in protocols {
        req.push_str(&format!("X-Stream-Protocol-Version: {p}\r\n"));
    }
    req.push_str("Content-Length: 0\r\n\r\n");
    tcp.write_all(req.as_bytes()).await?;

    let mut buf = Vec::with_capacity(4096);
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i;
        }
        if buf.len() > 64 * 1024 {
            return Err(err("HTTP response head over 64 KiB"));
        }
        let mut chunk = [0u8; 4096];
        let n = tcp.read(&mut chunk).await?;
        if n == 0 {
            return Err(err(format!(
                "connection closed before the upgrade response; got {:?}",
                String::from_utf8_lossy(&buf)
            )));
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = parse_response_head(&String::from_utf8_lossy(&buf[..head_end]))?;
    let rest = buf[head_end + 4..].to_vec();
    if head.status != 101 {
        let mut body = rest;
        let _ = tokio::time::timeout(Duration::from_millis(500), async {
            let mut chunk = [0u8; 4096];
            while body.len() < 4096 {
                match tcp.read(&mut chunk).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => body.extend_from_slice(&chunk[..n]),
                }
            }
        })
        .await;
        return Err(err(format!(
            "SPDY upgrade refused: {} {:?}",
            head.status_line,
            String::from_utf8_lossy(&body)
        )));
    }
    let upgrade = head.header_values("upgrade").join(",");
    if !upgrade.eq_ignore_ascii_case("SPDY/3.1") {
        return Err(err(format!(
            "101 without Upgrade: SPDY/3.1 (got {upgrade:?})"
        )));
    }
    let protocol = head
        .header_values("x-stream-protocol-version")
        .first()
        .copied()
        .unwrap_or_default()
        .to_string();
    let io = Prefixed {
        prefix: rest,
        pos: 0,
        inner: tcp,
    };
    let (session, _peer_streams) = Session::new(io, Role::Client, Limits::default());
    Ok((session, protocol))
}

fn streamtype(t: &str) -> Vec<(String, String)> {
    vec![("streamtype".to_string(), t.to_string())]
}

async fn open(session: &Session, headers: Vec<(String, String)>) -> io::Result<crust_spdy::Stream> {
    let what = format!("{headers:?}");
    session
        .open_stream(headers)
        .await
        .map_err(|e| err(format!("opening SPDY stream {what}: {e}")))
}

// ---------------------------------------------------------------------------
// remotecommand over SPDY

/// Starts exec/attach over SPDY, as kubectl does: upgrade offering
/// v4..v1, then open the error, stdin, stdout, stderr (not with tty) and
/// resize (tty only) streams in that order, each after the previous one's
/// reply.
pub async fn spdy_start(url: &str, opts: StreamOptions) -> io::Result<Interactive> {
    let (session, protocol) = spdy_connect(url, SPDY_REMOTECOMMAND_PROTOCOLS).await?;
    let (error_r, error_w) = open(&session, streamtype("error")).await?.split();
    let stdin = match opts.stdin {
        true => Some(open(&session, streamtype("stdin")).await?.split()),
        false => None,
    };
    let stdout = match opts.stdout {
        true => Some(open(&session, streamtype("stdout")).await?.split()),
        false => None,
    };
    let stderr = match opts.stderr && !opts.tty {
        true => Some(open(&session, streamtype("stderr")).await?.split()),
        false => None,
    };
    let resize = match opts.tty {
        true => Some(open(&session, streamtype("resize")).await?.split()),
        false => None,
    };

    // Streams stay open for writing until the end, as with client-go
    // (dropping a writer would send FIN); readers nobody reads are kept
    // too.
    let mut keep = Keep {
        writers: vec![error_w],
        readers: Vec::new(),
    };
    let stdin_w = stdin.map(|(r, w)| {
        keep.readers.push(r);
        w
    });
    let resize_w = resize.map(|(r, w)| {
        keep.readers.push(r);
        w
    });
    let (out_tx, out_rx) = mpsc::unbounded_channel();
    if let Some((r, w)) = stdout {
        keep.writers.push(w);
        spawn_output(r, out_tx.clone(), Output::Stdout);
    }
    if let Some((r, w)) = stderr {
        keep.writers.push(w);
        spawn_output(r, out_tx.clone(), Output::Stderr);
    }
    drop(out_tx);
    let status = tokio::spawn(read_all(error_r));

    let (in_tx, in_rx) = mpsc::unbounded_channel();
    if let (Some((w, h)), true) = (opts.initial_size, opts.tty) {
        let _ = in_tx.send(Input::Resize(w, h));
    }
    let pump = tokio::spawn(spdy_pump(session, stdin_w, resize_w, keep, in_rx));
    Ok(Interactive {
        protocol,
        input: in_tx,
        output: out_rx,
        status,
        pump,
        stdout: Vec::new(),
        stderr: Vec::new(),
    })
}

fn spawn_output(
    mut r: StreamReader,
    tx: mpsc::UnboundedSender<Output>,
    wrap: fn(Vec<u8>) -> Output,
) {
    tokio::spawn(async move {
        while let Some(chunk) = r.recv().await {
            if tx.send(wrap(chunk.to_vec())).is_err() {
                break;
            }
        }
    });
}

async fn read_all(mut r: StreamReader) -> io::Result<Vec<u8>> {
    let mut all = Vec::new();
    r.read_to_end(&mut all).await?;
    Ok(all)
}

/// Stream halves held until the session ends.
struct Keep {
    writers: Vec<StreamWriter>,
    readers: Vec<StreamReader>,
}

async fn spdy_pump(
    session: Session,
    mut stdin: Option<StreamWriter>,
    mut resize: Option<StreamWriter>,
    _keep: Keep,
    mut rx: mpsc::UnboundedReceiver<Input>,
) {
    while let Some(input) = rx.recv().await {
        match input {
            Input::Stdin(data) => {
                if let Some(w) = stdin.as_mut() {
                    let _ = w.write_all(&data).await;
                }
            }
            Input::CloseStdin => {
                if let Some(mut w) = stdin.take() {
                    let _ = w.shutdown().await;
                }
            }
            Input::Resize(width, height) => {
                if let Some(w) = resize.as_mut() {
                    let _ = w.write_all(&resize_json(width, height)).await;
                }
            }
            Input::Close => break,
        }
    }
    session.close().await;
}

/// Runs a command over SPDY to its end: writes `stdin` (if the options
/// have stdin) and closes it, collects the output and the exit status.
pub async fn spdy_exec(url: &str, opts: StreamOptions, stdin: &[u8]) -> io::Result<ExecOutput> {
    let session = spdy_start(url, opts).await?;
    if opts.stdin {
        if !stdin.is_empty() {
            session.send_stdin(stdin)?;
        }
        session.close_stdin()?;
    }
    session.wait().await
}

// ---------------------------------------------------------------------------
// WebSocket channel framing

/// Whether a negotiated WebSocket subprotocol is a base64 (text) one.
pub fn is_base64_protocol(protocol: &str) -> bool {
    protocol.contains("base64.")
}

/// One channel message: binary `[channel, data...]`, or with base64
/// text `'0'+channel` followed by the base64 of `data`.
pub fn encode_channel_message(channel: u8, data: &[u8], base64: bool) -> Message {
    if base64 {
        let mut s = String::with_capacity(1 + data.len().div_ceil(3) * 4);
        s.push(char::from(b'0' + channel));
        BASE64.encode_string(data, &mut s);
        Message::text(s)
    } else {
        let mut v = Vec::with_capacity(1 + data.len());
        v.push(channel);
        v.extend_from_slice(data);
        Message::binary(v)
    }
}

/// The channel and data of a received message; `None` for messages that
/// carry none (ping, pong, close, empty).
pub fn decode_channel_message(msg: &Message, base64: bool) -> io::Result<Option<(u8, Vec<u8>)>> {
    match msg {
        Message::Binary(b) if !b.is_empty() => {
            if base64 {
                return Err(err("binary message on a base64 channel protocol"));
            }
            Ok(Some((b[0], b[1..].to_vec())))
        }
        Message::Text(t) if !t.is_empty() => {
            if !base64 {
                return Err(err(format!(
                    "text message on a binary channel protocol: {t:?}"
                )));
            }
            let s = t.as_str();
            let c = s.as_bytes()[0];
            if !c.is_ascii_digit() {
                return Err(err(format!("bad base64 channel message {s:?}")));
            }
            let data = BASE64
                .decode(&s[1..])
                .map_err(|e| err(format!("bad base64 in channel message {s:?}: {e}")))?;
            Ok(Some((c - b'0', data)))
        }
        _ => Ok(None),
    }
}

type Ws = WebSocketStream<TcpStream>;

/// Opens a WebSocket to `url` (an http:// or ws:// URL) offering
/// `protocols` in `Sec-WebSocket-Protocol`; returns it with the
/// subprotocol the server chose (empty if none).
pub async fn ws_connect(url: &str, protocols: &[&str]) -> io::Result<(Ws, String)> {
    let target = parse_url(url)?;
    let ws_url = format!("ws://{}{}", target.authority, target.path);
    let mut request = ws_url
        .as_str()
        .into_client_request()
        .map_err(|e| err(format!("WebSocket request for {ws_url}: {e}")))?;
    if !protocols.is_empty() {
        request.headers_mut().insert(
            "Sec-WebSocket-Protocol",
            HeaderValue::from_str(&protocols.join(", "))
                .map_err(|e| err(format!("bad subprotocol list: {e}")))?,
        );
    }
    let tcp = TcpStream::connect(&target.authority).await?;
    tcp.set_nodelay(true)?;
    let (ws, response) = tokio_tungstenite::client_async(request, tcp)
        .await
        .map_err(|e| err(format!("WebSocket handshake with {ws_url}: {e}")))?;
    let protocol = response
        .headers()
        .get("Sec-WebSocket-Protocol")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    Ok((ws, protocol))
}

fn is_normal_end(e: &tokio_tungstenite::tungstenite::Error) -> bool {
    use tokio_tungstenite::tungstenite::Error as E;
    use tokio_tungstenite::tungstenite::error::ProtocolError as P;
    matches!(
        e,
        E::ConnectionClosed
            | E::AlreadyClosed
            | E::Io(_)
            | E::Protocol(P::ResetWithoutClosingHandshake)
    )
}

// ---------------------------------------------------------------------------
// remotecommand over WebSocket

/// Starts exec/attach over WebSocket offering `protocols` (e.g.
/// `&[WS_V5, WS_V4]`, or `&[WS_BASE64]`): channel 0 stdin, 1 stdout,
/// 2 stderr, 3 error, 4 resize. The session ends when the server closes
/// the WebSocket.
pub async fn ws_start(
    url: &str,
    opts: StreamOptions,
    protocols: &[&str],
) -> io::Result<Interactive> {
    let (ws, protocol) = ws_connect(url, protocols).await?;
    let base64 = is_base64_protocol(&protocol);
    let v5 = protocol == WS_V5;
    let (sink, mut stream) = ws.split();

    let (out_tx, out_rx) = mpsc::unbounded_channel();
    let status = tokio::spawn(async move {
        let mut error = Vec::new();
        while let Some(msg) = stream.next().await {
            let msg = match msg {
                Ok(m) => m,
                Err(e) if is_normal_end(&e) => break,
                Err(e) => return Err(err(format!("WebSocket read: {e}"))),
            };
            if let Message::Close(_) = msg {
                break;
            }
            let Some((channel, data)) = decode_channel_message(&msg, base64)? else {
                continue;
            };
            match channel {
                CHANNEL_STDOUT if !data.is_empty() => {
                    let _ = out_tx.send(Output::Stdout(data));
                }
                CHANNEL_STDERR if !data.is_empty() => {
                    let _ = out_tx.send(Output::Stderr(data));
                }
                CHANNEL_ERROR => error.extend_from_slice(&data),
                _ => {}
            }
        }
        Ok(error)
    });

    let (in_tx, in_rx) = mpsc::unbounded_channel();
    if let (Some((w, h)), true) = (opts.initial_size, opts.tty) {
        let _ = in_tx.send(Input::Resize(w, h));
    }
    let pump = tokio::spawn(ws_pump(sink, base64, v5, in_rx));
    Ok(Interactive {
        protocol,
        input: in_tx,
        output: out_rx,
        status,
        pump,
        stdout: Vec::new(),
        stderr: Vec::new(),
    })
}

async fn ws_pump(
    mut sink: futures_util::stream::SplitSink<Ws, Message>,
    base64: bool,
    v5: bool,
    mut rx: mpsc::UnboundedReceiver<Input>,
) {
    while let Some(input) = rx.recv().await {
        let msg = match input {
            Input::Stdin(data) => encode_channel_message(CHANNEL_STDIN, &data, base64),
            Input::CloseStdin if v5 => Message::binary(vec![CHANNEL_CLOSE, CHANNEL_STDIN]),
            Input::CloseStdin => continue,
            Input::Resize(w, h) => {
                encode_channel_message(CHANNEL_RESIZE, &resize_json(w, h), base64)
            }
            Input::Close => break,
        };
        if sink.send(msg).await.is_err() {
            break;
        }
    }
    let _ = sink.close().await;
}

/// Runs a command over WebSocket to its end (see [`spdy_exec`]). Stdin
/// can only be closed with v5; with older protocols the command sees no
/// EOF on stdin.
pub async fn ws_exec(
    url: &str,
    opts: StreamOptions,
    protocols: &[&str],
    stdin: &[u8],
) -> io::Result<ExecOutput> {
    let session = ws_start(url, opts, protocols).await?;
    if opts.stdin {
        if !stdin.is_empty() {
            session.send_stdin(stdin)?;
        }
        session.close_stdin()?;
    }
    session.wait().await
}

// ---------------------------------------------------------------------------
// Port-forward over SPDY

/// A SPDY port-forward session (`portforward.k8s.io`): one upgraded
/// connection carrying any number of forwarded connections.
pub struct SpdyPortForward {
    session: Session,
    protocol: String,
    next_request: AtomicU32,
}

impl SpdyPortForward {
    /// Upgrades `url` (a PortForward URL) to SPDY with
    /// `portforward.k8s.io`.
    pub async fn connect(url: &str) -> io::Result<Self> {
        let (session, protocol) = spdy_connect(url, &[SPDY_PORTFORWARD_PROTOCOL]).await?;
        Ok(Self {
            session,
            protocol,
            next_request: AtomicU32::new(0),
        })
    }

    pub fn protocol(&self) -> &str {
        &self.protocol
    }

    /// Opens one forwarded connection to `port` in the pod, as kubectl
    /// does: an `error` stream (closed for writing at once) then a `data`
    /// stream, both with headers `port` and `requestid`. Several may be
    /// open at once.
    pub async fn open(&self, port: u16) -> io::Result<PortForwardStream> {
        let request_id = self.next_request.fetch_add(1, Ordering::Relaxed);
        let headers = |t: &str| {
            vec![
                ("streamtype".to_string(), t.to_string()),
                ("port".to_string(), port.to_string()),
                ("requestid".to_string(), request_id.to_string()),
            ]
        };
        let (error_r, error_w) = open(&self.session, headers("error")).await?.split();
        error_w.finish()?;
        let data = open(&self.session, headers("data")).await?;
        Ok(PortForwardStream {
            data,
            error: tokio::spawn(read_all(error_r)),
            port,
            request_id,
        })
    }

    /// Ends the session (GOAWAY, connection closed).
    pub async fn close(&self) {
        self.session.close().await;
    }

    /// The underlying SPDY session.
    pub fn session(&self) -> &Session {
        &self.session
    }
}

/// One forwarded connection: `AsyncRead` + `AsyncWrite` on its data
/// stream (shutdown = FIN, the remote side then sees EOF).
pub struct PortForwardStream {
    data: crust_spdy::Stream,
    error: JoinHandle<io::Result<Vec<u8>>>,
    port: u16,
    request_id: u32,
}

impl PortForwardStream {
    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn request_id(&self) -> u32 {
        self.request_id
    }

    /// Writes `request`, closes the write side if `close_write`, reads
    /// the data stream to its end, then checks the error stream (waiting
    /// up to 5 s for it to end): a message there is an error.
    pub async fn round_trip(mut self, request: &[u8], close_write: bool) -> io::Result<Vec<u8>> {
        self.data.write_all(request).await?;
        if close_write {
            self.data.shutdown().await?;
        }
        let mut response = Vec::new();
        self.data.read_to_end(&mut response).await?;
        if let Some(message) = self.error().await? {
            return Err(err(format!(
                "port-forward to {} failed: {message} (after {} bytes)",
                self.port,
                response.len()
            )));
        }
        Ok(response)
    }

    /// What the error stream said, once it ended (waits up to 5 s):
    /// `None` if it ended empty or did not end in time.
    pub async fn error(&mut self) -> io::Result<Option<String>> {
        match tokio::time::timeout(Duration::from_secs(5), &mut self.error).await {
            Err(_) => Ok(None),
            Ok(joined) => {
                let bytes = joined.map_err(|e| err(format!("error stream task: {e}")))??;
                Ok((!bytes.is_empty()).then(|| String::from_utf8_lossy(&bytes).into_owned()))
            }
        }
    }
}

impl AsyncRead for PortForwardStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.data).poll_read(cx, buf)
    }
}

impl AsyncWrite for PortForwardStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.data).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.data).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.data).poll_shutdown(cx)
    }
}

// ---------------------------------------------------------------------------
// Port-forward over WebSocket

/// The port-forward WebSocket subprotocols.
pub const WS_PORTFORWARD_PROTOCOLS: &[&str] = &["v4.channel.k8s.io", "portforward.k8s.io"];

/// Something received on a WebSocket port-forward.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortForwardMessage {
    /// Index into the `ports` given to [`WsPortForward::connect`].
    pub port_index: usize,
    /// From the error channel (else the data channel).
    pub error: bool,
    pub data: Vec<u8>,
}

/// A WebSocket port-forward: one connection per requested port, channel
/// `2*i` data and `2*i+1` error for port `i`. The server starts each
/// channel with the port number (2 bytes, little-endian); that prefix is
/// checked and stripped.
pub struct WsPortForward {
    ws: Ws,
    protocol: String,
    base64: bool,
    ports: Vec<u16>,
    /// Prefix bytes still expected per channel.
    prefix: Vec<Vec<u8>>,
}

impl WsPortForward {
    /// Connects to `url` with `?ports=P1,P2` appended (or `&ports=` when
    /// the URL has a query), offering `protocols` (e.g.
    /// [`WS_PORTFORWARD_PROTOCOLS`]).
    pub async fn connect(url: &str, ports: &[u16], protocols: &[&str]) -> io::Result<Self> {
        let list = ports
            .iter()
            .map(u16::to_string)
            .collect::<Vec<_>>()
            .join(",");
        let sep = if url.contains('?') { '&' } else { '?' };
        let (ws, protocol) = ws_connect(&format!("{url}{sep}ports={list}"), protocols).await?;
        let prefix = ports
            .iter()
            .flat_map(|p| [p.to_le_bytes().to_vec(), p.to_le_bytes().to_vec()])
            .collect();
        Ok(Self {
            ws,
            base64: is_base64_protocol(&protocol),
            protocol,
            ports: ports.to_vec(),
            prefix,
        })
    }

    pub fn protocol(&self) -> &str {
        &self.protocol
    }

    /// Sends `data` to the port at `port_index`.
    pub async fn send(&mut self, port_index: usize, data: &[u8]) -> io::Result<()> {
        if port_index >= self.ports.len() {
            return Err(err(format!("no port index {port_index}")));
        }
        let channel = u8::try_from(port_index * 2).map_err(|_| err("too many ports"))?;
        self.ws
            .send(encode_channel_message(channel, data, self.base64))
            .await
            .map_err(|e| err(format!("WebSocket send: {e}")))
    }

    /// The next data or error bytes (port prefixes removed; messages
    /// that were only a prefix are skipped); `None` once the server
    /// closed the WebSocket.
    pub async fn recv(&mut self) -> io::Result<Option<PortForwardMessage>> {
        loop {
            let msg = match self.ws.next().await {
                None => return Ok(None),
                Some(Err(e)) if is_normal_end(&e) => return Ok(None),
                Some(Err(e)) => return Err(err(format!("WebSocket read: {e}"))),
                Some(Ok(Message::Close(_))) => return Ok(None),
                Some(Ok(m)) => m,
            };
            let Some((channel, mut data)) = decode_channel_message(&msg, self.base64)? else {
                continue;
            };
            let channel = usize::from(channel);
            let Some(expected) = self.prefix.get_mut(channel) else {
                return Err(err(format!("message on unknown channel {channel}")));
            };
            if !expected.is_empty() {
                let n = expected.len().min(data.len());
                if data[..n] != expected[..n] {
                    return Err(err(format!(
                        "channel {channel} starts with {:?}, not port {} as 2 bytes LE",
                        &data[..n],
                        self.ports[channel / 2]
                    )));
                }
                expected.drain(..n);
                data.drain(..n);
            }
            if data.is_empty() {
                continue;
            }
            return Ok(Some(PortForwardMessage {
                port_index: channel / 2,
                error: channel % 2 == 1,
                data,
            }));
        }
    }

    /// For the first port: sends `request`, then collects data until the
    /// server closes the WebSocket. Anything on the error channel is an
    /// error.
    pub async fn round_trip(mut self, request: &[u8]) -> io::Result<Vec<u8>> {
        self.send(0, request).await?;
        let mut response = Vec::new();
        let mut error = Vec::new();
        while let Some(m) = self.recv().await? {
            if m.port_index != 0 {
                continue;
            }
            if m.error {
                error.extend_from_slice(&m.data);
            } else {
                response.extend_from_slice(&m.data);
            }
        }
        if !error.is_empty() {
            return Err(err(format!(
                "port-forward to {} failed: {} (after {} bytes)",
                self.ports[0],
                String::from_utf8_lossy(&error),
                response.len()
            )));
        }
        Ok(response)
    }

    /// Closes the WebSocket.
    pub async fn close(mut self) {
        let _ = self.ws.close(None).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_success_and_empty() {
        let s = parse_status(br#"{"metadata":{},"status":"Success"}"#);
        assert!(s.success);
        assert_eq!(s.exit_code, Some(0));
        let s = parse_status(b"");
        assert!(s.success);
        assert_eq!(s.exit_code, Some(0));
    }

    #[test]
    fn status_exit_code() {
        // What the kubelet's streaming server (and crust) writes for `exit 3`.
        let raw = br#"{"metadata":{},"status":"Failure","message":"command terminated with non-zero exit code: error executing command [sh -c exit 3], exit code 3","reason":"NonZeroExitCode","details":{"causes":[{"reason":"ExitCode","message":"3"}]}}"#;
        let s = parse_status(raw);
        assert!(!s.success);
        assert_eq!(s.exit_code, Some(3));
        assert_eq!(s.reason, "NonZeroExitCode");
        assert!(s.message.contains("exit code 3"));
        assert_eq!(s.raw.as_bytes(), raw);
    }

    #[test]
    fn status_other_failures() {
        let s = parse_status(
            br#"{"status":"Failure","message":"container not found","reason":"InternalError"}"#,
        );
        assert!(!s.success);
        assert_eq!(s.exit_code, None);
        assert_eq!(s.message, "container not found");
        // Causes without an ExitCode, or a non-numeric one.
        let s = parse_status(
            br#"{"status":"Failure","reason":"NonZeroExitCode","details":{"causes":[{"reason":"Other","message":"1"},{"reason":"ExitCode","message":"x"}]}}"#,
        );
        assert_eq!(s.exit_code, None);
        // Pre-v4: plain text.
        let s = parse_status(b"error executing command: boom\n");
        assert!(!s.success);
        assert_eq!(s.exit_code, None);
        assert_eq!(s.message, "error executing command: boom");
        // JSON that is not a Status is text too.
        let s = parse_status(b"[1,2]");
        assert!(!s.success);
        assert_eq!(s.message, "[1,2]");
    }

    #[test]
    fn binary_channel_messages() {
        let m = encode_channel_message(CHANNEL_STDIN, b"hi", false);
        assert_eq!(m, Message::binary(vec![0, b'h', b'i']));
        assert_eq!(
            decode_channel_message(&m, false).unwrap(),
            Some((0, b"hi".to_vec()))
        );
        // The server's initial empty stdout message.
        assert_eq!(
            decode_channel_message(&Message::binary(vec![1]), false).unwrap(),
            Some((1, vec![]))
        );
        // Close signal.
        assert_eq!(
            decode_channel_message(&Message::binary(vec![255, 0]), false).unwrap(),
            Some((255, vec![0]))
        );
        assert_eq!(
            decode_channel_message(&Message::binary(vec![]), false).unwrap(),
            None
        );
        assert_eq!(
            decode_channel_message(&Message::Ping(vec![1].into()), false).unwrap(),
            None
        );
        assert!(decode_channel_message(&Message::text("1aGk="), false).is_err());
    }

    #[test]
    fn base64_channel_messages() {
        let m = encode_channel_message(CHANNEL_RESIZE, &resize_json(80, 24), true);
        assert_eq!(m, Message::text("4eyJXaWR0aCI6ODAsIkhlaWdodCI6MjR9Cg=="));
        assert_eq!(
            decode_channel_message(&m, true).unwrap(),
            Some((4, b"{\"Width\":80,\"Height\":24}\n".to_vec()))
        );
        assert_eq!(
            decode_channel_message(&Message::text("1aGVsbG8="), true).unwrap(),
            Some((1, b"hello".to_vec()))
        );
        assert_eq!(
            decode_channel_message(&Message::text("2"), true).unwrap(),
            Some((2, vec![]))
        );
        assert!(decode_channel_message(&Message::text("1!!!"), true).is_err());
        assert!(decode_channel_message(&Message::text("x"), true).is_err());
        assert!(decode_channel_message(&Message::binary(vec![1, 2]), true).is_err());
        assert!(is_base64_protocol("base64.channel.k8s.io"));
        assert!(is_base64_protocol("v4.base64.channel.k8s.io"));
        assert!(!is_base64_protocol("v5.channel.k8s.io"));
    }

    #[test]
    fn urls_and_response_heads() {
        let t = parse_url("http://127.0.0.1:10010/exec/abc?x=1").unwrap();
        assert_eq!(t.authority, "127.0.0.1:10010");
        assert_eq!(t.path, "/exec/abc?x=1");
        let t = parse_url("http://[::1]/attach/t").unwrap();
        assert_eq!(t.authority, "[::1]:80");
        let t = parse_url("ws://host:1").unwrap();
        assert_eq!(t.path, "/");
        assert!(parse_url("https://host/x").is_err());

        let head = parse_response_head(
            "HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: SPDY/3.1\r\nX-Stream-Protocol-Version: v4.channel.k8s.io",
        )
        .unwrap();
        assert_eq!(head.status, 101);
        assert_eq!(
            head.header_values("x-stream-protocol-version"),
            vec!["v4.channel.k8s.io"]
        );
        assert!(parse_response_head("SSH-2.0-x").is_err());
    }

    #[test]
    fn resize_is_client_go_json() {
        assert_eq!(resize_json(100, 7), b"{\"Width\":100,\"Height\":7}\n");
    }
}
