//! Port forwarding: Kubernetes' portforward protocol over SPDY (a data and
//! an error stream per connection, any number of connections per session)
//! and over WebSocket (one data and one error channel per port).

use std::collections::HashMap;

use crust_cri_api::v1 as cri;
use crust_spdy::{Limits, Role, Stream};
use futures_util::StreamExt;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::task::JoinSet;

use crate::http::{Session, Upgraded};
use crate::protocol::Framing;
use crate::remotecommand::FINISH_TIMEOUT;
use crate::ws;
use crate::{Backend, MAX_STREAMS_PER_SESSION};

/// Ports one WebSocket session may forward.
pub const MAX_WS_PORTS: usize = 16;

/// The ports a WebSocket client asks for (`?ports=80,443`), or the CRI
/// request's when the query names none; each must be one the request
/// allowed, when it named any.
pub fn websocket_ports(query: &str, request: &cri::PortForwardRequest) -> Result<Vec<u16>, String> {
    let mut listed = Vec::new();
    for (key, value) in query.split('&').filter_map(|kv| kv.split_once('=')) {
        if key == "ports" || key == "port" {
            for p in value.replace("%2C", ",").replace("%2c", ",").split(',') {
                listed.push(parse_port(p)?);
            }
        }
    }
    if listed.is_empty() {
        for p in &request.port {
            listed.push(u16::try_from(*p).map_err(|_| format!("invalid port {p}"))?);
        }
    }
    if listed.is_empty() {
        return Err("no port to forward: add ?ports=<port>".into());
    }
    if listed.len() > MAX_WS_PORTS {
        return Err(format!("at most {MAX_WS_PORTS} ports per session"));
    }
    for p in &listed {
        allowed(*p, request)?;
    }
    Ok(listed)
}

fn parse_port(s: &str) -> Result<u16, String> {
    match s.trim().parse::<u16>() {
        Ok(p) if p > 0 => Ok(p),
        _ => Err(format!("invalid port {s:?}")),
    }
}

fn allowed(port: u16, request: &cri::PortForwardRequest) -> Result<(), String> {
    if request.port.is_empty() || request.port.contains(&i32::from(port)) {
        Ok(())
    } else {
        Err(format!(
            "port {port} was not in the PortForward request (ports {:?})",
            request.port
        ))
    }
}

/// Copies between the client and the pod's port until the pod side closes
/// (or the client closes and the pod side then finishes).
async fn splice(
    client_read: impl AsyncRead + Unpin,
    client_write: impl AsyncWrite + Unpin,
    conn: tokio::net::TcpStream,
) {
    let (mut pod_read, mut pod_write) = conn.into_split();
    let (mut client_read, mut client_write) = (client_read, client_write);
    let upstream = async {
        let _ = tokio::io::copy(&mut client_read, &mut pod_write).await;
        let _ = pod_write.shutdown().await;
        std::future::pending::<()>().await;
    };
    let downstream = async {
        let _ = tokio::io::copy(&mut pod_read, &mut client_write).await;
        let _ = client_write.shutdown().await;
    };
    tokio::select! {
        _ = upstream => {}
        _ = downstream => {}
    }
}

/// The pieces of one forwarded connection, as the client opens them.
#[derive(Default)]
struct Pair {
    data: Option<Stream>,
    error: Option<Stream>,
}

/// The request a stream belongs to; old clients send no id, and then the
/// stream ids pair up as kubelet assumes (error n, data n+2).
fn request_id(stream: &Stream, kind: &str) -> String {
    match stream.header("requestid") {
        Some(id) => id.to_owned(),
        None if kind == "data" => stream.id().saturating_sub(2).to_string(),
        None => stream.id().to_string(),
    }
}

pub async fn spdy<IO>(session: Session, io: IO, request: cri::PortForwardRequest)
where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let limits = Limits {
        max_streams: MAX_STREAMS_PER_SESSION,
        ..Limits::default()
    };
    let (spdy, mut incoming) = crust_spdy::Session::new(io, Role::Server, limits);
    let mut pending: HashMap<String, Pair> = HashMap::new();
    let mut forwards = JoinSet::new();
    loop {
        let stream = tokio::select! {
            s = incoming.recv() => match s {
                Some(s) => s,
                None => break,
            },
            _ = spdy.closed() => break,
            _ = session.idle() => break,
            Some(_) = forwards.join_next(), if !forwards.is_empty() => continue,
        };
        if stream.reply(Vec::new()).await.is_err() {
            break;
        }
        let kind = stream.header("streamtype").unwrap_or("").to_owned();
        let id = request_id(&stream, &kind);
        let pair = pending.entry(id.clone()).or_default();
        match kind.as_str() {
            "data" if pair.data.is_none() => pair.data = Some(stream),
            "error" if pair.error.is_none() => pair.error = Some(stream),
            _ => {
                tracing::debug!(stream_type = kind, request_id = id, "unexpected stream");
                stream.reset(1);
                continue;
            }
        }
        if pair.data.is_some()
            && pair.error.is_some()
            && let Some(Pair {
                data: Some(data),
                error: Some(error),
            }) = pending.remove(&id)
        {
            forwards.spawn(forward_spdy(
                session.shared.backend.clone(),
                request.clone(),
                data,
                error,
            ));
        }
    }
    forwards.abort_all();
    spdy.close().await;
}

async fn forward_spdy(
    backend: std::sync::Arc<dyn Backend>,
    request: cri::PortForwardRequest,
    data: Stream,
    error: Stream,
) {
    let (_, mut error_writer) = error.split();
    let port = data.header("port").unwrap_or("").to_owned();
    let conn = match parse_port(&port).and_then(|p| allowed(p, &request).map(|()| p)) {
        Ok(p) => backend
            .port_forward(request.pod_sandbox_id.clone(), p)
            .await
            .map_err(|e| {
                format!(
                    "error forwarding port {p} to pod {}: {e}",
                    request.pod_sandbox_id
                )
            }),
        Err(e) => Err(e),
    };
    let (data_reader, mut data_writer) = data.split();
    match conn {
        Ok(conn) => splice(data_reader, data_writer, conn).await,
        Err(message) => {
            let _ = error_writer.write_all(message.as_bytes()).await;
            let _ = data_writer.shutdown().await;
        }
    }
    let _ = error_writer.shutdown().await;
}

pub async fn websocket(
    session: Session,
    io: Upgraded,
    request: cri::PortForwardRequest,
    ports: Vec<u16>,
    protocol_name: Option<&'static str>,
) {
    let framing = Framing::of(protocol_name);
    let (sink, mut source) = ws::accept(io).await.split();
    let (out_tx, mut writer) = ws::channel_writer(sink, framing);
    // Each channel starts with its port, little-endian, as kubelet sends.
    for (i, port) in ports.iter().enumerate() {
        for channel in [2 * i, 2 * i + 1] {
            let _ = out_tx
                .send((channel as u8, port.to_le_bytes().to_vec()))
                .await;
        }
    }
    let mut to_pod: Vec<Option<tokio::net::tcp::OwnedWriteHalf>> = Vec::new();
    let mut pumps = JoinSet::new();
    for (i, port) in ports.iter().enumerate() {
        match session
            .shared
            .backend
            .port_forward(request.pod_sandbox_id.clone(), *port)
            .await
        {
            Ok(conn) => {
                let (mut read, write) = conn.into_split();
                to_pod.push(Some(write));
                let out = out_tx.clone();
                let channel = (2 * i) as u8;
                pumps.spawn(async move {
                    let mut buf = vec![0u8; 32 * 1024];
                    while let Ok(n) = read.read(&mut buf).await {
                        if n == 0 || out.send((channel, buf[..n].to_vec())).await.is_err() {
                            break;
                        }
                    }
                });
            }
            Err(e) => {
                to_pod.push(None);
                let message = format!(
                    "error forwarding port {port} to pod {}: {e}",
                    request.pod_sandbox_id
                );
                let _ = out_tx.send(((2 * i + 1) as u8, message.into_bytes())).await;
            }
        }
    }
    let from_client = async {
        while let Some((channel, data)) = ws::next_channel_message(&mut source, framing).await {
            // Data channels are even; the client writes nothing else.
            let index = usize::from(channel / 2);
            if channel % 2 == 0
                && let Some(Some(w)) = to_pod.get_mut(index)
                && w.write_all(&data).await.is_err()
            {
                to_pod[index] = None;
            }
        }
    };
    let all_done = async { while pumps.join_next().await.is_some() {} };
    tokio::select! {
        _ = from_client => {}
        _ = all_done => {}
        _ = session.idle() => {}
    }
    // The pod side ends with the session: pumps blocked on a pod that
    // waits for input would otherwise keep the writer (and the session's
    // slot) for ever.
    pumps.abort_all();
    drop(to_pod);
    drop(out_tx);
    if tokio::time::timeout(FINISH_TIMEOUT, &mut writer)
        .await
        .is_err()
    {
        writer.abort();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(ports: &[i32]) -> cri::PortForwardRequest {
        cri::PortForwardRequest {
            pod_sandbox_id: "p".into(),
            port: ports.to_vec(),
        }
    }

    #[test]
    fn websocket_ports_come_from_the_query_or_the_request() {
        assert_eq!(
            websocket_ports("ports=80,443", &request(&[])),
            Ok(vec![80, 443])
        );
        assert_eq!(
            websocket_ports("ports=80%2C81", &request(&[])),
            Ok(vec![80, 81])
        );
        assert_eq!(websocket_ports("", &request(&[8080])), Ok(vec![8080]));
        assert!(websocket_ports("", &request(&[])).is_err());
        assert!(websocket_ports("ports=0", &request(&[])).is_err());
        assert!(websocket_ports("ports=70000", &request(&[])).is_err());
        assert!(websocket_ports("ports=x", &request(&[])).is_err());
    }

    #[test]
    fn only_requested_ports_are_forwarded() {
        let err = websocket_ports("ports=22", &request(&[80])).unwrap_err();
        assert!(err.contains("port 22"), "{err}");
        assert!(allowed(80, &request(&[80])).is_ok());
        assert!(allowed(22, &request(&[])).is_ok());
    }
}
