//! Reading and shaping cgroups on v1 and v2 with the cgroupfs layout. The
//! shim (libcontainer) creates container cgroups; crustd makes sure the
//! pod's parent exists and reads usage for CRI stats.

use std::path::{Path, PathBuf};

const ROOT: &str = "/sys/fs/cgroup";
/// v1 hierarchies crustd creates the pod cgroup in (cpuset is left to
/// libcontainer, which knows to copy cpus/mems from the parent).
const V1_CONTROLLERS: &[&str] = &["cpu", "cpuacct", "memory", "pids", "systemd"];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Version {
    V1,
    V2,
}

pub fn version() -> Version {
    if Path::new(ROOT).join("cgroup.controllers").exists() {
        Version::V2
    } else {
        Version::V1
    }
}

/// A cgroup's directory relative to a hierarchy's root: the layout the
/// shim creates (crust-shim-proto's, systemd's for the systemd driver).
fn relative(path: &str) -> String {
    crust_shim_proto::cgroup::relative_dir(path)
}

/// Every directory that makes up cgroup `path` (one per v1 hierarchy).
fn dirs(path: &str) -> Vec<PathBuf> {
    match version() {
        Version::V2 => vec![Path::new(ROOT).join(relative(path))],
        Version::V1 => V1_CONTROLLERS
            .iter()
            .map(|c| Path::new(ROOT).join(c))
            .filter(|d| d.is_dir())
            .map(|d| d.join(relative(path)))
            .collect(),
    }
}

/// Creates cgroup `path` where missing; returns whether crustd created it
/// (kubelet usually has, and then owns it).
pub fn ensure(path: &str) -> std::io::Result<bool> {
    let mut created = false;
    for dir in dirs(path) {
        if !dir.exists() {
            std::fs::create_dir_all(&dir)?;
            created = true;
        }
    }
    Ok(created)
}

/// Moves process `pid` into cgroup `path` (every hierarchy of it).
pub fn add_process(path: &str, pid: u32) -> std::io::Result<()> {
    for dir in dirs(path) {
        std::fs::write(dir.join("cgroup.procs"), pid.to_string())?;
    }
    Ok(())
}

/// Removes cgroup `path` (rmdir: only empty cgroups go). Idempotent.
pub fn remove(path: &str) -> std::io::Result<()> {
    for dir in dirs(path) {
        match std::fs::remove_dir(&dir) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
            _ => {}
        }
    }
    Ok(())
}

/// Whether any directory of cgroup `path` still exists.
pub fn exists(path: &str) -> bool {
    dirs(path).iter().any(|d| d.exists())
}

/// SIGKILLs every process in cgroup `path`, in every hierarchy it has
/// (a process systemd moved out of one v1 hierarchy is still found in the
/// others); returns how many were signalled. Each is signalled through a
/// pidfd opened before checking that it is still in the cgroup, so a pid
/// reused meanwhile is left alone.
pub fn kill_all(path: &str) -> usize {
    let mut pids = std::collections::BTreeSet::new();
    for dir in dirs(path) {
        if let Ok(text) = std::fs::read_to_string(dir.join("cgroup.procs")) {
            pids.extend(text.lines().filter_map(|l| l.trim().parse::<u32>().ok()));
        }
    }
    let rel = relative(path);
    let member = |pid: u32| -> Result<(), crate::process::SignalError> {
        let cgroups = std::fs::read_to_string(format!("/proc/{pid}/cgroup"))
            .map_err(|_| crate::process::SignalError::Gone(pid))?;
        // Lines are `id:controllers:/path`; the container's dir ends it.
        cgroups
            .lines()
            .filter_map(|l| l.splitn(3, ':').nth(2))
            .any(|p| p.trim_start_matches('/') == rel.trim_start_matches('/'))
            .then_some(())
            .ok_or(crate::process::SignalError::Gone(pid))
    };
    pids.into_iter()
        .filter(|pid| {
            crate::process::signal_if(*pid, nix::sys::signal::Signal::SIGKILL, member).is_ok()
        })
        .count()
}

/// Usage of one cgroup, as CRI stats want it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    pub cpu_usage_nanos: u64,
    pub memory_usage: u64,
    pub memory_working_set: u64,
    pub memory_rss: u64,
    pub page_faults: u64,
    pub major_page_faults: u64,
}

impl Usage {
    /// From a cgroup's raw counters, with kubelet's working set (usage
    /// less inactive page cache): the one derivation for the cgroup files
    /// and a shim's cgroup metrics alike.
    pub fn from_counters(
        cpu_usage_nanos: u64,
        memory_usage: u64,
        inactive_file: u64,
        memory_rss: u64,
        page_faults: u64,
        major_page_faults: u64,
    ) -> Usage {
        Usage {
            cpu_usage_nanos,
            memory_usage,
            memory_working_set: memory_usage.saturating_sub(inactive_file),
            memory_rss,
            page_faults,
            major_page_faults,
        }
    }
}

fn read_u64(path: &Path) -> Option<u64> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

fn stat_field(text: &str, key: &str) -> u64 {
    text.lines()
        .filter_map(|l| l.split_once(' '))
        .find(|(k, _)| *k == key)
        .and_then(|(_, v)| v.trim().parse().ok())
        .unwrap_or(0)
}

pub fn usage(path: &str) -> Usage {
    let rel = relative(path);
    match version() {
        Version::V2 => {
            let dir = Path::new(ROOT).join(&rel);
            let cpu = std::fs::read_to_string(dir.join("cpu.stat")).unwrap_or_default();
            let mem = std::fs::read_to_string(dir.join("memory.stat")).unwrap_or_default();
            let usage = read_u64(&dir.join("memory.current")).unwrap_or(0);
            Usage::from_counters(
                stat_field(&cpu, "usage_usec") * 1000,
                usage,
                stat_field(&mem, "inactive_file"),
                stat_field(&mem, "anon"),
                stat_field(&mem, "pgfault"),
                stat_field(&mem, "pgmajfault"),
            )
        }
        Version::V1 => {
            let cpuacct = Path::new(ROOT).join("cpuacct").join(&rel);
            let memory = Path::new(ROOT).join("memory").join(&rel);
            let mem = std::fs::read_to_string(memory.join("memory.stat")).unwrap_or_default();
            let usage = read_u64(&memory.join("memory.usage_in_bytes")).unwrap_or(0);
            Usage::from_counters(
                read_u64(&cpuacct.join("cpuacct.usage")).unwrap_or(0),
                usage,
                stat_field(&mem, "total_inactive_file"),
                stat_field(&mem, "total_rss"),
                stat_field(&mem, "total_pgfault"),
                stat_field(&mem, "total_pgmajfault"),
            )
        }
    }
}

/// What the CRI metrics add to [`Usage`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Extra {
    /// Page cache (v1 `total_cache`, v2 `file`).
    pub memory_cache: u64,
    /// Processes the kernel's OOM killer killed in the cgroup.
    pub oom_kills: u64,
    /// Tasks in the cgroup (`pids.current`).
    pub processes: u64,
}

pub fn extra(path: &str) -> Extra {
    let rel = relative(path);
    match version() {
        Version::V2 => {
            let dir = Path::new(ROOT).join(&rel);
            let mem = std::fs::read_to_string(dir.join("memory.stat")).unwrap_or_default();
            let events = std::fs::read_to_string(dir.join("memory.events")).unwrap_or_default();
            Extra {
                memory_cache: stat_field(&mem, "file"),
                oom_kills: stat_field(&events, "oom_kill"),
                processes: read_u64(&dir.join("pids.current")).unwrap_or(0),
            }
        }
        Version::V1 => {
            let memory = Path::new(ROOT).join("memory").join(&rel);
            let mem = std::fs::read_to_string(memory.join("memory.stat")).unwrap_or_default();
            let control =
                std::fs::read_to_string(memory.join("memory.oom_control")).unwrap_or_default();
            let pids = Path::new(ROOT).join("pids").join(&rel).join("pids.current");
            Extra {
                memory_cache: stat_field(&mem, "total_cache"),
                oom_kills: stat_field(&control, "oom_kill"),
                processes: read_u64(&pids).unwrap_or(0),
            }
        }
    }
}

/// One line of a cgroup v2 pressure file (`some` or `full`).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct PressureLine {
    /// Stall time in nanoseconds (the kernel counts microseconds).
    pub total_nanos: u64,
    pub avg10: f64,
    pub avg60: f64,
    pub avg300: f64,
}

/// A resource's pressure stall information: some tasks stalled, all stalled.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Pressure {
    pub some: PressureLine,
    pub full: PressureLine,
}

/// PSI of one cgroup. cgroup v2 only: v1 hierarchies have no per-cgroup
/// pressure files, and kubelet reads PSI only on v2 nodes.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Pressures {
    pub cpu: Option<Pressure>,
    pub memory: Option<Pressure>,
    pub io: Option<Pressure>,
}

/// `some avg10=0.00 avg60=0.00 avg300=0.00 total=0` and its `full` twin.
/// A file without a `full` line (cpu before Linux 5.13) reports full as 0.
fn parse_pressure(text: &str) -> Option<Pressure> {
    let line = |kind: &str| -> Option<PressureLine> {
        let rest = text
            .lines()
            .find_map(|l| l.strip_prefix(kind)?.strip_prefix(' '))?;
        let mut out = PressureLine::default();
        for field in rest.split_whitespace() {
            let (k, v) = field.split_once('=')?;
            match k {
                "avg10" => out.avg10 = v.parse().ok()?,
                "avg60" => out.avg60 = v.parse().ok()?,
                "avg300" => out.avg300 = v.parse().ok()?,
                "total" => out.total_nanos = v.parse::<u64>().ok()?.saturating_mul(1000),
                _ => {}
            }
        }
        Some(out)
    };
    Some(Pressure {
        some: line("some")?,
        full: line("full").unwrap_or_default(),
    })
}

fn pressures_in(dir: &Path) -> Pressures {
    let read = |name: &str| parse_pressure(&std::fs::read_to_string(dir.join(name)).ok()?);
    Pressures {
        cpu: read("cpu.pressure"),
        memory: read("memory.pressure"),
        io: read("io.pressure"),
    }
}

/// PSI of cgroup `path`; none on cgroup v1.
pub fn pressures(path: &str) -> Pressures {
    match version() {
        Version::V2 => pressures_in(&Path::new(ROOT).join(relative(path))),
        Version::V1 => Pressures::default(),
    }
}

/// Whether the kernel OOM-killed a process of cgroup `path`.
pub fn oom_killed(path: &str) -> bool {
    let rel = relative(path);
    match version() {
        Version::V2 => {
            let events = std::fs::read_to_string(Path::new(ROOT).join(&rel).join("memory.events"))
                .unwrap_or_default();
            stat_field(&events, "oom_kill") > 0
        }
        Version::V1 => {
            let control = std::fs::read_to_string(
                Path::new(ROOT)
                    .join("memory")
                    .join(&rel)
                    .join("memory.oom_control"),
            )
            .unwrap_or_default();
            stat_field(&control, "oom_kill") > 0
        }
    }
}

/// Writes a pod cgroup's CPU and memory limits (UpdatePodSandboxResources).
/// Memory goes last when it shrinks: the kernel refuses (v1, EBUSY) or
/// reclaims (v2) at once, and the CPU change should not wait on that.
pub fn set_pod_limits(path: &str, limits: &crust_spec::PodLimits) -> std::io::Result<()> {
    let write = |controller: &str, name: &str, value: String| {
        let file = file(path, controller, name);
        std::fs::write(&file, &value).map_err(|e| {
            std::io::Error::new(
                e.kind(),
                format!("writing {value} to {}: {e}", file.display()),
            )
        })
    };
    match version() {
        Version::V2 => {
            let quota = limits
                .cpu_quota
                .map_or("max".to_string(), |q| q.to_string());
            write("", "cpu.max", format!("{quota} {}", limits.cpu_period))?;
            if let Some(shares) = limits.cpu_shares {
                write("", "cpu.weight", shares_to_weight(shares).to_string())?;
            }
            let memory = limits
                .memory_limit
                .map_or("max".to_string(), |m| m.to_string());
            write("", "memory.max", memory)?;
        }
        Version::V1 => {
            write("cpu", "cpu.cfs_period_us", limits.cpu_period.to_string())?;
            let quota = limits.cpu_quota.map_or(-1, |q| q as i64);
            write("cpu", "cpu.cfs_quota_us", quota.to_string())?;
            if let Some(shares) = limits.cpu_shares {
                write("cpu", "cpu.shares", shares.to_string())?;
            }
            let memory = limits.memory_limit.map_or(-1, |m| m as i64);
            write("memory", "memory.limit_in_bytes", memory.to_string())?;
        }
    }
    Ok(())
}

/// cpu.shares to cpu.weight as runc 1.3 and libcgroups 0.7 map them (a
/// quadratic fit in log space, so 1024 shares is weight 100), so a pod's
/// weight and its containers' agree. libcgroups keeps its copy private.
fn shares_to_weight(shares: u64) -> u64 {
    if shares <= 2 {
        return 1;
    }
    if shares >= 262_144 {
        return 10_000;
    }
    let log = (shares as f64).log2();
    let exponent = (log * log + 125.0 * log) / 612.0 - 7.0 / 34.0;
    10f64.powf(exponent).ceil() as u64
}

/// The cgroup file that holds a limit, for tests and status.
pub fn file(path: &str, v1_controller: &str, name: &str) -> PathBuf {
    match version() {
        Version::V2 => Path::new(ROOT).join(relative(path)).join(name),
        Version::V1 => Path::new(ROOT)
            .join(v1_controller)
            .join(relative(path))
            .join(name),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shares_map_to_weights_as_libcgroups_does() {
        assert_eq!(shares_to_weight(2), 1);
        assert_eq!(shares_to_weight(512), 59);
        assert_eq!(shares_to_weight(1024), 100);
        assert_eq!(shares_to_weight(262_144), 10_000);
    }

    #[test]
    fn pressure_files_parse_and_v1_has_none() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("cpu.pressure"),
            "some avg10=1.50 avg60=0.25 avg300=0.00 total=1234\nfull avg10=0.50 avg60=0.00 avg300=0.00 total=56\n",
        )
        .unwrap();
        // An old kernel's cpu.pressure: no full line.
        std::fs::write(
            dir.path().join("memory.pressure"),
            "some avg10=0.00 avg60=0.00 avg300=0.00 total=7\n",
        )
        .unwrap();
        std::fs::write(dir.path().join("io.pressure"), "garbage\n").unwrap();
        let p = pressures_in(dir.path());
        let cpu = p.cpu.unwrap();
        assert_eq!(cpu.some.total_nanos, 1_234_000);
        assert_eq!((cpu.some.avg10, cpu.some.avg60), (1.5, 0.25));
        assert_eq!((cpu.full.total_nanos, cpu.full.avg10), (56_000, 0.5));
        let memory = p.memory.unwrap();
        assert_eq!(
            (memory.some.total_nanos, memory.full),
            (7000, PressureLine::default())
        );
        assert_eq!(p.io, None, "an unreadable file is no PSI, never zeros");
        if version() == Version::V1 {
            assert_eq!(pressures("/"), Pressures::default());
        }
    }

    #[test]
    fn stat_fields_parse() {
        let text = "cache 10\nrss 20\ntotal_inactive_file 5\n";
        assert_eq!(stat_field(text, "rss"), 20);
        assert_eq!(stat_field(text, "total_inactive_file"), 5);
        assert_eq!(stat_field(text, "missing"), 0);
    }

    #[test]
    fn ensure_and_remove_a_cgroup() {
        let path = format!("/crust-unit-{}", std::process::id());
        assert!(ensure(&path).unwrap());
        assert!(!ensure(&path).unwrap(), "second ensure creates nothing");
        assert!(exists(&path));
        let _ = usage(&path);
        remove(&path).unwrap();
        assert!(!exists(&path));
        remove(&path).unwrap();
    }
}
