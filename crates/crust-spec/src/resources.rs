//! cgroups path, resource limits, oom_score_adj and devices.

use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use crust_cri_api::v1::{ContainerConfig, LinuxContainerResources};
use oci_spec::runtime::{
    LinuxCpu, LinuxCpuBuilder, LinuxDevice, LinuxDeviceBuilder, LinuxDeviceCgroup,
    LinuxDeviceCgroupBuilder, LinuxDeviceType, LinuxHugepageLimit, LinuxHugepageLimitBuilder,
    LinuxMemory, LinuxMemoryBuilder,
};

use crate::error::{reject_control, reject_nul};
use crate::{CgroupDriver, SandboxFacts, SpecError};

/// cgroupfs: `<parent>/<id>` (default parent `/crust`); systemd:
/// `<slice>:cri-crust:<id>` (default `system.slice`), as containerd.
pub(crate) fn cgroups_path(sandbox: &SandboxFacts, id: &str) -> Result<String, SpecError> {
    let parent = sandbox.cgroup_parent.as_str();
    check_cgroup_parent(parent)?;
    match sandbox.cgroup_driver {
        CgroupDriver::Cgroupfs => {
            let parent = parent.trim_end_matches('/');
            let parent = if parent.is_empty() { "/crust" } else { parent };
            let sep = if parent.starts_with('/') { "" } else { "/" };
            Ok(format!("{sep}{parent}/{id}"))
        }
        CgroupDriver::Systemd => {
            let slice = systemd_slice(parent);
            if !slice.ends_with(".slice") || slice.contains(':') {
                return Err(SpecError::invalid(
                    "cgroup_parent",
                    parent,
                    "the systemd cgroup driver needs a slice name such as kubepods-besteffort-pod<uid>.slice",
                ));
            }
            Ok(format!("{slice}:cri-crust:{id}"))
        }
    }
}

/// The systemd slice a pod's units go in, from its cgroup_parent: kubelet
/// may pass the slice's full path, a unit wants its name; none is
/// `system.slice`. Whether it is a slice name at all is the caller's check.
pub fn systemd_slice(cgroup_parent: &str) -> &str {
    let slice = cgroup_parent
        .trim_end_matches('/')
        .rsplit('/')
        .next()
        .unwrap_or("");
    if slice.is_empty() {
        "system.slice"
    } else {
        slice
    }
}

/// The one check of a pod's cgroup_parent, for RunPodSandbox (which makes
/// and later removes it) and CreateContainer alike: no control characters
/// and no `..`, so it names a cgroup below the hierarchy's root.
pub fn check_cgroup_parent(parent: &str) -> Result<(), SpecError> {
    reject_control("cgroup_parent", parent)?;
    if parent.split('/').any(|p| p == "..") {
        return Err(SpecError::invalid(
            "cgroup_parent",
            parent,
            "must not contain '..'",
        ));
    }
    Ok(())
}

pub(crate) struct Resources {
    pub cpu: Option<LinuxCpu>,
    pub memory: Option<LinuxMemory>,
    pub hugepages: Vec<LinuxHugepageLimit>,
    pub unified: Option<std::collections::HashMap<String, String>>,
    pub oom_score_adj: Option<i32>,
}

fn cpuset(field: &str, v: &str) -> Result<(), SpecError> {
    if !v
        .bytes()
        .all(|b| b.is_ascii_digit() || b == b',' || b == b'-')
    {
        return Err(SpecError::invalid(
            field,
            v,
            "expected a CPU/node list like 0-3,5",
        ));
    }
    Ok(())
}

fn non_negative(field: &str, v: i64) -> Result<u64, SpecError> {
    u64::try_from(v).map_err(|_| SpecError::invalid(field, v.to_string(), "must not be negative"))
}

/// cgroup v2 files kubelet may set through `unified`. Restricting the keys
/// to `<controller>.<file>` keeps a key from naming `cgroup.procs` or a path
/// outside the container's cgroup.
const UNIFIED_CONTROLLERS: &[&str] = &[
    "cpu", "cpuset", "memory", "io", "pids", "hugetlb", "rdma", "misc",
];

fn unified_key(k: &str) -> Result<(), SpecError> {
    let ok = k.split_once('.').is_some_and(|(ctl, file)| {
        UNIFIED_CONTROLLERS.contains(&ctl)
            && !file.is_empty()
            && file
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'_')
    });
    if !ok {
        return Err(SpecError::invalid(
            "unified key",
            k,
            "expected a cgroup v2 file of cpu, cpuset, memory, io, pids, hugetlb, rdma or misc",
        ));
    }
    Ok(())
}

/// Validates resources the way CreateContainer does, for
/// UpdateContainerResources: the same checks ([`resources`]) on the same
/// fields, so an update cannot set what a create would refuse (a
/// `unified` key naming a path outside the container's cgroup, a
/// negative limit, a malformed cpuset).
pub fn check_container_resources(r: &LinuxContainerResources) -> Result<(), SpecError> {
    crate::limits::check_resources("linux", r)?;
    resources(Some(r), -1000).map(|_| ())
}

pub(crate) fn resources(
    r: Option<&LinuxContainerResources>,
    oom_score_adj_min: i64,
) -> Result<Resources, SpecError> {
    let Some(r) = r else {
        return Ok(Resources {
            cpu: None,
            memory: None,
            hugepages: vec![],
            unified: None,
            oom_score_adj: None,
        });
    };

    let mut cpu = LinuxCpuBuilder::default();
    let mut any_cpu = false;
    if r.cpu_shares != 0 {
        cpu = cpu.shares(non_negative("cpu_shares", r.cpu_shares)?);
        any_cpu = true;
    }
    if r.cpu_period != 0 {
        cpu = cpu.period(non_negative("cpu_period", r.cpu_period)?);
        any_cpu = true;
    }
    if r.cpu_quota != 0 {
        cpu = cpu.quota(r.cpu_quota);
        any_cpu = true;
    }
    if !r.cpuset_cpus.is_empty() {
        cpuset("cpuset_cpus", &r.cpuset_cpus)?;
        cpu = cpu.cpus(r.cpuset_cpus.clone());
        any_cpu = true;
    }
    if !r.cpuset_mems.is_empty() {
        cpuset("cpuset_mems", &r.cpuset_mems)?;
        cpu = cpu.mems(r.cpuset_mems.clone());
        any_cpu = true;
    }

    let mut mem = LinuxMemoryBuilder::default();
    let mut any_mem = false;
    if r.memory_limit_in_bytes != 0 {
        let limit = non_negative("memory_limit_in_bytes", r.memory_limit_in_bytes)? as i64;
        mem = mem.limit(limit);
        // Swap equal to the limit: no swapping unless asked (as containerd).
        if r.memory_swap_limit_in_bytes == 0 {
            mem = mem.swap(limit);
        }
        any_mem = true;
    }
    if r.memory_swap_limit_in_bytes != 0 {
        if r.memory_swap_limit_in_bytes < -1 {
            return Err(SpecError::invalid(
                "memory_swap_limit_in_bytes",
                r.memory_swap_limit_in_bytes.to_string(),
                "must be -1 (unlimited) or a byte count",
            ));
        }
        mem = mem.swap(r.memory_swap_limit_in_bytes);
        any_mem = true;
    }

    let mut hugepages = Vec::with_capacity(r.hugepage_limits.len());
    for h in &r.hugepage_limits {
        let size_ok = h
            .page_size
            .strip_suffix("B")
            .and_then(|s| s.strip_suffix(['K', 'M', 'G', 'T', 'P']))
            .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()));
        if !size_ok {
            return Err(SpecError::invalid(
                "hugepage_limits page_size",
                &h.page_size,
                "expected a size like 2MB or 1GB",
            ));
        }
        let limit = i64::try_from(h.limit).map_err(|_| {
            SpecError::invalid("hugepage_limits limit", h.limit.to_string(), "too large")
        })?;
        hugepages.push(
            LinuxHugepageLimitBuilder::default()
                .page_size(h.page_size.clone())
                .limit(limit)
                .build()?,
        );
    }

    let unified = if r.unified.is_empty() {
        None
    } else {
        for (k, v) in &r.unified {
            unified_key(k)?;
            reject_control(&format!("unified {k}"), v)?;
        }
        Some(r.unified.clone())
    };

    let adj = r.oom_score_adj;
    if !(-1000..=1000).contains(&adj) {
        return Err(SpecError::invalid(
            "oom_score_adj",
            adj.to_string(),
            "must be between -1000 and 1000",
        ));
    }
    // This host may refuse lowering the score (containerd's
    // restrict_oom_score_adj): use the lowest value it allows.
    let adj = if adj < oom_score_adj_min {
        tracing::debug!(
            requested = adj,
            used = oom_score_adj_min,
            "oom_score_adj clamped to the lowest value this host allows"
        );
        oom_score_adj_min.clamp(-1000, 1000)
    } else {
        adj
    };

    Ok(Resources {
        cpu: if any_cpu { Some(cpu.build()?) } else { None },
        memory: if any_mem { Some(mem.build()?) } else { None },
        hugepages,
        unified,
        oom_score_adj: Some(adj as i32),
    })
}

/// Reads a device node's type, numbers, mode and owner (stat, following
/// symlinks as containerd does). The returned `path` is the host path;
/// callers set the container path.
pub fn device_from_host(path: &Path) -> Result<LinuxDevice, SpecError> {
    let md = std::fs::metadata(path).map_err(|source| SpecError::Io {
        what: "device".into(),
        path: path.to_path_buf(),
        source,
    })?;
    let ft = md.file_type();
    let typ = if ft.is_char_device() {
        LinuxDeviceType::C
    } else if ft.is_block_device() {
        LinuxDeviceType::B
    } else if ft.is_fifo() {
        LinuxDeviceType::P
    } else {
        return Err(SpecError::invalid(
            "device host_path",
            path.display().to_string(),
            "is not a device node",
        ));
    };
    let rdev = md.rdev();
    Ok(LinuxDeviceBuilder::default()
        .path(path)
        .typ(typ)
        .major(nix::sys::stat::major(rdev) as i64)
        .minor(nix::sys::stat::minor(rdev) as i64)
        .file_mode(md.mode() & 0o7777)
        .uid(md.uid())
        .gid(md.gid())
        .build()?)
}

/// A device or, for a directory, every device below it (as containerd).
/// Bounded so a huge tree cannot stall CreateContainer.
fn devices_under(
    host: &Path,
    dst: &Path,
    out: &mut Vec<LinuxDevice>,
    depth: usize,
) -> Result<(), SpecError> {
    const MAX_DEVICES: usize = 4096;
    let md = std::fs::metadata(host).map_err(|source| SpecError::Io {
        what: "device".into(),
        path: host.to_path_buf(),
        source,
    })?;
    if !md.is_dir() {
        let mut d = device_from_host(host)?;
        d.set_path(dst.to_path_buf());
        out.push(d);
        return Ok(());
    }
    if depth > 8 {
        return Ok(());
    }
    let entries = std::fs::read_dir(host).map_err(|source| SpecError::Io {
        what: "device directory".into(),
        path: host.to_path_buf(),
        source,
    })?;
    let mut names: Vec<_> = entries.filter_map(|e| e.ok()).collect();
    names.sort_by_key(|e| e.file_name());
    for e in names {
        let Ok(ft) = e.file_type() else { continue };
        let (h, d) = (e.path(), dst.join(e.file_name()));
        if ft.is_dir() {
            devices_under(&h, &d, out, depth + 1)?;
        } else if ft.is_char_device() || ft.is_block_device() {
            let mut dev = device_from_host(&h)?;
            dev.set_path(d);
            out.push(dev);
        }
        if out.len() > MAX_DEVICES {
            return Err(SpecError::invalid(
                "device host_path",
                host.display().to_string(),
                format!("more than {MAX_DEVICES} devices"),
            ));
        }
    }
    Ok(())
}

fn cgroup_rule(
    allow: bool,
    typ: Option<LinuxDeviceType>,
    major: Option<i64>,
    minor: Option<i64>,
    access: &str,
) -> Result<LinuxDeviceCgroup, SpecError> {
    let mut b = LinuxDeviceCgroupBuilder::default()
        .allow(allow)
        .access(access);
    if let Some(t) = typ {
        b = b.typ(t);
    }
    if let Some(m) = major {
        b = b.major(m);
    }
    if let Some(m) = minor {
        b = b.minor(m);
    }
    Ok(b.build()?)
}

/// Deny everything, then containerd's default allow list.
fn default_device_rules() -> Result<Vec<LinuxDeviceCgroup>, SpecError> {
    let c = Some(LinuxDeviceType::C);
    let mut v = vec![cgroup_rule(false, None, None, None, "rwm")?];
    for (major, minor) in [
        (1, Some(3)),    // null
        (1, Some(8)),    // random
        (1, Some(7)),    // full
        (5, Some(0)),    // tty
        (1, Some(5)),    // zero
        (1, Some(9)),    // urandom
        (5, Some(1)),    // console
        (136, None),     // pts/*
        (5, Some(2)),    // ptmx
        (10, Some(200)), // net/tun
    ] {
        v.push(cgroup_rule(true, c, Some(major), minor, "rwm")?);
    }
    Ok(v)
}

pub(crate) struct Devices {
    pub devices: Vec<LinuxDevice>,
    pub rules: Vec<LinuxDeviceCgroup>,
}

fn permissions(p: &str) -> Result<String, SpecError> {
    if p.is_empty() {
        // Empty access means all, in the OCI spec and in runc.
        return Ok("rwm".into());
    }
    let mut seen = [false; 3];
    for c in p.chars() {
        let i = match c {
            'r' => 0,
            'w' => 1,
            'm' => 2,
            _ => usize::MAX,
        };
        if i == usize::MAX || seen[i] {
            return Err(SpecError::invalid(
                "device permissions",
                p,
                "expected letters from r, w, m",
            ));
        }
        seen[i] = true;
    }
    Ok(p.to_string())
}

/// CRI devices (stat'ed on the host) and the device cgroup rules.
/// Privileged: every host device under /dev and all devices allowed.
pub(crate) fn devices(config: &ContainerConfig, privileged: bool) -> Result<Devices, SpecError> {
    let mut devices = Vec::new();
    let mut rules = if privileged {
        vec![cgroup_rule(true, None, None, None, "rwm")?]
    } else {
        default_device_rules()?
    };
    if privileged {
        host_devices(Path::new("/dev"), &mut devices)?;
    }
    for d in &config.devices {
        reject_nul("device host_path", &d.host_path)?;
        reject_nul("device container_path", &d.container_path)?;
        if !d.host_path.starts_with('/') {
            return Err(SpecError::invalid(
                "device host_path",
                &d.host_path,
                "must be an absolute path",
            ));
        }
        let dst = if d.container_path.is_empty() {
            &d.host_path
        } else {
            &d.container_path
        };
        if !dst.starts_with('/') {
            return Err(SpecError::invalid(
                "device container_path",
                dst,
                "must be an absolute path",
            ));
        }
        let access = permissions(&d.permissions)?;
        let mut found = Vec::new();
        devices_under(Path::new(&d.host_path), Path::new(dst), &mut found, 0)?;
        for dev in found {
            if !privileged {
                rules.push(cgroup_rule(
                    true,
                    Some(dev.typ()),
                    Some(dev.major()),
                    Some(dev.minor()),
                    &access,
                )?);
            }
            // A CRI device replaces a host device at the same path.
            devices.retain(|x: &LinuxDevice| x.path() != dev.path());
            devices.push(dev);
        }
    }
    Ok(Devices { devices, rules })
}

/// containerd's HostDevices: device nodes under /dev, skipping the
/// per-container filesystems and the console.
fn host_devices(dir: &Path, out: &mut Vec<LinuxDevice>) -> Result<(), SpecError> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Ok(());
    };
    let mut entries: Vec<_> = entries.filter_map(|e| e.ok()).collect();
    entries.sort_by_key(|e| e.file_name());
    for e in entries {
        let Ok(ft) = e.file_type() else { continue };
        let path: PathBuf = e.path();
        if ft.is_dir() {
            let name = e.file_name();
            if !matches!(
                name.to_str(),
                Some("pts" | "shm" | "fd" | "mqueue" | ".lxc" | ".lxd-mounts" | ".udev")
            ) {
                host_devices(&path, out)?;
            }
        } else if (ft.is_char_device() || ft.is_block_device())
            && path != Path::new("/dev/console")
            && let Ok(d) = device_from_host(&path)
        {
            out.push(d);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crust_cri_api::v1::{Device, HugepageLimit};

    fn sb(parent: &str, driver: CgroupDriver) -> SandboxFacts {
        SandboxFacts {
            cgroup_parent: parent.into(),
            cgroup_driver: driver,
            ..crate::mounts::tests::sandbox()
        }
    }

    #[test]
    fn cgroup_paths_both_drivers() {
        let id = "ab".repeat(32);
        let cases = [
            (
                "/kubepods/besteffort/pod1",
                CgroupDriver::Cgroupfs,
                format!("/kubepods/besteffort/pod1/{id}"),
            ),
            (
                "/kubepods/",
                CgroupDriver::Cgroupfs,
                format!("/kubepods/{id}"),
            ),
            (
                "kubepods",
                CgroupDriver::Cgroupfs,
                format!("/kubepods/{id}"),
            ),
            ("", CgroupDriver::Cgroupfs, format!("/crust/{id}")),
            (
                "kubepods-besteffort-pod1.slice",
                CgroupDriver::Systemd,
                format!("kubepods-besteffort-pod1.slice:cri-crust:{id}"),
            ),
            (
                "/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod1.slice",
                CgroupDriver::Systemd,
                format!("kubepods-besteffort-pod1.slice:cri-crust:{id}"),
            ),
            (
                "",
                CgroupDriver::Systemd,
                format!("system.slice:cri-crust:{id}"),
            ),
        ];
        for (parent, driver, want) in cases {
            assert_eq!(
                cgroups_path(&sb(parent, driver), &id).unwrap(),
                want,
                "{parent}"
            );
        }
        for (parent, driver) in [
            ("/kubepods/../../etc", CgroupDriver::Cgroupfs),
            ("/kubepods\n", CgroupDriver::Cgroupfs),
            ("/kubepods/besteffort", CgroupDriver::Systemd),
            ("a:b.slice", CgroupDriver::Systemd),
        ] {
            let e = cgroups_path(&sb(parent, driver), &id)
                .unwrap_err()
                .to_string();
            assert!(e.contains("cgroup_parent"), "{e}");
        }
    }

    #[test]
    fn resource_mapping() {
        let r = LinuxContainerResources {
            cpu_period: 100000,
            cpu_quota: 50000,
            cpu_shares: 512,
            memory_limit_in_bytes: 64 << 20,
            oom_score_adj: 500,
            cpuset_cpus: "0-1".into(),
            cpuset_mems: "0".into(),
            hugepage_limits: vec![HugepageLimit {
                page_size: "2MB".into(),
                limit: 4 << 20,
            }],
            unified: [("memory.high".to_string(), "max".to_string())].into(),
            memory_swap_limit_in_bytes: 0,
        };
        let out = resources(Some(&r), -1000).unwrap();
        let cpu = out.cpu.unwrap();
        assert_eq!(
            (cpu.shares(), cpu.quota(), cpu.period()),
            (Some(512), Some(50000), Some(100000))
        );
        assert_eq!(
            (cpu.cpus().as_deref(), cpu.mems().as_deref()),
            (Some("0-1"), Some("0"))
        );
        let mem = out.memory.unwrap();
        assert_eq!((mem.limit(), mem.swap()), (Some(64 << 20), Some(64 << 20)));
        assert_eq!(out.hugepages.len(), 1);
        assert_eq!(out.hugepages[0].page_size(), "2MB");
        assert_eq!(out.unified.unwrap()["memory.high"], "max");
        assert_eq!(out.oom_score_adj, Some(500));

        // Explicit swap wins; nothing set means nothing in the spec.
        let r2 = LinuxContainerResources {
            memory_limit_in_bytes: 100,
            memory_swap_limit_in_bytes: 300,
            ..Default::default()
        };
        let mem = resources(Some(&r2), 0).unwrap().memory.unwrap();
        assert_eq!((mem.limit(), mem.swap()), (Some(100), Some(300)));
        let none = resources(Some(&LinuxContainerResources::default()), 0).unwrap();
        assert!(none.cpu.is_none() && none.memory.is_none() && none.unified.is_none());
        assert_eq!(none.oom_score_adj, Some(0));
        assert_eq!(resources(None, 0).unwrap().oom_score_adj, None);
    }

    #[test]
    fn oom_score_adj_is_clamped() {
        let r = LinuxContainerResources {
            oom_score_adj: -997,
            ..Default::default()
        };
        assert_eq!(resources(Some(&r), -500).unwrap().oom_score_adj, Some(-500));
        assert_eq!(
            resources(Some(&r), -1000).unwrap().oom_score_adj,
            Some(-997)
        );
        let r = LinuxContainerResources {
            oom_score_adj: 1000,
            ..Default::default()
        };
        assert_eq!(resources(Some(&r), 0).unwrap().oom_score_adj, Some(1000));
        let r = LinuxContainerResources {
            oom_score_adj: 1001,
            ..Default::default()
        };
        assert!(resources(Some(&r), 0).is_err());
    }

    #[test]
    fn resource_validation() {
        let bad = [
            LinuxContainerResources {
                cpu_shares: -1,
                ..Default::default()
            },
            LinuxContainerResources {
                cpu_period: -1,
                ..Default::default()
            },
            LinuxContainerResources {
                memory_limit_in_bytes: -5,
                ..Default::default()
            },
            LinuxContainerResources {
                memory_swap_limit_in_bytes: -2,
                ..Default::default()
            },
            LinuxContainerResources {
                cpuset_cpus: "0-1\n".into(),
                ..Default::default()
            },
            LinuxContainerResources {
                cpuset_mems: "x".into(),
                ..Default::default()
            },
            LinuxContainerResources {
                hugepage_limits: vec![HugepageLimit {
                    page_size: "2XB".into(),
                    limit: 1,
                }],
                ..Default::default()
            },
            LinuxContainerResources {
                hugepage_limits: vec![HugepageLimit {
                    page_size: "2MB".into(),
                    limit: u64::MAX,
                }],
                ..Default::default()
            },
            LinuxContainerResources {
                unified: [("cgroup.procs".to_string(), "1".to_string())].into(),
                ..Default::default()
            },
            LinuxContainerResources {
                unified: [("../memory.max".to_string(), "1".to_string())].into(),
                ..Default::default()
            },
            LinuxContainerResources {
                unified: [("memory.max".to_string(), "1\nx".to_string())].into(),
                ..Default::default()
            },
        ];
        for r in bad {
            assert!(resources(Some(&r), -1000).is_err(), "{r:?}");
            // UpdateContainerResources refuses the same.
            assert!(check_container_resources(&r).is_err(), "{r:?}");
        }
    }

    /// UpdateContainerResources' check: a unified key is a file name in
    /// the container's own cgroup, never a path (libcgroups joins it onto
    /// the cgroup dir, so `/etc/passwd` or `../x` would write a host file).
    #[test]
    fn update_resources_refuse_unified_paths() {
        for key in [
            "/etc/passwd",
            "../x",
            "memory.max/../../../../etc/passwd",
            "memory/../../x",
            "cgroup.procs",
            "cgroup.subtree_control",
            "",
        ] {
            let r = LinuxContainerResources {
                unified: [(key.to_string(), "1".to_string())].into(),
                ..Default::default()
            };
            let e = check_container_resources(&r).unwrap_err().to_string();
            assert!(e.contains("unified key"), "{key:?}: {e}");
        }
        let ok = LinuxContainerResources {
            cpu_shares: 512,
            memory_limit_in_bytes: 64 << 20,
            unified: [("memory.high".to_string(), "max".to_string())].into(),
            ..Default::default()
        };
        check_container_resources(&ok).unwrap();
    }

    #[test]
    fn device_helper_and_cri_devices() {
        let d = device_from_host(Path::new("/dev/null")).unwrap();
        assert_eq!((d.typ(), d.major(), d.minor()), (LinuxDeviceType::C, 1, 3));
        assert!(
            device_from_host(Path::new("/etc/hostname")).is_err()
                || !Path::new("/etc/hostname").exists()
        );
        assert!(device_from_host(Path::new("/nonexistent-device")).is_err());

        let config = ContainerConfig {
            devices: vec![Device {
                container_path: "/dev/mynull".into(),
                host_path: "/dev/null".into(),
                permissions: "rw".into(),
            }],
            ..Default::default()
        };
        let out = devices(&config, false).unwrap();
        assert_eq!(out.devices.len(), 1);
        assert_eq!(out.devices[0].path(), Path::new("/dev/mynull"));
        // Deny-all first, then the defaults, then the CRI device.
        assert!(!out.rules[0].allow() && out.rules[0].access().as_deref() == Some("rwm"));
        assert_eq!(out.rules.len(), 12);
        let last = out.rules.last().unwrap();
        assert!(last.allow());
        assert_eq!(
            (last.major(), last.minor(), last.access().as_deref()),
            (Some(1), Some(3), Some("rw"))
        );

        for bad in [
            Device {
                container_path: "/dev/x".into(),
                host_path: "/dev/null".into(),
                permissions: "rwx".into(),
            },
            Device {
                container_path: "/dev/x".into(),
                host_path: "/dev/null".into(),
                permissions: "rr".into(),
            },
            Device {
                container_path: "rel".into(),
                host_path: "/dev/null".into(),
                permissions: "r".into(),
            },
            Device {
                container_path: "/dev/x".into(),
                host_path: "dev/null".into(),
                permissions: "r".into(),
            },
            Device {
                container_path: "/dev/x".into(),
                host_path: "/proc/self/status".into(),
                permissions: "r".into(),
            },
        ] {
            let config = ContainerConfig {
                devices: vec![bad.clone()],
                ..Default::default()
            };
            assert!(devices(&config, false).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn privileged_allows_all_devices() {
        let out = devices(&ContainerConfig::default(), true).unwrap();
        assert_eq!(out.rules.len(), 1);
        assert!(
            out.rules[0].allow() && out.rules[0].typ().is_none() && out.rules[0].major().is_none()
        );
        assert!(
            out.devices
                .iter()
                .any(|d| d.path() == Path::new("/dev/null"))
        );
        assert!(!out.devices.iter().any(|d| d.path().starts_with("/dev/pts")));
    }
}
