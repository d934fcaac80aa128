//! What crustd does for shims other than crust-shim (containerd's
//! `containerd-shim-runc-v2` and the like), to drive them as containerd
//! does:
//!
//! - The pod's shim is started at RunPodSandbox in the pod's dir, as
//!   crust-shim is. containerd's shims read `config.json` in their working
//!   dir at `start` (for the grouping annotation, which makes them one
//!   shim per pod) and log into a `log` FIFO there that must have a
//!   reader: [`prepare_pod_dir`] writes a spec holding only the pod's id
//!   as `io.kubernetes.cri.sandbox-id`, and [`forward_shim_log`] copies the
//!   shim's log lines into crustd's own log.
//! - No pause container: the pod's namespaces are pinned files (and the
//!   pod init's PID namespace), and the containers' specs join them by
//!   path, which runc does as crust-shim does.
//! - Container stdio is FIFOs, as every shim v2 takes them. crust-shim,
//!   started by crustd as the container's log writer
//!   ([`crust_shim_proto::logger`]), reads the output FIFOs, writes the
//!   CRI log and serves the attach socket as crust-shim does for its own
//!   containers; it is a process of its own, so output keeps flowing
//!   while crustd restarts. The shim holds the stdin FIFO's writer
//!   itself until CloseIO. Exec processes use FIFOs, as for crust-shim.
//! - Runtime options (runc's `Options`) travel as containerd sends them:
//!   a `containerd.runc.v1.Options` Any on `start`'s stdin and in Create.

use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use containerd_shim_protos::protobuf::Message;
use containerd_shim_protos::protobuf::well_known_types::any::Any;
use containerd_shim_protos::shim::oci::Options as RuncOptionsProto;
use crust_config::{HandlerConfig, RuncOptions, ShimKind};
use std::io::Read;

use tokio::io::{AsyncBufReadExt, AsyncReadExt};

use crate::RuntimeError;

/// The annotation containerd's shims group a pod's containers by.
pub const SANDBOX_ID_ANNOTATION: &str = "io.kubernetes.cri.sandbox-id";
/// The FIFO a containerd shim logs into, in its working dir.
const SHIM_LOG_FIFO: &str = "log";
/// Longest shim log line passed on as one; a longer one goes in pieces.
const MAX_SHIM_LOG_LINE: usize = 16 * 1024;

/// Whether the handler's shim is crust's own.
pub fn is_foreign(handler: &HandlerConfig) -> bool {
    handler.kind() != ShimKind::Crust
}

/// Writes what a containerd shim expects in its working dir before
/// `start`: a spec naming the pod, and the `log` FIFO.
pub fn prepare_pod_dir(dir: &Path, pod_id: &str) -> Result<(), RuntimeError> {
    let spec = serde_json::json!({
        "ociVersion": "1.0.2",
        "annotations": { SANDBOX_ID_ANNOTATION: pod_id },
    });
    std::fs::write(
        dir.join(crust_shim_proto::bundle::CONFIG),
        serde_json::to_vec(&spec).expect("a JSON value"),
    )?;
    crate::stream::make_fifo(&dir.join(SHIM_LOG_FIFO))
}

/// Copies the shim's log lines into crustd's log until the pod's dir is
/// gone. The FIFO is held open read-write, so the shim never sees a
/// missing reader (nor EOF while it has not opened its end yet).
pub fn forward_shim_log(dir: &Path, pod_id: &str) -> Result<(), RuntimeError> {
    let fifo = dir.join(SHIM_LOG_FIFO);
    let receiver = tokio::net::unix::pipe::OpenOptions::new()
        .read_write(true)
        .open_receiver(&fifo)
        .map_err(|e| {
            RuntimeError::Internal(format!(
                "cannot read the shim's log {}: {e}",
                fifo.display()
            ))
        })?;
    let pod_id = pod_id.to_string();
    tokio::spawn(async move {
        let mut lines = tokio::io::BufReader::new(receiver);
        let mut line = Vec::new();
        loop {
            let room = (MAX_SHIM_LOG_LINE - line.len()) as u64;
            let read = tokio::time::timeout(
                Duration::from_secs(5),
                (&mut lines).take(room).read_until(b'\n', &mut line),
            )
            .await;
            match read {
                Ok(Ok(0)) | Ok(Err(_)) => return,
                Ok(Ok(_)) if line.ends_with(b"\n") || line.len() >= MAX_SHIM_LOG_LINE => {
                    let text = String::from_utf8_lossy(&line);
                    tracing::info!(pod_id, shim_log = %text.trim_end(), "shim");
                    line.clear();
                }
                // Part of a line: the rest follows.
                Ok(Ok(_)) => {}
                // Nothing for a while (what was read stays in `line`):
                // stop once the pod is gone.
                Err(_) if !fifo.exists() => return,
                Err(_) => {}
            }
        }
    });
    Ok(())
}

/// The runc shim's options as containerd sends them: `containerd.runc.v1.Options`.
/// `SystemdCgroup` follows crust's cgroup driver (`systemd`) unless set:
/// crust writes cgroupsPath in its driver's form, which runc must read the
/// same way, so a contradicting setting is an error.
pub fn options_any(handler: &HandlerConfig, systemd: bool) -> Result<Option<Any>, RuntimeError> {
    if handler.kind() != ShimKind::RuncV2 {
        return Ok(None);
    }
    let mut o: RuncOptions = handler.runc_options().map_err(RuntimeError::Config)?;
    if handler.options.contains_key("SystemdCgroup") && o.systemd_cgroup != systemd {
        return Err(RuntimeError::Config(format!(
            "the runc handler's SystemdCgroup is {} but crust's cgroup driver is {}: cgroup paths would be read the wrong way; remove SystemdCgroup or make it match",
            o.systemd_cgroup,
            if systemd { "systemd" } else { "cgroupfs" }
        )));
    }
    o.systemd_cgroup = systemd;
    let proto = RuncOptionsProto {
        no_pivot_root: o.no_pivot_root,
        no_new_keyring: o.no_new_keyring,
        shim_cgroup: o.shim_cgroup,
        io_uid: o.io_uid,
        io_gid: o.io_gid,
        binary_name: o.binary_name,
        root: o.root,
        systemd_cgroup: o.systemd_cgroup,
        criu_image_path: o.criu_image_path,
        criu_work_path: o.criu_work_path,
        ..Default::default()
    };
    Ok(Some(Any {
        type_url: "containerd.runc.v1.Options".into(),
        value: proto
            .write_to_bytes()
            .map_err(|e| RuntimeError::Internal(format!("encoding runc options: {e}")))?,
        ..Default::default()
    }))
}

/// A container's output FIFOs in its bundle, read by its log writer.
const STDOUT_FIFO: &str = "stdout";
const STDERR_FIFO: &str = "stderr";
/// How long a log writer may take to be ready.
const LOGGER_READY_WAIT: Duration = Duration::from_secs(10);

/// The stdout and stderr FIFO paths of a container another shim runs,
/// with crust-shim already reading them as the container's log writer
/// (CRI log `log`, none: attach only; attach socket in `bundle`). Dropped
/// before [`OutputFifos::hand_over`] (a StartContainer cancelled during
/// Create), the writer is stopped: a retry must not find a second one on
/// the same FIFOs.
pub struct OutputFifos {
    pub stdout: PathBuf,
    /// None with a terminal: it has one output stream.
    pub stderr: Option<PathBuf>,
    logger: Option<tokio::process::Child>,
}

impl OutputFifos {
    /// The shim took the FIFOs: the log writer runs on by itself (it ends
    /// with the container's output), reaped here while crustd lives.
    pub fn hand_over(mut self) {
        if let Some(mut logger) = self.logger.take() {
            tokio::spawn(async move {
                let _ = logger.wait().await;
            });
        }
    }

    /// The container was never created: the log writer is stopped.
    pub async fn abandon(mut self) {
        if let Some(logger) = self.logger.take() {
            stop(logger).await;
        }
    }
}

impl Drop for OutputFifos {
    fn drop(&mut self) {
        if let Some(logger) = self.logger.take() {
            // In the background: Drop cannot wait.
            tokio::spawn(stop(logger));
        }
    }
}

/// Stops a log writer crustd still holds as its child (so its pid cannot
/// have been reused): SIGTERM (it writes what is readable and exits), then
/// SIGKILL if it is not gone within 5 s.
async fn stop(mut logger: tokio::process::Child) {
    if let Some(pid) = logger.id() {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid as i32),
            nix::sys::signal::Signal::SIGTERM,
        );
    }
    if tokio::time::timeout(Duration::from_secs(5), logger.wait())
        .await
        .is_err()
    {
        let _ = logger.kill().await;
    }
}

/// Where a log writer reports what goes wrong (it has no one to tell):
/// read by crustd when it fails to start or to reopen the log.
const LOGGER_ERRORS: &str = "cri-logger.errors";
/// Most of that file crustd quotes.
const MAX_QUOTED_ERRORS: u64 = 2048;

/// The log writer's own error messages, if any, for an error message.
pub fn logger_errors(bundle: &Path) -> String {
    let mut text = String::new();
    let _ = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(bundle.join(LOGGER_ERRORS))
        .map(|f| f.take(MAX_QUOTED_ERRORS).read_to_string(&mut text));
    let text = text.trim();
    if text.is_empty() {
        String::new()
    } else {
        format!(": {text}")
    }
}

/// How long an exit waits for its log writer to have written the rest of
/// the output (crust-shim holds an exit back as long for its own).
const OUTPUT_DRAIN_WAIT: Duration = Duration::from_secs(2);

/// Waits, at most [`OUTPUT_DRAIN_WAIT`], for the log writer of a container
/// that exited to finish (it removes its pid file when both streams
/// ended), so that an Exited status never comes before the last log line.
pub async fn wait_for_output_drained(bundle: &Path) {
    let pid_file = bundle.join(crust_shim_proto::logger::PID_FILE);
    let deadline = tokio::time::Instant::now() + OUTPUT_DRAIN_WAIT;
    while pid_file.exists() && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Makes the FIFOs and starts the log writer on their read ends, as
/// fds 3 and 4 (see [`crust_shim_proto::logger`]); returns once it is ready.
pub async fn start_log_writer(
    crust_shim: &Path,
    bundle: &Path,
    log: Option<PathBuf>,
    terminal: bool,
) -> Result<OutputFifos, RuntimeError> {
    use std::os::fd::{AsRawFd, OwnedFd};
    let open_reader = |path: &Path| -> Result<OwnedFd, RuntimeError> {
        crate::stream::make_fifo(path)?;
        Ok(std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NONBLOCK | libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(path)?
            .into())
    };
    let stdout = bundle.join(STDOUT_FIFO);
    let stdout_reader = open_reader(&stdout)?;
    let (stderr, stderr_reader) = if terminal {
        // Nothing comes on a terminal's stderr: EOF at once.
        let null = std::fs::File::open("/dev/null")?.into();
        (None, null)
    } else {
        let path = bundle.join(STDERR_FIFO);
        let reader = open_reader(&path)?;
        (Some(path), reader)
    };
    let (ready_reader, ready_writer) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)
        .map_err(|e| RuntimeError::Internal(format!("pipe: {e}")))?;
    let args = crust_shim_proto::logger::LoggerArgs {
        bundle: bundle.to_path_buf(),
        log,
    };
    let mut command = tokio::process::Command::new(crust_shim);
    for (key, value) in crust_shim_proto::logger::query(&args) {
        command.arg(key).arg(value);
    }
    let fds = [
        (
            stdout_reader.as_raw_fd(),
            crust_shim_proto::logger::STDOUT_FD,
        ),
        (
            stderr_reader.as_raw_fd(),
            crust_shim_proto::logger::STDERR_FD,
        ),
        (ready_writer.as_raw_fd(), crust_shim_proto::logger::READY_FD),
    ];
    let errors = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(bundle.join(LOGGER_ERRORS))?;
    command
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(errors)
        .env_remove("NOTIFY_SOCKET");
    // SAFETY: between fork and exec only async-signal-safe calls (fcntl,
    // dup2, setsid) on fds this process owns; nothing allocates.
    unsafe {
        command.pre_exec(move || {
            // Out of the way of 3..=5 first, so no source is overwritten.
            let mut high = [0; 3];
            for (i, (fd, _)) in fds.iter().enumerate() {
                high[i] = libc::fcntl(*fd, libc::F_DUPFD_CLOEXEC, 10);
                if high[i] < 0 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            for (i, (_, target)) in fds.iter().enumerate() {
                if libc::dup2(high[i], *target) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            // Its own session: crustd's signals and terminal are not its.
            libc::setsid();
            Ok(())
        });
    }
    let logger = command.spawn().map_err(|e| {
        RuntimeError::Internal(format!(
            "cannot start the log writer {}: {e}",
            crust_shim.display()
        ))
    })?;
    drop((stdout_reader, stderr_reader, ready_writer));
    // Ready once it closed fd 5 (EOF), having opened the log and bound
    // the attach socket.
    let ready = tokio::task::spawn_blocking(move || {
        let mut buf = [0u8; 1];
        std::fs::File::from(ready_reader).read(&mut buf)
    });
    let fifos = OutputFifos {
        stdout,
        stderr,
        logger: Some(logger),
    };
    match tokio::time::timeout(LOGGER_READY_WAIT, ready).await {
        Ok(Ok(Ok(_))) if bundle.join(crust_shim_proto::logger::PID_FILE).exists() => Ok(fifos),
        _ => {
            fifos.abandon().await;
            Err(RuntimeError::Internal(format!(
                "the log writer {} for {} did not start{}",
                crust_shim.display(),
                bundle.display(),
                logger_errors(bundle)
            )))
        }
    }
}

/// Asks the logging binary of a container to reopen its log (SIGUSR1),
/// if the process its pid file names is still that process.
pub fn reopen_log(bundle: &Path) -> Result<(), RuntimeError> {
    let pid_file = bundle.join(crust_shim_proto::logger::PID_FILE);
    let text = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(&pid_file)
        .and_then(std::io::read_to_string)
        .map_err(|e| {
            RuntimeError::FailedPrecondition(format!(
                "the container's log writer is not running ({}: {e})",
                pid_file.display()
            ))
        })?;
    let (pid, start) = crust_shim_proto::logger::parse_pid_file(&text).ok_or_else(|| {
        RuntimeError::Internal(format!("{} is unreadable: {text:?}", pid_file.display()))
    })?;
    crate::process::signal_if_same(pid, start, nix::sys::signal::Signal::SIGUSR1)
        .map_err(|e| RuntimeError::Internal(format!("reopening the log: {e}")))
}

/// A container's usage from a shim's Stats reply, as containerd's runc
/// shim sends it: `io.containerd.cgroups.v1.Metrics` or
/// `io.containerd.cgroups.v2.Metrics`; working set and RSS are derived as
/// crust does from the cgroup files ([`crate::cgroup::usage`]).
pub fn usage_from_metrics(stats: &Any) -> Result<crate::cgroup::Usage, String> {
    use containerd_shim_protos::{cgroups, cgroups_v2};
    let name = stats.type_url.rsplit('/').next().unwrap_or_default();
    match name {
        "io.containerd.cgroups.v1.Metrics" => {
            let m = cgroups::metrics::Metrics::parse_from_bytes(&stats.value)
                .map_err(|e| format!("undecodable v1 metrics: {e}"))?;
            let mem = m.memory.get_or_default();
            Ok(crate::cgroup::Usage::from_counters(
                m.cpu.get_or_default().usage.get_or_default().total,
                mem.usage.get_or_default().usage,
                mem.total_inactive_file,
                mem.total_rss,
                mem.total_pg_fault,
                mem.total_pg_maj_fault,
            ))
        }
        "io.containerd.cgroups.v2.Metrics" => {
            let m = cgroups_v2::metrics::Metrics::parse_from_bytes(&stats.value)
                .map_err(|e| format!("undecodable v2 metrics: {e}"))?;
            let mem = m.memory.get_or_default();
            Ok(crate::cgroup::Usage::from_counters(
                m.cpu.get_or_default().usage_usec.saturating_mul(1000),
                mem.usage,
                mem.inactive_file,
                mem.anon,
                mem.pgfault,
                mem.pgmajfault,
            ))
        }
        other => Err(format!("stats of an unknown type {other:?}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runc_options_are_containerds_message() {
        let handler: HandlerConfig = serde_json::from_value(serde_json::json!({
            "shim": "/usr/bin/containerd-shim-runc-v2",
            "options": {"BinaryName": "/usr/sbin/runc", "SystemdCgroup": true}
        }))
        .unwrap();
        let any = options_any(&handler, true).unwrap().unwrap();
        assert_eq!(any.type_url, "containerd.runc.v1.Options");
        let o = RuncOptionsProto::parse_from_bytes(&any.value).unwrap();
        assert_eq!(o.binary_name, "/usr/sbin/runc");
        assert!(o.systemd_cgroup);
        // Set against crust's own driver: refused, naming both.
        let e = options_any(&handler, false).unwrap_err().to_string();
        assert!(
            e.contains("SystemdCgroup is true") && e.contains("cgroupfs"),
            "{e}"
        );
        // Unset: it follows crust's driver.
        let plain: HandlerConfig = serde_json::from_value(serde_json::json!({
            "shim": "containerd-shim-runc-v2", "options": {"BinaryName": "runc"}
        }))
        .unwrap();
        for systemd in [true, false] {
            let any = options_any(&plain, systemd).unwrap().unwrap();
            let o = RuncOptionsProto::parse_from_bytes(&any.value).unwrap();
            assert_eq!(o.systemd_cgroup, systemd);
        }
        let crust: HandlerConfig =
            serde_json::from_value(serde_json::json!({"shim": "crust-shim"})).unwrap();
        assert!(options_any(&crust, false).unwrap().is_none());
    }

    #[test]
    fn shim_metrics_of_both_cgroup_versions_become_usage() {
        use containerd_shim_protos::{cgroups, cgroups_v2};
        let mut v1 = cgroups::metrics::Metrics::new();
        v1.cpu
            .mut_or_insert_default()
            .usage
            .mut_or_insert_default()
            .total = 5_000;
        let mem = v1.memory.mut_or_insert_default();
        mem.usage.mut_or_insert_default().usage = 10_000;
        mem.total_inactive_file = 4_000;
        mem.total_rss = 3_000;
        mem.total_pg_fault = 7;
        mem.total_pg_maj_fault = 1;
        let any = Any {
            type_url: "io.containerd.cgroups.v1.Metrics".into(),
            value: v1.write_to_bytes().unwrap(),
            ..Default::default()
        };
        let u = usage_from_metrics(&any).unwrap();
        assert_eq!(
            (
                u.cpu_usage_nanos,
                u.memory_usage,
                u.memory_working_set,
                u.memory_rss
            ),
            (5_000, 10_000, 6_000, 3_000)
        );
        assert_eq!((u.page_faults, u.major_page_faults), (7, 1));

        let mut v2 = cgroups_v2::metrics::Metrics::new();
        v2.cpu.mut_or_insert_default().usage_usec = 5;
        let mem = v2.memory.mut_or_insert_default();
        mem.usage = 10_000;
        mem.inactive_file = 12_000;
        mem.anon = 2_000;
        let any = Any {
            type_url: "types.googleapis.com/io.containerd.cgroups.v2.Metrics".into(),
            value: v2.write_to_bytes().unwrap(),
            ..Default::default()
        };
        let u = usage_from_metrics(&any).unwrap();
        assert_eq!(
            (
                u.cpu_usage_nanos,
                u.memory_usage,
                u.memory_working_set,
                u.memory_rss
            ),
            (5_000, 10_000, 0, 2_000)
        );
        let unknown = Any {
            type_url: "io.containerd.windows.Stats".into(),
            ..Default::default()
        };
        assert!(usage_from_metrics(&unknown).is_err());
    }
}
