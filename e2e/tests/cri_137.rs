//! RPCs and fields of CRI 1.37 (the vendored cri-api proto) through the
//! socket: the Stream* lists, stop signals (KEP-4960), checkpoint/restore
//! refusals.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use crust_e2e::{CriClient, Crustd, container_config, cri, image_ref, pod_config};
use futures_util::StreamExt;

const BUSYBOX: &str = "crust-test/busybox:latest";

async fn ready(crustd: &Crustd) -> CriClient {
    let mut c = crustd.client().await;
    c.pull(&image_ref(BUSYBOX)).await.unwrap();
    c
}

/// Every message of a server stream, failing the test on an error.
async fn collect<T>(stream: tonic::Streaming<T>) -> Vec<T> {
    stream.map(|m| m.unwrap()).collect().await
}

#[tokio::test]
async fn every_stream_list_returns_what_its_unary_list_returns_with_the_same_filters() {
    let crustd = Crustd::start().await;
    let mut c = ready(&crustd).await;
    let mut pods = Vec::new();
    let mut containers = Vec::new();
    for name in ["stream-a", "stream-b", "stream-c"] {
        let cfg = pod_config(&crustd, name);
        let pod = c.run_pod(&cfg).await;
        let id = c
            .run_container(
                &pod,
                &cfg,
                container_config(name, &image_ref(BUSYBOX), &["sleep", "3600"]),
            )
            .await;
        pods.push(pod);
        containers.push(id);
    }

    // Unfiltered, and filtered by label (one pod) and by id prefix.
    let pod_filters = [
        None,
        Some(cri::PodSandboxFilter {
            label_selector: [("app".to_string(), "stream-b".to_string())].into(),
            ..Default::default()
        }),
        Some(cri::PodSandboxFilter {
            id: pods[2][..12].to_string(),
            ..Default::default()
        }),
    ];
    let mut seen = Vec::new();
    for filter in pod_filters {
        let unary: BTreeSet<String> = c
            .runtime
            .list_pod_sandbox(cri::ListPodSandboxRequest {
                filter: filter.clone(),
            })
            .await
            .unwrap()
            .into_inner()
            .items
            .into_iter()
            .map(|p| p.id)
            .collect();
        let streamed = c
            .runtime
            .stream_pod_sandboxes(cri::StreamPodSandboxesRequest { filter })
            .await
            .unwrap()
            .into_inner();
        let streamed: BTreeSet<String> = collect(streamed)
            .await
            .into_iter()
            .flat_map(|m| m.pod_sandboxes)
            .map(|p| p.id)
            .collect();
        assert_eq!(streamed, unary);
        seen.push(streamed.len());
    }
    assert_eq!(seen, [3, 1, 1], "the filters select what they name");

    let container_filter = cri::ContainerFilter {
        pod_sandbox_id: pods[0].clone(),
        ..Default::default()
    };
    for filter in [None, Some(container_filter)] {
        let unary: BTreeSet<String> = c
            .runtime
            .list_containers(cri::ListContainersRequest {
                filter: filter.clone(),
            })
            .await
            .unwrap()
            .into_inner()
            .containers
            .into_iter()
            .map(|c| c.id)
            .collect();
        let streamed = c
            .runtime
            .stream_containers(cri::StreamContainersRequest {
                filter: filter.clone(),
            })
            .await
            .unwrap()
            .into_inner();
        let streamed: BTreeSet<String> = collect(streamed)
            .await
            .into_iter()
            .flat_map(|m| m.containers)
            .map(|c| c.id)
            .collect();
        assert_eq!(streamed, unary);
        assert_eq!(streamed.len(), if filter.is_some() { 1 } else { 3 });
    }

    let stats = c
        .runtime
        .stream_container_stats(cri::StreamContainerStatsRequest { filter: None })
        .await
        .unwrap()
        .into_inner();
    let stats: BTreeSet<String> = collect(stats)
        .await
        .into_iter()
        .flat_map(|m| m.container_stats)
        .map(|s| s.attributes.unwrap().id)
        .collect();
    assert_eq!(stats, containers.iter().cloned().collect());

    let pod_stats = c
        .runtime
        .stream_pod_sandbox_stats(cri::StreamPodSandboxStatsRequest {
            filter: Some(cri::PodSandboxStatsFilter {
                id: pods[1].clone(),
                ..Default::default()
            }),
        })
        .await
        .unwrap()
        .into_inner();
    let pod_stats: Vec<String> = collect(pod_stats)
        .await
        .into_iter()
        .flat_map(|m| m.pod_sandbox_stats)
        .map(|s| s.attributes.unwrap().id)
        .collect();
    assert_eq!(pod_stats, [pods[1].clone()]);

    let images = c
        .image
        .stream_images(cri::StreamImagesRequest { filter: None })
        .await
        .unwrap()
        .into_inner();
    let streamed: BTreeSet<String> = collect(images)
        .await
        .into_iter()
        .flat_map(|m| m.images)
        .map(|i| i.id)
        .collect();
    let unary: BTreeSet<String> = c.list_images().await.into_iter().map(|i| i.id).collect();
    assert_eq!(streamed, unary);
    assert!(!streamed.is_empty());
}

#[tokio::test]
async fn a_configured_stop_signal_overrides_the_image_and_status_reports_the_effective_one() {
    let crustd = Crustd::start().await;
    let mut c = ready(&crustd).await;
    let cfg = pod_config(&crustd, "stopsig");
    let pod = c.run_pod(&cfg).await;

    // PID 1 of the container handles USR1 only; SIGTERM (the default)
    // would be ignored by a PID 1 without a handler, and the stop would
    // wait out its whole timeout and end in SIGKILL (exit 137).
    let script = "trap 'exit 42' USR1; while true; do sleep 0.1; done";
    let mut config = container_config("usr1", &image_ref(BUSYBOX), &["sh", "-c", script]);
    config.stop_signal = cri::Signal::Sigusr1 as i32;
    let usr1 = c.run_container(&pod, &cfg, config).await;
    let plain = c
        .run_container(
            &pod,
            &cfg,
            container_config("plain", &image_ref(BUSYBOX), &["sleep", "3600"]),
        )
        .await;
    assert_eq!(
        c.container_status(&usr1).await.stop_signal,
        cri::Signal::Sigusr1 as i32
    );
    assert_eq!(
        c.container_status(&plain).await.stop_signal,
        cri::Signal::Sigterm as i32,
        "no signal configured and none in the image: SIGTERM"
    );

    // Let the shell install its trap before stopping.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let started = Instant::now();
    c.runtime
        .stop_container(cri::StopContainerRequest {
            container_id: usr1.clone(),
            timeout: 30,
        })
        .await
        .unwrap();
    let done = c.container_status(&usr1).await;
    assert_eq!(done.exit_code, 42, "stopped by SIGUSR1's handler: {done:?}");
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "the stop did not wait out its timeout"
    );

    let mut bad = container_config("bad", &image_ref(BUSYBOX), &["true"]);
    bad.stop_signal = 99;
    let err = c.create_container(&pod, &cfg, bad).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument, "{err:?}");
    assert!(err.message().contains("stop_signal"), "{}", err.message());
}

#[tokio::test]
async fn checkpoint_and_restore_answer_unimplemented_naming_criu() {
    let crustd = Crustd::start().await;
    let mut c = crustd.client().await;
    let errors = [
        c.runtime
            .checkpoint_container(cri::CheckpointContainerRequest::default())
            .await
            .unwrap_err(),
        c.runtime
            .checkpoint_pod(cri::CheckpointPodRequest::default())
            .await
            .unwrap_err(),
        c.runtime
            .restore_pod(cri::RestorePodRequest::default())
            .await
            .unwrap_err(),
    ];
    for err in errors {
        assert_eq!(err.code(), tonic::Code::Unimplemented, "{err:?}");
        assert!(err.message().contains("CRIU"), "{}", err.message());
    }
}

/// gRPC C-core clients (Python's grpcio here; C++ and Ruby share the core)
/// send the percent-encoded socket path as `:authority` for a `unix:`
/// target. crust's HTTP/2 server used to reset every such request with
/// PROTOCOL_ERROR (third_party/h2's `crust patch:`). grpcio 1.85 lives in
/// the venv hack/install-deps.sh makes (`CRUST_TEST_GRPCIO_PYTHON` names
/// another python with grpcio); Debian's own grpcio 1.51 predates the
/// percent-encoded authority and would pass without the fix.
#[tokio::test]
async fn a_grpc_c_core_client_that_sends_the_socket_path_as_authority_is_answered() {
    let crustd = Crustd::start().await;
    let script = r#"
import sys, grpc
channel = grpc.insecure_channel("unix://" + sys.argv[1])
def call(method, request=b""):
    rpc = channel.unary_unary(method, request_serializer=None, response_deserializer=None)
    return rpc(request, timeout=10)
version = call("/runtime.v1.RuntimeService/Version")
# VersionResponse field 2 (runtime_name) is "crust": printed for the test to check.
print(version.hex())
# a second RPC on the same channel, from the image service
print(call("/runtime.v1.ImageService/ListImages").hex())
"#;
    let socket = crustd.socket.clone();
    let python = std::env::var("CRUST_TEST_GRPCIO_PYTHON")
        .unwrap_or_else(|_| "/var/tmp/crust-grpcio/bin/python".into());
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new(&python)
            .arg("-c")
            .arg(script)
            .arg(&socket)
            .output()
            .unwrap_or_else(|e| panic!("run {python} (hack/install-deps.sh makes it): {e}"))
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "grpcio client failed: {stderr}\n{stdout}"
    );
    let version = hex_decode(stdout.lines().next().unwrap());
    let decoded: cri::VersionResponse = prost::Message::decode(&version[..]).unwrap();
    assert_eq!(decoded.runtime_name, "crust", "{decoded:?}");
    assert_eq!(decoded.runtime_api_version, "v1", "{decoded:?}");
    let images = hex_decode(stdout.lines().nth(1).expect("a ListImages answer"));
    let _: cri::ListImagesResponse = prost::Message::decode(&images[..]).unwrap();
}

fn hex_decode(hex: &str) -> Vec<u8> {
    (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap())
        .collect()
}

/// A pod cgroup file (`v1_controller`'s hierarchy on v1, the unified one on v2).
fn pod_cgroup_file(cgroup: &str, v1_controller: &str, name: &str) -> String {
    let path = if std::path::Path::new("/sys/fs/cgroup/cgroup.controllers").exists() {
        format!("/sys/fs/cgroup{cgroup}/{name}")
    } else {
        format!("/sys/fs/cgroup/{v1_controller}{cgroup}/{name}")
    };
    std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{path}: {e}"))
        .trim()
        .to_string()
}

fn limits(memory: i64, cpu_quota: i64) -> cri::LinuxContainerResources {
    cri::LinuxContainerResources {
        memory_limit_in_bytes: memory,
        cpu_quota,
        cpu_period: if cpu_quota != 0 { 100_000 } else { 0 },
        ..Default::default()
    }
}

/// In-place pod resize (UpdatePodSandboxResources): resources plus overhead
/// land in the pod's cgroup; a pod is never made smaller than a container
/// in it, nor a container larger than its pod; nonsense is InvalidArgument.
#[tokio::test]
async fn pod_resize_sets_the_pod_cgroup_and_keeps_containers_within_it() {
    let crustd = Crustd::start().await;
    let mut c = ready(&crustd).await;
    let pod_cfg = pod_config(&crustd, "resize");
    let pod = c.run_pod(&pod_cfg).await;
    let cgroup = pod_cfg.linux.as_ref().unwrap().cgroup_parent.clone();
    let v2 = std::path::Path::new("/sys/fs/cgroup/cgroup.controllers").exists();
    let memory_file = if v2 {
        "memory.max"
    } else {
        "memory.limit_in_bytes"
    };
    let pod_memory = || pod_cgroup_file(&cgroup, "memory", memory_file);
    let mut config = container_config("app", &image_ref(BUSYBOX), &["sleep", "3600"]);
    config.linux = Some(cri::LinuxContainerConfig {
        resources: Some(limits(64 << 20, 20_000)),
        ..Default::default()
    });
    let app = c.run_container(&pod, &pod_cfg, config).await;

    let runtime = c.runtime.clone();
    let resize = |resources: Option<cri::LinuxContainerResources>,
                  overhead: Option<cri::LinuxContainerResources>| {
        let mut runtime = runtime.clone();
        let pod = pod.clone();
        async move {
            runtime
                .update_pod_sandbox_resources(cri::UpdatePodSandboxResourcesRequest {
                    pod_sandbox_id: pod,
                    resources,
                    overhead,
                })
                .await
        }
    };
    // grow: 256 MiB and one CPU for the containers, 16 MiB of overhead
    resize(Some(limits(256 << 20, 100_000)), Some(limits(16 << 20, 0)))
        .await
        .unwrap();
    // the overhead has no CPU limit, so the pod's CPU is unlimited
    assert_eq!(pod_memory(), (272u64 << 20).to_string());
    resize(
        Some(limits(256 << 20, 100_000)),
        Some(limits(16 << 20, 10_000)),
    )
    .await
    .unwrap();
    if v2 {
        assert_eq!(pod_cgroup_file(&cgroup, "cpu", "cpu.max"), "110000 100000");
    } else {
        assert_eq!(
            pod_cgroup_file(&cgroup, "cpu", "cpu.cfs_quota_us"),
            "110000"
        );
        assert_eq!(
            pod_cgroup_file(&cgroup, "cpu", "cpu.cfs_period_us"),
            "100000"
        );
    }
    let info = c.pod_info(&pod).await;
    assert_eq!(info["podMemoryLimit"], 272u64 << 20, "{info}");
    assert_eq!(info["podCpuMillis"], 1100, "{info}");

    let update_app = |memory: i64, quota: i64| {
        let mut runtime = runtime.clone();
        let app = app.clone();
        async move {
            runtime
                .update_container_resources(cri::UpdateContainerResourcesRequest {
                    container_id: app,
                    linux: Some(limits(memory, quota)),
                    ..Default::default()
                })
                .await
        }
    };
    // a container above its pod is refused, naming the pod's limit
    let err = update_app(512 << 20, 20_000).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::FailedPrecondition, "{err:?}");
    assert!(
        err.message().contains("grow the pod first"),
        "{}",
        err.message()
    );
    let err = update_app(64 << 20, 200_000).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::FailedPrecondition, "{err:?}");
    // within the pod: applied
    update_app(128 << 20, 20_000).await.unwrap();

    // a pod below its container is refused, naming it; nothing changes
    let err = resize(Some(limits(100 << 20, 0)), None).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::FailedPrecondition, "{err:?}");
    assert!(err.message().contains("\"app\""), "{}", err.message());
    assert_eq!(pod_memory(), (272u64 << 20).to_string());
    // shrinking in kubelet's order (container first, then pod) works
    update_app(32 << 20, 20_000).await.unwrap();
    resize(Some(limits(100 << 20, 50_000)), None).await.unwrap();
    assert_eq!(pod_memory(), (100u64 << 20).to_string());

    // nonsense
    for (resources, overhead, field) in [
        (Some(limits(-1, 0)), None, "memory_limit_in_bytes"),
        (Some(limits(0, -5)), None, "cpu_quota"),
        (None, None, "resources"),
        (
            Some(cri::LinuxContainerResources {
                cpuset_cpus: "0".into(),
                ..Default::default()
            }),
            None,
            "cpuset",
        ),
    ] {
        let err = resize(resources, overhead).await.unwrap_err();
        assert_eq!(err.code(), tonic::Code::InvalidArgument, "{field}: {err:?}");
        assert!(err.message().contains(field), "{field}: {}", err.message());
    }
    assert_eq!(pod_memory(), (100u64 << 20).to_string());
    let err = runtime
        .clone()
        .update_pod_sandbox_resources(cri::UpdatePodSandboxResourcesRequest {
            pod_sandbox_id: "0123456789abcdef".into(),
            resources: Some(limits(64 << 20, 0)),
            overhead: None,
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::NotFound, "{err:?}");

    // no memory limit on the containers: the pod's memory is unlimited
    resize(Some(limits(0, 50_000)), None).await.unwrap();
    let unlimited = pod_memory();
    assert!(
        unlimited == "max" || unlimited.parse::<u64>().unwrap() > 1 << 62,
        "{unlimited}"
    );
    c.remove_pod(&pod).await;
}

/// The metrics of one container in a ListPodSandboxMetrics answer, by name.
fn container_metric(
    pods: &[cri::PodSandboxMetrics],
    container: &str,
    name: &str,
) -> Option<cri::Metric> {
    pods.iter()
        .flat_map(|p| p.container_metrics.iter())
        .filter(|c| c.container_id == container)
        .flat_map(|c| c.metrics.iter())
        .find(|m| m.name == name)
        .cloned()
}

/// KEP-2371: kubelet takes cAdvisor-style metrics from the runtime. Every
/// metric has a descriptor with as many label keys as it has values, and
/// the values are the container's: its processes, its memory, the OOM kill
/// in its cgroup. The stream form carries the same pods.
#[tokio::test]
async fn pod_sandbox_metrics_report_each_running_container_with_described_labels() {
    let crustd = Crustd::start().await;
    let mut c = ready(&crustd).await;
    let descriptors = c
        .runtime
        .list_metric_descriptors(cri::ListMetricDescriptorsRequest {})
        .await
        .unwrap()
        .into_inner()
        .descriptors;
    let names: BTreeSet<&str> = descriptors.iter().map(|d| d.name.as_str()).collect();
    for name in [
        "container_cpu_usage_seconds_total",
        "container_memory_working_set_bytes",
        "container_processes",
        "container_oom_events_total",
        "container_network_receive_bytes_total",
    ] {
        assert!(names.contains(name), "{name} missing from {names:?}");
    }

    let pod_cfg = pod_config(&crustd, "metrics");
    let pod = c.run_pod(&pod_cfg).await;
    // Three processes: sh and two sleeps. The hog is OOM-killed inside the
    // 32 MiB limit while the container keeps running.
    let mut config = container_config(
        "app",
        &image_ref(BUSYBOX),
        &[
            "sh",
            "-c",
            "head -c 256m /dev/zero | tail; sleep 3600 & sleep 3600 & wait",
        ],
    );
    config.linux = Some(cri::LinuxContainerConfig {
        resources: Some(limits(32 << 20, 0)),
        ..Default::default()
    });
    let app = c.run_container(&pod, &pod_cfg, config).await;

    let deadline = Instant::now() + Duration::from_secs(30);
    let pods = loop {
        let pods = c
            .runtime
            .list_pod_sandbox_metrics(cri::ListPodSandboxMetricsRequest {})
            .await
            .unwrap()
            .into_inner()
            .pod_metrics;
        let value = |name| container_metric(&pods, &app, name).and_then(|m| m.value);
        // The pipeline is three processes too: wait for the OOM kill first.
        let oom_killed = value("container_oom_events_total").is_some_and(|v| v.value >= 1);
        if oom_killed && value("container_processes").map(|v| v.value) == Some(3) {
            break pods;
        }
        assert!(
            Instant::now() < deadline,
            "never an OOM kill and then 3 processes: {pods:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let ours = pods.iter().find(|p| p.pod_sandbox_id == pod).unwrap();
    let value = |name| {
        container_metric(&pods, &app, name)
            .unwrap_or_else(|| panic!("no {name}"))
            .value
            .unwrap()
            .value
    };
    assert!(value("container_memory_usage_bytes") > 0);
    assert!(value("container_memory_working_set_bytes") > 0);
    assert!(value("container_memory_working_set_bytes") <= 32 << 20);
    assert!(value("container_oom_events_total") >= 1, "{ours:?}");
    let processes = container_metric(&pods, &app, "container_processes").unwrap();
    assert_eq!(processes.metric_type, cri::MetricType::Gauge as i32);
    assert!(processes.label_values.contains(&"app".to_string()));
    assert!(processes.label_values.contains(&app));
    assert!(processes.label_values.contains(&"metrics".to_string()));
    for metric in ours
        .metrics
        .iter()
        .chain(ours.container_metrics.iter().flat_map(|c| c.metrics.iter()))
    {
        let d = descriptors
            .iter()
            .find(|d| d.name == metric.name)
            .unwrap_or_else(|| panic!("{} has no descriptor", metric.name));
        assert_eq!(d.label_keys.len(), metric.label_values.len(), "{metric:?}");
    }
    // This pod's network is loopback only, which is not reported.
    assert!(ours.metrics.is_empty(), "{:?}", ours.metrics);

    let streamed: BTreeSet<String> = collect(
        c.runtime
            .stream_pod_sandbox_metrics(cri::StreamPodSandboxMetricsRequest {})
            .await
            .unwrap()
            .into_inner(),
    )
    .await
    .into_iter()
    .flat_map(|r| r.pod_sandbox_metrics)
    .map(|p| p.pod_sandbox_id)
    .collect();
    assert!(streamed.contains(&pod), "{streamed:?}");

    // A stopped container is no longer reported.
    c.runtime
        .stop_container(cri::StopContainerRequest {
            container_id: app.clone(),
            timeout: 0,
        })
        .await
        .unwrap();
    let pods = c
        .runtime
        .list_pod_sandbox_metrics(cri::ListPodSandboxMetricsRequest {})
        .await
        .unwrap()
        .into_inner()
        .pod_metrics;
    assert!(container_metric(&pods, &app, "container_processes").is_none());
}
