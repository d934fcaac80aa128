//! Exits: reaped pids become exits of the processes they were, reported
//! (Wait, TaskExit) once their output drained; OOM kills are reported too.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use containerd_shim_protos::events::task::{TaskExit, TaskOOM};

use super::state::{Container, State, Waiter};
use super::{Exit, IO_GRACE, Result, Shim, UNCLAIMED_TTL, WaitFor};
use crate::timefmt::to_timestamp;
use crate::{events, helper};

impl Shim {
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
            st = self
                .changed
                .wait_timeout(st, left)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }

    /// Wait without a thread parked on the state: the exit, or a channel
    /// it will be sent on (dropped if the process is deleted first).
    pub fn wait_for(&self, id: &str, exec_id: Option<&str>) -> Result<WaitFor> {
        let mut st = self.lock();
        if let Some(exit) = st.proc_(id, exec_id)?.exit {
            return Ok(WaitFor::Exited(exit));
        }
        st.waiters.retain(|w| w.alive.strong_count() > 0);
        let (tx, rx) = crossbeam_channel::bounded(1);
        let token = Arc::new(());
        st.waiters.push(Waiter {
            id: id.to_owned(),
            exec_id: exec_id.map(str::to_owned),
            tx,
            alive: Arc::downgrade(&token),
        });
        Ok(WaitFor::Pending(rx, token))
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
                st.unclaimed
                    .retain(|_, e| e.at.elapsed().map_or(true, |age| age < UNCLAIMED_TTL));
                st.unclaimed.insert(pid, exit);
            }
        }
    }

    pub(super) fn record_exit(&self, st: &mut State, id: &str, exec_id: Option<&str>, exit: Exit) {
        let Some(p) = st
            .containers
            .get_mut(id)
            .and_then(|c| c.proc_mut(exec_id).ok())
        else {
            return;
        };
        if p.reaped.is_some() {
            return;
        }
        p.reaped = Some(exit);
        self.report_or_defer(st, id, exec_id);
    }

    /// Reports a reaped exit now, or gives its output IO_GRACE to drain.
    pub(super) fn report_or_defer(&self, st: &mut State, id: &str, exec_id: Option<&str>) {
        if !self.report_exit(st, id, exec_id, false) {
            st.draining.push((
                Instant::now() + IO_GRACE,
                id.to_owned(),
                exec_id.map(str::to_owned),
            ));
            self.wake();
        }
    }

    /// Reports a reaped exit once its output drained, or when `force`d.
    /// Returns whether it is reported now.
    pub(super) fn report_exit(
        &self,
        st: &mut State,
        id: &str,
        exec_id: Option<&str>,
        force: bool,
    ) -> bool {
        let Some(c) = st.containers.get_mut(id) else {
            return false;
        };
        let Ok(p) = c.proc_mut(exec_id) else {
            return false;
        };
        let Some(exit) = p.reaped else { return false };
        if p.exit.is_some() {
            return true;
        }
        if p.starting {
            // Start reports it, after its own event: TaskExit never
            // precedes TaskStart / TaskExecStarted.
            return false;
        }
        if !force && !p.io.drained() {
            return false;
        }
        p.exit = Some(exit);
        p.io.exited();
        let pid = p.pid as u32;
        if exec_id.is_none() {
            // Before TaskExit, so the runtime knows the reason at the exit.
            self.check_oom_of(c, false);
        }
        log::info!(
            "{id} {} exited with {}",
            exec_id.unwrap_or("init"),
            exit.status
        );
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
        st.waiters.retain(|w| {
            let ours = w.id == id && w.exec_id.as_deref() == exec_id;
            if ours {
                let _ = w.tx.try_send(exit);
            }
            !ours
        });
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
