//! The daemon's life: prepare dirs, open the store, serve, shut down.

use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use crust_config::Config;
use crust_cri::{Cri, Runtime};
use crust_image::Images;
use crust_metrics::{GrpcObserveLayer, Metrics};
use crust_runtime::Pods;
use crust_snapshot::Snapshotter;
use crust_store::Store;
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::watch;

/// kubelet's own limit for CRI messages (ExecSync output can be large).
const MAX_MESSAGE_BYTES: usize = 16 * 1024 * 1024;

fn lock_state_dir(state: &Path) -> anyhow::Result<nix::fcntl::Flock<std::fs::File>> {
    let path = state.join("crustd.lock");
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .mode(0o600)
        .open(&path)
        .with_context(|| format!("cannot open {}", path.display()))?;
    nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusiveNonblock).map_err(|(_, e)| {
        anyhow::anyhow!(
            "state dir {} is in use by another crustd ({e}); give each crustd its own state dir",
            state.display()
        )
    })
}

/// What every file crustd creates without an explicit mode gets: nothing
/// writable by others, readable where it must be (containers running as
/// other users read layer files, resolv.conf, hosts). Sockets, state dirs
/// and private files get explicit modes; this guards against an inherited
/// umask of 0 (world-writable files) or 077 (unreadable container files).
const UMASK: u32 = 0o022;

/// Sets the umask and raises the open-file limit (before any thread).
fn prepare_process() {
    let old = nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(UMASK));
    if old.bits() != UMASK {
        tracing::info!(
            from = format!("{:04o}", old.bits()),
            to = format!("{UMASK:04o}"),
            "umask set"
        );
    }
    let found = raise_nofile_limit();
    if let Ok((soft, hard)) = found {
        crust_runtime::limits::set_container_nofile(soft, hard);
    }
    match found {
        Ok((soft, hard)) if soft < hard => tracing::info!(
            from = soft,
            to = hard,
            "raised the open-file limit (RLIMIT_NOFILE soft) to the hard limit"
        ),
        Ok((soft, _)) => tracing::info!(limit = soft, "open-file limit (RLIMIT_NOFILE)"),
        Err(e) => tracing::warn!(error = %e, "cannot raise the open-file limit (RLIMIT_NOFILE)"),
    }
}

/// Raises RLIMIT_NOFILE's soft limit to its hard limit: systemd gives
/// services 1024 soft, which a client holding connections to the metrics
/// or streaming port would exhaust, failing every CRI call with EMFILE.
/// Returns the limits as they were.
fn raise_nofile_limit() -> nix::Result<(u64, u64)> {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE)?;
    if soft < hard {
        setrlimit(Resource::RLIMIT_NOFILE, hard, hard)?;
    }
    Ok((soft, hard))
}

pub fn run(config: Config) -> anyhow::Result<()> {
    prepare_process();
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?
        .block_on(serve(config))
}

async fn serve(config: Config) -> anyhow::Result<()> {
    prepare_private_dir(&config.root, "root")?;
    prepare_private_dir(&config.state, "state")?;
    // Held for crustd's life: two crustds sharing a state dir would take
    // each other's pods for debris (the store's lock guards the root only).
    let _state_lock = lock_state_dir(&config.state)?;
    let store = Arc::new(Store::open(&config.root)?);
    if let Some(image_fs) = &config.image_fs {
        prepare_private_dir(image_fs, "image_fs")?;
    }
    let snapshots = Arc::new(Snapshotter::split(
        &config.image_root().join("snapshots"),
        &config.root.join("snapshots"),
    )?);
    let metrics = Metrics::new();
    let verification_metrics = metrics.clone();
    let images = Arc::new(Images::open(
        config.image_root(),
        store.clone(),
        snapshots,
        &config.registries,
        &config.images.policy,
        Some(Arc::new(move |result: &'static str| {
            verification_metrics.record_image_verification(result)
        })),
        Some({
            let metrics = metrics.clone();
            Arc::new(move |event: crust_image::progress::PullEvent<'_>| {
                use crust_image::progress::PullEvent;
                match event {
                    PullEvent::Started { .. } => metrics.record_pull_started(),
                    PullEvent::Bytes { registry, bytes } => {
                        metrics.record_pull_bytes(registry, bytes)
                    }
                    PullEvent::Finished {
                        registry, seconds, ..
                    } => metrics.record_pull_finished(registry, seconds),
                }
            })
        }),
    )?);
    // Whatever a crash left half-pulled is unreferenced: reclaim it.
    images.collect_garbage().await?;
    let cgroup_driver = config.effective_cgroup_driver();
    if cgroup_driver == crust_config::CgroupDriver::Systemd
        && !Path::new("/run/systemd/system").is_dir()
    {
        // Every container start would fail reaching systemd over D-Bus.
        tracing::warn!(
            "cgroup_driver is systemd but this host was not booted by systemd: \
             containers will fail to start; use cgroup_driver: cgroupfs or auto"
        );
    }
    let socket_path = config.socket.clone();
    let listener = crate::socket::bind(&socket_path)?;
    let metrics_listener = match config.metrics.address.as_str() {
        "" => None,
        address => Some(
            tokio::net::TcpListener::bind(address)
                .await
                .with_context(|| format!("cannot listen for metrics on {address}"))?,
        ),
    };

    let (stop_tx, stop_rx) = watch::channel(false);
    let wait_stop = move || {
        let mut rx = stop_rx.clone();
        async move {
            let _ = rx.wait_for(|stop| *stop).await;
        }
    };
    if let Some(listener) = metrics_listener {
        tracing::info!(address = %listener.local_addr()?, "serving metrics");
        tokio::spawn(crust_metrics::serve(listener, metrics.clone(), wait_stop()));
    }
    tokio::spawn(async move {
        let signal_name = wait_for_signal().await;
        tracing::info!(signal = signal_name, "shutting down");
        let _ = stop_tx.send(true);
    });

    // Shims publish to this before any of them starts.
    let events_socket = config.state.join("events.sock");
    let (_events_server, events) = crust_runtime::events::serve(&events_socket)
        .await
        .with_context(|| format!("cannot serve shim events on {}", events_socket.display()))?;
    let cni_metrics = metrics.clone();
    let pods = Pods::new(
        config.clone(),
        cgroup_driver,
        store.clone(),
        images.clone(),
        events_socket,
        Some(Arc::new(
            move |op: crust_cni::Operation, took: Duration, ok: bool| {
                cni_metrics.record_network_op(op.as_str(), took.as_secs_f64(), ok)
            },
        )),
    );
    tokio::spawn(pods.clone().handle_events(events));
    tokio::spawn({
        let (pods, stop) = (pods.clone(), wait_stop());
        async move {
            stop.await;
            pods.end_lifecycle_streams();
        }
    });
    // Found before serving: what a crash left half made has no record, just
    // like what a running RunPodSandbox or CreateContainer is making.
    let orphans = pods.find_orphans();
    // Undone in the background, as are network teardowns that failed
    // before the last stop.
    tokio::spawn({
        let pods = pods.clone();
        async move {
            pods.remove_orphans(orphans).await;
            pods.recover().await
        }
    });
    let (streaming, serve_streaming) = crust_stream::StreamServer::bind(
        crust_stream::Options::from_config(&config.streaming),
        Arc::new(crust_runtime::StreamBackend(pods.clone())),
        wait_stop(),
    )?;
    tokio::spawn(serve_streaming);
    let runtime = Arc::new(Runtime {
        config,
        cgroup_driver,
        store,
        images,
        pods,
        streaming,
    });
    let cri = Cri::new(runtime.clone());
    tracing::info!(
        socket = %socket_path.display(),
        version = env!("CARGO_PKG_VERSION"),
        cgroup_driver = ?cgroup_driver,
        "crustd serving CRI v1"
    );
    // Type=notify: systemd (and `systemctl start`) waits for this, and
    // kubelet's unit is ordered after ours. The socket is bound above, so a
    // client that connects from here on is answered.
    notify_service_manager(sd_notify::NotifyState::Ready, "READY");
    let stopping = wait_stop();
    tokio::spawn(async move {
        stopping.await;
        notify_service_manager(sd_notify::NotifyState::Stopping, "STOPPING");
    });
    let server = tonic::transport::Server::builder()
        .layer(GrpcObserveLayer::new(metrics))
        .add_service(
            cri.runtime_service()
                .max_decoding_message_size(MAX_MESSAGE_BYTES)
                .max_encoding_message_size(MAX_MESSAGE_BYTES),
        )
        .add_service(
            cri.image_service()
                .max_decoding_message_size(MAX_MESSAGE_BYTES)
                .max_encoding_message_size(MAX_MESSAGE_BYTES),
        )
        .serve_with_incoming_shutdown(crate::socket::incoming(listener), wait_stop());
    // A graceful stop waits for clients to hang up after GOAWAY; one that
    // never does (hung, or not reading) must not hold crustd up until
    // systemd's SIGKILL.
    let (result, clients_gone) = tokio::select! {
        result = server => (result, true),
        () = async {
            wait_stop().await;
            tokio::time::sleep(SHUTDOWN_GRACE).await;
        } => {
            tracing::warn!(
                seconds = SHUTDOWN_GRACE.as_secs(),
                "CRI clients still connected after the shutdown grace; exiting without them"
            );
            (Ok(()), false)
        }
    };
    // Running pods are the shims' business: nothing here touches them.
    if let Err(e) = std::fs::remove_file(&socket_path) {
        tracing::warn!(error = %e, "cannot remove socket");
    }
    drop(cri);
    // Every store write is its own committed transaction; dropping the last
    // handle closes the file cleanly.
    // Connections left open still hold it, and will until exit: every
    // store write is committed on its own, so exiting is safe.
    if clients_gone {
        wait_for_last_handle(runtime).await;
    }
    result.context("CRI server failed")?;
    tracing::info!("stopped");
    Ok(())
}

/// Tells systemd (when NOTIFY_SOCKET names its socket; nothing otherwise)
/// that crustd is ready or stopping. The variable stays set for the second
/// message; crust's shims and pod inits are started without it.
fn notify_service_manager(state: sd_notify::NotifyState, what: &str) {
    if let Err(e) = sd_notify::notify(false, &[state]) {
        tracing::warn!(error = %e, "cannot tell the service manager {what}");
    }
}

/// How long a stopping crustd waits for CRI clients to hang up.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// In-flight handlers may still hold the runtime for a moment after the
/// server stops; wait briefly so the store closes cleanly.
async fn wait_for_last_handle(runtime: Arc<Runtime>) {
    let mut runtime = runtime;
    for _ in 0..50 {
        match Arc::try_unwrap(runtime) {
            Ok(rt) => {
                drop(rt);
                return;
            }
            Err(shared) => runtime = shared,
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tracing::warn!("runtime still in use at shutdown");
}

async fn wait_for_signal() -> &'static str {
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
    let mut int = signal(SignalKind::interrupt()).expect("SIGINT handler");
    tokio::select! {
        _ = term.recv() => "SIGTERM",
        _ = int.recv() => "SIGINT",
    }
}

/// Creates `dir` (0700) or tightens it to 0700, then proves it is writable.
fn prepare_private_dir(dir: &Path, what: &str) -> anyhow::Result<()> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .with_context(|| format!("cannot create {what} dir {}", dir.display()))?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
        .with_context(|| format!("cannot set permissions on {what} dir {}", dir.display()))?;
    tempfile::tempfile_in(dir)
        .with_context(|| format!("{what} dir {} is not writable", dir.display()))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use nix::sys::resource::{Resource, getrlimit, setrlimit};

    #[test]
    fn the_open_file_limit_is_raised_to_the_hard_limit() {
        let (_, hard) = getrlimit(Resource::RLIMIT_NOFILE).unwrap();
        if hard <= 1024 {
            eprintln!("hard limit {hard}: nothing to raise");
            return;
        }
        setrlimit(Resource::RLIMIT_NOFILE, 1024, hard).unwrap();
        assert_eq!(raise_nofile_limit().unwrap(), (1024, hard));
        assert_eq!(getrlimit(Resource::RLIMIT_NOFILE).unwrap(), (hard, hard));
    }
}
