//! crust's streaming server: the HTTP endpoint behind CRI Exec, Attach and
//! PortForward.
//!
//! A CRI call validates its request and asks [`StreamServer`] for a URL
//! holding a single-use token ([`tokens`]). The client (kubelet proxying
//! kubectl, or crictl) then upgrades that URL to SPDY/3.1 or WebSocket and
//! speaks Kubernetes' remotecommand or portforward protocol over it
//! ([`remotecommand`], [`portforward`]). The work itself (running a process,
//! attaching to one, dialling a port inside a pod) is the [`Backend`]'s.
//!
//! Limits: a cap on connections that have not upgraded yet (more wait in
//! the kernel's backlog), a deadline for each request head and for the
//! whole time before the upgrade, a cap on concurrent sessions, a cap on
//! streams per SPDY session, an idle timeout on every session, and
//! everything a session started is cancelled when its client goes away.

#![forbid(unsafe_code)]

mod activity;
mod http;
mod portforward;
pub mod protocol;
mod remotecommand;
pub mod tokens;
mod tunnel;
mod ws;

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crust_cri_api::v1 as cri;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, watch};

pub use protocol::TerminalSize;
pub use tokens::TokenError;

pub type BoxRead = Box<dyn AsyncRead + Send + Unpin>;
pub type BoxWrite = Box<dyn AsyncWrite + Send + Unpin>;
pub type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

/// Sessions served at once; more get 503 until one ends.
pub const MAX_SESSIONS: usize = 256;
/// Streams one SPDY session may hold open: remotecommand needs five,
/// port forwarding two per connection.
pub const MAX_STREAMS_PER_SESSION: usize = 64;
/// How long a client has to open the streams it announced.
pub const STREAM_CREATION_TIMEOUT: Duration = Duration::from_secs(30);

/// A process's stdio as the client sees it. Absent streams were not asked
/// for. Dropping a writer ends that stream for the client.
pub struct ProcessIo {
    pub stdin: Option<BoxRead>,
    pub stdout: Option<BoxWrite>,
    pub stderr: Option<BoxWrite>,
    pub tty: bool,
    /// The latest terminal size the client asked for (TTY only).
    pub resize: Option<watch::Receiver<Option<TerminalSize>>>,
}

/// What the streaming server asks of the runtime. Futures are dropped when
/// the client goes away: an implementation must then stop what it started
/// (kill an exec'd process, close connections).
pub trait Backend: Send + Sync + 'static {
    /// Runs the command and returns its exit code.
    fn exec(&self, request: cri::ExecRequest, io: ProcessIo) -> BoxFuture<Result<i32, String>>;
    /// Connects to the main process's stdio until it exits or the client
    /// leaves.
    fn attach(&self, request: cri::AttachRequest, io: ProcessIo) -> BoxFuture<Result<(), String>>;
    /// A connection to `port` on the pod's loopback (inside its network
    /// namespace; on the host for host-network pods).
    fn port_forward(
        &self,
        pod_sandbox_id: String,
        port: u16,
    ) -> BoxFuture<Result<TcpStream, String>>;
}

/// Bounds on connections before they upgrade (before their token is
/// checked, anyone can open one).
#[derive(Debug, Clone)]
pub struct Limits {
    /// Connections held at once that have not upgraded.
    pub max_unauthenticated: usize,
    /// A client must finish the TLS handshake, and send each request head,
    /// within this long (also the keep-alive idle limit).
    pub header_read_timeout: Duration,
    /// A connection that has not upgraded this long after it was accepted
    /// is closed, whatever it is doing (a trickled request body, say).
    pub upgrade_deadline: Duration,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            max_unauthenticated: 128,
            header_read_timeout: Duration::from_secs(10),
            upgrade_deadline: Duration::from_secs(30),
        }
    }
}

/// A CRI request waiting for its client.
#[derive(Debug, Clone)]
enum Pending {
    Exec(cri::ExecRequest),
    Attach(cri::AttachRequest),
    PortForward(cri::PortForwardRequest),
}

impl Pending {
    fn path(&self) -> &'static str {
        match self {
            Pending::Exec(_) => "exec",
            Pending::Attach(_) => "attach",
            Pending::PortForward(_) => "portforward",
        }
    }
}

struct Shared {
    base_url: String,
    tokens: Mutex<tokens::TokenCache<Pending>>,
    backend: Arc<dyn Backend>,
    sessions: Arc<Semaphore>,
    idle_timeout: Duration,
    limits: Limits,
}

/// The handle CRI calls use to get URLs; cheap to clone.
#[derive(Clone)]
pub struct StreamServer {
    shared: Arc<Shared>,
}

/// Where the server listens and how.
pub struct Options {
    pub address: String,
    pub tls: Option<(std::path::PathBuf, std::path::PathBuf)>,
    pub idle_timeout: Duration,
    pub limits: Limits,
}

impl Options {
    pub fn from_config(c: &crust_config::StreamingConfig) -> Options {
        Options {
            address: c.address.clone(),
            tls: (!c.tls_cert.is_empty())
                .then(|| (c.tls_cert.clone().into(), c.tls_key.clone().into())),
            idle_timeout: Duration::from_secs(c.idle_timeout_seconds),
            limits: Limits::default(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("cannot listen for streaming on {address}: {source}")]
    Listen {
        address: String,
        source: std::io::Error,
    },
    #[error("streaming TLS: {0}")]
    Tls(String),
}

impl StreamServer {
    /// Binds the listener (so the URL is known at once); the returned
    /// future serves until `stop`, inside a tokio runtime.
    pub fn bind(
        options: Options,
        backend: Arc<dyn Backend>,
        stop: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(StreamServer, BoxFuture<()>), StartError> {
        let listen_error = |source| StartError::Listen {
            address: options.address.clone(),
            source,
        };
        let listener = std::net::TcpListener::bind(&options.address).map_err(listen_error)?;
        listener.set_nonblocking(true).map_err(listen_error)?;
        let local = listener.local_addr().map_err(listen_error)?;
        let tls = match &options.tls {
            Some((cert, key)) => Some(http::tls_acceptor(cert, key).map_err(StartError::Tls)?),
            None => None,
        };
        let shared = Arc::new(Shared {
            base_url: base_url(local, tls.is_some()),
            tokens: Mutex::new(tokens::TokenCache::new(
                tokens::TOKEN_TTL,
                tokens::MAX_PENDING,
            )),
            backend,
            sessions: Arc::new(Semaphore::new(MAX_SESSIONS)),
            idle_timeout: options.idle_timeout,
            limits: options.limits.clone(),
        });
        let serve = {
            let shared = shared.clone();
            async move {
                match TcpListener::from_std(listener) {
                    Ok(listener) => {
                        tracing::info!(url = %shared.base_url, "serving exec, attach and port-forward");
                        http::serve(listener, tls, shared, stop).await
                    }
                    Err(e) => tracing::error!(error = %e, "streaming listener unusable"),
                }
            }
        };
        Ok((StreamServer { shared }, Box::pin(serve)))
    }

    /// The server's base URL (scheme, host and port).
    pub fn base_url(&self) -> &str {
        &self.shared.base_url
    }

    pub fn exec_url(&self, request: cri::ExecRequest) -> Result<String, TokenError> {
        self.url_for(Pending::Exec(request))
    }

    pub fn attach_url(&self, request: cri::AttachRequest) -> Result<String, TokenError> {
        self.url_for(Pending::Attach(request))
    }

    pub fn port_forward_url(&self, request: cri::PortForwardRequest) -> Result<String, TokenError> {
        self.url_for(Pending::PortForward(request))
    }

    fn url_for(&self, pending: Pending) -> Result<String, TokenError> {
        let path = pending.path();
        let token = self
            .shared
            .tokens
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(pending, Instant::now())?;
        Ok(format!("{}/{path}/{token}", self.shared.base_url))
    }
}

/// A URL a client can reach: a wildcard bind is reached on loopback.
fn base_url(local: SocketAddr, tls: bool) -> String {
    let scheme = if tls { "https" } else { "http" };
    let host = match local.ip() {
        ip if ip.is_unspecified() && ip.is_ipv4() => "127.0.0.1".to_string(),
        ip if ip.is_unspecified() => "[::1]".to_string(),
        std::net::IpAddr::V6(ip) => format!("[{ip}]"),
        ip => ip.to_string(),
    };
    format!("{scheme}://{host}:{}", local.port())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_name_a_reachable_host() {
        let url = |s: &str, tls| base_url(s.parse().unwrap(), tls);
        assert_eq!(url("127.0.0.1:4000", false), "http://127.0.0.1:4000");
        assert_eq!(url("0.0.0.0:4000", true), "https://127.0.0.1:4000");
        assert_eq!(url("[::]:4000", false), "http://[::1]:4000");
        assert_eq!(url("[fd00::1]:4000", false), "http://[fd00::1]:4000");
    }
}
