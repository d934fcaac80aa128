//! The containerd Events ttrpc service shims publish to (TTRPC_ADDRESS).
//! crustd serves it before it starts any shim and turns TaskExit/TaskOOM
//! into updates of its container records.

use std::sync::Arc;

use containerd_shim_protos::events::task::{TaskExit, TaskOOM};
use containerd_shim_protos::protobuf::Message;
use containerd_shim_protos::shim::events::ForwardRequest;
use containerd_shim_protos::shim_async::{Events, create_events};
use containerd_shim_protos::ttrpc::r#async::TtrpcContext;
use containerd_shim_protos::ttrpc::asynchronous::Server;
use crust_shim_proto::events as shim_events;
use tokio::sync::mpsc;

/// What crustd cares about from a shim.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ShimEvent {
    Exit {
        container_id: String,
        /// The exec id, or the container id for its main process.
        id: String,
        exit_status: u32,
        exited_at_nanos: i64,
    },
    Oom {
        container_id: String,
    },
}

struct Forwarder {
    tx: mpsc::UnboundedSender<ShimEvent>,
}

#[async_trait::async_trait]
impl Events for Forwarder {
    async fn forward(
        &self,
        _ctx: &TtrpcContext,
        request: ForwardRequest,
    ) -> containerd_shim_protos::ttrpc::Result<
        containerd_shim_protos::protobuf::well_known_types::empty::Empty,
    > {
        if let Some(event) = decode(&request) {
            let _ = self.tx.send(event);
        }
        Ok(Default::default())
    }
}

fn decode(request: &ForwardRequest) -> Option<ShimEvent> {
    let envelope = request.envelope.as_ref()?;
    let any = envelope.event.as_ref()?;
    let kind = shim_events::type_name(&any.type_url);
    match kind {
        k if k == shim_events::EXIT.type_url => {
            let e = TaskExit::parse_from_bytes(&any.value).ok()?;
            let at = e.exited_at.as_ref();
            Some(ShimEvent::Exit {
                container_id: e.container_id,
                id: e.id,
                exit_status: e.exit_status,
                exited_at_nanos: at.map_or(0, |t| t.seconds * 1_000_000_000 + t.nanos as i64),
            })
        }
        k if k == shim_events::OOM.type_url => {
            let e = TaskOOM::parse_from_bytes(&any.value).ok()?;
            Some(ShimEvent::Oom {
                container_id: e.container_id,
            })
        }
        _ => None,
    }
}

/// Serves the Events service on the unix socket `path`; keep the returned
/// server alive for as long as shims may publish.
pub async fn serve(
    path: &std::path::Path,
) -> std::io::Result<(Server, mpsc::UnboundedReceiver<ShimEvent>)> {
    let _ = std::fs::remove_file(path);
    let (tx, rx) = mpsc::unbounded_channel();
    let service = create_events(Arc::new(Forwarder { tx }));
    let mut server = Server::new()
        .bind(&format!("unix://{}", path.display()))
        .map_err(std::io::Error::other)?
        .register_service(service);
    // Only shims (host root) publish here: whatever the umask made of it.
    std::fs::set_permissions(path, std::os::unix::fs::PermissionsExt::from_mode(0o600))?;
    server.start().await.map_err(std::io::Error::other)?;
    Ok((server, rx))
}

#[cfg(test)]
mod tests {
    #[tokio::test]
    async fn the_events_socket_is_0600() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("events.sock");
        let (_server, _rx) = super::serve(&path).await.unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o7777, 0o600);
    }
}
