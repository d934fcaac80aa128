//! Where a container's cgroup is, found from its init process: works for
//! cgroup v1 and v2 and for both cgroup drivers.

use std::fs;
use std::path::{Path, PathBuf};

const ROOT: &str = "/sys/fs/cgroup";

#[derive(Clone, Debug, Default)]
pub struct CgroupDirs {
    /// The memory controller's directory (v1) or the unified one (v2).
    pub memory: Option<PathBuf>,
    /// A directory whose `cgroup.procs` lists the container's processes.
    pub procs: Option<PathBuf>,
    pub v2: bool,
}

impl CgroupDirs {
    pub fn of_pid(pid: i32) -> CgroupDirs {
        match fs::read_to_string(format!("/proc/{pid}/cgroup")) {
            Ok(text) => Self::parse(&text, Path::new(ROOT).join("cgroup.controllers").exists()),
            Err(e) => {
                log::warn!("cgroup of pid {pid}: {e}");
                CgroupDirs::default()
            }
        }
    }

    /// Parses `/proc/<pid>/cgroup`; `unified` tells whether /sys/fs/cgroup
    /// is a cgroup v2 mount (else v1 or hybrid).
    fn parse(text: &str, unified: bool) -> CgroupDirs {
        let mut dirs = CgroupDirs::default();
        let mut pids = None;
        for line in text.lines() {
            let mut parts = line.splitn(3, ':');
            let (Some(id), Some(ctrls), Some(path)) = (parts.next(), parts.next(), parts.next())
            else {
                continue;
            };
            let rel = path.trim_start_matches('/');
            if unified {
                if id == "0" && ctrls.is_empty() {
                    let dir = Path::new(ROOT).join(rel);
                    dirs.memory = Some(dir.clone());
                    dirs.procs = Some(dir);
                    dirs.v2 = true;
                }
            } else if ctrls.split(',').any(|c| c == "memory") {
                dirs.memory = Some(Path::new(ROOT).join(ctrls).join(rel));
            } else if ctrls.split(',').any(|c| c == "pids") {
                pids = Some(Path::new(ROOT).join(ctrls).join(rel));
            }
        }
        if dirs.procs.is_none() {
            dirs.procs = dirs.memory.clone().or(pids);
        }
        dirs
    }

    /// Every process in the cgroup.
    pub fn pids(&self) -> Vec<i32> {
        let Some(dir) = &self.procs else {
            return Vec::new();
        };
        fs::read_to_string(dir.join("cgroup.procs"))
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.trim().parse().ok())
            .collect()
    }

    /// The kernel's count of OOM kills in this cgroup (v1: `oom_kill` in
    /// memory.oom_control, Linux 4.13+; v2: `oom_kill` in memory.events).
    pub fn oom_kills(&self) -> Option<u64> {
        let dir = self.memory.as_ref()?;
        let file = if self.v2 {
            "memory.events"
        } else {
            "memory.oom_control"
        };
        let text = fs::read_to_string(dir.join(file)).ok()?;
        text.lines()
            .find_map(|l| l.strip_prefix("oom_kill "))
            .and_then(|n| n.trim().parse().ok())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_v1_hybrid_and_v2() {
        let v1 = "9:name=systemd:/\n8:pids:/k/c1\n4:memory:/k/c1\n1:cpu,cpuacct:/k/c1\n0::/\n";
        let d = CgroupDirs::parse(v1, false);
        assert_eq!(
            d.memory.as_deref(),
            Some(Path::new("/sys/fs/cgroup/memory/k/c1"))
        );
        assert_eq!(d.procs, d.memory);
        assert!(!d.v2);
        let d = CgroupDirs::parse("0::/kubepods/pod1/c1\n", true);
        assert_eq!(
            d.memory.as_deref(),
            Some(Path::new("/sys/fs/cgroup/kubepods/pod1/c1"))
        );
        assert!(d.v2);
        let d = CgroupDirs::parse("8:pids:/k/c1\n", false);
        assert_eq!(
            d.procs.as_deref(),
            Some(Path::new("/sys/fs/cgroup/pids/k/c1"))
        );
        assert_eq!(d.memory, None);
    }
}
