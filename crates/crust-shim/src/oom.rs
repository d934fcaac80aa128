//! OOM notifications, watched by the shim's main loop.
//!
//! - cgroup v1: an eventfd registered through `cgroup.event_control` for
//!   the memory cgroup's `memory.oom_control`; the kernel signals it on
//!   every OOM in the cgroup.
//! - cgroup v2: inotify on `memory.events`, which the kernel modifies when
//!   a counter changes.
//!
//! Either way the `oom_kill` counter is the truth (see `CgroupDirs`); it is
//! checked again when the container exits, so an OOM kill is reported even
//! if the notification loses the race with the exit.

use std::collections::HashMap;
use std::fs::{self, File};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};

use nix::sys::eventfd::{EfdFlags, EventFd};
use nix::sys::inotify::{AddWatchFlags, InitFlags, Inotify, WatchDescriptor};

use crate::cgroup::CgroupDirs;

#[derive(Default)]
pub struct OomWatch {
    v1: HashMap<String, (EventFd, File)>,
    inotify: Option<Inotify>,
    v2: HashMap<WatchDescriptor, String>,
}

/// Which fd became readable, for `OomWatch::ready`.
#[derive(Clone, Debug)]
pub enum Token {
    V1(String),
    V2,
}

impl OomWatch {
    pub fn add(&mut self, id: &str, dirs: &CgroupDirs) {
        let Some(dir) = &dirs.memory else { return };
        let r = if dirs.v2 {
            self.add_v2(id, dir)
        } else {
            self.add_v1(id, dir)
        };
        if let Err(e) = r {
            log::warn!("OOM watch for {id} ({}): {e}", dir.display());
        }
    }

    fn add_v1(&mut self, id: &str, dir: &std::path::Path) -> std::io::Result<()> {
        let efd = EventFd::from_value_and_flags(0, EfdFlags::EFD_CLOEXEC | EfdFlags::EFD_NONBLOCK)?;
        let control = File::open(dir.join("memory.oom_control"))?;
        let line = format!("{} {}", efd.as_fd().as_raw_fd(), control.as_raw_fd());
        fs::write(dir.join("cgroup.event_control"), line)?;
        self.v1.insert(id.to_owned(), (efd, control));
        Ok(())
    }

    fn add_v2(&mut self, id: &str, dir: &std::path::Path) -> std::io::Result<()> {
        if self.inotify.is_none() {
            self.inotify = Some(Inotify::init(
                InitFlags::IN_CLOEXEC | InitFlags::IN_NONBLOCK,
            )?);
        }
        let inotify = self.inotify.as_ref().expect("just set");
        let wd = inotify.add_watch(&dir.join("memory.events"), AddWatchFlags::IN_MODIFY)?;
        self.v2.insert(wd, id.to_owned());
        Ok(())
    }

    pub fn remove(&mut self, id: &str) {
        self.v1.remove(id);
        let wds: Vec<WatchDescriptor> = self
            .v2
            .iter()
            .filter(|(_, v)| *v == id)
            .map(|(k, _)| *k)
            .collect();
        for wd in wds {
            self.v2.remove(&wd);
            if let Some(i) = &self.inotify {
                let _ = i.rm_watch(wd);
            }
        }
    }

    pub fn fds(&self) -> Vec<(BorrowedFd<'_>, Token)> {
        let mut fds: Vec<_> = self
            .v1
            .iter()
            .map(|(id, (efd, _))| (efd.as_fd(), Token::V1(id.clone())))
            .collect();
        if let Some(i) = &self.inotify {
            fds.push((i.as_fd(), Token::V2));
        }
        fds
    }

    /// Containers whose cgroup may have seen an OOM, after `token`'s fd
    /// became readable.
    pub fn ready(&mut self, token: &Token) -> Vec<String> {
        match token {
            Token::V1(id) => match self.v1.get(id) {
                Some((efd, _)) => {
                    let _ = efd.read();
                    vec![id.clone()]
                }
                None => Vec::new(),
            },
            Token::V2 => {
                let Some(i) = &self.inotify else {
                    return Vec::new();
                };
                let events = i.read_events().unwrap_or_default();
                let mut ids: Vec<String> = events
                    .iter()
                    .filter_map(|e| self.v2.get(&e.wd).cloned())
                    .collect();
                ids.dedup();
                ids
            }
        }
    }
}
