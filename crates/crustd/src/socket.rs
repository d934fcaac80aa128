//! The CRI unix socket: refuse a path a live server holds, replace a stale
//! one, and set the permissions kubelet's node setups expect.

use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::Path;

use anyhow::{Context, bail};
use tokio::net::UnixListener;

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
