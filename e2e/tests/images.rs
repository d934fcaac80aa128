//! ImageService against the real test registry from hack/.

use std::os::unix::fs::FileTypeExt;
use std::time::Duration;

use crust_e2e::{Crustd, CrustdOptions, cri, files_under, image_id, image_ref, test_images};
use nix::sys::signal::Signal;

fn layer_dir(crustd: &Crustd, chain_id: &str) -> std::path::PathBuf {
    crustd
        .root()
        .join("snapshots/layers")
        .join(chain_id.trim_start_matches("sha256:"))
        .join("fs")
}

fn blobs_dir(crustd: &Crustd) -> std::path::PathBuf {
    crustd.root().join("content/blobs/sha256")
}

fn layer_digests(name: &str) -> Vec<String> {
    let image = &test_images()["images"][name];
    let image = if image["host_platform_image"].is_object() {
        &image["host_platform_image"]
    } else {
        image
    };
    image["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["digest"].as_str().unwrap().to_string())
        .collect()
}

#[tokio::test]
async fn pulls_every_format_and_reports_the_image_id() {
    let crustd = Crustd::start().await;
    let mut c = crustd.client().await;
    for name in [
        "crust-test/busybox:latest",
        "crust-test/busybox:zstd",
        "crust-test/busybox:docker",
        "crust-test/multilayer:latest",
        "crust-test/web:latest",
        "crust-test/multiarch:latest",
        "crust-test/multiarch:docker",
    ] {
        let id = c
            .pull(&image_ref(name))
            .await
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(id, image_id(name), "{name}");
        let status = c.image_status(&image_ref(name)).await.expect(name);
        assert_eq!(status.id, id);
        assert!(
            status.repo_tags.contains(&image_ref(name)),
            "{name}: {status:?}"
        );
        let manifest = test_images()["images"][name]["manifest_digest"]
            .as_str()
            .unwrap()
            .to_string();
        let repo = image_ref(name).rsplit_once(':').unwrap().0.to_string();
        assert!(
            status.repo_digests.contains(&format!("{repo}@{manifest}")),
            "{name}: {status:?}"
        );
        for digest in layer_digests(name) {
            assert!(
                blobs_dir(&crustd)
                    .join(digest.trim_start_matches("sha256:"))
                    .is_file(),
                "{name}: blob {digest} missing"
            );
        }
    }
    // multiarch:latest and :docker resolve to the same amd64 config, so
    // one image ID: 6 images under 7 names.
    let images = c.list_images().await;
    assert_eq!(images.len(), 6);
    let multi = c
        .image_status(&image_ref("crust-test/multiarch:docker"))
        .await
        .unwrap();
    assert_eq!(multi.repo_tags.len(), 2, "{multi:?}");
    // The index resolved to this host's platform: its marker file says so.
    let info = c
        .image_info(&image_ref("crust-test/multiarch:latest"))
        .await;
    assert_eq!(info["imageSpec"]["architecture"], "amd64");
    let top = info["chainID"].as_str().unwrap();
    let marker = std::fs::read_to_string(layer_dir(&crustd, top).join("platform")).unwrap();
    assert_eq!(marker, "linux/amd64\n");
}

#[tokio::test]
async fn multilayer_unpacks_to_overlay_form() {
    let crustd = Crustd::start().await;
    let mut c = crustd.client().await;
    c.pull(&image_ref("crust-test/multilayer:latest"))
        .await
        .unwrap();
    let info = c
        .image_info(&image_ref("crust-test/multilayer:latest"))
        .await;
    let chains: Vec<String> = info["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["chainID"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(chains.len(), 5);
    // Layer 2 (uncompressed tar) holds the whiteout and the opaque marker.
    let l2 = layer_dir(&crustd, &chains[2]);
    let whiteout = std::fs::symlink_metadata(l2.join("data/dir1/f")).unwrap();
    assert!(
        whiteout.file_type().is_char_device(),
        "whiteout is a char device"
    );
    assert_eq!(std::os::unix::fs::MetadataExt::rdev(&whiteout), 0);
    let opaque = xattr_get(&l2.join("data/opaque"), "trusted.overlay.opaque");
    assert_eq!(opaque.as_deref(), Some(b"y".as_slice()));
    assert!(!l2.join("data/opaque/.wh..wh..opq").exists());
    // Layer 1 keeps links, modes and owners.
    let l1 = layer_dir(&crustd, &chains[1]);
    assert_eq!(
        std::fs::read_link(l1.join("data/link")).unwrap().to_str(),
        Some("a.txt")
    );
    use std::os::unix::fs::MetadataExt;
    let a = std::fs::metadata(l1.join("data/a.txt")).unwrap();
    let hard = std::fs::metadata(l1.join("data/hard")).unwrap();
    assert_eq!(a.ino(), hard.ino(), "hardlink shares the inode");
}

fn xattr_get(path: &std::path::Path, name: &str) -> Option<Vec<u8>> {
    let out = std::process::Command::new("getfattr")
        .args(["--only-values", "-n", name])
        .arg(path)
        .output()
        .ok()?;
    out.status.success().then_some(out.stdout)
}

#[tokio::test]
async fn pull_by_digest_and_by_tag_plus_digest() {
    let crustd = Crustd::start().await;
    let mut c = crustd.client().await;
    let name = "crust-test/busybox:latest";
    let manifest = test_images()["images"][name]["manifest_digest"]
        .as_str()
        .unwrap()
        .to_string();
    let repo = image_ref("crust-test/busybox");
    let by_digest = format!("{repo}@{manifest}");
    assert_eq!(c.pull(&by_digest).await.unwrap(), image_id(name));
    let status = c.image_status(&by_digest).await.unwrap();
    assert_eq!(status.repo_digests, vec![by_digest.clone()]);
    assert!(status.repo_tags.is_empty(), "a digest pull adds no tag");
    let tagged = format!("{repo}:latest@{manifest}");
    assert_eq!(c.pull(&tagged).await.unwrap(), image_id(name));
    // A wrong digest is refused.
    let wrong = format!("{repo}@sha256:{}", "0".repeat(64));
    let err = c.pull(&wrong).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::NotFound, "{err:?}");
}

#[tokio::test]
async fn bad_references_and_missing_images_are_clear_errors() {
    let crustd = Crustd::start().await;
    let mut c = crustd.client().await;
    let err = c.pull("UPPER/case").await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    assert!(err.message().contains("lowercase"), "{}", err.message());
    let err = c
        .pull(&image_ref("crust-test/nosuch:latest"))
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::NotFound, "{err:?}");
    assert!(
        err.message().contains("crust-test/nosuch"),
        "{}",
        err.message()
    );
    assert!(c.list_images().await.is_empty());
}

#[tokio::test]
async fn mirror_serves_the_image_under_its_original_name() {
    let registry = test_images()["registry"].as_str().unwrap().to_string();
    // The upstream is never contacted: the mirror answers first.
    let crustd = Crustd::start_with(CrustdOptions {
        extra_config: format!(
            "registries:\n  mirrors:\n    upstream.crust.invalid:\n      - http://{registry}\n"
        ),
        ..Default::default()
    })
    .await;
    let mut c = crustd.client().await;
    let name = "upstream.crust.invalid/crust-test/busybox:latest";
    assert_eq!(
        c.pull(name).await.unwrap(),
        image_id("crust-test/busybox:latest")
    );
    let status = c.image_status(name).await.unwrap();
    assert_eq!(status.repo_tags, vec![name.to_string()]);
    assert!(status.repo_digests[0].starts_with("upstream.crust.invalid/crust-test/busybox@"));
}

#[tokio::test]
async fn a_failing_mirror_falls_back_to_the_upstream() {
    let registry = test_images()["registry"].as_str().unwrap().to_string();
    let dead = crust_e2e::free_port();
    let crustd = Crustd::start_with(CrustdOptions {
        extra_config: format!(
            "registries:\n  mirrors:\n    \"{registry}\":\n      - http://127.0.0.1:{dead}\n"
        ),
        ..Default::default()
    })
    .await;
    let mut c = crustd.client().await;
    let name = image_ref("crust-test/busybox:latest");
    assert_eq!(
        c.pull(&name).await.unwrap(),
        image_id("crust-test/busybox:latest")
    );
    assert!(crustd.log().contains("mirror failed"), "{}", crustd.log());
}

#[tokio::test]
async fn basic_auth_pull_and_wrong_credentials() {
    let auth = &test_images()["auth_registry"];
    let registry = auth["registry"].as_str().unwrap();
    let user = auth["username"].as_str().unwrap();
    let password = auth["password"].as_str().unwrap();
    let crustd = Crustd::start().await;
    let mut c = crustd.client().await;
    let name = format!("{registry}/crust-test/busybox:latest");
    let err = c.pull(&name).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::PermissionDenied, "{err:?}");
    let wrong = cri::AuthConfig {
        username: user.into(),
        password: "wrong".into(),
        ..Default::default()
    };
    let err = c.pull_with(&name, Some(wrong)).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::PermissionDenied, "{err:?}");
    assert!(err.message().contains(registry), "{}", err.message());
    let right = cri::AuthConfig {
        username: user.into(),
        password: password.into(),
        server_address: registry.into(),
        ..Default::default()
    };
    let id = c.pull_with(&name, Some(right)).await.unwrap();
    assert_eq!(id, image_id("crust-test/busybox:latest"));
    // The same credentials as the base64 "auth" field.
    use std::io::Write;
    let mut encoded = Vec::new();
    write!(encoded, "{user}:{password}").unwrap();
    let b64 = base64_encode(&encoded);
    let crustd2 = Crustd::start().await;
    let mut c2 = crustd2.client().await;
    let id = c2
        .pull_with(
            &name,
            Some(cri::AuthConfig {
                auth: b64,
                ..Default::default()
            }),
        )
        .await
        .unwrap();
    assert_eq!(id, image_id("crust-test/busybox:latest"));
}

fn base64_encode(bytes: &[u8]) -> String {
    const T: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let n = chunk.iter().fold(0u32, |acc, &b| acc << 8 | b as u32) << (8 * (3 - chunk.len()));
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(T[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

fn registry_blob_gets(repo: &str, digest: &str) -> usize {
    let dir =
        std::env::var("CRUST_REGISTRY_DIR").unwrap_or_else(|_| "/var/tmp/crust-registry".into());
    let log = std::fs::read_to_string(format!("{dir}/plain/registry.log")).unwrap_or_default();
    let needle = format!("\"GET /v2/{repo}/blobs/{digest} ");
    log.lines()
        .filter(|l| l.contains(&needle) && l.contains("crust/"))
        .count()
}

#[tokio::test]
async fn concurrent_pulls_download_each_blob_once() {
    // Only this test pulls user-named, so the registry's log counts our GETs.
    let name = "crust-test/user-named:latest";
    let layer = layer_digests(name)[0].clone();
    let before = registry_blob_gets("crust-test/user-named", &layer);
    let crustd = Crustd::start().await;
    let mut pulls = Vec::new();
    for _ in 0..4 {
        let mut c = crustd.client().await;
        pulls.push(tokio::spawn(async move { c.pull(&image_ref(name)).await }));
    }
    for pull in pulls {
        assert_eq!(pull.await.unwrap().unwrap(), image_id(name));
    }
    let after = registry_blob_gets("crust-test/user-named", &layer);
    assert_eq!(
        after - before,
        1,
        "the layer was downloaded {} times",
        after - before
    );
    let mut c = crustd.client().await;
    assert_eq!(c.list_images().await.len(), 1);
}

#[tokio::test]
async fn every_kind_of_name_finds_and_removes_the_image() {
    let crustd = Crustd::start().await;
    let mut c = crustd.client().await;
    let name = "crust-test/busybox:stopsignal";
    let id = c.pull(&image_ref(name)).await.unwrap();
    let manifest = test_images()["images"][name]["manifest_digest"]
        .as_str()
        .unwrap()
        .to_string();
    let by_digest = format!("{}@{manifest}", image_ref("crust-test/busybox"));
    let short_id = id.trim_start_matches("sha256:")[..12].to_string();
    for lookup in [
        image_ref(name),
        id.clone(),
        by_digest.clone(),
        short_id.clone(),
        id.trim_start_matches("sha256:").to_string(),
    ] {
        let status = c.image_status(&lookup).await;
        assert_eq!(status.map(|s| s.id), Some(id.clone()), "{lookup}");
        let listed = c
            .image
            .list_images(cri::ListImagesRequest {
                filter: Some(cri::ImageFilter {
                    image: Some(crust_e2e::image_spec(&lookup)),
                }),
            })
            .await
            .unwrap()
            .into_inner()
            .images;
        assert_eq!(listed.len(), 1, "{lookup}");
    }
    let info = c.image_info(&id).await;
    assert_eq!(info["imageSpec"]["config"]["StopSignal"], "SIGUSR1");
    for removal in [by_digest, short_id, id.clone()] {
        c.pull(&image_ref(name)).await.unwrap();
        c.remove_image(&removal).await;
        assert!(
            c.image_status(&id).await.is_none(),
            "{removal} did not remove"
        );
    }
    // Removing what is not there succeeds.
    c.remove_image(&image_ref(name)).await;
    c.remove_image(&id).await;
}

#[tokio::test]
async fn tags_move_to_the_newly_pulled_image() {
    // A tag of our own in the registry, pointed first at one image, then
    // at another.
    let repo = "crust-test/busybox";
    let tag = format!("moving-{}", std::process::id());
    let name = image_ref(&format!("{repo}:{tag}"));
    let (media_type, manifest) = crust_e2e::registry_get_manifest(repo, "latest");
    crust_e2e::registry_put_manifest(repo, &tag, &media_type, &manifest);
    let crustd = Crustd::start().await;
    let mut c = crustd.client().await;
    let first = c.pull(&name).await.unwrap();
    assert_eq!(first, image_id("crust-test/busybox:latest"));
    let (media_type, manifest) = crust_e2e::registry_get_manifest(repo, "docker");
    crust_e2e::registry_put_manifest(repo, &tag, &media_type, &manifest);
    let second = c.pull(&name).await.unwrap();
    assert_eq!(second, image_id("crust-test/busybox:docker"));
    assert_eq!(c.image_status(&name).await.unwrap().id, second);
    // The old image stays, nameless but present, until removed.
    let old = c
        .image_status(&first)
        .await
        .expect("old image still present");
    assert!(old.repo_tags.is_empty(), "{old:?}");
    assert!(!old.repo_digests.is_empty());
    assert_eq!(c.list_images().await.len(), 2);
    // Removing one tag of an image with two only untags it.
    let other = image_ref("crust-test/busybox:docker");
    assert_eq!(c.pull(&other).await.unwrap(), second);
    c.remove_image(&name).await;
    let status = c.image_status(&second).await.unwrap();
    assert_eq!(status.repo_tags, vec![other]);
    c.remove_image(&first).await;
    assert!(c.image_status(&first).await.is_none());
}

#[tokio::test]
async fn removing_images_collects_what_nothing_else_uses() {
    let crustd = Crustd::start().await;
    let mut c = crustd.client().await;
    c.pull(&image_ref("crust-test/busybox:latest"))
        .await
        .unwrap();
    c.pull(&image_ref("crust-test/multilayer:latest"))
        .await
        .unwrap();
    let base = layer_digests("crust-test/busybox:latest")[0].clone();
    let fs_before = image_fs_used(&mut c).await;
    c.remove_image(&image_ref("crust-test/multilayer:latest"))
        .await;
    // The shared base layer stays for busybox; multilayer's own blobs go.
    let blobs = files_under(&blobs_dir(&crustd));
    assert!(
        blobs.iter().any(|b| base.ends_with(b.to_str().unwrap())),
        "{blobs:?}"
    );
    for digest in &layer_digests("crust-test/multilayer:latest")[1..] {
        let hex = digest.trim_start_matches("sha256:");
        assert!(
            !blobs.iter().any(|b| b.to_str() == Some(hex)),
            "{digest} left behind"
        );
    }
    let layers = std::fs::read_dir(crustd.root().join("snapshots/layers"))
        .unwrap()
        .count();
    assert_eq!(layers, 1, "only busybox's layer remains");
    assert!(image_fs_used(&mut c).await.0 < fs_before.0);
    c.remove_image(&image_ref("crust-test/busybox:latest"))
        .await;
    assert!(files_under(&blobs_dir(&crustd)).is_empty(), "orphan blobs");
    assert_eq!(
        std::fs::read_dir(crustd.root().join("snapshots/layers"))
            .unwrap()
            .count(),
        0
    );
}

async fn image_fs_used(c: &mut crust_e2e::CriClient) -> (u64, u64) {
    let fs = c
        .image
        .image_fs_info(cri::ImageFsInfoRequest {})
        .await
        .unwrap()
        .into_inner();
    let f = &fs.image_filesystems[0];
    (f.used_bytes.unwrap().value, f.inodes_used.unwrap().value)
}

#[tokio::test]
async fn image_fs_info_counts_content_and_layers() {
    let crustd = Crustd::start().await;
    let mut c = crustd.client().await;
    let (empty_bytes, _) = image_fs_used(&mut c).await;
    c.pull(&image_ref("crust-test/busybox:latest"))
        .await
        .unwrap();
    let (bytes, inodes) = image_fs_used(&mut c).await;
    // The 1 MiB compressed blob plus the ~2 MiB unpacked busybox binary.
    assert!(bytes - empty_bytes > 2_500_000, "{bytes}");
    // One inode per applet symlink (Debian's busybox has ~270 applets).
    assert!(
        inodes > 250,
        "busybox has hundreds of applet links: {inodes}"
    );
    let fs = c
        .image
        .image_fs_info(cri::ImageFsInfoRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        fs.image_filesystems[0].fs_id.as_ref().unwrap().mountpoint,
        crustd.root().display().to_string()
    );
}

#[tokio::test]
async fn hostile_layers_never_write_outside_their_root() {
    let _ = std::fs::remove_file("/tmp/crust-evil-dotdot");
    let _ = std::fs::remove_file("/tmp/crust-evil-symlink");
    let crustd = Crustd::start().await;
    let mut c = crustd.client().await;
    let err = c
        .pull(&image_ref("crust-test/evil:dotdot"))
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument, "{err:?}");
    assert!(err.message().contains(".."), "{}", err.message());
    // Confined or refused: either way nothing lands in the host's /tmp.
    let _ = c.pull(&image_ref("crust-test/evil:symlink")).await;
    assert!(!std::path::Path::new("/tmp/crust-evil-dotdot").exists());
    assert!(!std::path::Path::new("/tmp/crust-evil-symlink").exists());
    // The refused pull kept nothing: no image, no blob of its layer.
    assert!(
        c.image_status(&image_ref("crust-test/evil:dotdot"))
            .await
            .is_none()
    );
    let evil_layer = layer_digests("crust-test/evil:dotdot")[1].clone();
    assert!(
        !blobs_dir(&crustd)
            .join(evil_layer.trim_start_matches("sha256:"))
            .exists()
    );
}

#[tokio::test]
async fn killed_mid_pull_then_restarted_pulls_correctly() {
    let mut crustd = Crustd::start().await;
    let name = image_ref("crust-test/big:latest");
    let mut c = crustd.client().await;
    let pull = tokio::spawn({
        let name = name.clone();
        async move { c.pull(&name).await }
    });
    // Wait until the big layer is being written, then kill.
    let ingest = crustd.root().join("content/ingest");
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let busy = std::fs::read_dir(&ingest)
            .map(|d| {
                d.flatten()
                    .any(|e| e.metadata().is_ok_and(|m| m.len() > 1 << 20))
            })
            .unwrap_or(false);
        if busy || std::time::Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    crustd.stop_with(Signal::SIGKILL);
    assert!(
        pull.await.unwrap().is_err(),
        "the pull should have been cut off"
    );
    crustd.spawn(&[]).await;
    // Nothing half-written survives the restart.
    assert_eq!(std::fs::read_dir(&ingest).unwrap().count(), 0);
    let snapshots = files_under(&crustd.root().join("snapshots"));
    assert!(
        !snapshots
            .iter()
            .any(|p| p.to_string_lossy().contains("tmp-")),
        "{snapshots:?}"
    );
    let mut c = crustd.client().await;
    assert!(c.image_status(&name).await.is_none());
    assert_eq!(
        c.pull(&name).await.unwrap(),
        image_id("crust-test/big:latest")
    );
    let info = c.image_info(&name).await;
    let big = layer_dir(&crustd, info["chainID"].as_str().unwrap()).join("big.bin");
    assert_eq!(std::fs::metadata(big).unwrap().len(), 64 << 20);
}

#[tokio::test]
async fn a_stalled_registry_cancels_the_pull_with_a_clear_error() {
    // A "registry" that accepts connections and never answers.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let held = std::thread::spawn(move || {
        let mut open = Vec::new();
        for stream in listener.incoming().take(4).flatten() {
            open.push(stream);
        }
        std::thread::sleep(Duration::from_secs(10));
    });
    let crustd = Crustd::start_with(CrustdOptions {
        extra_config: "registries:\n  pull_progress_timeout_seconds: 2\n".into(),
        ..Default::default()
    })
    .await;
    let mut c = crustd.client().await;
    let started = std::time::Instant::now();
    let err = c
        .pull(&format!("127.0.0.1:{port}/stalled/image:1"))
        .await
        .unwrap_err();
    assert!(
        started.elapsed() < Duration::from_secs(8),
        "cancelled after {:?}",
        started.elapsed()
    );
    assert!(
        err.code() == tonic::Code::DeadlineExceeded || err.message().contains("timed out"),
        "{err:?}"
    );
    assert!(c.list_images().await.is_empty());
    drop(held);
}

/// A registry that wants OAuth2 bearer tokens: its token realm trades the
/// refresh token "crust-refresh" for the access token "crust-access";
/// with that, requests are answered from the real test registry.
fn token_registry() -> (u16, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
    use std::io::{BufRead, BufReader, Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let exchanges = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counter = exchanges.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let counter = counter.clone();
            std::thread::spawn(move || {
                let mut reader = BufReader::new(stream.try_clone().unwrap());
                let mut request_line = String::new();
                reader.read_line(&mut request_line).unwrap_or(0);
                let mut headers = std::collections::HashMap::new();
                loop {
                    let mut line = String::new();
                    if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                        break;
                    }
                    if let Some((k, v)) = line.split_once(':') {
                        headers.insert(k.trim().to_lowercase(), v.trim().to_string());
                    }
                }
                let length: usize = headers
                    .get("content-length")
                    .and_then(|l| l.parse().ok())
                    .unwrap_or(0);
                let mut body = vec![0; length];
                reader.read_exact(&mut body).unwrap();
                let mut parts = request_line.split(' ');
                let (method, path) = (
                    parts.next().unwrap_or(""),
                    parts.next().unwrap_or("").to_string(),
                );
                let challenge = format!(
                    "Bearer realm=\"http://127.0.0.1:{port}/token\",service=\"crust-mock\""
                );
                let mut out = stream;
                let reply = |out: &mut std::net::TcpStream,
                             status: &str,
                             extra: &[(String, String)],
                             body: &[u8]| {
                    let mut head = format!(
                        "HTTP/1.1 {status}\r\nConnection: close\r\nContent-Length: {}\r\n",
                        body.len()
                    );
                    for (k, v) in extra {
                        head.push_str(&format!("{k}: {v}\r\n"));
                    }
                    head.push_str("\r\n");
                    let _ = out.write_all(head.as_bytes());
                    let _ = out.write_all(body);
                };
                if method == "POST" && path == "/token" {
                    counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    let form = String::from_utf8_lossy(&body).to_string();
                    if form.contains("grant_type=refresh_token")
                        && form.contains("refresh_token=crust-refresh")
                    {
                        reply(
                            &mut out,
                            "200 OK",
                            &[("Content-Type".into(), "application/json".into())],
                            br#"{"access_token":"crust-access"}"#,
                        );
                    } else {
                        reply(&mut out, "401 Unauthorized", &[], b"{}");
                    }
                    return;
                }
                if path == "/v2/"
                    || headers.get("authorization").map(String::as_str)
                        != Some("Bearer crust-access")
                {
                    reply(
                        &mut out,
                        "401 Unauthorized",
                        &[("WWW-Authenticate".into(), challenge)],
                        b"{}",
                    );
                    return;
                }
                let accept = headers.get("accept").cloned().unwrap_or_default();
                let (status, upstream_headers, upstream_body) =
                    crust_e2e::registry_http("GET", &path, &[("Accept", &accept)], b"");
                let keep: Vec<(String, String)> = upstream_headers
                    .into_iter()
                    .filter(|(k, _)| k == "content-type" || k == "docker-content-digest")
                    .collect();
                let status = if status == 200 {
                    "200 OK".to_string()
                } else {
                    format!("{status} Upstream")
                };
                let body = if method == "HEAD" {
                    Vec::new()
                } else {
                    upstream_body
                };
                reply(&mut out, &status, &keep, &body);
            });
        }
    });
    (port, exchanges)
}

#[tokio::test]
async fn identity_tokens_are_traded_for_access_tokens() {
    let (port, exchanges) = token_registry();
    let crustd = Crustd::start().await;
    let mut c = crustd.client().await;
    let name = format!("127.0.0.1:{port}/crust-test/busybox:latest");
    let err = c.pull(&name).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::PermissionDenied, "{err:?}");
    let wrong = cri::AuthConfig {
        identity_token: "stolen".into(),
        ..Default::default()
    };
    let err = c.pull_with(&name, Some(wrong)).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::PermissionDenied, "{err:?}");
    assert!(
        err.message().contains("identity token"),
        "{}",
        err.message()
    );
    let right = cri::AuthConfig {
        identity_token: "crust-refresh".into(),
        server_address: format!("127.0.0.1:{port}"),
        ..Default::default()
    };
    let id = c.pull_with(&name, Some(right)).await.unwrap();
    assert_eq!(id, image_id("crust-test/busybox:latest"));
    assert_eq!(
        exchanges.load(std::sync::atomic::Ordering::SeqCst),
        2,
        "one refused, one granted"
    );
}

/// kubelet's split image filesystem (KEP-4191): with `image_fs` set,
/// content and layers live there and ImageFsInfo reports it apart from
/// the container filesystem (crust's root), which grows with what
/// containers write, not with pulls.
#[tokio::test]
async fn image_fs_apart_from_root_is_reported_as_a_split_filesystem() {
    let image_fs = tempfile::Builder::new()
        .prefix("crust-e2e-imagefs-")
        .tempdir_in("/var/tmp")
        .unwrap();
    let crustd = Crustd::start_with(crust_e2e::CrustdOptions {
        extra_config: format!("image_fs: {}\n", image_fs.path().display()),
        ..Default::default()
    })
    .await;
    let mut c = crustd.client().await;
    let info = |c: &mut crust_e2e::CriClient| {
        let mut image = c.image.clone();
        async move {
            image
                .image_fs_info(cri::ImageFsInfoRequest {})
                .await
                .unwrap()
                .into_inner()
        }
    };
    let used = |f: &cri::FilesystemUsage| f.used_bytes.unwrap().value;
    let before = info(&mut c).await;
    c.pull(&image_ref("crust-test/busybox:latest"))
        .await
        .unwrap();
    let after = info(&mut c).await;
    assert_eq!(after.image_filesystems.len(), 1, "{after:?}");
    assert_eq!(after.container_filesystems.len(), 1, "{after:?}");
    let (images, containers) = (&after.image_filesystems[0], &after.container_filesystems[0]);
    assert_eq!(
        images.fs_id.as_ref().unwrap().mountpoint,
        image_fs.path().display().to_string()
    );
    assert_eq!(
        containers.fs_id.as_ref().unwrap().mountpoint,
        crustd.root().display().to_string()
    );
    assert!(
        used(images) - used(&before.image_filesystems[0]) > 2_500_000,
        "the pull is on the image filesystem: {after:?}"
    );
    assert_eq!(
        used(containers),
        used(&before.container_filesystems[0]),
        "a pull writes nothing on the container filesystem"
    );
    // Blobs and layers are on image_fs, none under root.
    assert!(
        image_fs
            .path()
            .join("snapshots/layers")
            .read_dir()
            .unwrap()
            .count()
            == 1
    );
    assert!(files_under(&image_fs.path().join("content")).len() >= 2);
    assert!(!crustd.root().join("content").exists());
    assert_eq!(
        crustd
            .root()
            .join("snapshots/layers")
            .read_dir()
            .map(|d| d.count())
            .unwrap_or(0),
        0
    );

    // A container's writes land on the container filesystem, and it runs
    // from layers on the other one.
    let cfg = crust_e2e::pod_config(&crustd, "splitfs");
    let pod = c.run_pod(&cfg).await;
    let id = c
        .run_container(
            &pod,
            &cfg,
            crust_e2e::container_config(
                "writer",
                &image_ref("crust-test/busybox:latest"),
                &["sh", "-c", "head -c 3000000 /dev/zero > /big; sleep 3600"],
            ),
        )
        .await;
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let grown = loop {
        let now = info(&mut c).await;
        let grown = used(&now.container_filesystems[0]) - used(containers);
        if grown >= 3_000_000 || std::time::Instant::now() > deadline {
            break (grown, now);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(grown.0 >= 3_000_000, "{:?}", grown.1);
    assert_eq!(
        used(&grown.1.image_filesystems[0]),
        used(images),
        "a container's writes are not on the image filesystem"
    );
    let stats = c
        .runtime
        .container_stats(cri::ContainerStatsRequest {
            container_id: id.clone(),
        })
        .await
        .unwrap()
        .into_inner()
        .stats
        .unwrap();
    let layer = stats.writable_layer.unwrap();
    assert_eq!(
        layer.fs_id.unwrap().mountpoint,
        crustd.root().join("snapshots").display().to_string()
    );
    c.remove_pod(&pod).await;
    crust_e2e::unmount_everything_under(image_fs.path());
}
