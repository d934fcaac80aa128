//! The /metrics HTTP endpoint: a few lines of hyper, no framework.

use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;

use http_body_util::Full;
use hyper::body::Bytes;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

use crate::Metrics;

/// Serves `GET /metrics` on `listener` until `shutdown` completes.
pub async fn serve(
    listener: TcpListener,
    metrics: Arc<Metrics>,
    shutdown: impl Future<Output = ()>,
) {
    tokio::pin!(shutdown);
    loop {
        let stream = tokio::select! {
            _ = &mut shutdown => return,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    tracing::warn!(error = %e, "metrics: accept failed");
                    continue;
                }
            },
        };
        let metrics = metrics.clone();
        tokio::spawn(async move {
            let service = service_fn(move |req| {
                let metrics = metrics.clone();
                async move { Ok::<_, Infallible>(respond(&req, &metrics)) }
            });
            let conn = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service);
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, "metrics: connection ended");
            }
        });
    }
}

fn respond<B>(req: &http::Request<B>, metrics: &Metrics) -> http::Response<Full<Bytes>> {
    let builder = http::Response::builder();
    let response = match (req.method(), req.uri().path()) {
        (&http::Method::GET, "/metrics") => builder
            .header(
                "content-type",
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            )
            .body(Full::new(Bytes::from(metrics.encode()))),
        _ => builder
            .status(http::StatusCode::NOT_FOUND)
            .body(Full::new(Bytes::from_static(
                b"only /metrics is served here\n",
            ))),
    };
    response.expect("static response parts are valid")
}
