use std::sync::Arc;

use crust_cri_api::v1 as cri;
use crust_cri_api::v1::image_service_server::ImageService;
use crust_cri_api::v1::runtime_service_server::RuntimeService;
use tonic::Request;

use super::*;

fn cri_on(dir: &std::path::Path, config: Config) -> Cri {
    let store = Arc::new(Store::open(dir).unwrap());
    let snapshots = Arc::new(crust_snapshot::Snapshotter::new(&dir.join("snapshots")).unwrap());
    let images = Arc::new(
        Images::open(
            dir,
            store.clone(),
            snapshots,
            &config.registries,
            &config.images.policy,
            None,
            None,
        )
        .unwrap(),
    );
    let pods = crust_runtime::Pods::new(
        config.clone(),
        CgroupDriver::Cgroupfs,
        store.clone(),
        images.clone(),
        dir.join("events.sock"),
        None,
    );
    let (streaming, _serve) = crust_stream::StreamServer::bind(
        crust_stream::Options::from_config(&config.streaming),
        Arc::new(crust_runtime::StreamBackend(pods.clone())),
        std::future::pending(),
    )
    .unwrap();
    Cri::new(Arc::new(Runtime {
        config,
        cgroup_driver: CgroupDriver::Cgroupfs,
        store,
        images,
        pods,
        streaming,
    }))
}

fn test_config(root: &std::path::Path) -> Config {
    Config {
        root: root.to_path_buf(),
        ..Config::default()
    }
}

#[tokio::test]
async fn version_names_crust_and_v1() {
    let dir = tempfile::tempdir().unwrap();
    let cri = cri_on(dir.path(), test_config(dir.path()));
    let v = cri
        .version(Request::new(cri::VersionRequest::default()))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(v.runtime_name, "crust");
    assert_eq!(v.runtime_api_version, "v1");
    assert_eq!(v.runtime_version, env!("CARGO_PKG_VERSION"));
}

#[tokio::test]
async fn status_tells_network_is_not_ready_and_why() {
    let dir = tempfile::tempdir().unwrap();
    let cri = cri_on(dir.path(), test_config(dir.path()));
    let s = cri
        .status(Request::new(cri::StatusRequest { verbose: false }))
        .await
        .unwrap()
        .into_inner();
    let conditions = s.status.unwrap().conditions;
    let runtime = conditions
        .iter()
        .find(|c| c.r#type == "RuntimeReady")
        .unwrap();
    assert!(runtime.status);
    let network = conditions
        .iter()
        .find(|c| c.r#type == "NetworkReady")
        .unwrap();
    assert!(!network.status);
    assert!(!network.reason.is_empty() && !network.message.is_empty());
    assert!(s.info.is_empty(), "info only when verbose");
    let names: Vec<_> = s.runtime_handlers.iter().map(|h| h.name.as_str()).collect();
    assert_eq!(names, vec!["", "crust"]);
}

/// Whether this process runs on Linux `min` or newer with CAP_SYS_ADMIN
/// (bit 21) in its effective set; None when that cannot be told.
fn kernel_and_sys_admin(min: (u32, u32)) -> Option<bool> {
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").ok()?;
    let mut it = release.trim().split(|c: char| !c.is_ascii_digit());
    let version: (u32, u32) = (it.next()?.parse().ok()?, it.next()?.parse().ok()?);
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let cap_eff = status.lines().find_map(|l| l.strip_prefix("CapEff:"))?;
    let cap_eff = u64::from_str_radix(cap_eff.trim(), 16).ok()?;
    Some(version >= min && cap_eff & (1 << 21) != 0)
}

/// Whether this process could use mount_setattr (Linux 5.12+).
fn mount_setattr_usable() -> Option<bool> {
    kernel_and_sys_admin((5, 12))
}

/// Whether this process can mount overlayfs over detached idmapped layers
/// (root on Linux 6.15+ with user namespaces allowed), what crust's user
/// namespace probe needs.
fn idmapped_layers_usable() -> Option<bool> {
    let max_userns = std::fs::read_to_string("/proc/sys/user/max_user_namespaces").ok()?;
    Some(kernel_and_sys_admin((6, 15))? && max_userns.trim() != "0")
}

#[tokio::test]
async fn status_reports_security_features_per_handler() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = test_config(dir.path());
    config.runtime.handlers.insert(
        "runc".into(),
        crust_config::HandlerConfig {
            shim: "/usr/bin/containerd-shim-runc-v2".into(),
            options: Default::default(),
        },
    );
    let cri = cri_on(dir.path(), config);
    let s = cri
        .status(Request::new(cri::StatusRequest { verbose: false }))
        .await
        .unwrap()
        .into_inner();
    assert!(
        s.features.unwrap().supplemental_groups_policy,
        "Merge and Strict are implemented"
    );
    let features = |name: &str| {
        s.runtime_handlers
            .iter()
            .find(|h| h.name == name)
            .unwrap_or_else(|| panic!("handler {name:?} reported"))
            .features
            .unwrap()
    };
    let (default, crust, runc) = (features(""), features("crust"), features("runc"));
    assert!(
        !runc.user_namespaces,
        "only crust-shim handlers claim user namespaces"
    );
    assert_eq!(default, crust, "the default handler is crust");
    if let Some(usable) = idmapped_layers_usable() {
        assert_eq!(crust.user_namespaces, usable);
    }
    assert!(
        !runc.recursive_read_only_mounts,
        "only crust-shim is known to apply rro"
    );
    if let Some(usable) = mount_setattr_usable() {
        assert_eq!(crust.recursive_read_only_mounts, usable);
    }
}

#[tokio::test]
async fn runtime_not_ready_when_root_dir_is_gone() {
    let dir = tempfile::tempdir().unwrap();
    let cri = cri_on(dir.path(), test_config(&dir.path().join("gone")));
    let s = cri
        .status(Request::new(cri::StatusRequest { verbose: false }))
        .await
        .unwrap()
        .into_inner();
    let conditions = s.status.unwrap().conditions;
    let runtime = conditions
        .iter()
        .find(|c| c.r#type == "RuntimeReady")
        .unwrap();
    assert!(!runtime.status);
    assert!(runtime.message.contains("gone"), "{}", runtime.message);
}

#[tokio::test]
async fn verbose_status_carries_effective_config_as_json() {
    let dir = tempfile::tempdir().unwrap();
    let cri = cri_on(dir.path(), test_config(dir.path()));
    let s = cri
        .status(Request::new(cri::StatusRequest { verbose: true }))
        .await
        .unwrap()
        .into_inner();
    let config: serde_json::Value = serde_json::from_str(&s.info["config"]).unwrap();
    assert_eq!(config["root"], dir.path().display().to_string());
    assert_eq!(s.info["cgroupDriver"], "\"cgroupfs\"");
}

#[tokio::test]
async fn runtime_config_reports_cgroup_driver() {
    let dir = tempfile::tempdir().unwrap();
    let cri = cri_on(dir.path(), test_config(dir.path()));
    let r = cri
        .runtime_config(Request::new(cri::RuntimeConfigRequest::default()))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        r.linux.unwrap().cgroup_driver,
        cri::CgroupDriver::Cgroupfs as i32
    );
}

#[tokio::test]
async fn unlanded_rpcs_say_unimplemented_with_their_name() {
    let dir = tempfile::tempdir().unwrap();
    let cri = cri_on(dir.path(), test_config(dir.path()));
    let err = cri
        .checkpoint_container(Request::new(cri::CheckpointContainerRequest::default()))
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unimplemented);
    assert!(err.message().contains("CheckpointContainer"));
}

#[tokio::test]
async fn streaming_calls_validate_before_handing_out_a_url() {
    let dir = tempfile::tempdir().unwrap();
    let cri = cri_on(dir.path(), test_config(dir.path()));
    let exec = |container_id: &str, stdout, stderr, tty| cri::ExecRequest {
        container_id: container_id.into(),
        cmd: vec!["true".into()],
        stdout,
        stderr,
        tty,
        ..Default::default()
    };
    let code = |r: Result<tonic::Response<cri::ExecResponse>, tonic::Status>| {
        r.map(|_| ()).unwrap_err().code()
    };
    let invalid = tonic::Code::InvalidArgument;
    assert_eq!(
        code(cri.exec(Request::new(exec("", true, false, false))).await),
        invalid
    );
    assert_eq!(
        code(cri.exec(Request::new(exec("c", false, false, false))).await),
        invalid
    );
    assert_eq!(
        code(cri.exec(Request::new(exec("c", true, true, true))).await),
        invalid
    );
    let err = cri
        .exec(Request::new(exec("c", true, false, false)))
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::NotFound, "{err}");
    let err = cri
        .port_forward(Request::new(cri::PortForwardRequest {
            pod_sandbox_id: "p".into(),
            port: vec![0],
        }))
        .await
        .unwrap_err();
    assert_eq!(err.code(), invalid);
    assert!(err.message().contains("port 0"), "{err}");
    let err = cri
        .port_forward(Request::new(cri::PortForwardRequest {
            pod_sandbox_id: "p".into(),
            port: vec![80],
        }))
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::NotFound, "{err}");
}

#[tokio::test]
async fn image_calls_validate_names() {
    let dir = tempfile::tempdir().unwrap();
    let cri = cri_on(dir.path(), test_config(dir.path()));
    let err = cri
        .pull_image(Request::new(cri::PullImageRequest::default()))
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    let err = cri
        .pull_image(Request::new(cri::PullImageRequest {
            image: Some(cri::ImageSpec {
                image: "Not/Valid".into(),
                ..Default::default()
            }),
            ..Default::default()
        }))
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    assert!(err.message().contains("lowercase"), "{}", err.message());
    // Unknown images: nil status, idempotent removal.
    let spec = Some(cri::ImageSpec {
        image: "busybox:none".into(),
        ..Default::default()
    });
    let status = cri
        .image_status(Request::new(cri::ImageStatusRequest {
            image: spec.clone(),
            verbose: false,
        }))
        .await
        .unwrap()
        .into_inner();
    assert!(status.image.is_none());
    cri.remove_image(Request::new(cri::RemoveImageRequest { image: spec }))
        .await
        .unwrap();
}

/// Lists over crust-spec's limits are refused at the CRI entry with
/// InvalidArgument naming the list and the limit, before any pod or
/// container work.
#[tokio::test]
async fn oversized_lists_are_refused_with_invalid_argument() {
    let dir = tempfile::tempdir().unwrap();
    let cri = cri_on(dir.path(), test_config(dir.path()));
    let labels: std::collections::HashMap<String, String> = (0
        ..=crust_spec::limits::LABELS_ENTRIES)
        .map(|i| (format!("l{i}"), "x".to_string()))
        .collect();
    let e = cri
        .run_pod_sandbox(Request::new(cri::RunPodSandboxRequest {
            config: Some(cri::PodSandboxConfig {
                labels,
                ..Default::default()
            }),
            runtime_handler: String::new(),
        }))
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::InvalidArgument, "{e:?}");
    assert!(
        e.message().contains("pod labels") && e.message().contains("1000"),
        "{e:?}"
    );
    let e = cri
        .run_pod_sandbox(Request::new(cri::RunPodSandboxRequest {
            config: Some(cri::PodSandboxConfig {
                dns_config: Some(cri::DnsConfig {
                    searches: vec!["a.example".into(); 100_000],
                    ..Default::default()
                }),
                ..Default::default()
            }),
            runtime_handler: String::new(),
        }))
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::InvalidArgument, "{e:?}");
    assert!(e.message().contains("dns_config.searches"), "{e:?}");

    let envs = (0..150_000)
        .map(|i| cri::KeyValue {
            key: format!("K{i}"),
            value: "v".into(),
        })
        .collect();
    let e = cri
        .create_container(Request::new(cri::CreateContainerRequest {
            pod_sandbox_id: "p".into(),
            config: Some(cri::ContainerConfig {
                envs,
                ..Default::default()
            }),
            sandbox_config: None,
        }))
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::InvalidArgument, "{e:?}");
    assert!(
        e.message().contains("envs") && e.message().contains("10000"),
        "{e:?}"
    );
}

/// UpdateContainerResources validates `unified` as CreateContainer does:
/// a key is a cgroup file name, never a path onto the host.
#[tokio::test]
async fn update_resources_refuses_unified_paths() {
    let dir = tempfile::tempdir().unwrap();
    let cri = cri_on(dir.path(), test_config(dir.path()));
    for key in ["/etc/passwd", "../x", "memory.max/../../x", "cgroup.procs"] {
        let e = cri
            .update_container_resources(Request::new(cri::UpdateContainerResourcesRequest {
                container_id: "c".into(),
                linux: Some(cri::LinuxContainerResources {
                    unified: [(key.to_string(), "1".to_string())].into(),
                    ..Default::default()
                }),
                ..Default::default()
            }))
            .await
            .unwrap_err();
        assert_eq!(e.code(), tonic::Code::InvalidArgument, "{key}: {e:?}");
        assert!(e.message().contains("unified key"), "{key}: {e:?}");
    }
    // A valid key gets as far as looking the container up.
    let e = cri
        .update_container_resources(Request::new(cri::UpdateContainerResourcesRequest {
            container_id: "c".into(),
            linux: Some(cri::LinuxContainerResources {
                unified: [("memory.high".to_string(), "max".to_string())].into(),
                ..Default::default()
            }),
            ..Default::default()
        }))
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::NotFound, "{e:?}");
}

#[test]
fn runtime_errors_map_to_the_code_of_their_cause() {
    use crust_runtime::RuntimeError;
    let code = |e: RuntimeError| runtime_service::runtime_status(e).code();
    // The image store failing is crust's problem, not the caller's.
    let store = crust_image::ImageError::Internal("disk full".into());
    assert_eq!(code(RuntimeError::Image(store)), tonic::Code::Internal);
    let bad_image = crust_image::ImageError::Invalid("no layers".into());
    assert_eq!(
        code(RuntimeError::Image(bad_image)),
        tonic::Code::InvalidArgument
    );
    let bad_spec = crust_spec::SpecError::NoCommand;
    assert_eq!(
        code(RuntimeError::Spec(bad_spec)),
        tonic::Code::InvalidArgument
    );
    let ours = crust_spec::SpecError::Build(oci_spec::OciSpecError::Other("builder".into()));
    assert!(!ours.is_request_error());
    assert_eq!(code(RuntimeError::Spec(ours)), tonic::Code::Internal);
}
