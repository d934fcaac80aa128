//! Paths a hostile pod author can aim at the host (issue 12): CRI log
//! paths, image VOLUME dirs and the host binaries a container can reach
//! through /proc, each driven through crustd's CRI socket.

use std::path::{Path, PathBuf};
use std::time::Duration;

use crust_e2e::{CriClient, Crustd, container_config, cri, image_ref, pod_config};

const BUSYBOX: &str = "crust-test/busybox:latest";
const VOLUME: &str = "crust-test/volume:latest";

async fn ready(crustd: &Crustd) -> CriClient {
    let mut c = crustd.client().await;
    c.pull(&image_ref(BUSYBOX)).await.unwrap();
    c
}

/// A host file a container must never write to.
fn host_file(crustd: &Crustd) -> PathBuf {
    let path = crustd.dir.path().join("host-secret");
    std::fs::write(&path, "host content\n").unwrap();
    path
}

#[tokio::test]
async fn log_paths_outside_the_log_directory_are_refused() {
    let crustd = Crustd::start().await;
    let mut c = ready(&crustd).await;
    let pod_cfg = pod_config(&crustd, "logpaths");
    let pod = c.run_pod(&pod_cfg).await;
    let logs = PathBuf::from(&pod_cfg.log_directory);
    let absolute = format!("/tmp/crust-e2e-{}-x.log", std::process::id());
    for bad in [
        "../escape.log",
        absolute.as_str(),
        "a/../../escape.log",
        "a//b.log",
    ] {
        let mut config = container_config("bad", &image_ref(BUSYBOX), &["echo", "escaped"]);
        config.log_path = bad.to_string();
        let err = c
            .create_container(&pod, &pod_cfg, config)
            .await
            .unwrap_err();
        assert_eq!(err.code(), tonic::Code::InvalidArgument, "{bad}: {err:?}");
        assert!(err.message().contains("log_path"), "{err:?}");
    }
    assert!(!logs.parent().unwrap().join("escape.log").exists());
    assert!(!Path::new(&absolute).exists());
    assert!(!logs.join("a").exists());
    c.remove_pod(&pod).await;
}

#[tokio::test]
async fn a_symlink_at_the_log_path_never_receives_output() {
    let crustd = Crustd::start().await;
    let mut c = ready(&crustd).await;
    let host = host_file(&crustd);
    let pod_cfg = pod_config(&crustd, "logsymlink");
    let pod = c.run_pod(&pod_cfg).await;
    let logs = PathBuf::from(&pod_cfg.log_directory);

    // Planted before CreateContainer: refused there.
    std::fs::create_dir_all(logs.join("early")).unwrap();
    std::os::unix::fs::symlink(&host, logs.join("early/0.log")).unwrap();
    let config = container_config("early", &image_ref(BUSYBOX), &["echo", "escaped"]);
    let err = c
        .create_container(&pod, &pod_cfg, config)
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument, "{err:?}");

    // A parent dir planted as a symlink: refused too.
    let elsewhere = crustd.dir.path().join("elsewhere");
    std::fs::create_dir_all(&elsewhere).unwrap();
    std::os::unix::fs::symlink(&elsewhere, logs.join("parent")).unwrap();
    let mut config = container_config("parent", &image_ref(BUSYBOX), &["echo", "escaped"]);
    config.log_path = "parent/sub/0.log".into();
    let err = c
        .create_container(&pod, &pod_cfg, config)
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument, "{err:?}");
    assert!(!elsewhere.join("sub").exists());

    // Planted between CreateContainer and StartContainer: the shim refuses
    // to open it and the start fails.
    let config = container_config("late", &image_ref(BUSYBOX), &["echo", "escaped"]);
    let id = c.create_container(&pod, &pod_cfg, config).await.unwrap();
    std::os::unix::fs::symlink(&host, logs.join("late/0.log")).unwrap();
    let err = c.start_container(&id).await.unwrap_err();
    assert!(
        err.message().contains("0.log"),
        "the error names the log: {err:?}"
    );
    // A parent swapped for a symlink after CreateContainer: the same.
    let config = container_config("swapped", &image_ref(BUSYBOX), &["echo", "escaped"]);
    let id = c.create_container(&pod, &pod_cfg, config).await.unwrap();
    std::fs::remove_dir(logs.join("swapped")).unwrap();
    std::os::unix::fs::symlink(&elsewhere, logs.join("swapped")).unwrap();
    c.start_container(&id).await.unwrap_err();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(std::fs::read_to_string(&host).unwrap(), "host content\n");
    assert!(!elsewhere.join("0.log").exists());
    c.remove_pod(&pod).await;
}

#[tokio::test]
async fn reopen_refuses_a_log_file_replaced_by_a_symlink() {
    let crustd = Crustd::start().await;
    let mut c = ready(&crustd).await;
    let host = host_file(&crustd);
    let pod_cfg = pod_config(&crustd, "reopensymlink");
    let pod = c.run_pod(&pod_cfg).await;
    let id = c
        .run_container(
            &pod,
            &pod_cfg,
            container_config(
                "ticker",
                &image_ref(BUSYBOX),
                &["sh", "-c", "while true; do echo tick; sleep 0.1; done"],
            ),
        )
        .await;
    let log = c.container_status(&id).await.log_path;
    tokio::time::sleep(Duration::from_millis(400)).await;
    std::fs::rename(&log, format!("{log}.1")).unwrap();
    std::os::unix::fs::symlink(&host, &log).unwrap();
    let err = c
        .runtime
        .reopen_container_log(cri::ReopenContainerLogRequest {
            container_id: id.clone(),
        })
        .await
        .unwrap_err();
    assert_ne!(err.code(), tonic::Code::Ok);
    // Even asked directly (SIGUSR1, as the reopen sends it), the shim
    // does not follow the symlink.
    let shim = c.pod_info(&pod).await["pid"].as_u64().unwrap();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(shim as i32),
        nix::sys::signal::Signal::SIGUSR1,
    )
    .unwrap();
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(std::fs::read_to_string(&host).unwrap(), "host content\n");
    assert!(
        std::fs::read_to_string(format!("{log}.1"))
            .unwrap()
            .ends_with(" stdout F tick\n"),
        "output still goes to the file the shim had open"
    );
    c.remove_pod(&pod).await;
}

fn files_named(dir: &Path, name: &str) -> Vec<PathBuf> {
    crust_e2e::files_under(dir)
        .into_iter()
        .filter(|p| p.file_name().is_some_and(|n| n == name))
        .map(|p| dir.join(p))
        .collect()
}

async fn writable_layer_bytes(c: &mut CriClient, id: &str) -> u64 {
    c.runtime
        .container_stats(cri::ContainerStatsRequest {
            container_id: id.to_string(),
        })
        .await
        .unwrap()
        .into_inner()
        .stats
        .unwrap()
        .writable_layer
        .unwrap()
        .used_bytes
        .unwrap()
        .value
}

#[tokio::test]
async fn image_volumes_live_on_the_root_and_count_in_the_writable_layer() {
    let crustd = Crustd::start().await;
    let mut c = ready(&crustd).await;
    c.pull(&image_ref(VOLUME)).await.unwrap();
    let pod_cfg = pod_config(&crustd, "volumes");
    let pod = c.run_pod(&pod_cfg).await;
    let id = c
        .run_container(
            &pod,
            &pod_cfg,
            container_config("writer", &image_ref(VOLUME), &["sleep", "3600"]),
        )
        .await;
    let before = writable_layer_bytes(&mut c, &id).await;
    let r = c
        .exec_sync(
            &id,
            &[
                "sh",
                "-c",
                "dd if=/dev/urandom of=/data/blob bs=1048576 count=5 && sync",
            ],
            30,
        )
        .await
        .unwrap();
    assert_eq!(r.exit_code, 0, "{}", String::from_utf8_lossy(&r.stderr));
    let on_root = files_named(&crustd.root(), "blob");
    assert_eq!(on_root.len(), 1, "the volume's file is under the root");
    assert_eq!(std::fs::metadata(&on_root[0]).unwrap().len(), 5 << 20);
    assert!(
        files_named(&crustd.state(), "blob").is_empty(),
        "nothing of the volume is under the (tmpfs) state dir"
    );
    let after = writable_layer_bytes(&mut c, &id).await;
    assert!(
        after >= before + (5 << 20),
        "writable layer {before} -> {after}: the volume's 5 MiB are counted"
    );
    let volume_dir = on_root[0].parent().unwrap().to_path_buf();
    c.runtime
        .stop_container(cri::StopContainerRequest {
            container_id: id.clone(),
            timeout: 0,
        })
        .await
        .unwrap();
    c.runtime
        .remove_container(cri::RemoveContainerRequest {
            container_id: id.clone(),
        })
        .await
        .unwrap();
    assert!(!volume_dir.exists(), "removal deletes the volume");
    assert!(files_named(&crustd.root(), "blob").is_empty());
    c.remove_pod(&pod).await;
}

fn sha256(path: &Path) -> String {
    let out = std::process::Command::new("sha256sum")
        .arg(path)
        .output()
        .unwrap();
    assert!(out.status.success());
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .unwrap()
        .to_string()
}

fn host_binaries() -> Vec<(PathBuf, String)> {
    let crustd = crust_e2e::crustd_binary().to_path_buf();
    let shim = crustd.parent().unwrap().join("crust-shim");
    [crustd, shim]
        .into_iter()
        .map(|p| {
            let sum = sha256(&p);
            (p, sum)
        })
        .collect()
}

async fn sh(c: &mut CriClient, id: &str, script: &str) -> (i32, String) {
    let r = c
        .exec_sync(id, &["sh", "-c", script], 20)
        .await
        .unwrap_or_else(|e| panic!("exec {script:?}: {e:?}"));
    (
        r.exit_code,
        format!(
            "{}{}",
            String::from_utf8_lossy(&r.stdout),
            String::from_utf8_lossy(&r.stderr)
        ),
    )
}

/// Opening a host binary for writing fails from the container. (While a
/// process executes the file the kernel answers ETXTBSY before it looks at
/// the mount, so this alone does not show the file is safe once nothing
/// runs it: [`assert_exe_read_only`] does.)
fn assert_not_writable(code: i32, out: &str, what: &str) {
    assert_ne!(code, 0, "{what} opened for writing: {out}");
    assert!(
        out.contains("Read-only file system")
            || out.contains("Permission denied")
            || out.contains("Text file busy"),
        "{what}: {out}"
    );
}

/// The file host process `pid` executes (what a container sees as
/// /proc/<pid>/exe, and reaches again through an O_PATH fd after the
/// process is gone) lies on a read-only mount: writes fail with EROFS in
/// any state.
fn assert_exe_read_only(pid: u64, what: &str) {
    let exe = format!("/proc/{pid}/exe");
    let flags = nix::sys::statvfs::statvfs(exe.as_str())
        .unwrap_or_else(|e| panic!("statvfs {exe} ({what}): {e}"))
        .flags();
    assert!(
        flags.contains(nix::sys::statvfs::FsFlags::ST_RDONLY),
        "{what}: {} is on a writable mount",
        std::fs::read_link(&exe).unwrap_or_default().display()
    );
}

#[tokio::test]
async fn host_binaries_cannot_be_written_from_a_container() {
    let sums = host_binaries();
    let crustd = Crustd::start().await;
    let mut c = ready(&crustd).await;

    // A shared PID namespace (CRI's default): PID 1 is the pod init, a
    // crustd process. With and without SYS_PTRACE.
    let pod_cfg = pod_config(&crustd, "exe");
    let pod = c.run_pod(&pod_cfg).await;
    let info = c.pod_info(&pod).await;
    assert_exe_read_only(info["podInitPid"].as_u64().unwrap(), "the pod init");
    // The shim, whose binary every container process is cloned from.
    assert_exe_read_only(info["pid"].as_u64().unwrap(), "the shim");
    for (name, add) in [
        ("plain", vec![]),
        ("ptrace", vec!["SYS_PTRACE".to_string()]),
    ] {
        let mut config = container_config(name, &image_ref(BUSYBOX), &["sleep", "3600"]);
        config.linux = Some(cri::LinuxContainerConfig {
            security_context: Some(cri::LinuxContainerSecurityContext {
                capabilities: Some(cri::Capability {
                    add_capabilities: add,
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        });
        let id = c.run_container(&pod, &pod_cfg, config).await;
        let (code, out) = sh(&mut c, &id, "exec 3>>/proc/1/exe").await;
        assert_not_writable(code, &out, &format!("/proc/1/exe ({name})"));
        // Every process of the pod the container can see, but its own
        // busybox (the container's file, its to write).
        let (_, out) = sh(
            &mut c,
            &id,
            "for p in /proc/[0-9]*; do case $(readlink $p/exe) in /bin/busybox|'') continue;; esac; \
             (exec 3>>$p/exe) 2>/dev/null && echo WROTE $p $(readlink $p/exe); done; true",
        )
        .await;
        assert!(!out.contains("WROTE"), "{name}: {out}");
    }
    c.remove_pod(&pod).await;

    // An entrypoint of /proc/self/exe would run the shim's binary (the
    // file the shim cloned the container's process from) in the container;
    // it needs a glibc loader the test images lack, so what it would see
    // is checked from the host above: the shim's exe is on a read-only
    // mount.
    for (path, sum) in sums {
        assert_eq!(sha256(&path), sum, "{} changed", path.display());
    }
}
