//! The containerd shim v2 Task service (ttrpc), mapped onto `Shim`.

use std::sync::Arc;
use std::time::Duration;

use containerd_shim_protos::api::{
    CheckpointTaskRequest, CloseIORequest, ConnectRequest, ConnectResponse, CreateTaskRequest,
    CreateTaskResponse, DeleteRequest, DeleteResponse, ExecProcessRequest, KillRequest,
    PauseRequest, PidsRequest, PidsResponse, ResizePtyRequest, ResumeRequest, ShutdownRequest,
    StartRequest, StartResponse, StateRequest, StateResponse, StatsRequest, StatsResponse,
    UpdateTaskRequest, WaitRequest, WaitResponse,
};
use containerd_shim_protos::protobuf::Message;
use containerd_shim_protos::protobuf::well_known_types::any::Any;
use containerd_shim_protos::protobuf::well_known_types::empty::Empty;
use containerd_shim_protos::shim::shim_ttrpc::Task;
use containerd_shim_protos::ttrpc::{self, Code, TtrpcContext};
use containerd_shim_protos::types::task::{ProcessInfo, Status as TaskStatus};

use crate::container::{Error, Shim, Status, StdioNames, WaitFor};
use crate::timefmt::to_timestamp;

pub struct TaskService {
    pub shim: Arc<Shim>,
}

impl From<Error> for ttrpc::Error {
    fn from(e: Error) -> Self {
        let (code, msg) = match e {
            Error::NotFound(m) => (Code::NOT_FOUND, m),
            Error::AlreadyExists(m) => (Code::ALREADY_EXISTS, m),
            Error::FailedPrecondition(m) => (Code::FAILED_PRECONDITION, m),
            Error::InvalidArgument(m) => (Code::INVALID_ARGUMENT, m),
            Error::Internal(m) => (Code::INTERNAL, m),
        };
        ttrpc::Error::RpcStatus(ttrpc::get_status(code, msg))
    }
}

fn exec_id(s: &str) -> Option<&str> {
    (!s.is_empty()).then_some(s)
}

fn status(code: Code, msg: impl ToString) -> ttrpc::Error {
    ttrpc::Error::RpcStatus(ttrpc::get_status(code, msg))
}

impl Task for TaskService {
    fn create(
        &self,
        _ctx: &TtrpcContext,
        req: CreateTaskRequest,
    ) -> ttrpc::Result<CreateTaskResponse> {
        self.shim.touch();
        if !req.checkpoint.is_empty() {
            return Err(status(
                Code::UNIMPLEMENTED,
                "checkpoint/restore is not supported",
            ));
        }
        let names = StdioNames {
            stdin: req.stdin,
            stdout: req.stdout,
            stderr: req.stderr,
            terminal: req.terminal,
        };
        let pid = self.shim.create(&req.id, &req.bundle, &req.rootfs, names)?;
        Ok(CreateTaskResponse {
            pid,
            ..Default::default()
        })
    }

    fn start(&self, _ctx: &TtrpcContext, req: StartRequest) -> ttrpc::Result<StartResponse> {
        self.shim.touch();
        let pid = self.shim.start(&req.id, exec_id(&req.exec_id))?;
        Ok(StartResponse {
            pid,
            ..Default::default()
        })
    }

    fn state(&self, _ctx: &TtrpcContext, req: StateRequest) -> ttrpc::Result<StateResponse> {
        self.shim.touch();
        let v = self.shim.state(&req.id, exec_id(&req.exec_id))?;
        let status = match v.status {
            Status::Created => TaskStatus::CREATED,
            Status::Running => TaskStatus::RUNNING,
            Status::Stopped => TaskStatus::STOPPED,
        };
        Ok(StateResponse {
            id: req.id,
            bundle: v.bundle.display().to_string(),
            pid: v.pid,
            status: status.into(),
            stdin: v.names.stdin,
            stdout: v.names.stdout,
            stderr: v.names.stderr,
            terminal: v.names.terminal,
            exit_status: v.exit.map_or(0, |e| e.status),
            exited_at: v.exit.map(|e| to_timestamp(e.at)).into(),
            exec_id: req.exec_id,
            ..Default::default()
        })
    }

    fn kill(&self, _ctx: &TtrpcContext, req: KillRequest) -> ttrpc::Result<Empty> {
        self.shim.touch();
        self.shim
            .kill(&req.id, exec_id(&req.exec_id), req.signal, req.all)?;
        Ok(Empty::new())
    }

    fn wait(&self, ctx: &TtrpcContext, req: WaitRequest) -> ttrpc::Result<WaitResponse> {
        self.shim.touch();
        let exit = match self.shim.wait_for(&req.id, exec_id(&req.exec_id))? {
            WaitFor::Exited(exit) => exit,
            WaitFor::Pending(rx, _token) => {
                let timeout = match ctx.timeout_nano {
                    n if n > 0 => crossbeam_channel::after(Duration::from_nanos(n as u64)),
                    _ => crossbeam_channel::never(),
                };
                // Sleeps until the exit, the call's deadline, or the client
                // hanging up (ttrpc drops the cancel sender then).
                crossbeam_channel::select! {
                    recv(rx) -> exit => exit.map_err(|_| status(Code::NOT_FOUND, "the process was deleted"))?,
                    recv(ctx.cancel_rx) -> _ => return Err(status(Code::CANCELLED, "client went away")),
                    recv(timeout) -> _ => return Err(status(Code::DEADLINE_EXCEEDED, "timed out waiting for the exit")),
                }
            }
        };
        Ok(WaitResponse {
            exit_status: exit.status,
            exited_at: Some(to_timestamp(exit.at)).into(),
            ..Default::default()
        })
    }

    fn delete(&self, _ctx: &TtrpcContext, req: DeleteRequest) -> ttrpc::Result<DeleteResponse> {
        self.shim.touch();
        let (pid, exit) = self.shim.delete(&req.id, exec_id(&req.exec_id))?;
        Ok(DeleteResponse {
            pid,
            exit_status: exit.status,
            exited_at: Some(to_timestamp(exit.at)).into(),
            ..Default::default()
        })
    }

    fn exec(&self, _ctx: &TtrpcContext, req: ExecProcessRequest) -> ttrpc::Result<Empty> {
        self.shim.touch();
        let spec = req
            .spec
            .as_ref()
            .ok_or_else(|| status(Code::INVALID_ARGUMENT, "exec without a process spec"))?;
        let names = StdioNames {
            stdin: req.stdin,
            stdout: req.stdout,
            stderr: req.stderr,
            terminal: req.terminal,
        };
        self.shim
            .add_exec(&req.id, &req.exec_id, spec.value.clone(), names)?;
        Ok(Empty::new())
    }

    fn resize_pty(&self, _ctx: &TtrpcContext, req: ResizePtyRequest) -> ttrpc::Result<Empty> {
        self.shim.touch();
        self.shim
            .resize_pty(&req.id, exec_id(&req.exec_id), req.width, req.height)?;
        Ok(Empty::new())
    }

    fn close_io(&self, _ctx: &TtrpcContext, req: CloseIORequest) -> ttrpc::Result<Empty> {
        self.shim.touch();
        if req.stdin {
            self.shim.close_stdin(&req.id, exec_id(&req.exec_id))?;
        }
        Ok(Empty::new())
    }

    fn pids(&self, _ctx: &TtrpcContext, req: PidsRequest) -> ttrpc::Result<PidsResponse> {
        self.shim.touch();
        let processes = self
            .shim
            .pids(&req.id)?
            .into_iter()
            .map(|pid| ProcessInfo {
                pid,
                ..Default::default()
            })
            .collect();
        Ok(PidsResponse {
            processes,
            ..Default::default()
        })
    }

    fn update(&self, _ctx: &TtrpcContext, req: UpdateTaskRequest) -> ttrpc::Result<Empty> {
        self.shim.touch();
        let resources = req
            .resources
            .as_ref()
            .ok_or_else(|| status(Code::INVALID_ARGUMENT, "update without resources"))?;
        self.shim.update(&req.id, &resources.value)?;
        Ok(Empty::new())
    }

    fn stats(&self, _ctx: &TtrpcContext, req: StatsRequest) -> ttrpc::Result<StatsResponse> {
        self.shim.touch();
        let bytes = self.shim.stats(&req.id)?;
        let any = Any::parse_from_bytes(&bytes).map_err(|e| status(Code::INTERNAL, e))?;
        Ok(StatsResponse {
            stats: Some(any).into(),
            ..Default::default()
        })
    }

    fn connect(&self, _ctx: &TtrpcContext, req: ConnectRequest) -> ttrpc::Result<ConnectResponse> {
        self.shim.touch();
        Ok(ConnectResponse {
            shim_pid: std::process::id(),
            task_pid: self.shim.task_pid(&req.id),
            version: env!("CARGO_PKG_VERSION").to_owned(),
            ..Default::default()
        })
    }

    fn pause(&self, _ctx: &TtrpcContext, _req: PauseRequest) -> ttrpc::Result<Empty> {
        Err(status(Code::UNIMPLEMENTED, "pause is not supported"))
    }

    fn resume(&self, _ctx: &TtrpcContext, _req: ResumeRequest) -> ttrpc::Result<Empty> {
        Err(status(Code::UNIMPLEMENTED, "resume is not supported"))
    }

    fn checkpoint(&self, _ctx: &TtrpcContext, _req: CheckpointTaskRequest) -> ttrpc::Result<Empty> {
        Err(status(Code::UNIMPLEMENTED, "checkpoint is not supported"))
    }

    fn shutdown(&self, _ctx: &TtrpcContext, _req: ShutdownRequest) -> ttrpc::Result<Empty> {
        self.shim.touch();
        if !self.shim.shutdown() {
            log::debug!("shutdown ignored: containers remain");
        }
        Ok(Empty::new())
    }
}
