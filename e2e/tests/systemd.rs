//! crust as a node service under a real systemd (hack/systemd-sandbox.sh):
//! the Debian package installed with dpkg, crust.service started by its
//! postinst, pods on the systemd cgroup driver (scopes in kubelet-style
//! slices, limits, devices, stats, OOM), restart, upgrade and purge.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use crust_e2e::systemd::Sandbox;
use crust_e2e::{CriClient, cri, image_ref};

const BUSYBOX: &str = "crust-test/busybox:latest";
const POD_SLICE: &str = "kubepods-burstable-podsde2e.slice";

/// Builds the package from the binaries under test, as `version`.
fn package(out: &Path, version: &str) -> PathBuf {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let bin = crust_e2e::crustd_binary().parent().unwrap();
    let run = Command::new(repo.join("hack/package.sh"))
        .env("CRUST_PACKAGE_PROFILE", "debug")
        .env("CRUST_PACKAGE_BIN_DIR", bin)
        .env("CRUST_PACKAGE_OUT", out)
        .env("CRUST_PACKAGE_VERSION", version)
        .output()
        .unwrap();
    assert!(
        run.status.success(),
        "package.sh: {}",
        String::from_utf8_lossy(&run.stderr)
    );
    let stdout = String::from_utf8_lossy(&run.stdout);
    PathBuf::from(stdout.lines().last().unwrap().trim())
}

/// Waits for crust.service to be active with a CRI socket that answers.
async fn client(sb: &Sandbox) -> CriClient {
    let socket = sb.path("/run/crust/crust.sock");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let active = sb.sh("systemctl is-active crust").stdout == "active";
        if active && socket.exists() {
            let mut c = CriClient::connect(&socket).await;
            if c.runtime
                .version(cri::VersionRequest::default())
                .await
                .is_ok()
            {
                return c;
            }
        }
        assert!(
            Instant::now() < deadline,
            "crust.service not serving: {}",
            sb.sh("systemctl status crust --no-pager; journalctl -u crust --no-pager | tail -20")
                .stdout
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn pod_config() -> cri::PodSandboxConfig {
    cri::PodSandboxConfig {
        metadata: Some(cri::PodSandboxMetadata {
            name: "sd".into(),
            uid: "sde2e".into(),
            namespace: "default".into(),
            attempt: 0,
        }),
        log_directory: "/var/log/pods/default_sd_sde2e".into(),
        linux: Some(cri::LinuxPodSandboxConfig {
            cgroup_parent: POD_SLICE.into(),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn container(name: &str, args: &[&str], memory: i64) -> cri::ContainerConfig {
    cri::ContainerConfig {
        metadata: Some(cri::ContainerMetadata {
            name: name.into(),
            attempt: 0,
        }),
        image: Some(cri::ImageSpec {
            image: image_ref(BUSYBOX),
            ..Default::default()
        }),
        command: args.iter().map(|s| s.to_string()).collect(),
        log_path: format!("{name}.log"),
        linux: Some(cri::LinuxContainerConfig {
            resources: Some(cri::LinuxContainerResources {
                memory_limit_in_bytes: memory,
                cpu_quota: 50_000,
                cpu_period: 100_000,
                cpu_shares: 256,
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// The scope's cgroup dir in a v1 hierarchy, inside the sandbox.
fn scope_dir(controller: &str, id: &str) -> String {
    format!(
        "/sys/fs/cgroup/{controller}/kubepods.slice/kubepods-burstable.slice/{POD_SLICE}/cri-crust-{id}.scope"
    )
}

#[tokio::test]
async fn the_package_runs_crust_under_systemd_with_the_systemd_cgroup_driver() {
    if let Some(why) = crust_e2e::systemd::unavailable() {
        eprintln!("SKIPPED: no systemd sandbox here: {why}");
        return;
    }
    let v2 = Path::new("/sys/fs/cgroup/cgroup.controllers").exists();
    let sb = Sandbox::boot();
    let debs = sb.dir.path().join("debs");
    let first = package(&debs, "0.1.0");
    let upgrade = package(&debs, "0.1.0+e2e1");

    // A node's config: loopback-only CNI, metrics on a free port (the
    // sandbox shares the host's network), as a drop-in over the conffile.
    sb.write(
        "/etc/cni/net.d/10-lo.conflist",
        r#"{"cniVersion":"1.0.0","name":"lo-only","plugins":[{"type":"loopback"}]}"#,
    );
    sb.write(
        "/etc/crust/config.d/50-e2e.yaml",
        "metrics:\n  address: 127.0.0.1:0\n",
    );
    // lintian (Debian's package checker, from install-deps) finds nothing.
    let lint = Command::new("lintian")
        .args(["--tag-display-limit", "0"])
        .arg(&first)
        .output()
        .expect("lintian (hack/install-deps.sh installs it)");
    let findings = String::from_utf8_lossy(&lint.stdout).into_owned();
    assert!(
        lint.status.success() && findings.trim().is_empty(),
        "lintian: {findings}{}",
        String::from_utf8_lossy(&lint.stderr)
    );
    sb.copy_in(&first, "/root/crust.deb");
    sb.copy_in(&upgrade, "/root/crust-upgrade.deb");

    // dpkg -i: postinst enables and starts the unit.
    sb.ok("dpkg -i /root/crust.deb");
    assert_eq!(sb.ok("systemctl is-enabled crust"), "enabled");
    assert!(
        sb.ok("bash -c '. /usr/share/bash-completion/completions/crustd && complete -p crustd'")
            .contains("_crustd"),
        "bash completion installed"
    );
    let verify = sb.sh("systemd-analyze verify /lib/systemd/system/crust.service");
    let complaints: Vec<&str> = verify
        .stderr
        .lines()
        .chain(verify.stdout.lines())
        // The sandbox (like many container images) has no kmod; the unit
        // tolerates that ("-" prefix).
        .filter(|l| !l.contains("/sbin/modprobe"))
        .collect();
    assert!(
        complaints.is_empty(),
        "systemd-analyze verify: {complaints:?}"
    );
    let mut c = client(&sb).await;
    let status = sb.ok("crustd status");
    assert!(
        status.contains("systemd"),
        "crustd status names the driver: {status}"
    );

    // A pod in a kubelet-style slice; containers as scopes in it.
    c.pull(&image_ref(BUSYBOX)).await.unwrap();
    let pod_cfg = pod_config();
    let pod = c.run_pod(&pod_cfg).await;
    let id = c
        .run_container(
            &pod,
            &pod_cfg,
            container("sleeper", &["sleep", "3600"], 64 << 20),
        )
        .await;
    // The pod init (PID 1 of the pod's shared PID namespace) has a scope
    // in the pod's slice too.
    let init_unit = format!("crust-pod-{pod}.scope");
    assert_eq!(sb.ok(&format!("systemctl is-active {init_unit}")), "active");
    assert_eq!(
        sb.ok(&format!("systemctl show -p Slice --value {init_unit}")),
        POD_SLICE
    );
    let unit = format!("cri-crust-{id}.scope");
    assert_eq!(sb.ok(&format!("systemctl is-active {unit}")), "active");
    assert_eq!(
        sb.ok(&format!("systemctl show -p Slice --value {unit}")),
        POD_SLICE
    );
    let procs_of = |id: &str| {
        if v2 {
            format!(
                "/sys/fs/cgroup/kubepods.slice/kubepods-burstable.slice/{POD_SLICE}/cri-crust-{id}.scope/cgroup.procs"
            )
        } else {
            format!("{}/cgroup.procs", scope_dir("memory", id))
        }
    };
    let procs = procs_of(&id);
    let init = sb.ok(&format!("head -1 {procs}"));
    assert!(!init.is_empty(), "the container's init is in its scope");
    let cgroups = sb.ok(&format!("cat /proc/{init}/cgroup"));
    for line in cgroups.lines() {
        assert!(line.ends_with(&format!("/{unit}")), "{line}\n{cgroups}");
    }

    // Limits: in the cgroup files and systemd's properties.
    let limit_file = |id: &str| {
        if v2 {
            format!(
                "/sys/fs/cgroup/kubepods.slice/kubepods-burstable.slice/{POD_SLICE}/cri-crust-{id}.scope/memory.max"
            )
        } else {
            format!("{}/memory.limit_in_bytes", scope_dir("memory", id))
        }
    };
    assert_eq!(
        sb.ok(&format!("cat {}", limit_file(&id))),
        (64u64 << 20).to_string()
    );
    if !v2 {
        assert_eq!(
            sb.ok(&format!("systemctl show -p MemoryLimit --value {unit}")),
            (64u64 << 20).to_string()
        );
        assert_eq!(
            sb.ok(&format!("cat {}/cpu.cfs_quota_us", scope_dir("cpu", &id))),
            "50000"
        );
    }
    // UpdateContainerResources reaches both, and a daemon-reload (which
    // re-applies unit properties) keeps it.
    c.runtime
        .update_container_resources(cri::UpdateContainerResourcesRequest {
            container_id: id.clone(),
            linux: Some(cri::LinuxContainerResources {
                memory_limit_in_bytes: 128 << 20,
                cpu_quota: 50_000,
                cpu_period: 100_000,
                cpu_shares: 256,
                ..Default::default()
            }),
            ..Default::default()
        })
        .await
        .unwrap();
    sb.ok("systemctl daemon-reload");
    assert_eq!(
        sb.ok(&format!("cat {}", limit_file(&id))),
        (128u64 << 20).to_string()
    );
    // Device rules hold in the scope: no host disk through a device node.
    let dev = c
        .exec_sync(
            &id,
            &["sh", "-c", "mknod /tmp/disk b 8 0 && head -c 1 /tmp/disk"],
            10,
        )
        .await
        .unwrap();
    assert_ne!(dev.exit_code, 0);
    assert!(
        String::from_utf8_lossy(&dev.stderr).contains("Operation not permitted"),
        "{dev:?}"
    );
    // Stats are read from the scope.
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
    assert!(stats.memory.unwrap().working_set_bytes.unwrap().value > 0);
    assert!(stats.cpu.unwrap().usage_core_nano_seconds.unwrap().value > 0);
    // An OOM kill in a scope is reported as such.
    let hog = c
        .run_container(
            &pod,
            &pod_cfg,
            container(
                "hog",
                &["sh", "-c", "head -c 256m /dev/zero | tail"],
                32 << 20,
            ),
        )
        .await;
    let hog_status = c.wait_exited(&hog, Duration::from_secs(30)).await;
    assert_eq!(
        (hog_status.reason.as_str(), hog_status.exit_code),
        ("OOMKilled", 137)
    );

    // systemctl restart: the container keeps running, and is reconnected.
    let before = sb.main_pid("crust");
    sb.ok("systemctl restart crust");
    let mut c = client(&sb).await;
    assert_ne!(sb.main_pid("crust"), before, "a new crustd");
    assert_eq!(sb.ok(&format!("head -1 {procs}")), init, "same init");
    let st = c.container_status(&id).await;
    assert_eq!(st.state, cri::ContainerState::ContainerRunning as i32);
    let out = c
        .exec_sync(&id, &["echo", "reconnected"], 10)
        .await
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "reconnected\n");

    // systemctl stop never kills pods; an exit meanwhile is recorded.
    let quick = c
        .run_container(
            &pod,
            &pod_cfg,
            container("quick", &["sleep", "3600"], 64 << 20),
        )
        .await;
    let quick_init = sb.ok(&format!("head -1 {}", procs_of(&quick)));
    sb.ok("systemctl stop crust");
    assert_eq!(sb.ok(&format!("head -1 {procs}")), init, "still running");
    sb.ok(&format!("kill -KILL {quick_init}"));
    sb.ok("systemctl start crust");
    let mut c = client(&sb).await;
    let st = c.wait_exited(&quick, Duration::from_secs(20)).await;
    assert_eq!(st.exit_code, 137, "{st:?}");

    // A package upgrade restarts crustd, not the pods.
    let before = sb.main_pid("crust");
    sb.ok("dpkg -i /root/crust-upgrade.deb");
    assert_eq!(sb.ok("dpkg-query -W -f '${Version}' crust"), "0.1.0+e2e1");
    let mut c = client(&sb).await;
    assert_ne!(sb.main_pid("crust"), before, "upgrade restarted crustd");
    assert_eq!(sb.ok(&format!("head -1 {procs}")), init, "same init");
    let st = c.container_status(&id).await;
    assert_eq!(st.state, cri::ContainerState::ContainerRunning as i32);

    // Removing the pod leaves no scope behind.
    c.runtime
        .stop_pod_sandbox(cri::StopPodSandboxRequest {
            pod_sandbox_id: pod.clone(),
        })
        .await
        .unwrap();
    c.remove_pod(&pod).await;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let left =
            sb.ok("systemctl list-units --all --no-legend 'cri-crust-*' 'crust-pod-*' | wc -l");
        if left == "0" {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "scopes left: {}",
            sb.ok("systemctl list-units --all 'cri-crust-*'")
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    drop(c);

    // Purge: the unit, its enablement, the config and crust's data go.
    sb.ok("dpkg --purge crust");
    let gone = sb.sh("systemctl is-enabled crust");
    assert_ne!(gone.code, 0, "{gone:?}");
    for path in [
        "/etc/crust/config.yaml",
        "/lib/systemd/system/crust.service",
        "/usr/bin/crustd",
        "/run/crust",
    ] {
        assert!(
            !sb.path(path).exists(),
            "{path} left after purge: {}",
            sb.sh(&format!("findmnt -R {path}; ls -la {path}")).stdout
        );
    }
    // The admin's own drop-in is not the package's to delete (dpkg keeps
    // files it does not own, as for any package).
    assert_eq!(
        sb.ok("ls -A /etc/crust/config.d"),
        "50-e2e.yaml",
        "only the admin's file is left"
    );
    let data = sb.ok("find /var/lib/crust -mindepth 1 | head -5");
    assert!(data.is_empty(), "/var/lib/crust not emptied: {data}");
    let procs_left =
        sb.ok("cat /proc/[0-9]*/comm 2>/dev/null | grep -E '^(crustd|crust-shim|sleep)$' || true");
    assert!(procs_left.is_empty(), "processes left: {procs_left}");

    // Halting the sandbox leaves nothing on the host.
    let cgroups = sb.host_cgroups();
    assert!(!cgroups.is_empty());
    let problems = sb.halt();
    assert!(problems.is_empty(), "{problems}");
    for cg in cgroups {
        assert!(!cg.exists(), "{} left on the host", cg.display());
    }
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    let dir = sb.dir.path().display().to_string();
    assert!(!mounts.contains(&dir), "mounts left under {dir}");
}

/// containerd's runc shim as a RuntimeClass handler under the systemd
/// driver: crust sets runc's SystemdCgroup to match, so runc puts the
/// container in a scope in the pod's slice with its limits, and crust's
/// log writer, exec and stop work under the packaged unit.
#[tokio::test]
async fn the_runc_handler_runs_containers_as_scopes_under_systemd() {
    if let Some(why) = crust_e2e::systemd::unavailable() {
        eprintln!("SKIPPED: no systemd sandbox here: {why}");
        return;
    }
    let v2 = Path::new("/sys/fs/cgroup/cgroup.controllers").exists();
    let sb = Sandbox::boot();
    let debs = sb.dir.path().join("debs");
    let deb = package(&debs, "0.1.0");
    sb.write(
        "/etc/cni/net.d/10-lo.conflist",
        r#"{"cniVersion":"1.0.0","name":"lo-only","plugins":[{"type":"loopback"}]}"#,
    );
    sb.write(
        "/etc/crust/config.d/50-e2e.yaml",
        "metrics:\n  address: 127.0.0.1:0\nruntime:\n  handlers:\n    runc:\n      shim: /usr/bin/containerd-shim-runc-v2\n      options: {BinaryName: /usr/sbin/runc}\n",
    );
    sb.copy_in(&deb, "/root/crust.deb");
    sb.ok("dpkg -i /root/crust.deb");
    let mut c = client(&sb).await;
    c.pull(&image_ref(BUSYBOX)).await.unwrap();
    let pod_cfg = pod_config();
    let pod = c
        .runtime
        .run_pod_sandbox(cri::RunPodSandboxRequest {
            config: Some(pod_cfg.clone()),
            runtime_handler: "runc".into(),
        })
        .await
        .unwrap()
        .into_inner()
        .pod_sandbox_id;
    let id = c
        .run_container(
            &pod,
            &pod_cfg,
            container(
                "sleeper",
                &[
                    "sh",
                    "-c",
                    "echo hello-from-runc; while sleep 0.2; do [ -e /tmp/say ] && echo said-after-restart && rm /tmp/say; done",
                ],
                64 << 20,
            ),
        )
        .await;
    let unit = format!("cri-crust-{id}.scope");
    assert_eq!(sb.ok(&format!("systemctl is-active {unit}")), "active");
    assert_eq!(
        sb.ok(&format!("systemctl show -p Slice --value {unit}")),
        POD_SLICE
    );
    let limit = if v2 {
        format!(
            "/sys/fs/cgroup/kubepods.slice/kubepods-burstable.slice/{POD_SLICE}/{unit}/memory.max"
        )
    } else {
        format!("{}/memory.limit_in_bytes", scope_dir("memory", &id))
    };
    assert_eq!(sb.ok(&format!("cat {limit}")), (64u64 << 20).to_string());
    // The shim is containerd's, and crust-shim writes the log.
    let info = c.pod_info(&pod).await;
    let shim_pid = info["pid"].as_u64().unwrap_or(0);
    assert!(shim_pid > 0, "{info}");
    assert_eq!(
        sb.ok(&format!("cat /proc/{shim_pid}/comm")),
        "containerd-shim"
    );
    let log = format!("{}/sleeper.log", pod_cfg.log_directory);
    let deadline = Instant::now() + Duration::from_secs(10);
    while !sb
        .ok(&format!("cat {log} 2>/dev/null || true"))
        .contains("stdout F hello-from-runc")
    {
        assert!(
            Instant::now() < deadline,
            "log: {}",
            sb.sh(&format!("cat {log}")).stdout
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let out = c
        .exec_sync(&id, &["echo", "exec-ok"], 10)
        .await
        .unwrap_or_else(|e| panic!("{e:?}\n{}", journal_and_processes(&sb)));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "exec-ok\n");
    // A restart of the unit keeps the container and its shim.
    sb.ok("systemctl restart crust");
    let mut c = client(&sb).await;
    let out = c
        .exec_sync(&id, &["echo", "after-restart"], 10)
        .await
        .unwrap_or_else(|e| panic!("{e:?}\n{}", journal_and_processes(&sb)));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "after-restart\n");
    // The log writer outlived the unit's restart.
    c.exec_sync(&id, &["touch", "/tmp/say"], 10).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while !sb
        .ok(&format!("cat {log} 2>/dev/null || true"))
        .contains("stdout F said-after-restart")
    {
        assert!(
            Instant::now() < deadline,
            "log: {}",
            sb.sh(&format!("cat {log}")).stdout
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Stopping kills the container although systemd moved it out of
    // the devices hierarchy (runc 1.1's kill --all looks only there).
    c.runtime
        .stop_pod_sandbox(cri::StopPodSandboxRequest {
            pod_sandbox_id: pod.clone(),
        })
        .await
        .unwrap_or_else(|e| panic!("{e:?}\n{}", journal_and_processes(&sb)));
    c.remove_pod(&pod).await;
    let deadline = Instant::now() + Duration::from_secs(10);
    while sb.ok("systemctl list-units --all --no-legend 'cri-crust-*' | wc -l") != "0" {
        assert!(Instant::now() < deadline, "scope left");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    drop(c);
    sb.ok("dpkg --purge crust");
    let problems = sb.halt();
    assert!(problems.is_empty(), "{problems}");
}

/// The sandbox's journal tail, its processes and their cgroups: what a
/// failure in a runc pod needs to be understood.
fn journal_and_processes(sb: &Sandbox) -> String {
    let journal = sb
        .sh("journalctl --no-pager | grep -av 'Found left-over\\|This usually' | tail -40")
        .stdout;
    let processes = sb
        .sh("for p in /proc/[0-9]*; do echo $p $(cut -d' ' -f1-4 $p/stat) $(tr '\\0' ' ' < $p/cmdline | cut -c1-150); done; systemctl list-units --all --no-legend 'cri-*'; for p in $(pgrep -x sleep); do cat /proc/$p/cgroup; done")
        .stdout;
    format!("{journal}\n{processes}")
}
