//! CDI (Container Device Interface) devices: the names a container asks
//! for (`cdi_devices`, and kubelet's older `cdi.k8s.io/*` annotations)
//! resolved against the spec files in the configured directories, and the
//! resulting container edits applied to the OCI spec.
//!
//! Written here rather than taken from a crate: no maintained Rust CDI
//! library exists (the reference one is Go's tags.cncf.io/container-device-interface).
//! Spec files are read fresh on every request that names a device, so a
//! device plugin's new file is seen without a restart. Later directories
//! win over earlier ones (`/etc/cdi` then `/var/run/cdi`, as the CDI
//! default); the same device twice in one directory is a conflict.
//! Edits we cannot apply (intelRdt, netDevices) fail the request instead
//! of running the container without them.

use std::collections::{BTreeMap, HashSet};
use std::io::Read;
use std::path::{Component, Path, PathBuf};

use crust_cri_api::v1::ContainerConfig;
use oci_spec::runtime::{
    HookBuilder, Hooks, LinuxDeviceBuilder, LinuxDeviceCgroupBuilder, LinuxDeviceType,
    MountBuilder, Spec,
};
use serde::Deserialize;

use crate::SpecError;
use crate::resources::device_from_host;

/// Spec files larger than this are skipped.
const MAX_SPEC_BYTES: u64 = 1 << 20;
/// Spec files read per directory, at most.
const MAX_SPEC_FILES: usize = 512;
/// kubelet's annotation prefix for CDI device requests.
const ANNOTATION_PREFIX: &str = "cdi.k8s.io/";

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct SpecFile {
    cdi_version: String,
    kind: String,
    #[serde(default)]
    devices: Vec<DeviceSpec>,
    #[serde(default)]
    container_edits: Edits,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct DeviceSpec {
    name: String,
    #[serde(default)]
    container_edits: Edits,
}

/// What a device (or its spec file, for every device of it) adds to a
/// container.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Edits {
    #[serde(default)]
    env: Vec<String>,
    #[serde(default)]
    device_nodes: Vec<DeviceNode>,
    #[serde(default)]
    mounts: Vec<CdiMount>,
    #[serde(default)]
    hooks: Vec<CdiHook>,
    #[serde(default, rename = "additionalGIDs")]
    additional_gids: Vec<u32>,
    #[serde(default)]
    intel_rdt: Option<serde_json::Value>,
    #[serde(default)]
    net_devices: Option<Vec<serde_json::Value>>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct DeviceNode {
    path: String,
    host_path: Option<String>,
    #[serde(rename = "type")]
    typ: Option<String>,
    major: Option<i64>,
    minor: Option<i64>,
    file_mode: Option<u32>,
    permissions: Option<String>,
    uid: Option<u32>,
    gid: Option<u32>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct CdiMount {
    host_path: String,
    container_path: String,
    #[serde(rename = "type")]
    typ: Option<String>,
    #[serde(default)]
    options: Vec<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct CdiHook {
    hook_name: String,
    path: String,
    #[serde(default)]
    args: Vec<String>,
    #[serde(default)]
    env: Vec<String>,
    timeout: Option<i64>,
}

fn invalid(name: &str, reason: impl Into<String>) -> SpecError {
    SpecError::invalid("cdi_devices", name, reason)
}

/// The CDI devices `config` asks for, in order, each once.
pub(crate) fn requested(config: &ContainerConfig) -> Result<Vec<String>, SpecError> {
    let mut names: Vec<String> = config.cdi_devices.iter().map(|d| d.name.clone()).collect();
    let mut annotations: Vec<(&String, &String)> = config
        .annotations
        .iter()
        .filter(|(k, _)| k.starts_with(ANNOTATION_PREFIX))
        .collect();
    annotations.sort();
    for (_, value) in annotations {
        names.extend(value.split(',').map(|s| s.trim().to_string()));
    }
    let mut seen = HashSet::new();
    names.retain(|n| !n.is_empty() && seen.insert(n.clone()));
    for name in &names {
        parse_name(name)?;
    }
    Ok(names)
}

/// `vendor.com/class=name` -> (`vendor.com/class`, `name`).
fn parse_name(name: &str) -> Result<(&str, &str), SpecError> {
    let (kind, device) = name.split_once('=').ok_or_else(|| {
        invalid(
            name,
            "expected a fully qualified name, vendor.com/class=device",
        )
    })?;
    check_kind(kind).map_err(|r| invalid(name, r))?;
    let ok = |c: char| c.is_ascii_alphanumeric() || "_.:-".contains(c);
    if device.is_empty()
        || !device.starts_with(|c: char| c.is_ascii_alphanumeric())
        || !device.chars().all(ok)
    {
        return Err(invalid(
            name,
            "the device name must start with a letter or digit and hold only letters, digits, '_', '.', ':' and '-'",
        ));
    }
    Ok((kind, device))
}

fn libc_o_nonblock() -> i32 {
    nix::fcntl::OFlag::O_NONBLOCK.bits()
}

fn check_kind(kind: &str) -> Result<(), String> {
    let (vendor, class) = kind
        .split_once('/')
        .ok_or("the kind must be vendor.com/class")?;
    let word = |s: &str, extra: &str| {
        !s.is_empty()
            && s.starts_with(|c: char| c.is_ascii_alphanumeric())
            && s.chars()
                .all(|c| c.is_ascii_alphanumeric() || extra.contains(c))
    };
    if !word(vendor, "_.-") || !word(class, "_-") {
        return Err(format!("invalid kind {kind:?}"));
    }
    Ok(())
}

/// One readable spec file and where it came from.
struct Loaded {
    dir_rank: usize,
    path: PathBuf,
    spec: SpecFile,
}

/// Every valid spec file under `dirs`, and why the others were skipped.
fn load(dirs: &[PathBuf]) -> (Vec<Loaded>, Vec<String>) {
    let mut loaded = Vec::new();
    let mut skipped = Vec::new();
    for (dir_rank, dir) in dirs.iter().enumerate() {
        let Ok(entries) = std::fs::read_dir(dir) else {
            continue;
        };
        let mut paths: Vec<PathBuf> = entries
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| {
                matches!(
                    p.extension().and_then(|e| e.to_str()),
                    Some("json" | "yaml" | "yml")
                )
            })
            .collect();
        paths.sort();
        paths.truncate(MAX_SPEC_FILES);
        for path in paths {
            match read_spec(&path) {
                Ok(spec) => loaded.push(Loaded {
                    dir_rank,
                    path,
                    spec,
                }),
                Err(e) => skipped.push(format!("{}: {e}", path.display())),
            }
        }
    }
    (loaded, skipped)
}

fn read_spec(path: &Path) -> Result<SpecFile, String> {
    use std::os::unix::fs::OpenOptionsExt;
    // Non-blocking: a FIFO named *.json must not hang CreateContainer.
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc_o_nonblock())
        .open(path)
        .map_err(|e| e.to_string())?;
    if !file.metadata().map_err(|e| e.to_string())?.is_file() {
        return Err("not a regular file".into());
    }
    let mut text = String::new();
    file.take(MAX_SPEC_BYTES + 1)
        .read_to_string(&mut text)
        .map_err(|e| e.to_string())?;
    if text.len() as u64 > MAX_SPEC_BYTES {
        return Err(format!("larger than {MAX_SPEC_BYTES} bytes"));
    }
    let spec: SpecFile = if path.extension().is_some_and(|e| e == "json") {
        serde_json::from_str(&text).map_err(|e| e.to_string())?
    } else {
        serde_yaml_ng::from_str(&text).map_err(|e| e.to_string())?
    };
    let major = spec.cdi_version.split('.').next().unwrap_or("");
    if !matches!(major, "0" | "1") {
        return Err(format!("unsupported cdiVersion {:?}", spec.cdi_version));
    }
    check_kind(&spec.kind)?;
    Ok(spec)
}

/// The edits for `names`, from the spec files in `dirs`: each device's
/// own, and once per spec file the file's common edits.
pub(crate) fn resolve(names: &[String], dirs: &[PathBuf]) -> Result<Vec<Edits>, SpecError> {
    if names.is_empty() {
        return Ok(Vec::new());
    }
    let (loaded, skipped) = load(dirs);
    let mut edits = Vec::new();
    let mut used_files = HashSet::new();
    for name in names {
        let (kind, device) = parse_name(name)?;
        // The defining files of the highest-ranked directory that has one.
        let mut found: BTreeMap<usize, Vec<(&Loaded, &DeviceSpec)>> = BTreeMap::new();
        for l in loaded.iter().filter(|l| l.spec.kind == kind) {
            for d in l.spec.devices.iter().filter(|d| d.name == device) {
                found.entry(l.dir_rank).or_default().push((l, d));
            }
        }
        let Some((_, defs)) = found.into_iter().next_back() else {
            let mut reason = format!(
                "no CDI spec in {} defines it",
                dirs.iter()
                    .map(|d| d.display().to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            );
            if !skipped.is_empty() {
                reason.push_str(&format!(" (unreadable specs: {})", skipped.join("; ")));
            }
            return Err(invalid(name, reason));
        };
        if let [(a, _), (b, _), ..] = defs.as_slice() {
            return Err(invalid(
                name,
                format!(
                    "defined by both {} and {}",
                    a.path.display(),
                    b.path.display()
                ),
            ));
        }
        let (file, dev) = defs[0];
        if used_files.insert(file.path.clone()) {
            edits.push(checked(name, file.spec.container_edits.clone())?);
        }
        edits.push(checked(name, dev.container_edits.clone())?);
    }
    Ok(edits)
}

/// Refuses what cannot be applied faithfully.
fn checked(name: &str, e: Edits) -> Result<Edits, SpecError> {
    if e.intel_rdt.is_some() || e.net_devices.as_ref().is_some_and(|n| !n.is_empty()) {
        return Err(SpecError::unsupported(
            "cdi_devices",
            name,
            "its spec asks for intelRdt or netDevices edits, which crust does not apply",
        ));
    }
    for env in &e.env {
        if !env.contains('=') || env.starts_with('=') {
            return Err(invalid(name, format!("env entry {env:?} is not KEY=value")));
        }
    }
    Ok(e)
}

/// An absolute container path without `..`.
fn container_path<'a>(name: &str, what: &str, p: &'a str) -> Result<&'a Path, SpecError> {
    let path = Path::new(p);
    if !path.is_absolute() || path.components().any(|c| c == Component::ParentDir) {
        return Err(invalid(
            name,
            format!("{what} {p:?} must be an absolute path without '..'"),
        ));
    }
    Ok(path)
}

fn device_type(name: &str, t: &str) -> Result<LinuxDeviceType, SpecError> {
    Ok(match t {
        "c" | "u" => LinuxDeviceType::C,
        "b" => LinuxDeviceType::B,
        "p" => LinuxDeviceType::P,
        other => return Err(invalid(name, format!("device node type {other:?}"))),
    })
}

/// Applies resolved edits to a built spec; `names` is for error messages.
pub(crate) fn apply(spec: &mut Spec, names: &[String], edits: &[Edits]) -> Result<(), SpecError> {
    if edits.is_empty() {
        return Ok(());
    }
    let name = names.join(",");
    let name = name.as_str();
    let mut process = spec.process().clone().unwrap_or_default();
    let mut linux = spec.linux().clone().unwrap_or_default();
    let mut mounts = spec.mounts().clone().unwrap_or_default();
    let mut hooks = spec.hooks().clone().unwrap_or_default();
    let mut env = process.env().clone().unwrap_or_default();
    let mut devices = linux.devices().clone().unwrap_or_default();
    let mut resources = linux.resources().clone().unwrap_or_default();
    let mut rules = resources.devices().clone().unwrap_or_default();
    let mut user = process.user().clone();
    let mut gids = user.additional_gids().clone().unwrap_or_default();

    for e in edits {
        for kv in &e.env {
            let key = kv.split('=').next().unwrap_or("");
            env.retain(|old| old.split('=').next() != Some(key));
            env.push(kv.clone());
        }
        for node in &e.device_nodes {
            let path = container_path(name, "deviceNode path", &node.path)?;
            let host = Path::new(node.host_path.as_deref().unwrap_or(&node.path));
            // Go's CDI tooling omits a zero minor (omitempty).
            let mut dev = match (&node.typ, node.major) {
                (Some(t), Some(major)) => LinuxDeviceBuilder::default()
                    .path(path)
                    .typ(device_type(name, t)?)
                    .major(major)
                    .minor(node.minor.unwrap_or(0))
                    .build()?,
                _ => device_from_host(host)?,
            };
            dev.set_path(path.to_path_buf());
            if let Some(mode) = node.file_mode {
                dev.set_file_mode(Some(mode));
            }
            if let Some(uid) = node.uid {
                dev.set_uid(Some(uid));
            }
            if let Some(gid) = node.gid {
                dev.set_gid(Some(gid));
            }
            let access = node.permissions.clone().unwrap_or_else(|| "rwm".into());
            if access.is_empty() || !access.chars().all(|c| "rwm".contains(c)) {
                return Err(invalid(
                    name,
                    format!("device permissions {access:?}: expected some of r, w, m"),
                ));
            }
            // The device cgroup knows block and character devices only.
            if matches!(dev.typ(), LinuxDeviceType::B | LinuxDeviceType::C) {
                rules.push(
                    LinuxDeviceCgroupBuilder::default()
                        .allow(true)
                        .typ(dev.typ())
                        .major(dev.major())
                        .minor(dev.minor())
                        .access(access)
                        .build()?,
                );
            }
            devices.retain(|d| d.path() != dev.path());
            devices.push(dev);
        }
        for m in &e.mounts {
            let dst = container_path(name, "mount containerPath", &m.container_path)?;
            if !Path::new(&m.host_path).is_absolute() {
                return Err(invalid(
                    name,
                    format!("mount hostPath {:?} must be absolute", m.host_path),
                ));
            }
            let typ = m.typ.clone().unwrap_or_else(|| "bind".into());
            let mut options = m.options.clone();
            if typ == "bind" && !options.iter().any(|o| o == "bind" || o == "rbind") {
                options.push("rbind".into());
            }
            mounts.retain(|old| old.destination() != dst);
            mounts.push(
                MountBuilder::default()
                    .destination(dst)
                    .typ(typ)
                    .source(&m.host_path)
                    .options(options)
                    .build()?,
            );
        }
        for h in &e.hooks {
            add_hook(&mut hooks, name, h)?;
        }
        for gid in &e.additional_gids {
            if *gid != 0 && !gids.contains(gid) {
                gids.push(*gid);
            }
        }
    }

    // Parents before children, as Go's CDI orders them: a CDI mount that is
    // the parent of a CRI mount must not hide it. Stable, so the rest keeps
    // its order.
    mounts.sort_by_key(|m| m.destination().components().count());
    user.set_additional_gids((!gids.is_empty()).then_some(gids));
    process.set_user(user);
    process.set_env(Some(env));
    resources.set_devices(Some(rules));
    linux.set_resources(Some(resources));
    linux.set_devices(Some(devices));
    spec.set_process(Some(process));
    spec.set_linux(Some(linux));
    spec.set_mounts(Some(mounts));
    spec.set_hooks(Some(hooks));
    Ok(())
}

fn add_hook(hooks: &mut Hooks, name: &str, h: &CdiHook) -> Result<(), SpecError> {
    if !Path::new(&h.path).is_absolute() {
        return Err(invalid(
            name,
            format!("hook path {:?} must be absolute", h.path),
        ));
    }
    let mut b = HookBuilder::default().path(&h.path);
    if !h.args.is_empty() {
        b = b.args(h.args.clone());
    }
    if !h.env.is_empty() {
        b = b.env(h.env.clone());
    }
    if let Some(t) = h.timeout {
        b = b.timeout(t);
    }
    let hook = b.build()?;
    let list = |v: &Option<Vec<oci_spec::runtime::Hook>>| {
        let mut v = v.clone().unwrap_or_default();
        v.push(hook.clone());
        Some(v)
    };
    match h.hook_name.as_str() {
        "prestart" => hooks.set_prestart(list(hooks.prestart())),
        "createRuntime" => hooks.set_create_runtime(list(hooks.create_runtime())),
        "createContainer" => hooks.set_create_container(list(hooks.create_container())),
        "startContainer" => hooks.set_start_container(list(hooks.start_container())),
        "poststart" => hooks.set_poststart(list(hooks.poststart())),
        "poststop" => hooks.set_poststop(list(hooks.poststop())),
        other => return Err(invalid(name, format!("unknown hook name {other:?}"))),
    };
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crust_cri_api::v1::CdiDevice;

    const VENDOR_YAML: &str = r#"
cdiVersion: "0.6.0"
kind: vendor.example/gpu
containerEdits:
  env: ["GPU_DRIVER=1"]
devices:
  - name: "0"
    containerEdits:
      env: ["GPU=0", "PATH=/gpu/bin"]
      deviceNodes:
        - path: /dev/gpu0
          hostPath: /dev/null
          permissions: rw
      mounts:
        - hostPath: /opt/gpu/lib
          containerPath: /usr/lib/gpu
          options: [ro]
      hooks:
        - hookName: createContainer
          path: /usr/bin/gpu-hook
          args: [gpu-hook, setup]
      additionalGIDs: [44]
  - name: "1"
    containerEdits:
      deviceNodes:
        - {path: /dev/gpu1, type: c, major: 195, minor: 1}
"#;

    fn dirs_with(files: &[(&str, &str, &str)]) -> (tempfile::TempDir, Vec<PathBuf>) {
        let root = tempfile::tempdir().unwrap();
        let mut dirs = Vec::new();
        for d in ["etc", "run"] {
            let dir = root.path().join(d);
            std::fs::create_dir_all(&dir).unwrap();
            dirs.push(dir);
        }
        for (dir, name, text) in files {
            std::fs::write(root.path().join(dir).join(name), text).unwrap();
        }
        (root, dirs)
    }

    fn base_spec() -> Spec {
        serde_json::from_value(serde_json::json!({
            "ociVersion": "1.0.2",
            "process": {"user": {"uid": 0, "gid": 0}, "cwd": "/", "env": ["PATH=/bin"]},
            "linux": {"resources": {"devices": [{"allow": false, "access": "rwm"}]}}
        }))
        .unwrap()
    }

    #[test]
    fn names_come_from_the_field_and_the_annotations_once_each() {
        let mut c = ContainerConfig {
            cdi_devices: vec![CdiDevice {
                name: "vendor.example/gpu=0".into(),
            }],
            ..Default::default()
        };
        c.annotations.insert(
            "cdi.k8s.io/plugin".into(),
            "vendor.example/gpu=1, vendor.example/gpu=0".into(),
        );
        c.annotations.insert("other".into(), "x=y".into());
        assert_eq!(
            requested(&c).unwrap(),
            ["vendor.example/gpu=0", "vendor.example/gpu=1"]
        );
        for bad in [
            "gpu0",
            "vendor/=0",
            "/gpu=0",
            "v.com/gpu=",
            "v.com/gpu=../x",
        ] {
            let c = ContainerConfig {
                cdi_devices: vec![CdiDevice { name: bad.into() }],
                ..Default::default()
            };
            let e = requested(&c).unwrap_err().to_string();
            assert!(e.contains("cdi_devices") && e.contains(bad), "{bad}: {e}");
        }
    }

    #[test]
    fn a_device_edits_env_devices_mounts_hooks_and_groups() {
        let (_root, dirs) = dirs_with(&[("etc", "vendor.yaml", VENDOR_YAML)]);
        let names = vec![
            "vendor.example/gpu=0".to_string(),
            "vendor.example/gpu=1".to_string(),
        ];
        let edits = resolve(&names, &dirs).unwrap();
        // The file's common edits once, then each device's.
        assert_eq!(edits.len(), 3);
        let mut spec = base_spec();
        apply(&mut spec, &names, &edits).unwrap();
        let json = serde_json::to_value(&spec).unwrap();
        assert_eq!(
            json["process"]["env"],
            serde_json::json!(["GPU_DRIVER=1", "GPU=0", "PATH=/gpu/bin"])
        );
        let devices = json["linux"]["devices"].as_array().unwrap();
        assert_eq!(devices[0]["path"], "/dev/gpu0");
        assert_eq!(devices[0]["type"], "c"); // /dev/null's, from the host
        assert_eq!(
            (devices[0]["major"].as_i64(), devices[0]["minor"].as_i64()),
            (Some(1), Some(3))
        );
        assert_eq!(
            (devices[1]["path"].as_str(), devices[1]["major"].as_i64()),
            (Some("/dev/gpu1"), Some(195))
        );
        let rules = json["linux"]["resources"]["devices"].as_array().unwrap();
        assert_eq!(rules.len(), 3);
        assert_eq!(
            (rules[1]["access"].as_str(), rules[1]["major"].as_i64()),
            (Some("rw"), Some(1))
        );
        assert_eq!(rules[2]["access"], "rwm");
        let mount = &json["mounts"][0];
        assert_eq!(mount["destination"], "/usr/lib/gpu");
        assert_eq!(mount["source"], "/opt/gpu/lib");
        assert_eq!(mount["type"], "bind");
        assert_eq!(mount["options"], serde_json::json!(["ro", "rbind"]));
        assert_eq!(
            json["hooks"]["createContainer"][0]["path"],
            "/usr/bin/gpu-hook"
        );
        assert_eq!(
            json["process"]["user"]["additionalGids"],
            serde_json::json!([44])
        );
    }

    #[test]
    fn later_directories_win_and_one_directory_cannot_define_a_device_twice() {
        let run = r#"{"cdiVersion":"0.5.0","kind":"vendor.example/gpu","devices":[{"name":"0","containerEdits":{"env":["FROM=run"]}}]}"#;
        let (_root, dirs) = dirs_with(&[
            ("etc", "vendor.yaml", VENDOR_YAML),
            ("run", "vendor.json", run),
        ]);
        let names = vec!["vendor.example/gpu=0".to_string()];
        let edits = resolve(&names, &dirs).unwrap();
        let mut spec = base_spec();
        apply(&mut spec, &names, &edits).unwrap();
        let env = serde_json::to_value(spec.process().as_ref().unwrap().env()).unwrap();
        assert_eq!(env, serde_json::json!(["PATH=/bin", "FROM=run"]));

        let (_root, dirs) = dirs_with(&[("run", "a.json", run), ("run", "b.json", run)]);
        let e = resolve(&names, &dirs).unwrap_err().to_string();
        assert!(e.contains("a.json") && e.contains("b.json"), "{e}");
    }

    #[test]
    fn go_style_specs_fifos_and_mount_order() {
        // A zero minor left out (Go's omitempty), a FIFO node (no cgroup
        // rule), a parent mount after a child one.
        let spec = r#"{"cdiVersion":"0.6.0","kind":"vendor.example/x","devices":[{"name":"a","containerEdits":{
            "deviceNodes":[{"path":"/dev/x0","type":"c","major":240},{"path":"/dev/xp","type":"p","major":0}],
            "mounts":[{"hostPath":"/opt/x","containerPath":"/usr"}]}}]}"#;
        let (root, dirs) = dirs_with(&[("etc", "x.json", spec)]);
        // A FIFO named like a spec is skipped, not waited on.
        nix::unistd::mkfifo(
            &root.path().join("etc/fifo.json"),
            nix::sys::stat::Mode::S_IRWXU,
        )
        .unwrap();
        let names = vec!["vendor.example/x=a".to_string()];
        let edits = resolve(&names, &dirs).unwrap();
        let mut spec: Spec = base_spec();
        spec.set_mounts(Some(vec![
            MountBuilder::default()
                .destination("/usr/lib/child")
                .source("/srv")
                .build()
                .unwrap(),
        ]));
        apply(&mut spec, &names, &edits).unwrap();
        let json = serde_json::to_value(&spec).unwrap();
        assert_eq!(json["linux"]["devices"][0]["minor"], 0);
        let rules = json["linux"]["resources"]["devices"].as_array().unwrap();
        assert_eq!(rules.len(), 2, "{rules:?}");
        let order: Vec<&str> = json["mounts"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["destination"].as_str().unwrap())
            .collect();
        assert_eq!(order, ["/usr", "/usr/lib/child"]);
    }

    #[test]
    fn unknown_devices_broken_specs_and_unappliable_edits_are_refused_clearly() {
        let rdt = r#"{"cdiVersion":"0.6.0","kind":"vendor.example/rdt","devices":[{"name":"x","containerEdits":{"intelRdt":{"closID":"a"}}}]}"#;
        let (_root, dirs) = dirs_with(&[
            ("etc", "broken.yaml", "cdiVersion: [\n"),
            ("etc", "rdt.json", rdt),
            ("etc", "vendor.yaml", VENDOR_YAML),
        ]);
        let e = resolve(&["vendor.example/gpu=7".into()], &dirs)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("gpu=7") && e.contains("no CDI spec") && e.contains("broken.yaml"),
            "{e}"
        );
        let e = resolve(&["vendor.example/rdt=x".into()], &dirs)
            .unwrap_err()
            .to_string();
        assert!(e.contains("intelRdt"), "{e}");
        let bad_path = VENDOR_YAML.replace("containerPath: /usr/lib/gpu", "containerPath: ../etc");
        let (_root, dirs) = dirs_with(&[("etc", "vendor.yaml", &bad_path)]);
        let names = vec!["vendor.example/gpu=0".to_string()];
        let edits = resolve(&names, &dirs).unwrap();
        let e = apply(&mut base_spec(), &names, &edits)
            .unwrap_err()
            .to_string();
        assert!(e.contains("../etc"), "{e}");
    }
}
