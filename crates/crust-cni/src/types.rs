//! What the runtime hands in (the pod's network request) and gets back
//! (the attachment it stores with the sandbox).

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use crate::CniError;
use crate::result::{CniResult, IpConfig};

/// The interface name every pod gets.
pub const DEFAULT_IFNAME: &str = "eth0";

/// One pod's network request.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PodNetwork {
    /// The sandbox id: CNI_CONTAINERID and K8S_POD_INFRA_CONTAINER_ID.
    pub pod_id: String,
    pub pod_name: String,
    pub pod_namespace: String,
    pub pod_uid: String,
    /// The pinned network namespace (CNI_NETNS).
    pub netns: PathBuf,
    /// The pod's port mappings; those with `host_port` 0 are not passed
    /// to plugins (kubelet lists every container port).
    #[serde(default)]
    pub port_mappings: Vec<PortMapping>,
    #[serde(default)]
    pub dns: Option<Dns>,
    #[serde(default)]
    pub bandwidth: Option<Bandwidth>,
    /// The node's pod CIDRs (CRI UpdateRuntimeConfig), offered as the
    /// `ipRanges` capability: one range set per CIDR.
    #[serde(default)]
    pub ip_ranges: Vec<String>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    #[default]
    Tcp,
    Udp,
    Sctp,
}

impl Protocol {
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
            Protocol::Sctp => "sctp",
        }
    }
}

/// A CRI port mapping.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PortMapping {
    /// 0: no host port (the mapping is not passed to plugins).
    pub host_port: u16,
    pub container_port: u16,
    pub protocol: Protocol,
    /// Empty: every host address.
    #[serde(default)]
    pub host_ip: String,
}

/// The `dns` capability: the pod's DNS config.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Dns {
    pub servers: Vec<String>,
    pub searches: Vec<String>,
    pub options: Vec<String>,
}

/// The `bandwidth` capability: rates in bits per second, bursts in bits.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Bandwidth {
    pub ingress_rate: u64,
    pub ingress_burst: u64,
    pub egress_rate: u64,
    pub egress_burst: u64,
}

/// One plugin as it was invoked at ADD.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AttachedPlugin {
    /// The plugin `type` (binary name), looked up again in the bin dirs at DEL.
    pub plugin_type: String,
    /// The exact config JSON written to the plugin's stdin at ADD (with
    /// `name`, `cniVersion`, `runtimeConfig` and `prevResult` injected).
    pub config: String,
}

/// A pod's network attachment: everything DEL needs, independent of the
/// config dir (which may have changed since), plus the result for
/// PodSandboxStatus. Store it with the sandbox.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Attachment {
    pub network_name: String,
    pub cni_version: String,
    /// The config file the network came from (informational).
    #[serde(default)]
    pub source: PathBuf,
    pub ifname: String,
    #[serde(default)]
    pub disable_check: bool,
    /// The plugins that were ADDed (or tried, for a failed ADD), in order.
    pub plugins: Vec<AttachedPlugin>,
    /// The raw result JSON of each plugin that succeeded, in order; the
    /// last is the final result, passed as `prevResult` at DEL and CHECK.
    pub prev_results: Vec<String>,
    /// The final result, converted.
    #[serde(default)]
    pub result: CniResult,
    /// The pod's addresses: the final result's addresses on interfaces in
    /// the pod's netns (all of them when the plugins named no interface).
    #[serde(default)]
    pub ips: Vec<IpConfig>,
    pub pod: PodNetwork,
}

impl Attachment {
    fn addrs(&self) -> impl Iterator<Item = IpAddr> + '_ {
        self.ips.iter().filter_map(IpConfig::ip)
    }

    /// The first IPv4 address, without prefix ("10.88.0.2").
    pub fn ipv4(&self) -> Option<String> {
        self.addrs().find(IpAddr::is_ipv4).map(|a| a.to_string())
    }

    /// The first IPv6 address, without prefix.
    pub fn ipv6(&self) -> Option<String> {
        self.addrs().find(IpAddr::is_ipv6).map(|a| a.to_string())
    }

    /// PodSandboxStatus' `ip`: the first IPv4 address, else the first IPv6.
    pub fn primary_ip(&self) -> Option<String> {
        self.ipv4().or_else(|| self.ipv6())
    }

    /// PodSandboxStatus' `additional_ips`: every pod address but the primary.
    pub fn additional_ips(&self) -> Vec<String> {
        let primary = self.primary_ip();
        let mut seen = BTreeSet::new();
        self.addrs()
            .map(|a| a.to_string())
            .filter(|a| Some(a) != primary.as_ref() && seen.insert(a.clone()))
            .collect()
    }
}

/// CNI_ARGS for a pod, as kubelet's runtimes pass them.
pub fn cni_args(pod: &PodNetwork) -> Result<String, CniError> {
    let pairs = [
        ("K8S_POD_NAMESPACE", &pod.pod_namespace),
        ("K8S_POD_NAME", &pod.pod_name),
        ("K8S_POD_INFRA_CONTAINER_ID", &pod.pod_id),
        ("K8S_POD_UID", &pod.pod_uid),
    ];
    let mut out = String::from("IgnoreUnknown=1");
    for (k, v) in pairs {
        if v.contains([';', '=', '\0']) {
            return Err(CniError::InvalidArgument(format!(
                "{k} \"{v}\" contains ';', '=' or NUL, which CNI_ARGS cannot carry"
            )));
        }
        out.push(';');
        out.push_str(k);
        out.push('=');
        out.push_str(v);
    }
    Ok(out)
}

/// Every capability argument the pod has data for, keyed by capability
/// name (`portMappings`, `dns`, `bandwidth`, `ipRanges`).
pub fn capability_args(pod: &PodNetwork) -> Map<String, Value> {
    let mut caps = Map::new();
    let ports: Vec<Value> = pod
        .port_mappings
        .iter()
        .filter(|p| p.host_port != 0)
        .map(|p| {
            let mut m = json!({
                "hostPort": p.host_port,
                "containerPort": p.container_port,
                "protocol": p.protocol.as_str(),
            });
            if !p.host_ip.is_empty() {
                m["hostIP"] = Value::String(p.host_ip.clone());
            }
            m
        })
        .collect();
    if !ports.is_empty() {
        caps.insert("portMappings".into(), Value::Array(ports));
    }
    if let Some(dns) = &pod.dns {
        caps.insert(
            "dns".into(),
            json!({"servers": dns.servers, "searches": dns.searches, "options": dns.options}),
        );
    }
    if let Some(bw) = &pod.bandwidth {
        caps.insert(
            "bandwidth".into(),
            json!({
                "ingressRate": bw.ingress_rate,
                "ingressBurst": bw.ingress_burst,
                "egressRate": bw.egress_rate,
                "egressBurst": bw.egress_burst,
            }),
        );
    }
    if !pod.ip_ranges.is_empty() {
        let sets: Vec<Value> = pod
            .ip_ranges
            .iter()
            .map(|cidr| json!([{ "subnet": cidr }]))
            .collect();
        caps.insert("ipRanges".into(), Value::Array(sets));
    }
    caps
}

/// The `runtimeConfig` of one plugin: the capability args it declares.
pub fn runtime_config(
    declared: &BTreeSet<String>,
    available: &Map<String, Value>,
) -> Map<String, Value> {
    available
        .iter()
        .filter(|(k, _)| declared.contains(*k))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}
