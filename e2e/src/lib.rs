//! The e2e harness: start a real `crustd` with its own root, state, socket
//! and config, hand tests a typed CRI client over the unix socket, print
//! crustd's log when a test fails, and clean up after it even then.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use crust_cri_api::v1::image_service_client::ImageServiceClient;
use crust_cri_api::v1::runtime_service_client::RuntimeServiceClient;
use hyper_util::rt::TokioIo;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use tonic::transport::{Channel, Endpoint, Uri};

pub use crust_cri_api::v1 as cri;

pub mod containerd;
pub mod cosign;
pub mod streaming;
pub mod systemd;

/// A process's resident set size in KiB (0 when it cannot be read), for
/// the benchmarks.
pub fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// The crustd binary under test: `CRUSTD_BIN`, or built once per test
/// process with the same profile as the tests themselves.
pub fn crustd_binary() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        if let Some(bin) = std::env::var_os("CRUSTD_BIN") {
            return PathBuf::from(bin);
        }
        // target/<profile>/deps/<test binary> -> target/<profile>
        let exe = std::env::current_exe().expect("test binary path");
        let profile_dir = exe.parent().and_then(Path::parent).expect("target dir");
        let release = profile_dir.file_name().is_some_and(|n| n == "release");
        let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        let mut build = Command::new(cargo);
        build.current_dir(workspace).args([
            "build",
            "--quiet",
            "--bin",
            "crustd",
            "--bin",
            "crust-shim",
        ]);
        if release {
            build.arg("--release");
        }
        let status = build.status().expect("run cargo build");
        assert!(
            status.success(),
            "cargo build --bin crustd --bin crust-shim failed"
        );
        profile_dir.join("crustd")
    })
}

/// Where a test's crustd lives; `extra_config` is appended to the config
/// the harness writes (root, state, socket, metrics off).
#[derive(Default)]
pub struct CrustdOptions {
    pub extra_config: String,
    pub args: Vec<String>,
    /// Another crustd binary than [`crustd_binary`] (with its crust-shim
    /// beside it).
    pub binary: Option<PathBuf>,
}

pub struct Crustd {
    child: Option<Child>,
    binary: PathBuf,
    pub dir: tempfile::TempDir,
    pub socket: PathBuf,
    pub log_path: PathBuf,
    pub config_path: PathBuf,
}

/// The typed CRI clients, both over the same socket.
pub struct CriClient {
    pub runtime: RuntimeServiceClient<Channel>,
    pub image: ImageServiceClient<Channel>,
}

impl Crustd {
    pub async fn start() -> Crustd {
        Crustd::start_with(CrustdOptions::default()).await
    }

    pub async fn start_with(options: CrustdOptions) -> Crustd {
        let dir = tempfile::Builder::new()
            .prefix("crust-e2e-")
            .tempdir_in("/var/tmp")
            .expect("temp dir");
        let socket = dir.path().join("state/crust.sock");
        let config_path = dir.path().join("config.yaml");
        // Pods need a network config: a loopback-only one unless the test
        // brings its own.
        let mut extra_config = options.extra_config.clone();
        if !extra_config.contains("cni:") {
            let cni_dir = dir.path().join("cni");
            std::fs::create_dir_all(&cni_dir).unwrap();
            std::fs::write(
                cni_dir.join("10-loopback.conflist"),
                r#"{"cniVersion":"1.0.0","name":"loopback-only","plugins":[{"type":"loopback"}]}"#,
            )
            .unwrap();
            extra_config.push_str(&format!(
                "cni:\n  conf_dir: {}\n  bin_dirs: [/usr/lib/cni, /opt/cni/bin]\n",
                cni_dir.display()
            ));
        }
        let config = format!(
            "root: {root}\nstate: {state}\nsocket: {socket}\n{extra}",
            root = dir.path().join("root").display(),
            state = dir.path().join("state").display(),
            socket = socket.display(),
            extra = if extra_config.contains("metrics:") {
                extra_config
            } else {
                format!("metrics:\n  address: \"\"\n{extra_config}")
            },
        );
        std::fs::write(&config_path, config).unwrap();
        let mut daemon = Crustd {
            child: None,
            binary: options
                .binary
                .clone()
                .unwrap_or_else(|| crustd_binary().to_path_buf()),
            socket,
            log_path: dir.path().join("crustd.log"),
            config_path,
            dir,
        };
        daemon.spawn(&options.args).await;
        daemon
    }

    /// Starts (or restarts) crustd on this test's dirs and waits for it.
    pub async fn spawn(&mut self, args: &[String]) {
        assert!(self.child.is_none(), "crustd is already running");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log_path)
            .unwrap();
        let child = Command::new(&self.binary)
            .arg("--config")
            .arg(&self.config_path)
            .args(args)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("start crustd");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if tokio::net::UnixStream::connect(&self.socket).await.is_ok() {
                return;
            }
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                panic!("crustd exited early ({status}):\n{}", self.log());
            }
            assert!(
                Instant::now() < deadline,
                "crustd socket never appeared:\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// RunPodSandbox of pods `{prefix}0`..`{prefix}{n-1}` at once, each on
    /// its own connection, left running (for tests that kill crustd
    /// mid-way; more tasks may be added to the set).
    pub async fn run_pods_in_background(
        &self,
        prefix: &str,
        n: usize,
    ) -> tokio::task::JoinSet<Result<(), tonic::Status>> {
        let mut tasks = tokio::task::JoinSet::new();
        for i in 0..n {
            let config = pod_config(self, &format!("{prefix}{i}"));
            let mut c = self.client().await;
            tasks.spawn(async move {
                c.runtime
                    .run_pod_sandbox(cri::RunPodSandboxRequest {
                        config: Some(config),
                        runtime_handler: String::new(),
                    })
                    .await
                    .map(drop)
            });
        }
        tasks
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    /// A cgroup parent of this test's own, removed when the test ends.
    pub fn cgroup_parent(&self, pod: &str) -> String {
        format!("{}/pod{pod}", self.cgroup_root())
    }

    pub fn cgroup_root(&self) -> String {
        format!(
            "/{}",
            self.dir.path().file_name().unwrap().to_string_lossy()
        )
    }

    pub fn root(&self) -> PathBuf {
        self.dir.path().join("root")
    }

    pub fn state(&self) -> PathBuf {
        self.dir.path().join("state")
    }

    /// Mount points below this crustd's dir, except the read-only host
    /// binaries under state/bin that crustd spawns shims and pod inits from
    /// (made at start, kept for crustd's life). After every pod is removed
    /// this must be empty.
    pub fn mounts_left(&self) -> Vec<String> {
        let bin = self.state().join("bin");
        std::fs::read_to_string("/proc/self/mountinfo")
            .unwrap()
            .lines()
            .filter_map(|l| l.split(' ').nth(4))
            .map(|p| p.replace("\\040", " "))
            .filter(|p| {
                Path::new(p).starts_with(self.dir.path()) && !Path::new(p).starts_with(&bin)
            })
            .collect()
    }

    pub async fn client(&self) -> CriClient {
        let channel = connect(&self.socket).await;
        CriClient {
            runtime: RuntimeServiceClient::new(channel.clone()),
            image: ImageServiceClient::new(channel),
        }
    }

    /// Sends `signal` and waits for crustd to exit; returns its exit code.
    pub fn stop_with(&mut self, signal: Signal) -> Option<i32> {
        let mut child = self.child.take()?;
        let pid = Pid::from_raw(child.id() as i32);
        let _ = kill(pid, signal);
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                return status.code();
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!("crustd ignored {signal} for 10s:\n{}", self.log());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Crustd {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = kill(Pid::from_raw(child.id() as i32), Signal::SIGTERM);
            let deadline = Instant::now() + Duration::from_secs(5);
            while child.try_wait().ok().flatten().is_none() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        if std::thread::panicking() {
            eprintln!(
                "----- crustd log ({}) -----\n{}----- end of crustd log -----",
                self.log_path.display(),
                self.log()
            );
        }
        kill_processes_mentioning(self.dir.path());
        unmount_everything_under(self.dir.path());
        remove_cgroups(&self.cgroup_root());
    }
}

/// Kills the processes this test's crustd left running on purpose (shims,
/// pod inits: they outlive crustd by design); their command lines name
/// the test's dir.
pub fn kill_processes_mentioning(dir: &Path) {
    let needle = dir.to_string_lossy().to_string();
    let me = std::process::id().to_string();
    let Ok(procs) = std::fs::read_dir("/proc") else {
        return;
    };
    for entry in procs.flatten() {
        let name = entry.file_name().to_string_lossy().to_string();
        if name == me || !name.bytes().all(|b| b.is_ascii_digit()) {
            continue;
        }
        let cmdline = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
        if String::from_utf8_lossy(&cmdline).contains(&needle)
            && let Ok(pid) = name.parse::<i32>()
        {
            let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
        }
    }
}

/// Kills what is left in the test's cgroups (all started by this test)
/// and removes them, deepest first, in every hierarchy.
pub fn remove_cgroups(root: &str) {
    let Ok(hierarchies) = std::fs::read_dir("/sys/fs/cgroup") else {
        return;
    };
    let mut bases: Vec<PathBuf> = hierarchies.flatten().map(|e| e.path()).collect();
    bases.push(PathBuf::from("/sys/fs/cgroup"));
    for base in bases {
        let top = base.join(root.trim_start_matches('/'));
        if !top.is_dir() {
            continue;
        }
        let mut dirs = vec![top.clone()];
        let mut i = 0;
        while i < dirs.len() {
            if let Ok(entries) = std::fs::read_dir(&dirs[i]) {
                dirs.extend(
                    entries
                        .flatten()
                        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
                        .map(|e| e.path()),
                );
            }
            i += 1;
        }
        for dir in dirs.iter().rev() {
            if let Ok(procs) = std::fs::read_to_string(dir.join("cgroup.procs")) {
                for pid in procs.lines().filter_map(|l| l.trim().parse::<i32>().ok()) {
                    let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
                }
            }
        }
        for dir in dirs.iter().rev() {
            for _ in 0..50 {
                if std::fs::remove_dir(dir).is_ok() || !dir.exists() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }
}

/// Detaches every mount below `dir`, deepest first, so the temp dir can be
/// removed even when a test failed half-way.
pub fn unmount_everything_under(dir: &Path) {
    let Ok(mountinfo) = std::fs::read_to_string("/proc/self/mountinfo") else {
        return;
    };
    let mut mounts: Vec<PathBuf> = mountinfo
        .lines()
        .filter_map(|line| line.split(' ').nth(4))
        .map(|p| PathBuf::from(p.replace("\\040", " ")))
        .filter(|p| p.starts_with(dir))
        .collect();
    mounts.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    for mount in mounts {
        let _ = nix::mount::umount2(&mount, nix::mount::MntFlags::MNT_DETACH);
    }
}

/// A tonic channel to a unix socket (the URI is required but unused).
pub async fn connect(socket: &Path) -> Channel {
    let socket = socket.to_path_buf();
    Endpoint::try_from("http://[::]:50051")
        .unwrap()
        .connect_with_connector(tower::service_fn(move |_: Uri| {
            let socket = socket.clone();
            async move {
                let stream = tokio::net::UnixStream::connect(socket).await?;
                Ok::<_, std::io::Error>(TokioIo::new(stream))
            }
        }))
        .await
        .expect("connect to crustd socket")
}

/// Runs crustd to completion (for start-up failures) and returns its exit
/// code and everything it printed.
pub fn run_crustd(args: &[&str]) -> (Option<i32>, String) {
    let mut child = Command::new(crustd_binary())
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start crustd");
    let deadline = Instant::now() + Duration::from_secs(20);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("crustd {args:?} did not exit within 20s");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let mut out = String::new();
    child
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut out)
        .unwrap();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut out)
        .unwrap();
    (child.wait().unwrap().code(), out)
}

/// A free TCP port on 127.0.0.1 (bound and released; good enough for tests).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A minimal HTTP/1.0 GET on 127.0.0.1, returning status line + body.
pub fn http_get(port: u16, path: &str) -> String {
    use std::io::Write;
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect");
    write!(stream, "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    response
}

/// What `hack/build-test-images.py` pushed: `CRUST_TEST_IMAGES_JSON`, by
/// default /var/tmp/crust-registry/images.json (hack/test.sh makes it).
pub fn test_images() -> serde_json::Value {
    let path = std::env::var("CRUST_TEST_IMAGES_JSON")
        .unwrap_or_else(|_| "/var/tmp/crust-registry/images.json".into());
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!("cannot read {path} ({e}): run hack/test-images.sh (hack/test.sh does) first")
    });
    serde_json::from_str(&text).expect("images.json is JSON")
}

/// `registry/repo:tag` of a test image on the plain test registry.
pub fn image_ref(name: &str) -> String {
    format!("{}/{name}", test_images()["registry"].as_str().unwrap())
}

/// The image ID (config digest) the test image `name` must pull as; for an
/// index, the host platform's image.
pub fn image_id(name: &str) -> String {
    let image = &test_images()["images"][name];
    let image = if image["host_platform_image"].is_object() {
        &image["host_platform_image"]
    } else {
        image
    };
    image["config_digest"].as_str().unwrap().to_string()
}

impl CriClient {
    pub async fn pull(&mut self, image: &str) -> Result<String, tonic::Status> {
        self.pull_with(image, None).await
    }

    pub async fn pull_with(
        &mut self,
        image: &str,
        auth: Option<cri::AuthConfig>,
    ) -> Result<String, tonic::Status> {
        self.image
            .pull_image(cri::PullImageRequest {
                image: Some(image_spec(image)),
                auth,
                sandbox_config: None,
            })
            .await
            .map(|r| r.into_inner().image_ref)
    }

    pub async fn image_status(&mut self, name: &str) -> Option<cri::Image> {
        self.image
            .image_status(cri::ImageStatusRequest {
                image: Some(image_spec(name)),
                verbose: false,
            })
            .await
            .unwrap()
            .into_inner()
            .image
    }

    /// The verbose ImageStatus `info` JSON (config, chain and layers).
    pub async fn image_info(&mut self, name: &str) -> serde_json::Value {
        let status = self
            .image
            .image_status(cri::ImageStatusRequest {
                image: Some(image_spec(name)),
                verbose: true,
            })
            .await
            .unwrap()
            .into_inner();
        serde_json::from_str(&status.info["info"]).unwrap()
    }

    pub async fn list_images(&mut self) -> Vec<cri::Image> {
        self.image
            .list_images(cri::ListImagesRequest { filter: None })
            .await
            .unwrap()
            .into_inner()
            .images
    }

    pub async fn remove_image(&mut self, name: &str) {
        self.image
            .remove_image(cri::RemoveImageRequest {
                image: Some(image_spec(name)),
            })
            .await
            .unwrap();
    }
}

pub fn image_spec(image: &str) -> cri::ImageSpec {
    cri::ImageSpec {
        image: image.to_string(),
        ..Default::default()
    }
}

/// Every file below `dir` (relative paths), for checking what is left.
pub fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if entry.file_type().is_ok_and(|t| t.is_dir()) {
                stack.push(path.clone());
            }
            out.push(path.strip_prefix(dir).unwrap().to_path_buf());
        }
    }
    out.sort();
    out
}

/// A raw HTTP/1.1 exchange with the plain test registry (the tests only
/// need GETs and PUTs, so no HTTP client crate).
pub fn registry_http(
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> (u16, Vec<(String, String)>, Vec<u8>) {
    use std::io::Write;
    let registry = test_images()["registry"].as_str().unwrap().to_string();
    let mut stream = std::net::TcpStream::connect(&registry).expect("connect to registry");
    let mut request = format!(
        "{method} {path} HTTP/1.1\r\nHost: {registry}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        request.push_str(&format!("{k}: {v}\r\n"));
    }
    request.push_str("\r\n");
    stream.write_all(request.as_bytes()).unwrap();
    stream.write_all(body).unwrap();
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).unwrap();
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("HTTP header end");
    let head = String::from_utf8_lossy(&raw[..split]).to_string();
    let mut lines = head.lines();
    let status = lines
        .next()
        .unwrap()
        .split(' ')
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_lowercase(), v.trim().to_string()))
        .collect::<Vec<_>>();
    let mut body = raw[split + 4..].to_vec();
    if headers
        .iter()
        .any(|(k, v)| k == "transfer-encoding" && v == "chunked")
    {
        body = dechunk(&body);
    }
    (status, headers, body)
}

fn dechunk(mut data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let line_end = data.windows(2).position(|w| w == b"\r\n").unwrap();
        let size =
            usize::from_str_radix(std::str::from_utf8(&data[..line_end]).unwrap().trim(), 16)
                .unwrap();
        if size == 0 {
            return out;
        }
        out.extend_from_slice(&data[line_end + 2..line_end + 2 + size]);
        data = &data[line_end + 2 + size + 2..];
    }
}

/// Fetches a manifest from the test registry: (media type, bytes).
pub fn registry_get_manifest(repo: &str, reference: &str) -> (String, Vec<u8>) {
    let accept = "application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.v2+json, application/vnd.oci.image.index.v1+json, application/vnd.docker.distribution.manifest.list.v2+json";
    let (status, headers, body) = registry_http(
        "GET",
        &format!("/v2/{repo}/manifests/{reference}"),
        &[("Accept", accept)],
        b"",
    );
    assert_eq!(status, 200, "GET manifest {repo}:{reference}");
    let media_type = headers
        .iter()
        .find(|(k, _)| k == "content-type")
        .unwrap()
        .1
        .clone();
    (media_type, body)
}

/// Tags `manifest` as `repo:tag` in the test registry.
pub fn registry_put_manifest(repo: &str, tag: &str, media_type: &str, manifest: &[u8]) {
    let (status, _, body) = registry_http(
        "PUT",
        &format!("/v2/{repo}/manifests/{tag}"),
        &[("Content-Type", media_type)],
        manifest,
    );
    assert_eq!(
        status,
        201,
        "PUT manifest {repo}:{tag}: {}",
        String::from_utf8_lossy(&body)
    );
}

/// A pod config kubelet-style: metadata, log dir, a cgroup parent of the
/// test's own.
pub fn pod_config(crustd: &Crustd, name: &str) -> cri::PodSandboxConfig {
    let uid = format!("uid-{name}");
    let log_directory = crustd.dir.path().join("logs").join(&uid);
    cri::PodSandboxConfig {
        metadata: Some(cri::PodSandboxMetadata {
            name: name.to_string(),
            namespace: "e2e".to_string(),
            uid: uid.clone(),
            attempt: 0,
        }),
        hostname: name.to_string(),
        log_directory: log_directory.display().to_string(),
        labels: [("app".to_string(), name.to_string())].into(),
        linux: Some(cri::LinuxPodSandboxConfig {
            cgroup_parent: crustd.cgroup_parent(&uid),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// Sets a pod's namespace options (host network, shared PID, ...).
pub fn set_pod_namespaces(pod: &mut cri::PodSandboxConfig, options: cri::NamespaceOption) {
    pod.linux
        .get_or_insert_with(Default::default)
        .security_context = Some(cri::LinuxSandboxSecurityContext {
        namespace_options: Some(options),
        ..Default::default()
    });
}

pub fn container_config(name: &str, image: &str, command: &[&str]) -> cri::ContainerConfig {
    cri::ContainerConfig {
        metadata: Some(cri::ContainerMetadata {
            name: name.to_string(),
            attempt: 0,
        }),
        image: Some(image_spec(image)),
        command: command.iter().map(|s| s.to_string()).collect(),
        log_path: format!("{name}/0.log"),
        labels: [("container".to_string(), name.to_string())].into(),
        ..Default::default()
    }
}

impl CriClient {
    /// A client of the crustd serving `socket`.
    pub async fn connect(socket: &Path) -> CriClient {
        let channel = connect(socket).await;
        CriClient {
            runtime: RuntimeServiceClient::new(channel.clone()),
            image: ImageServiceClient::new(channel),
        }
    }

    pub async fn run_pod(&mut self, config: &cri::PodSandboxConfig) -> String {
        self.runtime
            .run_pod_sandbox(cri::RunPodSandboxRequest {
                config: Some(config.clone()),
                runtime_handler: String::new(),
            })
            .await
            .unwrap()
            .into_inner()
            .pod_sandbox_id
    }

    /// Every pod ListPodSandbox reports, unfiltered.
    pub async fn list_pods(&mut self) -> Vec<cri::PodSandbox> {
        self.runtime
            .list_pod_sandbox(cri::ListPodSandboxRequest::default())
            .await
            .unwrap()
            .into_inner()
            .items
    }

    pub async fn remove_pod(&mut self, id: &str) {
        self.runtime
            .remove_pod_sandbox(cri::RemovePodSandboxRequest {
                pod_sandbox_id: id.to_string(),
            })
            .await
            .unwrap();
    }

    /// The verbose PodSandboxStatus `info` JSON (shim pid, pod init, ...).
    pub async fn pod_info(&mut self, id: &str) -> serde_json::Value {
        let status = self
            .runtime
            .pod_sandbox_status(cri::PodSandboxStatusRequest {
                pod_sandbox_id: id.to_string(),
                verbose: true,
            })
            .await
            .unwrap()
            .into_inner();
        serde_json::from_str(&status.info["info"]).unwrap()
    }

    /// CreateContainer; the error as the caller gets it.
    pub async fn create_container(
        &mut self,
        pod: &str,
        pod_config: &cri::PodSandboxConfig,
        config: cri::ContainerConfig,
    ) -> Result<String, tonic::Status> {
        self.runtime
            .create_container(cri::CreateContainerRequest {
                pod_sandbox_id: pod.to_string(),
                config: Some(config),
                sandbox_config: Some(pod_config.clone()),
            })
            .await
            .map(|r| r.into_inner().container_id)
    }

    /// StartContainer; the error as the caller gets it.
    pub async fn start_container(&mut self, id: &str) -> Result<(), tonic::Status> {
        self.runtime
            .start_container(cri::StartContainerRequest {
                container_id: id.to_string(),
            })
            .await
            .map(drop)
    }

    /// Creates and starts a container; returns its id.
    pub async fn run_container(
        &mut self,
        pod: &str,
        pod_config: &cri::PodSandboxConfig,
        config: cri::ContainerConfig,
    ) -> String {
        let id = self
            .create_container(pod, pod_config, config)
            .await
            .unwrap();
        self.start_container(&id).await.unwrap();
        id
    }

    pub async fn container_status(&mut self, id: &str) -> cri::ContainerStatus {
        self.runtime
            .container_status(cri::ContainerStatusRequest {
                container_id: id.to_string(),
                verbose: false,
            })
            .await
            .unwrap()
            .into_inner()
            .status
            .unwrap()
    }

    /// Polls until the container has exited; returns its final status.
    pub async fn wait_exited(&mut self, id: &str, within: Duration) -> cri::ContainerStatus {
        let deadline = Instant::now() + within;
        loop {
            let status = self.container_status(id).await;
            if status.state == cri::ContainerState::ContainerExited as i32 {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "container {id} still {:?} after {within:?}",
                status.state
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub async fn exec_sync(
        &mut self,
        id: &str,
        cmd: &[&str],
        timeout: i64,
    ) -> Result<cri::ExecSyncResponse, tonic::Status> {
        self.runtime
            .exec_sync(cri::ExecSyncRequest {
                container_id: id.to_string(),
                cmd: cmd.iter().map(|s| s.to_string()).collect(),
                timeout,
            })
            .await
            .map(|r| r.into_inner())
    }
}

/// A process's RLIMIT_NOFILE (soft, hard), from /proc/<pid>/limits
/// (`u64::MAX` for unlimited).
pub fn nofile_limits(pid: u32) -> (u64, u64) {
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).expect("read limits");
    let line = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .expect("no open-file limit in /proc/<pid>/limits");
    let mut values = line["Max open files".len()..]
        .split_whitespace()
        .map(|v| v.parse().unwrap_or(u64::MAX));
    (values.next().unwrap(), values.next().unwrap())
}

/// Sets a process's RLIMIT_NOFILE (with prlimit(1); raising the hard
/// limit needs root).
pub fn set_nofile_limits(pid: u32, soft: u64, hard: u64) {
    let status = Command::new("prlimit")
        .arg(format!("--pid={pid}"))
        .arg(format!("--nofile={soft}:{hard}"))
        .status()
        .expect("run prlimit");
    assert!(status.success(), "prlimit --nofile={soft}:{hard} failed");
}

/// A script in `dir` that runs [`crustd_binary`] with RLIMIT_NOFILE at
/// `soft`:`hard` (systemd gives services 1024 soft), for
/// [`CrustdOptions::binary`]; crustd itself, exec'd, still finds its shim.
pub fn crustd_with_nofile_limits(dir: &Path, soft: u64, hard: u64) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let path = dir.join("crustd-limited");
    std::fs::write(
        &path,
        format!(
            "#!/bin/sh\nulimit -S -n {soft} && ulimit -H -n {hard} && exec {} \"$@\"\n",
            crustd_binary().display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    path
}
