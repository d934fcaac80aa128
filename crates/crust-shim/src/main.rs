//! crust-shim: one process per pod, serving containerd's shim v2 Task API
//! over ttrpc and running the pod's containers with youki's libcontainer.
//!
//! Invocation (the standard shim v2 flags):
//! `crust-shim -namespace <ns> -id <pod id> -address <addr> [-publish-binary <p>] [-debug] start`
//! with cwd = the pod's state dir and `TTRPC_ADDRESS` = where task events
//! go. `start` prints `unix://<socket>` and returns; the shim it spawned
//! serves until Shutdown once no container is left.
//!
//! Signals: SIGUSR1 reopens every container's log file (log rotation);
//! SIGTERM/SIGINT exit the shim only when it holds no container.
//!
//! Also a containerd logging binary for containers another shim runs:
//! `crust-shim mode cri-logger bundle <dir> [log <file>]`, the pairs in any
//! order ([`cri_logger`]).

mod attach;
mod cgroup;
mod container;
mod cri_logger;
mod crilog;
mod events;
mod helper;
mod io;
mod lc;
mod logger;
mod monitor;
mod oom;
mod service;
mod start;
mod sys;
mod systemd_v1;
mod timefmt;
mod trim;

use std::collections::HashMap;
use std::io::Write;
use std::os::fd::IntoRawFd;
use std::os::unix::fs::{DirBuilderExt, FileTypeExt};
use std::os::unix::net::UnixListener;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use containerd_shim::Flags;
use containerd_shim_protos::protobuf::Message;
use containerd_shim_protos::shim::shim_ttrpc::{Task, create_task};
use containerd_shim_protos::ttrpc::{MethodHandler, Server};
use containerd_shim_protos::types::introspection::RuntimeInfo;
use nix::sys::signal::{SigSet, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};

use crate::container::Shim;
use crate::events::Publisher;
use crate::service::TaskService;
use crate::trim::Activity;

/// libcontainer's state, under the pod's state dir.
pub const STATE_DIR: &str = "lc";
const RUNTIME_NAME: &str = "crust-shim";

fn main() {
    let args: Vec<_> = std::env::args_os().skip(1).collect();
    let text: Option<Vec<String>> = args.iter().map(|a| a.to_str().map(String::from)).collect();
    if let Some(logger) = text.as_deref().and_then(crust_shim_proto::logger::parse) {
        let result = logger
            .map_err(anyhow::Error::msg)
            .and_then(|a| cri_logger::run(&a));
        if let Err(e) = result {
            eprintln!("{RUNTIME_NAME} cri-logger: {e:#}");
            std::process::exit(1);
        }
        return;
    }
    let flags = match containerd_shim::parse(&args) {
        Ok(f) => f,
        Err(e) => {
            eprintln!("{RUNTIME_NAME}: {e}");
            std::process::exit(2);
        }
    };
    if let Err(e) = run(&flags) {
        eprintln!("{RUNTIME_NAME}: {e:#}");
        std::process::exit(1);
    }
}

fn run(flags: &Flags) -> Result<()> {
    if flags.version {
        println!("{RUNTIME_NAME} {}", env!("CARGO_PKG_VERSION"));
        return Ok(());
    }
    if flags.info {
        // containerd 2 asks what the runtime is before starting any shim.
        let info = RuntimeInfo {
            name: RUNTIME_NAME.into(),
            ..Default::default()
        };
        std::io::stdout().write_all(&info.write_to_bytes()?)?;
        return Ok(());
    }
    if flags.namespace.is_empty() {
        bail!("-namespace is required");
    }
    match flags.action.as_str() {
        "start" => start::start(flags),
        "delete" => start::delete(flags),
        "" if !flags.socket.is_empty() => serve(flags),
        "" => bail!("no action: want start or delete"),
        other => bail!("unknown action {other:?}"),
    }
}

/// The long-lived shim.
fn serve(flags: &Flags) -> Result<()> {
    sys::close_inherited_fds();
    sys::limit_malloc_arenas();
    logger::init(flags.debug);
    nix::sys::prctl::set_child_subreaper(true).context("become a child subreaper")?;
    // Signals are read from a signalfd by the main loop; block them before
    // any thread starts so every thread inherits the mask.
    let mut mask = SigSet::empty();
    for s in [
        Signal::SIGCHLD,
        Signal::SIGUSR1,
        Signal::SIGTERM,
        Signal::SIGINT,
        Signal::SIGHUP,
    ] {
        mask.add(s);
    }
    mask.thread_block().context("block signals")?;
    let signals = SignalFd::with_flags(&mask, SfdFlags::SFD_CLOEXEC | SfdFlags::SFD_NONBLOCK)?;

    let root = std::env::current_dir()?.join(STATE_DIR);
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&root)
        .with_context(|| format!("create {}", root.display()))?;
    let ttrpc_address = std::env::var("TTRPC_ADDRESS").unwrap_or_default();
    let activity = Arc::new(Activity::new()?);
    let events = Publisher::start(ttrpc_address, flags.namespace.clone(), activity.clone());
    let shim = Arc::new(Shim::new(flags.namespace.clone(), root, events, activity));

    let socket = flags
        .socket
        .strip_prefix("unix://")
        .unwrap_or(&flags.socket);
    let listener = listen(Path::new(socket))?;
    let service: Arc<dyn Task + Send + Sync> = Arc::new(TaskService { shim: shim.clone() });
    let mut server = Server::new()
        .add_listener(listener.into_raw_fd())?
        .register_service(task_methods(service))
        .set_thread_count_min(1)
        .set_thread_count_default(2)
        .set_thread_count_max(4);
    server.start().context("start the ttrpc server")?;
    start::signal_ready()?;
    log::info!(
        "serving {} for {} in {}",
        flags.socket,
        flags.id,
        shim.namespace()
    );

    monitor::run(&shim, &signals);

    log::info!("shutting down");
    let _ = std::fs::remove_file(socket);
    // Let the reply to Shutdown leave before the process goes.
    std::thread::sleep(Duration::from_millis(100));
    std::process::exit(0)
}

/// The Task service under its v3 name and, for runtimes that speak v2
/// (containerd 1.x, or 2.0-2.2 given a bare address), under the v2 name.
fn task_methods(
    service: Arc<dyn Task + Send + Sync>,
) -> HashMap<String, Box<dyn MethodHandler + Send + Sync>> {
    let mut methods = create_task(service.clone());
    for (name, handler) in create_task(service) {
        methods.insert(
            name.replace("/containerd.task.v3.", "/containerd.task.v2."),
            handler,
        );
    }
    methods
}

fn listen(path: &Path) -> Result<UnixListener> {
    if let Some(dir) = path.parent() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)?;
    }
    if std::fs::metadata(path).is_ok_and(|m| m.file_type().is_socket()) {
        // `start` found nobody serving it.
        std::fs::remove_file(path)?;
    }
    UnixListener::bind(path).with_context(|| format!("bind {}", path.display()))
}
