//! Mounts: containerd's defaults, the pod's files (/etc/hosts,
//! /etc/resolv.conf, /etc/hostname, /dev/shm), CRI mounts and image VOLUMEs,
//! ordered so that parents mount before children.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use crust_cri_api::v1::{ContainerConfig, MountPropagation};
use crust_store::ImageConfig;
use oci_spec::runtime::{Mount, MountBuilder};

use crate::error::reject_nul;
use crate::{ContainerFacts, SandboxFacts, SpecError};

/// Lexically cleans an absolute container path: no `.`/`..`/empty parts.
/// `..` cannot climb above `/`, as the kernel resolves it.
pub fn clean_path(p: &str) -> String {
    let mut parts: Vec<&str> = Vec::new();
    for part in p.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            other => parts.push(other),
        }
    }
    format!("/{}", parts.join("/"))
}

fn depth(p: &str) -> usize {
    p.matches('/').count()
}

/// Image VOLUMEs that no CRI mount covers, each with its host dir under
/// `volumes_dir` (`<index>-<path with / as ->`, unique and stable for a
/// given image). crustd creates the dirs before Create; `container_spec`
/// bind-mounts exactly these.
pub fn image_volumes(
    config: &ContainerConfig,
    image: &ImageConfig,
    container: &ContainerFacts,
) -> Vec<(String, PathBuf)> {
    let cri: HashSet<String> = config
        .mounts
        .iter()
        .map(|m| clean_path(&m.container_path))
        .collect();
    let mut vols: Vec<String> = image
        .volumes
        .iter()
        .filter_map(|v| {
            if v.chars().any(char::is_control) {
                tracing::warn!(volume = %v.escape_debug(), "ignoring image VOLUME with a control character");
                return None;
            }
            let p = clean_path(v);
            if p == "/" {
                tracing::warn!(volume = %v, "ignoring image VOLUME at /");
                return None;
            }
            Some(p)
        })
        .collect();
    vols.sort();
    vols.dedup();
    vols.into_iter()
        .enumerate()
        .filter(|(_, p)| !cri.contains(p))
        .map(|(i, p)| {
            let tail: String = p[1..]
                .chars()
                .map(|c| match c {
                    '/' => '-',
                    c if c.is_ascii_alphanumeric() || c == '.' || c == '_' || c == '-' => c,
                    _ => '_',
                })
                .take(60)
                .collect();
            let dir = container.volumes_dir.join(format!("{i}-{tail}"));
            (p, dir)
        })
        .collect()
}

/// Whether this kernel can make a mount read-only recursively
/// (mount_setattr(2) with MOUNT_ATTR_RDONLY and AT_RECURSIVE, Linux 5.12+),
/// which the OCI `rro` option needs. Probed once per process: asked about
/// fd -1, a kernel with the call answers EBADF and one without ENOSYS
/// (anything else, e.g. EPERM without CAP_SYS_ADMIN, counts as no).
pub fn recursive_read_only_supported() -> bool {
    static SUPPORTED: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *SUPPORTED.get_or_init(probe_mount_setattr)
}

fn probe_mount_setattr() -> bool {
    use nix::libc;
    /// struct mount_attr (MOUNT_ATTR_SIZE_VER0).
    #[repr(C)]
    struct MountAttr {
        attr_set: u64,
        attr_clr: u64,
        propagation: u64,
        userns_fd: u64,
    }
    const MOUNT_ATTR_RDONLY: u64 = 0x1;
    let attr = MountAttr {
        attr_set: MOUNT_ATTR_RDONLY,
        attr_clr: 0,
        propagation: 0,
        userns_fd: 0,
    };
    let fd: libc::c_int = -1;
    // SAFETY: the kernel reads `size_of::<MountAttr>()` bytes from `attr`
    // and the empty NUL-terminated path, both alive for the call; fd -1
    // names no mount, so nothing is changed.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            fd,
            c"".as_ptr(),
            libc::AT_EMPTY_PATH | libc::AT_RECURSIVE,
            &attr as *const MountAttr,
            std::mem::size_of::<MountAttr>(),
        )
    };
    rc == -1 && nix::errno::Errno::last() == nix::errno::Errno::EBADF
}

/// A bind mount before it becomes an OCI mount.
struct Bind {
    dst: String,
    src: PathBuf,
    readonly: bool,
    recursive_ro: bool,
    propagation: MountPropagation,
    /// CRI `Mount.mount_options` that passed [`extra_bind_options`].
    extra: Vec<String>,
}

/// The options a CRI mount may add (`Mount.mount_options`, CRI 1.37): each
/// only takes something away from the bind mount or sets its atime policy.
/// Anything else (suid, exec, dev, rw, propagation, filesystem options) is
/// refused: it would loosen what crust sets, or mean nothing on a bind.
const EXTRA_BIND_OPTIONS: &[&str] = &[
    "ro",
    "noexec",
    "nosuid",
    "nodev",
    "noatime",
    "nodiratime",
    "relatime",
    "strictatime",
];
const MAX_EXTRA_BIND_OPTIONS: usize = 16;

/// `Mount.mount_options` checked against [`EXTRA_BIND_OPTIONS`], without
/// duplicates; "ro" is not repeated (it sets the mount read-only).
fn extra_bind_options(field: &str, given: &[String]) -> Result<(Vec<String>, bool), SpecError> {
    if given.len() > MAX_EXTRA_BIND_OPTIONS {
        return Err(SpecError::invalid(
            format!("{field} mount_options"),
            format!("{} entries", given.len()),
            format!("at most {MAX_EXTRA_BIND_OPTIONS}"),
        ));
    }
    let mut out: Vec<String> = Vec::new();
    let mut readonly = false;
    for o in given {
        if !EXTRA_BIND_OPTIONS.contains(&o.as_str()) {
            return Err(SpecError::invalid(
                format!("{field} mount_options"),
                o,
                format!("crust applies only {}", EXTRA_BIND_OPTIONS.join(", ")),
            ));
        }
        if o == "ro" {
            readonly = true;
        } else if !out.contains(o) {
            out.push(o.clone());
        }
    }
    Ok((out, readonly))
}

#[derive(Debug)]
pub(crate) struct MountPlan {
    pub mounts: Vec<Mount>,
    /// "shared"/"slave" when a mount needs it, else unset.
    pub rootfs_propagation: Option<String>,
}

fn tmpfs_like(dst: &str, typ: &str, src: &str, opts: &[&str]) -> Result<Mount, SpecError> {
    Ok(MountBuilder::default()
        .destination(dst)
        .typ(typ)
        .source(src)
        .options(opts.iter().map(|o| o.to_string()).collect::<Vec<_>>())
        .build()?)
}

/// containerd's default mounts (without /run, as its CRI plugin), with the
/// cgroup mount CRI adds. /sys and /sys/fs/cgroup are rw when privileged.
fn default_mounts(privileged: bool, private_shm: bool) -> Result<Vec<Mount>, SpecError> {
    let ro = if privileged { "rw" } else { "ro" };
    let mut m = vec![
        tmpfs_like("/proc", "proc", "proc", &["nosuid", "noexec", "nodev"])?,
        tmpfs_like(
            "/dev",
            "tmpfs",
            "tmpfs",
            &["nosuid", "strictatime", "mode=755", "size=65536k"],
        )?,
        tmpfs_like(
            "/dev/pts",
            "devpts",
            "devpts",
            &[
                "nosuid",
                "noexec",
                "newinstance",
                "ptmxmode=0666",
                "mode=0620",
                "gid=5",
            ],
        )?,
    ];
    if private_shm {
        m.push(tmpfs_like(
            "/dev/shm",
            "tmpfs",
            "shm",
            &["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"],
        )?);
    }
    m.push(tmpfs_like(
        "/dev/mqueue",
        "mqueue",
        "mqueue",
        &["nosuid", "noexec", "nodev"],
    )?);
    m.push(tmpfs_like(
        "/sys",
        "sysfs",
        "sysfs",
        &["nosuid", "noexec", "nodev", ro],
    )?);
    m.push(tmpfs_like(
        "/sys/fs/cgroup",
        "cgroup",
        "cgroup",
        &["nosuid", "noexec", "nodev", "relatime", ro],
    )?);
    Ok(m)
}

fn cri_binds(
    config: &ContainerConfig,
    container: &ContainerFacts,
    privileged: bool,
) -> Result<Vec<Bind>, SpecError> {
    let mut out = Vec::with_capacity(config.mounts.len());
    for m in &config.mounts {
        let field = format!("mounts[{}]", m.container_path);
        reject_nul("mount container_path", &m.container_path)?;
        reject_nul("mount host_path", &m.host_path)?;
        if !m.container_path.starts_with('/') {
            return Err(SpecError::invalid(
                "mount container_path",
                &m.container_path,
                "must be an absolute path",
            ));
        }
        let dst = clean_path(&m.container_path);
        if dst == "/" {
            return Err(SpecError::invalid(
                "mount container_path",
                &m.container_path,
                "cannot mount over the container's root",
            ));
        }
        if let Some(img) = &m.image {
            // Always read-only, whatever the request says: nothing may
            // write to an image's layers.
            let src = container.image_mount_sources.get(&dst).ok_or_else(|| {
                SpecError::unsupported(
                    format!("{field} image"),
                    &img.image,
                    "the runtime did not mount this image volume",
                )
            })?;
            let (extra, _) = extra_bind_options(&field, &m.mount_options)?;
            out.push(Bind {
                dst,
                src: src.clone(),
                readonly: true,
                recursive_ro: m.recursive_read_only,
                propagation: MountPropagation::PropagationPrivate,
                extra,
            });
            continue;
        }
        if !m.host_path.starts_with('/') {
            return Err(SpecError::invalid(
                format!("{field} host_path"),
                &m.host_path,
                "must be an absolute path",
            ));
        }
        // Idmapped (kubelet asks for it on every volume of a pod with its
        // own user namespace): the runtime made an idmapped copy of the
        // host path (crate::userns::idmapped_mounts says which).
        let source = if !m.uid_mappings.is_empty() || !m.gid_mappings.is_empty() {
            container
                .idmapped_sources
                .get(&dst)
                .cloned()
                .ok_or_else(|| {
                    SpecError::unsupported(
                        format!("{field} uid_mappings/gid_mappings"),
                        format!("{:?} {:?}", m.uid_mappings, m.gid_mappings),
                        "the runtime did not make an idmapped mount for it",
                    )
                })?
        } else {
            PathBuf::from(&m.host_path)
        };
        let propagation = MountPropagation::try_from(m.propagation).map_err(|_| {
            SpecError::invalid(
                format!("{field} propagation"),
                m.propagation.to_string(),
                "expected PRIVATE (0), HOST_TO_CONTAINER (1) or BIDIRECTIONAL (2)",
            )
        })?;
        // Kubernetes allows Bidirectional only for privileged containers: a
        // shared mount lets the container mount things onto the host.
        if propagation == MountPropagation::PropagationBidirectional && !privileged {
            return Err(SpecError::invalid(
                format!("{field} propagation"),
                "BIDIRECTIONAL",
                "only privileged containers may use bidirectional propagation",
            ));
        }
        let (extra, ro_option) = extra_bind_options(&field, &m.mount_options)?;
        let readonly = m.readonly || ro_option;
        if m.recursive_read_only {
            if !readonly {
                return Err(SpecError::invalid(
                    format!("{field} recursive_read_only"),
                    "true",
                    "needs readonly: true",
                ));
            }
            if propagation != MountPropagation::PropagationPrivate {
                return Err(SpecError::invalid(
                    format!("{field} recursive_read_only"),
                    "true",
                    "needs PRIVATE propagation",
                ));
            }
        }
        if m.selinux_relabel {
            if crate::SecurityModules::host().selinux {
                // Never silently: the container would run with a volume
                // its label cannot read.
                return Err(SpecError::unsupported(
                    format!("{field} selinux_relabel"),
                    "true",
                    "crust does not relabel volumes for SELinux yet",
                ));
            }
            tracing::debug!(mount = %dst, "selinux_relabel ignored: this host has no SELinux");
        }
        out.push(Bind {
            dst,
            src: source,
            readonly,
            recursive_ro: m.recursive_read_only,
            propagation,
            extra,
        });
    }
    Ok(out)
}

fn private_bind(dst: &str, src: &Path, readonly: bool) -> Bind {
    Bind {
        dst: dst.to_string(),
        src: src.to_path_buf(),
        readonly,
        recursive_ro: false,
        propagation: MountPropagation::PropagationPrivate,
        extra: Vec::new(),
    }
}

pub(crate) fn mounts(
    config: &ContainerConfig,
    image: &ImageConfig,
    sandbox: &SandboxFacts,
    container: &ContainerFacts,
    privileged: bool,
    readonly_rootfs: bool,
) -> Result<MountPlan, SpecError> {
    let mut binds = cri_binds(config, container, privileged)?;
    let mut taken: HashSet<String> = binds.iter().map(|b| b.dst.clone()).collect();

    // The pod's files; a CRI mount at the same path wins (as containerd).
    let pod_files = [
        ("/etc/hostname", &sandbox.hostname_file),
        ("/etc/hosts", &sandbox.hosts),
        ("/etc/resolv.conf", &sandbox.resolv_conf),
    ];
    for (dst, src) in pod_files {
        if let Some(src) = src
            && taken.insert(dst.to_string())
        {
            binds.push(private_bind(dst, src, readonly_rootfs));
        }
    }
    // /dev/shm: the pod's tmpfs; the host's with host IPC; else private.
    let mut private_shm = false;
    if !taken.contains("/dev/shm") {
        let shm = match (&sandbox.shm_path, &sandbox.ipcns_path) {
            (Some(p), _) => Some(p.clone()),
            (None, None) => Some(PathBuf::from("/dev/shm")),
            (None, Some(_)) => None,
        };
        match shm {
            Some(p) => {
                taken.insert("/dev/shm".to_string());
                binds.push(private_bind("/dev/shm", &p, false));
            }
            None => private_shm = true,
        }
    }
    for (dst, dir) in image_volumes(config, image, container) {
        if taken.insert(dst.clone()) {
            binds.push(private_bind(&dst, &dir, false));
        }
    }

    // Defaults first, minus any a bind replaces (and all of /dev/* when
    // /dev itself is bound); then binds by depth, stable, parents first.
    let dev_bound = taken.contains("/dev");
    let mut out: Vec<Mount> = default_mounts(privileged, private_shm)?
        .into_iter()
        .filter(|m| {
            let dst = m.destination().to_string_lossy();
            let replaced = taken.contains(dst.as_ref());
            let under_bound_dev = dev_bound && dst.starts_with("/dev/");
            !replaced && !under_bound_dev
        })
        .collect();
    binds.sort_by_key(|b| depth(&b.dst));

    let mut propagation: Option<&str> = None;
    for b in binds {
        let prop = match b.propagation {
            MountPropagation::PropagationPrivate => "rprivate",
            MountPropagation::PropagationHostToContainer => {
                if propagation != Some("rshared") {
                    propagation = Some("rslave");
                }
                "rslave"
            }
            MountPropagation::PropagationBidirectional => {
                propagation = Some("rshared");
                "rshared"
            }
        };
        let mode = match (b.readonly, b.recursive_ro) {
            (true, true) => "rro",
            (true, false) => "ro",
            (false, _) => "rw",
        };
        out.push(
            MountBuilder::default()
                .destination(&b.dst)
                .typ("bind")
                .source(b.src)
                .options(
                    ["rbind", prop, mode]
                        .into_iter()
                        .map(String::from)
                        .chain(b.extra)
                        .collect::<Vec<_>>(),
                )
                .build()?,
        );
    }
    Ok(MountPlan {
        mounts: out,
        // The OCI spec's values for the rootfs are shared/slave/private
        // (applied recursively); youki refuses containerd's "rslave".
        rootfs_propagation: propagation.map(|p| p.trim_start_matches('r').to_string()),
    })
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::CgroupDriver;
    use crust_cri_api::v1::Mount as CriMount;

    pub(crate) fn sandbox() -> SandboxFacts {
        SandboxFacts {
            pod_id: "p".repeat(64),
            hostname: "pod-a".into(),
            netns_path: Some("/run/crust/ns/net".into()),
            ipcns_path: Some("/run/crust/ns/ipc".into()),
            utsns_path: Some("/run/crust/ns/uts".into()),
            pidns_path: None,
            host_pid: false,
            userns_path: None,
            resolv_conf: Some("/var/lib/crust/pods/p/resolv.conf".into()),
            hosts: Some("/var/lib/crust/pods/p/hosts".into()),
            hostname_file: Some("/var/lib/crust/pods/p/hostname".into()),
            shm_path: Some("/run/crust/pods/p/shm".into()),
            cgroup_parent: "/kubepods/besteffort/podx".into(),
            cgroup_driver: CgroupDriver::Cgroupfs,
        }
    }

    fn container() -> ContainerFacts {
        ContainerFacts {
            id: "c".repeat(64),
            volumes_dir: "/var/lib/crust/containers/c/volumes".into(),
            oom_score_adj_min: -1000,
            idmapped_sources: Default::default(),
            image_mount_sources: Default::default(),
            cdi_spec_dirs: Vec::new(),
        }
    }

    fn cri(dst: &str, src: &str, ro: bool, prop: MountPropagation) -> CriMount {
        CriMount {
            container_path: dst.into(),
            host_path: src.into(),
            readonly: ro,
            propagation: prop as i32,
            ..Default::default()
        }
    }

    fn plan(
        config: &ContainerConfig,
        image: &ImageConfig,
        sb: &SandboxFacts,
        privileged: bool,
        ro: bool,
    ) -> Result<MountPlan, SpecError> {
        mounts(config, image, sb, &container(), privileged, ro)
    }

    fn find<'a>(p: &'a MountPlan, dst: &str) -> Option<&'a Mount> {
        p.mounts.iter().find(|m| m.destination() == Path::new(dst))
    }

    fn opts(m: &Mount) -> Vec<String> {
        m.options().clone().unwrap_or_default()
    }

    #[test]
    fn clean_paths() {
        assert_eq!(clean_path("/a//b/./c/"), "/a/b/c");
        assert_eq!(clean_path("/../../etc"), "/etc");
        assert_eq!(clean_path("/a/b/../c"), "/a/c");
        assert_eq!(clean_path("rel/x"), "/rel/x");
        assert_eq!(clean_path("/"), "/");
    }

    #[test]
    fn defaults_and_pod_files() {
        let p = plan(
            &ContainerConfig::default(),
            &ImageConfig::default(),
            &sandbox(),
            false,
            false,
        )
        .unwrap();
        let dsts: Vec<String> = p
            .mounts
            .iter()
            .map(|m| m.destination().display().to_string())
            .collect();
        assert_eq!(
            dsts,
            [
                "/proc",
                "/dev",
                "/dev/pts",
                "/dev/mqueue",
                "/sys",
                "/sys/fs/cgroup",
                "/etc/hostname",
                "/etc/hosts",
                "/etc/resolv.conf",
                "/dev/shm"
            ]
        );
        assert!(opts(find(&p, "/sys").unwrap()).contains(&"ro".to_string()));
        assert!(opts(find(&p, "/sys/fs/cgroup").unwrap()).contains(&"ro".to_string()));
        let shm = find(&p, "/dev/shm").unwrap();
        assert_eq!(
            shm.source().as_deref(),
            Some(Path::new("/run/crust/pods/p/shm"))
        );
        assert_eq!(opts(shm), ["rbind", "rprivate", "rw"]);
        assert_eq!(
            opts(find(&p, "/etc/hosts").unwrap()),
            ["rbind", "rprivate", "rw"]
        );
        assert_eq!(p.rootfs_propagation, None);

        // readonly rootfs makes the pod files read-only; privileged makes /sys rw.
        let p = plan(
            &ContainerConfig::default(),
            &ImageConfig::default(),
            &sandbox(),
            true,
            true,
        )
        .unwrap();
        assert_eq!(
            opts(find(&p, "/etc/resolv.conf").unwrap()),
            ["rbind", "rprivate", "ro"]
        );
        assert!(opts(find(&p, "/sys").unwrap()).contains(&"rw".to_string()));
        assert!(opts(find(&p, "/sys/fs/cgroup").unwrap()).contains(&"rw".to_string()));
    }

    #[test]
    fn shm_private_or_host() {
        let mut sb = sandbox();
        sb.shm_path = None;
        let p = plan(
            &ContainerConfig::default(),
            &ImageConfig::default(),
            &sb,
            false,
            false,
        )
        .unwrap();
        let shm = find(&p, "/dev/shm").unwrap();
        assert_eq!(shm.typ().as_deref(), Some("tmpfs"));
        assert!(opts(shm).contains(&"size=65536k".to_string()));
        sb.ipcns_path = None;
        let p = plan(
            &ContainerConfig::default(),
            &ImageConfig::default(),
            &sb,
            false,
            false,
        )
        .unwrap();
        assert_eq!(
            find(&p, "/dev/shm").unwrap().source().as_deref(),
            Some(Path::new("/dev/shm"))
        );
    }

    #[test]
    fn cri_mounts_override_pod_files_and_sort_parents_first() {
        let config = ContainerConfig {
            mounts: vec![
                cri(
                    "/data/a/b",
                    "/h/ab",
                    false,
                    MountPropagation::PropagationPrivate,
                ),
                cri(
                    "/etc/hosts",
                    "/h/hosts",
                    true,
                    MountPropagation::PropagationPrivate,
                ),
                cri(
                    "/data",
                    "/h/data",
                    true,
                    MountPropagation::PropagationHostToContainer,
                ),
                cri(
                    "/data/a/",
                    "/h/a",
                    false,
                    MountPropagation::PropagationPrivate,
                ),
            ],
            ..Default::default()
        };
        let p = plan(&config, &ImageConfig::default(), &sandbox(), false, false).unwrap();
        let hosts: Vec<&Mount> = p
            .mounts
            .iter()
            .filter(|m| m.destination() == Path::new("/etc/hosts"))
            .collect();
        assert_eq!(hosts.len(), 1);
        assert_eq!(hosts[0].source().as_deref(), Some(Path::new("/h/hosts")));
        assert_eq!(opts(hosts[0]), ["rbind", "rprivate", "ro"]);
        let pos = |d: &str| {
            p.mounts
                .iter()
                .position(|m| m.destination() == Path::new(d))
                .unwrap()
        };
        assert!(pos("/data") < pos("/data/a") && pos("/data/a") < pos("/data/a/b"));
        assert_eq!(opts(&p.mounts[pos("/data")]), ["rbind", "rslave", "ro"]);
        assert_eq!(p.rootfs_propagation.as_deref(), Some("slave"));
    }

    #[test]
    fn propagation_modes() {
        let config = ContainerConfig {
            mounts: vec![
                cri(
                    "/s",
                    "/h/s",
                    false,
                    MountPropagation::PropagationBidirectional,
                ),
                cri(
                    "/r",
                    "/h/r",
                    false,
                    MountPropagation::PropagationHostToContainer,
                ),
            ],
            ..Default::default()
        };
        let p = plan(&config, &ImageConfig::default(), &sandbox(), true, false).unwrap();
        assert_eq!(opts(find(&p, "/s").unwrap()), ["rbind", "rshared", "rw"]);
        assert_eq!(opts(find(&p, "/r").unwrap()), ["rbind", "rslave", "rw"]);
        assert_eq!(p.rootfs_propagation.as_deref(), Some("shared"));
        // Bidirectional needs privileged.
        let e = plan(&config, &ImageConfig::default(), &sandbox(), false, false).unwrap_err();
        assert!(e.to_string().contains("BIDIRECTIONAL"), "{e}");
    }

    #[test]
    fn recursive_read_only() {
        let mut m = cri("/x", "/h/x", true, MountPropagation::PropagationPrivate);
        m.recursive_read_only = true;
        let config = ContainerConfig {
            mounts: vec![m.clone()],
            ..Default::default()
        };
        let p = plan(&config, &ImageConfig::default(), &sandbox(), false, false).unwrap();
        assert_eq!(opts(find(&p, "/x").unwrap()), ["rbind", "rprivate", "rro"]);
        m.readonly = false;
        let config = ContainerConfig {
            mounts: vec![m.clone()],
            ..Default::default()
        };
        assert!(plan(&config, &ImageConfig::default(), &sandbox(), false, false).is_err());
        m.readonly = true;
        m.propagation = MountPropagation::PropagationHostToContainer as i32;
        let config = ContainerConfig {
            mounts: vec![m],
            ..Default::default()
        };
        assert!(plan(&config, &ImageConfig::default(), &sandbox(), false, false).is_err());
    }

    #[test]
    fn mount_options_only_tighten_a_bind() {
        let with = |options: &[&str]| {
            let mut m = cri("/x", "/h/x", false, MountPropagation::PropagationPrivate);
            m.mount_options = options.iter().map(|s| s.to_string()).collect();
            ContainerConfig {
                mounts: vec![m],
                ..Default::default()
            }
        };
        let p = plan(
            &with(&["noexec", "nosuid", "nodev", "noatime", "noexec"]),
            &ImageConfig::default(),
            &sandbox(),
            false,
            false,
        )
        .unwrap();
        assert_eq!(
            opts(find(&p, "/x").unwrap()),
            [
                "rbind", "rprivate", "rw", "noexec", "nosuid", "nodev", "noatime"
            ]
        );
        // "ro" makes the bind read-only, as Mount.readonly would.
        let p = plan(
            &with(&["ro"]),
            &ImageConfig::default(),
            &sandbox(),
            false,
            false,
        )
        .unwrap();
        assert_eq!(opts(find(&p, "/x").unwrap()), ["rbind", "rprivate", "ro"]);
        // Loosening, filesystem and propagation options are refused, named.
        for bad in ["suid", "exec", "dev", "rw", "shared", "size=1m", ""] {
            let e = plan(
                &with(&[bad]),
                &ImageConfig::default(),
                &sandbox(),
                true,
                false,
            )
            .unwrap_err()
            .to_string();
            assert!(e.contains("mount_options"), "{bad}: {e}");
        }
        let many = vec!["nosuid"; MAX_EXTRA_BIND_OPTIONS + 1];
        let e = plan(
            &with(&many),
            &ImageConfig::default(),
            &sandbox(),
            false,
            false,
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("at most 16"), "{e}");
    }

    #[test]
    fn invalid_cri_mounts() {
        for m in [
            cri("rel", "/h", false, MountPropagation::PropagationPrivate),
            cri("/", "/h", false, MountPropagation::PropagationPrivate),
            cri("/x/..", "/h", false, MountPropagation::PropagationPrivate),
            cri("/x", "rel", false, MountPropagation::PropagationPrivate),
            cri("/x", "", false, MountPropagation::PropagationPrivate),
            cri("/x\0y", "/h", false, MountPropagation::PropagationPrivate),
            CriMount {
                propagation: 9,
                ..cri("/x", "/h", false, MountPropagation::PropagationPrivate)
            },
        ] {
            let config = ContainerConfig {
                mounts: vec![m.clone()],
                ..Default::default()
            };
            assert!(
                plan(&config, &ImageConfig::default(), &sandbox(), true, false).is_err(),
                "{m:?}"
            );
        }
    }

    #[test]
    fn dev_bind_drops_default_dev_mounts() {
        let config = ContainerConfig {
            mounts: vec![cri(
                "/dev",
                "/dev",
                false,
                MountPropagation::PropagationPrivate,
            )],
            ..Default::default()
        };
        let p = plan(&config, &ImageConfig::default(), &sandbox(), true, false).unwrap();
        let dev: Vec<_> = p
            .mounts
            .iter()
            .filter(|m| m.destination().starts_with("/dev"))
            .collect();
        // The CRI /dev and the pod's /dev/shm bind (after it: deeper).
        assert_eq!(dev.len(), 2);
        assert_eq!(dev[0].typ().as_deref(), Some("bind"));
    }

    #[test]
    fn image_volumes_skip_cri_and_are_stable() {
        let image = ImageConfig {
            volumes: vec![
                "/var/lib/data".into(),
                "cache".into(),
                "/data/".into(),
                "/".into(),
                "/a\nb".into(),
            ],
            ..Default::default()
        };
        let config = ContainerConfig {
            mounts: vec![cri(
                "/data",
                "/h/data",
                false,
                MountPropagation::PropagationPrivate,
            )],
            ..Default::default()
        };
        let v = image_volumes(&config, &image, &container());
        let vd = container().volumes_dir;
        assert_eq!(
            v,
            [
                ("/cache".to_string(), vd.join("0-cache")),
                ("/var/lib/data".to_string(), vd.join("2-var-lib-data")),
            ]
        );
        let p = plan(&config, &image, &sandbox(), false, false).unwrap();
        assert_eq!(
            find(&p, "/var/lib/data").unwrap().source().as_deref(),
            Some(vd.join("2-var-lib-data").as_path())
        );
        assert_eq!(
            find(&p, "/data").unwrap().source().as_deref(),
            Some(Path::new("/h/data"))
        );
    }
}
