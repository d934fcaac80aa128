//! Pod networking through Debian's real CNI plugins (bridge, host-local,
//! portmap, loopback). Traffic goes only to 127.0.0.1 and to the pods
//! these tests create; every bridge, rule and netns is removed after.

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use crust_e2e::{Crustd, CrustdOptions, container_config, cri, image_ref, pod_config};
use nix::sys::signal::Signal;

/// These tests share iptables and the bridge plugin's sysctls.
static LOCK: Mutex<()> = Mutex::new(());

fn sh(cmd: &str) -> String {
    let out = std::process::Command::new("sh")
        .arg("-c")
        .arg(cmd)
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).to_string()
}

fn nat_chains() -> BTreeSet<String> {
    sh("iptables -w -t nat -S")
        .lines()
        .filter_map(|l| l.strip_prefix("-N "))
        .map(str::to_string)
        .collect()
}

/// A bridge network of the test's own, and what it changes on the host,
/// put back on drop.
struct TestNet {
    dir: tempfile::TempDir,
    bridge: String,
    subnet_prefix: String,
    chains_before: BTreeSet<String>,
    ip_forward: String,
    _lock: std::sync::MutexGuard<'static, ()>,
}

impl TestNet {
    fn new(n: u32) -> TestNet {
        let lock = LOCK.lock().unwrap_or_else(|e| e.into_inner());
        let pid = std::process::id();
        let dir = tempfile::tempdir_in("/var/tmp").unwrap();
        let bridge = format!("crnet{}{n}", pid % 10000);
        let third = (pid % 40) * 6 + n;
        let subnet_prefix = format!("10.124.{third}.");
        let conf = serde_json::json!({
            "cniVersion": "1.0.0",
            "name": "crust-e2e",
            "plugins": [
                {"type": "bridge", "bridge": bridge, "isGateway": true, "ipMasq": false,
                 "ipam": {"type": "host-local", "subnet": format!("{subnet_prefix}0/24"),
                          "dataDir": dir.path().join("ipam").display().to_string(),
                          "routes": [{"dst": "0.0.0.0/0"}]}},
                {"type": "portmap", "capabilities": {"portMappings": true}, "snat": true},
                {"type": "loopback"}
            ]
        });
        std::fs::create_dir_all(dir.path().join("conf")).unwrap();
        std::fs::write(dir.path().join("conf/10-bridge.conflist"), conf.to_string()).unwrap();
        TestNet {
            bridge,
            subnet_prefix,
            chains_before: nat_chains(),
            ip_forward: std::fs::read_to_string("/proc/sys/net/ipv4/ip_forward")
                .unwrap_or_default(),
            dir,
            _lock: lock,
        }
    }

    fn crustd_config(&self) -> String {
        format!(
            "cni:\n  conf_dir: {}\n  bin_dirs: [/usr/lib/cni]\n",
            self.dir.path().join("conf").display()
        )
    }

    fn allocated(&self) -> Vec<String> {
        let ipam = self.dir.path().join("ipam/crust-e2e");
        std::fs::read_dir(ipam)
            .map(|d| {
                d.flatten()
                    .map(|e| e.file_name().to_string_lossy().to_string())
                    .filter(|n| n.starts_with("10."))
                    .collect()
            })
            .unwrap_or_default()
    }
}

impl Drop for TestNet {
    fn drop(&mut self) {
        let _ = sh(&format!("ip link del {} 2>/dev/null", self.bridge));
        // portmap's top-level chains, when this test made them and they
        // hold no pod's rule any more.
        let rules = sh("iptables -w -t nat -S");
        let dnat_empty = !rules
            .lines()
            .any(|l| l.starts_with("-A CNI-HOSTPORT-DNAT "));
        let top = [
            "CNI-HOSTPORT-DNAT",
            "CNI-HOSTPORT-MASQ",
            "CNI-HOSTPORT-SETMARK",
        ];
        if dnat_empty && !self.chains_before.contains("CNI-HOSTPORT-DNAT") {
            for rule in rules.lines() {
                if let Some(spec) = rule.strip_prefix("-A ") {
                    let chain = spec.split(' ').next().unwrap_or("");
                    if ["PREROUTING", "OUTPUT", "POSTROUTING"].contains(&chain)
                        && top.iter().any(|c| spec.ends_with(&format!("-j {c}")))
                    {
                        let _ = sh(&format!("iptables -w -t nat -D {spec}"));
                    }
                }
            }
            for c in top {
                if !self.chains_before.contains(c) {
                    let _ = sh(&format!(
                        "iptables -w -t nat -F {c} 2>/dev/null; iptables -w -t nat -X {c} 2>/dev/null"
                    ));
                }
            }
        }
        let _ = std::fs::write("/proc/sys/net/ipv4/ip_forward", self.ip_forward.trim());
    }
}

fn http_get(addr: &str) -> String {
    for _ in 0..50 {
        if let Ok(mut stream) =
            std::net::TcpStream::connect_timeout(&addr.parse().unwrap(), Duration::from_secs(2))
        {
            let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
            let _ = write!(stream, "GET / HTTP/1.0\r\nHost: pod\r\n\r\n");
            let mut out = String::new();
            let _ = stream.read_to_string(&mut out);
            if !out.is_empty() {
                return out;
            }
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("no HTTP answer from {addr}");
}

async fn pod_ip(c: &mut crust_e2e::CriClient, pod: &str) -> String {
    c.runtime
        .pod_sandbox_status(cri::PodSandboxStatusRequest {
            pod_sandbox_id: pod.to_string(),
            verbose: false,
        })
        .await
        .unwrap()
        .into_inner()
        .status
        .unwrap()
        .network
        .unwrap()
        .ip
}

#[tokio::test(flavor = "multi_thread")]
async fn pods_get_addresses_ports_and_dns() {
    let net = TestNet::new(1);
    let metrics_port = crust_e2e::free_port();
    let crustd = Crustd::start_with(CrustdOptions {
        extra_config: format!(
            "{}metrics:\n  address: 127.0.0.1:{metrics_port}\n",
            net.crustd_config()
        ),
        ..Default::default()
    })
    .await;
    let mut c = crustd.client().await;
    c.pull(&image_ref("crust-test/web:latest")).await.unwrap();
    c.pull(&image_ref("crust-test/busybox:latest"))
        .await
        .unwrap();
    let host_port = crust_e2e::free_port();
    let mut web_cfg = pod_config(&crustd, "web");
    web_cfg.port_mappings = vec![cri::PortMapping {
        protocol: cri::Protocol::Tcp as i32,
        container_port: 80,
        host_port: host_port as i32,
        host_ip: String::new(),
    }];
    let web = c.run_pod(&web_cfg).await;
    let mut cfg = container_config("httpd", &image_ref("crust-test/web:latest"), &[]);
    cfg.command.clear();
    c.run_container(&web, &web_cfg, cfg).await;
    let mut client_cfg = pod_config(&crustd, "client");
    client_cfg.dns_config = Some(cri::DnsConfig {
        servers: vec!["10.96.0.10".into()],
        searches: vec!["e2e.svc.cluster.local".into(), "svc.cluster.local".into()],
        options: vec!["ndots:5".into()],
    });
    let client = c.run_pod(&client_cfg).await;
    let client_ctr = c
        .run_container(
            &client,
            &client_cfg,
            container_config(
                "sh",
                &image_ref("crust-test/busybox:latest"),
                &["sleep", "3600"],
            ),
        )
        .await;
    let web_ip = pod_ip(&mut c, &web).await;
    let client_ip = pod_ip(&mut c, &client).await;
    assert!(web_ip.starts_with(&net.subnet_prefix), "{web_ip}");
    assert!(client_ip.starts_with(&net.subnet_prefix), "{client_ip}");
    assert_ne!(web_ip, client_ip);
    // Host to pod IP, host port on loopback, pod to pod.
    let page = tokio::task::spawn_blocking({
        let addr = format!("{web_ip}:80");
        move || http_get(&addr)
    })
    .await
    .unwrap();
    assert!(page.ends_with("crust-web-ok\n"), "{page}");
    let page = tokio::task::spawn_blocking(move || http_get(&format!("127.0.0.1:{host_port}")))
        .await
        .unwrap();
    assert!(page.ends_with("crust-web-ok\n"), "{page}");
    let fetched = c
        .exec_sync(
            &client_ctr,
            &["wget", "-qO-", &format!("http://{web_ip}/")],
            20,
        )
        .await
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&fetched.stdout), "crust-web-ok\n");
    // The pages went out of the web pod's eth0, and ListPodSandboxMetrics
    // counts them there (labelled with the pod and interface).
    let metrics = c
        .runtime
        .list_pod_sandbox_metrics(cri::ListPodSandboxMetricsRequest {})
        .await
        .unwrap()
        .into_inner()
        .pod_metrics;
    let web_metrics = metrics.iter().find(|p| p.pod_sandbox_id == web).unwrap();
    let counter = |name: &str| {
        web_metrics
            .metrics
            .iter()
            .find(|m| m.name == name && m.label_values.contains(&"eth0".to_string()))
            .unwrap_or_else(|| panic!("no {name} for eth0: {web_metrics:?}"))
            .value
            .as_ref()
            .unwrap()
            .value
    };
    assert!(counter("container_network_transmit_bytes_total") > 3 * 13);
    assert!(counter("container_network_transmit_packets_total") >= 3);
    assert!(counter("container_network_receive_bytes_total") > 0);
    let eth0 = web_metrics
        .metrics
        .iter()
        .find(|m| m.name == "container_network_receive_bytes_total")
        .unwrap();
    assert_eq!(
        eth0.label_values,
        [web.clone(), "eth0".into(), "e2e".into(), "web".into()]
    );
    // DNS and host files as kubelet expects.
    let resolv = c
        .exec_sync(&client_ctr, &["cat", "/etc/resolv.conf"], 10)
        .await
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&resolv.stdout),
        "search e2e.svc.cluster.local svc.cluster.local\nnameserver 10.96.0.10\noptions ndots:5\n"
    );
    let hostname = c
        .exec_sync(&client_ctr, &["cat", "/etc/hostname"], 10)
        .await
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&hostname.stdout), "client\n");
    let hosts = c
        .exec_sync(&client_ctr, &["cat", "/etc/hosts"], 10)
        .await
        .unwrap();
    assert!(String::from_utf8_lossy(&hosts.stdout).contains("client"));
    // Stop releases the IP and the port mapping.
    assert_eq!(net.allocated().len(), 2);
    assert!(sh("iptables -w -t nat -S").contains(&format!("--dport {host_port}")));
    c.runtime
        .stop_pod_sandbox(cri::StopPodSandboxRequest {
            pod_sandbox_id: web.clone(),
        })
        .await
        .unwrap();
    assert_eq!(net.allocated(), vec![client_ip.clone()]);
    assert!(
        !sh("iptables -w -t nat -S").contains(&format!("--dport {host_port}")),
        "portmap rule left behind"
    );
    for pod in [web, client] {
        c.remove_pod(&pod).await;
    }
    assert!(net.allocated().is_empty());
    // Every ADD and DEL is counted and timed.
    let metrics =
        tokio::task::spawn_blocking(move || crust_e2e::http_get(metrics_port, "/metrics"))
            .await
            .unwrap();
    assert!(
        metrics.contains(r#"crust_network_plugin_operations_total{operation="add"} 2"#),
        "{metrics}"
    );
    assert!(
        metrics.contains(r#"crust_network_plugin_operations_total{operation="del"} 2"#),
        "{metrics}"
    );
    assert!(metrics.contains("crust_network_plugin_operation_duration_seconds_count"));
}

#[tokio::test(flavor = "multi_thread")]
async fn network_readiness_follows_the_config_dir() {
    let dir = tempfile::tempdir_in("/var/tmp").unwrap();
    let conf = dir.path().join("net.d");
    std::fs::create_dir_all(&conf).unwrap();
    let crustd = Crustd::start_with(CrustdOptions {
        extra_config: format!(
            "cni:\n  conf_dir: {}\n  bin_dirs: [/usr/lib/cni]\n",
            conf.display()
        ),
        ..Default::default()
    })
    .await;
    let mut c = crustd.client().await;
    let network = |s: cri::StatusResponse| {
        s.status
            .unwrap()
            .conditions
            .into_iter()
            .find(|c| c.r#type == "NetworkReady")
            .unwrap()
    };
    let status = network(
        c.runtime
            .status(cri::StatusRequest { verbose: false })
            .await
            .unwrap()
            .into_inner(),
    );
    assert!(!status.status);
    assert!(
        status.message.contains(conf.to_str().unwrap()),
        "{status:?}"
    );
    let err = c
        .runtime
        .run_pod_sandbox(cri::RunPodSandboxRequest {
            config: Some(pod_config(&crustd, "nonet")),
            runtime_handler: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::FailedPrecondition, "{err:?}");
    assert!(err.message().contains("network"), "{}", err.message());
    std::fs::write(conf.join("10-broken.conflist"), "{ not json").unwrap();
    let status = network(
        c.runtime
            .status(cri::StatusRequest { verbose: false })
            .await
            .unwrap()
            .into_inner(),
    );
    assert!(!status.status);
    assert!(status.message.contains("10-broken.conflist"), "{status:?}");
    // A valid config makes it ready without a restart.
    std::fs::write(
        conf.join("20-lo.conflist"),
        r#"{"cniVersion":"1.0.0","name":"lo","plugins":[{"type":"loopback"}]}"#,
    )
    .unwrap();
    let status = network(
        c.runtime
            .status(cri::StatusRequest { verbose: false })
            .await
            .unwrap()
            .into_inner(),
    );
    assert!(status.status, "{status:?}");
    // Host-network pods need no CNI at all: shown by pods.rs.
}

#[tokio::test(flavor = "multi_thread")]
async fn a_failing_plugin_fails_the_pod_and_leaves_nothing() {
    let dir = tempfile::tempdir_in("/var/tmp").unwrap();
    let bin = dir.path().join("bin");
    let conf = dir.path().join("net.d");
    std::fs::create_dir_all(&bin).unwrap();
    std::fs::create_dir_all(&conf).unwrap();
    let plugin = bin.join("crust-broken");
    std::fs::write(
        &plugin,
        "#!/bin/sh\nif [ \"$CNI_COMMAND\" = ADD ]; then echo '{\"cniVersion\":\"1.0.0\",\"code\":11,\"msg\":\"no more addresses in pool crust-test\"}'; exit 1; fi\nexit 0\n",
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&plugin, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::write(
        conf.join("10-broken.conflist"),
        r#"{"cniVersion":"1.0.0","name":"broken","plugins":[{"type":"crust-broken"}]}"#,
    )
    .unwrap();
    let crustd = Crustd::start_with(CrustdOptions {
        extra_config: format!(
            "cni:\n  conf_dir: {}\n  bin_dirs: [{}]\n",
            conf.display(),
            bin.display()
        ),
        ..Default::default()
    })
    .await;
    let mut c = crustd.client().await;
    let err = c
        .runtime
        .run_pod_sandbox(cri::RunPodSandboxRequest {
            config: Some(pod_config(&crustd, "broken")),
            runtime_handler: String::new(),
        })
        .await
        .unwrap_err();
    assert!(
        err.message()
            .contains("no more addresses in pool crust-test"),
        "{}",
        err.message()
    );
    assert!(
        c.runtime
            .list_pod_sandbox(cri::ListPodSandboxRequest { filter: None })
            .await
            .unwrap()
            .into_inner()
            .items
            .is_empty()
    );
    let pods_dir = crustd.state().join("pods");
    let left: Vec<PathBuf> = std::fs::read_dir(&pods_dir)
        .map(|d| d.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    assert!(left.is_empty(), "half-made sandbox left: {left:?}");
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(
        !mounts.contains(pods_dir.to_str().unwrap()),
        "netns or shm mount left behind"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn teardown_survives_a_crustd_restart() {
    let net = TestNet::new(2);
    let mut crustd = Crustd::start_with(CrustdOptions {
        extra_config: net.crustd_config(),
        ..Default::default()
    })
    .await;
    let mut c = crustd.client().await;
    c.pull(&image_ref("crust-test/busybox:latest"))
        .await
        .unwrap();
    let cfg = pod_config(&crustd, "restart");
    let pod = c.run_pod(&cfg).await;
    let ip = pod_ip(&mut c, &pod).await;
    assert_eq!(net.allocated(), vec![ip.clone()]);
    crustd.stop_with(Signal::SIGKILL);
    crustd.spawn(&[]).await;
    let mut c = crustd.client().await;
    assert_eq!(pod_ip(&mut c, &pod).await, ip);
    c.runtime
        .stop_pod_sandbox(cri::StopPodSandboxRequest {
            pod_sandbox_id: pod.clone(),
        })
        .await
        .unwrap();
    assert!(net.allocated().is_empty(), "IP still allocated after Stop");
    let netns = crustd.state().join("pods").join(&pod).join("ns/net");
    assert!(!netns.exists(), "the pod's netns outlived Stop");
    c.remove_pod(&pod).await;
    let _ = Path::new("/");
}

/// crustd SIGKILLed while pods' networks are being set up: after the
/// restart and the removal of every pod it reports, no address is left
/// allocated (the attachment is stored before ADD runs, so the start-up
/// sweep can DEL an ADD that the crash cut short).
#[tokio::test]
async fn a_crash_during_network_setup_leaks_no_address() {
    let net = TestNet::new(3);
    let mut crustd = Crustd::start_with(CrustdOptions {
        extra_config: net.crustd_config(),
        ..Default::default()
    })
    .await;
    let mut c = crustd.client().await;
    c.pull(&image_ref("crust-test/busybox:latest"))
        .await
        .unwrap();
    let mut tasks = crustd.run_pods_in_background("crash", 6).await;
    // Long enough for some ADDs to be running, not all to be done.
    tokio::time::sleep(std::time::Duration::from_millis(120)).await;
    crustd.stop_with(Signal::SIGKILL);
    while tasks.join_next().await.is_some() {}
    crustd.spawn(&[]).await;
    let mut c = crustd.client().await;
    let pods = c.list_pods().await;
    for pod in pods {
        c.remove_pod(&pod.id).await;
    }
    // Half-made pods are undone in the background, soon after start.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
    while !net.allocated().is_empty() && std::time::Instant::now() < deadline {
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(net.allocated(), Vec::<String>::new(), "{}", crustd.log());
}

async fn status_pod_cidrs(c: &mut crust_e2e::CriClient) -> Vec<String> {
    let status = c
        .runtime
        .status(cri::StatusRequest { verbose: true })
        .await
        .unwrap()
        .into_inner();
    serde_json::from_str(&status.info["podCIDRs"]).unwrap()
}

/// kubelet's UpdateRuntimeConfig pod CIDR reaches a CNI plugin that
/// declares the `ipRanges` capability (host-local allocates from it in
/// place of its own subnet), survives a crustd restart, and nonsense is
/// refused.
#[tokio::test(flavor = "multi_thread")]
async fn the_pod_cidr_from_update_runtime_config_becomes_the_pods_address_range() {
    let net = TestNet::new(5);
    // host-local has no range of its own: it allocates only from the
    // ipRanges crust passes (it would add them to a configured subnet as
    // a second range of the same family, which bridge refuses).
    let conf = serde_json::json!({
        "cniVersion": "1.0.0",
        "name": "crust-e2e",
        "plugins": [
            {"type": "bridge", "bridge": net.bridge, "isGateway": true, "ipMasq": false,
             "capabilities": {"ipRanges": true},
             "ipam": {"type": "host-local",
                      "dataDir": net.dir.path().join("ipam").display().to_string()}},
            {"type": "loopback"}
        ]
    });
    std::fs::write(
        net.dir.path().join("conf/10-bridge.conflist"),
        conf.to_string(),
    )
    .unwrap();
    let mut crustd = Crustd::start_with(CrustdOptions {
        extra_config: net.crustd_config(),
        ..Default::default()
    })
    .await;
    let mut c = crustd.client().await;
    assert!(status_pod_cidrs(&mut c).await.is_empty());

    let cidr = format!("{}0/24", net.subnet_prefix);
    let update = |pod_cidr: String| cri::UpdateRuntimeConfigRequest {
        runtime_config: Some(cri::RuntimeConfig {
            network_config: Some(cri::NetworkConfig { pod_cidr }),
        }),
    };
    for bad in ["10.1.2.3", "10.0.0.0/40", "10.0.0.0/8,10.1.0.0/16"] {
        let err = c
            .runtime
            .update_runtime_config(update(bad.to_string()))
            .await
            .unwrap_err();
        assert_eq!(err.code(), tonic::Code::InvalidArgument, "{bad}: {err:?}");
        assert!(err.message().contains("pod_cidr"), "{}", err.message());
    }
    c.runtime
        .update_runtime_config(update(cidr.clone()))
        .await
        .unwrap();
    assert_eq!(status_pod_cidrs(&mut c).await, vec![cidr.clone()]);

    // Restarted, crustd still knows the CIDR before kubelet resends it.
    drop(c);
    assert_eq!(crustd.stop_with(Signal::SIGTERM), Some(0));
    crustd.spawn(&[]).await;
    let mut c = crustd.client().await;
    assert_eq!(status_pod_cidrs(&mut c).await, vec![cidr.clone()]);

    let cfg = pod_config(&crustd, "cidr");
    let pod = c.run_pod(&cfg).await;
    let ip = pod_ip(&mut c, &pod).await;
    assert!(
        ip.starts_with(&net.subnet_prefix),
        "pod address {ip} is not from the pod CIDR {cidr}"
    );
    c.runtime
        .stop_pod_sandbox(cri::StopPodSandboxRequest {
            pod_sandbox_id: pod.clone(),
        })
        .await
        .unwrap();
    c.remove_pod(&pod).await;
}
