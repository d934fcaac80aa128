//! A process's stdio: what the Task API asked for, the pipes handed to the
//! container, and the threads that copy between them.
//!
//! Accepted stdio values:
//! - `crilog://<abs path>` (stdout, see [`crust_shim_proto::stdio`]): stdout
//!   and stderr go to that file in the CRI log format (see `crilog.rs`);
//! - an absolute path: a FIFO, as containerd's `ctr` passes them;
//! - empty: `/dev/null`, except for a container's main process, whose
//!   output is still read (and dropped) so that attach clients see it.
//!
//! Output copiers only ever block on their own write, so a slow reader or
//! a slow disk stops the copy and, through the full pipe, the container.
//! They also tee what they read to the process's attach clients (see
//! `attach.rs`), which never block them.
//!
//! Stdin: the shim opens the stdin FIFO read-write, so it holds a writer
//! itself and the FIFO never reports EOF: clients (an attach session, `ctr`)
//! may open, write and close it any number of times. Only CloseIO (or
//! Delete) ends the process's stdin, after passing on what was already
//! written, as containerd's shims do.

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread;

use nix::fcntl::OFlag;
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::eventfd::{EfdFlags, EventFd};

use crust_shim_proto::stdio::{LOG_SCHEME, parse_log_uri};

use crate::attach::{self, Attachers};
use crate::crilog::{CriLog, LineSplitter, Stream};

const COPY_BUF: usize = 8 * 1024;
// A copy buffer's worth of output is sent as one attach frame.
const _: () = assert!(COPY_BUF <= crust_shim_proto::attach::MAX_PAYLOAD);
const COPIER_STACK: usize = 128 * 1024;
/// Most stdin bytes passed on after CloseIO: what writers had written
/// before it, not what they keep writing.
const STDIN_DRAIN_MAX: usize = 1024 * 1024;

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Out {
    None,
    /// Read and dropped: only attach clients see it.
    Discard,
    Fifo(PathBuf),
    Log(PathBuf),
}

/// The stdio a Create or Exec request asked for.
#[derive(Clone, Debug)]
pub struct StdioConfig {
    pub stdin: Option<PathBuf>,
    pub stdout: Out,
    pub stderr: Out,
    pub terminal: bool,
}

impl StdioConfig {
    pub fn parse(stdin: &str, stdout: &str, stderr: &str, terminal: bool) -> Result<Self, String> {
        let stdin = match stdin {
            "" => None,
            p if p.contains("://") => return Err(format!("stdin {p:?}: only FIFO paths")),
            p => Some(absolute(p)?),
        };
        let stdout = parse_out(stdout)?;
        let mut stderr = parse_out(stderr)?;
        match (&stdout, &stderr) {
            // `crilog://` on stdout carries both streams.
            (Out::Log(p), Out::None) => stderr = Out::Log(p.clone()),
            (Out::Log(a), Out::Log(b)) if a != b => {
                return Err(format!(
                    "stdout and stderr must name the same {LOG_SCHEME} file"
                ));
            }
            _ => {}
        }
        if terminal {
            // A terminal has a single output stream.
            stderr = Out::None;
        }
        Ok(StdioConfig {
            stdin,
            stdout,
            stderr,
            terminal,
        })
    }

    /// The stdio of a process that can be attached to: output the request
    /// sent nowhere is still read, for the attach clients (CRI containers
    /// without a log path, as containerd's).
    pub fn attachable(&self) -> StdioConfig {
        let read = |o: &Out| match o {
            Out::None => Out::Discard,
            other => other.clone(),
        };
        StdioConfig {
            stdin: self.stdin.clone(),
            stdout: read(&self.stdout),
            // A terminal has one output stream.
            stderr: if self.terminal {
                Out::None
            } else {
                read(&self.stderr)
            },
            terminal: self.terminal,
        }
    }
}

fn parse_out(s: &str) -> Result<Out, String> {
    if s.is_empty() {
        Ok(Out::None)
    } else if let Some(p) = parse_log_uri(s).map_err(|e| e.to_string())? {
        Ok(Out::Log(p.to_path_buf()))
    } else if s.contains("://") {
        Err(format!(
            "unsupported stdio URI {s:?} (want {LOG_SCHEME}<path> or a FIFO path)"
        ))
    } else {
        Ok(Out::Fifo(absolute(s)?))
    }
}

fn absolute(p: &str) -> Result<PathBuf, String> {
    let path = PathBuf::from(p);
    if path.is_absolute() {
        Ok(path)
    } else {
        Err(format!("stdio path {p:?} is not absolute"))
    }
}

/// The container's ends of its stdio.
pub struct ChildFds {
    pub stdin: OwnedFd,
    pub stdout: OwnedFd,
    pub stderr: OwnedFd,
}

/// The shim's ends, until the copiers take them.
#[derive(Default)]
pub struct ShimFds {
    stdin: Option<OwnedFd>,
    stdout: Option<OwnedFd>,
    stderr: Option<OwnedFd>,
}

/// Makes the pipes for a process. A terminal needs none: the container
/// sends its pty master instead.
pub fn make_pipes(cfg: &StdioConfig) -> io::Result<(Option<ChildFds>, ShimFds)> {
    let mut shim = ShimFds::default();
    if cfg.terminal {
        return Ok((None, shim));
    }
    let stdin = match cfg.stdin {
        Some(_) => {
            let (r, w) = pipe()?;
            shim.stdin = Some(w);
            r
        }
        None => dev_null()?,
    };
    let out = |o: &Out, slot: &mut Option<OwnedFd>| -> io::Result<OwnedFd> {
        if *o == Out::None {
            return dev_null();
        }
        let (r, w) = pipe()?;
        *slot = Some(r);
        Ok(w)
    };
    let stdout = out(&cfg.stdout, &mut shim.stdout)?;
    let stderr = out(&cfg.stderr, &mut shim.stderr)?;
    Ok((
        Some(ChildFds {
            stdin,
            stdout,
            stderr,
        }),
        shim,
    ))
}

fn pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    Ok(nix::unistd::pipe2(OFlag::O_CLOEXEC)?)
}

fn dev_null() -> io::Result<OwnedFd> {
    Ok(OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_CLOEXEC)
        .open("/dev/null")?
        .into())
}

/// Called by each output copier when it has drained its stream.
pub type OnDrained = Arc<dyn Fn() + Send + Sync>;

/// A running process's stdio, held by the shim until Delete.
pub struct ProcIo {
    stdin_stop: Option<Arc<EventFd>>,
    pty: Option<Arc<OwnedFd>>,
    running: Arc<AtomicUsize>,
    log: Option<Arc<CriLog>>,
    fifos: Vec<PathBuf>,
    attach: Option<Arc<Attachers>>,
}

impl ProcIo {
    /// No stdio at all (a process whose stdio was never set up).
    pub fn none() -> Self {
        ProcIo {
            stdin_stop: None,
            pty: None,
            running: Arc::new(AtomicUsize::new(0)),
            log: None,
            fifos: Vec::new(),
            attach: None,
        }
    }

    /// Opens the log file before anything is created, so a bad log path
    /// fails the request instead of losing output.
    pub fn open_log(cfg: &StdioConfig) -> io::Result<Option<Arc<CriLog>>> {
        match (&cfg.stdout, &cfg.stderr) {
            (Out::Log(p), _) | (_, Out::Log(p)) => Ok(Some(CriLog::open(p)?)),
            _ => Ok(None),
        }
    }

    /// Starts the copiers for a created process. `pty` is the master of its
    /// terminal, when it has one; `attach` the clients its output is teed
    /// to (a container's init), closed once every output stream ended.
    pub fn start(
        cfg: &StdioConfig,
        log: Option<Arc<CriLog>>,
        fds: ShimFds,
        pty: Option<OwnedFd>,
        attach: Option<Arc<Attachers>>,
        on_drained: OnDrained,
    ) -> io::Result<ProcIo> {
        let pty = pty.map(Arc::new);
        let mut io = ProcIo {
            stdin_stop: None,
            pty: pty.clone(),
            running: Arc::new(AtomicUsize::new(0)),
            log: log.clone(),
            fifos: Vec::new(),
            attach: attach.clone(),
        };
        let (out, err) = match &pty {
            Some(m) => (Some(Source::Pty(m.clone())), None),
            None => (fds.stdout.map(Source::Pipe), fds.stderr.map(Source::Pipe)),
        };
        let mut to_log = Vec::new();
        let mut to_fifo = Vec::new();
        for (src, dest, stream) in [
            (out, &cfg.stdout, Stream::Stdout),
            (err, &cfg.stderr, Stream::Stderr),
        ] {
            let Some(src) = src else { continue };
            match dest {
                Out::Log(_) | Out::Discard => to_log.push((src, stream)),
                Out::Fifo(path) => {
                    io.fifos.push(path.clone());
                    to_fifo.push((src, stream, path.clone()));
                }
                Out::None => {}
            }
        }
        // Every copier is counted before the first one starts, so the
        // count cannot reach zero while copiers are still to come.
        let copiers = to_fifo.len() + usize::from(!to_log.is_empty());
        io.running.store(copiers, Ordering::SeqCst);
        let guard = || Drained {
            running: io.running.clone(),
            notify: on_drained.clone(),
            attach: attach.clone(),
        };
        let mut guards: Vec<Drained> = (0..copiers).map(|_| guard()).collect();
        for (src, stream, path) in to_fifo {
            let (guard, tee) = (guards.pop().expect("counted"), attach.clone());
            spawn("fifo-out", move || {
                copy_to_fifo(src, stream, &path, tee.as_deref(), guard)
            })?;
        }
        if !to_log.is_empty() {
            let (guard, tee) = (guards.pop().expect("counted"), attach.clone());
            spawn("log", move || {
                copy_to_log(log.as_deref(), to_log, tee.as_deref(), guard)
            })?;
        }
        if let Some(path) = &cfg.stdin {
            let target = match (&pty, fds.stdin) {
                (Some(m), _) => Target::Pty(m.clone()),
                (None, Some(w)) => Target::Pipe(File::from(w)),
                (None, None) => return Ok(io),
            };
            let stop = Arc::new(EventFd::from_value_and_flags(
                0,
                EfdFlags::EFD_CLOEXEC | EfdFlags::EFD_NONBLOCK,
            )?);
            io.stdin_stop = Some(stop.clone());
            let path = path.clone();
            spawn("stdin", move || copy_stdin(&path, target, &stop))?;
        }
        Ok(io)
    }

    /// Whether every output stream reached EOF.
    pub fn drained(&self) -> bool {
        self.running.load(Ordering::SeqCst) == 0
    }

    /// The process's exit is reported. Attach clients of a process that
    /// had no output stream to wait for are hung up on now.
    pub fn exited(&self) {
        if let Some(a) = &self.attach
            && self.drained()
        {
            a.close();
        }
    }

    pub fn log(&self) -> Option<&Arc<CriLog>> {
        self.log.as_ref()
    }

    /// CloseIO: the process sees EOF on stdin.
    pub fn close_stdin(&self) {
        if let Some(stop) = &self.stdin_stop {
            let _ = stop.write(1);
        }
    }

    pub fn resize(&self, cols: u16, rows: u16) -> io::Result<()> {
        match &self.pty {
            Some(m) => crate::sys::set_winsize(m.as_fd(), cols, rows),
            None => Ok(()),
        }
    }

    /// Lets every copier finish: stdin is closed, and an output copier still
    /// waiting for a FIFO reader is released by opening the reader side.
    pub fn release(&self) {
        self.close_stdin();
        if self.drained() {
            return;
        }
        for path in &self.fifos {
            let _ = OpenOptions::new()
                .read(true)
                .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
                .open(path);
        }
    }
}

fn spawn(name: &str, f: impl FnOnce() + Send + 'static) -> io::Result<()> {
    thread::Builder::new()
        .name(name.to_owned())
        .stack_size(COPIER_STACK)
        .spawn(f)
        .map(drop)
}

/// Counts an output copier down and tells the shim, even on panic. The
/// last one hangs up on the attach clients: the output ended.
struct Drained {
    running: Arc<AtomicUsize>,
    notify: OnDrained,
    attach: Option<Arc<Attachers>>,
}

impl Drop for Drained {
    fn drop(&mut self) {
        if self.running.fetch_sub(1, Ordering::SeqCst) == 1
            && let Some(a) = &self.attach
        {
            a.close();
        }
        (self.notify)();
    }
}

fn stream_id(stream: Stream) -> u8 {
    match stream {
        Stream::Stdout => attach::STDOUT,
        Stream::Stderr => attach::STDERR,
    }
}

enum Source {
    Pipe(OwnedFd),
    Pty(Arc<OwnedFd>),
}

impl Source {
    fn fd(&self) -> BorrowedFd<'_> {
        match self {
            Source::Pipe(fd) => fd.as_fd(),
            Source::Pty(fd) => fd.as_fd(),
        }
    }

    /// Reads; EOF is `Ok(0)`, also for a pty whose other side is gone (EIO).
    fn read(&self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            match nix::unistd::read(self.fd().as_raw_fd(), buf) {
                Ok(n) => return Ok(n),
                Err(nix::errno::Errno::EINTR | nix::errno::Errno::EAGAIN) => continue,
                Err(nix::errno::Errno::EIO) if matches!(self, Source::Pty(_)) => return Ok(0),
                Err(e) => return Err(e.into()),
            }
        }
    }
}

enum Target {
    Pipe(File),
    Pty(Arc<OwnedFd>),
}

impl Target {
    fn write_all(&mut self, data: &[u8]) -> io::Result<()> {
        match self {
            Target::Pipe(f) => f.write_all(data),
            Target::Pty(m) => {
                let mut rest = data;
                while !rest.is_empty() {
                    match nix::unistd::write(m.as_fd(), rest) {
                        Ok(n) => rest = &rest[n..],
                        Err(nix::errno::Errno::EINTR) => {}
                        Err(e) => return Err(e.into()),
                    }
                }
                Ok(())
            }
        }
    }
}

/// One thread per log file: polls the process's output streams and writes
/// CRI records (and attach frames); with no log, only attach frames.
fn copy_to_log(
    log: Option<&CriLog>,
    sources: Vec<(Source, Stream)>,
    attach: Option<&Attachers>,
    _done: Drained,
) {
    let mut streams: Vec<(Source, u8, LineSplitter)> = sources
        .into_iter()
        .map(|(s, stream)| (s, stream_id(stream), LineSplitter::new(stream)))
        .collect();
    let mut buf = vec![0u8; COPY_BUF];
    while !streams.is_empty() {
        let ready: Vec<bool> = {
            let mut fds: Vec<PollFd> = streams
                .iter()
                .map(|(s, _, _)| PollFd::new(s.fd(), PollFlags::POLLIN))
                .collect();
            match poll(&mut fds, PollTimeout::NONE) {
                Ok(_) => fds.iter().map(|f| f.any().unwrap_or(true)).collect(),
                Err(nix::errno::Errno::EINTR) => continue,
                Err(e) => {
                    log::warn!("poll on container output: {e}");
                    return;
                }
            }
        };
        let mut i = 0;
        let mut idx = 0;
        while i < streams.len() {
            let mut ended = false;
            if ready[idx] {
                let (src, id, splitter) = &mut streams[i];
                match src.read(&mut buf) {
                    Ok(0) | Err(_) => {
                        if let Some(log) = log {
                            splitter.finish(log);
                        }
                        ended = true;
                    }
                    Ok(n) => {
                        if let Some(a) = attach {
                            a.send(*id, &buf[..n]);
                        }
                        if let Some(log) = log {
                            splitter.feed(log, &buf[..n]);
                        }
                    }
                }
            }
            idx += 1;
            if ended {
                streams.remove(i);
            } else {
                i += 1;
            }
        }
    }
}

/// Copies one output stream into a FIFO (and attach frames). If the reader
/// goes away the stream is still drained, so the process never blocks on it.
fn copy_to_fifo(
    src: Source,
    stream: Stream,
    path: &Path,
    attach: Option<&Attachers>,
    _done: Drained,
) {
    // Blocks until a reader opens the FIFO, as containerd's shim does.
    let mut out = match OpenOptions::new()
        .write(true)
        .custom_flags(libc::O_CLOEXEC)
        .open(path)
    {
        Ok(f) => Some(f),
        Err(e) => {
            log::warn!("open {}: {e}", path.display());
            None
        }
    };
    let mut buf = vec![0u8; COPY_BUF];
    loop {
        let n = match src.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        if let Some(a) = attach {
            a.send(stream_id(stream), &buf[..n]);
        }
        if let Some(f) = &mut out
            && f.write_all(&buf[..n]).is_err()
        {
            out = None;
        }
    }
}

/// Copies a stdin FIFO into the process until CloseIO asks to stop; then
/// the process sees EOF. Writers of the FIFO may come and go meanwhile.
fn copy_stdin(path: &Path, mut target: Target, stop: &EventFd) {
    // Read-write: no writer needs to be there yet, and the shim's own
    // writer keeps the FIFO from ever reading EOF when a client closes it.
    let mut fifo = match OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open(path)
    {
        Ok(f) => f,
        Err(e) => {
            log::warn!("open {}: {e}", path.display());
            return;
        }
    };
    let mut buf = vec![0u8; COPY_BUF];
    loop {
        let (data, stopped) = {
            let mut fds = [
                PollFd::new(fifo.as_fd(), PollFlags::POLLIN),
                PollFd::new(stop.as_fd(), PollFlags::POLLIN),
            ];
            match poll(&mut fds, PollTimeout::NONE) {
                Ok(_) => (fds[0].any().unwrap_or(true), fds[1].any().unwrap_or(false)),
                Err(nix::errno::Errno::EINTR) => continue,
                Err(_) => break,
            }
        };
        if stopped {
            // What writers wrote before CloseIO still reaches the process.
            let mut passed = 0;
            while passed < STDIN_DRAIN_MAX {
                match fifo.read(&mut buf) {
                    Ok(0) => break,
                    Ok(n) => {
                        if target.write_all(&buf[..n]).is_err() {
                            break;
                        }
                        passed += n;
                    }
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(_) => break,
                }
            }
            break;
        }
        if data {
            match fifo.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => {
                    if target.write_all(&buf[..n]).is_err() {
                        break;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => break,
            }
        }
    }
    // Dropping a pipe target closes the process's stdin.
    drop(target);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attachable_output_is_read_even_when_sent_nowhere() {
        let c = StdioConfig::parse("/f/in", "", "", false)
            .unwrap()
            .attachable();
        assert_eq!((c.stdout, c.stderr), (Out::Discard, Out::Discard));
        let c = StdioConfig::parse("", "", "", true).unwrap().attachable();
        assert_eq!((c.stdout, c.stderr), (Out::Discard, Out::None));
        let c = StdioConfig::parse("", "crilog:///l", "", false)
            .unwrap()
            .attachable();
        assert_eq!(c.stderr, Out::Log("/l".into()));
    }

    #[test]
    fn parses_stdio() {
        let c = StdioConfig::parse("", "crilog:///var/log/pods/x/0.log", "", false).unwrap();
        assert_eq!(c.stdout, Out::Log("/var/log/pods/x/0.log".into()));
        assert_eq!(c.stderr, Out::Log("/var/log/pods/x/0.log".into()));
        assert_eq!(c.stdin, None);
        let c = StdioConfig::parse("/f/in", "/f/out", "/f/err", false).unwrap();
        assert_eq!(c.stdin, Some("/f/in".into()));
        assert_eq!(c.stderr, Out::Fifo("/f/err".into()));
        let c = StdioConfig::parse("", "/f/out", "/f/err", true).unwrap();
        assert_eq!(c.stderr, Out::None);
        assert!(StdioConfig::parse("", "binary:///x", "", false).is_err());
        assert!(StdioConfig::parse("", "crilog:///a", "crilog:///b", false).is_err());
        let c = StdioConfig::parse("", "crilog:///a", "crilog:///a", false).unwrap();
        assert_eq!(c.stderr, Out::Log("/a".into()));
        assert!(StdioConfig::parse("", "relative/fifo", "", false).is_err());
        assert!(StdioConfig::parse("", "crilog://rel", "", false).is_err());
    }
}
