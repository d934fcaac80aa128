//! Pull progress an operator can see while a pull runs: verbose Status'
//! `pullsInFlight`, `crustd status`, the progress log and the pull
//! metrics, for a pull slowed down by a throttling mirror on loopback.

use std::time::{Duration, Instant};

use crust_e2e::{Crustd, CrustdOptions, cri, free_port, http_get, run_crustd, test_images};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A TCP proxy to the test registry that passes the registry's answers
/// on in 16 KiB pieces, 40 ms apart: a 1 MiB layer takes about 2.5 s.
async fn throttling_proxy() -> u16 {
    let upstream = test_images()["registry"].as_str().unwrap().to_string();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((client, _)) = listener.accept().await {
            let upstream = upstream.clone();
            tokio::spawn(async move {
                let Ok(server) = tokio::net::TcpStream::connect(&upstream).await else {
                    return;
                };
                let (mut cr, mut cw) = client.into_split();
                let (mut sr, mut sw) = server.into_split();
                tokio::spawn(async move {
                    let _ = tokio::io::copy(&mut cr, &mut sw).await;
                    let _ = sw.shutdown().await;
                });
                let mut buf = vec![0u8; 16 << 10];
                loop {
                    let n = match sr.read(&mut buf).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => n,
                    };
                    if cw.write_all(&buf[..n]).await.is_err() {
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(40)).await;
                }
                let _ = cw.shutdown().await;
            });
        }
    });
    port
}

fn metric(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .find(|l| l.starts_with(name))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

#[tokio::test]
async fn a_pull_in_flight_shows_in_status_crustd_status_logs_and_metrics() {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("SKIPPED: e2e tests need root");
        return;
    }
    let proxy = throttling_proxy().await;
    let metrics_port = free_port();
    let crustd = Crustd::start_with(CrustdOptions {
        extra_config: format!(
            "metrics:\n  address: 127.0.0.1:{metrics_port}\nregistries:\n  mirrors:\n    slow.example: [http://127.0.0.1:{proxy}]\n"
        ),
        ..Default::default()
    })
    .await;
    let image = "slow.example/crust-test/busybox:latest";
    let mut puller = crustd.client().await;
    let pull = tokio::spawn(async move { puller.pull(image).await });

    // While it runs: listed with its endpoint and bytes.
    let mut c = crustd.client().await;
    let deadline = Instant::now() + Duration::from_secs(20);
    let seen = loop {
        let status = c
            .runtime
            .status(cri::StatusRequest { verbose: true })
            .await
            .unwrap()
            .into_inner();
        let pulls: serde_json::Value = serde_json::from_str(&status.info["pullsInFlight"]).unwrap();
        if let Some(p) = pulls.as_array().and_then(|a| a.first())
            && p["bytesTotal"].as_u64().unwrap_or(0) > 0
        {
            break p.clone();
        }
        assert!(Instant::now() < deadline, "no pull in flight: {pulls}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(seen["image"], image);
    assert_eq!(seen["via"], format!("127.0.0.1:{proxy}"));
    assert_eq!(seen["layers"], 1);
    let socket = crustd.socket.display().to_string();
    let (code, out) = run_crustd(&["status", "--socket", &socket]);
    assert_eq!(code, Some(0), "{out}");
    assert!(
        out.contains(&format!("pull:          {image} via 127.0.0.1:{proxy}: ")),
        "{out}"
    );
    let during = http_get(metrics_port, "/metrics");
    assert_eq!(
        metric(&during, "crust_image_pulls_in_flight"),
        Some(1.0),
        "{during}"
    );

    // Afterwards: gone from the list, counted in the metrics, logged.
    pull.await.unwrap().unwrap();
    let (_, out) = run_crustd(&["status", "--socket", &socket]);
    assert!(out.contains("pulls:         none in flight"), "{out}");
    let after = http_get(metrics_port, "/metrics");
    assert_eq!(
        metric(&after, "crust_image_pulls_in_flight"),
        Some(0.0),
        "{after}"
    );
    let bytes = metric(
        &after,
        "crust_image_pull_bytes_total{registry=\"slow.example\"}",
    )
    .unwrap_or(0.0);
    assert!(bytes >= seen["bytesTotal"].as_f64().unwrap(), "{after}");
    assert_eq!(
        metric(
            &after,
            "crust_image_pull_duration_seconds_count{registry=\"slow.example\"}"
        ),
        Some(1.0),
        "{after}"
    );
    let log = crustd.log();
    assert!(
        log.lines().any(|l| l.contains("pull progress")
            && l.contains(&format!("via=\"127.0.0.1:{proxy}\""))
            && l.contains("bytes_per_second=")),
        "{log}"
    );
}
