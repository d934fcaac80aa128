//! Raw samples for the CRI metrics RPCs (ListPodSandboxMetrics, KEP-2371):
//! per container its cgroup's usage, page cache, OOM kills and process
//! count; per pod the counters of each interface in its network namespace.
//! crust-cri names them as cAdvisor does.

use std::path::Path;

use crust_store::{ContainerRecord, ContainerState, SandboxRecord, SandboxState};

use crate::{Pods, RuntimeError, cgroup};

/// At most this many interfaces are reported per pod (a pod's netns is its
/// own to fill with links; kubelet needs a handful).
const MAX_INTERFACES: usize = 64;

#[derive(Debug, Clone)]
pub struct ContainerSample {
    /// The name in the container's CRI metadata ("app"), not the record's
    /// unique name.
    pub name: String,
    pub record: ContainerRecord,
    pub usage: cgroup::Usage,
    pub extra: cgroup::Extra,
}

/// One interface's counters from /proc/<pid>/net/dev.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct InterfaceCounters {
    pub name: String,
    pub rx_bytes: u64,
    pub rx_packets: u64,
    pub rx_errors: u64,
    pub rx_dropped: u64,
    pub tx_bytes: u64,
    pub tx_packets: u64,
    pub tx_errors: u64,
    pub tx_dropped: u64,
}

#[derive(Debug, Clone)]
pub struct PodSample {
    /// The name in the pod's CRI metadata.
    pub name: String,
    pub record: SandboxRecord,
    pub containers: Vec<ContainerSample>,
    pub interfaces: Vec<InterfaceCounters>,
}

impl Pods {
    /// Samples every ready pod. Reads cgroupfs and procfs: call it from a
    /// blocking thread.
    pub fn pod_samples(&self) -> Result<Vec<PodSample>, RuntimeError> {
        let pods = self
            .store
            .select::<SandboxRecord>(|p| p.state == SandboxState::Ready);
        let mut samples = Vec::with_capacity(pods.len());
        for record in pods {
            let containers: Vec<ContainerSample> = self
                .containers_of(&record.id)?
                .into_iter()
                .filter(|c| c.state == ContainerState::Running && !c.cgroup_path.is_empty())
                .map(|c| ContainerSample {
                    name: metadata_name(&c.config),
                    usage: cgroup::usage(&c.cgroup_path),
                    extra: cgroup::extra(&c.cgroup_path),
                    record: c,
                })
                .collect();
            let interfaces = if record.netns.is_empty() {
                Vec::new() // host network: the node's interfaces are not the pod's
            } else {
                netns_pid(&record, &containers)
                    .and_then(|pid| std::fs::read_to_string(format!("/proc/{pid}/net/dev")).ok())
                    .map(|text| parse_net_dev(&text))
                    .unwrap_or_default()
            };
            samples.push(PodSample {
                name: metadata_name(&record.config),
                record,
                containers,
                interfaces,
            });
        }
        Ok(samples)
    }
}

/// `metadata.name` of a stored CRI config, read without decoding all of it.
fn metadata_name(config: &serde_json::Value) -> String {
    config
        .pointer("/metadata/name")
        .and_then(|n| n.as_str())
        .unwrap_or_default()
        .to_string()
}

/// A live process in the pod's network namespace: the pod init, else a
/// running container's init, each only while it is still the process
/// recorded (a reused pid would report another namespace).
fn netns_pid(pod: &SandboxRecord, containers: &[ContainerSample]) -> Option<u32> {
    let same = |pid: u32, started: u64| {
        pid > 0 && started > 0 && crate::process::start_time(pid) == Some(started)
    };
    if same(pod.pod_init_pid, pod.pod_init_start_time) {
        return Some(pod.pod_init_pid);
    }
    containers
        .iter()
        .map(|c| &c.record)
        .find(|c| same(c.pid, c.pid_start_time) && shares_netns(c.pid, &pod.netns))
        .map(|c| c.pid)
}

/// Whether `pid`'s network namespace is the pinned one at `netns`.
fn shares_netns(pid: u32, netns: &str) -> bool {
    use std::os::unix::fs::MetadataExt;
    let ns = |p: &Path| std::fs::metadata(p).map(|m| (m.dev(), m.ino())).ok();
    let theirs = ns(Path::new(&format!("/proc/{pid}/ns/net")));
    theirs.is_some() && theirs == ns(Path::new(netns))
}

/// /proc/net/dev's table, loopback left out (as cAdvisor does).
pub(crate) fn parse_net_dev(text: &str) -> Vec<InterfaceCounters> {
    text.lines()
        .skip(2)
        .filter_map(|line| {
            let (name, counters) = line.split_once(':')?;
            let name = name.trim();
            let v: Vec<u64> = counters
                .split_whitespace()
                .map(|f| f.parse().unwrap_or(0))
                .collect();
            (name != "lo" && v.len() >= 16).then(|| InterfaceCounters {
                name: name.to_string(),
                rx_bytes: v[0],
                rx_packets: v[1],
                rx_errors: v[2],
                rx_dropped: v[3],
                tx_bytes: v[8],
                tx_packets: v[9],
                tx_errors: v[10],
                tx_dropped: v[11],
            })
        })
        .take(MAX_INTERFACES)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn net_dev_is_parsed_without_loopback() {
        let text = "Inter-|   Receive                                                |  Transmit\n \
 face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop fifo colls carrier compressed\n    \
lo:     100       2    0    0    0     0          0         0      100       2    0    0    0     0       0          0\n  \
eth0:    5000      40    1    2    0     0          0         0     3000      30    3    4    0     0       0          0\n";
        let parsed = parse_net_dev(text);
        assert_eq!(
            parsed,
            vec![InterfaceCounters {
                name: "eth0".into(),
                rx_bytes: 5000,
                rx_packets: 40,
                rx_errors: 1,
                rx_dropped: 2,
                tx_bytes: 3000,
                tx_packets: 30,
                tx_errors: 3,
                tx_dropped: 4,
            }]
        );
    }
}
