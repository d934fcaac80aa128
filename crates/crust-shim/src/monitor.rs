//! The shim's main loop: signals (SIGCHLD reaping, SIGUSR1 log reopening,
//! SIGTERM), OOM notifications, connections to attach sockets, and
//! deadlines of draining exits; all on the main thread, through one poll(2).

use std::os::fd::AsFd;
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::signal::Signal;
use nix::sys::signalfd::SignalFd;
use nix::sys::wait::{Id, WaitPidFlag, WaitStatus, waitid, waitpid};

use crate::container::{OomCmd, Shim};
use crate::oom::{OomWatch, Token};
use crate::trim;

/// Quiet time after which idle memory is released.
const SETTLE: Duration = Duration::from_secs(2);

/// Runs until the shim is asked to exit.
pub fn run(shim: &Shim, signals: &SignalFd) {
    let mut oom = OomWatch::default();
    let mut idle = Settle::default();
    // Children that exited before the signalfd existed.
    reap(shim);
    loop {
        for cmd in shim.take_oom_cmds() {
            match cmd {
                OomCmd::Add(id, dirs) => oom.add(&id, &dirs),
                OomCmd::Remove(id) => oom.remove(&id),
            }
        }
        if shim.exit_requested() {
            return;
        }
        let drain_deadline = shim.next_deadline();
        let activity = shim.activity().count();
        let mut timeout = poll_timeout([drain_deadline, idle.deadline(activity)]);
        let watches = oom.fds();
        // Creating or deleting a container wakes the loop (its OOM watch
        // changes), so this list is never stale for long.
        let attach = shim.attach_sockets();
        let mut fds = vec![
            PollFd::new(signals.as_fd(), PollFlags::POLLIN),
            PollFd::new(shim.activity().fd().as_fd(), PollFlags::POLLIN),
        ];
        fds.extend(
            watches
                .iter()
                .map(|(fd, _)| PollFd::new(*fd, PollFlags::POLLIN)),
        );
        fds.extend(
            attach
                .iter()
                .map(|s| PollFd::new(s.fd(), PollFlags::POLLIN)),
        );
        if idle.settled(activity) {
            // Last thing before sleeping: whatever runs after this maps
            // its code back in.
            trim::release_idle_memory();
            timeout = poll_timeout([drain_deadline, None]);
        }
        match poll(&mut fds, timeout) {
            Ok(_) | Err(Errno::EINTR) => {}
            Err(e) => log::error!("poll: {e}"),
        }
        let ready: Vec<bool> = fds.iter().map(|f| f.any().unwrap_or(false)).collect();
        drop(fds);
        let (ready_oom, ready_attach) = ready[2..].split_at(watches.len());
        for (sock, _) in attach.iter().zip(ready_attach).filter(|(_, r)| **r) {
            if sock.accept() > 0 {
                // Attach sessions run code; let idle memory go again after.
                shim.touch();
            }
        }
        drop(attach);
        let tokens: Vec<Token> = watches
            .into_iter()
            .zip(ready_oom)
            .filter(|(_, r)| **r)
            .map(|((_, t), _)| t)
            .collect();
        if ready[0] {
            handle_signals(shim, signals);
        }
        if ready[1] {
            let _ = shim.activity().fd().read();
        }
        for token in tokens {
            for id in oom.ready(&token) {
                shim.check_oom(&id, matches!(token, Token::V1(_)));
            }
        }
        shim.expire_draining();
    }
}

fn poll_timeout(deadlines: [Option<Instant>; 2]) -> PollTimeout {
    match deadlines.into_iter().flatten().min() {
        None => PollTimeout::NONE,
        Some(d) => {
            let ms = d.saturating_duration_since(Instant::now()).as_millis() + 1;
            PollTimeout::try_from(ms).unwrap_or(PollTimeout::MAX)
        }
    }
}

/// When activity last changed, to release memory once it has settled.
#[derive(Default)]
struct Settle {
    seen: u64,
    since: Option<Instant>,
    released: Option<u64>,
}

impl Settle {
    /// When to look again, while there is something to release.
    fn deadline(&mut self, activity: u64) -> Option<Instant> {
        if activity != self.seen || self.since.is_none() {
            self.seen = activity;
            self.since = Some(Instant::now());
        }
        (self.released != Some(activity)).then(|| self.since.unwrap_or_else(Instant::now) + SETTLE)
    }

    /// Whether activity has been quiet for SETTLE and memory not yet
    /// released since.
    fn settled(&mut self, activity: u64) -> bool {
        let quiet = activity == self.seen && self.since.is_some_and(|t| t.elapsed() >= SETTLE);
        if quiet && self.released != Some(activity) {
            self.released = Some(activity);
            return true;
        }
        false
    }
}

fn handle_signals(shim: &Shim, signals: &SignalFd) {
    loop {
        let info = match signals.read_signal() {
            Ok(Some(info)) => info,
            Ok(None) => return,
            Err(Errno::EINTR) => continue,
            Err(e) => {
                log::error!("read signalfd: {e}");
                return;
            }
        };
        match Signal::try_from(info.ssi_signo as i32) {
            Ok(Signal::SIGCHLD) => reap(shim),
            Ok(Signal::SIGUSR1) => shim.reopen_logs(),
            Ok(Signal::SIGTERM | Signal::SIGINT) => {
                if !shim.shutdown() {
                    log::warn!(
                        "ignoring {:?}: containers are still in the shim",
                        info.ssi_signo
                    );
                }
            }
            _ => log::debug!("ignoring signal {}", info.ssi_signo),
        }
    }
}

/// Reaps every exited child. Each one is first seen with WNOWAIT, then
/// reaped under the state lock (see `Shim::child_exited`).
fn reap(shim: &Shim) {
    loop {
        let flags = WaitPidFlag::WEXITED | WaitPidFlag::WNOHANG | WaitPidFlag::WNOWAIT;
        let pid = match waitid(Id::All, flags) {
            Ok(WaitStatus::StillAlive) | Err(Errno::ECHILD) => return,
            Ok(status) => match status.pid() {
                Some(pid) => pid,
                None => return,
            },
            Err(Errno::EINTR) => continue,
            Err(e) => {
                log::error!("waitid: {e}");
                return;
            }
        };
        let mut reaped = false;
        shim.child_exited(pid.as_raw(), || {
            let code = match waitpid(pid, Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::Exited(_, code)) => code as u32,
                Ok(WaitStatus::Signaled(_, sig, _)) => 128 + sig as u32,
                _ => return None,
            };
            reaped = true;
            Some(code)
        });
        if !reaped {
            // Never spin on a child something else reaped.
            return;
        }
    }
}
