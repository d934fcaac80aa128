//! Exec, Attach and PortForward end to end: the CRI call returns a URL,
//! the test client (e2e/src/streaming.rs) upgrades it to SPDY/3.1 or
//! WebSocket as kubectl and crictl do, and real containers answer.

use std::time::{Duration, Instant};

use crust_e2e::streaming::{
    self, SpdyPortForward, StreamOptions, WS_PORTFORWARD_PROTOCOLS, WsPortForward,
};
use crust_e2e::{CriClient, Crustd, container_config, cri, image_ref, pod_config};

const BUSYBOX: &str = "crust-test/busybox:latest";
const WEB: &str = "crust-test/web:latest";

/// A pod with one long-running busybox container.
async fn sleeper(crustd: &Crustd, name: &str) -> (CriClient, String, String) {
    let mut c = crustd.client().await;
    c.pull(&image_ref(BUSYBOX)).await.unwrap();
    let pod_cfg = pod_config(crustd, name);
    let pod = c.run_pod(&pod_cfg).await;
    let ctr = c
        .run_container(
            &pod,
            &pod_cfg,
            container_config("main", &image_ref(BUSYBOX), &["sleep", "3600"]),
        )
        .await;
    (c, pod, ctr)
}

fn exec_request(ctr: &str, cmd: &[&str], opts: &StreamOptions) -> cri::ExecRequest {
    cri::ExecRequest {
        container_id: ctr.to_string(),
        cmd: cmd.iter().map(|s| s.to_string()).collect(),
        tty: opts.tty,
        stdin: opts.stdin,
        stdout: opts.stdout,
        stderr: opts.stderr,
    }
}

async fn exec_url(c: &mut CriClient, ctr: &str, cmd: &[&str], opts: &StreamOptions) -> String {
    c.runtime
        .exec(exec_request(ctr, cmd, opts))
        .await
        .unwrap()
        .into_inner()
        .url
}

async fn processes(c: &mut CriClient, ctr: &str) -> String {
    let out = c.exec_sync(ctr, &["ps", "-o", "args"], 10).await.unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[tokio::test]
async fn exec_over_spdy_and_websocket_streams_output_and_the_exit_code() {
    let crustd = Crustd::start().await;
    let (mut c, _pod, ctr) = sleeper(&crustd, "exec").await;
    let script = ["sh", "-c", "echo out; echo err >&2; exit 3"];
    let opts = StreamOptions::output();

    let url = exec_url(&mut c, &ctr, &script, &opts).await;
    assert!(url.starts_with("http://127.0.0.1:"), "{url}");
    let out = streaming::spdy_exec(&url, opts, b"").await.unwrap();
    assert_eq!(out.protocol, "v4.channel.k8s.io");
    assert_eq!(out.stdout_str(), "out\n");
    assert_eq!(out.stderr_str(), "err\n");
    assert_eq!(out.exit_code(), Some(3), "{:?}", out.status);

    for protocol in [
        "v5.channel.k8s.io",
        "v4.channel.k8s.io",
        "base64.channel.k8s.io",
    ] {
        let url = exec_url(&mut c, &ctr, &script, &opts).await;
        let out = streaming::ws_exec(&url, opts, &[protocol], b"")
            .await
            .unwrap();
        assert_eq!(out.protocol, protocol);
        assert_eq!(out.stdout_str(), "out\n", "{protocol}");
        assert_eq!(out.stderr_str(), "err\n", "{protocol}");
        if protocol == "base64.channel.k8s.io" {
            // Before v4 the error channel says it in words.
            assert!(out.status.message.contains('3'), "{:?}", out.status);
        } else {
            assert_eq!(out.exit_code(), Some(3), "{protocol}: {:?}", out.status);
        }
    }

    let url = exec_url(&mut c, &ctr, &["true"], &opts).await;
    let out = streaming::spdy_exec(&url, opts, b"").await.unwrap();
    assert!(out.status.success, "{:?}", out.status);
}

#[tokio::test]
async fn exec_feeds_stdin_until_the_client_closes_it() {
    let crustd = Crustd::start().await;
    let (mut c, _pod, ctr) = sleeper(&crustd, "stdin").await;
    let cmd = ["sh", "-c", "tr a-z A-Z; echo done"];
    let opts = StreamOptions::with_stdin();
    let input = vec![b'x'; 200 * 1024];

    let url = exec_url(&mut c, &ctr, &cmd, &opts).await;
    let out = streaming::spdy_exec(&url, opts, &input).await.unwrap();
    assert_eq!(
        out.stdout.len(),
        input.len() + 5,
        "all of stdin came through"
    );
    assert!(out.stdout_str().starts_with("XXXX") && out.stdout_str().ends_with("done\n"));
    assert!(out.status.success, "{:?}", out.status);

    // v5 closes stdin with its close signal.
    let url = exec_url(&mut c, &ctr, &cmd, &opts).await;
    let out = streaming::ws_exec(&url, opts, &["v5.channel.k8s.io"], b"hello")
        .await
        .unwrap();
    assert_eq!(out.stdout_str(), "HELLOdone\n");
}

#[tokio::test]
async fn tty_exec_starts_at_the_clients_size_follows_resizes_and_takes_ctrl_c() {
    let crustd = Crustd::start().await;
    let (mut c, _pod, ctr) = sleeper(&crustd, "tty").await;
    let opts = StreamOptions::tty(100, 40);
    let url = exec_url(&mut c, &ctr, &["sh"], &opts).await;
    let mut session = streaming::spdy_start(&url, opts).await.unwrap();
    let wait = Duration::from_secs(10);

    session.send_stdin("stty size; tty\n").unwrap();
    let seen = session.read_until("/dev/pts/", wait).await.unwrap();
    assert!(seen.contains("40 100"), "{seen}");

    session.resize(120, 50).unwrap();
    session.send_stdin("sleep 0.3; stty size\n").unwrap();
    session.read_until("50 120", wait).await.unwrap();

    // Ctrl-C goes through the terminal to the foreground process.
    session.send_stdin("sleep 300\n").unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    session.send_stdin(b"\x03".to_vec()).unwrap();
    session.send_stdin("echo after-$?\n").unwrap();
    session.read_until("after-130", wait).await.unwrap();

    session.send_stdin("exit 5\n").unwrap();
    let out = session.wait().await.unwrap();
    assert_eq!(out.exit_code(), Some(5), "{:?}", out.status);
    assert!(out.stderr.is_empty(), "a terminal has one output stream");
}

#[tokio::test]
async fn attach_reads_a_containers_output_and_writes_its_stdin() {
    let crustd = Crustd::start().await;
    let mut c = crustd.client().await;
    c.pull(&image_ref(BUSYBOX)).await.unwrap();
    let pod_cfg = pod_config(&crustd, "attach");
    let pod = c.run_pod(&pod_cfg).await;
    let ticker = c
        .run_container(
            &pod,
            &pod_cfg,
            container_config(
                "ticker",
                &image_ref(BUSYBOX),
                &["sh", "-c", "i=0; while true; do i=$((i+1)); echo tick-$i; echo tock-$i >&2; sleep 0.2; done"],
            ),
        )
        .await;
    let attach = |id: &str, opts: &StreamOptions| cri::AttachRequest {
        container_id: id.to_string(),
        stdin: opts.stdin,
        tty: opts.tty,
        stdout: opts.stdout,
        stderr: opts.stderr,
    };
    let opts = StreamOptions::output();
    let url = c
        .runtime
        .attach(attach(&ticker, &opts))
        .await
        .unwrap()
        .into_inner()
        .url;
    let mut session = streaming::spdy_start(&url, opts).await.unwrap();
    session
        .read_until("tick-", Duration::from_secs(10))
        .await
        .unwrap();
    session
        .read_until("tock-", Duration::from_secs(10))
        .await
        .unwrap();
    session.close().await;

    // A container reading stdin, closed after the first attach (stdin_once).
    let mut reader_cfg = container_config(
        "reader",
        &image_ref(BUSYBOX),
        &[
            "sh",
            "-c",
            "while read line; do echo got:$line; done; echo stdin-closed",
        ],
    );
    reader_cfg.stdin = true;
    reader_cfg.stdin_once = true;
    let reader = c.run_container(&pod, &pod_cfg, reader_cfg).await;
    let opts = StreamOptions::with_stdin();
    let url = c
        .runtime
        .attach(attach(&reader, &opts))
        .await
        .unwrap()
        .into_inner()
        .url;
    let mut session = streaming::ws_start(&url, opts, &["v5.channel.k8s.io"])
        .await
        .unwrap();
    session.send_stdin("hello\n").unwrap();
    session
        .read_until("got:hello", Duration::from_secs(10))
        .await
        .unwrap();
    session.send_stdin("again\n").unwrap();
    session
        .read_until("got:again", Duration::from_secs(10))
        .await
        .unwrap();
    session.close_stdin().unwrap();
    session
        .read_until("stdin-closed", Duration::from_secs(10))
        .await
        .unwrap();
    let done = c.wait_exited(&reader, Duration::from_secs(10)).await;
    assert_eq!(done.exit_code, 0);
    let log = std::fs::read_to_string(&done.log_path).unwrap();
    assert!(log.contains("stdout F got:hello"), "{log}");

    // A shell without a log path (critest's attach case): its output is
    // still read for attach clients, partial lines included, at once.
    let mut shell_cfg = container_config("shell", &image_ref(BUSYBOX), &["/bin/sh"]);
    shell_cfg.stdin = true;
    shell_cfg.stdin_once = true;
    shell_cfg.log_path = String::new();
    let shell = c.run_container(&pod, &pod_cfg, shell_cfg).await;
    let opts = StreamOptions::with_stdin();
    let url = c
        .runtime
        .attach(attach(&shell, &opts))
        .await
        .unwrap()
        .into_inner()
        .url;
    let mut session = streaming::spdy_start(&url, opts).await.unwrap();
    session.send_stdin("echo -n no-log-hello\n").unwrap();
    session
        .read_until("no-log-hello", Duration::from_secs(10))
        .await
        .unwrap();
    session.close().await;

    // Attaching to a container that is not running is refused up front.
    let err = c
        .runtime
        .attach(attach(&reader, &StreamOptions::output()))
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::FailedPrecondition, "{err}");
}

#[tokio::test]
async fn port_forward_over_spdy_and_websocket_reaches_the_pods_port() {
    let crustd = Crustd::start().await;
    let mut c = crustd.client().await;
    c.pull(&image_ref(WEB)).await.unwrap();
    let pod_cfg = pod_config(&crustd, "web");
    let pod = c.run_pod(&pod_cfg).await;
    let mut web = container_config("httpd", &image_ref(WEB), &[]);
    web.command.clear();
    c.run_container(&pod, &pod_cfg, web).await;
    let forward_url = |c: &mut CriClient, ports: Vec<i32>| {
        let pod = pod.clone();
        let mut runtime = c.runtime.clone();
        async move {
            runtime
                .port_forward(cri::PortForwardRequest {
                    pod_sandbox_id: pod,
                    port: ports,
                })
                .await
                .map(|r| r.into_inner().url)
        }
    };
    let get = b"GET /index.html HTTP/1.0\r\n\r\n";
    // httpd may still be starting.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let url = forward_url(&mut c, vec![80]).await.unwrap();
        let pf = SpdyPortForward::connect(&url).await.unwrap();
        let reply = pf.open(80).await.unwrap().round_trip(get, false).await;
        pf.close().await;
        if reply.is_ok_and(|r| String::from_utf8_lossy(&r).contains("crust-web-ok")) {
            break;
        }
        assert!(Instant::now() < deadline, "httpd never answered");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // Two connections at once on one SPDY session.
    let url = forward_url(&mut c, vec![80]).await.unwrap();
    let pf = SpdyPortForward::connect(&url).await.unwrap();
    let (a, b) = (pf.open(80).await.unwrap(), pf.open(80).await.unwrap());
    let (a, b) = tokio::join!(a.round_trip(get, false), b.round_trip(get, false));
    for reply in [a.unwrap(), b.unwrap()] {
        let text = String::from_utf8_lossy(&reply);
        assert!(
            text.starts_with("HTTP/1.") && text.contains("crust-web-ok"),
            "{text}"
        );
    }
    // A port the request did not name is refused on the error stream.
    let mut other = pf.open(81).await.unwrap();
    let error = other.error().await.unwrap().unwrap_or_default();
    assert!(error.contains("port 81"), "{error}");
    pf.close().await;

    // The WebSocket channel protocol.
    for protocol in WS_PORTFORWARD_PROTOCOLS {
        let url = forward_url(&mut c, vec![]).await.unwrap();
        let ws = WsPortForward::connect(&url, &[80], &[*protocol])
            .await
            .unwrap();
        let reply = ws.round_trip(get).await.unwrap();
        assert!(
            String::from_utf8_lossy(&reply).contains("crust-web-ok"),
            "{protocol}: {reply:?}"
        );
    }

    let err = forward_url(&mut c, vec![70000]).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument, "{err}");
    let mut runtime = c.runtime.clone();
    let err = runtime
        .port_forward(cri::PortForwardRequest {
            pod_sandbox_id: "0123456789abcdef".into(),
            port: vec![80],
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::NotFound, "{err}");
}

#[tokio::test]
async fn a_used_or_forged_token_is_refused_and_bad_requests_fail_clearly() {
    let crustd = Crustd::start().await;
    let (mut c, _pod, ctr) = sleeper(&crustd, "tokens").await;
    let opts = StreamOptions::output();
    let url = exec_url(&mut c, &ctr, &["true"], &opts).await;
    streaming::spdy_exec(&url, opts, b"").await.unwrap();
    let again = streaming::spdy_exec(&url, opts, b"").await.unwrap_err();
    assert!(again.to_string().contains("404"), "{again}");
    let forged = format!("{}x", &url[..url.len() - 1]);
    let err = streaming::ws_exec(&forged, opts, &["v5.channel.k8s.io"], b"")
        .await
        .unwrap_err();
    assert!(err.to_string().contains("404"), "{err}");

    let code = |r: Result<tonic::Response<cri::ExecResponse>, tonic::Status>| {
        r.map(|_| ()).unwrap_err().code()
    };
    let mut tty_and_stderr = exec_request(&ctr, &["true"], &StreamOptions::tty(80, 24));
    tty_and_stderr.stderr = true;
    assert_eq!(
        code(c.runtime.exec(tty_and_stderr).await),
        tonic::Code::InvalidArgument
    );
    let no_cmd = exec_request(&ctr, &[], &opts);
    assert_eq!(
        code(c.runtime.exec(no_cmd).await),
        tonic::Code::InvalidArgument
    );
    let unknown = exec_request("feedbeef", &["true"], &opts);
    assert_eq!(code(c.runtime.exec(unknown).await), tonic::Code::NotFound);
}

#[tokio::test]
async fn a_client_that_vanishes_leaves_no_process_behind() {
    let crustd = Crustd::start().await;
    let (mut c, _pod, ctr) = sleeper(&crustd, "vanish").await;
    let opts = StreamOptions::with_stdin();
    for transport in ["spdy", "websocket"] {
        let marker = format!("sleep 77{}", transport.len());
        let cmd = ["sh", "-c", &marker];
        let url = exec_url(&mut c, &ctr, &cmd, &opts).await;
        let session = match transport {
            "spdy" => streaming::spdy_start(&url, opts).await.unwrap(),
            _ => streaming::ws_start(&url, opts, &["v5.channel.k8s.io"])
                .await
                .unwrap(),
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while !processes(&mut c, &ctr).await.contains(&marker) {
            assert!(Instant::now() < deadline, "{transport}: exec never started");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        // The client dies: its connection drops without a goodbye.
        drop(session);
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let ps = processes(&mut c, &ctr).await;
            if !ps.contains(&marker) {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "{transport}: still running:\n{ps}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

#[tokio::test]
async fn an_exec_orphaned_by_a_crustd_restart_is_killed_at_start() {
    let mut crustd = Crustd::start().await;
    let (mut c, _pod, ctr) = sleeper(&crustd, "orphan").await;
    let opts = StreamOptions::output();
    let url = exec_url(&mut c, &ctr, &["sleep", "779"], &opts).await;
    let _session = streaming::spdy_start(&url, opts).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while !processes(&mut c, &ctr).await.contains("sleep 779") {
        assert!(Instant::now() < deadline, "exec never started");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    crustd.stop_with(nix::sys::signal::Signal::SIGKILL);
    crustd.spawn(&[]).await;
    let mut c = crustd.client().await;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let ps = processes(&mut c, &ctr).await;
        if !ps.contains("sleep 779") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "orphaned exec still running:\n{ps}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn port_forward_never_reaches_the_host_once_the_pod_stopped() {
    let crustd = Crustd::start().await;
    let (mut c, pod, _ctr) = sleeper(&crustd, "stopped").await;
    // A service on the host's loopback that a pod's forward must not reach.
    let host = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = host.local_addr().unwrap().port();
    let url = c
        .runtime
        .port_forward(cri::PortForwardRequest {
            pod_sandbox_id: pod.clone(),
            port: vec![],
        })
        .await
        .unwrap()
        .into_inner()
        .url;
    let pf = SpdyPortForward::connect(&url).await.unwrap();
    c.runtime
        .stop_pod_sandbox(cri::StopPodSandboxRequest {
            pod_sandbox_id: pod,
        })
        .await
        .unwrap();
    let mut stream = pf.open(port).await.unwrap();
    let error = stream.error().await.unwrap().unwrap_or_default();
    assert!(error.contains("not ready"), "{error}");
    let accepted = tokio::time::timeout(Duration::from_millis(500), host.accept()).await;
    assert!(accepted.is_err(), "the forward reached the host");
}
