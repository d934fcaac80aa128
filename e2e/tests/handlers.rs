//! RuntimeClass handlers backed by other shim v2 runtimes: Debian's
//! containerd-shim-runc-v2 (containerd 1.6, Task API v2 only) with runc,
//! driven through the CRI socket. Each test runs for that handler and for
//! crust-shim named explicitly as a handler, so both take the same path.

use std::path::Path;
use std::time::Duration;

use crust_e2e::{Crustd, CrustdOptions, container_config, cri, image_ref, pod_config};

const BUSYBOX: &str = "crust-test/busybox:latest";
const RUNC_SHIM: &str = "/usr/bin/containerd-shim-runc-v2";
const RUNC: &str = "/usr/sbin/runc";

/// Both handlers, crust-shim's named `crust`.
const HANDLERS: &[&str] = &["runc", "crust"];

fn handler_config() -> String {
    // Debug from container.rs: a failed shim Stats (then read from the
    // cgroup instead) shows in the log.
    format!(
        "runtime:\n  handlers:\n    crust:\n      shim: crust-shim\n    runc:\n      shim: {RUNC_SHIM}\n      options: {{BinaryName: {RUNC}}}\nlog:\n  level: info,crust_runtime::container=debug\n"
    )
}

/// crustd with both handlers, or None (and why, printed) where this host
/// lacks the runc shim or root.
async fn crustd() -> Option<Crustd> {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("SKIPPED: handler tests need root");
        return None;
    }
    for bin in [RUNC_SHIM, RUNC] {
        assert!(
            Path::new(bin).exists(),
            "{bin} is missing: hack/install-deps.sh installs containerd and runc"
        );
    }
    Some(
        Crustd::start_with(CrustdOptions {
            extra_config: handler_config(),
            ..Default::default()
        })
        .await,
    )
}

async fn run_pod(
    c: &mut crust_e2e::CriClient,
    config: &cri::PodSandboxConfig,
    handler: &str,
) -> Result<String, tonic::Status> {
    c.runtime
        .run_pod_sandbox(cri::RunPodSandboxRequest {
            config: Some(config.clone()),
            runtime_handler: handler.to_string(),
        })
        .await
        .map(|r| r.into_inner().pod_sandbox_id)
}

/// The cmdlines of crust-shim log writers still running for this crustd.
fn log_writers_of(crustd: &Crustd) -> Vec<String> {
    let dir = crustd.dir.path().display().to_string();
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        let left: Vec<String> = std::fs::read_dir("/proc")
            .unwrap()
            .flatten()
            .filter_map(|e| std::fs::read(e.path().join("cmdline")).ok())
            .map(|c| String::from_utf8_lossy(&c).replace('\0', " "))
            .filter(|c| c.contains("cri-logger") && c.contains(&dir))
            .collect();
        // They end with the containers' output: give them a moment.
        if left.is_empty() || std::time::Instant::now() > deadline {
            return left;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn log_records(path: &str) -> Vec<(String, String, String)> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|l| {
            let mut parts = l.splitn(4, ' ');
            let ts = parts.next().unwrap().to_string();
            assert!(ts.contains('T') && ts.ends_with('Z'), "timestamp: {l}");
            let stream = parts.next().unwrap().to_string();
            let tag = parts.next().unwrap().to_string();
            let content = parts.next().unwrap_or("").to_string();
            (stream, tag, content)
        })
        .collect()
}

#[tokio::test]
async fn two_containers_log_exec_and_stop_under_each_handler() {
    let Some(crustd) = crustd().await else { return };
    let mut c = crustd.client().await;
    c.pull(&image_ref(BUSYBOX)).await.unwrap();
    for handler in HANDLERS {
        let pod_cfg = pod_config(&crustd, &format!("two-{handler}"));
        let pod = run_pod(&mut c, &pod_cfg, handler).await.unwrap();
        let status = c
            .runtime
            .pod_sandbox_status(cri::PodSandboxStatusRequest {
                pod_sandbox_id: pod.clone(),
                verbose: false,
            })
            .await
            .unwrap()
            .into_inner()
            .status
            .unwrap();
        assert_eq!(status.runtime_handler, *handler);
        let sleeper = c
            .run_container(
                &pod,
                &pod_cfg,
                container_config("sleeper", &image_ref(BUSYBOX), &["sleep", "3600"]),
            )
            .await;
        let long_line = "x".repeat(20 * 1024);
        let script = format!("echo to-stdout; echo to-stderr >&2; echo {long_line}; exit 3");
        let quitter = c
            .run_container(
                &pod,
                &pod_cfg,
                container_config("quitter", &image_ref(BUSYBOX), &["sh", "-c", &script]),
            )
            .await;
        let done = c.wait_exited(&quitter, Duration::from_secs(20)).await;
        assert_eq!(done.exit_code, 3, "{handler}");
        assert_eq!(done.reason, "Error", "{handler}");
        let records = log_records(&done.log_path);
        assert!(
            records.contains(&("stdout".into(), "F".into(), "to-stdout".into())),
            "{handler}: {records:?}"
        );
        assert!(
            records.contains(&("stderr".into(), "F".into(), "to-stderr".into())),
            "{handler}: {records:?}"
        );
        let parts: Vec<_> = records.iter().filter(|r| r.2.starts_with("xxx")).collect();
        assert_eq!(
            parts.len(),
            2,
            "{handler}: the 20 KiB line is a 16 KiB P and an F"
        );
        assert_eq!((parts[0].1.as_str(), parts[0].2.len()), ("P", 16 * 1024));
        assert_eq!((parts[1].1.as_str(), parts[1].2.len()), ("F", 4 * 1024));

        // ExecSync: output, exit code, and a timeout.
        let r = c
            .exec_sync(
                &sleeper,
                &["sh", "-c", "echo out; echo err >&2; exit 7"],
                10,
            )
            .await
            .unwrap();
        assert_eq!(r.exit_code, 7, "{handler}");
        assert_eq!(r.stdout, b"out\n", "{handler}");
        assert_eq!(r.stderr, b"err\n", "{handler}");
        let started = std::time::Instant::now();
        let timed_out = c.exec_sync(&sleeper, &["sleep", "30"], 1).await;
        assert!(started.elapsed() < Duration::from_secs(10), "{handler}");
        match timed_out {
            Err(s) => assert_eq!(s.code(), tonic::Code::DeadlineExceeded, "{handler}: {s:?}"),
            Ok(r) => panic!("{handler}: a 1 s ExecSync of sleep 30 answered {r:?}"),
        }
        // Both containers share the pod's network and IPC namespaces.
        let ns_cmd = ["readlink", "/proc/self/ns/net", "/proc/self/ns/ipc"];
        let a = c.exec_sync(&sleeper, &ns_cmd, 10).await.unwrap().stdout;
        let second = c
            .run_container(
                &pod,
                &pod_cfg,
                container_config("second", &image_ref(BUSYBOX), &["sleep", "3600"]),
            )
            .await;
        let b = c.exec_sync(&second, &ns_cmd, 10).await.unwrap().stdout;
        assert_eq!(a, b, "{handler}: containers of one pod share net and ipc");

        c.runtime
            .stop_container(cri::StopContainerRequest {
                container_id: sleeper.clone(),
                timeout: 2,
            })
            .await
            .unwrap();
        let stopped = c.container_status(&sleeper).await;
        assert_eq!(stopped.state, cri::ContainerState::ContainerExited as i32);
        // The pod init is PID 1 of the shared PID namespace: sleep is not,
        // and SIGTERM ends it.
        assert_eq!(stopped.exit_code, 143, "{handler}");
        c.runtime
            .stop_pod_sandbox(cri::StopPodSandboxRequest {
                pod_sandbox_id: pod.clone(),
            })
            .await
            .unwrap();
        c.remove_pod(&pod).await;
        assert!(c.list_pods().await.iter().all(|p| p.id != pod));
    }
    assert_eq!(crustd.mounts_left(), Vec::<String>::new());
    assert_eq!(
        log_writers_of(&crustd),
        Vec::<String>::new(),
        "log writers left"
    );
}

/// A ready pod under `handler` with a pulled busybox.
async fn pod_under(
    crustd: &Crustd,
    c: &mut crust_e2e::CriClient,
    name: &str,
    handler: &str,
) -> (cri::PodSandboxConfig, String) {
    c.pull(&image_ref(BUSYBOX)).await.unwrap();
    let pod_cfg = pod_config(crustd, &format!("{name}-{handler}"));
    let pod = run_pod(c, &pod_cfg, handler).await.unwrap();
    (pod_cfg, pod)
}

#[tokio::test]
async fn streaming_exec_attach_and_tty_under_each_handler() {
    use crust_e2e::streaming::{self, StreamOptions};
    let Some(crustd) = crustd().await else { return };
    let mut c = crustd.client().await;
    let wait = Duration::from_secs(10);
    for handler in HANDLERS {
        let (pod_cfg, pod) = pod_under(&crustd, &mut c, "stream", handler).await;
        let sleeper = c
            .run_container(
                &pod,
                &pod_cfg,
                container_config("main", &image_ref(BUSYBOX), &["sleep", "3600"]),
            )
            .await;
        let exec = |cmd: &[&str], opts: &StreamOptions| cri::ExecRequest {
            container_id: sleeper.clone(),
            cmd: cmd.iter().map(|s| s.to_string()).collect(),
            tty: opts.tty,
            stdin: opts.stdin,
            stdout: opts.stdout,
            stderr: opts.stderr,
        };
        // Exec: both streams and the exit code, and stdin to EOF.
        let opts = StreamOptions::output();
        let url = c
            .runtime
            .exec(exec(&["sh", "-c", "echo out; echo err >&2; exit 3"], &opts))
            .await
            .unwrap()
            .into_inner()
            .url;
        let out = streaming::spdy_exec(&url, opts, b"").await.unwrap();
        assert_eq!(out.stdout_str(), "out\n", "{handler}");
        assert_eq!(out.stderr_str(), "err\n", "{handler}");
        assert_eq!(out.exit_code(), Some(3), "{handler}: {:?}", out.status);
        let opts = StreamOptions::with_stdin();
        let url = c
            .runtime
            .exec(exec(&["tr", "a-z", "A-Z"], &opts))
            .await
            .unwrap()
            .into_inner()
            .url;
        let out = streaming::spdy_exec(&url, opts, b"hello").await.unwrap();
        assert_eq!(out.stdout_str(), "HELLO", "{handler}");

        // A TTY exec at the client's size, following a resize.
        let opts = StreamOptions::tty(100, 40);
        let url = c
            .runtime
            .exec(exec(&["sh"], &opts))
            .await
            .unwrap()
            .into_inner()
            .url;
        let mut session = streaming::spdy_start(&url, opts).await.unwrap();
        session.send_stdin("stty size; tty\n").unwrap();
        let seen = session.read_until("/dev/pts/", wait).await.unwrap();
        assert!(seen.contains("40 100"), "{handler}: {seen}");
        session.resize(120, 50).unwrap();
        session.send_stdin("sleep 0.3; stty size\n").unwrap();
        session.read_until("50 120", wait).await.unwrap();
        session.send_stdin("exit 5\n").unwrap();
        let out = session.wait().await.unwrap();
        assert_eq!(out.exit_code(), Some(5), "{handler}: {:?}", out.status);

        // Attach: a ticking container's two streams, then one reading stdin.
        let attach = |id: &str, opts: &StreamOptions| cri::AttachRequest {
            container_id: id.to_string(),
            stdin: opts.stdin,
            tty: opts.tty,
            stdout: opts.stdout,
            stderr: opts.stderr,
        };
        let ticker = c
            .run_container(
                &pod,
                &pod_cfg,
                container_config(
                    "ticker",
                    &image_ref(BUSYBOX),
                    &[
                        "sh",
                        "-c",
                        "while true; do echo tick; echo tock >&2; sleep 0.2; done",
                    ],
                ),
            )
            .await;
        let opts = StreamOptions::output();
        let url = c
            .runtime
            .attach(attach(&ticker, &opts))
            .await
            .unwrap()
            .into_inner()
            .url;
        let mut session = streaming::spdy_start(&url, opts).await.unwrap();
        session.read_until("tick", wait).await.unwrap();
        session.read_until("tock", wait).await.unwrap();
        session.close().await;

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
        session.read_until("got:hello", wait).await.unwrap();
        session.close_stdin().unwrap();
        session.read_until("stdin-closed", wait).await.unwrap();
        let done = c.wait_exited(&reader, wait).await;
        assert_eq!(done.exit_code, 0, "{handler}");
        let log = std::fs::read_to_string(&done.log_path).unwrap();
        assert!(log.contains("stdout F got:hello"), "{handler}: {log}");

        // A TTY container: its terminal output reaches the log and attach.
        let mut tty_cfg = container_config(
            "tty",
            &image_ref(BUSYBOX),
            &["sh", "-c", "tty; stty size; sleep 3600"],
        );
        tty_cfg.tty = true;
        tty_cfg.stdin = true;
        let tty = c.run_container(&pod, &pod_cfg, tty_cfg).await;
        let log_path = c.container_status(&tty).await.log_path;
        let deadline = std::time::Instant::now() + wait;
        let log = loop {
            let log = std::fs::read_to_string(&log_path).unwrap_or_default();
            if log.contains("/dev/pts/") || std::time::Instant::now() > deadline {
                break log;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        assert!(log.contains("stdout F /dev/pts/"), "{handler}: {log}");
        c.runtime
            .stop_pod_sandbox(cri::StopPodSandboxRequest {
                pod_sandbox_id: pod.clone(),
            })
            .await
            .unwrap();
        c.remove_pod(&pod).await;
    }
}

#[tokio::test]
async fn reopen_log_stats_oom_and_update_under_each_handler() {
    let Some(crustd) = crustd().await else { return };
    let mut c = crustd.client().await;
    for handler in HANDLERS {
        let (pod_cfg, pod) = pod_under(&crustd, &mut c, "logs", handler).await;
        let ticker = c
            .run_container(
                &pod,
                &pod_cfg,
                container_config(
                    "ticker",
                    &image_ref(BUSYBOX),
                    &[
                        "sh",
                        "-c",
                        "i=0; while true; do i=$((i+1)); echo tick-$i; sleep 0.1; done",
                    ],
                ),
            )
            .await;
        let log_path = c.container_status(&ticker).await.log_path;
        tokio::time::sleep(Duration::from_millis(500)).await;
        // kubelet's rotation: rename, then ReopenContainerLog.
        let rotated = format!("{log_path}.1");
        std::fs::rename(&log_path, &rotated).unwrap();
        c.runtime
            .reopen_container_log(cri::ReopenContainerLogRequest {
                container_id: ticker.clone(),
            })
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(500)).await;
        let old = std::fs::read_to_string(&rotated).unwrap();
        let new = std::fs::read_to_string(&log_path).unwrap();
        assert!(old.contains("tick-1\n"), "{handler}: {old}");
        assert!(new.contains(" stdout F tick-"), "{handler}: {new}");
        assert!(
            !new.contains(" tick-1\n"),
            "{handler}: the new file starts after the rename"
        );

        // Stats from the container's cgroup.
        let stats = c
            .runtime
            .container_stats(cri::ContainerStatsRequest {
                container_id: ticker.clone(),
            })
            .await
            .unwrap()
            .into_inner()
            .stats
            .unwrap();
        let cpu = stats.cpu.unwrap();
        assert!(cpu.usage_core_nano_seconds.unwrap().value > 0, "{handler}");
        let memory = stats.memory.unwrap();
        assert!(memory.working_set_bytes.unwrap().value > 0, "{handler}");
        // Under runc they came from the shim's Stats (cgroup metrics).
        assert!(
            !crustd.log().contains("shim Stats failed"),
            "{handler}: {}",
            crustd.log()
        );

        // An OOM kill is reported as such.
        let mut hog_cfg = container_config(
            "hog",
            &image_ref(BUSYBOX),
            &["sh", "-c", "head -c 256m /dev/zero | tail"],
        );
        hog_cfg.linux = Some(cri::LinuxContainerConfig {
            resources: Some(cri::LinuxContainerResources {
                memory_limit_in_bytes: 32 << 20,
                ..Default::default()
            }),
            ..Default::default()
        });
        let hog = c.run_container(&pod, &pod_cfg, hog_cfg).await;
        let hog_status = c.wait_exited(&hog, Duration::from_secs(30)).await;
        assert_eq!(
            (hog_status.reason.as_str(), hog_status.exit_code),
            ("OOMKilled", 137),
            "{handler}"
        );

        // UpdateContainerResources through the shim lands in the cgroup.
        c.runtime
            .update_container_resources(cri::UpdateContainerResourcesRequest {
                container_id: ticker.clone(),
                linux: Some(cri::LinuxContainerResources {
                    memory_limit_in_bytes: 64 << 20,
                    cpu_shares: 512,
                    ..Default::default()
                }),
                ..Default::default()
            })
            .await
            .unwrap();
        let r = c
            .exec_sync(
                &ticker,
                &["sh", "-c", "cat /sys/fs/cgroup/memory/memory.limit_in_bytes 2>/dev/null || cat /sys/fs/cgroup/memory.max"],
                10,
            )
            .await
            .unwrap();
        assert_eq!(
            String::from_utf8_lossy(&r.stdout).trim(),
            (64u64 << 20).to_string(),
            "{handler}"
        );
        c.runtime
            .stop_pod_sandbox(cri::StopPodSandboxRequest {
                pod_sandbox_id: pod.clone(),
            })
            .await
            .unwrap();
        c.remove_pod(&pod).await;
    }
}

#[tokio::test]
async fn a_running_container_survives_a_crustd_kill_and_its_later_exit_is_recorded() {
    let Some(mut crustd) = crustd().await else {
        return;
    };
    let mut c = crustd.client().await;
    let mut running = Vec::new();
    for handler in HANDLERS {
        let (pod_cfg, pod) = pod_under(&crustd, &mut c, "restart", handler).await;
        // Exits once told to, through a file in a host dir it binds.
        let flag_dir = crustd.dir.path().join(format!("flag-{handler}"));
        std::fs::create_dir_all(&flag_dir).unwrap();
        let mut cfg = container_config(
            "waiter",
            &image_ref(BUSYBOX),
            &[
                "sh",
                "-c",
                "while [ ! -e /flag/go ]; do sleep 0.1; done; echo bye; exit 9",
            ],
        );
        cfg.mounts.push(cri::Mount {
            container_path: "/flag".into(),
            host_path: flag_dir.display().to_string(),
            ..Default::default()
        });
        let waiter = c.run_container(&pod, &pod_cfg, cfg).await;
        running.push((*handler, pod, waiter, flag_dir));
    }
    assert_eq!(crustd.stop_with(nix::sys::signal::Signal::SIGKILL), None);
    // While crustd is down, one container exits; the other keeps running.
    std::fs::write(running[0].3.join("go"), "").unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    crustd.spawn(&[]).await;
    let mut c = crustd.client().await;
    let (handler, _, exited_id, _) = &running[0];
    let done = c.wait_exited(exited_id, Duration::from_secs(10)).await;
    assert_eq!(
        done.exit_code, 9,
        "{handler}: the exit missed while down is recorded"
    );
    // Its log writer kept writing while crustd was down.
    let log = std::fs::read_to_string(&done.log_path).unwrap();
    assert!(log.contains("stdout F bye"), "{handler}: {log}");
    let (handler, _, alive_id, flag_dir) = &running[1];
    let alive = c.container_status(alive_id).await;
    assert_eq!(
        alive.state,
        cri::ContainerState::ContainerRunning as i32,
        "{handler}"
    );
    // Exec and a later exit still work through the reconnected shim.
    let r = c
        .exec_sync(alive_id, &["echo", "still-here"], 10)
        .await
        .unwrap();
    assert_eq!(r.stdout, b"still-here\n", "{handler}");
    std::fs::write(flag_dir.join("go"), "").unwrap();
    let done = c.wait_exited(alive_id, Duration::from_secs(10)).await;
    assert_eq!(done.exit_code, 9, "{handler}");
    let log = std::fs::read_to_string(&done.log_path).unwrap();
    assert!(log.contains("stdout F bye"), "{handler}: {log}");
    for (_, pod, _, _) in &running {
        c.runtime
            .stop_pod_sandbox(cri::StopPodSandboxRequest {
                pod_sandbox_id: pod.clone(),
            })
            .await
            .unwrap();
        c.remove_pod(pod).await;
    }
    assert_eq!(crustd.mounts_left(), Vec::<String>::new());
}

#[tokio::test]
async fn status_reports_each_handlers_features_and_refuses_what_runc_lacks() {
    let Some(crustd) = crustd().await else { return };
    let mut c = crustd.client().await;
    let status = c
        .runtime
        .status(cri::StatusRequest { verbose: false })
        .await
        .unwrap()
        .into_inner();
    let features = |name: &str| {
        status
            .runtime_handlers
            .iter()
            .find(|h| h.name == name)
            .and_then(|h| h.features)
            .unwrap_or_else(|| panic!("no handler {name:?} in {:?}", status.runtime_handlers))
    };
    let runc = features("runc");
    assert!(
        !runc.user_namespaces && !runc.recursive_read_only_mounts,
        "{runc:?}"
    );
    // crust-shim claims them where this kernel allows (the crust suites
    // test them); a handler named for it reports the same as the default.
    assert_eq!(features("crust"), features(""));

    // A pod with its own user namespace is refused under runc, up front.
    let mut pod_cfg = pod_config(&crustd, "userns-runc");
    pod_cfg
        .linux
        .get_or_insert_with(Default::default)
        .security_context = Some(cri::LinuxSandboxSecurityContext {
        namespace_options: Some(cri::NamespaceOption {
            userns_options: Some(cri::UserNamespace {
                mode: cri::NamespaceMode::Pod as i32,
                uids: vec![cri::IdMapping {
                    host_id: 100000,
                    container_id: 0,
                    length: 65536,
                }],
                gids: vec![cri::IdMapping {
                    host_id: 100000,
                    container_id: 0,
                    length: 65536,
                }],
            }),
            ..Default::default()
        }),
        ..Default::default()
    });
    let err = run_pod(&mut c, &pod_cfg, "runc").await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::FailedPrecondition, "{err}");
    assert!(err.message().contains("user namespace"), "{err}");
    assert!(
        c.list_pods().await.is_empty(),
        "nothing is left of the refused pod"
    );

    // A recursive read-only mount is refused under runc.
    let (pod_cfg, pod) = pod_under(&crustd, &mut c, "rro", "runc").await;
    let mut cfg = container_config("rro", &image_ref(BUSYBOX), &["sleep", "3600"]);
    cfg.mounts.push(cri::Mount {
        container_path: "/host-tmp".into(),
        host_path: crustd.dir.path().display().to_string(),
        readonly: true,
        recursive_read_only: true,
        ..Default::default()
    });
    let err = c.create_container(&pod, &pod_cfg, cfg).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::FailedPrecondition, "{err}");
    assert!(err.message().contains("read-only recursively"), "{err}");

    // An unknown handler is named in the error, with the known ones.
    let err = run_pod(&mut c, &pod_config(&crustd, "nope"), "kata")
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument, "{err}");
    assert!(err.message().contains("crust, runc"), "{err}");
    c.remove_pod(&pod).await;
}

#[tokio::test]
async fn an_unknown_runc_option_is_a_config_error_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config.yaml");
    std::fs::write(
        &config,
        format!("runtime:\n  handlers:\n    runc:\n      shim: {RUNC_SHIM}\n      options: {{BinaryNmae: {RUNC}}}\n"),
    )
    .unwrap();
    let (code, output) =
        crust_e2e::run_crustd(&["--config", config.to_str().unwrap(), "config", "check"]);
    assert_ne!(code, Some(0), "{output}");
    assert!(
        output.contains("runtime.handlers.runc.options") && output.contains("\"BinaryNmae\""),
        "{output}"
    );
}
