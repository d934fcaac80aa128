//! Exec and attach sessions: Kubernetes' remotecommand protocol over SPDY
//! streams or WebSocket channels, ending with the Status on the error
//! channel (exit code from v4 on).

use std::future::Future;
use std::time::Duration;

use crust_spdy::{Limits, Role};
use futures_util::StreamExt;
use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};
use tokio::sync::{mpsc, watch};

use crate::http::{Session, Upgraded};
use crate::protocol::{
    self, CHANNEL_CLOSE, CHANNEL_ERROR, CHANNEL_RESIZE, CHANNEL_STDERR, CHANNEL_STDIN,
    CHANNEL_STDOUT, Framing, Outcome, ResizeDecoder, TerminalSize, Version,
};
use crate::ws;
use crate::{BoxWrite, MAX_STREAMS_PER_SESSION, Pending, ProcessIo, STREAM_CREATION_TIMEOUT};

/// How long a finished session may take to hand the client the rest of
/// the output and the status.
pub const FINISH_TIMEOUT: Duration = Duration::from_secs(30);
/// Bytes buffered between the protocol and the process per stream.
const PIPE_BUFFER: usize = 64 * 1024;

/// Which streams the CRI request asked for.
#[derive(Clone, Copy)]
struct Wanted {
    stdin: bool,
    stdout: bool,
    stderr: bool,
    tty: bool,
}

impl Wanted {
    fn of(op: &Pending) -> Wanted {
        match op {
            Pending::Exec(r) => Wanted {
                stdin: r.stdin,
                stdout: r.stdout,
                stderr: r.stderr,
                tty: r.tty,
            },
            Pending::Attach(r) => Wanted {
                stdin: r.stdin,
                stdout: r.stdout,
                stderr: r.stderr,
                tty: r.tty,
            },
            Pending::PortForward(_) => Wanted {
                stdin: false,
                stdout: false,
                stderr: false,
                tty: false,
            },
        }
    }
}

/// Runs the exec or attach until it ends, the client leaves (`gone`) or
/// the connection idles out; `None` when there is nobody left to tell.
async fn run(
    session: &Session,
    op: Pending,
    io: ProcessIo,
    gone: impl Future<Output = ()>,
) -> Option<Outcome> {
    let backend = session.shared.backend.clone();
    let work = async move {
        match op {
            Pending::Exec(r) => match backend.exec(r, io).await {
                Ok(0) => Outcome::Success,
                Ok(code) => Outcome::ExitCode(code),
                Err(e) => Outcome::Error(e),
            },
            Pending::Attach(r) => match backend.attach(r, io).await {
                Ok(()) => Outcome::Success,
                Err(e) => Outcome::Error(e),
            },
            Pending::PortForward(_) => Outcome::Error("not a remotecommand request".into()),
        }
    };
    tokio::select! {
        outcome = work => Some(outcome),
        _ = gone => {
            tracing::debug!("streaming client went away: stopping its session");
            None
        }
        _ = session.idle() => None,
    }
}

/// Feeds terminal sizes read from `source` into the latest-size channel.
async fn pump_resize(
    mut source: impl tokio::io::AsyncRead + Unpin,
    tx: watch::Sender<Option<TerminalSize>>,
) {
    let mut decoder = ResizeDecoder::default();
    let mut buf = [0u8; 512];
    loop {
        match source.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => match decoder.latest(&buf[..n]) {
                Ok(size) => {
                    if size.is_some() {
                        tx.send_replace(size);
                    }
                }
                Err(e) => {
                    tracing::debug!(error = %e, "ignoring the rest of the resize stream");
                    return;
                }
            },
        }
    }
}

pub async fn spdy(session: Session, io: Upgraded, op: Pending, version: Version) {
    let wanted = Wanted::of(&op);
    let limits = Limits {
        max_streams: MAX_STREAMS_PER_SESSION,
        ..Limits::default()
    };
    let (spdy, mut incoming) = crust_spdy::Session::new(io, Role::Server, limits);
    let expected = 1
        + usize::from(wanted.stdin)
        + usize::from(wanted.stdout)
        + usize::from(wanted.stderr)
        + usize::from(wanted.tty && version.spdy_resize());
    let (mut error, mut stdin, mut stdout, mut stderr, mut resize) = (None, None, None, None, None);
    let mut received = 0;
    let deadline = tokio::time::sleep(STREAM_CREATION_TIMEOUT);
    tokio::pin!(deadline);
    while received < expected {
        let stream = tokio::select! {
            s = incoming.recv() => match s {
                Some(s) => s,
                None => return,
            },
            _ = &mut deadline => {
                tracing::info!(expected, received, "client did not open its streams in time");
                spdy.close().await;
                return;
            }
        };
        if stream.reply(Vec::new()).await.is_err() {
            spdy.close().await;
            return;
        }
        let slot = match stream.header("streamtype").unwrap_or("") {
            "error" => &mut error,
            "stdin" => &mut stdin,
            "stdout" => &mut stdout,
            "stderr" => &mut stderr,
            "resize" => &mut resize,
            other => {
                tracing::debug!(stream_type = other, "unexpected stream");
                stream.reset(1);
                continue;
            }
        };
        *slot = Some(stream.split());
        received += 1;
    }
    // The halves not handed on are kept until the end, so no stream closes
    // early.
    let mut keep: Vec<Box<dyn std::any::Any + Send>> = Vec::new();
    let mut resize_rx = None;
    if let Some((reader, writer)) = resize {
        let (tx, rx) = watch::channel(None);
        tokio::spawn(pump_resize(reader, tx));
        keep.push(Box::new(writer));
        resize_rx = Some(rx);
    }
    let mut take_writer = |s: Option<(crust_spdy::StreamReader, crust_spdy::StreamWriter)>| {
        s.map(|(reader, writer)| {
            keep.push(Box::new(reader));
            Box::new(writer) as BoxWrite
        })
    };
    let stdout = take_writer(stdout);
    let stderr = take_writer(stderr);
    let process_io = ProcessIo {
        stdin: stdin.map(|(reader, writer)| {
            keep.push(Box::new(writer));
            Box::new(reader) as crate::BoxRead
        }),
        stdout,
        stderr,
        tty: wanted.tty,
        resize: resize_rx,
    };
    let closed = spdy.clone();
    let outcome = run(
        &session,
        op,
        process_io,
        async move { closed.closed().await },
    )
    .await;
    if let (Some(outcome), Some((_, mut writer))) = (outcome, error)
        && let Some(message) = protocol::status_message(&outcome, version)
    {
        // A client that stopped reading must not hold the session for ever.
        let report = async {
            let _ = writer.write_all(&message).await;
            let _ = writer.shutdown().await;
        };
        if tokio::time::timeout(FINISH_TIMEOUT, report).await.is_err() {
            tracing::debug!("client did not take the status in time");
        }
    }
    drop(keep);
    spdy.close().await;
}

pub async fn websocket(
    session: Session,
    io: Upgraded,
    op: Pending,
    version: Version,
    protocol_name: Option<&'static str>,
) {
    let wanted = Wanted::of(&op);
    let framing = Framing::of(protocol_name);
    let (sink, mut source) = ws::accept(io).await.split();
    let (out_tx, mut writer) = ws::channel_writer(sink, framing);
    // Tells the client the session is up, as kubelet does.
    let first = if wanted.stdout {
        CHANNEL_STDOUT
    } else if wanted.stderr {
        CHANNEL_STDERR
    } else {
        CHANNEL_ERROR
    };
    let _ = out_tx.send((first, Vec::new())).await;

    let mut pumps = Vec::new();
    let mut output = |wanted: bool, channel: u8| -> Option<BoxWrite> {
        if !wanted {
            return None;
        }
        let (process_side, our_side) = tokio::io::duplex(PIPE_BUFFER);
        pumps.push(tokio::spawn(pump_out(our_side, channel, out_tx.clone())));
        Some(Box::new(process_side))
    };
    let stdout = output(wanted.stdout, CHANNEL_STDOUT);
    let stderr = output(wanted.stderr && !wanted.tty, CHANNEL_STDERR);
    let (stdin_process, stdin_ours) = if wanted.stdin {
        let (a, b) = tokio::io::duplex(PIPE_BUFFER);
        (Some(a), Some(b))
    } else {
        (None, None)
    };
    let (resize_tx, resize_rx) = watch::channel(None);
    let (gone_tx, gone_rx) = tokio::sync::oneshot::channel::<()>();
    let reader = tokio::spawn(async move {
        let mut stdin = stdin_ours;
        let mut decoder = ResizeDecoder::default();
        while let Some((channel, data)) = ws::next_channel_message(&mut source, framing).await {
            match channel {
                CHANNEL_STDIN => {
                    if let Some(s) = &mut stdin
                        && s.write_all(&data).await.is_err()
                    {
                        stdin = None;
                    }
                }
                CHANNEL_RESIZE => match decoder.latest(&data) {
                    Ok(size) => {
                        if size.is_some() {
                            resize_tx.send_replace(size);
                        }
                    }
                    Err(e) => tracing::debug!(error = %e, "bad resize message"),
                },
                CHANNEL_CLOSE if version >= Version::V5 => {
                    if data.first() == Some(&CHANNEL_STDIN)
                        && let Some(mut s) = stdin.take()
                    {
                        let _ = s.shutdown().await;
                    }
                }
                _ => {}
            }
        }
        let _ = gone_tx.send(());
    });
    let process_io = ProcessIo {
        stdin: stdin_process.map(|s| Box::new(s) as crate::BoxRead),
        stdout,
        stderr,
        tty: wanted.tty,
        resize: wanted.tty.then_some(resize_rx),
    };
    let outcome = run(&session, op, process_io, async move {
        let _ = gone_rx.await;
    })
    .await;
    // Everything the process wrote goes out before the status; a client
    // that stopped reading gets cut off instead of holding the session.
    let finish = async {
        for pump in &mut pumps {
            let _ = pump.await;
        }
        if let Some(outcome) = outcome
            && let Some(message) = protocol::status_message(&outcome, version)
        {
            let _ = out_tx.send((CHANNEL_ERROR, message)).await;
        }
        drop(out_tx);
        let _ = (&mut writer).await;
    };
    if tokio::time::timeout(FINISH_TIMEOUT, finish).await.is_err() {
        tracing::debug!("client did not take the rest of the session in time");
        for pump in &pumps {
            pump.abort();
        }
        writer.abort();
    }
    reader.abort();
}

/// Copies one output stream of the process into WebSocket messages.
async fn pump_out(mut from: DuplexStream, channel: u8, out: mpsc::Sender<(u8, Vec<u8>)>) {
    let mut buf = vec![0u8; 32 * 1024];
    loop {
        match from.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => {
                if out.send((channel, buf[..n].to_vec())).await.is_err() {
                    return;
                }
            }
        }
    }
}
