//! Signalling processes whose PIDs crust stored: never PID 0 or a negative
//! one (kill(0, ..) is crustd's own process group, kill(-n, ..) a whole
//! group), and never a process that merely reuses a stored PID.
//!
//! A process is named by its PID and its start time (field 22 of
//! `/proc/<pid>/stat`, clock ticks since boot), recorded when it was
//! spawned. [`signal_if_same`] opens a pidfd first and only then compares
//! the start time, so the signal goes through a handle on exactly the
//! process that was checked (a pidfd cannot be redirected to a later one).

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

/// Why a stored PID was not signalled.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SignalError {
    #[error("refusing to signal pid {0}: not a single process")]
    BadPid(i64),
    #[error("refusing to signal pid {0}: its start time was never recorded")]
    Unverified(u32),
    #[error("pid {0} is gone")]
    Gone(u32),
    #[error("pid {pid} is another process now (started at {now}, not {recorded})")]
    Reused { pid: u32, recorded: u64, now: u64 },
    #[error("signalling pid {pid}: {error}")]
    Os { pid: u32, error: String },
}

/// A process's start time in clock ticks since boot, `None` when it does
/// not exist (or PID is not a single process).
pub fn start_time(pid: u32) -> Option<u64> {
    if pid == 0 || pid > i32::MAX as u32 {
        return None;
    }
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    parse_start_time(&stat)
}

/// Field 22 of a /proc/<pid>/stat line; the comm (field 2) may hold spaces
/// and parentheses, so fields are counted after its last ')'.
fn parse_start_time(stat: &str) -> Option<u64> {
    crust_shim_proto::proc::start_time(stat)
}

fn pidfd_open(pid: u32) -> std::io::Result<OwnedFd> {
    // SAFETY: pidfd_open takes a pid and flags and returns a new fd or -1.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid as libc::pid_t, 0) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: the fd was just returned to us and nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

/// Sends `signal` to `pid` only if it is the process that started at
/// `recorded_start` (see the module docs). `pid` 0, PIDs that do not fit a
/// pid_t, and a start time never recorded (0) are refused.
pub fn signal_if_same(
    pid: u32,
    recorded_start: u64,
    signal: nix::sys::signal::Signal,
) -> Result<(), SignalError> {
    if recorded_start == 0 && pid != 0 && pid <= i32::MAX as u32 {
        return Err(SignalError::Unverified(pid));
    }
    signal_if(pid, signal, |pid| match start_time(pid) {
        Some(now) if now == recorded_start => Ok(()),
        Some(now) => Err(SignalError::Reused {
            pid,
            recorded: recorded_start,
            now,
        }),
        None => Err(SignalError::Gone(pid)),
    })
}

/// Sends `signal` to `pid` if `is_it(pid)` (which reads /proc/<pid>/...)
/// says it is the process meant. The pidfd is opened before `is_it` runs:
/// if the process it holds is still alive, /proc/<pid> is that process, so
/// what `is_it` saw is what gets the signal.
pub fn signal_if(
    pid: u32,
    signal: nix::sys::signal::Signal,
    is_it: impl FnOnce(u32) -> Result<(), SignalError>,
) -> Result<(), SignalError> {
    if pid == 0 || pid > i32::MAX as u32 {
        return Err(SignalError::BadPid(i64::from(pid)));
    }
    let pidfd = match pidfd_open(pid) {
        Ok(fd) => fd,
        Err(e) if e.raw_os_error() == Some(libc::ESRCH) => return Err(SignalError::Gone(pid)),
        Err(e) => {
            return Err(SignalError::Os {
                pid,
                error: e.to_string(),
            });
        }
    };
    is_it(pid)?;
    // SAFETY: pidfd_send_signal(fd, sig, NULL, 0) with a valid pidfd.
    let r = unsafe {
        libc::syscall(
            libc::SYS_pidfd_send_signal,
            pidfd.as_raw_fd(),
            signal as libc::c_int,
            std::ptr::null::<libc::siginfo_t>(),
            0,
        )
    };
    if r < 0 {
        let e = std::io::Error::last_os_error();
        if e.raw_os_error() == Some(libc::ESRCH) {
            return Err(SignalError::Gone(pid));
        }
        return Err(SignalError::Os {
            pid,
            error: e.to_string(),
        });
    }
    Ok(())
}

/// [`signal_if_same`] for a signed PID as some APIs give it: zero and
/// negative PIDs (process groups) are refused.
pub fn signal_if_same_raw(
    pid: i64,
    recorded_start: u64,
    signal: nix::sys::signal::Signal,
) -> Result<(), SignalError> {
    if pid <= 0 || pid > i64::from(i32::MAX) {
        return Err(SignalError::BadPid(pid));
    }
    signal_if_same(pid as u32, recorded_start, signal)
}

#[cfg(test)]
mod tests {
    use super::*;
    use nix::sys::signal::Signal;

    #[test]
    fn stat_start_time_is_field_22_even_with_odd_comms() {
        let line = "1234 (a b) c)) S 1 1234 1234 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 987654 1000 10 18446744073709551615";
        assert_eq!(parse_start_time(line), Some(987654));
        assert_eq!(parse_start_time("garbage"), None);
    }

    #[test]
    fn zero_and_negative_pids_are_refused() {
        assert_eq!(
            signal_if_same(0, 1, Signal::SIGUSR1),
            Err(SignalError::BadPid(0))
        );
        for pid in [0, -1, -(std::process::id() as i64)] {
            assert_eq!(
                signal_if_same_raw(pid, 1, Signal::SIGUSR1),
                Err(SignalError::BadPid(pid))
            );
        }
        assert!(matches!(
            signal_if_same(u32::MAX, 1, Signal::SIGUSR1),
            Err(SignalError::BadPid(_))
        ));
    }

    #[test]
    fn a_live_process_with_another_start_time_is_not_signalled() {
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .unwrap();
        let pid = child.id();
        let real = start_time(pid).expect("child's start time");
        // Recorded for an earlier process with the same pid: refused, and
        // the child (which would die of SIGTERM) lives on.
        let err = signal_if_same(pid, real - 1, Signal::SIGTERM).unwrap_err();
        assert!(matches!(err, SignalError::Reused { .. }), "{err}");
        assert_eq!(
            signal_if_same(pid, 0, Signal::SIGTERM),
            Err(SignalError::Unverified(pid))
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
        assert!(
            child.try_wait().unwrap().is_none(),
            "the child was signalled"
        );
        // The recorded one is signalled.
        signal_if_same(pid, real, Signal::SIGTERM).unwrap();
        let status = child.wait().unwrap();
        use std::os::unix::process::ExitStatusExt;
        assert_eq!(status.signal(), Some(libc::SIGTERM));
        // Reaped: gone.
        assert_eq!(
            signal_if_same(pid, real, Signal::SIGTERM),
            Err(SignalError::Gone(pid))
        );
    }
}
