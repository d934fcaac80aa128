//! Pods and containers: the pod's pinned namespaces, cgroup and shim, and
//! each container's rootfs, OCI bundle and task in that shim.

pub mod cgroup;
mod container;
pub mod events;
mod files;
pub mod filter;
mod foreign;
mod image_mounts;
pub mod lifecycle;
pub mod limits;
mod lsm;
pub mod namespaces;
mod network;
pub mod node_config;
mod pod;
pub mod pod_init;
pub mod pod_metrics;
pub mod process;
mod recovery;
pub mod shim;
mod stream;
mod userns;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crust_config::{CgroupDriver, Config};
use crust_image::Images;
use crust_store::Store;
use tokio::sync::Mutex;

pub use container::{ExecOutput, io_usage, psi_stats};
pub use events::ShimEvent;
pub use stream::StreamBackend;

#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    #[error("{0}")]
    InvalidArgument(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    AlreadyExists(String),
    #[error("{0}")]
    FailedPrecondition(String),
    #[error("{0}")]
    DeadlineExceeded(String),
    #[error("{0}")]
    Shim(String),
    #[error("configuration: {0}")]
    Config(String),
    #[error("{0}")]
    Internal(String),
    #[error(transparent)]
    Store(#[from] crust_store::StoreError),
    /// A pod or container spec crust will not build (see
    /// [`crust_spec::SpecError::is_request_error`]).
    #[error(transparent)]
    Spec(#[from] crust_spec::SpecError),
    #[error(transparent)]
    Image(#[from] crust_image::ImageError),
}

impl From<std::io::Error> for RuntimeError {
    fn from(e: std::io::Error) -> Self {
        RuntimeError::Internal(e.to_string())
    }
}

/// Where things live and how to reach the shims.
pub struct Pods {
    config: Config,
    cgroup_driver: CgroupDriver,
    store: Arc<Store>,
    images: Arc<Images>,
    events_socket: PathBuf,
    /// Connected shims by pod id.
    shims: Mutex<HashMap<String, shim::Shim>>,
    /// Serializes lifecycle changes of one pod or container at a time.
    locks: std::sync::Mutex<HashMap<String, Arc<Mutex<()>>>>,
    /// Each container's last stats reading, for its next CPU rate; dropped
    /// with the container.
    stats_samples: std::sync::Mutex<HashMap<String, container::StatsSample>>,
    /// Starts the id of every exec this crustd makes (`exec-<this>-...`):
    /// recovery, which runs while the socket already serves, kills only
    /// execs of an earlier crustd, never one a client just started.
    exec_prefix: String,
    /// The lowest oom_score_adj crustd may give a container.
    oom_score_adj_min: i64,
    cni: Arc<crust_cni::Cni>,
    lifecycle: tokio::sync::broadcast::Sender<lifecycle::LifecycleEvent>,
    /// Set at shutdown: event streams end, or they would hold it up.
    lifecycle_end: tokio::sync::watch::Sender<bool>,
    /// What UpdateRuntimeConfig last said about the node (pod CIDRs).
    node_config: std::sync::RwLock<node_config::NodeConfig>,
}

/// Whether this node can run pods with their own user namespace, probed in
/// `dir` (an overlay over idmapped, detached layers, as crustd does at
/// start; needs root). For `crustd check` without a running crustd.
pub fn probe_user_namespaces(dir: &std::path::Path) -> Result<(), String> {
    userns::probe(dir)
}

/// Runs disk- and CPU-heavy synchronous work (mounting a rootfs, reading
/// image files, building a spec) from async code without stalling the
/// worker: on crustd's multi-threaded runtime the worker hands its other
/// tasks to the rest of the pool first (`block_in_place`). Work that needs
/// `&self` cannot move to `spawn_blocking`, which wants `'static`. A
/// current-thread runtime (some unit tests) just runs it.
pub(crate) fn blocking<T>(work: impl FnOnce() -> T) -> T {
    match tokio::runtime::Handle::try_current().map(|h| h.runtime_flavor()) {
        Ok(tokio::runtime::RuntimeFlavor::MultiThread) => tokio::task::block_in_place(work),
        _ => work(),
    }
}

/// crustd's own path, read once at start: once a package upgrade has
/// replaced the binary, /proc/self/exe names the deleted file, while this
/// path holds the new one (the shim beside it keeps being found).
pub(crate) fn real_crustd_path() -> &'static Path {
    static PATH: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    PATH.get_or_init(|| std::env::current_exe().unwrap_or_else(|_| PathBuf::from("crustd")))
}

/// What pod inits are spawned from: the read-only exposed copy of the
/// binary now at [`real_crustd_path`] (see [`shim::exposed`]), so a
/// container seeing its pod init as /proc/1/exe cannot write to crustd.
pub(crate) fn crustd_path() -> &'static Path {
    shim::exposed::path_of(real_crustd_path())
}

impl Pods {
    pub fn new(
        config: Config,
        cgroup_driver: CgroupDriver,
        store: Arc<Store>,
        images: Arc<Images>,
        events_socket: PathBuf,
        cni_observer: Option<crust_cni::Observer>,
    ) -> Arc<Pods> {
        let mut cni = crust_cni::Cni::new(&config.cni.conf_dir, config.cni.bin_dirs.clone());
        if let Some(observer) = cni_observer {
            cni = cni.with_observer(observer);
        }
        real_crustd_path();
        shim::exposed::init(&config.state);
        let oom_score_adj_min = std::fs::read_to_string("/proc/self/oom_score_adj")
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(-1000);
        let node_config = std::sync::RwLock::new(node_config::load(&config.state));
        Arc::new(Pods {
            node_config,
            config,
            cgroup_driver,
            store,
            images,
            events_socket,
            shims: Mutex::new(HashMap::new()),
            locks: std::sync::Mutex::new(HashMap::new()),
            stats_samples: std::sync::Mutex::new(HashMap::new()),
            // This start's time: no two starts of crustd share it.
            exec_prefix: format!("exec-{:x}-", now_nanos()),
            oom_score_adj_min,
            cni: Arc::new(cni),
            lifecycle: lifecycle::channel(),
            lifecycle_end: tokio::sync::watch::Sender::new(false),
        })
    }

    /// UpdateRuntimeConfig: records the node's pod CIDRs (kubelet's
    /// comma-separated `pod_cidr`) for the pods started from now on.
    pub fn update_pod_cidrs(&self, pod_cidr: &str) -> Result<(), RuntimeError> {
        let pod_cidrs = node_config::parse_pod_cidrs(pod_cidr)?;
        let mut current = self.node_config.write().unwrap_or_else(|e| e.into_inner());
        if current.pod_cidrs == pod_cidrs {
            return Ok(());
        }
        let updated = node_config::NodeConfig { pod_cidrs };
        blocking(|| node_config::store(&self.config.state, &updated))?;
        tracing::info!(pod_cidrs = ?updated.pod_cidrs, "node pod CIDRs updated");
        *current = updated;
        Ok(())
    }

    /// The node's pod CIDRs as UpdateRuntimeConfig last set them.
    pub fn pod_cidrs(&self) -> Vec<String> {
        self.node_config
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .pod_cidrs
            .clone()
    }

    /// Whether pods can get a network: Err names what is missing.
    pub fn network_status(&self) -> Result<(), String> {
        self.cni.status()
    }

    /// At start, while serving: record exits missed while crustd was down,
    /// and finish network teardowns that failed before.
    pub async fn recover(&self) {
        // Foreign shims kept logging into their FIFO while crustd was down:
        // read it again first, so nothing they say meanwhile is lost.
        if let Ok(sandboxes) = self.store.list::<crust_store::SandboxRecord>() {
            for sandbox in sandboxes.iter().filter(|s| s.foreign_shim) {
                let dir = std::path::Path::new(&sandbox.state_dir);
                if !sandbox.state_dir.is_empty()
                    && let Err(e) = foreign::forward_shim_log(dir, &sandbox.id)
                {
                    tracing::warn!(pod_id = %sandbox.id, error = %e, "cannot read the shim's log again");
                }
            }
        }
        self.reconcile_running().await;
        network::retry_pending(&self.cni, &self.config.state).await;
        let Ok(sandboxes) = self.store.list::<crust_store::SandboxRecord>() else {
            return;
        };
        for sandbox in sandboxes
            .iter()
            .filter(|s| s.state == crust_store::SandboxState::NotReady)
        {
            let path = network::attachment_path(std::path::Path::new(&sandbox.state_dir));
            if path.exists()
                && let Err(e) = network::del(&self.cni, &path).await
            {
                tracing::warn!(pod_id = %sandbox.id, error = %e, "network teardown still failing");
            }
        }
    }

    fn lock_for(&self, id: &str) -> Arc<Mutex<()>> {
        let mut locks = self.locks.lock().expect("lock map");
        locks.retain(|_, l| Arc::strong_count(l) > 1);
        locks.entry(id.to_string()).or_default().clone()
    }

    /// Applies shim events to the records until the channel closes.
    pub async fn handle_events(
        self: Arc<Self>,
        mut rx: tokio::sync::mpsc::UnboundedReceiver<ShimEvent>,
    ) {
        while let Some(event) = rx.recv().await {
            if let Err(e) = self.apply_event(&event).await {
                tracing::warn!(?event, error = %e, "cannot apply shim event");
            }
        }
    }
}

/// A 64-hex id like containerd's, from the kernel's CSPRNG: an id must
/// never repeat, so a failed read is an error, not zeros.
fn new_id() -> Result<String, RuntimeError> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes)
        .map_err(|e| RuntimeError::Internal(format!("cannot read random bytes for an id: {e}")))?;
    Ok(hex::encode(bytes))
}

fn now_nanos() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as i64)
}

/// The record a full id or unique id prefix names, via the store's index.
fn lookup<R: crust_store::Record>(
    store: &Store,
    id_or_prefix: &str,
    what: &str,
) -> Result<Option<R>, RuntimeError> {
    if id_or_prefix.is_empty() {
        return Err(RuntimeError::InvalidArgument(format!(
            "{what} id is required"
        )));
    }
    match store.lookup::<R>(id_or_prefix) {
        crust_store::Lookup::Found(record) => Ok(Some(record)),
        crust_store::Lookup::Missing => Ok(None),
        crust_store::Lookup::Ambiguous(n) => Err(RuntimeError::InvalidArgument(format!(
            "{what} id prefix {id_or_prefix:?} is ambiguous ({n} matches)"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_64_hex_and_differ() {
        let id = new_id().unwrap();
        assert_eq!(id.len(), 64);
        assert!(id.bytes().all(|b| b.is_ascii_hexdigit()));
        assert_ne!(id, new_id().unwrap());
        assert_ne!(id, "0".repeat(64));
    }

    #[test]
    fn empty_and_ambiguous_ids_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        for id in ["abc123", "abd456"] {
            store
                .put(&crust_store::SandboxRecord {
                    id: id.into(),
                    ..Default::default()
                })
                .unwrap();
        }
        let find = |p| lookup::<crust_store::SandboxRecord>(&store, p, "pod sandbox");
        assert_eq!(
            find("abc").unwrap().map(|r| r.id).as_deref(),
            Some("abc123")
        );
        let err = find("ab").unwrap_err().to_string();
        assert!(err.contains("ambiguous (2 matches)"), "{err}");
        assert!(find("").unwrap_err().to_string().contains("id is required"));
        assert!(find("zz").unwrap().is_none());
    }
}
