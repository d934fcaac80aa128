//! A tower layer around the gRPC server: one tracing span, one counter
//! increment and one latency sample per call.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use tracing::Instrument;
use tracing::field::Empty;

use crate::Metrics;

#[derive(Clone)]
pub struct GrpcObserveLayer {
    metrics: Arc<Metrics>,
}

impl GrpcObserveLayer {
    pub fn new(metrics: Arc<Metrics>) -> Self {
        GrpcObserveLayer { metrics }
    }
}

impl<S> tower::Layer<S> for GrpcObserveLayer {
    type Service = GrpcObserve<S>;
    fn layer(&self, inner: S) -> GrpcObserve<S> {
        GrpcObserve {
            inner,
            metrics: self.metrics.clone(),
        }
    }
}

#[derive(Clone)]
pub struct GrpcObserve<S> {
    inner: S,
    metrics: Arc<Metrics>,
}

/// Splits "/runtime.v1.RuntimeService/Version" into ("RuntimeService", "Version").
fn service_and_method(path: &str) -> (&str, &str) {
    let mut parts = path.trim_start_matches('/').rsplitn(2, '/');
    let method = parts.next().unwrap_or("");
    let service = parts.next().unwrap_or("");
    let service = service.rsplit('.').next().unwrap_or(service);
    (service, method)
}

/// A unary error is a "trailers-only" response: grpc-status is a header.
/// A success carries it in the trailers, so no header means OK.
fn response_code<B>(response: &http::Response<B>) -> tonic::Code {
    response
        .headers()
        .get("grpc-status")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<i32>().ok())
        .map_or(tonic::Code::Ok, tonic::Code::from)
}

impl<S, ReqBody, ResBody> tower::Service<http::Request<ReqBody>> for GrpcObserve<S>
where
    S: tower::Service<http::Request<ReqBody>, Response = http::Response<ResBody>>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<S::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<ReqBody>) -> Self::Future {
        let (service, method) = service_and_method(request.uri().path());
        let (service, method) = (service.to_string(), method.to_string());
        // Handlers record the ids they act on into these empty fields.
        let span = tracing::info_span!(
            "cri",
            call = %method,
            pod_id = Empty,
            container_id = Empty,
            image = Empty
        );
        let future = span.in_scope(|| self.inner.call(request));
        let metrics = self.metrics.clone();
        Box::pin(
            async move {
                let start = Instant::now();
                let result = future.await;
                let code = match &result {
                    Ok(response) => response_code(response),
                    Err(_) => tonic::Code::Unknown,
                };
                let seconds = start.elapsed().as_secs_f64();
                metrics.record_rpc(&service, &method, code, seconds);
                if code == tonic::Code::Ok {
                    tracing::debug!(seconds, "done");
                } else {
                    tracing::info!(?code, seconds, "failed");
                }
                result
            }
            .instrument(span),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_grpc_paths() {
        assert_eq!(
            service_and_method("/runtime.v1.RuntimeService/Version"),
            ("RuntimeService", "Version")
        );
        assert_eq!(
            service_and_method("/runtime.v1.ImageService/PullImage"),
            ("ImageService", "PullImage")
        );
    }

    #[test]
    fn reads_code_from_trailers_only_response() {
        let ok = http::Response::builder().body(()).unwrap();
        assert_eq!(response_code(&ok), tonic::Code::Ok);
        let err = http::Response::builder()
            .header("grpc-status", "12")
            .body(())
            .unwrap();
        assert_eq!(response_code(&err), tonic::Code::Unimplemented);
    }
}
