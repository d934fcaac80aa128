//! The init process of a pod that shares one PID namespace among its
//! containers (NamespaceMode POD): it is PID 1 there, reaps orphans, and
//! keeps the namespace alive. crustd runs it as `crustd pod-init`.
//!
//! In a pod with its own user namespace the PID namespace must be owned by
//! it (containers joining from inside could not enter one owned by the
//! host's, and could not mount its /proc): the init joins the pod's user
//! namespace first, then drops to the pod's root (a host-unprivileged id)
//! and stays undumpable, so processes in the pod cannot ptrace their way
//! into it.

use std::path::Path;

use nix::sched::{CloneFlags, unshare};
use nix::sys::wait::waitpid;
use nix::unistd::{ForkResult, Pid, fork};

/// Entry point of `crustd pod-init`: prints the init's host PID and
/// returns; the init itself never returns. `userns`: the pod's pinned user
/// namespace, when it has one.
pub fn run(userns: Option<&Path>) -> std::io::Result<()> {
    // A new session, so signals meant for crustd's group don't reach it.
    let _ = nix::unistd::setsid();
    if let Some(path) = userns {
        // Single-threaded here, as setns into a user namespace requires.
        nix::sched::setns(std::fs::File::open(path)?, CloneFlags::CLONE_NEWUSER)?;
    }
    unshare(CloneFlags::CLONE_NEWPID)?;
    if userns.is_some() {
        use nix::unistd::{Gid, Uid};
        nix::unistd::setgroups(&[])?;
        nix::unistd::setresgid(Gid::from_raw(0), Gid::from_raw(0), Gid::from_raw(0))?;
        nix::unistd::setresuid(Uid::from_raw(0), Uid::from_raw(0), Uid::from_raw(0))?;
        // SAFETY: prctl(PR_SET_DUMPABLE) takes plain integers.
        if unsafe { libc::prctl(libc::PR_SET_DUMPABLE, 0, 0, 0, 0) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
        nix::unistd::chdir("/")?;
    }
    // SAFETY: this process has a single thread here (a fresh `crustd
    // pod-init` before any runtime starts), so fork is sound.
    match unsafe { fork() }? {
        ForkResult::Parent { child } => {
            println!("{child}");
            Ok(())
        }
        ForkResult::Child => {
            // Let go of crustd's pipes: it reads our stdout to EOF.
            if let Ok(null) = std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .open("/dev/null")
            {
                use std::os::fd::AsRawFd;
                for fd in 0..3 {
                    let _ = nix::unistd::dup2(null.as_raw_fd(), fd);
                }
            }
            reap_forever()
        }
    }
}

fn reap_forever() -> ! {
    // As PID 1 the kernel only delivers signals we handle; reaping is all
    // there is to do.
    loop {
        match waitpid(Pid::from_raw(-1), None) {
            Ok(_) => {}
            Err(nix::Error::ECHILD) => {
                std::thread::sleep(std::time::Duration::from_secs(3600));
            }
            Err(_) => std::thread::sleep(std::time::Duration::from_millis(100)),
        }
    }
}

/// Starts a pod init with `binary pod-init` (in the pod's user namespace
/// `userns`, if any); returns its host PID.
pub async fn spawn(
    binary: &Path,
    pod_dir: &Path,
    userns: Option<&Path>,
) -> Result<u32, crate::RuntimeError> {
    let mut command = tokio::process::Command::new(binary);
    command.arg("pod-init").arg("--pod").arg(pod_dir);
    if let Some(userns) = userns {
        command.arg("--userns").arg(userns);
    }
    let output = command
        .stdin(std::process::Stdio::null())
        .output()
        .await
        .map_err(|e| crate::RuntimeError::Internal(format!("cannot start pod init: {e}")))?;
    let pid = String::from_utf8_lossy(&output.stdout)
        .trim()
        .parse::<u32>();
    match pid {
        Ok(pid) if output.status.success() => Ok(pid),
        _ => Err(crate::RuntimeError::Internal(format!(
            "pod init failed ({}): {}",
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        ))),
    }
}
