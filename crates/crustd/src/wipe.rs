//! `crustd wipe`: stop and remove every pod of the running crustd over its
//! CRI socket (containers killed, networks torn down, mounts and cgroups
//! gone). What the node installer runs before it removes crust from a
//! node, so that nothing crust started outlives it; CRI-O's `crio wipe` is
//! the model. A pod that fails does not stop the others: every pod is
//! tried, the failures are reported together and make the exit status 1.

use std::path::Path;
use std::time::Duration;

use anyhow::Context;
use cri::runtime_service_client::RuntimeServiceClient;
use crust_cri_api::v1 as cri;

/// StopPodSandbox kills each container and waits for it, then tears the
/// network down: allow for a slow CNI plugin.
const CALL_TIMEOUT: Duration = Duration::from_secs(120);

pub fn run(socket: &Path) -> anyhow::Result<()> {
    let (removed, failed) = crate::status::block_on(wipe(socket))??;
    println!("removed {removed} pod(s)");
    if !failed.is_empty() {
        anyhow::bail!(
            "{} pod(s) not removed:\n{}",
            failed.len(),
            failed.join("\n")
        );
    }
    Ok(())
}

async fn wipe(socket: &Path) -> anyhow::Result<(usize, Vec<String>)> {
    let channel = crate::status::connect_with_timeout(socket, CALL_TIMEOUT).await?;
    let mut runtime = RuntimeServiceClient::new(channel);
    let pods = runtime
        .list_pod_sandbox(cri::ListPodSandboxRequest::default())
        .await
        .context("ListPodSandbox")?
        .into_inner()
        .items;
    let (mut removed, mut failed) = (0, Vec::new());
    for pod in &pods {
        let id = pod.id.clone();
        let stopped = runtime
            .stop_pod_sandbox(cri::StopPodSandboxRequest {
                pod_sandbox_id: id.clone(),
            })
            .await;
        let result = match stopped {
            Ok(_) => runtime
                .remove_pod_sandbox(cri::RemovePodSandboxRequest {
                    pod_sandbox_id: id.clone(),
                })
                .await
                .map(|_| ())
                .map_err(|e| format!("RemovePodSandbox {id}: {}", e.message())),
            Err(e) => Err(format!("StopPodSandbox {id}: {}", e.message())),
        };
        match result {
            Ok(()) => removed += 1,
            Err(e) => failed.push(e),
        }
    }
    Ok((removed, failed))
}
