//! Exec processes: Exec registers one, Start runs it in the container's
//! namespaces and cgroup (a libcontainer tenant), Delete forgets it.

use std::sync::Arc;
use std::time::SystemTime;

use containerd_shim_protos::events::task::{TaskExecAdded, TaskExecStarted};

use super::state::{Exec, Proc, check_id, internal, parse_pid};
use super::{Error, Exit, Result, Shim, StdioNames};
use crate::io::{self, ProcIo};
use crate::{events, helper, lc, sys};

impl Shim {
    /// Registers an exec process; Start runs it. `process` is an OCI
    /// Process as JSON.
    pub fn add_exec(
        &self,
        id: &str,
        exec_id: &str,
        process: Vec<u8>,
        names: StdioNames,
    ) -> Result<()> {
        check_id("exec id", exec_id)?;
        names.config()?;
        let mut value: serde_json::Value = serde_json::from_slice(&process)
            .map_err(|e| Error::InvalidArgument(format!("exec spec: {e}")))?;
        if !value.is_object() || value["args"].as_array().is_none_or(|a| a.is_empty()) {
            return Err(Error::InvalidArgument("exec spec has no args".into()));
        }
        // The request's terminal flag decides; libcontainer checks the spec's.
        value["terminal"] = serde_json::Value::Bool(names.terminal);
        let process = serde_json::to_vec(&value).map_err(internal)?;
        let mut st = self.lock();
        let c = st.container_mut(id)?;
        if !c.running() {
            return Err(Error::FailedPrecondition(format!(
                "container {id} is not running"
            )));
        }
        if c.execs.contains_key(exec_id) {
            return Err(Error::AlreadyExists(format!(
                "exec process {exec_id} already exists"
            )));
        }
        c.execs.insert(
            exec_id.to_owned(),
            Exec {
                proc_: Proc::new(0, ProcIo::none(), names),
                process,
            },
        );
        drop(st);
        self.events.publish(
            events::EXEC_ADDED,
            TaskExecAdded {
                container_id: id.to_owned(),
                exec_id: exec_id.to_owned(),
                ..Default::default()
            },
        );
        Ok(())
    }

    pub(super) fn start_exec(self: &Arc<Self>, id: &str, exec_id: &str) -> Result<u32> {
        let (names, process) = {
            let mut st = self.lock();
            let c = st.container_mut(id)?;
            if !c.running() {
                return Err(Error::FailedPrecondition(format!(
                    "container {id} is not running"
                )));
            }
            let e = c
                .execs
                .get_mut(exec_id)
                .ok_or_else(|| Error::NotFound(format!("exec process {exec_id} not found")))?;
            if e.proc_.started || e.proc_.starting {
                return Err(Error::FailedPrecondition(format!(
                    "exec process {exec_id} was already started"
                )));
            }
            e.proc_.starting = true;
            (e.proc_.names.clone(), e.process.clone())
        };
        let started = (|| {
            let cfg = names.config()?;
            let log = ProcIo::open_log(&cfg)
                .map_err(|e| Error::InvalidArgument(format!("open log file: {e}")))?;
            let (child, fds) = io::make_pipes(&cfg).map_err(internal)?;
            let since = SystemTime::now();
            let reply = helper::run(|| {
                lc::exec(
                    &self.root,
                    id,
                    exec_id,
                    &process,
                    child.as_ref(),
                    cfg.terminal,
                )
            })
            .map_err(Error::Internal)?;
            drop(child);
            let pid = parse_pid(&reply)?;
            let io = ProcIo::start(
                &cfg,
                log,
                fds,
                reply.fd,
                None,
                self.on_drained(id, Some(exec_id)),
            );
            Ok((pid, io, since))
        })();
        let mut st = self.lock();
        let Some(e) = st
            .containers
            .get_mut(id)
            .and_then(|c| c.execs.get_mut(exec_id))
        else {
            if let Ok((pid, _, _)) = started {
                let _ = sys::send_signal(pid, libc::SIGKILL);
            }
            return Err(Error::NotFound(format!(
                "exec process {exec_id} was deleted"
            )));
        };
        e.proc_.starting = false;
        let (pid, io, since) = started?;
        let io = match io {
            Ok(io) => io,
            Err(err) => {
                let _ = sys::send_signal(pid, libc::SIGKILL);
                return Err(Error::Internal(format!("stdio of exec {exec_id}: {err}")));
            }
        };
        e.proc_.pid = pid;
        e.proc_.started = true;
        e.proc_.io = io;
        log::debug!("started exec {exec_id} in {id}, pid {pid}");
        // Under the lock, and before an early exit is claimed: TaskExit
        // never precedes TaskExecStarted.
        self.events.publish(
            events::EXEC_STARTED,
            TaskExecStarted {
                container_id: id.to_owned(),
                exec_id: exec_id.to_owned(),
                pid: pid as u32,
                ..Default::default()
            },
        );
        self.claim(&mut st, pid, since, id, Some(exec_id));
        Ok(pid as u32)
    }

    /// Forgets an exec process that exited or never started.
    pub(super) fn delete_exec(&self, id: &str, exec_id: &str) -> Result<(u32, Exit)> {
        let mut st = self.lock();
        let c = st.container_mut(id)?;
        let p = c.proc_(Some(exec_id))?;
        if p.starting || (p.started && p.exit.is_none()) {
            return Err(Error::FailedPrecondition(format!(
                "exec process {exec_id} is running"
            )));
        }
        let e = c.execs.remove(exec_id).expect("looked up above");
        st.waiters
            .retain(|w| !(w.id == id && w.exec_id.as_deref() == Some(exec_id)));
        e.proc_.io.release();
        let exit = e.proc_.exit.unwrap_or(Exit {
            status: 0,
            at: SystemTime::now(),
        });
        Ok((e.proc_.pid as u32, exit))
    }
}
