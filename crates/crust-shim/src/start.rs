//! The `start` and `delete` actions of the shim v2 protocol.
//!
//! `start` runs in the runtime's process tree: it picks the socket, spawns
//! the long-lived shim (the same binary, with `-socket`) as the leader of a
//! new session, waits until it serves, and prints the address. The shim
//! then belongs to nobody but its children: the runtime may die at any
//! time without touching it.

use std::env;
use std::fs::{self, File, OpenOptions};
use std::io::{Read, Write};
use std::os::fd::AsFd;
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use containerd_shim::Flags;
use containerd_shim_protos::bootstrap_api::{BootstrapParams, BootstrapResult};
use containerd_shim_protos::protobuf::Message;
use containerd_shim_protos::shim::shim::DeleteResponse;
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};

use crate::timefmt::to_timestamp;
use crate::{STATE_DIR, lc, sys};

/// The socket's name in the pod's state dir (the cwd).
const SOCKET_NAME: &str = "shim.sock";
/// Where sockets go whose path in the state dir would be too long.
const FALLBACK_DIR: &str = "/run/crust/s";
/// A unix socket path holds at most 107 bytes (108 with its NUL).
const SUN_PATH_MAX: usize = 107;
/// The daemon's log when containerd did not provide a `log` FIFO.
const LOG_NAME: &str = "shim.log";
/// Cap on what the runtime may pipe to `start`, as containerd's.
const MAX_INPUT: u64 = 10 << 20;
const READY: &[u8] = b"ready\n";

pub fn start(flags: &Flags) -> Result<()> {
    let cwd = env::current_dir().context("current dir")?;
    let input = read_piped_stdin()?;
    let boot = BootstrapParams::parse_from_bytes(&input).ok().filter(|b| {
        !input.is_empty() && b.instance_id == flags.id && b.namespace == flags.namespace
    });
    let ttrpc_address = boot
        .as_ref()
        .map(|b| b.containerd_ttrpc_address.clone())
        .filter(|a| !a.is_empty())
        .or_else(|| env::var("TTRPC_ADDRESS").ok())
        .unwrap_or_default();
    let socket_dir = boot
        .as_ref()
        .and_then(|b| b.socket_dir.clone())
        .filter(|d| !d.is_empty());
    let socket = socket_path(&cwd, socket_dir.as_deref(), &flags.namespace, &flags.id);
    let address = format!("unix://{}", socket.display());
    if !serving(&socket) {
        spawn_daemon(flags, &cwd, &address, &ttrpc_address)?;
    }
    let reply = match boot {
        // containerd 2.3+: a BootstrapResult naming the task API version.
        Some(_) => BootstrapResult {
            version: containerd_shim_protos::TASK_API_VERSION,
            address,
            protocol: "ttrpc".into(),
            ..Default::default()
        }
        .write_to_bytes()?,
        // Everyone else: the bare address (the shim serves task v2 and v3).
        None => address.into_bytes(),
    };
    let mut out = std::io::stdout().lock();
    out.write_all(&reply)?;
    out.flush()?;
    Ok(())
}

/// What the runtime piped to us: containerd passes runtime options or
/// bootstrap params. Only a pipe or a file is read, and a pipe only if it
/// has something within a second, so an idle inherited pipe cannot hang
/// `start` (crustd passes /dev/null).
fn read_piped_stdin() -> Result<Vec<u8>> {
    let stdin = std::io::stdin();
    let meta = match File::from(stdin.as_fd().try_clone_to_owned()?).metadata() {
        Ok(m) => m,
        Err(_) => return Ok(Vec::new()),
    };
    let kind = meta.file_type();
    if kind.is_fifo() || kind.is_socket() {
        let mut fds = [PollFd::new(stdin.as_fd(), PollFlags::POLLIN)];
        let ready = poll(
            &mut fds,
            PollTimeout::try_from(Duration::from_secs(1)).unwrap_or(PollTimeout::MAX),
        )?;
        if ready == 0 {
            return Ok(Vec::new());
        }
    } else if !kind.is_file() {
        return Ok(Vec::new());
    }
    let mut input = Vec::new();
    stdin.lock().take(MAX_INPUT).read_to_end(&mut input)?;
    Ok(input)
}

/// `<cwd>/shim.sock`, or a hashed name under /run/crust/s (or the dir
/// containerd asked for) when that path is too long for a socket.
fn socket_path(cwd: &Path, socket_dir: Option<&str>, namespace: &str, id: &str) -> PathBuf {
    if let Some(dir) = socket_dir {
        return Path::new(dir).join(hash_name(cwd, namespace, id));
    }
    let local = cwd.join(SOCKET_NAME);
    if local.as_os_str().len() <= SUN_PATH_MAX {
        return local;
    }
    Path::new(FALLBACK_DIR).join(hash_name(cwd, namespace, id))
}

/// FNV-1a of the state dir, namespace and id: short, stable, distinct.
fn hash_name(cwd: &Path, namespace: &str, id: &str) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let key = format!("{}\0{namespace}\0{id}", cwd.display());
    for b in key.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    format!("{h:016x}.sock")
}

/// Whether a shim already serves this socket (the runtime retried start);
/// a dead socket file is removed.
fn serving(socket: &Path) -> bool {
    if UnixStream::connect(socket).is_ok() {
        return true;
    }
    let _ = fs::remove_file(socket);
    false
}

fn spawn_daemon(flags: &Flags, cwd: &Path, address: &str, ttrpc_address: &str) -> Result<()> {
    let exe = env::current_exe().context("own executable")?;
    let (log, log_name) = log_target(cwd)?;
    let mut cmd = Command::new(exe);
    cmd.current_dir(cwd)
        .args([
            "-namespace",
            &flags.namespace,
            "-id",
            &flags.id,
            "-address",
            &flags.address,
        ])
        .args(["-socket", address])
        .env("TTRPC_ADDRESS", ttrpc_address)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(log);
    if flags.debug {
        cmd.arg("-debug");
    }
    sys::new_session(&mut cmd);
    let mut child = cmd.spawn().context("spawn the shim daemon")?;
    // The daemon writes READY once it serves, then closes its stdout.
    let mut said = Vec::new();
    if let Some(mut out) = child.stdout.take() {
        let _ = out.read_to_end(&mut said);
    }
    if said != READY {
        let status = child.wait().ok();
        bail!("the shim daemon failed to start ({status:?}); see {log_name}");
    }
    Ok(())
}

/// containerd opens a `log` FIFO in the bundle for the shim's log; crustd
/// does not, and gets `shim.log` in the pod's state dir.
fn log_target(cwd: &Path) -> Result<(File, String)> {
    let fifo = cwd.join("log");
    if fs::metadata(&fifo).is_ok_and(|m| m.file_type().is_fifo())
        && let Ok(f) = OpenOptions::new()
            .write(true)
            .custom_flags(libc::O_NONBLOCK)
            .open(&fifo)
    {
        return Ok((f, fifo.display().to_string()));
    }
    let path = cwd.join(LOG_NAME);
    let f = OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(&path)
        .with_context(|| format!("open {}", path.display()))?;
    Ok((f, path.display().to_string()))
}

/// Tells `start` that the daemon serves, and lets go of its pipe.
pub fn signal_ready() -> Result<()> {
    let mut out = std::io::stdout().lock();
    out.write_all(READY)?;
    out.flush()?;
    let null = OpenOptions::new().write(true).open("/dev/null")?;
    nix::unistd::dup2(std::os::fd::AsRawFd::as_raw_fd(&null), libc::STDOUT_FILENO)?;
    Ok(())
}

/// `delete`: containerd cleans up after a shim that died. Removes what
/// libcontainer left of the task and reports it killed.
pub fn delete(flags: &Flags) -> Result<()> {
    let bundle = match flags.bundle.as_str() {
        "" => env::current_dir()?,
        b => PathBuf::from(b),
    };
    if let Err(e) = lc::delete(&bundle.join(STATE_DIR), &flags.id) {
        eprintln!("crust-shim delete {}: {e}", flags.id);
    }
    lc::unmount_rootfs(&bundle.join(crust_shim_proto::bundle::ROOTFS));
    let resp = DeleteResponse {
        pid: 0,
        exit_status: 128 + libc::SIGKILL as u32,
        exited_at: Some(to_timestamp(std::time::SystemTime::now())).into(),
        ..Default::default()
    };
    let mut out = std::io::stdout().lock();
    resp.write_to_writer(&mut out)?;
    out.flush()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn socket_in_state_dir_unless_too_long() {
        let short = Path::new("/run/crust/pods/abc");
        assert_eq!(
            socket_path(short, None, "k8s.io", "abc"),
            short.join("shim.sock")
        );
        let long = PathBuf::from(format!("/run/crust/pods/{}", "a".repeat(100)));
        let p = socket_path(&long, None, "k8s.io", "x");
        assert!(
            p.starts_with(FALLBACK_DIR) && p.as_os_str().len() <= SUN_PATH_MAX,
            "{p:?}"
        );
        assert_ne!(p, socket_path(&long, None, "k8s.io", "y"));
        let d = socket_path(short, Some("/run/containerd/s"), "k8s.io", "abc");
        assert!(d.starts_with("/run/containerd/s"));
    }
}
