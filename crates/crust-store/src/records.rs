//! The typed records. Every field added later must be `#[serde(default)]`
//! so older records still decode; see the crate docs on migrations.

use std::collections::BTreeMap;

use redb::TableDefinition;
use serde::{Deserialize, Serialize};

use crate::{Changes, Index, Indexed, Record, Staged};

/// A pulled image, keyed by its ID (the config digest, as containerd does).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct ImageRecord {
    pub id: String,
    pub repo_tags: Vec<String>,
    pub repo_digests: Vec<String>,
    /// Compressed size of config and layers, as `crictl images` shows.
    pub size: u64,
    pub pinned: bool,
    pub config: ImageConfig,
    pub layers: Vec<LayerRecord>,
    /// Every manifest and index digest of the image (kept in the content
    /// store, so garbage collection must know them).
    pub manifest_digests: Vec<String>,
    /// Unix time in nanoseconds.
    pub created_at: i64,
    /// Signatures images.policy verified at pull, one per repository
    /// (the latest), so CreateContainer can re-check under a policy that
    /// changed since.
    pub verifications: Vec<VerificationRecord>,
}

/// A signature check that passed: which digest of which repository, by
/// which key of which scope, and when.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct VerificationRecord {
    /// `registry/repository@sha256:...`, the digest the signature signs.
    pub repo_digest: String,
    pub scope: String,
    /// The public key file that verified it, and the sha256 of its
    /// contents then (a key replaced at the same path is another key).
    pub key: String,
    pub key_sha256: String,
    /// Unix time in nanoseconds.
    pub at: i64,
}

/// The parts of an OCI image config a container needs.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct ImageConfig {
    pub user: String,
    pub env: Vec<String>,
    pub entrypoint: Vec<String>,
    pub cmd: Vec<String>,
    pub working_dir: String,
    pub volumes: Vec<String>,
    pub stop_signal: String,
    pub labels: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct LayerRecord {
    pub digest: String,
    pub media_type: String,
    pub size: u64,
    pub diff_id: String,
    pub chain_id: String,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SandboxState {
    #[default]
    Ready,
    NotReady,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct SandboxRecord {
    pub id: String,
    pub name: String,
    pub namespace: String,
    pub uid: String,
    pub attempt: u32,
    pub state: SandboxState,
    pub created_at: i64,
    pub runtime_handler: String,
    pub labels: BTreeMap<String, String>,
    pub annotations: BTreeMap<String, String>,
    /// The pod's dir under crust's state dir.
    pub state_dir: String,
    /// ttrpc address of the pod's shim, and its pid.
    pub shim_address: String,
    /// The Task API version the shim serves (2 or 3); 0 in records from
    /// before it was kept, all of them crust-shim's (which serves both).
    pub shim_task_api: u32,
    /// The pod's shim is not crust-shim (crust-runtime's `foreign`): its
    /// containers get FIFO stdio and a log writer. Kept on the record so
    /// that a config change cannot change how a running pod is driven.
    pub foreign_shim: bool,
    pub shim_pid: u32,
    /// The shim's start time (`/proc/<pid>/stat` field 22, clock ticks
    /// since boot) when `shim_pid` was recorded: signals go to that pid
    /// only while it is still the same process. 0: not recorded.
    pub shim_start_time: u64,
    /// Pinned namespace files; empty means the host's namespace.
    pub netns: String,
    pub ipcns: String,
    pub utsns: String,
    /// The pod's own user namespace (hostUsers: false), pinned; empty
    /// means the host's.
    pub userns: String,
    /// The pod's shared PID namespace, pinned (set for pods with their own
    /// user namespace; others use /proc/<pod_init_pid>/ns/pid).
    pub pidns: String,
    /// The pod's /dev/shm (a tmpfs under state_dir); empty with host IPC.
    pub shm: String,
    pub hostname: String,
    /// Host PID of the pod's init when its containers share one PID
    /// namespace (0 otherwise).
    pub pod_init_pid: u32,
    /// The pod init's start time, as `shim_start_time`. 0: not recorded.
    pub pod_init_start_time: u64,
    pub cgroup_parent: String,
    /// Whether crust created the pod cgroup (and so removes it).
    pub created_cgroup: bool,
    /// The pod cgroup's limits last set by UpdatePodSandboxResources
    /// (memory in bytes, CPU in millicores); 0: none set by crust. A
    /// container's update may not go above them.
    pub pod_memory_limit: u64,
    pub pod_cpu_millis: u64,
    pub log_directory: String,
    /// Pod IPs from CNI, the primary first.
    pub ips: Vec<String>,
    /// The CRI PodSandboxConfig as JSON, kept for status and recovery.
    pub config: serde_json::Value,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ContainerState {
    #[default]
    Created,
    Running,
    Exited,
    Unknown,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct ContainerRecord {
    pub id: String,
    pub sandbox_id: String,
    pub name: String,
    pub attempt: u32,
    pub state: ContainerState,
    pub image_ref: String,
    pub image_id: String,
    pub created_at: i64,
    pub started_at: i64,
    pub finished_at: i64,
    pub exit_code: i32,
    pub reason: String,
    pub message: String,
    pub log_path: String,
    pub labels: BTreeMap<String, String>,
    pub annotations: BTreeMap<String, String>,
    /// Bundle dir (config.json + mounted rootfs) under the state dir.
    pub bundle: String,
    pub pid: u32,
    /// The container process's start time, as `SandboxRecord`'s
    /// `shim_start_time`. 0: not recorded.
    pub pid_start_time: u64,
    /// Signal that stops the container gracefully (from the image).
    pub stop_signal: String,
    pub cgroup_path: String,
    pub tty: bool,
    /// The kernel OOM-killed the container.
    pub oom_killed: bool,
    /// Chain ids of the image's layers, bottom first: the container's
    /// rootfs needs them even if the image is removed.
    pub image_chain: Vec<String>,
    /// The images mounted as volumes (CRI `Mount.image`): while the
    /// container exists they cannot be removed, and their layers stay.
    pub image_mounts: Vec<ImageMountRecord>,
    /// The CRI ContainerConfig as JSON, kept for status and recovery.
    pub config: serde_json::Value,
}

/// One image volume of a container.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct ImageMountRecord {
    /// Where the container sees it.
    pub container_path: String,
    /// The image's id (its config digest).
    pub image_id: String,
    /// Chain ids of its layers, bottom first.
    pub chain: Vec<String>,
}

/// The index plumbing every record kind has: which field of the index and
/// of a transaction's staged changes holds it.
macro_rules! indexed_in {
    ($field:ident) => {
        fn indexed(index: &Index) -> &Indexed<Self> {
            &index.$field
        }
        fn indexed_mut(index: &mut Index) -> &mut Indexed<Self> {
            &mut index.$field
        }
        fn staged(staged: &Staged) -> &Changes<Self> {
            &staged.$field
        }
        fn staged_mut(staged: &mut Staged) -> &mut Changes<Self> {
            &mut staged.$field
        }
    };
}

impl Record for ImageRecord {
    const TABLE: TableDefinition<'static, &'static str, &'static [u8]> =
        TableDefinition::new("images");
    const NAME: &'static str = "image";
    fn id(&self) -> &str {
        &self.id
    }
    indexed_in!(images);
}

impl Record for SandboxRecord {
    const TABLE: TableDefinition<'static, &'static str, &'static [u8]> =
        TableDefinition::new("sandboxes");
    const NAME: &'static str = "sandbox";
    fn id(&self) -> &str {
        &self.id
    }
    /// `<name>_<namespace>_<uid>_<attempt>`, as kubelet reuses it.
    fn unique_name(&self) -> Option<&str> {
        (!self.name.is_empty()).then_some(self.name.as_str())
    }
    indexed_in!(sandboxes);
}

impl Record for ContainerRecord {
    const TABLE: TableDefinition<'static, &'static str, &'static [u8]> =
        TableDefinition::new("containers");
    const NAME: &'static str = "container";
    fn id(&self) -> &str {
        &self.id
    }
    /// `<name>_<pod name>_<attempt>`.
    fn unique_name(&self) -> Option<&str> {
        (!self.name.is_empty()).then_some(self.name.as_str())
    }
    indexed_in!(containers);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_from_before_start_times_still_decode() {
        let sandbox: SandboxRecord =
            serde_json::from_str(r#"{"id":"p","shim_pid":42,"pod_init_pid":43}"#).unwrap();
        assert_eq!((sandbox.shim_pid, sandbox.shim_start_time), (42, 0));
        assert_eq!((sandbox.pod_init_pid, sandbox.pod_init_start_time), (43, 0));
        let container: ContainerRecord = serde_json::from_str(r#"{"id":"c","pid":44}"#).unwrap();
        assert_eq!((container.pid, container.pid_start_time), (44, 0));
    }

    #[test]
    fn pods_from_before_the_task_api_version_was_kept_decode_as_unknown() {
        let sandbox: SandboxRecord =
            serde_json::from_str(r#"{"id":"p","shim_address":"unix:///x"}"#).unwrap();
        assert_eq!(sandbox.shim_task_api, 0);
        assert!(!sandbox.foreign_shim, "they are all crust-shim's");
    }
}
