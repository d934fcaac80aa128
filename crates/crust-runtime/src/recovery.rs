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
use nix::sys::signal::Signal;

use crate::Pods;

/// How long killed processes may take to go before their mounts are undone.
const KILL_WAIT: Duration = Duration::from_secs(5);

/// What a crash left half made, found before the socket serves (when
/// nothing can be in the making) and removed afterwards in the background.
pub struct Orphans {
    pods: Vec<PathBuf>,
    bundles: Vec<PathBuf>,
}

impl Pods {
    /// Pod dirs and container bundles without a record. Must run before
    /// the CRI socket serves: a pod or container being made has no record
    /// yet either. Ids are random, so no new one can collide later.
    pub fn find_orphans(&self) -> Orphans {
        // A quarantined record's pod or container is still someone's: its
        // dir and processes are left for an operator, never taken for debris.
        let quarantined = |kind: &str| -> Vec<String> {
            self.store
                .quarantined()
                .iter()
                .filter(|q| q.table == kind)
                .map(|q| q.key.clone())
                .collect()
        };
        let known = |ids: Result<Vec<String>, crust_store::StoreError>,
                     kind: &str|
         -> Option<HashSet<String>> {
            ids.ok()
                .map(|v| v.into_iter().chain(quarantined(kind)).collect())
        };
        let state = std::fs::canonicalize(&self.config.state).unwrap_or(self.config.state.clone());
        let pods = known(
            self.store
                .list::<SandboxRecord>()
                .map(|l| l.into_iter().map(|r| r.id).collect()),
            <SandboxRecord as crust_store::Record>::NAME,
        );
        let containers = known(
            self.store
                .list::<ContainerRecord>()
                .map(|l| l.into_iter().map(|r| r.id).collect()),
            <ContainerRecord as crust_store::Record>::NAME,
        );
        let unknown = |dir: PathBuf, ids: &Option<HashSet<String>>| {
            subdirs(&dir)
                .into_iter()
                .filter(|d| ids.as_ref().is_some_and(|ids| !is_known(d, ids)))
                .collect::<Vec<_>>()
        };
        Orphans {
            pods: unknown(state.join("pods"), &pods),
            bundles: unknown(state.join("containers"), &containers),
        }
    }

    /// Undoes them: each pod's processes, network, mounts and dir; each
    /// bundle's rootfs mount, writable layer and dir.
    pub async fn remove_orphans(&self, orphans: Orphans) {
        for bundle in orphans.bundles {
            tracing::warn!(bundle = %bundle.display(), "removing a container a crashed crustd left half made");
            let id = file_name(&bundle);
            crate::blocking(|| {
                self.remove_bundle(&ContainerRecord {
                    id,
                    bundle: bundle.display().to_string(),
                    ..Default::default()
                })
            });
        }
        for dir in orphans.pods {
            tracing::warn!(dir = %dir.display(), "removing a pod a crashed crustd left half made");
            self.remove_orphan_pod(&dir).await;
        }
    }

    async fn remove_orphan_pod(&self, dir: &Path) {
        let shims: Vec<PathBuf> = self
            .config
            .runtime
            .handlers
            .values()
            .filter_map(|h| crate::shim::resolve_binary(&h.shim).ok())
            .filter_map(|p| std::fs::canonicalize(p).ok())
            .collect();
        let killed = kill_processes_of(dir, &file_name(dir), &shims);
        let deadline = Instant::now() + KILL_WAIT;
        while Instant::now() < deadline
            && killed
                .iter()
                .any(|pid| Path::new(&format!("/proc/{pid}")).exists())
        {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let attachment = crate::network::attachment_path(dir);
        if let Err(e) = crate::network::del(&self.cni, &attachment).await {
            tracing::warn!(dir = %dir.display(), error = %e, "network teardown of an orphaned pod failed; parked for retry");
            self.park_attachment(&attachment, dir);
        }
        if !unmount_under(dir) {
            tracing::warn!(dir = %dir.display(), "mounts remain under an orphaned pod's state; leaving it");
            return;
        }
        if let Err(e) = std::fs::remove_dir_all(dir) {
            tracing::warn!(dir = %dir.display(), error = %e, "cannot remove an orphaned pod's state");
        }
    }
}

fn file_name(p: &Path) -> String {
    p.file_name()
        .map(|n| n.to_string_lossy().to_string())
        .unwrap_or_default()
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
    ids.contains(&file_name(dir))
}

/// SIGKILLs what was started for pod `id` in `dir`, and nothing else: its
/// shim (one of `shims`, working in the dir), its pod init (`crustd
/// pod-init --pod <dir>`), and a CNI plugin the crash left running
/// (`CNI_CONTAINERID=<id>` in its environment). Returns their pids.
fn kill_processes_of(dir: &Path, id: &str, shims: &[PathBuf]) -> Vec<i32> {
    let dir_arg = dir.as_os_str().as_encoded_bytes();
    let cni_env = format!("CNI_CONTAINERID={id}");
    let mut killed = Vec::new();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return killed;
    };
    for entry in entries.flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        if pid == std::process::id() {
            continue;
        }
        let proc = entry.path();
        // Checked through a pidfd opened first: a process that exits and
        // whose pid is reused between the look and the kill is not hit.
        let ours = |_| {
            let exe = std::fs::read_link(proc.join("exe")).unwrap_or_default();
            let shim = std::fs::read_link(proc.join("cwd")).is_ok_and(|c| c == dir)
                && crate::shim::is_shim_binary(&exe, shims);
            let args = std::fs::read(proc.join("cmdline")).unwrap_or_default();
            let args: Vec<&[u8]> = args.split(|b| *b == 0).collect();
            let pod_init = args.contains(&b"pod-init".as_slice()) && args.contains(&dir_arg);
            let cni_plugin = std::fs::read(proc.join("environ"))
                .is_ok_and(|env| env.split(|b| *b == 0).any(|v| v == cni_env.as_bytes()));
            if shim || pod_init || cni_plugin {
                Ok(())
            } else {
                Err(crate::process::SignalError::Gone(pid))
            }
        };
        if crate::process::signal_if(pid, Signal::SIGKILL, ours).is_ok() {
            killed.push(pid as i32);
        }
    }
    killed
}

/// Detaches every mount at or below `dir`, deepest first, a few rounds
/// (mounts may be stacked); whether none is left.
fn unmount_under(dir: &Path) -> bool {
    for _ in 0..8 {
        let points = mounts_under(dir);
        if points.is_empty() {
            return true;
        }
        for p in points {
            if let Err(e) = umount2(&p, MntFlags::MNT_DETACH) {
                tracing::warn!(mount = %p.display(), error = %e, "cannot unmount");
            }
        }
    }
    mounts_under(dir).is_empty()
}

fn mounts_under(dir: &Path) -> Vec<PathBuf> {
    let Ok(info) = std::fs::read_to_string("/proc/self/mountinfo") else {
        return Vec::new();
    };
    let mut points: Vec<PathBuf> = info
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .map(|p| PathBuf::from(unescape(p)))
        .filter(|p| p.starts_with(dir))
        .collect();
    points.sort_by_key(|p| std::cmp::Reverse(p.as_os_str().len()));
    points
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
