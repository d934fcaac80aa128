//! Gives back memory an idle shim does not use, once activity settles.
//!
//! - The heap: `malloc_trim` returns freed pages to the kernel.
//! - Code and read-only data of the binary and its libraries: file pages
//!   stay mapped after use, and the kernel maps up to 64 KiB around every
//!   page fault ("fault-around"), so a few RPCs leave megabytes of text
//!   resident that an idle shim never executes. Unmapping them from the
//!   shim costs nothing: they live on in the page cache, shared with every
//!   other shim, and fault back in when code runs again. Mappings that are
//!   writable or hold private copies (relocated data) are left alone.

use std::fs;
use std::sync::atomic::{AtomicU64, Ordering};

use nix::sys::eventfd::{EfdFlags, EventFd};

use crate::sys;

/// Counts activity (requests, exits, published events) and wakes the main
/// loop, which releases idle memory once the count stops moving. Work that
/// runs code after a release without counting here leaves that code mapped
/// until the next release.
pub struct Activity {
    count: AtomicU64,
    wake: EventFd,
}

impl Activity {
    pub fn new() -> std::io::Result<Activity> {
        Ok(Activity {
            count: AtomicU64::new(0),
            wake: EventFd::from_value_and_flags(0, EfdFlags::EFD_CLOEXEC | EfdFlags::EFD_NONBLOCK)?,
        })
    }

    pub fn touch(&self) {
        self.count.fetch_add(1, Ordering::Relaxed);
        self.wake();
    }

    pub fn count(&self) -> u64 {
        self.count.load(Ordering::Relaxed)
    }

    /// Wakes the main loop without counting activity.
    pub fn wake(&self) {
        let _ = self.wake.write(1);
    }

    /// Readable when woken; the main loop reads it to rearm.
    pub fn fd(&self) -> &EventFd {
        &self.wake
    }
}

/// Releases what it can.
pub fn release_idle_memory() {
    sys::trim_heap();
    let ranges: Vec<(usize, usize)> = match fs::read_to_string("/proc/self/smaps") {
        Ok(smaps) => parse(&smaps)
            .iter()
            .filter(|m| m.droppable())
            .map(|m| (m.start, m.end - m.start))
            .collect(),
        Err(_) => return,
    };
    // Tight loop, nothing else: code run after a range is dropped comes back.
    for (start, len) in ranges {
        let _ = sys::drop_file_pages(start, len);
    }
}

#[derive(Debug, Default, PartialEq)]
struct Mapping {
    start: usize,
    end: usize,
    writable: bool,
    file: bool,
    rss_kib: u64,
    anon_kib: u64,
}

impl Mapping {
    fn droppable(&self) -> bool {
        self.file && !self.writable && self.anon_kib == 0 && self.rss_kib > 0
    }
}

fn parse(smaps: &str) -> Vec<Mapping> {
    let mut out: Vec<Mapping> = Vec::new();
    for line in smaps.lines() {
        let mut fields = line.split_whitespace();
        let first = fields.next().unwrap_or_default();
        if let Some((start, end)) = first.split_once('-')
            && let (Ok(start), Ok(end)) = (
                usize::from_str_radix(start, 16),
                usize::from_str_radix(end, 16),
            )
        {
            let perms = fields.next().unwrap_or_default();
            let path = fields.nth(3).unwrap_or_default();
            out.push(Mapping {
                start,
                end,
                writable: perms.as_bytes().get(1) != Some(&b'-'),
                // Named files only: not [heap], [stack], [vdso], nor a
                // file deleted since it was mapped.
                file: path.starts_with('/') && !line.ends_with("(deleted)"),
                ..Default::default()
            });
            continue;
        }
        let Some(m) = out.last_mut() else { continue };
        let mut kib = || fields.next().and_then(|v| v.parse().ok()).unwrap_or(0);
        match first {
            "Rss:" => m.rss_kib = kib(),
            // A private mapping's copied-on-write pages count here.
            "Anonymous:" => m.anon_kib = kib(),
            _ => {}
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_clean_read_only_file_mappings() {
        let smaps = "\
00400000-00a80000 r-xp 001e7000 fe:00 5458795                            /usr/bin/crust-shim
Rss:                2368 kB
Anonymous:             0 kB
7f00-7f10 r--p 00000000 fe:00 1 /usr/lib/libc.so.6
Rss:                   8 kB
Anonymous:             4 kB
7f20-7f30 rw-p 00000000 fe:00 1 /usr/lib/libc.so.6
Rss:                   8 kB
Anonymous:             0 kB
7f40-7f50 r-xp 00000000 00:00 0 [vdso]
Rss:                   4 kB
Anonymous:             0 kB
7f60-7f70 r-xp 00000000 fe:00 9 /old/bin (deleted)
Rss:                   4 kB
Anonymous:             0 kB
";
        let maps = parse(smaps);
        assert_eq!(maps.len(), 5);
        let droppable: Vec<bool> = maps.iter().map(Mapping::droppable).collect();
        assert_eq!(droppable, [true, false, false, false, false]);
        assert_eq!(
            (maps[0].start, maps[0].end, maps[0].rss_kib),
            (0x400000, 0xa80000, 2368)
        );
    }
}
