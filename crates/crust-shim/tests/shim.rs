//! End-to-end tests of crust-shim: the real binary, started as crustd
//! starts it, driven over ttrpc, running busybox containers with real
//! namespaces and cgroups. Run as root (they skip otherwise).

mod common;

use std::fs;
use std::io::Write;
use std::path::Path;
use std::time::Duration;

use common::*;
use containerd_shim_protos::api::{
    CloseIORequest, ExecProcessRequest, PidsRequest, ResizePtyRequest, StatsRequest,
    UpdateTaskRequest, WaitRequest,
};
use containerd_shim_protos::events::task::{
    TaskCreate, TaskDelete, TaskExecAdded, TaskExecStarted, TaskExit, TaskOOM, TaskStart,
};
use containerd_shim_protos::protobuf::well_known_types::any::Any;
use containerd_shim_protos::ttrpc::{self, Code};
use containerd_shim_protos::types::task::Status;
use serde_json::json;

const SIGTERM: u32 = 15;
const SIGKILL: u32 = 9;

fn code(r: ttrpc::Result<impl std::fmt::Debug>) -> Code {
    match r {
        Err(ttrpc::Error::RpcStatus(s)) => s.code(),
        other => panic!("expected an RPC error, got {other:?}"),
    }
}

fn exec_spec(args: &[&str], terminal: bool) -> Any {
    let process = json!({
        "terminal": terminal,
        "user": {"uid": 0, "gid": 0},
        "args": args,
        "env": ["PATH=/bin", "TERM=xterm"],
        "cwd": "/",
    });
    Any {
        type_url: "types.containerd.io/opencontainers/runtime-spec/1/Process".into(),
        value: serde_json::to_vec(&process).unwrap(),
        ..Default::default()
    }
}

fn exec(h: &Harness, id: &str, exec_id: &str, spec: Any, stdio: [&Path; 3], terminal: bool) {
    let name = |p: &Path| p.to_str().unwrap_or_default().to_owned();
    let req = ExecProcessRequest {
        id: id.into(),
        exec_id: exec_id.into(),
        terminal,
        stdin: name(stdio[0]),
        stdout: name(stdio[1]),
        stderr: name(stdio[2]),
        spec: Some(spec).into(),
        ..Default::default()
    };
    h.client.exec(ctx(), &req).unwrap();
}

/// A container writes both streams and a line over 16 KiB, exits 3: Wait,
/// State, Delete and the events report it; the log has CRI records.
#[test]
fn logs_exit_code_and_events() {
    if !root_or_skip("logs_exit_code_and_events") {
        return;
    }
    let h = Harness::new("logs");
    let script =
        "echo out; echo err >&2; head -c 17000 /dev/zero | tr '\\0' x; echo; printf tail; exit 3";
    let bundle = h.bundle("c1", &["sh", "-c", script], |_| {});
    let log = h.dir.path().join("c1.log");
    let pid = h.create("c1", &bundle, &format!("crilog://{}", log.display()));
    assert!(pid > 0);
    assert_eq!(
        h.state("c1", "").unwrap().status.enum_value(),
        Ok(Status::CREATED)
    );
    assert!(
        h.cgroup_dir("memory", "c1").is_dir(),
        "container cgroup under the test parent"
    );
    assert_eq!(h.start("c1", ""), pid);
    assert_eq!(h.wait("c1", ""), 3);

    let st = h.state("c1", "").unwrap();
    assert_eq!(st.status.enum_value(), Ok(Status::STOPPED));
    assert_eq!((st.exit_status, st.pid), (3, pid));
    assert!(st.exited_at.seconds > 0);

    let records = cri_records(&fs::read_to_string(&log).unwrap());
    let has = |s: &str, t: &str, c: &str| records.iter().any(|r| r.0 == s && r.1 == t && r.2 == c);
    assert!(has("stdout", "F", "out"), "{records:?}");
    assert!(has("stderr", "F", "err"), "{records:?}");
    assert!(has("stdout", "P", &"x".repeat(16 * 1024)));
    assert!(has("stdout", "F", &"x".repeat(17000 - 16 * 1024)));
    assert!(
        has("stdout", "P", "tail"),
        "output without a newline at EOF is partial"
    );
    assert_eq!(records.len(), 5, "{records:?}");

    let del = h.delete("c1", "").unwrap();
    assert_eq!((del.exit_status, del.pid), (3, pid));
    assert!(
        !h.cgroup_dir("memory", "c1").exists(),
        "Delete removes the cgroup"
    );
    assert_eq!(code(h.state("c1", "")), Code::NOT_FOUND);

    let e = &h.events;
    e.wait_for::<TaskCreate>("/tasks/create", |m| m.container_id == "c1" && m.pid == pid);
    e.wait_for::<TaskStart>("/tasks/start", |m| m.container_id == "c1" && m.pid == pid);
    e.wait_for::<TaskExit>("/tasks/exit", |m| {
        m.container_id == "c1" && m.id == "c1" && m.exit_status == 3
    });
    e.wait_for::<TaskDelete>("/tasks/delete", |m| {
        m.container_id == "c1" && m.exit_status == 3
    });
    let start = e.position::<TaskStart>("/tasks/start", |m| m.container_id == "c1");
    let exit = e.position::<TaskExit>("/tasks/exit", |m| m.container_id == "c1");
    assert!(start < exit, "TaskStart before TaskExit: {:?}", e.topics());
    h.shutdown();
}

/// Kill: SIGTERM to a process that handles it, SIGKILL to the whole
/// cgroup; Delete refuses a running container and accepts a stopped one.
#[test]
fn kill_and_delete() {
    if !root_or_skip("kill_and_delete") {
        return;
    }
    let h = Harness::new("kill");
    // PID 1 of a namespace only gets signals it handles (as under runc).
    let trap = h.bundle(
        "term",
        &[
            "sh",
            "-c",
            "trap 'exit 143' TERM; while true; do sleep 0.1; done",
        ],
        |_| {},
    );
    let plain = h.bundle("sleep", &["sleep", "1000"], |_| {});
    h.create("term", &trap, "");
    h.create("sleep", &plain, "");
    h.start("term", "");
    h.start("sleep", "");
    assert_eq!(code(h.delete("sleep", "")), Code::FAILED_PRECONDITION);

    // Let the shell install its trap first.
    std::thread::sleep(Duration::from_millis(300));
    h.kill("term", "", SIGTERM, false).unwrap();
    assert_eq!(h.wait("term", ""), 143);
    assert_eq!(code(h.kill("term", "", SIGTERM, false)), Code::NOT_FOUND);

    h.kill("sleep", "", SIGKILL, true).unwrap();
    assert_eq!(h.wait("sleep", ""), 137);
    assert_eq!(h.delete("term", "").unwrap().exit_status, 143);
    assert_eq!(h.delete("sleep", "").unwrap().exit_status, 137);

    // A created, never started container: Delete kills it.
    let again = h.bundle("created", &["sleep", "1000"], |_| {});
    h.create("created", &again, "");
    assert_eq!(h.delete("created", "").unwrap().exit_status, 137);
    h.shutdown();
}

/// crustd deletes an exited container from its exit handler and from
/// RemoveContainer, possibly at once: one Delete wins, the other is
/// NotFound, never Internal (critest's image-id spec found the race).
#[test]
fn concurrent_deletes_of_one_container() {
    if !root_or_skip("concurrent_deletes_of_one_container") {
        return;
    }
    let h = Harness::new("dels");
    for n in 0..10 {
        let id = format!("quick{n}");
        let bundle = h.bundle(&id, &["true"], |_| {});
        h.create(&id, &bundle, "");
        h.start(&id, "");
        assert_eq!(h.wait(&id, ""), 0);
        let results: Vec<ttrpc::Result<_>> = std::thread::scope(|s| {
            let both = [s.spawn(|| h.delete(&id, "")), s.spawn(|| h.delete(&id, ""))];
            both.map(|t| t.join().unwrap()).into()
        });
        let mut won = 0;
        for r in results {
            match r {
                Ok(d) => {
                    assert_eq!(d.exit_status, 0);
                    won += 1;
                }
                Err(e) => assert_eq!(code(Err::<(), _>(e)), Code::NOT_FOUND, "{id}"),
            }
        }
        assert_eq!(won, 1, "{id}: exactly one Delete removes it");
    }
    h.shutdown();
}

/// Exec with FIFOs (stdout, stderr, stdin across writers, CloseIO) and with a
/// terminal (ResizePty); exit codes and exec events.
#[test]
fn exec_processes() {
    if !root_or_skip("exec_processes") {
        return;
    }
    let h = Harness::new("exec");
    let bundle = h.bundle("box", &["sleep", "1000"], |_| {});
    h.create("box", &bundle, "");
    h.start("box", "");
    let d = h.dir.path();
    let none = Path::new("");

    // stdout and stderr FIFOs.
    let (out, err) = (d.join("e1.out"), d.join("e1.err"));
    let (out_rx, err_rx) = (fifo_reader(&out), fifo_reader(&err));
    exec(
        &h,
        "box",
        "e1",
        exec_spec(&["sh", "-c", "echo hi; echo oops >&2; exit 7"], false),
        [none, &out, &err],
        false,
    );
    let pid = h.start("box", "e1");
    assert_eq!(h.wait("box", "e1"), 7);
    assert_eq!(out_rx.recv_timeout(LONG).unwrap(), "hi\n");
    assert_eq!(err_rx.recv_timeout(LONG).unwrap(), "oops\n");
    assert_eq!(
        h.state("box", "e1").unwrap().status.enum_value(),
        Ok(Status::STOPPED)
    );
    assert_eq!(h.delete("box", "e1").unwrap().exit_status, 7);
    assert_eq!(code(h.state("box", "e1")), Code::NOT_FOUND);
    h.events
        .wait_for::<TaskExecAdded>("/tasks/exec-added", |m| m.exec_id == "e1");
    h.events
        .wait_for::<TaskExecStarted>("/tasks/exec-started", |m| m.exec_id == "e1" && m.pid == pid);
    h.events.wait_for::<TaskExit>("/tasks/exit", |m| {
        m.id == "e1" && m.container_id == "box" && m.exit_status == 7
    });

    // stdin: writers come and go; only CloseIO ends it, after passing on
    // what was written.
    let (input, out2) = (d.join("e2.in"), d.join("e2.out"));
    nix::unistd::mkfifo(&input, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
    let out2_rx = fifo_reader(&out2);
    exec(
        &h,
        "box",
        "e2",
        exec_spec(&["cat"], false),
        [&input, &out2, none],
        false,
    );
    h.start("box", "e2");
    for text in ["first writer\n", "second writer\n"] {
        let mut w = fs::OpenOptions::new().write(true).open(&input).unwrap();
        w.write_all(text.as_bytes()).unwrap();
        drop(w);
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(
        h.state("box", "e2").unwrap().status.enum_value(),
        Ok(Status::RUNNING),
        "a writer closing the FIFO does not end stdin"
    );
    let close = CloseIORequest {
        id: "box".into(),
        exec_id: "e2".into(),
        stdin: true,
        ..Default::default()
    };
    h.client.close_io(ctx(), &close).unwrap();
    assert_eq!(h.wait("box", "e2"), 0);
    assert_eq!(
        out2_rx.recv_timeout(LONG).unwrap(),
        "first writer\nsecond writer\n"
    );
    h.delete("box", "e2").unwrap();

    // CloseIO ends stdin while the writer keeps the FIFO open.
    let (input, out3) = (d.join("e3.in"), d.join("e3.out"));
    nix::unistd::mkfifo(&input, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
    let out3_rx = fifo_reader(&out3);
    let held = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&input)
        .unwrap();
    exec(
        &h,
        "box",
        "e3",
        exec_spec(&["cat"], false),
        [&input, &out3, none],
        false,
    );
    h.start("box", "e3");
    (&held).write_all(b"before close\n").unwrap();
    std::thread::sleep(Duration::from_millis(200));
    let close = CloseIORequest {
        id: "box".into(),
        exec_id: "e3".into(),
        stdin: true,
        ..Default::default()
    };
    h.client.close_io(ctx(), &close).unwrap();
    assert_eq!(h.wait("box", "e3"), 0);
    assert_eq!(out3_rx.recv_timeout(LONG).unwrap(), "before close\n");
    drop(held);
    h.delete("box", "e3").unwrap();

    // A terminal, resized before the process asks for its size.
    let out4 = d.join("e4.out");
    let out4_rx = fifo_reader(&out4);
    // The request's terminal flag wins over the spec's.
    exec(
        &h,
        "box",
        "e4",
        exec_spec(&["sh", "-c", "sleep 0.5; tty; stty size"], false),
        [none, &out4, none],
        true,
    );
    h.start("box", "e4");
    let resize = ResizePtyRequest {
        id: "box".into(),
        exec_id: "e4".into(),
        width: 100,
        height: 40,
        ..Default::default()
    };
    h.client.resize_pty(ctx(), &resize).unwrap();
    assert_eq!(h.wait("box", "e4"), 0);
    let text = out4_rx.recv_timeout(LONG).unwrap();
    assert!(text.contains("/dev/pts/"), "{text:?}");
    assert!(text.contains("40 100"), "{text:?}");
    h.delete("box", "e4").unwrap();

    // Processes that exit at once: their start event still comes first.
    for n in 0..5 {
        let eid = format!("quick{n}");
        exec(
            &h,
            "box",
            &eid,
            exec_spec(&["true"], false),
            [none, none, none],
            false,
        );
        h.start("box", &eid);
        assert_eq!(h.wait("box", &eid), 0);
        h.events
            .wait_for::<TaskExit>("/tasks/exit", |m| m.id == eid);
        let started = h
            .events
            .position::<TaskExecStarted>("/tasks/exec-started", |m| m.exec_id == eid);
        let exited = h
            .events
            .position::<TaskExit>("/tasks/exit", |m| m.id == eid);
        assert!(
            started.is_some() && started < exited,
            "{:?}",
            h.events.topics()
        );
        h.delete("box", &eid).unwrap();
    }

    // An exec must be unique and its container running.
    exec(
        &h,
        "box",
        "e5",
        exec_spec(&["true"], false),
        [none, none, none],
        false,
    );
    let dup = ExecProcessRequest {
        id: "box".into(),
        exec_id: "e5".into(),
        spec: Some(exec_spec(&["true"], false)).into(),
        ..Default::default()
    };
    assert_eq!(code(h.client.exec(ctx(), &dup)), Code::ALREADY_EXISTS);
    h.delete("box", "e5").unwrap();

    h.kill("box", "", SIGKILL, false).unwrap();
    h.wait("box", "");
    let late = ExecProcessRequest {
        id: "box".into(),
        exec_id: "late".into(),
        spec: Some(exec_spec(&["true"], false)).into(),
        ..Default::default()
    };
    assert_eq!(code(h.client.exec(ctx(), &late)), Code::FAILED_PRECONDITION);
    h.delete("box", "").unwrap();
    h.shutdown();
}

/// A container over its 8 MiB memory limit is OOM-killed: exit 137 and a
/// TaskOOM event before its TaskExit.
#[test]
fn oom_kill_is_reported() {
    if !root_or_skip("oom_kill_is_reported") {
        return;
    }
    let h = Harness::new("oom");
    let args = ["dd", "if=/dev/zero", "of=/dev/null", "bs=64M", "count=1"];
    let bundle = h.bundle("hog", &args, |s| {
        s["linux"]["resources"]["memory"] = json!({"limit": 8 * 1024 * 1024});
    });
    h.create("hog", &bundle, "");
    h.start("hog", "");
    assert_eq!(h.wait("hog", ""), 137);
    h.events
        .wait_for::<TaskOOM>("/tasks/oom", |m| m.container_id == "hog");
    h.events.wait_for::<TaskExit>("/tasks/exit", |m| {
        m.container_id == "hog" && m.exit_status == 137
    });
    let oom = h
        .events
        .position::<TaskOOM>("/tasks/oom", |m| m.container_id == "hog");
    let exit = h
        .events
        .position::<TaskExit>("/tasks/exit", |m| m.container_id == "hog");
    assert!(
        oom < exit,
        "TaskOOM before TaskExit: {:?}",
        h.events.topics()
    );
    h.delete("hog", "").unwrap();
    h.shutdown();
}

fn status_field(pid: i32, field: &str) -> String {
    fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix(field).map(|v| v.trim().to_owned()))
        .unwrap_or_default()
}

/// The shim outlives its client: a new connection finds the container
/// running. Prints the idle shim's memory. Shutdown waits for the last
/// container to go, then ends the shim and removes its socket.
#[test]
fn survives_client_and_shuts_down() {
    if !root_or_skip("survives_client_and_shuts_down") {
        return;
    }
    let mut h = Harness::new("idle");
    let bundle = h.bundle("idle", &["sleep", "1000"], |_| {});
    let log = h.dir.path().join("idle.log");
    let t0 = std::time::Instant::now();
    h.create("idle", &bundle, &format!("crilog://{}", log.display()));
    let pid = h.start("idle", "");
    println!("Create + Start of a busybox container: {:?}", t0.elapsed());

    // The "runtime" goes away and comes back.
    h.reconnect();
    let st = h.state("idle", "").unwrap();
    assert_eq!((st.status.enum_value(), st.pid), (Ok(Status::RUNNING), pid));

    // The 3 MiB budget is for the release build; a debug build's code is
    // larger and less dense.
    let budget = if cfg!(debug_assertions) {
        4 * 1024
    } else {
        3 * 1024
    };
    // The shim releases idle memory 2 s after the last request; RSS is
    // what the idle shim holds after that.
    let rss = |pid| -> u64 {
        status_field(pid, "VmRSS:")
            .trim_end_matches(" kB")
            .parse()
            .unwrap()
    };
    let mem = |pid| {
        let f = |k| status_field(pid, k);
        format!(
            "VmRSS {} (anon {}, file {}), {} threads",
            f("VmRSS:"),
            f("RssAnon:"),
            f("RssFile:"),
            f("Threads:")
        )
    };
    let settle = |what: &str| {
        std::thread::sleep(Duration::from_secs(3));
        for _ in 0..20 {
            if rss(h.shim_pid) < budget {
                break;
            }
            std::thread::sleep(Duration::from_millis(500));
        }
        println!("{what}: {}", mem(h.shim_pid));
        rss(h.shim_pid)
    };
    let idle = settle("idle crust-shim with one running container");
    assert!(
        idle < budget,
        "idle shim RSS {idle} KiB is over {budget} KiB"
    );

    // A runtime typically keeps a Wait pending per container.
    let waiter = {
        let client = containerd_shim_protos::TaskClient::new(
            containerd_shim_protos::ttrpc::Client::connect(&h.address).unwrap(),
        );
        std::thread::spawn(move || {
            let req = WaitRequest {
                id: "idle".into(),
                ..Default::default()
            };
            client.wait(ctx(), &req).map(|r| r.exit_status)
        })
    };
    let waiting = settle("... and a Wait pending on a second connection");
    // The same budget as above (the release build's 3 MiB; the literal
    // 3 MiB here failed debug builds whose binary pages alone come near it).
    assert!(
        waiting < budget,
        "idle shim RSS {waiting} KiB with a Wait pending is over {budget} KiB"
    );

    h.shutdown();
    assert!(
        h.shim_alive(),
        "Shutdown is a no-op while a container exists"
    );
    h.kill("idle", "", SIGKILL, false).unwrap();
    assert_eq!(waiter.join().unwrap().unwrap(), 137);
    h.delete("idle", "").unwrap();
    h.shutdown();
    eventually("the shim to exit", || (!h.shim_alive()).then_some(()));
    assert!(!h.state.join("shim.sock").exists(), "socket removed");
}

/// Update applies new limits to the cgroup; Pids lists the processes;
/// Stats returns cgroup metrics.
#[test]
fn update_pids_and_stats() {
    if !root_or_skip("update_pids_and_stats") {
        return;
    }
    let h = Harness::new("update");
    let bundle = h.bundle("u", &["sleep", "1000"], |_| {});
    h.create("u", &bundle, "");
    let pid = h.start("u", "");

    let resources = json!({"memory": {"limit": 32 * 1024 * 1024}, "cpu": {"shares": 512}});
    let req = UpdateTaskRequest {
        id: "u".into(),
        resources: Some(Any {
            type_url: "types.containerd.io/opencontainers/runtime-spec/1/LinuxResources".into(),
            value: serde_json::to_vec(&resources).unwrap(),
            ..Default::default()
        })
        .into(),
        ..Default::default()
    };
    h.client.update(ctx(), &req).unwrap();
    // v2 has no shares: libcgroups maps 512 to cpu.weight 59 (runc's
    // quadratic mapping, which keeps 1024 shares at the default weight 100).
    let (memory_file, cpu_file, cpu_value) = if cgroup_v2() {
        ("memory.max", "cpu.weight", "59")
    } else {
        ("memory.limit_in_bytes", "cpu.shares", "512")
    };
    let limit = fs::read_to_string(h.cgroup_dir("memory", "u").join(memory_file)).unwrap();
    assert_eq!(limit.trim(), (32 * 1024 * 1024).to_string());
    let cpu = fs::read_to_string(h.cgroup_dir("cpu", "u").join(cpu_file)).unwrap();
    assert_eq!(cpu.trim(), cpu_value);

    let pids = h
        .client
        .pids(
            ctx(),
            &PidsRequest {
                id: "u".into(),
                ..Default::default()
            },
        )
        .unwrap();
    assert_eq!(
        pids.processes.iter().map(|p| p.pid).collect::<Vec<_>>(),
        vec![pid]
    );

    let stats = h
        .client
        .stats(
            ctx(),
            &StatsRequest {
                id: "u".into(),
                ..Default::default()
            },
        )
        .unwrap();
    assert!(
        stats.stats.type_url.ends_with(if cgroup_v2() {
            "io.containerd.cgroups.v2.Metrics"
        } else {
            "io.containerd.cgroups.v1.Metrics"
        }),
        "{}",
        stats.stats.type_url
    );
    assert!(!stats.stats.value.is_empty());

    h.kill("u", "", SIGKILL, false).unwrap();
    h.wait("u", "");
    h.delete("u", "").unwrap();
    h.shutdown();
}

/// SIGUSR1 makes the shim reopen the log files, after a rotation.
#[test]
fn log_reopen_on_sigusr1() {
    if !root_or_skip("log_reopen_on_sigusr1") {
        return;
    }
    let h = Harness::new("rotate");
    let bundle = h.bundle(
        "r",
        &["sh", "-c", "while true; do echo tick; sleep 0.1; done"],
        |_| {},
    );
    let log = h.dir.path().join("r.log");
    h.create("r", &bundle, &format!("crilog://{}", log.display()));
    h.start("r", "");
    eventually("a first record", || {
        fs::read_to_string(&log)
            .ok()
            .filter(|t| t.contains("F tick"))
    });
    let rotated = h.dir.path().join("r.log.1");
    fs::rename(&log, &rotated).unwrap();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(h.shim_pid),
        nix::sys::signal::Signal::SIGUSR1,
    )
    .unwrap();
    eventually("records in the new file", || {
        fs::read_to_string(&log)
            .ok()
            .filter(|t| t.contains("stdout F tick"))
    });
    let old_len = fs::metadata(&rotated).unwrap().len();
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(
        fs::metadata(&rotated).unwrap().len(),
        old_len,
        "nothing more goes to the rotated file"
    );
    h.kill("r", "", SIGKILL, false).unwrap();
    h.wait("r", "");
    h.delete("r", "").unwrap();
    h.shutdown();
}

/// Namespaces given by path are joined (crustd pins net/ipc/uts per pod);
/// pid and mount namespaces stay per container.
#[test]
fn joins_namespaces_by_path() {
    if !root_or_skip("joins_namespaces_by_path") {
        return;
    }
    let h = Harness::new("ns");
    let a = h.bundle("a", &["sleep", "1000"], |s| s["hostname"] = json!("pod-a"));
    h.create("a", &a, "");
    let pid_a = h.start("a", "");
    let ns = |kind: &str| fs::read_link(format!("/proc/{pid_a}/ns/{kind}")).unwrap();
    let b = h.bundle(
        "b",
        &[
            "sh",
            "-c",
            "hostname; readlink /proc/self/ns/net; readlink /proc/self/ns/pid",
        ],
        |s| {
            s.as_object_mut().unwrap().remove("hostname");
            s["linux"]["namespaces"] = json!([
                {"type": "pid"}, {"type": "mount"},
                {"type": "network", "path": format!("/proc/{pid_a}/ns/net")},
                {"type": "uts", "path": format!("/proc/{pid_a}/ns/uts")},
                {"type": "ipc", "path": format!("/proc/{pid_a}/ns/ipc")},
            ]);
        },
    );
    fs::create_dir_all(b.join("rootfs/bin")).unwrap();
    std::os::unix::fs::symlink("busybox", b.join("rootfs/bin/readlink")).unwrap();
    let log = h.dir.path().join("b.log");
    h.create("b", &b, &format!("crilog://{}", log.display()));
    h.start("b", "");
    assert_eq!(h.wait("b", ""), 0);
    let lines: Vec<String> = cri_records(&fs::read_to_string(&log).unwrap())
        .into_iter()
        .map(|r| r.2)
        .collect();
    assert_eq!(lines[0], "pod-a");
    assert_eq!(
        lines[1],
        ns("net").display().to_string(),
        "joined the network namespace"
    );
    assert_ne!(
        lines[2],
        ns("pid").display().to_string(),
        "own pid namespace"
    );
    h.delete("b", "").unwrap();
    h.kill("a", "", SIGKILL, false).unwrap();
    h.wait("a", "");
    h.delete("a", "").unwrap();
    h.shutdown();
}

/// A container with a terminal: its output reaches the CRI log through
/// the pty the container sent the shim.
#[test]
fn terminal_container() {
    if !root_or_skip("terminal_container") {
        return;
    }
    let h = Harness::new("tty");
    let bundle = h.bundle("t", &["sh", "-c", "tty; echo on a tty"], |s| {
        s["process"]["terminal"] = json!(true)
    });
    let log = h.dir.path().join("t.log");
    let req = containerd_shim_protos::api::CreateTaskRequest {
        id: "t".into(),
        bundle: bundle.display().to_string(),
        stdout: format!("crilog://{}", log.display()),
        terminal: true,
        ..Default::default()
    };
    h.client.create(ctx(), &req).unwrap();
    h.start("t", "");
    assert_eq!(h.wait("t", ""), 0);
    let records = cri_records(&fs::read_to_string(&log).unwrap());
    assert!(records.iter().all(|r| r.0 == "stdout"), "{records:?}");
    let lines: Vec<&str> = records.iter().map(|r| r.2.as_str()).collect();
    assert!(lines[0].starts_with("/dev/"), "{lines:?}");
    assert_eq!(
        lines[1], "on a tty",
        "CR LF from the tty becomes a full line"
    );
    h.delete("t", "").unwrap();
    h.shutdown();
}

/// `start` detaches the shim: its own session, not the starter's child,
/// holding none of the starter's fds (a runtime reading its pipes to EOF
/// must not wait for the shim).
#[test]
fn start_detaches_the_shim() {
    if !root_or_skip("start_detaches_the_shim") {
        return;
    }
    use std::io::Read;
    // A pipe whose write end leaks into `start` (no CLOEXEC).
    let (r, w) = nix::unistd::pipe().unwrap();
    let h = Harness::new("detach");
    drop(w);
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = fs::File::from(r).read_to_end(&mut buf);
        let _ = tx.send(());
    });
    rx.recv_timeout(LONG)
        .expect("the shim holds the starter's pipe");
    let stat = fs::read_to_string(format!("/proc/{}/stat", h.shim_pid)).unwrap();
    let fields: Vec<&str> = stat.rsplit_once(") ").unwrap().1.split(' ').collect();
    assert_eq!(fields[3], h.shim_pid.to_string(), "session leader");
    assert_ne!(
        fields[1],
        std::process::id().to_string(),
        "not the starter's child"
    );
    h.shutdown();
    eventually("the shim to exit", || (!h.shim_alive()).then_some(()));
}

/// containerd's flow: the rootfs comes as mounts in Create, which the
/// shim mounts on `<bundle>/rootfs` and unmounts at Delete.
#[test]
fn rootfs_mounts_from_create() {
    if !root_or_skip("rootfs_mounts_from_create") {
        return;
    }
    let h = Harness::new("mounts");
    // A complete bundle serves as the mount source; the real bundle's
    // rootfs is an empty directory.
    let source = h.bundle("source", &["true"], |_| {});
    let bundle = h.dir.path().join("bundles/m");
    fs::create_dir_all(bundle.join("rootfs")).unwrap();
    let spec = spec(
        &["sh", "-c", "echo mounted"],
        &format!("{}/m", h.cgroup_parent),
    );
    fs::write(
        bundle.join("config.json"),
        serde_json::to_vec(&spec).unwrap(),
    )
    .unwrap();
    let target = bundle.join("rootfs");
    let _unmount = Unmount(target.clone());
    let log = h.dir.path().join("m.log");
    let req = containerd_shim_protos::api::CreateTaskRequest {
        id: "m".into(),
        bundle: bundle.display().to_string(),
        stdout: format!("crilog://{}", log.display()),
        rootfs: vec![containerd_shim_protos::types::mount::Mount {
            type_: "bind".into(),
            source: source.join("rootfs").display().to_string(),
            options: vec!["rbind".into(), "rw".into()],
            ..Default::default()
        }],
        ..Default::default()
    };
    h.client.create(ctx(), &req).unwrap();
    assert!(target.join("bin/busybox").exists(), "rootfs mounted");
    h.start("m", "");
    assert_eq!(h.wait("m", ""), 0);
    assert!(
        fs::read_to_string(&log)
            .unwrap()
            .contains("stdout F mounted")
    );
    h.delete("m", "").unwrap();
    assert!(
        !target.join("bin/busybox").exists(),
        "rootfs unmounted at Delete"
    );
    h.shutdown();
}

/// Unmounts whatever a failed test left mounted.
struct Unmount(std::path::PathBuf);

impl Drop for Unmount {
    fn drop(&mut self) {
        while nix::mount::umount2(&self.0, nix::mount::MntFlags::MNT_DETACH).is_ok() {}
    }
}

/// Requests that cannot be served get the right ttrpc codes.
#[test]
fn errors_have_codes() {
    if !root_or_skip("errors_have_codes") {
        return;
    }
    let h = Harness::new("errors");
    assert_eq!(code(h.state("nope", "")), Code::NOT_FOUND);
    assert_eq!(code(h.delete("nope", "")), Code::NOT_FOUND);
    assert_eq!(code(h.kill("nope", "", SIGKILL, false)), Code::NOT_FOUND);
    let bundle = h.bundle("e", &["sleep", "1000"], |_| {});
    assert_eq!(
        code(h.try_create("e", &bundle, "", "binary:///logger", "")),
        Code::INVALID_ARGUMENT
    );
    assert_eq!(
        code(h.try_create("bad/id", &bundle, "", "", "")),
        Code::INVALID_ARGUMENT
    );
    assert_eq!(
        code(h.try_create("e", Path::new("/nonexistent"), "", "", "")),
        Code::INVALID_ARGUMENT
    );
    h.create("e", &bundle, "");
    assert_eq!(
        code(h.try_create("e", &bundle, "", "", "")),
        Code::ALREADY_EXISTS
    );
    assert_eq!(code(h.kill("e", "", 0, false)), Code::INVALID_ARGUMENT);
    h.start("e", "");
    let again = containerd_shim_protos::api::StartRequest {
        id: "e".into(),
        ..Default::default()
    };
    assert_eq!(
        code(h.client.start(ctx(), &again)),
        Code::FAILED_PRECONDITION
    );
    assert_eq!(code(h.state("e", "no-such-exec")), Code::NOT_FOUND);
    h.kill("e", "", SIGKILL, false).unwrap();
    h.wait("e", "");
    h.delete("e", "").unwrap();
    h.shutdown();
}

/// `-v` and containerd 2's `-info` work without a namespace.
#[test]
fn version_and_info() {
    let bin = env!("CARGO_BIN_EXE_crust-shim");
    let v = std::process::Command::new(bin).arg("-v").output().unwrap();
    assert!(String::from_utf8_lossy(&v.stdout).starts_with("crust-shim "));
    let info = std::process::Command::new(bin)
        .arg("-info")
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    assert!(info.status.success());
    use containerd_shim_protos::protobuf::Message;
    let parsed =
        containerd_shim_protos::types::introspection::RuntimeInfo::parse_from_bytes(&info.stdout)
            .unwrap();
    assert_eq!(parsed.name, "crust-shim");
}

/// Connects to a container's attach socket the way crustd does: through
/// an O_PATH fd of the bundle, as the bundle path may be too long for a
/// socket address.
fn attach(bundle: &Path) -> std::os::unix::net::UnixStream {
    use std::os::fd::AsRawFd;
    use std::os::unix::fs::OpenOptionsExt;
    let dir = fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_PATH | libc::O_DIRECTORY)
        .open(bundle)
        .unwrap();
    let c = std::os::unix::net::UnixStream::connect(format!(
        "/proc/self/fd/{}/attach",
        dir.as_raw_fd()
    ))
    .unwrap();
    c.set_read_timeout(Some(LONG)).unwrap();
    c
}

/// Reads attach frames until EOF: (stdout, stderr, frames).
fn attach_output(mut c: impl std::io::Read) -> (Vec<u8>, Vec<u8>, usize) {
    let mut all = Vec::new();
    c.read_to_end(&mut all).expect("EOF from the attach socket");
    let (mut out, mut err, mut n) = (Vec::new(), Vec::new(), 0);
    let mut rest = &all[..];
    while !rest.is_empty() {
        assert!(rest.len() >= 5, "truncated header");
        let len = u32::from_be_bytes(rest[1..5].try_into().unwrap()) as usize;
        assert!(len > 0 && len <= 8192, "payload length {len}");
        assert!(rest.len() >= 5 + len, "truncated payload");
        match rest[0] {
            1 => out.extend_from_slice(&rest[5..5 + len]),
            2 => err.extend_from_slice(&rest[5..5 + len]),
            s => panic!("stream {s}"),
        }
        n += 1;
        rest = &rest[5 + len..];
    }
    (out, err, n)
}

/// `<bundle>/attach`: a client gets framed stdout and stderr (and a
/// terminal's output as stdout) while the log still gets everything; EOF
/// once the output ended; a client after the exit gets EOF at once; the
/// socket is gone after Delete.
#[test]
fn attach_socket_streams_output() {
    if !root_or_skip("attach_socket_streams_output") {
        return;
    }
    let h = Harness::new("attach");
    // Long enough that `<bundle>/attach` is no valid socket address.
    let id = format!("a{}", "x".repeat(100));
    let script = "sleep 0.5; echo out1; echo err1 >&2; echo out2; printf err2 >&2; exit 4";
    let bundle = h.bundle(&id, &["sh", "-c", script], |_| {});
    assert!(bundle.join("attach").as_os_str().len() > 107);
    let log = h.dir.path().join("a.log");
    h.create(&id, &bundle, &format!("crilog://{}", log.display()));
    let sock = bundle.join("attach");
    let meta = fs::symlink_metadata(&sock).unwrap();
    use std::os::unix::fs::{FileTypeExt, PermissionsExt};
    assert!(meta.file_type().is_socket());
    assert_eq!(meta.permissions().mode() & 0o777, 0o600);

    // Two clients, attached before Start.
    let (c1, c2) = (attach(&bundle), attach(&bundle));
    h.start(&id, "");
    let reader = std::thread::spawn(move || attach_output(c2));
    let (out, err, _) = attach_output(c1);
    assert_eq!(String::from_utf8(out).unwrap(), "out1\nout2\n");
    assert_eq!(String::from_utf8(err).unwrap(), "err1\nerr2");
    let (out, err, _) = reader.join().unwrap();
    assert_eq!(
        (&out[..], &err[..]),
        (&b"out1\nout2\n"[..], &b"err1\nerr2"[..])
    );
    assert_eq!(h.wait(&id, ""), 4);
    let records = cri_records(&fs::read_to_string(&log).unwrap());
    let has = |s: &str, t: &str, c: &str| records.iter().any(|r| r.0 == s && r.1 == t && r.2 == c);
    assert!(
        has("stdout", "F", "out1") && has("stdout", "F", "out2"),
        "{records:?}"
    );
    assert!(
        has("stderr", "F", "err1") && has("stderr", "P", "err2"),
        "{records:?}"
    );

    // Attaching to an exited container ends at once.
    let t0 = std::time::Instant::now();
    let (out, err, n) = attach_output(attach(&bundle));
    assert_eq!((out.len(), err.len(), n), (0, 0, 0));
    assert!(t0.elapsed() < Duration::from_secs(2), "{:?}", t0.elapsed());

    h.delete(&id, "").unwrap();
    assert!(!sock.exists(), "Delete removes the socket");

    // A terminal's output is stream 1.
    let tty = h.bundle("tty", &["sh", "-c", "sleep 0.5; echo on a tty"], |s| {
        s["process"]["terminal"] = json!(true)
    });
    let tty_log = h.dir.path().join("tty.log");
    let req = containerd_shim_protos::api::CreateTaskRequest {
        id: "tty".into(),
        bundle: tty.display().to_string(),
        stdout: format!("crilog://{}", tty_log.display()),
        terminal: true,
        ..Default::default()
    };
    h.client.create(ctx(), &req).unwrap();
    let c = attach(&tty);
    h.start("tty", "");
    let (out, err, _) = attach_output(c);
    assert_eq!(String::from_utf8(out).unwrap(), "on a tty\r\n");
    assert!(err.is_empty());
    assert_eq!(h.wait("tty", ""), 0);
    assert!(
        fs::read_to_string(&tty_log)
            .unwrap()
            .contains("stdout F on a tty")
    );
    h.delete("tty", "").unwrap();
    h.shutdown();
}

/// A client that never reads is dropped without slowing the container:
/// it writes 8 MiB and exits, and the log has every byte.
#[test]
fn attach_client_that_never_reads_is_dropped() {
    if !root_or_skip("attach_client_that_never_reads_is_dropped") {
        return;
    }
    let h = Harness::new("attach-slow");
    const TOTAL: usize = 8 * 1024 * 1024;
    let script = "sleep 0.5; dd if=/dev/zero bs=65536 count=128 2>/dev/null | tr '\\0' x";
    let bundle = h.bundle("big", &["sh", "-c", script], |_| {});
    let log = h.dir.path().join("big.log");
    h.create("big", &bundle, &format!("crilog://{}", log.display()));
    let idle = attach(&bundle);
    h.start("big", "");
    let (tx, rx) = std::sync::mpsc::channel();
    let shim = std::thread::spawn({
        let address = h.address.clone();
        move || {
            let client = containerd_shim_protos::TaskClient::new(
                containerd_shim_protos::ttrpc::Client::connect(&address).unwrap(),
            );
            let req = WaitRequest {
                id: "big".into(),
                ..Default::default()
            };
            let _ = tx.send(client.wait(ctx(), &req).map(|r| r.exit_status));
        }
    });
    assert_eq!(
        rx.recv_timeout(LONG)
            .expect("the container is not held up")
            .unwrap(),
        0
    );
    shim.join().unwrap();
    let records = cri_records(&fs::read_to_string(&log).unwrap());
    let logged: usize = records.iter().map(|r| r.2.len()).sum();
    assert_eq!(logged, TOTAL, "the log has everything");
    assert!(
        records
            .iter()
            .all(|r| r.0 == "stdout" && r.2.bytes().all(|b| b == b'x'))
    );
    // The idle client got some whole frames, then was hung up on.
    let mut got = Vec::new();
    std::io::Read::read_to_end(&mut &idle, &mut got).expect("EOF for the dropped client");
    assert!(got.len() < TOTAL, "dropped before the end: {}", got.len());
    h.delete("big", "").unwrap();
    h.shutdown();
}

/// A container's stdin FIFO: two writers one after the other both reach
/// `cat`, closing the FIFO does not end stdin, CloseIO does (after passing
/// on what was written just before it). The output reaches an attach
/// client and the log.
#[test]
fn stdin_survives_writers_until_close_io() {
    if !root_or_skip("stdin_survives_writers_until_close_io") {
        return;
    }
    let h = Harness::new("stdin");
    let bundle = h.bundle("cat", &["cat"], |_| {});
    let input = h.dir.path().join("cat.in");
    nix::unistd::mkfifo(&input, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
    let log = h.dir.path().join("cat.log");
    h.try_create(
        "cat",
        &bundle,
        input.to_str().unwrap(),
        &format!("crilog://{}", log.display()),
        "",
    )
    .unwrap();
    let client = attach(&bundle);
    h.start("cat", "");
    let logged = |text: &str| {
        let text = text.to_owned();
        let log = log.clone();
        eventually("the line in the log", move || {
            fs::read_to_string(&log)
                .ok()
                .filter(|t| t.contains(&format!("stdout F {text}")))
        });
    };
    for text in ["one", "two"] {
        let mut w = fs::OpenOptions::new().write(true).open(&input).unwrap();
        w.write_all(format!("{text}\n").as_bytes()).unwrap();
        drop(w);
        logged(text);
    }
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(
        h.state("cat", "").unwrap().status.enum_value(),
        Ok(Status::RUNNING),
        "stdin still open after its writers left"
    );
    // Written and closed right before CloseIO: still delivered.
    let mut w = fs::OpenOptions::new().write(true).open(&input).unwrap();
    w.write_all(b"three\n").unwrap();
    drop(w);
    let close = CloseIORequest {
        id: "cat".into(),
        stdin: true,
        ..Default::default()
    };
    h.client.close_io(ctx(), &close).unwrap();
    assert_eq!(h.wait("cat", ""), 0);
    let (out, _, _) = attach_output(client);
    assert_eq!(String::from_utf8(out).unwrap(), "one\ntwo\nthree\n");
    let lines: Vec<String> = cri_records(&fs::read_to_string(&log).unwrap())
        .into_iter()
        .map(|r| r.2)
        .collect();
    assert_eq!(lines, ["one", "two", "three"]);
    h.delete("cat", "").unwrap();
    h.shutdown();
}
