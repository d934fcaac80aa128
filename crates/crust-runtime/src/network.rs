//! Pod networking through CNI: ADD when a pod starts, DEL (retried, never
//! skipped) when it stops, the attachment kept on disk between the two so
//! DEL gets exactly what ADD got, even across crustd restarts.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use crust_cni::{Attachment, Cni, PodNetwork, PortMapping, Protocol};
use k8s_cri::v1 as cri;

use crate::RuntimeError;

/// The attachment file in a pod's state dir.
const ATTACHMENT_FILE: &str = "network.json";
/// Tries of a DEL within one Stop before the error goes to kubelet.
const DEL_TRIES: u32 = 3;

pub fn attachment_path(pod_dir: &Path) -> PathBuf {
    pod_dir.join(ATTACHMENT_FILE)
}

/// Attachments whose pod is gone but whose DEL failed wait here.
fn pending_dir(state: &Path) -> PathBuf {
    state.join("cni-pending")
}

fn protocol(p: i32) -> Protocol {
    match cri::Protocol::try_from(p) {
        Ok(cri::Protocol::Udp) => Protocol::Udp,
        Ok(cri::Protocol::Sctp) => Protocol::Sctp,
        _ => Protocol::Tcp,
    }
}

pub fn pod_network(id: &str, config: &cri::PodSandboxConfig, netns: &Path) -> PodNetwork {
    let meta = config.metadata.clone().unwrap_or_default();
    PodNetwork {
        pod_id: id.to_string(),
        pod_name: meta.name,
        pod_namespace: meta.namespace,
        pod_uid: meta.uid,
        netns: netns.to_path_buf(),
        port_mappings: config
            .port_mappings
            .iter()
            .map(|p| PortMapping {
                host_port: u16::try_from(p.host_port).unwrap_or(0),
                container_port: u16::try_from(p.container_port).unwrap_or(0),
                protocol: protocol(p.protocol),
                host_ip: p.host_ip.clone(),
            })
            .collect(),
        dns: config.dns_config.as_ref().map(|d| crust_cni::Dns {
            servers: d.servers.clone(),
            searches: d.searches.clone(),
            options: d.options.clone(),
        }),
        bandwidth: None,
    }
}

/// CNI ADD for a pod; the attachment is written to the pod dir before the
/// IPs are returned. A failed ADD leaves nothing (its own cleanup DEL ran;
/// if that failed too, the attachment is parked for a later DEL).
pub async fn add(
    cni: &Arc<Cni>,
    state: &Path,
    pod_dir: &Path,
    network: PodNetwork,
) -> Result<Attachment, RuntimeError> {
    let list = cni
        .load()
        .map_err(|e| RuntimeError::FailedPrecondition(format!("pod network is not ready: {e}")))?;
    let cni_task = cni.clone();
    // On its own task: a cancelled RunPodSandbox cannot cut it short.
    let result = tokio::spawn(async move { cni_task.add(&list, &network).await })
        .await
        .map_err(|e| RuntimeError::Internal(format!("CNI ADD task: {e}")))?;
    match result {
        Ok(attachment) => {
            write_attachment(&attachment_path(pod_dir), &attachment)?;
            Ok(attachment)
        }
        Err(e) => {
            if let Some(pending) = e.pending_attachment() {
                let dir = pending_dir(state);
                std::fs::create_dir_all(&dir)?;
                write_attachment(&dir.join(format!("{}.json", pending.pod.pod_id)), pending)?;
            }
            Err(RuntimeError::Internal(format!(
                "pod network setup failed: {e}"
            )))
        }
    }
}

fn write_attachment(path: &Path, attachment: &Attachment) -> Result<(), RuntimeError> {
    let json = serde_json::to_vec(attachment).map_err(|e| RuntimeError::Internal(e.to_string()))?;
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, json)?;
    std::fs::rename(&tmp, path)?;
    Ok(())
}

/// CNI DEL of the attachment stored at `path`, if any, retried a few times;
/// the file goes only once DEL succeeded, so a failure is retried by the
/// next Stop/Remove or at crustd start.
pub async fn del(cni: &Arc<Cni>, path: &Path) -> Result<(), RuntimeError> {
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e.into()),
    };
    let attachment: Attachment = serde_json::from_slice(&bytes).map_err(|e| {
        RuntimeError::Internal(format!("corrupt network record {}: {e}", path.display()))
    })?;
    let mut last = None;
    for attempt in 0..DEL_TRIES {
        let cni_task = cni.clone();
        let attachment = attachment.clone();
        let result = tokio::spawn(async move { cni_task.del(&attachment).await })
            .await
            .map_err(|e| RuntimeError::Internal(format!("CNI DEL task: {e}")))?;
        match result {
            Ok(()) => {
                std::fs::remove_file(path)?;
                return Ok(());
            }
            Err(e) => {
                tracing::warn!(path = %path.display(), attempt, error = %e, "CNI DEL failed");
                last = Some(e);
                tokio::time::sleep(Duration::from_millis(200 << attempt)).await;
            }
        }
    }
    Err(RuntimeError::Internal(format!(
        "pod network teardown failed (will be retried): {}",
        last.map(|e| e.to_string()).unwrap_or_default()
    )))
}

/// Retries the DELs parked by failed ADDs.
pub async fn retry_pending(cni: &Arc<Cni>, state: &Path) {
    let Ok(entries) = std::fs::read_dir(pending_dir(state)) else {
        return;
    };
    for entry in entries.flatten() {
        if let Err(e) = del(cni, &entry.path()).await {
            tracing::warn!(path = %entry.path().display(), error = %e, "parked CNI DEL still failing");
        }
    }
}

/// The IPs of an attachment, for PodSandboxStatus.
pub fn ips(attachment: &Attachment) -> Vec<String> {
    let mut out: Vec<String> = attachment.primary_ip().into_iter().collect();
    for ip in attachment.additional_ips() {
        if !out.contains(&ip) {
            out.push(ip);
        }
    }
    out
}
