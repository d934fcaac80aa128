//! Pods and containers through the CRI socket: real shims, namespaces,
//! cgroups and overlay rootfs.

use std::time::Duration;

use crust_e2e::{Crustd, container_config, cri, image_ref, pod_config};
use nix::sys::signal::Signal;

const BUSYBOX: &str = "crust-test/busybox:latest";

async fn ready(crustd: &Crustd) -> crust_e2e::CriClient {
    let mut c = crustd.client().await;
    c.pull(&image_ref(BUSYBOX)).await.unwrap();
    c
}

fn log_records(path: &str) -> Vec<(String, String, String)> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|l| {
            let mut parts = l.splitn(4, ' ');
            let ts = parts.next().unwrap().to_string();
            assert!(
                ts.contains('T') && ts.ends_with('Z'),
                "RFC3339Nano timestamp: {l}"
            );
            let stream = parts.next().unwrap().to_string();
            let tag = parts.next().unwrap().to_string();
            let content = parts.next().unwrap_or("").to_string();
            (stream, tag, content)
        })
        .collect()
}

#[tokio::test]
async fn pod_with_a_long_running_and_an_exiting_container() {
    let crustd = Crustd::start().await;
    let mut c = ready(&crustd).await;
    let pod_cfg = pod_config(&crustd, "two");
    let pod = c.run_pod(&pod_cfg).await;
    assert_eq!(pod.len(), 64);
    let sleeper = c
        .run_container(
            &pod,
            &pod_cfg,
            container_config("sleeper", &image_ref(BUSYBOX), &["sleep", "3600"]),
        )
        .await;
    let long_line = "x".repeat(20 * 1024);
    let script = format!("echo to-stdout; echo to-stderr >&2; echo {long_line}; exit 3");
    let quitter = c
        .run_container(
            &pod,
            &pod_cfg,
            container_config("quitter", &image_ref(BUSYBOX), &["sh", "-c", &script]),
        )
        .await;
    let done = c.wait_exited(&quitter, Duration::from_secs(20)).await;
    assert_eq!(done.exit_code, 3);
    assert_eq!(done.reason, "Error");
    assert!(done.finished_at >= done.started_at && done.started_at > 0);
    let running = c.container_status(&sleeper).await;
    assert_eq!(running.state, cri::ContainerState::ContainerRunning as i32);
    // CRI log format: both streams, and the 20 KiB line split into a
    // 16 KiB partial plus the final rest.
    let records = log_records(&done.log_path);
    assert!(
        records.contains(&("stdout".into(), "F".into(), "to-stdout".into())),
        "{records:?}"
    );
    assert!(
        records.contains(&("stderr".into(), "F".into(), "to-stderr".into())),
        "{records:?}"
    );
    let parts: Vec<_> = records.iter().filter(|r| r.2.starts_with("xxx")).collect();
    assert_eq!(
        parts.len(),
        2,
        "{:?}",
        parts
            .iter()
            .map(|p| (p.1.clone(), p.2.len()))
            .collect::<Vec<_>>()
    );
    assert_eq!((parts[0].1.as_str(), parts[0].2.len()), ("P", 16 * 1024));
    assert_eq!((parts[1].1.as_str(), parts[1].2.len()), ("F", 4 * 1024));
    // Listing with filters.
    let listed = c
        .runtime
        .list_containers(cri::ListContainersRequest {
            filter: Some(cri::ContainerFilter {
                pod_sandbox_id: pod[..12].to_string(),
                state: Some(cri::ContainerStateValue {
                    state: cri::ContainerState::ContainerRunning as i32,
                }),
                ..Default::default()
            }),
        })
        .await
        .unwrap()
        .into_inner()
        .containers;
    assert_eq!(
        listed.iter().map(|c| c.id.clone()).collect::<Vec<_>>(),
        vec![sleeper.clone()]
    );
    let pods = c
        .runtime
        .list_pod_sandbox(cri::ListPodSandboxRequest {
            filter: Some(cri::PodSandboxFilter {
                label_selector: [("app".to_string(), "two".to_string())].into(),
                ..Default::default()
            }),
        })
        .await
        .unwrap()
        .into_inner()
        .items;
    assert_eq!(pods.len(), 1);
    assert_eq!(pods[0].state, cri::PodSandboxState::SandboxReady as i32);
    // Stop and remove: everything goes, twice is fine.
    for _ in 0..2 {
        c.runtime
            .stop_pod_sandbox(cri::StopPodSandboxRequest {
                pod_sandbox_id: pod.clone(),
            })
            .await
            .unwrap();
    }
    let stopped = c.container_status(&sleeper).await;
    assert_eq!(stopped.state, cri::ContainerState::ContainerExited as i32);
    let pid_dir = crustd.state().join("pods").join(&pod);
    for _ in 0..2 {
        c.remove_pod(&pod).await;
    }
    assert!(!pid_dir.exists(), "pod state dir left behind");
    assert_eq!(
        crustd.mounts_left(),
        Vec::<String>::new(),
        "mounts left behind"
    );
    assert!(
        c.runtime
            .list_containers(cri::ListContainersRequest::default())
            .await
            .unwrap()
            .into_inner()
            .containers
            .is_empty()
    );
}

#[tokio::test]
async fn exec_sync_output_exit_code_and_timeout() {
    let crustd = Crustd::start().await;
    let mut c = ready(&crustd).await;
    let pod_cfg = pod_config(&crustd, "exec");
    let pod = c.run_pod(&pod_cfg).await;
    let id = c
        .run_container(
            &pod,
            &pod_cfg,
            container_config("main", &image_ref(BUSYBOX), &["sleep", "3600"]),
        )
        .await;
    let r = c
        .exec_sync(&id, &["sh", "-c", "echo out; echo err >&2; exit 7"], 10)
        .await
        .unwrap();
    assert_eq!(r.stdout, b"out\n");
    assert_eq!(r.stderr, b"err\n");
    assert_eq!(r.exit_code, 7);
    let r = c.exec_sync(&id, &["hostname"], 10).await.unwrap();
    assert_eq!(r.stdout, b"exec\n", "the pod's hostname");
    let started = std::time::Instant::now();
    let err = c.exec_sync(&id, &["sleep", "30"], 1).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::DeadlineExceeded, "{err:?}");
    assert!(started.elapsed() < Duration::from_secs(10));
    // The timed-out process was killed.
    let ps = c.exec_sync(&id, &["ps"], 10).await.unwrap();
    let ps = String::from_utf8_lossy(&ps.stdout).to_string();
    assert!(!ps.contains("sleep 30"), "{ps}");
    let err = c.exec_sync("nonexistent", &["true"], 1).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::NotFound);
}

#[tokio::test]
async fn stop_uses_the_image_stop_signal() {
    let crustd = Crustd::start().await;
    let mut c = crustd.client().await;
    let image = image_ref("crust-test/busybox:stopsignal");
    c.pull(&image).await.unwrap();
    let pod_cfg = pod_config(&crustd, "stopsig");
    let pod = c.run_pod(&pod_cfg).await;
    let mut config = container_config("trap", &image, &[]);
    config.command.clear();
    let id = c.run_container(&pod, &pod_cfg, config).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let started = std::time::Instant::now();
    c.runtime
        .stop_container(cri::StopContainerRequest {
            container_id: id.clone(),
            timeout: 30,
        })
        .await
        .unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "SIGUSR1 should stop it at once"
    );
    let status = c.container_status(&id).await;
    assert_eq!(status.exit_code, 0, "the trap exits 0 on SIGUSR1");
    assert_eq!(status.reason, "Completed");
    let log = std::fs::read_to_string(&status.log_path).unwrap();
    assert!(log.contains("got-usr1"), "{log}");
}

#[tokio::test]
async fn memory_limit_oom_kill_is_reported() {
    let crustd = Crustd::start().await;
    let mut c = ready(&crustd).await;
    let pod_cfg = pod_config(&crustd, "oom");
    let pod = c.run_pod(&pod_cfg).await;
    let mut config = container_config(
        "hog",
        &image_ref(BUSYBOX),
        &["sh", "-c", "head -c 256m /dev/zero | tail"],
    );
    config.linux = Some(cri::LinuxContainerConfig {
        resources: Some(cri::LinuxContainerResources {
            memory_limit_in_bytes: 32 << 20,
            ..Default::default()
        }),
        ..Default::default()
    });
    let id = c.run_container(&pod, &pod_cfg, config).await;
    let status = c.wait_exited(&id, Duration::from_secs(30)).await;
    assert_eq!(status.reason, "OOMKilled", "{status:?}");
    assert_eq!(status.exit_code, 137);
}

/// The directory of `cgroup` that holds `v1_controller`'s files: the
/// controller's hierarchy on v1, the one unified hierarchy on v2.
fn cgroup_dir(cgroup: &str, v1_controller: &str) -> String {
    if std::path::Path::new("/sys/fs/cgroup/cgroup.controllers").exists() {
        format!("/sys/fs/cgroup{cgroup}")
    } else {
        format!("/sys/fs/cgroup/{v1_controller}{cgroup}")
    }
}

fn cgroup_file(cgroup: &str, v1_controller: &str, name: &str) -> String {
    let path = format!("{}/{name}", cgroup_dir(cgroup, v1_controller));
    std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{path}: {e}"))
        .trim()
        .to_string()
}

#[tokio::test]
async fn limits_land_in_the_cgroup_and_can_be_updated() {
    let crustd = Crustd::start().await;
    let mut c = ready(&crustd).await;
    let pod_cfg = pod_config(&crustd, "limits");
    let pod = c.run_pod(&pod_cfg).await;
    let mut config = container_config("limited", &image_ref(BUSYBOX), &["sleep", "3600"]);
    config.linux = Some(cri::LinuxContainerConfig {
        resources: Some(cri::LinuxContainerResources {
            memory_limit_in_bytes: 64 << 20,
            cpu_quota: 50_000,
            cpu_period: 100_000,
            cpu_shares: 512,
            ..Default::default()
        }),
        ..Default::default()
    });
    let id = c.run_container(&pod, &pod_cfg, config).await;
    let cgroup = format!("{}/{id}", pod_cfg.linux.as_ref().unwrap().cgroup_parent);
    let v2 = std::path::Path::new("/sys/fs/cgroup/cgroup.controllers").exists();
    if v2 {
        assert_eq!(
            cgroup_file(&cgroup, "memory", "memory.max"),
            (64u64 << 20).to_string()
        );
        assert_eq!(cgroup_file(&cgroup, "cpu", "cpu.max"), "50000 100000");
        // 512 shares, in runc's and libcgroups' quadratic shares-to-weight map.
        assert_eq!(cgroup_file(&cgroup, "cpu", "cpu.weight"), "59");
    } else {
        assert_eq!(
            cgroup_file(&cgroup, "memory", "memory.limit_in_bytes"),
            (64u64 << 20).to_string()
        );
        assert_eq!(cgroup_file(&cgroup, "cpu", "cpu.cfs_quota_us"), "50000");
        assert_eq!(cgroup_file(&cgroup, "cpu", "cpu.shares"), "512");
    }
    c.runtime
        .update_container_resources(cri::UpdateContainerResourcesRequest {
            container_id: id.clone(),
            linux: Some(cri::LinuxContainerResources {
                memory_limit_in_bytes: 128 << 20,
                cpu_quota: 20_000,
                cpu_period: 100_000,
                cpu_shares: 256,
                ..Default::default()
            }),
            ..Default::default()
        })
        .await
        .unwrap();
    if v2 {
        assert_eq!(
            cgroup_file(&cgroup, "memory", "memory.max"),
            (128u64 << 20).to_string()
        );
        assert_eq!(cgroup_file(&cgroup, "cpu", "cpu.max"), "20000 100000");
    } else {
        assert_eq!(
            cgroup_file(&cgroup, "memory", "memory.limit_in_bytes"),
            (128u64 << 20).to_string()
        );
        assert_eq!(cgroup_file(&cgroup, "cpu", "cpu.cfs_quota_us"), "20000");
    }
    // Stats are read from the same cgroup.
    let _ = c
        .exec_sync(
            &id,
            &[
                "sh",
                "-c",
                "i=0; while [ $i -lt 20000 ]; do i=$((i+1)); done",
            ],
            20,
        )
        .await
        .unwrap();
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
    let cpu = stats.cpu.unwrap();
    assert!(cpu.usage_core_nano_seconds.unwrap().value > 0);
    // The first call has a rate too (the mean since start: the busy loop
    // above used CPU), with no wait inside the call for a second reading.
    assert!(cpu.usage_nano_cores.is_some_and(|v| v.value > 0), "{cpu:?}");
    let memory = stats.memory.unwrap();
    assert!(memory.working_set_bytes.unwrap().value > 0);
    // PSI comes from the container's cgroup v2 pressure files; cgroup v1
    // has none per cgroup, and then it is absent, never zeros.
    let psi = [cpu.psi, memory.psi, stats.io.and_then(|io| io.psi)];
    if v2 {
        for p in &psi {
            let p = p.as_ref().expect("PSI on cgroup v2");
            for d in [p.some.unwrap(), p.full.unwrap()] {
                assert!((0.0..=100.0).contains(&d.avg10), "{p:?}");
            }
        }
        let cpu_psi = std::fs::read_to_string(cgroup_dir(&cgroup, "cpu") + "/cpu.pressure");
        assert!(
            cpu_psi.unwrap().starts_with("some "),
            "read from the cgroup"
        );
    } else {
        eprintln!("cgroup v1: checking that PSI is absent");
        assert_eq!(psi, [None, None, None]);
    }
    let pod_stats = c
        .runtime
        .pod_sandbox_stats(cri::PodSandboxStatsRequest {
            pod_sandbox_id: pod.clone(),
        })
        .await
        .unwrap()
        .into_inner()
        .stats
        .unwrap();
    let linux = pod_stats.linux.unwrap();
    assert_eq!(linux.containers.len(), 1);
    let pod_psi = linux.cpu.unwrap().psi;
    assert_eq!(pod_psi.is_some(), v2, "pod cgroup PSI: {pod_psi:?}");
    assert_eq!(linux.io.is_some(), v2, "pod io PSI: {:?}", linux.io);
    c.remove_pod(&pod).await;
    assert!(
        !std::path::Path::new(&cgroup_dir(&cgroup, "memory")).exists(),
        "container cgroup left"
    );
}

#[tokio::test]
async fn names_are_unique_and_ids_accept_prefixes() {
    let crustd = Crustd::start().await;
    let mut c = ready(&crustd).await;
    let pod_cfg = pod_config(&crustd, "names");
    let pod = c.run_pod(&pod_cfg).await;
    let err = c
        .runtime
        .run_pod_sandbox(cri::RunPodSandboxRequest {
            config: Some(pod_cfg.clone()),
            runtime_handler: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::AlreadyExists);
    assert!(
        err.message().contains(&pod),
        "names the holder: {}",
        err.message()
    );
    let config = container_config("one", &image_ref(BUSYBOX), &["sleep", "60"]);
    let id = c.run_container(&pod, &pod_cfg, config.clone()).await;
    let err = c
        .runtime
        .create_container(cri::CreateContainerRequest {
            pod_sandbox_id: pod.clone(),
            config: Some(config),
            sandbox_config: Some(pod_cfg.clone()),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::AlreadyExists);
    assert!(err.message().contains(&id));
    assert_eq!(c.container_status(&id[..10]).await.id, id);
    let err = c
        .runtime
        .create_container(cri::CreateContainerRequest {
            pod_sandbox_id: pod.clone(),
            config: Some(container_config(
                "two",
                "crust-test/not-pulled:1",
                &["true"],
            )),
            sandbox_config: Some(pod_cfg.clone()),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::NotFound, "{err:?}");
    let err = c
        .runtime
        .run_pod_sandbox(cri::RunPodSandboxRequest {
            config: Some(cri::PodSandboxConfig::default()),
            runtime_handler: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    let err = c
        .runtime
        .run_pod_sandbox(cri::RunPodSandboxRequest {
            config: Some(pod_config(&crustd, "other")),
            runtime_handler: "kata".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    assert!(err.message().contains("kata"));
    // Unknown ids: stop and removal succeed (idempotent, as the conformance
    // suite checks); status says NotFound.
    c.runtime
        .stop_container(cri::StopContainerRequest {
            container_id: "feedbeef".into(),
            timeout: 0,
        })
        .await
        .unwrap();
    c.runtime
        .remove_container(cri::RemoveContainerRequest {
            container_id: "feedbeef".into(),
        })
        .await
        .unwrap();
    c.remove_pod("feedbeef").await;
    let err = c
        .runtime
        .pod_sandbox_status(cri::PodSandboxStatusRequest {
            pod_sandbox_id: "feedbeef".into(),
            verbose: false,
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::NotFound);
    c.remove_pod(&pod).await;
}

#[tokio::test]
async fn host_network_pod_sees_the_host() {
    let crustd = Crustd::start().await;
    let mut c = ready(&crustd).await;
    let mut pod_cfg = pod_config(&crustd, "hostnet");
    crust_e2e::set_pod_namespaces(
        &mut pod_cfg,
        cri::NamespaceOption {
            network: cri::NamespaceMode::Node as i32,
            ..Default::default()
        },
    );
    let pod = c.run_pod(&pod_cfg).await;
    let id = c
        .run_container(
            &pod,
            &pod_cfg,
            container_config("main", &image_ref(BUSYBOX), &["sleep", "3600"]),
        )
        .await;
    let inside = c
        .exec_sync(&id, &["readlink", "/proc/self/ns/net"], 10)
        .await
        .unwrap();
    let host = std::fs::read_link("/proc/self/ns/net").unwrap();
    assert_eq!(
        String::from_utf8_lossy(&inside.stdout).trim(),
        host.to_str().unwrap()
    );
    let hostname = c.exec_sync(&id, &["hostname"], 10).await.unwrap();
    assert_eq!(
        String::from_utf8_lossy(&hostname.stdout).trim(),
        nix::unistd::gethostname().unwrap().to_str().unwrap()
    );
    // A pod with its own network does not.
    let own_cfg = pod_config(&crustd, "ownnet");
    let own = c.run_pod(&own_cfg).await;
    let id2 = c
        .run_container(
            &own,
            &own_cfg,
            container_config("main", &image_ref(BUSYBOX), &["sleep", "3600"]),
        )
        .await;
    let inside = c
        .exec_sync(&id2, &["readlink", "/proc/self/ns/net"], 10)
        .await
        .unwrap();
    assert_ne!(
        String::from_utf8_lossy(&inside.stdout).trim(),
        host.to_str().unwrap()
    );
    let links = c
        .exec_sync(&id2, &["cat", "/proc/net/dev"], 10)
        .await
        .unwrap();
    let links = String::from_utf8_lossy(&links.stdout).to_string();
    assert!(
        links.contains("lo:") && links.lines().count() == 3,
        "only lo in a pod netns: {links}"
    );
}

#[tokio::test]
async fn containers_survive_crustd_being_killed() {
    let mut crustd = Crustd::start().await;
    let mut c = ready(&crustd).await;
    let pod_cfg = pod_config(&crustd, "survivor");
    let pod = c.run_pod(&pod_cfg).await;
    let id = c
        .run_container(
            &pod,
            &pod_cfg,
            container_config("main", &image_ref(BUSYBOX), &["sleep", "3600"]),
        )
        .await;
    let before = c
        .exec_sync(&id, &["cat", "/proc/1/stat"], 10)
        .await
        .unwrap()
        .stdout;
    crustd.stop_with(Signal::SIGKILL);
    tokio::time::sleep(Duration::from_millis(300)).await;
    crustd.spawn(&[]).await;
    let mut c = crustd.client().await;
    let status = c.container_status(&id).await;
    assert_eq!(status.state, cri::ContainerState::ContainerRunning as i32);
    let after = c
        .exec_sync(&id, &["cat", "/proc/1/stat"], 10)
        .await
        .unwrap()
        .stdout;
    assert_eq!(before, after, "the same process kept running");
    c.remove_pod(&pod).await;
}

#[tokio::test]
async fn containers_of_a_pod_share_one_pid_namespace() {
    let crustd = Crustd::start().await;
    let mut c = ready(&crustd).await;
    let mut pod_cfg = pod_config(&crustd, "sharedpid");
    crust_e2e::set_pod_namespaces(
        &mut pod_cfg,
        cri::NamespaceOption {
            pid: cri::NamespaceMode::Pod as i32,
            ..Default::default()
        },
    );
    let pod = c.run_pod(&pod_cfg).await;
    let a = c
        .run_container(
            &pod,
            &pod_cfg,
            container_config("a", &image_ref(BUSYBOX), &["sleep", "1111"]),
        )
        .await;
    let b = c
        .run_container(
            &pod,
            &pod_cfg,
            container_config("b", &image_ref(BUSYBOX), &["sleep", "2222"]),
        )
        .await;
    let ps = c
        .exec_sync(&b, &["ps", "-o", "pid,args"], 10)
        .await
        .unwrap();
    let ps = String::from_utf8_lossy(&ps.stdout).to_string();
    assert!(
        ps.contains("sleep 1111") && ps.contains("sleep 2222"),
        "{ps}"
    );
    let first = ps.lines().nth(1).unwrap_or("").trim().to_string();
    assert!(first.starts_with("1 "), "the pod init is PID 1: {ps}");
    // With CONTAINER mode each container sees only itself.
    let mut own_cfg = pod_config(&crustd, "ownpid");
    crust_e2e::set_pod_namespaces(
        &mut own_cfg,
        cri::NamespaceOption {
            pid: cri::NamespaceMode::Container as i32,
            ..Default::default()
        },
    );
    let own = c.run_pod(&own_cfg).await;
    let d = c
        .run_container(
            &own,
            &own_cfg,
            container_config("d", &image_ref(BUSYBOX), &["sleep", "3333"]),
        )
        .await;
    let ps = c
        .exec_sync(&d, &["ps", "-o", "pid,args"], 10)
        .await
        .unwrap();
    let ps = String::from_utf8_lossy(&ps.stdout).to_string();
    assert!(!ps.contains("sleep 1111"), "{ps}");
    assert!(
        ps.lines().any(|l| l.trim().starts_with("1 sleep 3333")),
        "{ps}"
    );
    let _ = a;
    // Removing the pod ends its init and every process in it.
    let info = c.pod_info(&pod).await;
    let init = info["podInitPid"].as_u64().unwrap();
    let shim = info["pid"].as_u64().unwrap();
    assert!(init > 0 && std::path::Path::new(&format!("/proc/{init}")).exists());
    c.remove_pod(&pod).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    for pid in [init, shim] {
        let alive = std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .map(|s| !s.contains(") Z "))
            .unwrap_or(false);
        assert!(!alive, "process {pid} outlived its pod");
    }
}

#[tokio::test]
async fn reopen_container_log_starts_a_new_file() {
    let crustd = Crustd::start().await;
    let mut c = ready(&crustd).await;
    let pod_cfg = pod_config(&crustd, "rotate");
    let pod = c.run_pod(&pod_cfg).await;
    let id = c
        .run_container(
            &pod,
            &pod_cfg,
            container_config(
                "ticker",
                &image_ref(BUSYBOX),
                &["sh", "-c", "while true; do echo tick; sleep 0.2; done"],
            ),
        )
        .await;
    let log = c.container_status(&id).await.log_path;
    tokio::time::sleep(Duration::from_millis(600)).await;
    // What kubelet's log rotation does: rename, then ask for a reopen.
    let rotated = format!("{log}.1");
    std::fs::rename(&log, &rotated).unwrap();
    c.runtime
        .reopen_container_log(cri::ReopenContainerLogRequest {
            container_id: id.clone(),
        })
        .await
        .unwrap();
    // The new file is there as soon as the call returns.
    assert!(
        std::path::Path::new(&log).exists(),
        "no new log file after ReopenContainerLog"
    );
    tokio::time::sleep(Duration::from_millis(800)).await;
    let before = std::fs::metadata(&rotated).unwrap().len();
    let fresh = log_records(&log);
    assert!(
        fresh.iter().any(|r| r.2 == "tick"),
        "new log file gets the output: {fresh:?}"
    );
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(
        std::fs::metadata(&rotated).unwrap().len(),
        before,
        "the rotated file stopped growing"
    );
    let err = c
        .runtime
        .reopen_container_log(cri::ReopenContainerLogRequest {
            container_id: "nope".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::NotFound);
}

#[tokio::test]
async fn an_exit_while_crustd_was_down_is_recorded_after_restart() {
    let mut crustd = Crustd::start().await;
    let mut c = ready(&crustd).await;
    let pod_cfg = pod_config(&crustd, "missed");
    let pod = c.run_pod(&pod_cfg).await;
    let id = c
        .run_container(
            &pod,
            &pod_cfg,
            container_config(
                "brief",
                &image_ref(BUSYBOX),
                &["sh", "-c", "sleep 1; exit 5"],
            ),
        )
        .await;
    crustd.stop_with(Signal::SIGKILL);
    tokio::time::sleep(Duration::from_secs(2)).await;
    crustd.spawn(&[]).await;
    let mut c = crustd.client().await;
    let status = c.wait_exited(&id, Duration::from_secs(10)).await;
    assert_eq!(status.exit_code, 5);
    assert_eq!(status.reason, "Error");
    c.remove_pod(&pod).await;
}

/// A pod record a damaged disk (or a bug) left undecodable must not take
/// every lookup down with it: at restart crustd moves it aside, keeps
/// serving the other pods and reports it in verbose Status.
#[tokio::test]
async fn an_undecodable_pod_record_is_quarantined_and_the_others_still_serve() {
    let mut crustd = Crustd::start().await;
    let mut c = crustd.client().await;
    let broken = c.run_pod(&pod_config(&crustd, "broken")).await;
    let healthy = c.run_pod(&pod_config(&crustd, "healthy")).await;
    // The connection would hold up a graceful stop: this runtime cannot
    // answer it while stop_with blocks.
    drop(c);
    assert_eq!(crustd.stop_with(Signal::SIGTERM), Some(0));
    {
        let db = redb::Database::create(crustd.root().join("metadata.redb")).unwrap();
        let tx = db.begin_write().unwrap();
        let table: redb::TableDefinition<&str, &[u8]> = redb::TableDefinition::new("sandboxes");
        tx.open_table(table)
            .unwrap()
            .insert(broken.as_str(), b"{\"id\": 7, truncated".as_slice())
            .unwrap();
        tx.commit().unwrap();
    }
    crustd.spawn(&[]).await;
    let mut c = crustd.client().await;
    let listed: Vec<String> = c
        .runtime
        .list_pod_sandbox(cri::ListPodSandboxRequest::default())
        .await
        .expect("ListPodSandbox must not fail over one bad record")
        .into_inner()
        .items
        .into_iter()
        .map(|p| p.id)
        .collect();
    assert_eq!(listed, vec![healthy.clone()]);
    let status = c
        .runtime
        .pod_sandbox_status(cri::PodSandboxStatusRequest {
            pod_sandbox_id: healthy.clone(),
            verbose: false,
        })
        .await
        .expect("the healthy pod still serves")
        .into_inner();
    assert_eq!(
        status.status.unwrap().state,
        cri::PodSandboxState::SandboxReady as i32
    );
    let err = c
        .runtime
        .pod_sandbox_status(cri::PodSandboxStatusRequest {
            pod_sandbox_id: broken.clone(),
            verbose: false,
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::NotFound, "{err:?}");
    let info = c
        .runtime
        .status(cri::StatusRequest { verbose: true })
        .await
        .unwrap()
        .into_inner()
        .info;
    let quarantined: serde_json::Value = serde_json::from_str(&info["quarantinedRecords"]).unwrap();
    assert_eq!(
        quarantined.as_array().map(Vec::len),
        Some(1),
        "{quarantined}"
    );
    assert_eq!(quarantined[0]["kind"], "sandbox");
    assert_eq!(quarantined[0]["id"], broken.as_str());
    assert!(
        crustd.log().contains("moved to the quarantine table"),
        "{}",
        crustd.log()
    );
    // Its pod is not taken for debris a crash left: the dir stays, for an
    // operator to look at.
    assert!(crustd.state().join("pods").join(&broken).is_dir());
    c.remove_pod(&healthy).await;
}

/// The next event of a GetContainerEvents stream, within 10 s.
async fn next_event(
    events: &mut tonic::Streaming<cri::ContainerEventResponse>,
) -> cri::ContainerEventResponse {
    tokio::time::timeout(Duration::from_secs(10), events.message())
        .await
        .expect("no container event within 10 s")
        .expect("event stream failed")
        .expect("event stream ended")
}

/// Asserts the next event is `kind` for `id` and returns it.
async fn expect_event(
    events: &mut tonic::Streaming<cri::ContainerEventResponse>,
    id: &str,
    kind: cri::ContainerEventType,
) -> cri::ContainerEventResponse {
    let e = next_event(events).await;
    assert_eq!(
        (e.container_id.as_str(), e.container_event_type),
        (id, kind as i32),
        "{e:?}"
    );
    assert!(e.created_at > 0, "{e:?}");
    e
}

fn state_of(e: &cri::ContainerEventResponse, id: &str) -> Option<i32> {
    e.containers_statuses
        .iter()
        .find(|s| s.id == id)
        .map(|s| s.state)
}

// Multi-threaded: the client must keep reading while stop_with blocks.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn container_events_follow_pods_and_containers_through_their_lives() {
    use cri::ContainerEventType::*;
    let mut crustd = Crustd::start().await;
    let mut c = ready(&crustd).await;
    let mut events = c
        .runtime
        .get_container_events(cri::GetEventsRequest {})
        .await
        .unwrap()
        .into_inner();
    let pod_cfg = pod_config(&crustd, "events");
    let pod = c.run_pod(&pod_cfg).await;
    // The pod's own events carry its id, as containerd's do.
    expect_event(&mut events, &pod, ContainerCreatedEvent).await;
    let e = expect_event(&mut events, &pod, ContainerStartedEvent).await;
    assert_eq!(
        e.pod_sandbox_status.unwrap().state,
        cri::PodSandboxState::SandboxReady as i32
    );

    // A container that exits by itself: created, started, stopped with
    // its exit code in the statuses that come with the event.
    let quick = c
        .run_container(
            &pod,
            &pod_cfg,
            container_config("quick", &image_ref(BUSYBOX), &["sh", "-c", "exit 3"]),
        )
        .await;
    let e = expect_event(&mut events, &quick, ContainerCreatedEvent).await;
    assert!(state_of(&e, &quick).is_some(), "{e:?}");
    expect_event(&mut events, &quick, ContainerStartedEvent).await;
    let e = expect_event(&mut events, &quick, ContainerStoppedEvent).await;
    let status = e
        .containers_statuses
        .iter()
        .find(|s| s.id == quick)
        .unwrap();
    assert_eq!(
        (status.state, status.exit_code),
        (cri::ContainerState::ContainerExited as i32, 3)
    );

    // A second subscriber sees what happens from then on.
    let mut late = c
        .runtime
        .get_container_events(cri::GetEventsRequest {})
        .await
        .unwrap()
        .into_inner();
    let sleeper = c
        .run_container(
            &pod,
            &pod_cfg,
            container_config("sleeper", &image_ref(BUSYBOX), &["sleep", "3600"]),
        )
        .await;
    for stream in [&mut events, &mut late] {
        expect_event(stream, &sleeper, ContainerCreatedEvent).await;
        let e = expect_event(stream, &sleeper, ContainerStartedEvent).await;
        assert_eq!(
            state_of(&e, &sleeper),
            Some(cri::ContainerState::ContainerRunning as i32)
        );
    }
    c.runtime
        .remove_container(cri::RemoveContainerRequest {
            container_id: sleeper.clone(),
        })
        .await
        .unwrap();
    expect_event(&mut events, &sleeper, ContainerStoppedEvent).await;
    let e = expect_event(&mut events, &sleeper, ContainerDeletedEvent).await;
    assert_eq!(state_of(&e, &sleeper), None, "{e:?}");

    c.runtime
        .stop_pod_sandbox(cri::StopPodSandboxRequest {
            pod_sandbox_id: pod.clone(),
        })
        .await
        .unwrap();
    let e = expect_event(&mut events, &pod, ContainerStoppedEvent).await;
    assert_eq!(
        e.pod_sandbox_status.unwrap().state,
        cri::PodSandboxState::SandboxNotready as i32
    );
    c.remove_pod(&pod).await;
    expect_event(&mut events, &quick, ContainerDeletedEvent).await;
    let e = expect_event(&mut events, &pod, ContainerDeletedEvent).await;
    assert!(e.pod_sandbox_status.is_none(), "{e:?}");

    // Open streams end at shutdown instead of holding it up.
    assert_eq!(crustd.stop_with(Signal::SIGTERM), Some(0));
    assert!(
        tokio::time::timeout(Duration::from_secs(5), late.message())
            .await
            .is_ok(),
        "the event stream outlived crustd"
    );
}

#[tokio::test]
async fn cdi_devices_bring_their_device_nodes_env_and_mounts() {
    let specs = tempfile::tempdir().unwrap();
    let data = tempfile::tempdir().unwrap();
    std::fs::write(data.path().join("hello"), "from-the-host\n").unwrap();
    // What a device plugin would drop in /var/run/cdi.
    std::fs::write(
        specs.path().join("crust-test.yaml"),
        format!(
            r#"cdiVersion: "0.6.0"
kind: crust.test/dev
devices:
  - name: zero
    containerEdits:
      env: [CDI_TEST=yes]
      deviceNodes:
        - {{path: /dev/crust-zero, hostPath: /dev/zero}}
      mounts:
        - {{hostPath: {data}, containerPath: /cdi-data, options: [ro]}}
"#,
            data = data.path().display()
        ),
    )
    .unwrap();
    let crustd = Crustd::start_with(crust_e2e::CrustdOptions {
        extra_config: format!("cdi:\n  spec_dirs: [{}]\n", specs.path().display()),
        ..Default::default()
    })
    .await;
    let mut c = ready(&crustd).await;
    let pod_cfg = pod_config(&crustd, "cdi");
    let pod = c.run_pod(&pod_cfg).await;
    let script = "echo env=$CDI_TEST; head -c 3 /dev/crust-zero | od -An -tx1; \
                  cat /cdi-data/hello; touch /cdi-data/x 2>/dev/null || echo read-only";
    let mut config = container_config("gpu", &image_ref(BUSYBOX), &["sh", "-c", script]);
    config.cdi_devices = vec![cri::CdiDevice {
        name: "crust.test/dev=zero".into(),
    }];
    let id = c.run_container(&pod, &pod_cfg, config).await;
    let status = c.wait_exited(&id, Duration::from_secs(10)).await;
    let out: Vec<String> = log_records(&status.log_path)
        .into_iter()
        .map(|r| r.2.trim().to_string())
        .collect();
    assert_eq!(
        out,
        ["env=yes", "00 00 00", "from-the-host", "read-only"],
        "{status:?}"
    );

    // A device no spec defines is refused, naming it.
    let mut config = container_config("nogpu", &image_ref(BUSYBOX), &["true"]);
    config.cdi_devices = vec![cri::CdiDevice {
        name: "crust.test/dev=missing".into(),
    }];
    let err = c
        .runtime
        .create_container(cri::CreateContainerRequest {
            pod_sandbox_id: pod.clone(),
            config: Some(config),
            sandbox_config: Some(pod_cfg.clone()),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    assert!(err.message().contains("crust.test/dev=missing"), "{err}");
    c.remove_pod(&pod).await;
}

/// A package upgrade replaces crustd's binary while it runs: pods with a
/// shared PID namespace (whose init is crustd itself) and new shims must
/// still start, from the new file at the same path.
#[tokio::test]
async fn pods_still_start_after_the_crustd_binary_is_replaced() {
    let bin = tempfile::tempdir_in("/var/tmp").unwrap();
    let built = crust_e2e::crustd_binary().parent().unwrap();
    for name in ["crustd", "crust-shim"] {
        std::fs::copy(built.join(name), bin.path().join(name)).unwrap();
    }
    let crustd = Crustd::start_with(crust_e2e::CrustdOptions {
        binary: Some(bin.path().join("crustd")),
        ..Default::default()
    })
    .await;
    let mut c = ready(&crustd).await;
    for name in ["crustd", "crust-shim"] {
        let path = bin.path().join(name);
        let new = bin.path().join(format!("{name}.new"));
        std::fs::copy(&path, &new).unwrap();
        std::fs::rename(&new, &path).unwrap();
    }
    // CRI's default PID mode is POD: the pod gets an init, crustd itself.
    let pod_cfg = pod_config(&crustd, "upgraded");
    let pod = c.run_pod(&pod_cfg).await;
    let id = c
        .run_container(
            &pod,
            &pod_cfg,
            container_config("after", &image_ref(BUSYBOX), &["sleep", "3600"]),
        )
        .await;
    assert_eq!(
        c.container_status(&id).await.state,
        cri::ContainerState::ContainerRunning as i32
    );
    c.remove_pod(&pod).await;
}

fn dir_names(dir: &std::path::Path) -> std::collections::BTreeSet<String> {
    std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .flatten()
                .map(|e| e.file_name().to_string_lossy().to_string())
                .collect()
        })
        .unwrap_or_default()
}

/// crustd SIGKILLed while pods and containers are being made: after the
/// restart, nothing is left half made (every pod and container dir has a
/// record), and removing what it reports leaves no mount, dir or shim.
#[tokio::test]
async fn a_crash_while_pods_are_being_made_leaves_nothing_half_made() {
    let mut crustd = Crustd::start().await;
    let mut c = ready(&crustd).await;
    let mut made = Vec::new();
    for i in 0..4 {
        let cfg = pod_config(&crustd, &format!("before{i}"));
        made.push((c.run_pod(&cfg).await, cfg));
    }
    let mut tasks = crustd.run_pods_in_background("during", 4).await;
    for (pod, cfg) in &made {
        let mut c = crustd.client().await;
        let (pod, cfg) = (pod.clone(), cfg.clone());
        tasks.spawn(async move {
            c.runtime
                .create_container(cri::CreateContainerRequest {
                    pod_sandbox_id: pod,
                    config: Some(container_config(
                        "c",
                        &image_ref(BUSYBOX),
                        &["sleep", "3600"],
                    )),
                    sandbox_config: Some(cfg),
                })
                .await
                .map(drop)
        });
    }
    tokio::time::sleep(Duration::from_millis(60)).await;
    crustd.stop_with(Signal::SIGKILL);
    while tasks.join_next().await.is_some() {}
    crustd.spawn(&[]).await;
    let mut c = crustd.client().await;

    let state = crustd.dir.path().join("state");
    let pods: std::collections::BTreeSet<String> =
        c.list_pods().await.into_iter().map(|p| p.id).collect();
    let containers: std::collections::BTreeSet<String> = c
        .runtime
        .list_containers(cri::ListContainersRequest::default())
        .await
        .unwrap()
        .into_inner()
        .containers
        .into_iter()
        .map(|c| c.id)
        .collect();
    // The half-made ones are undone in the background, soon after start.
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    while !(dir_names(&state.join("pods")).is_subset(&pods)
        && dir_names(&state.join("containers")).is_subset(&containers))
    {
        assert!(
            std::time::Instant::now() < deadline,
            "pod dirs {:?} vs pods {pods:?}, container dirs {:?} vs containers {containers:?}\n{}",
            dir_names(&state.join("pods")),
            dir_names(&state.join("containers")),
            crustd.log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for pod in &pods {
        c.remove_pod(pod).await;
    }
    assert_eq!(dir_names(&state.join("pods")), Default::default());
    assert_eq!(dir_names(&state.join("containers")), Default::default());
    assert_eq!(crustd.mounts_left(), Vec::<String>::new());
    let shims: Vec<u32> = std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter(|e| std::fs::read_link(e.path().join("cwd")).is_ok_and(|c| c.starts_with(&state)))
        .filter_map(|e| e.file_name().to_string_lossy().parse().ok())
        .collect();
    assert_eq!(
        shims,
        Vec::<u32>::new(),
        "processes still working in crustd's state dir"
    );
}
