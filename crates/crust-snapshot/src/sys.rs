//! The few syscalls nix 0.29 lacks or hands back as raw fds, each in a tiny
//! wrapper so the `unsafe` stays here.

use std::ffi::{CStr, CString};
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};

/// Takes ownership of a descriptor a successful open-like call just returned.
pub(crate) fn own(fd: RawFd) -> OwnedFd {
    debug_assert!(fd >= 0);
    // SAFETY: callers pass only a descriptor that a successful syscall has just
    // returned to us; nothing else holds it, so it is ours to close.
    unsafe { OwnedFd::from_raw_fd(fd) }
}

/// fsetxattr(2): sets an xattr on an open file or directory.
pub(crate) fn fsetxattr(fd: BorrowedFd<'_>, name: &CStr, value: &[u8]) -> io::Result<()> {
    // SAFETY: `name` is NUL-terminated, `value` is a valid slice of the given
    // length, and `fd` is a live descriptor borrowed for the call.
    let rc = unsafe {
        libc::fsetxattr(
            fd.as_raw_fd(),
            name.as_ptr(),
            value.as_ptr().cast(),
            value.len(),
            0,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// setxattr(2) on a path, following it. Used only on `/proc/self/fd/N` of an
/// O_PATH descriptor: the magic link lands on exactly that inode (a symlink or
/// device node stays itself), which is how one sets xattrs on things that
/// cannot be opened for I/O.
pub(crate) fn setxattr_path(path: &CStr, name: &CStr, value: &[u8]) -> io::Result<()> {
    // SAFETY: both strings are NUL-terminated and `value` is a valid slice.
    let rc = unsafe {
        libc::setxattr(
            path.as_ptr(),
            name.as_ptr(),
            value.as_ptr().cast(),
            value.len(),
            0,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// lgetxattr(2): `Ok(None)` when the attribute is absent.
#[cfg(test)]
pub(crate) fn lgetxattr(path: &std::path::Path, name: &str) -> io::Result<Option<Vec<u8>>> {
    use std::os::unix::ffi::OsStrExt;
    let p = CString::new(path.as_os_str().as_bytes())?;
    let n = CString::new(name)?;
    let mut buf = vec![0u8; 64 * 1024];
    // SAFETY: both strings are NUL-terminated; `buf` is writable for its length.
    let rc = unsafe { libc::lgetxattr(p.as_ptr(), n.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
    if rc < 0 {
        let e = io::Error::last_os_error();
        return if e.raw_os_error() == Some(libc::ENODATA) {
            Ok(None)
        } else {
            Err(e)
        };
    }
    buf.truncate(rc as usize);
    Ok(Some(buf))
}

// Kernel ABI of the new mount API (linux/mount.h); libc does not export them.
const FSOPEN_CLOEXEC: libc::c_uint = 0x1;
const FSCONFIG_SET_STRING: libc::c_uint = 1;
const FSCONFIG_CMD_CREATE: libc::c_uint = 6;
const FSMOUNT_CLOEXEC: libc::c_uint = 0x1;
const MOVE_MOUNT_F_EMPTY_PATH: libc::c_uint = 0x4;
pub(crate) const MOUNT_ATTR_RDONLY: libc::c_uint = 0x1;
pub(crate) const MOUNT_ATTR_NOSUID: libc::c_uint = 0x2;
pub(crate) const MOUNT_ATTR_NODEV: libc::c_uint = 0x4;

fn check(rc: libc::c_long) -> io::Result<libc::c_long> {
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(rc)
    }
}

/// A filesystem context from fsopen(2), configured key by key. Used for
/// overlay mounts whose options do not fit mount(2)'s one-page limit: each
/// `lowerdir+` is its own fsconfig call (Linux 6.8+).
pub(crate) struct FsContext(OwnedFd);

impl FsContext {
    pub(crate) fn open(fstype: &CStr) -> io::Result<FsContext> {
        // SAFETY: `fstype` is NUL-terminated; the call returns a new fd or -1.
        let rc =
            check(unsafe { libc::syscall(libc::SYS_fsopen, fstype.as_ptr(), FSOPEN_CLOEXEC) })?;
        Ok(FsContext(own(rc as RawFd)))
    }

    pub(crate) fn set_string(&self, key: &CStr, value: &CStr) -> io::Result<()> {
        // SAFETY: the context fd is live, key and value are NUL-terminated, aux is 0.
        check(unsafe {
            libc::syscall(
                libc::SYS_fsconfig,
                self.0.as_raw_fd(),
                FSCONFIG_SET_STRING,
                key.as_ptr(),
                value.as_ptr(),
                0,
            )
        })?;
        Ok(())
    }

    /// Creates the superblock, makes a detached mount of it with the
    /// `MOUNT_ATTR_*` bits in `attrs` and attaches that at `target`.
    pub(crate) fn mount_at(self, target: &CStr, attrs: libc::c_uint) -> io::Result<()> {
        // SAFETY: the context fd is live; null key/value with CMD_CREATE is the documented form.
        check(unsafe {
            libc::syscall(
                libc::SYS_fsconfig,
                self.0.as_raw_fd(),
                FSCONFIG_CMD_CREATE,
                std::ptr::null::<libc::c_char>(),
                std::ptr::null::<libc::c_void>(),
                0,
            )
        })?;
        // SAFETY: the context fd is live; flags and attributes are plain integers.
        let mfd = check(unsafe {
            libc::syscall(
                libc::SYS_fsmount,
                self.0.as_raw_fd(),
                FSMOUNT_CLOEXEC,
                attrs,
            )
        })?;
        let mfd = own(mfd as RawFd);
        let empty = c"";
        // SAFETY: `mfd` is a live detached mount, `empty` and `target` are NUL-terminated.
        check(unsafe {
            libc::syscall(
                libc::SYS_move_mount,
                mfd.as_raw_fd(),
                empty.as_ptr(),
                libc::AT_FDCWD,
                target.as_ptr(),
                MOVE_MOUNT_F_EMPTY_PATH,
            )
        })?;
        Ok(())
    }
}

/// NUL-terminated `/proc/self/fd/N` for a descriptor.
pub(crate) fn proc_fd_path(fd: BorrowedFd<'_>) -> CString {
    CString::new(format!("/proc/self/fd/{}", fd.as_raw_fd())).expect("no NUL in a number")
}
