//! crust's Prometheus metrics.
//!
//! [`Metrics`] owns the registry and every metric crust exports.
//! [`GrpcObserveLayer`] wraps the gRPC server so each call is counted by
//! method and gRPC code, timed, and run inside a tracing span that handlers
//! fill with the pod, container or image they act on. [`serve`] answers
//! `GET /metrics` in the Prometheus text format. [`accept`] is how every
//! crustd listener accepts: backoff on errors, rate-limited logs, caps.

#![forbid(unsafe_code)]

pub mod accept;
mod grpc;
mod http_server;

use std::sync::Arc;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::metrics::info::Info;
use prometheus_client::registry::Registry;

pub use grpc::GrpcObserveLayer;
pub use http_server::{Limits, serve};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RpcCodeLabels {
    pub service: String,
    pub method: String,
    pub code: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RpcLabels {
    pub service: String,
    pub method: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct NetworkOpLabels {
    pub operation: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RegistryLabels {
    pub registry: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabels {
    pub result: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BuildLabels {
    version: String,
}

type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;

pub struct Metrics {
    registry: Registry,
    pub grpc_requests: Family<RpcCodeLabels, Counter>,
    pub grpc_duration: HistogramFamily<RpcLabels>,
    pub network_operations: Family<NetworkOpLabels, Counter>,
    pub network_errors: Family<NetworkOpLabels, Counter>,
    pub network_duration: HistogramFamily<NetworkOpLabels>,
    pub image_verifications: Family<ResultLabels, Counter>,
    pub pulls_in_flight: Gauge,
    pub pull_bytes: Family<RegistryLabels, Counter>,
    pub pull_duration: HistogramFamily<RegistryLabels>,
    registries_seen: std::sync::Mutex<std::collections::HashSet<String>>,
}

/// Most distinct `registry` label values the pull metrics keep.
pub const MAX_REGISTRY_LABELS: usize = 64;

impl Metrics {
    pub fn new() -> Arc<Metrics> {
        let mut registry = Registry::with_prefix("crust");
        let grpc_requests = Family::<RpcCodeLabels, Counter>::default();
        registry.register(
            "grpc_requests",
            "CRI gRPC requests handled, by service, method and gRPC status code",
            grpc_requests.clone(),
        );
        let grpc_duration: HistogramFamily<RpcLabels> =
            Family::new_with_constructor(|| Histogram::new(exponential_buckets(0.0005, 2.0, 16)));
        registry.register(
            "grpc_request_duration_seconds",
            "Time to answer a CRI gRPC request, by service and method",
            grpc_duration.clone(),
        );
        let network_operations = Family::<NetworkOpLabels, Counter>::default();
        registry.register(
            "network_plugin_operations",
            "CNI plugin operations (ADD, DEL, CHECK) run, by operation",
            network_operations.clone(),
        );
        let network_errors = Family::<NetworkOpLabels, Counter>::default();
        registry.register(
            "network_plugin_operations_errors",
            "CNI plugin operations that failed, by operation",
            network_errors.clone(),
        );
        let network_duration: HistogramFamily<NetworkOpLabels> =
            Family::new_with_constructor(|| Histogram::new(exponential_buckets(0.001, 2.0, 16)));
        registry.register(
            "network_plugin_operation_duration_seconds",
            "Time a CNI operation took, by operation",
            network_duration.clone(),
        );
        let image_verifications = Family::<ResultLabels, Counter>::default();
        registry.register(
            "image_verifications",
            "Signature checks images.policy made at pull, by result (verified, refused)",
            image_verifications.clone(),
        );
        let pulls_in_flight = Gauge::default();
        registry.register(
            "image_pulls_in_flight",
            "Image pulls running now",
            pulls_in_flight.clone(),
        );
        let pull_bytes = Family::<RegistryLabels, Counter>::default();
        registry.register(
            "image_pull_bytes",
            "Layer bytes downloaded by pulls, by registry",
            pull_bytes.clone(),
        );
        let pull_duration: HistogramFamily<RegistryLabels> =
            Family::new_with_constructor(|| Histogram::new(exponential_buckets(0.05, 2.0, 14)));
        registry.register(
            "image_pull_duration_seconds",
            "Time a pull took, done or failed, by registry",
            pull_duration.clone(),
        );
        registry.register(
            "build",
            "crust build information",
            Info::new(BuildLabels {
                version: env!("CARGO_PKG_VERSION").to_string(),
            }),
        );
        Arc::new(Metrics {
            registry,
            grpc_requests,
            grpc_duration,
            network_operations,
            network_errors,
            network_duration,
            image_verifications,
            pulls_in_flight,
            pull_bytes,
            pull_duration,
            registries_seen: std::sync::Mutex::new(std::collections::HashSet::new()),
        })
    }

    /// The registry in the Prometheus text exposition format.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)
            .expect("writing to a String cannot fail");
        out
    }

    /// The `registry` label for a registry name from an image reference:
    /// itself for the first [`MAX_REGISTRY_LABELS`] seen, `other` after,
    /// so image names cannot grow the series without bound.
    fn registry_label(&self, registry: &str) -> String {
        let mut seen = self
            .registries_seen
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if seen.contains(registry) {
            return registry.to_string();
        }
        if seen.len() < MAX_REGISTRY_LABELS {
            seen.insert(registry.to_string());
            return registry.to_string();
        }
        "other".to_string()
    }

    pub fn record_pull_started(&self) {
        self.pulls_in_flight.inc();
    }

    pub fn record_pull_bytes(&self, registry: &str, bytes: u64) {
        self.pull_bytes
            .get_or_create(&RegistryLabels {
                registry: self.registry_label(registry),
            })
            .inc_by(bytes);
    }

    pub fn record_pull_finished(&self, registry: &str, seconds: f64) {
        self.pulls_in_flight.dec();
        self.pull_duration
            .get_or_create(&RegistryLabels {
                registry: self.registry_label(registry),
            })
            .observe(seconds);
    }

    pub fn record_image_verification(&self, result: &str) {
        self.image_verifications
            .get_or_create(&ResultLabels {
                result: result.to_string(),
            })
            .inc();
    }

    pub fn record_network_op(&self, operation: &str, seconds: f64, ok: bool) {
        let labels = NetworkOpLabels {
            operation: operation.to_string(),
        };
        self.network_operations.get_or_create(&labels).inc();
        if !ok {
            self.network_errors.get_or_create(&labels).inc();
        }
        self.network_duration
            .get_or_create(&labels)
            .observe(seconds);
    }

    pub fn record_rpc(&self, service: &str, method: &str, code: tonic::Code, seconds: f64) {
        self.grpc_requests
            .get_or_create(&RpcCodeLabels {
                service: service.to_string(),
                method: method.to_string(),
                code: format!("{code:?}"),
            })
            .inc();
        self.grpc_duration
            .get_or_create(&RpcLabels {
                service: service.to_string(),
                method: method.to_string(),
            })
            .observe(seconds);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pull_metrics_keep_a_bounded_set_of_registry_labels() {
        let m = Metrics::new();
        for i in 0..(MAX_REGISTRY_LABELS + 10) {
            m.record_pull_started();
            m.record_pull_bytes(&format!("r{i}.example"), 10);
            m.record_pull_finished(&format!("r{i}.example"), 0.1);
        }
        m.record_pull_bytes("r0.example", 5);
        let text = m.encode();
        assert!(
            text.contains(r#"crust_image_pull_bytes_total{registry="r0.example"} 15"#),
            "{text}"
        );
        assert!(
            text.contains(r#"crust_image_pull_bytes_total{registry="other"} 100"#),
            "{text}"
        );
        let series = text
            .lines()
            .filter(|l| l.starts_with("crust_image_pull_bytes_total{"))
            .count();
        assert_eq!(series, MAX_REGISTRY_LABELS + 1);
        assert!(text.contains("crust_image_pulls_in_flight 0"), "{text}");
    }

    #[test]
    fn records_counts_by_code_and_latency() {
        let m = Metrics::new();
        m.record_rpc("RuntimeService", "Version", tonic::Code::Ok, 0.001);
        m.record_rpc("RuntimeService", "Version", tonic::Code::Ok, 0.002);
        m.record_rpc("ImageService", "PullImage", tonic::Code::NotFound, 0.5);
        let text = m.encode();
        assert!(
            text.contains(
                r#"crust_grpc_requests_total{service="RuntimeService",method="Version",code="Ok"} 2"#
            ),
            "{text}"
        );
        assert!(
            text.contains(
                r#"crust_grpc_requests_total{service="ImageService",method="PullImage",code="NotFound"} 1"#
            ),
            "{text}"
        );
        assert!(
            text.contains(
                r#"crust_grpc_request_duration_seconds_count{service="RuntimeService",method="Version"} 2"#
            ),
            "{text}"
        );
        assert!(text.contains("crust_build_info{version="), "{text}");
    }
}
