//! `crustd status`: asks a running crustd over its CRI socket how it is,
//! as kubelet would (Version, Status, the List calls), and prints one
//! `key: value` line each.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, bail};
use cri::image_service_client::ImageServiceClient;
use cri::runtime_service_client::RuntimeServiceClient;
use crust_cri_api::v1 as cri;
use hyper_util::rt::TokioIo;
use tonic::transport::{Channel, Endpoint, Uri};

/// How long one call may take: a crustd that is up answers these at once.
const CALL_TIMEOUT: Duration = Duration::from_secs(10);

/// As crustd's own limit: List answers of a busy node are large.
const MAX_MESSAGE_BYTES: usize = 16 * 1024 * 1024;

/// The socket path of `--socket`/`--endpoint`: a path, or crictl's
/// `unix:///run/crust/crust.sock` form.
pub fn socket_from_flag(value: &str) -> anyhow::Result<PathBuf> {
    let path = value.strip_prefix("unix://").unwrap_or(value);
    if path.is_empty() || (value.contains("://") && !value.starts_with("unix://")) {
        bail!(
            "--socket {value:?} is not a unix socket path (e.g. /run/crust/crust.sock or unix:///run/crust/crust.sock)"
        );
    }
    Ok(PathBuf::from(path))
}

/// A channel to the CRI socket, or why there is none in words an operator
/// can act on (no socket, nobody listening, not allowed).
pub async fn connect(socket: &Path) -> anyhow::Result<Channel> {
    connect_with_timeout(socket, CALL_TIMEOUT).await
}

/// [`connect`], with `timeout` for each call instead of status's few seconds.
pub async fn connect_with_timeout(socket: &Path, timeout: Duration) -> anyhow::Result<Channel> {
    // A plain connect first: tonic's error for a dead socket is a
    // transport error chain, not a reason.
    if let Err(e) = tokio::net::UnixStream::connect(socket).await {
        let why = match e.kind() {
            std::io::ErrorKind::NotFound => {
                "no such socket: crustd is not running, or listens elsewhere".to_string()
            }
            std::io::ErrorKind::ConnectionRefused => {
                "connection refused: nothing listens there (a socket left by a crustd that is gone)"
                    .to_string()
            }
            std::io::ErrorKind::PermissionDenied => {
                "permission denied: run as root (the socket is 0660 root)".to_string()
            }
            _ => e.to_string(),
        };
        bail!(
            "cannot reach crustd at {}: {why}; is it running (`systemctl status crust`)? Another socket: --socket PATH",
            socket.display()
        );
    }
    let path = socket.to_path_buf();
    // The URI is required by tonic but unused: the connector dials the socket.
    Endpoint::from_static("http://[::]:50051")
        .connect_timeout(CALL_TIMEOUT)
        .timeout(timeout)
        .connect_with_connector(tower::service_fn(move |_: Uri| {
            let path = path.clone();
            async move {
                let stream = tokio::net::UnixStream::connect(path).await?;
                Ok::<_, std::io::Error>(TokioIo::new(stream))
            }
        }))
        .await
        .with_context(|| format!("cannot reach crustd at {}", socket.display()))
}

/// What `crustd status` reports, gathered before anything is printed.
struct Report {
    socket: PathBuf,
    version: cri::VersionResponse,
    status: cri::StatusResponse,
    cgroup_driver: String,
    pods: (usize, usize),
    containers: (usize, usize),
    images: usize,
}

/// Runs `work` on a current-thread runtime: the CLI commands that talk to
/// a crustd (status, wipe, check) make a few calls and exit.
pub fn block_on<F: std::future::Future>(work: F) -> anyhow::Result<F::Output> {
    Ok(tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?
        .block_on(work))
}

pub fn run(socket: &Path) -> anyhow::Result<()> {
    let report = block_on(gather(socket))??;
    print!("{}", render(&report));
    Ok(())
}

/// The runtime's Status (verbose), for `crustd check` too.
pub async fn runtime_status(channel: Channel) -> anyhow::Result<cri::StatusResponse> {
    let mut runtime = RuntimeServiceClient::new(channel);
    Ok(runtime
        .status(cri::StatusRequest { verbose: true })
        .await
        .context("Status")?
        .into_inner())
}

async fn gather(socket: &Path) -> anyhow::Result<Report> {
    let channel = connect(socket).await?;
    let mut runtime =
        RuntimeServiceClient::new(channel.clone()).max_decoding_message_size(MAX_MESSAGE_BYTES);
    let mut images =
        ImageServiceClient::new(channel.clone()).max_decoding_message_size(MAX_MESSAGE_BYTES);
    let version = runtime
        .version(cri::VersionRequest {
            version: "v1".into(),
        })
        .await
        .context("Version")?
        .into_inner();
    let status = runtime_status(channel).await?;
    let cgroup_driver = match status.info.get("cgroupDriver") {
        Some(json) => json.trim().trim_matches('"').to_string(),
        // Not crust (or an older one): the CRI call every runtime has.
        None => match runtime.runtime_config(cri::RuntimeConfigRequest {}).await {
            Ok(r) => r
                .into_inner()
                .linux
                .and_then(|l| cri::CgroupDriver::try_from(l.cgroup_driver).ok())
                .map(|d| d.as_str_name().to_ascii_lowercase())
                .unwrap_or_else(|| "unknown".into()),
            Err(_) => "unknown".into(),
        },
    };
    let pods = runtime
        .list_pod_sandbox(cri::ListPodSandboxRequest::default())
        .await
        .context("ListPodSandbox")?
        .into_inner()
        .items;
    let ready = cri::PodSandboxState::SandboxReady as i32;
    let containers = runtime
        .list_containers(cri::ListContainersRequest::default())
        .await
        .context("ListContainers")?
        .into_inner()
        .containers;
    let running = cri::ContainerState::ContainerRunning as i32;
    let image_count = images
        .list_images(cri::ListImagesRequest::default())
        .await
        .context("ListImages")?
        .into_inner()
        .images
        .len();
    Ok(Report {
        socket: socket.to_path_buf(),
        version,
        status,
        cgroup_driver,
        pods: (pods.iter().filter(|p| p.state == ready).count(), pods.len()),
        containers: (
            containers.iter().filter(|c| c.state == running).count(),
            containers.len(),
        ),
        images: image_count,
    })
}

/// One condition's line value: `yes`, or `no (Reason: message)`.
pub fn condition_text(status: &cri::StatusResponse, kind: &str) -> String {
    let found = status
        .status
        .as_ref()
        .and_then(|s| s.conditions.iter().find(|c| c.r#type == kind));
    match found {
        Some(c) if c.status => "yes".to_string(),
        Some(c) => {
            let detail = [c.reason.as_str(), c.message.as_str()]
                .into_iter()
                .filter(|s| !s.is_empty())
                .collect::<Vec<_>>()
                .join(": ");
            if detail.is_empty() {
                "no".to_string()
            } else {
                format!("no ({detail})")
            }
        }
        None => "unknown (not reported)".to_string(),
    }
}

fn render(r: &Report) -> String {
    let v = &r.version;
    let mut version = format!(
        "{} {} (CRI {})",
        v.runtime_name, v.runtime_version, v.runtime_api_version
    );
    // After an upgrade the binary on disk and the running daemon differ
    // until crust is restarted.
    let mine = env!("CARGO_PKG_VERSION");
    if v.runtime_name == "crust" && v.runtime_version != mine {
        version.push_str(&format!("; this crustd binary is {mine}"));
    }
    let mut lines = vec![
        ("socket", r.socket.display().to_string()),
        ("version", version),
        ("runtime ready", condition_text(&r.status, "RuntimeReady")),
        ("network ready", condition_text(&r.status, "NetworkReady")),
        ("cgroup driver", r.cgroup_driver.clone()),
        ("pods", format!("{} ready / {} total", r.pods.0, r.pods.1)),
        (
            "containers",
            format!("{} running / {} total", r.containers.0, r.containers.1),
        ),
        ("images", r.images.to_string()),
    ];
    lines.extend(pull_lines(&r.status));
    for handler in &r.status.runtime_handlers {
        let name = if handler.name.is_empty() {
            "(default)"
        } else {
            handler.name.as_str()
        };
        let f = handler.features.unwrap_or_default();
        lines.push((
            "handler",
            format!(
                "{name}: user namespaces {}, recursive read-only mounts {}",
                yes_no(f.user_namespaces),
                yes_no(f.recursive_read_only_mounts)
            ),
        ));
    }
    lines
        .into_iter()
        .map(|(k, v)| format!("{:<15}{v}\n", format!("{k}:")))
        .collect()
}

/// One line per pull in flight (verbose Status' `pullsInFlight`), or
/// `pulls: none`.
fn pull_lines(status: &cri::StatusResponse) -> Vec<(&'static str, String)> {
    let pulls: Vec<serde_json::Value> = status
        .info
        .get("pullsInFlight")
        .and_then(|j| serde_json::from_str(j).ok())
        .unwrap_or_default();
    if pulls.is_empty() {
        return vec![("pulls", "none in flight".to_string())];
    }
    pulls
        .iter()
        .map(|p| {
            let n = |k: &str| p[k].as_u64().unwrap_or(0);
            let via = p["via"]
                .as_str()
                .filter(|v| !v.is_empty())
                .unwrap_or("resolving");
            (
                "pull",
                format!(
                    "{} via {via}: {} of {} bytes, {} layers, {:.0} s",
                    p["image"].as_str().unwrap_or("?"),
                    n("bytesDone"),
                    n("bytesTotal"),
                    n("layers"),
                    p["seconds"].as_f64().unwrap_or(0.0)
                ),
            )
        })
        .collect()
}

fn yes_no(b: bool) -> &'static str {
    if b { "yes" } else { "no" }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(conditions: Vec<cri::RuntimeCondition>) -> cri::StatusResponse {
        cri::StatusResponse {
            status: Some(cri::RuntimeStatus { conditions }),
            ..Default::default()
        }
    }

    fn condition(kind: &str, ok: bool, reason: &str, message: &str) -> cri::RuntimeCondition {
        cri::RuntimeCondition {
            r#type: kind.into(),
            status: ok,
            reason: reason.into(),
            message: message.into(),
        }
    }

    #[test]
    fn conditions_say_why_when_not_ready() {
        let s = status(vec![
            condition("RuntimeReady", true, "", ""),
            condition(
                "NetworkReady",
                false,
                "NetworkPluginNotReady",
                "no network config found in /etc/cni/net.d",
            ),
        ]);
        assert_eq!(condition_text(&s, "RuntimeReady"), "yes");
        assert_eq!(
            condition_text(&s, "NetworkReady"),
            "no (NetworkPluginNotReady: no network config found in /etc/cni/net.d)"
        );
        assert_eq!(condition_text(&s, "Other"), "unknown (not reported)");
        let s = status(vec![condition("RuntimeReady", false, "", "")]);
        assert_eq!(condition_text(&s, "RuntimeReady"), "no");
    }

    #[test]
    fn socket_flag_takes_a_path_or_a_unix_url() {
        assert_eq!(
            socket_from_flag("unix:///run/crust/crust.sock").unwrap(),
            Path::new("/run/crust/crust.sock")
        );
        assert_eq!(
            socket_from_flag("/tmp/x.sock").unwrap(),
            Path::new("/tmp/x.sock")
        );
        assert!(socket_from_flag("tcp://127.0.0.1:1").is_err());
        assert!(socket_from_flag("unix://").is_err());
    }

    #[test]
    fn report_lines_are_key_value() {
        let r = Report {
            socket: "/run/crust/crust.sock".into(),
            version: cri::VersionResponse {
                version: "0.1.0".into(),
                runtime_name: "crust".into(),
                runtime_version: env!("CARGO_PKG_VERSION").into(),
                runtime_api_version: "v1".into(),
            },
            status: status(vec![
                condition("RuntimeReady", true, "", ""),
                condition("NetworkReady", true, "", ""),
            ]),
            cgroup_driver: "cgroupfs".into(),
            pods: (1, 2),
            containers: (1, 3),
            images: 4,
        };
        let text = render(&r);
        for want in [
            "socket:        /run/crust/crust.sock\n",
            "runtime ready: yes\n",
            "network ready: yes\n",
            "cgroup driver: cgroupfs\n",
            "pods:          1 ready / 2 total\n",
            "containers:    1 running / 3 total\n",
            "images:        4\n",
            "pulls:         none in flight\n",
        ] {
            assert!(text.contains(want), "{want:?} in:\n{text}");
        }
        let mut busy = r.status.clone();
        busy.info.insert(
            "pullsInFlight".into(),
            r#"[{"image":"r.io/a:1","via":"mirror.local","seconds":3.2,"layers":2,"bytesDone":80,"bytesTotal":150}]"#.into(),
        );
        assert_eq!(
            pull_lines(&busy),
            [(
                "pull",
                "r.io/a:1 via mirror.local: 80 of 150 bytes, 2 layers, 3 s".to_string()
            )]
        );
        assert!(
            text.contains(&format!(
                "version:       crust {} (CRI v1)\n",
                env!("CARGO_PKG_VERSION")
            )),
            "{text}"
        );
    }
}
