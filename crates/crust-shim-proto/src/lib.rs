//! The private contract between crustd (crate `crust-runtime`) and its
//! per-pod shim `crust-shim`.
//!
//! The two talk over the containerd shim v2 Task API (ttrpc), whose
//! messages `containerd-shim-protos` defines. Around that API they agree
//! on a few more things that no public protocol fixes: what the shim names
//! in a container's bundle, the frames of its attach socket, the stdio URI
//! that sends output to a CRI log, and which events it publishes under
//! which names. Each of those facts is written here once, and both sides
//! use it, so the two binaries cannot drift apart (they are built from the
//! same workspace, but one side changing a literal would otherwise compile
//! and break at run time). This is the role `shim-protos` plays for
//! rust-extensions' shims and the `common` crate for conmon-rs.
//!
//! std only, no I/O: the wire formats and names, and the pure functions
//! that encode and decode them. Each side does its own reading and
//! writing (the shim blocking, crustd on tokio).

#![forbid(unsafe_code)]

pub mod attach;
pub mod bundle;
pub mod cgroup;
pub mod events;
pub mod logger;
pub mod proc;
pub mod stdio;
