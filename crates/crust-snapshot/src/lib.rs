//! crust's overlayfs snapshotter.
//!
//! Layout under the root (0700), or under the image root (`layers/`) and
//! the container root (`rw/`) when [`Snapshotter::split`] parts them:
//!
//! ```text
//! layers/<hex>/fs     an unpacked layer, <hex> from its chain id "sha256:<hex>"
//! rw/<key>/upper      a container's read-write layer (key: container id)
//! rw/<key>/work       overlayfs' work dir for it
//! tmp-*               in-progress unpacks, snapshots and removals (per root)
//! ```
//!
//! Every change becomes visible through one rename, so a crash leaves either
//! the old state or the new one plus a `tmp-*` dir, removed by the next
//! [`Snapshotter::new`].
//!
//! [`unpack_layer`] turns an OCI layer tar into overlayfs' form (whiteouts as
//! 0:0 char devices, opaque dirs by xattr) without ever touching anything
//! outside its destination.

mod snapshot;
mod sys;
mod unpack;
mod usage;

pub use snapshot::{PendingLayer, RwSnapshot, SnapshotError, Snapshotter};
pub use unpack::{
    MAX_ENTRIES, MAX_PATH_LEN, UnpackError, UnpackStats, unpack_layer, unpack_layer_capped,
};
pub use usage::{Usage, dir_usage};
