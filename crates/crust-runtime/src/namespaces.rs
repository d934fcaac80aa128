//! The pod's shared namespaces, created and pinned by crust itself (no
//! pause container): a thread unshares net, ipc and uts, brings the
//! loopback up, sets the hostname, and bind-mounts its namespace files
//! under the pod's state dir, which keeps them alive after it exits.
//!
//! A pod with its own user namespace (hostUsers: false) needs net, ipc and
//! uts owned by that user namespace, which a thread of crustd cannot make
//! (unshare(CLONE_NEWUSER) and setns into a user namespace refuse
//! multithreaded callers): a forked child makes them all in one unshare,
//! crustd writes its uid/gid maps and pins its namespaces
//! ([`create_in_user_namespace`]).

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
    /// The pod's own user namespace (hostUsers: false).
    #[serde(default)]
    pub user: Option<PathBuf>,
    /// The pod's shared PID namespace, when pinned ([`pin_pid`]).
    #[serde(default)]
    pub pid: Option<PathBuf>,
}

impl PinnedNamespaces {
    fn all(&self) -> impl Iterator<Item = &PathBuf> {
        [&self.net, &self.ipc, &self.uts, &self.pid, &self.user]
            .into_iter()
            .flatten()
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

/// Bind-mounts `/proc/<pid>/ns/<name>` onto `<dir>/<name>`.
fn pin(dir: &Path, name: &str, pid: libc::pid_t) -> Result<PathBuf, String> {
    let path = dir.join(name);
    std::fs::File::create(&path).map_err(|e| format!("{}: {e}", path.display()))?;
    let source = format!("/proc/{pid}/ns/{name}");
    mount(
        Some(source.as_str()),
        &path,
        None::<&str>,
        MsFlags::MS_BIND,
        None::<&str>,
    )
    .map_err(|e| format!("pinning {name} namespace at {}: {e}", path.display()))?;
    Ok(path)
}

/// Pins the PID namespace of process `pid` (a pod init) at `<dir>/pid`, so
/// containers join it by a path that needs no access to the process.
pub fn pin_pid(dir: &Path, pid: u32) -> Result<PathBuf, NsError> {
    pin(dir, "pid", pid as libc::pid_t).map_err(NsError::Create)
}

/// What the child of [`create_in_user_namespace`] reports: 0, or the step
/// that failed (high 16 bits) and its errno (low 16).
const STEP_UNSHARE: i32 = 1;
const STEP_HOSTNAME: i32 = 2;
const STEP_LOOPBACK: i32 = 3;

/// Creates a user namespace with `uid_map` and `gid_map` (the text of
/// `/proc/<pid>/uid_map`) and, owned by it, the namespaces `wanted` asks
/// for; pins them all in `dir` (the user namespace at `dir/user`).
pub fn create_in_user_namespace(
    dir: &Path,
    wanted: NamespaceSet,
    hostname: &str,
    uid_map: &str,
    gid_map: &str,
) -> Result<PinnedNamespaces, NsError> {
    use std::io::{Read, Write};
    use std::os::fd::AsRawFd;
    std::fs::create_dir_all(dir).map_err(|e| NsError::Create(format!("{}: {e}", dir.display())))?;
    let mut flags = CloneFlags::CLONE_NEWUSER;
    let mut names = vec!["user"];
    for (on, flag, name) in [
        (wanted.net, CloneFlags::CLONE_NEWNET, "net"),
        (wanted.ipc, CloneFlags::CLONE_NEWIPC, "ipc"),
        (wanted.uts, CloneFlags::CLONE_NEWUTS, "uts"),
    ] {
        if on {
            flags |= flag;
            names.push(name);
        }
    }
    let set_hostname = wanted.uts && !hostname.is_empty();
    let io = |what: &str| {
        let what = what.to_string();
        move |e: nix::Error| NsError::Create(format!("{what}: {e}"))
    };
    // Child -> parent: the 4-byte outcome. Parent -> child: EOF = exit.
    let (report_r, report_w) =
        nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(io("pipe"))?;
    let (done_r, done_w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(io("pipe"))?;
    // SAFETY: crustd is multithreaded, so the child may only make
    // async-signal-safe calls: it runs plain syscalls (unshare,
    // sethostname, socket, ioctl, write, read) on values prepared before
    // the fork, allocates nothing and leaves with _exit.
    match unsafe { nix::unistd::fork() }.map_err(io("fork"))? {
        nix::unistd::ForkResult::Child => {
            // The parent's ends: holding `done_w` would keep the read
            // below from ever seeing EOF.
            drop(report_r);
            drop(done_w);
            let step = |n: i32, e: nix::Error| (n << 16) | (e as i32 & 0xffff);
            let outcome: i32 = (|| {
                unshare(flags).map_err(|e| step(STEP_UNSHARE, e))?;
                if set_hostname {
                    nix::unistd::sethostname(hostname).map_err(|e| step(STEP_HOSTNAME, e))?;
                }
                if wanted.net {
                    loopback_up().map_err(|e| {
                        let errno = e.raw_os_error().unwrap_or(libc::EIO);
                        (STEP_LOOPBACK << 16) | (errno & 0xffff)
                    })?;
                }
                Ok::<(), i32>(())
            })()
            .err()
            .unwrap_or(0);
            let bytes = outcome.to_ne_bytes();
            // SAFETY: write(2) and read(2) on fds this process owns, with
            // buffers on its stack.
            unsafe {
                libc::write(report_w.as_raw_fd(), bytes.as_ptr().cast(), bytes.len());
                let mut b = 0u8;
                libc::read(done_r.as_raw_fd(), (&mut b as *mut u8).cast(), 1);
                libc::_exit(0);
            }
        }
        nix::unistd::ForkResult::Parent { child } => {
            drop(report_w);
            drop(done_r);
            let result = (|| -> Result<PinnedNamespaces, String> {
                let mut buf = [0u8; 4];
                std::fs::File::from(report_r)
                    .read_exact(&mut buf)
                    .map_err(|e| format!("namespace child vanished: {e}"))?;
                let outcome = i32::from_ne_bytes(buf);
                if outcome != 0 {
                    let what = match outcome >> 16 {
                        STEP_UNSHARE => "unshare",
                        STEP_HOSTNAME => "sethostname",
                        _ => "bringing lo up",
                    };
                    let errno = nix::errno::Errno::from_raw(outcome & 0xffff);
                    return Err(format!("{what}: {errno}"));
                }
                for (file, map) in [("uid_map", uid_map), ("gid_map", gid_map)] {
                    let path = format!("/proc/{child}/{file}");
                    std::fs::OpenOptions::new()
                        .write(true)
                        .open(&path)
                        .and_then(|mut f| f.write_all(map.as_bytes()))
                        .map_err(|e| format!("writing {path} ({map:?}): {e}"))?;
                }
                let mut pinned = PinnedNamespaces::default();
                for name in &names {
                    let path = pin(dir, name, child.as_raw())?;
                    match *name {
                        "user" => pinned.user = Some(path),
                        "net" => pinned.net = Some(path),
                        "ipc" => pinned.ipc = Some(path),
                        _ => pinned.uts = Some(path),
                    }
                }
                Ok(pinned)
            })();
            drop(done_w);
            let _ = nix::sys::wait::waitpid(child, None);
            result.map_err(|message| {
                let leftovers = PinnedNamespaces {
                    user: Some(dir.join("user")),
                    net: Some(dir.join("net")),
                    ipc: Some(dir.join("ipc")),
                    uts: Some(dir.join("uts")),
                    pid: None,
                };
                let _ = remove(&leftovers);
                NsError::Create(message)
            })
        }
    }
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

    #[test]
    fn namespaces_owned_by_a_new_user_namespace() {
        let dir = tempfile::tempdir().unwrap();
        let wanted = NamespaceSet {
            net: true,
            ipc: true,
            uts: true,
        };
        let pinned = create_in_user_namespace(
            dir.path(),
            wanted,
            "userns-pod",
            "0 200000 65536\n",
            "0 300000 65536\n1000000 400000 10\n",
        )
        .unwrap();
        let user = pinned.user.clone().unwrap();
        // The user namespace has the maps, and owns the others: a process
        // that joins it sees them (NS_GET_USERNS is what `lsns` uses; here
        // it is enough that setns into the pod's user namespace then its
        // network namespace works from a fresh single-threaded child).
        let out = std::process::Command::new("nsenter")
            .arg(format!("--user={}", user.display()))
            .arg(format!("--net={}", pinned.net.as_ref().unwrap().display()))
            .arg(format!("--uts={}", pinned.uts.as_ref().unwrap().display()))
            .args([
                "sh",
                "-c",
                "cat /proc/self/uid_map /proc/self/gid_map; hostname; id -u",
            ])
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        let words: Vec<&str> = text.split_whitespace().collect();
        assert_eq!(
            words,
            [
                "0",
                "200000",
                "65536",
                "0",
                "300000",
                "65536",
                "1000000",
                "400000",
                "10",
                "userns-pod",
                "0"
            ],
            "{out:?}"
        );
        let host_net = std::fs::read_link("/proc/self/ns/net").unwrap();
        let pod_net = in_ns(
            pinned.net.as_ref().unwrap(),
            CloneFlags::CLONE_NEWNET,
            || std::fs::read_link("/proc/thread-self/ns/net").unwrap(),
        );
        assert_ne!(host_net, pod_net);
        remove(&pinned).unwrap();
        assert!(!user.exists());

        // A bad map fails and leaves nothing pinned.
        let dir = tempfile::tempdir().unwrap();
        let e = create_in_user_namespace(dir.path(), wanted, "x", "0 0 0\n", "0 0 1\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("uid_map"), "{e}");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }
}
