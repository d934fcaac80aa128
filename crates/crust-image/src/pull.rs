//! Pulling an image: resolve the manifest (through mirrors), fetch the
//! config, then download every missing layer in parallel, hashing,
//! decompressing and unpacking each in one pass while it downloads.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt;
use oci_client::Client;
use oci_client::manifest::OciDescriptor;
use oci_client::secrets::RegistryAuth;
use sha2::{Digest, Sha256};
use tokio::sync::{Semaphore, mpsc};

use crust_config::RegistriesConfig;
use crust_snapshot::Snapshotter;
use crust_store::{ImageConfig, LayerRecord};

use crate::ImageError;
use crate::content::ContentStore;
use crate::manifest::{
    ACCEPTED_MANIFEST_TYPES, BlobRef, Compression, Document, LayerRef, MAX_CONFIG_BYTES, Platform,
    chain_ids, parse_config, parse_document, select_platform,
};
use crate::reference::ImageRef;
use crate::registry::{Credentials, Endpoint, client_for, endpoints, reference_at};

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
}

pub struct Puller {
    content: Arc<ContentStore>,
    snapshots: Arc<Snapshotter>,
    config: RegistriesConfig,
    ca_certs: Vec<Vec<u8>>,
    platform: Platform,
    /// One lock per chain id, so concurrent pulls fetch a layer once.
    layer_locks: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
}

/// A registry client bound to the endpoint that answered.
struct Source {
    client: Client,
    endpoint: Endpoint,
    auth: RegistryAuth,
}

impl Puller {
    pub fn new(
        content: Arc<ContentStore>,
        snapshots: Arc<Snapshotter>,
        config: RegistriesConfig,
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
            layer_locks: Mutex::new(HashMap::new()),
        })
    }

    fn stall_timeout(&self) -> Duration {
        Duration::from_secs(self.config.pull_progress_timeout_seconds)
    }

    pub async fn pull(&self, image: &ImageRef, creds: &Credentials) -> Result<Pulled, ImageError> {
        let (source, top_bytes, top_digest) = self.resolve(image, creds).await?;
        let mut manifest_digests = vec![top_digest.clone()];
        self.content.put(&top_digest, &top_bytes)?;
        let (config_ref, layers) = match parse_document(&top_bytes)? {
            Document::Manifest { config, layers } => (config, layers),
            Document::Index(entries) => {
                let entry = select_platform(&entries, &self.platform)?;
                let bytes = self
                    .fetch_manifest(&source, image, Some(&entry.blob.digest))
                    .await?;
                verify_digest(&bytes, &entry.blob.digest)?;
                self.content.put(&entry.blob.digest, &bytes)?;
                manifest_digests.push(entry.blob.digest.clone());
                match parse_document(&bytes)? {
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
        self.fetch_layers(&source, image, &layers, &records).await?;
        let size = config_ref.size + layers.iter().map(|l| l.blob.size).sum::<u64>();
        Ok(Pulled {
            manifest_digest: top_digest,
            manifest_digests,
            config_digest: config_ref.digest,
            config: parsed.config,
            layers: records,
            size,
        })
    }

    /// Tries each endpoint in order; the first that serves the manifest is
    /// used for the whole pull.
    async fn resolve(
        &self,
        image: &ImageRef,
        creds: &Credentials,
    ) -> Result<(Source, Bytes, String), ImageError> {
        let mut failures = Vec::new();
        for endpoint in endpoints(&self.config, &image.registry) {
            let client = client_for(&endpoint, &self.ca_certs, self.stall_timeout());
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
                auth = RegistryAuth::Bearer(token);
            }
            let source = Source {
                client,
                endpoint: endpoint.clone(),
                auth,
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
    ) -> Result<Bytes, ImageError> {
        let (reference, _) = reference_at(
            &source.endpoint,
            image,
            &image.registry,
            digest,
            &Credentials::default(),
        );
        let (bytes, _) = tokio::time::timeout(
            self.stall_timeout(),
            source
                .client
                .pull_manifest_raw(&reference, &source.auth, ACCEPTED_MANIFEST_TYPES),
        )
        .await
        .map_err(|_| ImageError::Stalled(format!("manifest of {image}")))?
        .map_err(|e| ImageError::registry(e, image))?;
        Ok(bytes)
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
            return Ok(self.content.read(&config.digest, MAX_CONFIG_BYTES)?);
        }
        let (reference, _) = reference_at(
            &source.endpoint,
            image,
            &image.registry,
            None,
            &Credentials::default(),
        );
        let mut stream = source
            .client
            .pull_blob_stream(&reference, &descriptor(config))
            .await
            .map_err(|e| ImageError::registry(e, image))?;
        let mut bytes = Vec::with_capacity(config.size as usize);
        while let Some(chunk) = tokio::time::timeout(self.stall_timeout(), stream.next())
            .await
            .map_err(|_| ImageError::Stalled(format!("config of {image}")))?
        {
            let chunk =
                chunk.map_err(|e| ImageError::Transfer(format!("config of {image}: {e}")))?;
            if bytes.len() + chunk.len() > config.size as usize {
                return Err(ImageError::Invalid(format!(
                    "config blob {} is larger than its descriptor says ({} bytes)",
                    config.digest, config.size
                )));
            }
            bytes.extend_from_slice(&chunk);
        }
        self.content.put(&config.digest, &bytes)?;
        Ok(bytes)
    }

    async fn fetch_layers(
        &self,
        source: &Source,
        image: &ImageRef,
        layers: &[LayerRef],
        records: &[LayerRecord],
    ) -> Result<(), ImageError> {
        let progress = Arc::new(Progress::new(layers));
        let semaphore = Semaphore::new(self.config.max_concurrent_downloads);
        let reporter = {
            let progress = progress.clone();
            let image = image.to_string();
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(PROGRESS_INTERVAL);
                tick.tick().await;
                loop {
                    tick.tick().await;
                    progress.log(&image);
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
        progress.log(image.to_string().as_str());
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
        let (reference, _) = reference_at(
            &source.endpoint,
            image,
            &image.registry,
            None,
            &Credentials::default(),
        );
        let mut stream = source
            .client
            .pull_blob_stream(&reference, &descriptor(&layer.blob))
            .await
            .map_err(|e| ImageError::registry(e, image))?;
        let ingest = self.content.ingest()?;
        let pending = self.snapshots.begin_layer()?;
        let (tx, rx) = mpsc::channel::<Bytes>(16);
        let expected = layer.clone();
        let diff_id = record.diff_id.clone();
        let chain_id = record.chain_id.clone();
        // The blocking half hashes, stores, decompresses and unpacks.
        let unpack = tokio::task::spawn_blocking(move || {
            unpack_stream(rx, ingest, pending, &expected, &diff_id, &chain_id)
        });
        let mut received: u64 = 0;
        let transfer = loop {
            let next = tokio::time::timeout(self.stall_timeout(), stream.next()).await;
            match next {
                Err(_) => {
                    break Err(ImageError::Stalled(format!(
                        "layer {} of {image} ({received} of {} bytes)",
                        layer.blob.digest, layer.blob.size
                    )));
                }
                Ok(None) => break Ok(()),
                Ok(Some(Err(e))) => {
                    break Err(ImageError::Transfer(format!(
                        "layer {}: {e}",
                        layer.blob.digest
                    )));
                }
                Ok(Some(Ok(chunk))) => {
                    received += chunk.len() as u64;
                    if received > layer.blob.size {
                        break Err(ImageError::Invalid(format!(
                            "layer {} is larger than its descriptor says ({} bytes)",
                            layer.blob.digest, layer.blob.size
                        )));
                    }
                    progress.add(index, chunk.len() as u64);
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
) -> Result<(), ImageError> {
    let mut source = ChannelReader {
        rx,
        chunk: Bytes::new(),
    };
    let mut tee = TeeReader {
        inner: &mut source,
        sink: &mut ingest,
    };
    let (unpacked, drained, actual_diff) =
        decompress_and_unpack(&mut tee, layer.compression, pending.path());
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

/// Decompresses and unpacks, hashing the uncompressed stream (diff id).
/// Returns the unpack result, the result of reading the rest, and the
/// diff id of everything read.
fn decompress_and_unpack(
    compressed: &mut dyn Read,
    compression: Compression,
    dest: &std::path::Path,
) -> (Result<(), String>, std::io::Result<u64>, String) {
    let decompressed: Box<dyn Read + '_> = match compression {
        Compression::None => Box::new(compressed),
        Compression::Gzip => Box::new(flate2::read::MultiGzDecoder::new(compressed)),
        Compression::Zstd => match zstd::stream::read::Decoder::new(compressed) {
            Ok(decoder) => Box::new(decoder),
            Err(e) => return (Err(format!("zstd: {e}")), Ok(0), String::new()),
        },
    };
    let mut hashed = HashReader {
        inner: decompressed,
        hasher: Sha256::new(),
    };
    let unpacked = crust_snapshot::unpack_layer(&mut hashed, dest)
        .map(|_| ())
        .map_err(|e| e.to_string());
    let drained = std::io::copy(&mut hashed, &mut std::io::sink());
    let diff_id = format!("sha256:{}", hex::encode(hashed.hasher.finalize()));
    (unpacked, drained, diff_id)
}

fn descriptor(blob: &BlobRef) -> OciDescriptor {
    OciDescriptor {
        media_type: blob.media_type.clone(),
        digest: blob.digest.clone(),
        size: blob.size as i64,
        ..Default::default()
    }
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

/// Bytes done per layer, for the progress log.
struct Progress {
    totals: Vec<u64>,
    done: Vec<AtomicU64>,
    finished: AtomicUsize,
    skipped: AtomicUsize,
}

impl Progress {
    fn new(layers: &[LayerRef]) -> Progress {
        Progress {
            totals: layers.iter().map(|l| l.blob.size).collect(),
            done: layers.iter().map(|_| AtomicU64::new(0)).collect(),
            finished: AtomicUsize::new(0),
            skipped: AtomicUsize::new(0),
        }
    }

    fn add(&self, i: usize, n: u64) {
        self.done[i].fetch_add(n, Ordering::Relaxed);
    }

    fn finish(&self, _i: usize) {
        self.finished.fetch_add(1, Ordering::Relaxed);
    }

    fn skip(&self, i: usize) {
        self.done[i].store(self.totals[i], Ordering::Relaxed);
        self.skipped.fetch_add(1, Ordering::Relaxed);
    }

    fn log(&self, image: &str) {
        let done: u64 = self.done.iter().map(|d| d.load(Ordering::Relaxed)).sum();
        let total: u64 = self.totals.iter().sum();
        let per_layer: Vec<String> = self
            .done
            .iter()
            .zip(&self.totals)
            .map(|(d, t)| format!("{}/{t}", d.load(Ordering::Relaxed)))
            .collect();
        tracing::info!(
            image,
            layers_done = self.finished.load(Ordering::Relaxed),
            layers_present = self.skipped.load(Ordering::Relaxed),
            layers = self.totals.len(),
            bytes_done = done,
            bytes_total = total,
            per_layer = %per_layer.join(" "),
            "pull progress"
        );
    }
}
