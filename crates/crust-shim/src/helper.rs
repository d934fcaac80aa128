//! Runs libcontainer work in a short-lived forked child, the "helper".
//!
//! Why not in the shim itself: libcontainer `chdir`s (which is process-wide
//! and would race the shim's other threads), marks the caller non-dumpable,
//! writes the caller's `oom_score_adj` from the container's spec, and
//! `waitpid`s its own children. In a helper none of that touches the
//! long-lived shim, and the memory the work touches is not left resident in
//! the shim. Container processes the helper creates are reparented to the
//! shim (a child subreaper) when the helper exits.
//!
//! The helper replies over a `SOCK_SEQPACKET` pair: one message, first byte
//! 0 (ok) or 1 (error), then the payload, optionally with one fd attached
//! (a pty master).

use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Mutex;
use std::time::Duration;

use nix::sys::signal::{SigSet, Signal, kill};
use nix::sys::socket::{AddressFamily, SockFlag, SockType, setsockopt, socketpair, sockopt};
use nix::sys::time::TimeVal;
use nix::unistd::{ForkResult, Pid};

use crate::sys;

/// Longest reply; larger ones are cut.
const MAX_REPLY: usize = 60 * 1024;
/// A helper that takes longer than this is killed (hooks, slow mounts).
const TIMEOUT: Duration = Duration::from_secs(120);

/// Pids of helpers not yet reaped: the reaper ignores their exits.
static HELPERS: Mutex<Vec<i32>> = Mutex::new(Vec::new());

#[derive(Default)]
pub struct Reply {
    pub data: Vec<u8>,
    pub fd: Option<OwnedFd>,
}

impl Reply {
    pub fn data(data: impl Into<Vec<u8>>) -> Self {
        Reply {
            data: data.into(),
            fd: None,
        }
    }
}

/// Runs `f` in a helper and returns its reply. Do not call with a lock held
/// that the reaper needs: this blocks until the helper is done.
pub fn run(f: impl FnOnce() -> Result<Reply, String>) -> Result<Reply, String> {
    let (ours, theirs) = socketpair(
        AddressFamily::Unix,
        SockType::SeqPacket,
        None,
        SockFlag::SOCK_CLOEXEC,
    )
    .map_err(|e| format!("socketpair: {e}"))?;
    let shim = nix::unistd::getpid();
    let pid = {
        // Held across fork so the reaper cannot see this helper's exit
        // before its pid is on the list.
        let mut helpers = HELPERS.lock().unwrap_or_else(|e| e.into_inner());
        match sys::fork_process() {
            Err(e) => return Err(format!("fork: {e}")),
            Ok(ForkResult::Child) => {
                drop(ours);
                child_main(shim, theirs, f)
            }
            Ok(ForkResult::Parent { child }) => {
                helpers.push(child.as_raw());
                child
            }
        }
    };
    drop(theirs);
    let _ = setsockopt(
        &ours,
        sockopt::ReceiveTimeout,
        &TimeVal::new(TIMEOUT.as_secs() as i64, 0),
    );
    let mut buf = vec![0u8; MAX_REPLY + 1];
    match sys::recv_with_fd(ours.as_fd(), &mut buf) {
        Ok((0, _)) => Err("helper exited without a reply (see the shim log)".into()),
        Ok((n, fd)) => {
            let payload = buf[1..n].to_vec();
            if buf[0] == 0 {
                Ok(Reply { data: payload, fd })
            } else {
                Err(String::from_utf8_lossy(&payload).into_owned())
            }
        }
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
            let _ = kill(pid, Signal::SIGKILL);
            Err(format!("helper timed out after {}s", TIMEOUT.as_secs()))
        }
        Err(e) => Err(format!("helper reply: {e}")),
    }
}

fn child_main(shim: Pid, sock: OwnedFd, f: impl FnOnce() -> Result<Reply, String>) -> ! {
    // A helper has no business outliving its shim. (Not inherited by the
    // container processes it creates: fork clears it.)
    let _ = nix::sys::prctl::set_pdeathsig(Signal::SIGKILL);
    if nix::unistd::getppid() != shim {
        sys::exit_now(1);
    }
    // Container processes inherit both: the shim blocks signals for its
    // signalfd and ignores SIGPIPE.
    let _ = SigSet::empty().thread_set_mask();
    sys::default_signal(Signal::SIGPIPE);
    let result =
        catch_unwind(AssertUnwindSafe(f)).unwrap_or_else(|_| Err("helper panicked".into()));
    let (mut msg, fd) = match result {
        Ok(reply) => ([vec![0u8], reply.data].concat(), reply.fd),
        Err(e) => ([vec![1u8], e.into_bytes()].concat(), None),
    };
    msg.truncate(MAX_REPLY + 1);
    let _ = sys::send_with_fd(sock.as_fd(), &msg, fd.as_ref().map(|f| f.as_fd()));
    sys::exit_now(0)
}

/// Whether `pid` was a helper; forgets it. Called by the reaper.
pub fn forget(pid: Pid) -> bool {
    let mut helpers = HELPERS.lock().unwrap_or_else(|e| e.into_inner());
    match helpers.iter().position(|&p| p == pid.as_raw()) {
        Some(i) => {
            helpers.swap_remove(i);
            true
        }
        None => false,
    }
}
