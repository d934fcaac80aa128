//! At start: undo what a crustd killed in the middle of RunPodSandbox or
//! CreateContainer left behind. Their records are written last, so a pod
//! or container directory without one was never handed to anyone: its
//! processes (the shim, a pod init), network attachment, mounts and files
//! are removed from what is on disk.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crust_store::{ContainerRecord, SandboxRecord};
use nix::mount::{MntFlags, umount2};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use crate::Pods;

/// How long killed processes may take to go before their mounts are undone.
const KILL_WAIT: Duration = Duration::from_secs(5);

impl Pods {
    /// Must run before the CRI socket serves: a pod or container being made
    /// has no record yet either.
    pub async fn sweep_orphans(&self) {
        let pods: HashSet<String> = match self.store.list::<SandboxRecord>() {
            Ok(list) => list.into_iter().map(|r| r.id).collect(),
            Err(_) => return,
        };
        for dir in subdirs(&self.config.state.join("pods")) {
            if !is_known(&dir, &pods) {
                tracing::warn!(dir = %dir.display(), "removing a pod a crashed crustd left half made");
                self.remove_orphan_pod(&dir).await;
            }
        }
        let containers: HashSet<String> = match self.store.list::<ContainerRecord>() {
            Ok(list) => list.into_iter().map(|r| r.id).collect(),
            Err(_) => return,
        };
        for bundle in subdirs(&self.config.state.join("containers")) {
            if !is_known(&bundle, &containers) {
                tracing::warn!(bundle = %bundle.display(), "removing a container a crashed crustd left half made");
                let id = bundle
                    .file_name()
                    .map(|n| n.to_string_lossy().to_string())
                    .unwrap_or_default();
                self.remove_bundle(&ContainerRecord {
                    id,
                    bundle: bundle.display().to_string(),
                    ..Default::default()
                });
            }
        }
    }

    async fn remove_orphan_pod(&self, dir: &Path) {
        kill_processes_of(dir);
        let attachment = crate::network::attachment_path(dir);
        if let Err(e) = crate::network::del(&self.cni, &attachment).await {
            tracing::warn!(dir = %dir.display(), error = %e, "network teardown of an orphaned pod failed; parked for retry");
            self.park_attachment(&attachment, dir);
        }
        unmount_under(dir);
        if let Err(e) = std::fs::remove_dir_all(dir) {
            tracing::warn!(dir = %dir.display(), error = %e, "cannot remove an orphaned pod's state");
        }
    }
}

fn subdirs(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
        .map(|e| e.path())
        .collect()
}

fn is_known(dir: &Path, ids: &HashSet<String>) -> bool {
    dir.file_name()
        .is_some_and(|n| ids.contains(n.to_string_lossy().as_ref()))
}

/// SIGKILLs the processes started for a pod dir: those working in it (its
/// shim runs there) or naming it (a pod init), then waits for them to go.
fn kill_processes_of(dir: &Path) {
    let needle = dir.as_os_str().as_encoded_bytes();
    let mut killed = Vec::new();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return;
    };
    for entry in entries.flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let in_dir = std::fs::read_link(entry.path().join("cwd")).is_ok_and(|c| c.starts_with(dir));
        let names_dir = std::fs::read(entry.path().join("cmdline"))
            .is_ok_and(|c| c.windows(needle.len()).any(|w| w == needle));
        if (in_dir || names_dir) && pid != std::process::id() as i32 {
            let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
            killed.push(pid);
        }
    }
    let deadline = Instant::now() + KILL_WAIT;
    while Instant::now() < deadline
        && killed
            .iter()
            .any(|pid| Path::new(&format!("/proc/{pid}")).exists())
    {
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Detaches every mount at or below `dir`, deepest first.
fn unmount_under(dir: &Path) {
    let Ok(info) = std::fs::read_to_string("/proc/self/mountinfo") else {
        return;
    };
    let mut points: Vec<PathBuf> = info
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .map(|p| PathBuf::from(unescape(p)))
        .filter(|p| p.starts_with(dir))
        .collect();
    points.sort_by_key(|p| std::cmp::Reverse(p.as_os_str().len()));
    points.dedup();
    for p in points {
        if let Err(e) = umount2(&p, MntFlags::MNT_DETACH) {
            tracing::warn!(mount = %p.display(), error = %e, "cannot unmount");
        }
    }
}

/// mountinfo escapes space, tab, newline and backslash as \ooo.
fn unescape(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\'
            && i + 3 < bytes.len()
            && let Some(v) = std::str::from_utf8(&bytes[i + 1..i + 4])
                .ok()
                .and_then(|o| u8::from_str_radix(o, 8).ok())
        {
            out.push(v);
            i += 4;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mountinfo_paths_are_unescaped() {
        assert_eq!(unescape(r"/run/a\040b"), "/run/a b");
        assert_eq!(unescape(r"/x\134y"), r"/x\y");
        assert_eq!(unescape("/plain"), "/plain");
        assert_eq!(unescape(r"/end\04"), r"/end\04");
    }
}
