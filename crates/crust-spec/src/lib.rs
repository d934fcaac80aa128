//! CRI ContainerConfig + PodSandboxConfig + image config -> OCI runtime spec.
//!
//! The translation follows containerd's CRI plugin unless noted. It is pure
//! apart from four small, documented host reads: a Localhost seccomp
//! profile (read and validated at create time), `stat` of CRI device host
//! paths (and of /dev for privileged containers), `uname` for seccomp
//! `minKernel` rules, and [`read_in_root`], which the caller uses to fetch
//! the image's /etc/passwd and /etc/group.
//!
//! Deliberate differences from containerd:
//! - no seccomp profile anywhere means RuntimeDefault (as CRI-O), not
//!   unconfined; kubelet always sends one;
//! - non-privileged containers always get a private cgroup namespace
//!   (containerd only on cgroup v2);
//! - `run_as_group` without a user keeps the image's user (as CRI-O);
//! - annotations with runtime-interpreted prefixes (`org.systemd.property.`,
//!   `run.oci.`, `io.kubernetes.cri.`, ...) are dropped, and requests the
//!   translation cannot honour yet (user namespaces, TARGET pid namespace,
//!   idmapped or image mounts, CDI devices) are refused rather than ignored.

mod error;
mod mounts;
mod process;
mod resources;
mod rootfs;
mod seccomp;
mod security;
mod user;

use std::path::PathBuf;

use k8s_cri::v1::{ContainerConfig, LinuxContainerSecurityContext, PodSandboxConfig};
use oci_spec::runtime::{
    LinuxCapabilities, LinuxResources, LinuxResourcesBuilder, Process, Root, UserBuilder,
};

pub use error::SpecError;
pub use mounts::image_volumes;
pub use oci_spec::runtime::{LinuxDevice, Spec};
pub use resources::device_from_host;
pub use rootfs::read_in_root;
pub use user::parse_uid;

/// The OCI version crust writes.
const OCI_VERSION: &str = "1.2.0";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CgroupDriver {
    Cgroupfs,
    Systemd,
}

/// What crustd knows about the pod when it creates a container.
#[derive(Debug, Clone)]
pub struct SandboxFacts {
    pub pod_id: String,
    /// The pod's hostname; also the container's HOSTNAME env when non-empty.
    pub hostname: String,
    /// None = host network.
    pub netns_path: Option<PathBuf>,
    /// None = host IPC (and, without `shm_path`, the host's /dev/shm).
    pub ipcns_path: Option<PathBuf>,
    /// None = host UTS (host network pods); the spec then sets no hostname.
    pub utsns_path: Option<PathBuf>,
    /// Some = the pod's shared PID namespace (NamespaceMode POD); None and
    /// not `host_pid` = a new PID namespace per container.
    pub pidns_path: Option<PathBuf>,
    pub host_pid: bool,
    /// Files crustd wrote for the pod, bind-mounted at /etc/...
    pub resolv_conf: Option<PathBuf>,
    pub hosts: Option<PathBuf>,
    pub hostname_file: Option<PathBuf>,
    /// The pod's /dev/shm (a tmpfs crustd mounted); None = private tmpfs.
    pub shm_path: Option<PathBuf>,
    /// kubelet's cgroup_parent for the pod.
    pub cgroup_parent: String,
    pub cgroup_driver: CgroupDriver,
}

#[derive(Debug, Clone)]
pub struct ContainerFacts {
    /// 64-hex container id.
    pub id: String,
    /// Where image VOLUMEs get their host dirs (see [`image_volumes`]).
    pub volumes_dir: PathBuf,
    /// The lowest oom_score_adj this host lets crustd set (its own
    /// /proc/self/oom_score_adj); lower requests are raised to it.
    pub oom_score_adj_min: i64,
}

/// The image's config and its /etc/passwd and /etc/group contents, read by
/// the caller with [`read_in_root`] and a size limit.
#[derive(Debug, Clone, Copy)]
pub struct ImageFacts<'a> {
    pub config: &'a crust_store::ImageConfig,
    pub passwd: Option<&'a str>,
    pub group: Option<&'a str>,
}

/// A value with every optional field unset: oci-spec's `Default` impls
/// carry runc-style defaults (rlimits, capabilities, masked paths, a
/// hostname) that must never leak into a container by omission.
fn empty<T: serde::de::DeserializeOwned>(v: serde_json::Value) -> T {
    serde_json::from_value(v).expect("a constant, minimal OCI object deserializes")
}

/// Builds the OCI spec. `root.path` = "rootfs", `root.readonly` from the
/// security context.
pub fn container_spec(
    config: &ContainerConfig,
    pod: &PodSandboxConfig,
    image: &ImageFacts<'_>,
    sandbox: &SandboxFacts,
    container: &ContainerFacts,
) -> Result<Spec, SpecError> {
    security::check_container_id(container)?;
    let default_sc = LinuxContainerSecurityContext::default();
    let sc = config
        .linux
        .as_ref()
        .and_then(|l| l.security_context.as_ref());
    let scv = sc.unwrap_or(&default_sc);
    let pod_sc = pod.linux.as_ref().and_then(|l| l.security_context.as_ref());
    let privileged = scv.privileged;
    if privileged && !pod_sc.is_some_and(|p| p.privileged) {
        return Err(SpecError::invalid(
            "privileged",
            "true",
            "a privileged container needs a privileged pod",
        ));
    }
    if !config.cdi_devices.is_empty() {
        return Err(SpecError::unsupported(
            "cdi_devices",
            config
                .cdi_devices
                .iter()
                .map(|d| d.name.as_str())
                .collect::<Vec<_>>()
                .join(","),
            "CDI devices are not implemented yet",
        ));
    }
    security_modules_note(scv);

    // Process.
    let user = user::resolve_user(sc, image)?;
    let caps = security::capabilities(sc, privileged)?;
    let res = resources::resources(
        config.linux.as_ref().and_then(|l| l.resources.as_ref()),
        container.oom_score_adj_min,
    )?;
    let mut process: Process = empty(serde_json::json!({"user": {"uid": 0, "gid": 0}, "cwd": "/"}));
    process.set_terminal(Some(config.tty));
    process.set_args(Some(process::args(config, image.config)?));
    process.set_env(Some(process::env(config, image.config, &sandbox.hostname)?));
    process.set_cwd(process::cwd(config, image.config)?.into());
    process.set_user(
        UserBuilder::default()
            .uid(user.uid)
            .gid(user.gid)
            .additional_gids(user.additional_gids)
            .build()?,
    );
    let mut lcaps: LinuxCapabilities = empty(serde_json::json!({}));
    lcaps.set_bounding(Some(caps.set.clone()));
    lcaps.set_effective(Some(caps.set.clone()));
    lcaps.set_permitted(Some(caps.set.clone()));
    if !caps.ambient.is_empty() {
        // Ambient capabilities must also be inheritable to take effect.
        lcaps.set_inheritable(Some(caps.ambient.clone()));
        lcaps.set_ambient(Some(caps.ambient.clone()));
    }
    process.set_capabilities(Some(lcaps));
    // Absent rather than `false`: youki loads seccomp after dropping
    // capabilities when the field is present, which fails without NNP.
    process.set_no_new_privileges(scv.no_new_privs.then_some(true));
    process.set_oom_score_adj(res.oom_score_adj);

    // Root and mounts.
    let mut root: Root = empty(serde_json::json!({"path": "rootfs"}));
    root.set_readonly(Some(scv.readonly_rootfs));
    let plan = mounts::mounts(
        config,
        image.config,
        sandbox,
        container,
        privileged,
        scv.readonly_rootfs,
    )?;

    // Linux.
    let devices = resources::devices(config, privileged)?;
    let mut lres: LinuxResourcesBuilder = LinuxResourcesBuilder::default().devices(devices.rules);
    if let Some(cpu) = res.cpu {
        lres = lres.cpu(cpu);
    }
    if let Some(mem) = res.memory {
        lres = lres.memory(mem);
    }
    if !res.hugepages.is_empty() {
        lres = lres.hugepage_limits(res.hugepages);
    }
    if let Some(u) = res.unified {
        lres = lres.unified(u);
    }
    let lres: LinuxResources = lres.build()?;
    let (masked, readonly) = security::masked_and_readonly(sc, privileged)?;
    let sysctl = security::sysctls(pod, sandbox)?;
    let seccomp = seccomp::seccomp(
        &seccomp::choose(sc, pod)?,
        privileged,
        &caps.set,
        &seccomp::Host::current(),
    )?;

    let mut linux: oci_spec::runtime::Linux = empty(serde_json::json!({}));
    linux.set_namespaces(Some(security::namespaces(sc, pod, sandbox, privileged)?));
    linux.set_cgroups_path(Some(
        resources::cgroups_path(sandbox, &container.id)?.into(),
    ));
    linux.set_resources(Some(lres));
    linux.set_devices((!devices.devices.is_empty()).then_some(devices.devices));
    linux.set_seccomp(seccomp);
    linux.set_rootfs_propagation(plan.rootfs_propagation);
    linux.set_masked_paths((!masked.is_empty()).then_some(masked));
    linux.set_readonly_paths((!readonly.is_empty()).then_some(readonly));
    linux.set_sysctl((!sysctl.is_empty()).then_some(sysctl));

    let mut spec: Spec = empty(serde_json::json!({ "ociVersion": OCI_VERSION }));
    spec.set_root(Some(root));
    spec.set_mounts(Some(plan.mounts));
    spec.set_process(Some(process));
    // Only with the pod's own UTS namespace; host-network pods keep the
    // node's hostname.
    if sandbox.utsns_path.is_some() && !sandbox.hostname.is_empty() {
        error::reject_control("hostname", &sandbox.hostname)?;
        spec.set_hostname(Some(sandbox.hostname.clone()));
    }
    spec.set_annotations(Some(security::annotations(config, pod, sandbox)));
    spec.set_linux(Some(linux));
    Ok(spec)
}

/// crust applies neither AppArmor nor SELinux yet (issue 7); say so rather
/// than drop a request silently.
#[allow(deprecated)]
fn security_modules_note(sc: &LinuxContainerSecurityContext) {
    use k8s_cri::v1::security_profile::ProfileType;
    let localhost = sc
        .apparmor
        .as_ref()
        .is_some_and(|p| p.profile_type == ProfileType::Localhost as i32)
        || sc.apparmor_profile.starts_with("localhost/");
    if localhost {
        tracing::info!(
            "AppArmor Localhost profile requested but crust does not apply AppArmor yet; ignored"
        );
    } else if sc.apparmor.is_some() || !sc.apparmor_profile.is_empty() {
        tracing::debug!("AppArmor profile ignored: crust does not apply AppArmor yet");
    }
    if sc.selinux_options.is_some() {
        tracing::info!("SELinux options requested but crust does not apply SELinux yet; ignored");
    }
}

#[cfg(test)]
mod tests;
