//! Hostile registries and hostile writable layers, through the CRI socket:
//! an endless manifest body, an endless token response and a decompression
//! bomb are refused with clear errors, crustd's memory stays bounded and
//! nothing is left in the content store or the layers dir; a container that
//! nests directories past PATH_MAX still has its writable layer counted and
//! ImageFsInfo keeps working.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crust_e2e::{Crustd, CrustdOptions, container_config, cri, files_under, image_ref, pod_config};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The most an endless body may be sent before the server gives up (the
/// old code buffered all of it: well past the bound asserted below).
const ENDLESS_LIMIT: usize = 1 << 30;
/// How much crustd's peak RSS may grow during one hostile pull.
const RSS_GROWTH_BOUND_KIB: u64 = 200 << 10;

/// Peak resident memory (VmHWM) of a process, in KiB.
fn peak_rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// What the hostile registry answers for one request.
enum Reply {
    /// Status line, headers and a body.
    Full(&'static str, Vec<(String, String)>, Vec<u8>),
    /// 200 with no length, then spaces until [`ENDLESS_LIMIT`] or the
    /// client hangs up.
    Endless,
}

/// A tiny registry on 127.0.0.1: each request's method and path go to
/// `route`.
async fn hostile_registry<F>(route: F) -> u16
where
    F: Fn(&str, &str, u16) -> Reply + Send + Sync + 'static,
{
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let route = Arc::new(route);
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let route = route.clone();
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut byte = [0u8; 1];
                while !head.ends_with(b"\r\n\r\n") {
                    if stream.read(&mut byte).await.unwrap_or(0) == 0 {
                        return;
                    }
                    head.push(byte[0]);
                }
                let head = String::from_utf8_lossy(&head).into_owned();
                let mut parts = head.split(' ');
                let method = parts.next().unwrap_or("").to_string();
                let path = parts.next().unwrap_or("").to_string();
                match route(&method, &path, port) {
                    Reply::Full(status, headers, body) => {
                        let mut out = format!(
                            "HTTP/1.1 {status}\r\nConnection: close\r\nContent-Length: {}\r\n",
                            body.len()
                        );
                        for (k, v) in headers {
                            out.push_str(&format!("{k}: {v}\r\n"));
                        }
                        out.push_str("\r\n");
                        let _ = stream.write_all(out.as_bytes()).await;
                        if method != "HEAD" {
                            let _ = stream.write_all(&body).await;
                        }
                    }
                    Reply::Endless => {
                        let _ = stream
                            .write_all(
                                b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Type: application/vnd.oci.image.manifest.v1+json\r\n\r\n",
                            )
                            .await;
                        let chunk = vec![b' '; 256 << 10];
                        let mut sent = 0;
                        while sent < ENDLESS_LIMIT && stream.write_all(&chunk).await.is_ok() {
                            sent += chunk.len();
                        }
                    }
                }
            });
        }
    });
    port
}

fn ok_json(body: &str) -> Reply {
    Reply::Full(
        "200 OK",
        vec![("Content-Type".into(), "application/json".into())],
        body.as_bytes().to_vec(),
    )
}

fn not_found() -> Reply {
    Reply::Full("404 Not Found", vec![], b"{}".to_vec())
}

/// Every file left in the content store (blobs and ingests).
fn content_files(root: &Path) -> Vec<std::path::PathBuf> {
    let mut files = files_under(&root.join("content/blobs/sha256"));
    files.extend(files_under(&root.join("content/ingest")));
    files
}

/// Everything under the snapshot root but its two fixed dirs.
fn snapshot_leftovers(root: &Path) -> Vec<std::path::PathBuf> {
    files_under(&root.join("snapshots"))
        .into_iter()
        .filter(|p| p != Path::new("layers") && p != Path::new("rw"))
        .collect()
}

/// Pulls `name` from a fresh crustd and returns the error and the growth
/// of crustd's peak RSS during the pull.
async fn hostile_pull(crustd: &Crustd, name: &str) -> (tonic::Status, u64) {
    let mut c = crustd.client().await;
    let pid = crustd.pid().expect("crustd runs");
    // A first cheap call so the baseline includes a served request.
    let _ = c.list_images().await;
    let before = peak_rss_kib(pid);
    let started = Instant::now();
    let err = c.pull(name).await.unwrap_err();
    let after = peak_rss_kib(pid);
    eprintln!(
        "pull of {name} failed after {:?}: peak RSS {before} KiB -> {after} KiB",
        started.elapsed()
    );
    (err, after.saturating_sub(before))
}

#[tokio::test]
async fn an_endless_manifest_body_is_cut_off_at_the_cap() {
    let port = hostile_registry(|_, path, _| match path {
        "/v2/" => ok_json("{}"),
        p if p.starts_with("/v2/hostile/endless/manifests/") => Reply::Endless,
        _ => not_found(),
    })
    .await;
    let crustd = Crustd::start().await;
    let (err, growth) =
        hostile_pull(&crustd, &format!("127.0.0.1:{port}/hostile/endless:latest")).await;
    assert_eq!(err.code(), tonic::Code::InvalidArgument, "{err:?}");
    assert!(
        err.message()
            .contains(&format!("manifest from 127.0.0.1:{port} exceeds 4 MiB")),
        "{}",
        err.message()
    );
    assert!(
        growth < RSS_GROWTH_BOUND_KIB,
        "crustd's peak RSS grew by {growth} KiB on an endless manifest"
    );
    assert!(
        content_files(&crustd.root()).is_empty(),
        "{:?}",
        content_files(&crustd.root())
    );
    // crustd still serves.
    assert!(crustd.client().await.list_images().await.is_empty());
}

#[tokio::test]
async fn an_endless_token_response_is_cut_off_at_the_cap() {
    let port = hostile_registry(|_, path, port| {
        if path.starts_with("/token") {
            return Reply::Endless;
        }
        Reply::Full(
            "401 Unauthorized",
            vec![(
                "WWW-Authenticate".into(),
                format!("Bearer realm=\"http://127.0.0.1:{port}/token\",service=\"hostile\""),
            )],
            b"{}".to_vec(),
        )
    })
    .await;
    let crustd = Crustd::start().await;
    let (err, growth) =
        hostile_pull(&crustd, &format!("127.0.0.1:{port}/hostile/token:latest")).await;
    assert!(
        err.message().contains("token response from") && err.message().contains("exceeds 1 MiB"),
        "{err:?}"
    );
    assert!(
        growth < RSS_GROWTH_BOUND_KIB,
        "crustd's peak RSS grew by {growth} KiB on an endless token response"
    );
    assert!(content_files(&crustd.root()).is_empty());
}

fn sha256_file(path: &Path) -> String {
    let out = std::process::Command::new("sha256sum")
        .arg(path)
        .output()
        .expect("sha256sum");
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    format!("sha256:{}", text.split_whitespace().next().unwrap())
}

fn sha256_bytes(bytes: &[u8], dir: &Path) -> String {
    let path = dir.join("blob");
    std::fs::write(&path, bytes).unwrap();
    sha256_file(&path)
}

fn arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    }
}

#[tokio::test]
async fn a_layer_that_decompresses_past_the_limit_is_refused() {
    // A gzip layer of a 256 MiB file of zeros: ~250 KiB on the wire.
    let work = tempfile::tempdir_in("/var/tmp").unwrap();
    let script = format!(
        "set -e; cd {}; truncate -s 256M zero; tar -cf layer.tar zero; rm zero; gzip -c -1 layer.tar > layer.tgz",
        work.path().display()
    );
    assert!(
        std::process::Command::new("sh")
            .args(["-c", &script])
            .status()
            .unwrap()
            .success()
    );
    let diff_id = sha256_file(&work.path().join("layer.tar"));
    std::fs::remove_file(work.path().join("layer.tar")).unwrap();
    let layer = std::fs::read(work.path().join("layer.tgz")).unwrap();
    let layer_digest = sha256_bytes(&layer, work.path());
    let config = format!(
        r#"{{"architecture":"{}","os":"linux","config":{{}},"rootfs":{{"type":"layers","diff_ids":["{diff_id}"]}}}}"#,
        arch()
    );
    let config_digest = sha256_bytes(config.as_bytes(), work.path());
    let manifest = format!(
        r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"{config_digest}","size":{}}},"layers":[{{"mediaType":"application/vnd.oci.image.layer.v1.tar+gzip","digest":"{layer_digest}","size":{}}}]}}"#,
        config.len(),
        layer.len()
    );
    let served = Arc::new((manifest, config, config_digest, layer, layer_digest.clone()));
    let port = hostile_registry(move |_, path, _| {
        let (manifest, config, config_digest, layer, layer_digest) = &*served;
        let typed = |t: &str, body: Vec<u8>| {
            Reply::Full("200 OK", vec![("Content-Type".into(), t.into())], body)
        };
        match path {
            "/v2/" => ok_json("{}"),
            "/v2/hostile/bomb/manifests/latest" => typed(
                "application/vnd.oci.image.manifest.v1+json",
                manifest.as_bytes().to_vec(),
            ),
            p if p == format!("/v2/hostile/bomb/blobs/{config_digest}") => {
                typed("application/octet-stream", config.as_bytes().to_vec())
            }
            p if p == format!("/v2/hostile/bomb/blobs/{layer_digest}") => {
                typed("application/octet-stream", layer.clone())
            }
            _ => not_found(),
        }
    })
    .await;
    let crustd = Crustd::start_with(CrustdOptions {
        extra_config: "registries:\n  max_layer_uncompressed_bytes: 4194304\n".into(),
        ..Default::default()
    })
    .await;
    let mut c = crustd.client().await;
    let err = c
        .pull(&format!("127.0.0.1:{port}/hostile/bomb:latest"))
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument, "{err:?}");
    assert!(
        err.message().contains("max_layer_uncompressed_bytes")
            && err.message().contains(&layer_digest),
        "{}",
        err.message()
    );
    let root = crustd.root();
    assert!(
        content_files(&root).is_empty(),
        "{:?}",
        content_files(&root)
    );
    assert!(
        snapshot_leftovers(&root).is_empty(),
        "{:?}",
        snapshot_leftovers(&root)
    );
    assert!(c.list_images().await.is_empty());
}

#[tokio::test]
async fn a_writable_layer_nested_past_path_max_is_counted() {
    let crustd = Crustd::start().await;
    let mut c = crustd.client().await;
    let busybox = image_ref("crust-test/busybox:latest");
    c.pull(&busybox).await.unwrap();
    let pod_cfg = pod_config(&crustd, "deep");
    let pod = c.run_pod(&pod_cfg).await;
    // 300 levels of 255-byte names (~77 KB of path) over a 4 MiB file, built
    // bottom-up with renames so no call in the container needs a long path.
    let script = "n=$(printf '%0255d' 0); mkdir /a && dd if=/dev/zero of=/a/data bs=1024 count=4096 2>/dev/null || exit 2; \
                  i=0; while [ $i -lt 300 ]; do mkdir /t && mv /a /t/$n && mv /t /a || exit 1; i=$((i+1)); done; \
                  echo built > /built; exec sleep 3600";
    let id = c
        .run_container(
            &pod,
            &pod_cfg,
            container_config("deep", &busybox, &["sh", "-c", script]),
        )
        .await;
    let deadline = Instant::now() + Duration::from_secs(60);
    let used = loop {
        let built = c
            .exec_sync(&id, &["cat", "/built"], 10)
            .await
            .is_ok_and(|r| r.exit_code == 0);
        if built {
            let stats = c
                .runtime
                .list_container_stats(cri::ListContainerStatsRequest { filter: None })
                .await
                .unwrap()
                .into_inner()
                .stats;
            let ours = stats
                .iter()
                .find(|s| s.attributes.as_ref().is_some_and(|a| a.id == id))
                .expect("stats of the container");
            break ours
                .writable_layer
                .as_ref()
                .and_then(|w| w.used_bytes.as_ref())
                .map_or(0, |b| b.value);
        }
        let status = c.container_status(&id).await;
        assert_eq!(
            status.state,
            cri::ContainerState::ContainerRunning as i32,
            "the tree builder died: {status:?}"
        );
        assert!(Instant::now() < deadline, "the tree was not built in time");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert!(
        used >= 4 << 20,
        "writable layer usage {used} bytes: the 4 MiB file below PATH_MAX was not counted"
    );
    let fs = c
        .image
        .image_fs_info(cri::ImageFsInfoRequest {})
        .await
        .expect("ImageFsInfo with a tree deeper than PATH_MAX on the node")
        .into_inner();
    assert!(fs.image_filesystems[0].used_bytes.as_ref().unwrap().value > 0);
    c.remove_pod(&pod).await;
}
