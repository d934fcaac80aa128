//! `crustd wipe`: stop and remove every pod of the running crustd over its
//! CRI socket, as kubelet would one by one (containers stopped with their
//! grace period, networks torn down, mounts and cgroups gone). What the
//! node installer runs before it removes crust from a node, so that
//! nothing crust started outlives it; CRI-O's `crio wipe` is the model.

use std::path::Path;
use std::time::Duration;

use anyhow::Context;
use cri::runtime_service_client::RuntimeServiceClient;
use crust_cri_api::v1 as cri;

/// StopPodSandbox waits for each container's stop (SIGTERM, then SIGKILL
/// after its grace period): allow for a slow one.
const CALL_TIMEOUT: Duration = Duration::from_secs(120);

pub fn run(socket: &Path) -> anyhow::Result<()> {
    let removed = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?
        .block_on(wipe(socket))?;
    println!("removed {removed} pod(s)");
    Ok(())
}

async fn wipe(socket: &Path) -> anyhow::Result<usize> {
    let channel = crate::status::connect_with_timeout(socket, CALL_TIMEOUT).await?;
    let mut runtime = RuntimeServiceClient::new(channel);
    let pods = runtime
        .list_pod_sandbox(cri::ListPodSandboxRequest::default())
        .await
        .context("ListPodSandbox")?
        .into_inner()
        .items;
    for pod in &pods {
        let id = pod.id.clone();
        runtime
            .stop_pod_sandbox(cri::StopPodSandboxRequest {
                pod_sandbox_id: id.clone(),
            })
            .await
            .with_context(|| format!("StopPodSandbox {id}"))?;
        runtime
            .remove_pod_sandbox(cri::RemovePodSandboxRequest {
                pod_sandbox_id: id.clone(),
            })
            .await
            .with_context(|| format!("RemovePodSandbox {id}"))?;
    }
    Ok(pods.len())
}
