//! The files of a container's bundle directory that both sides name.
//!
//! crustd creates the bundle (`<state>/containers/<id>`) and hands its path
//! to the shim in Create; from then on both look into it by these names.
//! crustd keeps files of its own there too (FIFOs, exec directories):
//! the names below must not be reused for them.

/// The OCI runtime spec: written by crustd at CreateContainer, loaded by
/// the shim at Create (and read back by crustd for exec and status).
pub const CONFIG: &str = "config.json";

/// The container's root filesystem, where the spec's `root.path` points:
/// crustd mounts the image's snapshot there; the shim mounts there the
/// rootfs mounts a Create request carries (containerd's way) and unmounts
/// what it mounted at Delete.
pub const ROOTFS: &str = "rootfs";

/// The unix socket the shim listens on for attach clients of the
/// container's main process (see [`crate::attach`]); crustd connects to
/// it for CRI Attach.
pub const ATTACH_SOCKET: &str = "attach";
