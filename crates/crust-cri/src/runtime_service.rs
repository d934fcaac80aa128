//! RuntimeService: Version, Status and RuntimeConfig are answered here;
//! pods, containers, streaming and stats land with their issues.

use std::pin::Pin;

use k8s_cri::v1 as cri;
use k8s_cri::v1::runtime_service_server::RuntimeService;
use tokio_stream::Stream;
use tonic::{Request, Response, Status};

use crate::{
    Cri, KUBE_RUNTIME_API_VERSION, NETWORK_READY, RUNTIME_API_VERSION, RUNTIME_NAME, RUNTIME_READY,
    Rpc, condition, unimplemented,
};

type EventStream = Pin<Box<dyn Stream<Item = Result<cri::ContainerEventResponse, Status>> + Send>>;

#[tonic::async_trait]
impl RuntimeService for Cri {
    type GetContainerEventsStream = EventStream;

    async fn version(&self, _: Request<cri::VersionRequest>) -> Rpc<cri::VersionResponse> {
        Ok(Response::new(cri::VersionResponse {
            version: KUBE_RUNTIME_API_VERSION.to_string(),
            runtime_name: RUNTIME_NAME.to_string(),
            runtime_version: env!("CARGO_PKG_VERSION").to_string(),
            runtime_api_version: RUNTIME_API_VERSION.to_string(),
        }))
    }

    async fn status(&self, request: Request<cri::StatusRequest>) -> Rpc<cri::StatusResponse> {
        Ok(Response::new(
            self.status_response(request.get_ref().verbose),
        ))
    }

    async fn runtime_config(
        &self,
        _: Request<cri::RuntimeConfigRequest>,
    ) -> Rpc<cri::RuntimeConfigResponse> {
        let driver = match self.runtime.cgroup_driver {
            crust_config::CgroupDriver::Cgroupfs => cri::CgroupDriver::Cgroupfs,
            crust_config::CgroupDriver::Systemd => cri::CgroupDriver::Systemd,
        };
        Ok(Response::new(cri::RuntimeConfigResponse {
            linux: Some(cri::LinuxRuntimeConfiguration {
                cgroup_driver: driver as i32,
            }),
        }))
    }

    async fn get_container_events(&self, _: Request<cri::GetEventsRequest>) -> Rpc<EventStream> {
        unimplemented("GetContainerEvents")
    }

    async fn run_pod_sandbox(
        &self,
        _: Request<cri::RunPodSandboxRequest>,
    ) -> Rpc<cri::RunPodSandboxResponse> {
        unimplemented("RunPodSandbox")
    }

    async fn stop_pod_sandbox(
        &self,
        _: Request<cri::StopPodSandboxRequest>,
    ) -> Rpc<cri::StopPodSandboxResponse> {
        unimplemented("StopPodSandbox")
    }

    async fn remove_pod_sandbox(
        &self,
        _: Request<cri::RemovePodSandboxRequest>,
    ) -> Rpc<cri::RemovePodSandboxResponse> {
        unimplemented("RemovePodSandbox")
    }

    async fn pod_sandbox_status(
        &self,
        _: Request<cri::PodSandboxStatusRequest>,
    ) -> Rpc<cri::PodSandboxStatusResponse> {
        unimplemented("PodSandboxStatus")
    }

    async fn list_pod_sandbox(
        &self,
        _: Request<cri::ListPodSandboxRequest>,
    ) -> Rpc<cri::ListPodSandboxResponse> {
        unimplemented("ListPodSandbox")
    }

    async fn create_container(
        &self,
        _: Request<cri::CreateContainerRequest>,
    ) -> Rpc<cri::CreateContainerResponse> {
        unimplemented("CreateContainer")
    }

    async fn start_container(
        &self,
        _: Request<cri::StartContainerRequest>,
    ) -> Rpc<cri::StartContainerResponse> {
        unimplemented("StartContainer")
    }

    async fn stop_container(
        &self,
        _: Request<cri::StopContainerRequest>,
    ) -> Rpc<cri::StopContainerResponse> {
        unimplemented("StopContainer")
    }

    async fn remove_container(
        &self,
        _: Request<cri::RemoveContainerRequest>,
    ) -> Rpc<cri::RemoveContainerResponse> {
        unimplemented("RemoveContainer")
    }

    async fn list_containers(
        &self,
        _: Request<cri::ListContainersRequest>,
    ) -> Rpc<cri::ListContainersResponse> {
        unimplemented("ListContainers")
    }

    async fn container_status(
        &self,
        _: Request<cri::ContainerStatusRequest>,
    ) -> Rpc<cri::ContainerStatusResponse> {
        unimplemented("ContainerStatus")
    }

    async fn update_container_resources(
        &self,
        _: Request<cri::UpdateContainerResourcesRequest>,
    ) -> Rpc<cri::UpdateContainerResourcesResponse> {
        unimplemented("UpdateContainerResources")
    }

    async fn reopen_container_log(
        &self,
        _: Request<cri::ReopenContainerLogRequest>,
    ) -> Rpc<cri::ReopenContainerLogResponse> {
        unimplemented("ReopenContainerLog")
    }

    async fn exec_sync(&self, _: Request<cri::ExecSyncRequest>) -> Rpc<cri::ExecSyncResponse> {
        unimplemented("ExecSync")
    }

    async fn exec(&self, _: Request<cri::ExecRequest>) -> Rpc<cri::ExecResponse> {
        unimplemented("Exec")
    }

    async fn attach(&self, _: Request<cri::AttachRequest>) -> Rpc<cri::AttachResponse> {
        unimplemented("Attach")
    }

    async fn port_forward(
        &self,
        _: Request<cri::PortForwardRequest>,
    ) -> Rpc<cri::PortForwardResponse> {
        unimplemented("PortForward")
    }

    async fn container_stats(
        &self,
        _: Request<cri::ContainerStatsRequest>,
    ) -> Rpc<cri::ContainerStatsResponse> {
        unimplemented("ContainerStats")
    }

    async fn list_container_stats(
        &self,
        _: Request<cri::ListContainerStatsRequest>,
    ) -> Rpc<cri::ListContainerStatsResponse> {
        unimplemented("ListContainerStats")
    }

    async fn pod_sandbox_stats(
        &self,
        _: Request<cri::PodSandboxStatsRequest>,
    ) -> Rpc<cri::PodSandboxStatsResponse> {
        unimplemented("PodSandboxStats")
    }

    async fn list_pod_sandbox_stats(
        &self,
        _: Request<cri::ListPodSandboxStatsRequest>,
    ) -> Rpc<cri::ListPodSandboxStatsResponse> {
        unimplemented("ListPodSandboxStats")
    }

    async fn update_runtime_config(
        &self,
        _: Request<cri::UpdateRuntimeConfigRequest>,
    ) -> Rpc<cri::UpdateRuntimeConfigResponse> {
        unimplemented("UpdateRuntimeConfig")
    }

    async fn checkpoint_container(
        &self,
        _: Request<cri::CheckpointContainerRequest>,
    ) -> Rpc<cri::CheckpointContainerResponse> {
        unimplemented("CheckpointContainer")
    }

    async fn list_metric_descriptors(
        &self,
        _: Request<cri::ListMetricDescriptorsRequest>,
    ) -> Rpc<cri::ListMetricDescriptorsResponse> {
        unimplemented("ListMetricDescriptors")
    }

    async fn list_pod_sandbox_metrics(
        &self,
        _: Request<cri::ListPodSandboxMetricsRequest>,
    ) -> Rpc<cri::ListPodSandboxMetricsResponse> {
        unimplemented("ListPodSandboxMetrics")
    }
}

impl Cri {
    fn status_response(&self, verbose: bool) -> cri::StatusResponse {
        let rt = &self.runtime;
        let runtime_ready = match std::fs::metadata(&rt.config.root) {
            Ok(m) if m.is_dir() => condition(RUNTIME_READY, true, "", ""),
            Ok(_) | Err(_) => condition(
                RUNTIME_READY,
                false,
                "RootDirMissing",
                &format!("crust's root dir {} is gone", rt.config.root.display()),
            ),
        };
        // Tell the truth: until CNI support lands no pod gets a network.
        let network_ready = condition(
            NETWORK_READY,
            false,
            "NetworkPluginNotReady",
            "crust does not run CNI plugins yet: pods would get only a loopback interface",
        );
        let mut info = std::collections::HashMap::new();
        if verbose {
            let config = serde_json::to_string(&rt.config)
                .unwrap_or_else(|e| serde_json::json!({ "error": e.to_string() }).to_string());
            info.insert("config".to_string(), config);
            info.insert(
                "cgroupDriver".to_string(),
                serde_json::to_string(&rt.cgroup_driver).unwrap_or_default(),
            );
        }
        // The default handler is reported under "" too, as kubelet looks
        // up pods without a RuntimeClass that way.
        let handler = |name: &str| cri::RuntimeHandler {
            name: name.to_string(),
            features: Some(cri::RuntimeHandlerFeatures {
                recursive_read_only_mounts: false,
                user_namespaces: false,
            }),
        };
        let mut runtime_handlers = vec![handler("")];
        runtime_handlers.extend(rt.config.runtime.handlers.keys().map(|n| handler(n)));
        cri::StatusResponse {
            status: Some(cri::RuntimeStatus {
                conditions: vec![runtime_ready, network_ready],
            }),
            info,
            runtime_handlers,
            features: Some(cri::RuntimeFeatures {
                supplemental_groups_policy: false,
            }),
        }
    }
}
