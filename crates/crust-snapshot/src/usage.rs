//! Disk usage of a directory tree, `du -x` style.

use std::collections::HashSet;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use crate::SnapshotError;

/// Space and inodes a tree uses.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    /// Allocated bytes (st_blocks * 512), what the filesystem actually spends.
    pub bytes: u64,
    /// Distinct inodes, the root directory included.
    pub inodes: u64,
}

/// Walks `path` without following symlinks and without crossing into other
/// filesystems (a mount under it is not ours to count), counting each
/// hardlinked inode once. Entries that vanish during the walk are skipped:
/// usage is a snapshot of a tree that may be changing.
pub fn dir_usage(path: &Path) -> Result<Usage, SnapshotError> {
    let io_err = |p: &Path, e: io::Error| SnapshotError::Io {
        op: "measuring disk usage of",
        path: p.to_path_buf(),
        source: e,
    };
    let top = std::fs::symlink_metadata(path).map_err(|e| io_err(path, e))?;
    let dev = top.dev();
    let mut usage = Usage::default();
    let mut seen: HashSet<(u64, u64)> = HashSet::new();
    let mut count = |md: &std::fs::Metadata, usage: &mut Usage| {
        if md.nlink() > 1 && !md.is_dir() && !seen.insert((md.dev(), md.ino())) {
            return;
        }
        usage.bytes += md.blocks() * 512;
        usage.inodes += 1;
    };
    count(&top, &mut usage);
    if !top.is_dir() {
        return Ok(usage);
    }
    let mut stack: Vec<PathBuf> = vec![path.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let rd = match std::fs::read_dir(&dir) {
            Ok(rd) => rd,
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(io_err(&dir, e)),
        };
        for ent in rd {
            let ent = match ent {
                Ok(ent) => ent,
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(io_err(&dir, e)),
            };
            let p = ent.path();
            let md = match std::fs::symlink_metadata(&p) {
                Ok(md) => md,
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(io_err(&p, e)),
            };
            if md.dev() != dev {
                continue;
            }
            count(&md, &mut usage);
            if md.is_dir() {
                stack.push(p);
            }
        }
    }
    Ok(usage)
}
