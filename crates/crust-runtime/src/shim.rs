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
    let beside = crate::crustd_path()
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
        let output = tokio::process::Command::new(binary)
            .args(["-namespace", NAMESPACE, "-id", pod_id, "-address"])
            .arg(events_socket)
            .arg("start")
            .current_dir(dir)
            .env("TTRPC_ADDRESS", events_socket)
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
/// URI; empty strings mean none.
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
