//! Inputs that must be refused or confined (issue 12): hostile image
//! configs and rootfs symlinks, and CRI requests that name paths or
//! signals crust must not pass on. Each test drives a real crustd over its
//! CRI socket with the `crust-test/hostile:*` images that
//! hack/build-test-images.py pushes.

use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::time::Duration;

use crust_e2e::{CriClient, Crustd, container_config, cri, image_ref, pod_config};

const BUSYBOX: &str = "crust-test/busybox:latest";

async fn ready(crustd: &Crustd, image: &str) -> CriClient {
    let mut c = crustd.client().await;
    c.pull(&image_ref(image)).await.unwrap();
    c
}

/// The container's init PID as the host sees it (verbose status).
async fn container_pid(c: &mut CriClient, id: &str) -> u32 {
    let status = c
        .runtime
        .container_status(cri::ContainerStatusRequest {
            container_id: id.to_string(),
            verbose: true,
        })
        .await
        .unwrap()
        .into_inner();
    let info: serde_json::Value = serde_json::from_str(&status.info["info"]).unwrap();
    info["pid"].as_u64().expect("pid") as u32
}

async fn sh(c: &mut CriClient, id: &str, script: &str) -> (i32, String) {
    let r = c
        .exec_sync(id, &["sh", "-c", script], 20)
        .await
        .unwrap_or_else(|e| panic!("exec {script:?} in {id}: {e:?}"));
    let mut out = String::from_utf8_lossy(&r.stdout).to_string();
    out.push_str(&String::from_utf8_lossy(&r.stderr));
    (r.exit_code, out)
}

/// A pod whose containers each get their own PID namespace: the
/// container's process is PID 1 there (and ignores SIGTERM without a
/// handler).
fn own_pid_namespace(pod: &mut cri::PodSandboxConfig) {
    crust_e2e::set_pod_namespaces(
        pod,
        cri::NamespaceOption {
            pid: cri::NamespaceMode::Container as i32,
            ..Default::default()
        },
    );
}

/// A host file's content, inode and mtime (seconds, nanoseconds).
type FileState = (Vec<u8>, u64, i64, i64);

/// The state of host files a hostile image aims at (None: absent).
fn fingerprint(paths: &[&str]) -> Vec<(String, Option<FileState>)> {
    paths
        .iter()
        .map(|p| {
            let f = std::fs::symlink_metadata(p).ok().map(|m| {
                (
                    std::fs::read(p).unwrap_or_default(),
                    m.ino(),
                    m.mtime(),
                    m.mtime_nsec(),
                )
            });
            (p.to_string(), f)
        })
        .collect()
}

/// Mount points of the host's (this test's) mount namespace.
fn host_mount_points() -> Vec<String> {
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .filter_map(|l| l.split(' ').nth(4).map(str::to_string))
        .collect()
}

/// An image with 150,000 Env entries (a quadratic merge kept crustd busy
/// for ~2 minutes of CPU with every CRI call stalled) is refused by
/// CreateContainer with InvalidArgument naming the list and the limit,
/// and crustd keeps answering Version while the request is in flight.
#[tokio::test]
async fn image_with_150000_env_entries_is_refused_and_crustd_keeps_answering() {
    let crustd = Crustd::start().await;
    let image = "crust-test/hostile:env150k";
    let mut c = ready(&crustd, BUSYBOX).await;
    c.pull(&image_ref(image)).await.unwrap();
    let pod_cfg = pod_config(&crustd, "env150k");
    let pod = c.run_pod(&pod_cfg).await;

    let mut creator = crustd.client().await;
    let config = container_config("env", &image_ref(image), &["true"]);
    let (pod2, pod_cfg2) = (pod.clone(), pod_cfg.clone());
    let created =
        tokio::spawn(async move { creator.create_container(&pod2, &pod_cfg2, config).await });
    // Meanwhile: Version answers, each within a generous bound.
    let mut answered = 0;
    while !created.is_finished() || answered == 0 {
        let v = tokio::time::timeout(
            Duration::from_secs(5),
            c.runtime.version(cri::VersionRequest::default()),
        )
        .await
        .expect("Version must answer within 5 s while CreateContainer runs")
        .unwrap();
        assert_eq!(v.into_inner().runtime_name, "crust");
        answered += 1;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let e = created.await.unwrap().unwrap_err();
    assert_eq!(e.code(), tonic::Code::InvalidArgument, "{e:?}");
    assert!(
        e.message().contains("image config Env")
            && e.message().contains("150001")
            && e.message().contains("10000"),
        "the error names the list, its size and the limit: {e:?}"
    );
    // Nothing was left behind, and the pod still takes containers.
    let listed = c
        .runtime
        .list_containers(cri::ListContainersRequest { filter: None })
        .await
        .unwrap()
        .into_inner()
        .containers;
    assert!(listed.is_empty(), "{listed:?}");
    let ok = c
        .run_container(
            &pod,
            &pod_cfg,
            container_config("ok", &image_ref(BUSYBOX), &["true"]),
        )
        .await;
    c.wait_exited(&ok, Duration::from_secs(20)).await;
}

/// A CRI request's lists are bounded too: 10,001 envs and 1,001 mounts
/// are refused, and so is a RunPodSandbox with too many DNS searches.
#[tokio::test]
async fn cri_lists_over_their_limits_are_refused() {
    let crustd = Crustd::start().await;
    let mut c = ready(&crustd, BUSYBOX).await;
    let pod_cfg = pod_config(&crustd, "lists");
    let pod = c.run_pod(&pod_cfg).await;
    let mut config = container_config("envs", &image_ref(BUSYBOX), &["true"]);
    config.envs = (0..10_001)
        .map(|i| cri::KeyValue {
            key: format!("K{i}"),
            value: "v".into(),
        })
        .collect();
    let e = c
        .create_container(&pod, &pod_cfg, config)
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::InvalidArgument, "{e:?}");
    assert!(e.message().contains("envs"), "{e:?}");
    let mut config = container_config("mounts", &image_ref(BUSYBOX), &["true"]);
    config.mounts = (0..1_001)
        .map(|i| cri::Mount {
            container_path: format!("/m{i}"),
            host_path: "/var/empty".into(),
            ..Default::default()
        })
        .collect();
    let e = c
        .create_container(&pod, &pod_cfg, config)
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::InvalidArgument, "{e:?}");
    assert!(e.message().contains("mounts"), "{e:?}");
    let mut bad_pod = pod_config(&crustd, "dns");
    bad_pod.dns_config = Some(cri::DnsConfig {
        searches: (0..65).map(|i| format!("s{i}.example")).collect(),
        ..Default::default()
    });
    let e = c
        .runtime
        .run_pod_sandbox(cri::RunPodSandboxRequest {
            config: Some(bad_pod),
            runtime_handler: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::InvalidArgument, "{e:?}");
    assert!(e.message().contains("dns_config.searches"), "{e:?}");
}

/// UpdateContainerResources validates `linux.unified` as CreateContainer
/// does: libcgroups joins the key onto the cgroup dir, so an absolute or
/// `..` key would write a host file on cgroup v2.
#[tokio::test]
async fn update_container_resources_refuses_unified_paths() {
    let crustd = Crustd::start().await;
    let mut c = ready(&crustd, BUSYBOX).await;
    let pod_cfg = pod_config(&crustd, "unified");
    let pod = c.run_pod(&pod_cfg).await;
    let id = c
        .run_container(
            &pod,
            &pod_cfg,
            container_config("s", &image_ref(BUSYBOX), &["sleep", "3600"]),
        )
        .await;
    // A file of our own as the target of the `..` attempts.
    let victim = crustd.dir.path().join("victim");
    std::fs::write(&victim, "untouched\n").unwrap();
    let before = fingerprint(&["/etc/passwd"]);
    let dotdots = format!("{}{}", "../".repeat(32), victim.display());
    for key in ["/etc/passwd", "../x", dotdots.as_str(), "cgroup.procs"] {
        let e = c
            .runtime
            .update_container_resources(cri::UpdateContainerResourcesRequest {
                container_id: id.clone(),
                linux: Some(cri::LinuxContainerResources {
                    unified: [(key.to_string(), "crust-was-here".to_string())].into(),
                    ..Default::default()
                }),
                ..Default::default()
            })
            .await
            .unwrap_err();
        assert_eq!(e.code(), tonic::Code::InvalidArgument, "{key}: {e:?}");
        assert!(e.message().contains("unified key"), "{key}: {e:?}");
    }
    assert_eq!(fingerprint(&["/etc/passwd"]), before);
    assert_eq!(std::fs::read_to_string(&victim).unwrap(), "untouched\n");
    // The refused update did not reach the record either.
    let status = c.container_status(&id).await;
    let unified = status
        .resources
        .and_then(|r| r.linux)
        .map(|l| l.unified)
        .unwrap_or_default();
    assert!(unified.is_empty(), "{unified:?}");
    // A valid one still applies.
    c.runtime
        .update_container_resources(cri::UpdateContainerResourcesRequest {
            container_id: id.clone(),
            linux: Some(cri::LinuxContainerResources {
                memory_limit_in_bytes: 256 << 20,
                ..Default::default()
            }),
            ..Default::default()
        })
        .await
        .unwrap();
}

/// An image StopSignal no kernel has ("65") falls back to SIGTERM at
/// create, and StopContainer escalates to SIGKILL after its timeout: the
/// container (PID 1 of its own namespace, which ignores SIGTERM) stops.
#[tokio::test]
async fn invalid_image_stop_signal_still_stops_the_container() {
    let crustd = Crustd::start().await;
    let image = "crust-test/hostile:stopsignal65";
    let mut c = ready(&crustd, image).await;
    let mut pod_cfg = pod_config(&crustd, "stopsig65");
    own_pid_namespace(&mut pod_cfg);
    let pod = c.run_pod(&pod_cfg).await;
    let mut config = container_config("s", &image_ref(image), &[]);
    config.command.clear();
    let id = c.run_container(&pod, &pod_cfg, config).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    c.runtime
        .stop_container(cri::StopContainerRequest {
            container_id: id.clone(),
            timeout: 2,
        })
        .await
        .expect("StopContainer must stop a container whatever its image's StopSignal");
    let status = c.container_status(&id).await;
    assert_eq!(
        status.state,
        cri::ContainerState::ContainerExited as i32,
        "{status:?}"
    );
    assert_eq!(status.exit_code, 137, "SIGKILLed: {status:?}");
    assert!(
        crustd.log().contains("StopSignal names no signal"),
        "the fallback is logged"
    );
}

/// Either refused with InvalidArgument at create, or the container fails
/// to start, or it runs with its cwd inside its own root (seen from the
/// host: /proc/<pid>/cwd under /proc/<pid>/root).
async fn working_dir_is_refused_or_harmless(
    c: &mut CriClient,
    pod: &str,
    pod_cfg: &cri::PodSandboxConfig,
    image: &str,
    name: &str,
    working_dir: &str,
) -> &'static str {
    let mut config = container_config(name, &image_ref(image), &["sleep", "3600"]);
    config.working_dir = working_dir.to_string();
    let id = match c.create_container(pod, pod_cfg, config).await {
        Err(e) => {
            assert_eq!(
                e.code(),
                tonic::Code::InvalidArgument,
                "{working_dir}: {e:?}"
            );
            assert!(e.message().contains("working"), "{working_dir}: {e:?}");
            return "refused";
        }
        Ok(id) => id,
    };
    if c.start_container(&id).await.is_err() {
        return "failed to start";
    }
    let pid = container_pid(c, &id).await;
    let root = std::fs::read_link(format!("/proc/{pid}/root")).unwrap();
    let cwd = std::fs::read_link(format!("/proc/{pid}/cwd")).unwrap();
    assert!(
        cwd.starts_with(&root) && root != Path::new("/"),
        "{working_dir}: the container's cwd {cwd:?} is outside its root {root:?}"
    );
    let (_, out) = sh(c, &id, "pwd; ls -a ..").await;
    assert!(!out.contains("unreachable"), "{working_dir}: {out}");
    "harmless"
}

/// CVE-2024-21626 class: a working dir of /proc/self/fd/N (N = 3..8),
/// given directly or through an image symlink, never leaves the
/// container's process with a cwd outside its rootfs.
#[tokio::test]
async fn working_dir_in_proc_self_fd_is_refused_or_harmless() {
    let crustd = Crustd::start().await;
    let links = "crust-test/hostile:fd-links";
    let mut c = ready(&crustd, BUSYBOX).await;
    c.pull(&image_ref(links)).await.unwrap();
    let pod_cfg = pod_config(&crustd, "fdcwd");
    let pod = c.run_pod(&pod_cfg).await;
    for n in 3..=8 {
        let direct = working_dir_is_refused_or_harmless(
            &mut c,
            &pod,
            &pod_cfg,
            BUSYBOX,
            &format!("direct{n}"),
            &format!("/proc/self/fd/{n}"),
        )
        .await;
        assert_eq!(direct, "refused", "/proc/self/fd/{n} is refused at create");
        let linked = working_dir_is_refused_or_harmless(
            &mut c,
            &pod,
            &pod_cfg,
            links,
            &format!("linked{n}"),
            &format!("/fd{n}"),
        )
        .await;
        eprintln!("/fd{n} -> /proc/self/fd/{n}: {linked}");
    }
}

/// What the pod's files say inside a container of `image`, or why it was
/// refused; the host's targets stay untouched either way.
async fn pod_files_land_inside(crustd: &Crustd, image: &str, pod_name: &str, shared_pid: bool) {
    let targets = [
        "/etc/shadow",
        "/etc/passwd",
        "/etc/hosts",
        "/etc/hostname",
        "/etc/resolv.conf",
    ];
    let before = fingerprint(&targets);
    let mounts_before = host_mount_points();
    let mut c = ready(crustd, image).await;
    let mut pod_cfg = pod_config(crustd, pod_name);
    pod_cfg.dns_config = Some(cri::DnsConfig {
        servers: vec!["10.9.8.7".into()],
        searches: vec!["crust-pod.example".into()],
        options: vec![],
    });
    if !shared_pid {
        own_pid_namespace(&mut pod_cfg);
    }
    let pod = c.run_pod(&pod_cfg).await;
    let config = container_config("c", &image_ref(image), &["sleep", "3600"]);
    match c.create_container(&pod, &pod_cfg, config).await {
        Err(e) => {
            assert_eq!(e.code(), tonic::Code::InvalidArgument, "{image}: {e:?}");
            eprintln!("{image}: refused at create: {}", e.message());
        }
        Ok(id) => {
            if let Err(e) = c.start_container(&id).await {
                // youki resolves mount targets inside the rootfs with
                // openat2(RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS) and
                // refuses a target that is itself a symlink, as runc refuses
                // one that resolves into /proc: the refusal names the path.
                assert!(
                    e.message().contains("failed to prepare rootfs")
                        && e.message().contains("/rootfs"),
                    "{image}: a refusal names the rootfs path and why: {e:?}"
                );
                eprintln!("{image}: refused at start: {}", e.message());
            } else {
                pod_files_are_the_pods(&mut c, &id, image, pod_name).await;
            }
        }
    }
    c.runtime
        .stop_pod_sandbox(cri::StopPodSandboxRequest {
            pod_sandbox_id: pod.clone(),
        })
        .await
        .unwrap();
    c.remove_pod(&pod).await;
    assert_eq!(fingerprint(&targets), before, "{image}: host files changed");
    let new_mounts: Vec<String> = host_mount_points()
        .into_iter()
        .filter(|m| !mounts_before.contains(m) && targets.contains(&m.as_str()))
        .collect();
    assert!(
        new_mounts.is_empty(),
        "{image}: host mounts appeared: {new_mounts:?}"
    );
}

/// Inside a started container: /etc/resolv.conf, /etc/hostname and
/// /etc/hosts are the pod's files.
async fn pod_files_are_the_pods(c: &mut CriClient, id: &str, image: &str, pod_name: &str) {
    let (code, resolv) = sh(c, id, "cat /etc/resolv.conf").await;
    assert_eq!(code, 0, "{image}: {resolv}");
    assert!(
        resolv.contains("nameserver 10.9.8.7") && resolv.contains("crust-pod.example"),
        "{image}: the container sees the pod's resolv.conf at /etc/resolv.conf: {resolv}"
    );
    let (_, hostname) = sh(c, id, "cat /etc/hostname").await;
    assert_eq!(hostname.trim(), pod_name, "{image}");
    let (_, hosts) = sh(c, id, "cat /etc/hosts").await;
    assert!(
        hosts.contains(pod_name) && !hosts.contains("root:x:0:0"),
        "{image}: the pod's hosts file, not a passwd: {hosts}"
    );
    c.runtime
        .stop_container(cri::StopContainerRequest {
            container_id: id.to_string(),
            timeout: 0,
        })
        .await
        .unwrap();
}

/// /etc/resolv.conf, /etc/hosts and /etc/hostname that are symlinks out of
/// the rootfs (to /proc/1/root/..., /proc/self/root/..., ../../../..):
/// either StartContainer refuses them with an error naming the path and why
/// (what youki's in-root resolution does for a magic link or a symlinked
/// target), or the pod's bind mounts land inside the container, which sees
/// the pod's files at those paths; the host's files stay as they were.
#[tokio::test]
async fn pod_file_mounts_through_image_symlinks_stay_in_the_rootfs() {
    let crustd = Crustd::start().await;
    for (image, pod, shared) in [
        ("crust-test/hostile:etc-proc", "etc-proc", true),
        ("crust-test/hostile:etc-proc", "etc-proc-own", false),
        ("crust-test/hostile:etc-dotdot", "etc-dotdot", true),
    ] {
        pod_files_land_inside(&crustd, image, pod, shared).await;
    }
}

/// Image VOLUMEs at paths that are symlinks (to /proc/self/root, to /, to
/// /proc/1/root/tmp, to ../../../../tmp): refused clearly (at create or
/// start, naming the path), or mounted
/// inside the rootfs; never onto a host path, never over the container's
/// own root.
#[tokio::test]
async fn image_volumes_through_symlinks_stay_in_the_rootfs() {
    let crustd = Crustd::start().await;
    let image = "crust-test/hostile:volume-links";
    let mut c = ready(&crustd, image).await;
    let mounts_before = host_mount_points();
    let pod_cfg = pod_config(&crustd, "vol-links");
    let pod = c.run_pod(&pod_cfg).await;
    let config = container_config("v", &image_ref(image), &["sleep", "3600"]);
    match c.create_container(&pod, &pod_cfg, config).await {
        Err(e) => {
            assert_eq!(e.code(), tonic::Code::InvalidArgument, "{e:?}");
            assert!(e.message().contains("VOLUME"), "{e:?}");
        }
        Ok(id) => {
            if let Err(e) = c.start_container(&id).await {
                // Refused while preparing the rootfs (openat2 in the root,
                // no magic links): the message names the volume path.
                assert!(
                    e.message().contains("failed to prepare rootfs")
                        && e.message().contains("/vol-"),
                    "a refusal names the volume and why: {e:?}"
                );
                eprintln!("refused at start: {}", e.message());
                return assert_no_volume_escape(&mounts_before);
            }
            // The container's root is still its image's.
            let (code, out) = sh(&mut c, &id, "ls /bin/busybox && echo ok").await;
            assert_eq!(code, 0, "{out}");
            // Writes through the volumes go to the container's volumes.
            let (_, out) = sh(
                &mut c,
                &id,
                "for v in /vol-proc /vol-root /vol-host-tmp /vol-dotdot; do \
                 touch $v/crust-volume-escape 2>&1; done; true",
            )
            .await;
            eprintln!("{out}");
        }
    }
    assert_no_volume_escape(&mounts_before);
}

/// No write through a volume reached the host's / or /tmp, and no mount
/// appeared on either.
fn assert_no_volume_escape(mounts_before: &[String]) {
    let after: Vec<_> = std::fs::read_dir("/tmp")
        .unwrap()
        .flatten()
        .map(|e| e.file_name())
        .collect();
    assert!(
        !after.iter().any(|n| n == "crust-volume-escape"),
        "a volume write reached the host's /tmp"
    );
    assert!(
        !Path::new("/crust-volume-escape").exists(),
        "a volume write reached the host's /"
    );
    let new_mounts: Vec<String> = host_mount_points()
        .into_iter()
        .filter(|m| !mounts_before.contains(m) && (m == "/" || m == "/tmp"))
        .collect();
    assert!(
        new_mounts.is_empty(),
        "host mounts appeared: {new_mounts:?}"
    );
}
