//! A real systemd for e2e tests: `hack/systemd-sandbox.sh` boots it as PID
//! 1 of private PID, mount and cgroup namespaces on an overlay of the
//! host's /, and [`Sandbox`] drives it and halts it on drop.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// Why a systemd sandbox cannot run here, if it cannot.
pub fn unavailable() -> Option<String> {
    if !nix::unistd::geteuid().is_root() {
        return Some("not root".into());
    }
    if Path::new("/sys/fs/cgroup/cgroup.controllers").exists() {
        return Some("a cgroup v2 host (hack/systemd-sandbox.sh supports v1 and hybrid)".into());
    }
    for tool in [
        "/lib/systemd/systemd",
        "/usr/bin/unshare",
        "/usr/bin/nsenter",
    ] {
        if !Path::new(tool).exists() {
            return Some(format!("{tool} is missing"));
        }
    }
    None
}

fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .join("hack/systemd-sandbox.sh")
}

pub struct Sandbox {
    pub dir: tempfile::TempDir,
    pid1: u32,
}

/// What a command run inside printed, and its exit code.
#[derive(Debug)]
pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Sandbox {
    pub fn boot() -> Sandbox {
        let dir = tempfile::Builder::new()
            .prefix("crust-sd-")
            .tempdir_in("/var/tmp")
            .unwrap();
        let out = Command::new(script())
            .arg("boot")
            .arg(dir.path())
            .output()
            .unwrap();
        let mut sandbox = Sandbox { dir, pid1: 0 };
        // Dropped on a failed boot too: halt removes what boot made.
        sandbox.pid1 = std::fs::read_to_string(sandbox.dir.path().join("pid1"))
            .ok()
            .and_then(|p| p.trim().parse().ok())
            .unwrap_or(0);
        if !out.status.success() {
            sandbox.halt();
            panic!(
                "systemd sandbox did not boot: {}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        assert_ne!(sandbox.pid1, 0, "no PID 1 recorded");
        sandbox
    }

    /// The sandbox's PID 1 (systemd) as the host sees it.
    pub fn pid1(&self) -> u32 {
        self.pid1
    }

    /// `path` inside the sandbox, reachable from the host.
    pub fn path(&self, path: &str) -> PathBuf {
        PathBuf::from(format!("/proc/{}/root{path}", self.pid1))
    }

    /// Writes `text` to `to` inside (its parents made).
    pub fn write(&self, to: &str, text: &str) {
        let dst = self.path(to);
        std::fs::create_dir_all(dst.parent().unwrap()).unwrap();
        std::fs::write(dst, text).unwrap();
    }

    /// Copies a host file to `to` inside (its parents made).
    pub fn copy_in(&self, from: &Path, to: &str) {
        let dst = self.path(to);
        std::fs::create_dir_all(dst.parent().unwrap()).unwrap();
        std::fs::copy(from, dst).unwrap();
    }

    /// The main PID systemd reports for `unit` ("0" when it runs none).
    pub fn main_pid(&self, unit: &str) -> String {
        self.ok(&format!("systemctl show -p MainPID --value {unit}"))
    }

    /// Runs a shell script inside (its mounts, PIDs and cgroups).
    pub fn sh(&self, script_text: &str) -> Run {
        let out: Output = Command::new(script())
            .arg("run")
            .arg(self.dir.path())
            .args(["sh", "-c", script_text])
            .output()
            .unwrap();
        Run {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).trim().to_string(),
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        }
    }

    /// Like [`Sandbox::sh`], failing the test unless it exits 0.
    pub fn ok(&self, script_text: &str) -> String {
        let r = self.sh(script_text);
        assert_eq!(r.code, 0, "{script_text}: {r:?}");
        r.stdout
    }

    /// The host cgroup dirs the sandbox lives in (one per hierarchy).
    pub fn host_cgroups(&self) -> Vec<PathBuf> {
        std::fs::read_to_string(self.dir.path().join("cgroups"))
            .unwrap_or_default()
            .lines()
            .map(PathBuf::from)
            .collect()
    }

    /// SIGKILL to its PID 1 (everything inside dies with it), cgroups
    /// removed. Returns what the script said went wrong.
    pub fn halt(&self) -> String {
        let out = Command::new(script())
            .arg("halt")
            .arg(self.dir.path())
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stderr).into_owned()
    }
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        if self.pid1 != 0 {
            self.halt();
        }
    }
}
