//! Starting a pod's shim and talking to it over the shim v2 Task API.

use std::path::{Path, PathBuf};
use std::time::Duration;

use containerd_shim_protos::api;
use containerd_shim_protos::protobuf::MessageField;
use containerd_shim_protos::protobuf::well_known_types::any::Any;
use containerd_shim_protos::shim_async::TaskClient;
use containerd_shim_protos::ttrpc;

use crate::RuntimeError;

/// Most calls answer at once; Wait and Delete are given their own limits.
const CALL_TIMEOUT: Duration = Duration::from_secs(30);
const NAMESPACE: &str = "k8s.io";

fn ctx(timeout: Duration) -> ttrpc::context::Context {
    let mut ctx = ttrpc::context::with_timeout(timeout.as_nanos() as i64);
    ctx.add(
        "containerd-namespace-ttrpc".to_string(),
        NAMESPACE.to_string(),
    );
    ctx
}

fn shim_error(call: &str, e: ttrpc::Error) -> RuntimeError {
    match &e {
        ttrpc::Error::RpcStatus(status) => {
            let message = format!("shim {call}: {}", status.message);
            match status.code() {
                ttrpc::Code::NOT_FOUND => RuntimeError::NotFound(message),
                ttrpc::Code::ALREADY_EXISTS => RuntimeError::AlreadyExists(message),
                ttrpc::Code::FAILED_PRECONDITION => RuntimeError::FailedPrecondition(message),
                ttrpc::Code::DEADLINE_EXCEEDED => RuntimeError::DeadlineExceeded(message),
                _ => RuntimeError::Shim(message),
            }
        }
        _ => RuntimeError::Shim(format!("shim {call}: {e}")),
    }
}

/// Finds the shim binary: an absolute path as is; a bare name next to
/// crustd first, then on PATH.
pub fn resolve_binary(name: &str) -> Result<PathBuf, RuntimeError> {
    let path = Path::new(name);
    if path.is_absolute() {
        return if path.is_file() {
            Ok(path.to_path_buf())
        } else {
            Err(RuntimeError::Config(format!(
                "shim binary {name} does not exist"
            )))
        };
    }
    let beside = crate::real_crustd_path()
        .parent()
        .map(|d| d.join(name))
        .filter(|p| p.is_file());
    let on_path = || {
        std::env::var_os("PATH").and_then(|paths| {
            std::env::split_paths(&paths)
                .map(|d| d.join(name))
                .find(|p| p.is_file())
        })
    };
    beside.or_else(on_path).ok_or_else(|| {
        RuntimeError::Config(format!(
            "shim binary {name:?} is neither next to crustd nor on PATH"
        ))
    })
}

/// A connected shim.
#[derive(Clone)]
pub struct Shim {
    pub address: String,
    client: TaskClient,
}

impl Shim {
    /// Runs `binary ... start` in `dir` and connects to the address it prints.
    pub async fn start(
        binary: &Path,
        pod_id: &str,
        dir: &Path,
        events_socket: &Path,
    ) -> Result<Shim, RuntimeError> {
        // From its read-only exposed copy: the pod's containers are cloned
        // from the shim and see its binary as /proc/self/exe.
        let binary = exposed::path_of(binary);
        let output = tokio::process::Command::new(binary)
            .args(["-namespace", NAMESPACE, "-id", pod_id, "-address"])
            .arg(events_socket)
            .arg("start")
            .current_dir(dir)
            .env("TTRPC_ADDRESS", events_socket)
            // crustd's systemd notify socket is crustd's alone.
            .env_remove("NOTIFY_SOCKET")
            .stdin(std::process::Stdio::null())
            .output()
            .await
            .map_err(|e| RuntimeError::Shim(format!("cannot run {}: {e}", binary.display())))?;
        if !output.status.success() {
            return Err(RuntimeError::Shim(format!(
                "{} start failed ({}): {}",
                binary.display(),
                output.status,
                String::from_utf8_lossy(&output.stderr).trim()
            )));
        }
        let address = String::from_utf8_lossy(&output.stdout).trim().to_string();
        if address.is_empty() {
            return Err(RuntimeError::Shim(format!(
                "{} start printed no address",
                binary.display()
            )));
        }
        Shim::connect(&address).await
    }

    pub async fn connect(address: &str) -> Result<Shim, RuntimeError> {
        let client = ttrpc::asynchronous::Client::connect(address)
            .await
            .map_err(|e| RuntimeError::Shim(format!("cannot connect to shim at {address}: {e}")))?;
        Ok(Shim {
            address: address.to_string(),
            client: TaskClient::new(client),
        })
    }

    /// The shim's own pid.
    pub async fn pid(&self, id: &str) -> Result<u32, RuntimeError> {
        let req = api::ConnectRequest {
            id: id.to_string(),
            ..Default::default()
        };
        let r = self
            .client
            .connect(ctx(CALL_TIMEOUT), &req)
            .await
            .map_err(|e| shim_error("Connect", e))?;
        Ok(r.shim_pid)
    }

    pub async fn create(
        &self,
        id: &str,
        bundle: &Path,
        stdio: &Stdio,
    ) -> Result<u32, RuntimeError> {
        let req = api::CreateTaskRequest {
            id: id.to_string(),
            bundle: bundle.display().to_string(),
            stdin: stdio.stdin.clone(),
            stdout: stdio.stdout.clone(),
            stderr: stdio.stderr.clone(),
            terminal: stdio.terminal,
            ..Default::default()
        };
        let r = self
            .client
            .create(ctx(CALL_TIMEOUT), &req)
            .await
            .map_err(|e| shim_error("Create", e))?;
        Ok(r.pid)
    }

    pub async fn start_process(&self, id: &str, exec_id: &str) -> Result<u32, RuntimeError> {
        let req = api::StartRequest {
            id: id.to_string(),
            exec_id: exec_id.to_string(),
            ..Default::default()
        };
        let r = self
            .client
            .start(ctx(CALL_TIMEOUT), &req)
            .await
            .map_err(|e| shim_error("Start", e))?;
        Ok(r.pid)
    }

    pub async fn kill(
        &self,
        id: &str,
        exec_id: &str,
        signal: u32,
        all: bool,
    ) -> Result<(), RuntimeError> {
        let req = api::KillRequest {
            id: id.to_string(),
            exec_id: exec_id.to_string(),
            signal,
            all,
            ..Default::default()
        };
        self.client
            .kill(ctx(CALL_TIMEOUT), &req)
            .await
            .map_err(|e| shim_error("Kill", e))?;
        Ok(())
    }

    /// Waits up to `timeout` for the process to exit: (status, exited at).
    pub async fn wait(
        &self,
        id: &str,
        exec_id: &str,
        timeout: Duration,
    ) -> Result<(u32, i64), RuntimeError> {
        let req = api::WaitRequest {
            id: id.to_string(),
            exec_id: exec_id.to_string(),
            ..Default::default()
        };
        let r = self
            .client
            .wait(ctx(timeout), &req)
            .await
            .map_err(|e| shim_error("Wait", e))?;
        Ok((r.exit_status, timestamp_nanos(r.exited_at.as_ref())))
    }

    pub async fn state(&self, id: &str) -> Result<api::StateResponse, RuntimeError> {
        let req = api::StateRequest {
            id: id.to_string(),
            ..Default::default()
        };
        self.client
            .state(ctx(CALL_TIMEOUT), &req)
            .await
            .map_err(|e| shim_error("State", e))
    }

    pub async fn delete(&self, id: &str, exec_id: &str) -> Result<(), RuntimeError> {
        let req = api::DeleteRequest {
            id: id.to_string(),
            exec_id: exec_id.to_string(),
            ..Default::default()
        };
        match self.client.delete(ctx(CALL_TIMEOUT), &req).await {
            Ok(_) => Ok(()),
            Err(e) => match shim_error("Delete", e) {
                RuntimeError::NotFound(_) => Ok(()),
                other => Err(other),
            },
        }
    }

    /// Starts an exec process whose spec is an OCI Process as JSON. Stdio
    /// names FIFOs; empty means none.
    pub async fn exec(
        &self,
        id: &str,
        exec_id: &str,
        process_json: Vec<u8>,
        stdio: &Stdio,
    ) -> Result<(), RuntimeError> {
        let req = api::ExecProcessRequest {
            id: id.to_string(),
            exec_id: exec_id.to_string(),
            terminal: stdio.terminal,
            stdin: stdio.stdin.clone(),
            stdout: stdio.stdout.clone(),
            stderr: stdio.stderr.clone(),
            spec: MessageField::some(Any {
                type_url: "types.containerd.io/opencontainers/runtime-spec/1/Process".into(),
                value: process_json,
                ..Default::default()
            }),
            ..Default::default()
        };
        self.client
            .exec(ctx(CALL_TIMEOUT), &req)
            .await
            .map_err(|e| shim_error("Exec", e))?;
        Ok(())
    }

    /// CloseIO: the process's stdin reaches EOF.
    pub async fn close_stdin(&self, id: &str, exec_id: &str) -> Result<(), RuntimeError> {
        let req = api::CloseIORequest {
            id: id.to_string(),
            exec_id: exec_id.to_string(),
            stdin: true,
            ..Default::default()
        };
        self.client
            .close_io(ctx(CALL_TIMEOUT), &req)
            .await
            .map_err(|e| shim_error("CloseIO", e))?;
        Ok(())
    }

    pub async fn resize_pty(
        &self,
        id: &str,
        exec_id: &str,
        width: u16,
        height: u16,
    ) -> Result<(), RuntimeError> {
        let req = api::ResizePtyRequest {
            id: id.to_string(),
            exec_id: exec_id.to_string(),
            width: u32::from(width),
            height: u32::from(height),
            ..Default::default()
        };
        self.client
            .resize_pty(ctx(CALL_TIMEOUT), &req)
            .await
            .map_err(|e| shim_error("ResizePty", e))?;
        Ok(())
    }

    /// Applies new OCI LinuxResources (as JSON) to a running container.
    pub async fn update(&self, id: &str, resources_json: Vec<u8>) -> Result<(), RuntimeError> {
        let req = api::UpdateTaskRequest {
            id: id.to_string(),
            resources: MessageField::some(Any {
                type_url: "types.containerd.io/opencontainers/runtime-spec/1/LinuxResources".into(),
                value: resources_json,
                ..Default::default()
            }),
            ..Default::default()
        };
        self.client
            .update(ctx(CALL_TIMEOUT), &req)
            .await
            .map_err(|e| shim_error("Update", e))?;
        Ok(())
    }

    pub async fn shutdown(&self, id: &str) -> Result<(), RuntimeError> {
        let req = api::ShutdownRequest {
            id: id.to_string(),
            now: true,
            ..Default::default()
        };
        // The shim exits while answering; a dropped connection is success.
        let _ = self
            .client
            .shutdown(ctx(Duration::from_secs(5)), &req)
            .await;
        Ok(())
    }
}

/// A process's stdio for Create and Exec: FIFO paths or a `crilog://`
/// URI (see [`crust_shim_proto::stdio`]); empty strings mean none.
#[derive(Debug, Clone, Default)]
pub struct Stdio {
    pub stdin: String,
    pub stdout: String,
    pub stderr: String,
    pub terminal: bool,
}

fn timestamp_nanos(
    t: Option<&containerd_shim_protos::protobuf::well_known_types::timestamp::Timestamp>,
) -> i64 {
    t.map_or(0, |t| t.seconds * 1_000_000_000 + t.nanos as i64)
}

/// Host binaries (crustd for pod inits, the shims) exposed read-only
/// (CVE-2019-5736 class). A container's processes are cloned from its
/// shim, so until they execve, /proc/self/exe is the shim's binary (and an
/// entrypoint of `/proc/self/exe` runs it in the container); in a pod with
/// a shared PID namespace /proc/1/exe is crustd's. Each binary is spawned
/// from a read-only bind mount of itself under `<state>/bin/<dev>-<ino>/`,
/// so whatever path a container takes to the file (/proc/<pid>/exe, an
/// O_PATH fd reopened through /proc/self/fd) leads through a read-only
/// mount: opening it for writing fails with EROFS, whether or not a
/// process is executing it at the time. This is runc 1.2's approach; a
/// sealed memfd copy would cost the binary's size per process.
///
/// A binary replaced by an upgrade is a new inode and gets its own mount;
/// a mount no process runs from any more is removed at the next start.
pub(crate) mod exposed {
    use std::collections::HashMap;
    use std::os::unix::fs::MetadataExt;
    use std::path::{Path, PathBuf};
    use std::sync::{Mutex, OnceLock};

    use nix::mount::{MntFlags, MsFlags, mount, umount2};

    static ROOT: OnceLock<PathBuf> = OnceLock::new();
    /// Exposed paths by (real path, dev, ino), leaked once each: one per
    /// binary version crustd saw in its life.
    type ExposedByIdentity = HashMap<(PathBuf, u64, u64), &'static Path>;
    static SEEN: Mutex<Option<ExposedByIdentity>> = Mutex::new(None);

    /// Makes `<state>/bin` the place binaries are exposed and removes the
    /// mounts of earlier versions that nothing runs from. Called once, at
    /// start; until then (and in unit tests) binaries run from where they are.
    pub fn init(state: &Path) {
        let state = std::fs::canonicalize(state).unwrap_or_else(|_| state.to_path_buf());
        let root = state.join("bin");
        if let Err(e) = std::fs::create_dir_all(&root) {
            tracing::error!(dir = %root.display(), error = %e, "cannot make the dir for read-only binaries");
            return;
        }
        sweep(&root);
        let _ = ROOT.set(root);
    }

    /// `<state>/bin`, once [`init`] ran.
    pub fn root() -> Option<&'static Path> {
        ROOT.get().map(PathBuf::as_path)
    }

    /// Unmounts (and removes) each exposed binary that no process executes
    /// any more: a plain umount is refused with EBUSY while one does.
    fn sweep(root: &Path) {
        let Ok(dirs) = std::fs::read_dir(root) else {
            return;
        };
        for dir in dirs.flatten() {
            let Ok(files) = std::fs::read_dir(dir.path()) else {
                continue;
            };
            let mut empty = true;
            for file in files.flatten() {
                let path = file.path();
                match umount2(&path, MntFlags::empty()) {
                    Ok(()) | Err(nix::Error::EINVAL) => {
                        let _ = std::fs::remove_file(&path);
                    }
                    Err(_) => empty = false,
                }
            }
            if empty {
                let _ = std::fs::remove_dir(dir.path());
            }
        }
    }

    /// The read-only exposed path of the binary at `real` (made when first
    /// asked for this version of it); `real` itself when nothing can be
    /// exposed (no [`init`], or the mount failed: logged).
    pub fn path_of(real: &Path) -> &'static Path {
        let fallback = || -> &'static Path { Box::leak(real.to_path_buf().into_boxed_path()) };
        let Some(root) = root() else {
            return fallback();
        };
        let real = std::fs::canonicalize(real).unwrap_or_else(|_| real.to_path_buf());
        let Ok(meta) = std::fs::metadata(&real) else {
            return fallback();
        };
        let key = (real.clone(), meta.dev(), meta.ino());
        let mut seen = SEEN.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(path) = seen.get_or_insert_with(HashMap::new).get(&key) {
            return path;
        }
        let name = real.file_name().unwrap_or_default();
        let target = root
            .join(format!("{:x}-{:x}", meta.dev(), meta.ino()))
            .join(name);
        match expose(&real, &meta, &target) {
            Ok(()) => {
                let path: &'static Path = Box::leak(target.into_boxed_path());
                seen.get_or_insert_with(HashMap::new).insert(key, path);
                path
            }
            Err(e) => {
                tracing::error!(binary = %real.display(), error = %e,
                    "cannot expose the binary read-only; running it from where it is, writable from a container that reaches it");
                fallback()
            }
        }
    }

    /// Whether `target` already is a read-only mount of the file `meta`.
    fn is_exposed(target: &Path, meta: &std::fs::Metadata) -> bool {
        std::fs::metadata(target).is_ok_and(|t| t.dev() == meta.dev() && t.ino() == meta.ino())
            && nix::sys::statvfs::statvfs(target)
                .is_ok_and(|v| v.flags().contains(nix::sys::statvfs::FsFlags::ST_RDONLY))
    }

    fn expose(real: &Path, meta: &std::fs::Metadata, target: &Path) -> Result<(), String> {
        if is_exposed(target, meta) {
            return Ok(());
        }
        let dir = target.parent().expect("target has a parent");
        std::fs::create_dir_all(dir).map_err(|e| format!("create {}: {e}", dir.display()))?;
        // A half-made one from a crash: start over.
        while umount2(target, MntFlags::MNT_DETACH).is_ok() {}
        std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(false)
            .open(target)
            .map_err(|e| format!("create {}: {e}", target.display()))?;
        mount(
            Some(real),
            target,
            None::<&str>,
            MsFlags::MS_BIND,
            None::<&str>,
        )
        .map_err(|e| format!("bind {} to {}: {e}", real.display(), target.display()))?;
        // A bind mount takes no flags of its own until remounted; keep
        // nosuid/nodev/noexec of the mount the binary is on.
        let mut flags = MsFlags::MS_REMOUNT | MsFlags::MS_BIND | MsFlags::MS_RDONLY;
        if let Ok(v) = nix::sys::statvfs::statvfs(target) {
            use nix::sys::statvfs::FsFlags;
            for (has, set) in [
                (FsFlags::ST_NOSUID, MsFlags::MS_NOSUID),
                (FsFlags::ST_NODEV, MsFlags::MS_NODEV),
                (FsFlags::ST_NOEXEC, MsFlags::MS_NOEXEC),
            ] {
                if v.flags().contains(has) {
                    flags |= set;
                }
            }
        }
        if let Err(e) = mount(None::<&str>, target, None::<&str>, flags, None::<&str>) {
            let _ = umount2(target, MntFlags::MNT_DETACH);
            return Err(format!("remount {} read-only: {e}", target.display()));
        }
        if !is_exposed(target, meta) {
            let _ = umount2(target, MntFlags::MNT_DETACH);
            return Err(format!(
                "{} is not read-only after remounting",
                target.display()
            ));
        }
        Ok(())
    }

    /// Whether `exe` (a process's /proc/<pid>/exe) is one of `binaries`
    /// (real paths) or an exposed copy of a binary of the same name.
    pub fn is_one_of(exe: &Path, binaries: &[PathBuf]) -> bool {
        if binaries.iter().any(|b| b == exe) {
            return true;
        }
        let Some(root) = root() else {
            return false;
        };
        exe.parent().and_then(Path::parent) == Some(root)
            && binaries
                .iter()
                .any(|b| b.file_name().is_some() && b.file_name() == exe.file_name())
    }
}

/// Whether a process's exe is one of the shim binaries `shims` (real
/// paths), run from where it is or from its read-only exposed copy.
pub(crate) fn is_shim_binary(exe: &Path, shims: &[PathBuf]) -> bool {
    exposed::is_one_of(exe, shims)
}
