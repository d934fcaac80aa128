//! The frames on the attach socket ([`crate::bundle::ATTACH_SOCKET`]).
//!
//! The shim writes a process's output to every attach client as frames
//! `[stream: u8][len: u32 big-endian][payload: len bytes]`; crustd reads
//! them and passes each payload on to the client's stdout or stderr. The
//! stream says which: a plain byte stream could not keep stdout and
//! stderr apart. Nothing flows the other way (stdin goes through the
//! container's stdin FIFO). A frame's payload is at most
//! [`MAX_PAYLOAD`] bytes.

use std::fmt;

/// Stream id of the process's stdout, and of a terminal's only output.
pub const STDOUT: u8 = 1;
/// Stream id of the process's stderr (never used with a terminal).
pub const STDERR: u8 = 2;

/// Bytes of a frame's header: the stream id and the payload length.
pub const HEADER_LEN: usize = 5;

/// Largest payload a frame may carry. The shim's frames are as large as
/// its copy buffer (a few KiB); the limit is well above that, and lets
/// crustd refuse a length that is garbage instead of allocating it.
pub const MAX_PAYLOAD: usize = 1 << 20;

/// A frame's header: which stream, and how many payload bytes follow.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Header {
    /// [`STDOUT`] or [`STDERR`]; readers skip frames of other ids.
    pub stream: u8,
    /// Payload bytes after the header, at most [`MAX_PAYLOAD`].
    pub len: usize,
}

/// A whole frame, borrowed from the buffer it was decoded from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Frame<'a> {
    pub stream: u8,
    pub payload: &'a [u8],
}

/// A payload length over [`MAX_PAYLOAD`], being written or announced.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FrameTooLarge {
    /// The length asked for or announced.
    pub len: usize,
}

impl fmt::Display for FrameTooLarge {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}-byte attach frame is over the {MAX_PAYLOAD}-byte limit",
            self.len
        )
    }
}

impl std::error::Error for FrameTooLarge {}

/// Why a buffer holds no whole frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FrameError {
    /// The header announces more than [`MAX_PAYLOAD`] bytes.
    TooLarge(FrameTooLarge),
    /// The buffer ends inside the header or the payload (more may come,
    /// or the writer hung up mid-frame, as the shim does with a client
    /// that fell behind).
    Truncated,
}

impl fmt::Display for FrameError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FrameError::TooLarge(e) => e.fmt(f),
            FrameError::Truncated => f.write_str("truncated attach frame"),
        }
    }
}

impl std::error::Error for FrameError {}

impl From<FrameTooLarge> for FrameError {
    fn from(e: FrameTooLarge) -> Self {
        FrameError::TooLarge(e)
    }
}

/// The header of a frame of `len` payload bytes on `stream`. The writer
/// sends it and then the payload (the shim in one `sendmsg`, so a frame
/// goes out whole or not at all).
pub fn encode_header(stream: u8, len: usize) -> Result<[u8; HEADER_LEN], FrameTooLarge> {
    if len > MAX_PAYLOAD {
        return Err(FrameTooLarge { len });
    }
    let l = u32::try_from(len)
        .expect("MAX_PAYLOAD fits a u32")
        .to_be_bytes();
    Ok([stream, l[0], l[1], l[2], l[3]])
}

/// Reads a header; a length over [`MAX_PAYLOAD`] is refused before the
/// reader makes room for the payload.
pub fn decode_header(header: &[u8; HEADER_LEN]) -> Result<Header, FrameTooLarge> {
    let len = u32::from_be_bytes([header[1], header[2], header[3], header[4]]) as usize;
    if len > MAX_PAYLOAD {
        return Err(FrameTooLarge { len });
    }
    Ok(Header {
        stream: header[0],
        len,
    })
}

/// The first frame of `buf`, and the bytes after it.
pub fn decode(buf: &[u8]) -> Result<(Frame<'_>, &[u8]), FrameError> {
    let Some((header, rest)) = buf.split_first_chunk::<HEADER_LEN>() else {
        return Err(FrameError::Truncated);
    };
    let Header { stream, len } = decode_header(header)?;
    if rest.len() < len {
        return Err(FrameError::Truncated);
    }
    let (payload, rest) = rest.split_at(len);
    Ok((Frame { stream, payload }, rest))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(stream: u8, payload: &[u8]) -> Vec<u8> {
        let mut out = encode_header(stream, payload.len()).unwrap().to_vec();
        out.extend_from_slice(payload);
        out
    }

    #[test]
    fn header_is_stream_then_big_endian_length() {
        assert_eq!(encode_header(STDOUT, 0), Ok([1, 0, 0, 0, 0]));
        assert_eq!(encode_header(STDERR, 5), Ok([2, 0, 0, 0, 5]));
        assert_eq!(encode_header(STDOUT, 8192), Ok([1, 0, 0, 0x20, 0]));
        assert_eq!(
            encode_header(STDERR, 0x0A_0B0C),
            Ok([2, 0, 0x0A, 0x0B, 0x0C])
        );
        assert_eq!(
            decode_header(&[2, 0, 0x0A, 0x0B, 0x0C]),
            Ok(Header {
                stream: STDERR,
                len: 0x0A_0B0C
            })
        );
    }

    #[test]
    fn frames_round_trip() {
        let big = vec![b'x'; MAX_PAYLOAD];
        let mut buf = Vec::new();
        for (stream, payload) in [
            (STDOUT, &b"hello\n"[..]),
            (STDERR, b""),
            (STDERR, b"oops"),
            (7, b"unknown streams decode too"),
            (STDOUT, &big[..]),
        ] {
            let one = frame(stream, payload);
            assert_eq!(one.len(), HEADER_LEN + payload.len());
            let (f, rest) = decode(&one).unwrap();
            assert_eq!(f, Frame { stream, payload });
            assert!(rest.is_empty());
            buf.extend_from_slice(&one);
        }
        // Back to back, as they come off the socket.
        let mut rest = &buf[..];
        let mut streams = Vec::new();
        while !rest.is_empty() {
            let (f, r) = decode(rest).unwrap();
            streams.push((f.stream, f.payload.len()));
            rest = r;
        }
        assert_eq!(streams, [(1, 6), (2, 0), (2, 4), (7, 26), (1, MAX_PAYLOAD)]);
    }

    #[test]
    fn frames_over_the_limit_are_refused() {
        let over = MAX_PAYLOAD + 1;
        assert_eq!(
            encode_header(STDOUT, over),
            Err(FrameTooLarge { len: over })
        );
        assert_eq!(
            encode_header(STDOUT, usize::MAX),
            Err(FrameTooLarge { len: usize::MAX })
        );
        let l = (over as u32).to_be_bytes();
        let header = [STDOUT, l[0], l[1], l[2], l[3]];
        assert_eq!(decode_header(&header), Err(FrameTooLarge { len: over }));
        // Refused from the header alone: the payload is never waited for.
        assert_eq!(
            decode(&header),
            Err(FrameError::TooLarge(FrameTooLarge { len: over }))
        );
        assert_eq!(
            decode_header(&[STDERR, 0xff, 0xff, 0xff, 0xff]),
            Err(FrameTooLarge {
                len: u32::MAX as usize
            })
        );
        assert!(
            FrameTooLarge { len: over }
                .to_string()
                .starts_with("1048577-byte attach frame")
        );
    }

    #[test]
    fn truncated_frames_are_incomplete() {
        let whole = frame(STDOUT, b"hello");
        for cut in 0..whole.len() {
            assert_eq!(decode(&whole[..cut]), Err(FrameError::Truncated), "{cut}");
        }
        // A whole frame followed by part of the next one.
        let mut two = whole.clone();
        two.extend_from_slice(&frame(STDERR, b"world")[..7]);
        let (f, rest) = decode(&two).unwrap();
        assert_eq!(f.payload, b"hello");
        assert_eq!(decode(rest), Err(FrameError::Truncated));
    }
}
