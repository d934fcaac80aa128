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
