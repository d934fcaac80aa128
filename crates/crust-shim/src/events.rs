//! Task events for the runtime (crustd or containerd), published the
//! standard way: an `Envelope` (topic, namespace, timestamp, event as an
//! `Any`) sent with `containerd.services.events.ttrpc.v1.Events/Forward` to
//! TTRPC_ADDRESS, as containerd-shim's `RemotePublisher` does. The event's
//! type URL is written out (in `crust_shim_proto::events`) instead of
//! asking protobuf reflection, which would build descriptor tables
//! (hundreds of KB) in every shim.
//!
//! Publishing runs on its own thread behind a bounded queue: a runtime that
//! is down or slow loses events (it reconciles with State/Wait when it
//! comes back) but never stalls or breaks the shim.

use std::sync::Arc;
use std::sync::mpsc::{Receiver, SyncSender, TrySendError, sync_channel};
use std::thread;
use std::time::{Duration, SystemTime};

use containerd_shim::util::connect;
use containerd_shim_protos::EventsClient;
use containerd_shim_protos::protobuf::Message;
use containerd_shim_protos::protobuf::well_known_types::any::Any;
use containerd_shim_protos::shim::event::Envelope;
use containerd_shim_protos::shim::events::ForwardRequest;
use containerd_shim_protos::ttrpc::{Client, context};

use crate::timefmt::to_timestamp;
use crate::trim::Activity;

/// The topics published, and the message type of each (crustd decodes by them).
pub use crust_shim_proto::events::{
    CREATE, DELETE, EXEC_ADDED, EXEC_STARTED, EXIT, OOM, START, Topic,
};

const QUEUE: usize = 256;
const TIMEOUT: Duration = Duration::from_secs(5);

pub struct Publisher {
    tx: Option<SyncSender<Envelope>>,
    namespace: String,
}

impl Publisher {
    /// An empty address publishes nothing.
    /// `activity` is touched after each batch: publishing runs code the
    /// idle shim had released.
    pub fn start(address: String, namespace: String, activity: Arc<Activity>) -> Publisher {
        if address.is_empty() {
            return Publisher {
                tx: None,
                namespace,
            };
        }
        let (tx, rx) = sync_channel(QUEUE);
        let spawned = thread::Builder::new()
            .name("events".into())
            .stack_size(256 * 1024)
            .spawn(move || forward(&address, rx, &activity));
        if let Err(e) = spawned {
            log::error!("events thread: {e}");
            return Publisher {
                tx: None,
                namespace,
            };
        }
        Publisher {
            tx: Some(tx),
            namespace,
        }
    }

    pub fn publish(&self, topic: Topic, event: impl Message) {
        let Some(tx) = &self.tx else { return };
        let value = match event.write_to_bytes() {
            Ok(v) => v,
            Err(e) => {
                log::error!("encode {}: {e}", topic.topic);
                return;
            }
        };
        let envelope = Envelope {
            timestamp: Some(to_timestamp(SystemTime::now())).into(),
            namespace: self.namespace.clone(),
            topic: topic.topic.to_owned(),
            event: Some(Any {
                type_url: topic.type_url.to_owned(),
                value,
                ..Default::default()
            })
            .into(),
            ..Default::default()
        };
        match tx.try_send(envelope) {
            Ok(()) => {}
            Err(TrySendError::Full(e)) => log::warn!("event queue full, dropped {}", e.topic),
            Err(TrySendError::Disconnected(e)) => {
                log::warn!("events thread gone, dropped {}", e.topic)
            }
        }
    }
}

/// Connects when events are queued and hangs up when the queue is empty:
/// an idle shim holds no connection (and no client threads).
fn forward(address: &str, rx: Receiver<Envelope>, activity: &Activity) {
    while let Ok(first) = rx.recv() {
        let client = match connect(address)
            .map_err(|e| e.to_string())
            .and_then(|fd| Client::new(fd).map_err(|e| e.to_string()))
        {
            Ok(c) => Some(EventsClient::new(c)),
            Err(e) => {
                log::warn!("connect to the events service {address}: {e}");
                None
            }
        };
        let mut next = Some(first);
        while let Some(envelope) = next.take().or_else(|| rx.try_recv().ok()) {
            let Some(c) = &client else { continue };
            let topic = envelope.topic.clone();
            let req = ForwardRequest {
                envelope: Some(envelope).into(),
                ..Default::default()
            };
            if let Err(e) = c.forward(context::with_duration(TIMEOUT), &req) {
                log::warn!("publish {topic}: {e}");
            }
        }
        drop(client);
        activity.touch();
    }
}

#[cfg(test)]
mod tests {
    use containerd_shim_protos::events::task::{
        TaskCreate, TaskDelete, TaskExecAdded, TaskExecStarted, TaskExit, TaskOOM, TaskStart,
    };
    use containerd_shim_protos::protobuf::MessageFull;
    use containerd_shim_protos::topics;

    use super::*;

    /// The topics and type URLs written out in crust-shim-proto are
    /// containerd's.
    #[test]
    fn topics_and_types_are_containerds() {
        fn name<M: MessageFull>() -> String {
            M::descriptor().full_name().to_owned()
        }
        for (topic, want_topic, want_type) in [
            (
                CREATE,
                topics::TASK_CREATE_EVENT_TOPIC,
                name::<TaskCreate>(),
            ),
            (START, topics::TASK_START_EVENT_TOPIC, name::<TaskStart>()),
            (EXIT, topics::TASK_EXIT_EVENT_TOPIC, name::<TaskExit>()),
            (OOM, topics::TASK_OOM_EVENT_TOPIC, name::<TaskOOM>()),
            (
                DELETE,
                topics::TASK_DELETE_EVENT_TOPIC,
                name::<TaskDelete>(),
            ),
            (
                EXEC_ADDED,
                topics::TASK_EXEC_ADDED_EVENT_TOPIC,
                name::<TaskExecAdded>(),
            ),
            (
                EXEC_STARTED,
                topics::TASK_EXEC_STARTED_EVENT_TOPIC,
                name::<TaskExecStarted>(),
            ),
        ] {
            assert_eq!(topic.topic, want_topic);
            assert_eq!(topic.type_url, want_type);
        }
    }
}
