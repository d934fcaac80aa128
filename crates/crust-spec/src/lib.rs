//! CRI ContainerConfig + PodSandboxConfig + image config -> OCI runtime spec.
//!
//! The translation follows containerd's CRI plugin unless noted. It is pure
//! apart from eight small, documented host reads: a Localhost seccomp
//! profile (read and validated at create time), `stat` of CRI device host
//! paths (and of /dev for privileged containers), `uname` for seccomp
//! `minKernel` rules, crustd's own capability bounding set (read once: no
//! container is given a capability crust itself lacks), a mount_setattr
//! probe ([`recursive_read_only_supported`], once: a recursive read-only
//! mount fails CreateContainer on a kernel that cannot do it rather than
//! start weaker), which security modules the host has
//! ([`SecurityModules::host`], once) and which AppArmor profiles it has
//! loaded ([`apparmor_profile_loaded`], at create time, only on an
//! AppArmor host), and [`read_in_root`], which the caller uses to fetch
//! the image's /etc/passwd and /etc/group.
//!
//! Deliberate differences from containerd:
//! - non-privileged containers always get a private cgroup namespace
//!   (containerd only on cgroup v2);
//! - annotations with runtime-interpreted prefixes (`org.systemd.property.`,
//!   `run.oci.`, `io.kubernetes.cri.`, ...) are dropped, and requests the
//!   translation cannot honour yet (idmapped CRI mounts other than with the
//!   pod's own user namespace mappings, image mounts, a TARGET
//!   pid namespace the caller did not resolve) are refused rather than
//!   ignored.

mod cdi;
mod error;
pub mod limits;
mod lsm;
mod mounts;
mod pod_limits;
mod process;
mod resources;
mod rootfs;
mod seccomp;
mod security;
mod user;
mod userns;

use std::path::PathBuf;

use crust_cri_api::v1::{ContainerConfig, LinuxContainerSecurityContext, PodSandboxConfig};
use oci_spec::runtime::{
    LinuxCapabilities, LinuxResources, LinuxResourcesBuilder, Process, Root, UserBuilder,
};

pub use error::SpecError;
pub use lsm::{APPARMOR_DEFAULT_PROFILE, SecurityModules, apparmor_profile_loaded};
pub use mounts::{clean_path, image_volumes, recursive_read_only_supported};
pub use oci_spec::runtime::{LinuxDevice, Spec};
pub use pod_limits::{PodLimits, cpu_millis, memory_limit, pod_limits};
pub use resources::{
    check_cgroup_parent, check_container_resources, device_from_host, systemd_slice,
};
pub use rootfs::read_in_root;
pub use security::check_pod_sysctls;
pub use user::parse_uid;
pub use userns::{IdMap, UserNamespaceMappings, idmapped_mounts, pod_user_namespace};

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
    /// The pod's user namespace (pinned) when its config asks for one
    /// (hostUsers: false, see [`pod_user_namespace`]); the pod's other
    /// namespaces are then owned by it, and the caller has idmapped the
    /// rootfs to it.
    pub userns_path: Option<PathBuf>,
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
    /// Idmapped copies of the host paths of CRI mounts with uid/gid
    /// mappings, by the mount's container path (see [`idmapped_mounts`]):
    /// the runtime makes them, the spec bind-mounts them instead.
    pub idmapped_sources: std::collections::HashMap<String, PathBuf>,
    /// The read-only views of image volumes (CRI `Mount.image`, with its
    /// `image_sub_path` resolved inside the image), by the mount's
    /// container path: the runtime mounts them, the spec bind-mounts them.
    pub image_mount_sources: std::collections::HashMap<String, PathBuf>,
    /// Where CDI spec files are looked for, lowest priority first.
    pub cdi_spec_dirs: Vec<PathBuf>,
}

/// Namespaces of *other* containers a container asks to join, resolved by
/// the runtime (this crate cannot see other containers).
#[derive(Debug, Clone, Default)]
pub struct Targets {
    /// For `namespace_options.pid = TARGET` (kubectl debug's ephemeral
    /// containers): `/proc/<pid>/ns/pid` of the running container named by
    /// `namespace_options.target_id` (see [`pid_namespace_target`]), where
    /// `<pid>` is that container's init process as the host sees it. The
    /// runtime must check that the target is in the same pod and running
    /// (and return NotFound / FailedPrecondition otherwise). None with a
    /// TARGET request fails with [`SpecError::Unsupported`].
    pub target_pidns_path: Option<PathBuf>,
}

/// The container id whose PID namespace `config` asks to join
/// (NamespaceMode TARGET), if any; the runtime resolves it into
/// [`Targets::target_pidns_path`].
pub fn pid_namespace_target(config: &ContainerConfig) -> Option<&str> {
    config
        .linux
        .as_ref()
        .and_then(|l| l.security_context.as_ref())
        .and_then(|s| s.namespace_options.as_ref())
        .filter(|o| o.pid == crust_cri_api::v1::NamespaceMode::Target as i32)
        .map(|o| o.target_id.as_str())
}

/// ContainerStatus.user: the identity the spec gives the container's first
/// process. kubelet publishes it as `status.containerStatuses[].user` once
/// the runtime reports the SupplementalGroupsPolicy feature.
pub fn container_user(spec: &Spec) -> Option<crust_cri_api::v1::ContainerUser> {
    let user = spec.process().as_ref()?.user();
    Some(crust_cri_api::v1::ContainerUser {
        linux: Some(crust_cri_api::v1::LinuxContainerUser {
            uid: user.uid().into(),
            gid: user.gid().into(),
            supplemental_groups: user
                .additional_gids()
                .iter()
                .flatten()
                .map(|g| i64::from(*g))
                .collect(),
        }),
    })
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
/// security context. A container that targets another container's
/// namespaces needs [`container_spec_with`].
pub fn container_spec(
    config: &ContainerConfig,
    pod: &PodSandboxConfig,
    image: &ImageFacts<'_>,
    sandbox: &SandboxFacts,
    container: &ContainerFacts,
) -> Result<Spec, SpecError> {
    container_spec_with(config, pod, image, sandbox, container, &Targets::default())
}

/// [`container_spec`] with the namespaces of other containers this one
/// joins.
pub fn container_spec_with(
    config: &ContainerConfig,
    pod: &PodSandboxConfig,
    image: &ImageFacts<'_>,
    sandbox: &SandboxFacts,
    container: &ContainerFacts,
    targets: &Targets,
) -> Result<Spec, SpecError> {
    security::check_container_id(container)?;
    // Bounds first: everything below is linear in these lists at best.
    limits::check_image_config(image.config)?;
    limits::check_container_config(config)?;
    limits::check_pod_config(pod)?;
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
    let cdi_names = cdi::requested(config)?;
    let cdi_edits = cdi::resolve(&cdi_names, &container.cdi_spec_dirs)?;
    let userns = userns::sandbox_user_namespace(pod, sandbox)?;
    userns::check_container(sc, userns.as_ref())?;
    if privileged && userns.is_some() {
        return Err(SpecError::invalid(
            "privileged",
            "true",
            "a container in a pod with its own user namespace cannot be privileged",
        ));
    }
    // Idmapped mounts must use the pod's mappings (checked again here; the
    // runtime made their sources from the same answer).
    userns::idmapped_mounts(config, pod)?;
    let labels = lsm::labels(
        scv,
        pod_sc,
        privileged,
        SecurityModules::host(),
        &apparmor_profile_loaded,
    )?;

    // Process.
    let user = user::resolve_user(sc, image)?;
    if let Some(maps) = &userns {
        userns::check_process_ids(maps, user.uid, user.gid, &user.additional_gids)?;
    }
    let caps = security::capabilities_within(sc, privileged, security::host_capabilities())?;
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
    process.set_apparmor_profile(labels.apparmor_profile);
    process.set_selinux_label(labels.selinux_label);

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

    if let Some(m) = plan.mounts.iter().find(|m| {
        m.options()
            .as_ref()
            .is_some_and(|o| o.iter().any(|o| o == "rro"))
    }) && !recursive_read_only_supported()
    {
        return Err(SpecError::unsupported(
            format!("mounts[{}] recursive_read_only", m.destination().display()),
            "true",
            "this kernel cannot make mounts read-only recursively (mount_setattr, Linux 5.12+)",
        ));
    }

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
    linux.set_namespaces(Some(security::namespaces(
        sc,
        sandbox,
        privileged,
        targets.target_pidns_path.as_deref(),
    )?));
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
    linux.set_mount_label(labels.mount_label);
    if let Some(maps) = &userns {
        // The namespace is joined by path (see security::namespaces); the
        // mappings are informational for youki, and runtimes that check
        // them (runc) find them equal to the namespace's.
        linux.set_uid_mappings(Some(maps.oci_uids()?));
        linux.set_gid_mappings(Some(maps.oci_gids()?));
    }

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
    cdi::apply(&mut spec, &cdi_names, &cdi_edits)?;
    Ok(spec)
}

#[cfg(test)]
mod tests;
