//! User namespaces (`hostUsers: false`): the pod's uid/gid mappings from
//! CRI's `UserNamespace`, validated before anything is created, and what
//! they mean for the container's ids and the OCI spec.
//!
//! Validation follows containerd (mode POD needs both uid and gid
//! mappings, mode NODE none, other modes are refused) and the kernel's own
//! rules for `uid_map` (at most 340 lines, no zero lengths, no overlaps,
//! nothing past 2^32-2), plus two rules of crust's: container id 0 must be
//! mapped (the rootfs is idmapped to the pod's root) and no range may
//! cover host id 0 (a container id that is host root would undo the point
//! of the namespace; kubelet never hands out such a range).

use crust_cri_api::v1::{
    IdMapping, LinuxContainerSecurityContext, NamespaceMode, PodSandboxConfig, UserNamespace,
};
use oci_spec::runtime::{LinuxIdMapping, LinuxIdMappingBuilder};

use crate::{SandboxFacts, SpecError};

/// The kernel's limit on lines in `/proc/<pid>/uid_map` (UID_GID_MAP_MAX_EXTENTS).
const MAX_EXTENTS: usize = 340;

/// One line of a uid or gid map: `length` ids from `container_id` inside
/// the namespace are `host_id`.. outside it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IdMap {
    pub container_id: u32,
    pub host_id: u32,
    pub length: u32,
}

/// A pod's validated user namespace mappings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserNamespaceMappings {
    pub uids: Vec<IdMap>,
    pub gids: Vec<IdMap>,
}

fn to_host(maps: &[IdMap], id: u32) -> Option<u32> {
    maps.iter().find_map(|m| {
        let offset = id.checked_sub(m.container_id)?;
        (offset < m.length).then(|| m.host_id + offset)
    })
}

fn map_text(maps: &[IdMap]) -> String {
    maps.iter()
        .map(|m| format!("{} {} {}\n", m.container_id, m.host_id, m.length))
        .collect()
}

fn oci(maps: &[IdMap]) -> Result<Vec<LinuxIdMapping>, SpecError> {
    maps.iter()
        .map(|m| {
            Ok(LinuxIdMappingBuilder::default()
                .container_id(m.container_id)
                .host_id(m.host_id)
                .size(m.length)
                .build()?)
        })
        .collect()
}

impl UserNamespaceMappings {
    /// The host uid that container uid `id` is, if it is mapped.
    pub fn host_uid(&self, id: u32) -> Option<u32> {
        to_host(&self.uids, id)
    }

    /// The host gid that container gid `id` is, if it is mapped.
    pub fn host_gid(&self, id: u32) -> Option<u32> {
        to_host(&self.gids, id)
    }

    /// The pod's root on the host: container uid and gid 0 (always mapped
    /// once validated).
    pub fn host_root(&self) -> (u32, u32) {
        (
            self.host_uid(0)
                .expect("validated: container uid 0 is mapped"),
            self.host_gid(0)
                .expect("validated: container gid 0 is mapped"),
        )
    }

    /// What to write to `/proc/<pid>/uid_map`.
    pub fn uid_map(&self) -> String {
        map_text(&self.uids)
    }

    /// What to write to `/proc/<pid>/gid_map`.
    pub fn gid_map(&self) -> String {
        map_text(&self.gids)
    }

    pub(crate) fn oci_uids(&self) -> Result<Vec<LinuxIdMapping>, SpecError> {
        oci(&self.uids)
    }

    pub(crate) fn oci_gids(&self) -> Result<Vec<LinuxIdMapping>, SpecError> {
        oci(&self.gids)
    }
}

fn mode_of(field: &str, v: i32) -> Result<NamespaceMode, SpecError> {
    NamespaceMode::try_from(v)
        .map_err(|_| SpecError::invalid(field, v.to_string(), "expected POD or NODE"))
}

/// Validates one list of CRI mappings (`field` names it in errors).
fn checked(field: &str, given: &[IdMapping]) -> Result<Vec<IdMap>, SpecError> {
    let show = |m: &IdMapping| {
        format!(
            "container_id={} host_id={} length={}",
            m.container_id, m.host_id, m.length
        )
    };
    if given.len() > MAX_EXTENTS {
        return Err(SpecError::invalid(
            field,
            format!("{} mappings", given.len()),
            format!("the kernel takes at most {MAX_EXTENTS}"),
        ));
    }
    let mut out: Vec<IdMap> = Vec::with_capacity(given.len());
    // (uid_t)-1 is no id: the last id of a range must be below it.
    let end = |start: u32, len: u32| u64::from(start) + u64::from(len);
    for m in given {
        if m.length == 0 {
            return Err(SpecError::invalid(field, show(m), "length must be over 0"));
        }
        if end(m.container_id, m.length) > u64::from(u32::MAX)
            || end(m.host_id, m.length) > u64::from(u32::MAX)
        {
            return Err(SpecError::invalid(
                field,
                show(m),
                "the range runs past the largest id (4294967294)",
            ));
        }
        if m.host_id == 0 {
            return Err(SpecError::invalid(
                field,
                show(m),
                "maps host id 0 (root) into the pod; a user namespace must not",
            ));
        }
        for o in &out {
            let c = u64::from(o.container_id) < end(m.container_id, m.length)
                && u64::from(m.container_id) < end(o.container_id, o.length);
            let h = u64::from(o.host_id) < end(m.host_id, m.length)
                && u64::from(m.host_id) < end(o.host_id, o.length);
            if c || h {
                return Err(SpecError::invalid(
                    field,
                    show(m),
                    format!(
                        "overlaps container_id={} host_id={} length={}",
                        o.container_id, o.host_id, o.length
                    ),
                ));
            }
        }
        out.push(IdMap {
            container_id: m.container_id,
            host_id: m.host_id,
            length: m.length,
        });
    }
    if to_host(&out, 0).is_none() {
        return Err(SpecError::invalid(
            field,
            given.iter().map(show).collect::<Vec<_>>().join("; "),
            "container id 0 must be mapped (the pod's root owns its rootfs)",
        ));
    }
    Ok(out)
}

/// The validated mappings of a CRI `UserNamespace` (`who` names it in
/// errors): Some for mode POD, None for NODE.
fn mappings_of(who: &str, u: &UserNamespace) -> Result<Option<UserNamespaceMappings>, SpecError> {
    let field = format!("{who} namespace_options.userns_options");
    match mode_of(&format!("{field}.mode"), u.mode)? {
        NamespaceMode::Node => {
            if !u.uids.is_empty() || !u.gids.is_empty() {
                return Err(SpecError::invalid(
                    format!("{field}.mode"),
                    "NODE",
                    format!(
                        "takes no mappings, got {} uid and {} gid mappings",
                        u.uids.len(),
                        u.gids.len()
                    ),
                ));
            }
            Ok(None)
        }
        NamespaceMode::Pod => {
            if u.uids.is_empty() || u.gids.is_empty() {
                return Err(SpecError::invalid(
                    format!("{field}.mode"),
                    "POD",
                    format!(
                        "needs uid and gid mappings, got {} uid and {} gid mappings",
                        u.uids.len(),
                        u.gids.len()
                    ),
                ));
            }
            Ok(Some(UserNamespaceMappings {
                uids: checked(&format!("{field}.uids"), &u.uids)?,
                gids: checked(&format!("{field}.gids"), &u.gids)?,
            }))
        }
        other => Err(SpecError::invalid(
            format!("{field}.mode"),
            format!("{other:?}").to_uppercase(),
            "a user namespace is the pod's (POD) or the host's (NODE)",
        )),
    }
}

/// The pod's user namespace, validated: None when the pod uses the host's
/// (no `userns_options`, or mode NODE). RunPodSandbox calls this before
/// creating anything, so a bad request fails with InvalidArgument.
///
/// A pod with its own user namespace cannot also use the host's network,
/// IPC or PID namespace (namespaces owned by the host's user namespace
/// cannot be joined from the pod's), nor be privileged (Kubernetes'
/// validation refuses both; crust does not rely on that).
pub fn pod_user_namespace(
    pod: &PodSandboxConfig,
) -> Result<Option<UserNamespaceMappings>, SpecError> {
    let Some(sc) = pod.linux.as_ref().and_then(|l| l.security_context.as_ref()) else {
        return Ok(None);
    };
    let Some(opts) = sc.namespace_options.as_ref() else {
        return Ok(None);
    };
    let Some(u) = opts.userns_options.as_ref() else {
        return Ok(None);
    };
    let Some(maps) = mappings_of("pod", u)? else {
        return Ok(None);
    };
    let node = NamespaceMode::Node as i32;
    for (name, mode) in [
        ("network", opts.network),
        ("ipc", opts.ipc),
        ("pid", opts.pid),
    ] {
        if mode == node {
            return Err(SpecError::invalid(
                format!("pod namespace_options.{name}"),
                "NODE",
                "a pod with its own user namespace (hostUsers: false) cannot use the host's namespaces",
            ));
        }
    }
    if sc.privileged {
        return Err(SpecError::invalid(
            "pod privileged",
            "true",
            "a pod with its own user namespace (hostUsers: false) cannot be privileged",
        ));
    }
    Ok(Some(maps))
}

/// The pod's mappings, which the sandbox must have a namespace for (and
/// the other way round).
pub(crate) fn sandbox_user_namespace(
    pod: &PodSandboxConfig,
    sandbox: &SandboxFacts,
) -> Result<Option<UserNamespaceMappings>, SpecError> {
    let maps = pod_user_namespace(pod)?;
    match (&maps, &sandbox.userns_path) {
        (Some(_), None) => Err(SpecError::unsupported(
            "pod namespace_options.userns_options",
            "POD",
            "the runtime did not create the pod's user namespace",
        )),
        (None, Some(p)) => Err(SpecError::invalid(
            "pod namespace_options.userns_options",
            "NODE",
            format!(
                "the pod runs in its own user namespace ({}) but its config asks for none",
                p.display()
            ),
        )),
        _ => Ok(maps),
    }
}

/// The CRI mounts that ask to be idmapped (uid/gid mappings set, as
/// kubelet does for every volume of a pod with hostUsers: false), as
/// (container path, host path), container paths cleaned as the spec uses
/// them. Crust idmaps a mount with the pod's own mappings only, so each
/// must carry exactly those, and the pod must have a user namespace.
pub fn idmapped_mounts(
    config: &crust_cri_api::v1::ContainerConfig,
    pod: &PodSandboxConfig,
) -> Result<Vec<(String, std::path::PathBuf)>, SpecError> {
    let asking: Vec<_> = config
        .mounts
        .iter()
        .filter(|m| !m.uid_mappings.is_empty() || !m.gid_mappings.is_empty())
        // An image volume's view is built idmapped to the pod already
        // (ContainerFacts::image_mount_sources).
        .filter(|m| m.image.is_none())
        .collect();
    if asking.is_empty() {
        return Ok(vec![]);
    }
    let maps = pod_user_namespace(pod)?;
    let mut out = Vec::with_capacity(asking.len());
    for m in asking {
        let field = format!("mounts[{}] uid_mappings/gid_mappings", m.container_path);
        let value = format!("{:?} {:?}", m.uid_mappings, m.gid_mappings);
        let Some(maps) = &maps else {
            return Err(SpecError::unsupported(
                field,
                value,
                "crust idmaps mounts only for pods with their own user namespace (hostUsers: false)",
            ));
        };
        let same = |given: &[IdMapping], want: &[IdMap]| {
            given.len() == want.len()
                && given.iter().zip(want).all(|(g, w)| {
                    (g.container_id, g.host_id, g.length) == (w.container_id, w.host_id, w.length)
                })
        };
        if !same(&m.uid_mappings, &maps.uids) || !same(&m.gid_mappings, &maps.gids) {
            return Err(SpecError::unsupported(
                field,
                value,
                "crust idmaps mounts with the pod's own user namespace mappings only",
            ));
        }
        crate::error::reject_nul("mount host_path", &m.host_path)?;
        if !m.host_path.starts_with('/') {
            return Err(SpecError::invalid(
                format!("mounts[{}] host_path", m.container_path),
                &m.host_path,
                "must be an absolute path",
            ));
        }
        out.push((
            crate::mounts::clean_path(&m.container_path),
            std::path::PathBuf::from(&m.host_path),
        ));
    }
    Ok(out)
}

/// A container may restate its pod's user namespace (kubelet does) but
/// never ask for a different one.
pub(crate) fn check_container(
    sc: Option<&LinuxContainerSecurityContext>,
    pod: Option<&UserNamespaceMappings>,
) -> Result<(), SpecError> {
    let Some(u) = sc
        .and_then(|s| s.namespace_options.as_ref())
        .and_then(|o| o.userns_options.as_ref())
    else {
        return Ok(());
    };
    let asked = mappings_of("container", u)?;
    if asked.as_ref() != pod {
        return Err(SpecError::invalid(
            "container namespace_options.userns_options",
            format!("{u:?}"),
            "differs from the pod's user namespace; containers join their pod's",
        ));
    }
    Ok(())
}

/// Every id the container's process runs with must exist in the pod's
/// user namespace, or the runtime's setuid fails after the container is
/// half made.
pub(crate) fn check_process_ids(
    maps: &UserNamespaceMappings,
    uid: u32,
    gid: u32,
    additional_gids: &[u32],
) -> Result<(), SpecError> {
    if maps.host_uid(uid).is_none() {
        return Err(SpecError::invalid(
            "run_as_user",
            uid.to_string(),
            "is not mapped in the pod's user namespace",
        ));
    }
    for g in std::iter::once(&gid).chain(additional_gids) {
        if maps.host_gid(*g).is_none() {
            return Err(SpecError::invalid(
                "group",
                g.to_string(),
                "is not mapped in the pod's user namespace",
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crust_cri_api::v1::{LinuxPodSandboxConfig, LinuxSandboxSecurityContext, NamespaceOption};

    fn m(container_id: u32, host_id: u32, length: u32) -> IdMapping {
        IdMapping {
            container_id,
            host_id,
            length,
        }
    }

    fn userns(mode: NamespaceMode, uids: Vec<IdMapping>, gids: Vec<IdMapping>) -> UserNamespace {
        UserNamespace {
            mode: mode as i32,
            uids,
            gids,
        }
    }

    fn pod(u: Option<UserNamespace>) -> PodSandboxConfig {
        PodSandboxConfig {
            linux: Some(LinuxPodSandboxConfig {
                security_context: Some(LinuxSandboxSecurityContext {
                    namespace_options: Some(NamespaceOption {
                        userns_options: u,
                        ..Default::default()
                    }),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn pod_userns(uids: Vec<IdMapping>, gids: Vec<IdMapping>) -> PodSandboxConfig {
        pod(Some(userns(NamespaceMode::Pod, uids, gids)))
    }

    fn err(p: &PodSandboxConfig) -> String {
        pod_user_namespace(p).unwrap_err().to_string()
    }

    #[test]
    fn host_users_means_no_namespace() {
        assert_eq!(
            pod_user_namespace(&PodSandboxConfig::default()).unwrap(),
            None
        );
        assert_eq!(pod_user_namespace(&pod(None)).unwrap(), None);
        let node = pod(Some(userns(NamespaceMode::Node, vec![], vec![])));
        assert_eq!(pod_user_namespace(&node).unwrap(), None);
        // NODE with mappings is a contradiction (containerd refuses it too).
        let node = pod(Some(userns(
            NamespaceMode::Node,
            vec![m(0, 1000, 1)],
            vec![],
        )));
        assert!(err(&node).contains("takes no mappings"));
    }

    #[test]
    fn pod_mappings_translate_ids() {
        let p = pod_userns(
            vec![m(0, 200000, 65536)],
            vec![m(0, 300000, 1000), m(1000, 400000, 10)],
        );
        let maps = pod_user_namespace(&p).unwrap().unwrap();
        assert_eq!(maps.host_root(), (200000, 300000));
        assert_eq!(maps.host_uid(65535), Some(265535));
        assert_eq!(maps.host_uid(65536), None);
        assert_eq!(maps.host_gid(999), Some(300999));
        assert_eq!(maps.host_gid(1005), Some(400005));
        assert_eq!(maps.host_gid(1010), None);
        assert_eq!(maps.uid_map(), "0 200000 65536\n");
        assert_eq!(maps.gid_map(), "0 300000 1000\n1000 400000 10\n");
        let oci = maps.oci_gids().unwrap();
        assert_eq!(oci.len(), 2);
        assert_eq!(
            (oci[1].container_id(), oci[1].host_id(), oci[1].size()),
            (1000, 400000, 10)
        );
    }

    #[test]
    fn bad_mappings_are_refused() {
        let ok = || vec![m(0, 200000, 65536)];
        for (p, words) in [
            (pod_userns(vec![], ok()), "needs uid and gid mappings"),
            (pod_userns(ok(), vec![]), "needs uid and gid mappings"),
            (
                pod_userns(vec![m(0, 200000, 0)], ok()),
                "length must be over 0",
            ),
            (
                pod_userns(ok(), vec![m(1, 200000, 65536)]),
                "container id 0 must be mapped",
            ),
            (pod_userns(vec![m(0, 0, 65536)], ok()), "host id 0"),
            (
                pod_userns(vec![m(0, u32::MAX - 10, 100)], ok()),
                "past the largest id",
            ),
            (
                pod_userns(vec![m(u32::MAX - 10, 200000, 11), m(0, 100000, 1)], ok()),
                "past the largest id",
            ),
            (
                pod_userns(vec![m(0, 200000, 100), m(50, 300000, 100)], ok()),
                "overlaps",
            ),
            (
                pod_userns(vec![m(0, 200000, 100), m(100, 200050, 100)], ok()),
                "overlaps",
            ),
            (
                pod_userns((0..341).map(|i| m(i, 100000 + i, 1)).collect(), ok()),
                "at most 340",
            ),
            (
                pod(Some(userns(NamespaceMode::Container, ok(), ok()))),
                "POD",
            ),
        ] {
            let e = err(&p);
            assert!(e.contains(words), "{words:?} in {e}");
            assert!(e.contains("userns_options"), "{e}");
        }
        // Adjacent ranges are fine; the largest id is too.
        let p = pod_userns(
            vec![
                m(0, 200000, 100),
                m(100, 200100, 100),
                m(200, u32::MAX - 1, 1),
            ],
            ok(),
        );
        assert_eq!(pod_user_namespace(&p).unwrap().unwrap().uids.len(), 3);
    }

    #[test]
    fn no_host_namespaces_or_privilege_with_a_user_namespace() {
        for field in ["network", "ipc", "pid"] {
            let mut p = pod_userns(vec![m(0, 200000, 65536)], vec![m(0, 200000, 65536)]);
            let o = p
                .linux
                .as_mut()
                .unwrap()
                .security_context
                .as_mut()
                .unwrap()
                .namespace_options
                .as_mut()
                .unwrap();
            match field {
                "network" => o.network = NamespaceMode::Node as i32,
                "ipc" => o.ipc = NamespaceMode::Node as i32,
                _ => o.pid = NamespaceMode::Node as i32,
            }
            let e = err(&p);
            assert!(e.contains(field) && e.contains("hostUsers"), "{e}");
        }
        let mut p = pod_userns(vec![m(0, 200000, 65536)], vec![m(0, 200000, 65536)]);
        p.linux
            .as_mut()
            .unwrap()
            .security_context
            .as_mut()
            .unwrap()
            .privileged = true;
        assert!(err(&p).contains("privileged"));
    }

    #[test]
    fn containers_join_the_pods_namespace_only() {
        let maps = UserNamespaceMappings {
            uids: vec![IdMap {
                container_id: 0,
                host_id: 200000,
                length: 65536,
            }],
            gids: vec![IdMap {
                container_id: 0,
                host_id: 200000,
                length: 65536,
            }],
        };
        let sc = |u: Option<UserNamespace>| LinuxContainerSecurityContext {
            namespace_options: Some(NamespaceOption {
                userns_options: u,
                ..Default::default()
            }),
            ..Default::default()
        };
        let same = userns(
            NamespaceMode::Pod,
            vec![m(0, 200000, 65536)],
            vec![m(0, 200000, 65536)],
        );
        assert!(check_container(None, Some(&maps)).is_ok());
        assert!(check_container(Some(&sc(None)), Some(&maps)).is_ok());
        assert!(check_container(Some(&sc(Some(same.clone()))), Some(&maps)).is_ok());
        let other = userns(
            NamespaceMode::Pod,
            vec![m(0, 300000, 65536)],
            vec![m(0, 200000, 65536)],
        );
        assert!(check_container(Some(&sc(Some(other))), Some(&maps)).is_err());
        // A container of a host-users pod cannot ask for one.
        assert!(check_container(Some(&sc(Some(same))), None).is_err());
        let node = userns(NamespaceMode::Node, vec![], vec![]);
        assert!(check_container(Some(&sc(Some(node.clone()))), None).is_ok());
        assert!(check_container(Some(&sc(Some(node))), Some(&maps)).is_err());

        assert!(check_process_ids(&maps, 0, 0, &[10, 65535]).is_ok());
        let e = check_process_ids(&maps, 70000, 0, &[])
            .unwrap_err()
            .to_string();
        assert!(e.contains("run_as_user") && e.contains("70000"), "{e}");
        let e = check_process_ids(&maps, 0, 0, &[65536])
            .unwrap_err()
            .to_string();
        assert!(e.contains("65536"), "{e}");
    }
}
