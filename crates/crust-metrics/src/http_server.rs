//! The /metrics HTTP endpoint: a few lines of hyper, no framework.
//!
//! Nothing here authenticates, so every connection is bounded: a cap on
//! connections held at once (more wait in the kernel's backlog), a
//! deadline for each request head (also the keep-alive idle limit: hyper
//! arms it while waiting for the next request), and a maximum age after
//! which a connection is closed once its response is out.

use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use http_body_util::Full;
use hyper::body::Bytes;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;

use crate::Metrics;
use crate::accept::{Acceptor, Gate};

/// Bounds on what clients can hold of the metrics server.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Connections served at once.
    pub max_connections: usize,
    /// A client must send a whole request head within this long, from the
    /// connection's start or the end of its previous response.
    pub header_read_timeout: Duration,
    /// A connection is closed this long after it was accepted (after the
    /// response in flight, if any; a scraper simply reconnects).
    pub max_connection_age: Duration,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            max_connections: 64,
            header_read_timeout: Duration::from_secs(10),
            max_connection_age: Duration::from_secs(120),
        }
    }
}

/// Serves `GET /metrics` on `listener` until `shutdown` completes.
pub async fn serve(
    listener: TcpListener,
    metrics: Arc<Metrics>,
    shutdown: impl Future<Output = ()>,
) {
    let limits = Limits::default();
    let gate = Gate::new(limits.max_connections);
    serve_with(listener, metrics, limits, gate, shutdown).await
}

pub(crate) async fn serve_with(
    listener: TcpListener,
    metrics: Arc<Metrics>,
    limits: Limits,
    gate: Gate,
    shutdown: impl Future<Output = ()>,
) {
    tokio::pin!(shutdown);
    let mut acceptor = Acceptor::new("metrics");
    loop {
        let ((stream, _), pass) = tokio::select! {
            _ = &mut shutdown => return,
            accepted = gate.accept(&mut acceptor, || listener.accept()) => accepted,
        };
        let metrics = metrics.clone();
        let limits = limits.clone();
        tokio::spawn(async move {
            let _pass = pass;
            let service = service_fn(move |req| {
                let metrics = metrics.clone();
                async move { Ok::<_, Infallible>(respond(&req, &metrics)) }
            });
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(limits.header_read_timeout)
                .serve_connection(TokioIo::new(stream), service);
            tokio::pin!(conn);
            let result = tokio::select! {
                result = conn.as_mut() => result,
                _ = tokio::time::sleep(limits.max_connection_age) => {
                    conn.as_mut().graceful_shutdown();
                    match tokio::time::timeout(limits.header_read_timeout, conn).await {
                        Ok(result) => result,
                        Err(_) => return,
                    }
                }
            };
            if let Err(e) = result {
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::SocketAddr;
    use std::time::Instant;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpStream;

    /// Generous: the assertions are that things happen, not how fast.
    const BOUND: Duration = Duration::from_secs(10);

    async fn start(limits: Limits) -> (SocketAddr, Gate, tokio::sync::oneshot::Sender<()>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let gate = Gate::new(limits.max_connections);
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(serve_with(
            listener,
            Metrics::new(),
            limits,
            gate.clone(),
            async move {
                let _ = stopped.await;
            },
        ));
        (addr, gate, stop)
    }

    fn short(max_connections: usize, header_read_timeout: Duration) -> Limits {
        Limits {
            max_connections,
            header_read_timeout,
            max_connection_age: Duration::from_secs(60),
        }
    }

    /// Reads until the server closes; panics if it does not within BOUND.
    async fn read_until_closed(stream: &mut TcpStream) -> Vec<u8> {
        let mut all = Vec::new();
        tokio::time::timeout(BOUND, async {
            let mut buf = [0u8; 4096];
            loop {
                match stream.read(&mut buf).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => all.extend_from_slice(&buf[..n]),
                }
            }
        })
        .await
        .expect("the server did not close the connection");
        all
    }

    async fn get_metrics(addr: SocketAddr) -> String {
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .await
            .unwrap();
        String::from_utf8_lossy(&read_until_closed(&mut s).await).into_owned()
    }

    #[tokio::test]
    async fn a_half_sent_request_is_disconnected_after_the_header_timeout() {
        let (addr, _gate, _stop) = start(short(8, Duration::from_millis(500))).await;
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n")
            .await
            .unwrap();
        let started = Instant::now();
        read_until_closed(&mut s).await;
        assert!(started.elapsed() >= Duration::from_millis(400));
    }

    #[tokio::test]
    async fn an_idle_keep_alive_connection_is_closed() {
        let (addr, _gate, _stop) = start(short(8, Duration::from_millis(500))).await;
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .unwrap();
        let answer = String::from_utf8_lossy(&read_until_closed(&mut s).await).into_owned();
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    }

    #[tokio::test]
    async fn idle_connections_over_the_cap_wait_in_the_backlog() {
        const CAP: usize = 4;
        let (addr, gate, _stop) = start(short(CAP, Duration::from_secs(60))).await;
        let mut idle = Vec::new();
        for _ in 0..CAP + 50 {
            let mut s = TcpStream::connect(addr).await.unwrap();
            s.write_all(b"GET /metrics HTTP/1.1\r\n").await.unwrap();
            idle.push(s);
        }
        let deadline = Instant::now() + BOUND;
        while gate.held() < CAP && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(gate.held(), CAP);
        assert!(gate.peak() <= CAP, "held {} connections", gate.peak());
        let queued = crate::accept::backlog(addr).unwrap();
        assert!(
            queued >= 50,
            "only {queued} connections left in the backlog"
        );
        drop(idle);
        let answer = tokio::time::timeout(BOUND, get_metrics(addr))
            .await
            .expect("no answer once the idle connections were dropped");
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
        assert!(answer.contains("crust_build_info"), "{answer}");
        assert!(gate.peak() <= CAP, "held {} connections", gate.peak());
    }
}
