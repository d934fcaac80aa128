//! `crust-shim mode cri-logger ...`: the log writer of a container that
//! another shim runs, reading its stdout and stderr FIFOs (see
//! [`crust_shim_proto::logger`]). One process per container, in a session
//! of its own, so it outlives a crustd restart as the shim does.
//!
//! It does for the container what crust-shim's own copiers do: CRI log
//! records with the same splitting and limits ([`crate::crilog`]), the
//! same attach socket and frames ([`crate::attach`]), SIGUSR1 reopens the
//! log. It exits when both streams reach EOF, or at SIGTERM (the shim's
//! way of closing it at Delete) once it has written what is readable.

use std::fs::File;
use std::io::Write;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::path::Path;

use anyhow::{Context, Result};
use crust_shim_proto::logger::{self, LoggerArgs};
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::signal::{SigSet, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};

use crate::attach::{self, AttachSocket};
use crate::crilog::{CriLog, LineSplitter, Stream};

const COPY_BUF: usize = 8 * 1024;
/// How often (ms) an idle writer checks that its bundle still exists.
const IDLE_CHECK_MS: u16 = 5000;

pub fn run(args: &LoggerArgs) -> Result<()> {
    // SAFETY: whoever started the logger (crustd, or a containerd shim)
    // passes these fds, and nothing else in this fresh process owns them.
    let (stdout, stderr, ready) = unsafe {
        (
            OwnedFd::from_raw_fd(logger::STDOUT_FD),
            OwnedFd::from_raw_fd(logger::STDERR_FD),
            OwnedFd::from_raw_fd(logger::READY_FD),
        )
    };
    let mut mask = SigSet::empty();
    for s in [
        Signal::SIGUSR1,
        Signal::SIGTERM,
        Signal::SIGINT,
        Signal::SIGPIPE,
    ] {
        mask.add(s);
    }
    mask.thread_block().context("block signals")?;
    let signals = SignalFd::with_flags(&mask, SfdFlags::SFD_CLOEXEC | SfdFlags::SFD_NONBLOCK)?;
    let log = match &args.log {
        Some(path) => Some(CriLog::open(path).with_context(|| format!("open {}", path.display()))?),
        None => None,
    };
    let socket = AttachSocket::bind(&args.bundle)
        .with_context(|| format!("attach socket in {}", args.bundle.display()))?;
    write_pid_file(&args.bundle)?;
    // Ready: the container may start.
    drop(ready);

    let mut streams: Vec<(OwnedFd, u8, LineSplitter)> = vec![
        (stdout, attach::STDOUT, LineSplitter::new(Stream::Stdout)),
        (stderr, attach::STDERR, LineSplitter::new(Stream::Stderr)),
    ];
    let mut buf = vec![0u8; COPY_BUF];
    let mut terminating = false;
    while !streams.is_empty() {
        let (stream_ready, accept, signal) = {
            let mut fds: Vec<PollFd> = streams
                .iter()
                .map(|(fd, _, _)| PollFd::new(fd.as_fd(), PollFlags::POLLIN))
                .collect();
            fds.push(PollFd::new(socket.fd(), PollFlags::POLLIN));
            fds.push(PollFd::new(signals.as_fd(), PollFlags::POLLIN));
            // Once asked to stop, only what is readable now is copied.
            let timeout = if terminating {
                PollTimeout::ZERO
            } else {
                PollTimeout::from(IDLE_CHECK_MS)
            };
            match poll(&mut fds, timeout) {
                Ok(0) if terminating => break,
                // A crustd that died before the shim took the FIFOs leaves
                // no writer ever: once the bundle is removed, so is this.
                Ok(0) if !args.bundle.exists() => break,
                Ok(0) => continue,
                Ok(_) => {}
                Err(nix::errno::Errno::EINTR) => continue,
                Err(e) => return Err(e).context("poll"),
            }
            let ready: Vec<bool> = fds.iter().map(|f| f.any().unwrap_or(true)).collect();
            let n = streams.len();
            (ready[..n].to_vec(), ready[n], ready[n + 1])
        };
        if signal {
            while let Ok(Some(info)) = signals.read_signal() {
                match Signal::try_from(info.ssi_signo as i32) {
                    Ok(Signal::SIGUSR1) => {
                        if let Some(log) = &log
                            && let Err(e) = log.reopen()
                        {
                            eprintln!(
                                "crust-shim cri-logger: reopen {}: {e}",
                                log.path().display()
                            );
                        }
                    }
                    Ok(Signal::SIGTERM | Signal::SIGINT) => terminating = true,
                    _ => {}
                }
            }
        }
        if accept {
            socket.accept();
        }
        let mut i = 0;
        for ready in stream_ready {
            let (fd, id, splitter) = &mut streams[i];
            let mut ended = false;
            if ready {
                match read(fd.as_fd(), &mut buf) {
                    Ok(None) => {}
                    Ok(Some(0)) | Err(_) => ended = true,
                    Ok(Some(n)) => {
                        socket.attachers().send(*id, &buf[..n]);
                        if let Some(log) = &log {
                            splitter.feed(log, &buf[..n]);
                        }
                    }
                }
            }
            if ended {
                if let Some(log) = &log {
                    splitter.finish(log);
                }
                streams.remove(i);
            } else {
                i += 1;
            }
        }
    }
    if let Some(log) = &log {
        for (_, _, splitter) in &mut streams {
            splitter.finish(log);
        }
    }
    // The output ended: attach clients see EOF; the socket file goes.
    socket.remove();
    let _ = std::fs::remove_file(args.bundle.join(logger::PID_FILE));
    Ok(())
}

/// Reads what is there: `None` when nothing is (a non-blocking pipe).
fn read(fd: BorrowedFd<'_>, buf: &mut [u8]) -> nix::Result<Option<usize>> {
    loop {
        match nix::unistd::read(fd.as_raw_fd(), buf) {
            Err(nix::errno::Errno::EINTR) => continue,
            Err(nix::errno::Errno::EAGAIN) => return Ok(None),
            other => return other.map(Some),
        }
    }
}

/// `<bundle>/cri-logger.pid`, written whole (temp file, then rename).
fn write_pid_file(bundle: &Path) -> Result<()> {
    let stat = std::fs::read_to_string("/proc/self/stat")?;
    let start_time =
        crust_shim_proto::proc::start_time(&stat).context("no start time in /proc/self/stat")?;
    let tmp = bundle.join(format!(".{}.tmp", logger::PID_FILE));
    let mut f = File::create(&tmp)?;
    f.write_all(logger::pid_file(std::process::id(), start_time).as_bytes())?;
    drop(f);
    std::fs::rename(&tmp, bundle.join(logger::PID_FILE))?;
    Ok(())
}
