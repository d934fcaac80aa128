//! Pod networking through CNI: ADD when a pod starts, DEL (retried, never
//! skipped) when it stops, the attachment kept on disk between the two so
//! DEL gets exactly what ADD got, even across crustd restarts.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use crust_cni::{Attachment, Cni, PodNetwork, PortMapping, Protocol};
use crust_cri_api::v1 as cri;

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
        bandwidth: bandwidth(&config.annotations),
        ip_ranges: Vec::new(),
    }
}

/// kubelet's bandwidth annotations (as containerd and CRI-O read them),
/// for plugins that declare the `bandwidth` capability. Rates are bits per
/// second; the burst is left to the plugin's default by using the rate.
fn bandwidth(
    annotations: &std::collections::HashMap<String, String>,
) -> Option<crust_cni::Bandwidth> {
    let rate = |key: &str| annotations.get(key).and_then(|v| parse_quantity(v));
    let ingress = rate("kubernetes.io/ingress-bandwidth");
    let egress = rate("kubernetes.io/egress-bandwidth");
    if ingress.is_none() && egress.is_none() {
        return None;
    }
    // The bandwidth plugin wants a burst with every rate; Kubernetes sets
    // none, so use the largest the plugin accepts, as containerd does.
    const BURST: u64 = (i32::MAX as u64) / 8;
    Some(crust_cni::Bandwidth {
        ingress_rate: ingress.unwrap_or(0),
        ingress_burst: if ingress.is_some() { BURST } else { 0 },
        egress_rate: egress.unwrap_or(0),
        egress_burst: if egress.is_some() { BURST } else { 0 },
    })
}

/// A Kubernetes quantity such as "10M", "1Gi" or "500k" as a number.
fn parse_quantity(value: &str) -> Option<u64> {
    let value = value.trim();
    let split = value
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(value.len());
    let (number, suffix) = value.split_at(split);
    let number: f64 = number.parse().ok()?;
    let factor: f64 = match suffix {
        "" => 1.0,
        "k" => 1e3,
        "M" => 1e6,
        "G" => 1e9,
        "T" => 1e12,
        "Ki" => 1024.0,
        "Mi" => 1024.0 * 1024.0,
        "Gi" => 1024.0 * 1024.0 * 1024.0,
        "Ti" => 1024.0_f64.powi(4),
        _ => return None,
    };
    let v = number * factor;
    (v.is_finite() && v >= 1.0 && v < u64::MAX as f64).then_some(v as u64)
}

/// CNI ADD for a pod; the attachment is written to the pod dir, planned
/// before ADD runs and complete before the IPs are returned. A failed ADD
/// leaves nothing (its own cleanup DEL ran; if that failed too, the
/// attachment is parked for a later DEL).
pub async fn add(
    cni: &Arc<Cni>,
    state: &Path,
    pod_dir: &Path,
    network: PodNetwork,
) -> Result<Attachment, RuntimeError> {
    let list = cni
        .load()
        .map_err(|e| RuntimeError::FailedPrecondition(format!("pod network is not ready: {e}")))?;
    // Written first: if crustd dies during ADD, the start-up sweep (or a
    // Stop) DELs what ADD may have made, instead of leaking an address.
    let path = attachment_path(pod_dir);
    write_attachment(&path, &cni.planned_attachment(&list, &network))?;
    let cni_task = cni.clone();
    // On its own task: a cancelled RunPodSandbox cannot cut it short.
    let result = tokio::spawn(async move { cni_task.add(&list, &network).await })
        .await
        .map_err(|e| RuntimeError::Internal(format!("CNI ADD task: {e}")))?;
    match result {
        Ok(attachment) => {
            write_attachment(&path, &attachment)?;
            Ok(attachment)
        }
        Err(e) => {
            // ADD undid itself, or its attachment is parked below.
            let _ = std::fs::remove_file(&path);
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantities_and_bandwidth_annotations() {
        assert_eq!(parse_quantity("10M"), Some(10_000_000));
        assert_eq!(parse_quantity("1Gi"), Some(1 << 30));
        assert_eq!(parse_quantity("500k"), Some(500_000));
        assert_eq!(parse_quantity("1.5M"), Some(1_500_000));
        assert_eq!(parse_quantity("ten"), None);
        assert_eq!(parse_quantity("10X"), None);
        let mut a = std::collections::HashMap::new();
        assert_eq!(bandwidth(&a), None);
        a.insert(
            "kubernetes.io/ingress-bandwidth".to_string(),
            "10M".to_string(),
        );
        let b = bandwidth(&a).unwrap();
        assert_eq!((b.ingress_rate, b.egress_rate), (10_000_000, 0));
        assert!(b.ingress_burst > 0);
    }

    #[test]
    fn port_mappings_are_converted() {
        let config = cri::PodSandboxConfig {
            port_mappings: vec![cri::PortMapping {
                protocol: cri::Protocol::Udp as i32,
                container_port: 53,
                host_port: 5353,
                host_ip: "127.0.0.1".into(),
            }],
            ..Default::default()
        };
        let n = pod_network("p", &config, Path::new("/x"));
        assert_eq!(n.port_mappings[0].host_port, 5353);
        assert_eq!(n.port_mappings[0].protocol, Protocol::Udp);
    }
}
