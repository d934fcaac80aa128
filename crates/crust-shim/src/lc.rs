//! Container operations with youki's libcontainer. Every function here runs
//! inside a helper (see `helper.rs`), never in the shim process itself.

use std::error::Error;
use std::fs;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::time::Duration;

use containerd_shim::cgroup::{collect_metrics, collect_metrics_v2, get_cgroup};
use containerd_shim::util::convert_to_any;
use containerd_shim_protos::protobuf::Message;
use libcgroups::common::{CgroupConfig, CgroupManager, ControllerOpt, create_cgroup_manager};
use libcontainer::container::Container;
use libcontainer::container::builder::ContainerBuilder;
use libcontainer::oci_spec::runtime::{LinuxResources, Spec};
use libcontainer::syscall::syscall::SyscallType;
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};

use crate::helper::Reply;
use crate::io::ChildFds;

/// An error with its whole chain of causes, for the caller to act on.
pub fn chain(e: &dyn Error) -> String {
    let mut s = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        let text = cause.to_string();
        if !s.contains(&text) {
            s.push_str(": ");
            s.push_str(&text);
        }
        source = cause.source();
    }
    s
}

fn err(e: impl Error) -> String {
    chain(&e)
}

/// `slice:prefix:name` is the systemd cgroup driver's form of cgroupsPath;
/// cgroupfs paths are absolute.
pub fn is_systemd_path(p: &Path) -> bool {
    let s = p.to_string_lossy();
    !s.starts_with('/') && s.split(':').count() == 3
}

fn builder(
    root: &Path,
    id: &str,
    stdio: Option<&ChildFds>,
    console: Option<&Console>,
) -> Result<ContainerBuilder, String> {
    let mut b = ContainerBuilder::new(id.to_owned(), SyscallType::Linux)
        .validate_id()
        .map_err(err)?
        .with_root_path(root)
        .map_err(err)?
        .with_console_socket(console.map(|c| c.path.clone()));
    if let Some(s) = stdio {
        let dup = |fd: &OwnedFd| fd.try_clone().map_err(err);
        b = b
            .with_stdin(dup(&s.stdin)?)
            .with_stdout(dup(&s.stdout)?)
            .with_stderr(dup(&s.stderr)?);
    }
    Ok(b)
}

/// Creates the container; its init waits for `start`. Replies with the
/// init pid, and the pty master when the process has a terminal.
pub fn create(
    root: &Path,
    id: &str,
    bundle: &Path,
    stdio: Option<&ChildFds>,
    terminal: bool,
) -> Result<Reply, String> {
    let config = bundle.join(crust_shim_proto::bundle::CONFIG);
    let mut spec = Spec::load(&config).map_err(err)?;
    // The systemd driver on cgroup v1: cgroupfs dirs at the scope's path,
    // and the scope over D-Bus below (see systemd_v1.rs).
    let v1_scope = crate::systemd_v1::prepare(&mut spec);
    if v1_scope.is_some() {
        spec.save(&config).map_err(err)?;
    }
    let systemd = spec
        .linux()
        .as_ref()
        .and_then(|l| l.cgroups_path().as_deref())
        .is_some_and(is_systemd_path);
    let console = terminal.then(|| Console::bind(root, id)).transpose()?;
    let container = builder(root, id, stdio, console.as_ref())?
        .as_init(bundle)
        .with_systemd(systemd)
        .with_detach(true)
        .build()
        .map_err(err)?;
    let pid = container.pid().ok_or("libcontainer reported no init pid")?;
    if let Some((unit, slice)) = &v1_scope {
        let resources = spec.linux().as_ref().and_then(|l| l.resources().as_ref());
        let started =
            crate::systemd_v1::start_scope(unit, slice, id, pid.as_raw() as u32, resources)
                .and_then(|()| reapply(&spec, id, resources));
        if let Err(e) = started {
            let _ = delete(root, id);
            return Err(e);
        }
    }
    let fd = console.map(|c| c.receive()).transpose()?;
    Ok(Reply {
        data: pid.as_raw().to_string().into_bytes(),
        fd,
    })
}

/// Lets the created container's init exec the process.
pub fn start(root: &Path, id: &str) -> Result<Reply, String> {
    let mut c = Container::load(root.join(id)).map_err(err)?;
    c.start().map_err(err)?;
    Ok(Reply::default())
}

/// Starts an exec process (a libcontainer "tenant") in the container's
/// namespaces and cgroup. `process` is the OCI Process as JSON.
pub fn exec(
    root: &Path,
    id: &str,
    exec_id: &str,
    process: &[u8],
    stdio: Option<&ChildFds>,
    terminal: bool,
) -> Result<Reply, String> {
    let path = root.join(id).join(format!("exec-{exec_id}.json"));
    fs::write(&path, process).map_err(err)?;
    let console = match terminal.then(|| Console::bind(root, id)).transpose() {
        Ok(c) => c,
        Err(e) => {
            let _ = fs::remove_file(&path);
            return Err(e);
        }
    };
    let built = builder(root, id, stdio, console.as_ref()).and_then(|b| {
        b.as_tenant()
            .with_process(Some(&path))
            .with_detach(true)
            .build()
            .map_err(err)
    });
    let _ = fs::remove_file(&path);
    let pid = built?;
    let fd = console.map(|c| c.receive()).transpose()?;
    Ok(Reply {
        data: pid.as_raw().to_string().into_bytes(),
        fd,
    })
}

/// Removes the container: kills what is left, removes its cgroup and state.
pub fn delete(root: &Path, id: &str) -> Result<Reply, String> {
    let dir = root.join(id);
    if !dir.join("state.json").exists() {
        let _ = fs::remove_dir_all(&dir);
        return Ok(Reply::default());
    }
    let mut c = Container::load(dir).map_err(err)?;
    let scope = v1_scope_of(c.bundle());
    c.delete(true).map_err(err)?;
    if let Some(unit) = scope {
        crate::systemd_v1::stop_scope(&unit);
    }
    Ok(Reply::default())
}

/// Applies new resource limits (OCI LinuxResources as JSON) to the
/// container's cgroup.
pub fn update(root: &Path, id: &str, resources: &[u8]) -> Result<Reply, String> {
    let resources: LinuxResources =
        serde_json::from_slice(resources).map_err(|e| format!("resources: {e}"))?;
    let c = Container::load(root.join(id)).map_err(err)?;
    let config = c.spec().map_err(err)?;
    let manager = create_cgroup_manager(CgroupConfig {
        cgroup_path: config.cgroup_path,
        systemd_cgroup: c.systemd(),
        container_name: id.to_owned(),
    })
    .map_err(err)?;
    manager
        .apply(&ControllerOpt {
            resources: &resources,
            disable_oom_killer: false,
            oom_score_adj: None,
            freezer_state: None,
        })
        .map_err(err)?;
    if let Some(unit) = v1_scope_of(c.bundle()) {
        crate::systemd_v1::update_scope(&unit, &resources)?;
    }
    Ok(Reply::default())
}

/// Writes the limits and device rules to the scope's cgroupfs dirs again:
/// systemd rewrote them when it started the scope (its device list cannot
/// express every rule), as runc's v1 systemd driver re-applies after it.
fn reapply(spec: &Spec, id: &str, resources: Option<&LinuxResources>) -> Result<(), String> {
    let (Some(resources), Some(path)) = (
        resources,
        spec.linux().as_ref().and_then(|l| l.cgroups_path().clone()),
    ) else {
        return Ok(());
    };
    create_cgroup_manager(CgroupConfig {
        cgroup_path: path,
        systemd_cgroup: false,
        container_name: id.to_owned(),
    })
    .map_err(err)?
    .apply(&ControllerOpt {
        resources,
        disable_oom_killer: false,
        oom_score_adj: None,
        freezer_state: None,
    })
    .map_err(err)
}

/// The systemd scope [`create`] noted in the bundle on a cgroup v1 host.
fn v1_scope_of(bundle: &Path) -> Option<String> {
    let spec = Spec::load(bundle.join(crust_shim_proto::bundle::CONFIG)).ok()?;
    spec.annotations()
        .as_ref()?
        .get(crate::systemd_v1::SCOPE_ANNOTATION)
        .cloned()
}

/// The cgroup metrics of `pid`'s cgroup, as a serialized protobuf `Any`
/// (containerd's cgroups v1 or v2 `Metrics`).
pub fn stats(pid: u32) -> Result<Reply, String> {
    let cgroup = get_cgroup(pid).map_err(err)?;
    let any = if cgroup.v2() {
        convert_to_any(Box::new(collect_metrics_v2(&cgroup).map_err(err)?))
    } else {
        convert_to_any(Box::new(collect_metrics(&cgroup).map_err(err)?))
    }
    .map_err(err)?;
    Ok(Reply::data(any.write_to_bytes().map_err(err)?))
}

/// The socket a container's init sends its pty master to.
struct Console {
    listener: UnixListener,
    path: PathBuf,
}

impl Console {
    fn bind(root: &Path, id: &str) -> Result<Console, String> {
        // Bound by a short relative name: the absolute path may be longer
        // than a socket address allows. The helper may chdir freely.
        std::env::set_current_dir(root).map_err(err)?;
        let name = format!(
            "tty-{}-{}.sock",
            &id[..id.len().min(12)],
            std::process::id()
        );
        let _ = fs::remove_file(&name);
        let listener = UnixListener::bind(&name).map_err(|e| format!("console socket: {e}"))?;
        Ok(Console {
            listener,
            path: root.join(name),
        })
    }

    fn receive(self) -> Result<OwnedFd, String> {
        let _ = fs::remove_file(&self.path);
        let mut fds = [PollFd::new(self.listener.as_fd(), PollFlags::POLLIN)];
        let ready = poll(
            &mut fds,
            PollTimeout::try_from(Duration::from_secs(10)).unwrap_or(PollTimeout::MAX),
        )
        .map_err(err)?;
        if ready == 0 {
            return Err("the container sent no terminal".into());
        }
        let (conn, _) = self.listener.accept().map_err(err)?;
        let mut buf = [0u8; 256];
        match crate::sys::recv_with_fd(conn.as_fd(), &mut buf).map_err(err)? {
            (_, Some(fd)) => Ok(fd),
            (_, None) => Err("the container sent no terminal fd".into()),
        }
    }
}

/// Mounts the rootfs mounts containerd passes in CreateTaskRequest (crustd
/// passes none: it mounts the rootfs itself) onto `<bundle>/rootfs`.
/// (containerd-shim's own `mount_rootfs` waits on its reaper, which this
/// shim does not run.)
pub fn mount_rootfs(
    mounts: &[containerd_shim_protos::types::mount::Mount],
    target: &Path,
) -> Result<(), String> {
    for m in mounts {
        if let Err(e) = mount_one(m, target) {
            unmount_rootfs(target);
            return Err(format!(
                "mount {} ({}) on {}: {e}",
                m.source,
                m.type_,
                target.display()
            ));
        }
    }
    Ok(())
}

fn mount_one(m: &containerd_shim_protos::types::mount::Mount, target: &Path) -> nix::Result<()> {
    use nix::mount::{MsFlags, mount};
    const PROPAGATION: MsFlags = MsFlags::MS_SHARED
        .union(MsFlags::MS_PRIVATE)
        .union(MsFlags::MS_SLAVE)
        .union(MsFlags::MS_UNBINDABLE);
    let mut flags = MsFlags::empty();
    let mut data = Vec::new();
    for o in &m.options {
        let (set, clear) = match o.as_str() {
            "ro" => (MsFlags::MS_RDONLY, MsFlags::empty()),
            "rw" => (MsFlags::empty(), MsFlags::MS_RDONLY),
            "bind" => (MsFlags::MS_BIND, MsFlags::empty()),
            "rbind" => (MsFlags::MS_BIND | MsFlags::MS_REC, MsFlags::empty()),
            "nosuid" => (MsFlags::MS_NOSUID, MsFlags::empty()),
            "suid" => (MsFlags::empty(), MsFlags::MS_NOSUID),
            "nodev" => (MsFlags::MS_NODEV, MsFlags::empty()),
            "dev" => (MsFlags::empty(), MsFlags::MS_NODEV),
            "noexec" => (MsFlags::MS_NOEXEC, MsFlags::empty()),
            "exec" => (MsFlags::empty(), MsFlags::MS_NOEXEC),
            "noatime" => (MsFlags::MS_NOATIME, MsFlags::empty()),
            "relatime" => (MsFlags::MS_RELATIME, MsFlags::empty()),
            "strictatime" => (MsFlags::MS_STRICTATIME, MsFlags::empty()),
            "nodiratime" => (MsFlags::MS_NODIRATIME, MsFlags::empty()),
            "sync" => (MsFlags::MS_SYNCHRONOUS, MsFlags::empty()),
            "async" => (MsFlags::empty(), MsFlags::MS_SYNCHRONOUS),
            "private" => (MsFlags::MS_PRIVATE, MsFlags::empty()),
            "rprivate" => (MsFlags::MS_PRIVATE | MsFlags::MS_REC, MsFlags::empty()),
            "shared" => (MsFlags::MS_SHARED, MsFlags::empty()),
            "rshared" => (MsFlags::MS_SHARED | MsFlags::MS_REC, MsFlags::empty()),
            "slave" => (MsFlags::MS_SLAVE, MsFlags::empty()),
            "rslave" => (MsFlags::MS_SLAVE | MsFlags::MS_REC, MsFlags::empty()),
            other => {
                data.push(other);
                continue;
            }
        };
        flags = (flags | set) & !clear;
    }
    let data = data.join(",");
    let data = (!data.is_empty()).then_some(data.as_str());
    let fstype = (!m.type_.is_empty()).then_some(m.type_.as_str());
    mount(
        Some(m.source.as_str()),
        target,
        fstype,
        flags - PROPAGATION,
        data,
    )?;
    if flags.intersects(PROPAGATION) {
        let keep = flags & (PROPAGATION | MsFlags::MS_REC);
        mount(None::<&str>, target, None::<&str>, keep, None::<&str>)?;
    }
    if flags.contains(MsFlags::MS_BIND | MsFlags::MS_RDONLY) {
        // A bind mount takes ro only on a remount.
        let ro = MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY;
        mount(None::<&str>, target, None::<&str>, ro, None::<&str>)?;
    }
    Ok(())
}

pub fn unmount_rootfs(target: &Path) {
    if let Err(e) = containerd_shim::mount::umount_recursive(target.to_str(), 0) {
        log::warn!("unmount {}: {e}", target.display());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn systemd_paths() {
        assert!(is_systemd_path(Path::new(
            "kubepods-besteffort.slice:cri-containerd:abc"
        )));
        assert!(!is_systemd_path(Path::new("/kubepods/besteffort/podx/abc")));
        assert!(!is_systemd_path(Path::new("/a:b:c")));
    }
}
