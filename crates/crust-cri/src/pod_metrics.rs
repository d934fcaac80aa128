//! ListMetricDescriptors and ListPodSandboxMetrics (KEP-2371: kubelet's
//! `PodAndContainerStatsFromCRI` takes the cAdvisor-style metrics from the
//! runtime). Names and meanings are cAdvisor's, so dashboards written
//! against cAdvisor keep working; `crust_runtime::pod_metrics` reads the
//! raw samples.
//!
//! CRI's `Metric.value` is a UInt64, so `container_cpu_usage_seconds_total`
//! is whole seconds (cAdvisor's is a float); rates over minutes, as
//! Prometheus takes them, are unaffected.

use crust_cri_api::v1 as cri;
use crust_runtime::pod_metrics::{ContainerSample, InterfaceCounters, PodSample};

/// Label keys of every container metric, sorted as CRI asks.
const CONTAINER_LABELS: &[&str] = &["container", "id", "image", "namespace", "pod"];
/// Label keys of every pod network metric, sorted.
const NETWORK_LABELS: &[&str] = &["id", "interface", "namespace", "pod"];

enum Scope {
    Container,
    Network,
}

struct Descriptor {
    name: &'static str,
    help: &'static str,
    kind: cri::MetricType,
    scope: Scope,
}

const fn container(name: &'static str, help: &'static str, kind: cri::MetricType) -> Descriptor {
    Descriptor {
        name,
        help,
        kind,
        scope: Scope::Container,
    }
}

const fn network(name: &'static str, help: &'static str) -> Descriptor {
    Descriptor {
        name,
        help,
        kind: cri::MetricType::Counter,
        scope: Scope::Network,
    }
}

use cri::MetricType::{Counter, Gauge};

/// Every metric crust emits, in the order it emits them.
const DESCRIPTORS: &[Descriptor] = &[
    container(
        "container_cpu_usage_seconds_total",
        "Cumulative cpu time consumed in seconds (whole seconds).",
        Counter,
    ),
    container(
        "container_memory_usage_bytes",
        "Current memory usage in bytes, including all memory regardless of when it was accessed.",
        Gauge,
    ),
    container(
        "container_memory_working_set_bytes",
        "Current working set in bytes.",
        Gauge,
    ),
    container("container_memory_rss", "Size of RSS in bytes.", Gauge),
    container(
        "container_memory_cache",
        "Number of bytes of page cache memory.",
        Gauge,
    ),
    container(
        "container_oom_events_total",
        "Count of out of memory events observed for the container.",
        Counter,
    ),
    container(
        "container_processes",
        "Number of processes running inside the container.",
        Gauge,
    ),
    network(
        "container_network_receive_bytes_total",
        "Cumulative count of bytes received.",
    ),
    network(
        "container_network_receive_packets_total",
        "Cumulative count of packets received.",
    ),
    network(
        "container_network_receive_errors_total",
        "Cumulative count of errors encountered while receiving.",
    ),
    network(
        "container_network_receive_packets_dropped_total",
        "Cumulative count of packets dropped while receiving.",
    ),
    network(
        "container_network_transmit_bytes_total",
        "Cumulative count of bytes transmitted.",
    ),
    network(
        "container_network_transmit_packets_total",
        "Cumulative count of packets transmitted.",
    ),
    network(
        "container_network_transmit_errors_total",
        "Cumulative count of errors encountered while transmitting.",
    ),
    network(
        "container_network_transmit_packets_dropped_total",
        "Cumulative count of packets dropped while transmitting.",
    ),
];

pub(crate) fn descriptors() -> Vec<cri::MetricDescriptor> {
    DESCRIPTORS
        .iter()
        .map(|d| cri::MetricDescriptor {
            name: d.name.to_string(),
            help: d.help.to_string(),
            label_keys: match d.scope {
                Scope::Container => CONTAINER_LABELS,
                Scope::Network => NETWORK_LABELS,
            }
            .iter()
            .map(|k| k.to_string())
            .collect(),
        })
        .collect()
}

fn container_value(name: &str, c: &ContainerSample) -> u64 {
    match name {
        "container_cpu_usage_seconds_total" => c.usage.cpu_usage_nanos / 1_000_000_000,
        "container_memory_usage_bytes" => c.usage.memory_usage,
        "container_memory_working_set_bytes" => c.usage.memory_working_set,
        "container_memory_rss" => c.usage.memory_rss,
        "container_memory_cache" => c.extra.memory_cache,
        "container_oom_events_total" => c.extra.oom_kills,
        "container_processes" => c.extra.processes,
        other => unreachable!("{other} is not a container metric"),
    }
}

fn network_value(name: &str, i: &InterfaceCounters) -> u64 {
    match name {
        "container_network_receive_bytes_total" => i.rx_bytes,
        "container_network_receive_packets_total" => i.rx_packets,
        "container_network_receive_errors_total" => i.rx_errors,
        "container_network_receive_packets_dropped_total" => i.rx_dropped,
        "container_network_transmit_bytes_total" => i.tx_bytes,
        "container_network_transmit_packets_total" => i.tx_packets,
        "container_network_transmit_errors_total" => i.tx_errors,
        "container_network_transmit_packets_dropped_total" => i.tx_dropped,
        other => unreachable!("{other} is not a network metric"),
    }
}

fn metric(d: &Descriptor, label_values: Vec<String>, value: u64) -> cri::Metric {
    cri::Metric {
        name: d.name.to_string(),
        timestamp: 0, // gathered live
        metric_type: d.kind as i32,
        label_values,
        value: Some(cri::UInt64Value { value }),
    }
}

pub(crate) fn pod_sandbox_metrics(sample: &PodSample) -> cri::PodSandboxMetrics {
    let pod = &sample.record;
    let container_metrics = sample
        .containers
        .iter()
        .map(|c| {
            // Same order as CONTAINER_LABELS.
            let labels = vec![
                c.name.clone(),
                c.record.id.clone(),
                c.record.image_ref.clone(),
                pod.namespace.clone(),
                sample.name.clone(),
            ];
            cri::ContainerMetrics {
                container_id: c.record.id.clone(),
                metrics: DESCRIPTORS
                    .iter()
                    .filter(|d| matches!(d.scope, Scope::Container))
                    .map(|d| metric(d, labels.clone(), container_value(d.name, c)))
                    .collect(),
            }
        })
        .collect();
    let metrics = sample
        .interfaces
        .iter()
        .flat_map(|i| {
            // Same order as NETWORK_LABELS.
            let labels = vec![
                pod.id.clone(),
                i.name.clone(),
                pod.namespace.clone(),
                sample.name.clone(),
            ];
            DESCRIPTORS
                .iter()
                .filter(|d| matches!(d.scope, Scope::Network))
                .map(move |d| metric(d, labels.clone(), network_value(d.name, i)))
        })
        .collect();
    cri::PodSandboxMetrics {
        pod_sandbox_id: pod.id.clone(),
        metrics,
        container_metrics,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crust_runtime::cgroup::{Extra, Usage};
    use crust_store::{ContainerRecord, SandboxRecord};

    fn sample() -> PodSample {
        PodSample {
            name: "web".into(),
            record: SandboxRecord {
                id: "pod1".into(),
                name: "web_default_uid_0".into(),
                namespace: "default".into(),
                ..Default::default()
            },
            containers: vec![ContainerSample {
                name: "nginx".into(),
                record: ContainerRecord {
                    id: "ctr1".into(),
                    name: "nginx_web_default_uid_0_0".into(),
                    image_ref: "registry/nginx:1".into(),
                    ..Default::default()
                },
                usage: Usage {
                    cpu_usage_nanos: 2_500_000_000,
                    memory_usage: 4096,
                    memory_working_set: 2048,
                    memory_rss: 1024,
                    ..Default::default()
                },
                extra: Extra {
                    memory_cache: 512,
                    oom_kills: 1,
                    processes: 3,
                },
            }],
            interfaces: vec![InterfaceCounters {
                name: "eth0".into(),
                rx_bytes: 100,
                tx_packets: 7,
                ..Default::default()
            }],
        }
    }

    #[test]
    fn every_metric_has_a_descriptor_and_as_many_labels_as_its_keys() {
        let descriptors = descriptors();
        let m = pod_sandbox_metrics(&sample());
        let all = m
            .metrics
            .iter()
            .chain(m.container_metrics.iter().flat_map(|c| c.metrics.iter()));
        let mut seen = 0;
        for metric in all {
            let d = descriptors
                .iter()
                .find(|d| d.name == metric.name)
                .unwrap_or_else(|| panic!("{} has no descriptor", metric.name));
            assert_eq!(d.label_keys.len(), metric.label_values.len(), "{}", d.name);
            seen += 1;
        }
        assert_eq!(seen, descriptors.len(), "every descriptor is emitted once");
        for d in &descriptors {
            let mut sorted = d.label_keys.clone();
            sorted.sort();
            assert_eq!(sorted, d.label_keys, "{} keys sorted", d.name);
        }
    }

    #[test]
    fn values_and_labels_come_from_the_sample() {
        let m = pod_sandbox_metrics(&sample());
        assert_eq!(m.pod_sandbox_id, "pod1");
        let c = &m.container_metrics[0];
        assert_eq!(c.container_id, "ctr1");
        let value = |name: &str| {
            c.metrics
                .iter()
                .find(|m| m.name == name)
                .map(|m| m.value.as_ref().unwrap().value)
        };
        assert_eq!(value("container_cpu_usage_seconds_total"), Some(2));
        assert_eq!(value("container_memory_working_set_bytes"), Some(2048));
        assert_eq!(value("container_memory_cache"), Some(512));
        assert_eq!(value("container_oom_events_total"), Some(1));
        assert_eq!(value("container_processes"), Some(3));
        assert_eq!(
            c.metrics[0].label_values,
            ["nginx", "ctr1", "registry/nginx:1", "default", "web"]
        );
        let rx = m
            .metrics
            .iter()
            .find(|m| m.name == "container_network_receive_bytes_total")
            .unwrap();
        assert_eq!(rx.label_values, ["pod1", "eth0", "default", "web"]);
        assert_eq!(rx.value.as_ref().unwrap().value, 100);
        assert_eq!(rx.metric_type, cri::MetricType::Counter as i32);
    }
}
