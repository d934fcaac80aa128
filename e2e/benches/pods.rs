//! Pod-start benchmark (not a test): RunPodSandbox + CreateContainer +
//! StartContainer of a busybox `sleep` with the image present, 30 pods one
//! after another and 10 at once; crustd's RSS with 0 and 30 pods and each
//! shim's RSS.
//!
//! Run: hack/bench.sh pods   (or: cargo bench -p crust-e2e --bench pods)

use std::time::{Duration, Instant};

use crust_e2e::{Crustd, container_config, image_ref, pod_config, rss_kib};

const SEQUENTIAL: usize = 30;
const CONCURRENT: usize = 10;

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i].as_secs_f64() * 1000.0
}

fn report(what: &str, mut times: Vec<Duration>) {
    times.sort();
    println!(
        "{what}: median {:.1} ms, p90 {:.1} ms over {} pods",
        percentile(&times, 0.5),
        percentile(&times, 0.9),
        times.len()
    );
}

async fn start_pod(crustd: &Crustd, name: String) -> (String, Duration) {
    let mut c = crustd.client().await;
    let config = pod_config(crustd, &name);
    let image = image_ref("crust-test/busybox:latest");
    let start = Instant::now();
    let pod = c.run_pod(&config).await;
    c.run_container(
        &pod,
        &config,
        container_config("sleep", &image, &["sleep", "3600"]),
    )
    .await;
    (pod, start.elapsed())
}

#[tokio::main]
async fn main() {
    let crustd = Crustd::start().await;
    let pid = crustd.pid().unwrap();
    let mut c = crustd.client().await;
    c.pull(&image_ref("crust-test/busybox:latest"))
        .await
        .unwrap();
    let rss_empty = rss_kib(pid);
    let mut times = Vec::new();
    let mut pods = Vec::new();
    for i in 0..SEQUENTIAL {
        let (pod, t) = start_pod(&crustd, format!("seq{i}")).await;
        times.push(t);
        pods.push(pod);
    }
    report("pod start, one at a time", times);
    let rss_full = rss_kib(pid);
    // An idle shim trims itself a couple of seconds after its last call.
    tokio::time::sleep(Duration::from_secs(4)).await;
    let mut shim_rss = Vec::new();
    for pod in &pods {
        let info = c.pod_info(pod).await;
        shim_rss.push(rss_kib(info["pid"].as_u64().unwrap() as u32));
    }
    shim_rss.sort();
    println!("crustd RSS: {rss_empty} KiB with 0 pods, {rss_full} KiB with {SEQUENTIAL} pods");
    println!(
        "shim RSS (one running busybox each, idle 4 s): median {} KiB, max {} KiB",
        shim_rss[shim_rss.len() / 2],
        shim_rss[shim_rss.len() - 1]
    );
    let wall = Instant::now();
    let handles: Vec<_> = (0..CONCURRENT)
        .map(|i| {
            let crustd = &crustd;
            async move { start_pod(crustd, format!("par{i}")).await }
        })
        .collect();
    let results = futures_join_all(handles).await;
    let wall = wall.elapsed();
    report(
        &format!(
            "pod start, {CONCURRENT} at once (wall {:.1} ms)",
            wall.as_secs_f64() * 1000.0
        ),
        results.iter().map(|(_, t)| *t).collect(),
    );
    pods.extend(results.into_iter().map(|(p, _)| p));
    for pod in pods {
        c.remove_pod(&pod).await;
    }
}

/// join_all without a futures dependency: poll every future on this task.
async fn futures_join_all<F: std::future::Future>(futures: Vec<F>) -> Vec<F::Output> {
    let mut pinned: Vec<_> = futures.into_iter().map(Box::pin).collect();
    let mut outputs: Vec<Option<F::Output>> = pinned.iter().map(|_| None).collect();
    std::future::poll_fn(|cx| {
        let mut pending = false;
        for (f, out) in pinned.iter_mut().zip(outputs.iter_mut()) {
            if out.is_none() {
                match f.as_mut().poll(cx) {
                    std::task::Poll::Ready(v) => *out = Some(v),
                    std::task::Poll::Pending => pending = true,
                }
            }
        }
        if pending {
            std::task::Poll::Pending
        } else {
            std::task::Poll::Ready(())
        }
    })
    .await;
    outputs.into_iter().map(|o| o.unwrap()).collect()
}
