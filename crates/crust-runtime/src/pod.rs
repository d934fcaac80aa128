//! Pod sandboxes: RunPodSandbox, StopPodSandbox, RemovePodSandbox,
//! PodSandboxStatus and ListPodSandbox.

use std::collections::HashMap;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};

use crust_cri_api::v1 as cri;
use nix::mount::{MntFlags, MsFlags, mount, umount2};

use crust_store::{ContainerRecord, SandboxRecord, SandboxState};

use crate::lifecycle::LifecycleKind;
use crate::namespaces::{self, NamespaceSet, PinnedNamespaces};
use crate::shim::{self, Shim};
use crate::{Pods, RuntimeError, cgroup, files, new_id, now_nanos};

/// Size of a pod's /dev/shm, as Docker and containerd default to.
const SHM_SIZE: &str = "size=65536k";

fn namespace_mode(config: &cri::PodSandboxConfig) -> (i32, i32, i32) {
    let options = config
        .linux
        .as_ref()
        .and_then(|l| l.security_context.as_ref())
        .and_then(|s| s.namespace_options.as_ref());
    options.map_or((0, 0, 0), |o| (o.network, o.pid, o.ipc))
}

fn is_node(mode: i32) -> bool {
    mode == cri::NamespaceMode::Node as i32
}

/// The unique name kubelet's metadata gives a pod.
fn pod_name(meta: &cri::PodSandboxMetadata) -> String {
    format!(
        "{}_{}_{}_{}",
        meta.name, meta.namespace, meta.uid, meta.attempt
    )
}

fn validate(config: &cri::PodSandboxConfig) -> Result<&cri::PodSandboxMetadata, RuntimeError> {
    let meta = config
        .metadata
        .as_ref()
        .ok_or_else(|| RuntimeError::InvalidArgument("config.metadata is required".into()))?;
    for (field, value) in [
        ("name", &meta.name),
        ("namespace", &meta.namespace),
        ("uid", &meta.uid),
    ] {
        if value.is_empty() {
            return Err(RuntimeError::InvalidArgument(format!(
                "config.metadata.{field} is required"
            )));
        }
        if value.contains('/') || value.chars().any(|c| c.is_control()) {
            return Err(RuntimeError::InvalidArgument(format!(
                "config.metadata.{field} {value:?} may not contain '/' or control characters"
            )));
        }
    }
    if config.hostname.len() > 253 || config.hostname.chars().any(|c| c.is_control() || c == '/') {
        return Err(RuntimeError::InvalidArgument(format!(
            "config.hostname {:?} is not a valid host name",
            config.hostname
        )));
    }
    files::validate_dns(config.dns_config.as_ref()).map_err(RuntimeError::InvalidArgument)?;
    if let Some(linux) = &config.linux {
        crust_spec::check_cgroup_parent(&linux.cgroup_parent)?;
    }
    // Unsafe sysctls fail the pod, not only its containers later.
    crust_spec::check_pod_sysctls(config)?;
    // So do bad user namespace mappings (hostUsers: false).
    crate::userns::mappings(config)?;
    if let Some(mapping) = config
        .port_mappings
        .iter()
        .find(|p| p.container_port <= 0 || p.container_port > 65535)
    {
        return Err(RuntimeError::InvalidArgument(format!(
            "port mapping container_port {} is out of range",
            mapping.container_port
        )));
    }
    Ok(meta)
}

impl Pods {
    pub(crate) fn sandbox(
        &self,
        id_or_prefix: &str,
    ) -> Result<Option<SandboxRecord>, RuntimeError> {
        crate::lookup(&self.store, id_or_prefix, "pod sandbox")
    }

    pub(crate) fn require_sandbox(&self, id: &str) -> Result<SandboxRecord, RuntimeError> {
        self.sandbox(id)?
            .ok_or_else(|| RuntimeError::NotFound(format!("pod sandbox {id:?} not found")))
    }

    /// The runtime options a foreign handler's shim gets (runc's, with
    /// SystemdCgroup following crust's own cgroup driver).
    pub(crate) fn shim_options(
        &self,
        handler: &crust_config::HandlerConfig,
    ) -> Result<Option<containerd_shim_protos::protobuf::well_known_types::any::Any>, RuntimeError>
    {
        crate::foreign::options_any(
            handler,
            self.cgroup_driver == crust_config::CgroupDriver::Systemd,
        )
    }

    /// The configured handler a pod runs under.
    pub(crate) fn handler_of(
        &self,
        sandbox: &SandboxRecord,
    ) -> Result<&crust_config::HandlerConfig, RuntimeError> {
        self.config
            .handler(&sandbox.runtime_handler)
            .map(|(_, h)| h)
            .ok_or_else(|| {
                RuntimeError::FailedPrecondition(format!(
                    "pod {} runs under runtime handler {:?}, which is no longer configured; add it back to runtime.handlers",
                    sandbox.id, sandbox.runtime_handler
                ))
            })
    }

    pub(crate) async fn shim_for(&self, sandbox: &SandboxRecord) -> Result<Shim, RuntimeError> {
        let mut shims = self.shims.lock().await;
        if let Some(shim) = shims.get(&sandbox.id) {
            return Ok(shim.clone());
        }
        // After a crustd restart: the shim kept running; reconnect.
        let api = shim::TaskApi::from_number(sandbox.shim_task_api);
        let shim = Shim::connect(&sandbox.shim_address, api).await?;
        shims.insert(sandbox.id.clone(), shim.clone());
        Ok(shim)
    }

    pub async fn run_pod_sandbox(
        &self,
        config: cri::PodSandboxConfig,
        handler: &str,
    ) -> Result<String, RuntimeError> {
        let meta = validate(&config)?;
        let name = pod_name(meta);
        let (handler_name, handler_config) = self.config.handler(handler).ok_or_else(|| {
            RuntimeError::InvalidArgument(format!(
                "runtime handler {handler:?} is not configured (known: {})",
                self.config
                    .runtime
                    .handlers
                    .keys()
                    .cloned()
                    .collect::<Vec<_>>()
                    .join(", ")
            ))
        })?;
        let shim_binary = shim::resolve_binary(&handler_config.shim)?;
        if crate::userns::mappings(&config)?.is_some() {
            if crate::foreign::is_foreign(handler_config) {
                return Err(RuntimeError::FailedPrecondition(format!(
                    "runtime handler {handler_name:?} ({}) does not run pods with their own user namespace (hostUsers: false); crust-shim does",
                    handler_config.shim
                )));
            }
            self.user_namespaces().map_err(|reason| {
                RuntimeError::FailedPrecondition(format!(
                    "this node cannot run pods with their own user namespace (hostUsers: false): {reason}"
                ))
            })?;
        }
        let lock = self.lock_for(&name);
        let _held = lock.lock().await;
        if let Some(holder) = self.store.by_name::<SandboxRecord>(&name) {
            return Err(RuntimeError::AlreadyExists(format!(
                "pod sandbox name {name:?} is already in use by pod {}; remove it first",
                holder.id
            )));
        }
        let id = new_id()?;
        let dir = self.config.state.join("pods").join(&id);
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&dir)?;
        let mut record = SandboxRecord {
            id: id.clone(),
            name,
            namespace: meta.namespace.clone(),
            uid: meta.uid.clone(),
            attempt: meta.attempt,
            state: SandboxState::Ready,
            created_at: now_nanos(),
            runtime_handler: handler_name.to_string(),
            labels: config.labels.clone().into_iter().collect(),
            annotations: config.annotations.clone().into_iter().collect(),
            state_dir: dir.display().to_string(),
            log_directory: config.log_directory.clone(),
            config: serde_json::to_value(&config).unwrap_or_default(),
            ..Default::default()
        };
        match self
            .set_up_pod(&config, &dir, &shim_binary, handler_config, &mut record)
            .await
        {
            Ok(()) => {
                self.store.put(&record)?;
                self.publish(LifecycleKind::Created, &id, &id);
                self.publish(LifecycleKind::Started, &id, &id);
                tracing::info!(pod_id = %id, pod = %record.name, "pod sandbox ready");
                Ok(id)
            }
            Err(e) => {
                // Leave nothing half-made behind.
                self.tear_down_pod(&record).await;
                Err(e)
            }
        }
    }

    async fn set_up_pod(
        &self,
        config: &cri::PodSandboxConfig,
        dir: &Path,
        shim_binary: &Path,
        handler: &crust_config::HandlerConfig,
        record: &mut SandboxRecord,
    ) -> Result<(), RuntimeError> {
        let (network, pid, ipc) = namespace_mode(config);
        let host_network = is_node(network);
        let host_ipc = is_node(ipc);
        record.hostname = if host_network {
            nix::unistd::gethostname()
                .map(|h| h.to_string_lossy().to_string())
                .unwrap_or_default()
        } else {
            config.hostname.clone()
        };
        let wanted = NamespaceSet {
            net: !host_network,
            ipc: !host_ipc,
            uts: !host_network,
        };
        let userns = crate::userns::mappings(config)?;
        let pinned = match &userns {
            Some(maps) => {
                crate::userns::open_state_dirs(&self.config.state)?;
                crate::userns::open_dir_to_pod(dir, maps)?;
                namespaces::create_in_user_namespace(
                    &dir.join("ns"),
                    wanted,
                    &record.hostname,
                    &maps.uid_map(),
                    &maps.gid_map(),
                )
            }
            None => namespaces::create(&dir.join("ns"), wanted, &record.hostname),
        }
        .map_err(|e| RuntimeError::Internal(e.to_string()))?;
        let path = |p: &Option<PathBuf>| {
            p.as_ref()
                .map(|p| p.display().to_string())
                .unwrap_or_default()
        };
        record.netns = path(&pinned.net);
        record.ipcns = path(&pinned.ipc);
        record.utsns = path(&pinned.uts);
        record.userns = path(&pinned.user);
        let files = [
            files::write(
                dir,
                "resolv.conf",
                &files::resolv_conf(config.dns_config.as_ref())?,
            )?,
            files::write(dir, "hosts", &files::hosts(&record.hostname))?,
            files::write(dir, "hostname", &format!("{}\n", record.hostname))?,
        ];
        if let Some(maps) = &userns {
            // The pod's root may edit them, as root can in any pod.
            for f in &files {
                crate::userns::give_to_pod(f, maps)?;
            }
        }
        if !host_ipc {
            let shm = dir.join("shm");
            std::fs::create_dir_all(&shm)?;
            let options = match &userns {
                Some(maps) => {
                    let (uid, gid) = maps.host_root();
                    format!("{SHM_SIZE},uid={uid},gid={gid}")
                }
                None => SHM_SIZE.to_string(),
            };
            mount(
                Some("shm"),
                &shm,
                Some("tmpfs"),
                MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
                Some(options.as_str()),
            )
            .map_err(|e| RuntimeError::Internal(format!("mounting the pod's /dev/shm: {e}")))?;
            record.shm = shm.display().to_string();
        }
        record.cgroup_parent = config
            .linux
            .as_ref()
            .map(|l| l.cgroup_parent.clone())
            .unwrap_or_default();
        if !record.cgroup_parent.is_empty()
            && self.cgroup_driver == crust_config::CgroupDriver::Cgroupfs
        {
            record.created_cgroup = cgroup::ensure(&record.cgroup_parent).map_err(|e| {
                RuntimeError::Internal(format!("creating pod cgroup {}: {e}", record.cgroup_parent))
            })?;
        }
        if pid == cri::NamespaceMode::Pod as i32 {
            let crustd = crate::crustd_path();
            let pod_namespaces = crate::pod_init::PodNamespaces {
                user: pinned.user.clone(),
                net: pinned.net.clone(),
                ipc: pinned.ipc.clone(),
                uts: pinned.uts.clone(),
            };
            let init = crate::pod_init::spawn(crustd, dir, &pod_namespaces).await?;
            record.pod_init_pid = init.init;
            // Recorded so tear-down signals this process and no other that
            // later reuses its pid.
            record.pod_init_start_time = crate::process::start_time(init.init).unwrap_or(0);
            // The init is undumpable: containers join its namespace by this
            // path, not through /proc/<pid>.
            record.pidns = namespaces::pin_pid(&dir.join("ns"), record.pod_init_pid)
                .map_err(|e| RuntimeError::Internal(e.to_string()))?
                .display()
                .to_string();
            if let Some(init_cgroup) = self.pod_init_cgroup(record) {
                cgroup::ensure(&init_cgroup)
                    .and_then(|_| cgroup::add_process(&init_cgroup, init.guard))
                    .and_then(|()| cgroup::add_process(&init_cgroup, init.init))
                    .map_err(|e| {
                        RuntimeError::Internal(format!(
                            "moving the pod init into cgroup {init_cgroup}: {e}"
                        ))
                    })?;
            } else if let Some((unit, slice)) = self.pod_init_scope(record) {
                // The systemd driver: a scope of its own in the pod's slice,
                // as containerd's pause container gets. The guard stays
                // crustd's (it is outside the pod's PID namespace).
                let pid = init.init;
                let what = format!("pod init of {}", record.id);
                crate::blocking(|| {
                    use libcgroups::systemd::dbus_native::client::SystemdClient;
                    libcgroups::systemd::dbus_native::dbus::DbusConnection::new_system()
                        .map_err(|e| e.to_string())?
                        .start_transient_unit(&what, pid, &slice, &unit)
                        .map_err(|e| e.to_string())
                })
                .map_err(|e| {
                    RuntimeError::Internal(format!("starting {unit} in {slice} (systemd): {e}"))
                })?;
            }
        }
        if let Some(netns) = &pinned.net {
            let mut network = crate::network::pod_network(&record.id, config, netns);
            network.ip_ranges = self.pod_cidrs();
            let attachment =
                crate::network::add(&self.cni, &self.config.state, dir, network).await?;
            record.ips = crate::network::ips(&attachment);
        }
        record.foreign_shim = crate::foreign::is_foreign(handler);
        let start_options = if record.foreign_shim {
            crate::foreign::prepare_pod_dir(dir, &record.id)?;
            // The shim blocks on its log until someone reads it.
            crate::foreign::forward_shim_log(dir, &record.id)?;
            self.shim_options(handler)?
        } else {
            None
        };
        let shim = Shim::start(
            shim_binary,
            &record.id,
            dir,
            &self.events_socket,
            start_options.as_ref(),
        )
        .await?;
        record.shim_address = shim.address.clone();
        record.shim_task_api = shim.api.number();
        match shim.pid(&record.id).await {
            Ok(pid) => {
                record.shim_pid = pid;
                record.shim_start_time = crate::process::start_time(pid).unwrap_or(0);
            }
            // Never a silent 0: ReopenContainerLog then asks the live shim,
            // and tear-down relies on Shutdown alone.
            Err(e) => {
                tracing::warn!(pod_id = %record.id, error = %e, "the shim did not report its pid")
            }
        }
        self.shims.lock().await.insert(record.id.clone(), shim);
        Ok(())
    }

    /// Moves a pod's network attachment whose DEL failed out of its pod
    /// dir, which is about to go, for a later retry.
    pub(crate) fn park_attachment(&self, attachment: &Path, pod_dir: &Path) {
        let parked = self.config.state.join("cni-pending");
        let _ = std::fs::create_dir_all(&parked);
        let id = pod_dir
            .file_name()
            .map(|n| n.to_string_lossy().to_string())
            .unwrap_or_default();
        let _ = std::fs::rename(attachment, parked.join(format!("{id}.json")));
    }

    /// Best effort: undo whatever of a pod exists (used by Remove and by a
    /// failed Run).
    async fn tear_down_pod(&self, record: &SandboxRecord) {
        let shim = self.shims.lock().await.remove(&record.id);
        let shim = match shim {
            Some(s) => Some(s),
            None if !record.shim_address.is_empty() => {
                let api = shim::TaskApi::from_number(record.shim_task_api);
                Shim::connect(&record.shim_address, api).await.ok()
            }
            None => None,
        };
        if let Some(shim) = shim {
            let _ = shim.shutdown(&record.id).await;
        }
        if record.shim_pid > 0 {
            // A shim that ignored Shutdown is ours to end, if it is still
            // the process recorded (never pid 0, never a reused pid).
            kill_if_same(&record.id, "shim", record.shim_pid, record.shim_start_time);
        }
        if !record.state_dir.is_empty() {
            let attachment = crate::network::attachment_path(Path::new(&record.state_dir));
            if let Err(e) = crate::network::del(&self.cni, &attachment).await {
                tracing::warn!(pod_id = %record.id, error = %e, "network teardown failed; parked for retry");
                self.park_attachment(&attachment, Path::new(&record.state_dir));
            }
        }
        if record.pod_init_pid > 0 {
            // Ending PID 1 ends every process left in the namespace (and
            // its guard, which follows it out).
            kill_if_same(
                &record.id,
                "pod init",
                record.pod_init_pid,
                record.pod_init_start_time,
            );
        }
        if let Some(init_cgroup) = self.pod_init_cgroup(record) {
            remove_cgroup_once_empty(&init_cgroup, &record.id).await;
        }
        let pinned = PinnedNamespaces {
            net: (!record.netns.is_empty()).then(|| record.netns.clone().into()),
            ipc: (!record.ipcns.is_empty()).then(|| record.ipcns.clone().into()),
            uts: (!record.utsns.is_empty()).then(|| record.utsns.clone().into()),
            pid: (!record.pidns.is_empty()).then(|| record.pidns.clone().into()),
            user: (!record.userns.is_empty()).then(|| record.userns.clone().into()),
        };
        if let Err(e) = namespaces::remove(&pinned) {
            tracing::warn!(pod_id = %record.id, error = %e, "cannot unpin namespaces");
        }
        if !record.shm.is_empty() {
            let _ = umount2(Path::new(&record.shm), MntFlags::MNT_DETACH);
        }
        if record.created_cgroup
            && let Err(e) = cgroup::remove(&record.cgroup_parent)
        {
            tracing::warn!(pod_id = %record.id, error = %e, "cannot remove pod cgroup");
        }
        if !record.state_dir.is_empty() {
            let _ = std::fs::remove_dir_all(&record.state_dir);
        }
    }

    /// The pod init's scope with the systemd driver, and its slice (the
    /// pod's; kubelet may pass the slice's full path).
    fn pod_init_scope(&self, record: &SandboxRecord) -> Option<(String, String)> {
        if self.cgroup_driver != crust_config::CgroupDriver::Systemd || record.id.is_empty() {
            return None;
        }
        let slice = Some(crust_spec::systemd_slice(&record.cgroup_parent))
            .filter(|s| s.ends_with(".slice"))
            .unwrap_or("system.slice");
        Some((format!("crust-pod-{}.scope", record.id), slice.to_string()))
    }

    /// The pod init's own cgroup, beside its containers' in the pod's
    /// parent (where containerd puts the pause container), with the
    /// cgroupfs driver ([`Pods::pod_init_scope`] with systemd's).
    fn pod_init_cgroup(&self, record: &SandboxRecord) -> Option<String> {
        if self.cgroup_driver != crust_config::CgroupDriver::Cgroupfs || record.id.is_empty() {
            return None;
        }
        let parent = record.cgroup_parent.trim_end_matches('/');
        let parent = if parent.is_empty() { "/crust" } else { parent };
        let sep = if parent.starts_with('/') { "" } else { "/" };
        Some(format!("{sep}{parent}/{}", record.id))
    }

    pub async fn stop_pod_sandbox(&self, id: &str) -> Result<(), RuntimeError> {
        let Some(record) = self.sandbox(id)? else {
            return Ok(()); // CRI: stopping an unknown pod succeeds
        };
        let lock = self.lock_for(&record.id);
        let _held = lock.lock().await;
        for container in self.containers_of(&record.id)? {
            self.stop_container_inner(&container, 0).await?;
        }
        // A failed DEL fails the Stop (kubelet retries); the record stays.
        crate::network::del(
            &self.cni,
            &crate::network::attachment_path(Path::new(&record.state_dir)),
        )
        .await?;
        // The network is gone: so goes its namespace.
        if !record.netns.is_empty() {
            namespaces::remove(&PinnedNamespaces {
                net: Some(record.netns.clone().into()),
                ..Default::default()
            })
            .map_err(|e| RuntimeError::Internal(e.to_string()))?;
        }
        let was_ready = self.store.write(|tx| {
            let Some(mut r) = tx.get::<SandboxRecord>(&record.id)? else {
                return Ok(false);
            };
            let was_ready = r.state == SandboxState::Ready;
            r.state = SandboxState::NotReady;
            r.netns.clear();
            tx.put(&r)?;
            Ok(was_ready)
        })?;
        if was_ready {
            self.publish(LifecycleKind::Stopped, &record.id, &record.id);
        }
        Ok(())
    }

    pub async fn remove_pod_sandbox(&self, id: &str) -> Result<(), RuntimeError> {
        let Some(record) = self.sandbox(id)? else {
            return Ok(());
        };
        self.stop_pod_sandbox(&record.id).await?;
        let lock = self.lock_for(&record.id);
        let _held = lock.lock().await;
        for container in self.containers_of(&record.id)? {
            self.remove_container_inner(&container).await?;
        }
        self.tear_down_pod(&record).await;
        self.store.delete::<SandboxRecord>(&record.id)?;
        self.publish(LifecycleKind::Deleted, &record.id, &record.id);
        tracing::info!(pod_id = %record.id, "pod sandbox removed");
        Ok(())
    }

    /// In-place pod resize: the pod cgroup gets `resources` plus `overhead`.
    /// kubelet grows the pod before its containers and shrinks it after
    /// them; a pod limit below a container's current limit is refused (and
    /// UpdateContainerResources refuses a container above its pod), so no
    /// order leaves a container allowed more than its pod.
    pub async fn update_pod_sandbox_resources(
        &self,
        id: &str,
        resources: Option<&cri::LinuxContainerResources>,
        overhead: Option<&cri::LinuxContainerResources>,
    ) -> Result<(), RuntimeError> {
        let limits = crust_spec::pod_limits(resources, overhead)?;
        let record = self.require_sandbox(id)?;
        let lock = self.lock_for(&record.id);
        let _held = lock.lock().await;
        let record = self.require_sandbox(&record.id)?;
        if record.state != SandboxState::Ready {
            return Err(RuntimeError::FailedPrecondition(format!(
                "pod sandbox {} is not ready",
                record.id
            )));
        }
        if record.cgroup_parent.trim_matches('/').is_empty() {
            return Err(RuntimeError::FailedPrecondition(format!(
                "pod sandbox {} has no cgroup parent of its own to resize \
                 (its containers share crust's default /crust)",
                record.id
            )));
        }
        for container in self.containers_of(&record.id)? {
            if !matches!(
                container.state,
                crust_store::ContainerState::Created | crust_store::ContainerState::Running
            ) {
                continue;
            }
            let config = crate::container::record_config(&container);
            let Some(theirs) = config.linux.as_ref().and_then(|l| l.resources.as_ref()) else {
                continue;
            };
            let name = config.metadata.as_ref().map_or("", |m| m.name.as_str());
            if let (Some(pod), Some(c)) = (limits.memory_limit, crust_spec::memory_limit(theirs))
                && c > pod
            {
                return Err(RuntimeError::FailedPrecondition(format!(
                    "pod memory limit {pod} is below container {name:?} ({})'s limit {c}: \
                     shrink the container first",
                    container.id
                )));
            }
            if let (Some(pod), Some(c)) = (limits.cpu_millis(), crust_spec::cpu_millis(theirs))
                && c > pod
            {
                return Err(RuntimeError::FailedPrecondition(format!(
                    "pod CPU limit {pod}m is below container {name:?} ({})'s limit {c}m: \
                     shrink the container first",
                    container.id
                )));
            }
        }
        let path = record.cgroup_parent.clone();
        tokio::task::spawn_blocking(move || cgroup::set_pod_limits(&path, &limits))
            .await
            .map_err(|e| RuntimeError::Internal(e.to_string()))?
            .map_err(|e| RuntimeError::Internal(format!("resizing pod {}: {e}", record.id)))?;
        self.store.write(|tx| {
            if let Some(mut r) = tx.get::<SandboxRecord>(&record.id)? {
                r.pod_memory_limit = limits.memory_limit.unwrap_or(0);
                r.pod_cpu_millis = limits.cpu_millis().unwrap_or(0);
                tx.put(&r)?;
            }
            Ok(())
        })?;
        tracing::info!(pod_id = %record.id, ?limits, "pod sandbox resized");
        Ok(())
    }

    pub(crate) fn containers_of(&self, pod_id: &str) -> Result<Vec<ContainerRecord>, RuntimeError> {
        Ok(self
            .store
            .select::<ContainerRecord>(|c| c.sandbox_id == pod_id))
    }

    pub fn pod_sandbox_status(
        &self,
        id: &str,
        verbose: bool,
    ) -> Result<cri::PodSandboxStatusResponse, RuntimeError> {
        let record = self.require_sandbox(id)?;
        let config: cri::PodSandboxConfig =
            serde_json::from_value(record.config.clone()).unwrap_or_default();
        let (network, pid, ipc) = namespace_mode(&config);
        let status = cri::PodSandboxStatus {
            id: record.id.clone(),
            metadata: config.metadata.clone(),
            state: sandbox_state(&record) as i32,
            created_at: record.created_at,
            network: Some(cri::PodSandboxNetworkStatus {
                ip: record.ips.first().cloned().unwrap_or_default(),
                additional_ips: record
                    .ips
                    .iter()
                    .skip(1)
                    .map(|ip| cri::PodIp { ip: ip.clone() })
                    .collect(),
            }),
            linux: Some(cri::LinuxPodSandboxStatus {
                namespaces: Some(cri::Namespace {
                    options: Some(cri::NamespaceOption {
                        network,
                        pid,
                        ipc,
                        userns_options: config
                            .linux
                            .as_ref()
                            .and_then(|l| l.security_context.as_ref())
                            .and_then(|s| s.namespace_options.as_ref())
                            .and_then(|o| o.userns_options.clone()),
                        ..Default::default()
                    }),
                }),
            }),
            labels: record.labels.clone().into_iter().collect(),
            annotations: record.annotations.clone().into_iter().collect(),
            runtime_handler: record.runtime_handler.clone(),
        };
        let mut info = HashMap::new();
        if verbose {
            let details = serde_json::json!({
                "pid": record.shim_pid,
                "podInitPid": record.pod_init_pid,
                "shimAddress": record.shim_address,
                "netNamespacePath": record.netns,
                "ipcNamespacePath": record.ipcns,
                "utsNamespacePath": record.utsns,
                "userNamespacePath": record.userns,
                "pidNamespacePath": record.pidns,
                "runtimeHandler": record.runtime_handler,
                "cgroupParent": record.cgroup_parent,
                "podMemoryLimit": record.pod_memory_limit,
                "podCpuMillis": record.pod_cpu_millis,
                "config": record.config,
            });
            info.insert("info".to_string(), details.to_string());
        }
        Ok(cri::PodSandboxStatusResponse {
            status: Some(status),
            info,
            ..Default::default()
        })
    }

    pub fn list_pod_sandbox(
        &self,
        filter: Option<&cri::PodSandboxFilter>,
    ) -> Result<Vec<cri::PodSandbox>, RuntimeError> {
        let records = self.store.list::<SandboxRecord>()?;
        Ok(records
            .into_iter()
            .filter(|r| {
                let Some(f) = filter else { return true };
                crate::filter::id_matches(&f.id, &r.id)
                    && f.state
                        .as_ref()
                        .is_none_or(|s| s.state == sandbox_state(r) as i32)
                    && crate::filter::labels_match(&f.label_selector, &r.labels)
            })
            .map(|r| {
                let config: cri::PodSandboxConfig =
                    serde_json::from_value(r.config.clone()).unwrap_or_default();
                cri::PodSandbox {
                    id: r.id.clone(),
                    metadata: config.metadata,
                    state: sandbox_state(&r) as i32,
                    created_at: r.created_at,
                    labels: r.labels.clone().into_iter().collect(),
                    annotations: r.annotations.clone().into_iter().collect(),
                    runtime_handler: r.runtime_handler.clone(),
                }
            })
            .collect())
    }
}

fn sandbox_state(record: &SandboxRecord) -> cri::PodSandboxState {
    match record.state {
        SandboxState::Ready => cri::PodSandboxState::SandboxReady,
        SandboxState::NotReady => cri::PodSandboxState::SandboxNotready,
    }
}

/// Removes a cgroup whose processes were just SIGKILLed: they leave it a
/// moment later, so rmdir is retried for up to a second.
async fn remove_cgroup_once_empty(path: &str, pod_id: &str) {
    let mut last = None;
    for _ in 0..50 {
        match cgroup::remove(path) {
            Ok(()) => return,
            Err(e) => last = Some(e),
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    if let Some(e) = last {
        tracing::warn!(pod_id, cgroup = path, error = %e, "cannot remove the pod init's cgroup");
    }
}

/// SIGKILLs a process a pod record names, only if it is still the one that
/// started at `recorded_start`; a gone process is fine, a reused pid or a
/// record without a start time (from before start times were kept) is
/// logged and left alone.
fn kill_if_same(pod_id: &str, what: &str, pid: u32, recorded_start: u64) {
    use crate::process::SignalError;
    match crate::process::signal_if_same(pid, recorded_start, nix::sys::signal::Signal::SIGKILL) {
        Ok(()) | Err(SignalError::Gone(_)) => {}
        Err(e) => tracing::warn!(pod_id, error = %e, "not killing the pod's {what}"),
    }
}
