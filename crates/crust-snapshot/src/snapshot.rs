//! Layers by chain id, read-write snapshots by key, and their overlay mounts.

use std::ffi::CString;
use std::fs::{self, DirBuilder};
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use nix::errno::Errno;
use nix::fcntl::{RenameFlags, renameat2};
use nix::mount::{MsFlags, mount};

use crate::sys;
use crate::usage::{Usage, dir_usage};

const LAYERS: &str = "layers";
const RW: &str = "rw";
const TMP_PREFIX: &str = "tmp-";
/// overlayfs refuses deeper stacks (OVL_MAX_STACK).
const MAX_LOWERS: usize = 500;
/// What `layer_dir` answers for an id that is not a chain id; never created.
const INVALID: &str = "invalid-chain-id";

/// Why a snapshotter operation failed.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    #[error("{op} {}: {source}", path.display())]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("invalid chain id {0:?}: expected \"sha256:\" and 64 lowercase hex digits")]
    InvalidChainId(String),
    #[error(
        "invalid snapshot key {0:?}: use 1 to 128 characters from A-Z a-z 0-9 _ . -, not starting with '.'"
    )]
    InvalidKey(String),
    #[error("layer {0} is not in the snapshotter; unpack it first")]
    LayerNotFound(String),
    #[error("read-write snapshot {0:?} already exists; remove it first")]
    RwExists(String),
    #[error("{what} is still in use by the overlay mounted at {mount_point}; unmount it first")]
    StillMounted { what: String, mount_point: String },
    #[error("path {} cannot go into overlay mount options: it contains ',', ':' or '\\'", .0.display())]
    UnsafeMountPath(PathBuf),
    #[error("image has {0} layers; overlayfs stacks at most {MAX_LOWERS}")]
    TooManyLayers(usize),
    #[error("mounting overlay at {}: {source} (options: {options})", target.display())]
    Mount {
        target: PathBuf,
        options: String,
        #[source]
        source: io::Error,
    },
    #[error(transparent)]
    Unpack(#[from] crate::UnpackError),
}

fn io_err<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> SnapshotError + 'a {
    move |source| SnapshotError::Io {
        op,
        path: path.to_path_buf(),
        source,
    }
}

/// The hex of a "sha256:<64 hex>" chain id.
fn chain_hex(chain_id: &str) -> Option<&str> {
    let hex = chain_id.strip_prefix("sha256:")?;
    (hex.len() == 64
        && hex
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)))
    .then_some(hex)
}

fn valid_key(key: &str) -> bool {
    !key.is_empty()
        && key.len() <= 128
        && !key.starts_with('.')
        && key
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
}

fn mkdir_0700(path: &Path) -> Result<(), SnapshotError> {
    match DirBuilder::new().mode(0o700).create(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists && path.is_dir() => Ok(()),
        Err(e) => Err(io_err("creating", path)(e)),
    }
}

fn fsync_dir(path: &Path) -> Result<(), SnapshotError> {
    let f = fs::File::open(path).map_err(io_err("opening", path))?;
    f.sync_all().map_err(io_err("fsyncing", path))
}

/// A name for a temp dir that no other call in this process picks.
fn unique(prefix: &str) -> String {
    static N: AtomicU64 = AtomicU64::new(0);
    format!(
        "{TMP_PREFIX}{prefix}-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// Unpacked layers under the image root and containers' read-write layers
/// under the container root: one dir, or two (kubelet's split image
/// filesystem, KEP-4191: layers on one disk, what containers write on
/// another). Holds no state beyond the roots: clones and concurrent use are
/// fine.
#[derive(Debug, Clone)]
pub struct Snapshotter {
    image_root: PathBuf,
    container_root: PathBuf,
}

/// A temp dir to unpack one layer into; see [`PendingLayer::commit`].
/// Dropped without commit, it is removed.
#[derive(Debug)]
pub struct PendingLayer {
    tmp: tempfile::TempDir,
    fs: PathBuf,
    layers: PathBuf,
}

/// A container's read-write snapshot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RwSnapshot {
    pub key: String,
    pub upper: PathBuf,
    pub work: PathBuf,
    /// Read-only layer dirs, top-most first (overlayfs' lowerdir order).
    pub lowers: Vec<PathBuf>,
}

impl Snapshotter {
    /// Opens (creating, 0700) the snapshot root and removes what a crash left
    /// half-done (`tmp-*`). Only one process may use a root at a time.
    pub fn new(root: &Path) -> Result<Snapshotter, SnapshotError> {
        Snapshotter::split(root, root)
    }

    /// [`Snapshotter::new`] with layers under `image_root` and read-write
    /// layers under `container_root` (each with its own `tmp-*`, so every
    /// rename stays on one filesystem).
    pub fn split(image_root: &Path, container_root: &Path) -> Result<Snapshotter, SnapshotError> {
        let s = Snapshotter {
            image_root: image_root.to_path_buf(),
            container_root: container_root.to_path_buf(),
        };
        for root in s.roots() {
            if !root.is_dir() {
                DirBuilder::new()
                    .recursive(true)
                    .mode(0o700)
                    .create(root)
                    .map_err(io_err("creating the snapshot root", root))?;
            }
            remove_leftovers(root)?;
        }
        mkdir_0700(&s.image_root.join(LAYERS))?;
        mkdir_0700(&s.container_root.join(RW))?;
        Ok(s)
    }

    /// The distinct roots: one, or two when split.
    fn roots(&self) -> Vec<&Path> {
        let mut roots = vec![self.image_root.as_path()];
        if self.container_root != self.image_root {
            roots.push(&self.container_root);
        }
        roots
    }

    /// Where layers live (the image filesystem).
    pub fn image_root(&self) -> &Path {
        &self.image_root
    }

    /// Where containers' read-write layers live (the container filesystem).
    pub fn container_root(&self) -> &Path {
        &self.container_root
    }

    /// The upper dir of the read-write snapshot `key`: what the container
    /// wrote.
    pub fn upper_dir(&self, key: &str) -> PathBuf {
        self.container_root.join(RW).join(key).join("upper")
    }

    /// `root/layers/<hex>/fs`. For a string that is not a valid chain id
    /// this is a path that is never created (never one outside the root).
    pub fn layer_dir(&self, chain_id: &str) -> PathBuf {
        let name = chain_hex(chain_id).unwrap_or(INVALID);
        self.image_root.join(LAYERS).join(name).join("fs")
    }

    pub fn has_layer(&self, chain_id: &str) -> bool {
        chain_hex(chain_id).is_some() && self.layer_dir(chain_id).is_dir()
    }

    /// A fresh temp dir under the root to unpack one layer into.
    pub fn begin_layer(&self) -> Result<PendingLayer, SnapshotError> {
        let tmp = tempfile::Builder::new()
            .prefix(&format!("{TMP_PREFIX}layer-"))
            .tempdir_in(&self.image_root)
            .map_err(io_err("creating a temp dir in", &self.image_root))?;
        let fs = tmp.path().join("fs");
        DirBuilder::new()
            .mode(0o755)
            .create(&fs)
            .map_err(io_err("creating", &fs))?;
        // Not subject to the umask: this is the layer's `/` unless the tar says otherwise.
        fs::set_permissions(&fs, fs::Permissions::from_mode(0o755))
            .map_err(io_err("chmod", &fs))?;
        Ok(PendingLayer {
            tmp,
            fs,
            layers: self.image_root.join(LAYERS),
        })
    }

    /// Removes a committed layer; a missing one is fine. Refuses while an
    /// overlay in this mount namespace still uses it.
    pub fn remove_layer(&self, chain_id: &str) -> Result<(), SnapshotError> {
        let hex = chain_hex(chain_id)
            .ok_or_else(|| SnapshotError::InvalidChainId(chain_id.to_string()))?;
        let dir = self.image_root.join(LAYERS).join(hex);
        if fs::symlink_metadata(&dir).is_err() {
            return Ok(());
        }
        if let Some(mp) = mount_using(&[&dir.join("fs")])? {
            return Err(SnapshotError::StillMounted {
                what: format!("layer {chain_id}"),
                mount_point: mp,
            });
        }
        self.discard(&dir)
    }

    /// Every committed chain id, sorted.
    pub fn layers(&self) -> Result<Vec<String>, SnapshotError> {
        let dir = self.image_root.join(LAYERS);
        let mut out = Vec::new();
        for ent in fs::read_dir(&dir).map_err(io_err("listing", &dir))? {
            let ent = ent.map_err(io_err("listing", &dir))?;
            let id = format!("sha256:{}", ent.file_name().to_string_lossy());
            if chain_hex(&id).is_some() && ent.path().join("fs").is_dir() {
                out.push(id);
            }
        }
        out.sort();
        Ok(out)
    }

    /// Creates `root/rw/<key>/{upper,work}` over the layers of `chain`
    /// (bottom layer first). The upper dir takes the owner and mode of the
    /// top layer's root, so the container's `/` looks like the image's.
    /// An image without layers gets an empty lower dir.
    pub fn prepare_rw(&self, key: &str, chain: &[String]) -> Result<RwSnapshot, SnapshotError> {
        if !valid_key(key) {
            return Err(SnapshotError::InvalidKey(key.to_string()));
        }
        if chain.len() > MAX_LOWERS {
            return Err(SnapshotError::TooManyLayers(chain.len()));
        }
        for id in chain {
            if chain_hex(id).is_none() {
                return Err(SnapshotError::InvalidChainId(id.clone()));
            }
            if !self.has_layer(id) {
                return Err(SnapshotError::LayerNotFound(id.clone()));
            }
        }
        let dst = self.container_root.join(RW).join(key);
        if fs::symlink_metadata(&dst).is_ok() {
            return Err(SnapshotError::RwExists(key.to_string()));
        }
        let tmp = tempfile::Builder::new()
            .prefix(&format!("{TMP_PREFIX}rw-"))
            .tempdir_in(&self.container_root)
            .map_err(io_err("creating a temp dir in", &self.container_root))?;
        let upper = tmp.path().join("upper");
        let work = tmp.path().join("work");
        for d in [&upper, &work] {
            DirBuilder::new()
                .mode(0o700)
                .create(d)
                .map_err(io_err("creating", d))?;
        }
        let (mode, uid, gid) = match chain.last() {
            Some(top) => {
                let p = self.layer_dir(top);
                let md = fs::metadata(&p).map_err(io_err("stat", &p))?;
                (md.mode() & 0o7777, md.uid(), md.gid())
            }
            None => {
                let lower = tmp.path().join("lower");
                DirBuilder::new()
                    .mode(0o755)
                    .create(&lower)
                    .map_err(io_err("creating", &lower))?;
                fs::set_permissions(&lower, fs::Permissions::from_mode(0o755))
                    .map_err(io_err("chmod", &lower))?;
                (0o755, 0, 0)
            }
        };
        std::os::unix::fs::chown(&upper, Some(uid), Some(gid)).map_err(io_err("chown", &upper))?;
        fs::set_permissions(&upper, fs::Permissions::from_mode(mode))
            .map_err(io_err("chmod", &upper))?;
        fsync_dir(tmp.path())?;
        match renameat2(None, tmp.path(), None, &dst, RenameFlags::RENAME_NOREPLACE) {
            Ok(()) => {
                let _ = tmp.keep();
            }
            Err(Errno::EEXIST) | Err(Errno::ENOTEMPTY) => {
                return Err(SnapshotError::RwExists(key.to_string()));
            }
            Err(e) => return Err(io_err("renaming into place", &dst)(e.into())),
        }
        fsync_dir(&self.container_root.join(RW))?;
        let lowers = if chain.is_empty() {
            vec![dst.join("lower")]
        } else {
            chain.iter().rev().map(|id| self.layer_dir(id)).collect()
        };
        Ok(RwSnapshot {
            key: key.to_string(),
            upper: dst.join("upper"),
            work: dst.join("work"),
            lowers,
        })
    }

    /// Mounts the snapshot's overlay at `target` (an existing dir).
    /// Uses mount(2) when the options fit its one-page limit (about 40
    /// layers under /var/lib/crust), else the new mount API with one
    /// `lowerdir+` per layer (Linux 6.8+).
    pub fn mount_rw(&self, snapshot: &RwSnapshot, target: &Path) -> Result<(), SnapshotError> {
        mount_overlay(
            &snapshot.lowers,
            Some((&snapshot.upper, &snapshot.work)),
            target,
        )
    }

    /// [`Snapshotter::mount_rw`] with other mounts of the snapshot's lower
    /// layers, in the same order: detached mounts (open_tree(2) fds, e.g.
    /// idmapped copies of [`RwSnapshot::lowers`]) that overlayfs takes by
    /// their `/proc/self/fd` path and clones privately, so nothing is left
    /// attached anywhere once this returns (Linux 6.15+ takes detached
    /// layers).
    pub fn mount_rw_with_lowers(
        &self,
        snapshot: &RwSnapshot,
        lowers: &[BorrowedFd<'_>],
        target: &Path,
    ) -> Result<(), SnapshotError> {
        if lowers.len() != snapshot.lowers.len() {
            return Err(SnapshotError::TooManyLayers(lowers.len()));
        }
        let paths: Vec<PathBuf> = lowers
            .iter()
            .map(|fd| PathBuf::from(format!("/proc/self/fd/{}", fd.as_raw_fd())))
            .collect();
        mount_overlay(&paths, Some((&snapshot.upper, &snapshot.work)), target)
    }

    /// The dirs of `chain`'s layers (bottom layer first), topmost first as
    /// overlayfs stacks them; each must be unpacked here.
    pub fn lower_dirs(&self, chain: &[String]) -> Result<Vec<PathBuf>, SnapshotError> {
        if chain.len() > MAX_LOWERS {
            return Err(SnapshotError::TooManyLayers(chain.len()));
        }
        chain
            .iter()
            .rev()
            .map(|id| {
                if chain_hex(id).is_none() {
                    Err(SnapshotError::InvalidChainId(id.clone()))
                } else if !self.has_layer(id) {
                    Err(SnapshotError::LayerNotFound(id.clone()))
                } else {
                    Ok(self.layer_dir(id))
                }
            })
            .collect()
    }

    /// Mounts a read-only, nosuid, nodev view of `lowers` (topmost first:
    /// [`Snapshotter::lower_dirs`], or `/proc/self/fd` paths of detached
    /// copies of them) at `target`, an image volume's filesystem. Nothing
    /// can change the layers through it. overlayfs wants two lowers without
    /// an upper dir, so one layer is stacked on `empty`, an empty dir the
    /// caller owns; no layer at all is an empty read-only tmpfs.
    pub fn mount_view(
        &self,
        lowers: &[PathBuf],
        empty: &Path,
        target: &Path,
    ) -> Result<(), SnapshotError> {
        match lowers {
            [] => mount(
                Some("tmpfs"),
                target,
                Some("tmpfs"),
                MsFlags::MS_RDONLY | MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
                Some("mode=0755,size=4k"),
            )
            .map_err(|e| SnapshotError::Mount {
                target: target.to_path_buf(),
                options: "tmpfs (an image without layers)".into(),
                source: e.into(),
            }),
            [one] => mount_overlay(&[one.clone(), empty.to_path_buf()], None, target),
            many => mount_overlay(many, None, target),
        }
    }

    /// Removes `root/rw/<key>`; a missing one is fine. Refuses while an
    /// overlay in this mount namespace still uses its upper or work dir.
    pub fn remove_rw(&self, key: &str) -> Result<(), SnapshotError> {
        if !valid_key(key) {
            return Err(SnapshotError::InvalidKey(key.to_string()));
        }
        let dir = self.container_root.join(RW).join(key);
        if fs::symlink_metadata(&dir).is_err() {
            return Ok(());
        }
        if let Some(mp) = mount_using(&[&dir.join("upper"), &dir.join("work"), &dir])? {
            return Err(SnapshotError::StillMounted {
                what: format!("read-write snapshot {key:?}"),
                mount_point: mp,
            });
        }
        self.discard(&dir)
    }

    /// Bytes and inodes under the root(s).
    pub fn usage(&self) -> Result<Usage, SnapshotError> {
        let mut total = Usage::default();
        for root in self.roots() {
            let u = dir_usage(root)?;
            total.bytes += u.bytes;
            total.inodes += u.inodes;
        }
        Ok(total)
    }

    /// Bytes and inodes of the unpacked layers.
    pub fn layer_usage(&self) -> Result<Usage, SnapshotError> {
        dir_usage(&self.image_root.join(LAYERS))
    }

    /// Bytes and inodes of every container's read-write layer.
    pub fn rw_usage(&self) -> Result<Usage, SnapshotError> {
        dir_usage(&self.container_root.join(RW))
    }

    /// Renames `dir` to a temp name in its own root (one atomic step: it is
    /// gone for readers and a crash mid-delete leaves only `tmp-*`), then
    /// deletes it.
    fn discard(&self, dir: &Path) -> Result<(), SnapshotError> {
        let root = if dir.starts_with(self.image_root.join(LAYERS)) {
            &self.image_root
        } else {
            &self.container_root
        };
        let tmp = root.join(unique("del"));
        fs::rename(dir, &tmp).map_err(io_err("moving aside for removal", dir))?;
        fs::remove_dir_all(&tmp).map_err(io_err("removing", &tmp))
    }
}

/// Removes what a crash left half-done in `root` (`tmp-*`).
fn remove_leftovers(root: &Path) -> Result<(), SnapshotError> {
    for ent in fs::read_dir(root).map_err(io_err("listing", root))? {
        let ent = ent.map_err(io_err("listing", root))?;
        if !ent
            .file_name()
            .as_bytes()
            .starts_with(TMP_PREFIX.as_bytes())
        {
            continue;
        }
        let p = ent.path();
        let ft = ent.file_type().map_err(io_err("stat", &p))?;
        let r = if ft.is_dir() {
            fs::remove_dir_all(&p)
        } else {
            fs::remove_file(&p)
        };
        r.map_err(io_err("removing leftover", &p))?;
    }
    Ok(())
}

impl PendingLayer {
    /// The directory to unpack into.
    pub fn path(&self) -> &Path {
        &self.fs
    }

    /// Flushes the unpacked tree to disk and renames it into place as
    /// `chain_id`. If that layer exists already (a concurrent pull won), the
    /// temp dir is discarded and this is still a success.
    pub fn commit(self, chain_id: &str) -> Result<(), SnapshotError> {
        let hex = chain_hex(chain_id)
            .ok_or_else(|| SnapshotError::InvalidChainId(chain_id.to_string()))?;
        let src = self.tmp.path();
        // syncfs: one call flushes every file of the unpack, instead of an
        // fsync per file.
        let f = fs::File::open(src).map_err(io_err("opening", src))?;
        nix::unistd::syncfs(f.as_raw_fd())
            .map_err(|e| io_err("syncing the filesystem of", src)(e.into()))?;
        drop(f);
        let dst = self.layers.join(hex);
        match renameat2(None, src, None, &dst, RenameFlags::RENAME_NOREPLACE) {
            Ok(()) => {
                let _ = self.tmp.keep();
            }
            // Someone else committed it first; `self.tmp` drops and is removed.
            Err(Errno::EEXIST) | Err(Errno::ENOTEMPTY) => return Ok(()),
            Err(e) => return Err(io_err("renaming into place", &dst)(e.into())),
        }
        fsync_dir(&self.layers)
    }
}

/// Mounts overlayfs at `target` over `lowers` (top-most first) and the
/// snapshot's upper and work dirs.
/// The writable half of an overlay: `None` makes a read-only one.
type Upper<'a> = Option<(&'a Path, &'a Path)>;

fn mount_overlay(lowers: &[PathBuf], upper: Upper<'_>, target: &Path) -> Result<(), SnapshotError> {
    // Without an upper dir overlayfs wants two lowers at least.
    let min = if upper.is_some() { 1 } else { 2 };
    if lowers.len() < min || lowers.len() > MAX_LOWERS {
        return Err(SnapshotError::TooManyLayers(lowers.len()));
    }
    let all = lowers
        .iter()
        .map(PathBuf::as_path)
        .chain(upper.into_iter().flat_map(|(u, w)| [u, w]));
    for p in all {
        if p.as_os_str()
            .as_bytes()
            .iter()
            .any(|b| matches!(b, b',' | b':' | b'\\' | 0))
        {
            return Err(SnapshotError::UnsafeMountPath(p.to_path_buf()));
        }
    }
    let lower = lowers
        .iter()
        .map(|p| p.to_string_lossy())
        .collect::<Vec<_>>()
        .join(":");
    // index=off: the index ties an upper to one set of lowers and would
    // fail remounts after a layer is re-unpacked; containerd does the same.
    let upper_options = match upper {
        Some((u, w)) => format!(
            ",upperdir={},workdir={},index=off",
            u.display(),
            w.display()
        ),
        None => String::new(),
    };
    let options = format!("lowerdir={lower}{upper_options}");
    // A read-only view (an image volume) also runs no setuid binary and
    // opens no device node of the image's.
    let (flags, attrs) = if upper.is_some() {
        (MsFlags::empty(), 0)
    } else {
        (
            MsFlags::MS_RDONLY | MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
            sys::MOUNT_ATTR_RDONLY | sys::MOUNT_ATTR_NOSUID | sys::MOUNT_ATTR_NODEV,
        )
    };
    let page = nix::unistd::sysconf(nix::unistd::SysconfVar::PAGE_SIZE)
        .ok()
        .flatten()
        .unwrap_or(4096) as usize;
    let merr = |options: String| {
        move |source: io::Error| SnapshotError::Mount {
            target: target.to_path_buf(),
            options,
            source,
        }
    };
    if options.len() < page {
        return mount(
            Some("overlay"),
            target,
            Some("overlay"),
            flags,
            Some(options.as_str()),
        )
        .map_err(|e| merr(options.clone())(e.into()));
    }
    let summary = format!("{} lowerdir+ entries{upper_options}", lowers.len());
    let cs = |p: &Path| CString::new(p.as_os_str().as_bytes()).expect("checked for NUL above");
    let ctx = sys::FsContext::open(c"overlay").map_err(merr(summary.clone()))?;
    let configure = || -> io::Result<()> {
        ctx.set_string(c"source", c"overlay")?;
        for l in lowers {
            ctx.set_string(c"lowerdir+", &cs(l))?;
        }
        if let Some((u, w)) = upper {
            ctx.set_string(c"upperdir", &cs(u))?;
            ctx.set_string(c"workdir", &cs(w))?;
            ctx.set_string(c"index", c"off")?;
        }
        Ok(())
    };
    configure().map_err(|e| {
        let hint = if e.raw_os_error() == Some(libc::EINVAL) {
            " (lowerdir+ needs Linux 6.8 or later)"
        } else {
            ""
        };
        merr(format!("{summary}{hint}"))(e)
    })?;
    ctx.mount_at(&cs(target), attrs).map_err(merr(summary))
}

/// Mountinfo's octal escapes for space, tab, newline and backslash.
fn mountinfo_escape(p: &Path) -> String {
    let mut s = String::new();
    for c in p.to_string_lossy().chars() {
        match c {
            ' ' => s.push_str("\\040"),
            '\t' => s.push_str("\\011"),
            '\n' => s.push_str("\\012"),
            '\\' => s.push_str("\\134"),
            c => s.push(c),
        }
    }
    s
}

/// The mount point of the first mount (in this mount namespace) that sits
/// on or under one of `paths`, or whose options name one of them (an
/// overlay's lowerdir, upperdir or workdir).
fn mount_using(paths: &[&Path]) -> Result<Option<String>, SnapshotError> {
    let mi = Path::new("/proc/self/mountinfo");
    let text = fs::read_to_string(mi).map_err(io_err("reading", mi))?;
    let escaped: Vec<String> = paths.iter().map(|p| mountinfo_escape(p)).collect();
    for line in text.lines() {
        let fields: Vec<&str> = line.split(' ').collect();
        let Some(mp) = fields.get(4) else { continue };
        let sep = fields.iter().position(|f| *f == "-");
        let superopts = sep.and_then(|i| fields.get(i + 3)).copied().unwrap_or("");
        for e in &escaped {
            let under = mp == e
                || mp
                    .strip_prefix(e.as_str())
                    .is_some_and(|r| r.starts_with('/'));
            let named = superopts.split([',', ':', '=']).any(|opt| opt == e);
            if under || named {
                return Ok(Some(mp.to_string()));
            }
        }
    }
    Ok(None)
}
