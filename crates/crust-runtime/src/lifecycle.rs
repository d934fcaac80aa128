//! Lifecycle events of pods and containers, for CRI GetContainerEvents
//! (kubelet's evented PLEG). Published after the change is in the store,
//! so a subscriber that reads status on an event sees the new state.
//! Delivery is best effort, as containerd's: a subscriber that falls
//! more than `CAPACITY` events behind is told so and must relist.

use tokio::sync::broadcast;

use crate::{Pods, now_nanos};

/// Events kept for a slow subscriber before it is cut off.
const CAPACITY: usize = 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LifecycleKind {
    Created,
    Started,
    Stopped,
    Deleted,
}

/// One change. For a pod's own events `container_id` is the pod's id, as
/// containerd reports them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LifecycleEvent {
    pub kind: LifecycleKind,
    pub container_id: String,
    pub pod_id: String,
    pub at_nanos: i64,
}

pub(crate) fn channel() -> broadcast::Sender<LifecycleEvent> {
    broadcast::channel(CAPACITY).0
}

impl Pods {
    /// Every lifecycle event from now on.
    pub fn subscribe_lifecycle(&self) -> broadcast::Receiver<LifecycleEvent> {
        self.lifecycle.subscribe()
    }

    /// Ends every event stream (at shutdown: a gRPC server waits for its
    /// open streams, and these never end on their own).
    pub fn end_lifecycle_streams(&self) {
        let _ = self.lifecycle_end.send(true);
    }

    /// Resolves once [`Pods::end_lifecycle_streams`] was called.
    pub async fn lifecycle_streams_ended(&self) {
        let mut ended = self.lifecycle_end.subscribe();
        let _ = ended.wait_for(|e| *e).await;
    }

    pub(crate) fn publish(&self, kind: LifecycleKind, container_id: &str, pod_id: &str) {
        // No subscriber is not an error.
        let _ = self.lifecycle.send(LifecycleEvent {
            kind,
            container_id: container_id.to_owned(),
            pod_id: pod_id.to_owned(),
            at_nanos: now_nanos(),
        });
    }
}
