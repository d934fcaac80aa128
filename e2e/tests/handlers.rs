//! RuntimeClass handlers backed by other shim v2 runtimes: Debian's
//! containerd-shim-runc-v2 (containerd 1.6, Task API v2 only) with runc,
//! driven through the CRI socket. Each test runs for that handler and for
//! crust-shim named explicitly as a handler, so both take the same path.

use std::path::Path;
use std::time::Duration;

use crust_e2e::{Crustd, CrustdOptions, container_config, cri, image_ref, pod_config};

const BUSYBOX: &str = "crust-test/busybox:latest";
const RUNC_SHIM: &str = "/usr/bin/containerd-shim-runc-v2";
const RUNC: &str = "/usr/sbin/runc";

/// Both handlers, crust-shim's named `crust`.
const HANDLERS: &[&str] = &["runc", "crust"];

fn handler_config() -> String {
    format!(
        "runtime:\n  handlers:\n    crust:\n      shim: crust-shim\n    runc:\n      shim: {RUNC_SHIM}\n      options: {{BinaryName: {RUNC}}}\n"
    )
}

/// crustd with both handlers, or None (and why, printed) where this host
/// lacks the runc shim or root.
async fn crustd() -> Option<Crustd> {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("SKIPPED: handler tests need root");
        return None;
    }
    for bin in [RUNC_SHIM, RUNC] {
        assert!(
            Path::new(bin).exists(),
            "{bin} is missing: hack/install-deps.sh installs containerd and runc"
        );
    }
    Some(
        Crustd::start_with(CrustdOptions {
            extra_config: handler_config(),
            ..Default::default()
        })
        .await,
    )
}

async fn run_pod(
    c: &mut crust_e2e::CriClient,
    config: &cri::PodSandboxConfig,
    handler: &str,
) -> Result<String, tonic::Status> {
    c.runtime
        .run_pod_sandbox(cri::RunPodSandboxRequest {
            config: Some(config.clone()),
            runtime_handler: handler.to_string(),
        })
        .await
        .map(|r| r.into_inner().pod_sandbox_id)
}

fn log_records(path: &str) -> Vec<(String, String, String)> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|l| {
            let mut parts = l.splitn(4, ' ');
            let ts = parts.next().unwrap().to_string();
            assert!(ts.contains('T') && ts.ends_with('Z'), "timestamp: {l}");
            let stream = parts.next().unwrap().to_string();
            let tag = parts.next().unwrap().to_string();
            let content = parts.next().unwrap_or("").to_string();
            (stream, tag, content)
        })
        .collect()
}

#[tokio::test]
async fn two_containers_log_exec_and_stop_under_each_handler() {
    let Some(crustd) = crustd().await else { return };
    let mut c = crustd.client().await;
    c.pull(&image_ref(BUSYBOX)).await.unwrap();
    for handler in HANDLERS {
        let pod_cfg = pod_config(&crustd, &format!("two-{handler}"));
        let pod = run_pod(&mut c, &pod_cfg, handler).await.unwrap();
        let status = c
            .runtime
            .pod_sandbox_status(cri::PodSandboxStatusRequest {
                pod_sandbox_id: pod.clone(),
                verbose: false,
            })
            .await
            .unwrap()
            .into_inner()
            .status
            .unwrap();
        assert_eq!(status.runtime_handler, *handler);
        let sleeper = c
            .run_container(
                &pod,
                &pod_cfg,
                container_config("sleeper", &image_ref(BUSYBOX), &["sleep", "3600"]),
            )
            .await;
        let long_line = "x".repeat(20 * 1024);
        let script = format!("echo to-stdout; echo to-stderr >&2; echo {long_line}; exit 3");
        let quitter = c
            .run_container(
                &pod,
                &pod_cfg,
                container_config("quitter", &image_ref(BUSYBOX), &["sh", "-c", &script]),
            )
            .await;
        let done = c.wait_exited(&quitter, Duration::from_secs(20)).await;
        assert_eq!(done.exit_code, 3, "{handler}");
        assert_eq!(done.reason, "Error", "{handler}");
        let records = log_records(&done.log_path);
        assert!(
            records.contains(&("stdout".into(), "F".into(), "to-stdout".into())),
            "{handler}: {records:?}"
        );
        assert!(
            records.contains(&("stderr".into(), "F".into(), "to-stderr".into())),
            "{handler}: {records:?}"
        );
        let parts: Vec<_> = records.iter().filter(|r| r.2.starts_with("xxx")).collect();
        assert_eq!(
            parts.len(),
            2,
            "{handler}: the 20 KiB line is a 16 KiB P and an F"
        );
        assert_eq!((parts[0].1.as_str(), parts[0].2.len()), ("P", 16 * 1024));
        assert_eq!((parts[1].1.as_str(), parts[1].2.len()), ("F", 4 * 1024));

        // ExecSync: output, exit code, and a timeout.
        let r = c
            .exec_sync(
                &sleeper,
                &["sh", "-c", "echo out; echo err >&2; exit 7"],
                10,
            )
            .await
            .unwrap();
        assert_eq!(r.exit_code, 7, "{handler}");
        assert_eq!(r.stdout, b"out\n", "{handler}");
        assert_eq!(r.stderr, b"err\n", "{handler}");
        let started = std::time::Instant::now();
        let timed_out = c.exec_sync(&sleeper, &["sleep", "30"], 1).await;
        assert!(started.elapsed() < Duration::from_secs(10), "{handler}");
        match timed_out {
            Err(s) => assert_eq!(s.code(), tonic::Code::DeadlineExceeded, "{handler}: {s:?}"),
            Ok(r) => panic!("{handler}: a 1 s ExecSync of sleep 30 answered {r:?}"),
        }
        // Both containers share the pod's network and IPC namespaces.
        let ns_cmd = ["readlink", "/proc/self/ns/net", "/proc/self/ns/ipc"];
        let a = c.exec_sync(&sleeper, &ns_cmd, 10).await.unwrap().stdout;
        let second = c
            .run_container(
                &pod,
                &pod_cfg,
                container_config("second", &image_ref(BUSYBOX), &["sleep", "3600"]),
            )
            .await;
        let b = c.exec_sync(&second, &ns_cmd, 10).await.unwrap().stdout;
        assert_eq!(a, b, "{handler}: containers of one pod share net and ipc");

        c.runtime
            .stop_container(cri::StopContainerRequest {
                container_id: sleeper.clone(),
                timeout: 2,
            })
            .await
            .unwrap();
        let stopped = c.container_status(&sleeper).await;
        assert_eq!(stopped.state, cri::ContainerState::ContainerExited as i32);
        // The pod init is PID 1 of the shared PID namespace: sleep is not,
        // and SIGTERM ends it.
        assert_eq!(stopped.exit_code, 143, "{handler}");
        c.runtime
            .stop_pod_sandbox(cri::StopPodSandboxRequest {
                pod_sandbox_id: pod.clone(),
            })
            .await
            .unwrap();
        c.remove_pod(&pod).await;
        assert!(c.list_pods().await.iter().all(|p| p.id != pod));
    }
    assert_eq!(crustd.mounts_left(), Vec::<String>::new());
}
