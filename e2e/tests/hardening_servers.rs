//! crustd's TCP listeners under a connection flood: a local user holding
//! many half-sent requests open to the metrics and streaming ports, with
//! crustd started at the 1,024 soft open-file limit systemd gives a
//! service, must not starve the CRI socket, spin crustd or flood its log.

use std::time::{Duration, Instant};

use crust_e2e::{Crustd, CrustdOptions, cri, free_port, http_get};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

const FLOOD: usize = 1100;

/// Opens up to `n` connections to `port`, each sending half a request
/// head; those the kernel does not complete in time are left out.
async fn flood(port: u16, n: usize, half_request: &'static [u8]) -> Vec<TcpStream> {
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..n {
        tasks.spawn(async move {
            let mut s = tokio::time::timeout(
                Duration::from_secs(3),
                TcpStream::connect(("127.0.0.1", port)),
            )
            .await
            .ok()?
            .ok()?;
            s.write_all(half_request).await.ok()?;
            Some(s)
        });
    }
    let mut open = Vec::new();
    while let Some(r) = tasks.join_next().await {
        open.extend(r.unwrap());
    }
    open
}

/// crustd's user plus system CPU time so far.
fn cpu_time(pid: u32) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    // Fields after the command name (which may hold spaces): utime and
    // stime are the 12th and 13th.
    let rest = &stat[stat.rfind(')').unwrap() + 2..];
    let f: Vec<u64> = rest
        .split_whitespace()
        .skip(11)
        .take(2)
        .map(|v| v.parse().unwrap())
        .collect();
    // USER_HZ is 100 on Linux.
    Duration::from_millis((f[0] + f[1]) * 10)
}

fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .count()
}

/// Version and Status over a fresh connection, within 5 s.
async fn cri_answers(crustd: &Crustd) {
    tokio::time::timeout(Duration::from_secs(5), async {
        let mut c = crustd.client().await;
        let v = c
            .runtime
            .version(cri::VersionRequest::default())
            .await
            .expect("Version")
            .into_inner();
        assert_eq!(v.runtime_name, "crust");
        c.runtime
            .status(cri::StatusRequest::default())
            .await
            .expect("Status");
    })
    .await
    .expect("the CRI socket did not answer Version and Status within 5 s");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_connection_flood_on_metrics_and_streaming_does_not_starve_the_cri_socket() {
    // This process holds both ends' client sides: 2,200 and some.
    let me = std::process::id();
    let (soft, hard) = crust_e2e::nofile_limits(me);
    if soft < 8192 {
        crust_e2e::set_nofile_limits(me, hard.max(8192), hard.max(8192));
    }
    let wrapper = tempfile::tempdir().unwrap();
    let (metrics_port, streaming_port) = (free_port(), free_port());
    let crustd = Crustd::start_with(CrustdOptions {
        extra_config: format!(
            "metrics:\n  address: 127.0.0.1:{metrics_port}\n\
             streaming:\n  address: 127.0.0.1:{streaming_port}\n"
        ),
        binary: Some(crust_e2e::crustd_with_nofile_limits(
            wrapper.path(),
            1024,
            4096,
        )),
        ..Default::default()
    })
    .await;
    let pid = crustd.pid().unwrap();
    assert_eq!(
        crust_e2e::nofile_limits(pid),
        (4096, 4096),
        "crustd did not raise its open-file limit:\n{}",
        crustd.log()
    );
    assert!(
        crustd.log().contains("raised the open-file limit"),
        "{}",
        crustd.log()
    );
    cri_answers(&crustd).await;
    let log_before = std::fs::metadata(&crustd.log_path).unwrap().len();

    let (metrics, streaming) = tokio::join!(
        flood(metrics_port, FLOOD, b"GET /metrics HTTP/1.1\r\nHost: x\r\n"),
        flood(
            streaming_port,
            FLOOD,
            b"GET /exec/x HTTP/1.1\r\nHost: x\r\n"
        ),
    );
    eprintln!(
        "holding {} metrics and {} streaming connections",
        metrics.len(),
        streaming.len()
    );
    // More than crustd holds at once (64 and 128): the rest wait in its
    // backlogs, and what the backlogs cannot take the kernel refuses.
    assert!(
        metrics.len() > 64 + 50 && streaming.len() > 128 + 50,
        "the flood did not reach crustd"
    );

    let cpu_before = cpu_time(pid);
    let window = Instant::now();
    let mut most_fds = 0;
    for _ in 0..5 {
        cri_answers(&crustd).await;
        most_fds = most_fds.max(open_fds(pid));
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let (cpu, elapsed) = (cpu_time(pid) - cpu_before, window.elapsed());
    eprintln!("crustd: {cpu:?} of CPU in {elapsed:?}, at most {most_fds} fds open");
    assert!(
        cpu < elapsed / 2,
        "crustd used {cpu:?} of CPU in {elapsed:?} under the flood"
    );
    // Both listeners' caps (64 + 128) and then some: far below even the
    // 1,024 it started with.
    assert!(most_fds < 1024, "crustd held {most_fds} fds");
    let grown = std::fs::metadata(&crustd.log_path).unwrap().len() - log_before;
    assert!(
        grown < 256 * 1024,
        "crustd's log grew by {grown} bytes under the flood"
    );

    drop((metrics, streaming));
    let answer = tokio::time::timeout(
        Duration::from_secs(30),
        tokio::task::spawn_blocking(move || http_get(metrics_port, "/metrics")),
    )
    .await
    .expect("metrics not served after the flood ended")
    .unwrap();
    assert!(answer.starts_with("HTTP/1.0 200"), "{answer}");
    assert!(answer.contains("crust_grpc_requests_total"), "{answer}");
    let answer = tokio::time::timeout(
        Duration::from_secs(30),
        tokio::task::spawn_blocking(move || http_get(streaming_port, "/exec/x")),
    )
    .await
    .expect("streaming not served after the flood ended")
    .unwrap();
    assert!(answer.starts_with("HTTP/1.0 404"), "{answer}");
    cri_answers(&crustd).await;
}

/// crustd raises its own open-file limit; its containers must start with
/// the limit crustd was started with, not crustd's raised one.
#[tokio::test]
async fn containers_do_not_inherit_crustds_raised_open_file_limit() {
    let wrapper = tempfile::tempdir().unwrap();
    let crustd = Crustd::start_with(CrustdOptions {
        binary: Some(crust_e2e::crustd_with_nofile_limits(
            wrapper.path(),
            1024,
            4096,
        )),
        ..Default::default()
    })
    .await;
    assert_eq!(
        crust_e2e::nofile_limits(crustd.pid().unwrap()),
        (4096, 4096)
    );
    let mut c = crustd.client().await;
    let busybox = crust_e2e::image_ref("crust-test/busybox:latest");
    c.pull(&busybox).await.unwrap();
    let pod_cfg = crust_e2e::pod_config(&crustd, "limits");
    let pod = c.run_pod(&pod_cfg).await;
    let id = c
        .run_container(
            &pod,
            &pod_cfg,
            crust_e2e::container_config("sleep", &busybox, &["sleep", "3600"]),
        )
        .await;
    let info = c
        .runtime
        .container_status(cri::ContainerStatusRequest {
            container_id: id.clone(),
            verbose: true,
        })
        .await
        .unwrap()
        .into_inner()
        .info;
    let info: serde_json::Value = serde_json::from_str(&info["info"]).unwrap();
    let pid = info["pid"].as_u64().expect("pid in verbose info") as u32;
    assert_eq!(crust_e2e::nofile_limits(pid), (1024, 4096), "the container");
    let out = c
        .exec_sync(&id, &["sh", "-c", "ulimit -Sn; ulimit -Hn"], 10)
        .await
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "1024\n4096\n",
        "an exec"
    );
    c.remove_pod(&pod).await;
}
