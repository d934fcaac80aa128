//! Containers: create (rootfs + OCI bundle), start/stop/remove through the
//! pod's shim, status and listing, ExecSync, stats and resource updates.

use std::collections::HashMap;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crust_cri_api::v1 as cri;
use nix::mount::{MntFlags, umount2};
use tokio::io::AsyncReadExt;

use crust_store::{ContainerRecord, ContainerState, SandboxRecord, SandboxState};

use crate::events::ShimEvent;
use crate::lifecycle::LifecycleKind;
use crate::{Pods, RuntimeError, cgroup, new_id, now_nanos};

/// ExecSync output cap, stdout and stderr together (kubelet's own limit).
pub const EXEC_OUTPUT_LIMIT: usize = 16 << 20;
/// /etc/passwd and /etc/group larger than this are not read.
const PASSWD_LIMIT: u64 = 1 << 20;
/// How long a SIGKILLed process may take to be reported gone.
const KILL_WAIT: Duration = Duration::from_secs(10);
/// How long ReopenContainerLog waits for the shim to create the new file.
const LOG_REOPEN_WAIT: Duration = Duration::from_secs(5);

pub struct ExecOutput {
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
    pub exit_code: i32,
}

/// One cgroup reading, kept per container to turn CPU time into a rate
/// at the next stats call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct StatsSample {
    pub at_nanos: i64,
    pub cpu_nanos: u64,
}

impl StatsSample {
    /// CPU cores used (in nanocores) between `previous` and `self`; None
    /// when they do not make an interval (a clock step, a reset counter).
    pub fn nano_cores_since(&self, previous: StatsSample) -> Option<u64> {
        (self.at_nanos > previous.at_nanos && self.cpu_nanos >= previous.cpu_nanos).then(|| {
            ((self.cpu_nanos - previous.cpu_nanos) as f64
                / (self.at_nanos - previous.at_nanos) as f64
                * 1e9) as u64
        })
    }
}

/// What a container's first stats call measures its CPU rate from: its
/// start, when it used no CPU yet, so the first rate is the mean since
/// start (no sleep inside the request to take a second reading).
fn first_sample(record: &ContainerRecord) -> Option<StatsSample> {
    (record.started_at > 0).then_some(StatsSample {
        at_nanos: record.started_at,
        cpu_nanos: 0,
    })
}

fn container_state(record: &ContainerRecord) -> cri::ContainerState {
    match record.state {
        ContainerState::Created => cri::ContainerState::ContainerCreated,
        ContainerState::Running => cri::ContainerState::ContainerRunning,
        ContainerState::Exited => cri::ContainerState::ContainerExited,
        ContainerState::Unknown => cri::ContainerState::ContainerUnknown,
    }
}

/// The signal a STOPSIGNAL names: a number 1..=64, a name with or
/// without `SIG` (`TERM`, `SIGUSR1`), or `RTMIN`, `RTMIN+n`, `RTMAX-n`.
/// None when it names no signal the kernel has.
fn parse_signal(name: &str) -> Option<u32> {
    let name = name.trim();
    if let Ok(n) = name.parse::<u32>() {
        return (1..=64).contains(&n).then_some(n);
    }
    let upper = name.to_ascii_uppercase();
    let bare = upper.strip_prefix("SIG").unwrap_or(&upper);
    let (rtmin, rtmax) = (libc::SIGRTMIN() as u32, libc::SIGRTMAX() as u32);
    let rt = if bare == "RTMIN" {
        Some(rtmin)
    } else if bare == "RTMAX" {
        Some(rtmax)
    } else if let Some(n) = bare.strip_prefix("RTMIN+") {
        n.parse::<u32>().ok().and_then(|n| rtmin.checked_add(n))
    } else if let Some(n) = bare.strip_prefix("RTMAX-") {
        n.parse::<u32>().ok().and_then(|n| rtmax.checked_sub(n))
    } else {
        None
    };
    if let Some(n) = rt {
        return (rtmin..=rtmax).contains(&n).then_some(n);
    }
    format!("SIG{bare}")
        .parse::<nix::sys::signal::Signal>()
        .ok()
        .map(|s| s as u32)
}

/// The image's STOPSIGNAL as recorded at CreateContainer: one that names
/// no signal falls back to SIGTERM (with a warning), so an image cannot
/// make its container unstoppable; an empty one stays empty (SIGTERM).
fn checked_stop_signal(image_ref: &str, name: &str) -> String {
    if name.trim().is_empty() || parse_signal(name).is_some() {
        return name.trim().to_string();
    }
    tracing::warn!(
        image = %image_ref,
        stop_signal = %name.escape_debug(),
        "the image's StopSignal names no signal; the container will be stopped with SIGTERM"
    );
    String::new()
}

/// `ContainerConfig.stop_signal` (KEP-4960) as the name StopContainer
/// parses: None for RUNTIME_DEFAULT (the image's STOPSIGNAL, else
/// SIGTERM), an error for a number the enum does not define.
fn requested_stop_signal(value: i32) -> Result<Option<String>, RuntimeError> {
    let signal = cri::Signal::try_from(value).map_err(|_| {
        RuntimeError::InvalidArgument(format!(
            "config.stop_signal {value} is not a CRI Signal value (0..=65)"
        ))
    })?;
    if signal == cri::Signal::RuntimeDefault {
        return Ok(None);
    }
    let name = signal.as_str_name().trim_start_matches("SIGNAL_");
    let name = if let Some(n) = name.strip_prefix("SIGRTMINPLUS") {
        format!("SIGRTMIN+{n}")
    } else if let Some(n) = name.strip_prefix("SIGRTMAXMINUS") {
        format!("SIGRTMAX-{n}")
    } else {
        name.to_string()
    };
    Ok(Some(name))
}

/// The signal StopContainer sends first, as `ContainerStatus.stop_signal`
/// reports it: the recorded one, else SIGTERM. The number-to-enum table
/// is derived once from [`requested_stop_signal`] and [`parse_signal`], so
/// both directions agree; enum order makes aliases (SIGIOT, SIGCLD,
/// SIGPOLL) report their canonical name.
fn effective_cri_signal(recorded: &str) -> cri::Signal {
    static BY_NUMBER: std::sync::OnceLock<HashMap<u32, cri::Signal>> = std::sync::OnceLock::new();
    let by_number = BY_NUMBER.get_or_init(|| {
        let mut table = HashMap::new();
        for value in 1..=65 {
            if let Ok(signal) = cri::Signal::try_from(value)
                && let Ok(Some(name)) = requested_stop_signal(value)
                && let Some(number) = parse_signal(&name)
            {
                table.entry(number).or_insert(signal);
            }
        }
        table
    });
    by_number
        .get(&signal_number(recorded))
        .copied()
        .unwrap_or(cri::Signal::Sigterm)
}

/// The signal StopContainer sends first: SIGTERM unless the record names
/// a valid one (records made before StopSignal was checked may not).
fn signal_number(name: &str) -> u32 {
    parse_signal(name).unwrap_or(libc::SIGTERM as u32)
}

pub(crate) fn record_config(record: &ContainerRecord) -> cri::ContainerConfig {
    serde_json::from_value(record.config.clone()).unwrap_or_default()
}

impl Pods {
    fn container(&self, id_or_prefix: &str) -> Result<Option<ContainerRecord>, RuntimeError> {
        crate::lookup(&self.store, id_or_prefix, "container")
    }

    pub(crate) fn require_container(&self, id: &str) -> Result<ContainerRecord, RuntimeError> {
        self.container(id)?
            .ok_or_else(|| RuntimeError::NotFound(format!("container {id:?} not found")))
    }

    /// A container that must be running for what is asked of it.
    pub(crate) fn require_running(&self, id: &str) -> Result<ContainerRecord, RuntimeError> {
        let record = self.require_container(id)?;
        if record.state != ContainerState::Running {
            return Err(RuntimeError::FailedPrecondition(format!(
                "container {} is not running",
                record.id
            )));
        }
        Ok(record)
    }

    pub async fn create_container(
        &self,
        pod_id: &str,
        config: cri::ContainerConfig,
        pod_config: Option<cri::PodSandboxConfig>,
    ) -> Result<String, RuntimeError> {
        let sandbox = self.require_sandbox(pod_id)?;
        if sandbox.state != SandboxState::Ready {
            return Err(RuntimeError::FailedPrecondition(format!(
                "pod sandbox {} is not ready; containers can only be created in a ready pod",
                sandbox.id
            )));
        }
        let pod_config = pod_config
            .filter(|c| c.metadata.is_some())
            .unwrap_or_else(|| serde_json::from_value(sandbox.config.clone()).unwrap_or_default());
        let meta = config
            .metadata
            .as_ref()
            .filter(|m| !m.name.is_empty())
            .ok_or_else(|| {
                RuntimeError::InvalidArgument("config.metadata.name is required".into())
            })?;
        let name = format!("{}_{}_{}", meta.name, sandbox.name, meta.attempt);
        let image_name = config
            .image
            .as_ref()
            .map(|i| i.image.as_str())
            .filter(|i| !i.is_empty())
            .ok_or_else(|| {
                RuntimeError::InvalidArgument("config.image.image is required".into())
            })?;
        let stop_signal = requested_stop_signal(config.stop_signal)?;
        if sandbox.foreign_shim
            && let Some(m) = config.mounts.iter().find(|m| m.recursive_read_only)
        {
            // Only crust-shim is known to apply "rro"; runc 1.1 would
            // leave such a mount's submounts writable without a word.
            return Err(RuntimeError::FailedPrecondition(format!(
                "mount {}: runtime handler {:?} does not make mounts read-only recursively; use a crust-shim handler",
                m.container_path, sandbox.runtime_handler
            )));
        }
        let lock = self.lock_for(&name);
        let _held = lock.lock().await;
        if let Some(holder) = self.store.by_name::<ContainerRecord>(&name) {
            return Err(RuntimeError::AlreadyExists(format!(
                "container name {name:?} is already in use by container {}; remove it first",
                holder.id
            )));
        }
        let image = self.images.find(image_name)?.ok_or_else(|| {
            RuntimeError::NotFound(format!("image {image_name:?} not found; pull it first"))
        })?;
        // images.policy as it is now, for an image pulled under another.
        let named = config
            .image
            .as_ref()
            .map(|i| i.user_specified_image.as_str())
            .filter(|n| !n.is_empty())
            .unwrap_or(image_name);
        self.images.admit(named, &image)?;
        // Bounded inputs before any disk work or spec building.
        crust_spec::limits::check_image_config(&image.config)
            .and_then(|()| crust_spec::limits::check_container_config(&config))
            .and_then(|()| crust_spec::limits::check_pod_config(&pod_config))?;
        let id = new_id()?;
        let bundle = self.config.state.join("containers").join(&id);
        let mut record = ContainerRecord {
            id: id.clone(),
            sandbox_id: sandbox.id.clone(),
            name,
            attempt: meta.attempt,
            state: ContainerState::Created,
            image_ref: image_name.to_string(),
            image_id: image.id.clone(),
            created_at: now_nanos(),
            labels: config.labels.clone().into_iter().collect(),
            annotations: config.annotations.clone().into_iter().collect(),
            bundle: bundle.display().to_string(),
            stop_signal: stop_signal
                .unwrap_or_else(|| checked_stop_signal(image_name, &image.config.stop_signal)),
            tty: config.tty,
            image_chain: image.layers.iter().map(|l| l.chain_id.clone()).collect(),
            config: serde_json::to_value(&config).unwrap_or_default(),
            ..Default::default()
        };
        if !sandbox.log_directory.is_empty() && !config.log_path.is_empty() {
            record.log_path = prepare_log_path(&sandbox.log_directory, &config.log_path)?
                .display()
                .to_string();
        }
        let prepared = crate::blocking(|| {
            self.prepare_bundle(
                &sandbox,
                &pod_config,
                &config,
                &image.config,
                &bundle,
                &mut record,
            )
        });
        match prepared {
            Ok(()) => {
                self.store.put(&record)?;
                self.publish(LifecycleKind::Created, &id, &record.sandbox_id);
                Ok(id)
            }
            Err(e) => {
                crate::blocking(|| self.remove_bundle(&record));
                Err(e)
            }
        }
    }

    fn prepare_bundle(
        &self,
        sandbox: &SandboxRecord,
        pod_config: &cri::PodSandboxConfig,
        config: &cri::ContainerConfig,
        image: &crust_store::ImageConfig,
        bundle: &Path,
        record: &mut ContainerRecord,
    ) -> Result<(), RuntimeError> {
        create_missing_host_paths(config)?;
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(bundle)?;
        let snapshots = self.images.snapshots();
        let rw = snapshots
            .prepare_rw(&record.id, &record.image_chain)
            .map_err(|e| RuntimeError::Internal(e.to_string()))?;
        let rootfs = bundle.join(crust_shim_proto::bundle::ROOTFS);
        std::fs::create_dir_all(&rootfs)?;
        // Idmapped to the pod's user namespace when it has one.
        crate::userns::mount_rootfs(snapshots, &rw, &rootfs, bundle, sandbox)?;
        let passwd = crust_spec::read_in_root(&rootfs, "etc/passwd", PASSWD_LIMIT)?;
        let group = crust_spec::read_in_root(&rootfs, "etc/group", PASSWD_LIMIT)?;
        let path = |s: &str| (!s.is_empty()).then(|| PathBuf::from(s));
        let state_dir = PathBuf::from(&sandbox.state_dir);
        let facts = crust_spec::SandboxFacts {
            pod_id: sandbox.id.clone(),
            hostname: sandbox.hostname.clone(),
            netns_path: path(&sandbox.netns),
            ipcns_path: path(&sandbox.ipcns),
            utsns_path: path(&sandbox.utsns),
            pidns_path: path(&sandbox.pidns).or_else(|| {
                (sandbox.pod_init_pid > 0)
                    .then(|| PathBuf::from(format!("/proc/{}/ns/pid", sandbox.pod_init_pid)))
            }),
            userns_path: path(&sandbox.userns),
            host_pid: pod_config
                .linux
                .as_ref()
                .and_then(|l| l.security_context.as_ref())
                .and_then(|s| s.namespace_options.as_ref())
                .is_some_and(|o| o.pid == cri::NamespaceMode::Node as i32),
            resolv_conf: Some(state_dir.join("resolv.conf")),
            hosts: Some(state_dir.join("hosts")),
            hostname_file: Some(state_dir.join("hostname")),
            shm_path: path(&sandbox.shm),
            cgroup_parent: sandbox.cgroup_parent.clone(),
            cgroup_driver: match self.cgroup_driver {
                crust_config::CgroupDriver::Cgroupfs => crust_spec::CgroupDriver::Cgroupfs,
                crust_config::CgroupDriver::Systemd => crust_spec::CgroupDriver::Systemd,
            },
        };
        let volumes = self.mount_image_volumes(sandbox, config, &record.id)?;
        record.image_mounts = volumes.records;
        let container = crust_spec::ContainerFacts {
            id: record.id.clone(),
            volumes_dir: self.volumes_dir(&record.id),
            oom_score_adj_min: self.oom_score_adj_min,
            idmapped_sources: crate::userns::idmapped_mounts(
                &self.config.state,
                sandbox,
                pod_config,
                config,
                &record.id,
            )?,
            image_mount_sources: volumes.sources,
            cdi_spec_dirs: self.config.cdi.spec_dirs.clone(),
        };
        let image_facts = crust_spec::ImageFacts {
            config: image,
            passwd: passwd.as_deref(),
            group: group.as_deref(),
        };
        // kubectl debug's TARGET pid namespace: the running target's.
        let mut targets = crust_spec::Targets::default();
        if let Some(target) = crust_spec::pid_namespace_target(config).filter(|t| !t.is_empty()) {
            let target = self
                .container(target)?
                .filter(|t| t.sandbox_id == sandbox.id)
                .ok_or_else(|| {
                    RuntimeError::NotFound(format!(
                        "target container {target:?} not found in pod {}",
                        sandbox.id
                    ))
                })?;
            if target.state != ContainerState::Running || target.pid == 0 {
                return Err(RuntimeError::FailedPrecondition(format!(
                    "target container {} is not running",
                    target.id
                )));
            }
            targets.target_pidns_path = Some(PathBuf::from(format!("/proc/{}/ns/pid", target.pid)));
        }
        crate::lsm::ensure_default_apparmor_profile();
        let mut spec = crust_spec::container_spec_with(
            config,
            pod_config,
            &image_facts,
            &facts,
            &container,
            &targets,
        )?;
        crate::limits::give_container_nofile(&mut spec)?;
        let userns = crate::userns::sandbox_mappings(sandbox)?;
        for (_, dir) in crust_spec::image_volumes(config, image, &container) {
            // On the persistent root, never the state dir's RAM-backed
            // tmpfs; parents are crust's own (0700).
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(&container.volumes_dir)?;
            std::fs::create_dir_all(&dir)?;
            if let Some(maps) = &userns {
                crate::userns::give_to_pod(&dir, maps)?;
            }
        }
        record.cgroup_path = spec
            .linux()
            .as_ref()
            .and_then(|l| l.cgroups_path().clone())
            .map(|p| p.display().to_string())
            .unwrap_or_default();
        let json =
            serde_json::to_vec_pretty(&spec).map_err(|e| RuntimeError::Internal(e.to_string()))?;
        std::fs::write(bundle.join(crust_shim_proto::bundle::CONFIG), json)?;
        Ok(())
    }

    /// Where a container's image VOLUME dirs live: `<root>/containers/<id>/
    /// volumes`, on the persistent root beside the writable layers (as
    /// containerd keeps them under its root), counted in the container's
    /// writable layer usage and removed with it.
    pub(crate) fn volumes_dir(&self, id: &str) -> PathBuf {
        self.config.root.join("containers").join(id).join("volumes")
    }

    /// Bytes and inodes of every container's image VOLUME dirs (on the
    /// container filesystem, beside the writable layers); walked on the
    /// blocking pool.
    pub async fn volume_usage(&self) -> crust_snapshot::Usage {
        let dir = self.config.root.join("containers");
        tokio::task::spawn_blocking(move || crust_snapshot::dir_usage(&dir).unwrap_or_default())
            .await
            .unwrap_or_default()
    }

    /// Unmounts and deletes a container's rootfs and bundle (idempotent).
    pub(crate) fn remove_bundle(&self, record: &ContainerRecord) {
        let bundle = Path::new(&record.bundle);
        let rootfs = bundle.join(crust_shim_proto::bundle::ROOTFS);
        match umount2(&rootfs, MntFlags::MNT_DETACH) {
            Ok(()) | Err(nix::Error::EINVAL) | Err(nix::Error::ENOENT) => {}
            Err(e) => {
                tracing::warn!(container_id = %record.id, error = %e, "cannot unmount rootfs")
            }
        }
        crate::userns::release_idmapped_mounts(&self.config.state, &record.id);
        crate::image_mounts::release(&self.config.state, &record.id);
        if let Err(e) = self.images.snapshots().remove_rw(&record.id) {
            tracing::warn!(container_id = %record.id, error = %e, "cannot remove writable layer");
        }
        // The id names a dir under the root: only a plain one (recovery
        // passes names read from disk).
        if !record.id.is_empty()
            && record.id.bytes().all(|b| b.is_ascii_alphanumeric())
            && let Some(dir) = self.volumes_dir(&record.id).parent()
            && let Err(e) = std::fs::remove_dir_all(dir)
            && e.kind() != std::io::ErrorKind::NotFound
        {
            tracing::warn!(container_id = %record.id, error = %e, "cannot remove image volumes");
        }
        if !record.bundle.is_empty() {
            let _ = std::fs::remove_dir_all(bundle);
        }
    }

    pub async fn start_container(&self, id: &str) -> Result<(), RuntimeError> {
        let record = self.require_container(id)?;
        let lock = self.lock_for(&record.id);
        let _held = lock.lock().await;
        let record = self.require_container(&record.id)?;
        if record.state != ContainerState::Created {
            return Err(RuntimeError::FailedPrecondition(format!(
                "container {} is {:?}, not created; only a created container can be started",
                record.id, record.state
            )));
        }
        let sandbox = self.require_sandbox(&record.sandbox_id)?;
        let shim = self.shim_for(&sandbox).await?;
        let log = (!record.log_path.is_empty()).then(|| shim_log_path(&sandbox, &record));
        let stdin = crate::stream::stdin_fifo(&record)?;
        let (stdio, options, log_writer) = if sandbox.foreign_shim {
            // Before the log writer starts: a bad option leaves nothing.
            let options = self.shim_options(self.handler_of(&sandbox)?)?;
            // Another shim: FIFOs, read by crust-shim as the log writer.
            let binary = crate::shim::resolve_binary("crust-shim")?;
            let binary = crate::shim::exposed::path_of(&binary);
            let fifos = crate::foreign::start_log_writer(
                binary,
                Path::new(&record.bundle),
                log,
                record.tty,
            )
            .await?;
            let stdio = crate::shim::Stdio {
                stdin,
                stdout: fifos.stdout.display().to_string(),
                stderr: fifos
                    .stderr
                    .as_ref()
                    .map(|p| p.display().to_string())
                    .unwrap_or_default(),
                terminal: record.tty,
            };
            (stdio, options, Some(fifos))
        } else {
            let stdout = log
                .map(|p| crust_shim_proto::stdio::log_uri(&p))
                .unwrap_or_default();
            let stdio = crate::shim::Stdio {
                stdin,
                stderr: stdout.clone(),
                stdout,
                terminal: record.tty,
            };
            (stdio, None, None)
        };
        let mut started_at = 0;
        let started = async {
            let created = shim
                .create(&record.id, Path::new(&record.bundle), &stdio, options)
                .await;
            match (created, log_writer) {
                (Ok(_), Some(writer)) => writer.hand_over(),
                (Err(e), Some(writer)) => {
                    writer.abandon().await;
                    return Err(e);
                }
                (created, None) => {
                    created?;
                }
            }
            // Taken before Start: a quick process may exit before it returns.
            started_at = now_nanos();
            shim.start_process(&record.id, "").await
        }
        .await;
        let mut updated = record.clone();
        match started {
            Ok(pid) => {
                updated.state = ContainerState::Running;
                updated.started_at = started_at;
                updated.pid = pid;
                updated.pid_start_time = crate::process::start_time(pid).unwrap_or(0);
                self.store.put(&updated)?;
                self.publish(LifecycleKind::Started, &updated.id, &updated.sandbox_id);
                Ok(())
            }
            Err(e) => {
                let _ = shim.delete(&record.id, "").await;
                updated.state = ContainerState::Exited;
                updated.finished_at = now_nanos();
                updated.exit_code = 128;
                updated.reason = "StartError".into();
                updated.message = e.to_string();
                self.store.put(&updated)?;
                self.publish(LifecycleKind::Stopped, &updated.id, &updated.sandbox_id);
                Err(e)
            }
        }
    }

    /// Stops a container; an unknown one is already stopped (idempotent, as
    /// kubelet and the conformance suite expect).
    pub async fn stop_container(&self, id: &str, timeout_seconds: i64) -> Result<(), RuntimeError> {
        let Some(record) = self.container(id)? else {
            return Ok(());
        };
        self.stop_container_inner(&record, timeout_seconds).await
    }

    pub(crate) async fn stop_container_inner(
        &self,
        record: &ContainerRecord,
        timeout_seconds: i64,
    ) -> Result<(), RuntimeError> {
        if record.state != ContainerState::Running {
            return Ok(());
        }
        let sandbox = self.require_sandbox(&record.sandbox_id)?;
        let shim = self.shim_for(&sandbox).await?;
        let mut exited = None;
        if timeout_seconds > 0 {
            let signal = signal_number(&record.stop_signal);
            match shim.kill(&record.id, "", signal, false).await {
                Ok(()) | Err(RuntimeError::NotFound(_)) => {
                    exited = shim
                        .wait(&record.id, "", Duration::from_secs(timeout_seconds as u64))
                        .await
                        .ok();
                }
                // Never a container that cannot be stopped: SIGKILL now,
                // as there is no graceful stop to wait for.
                Err(e) => tracing::warn!(
                    container_id = %record.id,
                    signal,
                    error = %e,
                    "cannot send the stop signal; killing the container"
                ),
            }
        }
        if exited.is_none() {
            match shim.kill(&record.id, "", libc::SIGKILL as u32, true).await {
                Ok(())
                | Err(RuntimeError::NotFound(_))
                | Err(RuntimeError::FailedPrecondition(_)) => {}
                Err(e) => return Err(e),
            }
            // runc 1.1 finds a container's processes in the devices
            // hierarchy alone, which systemd (cgroup v1) may have moved
            // them out of: then its kill --all signals nothing. crust
            // kills what is in the container's cgroup itself.
            if sandbox.foreign_shim && !record.cgroup_path.is_empty() {
                cgroup::kill_all(&record.cgroup_path);
            }
            match shim.wait(&record.id, "", KILL_WAIT).await {
                Ok(exit) => exited = Some(exit),
                // The exit handler recorded the exit and had the shim
                // delete the container while this stop ran (the record
                // above was read before): stopped, then.
                Err(RuntimeError::NotFound(_))
                    if self
                        .store
                        .get::<ContainerRecord>(&record.id)?
                        .is_none_or(|r| r.state == ContainerState::Exited) =>
                {
                    return Ok(());
                }
                Err(e) => return Err(e),
            }
        }
        if let Some((status, at)) = exited {
            self.finalize_exit(&record.id, status, at).await?;
        }
        Ok(())
    }

    /// Records a container's exit once (the event and a Stop may race).
    async fn finalize_exit(
        &self,
        id: &str,
        exit_status: u32,
        exited_at: i64,
    ) -> Result<(), RuntimeError> {
        let lock = self.lock_for(&format!("exit/{id}"));
        let _held = lock.lock().await;
        let Some(mut record) = self.store.get::<ContainerRecord>(id)? else {
            return Ok(());
        };
        if record.state == ContainerState::Exited {
            return Ok(());
        }
        if self
            .require_sandbox(&record.sandbox_id)
            .is_ok_and(|s| s.foreign_shim)
        {
            // Another shim reports the exit before the output is drained
            // (containerd waits for it at Delete): the log writer must
            // have written the last lines before the status says Exited.
            crate::foreign::wait_for_output_drained(Path::new(&record.bundle)).await;
        }
        let oom = record.oom_killed
            || (!record.cgroup_path.is_empty() && cgroup::oom_killed(&record.cgroup_path));
        record.state = ContainerState::Exited;
        record.exit_code = exit_status as i32;
        record.finished_at = if exited_at > 0 {
            exited_at
        } else {
            now_nanos()
        };
        // Never report an exit before the start.
        record.finished_at = record.finished_at.max(record.started_at);
        record.oom_killed = oom;
        record.reason = if oom {
            "OOMKilled".into()
        } else if exit_status == 0 {
            "Completed".into()
        } else {
            "Error".into()
        };
        self.store.put(&record)?;
        self.publish(LifecycleKind::Stopped, id, &record.sandbox_id);
        // The exit is recorded; the shim can free the task.
        if let Ok(sandbox) = self.require_sandbox(&record.sandbox_id)
            && let Ok(shim) = self.shim_for(&sandbox).await
        {
            let _ = shim.delete(id, "").await;
        }
        tracing::info!(container_id = %id, exit_code = record.exit_code, reason = %record.reason, "container exited");
        Ok(())
    }

    /// At start: exits that happened while crustd was down reached no one
    /// (the shim's events went to a dead socket); ask each shim instead.
    pub(crate) async fn reconcile_running(&self) {
        let Ok(containers) = self.store.list::<ContainerRecord>() else {
            return;
        };
        for record in containers
            .into_iter()
            .filter(|c| c.state == ContainerState::Running)
        {
            let Ok(sandbox) = self.require_sandbox(&record.sandbox_id) else {
                continue;
            };
            self.kill_orphaned_execs(&record).await;
            let state = match self.shim_for(&sandbox).await {
                Ok(shim) => shim.state(&record.id).await,
                Err(e) => Err(e),
            };
            let result = match state {
                Ok(s)
                    if s.status.enum_value_or_default()
                        == containerd_shim_protos::api::Status::STOPPED =>
                {
                    let at = s
                        .exited_at
                        .as_ref()
                        .map_or(0, |t| t.seconds * 1_000_000_000 + t.nanos as i64);
                    self.finalize_exit(&record.id, s.exit_status, at).await
                }
                Ok(_) => Ok(()),
                Err(e) => {
                    // The shim is gone, and with it what became of the process.
                    tracing::warn!(container_id = %record.id, error = %e, "container state unknown");
                    let written = self
                        .store
                        .write(|tx| {
                            if let Some(mut r) = tx.get::<ContainerRecord>(&record.id)? {
                                r.state = ContainerState::Unknown;
                                r.message = format!("its shim is unreachable: {e}");
                                tx.put(&r)?;
                            }
                            Ok(())
                        })
                        .map_err(RuntimeError::from);
                    // No longer running: an evented PLEG must look again.
                    if written.is_ok() {
                        self.publish(LifecycleKind::Stopped, &record.id, &record.sandbox_id);
                    }
                    written
                }
            };
            if let Err(e) = result {
                tracing::warn!(container_id = %record.id, error = %e, "cannot reconcile container");
            }
        }
    }

    pub(crate) async fn apply_event(&self, event: &ShimEvent) -> Result<(), RuntimeError> {
        match event {
            ShimEvent::Exit {
                container_id,
                id,
                exit_status,
                exited_at_nanos,
            } if container_id == id || id.is_empty() => {
                // A Start still in flight holds the lock; wait for it.
                let lock = self.lock_for(container_id);
                let _held = lock.lock().await;
                self.finalize_exit(container_id, *exit_status, *exited_at_nanos)
                    .await
            }
            ShimEvent::Oom { container_id } => {
                self.store.write(|tx| {
                    if let Some(mut r) = tx.get::<ContainerRecord>(container_id)? {
                        r.oom_killed = true;
                        tx.put(&r)?;
                    }
                    Ok(())
                })?;
                Ok(())
            }
            _ => Ok(()),
        }
    }

    pub async fn remove_container(&self, id: &str) -> Result<(), RuntimeError> {
        let Some(record) = self.container(id)? else {
            return Ok(());
        };
        self.remove_container_inner(&record).await
    }

    pub(crate) async fn remove_container_inner(
        &self,
        record: &ContainerRecord,
    ) -> Result<(), RuntimeError> {
        self.stop_container_inner(record, 0).await?;
        if let Ok(sandbox) = self.require_sandbox(&record.sandbox_id)
            && let Ok(shim) = self.shim_for(&sandbox).await
        {
            shim.delete(&record.id, "").await?;
        }
        // Deleting the writable layer and volumes is a disk walk.
        crate::blocking(|| self.remove_bundle(record));
        self.store.delete::<ContainerRecord>(&record.id)?;
        self.stats_samples
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&record.id);
        self.publish(LifecycleKind::Deleted, &record.id, &record.sandbox_id);
        Ok(())
    }

    pub fn container_status(
        &self,
        id: &str,
        verbose: bool,
    ) -> Result<cri::ContainerStatusResponse, RuntimeError> {
        let record = self.require_container(id)?;
        let config = record_config(&record);
        let mounts = config.mounts.clone();
        let status = cri::ContainerStatus {
            id: record.id.clone(),
            metadata: config.metadata.clone(),
            state: container_state(&record) as i32,
            created_at: record.created_at,
            started_at: record.started_at,
            finished_at: record.finished_at,
            exit_code: record.exit_code,
            image: Some(cri::ImageSpec {
                image: record.image_ref.clone(),
                ..Default::default()
            }),
            image_ref: record.image_id.clone(),
            reason: record.reason.clone(),
            message: record.message.clone(),
            labels: record.labels.clone().into_iter().collect(),
            annotations: record.annotations.clone().into_iter().collect(),
            mounts,
            log_path: record.log_path.clone(),
            resources: config
                .linux
                .as_ref()
                .and_then(|l| l.resources.clone())
                .map(|r| cri::ContainerResources {
                    linux: Some(r),
                    ..Default::default()
                }),
            image_id: record.image_id.clone(),
            user: std::fs::read(Path::new(&record.bundle).join(crust_shim_proto::bundle::CONFIG))
                .ok()
                .and_then(|b| serde_json::from_slice::<crust_spec::Spec>(&b).ok())
                .and_then(|spec| crust_spec::container_user(&spec)),
            stop_signal: effective_cri_signal(&record.stop_signal) as i32,
        };
        let mut info = HashMap::new();
        if verbose {
            let details = serde_json::json!({
                "pid": record.pid,
                "sandboxID": record.sandbox_id,
                "bundle": record.bundle,
                "cgroupPath": record.cgroup_path,
                "runtimeSpec": std::fs::read(Path::new(&record.bundle).join(crust_shim_proto::bundle::CONFIG))
                    .ok()
                    .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok()),
                "config": record.config,
            });
            info.insert("info".to_string(), details.to_string());
        }
        Ok(cri::ContainerStatusResponse {
            status: Some(status),
            info,
        })
    }

    pub fn list_containers(
        &self,
        filter: Option<&cri::ContainerFilter>,
    ) -> Result<Vec<cri::Container>, RuntimeError> {
        Ok(self
            .store
            .list::<ContainerRecord>()?
            .into_iter()
            .filter(|r| {
                let Some(f) = filter else { return true };
                crate::filter::id_matches(&f.id, &r.id)
                    && crate::filter::id_matches(&f.pod_sandbox_id, &r.sandbox_id)
                    && f.state
                        .as_ref()
                        .is_none_or(|s| s.state == container_state(r) as i32)
                    && crate::filter::labels_match(&f.label_selector, &r.labels)
            })
            .map(|r| {
                let config = record_config(&r);
                cri::Container {
                    id: r.id.clone(),
                    pod_sandbox_id: r.sandbox_id.clone(),
                    metadata: config.metadata,
                    image: Some(cri::ImageSpec {
                        image: r.image_ref.clone(),
                        ..Default::default()
                    }),
                    image_ref: r.image_id.clone(),
                    state: container_state(&r) as i32,
                    created_at: r.created_at,
                    labels: r.labels.clone().into_iter().collect(),
                    annotations: r.annotations.clone().into_iter().collect(),
                    image_id: r.image_id.clone(),
                }
            })
            .collect())
    }

    pub async fn exec_sync(
        &self,
        id: &str,
        cmd: Vec<String>,
        timeout_seconds: i64,
    ) -> Result<ExecOutput, RuntimeError> {
        let exec = self.prepare_exec(id, cmd, false).await?;
        let result = self
            .run_exec(
                &exec.shim,
                &exec.container_id,
                &exec.exec_id,
                &exec.dir,
                exec.process.clone(),
                timeout_seconds,
            )
            .await;
        exec.clean_up().await;
        result
    }

    /// What every exec needs: a running container, its shim, an exec id,
    /// a private dir for the FIFOs and the OCI process (the container's,
    /// with the command).
    pub(crate) async fn prepare_exec(
        &self,
        id: &str,
        cmd: Vec<String>,
        tty: bool,
    ) -> Result<PreparedExec, RuntimeError> {
        if cmd.is_empty() {
            return Err(RuntimeError::InvalidArgument("cmd is required".into()));
        }
        let record = self.require_running(id)?;
        let sandbox = self.require_sandbox(&record.sandbox_id)?;
        let shim = self.shim_for(&sandbox).await?;
        let bundle = Path::new(&record.bundle);
        let spec: serde_json::Value = serde_json::from_slice(&std::fs::read(
            bundle.join(crust_shim_proto::bundle::CONFIG),
        )?)
        .map_err(|e| RuntimeError::Internal(format!("bundle config: {e}")))?;
        let mut process = spec["process"].clone();
        process["args"] = serde_json::json!(cmd);
        process["terminal"] = serde_json::json!(tty);
        if tty {
            add_default_term(&mut process);
        }
        let exec_id = format!("{}{}", self.exec_prefix, &new_id()?[..16]);
        let dir = bundle.join("execs").join(&exec_id);
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&dir)?;
        Ok(PreparedExec {
            shim,
            container_id: record.id,
            exec_id,
            dir,
            process,
        })
    }

    async fn run_exec(
        &self,
        shim: &crate::shim::Shim,
        id: &str,
        exec_id: &str,
        dir: &Path,
        process: serde_json::Value,
        timeout_seconds: i64,
    ) -> Result<ExecOutput, RuntimeError> {
        let (out_path, err_path) = (dir.join("stdout"), dir.join("stderr"));
        for p in [&out_path, &err_path] {
            crate::stream::make_fifo(p)?;
        }
        // Open the read ends first so the shim's open for writing succeeds.
        let stdout = tokio::net::unix::pipe::OpenOptions::new().open_receiver(&out_path)?;
        let stderr = tokio::net::unix::pipe::OpenOptions::new().open_receiver(&err_path)?;
        let json =
            serde_json::to_vec(&process).map_err(|e| RuntimeError::Internal(e.to_string()))?;
        let stdio = crate::shim::Stdio {
            stdout: out_path.display().to_string(),
            stderr: err_path.display().to_string(),
            ..Default::default()
        };
        let budget = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(EXEC_OUTPUT_LIMIT));
        // The request's timeout bounds the whole exec, the shim's Exec and
        // Start included: a shim slow to start the process answers
        // DeadlineExceeded at the caller's deadline, not at the 30 s shim
        // call limit.
        let collect = async {
            shim.exec(id, exec_id, json, &stdio).await?;
            shim.start_process(id, exec_id).await?;
            let (a, b) = tokio::join!(
                read_capped(stdout, budget.clone()),
                read_capped(stderr, budget.clone())
            );
            let (code, _) = shim
                .wait(id, exec_id, Duration::from_secs(24 * 3600))
                .await?;
            Ok::<_, RuntimeError>((a, b, code))
        };
        let outcome = if timeout_seconds > 0 {
            match tokio::time::timeout(Duration::from_secs(timeout_seconds as u64), collect).await {
                Ok(r) => r?,
                Err(_) => {
                    let _ = shim.kill(id, exec_id, libc::SIGKILL as u32, false).await;
                    return Err(RuntimeError::DeadlineExceeded(format!(
                        "command timed out after {timeout_seconds}s and was killed"
                    )));
                }
            }
        } else {
            collect.await?
        };
        Ok(ExecOutput {
            stdout: outcome.0,
            stderr: outcome.1,
            exit_code: outcome.2 as i32,
        })
    }

    /// Reads a container's cgroup usage and writable layer (a disk walk:
    /// call it off the async workers). The CPU rate is from this
    /// container's previous reading, which this one replaces.
    pub fn container_stats(&self, id: &str) -> Result<cri::ContainerStats, RuntimeError> {
        let record = self.require_container(id)?;
        let usage = self.usage_of(&record);
        let now = now_nanos();
        let sample = StatsSample {
            at_nanos: now,
            cpu_nanos: usage.cpu_usage_nanos,
        };
        let previous = {
            let mut samples = self.stats_samples.lock().unwrap_or_else(|e| e.into_inner());
            samples
                .insert(record.id.clone(), sample)
                .or_else(|| first_sample(&record))
        };
        let nano_cores = previous.and_then(|p| sample.nano_cores_since(p));
        let upper = self.images.snapshots().upper_dir(&record.id);
        let mut layer = crust_snapshot::dir_usage(&upper).unwrap_or_default();
        // Image VOLUME dirs are the container's writes too.
        let volumes = self.volumes_dir(&record.id);
        if volumes.exists() {
            let v = crust_snapshot::dir_usage(&volumes).unwrap_or_default();
            layer.bytes += v.bytes;
            layer.inodes += v.inodes;
        }
        let config = record_config(&record);
        let value = |v: u64| Some(cri::UInt64Value { value: v });
        let psi = cgroup::pressures(&record.cgroup_path);
        let stats = cri::ContainerStats {
            attributes: Some(cri::ContainerAttributes {
                id: record.id.clone(),
                metadata: config.metadata,
                labels: record.labels.clone().into_iter().collect(),
                annotations: record.annotations.clone().into_iter().collect(),
            }),
            cpu: Some(cri::CpuUsage {
                timestamp: now,
                usage_core_nano_seconds: value(usage.cpu_usage_nanos),
                usage_nano_cores: nano_cores.and_then(value),
                psi: psi.cpu.map(psi_stats),
            }),
            memory: Some(cri::MemoryUsage {
                timestamp: now,
                working_set_bytes: value(usage.memory_working_set),
                usage_bytes: value(usage.memory_usage),
                rss_bytes: value(usage.memory_rss),
                page_faults: value(usage.page_faults),
                major_page_faults: value(usage.major_page_faults),
                psi: psi.memory.map(psi_stats),
                ..Default::default()
            }),
            io: io_usage(now, &psi),
            writable_layer: Some(cri::FilesystemUsage {
                timestamp: now,
                fs_id: Some(cri::FilesystemIdentifier {
                    mountpoint: self
                        .images
                        .snapshots()
                        .container_root()
                        .display()
                        .to_string(),
                }),
                used_bytes: value(layer.bytes),
                inodes_used: value(layer.inodes),
            }),
            ..Default::default()
        };
        Ok(stats)
    }

    pub fn container_ids(
        &self,
        filter: Option<&cri::ContainerStatsFilter>,
    ) -> Result<Vec<String>, RuntimeError> {
        Ok(self
            .store
            .select::<ContainerRecord>(|r| {
                let Some(f) = filter else { return true };
                crate::filter::id_matches(&f.id, &r.id)
                    && crate::filter::id_matches(&f.pod_sandbox_id, &r.sandbox_id)
                    && crate::filter::labels_match(&f.label_selector, &r.labels)
            })
            .into_iter()
            .map(|r| r.id)
            .collect())
    }

    pub async fn update_container_resources(
        &self,
        id: &str,
        resources: &cri::LinuxContainerResources,
    ) -> Result<(), RuntimeError> {
        let record = self.require_container(id)?;
        if record.state != ContainerState::Running && record.state != ContainerState::Created {
            return Err(RuntimeError::FailedPrecondition(format!(
                "container {} has exited",
                record.id
            )));
        }
        // The same checks as CreateContainer's (a `unified` key is joined
        // onto the cgroup path by libcgroups: `/etc/passwd` or `../x`
        // would write a host file).
        crust_spec::check_container_resources(resources)?;
        // Held against a concurrent UpdatePodSandboxResources.
        let lock = self.lock_for(&record.sandbox_id);
        let _held = lock.lock().await;
        let sandbox = self.require_sandbox(&record.sandbox_id)?;
        if let Some(c) = crust_spec::memory_limit(resources)
            && sandbox.pod_memory_limit > 0
            && c > sandbox.pod_memory_limit
        {
            return Err(RuntimeError::FailedPrecondition(format!(
                "memory limit {c} is above pod {}'s limit {}: grow the pod first \
                 (UpdatePodSandboxResources)",
                sandbox.id, sandbox.pod_memory_limit
            )));
        }
        if let Some(c) = crust_spec::cpu_millis(resources)
            && sandbox.pod_cpu_millis > 0
            && c > sandbox.pod_cpu_millis
        {
            return Err(RuntimeError::FailedPrecondition(format!(
                "CPU limit {c}m is above pod {}'s limit {}m: grow the pod first \
                 (UpdatePodSandboxResources)",
                sandbox.id, sandbox.pod_cpu_millis
            )));
        }
        let json = serde_json::to_vec(&oci_resources(resources))
            .map_err(|e| RuntimeError::Internal(e.to_string()))?;
        if record.state == ContainerState::Running {
            self.shim_for(&sandbox)
                .await?
                .update(&record.id, json)
                .await?;
        }
        // Keep the config in step so status and later starts see the change.
        self.store.write(|tx| {
            if let Some(mut r) = tx.get::<ContainerRecord>(&record.id)? {
                let mut config = record_config(&r);
                config.linux.get_or_insert_with(Default::default).resources =
                    Some(resources.clone());
                r.config = serde_json::to_value(&config).unwrap_or_default();
                tx.put(&r)?;
            }
            Ok(())
        })?;
        Ok(())
    }

    pub async fn reopen_container_log(&self, id: &str) -> Result<(), RuntimeError> {
        let record = self.require_running(id)?;
        let sandbox = self.require_sandbox(&record.sandbox_id)?;
        if !record.log_path.is_empty()
            && std::fs::symlink_metadata(&record.log_path).is_ok_and(|m| !m.is_file())
        {
            return Err(RuntimeError::FailedPrecondition(format!(
                "{} is not a plain file (a symlink?); the log is not reopened there",
                record.log_path
            )));
        }
        if sandbox.foreign_shim {
            // The container's own log writer reopens it.
            let bundle = Path::new(&record.bundle);
            crate::foreign::reopen_log(bundle)?;
            return self.wait_for_reopened_log(&record).await.map_err(|e| {
                RuntimeError::Internal(format!("{e}{}", crate::foreign::logger_errors(bundle)))
            });
        }
        // The shim reopens every log file of its pod on SIGUSR1: signalled
        // only if it is still the process recorded (never pid 0, never a
        // process that reused its pid). A pod recorded without the shim's
        // start time asks the connected shim for its pid instead.
        let (pid, started) = if sandbox.shim_pid > 0 && sandbox.shim_start_time > 0 {
            (sandbox.shim_pid, sandbox.shim_start_time)
        } else {
            let pid = self.shim_for(&sandbox).await?.pid(&sandbox.id).await?;
            (pid, crate::process::start_time(pid).unwrap_or(0))
        };
        crate::process::signal_if_same(pid, started, nix::sys::signal::Signal::SIGUSR1)
            .map_err(|e| RuntimeError::Internal(format!("reopening the log: {e}")))?;
        self.wait_for_reopened_log(&record).await
    }

    /// Answers once the log was reopened: kubelet (and the conformance
    /// suite) look for the new file as soon as ReopenContainerLog returns.
    /// Only a plain file counts: the writers refuse to open a symlink.
    async fn wait_for_reopened_log(&self, record: &ContainerRecord) -> Result<(), RuntimeError> {
        if !record.log_path.is_empty() {
            let path = Path::new(&record.log_path);
            let deadline = tokio::time::Instant::now() + LOG_REOPEN_WAIT;
            while !std::fs::symlink_metadata(path).is_ok_and(|m| m.is_file()) {
                if tokio::time::Instant::now() >= deadline {
                    return Err(RuntimeError::Internal(format!(
                        "the shim did not reopen {} within {LOG_REOPEN_WAIT:?}",
                        record.log_path
                    )));
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }
        Ok(())
    }

    /// A container's CPU and memory usage: from its cgroup, or, under
    /// another shim, from that shim's Stats (a shim whose containers run
    /// in a VM has the only view of them), the cgroup when that fails.
    /// Blocks: called on the blocking pool.
    fn usage_of(&self, record: &ContainerRecord) -> cgroup::Usage {
        let Some(sandbox) = self
            .require_sandbox(&record.sandbox_id)
            .ok()
            .filter(|s| s.foreign_shim)
        else {
            return cgroup::usage(&record.cgroup_path);
        };
        if record.state != ContainerState::Running {
            return cgroup::usage(&record.cgroup_path);
        }
        let from_shim = tokio::runtime::Handle::current().block_on(async {
            let stats = self.shim_for(&sandbox).await?.stats(&record.id).await?;
            crate::foreign::usage_from_metrics(&stats).map_err(RuntimeError::Shim)
        });
        from_shim.unwrap_or_else(|e| {
            tracing::debug!(container_id = %record.id, error = %e, "shim Stats failed; reading the cgroup");
            cgroup::usage(&record.cgroup_path)
        })
    }

    /// Waits briefly for the pod's sandbox cgroup usage (pod stats).
    pub fn pod_usage(&self, pod_id: &str) -> Result<(SandboxRecord, cgroup::Usage), RuntimeError> {
        let sandbox = self.require_sandbox(pod_id)?;
        let usage = if sandbox.cgroup_parent.is_empty() {
            let mut total = cgroup::Usage::default();
            for c in self.containers_of(&sandbox.id)? {
                let u = cgroup::usage(&c.cgroup_path);
                total.cpu_usage_nanos += u.cpu_usage_nanos;
                total.memory_usage += u.memory_usage;
                total.memory_working_set += u.memory_working_set;
                total.memory_rss += u.memory_rss;
                total.page_faults += u.page_faults;
                total.major_page_faults += u.major_page_faults;
            }
            total
        } else {
            cgroup::usage(&sandbox.cgroup_parent)
        };
        Ok((sandbox, usage))
    }
}

/// A bind mount's host path that does not exist is made a directory
/// (0755), as containerd and CRI-O do (Docker's behaviour, which kubelet
/// relies on for hostPath volumes without a type). Only plain absolute
/// paths: anything else is left for crust-spec to refuse with its reason.
fn create_missing_host_paths(config: &cri::ContainerConfig) -> Result<(), RuntimeError> {
    for m in &config.mounts {
        if m.image.is_some() || m.host_path.is_empty() {
            continue;
        }
        let path = Path::new(&m.host_path);
        let plain = path.is_absolute()
            && !m.host_path.contains('\0')
            && path
                .components()
                .all(|c| !matches!(c, std::path::Component::ParentDir));
        if !plain || std::fs::symlink_metadata(path).is_ok() {
            continue;
        }
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o755)
            .create(path)
            .map_err(|e| {
                RuntimeError::InvalidArgument(format!(
                    "mount host_path {}: it does not exist and cannot be created: {e}",
                    m.host_path
                ))
            })?;
        tracing::info!(host_path = %m.host_path, "created a missing host path for a bind mount");
    }
    Ok(())
}

/// CRI's shape of one resource's PSI.
pub fn psi_stats(p: cgroup::Pressure) -> cri::PsiStats {
    let data = |l: cgroup::PressureLine| cri::PsiData {
        total: l.total_nanos,
        avg10: l.avg10,
        avg60: l.avg60,
        avg300: l.avg300,
    };
    cri::PsiStats {
        full: Some(data(p.full)),
        some: Some(data(p.some)),
    }
}

/// CRI's IoUsage holds only PSI: none where the cgroup has no io.pressure.
pub fn io_usage(timestamp: i64, psi: &cgroup::Pressures) -> Option<cri::IoUsage> {
    psi.io.map(|p| cri::IoUsage {
        timestamp,
        psi: Some(psi_stats(p)),
    })
}

/// Checks CRI's `log_path` (relative to the pod's log directory: plain
/// names only, no `..`, `.`, empty or absolute components) and creates its
/// parent dirs one at a time from the log directory's fd, each made with
/// mkdirat and opened with O_NOFOLLOW|O_DIRECTORY, so a symlink planted in
/// the log directory is refused, never followed. Returns the joined path.
fn prepare_log_path(log_directory: &str, log_path: &str) -> Result<PathBuf, RuntimeError> {
    use nix::fcntl::{AtFlags, OFlag};
    use nix::sys::stat::{FileStat, Mode, SFlag};
    let invalid =
        |why: String| RuntimeError::InvalidArgument(format!("log_path {log_path:?}: {why}"));
    if log_path.starts_with('/') {
        return Err(invalid(
            "must be relative to the pod's log directory".into(),
        ));
    }
    let parts: Vec<&str> = log_path.split('/').collect();
    if let Some(bad) = parts
        .iter()
        .find(|p| p.is_empty() || **p == "." || **p == ".." || p.contains('\0'))
    {
        return Err(invalid(format!(
            "component {bad:?} is not allowed (want names separated by single slashes)"
        )));
    }
    let (name, parents) = parts.split_last().expect("split yields one part at least");
    // The log directory itself is the CRI client's (kubelet's), trusted.
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o755)
        .create(log_directory)?;
    let open = |dir: Option<&std::os::fd::OwnedFd>, name: &str| {
        use std::os::fd::{AsRawFd, FromRawFd};
        let flags = OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC;
        let fd = match dir {
            None => nix::fcntl::open(name, flags, Mode::empty()),
            Some(d) => nix::fcntl::openat(
                Some(d.as_raw_fd()),
                name,
                flags | OFlag::O_NOFOLLOW,
                Mode::empty(),
            ),
        }?;
        // SAFETY: a new fd, owned by nothing else.
        Ok::<_, nix::Error>(unsafe { std::os::fd::OwnedFd::from_raw_fd(fd) })
    };
    let mut dir = open(None, log_directory)
        .map_err(|e| RuntimeError::Internal(format!("open log directory {log_directory}: {e}")))?;
    for part in parents {
        use std::os::fd::AsRawFd;
        match nix::sys::stat::mkdirat(
            Some(dir.as_raw_fd()),
            *part,
            Mode::from_bits_truncate(0o755),
        ) {
            Ok(()) | Err(nix::Error::EEXIST) => {}
            Err(e) => return Err(RuntimeError::Internal(format!("creating {part:?}: {e}"))),
        }
        dir = open(Some(&dir), part).map_err(|e| match e {
            nix::Error::ELOOP | nix::Error::ENOTDIR => {
                invalid(format!("{part:?} is not a directory (a symlink?)"))
            }
            e => RuntimeError::Internal(format!("opening {part:?}: {e}")),
        })?;
    }
    use std::os::fd::AsRawFd;
    let is_file =
        |st: FileStat| SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT == SFlag::S_IFREG;
    match nix::sys::stat::fstatat(Some(dir.as_raw_fd()), *name, AtFlags::AT_SYMLINK_NOFOLLOW) {
        Ok(st) if !is_file(st) => {
            return Err(invalid(
                "exists and is not a plain file (a symlink?)".into(),
            ));
        }
        _ => {}
    }
    Ok(Path::new(log_directory).join(log_path))
}

/// The log path handed to the shim: the pod's log directory with its own
/// (trusted) symlinks resolved, then CRI's relative log path, so the shim
/// can refuse a symlink at every component.
fn shim_log_path(sandbox: &SandboxRecord, record: &ContainerRecord) -> PathBuf {
    let relative = record_config(record).log_path;
    match std::fs::canonicalize(&sandbox.log_directory) {
        Ok(dir) if !relative.is_empty() && !sandbox.log_directory.is_empty() => dir.join(relative),
        _ => PathBuf::from(&record.log_path),
    }
}

/// An exec about to start; [`PreparedExec::clean_up`] removes it from the
/// shim and its FIFOs from disk.
pub(crate) struct PreparedExec {
    pub shim: crate::shim::Shim,
    pub container_id: String,
    pub exec_id: String,
    pub dir: PathBuf,
    pub process: serde_json::Value,
}

impl PreparedExec {
    pub async fn clean_up(&self) {
        let _ = self.shim.delete(&self.container_id, &self.exec_id).await;
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A terminal session needs a terminal type; containerd sets the same
/// when the process has none.
fn add_default_term(process: &mut serde_json::Value) {
    let env = process["env"].as_array().cloned().unwrap_or_default();
    if !env
        .iter()
        .any(|e| e.as_str().is_some_and(|e| e.starts_with("TERM=")))
    {
        let mut env = env;
        env.push(serde_json::json!("TERM=xterm"));
        process["env"] = serde_json::Value::Array(env);
    }
}

/// Reads a pipe to EOF, keeping at most what `budget` still allows.
async fn read_capped(
    mut pipe: tokio::net::unix::pipe::Receiver,
    budget: std::sync::Arc<std::sync::atomic::AtomicUsize>,
) -> Vec<u8> {
    use std::sync::atomic::Ordering;
    let mut out = Vec::new();
    let mut buf = vec![0u8; 64 * 1024];
    let started = Instant::now();
    loop {
        match pipe.read(&mut buf).await {
            Ok(0) => break,
            Ok(n) => {
                let allowed = budget
                    .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |left| {
                        Some(left.saturating_sub(n))
                    })
                    .unwrap_or(0)
                    .min(n);
                out.extend_from_slice(&buf[..allowed]);
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
            Err(_) => break,
        }
    }
    tracing::trace!(
        bytes = out.len(),
        seconds = started.elapsed().as_secs_f64(),
        "exec output read"
    );
    out
}

/// CRI resources as OCI LinuxResources JSON, for Update.
fn oci_resources(r: &cri::LinuxContainerResources) -> serde_json::Value {
    let mut cpu = serde_json::Map::new();
    if r.cpu_shares > 0 {
        cpu.insert("shares".into(), r.cpu_shares.into());
    }
    if r.cpu_quota != 0 {
        cpu.insert("quota".into(), r.cpu_quota.into());
    }
    if r.cpu_period > 0 {
        cpu.insert("period".into(), r.cpu_period.into());
    }
    if !r.cpuset_cpus.is_empty() {
        cpu.insert("cpus".into(), r.cpuset_cpus.clone().into());
    }
    if !r.cpuset_mems.is_empty() {
        cpu.insert("mems".into(), r.cpuset_mems.clone().into());
    }
    let mut memory = serde_json::Map::new();
    if r.memory_limit_in_bytes > 0 {
        memory.insert("limit".into(), r.memory_limit_in_bytes.into());
        let swap = if r.memory_swap_limit_in_bytes > 0 {
            r.memory_swap_limit_in_bytes
        } else {
            r.memory_limit_in_bytes
        };
        memory.insert("swap".into(), swap.into());
    }
    let mut out = serde_json::json!({ "cpu": cpu, "memory": memory });
    if !r.unified.is_empty() {
        out["unified"] = serde_json::json!(r.unified);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_rate_comes_from_the_previous_sample_or_the_start() {
        let at = |secs: i64, cpu_ms: u64| StatsSample {
            at_nanos: secs * 1_000_000_000,
            cpu_nanos: cpu_ms * 1_000_000,
        };
        // 500 ms of CPU over 2 s: a quarter of a core.
        assert_eq!(
            at(12, 1500).nano_cores_since(at(10, 1000)),
            Some(250_000_000)
        );
        // No interval (same instant, clock stepped back, counter reset).
        assert_eq!(at(10, 1000).nano_cores_since(at(10, 900)), None);
        assert_eq!(at(9, 1000).nano_cores_since(at(10, 900)), None);
        assert_eq!(at(12, 100).nano_cores_since(at(10, 900)), None);
        // Without a previous reading: from the start, at zero CPU.
        let started = ContainerRecord {
            started_at: 10_000_000_000,
            ..Default::default()
        };
        assert_eq!(first_sample(&started), Some(at(10, 0)));
        assert_eq!(first_sample(&ContainerRecord::default()), None);
    }

    #[test]
    fn stop_signals_by_name_and_number() {
        assert_eq!(signal_number(""), libc::SIGTERM as u32);
        assert_eq!(signal_number("SIGUSR1"), libc::SIGUSR1 as u32);
        assert_eq!(signal_number("usr1"), libc::SIGUSR1 as u32);
        assert_eq!(signal_number("9"), 9);
        assert_eq!(signal_number("SIGNOPE"), libc::SIGTERM as u32);
        assert_eq!(signal_number("64"), 64);
        assert_eq!(signal_number("SIGRTMIN+2"), libc::SIGRTMIN() as u32 + 2);
        assert_eq!(signal_number("RTMAX"), libc::SIGRTMAX() as u32);
        // Numbers the kernel has no signal for: SIGTERM, never sent as is.
        for bad in ["0", "65", "4294967295", "-1", "RTMIN+99", "RTMAX-99", "SIG"] {
            assert_eq!(signal_number(bad), libc::SIGTERM as u32, "{bad}");
        }
    }

    #[test]
    fn cri_stop_signals_round_trip_through_the_recorded_name() {
        assert_eq!(requested_stop_signal(0).unwrap(), None);
        assert!(requested_stop_signal(66).is_err());
        for v in 1..=65 {
            let name = requested_stop_signal(v).unwrap().unwrap();
            let signal = cri::Signal::try_from(v).unwrap();
            let back = effective_cri_signal(&name);
            // Aliases (SIGIOT = SIGABRT, SIGCLD = SIGCHLD, SIGPOLL = SIGIO)
            // report the kernel's canonical name.
            assert_eq!(
                signal_number(&name),
                signal_number(&requested_stop_signal(back as i32).unwrap().unwrap()),
                "{signal:?} -> {name} -> {back:?}"
            );
        }
        assert_eq!(effective_cri_signal(""), cri::Signal::Sigterm);
        assert_eq!(effective_cri_signal("SIGUSR1"), cri::Signal::Sigusr1);
        assert_eq!(effective_cri_signal("RTMIN+3"), cri::Signal::Sigrtminplus3);
        assert_eq!(
            effective_cri_signal("SIGRTMAX-2"),
            cri::Signal::Sigrtmaxminus2
        );
    }

    #[test]
    fn image_stop_signal_is_checked_at_create() {
        assert_eq!(checked_stop_signal("img", "SIGUSR1"), "SIGUSR1");
        assert_eq!(checked_stop_signal("img", " 15 "), "15");
        assert_eq!(checked_stop_signal("img", ""), "");
        for bad in ["65", "0", "SIGNOPE", "RTMIN+40", "9999999999999"] {
            assert_eq!(checked_stop_signal("img", bad), "", "{bad}");
        }
    }

    #[test]
    fn log_paths_stay_in_the_log_directory() {
        let dir = tempfile::tempdir().unwrap();
        let logs = dir.path().join("logs");
        let logs_str = logs.to_str().unwrap();
        for bad in [
            "../escape.log",
            "/tmp/x.log",
            "a/../../x.log",
            "a//b.log",
            "./a.log",
            "a/",
            "",
            "a/\0b",
        ] {
            let err = prepare_log_path(logs_str, bad).unwrap_err();
            assert!(
                matches!(err, RuntimeError::InvalidArgument(_)),
                "{bad:?}: {err}"
            );
        }
        assert!(!dir.path().join("escape.log").exists());
        assert_eq!(
            prepare_log_path(logs_str, "c/0.log").unwrap(),
            logs.join("c/0.log")
        );
        assert!(logs.join("c").is_dir());
        // A parent planted as a symlink is not followed, nor created through.
        let outside = dir.path().join("outside");
        std::fs::create_dir(&outside).unwrap();
        std::os::unix::fs::symlink(&outside, logs.join("evil")).unwrap();
        let err = prepare_log_path(logs_str, "evil/sub/0.log").unwrap_err();
        assert!(matches!(err, RuntimeError::InvalidArgument(_)), "{err}");
        assert!(!outside.join("sub").exists());
        // Nor is a symlink at the file.
        std::os::unix::fs::symlink("/etc/passwd", logs.join("c/1.log")).unwrap();
        let err = prepare_log_path(logs_str, "c/1.log").unwrap_err();
        assert!(matches!(err, RuntimeError::InvalidArgument(_)), "{err}");
    }

    #[test]
    fn resources_translate_to_oci() {
        let r = cri::LinuxContainerResources {
            cpu_shares: 512,
            cpu_quota: 50000,
            cpu_period: 100000,
            memory_limit_in_bytes: 64 << 20,
            ..Default::default()
        };
        let json = oci_resources(&r);
        assert_eq!(json["cpu"]["shares"], 512);
        assert_eq!(json["cpu"]["quota"], 50000);
        assert_eq!(json["memory"]["limit"], 64 << 20);
        assert_eq!(json["memory"]["swap"], 64 << 20);
    }
}
