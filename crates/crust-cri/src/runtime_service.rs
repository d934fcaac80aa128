//! RuntimeService: every RPC of the vendored CRI v1 proto. Request shape
//! and limits are checked here, the work is done by `crust_runtime::Pods`,
//! and `runtime_status` maps its errors to gRPC codes once. The Stream*
//! lists reuse their unary List calls (`stream_lists`); the metrics RPCs
//! are shaped in `pod_metrics`. The checkpoint ones answer Unimplemented
//! naming CRIU (`no_criu`).

use std::pin::Pin;

use crust_cri_api::v1 as cri;
use crust_cri_api::v1::runtime_service_server::RuntimeService;
use tokio_stream::Stream;
use tonic::{Request, Response, Status};

use crust_runtime::{RuntimeError, cgroup, io_usage, psi_stats};

use crate::stream_lists::{ListStream, stream_of};
use crate::{
    Cri, KUBE_RUNTIME_API_VERSION, NETWORK_READY, RUNTIME_API_VERSION, RUNTIME_NAME, RUNTIME_READY,
    Rpc, condition,
};

pub(crate) type EventStream =
    Pin<Box<dyn Stream<Item = Result<cri::ContainerEventResponse, Status>> + Send>>;

#[tonic::async_trait]
impl RuntimeService for Cri {
    type GetContainerEventsStream = EventStream;
    type StreamPodSandboxesStream = ListStream<cri::StreamPodSandboxesResponse>;
    type StreamContainersStream = ListStream<cri::StreamContainersResponse>;
    type StreamContainerStatsStream = ListStream<cri::StreamContainerStatsResponse>;
    type StreamPodSandboxStatsStream = ListStream<cri::StreamPodSandboxStatsResponse>;
    type StreamPodSandboxMetricsStream = ListStream<cri::StreamPodSandboxMetricsResponse>;

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

    async fn run_pod_sandbox(
        &self,
        request: Request<cri::RunPodSandboxRequest>,
    ) -> Rpc<cri::RunPodSandboxResponse> {
        let request = request.into_inner();
        let config = request
            .config
            .ok_or_else(|| Status::invalid_argument("config is required"))?;
        crust_spec::limits::check_pod_config(&config).map_err(spec_status)?;
        let id = self
            .runtime
            .pods
            .run_pod_sandbox(config, &request.runtime_handler)
            .await
            .map_err(runtime_status)?;
        tracing::Span::current().record("pod_id", id.as_str());
        Ok(Response::new(cri::RunPodSandboxResponse {
            pod_sandbox_id: id,
        }))
    }

    async fn stop_pod_sandbox(
        &self,
        request: Request<cri::StopPodSandboxRequest>,
    ) -> Rpc<cri::StopPodSandboxResponse> {
        let id = pod_id(&request.get_ref().pod_sandbox_id)?;
        self.runtime
            .pods
            .stop_pod_sandbox(id)
            .await
            .map_err(runtime_status)?;
        Ok(Response::new(cri::StopPodSandboxResponse {}))
    }

    async fn remove_pod_sandbox(
        &self,
        request: Request<cri::RemovePodSandboxRequest>,
    ) -> Rpc<cri::RemovePodSandboxResponse> {
        let id = pod_id(&request.get_ref().pod_sandbox_id)?;
        self.runtime
            .pods
            .remove_pod_sandbox(id)
            .await
            .map_err(runtime_status)?;
        Ok(Response::new(cri::RemovePodSandboxResponse {}))
    }

    async fn pod_sandbox_status(
        &self,
        request: Request<cri::PodSandboxStatusRequest>,
    ) -> Rpc<cri::PodSandboxStatusResponse> {
        let request = request.get_ref();
        let id = pod_id(&request.pod_sandbox_id)?;
        let response = self
            .runtime
            .pods
            .pod_sandbox_status(id, request.verbose)
            .map_err(runtime_status)?;
        Ok(Response::new(response))
    }

    async fn list_pod_sandbox(
        &self,
        request: Request<cri::ListPodSandboxRequest>,
    ) -> Rpc<cri::ListPodSandboxResponse> {
        let items = self
            .runtime
            .pods
            .list_pod_sandbox(request.get_ref().filter.as_ref())
            .map_err(runtime_status)?;
        Ok(Response::new(cri::ListPodSandboxResponse { items }))
    }

    async fn create_container(
        &self,
        request: Request<cri::CreateContainerRequest>,
    ) -> Rpc<cri::CreateContainerResponse> {
        let request = request.into_inner();
        let pod = pod_id(&request.pod_sandbox_id)?;
        let config = request
            .config
            .ok_or_else(|| Status::invalid_argument("config is required"))?;
        // The request's own lists; the image's are checked once it is found.
        crust_spec::limits::check_container_config(&config).map_err(spec_status)?;
        if let Some(sandbox) = &request.sandbox_config {
            crust_spec::limits::check_pod_config(sandbox).map_err(spec_status)?;
        }
        let id = self
            .runtime
            .pods
            .create_container(pod, config, request.sandbox_config)
            .await
            .map_err(runtime_status)?;
        tracing::Span::current().record("container_id", id.as_str());
        Ok(Response::new(cri::CreateContainerResponse {
            container_id: id,
        }))
    }

    async fn start_container(
        &self,
        request: Request<cri::StartContainerRequest>,
    ) -> Rpc<cri::StartContainerResponse> {
        let id = container_id(&request.get_ref().container_id)?;
        self.runtime
            .pods
            .start_container(id)
            .await
            .map_err(runtime_status)?;
        Ok(Response::new(cri::StartContainerResponse {}))
    }

    async fn stop_container(
        &self,
        request: Request<cri::StopContainerRequest>,
    ) -> Rpc<cri::StopContainerResponse> {
        let request = request.get_ref();
        let id = container_id(&request.container_id)?;
        self.runtime
            .pods
            .stop_container(id, request.timeout)
            .await
            .map_err(runtime_status)?;
        Ok(Response::new(cri::StopContainerResponse {}))
    }

    async fn remove_container(
        &self,
        request: Request<cri::RemoveContainerRequest>,
    ) -> Rpc<cri::RemoveContainerResponse> {
        let id = container_id(&request.get_ref().container_id)?;
        self.runtime
            .pods
            .remove_container(id)
            .await
            .map_err(runtime_status)?;
        Ok(Response::new(cri::RemoveContainerResponse {}))
    }

    async fn list_containers(
        &self,
        request: Request<cri::ListContainersRequest>,
    ) -> Rpc<cri::ListContainersResponse> {
        let containers = self
            .runtime
            .pods
            .list_containers(request.get_ref().filter.as_ref())
            .map_err(runtime_status)?;
        Ok(Response::new(cri::ListContainersResponse { containers }))
    }

    async fn container_status(
        &self,
        request: Request<cri::ContainerStatusRequest>,
    ) -> Rpc<cri::ContainerStatusResponse> {
        let request = request.get_ref();
        let id = container_id(&request.container_id)?;
        let response = self
            .runtime
            .pods
            .container_status(id, request.verbose)
            .map_err(runtime_status)?;
        Ok(Response::new(response))
    }

    async fn update_container_resources(
        &self,
        request: Request<cri::UpdateContainerResourcesRequest>,
    ) -> Rpc<cri::UpdateContainerResourcesResponse> {
        let request = request.get_ref();
        let id = container_id(&request.container_id)?;
        let resources = request
            .linux
            .as_ref()
            .ok_or_else(|| Status::invalid_argument("linux resources are required"))?;
        // CreateContainer's checks (crust-runtime repeats them).
        crust_spec::check_container_resources(resources).map_err(spec_status)?;
        self.runtime
            .pods
            .update_container_resources(id, resources)
            .await
            .map_err(runtime_status)?;
        Ok(Response::new(cri::UpdateContainerResourcesResponse {}))
    }

    async fn reopen_container_log(
        &self,
        request: Request<cri::ReopenContainerLogRequest>,
    ) -> Rpc<cri::ReopenContainerLogResponse> {
        let id = container_id(&request.get_ref().container_id)?;
        self.runtime
            .pods
            .reopen_container_log(id)
            .await
            .map_err(runtime_status)?;
        Ok(Response::new(cri::ReopenContainerLogResponse {}))
    }

    async fn exec_sync(
        &self,
        request: Request<cri::ExecSyncRequest>,
    ) -> Rpc<cri::ExecSyncResponse> {
        let request = request.into_inner();
        let id = container_id(&request.container_id)?;
        let output = self
            .runtime
            .pods
            .exec_sync(id, request.cmd, request.timeout)
            .await
            .map_err(runtime_status)?;
        Ok(Response::new(cri::ExecSyncResponse {
            stdout: output.stdout,
            stderr: output.stderr,
            exit_code: output.exit_code,
        }))
    }

    async fn container_stats(
        &self,
        request: Request<cri::ContainerStatsRequest>,
    ) -> Rpc<cri::ContainerStatsResponse> {
        let id = container_id(&request.get_ref().container_id)?;
        let stats = self.stats_of(id).await?;
        Ok(Response::new(cri::ContainerStatsResponse {
            stats: Some(stats),
        }))
    }

    async fn list_container_stats(
        &self,
        request: Request<cri::ListContainerStatsRequest>,
    ) -> Rpc<cri::ListContainerStatsResponse> {
        let ids = self
            .runtime
            .pods
            .container_ids(request.get_ref().filter.as_ref())
            .map_err(runtime_status)?;
        let mut stats = Vec::with_capacity(ids.len());
        for id in ids {
            stats.push(self.stats_of(&id).await?);
        }
        Ok(Response::new(cri::ListContainerStatsResponse { stats }))
    }

    async fn pod_sandbox_stats(
        &self,
        request: Request<cri::PodSandboxStatsRequest>,
    ) -> Rpc<cri::PodSandboxStatsResponse> {
        let id = pod_id(&request.get_ref().pod_sandbox_id)?;
        let stats = self.pod_stats_of(id).await?;
        Ok(Response::new(cri::PodSandboxStatsResponse {
            stats: Some(stats),
        }))
    }

    async fn list_pod_sandbox_stats(
        &self,
        request: Request<cri::ListPodSandboxStatsRequest>,
    ) -> Rpc<cri::ListPodSandboxStatsResponse> {
        let filter = request.get_ref().filter.as_ref();
        let pods = self
            .runtime
            .pods
            .list_pod_sandbox(None)
            .map_err(runtime_status)?;
        let mut stats = Vec::new();
        for pod in pods {
            let matches = filter.is_none_or(|f| {
                crust_runtime::filter::id_matches(&f.id, &pod.id)
                    && crust_runtime::filter::labels_match(&f.label_selector, &pod.labels)
            });
            if matches {
                stats.push(self.pod_stats_of(&pod.id).await?);
            }
        }
        Ok(Response::new(cri::ListPodSandboxStatsResponse { stats }))
    }

    async fn get_container_events(&self, _: Request<cri::GetEventsRequest>) -> Rpc<EventStream> {
        Ok(Response::new(crate::events::container_events(
            self.runtime.pods.clone(),
        )))
    }

    async fn exec(&self, request: Request<cri::ExecRequest>) -> Rpc<cri::ExecResponse> {
        let mut request = request.into_inner();
        let r = &request;
        request.container_id =
            self.streamed_container(&r.container_id, r.stdin, r.stdout, r.stderr, r.tty)?;
        if request.cmd.is_empty() {
            return Err(Status::invalid_argument("cmd is required"));
        }
        let url = self
            .runtime
            .streaming
            .exec_url(request)
            .map_err(token_status)?;
        Ok(Response::new(cri::ExecResponse { url }))
    }

    async fn attach(&self, request: Request<cri::AttachRequest>) -> Rpc<cri::AttachResponse> {
        let mut request = request.into_inner();
        let r = &request;
        request.container_id =
            self.streamed_container(&r.container_id, r.stdin, r.stdout, r.stderr, r.tty)?;
        let url = self
            .runtime
            .streaming
            .attach_url(request)
            .map_err(token_status)?;
        Ok(Response::new(cri::AttachResponse { url }))
    }

    async fn port_forward(
        &self,
        request: Request<cri::PortForwardRequest>,
    ) -> Rpc<cri::PortForwardResponse> {
        let mut request = request.into_inner();
        pod_id(&request.pod_sandbox_id)?;
        if let Some(bad) = request.port.iter().find(|p| !(1..=65535).contains(*p)) {
            return Err(Status::invalid_argument(format!(
                "port {bad} is not a TCP port (1-65535)"
            )));
        }
        request.pod_sandbox_id = self
            .runtime
            .pods
            .ready_pod(&request.pod_sandbox_id)
            .map_err(runtime_status)?;
        let url = self
            .runtime
            .streaming
            .port_forward_url(request)
            .map_err(token_status)?;
        Ok(Response::new(cri::PortForwardResponse { url }))
    }

    async fn update_runtime_config(
        &self,
        request: Request<cri::UpdateRuntimeConfigRequest>,
    ) -> Rpc<cri::UpdateRuntimeConfigResponse> {
        // Only the network config is defined; an empty request changes
        // nothing (kubelet sends the pod CIDR once it knows it).
        let Some(network) = request
            .into_inner()
            .runtime_config
            .and_then(|c| c.network_config)
        else {
            return Ok(Response::new(cri::UpdateRuntimeConfigResponse {}));
        };
        self.runtime
            .pods
            .update_pod_cidrs(&network.pod_cidr)
            .map_err(runtime_status)?;
        Ok(Response::new(cri::UpdateRuntimeConfigResponse {}))
    }

    async fn checkpoint_container(
        &self,
        _: Request<cri::CheckpointContainerRequest>,
    ) -> Rpc<cri::CheckpointContainerResponse> {
        Err(no_criu("CheckpointContainer"))
    }

    async fn checkpoint_pod(
        &self,
        _: Request<cri::CheckpointPodRequest>,
    ) -> Rpc<cri::CheckpointPodResponse> {
        Err(no_criu("CheckpointPod"))
    }

    async fn restore_pod(
        &self,
        _: Request<cri::RestorePodRequest>,
    ) -> Rpc<cri::RestorePodResponse> {
        Err(no_criu("RestorePod"))
    }

    async fn stream_pod_sandboxes(
        &self,
        request: Request<cri::StreamPodSandboxesRequest>,
    ) -> Rpc<Self::StreamPodSandboxesStream> {
        let filter = request.into_inner().filter;
        let list = self
            .list_pod_sandbox(Request::new(cri::ListPodSandboxRequest { filter }))
            .await?;
        Ok(Response::new(stream_of(
            list.into_inner().items,
            |pod_sandboxes| cri::StreamPodSandboxesResponse { pod_sandboxes },
        )))
    }

    async fn stream_containers(
        &self,
        request: Request<cri::StreamContainersRequest>,
    ) -> Rpc<Self::StreamContainersStream> {
        let filter = request.into_inner().filter;
        let list = self
            .list_containers(Request::new(cri::ListContainersRequest { filter }))
            .await?;
        Ok(Response::new(stream_of(
            list.into_inner().containers,
            |containers| cri::StreamContainersResponse { containers },
        )))
    }

    async fn stream_container_stats(
        &self,
        request: Request<cri::StreamContainerStatsRequest>,
    ) -> Rpc<Self::StreamContainerStatsStream> {
        let filter = request.into_inner().filter;
        let list = self
            .list_container_stats(Request::new(cri::ListContainerStatsRequest { filter }))
            .await?;
        Ok(Response::new(stream_of(
            list.into_inner().stats,
            |container_stats| cri::StreamContainerStatsResponse { container_stats },
        )))
    }

    async fn stream_pod_sandbox_stats(
        &self,
        request: Request<cri::StreamPodSandboxStatsRequest>,
    ) -> Rpc<Self::StreamPodSandboxStatsStream> {
        let filter = request.into_inner().filter;
        let list = self
            .list_pod_sandbox_stats(Request::new(cri::ListPodSandboxStatsRequest { filter }))
            .await?;
        Ok(Response::new(stream_of(
            list.into_inner().stats,
            |pod_sandbox_stats| cri::StreamPodSandboxStatsResponse { pod_sandbox_stats },
        )))
    }

    async fn stream_pod_sandbox_metrics(
        &self,
        _: Request<cri::StreamPodSandboxMetricsRequest>,
    ) -> Rpc<Self::StreamPodSandboxMetricsStream> {
        let list = self
            .list_pod_sandbox_metrics(Request::new(cri::ListPodSandboxMetricsRequest {}))
            .await?;
        Ok(Response::new(stream_of(
            list.into_inner().pod_metrics,
            |pod_sandbox_metrics| cri::StreamPodSandboxMetricsResponse {
                pod_sandbox_metrics,
            },
        )))
    }

    async fn update_pod_sandbox_resources(
        &self,
        request: Request<cri::UpdatePodSandboxResourcesRequest>,
    ) -> Rpc<cri::UpdatePodSandboxResourcesResponse> {
        let request = request.get_ref();
        let id = pod_id(&request.pod_sandbox_id)?;
        self.runtime
            .pods
            .update_pod_sandbox_resources(id, request.resources.as_ref(), request.overhead.as_ref())
            .await
            .map_err(runtime_status)?;
        Ok(Response::new(cri::UpdatePodSandboxResourcesResponse {}))
    }

    async fn list_metric_descriptors(
        &self,
        _: Request<cri::ListMetricDescriptorsRequest>,
    ) -> Rpc<cri::ListMetricDescriptorsResponse> {
        Ok(Response::new(cri::ListMetricDescriptorsResponse {
            descriptors: crate::pod_metrics::descriptors(),
        }))
    }

    async fn list_pod_sandbox_metrics(
        &self,
        _: Request<cri::ListPodSandboxMetricsRequest>,
    ) -> Rpc<cri::ListPodSandboxMetricsResponse> {
        let pods = self.runtime.pods.clone();
        // cgroupfs and procfs reads: off the async workers.
        let samples = tokio::task::spawn_blocking(move || pods.pod_samples())
            .await
            .map_err(|e| Status::internal(format!("pod metrics: {e}")))?
            .map_err(runtime_status)?;
        Ok(Response::new(cri::ListPodSandboxMetricsResponse {
            pod_metrics: samples
                .iter()
                .map(crate::pod_metrics::pod_sandbox_metrics)
                .collect(),
        }))
    }
}

/// Checkpoint and restore need CRIU, and Debian 12's criu 3.17.1 fails
/// `criu check` on the kernels crust is tested on (vdso symtable).
fn no_criu(rpc: &str) -> Status {
    Status::unimplemented(format!(
        "{rpc} needs CRIU, which crust does not drive: checkpoint/restore is not supported"
    ))
}

pub(crate) fn runtime_status(e: RuntimeError) -> Status {
    let message = e.to_string();
    match e {
        RuntimeError::Image(e) => crate::image_service::image_status(e),
        RuntimeError::Spec(e) if e.is_request_error() => Status::invalid_argument(message),
        RuntimeError::InvalidArgument(_) => Status::invalid_argument(message),
        RuntimeError::NotFound(_) => Status::not_found(message),
        RuntimeError::AlreadyExists(_) => Status::already_exists(message),
        RuntimeError::FailedPrecondition(_) => Status::failed_precondition(message),
        RuntimeError::DeadlineExceeded(_) => Status::deadline_exceeded(message),
        _ => Status::internal(message),
    }
}

/// A refused spec input (a list over its limit, a bad value).
fn spec_status(e: crust_spec::SpecError) -> Status {
    Status::invalid_argument(e.to_string())
}

fn token_status(e: crust_stream::TokenError) -> Status {
    match e {
        crust_stream::TokenError::Full(_) => Status::resource_exhausted(e.to_string()),
        crust_stream::TokenError::Random(_) => Status::internal(e.to_string()),
    }
}

fn pod_id(id: &str) -> Result<&str, Status> {
    if id.is_empty() {
        return Err(Status::invalid_argument("pod_sandbox_id is required"));
    }
    tracing::Span::current().record("pod_id", id);
    Ok(id)
}

fn container_id(id: &str) -> Result<&str, Status> {
    if id.is_empty() {
        return Err(Status::invalid_argument("container_id is required"));
    }
    tracing::Span::current().record("container_id", id);
    Ok(id)
}

impl Cri {
    /// The full id of the running container an exec or attach is for,
    /// after kubelet's rules for the streams it asks.
    fn streamed_container(
        &self,
        id: &str,
        stdin: bool,
        stdout: bool,
        stderr: bool,
        tty: bool,
    ) -> Result<String, Status> {
        container_id(id)?;
        if !stdin && !stdout && !stderr {
            return Err(Status::invalid_argument(
                "one of stdin, stdout or stderr must be set",
            ));
        }
        if tty && stderr {
            return Err(Status::invalid_argument(
                "tty and stderr cannot both be set: a terminal has one output stream",
            ));
        }
        self.runtime
            .pods
            .running_container(id)
            .map_err(runtime_status)
    }

    /// Container stats walk the writable layer (a disk walk of unbounded
    /// size): on the blocking pool, never on an async worker.
    async fn stats_of(&self, id: &str) -> Result<cri::ContainerStats, Status> {
        let pods = self.runtime.pods.clone();
        let id = id.to_string();
        tokio::task::spawn_blocking(move || pods.container_stats(&id))
            .await
            .map_err(|e| Status::internal(format!("container stats: {e}")))?
            .map_err(runtime_status)
    }

    async fn pod_stats_of(&self, id: &str) -> Result<cri::PodSandboxStats, Status> {
        let pods = &self.runtime.pods;
        let (sandbox, usage) = pods.pod_usage(id).map_err(runtime_status)?;
        let filter = cri::ContainerStatsFilter {
            pod_sandbox_id: sandbox.id.clone(),
            ..Default::default()
        };
        let mut containers = Vec::new();
        for cid in pods.container_ids(Some(&filter)).map_err(runtime_status)? {
            containers.push(self.stats_of(&cid).await?);
        }
        let status = pods
            .pod_sandbox_status(&sandbox.id, false)
            .map_err(runtime_status)?;
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as i64);
        let value = |v: u64| Some(cri::UInt64Value { value: v });
        // A pod without a cgroup parent has no cgroup of its own to read.
        let psi = if sandbox.cgroup_parent.is_empty() {
            cgroup::Pressures::default()
        } else {
            cgroup::pressures(&sandbox.cgroup_parent)
        };
        let nano_cores: u64 = containers
            .iter()
            .filter_map(|c| c.cpu.as_ref()?.usage_nano_cores.map(|v| v.value))
            .sum();
        Ok(cri::PodSandboxStats {
            attributes: Some(cri::PodSandboxAttributes {
                id: sandbox.id.clone(),
                metadata: status.status.and_then(|s| s.metadata),
                labels: sandbox.labels.clone().into_iter().collect(),
                annotations: sandbox.annotations.clone().into_iter().collect(),
            }),
            linux: Some(cri::LinuxPodSandboxStats {
                cpu: Some(cri::CpuUsage {
                    timestamp: now,
                    usage_core_nano_seconds: value(usage.cpu_usage_nanos),
                    usage_nano_cores: value(nano_cores),
                    psi: psi.cpu.map(psi_stats),
                }),
                memory: Some(cri::MemoryUsage {
                    timestamp: now,
                    working_set_bytes: value(usage.memory_working_set),
                    usage_bytes: value(usage.memory_usage),
                    rss_bytes: value(usage.memory_rss),
                    page_faults: value(usage.page_faults),
                    major_page_faults: value(usage.major_page_faults),
                    psi: psi.memory.map(psi_stats),
                    ..Default::default()
                }),
                containers,
                io: io_usage(now, &psi),
                ..Default::default()
            }),
            windows: None,
        })
    }

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
        // Tell the truth: pods get a network only with a valid CNI config.
        let network_ready = match rt.pods.network_status() {
            Ok(()) => condition(NETWORK_READY, true, "", ""),
            Err(reason) => condition(NETWORK_READY, false, "NetworkPluginNotReady", &reason),
        };
        let mut info = std::collections::HashMap::new();
        if verbose {
            let config = serde_json::to_string(&rt.config)
                .unwrap_or_else(|e| serde_json::json!({ "error": e.to_string() }).to_string());
            info.insert("config".to_string(), config);
            info.insert(
                "cgroupDriver".to_string(),
                serde_json::to_string(&rt.cgroup_driver).unwrap_or_default(),
            );
            // Records found undecodable at start: an operator must see them
            // (they were moved aside, bytes intact, in the store's
            // quarantine table).
            let quarantined: Vec<_> = rt
                .store
                .quarantined()
                .iter()
                .map(|q| serde_json::json!({ "kind": q.table, "id": q.key, "error": q.error }))
                .collect();
            // As UpdateRuntimeConfig last set them (JSON list).
            info.insert(
                "podCIDRs".to_string(),
                serde_json::Value::from(rt.pods.pod_cidrs()).to_string(),
            );
            info.insert(
                "quarantinedRecords".to_string(),
                serde_json::Value::from(quarantined).to_string(),
            );
            // What a streaming pull progress (KEP-5334) would send.
            info.insert(
                "pullsInFlight".to_string(),
                serde_json::to_string(&rt.images.pulls_in_flight()).unwrap_or_default(),
            );
        }
        // The default handler is reported under "" too, as kubelet looks
        // up pods without a RuntimeClass that way. Recursive read-only
        // mounts: crust writes the OCI "rro" option, which crust-shim
        // (youki) applies with mount_setattr; other shims' runtimes are
        // not known to, so only handlers running crust-shim claim it, and
        // only on a kernel that has mount_setattr. User namespaces
        // (hostUsers: false): crust makes the pod's user namespace and
        // idmaps the rootfs itself and the spec joins the namespace by
        // path; claimed for crust-shim handlers, where that is tested, and
        // only where the kernel passes crust's probe (user namespaces on,
        // overlayfs over idmapped layers).
        let rro = crust_spec::recursive_read_only_supported();
        let userns = rt.pods.user_namespaces().is_ok();
        let handler = |name: &str| {
            let crust_shim = rt
                .config
                .handler(name)
                .is_some_and(|(_, h)| h.kind() == crust_config::ShimKind::Crust);
            cri::RuntimeHandler {
                name: name.to_string(),
                features: Some(cri::RuntimeHandlerFeatures {
                    recursive_read_only_mounts: rro && crust_shim,
                    user_namespaces: userns && crust_shim,
                }),
            }
        };
        let mut runtime_handlers = vec![handler("")];
        runtime_handlers.extend(rt.config.runtime.handlers.keys().map(|n| handler(n)));
        cri::StatusResponse {
            status: Some(cri::RuntimeStatus {
                conditions: vec![runtime_ready, network_ready],
            }),
            info,
            runtime_handlers,
            // Merge and Strict are both applied when the spec is built.
            features: Some(cri::RuntimeFeatures {
                supplemental_groups_policy: true,
                // Mount.mount_options: the allow-list in crust-spec's mounts.
                mount_options: true,
                user_namespaces_host_network: false,
            }),
        }
    }
}
