//! Scale benchmark (not a test): with 0, 50 and 150 pods held (one busybox
//! `sleep` container each), the latency of the calls kubelet makes on
//! every housekeeping tick: ListPodSandbox, ListContainers,
//! ContainerStatus, ListContainerStats and ListPodSandboxStats (the first
//! call after the pods arrived, then the median and p90 of 20), and
//! crustd's RSS. Lookups should stay flat as pods grow, and the first
//! stats call must not grow by a fixed wait per container.
//!
//! Run: hack/bench.sh scale   (or: cargo bench -p crust-e2e --bench scale)

use std::future::Future;
use std::time::{Duration, Instant};

use crust_e2e::{CriClient, Crustd, container_config, cri, image_ref, pod_config, rss_kib};

const STEPS: [usize; 3] = [0, 50, 150];
const REPEATS: usize = 20;

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// The first call, then the median and p90 of `REPEATS` more.
async fn measure<F, Fut>(mut call: F) -> (f64, f64, f64)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = ()>,
{
    let start = Instant::now();
    call().await;
    let first = ms(start.elapsed());
    let mut times = Vec::with_capacity(REPEATS);
    for _ in 0..REPEATS {
        let start = Instant::now();
        call().await;
        times.push(start.elapsed());
    }
    times.sort();
    (
        first,
        ms(times[REPEATS / 2]),
        ms(times[(REPEATS - 1) * 9 / 10]),
    )
}

async fn add_pod(c: &mut CriClient, crustd: &Crustd, i: usize) -> String {
    let config = pod_config(crustd, &format!("scale{i}"));
    let pod = c.run_pod(&config).await;
    let image = image_ref("crust-test/busybox:latest");
    c.run_container(
        &pod,
        &config,
        container_config("sleep", &image, &["sleep", "3600"]),
    )
    .await
}

#[tokio::main]
async fn main() {
    let crustd = Crustd::start().await;
    let pid = crustd.pid().unwrap();
    let mut c = crustd.client().await;
    c.pull(&image_ref("crust-test/busybox:latest"))
        .await
        .unwrap();
    let mut containers: Vec<String> = Vec::new();
    println!("| pods | call | first (ms) | median (ms) | p90 (ms) |");
    println!("|---:|---|---:|---:|---:|");
    let mut rss = Vec::new();
    for pods in STEPS {
        while containers.len() < pods {
            let id = add_pod(&mut c, &crustd, containers.len()).await;
            containers.push(id);
        }
        // A container that exists (the last one made), or a missing id.
        let probe = containers.last().cloned().unwrap_or_else(|| "0".repeat(64));
        let row = |call: &str, (first, median, p90): (f64, f64, f64)| {
            println!("| {pods} | {call} | {first:.1} | {median:.1} | {p90:.1} |");
        };
        let r = c.runtime.clone();
        row(
            "ListPodSandbox",
            measure(|| {
                let mut r = r.clone();
                async move {
                    r.list_pod_sandbox(cri::ListPodSandboxRequest::default())
                        .await
                        .unwrap();
                }
            })
            .await,
        );
        row(
            "ListContainers",
            measure(|| {
                let mut r = r.clone();
                async move {
                    r.list_containers(cri::ListContainersRequest::default())
                        .await
                        .unwrap();
                }
            })
            .await,
        );
        row(
            "ContainerStatus",
            measure(|| {
                let (mut r, id) = (r.clone(), probe.clone());
                async move {
                    let _ = r
                        .container_status(cri::ContainerStatusRequest {
                            container_id: id,
                            verbose: false,
                        })
                        .await;
                }
            })
            .await,
        );
        row(
            "ListContainerStats",
            measure(|| {
                let mut r = r.clone();
                async move {
                    r.list_container_stats(cri::ListContainerStatsRequest::default())
                        .await
                        .unwrap();
                }
            })
            .await,
        );
        row(
            "ListPodSandboxStats",
            measure(|| {
                let mut r = r.clone();
                async move {
                    r.list_pod_sandbox_stats(cri::ListPodSandboxStatsRequest::default())
                        .await
                        .unwrap();
                }
            })
            .await,
        );
        rss.push((pods, rss_kib(pid)));
    }
    for (pods, kib) in rss {
        println!("crustd RSS with {pods} pods: {kib} KiB");
    }
    let listed = c.list_pods().await;
    for pod in listed {
        c.remove_pod(&pod.id).await;
    }
}
