//! Whole-spec tests: the pieces fit, nothing leaks in by default, and
//! annotations cannot loosen anything.

use std::collections::HashMap;
use std::path::Path;

use crust_cri_api::v1::{
    Capability as CriCaps, ContainerMetadata, Int64Value, KeyValue, LinuxContainerConfig,
    LinuxContainerResources, LinuxContainerSecurityContext, LinuxPodSandboxConfig,
    LinuxSandboxSecurityContext, PodSandboxMetadata, SecurityProfile,
    security_profile::ProfileType,
};
use crust_store::ImageConfig;
use oci_spec::runtime::{Capability, LinuxNamespaceType};

use super::*;

const PASSWD: &str = "root:x:0:0::/root:/bin/sh\napp:x:1000:1000::/home/app:/bin/sh\n";
const GROUP: &str = "root:x:0:\nwheel:x:10:root\napp:x:1000:\n";

fn image() -> ImageConfig {
    ImageConfig {
        user: "app".into(),
        env: vec!["PATH=/app/bin:/usr/bin".into(), "MODE=image".into()],
        entrypoint: vec!["/app/run".into()],
        cmd: vec!["--serve".into()],
        working_dir: "/app".into(),
        volumes: vec!["/var/cache/app".into()],
        ..Default::default()
    }
}

fn pod() -> PodSandboxConfig {
    PodSandboxConfig {
        metadata: Some(PodSandboxMetadata {
            name: "web".into(),
            uid: "uid-1".into(),
            namespace: "default".into(),
            attempt: 0,
        }),
        hostname: "web".into(),
        linux: Some(LinuxPodSandboxConfig {
            cgroup_parent: "/kubepods/besteffort/poduid-1".into(),
            sysctls: [(
                "net.ipv4.ip_unprivileged_port_start".to_string(),
                "0".to_string(),
            )]
            .into(),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn config() -> ContainerConfig {
    ContainerConfig {
        metadata: Some(ContainerMetadata {
            name: "app".into(),
            attempt: 0,
        }),
        image: Some(crust_cri_api::v1::ImageSpec {
            image: "example/app:1".into(),
            ..Default::default()
        }),
        envs: vec![KeyValue {
            key: "MODE".into(),
            value: "cri".into(),
        }],
        linux: Some(LinuxContainerConfig {
            resources: Some(LinuxContainerResources {
                memory_limit_in_bytes: 128 << 20,
                oom_score_adj: -997,
                ..Default::default()
            }),
            security_context: Some(LinuxContainerSecurityContext::default()),
        }),
        ..Default::default()
    }
}

fn sandbox() -> SandboxFacts {
    SandboxFacts {
        pod_id: "a".repeat(64),
        hostname: "web".into(),
        netns_path: Some("/run/crust/netns/a".into()),
        ipcns_path: Some("/run/crust/ipcns/a".into()),
        utsns_path: Some("/run/crust/utsns/a".into()),
        pidns_path: None,
        host_pid: false,
        userns_path: None,
        resolv_conf: Some("/var/lib/crust/sandboxes/a/resolv.conf".into()),
        hosts: Some("/var/lib/crust/sandboxes/a/hosts".into()),
        hostname_file: Some("/var/lib/crust/sandboxes/a/hostname".into()),
        shm_path: Some("/run/crust/sandboxes/a/shm".into()),
        cgroup_parent: "/kubepods/besteffort/poduid-1".into(),
        cgroup_driver: CgroupDriver::Cgroupfs,
    }
}

fn container() -> ContainerFacts {
    ContainerFacts {
        id: "c".repeat(64),
        volumes_dir: "/var/lib/crust/containers/c/volumes".into(),
        oom_score_adj_min: -500,
        idmapped_sources: Default::default(),
        image_mount_sources: Default::default(),
        cdi_spec_dirs: Vec::new(),
    }
}

fn build(
    config: &ContainerConfig,
    pod: &PodSandboxConfig,
    sandbox: &SandboxFacts,
) -> Result<Spec, SpecError> {
    let img = image();
    let facts = ImageFacts {
        config: &img,
        passwd: Some(PASSWD),
        group: Some(GROUP),
    };
    container_spec(config, pod, &facts, sandbox, &container())
}

fn sc_mut(c: &mut ContainerConfig) -> &mut LinuxContainerSecurityContext {
    c.linux.as_mut().unwrap().security_context.as_mut().unwrap()
}

fn privileged_pod() -> PodSandboxConfig {
    let mut p = pod();
    p.linux.as_mut().unwrap().security_context = Some(LinuxSandboxSecurityContext {
        privileged: true,
        ..Default::default()
    });
    p
}

#[test]
fn full_spec_for_a_typical_container() {
    let spec = build(&config(), &pod(), &sandbox()).unwrap();
    assert_eq!(spec.version(), OCI_VERSION);
    assert_eq!(spec.root().as_ref().unwrap().path(), Path::new("rootfs"));
    assert_eq!(spec.root().as_ref().unwrap().readonly(), Some(false));
    assert_eq!(spec.hostname().as_deref(), Some("web"));

    let p = spec.process().as_ref().unwrap();
    assert_eq!(p.args().as_ref().unwrap(), &["/app/run", "--serve"]);
    assert_eq!(p.cwd(), Path::new("/app"));
    assert_eq!(
        p.env().as_ref().unwrap(),
        &["PATH=/app/bin:/usr/bin", "HOSTNAME=web", "MODE=cri"]
    );
    assert_eq!((p.user().uid(), p.user().gid()), (1000, 1000));
    assert_eq!(p.user().additional_gids().as_ref().unwrap(), &[1000]);
    assert_eq!(p.terminal(), Some(false));
    assert_eq!(p.no_new_privileges(), None);
    assert_eq!(p.oom_score_adj(), Some(-500), "clamped to the host minimum");
    assert!(p.rlimits().is_none(), "no default rlimits (containerd CRI)");
    assert!(p.apparmor_profile().is_none() && p.selinux_label().is_none());
    let caps = p.capabilities().as_ref().unwrap();
    assert_eq!(caps.bounding().as_ref().unwrap().len(), 14);
    assert_eq!(caps.bounding(), caps.effective());
    assert_eq!(caps.bounding(), caps.permitted());
    assert!(caps.inheritable().is_none() && caps.ambient().is_none());

    let l = spec.linux().as_ref().unwrap();
    assert_eq!(
        l.cgroups_path().as_deref(),
        Some(Path::new(&format!(
            "/kubepods/besteffort/poduid-1/{}",
            "c".repeat(64)
        )))
    );
    let ns: Vec<_> = l
        .namespaces()
        .as_ref()
        .unwrap()
        .iter()
        .map(|n| n.typ())
        .collect();
    assert_eq!(
        ns,
        [
            LinuxNamespaceType::Mount,
            LinuxNamespaceType::Network,
            LinuxNamespaceType::Ipc,
            LinuxNamespaceType::Uts,
            LinuxNamespaceType::Pid,
            LinuxNamespaceType::Cgroup
        ]
    );
    let mem = l.resources().as_ref().unwrap().memory().unwrap();
    assert_eq!(
        (mem.limit(), mem.swap()),
        (Some(128 << 20), Some(128 << 20))
    );
    assert!(
        l.seccomp().is_none(),
        "no profile asked for is unconfined, as the CRI defines"
    );
    assert!(
        l.masked_paths()
            .as_ref()
            .unwrap()
            .contains(&"/proc/kcore".to_string())
    );
    assert!(
        l.readonly_paths()
            .as_ref()
            .unwrap()
            .contains(&"/proc/sys".to_string())
    );
    assert_eq!(
        l.sysctl().as_ref().unwrap()["net.ipv4.ip_unprivileged_port_start"],
        "0"
    );
    assert!(l.devices().is_none());
    assert!(l.uid_mappings().is_none() && l.rootfs_propagation().is_none());

    let mounts: Vec<_> = spec
        .mounts()
        .as_ref()
        .unwrap()
        .iter()
        .map(|m| m.destination().display().to_string())
        .collect();
    assert!(mounts.contains(&"/var/cache/app".to_string()));
    assert!(!mounts.contains(&"/run".to_string()));

    let a = spec.annotations().as_ref().unwrap();
    assert_eq!(a["io.kubernetes.cri.container-type"], "container");
    assert_eq!(a["io.kubernetes.cri.sandbox-id"], "a".repeat(64));
    assert_eq!(a["io.kubernetes.cri.container-name"], "app");
    assert_eq!(a["io.kubernetes.cri.sandbox-namespace"], "default");
    assert_eq!(a["io.kubernetes.cri.sandbox-name"], "web");
    assert_eq!(a["io.kubernetes.cri.sandbox-uid"], "uid-1");
    assert_eq!(a["io.kubernetes.cri.image-name"], "example/app:1");
}

#[test]
fn spec_round_trips_through_json() {
    let spec = build(&config(), &pod(), &sandbox()).unwrap();
    let json = serde_json::to_string(&spec).unwrap();
    let back: Spec = serde_json::from_str(&json).unwrap();
    assert_eq!(back, spec);
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(v["ociVersion"], OCI_VERSION);
    assert_eq!(
        v["process"]["capabilities"]["bounding"]
            .as_array()
            .unwrap()
            .len(),
        14
    );
    assert!(v["process"].get("rlimits").is_none());
}

#[test]
fn security_context_knobs() {
    let mut c = config();
    c.tty = true;
    {
        let sc = sc_mut(&mut c);
        sc.readonly_rootfs = true;
        sc.no_new_privs = true;
        sc.run_as_user = Some(Int64Value { value: 0 });
        sc.supplemental_groups = vec![5000];
        sc.capabilities = Some(CriCaps {
            add_capabilities: vec!["NET_ADMIN".into()],
            drop_capabilities: vec!["NET_RAW".into()],
            ..Default::default()
        });
    }
    let spec = build(&c, &pod(), &sandbox()).unwrap();
    assert_eq!(spec.root().as_ref().unwrap().readonly(), Some(true));
    let p = spec.process().as_ref().unwrap();
    assert_eq!(p.terminal(), Some(true));
    assert!(
        p.env()
            .as_ref()
            .unwrap()
            .contains(&"TERM=xterm".to_string())
    );
    assert_eq!(p.no_new_privileges(), Some(true));
    assert_eq!((p.user().uid(), p.user().gid()), (0, 0));
    assert_eq!(p.user().additional_gids().as_ref().unwrap(), &[0, 10, 5000]);
    let b = p
        .capabilities()
        .as_ref()
        .unwrap()
        .bounding()
        .clone()
        .unwrap();
    assert!(b.contains(&Capability::NetAdmin) && !b.contains(&Capability::NetRaw));
    let hosts = spec
        .mounts()
        .as_ref()
        .unwrap()
        .iter()
        .find(|m| m.destination() == Path::new("/etc/hosts"))
        .unwrap();
    assert!(
        hosts
            .options()
            .as_ref()
            .unwrap()
            .contains(&"ro".to_string())
    );
}

#[test]
fn container_user_reports_the_process_identity() {
    let mut c = config();
    {
        let sc = sc_mut(&mut c);
        sc.run_as_user = Some(Int64Value { value: 1000 });
        sc.supplemental_groups = vec![3000];
    }
    let spec = build(&c, &pod(), &sandbox()).unwrap();
    let user = container_user(&spec).unwrap().linux.unwrap();
    assert_eq!((user.uid, user.gid), (1000, 1000));
    assert_eq!(user.supplemental_groups, [1000, 3000]);
}

#[test]
fn privileged_container() {
    let mut c = config();
    sc_mut(&mut c).privileged = true;
    let e = build(&c, &pod(), &sandbox()).unwrap_err().to_string();
    assert!(e.contains("privileged"), "{e}");

    let spec = build(&c, &privileged_pod(), &sandbox()).unwrap();
    let p = spec.process().as_ref().unwrap();
    assert_eq!(
        p.capabilities()
            .as_ref()
            .unwrap()
            .bounding()
            .as_ref()
            .unwrap(),
        security::host_capabilities(),
        "everything crust itself holds"
    );
    let l = spec.linux().as_ref().unwrap();
    assert!(l.masked_paths().is_none() && l.readonly_paths().is_none());
    assert!(l.seccomp().is_none());
    let rules = l.resources().as_ref().unwrap().devices().clone().unwrap();
    assert_eq!(rules.len(), 1);
    assert!(rules[0].allow());
    assert!(
        !l.namespaces()
            .as_ref()
            .unwrap()
            .iter()
            .any(|n| n.typ() == LinuxNamespaceType::Cgroup)
    );
    let sys = spec
        .mounts()
        .as_ref()
        .unwrap()
        .iter()
        .find(|m| m.destination() == Path::new("/sys"))
        .unwrap();
    assert!(sys.options().as_ref().unwrap().contains(&"rw".to_string()));
}

#[test]
fn host_network_pod() {
    let sb = SandboxFacts {
        netns_path: None,
        utsns_path: None,
        hostname: String::new(),
        ..sandbox()
    };
    let mut p = pod();
    p.linux.as_mut().unwrap().sysctls.clear();
    let spec = build(&config(), &p, &sb).unwrap();
    assert!(spec.hostname().is_none());
    let ns: Vec<_> = spec
        .linux()
        .as_ref()
        .unwrap()
        .namespaces()
        .as_ref()
        .unwrap()
        .iter()
        .map(|n| n.typ())
        .collect();
    assert!(!ns.contains(&LinuxNamespaceType::Network) && !ns.contains(&LinuxNamespaceType::Uts));
    assert!(
        !spec
            .process()
            .as_ref()
            .unwrap()
            .env()
            .as_ref()
            .unwrap()
            .iter()
            .any(|e| e.starts_with("HOSTNAME="))
    );
    // The pod's net.* sysctl would change the node.
    assert!(build(&config(), &pod(), &sb).is_err());
}

#[test]
fn systemd_driver_path() {
    let sb = SandboxFacts {
        cgroup_parent: "kubepods-besteffort-poduid_1.slice".into(),
        cgroup_driver: CgroupDriver::Systemd,
        ..sandbox()
    };
    let spec = build(&config(), &pod(), &sb).unwrap();
    assert_eq!(
        spec.linux().as_ref().unwrap().cgroups_path().as_deref(),
        Some(Path::new(&format!(
            "kubepods-besteffort-poduid_1.slice:cri-crust:{}",
            "c".repeat(64)
        )))
    );
}

#[test]
fn seccomp_choices_reach_the_spec() {
    let mut c = config();
    sc_mut(&mut c).seccomp = Some(SecurityProfile {
        profile_type: ProfileType::Unconfined as i32,
        localhost_ref: String::new(),
    });
    assert!(
        build(&c, &pod(), &sandbox())
            .unwrap()
            .linux()
            .as_ref()
            .unwrap()
            .seccomp()
            .is_none()
    );
    sc_mut(&mut c).seccomp = Some(SecurityProfile {
        profile_type: ProfileType::Localhost as i32,
        localhost_ref: "/nonexistent.json".into(),
    });
    let e = build(&c, &pod(), &sandbox()).unwrap_err().to_string();
    assert!(e.contains("/nonexistent.json"), "{e}");
}

#[test]
fn errors_name_field_and_value() {
    let mut c = config();
    sc_mut(&mut c).run_as_username = "ghost".into();
    let e = build(&c, &pod(), &sandbox()).unwrap_err().to_string();
    assert!(e.contains("run_as_username") && e.contains("ghost"), "{e}");

    let mut c = config();
    c.cdi_devices = vec![crust_cri_api::v1::CdiDevice {
        name: "vendor.com/gpu=0".into(),
    }];
    let e = build(&c, &pod(), &sandbox()).unwrap_err().to_string();
    assert!(
        e.contains("cdi_devices") && e.contains("vendor.com/gpu=0"),
        "{e}"
    );

    let bad_id = ContainerFacts {
        id: "../../etc".into(),
        ..container()
    };
    let img = image();
    let facts = ImageFacts {
        config: &img,
        passwd: Some(PASSWD),
        group: Some(GROUP),
    };
    assert!(container_spec(&config(), &pod(), &facts, &sandbox(), &bad_id).is_err());
}

/// Annotations a client might hope a runtime honours. None may change the
/// spec beyond `annotations`, and reserved keys never reach it.
#[test]
fn annotations_cannot_loosen_anything() {
    let hostile: HashMap<String, String> = [
        ("seccomp.security.alpha.kubernetes.io/pod", "unconfined"),
        (
            "container.seccomp.security.alpha.kubernetes.io/app",
            "unconfined",
        ),
        (
            "container.apparmor.security.beta.kubernetes.io/app",
            "unconfined",
        ),
        ("io.kubernetes.cri.container-type", "sandbox"),
        ("io.kubernetes.cri.sandbox-id", "someone-else"),
        ("io.kubernetes.cri-o.Devices", "/dev/sda:/dev/sda:rwm"),
        ("io.kubernetes.cri-o.userns-mode", "host"),
        ("io.containerd.runc.v2.group", "x"),
        ("org.systemd.property.DeviceAllow", "'/dev/sda rwm'"),
        ("org.systemd.property.Delegate", "true"),
        // crust-shim's own: a container would name a unit the shim stops.
        ("io.crust.systemd.scope", "kubelet.service"),
        ("run.oci.keep_original_groups", "1"),
        ("run.oci.seccomp_fail_unknown_syscall", "0"),
        (
            "io.katacontainers.config.hypervisor.kernel_params",
            "init=/bin/sh",
        ),
        ("cpu-quota.crio.io", "disable"),
        ("io.kubernetes.cri.privileged", "true"),
        ("privileged", "true"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();

    let plain = build(&config(), &pod(), &sandbox()).unwrap();
    let mut c = config();
    c.annotations = hostile.clone();
    let mut p = pod();
    p.annotations = hostile;
    let annotated = build(&c, &p, &sandbox()).unwrap();

    // Spec equality compares capability sets as sets (JSON order varies).
    let mut stripped = annotated.clone();
    stripped.set_annotations(plain.annotations().clone());
    assert_eq!(stripped, plain, "annotations changed the spec");

    let ann = serde_json::to_value(annotated.annotations()).unwrap();
    let ann = ann.as_object().unwrap();
    assert_eq!(ann["io.kubernetes.cri.container-type"], "container");
    assert_eq!(ann["io.kubernetes.cri.sandbox-id"], "a".repeat(64));
    for k in ann.keys() {
        for reserved in [
            "org.systemd.property.",
            "io.crust.",
            "run.oci.",
            "io.kubernetes.cri-o.",
            "io.containerd.",
            "io.katacontainers.",
        ] {
            assert!(!k.starts_with(reserved), "{k} reached the spec");
        }
    }
    assert!(!ann.contains_key("io.kubernetes.cri.privileged"));
    // Inert keys pass through.
    assert_eq!(ann["privileged"], "true");
    assert_eq!(ann["cpu-quota.crio.io"], "disable");
}

#[test]
fn target_pid_namespace_through_the_whole_spec() {
    let mut c = config();
    assert_eq!(pid_namespace_target(&c), None);
    sc_mut(&mut c).namespace_options = Some(crust_cri_api::v1::NamespaceOption {
        pid: crust_cri_api::v1::NamespaceMode::Target as i32,
        target_id: "f00d".into(),
        ..Default::default()
    });
    assert_eq!(pid_namespace_target(&c), Some("f00d"));
    // Without the runtime's answer: refused, not silently given its own.
    let e = build(&c, &pod(), &sandbox()).unwrap_err();
    assert!(matches!(e, SpecError::Unsupported { .. }), "{e}");
    let img = image();
    let facts = ImageFacts {
        config: &img,
        passwd: Some(PASSWD),
        group: Some(GROUP),
    };
    let targets = Targets {
        target_pidns_path: Some("/proc/77/ns/pid".into()),
    };
    let spec = container_spec_with(&c, &pod(), &facts, &sandbox(), &container(), &targets).unwrap();
    let pid: Vec<_> = spec
        .linux()
        .as_ref()
        .unwrap()
        .namespaces()
        .as_ref()
        .unwrap()
        .iter()
        .filter(|n| n.typ() == LinuxNamespaceType::Pid)
        .map(|n| n.path().clone())
        .collect();
    assert_eq!(pid, [Some("/proc/77/ns/pid".into())]);
}

#[test]
fn recursive_read_only_mounts_follow_the_kernel() {
    let mut c = config();
    c.mounts = vec![crust_cri_api::v1::Mount {
        container_path: "/data".into(),
        host_path: "/var/lib/data".into(),
        readonly: true,
        recursive_read_only: true,
        ..Default::default()
    }];
    match build(&c, &pod(), &sandbox()) {
        Ok(spec) => {
            assert!(recursive_read_only_supported());
            let m = spec
                .mounts()
                .as_ref()
                .unwrap()
                .iter()
                .find(|m| m.destination() == Path::new("/data"))
                .unwrap();
            assert!(m.options().as_ref().unwrap().contains(&"rro".to_string()));
        }
        Err(e) => {
            assert!(!recursive_read_only_supported());
            assert!(e.to_string().contains("recursive_read_only"), "{e}");
        }
    }
}

fn userns_pod(uids: &[(u32, u32, u32)], gids: &[(u32, u32, u32)]) -> PodSandboxConfig {
    let maps = |v: &[(u32, u32, u32)]| {
        v.iter()
            .map(
                |&(container_id, host_id, length)| crust_cri_api::v1::IdMapping {
                    container_id,
                    host_id,
                    length,
                },
            )
            .collect()
    };
    let mut p = pod();
    p.linux.as_mut().unwrap().security_context = Some(LinuxSandboxSecurityContext {
        namespace_options: Some(crust_cri_api::v1::NamespaceOption {
            userns_options: Some(crust_cri_api::v1::UserNamespace {
                mode: crust_cri_api::v1::NamespaceMode::Pod as i32,
                uids: maps(uids),
                gids: maps(gids),
            }),
            ..Default::default()
        }),
        ..Default::default()
    });
    p
}

#[test]
fn containers_join_the_pods_user_namespace() {
    let with_userns = userns_pod(&[(0, 200000, 65536)], &[(0, 300000, 65536)]);
    let sb = SandboxFacts {
        userns_path: Some("/run/crust/pods/a/ns/user".into()),
        ..sandbox()
    };
    let spec = build(&config(), &with_userns, &sb).unwrap();
    let l = spec.linux().as_ref().unwrap();
    let first = &l.namespaces().as_ref().unwrap()[0];
    assert_eq!(first.typ(), LinuxNamespaceType::User);
    assert_eq!(
        first.path().as_deref(),
        Some(Path::new("/run/crust/pods/a/ns/user"))
    );
    let m = |v: &Option<Vec<oci_spec::runtime::LinuxIdMapping>>| {
        v.as_ref()
            .unwrap()
            .iter()
            .map(|m| (m.container_id(), m.host_id(), m.size()))
            .collect::<Vec<_>>()
    };
    assert_eq!(m(l.uid_mappings()), [(0, 200000, 65536)]);
    assert_eq!(m(l.gid_mappings()), [(0, 300000, 65536)]);
    // The process keeps its in-namespace ids.
    let u = spec.process().as_ref().unwrap().user();
    assert_eq!((u.uid(), u.gid()), (1000, 1000));

    // Without a user namespace: no user entry, no mappings.
    let spec = build(&config(), &pod(), &sandbox()).unwrap();
    let l = spec.linux().as_ref().unwrap();
    assert!(
        !l.namespaces()
            .as_ref()
            .unwrap()
            .iter()
            .any(|n| n.typ() == LinuxNamespaceType::User)
    );
    assert!(l.uid_mappings().is_none() && l.gid_mappings().is_none());
}

#[test]
fn user_namespace_requests_that_cannot_be_honoured_fail() {
    let with_userns = userns_pod(&[(0, 200000, 65536)], &[(0, 200000, 65536)]);
    let sb = SandboxFacts {
        userns_path: Some("/run/crust/pods/a/ns/user".into()),
        ..sandbox()
    };
    // The runtime made no namespace for a pod that asks for one, or one
    // for a pod that does not.
    let e = build(&config(), &with_userns, &sandbox())
        .unwrap_err()
        .to_string();
    assert!(e.contains("userns_options"), "{e}");
    let e = build(&config(), &pod(), &sb).unwrap_err().to_string();
    assert!(e.contains("userns_options"), "{e}");
    // Ids outside the mapping.
    let mut c = config();
    sc_mut(&mut c).run_as_user = Some(Int64Value { value: 70000 });
    let e = build(&c, &with_userns, &sb).unwrap_err().to_string();
    assert!(e.contains("70000") && e.contains("not mapped"), "{e}");
    let mut c = config();
    sc_mut(&mut c).supplemental_groups = vec![65536];
    let e = build(&c, &with_userns, &sb).unwrap_err().to_string();
    assert!(e.contains("65536") && e.contains("not mapped"), "{e}");
    // A container asking for another mapping than its pod's.
    let mut c = config();
    sc_mut(&mut c).namespace_options = Some(crust_cri_api::v1::NamespaceOption {
        userns_options: Some(crust_cri_api::v1::UserNamespace {
            mode: crust_cri_api::v1::NamespaceMode::Pod as i32,
            uids: vec![crust_cri_api::v1::IdMapping {
                container_id: 0,
                host_id: 100000,
                length: 65536,
            }],
            gids: vec![crust_cri_api::v1::IdMapping {
                container_id: 0,
                host_id: 100000,
                length: 65536,
            }],
        }),
        ..Default::default()
    });
    let e = build(&c, &with_userns, &sb).unwrap_err().to_string();
    assert!(e.contains("differs from the pod's"), "{e}");
}

#[test]
fn idmapped_cri_mounts_use_the_runtimes_idmapped_copy() {
    let with_userns = userns_pod(&[(0, 200000, 65536)], &[(0, 200000, 65536)]);
    let sb = SandboxFacts {
        userns_path: Some("/run/crust/pods/a/ns/user".into()),
        ..sandbox()
    };
    let pod_maps = || {
        vec![crust_cri_api::v1::IdMapping {
            container_id: 0,
            host_id: 200000,
            length: 65536,
        }]
    };
    let mut c = config();
    c.mounts = vec![
        crust_cri_api::v1::Mount {
            container_path: "/data/./x/".into(),
            host_path: "/var/lib/kubelet/pods/p/volumes/v".into(),
            uid_mappings: pod_maps(),
            gid_mappings: pod_maps(),
            ..Default::default()
        },
        crust_cri_api::v1::Mount {
            container_path: "/plain".into(),
            host_path: "/srv/plain".into(),
            ..Default::default()
        },
    ];
    assert_eq!(
        idmapped_mounts(&c, &with_userns).unwrap(),
        [(
            "/data/x".to_string(),
            std::path::PathBuf::from("/var/lib/kubelet/pods/p/volumes/v")
        )]
    );
    // Without the runtime's copy: refused, never bound un-mapped.
    let img = image();
    let facts = ImageFacts {
        config: &img,
        passwd: Some(PASSWD),
        group: Some(GROUP),
    };
    let e = container_spec(&c, &with_userns, &facts, &sb, &container())
        .unwrap_err()
        .to_string();
    assert!(e.contains("/data/./x/") && e.contains("idmapped"), "{e}");
    let with_copy = ContainerFacts {
        idmapped_sources: [(
            "/data/x".to_string(),
            std::path::PathBuf::from("/run/crust/idmapped/c/0"),
        )]
        .into(),
        ..container()
    };
    let spec = container_spec(&c, &with_userns, &facts, &sb, &with_copy).unwrap();
    let src = |dst: &str| {
        spec.mounts()
            .as_ref()
            .unwrap()
            .iter()
            .find(|m| m.destination() == Path::new(dst))
            .and_then(|m| m.source().clone())
    };
    assert_eq!(src("/data/x"), Some("/run/crust/idmapped/c/0".into()));
    assert_eq!(src("/plain"), Some("/srv/plain".into()));

    // Other mappings than the pod's, or no pod user namespace: refused.
    let mut other = c.clone();
    other.mounts[0].uid_mappings[0].host_id = 100000;
    let e = idmapped_mounts(&other, &with_userns)
        .unwrap_err()
        .to_string();
    assert!(e.contains("pod's own"), "{e}");
    let e = idmapped_mounts(&c, &pod()).unwrap_err().to_string();
    assert!(e.contains("hostUsers"), "{e}");
    assert!(idmapped_mounts(&config(), &pod()).unwrap().is_empty());
}

#[test]
fn image_volumes_bind_the_runtimes_view_read_only_or_are_refused() {
    let mut c = config();
    c.mounts = vec![crust_cri_api::v1::Mount {
        container_path: "/models/./llm/".into(),
        // kubelet always sends readonly: true; a request without it still
        // gets a read-only mount.
        readonly: false,
        image: Some(crust_cri_api::v1::ImageSpec {
            image: "sha256:abc".into(),
            ..Default::default()
        }),
        image_sub_path: "weights".into(),
        ..Default::default()
    }];
    let img = image();
    let facts = ImageFacts {
        config: &img,
        passwd: Some(PASSWD),
        group: Some(GROUP),
    };
    let e = container_spec(&c, &pod(), &facts, &sandbox(), &container())
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("/models/./llm/") && e.contains("did not mount"),
        "{e}"
    );
    let with_view = ContainerFacts {
        image_mount_sources: [(
            "/models/llm".to_string(),
            std::path::PathBuf::from("/run/crust/image-mounts/c/0/sub"),
        )]
        .into(),
        ..container()
    };
    let spec = container_spec(&c, &pod(), &facts, &sandbox(), &with_view).unwrap();
    let m = spec
        .mounts()
        .as_ref()
        .unwrap()
        .iter()
        .find(|m| m.destination() == Path::new("/models/llm"))
        .expect("the image volume is mounted");
    assert_eq!(
        m.source().as_deref(),
        Some(Path::new("/run/crust/image-mounts/c/0/sub"))
    );
    let options = m.options().clone().unwrap_or_default();
    assert!(options.iter().any(|o| o == "ro"), "{options:?}");
    assert!(
        options.iter().any(|o| o == "rbind" || o == "bind"),
        "{options:?}"
    );
}
