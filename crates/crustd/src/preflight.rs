//! `crustd check`: preflight of this node for crust, with no crustd
//! running. One line per check, `OK`, `WARN` or `FAIL`, what was found
//! and, when not OK, what to do; exit status 1 when any check FAILs.
//!
//! Where crust has its own probe the check calls it (mount_setattr from
//! crust-spec, the shim lookup from crust-runtime, the CNI loader from
//! crust-cni), so `check` and crustd agree.

use std::fmt;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

use crust_config::{CgroupDriver, CgroupDriverSetting, Config, ConfigSources, LoadedConfig};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    Ok,
    Warn,
    Fail,
}

impl fmt::Display for Level {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Level::Ok => "OK",
            Level::Warn => "WARN",
            Level::Fail => "FAIL",
        })
    }
}

/// One check's result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Check {
    pub level: Level,
    pub name: String,
    /// What was found.
    pub found: String,
    /// What to do about it (WARN and FAIL).
    pub fix: Option<String>,
}

impl Check {
    fn ok(name: &str, found: impl Into<String>) -> Check {
        Check {
            level: Level::Ok,
            name: name.into(),
            found: found.into(),
            fix: None,
        }
    }

    fn warn(name: &str, found: impl Into<String>, fix: impl Into<String>) -> Check {
        Check {
            level: Level::Warn,
            name: name.into(),
            found: found.into(),
            fix: Some(fix.into()),
        }
    }

    fn fail(name: &str, found: impl Into<String>, fix: impl Into<String>) -> Check {
        Check {
            level: Level::Fail,
            name: name.into(),
            found: found.into(),
            fix: Some(fix.into()),
        }
    }
}

/// `OK   overlayfs: supported`, `FAIL cni: ...; fix: ...`: the level
/// padded to one width, so the lines grep and line up.
impl fmt::Display for Check {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{:<4} {}: {}",
            self.level.to_string(),
            self.name,
            self.found
        )?;
        if let Some(fix) = &self.fix {
            write!(f, "; fix: {fix}")?;
        }
        Ok(())
    }
}

/// Runs every check, prints them, and says whether any FAILed.
pub fn run(sources: &ConfigSources, loaded: Result<LoadedConfig, String>) -> bool {
    let checks = all_checks(sources, loaded);
    for check in &checks {
        println!("{check}");
    }
    let count = |l: Level| checks.iter().filter(|c| c.level == l).count();
    println!(
        "crustd check: {} OK, {} WARN, {} FAIL",
        count(Level::Ok),
        count(Level::Warn),
        count(Level::Fail)
    );
    count(Level::Fail) > 0
}

fn all_checks(sources: &ConfigSources, loaded: Result<LoadedConfig, String>) -> Vec<Check> {
    let mut checks = vec![check_user()];
    let config = match loaded {
        Ok(loaded) => {
            checks.push(config_check(sources, &loaded));
            Some(loaded.config)
        }
        Err(e) => {
            checks.push(Check::fail(
                "config",
                e,
                "correct the file and key named; `crustd config check` validates the merged result (checks that need the config are skipped)",
            ));
            None
        }
    };
    checks.push(check_overlayfs());
    checks.push(check_mount_setattr());
    checks.push(check_cgroups());
    checks.push(check_seccomp());
    if let Some(config) = &config {
        checks.push(check_idmapped_layers(config));
        checks.push(check_cgroup_driver(config));
        checks.push(check_cni(config));
        checks.extend(check_shims(config));
        checks.push(check_socket_dir(&config.socket));
        checks.push(check_private_dir("root", &config.root));
        checks.push(check_private_dir("state", &config.state));
        if let Some(dir) = &config.image_fs {
            checks.push(check_private_dir("image_fs", dir));
        }
    }
    checks
}

fn check_user() -> Check {
    if nix::unistd::geteuid().is_root() {
        Check::ok("user", "root")
    } else {
        Check::warn(
            "user",
            format!("uid {} is not root", nix::unistd::geteuid()),
            "crustd runs as root; run `crustd check` as root too, or some probes below answer no",
        )
    }
}

fn config_check(sources: &ConfigSources, loaded: &LoadedConfig) -> Check {
    let files = loaded.files();
    let main = files.iter().any(|f| f == &sources.main);
    let dropins = files.len() - usize::from(main);
    let found = match (main, dropins) {
        (true, 0) => format!("{} (no drop-ins)", sources.main.display()),
        (true, n) => format!(
            "{} + {n} drop-in(s) from {}",
            sources.main.display(),
            sources.dropin_dir.display()
        ),
        (false, 0) => format!(
            "built-in defaults ({} does not exist)",
            sources.main.display()
        ),
        (false, n) => format!(
            "built-in defaults + {n} drop-in(s) from {} ({} does not exist)",
            sources.dropin_dir.display(),
            sources.main.display()
        ),
    };
    Check::ok("config", found)
}

fn check_overlayfs() -> Check {
    let listed = std::fs::read_to_string("/proc/filesystems").is_ok_and(|text| {
        text.lines()
            .any(|l| l.split_whitespace().last() == Some("overlay"))
    });
    if listed {
        return Check::ok("overlayfs", "supported (overlay in /proc/filesystems)");
    }
    // Not loaded yet: mount(2) loads a module the kernel has on its own.
    let release = kernel_release();
    let module = ["modules.dep", "modules.builtin"].iter().any(|f| {
        std::fs::read_to_string(format!("/lib/modules/{release}/{f}"))
            .is_ok_and(|t| t.contains("/overlay.ko"))
    });
    if module {
        Check::warn(
            "overlayfs",
            format!("the overlay module of {release} is not loaded"),
            "`modprobe overlay` (and list it in /etc/modules-load.d/crust.conf); the first mount would load it too",
        )
    } else {
        Check::fail(
            "overlayfs",
            format!("not in /proc/filesystems and no overlay module for {release}"),
            "use a kernel with CONFIG_OVERLAY_FS (every image layer is an overlay)",
        )
    }
}

fn check_mount_setattr() -> Check {
    if crust_spec::recursive_read_only_supported() {
        Check::ok(
            "mount_setattr",
            "available: recursive read-only mounts (rro) supported",
        )
    } else {
        Check::warn(
            "mount_setattr",
            "not available (Linux 5.12+, and root): recursive read-only mounts are refused",
            "run as root on Linux 5.12 or later to offer recursiveReadOnly mounts",
        )
    }
}

/// Whether pods can have their own user namespace (idmapped layers under
/// an overlay). crust-runtime's probe runs inside crustd; it is not
/// exposed to this command yet, so the running crustd is asked.
/// What a node needs for pods with their own user namespace.
const USERNS_FIX: &str = "for hostUsers: false pods: Linux 6.15+, user namespaces on (sysctl user.max_user_namespaces > 0), root on a filesystem with idmapped mounts";

fn check_idmapped_layers(config: &Config) -> Check {
    let release = kernel_release();
    if std::os::unix::net::UnixStream::connect(&config.socket).is_err() {
        // No crustd to ask: probe as it would, on the filesystem of its root
        // (or the nearest existing dir above it).
        let dir = config
            .root
            .ancestors()
            .find(|d| d.is_dir())
            .unwrap_or(std::path::Path::new("/"));
        if !nix::unistd::geteuid().is_root() {
            return Check::warn(
                "idmapped layers",
                format!(
                    "not probed: the probe mounts an overlay in {}, which needs root",
                    dir.display()
                ),
                "run `crustd check` as root",
            );
        }
        return match crust_runtime::probe_user_namespaces(dir) {
            Ok(()) => Check::ok(
                "idmapped layers",
                format!(
                    "supported (probed in {}): pods can have their own user namespace (hostUsers: false)",
                    dir.display()
                ),
            ),
            Err(e) => Check::warn(
                "idmapped layers",
                format!("pods cannot have their own user namespace (kernel {release}): {e}"),
                USERNS_FIX,
            ),
        };
    }
    let asked = crate::status::block_on(async {
        let ask = async {
            let channel = crate::status::connect(&config.socket).await?;
            crate::status::runtime_status(channel).await
        };
        match tokio::time::timeout(Duration::from_secs(5), ask).await {
            Ok(r) => r.map_err(|e| format!("{e:#}")),
            Err(_) => Err("crustd did not answer within 5 s".to_string()),
        }
    })
    .map_err(|e| format!("{e:#}"))
    .and_then(|r| r);
    match asked {
        Ok(status) => {
            let default = status.runtime_handlers.iter().find(|h| h.name.is_empty());
            let userns = default
                .and_then(|h| h.features.as_ref())
                .is_some_and(|f| f.user_namespaces);
            if userns {
                Check::ok(
                    "idmapped layers",
                    "supported: the running crustd offers pods their own user namespace (hostUsers: false)",
                )
            } else {
                Check::warn(
                    "idmapped layers",
                    format!(
                        "the running crustd does not offer pods their own user namespace (kernel {release}); its log says why (\"pods cannot have their own user namespace\")"
                    ),
                    USERNS_FIX,
                )
            }
        }
        Err(e) => Check::warn(
            "idmapped layers",
            format!(
                "not probed: asked the crustd at {}, but {e}",
                config.socket.display()
            ),
            "see crustd's log; `crustd status` shows whether pods can have their own user namespace",
        ),
    }
}

fn check_cgroups() -> Check {
    use crust_runtime::cgroup::Version;
    let want = ["cpu", "memory", "pids"];
    match crust_runtime::cgroup::version() {
        Version::V2 => {
            let text =
                std::fs::read_to_string("/sys/fs/cgroup/cgroup.controllers").unwrap_or_default();
            let have: Vec<&str> = text.split_whitespace().collect();
            let missing: Vec<&str> = want.iter().copied().filter(|c| !have.contains(c)).collect();
            let found = format!("v2, controllers: {}", have.join(" "));
            if missing.is_empty() {
                Check::ok("cgroups", found)
            } else {
                Check::fail(
                    "cgroups",
                    format!("{found}; missing {}", missing.join(", ")),
                    "enable them (kernel config, or the cgroup_enable= boot parameter): container limits need cpu, memory and pids",
                )
            }
        }
        Version::V1 => {
            let mounts = v1_hierarchies(
                &std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default(),
            );
            let missing: Vec<&str> = want
                .iter()
                .copied()
                .filter(|c| !mounts.iter().any(|(_, cs)| cs.iter().any(|x| x == c)))
                .collect();
            // cpu for /sys/fs/cgroup/cpu, cpu,cpuacct for a joint one; a
            // mount elsewhere with its path.
            let hierarchies: Vec<String> = mounts
                .iter()
                .map(|(point, cs)| {
                    let joined = cs.join(",");
                    match Path::new(point).strip_prefix("/sys/fs/cgroup") {
                        Ok(rel) if rel.as_os_str() == joined.as_str() => joined,
                        _ => format!("{joined} at {point}"),
                    }
                })
                .collect();
            let hybrid = if Path::new("/sys/fs/cgroup/unified/cgroup.controllers").exists() {
                " (hybrid: cgroup2 at /sys/fs/cgroup/unified)"
            } else {
                ""
            };
            let found = format!("v1{hybrid}, hierarchies: {}", hierarchies.join(" "));
            if !missing.is_empty() {
                Check::fail(
                    "cgroups",
                    format!("{found}; no hierarchy for {}", missing.join(", ")),
                    "mount them under /sys/fs/cgroup (systemd does at boot): container limits need cpu, memory and pids",
                )
            } else {
                Check::warn(
                    "cgroups",
                    found,
                    "cgroup v1 works but is deprecated in Kubernetes (kubelet's failCgroupV1); move to v2 (boot with systemd.unified_cgroup_hierarchy=1)",
                )
            }
        }
    }
}

/// v1 hierarchies from mountinfo: (mount point, controllers).
fn v1_hierarchies(mountinfo: &str) -> Vec<(String, Vec<String>)> {
    const CONTROLLERS: &[&str] = &[
        "blkio",
        "cpu",
        "cpuacct",
        "cpuset",
        "devices",
        "freezer",
        "hugetlb",
        "memory",
        "misc",
        "net_cls",
        "net_prio",
        "perf_event",
        "pids",
        "rdma",
    ];
    mountinfo
        .lines()
        .filter_map(|line| {
            // `... <mount point> <options> [optional fields] - <fstype> <source> <super options>`
            let (left, right) = line.split_once(" - ")?;
            let mut right = right.split(' ');
            if right.next()? != "cgroup" {
                return None;
            }
            let supers = right.nth(1).unwrap_or("");
            let point = left.split(' ').nth(4)?.to_string();
            let controllers: Vec<String> = supers
                .split(',')
                .filter(|o| CONTROLLERS.contains(o))
                .map(String::from)
                .collect();
            (!controllers.is_empty()).then_some((point, controllers))
        })
        .collect()
}

fn check_seccomp() -> Check {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let mode = status
        .lines()
        .find_map(|l| l.strip_prefix("Seccomp:"))
        .map(str::trim);
    let actions = std::fs::read_to_string("/proc/sys/kernel/seccomp/actions_avail").ok();
    match (mode, actions) {
        (Some(mode), Some(actions)) => {
            let found = format!("filters supported (actions: {})", actions.trim());
            if mode == "0" {
                Check::ok("seccomp", found)
            } else {
                // Filters stack: containers still get theirs, on top.
                Check::ok(
                    "seccomp",
                    format!("{found}; this process already runs under a filter (mode {mode})"),
                )
            }
        }
        (Some(_), None) => Check::fail(
            "seccomp",
            "the kernel has seccomp but not seccomp filters (no /proc/sys/kernel/seccomp/actions_avail)",
            "use a kernel with CONFIG_SECCOMP_FILTER: RuntimeDefault profiles need it",
        ),
        (None, _) => Check::fail(
            "seccomp",
            "no Seccomp line in /proc/self/status: the kernel lacks CONFIG_SECCOMP",
            "use a kernel with CONFIG_SECCOMP and CONFIG_SECCOMP_FILTER: RuntimeDefault profiles need them",
        ),
    }
}

fn check_cgroup_driver(config: &Config) -> Check {
    let booted_systemd = Path::new("/run/systemd/system").is_dir();
    let driver = config.effective_cgroup_driver();
    let how = match config.cgroup_driver {
        CgroupDriverSetting::Auto if booted_systemd => "auto: the host booted with systemd",
        CgroupDriverSetting::Auto => "auto: the host did not boot with systemd",
        _ => "set in the config",
    };
    let name = match driver {
        CgroupDriver::Systemd => "systemd",
        CgroupDriver::Cgroupfs => "cgroupfs",
    };
    if driver == CgroupDriver::Systemd && !booted_systemd {
        return Check::fail(
            "cgroup driver",
            format!(
                "{name} ({how}), but /run/systemd/system is missing: containers would fail to start"
            ),
            "set cgroup_driver: cgroupfs (or auto) here and kubelet's cgroupDriver to match",
        );
    }
    Check::ok(
        "cgroup driver",
        format!("{name} ({how}); kubelet's cgroupDriver must be {name}"),
    )
}

fn check_cni(config: &Config) -> Check {
    let cni = crust_cni::Cni::new(&config.cni.conf_dir, config.cni.bin_dirs.clone());
    match cni.load() {
        Ok(list) => {
            let plugins: Vec<String> = list
                .plugins
                .iter()
                .map(|p| format!("{} ({})", p.plugin_type, p.binary.display()))
                .collect();
            Check::ok(
                "cni",
                format!(
                    "network {:?} from {}, plugins: {}",
                    list.name,
                    list.source.display(),
                    plugins.join(", ")
                ),
            )
        }
        // No config yet is how most nodes start: the network add-on writes
        // one once the node has joined. Pods wait for it (NetworkReady).
        Err(e @ crust_cni::CniError::NoConfig { .. }) => Check::warn(
            "cni",
            e.to_string(),
            format!(
                "pods cannot start until a network add-on (or you) writes a .conflist to {}",
                config.cni.conf_dir.display()
            ),
        ),
        Err(e) => Check::fail(
            "cni",
            e.to_string(),
            format!(
                "fix the config, or install the plugins it names into one of {} (Debian: containernetworking-plugins)",
                dirs(&config.cni.bin_dirs)
            ),
        ),
    }
}

fn check_shims(config: &Config) -> Vec<Check> {
    config
        .runtime
        .handlers
        .iter()
        .map(|(name, handler)| {
            let check = format!("handler {name}");
            match crust_runtime::shim::resolve_binary(&handler.shim) {
                Ok(path) => Check::ok(&check, format!("shim {}", path.display())),
                Err(e) => Check::fail(
                    &check,
                    e.to_string(),
                    format!("install it, or set runtime.handlers.{name}.shim to its absolute path"),
                ),
            }
        })
        .collect()
}

/// The socket's directory: whoever can write there can swap the socket
/// kubelet talks to for their own.
fn check_socket_dir(socket: &Path) -> Check {
    let Some(dir) = socket.parent() else {
        return Check::fail(
            "socket dir",
            format!("socket {} has no directory", socket.display()),
            "set socket to an absolute path such as /run/crust/crust.sock",
        );
    };
    match std::fs::metadata(dir) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Check::ok(
            "socket dir",
            format!(
                "{} does not exist yet; crustd creates it (0700) at start",
                dir.display()
            ),
        ),
        Err(e) => Check::fail(
            "socket dir",
            format!("{}: {e}", dir.display()),
            "make it a directory root can read",
        ),
        Ok(meta) => match unsafe_dir(&meta) {
            Some(why) => Check::fail(
                "socket dir",
                format!("{} {why}", dir.display()),
                format!(
                    "`chown root {0} && chmod go-w {0}`, or put the socket in a dir of its own (/run/crust)",
                    dir.display()
                ),
            ),
            None => Check::ok(
                "socket dir",
                format!(
                    "{} ({:04o}, owner uid {})",
                    dir.display(),
                    meta.permissions().mode() & 0o7777,
                    meta.uid()
                ),
            ),
        },
    }
}

/// root, state and image_fs: crustd makes them 0700; one that others can
/// write lets them plant layers, shim sockets or records.
fn check_private_dir(key: &str, dir: &Path) -> Check {
    match std::fs::metadata(dir) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Check::ok(
            key,
            format!(
                "{} does not exist yet; crustd creates it (0700) at start",
                dir.display()
            ),
        ),
        Err(e) => Check::fail(
            key,
            format!("{}: {e}", dir.display()),
            "make it a directory root can use",
        ),
        Ok(meta) if !meta.is_dir() => Check::fail(
            key,
            format!("{} is not a directory", dir.display()),
            format!("remove it or set {key} to a directory"),
        ),
        Ok(meta) => match unsafe_dir(&meta) {
            Some(why) => Check::fail(
                key,
                format!("{} {why}", dir.display()),
                format!("`chown root {0} && chmod 0700 {0}`", dir.display()),
            ),
            None => Check::ok(
                key,
                format!(
                    "{} ({:04o}, owner uid {})",
                    dir.display(),
                    meta.permissions().mode() & 0o7777,
                    meta.uid()
                ),
            ),
        },
    }
}

/// Why a directory is unsafe to hold crust's files, if it is: writable by
/// group or others, or owned by someone other than root.
fn unsafe_dir(meta: &std::fs::Metadata) -> Option<String> {
    let mode = meta.permissions().mode() & 0o7777;
    if mode & 0o022 != 0 {
        return Some(format!("is writable by group or others ({mode:04o})"));
    }
    if meta.uid() != 0 {
        return Some(format!("is owned by uid {}, not root", meta.uid()));
    }
    None
}

fn kernel_release() -> String {
    std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "(unknown kernel)".into())
}

fn dirs(dirs: &[PathBuf]) -> String {
    dirs.iter()
        .map(|d| d.display().to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_are_greppable() {
        assert_eq!(
            Check::ok("overlayfs", "supported").to_string(),
            "OK   overlayfs: supported"
        );
        assert_eq!(
            Check::warn("cni", "no config", "write one").to_string(),
            "WARN cni: no config; fix: write one"
        );
        assert_eq!(
            Check::fail("seccomp", "missing", "new kernel").to_string(),
            "FAIL seccomp: missing; fix: new kernel"
        );
    }

    #[test]
    fn v1_hierarchies_come_from_mountinfo() {
        let mountinfo = "\
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu,cpuacct rw,relatime shared:9 - cgroup cgroup rw,cpu,cpuacct
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,xattr,name=systemd
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
";
        assert_eq!(
            v1_hierarchies(mountinfo),
            [
                (
                    "/sys/fs/cgroup/cpu,cpuacct".to_string(),
                    vec!["cpu".to_string(), "cpuacct".to_string()]
                ),
                (
                    "/sys/fs/cgroup/memory".to_string(),
                    vec!["memory".to_string()]
                ),
            ]
        );
    }

    #[test]
    fn group_or_world_writable_or_foreign_dirs_are_unsafe() {
        let dir = tempfile::tempdir().unwrap();
        let set = |mode| {
            std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(mode)).unwrap()
        };
        let root = nix::unistd::geteuid().is_root();
        set(0o700);
        let meta = std::fs::metadata(dir.path()).unwrap();
        assert_eq!(unsafe_dir(&meta).is_none(), root);
        for mode in [0o770, 0o707, 0o1777] {
            set(mode);
            let why = unsafe_dir(&std::fs::metadata(dir.path()).unwrap()).unwrap();
            assert!(why.contains("writable"), "{mode:o}: {why}");
        }
        set(0o700);
        let check = check_private_dir("root", dir.path());
        assert_eq!(check.level == Level::Ok, root, "{check}");
        let check = check_private_dir("root", &dir.path().join("missing"));
        assert_eq!(check.level, Level::Ok, "{check}");
        std::fs::write(dir.path().join("file"), "").unwrap();
        let check = check_private_dir("root", &dir.path().join("file"));
        assert_eq!(check.level, Level::Fail, "{check}");
        set(0o777);
        let check = check_socket_dir(&dir.path().join("crust.sock"));
        assert_eq!(check.level, Level::Fail, "{check}");
        assert!(check.to_string().contains("chmod go-w"), "{check}");
    }

    #[test]
    fn cni_without_config_warns_and_a_missing_plugin_fails() {
        let dir = tempfile::tempdir().unwrap();
        let mut config = Config::default();
        config.cni.conf_dir = dir.path().join("net.d");
        config.cni.bin_dirs = vec![dir.path().join("bin")];
        assert_eq!(check_cni(&config).level, Level::Warn);
        std::fs::create_dir(&config.cni.conf_dir).unwrap();
        std::fs::write(
            config.cni.conf_dir.join("10-x.conflist"),
            r#"{"cniVersion":"1.0.0","name":"x","plugins":[{"type":"bridge"}]}"#,
        )
        .unwrap();
        let check = check_cni(&config);
        assert_eq!(check.level, Level::Fail, "{check}");
        assert!(check.found.contains("bridge"), "{check}");
        std::fs::create_dir(dir.path().join("bin")).unwrap();
        let bridge = dir.path().join("bin/bridge");
        std::fs::write(&bridge, "#!/bin/sh\n").unwrap();
        std::fs::set_permissions(&bridge, std::fs::Permissions::from_mode(0o755)).unwrap();
        let check = check_cni(&config);
        assert_eq!(check.level, Level::Ok, "{check}");
        assert!(check.found.contains("\"x\""), "{check}");
    }

    #[test]
    fn systemd_driver_without_systemd_fails() {
        let mut config = Config {
            cgroup_driver: CgroupDriverSetting::Systemd,
            ..Config::default()
        };
        let check = check_cgroup_driver(&config);
        let booted = Path::new("/run/systemd/system").is_dir();
        assert_eq!(check.level == Level::Fail, !booted, "{check}");
        config.cgroup_driver = CgroupDriverSetting::Cgroupfs;
        assert_eq!(check_cgroup_driver(&config).level, Level::Ok);
    }
}
