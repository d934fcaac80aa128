//! Disk usage of a directory tree, `du -x` style, walked fd-relative.
//!
//! A container controls what is in its writable layer, so the walk never
//! builds a path: each directory is opened with openat(O_NOFOLLOW) on its
//! parent's descriptor and its entries are stat'ed with fstatat
//! (AT_SYMLINK_NOFOLLOW), so a tree nested far past PATH_MAX is counted as
//! well as a flat one, and a symlink (to `/` or anywhere) is counted as the
//! link it is, never followed.
//!
//! Descriptors are bounded: only the deepest [`FD_WINDOW`] directories of the
//! current branch (and the top) stay open. A shallower one whose fd was closed
//! and that still has subdirectories to visit is reopened by descending again
//! from the nearest open ancestor, name by name, each step checked against the
//! (dev, ino) it had when it was listed; if the tree changed under the walk,
//! what can no longer be reached is skipped.

use std::collections::HashSet;
use std::ffi::{CStr, CString};
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::path::Path;

use nix::dir::Dir;
use nix::errno::Errno;
use nix::fcntl::{AtFlags, OFlag, openat};
use nix::sys::stat::{FileStat, Mode, fstat, fstatat};

use crate::SnapshotError;
use crate::sys;

/// Directory descriptors kept open along the branch being walked.
const FD_WINDOW: usize = 64;

/// Space and inodes a tree uses.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    /// Allocated bytes (st_blocks * 512), what the filesystem actually spends.
    pub bytes: u64,
    /// Distinct inodes, the root directory included.
    pub inodes: u64,
}

/// (st_dev, st_ino): an inode's identity.
type Id = (u64, u64);

fn id_of(st: &FileStat) -> Id {
    (st.st_dev, st.st_ino)
}

fn is_dir(st: &FileStat) -> bool {
    st.st_mode & libc::S_IFMT == libc::S_IFDIR
}

/// One directory on the branch being walked.
struct Level {
    /// Closed (None) once the level falls out of the fd window.
    fd: Option<OwnedFd>,
    id: Id,
    /// Its name in the level above (empty for the top).
    name: CString,
    /// Subdirectories still to visit, with the identity each was listed with.
    pending: Vec<(CString, Id)>,
}

struct Walk {
    dev: u64,
    usage: Usage,
    /// Hard-linked inodes already counted.
    seen: HashSet<Id>,
}

/// An entry that vanished (or changed kind) between listing and opening.
fn vanished(e: Errno) -> bool {
    matches!(e, Errno::ENOENT | Errno::ENOTDIR | Errno::ELOOP)
}

fn open_dir_at(dir: BorrowedFd<'_>, name: &CStr) -> nix::Result<OwnedFd> {
    openat(
        Some(dir.as_raw_fd()),
        name,
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map(sys::own)
}

/// Opens `name` in `dir` if it is still the directory `id`.
fn open_same_dir(dir: BorrowedFd<'_>, name: &CStr, id: Id) -> nix::Result<Option<OwnedFd>> {
    let fd = match open_dir_at(dir, name) {
        Ok(fd) => fd,
        Err(e) if vanished(e) => return Ok(None),
        Err(e) => return Err(e),
    };
    Ok((id_of(&fstat(fd.as_raw_fd())?) == id).then_some(fd))
}

impl Walk {
    fn count(&mut self, st: &FileStat) {
        if st.st_nlink > 1 && !is_dir(st) && !self.seen.insert(id_of(st)) {
            return;
        }
        self.usage.bytes += st.st_blocks as u64 * 512;
        self.usage.inodes += 1;
    }

    /// Counts the entries of `dir` and returns its subdirectories (on the
    /// walk's filesystem) to visit.
    fn list(&mut self, dir: BorrowedFd<'_>) -> nix::Result<Vec<(CString, Id)>> {
        // A second descriptor for the stream: `dir` stays usable for *at().
        let stream = match Dir::openat(
            Some(dir.as_raw_fd()),
            c".",
            OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
            Mode::empty(),
        ) {
            Ok(stream) => stream,
            Err(e) if vanished(e) => return Ok(Vec::new()),
            Err(e) => return Err(e),
        };
        let mut subdirs = Vec::new();
        for entry in stream {
            let entry = match entry {
                Ok(entry) => entry,
                // The directory was removed while being read.
                Err(e) if vanished(e) => break,
                Err(e) => return Err(e),
            };
            let name = entry.file_name();
            if matches!(name.to_bytes(), b"." | b"..") {
                continue;
            }
            let st = match fstatat(Some(dir.as_raw_fd()), name, AtFlags::AT_SYMLINK_NOFOLLOW) {
                Ok(st) => st,
                Err(e) if vanished(e) => continue,
                Err(e) => return Err(e),
            };
            // Another filesystem mounted here is not ours to count.
            if st.st_dev != self.dev {
                continue;
            }
            self.count(&st);
            if is_dir(&st) {
                subdirs.push((name.to_owned(), id_of(&st)));
            }
        }
        Ok(subdirs)
    }
}

/// Gives `levels[at]` an open descriptor again, descending from the nearest
/// ancestor that still has one. False if the tree changed so that it cannot
/// be reached as it was listed.
fn reopen(levels: &mut [Level], at: usize) -> nix::Result<bool> {
    let open = (0..at)
        .rev()
        .find(|i| levels[*i].fd.is_some())
        .expect("the top level's fd is never closed");
    let mut fd: Option<OwnedFd> = None;
    for j in open + 1..=at {
        let parent = match &fd {
            Some(fd) => fd.as_fd(),
            None => levels[open].fd.as_ref().expect("checked above").as_fd(),
        };
        match open_same_dir(parent, &levels[j].name, levels[j].id)? {
            Some(next) => fd = Some(next),
            None => return Ok(false),
        }
    }
    levels[at].fd = fd;
    Ok(true)
}

/// Walks `path` without following symlinks and without crossing into other
/// filesystems (a mount under it is not ours to count), counting each
/// hardlinked inode once. Entries that vanish during the walk are skipped:
/// usage is a snapshot of a tree that may be changing. No depth limit and no
/// path is ever built, so trees deeper than PATH_MAX are counted too.
pub fn dir_usage(path: &Path) -> Result<Usage, SnapshotError> {
    let io_err = |e: io::Error| SnapshotError::Io {
        op: "measuring disk usage of",
        path: path.to_path_buf(),
        source: e,
    };
    let top = std::fs::symlink_metadata(path).map_err(io_err)?;
    if !top.is_dir() {
        use std::os::unix::fs::MetadataExt;
        return Ok(Usage {
            bytes: top.blocks() * 512,
            inodes: 1,
        });
    }
    let fd = nix::fcntl::open(
        path,
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map(sys::own)
    .map_err(|e| io_err(e.into()))?;
    let st = fstat(fd.as_raw_fd()).map_err(|e| io_err(e.into()))?;
    let mut walk = Walk {
        dev: st.st_dev,
        usage: Usage::default(),
        seen: HashSet::new(),
    };
    walk.count(&st);
    walk_from(&mut walk, fd, id_of(&st)).map_err(|e| io_err(e.into()))?;
    Ok(walk.usage)
}

fn walk_from(walk: &mut Walk, top: OwnedFd, id: Id) -> nix::Result<()> {
    let pending = walk.list(top.as_fd())?;
    let mut levels = vec![Level {
        fd: Some(top),
        id,
        name: CString::default(),
        pending,
    }];
    while let Some(depth) = levels.len().checked_sub(1) {
        let Some((name, id)) = levels[depth].pending.pop() else {
            levels.pop();
            continue;
        };
        if levels[depth].fd.is_none() && !reopen(&mut levels, depth)? {
            // Moved or removed under us: what was below it is gone from here.
            levels[depth].pending.clear();
            continue;
        }
        let parent = levels[depth].fd.as_ref().expect("opened above").as_fd();
        let Some(child) = open_same_dir(parent, &name, id)? else {
            continue;
        };
        let pending = walk.list(child.as_fd())?;
        if pending.is_empty() {
            continue;
        }
        levels.push(Level {
            fd: Some(child),
            id,
            name,
            pending,
        });
        // Keep the top and the deepest FD_WINDOW levels open.
        if levels.len() > FD_WINDOW + 1 {
            let i = levels.len() - 1 - FD_WINDOW;
            if i > 0 {
                levels[i].fd = None;
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use nix::sys::stat::mkdirat;

    /// Builds `depth` nested directories of 255-byte names under `top`
    /// with *at() calls (no path could name the bottom), with a file of
    /// `file_len` bytes and a symlink to / at the bottom. Returns how many
    /// directories were made.
    fn deep_tree(top: &Path, depth: usize, file_len: usize) -> usize {
        let name = CString::new(vec![b'd'; 255]).unwrap();
        let mut fd = nix::fcntl::open(top, OFlag::O_RDONLY | OFlag::O_DIRECTORY, Mode::empty())
            .map(sys::own)
            .unwrap();
        for _ in 0..depth {
            mkdirat(
                Some(fd.as_raw_fd()),
                name.as_c_str(),
                Mode::from_bits_truncate(0o755),
            )
            .unwrap();
            fd = open_dir_at(fd.as_fd(), &name).unwrap();
        }
        let file = openat(
            Some(fd.as_raw_fd()),
            c"data",
            OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_CLOEXEC,
            Mode::from_bits_truncate(0o644),
        )
        .map(sys::own)
        .unwrap();
        let mut file = std::fs::File::from(file);
        io::Write::write_all(&mut file, &vec![7u8; file_len]).unwrap();
        file.sync_all().unwrap();
        nix::unistd::symlinkat("/", Some(fd.as_raw_fd()), c"root").unwrap();
        depth
    }

    #[test]
    fn counts_blocks_and_inodes_once_per_hardlink() {
        let t = tempfile::tempdir().unwrap();
        std::fs::create_dir(t.path().join("d")).unwrap();
        std::fs::write(t.path().join("d/f"), vec![1u8; 10_000]).unwrap();
        std::fs::hard_link(t.path().join("d/f"), t.path().join("g")).unwrap();
        std::os::unix::fs::symlink("/", t.path().join("root")).unwrap();
        let u = dir_usage(t.path()).unwrap();
        // top, d, f (once), root
        assert_eq!(u.inodes, 4);
        assert!(u.bytes >= 10_000 && u.bytes < 200_000, "{u:?}");
        let file = dir_usage(&t.path().join("g")).unwrap();
        assert_eq!(file.inodes, 1);
    }

    #[test]
    fn tree_deeper_than_path_max_is_counted() {
        let t = tempfile::tempdir().unwrap();
        // 300 levels of 255-byte names: a path of ~77,000 bytes, far past
        // PATH_MAX (4096), and deeper than the fd window.
        let dirs = deep_tree(t.path(), 300, 1 << 20);
        let u = dir_usage(t.path()).unwrap();
        // top + dirs + data + the symlink; / was not followed (it would add
        // the whole host).
        assert_eq!(u.inodes, 1 + dirs as u64 + 2, "{u:?}");
        assert!(u.bytes >= 1 << 20, "the bottom file is counted: {u:?}");
        assert!(u.bytes < 64 << 20, "/ must not be followed: {u:?}");
    }

    #[test]
    fn branching_deep_tree_reopens_closed_levels() {
        let t = tempfile::tempdir().unwrap();
        // Two deep branches side by side at every level: the walk has to come
        // back to levels whose fd fell out of the window.
        let name = CString::new(vec![b'x'; 200]).unwrap();
        let mut fd = nix::fcntl::open(
            t.path(),
            OFlag::O_RDONLY | OFlag::O_DIRECTORY,
            Mode::empty(),
        )
        .map(sys::own)
        .unwrap();
        let depth = FD_WINDOW * 3;
        for _ in 0..depth {
            mkdirat(
                Some(fd.as_raw_fd()),
                c"side",
                Mode::from_bits_truncate(0o755),
            )
            .unwrap();
            mkdirat(
                Some(fd.as_raw_fd()),
                name.as_c_str(),
                Mode::from_bits_truncate(0o755),
            )
            .unwrap();
            let side = open_dir_at(fd.as_fd(), c"side").unwrap();
            mkdirat(
                Some(side.as_raw_fd()),
                c"leaf",
                Mode::from_bits_truncate(0o755),
            )
            .unwrap();
            fd = open_dir_at(fd.as_fd(), &name).unwrap();
        }
        let u = dir_usage(t.path()).unwrap();
        // top + per level: side, side/leaf, the next level.
        assert_eq!(u.inodes, 1 + 3 * depth as u64, "{u:?}");
    }

    #[test]
    fn vanished_top_is_an_error_and_a_missing_subtree_is_not() {
        let t = tempfile::tempdir().unwrap();
        assert!(dir_usage(&t.path().join("nope")).is_err());
        let mut walk = Walk {
            dev: 0,
            usage: Usage::default(),
            seen: HashSet::new(),
        };
        let fd = nix::fcntl::open(
            t.path(),
            OFlag::O_RDONLY | OFlag::O_DIRECTORY,
            Mode::empty(),
        )
        .map(sys::own)
        .unwrap();
        assert!(
            open_same_dir(fd.as_fd(), c"gone", (0, 0))
                .unwrap()
                .is_none()
        );
        assert!(walk.list(fd.as_fd()).unwrap().is_empty());
    }
}
