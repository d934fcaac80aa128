//! The content store: blobs by digest, written crash-safely (temp file,
//! fsync, rename, fsync of the directory), verified before they land.

use std::fs::File;
use std::io::{Read, Write};
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::reference::is_sha256_digest;

#[derive(Debug, thiserror::Error)]
pub enum ContentError {
    #[error("content store I/O on {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "blob {expected} does not match its content: got {actual}, {size} bytes (expected {expected_size})"
    )]
    Mismatch {
        expected: String,
        actual: String,
        size: u64,
        expected_size: u64,
    },
    #[error("{0:?} is not a sha256 digest")]
    BadDigest(String),
    #[error("blob {digest} is {size} bytes, over the {limit}-byte limit")]
    TooLarge {
        digest: String,
        size: u64,
        limit: u64,
    },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> ContentError + '_ {
    move |source| ContentError::Io {
        path: path.to_path_buf(),
        source,
    }
}

pub struct ContentStore {
    blobs: PathBuf,
    ingest: PathBuf,
}

impl ContentStore {
    /// Opens the store under `root`, discarding ingests a crash left behind.
    pub fn new(root: &Path) -> Result<ContentStore, ContentError> {
        let blobs = root.join("blobs/sha256");
        let ingest = root.join("ingest");
        for dir in [&blobs, &ingest] {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)
                .map_err(io(dir))?;
        }
        for entry in std::fs::read_dir(&ingest).map_err(io(&ingest))? {
            let path = entry.map_err(io(&ingest))?.path();
            let _ = std::fs::remove_file(&path);
        }
        Ok(ContentStore { blobs, ingest })
    }

    pub fn path(&self, digest: &str) -> Result<PathBuf, ContentError> {
        match digest.strip_prefix("sha256:") {
            Some(hex) if is_sha256_digest(digest) => Ok(self.blobs.join(hex)),
            _ => Err(ContentError::BadDigest(digest.to_string())),
        }
    }

    pub fn has(&self, digest: &str) -> bool {
        self.path(digest).is_ok_and(|p| p.is_file())
    }

    /// A writer for a new blob; nothing is visible until `commit`.
    pub fn ingest(&self) -> Result<Ingest, ContentError> {
        let file = tempfile::Builder::new()
            .prefix("ingest-")
            .tempfile_in(&self.ingest)
            .map_err(io(&self.ingest))?;
        Ok(Ingest {
            file,
            hasher: Sha256::new(),
            size: 0,
            blobs: self.blobs.clone(),
        })
    }

    /// Writes a small blob held in memory (manifests, configs).
    pub fn put(&self, digest: &str, bytes: &[u8]) -> Result<(), ContentError> {
        if self.has(digest) {
            return Ok(());
        }
        let mut ingest = self.ingest()?;
        ingest.write_all(bytes).map_err(io(&self.ingest))?;
        ingest.commit(digest, bytes.len() as u64)
    }

    /// Reads a blob, refusing one larger than `limit`.
    pub fn read(&self, digest: &str, limit: u64) -> Result<Vec<u8>, ContentError> {
        let path = self.path(digest)?;
        let file = File::open(&path).map_err(io(&path))?;
        let size = file.metadata().map_err(io(&path))?.len();
        if size > limit {
            return Err(ContentError::TooLarge {
                digest: digest.to_string(),
                size,
                limit,
            });
        }
        let mut out = Vec::with_capacity(size as usize);
        file.take(limit).read_to_end(&mut out).map_err(io(&path))?;
        Ok(out)
    }

    pub fn delete(&self, digest: &str) -> Result<(), ContentError> {
        let path = self.path(digest)?;
        match std::fs::remove_file(&path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(io(&path)(e)),
            _ => Ok(()),
        }
    }

    /// Digests of every committed blob.
    pub fn list(&self) -> Result<Vec<String>, ContentError> {
        let mut out = Vec::new();
        for entry in std::fs::read_dir(&self.blobs).map_err(io(&self.blobs))? {
            let name = entry.map_err(io(&self.blobs))?.file_name();
            let digest = format!("sha256:{}", name.to_string_lossy());
            if is_sha256_digest(&digest) {
                out.push(digest);
            }
        }
        Ok(out)
    }
}

/// A blob being written: hashes what passes through, commits only when the
/// digest and size match.
pub struct Ingest {
    file: tempfile::NamedTempFile,
    hasher: Sha256,
    size: u64,
    blobs: PathBuf,
}

impl Write for Ingest {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.file.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.size += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.file.flush()
    }
}

impl Ingest {
    pub fn size(&self) -> u64 {
        self.size
    }

    /// The digest of everything written so far.
    pub fn digest(&self) -> String {
        format!("sha256:{}", hex::encode(self.hasher.clone().finalize()))
    }

    /// Verifies and moves the blob into place (a no-op if a concurrent
    /// writer already stored the same digest).
    pub fn commit(self, expected: &str, expected_size: u64) -> Result<(), ContentError> {
        let actual = self.digest();
        if actual != expected || self.size != expected_size {
            return Err(ContentError::Mismatch {
                expected: expected.to_string(),
                actual,
                size: self.size,
                expected_size,
            });
        }
        let hex = expected.trim_start_matches("sha256:");
        let target = self.blobs.join(hex);
        let path = self.file.path().to_path_buf();
        self.file.as_file().sync_all().map_err(io(&path))?;
        self.file
            .persist(&target)
            .map_err(|e| io(&target)(e.error))?;
        File::open(&self.blobs)
            .and_then(|d| d.sync_all())
            .map_err(io(&self.blobs))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn digest_of(bytes: &[u8]) -> String {
        format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
    }

    #[test]
    fn put_read_list_delete() {
        let dir = tempfile::tempdir().unwrap();
        let store = ContentStore::new(dir.path()).unwrap();
        let d = digest_of(b"hello");
        store.put(&d, b"hello").unwrap();
        assert!(store.has(&d));
        assert_eq!(store.read(&d, 100).unwrap(), b"hello");
        assert_eq!(store.list().unwrap(), vec![d.clone()]);
        assert!(matches!(
            store.read(&d, 2),
            Err(ContentError::TooLarge { .. })
        ));
        store.delete(&d).unwrap();
        store.delete(&d).unwrap();
        assert!(!store.has(&d));
    }

    #[test]
    fn mismatched_content_never_lands() {
        let dir = tempfile::tempdir().unwrap();
        let store = ContentStore::new(dir.path()).unwrap();
        let d = digest_of(b"hello");
        let err = store.put(&d, b"hellO").unwrap_err();
        assert!(matches!(err, ContentError::Mismatch { .. }), "{err}");
        assert!(!store.has(&d));
        let mut ingest = store.ingest().unwrap();
        ingest.write_all(b"hello").unwrap();
        assert!(ingest.commit(&d, 4).is_err(), "size must match too");
        assert!(store.list().unwrap().is_empty());
        assert_eq!(
            std::fs::read_dir(dir.path().join("ingest"))
                .unwrap()
                .count(),
            0
        );
    }

    #[test]
    fn leftover_ingests_are_removed_on_open() {
        let dir = tempfile::tempdir().unwrap();
        let store = ContentStore::new(dir.path()).unwrap();
        let mut ingest = store.ingest().unwrap();
        ingest.write_all(b"partial").unwrap();
        let (_file, path) = ingest.file.keep().unwrap();
        assert!(path.exists());
        ContentStore::new(dir.path()).unwrap();
        assert!(!path.exists());
    }

    #[test]
    fn digests_are_validated() {
        let dir = tempfile::tempdir().unwrap();
        let store = ContentStore::new(dir.path()).unwrap();
        assert!(store.path("sha256:../../etc/passwd").is_err());
        assert!(store.path("md5:abc").is_err());
    }
}
