//! Image volumes (CRI `Mount.image`, KEP-4639): an image's filesystem,
//! read-only, at a path in a container.
//!
//! kubelet pulls the image first (PullImage) and names it in the mount.
//! crustd mounts a read-only, nosuid, nodev overlay of the image's layers
//! (`Snapshotter::mount_view`) at `<state>/image-mounts/<container id>/
//! <n>/view`; with `image_sub_path` it resolves that path inside the view
//! (openat2 RESOLVE_IN_ROOT: `..` and symlinks stay in the image) and
//! bind-mounts what it found, read-only, at `<n>/sub`. The spec bind-mounts
//! `view` or `sub` into the container. For a pod with its own user
//! namespace the layers are idmapped to the pod first, as for its rootfs.
//! The image's id and layers go on the container's record: RemoveImage
//! refuses the image while the container exists and image GC keeps its
//! layers. Like idmapped copies, the mounts live outside the bundle and are
//! detached one by one ([`release`]), never removed recursively.

use std::collections::HashMap;
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::fs::DirBuilderExt;
use std::path::{Component, Path, PathBuf};

use crust_cri_api::v1 as cri;
use crust_store::{ImageMountRecord, SandboxRecord};
use nix::errno::Errno;
use nix::fcntl::{OFlag, OpenHow, ResolveFlag, openat2};
use nix::mount::{MntFlags, MsFlags, mount, umount2};

use crate::{Pods, RuntimeError};

/// The longest `image_sub_path` accepted (PATH_MAX).
const MAX_SUB_PATH: usize = 4096;

fn dir_of(state: &Path, container_id: &str) -> PathBuf {
    state.join("image-mounts").join(container_id)
}

/// What [`Pods::mount_image_volumes`] made: the sources for
/// `ContainerFacts::image_mount_sources` and the records to keep.
#[derive(Default)]
pub(crate) struct ImageVolumes {
    pub sources: HashMap<String, PathBuf>,
    pub records: Vec<ImageMountRecord>,
}

/// A relative path of plain names: no `..`, not absolute, no NUL.
fn check_sub_path(field: &str, sub: &str) -> Result<(), RuntimeError> {
    let bad =
        |why: &str| RuntimeError::InvalidArgument(format!("{field} image_sub_path {sub:?}: {why}"));
    if sub.len() > MAX_SUB_PATH {
        return Err(bad(&format!("longer than {MAX_SUB_PATH} bytes")));
    }
    if sub.contains('\0') {
        return Err(bad("contains a NUL byte"));
    }
    if sub.starts_with('/') {
        return Err(bad("must be relative to the image's root"));
    }
    if Path::new(sub)
        .components()
        .any(|c| matches!(c, Component::ParentDir))
    {
        return Err(bad("must not contain '..'"));
    }
    Ok(())
}

impl Pods {
    /// Mounts the image volumes `config` asks for; on error, what was
    /// mounted is released by the caller's [`release`] (remove_bundle).
    pub(crate) fn mount_image_volumes(
        &self,
        sandbox: &SandboxRecord,
        config: &cri::ContainerConfig,
        container_id: &str,
    ) -> Result<ImageVolumes, RuntimeError> {
        let mut out = ImageVolumes::default();
        let wanted: Vec<_> = config
            .mounts
            .iter()
            .filter_map(|m| m.image.as_ref().map(|i| (m, i)))
            .collect();
        if wanted.is_empty() {
            return Ok(out);
        }
        let maps = crate::userns::sandbox_mappings(sandbox)?;
        let base = dir_of(&self.config.state, container_id);
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&base)?;
        if let Some(maps) = &maps {
            crate::userns::open_state_dirs(&self.config.state)?;
            let parent = self.config.state.join("image-mounts");
            std::fs::set_permissions(&parent, std::os::unix::fs::PermissionsExt::from_mode(0o711))?;
            crate::userns::open_dir_to_pod(&base, maps)?;
        }
        let userns = match maps {
            Some(_) => Some(std::fs::File::open(&sandbox.userns)?),
            None => None,
        };
        for (n, (m, spec)) in wanted.into_iter().enumerate() {
            let field = format!("mounts[{}]", m.container_path);
            check_sub_path(&field, &m.image_sub_path)?;
            let image = self.images.find(&spec.image)?.ok_or_else(|| {
                RuntimeError::NotFound(format!(
                    "{field} image {:?} not found; pull it first",
                    spec.image
                ))
            })?;
            // images.policy as it is now, as for the container's own image.
            let named = Some(spec.user_specified_image.as_str())
                .filter(|n| !n.is_empty())
                .unwrap_or(&spec.image);
            self.images.admit(named, &image)?;
            let chain: Vec<String> = image.layers.iter().map(|l| l.chain_id.clone()).collect();
            let dir = base.join(n.to_string());
            let source = mount_one(self, &dir, &chain, &m.image_sub_path, userns.as_ref())
                .map_err(|e| match e {
                    RuntimeError::InvalidArgument(msg) => {
                        RuntimeError::InvalidArgument(format!("{field}: {msg}"))
                    }
                    RuntimeError::Internal(msg) => {
                        RuntimeError::Internal(format!("{field} image {:?}: {msg}", spec.image))
                    }
                    other => other,
                })?;
            out.sources
                .insert(crust_spec::clean_path(&m.container_path), source);
            out.records.push(ImageMountRecord {
                container_path: m.container_path.clone(),
                image_id: image.id.clone(),
                chain,
            });
        }
        Ok(out)
    }
}

/// Mounts one image's view in `dir` (and its sub path); returns what the
/// container's bind mount takes.
fn mount_one(
    pods: &Pods,
    dir: &Path,
    chain: &[String],
    sub_path: &str,
    userns: Option<&std::fs::File>,
) -> Result<PathBuf, RuntimeError> {
    let internal = |e: crust_snapshot::SnapshotError| RuntimeError::Internal(e.to_string());
    let (view, empty) = (dir.join("view"), dir.join("empty"));
    std::fs::DirBuilder::new().mode(0o711).create(dir)?;
    for d in [&view, &empty] {
        std::fs::DirBuilder::new().mode(0o755).create(d)?;
    }
    let snapshots = pods.images.snapshots();
    let lowers = snapshots.lower_dirs(chain).map_err(internal)?;
    match userns {
        None => snapshots
            .mount_view(&lowers, &empty, &view)
            .map_err(internal)?,
        Some(userns) => {
            let trees = lowers
                .iter()
                .map(|l| {
                    crate::userns::idmapped_tree(l, userns.as_fd(), false).map_err(|e| {
                        RuntimeError::Internal(format!(
                            "idmapped mount of layer {}: {e}",
                            l.display()
                        ))
                    })
                })
                .collect::<Result<Vec<OwnedFd>, _>>()?;
            let paths: Vec<PathBuf> = trees
                .iter()
                .map(|t| PathBuf::from(format!("/proc/self/fd/{}", t.as_raw_fd())))
                .collect();
            snapshots
                .mount_view(&paths, &empty, &view)
                .map_err(internal)?;
        }
    }
    if sub_path.is_empty() || Path::new(sub_path).components().next().is_none() {
        return Ok(view);
    }
    let root = std::fs::File::open(&view)?;
    let how = OpenHow::new()
        .flags(OFlag::O_PATH | OFlag::O_CLOEXEC)
        .resolve(ResolveFlag::RESOLVE_IN_ROOT | ResolveFlag::RESOLVE_NO_MAGICLINKS);
    let found = match openat2(root.as_raw_fd(), sub_path, how) {
        // SAFETY: openat2 just returned this fd and nothing else owns it.
        Ok(fd) => unsafe { OwnedFd::from_raw_fd(fd) },
        Err(Errno::ENOENT) | Err(Errno::ENOTDIR) => {
            return Err(RuntimeError::InvalidArgument(format!(
                "image_sub_path {sub_path:?} does not exist in the image"
            )));
        }
        Err(e) => {
            return Err(RuntimeError::InvalidArgument(format!(
                "image_sub_path {sub_path:?} cannot be resolved inside the image: {e}"
            )));
        }
    };
    let md = std::fs::File::from(found.try_clone()?).metadata()?;
    let sub = dir.join("sub");
    if md.is_dir() {
        std::fs::DirBuilder::new().mode(0o755).create(&sub)?;
    } else if md.is_file() {
        std::fs::File::create_new(&sub)?;
    } else {
        return Err(RuntimeError::InvalidArgument(format!(
            "image_sub_path {sub_path:?} is neither a directory nor a regular file"
        )));
    }
    let proc_path = PathBuf::from(format!("/proc/self/fd/{}", found.as_raw_fd()));
    let mount_err = |what: &str, e: Errno| {
        RuntimeError::Internal(format!("{what} {} at {}: {e}", sub_path, sub.display()))
    };
    mount(
        Some(&proc_path),
        &sub,
        None::<&str>,
        MsFlags::MS_BIND,
        None::<&str>,
    )
    .map_err(|e| mount_err("bind-mounting", e))?;
    mount(
        None::<&str>,
        &sub,
        None::<&str>,
        MsFlags::MS_BIND
            | MsFlags::MS_REMOUNT
            | MsFlags::MS_RDONLY
            | MsFlags::MS_NOSUID
            | MsFlags::MS_NODEV,
        None::<&str>,
    )
    .map_err(|e| mount_err("making read-only", e))?;
    Ok(sub)
}

/// Detaches and removes a container's image volume mounts (idempotent).
/// Never recursive: each mount point is unmounted, then removed as an
/// empty dir or file, so nothing can reach into a layer.
pub(crate) fn release(state: &Path, container_id: &str) {
    let base = dir_of(state, container_id);
    let Ok(entries) = std::fs::read_dir(&base) else {
        return;
    };
    for entry in entries.flatten() {
        let dir = entry.path();
        for name in ["sub", "view"] {
            let point = dir.join(name);
            match umount2(&point, MntFlags::MNT_DETACH) {
                Ok(()) | Err(Errno::EINVAL) | Err(Errno::ENOENT) => {}
                Err(e) => {
                    tracing::warn!(path = %point.display(), error = %e, "cannot detach image volume");
                    continue;
                }
            }
            let removed = if point.is_dir() {
                std::fs::remove_dir(&point)
            } else {
                std::fs::remove_file(&point)
            };
            if let Err(e) = removed
                && e.kind() != std::io::ErrorKind::NotFound
            {
                tracing::warn!(path = %point.display(), error = %e, "cannot remove image volume mount point");
            }
        }
        let _ = std::fs::remove_dir(dir.join("empty"));
        let _ = std::fs::remove_dir(&dir);
    }
    let _ = std::fs::remove_dir(&base);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sub_paths_stay_relative_and_plain() {
        for ok in ["", "data", "data/dir1", "./data", "a//b/"] {
            assert!(check_sub_path("m", ok).is_ok(), "{ok:?}");
        }
        for bad in ["/data", "../etc", "data/../../etc", "a\0b"] {
            let err = check_sub_path("mounts[/v]", bad).unwrap_err().to_string();
            assert!(err.contains("mounts[/v] image_sub_path"), "{err}");
        }
        let long = "a/".repeat(MAX_SUB_PATH);
        assert!(check_sub_path("m", &long).is_err());
    }
}
