//! The Helm chart (charts/crust) and the plain manifests (manifests/),
//! with the real tools and no cluster: `helm lint --strict` and `helm
//! template` over a matrix of values, every rendered object validated by
//! `kubernetes-validate --strict` at the oldest and newest Kubernetes the
//! chart supports (1.30, 1.37), assertions on the parsed render
//! (privileges, host mounts, probes, env, tolerations, RBAC,
//! RuntimeClasses, the test hook), values.schema.json refusing wrong types,
//! the config drop-in accepted by `crustd config check`, and manifests/ in
//! sync with the chart.
//!
//! The tools come from hack/install-chart-tools.sh (CRUST_CHART_TOOLS,
//! default /var/tmp/crust-chart-tools). Needs no root and no cluster.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

use serde_yaml_ng::Value;

/// The Kubernetes versions every render is validated at: the oldest the
/// chart supports (its kubeVersion) and the newest kubernetes-validate has.
/// Every Kubernetes version the chart supports (Chart.yaml's kubeVersion).
const KUBE_VERSIONS: [&str; 8] = [
    "1.30", "1.31", "1.32", "1.33", "1.34", "1.35", "1.36", "1.37",
];
const NAMESPACE: &str = "kube-system";
const RELEASE: &str = "crust";

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap()
}

fn chart_dir() -> PathBuf {
    repo().join("charts/crust")
}

struct Tools {
    helm: PathBuf,
    validate: PathBuf,
    /// HELM_{CACHE,CONFIG,DATA}_HOME: nothing written under $HOME.
    helm_home: PathBuf,
}

fn tools() -> &'static Tools {
    static TOOLS: OnceLock<Tools> = OnceLock::new();
    TOOLS.get_or_init(|| {
        let prefix = std::env::var_os("CRUST_CHART_TOOLS")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from("/var/tmp/crust-chart-tools"));
        let helm = prefix.join("bin/helm");
        let validate = prefix.join("venv/bin/kubernetes-validate");
        for tool in [&helm, &validate] {
            assert!(
                tool.is_file(),
                "{} is missing: run hack/install-chart-tools.sh (as root) to install helm, \
                 kubectl and kubernetes-validate under {} (CRUST_CHART_TOOLS)",
                tool.display(),
                prefix.display()
            );
        }
        let helm_home = Path::new(env!("CARGO_TARGET_TMPDIR")).join("chart-helm-home");
        std::fs::create_dir_all(&helm_home).unwrap();
        Tools {
            helm,
            validate,
            helm_home,
        }
    })
}

fn helm(args: &[&str]) -> Output {
    let t = tools();
    Command::new(&t.helm)
        .args(args)
        .current_dir(repo())
        .env("HELM_CACHE_HOME", t.helm_home.join("cache"))
        .env("HELM_CONFIG_HOME", t.helm_home.join("config"))
        .env("HELM_DATA_HOME", t.helm_home.join("data"))
        .output()
        .expect("run helm")
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// A set of values: `--set`-style flags plus an optional values file.
struct Case {
    name: &'static str,
    flags: &'static [&'static str],
    values: Option<&'static str>,
}

impl Case {
    /// The helm flags for this case (a values file is written to the
    /// target's tmp dir).
    fn args(&self) -> Vec<String> {
        let mut args: Vec<String> = self.flags.iter().map(|s| s.to_string()).collect();
        if let Some(values) = self.values {
            let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("chart-values");
            std::fs::create_dir_all(&dir).unwrap();
            let file = dir.join(format!("{}.yaml", self.name));
            std::fs::write(&file, values).unwrap();
            args.push("--values".into());
            args.push(file.display().to_string());
        }
        args
    }
}

const HANDLERS_VALUES: &str = "\
config:
  runtime:
    handlers:
      crust-debug:
        shim: crust-shim
        options: {}
      crust-gpu:
        shim: crust-shim
runtimeClasses:
  - name: crust
    handler: crust
  - name: crust-debug
    handler: crust-debug
    overhead:
      podFixed:
        memory: 16Mi
        cpu: 10m
  - name: crust-gpu
    handler: crust-gpu
    nodeSelector:
      example.com/gpu: \"true\"
    tolerations:
      - key: example.com/gpu
        operator: Exists
        effect: NoSchedule
";

const CONFIG_VALUES: &str = "\
config:
  cgroup_driver: systemd
  registries:
    mirrors:
      docker.io: [\"https://mirror.example.com\"]
    plain_http: [\"registry.internal:5000\"]
  cni:
    conf_dir: /etc/cni/crust.d
    bin_dirs: [/opt/cni/bin, /usr/lib/cni]
  runtime:
    handlers:
      crust-debug:
        shim: crust-shim
        options: {}
  log:
    level: debug
";

const CUSTOM_SCHEDULING_VALUES: &str = "\
installLabel:
  key: example.com/runtime-install
  value: crust
nodeSelector:
  kubernetes.io/os: linux
tolerations:
  - key: node-role.kubernetes.io/control-plane
    operator: Exists
    effect: NoSchedule
image:
  repository: registry.example.com/crust/installer
  tag: 0.1.0-rc1
  pullPolicy: Always
";

/// The values matrix every lint and validation runs over.
const CASES: &[Case] = &[
    Case {
        name: "defaults",
        flags: &[],
        values: None,
    },
    Case {
        name: "nsenter",
        flags: &["--set", "hostAccess=nsenter"],
        values: None,
    },
    Case {
        name: "switch-drain",
        flags: &[
            "--set",
            "kubelet.switch=true",
            "--set",
            "kubelet.drain=true",
            "--set",
            "kubelet.drainTimeoutSeconds=900",
            "--set",
            "kubelet.distribution=kubeadm",
            "--set",
            "kubelet.runtimeRequestTimeout=20m",
        ],
        values: None,
    },
    Case {
        name: "switch-no-drain",
        flags: &[
            "--set",
            "kubelet.switch=true",
            "--set",
            "kubelet.distribution=k3s",
        ],
        values: None,
    },
    Case {
        name: "uninstall",
        flags: &["--set", "mode=uninstall"],
        values: None,
    },
    Case {
        name: "uninstall-nsenter-switch-drain",
        flags: &[
            "--set",
            "mode=uninstall",
            "--set",
            "hostAccess=nsenter",
            "--set",
            "kubelet.switch=true",
            "--set",
            "kubelet.drain=true",
        ],
        values: None,
    },
    Case {
        name: "handlers",
        flags: &[],
        values: Some(HANDLERS_VALUES),
    },
    Case {
        name: "verify",
        flags: &["--set", "verify.enabled=true"],
        values: None,
    },
    Case {
        name: "config",
        flags: &[],
        values: Some(CONFIG_VALUES),
    },
    Case {
        name: "custom-scheduling",
        flags: &[
            "--set",
            "hostNetwork=false",
            "--set",
            "updateStrategy.maxUnavailable=10%",
        ],
        values: Some(CUSTOM_SCHEDULING_VALUES),
    },
];

fn case(name: &str) -> &'static Case {
    CASES
        .iter()
        .find(|c| c.name == name)
        .unwrap_or_else(|| panic!("no case {name}"))
}

/// `helm template` output for these extra flags, or panics with helm's
/// message.
fn template_text(args: &[String]) -> String {
    let chart = chart_dir().display().to_string();
    let mut all = vec![
        "template".to_string(),
        RELEASE.into(),
        chart,
        "--namespace".into(),
        NAMESPACE.into(),
    ];
    all.extend(args.iter().cloned());
    let all: Vec<&str> = all.iter().map(String::as_str).collect();
    let out = helm(&all);
    assert!(out.status.success(), "helm {all:?} failed:\n{}", text(&out));
    String::from_utf8(out.stdout).unwrap()
}

/// `helm lint --strict` with these flags: (passed, output).
fn lint(args: &[String]) -> (bool, String) {
    let chart = chart_dir().display().to_string();
    let mut all = vec![
        "lint".to_string(),
        "--strict".into(),
        chart,
        "--namespace".into(),
        NAMESPACE.into(),
    ];
    all.extend(args.iter().cloned());
    let all: Vec<&str> = all.iter().map(String::as_str).collect();
    let out = helm(&all);
    (out.status.success(), text(&out))
}

/// The documents of a multi-document YAML stream (split at `---` lines,
/// which helm puts between objects), without empty ones.
fn docs(yaml: &str) -> Vec<Value> {
    let mut chunks = vec![String::new()];
    for line in yaml.lines() {
        if line == "---" {
            chunks.push(String::new());
        } else {
            let last = chunks.last_mut().unwrap();
            last.push_str(line);
            last.push('\n');
        }
    }
    chunks
        .iter()
        .map(|c| {
            serde_yaml_ng::from_str::<Value>(c)
                .unwrap_or_else(|e| panic!("bad YAML ({e}) in:\n{c}"))
        })
        .filter(|v| !v.is_null())
        .collect()
}

/// A parsed render.
struct Render {
    text: String,
    objects: Vec<Value>,
}

impl Render {
    fn of(c: &Case) -> Render {
        Render::with(&c.args())
    }

    fn with(args: &[String]) -> Render {
        let text = template_text(args);
        let objects = docs(&text);
        Render { text, objects }
    }

    fn all(&self, kind: &str) -> Vec<&Value> {
        self.objects.iter().filter(|o| o["kind"] == kind).collect()
    }

    fn one(&self, kind: &str) -> &Value {
        let all = self.all(kind);
        assert_eq!(
            all.len(),
            1,
            "expected one {kind}, got {}:\n{}",
            all.len(),
            self.text
        );
        all[0]
    }

    fn daemonset(&self) -> &Value {
        self.one("DaemonSet")
    }

    fn pod_spec(&self) -> &Value {
        &self.daemonset()["spec"]["template"]["spec"]
    }

    fn container(&self) -> &Value {
        let containers = seq(&self.pod_spec()["containers"]);
        assert_eq!(containers.len(), 1, "{}", self.text);
        &containers[0]
    }

    fn env(&self) -> BTreeMap<String, Value> {
        seq(&self.container()["env"])
            .iter()
            .map(|e| {
                let v = if e["value"].is_null() {
                    e["valueFrom"].clone()
                } else {
                    e["value"].clone()
                };
                (s(&e["name"]).to_string(), v)
            })
            .collect()
    }

    fn env_str(&self, name: &str) -> String {
        let env = self.env();
        let v = env
            .get(name)
            .unwrap_or_else(|| panic!("no env {name}:\n{}", self.text));
        s(v).to_string()
    }

    /// hostPath volumes: name -> (path, type).
    fn host_paths(&self) -> BTreeMap<String, (String, String)> {
        seq(&self.pod_spec()["volumes"])
            .iter()
            .filter(|v| !v["hostPath"].is_null())
            .map(|v| {
                (
                    s(&v["name"]).to_string(),
                    (
                        s(&v["hostPath"]["path"]).to_string(),
                        s(&v["hostPath"]["type"]).to_string(),
                    ),
                )
            })
            .collect()
    }

    /// Volume mounts: volume name -> (mountPath, mountPropagation or "").
    fn mounts(&self) -> BTreeMap<String, (String, String)> {
        seq(&self.container()["volumeMounts"])
            .iter()
            .map(|m| {
                (
                    s(&m["name"]).to_string(),
                    (
                        s(&m["mountPath"]).to_string(),
                        m["mountPropagation"].as_str().unwrap_or("").to_string(),
                    ),
                )
            })
            .collect()
    }

    /// The host paths and where the container sees them.
    fn host_mounts(&self) -> BTreeSet<(String, String, String)> {
        let mounts = self.mounts();
        self.host_paths()
            .into_iter()
            .map(|(name, (path, ty))| {
                let (at, _) = mounts
                    .get(&name)
                    .unwrap_or_else(|| panic!("hostPath volume {name} is not mounted"));
                (path, ty, at.clone())
            })
            .collect()
    }

    fn cluster_role_rules(&self) -> Vec<(Vec<String>, Vec<String>, Vec<String>)> {
        seq(&self.one("ClusterRole")["rules"])
            .iter()
            .map(|r| {
                (
                    strs(&r["apiGroups"]),
                    strs(&r["resources"]),
                    strs(&r["verbs"]),
                )
            })
            .collect()
    }
}

fn seq(v: &Value) -> &Vec<Value> {
    v.as_sequence()
        .unwrap_or_else(|| panic!("not a list: {v:?}"))
}

fn s(v: &Value) -> &str {
    v.as_str().unwrap_or_else(|| panic!("not a string: {v:?}"))
}

fn strs(v: &Value) -> Vec<String> {
    seq(v).iter().map(|x| s(x).to_string()).collect()
}

fn yaml(text: &str) -> Value {
    serde_yaml_ng::from_str(text).unwrap()
}

fn app_version() -> String {
    let chart = yaml(&std::fs::read_to_string(chart_dir().join("Chart.yaml")).unwrap());
    s(&chart["appVersion"]).to_string()
}

/// Runs kubernetes-validate --strict over files at one version and checks
/// every object in them was validated and passed.
fn validate(files: &[(PathBuf, usize)], version: &str) {
    let mut cmd = Command::new(&tools().validate);
    cmd.args(["--strict", "--kubernetes-version", version]);
    for (f, _) in files {
        cmd.arg(f);
    }
    let out = cmd.output().expect("run kubernetes-validate");
    let report = text(&out);
    assert!(
        out.status.success(),
        "kubernetes-validate --strict at {version} failed:\n{report}"
    );
    for (f, count) in files {
        let passed = report
            .lines()
            .filter(|l| {
                l.starts_with("INFO ")
                    && l.contains(&format!("{} passed for resource", f.display()))
                    && l.ends_with(&format!("against version {version}"))
            })
            .count();
        assert_eq!(
            passed,
            *count,
            "{}: {count} objects, {passed} validated at {version}:\n{report}",
            f.display()
        );
    }
    let other: Vec<&str> = report
        .lines()
        .filter(|l| !l.starts_with("INFO ") || !l.contains(" passed for resource "))
        .collect();
    assert!(
        other.is_empty(),
        "kubernetes-validate at {version} said:\n{report}"
    );
}

#[test]
fn every_case_lints_strictly_and_validates_on_1_30_to_1_37() {
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let mut files = Vec::new();
    for c in CASES {
        let (ok, out) = lint(&c.args());
        assert!(ok, "helm lint --strict ({}) failed:\n{out}", c.name);
        assert!(
            out.contains("1 chart(s) linted, 0 chart(s) failed"),
            "{}: {out}",
            c.name
        );
        let r = Render::of(c);
        assert!(!r.objects.is_empty(), "{}: empty render", c.name);
        let file = dir.path().join(format!("{}.yaml", c.name));
        std::fs::write(&file, &r.text).unwrap();
        files.push((file, r.objects.len()));
    }
    // The checked-in manifests too.
    for m in [
        "manifests/crust.yaml",
        "manifests/runtimeclass-examples.yaml",
    ] {
        let path = repo().join(m);
        let n = docs(&std::fs::read_to_string(&path).unwrap()).len();
        files.push((path, n));
    }
    for version in KUBE_VERSIONS {
        validate(&files, version);
    }
}

#[test]
fn the_validator_is_strict() {
    // An unknown field and a field of the wrong type: if these passed, the
    // validation above would prove nothing.
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    for (name, body, complaint) in [
        ("unknown", "handler: x\nschedulling: {}\n", "schedulling"),
        (
            "type",
            "handler: x\nscheduling:\n  nodeSelector: ready\n",
            "not of type",
        ),
    ] {
        let bad = dir.path().join(format!("{name}.yaml"));
        std::fs::write(
            &bad,
            format!("apiVersion: node.k8s.io/v1\nkind: RuntimeClass\nmetadata:\n  name: x\n{body}"),
        )
        .unwrap();
        for version in KUBE_VERSIONS {
            let out = Command::new(&tools().validate)
                .args(["--strict", "--kubernetes-version", version])
                .arg(&bad)
                .output()
                .unwrap();
            assert!(!out.status.success(), "{name} at {version}: {}", text(&out));
            assert!(
                text(&out).contains(complaint),
                "{name} at {version}: {}",
                text(&out)
            );
        }
    }
}

#[test]
fn daemonset_is_an_opt_in_node_critical_rolling_installer() {
    let r = Render::of(case("defaults"));
    let ds = r.daemonset();
    assert_eq!(ds["metadata"]["namespace"], NAMESPACE);
    assert_eq!(ds["spec"]["updateStrategy"]["type"], "RollingUpdate");
    assert_eq!(
        ds["spec"]["updateStrategy"]["rollingUpdate"]["maxUnavailable"],
        Value::from(1)
    );
    let pod = r.pod_spec();
    assert_eq!(pod["priorityClassName"], "system-node-critical");
    assert_eq!(
        pod["nodeSelector"],
        yaml("crust.dev/install: \"true\""),
        "the install label alone selects the nodes"
    );
    assert_eq!(
        pod["tolerations"],
        yaml("- operator: Exists"),
        "every taint"
    );
    // The pod template's labels are what the DaemonSet selects.
    let selector = ds["spec"]["selector"]["matchLabels"].as_mapping().unwrap();
    let labels = &ds["spec"]["template"]["metadata"]["labels"];
    for (k, v) in selector {
        assert_eq!(&labels[k.as_str().unwrap()], v);
    }
    assert_eq!(
        s(&r.container()["image"]),
        format!("127.0.0.1:5099/crust/installer:{}", app_version())
    );
    assert_eq!(r.container()["imagePullPolicy"], "IfNotPresent");
    assert_eq!(r.container()["args"], yaml("[daemon]"));
    // Uninstall is not on SIGTERM in install mode, but a stop may come
    // while an install is under way.
    assert_eq!(pod["terminationGracePeriodSeconds"], Value::from(300));
    assert_eq!(pod["hostNetwork"], Value::from(true));
    assert_eq!(pod["dnsPolicy"], "ClusterFirstWithHostNet");

    // Overridden: label, selector terms, tolerations, image, strategy.
    let r = Render::of(case("custom-scheduling"));
    let pod = r.pod_spec();
    assert_eq!(
        pod["nodeSelector"],
        yaml("example.com/runtime-install: crust\nkubernetes.io/os: linux")
    );
    assert_eq!(
        pod["tolerations"],
        yaml(
            "- key: node-role.kubernetes.io/control-plane\n  operator: Exists\n  effect: NoSchedule"
        )
    );
    assert_eq!(
        r.container()["image"],
        "registry.example.com/crust/installer:0.1.0-rc1"
    );
    assert_eq!(r.container()["imagePullPolicy"], "Always");
    assert_eq!(
        r.daemonset()["spec"]["updateStrategy"]["rollingUpdate"]["maxUnavailable"],
        "10%"
    );
    assert!(pod["hostNetwork"].is_null() && pod["dnsPolicy"].is_null());
}

#[test]
fn env_follows_the_installer_contract() {
    let r = Render::of(case("defaults"));
    let env = r.env();
    assert_eq!(
        env["NODE_NAME"],
        yaml("fieldRef:\n  fieldPath: spec.nodeName"),
        "NODE_NAME from the downward API"
    );
    let want = [
        ("CRUST_HOST_ROOT", "/host".to_string()),
        ("CRUST_HOST_EXEC", "dbus".into()),
        ("CRUST_VERSION", app_version()),
        ("CRUST_CONFIG_DIR", "/crust-installer/config.d".into()),
        ("CRUST_KUBELET_SWITCH", "false".into()),
        ("CRUST_KUBELET_DISTRIBUTION", "auto".into()),
        ("CRUST_DRAIN", "false".into()),
        ("CRUST_DRAIN_TIMEOUT", "600".into()),
        ("CRUST_RUNTIME_REQUEST_TIMEOUT", "15m".into()),
    ];
    for (name, value) in &want {
        assert_eq!(&r.env_str(name), value, "{name}");
    }
    // The drop-in dir is the ConfigMap holding 50-helm.yaml.
    let mounts = r.mounts();
    assert_eq!(mounts["config"].0, "/crust-installer/config.d");
    let cm_name = seq(&r.pod_spec()["volumes"])
        .iter()
        .find(|v| v["name"] == "config")
        .map(|v| s(&v["configMap"]["name"]).to_string())
        .unwrap();
    let cm = r.one("ConfigMap");
    assert_eq!(s(&cm["metadata"]["name"]), cm_name);
    assert_eq!(cm["metadata"]["namespace"], NAMESPACE);
    let keys: Vec<&str> = cm["data"]
        .as_mapping()
        .unwrap()
        .keys()
        .map(|k| k.as_str().unwrap())
        .collect();
    assert_eq!(keys, ["50-helm.yaml"]);

    let r = Render::of(case("switch-drain"));
    for (name, value) in [
        ("CRUST_KUBELET_SWITCH", "true"),
        ("CRUST_KUBELET_DISTRIBUTION", "kubeadm"),
        ("CRUST_DRAIN", "true"),
        ("CRUST_DRAIN_TIMEOUT", "900"),
        ("CRUST_RUNTIME_REQUEST_TIMEOUT", "20m"),
    ] {
        assert_eq!(r.env_str(name), value, "{name}");
    }
    assert_eq!(
        Render::of(case("nsenter")).env_str("CRUST_HOST_EXEC"),
        "nsenter"
    );
}

/// dbus mode's hostPaths (path, type, where mounted), without the kubelet
/// switch.
fn dbus_mounts() -> BTreeSet<(String, String, String)> {
    [
        ("/opt/crust", "DirectoryOrCreate", "/host/opt/crust"),
        ("/etc/crust", "DirectoryOrCreate", "/host/etc/crust"),
        (
            "/etc/systemd/system",
            "Directory",
            "/host/etc/systemd/system",
        ),
        (
            "/var/lib/crust-install",
            "DirectoryOrCreate",
            "/host/var/lib/crust-install",
        ),
        ("/run/crust", "DirectoryOrCreate", "/host/run/crust"),
        ("/run/systemd", "Directory", "/run/systemd"),
    ]
    .iter()
    .map(|(p, t, a)| (p.to_string(), t.to_string(), a.to_string()))
    .collect()
}

fn kubelet_mounts() -> BTreeSet<(String, String, String)> {
    ["/var/lib/kubelet", "/etc/kubernetes", "/etc/rancher"]
        .iter()
        .map(|p| (p.to_string(), String::new(), format!("/host{p}")))
        .collect()
}

/// Every hostPath volume in the rendered text comes after a comment saying
/// why it is there.
fn assert_host_paths_commented(r: &Render) {
    let lines: Vec<&str> = r.text.lines().collect();
    let mut seen = 0;
    for (i, l) in lines.iter().enumerate() {
        if l.trim_start().starts_with("- name: ")
            && lines.get(i + 1).is_some_and(|n| n.trim() == "hostPath:")
        {
            seen += 1;
            assert!(
                i > 0 && lines[i - 1].trim_start().starts_with('#'),
                "hostPath volume without a comment: {l}\n{}",
                r.text
            );
        }
    }
    assert_eq!(seen, r.host_paths().len());
}

#[test]
fn dbus_mode_is_unprivileged_with_only_the_listed_host_paths() {
    let r = Render::of(case("defaults"));
    let pod = r.pod_spec();
    // The host's PID namespace (the contract: the bus connection to the
    // host systemd needs its PID visible), nothing else of the host's.
    assert_eq!(pod["hostPID"], Value::from(true), "{}", r.text);
    assert!(pod["hostIPC"].is_null());
    let sc = &r.container()["securityContext"];
    assert_eq!(sc["privileged"], Value::from(false));
    assert_eq!(sc["allowPrivilegeEscalation"], Value::from(false));
    assert_eq!(sc["readOnlyRootFilesystem"], Value::from(true));
    assert_eq!(sc["capabilities"]["drop"], yaml("[ALL]"));
    assert_eq!(
        sc["capabilities"]["add"],
        yaml("[CHOWN, DAC_OVERRIDE, FOWNER]"),
        "root-owned files only: no SYS_ADMIN"
    );
    assert_eq!(pod["securityContext"]["runAsUser"], Value::from(0));
    assert_eq!(
        pod["securityContext"]["seccompProfile"]["type"],
        "RuntimeDefault"
    );
    assert_eq!(r.host_mounts(), dbus_mounts(), "{}", r.text);
    // Host mounts under which the host mounts and unmounts follow it in.
    let mounts = r.mounts();
    for v in ["host-run-crust", "host-run-systemd"] {
        assert_eq!(mounts[v].1, "HostToContainer", "{v}");
    }
    // The image stays read-only; scratch space is an emptyDir.
    assert_eq!(mounts["tmp"].0, "/tmp");
    assert_host_paths_commented(&r);

    // The kubelet switch adds kubelet's dirs, nothing else.
    for name in ["switch-drain", "switch-no-drain"] {
        let r = Render::of(case(name));
        let mut want = dbus_mounts();
        want.extend(kubelet_mounts());
        assert_eq!(r.host_mounts(), want, "{name}");
        assert_eq!(r.mounts()["host-var-lib-kubelet"].1, "HostToContainer");
        assert_eq!(
            r.container()["securityContext"]["privileged"],
            Value::from(false)
        );
        assert_eq!(r.pod_spec()["hostPID"], Value::from(true));
        assert_host_paths_commented(&r);
    }
    // Uninstall mounts them whatever kubelet.switch says: the node's
    // install state decides whether kubelet is restored.
    let r = Render::of(case("uninstall"));
    let mut want = dbus_mounts();
    want.extend(kubelet_mounts());
    assert_eq!(r.host_mounts(), want);
}

#[test]
fn nsenter_mode_is_privileged_with_host_pid_and_the_host_root() {
    for name in ["nsenter", "uninstall-nsenter-switch-drain"] {
        let r = Render::of(case(name));
        let pod = r.pod_spec();
        assert_eq!(pod["hostPID"], Value::from(true), "{name}");
        assert_eq!(
            r.container()["securityContext"]["privileged"],
            Value::from(true)
        );
        assert!(r.container()["securityContext"]["capabilities"].is_null());
        let want: BTreeSet<_> = [(
            "/".to_string(),
            "Directory".to_string(),
            "/host".to_string(),
        )]
        .into_iter()
        .collect();
        assert_eq!(
            r.host_mounts(),
            want,
            "{name}: / at /host instead of the list"
        );
        assert_eq!(r.mounts()["host-root"].1, "HostToContainer");
        assert!(!r.mounts().values().any(|(at, _)| at == "/run/systemd"));
        assert_host_paths_commented(&r);
    }
}

#[test]
fn probes_exec_the_installer() {
    let probe = |r: &Render, which: &str| r.container()[which]["exec"]["command"].clone();
    let r = Render::of(case("defaults"));
    for which in ["startupProbe", "readinessProbe"] {
        assert_eq!(
            probe(&r, which),
            yaml("[/crust-installer/install.sh, probe]"),
            "{which}"
        );
        assert_eq!(r.container()[which]["timeoutSeconds"], Value::from(30));
    }
    assert!(
        r.container()["livenessProbe"].is_null(),
        "a broken crust must not restart the installer in a loop"
    );
    // The startup probe allows the install budget (600 s)...
    let budget = |r: &Render| {
        let p = &r.container()["startupProbe"];
        p["periodSeconds"].as_u64().unwrap() * p["failureThreshold"].as_u64().unwrap()
    };
    assert_eq!(budget(&r), 600);
    // ...plus the drain's timeout when draining, and the grace period
    // covers an uninstall's drain.
    let r = Render::of(case("switch-drain"));
    assert_eq!(budget(&r), 600 + 900);
    assert_eq!(
        r.pod_spec()["terminationGracePeriodSeconds"],
        Value::from(1200)
    );

    for name in ["uninstall", "uninstall-nsenter-switch-drain"] {
        let r = Render::of(case(name));
        assert_eq!(r.container()["args"], yaml("[uninstall-daemon]"), "{name}");
        for which in ["startupProbe", "readinessProbe"] {
            assert_eq!(
                probe(&r, which),
                yaml("[/crust-installer/install.sh, probe-uninstalled]"),
                "{name} {which}"
            );
        }
    }
    let r = Render::of(case("uninstall-nsenter-switch-drain"));
    assert_eq!(
        r.pod_spec()["terminationGracePeriodSeconds"],
        Value::from(900)
    );
}

#[test]
fn rbac_is_nodes_get_patch_and_eviction_only_with_drain() {
    let nodes = (
        vec![String::new()],
        vec!["nodes".to_string()],
        vec!["get".to_string(), "patch".to_string()],
    );
    // The cleanup Job's (cleanup.enabled, the default).
    let list = (
        vec![String::new()],
        vec!["nodes".to_string()],
        vec!["list".to_string()],
    );
    for name in [
        "defaults",
        "nsenter",
        "switch-no-drain",
        "uninstall",
        "handlers",
    ] {
        let r = Render::of(case(name));
        assert_eq!(
            r.cluster_role_rules(),
            vec![nodes.clone(), list.clone()],
            "{name}"
        );
        assert!(!r.text.contains("pods/eviction"), "{name}");
    }
    // drain without the switch drains nothing: no extra rights.
    let r = Render::with(&["--set".into(), "kubelet.drain=true".into()]);
    assert_eq!(r.cluster_role_rules(), vec![nodes.clone(), list.clone()]);
    // Without the cleanup Job, nodes are never listed.
    let r = Render::with(&["--set".into(), "cleanup.enabled=false".into()]);
    assert_eq!(r.cluster_role_rules(), vec![nodes.clone()]);
    assert!(r.all("Job").is_empty());

    for name in ["switch-drain", "uninstall-nsenter-switch-drain"] {
        let r = Render::of(case(name));
        let rules = r.cluster_role_rules();
        let has = |group: &str, resource: &str, verbs: &[&str]| {
            rules.iter().any(|(g, res, v)| {
                g == &[group]
                    && res == &[resource]
                    && v.iter().map(String::as_str).eq(verbs.iter().copied())
            })
        };
        assert!(has("", "nodes", &["get", "patch"]), "{name}: {rules:?}");
        assert!(has("", "pods", &["get", "list"]), "{name}: {rules:?}");
        assert!(has("", "pods/eviction", &["create"]), "{name}: {rules:?}");
        assert!(has("apps", "daemonsets", &["get"]), "{name}: {rules:?}");
        assert!(rules.contains(&list), "{name}: {rules:?}");
        assert_eq!(rules.len(), 5, "{name}: {rules:?}");
        assert!(
            !rules
                .iter()
                .any(|(_, _, v)| v.iter().any(|v| v == "delete" || v == "*")),
            "{name}: evictions, not deletes: {rules:?}"
        );
    }

    // The binding ties the ClusterRole to the DaemonSet's ServiceAccount.
    let r = Render::of(case("defaults"));
    let sa = r.one("ServiceAccount");
    assert_eq!(sa["metadata"]["namespace"], NAMESPACE);
    let binding = r.one("ClusterRoleBinding");
    assert_eq!(binding["roleRef"]["kind"], "ClusterRole");
    assert_eq!(
        binding["roleRef"]["name"],
        r.one("ClusterRole")["metadata"]["name"]
    );
    assert_eq!(
        binding["subjects"],
        yaml(&format!(
            "- kind: ServiceAccount\n  name: {}\n  namespace: {NAMESPACE}",
            s(&sa["metadata"]["name"])
        ))
    );
    assert_eq!(r.pod_spec()["serviceAccountName"], sa["metadata"]["name"]);
    let kinds: BTreeSet<&str> = r.objects.iter().map(|o| s(&o["kind"])).collect();
    assert!(
        !kinds.contains("Role") && !kinds.contains("RoleBinding"),
        "{kinds:?}"
    );
}

#[test]
fn a_runtime_class_per_handler_scheduled_on_ready_nodes() {
    let r = Render::of(case("defaults"));
    let classes = r.all("RuntimeClass");
    assert_eq!(classes.len(), 1);
    assert_eq!(classes[0]["metadata"]["name"], "crust");
    assert_eq!(classes[0]["handler"], "crust");
    assert_eq!(
        classes[0]["scheduling"]["nodeSelector"],
        yaml("crust.dev/runtime: ready")
    );

    let r = Render::of(case("handlers"));
    let by_name: BTreeMap<&str, &Value> = r
        .all("RuntimeClass")
        .into_iter()
        .map(|c| (s(&c["metadata"]["name"]), c))
        .collect();
    assert_eq!(
        by_name.keys().copied().collect::<Vec<_>>(),
        ["crust", "crust-debug", "crust-gpu"]
    );
    for (name, c) in &by_name {
        assert_eq!(c["handler"], *name);
        assert_eq!(
            c["scheduling"]["nodeSelector"]["crust.dev/runtime"], "ready",
            "{name}"
        );
        assert!(c["metadata"]["namespace"].is_null(), "cluster-scoped");
    }
    assert_eq!(
        by_name["crust-debug"]["overhead"],
        yaml("podFixed:\n  cpu: 10m\n  memory: 16Mi")
    );
    assert_eq!(
        by_name["crust-gpu"]["scheduling"],
        yaml(
            "nodeSelector:\n  crust.dev/runtime: ready\n  example.com/gpu: \"true\"\n\
             tolerations:\n- key: example.com/gpu\n  operator: Exists\n  effect: NoSchedule"
        )
    );

    // A handler crust would not know fails the render, naming it.
    let out = helm(&[
        "template",
        RELEASE,
        "charts/crust",
        "--set",
        "runtimeClasses[0].name=fast,runtimeClasses[0].handler=nope",
    ]);
    assert!(!out.status.success());
    assert!(
        text(&out).contains("names handler \"nope\""),
        "{}",
        text(&out)
    );
}

#[test]
fn runtime_classes_survive_helm_uninstall_only_in_install_mode() {
    // While nodes may still run crust, a `helm uninstall` keeps the
    // classes their pods need; after mode=uninstall they go with the
    // release.
    let keep = |r: &Render| {
        r.all("RuntimeClass")
            .iter()
            .map(|c| {
                c["metadata"]["annotations"]["helm.sh/resource-policy"].as_str() == Some("keep")
            })
            .collect::<Vec<_>>()
    };
    assert_eq!(keep(&Render::of(case("defaults"))), [true]);
    assert_eq!(keep(&Render::of(case("handlers"))), [true, true, true]);
    assert_eq!(keep(&Render::of(case("uninstall"))), [false]);
    // Nothing else is kept.
    for name in ["defaults", "uninstall"] {
        let r = Render::of(case(name));
        for o in &r.objects {
            if o["kind"] != "RuntimeClass" {
                assert!(o["metadata"]["annotations"]["helm.sh/resource-policy"].is_null());
            }
        }
    }
}

#[test]
fn verify_pod_is_a_helm_test_on_the_runtime_class() {
    assert!(Render::of(case("defaults")).all("Pod").is_empty());
    let r = Render::of(case("verify"));
    let pod = r.one("Pod");
    assert_eq!(pod["metadata"]["annotations"]["helm.sh/hook"], "test");
    assert_eq!(pod["metadata"]["namespace"], NAMESPACE);
    assert_eq!(pod["spec"]["runtimeClassName"], "crust");
    assert_eq!(pod["spec"]["restartPolicy"], "Never");
    assert_eq!(
        pod["spec"]["securityContext"]["runAsNonRoot"],
        Value::from(true)
    );
    let c = &seq(&pod["spec"]["containers"])[0];
    assert_eq!(
        c["securityContext"]["allowPrivilegeEscalation"],
        Value::from(false)
    );
    assert_eq!(c["securityContext"]["capabilities"]["drop"], yaml("[ALL]"));
    assert!(r.text.contains("helm.sh/hook: test"));

    // Another class by name; none while uninstalling.
    let r = Render::with(&[
        "--set".into(),
        "verify.enabled=true".into(),
        "--set".into(),
        "verify.runtimeClassName=crust-debug".into(),
    ]);
    assert_eq!(r.one("Pod")["spec"]["runtimeClassName"], "crust-debug");
    let r = Render::with(&[
        "--set".into(),
        "verify.enabled=true".into(),
        "--set".into(),
        "mode=uninstall".into(),
    ]);
    assert!(r.all("Pod").is_empty());
}

#[test]
fn values_schema_refuses_wrong_types_and_unknown_keys() {
    let refused: &[(&[&str], &str)] = &[
        (
            &["--set-string", "kubelet.switch=notabool"],
            "/kubelet/switch",
        ),
        (&["--set-string", "kubelet.drain=yes"], "/kubelet/drain"),
        (
            &["--set-string", "updateStrategy.maxUnavailable=one"],
            "/updateStrategy/maxUnavailable",
        ),
        (
            &["--set-string", "updateStrategy.maxUnavailable=1"],
            "/updateStrategy/maxUnavailable",
        ),
        (
            &["--set", "updateStrategy.maxUnavailable=0"],
            "/updateStrategy/maxUnavailable",
        ),
        (
            &["--set-string", "kubelet.drainTimeoutSeconds=600"],
            "/kubelet/drainTimeoutSeconds",
        ),
        (
            &["--set", "kubelet.runtimeRequestTimeout=15minutes"],
            "/kubelet/runtimeRequestTimeout",
        ),
        (
            &["--set", "kubelet.distribution=kind"],
            "/kubelet/distribution",
        ),
        (&["--set", "hostAccess=chroot"], "/hostAccess"),
        (&["--set", "mode=remove"], "/mode"),
        (&["--set", "kubelet.swtich=true"], "swtich"),
        (
            &["--set", "image.pullPolicy=Sometimes"],
            "/image/pullPolicy",
        ),
        (
            &["--set", "installLabel.key=not a label"],
            "/installLabel/key",
        ),
        (
            &[
                "--set",
                "runtimeClasses[0].name=crust,runtimeClasses[0].handler=Not_DNS",
            ],
            "/runtimeClasses/0/handler",
        ),
        (&["--set-string", "verify.enabled=true"], "/verify/enabled"),
        (&["--set", "config=notamap"], "/config"),
    ];
    for (flags, path) in refused {
        let args: Vec<String> = flags.iter().map(|s| s.to_string()).collect();
        let (ok, out) = lint(&args);
        assert!(!ok, "helm lint accepted {flags:?}:\n{out}");
        assert!(
            out.contains(path)
                && out.contains("values don't meet the specifications of the schema"),
            "{flags:?}: expected a schema error at {path}:\n{out}"
        );
    }
    // The same schema guards template (so install and upgrade).
    let out = helm(&[
        "template",
        RELEASE,
        "charts/crust",
        "--set-string",
        "kubelet.switch=notabool",
    ]);
    assert!(
        !out.status.success() && text(&out).contains("/kubelet/switch"),
        "{}",
        text(&out)
    );
    // Right types of the same values pass.
    for flags in [
        &["--set", "kubelet.switch=true"][..],
        &["--set", "updateStrategy.maxUnavailable=2"],
        &["--set", "updateStrategy.maxUnavailable=25%"],
        &["--set", "kubelet.runtimeRequestTimeout=1h30m"],
        &["--set", "terminationGracePeriodSeconds=3600"],
    ] {
        let args: Vec<String> = flags.iter().map(|s| s.to_string()).collect();
        let (ok, out) = lint(&args);
        assert!(ok, "{flags:?}:\n{out}");
    }
}

#[test]
fn config_drop_in_is_rendered_from_values_and_crustd_accepts_it() {
    let drop_in = |r: &Render| s(&r.one("ConfigMap")["data"]["50-helm.yaml"]).to_string();
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let main = dir.path().join("config.yaml");
    std::fs::write(&main, "# empty: the defaults\n").unwrap();
    std::fs::create_dir(dir.path().join("config.d")).unwrap();
    let check = |text: &str| {
        std::fs::write(dir.path().join("config.d/50-helm.yaml"), text).unwrap();
        crust_e2e::run_crustd(&["--config", main.to_str().unwrap(), "config", "check"])
    };

    let defaults = Render::of(case("defaults"));
    let (code, out) = check(&drop_in(&defaults));
    assert_eq!(
        code,
        Some(0),
        "the default drop-in:\n{}\n{out}",
        drop_in(&defaults)
    );

    let r = Render::of(case("config"));
    let text = drop_in(&r);
    assert_eq!(
        yaml(&text),
        yaml(CONFIG_VALUES)["config"],
        "passed through as is"
    );
    let (code, out) = check(&text);
    assert_eq!(code, Some(0), "{text}\n{out}");
    let merged = yaml(&out);
    assert_eq!(merged["cgroup_driver"], "systemd", "{out}");
    assert_eq!(merged["cni"]["conf_dir"], "/etc/cni/crust.d", "{out}");
    assert_eq!(
        merged["registries"]["mirrors"]["docker.io"],
        yaml("[\"https://mirror.example.com\"]"),
        "{out}"
    );
    assert!(
        !merged["runtime"]["handlers"]["crust-debug"].is_null(),
        "{out}"
    );
    assert!(
        !merged["runtime"]["handlers"]["crust"].is_null(),
        "built-in kept: {out}"
    );
    // A config change rolls the DaemonSet.
    let checksum = |r: &Render| {
        r.daemonset()["spec"]["template"]["metadata"]["annotations"]["checksum/config"].clone()
    };
    assert_ne!(checksum(&r), checksum(&defaults));

    // The handlers case's config is crust's too.
    let (code, out) = check(&drop_in(&Render::of(case("handlers"))));
    assert_eq!(code, Some(0), "{out}");
    // A typo in `config` is crustd's to refuse: the chart passes it
    // through, and the installed crust would not start with it.
    let r = Render::with(&["--set".into(), "config.registries.mirrros.x=y".into()]);
    let (code, out) = check(&drop_in(&r));
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains("mirrros"), "{out}");
}

/// The regeneration command manifests/README.md documents.
const REGENERATE: &str = "{ printf '%s\\n' \
\"# Generated: helm template crust charts/crust --namespace kube-system --no-hooks\" \
\"# (the chart's default values). Do not edit: change the chart and\" \
\"# regenerate (manifests/README.md); e2e/tests/chart.rs checks they agree.\"; \
/var/tmp/crust-chart-tools/bin/helm template crust charts/crust --namespace kube-system --no-hooks; } > manifests/crust.yaml";

#[test]
fn manifests_are_the_chart_rendered_with_defaults() {
    let checked_in = std::fs::read_to_string(repo().join("manifests/crust.yaml")).unwrap();
    let (header, body) = checked_in.split_at(checked_in.find("\n---\n").map_or(0, |i| i + 1));
    assert!(
        header.lines().all(|l| l.starts_with('#')) && header.contains("helm template"),
        "manifests/crust.yaml: a comment header, then the render:\n{header}"
    );
    // Without Helm's hooks: kubectl would run the pre-delete cleanup Job
    // at once.
    let rendered = template_text(&["--no-hooks".to_string()]);
    if body != rendered {
        let first = body
            .lines()
            .zip(rendered.lines())
            .position(|(a, b)| a != b)
            .unwrap_or(body.lines().count().min(rendered.lines().count()));
        panic!(
            "manifests/crust.yaml is out of date with charts/crust (first difference at line {} of the render).\n\
             Regenerate it from the repository root:\n\n  {REGENERATE}\n",
            first + 1
        );
    }
    // And the README says the same command.
    let readme = std::fs::read_to_string(repo().join("manifests/README.md")).unwrap();
    assert!(readme.contains("helm template crust charts/crust --namespace kube-system --no-hooks"));
}

#[test]
fn runtime_class_examples_schedule_on_ready_nodes() {
    let text =
        std::fs::read_to_string(repo().join("manifests/runtimeclass-examples.yaml")).unwrap();
    let examples = docs(&text);
    assert!(examples.len() >= 2);
    for c in &examples {
        assert_eq!(c["apiVersion"], "node.k8s.io/v1");
        assert_eq!(c["kind"], "RuntimeClass");
        assert_eq!(
            c["scheduling"]["nodeSelector"]["crust.dev/runtime"], "ready",
            "{c:?}"
        );
    }
    // The plain one is what the chart makes by default.
    let chart = Render::of(case("defaults"));
    let made = chart.one("RuntimeClass");
    let plain = examples
        .iter()
        .find(|c| c["metadata"]["name"] == "crust")
        .unwrap();
    assert_eq!(plain["handler"], made["handler"]);
    assert_eq!(plain["scheduling"], made["scheduling"]);
}

#[test]
fn chart_declares_the_kubernetes_versions_it_is_validated_at() {
    // Chart.yaml's kubeVersion admits exactly the range validated above
    // (from 1.30 on): helm refuses an older cluster before rendering.
    for version in KUBE_VERSIONS {
        let out = helm(&[
            "template",
            RELEASE,
            "charts/crust",
            "--kube-version",
            &format!("{version}.0"),
        ]);
        assert!(out.status.success(), "{version}: {}", text(&out));
    }
    let out = helm(&[
        "template",
        RELEASE,
        "charts/crust",
        "--kube-version",
        "1.29.9",
    ]);
    assert!(!out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("kubeVersion"), "{}", text(&out));
}

#[test]
fn helm_uninstall_removes_the_progress_label_from_every_node() {
    let r = Render::of(case("defaults"));
    let job = r.one("Job");
    assert_eq!(job["metadata"]["annotations"]["helm.sh/hook"], "pre-delete");
    let spec = &job["spec"]["template"]["spec"];
    // The installer's ServiceAccount: a pre-delete hook runs while it exists.
    assert_eq!(
        spec["serviceAccountName"],
        r.one("ServiceAccount")["metadata"]["name"]
    );
    let c = &seq(&spec["containers"])[0];
    assert_eq!(strs(&c["command"]), ["/crust-installer/bin/kubectl"]);
    assert_eq!(
        strs(&c["args"]),
        [
            "label",
            "nodes",
            "--selector",
            "crust.dev/runtime",
            "crust.dev/runtime-"
        ]
    );
    assert_eq!(c["securityContext"]["capabilities"]["drop"][0], "ALL");
    assert_eq!(spec["securityContext"]["runAsNonRoot"], true);
}
