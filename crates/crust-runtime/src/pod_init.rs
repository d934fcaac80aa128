//! The init process of a pod that shares one PID namespace among its
//! containers (NamespaceMode POD): it is PID 1 there, reaps orphans, and
//! keeps the namespace alive. crustd runs it as `crustd pod-init`.
//!
//! Every container of the pod sees PID 1, so it is confined at least as
//! tightly as containerd's pause container (a container with SYS_PTRACE
//! could otherwise reach the host through `/proc/1/root`, and any container
//! read the host's mount table through `/proc/1/mountinfo`):
//! - its own mount namespace whose only mount is an empty, read-only tmpfs
//!   (pivot_root into it; the host's tree is detached);
//! - the pod's network, IPC and UTS namespaces (so `/proc/1/net` is the
//!   pod's), and its user namespace when the pod has one;
//! - no capabilities in any set, no_new_privs, not dumpable, uid/gid 65535
//!   (the pod's root in a pod with its own user namespace), every signal
//!   blocked, no file descriptor open, and a seccomp allow-list of the few
//!   calls reaping needs;
//! - ptraced by its own parent (the "guard", outside the pod's PID
//!   namespace, so no container can see or signal it): a process has one
//!   tracer at most, so PTRACE_ATTACH to PID 1 fails with EPERM even for a
//!   container holding CAP_SYS_PTRACE. The guard dies with the init and
//!   the init with the guard (PTRACE_O_EXITKILL).
//!
//! The process tree: crustd runs `crustd pod-init`, which forks the guard
//! and exits (so crustd's wait ends); the guard joins the pod's namespaces,
//! builds the empty root, unshares the PID namespace and forks the init;
//! once the init reports itself confined, the guard prints the init's host
//! PID on stdout and closes it.

use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};

use nix::mount::{MntFlags, MsFlags, mount, umount2};
use nix::sched::{CloneFlags, setns, unshare};
use nix::sys::ptrace;
use nix::sys::signal::{SigSet, SigmaskHow, sigprocmask};
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::{ForkResult, Gid, Pid, Uid, fork};

/// The unprivileged ids the init runs as in a pod without its own user
/// namespace (the pause image's user).
const INIT_ID: u32 = 65535;

/// The pod namespaces the init joins (pinned paths); None: the host's.
#[derive(Debug, Default, Clone)]
pub struct PodNamespaces {
    pub user: Option<PathBuf>,
    pub net: Option<PathBuf>,
    pub ipc: Option<PathBuf>,
    pub uts: Option<PathBuf>,
}

/// Entry point of `crustd pod-init`: forks the guard and returns (the
/// guard and the init never return).
pub fn run(pod_dir: &Path, namespaces: &PodNamespaces) -> std::io::Result<()> {
    // A new session, so signals meant for crustd's group don't reach it.
    let _ = nix::unistd::setsid();
    // SAFETY: a fresh `crustd pod-init` has a single thread (no runtime has
    // started), so fork is sound; the same holds in the guard below.
    match unsafe { fork() }? {
        ForkResult::Parent { .. } => Ok(()),
        ForkResult::Child => {
            let code = match guard(pod_dir, namespaces) {
                Ok(never) => match never {},
                Err(e) => {
                    eprintln!("pod init: {e}");
                    1
                }
            };
            std::process::exit(code)
        }
    }
}

/// Adds the step that failed to an OS error.
fn step<T>(what: &str, r: Result<T, impl Into<std::io::Error>>) -> std::io::Result<T> {
    r.map_err(|e| {
        let e: std::io::Error = e.into();
        std::io::Error::new(e.kind(), format!("{what}: {e}"))
    })
}

fn open_ns(path: &Option<PathBuf>) -> std::io::Result<Option<File>> {
    path.as_ref()
        .map(|p| step(&format!("opening {}", p.display()), File::open(p)))
        .transpose()
}

/// The guard: sets up what the init inherits, forks it, traces it, and
/// reports its PID; then waits for it for the rest of its life.
fn guard(pod_dir: &Path, ns: &PodNamespaces) -> std::io::Result<std::convert::Infallible> {
    // Open every namespace before joining any (paths resolve in the host's
    // mount namespace and with host root's access).
    let user = open_ns(&ns.user)?;
    let others = [
        (open_ns(&ns.net)?, CloneFlags::CLONE_NEWNET, "network"),
        (open_ns(&ns.ipc)?, CloneFlags::CLONE_NEWIPC, "IPC"),
        (open_ns(&ns.uts)?, CloneFlags::CLONE_NEWUTS, "UTS"),
    ];
    if let Some(user) = &user {
        // Single-threaded here, as setns into a user namespace requires.
        step(
            "joining the pod's user namespace",
            setns(user, CloneFlags::CLONE_NEWUSER),
        )?;
        step("setgroups", nix::unistd::setgroups(&[]))?;
        let root_gid = Gid::from_raw(0);
        let root_uid = Uid::from_raw(0);
        step(
            "setresgid",
            nix::unistd::setresgid(root_gid, root_gid, root_gid),
        )?;
        step(
            "setresuid",
            nix::unistd::setresuid(root_uid, root_uid, root_uid),
        )?;
    }
    for (file, flag, name) in &others {
        if let Some(file) = file {
            step(
                &format!("joining the pod's {name} namespace"),
                setns(file, *flag),
            )?;
        }
    }
    drop(others);
    drop(user);
    empty_root(pod_dir)?;
    step(
        "unsharing the PID namespace",
        unshare(CloneFlags::CLONE_NEWPID),
    )?;
    // Changing ids made this process undumpable, and an undumpable child
    // could only be traced with CAP_SYS_PTRACE over the host's user
    // namespace, which a guard in the pod's does not have: the init is
    // dumpable until traced, and waits for the guard's word before it
    // confines itself (and turns undumpable for good).
    // SAFETY: prctl with plain integer arguments.
    if unsafe { libc::prctl(libc::PR_SET_DUMPABLE, 1, 0, 0, 0) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    let (ready_read, ready_write) = step("pipe", nix::unistd::pipe())?;
    let (traced_read, traced_write) = step("pipe", nix::unistd::pipe())?;
    // SAFETY: still single-threaded (see `run`).
    let init = match step("fork", unsafe { fork() })? {
        ForkResult::Child => {
            drop(ready_read);
            drop(traced_write);
            init(traced_read, ready_write, ns.user.is_none())
        }
        ForkResult::Parent { child } => child,
    };
    drop(ready_write);
    drop(traced_read);
    if let Err(e) = ptrace::seize(init, ptrace::Options::PTRACE_O_EXITKILL) {
        let _ = nix::sys::signal::kill(init, nix::sys::signal::Signal::SIGKILL);
        return Err(std::io::Error::other(format!("tracing the init: {e}")));
    }
    // Closing the pipe is the word: traced.
    drop(traced_write);
    // The init writes nothing once confined, or why it could not be.
    let mut report = String::new();
    let _ = File::from(ready_read).read_to_string(&mut report);
    if !report.is_empty() {
        let _ = nix::sys::signal::kill(init, nix::sys::signal::Signal::SIGKILL);
        return Err(std::io::Error::other(report));
    }
    // A closed pipe and no word: the init died before confining itself.
    if let Ok(status) = waitpid(init, Some(WaitPidFlag::WNOHANG | WaitPidFlag::__WALL))
        && matches!(status, WaitStatus::Exited(..) | WaitStatus::Signaled(..))
    {
        return Err(std::io::Error::other("the init exited during set-up"));
    }
    // Before the filter: getpid is not on its list.
    let guard = std::process::id();
    if let Err(e) =
        drop_privileges(ns.user.is_none()).and_then(|()| confine_syscalls(GUARD_SYSCALLS))
    {
        let _ = nix::sys::signal::kill(init, nix::sys::signal::Signal::SIGKILL);
        return Err(e);
    }
    let mut stdout = std::io::stdout();
    step(
        "reporting the init's pid",
        writeln!(stdout, "{init} {guard}"),
    )?;
    let _ = stdout.flush();
    close_fds_from(0);
    follow(init)
}

/// Restarts the traced init at every stop, passing its signal on, until it
/// is gone; then the guard exits too.
fn follow(init: Pid) -> ! {
    loop {
        match waitpid(init, Some(WaitPidFlag::__WALL)) {
            Ok(WaitStatus::Exited(..) | WaitStatus::Signaled(..)) => std::process::exit(0),
            Ok(WaitStatus::Stopped(_, signal)) => {
                let _ = ptrace::cont(init, signal);
            }
            Ok(WaitStatus::PtraceEvent(..) | WaitStatus::PtraceSyscall(..)) => {
                // A group stop (SIGSTOP from the host): the init never stays
                // stopped.
                let _ = ptrace::cont(init, None);
            }
            Ok(_) => {}
            Err(nix::Error::EINTR) => {}
            Err(_) => std::process::exit(0),
        }
    }
}

/// The init: confines itself, says so, and reaps forever.
fn init(traced: OwnedFd, ready: OwnedFd, switch_ids: bool) -> ! {
    // Wait until the guard traces this process (it closes its end).
    let mut word = [0u8; 1];
    let _ = File::from(traced).read(&mut word);
    // Only the pipe to the guard stays open (it is closed once confined).
    let ready = move_fd_to(ready, 3);
    close_fds_from(4);
    for fd in 0..3 {
        let _ = nix::unistd::close(fd);
    }
    let outcome = (|| -> std::io::Result<()> {
        // Signals stay pending forever: PID 1 has nothing to do on any, and a
        // blocked signal never stops the traced init.
        step(
            "blocking signals",
            sigprocmask(SigmaskHow::SIG_BLOCK, Some(&SigSet::all()), None),
        )?;
        drop_privileges(switch_ids)?;
        confine_syscalls(INIT_SYSCALLS)
    })();
    let mut ready = File::from(ready);
    if let Err(e) = outcome {
        let _ = write!(ready, "{e}");
        std::process::exit(1);
    }
    drop(ready);
    reap_forever()
}

/// A fresh mount namespace whose root is an empty read-only tmpfs (mounted
/// over the pod dir in this namespace only); the host's tree is detached.
fn empty_root(pod_dir: &Path) -> std::io::Result<()> {
    step(
        "unsharing the mount namespace",
        unshare(CloneFlags::CLONE_NEWNS),
    )?;
    step(
        "making mounts private",
        mount(
            None::<&str>,
            "/",
            None::<&str>,
            MsFlags::MS_REC | MsFlags::MS_PRIVATE,
            None::<&str>,
        ),
    )?;
    let flags = MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC;
    step(
        "mounting the init's root",
        mount(
            Some("pod-init"),
            pod_dir,
            Some("tmpfs"),
            flags,
            Some("size=4k,nr_inodes=4,mode=0555"),
        ),
    )?;
    step("entering the init's root", nix::unistd::chdir(pod_dir))?;
    // pivot_root(".", "."): the old root is stacked under the new one and
    // detached right after (runc does the same).
    step("pivot_root", nix::unistd::pivot_root(".", "."))?;
    step(
        "detaching the host's root",
        umount2(".", MntFlags::MNT_DETACH),
    )?;
    step("chdir /", nix::unistd::chdir("/"))?;
    step(
        "making the init's root read-only",
        mount(
            None::<&str>,
            "/",
            None::<&str>,
            MsFlags::MS_REMOUNT | MsFlags::MS_BIND | MsFlags::MS_RDONLY | flags,
            None::<&str>,
        ),
    )
}

/// No capability in any set, then no way back: no_new_privs and not
/// dumpable. `switch_ids`: become 65535:65535 (in a pod with its own user
/// namespace the process already is the pod's root, a host-unprivileged
/// id, and 65535 may not be mapped there).
fn drop_privileges(switch_ids: bool) -> std::io::Result<()> {
    use caps::CapSet;
    let cap = |what: &str, r: Result<(), caps::errors::CapsError>| {
        r.map_err(|e| std::io::Error::other(format!("{what}: {e}")))
    };
    cap(
        "clearing the ambient set",
        caps::clear(None, CapSet::Ambient),
    )?;
    cap(
        "clearing the bounding set",
        caps::clear(None, CapSet::Bounding),
    )?;
    if switch_ids {
        let gid = Gid::from_raw(INIT_ID);
        let uid = Uid::from_raw(INIT_ID);
        step("setgroups", nix::unistd::setgroups(&[gid]))?;
        step("setresgid", nix::unistd::setresgid(gid, gid, gid))?;
        step("setresuid", nix::unistd::setresuid(uid, uid, uid))?;
    }
    for set in [CapSet::Effective, CapSet::Permitted, CapSet::Inheritable] {
        cap("clearing capabilities", caps::clear(None, set))?;
    }
    // SAFETY: prctl with plain integer arguments.
    unsafe {
        if libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0 {
            return Err(std::io::Error::last_os_error());
        }
        if libc::prctl(libc::PR_SET_DUMPABLE, 0, 0, 0, 0) != 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}

/// What the init calls: closing the pipe to the guard once confined, then
/// wait4 and sleeping; exiting.
const INIT_SYSCALLS: &[&str] = &[
    "close",
    "wait4",
    "waitid",
    "nanosleep",
    "clock_nanosleep",
    "restart_syscall",
    "rt_sigreturn",
    "exit",
    "exit_group",
];

/// What the guard calls while following the init.
const GUARD_SYSCALLS: &[&str] = &[
    "write",
    "close",
    "close_range",
    "wait4",
    "waitid",
    "ptrace",
    "restart_syscall",
    "rt_sigreturn",
    "exit",
    "exit_group",
];

/// Loads a seccomp allow-list: anything else fails with EPERM (not a kill:
/// a call a libc update adds must not take the pod down with it).
fn confine_syscalls(allowed: &[&str]) -> std::io::Result<()> {
    use libseccomp::{ScmpAction, ScmpFilterContext, ScmpSyscall};
    let seccomp =
        |e: libseccomp::error::SeccompError| std::io::Error::other(format!("seccomp filter: {e}"));
    let mut filter = ScmpFilterContext::new(ScmpAction::Errno(libc::EPERM)).map_err(seccomp)?;
    for name in allowed {
        let syscall = ScmpSyscall::from_name(name).map_err(seccomp)?;
        filter
            .add_rule(ScmpAction::Allow, syscall)
            .map_err(seccomp)?;
    }
    filter.load().map_err(seccomp)
}

/// Closes every file descriptor from `first` on: nothing of crustd's (or
/// of the pipes it reads) stays open in a process the pod can see.
fn close_fds_from(first: u32) {
    // SAFETY: close_range on descriptors nothing in this process uses
    // afterwards (std's stdio is never written again).
    unsafe {
        libc::syscall(libc::SYS_close_range, first, u32::MAX, 0u32);
    }
}

/// Puts `fd` at descriptor number `target` (closing what was there).
fn move_fd_to(fd: OwnedFd, target: i32) -> OwnedFd {
    use std::os::fd::FromRawFd;
    if fd.as_raw_fd() == target {
        return fd;
    }
    // SAFETY: dup2 onto a descriptor this process owns from now on.
    unsafe {
        if libc::dup2(fd.as_raw_fd(), target) < 0 {
            return fd;
        }
        OwnedFd::from_raw_fd(target)
    }
}

fn reap_forever() -> ! {
    loop {
        match waitpid(Pid::from_raw(-1), None) {
            Ok(_) | Err(nix::Error::EINTR) => {}
            Err(nix::Error::ECHILD) => {
                std::thread::sleep(std::time::Duration::from_secs(3600));
            }
            Err(_) => std::thread::sleep(std::time::Duration::from_millis(100)),
        }
    }
}

/// A running pod init: PID 1 of the pod and its guard (host PIDs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PodInit {
    pub init: u32,
    pub guard: u32,
}

/// Reads the guard's report: `<init pid> <guard pid>`.
fn parse_report(stdout: &str) -> Option<PodInit> {
    let mut words = stdout.split_whitespace();
    let init = words.next()?.parse().ok().filter(|p| *p > 0)?;
    let guard = words.next()?.parse().ok().filter(|p| *p > 0)?;
    words.next().is_none().then_some(PodInit { init, guard })
}

/// Starts a pod init with `binary pod-init` in the pod's namespaces.
pub async fn spawn(
    binary: &Path,
    pod_dir: &Path,
    namespaces: &PodNamespaces,
) -> Result<PodInit, crate::RuntimeError> {
    let mut command = tokio::process::Command::new(binary);
    command.arg("pod-init").arg("--pod").arg(pod_dir);
    for (flag, path) in [
        ("--userns", &namespaces.user),
        ("--netns", &namespaces.net),
        ("--ipcns", &namespaces.ipc),
        ("--utsns", &namespaces.uts),
    ] {
        if let Some(path) = path {
            command.arg(flag).arg(path);
        }
    }
    let output = command
        .env_remove("NOTIFY_SOCKET")
        .stdin(std::process::Stdio::null())
        .output()
        .await
        .map_err(|e| crate::RuntimeError::Internal(format!("cannot start pod init: {e}")))?;
    match parse_report(&String::from_utf8_lossy(&output.stdout)) {
        Some(init) if output.status.success() => Ok(init),
        _ => Err(crate::RuntimeError::Internal(format!(
            "pod init failed ({}): {}",
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allow_lists_name_real_syscalls() {
        for name in INIT_SYSCALLS.iter().chain(GUARD_SYSCALLS) {
            assert!(
                libseccomp::ScmpSyscall::from_name(name).is_ok(),
                "{name} is not a syscall libseccomp knows"
            );
        }
    }

    #[test]
    fn the_guards_report_names_two_pids() {
        assert_eq!(
            parse_report("42 41\n"),
            Some(PodInit {
                init: 42,
                guard: 41
            })
        );
        for bad in ["", "42", "42 0", "0 41", "x 41", "42 41 40"] {
            assert_eq!(parse_report(bad), None, "{bad:?}");
        }
    }
}
