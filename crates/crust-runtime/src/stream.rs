//! The runtime's half of streaming (crust-stream speaks the protocols):
//! exec processes wired to the client through FIFOs, attach through the
//! shim's attach socket and the container's stdin FIFO, and TCP
//! connections dialled inside a pod's network namespace.

use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use crust_cri_api::v1 as cri;
use crust_shim_proto::attach::{self, HEADER_LEN};
use crust_shim_proto::bundle::ATTACH_SOCKET;
use crust_store::{ContainerRecord, SandboxRecord, SandboxState};
use crust_stream::{BoxFuture, BoxWrite, ProcessIo};
use nix::sys::stat::Mode;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::net::unix::pipe;
use tokio::task::JoinSet;

use crate::container::{PreparedExec, record_config};
use crate::{Pods, RuntimeError};

/// The FIFO in a container's bundle that feeds its stdin.
const STDIN_FIFO: &str = "stdin";
/// How long an exec's output may stay silent after the process exited
/// before it is given up (a background child can hold the pipe for ever).
const OUTPUT_GRACE: Duration = Duration::from_secs(2);
/// Waiting for an exec's exit has no deadline of its own: the session's
/// idle timeout and the client going away end it.
const NO_DEADLINE: Duration = Duration::from_secs(365 * 24 * 3600);
/// How long a TTY exec waits for the client's terminal size.
const FIRST_RESIZE_WAIT: Duration = Duration::from_millis(500);
/// How long dialling a pod's port may take.
const DIAL_TIMEOUT: Duration = Duration::from_secs(10);

/// The stdin the shim gets for a container: a FIFO in the bundle when the
/// container config asks for stdin (attach writes into it), else none.
pub(crate) fn stdin_fifo(record: &ContainerRecord) -> Result<String, RuntimeError> {
    if !record_config(record).stdin {
        return Ok(String::new());
    }
    let path = Path::new(&record.bundle).join(STDIN_FIFO);
    make_fifo(&path)?;
    Ok(path.display().to_string())
}

pub(crate) fn make_fifo(path: &Path) -> Result<(), RuntimeError> {
    match nix::unistd::mkfifo(path, Mode::from_bits_truncate(0o600)) {
        Ok(()) | Err(nix::errno::Errno::EEXIST) => Ok(()),
        Err(e) => Err(RuntimeError::Internal(format!(
            "mkfifo {}: {e}",
            path.display()
        ))),
    }
}

/// A writer on a FIFO that never fails for want of a reader: it opens the
/// FIFO read-write, so it works before the shim opened its end.
fn fifo_writer(path: &Path) -> Result<pipe::Sender, RuntimeError> {
    Ok(pipe::OpenOptions::new()
        .read_write(true)
        .open_sender(path)?)
}

/// Stops an exec that its client abandoned: the process is killed and
/// removed from the shim, even though the future running it was dropped.
struct ExecGuard {
    exec: Option<PreparedExec>,
}

impl ExecGuard {
    async fn finish(mut self) {
        if let Some(exec) = self.exec.take() {
            exec.clean_up().await;
        }
    }
}

impl Drop for ExecGuard {
    fn drop(&mut self) {
        if let Some(exec) = self.exec.take() {
            tracing::info!(
                exec_id = exec.exec_id,
                "streaming client gone: killing its exec"
            );
            tokio::spawn(async move {
                let _ = exec
                    .shim
                    .kill(
                        &exec.container_id,
                        &exec.exec_id,
                        libc::SIGKILL as u32,
                        false,
                    )
                    .await;
                let _ = exec
                    .shim
                    .wait(&exec.container_id, &exec.exec_id, Duration::from_secs(10))
                    .await;
                exec.clean_up().await;
            });
        }
    }
}

/// Applies every terminal size the client sends to the process's pty.
async fn follow_resizes(
    shim: crate::shim::Shim,
    id: String,
    exec_id: String,
    mut sizes: tokio::sync::watch::Receiver<Option<crust_stream::TerminalSize>>,
) {
    loop {
        let size = *sizes.borrow_and_update();
        if let Some(size) = size
            && let Err(e) = shim
                .resize_pty(&id, &exec_id, size.width, size.height)
                .await
        {
            tracing::debug!(error = %e, "resize failed");
        }
        if sizes.changed().await.is_err() {
            return;
        }
    }
}

/// Copies an exec's output to the client until EOF. Once the process has
/// exited, a pipe that stays silent for [`OUTPUT_GRACE`] is given up (a
/// background child may hold it open for ever); output that keeps coming
/// is never cut.
async fn copy_out(
    mut from: pipe::Receiver,
    mut to: BoxWrite,
    mut exited: tokio::sync::watch::Receiver<bool>,
) {
    let mut buf = vec![0u8; 32 * 1024];
    loop {
        let read = if *exited.borrow() {
            match tokio::time::timeout(OUTPUT_GRACE, from.read(&mut buf)).await {
                Ok(r) => r,
                Err(_) => {
                    tracing::debug!("exec output silent after exit: cutting it off");
                    break;
                }
            }
        } else {
            tokio::select! {
                r = from.read(&mut buf) => r,
                _ = exited.changed() => continue,
            }
        };
        match read {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                if to.write_all(&buf[..n]).await.is_err() {
                    break;
                }
            }
        }
    }
    let _ = to.flush().await;
}

impl Pods {
    /// The container an exec or attach may use: it must be running.
    pub fn running_container(&self, id: &str) -> Result<String, RuntimeError> {
        Ok(self.require_running(id)?.id)
    }

    /// The pod a port-forward may use: it must be ready.
    pub fn ready_pod(&self, id: &str) -> Result<String, RuntimeError> {
        Ok(self.ready_sandbox(id)?.id)
    }

    fn ready_sandbox(&self, id: &str) -> Result<SandboxRecord, RuntimeError> {
        let sandbox = self.require_sandbox(id)?;
        if sandbox.state != SandboxState::Ready {
            return Err(RuntimeError::FailedPrecondition(format!(
                "pod sandbox {} is not ready",
                sandbox.id
            )));
        }
        Ok(sandbox)
    }

    /// Exec processes started before crustd last stopped lost their client
    /// with it: kill them and remove their FIFOs.
    pub(crate) async fn kill_orphaned_execs(&self, record: &ContainerRecord) {
        let Ok(entries) = std::fs::read_dir(Path::new(&record.bundle).join("execs")) else {
            return;
        };
        let Ok(sandbox) = self.require_sandbox(&record.sandbox_id) else {
            return;
        };
        let Ok(shim) = self.shim_for(&sandbox).await else {
            return;
        };
        for entry in entries.flatten() {
            let exec_id = entry.file_name().to_string_lossy().into_owned();
            if exec_id.starts_with(&self.exec_prefix) {
                // This crustd's own: a client is running it.
                continue;
            }
            tracing::info!(container_id = %record.id, exec_id, "killing an exec orphaned by a restart");
            let _ = shim
                .kill(&record.id, &exec_id, libc::SIGKILL as u32, false)
                .await;
            let _ = shim
                .wait(&record.id, &exec_id, Duration::from_secs(5))
                .await;
            let _ = shim.delete(&record.id, &exec_id).await;
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }

    /// Runs a command with the client's streams and returns its exit code.
    pub async fn exec_stream(
        &self,
        request: cri::ExecRequest,
        io: ProcessIo,
    ) -> Result<i32, RuntimeError> {
        let tty = request.tty;
        let mut guard = ExecGuard {
            exec: Some(
                self.prepare_exec(&request.container_id, request.cmd, tty)
                    .await?,
            ),
        };
        let exec = guard.exec.as_mut().expect("just set");
        let mut io = io;
        if tty && let Some(sizes) = &mut io.resize {
            // The terminal starts at the client's size (kubectl sends it
            // first thing), so a command reading it at once gets it right.
            let first = tokio::time::timeout(FIRST_RESIZE_WAIT, sizes.wait_for(Option::is_some));
            if let Ok(Ok(size)) = first.await
                && let Some(size) = *size
            {
                exec.process["consoleSize"] =
                    serde_json::json!({"height": size.height, "width": size.width});
            }
        }
        let fifo = |name: &str| -> Result<PathBuf, RuntimeError> {
            let path = exec.dir.join(name);
            make_fifo(&path)?;
            Ok(path)
        };
        let name = |p: &Option<PathBuf>| p.as_ref().map(|p| p.display().to_string());
        let stdin_path = io.stdin.is_some().then(|| fifo("stdin")).transpose()?;
        let stdout_path = io.stdout.is_some().then(|| fifo("stdout")).transpose()?;
        let stderr_path = (io.stderr.is_some() && !tty)
            .then(|| fifo("stderr"))
            .transpose()?;
        // Readers open first so the shim's open for writing succeeds.
        let open_reader = |p: &Option<PathBuf>| -> Result<Option<pipe::Receiver>, RuntimeError> {
            Ok(match p {
                Some(p) => Some(pipe::OpenOptions::new().open_receiver(p)?),
                None => None,
            })
        };
        let stdout_fifo = open_reader(&stdout_path)?;
        let stderr_fifo = open_reader(&stderr_path)?;
        let stdin_fifo = stdin_path.as_deref().map(fifo_writer).transpose()?;
        let stdio = crate::shim::Stdio {
            stdin: name(&stdin_path).unwrap_or_default(),
            stdout: name(&stdout_path).unwrap_or_default(),
            stderr: name(&stderr_path).unwrap_or_default(),
            terminal: tty,
        };
        let json =
            serde_json::to_vec(&exec.process).map_err(|e| RuntimeError::Internal(e.to_string()))?;
        let (shim, id, exec_id) = (
            exec.shim.clone(),
            exec.container_id.clone(),
            exec.exec_id.clone(),
        );
        shim.exec(&id, &exec_id, json, &stdio).await?;
        shim.start_process(&id, &exec_id).await?;

        let mut tasks = JoinSet::new();
        if let (Some(mut from), Some(mut to)) = (io.stdin, stdin_fifo) {
            let (shim, id, exec_id) = (shim.clone(), id.clone(), exec_id.clone());
            tasks.spawn(async move {
                let _ = tokio::io::copy(&mut from, &mut to).await;
                let _ = shim.close_stdin(&id, &exec_id).await;
            });
        }
        if let Some(sizes) = io.resize.filter(|_| tty) {
            tasks.spawn(follow_resizes(
                shim.clone(),
                id.clone(),
                exec_id.clone(),
                sizes,
            ));
        }
        let (exited_tx, exited) = tokio::sync::watch::channel(false);
        let mut outputs = JoinSet::new();
        for (fifo, to) in [(stdout_fifo, io.stdout), (stderr_fifo, io.stderr)] {
            if let (Some(fifo), Some(to)) = (fifo, to) {
                outputs.spawn(copy_out(fifo, to, exited.clone()));
            }
        }
        let (status, _) = shim.wait(&id, &exec_id, NO_DEADLINE).await?;
        exited_tx.send_replace(true);
        while outputs.join_next().await.is_some() {}
        tasks.abort_all();
        guard.finish().await;
        Ok(status as i32)
    }

    /// Connects the client to a running container's main process until it
    /// exits or the client leaves.
    pub async fn attach_stream(
        &self,
        request: cri::AttachRequest,
        io: ProcessIo,
    ) -> Result<(), RuntimeError> {
        let record = self.require_running(&request.container_id)?;
        let config = record_config(&record);
        let sandbox = self.require_sandbox(&record.sandbox_id)?;
        let shim = self.shim_for(&sandbox).await?;
        let bundle = PathBuf::from(&record.bundle);
        let mut socket = connect_in_dir(&bundle, ATTACH_SOCKET).await.map_err(|e| {
            RuntimeError::Internal(format!("cannot attach to container {}: {e}", record.id))
        })?;

        let mut tasks = JoinSet::new();
        match io.stdin {
            Some(mut from) if config.stdin => {
                let mut to = fifo_writer(&bundle.join(STDIN_FIFO))?;
                // Fires when the copy ends: the client's stdin closed or
                // the attach went away (the task is aborted then).
                let once = StdinOnceGuard {
                    shim: shim.clone(),
                    id: record.id.clone(),
                    armed: config.stdin_once && !record.tty,
                };
                tasks.spawn(async move {
                    let _once = once;
                    let _ = tokio::io::copy(&mut from, &mut to).await;
                });
            }
            Some(_) => tracing::debug!(
                container = record.id,
                "attach asked for stdin but the container has none: ignoring it"
            ),
            None => {}
        }
        if let Some(sizes) = io.resize.filter(|_| record.tty) {
            tasks.spawn(follow_resizes(
                shim.clone(),
                record.id.clone(),
                String::new(),
                sizes,
            ));
        }
        let (mut stdout, mut stderr) = (io.stdout, io.stderr);
        let mut head = [0u8; HEADER_LEN];
        let mut payload = Vec::new();
        loop {
            if socket.read_exact(&mut head).await.is_err() {
                break;
            }
            // A length over the limit is refused before making room for it.
            let frame = attach::decode_header(&head).map_err(|e| {
                RuntimeError::Internal(format!("attach socket sent a {}-byte frame", e.len))
            })?;
            payload.resize(frame.len, 0);
            if socket.read_exact(&mut payload).await.is_err() {
                break;
            }
            let target = match frame.stream {
                attach::STDOUT => &mut stdout,
                attach::STDERR => &mut stderr,
                _ => continue,
            };
            if let Some(w) = target
                && w.write_all(&payload).await.is_err()
            {
                *target = None;
            }
        }
        tasks.abort_all();
        Ok(())
    }

    /// A TCP connection to `port` on the pod's loopback.
    pub async fn port_forward_connect(
        &self,
        pod_id: &str,
        port: u16,
    ) -> Result<TcpStream, RuntimeError> {
        // Checked at every dial, not only when the URL was handed out: a
        // stopped pod has no network namespace left, and an empty one
        // would mean the host's.
        let netns = self.ready_sandbox(pod_id)?.netns;
        let (tx, rx) = tokio::sync::oneshot::channel();
        // setns changes the calling thread: use a thread of our own that
        // ends right after, never one of the runtime's.
        std::thread::Builder::new()
            .name("port-forward-dial".into())
            .spawn(move || {
                let _ = tx.send(dial_in(&netns, port));
            })?;
        let stream = rx
            .await
            .map_err(|_| RuntimeError::Internal("dialler thread vanished".into()))?
            .map_err(|e| {
                RuntimeError::FailedPrecondition(format!("cannot connect to port {port}: {e}"))
            })?;
        Ok(TcpStream::from_std(stream)?)
    }
}

/// Connects to loopback `port`, inside the network namespace at `netns`
/// (the host's when empty).
fn dial_in(netns: &str, port: u16) -> std::io::Result<std::net::TcpStream> {
    if !netns.is_empty() {
        let ns = std::fs::File::open(netns)?;
        nix::sched::setns(ns, nix::sched::CloneFlags::CLONE_NEWNET)?;
    }
    let v4 = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let stream = std::net::TcpStream::connect_timeout(&v4, DIAL_TIMEOUT).or_else(|e| {
        let v6 = std::net::SocketAddr::from((std::net::Ipv6Addr::LOCALHOST, port));
        std::net::TcpStream::connect_timeout(&v6, DIAL_TIMEOUT).map_err(|_| e)
    })?;
    stream.set_nonblocking(true)?;
    Ok(stream)
}

/// Connects to a unix socket in `dir` whatever the length of its path,
/// through /proc/self/fd (sun_path holds 107 bytes).
async fn connect_in_dir(dir: &Path, name: &str) -> std::io::Result<tokio::net::UnixStream> {
    let handle = nix::fcntl::open(
        dir,
        nix::fcntl::OFlag::O_PATH | nix::fcntl::OFlag::O_DIRECTORY | nix::fcntl::OFlag::O_CLOEXEC,
        Mode::empty(),
    )?;
    // SAFETY: open returned a new descriptor that nothing else owns.
    let handle = unsafe { <std::os::fd::OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(handle) };
    let path = format!("/proc/self/fd/{}/{name}", handle.as_raw_fd());
    let stream = tokio::net::UnixStream::connect(path).await;
    drop(handle);
    stream
}

/// For `stdin_once` containers: when the first attach's stdin ends (or the
/// attach goes away), the container's stdin is closed for good, as
/// containerd does (not for TTYs, where kubectl's stdin ends otherwise).
struct StdinOnceGuard {
    shim: crate::shim::Shim,
    id: String,
    armed: bool,
}

impl Drop for StdinOnceGuard {
    fn drop(&mut self) {
        if self.armed {
            self.armed = false;
            let (shim, id) = (self.shim.clone(), std::mem::take(&mut self.id));
            tokio::spawn(async move {
                let _ = shim.close_stdin(&id, "").await;
            });
        }
    }
}

/// crust-stream's view of the runtime.
pub struct StreamBackend(pub Arc<Pods>);

impl crust_stream::Backend for StreamBackend {
    fn exec(&self, request: cri::ExecRequest, io: ProcessIo) -> BoxFuture<Result<i32, String>> {
        let pods = self.0.clone();
        Box::pin(async move {
            pods.exec_stream(request, io)
                .await
                .map_err(|e| e.to_string())
        })
    }

    fn attach(&self, request: cri::AttachRequest, io: ProcessIo) -> BoxFuture<Result<(), String>> {
        let pods = self.0.clone();
        Box::pin(async move {
            pods.attach_stream(request, io)
                .await
                .map_err(|e| e.to_string())
        })
    }

    fn port_forward(
        &self,
        pod_sandbox_id: String,
        port: u16,
    ) -> BoxFuture<Result<TcpStream, String>> {
        let pods = self.0.clone();
        Box::pin(async move {
            pods.port_forward_connect(&pod_sandbox_id, port)
                .await
                .map_err(|e| e.to_string())
        })
    }
}
