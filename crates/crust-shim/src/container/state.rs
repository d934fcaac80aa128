//! The shim's model of the pod: containers, their init and exec
//! processes, and what is known about each one's exit.

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::{Arc, Weak};
use std::time::{Instant, SystemTime};

use crossbeam_channel::{Receiver, Sender};

use crate::attach::AttachSocket;
use crate::cgroup::CgroupDirs;
use crate::helper::Reply;
use crate::io::{ProcIo, StdioConfig};

#[derive(Debug)]
pub enum Error {
    NotFound(String),
    AlreadyExists(String),
    FailedPrecondition(String),
    InvalidArgument(String),
    Internal(String),
}

pub type Result<T> = std::result::Result<T, Error>;

pub(super) fn internal(e: impl std::fmt::Display) -> Error {
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
    pub(super) fn config(&self) -> Result<StdioConfig> {
        StdioConfig::parse(&self.stdin, &self.stdout, &self.stderr, self.terminal)
            .map_err(Error::InvalidArgument)
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

pub(super) struct Proc {
    /// 0 until an exec process is started.
    pub(super) pid: i32,
    pub(super) started: bool,
    /// A helper is starting it; Start and Delete wait their turn.
    pub(super) starting: bool,
    /// Reaped, output maybe not drained yet.
    pub(super) reaped: Option<Exit>,
    /// Reported: Wait returns it, TaskExit was published.
    pub(super) exit: Option<Exit>,
    pub(super) io: ProcIo,
    pub(super) names: StdioNames,
}

impl Proc {
    pub(super) fn new(pid: i32, io: ProcIo, names: StdioNames) -> Self {
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

    pub(super) fn status(&self) -> Status {
        match (self.exit, self.started) {
            (Some(_), _) => Status::Stopped,
            (None, true) => Status::Running,
            (None, false) => Status::Created,
        }
    }

    pub(super) fn alive(&self) -> bool {
        self.pid > 0 && self.reaped.is_none()
    }
}

pub(super) struct Exec {
    pub(super) proc_: Proc,
    pub(super) process: Vec<u8>,
}

pub(super) struct Container {
    pub(super) id: String,
    pub(super) bundle: PathBuf,
    pub(super) init: Proc,
    pub(super) execs: HashMap<String, Exec>,
    pub(super) cgroup: CgroupDirs,
    pub(super) oom_kills: u64,
    pub(super) rootfs_mounted: bool,
    /// The init process's attach socket, in the bundle.
    pub(super) attach: Arc<AttachSocket>,
}

impl Container {
    pub(super) fn proc_(&self, exec_id: Option<&str>) -> Result<&Proc> {
        match exec_id {
            None => Ok(&self.init),
            Some(e) => self
                .execs
                .get(e)
                .map(|x| &x.proc_)
                .ok_or_else(|| Error::NotFound(format!("exec process {e} not found"))),
        }
    }

    pub(super) fn proc_mut(&mut self, exec_id: Option<&str>) -> Result<&mut Proc> {
        match exec_id {
            None => Ok(&mut self.init),
            Some(e) => self
                .execs
                .get_mut(e)
                .map(|x| &mut x.proc_)
                .ok_or_else(|| Error::NotFound(format!("exec process {e} not found"))),
        }
    }

    pub(super) fn running(&self) -> bool {
        self.init.started && self.init.reaped.is_none()
    }
}

#[derive(Default)]
pub(super) struct State {
    pub(super) containers: HashMap<String, Container>,
    /// Ids being created, so a second Create of the same id fails.
    pub(super) reserved: HashSet<String>,
    /// Reaped pids not (yet) known as a process: an exec may exit before
    /// its Start has recorded its pid.
    pub(super) unclaimed: HashMap<i32, Exit>,
    /// Reaped processes whose output is still draining, with deadlines.
    pub(super) draining: Vec<(Instant, String, Option<String>)>,
    /// Pending Wait calls, told the exit when it is reported.
    pub(super) waiters: Vec<Waiter>,
    pub(super) exit: bool,
}

impl State {
    pub(super) fn container(&self, id: &str) -> Result<&Container> {
        self.containers
            .get(id)
            .ok_or_else(|| Error::NotFound(format!("container {id} not found")))
    }

    pub(super) fn container_mut(&mut self, id: &str) -> Result<&mut Container> {
        self.containers
            .get_mut(id)
            .ok_or_else(|| Error::NotFound(format!("container {id} not found")))
    }

    pub(super) fn proc_(&self, id: &str, exec_id: Option<&str>) -> Result<&Proc> {
        self.container(id)?.proc_(exec_id)
    }

    /// The live process with this pid: (container id, exec id).
    pub(super) fn find_pid(&self, pid: i32) -> Option<(String, Option<String>)> {
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

pub(super) struct Waiter {
    pub(super) id: String,
    pub(super) exec_id: Option<String>,
    pub(super) tx: Sender<Exit>,
    /// Gone once the Wait call gave up (its client left, or it timed out).
    pub(super) alive: Weak<()>,
}

/// What Wait gets: the exit, or where it will arrive.
pub enum WaitFor {
    Exited(Exit),
    /// Keep the token while waiting on the receiver.
    Pending(Receiver<Exit>, Arc<()>),
}

/// Asks the main loop to change its OOM watches.
pub enum OomCmd {
    Add(String, CgroupDirs),
    Remove(String),
}

pub(super) fn check_id(what: &str, id: &str) -> Result<()> {
    let ok = !id.is_empty()
        && id.len() <= 1024
        && id != "."
        && id != ".."
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "_+-.".contains(c));
    if ok {
        Ok(())
    } else {
        Err(Error::InvalidArgument(format!(
            "invalid {what} {id:?}: want letters, digits, '_', '+', '-' and '.'"
        )))
    }
}

pub(super) fn parse_pid(reply: &Reply) -> Result<i32> {
    std::str::from_utf8(&reply.data)
        .ok()
        .and_then(|s| s.parse().ok())
        .filter(|&p: &i32| p > 0)
        .ok_or_else(|| Error::Internal("helper replied without a pid".into()))
}
