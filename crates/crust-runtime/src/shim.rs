//! Starting a pod's shim and talking to it over the shim v2 Task API.

use std::path::{Path, PathBuf};
use std::time::Duration;

use containerd_shim_protos::api;
use containerd_shim_protos::protobuf::well_known_types::any::Any;
use containerd_shim_protos::protobuf::{Message, MessageField};
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

/// The version of containerd's Task API a shim serves, told by its reply
/// to `start` the way containerd 2 tells it: a bootstrap reply (JSON
/// `{"version":3,"address":...}`) names it, a bare address means v2
/// (containerd 1.x shims, Debian 12's runc shim among them, register only
/// `containerd.task.v2.Task`). The messages are the same in both.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TaskApi {
    V2,
    V3,
}

impl TaskApi {
    fn service(self) -> &'static str {
        match self {
            TaskApi::V2 => "containerd.task.v2.Task",
            TaskApi::V3 => "containerd.task.v3.Task",
        }
    }

    /// As kept in a pod's record.
    pub fn number(self) -> u32 {
        match self {
            TaskApi::V2 => 2,
            TaskApi::V3 => 3,
        }
    }

    /// From a pod's record; records from before the version was kept
    /// name none, and their shim (crust-shim) serves both.
    pub fn from_number(n: u32) -> TaskApi {
        if n == 2 { TaskApi::V2 } else { TaskApi::V3 }
    }
}

/// What a shim printed at `start`: where it serves and which Task API.
pub(crate) fn parse_start_reply(stdout: &[u8]) -> Result<(String, TaskApi), String> {
    let text = String::from_utf8_lossy(stdout);
    let text = text.trim();
    if text.starts_with('{') {
        #[derive(serde::Deserialize)]
        struct Reply {
            version: u32,
            address: String,
            #[serde(default)]
            protocol: String,
        }
        let reply: Reply = serde_json::from_str(text)
            .map_err(|e| format!("unreadable start reply {text:?}: {e}"))?;
        if !reply.protocol.is_empty() && reply.protocol != "ttrpc" {
            return Err(format!(
                "the shim speaks {:?}; crust speaks ttrpc only",
                reply.protocol
            ));
        }
        let api = match reply.version {
            2 => TaskApi::V2,
            3 => TaskApi::V3,
            v => {
                return Err(format!(
                    "the shim serves Task API v{v}; crust speaks v2 and v3"
                ));
            }
        };
        return Ok((reply.address, api));
    }
    if text.is_empty() {
        return Err("the shim printed no address".into());
    }
    Ok((text.to_string(), TaskApi::V2))
}

/// containerd's Task service over ttrpc, under the service name of the
/// version the shim serves (the generated client knows only v3's).
#[derive(Clone)]
struct TaskClient {
    client: ttrpc::asynchronous::Client,
    service: &'static str,
}

impl TaskClient {
    async fn call<Req: Message, Resp: Message>(
        &self,
        method: &str,
        ctx: ttrpc::context::Context,
        req: &Req,
    ) -> ttrpc::Result<Resp> {
        let mut cres = Resp::new();
        ttrpc::async_client_request!(self, ctx, req, self.service, method, cres);
    }
}

/// A connected shim.
#[derive(Clone)]
pub struct Shim {
    pub address: String,
    pub api: TaskApi,
    client: TaskClient,
}

impl Shim {
    /// Runs `binary ... start` in `dir` and connects to the address it prints.
    pub async fn start(
        binary: &Path,
        pod_id: &str,
        dir: &Path,
        events_socket: &Path,
        options: Option<&Any>,
    ) -> Result<Shim, RuntimeError> {
        // From its read-only exposed copy: the pod's containers are cloned
        // from the shim and see its binary as /proc/self/exe.
        let binary = exposed::path_of(binary);
        let mut child = tokio::process::Command::new(binary)
            .args(["-namespace", NAMESPACE, "-id", pod_id, "-address"])
            .arg(events_socket)
            .arg("start")
            .current_dir(dir)
            .env("TTRPC_ADDRESS", events_socket)
            // crustd's systemd notify socket is crustd's alone.
            .env_remove("NOTIFY_SOCKET")
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .map_err(|e| RuntimeError::Shim(format!("cannot run {}: {e}", binary.display())))?;
        // containerd hands the runtime options to `start` on stdin (the
        // runc shim reads ShimCgroup there); EOF at once otherwise.
        if let Some(mut stdin) = child.stdin.take() {
            use tokio::io::AsyncWriteExt;
            if let Some(options) = options {
                let bytes = options
                    .write_to_bytes()
                    .map_err(|e| RuntimeError::Internal(format!("encoding shim options: {e}")))?;
                if let Err(e) = stdin.write_all(&bytes).await {
                    tracing::warn!(shim = %binary.display(), error = %e, "the shim did not read its options at start");
                }
            }
        }
        let output = child
            .wait_with_output()
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
        let (address, api) = parse_start_reply(&output.stdout)
            .map_err(|e| RuntimeError::Shim(format!("{} start: {e}", binary.display())))?;
        Shim::connect(&address, api).await
    }

    pub async fn connect(address: &str, api: TaskApi) -> Result<Shim, RuntimeError> {
        let client = ttrpc::asynchronous::Client::connect(address)
            .await
            .map_err(|e| RuntimeError::Shim(format!("cannot connect to shim at {address}: {e}")))?;
        Ok(Shim {
            address: address.to_string(),
            api,
            client: TaskClient {
                client,
                service: api.service(),
            },
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
            .call::<_, api::ConnectResponse>("Connect", ctx(CALL_TIMEOUT), &req)
            .await
            .map_err(|e| shim_error("Connect", e))?;
        Ok(r.shim_pid)
    }

    /// Creates a container's task; `options` are the runtime's own (runc's
    /// Options), as containerd passes them.
    pub async fn create(
        &self,
        id: &str,
        bundle: &Path,
        stdio: &Stdio,
        options: Option<Any>,
    ) -> Result<u32, RuntimeError> {
        let req = api::CreateTaskRequest {
            id: id.to_string(),
            bundle: bundle.display().to_string(),
            stdin: stdio.stdin.clone(),
            stdout: stdio.stdout.clone(),
            stderr: stdio.stderr.clone(),
            terminal: stdio.terminal,
            options: options.into(),
            ..Default::default()
        };
        let r = self
            .client
            .call::<_, api::CreateTaskResponse>("Create", ctx(CALL_TIMEOUT), &req)
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
            .call::<_, api::StartResponse>("Start", ctx(CALL_TIMEOUT), &req)
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
            .call::<_, api::Empty>("Kill", ctx(CALL_TIMEOUT), &req)
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
            .call::<_, api::WaitResponse>("Wait", ctx(timeout), &req)
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
            .call::<_, api::StateResponse>("State", ctx(CALL_TIMEOUT), &req)
            .await
            .map_err(|e| shim_error("State", e))
    }

    /// The shim's Stats of a container: its cgroup metrics as an Any.
    pub async fn stats(&self, id: &str) -> Result<Any, RuntimeError> {
        let req = api::StatsRequest {
            id: id.to_string(),
            ..Default::default()
        };
        let r = self
            .client
            .call::<_, api::StatsResponse>("Stats", ctx(CALL_TIMEOUT), &req)
            .await
            .map_err(|e| shim_error("Stats", e))?;
        r.stats
            .into_option()
            .ok_or_else(|| RuntimeError::Shim(format!("shim Stats of {id}: no stats")))
    }

    pub async fn delete(&self, id: &str, exec_id: &str) -> Result<(), RuntimeError> {
        let req = api::DeleteRequest {
            id: id.to_string(),
            exec_id: exec_id.to_string(),
            ..Default::default()
        };
        match self
            .client
            .call::<_, api::DeleteResponse>("Delete", ctx(CALL_TIMEOUT), &req)
            .await
        {
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
            .call::<_, api::Empty>("Exec", ctx(CALL_TIMEOUT), &req)
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
            .call::<_, api::Empty>("CloseIO", ctx(CALL_TIMEOUT), &req)
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
            .call::<_, api::Empty>("ResizePty", ctx(CALL_TIMEOUT), &req)
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
            .call::<_, api::Empty>("Update", ctx(CALL_TIMEOUT), &req)
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
            .call::<_, api::Empty>("Shutdown", ctx(Duration::from_secs(5)), &req)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bare_address_is_task_v2_and_a_bootstrap_reply_names_its_version() {
        assert_eq!(
            parse_start_reply(b"unix:///run/containerd/s/abc\n").unwrap(),
            ("unix:///run/containerd/s/abc".to_string(), TaskApi::V2)
        );
        assert_eq!(
            parse_start_reply(br#"{"version":3,"address":"unix:///s","protocol":"ttrpc"}"#)
                .unwrap(),
            ("unix:///s".to_string(), TaskApi::V3)
        );
        assert!(parse_start_reply(b"  \n").is_err());
        let grpc = parse_start_reply(br#"{"version":3,"address":"x","protocol":"grpc"}"#);
        assert!(grpc.unwrap_err().contains("ttrpc only"));
        assert!(parse_start_reply(br#"{"version":4,"address":"x"}"#).is_err());
        assert_eq!(
            TaskApi::from_number(0),
            TaskApi::V3,
            "old records: crust-shim"
        );
        assert_eq!(TaskApi::from_number(TaskApi::V2.number()), TaskApi::V2);
    }
}
