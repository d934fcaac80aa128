//! The pod's containers and exec processes: their lifecycle, their exits
//! (kept until Delete), and the events about them.
//!
//! Locking: one mutex over the whole state, never held across a helper
//! run. The reaper takes it before reaping a pid, and Kill holds it while
//! signalling, so a pid is never signalled after it was reaped and reused.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime};

use containerd_shim_protos::events::task::{
    TaskCreate, TaskDelete, TaskExecAdded, TaskExecStarted, TaskExit, TaskIO, TaskOOM, TaskStart,
};
use containerd_shim_protos::types::mount::Mount;
use nix::sys::eventfd::{EfdFlags, EventFd};

use crate::cgroup::CgroupDirs;
use crate::events::{self, Publisher};
use crate::helper::{self, Reply};
use crate::io::{self, ProcIo, StdioConfig};
use crate::timefmt::to_timestamp;
use crate::{lc, sys};

/// How long an exit waits for the process's output to drain before it is
/// reported anyway (a background process may hold the pipe open).
const IO_GRACE: Duration = Duration::from_secs(2);
/// How long the exit of a pid nobody knows yet is kept for a racing Start.
const UNCLAIMED_TTL: Duration = Duration::from_secs(60);
/// How long Delete waits for a created (never started) container to die.
const KILL_WAIT: Duration = Duration::from_secs(10);

#[derive(Debug)]
pub enum Error {
    NotFound(String),
    AlreadyExists(String),
    FailedPrecondition(String),
    InvalidArgument(String),
    Internal(String),
}

pub type Result<T> = std::result::Result<T, Error>;

fn internal(e: impl std::fmt::Display) -> Error {
    Error::Internal(e.to_string())
}

#[derive(Clone, Copy, Debug)]
pub struct Exit {
    pub status: u32,
    pub at: SystemTime,
}

/// The stdio strings as the request gave them, for State and events.
#[derive(Clone, Debug, Default)]
pub struct StdioNames {
    pub stdin: String,
    pub stdout: String,
    pub stderr: String,
    pub terminal: bool,
}

impl StdioNames {
    fn config(&self) -> Result<StdioConfig> {
        StdioConfig::parse(&self.stdin, &self.stdout, &self.stderr, self.terminal).map_err(Error::InvalidArgument)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Status {
    Created,
    Running,
    Stopped,
}

/// A snapshot of one process for State.
pub struct ProcView {
    pub bundle: PathBuf,
    pub pid: u32,
    pub status: Status,
    pub exit: Option<Exit>,
    pub names: StdioNames,
}

struct Proc {
    /// 0 until an exec process is started.
    pid: i32,
    started: bool,
    /// A helper is starting it; Start and Delete wait their turn.
    starting: bool,
    /// Reaped, output maybe not drained yet.
    reaped: Option<Exit>,
    /// Reported: Wait returns it, TaskExit was published.
    exit: Option<Exit>,
    io: ProcIo,
    names: StdioNames,
}

impl Proc {
    fn new(pid: i32, io: ProcIo, names: StdioNames) -> Self {
        Proc {
            pid,
            started: false,
            starting: false,
            reaped: None,
            exit: None,
            io,
            names,
        }
    }

    fn status(&self) -> Status {
        match (self.exit, self.started) {
            (Some(_), _) => Status::Stopped,
            (None, true) => Status::Running,
            (None, false) => Status::Created,
        }
    }

    fn alive(&self) -> bool {
        self.pid > 0 && self.reaped.is_none()
    }
}

struct Exec {
    proc_: Proc,
    process: Vec<u8>,
}

struct Container {
    id: String,
    bundle: PathBuf,
    init: Proc,
    execs: HashMap<String, Exec>,
    cgroup: CgroupDirs,
    oom_kills: u64,
    rootfs_mounted: bool,
}

impl Container {
    fn proc_(&self, exec_id: Option<&str>) -> Result<&Proc> {
        match exec_id {
            None => Ok(&self.init),
            Some(e) => self
                .execs
                .get(e)
                .map(|x| &x.proc_)
                .ok_or_else(|| Error::NotFound(format!("exec process {e} not found"))),
        }
    }

    fn proc_mut(&mut self, exec_id: Option<&str>) -> Result<&mut Proc> {
        match exec_id {
            None => Ok(&mut self.init),
            Some(e) => self
                .execs
                .get_mut(e)
                .map(|x| &mut x.proc_)
                .ok_or_else(|| Error::NotFound(format!("exec process {e} not found"))),
        }
    }

    fn running(&self) -> bool {
        self.init.started && self.init.reaped.is_none()
    }
}

#[derive(Default)]
struct State {
    containers: HashMap<String, Container>,
    /// Ids being created, so a second Create of the same id fails.
    reserved: HashSet<String>,
    /// Reaped pids not (yet) known as a process: an exec may exit before
    /// its Start has recorded its pid.
    unclaimed: HashMap<i32, Exit>,
    /// Reaped processes whose output is still draining, with deadlines.
    draining: Vec<(Instant, String, Option<String>)>,
    exit: bool,
}

impl State {
    fn container(&self, id: &str) -> Result<&Container> {
        self.containers
            .get(id)
            .ok_or_else(|| Error::NotFound(format!("container {id} not found")))
    }

    fn container_mut(&mut self, id: &str) -> Result<&mut Container> {
        self.containers
            .get_mut(id)
            .ok_or_else(|| Error::NotFound(format!("container {id} not found")))
    }

    fn proc_(&self, id: &str, exec_id: Option<&str>) -> Result<&Proc> {
        self.container(id)?.proc_(exec_id)
    }

    /// The live process with this pid: (container id, exec id).
    fn find_pid(&self, pid: i32) -> Option<(String, Option<String>)> {
        for (id, c) in &self.containers {
            if c.init.pid == pid && c.init.reaped.is_none() {
                return Some((id.clone(), None));
            }
            for (eid, e) in &c.execs {
                if e.proc_.pid == pid && e.proc_.reaped.is_none() {
                    return Some((id.clone(), Some(eid.clone())));
                }
            }
        }
        None
    }
}

/// Asks the main loop to change its OOM watches.
pub enum OomCmd {
    Add(String, CgroupDirs),
    Remove(String),
}

pub struct Shim {
    namespace: String,
    /// libcontainer's state root for this pod.
    root: PathBuf,
    state: Mutex<State>,
    /// Notified whenever an exit is reported.
    changed: Condvar,
    events: Publisher,
    /// Wakes the main loop (new OOM watch, new drain deadline, exit).
    wake: EventFd,
    oom_cmds: Mutex<Vec<OomCmd>>,
    /// Counts requests and exits, so the main loop knows when things settle.
    activity: AtomicU64,
}

fn check_id(what: &str, id: &str) -> Result<()> {
    let ok = !id.is_empty()
        && id.len() <= 1024
        && id != "."
        && id != ".."
        && id.chars().all(|c| c.is_ascii_alphanumeric() || "_+-.".contains(c));
    if ok {
        Ok(())
    } else {
        Err(Error::InvalidArgument(format!(
            "invalid {what} {id:?}: want letters, digits, '_', '+', '-' and '.'"
        )))
    }
}

fn parse_pid(reply: &Reply) -> Result<i32> {
    std::str::from_utf8(&reply.data)
        .ok()
        .and_then(|s| s.parse().ok())
        .filter(|&p: &i32| p > 0)
        .ok_or_else(|| Error::Internal("helper replied without a pid".into()))
}

impl Shim {
    pub fn new(namespace: String, root: PathBuf, events: Publisher) -> std::io::Result<Shim> {
        Ok(Shim {
            namespace,
            root,
            state: Mutex::new(State::default()),
            changed: Condvar::new(),
            events,
            wake: EventFd::from_value_and_flags(0, EfdFlags::EFD_CLOEXEC | EfdFlags::EFD_NONBLOCK)?,
            oom_cmds: Mutex::new(Vec::new()),
            activity: AtomicU64::new(0),
        })
    }

    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn wake_fd(&self) -> &EventFd {
        &self.wake
    }

    /// Notes activity (a request, an exit) and wakes the main loop, which
    /// releases idle memory once activity settles.
    pub fn touch(&self) {
        self.activity.fetch_add(1, Ordering::Relaxed);
        self.wake();
    }

    pub fn activity(&self) -> u64 {
        self.activity.load(Ordering::Relaxed)
    }

    fn wake(&self) {
        let _ = self.wake.write(1);
    }

    fn oom_cmd(&self, cmd: OomCmd) {
        self.oom_cmds.lock().unwrap_or_else(|e| e.into_inner()).push(cmd);
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

    pub fn create(self: &Arc<Self>, id: &str, bundle: &str, rootfs: &[Mount], names: StdioNames) -> Result<u32> {
        check_id("container id", id)?;
        let bundle = PathBuf::from(bundle);
        if !bundle.is_absolute() || !bundle.join("config.json").is_file() {
            return Err(Error::InvalidArgument(format!(
                "bundle {} has no config.json",
                bundle.display()
            )));
        }
        let cfg = names.config()?;
        {
            let mut st = self.lock();
            if st.exit {
                return Err(Error::FailedPrecondition("the shim is shutting down".into()));
            }
            if st.containers.contains_key(id) || !st.reserved.insert(id.to_owned()) {
                return Err(Error::AlreadyExists(format!("container {id} already exists")));
            }
        }
        let created = self.create_reserved(id, &bundle, rootfs, &cfg);
        let mut st = self.lock();
        st.reserved.remove(id);
        let (pid, io, cgroup, since) = created?;
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
            },
        );
        self.claim(&mut st, pid, since, id, None);
        drop(st);
        self.oom_cmd(OomCmd::Add(id.to_owned(), cgroup));
        log::info!("created container {id} pid {pid}");
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
        Ok(pid as u32)
    }

    fn create_reserved(
        self: &Arc<Self>,
        id: &str,
        bundle: &Path,
        rootfs: &[Mount],
        cfg: &StdioConfig,
    ) -> Result<(i32, ProcIo, CgroupDirs, SystemTime)> {
        let log = ProcIo::open_log(cfg).map_err(|e| Error::InvalidArgument(format!("open log file: {e}")))?;
        let (child, fds) = io::make_pipes(cfg).map_err(internal)?;
        let since = SystemTime::now();
        let reply = helper::run(|| {
            let target = bundle.join("rootfs");
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
        match ProcIo::start(cfg, log, fds, reply.fd, self.on_drained(id, None)) {
            Ok(io) => Ok((pid, io, cgroup, since)),
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
                return Err(Error::FailedPrecondition(format!("container {id} was already started")));
            }
            if p.reaped.is_some() {
                return Err(Error::FailedPrecondition(format!("container {id} has exited")));
            }
            p.starting = true;
            p.pid
        };
        let r = helper::run(|| lc::start(&self.root, id));
        let mut st = self.lock();
        if let Ok(c) = st.container_mut(id) {
            c.init.starting = false;
            c.init.started = r.is_ok();
        }
        drop(st);
        r.map_err(Error::Internal)?;
        log::info!("started container {id}");
        self.events.publish(
            events::START,
            TaskStart {
                container_id: id.to_owned(),
                pid: pid as u32,
                ..Default::default()
            },
        );
        Ok(pid as u32)
    }

    fn start_exec(self: &Arc<Self>, id: &str, exec_id: &str) -> Result<u32> {
        let (names, process) = {
            let mut st = self.lock();
            let c = st.container_mut(id)?;
            if !c.running() {
                return Err(Error::FailedPrecondition(format!("container {id} is not running")));
            }
            let e = c
                .execs
                .get_mut(exec_id)
                .ok_or_else(|| Error::NotFound(format!("exec process {exec_id} not found")))?;
            if e.proc_.started || e.proc_.starting {
                return Err(Error::FailedPrecondition(format!("exec process {exec_id} was already started")));
            }
            e.proc_.starting = true;
            (e.proc_.names.clone(), e.process.clone())
        };
        let started = (|| {
            let cfg = names.config()?;
            let log = ProcIo::open_log(&cfg).map_err(|e| Error::InvalidArgument(format!("open log file: {e}")))?;
            let (child, fds) = io::make_pipes(&cfg).map_err(internal)?;
            let since = SystemTime::now();
            let reply = helper::run(|| lc::exec(&self.root, id, exec_id, &process, child.as_ref(), cfg.terminal))
                .map_err(Error::Internal)?;
            drop(child);
            let pid = parse_pid(&reply)?;
            let io = ProcIo::start(&cfg, log, fds, reply.fd, self.on_drained(id, Some(exec_id)));
            Ok((pid, io, since))
        })();
        let mut st = self.lock();
        let Some(e) = st.containers.get_mut(id).and_then(|c| c.execs.get_mut(exec_id)) else {
            if let Ok((pid, _, _)) = started {
                let _ = sys::send_signal(pid, libc::SIGKILL);
            }
            return Err(Error::NotFound(format!("exec process {exec_id} was deleted")));
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
        self.claim(&mut st, pid, since, id, Some(exec_id));
        drop(st);
        log::debug!("started exec {exec_id} in {id}, pid {pid}");
        self.events.publish(
            events::EXEC_STARTED,
            TaskExecStarted {
                container_id: id.to_owned(),
                exec_id: exec_id.to_owned(),
                pid: pid as u32,
                ..Default::default()
            },
        );
        Ok(pid as u32)
    }

    /// Registers an exec process; Start runs it. `process` is an OCI
    /// Process as JSON.
    pub fn add_exec(&self, id: &str, exec_id: &str, process: Vec<u8>, names: StdioNames) -> Result<()> {
        check_id("exec id", exec_id)?;
        names.config()?;
        let value: serde_json::Value =
            serde_json::from_slice(&process).map_err(|e| Error::InvalidArgument(format!("exec spec: {e}")))?;
        if value["args"].as_array().is_none_or(|a| a.is_empty()) {
            return Err(Error::InvalidArgument("exec spec has no args".into()));
        }
        let mut st = self.lock();
        let c = st.container_mut(id)?;
        if !c.running() {
            return Err(Error::FailedPrecondition(format!("container {id} is not running")));
        }
        if c.execs.contains_key(exec_id) {
            return Err(Error::AlreadyExists(format!("exec process {exec_id} already exists")));
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

    /// Blocks until the process's exit is reported, up to `timeout`
    /// (`None`: it has not exited by then).
    pub fn wait(&self, id: &str, exec_id: Option<&str>, timeout: Duration) -> Result<Option<Exit>> {
        let deadline = Instant::now() + timeout;
        let mut st = self.lock();
        loop {
            if let Some(exit) = st.proc_(id, exec_id)?.exit {
                return Ok(Some(exit));
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Ok(None);
            }
            st = self.changed.wait_timeout(st, left).unwrap_or_else(|e| e.into_inner()).0;
        }
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
        let Some(exec_id) = exec_id else {
            return self.delete_container(id);
        };
        let mut st = self.lock();
        let c = st.container_mut(id)?;
        let p = c.proc_(Some(exec_id))?;
        if p.starting || (p.started && p.exit.is_none()) {
            return Err(Error::FailedPrecondition(format!("exec process {exec_id} is running")));
        }
        let e = c.execs.remove(exec_id).expect("looked up above");
        e.proc_.io.release();
        let exit = e.proc_.exit.unwrap_or(Exit {
            status: 0,
            at: SystemTime::now(),
        });
        Ok((e.proc_.pid as u32, exit))
    }

    fn delete_container(&self, id: &str) -> Result<(u32, Exit)> {
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
            return Err(Error::Internal(format!("container {id} did not die after SIGKILL")));
        }
        let (bundle, mounted) = {
            let st = self.lock();
            let c = st.container(id)?;
            (c.bundle.clone(), c.rootfs_mounted)
        };
        helper::run(|| {
            lc::delete(&self.root, id)?;
            if mounted {
                lc::unmount_rootfs(&bundle.join("rootfs"));
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
        drop(st);
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
        let (cols, rows) = (cols.min(u16::MAX as u32) as u16, rows.min(u16::MAX as u32) as u16);
        self.lock().proc_(id, exec_id)?.io.resize(cols, rows).map_err(internal)
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
            return Err(Error::FailedPrecondition(format!("container {id} has exited")));
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
                return Err(Error::FailedPrecondition(format!("container {id} has exited")));
            }
            p.pid as u32
        };
        Ok(helper::run(|| lc::stats(pid)).map_err(Error::Internal)?.data)
    }

    /// The container's init pid, when it has one.
    pub fn task_pid(&self, id: &str) -> u32 {
        self.lock().containers.get(id).map_or(0, |c| c.init.pid as u32)
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

    /// The reaper's entry point: `reap` reaps `pid` for real and returns
    /// its status; called with the state locked so that Kill never signals
    /// a reaped pid.
    pub fn child_exited(&self, pid: i32, reap: impl FnOnce() -> Option<u32>) {
        self.touch();
        let mut st = self.lock();
        let Some(status) = reap() else { return };
        let exit = Exit {
            status,
            at: SystemTime::now(),
        };
        if helper::forget(nix::unistd::Pid::from_raw(pid)) {
            return;
        }
        match st.find_pid(pid) {
            Some((id, exec_id)) => self.record_exit(&mut st, &id, exec_id.as_deref(), exit),
            None => {
                st.unclaimed.retain(|_, e| e.at.elapsed().map_or(true, |age| age < UNCLAIMED_TTL));
                st.unclaimed.insert(pid, exit);
            }
        }
    }

    fn record_exit(&self, st: &mut State, id: &str, exec_id: Option<&str>, exit: Exit) {
        let Some(p) = st.containers.get_mut(id).and_then(|c| c.proc_mut(exec_id).ok()) else {
            return;
        };
        if p.reaped.is_some() {
            return;
        }
        p.reaped = Some(exit);
        if !self.report_exit(st, id, exec_id, false) {
            st.draining
                .push((Instant::now() + IO_GRACE, id.to_owned(), exec_id.map(str::to_owned)));
            self.wake();
        }
    }

    /// Reports a reaped exit once its output drained, or when `force`d.
    /// Returns whether it is reported now.
    fn report_exit(&self, st: &mut State, id: &str, exec_id: Option<&str>, force: bool) -> bool {
        let Some(c) = st.containers.get_mut(id) else { return false };
        let Ok(p) = c.proc_mut(exec_id) else { return false };
        let Some(exit) = p.reaped else { return false };
        if p.exit.is_some() {
            return true;
        }
        if !force && !p.io.drained() {
            return false;
        }
        p.exit = Some(exit);
        let pid = p.pid as u32;
        if exec_id.is_none() {
            // Before TaskExit, so the runtime knows the reason at the exit.
            self.check_oom_of(c, false);
        }
        log::info!("{id} {} exited with {}", exec_id.unwrap_or("init"), exit.status);
        self.events.publish(
            events::EXIT,
            TaskExit {
                container_id: id.to_owned(),
                id: exec_id.unwrap_or(id).to_owned(),
                pid,
                exit_status: exit.status,
                exited_at: Some(to_timestamp(exit.at)).into(),
                ..Default::default()
            },
        );
        self.changed.notify_all();
        true
    }

    /// Reports exits whose output did not drain in time.
    pub fn expire_draining(&self) {
        let mut st = self.lock();
        let now = Instant::now();
        let due: Vec<_> = st.draining.iter().filter(|d| d.0 <= now).cloned().collect();
        st.draining.retain(|d| d.0 > now);
        for (_, id, exec_id) in due {
            self.report_exit(&mut st, &id, exec_id.as_deref(), true);
        }
    }

    pub fn next_deadline(&self) -> Option<Instant> {
        self.lock().draining.iter().map(|d| d.0).min()
    }

    /// An OOM notification for container `id`.
    pub fn check_oom(&self, id: &str, notified_v1: bool) {
        let mut st = self.lock();
        if let Some(c) = st.containers.get_mut(id) {
            self.check_oom_of(c, notified_v1);
        }
    }

    /// Publishes TaskOOM when the cgroup's OOM kill counter went up (or on
    /// a v1 notification where the kernel has no counter).
    fn check_oom_of(&self, c: &mut Container, notified_v1: bool) {
        let oom = match c.cgroup.oom_kills() {
            Some(n) if n > c.oom_kills => {
                c.oom_kills = n;
                true
            }
            Some(_) => false,
            None => notified_v1,
        };
        if oom {
            let id = c.id.clone();
            log::info!("OOM kill in container {id}");
            self.events.publish(
                events::OOM,
                TaskOOM {
                    container_id: id,
                    ..Default::default()
                },
            );
        }
    }
}
