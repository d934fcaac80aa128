//! crustd and containerd side by side (not a test): the same CRI client
//! starts the same pods on each, one runtime at a time, on this machine.
//! containerd is the distribution's (its CRI plugin, runc and
//! containerd-shim-runc-v2, cgroupfs), set up like crustd: the local
//! registry, the same bridge CNI plugins (each its own bridge and subnet),
//! a busybox `sleep` as its sandbox (pause) image.
//!
//! Prints, per runtime: pod start (RunPodSandbox + CreateContainer +
//! StartContainer, image present) median/p90 over 30 pods one at a time
//! and 10 at once; the daemon's RSS with 0 and 30 pods; the per-pod
//! overhead outside the container (shim, plus containerd's pause process).
//!
//! Run: hack/bench.sh vs_containerd   (skips when containerd is missing)

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use crust_e2e::containerd::Containerd;
use crust_e2e::cri::image_service_client::ImageServiceClient;
use crust_e2e::cri::runtime_service_client::RuntimeServiceClient;
use crust_e2e::{
    CriClient, Crustd, CrustdOptions, container_config, cri, image_ref, pod_config, rss_kib,
};

const SEQUENTIAL: usize = 30;
const CONCURRENT: usize = 10;
const PAUSE: &str = "crust-test/pause:latest";
const BUSYBOX: &str = "crust-test/busybox:latest";

fn bridge_conflist(name: &str, bridge: &str, subnet: &str) -> String {
    format!(
        r#"{{"cniVersion":"1.0.0","name":"{name}","plugins":[
  {{"type":"bridge","bridge":"{bridge}","isGateway":true,"ipMasq":false,
    "ipam":{{"type":"host-local","subnet":"{subnet}"}}}},
  {{"type":"loopback"}}]}}"#
    )
}

/// containerd's CRI plugin set up like crustd (`{dir}`: its temp dir).
fn start_containerd() -> Containerd {
    let cri = format!(
        r#"  # This VM refuses to lower oom_score_adj (crustd clamps the same way).
  restrict_oom_score_adj = true
  sandbox_image = "{pause}"
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "{{dir}}/cni"
  [plugins."io.containerd.grpc.v1.cri".registry.mirrors."127.0.0.1:5099"]
    endpoint = ["http://127.0.0.1:5099"]
  [plugins."io.containerd.grpc.v1.cri".containerd]
    default_runtime_name = "runc"
  [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
    runtime_type = "io.containerd.runc.v2"
  [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
    SystemdCgroup = false
"#,
        pause = image_ref(PAUSE)
    );
    let conflist = bridge_conflist("crust-bench-ctrd", "crustbc1", "10.231.2.0/24");
    Containerd::start(&cri, &[("cni/10-bench.conflist", &conflist)])
}

/// Processes whose command line mentions `needle`, with their RSS.
fn processes_mentioning(needle: &str) -> Vec<(u32, String, u64)> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
        if cmdline.contains(needle) {
            found.push((pid, cmdline, rss_kib(pid)));
        }
    }
    found
}

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i].as_secs_f64() * 1000.0
}

fn summary(mut times: Vec<Duration>) -> String {
    times.sort();
    format!(
        "median {:.1} ms, p90 {:.1} ms",
        percentile(&times, 0.5),
        percentile(&times, 0.9)
    )
}

async fn client(socket: &Path) -> CriClient {
    let channel = crust_e2e::connect(socket).await;
    CriClient {
        runtime: RuntimeServiceClient::new(channel.clone()),
        image: ImageServiceClient::new(channel),
    }
}

/// Starts pod `config` with a busybox sleep in it; returns its id and the
/// time taken.
async fn start_pod(socket: PathBuf, config: cri::PodSandboxConfig) -> (String, Duration) {
    let mut c = client(&socket).await;
    let start = Instant::now();
    let pod = c.run_pod(&config).await;
    c.run_container(
        &pod,
        &config,
        container_config("sleep", &image_ref(BUSYBOX), &["sleep", "3600"]),
    )
    .await;
    (pod, start.elapsed())
}

struct Figures {
    sequential: String,
    concurrent: String,
    rss_empty: u64,
    rss_full: u64,
    per_pod: u64,
}

/// Runs the workload against the CRI socket `socket` of daemon `pid`;
/// `overhead` sums the RSS (KiB) of what the runtime keeps per pod.
async fn measure(
    socket: &Path,
    pid: u32,
    crustd: &Crustd,
    tag: &str,
    overhead: impl Fn() -> u64,
) -> Figures {
    let mut c = client(socket).await;
    c.pull(&image_ref(BUSYBOX)).await.unwrap();
    c.pull(&image_ref(PAUSE)).await.unwrap();
    // One pod first, so that neither side's first-call setup is timed.
    let pod = |name: String| start_pod(socket.to_path_buf(), pod_config(crustd, &name));
    let (warm, _) = pod(format!("{tag}-warm")).await;
    c.remove_pod(&warm).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let rss_empty = rss_kib(pid);
    let mut times = Vec::new();
    let mut pods = Vec::new();
    for i in 0..SEQUENTIAL {
        let (id, t) = pod(format!("{tag}-seq{i}")).await;
        times.push(t);
        pods.push(id);
    }
    // Idle shims settle (crust-shim trims itself after its last call).
    tokio::time::sleep(Duration::from_secs(4)).await;
    let rss_full = rss_kib(pid);
    let per_pod = overhead() / SEQUENTIAL as u64;
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..CONCURRENT {
        tasks.spawn(pod(format!("{tag}-par{i}")));
    }
    let mut concurrent = Vec::new();
    while let Some(r) = tasks.join_next().await {
        let (pod, t) = r.unwrap();
        concurrent.push(t);
        pods.push(pod);
    }
    for pod in pods {
        c.remove_pod(&pod).await;
    }
    Figures {
        sequential: summary(times),
        concurrent: summary(concurrent),
        rss_empty,
        rss_full,
        per_pod,
    }
}

fn print(name: &str, f: &Figures) {
    println!("{name}:");
    println!(
        "  pod start, one at a time ({SEQUENTIAL}): {}",
        f.sequential
    );
    println!("  pod start, {CONCURRENT} at once: {}", f.concurrent);
    println!(
        "  daemon RSS: {} KiB with 0 pods, {} KiB with {SEQUENTIAL} pods",
        f.rss_empty, f.rss_full
    );
    println!("  per-pod overhead (shim, pause): {} KiB", f.per_pod);
}

#[tokio::main]
async fn main() {
    if Command::new("containerd")
        .arg("--version")
        .output()
        .is_err()
    {
        println!(
            "containerd is not installed: nothing to compare with (apt-get install containerd)"
        );
        return;
    }
    let cni = tempfile::tempdir().unwrap();
    std::fs::write(
        cni.path().join("10-bench.conflist"),
        bridge_conflist("crust-bench-crust", "crustbc0", "10.231.1.0/24"),
    )
    .unwrap();
    let crustd = Crustd::start_with(CrustdOptions {
        extra_config: format!(
            "cni:\n  conf_dir: {}\n  bin_dirs: [/usr/lib/cni]\n",
            cni.path().display()
        ),
        ..Default::default()
    })
    .await;
    let crust_dir = crustd.dir.path().display().to_string();
    let crust = measure(
        &crustd.socket,
        crustd.pid().unwrap(),
        &crustd,
        "crust",
        || {
            processes_mentioning(&crust_dir)
                .iter()
                .filter(|(_, cmd, _)| cmd.contains("crust-shim"))
                .map(|(_, _, rss)| rss)
                .sum()
        },
    )
    .await;

    let containerd = start_containerd();
    let socket = containerd.socket();
    let address = socket.display().to_string();
    let ctrd = measure(&socket, containerd.child.id(), &crustd, "ctrd", || {
        let shims: Vec<(u32, String, u64)> = processes_mentioning(&address)
            .into_iter()
            .filter(|(_, cmd, _)| cmd.contains("containerd-shim"))
            .collect();
        let pauses: u64 = processes_mentioning("/bin/sleep 2147483647")
            .iter()
            .map(|(_, _, rss)| rss)
            .sum();
        shims.iter().map(|(_, _, rss)| rss).sum::<u64>() + pauses
    })
    .await;
    let version = Command::new("containerd")
        .arg("--version")
        .output()
        .unwrap();
    print("crustd", &crust);
    print(String::from_utf8_lossy(&version.stdout).trim(), &ctrd);
    drop(containerd);
    for bridge in ["crustbc0", "crustbc1"] {
        let _ = Command::new("ip").args(["link", "del", bridge]).status();
    }
}
