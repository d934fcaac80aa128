//! The HTTP side: accept (optionally TLS), check the token, negotiate the
//! subprotocol, answer 101 and hand the upgraded connection to the
//! protocol handler. The token is consumed before any upgrade.

use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use crust_metrics::accept::{Acceptor, Gate};
use http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode, header};
use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::OwnedSemaphorePermit;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls;

use crate::activity::{Activity, Tracked};
use crate::protocol::{self, Version};
use crate::{Limits, Pending, Shared};

/// An upgraded connection, whatever carried it.
pub type Upgraded = Tracked<TokioIo<hyper::upgrade::Upgraded>>;

pub fn tls_acceptor(cert: &Path, key: &Path) -> Result<TlsAcceptor, String> {
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::{CertificateDer, PrivateKeyDer};
    let certs = CertificateDer::pem_file_iter(cert)
        .and_then(|it| it.collect::<Result<Vec<_>, _>>())
        .map_err(|e| format!("certificate {}: {e}", cert.display()))?;
    let key = PrivateKeyDer::from_pem_file(key)
        .map_err(|e| format!("private key {}: {e}", key.display()))?;
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| e.to_string())?
    .with_no_client_auth()
    .with_single_cert(certs, key)
    .map_err(|e| format!("certificate and key: {e}"))?;
    Ok(TlsAcceptor::from(Arc::new(config)))
}

/// No Nagle delay for interactive streams, and TCP keepalive: a client
/// that vanishes without closing (a killed laptop, a dropped NAT entry) is
/// noticed in about two minutes (30 s idle, then the kernel's probes every
/// 10 s) instead of at the streaming idle timeout, and its exec is ended.
fn tune(tcp: &tokio::net::TcpStream) {
    let _ = tcp.set_nodelay(true);
    let keepalive = socket2::TcpKeepalive::new()
        .with_time(KEEPALIVE_IDLE)
        .with_interval(KEEPALIVE_INTERVAL);
    if let Err(e) = socket2::SockRef::from(tcp).set_tcp_keepalive(&keepalive) {
        tracing::debug!(error = %e, "cannot enable TCP keepalive");
    }
}

const KEEPALIVE_IDLE: std::time::Duration = std::time::Duration::from_secs(30);
const KEEPALIVE_INTERVAL: std::time::Duration = std::time::Duration::from_secs(10);

pub async fn serve(
    listener: TcpListener,
    tls: Option<TlsAcceptor>,
    shared: Arc<Shared>,
    stop: impl std::future::Future<Output = ()> + Send + 'static,
) {
    tokio::pin!(stop);
    let limits = shared.limits.clone();
    // Held from accept until the upgrade (or the end): connections nobody
    // has authenticated are capped, and over the cap wait in the backlog.
    let unauthenticated = Gate::new(limits.max_unauthenticated);
    let mut acceptor = Acceptor::new("streaming");
    loop {
        let ((tcp, peer), pass) = tokio::select! {
            _ = &mut stop => return,
            accepted = unauthenticated.accept(&mut acceptor, || listener.accept()) => accepted,
        };
        tune(&tcp);
        let shared = shared.clone();
        let tls = tls.clone();
        let limits = limits.clone();
        tokio::spawn(async move {
            let served = tokio::time::timeout(
                limits.upgrade_deadline,
                serve_connection(tcp, tls, shared, &limits),
            )
            .await;
            drop(pass);
            match served {
                Ok(Ok(())) => {}
                Ok(Err(e)) => tracing::debug!(%peer, error = %e, "streaming connection ended"),
                Err(_) => {
                    tracing::debug!(%peer, "streaming connection not upgraded in time: closed")
                }
            }
        });
    }
}

/// Serves one connection until it upgrades (the session then goes on in
/// its own task) or ends.
async fn serve_connection(
    tcp: tokio::net::TcpStream,
    tls: Option<TlsAcceptor>,
    shared: Arc<Shared>,
    limits: &Limits,
) -> Result<(), String> {
    let service = hyper::service::service_fn(move |req| {
        let shared = shared.clone();
        async move { Ok::<_, std::convert::Infallible>(route(shared, req)) }
    });
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout);
    let result = match tls {
        Some(tls) => {
            let stream = tokio::time::timeout(limits.header_read_timeout, tls.accept(tcp))
                .await
                .map_err(|_| "TLS handshake timed out".to_string())?
                .map_err(|e| format!("TLS handshake failed: {e}"))?;
            builder
                .serve_connection(TokioIo::new(stream), service)
                .with_upgrades()
                .await
        }
        None => {
            builder
                .serve_connection(TokioIo::new(tcp), service)
                .with_upgrades()
                .await
        }
    };
    result.map_err(|e| e.to_string())
}

fn plain(status: StatusCode, message: impl Into<String>) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(message.into() + "\n")));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

/// Which upgrade a request asks for.
#[derive(Debug, PartialEq, Eq)]
enum Transport {
    Spdy,
    WebSocket,
}

fn header_has(headers: &HeaderMap, name: header::HeaderName, token: &str) -> bool {
    headers.get_all(name).iter().any(|v| {
        v.to_str().is_ok_and(|v| {
            v.split(',')
                .any(|part| part.trim().eq_ignore_ascii_case(token))
        })
    })
}

fn transport(headers: &HeaderMap) -> Option<Transport> {
    if !header_has(headers, header::CONNECTION, "upgrade") {
        return None;
    }
    if header_has(headers, header::UPGRADE, "websocket") {
        Some(Transport::WebSocket)
    } else if header_has(headers, header::UPGRADE, "SPDY/3.1") {
        Some(Transport::Spdy)
    } else {
        None
    }
}

fn values(headers: &HeaderMap, name: &str) -> Vec<String> {
    headers
        .get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok().map(str::to_owned))
        .collect()
}

fn route(shared: Arc<Shared>, mut req: Request<Incoming>) -> Response<Full<Bytes>> {
    if req.method() != Method::GET && req.method() != Method::POST {
        return plain(StatusCode::METHOD_NOT_ALLOWED, "use GET or POST");
    }
    let path = req.uri().path().trim_start_matches('/');
    let Some((kind, token)) = path.split_once('/') else {
        return plain(StatusCode::NOT_FOUND, "not found");
    };
    let taken = shared
        .tokens
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .take(token, Instant::now());
    let pending = match taken {
        Some(p) if p.path() == kind => p,
        _ => {
            return plain(
                StatusCode::NOT_FOUND,
                "unknown, expired or already used streaming token: ask the runtime for a new URL",
            );
        }
    };
    let Some(transport) = transport(req.headers()) else {
        return plain(
            StatusCode::BAD_REQUEST,
            "streaming needs an upgrade to SPDY/3.1 or websocket",
        );
    };
    let Ok(permit) = shared.sessions.clone().try_acquire_owned() else {
        return plain(
            StatusCode::SERVICE_UNAVAILABLE,
            "too many streaming sessions; retry later",
        );
    };
    let port_forward = matches!(pending, Pending::PortForward(_));
    let (header_name, supported): (&str, &[&str]) = match (&transport, port_forward) {
        (Transport::Spdy, false) => ("x-stream-protocol-version", &protocol::SPDY_REMOTECOMMAND),
        (Transport::Spdy, true) => ("x-stream-protocol-version", &protocol::SPDY_PORTFORWARD),
        (Transport::WebSocket, false) => ("sec-websocket-protocol", &protocol::WS_REMOTECOMMAND),
        (Transport::WebSocket, true) => ("sec-websocket-protocol", &protocol::WS_PORTFORWARD),
    };
    let chosen = match protocol::negotiate(&values(req.headers(), header_name), supported) {
        Ok(chosen) => chosen,
        Err(message) => {
            let mut response = plain(
                StatusCode::FORBIDDEN,
                format!("unable to upgrade: {message}"),
            );
            if transport == Transport::Spdy {
                for s in supported {
                    response.headers_mut().append(
                        "x-accepted-stream-protocol-versions",
                        HeaderValue::from_static(s),
                    );
                }
            }
            return response;
        }
    };
    let query = req.uri().query().unwrap_or("").to_owned();
    let tunnel = chosen == Some(protocol::SPDY_TUNNEL);
    let ws_ports = match (&transport, &pending) {
        (Transport::WebSocket, Pending::PortForward(r)) if !tunnel => {
            match crate::portforward::websocket_ports(&query, r) {
                Ok(ports) => ports,
                Err(e) => return plain(StatusCode::BAD_REQUEST, e),
            }
        }
        _ => Vec::new(),
    };
    let mut response = Response::new(Full::new(Bytes::new()));
    *response.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let headers = response.headers_mut();
    headers.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
    match transport {
        Transport::Spdy => {
            headers.insert(header::UPGRADE, HeaderValue::from_static("SPDY/3.1"));
            if let Some(p) = chosen {
                headers.insert(header_name, HeaderValue::from_static(p));
            }
        }
        Transport::WebSocket => {
            let Some(key) = req.headers().get("sec-websocket-key") else {
                return plain(StatusCode::BAD_REQUEST, "websocket upgrade without a key");
            };
            let accept =
                tokio_tungstenite::tungstenite::handshake::derive_accept_key(key.as_bytes());
            headers.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
            headers.insert(
                "sec-websocket-accept",
                HeaderValue::from_str(&accept).expect("base64 is a valid header"),
            );
            if let Some(p) = chosen {
                headers.insert(header_name, HeaderValue::from_static(p));
            }
        }
    }
    let upgrade = hyper::upgrade::on(&mut req);
    tokio::spawn(async move {
        let io = match upgrade.await {
            Ok(io) => io,
            Err(e) => {
                tracing::debug!(error = %e, "streaming upgrade failed");
                return;
            }
        };
        let activity = Activity::new();
        let io = Tracked::new(TokioIo::new(io), activity.clone());
        let session = Session {
            shared,
            activity,
            _permit: permit,
        };
        let version = Version::of(chosen.unwrap_or(""));
        match (transport, pending) {
            (Transport::Spdy, Pending::PortForward(r)) => {
                crate::portforward::spdy(session, io, r).await
            }
            (Transport::WebSocket, Pending::PortForward(r)) if tunnel => {
                crate::portforward::spdy(session, crate::tunnel::over_websocket(io).await, r).await
            }
            (Transport::WebSocket, Pending::PortForward(r)) => {
                crate::portforward::websocket(session, io, r, ws_ports, chosen).await
            }
            (Transport::Spdy, op) => crate::remotecommand::spdy(session, io, op, version).await,
            (Transport::WebSocket, op) => {
                crate::remotecommand::websocket(session, io, op, version, chosen).await
            }
        }
    });
    response
}

/// What every protocol handler gets besides its connection.
pub struct Session {
    pub shared: Arc<Shared>,
    pub activity: Activity,
    _permit: OwnedSemaphorePermit,
}

impl Session {
    /// Resolves when the connection was idle for the configured timeout.
    pub async fn idle(&self) {
        self.activity.idle(self.shared.idle_timeout).await;
        tracing::info!("streaming session idle too long: closing it");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn accepted_connections_get_keepalive() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let _client = tokio::net::TcpStream::connect(addr).await.unwrap();
        let (tcp, _) = listener.accept().await.unwrap();
        tune(&tcp);
        let sock = socket2::SockRef::from(&tcp);
        assert!(sock.keepalive().unwrap());
        assert_eq!(sock.tcp_keepalive_time().unwrap(), KEEPALIVE_IDLE);
        assert!(tcp.nodelay().unwrap());
    }

    #[test]
    fn upgrades_are_recognised_case_insensitively() {
        let mut h = HeaderMap::new();
        h.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
        h.insert(header::UPGRADE, HeaderValue::from_static("SPDY/3.1"));
        assert_eq!(transport(&h), Some(Transport::Spdy));
        h.insert(
            header::CONNECTION,
            HeaderValue::from_static("keep-alive, upgrade"),
        );
        h.insert(header::UPGRADE, HeaderValue::from_static("WebSocket"));
        assert_eq!(transport(&h), Some(Transport::WebSocket));
        h.insert(header::CONNECTION, HeaderValue::from_static("close"));
        assert_eq!(transport(&h), None);
    }
}
