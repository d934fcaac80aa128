//! The CRI v1 API of Kubernetes: types, gRPC client and server generated
//! by tonic-prost-build from `proto/api.proto`, vendored from
//! kubernetes/cri-api (commit and checksum in `proto/UPSTREAM`).
//!
//! crustd serves `v1::runtime_service_server` and
//! `v1::image_service_server`; the e2e suite uses the clients.
#![forbid(unsafe_code)]

#[allow(clippy::all, clippy::pedantic, missing_docs, rustdoc::all)]
pub mod v1 {
    tonic::include_proto!("runtime.v1");

    impl std::fmt::Debug for AuthConfig {
        /// Upstream marks password, auth, identity_token and
        /// registry_token `debug_redact`: they never reach a log.
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            fn redact(s: &str) -> &'static str {
                if s.is_empty() { "" } else { "<redacted>" }
            }
            f.debug_struct("AuthConfig")
                .field("username", &self.username)
                .field("password", &redact(&self.password))
                .field("auth", &redact(&self.auth))
                .field("server_address", &self.server_address)
                .field("identity_token", &redact(&self.identity_token))
                .field("registry_token", &redact(&self.registry_token))
                .finish()
        }
    }
}

/// The CRI version crust speaks, as `VersionResponse.runtime_api_version`.
pub const API_VERSION: &str = "v1";

/// The upstream release of kubernetes/cri-api the vendored proto matches.
pub const UPSTREAM_RELEASE: &str = "v0.37";

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use sha2::{Digest, Sha256};

    use crate::v1::image_service_client::ImageServiceClient;
    use crate::v1::runtime_service_client::RuntimeServiceClient;

    const PROTO: &str = include_str!("../proto/api.proto");
    const UPSTREAM: &str = include_str!("../proto/UPSTREAM");

    type Channel = tonic::transport::Channel;

    /// `rpcs!(Client: ProtoName => generated_method, ...)` names each RPC
    /// and takes the generated client method, so an RPC missing from the
    /// generated code fails to compile and one missing here fails the test.
    macro_rules! rpcs {
        ($client:ident: $($rpc:ident => $method:ident),* $(,)?) => {{
            $( let _ = |c: &mut $client<Channel>| drop(c.$method(tonic::Request::new(Default::default()))); )*
            [$(stringify!($rpc)),*].into_iter().map(String::from).collect::<BTreeSet<_>>()
        }};
    }

    fn proto_rpcs(service: &str) -> BTreeSet<String> {
        let body = PROTO
            .split(&format!("service {service} {{"))
            .nth(1)
            .expect("service in proto");
        let body = &body[..body.find("\n}").expect("service ends")];
        body.lines()
            .filter_map(|l| l.trim().strip_prefix("rpc "))
            .map(|l| l[..l.find('(').expect("rpc(")].to_string())
            .collect()
    }

    #[test]
    fn the_vendored_proto_is_the_recorded_upstream_file() {
        let recorded = UPSTREAM
            .lines()
            .find_map(|l| l.strip_prefix("sha256 "))
            .expect("sha256 line in proto/UPSTREAM");
        let actual: String = Sha256::digest(PROTO.as_bytes())
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        assert_eq!(
            actual, recorded,
            "proto/api.proto differs from proto/UPSTREAM"
        );
    }

    #[test]
    fn the_generated_services_cover_every_rpc_of_the_proto() {
        let runtime = rpcs!(RuntimeServiceClient:
            Version => version, RunPodSandbox => run_pod_sandbox, StopPodSandbox => stop_pod_sandbox,
            RemovePodSandbox => remove_pod_sandbox, PodSandboxStatus => pod_sandbox_status,
            ListPodSandbox => list_pod_sandbox, StreamPodSandboxes => stream_pod_sandboxes,
            CreateContainer => create_container, StartContainer => start_container,
            StopContainer => stop_container, RemoveContainer => remove_container,
            ListContainers => list_containers, StreamContainers => stream_containers,
            ContainerStatus => container_status, UpdateContainerResources => update_container_resources,
            ReopenContainerLog => reopen_container_log, ExecSync => exec_sync, Exec => exec,
            Attach => attach, PortForward => port_forward, ContainerStats => container_stats,
            ListContainerStats => list_container_stats, StreamContainerStats => stream_container_stats,
            PodSandboxStats => pod_sandbox_stats, ListPodSandboxStats => list_pod_sandbox_stats,
            StreamPodSandboxStats => stream_pod_sandbox_stats, UpdateRuntimeConfig => update_runtime_config,
            Status => status, CheckpointContainer => checkpoint_container, CheckpointPod => checkpoint_pod,
            RestorePod => restore_pod, GetContainerEvents => get_container_events,
            ListMetricDescriptors => list_metric_descriptors, ListPodSandboxMetrics => list_pod_sandbox_metrics,
            StreamPodSandboxMetrics => stream_pod_sandbox_metrics, RuntimeConfig => runtime_config,
            UpdatePodSandboxResources => update_pod_sandbox_resources,
        );
        let image = rpcs!(ImageServiceClient:
            ListImages => list_images, StreamImages => stream_images, ImageStatus => image_status,
            PullImage => pull_image, RemoveImage => remove_image, ImageFsInfo => image_fs_info,
        );
        assert_eq!(proto_rpcs("RuntimeService"), runtime);
        assert_eq!(proto_rpcs("ImageService"), image);
        assert_eq!(runtime.len() + image.len(), 43);
    }

    #[test]
    fn auth_config_debug_redacts_credentials() {
        let auth = crate::v1::AuthConfig {
            username: "alice".into(),
            password: "hunter2".into(),
            identity_token: "tok".into(),
            ..Default::default()
        };
        let shown = format!("{auth:?}");
        assert!(shown.contains("alice"), "{shown}");
        assert!(
            !shown.contains("hunter2") && !shown.contains("tok\""),
            "{shown}"
        );
    }
}
