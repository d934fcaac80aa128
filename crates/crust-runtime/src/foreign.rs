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
//! - Container output goes through crust-shim run as a logging binary
//!   ([`crust_shim_proto::logger`], a `binary://` stdout URI), which writes
//!   the CRI log and serves the attach socket as crust-shim does for its
//!   own containers; the shim keeps it running across crustd restarts.
//!   Exec processes use FIFOs, as for crust-shim.
//! - Runtime options (runc's `Options`) travel as containerd sends them:
//!   a `containerd.runc.v1.Options` Any on `start`'s stdin and in Create.

use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use containerd_shim_protos::protobuf::Message;
use containerd_shim_protos::protobuf::well_known_types::any::Any;
use containerd_shim_protos::shim::oci::Options as RuncOptionsProto;
use crust_config::{HandlerConfig, RuncOptions, ShimKind};
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
pub fn forward_shim_log(dir: &Path, pod_id: &str) {
    let fifo = dir.join(SHIM_LOG_FIFO);
    let receiver = match tokio::net::unix::pipe::OpenOptions::new()
        .read_write(true)
        .open_receiver(&fifo)
    {
        Ok(r) => r,
        Err(e) => {
            tracing::warn!(pod_id, fifo = %fifo.display(), error = %e, "cannot read the shim's log");
            return;
        }
    };
    let pod_id = pod_id.to_string();
    tokio::spawn(async move {
        let mut lines = tokio::io::BufReader::new(receiver);
        let mut line = Vec::new();
        loop {
            line.clear();
            let read = tokio::time::timeout(
                Duration::from_secs(5),
                (&mut lines)
                    .take(MAX_SHIM_LOG_LINE as u64)
                    .read_until(b'\n', &mut line),
            )
            .await;
            match read {
                Ok(Ok(0)) | Ok(Err(_)) => return,
                Ok(Ok(_)) => {
                    let text = String::from_utf8_lossy(&line);
                    tracing::info!(pod_id, shim_log = %text.trim_end(), "shim");
                }
                // Nothing for a while: stop once the pod is gone.
                Err(_) if !fifo.exists() => return,
                Err(_) => {}
            }
        }
    });
}

/// The runc shim's options as containerd sends them: `containerd.runc.v1.Options`.
pub fn options_any(handler: &HandlerConfig) -> Result<Option<Any>, RuntimeError> {
    if handler.kind() != ShimKind::RuncV2 {
        return Ok(None);
    }
    let o: RuncOptions = handler.runc_options().map_err(RuntimeError::Config)?;
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

/// The stdout (and stderr) URI of a container another shim runs: crust-shim
/// as its logging binary, writing `log` (none: attach only) and serving the
/// attach socket in `bundle`.
pub fn logger_uri(crust_shim: &Path, bundle: &Path, log: Option<PathBuf>) -> String {
    let args = crust_shim_proto::logger::LoggerArgs {
        bundle: bundle.to_path_buf(),
        log,
    };
    let query: String = url::form_urlencoded::Serializer::new(String::new())
        .extend_pairs(crust_shim_proto::logger::query(&args))
        .finish();
    let path = url::Url::from_file_path(crust_shim)
        .map(|u| u.path().to_string())
        .unwrap_or_else(|()| crust_shim.display().to_string());
    format!("binary://{path}?{query}")
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn logger_uris_survive_gos_query_parsing() {
        let uri = logger_uri(
            Path::new("/opt/crust/bin/crust-shim"),
            Path::new("/run/crust/containers/abc"),
            Some(PathBuf::from("/var/log/pods/ns_a b&c/app/0.log")),
        );
        assert!(
            uri.starts_with("binary:///opt/crust/bin/crust-shim?"),
            "{uri}"
        );
        let url = url::Url::parse(&uri).unwrap();
        assert_eq!(url.scheme(), "binary");
        assert_eq!(url.path(), "/opt/crust/bin/crust-shim");
        let pairs: Vec<(String, String)> = url.query_pairs().into_owned().collect();
        assert!(pairs.contains(&("log".into(), "/var/log/pods/ns_a b&c/app/0.log".into())));
        assert!(pairs.contains(&("mode".into(), "cri-logger".into())));
        assert!(pairs.contains(&("bundle".into(), "/run/crust/containers/abc".into())));
    }

    #[test]
    fn runc_options_are_containerds_message() {
        let handler: HandlerConfig = serde_json::from_value(serde_json::json!({
            "shim": "/usr/bin/containerd-shim-runc-v2",
            "options": {"BinaryName": "/usr/sbin/runc", "SystemdCgroup": true}
        }))
        .unwrap();
        let any = options_any(&handler).unwrap().unwrap();
        assert_eq!(any.type_url, "containerd.runc.v1.Options");
        let o = RuncOptionsProto::parse_from_bytes(&any.value).unwrap();
        assert_eq!(o.binary_name, "/usr/sbin/runc");
        assert!(o.systemd_cgroup);
        let crust: HandlerConfig =
            serde_json::from_value(serde_json::json!({"shim": "crust-shim"})).unwrap();
        assert!(options_any(&crust).unwrap().is_none());
    }
}
