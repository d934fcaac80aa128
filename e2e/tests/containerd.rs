//! crust-shim as a runtime under containerd itself (`ctr run --runtime
//! <path to crust-shim>`): the shim v2 boundary tested against a peer no
//! one here wrote. Skipped, with a message, where containerd is missing.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crust_e2e::containerd::Containerd;
use crust_e2e::{crustd_binary, image_ref};

fn on_path(name: &str) -> bool {
    std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).any(|d| d.join(name).is_file()))
        .unwrap_or(false)
}

fn shim_binary() -> PathBuf {
    crustd_binary().with_file_name("crust-shim")
}

#[test]
fn crust_shim_runs_containers_for_containerd() {
    if !(on_path("containerd") && on_path("ctr")) {
        eprintln!(
            "SKIPPED crust_shim_runs_containers_for_containerd: containerd/ctr are not installed"
        );
        return;
    }
    let shim = shim_binary();
    assert!(Path::new(&shim).is_file(), "{}", shim.display());
    let containerd = Containerd::start("", &[]);
    let image = image_ref("crust-test/busybox:latest");
    let pulled = containerd.ctr(&["images", "pull", "--plain-http", &image]);
    assert!(
        pulled.status.success(),
        "{}",
        String::from_utf8_lossy(&pulled.stderr)
    );
    let shim = shim.to_str().unwrap();
    let run = containerd.ctr(&[
        "run",
        "--rm",
        "--runtime",
        shim,
        &image,
        "hello",
        "echo",
        "hello from crust-shim",
    ]);
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&run.stdout).trim(),
        "hello from crust-shim"
    );
    // The exit code travels back through the shim.
    let run = containerd.ctr(&[
        "run",
        "--rm",
        "--runtime",
        shim,
        &image,
        "exit3",
        "sh",
        "-c",
        "exit 3",
    ]);
    assert_eq!(
        run.status.code(),
        Some(3),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    // A detached task can be listed, killed and deleted.
    let run = containerd.ctr(&[
        "run",
        "-d",
        "--runtime",
        shim,
        &image,
        "sleeper",
        "sleep",
        "600",
    ]);
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let tasks = containerd.ctr(&["tasks", "ls"]);
    assert!(
        String::from_utf8_lossy(&tasks.stdout).contains("RUNNING"),
        "{}",
        String::from_utf8_lossy(&tasks.stdout)
    );
    let kill = containerd.ctr(&["tasks", "kill", "-s", "SIGKILL", "sleeper"]);
    assert!(
        kill.status.success(),
        "{}",
        String::from_utf8_lossy(&kill.stderr)
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let tasks = String::from_utf8_lossy(&containerd.ctr(&["tasks", "ls"]).stdout).to_string();
        if tasks.contains("STOPPED") {
            break;
        }
        assert!(Instant::now() < deadline, "task never stopped: {tasks}");
        std::thread::sleep(Duration::from_millis(100));
    }
    let del = containerd.ctr(&["tasks", "delete", "sleeper"]);
    assert!(
        del.status.success(),
        "{}",
        String::from_utf8_lossy(&del.stderr)
    );
    let _ = containerd.ctr(&["containers", "delete", "sleeper"]);
}
