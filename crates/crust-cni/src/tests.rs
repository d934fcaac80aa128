//! Unit tests of the pure parts: config loading, result conversion,
//! CNI_ARGS, capability injection, error parsing. No root, no plugin runs.

use std::collections::BTreeSet;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use serde_json::{Value, json};

use super::*;

/// A conf dir and a bin dir with the named (empty, executable) plugins.
struct Dirs {
    _tmp: tempfile::TempDir,
    conf: PathBuf,
    bin: PathBuf,
}

fn dirs(plugins: &[&str]) -> Dirs {
    let tmp = tempfile::tempdir().unwrap();
    let conf = tmp.path().join("net.d");
    let bin = tmp.path().join("bin");
    std::fs::create_dir_all(&conf).unwrap();
    std::fs::create_dir_all(&bin).unwrap();
    for p in plugins {
        let path = bin.join(p);
        std::fs::write(&path, "#!/bin/sh\n").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    Dirs {
        _tmp: tmp,
        conf,
        bin,
    }
}

fn write(dir: &Path, name: &str, text: &str) {
    std::fs::write(dir.join(name), text).unwrap();
}

fn list_json(name: &str, version: &str, types: &[&str]) -> String {
    let plugins: Vec<Value> = types.iter().map(|t| json!({ "type": t })).collect();
    json!({"cniVersion": version, "name": name, "plugins": plugins}).to_string()
}

fn cni(d: &Dirs) -> Cni {
    Cni::new(&d.conf, vec![d.bin.clone()])
}

#[test]
fn loads_first_file_in_lexical_order() {
    let d = dirs(&["bridge", "loopback"]);
    write(
        &d.conf,
        "20-b.conflist",
        &list_json("second", "1.0.0", &["bridge"]),
    );
    write(
        &d.conf,
        "10-a.conflist",
        &list_json("first", "1.0.0", &["bridge", "loopback"]),
    );
    write(&d.conf, "05-ignored.txt", "not a config");
    write(
        &d.conf,
        "99-z.conf",
        r#"{"cniVersion":"1.0.0","name":"last","type":"bridge"}"#,
    );
    let list = cni(&d).load().unwrap();
    assert_eq!(list.name, "first");
    assert_eq!(list.cni_version, "1.0.0");
    assert_eq!(list.source, d.conf.join("10-a.conflist"));
    let types: Vec<_> = list
        .plugins
        .iter()
        .map(|p| p.plugin_type.as_str())
        .collect();
    assert_eq!(types, ["bridge", "loopback"]);
    assert_eq!(list.plugins[0].binary, d.bin.join("bridge"));
}

#[test]
fn conf_file_is_wrapped_into_a_list() {
    let d = dirs(&["bridge"]);
    let text = r#"{"cniVersion":"0.3.1","name":"single","type":"bridge","bridge":"cni0",
                   "capabilities":{"portMappings":true,"bandwidth":false}}"#;
    write(&d.conf, "10-single.conf", text);
    let list = cni(&d).load().unwrap();
    assert_eq!(list.name, "single");
    assert_eq!(list.cni_version, "0.3.1");
    assert_eq!(list.plugins.len(), 1);
    let p = &list.plugins[0];
    assert_eq!(p.plugin_type, "bridge");
    assert_eq!(p.conf["bridge"], "cni0");
    assert_eq!(p.capabilities, BTreeSet::from(["portMappings".to_string()]));

    // .json is read like .conf.
    let d = dirs(&["bridge"]);
    write(
        &d.conf,
        "10-x.json",
        r#"{"cniVersion":"0.4.0","name":"j","type":"bridge"}"#,
    );
    assert_eq!(cni(&d).load().unwrap().name, "j");
}

#[test]
fn invalid_files_are_skipped_for_a_later_valid_one() {
    let d = dirs(&["bridge"]);
    write(&d.conf, "10-x.conflist", "{ not json");
    write(
        &d.conf,
        "20-y.conflist",
        &list_json("good", "1.0.0", &["bridge"]),
    );
    assert_eq!(cni(&d).load().unwrap().name, "good");
}

#[test]
fn invalid_json_names_the_file() {
    let d = dirs(&["bridge"]);
    write(&d.conf, "10-x.conflist", "{ not json");
    let err = cni(&d).load().unwrap_err().to_string();
    assert!(err.starts_with("invalid JSON in 10-x.conflist: "), "{err}");
    assert_eq!(cni(&d).status().unwrap_err(), err);
}

#[test]
fn several_invalid_files_list_every_reason() {
    let d = dirs(&[]);
    write(&d.conf, "10-x.conflist", "[]");
    write(
        &d.conf,
        "20-y.conflist",
        &list_json("net", "1.0.0", &["bridge"]),
    );
    let err = cni(&d).load().unwrap_err().to_string();
    assert!(err.starts_with("no valid network config in "), "{err}");
    assert!(
        err.contains("10-x.conflist: the top level is not a JSON object"),
        "{err}"
    );
    assert!(err.contains("plugin \"bridge\" not found"), "{err}");
}

#[test]
fn no_config_names_the_dir() {
    let d = dirs(&["bridge"]);
    let err = cni(&d).load().unwrap_err();
    assert!(err.is_config_error());
    assert_eq!(
        err.to_string(),
        format!("no network config found in {}", d.conf.display())
    );
    let missing = d.conf.join("nope");
    let err = Cni::new(&missing, vec![]).load().unwrap_err().to_string();
    assert_eq!(
        err,
        format!("no network config found in {}", missing.display())
    );
}

#[test]
fn missing_plugin_names_it_and_every_dir() {
    let d = dirs(&["bridge"]);
    write(
        &d.conf,
        "10-a.conflist",
        &list_json("net", "1.0.0", &["bridge", "portmap"]),
    );
    let other = d.bin.join("nothing-here");
    let c = Cni::new(&d.conf, vec![other.clone(), d.bin.clone()]);
    let err = c.load().unwrap_err().to_string();
    assert_eq!(
        err,
        format!(
            "plugin \"portmap\" not found in {}, {} (needed by 10-a.conflist)",
            other.display(),
            d.bin.display()
        )
    );
    // A non-executable file does not count.
    let p = d.bin.join("portmap");
    std::fs::write(&p, "").unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644)).unwrap();
    assert!(c.load().is_err());
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
    assert!(c.load().is_ok());
}

#[test]
fn plugin_is_found_in_the_first_dir_that_has_it() {
    let d1 = dirs(&["bridge"]);
    let d2 = dirs(&["bridge", "loopback"]);
    write(
        &d1.conf,
        "1.conflist",
        &list_json("n", "1.0.0", &["bridge", "loopback"]),
    );
    let c = Cni::new(&d1.conf, vec![d1.bin.clone(), d2.bin.clone()]);
    let list = c.load().unwrap();
    assert_eq!(list.plugins[0].binary, d1.bin.join("bridge"));
    assert_eq!(list.plugins[1].binary, d2.bin.join("loopback"));
}

#[test]
fn status_turns_ready_when_a_config_appears() {
    let d = dirs(&["bridge"]);
    let c = cni(&d);
    assert!(c.status().unwrap_err().contains("no network config found"));
    write(
        &d.conf,
        "10-a.conflist",
        &list_json("net", "1.0.0", &["bridge"]),
    );
    assert_eq!(c.status(), Ok(()));
    std::fs::remove_file(d.conf.join("10-a.conflist")).unwrap();
    assert!(c.status().is_err());
}

#[test]
fn symlinked_configs_are_followed_and_dirs_ignored() {
    let d = dirs(&["bridge"]);
    std::fs::create_dir(d.conf.join("00-dir.conflist")).unwrap();
    let target = d.bin.join("real.json");
    std::fs::write(&target, list_json("linked", "1.0.0", &["bridge"])).unwrap();
    std::os::unix::fs::symlink(&target, d.conf.join("10-link.conflist")).unwrap();
    assert_eq!(cni(&d).load().unwrap().name, "linked");
}

#[test]
fn version_handling() {
    for v in ["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"] {
        let list = parse_config(list_json("n", v, &["a", "b"]).as_bytes(), "f", true).unwrap();
        assert_eq!(list.cni_version, v);
    }
    // Old versions: one plugin only (no prevResult chaining).
    parse_config(list_json("n", "0.2.0", &["a"]).as_bytes(), "f", true).unwrap();
    let err = parse_config(list_json("n", "0.2.0", &["a", "b"]).as_bytes(), "f", true)
        .unwrap_err()
        .to_string();
    assert!(err.contains("cannot chain plugins"), "{err}");
    let err = parse_config(list_json("n", "2.0.0", &["a"]).as_bytes(), "f", true)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("cniVersion \"2.0.0\" is not supported (supported: 0.1.0"),
        "{err}"
    );
    let err = parse_config(
        br#"{"name":"n","plugins":[{"type":"a"}]}"#,
        "f.conflist",
        true,
    )
    .unwrap_err()
    .to_string();
    assert_eq!(
        err,
        "invalid network config f.conflist: \"cniVersion\" is missing"
    );
}

#[test]
fn structural_validation() {
    let cases: &[(&str, bool, &str)] = &[
        (
            r#"{"cniVersion":"1.0.0","plugins":[{"type":"a"}]}"#,
            true,
            "\"name\" is missing",
        ),
        (
            r#"{"cniVersion":"1.0.0","name":"bad name","plugins":[{"type":"a"}]}"#,
            true,
            "network name \"bad name\" is invalid",
        ),
        (
            r#"{"cniVersion":"1.0.0","name":"n"}"#,
            true,
            "\"plugins\" is missing",
        ),
        (
            r#"{"cniVersion":"1.0.0","name":"n","plugins":[]}"#,
            true,
            "\"plugins\" is empty",
        ),
        (
            r#"{"cniVersion":"1.0.0","name":"n","plugins":[{"bridge":"x"}]}"#,
            true,
            "plugins[0]: \"type\" is missing",
        ),
        (
            r#"{"cniVersion":"1.0.0","name":"n","plugins":[{"type":"../sh"}]}"#,
            true,
            "is not a file name",
        ),
        (
            r#"{"cniVersion":"1.0.0","name":"n","plugins":[{"type":"a","capabilities":[]}]}"#,
            true,
            "\"capabilities\" is not an object",
        ),
        (
            r#"{"cniVersion":"1.0.0","name":"n"}"#,
            false,
            "plugins[0]: \"type\" is missing",
        ),
        (
            r#"{"cniVersion":1,"name":"n","type":"a"}"#,
            false,
            "\"cniVersion\" is not a string",
        ),
    ];
    for (text, is_list, want) in cases {
        let err = parse_config(text.as_bytes(), "f", *is_list)
            .unwrap_err()
            .to_string();
        assert!(err.contains(want), "{text}: {err}");
    }
    let list = parse_config(
        br#"{"cniVersion":"1.0.0","name":"n","disableCheck":"true","plugins":[{"type":"a"}]}"#,
        "f",
        true,
    )
    .unwrap();
    assert!(list.disable_check);
}

#[test]
fn oversized_config_is_rejected() {
    let d = dirs(&["bridge"]);
    let mut text = list_json("n", "1.0.0", &["bridge"]);
    text.pop();
    text.push_str(&format!(
        ",\"pad\":\"{}\"}}",
        "x".repeat(MAX_CONFIG_SIZE as usize)
    ));
    write(&d.conf, "10-big.conflist", &text);
    let err = cni(&d).load().unwrap_err().to_string();
    assert!(err.contains("larger than 1048576 bytes"), "{err}");
}

#[test]
fn parses_0_2_0_result() {
    let raw = json!({
        "cniVersion": "0.2.0",
        "ip4": {"ip": "10.1.0.5/24", "gateway": "10.1.0.1", "routes": [{"dst": "0.0.0.0/0"}]},
        "ip6": {"ip": "fd00::5/64"},
        "dns": {"nameservers": ["10.1.0.1"]}
    });
    let r = CniResult::parse(&raw, "0.2.0").unwrap();
    assert_eq!(r.cni_version, "0.2.0");
    assert_eq!(r.ips.len(), 2);
    assert_eq!(r.ips[0].address, "10.1.0.5/24");
    assert_eq!(r.ips[0].gateway.as_deref(), Some("10.1.0.1"));
    assert_eq!(r.ips[1].gateway, None);
    assert_eq!(
        r.routes,
        vec![Route {
            dst: "0.0.0.0/0".into(),
            gw: None
        }]
    );
    assert_eq!(r.dns.nameservers, ["10.1.0.1"]);
}

/// What the bridge plugin (v1.1.1) prints, in 0.3.1 and 0.4.0 shape.
fn bridge_result(version: &str) -> Value {
    json!({
        "cniVersion": version,
        "interfaces": [
            {"name": "cni0", "mac": "aa:aa:aa:aa:aa:aa"},
            {"name": "veth1234", "mac": "bb:bb:bb:bb:bb:bb"},
            {"name": "eth0", "mac": "cc:cc:cc:cc:cc:cc", "sandbox": "/run/netns/x"}
        ],
        "ips": [
            {"version": "4", "interface": 2, "address": "10.88.0.2/16", "gateway": "10.88.0.1"},
            {"version": "6", "interface": 2, "address": "fd00:88::2/64", "gateway": "fd00:88::1"},
            {"version": "4", "interface": 0, "address": "10.88.0.1/16"}
        ],
        "routes": [{"dst": "0.0.0.0/0", "gw": "10.88.0.1"}],
        "dns": {}
    })
}

#[test]
fn parses_0_3_1_and_0_4_0_results() {
    for v in ["0.3.0", "0.3.1", "0.4.0"] {
        let r = CniResult::parse(&bridge_result(v), "1.0.0").unwrap();
        assert_eq!(r.cni_version, v);
        assert_eq!(r.interfaces.len(), 3);
        assert_eq!(r.interfaces[2].sandbox, "/run/netns/x");
        assert_eq!(r.ips.len(), 3);
        assert_eq!(r.ips[0].interface, Some(2));
        assert_eq!(r.routes[0].gw.as_deref(), Some("10.88.0.1"));
        // Only the addresses inside the pod.
        let pod: Vec<_> = r.pod_ips().into_iter().map(|i| i.address).collect();
        assert_eq!(pod, ["10.88.0.2/16", "fd00:88::2/64"]);
    }
}

#[test]
fn parses_1_0_0_result() {
    let raw = json!({
        "cniVersion": "1.0.0",
        "interfaces": [{"name": "eth0", "sandbox": "/proc/1/ns/net"}],
        "ips": [{"address": "10.2.0.7/24", "gateway": "10.2.0.1", "interface": 0}],
        "dns": {"nameservers": ["1.1.1.1"], "domain": "cluster.local", "search": ["a"], "options": ["ndots:5"]}
    });
    let r = CniResult::parse(&raw, "1.0.0").unwrap();
    assert_eq!(r.ips[0].ip(), Some("10.2.0.7".parse().unwrap()));
    assert_eq!(r.dns.domain.as_deref(), Some("cluster.local"));
    assert_eq!(r.dns.options, ["ndots:5"]);
    // No cniVersion in the result: the list's is assumed.
    let r = CniResult::parse(&json!({"ips": [{"address": "10.2.0.8/24"}]}), "1.0.0").unwrap();
    assert_eq!(r.cni_version, "1.0.0");
    // No interfaces: every address counts as the pod's.
    assert_eq!(r.pod_ips().len(), 1);
}

#[test]
fn rejects_malformed_results() {
    let cases = [
        (json!([]), "not a JSON object"),
        (
            json!({"cniVersion": "1.0.0", "ips": [{"address": "10.0.0.1"}]}),
            "ips[0].address \"10.0.0.1\" is not an address with a prefix length",
        ),
        (
            json!({"cniVersion": "1.0.0", "ips": [{"address": "10.0.0.1/33"}]}),
            "not an address",
        ),
        (
            json!({"cniVersion": "1.0.0", "ips": {}}),
            "\"ips\" is not an array",
        ),
        (
            json!({"cniVersion": "1.0.0", "ips": [{"gateway": "1.2.3.4"}]}),
            "ips[0].address is missing",
        ),
        (json!({"cniVersion": "9.0.0"}), "not supported"),
        (
            json!({"cniVersion": "0.2.0", "ip4": {"gateway": "x"}}),
            "ip4.ip is missing",
        ),
    ];
    for (raw, want) in cases {
        let err = CniResult::parse(&raw, "1.0.0").unwrap_err();
        assert!(err.contains(want), "{raw}: {err}");
    }
}

fn pod() -> PodNetwork {
    PodNetwork {
        pod_id: "abc123".into(),
        pod_name: "web".into(),
        pod_namespace: "default".into(),
        pod_uid: "u-1".into(),
        netns: "/run/netns/x".into(),
        ..Default::default()
    }
}

#[test]
fn cni_args_format() {
    assert_eq!(
        cni_args(&pod()).unwrap(),
        "IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=web;\
         K8S_POD_INFRA_CONTAINER_ID=abc123;K8S_POD_UID=u-1"
    );
    let mut p = pod();
    p.pod_name = "a;b=c".into();
    let err = cni_args(&p).unwrap_err().to_string();
    assert!(err.contains("K8S_POD_NAME"), "{err}");
}

#[test]
fn capability_args_shapes() {
    let mut p = pod();
    assert!(capability_args(&p).is_empty());
    p.port_mappings = vec![
        PortMapping {
            host_port: 8080,
            container_port: 80,
            protocol: Protocol::Tcp,
            host_ip: String::new(),
        },
        PortMapping {
            host_port: 0,
            container_port: 81,
            protocol: Protocol::Tcp,
            host_ip: String::new(),
        },
        PortMapping {
            host_port: 5353,
            container_port: 53,
            protocol: Protocol::Udp,
            host_ip: "127.0.0.1".into(),
        },
    ];
    p.dns = Some(Dns {
        servers: vec!["10.96.0.10".into()],
        searches: vec!["svc.cluster.local".into()],
        options: vec!["ndots:5".into()],
    });
    p.bandwidth = Some(Bandwidth {
        ingress_rate: 1000,
        ingress_burst: 2000,
        egress_rate: 3000,
        egress_burst: 4000,
    });
    let caps = capability_args(&p);
    assert_eq!(
        caps["portMappings"],
        json!([
            {"hostPort": 8080, "containerPort": 80, "protocol": "tcp"},
            {"hostPort": 5353, "containerPort": 53, "protocol": "udp", "hostIP": "127.0.0.1"}
        ])
    );
    assert_eq!(
        caps["dns"],
        json!({"servers": ["10.96.0.10"], "searches": ["svc.cluster.local"], "options": ["ndots:5"]})
    );
    assert_eq!(
        caps["bandwidth"],
        json!({"ingressRate": 1000, "ingressBurst": 2000, "egressRate": 3000, "egressBurst": 4000})
    );
    assert!(
        !caps.contains_key("ipRanges"),
        "no pod CIDR yet: no ipRanges"
    );
    p.ip_ranges = vec!["10.244.1.0/24".into(), "fd00:1::/64".into()];
    assert_eq!(
        capability_args(&p)["ipRanges"],
        json!([[{"subnet": "10.244.1.0/24"}], [{"subnet": "fd00:1::/64"}]])
    );

    // Only what a plugin declares reaches it.
    let declared = BTreeSet::from(["portMappings".to_string(), "ips".to_string()]);
    let rc = runtime_config(&declared, &caps);
    assert_eq!(rc.keys().collect::<Vec<_>>(), ["portMappings"]);
    assert!(runtime_config(&BTreeSet::new(), &caps).is_empty());
}

#[test]
fn plugin_stdin_injection() {
    let list = parse_config(
        br#"{"cniVersion":"0.4.0","name":"net","plugins":[
              {"type":"bridge","bridge":"cni0","ipam":{"type":"host-local"}},
              {"type":"portmap","capabilities":{"portMappings":true},
               "runtimeConfig":{"stale":1},"prevResult":{"stale":true}}]}"#,
        "f",
        true,
    )
    .unwrap();
    let mut p = pod();
    p.port_mappings = vec![PortMapping {
        host_port: 8080,
        container_port: 80,
        ..Default::default()
    }];
    p.dns = Some(Dns::default());
    let caps = capability_args(&p);

    // First plugin: declares nothing, gets no runtimeConfig and no prevResult.
    let b = &list.plugins[0];
    let v: Value = serde_json::from_slice(&config::plugin_stdin(
        &list.name,
        &list.cni_version,
        &b.conf,
        runtime_config(&b.capabilities, &caps),
        None,
    ))
    .unwrap();
    assert_eq!(
        v,
        json!({"type":"bridge","bridge":"cni0","ipam":{"type":"host-local"},"name":"net","cniVersion":"0.4.0"})
    );

    // Second: its declared capability only, and the previous result.
    let pm = &list.plugins[1];
    let prev = json!({"cniVersion":"0.4.0","ips":[{"version":"4","address":"10.0.0.2/24"}]});
    let v: Value = serde_json::from_slice(&config::plugin_stdin(
        &list.name,
        &list.cni_version,
        &pm.conf,
        runtime_config(&pm.capabilities, &caps),
        Some(&prev),
    ))
    .unwrap();
    assert_eq!(v["name"], "net");
    assert_eq!(v["cniVersion"], "0.4.0");
    assert_eq!(v["prevResult"], prev);
    assert_eq!(
        v["runtimeConfig"],
        json!({"portMappings": [{"hostPort": 8080, "containerPort": 80, "protocol": "tcp"}]})
    );
}

#[test]
fn stored_config_replaces_prev_result() {
    let plugin = AttachedPlugin {
        plugin_type: "portmap".into(),
        config: r#"{"type":"portmap","prevResult":{"old":1},"name":"n"}"#.into(),
    };
    let fin = json!({"new": 2});
    let v: Value = serde_json::from_slice(&stored_config(&plugin, Some(&fin)).unwrap()).unwrap();
    assert_eq!(
        v,
        json!({"type":"portmap","prevResult":{"new":2},"name":"n"})
    );
    let v: Value = serde_json::from_slice(&stored_config(&plugin, None).unwrap()).unwrap();
    assert_eq!(v, json!({"type":"portmap","name":"n"}));
}

#[test]
fn attachment_ip_helpers_and_serde() {
    let result = CniResult::parse(&bridge_result("0.4.0"), "0.4.0").unwrap();
    let att = Attachment {
        network_name: "net".into(),
        cni_version: "0.4.0".into(),
        source: "/etc/cni/net.d/10-a.conflist".into(),
        ifname: "eth0".into(),
        disable_check: false,
        plugins: vec![AttachedPlugin {
            plugin_type: "bridge".into(),
            config: "{}".into(),
        }],
        prev_results: vec![bridge_result("0.4.0").to_string()],
        ips: result.pod_ips(),
        result,
        pod: pod(),
    };
    assert_eq!(att.ipv4().as_deref(), Some("10.88.0.2"));
    assert_eq!(att.ipv6().as_deref(), Some("fd00:88::2"));
    assert_eq!(att.primary_ip().as_deref(), Some("10.88.0.2"));
    assert_eq!(att.additional_ips(), ["fd00:88::2"]);
    let text = serde_json::to_string(&att).unwrap();
    let back: Attachment = serde_json::from_str(&text).unwrap();
    assert_eq!(back, att);

    let mut v6only = att.clone();
    v6only.ips.retain(|i| i.address.contains(':'));
    assert_eq!(v6only.ipv4(), None);
    assert_eq!(v6only.primary_ip().as_deref(), Some("fd00:88::2"));
    assert!(v6only.additional_ips().is_empty());
}

#[test]
fn add_output_that_is_an_error_is_an_error() {
    let err = parse_add_output(
        "p",
        br#"{"cniVersion":"1.0.0","code":7,"msg":"boom"}"#,
        "1.0.0",
    )
    .unwrap_err();
    assert_eq!(
        err.to_string(),
        "CNI plugin \"p\" ADD failed (code 7): boom"
    );
    let err = parse_add_output("p", b"  \n", "1.0.0")
        .unwrap_err()
        .to_string();
    assert!(err.contains("printed no result"), "{err}");
    let err = parse_add_output("p", b"garbage", "1.0.0")
        .unwrap_err()
        .to_string();
    assert!(err.contains("result is not JSON"), "{err}");
}

#[test]
fn plugin_error_parsing() {
    use std::os::unix::process::ExitStatusExt;
    let status = std::process::ExitStatus::from_raw(1 << 8);
    let e = exec::plugin_error(
        "bridge",
        "ADD",
        status,
        br#"{"cniVersion":"1.0.0","code":11,"msg":"failed to allocate","details":"range full"}"#,
        b"",
    );
    assert_eq!(
        e.to_string(),
        "CNI plugin \"bridge\" ADD failed (code 11): failed to allocate; range full"
    );
    let e = exec::plugin_error("x", "DEL", status, b"", b"panic: oops\n");
    assert_eq!(
        e.to_string(),
        "CNI plugin \"x\" DEL failed (code 999): panic: oops (exit status 1)"
    );
    let e = exec::plugin_error("x", "DEL", std::process::ExitStatus::from_raw(9), b"", b"");
    assert!(
        e.to_string().contains("killed by signal 9, no output"),
        "{e}"
    );
}

#[test]
fn exec_environment() {
    let dirs = [PathBuf::from("/opt/cni/bin"), PathBuf::from("/usr/lib/cni")];
    let inv = exec::Invocation {
        plugin: "bridge",
        binary: Path::new("/usr/lib/cni/bridge"),
        command: "DEL",
        container_id: "abc",
        netns: None,
        ifname: "eth0",
        cni_args: "IgnoreUnknown=1",
        bin_dirs: &dirs,
        stdin: b"{}",
        timeout: std::time::Duration::from_secs(1),
    };
    let env: std::collections::BTreeMap<_, _> = exec::cni_env(&inv).into_iter().collect();
    assert_eq!(env["CNI_COMMAND"], "DEL");
    assert_eq!(env["CNI_CONTAINERID"], "abc");
    assert_eq!(env["CNI_IFNAME"], "eth0");
    assert_eq!(env["CNI_ARGS"], "IgnoreUnknown=1");
    assert_eq!(env["CNI_PATH"], "/opt/cni/bin:/usr/lib/cni");
    assert!(!env.contains_key("CNI_NETNS"));
    let ns = PathBuf::from("/run/netns/x");
    let inv = exec::Invocation {
        netns: Some(&ns),
        command: "ADD",
        ..inv
    };
    let env: std::collections::BTreeMap<_, _> = exec::cni_env(&inv).into_iter().collect();
    assert_eq!(env["CNI_NETNS"], "/run/netns/x");
}

#[test]
fn netns_presence() {
    assert_eq!(netns_if_present(Path::new("")), None);
    assert_eq!(netns_if_present(Path::new("/nonexistent/netns")), None);
    // A plain file (what an unmounted pin leaves) is not a netns.
    let f = tempfile::NamedTempFile::new().unwrap();
    assert_eq!(netns_if_present(f.path()), None);
    let own = PathBuf::from("/proc/self/ns/net");
    assert_eq!(netns_if_present(&own), Some(own));
}
