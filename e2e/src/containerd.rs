//! A containerd of the test's own (its own root, state and sockets under a
//! temp dir), for the crust-shim-under-containerd test and the
//! side-by-side benchmark.

use std::path::PathBuf;
use std::process::{Child, Command};
use std::time::{Duration, Instant};

pub struct Containerd {
    pub child: Child,
    pub dir: tempfile::TempDir,
}

impl Containerd {
    /// Starts containerd; `cri_config` is appended to the generated
    /// config (`[plugins."io.containerd.grpc.v1.cri"]` sections), with
    /// `{dir}` standing for the temp dir, where `files` (relative path,
    /// content) are written first.
    pub fn start(cri_config: &str, files: &[(&str, &str)]) -> Containerd {
        let dir = tempfile::tempdir_in("/var/tmp").unwrap();
        let d = dir.path().display().to_string();
        for (path, content) in files {
            let path = dir.path().join(path);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, content).unwrap();
        }
        let config = format!(
            "version = 2\nroot = \"{d}/root\"\nstate = \"{d}/state\"\n[grpc]\n  address = \"{d}/containerd.sock\"\n[ttrpc]\n  address = \"{d}/containerd.sock.ttrpc\"\n[plugins.\"io.containerd.grpc.v1.cri\"]\n  disable_tcp_service = true\n{}",
            cri_config.replace("{dir}", &d)
        );
        std::fs::write(dir.path().join("config.toml"), config).unwrap();
        let log = std::fs::File::create(dir.path().join("containerd.log")).unwrap();
        let child = Command::new("containerd")
            .arg("--config")
            .arg(dir.path().join("config.toml"))
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("start containerd");
        let socket = dir.path().join("containerd.sock");
        let deadline = Instant::now() + Duration::from_secs(20);
        while !socket.exists() {
            assert!(Instant::now() < deadline, "containerd did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
        Containerd { child, dir }
    }

    pub fn socket(&self) -> PathBuf {
        self.dir.path().join("containerd.sock")
    }

    /// Runs `ctr` against this containerd, in namespace crust-e2e.
    pub fn ctr(&self, args: &[&str]) -> std::process::Output {
        Command::new("ctr")
            .arg("--address")
            .arg(self.socket())
            .args(["-n", "crust-e2e"])
            .args(args)
            .output()
            .expect("run ctr")
    }
}

impl Drop for Containerd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        crate::kill_processes_mentioning(self.dir.path());
        crate::unmount_everything_under(self.dir.path());
    }
}
