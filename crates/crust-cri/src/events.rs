//! GetContainerEvents: crust-runtime's lifecycle events as the CRI stream,
//! each with the pod's status and its containers' statuses as they are
//! when the event is sent (what kubelet's evented PLEG reads).

use std::sync::Arc;

use crust_cri_api::v1 as cri;
use tokio::sync::{broadcast, mpsc};
use tokio_stream::wrappers::ReceiverStream;
use tonic::Status;

use crust_runtime::Pods;
use crust_runtime::lifecycle::{LifecycleEvent, LifecycleKind};

use crate::runtime_service::EventStream;

/// Responses buffered for one client before its events wait.
const CLIENT_BUFFER: usize = 64;

pub(crate) fn container_events(pods: Arc<Pods>) -> EventStream {
    let mut events = pods.subscribe_lifecycle();
    let (tx, rx) = mpsc::channel(CLIENT_BUFFER);
    tokio::spawn(async move {
        loop {
            let next = tokio::select! {
                next = events.recv() => next,
                () = tx.closed() => return,
                () = pods.lifecycle_streams_ended() => return,
            };
            let item = match next {
                Ok(event) => Ok(response(&pods, event)),
                Err(broadcast::error::RecvError::Lagged(missed)) => {
                    Err(Status::resource_exhausted(format!(
                        "this client fell {missed} container events behind; list pods and containers, then subscribe again"
                    )))
                }
                Err(broadcast::error::RecvError::Closed) => return,
            };
            let ends = item.is_err();
            if tx.send(item).await.is_err() || ends {
                return;
            }
        }
    });
    Box::pin(ReceiverStream::new(rx))
}

fn response(pods: &Pods, event: LifecycleEvent) -> cri::ContainerEventResponse {
    let pod_sandbox_status = pods
        .pod_sandbox_status(&event.pod_id, false)
        .ok()
        .and_then(|r| r.status);
    let of_pod = cri::ContainerStatsFilter {
        pod_sandbox_id: event.pod_id.clone(),
        ..Default::default()
    };
    let containers_statuses = pods
        .container_ids(Some(&of_pod))
        .unwrap_or_default()
        .iter()
        .filter_map(|id| pods.container_status(id, false).ok()?.status)
        .collect();
    cri::ContainerEventResponse {
        container_id: event.container_id,
        container_event_type: event_type(event.kind) as i32,
        created_at: event.at_nanos,
        pod_sandbox_status,
        containers_statuses,
    }
}

fn event_type(kind: LifecycleKind) -> cri::ContainerEventType {
    match kind {
        LifecycleKind::Created => cri::ContainerEventType::ContainerCreatedEvent,
        LifecycleKind::Started => cri::ContainerEventType::ContainerStartedEvent,
        LifecycleKind::Stopped => cri::ContainerEventType::ContainerStoppedEvent,
        LifecycleKind::Deleted => cri::ContainerEventType::ContainerDeletedEvent,
    }
}
