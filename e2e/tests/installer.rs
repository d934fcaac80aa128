//! The chart's node installer (installer/install.sh) end to end on a real
//! host: a real systemd booted by hack/systemd-sandbox.sh, with a fake
//! kubelet (a kubeadm and a k3s layout). Install, kubelet switch, rerun,
//! upgrade, uninstall restoring every file byte for byte.

use std::path::Path;

use crust_e2e::systemd::Sandbox;

const KUBELET_CONFIG: &str = "apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
cgroupDriver: systemd
containerRuntimeEndpoint: unix:///run/containerd/containerd.sock
";
const KUBEADM_FLAGS: &str = "KUBELET_KUBEADM_ARGS=\"--container-runtime-endpoint=unix:///run/containerd/containerd.sock --pod-infra-container-image=registry.k8s.io/pause:3.10\"\n";
/// A stand-in for kubelet (or k3s): a service whose restarts can be seen.
const FAKE_KUBELET_UNIT: &str = "[Service]\nExecStart=/bin/sleep infinity\n";

/// The installer image's /crust-installer, made from this build.
fn stage_installer(sb: &Sandbox) {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let bin = crust_e2e::crustd_binary().parent().unwrap();
    sb.copy_in(
        &repo.join("installer/install.sh"),
        "/crust-installer/install.sh",
    );
    sb.copy_in(
        &repo.join("packaging/crust.service"),
        "/crust-installer/crust.service",
    );
    sb.copy_in(&bin.join("crustd"), "/crust-installer/bin/crustd");
    sb.copy_in(&bin.join("crust-shim"), "/crust-installer/bin/crust-shim");
    // kubectl as the installer calls it (labels, cordon): a recorder.
    sb.write(
        "/crust-installer/bin/kubectl",
        "#!/bin/sh\necho \"$*\" >> /var/log/kubectl-calls\n",
    );
    sb.ok("chmod 755 /crust-installer/bin/kubectl");
    // The chart's drop-in: metrics off the host's shared port.
    sb.write(
        "/crust-installer/config.d/50-helm.yaml",
        "metrics:\n  address: 127.0.0.1:0\n",
    );
}

/// Runs the installer as the DaemonSet would, with the host at /.
fn installer(sb: &Sandbox, env: &str, command: &str) -> crust_e2e::systemd::Run {
    sb.sh(&format!(
        "env CRUST_HOST_ROOT=/ CRUST_HOST_EXEC=dbus {env} sh /crust-installer/install.sh {command}"
    ))
}

/// sha256 of each path (or "absent"), for byte-for-byte comparisons.
fn hashes(sb: &Sandbox, paths: &[&str]) -> Vec<String> {
    paths
        .iter()
        .map(|p| {
            sb.ok(&format!(
                "if [ -e {p} ]; then sha256sum {p}; else echo absent {p}; fi"
            ))
        })
        .collect()
}

/// Everything under the dirs an install may touch, to compare before/after.
fn tree(sb: &Sandbox) -> String {
    sb.ok("find /etc/systemd/system /etc/crust /opt/crust /var/lib/crust-install /etc/rancher /var/lib/kubelet 2>/dev/null | sort")
}

fn fake_kubeadm_node(sb: &Sandbox) {
    sb.write("/etc/systemd/system/kubelet.service", FAKE_KUBELET_UNIT);
    sb.write("/var/lib/kubelet/config.yaml", KUBELET_CONFIG);
    sb.write("/var/lib/kubelet/kubeadm-flags.env", KUBEADM_FLAGS);
    sb.ok("systemctl daemon-reload && systemctl start kubelet");
}

#[tokio::test]
async fn kubeadm_node_install_switch_rerun_upgrade_and_uninstall() {
    if let Some(why) = crust_e2e::systemd::unavailable() {
        eprintln!("SKIPPED: no systemd sandbox here: {why}");
        return;
    }
    let sb = Sandbox::boot();
    stage_installer(&sb);
    fake_kubeadm_node(&sb);
    let kubelet_files = [
        "/var/lib/kubelet/config.yaml",
        "/var/lib/kubelet/kubeadm-flags.env",
    ];
    let original = hashes(&sb, &kubelet_files);
    let tree_before = tree(&sb);
    let kubelet_pid = sb.main_pid("kubelet");

    // First without the switch: crust installed, kubelet untouched, and
    // the node not `ready` (kubelet does not run on crust yet).
    let api = "KUBERNETES_SERVICE_HOST=10.0.0.1 NODE_NAME=node1";
    let run = installer(&sb, &format!("{api} CRUST_VERSION=0.1.0"), "install");
    assert_eq!(run.code, 0, "{run:?}");
    assert_eq!(hashes(&sb, &kubelet_files), original, "no switch asked");
    assert_eq!(
        sb.ok("cat /var/log/kubectl-calls"),
        "label node node1 --overwrite crust.dev/runtime=installing\n\
         label node node1 --overwrite crust.dev/runtime=installed"
    );
    sb.ok("rm /var/log/kubectl-calls");

    let env = &format!("{api} CRUST_VERSION=0.1.0 CRUST_KUBELET_SWITCH=true");
    let run = installer(&sb, env, "install");
    assert_eq!(run.code, 0, "{run:?}");
    // Cordoned around the switch, `ready` after it.
    assert_eq!(
        sb.ok("cat /var/log/kubectl-calls"),
        "label node node1 --overwrite crust.dev/runtime=installing\n\
         cordon node1\n\
         uncordon node1\n\
         label node node1 --overwrite crust.dev/runtime=ready"
    );
    // crust runs from the versioned dir, as the unit.
    assert_eq!(sb.ok("readlink /opt/crust/current"), "0.1.0");
    assert!(sb.path("/opt/crust/0.1.0/bin/crust-shim").exists());
    assert_eq!(
        sb.ok("systemctl show -p ExecStart --value crust | grep -o 'path=[^ ;]*'"),
        "path=/opt/crust/current/bin/crustd"
    );
    assert_eq!(sb.ok("systemctl is-active crust"), "active");
    assert_eq!(sb.ok("systemctl is-enabled crust"), "enabled");
    let status = sb.ok("/opt/crust/current/bin/crustd status");
    assert!(status.contains("runtime ready: yes"), "{status}");
    // kubelet's driver is crust's.
    assert!(status.contains("cgroup driver: systemd"), "{status}");
    assert_eq!(installer(&sb, env, "probe").code, 0);
    // kubelet switched, its files backed up, and restarted.
    let config = sb.ok("cat /var/lib/kubelet/config.yaml");
    for line in [
        "containerRuntimeEndpoint: unix:///run/crust/crust.sock",
        "imageServiceEndpoint: unix:///run/crust/crust.sock",
        "runtimeRequestTimeout: 15m",
        "cgroupDriver: systemd",
    ] {
        assert!(config.lines().any(|l| l == line), "{line}:\n{config}");
    }
    let flags = sb.ok("cat /var/lib/kubelet/kubeadm-flags.env");
    assert!(
        flags.contains("--container-runtime-endpoint=unix:///run/crust/crust.sock --pod-infra"),
        "{flags}"
    );
    assert!(
        sb.path("/var/lib/crust-install/backup/var/lib/kubelet/config.yaml")
            .exists()
    );
    let switched_pid = sb.main_pid("kubelet");
    assert_ne!(switched_pid, kubelet_pid, "kubelet restarted");
    assert_eq!(sb.ok("systemctl is-active kubelet"), "active");

    // A second run changes nothing: no restart, no file rewritten.
    let installed = [
        "/opt/crust/0.1.0/bin/crustd",
        "/etc/systemd/system/crust.service",
        "/etc/crust/config.yaml",
        "/etc/crust/config.d/50-helm.yaml",
        "/etc/crust/config.d/40-kubelet.yaml",
        "/var/lib/kubelet/config.yaml",
    ];
    let stamp = |sb: &Sandbox| sb.ok(&format!("stat -c '%n %Y %i' {}", installed.join(" ")));
    let (files, crust_pid) = (stamp(&sb), sb.main_pid("crust"));
    let run = installer(&sb, env, "install");
    assert_eq!(run.code, 0, "{run:?}");
    assert_eq!(stamp(&sb), files, "rerun rewrote files");
    assert_eq!(sb.main_pid("crust"), crust_pid, "rerun restarted crust");
    assert_eq!(
        sb.main_pid("kubelet"),
        switched_pid,
        "rerun restarted kubelet"
    );

    // An upgrade: a new versioned dir, the link swapped, crustd restarted.
    let env2 = "CRUST_VERSION=0.2.0 CRUST_KUBELET_SWITCH=true";
    assert_ne!(installer(&sb, env2, "probe").code, 0, "not yet 0.2.0");
    let run = installer(&sb, env2, "install");
    assert_eq!(run.code, 0, "{run:?}");
    assert_eq!(sb.ok("readlink /opt/crust/current"), "0.2.0");
    assert_ne!(sb.main_pid("crust"), crust_pid, "upgrade restarted crust");
    assert_eq!(installer(&sb, env2, "probe").code, 0);

    // A pod on the installed crust (as kubelet would run on it now).
    sb.write(
        "/etc/cni/net.d/10-lo.conflist",
        r#"{"cniVersion":"1.0.0","name":"lo-only","plugins":[{"type":"loopback"}]}"#,
    );
    let mut c = crust_e2e::CriClient::connect(&sb.path("/run/crust/crust.sock")).await;
    c.pull(&crust_e2e::image_ref("crust-test/busybox:latest"))
        .await
        .unwrap();
    let pod_cfg = crust_e2e::cri::PodSandboxConfig {
        metadata: Some(crust_e2e::cri::PodSandboxMetadata {
            name: "left".into(),
            uid: "left-uid".into(),
            namespace: "default".into(),
            attempt: 0,
        }),
        linux: Some(crust_e2e::cri::LinuxPodSandboxConfig {
            cgroup_parent: "kubepods-besteffort-podleft.slice".into(),
            ..Default::default()
        }),
        ..Default::default()
    };
    let pod = c.run_pod(&pod_cfg).await;
    c.run_container(
        &pod,
        &pod_cfg,
        crust_e2e::container_config(
            "sleeper",
            &crust_e2e::image_ref("crust-test/busybox:latest"),
            &["sleep", "3600"],
        ),
    )
    .await;
    drop(c);

    // Uninstall restores the node, and removes crust's pods and data.
    let run = installer(&sb, env2, "uninstall");
    assert_eq!(run.code, 0, "{run:?}");
    assert_eq!(
        hashes(&sb, &kubelet_files),
        original,
        "kubelet files restored"
    );
    assert_ne!(sb.main_pid("kubelet"), switched_pid, "kubelet restarted");
    assert_eq!(sb.ok("systemctl is-active kubelet"), "active");
    assert_ne!(sb.sh("systemctl is-active crust").stdout, "active");
    assert_eq!(
        tree(&sb),
        tree_before,
        "everything the install added is gone"
    );
    assert_eq!(installer(&sb, env2, "probe-uninstalled").code, 0);
    // The pod's `sleep 3600` and crust's processes (the fake kubelet is
    // a `sleep infinity`).
    let left = sb.ok(
        "for p in /proc/[0-9]*; do tr '\\0' ' ' < $p/cmdline 2>/dev/null; echo; done \
         | grep -E '^(sleep 3600|[^ ]*crustd|[^ ]*crust-shim)' || true",
    );
    assert!(
        left.is_empty(),
        "processes left: {left}\n{}",
        sb.sh("journalctl -u crust-uninstall --no-pager | tail -20; ps -ef")
            .stdout
    );
    let mounts = sb.ok("grep -E ' /(run|var/lib)/crust/' /proc/self/mountinfo || true");
    assert!(mounts.is_empty(), "mounts left: {mounts}");
    let data = sb.ok("ls -A /var/lib/crust; ls -d /run/crust 2>/dev/null || true");
    assert!(data.is_empty(), "crust's data left: {data}");
    assert!(
        !sb.path("/etc/systemd/system/crust-uninstall.service")
            .exists(),
        "the uninstall unit removes itself"
    );
}

#[test]
fn k3s_node_switch_and_a_distribution_that_does_not_match_is_refused() {
    if let Some(why) = crust_e2e::systemd::unavailable() {
        eprintln!("SKIPPED: no systemd sandbox here: {why}");
        return;
    }
    let sb = Sandbox::boot();
    stage_installer(&sb);
    // No kubelet at all: auto-detection refuses to guess.
    let run = installer(
        &sb,
        "CRUST_VERSION=0.1.0 CRUST_KUBELET_SWITCH=true",
        "install",
    );
    assert_ne!(run.code, 0);
    assert!(
        run.stderr.contains("cannot tell how kubelet runs"),
        "{run:?}"
    );
    installer(&sb, "", "uninstall");

    sb.write("/etc/systemd/system/k3s.service", FAKE_KUBELET_UNIT);
    sb.ok("systemctl daemon-reload && systemctl start k3s");
    let tree_before = tree(&sb);
    // A distribution that does not match the node is refused.
    let run = installer(
        &sb,
        "CRUST_VERSION=0.1.0 CRUST_KUBELET_SWITCH=true CRUST_KUBELET_DISTRIBUTION=kubeadm",
        "install",
    );
    assert_ne!(run.code, 0);
    assert!(run.stderr.contains("looks like k3s"), "{run:?}");
    assert!(
        !sb.path("/etc/rancher/k3s/config.yaml").exists(),
        "nothing edited"
    );
    installer(&sb, "", "uninstall");

    let k3s_pid = sb.main_pid("k3s");
    let env = "CRUST_VERSION=0.1.0 CRUST_KUBELET_SWITCH=true";
    let run = installer(&sb, env, "install");
    assert_eq!(run.code, 0, "{run:?}");
    assert_eq!(
        sb.ok("cat /etc/rancher/k3s/config.yaml"),
        "container-runtime-endpoint: unix:///run/crust/crust.sock"
    );
    assert_ne!(sb.main_pid("k3s"), k3s_pid, "k3s restarted");
    assert_eq!(installer(&sb, env, "probe").code, 0);
    let run = installer(&sb, env, "uninstall");
    assert_eq!(run.code, 0, "{run:?}");
    assert!(
        !sb.path("/etc/rancher/k3s/config.yaml").exists(),
        "a config the switch created is removed"
    );
    assert_eq!(tree(&sb), tree_before);
}

/// The installer image as the DaemonSet runs it, by the node's existing
/// runtime (Debian's containerd, as on a containerd node): privileged, in
/// the host's PID namespace, / at /host, host commands through nsenter.
#[test]
fn the_installer_image_run_by_containerd_installs_and_removes_crust() {
    if let Some(why) = crust_e2e::systemd::unavailable() {
        eprintln!("SKIPPED: no systemd sandbox here: {why}");
        return;
    }
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let registry = crust_e2e::test_images()["registry"]
        .as_str()
        .unwrap()
        .to_string();
    let version = "0.1.0-e2e";
    let built = std::process::Command::new(repo.join("hack/build-installer-image.py"))
        .arg(&registry)
        .arg("--bin")
        .arg(crust_e2e::crustd_binary().parent().unwrap())
        .args(["--strip", "--version", version])
        .output()
        .unwrap();
    assert!(
        built.status.success(),
        "build-installer-image.py: {}",
        String::from_utf8_lossy(&built.stderr)
    );
    let image = format!("{registry}/crust/installer:{version}");

    let sb = Sandbox::boot();
    sb.write(
        "/etc/containerd-e2e.toml",
        "version = 2\nroot = \"/var/lib/containerd-e2e\"\nstate = \"/run/containerd-e2e\"\n\
         [grpc]\n  address = \"/run/containerd-e2e/containerd.sock\"\n",
    );
    sb.write(
        "/etc/crust-e2e/config.d/50-helm.yaml",
        "metrics:\n  address: 127.0.0.1:0\n",
    );
    sb.ok(
        "systemd-run --unit=containerd-e2e /usr/bin/containerd --config /etc/containerd-e2e.toml",
    );
    let ctr = "ctr -a /run/containerd-e2e/containerd.sock";
    let mut up = false;
    for _ in 0..100 {
        if sb.sh(&format!("{ctr} version")).code == 0 {
            up = true;
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    assert!(up, "containerd did not start");
    sb.ok(&format!("{ctr} image pull --plain-http {image}"));
    // overlayfs cannot sit on the sandbox's overlay root: native snapshots.
    // Both of the chart's host access modes: `dbus` (the default) has only
    // the installer's own host paths and the host's /run/systemd, in the
    // host's PID namespace (systemd's private socket refuses a peer whose
    // PID it cannot see), unprivileged; `nsenter` is privileged with / at
    // /host.
    sb.ok("mkdir -p /opt/crust /etc/crust /var/lib/crust-install /run/crust");
    let mode = std::cell::Cell::new("dbus");
    let run = |name: &str, command: &str| {
        let access = if mode.get() == "dbus" {
            let mut m: String = [
                "/opt/crust",
                "/etc/crust",
                "/etc/systemd/system",
                "/var/lib/crust-install",
                "/run/crust",
            ]
            .iter()
            .map(|p| format!(" --mount type=bind,src={p},dst=/host{p},options=rbind:rw"))
            .collect();
            m.push_str(" --mount type=bind,src=/run/systemd,dst=/run/systemd,options=rbind:rw");
            m
        } else {
            " --privileged --mount type=bind,src=/,dst=/host,options=rbind:rw".to_string()
        };
        sb.sh(&format!(
            "{ctr} run --rm --snapshotter native --net-host \
             --with-ns pid:/proc/1/ns/pid {access} \
             --mount type=bind,src=/etc/crust-e2e/config.d,dst=/crust-installer/config.d,options=rbind:ro \
             --env CRUST_HOST_EXEC={} --env CRUST_HOST_ROOT=/host \
             {image} {name} /crust-installer/install.sh {command}",
            mode.get()
        ))
    };
    for access in ["dbus", "nsenter"] {
        mode.set(access);
        installed_and_removed(&sb, &run, version, access);
    }
}

fn installed_and_removed(
    sb: &Sandbox,
    run: &dyn Fn(&str, &str) -> crust_e2e::systemd::Run,
    version: &str,
    access: &str,
) {
    let out = run("install", "install");
    assert_eq!(out.code, 0, "{access}: {out:?}");
    assert!(
        out.stderr
            .contains(&format!("crust {version} installed and ready")),
        "{out:?}"
    );
    // On the host: the unit from the image's binaries, serving CRI.
    assert_eq!(sb.ok("systemctl is-active crust"), "active");
    assert_eq!(sb.ok("readlink /opt/crust/current"), version);
    let status = sb.ok("/opt/crust/current/bin/crustd status");
    assert!(status.contains("runtime ready: yes"), "{status}");
    assert_eq!(run("probe", "probe").code, 0, "the probe passes");
    // The chart's drop-in is in place.
    assert_eq!(
        sb.ok("cat /etc/crust/config.d/50-helm.yaml"),
        "metrics:\n  address: 127.0.0.1:0"
    );

    let out = run("uninstall", "uninstall");
    assert_eq!(out.code, 0, "{access}: {out:?}");
    // The dirs the mounts need (kubelet's hostPath DirectoryOrCreate).
    sb.ok("mkdir -p /opt/crust /etc/crust /var/lib/crust-install /run/crust");
    let gone = run("gone", "probe-uninstalled");
    assert_eq!(gone.code, 0, "{access}: {gone:?}");
    assert_ne!(sb.sh("systemctl is-active crust").stdout, "active");
    // Everything in the dirs is gone; the dirs themselves are the
    // hostPath mounts' (DirectoryOrCreate), left for the next install.
    let left = sb.ok(
        "find /opt/crust /etc/crust /var/lib/crust-install -mindepth 1; \
         ls /etc/systemd/system /etc/systemd/system/multi-user.target.wants 2>/dev/null \
         | grep -E '^crust(\\.service|-kubelet)' || true",
    );
    assert!(left.is_empty(), "{access}: left: {left}");
    sb.ok("mkdir -p /opt/crust /etc/crust /var/lib/crust-install /run/crust");
}
