//! The CRI unix socket: refuse a path a live server holds, replace a stale
//! one, set the permissions kubelet's node setups expect, and accept
//! without spinning when accept fails.

use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::Path;

use anyhow::{Context, bail};
use crust_metrics::accept::Acceptor;
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

/// Binds the CRI socket at `path`, creating its directory (0700) if needed.
pub fn bind(path: &Path) -> anyhow::Result<UnixListener> {
    let dir = path
        .parent()
        .with_context(|| format!("socket path {} has no directory", path.display()))?;
    if !dir.exists() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .with_context(|| format!("cannot create socket directory {}", dir.display()))?;
    }
    match std::os::unix::net::UnixStream::connect(path) {
        Ok(_) => bail!(
            "socket {} is in use by a running server (another crustd?); stop it or choose another socket path",
            path.display()
        ),
        Err(_) if path.exists() => {
            // Nobody answers: a previous crustd died without cleaning up.
            let meta = std::fs::symlink_metadata(path)?;
            if !std::os::unix::fs::FileTypeExt::is_socket(&meta.file_type()) {
                bail!(
                    "socket path {} exists and is not a socket; refusing to replace it",
                    path.display()
                );
            }
            tracing::info!(path = %path.display(), "removing stale socket");
            std::fs::remove_file(path)
                .with_context(|| format!("cannot remove stale socket {}", path.display()))?;
        }
        Err(_) => {}
    }
    let listener = UnixListener::bind(path)
        .with_context(|| format!("cannot listen on socket {}", path.display()))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o660))
        .with_context(|| format!("cannot set permissions on {}", path.display()))?;
    Ok(listener)
}

/// The CRI socket's connections, for tonic's `serve_with_incoming`. Accept
/// errors (EMFILE when crustd is out of descriptors) never reach tonic,
/// which would retry at once, spin a core and log each retry: they back
/// off and are logged once per period.
pub fn incoming(listener: UnixListener) -> ReceiverStream<std::io::Result<UnixStream>> {
    let (tx, rx) = mpsc::channel(1);
    tokio::spawn(async move {
        let mut acceptor = Acceptor::new("CRI socket");
        loop {
            let stream = tokio::select! {
                _ = tx.closed() => return,
                (stream, _) = acceptor.accept(|| listener.accept()) => stream,
            };
            if tx.send(Ok(stream)).await.is_err() {
                return;
            }
        }
    });
    ReceiverStream::new(rx)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;
    use tokio_stream::StreamExt;

    #[tokio::test]
    async fn the_socket_is_0660_in_a_0700_dir_and_serves_connections() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("run/crust.sock");
        let listener = bind(&path).unwrap();
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o7777;
        assert_eq!(mode(&path), 0o660);
        assert_eq!(mode(path.parent().unwrap()), 0o700);
        let mut incoming = incoming(listener);
        let _client = UnixStream::connect(&path).await.unwrap();
        let accepted = tokio::time::timeout(std::time::Duration::from_secs(10), incoming.next())
            .await
            .expect("no connection accepted")
            .unwrap();
        assert!(accepted.is_ok());
    }
}
