//! Reading small files from an image rootfs without trusting its symlinks.

use std::fs::File;
use std::io::Read;
use std::os::fd::{FromRawFd, OwnedFd};
use std::path::Path;

use nix::errno::Errno;
use nix::fcntl::{OFlag, OpenHow, ResolveFlag, open, openat2};
use nix::sys::stat::Mode;

use crate::SpecError;

/// Reads `path` (e.g. `etc/passwd` or `/etc/passwd`) inside `rootfs` with
/// openat2(RESOLVE_IN_ROOT): `..` and absolute symlinks resolve against
/// `rootfs`, never the host. Refuses non-regular files and files over
/// `limit` bytes. A missing file is `Ok(None)`.
pub fn read_in_root(rootfs: &Path, path: &str, limit: u64) -> Result<Option<String>, SpecError> {
    let io = |what: &str, e: Errno| SpecError::Io {
        what: what.to_string(),
        path: rootfs.join(path.trim_start_matches('/')),
        source: std::io::Error::from(e),
    };
    let root_fd = open(
        rootfs,
        OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| io("opening rootfs", e))?;
    // SAFETY: open just returned this fd and nothing else owns it.
    let root = unsafe { OwnedFd::from_raw_fd(root_fd) };

    // O_NONBLOCK: a FIFO planted by the image must not hang crustd.
    let how = OpenHow::new()
        .flags(OFlag::O_RDONLY | OFlag::O_CLOEXEC | OFlag::O_NOCTTY | OFlag::O_NONBLOCK)
        .resolve(ResolveFlag::RESOLVE_IN_ROOT | ResolveFlag::RESOLVE_NO_MAGICLINKS);
    let fd = match openat2(std::os::fd::AsRawFd::as_raw_fd(&root), path, how) {
        Ok(fd) => fd,
        Err(Errno::ENOENT) | Err(Errno::ENOTDIR) => return Ok(None),
        Err(e) => return Err(io("opening", e)),
    };
    // SAFETY: openat2 just returned this fd and nothing else owns it.
    let file = File::from(unsafe { OwnedFd::from_raw_fd(fd) });
    let md = file.metadata().map_err(|source| SpecError::Io {
        what: "stat".into(),
        path: rootfs.join(path.trim_start_matches('/')),
        source,
    })?;
    if !md.is_file() {
        return Err(SpecError::invalid(
            "image file",
            path,
            "is not a regular file",
        ));
    }
    if md.len() > limit {
        return Err(SpecError::TooLarge {
            path: path.to_string(),
            size: md.len(),
            limit,
        });
    }
    let mut buf = Vec::with_capacity(md.len() as usize);
    // The file may grow after fstat; never read past the limit.
    file.take(limit + 1)
        .read_to_end(&mut buf)
        .map_err(|source| SpecError::Io {
            what: "reading".into(),
            path: rootfs.join(path.trim_start_matches('/')),
            source,
        })?;
    if buf.len() as u64 > limit {
        return Err(SpecError::TooLarge {
            path: path.to_string(),
            size: buf.len() as u64,
            limit,
        });
    }
    Ok(Some(String::from_utf8_lossy(&buf).into_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    fn rootfs() -> tempfile::TempDir {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(d.path().join("etc")).unwrap();
        std::fs::write(d.path().join("etc/passwd"), "app:x:1000:1000::/:/bin/sh\n").unwrap();
        d
    }

    #[test]
    fn reads_and_misses() {
        let d = rootfs();
        let got = read_in_root(d.path(), "etc/passwd", 4096).unwrap().unwrap();
        assert!(got.starts_with("app:x:1000"));
        assert_eq!(
            read_in_root(d.path(), "/etc/passwd", 4096)
                .unwrap()
                .unwrap(),
            got
        );
        assert_eq!(read_in_root(d.path(), "etc/group", 4096).unwrap(), None);
        assert_eq!(read_in_root(d.path(), "etc/passwd/x", 4096).unwrap(), None);
    }

    #[test]
    fn symlinks_resolve_inside_the_root() {
        let d = rootfs();
        let etc = d.path().join("etc");
        // Absolute and climbing symlinks both land inside the rootfs.
        std::fs::create_dir_all(d.path().join("alt")).unwrap();
        std::fs::write(d.path().join("alt/group"), "inside:x:1:\n").unwrap();
        symlink("/etc/passwd", etc.join("abs")).unwrap();
        symlink("../../../../../../alt/group", etc.join("group")).unwrap();
        symlink("/etc/shadow-not-in-root", etc.join("dangling")).unwrap();
        let abs = read_in_root(d.path(), "etc/abs", 4096).unwrap().unwrap();
        assert!(abs.starts_with("app:x:1000"), "{abs}");
        assert_eq!(
            read_in_root(d.path(), "etc/group", 4096).unwrap().unwrap(),
            "inside:x:1:\n"
        );
        assert_eq!(read_in_root(d.path(), "etc/dangling", 4096).unwrap(), None);
        assert_eq!(
            read_in_root(d.path(), "../../../../etc/hostname-nope", 4096).unwrap(),
            None
        );
        // A directory symlink to the host's /etc still stays inside.
        symlink("/etc", d.path().join("hostetc")).unwrap();
        let via = read_in_root(d.path(), "hostetc/passwd", 4096)
            .unwrap()
            .unwrap();
        assert!(via.starts_with("app:x:1000"), "{via}");
    }

    #[test]
    fn limits_and_file_types() {
        let d = rootfs();
        let e = read_in_root(d.path(), "etc/passwd", 10).unwrap_err();
        assert!(matches!(e, SpecError::TooLarge { limit: 10, .. }), "{e}");
        assert!(read_in_root(d.path(), "etc", 4096).is_err());
        nix::unistd::mkfifo(&d.path().join("etc/fifo"), Mode::from_bits_truncate(0o644)).unwrap();
        assert!(read_in_root(d.path(), "etc/fifo", 4096).is_err());
        assert!(read_in_root(Path::new("/nonexistent-rootfs"), "etc/passwd", 10).is_err());
    }
}
