//! The CRI v1 gRPC services crustd serves.
//!
//! [`Cri`] implements both RuntimeService and ImageService over the
//! [`Runtime`] they share. Each capability lives in its own module and
//! lands with its issue; until then its RPCs answer `Unimplemented` with
//! the RPC's name, never a fake success.

#![forbid(unsafe_code)]

mod events;
mod image_service;
mod pod_metrics;
mod runtime_service;
mod stream_lists;

use std::sync::Arc;

use crust_config::{CgroupDriver, Config};
use crust_cri_api::v1 as cri;
use crust_image::Images;
use crust_runtime::Pods;
use crust_store::Store;

pub use crust_cri_api::v1::image_service_server::ImageServiceServer;
pub use crust_cri_api::v1::runtime_service_server::RuntimeServiceServer;

/// The state every CRI call works on.
pub struct Runtime {
    pub config: Config,
    pub cgroup_driver: CgroupDriver,
    pub store: Arc<Store>,
    pub images: Arc<Images>,
    pub pods: Arc<Pods>,
    /// Hands out the URLs of Exec, Attach and PortForward.
    pub streaming: crust_stream::StreamServer,
}

/// The gRPC face of crust: one value serves both CRI services.
#[derive(Clone)]
pub struct Cri {
    runtime: Arc<Runtime>,
}

impl Cri {
    pub fn new(runtime: Arc<Runtime>) -> Cri {
        Cri { runtime }
    }

    pub fn runtime_service(&self) -> RuntimeServiceServer<Cri> {
        RuntimeServiceServer::new(self.clone())
    }

    pub fn image_service(&self) -> ImageServiceServer<Cri> {
        ImageServiceServer::new(self.clone())
    }
}

type Rpc<T> = Result<tonic::Response<T>, tonic::Status>;

/// The CRI name of the runtime, reported by Version.
pub const RUNTIME_NAME: &str = "crust";
/// The CRI API version crust speaks.
pub const RUNTIME_API_VERSION: &str = "v1";
/// The kubelet runtime API version answered in Version.version.
const KUBE_RUNTIME_API_VERSION: &str = "0.1.0";

/// CRI condition types kubelet checks (see the CRI API's RuntimeCondition).
const RUNTIME_READY: &str = "RuntimeReady";
const NETWORK_READY: &str = "NetworkReady";

fn condition(kind: &str, ready: bool, reason: &str, message: &str) -> cri::RuntimeCondition {
    cri::RuntimeCondition {
        r#type: kind.to_string(),
        status: ready,
        reason: reason.to_string(),
        message: message.to_string(),
    }
}

#[cfg(test)]
mod tests;
