//! The task events the shim publishes to crustd's Events service.
//!
//! The shim forwards each event as a containerd `Envelope`: a topic, and
//! the event as an `Any` whose type URL names its protobuf message. The
//! shim sends the bare message name as the type URL, which spares it
//! protobuf reflection; crustd decodes by that name (taking the part after
//! the last `/`, so a `type.googleapis.com/` prefix decodes too) and turns
//! [`EXIT`] and [`OOM`] into updates of its container records.
//!
//! The topics are containerd's (`containerd-shim-protos`' `topics`, which
//! the shim's tests compare these with); they are written out here so
//! this crate needs nothing but std.

/// An event's topic and the protobuf message type its payload is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Topic {
    /// The envelope's topic.
    pub topic: &'static str,
    /// The full name of the event's message, sent as the `Any`'s type URL.
    pub type_url: &'static str,
}

/// A container was created (`TaskCreate`).
pub const CREATE: Topic = Topic {
    topic: "/tasks/create",
    type_url: "containerd.events.TaskCreate",
};
/// A container's main process started (`TaskStart`).
pub const START: Topic = Topic {
    topic: "/tasks/start",
    type_url: "containerd.events.TaskStart",
};
/// A process exited (`TaskExit`): crustd records its container's exit
/// when it is the main process.
pub const EXIT: Topic = Topic {
    topic: "/tasks/exit",
    type_url: "containerd.events.TaskExit",
};
/// The kernel OOM-killed a process of a container (`TaskOOM`): crustd
/// marks the container OOM-killed.
pub const OOM: Topic = Topic {
    topic: "/tasks/oom",
    type_url: "containerd.events.TaskOOM",
};
/// A container was deleted (`TaskDelete`).
pub const DELETE: Topic = Topic {
    topic: "/tasks/delete",
    type_url: "containerd.events.TaskDelete",
};
/// An exec process was added (`TaskExecAdded`).
pub const EXEC_ADDED: Topic = Topic {
    topic: "/tasks/exec-added",
    type_url: "containerd.events.TaskExecAdded",
};
/// An exec process started (`TaskExecStarted`).
pub const EXEC_STARTED: Topic = Topic {
    topic: "/tasks/exec-started",
    type_url: "containerd.events.TaskExecStarted",
};

/// Every topic the shim publishes.
pub const ALL: [Topic; 7] = [CREATE, START, EXIT, OOM, DELETE, EXEC_ADDED, EXEC_STARTED];

/// The message name a type URL names: what follows its last `/`, or all
/// of it (the shim sends bare names).
pub fn type_name(type_url: &str) -> &str {
    type_url.rsplit('/').next().unwrap_or(type_url)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn type_names_with_or_without_a_prefix() {
        assert_eq!(type_name(EXIT.type_url), "containerd.events.TaskExit");
        assert_eq!(
            type_name("type.googleapis.com/containerd.events.TaskOOM"),
            OOM.type_url
        );
        assert_eq!(type_name(""), "");
    }

    #[test]
    fn topics_and_types_are_distinct() {
        for (i, a) in ALL.iter().enumerate() {
            assert!(a.topic.starts_with("/tasks/"), "{a:?}");
            assert!(a.type_url.starts_with("containerd.events.Task"), "{a:?}");
            for b in &ALL[i + 1..] {
                assert_ne!(a.topic, b.topic);
                assert_ne!(a.type_url, b.type_url);
            }
        }
    }
}
