//! Pods with their own user namespace (hostUsers: false): what crustd does
//! on the host so that a container whose root is, say, host uid 200000
//! can start and use its rootfs and the pod's files.
//!
//! - The rootfs: image layers stay owned by host uid 0, shared by every
//!   pod. Each layer gets a detached idmapped mount (open_tree +
//!   mount_setattr(MOUNT_ATTR_IDMAP) with the pod's user namespace), and
//!   overlayfs is mounted over those, as containerd does. Why not idmap
//!   the overlay mount itself: overlayfs does not allow it (mount_setattr
//!   answers EINVAL on Linux 6.18, overlayfs lacks FS_ALLOW_IDMAP), while
//!   idmapped *layers* are supported since 5.19. The container's upper dir
//!   is not idmapped: what the container writes lands with its real host
//!   ids (container root's files are host uid 200000's), and its root dir
//!   is chowned to the mapped owner of the image's root.
//! - Paths the container's init opens before pivot_root, from inside the
//!   user namespace, where host root's 0700 dirs are closed to it: the
//!   state dir, `pods/` and `containers/` become 0711 (as containerd's
//!   state dir), the pod's and the container's own dirs 0710 with the
//!   pod's root group (as containerd's bundles), and the pod's hosts,
//!   resolv.conf and hostname files and /dev/shm belong to the pod's root.
//! - Volumes: kubelet sets uid/gid mappings (the pod's) on every CRI mount
//!   of such a pod. youki 0.7 does not do idmapped bind mounts, so crustd
//!   makes an idmapped copy of each host path (open_tree + mount_setattr,
//!   recursive), attaches it at `<state>/idmapped/<container id>/<n>`,
//!   and the spec bind-mounts that copy (a clone of an idmapped mount
//!   stays idmapped). The copies live outside the bundle so that nothing
//!   that removes a bundle recursively can reach into a volume; they are
//!   detached one by one when the container is removed
//!   ([`release_idmapped_mounts`]).

use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use crust_snapshot::{RwSnapshot, Snapshotter};
use crust_spec::UserNamespaceMappings;
use crust_store::SandboxRecord;

use crate::{Pods, RuntimeError};

/// The validated mappings of a pod's user namespace, from its config.
pub(crate) fn mappings(
    config: &crust_cri_api::v1::PodSandboxConfig,
) -> Result<Option<UserNamespaceMappings>, RuntimeError> {
    crust_spec::pod_user_namespace(config).map_err(|e| RuntimeError::InvalidArgument(e.to_string()))
}

/// The mappings of a pod that runs in its own user namespace (None for
/// one that uses the host's).
pub(crate) fn sandbox_mappings(
    sandbox: &SandboxRecord,
) -> Result<Option<UserNamespaceMappings>, RuntimeError> {
    if sandbox.userns.is_empty() {
        return Ok(None);
    }
    let config: crust_cri_api::v1::PodSandboxConfig =
        serde_json::from_value(sandbox.config.clone())
            .map_err(|e| RuntimeError::Internal(format!("pod {} config: {e}", sandbox.id)))?;
    match mappings(&config)? {
        Some(m) => Ok(Some(m)),
        None => Err(RuntimeError::Internal(format!(
            "pod {} has a user namespace but its config has no mappings",
            sandbox.id
        ))),
    }
}

/// struct mount_attr (MOUNT_ATTR_SIZE_VER0).
#[repr(C)]
struct MountAttr {
    attr_set: u64,
    attr_clr: u64,
    propagation: u64,
    userns_fd: u64,
}

fn check(rc: libc::c_long) -> io::Result<libc::c_long> {
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(rc)
    }
}

/// A detached copy of the mount at `path` (with its submounts when
/// `recursive`) whose ids are mapped through `userns`: a file owned by
/// host uid 0 shows as the uid that the namespace's uid 0 is on the host.
pub(crate) fn idmapped_tree(
    path: &Path,
    userns: BorrowedFd<'_>,
    recursive: bool,
) -> io::Result<OwnedFd> {
    let cpath = std::ffi::CString::new(path.as_os_str().as_bytes())?;
    let mut flags = libc::OPEN_TREE_CLONE | libc::OPEN_TREE_CLOEXEC as libc::c_uint;
    if recursive {
        flags |= libc::AT_RECURSIVE as libc::c_uint;
    }
    // SAFETY: `cpath` is NUL-terminated and outlives the call; the result
    // is a new fd or -1.
    let fd = check(unsafe {
        libc::syscall(libc::SYS_open_tree, libc::AT_FDCWD, cpath.as_ptr(), flags)
    })?;
    // SAFETY: open_tree just returned this fd and nothing else owns it.
    let tree = unsafe { OwnedFd::from_raw_fd(fd as libc::c_int) };
    let attr = MountAttr {
        attr_set: libc::MOUNT_ATTR_IDMAP,
        attr_clr: 0,
        propagation: 0,
        userns_fd: userns.as_raw_fd() as u64,
    };
    let mut at = libc::AT_EMPTY_PATH;
    if recursive {
        at |= libc::AT_RECURSIVE;
    }
    // SAFETY: the kernel reads size_of::<MountAttr>() bytes from `attr` and
    // the empty NUL-terminated path, both alive for the call; `tree` and
    // `userns` are live fds.
    check(unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            tree.as_raw_fd(),
            c"".as_ptr(),
            at,
            &attr as *const MountAttr,
            std::mem::size_of::<MountAttr>(),
        )
    })?;
    Ok(tree)
}

fn chown(path: &Path, uid: u32, gid: u32) -> Result<(), RuntimeError> {
    std::os::unix::fs::lchown(path, Some(uid), Some(gid)).map_err(|e| {
        RuntimeError::Internal(format!("chown {} to {uid}:{gid}: {e}", path.display()))
    })
}

fn chmod(path: &Path, mode: u32) -> Result<(), RuntimeError> {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .map_err(|e| RuntimeError::Internal(format!("chmod {:o} {}: {e}", mode, path.display())))
}

/// Lets processes of the pod's root group through `dir` (0710), which
/// crust created 0700.
pub(crate) fn open_dir_to_pod(
    dir: &Path,
    maps: &UserNamespaceMappings,
) -> Result<(), RuntimeError> {
    let (_, gid) = maps.host_root();
    chown(dir, 0, gid)?;
    chmod(dir, 0o710)
}

/// Makes the pod's root the owner of a file or dir crust made for it.
pub(crate) fn give_to_pod(path: &Path, maps: &UserNamespaceMappings) -> Result<(), RuntimeError> {
    let (uid, gid) = maps.host_root();
    chown(path, uid, gid)
}

/// The state dir and its `pods/` and `containers/` must be traversable
/// (0711) for a container's init to reach its rootfs and the pod's files
/// from inside the user namespace, and so must every dir above the state
/// dir, which crust does not own: a missing x bit there fails the pod with
/// the dir named.
pub(crate) fn open_state_dirs(state: &Path) -> Result<(), RuntimeError> {
    for ancestor in state.ancestors().skip(1) {
        let md = std::fs::metadata(ancestor)?;
        if md.mode() & 0o001 == 0 {
            return Err(RuntimeError::FailedPrecondition(format!(
                "pods with their own user namespace need every directory above crust's state dir to be searchable by others (o+x), and {} is {:o}",
                ancestor.display(),
                md.mode() & 0o7777
            )));
        }
    }
    for dir in [
        state.to_path_buf(),
        state.join("pods"),
        state.join("containers"),
    ] {
        std::fs::create_dir_all(&dir)?;
        let mode = std::fs::metadata(&dir)?.mode() & 0o7777;
        if mode & 0o011 != 0o011 {
            chmod(&dir, mode | 0o711)?;
        }
    }
    Ok(())
}

/// Mounts a container's rootfs at `rootfs`: the plain overlay for a pod
/// that uses the host's user namespace; for one with its own, the overlay
/// over idmapped layers (see the module docs), with the bundle dir opened
/// to the pod's root.
pub(crate) fn mount_rootfs(
    snapshots: &Snapshotter,
    rw: &RwSnapshot,
    rootfs: &Path,
    bundle: &Path,
    sandbox: &SandboxRecord,
) -> Result<(), RuntimeError> {
    let internal = |e: crust_snapshot::SnapshotError| RuntimeError::Internal(e.to_string());
    let Some(maps) = sandbox_mappings(sandbox)? else {
        return snapshots.mount_rw(rw, rootfs).map_err(internal);
    };
    let state = bundle.parent().and_then(Path::parent).ok_or_else(|| {
        RuntimeError::Internal(format!("bundle {} has no state dir", bundle.display()))
    })?;
    open_state_dirs(state)?;
    open_dir_to_pod(bundle, &maps)?;
    // The container's / is the upper dir's root: the image root's owner,
    // as the pod sees host ids.
    let md = std::fs::metadata(&rw.upper)?;
    let uid = maps.host_uid(md.uid()).ok_or_else(|| {
        RuntimeError::InvalidArgument(format!(
            "the image's / belongs to uid {}, which the pod's user namespace does not map",
            md.uid()
        ))
    })?;
    let gid = maps.host_gid(md.gid()).ok_or_else(|| {
        RuntimeError::InvalidArgument(format!(
            "the image's / belongs to gid {}, which the pod's user namespace does not map",
            md.gid()
        ))
    })?;
    chown(&rw.upper, uid, gid)?;
    let userns = std::fs::File::open(&sandbox.userns)?;
    let lowers = rw
        .lowers
        .iter()
        .map(|l| {
            idmapped_tree(l, userns.as_fd(), false).map_err(|e| {
                RuntimeError::Internal(format!(
                    "idmapped mount of layer {}: {e} (needs Linux 5.19+ and a filesystem that supports idmapped mounts)",
                    l.display()
                ))
            })
        })
        .collect::<Result<Vec<OwnedFd>, RuntimeError>>()?;
    let fds: Vec<BorrowedFd<'_>> = lowers.iter().map(|f| f.as_fd()).collect();
    snapshots
        .mount_rw_with_lowers(rw, &fds, rootfs)
        .map_err(internal)
}

fn idmapped_dir(state: &Path, container_id: &str) -> PathBuf {
    state.join("idmapped").join(container_id)
}

/// Makes the idmapped copies of a container's CRI mounts that ask for them
/// ([`crust_spec::idmapped_mounts`]); returns them by container path, for
/// [`crust_spec::ContainerFacts::idmapped_sources`].
pub(crate) fn idmapped_mounts(
    state: &Path,
    sandbox: &SandboxRecord,
    pod: &crust_cri_api::v1::PodSandboxConfig,
    config: &crust_cri_api::v1::ContainerConfig,
    container_id: &str,
) -> Result<std::collections::HashMap<String, PathBuf>, RuntimeError> {
    let wanted = crust_spec::idmapped_mounts(config, pod)?;
    let mut out = std::collections::HashMap::new();
    if wanted.is_empty() {
        return Ok(out);
    }
    let maps = sandbox_mappings(sandbox)?.ok_or_else(|| {
        RuntimeError::InvalidArgument(format!(
            "pod {} has no user namespace to idmap mounts with",
            sandbox.id
        ))
    })?;
    let base = state.join("idmapped");
    let dir = idmapped_dir(state, container_id);
    std::fs::create_dir_all(&dir)?;
    chmod(&base, 0o711)?;
    open_dir_to_pod(&dir, &maps)?;
    let userns = std::fs::File::open(&sandbox.userns)?;
    for (i, (dst, host)) in wanted.into_iter().enumerate() {
        let md = std::fs::metadata(&host).map_err(|e| {
            RuntimeError::InvalidArgument(format!("mount {dst}: host path {}: {e}", host.display()))
        })?;
        let target = dir.join(i.to_string());
        if md.is_dir() {
            std::fs::create_dir(&target)?;
        } else {
            std::fs::File::create(&target)?;
        }
        let tree = idmapped_tree(&host, userns.as_fd(), true).map_err(|e| {
            RuntimeError::Internal(format!(
                "idmapped mount of {} for {dst}: {e} (its filesystem may not support idmapped mounts)",
                host.display()
            ))
        })?;
        let ctarget = std::ffi::CString::new(target.as_os_str().as_bytes())
            .map_err(|e| RuntimeError::Internal(e.to_string()))?;
        // SAFETY: `tree` is a live detached mount, the empty path and
        // `ctarget` are NUL-terminated and outlive the call.
        check(unsafe {
            libc::syscall(
                libc::SYS_move_mount,
                tree.as_raw_fd(),
                c"".as_ptr(),
                libc::AT_FDCWD,
                ctarget.as_ptr(),
                libc::MOVE_MOUNT_F_EMPTY_PATH,
            )
        })
        .map_err(|e| RuntimeError::Internal(format!("attaching {}: {e}", target.display())))?;
        out.insert(dst, target);
    }
    Ok(out)
}

/// Detaches and removes a container's idmapped mount copies (idempotent).
/// Never recursive: each entry is unmounted, then removed as an empty dir
/// or file, so a copy that cannot be unmounted keeps its volume intact.
pub(crate) fn release_idmapped_mounts(state: &Path, container_id: &str) {
    let dir = idmapped_dir(state, container_id);
    let Ok(entries) = std::fs::read_dir(&dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        match nix::mount::umount2(&path, nix::mount::MntFlags::MNT_DETACH) {
            Ok(()) | Err(nix::Error::EINVAL) | Err(nix::Error::ENOENT) => {}
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "cannot detach idmapped mount");
                continue;
            }
        }
        let removed = if path.is_dir() {
            std::fs::remove_dir(&path)
        } else {
            std::fs::remove_file(&path)
        };
        if let Err(e) = removed {
            tracing::warn!(path = %path.display(), error = %e, "cannot remove idmapped mount point");
        }
    }
    let _ = std::fs::remove_dir(&dir);
}

/// Whether this node can run pods with their own user namespace: user
/// namespaces enabled (`/proc/sys/user/max_user_namespaces` > 0) and an
/// overlay over idmapped, detached layers mountable in `dir` (what
/// [`mount_rootfs`] does; needs root, Linux 6.15+ and a filesystem with
/// idmapped mounts). Probed once per process.
pub(crate) fn probe(dir: &Path) -> Result<(), String> {
    let max: u64 = std::fs::read_to_string("/proc/sys/user/max_user_namespaces")
        .map_err(|e| format!("/proc/sys/user/max_user_namespaces: {e}"))?
        .trim()
        .parse()
        .map_err(|e| format!("/proc/sys/user/max_user_namespaces: {e}"))?;
    if max == 0 {
        return Err(
            "user namespaces are disabled (/proc/sys/user/max_user_namespaces is 0)".into(),
        );
    }
    // tmp-*: the snapshotter removes what a crash leaves of it.
    let base = &dir.join(format!("tmp-userns-probe-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(base);
    std::fs::create_dir(base).map_err(|e| format!("{}: {e}", base.display()))?;
    let result = probe_in(base);
    let _ = std::fs::remove_dir_all(base);
    result
}

fn probe_in(base: &Path) -> Result<(), String> {
    let (lower, upper, work, target) = (
        base.join("lower"),
        base.join("upper"),
        base.join("work"),
        base.join("target"),
    );
    for d in [&lower, &upper, &work, &target] {
        std::fs::create_dir(d).map_err(|e| format!("{}: {e}", d.display()))?;
    }
    std::fs::write(lower.join("f"), "").map_err(|e| e.to_string())?;
    let ns_dir = base.join("ns");
    let pinned = crate::namespaces::create_in_user_namespace(
        &ns_dir,
        crate::namespaces::NamespaceSet {
            net: false,
            ipc: false,
            uts: false,
        },
        "",
        "0 1000000 1\n",
        "0 1000000 1\n",
    )
    .map_err(|e| e.to_string())?;
    let result = (|| {
        let userns = std::fs::File::open(pinned.user.as_ref().expect("pinned"))
            .map_err(|e| e.to_string())?;
        let tree = idmapped_tree(&lower, userns.as_fd(), false)
            .map_err(|e| format!("idmapped mount: {e}"))?;
        let snapshot = RwSnapshot {
            key: "probe".into(),
            upper: upper.clone(),
            work: work.clone(),
            lowers: vec![lower.clone()],
        };
        let snapshots = Snapshotter::new(&base.join("snapshots")).map_err(|e| e.to_string())?;
        snapshots
            .mount_rw_with_lowers(&snapshot, &[tree.as_fd()], &target)
            .map_err(|e| format!("overlay over an idmapped layer: {e}"))?;
        let owner = std::fs::metadata(target.join("f")).map(|m| m.uid());
        let _ = nix::mount::umount2(&target, nix::mount::MntFlags::MNT_DETACH);
        match owner {
            Ok(1000000) => Ok(()),
            Ok(other) => Err(format!("an idmapped layer showed uid {other}, not 1000000")),
            Err(e) => Err(e.to_string()),
        }
    })();
    let _ = crate::namespaces::remove(&pinned);
    result
}

impl Pods {
    /// Whether pods here can have their own user namespace
    /// (`RuntimeHandlerFeatures.user_namespaces`); the reason when not.
    pub fn user_namespaces(&self) -> Result<(), String> {
        static PROBED: std::sync::OnceLock<Result<(), String>> = std::sync::OnceLock::new();
        PROBED
            .get_or_init(|| {
                let dir: PathBuf = self.images.snapshots().container_root().to_path_buf();
                let r = probe(&dir);
                match &r {
                    Ok(()) => tracing::info!("pods can have their own user namespace"),
                    Err(e) => {
                        tracing::info!(reason = %e, "pods cannot have their own user namespace")
                    }
                }
                r
            })
            .clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_probe_works_as_root_on_a_recent_kernel() {
        let dir = tempfile::tempdir().unwrap();
        let r = probe(dir.path());
        if nix::unistd::geteuid().is_root() {
            let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap();
            let mut v = release.split(|c: char| !c.is_ascii_digit());
            let kernel: (u32, u32) = (
                v.next().unwrap().parse().unwrap(),
                v.next().unwrap().parse().unwrap(),
            );
            if kernel >= (6, 15) {
                assert_eq!(r, Ok(()));
            }
        } else {
            assert!(r.is_err());
        }
        // Nothing is left behind either way.
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }
}
