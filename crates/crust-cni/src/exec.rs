//! Running one plugin: the CNI_* environment, config on stdin, bounded
//! output, a deadline after which the plugin's whole process group is
//! killed.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use serde_json::Value;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::process::Command;

use crate::CniError;

/// Most bytes kept of a plugin's stdout or stderr; more is an error.
pub const MAX_OUTPUT: usize = 1 << 20;

/// How much of stderr goes into an error message.
const STDERR_IN_MESSAGE: usize = 4096;

/// One plugin invocation.
pub(crate) struct Invocation<'a> {
    pub plugin: &'a str,
    pub binary: &'a Path,
    pub command: &'static str,
    pub container_id: &'a str,
    /// None leaves CNI_NETNS unset (DEL of a netns that is gone).
    pub netns: Option<&'a Path>,
    pub ifname: &'a str,
    pub cni_args: &'a str,
    pub bin_dirs: &'a [PathBuf],
    pub stdin: &'a [u8],
    pub timeout: Duration,
}

/// The environment of an invocation: CNI_* variables, each set (and any
/// CNI_* this process inherited removed). Pure, for tests.
pub(crate) fn cni_env(inv: &Invocation<'_>) -> Vec<(&'static str, OsString)> {
    let mut env = vec![
        ("CNI_COMMAND", OsString::from(inv.command)),
        ("CNI_CONTAINERID", OsString::from(inv.container_id)),
        ("CNI_IFNAME", OsString::from(inv.ifname)),
        ("CNI_ARGS", OsString::from(inv.cni_args)),
        (
            "CNI_PATH",
            std::env::join_paths(inv.bin_dirs).unwrap_or_else(|_| {
                // A dir with ':' in it cannot be in a PATH list; drop it.
                let ok: Vec<&PathBuf> = inv
                    .bin_dirs
                    .iter()
                    .filter(|d| !d.as_os_str().as_encoded_bytes().contains(&b':'))
                    .collect();
                std::env::join_paths(ok).unwrap_or_default()
            }),
        ),
    ];
    if let Some(ns) = inv.netns {
        env.push(("CNI_NETNS", ns.as_os_str().to_owned()));
    }
    env
}

/// Runs the plugin; returns its stdout on success (exit 0).
pub(crate) async fn run(inv: &Invocation<'_>) -> Result<Vec<u8>, CniError> {
    let exec_err = |reason: String| CniError::Exec {
        plugin: inv.plugin.to_string(),
        command: inv.command,
        reason,
    };
    let mut cmd = Command::new(inv.binary);
    for (key, _) in std::env::vars_os() {
        if key.as_encoded_bytes().starts_with(b"CNI_") {
            cmd.env_remove(key);
        }
    }
    cmd.envs(cni_env(inv))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        // Its own process group, so a timeout kills what it started too
        // (IPAM plugins it delegates to, iptables, a `sleep` in a script).
        .process_group(0)
        .kill_on_drop(true);
    let mut child = cmd.spawn().map_err(|e| CniError::Spawn {
        plugin: inv.plugin.to_string(),
        command: inv.command,
        binary: inv.binary.to_path_buf(),
        reason: e.to_string(),
    })?;
    // Declared after `child`, so dropped before it: while the child is not
    // reaped, its pid (= its process group id) cannot be reused.
    let mut group = GroupKill(child.id().and_then(|p| i32::try_from(p).ok()));
    let stdin = child.stdin.take();
    let stdout = child.stdout.take();
    let stderr = child.stderr.take();

    let io = async {
        let write = async {
            if let Some(mut s) = stdin {
                // A plugin may exit without reading stdin: EPIPE is its business.
                let _ = s.write_all(inv.stdin).await;
                drop(s);
            }
        };
        let (_, out, err) = tokio::join!(write, read_limited(stdout), read_limited(stderr));
        let status = child.wait().await;
        (out, err, status)
    };
    let (out, err, status) = match tokio::time::timeout(inv.timeout, io).await {
        Ok(done) => {
            // wait() finished: the child is reaped, its pid no longer ours.
            group.disarm();
            done
        }
        Err(_) => {
            group.kill();
            let _ = child.start_kill();
            let _ = child.wait().await;
            return Err(CniError::Timeout {
                plugin: inv.plugin.to_string(),
                command: inv.command,
                timeout: inv.timeout,
            });
        }
    };
    let status = status.map_err(|e| exec_err(format!("waiting for the plugin: {e}")))?;
    let (out, out_truncated) = out.map_err(|e| exec_err(format!("reading stdout: {e}")))?;
    let (err, _) = err.map_err(|e| exec_err(format!("reading stderr: {e}")))?;
    if out_truncated {
        return Err(exec_err(format!("stdout larger than {MAX_OUTPUT} bytes")));
    }
    if !status.success() {
        return Err(plugin_error(inv.plugin, inv.command, status, &out, &err));
    }
    if !err.is_empty() {
        tracing::debug!(
            plugin = inv.plugin,
            command = inv.command,
            stderr = %String::from_utf8_lossy(&err[..err.len().min(STDERR_IN_MESSAGE)]),
            "CNI plugin wrote to stderr"
        );
    }
    Ok(out)
}

/// SIGKILLs a plugin's process group when dropped armed: on timeout, and
/// when the caller drops the future mid-exec (a cancelled request), so
/// nothing the plugin started lingers.
struct GroupKill(Option<i32>);

impl GroupKill {
    fn kill(&mut self) {
        if let Some(pgid) = self.0.take() {
            let _ = nix::sys::signal::killpg(
                nix::unistd::Pid::from_raw(pgid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
    }

    fn disarm(&mut self) {
        self.0 = None;
    }
}

impl Drop for GroupKill {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Reads a pipe to its end, keeping at most [`MAX_OUTPUT`] bytes (the rest
/// is drained, so the plugin never blocks on a full pipe). Returns the bytes
/// and whether some were dropped.
async fn read_limited<R: AsyncRead + Unpin>(pipe: Option<R>) -> std::io::Result<(Vec<u8>, bool)> {
    let Some(mut pipe) = pipe else {
        return Ok((Vec::new(), false));
    };
    let mut kept = Vec::new();
    let mut truncated = false;
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = pipe.read(&mut buf).await?;
        if n == 0 {
            return Ok((kept, truncated));
        }
        let room = MAX_OUTPUT - kept.len();
        if n > room {
            truncated = true;
        }
        kept.extend_from_slice(&buf[..n.min(room)]);
    }
}

/// The error of a plugin that exited non-zero: its CNI error JSON from
/// stdout when it printed one, else its stderr, else the exit status.
pub(crate) fn plugin_error(
    plugin: &str,
    command: &'static str,
    status: ExitStatus,
    stdout: &[u8],
    stderr: &[u8],
) -> CniError {
    if let Some((code, msg, details)) = parse_error_json(stdout) {
        return CniError::Plugin {
            plugin: plugin.to_string(),
            command,
            code,
            msg,
            details,
        };
    }
    let text = |b: &[u8]| {
        let s = String::from_utf8_lossy(&b[..b.len().min(STDERR_IN_MESSAGE)]);
        s.trim().to_string()
    };
    let msg = [text(stderr), text(stdout)]
        .into_iter()
        .find(|s| !s.is_empty())
        .unwrap_or_default();
    let how = match status.code() {
        Some(c) => format!("exit status {c}"),
        None => {
            use std::os::unix::process::ExitStatusExt;
            format!("killed by signal {}", status.signal().unwrap_or(0))
        }
    };
    CniError::Plugin {
        plugin: plugin.to_string(),
        command,
        code: 999,
        msg: if msg.is_empty() {
            format!("{how}, no output")
        } else {
            format!("{msg} ({how})")
        },
        details: String::new(),
    }
}

/// `{"code": N, "msg": "...", "details": "..."}` from a plugin's output.
pub(crate) fn parse_error_json(out: &[u8]) -> Option<(u64, String, String)> {
    let v: Value = serde_json::from_slice(out).ok()?;
    let code = v.get("code")?.as_u64()?;
    let msg = v
        .get("msg")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    let details = v
        .get("details")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    Some((code, msg, details))
}
