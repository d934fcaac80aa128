//! crust-cni against the real plugins of Debian's containernetworking-plugins
//! (/usr/lib/cni): bridge + host-local + portmap + loopback in network
//! namespaces made here. Needs root, `ip`, `iptables`, `nft` and busybox;
//! each test says "skipped" and passes without them.
//!
//! Every test takes one lock (they share iptables and ip_forward) and
//! leaves the host as it found it: Drop guards DEL what was ADDed, delete
//! the netns and the bridge, remove portmap's top-level chains and the nft
//! tables when this test created them and they are empty, restore
//! net.ipv4.ip_forward (the bridge plugin sets it), remove temp dirs.
//! Names carry this process's pid; traffic goes only to the test's own
//! namespaces and to 127.0.0.1.

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crust_cni::{Attachment, Cni, CniError, NetworkList, PodNetwork, PortMapping, Protocol};
use serde_json::json;

const PLUGIN_DIR: &str = "/usr/lib/cni";

static LOCK: Mutex<()> = Mutex::new(());

fn pid() -> u32 {
    std::process::id()
}

/// Runs a command; Ok(stdout) on success, Err(stdout+stderr) otherwise.
fn run(args: &[&str]) -> Result<String, String> {
    let out = Command::new(args[0])
        .args(&args[1..])
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("{}: {e}", args[0]))?;
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    if out.status.success() {
        Ok(text)
    } else {
        Err(format!(
            "{args:?}: {}{text}{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

/// Why these tests cannot run here, if they cannot.
fn skip_reason() -> Option<String> {
    if !nix::unistd::geteuid().is_root() {
        return Some("not root".into());
    }
    for p in ["bridge", "host-local", "portmap", "loopback"] {
        if !Path::new(PLUGIN_DIR).join(p).exists() {
            return Some(format!(
                "{PLUGIN_DIR}/{p} missing (containernetworking-plugins)"
            ));
        }
    }
    for tool in [
        &["ip", "-V"][..],
        &["iptables", "-V"],
        &["nft", "-v"],
        &["busybox", "true"],
    ] {
        if run(tool).is_err() {
            return Some(format!("{} missing", tool[0]));
        }
    }
    None
}

macro_rules! require_root_and_plugins {
    () => {
        if let Some(why) = skip_reason() {
            eprintln!("skipped: {why}");
            return;
        }
    };
}

// ---------------------------------------------------------------- guards

/// Host-wide state the plugins change, restored on drop. Holds the lock
/// that serializes these tests.
struct HostGuard {
    ip_forward: String,
    nat_chains: BTreeSet<String>,
    nft_tables: BTreeSet<String>,
    _lock: MutexGuard<'static, ()>,
}

const IP_FORWARD: &str = "/proc/sys/net/ipv4/ip_forward";
const PORTMAP_TOP_CHAINS: [&str; 3] = [
    "CNI-HOSTPORT-DNAT",
    "CNI-HOSTPORT-MASQ",
    "CNI-HOSTPORT-SETMARK",
];

fn nat_chains() -> BTreeSet<String> {
    run(&["iptables", "-w", "-t", "nat", "-S"])
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.strip_prefix("-N "))
        .map(str::to_string)
        .collect()
}

fn nat_rules() -> String {
    run(&["iptables", "-w", "-t", "nat", "-S"]).unwrap_or_default()
}

fn nft_tables() -> BTreeSet<String> {
    run(&["nft", "list", "tables"])
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.strip_prefix("table "))
        .map(str::to_string)
        .collect()
}

impl HostGuard {
    fn new() -> HostGuard {
        let lock = LOCK.lock().unwrap_or_else(|e| e.into_inner());
        HostGuard {
            ip_forward: std::fs::read_to_string(IP_FORWARD).unwrap_or_default(),
            nat_chains: nat_chains(),
            nft_tables: nft_tables(),
            _lock: lock,
        }
    }
}

impl Drop for HostGuard {
    fn drop(&mut self) {
        // portmap's top-level chains: only when this test made them and no
        // pod uses them any more (CNI-HOSTPORT-DNAT has no rule left).
        let now = nat_chains();
        let ours =
            !self.nat_chains.contains("CNI-HOSTPORT-DNAT") && now.contains("CNI-HOSTPORT-DNAT");
        let dnat_empty = !nat_rules()
            .lines()
            .any(|l| l.starts_with("-A CNI-HOSTPORT-DNAT "));
        if ours && dnat_empty {
            for rule in nat_rules().lines() {
                let Some(spec) = rule.strip_prefix("-A ") else {
                    continue;
                };
                let jumps_to_top = PORTMAP_TOP_CHAINS
                    .iter()
                    .any(|c| spec.ends_with(&format!("-j {c}")));
                let (chain, _) = spec.split_once(' ').unwrap_or((spec, ""));
                if jumps_to_top && ["PREROUTING", "OUTPUT", "POSTROUTING"].contains(&chain) {
                    // iptables -S prints quoted comments; let the shell unquote.
                    let _ = run(&["sh", "-c", &format!("iptables -w -t nat -D {spec}")]);
                }
            }
            for c in PORTMAP_TOP_CHAINS {
                if !self.nat_chains.contains(c) && now.contains(c) {
                    let _ = run(&["iptables", "-w", "-t", "nat", "-F", c]);
                    let _ = run(&["iptables", "-w", "-t", "nat", "-X", c]);
                }
            }
        }
        // nft tables iptables-nft made for this test, when left empty.
        for table in nft_tables().difference(&self.nft_tables) {
            let mut words = table.split_whitespace();
            let (Some(family), Some(name)) = (words.next(), words.next()) else {
                continue;
            };
            let listing = run(&["nft", "list", "table", family, name]).unwrap_or_default();
            let has_rules = listing.lines().map(str::trim).any(|l| {
                !(l.is_empty()
                    || l.starts_with("table ")
                    || l.starts_with("chain ")
                    || l.starts_with("type ")
                    || l.starts_with("policy ")
                    || l == "}")
            });
            if !has_rules {
                let _ = run(&["nft", "delete", "table", family, name]);
            }
        }
        let now = std::fs::read_to_string(IP_FORWARD).unwrap_or_default();
        if now != self.ip_forward {
            let _ = std::fs::write(IP_FORWARD, self.ip_forward.trim());
        }
    }
}

struct Netns {
    name: String,
    path: PathBuf,
}

impl Netns {
    fn new(idx: u32, n: u32) -> Netns {
        let name = format!("crust-cni-test-{}-{idx}-{n}", pid());
        run(&["ip", "netns", "add", &name]).unwrap();
        Netns {
            path: PathBuf::from("/run/netns").join(&name),
            name,
        }
    }

    fn delete(&self) {
        if self.path.exists() {
            let _ = run(&["ip", "netns", "del", &self.name]);
        }
    }

    fn addr(&self) -> String {
        run(&["ip", "-n", &self.name, "addr"]).unwrap()
    }

    fn link(&self, dev: &str) -> Result<String, String> {
        run(&["ip", "-n", &self.name, "link", "show", dev])
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        self.delete();
    }
}

/// The bridge the bridge plugin makes (deleting it also removes the
/// gateway address and its route).
struct Bridge(String);

impl Drop for Bridge {
    fn drop(&mut self) {
        if Path::new("/sys/class/net").join(&self.0).exists() {
            let _ = run(&["ip", "link", "del", &self.0]);
        }
    }
}

/// An ADDed attachment that is DELeted when dropped, unless already.
struct Attached {
    cni: Arc<Cni>,
    att: Option<Attachment>,
}

impl Attached {
    fn get(&self) -> &Attachment {
        self.att.as_ref().unwrap()
    }

    async fn del(&mut self) -> Result<(), CniError> {
        let att = self.att.clone().unwrap();
        self.cni.del(&att).await?;
        self.att = None;
        Ok(())
    }
}

impl Drop for Attached {
    fn drop(&mut self) {
        let Some(att) = self.att.take() else { return };
        let cni = self.cni.clone();
        // Drop cannot await; DEL on a thread with its own runtime.
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            if let Err(e) = rt.block_on(cni.del(&att)) {
                eprintln!("cleanup DEL failed: {e}");
            }
        })
        .join();
    }
}

/// A process killed (by its own pid) and reaped on drop.
struct Proc(Child);

impl Proc {
    /// Waits up to `limit` for exit; returns its stdout.
    fn output(mut self, limit: Duration) -> String {
        let deadline = Instant::now() + limit;
        while self.0.try_wait().unwrap().is_none() {
            assert!(
                Instant::now() < deadline,
                "process did not exit in {limit:?}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        let mut out = String::new();
        self.0
            .stdout
            .take()
            .unwrap()
            .read_to_string(&mut out)
            .unwrap();
        out
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `busybox nc -l -p PORT` inside the netns; what it receives is its stdout.
fn listen_in(ns: &Netns, port: u16) -> Proc {
    let child = Command::new("ip")
        .args([
            "netns",
            "exec",
            &ns.name,
            "busybox",
            "nc",
            "-l",
            "-p",
            &port.to_string(),
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    Proc(child)
}

/// Connects (retrying while the listener starts) and sends `msg`.
fn send_tcp(addr: SocketAddr, msg: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut stream = loop {
        match TcpStream::connect_timeout(&addr, Duration::from_secs(2)) {
            Ok(s) => break s,
            Err(e) => {
                assert!(Instant::now() < deadline, "cannot connect to {addr}: {e}");
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    };
    stream.write_all(msg.as_bytes()).unwrap();
    stream.shutdown(std::net::Shutdown::Write).unwrap();
}

// ---------------------------------------------------------------- setup

/// One test's network: a temp conf dir with a bridge+host-local+portmap+
/// loopback list on its own bridge and /24, host-local's data in the temp dir.
struct Net {
    tmp: tempfile::TempDir,
    conf: PathBuf,
    _bridge: Bridge,
    name: String,
    subnet_prefix: String,
    ipam_dir: PathBuf,
}

impl Net {
    /// `idx` tells this test's network from the others of this process.
    fn new(idx: u32, version: &str, extra_plugins: &[serde_json::Value]) -> Net {
        let tmp = tempfile::tempdir().unwrap();
        let conf = tmp.path().join("net.d");
        let ipam_dir = tmp.path().join("ipam");
        std::fs::create_dir_all(&conf).unwrap();
        let bridge = format!("crcni{}{idx}", pid() % 10000);
        let third = (pid() % 40) * 6 + idx;
        let subnet_prefix = format!("10.123.{third}.");
        let name = format!("crust-cni-test-{}-{idx}", pid());
        let mut plugins = vec![json!({
            "type": "bridge",
            "bridge": bridge,
            "isGateway": true,
            "ipMasq": false,
            "hairpinMode": true,
            "ipam": {
                "type": "host-local",
                "dataDir": ipam_dir,
                "ranges": [[{"subnet": format!("{subnet_prefix}0/24")}]],
                "routes": [{"dst": "0.0.0.0/0"}]
            }
        })];
        plugins.extend(extra_plugins.iter().cloned());
        let list = json!({"cniVersion": version, "name": name, "plugins": plugins});
        std::fs::write(conf.join("10-test.conflist"), list.to_string()).unwrap();
        Net {
            tmp,
            conf,
            _bridge: Bridge(bridge),
            name,
            subnet_prefix,
            ipam_dir,
        }
    }

    fn standard(idx: u32, version: &str) -> Net {
        Net::new(
            idx,
            version,
            &[
                json!({"type": "portmap", "capabilities": {"portMappings": true}, "snat": true}),
                json!({"type": "loopback"}),
            ],
        )
    }

    fn cni(&self, extra_bin: Option<&Path>) -> Cni {
        let mut dirs = vec![PathBuf::from("/opt/cni/bin")];
        dirs.extend(extra_bin.map(Path::to_path_buf));
        dirs.push(PLUGIN_DIR.into());
        Cni::new(&self.conf, dirs)
    }

    fn load(&self, cni: &Cni) -> NetworkList {
        cni.load().unwrap()
    }

    /// host-local's record of `ip`.
    fn ip_file(&self, ip: &str) -> PathBuf {
        self.ipam_dir.join(&self.name).join(ip)
    }

    fn allocated(&self) -> Vec<String> {
        let Ok(entries) = std::fs::read_dir(self.ipam_dir.join(&self.name)) else {
            return Vec::new();
        };
        entries
            .filter_map(|e| e.ok())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.parse::<IpAddr>().is_ok())
            .collect()
    }
}

fn pod(ns: &Netns, n: u32) -> PodNetwork {
    PodNetwork {
        pod_id: format!("crustcnitest{}x{n}", pid()),
        pod_name: format!("pod-{n}"),
        pod_namespace: "crust-cni-test".into(),
        pod_uid: format!("uid-{}-{n}", pid()),
        netns: ns.path.clone(),
        ..Default::default()
    }
}

fn script(dir: &Path, name: &str, body: &str) {
    use std::os::unix::fs::PermissionsExt;
    let path = dir.join(name);
    std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
}

// ---------------------------------------------------------------- tests

#[tokio::test]
async fn debian_plugins_config_loads() {
    require_root_and_plugins!();
    let _host = HostGuard::new();
    let net = Net::standard(0, "1.0.0");
    let cni = net.cni(None);
    assert_eq!(cni.status(), Ok(()));
    let list = net.load(&cni);
    let bins: Vec<_> = list.plugins.iter().map(|p| p.binary.clone()).collect();
    assert_eq!(
        bins,
        ["bridge", "portmap", "loopback"].map(|p| Path::new(PLUGIN_DIR).join(p))
    );
    // A type no dir has: the reason names it and the dirs.
    let bad = Net::new(0, "1.0.0", &[json!({"type": "no-such-plugin"})]);
    let reason = bad.cni(None).status().unwrap_err();
    assert_eq!(
        reason,
        "plugin \"no-such-plugin\" not found in /opt/cni/bin, /usr/lib/cni (needed by 10-test.conflist)"
    );
}

#[tokio::test]
async fn two_pods_get_distinct_ips_reachable_from_host_and_each_other() {
    require_root_and_plugins!();
    let _host = HostGuard::new();
    let net = Net::standard(1, "1.0.0");
    let cni = Arc::new(net.cni(None));
    let list = net.load(&cni);
    let ns1 = Netns::new(1, 1);
    let ns2 = Netns::new(1, 2);

    let mut a1 = Attached {
        cni: cni.clone(),
        att: Some(cni.add(&list, &pod(&ns1, 1)).await.unwrap()),
    };
    let mut a2 = Attached {
        cni: cni.clone(),
        att: Some(cni.add(&list, &pod(&ns2, 2)).await.unwrap()),
    };
    let ip1 = a1.get().ipv4().unwrap();
    let ip2 = a2.get().ipv4().unwrap();
    assert_ne!(ip1, ip2);
    for (ip, ns, att) in [(&ip1, &ns1, a1.get()), (&ip2, &ns2, a2.get())] {
        assert!(
            ip.starts_with(&net.subnet_prefix),
            "{ip} not in {}0/24",
            net.subnet_prefix
        );
        assert_eq!(att.ips.len(), 1, "{:?}", att.ips);
        assert_eq!(att.ips[0].address, format!("{ip}/24"));
        assert_eq!(att.ips[0].gateway, Some(format!("{}1", net.subnet_prefix)));
        assert_eq!(att.ipv6(), None);
        assert!(att.additional_ips().is_empty());
        // In the netns: eth0 with the address, lo up (the loopback plugin).
        let addr = ns.addr();
        assert!(addr.contains(&format!("inet {ip}/24")), "{addr}");
        assert!(ns.link("eth0").unwrap().contains("UP"));
        let lo = ns.link("lo").unwrap();
        assert!(lo.contains("<LOOPBACK,UP"), "{lo}");
        assert!(net.ip_file(ip).exists());
        // The plugins' 1.0.0 result: interfaces (bridge, veth, eth0 in the pod).
        assert_eq!(att.result.cni_version, "1.0.0");
        assert!(
            att.result
                .interfaces
                .iter()
                .any(|i| i.name == "eth0" && i.sandbox == ns.path.to_string_lossy())
        );
        assert_eq!(att.plugins.len(), 3);
        assert_eq!(att.prev_results.len(), 3);
    }

    // Host -> pod 1 over TCP at its pod IP.
    let l1 = listen_in(&ns1, 8080);
    send_tcp(format!("{ip1}:8080").parse().unwrap(), "host-to-pod\n");
    assert_eq!(l1.output(Duration::from_secs(10)), "host-to-pod\n");

    // Pod 1 -> pod 2 over the bridge.
    let l2 = listen_in(&ns2, 8081);
    let deadline = Instant::now() + Duration::from_secs(10);
    // Retry until the listener is up (nc exits non-zero on refusal).
    let connected = loop {
        let mut c = Command::new("ip")
            .args([
                "netns", "exec", &ns1.name, "busybox", "nc", "-w", "3", &ip2, "8081",
            ])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        c.stdin.take().unwrap().write_all(b"pod-to-pod\n").unwrap();
        if c.wait().unwrap().success() {
            break true;
        }
        if Instant::now() > deadline {
            break false;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    assert!(connected, "pod 1 could not connect to pod 2");
    assert_eq!(l2.output(Duration::from_secs(10)), "pod-to-pod\n");

    // DEL releases each IP and removes eth0.
    a1.del().await.unwrap();
    assert!(!net.ip_file(&ip1).exists());
    assert!(ns1.link("eth0").is_err());
    let a2_record = a2.get().clone();
    a2.del().await.unwrap();
    assert!(!net.ip_file(&ip2).exists());
    assert!(net.allocated().is_empty(), "{:?}", net.allocated());
    // DEL is idempotent: a second one (a retry) succeeds.
    cni.del(&a2_record).await.unwrap();
}

#[tokio::test]
async fn port_mappings_dnat_from_localhost_and_del_removes_the_rules() {
    require_root_and_plugins!();
    let _host = HostGuard::new();
    let net = Net::standard(2, "1.0.0");
    let cni = Arc::new(net.cni(None));
    let list = net.load(&cni);
    let ns = Netns::new(2, 1);
    let host_port = 30000 + (pid() % 10000) as u16;
    let mut p = pod(&ns, 1);
    p.port_mappings = vec![
        PortMapping {
            host_port,
            container_port: 8080,
            protocol: Protocol::Tcp,
            host_ip: String::new(),
        },
        // Container port only: not given to portmap.
        PortMapping {
            host_port: 0,
            container_port: 9090,
            protocol: Protocol::Tcp,
            host_ip: String::new(),
        },
    ];
    let before = nat_rules();
    assert!(
        !before.contains(&format!("--dport {host_port}")),
        "port {host_port} already mapped"
    );
    let mut a = Attached {
        cni: cni.clone(),
        att: Some(cni.add(&list, &p).await.unwrap()),
    };
    let ip = a.get().ipv4().unwrap();

    let rules = nat_rules();
    let dnat = format!("--dport {host_port} -j DNAT --to-destination {ip}:8080");
    assert!(rules.contains(&dnat), "no `{dnat}` in:\n{rules}");
    assert!(!rules.contains("9090"), "{rules}");
    let dn_chains: Vec<String> = nat_chains()
        .into_iter()
        .filter(|c| c.starts_with("CNI-DN-"))
        .filter(|c| rules.contains(&format!("-A {c} -p tcp -m tcp --dport {host_port} -j DNAT")))
        .collect();
    assert_eq!(dn_chains.len(), 1, "{rules}");

    // 127.0.0.1:hostPort reaches the pod (portmap's snat + route_localnet).
    let l = listen_in(&ns, 8080);
    send_tcp(
        format!("127.0.0.1:{host_port}").parse().unwrap(),
        "via-hostport\n",
    );
    assert_eq!(l.output(Duration::from_secs(10)), "via-hostport\n");

    a.del().await.unwrap();
    let rules = nat_rules();
    assert!(
        !rules.contains(&format!("--dport {host_port}")),
        "left behind:\n{rules}"
    );
    assert!(!nat_chains().contains(&dn_chains[0]));
    assert!(!net.ip_file(&ip).exists());
}

#[tokio::test]
async fn broken_plugin_fails_add_with_its_message_and_leaves_no_ip() {
    require_root_and_plugins!();
    let _host = HostGuard::new();
    let net = Net::new(
        3,
        "0.4.0",
        &[
            json!({"type": "crust-test-broken"}),
            json!({"type": "loopback"}),
        ],
    );
    let bin = net.tmp.path().join("bin");
    std::fs::create_dir(&bin).unwrap();
    script(
        &bin,
        "crust-test-broken",
        r#"[ "$CNI_COMMAND" = DEL ] && exit 0
echo '{"cniVersion":"0.4.0","code":100,"msg":"crust test plugin refuses","details":"on purpose"}'
exit 1"#,
    );
    let cni = net.cni(Some(&bin));
    let list = net.load(&cni);
    let ns = Netns::new(3, 1);
    let err = cni.add(&list, &pod(&ns, 1)).await.unwrap_err();
    assert_eq!(
        err.to_string(),
        "CNI plugin \"crust-test-broken\" ADD failed (code 100): crust test plugin refuses; on purpose"
    );
    assert!(err.pending_attachment().is_none());
    // The bridge plugin's ADD was undone: no address kept, no eth0.
    assert!(net.allocated().is_empty(), "{:?}", net.allocated());
    assert!(ns.link("eth0").is_err());
}

#[tokio::test]
async fn hung_plugin_times_out_and_the_add_is_undone() {
    require_root_and_plugins!();
    let _host = HostGuard::new();
    let net = Net::new(4, "1.0.0", &[json!({"type": "crust-test-hang"})]);
    let bin = net.tmp.path().join("bin");
    std::fs::create_dir(&bin).unwrap();
    script(
        &bin,
        "crust-test-hang",
        r#"[ "$CNI_COMMAND" = DEL ] && exit 0
sleep 100"#,
    );
    let cni = net
        .cni(Some(&bin))
        .with_exec_timeout(Duration::from_secs(3));
    let list = net.load(&cni);
    let ns = Netns::new(4, 1);
    let start = Instant::now();
    let err = cni.add(&list, &pod(&ns, 1)).await.unwrap_err();
    let took = start.elapsed();
    assert!(err.is_timeout(), "{err}");
    assert!(took < Duration::from_secs(15), "took {took:?}");
    assert!(net.allocated().is_empty(), "{:?}", net.allocated());
}

#[tokio::test]
async fn del_after_restart_without_netns_releases_the_ip() {
    require_root_and_plugins!();
    let _host = HostGuard::new();
    let net = Net::standard(5, "0.3.1");
    let ns = Netns::new(5, 1);
    let stored = {
        let cni = net.cni(None);
        let list = net.load(&cni);
        let att = cni.add(&list, &pod(&ns, 1)).await.unwrap();
        // 0.3.1 result shape from the real plugin.
        assert_eq!(att.result.cni_version, "0.3.1");
        assert!(att.ipv4().unwrap().starts_with(&net.subnet_prefix));
        serde_json::to_string(&att).unwrap()
    };
    let att: Attachment = serde_json::from_str(&stored).unwrap();
    let ip = att.ipv4().unwrap();
    assert!(net.ip_file(&ip).exists());

    // "crustd restarts": a new invoker, the config gone, the netns gone.
    std::fs::remove_file(net.conf.join("10-test.conflist")).unwrap();
    ns.delete();
    let cni = Arc::new(net.cni(None));
    let mut a = Attached {
        cni: cni.clone(),
        att: Some(att),
    };
    a.del().await.unwrap();
    assert!(!net.ip_file(&ip).exists());
    assert!(net.allocated().is_empty());
}

#[tokio::test]
async fn check_passes_on_a_healthy_attachment() {
    require_root_and_plugins!();
    let _host = HostGuard::new();
    let net = Net::new(0, "1.0.0", &[json!({"type": "loopback"})]);
    let cni = Arc::new(net.cni(None));
    let list = net.load(&cni);
    let ns = Netns::new(0, 1);
    let mut a = Attached {
        cni: cni.clone(),
        att: Some(cni.add(&list, &pod(&ns, 1)).await.unwrap()),
    };
    cni.check(a.get()).await.unwrap();
    a.del().await.unwrap();
}
