//! Images: references, registry pulls, the content store and the image
//! records in the metadata store, with garbage collection of what no
//! image uses any more.

#![forbid(unsafe_code)]

pub mod content;
pub mod manifest;
pub mod policy;
pub mod progress;
mod pull;
pub mod reference;
pub mod registry;
mod token;

use std::path::Path;
use std::sync::Arc;

use crust_config::RegistriesConfig;
use crust_snapshot::Snapshotter;
use crust_store::{ContainerRecord, ImageRecord, Store, StoreError};

use content::{ContentError, ContentStore};
use manifest::ManifestError;
use pull::Puller;
use reference::{ImageName, ReferenceError, parse_name, parse_reference};

pub use registry::Credentials;

/// What kind of failure an error is, for the gRPC code the CRI layer sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    InvalidArgument,
    NotFound,
    PermissionDenied,
    Unavailable,
    DeadlineExceeded,
    FailedPrecondition,
    Internal,
}

#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    #[error(transparent)]
    Reference(#[from] ReferenceError),
    #[error("{0}")]
    Manifest(#[from] ManifestError),
    #[error("invalid image: {0}")]
    Invalid(String),
    #[error("image {image} not found in the registry: {message}")]
    NotFound { image: String, message: String },
    #[error("registry refused access to {image}: {message}")]
    Denied { image: String, message: String },
    #[error("registry error for {image}: {message}")]
    Registry { image: String, message: String },
    #[error("pull made no progress for too long, cancelled: {0}")]
    Stalled(String),
    #[error("download failed: {0}")]
    Transfer(String),
    #[error("cannot unpack {0}")]
    Unpack(String),
    #[error("{0}")]
    Content(#[from] ContentError),
    #[error("{0}")]
    Snapshot(#[from] crust_snapshot::SnapshotError),
    #[error("{0}")]
    Store(#[from] StoreError),
    #[error(
        "image {image} is mounted as a volume by container(s) {}; remove them first",
        containers.join(", ")
    )]
    InUse {
        image: String,
        containers: Vec<String>,
    },
    /// `images.policy` refused the image.
    #[error("image {image} ({digest}) refused by images.policy scope {scope:?} ({rule}): {reason}")]
    Policy {
        image: String,
        digest: String,
        scope: String,
        rule: &'static str,
        reason: String,
    },
    #[error("registry configuration: {0}")]
    Config(String),
    #[error("internal error: {0}")]
    Internal(String),
}

impl ImageError {
    pub fn kind(&self) -> ErrorKind {
        match self {
            ImageError::Reference(_) => ErrorKind::InvalidArgument,
            ImageError::NotFound { .. } => ErrorKind::NotFound,
            ImageError::Denied { .. } | ImageError::Policy { .. } => ErrorKind::PermissionDenied,
            ImageError::Registry { .. } | ImageError::Transfer(_) => ErrorKind::Unavailable,
            ImageError::Stalled(_) => ErrorKind::DeadlineExceeded,
            ImageError::InUse { .. } => ErrorKind::FailedPrecondition,
            ImageError::Manifest(ManifestError::NoPlatform { .. }) => ErrorKind::NotFound,
            ImageError::Manifest(_) | ImageError::Invalid(_) | ImageError::Unpack(_) => {
                ErrorKind::InvalidArgument
            }
            _ => ErrorKind::Internal,
        }
    }

    fn with_context(e: ImageError, context: &str) -> ImageError {
        match e {
            ImageError::NotFound { image, message } => ImageError::NotFound {
                image,
                message: format!("{message} {context}"),
            },
            ImageError::Registry { image, message } => ImageError::Registry {
                image,
                message: format!("{message} {context}"),
            },
            other => other,
        }
    }
}

/// Disk used under the image root: images, and containers' writable layers.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FsUsage {
    /// Content store and unpacked layers.
    pub images: Usage,
    pub writable_layers: crust_snapshot::Usage,
}

/// Disk used by images: content store and unpacked layers together.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    pub bytes: u64,
    pub inodes: u64,
}

pub struct Images {
    store: Arc<Store>,
    content: Arc<ContentStore>,
    snapshots: Arc<Snapshotter>,
    puller: Puller,
    /// Pulls hold it shared, garbage collection exclusively: a pull's
    /// layers are not referenced by any image until it is recorded.
    gc_lock: tokio::sync::RwLock<()>,
    root: std::path::PathBuf,
}

impl Images {
    /// Opens content (`root/content`; `root` is `Config::image_root`).
    pub fn open(
        root: &Path,
        store: Arc<Store>,
        snapshots: Arc<Snapshotter>,
        registries: &RegistriesConfig,
        policy: &crust_config::PolicyConfig,
        verifications: Option<policy::Observer>,
        pulls: Option<progress::PullObserver>,
    ) -> Result<Images, ImageError> {
        let content = Arc::new(ContentStore::new(&root.join("content"))?);
        let puller = Puller::new(
            content.clone(),
            snapshots.clone(),
            registries.clone(),
            policy::Policy::load(policy, verifications)?,
            pulls,
            manifest::host_platform(),
        )?;
        Ok(Images {
            store,
            content,
            snapshots,
            puller,
            gc_lock: tokio::sync::RwLock::new(()),
            root: root.to_path_buf(),
        })
    }

    /// Pulls `name` and records it; returns the image ID.
    pub async fn pull(&self, name: &str, creds: &Credentials) -> Result<ImageRecord, ImageError> {
        let image = parse_reference(name)?;
        let _pulling = self.gc_lock.read().await;
        let started = std::time::Instant::now();
        let pulled = self.puller.pull(&image, creds).await?;
        let record = self.store.write(|tx| {
            let mut record = tx
                .get::<ImageRecord>(&pulled.config_digest)?
                .unwrap_or_else(|| ImageRecord {
                    id: pulled.config_digest.clone(),
                    created_at: now_nanos(),
                    ..Default::default()
                });
            record.size = pulled.size;
            record.config = pulled.config.clone();
            record.layers = pulled.layers.clone();
            for digest in &pulled.manifest_digests {
                add_unique(&mut record.manifest_digests, digest);
            }
            let repo_digest = image.with_digest(&pulled.manifest_digest);
            add_unique(&mut record.repo_digests, &repo_digest);
            if let Some((scope, key, fingerprint)) = &pulled.verified_by {
                // The latest per repository: the one a re-check looks at.
                let repository = repository_of(&repo_digest);
                record
                    .verifications
                    .retain(|v| repository_of(&v.repo_digest) != repository);
                record.verifications.push(crust_store::VerificationRecord {
                    repo_digest: repo_digest.clone(),
                    scope: scope.clone(),
                    key: key.display().to_string(),
                    key_sha256: fingerprint.clone(),
                    at: now_nanos(),
                });
            }
            if let Some(tag) = image.tagged() {
                // A tag names one image: take it from whichever had it.
                for mut other in tx.list::<ImageRecord>()? {
                    if other.id != record.id && other.repo_tags.contains(&tag) {
                        other.repo_tags.retain(|t| t != &tag);
                        tx.put(&other)?;
                    }
                }
                add_unique(&mut record.repo_tags, &tag);
            }
            tx.put(&record)?;
            Ok(record)
        })?;
        tracing::info!(
            image = %image,
            id = %record.id,
            bytes = record.size,
            seconds = started.elapsed().as_secs_f64(),
            "pulled"
        );
        Ok(record)
    }

    /// Whether images.policy lets a container run `image` (stored as
    /// `record`) as the container names it (`name`: its reference, or
    /// the image ID when the client gave no other): a policy that changed
    /// since the pull is applied to what the pull recorded. An ID alone
    /// is admitted when any name the image was pulled under is.
    pub fn admit(&self, name: &str, record: &ImageRecord) -> Result<(), ImageError> {
        let is_id = name.starts_with("sha256:")
            || record
                .id
                .strip_prefix("sha256:")
                .is_some_and(|hex| hex.starts_with(name));
        let own: Vec<String> = record
            .repo_tags
            .iter()
            .chain(&record.repo_digests)
            .cloned()
            .collect();
        // The given name counts only if the image was pulled under its
        // repository: a client cannot vouch for an image by naming an
        // accepted repository it never came from.
        let names: Vec<String> = match parse_reference(name) {
            Ok(r)
                if !is_id
                    && own.iter().any(|n| {
                        parse_reference(n)
                            .is_ok_and(|o| o.registry == r.registry && o.repository == r.repository)
                    }) =>
            {
                vec![r.to_string()]
            }
            _ => own,
        };
        let mut refusal = None;
        for n in &names {
            let Ok(image) = parse_reference(n) else {
                continue;
            };
            match self.admit_one(&image, record) {
                Ok(()) => return Ok(()),
                Err(e) => refusal = Some(e),
            }
        }
        match refusal {
            Some(e) => Err(e),
            // No name to judge it by: what the policy says of unknowns.
            None if self.puller.policy().rejects_by_default() => Err(ImageError::Policy {
                image: name.to_string(),
                digest: record.id.clone(),
                scope: "default".into(),
                rule: "reject",
                reason: "the image has no name a scope could cover".into(),
            }),
            None => Ok(()),
        }
    }

    fn admit_one(
        &self,
        image: &reference::ImageRef,
        record: &ImageRecord,
    ) -> Result<(), ImageError> {
        use policy::Decision;
        let refuse = |scope: &str, rule: &'static str, reason: &str| ImageError::Policy {
            image: image.to_string(),
            digest: record.id.clone(),
            scope: scope.to_string(),
            rule,
            reason: reason.to_string(),
        };
        match self.puller.policy().decide(image) {
            Decision::Accept => Ok(()),
            Decision::Reject(scope) => {
                Err(refuse(scope, "reject", "the scope rejects every image"))
            }
            Decision::Verify(scope, keys) => {
                let repository = format!("{}/{}", image.registry, image.repository);
                let verified = record.verifications.iter().any(|v| {
                    repository_of(&v.repo_digest) == repository
                        && keys.iter().any(|k| {
                            k.path.display().to_string() == v.key && k.fingerprint == v.key_sha256
                        })
                });
                if verified {
                    Ok(())
                } else {
                    Err(refuse(
                        scope,
                        "signed_by",
                        "no signature by a key of this scope was verified when the image was pulled (pulled before the policy required one?): pull it again",
                    ))
                }
            }
        }
    }

    /// Pulls in flight now (verbose Status, `crustd status`).
    pub fn pulls_in_flight(&self) -> Vec<progress::PullSnapshot> {
        self.puller.pulls_in_flight()
    }

    pub fn list(&self) -> Result<Vec<ImageRecord>, ImageError> {
        Ok(self.store.list::<ImageRecord>()?)
    }

    /// Finds an image by ID (or unique ID prefix), tag, or digest reference.
    pub fn find(&self, name: &str) -> Result<Option<ImageRecord>, ImageError> {
        let parsed = parse_name(name)?;
        let images = self.list()?;
        Ok(find_in(&images, &parsed, name).cloned())
    }

    /// Removes `name`. A tag of an image with other tags is only untagged;
    /// otherwise the image goes, and so does whatever only it used.
    /// Unknown names succeed (CRI wants RemoveImage idempotent).
    pub async fn remove(&self, name: &str) -> Result<(), ImageError> {
        let parsed = parse_name(name)?;
        let _collecting = self.gc_lock.write().await;
        let removed = self.store.write(|tx| {
            let images = tx.list::<ImageRecord>()?;
            let Some(image) = find_in(&images, &parsed, name) else {
                return Ok(Ok(false));
            };
            let mut image = image.clone();
            if let ImageName::Ref(r) = &parsed
                && r.digest.is_none()
                && let Some(tag) = r.tagged()
                && image.repo_tags.len() > 1
            {
                image.repo_tags.retain(|t| t != &tag);
                tx.put(&image)?;
                return Ok(Ok(false));
            }
            // An image volume is the image's own layers: the image stays
            // while a container mounts it (KEP-4639), as kubelet's image
            // GC expects of every runtime.
            let mounting: Vec<String> = tx
                .list::<ContainerRecord>()?
                .into_iter()
                .filter(|c| c.image_mounts.iter().any(|m| m.image_id == image.id))
                .map(|c| c.id)
                .take(8)
                .collect();
            if !mounting.is_empty() {
                return Ok(Err(mounting));
            }
            tx.delete::<ImageRecord>(&image.id)?;
            Ok(Ok(true))
        })?;
        let removed = removed.map_err(|containers| ImageError::InUse {
            image: name.to_string(),
            containers,
        })?;
        if removed {
            self.collect_garbage_locked().await?;
        }
        Ok(())
    }

    /// Deletes blobs and layers that no image (and no container) uses.
    pub async fn collect_garbage(&self) -> Result<(), ImageError> {
        let _collecting = self.gc_lock.write().await;
        self.collect_garbage_locked().await
    }

    /// Garbage collection walks and deletes on disk: on the blocking pool,
    /// never on an async worker.
    async fn collect_garbage_locked(&self) -> Result<(), ImageError> {
        let (store, content, snapshots) = (
            self.store.clone(),
            self.content.clone(),
            self.snapshots.clone(),
        );
        tokio::task::spawn_blocking(move || collect_garbage(&store, &content, &snapshots))
            .await
            .map_err(|e| ImageError::Internal(format!("garbage collection task: {e}")))?
    }

    /// The stored config of an image (for verbose status), read and
    /// parsed on the blocking pool (it may be megabytes).
    pub async fn read_config(&self, image: &ImageRecord) -> Result<serde_json::Value, ImageError> {
        let content = self.content.clone();
        let id = image.id.clone();
        tokio::task::spawn_blocking(move || {
            let bytes = content.read(&id, manifest::MAX_CONFIG_BYTES)?;
            serde_json::from_slice(&bytes)
                .map_err(|e| ImageError::Internal(format!("stored config of {id}: {e}")))
        })
        .await
        .map_err(|e| ImageError::Internal(format!("reading config: {e}")))?
    }

    /// Bytes and inodes of content and layers (the image filesystem), and
    /// of containers' read-write layers. The walks run on the blocking pool.
    pub async fn usage(&self) -> Result<FsUsage, ImageError> {
        let content_dir = self.root.join("content");
        let snapshots = self.snapshots.clone();
        tokio::task::spawn_blocking(move || {
            let content = crust_snapshot::dir_usage(&content_dir)?;
            let layers = snapshots.layer_usage()?;
            Ok(FsUsage {
                images: Usage {
                    bytes: content.bytes + layers.bytes,
                    inodes: content.inodes + layers.inodes,
                },
                writable_layers: snapshots.rw_usage()?,
            })
        })
        .await
        .map_err(|e| ImageError::Internal(format!("disk usage task: {e}")))?
    }

    /// Where content and layers live (`image_fs`, or crust's root).
    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn snapshots(&self) -> &Arc<Snapshotter> {
        &self.snapshots
    }
}

fn collect_garbage(
    store: &Store,
    content: &ContentStore,
    snapshots: &Snapshotter,
) -> Result<(), ImageError> {
    let images = store.list::<ImageRecord>()?;
    let containers = store.list::<ContainerRecord>()?;
    let mut blobs = std::collections::HashSet::new();
    let mut chains = std::collections::HashSet::new();
    for image in &images {
        blobs.insert(image.id.clone());
        blobs.extend(image.manifest_digests.iter().cloned());
        for layer in &image.layers {
            blobs.insert(layer.digest.clone());
            chains.insert(layer.chain_id.clone());
        }
    }
    // A container keeps its image's layers even after the image is removed.
    for container in &containers {
        chains.extend(container.image_chain.iter().cloned());
        for mount in &container.image_mounts {
            chains.extend(mount.chain.iter().cloned());
        }
    }
    let mut freed = (0, 0);
    for digest in content.list()? {
        if !blobs.contains(&digest) {
            content.delete(&digest)?;
            freed.0 += 1;
        }
    }
    for chain in snapshots.layers()? {
        if !chains.contains(&chain) {
            snapshots.remove_layer(&chain)?;
            freed.1 += 1;
        }
    }
    if freed != (0, 0) {
        tracing::info!(blobs = freed.0, layers = freed.1, "garbage collected");
    }
    Ok(())
}

fn add_unique(list: &mut Vec<String>, item: &str) {
    if !list.iter().any(|x| x == item) {
        list.push(item.to_string());
    }
}

fn now_nanos() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as i64)
}

/// Looks `name` up among `images` the ways CRI clients name images.
fn find_in<'a>(
    images: &'a [ImageRecord],
    parsed: &ImageName,
    name: &str,
) -> Option<&'a ImageRecord> {
    // A unique prefix of an ID, as `crictl rmi 4d2256d5` uses.
    let hex_prefix = name.trim_start_matches("sha256:");
    if hex_prefix.len() >= 6
        && hex_prefix.len() < 64
        && hex_prefix.bytes().all(|b| b.is_ascii_hexdigit())
    {
        let matches: Vec<_> = images
            .iter()
            .filter(|i| i.id.trim_start_matches("sha256:").starts_with(hex_prefix))
            .collect();
        if matches.len() == 1 {
            return Some(matches[0]);
        }
    }
    match parsed {
        ImageName::Id(id) => images.iter().find(|i| &i.id == id),
        ImageName::Ref(r) => match (&r.digest, r.tagged()) {
            (Some(d), _) => {
                let wanted = r.with_digest(d);
                images.iter().find(|i| i.repo_digests.contains(&wanted))
            }
            (None, Some(tag)) => images.iter().find(|i| i.repo_tags.contains(&tag)),
            (None, None) => None,
        },
    }
}

/// `registry/repository` of a `registry/repository@digest` name.
fn repository_of(repo_digest: &str) -> &str {
    repo_digest.split('@').next().unwrap_or(repo_digest)
}
