//! Test harness: a real crust-shim started the way crustd starts it, a
//! ttrpc Events server that records what it publishes, and OCI bundles
//! with a busybox rootfs. Needs root; every test cleans up its shim,
//! container processes and cgroups, also when it fails.

#![allow(dead_code)]

use std::fs;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use containerd_shim_protos::TaskClient;
use containerd_shim_protos::api::{
    ConnectRequest, CreateTaskRequest, DeleteRequest, DeleteResponse, Empty, ForwardRequest,
    KillRequest, ShutdownRequest, StartRequest, StateRequest, StateResponse, WaitRequest,
};
use containerd_shim_protos::protobuf::MessageFull;
use containerd_shim_protos::protobuf::well_known_types::any::Any;
use containerd_shim_protos::shim::events_ttrpc::{Events, create_events};
use containerd_shim_protos::ttrpc::{self, Client, Server, TtrpcContext, context};
use serde_json::{Value, json};

pub const NS: &str = "k8s.io";

/// Whether /sys/fs/cgroup is the cgroup v2 unified hierarchy.
pub fn cgroup_v2() -> bool {
    Path::new("/sys/fs/cgroup/cgroup.controllers").exists()
}

/// Root is needed for namespaces and cgroups; say so instead of failing.
pub fn root_or_skip(test: &str) -> bool {
    if nix::unistd::geteuid().is_root() {
        return true;
    }
    eprintln!("SKIP {test}: crust-shim tests need root");
    false
}

pub fn ctx() -> context::Context {
    context::with_duration(Duration::from_secs(30))
}

/// The events the shim published, in order.
#[derive(Default)]
pub struct Recorder {
    events: Mutex<Vec<(String, Any)>>,
    cv: Condvar,
}

impl Events for Recorder {
    fn forward(&self, _ctx: &TtrpcContext, req: ForwardRequest) -> ttrpc::Result<Empty> {
        let env = req.envelope.into_option().unwrap_or_default();
        assert_eq!(env.namespace, NS);
        let mut ev = self.events.lock().unwrap();
        ev.push((
            env.topic.clone(),
            env.event.into_option().unwrap_or_default(),
        ));
        self.cv.notify_all();
        Ok(Empty::new())
    }
}

impl Recorder {
    /// Waits for an event on `topic` that `pred` accepts.
    pub fn wait_for<M: MessageFull>(&self, topic: &str, pred: impl Fn(&M) -> bool) -> M {
        let deadline = Instant::now() + Duration::from_secs(20);
        let mut ev = self.events.lock().unwrap();
        loop {
            for (t, any) in ev.iter() {
                if t == topic
                    && let Ok(m) = M::parse_from_bytes(&any.value)
                    && pred(&m)
                {
                    return m;
                }
            }
            let left = deadline.saturating_duration_since(Instant::now());
            assert!(
                !left.is_zero(),
                "no {topic} event; got {:?}",
                self.topics_locked(&ev)
            );
            ev = self.cv.wait_timeout(ev, left).unwrap().0;
        }
    }

    pub fn topics(&self) -> Vec<String> {
        self.topics_locked(&self.events.lock().unwrap())
    }

    fn topics_locked(&self, ev: &[(String, Any)]) -> Vec<String> {
        ev.iter().map(|(t, _)| t.clone()).collect()
    }

    /// Position of the first event on `topic` that `pred` accepts.
    pub fn position<M: MessageFull>(
        &self,
        topic: &str,
        pred: impl Fn(&M) -> bool,
    ) -> Option<usize> {
        self.events.lock().unwrap().iter().position(|(t, any)| {
            t == topic && M::parse_from_bytes(&any.value).is_ok_and(|m| pred(&m))
        })
    }
}

static SEQ: AtomicUsize = AtomicUsize::new(0);

pub struct Harness {
    pub dir: tempfile::TempDir,
    pub state: PathBuf,
    pub address: String,
    pub client: TaskClient,
    pub shim_pid: i32,
    pub events: Arc<Recorder>,
    pub cgroup_parent: String,
    _events_server: Server,
    busybox: PathBuf,
}

impl Harness {
    pub fn new(name: &str) -> Harness {
        let n = SEQ.fetch_add(1, Ordering::SeqCst);
        let dir = tempfile::Builder::new()
            .prefix("crust-shim-")
            .tempdir_in("/tmp")
            .unwrap();
        let state = dir.path().join("pod");
        fs::create_dir(&state).unwrap();

        let events = Arc::new(Recorder::default());
        let events_sock = dir.path().join("events.sock");
        let events_addr = format!("unix://{}", events_sock.display());
        let mut server = Server::new()
            .bind(&events_addr)
            .unwrap()
            .register_service(create_events(events.clone()));
        server.start().unwrap();

        let out = Command::new(env!("CARGO_BIN_EXE_crust-shim"))
            .args([
                "-namespace",
                NS,
                "-id",
                &format!("pod-{name}"),
                "-address",
                &events_addr,
            ])
            .args(["-publish-binary", "/nonexistent", "-debug", "start"])
            .current_dir(&state)
            .env("TTRPC_ADDRESS", &events_addr)
            .stdin(Stdio::null())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "start failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let address = String::from_utf8(out.stdout).unwrap();
        assert_eq!(
            address,
            format!("unix://{}", state.join("shim.sock").display())
        );
        let client = TaskClient::new(Client::connect(&address).unwrap());
        let shim_pid = client
            .connect(ctx(), &ConnectRequest::new())
            .unwrap()
            .shim_pid as i32;

        let busybox = dir.path().join("busybox");
        fs::copy("/bin/busybox", &busybox).unwrap();
        Harness {
            state,
            address,
            client,
            shim_pid,
            events,
            cgroup_parent: format!("/crust-shim-test-{}-{n}", std::process::id()),
            _events_server: server,
            busybox,
            dir,
        }
    }

    pub fn reconnect(&mut self) {
        self.client = TaskClient::new(Client::connect(&self.address).unwrap());
    }

    /// A bundle running `args` in a busybox rootfs; `tweak` edits the spec.
    pub fn bundle(&self, id: &str, args: &[&str], tweak: impl FnOnce(&mut Value)) -> PathBuf {
        let bundle = self.dir.path().join("bundles").join(id);
        let rootfs = bundle.join("rootfs");
        for d in ["bin", "proc", "dev", "sys", "tmp", "etc"] {
            fs::create_dir_all(rootfs.join(d)).unwrap();
        }
        fs::hard_link(&self.busybox, rootfs.join("bin/busybox")).unwrap();
        for applet in [
            "sh", "sleep", "echo", "cat", "head", "tail", "tr", "printf", "stty", "tty",
            "hostname", "true", "dd",
        ] {
            symlink("busybox", rootfs.join("bin").join(applet)).unwrap();
        }
        let mut spec = spec(args, &format!("{}/{id}", self.cgroup_parent));
        tweak(&mut spec);
        fs::write(
            bundle.join("config.json"),
            serde_json::to_vec_pretty(&spec).unwrap(),
        )
        .unwrap();
        bundle
    }

    pub fn create(&self, id: &str, bundle: &Path, stdout: &str) -> u32 {
        self.try_create(id, bundle, "", stdout, "").unwrap()
    }

    pub fn try_create(
        &self,
        id: &str,
        bundle: &Path,
        stdin: &str,
        stdout: &str,
        stderr: &str,
    ) -> ttrpc::Result<u32> {
        let req = CreateTaskRequest {
            id: id.into(),
            bundle: bundle.display().to_string(),
            stdin: stdin.into(),
            stdout: stdout.into(),
            stderr: stderr.into(),
            ..Default::default()
        };
        self.client.create(ctx(), &req).map(|r| r.pid)
    }

    pub fn start(&self, id: &str, exec_id: &str) -> u32 {
        let req = StartRequest {
            id: id.into(),
            exec_id: exec_id.into(),
            ..Default::default()
        };
        self.client.start(ctx(), &req).unwrap().pid
    }

    pub fn wait(&self, id: &str, exec_id: &str) -> u32 {
        let req = WaitRequest {
            id: id.into(),
            exec_id: exec_id.into(),
            ..Default::default()
        };
        self.client.wait(ctx(), &req).unwrap().exit_status
    }

    pub fn kill(&self, id: &str, exec_id: &str, signal: u32, all: bool) -> ttrpc::Result<Empty> {
        let req = KillRequest {
            id: id.into(),
            exec_id: exec_id.into(),
            signal,
            all,
            ..Default::default()
        };
        self.client.kill(ctx(), &req)
    }

    pub fn state(&self, id: &str, exec_id: &str) -> ttrpc::Result<StateResponse> {
        let req = StateRequest {
            id: id.into(),
            exec_id: exec_id.into(),
            ..Default::default()
        };
        self.client.state(ctx(), &req)
    }

    pub fn delete(&self, id: &str, exec_id: &str) -> ttrpc::Result<DeleteResponse> {
        let req = DeleteRequest {
            id: id.into(),
            exec_id: exec_id.into(),
            ..Default::default()
        };
        self.client.delete(ctx(), &req)
    }

    pub fn shutdown(&self) {
        let _ = self.client.shutdown(ctx(), &ShutdownRequest::new());
    }

    /// The directory of a container's cgroup that holds `v1_controller`'s
    /// files: that controller's hierarchy on v1, the unified one on v2.
    pub fn cgroup_dir(&self, v1_controller: &str, id: &str) -> PathBuf {
        let root = Path::new("/sys/fs/cgroup");
        let hierarchy = if cgroup_v2() {
            root.to_path_buf()
        } else {
            root.join(v1_controller)
        };
        hierarchy
            .join(self.cgroup_parent.trim_start_matches('/'))
            .join(id)
    }

    pub fn shim_alive(&self) -> bool {
        Path::new(&format!("/proc/{}", self.shim_pid)).exists()
            && !fs::read_to_string(format!("/proc/{}/stat", self.shim_pid))
                .unwrap_or_default()
                .contains(") Z ")
    }
}

impl Drop for Harness {
    /// Whatever the test left: its container processes, its shim, its cgroups.
    fn drop(&mut self) {
        let dirs = cgroup_dirs(&self.cgroup_parent);
        for d in &dirs {
            for pid in fs::read_to_string(d.join("cgroup.procs"))
                .unwrap_or_default()
                .lines()
            {
                if let Ok(pid) = pid.trim().parse::<i32>() {
                    let _ = nix::sys::signal::kill(
                        nix::unistd::Pid::from_raw(pid),
                        nix::sys::signal::Signal::SIGKILL,
                    );
                }
            }
        }
        if self.shim_alive() {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(self.shim_pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        for d in dirs.iter().rev() {
            while fs::remove_dir(d).is_err() && d.exists() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    }
}

/// Every cgroup directory under `parent` in every v1 hierarchy (and v2),
/// parents before children.
pub fn cgroup_dirs(parent: &str) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let Ok(hierarchies) = fs::read_dir("/sys/fs/cgroup") else {
        return out;
    };
    for h in hierarchies.flatten() {
        walk(&h.path().join(parent.trim_start_matches('/')), &mut out);
    }
    walk(
        &Path::new("/sys/fs/cgroup").join(parent.trim_start_matches('/')),
        &mut out,
    );
    out
}

fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
    if !dir.is_dir() || out.iter().any(|d| d == dir) {
        return;
    }
    out.push(dir.to_owned());
    if let Ok(entries) = fs::read_dir(dir) {
        for e in entries.flatten() {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                walk(&e.path(), out);
            }
        }
    }
}

/// A runc-style spec: new pid, mount, ipc, uts and network namespaces.
pub fn spec(args: &[&str], cgroups_path: &str) -> Value {
    let caps = json!([
        "CAP_CHOWN",
        "CAP_DAC_OVERRIDE",
        "CAP_FSETID",
        "CAP_FOWNER",
        "CAP_MKNOD",
        "CAP_NET_RAW",
        "CAP_SETGID",
        "CAP_SETUID",
        "CAP_SETFCAP",
        "CAP_SETPCAP",
        "CAP_NET_BIND_SERVICE",
        "CAP_SYS_CHROOT",
        "CAP_KILL",
        "CAP_AUDIT_WRITE"
    ]);
    json!({
        "ociVersion": "1.0.2",
        "process": {
            "terminal": false,
            "user": {"uid": 0, "gid": 0},
            "args": args,
            "env": ["PATH=/bin", "TERM=xterm"],
            "cwd": "/",
            "capabilities": {"bounding": caps, "effective": caps, "permitted": caps},
            "rlimits": [{"type": "RLIMIT_NOFILE", "hard": 1024, "soft": 1024}],
            "noNewPrivileges": true
        },
        "root": {"path": "rootfs", "readonly": false},
        "hostname": "crust-test",
        "mounts": [
            {"destination": "/proc", "type": "proc", "source": "proc"},
            {"destination": "/dev", "type": "tmpfs", "source": "tmpfs",
             "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]},
            {"destination": "/dev/pts", "type": "devpts", "source": "devpts",
             "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"]},
            {"destination": "/dev/shm", "type": "tmpfs", "source": "shm",
             "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"]},
            {"destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue",
             "options": ["nosuid", "noexec", "nodev"]},
            {"destination": "/sys", "type": "sysfs", "source": "sysfs",
             "options": ["nosuid", "noexec", "nodev", "ro"]}
        ],
        "linux": {
            "cgroupsPath": cgroups_path,
            "resources": {"devices": [{"allow": false, "access": "rwm"}]},
            "namespaces": [{"type": "pid"}, {"type": "network"}, {"type": "ipc"},
                           {"type": "uts"}, {"type": "mount"}],
            "maskedPaths": ["/proc/kcore", "/proc/keys", "/proc/timer_list", "/sys/firmware"],
            "readonlyPaths": ["/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"]
        }
    })
}

/// Makes a FIFO and a thread that reads it to EOF; `recv_timeout` the text.
pub fn fifo_reader(path: &Path) -> std::sync::mpsc::Receiver<String> {
    nix::unistd::mkfifo(path, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
    let path = path.to_owned();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(fs::read_to_string(path).unwrap());
    });
    rx
}

pub const LONG: Duration = Duration::from_secs(20);

/// Polls `f` until it returns Some, for up to 20 seconds.
pub fn eventually<T>(what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Parses CRI log lines into (stream, tag, content), checking timestamps.
pub fn cri_records(text: &str) -> Vec<(String, String, String)> {
    text.lines()
        .map(|l| {
            let mut it = l.splitn(4, ' ');
            let ts = it.next().unwrap();
            assert!(
                ts.len() >= 20 && ts.ends_with('Z') && &ts[10..11] == "T",
                "bad timestamp in {l:?}"
            );
            (
                it.next().unwrap().to_owned(),
                it.next().unwrap().to_owned(),
                it.next().unwrap_or("").to_owned(),
            )
        })
        .collect()
}
