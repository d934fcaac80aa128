//! Churn soak (not a test): pod cycles at a fixed concurrency, each
//! RunPodSandbox, CreateContainer + StartContainer of a busybox `sleep`,
//! one ExecSync, StopPodSandbox, RemovePodSandbox. Reports every failure
//! (which step, the gRPC code and message), cycle latencies, and what the
//! run left behind: pod dirs, mounts, processes, cgroups, crustd's RSS and
//! open descriptors.
//!
//! Run: hack/bench.sh soak   (CRUST_SOAK_CYCLES, default 200;
//! CRUST_SOAK_CONCURRENCY, default 4)

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use crust_e2e::{Crustd, container_config, cri, image_ref, pod_config, rss_kib};

fn env(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| d.count())
        .unwrap_or(0)
}

/// Mounts of this machine whose mount point lies under `dir`.
fn mounts_under(dir: &std::path::Path) -> usize {
    let dir = dir.display().to_string();
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap_or_default()
        .lines()
        .filter(|l| l.split(' ').nth(4).is_some_and(|m| m.starts_with(&dir)))
        .count()
}

/// Processes whose command line mentions `dir` (shims, pod inits).
fn processes_mentioning(dir: &std::path::Path) -> usize {
    let needle = dir.display().to_string();
    std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().parse::<u32>().is_ok())
        .filter(|e| {
            std::fs::read(e.path().join("cmdline"))
                .map(|c| String::from_utf8_lossy(&c).contains(&needle))
                .unwrap_or(false)
        })
        .count()
}

async fn cycle(crustd: &Crustd, n: usize) -> Result<Duration, String> {
    let mut c = crustd.client().await;
    let config = pod_config(crustd, &format!("soak{n}"));
    let start = Instant::now();
    let pod = c
        .runtime
        .run_pod_sandbox(cri::RunPodSandboxRequest {
            config: Some(config.clone()),
            runtime_handler: String::new(),
        })
        .await
        .map_err(|e| format!("RunPodSandbox: {:?}: {}", e.code(), e.message()))?
        .into_inner()
        .pod_sandbox_id;
    let image = image_ref("crust-test/busybox:latest");
    let outcome = async {
        let id = c
            .runtime
            .create_container(cri::CreateContainerRequest {
                pod_sandbox_id: pod.clone(),
                config: Some(container_config("sleep", &image, &["sleep", "3600"])),
                sandbox_config: Some(config.clone()),
            })
            .await
            .map_err(|e| format!("CreateContainer: {:?}: {}", e.code(), e.message()))?
            .into_inner()
            .container_id;
        c.runtime
            .start_container(cri::StartContainerRequest {
                container_id: id.clone(),
            })
            .await
            .map_err(|e| format!("StartContainer: {:?}: {}", e.code(), e.message()))?;
        let r = c
            .exec_sync(&id, &["true"], 10)
            .await
            .map_err(|e| format!("ExecSync: {:?}: {}", e.code(), e.message()))?;
        if r.exit_code != 0 {
            return Err(format!("ExecSync: exit code {}", r.exit_code));
        }
        Ok::<(), String>(())
    }
    .await;
    let stop = c
        .runtime
        .stop_pod_sandbox(cri::StopPodSandboxRequest {
            pod_sandbox_id: pod.clone(),
        })
        .await
        .map_err(|e| format!("StopPodSandbox: {:?}: {}", e.code(), e.message()));
    let remove = c
        .runtime
        .remove_pod_sandbox(cri::RemovePodSandboxRequest {
            pod_sandbox_id: pod.clone(),
        })
        .await
        .map_err(|e| format!("RemovePodSandbox: {:?}: {}", e.code(), e.message()));
    outcome?;
    stop?;
    remove?;
    Ok(start.elapsed())
}

#[tokio::main]
async fn main() {
    let cycles = env("CRUST_SOAK_CYCLES", 200);
    let concurrency = env("CRUST_SOAK_CONCURRENCY", 4);
    let crustd = Arc::new(Crustd::start().await);
    let pid = crustd.pid().unwrap();
    let mut c = crustd.client().await;
    c.pull(&image_ref("crust-test/busybox:latest"))
        .await
        .unwrap();
    // A warm-up cycle, so the figures below compare like with like.
    if let Err(e) = cycle(&crustd, usize::MAX).await {
        println!("warm-up cycle failed: {e}");
    }
    let (rss_before, fds_before) = (rss_kib(pid), open_fds(pid));
    let next = Arc::new(AtomicUsize::new(0));
    let wall = Instant::now();
    let workers: Vec<_> = (0..concurrency)
        .map(|_| {
            let (crustd, next) = (crustd.clone(), next.clone());
            tokio::spawn(async move {
                let mut results = Vec::new();
                loop {
                    let n = next.fetch_add(1, Ordering::SeqCst);
                    if n >= cycles {
                        return results;
                    }
                    results.push(cycle(&crustd, n).await);
                }
            })
        })
        .collect();
    let mut times = Vec::new();
    let mut failures: BTreeMap<String, usize> = BTreeMap::new();
    for w in workers {
        for r in w.await.unwrap() {
            match r {
                Ok(t) => times.push(t),
                Err(e) => *failures.entry(e).or_default() += 1,
            }
        }
    }
    let wall = wall.elapsed();
    times.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    let failed: usize = failures.values().sum();
    println!(
        "soak: {cycles} cycles at {concurrency}-way concurrency in {:.1} s: {} ok, {failed} failed",
        wall.as_secs_f64(),
        times.len()
    );
    if !times.is_empty() {
        println!(
            "cycle: median {:.1} ms, p90 {:.1} ms, max {:.1} ms",
            ms(times[times.len() / 2]),
            ms(times[times.len() * 9 / 10]),
            ms(times[times.len() - 1])
        );
    }
    for (what, n) in &failures {
        println!("failure x{n}: {what}");
    }
    // Give exits and trims a moment, then look for what was left.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let pods_left = std::fs::read_dir(crustd.state().join("pods"))
        .map(|d| d.count())
        .unwrap_or(0);
    println!(
        "left behind: {pods_left} pod dirs, {} mounts, {} processes naming the state dir",
        // Not state/bin: crustd's read-only exposed binaries live there.
        mounts_under(&crustd.state().join("pods")) + mounts_under(&crustd.root()),
        processes_mentioning(&crustd.state()),
    );
    println!(
        "crustd: RSS {rss_before} -> {} KiB, open descriptors {fds_before} -> {}",
        rss_kib(pid),
        open_fds(pid)
    );
}
