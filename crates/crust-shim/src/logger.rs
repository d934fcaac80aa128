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
        let _ = nix::unistd::write(std::io::stderr(), &line);
    }

    fn flush(&self) {}
}

/// Warnings and errors only, unless `-debug`: the log is a file that
/// nothing rotates.
pub fn init(debug: bool) {
    static LOGGER: Stderr = Stderr;
    if log::set_logger(&LOGGER).is_ok() {
        log::set_max_level(if debug {
            LevelFilter::Debug
        } else {
            LevelFilter::Warn
        });
    }
}
