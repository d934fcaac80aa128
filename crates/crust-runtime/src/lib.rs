//! Pods and containers.

pub mod cgroup;
pub mod events;
pub mod namespaces;
