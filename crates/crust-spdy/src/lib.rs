//! SPDY/3.1 framing and a multiplexed session, for Kubernetes streaming
//! (exec, attach, port-forward as kubectl and crictl speak it).
//!
//! Written by hand: no maintained Rust SPDY crate exists (SPDY was
//! superseded by HTTP/2 and dropped by browsers in 2016), yet Kubernetes
//! clients still upgrade to `SPDY/3.1` through Go's
//! [moby/spdystream](https://github.com/moby/spdystream). This crate is
//! written against that implementation and tested with frames captured
//! from it: control frames carry version 3, header names are lowercase,
//! header blocks are zlib-compressed with the SPDY/3 dictionary, one
//! compression context per direction for the whole session, each block
//! ended by a sync flush. It was also run against spdystream itself in
//! both roles (a Go echo server and a Go client over TCP: concurrent
//! streams of up to 1 MB each way, PING, GOAWAY).
//!
//! - [`frame`]: the frames, an [`Encoder`](frame::Encoder) and an
//!   incremental [`Decoder`](frame::Decoder) (pure, no I/O).
//! - [`session`]: a tokio session over any byte stream: open and accept
//!   streams, read and write them as `AsyncRead` / `AsyncWrite`.

#![forbid(unsafe_code)]

mod dictionary;
pub mod frame;
pub mod session;

pub use frame::{Frame, FrameError, Headers};
pub use session::{Error, Limits, Role, Session, Stream, StreamReader, StreamWriter};
