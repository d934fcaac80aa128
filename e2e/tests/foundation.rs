//! crustd as a program: the CRI basics over the socket, metrics, logging,
//! start-up refusals and clean shutdown.

use std::os::unix::fs::PermissionsExt;

use crust_e2e::{Crustd, CrustdOptions, cri, free_port, http_get, run_crustd};
use nix::sys::signal::Signal;

#[tokio::test]
async fn version_over_the_socket() {
    let crustd = Crustd::start().await;
    let mut c = crustd.client().await;
    let v = c
        .runtime
        .version(cri::VersionRequest {
            version: "v1".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(v.runtime_name, "crust");
    assert_eq!(v.runtime_api_version, "v1");
    assert!(!v.runtime_version.is_empty());
}

#[tokio::test]
async fn status_tells_the_truth_and_verbose_shows_config() {
    let crustd = Crustd::start().await;
    let mut c = crustd.client().await;
    let s = c
        .runtime
        .status(cri::StatusRequest { verbose: true })
        .await
        .unwrap()
        .into_inner();
    let conditions = s.status.unwrap().conditions;
    let get = |t: &str| conditions.iter().find(|c| c.r#type == t).cloned().unwrap();
    assert!(get("RuntimeReady").status);
    // The harness gives crustd a valid (loopback-only) CNI config;
    // network.rs shows the not-ready side.
    assert!(get("NetworkReady").status);
    let config: serde_json::Value = serde_json::from_str(&s.info["config"]).unwrap();
    assert_eq!(config["root"], crustd.root().display().to_string());
    assert_eq!(config["socket"], crustd.socket.display().to_string());
    assert!(s.runtime_handlers.iter().any(|h| h.name == "crust"));
}

#[tokio::test]
async fn runtime_config_reports_the_configured_cgroup_driver() {
    let crustd = Crustd::start_with(CrustdOptions {
        extra_config: "cgroup_driver: systemd\n".into(),
        ..Default::default()
    })
    .await;
    let mut c = crustd.client().await;
    let r = c
        .runtime
        .runtime_config(cri::RuntimeConfigRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        r.linux.unwrap().cgroup_driver,
        cri::CgroupDriver::Systemd as i32
    );
}

#[tokio::test]
async fn auto_cgroup_driver_matches_the_host() {
    let crustd = Crustd::start().await;
    let mut c = crustd.client().await;
    let r = c
        .runtime
        .runtime_config(cri::RuntimeConfigRequest {})
        .await
        .unwrap()
        .into_inner();
    let expected = if std::path::Path::new("/run/systemd/system").is_dir() {
        cri::CgroupDriver::Systemd
    } else {
        cri::CgroupDriver::Cgroupfs
    };
    assert_eq!(r.linux.unwrap().cgroup_driver, expected as i32);
}

#[tokio::test]
async fn checkpoint_answers_unimplemented_and_metrics_are_described() {
    let crustd = Crustd::start().await;
    let mut c = crustd.client().await;
    let err = c
        .runtime
        .checkpoint_container(cri::CheckpointContainerRequest::default())
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unimplemented);
    assert!(
        err.message().contains("CheckpointContainer"),
        "{}",
        err.message()
    );
    let descriptors = c
        .runtime
        .list_metric_descriptors(cri::ListMetricDescriptorsRequest::default())
        .await
        .unwrap()
        .into_inner()
        .descriptors;
    assert!(
        descriptors
            .iter()
            .any(|d| d.name == "container_memory_working_set_bytes"),
        "{descriptors:?}"
    );
}

#[tokio::test]
async fn socket_and_dirs_have_private_permissions() {
    let crustd = Crustd::start().await;
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o7777;
    assert_eq!(mode(&crustd.socket), 0o660);
    assert_eq!(mode(&crustd.root()), 0o700);
    assert_eq!(mode(&crustd.state()), 0o700);
    assert!(crustd.root().join("metadata.redb").is_file());
}

#[tokio::test]
async fn metrics_count_each_rpc_by_code() {
    let port = free_port();
    let crustd = Crustd::start_with(CrustdOptions {
        extra_config: format!("metrics:\n  address: 127.0.0.1:{port}\n"),
        ..Default::default()
    })
    .await;
    let mut c = crustd.client().await;
    for _ in 0..2 {
        c.runtime
            .version(cri::VersionRequest::default())
            .await
            .unwrap();
    }
    let _ = c
        .runtime
        .port_forward(cri::PortForwardRequest::default())
        .await
        .unwrap_err();
    let text = tokio::task::spawn_blocking(move || http_get(port, "/metrics"))
        .await
        .unwrap();
    assert!(
        text.starts_with("HTTP/1.0 200") || text.starts_with("HTTP/1.1 200"),
        "{text}"
    );
    assert!(
        text.contains(
            r#"crust_grpc_requests_total{service="RuntimeService",method="Version",code="Ok"} 2"#
        ),
        "{text}"
    );
    assert!(
        text.contains(
            r#"crust_grpc_requests_total{service="RuntimeService",method="PortForward",code="InvalidArgument"} 1"#
        ),
        "{text}"
    );
    assert!(
        text.contains(
            r#"crust_grpc_request_duration_seconds_count{service="RuntimeService",method="Version"} 2"#
        ),
        "{text}"
    );
    assert!(text.contains("crust_build_info{version="), "{text}");
}

#[tokio::test]
async fn json_logs_carry_the_call_span() {
    let crustd = Crustd::start_with(CrustdOptions {
        args: vec!["--log-format".into(), "json".into()],
        ..Default::default()
    })
    .await;
    let mut c = crustd.client().await;
    let _ = c
        .runtime
        .container_status(cri::ContainerStatusRequest {
            container_id: "abc".into(),
            verbose: false,
        })
        .await;
    // The failure line is written after the reply; give it a moment.
    let mut found = None;
    for _ in 0..50 {
        found = crustd
            .log()
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .find(|v| v["span"]["call"] == "ContainerStatus" && v["span"]["container_id"] == "abc");
        if found.is_some() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let line = found.unwrap_or_else(|| panic!("no JSON line for the call:\n{}", crustd.log()));
    assert_eq!(line["level"], "INFO");
}

#[tokio::test]
async fn sigterm_stops_cleanly_and_removes_the_socket() {
    let mut crustd = Crustd::start().await;
    let code = crustd.stop_with(Signal::SIGTERM);
    assert_eq!(code, Some(0), "{}", crustd.log());
    assert!(!crustd.socket.exists(), "socket left behind");
    // The store was closed cleanly: a new crustd opens it at once.
    crustd.spawn(&[]).await;
    let mut c = crustd.client().await;
    c.runtime
        .version(cri::VersionRequest::default())
        .await
        .unwrap();
}

#[tokio::test]
async fn stale_socket_from_a_killed_crustd_is_replaced() {
    let mut crustd = Crustd::start().await;
    crustd.stop_with(Signal::SIGKILL);
    assert!(crustd.socket.exists(), "SIGKILL leaves the socket file");
    crustd.spawn(&[]).await;
    let mut c = crustd.client().await;
    c.runtime
        .version(cri::VersionRequest::default())
        .await
        .unwrap();
}

#[tokio::test]
async fn socket_held_by_a_live_server_is_refused() {
    let first = Crustd::start().await;
    let other = tempfile::tempdir_in("/var/tmp").unwrap();
    let config = other.path().join("config.yaml");
    std::fs::write(
        &config,
        format!(
            "root: {}/root\nstate: {}/state\nsocket: {}\nmetrics:\n  address: \"\"\n",
            other.path().display(),
            other.path().display(),
            first.socket.display()
        ),
    )
    .unwrap();
    let (code, out) = run_crustd(&["--config", config.to_str().unwrap()]);
    assert_ne!(code, Some(0));
    assert!(out.contains("in use by a running server"), "{out}");
    // The first server is untouched.
    let mut c = first.client().await;
    c.runtime
        .version(cri::VersionRequest::default())
        .await
        .unwrap();
}

#[tokio::test]
async fn a_state_dir_held_by_a_live_crustd_is_refused() {
    let first = Crustd::start().await;
    let other = tempfile::tempdir_in("/var/tmp").unwrap();
    let config = other.path().join("config.yaml");
    std::fs::write(
        &config,
        format!(
            "root: {}/root\nstate: {}\nsocket: {}/crust.sock\nmetrics:\n  address: \"\"\n",
            other.path().display(),
            first.dir.path().join("state").display(),
            other.path().display()
        ),
    )
    .unwrap();
    let (code, out) = run_crustd(&["--config", config.to_str().unwrap()]);
    assert_ne!(code, Some(0));
    assert!(out.contains("in use by another crustd"), "{out}");
    let mut c = first.client().await;
    c.runtime
        .version(cri::VersionRequest::default())
        .await
        .unwrap();
}

#[tokio::test]
async fn invalid_config_is_refused_naming_key_and_line() {
    let dir = tempfile::tempdir_in("/var/tmp").unwrap();
    let config = dir.path().join("config.yaml");
    std::fs::write(&config, "root: /var/tmp/x\nregistries:\n  mirorrs: {}\n").unwrap();
    let (code, out) = run_crustd(&["--config", config.to_str().unwrap()]);
    assert_ne!(code, Some(0));
    assert!(out.contains("mirorrs") && out.contains("line 3"), "{out}");
}

#[tokio::test]
async fn missing_explicit_config_file_is_an_error() {
    let (code, out) = run_crustd(&["--config", "/nonexistent/crust.yaml"]);
    assert_ne!(code, Some(0));
    assert!(out.contains("/nonexistent/crust.yaml"), "{out}");
}

#[tokio::test]
async fn unwritable_root_is_refused() {
    let dir = tempfile::tempdir_in("/var/tmp").unwrap();
    // A read-only tmpfs: even root cannot write there.
    let ro = dir.path().join("ro");
    std::fs::create_dir(&ro).unwrap();
    nix::mount::mount(
        Some("tmpfs"),
        &ro,
        Some("tmpfs"),
        nix::mount::MsFlags::MS_RDONLY,
        None::<&str>,
    )
    .expect("mount read-only tmpfs (tests run as root)");
    let config = dir.path().join("config.yaml");
    std::fs::write(
        &config,
        format!(
            "root: {ro}/root\nstate: {d}/state\nsocket: {d}/state/crust.sock\nmetrics:\n  address: \"\"\n",
            ro = ro.display(),
            d = dir.path().display()
        ),
    )
    .unwrap();
    let (code, out) = run_crustd(&["--config", config.to_str().unwrap()]);
    crust_e2e::unmount_everything_under(dir.path());
    assert_ne!(code, Some(0));
    assert!(
        out.contains("root dir") && out.contains("Read-only"),
        "{out}"
    );
}

#[tokio::test]
async fn printed_default_config_is_valid_and_complete() {
    let (code, out) = run_crustd(&["config", "default"]);
    assert_eq!(code, Some(0));
    for section in [
        "root:",
        "state:",
        "socket:",
        "cgroup_driver:",
        "registries:",
        "cni:",
        "runtime:",
        "streaming:",
        "metrics:",
        "log:",
    ] {
        assert!(out.contains(section), "missing {section}:\n{out}");
    }
    let dir = tempfile::tempdir_in("/var/tmp").unwrap();
    let file = dir.path().join("default.yaml");
    std::fs::write(&file, &out).unwrap();
    let (code, checked) = run_crustd(&["--config", file.to_str().unwrap(), "config", "check"]);
    assert_eq!(code, Some(0), "{checked}");
    assert!(
        checked.contains("socket: /run/crust/crust.sock"),
        "{checked}"
    );
}
