//! The systemd cgroup driver on a cgroup v1 host (legacy or hybrid).
//!
//! youki's systemd cgroup manager is cgroup v2 only: on v1 libcgroups
//! takes the `slice:prefix:name` cgroupsPath for a plain directory name and
//! creates `/sys/fs/cgroup/<ctl>/slice:prefix:name`, outside the pod's
//! slice (so the pod's limits do not hold and crustd reads no usage). On v1
//! the shim does what runc's v1 systemd driver does instead:
//!
//! - the container's cgroups are the cgroupfs dirs systemd gives its
//!   scope, `<expanded slice>/<prefix>-<name>.scope` (crust-shim-proto's
//!   layout), created and limited by libcgroups' v1 manager: the bundle's
//!   cgroupsPath is rewritten to that absolute path before create;
//! - the scope itself is a transient unit started over D-Bus with the
//!   container's init in it and its limits as unit properties, so systemd
//!   accounts it, and a `daemon-reload` re-applies the same limits rather
//!   than resetting them. The unit name is kept in the bundle's
//!   annotations for update and delete.

use std::collections::HashMap;
use std::path::Path;
use std::time::{Duration, Instant};

use libcgroups::systemd::dbus_native::client::SystemdClient;
use libcgroups::systemd::dbus_native::dbus::DbusConnection;
use libcgroups::systemd::dbus_native::serialize::{Structure, Variant};
use libcontainer::oci_spec::runtime::{LinuxDeviceCgroup, LinuxDeviceType, LinuxResources, Spec};

/// Annotation holding the container's systemd scope on a v1 host.
pub const SCOPE_ANNOTATION: &str = "io.crust.systemd.scope";

fn cgroup_v1() -> bool {
    !Path::new("/sys/fs/cgroup/cgroup.controllers").exists()
}

/// On a v1 host, turns a systemd-form cgroupsPath into its scope's cgroupfs
/// path and notes the scope in the annotations; returns the scope and its
/// slice (None, spec untouched, on v2 or for a cgroupfs path).
pub fn prepare(spec: &mut Spec) -> Option<(String, String)> {
    // Only this function sets the annotation (crust-spec drops `io.crust.*`
    // from requests; a bundle made elsewhere gets no say either).
    if let Some(mut annotations) = spec.annotations().clone()
        && annotations.remove(SCOPE_ANNOTATION).is_some()
    {
        spec.set_annotations(Some(annotations));
    }
    let path = spec
        .linux()
        .as_ref()?
        .cgroups_path()
        .as_ref()?
        .to_string_lossy()
        .into_owned();
    let unit = crust_shim_proto::cgroup::systemd_unit(&path)?;
    if !cgroup_v1() {
        return None;
    }
    let dir = format!("/{}", crust_shim_proto::cgroup::relative_dir(&path));
    let mut linux = spec.linux().clone()?;
    linux.set_cgroups_path(Some(dir.into()));
    spec.set_linux(Some(linux));
    let mut annotations = spec.annotations().clone().unwrap_or_default();
    annotations.insert(SCOPE_ANNOTATION.to_string(), unit.unit.clone());
    spec.set_annotations(Some(annotations));
    Some((unit.unit, unit.slice))
}

/// systemd's v1 names for the limits CRI sets (what runc passes too).
fn properties(resources: Option<&LinuxResources>) -> HashMap<&'static str, Variant> {
    let mut p = HashMap::new();
    let Some(r) = resources else { return p };
    if let Some(limit) = r.memory().as_ref().and_then(|m| m.limit())
        && limit > 0
    {
        p.insert("MemoryLimit", Variant::U64(limit as u64));
    }
    if let Some(cpu) = r.cpu() {
        if let Some(shares) = cpu.shares() {
            p.insert("CPUShares", Variant::U64(shares));
        }
        if let (Some(quota), Some(period)) = (cpu.quota(), cpu.period())
            && quota > 0
            && period > 0
        {
            // systemd counts quota per second of wall time. Its period
            // property (systemd 242+) is left out: older systemd refuses
            // the whole unit for it, and libcgroups writes the period to
            // the cgroup files itself.
            let per_sec = (quota as u64).saturating_mul(1_000_000) / period;
            p.insert("CPUQuotaPerSecUSec", Variant::U64(per_sec));
        }
    }
    if let Some(max) = r.pids().as_ref().map(|p| p.limit())
        && max > 0
    {
        p.insert("TasksMax", Variant::U64(max as u64));
    }
    p
}

/// Starts the scope with the container's init in it, its limits and device
/// rules set, and waits until systemd has moved the init there.
pub fn start_scope(
    unit: &str,
    slice: &str,
    id: &str,
    pid: u32,
    resources: Option<&LinuxResources>,
) -> Result<(), String> {
    let bus = DbusConnection::new_system().map_err(|e| format!("systemd D-Bus: {e}"))?;
    let mut props: Vec<(&str, Variant)> = vec![
        (
            "Description",
            Variant::String(format!("crust container {id}")),
        ),
        ("Slice", Variant::String(slice.to_string())),
        ("Delegate", Variant::Bool(true)),
        ("MemoryAccounting", Variant::Bool(true)),
        ("CPUAccounting", Variant::Bool(true)),
        ("IOAccounting", Variant::Bool(true)),
        ("TasksAccounting", Variant::Bool(true)),
        ("DefaultDependencies", Variant::Bool(false)),
        ("PIDs", Variant::ArrayU32(vec![pid])),
    ];
    props.extend(properties(resources));
    props.extend(device_properties(
        resources
            .and_then(|r| r.devices().as_deref())
            .unwrap_or_default(),
        &std::fs::read_to_string("/proc/devices").unwrap_or_default(),
    ));
    let props = props
        .into_iter()
        .map(|(k, v)| Structure::new(k.to_string(), v))
        .collect();
    bus.proxy("org.freedesktop.systemd1", "/org/freedesktop/systemd1")
        .start_transient_unit(unit, "replace", props, vec![])
        .map_err(|e| format!("start {unit} in {slice}: {e}"))?;
    // StartTransientUnit queues a job; the init is in the scope when
    // systemd's own hierarchy says so.
    let deadline = Instant::now() + Duration::from_secs(10);
    let needle = format!("/{unit}");
    loop {
        let cgroups = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap_or_default();
        if cgroups
            .lines()
            .any(|l| l.contains(":name=systemd:") && l.ends_with(&needle))
        {
            return rejoin(pid, &cgroups, &dir_of_scope(&cgroups, &needle));
        }
        if Instant::now() > deadline {
            return Err(format!("systemd did not move pid {pid} into {unit}"));
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// The device cgroup rules as systemd's DevicePolicy and DeviceAllow, as
/// runc's v1 systemd driver passes them: systemd manages the devices
/// controller on v1 and, without them, puts the container in its slice's
/// device cgroup, which allows everything. The rules are crust-spec's: deny
/// all, then allows. A specific device is `/dev/char/MAJ:MIN`, a whole
/// major `char-<name>` (its name in /proc/devices), any major `char-*`.
fn device_properties(
    rules: &[LinuxDeviceCgroup],
    proc_devices: &str,
) -> Vec<(&'static str, Variant)> {
    let mut allow: Vec<Structure<String>> = Vec::new();
    if rules.is_empty() {
        // No rules from the spec: nothing for systemd to enforce either.
        return Vec::new();
    }
    for r in rules {
        let typ = r.typ().unwrap_or(LinuxDeviceType::A);
        let access = r.access().clone().unwrap_or_else(|| "rwm".into());
        if !r.allow() {
            // Only the leading deny-all, which strict policy is.
            continue;
        }
        let kind = match typ {
            LinuxDeviceType::A => {
                // Everything allowed (privileged): no device policy.
                return vec![
                    ("DevicePolicy", Variant::String("auto".into())),
                    ("DeviceAllow", Variant::ArrayStructString(Vec::new())),
                ];
            }
            LinuxDeviceType::B => "block",
            _ => "char",
        };
        let entry = match (r.major(), r.minor()) {
            (Some(major), Some(minor)) => format!("/dev/{kind}/{major}:{minor}"),
            (Some(major), None) => match major_name(proc_devices, kind, major) {
                Some(name) => format!("{kind}-{name}"),
                None => {
                    log::warn!(
                        "no {kind} device major {major} in /proc/devices: systemd cannot name it; only the cgroupfs rule (rewritten after the scope starts) has it, until systemd next rewrites the scope's device rules"
                    );
                    continue;
                }
            },
            (None, _) => format!("{kind}-*"),
        };
        allow.push(Structure::new(entry, access));
    }
    vec![
        ("DevicePolicy", Variant::String("strict".into())),
        ("DeviceAllow", Variant::ArrayStructString(allow)),
    ]
}

/// The name /proc/devices gives `major` in its "Character devices:" or
/// "Block devices:" section.
fn major_name(proc_devices: &str, kind: &str, major: i64) -> Option<String> {
    let header = if kind == "block" {
        "Block devices:"
    } else {
        "Character devices:"
    };
    proc_devices
        .lines()
        .skip_while(|l| l.trim() != header)
        .skip(1)
        .take_while(|l| !l.trim().is_empty())
        .filter_map(|l| l.trim().split_once(' '))
        .find(|(m, _)| m.parse() == Ok(major))
        .map(|(_, name)| name.trim().to_string())
}

/// The scope's dir, from systemd's own hierarchy line of `/proc/<pid>/cgroup`.
fn dir_of_scope(cgroups: &str, needle: &str) -> String {
    cgroups
        .lines()
        .filter(|l| l.contains(":name=systemd:"))
        .filter_map(|l| l.rsplit_once(':').map(|(_, p)| p))
        .find(|p| p.ends_with(needle))
        .unwrap_or_default()
        .to_string()
}

/// systemd places the init, in each controller hierarchy it manages, in
/// the nearest cgroup it realized for the unit; back into the scope's own
/// dirs (libcgroups made them) wherever that is not the scope's, as runc
/// joins its paths after starting the unit.
fn rejoin(pid: u32, cgroups: &str, dir: &str) -> Result<(), String> {
    for line in cgroups.lines() {
        let mut f = line.splitn(3, ':');
        let (Some(_), Some(controllers), Some(path)) = (f.next(), f.next(), f.next()) else {
            continue;
        };
        if controllers.is_empty() || controllers.starts_with("name=") || path == dir {
            continue;
        }
        let first = controllers.split(',').next().unwrap_or(controllers);
        let procs = Path::new("/sys/fs/cgroup")
            .join(first)
            .join(dir.trim_start_matches('/'))
            .join("cgroup.procs");
        if procs.exists() {
            std::fs::write(&procs, pid.to_string())
                .map_err(|e| format!("{}: {e}", procs.display()))?;
        }
    }
    Ok(())
}

/// New limits for the scope (UpdateContainerResources), after libcgroups
/// wrote them to the cgroup files.
pub fn update_scope(unit: &str, resources: &LinuxResources) -> Result<(), String> {
    let props = properties(Some(resources));
    if props.is_empty() {
        return Ok(());
    }
    let bus = DbusConnection::new_system().map_err(|e| format!("systemd D-Bus: {e}"))?;
    bus.set_unit_properties(unit, &props)
        .map_err(|e| format!("set the limits of {unit}: {e}"))
}

/// Stops the scope (its processes are gone by now; systemd also drops an
/// empty scope by itself). A missing unit is fine.
pub fn stop_scope(unit: &str) {
    let Ok(bus) = DbusConnection::new_system() else {
        log::warn!("cannot reach systemd to stop {unit}");
        return;
    };
    if bus.transient_unit_exists(unit)
        && let Err(e) = bus.stop_transient_unit(unit)
    {
        log::warn!("stop {unit}: {e}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use libcontainer::oci_spec::runtime::{
        LinuxBuilder, LinuxCpuBuilder, LinuxDeviceCgroupBuilder, LinuxMemoryBuilder,
        LinuxPidsBuilder, LinuxResourcesBuilder, SpecBuilder,
    };

    #[test]
    fn limits_become_systemds_v1_properties() {
        let r = LinuxResourcesBuilder::default()
            .memory(
                LinuxMemoryBuilder::default()
                    .limit(64 << 20)
                    .build()
                    .unwrap(),
            )
            .cpu(
                LinuxCpuBuilder::default()
                    .shares(512u64)
                    .quota(50_000i64)
                    .period(100_000u64)
                    .build()
                    .unwrap(),
            )
            .pids(LinuxPidsBuilder::default().limit(100).build().unwrap())
            .build()
            .unwrap();
        let p = properties(Some(&r));
        assert_eq!(p["MemoryLimit"], Variant::U64(64 << 20));
        assert_eq!(p["CPUShares"], Variant::U64(512));
        assert_eq!(p["CPUQuotaPerSecUSec"], Variant::U64(500_000));
        assert!(!p.contains_key("CPUQuotaPeriodUSec"), "systemd 242+ only");
        assert_eq!(p["TasksMax"], Variant::U64(100));
        assert!(properties(None).is_empty());
    }

    #[test]
    fn device_rules_become_device_allow_entries() {
        let rule =
            |allow: bool, typ: Option<LinuxDeviceType>, major: Option<i64>, minor: Option<i64>| {
                let mut b = LinuxDeviceCgroupBuilder::default()
                    .allow(allow)
                    .access("rwm");
                if let Some(t) = typ {
                    b = b.typ(t);
                }
                if let Some(m) = major {
                    b = b.major(m);
                }
                if let Some(m) = minor {
                    b = b.minor(m);
                }
                b.build().unwrap()
            };
        let c = Some(LinuxDeviceType::C);
        let proc_devices = "Character devices:\n  1 mem\n136 pts\n\nBlock devices:\n  8 sd\n";
        let rules = [
            rule(false, None, None, None),
            rule(true, c, Some(1), Some(3)),
            rule(true, c, Some(136), None),
            rule(true, Some(LinuxDeviceType::B), Some(8), None),
            rule(true, c, None, None),
            rule(true, c, Some(250), None),
        ];
        let p = device_properties(&rules, proc_devices);
        assert_eq!(p[0], ("DevicePolicy", Variant::String("strict".into())));
        let want = ["/dev/char/1:3", "char-pts", "block-sd", "char-*"]
            .map(|e| Structure::new(e.to_string(), "rwm".to_string()))
            .to_vec();
        assert_eq!(
            p[1],
            ("DeviceAllow", Variant::ArrayStructString(want)),
            "major 250 is unknown: left out"
        );
        // Privileged: everything allowed, no policy.
        let p = device_properties(&[rule(true, None, None, None)], proc_devices);
        assert_eq!(p[0], ("DevicePolicy", Variant::String("auto".into())));
    }

    #[test]
    fn a_systemd_path_becomes_the_scopes_dir_on_v1_only() {
        let spec = |path: &str| {
            SpecBuilder::default()
                .linux(
                    LinuxBuilder::default()
                        .cgroups_path(std::path::PathBuf::from(path))
                        .build()
                        .unwrap(),
                )
                .build()
                .unwrap()
        };
        let mut cgroupfs = spec("/kubepods/pod1/abc");
        assert_eq!(prepare(&mut cgroupfs), None);
        let mut s = spec("kubepods-besteffort-pod1.slice:cri-crust:abc");
        let got = prepare(&mut s);
        let path = s.linux().as_ref().unwrap().cgroups_path().clone().unwrap();
        if cgroup_v1() {
            assert_eq!(
                got,
                Some((
                    "cri-crust-abc.scope".into(),
                    "kubepods-besteffort-pod1.slice".into()
                ))
            );
            assert_eq!(
                path.to_str().unwrap(),
                "/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod1.slice/cri-crust-abc.scope"
            );
            assert_eq!(
                s.annotations().as_ref().unwrap()[SCOPE_ANNOTATION],
                "cri-crust-abc.scope"
            );
        } else {
            // youki's own systemd manager takes it as it is.
            assert_eq!(got, None);
            assert_eq!(
                path.to_str().unwrap(),
                "kubepods-besteffort-pod1.slice:cri-crust:abc"
            );
        }
    }
}
