//! Pulling an image: resolve the manifest (through mirrors), fetch the
//! config, then download every missing layer in parallel, hashing,
//! decompressing and unpacking each in one pass while it downloads.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use sha2::{Digest, Sha256};
use tokio::sync::{Semaphore, mpsc};

use crust_config::RegistriesConfig;
use crust_snapshot::Snapshotter;
use crust_store::{ImageConfig, LayerRecord};

use crate::ImageError;
use crate::content::ContentStore;
use crate::manifest::{
    ACCEPTED_MANIFEST_TYPES, BlobRef, Compression, Document, LayerRef, MAX_CONFIG_BYTES,
    MAX_MANIFEST_BYTES, Platform, chain_ids, parse_config, parse_document, select_platform,
};
use crate::progress::Progress;
use crate::reference::ImageRef;
use crate::registry::{Auth, Credentials, Endpoint, RegistryClient, endpoints, reference_at};

/// How often pull progress is logged.
const PROGRESS_INTERVAL: Duration = Duration::from_secs(5);

/// What a successful pull produced.
#[derive(Debug)]
pub struct Pulled {
    /// Digest of the document the reference resolved to (index or manifest).
    pub manifest_digest: String,
    /// Every manifest and index digest of the image, for garbage collection.
    pub manifest_digests: Vec<String>,
    pub config_digest: String,
    pub config: ImageConfig,
    pub layers: Vec<LayerRecord>,
    /// Compressed bytes of config and layers.
    pub size: u64,
    /// The policy scope and key that verified its signature, if one had to.
    /// (scope, key file, key fingerprint).
    pub verified_by: Option<(String, std::path::PathBuf, String)>,
}

pub struct Puller {
    content: Arc<ContentStore>,
    snapshots: Arc<Snapshotter>,
    config: RegistriesConfig,
    ca_certs: Vec<Vec<u8>>,
    platform: Platform,
    policy: crate::policy::Policy,
    pulls: Arc<crate::progress::PullsInFlight>,
    observer: Option<crate::progress::PullObserver>,
    /// One lock per chain id, so concurrent pulls fetch a layer once.
    layer_locks: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
}

/// A registry client bound to the endpoint that answered.
struct Source {
    client: RegistryClient,
    endpoint: Endpoint,
}

impl Puller {
    pub fn new(
        content: Arc<ContentStore>,
        snapshots: Arc<Snapshotter>,
        config: RegistriesConfig,
        policy: crate::policy::Policy,
        observer: Option<crate::progress::PullObserver>,
        platform: Platform,
    ) -> Result<Puller, ImageError> {
        let ca_certs = config
            .ca_files
            .iter()
            .map(|path| {
                std::fs::read(path).map_err(|e| {
                    ImageError::Config(format!("cannot read CA file {}: {e}", path.display()))
                })
            })
            .collect::<Result<_, _>>()?;
        Ok(Puller {
            content,
            snapshots,
            config,
            ca_certs,
            platform,
            policy,
            pulls: Arc::new(crate::progress::PullsInFlight::default()),
            observer,
            layer_locks: Mutex::new(HashMap::new()),
        })
    }

    fn stall_timeout(&self) -> Duration {
        Duration::from_secs(self.config.pull_progress_timeout_seconds)
    }

    pub fn policy(&self) -> &crate::policy::Policy {
        &self.policy
    }

    /// The pulls in flight now.
    pub fn pulls_in_flight(&self) -> Vec<crate::progress::PullSnapshot> {
        self.pulls.snapshot()
    }

    fn observe(&self, event: crate::progress::PullEvent<'_>) {
        if let Some(o) = &self.observer {
            o(event);
        }
    }

    pub async fn pull(&self, image: &ImageRef, creds: &Credentials) -> Result<Pulled, ImageError> {
        let in_flight = self.pulls.start(&image.to_string());
        let started = std::time::Instant::now();
        // Finished is told when this goes, also if the pull is cancelled.
        let mut observed = ObservedPull::start(self.observer.clone(), &image.registry, started);
        let result = self.pull_tracked(image, creds, &in_flight, started).await;
        observed.ok = result.is_ok();
        result
    }

    async fn pull_tracked(
        &self,
        image: &ImageRef,
        creds: &Credentials,
        in_flight: &crate::progress::InFlight,
        started: std::time::Instant,
    ) -> Result<Pulled, ImageError> {
        let (source, top_bytes, top_digest) = self.resolve(image, creds).await?;
        in_flight.via(&source.endpoint.host);
        // Before any layer: a refused image leaves nothing behind.
        let verified_by = self.enforce_policy(&source, image, &top_digest).await?;
        let mut manifest_digests = vec![top_digest.clone()];
        // Manifests and config land in the content store only once every
        // layer has: a refused or failed pull leaves nothing of its own.
        let mut documents: Vec<(String, Vec<u8>)> = Vec::new();
        let (config_ref, layers) = match parse_document(&top_bytes)? {
            Document::Manifest { config, layers } => (config, layers),
            Document::Index(entries) => {
                let entry = select_platform(&entries, &self.platform)?;
                let bytes = self
                    .fetch_manifest(&source, image, Some(&entry.blob.digest))
                    .await?;
                verify_digest(&bytes, &entry.blob.digest)?;
                let parsed = parse_document(&bytes)?;
                documents.push((entry.blob.digest.clone(), bytes));
                manifest_digests.push(entry.blob.digest.clone());
                match parsed {
                    Document::Manifest { config, layers } => (config, layers),
                    Document::Index(_) => {
                        return Err(ImageError::Invalid(
                            "an index points at another index; nested indexes are not supported"
                                .into(),
                        ));
                    }
                }
            }
        };
        documents.insert(0, (top_digest.clone(), top_bytes));
        let config_bytes = self.fetch_config(&source, image, &config_ref).await?;
        let parsed = parse_config(&config_bytes)?;
        if parsed.diff_ids.len() != layers.len() {
            return Err(ImageError::Invalid(format!(
                "the manifest has {} layers but the config lists {} diff ids",
                layers.len(),
                parsed.diff_ids.len()
            )));
        }
        let chains = chain_ids(&parsed.diff_ids);
        let records: Vec<LayerRecord> = layers
            .iter()
            .zip(&parsed.diff_ids)
            .zip(&chains)
            .map(|((layer, diff_id), chain_id)| LayerRecord {
                digest: layer.blob.digest.clone(),
                media_type: layer.blob.media_type.clone(),
                size: layer.blob.size,
                diff_id: diff_id.clone(),
                chain_id: chain_id.clone(),
            })
            .collect();
        self.fetch_layers(&source, image, &layers, &records, in_flight, started)
            .await?;
        documents.push((config_ref.digest.clone(), config_bytes));
        let content = self.content.clone();
        tokio::task::spawn_blocking(move || {
            for (digest, bytes) in &documents {
                content.put(digest, bytes)?;
            }
            Ok::<_, ImageError>(())
        })
        .await
        .map_err(|e| ImageError::Internal(format!("storing manifests: {e}")))??;
        let size = config_ref.size + layers.iter().map(|l| l.blob.size).sum::<u64>();
        Ok(Pulled {
            manifest_digest: top_digest,
            manifest_digests,
            config_digest: config_ref.digest,
            config: parsed.config,
            layers: records,
            size,
            verified_by,
        })
    }

    /// Applies `images.policy` to the digest the reference resolved to;
    /// the scope and key that verified it, when a signature was needed.
    async fn enforce_policy(
        &self,
        source: &Source,
        image: &ImageRef,
        digest: &str,
    ) -> Result<Option<(String, std::path::PathBuf, String)>, ImageError> {
        use crate::policy::{Decision, Mismatch};
        let refuse = |scope: &str, rule: &'static str, reason: String| {
            tracing::warn!(image = %image, digest, scope, rule, reason, "image refused by policy");
            self.policy.observe("refused");
            ImageError::Policy {
                image: image.to_string(),
                digest: digest.to_string(),
                scope: scope.to_string(),
                rule,
                reason,
            }
        };
        let (scope, keys) = match self.policy.decide(image) {
            Decision::Accept => return Ok(None),
            Decision::Reject(scope) => {
                return Err(refuse(
                    scope,
                    "reject",
                    "the scope rejects every image".into(),
                ));
            }
            Decision::Verify(scope, keys) => (scope, keys),
        };
        let name = image.to_string();
        let tag = crate::policy::signature_tag(digest);
        let manifest = match source
            .client
            .manifest(
                &tag,
                &[
                    crate::manifest::OCI_MANIFEST,
                    crate::manifest::DOCKER_MANIFEST,
                ],
                crate::policy::MAX_SIGNATURE_MANIFEST_BYTES,
                &name,
            )
            .await
        {
            Ok(m) => m,
            Err(ImageError::NotFound { .. }) => {
                return Err(refuse(
                    scope,
                    "signed_by",
                    format!("no signature ({tag} not found)"),
                ));
            }
            Err(e) => return Err(e),
        };
        let layers = crate::policy::signature_layers(&manifest)
            .map_err(|e| refuse(scope, "signed_by", format!("bad signature: {e}")))?;
        let mut last = Mismatch::NotByKey;
        for layer in &layers {
            // The registry names the payload: a digest, or nothing fetched.
            if !crate::reference::is_sha256_digest(&layer.payload_digest) {
                last = Mismatch::Malformed(format!(
                    "its payload digest {:?} is not a sha256 digest",
                    layer.payload_digest.chars().take(80).collect::<String>()
                ));
                continue;
            }
            let mut response = match source.client.blob(&layer.payload_digest, &name).await {
                Ok(r) => r,
                Err(ImageError::NotFound { .. }) => {
                    last = Mismatch::Malformed(format!(
                        "its payload {} is not in the registry",
                        layer.payload_digest
                    ));
                    continue;
                }
                Err(e) => return Err(e),
            };
            let payload = crate::registry::read_capped(
                &mut response,
                crate::policy::MAX_PAYLOAD_BYTES,
                self.stall_timeout(),
            )
            .await
            .map_err(|_| {
                refuse(
                    scope,
                    "signed_by",
                    "bad signature: unreadable payload".into(),
                )
            })?;
            if verify_digest(&payload, &layer.payload_digest).is_err() {
                last = Mismatch::Malformed("its payload does not match its digest".into());
                continue;
            }
            match crate::policy::verify(&payload, &layer.signature, digest, keys) {
                Ok(key) => {
                    tracing::info!(image = %image, digest, scope, key = %key.path.display(), "signature verified");
                    self.policy.observe("verified");
                    return Ok(Some((
                        scope.to_string(),
                        key.path.clone(),
                        key.fingerprint.clone(),
                    )));
                }
                Err(m) => last = m,
            }
        }
        Err(match (layers.is_empty(), last) {
            (true, _) => refuse(
                scope,
                "signed_by",
                format!("no signature (no signature layer in {tag})"),
            ),
            (false, Mismatch::NotByKey) => refuse(
                scope,
                "signed_by",
                format!(
                    "signed, but not by any key of scope {scope:?} (or the signature does not match its payload)"
                ),
            ),
            (false, Mismatch::OtherDigest(other)) => refuse(
                scope,
                "signed_by",
                format!("bad signature: it signs {other}, not this digest"),
            ),
            (false, Mismatch::Malformed(why)) => {
                refuse(scope, "signed_by", format!("bad signature: {why}"))
            }
        })
    }

    /// Tries each endpoint in order; the first that serves the manifest is
    /// used for the whole pull.
    async fn resolve(
        &self,
        image: &ImageRef,
        creds: &Credentials,
    ) -> Result<(Source, Vec<u8>, String), ImageError> {
        let mut failures = Vec::new();
        for endpoint in endpoints(&self.config, &image.registry) {
            let (_, mut auth) = reference_at(&endpoint, image, &image.registry, None, creds);
            if !endpoint.is_mirror
                && !creds.identity_token.is_empty()
                && creds.belongs_to(&image.registry)
            {
                let scheme = if endpoint.plain_http { "http" } else { "https" };
                let token = crate::token::exchange(
                    &format!("{scheme}://{}", endpoint.host),
                    &image.repository,
                    &creds.identity_token,
                    &self.ca_certs,
                    endpoint.skip_verify,
                    self.stall_timeout(),
                )
                .await?;
                auth = Auth::Bearer(token);
            }
            let client = RegistryClient::new(
                &endpoint,
                &image.repository,
                auth,
                &self.ca_certs,
                self.stall_timeout(),
            )?;
            let source = Source {
                client,
                endpoint: endpoint.clone(),
            };
            match self.fetch_manifest(&source, image, None).await {
                Ok(bytes) => {
                    let digest = sha256_of(&bytes);
                    if let Some(pinned) = &image.digest {
                        verify_digest(&bytes, pinned)?;
                    }
                    if endpoint.is_mirror {
                        tracing::info!(image = %image, mirror = %endpoint.host, "pulling through mirror");
                    }
                    return Ok((source, bytes, digest));
                }
                Err(e) if endpoint.is_mirror => {
                    tracing::warn!(image = %image, mirror = %endpoint.host, error = %e, "mirror failed, trying the next");
                    failures.push(format!("mirror {}: {e}", endpoint.host));
                }
                Err(e) if failures.is_empty() => return Err(e),
                Err(e) => {
                    return Err(ImageError::with_context(
                        e,
                        &format!("(after mirrors failed: {})", failures.join("; ")),
                    ));
                }
            }
        }
        unreachable!("endpoints() always ends with the upstream registry")
    }

    async fn fetch_manifest(
        &self,
        source: &Source,
        image: &ImageRef,
        digest: Option<&str>,
    ) -> Result<Vec<u8>, ImageError> {
        let (reference, _) = reference_at(
            &source.endpoint,
            image,
            &image.registry,
            digest,
            &Credentials::default(),
        );
        let name = image.to_string();
        let fetch = source.client.manifest(
            &reference,
            ACCEPTED_MANIFEST_TYPES,
            MAX_MANIFEST_BYTES,
            &name,
        );
        tokio::time::timeout(self.stall_timeout(), fetch)
            .await
            .map_err(|_| ImageError::Stalled(format!("manifest of {image}")))?
    }

    async fn fetch_config(
        &self,
        source: &Source,
        image: &ImageRef,
        config: &BlobRef,
    ) -> Result<Vec<u8>, ImageError> {
        if config.size > MAX_CONFIG_BYTES {
            return Err(ImageError::Invalid(format!(
                "image config is {} bytes, over the {MAX_CONFIG_BYTES}-byte limit",
                config.size
            )));
        }
        if self.content.has(&config.digest) {
            let content = self.content.clone();
            let digest = config.digest.clone();
            return tokio::task::spawn_blocking(move || content.read(&digest, MAX_CONFIG_BYTES))
                .await
                .map_err(|e| ImageError::Internal(format!("reading config: {e}")))?
                .map_err(ImageError::from);
        }
        let mut response = tokio::time::timeout(
            self.stall_timeout(),
            source.client.blob(&config.digest, &image.to_string()),
        )
        .await
        .map_err(|_| ImageError::Stalled(format!("config of {image}")))??;
        let mut bytes = Vec::with_capacity(config.size as usize);
        while let Some(chunk) = tokio::time::timeout(self.stall_timeout(), response.chunk())
            .await
            .map_err(|_| ImageError::Stalled(format!("config of {image}")))?
            .map_err(|e| {
                ImageError::Transfer(format!(
                    "config of {image} from {}: {}",
                    source.client.host,
                    crate::registry::describe(&e)
                ))
            })?
        {
            if bytes.len() + chunk.len() > config.size as usize {
                return Err(ImageError::Invalid(format!(
                    "config blob {} is larger than its descriptor says ({} bytes)",
                    config.digest, config.size
                )));
            }
            bytes.extend_from_slice(&chunk);
        }
        // Stored with the manifests once the pull succeeds; verified now.
        let actual = sha256_of(&bytes);
        if actual != config.digest || bytes.len() as u64 != config.size {
            return Err(ImageError::Invalid(format!(
                "config blob {} does not match its content: got {actual}, {} bytes (expected {})",
                config.digest,
                bytes.len(),
                config.size
            )));
        }
        Ok(bytes)
    }

    async fn fetch_layers(
        &self,
        source: &Source,
        image: &ImageRef,
        layers: &[LayerRef],
        records: &[LayerRecord],
        in_flight: &crate::progress::InFlight,
        started: std::time::Instant,
    ) -> Result<(), ImageError> {
        let progress = Arc::new(Progress::new(layers.iter().map(|l| l.blob.size).collect()));
        in_flight.progress(progress.clone());
        let semaphore = Semaphore::new(self.config.max_concurrent_downloads);
        let reporter = {
            let progress = progress.clone();
            let image = image.to_string();
            let via = source.endpoint.host.clone();
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(PROGRESS_INTERVAL);
                tick.tick().await;
                loop {
                    tick.tick().await;
                    progress.log(&image, &via, started);
                }
            })
        };
        let downloads = layers
            .iter()
            .zip(records)
            .enumerate()
            .map(|(i, (layer, record))| {
                let semaphore = &semaphore;
                let progress = progress.clone();
                async move {
                    let _permit = semaphore
                        .acquire()
                        .await
                        .expect("semaphore is never closed");
                    self.fetch_layer(source, image, layer, record, &progress, i)
                        .await
                }
            });
        let results = futures_util::future::join_all(downloads).await;
        reporter.abort();
        progress.log(&image.to_string(), &source.endpoint.host, started);
        results.into_iter().collect::<Result<Vec<()>, _>>()?;
        Ok(())
    }

    fn layer_lock(&self, chain_id: &str) -> Arc<tokio::sync::Mutex<()>> {
        let mut locks = self.layer_locks.lock().expect("layer lock map");
        locks.retain(|_, l| Arc::strong_count(l) > 1);
        locks.entry(chain_id.to_string()).or_default().clone()
    }

    async fn fetch_layer(
        &self,
        source: &Source,
        image: &ImageRef,
        layer: &LayerRef,
        record: &LayerRecord,
        progress: &Progress,
        index: usize,
    ) -> Result<(), ImageError> {
        let lock = self.layer_lock(&record.chain_id);
        let _held = lock.lock().await;
        if self.snapshots.has_layer(&record.chain_id) && self.content.has(&record.digest) {
            progress.skip(index);
            return Ok(());
        }
        let mut response = tokio::time::timeout(
            self.stall_timeout(),
            source.client.blob(&layer.blob.digest, &image.to_string()),
        )
        .await
        .map_err(|_| ImageError::Stalled(format!("layer {} of {image}", layer.blob.digest)))??;
        let (tx, rx) = mpsc::channel::<Bytes>(16);
        let expected = layer.clone();
        let diff_id = record.diff_id.clone();
        let chain_id = record.chain_id.clone();
        let content = self.content.clone();
        let snapshots = self.snapshots.clone();
        let limit = self.config.max_layer_uncompressed_bytes;
        // The blocking half hashes, stores, decompresses and unpacks; a
        // failure drops its temp file and temp dir (nothing is left).
        let unpack = tokio::task::spawn_blocking(move || {
            let ingest = content.ingest()?;
            let pending = snapshots.begin_layer()?;
            unpack_stream(rx, ingest, pending, &expected, &diff_id, &chain_id, limit)
        });
        let mut received: u64 = 0;
        let transfer = loop {
            let next = tokio::time::timeout(self.stall_timeout(), response.chunk()).await;
            match next {
                Err(_) => {
                    break Err(ImageError::Stalled(format!(
                        "layer {} of {image} ({received} of {} bytes)",
                        layer.blob.digest, layer.blob.size
                    )));
                }
                Ok(Ok(None)) => break Ok(()),
                Ok(Err(e)) => {
                    break Err(ImageError::Transfer(format!(
                        "layer {} from {}: {}",
                        layer.blob.digest,
                        source.client.host,
                        crate::registry::describe(&e)
                    )));
                }
                Ok(Ok(Some(chunk))) => {
                    received += chunk.len() as u64;
                    if received > layer.blob.size {
                        break Err(ImageError::Invalid(format!(
                            "layer {} is larger than its descriptor says ({} bytes)",
                            layer.blob.digest, layer.blob.size
                        )));
                    }
                    progress.add(index, chunk.len() as u64);
                    self.observe(crate::progress::PullEvent::Bytes {
                        registry: &image.registry,
                        bytes: chunk.len() as u64,
                    });
                    if tx.send(chunk).await.is_err() {
                        break Ok(()); // the unpacker stopped; its error says why
                    }
                }
            }
        };
        drop(tx);
        let unpacked = unpack
            .await
            .map_err(|e| ImageError::Internal(format!("unpack task: {e}")))?;
        transfer?;
        unpacked?;
        progress.finish(index);
        Ok(())
    }
}

/// The blocking half of a layer download: every byte goes to the content
/// store (hashed), through the decompressor (hashed again for the diff id)
/// and into the tar unpacker. Both land only when every digest matches.
fn unpack_stream(
    rx: mpsc::Receiver<Bytes>,
    mut ingest: crate::content::Ingest,
    pending: crust_snapshot::PendingLayer,
    layer: &LayerRef,
    diff_id: &str,
    chain_id: &str,
    max_uncompressed: u64,
) -> Result<(), ImageError> {
    let mut source = ChannelReader {
        rx,
        chunk: Bytes::new(),
    };
    let mut tee = TeeReader {
        inner: &mut source,
        sink: &mut ingest,
    };
    let (unpacked, drained, actual_diff) = decompress_and_unpack(
        &mut tee,
        layer.compression,
        pending.path(),
        max_uncompressed,
    );
    if let Err(crust_snapshot::UnpackError::TooLarge { limit }) = &unpacked {
        // Refused while decompressing: no digest can redeem it.
        return Err(ImageError::Unpack(format!(
            "layer {}: it decompresses to more than {limit} bytes (registries.max_layer_uncompressed_bytes)",
            layer.blob.digest
        )));
    }
    // Read to the end: the digests cover every byte (and a truncated or
    // corrupt stream shows up as a digest mismatch).
    let _ = std::io::copy(&mut tee, &mut std::io::sink());
    if ingest.digest() != layer.blob.digest || ingest.size() != layer.blob.size {
        return Err(ImageError::Invalid(format!(
            "layer {} failed verification: got {} ({} bytes, expected {})",
            layer.blob.digest,
            ingest.digest(),
            ingest.size(),
            layer.blob.size
        )));
    }
    unpacked.map_err(|e| ImageError::Unpack(format!("layer {}: {e}", layer.blob.digest)))?;
    drained.map_err(|e| ImageError::Invalid(format!("layer {}: {e}", layer.blob.digest)))?;
    if actual_diff != diff_id {
        return Err(ImageError::Invalid(format!(
            "layer {} unpacks to {actual_diff}, but the config says {diff_id}",
            layer.blob.digest
        )));
    }
    ingest.commit(&layer.blob.digest, layer.blob.size)?;
    pending.commit(chain_id)?;
    Ok(())
}

/// Decompresses and unpacks, hashing the uncompressed stream (diff id),
/// refusing more than `max_uncompressed` bytes of it. Returns the unpack
/// result, the result of reading the rest, and the diff id of everything
/// read.
fn decompress_and_unpack(
    compressed: &mut dyn Read,
    compression: Compression,
    dest: &std::path::Path,
    max_uncompressed: u64,
) -> (
    Result<(), crust_snapshot::UnpackError>,
    std::io::Result<u64>,
    String,
) {
    let decompressed: Box<dyn Read + '_> = match compression {
        Compression::None => Box::new(compressed),
        Compression::Gzip => Box::new(flate2::read::MultiGzDecoder::new(compressed)),
        Compression::Zstd => match zstd::stream::read::Decoder::new(compressed) {
            Ok(decoder) => Box::new(decoder),
            Err(e) => {
                let e = crust_snapshot::UnpackError::Read {
                    context: "opening the zstd stream".into(),
                    source: e,
                };
                return (Err(e), Ok(0), String::new());
            }
        },
    };
    let mut hashed = HashReader {
        inner: decompressed,
        hasher: Sha256::new(),
    };
    let unpacked =
        crust_snapshot::unpack_layer_capped(&mut hashed, dest, max_uncompressed).map(|_| ());
    // unpack_layer_capped reads to the end itself; after a failure the
    // rest is not decompressed (a bomb would only burn CPU).
    let drained = match &unpacked {
        Ok(()) => std::io::copy(&mut hashed, &mut std::io::sink()),
        Err(_) => Ok(0),
    };
    let diff_id = format!("sha256:{}", hex::encode(hashed.hasher.finalize()));
    (unpacked, drained, diff_id)
}

fn sha256_of(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

fn verify_digest(bytes: &[u8], expected: &str) -> Result<(), ImageError> {
    let actual = sha256_of(bytes);
    if actual != expected {
        return Err(ImageError::Invalid(format!(
            "manifest digest mismatch: asked for {expected}, the registry sent {actual}"
        )));
    }
    Ok(())
}

/// Reads the chunks the async half sends; EOF when it hangs up.
struct ChannelReader {
    rx: mpsc::Receiver<Bytes>,
    chunk: Bytes,
}

impl Read for ChannelReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        while self.chunk.is_empty() {
            match self.rx.blocking_recv() {
                Some(chunk) => self.chunk = chunk,
                None => return Ok(0),
            }
        }
        let n = buf.len().min(self.chunk.len());
        buf[..n].copy_from_slice(&self.chunk.split_to(n));
        Ok(n)
    }
}

/// Copies everything read into `sink`.
struct TeeReader<'a, R: Read, W: Write> {
    inner: &'a mut R,
    sink: &'a mut W,
}

impl<R: Read, W: Write> Read for TeeReader<'_, R, W> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.sink.write_all(&buf[..n])?;
        Ok(n)
    }
}

struct HashReader<R: Read> {
    inner: R,
    hasher: Sha256,
}

impl<R: Read> Read for HashReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }
}

/// Tells the pull observer of a pull's start now and of its end when
/// dropped: done, failed or cancelled (the in-flight count never leaks).
struct ObservedPull {
    observer: Option<crate::progress::PullObserver>,
    registry: String,
    started: std::time::Instant,
    ok: bool,
}

impl ObservedPull {
    fn start(
        observer: Option<crate::progress::PullObserver>,
        registry: &str,
        started: std::time::Instant,
    ) -> ObservedPull {
        if let Some(o) = &observer {
            o(crate::progress::PullEvent::Started { registry });
        }
        ObservedPull {
            observer,
            registry: registry.to_string(),
            started,
            ok: false,
        }
    }
}

impl Drop for ObservedPull {
    fn drop(&mut self) {
        if let Some(o) = &self.observer {
            o(crate::progress::PullEvent::Finished {
                registry: &self.registry,
                seconds: self.started.elapsed().as_secs_f64(),
                ok: self.ok,
            });
        }
    }
}
