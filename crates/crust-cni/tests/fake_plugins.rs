//! The exec protocol against fake plugins (shell scripts that record their
//! environment and stdin, then answer): chaining, capability injection,
//! DEL from the recorded attachment, rollback, timeouts, output limits.
//! No root needed; nothing outside a temp dir is touched.

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crust_cni::{
    Attachment, Cni, CniError, Dns, NetworkList, Operation, PodNetwork, PortMapping, Protocol,
};
use serde_json::{Value, json};

struct Env {
    tmp: tempfile::TempDir,
    conf: PathBuf,
    bin: PathBuf,
    log: PathBuf,
}

impl Env {
    fn new() -> Env {
        let tmp = tempfile::tempdir().unwrap();
        let conf = tmp.path().join("net.d");
        let bin = tmp.path().join("bin");
        let log = tmp.path().join("log");
        for d in [&conf, &bin, &log] {
            std::fs::create_dir_all(d).unwrap();
        }
        Env {
            tmp,
            conf,
            bin,
            log,
        }
    }

    /// A plugin that records each call (`calls`: "NAME COMMAND" lines; and
    /// per call N: N.stdin, N.env) and then runs `body`.
    fn plugin(&self, name: &str, body: &str) {
        let log = self.log.display();
        let script = format!(
            r#"#!/bin/sh
n=$(( $(cat {log}/count 2>/dev/null || echo 0) + 1 ))
echo $n > {log}/count
echo "{name} $CNI_COMMAND" >> {log}/calls
cat > {log}/$n.stdin
env | grep '^CNI_' | sort > {log}/$n.env
{body}
"#
        );
        let path = self.bin.join(name);
        std::fs::write(&path, script).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    }

    /// A plugin answering ADD with a 1.0.0 result holding `ip`.
    fn ip_plugin(&self, name: &str, ip: &str) {
        self.plugin(
            name,
            &format!(
                r#"if [ "$CNI_COMMAND" = ADD ]; then
  printf '{{"cniVersion":"1.0.0","interfaces":[{{"name":"%s","sandbox":"%s"}}],"ips":[{{"address":"{ip}","gateway":"10.9.0.1","interface":0}}]}}' "$CNI_IFNAME" "$CNI_NETNS"
fi
exit 0"#
            ),
        );
    }

    fn conflist(&self, version: &str, plugins: Value) -> NetworkList {
        let text = json!({"cniVersion": version, "name": "fakenet", "plugins": plugins});
        std::fs::write(self.conf.join("10-fake.conflist"), text.to_string()).unwrap();
        self.cni().load().unwrap()
    }

    fn cni(&self) -> Cni {
        Cni::new(
            &self.conf,
            vec![self.tmp.path().join("empty"), self.bin.clone()],
        )
    }

    fn calls(&self) -> Vec<String> {
        std::fs::read_to_string(self.log.join("calls"))
            .unwrap_or_default()
            .lines()
            .map(str::to_string)
            .collect()
    }

    fn stdin(&self, n: usize) -> Value {
        let text = std::fs::read_to_string(self.log.join(format!("{n}.stdin"))).unwrap();
        serde_json::from_str(&text).unwrap()
    }

    fn env(&self, n: usize) -> BTreeMap<String, String> {
        std::fs::read_to_string(self.log.join(format!("{n}.env")))
            .unwrap()
            .lines()
            .filter_map(|l| l.split_once('='))
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }
}

fn pod() -> PodNetwork {
    PodNetwork {
        pod_id: "podid0123".into(),
        pod_name: "web".into(),
        pod_namespace: "ns1".into(),
        pod_uid: "uid-1".into(),
        // A real netns path that exists (the fakes never enter it).
        netns: "/proc/self/ns/net".into(),
        port_mappings: vec![
            PortMapping {
                host_port: 12000,
                container_port: 80,
                protocol: Protocol::Tcp,
                host_ip: String::new(),
            },
            PortMapping {
                host_port: 0,
                container_port: 81,
                protocol: Protocol::Udp,
                host_ip: String::new(),
            },
        ],
        dns: Some(Dns {
            servers: vec!["10.96.0.10".into()],
            searches: vec!["ns1.svc.cluster.local".into()],
            options: vec!["ndots:5".into()],
        }),
        bandwidth: None,
        ip_ranges: Vec::new(),
    }
}

#[tokio::test]
async fn add_chains_results_and_injects_declared_capabilities() {
    let e = Env::new();
    e.ip_plugin("first", "10.9.0.2/24");
    e.ip_plugin("second", "10.9.0.3/24");
    let list = e.conflist(
        "1.0.0",
        json!([
            {"type": "first", "mtu": 1400},
            {"type": "second", "capabilities": {"portMappings": true, "bandwidth": true, "dns": false}}
        ]),
    );
    let att = e.cni().add(&list, &pod()).await.unwrap();
    assert_eq!(e.calls(), ["first ADD", "second ADD"]);

    // The first plugin: its own config plus name and cniVersion, nothing else.
    assert_eq!(
        e.stdin(1),
        json!({"type": "first", "mtu": 1400, "name": "fakenet", "cniVersion": "1.0.0"})
    );
    let env = e.env(1);
    assert_eq!(env["CNI_COMMAND"], "ADD");
    assert_eq!(env["CNI_CONTAINERID"], "podid0123");
    assert_eq!(env["CNI_NETNS"], "/proc/self/ns/net");
    assert_eq!(env["CNI_IFNAME"], "eth0");
    assert_eq!(
        env["CNI_ARGS"],
        "IgnoreUnknown=1;K8S_POD_NAMESPACE=ns1;K8S_POD_NAME=web;K8S_POD_INFRA_CONTAINER_ID=podid0123;K8S_POD_UID=uid-1"
    );
    assert_eq!(
        env["CNI_PATH"],
        format!(
            "{}:{}",
            e.tmp.path().join("empty").display(),
            e.bin.display()
        )
    );

    // The second: the first's result as prevResult; portMappings (declared,
    // host ports only), not dns (declared false), not bandwidth (no data).
    let second = e.stdin(2);
    let first_result: Value = serde_json::from_str(&att.prev_results[0]).unwrap();
    assert_eq!(second["prevResult"], first_result);
    assert_eq!(
        second["runtimeConfig"],
        json!({"portMappings": [{"hostPort": 12000, "containerPort": 80, "protocol": "tcp"}]})
    );

    // The attachment: the final result, the exact configs sent.
    assert_eq!(att.network_name, "fakenet");
    assert_eq!(att.plugins.len(), 2);
    assert_eq!(
        serde_json::from_str::<Value>(&att.plugins[1].config).unwrap(),
        second
    );
    assert_eq!(att.prev_results.len(), 2);
    assert_eq!(att.ipv4().as_deref(), Some("10.9.0.3"));
    assert_eq!(att.ips[0].gateway.as_deref(), Some("10.9.0.1"));
    assert_eq!(att.result.interfaces[0].sandbox, "/proc/self/ns/net");
}

#[tokio::test]
async fn dns_capability_when_declared() {
    let e = Env::new();
    e.ip_plugin("only", "10.9.0.2/24");
    let list = e.conflist(
        "1.0.0",
        json!([{"type": "only", "capabilities": {"dns": true}}]),
    );
    e.cni().add(&list, &pod()).await.unwrap();
    assert_eq!(
        e.stdin(1)["runtimeConfig"],
        json!({"dns": {"servers": ["10.96.0.10"], "searches": ["ns1.svc.cluster.local"], "options": ["ndots:5"]}})
    );
}

#[tokio::test]
async fn del_uses_the_recorded_attachment_in_reverse() {
    let e = Env::new();
    e.ip_plugin("first", "10.9.0.2/24");
    e.ip_plugin("second", "10.9.0.3/24");
    let list = e.conflist(
        "0.4.0",
        json!([{"type": "first"}, {"type": "second", "capabilities": {"portMappings": true}}]),
    );
    let cni = e.cni();
    let att = cni.add(&list, &pod()).await.unwrap();
    let stored = serde_json::to_string(&att).unwrap();

    // The config changes and the netns goes away; DEL still uses what ADD
    // recorded and runs without CNI_NETNS.
    std::fs::remove_file(e.conf.join("10-fake.conflist")).unwrap();
    let mut att: Attachment = serde_json::from_str(&stored).unwrap();
    att.pod.netns = e.tmp.path().join("gone-netns");
    cni.del(&att).await.unwrap();
    assert_eq!(
        e.calls(),
        ["first ADD", "second ADD", "second DEL", "first DEL"]
    );
    let final_result: Value = serde_json::from_str(att.prev_results.last().unwrap()).unwrap();
    for n in [3, 4] {
        let stdin = e.stdin(n);
        assert_eq!(stdin["prevResult"], final_result, "call {n}");
        assert_eq!(stdin["name"], "fakenet");
        let env = e.env(n);
        assert_eq!(env["CNI_COMMAND"], "DEL");
        assert!(!env.contains_key("CNI_NETNS"), "call {n}: {env:?}");
        assert_eq!(env["CNI_CONTAINERID"], "podid0123");
    }
    // The portMappings recorded at ADD go with DEL too.
    assert_eq!(
        e.stdin(3)["runtimeConfig"]["portMappings"][0]["hostPort"],
        12000
    );
}

#[tokio::test]
async fn a_planned_attachment_deletes_every_plugin_without_prev_result() {
    let e = Env::new();
    e.ip_plugin("first", "10.9.0.2/24");
    e.ip_plugin("second", "10.9.0.3/24");
    let list = e.conflist(
        "1.0.0",
        json!([{"type": "first"}, {"type": "second", "capabilities": {"portMappings": true}}]),
    );
    let cni = e.cni();
    // What crustd stores before ADD, as if a crash then cut the ADD short.
    let planned = cni.planned_attachment(&list, &pod());
    cni.del(&planned).await.unwrap();
    assert_eq!(e.calls(), ["second DEL", "first DEL"]);
    for n in [1, 2] {
        assert!(e.stdin(n).get("prevResult").is_none(), "call {n}");
        assert_eq!(e.env(n)["CNI_CONTAINERID"], "podid0123");
    }
    assert_eq!(
        e.stdin(1)["runtimeConfig"]["portMappings"][0]["hostPort"],
        12000
    );
}

#[tokio::test]
async fn del_of_0_3_1_has_no_prev_result() {
    let e = Env::new();
    e.ip_plugin("first", "10.9.0.2/24");
    let list = e.conflist("0.3.1", json!([{"type": "first"}]));
    let cni = e.cni();
    let att = cni.add(&list, &pod()).await.unwrap();
    cni.del(&att).await.unwrap();
    assert!(e.stdin(2).get("prevResult").is_none());
    assert_eq!(e.env(2)["CNI_NETNS"], "/proc/self/ns/net");
}

#[tokio::test]
async fn failed_add_returns_the_plugins_error_and_deletes_what_was_added() {
    let e = Env::new();
    e.ip_plugin("good", "10.9.0.2/24");
    e.plugin(
        "bad",
        r#"if [ "$CNI_COMMAND" = ADD ]; then
  echo '{"cniVersion":"1.0.0","code":7,"msg":"no such bridge","details":"cni-x missing"}'
  echo 'some log line' >&2
  exit 1
fi
exit 0"#,
    );
    let list = e.conflist("1.0.0", json!([{"type": "good"}, {"type": "bad"}]));
    let cni = e.cni();
    let err = cni.add(&list, &pod()).await.unwrap_err();
    assert_eq!(
        err.to_string(),
        "CNI plugin \"bad\" ADD failed (code 7): no such bridge; cni-x missing"
    );
    assert!(matches!(err, CniError::Plugin { code: 7, .. }));
    assert_eq!(e.calls(), ["good ADD", "bad ADD", "bad DEL", "good DEL"]);
    // The rollback DELs carry the last good result.
    let good: Value =
        serde_json::from_str(&std::fs::read_to_string(e.log.join("1.stdin")).unwrap()).unwrap();
    assert_eq!(good["name"], "fakenet");
    assert_eq!(e.stdin(4)["prevResult"]["ips"][0]["address"], "10.9.0.2/24");
    let stats = cni.stats();
    assert_eq!((stats.add.count, stats.add.errors), (1, 1));
    assert_eq!(
        (stats.del.count, stats.del.errors),
        (0, 0),
        "rollback is part of ADD"
    );
}

#[tokio::test]
async fn failed_add_and_failed_cleanup_hand_back_the_attachment() {
    let e = Env::new();
    e.ip_plugin("good", "10.9.0.2/24");
    e.plugin("broken", r#"echo "broken $CNI_COMMAND" >&2; exit 2"#);
    let list = e.conflist("1.0.0", json!([{"type": "good"}, {"type": "broken"}]));
    let err = e.cni().add(&list, &pod()).await.unwrap_err();
    let text = err.to_string();
    assert!(
        text.starts_with("CNI plugin \"broken\" ADD failed (code 999): broken ADD (exit status 2)"),
        "{text}"
    );
    assert!(text.contains("broken DEL"), "{text}");
    let pending = err
        .pending_attachment()
        .expect("an attachment to retry DEL with");
    assert_eq!(pending.plugins.len(), 2);
    assert_eq!(pending.prev_results.len(), 1);
}

#[tokio::test]
async fn plugin_missing_at_add_is_not_deleted() {
    let e = Env::new();
    e.ip_plugin("good", "10.9.0.2/24");
    e.ip_plugin("later", "10.9.0.3/24");
    let list = e.conflist("1.0.0", json!([{"type": "good"}, {"type": "later"}]));
    std::fs::remove_file(e.bin.join("later")).unwrap();
    let err = e.cni().add(&list, &pod()).await.unwrap_err();
    assert!(matches!(err, CniError::PluginNotFound { .. }), "{err}");
    assert!(
        err.to_string().contains("plugin \"later\" not found in"),
        "{err}"
    );
    assert_eq!(e.calls(), ["good ADD", "good DEL"]);
}

#[tokio::test]
async fn del_runs_every_plugin_and_reports_the_first_error() {
    let e = Env::new();
    e.ip_plugin("first", "10.9.0.2/24");
    e.plugin(
        "flaky",
        r#"if [ "$CNI_COMMAND" = DEL ]; then echo '{"code":11,"msg":"iptables locked"}'; exit 1; fi
printf '%s' '{"cniVersion":"1.0.0","ips":[{"address":"10.9.0.2/24"}]}'"#,
    );
    let list = e.conflist("1.0.0", json!([{"type": "first"}, {"type": "flaky"}]));
    let cni = e.cni();
    let att = cni.add(&list, &pod()).await.unwrap();
    let err = cni.del(&att).await.unwrap_err();
    assert!(err.to_string().contains("iptables locked"), "{err}");
    assert_eq!(
        e.calls(),
        ["first ADD", "flaky ADD", "flaky DEL", "first DEL"]
    );
    assert_eq!(cni.stats().del.errors, 1);
}

#[tokio::test]
async fn del_needs_the_plugin_binary() {
    let e = Env::new();
    e.ip_plugin("first", "10.9.0.2/24");
    let list = e.conflist("1.0.0", json!([{"type": "first"}]));
    let cni = e.cni();
    let att = cni.add(&list, &pod()).await.unwrap();
    std::fs::remove_file(e.bin.join("first")).unwrap();
    let err = cni.del(&att).await.unwrap_err().to_string();
    assert!(
        err.contains("plugin \"first\" not found")
            && err.contains("network \"fakenet\" of pod podid0123"),
        "{err}"
    );
}

#[tokio::test]
async fn check_runs_in_order_with_the_final_result() {
    let e = Env::new();
    e.ip_plugin("first", "10.9.0.2/24");
    e.ip_plugin("second", "10.9.0.3/24");
    let list = e.conflist("1.0.0", json!([{"type": "first"}, {"type": "second"}]));
    let cni = e.cni();
    let att = cni.add(&list, &pod()).await.unwrap();
    cni.check(&att).await.unwrap();
    assert_eq!(
        e.calls(),
        ["first ADD", "second ADD", "first CHECK", "second CHECK"]
    );
    assert_eq!(e.stdin(3)["prevResult"]["ips"][0]["address"], "10.9.0.3/24");

    // 0.3.1 has no CHECK: nothing runs.
    let mut old = att.clone();
    old.cni_version = "0.3.1".into();
    cni.check(&old).await.unwrap();
    assert_eq!(e.calls().len(), 4);
    assert_eq!(cni.stats().check.count, 2);
}

#[tokio::test]
async fn hung_plugin_times_out_and_its_processes_are_killed() {
    let e = Env::new();
    let pidfile = e.tmp.path().join("sleep.pid");
    e.plugin(
        "hang",
        &format!("sleep 100 &\necho $! > {}\nwait", pidfile.display()),
    );
    e.ip_plugin("good", "10.9.0.2/24");
    let list = e.conflist("1.0.0", json!([{"type": "hang"}]));
    let cni = Arc::new(e.cni().with_exec_timeout(Duration::from_secs(2)));

    // Another pod's ADD on a good network is not held up meanwhile.
    let good_conf = e.tmp.path().join("good.d");
    std::fs::create_dir(&good_conf).unwrap();
    std::fs::write(
        good_conf.join("1.conflist"),
        json!({"cniVersion":"1.0.0","name":"good","plugins":[{"type":"good"}]}).to_string(),
    )
    .unwrap();
    let good_list =
        crust_cni::load_file(&good_conf.join("1.conflist"), std::slice::from_ref(&e.bin)).unwrap();

    let start = Instant::now();
    let hung = {
        let cni = cni.clone();
        let list = list.clone();
        tokio::spawn(async move { cni.add(&list, &pod()).await })
    };
    let mut other = pod();
    other.pod_id = "otherpod".into();
    let good = cni.add(&good_list, &other).await.unwrap();
    assert_eq!(good.ipv4().as_deref(), Some("10.9.0.2"));
    assert!(
        start.elapsed() < Duration::from_secs(2),
        "good ADD waited for the hung one"
    );

    let err = hung.await.unwrap().unwrap_err();
    let took = start.elapsed();
    assert!(err.is_timeout(), "{err}");
    assert!(
        err.to_string()
            .contains("\"hang\" ADD timed out after 2s and was killed"),
        "{err}"
    );
    // ADD timeout + the rollback DEL's timeout, not 100 s.
    assert!(took < Duration::from_secs(5), "took {took:?}");

    // The plugin's child (`sleep 100`) died with it.
    let pid = std::fs::read_to_string(&pidfile)
        .unwrap()
        .trim()
        .to_string();
    wait_dead(&pid).await;
}

/// Polls until process `pid` is gone (or a zombie); panics after 5 s.
async fn wait_dead(pid: &str) {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let state = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok();
        let alive = state
            .as_deref()
            .and_then(|s| s.rsplit_once(") "))
            .is_some_and(|(_, rest)| !rest.starts_with('Z') && !rest.starts_with('X'));
        if !alive {
            return;
        }
        assert!(Instant::now() < deadline, "process {pid} still alive");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn dropping_the_future_kills_the_running_plugin() {
    let e = Env::new();
    let pidfile = e.tmp.path().join("sleep.pid");
    e.plugin(
        "hang",
        &format!("sleep 100 &\necho $! > {}\nwait", pidfile.display()),
    );
    let list = e.conflist("1.0.0", json!([{"type": "hang"}]));
    let cni = e.cni();
    let r = tokio::time::timeout(Duration::from_millis(1500), cni.add(&list, &pod())).await;
    assert!(r.is_err(), "the ADD should still be running");
    let pid = std::fs::read_to_string(&pidfile)
        .unwrap()
        .trim()
        .to_string();
    wait_dead(&pid).await;
}

#[tokio::test]
async fn oversized_output_is_an_error() {
    let e = Env::new();
    e.plugin(
        "chatty",
        r#"if [ "$CNI_COMMAND" = ADD ]; then head -c 2000000 /dev/zero | tr '\0' ' '; fi"#,
    );
    let list = e.conflist("1.0.0", json!([{"type": "chatty"}]));
    let err = e.cni().add(&list, &pod()).await.unwrap_err().to_string();
    assert!(err.contains("stdout larger than 1048576 bytes"), "{err}");
}

#[tokio::test]
async fn invalid_result_fails_the_add() {
    let e = Env::new();
    e.plugin(
        "liar",
        r#"[ "$CNI_COMMAND" = ADD ] && echo '{"cniVersion":"1.0.0","ips":[{"address":"not-an-ip"}]}'; exit 0"#,
    );
    let list = e.conflist("1.0.0", json!([{"type": "liar"}]));
    let err = e.cni().add(&list, &pod()).await.unwrap_err().to_string();
    assert!(
        err.contains("invalid result: ips[0].address \"not-an-ip\""),
        "{err}"
    );
    assert_eq!(e.calls(), ["liar ADD", "liar DEL"]);
}

#[tokio::test]
async fn inherited_cni_variables_do_not_leak() {
    // SAFETY: setting a variable while other test threads run is sound
    // here: they only read the environment through std (spawning plugins),
    // which takes the same lock as set_var; none calls libc getenv.
    unsafe { std::env::set_var("CNI_LEAK_TEST", "1") };
    let e = Env::new();
    e.ip_plugin("p", "10.9.0.2/24");
    let list = e.conflist("1.0.0", json!([{"type": "p"}]));
    e.cni().add(&list, &pod()).await.unwrap();
    assert!(!e.env(1).contains_key("CNI_LEAK_TEST"));
}

#[tokio::test]
async fn observer_sees_every_operation() {
    let e = Env::new();
    e.ip_plugin("p", "10.9.0.2/24");
    let list = e.conflist("1.0.0", json!([{"type": "p"}]));
    let seen = Arc::new(AtomicU64::new(0));
    let s = seen.clone();
    let cni = e.cni().with_observer(Arc::new(move |op, took, ok| {
        assert!(ok);
        assert!(took < Duration::from_secs(30));
        let bit = match op {
            Operation::Add => 1,
            Operation::Del => 2,
            Operation::Check => 4,
        };
        s.fetch_or(bit, Ordering::SeqCst);
    }));
    let att = cni.add(&list, &pod()).await.unwrap();
    cni.check(&att).await.unwrap();
    cni.del(&att).await.unwrap();
    assert_eq!(seen.load(Ordering::SeqCst), 7);
    let stats = cni.stats();
    assert_eq!(stats.get(Operation::Add).count, 1);
    assert_eq!(stats.get(Operation::Del).count, 1);
    assert!(stats.add.total_duration > Duration::ZERO);
}

#[tokio::test]
async fn bad_pod_input_is_rejected_before_any_exec() {
    let e = Env::new();
    e.ip_plugin("p", "10.9.0.2/24");
    let list = e.conflist("1.0.0", json!([{"type": "p"}]));
    let cni = e.cni();
    let mut p = pod();
    p.pod_id = "bad id".into();
    assert!(matches!(
        cni.add(&list, &p).await,
        Err(CniError::InvalidArgument(_))
    ));
    let mut p = pod();
    p.netns = Path::new("relative/ns").into();
    assert!(matches!(
        cni.add(&list, &p).await,
        Err(CniError::InvalidArgument(_))
    ));
    let mut p = pod();
    p.pod_namespace = "a;b".into();
    assert!(matches!(
        cni.add(&list, &p).await,
        Err(CniError::InvalidArgument(_))
    ));
    assert!(e.calls().is_empty());
}
