//! crust's CNI invoker: finds the network configuration, runs the CNI
//! plugins and turns their results into pod addresses.
//!
//! Written by hand against the CNI specification 1.0.0
//! (<https://www.cni.dev/docs/spec/>): no well-kept Rust crate invokes CNI
//! plugins (what crates.io has is for *writing* plugins, or small ports of
//! libcni that are not maintained), and the protocol is small: exec a
//! binary with `CNI_*` environment variables and the JSON config on stdin,
//! read a JSON result or error from stdout.
//!
//! What it does, in the terms of the spec and of libcni, which kubelet's
//! runtimes (containerd, CRI-O) use:
//!
//! - [`Cni::load`]: the first valid `.conflist`/`.conf`/`.json` in the conf
//!   dir in lexical order of file names; a `.conf` is wrapped into a list
//!   of one. `cniVersion`, `name`, every plugin's `type`, and the presence
//!   of every plugin binary in the bin dirs are checked.
//! - [`Cni::add`]: ADD of every plugin in order on the pod's netns with
//!   `CNI_IFNAME=eth0`, `CNI_ARGS` carrying the K8S_POD_* values, the
//!   capability arguments (`portMappings`, `dns`, `bandwidth`) in
//!   `runtimeConfig` only for plugins that declare them, and each
//!   plugin's result as the next one's `prevResult`. If a plugin fails, the
//!   plugins already run are DELeted (reverse order) and the plugin's own
//!   error is returned.
//! - [`Cni::del`]: DEL of every plugin in reverse order with the config
//!   recorded at ADD and the final ADD result as `prevResult` (for 0.4.0 and
//!   later, as libcni does), so teardown does not depend on the current
//!   config dir. A netns that is gone is not passed (`CNI_NETNS` unset), so
//!   IPAM is still released.
//! - [`Cni::check`]: CHECK (0.4.0 and later), unless the list disables it.
//!
//! Every exec has a deadline ([`CniConfig::exec_timeout`]); on expiry the
//! plugin's process group is killed. Output is bounded ([`MAX_OUTPUT`]), as
//! are config files ([`MAX_CONFIG_SIZE`]).

mod config;
mod error;
mod exec;
mod result;
mod types;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;

pub use config::{
    MAX_CONFIG_SIZE, NetworkList, PluginConf, SUPPORTED_VERSIONS, find_plugin, load_file,
    parse_config,
};
pub use error::CniError;
pub use exec::MAX_OUTPUT;
pub use result::{CniResult, DnsResult, Interface, IpConfig, Route};
pub use types::{
    AttachedPlugin, Attachment, Bandwidth, DEFAULT_IFNAME, Dns, PodNetwork, PortMapping, Protocol,
    capability_args, cni_args, runtime_config,
};

use config::{dirs_display, plugin_stdin, valid_name, version_at_least};

/// Default deadline of one plugin exec.
pub const DEFAULT_EXEC_TIMEOUT: Duration = Duration::from_secs(60);

/// Where configs and plugins are, and how long a plugin may run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CniConfig {
    pub conf_dir: PathBuf,
    /// Searched in order for plugin binaries; also CNI_PATH.
    pub bin_dirs: Vec<PathBuf>,
    /// Deadline of each plugin exec (one ADD of a list of N plugins may take
    /// up to N times this).
    pub exec_timeout: Duration,
}

/// A CNI operation, for metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Operation {
    Add,
    Del,
    Check,
}

impl Operation {
    pub fn as_str(self) -> &'static str {
        match self {
            Operation::Add => "add",
            Operation::Del => "del",
            Operation::Check => "check",
        }
    }
}

/// Counters of one operation.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct OpStats {
    pub count: u64,
    pub errors: u64,
    /// Sum of the durations of all calls.
    pub total_duration: Duration,
}

/// Counters of every operation since the [`Cni`] was made.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CniStats {
    pub add: OpStats,
    pub del: OpStats,
    pub check: OpStats,
}

impl CniStats {
    pub fn get(&self, op: Operation) -> &OpStats {
        match op {
            Operation::Add => &self.add,
            Operation::Del => &self.del,
            Operation::Check => &self.check,
        }
    }

    fn get_mut(&mut self, op: Operation) -> &mut OpStats {
        match op {
            Operation::Add => &mut self.add,
            Operation::Del => &mut self.del,
            Operation::Check => &mut self.check,
        }
    }
}

/// Called after every [`Cni::add`], [`Cni::del`] and [`Cni::check`] with
/// the operation, its duration and whether it succeeded: the hook for
/// Prometheus histograms.
pub type Observer = Arc<dyn Fn(Operation, Duration, bool) + Send + Sync>;

/// The CNI invoker. Cheap to share (`Arc<Cni>`); every method takes `&self`.
pub struct Cni {
    config: CniConfig,
    stats: Mutex<CniStats>,
    observer: Option<Observer>,
}

impl std::fmt::Debug for Cni {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cni").field("config", &self.config).finish()
    }
}

impl Cni {
    /// An invoker with the default exec timeout (60 s).
    pub fn new(conf_dir: &Path, bin_dirs: Vec<PathBuf>) -> Cni {
        Cni::from_config(CniConfig {
            conf_dir: conf_dir.to_path_buf(),
            bin_dirs,
            exec_timeout: DEFAULT_EXEC_TIMEOUT,
        })
    }

    pub fn from_config(config: CniConfig) -> Cni {
        Cni {
            config,
            stats: Mutex::new(CniStats::default()),
            observer: None,
        }
    }

    /// Sets the deadline of each plugin exec.
    pub fn with_exec_timeout(mut self, timeout: Duration) -> Cni {
        self.config.exec_timeout = timeout;
        self
    }

    /// Sets the metrics hook.
    pub fn with_observer(mut self, observer: Observer) -> Cni {
        self.observer = Some(observer);
        self
    }

    pub fn config(&self) -> &CniConfig {
        &self.config
    }

    /// The counters so far.
    pub fn stats(&self) -> CniStats {
        *self.stats.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Loads the first valid network config of the conf dir (lexical order
    /// of file names). Read afresh on every call.
    pub fn load(&self) -> Result<NetworkList, CniError> {
        config::load_dir(&self.config.conf_dir, &self.config.bin_dirs)
    }

    /// Network readiness: Ok when a valid config is there now, else why not.
    /// Reads the conf dir on every call, so it turns Ok without a restart.
    pub fn status(&self) -> Result<(), String> {
        self.load().map(|_| ()).map_err(|e| e.to_string())
    }

    /// ADD: attaches the pod to the network `list` (see the crate doc).
    ///
    /// On a plugin's failure the plugins already run (and the failing one)
    /// are DELeted in reverse and the plugin's own error is returned; if
    /// that DEL fails too, the error is [`CniError::AddCleanupFailed`],
    /// whose [`CniError::pending_attachment`] must be kept and DELeted later.
    ///
    /// Dropping the future kills the running plugin (and its process group)
    /// and skips that cleanup: run it on a spawned task when the caller
    /// (a gRPC request) may be cancelled.
    pub async fn add(&self, list: &NetworkList, pod: &PodNetwork) -> Result<Attachment, CniError> {
        let start = Instant::now();
        let r = self.add_inner(list, pod).await;
        self.record(Operation::Add, start, r.is_ok());
        r
    }

    /// What ADD of `list` for `pod` will record, before it runs: every
    /// plugin with its config and no results. Stored ahead of ADD, it lets
    /// a DEL undo an ADD that a crash cut short (a CNI plugin must accept
    /// DEL for what it never added, and without prevResult).
    pub fn planned_attachment(&self, list: &NetworkList, pod: &PodNetwork) -> Attachment {
        let caps = capability_args(pod);
        Attachment {
            network_name: list.name.clone(),
            cni_version: list.cni_version.clone(),
            source: list.source.clone(),
            ifname: DEFAULT_IFNAME.to_string(),
            disable_check: list.disable_check,
            plugins: list
                .plugins
                .iter()
                .map(|plugin| AttachedPlugin {
                    plugin_type: plugin.plugin_type.clone(),
                    config: String::from_utf8(plugin_stdin(
                        &list.name,
                        &list.cni_version,
                        &plugin.conf,
                        runtime_config(&plugin.capabilities, &caps),
                        None,
                    ))
                    .expect("serde_json writes UTF-8"),
                })
                .collect(),
            prev_results: Vec::new(),
            result: CniResult::default(),
            ips: Vec::new(),
            pod: pod.clone(),
        }
    }

    /// DEL: detaches the pod, with what ADD recorded (the current config
    /// dir is not read). Every plugin is DELeted even when one fails; the
    /// first error is returned (DEL is idempotent: retry the whole call
    /// until it succeeds). When the pod's netns is gone (or is no longer a
    /// namespace mount), `CNI_NETNS` is left unset so IPAM is still released.
    pub async fn del(&self, attachment: &Attachment) -> Result<(), CniError> {
        let start = Instant::now();
        let r = self.del_inner(attachment).await;
        self.record(Operation::Del, start, r.is_ok());
        r
    }

    /// CHECK: asks every plugin whether the attachment is still as ADD left
    /// it. Ok without running anything for versions before 0.4.0 (which
    /// have no CHECK) and for lists with `disableCheck`.
    pub async fn check(&self, attachment: &Attachment) -> Result<(), CniError> {
        let start = Instant::now();
        let r = self.check_inner(attachment).await;
        self.record(Operation::Check, start, r.is_ok());
        r
    }

    fn record(&self, op: Operation, start: Instant, ok: bool) {
        let elapsed = start.elapsed();
        {
            let mut stats = self.stats.lock().unwrap_or_else(|e| e.into_inner());
            let s = stats.get_mut(op);
            s.count += 1;
            if !ok {
                s.errors += 1;
            }
            s.total_duration += elapsed;
        }
        if let Some(obs) = &self.observer {
            obs(op, elapsed, ok);
        }
    }

    fn binary(&self, plugin_type: &str, needed_by: &str) -> Result<PathBuf, CniError> {
        find_plugin(&self.config.bin_dirs, plugin_type).ok_or_else(|| CniError::PluginNotFound {
            plugin: plugin_type.to_string(),
            dirs: dirs_display(&self.config.bin_dirs),
            needed_by: needed_by.to_string(),
        })
    }

    async fn invoke(
        &self,
        call: &Call<'_>,
        plugin_type: &str,
        command: &'static str,
        stdin: &[u8],
    ) -> Result<Vec<u8>, CniError> {
        let binary = self.binary(plugin_type, &call.needed_by)?;
        tracing::debug!(
            plugin = plugin_type,
            command,
            pod_id = %call.pod.pod_id,
            "running CNI plugin"
        );
        exec::run(&exec::Invocation {
            plugin: plugin_type,
            binary: &binary,
            command,
            container_id: &call.pod.pod_id,
            netns: call.netns,
            ifname: call.ifname,
            cni_args: &call.cni_args,
            bin_dirs: &self.config.bin_dirs,
            stdin,
            timeout: self.config.exec_timeout,
        })
        .await
    }

    async fn add_inner(
        &self,
        list: &NetworkList,
        pod: &PodNetwork,
    ) -> Result<Attachment, CniError> {
        if !valid_name(&pod.pod_id) {
            return Err(CniError::InvalidArgument(format!(
                "pod id \"{}\" is not a valid CNI container id",
                pod.pod_id
            )));
        }
        if !pod.netns.is_absolute() {
            return Err(CniError::InvalidArgument(format!(
                "netns path \"{}\" is not absolute",
                pod.netns.display()
            )));
        }
        if list.plugins.is_empty() {
            return Err(CniError::InvalidArgument(format!(
                "network \"{}\" has no plugins",
                list.name
            )));
        }
        let call = Call {
            pod,
            netns: Some(&pod.netns),
            ifname: DEFAULT_IFNAME,
            cni_args: cni_args(pod)?,
            needed_by: list
                .source
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_else(|| format!("network \"{}\"", list.name)),
        };
        let caps = capability_args(pod);

        let mut attachment = Attachment {
            network_name: list.name.clone(),
            cni_version: list.cni_version.clone(),
            source: list.source.clone(),
            ifname: DEFAULT_IFNAME.to_string(),
            disable_check: list.disable_check,
            plugins: Vec::with_capacity(list.plugins.len()),
            prev_results: Vec::with_capacity(list.plugins.len()),
            result: CniResult::default(),
            ips: Vec::new(),
            pod: pod.clone(),
        };
        let mut prev: Option<Value> = None;
        let mut final_result = None;
        for plugin in &list.plugins {
            let rc = runtime_config(&plugin.capabilities, &caps);
            let stdin = plugin_stdin(
                &list.name,
                &list.cni_version,
                &plugin.conf,
                rc,
                prev.as_ref(),
            );
            attachment.plugins.push(AttachedPlugin {
                plugin_type: plugin.plugin_type.clone(),
                config: String::from_utf8(stdin.clone()).expect("serde_json writes UTF-8"),
            });
            let outcome = self
                .invoke(&call, &plugin.plugin_type, "ADD", &stdin)
                .await
                .and_then(|out| parse_add_output(&plugin.plugin_type, &out, &list.cni_version));
            match outcome {
                Ok((raw, parsed)) => {
                    attachment.prev_results.push(raw.to_string());
                    prev = Some(raw);
                    final_result = Some(parsed);
                }
                Err(error) => {
                    if matches!(
                        error,
                        CniError::PluginNotFound { .. } | CniError::Spawn { .. }
                    ) {
                        // It never ran: nothing of it to undo.
                        attachment.plugins.pop();
                    }
                    tracing::warn!(
                        pod_id = %pod.pod_id,
                        %error,
                        "CNI ADD failed; deleting the plugins already added"
                    );
                    return Err(match self.del_inner(&attachment).await {
                        Ok(()) => error,
                        Err(cleanup) => CniError::AddCleanupFailed {
                            error: Box::new(error),
                            cleanup: Box::new(cleanup),
                            attachment: Box::new(attachment),
                        },
                    });
                }
            }
        }
        let result = final_result.expect("the list has at least one plugin");
        attachment.ips = result.pod_ips();
        attachment.result = result;
        Ok(attachment)
    }

    async fn del_inner(&self, att: &Attachment) -> Result<(), CniError> {
        let cni_args = cni_args(&att.pod)?;
        // prevResult on DEL: 0.4.0 and later (libcni's rule).
        let prev: Option<Value> = if version_at_least(&att.cni_version, (0, 4, 0)) {
            match att.prev_results.last() {
                Some(raw) => Some(serde_json::from_str(raw).map_err(|e| {
                    CniError::InvalidArgument(format!("stored CNI result is not JSON: {e}"))
                })?),
                None => None,
            }
        } else {
            None
        };
        let netns = netns_if_present(&att.pod.netns);
        if netns.is_none() {
            tracing::debug!(
                pod_id = %att.pod.pod_id,
                netns = %att.pod.netns.display(),
                "netns is gone; DEL without CNI_NETNS"
            );
        }
        let call = Call {
            pod: &att.pod,
            netns: netns.as_deref(),
            ifname: &att.ifname,
            cni_args,
            needed_by: format!("network \"{}\" of pod {}", att.network_name, att.pod.pod_id),
        };
        let mut first_err = None;
        for plugin in att.plugins.iter().rev() {
            let stdin = stored_config(plugin, prev.as_ref())?;
            let r = self.invoke(&call, &plugin.plugin_type, "DEL", &stdin).await;
            if let Err(e) = r {
                tracing::warn!(pod_id = %att.pod.pod_id, error = %e, "CNI DEL failed");
                first_err.get_or_insert(e);
            }
        }
        match first_err {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    async fn check_inner(&self, att: &Attachment) -> Result<(), CniError> {
        if att.disable_check || !version_at_least(&att.cni_version, (0, 4, 0)) {
            return Ok(());
        }
        let cni_args = cni_args(&att.pod)?;
        let prev: Value = match att.prev_results.last() {
            Some(raw) => serde_json::from_str(raw).map_err(|e| {
                CniError::InvalidArgument(format!("stored CNI result is not JSON: {e}"))
            })?,
            None => {
                return Err(CniError::InvalidArgument(
                    "the attachment has no ADD result to check".into(),
                ));
            }
        };
        let call = Call {
            pod: &att.pod,
            netns: Some(&att.pod.netns),
            ifname: &att.ifname,
            cni_args,
            needed_by: format!("network \"{}\" of pod {}", att.network_name, att.pod.pod_id),
        };
        for plugin in &att.plugins {
            let stdin = stored_config(plugin, Some(&prev))?;
            self.invoke(&call, &plugin.plugin_type, "CHECK", &stdin)
                .await?;
        }
        Ok(())
    }
}

/// What is the same for every plugin of one ADD/DEL/CHECK.
struct Call<'a> {
    pod: &'a PodNetwork,
    netns: Option<&'a Path>,
    ifname: &'a str,
    cni_args: String,
    /// For "plugin not found" messages.
    needed_by: String,
}

/// A plugin's config as recorded at ADD, with `prevResult` replaced.
fn stored_config(plugin: &AttachedPlugin, prev: Option<&Value>) -> Result<Vec<u8>, CniError> {
    let mut conf: serde_json::Map<String, Value> =
        serde_json::from_str(&plugin.config).map_err(|e| {
            CniError::InvalidArgument(format!(
                "stored config of plugin \"{}\" is not a JSON object: {e}",
                plugin.plugin_type
            ))
        })?;
    conf.remove("prevResult");
    if let Some(prev) = prev {
        conf.insert("prevResult".into(), prev.clone());
    }
    Ok(serde_json::to_vec(&Value::Object(conf)).expect("a JSON map serializes"))
}

/// ADD's stdout: the raw result and its conversion. A plugin that exits 0
/// but prints a CNI error is taken at its word.
fn parse_add_output(
    plugin: &str,
    out: &[u8],
    cni_version: &str,
) -> Result<(Value, CniResult), CniError> {
    let bad = |reason: String| CniError::Exec {
        plugin: plugin.to_string(),
        command: "ADD",
        reason,
    };
    if out.iter().all(u8::is_ascii_whitespace) {
        return Err(bad("the plugin printed no result".into()));
    }
    let raw: Value =
        serde_json::from_slice(out).map_err(|e| bad(format!("result is not JSON: {e}")))?;
    if raw.get("code").is_some()
        && raw.get("ips").is_none()
        && raw.get("ip4").is_none()
        && let Some((code, msg, details)) = exec::parse_error_json(out)
    {
        return Err(CniError::Plugin {
            plugin: plugin.to_string(),
            command: "ADD",
            code,
            msg,
            details,
        });
    }
    let parsed =
        CniResult::parse(&raw, cni_version).map_err(|e| bad(format!("invalid result: {e}")))?;
    Ok((raw, parsed))
}

/// The netns path when it is still a network namespace (nsfs: a pinned
/// bind mount or /proc/PID/ns/net); None when it is gone or its bind mount
/// was undone (an empty file is left behind then).
fn netns_if_present(path: &Path) -> Option<PathBuf> {
    if path.as_os_str().is_empty() {
        return None;
    }
    match nix::sys::statfs::statfs(path) {
        Ok(st) if st.filesystem_type() == nix::sys::statfs::NSFS_MAGIC => Some(path.to_path_buf()),
        // procfs: /proc/PID/ns/net links resolve to nsfs; anything else that
        // exists is passed along and the plugin decides.
        Ok(st) if st.filesystem_type() == nix::sys::statfs::PROC_SUPER_MAGIC => {
            Some(path.to_path_buf())
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests;
