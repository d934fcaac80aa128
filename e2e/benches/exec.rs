//! Streaming benchmark (not a test): latency of a trivial command through
//! ExecSync, streamed exec over SPDY and over WebSocket v5, and of one HTTP
//! request through port-forward; stdout throughput of a streamed exec;
//! crustd's RSS before and after.
//!
//! Run: hack/bench.sh exec   (or: cargo bench -p crust-e2e --bench exec)

use std::time::{Duration, Instant};

use crust_e2e::streaming::{self, SpdyPortForward, StreamOptions};
use crust_e2e::{CriClient, Crustd, container_config, cri, image_ref, pod_config, rss_kib};

const RUNS: usize = 50;
const BULK_BYTES: usize = 64 << 20;

fn report(what: &str, mut times: Vec<Duration>) {
    times.sort();
    let at = |p: f64| times[((times.len() as f64 - 1.0) * p).round() as usize].as_secs_f64() * 1e3;
    println!(
        "{what}: median {:.1} ms, p90 {:.1} ms over {} runs",
        at(0.5),
        at(0.9),
        times.len()
    );
}

async fn exec_url(c: &mut CriClient, ctr: &str, cmd: &[&str]) -> String {
    c.runtime
        .exec(cri::ExecRequest {
            container_id: ctr.to_string(),
            cmd: cmd.iter().map(|s| s.to_string()).collect(),
            stdout: true,
            stderr: true,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .url
}

#[tokio::main]
async fn main() {
    let crustd = Crustd::start().await;
    let pid = crustd.pid().unwrap();
    let mut c = crustd.client().await;
    c.pull(&image_ref("crust-test/web:latest")).await.unwrap();
    let pod_cfg = pod_config(&crustd, "bench");
    let pod = c.run_pod(&pod_cfg).await;
    let mut web = container_config("web", &image_ref("crust-test/web:latest"), &[]);
    web.command.clear();
    let ctr = c.run_container(&pod, &pod_cfg, web).await;
    let rss_before = rss_kib(pid);
    let opts = StreamOptions::output();

    let mut times = Vec::new();
    for _ in 0..RUNS {
        let start = Instant::now();
        let out = c.exec_sync(&ctr, &["true"], 10).await.unwrap();
        assert_eq!(out.exit_code, 0);
        times.push(start.elapsed());
    }
    report("ExecSync `true`", times);

    let mut times = Vec::new();
    for _ in 0..RUNS {
        let start = Instant::now();
        let url = exec_url(&mut c, &ctr, &["true"]).await;
        let out = streaming::spdy_exec(&url, opts, b"").await.unwrap();
        assert!(out.status.success);
        times.push(start.elapsed());
    }
    report(
        "Exec `true` over SPDY (RPC + upgrade + run + status)",
        times,
    );

    let mut times = Vec::new();
    for _ in 0..RUNS {
        let start = Instant::now();
        let url = exec_url(&mut c, &ctr, &["true"]).await;
        let out = streaming::ws_exec(&url, opts, &["v5.channel.k8s.io"], b"")
            .await
            .unwrap();
        assert!(out.status.success);
        times.push(start.elapsed());
    }
    report("Exec `true` over WebSocket v5", times);

    let forward_url = |c: &mut CriClient| {
        let mut runtime = c.runtime.clone();
        let pod = pod.clone();
        async move {
            runtime
                .port_forward(cri::PortForwardRequest {
                    pod_sandbox_id: pod,
                    port: vec![80],
                })
                .await
                .unwrap()
                .into_inner()
                .url
        }
    };
    let get = b"GET /index.html HTTP/1.0\r\n\r\n";
    // Wait for httpd.
    loop {
        let pf = SpdyPortForward::connect(&forward_url(&mut c).await)
            .await
            .unwrap();
        let ok = pf
            .open(80)
            .await
            .unwrap()
            .round_trip(get, false)
            .await
            .is_ok_and(|r| String::from_utf8_lossy(&r).contains("crust-web-ok"));
        pf.close().await;
        if ok {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let pf = SpdyPortForward::connect(&forward_url(&mut c).await)
        .await
        .unwrap();
    let mut times = Vec::new();
    for _ in 0..RUNS {
        let start = Instant::now();
        let reply = pf.open(80).await.unwrap().round_trip(get, false).await;
        assert!(String::from_utf8_lossy(&reply.unwrap()).contains("crust-web-ok"));
        times.push(start.elapsed());
    }
    pf.close().await;
    report("Port-forward HTTP GET on an open SPDY session", times);

    let cmd = format!("head -c {BULK_BYTES} /dev/zero");
    for transport in ["SPDY", "WebSocket v5"] {
        let url = exec_url(&mut c, &ctr, &["sh", "-c", &cmd]).await;
        let start = Instant::now();
        let out = match transport {
            "SPDY" => streaming::spdy_exec(&url, opts, b"").await.unwrap(),
            _ => streaming::ws_exec(&url, opts, &["v5.channel.k8s.io"], b"")
                .await
                .unwrap(),
        };
        let took = start.elapsed().as_secs_f64();
        assert_eq!(out.stdout.len(), BULK_BYTES);
        println!(
            "Exec stdout throughput over {transport}: {} MiB in {:.2} s = {:.0} MiB/s",
            BULK_BYTES >> 20,
            took,
            (BULK_BYTES >> 20) as f64 / took
        );
    }
    println!(
        "crustd RSS: {} KiB with the pod running, {} KiB after the benchmark",
        rss_before,
        rss_kib(pid)
    );
}
