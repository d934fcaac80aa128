//! The pod's shared namespaces, created and pinned by crust itself (no
//! pause container): a thread unshares net, ipc and uts, brings the
//! loopback up, sets the hostname, and bind-mounts its namespace files
//! under the pod's state dir, which keeps them alive after it exits.

use std::path::{Path, PathBuf};

use nix::mount::{MntFlags, MsFlags, mount, umount2};
use nix::sched::{CloneFlags, unshare};

#[derive(Debug, thiserror::Error)]
pub enum NsError {
    #[error("cannot create pod namespaces: {0}")]
    Create(String),
    #[error("cannot unpin namespace {path}: {source}")]
    Unpin { path: PathBuf, source: nix::Error },
}

/// Which namespaces a pod gets of its own (false: the host's).
#[derive(Debug, Clone, Copy)]
pub struct NamespaceSet {
    pub net: bool,
    pub ipc: bool,
    pub uts: bool,
}

/// Paths of the pinned namespace files (None: shares the host's).
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize, PartialEq, Eq)]
pub struct PinnedNamespaces {
    pub net: Option<PathBuf>,
    pub ipc: Option<PathBuf>,
    pub uts: Option<PathBuf>,
}

impl PinnedNamespaces {
    fn all(&self) -> impl Iterator<Item = &PathBuf> {
        [&self.net, &self.ipc, &self.uts].into_iter().flatten()
    }
}

/// Creates and pins the namespaces `wanted` asks for in `dir`.
pub fn create(
    dir: &Path,
    wanted: NamespaceSet,
    hostname: &str,
) -> Result<PinnedNamespaces, NsError> {
    let mut flags = CloneFlags::empty();
    let mut pinned = PinnedNamespaces::default();
    let mut targets = Vec::new();
    for (on, flag, name) in [
        (wanted.net, CloneFlags::CLONE_NEWNET, "net"),
        (wanted.ipc, CloneFlags::CLONE_NEWIPC, "ipc"),
        (wanted.uts, CloneFlags::CLONE_NEWUTS, "uts"),
    ] {
        if on {
            flags |= flag;
            let path = dir.join(name);
            targets.push((name, path.clone()));
            match name {
                "net" => pinned.net = Some(path),
                "ipc" => pinned.ipc = Some(path),
                _ => pinned.uts = Some(path),
            }
        }
    }
    if flags.is_empty() {
        return Ok(pinned);
    }
    std::fs::create_dir_all(dir).map_err(|e| NsError::Create(format!("{}: {e}", dir.display())))?;
    let hostname = hostname.to_string();
    let set_hostname = wanted.uts && !hostname.is_empty();
    let bring_lo_up = wanted.net;
    // Namespaces belong to a thread: a short-lived one enters them, so
    // crustd's other threads stay in the host's.
    let result = std::thread::spawn(move || -> Result<(), String> {
        unshare(flags).map_err(|e| format!("unshare: {e}"))?;
        if set_hostname {
            nix::unistd::sethostname(&hostname)
                .map_err(|e| format!("sethostname {hostname:?}: {e}"))?;
        }
        if bring_lo_up {
            loopback_up().map_err(|e| format!("bringing lo up: {e}"))?;
        }
        for (name, path) in &targets {
            std::fs::File::create(path).map_err(|e| format!("{}: {e}", path.display()))?;
            let source = format!("/proc/thread-self/ns/{name}");
            mount(
                Some(source.as_str()),
                path,
                None::<&str>,
                MsFlags::MS_BIND,
                None::<&str>,
            )
            .map_err(|e| format!("pinning {name} namespace at {}: {e}", path.display()))?;
        }
        Ok(())
    })
    .join()
    .map_err(|_| NsError::Create("namespace thread panicked".into()))?;
    if let Err(message) = result {
        let _ = remove(&pinned);
        return Err(NsError::Create(message));
    }
    Ok(pinned)
}

/// Unmounts and deletes the pinned namespace files (idempotent).
pub fn remove(pinned: &PinnedNamespaces) -> Result<(), NsError> {
    for path in pinned.all() {
        match umount2(path, MntFlags::MNT_DETACH) {
            Ok(()) | Err(nix::Error::EINVAL) | Err(nix::Error::ENOENT) => {}
            Err(source) => {
                return Err(NsError::Unpin {
                    path: path.clone(),
                    source,
                });
            }
        }
        let _ = std::fs::remove_file(path);
    }
    Ok(())
}

/// Sets IFF_UP on "lo" in the calling thread's network namespace.
fn loopback_up() -> std::io::Result<()> {
    loopback_flags(true).map(|_| ())
}

/// Reads the flags of "lo" in the calling thread's network namespace,
/// setting IFF_UP first when `set_up`.
fn loopback_flags(set_up: bool) -> std::io::Result<libc::c_short> {
    use std::os::fd::AsRawFd;
    let socket = nix::sys::socket::socket(
        nix::sys::socket::AddressFamily::Inet,
        nix::sys::socket::SockType::Datagram,
        nix::sys::socket::SockFlag::SOCK_CLOEXEC,
        None,
    )?;
    // SAFETY: ifreq is plain old data; zeroed is a valid value for it.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (dst, src) in req.ifr_name.iter_mut().zip(b"lo\0") {
        *dst = *src as libc::c_char;
    }
    // SAFETY: SIOCGIFFLAGS/SIOCSIFFLAGS read and write `req`, a valid
    // ifreq that lives across both calls.
    unsafe {
        if libc::ioctl(socket.as_raw_fd(), libc::SIOCGIFFLAGS, &mut req) < 0 {
            return Err(std::io::Error::last_os_error());
        }
        if set_up {
            req.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short;
            if libc::ioctl(socket.as_raw_fd(), libc::SIOCSIFFLAGS, &req) < 0 {
                return Err(std::io::Error::last_os_error());
            }
        }
        Ok(req.ifr_ifru.ifru_flags)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs `f` in a thread that joined the namespace at `path`.
    fn in_ns<T: Send + 'static>(
        path: &Path,
        kind: CloneFlags,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> T {
        let file = std::fs::File::open(path).unwrap();
        std::thread::spawn(move || {
            nix::sched::setns(file, kind).unwrap();
            f()
        })
        .join()
        .unwrap()
    }

    #[test]
    fn pinned_namespaces_outlive_their_thread_and_are_removed() {
        let dir = tempfile::tempdir().unwrap();
        let wanted = NamespaceSet {
            net: true,
            ipc: true,
            uts: true,
        };
        let pinned = create(dir.path(), wanted, "pod-host").unwrap();
        let net = pinned.net.clone().unwrap();
        let host_net = std::fs::read_link("/proc/self/ns/net").unwrap();
        let pod_net = in_ns(&net, CloneFlags::CLONE_NEWNET, || {
            std::fs::read_link("/proc/thread-self/ns/net").unwrap()
        });
        assert_ne!(host_net, pod_net, "the pod has its own network namespace");
        let name = in_ns(
            pinned.uts.as_ref().unwrap(),
            CloneFlags::CLONE_NEWUTS,
            || nix::unistd::gethostname().unwrap().into_string().unwrap(),
        );
        assert_eq!(name, "pod-host");
        let flags = in_ns(&net, CloneFlags::CLONE_NEWNET, || {
            loopback_flags(false).unwrap()
        });
        assert_ne!(
            flags & libc::IFF_UP as libc::c_short,
            0,
            "lo is up in the pod"
        );
        remove(&pinned).unwrap();
        assert!(!net.exists());
        remove(&pinned).unwrap();
    }

    #[test]
    fn host_namespaces_are_not_pinned() {
        let dir = tempfile::tempdir().unwrap();
        let wanted = NamespaceSet {
            net: false,
            ipc: false,
            uts: false,
        };
        let pinned = create(dir.path(), wanted, "x").unwrap();
        assert_eq!(pinned, PinnedNamespaces::default());
    }
}
