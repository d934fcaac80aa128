//! The streaming server over real sockets with a scripted backend: URLs,
//! tokens, the WebSocket remotecommand and portforward protocols. The
//! runtime side (real containers, SPDY clients) is tested in e2e/.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use crust_cri_api::v1 as cri;
use crust_stream::{Backend, BoxFuture, ProcessIo, StreamServer};
use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

/// Exec: echoes stdin to stdout in upper case (as it comes for the command
/// "echo", at its end otherwise), writes "err" to stderr,
/// exits with the number given as the command's first word; with a TTY it
/// prints the first terminal size instead.
#[derive(Default)]
struct Scripted {
    echo_port: Mutex<u16>,
}

impl Backend for Scripted {
    fn exec(&self, request: cri::ExecRequest, io: ProcessIo) -> BoxFuture<Result<i32, String>> {
        let code: i32 = request.cmd[0].parse().unwrap_or(0);
        let hang = request.cmd[0] == "hang";
        let echo = request.cmd[0] == "echo";
        Box::pin(async move {
            if hang {
                std::future::pending::<()>().await;
            }
            if echo {
                // Upper-cases stdin to stdout as it comes, until stdin ends.
                let (Some(mut input), Some(mut out)) = (io.stdin, io.stdout) else {
                    return Ok(1);
                };
                let mut buf = [0u8; 1024];
                while let Ok(n) = input.read(&mut buf).await
                    && n > 0
                {
                    out.write_all(&buf[..n].to_ascii_uppercase()).await.unwrap();
                    out.flush().await.unwrap();
                }
                return Ok(0);
            }
            let ProcessIo {
                stdin,
                stdout,
                stderr,
                resize,
                ..
            } = io;
            if let Some(mut sizes) = resize {
                let first = match tokio::time::timeout(
                    Duration::from_secs(5),
                    sizes.wait_for(Option::is_some),
                )
                .await
                {
                    Ok(Ok(size)) => *size,
                    _ => None,
                };
                if let Some(s) = first {
                    if let Some(mut out) = stdout {
                        let line = format!("{}x{}\n", s.width, s.height);
                        out.write_all(line.as_bytes()).await.unwrap();
                    }
                    return Ok(code);
                }
            }
            if let Some(mut err) = stderr {
                err.write_all(b"err").await.unwrap();
            }
            if let (Some(mut input), Some(mut out)) = (stdin, stdout) {
                let mut all = Vec::new();
                input.read_to_end(&mut all).await.unwrap();
                out.write_all(&all.to_ascii_uppercase()).await.unwrap();
            }
            Ok(code)
        })
    }

    fn attach(&self, _: cri::AttachRequest, _: ProcessIo) -> BoxFuture<Result<(), String>> {
        Box::pin(async { Err("no attach here".into()) })
    }

    fn port_forward(&self, _pod: String, port: u16) -> BoxFuture<Result<TcpStream, String>> {
        let echo = *self.echo_port.lock().unwrap();
        Box::pin(async move {
            if port != 80 {
                return Err(format!("nothing listens on {port}"));
            }
            TcpStream::connect(("127.0.0.1", echo))
                .await
                .map_err(|e| e.to_string())
        })
    }
}

async fn start() -> StreamServer {
    start_with_idle_timeout(Duration::from_secs(60)).await
}

async fn start_with_idle_timeout(idle_timeout: Duration) -> StreamServer {
    start_with(idle_timeout, crust_stream::Limits::default()).await
}

async fn start_with(idle_timeout: Duration, limits: crust_stream::Limits) -> StreamServer {
    let backend = Arc::new(Scripted::default());
    // A TCP echo server standing in for a pod's port 80.
    let echo = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    *backend.echo_port.lock().unwrap() = echo.local_addr().unwrap().port();
    tokio::spawn(async move {
        loop {
            let (mut conn, _) = echo.accept().await.unwrap();
            tokio::spawn(async move {
                let (mut r, mut w) = conn.split();
                let _ = tokio::io::copy(&mut r, &mut w).await;
            });
        }
    });
    let (server, serve) = StreamServer::bind(
        crust_stream::Options {
            address: "127.0.0.1:0".into(),
            tls: None,
            idle_timeout,
            limits,
        },
        backend,
        std::future::pending(),
    )
    .unwrap();
    tokio::spawn(serve);
    server
}

type Ws = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<TcpStream>>;

async fn connect(url: &str, protocol: &str) -> Result<Ws, tokio_tungstenite::tungstenite::Error> {
    let mut request = url
        .replace("http://", "ws://")
        .into_client_request()
        .unwrap();
    request
        .headers_mut()
        .insert("sec-websocket-protocol", protocol.parse().unwrap());
    tokio_tungstenite::connect_async(request)
        .await
        .map(|(ws, _)| ws)
}

/// Reads messages until the server closes: bytes per channel.
async fn collect(ws: &mut Ws) -> [Vec<u8>; 5] {
    let mut out: [Vec<u8>; 5] = Default::default();
    while let Some(Ok(m)) = ws.next().await {
        if let Message::Binary(b) = m
            && let Some((&ch, data)) = b.split_first()
        {
            out[usize::from(ch)].extend_from_slice(data);
        }
    }
    out
}

fn exec_request(cmd: &str, stdin: bool, tty: bool) -> cri::ExecRequest {
    cri::ExecRequest {
        container_id: "c".into(),
        cmd: vec![cmd.into()],
        tty,
        stdin,
        stdout: true,
        stderr: !tty,
    }
}

#[tokio::test]
async fn v5_exec_streams_stdio_and_reports_the_exit_code() {
    let server = start().await;
    let url = server.exec_url(exec_request("3", true, false)).unwrap();
    assert!(url.starts_with(server.base_url()) && url.contains("/exec/"));
    let mut ws = connect(&url, "v5.channel.k8s.io").await.unwrap();
    ws.send(Message::Binary(b"\x00hello".to_vec().into()))
        .await
        .unwrap();
    // v5 close signal for stdin.
    ws.send(Message::Binary(vec![255, 0].into())).await.unwrap();
    let out = collect(&mut ws).await;
    assert_eq!(out[1], b"HELLO");
    assert_eq!(out[2], b"err");
    let status: serde_json::Value = serde_json::from_slice(&out[3]).unwrap();
    assert_eq!(status["reason"], "NonZeroExitCode", "{status}");
    assert_eq!(status["details"]["causes"][0]["message"], "3");
}

#[tokio::test]
async fn a_token_is_single_use() {
    let server = start().await;
    let url = server.exec_url(exec_request("0", false, false)).unwrap();
    let mut ws = connect(&url, "v4.channel.k8s.io").await.unwrap();
    let out = collect(&mut ws).await;
    assert_eq!(
        serde_json::from_slice::<serde_json::Value>(&out[3]).unwrap()["status"],
        "Success"
    );
    let again = connect(&url, "v4.channel.k8s.io").await.unwrap_err();
    assert!(again.to_string().contains("404"), "{again}");
    let forged = url.replace("/exec/", "/attach/");
    assert!(connect(&forged, "v4.channel.k8s.io").await.is_err());
}

#[tokio::test]
async fn an_unknown_protocol_is_refused_before_the_upgrade() {
    let server = start().await;
    let url = server.exec_url(exec_request("0", false, false)).unwrap();
    let err = connect(&url, "v9.channel.k8s.io").await.unwrap_err();
    assert!(err.to_string().contains("403"), "{err}");
}

#[tokio::test]
async fn resize_reaches_the_backend_and_base64_framing_works() {
    let server = start().await;
    let url = server.exec_url(exec_request("0", true, true)).unwrap();
    let mut ws = connect(&url, "base64.channel.k8s.io").await.unwrap();
    use base64::Engine;
    let resize = base64::engine::general_purpose::STANDARD.encode(br#"{"Width":120,"Height":33}"#);
    ws.send(Message::Text(format!("4{resize}").into()))
        .await
        .unwrap();
    let mut stdout = Vec::new();
    while let Some(Ok(m)) = ws.next().await {
        if let Message::Text(t) = m
            && let Some(rest) = t.strip_prefix('1')
        {
            stdout.extend(
                base64::engine::general_purpose::STANDARD
                    .decode(rest)
                    .unwrap(),
            );
        }
    }
    assert_eq!(stdout, b"120x33\n");
}

#[tokio::test]
async fn websocket_port_forward_carries_bytes_and_errors() {
    let server = start().await;
    let request = cri::PortForwardRequest {
        pod_sandbox_id: "p".into(),
        port: vec![],
    };
    let url = server.port_forward_url(request.clone()).unwrap();
    let mut ws = connect(&format!("{url}?ports=80,81"), "v4.channel.k8s.io")
        .await
        .unwrap();
    // Each channel opens with its port, little-endian.
    let mut seen = Vec::new();
    for _ in 0..4 {
        let Some(Ok(Message::Binary(b))) = ws.next().await else {
            panic!("no port announcement")
        };
        seen.push(b.to_vec());
    }
    assert!(
        seen.contains(&vec![0, 80, 0]) && seen.contains(&vec![3, 81, 0]),
        "{seen:?}"
    );
    ws.send(Message::Binary(b"\x00ping".to_vec().into()))
        .await
        .unwrap();
    let (mut echoed, mut error) = (Vec::new(), Vec::new());
    while echoed.len() < 4 || error.is_empty() {
        let Some(Ok(Message::Binary(b))) = ws.next().await else {
            break;
        };
        match b[0] {
            0 => echoed.extend_from_slice(&b[1..]),
            3 => error.extend_from_slice(&b[1..]),
            _ => {}
        }
    }
    assert_eq!(echoed, b"ping");
    assert!(String::from_utf8_lossy(&error).contains("nothing listens on 81"));

    let url = server.port_forward_url(request).unwrap();
    let err = connect(&format!("{url}?ports=0"), "v4.channel.k8s.io")
        .await
        .unwrap_err();
    assert!(err.to_string().contains("400"), "{err}");
}

#[tokio::test]
async fn tls_serves_https_urls_with_the_configured_certificate() {
    use tokio_rustls::rustls;
    let dir = tempfile::tempdir().unwrap();
    let cert = rcgen::generate_simple_self_signed(vec!["127.0.0.1".into()]).unwrap();
    let (cert_path, key_path) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    std::fs::write(&cert_path, cert.cert.pem()).unwrap();
    std::fs::write(&key_path, cert.signing_key.serialize_pem()).unwrap();
    let (server, serve) = StreamServer::bind(
        crust_stream::Options {
            address: "127.0.0.1:0".into(),
            tls: Some((cert_path, key_path)),
            idle_timeout: Duration::from_secs(60),
            limits: Default::default(),
        },
        Arc::new(Scripted::default()),
        std::future::pending(),
    )
    .unwrap();
    tokio::spawn(serve);
    let url = server.exec_url(exec_request("0", false, false)).unwrap();
    assert!(url.starts_with("https://127.0.0.1:"), "{url}");

    let mut roots = rustls::RootCertStore::empty();
    roots.add(cert.cert.der().clone()).unwrap();
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let addr = url
        .trim_start_matches("https://")
        .split('/')
        .next()
        .unwrap();
    let tcp = TcpStream::connect(addr).await.unwrap();
    let name = rustls::pki_types::ServerName::try_from("127.0.0.1").unwrap();
    let mut tls = connector.connect(name, tcp).await.unwrap();
    let path = &url[url.find("/exec/").unwrap()..];
    let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    tls.write_all(request.as_bytes()).await.unwrap();
    let mut reply = Vec::new();
    let _ = tls.read_to_end(&mut reply).await;
    let reply = String::from_utf8_lossy(&reply);
    // The token is good, but a plain GET is not an upgrade.
    assert!(reply.starts_with("HTTP/1.1 400"), "{reply}");
    assert!(reply.contains("SPDY/3.1 or websocket"), "{reply}");
}

#[tokio::test]
async fn an_idle_session_is_closed_and_its_work_dropped() {
    let server = start_with_idle_timeout(Duration::from_secs(1)).await;
    let url = server.exec_url(exec_request("hang", false, false)).unwrap();
    let started = std::time::Instant::now();
    let mut ws = connect(&url, "v5.channel.k8s.io").await.unwrap();
    let out = collect(&mut ws).await;
    let waited = started.elapsed();
    assert!(waited >= Duration::from_secs(1), "closed after {waited:?}");
    assert!(waited < Duration::from_secs(10), "closed after {waited:?}");
    assert!(out[3].is_empty(), "no status: nobody finished the command");
}

/// Upgrades to SPDY offering one protocol, as old clients do, and runs
/// an exec with stdout and stderr: (chosen protocol, stdout, error stream).
async fn old_spdy_exec(url: &str, protocol: &str) -> (String, Vec<u8>, Vec<u8>) {
    let rest = url.trim_start_matches("http://");
    let (addr, path) = rest.split_at(rest.find('/').unwrap());
    let mut tcp = TcpStream::connect(addr).await.unwrap();
    let request = format!(
        "POST {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: Upgrade\r\nUpgrade: SPDY/3.1\r\n\
         X-Stream-Protocol-Version: {protocol}\r\nContent-Length: 0\r\n\r\n"
    );
    tcp.write_all(request.as_bytes()).await.unwrap();
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        let mut byte = [0u8; 1];
        tcp.read_exact(&mut byte).await.unwrap();
        head.push(byte[0]);
    }
    let head = String::from_utf8(head).unwrap();
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    let chosen = head
        .lines()
        .find_map(|l| {
            l.to_ascii_lowercase()
                .strip_prefix("x-stream-protocol-version: ")
                .map(str::to_owned)
        })
        .unwrap_or_default();
    let (session, _) = crust_spdy::Session::new(tcp, crust_spdy::Role::Client, Default::default());
    let open = |kind: &str| {
        let session = session.clone();
        let headers = vec![("streamtype".to_string(), kind.to_string())];
        async move { session.open_stream(headers).await.unwrap() }
    };
    let error = open("error").await;
    let stdout = open("stdout").await;
    let stderr = open("stderr").await;
    let (mut out, mut err) = (Vec::new(), Vec::new());
    let (mut stdout, _) = stdout.split();
    let (mut error, _) = error.split();
    let (_stderr_reader, _) = stderr.split();
    let _ = tokio::join!(stdout.read_to_end(&mut out), error.read_to_end(&mut err));
    (chosen, out, err)
}

#[tokio::test]
async fn older_spdy_protocols_get_a_text_error_and_nothing_on_success() {
    let server = start().await;
    for protocol in ["v3.channel.k8s.io", "v2.channel.k8s.io", "channel.k8s.io"] {
        let url = server.exec_url(exec_request("3", false, false)).unwrap();
        let (chosen, _, error) = old_spdy_exec(&url, protocol).await;
        assert_eq!(chosen, protocol);
        assert_eq!(
            String::from_utf8_lossy(&error),
            "command terminated with non-zero exit code: 3"
        );
        let url = server.exec_url(exec_request("0", false, false)).unwrap();
        let (_, _, error) = old_spdy_exec(&url, protocol).await;
        assert!(error.is_empty(), "{protocol}: {error:?}");
    }
}

/// Generous: the assertions are that things happen, not how fast.
const BOUND: Duration = Duration::from_secs(10);

fn limits(max_unauthenticated: usize, header_read_timeout: Duration) -> crust_stream::Limits {
    crust_stream::Limits {
        max_unauthenticated,
        header_read_timeout,
        upgrade_deadline: Duration::from_secs(60),
    }
}

fn address(server: &StreamServer) -> std::net::SocketAddr {
    server
        .base_url()
        .trim_start_matches("http://")
        .parse()
        .unwrap()
}

/// Reads until the server closes; panics if it does not within BOUND.
async fn read_until_closed(stream: &mut TcpStream) {
    tokio::time::timeout(BOUND, async {
        let mut buf = [0u8; 4096];
        while let Ok(n) = stream.read(&mut buf).await
            && n > 0
        {}
    })
    .await
    .expect("the server did not close the connection");
}

/// An exec whose stdin is echoed upper case: the session works.
async fn echo_session(server: &StreamServer) -> Ws {
    let url = server.exec_url(exec_request("echo", true, false)).unwrap();
    let mut ws = tokio::time::timeout(BOUND, connect(&url, "v5.channel.k8s.io"))
        .await
        .expect("no answer to a real exec")
        .unwrap();
    ws.send(Message::Binary(b"\x00hi".to_vec().into()))
        .await
        .unwrap();
    loop {
        match tokio::time::timeout(BOUND, ws.next()).await.unwrap() {
            Some(Ok(Message::Binary(b))) if b.first() == Some(&1) && b.len() > 1 => {
                assert_eq!(&b[1..], b"HI");
                return ws;
            }
            Some(Ok(_)) => {}
            other => panic!("session ended: {other:?}"),
        }
    }
}

#[tokio::test]
async fn a_half_sent_request_is_disconnected_after_the_header_timeout() {
    let server = start_with(
        Duration::from_secs(60),
        limits(8, Duration::from_millis(500)),
    )
    .await;
    let url = server.exec_url(exec_request("0", false, false)).unwrap();
    let path = url.trim_start_matches(server.base_url());
    let mut s = TcpStream::connect(address(&server)).await.unwrap();
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\n").as_bytes())
        .await
        .unwrap();
    read_until_closed(&mut s).await;
}

#[tokio::test]
async fn a_tls_handshake_never_finished_is_disconnected() {
    let dir = tempfile::tempdir().unwrap();
    let cert = rcgen::generate_simple_self_signed(vec!["127.0.0.1".into()]).unwrap();
    let (cert_path, key_path) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    std::fs::write(&cert_path, cert.cert.pem()).unwrap();
    std::fs::write(&key_path, cert.signing_key.serialize_pem()).unwrap();
    let (server, serve) = StreamServer::bind(
        crust_stream::Options {
            address: "127.0.0.1:0".into(),
            tls: Some((cert_path, key_path)),
            idle_timeout: Duration::from_secs(60),
            limits: limits(8, Duration::from_millis(500)),
        },
        Arc::new(Scripted::default()),
        std::future::pending(),
    )
    .unwrap();
    tokio::spawn(serve);
    let addr = server.base_url().trim_start_matches("https://");
    let mut s = TcpStream::connect(addr).await.unwrap();
    // The start of a TLS record header, then nothing.
    s.write_all(&[0x16, 0x03, 0x01]).await.unwrap();
    read_until_closed(&mut s).await;
}

#[tokio::test]
async fn unauthenticated_connections_over_the_cap_wait_in_the_backlog() {
    const CAP: usize = 4;
    let server = start_with(Duration::from_secs(60), limits(CAP, BOUND * 6)).await;
    let addr = address(&server);
    let mut idle = Vec::new();
    for _ in 0..CAP + 50 {
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(b"GET /exec/x HTTP/1.1\r\n").await.unwrap();
        idle.push(s);
    }
    // Those the server accepted leave the kernel's queue; the rest stay.
    let deadline = tokio::time::Instant::now() + BOUND;
    let mut queued = usize::MAX;
    while tokio::time::Instant::now() < deadline {
        queued = crust_metrics::accept::backlog(addr).unwrap();
        if queued <= 50 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let queued = queued.min(crust_metrics::accept::backlog(addr).unwrap());
    assert_eq!(
        queued,
        50,
        "the server holds {} connections",
        CAP + 50 - queued
    );
    drop(idle);
    echo_session(&server).await;
}

#[tokio::test]
async fn upgraded_sessions_leave_the_unauthenticated_cap() {
    const CAP: usize = 2;
    let server = start_with(
        Duration::from_secs(60),
        crust_stream::Limits {
            max_unauthenticated: CAP,
            header_read_timeout: BOUND,
            // Sessions outlive it: it ends only connections not upgraded.
            upgrade_deadline: Duration::from_millis(500),
        },
    )
    .await;
    let mut sessions = Vec::new();
    for _ in 0..CAP * 3 {
        sessions.push(echo_session(&server).await);
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    for ws in &mut sessions {
        ws.send(Message::Binary(b"\x00still".to_vec().into()))
            .await
            .unwrap();
        let got = loop {
            match tokio::time::timeout(BOUND, ws.next()).await.unwrap() {
                Some(Ok(Message::Binary(b))) if b.first() == Some(&1) && b.len() > 1 => break b,
                Some(Ok(_)) => {}
                other => panic!("session ended at the upgrade deadline: {other:?}"),
            }
        };
        assert_eq!(&got[1..], b"STILL");
    }
}
