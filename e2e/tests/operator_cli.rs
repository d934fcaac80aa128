//! The operator CLI, run as the real crustd binary: `crustd status`
//! against a running crustd and a missing one, `crustd check` (preflight),
//! `crustd config dump|check` over a config with drop-ins, and the
//! journald-friendly log format.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crust_e2e::{Crustd, container_config, cri, crustd_binary, image_ref, pod_config, run_crustd};

const BUSYBOX: &str = "crust-test/busybox:latest";

/// The value of `key:` in `crustd status` output.
fn status_value<'a>(out: &'a str, key: &str) -> &'a str {
    out.lines()
        .find_map(|l| l.strip_prefix(&format!("{key}:")))
        .map(str::trim)
        .unwrap_or_else(|| panic!("no {key:?} line in:\n{out}"))
}

#[tokio::test]
async fn status_reports_readiness_counts_version_and_driver() {
    let crustd = Crustd::start().await;
    let mut c = crustd.client().await;
    c.pull(&image_ref(BUSYBOX)).await.unwrap();
    let pod_cfg = pod_config(&crustd, "status");
    let pod = c.run_pod(&pod_cfg).await;
    // One running container and one only created: 1 running / 2 total.
    c.run_container(
        &pod,
        &pod_cfg,
        container_config("sleeper", &image_ref(BUSYBOX), &["sleep", "3600"]),
    )
    .await;
    c.create_container(
        &pod,
        &pod_cfg,
        container_config("idle", &image_ref(BUSYBOX), &["true"]),
    )
    .await
    .unwrap();

    let socket = crustd.socket.to_str().unwrap();
    let (code, out) = run_crustd(&["status", "--socket", socket]);
    assert_eq!(code, Some(0), "{out}");
    assert_eq!(status_value(&out, "socket"), socket);
    assert_eq!(status_value(&out, "runtime ready"), "yes", "{out}");
    assert_eq!(status_value(&out, "network ready"), "yes", "{out}");
    assert_eq!(status_value(&out, "pods"), "1 ready / 1 total");
    assert_eq!(status_value(&out, "containers"), "1 running / 2 total");
    assert_eq!(status_value(&out, "images"), "1");
    assert_eq!(status_value(&out, "cgroup driver"), "cgroupfs");
    let version = c
        .runtime
        .version(cri::VersionRequest::default())
        .await
        .unwrap()
        .into_inner()
        .runtime_version;
    assert_eq!(
        status_value(&out, "version"),
        format!("crust {version} (CRI v1)")
    );
    assert!(
        out.contains("handler:       crust: user namespaces "),
        "{out}"
    );

    // Without --socket the config's socket is used; crictl's unix:// form
    // is taken too.
    let config = crustd.config_path.to_str().unwrap();
    let (code, by_config) = run_crustd(&["--config", config, "status"]);
    assert_eq!(code, Some(0), "{by_config}");
    assert_eq!(status_value(&by_config, "socket"), socket);
    let (code, by_url) = run_crustd(&["status", "--endpoint", &format!("unix://{socket}")]);
    assert_eq!(code, Some(0), "{by_url}");
    assert_eq!(status_value(&by_url, "pods"), "1 ready / 1 total");

    // Network readiness says why when it is not ready.
    std::fs::remove_dir_all(crustd.dir.path().join("cni")).unwrap();
    let (code, out) = run_crustd(&["status", "--socket", socket]);
    assert_eq!(code, Some(0), "{out}");
    let network = status_value(&out, "network ready");
    assert!(
        network.starts_with("no (NetworkPluginNotReady: ") && network.contains("cni"),
        "{out}"
    );

    c.runtime
        .stop_pod_sandbox(cri::StopPodSandboxRequest {
            pod_sandbox_id: pod.clone(),
        })
        .await
        .unwrap();
    c.remove_pod(&pod).await;
    let (_, out) = run_crustd(&["status", "--socket", socket]);
    assert_eq!(status_value(&out, "pods"), "0 ready / 0 total", "{out}");
    assert_eq!(status_value(&out, "containers"), "0 running / 0 total");
}

#[tokio::test]
async fn status_without_a_crustd_fails_saying_why() {
    let dir = tempfile::tempdir_in("/var/tmp").unwrap();
    let missing = dir.path().join("none.sock");
    let (code, out) = run_crustd(&["status", "--socket", missing.to_str().unwrap()]);
    assert_eq!(code, Some(1), "{out}");
    assert!(
        out.contains(&format!("cannot reach crustd at {}", missing.display()))
            && out.contains("no such socket"),
        "{out}"
    );
    // A socket file nobody listens on (a crustd that died).
    let stale = dir.path().join("stale.sock");
    drop(std::os::unix::net::UnixListener::bind(&stale).unwrap());
    let (code, out) = run_crustd(&["status", "--socket", stale.to_str().unwrap()]);
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains("connection refused"), "{out}");
    // The config's socket, when no flag names one.
    let config = dir.path().join("config.yaml");
    std::fs::write(&config, format!("socket: {}\n", missing.display())).unwrap();
    let (code, out) = run_crustd(&["--config", config.to_str().unwrap(), "status"]);
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains(&missing.display().to_string()), "{out}");
}

/// The check lines of `crustd check` output: (level, rest).
fn check_lines(out: &str) -> Vec<(&str, &str)> {
    out.lines()
        .filter(|l| !l.starts_with("crustd check: "))
        .map(|l| {
            let (level, rest) = l.split_at(5);
            let level = level.trim_end();
            assert!(
                ["OK", "WARN", "FAIL"].contains(&level),
                "not a check line: {l:?} in:\n{out}"
            );
            (level, rest)
        })
        .collect()
}

fn has_check<'a>(lines: &[(&str, &'a str)], level: &str, name: &str) -> Option<&'a str> {
    lines
        .iter()
        .find(|(l, rest)| *l == level && rest.starts_with(&format!("{name}: ")))
        .map(|(_, rest)| *rest)
}

#[tokio::test]
async fn check_prints_one_line_per_check_and_exits_by_fail_lines() {
    // On this machine, with the default config (whatever it finds).
    let (code, out) = run_crustd(&["check"]);
    let lines = check_lines(&out);
    let fails = lines.iter().filter(|(l, _)| *l == "FAIL").count();
    assert_eq!(code, Some(if fails > 0 { 1 } else { 0 }), "{out}");
    for name in [
        "overlayfs",
        "mount_setattr",
        "cgroups",
        "seccomp",
        "idmapped layers",
        "cgroup driver",
        "cni",
        "socket dir",
        "root",
        "state",
    ] {
        assert!(
            lines
                .iter()
                .any(|(_, rest)| rest.starts_with(&format!("{name}: "))),
            "no {name} line in:\n{out}"
        );
    }
    assert!(
        out.lines().last().is_some_and(|l| l
            == format!(
                "crustd check: {} OK, {} WARN, {fails} FAIL",
                lines.iter().filter(|(l, _)| *l == "OK").count(),
                lines.iter().filter(|(l, _)| *l == "WARN").count()
            )),
        "{out}"
    );
    // Every WARN and FAIL says what to do.
    for (level, rest) in &lines {
        if *level != "OK" {
            assert!(rest.contains("; fix: "), "{level} {rest}");
        }
    }
    // Without a crustd to ask, idmapped layers are probed as crustd would
    // (this machine's kernel, 6.15+, has them).
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap();
    let mut v = release.split(|c: char| !c.is_ascii_digit());
    let kernel: (u32, u32) = (
        v.next().unwrap().parse().unwrap(),
        v.next().unwrap().parse().unwrap(),
    );
    if nix::unistd::geteuid().is_root() && kernel >= (6, 15) {
        let idmapped = has_check(&lines, "OK", "idmapped layers");
        assert!(
            idmapped.is_some_and(|rest| rest.contains("probed in")),
            "{out}"
        );
    }
    // The kernel facts crust's own probes see, as crustd would.
    assert!(has_check(&lines, "OK", "overlayfs").is_some(), "{out}");
    assert!(has_check(&lines, "OK", "seccomp").is_some(), "{out}");

    // A running crustd answers what only it probes (idmapped layers), and
    // a config with a world-writable socket dir and a missing plugin FAILs.
    let crustd = Crustd::start().await;
    let config = crustd.config_path.to_str().unwrap();
    let (code, out) = run_crustd(&["--config", config, "check"]);
    let lines = check_lines(&out);
    let idmapped = lines
        .iter()
        .find(|(_, rest)| rest.starts_with("idmapped layers: "))
        .unwrap();
    assert!(!idmapped.1.contains("not probed"), "{out}");
    assert!(has_check(&lines, "OK", "cni").is_some(), "{out}");
    assert!(has_check(&lines, "OK", "socket dir").is_some(), "{out}");
    assert!(has_check(&lines, "OK", "handler crust").is_some(), "{out}");
    let fails = lines.iter().filter(|(l, _)| *l == "FAIL").count();
    assert_eq!(code, Some(if fails > 0 { 1 } else { 0 }), "{out}");

    let dir = tempfile::tempdir_in("/var/tmp").unwrap();
    let open = dir.path().join("open");
    std::fs::create_dir(&open).unwrap();
    std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o777)).unwrap();
    let net = dir.path().join("net.d");
    std::fs::create_dir(&net).unwrap();
    std::fs::write(
        net.join("10-x.conflist"),
        r#"{"cniVersion":"1.0.0","name":"x","plugins":[{"type":"no-such-plugin"}]}"#,
    )
    .unwrap();
    let bad = dir.path().join("config.yaml");
    std::fs::write(
        &bad,
        format!(
            "root: {0}/root\nstate: {0}/state\nsocket: {0}/open/crust.sock\ncni:\n  conf_dir: {0}/net.d\n  bin_dirs: [/usr/lib/cni]\n",
            dir.path().display()
        ),
    )
    .unwrap();
    let (code, out) = run_crustd(&["--config", bad.to_str().unwrap(), "check"]);
    assert_eq!(code, Some(1), "{out}");
    let lines = check_lines(&out);
    let socket_dir = has_check(&lines, "FAIL", "socket dir").expect("socket dir FAIL");
    assert!(
        socket_dir.contains("writable by group or others") && socket_dir.contains("chmod go-w"),
        "{out}"
    );
    let cni = has_check(&lines, "FAIL", "cni").expect("cni FAIL");
    assert!(cni.contains("no-such-plugin"), "{out}");

    // A broken config is a FAIL line naming the file, the kernel checks
    // still run.
    std::fs::write(&bad, "sockett: /x\n").unwrap();
    let (code, out) = run_crustd(&["--config", bad.to_str().unwrap(), "check"]);
    assert_eq!(code, Some(1), "{out}");
    let lines = check_lines(&out);
    let config_line = has_check(&lines, "FAIL", "config").expect("config FAIL");
    assert!(
        config_line.contains(&bad.display().to_string()) && config_line.contains("sockett"),
        "{out}"
    );
    assert!(has_check(&lines, "OK", "overlayfs").is_some(), "{out}");
}

/// A main config and a config.d with two drop-ins, in a temp dir.
fn etc_with_dropins(dir: &Path) -> (String, String, String) {
    let main = dir.join("config.yaml");
    std::fs::write(
        &main,
        "root: /var/tmp/crust-main\nregistries:\n  plain_http: [a:5000]\n  mirrors:\n    docker.io: [https://m1.example]\nlog:\n  level: debug\n",
    )
    .unwrap();
    let d = dir.join("config.d");
    std::fs::create_dir(&d).unwrap();
    // Written in reverse: the names decide the order.
    let b = d.join("20-b.yaml");
    std::fs::write(&b, "root: /var/tmp/crust-b\n").unwrap();
    let a = d.join("10-a.yaml");
    std::fs::write(
        &a,
        "root: /var/tmp/crust-a\nregistries:\n  plain_http: [b:5000]\n  mirrors:\n    quay.io: [https://q.example]\n",
    )
    .unwrap();
    // Not drop-ins.
    std::fs::write(d.join("30-c.yaml.disabled"), "root: /nope\n").unwrap();
    std::fs::write(d.join(".hidden.yaml"), "root: /nope\n").unwrap();
    (
        main.display().to_string(),
        a.display().to_string(),
        b.display().to_string(),
    )
}

fn dump_line<'a>(out: &'a str, key: &str) -> &'a str {
    out.lines()
        .find(|l| l.trim_start().starts_with(&format!("{key}:")))
        .unwrap_or_else(|| panic!("no {key:?} in:\n{out}"))
}

#[tokio::test]
async fn config_dump_and_check_merge_dropins_with_provenance() {
    let dir = tempfile::tempdir_in("/var/tmp").unwrap();
    let (main, a, b) = etc_with_dropins(dir.path());

    let (code, out) = run_crustd(&["--config", &main, "config", "dump"]);
    assert_eq!(code, Some(0), "{out}");
    // The files in merge order, then every value with its origin.
    assert!(
        out.contains(&format!(
            "#   built-in defaults\n#   {main}\n#   {a}\n#   {b}\n"
        )),
        "{out}"
    );
    assert_eq!(
        dump_line(&out, "root"),
        format!("root: /var/tmp/crust-b # from {b}")
    );
    assert_eq!(
        dump_line(&out, "plain_http"),
        format!("  plain_http: # from {a}")
    );
    assert!(
        out.contains(&format!("  plain_http: # from {a}\n  - b:5000\n")),
        "{out}"
    );
    assert_eq!(
        dump_line(&out, "docker.io"),
        format!("    docker.io: # from {main}")
    );
    assert_eq!(
        dump_line(&out, "quay.io"),
        format!("    quay.io: # from {a}")
    );
    assert_eq!(
        dump_line(&out, "level"),
        format!("  level: debug # from {main}")
    );
    assert_eq!(dump_line(&out, "state"), "state: /run/crust # default");
    assert!(!out.contains("/nope"), "{out}");
    // A flag is an origin too.
    let (code, out) = run_crustd(&["--config", &main, "--log-level", "warn", "config", "dump"]);
    assert_eq!(code, Some(0), "{out}");
    assert_eq!(dump_line(&out, "level"), "  level: warn # from --log-level");

    // check validates the same merge and prints it as plain YAML.
    let (code, out) = run_crustd(&["--config", &main, "config", "check"]);
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("root: /var/tmp/crust-b\n"), "{out}");
    assert!(
        out.contains("quay.io:") && out.contains("docker.io:"),
        "{out}"
    );
    assert!(!out.contains("# from"), "{out}");

    // --config-dir replaces config.d.
    let other = dir.path().join("other.d");
    std::fs::create_dir(&other).unwrap();
    std::fs::write(other.join("50-x.yml"), "state: /run/crust-x\n").unwrap();
    let (code, out) = run_crustd(&[
        "--config",
        &main,
        "--config-dir",
        other.to_str().unwrap(),
        "config",
        "dump",
    ]);
    assert_eq!(code, Some(0), "{out}");
    assert!(
        dump_line(&out, "root").starts_with("root: /var/tmp/crust-main # from "),
        "{out}"
    );
    assert!(dump_line(&out, "state").ends_with("50-x.yml"), "{out}");

    // An unknown key in a drop-in: check fails naming file, key and line.
    let bad = dir.path().join("config.d/15-typo.yaml");
    std::fs::write(&bad, "# typo below\nregistries:\n  mirrros: {}\n").unwrap();
    for action in ["check", "dump"] {
        let (code, out) = run_crustd(&["--config", &main, "config", action]);
        assert_eq!(code, Some(1), "{out}");
        assert!(
            out.contains(&format!("invalid config {}", bad.display()))
                && out.contains("unknown field `mirrros`")
                && out.contains("line 3"),
            "{out}"
        );
    }
    // The daemon refuses it the same way.
    let (code, out) = run_crustd(&["--config", &main]);
    assert_eq!(code, Some(1), "{out}");
    assert!(
        out.contains("15-typo.yaml") && out.contains("mirrros"),
        "{out}"
    );
}

/// `dev:ino` of `path`, as systemd writes JOURNAL_STREAM.
fn dev_ino(path: &Path) -> String {
    let meta = std::fs::metadata(path).unwrap();
    format!("{}:{}", meta.dev(), meta.ino())
}

/// Starts crustd in `dir` with `args`, stderr appended to `log` and
/// JOURNAL_STREAM as given, waits for its socket and stops it; returns
/// what it logged.
fn run_daemon(dir: &Path, log: &Path, journal_stream: Option<String>, args: &[&str]) -> String {
    let socket = dir.join("state/crust.sock");
    let config = dir.join("config.yaml");
    std::fs::write(
        &config,
        format!(
            "root: {0}/root\nstate: {0}/state\nsocket: {1}\nmetrics:\n  address: \"\"\n",
            dir.display(),
            socket.display()
        ),
    )
    .unwrap();
    let stderr = std::fs::OpenOptions::new().append(true).open(log).unwrap();
    let mut command = Command::new(crustd_binary());
    command
        .arg("--config")
        .arg(&config)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(stderr)
        .env_remove("JOURNAL_STREAM");
    if let Some(value) = journal_stream {
        command.env("JOURNAL_STREAM", value);
    }
    let mut child = command.spawn().unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::os::unix::net::UnixStream::connect(&socket).is_err() {
        if let Some(status) = child.try_wait().unwrap() {
            panic!(
                "crustd exited early ({status}):\n{}",
                std::fs::read_to_string(log).unwrap_or_default()
            );
        }
        assert!(Instant::now() < deadline, "crustd socket never appeared");
        std::thread::sleep(Duration::from_millis(20));
    }
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    child.wait().unwrap();
    // What crustd keeps mounted for its life (state/bin) goes with it.
    crust_e2e::unmount_everything_under(dir);
    std::fs::read_to_string(log).unwrap()
}

#[tokio::test]
async fn logs_under_journald_drop_timestamps_and_carry_priorities() {
    let dir = tempfile::tempdir_in("/var/tmp").unwrap();
    let log = dir.path().join("journal.log");
    std::fs::write(&log, "").unwrap();
    let text = run_daemon(dir.path(), &log, Some(dev_ino(&log)), &[]);
    let serving = text
        .lines()
        .find(|l| l.contains("crustd serving CRI v1"))
        .unwrap_or_else(|| panic!("no serving line in:\n{text}"));
    // <6> is info (journald strips and records it); no timestamp, no
    // colour codes.
    assert!(
        serving.starts_with("<6>INFO crustd::daemon: "),
        "{serving:?}"
    );
    assert!(!text.contains('\x1b'), "{text}");
    assert!(text.lines().all(|l| l.starts_with('<')), "{text}");

    // JSON is the same under the journal as anywhere.
    let json = dir.path().join("json.log");
    std::fs::write(&json, "").unwrap();
    let text = run_daemon(
        dir.path(),
        &json,
        Some(dev_ino(&json)),
        &["--log-format", "json"],
    );
    assert!(!text.is_empty());
    assert!(
        text.lines()
            .all(|l| l.starts_with("{\"timestamp\":\"") && l.ends_with('}')),
        "{text}"
    );

    // JOURNAL_STREAM naming another stream (inherited, stderr redirected
    // since): plain text with timestamps.
    let file = dir.path().join("file.log");
    std::fs::write(&file, "").unwrap();
    let text = run_daemon(dir.path(), &file, Some(dev_ino(&log)), &[]);
    let first = text.lines().next().unwrap_or_default();
    assert!(
        first.starts_with("20") && first.contains('T') && !first.starts_with('<'),
        "{text}"
    );
}
