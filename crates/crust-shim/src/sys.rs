//! The few raw system calls the shim needs that have no safe wrapper.
//! Every `unsafe` block of the crate lives here.

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::process::Command;

use nix::sys::signal::{SigHandler, Signal};
use nix::unistd::{ForkResult, fork};

/// Forks the current process. In the child only the calling thread exists,
/// so the child must not take locks other threads may have held.
pub fn fork_process() -> io::Result<ForkResult> {
    // SAFETY: the only caller (helper::run) runs nothing in the child but
    // its closure, which takes no lock of this process, and then `_exit`s.
    unsafe { fork() }.map_err(io::Error::from)
}

/// Ends the process at once: no destructors, no atexit handlers, no stdio
/// flush; what a forked child must do instead of returning.
pub fn exit_now(code: i32) -> ! {
    // SAFETY: `_exit` is async-signal-safe and never returns.
    unsafe { libc::_exit(code) }
}

/// Caps glibc at one malloc arena: every thread would otherwise get its own
/// arena, and each one costs resident memory that an idle shim never gives
/// back.
pub fn limit_malloc_arenas() {
    // SAFETY: mallopt only changes allocator tuning; called before any thread exists.
    unsafe { libc::mallopt(libc::M_ARENA_MAX, 1) };
}

/// Hands freed heap pages back to the kernel, so that a burst of work
/// (creating a container, a large log line) does not stay resident.
pub fn trim_heap() {
    // SAFETY: malloc_trim is thread-safe and has no preconditions.
    unsafe { libc::malloc_trim(0) };
}

/// Resets the disposition of `sig` to the default. The shim ignores
/// SIGPIPE (Rust's runtime does), and ignored signals survive exec: the
/// helper resets them before creating container processes.
pub fn default_signal(sig: Signal) {
    // SAFETY: installing SIG_DFL involves no handler code.
    let _ = unsafe { nix::sys::signal::signal(sig, SigHandler::SigDfl) };
}

/// Sets the window size of the terminal `fd`.
pub fn set_winsize(fd: BorrowedFd<'_>, cols: u16, rows: u16) -> io::Result<()> {
    let ws = libc::winsize {
        ws_row: rows,
        ws_col: cols,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCSWINSZ reads one `winsize` from the valid pointer given.
    let rc = unsafe { libc::ioctl(fd.as_raw_fd(), libc::TIOCSWINSZ, &ws) };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Makes the command's child the leader of a new session, detached from the
/// caller's terminal and process group.
pub fn new_session(cmd: &mut Command) {
    // SAFETY: setsid is async-signal-safe, as required between fork and exec.
    unsafe {
        cmd.pre_exec(|| {
            nix::unistd::setsid().map_err(io::Error::from)?;
            Ok(())
        });
    }
}

/// Sends `data` on a unix socket, with `fd` attached when given.
pub fn send_with_fd(
    sock: BorrowedFd<'_>,
    data: &[u8],
    fd: Option<BorrowedFd<'_>>,
) -> io::Result<()> {
    use nix::sys::socket::{ControlMessage, MsgFlags, sendmsg};
    let iov = [io::IoSlice::new(data)];
    let raw = fd.map(|f| [f.as_raw_fd()]);
    let cmsgs: Vec<ControlMessage> = raw.iter().map(|r| ControlMessage::ScmRights(r)).collect();
    sendmsg::<()>(sock.as_raw_fd(), &iov, &cmsgs, MsgFlags::empty(), None)?;
    Ok(())
}

/// Receives one message from a unix socket, and the first fd attached to it.
pub fn recv_with_fd(sock: BorrowedFd<'_>, buf: &mut [u8]) -> io::Result<(usize, Option<OwnedFd>)> {
    use nix::sys::socket::{ControlMessageOwned, MsgFlags, recvmsg};
    use std::os::fd::FromRawFd;
    let mut cmsg = nix::cmsg_space!([std::os::fd::RawFd; 4]);
    let mut iov = [io::IoSliceMut::new(buf)];
    let msg = loop {
        match recvmsg::<()>(
            sock.as_raw_fd(),
            &mut iov,
            Some(&mut cmsg),
            MsgFlags::MSG_CMSG_CLOEXEC,
        ) {
            Err(nix::errno::Errno::EINTR) => continue,
            r => break r?,
        }
    };
    let mut owned = Vec::new();
    for c in msg.cmsgs()? {
        if let ControlMessageOwned::ScmRights(fds) = c {
            for raw in fds {
                // SAFETY: the kernel just installed `raw` in this process for
                // this message; nothing else knows or owns it.
                owned.push(unsafe { OwnedFd::from_raw_fd(raw) });
            }
        }
    }
    Ok((msg.bytes, owned.into_iter().next()))
}

/// Sends signal number `sig` (real-time signals included) to `pid`.
pub fn send_signal(pid: i32, sig: i32) -> io::Result<()> {
    // SAFETY: kill(2) takes plain integers and touches no memory of ours.
    if unsafe { libc::kill(pid, sig) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Unmaps the resident pages of `[addr, addr + len)`. Only for read-only
/// file mappings without private copies: their content comes back from
/// the page cache on the next access.
pub fn drop_file_pages(addr: usize, len: usize) -> io::Result<()> {
    // SAFETY: the caller passes a whole mapping from /proc/self/smaps that
    // is not writable and holds no anonymous (copied-on-write) page, so
    // discarding its pages loses nothing; no Rust reference can point into
    // it as writable memory.
    if unsafe { libc::madvise(addr as *mut libc::c_void, len, libc::MADV_DONTNEED) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Closes every fd above stderr. The shim daemon runs this first: it must
/// not keep open what its starter happened to leak to it (a runtime's
/// pipes, a test runner's output), or their readers never see EOF.
pub fn close_inherited_fds() {
    // SAFETY: no fd above 2 is owned by anything yet when this runs.
    unsafe { libc::close_range(3, u32::MAX, 0) };
}
