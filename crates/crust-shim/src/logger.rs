//! A minimal `log` backend: one line per record on stderr (the shim's log
//! file, or containerd's `log` FIFO), written with a single `write(2)` and
//! no lock, so a forked helper can never deadlock on it.

use std::time::SystemTime;

use log::{LevelFilter, Log, Metadata, Record};

use crate::timefmt::push_rfc3339_nano;

struct Stderr;

impl Log for Stderr {
    fn enabled(&self, m: &Metadata) -> bool {
        m.level() <= log::max_level()
    }

    fn log(&self, r: &Record) {
        if !self.enabled(r.metadata()) {
            return;
        }
        let mut line = Vec::with_capacity(128);
        push_rfc3339_nano(&mut line, SystemTime::now());
        let text = format!(
            " {} crust-shim[{}]: {}\n",
            r.level(),
            std::process::id(),
            r.args()
        );
        line.extend_from_slice(text.as_bytes());
        let fd = LOG_FD.load(std::sync::atomic::Ordering::Relaxed);
        if fd >= 0 {
            // SAFETY: LOG_FD is a descriptor this process dup'ed at init and
            // never closes; a forked child inherits it (or it was closed by
            // libcontainer before exec, and write fails harmlessly).
            let fd = unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) };
            let _ = nix::unistd::write(fd, &line);
        }
    }

    fn flush(&self) {}
}

/// The shim's own log: a private copy of the stderr it started with. Not
/// fd 2 itself: libcontainer's container init (forked from the shim)
/// points fd 2 at the container's stderr, and runtime log lines must never
/// land in a container's log.
static LOG_FD: std::sync::atomic::AtomicI32 = std::sync::atomic::AtomicI32::new(-1);

/// Warnings and errors only, unless `-debug`: the log is a file that
/// nothing rotates.
pub fn init(debug: bool) {
    static LOGGER: Stderr = Stderr;
    if let Ok(fd) = nix::fcntl::fcntl(2, nix::fcntl::FcntlArg::F_DUPFD_CLOEXEC(3)) {
        LOG_FD.store(fd, std::sync::atomic::Ordering::Relaxed);
    }
    if log::set_logger(&LOGGER).is_ok() {
        log::set_max_level(if debug {
            LevelFilter::Debug
        } else {
            LevelFilter::Warn
        });
    }
}
