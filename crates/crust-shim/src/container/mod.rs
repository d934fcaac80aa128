//! The pod's containers and exec processes: their lifecycle, their exits
//! (kept until Delete), and the events about them.
//!
//! Locking: one mutex over the whole state, never held across a helper
//! run. The reaper takes it before reaping a pid, and Kill holds it while
//! signalling, so a pid is never signalled after it was reaped and reused.

mod exec;
mod exit;
mod state;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

use containerd_shim_protos::events::task::{TaskCreate, TaskDelete, TaskIO, TaskStart};
use containerd_shim_protos::types::mount::Mount;
use crust_shim_proto::bundle::{CONFIG, ROOTFS};

use state::{Container, Proc, State, check_id, internal, parse_pid};
pub use state::{Error, Exit, OomCmd, ProcView, Result, Status, StdioNames, WaitFor};

use crate::attach::AttachSocket;
use crate::cgroup::CgroupDirs;
use crate::events::{self, Publisher};
use crate::helper::{self, Reply};
use crate::io::{self, ProcIo, StdioConfig};
use crate::timefmt::to_timestamp;
use crate::trim::Activity;
use crate::{lc, sys};

/// How long an exit waits for the process's output to drain before it is
/// reported anyway (a background process may hold the pipe open).
const IO_GRACE: Duration = Duration::from_secs(2);
/// How long the exit of a pid nobody knows yet is kept for a racing Start.
const UNCLAIMED_TTL: Duration = Duration::from_secs(60);
/// How long Delete waits for a created (never started) container to die.
const KILL_WAIT: Duration = Duration::from_secs(10);

pub struct Shim {
    namespace: String,
    /// libcontainer's state root for this pod.
    root: PathBuf,
    state: Mutex<State>,
    /// Notified whenever an exit is reported.
    changed: Condvar,
    events: Publisher,
    /// Wakes the main loop (new OOM watch, new drain deadline, exit) and
    /// counts activity for it.
    activity: Arc<Activity>,
    oom_cmds: Mutex<Vec<OomCmd>>,
    /// Held through a container's whole Delete: crustd may delete a
    /// container from its exit handler and from RemoveContainer at once,
    /// and two libcontainer deletes of one state dir race (ENOENT).
    deletes: Mutex<()>,
}

impl Shim {
    pub fn new(
        namespace: String,
        root: PathBuf,
        events: Publisher,
        activity: Arc<Activity>,
    ) -> Shim {
        Shim {
            namespace,
            root,
            state: Mutex::new(State::default()),
            changed: Condvar::new(),
            events,
            activity,
            oom_cmds: Mutex::new(Vec::new()),
            deletes: Mutex::new(()),
        }
    }

    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn activity(&self) -> &Activity {
        &self.activity
    }

    /// Notes a request or an exit.
    pub fn touch(&self) {
        self.activity.touch();
    }

    fn wake(&self) {
        self.activity.wake();
    }

    fn oom_cmd(&self, cmd: OomCmd) {
        self.oom_cmds
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(cmd);
        self.wake();
    }

    pub fn take_oom_cmds(&self) -> Vec<OomCmd> {
        std::mem::take(&mut *self.oom_cmds.lock().unwrap_or_else(|e| e.into_inner()))
    }

    /// Called by a process's output copiers when one of them is done.
    fn on_drained(self: &Arc<Self>, id: &str, exec_id: Option<&str>) -> io::OnDrained {
        let weak = Arc::downgrade(self);
        let (id, exec_id) = (id.to_owned(), exec_id.map(str::to_owned));
        Arc::new(move || {
            if let Some(shim) = weak.upgrade() {
                let mut st = shim.lock();
                shim.report_exit(&mut st, &id, exec_id.as_deref(), false);
            }
        })
    }

    pub fn create(
        self: &Arc<Self>,
        id: &str,
        bundle: &str,
        rootfs: &[Mount],
        names: StdioNames,
    ) -> Result<u32> {
        check_id("container id", id)?;
        let bundle = PathBuf::from(bundle);
        if !bundle.is_absolute() || !bundle.join(CONFIG).is_file() {
            return Err(Error::InvalidArgument(format!(
                "bundle {} has no {CONFIG}",
                bundle.display()
            )));
        }
        let cfg = names.config()?;
        {
            let mut st = self.lock();
            if st.exit {
                return Err(Error::FailedPrecondition(
                    "the shim is shutting down".into(),
                ));
            }
            if st.containers.contains_key(id) || !st.reserved.insert(id.to_owned()) {
                return Err(Error::AlreadyExists(format!(
                    "container {id} already exists"
                )));
            }
        }
        let created = self.create_reserved(id, &bundle, rootfs, &cfg);
        let mut st = self.lock();
        st.reserved.remove(id);
        let (pid, io, cgroup, since, attach) = created?;
        let oom_kills = cgroup.oom_kills().unwrap_or(0);
        st.containers.insert(
            id.to_owned(),
            Container {
                id: id.to_owned(),
                bundle: bundle.clone(),
                init: Proc::new(pid, io, names.clone()),
                execs: HashMap::new(),
                cgroup: cgroup.clone(),
                oom_kills,
                rootfs_mounted: !rootfs.is_empty(),
                attach,
            },
        );
        log::info!("created container {id} pid {pid}");
        // Under the lock, so that an early exit cannot be published first.
        self.events.publish(
            events::CREATE,
            TaskCreate {
                container_id: id.to_owned(),
                bundle: bundle.display().to_string(),
                rootfs: rootfs.to_vec(),
                io: Some(TaskIO {
                    stdin: names.stdin,
                    stdout: names.stdout,
                    stderr: names.stderr,
                    terminal: names.terminal,
                    ..Default::default()
                })
                .into(),
                pid: pid as u32,
                ..Default::default()
            },
        );
        self.claim(&mut st, pid, since, id, None);
        drop(st);
        self.oom_cmd(OomCmd::Add(id.to_owned(), cgroup));
        Ok(pid as u32)
    }

    fn create_reserved(
        self: &Arc<Self>,
        id: &str,
        bundle: &Path,
        rootfs: &[Mount],
        cfg: &StdioConfig,
    ) -> Result<(i32, ProcIo, CgroupDirs, SystemTime, Arc<AttachSocket>)> {
        let cfg = &cfg.attachable();
        let log = ProcIo::open_log(cfg)
            .map_err(|e| Error::InvalidArgument(format!("open log file: {e}")))?;
        // Before the container exists: a failure leaves nothing to undo,
        // and a client may attach before Start.
        let attach = AttachSocket::bind(bundle)
            .map(Arc::new)
            .map_err(|e| Error::Internal(format!("attach socket in {}: {e}", bundle.display())))?;
        let (child, fds) = io::make_pipes(cfg).map_err(internal)?;
        let since = SystemTime::now();
        let reply = helper::run(|| {
            let target = bundle.join(ROOTFS);
            if !rootfs.is_empty() {
                lc::mount_rootfs(rootfs, &target)?;
            }
            let r = lc::create(&self.root, id, bundle, child.as_ref(), cfg.terminal);
            if r.is_err() && !rootfs.is_empty() {
                lc::unmount_rootfs(&target);
            }
            r
        })
        .map_err(Error::Internal)?;
        // The container holds its ends now; EOF must come when it exits.
        drop(child);
        let pid = parse_pid(&reply)?;
        let cgroup = CgroupDirs::of_pid(pid);
        let tee = Some(attach.attachers().clone());
        match ProcIo::start(cfg, log, fds, reply.fd, tee, self.on_drained(id, None)) {
            Ok(io) => Ok((pid, io, cgroup, since, attach)),
            Err(e) => {
                let _ = sys::send_signal(pid, libc::SIGKILL);
                let _ = helper::run(|| lc::delete(&self.root, id));
                Err(Error::Internal(format!("stdio of {id}: {e}")))
            }
        }
    }

    /// Adopts an exit the reaper saw before the pid was recorded.
    fn claim(&self, st: &mut State, pid: i32, since: SystemTime, id: &str, exec_id: Option<&str>) {
        if let Some(exit) = st.unclaimed.remove(&pid)
            && exit.at >= since
        {
            self.record_exit(st, id, exec_id, exit);
        }
    }

    pub fn start(self: &Arc<Self>, id: &str, exec_id: Option<&str>) -> Result<u32> {
        match exec_id {
            None => self.start_init(id),
            Some(e) => self.start_exec(id, e),
        }
    }

    fn start_init(&self, id: &str) -> Result<u32> {
        let pid = {
            let mut st = self.lock();
            let p = &mut st.container_mut(id)?.init;
            if p.started || p.starting {
                return Err(Error::FailedPrecondition(format!(
                    "container {id} was already started"
                )));
            }
            if p.reaped.is_some() {
                return Err(Error::FailedPrecondition(format!(
                    "container {id} has exited"
                )));
            }
            p.starting = true;
            p.pid
        };
        let r = helper::run(|| lc::start(&self.root, id));
        let mut st = self.lock();
        let c = st.container_mut(id)?;
        c.init.starting = false;
        c.init.started = r.is_ok();
        if r.is_ok() {
            log::info!("started container {id}");
            self.events.publish(
                events::START,
                TaskStart {
                    container_id: id.to_owned(),
                    pid: pid as u32,
                    ..Default::default()
                },
            );
        }
        if c.init.reaped.is_some() {
            // It exited while starting; its exit was held back until now.
            self.report_or_defer(&mut st, id, None);
        }
        r.map_err(Error::Internal)?;
        Ok(pid as u32)
    }

    pub fn kill(&self, id: &str, exec_id: Option<&str>, signal: u32, all: bool) -> Result<()> {
        if !(1..=64).contains(&signal) {
            return Err(Error::InvalidArgument(format!("invalid signal {signal}")));
        }
        let sig = signal as i32;
        let st = self.lock();
        let c = st.container(id)?;
        let p = c.proc_(exec_id)?;
        if exec_id.is_none() && all {
            let mut pids = c.cgroup.pids();
            if p.alive() && !pids.contains(&p.pid) {
                pids.push(p.pid);
            }
            for pid in pids {
                let _ = sys::send_signal(pid, sig);
            }
            return Ok(());
        }
        if p.pid == 0 {
            return Err(Error::FailedPrecondition("process not started".into()));
        }
        if !p.alive() {
            return Err(Error::NotFound("process already finished".into()));
        }
        sys::send_signal(p.pid, sig).map_err(|e| match e.raw_os_error() {
            Some(libc::ESRCH) => Error::NotFound("process already finished".into()),
            _ => internal(e),
        })
    }

    pub fn state(&self, id: &str, exec_id: Option<&str>) -> Result<ProcView> {
        let st = self.lock();
        let c = st.container(id)?;
        let p = c.proc_(exec_id)?;
        Ok(ProcView {
            bundle: c.bundle.clone(),
            pid: p.pid as u32,
            status: p.status(),
            exit: p.exit,
            names: p.names.clone(),
        })
    }

    /// Removes an exited process. A container that was created but never
    /// started is killed first, as runc does.
    pub fn delete(&self, id: &str, exec_id: Option<&str>) -> Result<(u32, Exit)> {
        match exec_id {
            None => self.delete_container(id),
            Some(e) => self.delete_exec(id, e),
        }
    }

    fn delete_container(&self, id: &str) -> Result<(u32, Exit)> {
        // The second of two concurrent deletes waits here, then finds the
        // container gone: NotFound, which crustd takes as done.
        let _one_at_a_time = self.deletes.lock().unwrap_or_else(|e| e.into_inner());
        {
            let st = self.lock();
            let p = &st.container(id)?.init;
            if p.exit.is_none() {
                if p.started || p.starting {
                    return Err(Error::FailedPrecondition(format!(
                        "container {id} is running: kill it first"
                    )));
                }
                if p.alive() {
                    let _ = sys::send_signal(p.pid, libc::SIGKILL);
                }
            }
        }
        if self.wait(id, None, KILL_WAIT)?.is_none() {
            return Err(Error::Internal(format!(
                "container {id} did not die after SIGKILL"
            )));
        }
        let (bundle, mounted) = {
            let st = self.lock();
            let c = st.container(id)?;
            (c.bundle.clone(), c.rootfs_mounted)
        };
        helper::run(|| {
            lc::delete(&self.root, id)?;
            if mounted {
                lc::unmount_rootfs(&bundle.join(ROOTFS));
            }
            Ok(Reply::default())
        })
        .map_err(Error::Internal)?;
        let mut st = self.lock();
        let c = st
            .containers
            .remove(id)
            .ok_or_else(|| Error::NotFound(format!("container {id} not found")))?;
        st.draining.retain(|d| d.1 != id);
        st.waiters.retain(|w| w.id != id);
        drop(st);
        c.attach.remove();
        c.init.io.release();
        for e in c.execs.values() {
            e.proc_.io.release();
        }
        self.oom_cmd(OomCmd::Remove(id.to_owned()));
        let exit = c.init.exit.expect("waited for above");
        log::info!("deleted container {id}");
        self.events.publish(
            events::DELETE,
            TaskDelete {
                container_id: id.to_owned(),
                pid: c.init.pid as u32,
                exit_status: exit.status,
                exited_at: Some(to_timestamp(exit.at)).into(),
                id: id.to_owned(),
                ..Default::default()
            },
        );
        Ok((c.init.pid as u32, exit))
    }

    pub fn close_stdin(&self, id: &str, exec_id: Option<&str>) -> Result<()> {
        self.lock().proc_(id, exec_id)?.io.close_stdin();
        Ok(())
    }

    pub fn resize_pty(&self, id: &str, exec_id: Option<&str>, cols: u32, rows: u32) -> Result<()> {
        let (cols, rows) = (
            cols.min(u16::MAX as u32) as u16,
            rows.min(u16::MAX as u32) as u16,
        );
        self.lock()
            .proc_(id, exec_id)?
            .io
            .resize(cols, rows)
            .map_err(internal)
    }

    /// Every process in the container's cgroup.
    pub fn pids(&self, id: &str) -> Result<Vec<u32>> {
        let st = self.lock();
        let c = st.container(id)?;
        let mut pids: Vec<u32> = c.cgroup.pids().into_iter().map(|p| p as u32).collect();
        if pids.is_empty() && c.init.alive() {
            pids.push(c.init.pid as u32);
        }
        Ok(pids)
    }

    /// Applies OCI LinuxResources (JSON) to the container's cgroup.
    pub fn update(&self, id: &str, resources: &[u8]) -> Result<()> {
        if !self.lock().container(id)?.init.alive() {
            return Err(Error::FailedPrecondition(format!(
                "container {id} has exited"
            )));
        }
        helper::run(|| lc::update(&self.root, id, resources)).map_err(Error::Internal)?;
        Ok(())
    }

    /// The container's cgroup metrics as a serialized protobuf `Any`.
    pub fn stats(&self, id: &str) -> Result<Vec<u8>> {
        let pid = {
            let st = self.lock();
            let p = &st.container(id)?.init;
            if !p.alive() {
                return Err(Error::FailedPrecondition(format!(
                    "container {id} has exited"
                )));
            }
            p.pid as u32
        };
        Ok(helper::run(|| lc::stats(pid))
            .map_err(Error::Internal)?
            .data)
    }

    /// Every container's attach socket, for the main loop to accept on.
    pub fn attach_sockets(&self) -> Vec<Arc<AttachSocket>> {
        self.lock()
            .containers
            .values()
            .map(|c| c.attach.clone())
            .collect()
    }

    /// The container's init pid, when it has one.
    pub fn task_pid(&self, id: &str) -> u32 {
        self.lock()
            .containers
            .get(id)
            .map_or(0, |c| c.init.pid as u32)
    }

    /// Shutdown: the shim exits once it holds no container.
    pub fn shutdown(&self) -> bool {
        let mut st = self.lock();
        if !st.containers.is_empty() || !st.reserved.is_empty() {
            return false;
        }
        st.exit = true;
        drop(st);
        self.wake();
        true
    }

    pub fn exit_requested(&self) -> bool {
        self.lock().exit
    }

    /// SIGUSR1: open every log file again (kubelet rotated them).
    pub fn reopen_logs(&self) {
        let st = self.lock();
        let procs = st
            .containers
            .values()
            .flat_map(|c| std::iter::once(&c.init).chain(c.execs.values().map(|e| &e.proc_)));
        for p in procs {
            if let Some(log) = p.io.log()
                && let Err(e) = log.reopen()
            {
                log::warn!("reopen {}: {e}", log.path().display());
            }
        }
    }
}
