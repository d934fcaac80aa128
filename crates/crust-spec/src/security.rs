//! Capabilities, masked/readonly paths, sysctls, namespaces, annotations.

use std::collections::HashMap;

use crust_cri_api::v1::{
    ContainerConfig, LinuxContainerSecurityContext, NamespaceMode, NamespaceOption,
    PodSandboxConfig,
};
use oci_spec::runtime::{
    Capabilities, Capability, LinuxNamespace, LinuxNamespaceBuilder, LinuxNamespaceType,
};

use crate::error::reject_control;
use crate::{ContainerFacts, SandboxFacts, SpecError};

/// Every capability Linux 6.x knows, in number order.
const ALL_CAPS: &[&str] = &[
    "CHOWN",
    "DAC_OVERRIDE",
    "DAC_READ_SEARCH",
    "FOWNER",
    "FSETID",
    "KILL",
    "SETGID",
    "SETUID",
    "SETPCAP",
    "LINUX_IMMUTABLE",
    "NET_BIND_SERVICE",
    "NET_BROADCAST",
    "NET_ADMIN",
    "NET_RAW",
    "IPC_LOCK",
    "IPC_OWNER",
    "SYS_MODULE",
    "SYS_RAWIO",
    "SYS_CHROOT",
    "SYS_PTRACE",
    "SYS_PACCT",
    "SYS_ADMIN",
    "SYS_BOOT",
    "SYS_NICE",
    "SYS_RESOURCE",
    "SYS_TIME",
    "SYS_TTY_CONFIG",
    "MKNOD",
    "LEASE",
    "AUDIT_WRITE",
    "AUDIT_CONTROL",
    "SETFCAP",
    "MAC_OVERRIDE",
    "MAC_ADMIN",
    "SYSLOG",
    "WAKE_ALARM",
    "BLOCK_SUSPEND",
    "AUDIT_READ",
    "PERFMON",
    "BPF",
    "CHECKPOINT_RESTORE",
];

/// containerd's (1.x) CRI default set, which Kubernetes users expect
/// (e.g. NET_RAW for ping).
const DEFAULT_CAPS: &[&str] = &[
    "CHOWN",
    "DAC_OVERRIDE",
    "FSETID",
    "FOWNER",
    "MKNOD",
    "NET_RAW",
    "SETGID",
    "SETUID",
    "SETFCAP",
    "SETPCAP",
    "NET_BIND_SERVICE",
    "SYS_CHROOT",
    "KILL",
    "AUDIT_WRITE",
];

/// Accepts `NET_ADMIN`, `CAP_NET_ADMIN`, any case.
pub(crate) fn parse_cap(field: &str, name: &str) -> Result<Capability, SpecError> {
    let upper = name.to_ascii_uppercase();
    let bare = upper.strip_prefix("CAP_").unwrap_or(&upper);
    if !ALL_CAPS.contains(&bare) {
        return Err(SpecError::invalid(field, name, "unknown capability"));
    }
    bare.parse::<Capability>()
        .map_err(|_| SpecError::invalid(field, name, "unknown capability"))
}

fn cap_set(field: &str, names: &[&str]) -> Result<Capabilities, SpecError> {
    names.iter().map(|n| parse_cap(field, n)).collect()
}

fn is_all(name: &str) -> bool {
    name.eq_ignore_ascii_case("ALL")
}

#[derive(Debug)]
pub(crate) struct Caps {
    /// Bounding = effective = permitted, as containerd.
    pub set: Capabilities,
    pub ambient: Capabilities,
}

/// The capabilities crust itself holds and so can hand out: its own
/// bounding set (CapBnd in /proc/self/status), read once; every capability
/// Linux knows when that cannot be read. On a restricted host (a nested
/// sandbox without CAP_SYS_RESOURCE, say) a container asking for more makes
/// the OCI runtime's capset(2) fail, so privileged and `ALL` mean "all of
/// these", as containerd's `cap.Current()`.
pub(crate) fn host_capabilities() -> &'static Capabilities {
    static HOST: std::sync::OnceLock<Capabilities> = std::sync::OnceLock::new();
    HOST.get_or_init(|| {
        let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
        caps_in_mask(bounding_mask(&status).unwrap_or(u64::MAX))
    })
}

fn bounding_mask(status: &str) -> Option<u64> {
    status
        .lines()
        .find_map(|l| l.strip_prefix("CapBnd:"))
        .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
}

/// The known capabilities whose bits are set in `mask` (ALL_CAPS is in
/// number order).
fn caps_in_mask(mask: u64) -> Capabilities {
    ALL_CAPS
        .iter()
        .enumerate()
        .filter(|(bit, _)| mask & (1u64 << bit) != 0)
        .filter_map(|(_, n)| parse_cap("capabilities", n).ok())
        .collect()
}

/// [`capabilities_within`] every capability Linux knows.
#[cfg(test)]
pub(crate) fn capabilities(
    sc: Option<&LinuxContainerSecurityContext>,
    privileged: bool,
) -> Result<Caps, SpecError> {
    capabilities_within(sc, privileged, &cap_set("capabilities", ALL_CAPS)?)
}

/// Default set, then `ALL` in add, then `ALL` in drop, then the named adds,
/// then the named drops (containerd's order: add ALL + drop CHOWN = all but
/// CHOWN). Privileged: everything. All of it within `available` (what crust
/// itself holds, [`host_capabilities`]): privileged and `ALL` get all of
/// `available`, the default set loses what is not in it, and naming a
/// capability outside it is an error rather than a container that cannot
/// start. Ambient capabilities must also be in the resulting set, so they
/// cannot widen it.
pub(crate) fn capabilities_within(
    sc: Option<&LinuxContainerSecurityContext>,
    privileged: bool,
    available: &Capabilities,
) -> Result<Caps, SpecError> {
    let mut set = if privileged {
        available.clone()
    } else {
        cap_set("capabilities", DEFAULT_CAPS)?
            .intersection(available)
            .copied()
            .collect()
    };
    let Some(c) = sc.and_then(|s| s.capabilities.as_ref()) else {
        return Ok(Caps {
            set,
            ambient: Capabilities::new(),
        });
    };
    if !privileged {
        if c.add_capabilities.iter().any(|n| is_all(n)) {
            set = available.clone();
        }
        if c.drop_capabilities.iter().any(|n| is_all(n)) {
            set.clear();
        }
        for n in c.add_capabilities.iter().filter(|n| !is_all(n)) {
            let cap = parse_cap("add_capabilities", n)?;
            if !available.contains(&cap) {
                return Err(SpecError::invalid(
                    "add_capabilities",
                    n,
                    "crust itself does not hold this capability (not in its bounding set), so no container on this node can get it",
                ));
            }
            set.insert(cap);
        }
        for n in c.drop_capabilities.iter().filter(|n| !is_all(n)) {
            set.remove(&parse_cap("drop_capabilities", n)?);
        }
    }
    let mut ambient = Capabilities::new();
    for n in &c.add_ambient_capabilities {
        let cap = parse_cap("add_ambient_capabilities", n)?;
        if !set.contains(&cap) {
            return Err(SpecError::invalid(
                "add_ambient_capabilities",
                n,
                "is not in the container's capability set; add it with add_capabilities as well",
            ));
        }
        ambient.insert(cap);
    }
    Ok(Caps { set, ambient })
}

/// containerd's defaults (pkg/oci); used when CRI gives none.
const DEFAULT_MASKED: &[&str] = &[
    "/proc/acpi",
    "/proc/asound",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/sys/firmware",
    "/sys/devices/virtual/powercap",
    "/proc/scsi",
];
const DEFAULT_READONLY: &[&str] = &[
    "/proc/bus",
    "/proc/fs",
    "/proc/irq",
    "/proc/sys",
    "/proc/sysrq-trigger",
];

/// (masked, readonly). Privileged containers get neither.
pub(crate) fn masked_and_readonly(
    sc: Option<&LinuxContainerSecurityContext>,
    privileged: bool,
) -> Result<(Vec<String>, Vec<String>), SpecError> {
    if privileged {
        return Ok((vec![], vec![]));
    }
    let pick = |field: &str,
                given: Option<&Vec<String>>,
                default: &[&str]|
     -> Result<Vec<String>, SpecError> {
        match given {
            Some(v) if !v.is_empty() => {
                for p in v {
                    reject_control(field, p)?;
                    if !p.starts_with('/') {
                        return Err(SpecError::invalid(field, p, "must be an absolute path"));
                    }
                }
                Ok(v.clone())
            }
            _ => Ok(default.iter().map(|s| s.to_string()).collect()),
        }
    };
    Ok((
        pick("masked_paths", sc.map(|s| &s.masked_paths), DEFAULT_MASKED)?,
        pick(
            "readonly_paths",
            sc.map(|s| &s.readonly_paths),
            DEFAULT_READONLY,
        )?,
    ))
}

/// Which namespace a sysctl lives in, if it is one Kubernetes counts as
/// namespaced; anything else would change the host.
#[derive(Debug, PartialEq, Eq)]
enum SysctlNs {
    Net,
    Ipc,
}

fn sysctl_ns(name: &str) -> Option<SysctlNs> {
    if name.starts_with("net.") {
        Some(SysctlNs::Net)
    } else if name == "kernel.sem"
        || name.starts_with("kernel.shm")
        || name.starts_with("kernel.msg")
        || name.starts_with("fs.mqueue.")
    {
        Some(SysctlNs::Ipc)
    } else {
        None
    }
}

/// The pod's sysctls, limited to namespaced ones; net.* is refused with the
/// host's network and IPC sysctls with the host's IPC namespace, since
/// there they would change the node.
pub(crate) fn sysctls(
    pod: &PodSandboxConfig,
    sandbox: &SandboxFacts,
) -> Result<HashMap<String, String>, SpecError> {
    checked_sysctls(
        pod,
        sandbox.netns_path.is_none(),
        sandbox.ipcns_path.is_none(),
    )
}

/// The same rules as [`sysctls`], judged from the pod config alone (its
/// namespace options say whether it uses the host's network or IPC), so
/// RunPodSandbox can refuse a pod whose containers could never be created.
pub fn check_pod_sysctls(pod: &PodSandboxConfig) -> Result<(), SpecError> {
    let opts = pod
        .linux
        .as_ref()
        .and_then(|l| l.security_context.as_ref())
        .and_then(|s| s.namespace_options.as_ref());
    let node = |v: Option<i32>| v == Some(NamespaceMode::Node as i32);
    checked_sysctls(
        pod,
        node(opts.map(|o| o.network)),
        node(opts.map(|o| o.ipc)),
    )
    .map(|_| ())
}

fn checked_sysctls(
    pod: &PodSandboxConfig,
    host_net: bool,
    host_ipc: bool,
) -> Result<HashMap<String, String>, SpecError> {
    let mut out = HashMap::new();
    let Some(linux) = pod.linux.as_ref() else {
        return Ok(out);
    };
    for (name, value) in &linux.sysctls {
        let field = format!("sysctls[{name}]");
        reject_control("sysctls name", name)?;
        reject_control(&field, value)?;
        // Dotted names only: a '/' or empty part could walk out of /proc/sys.
        let well_formed = name.split('.').all(|p| {
            !p.is_empty()
                && p.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
        });
        if !well_formed {
            return Err(SpecError::invalid(
                "sysctls name",
                name,
                "expected a dotted name like net.ipv4.ip_forward",
            ));
        }
        match sysctl_ns(name) {
            None => {
                return Err(SpecError::invalid(
                    "sysctls name",
                    name,
                    "not a namespaced sysctl (allowed: net.*, kernel.shm*, kernel.msg*, kernel.sem, fs.mqueue.*)",
                ));
            }
            Some(SysctlNs::Net) if host_net => {
                return Err(SpecError::invalid(
                    "sysctls name",
                    name,
                    "net.* sysctls are not allowed in a host-network pod",
                ));
            }
            Some(SysctlNs::Ipc) if host_ipc => {
                return Err(SpecError::invalid(
                    "sysctls name",
                    name,
                    "IPC sysctls are not allowed in a host-IPC pod",
                ));
            }
            Some(_) => {}
        }
        out.insert(name.clone(), value.clone());
    }
    Ok(out)
}

fn ns(
    typ: LinuxNamespaceType,
    path: Option<&std::path::Path>,
) -> Result<LinuxNamespace, SpecError> {
    let mut b = LinuxNamespaceBuilder::default().typ(typ);
    if let Some(p) = path {
        b = b.path(p);
    }
    Ok(b.build()?)
}

fn mode(field: &str, v: i32) -> Result<NamespaceMode, SpecError> {
    NamespaceMode::try_from(v).map_err(|_| {
        SpecError::invalid(
            field,
            v.to_string(),
            "expected POD, CONTAINER, NODE or TARGET",
        )
    })
}

/// The pod's namespaces are the truth (SandboxFacts); a container may ask
/// for less sharing but never for a host namespace its pod does not have.
///
/// `target_pidns` is the PID namespace of the container a TARGET request
/// names (resolved by the runtime, see [`crate::Targets`]); a TARGET
/// request without it is refused.
pub(crate) fn namespaces(
    sc: Option<&LinuxContainerSecurityContext>,
    sandbox: &SandboxFacts,
    privileged: bool,
    target_pidns: Option<&std::path::Path>,
) -> Result<Vec<LinuxNamespace>, SpecError> {
    let opts: Option<&NamespaceOption> = sc.and_then(|s| s.namespace_options.as_ref());
    // The pod's user namespace first (runtimes join it before the others,
    // which it owns); user namespace requests are checked by the caller
    // (crate::userns).
    let mut out = Vec::new();
    if let Some(p) = &sandbox.userns_path {
        out.push(ns(LinuxNamespaceType::User, Some(p))?);
    }
    out.push(ns(LinuxNamespaceType::Mount, None)?);
    if let Some(o) = opts {
        for (field, v, host) in [
            (
                "namespace_options.network",
                o.network,
                sandbox.netns_path.is_none(),
            ),
            ("namespace_options.ipc", o.ipc, sandbox.ipcns_path.is_none()),
        ] {
            match mode(field, v)? {
                NamespaceMode::Node if !host => {
                    return Err(SpecError::invalid(
                        field,
                        "NODE",
                        "the pod does not use the host's namespace",
                    ));
                }
                NamespaceMode::Target => {
                    return Err(SpecError::invalid(
                        field,
                        "TARGET",
                        "only the pid namespace can target a container",
                    ));
                }
                _ => {}
            }
        }
    }
    if let Some(p) = &sandbox.netns_path {
        out.push(ns(LinuxNamespaceType::Network, Some(p))?);
    }
    if let Some(p) = &sandbox.ipcns_path {
        out.push(ns(LinuxNamespaceType::Ipc, Some(p))?);
    }
    if let Some(p) = &sandbox.utsns_path {
        out.push(ns(LinuxNamespaceType::Uts, Some(p))?);
    }

    let pid_mode = match opts {
        Some(o) => mode("namespace_options.pid", o.pid)?,
        None => NamespaceMode::Pod,
    };
    match pid_mode {
        NamespaceMode::Node => {
            if !sandbox.host_pid {
                return Err(SpecError::invalid(
                    "namespace_options.pid",
                    "NODE",
                    "the pod does not use the host's PID namespace",
                ));
            }
        }
        NamespaceMode::Target => {
            let target = opts.map(|o| o.target_id.as_str()).unwrap_or("");
            if target.is_empty() {
                return Err(SpecError::invalid(
                    "namespace_options.pid",
                    "TARGET",
                    "target_id must name the container whose PID namespace to join",
                ));
            }
            match target_pidns {
                Some(p) => out.push(ns(LinuxNamespaceType::Pid, Some(p))?),
                None => {
                    return Err(SpecError::unsupported(
                        "namespace_options.pid",
                        format!("TARGET {target}"),
                        "the runtime did not resolve the target container's PID namespace",
                    ));
                }
            }
        }
        NamespaceMode::Container => out.push(ns(LinuxNamespaceType::Pid, None)?),
        NamespaceMode::Pod => match (&sandbox.pidns_path, sandbox.host_pid) {
            (Some(p), _) => out.push(ns(LinuxNamespaceType::Pid, Some(p))?),
            (None, true) => {}
            (None, false) => out.push(ns(LinuxNamespaceType::Pid, None)?),
        },
    }
    // A private cgroup namespace hides the host's cgroup tree (containerd
    // does this on cgroup v2; crust on both, see the crate docs).
    if !privileged {
        out.push(ns(LinuxNamespaceType::Cgroup, None)?);
    }
    Ok(out)
}

/// Annotation prefixes some runtime or shim acts on (runc applies
/// `org.systemd.property.*` to the container's unit, crun reads `run.oci.*`,
/// crust-shim keeps its systemd scope under `io.crust.*`):
/// an annotation must never change isolation, so these never reach the spec.
const RESERVED_ANNOTATION_PREFIXES: &[&str] = &[
    "io.kubernetes.cri.",
    "io.kubernetes.cri-o.",
    "io.containerd.",
    "org.systemd.property.",
    "io.crust.",
    "run.oci.",
    "io.katacontainers.",
    "com.github.containers.",
];

pub(crate) fn annotations(
    config: &ContainerConfig,
    pod: &PodSandboxConfig,
    sandbox: &SandboxFacts,
) -> HashMap<String, String> {
    let mut out: HashMap<String, String> = config
        .annotations
        .iter()
        .filter(|(k, _)| {
            let reserved = RESERVED_ANNOTATION_PREFIXES
                .iter()
                .any(|p| k.starts_with(p));
            if reserved {
                tracing::debug!(annotation = %k, "dropping reserved annotation");
            }
            !reserved
        })
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    let meta = pod.metadata.clone().unwrap_or_default();
    let name = config
        .metadata
        .as_ref()
        .map(|m| m.name.clone())
        .unwrap_or_default();
    let image = config
        .image
        .as_ref()
        .map(|i| i.image.clone())
        .unwrap_or_default();
    for (k, v) in [
        ("io.kubernetes.cri.container-type", "container".to_string()),
        ("io.kubernetes.cri.sandbox-id", sandbox.pod_id.clone()),
        ("io.kubernetes.cri.container-name", name),
        ("io.kubernetes.cri.image-name", image),
        ("io.kubernetes.cri.sandbox-namespace", meta.namespace),
        ("io.kubernetes.cri.sandbox-name", meta.name),
        ("io.kubernetes.cri.sandbox-uid", meta.uid),
    ] {
        out.insert(k.to_string(), v);
    }
    out
}

/// Guards the cgroup path and annotations against a malformed id.
pub(crate) fn check_container_id(c: &ContainerFacts) -> Result<(), SpecError> {
    if c.id.is_empty() || c.id.len() > 128 || !c.id.bytes().all(|b| b.is_ascii_alphanumeric()) {
        return Err(SpecError::invalid(
            "container id",
            &c.id,
            "expected a hex id",
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crust_cri_api::v1::{Capability as CriCaps, LinuxPodSandboxConfig};

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| x.to_string()).collect()
    }

    fn sc_caps(add: &[&str], drop: &[&str], ambient: &[&str]) -> LinuxContainerSecurityContext {
        LinuxContainerSecurityContext {
            capabilities: Some(CriCaps {
                add_capabilities: s(add),
                drop_capabilities: s(drop),
                add_ambient_capabilities: s(ambient),
            }),
            ..Default::default()
        }
    }

    fn names(c: &Capabilities) -> Vec<String> {
        let mut v: Vec<String> = c.iter().map(|c| c.to_string()).collect();
        v.sort();
        v
    }

    #[test]
    fn every_cap_name_parses() {
        assert_eq!(ALL_CAPS.len(), 41);
        for n in ALL_CAPS {
            let c = parse_cap("t", n).unwrap();
            assert_eq!(&c.to_string(), n);
        }
        assert_eq!(
            parse_cap("t", "cap_net_admin").unwrap(),
            Capability::NetAdmin
        );
        let e = parse_cap("add_capabilities", "NET_FOO")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("add_capabilities") && e.contains("NET_FOO"),
            "{e}"
        );
    }

    #[test]
    fn caps_default_add_drop_all() {
        let d = capabilities(None, false).unwrap();
        assert_eq!(d.set.len(), 14);
        assert!(d.set.contains(&Capability::NetRaw) && !d.set.contains(&Capability::SysAdmin));
        assert!(d.ambient.is_empty());

        let c = capabilities(
            Some(&sc_caps(
                &["NET_ADMIN", "CAP_SYS_TIME"],
                &["NET_RAW", "chown"],
                &[],
            )),
            false,
        )
        .unwrap();
        assert!(c.set.contains(&Capability::NetAdmin) && c.set.contains(&Capability::SysTime));
        assert!(!c.set.contains(&Capability::NetRaw) && !c.set.contains(&Capability::Chown));
        assert_eq!(c.set.len(), 14);

        let c = capabilities(Some(&sc_caps(&["ALL"], &["CHOWN"], &[])), false).unwrap();
        assert_eq!(c.set.len(), 40);
        assert!(!c.set.contains(&Capability::Chown));

        let c = capabilities(Some(&sc_caps(&["NET_BIND_SERVICE"], &["ALL"], &[])), false).unwrap();
        assert_eq!(names(&c.set), ["NET_BIND_SERVICE"]);

        let c = capabilities(Some(&sc_caps(&["all"], &["all"], &[])), false).unwrap();
        assert!(c.set.is_empty());

        assert!(capabilities(Some(&sc_caps(&["BOGUS"], &[], &[])), false).is_err());
        assert!(capabilities(Some(&sc_caps(&[], &["BOGUS"], &[])), false).is_err());
    }

    #[test]
    fn ambient_caps_must_be_in_the_set() {
        let c = capabilities(Some(&sc_caps(&["NET_ADMIN"], &[], &["NET_ADMIN"])), false).unwrap();
        assert_eq!(names(&c.ambient), ["NET_ADMIN"]);
        let e = capabilities(Some(&sc_caps(&[], &[], &["SYS_ADMIN"])), false)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("add_ambient_capabilities") && e.contains("SYS_ADMIN"),
            "{e}"
        );
    }

    #[test]
    fn caps_stay_within_what_crust_holds() {
        // A host without SYS_RESOURCE (bit 24), as some sandboxes.
        let mask = bounding_mask("Name:\tx\nCapBnd:\t000001fffeffffff\n").unwrap();
        let available = caps_in_mask(mask);
        assert_eq!(available.len(), 40);
        assert!(!available.contains(&Capability::SysResource));
        let c = capabilities_within(None, true, &available).unwrap();
        assert_eq!(c.set, available, "privileged gets what there is");
        let c = capabilities_within(Some(&sc_caps(&["ALL"], &["CHOWN"], &[])), false, &available)
            .unwrap();
        assert_eq!(c.set.len(), 39);
        let e = capabilities_within(
            Some(&sc_caps(&["SYS_RESOURCE"], &[], &[])),
            false,
            &available,
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("SYS_RESOURCE") && e.contains("bounding set"),
            "{e}"
        );
        // Without NET_RAW on the host the default set just lacks it.
        let mut no_raw = available.clone();
        no_raw.remove(&Capability::NetRaw);
        let c = capabilities_within(None, false, &no_raw).unwrap();
        assert_eq!(c.set.len(), 13);
        assert!(!c.set.contains(&Capability::NetRaw));
        // Unknown high bits are ignored; this process's own set parses.
        assert_eq!(caps_in_mask(u64::MAX).len(), ALL_CAPS.len());
        assert!(host_capabilities().len() <= ALL_CAPS.len());
        assert!(bounding_mask("CapBnd:\tzz\n").is_none());
    }

    #[test]
    fn privileged_gets_all_caps_and_ignores_drops() {
        let c = capabilities(Some(&sc_caps(&[], &["ALL"], &[])), true).unwrap();
        assert_eq!(c.set.len(), 41);
    }

    #[test]
    fn masked_paths_defaults_overrides_privileged() {
        let (m, r) = masked_and_readonly(None, false).unwrap();
        assert!(m.contains(&"/proc/kcore".to_string()) && r.contains(&"/proc/sys".to_string()));
        let sc = LinuxContainerSecurityContext {
            masked_paths: s(&["/proc/x"]),
            readonly_paths: s(&["/proc/y"]),
            ..Default::default()
        };
        assert_eq!(
            masked_and_readonly(Some(&sc), false).unwrap(),
            (s(&["/proc/x"]), s(&["/proc/y"]))
        );
        assert_eq!(
            masked_and_readonly(Some(&sc), true).unwrap(),
            (vec![], vec![])
        );
        let bad = LinuxContainerSecurityContext {
            masked_paths: s(&["proc/x"]),
            ..Default::default()
        };
        assert!(masked_and_readonly(Some(&bad), false).is_err());
    }

    fn pod_with_sysctls(kv: &[(&str, &str)]) -> PodSandboxConfig {
        PodSandboxConfig {
            linux: Some(LinuxPodSandboxConfig {
                sysctls: kv
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn sandbox() -> SandboxFacts {
        crate::mounts::tests::sandbox()
    }

    #[test]
    fn sysctl_allow_list() {
        let ok = [
            ("net.ipv4.ip_forward", "1"),
            ("net.ipv4.ip_local_port_range", "1024 65000"),
            ("kernel.shm_rmid_forced", "1"),
            ("kernel.shmmax", "1000"),
            ("kernel.msgmax", "8192"),
            ("kernel.sem", "250 32000 100 128"),
            ("fs.mqueue.msg_max", "10"),
        ];
        let got = sysctls(&pod_with_sysctls(&ok), &sandbox()).unwrap();
        assert_eq!(got.len(), ok.len());
        for (k, v) in ok {
            assert_eq!(got[k], v);
        }
        for (k, v) in [
            ("kernel.core_pattern", "|/evil"),
            ("kernel.hostname", "x"),
            ("vm.overcommit_memory", "1"),
            ("kernel.semx", "1"),
            ("fs.mqueue", "1"),
            ("net.ipv4..ip_forward", "1"),
            ("net/ipv4/ip_forward", "1"),
            ("net.ipv4.conf.eth0/../../x", "1"),
            ("net.ipv4.ip_forward ", "1"),
            // CVE-2022-0811: smuggling a second sysctl through the value.
            ("kernel.shm_rmid_forced", "1\nkernel.core_pattern=|/evil"),
            ("kernel.shm_rmid_forced", "1\r"),
            ("net.ipv4.ip_forward", "1\0"),
            ("net.ipv4.ip_forward", "1\t2"),
        ] {
            let e = sysctls(&pod_with_sysctls(&[(k, v)]), &sandbox());
            assert!(e.is_err(), "{k:?}={v:?} must be refused");
            assert!(e.unwrap_err().to_string().contains("sysctls"));
        }
    }

    #[test]
    fn sysctls_refused_in_host_namespaces() {
        let mut sb = sandbox();
        sb.netns_path = None;
        assert!(sysctls(&pod_with_sysctls(&[("net.ipv4.ip_forward", "1")]), &sb).is_err());
        assert!(sysctls(&pod_with_sysctls(&[("kernel.shmmax", "1")]), &sb).is_ok());
        let mut sb = sandbox();
        sb.ipcns_path = None;
        assert!(sysctls(&pod_with_sysctls(&[("kernel.shmmax", "1")]), &sb).is_err());
        assert!(sysctls(&pod_with_sysctls(&[("fs.mqueue.msg_max", "1")]), &sb).is_err());
        assert!(sysctls(&pod_with_sysctls(&[("net.core.somaxconn", "1")]), &sb).is_ok());
    }

    fn types(v: &[LinuxNamespace]) -> Vec<(LinuxNamespaceType, Option<String>)> {
        v.iter()
            .map(|n| (n.typ(), n.path().as_ref().map(|p| p.display().to_string())))
            .collect()
    }

    fn nsopts(
        network: NamespaceMode,
        pid: NamespaceMode,
        ipc: NamespaceMode,
    ) -> LinuxContainerSecurityContext {
        LinuxContainerSecurityContext {
            namespace_options: Some(NamespaceOption {
                network: network as i32,
                pid: pid as i32,
                ipc: ipc as i32,
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn namespace_layouts() {
        use LinuxNamespaceType as T;
        let sb = sandbox();
        assert_eq!(
            types(&namespaces(None, &sb, false, None).unwrap()),
            [
                (T::Mount, None),
                (T::Network, Some("/run/crust/ns/net".into())),
                (T::Ipc, Some("/run/crust/ns/ipc".into())),
                (T::Uts, Some("/run/crust/ns/uts".into())),
                (T::Pid, None),
                (T::Cgroup, None),
            ]
        );
        // Shared pod PID namespace; privileged: no cgroup ns.
        let mut shared = sandbox();
        shared.pidns_path = Some("/proc/42/ns/pid".into());
        let got = types(&namespaces(None, &shared, true, None).unwrap());
        assert!(got.contains(&(T::Pid, Some("/proc/42/ns/pid".into()))));
        assert!(!got.iter().any(|(t, _)| *t == T::Cgroup));
        // A container may still ask for its own PID namespace.
        let sc = nsopts(
            NamespaceMode::Pod,
            NamespaceMode::Container,
            NamespaceMode::Pod,
        );
        assert!(
            types(&namespaces(Some(&sc), &shared, false, None).unwrap()).contains(&(T::Pid, None))
        );
        // Host everything.
        let host = SandboxFacts {
            netns_path: None,
            ipcns_path: None,
            utsns_path: None,
            host_pid: true,
            ..sandbox()
        };
        let sc = nsopts(
            NamespaceMode::Node,
            NamespaceMode::Node,
            NamespaceMode::Node,
        );
        assert_eq!(
            types(&namespaces(Some(&sc), &host, false, None).unwrap()),
            [(T::Mount, None), (T::Cgroup, None)]
        );
    }

    #[test]
    fn container_cannot_escalate_to_host_namespaces() {
        for sc in [
            nsopts(NamespaceMode::Node, NamespaceMode::Pod, NamespaceMode::Pod),
            nsopts(NamespaceMode::Pod, NamespaceMode::Node, NamespaceMode::Pod),
            nsopts(NamespaceMode::Pod, NamespaceMode::Pod, NamespaceMode::Node),
            nsopts(
                NamespaceMode::Pod,
                NamespaceMode::Target,
                NamespaceMode::Pod,
            ),
            nsopts(
                NamespaceMode::Target,
                NamespaceMode::Pod,
                NamespaceMode::Pod,
            ),
        ] {
            assert!(
                namespaces(Some(&sc), &sandbox(), false, None).is_err(),
                "{sc:?}"
            );
        }
    }

    #[test]
    fn the_pods_user_namespace_comes_first() {
        use LinuxNamespaceType as T;
        let sb = SandboxFacts {
            userns_path: Some("/run/crust/ns/user".into()),
            pidns_path: Some("/run/crust/ns/pid".into()),
            ..sandbox()
        };
        assert_eq!(
            types(&namespaces(None, &sb, false, None).unwrap()),
            [
                (T::User, Some("/run/crust/ns/user".into())),
                (T::Mount, None),
                (T::Network, Some("/run/crust/ns/net".into())),
                (T::Ipc, Some("/run/crust/ns/ipc".into())),
                (T::Uts, Some("/run/crust/ns/uts".into())),
                (T::Pid, Some("/run/crust/ns/pid".into())),
                (T::Cgroup, None),
            ]
        );
    }

    #[test]
    fn target_pid_namespace_joins_the_resolved_path() {
        use LinuxNamespaceType as T;
        let mut sc = nsopts(
            NamespaceMode::Pod,
            NamespaceMode::Target,
            NamespaceMode::Pod,
        );
        sc.namespace_options.as_mut().unwrap().target_id = "abc123".into();
        let target = std::path::Path::new("/proc/4242/ns/pid");
        let got = types(&namespaces(Some(&sc), &sandbox(), false, Some(target)).unwrap());
        assert!(
            got.contains(&(T::Pid, Some("/proc/4242/ns/pid".into()))),
            "{got:?}"
        );
        assert_eq!(got.iter().filter(|(t, _)| *t == T::Pid).count(), 1);
        // Unresolved: refused, naming the target.
        let e = namespaces(Some(&sc), &sandbox(), false, None)
            .unwrap_err()
            .to_string();
        assert!(e.contains("TARGET abc123"), "{e}");
        // No target id: refused even with a path.
        sc.namespace_options.as_mut().unwrap().target_id.clear();
        let e = namespaces(Some(&sc), &sandbox(), false, Some(target))
            .unwrap_err()
            .to_string();
        assert!(e.contains("target_id"), "{e}");
        // A resolved path never applies to a container that did not ask.
        let got = types(&namespaces(None, &sandbox(), false, Some(target)).unwrap());
        assert!(got.contains(&(T::Pid, None)), "{got:?}");
    }

    #[test]
    fn pod_sysctls_are_checked_from_the_pod_config() {
        assert!(check_pod_sysctls(&PodSandboxConfig::default()).is_ok());
        assert!(check_pod_sysctls(&pod_with_sysctls(&[("net.ipv4.ip_forward", "1")])).is_ok());
        let e = check_pod_sysctls(&pod_with_sysctls(&[("kernel.panic", "1")]))
            .unwrap_err()
            .to_string();
        assert!(e.contains("kernel.panic"), "{e}");
        assert!(check_pod_sysctls(&pod_with_sysctls(&[("kernel.shmmax", "1\n")])).is_err());
        let host = |network: NamespaceMode, ipc: NamespaceMode, kv: (&str, &str)| {
            let mut p = pod_with_sysctls(&[kv]);
            p.linux.as_mut().unwrap().security_context =
                Some(crust_cri_api::v1::LinuxSandboxSecurityContext {
                    namespace_options: Some(NamespaceOption {
                        network: network as i32,
                        ipc: ipc as i32,
                        ..Default::default()
                    }),
                    ..Default::default()
                });
            check_pod_sysctls(&p)
        };
        let (pod_, node) = (NamespaceMode::Pod, NamespaceMode::Node);
        assert!(host(node, pod_, ("net.core.somaxconn", "1")).is_err());
        assert!(host(node, pod_, ("kernel.shmmax", "1")).is_ok());
        assert!(host(pod_, node, ("kernel.shmmax", "1")).is_err());
        assert!(host(pod_, node, ("net.core.somaxconn", "1")).is_ok());
    }

    #[test]
    fn container_ids() {
        let mut c = ContainerFacts {
            id: "ab12".into(),
            volumes_dir: "/v".into(),
            oom_score_adj_min: 0,
            idmapped_sources: Default::default(),
            image_mount_sources: Default::default(),
            cdi_spec_dirs: Vec::new(),
        };
        assert!(check_container_id(&c).is_ok());
        for bad in ["", "../x", "a/b", "a:b"] {
            c.id = bad.into();
            assert!(check_container_id(&c).is_err(), "{bad}");
        }
    }
}
