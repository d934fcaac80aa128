//! SPDY/3 frames: the in-memory form, and an encoder/decoder pair that
//! holds one direction's header compression state each.
//!
//! Wire format (SPDY/3 draft, as moby/spdystream's `spdy` package writes
//! and reads it):
//!
//! ```text
//! control: |1| version(15) | type(16) | flags(8) | length(24) | payload
//! data:    |0| stream id(31)          | flags(8) | length(24) | payload
//! ```
//!
//! Header blocks (SYN_STREAM, SYN_REPLY, HEADERS) are `u32 count` then
//! `u32 len, name, u32 len, value` per header, compressed with zlib using
//! the SPDY/3 dictionary. Each direction of a session is one zlib stream:
//! every header block is a continuation ended by a sync flush, so the
//! encoder and decoder must see every header block of their direction, in
//! order, exactly once.
//!
//! Pure code: no I/O, no async.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress, Status};

use crate::dictionary::HEADER_DICTIONARY;

/// The only protocol version spoken (and accepted on control frames).
pub const VERSION: u16 = 3;

/// Largest payload a frame can carry: the length field is 24 bits.
pub const MAX_FRAME_LENGTH: usize = (1 << 24) - 1;

/// Default cap on a received DATA frame's payload.
pub const DEFAULT_MAX_DATA_FRAME: usize = 1 << 20;

/// Cap on one decompressed header block.
pub const MAX_HEADER_BLOCK: usize = 64 * 1024;

/// Cap on the number of headers in one header block.
pub const MAX_HEADERS: usize = 256;

/// Cap on the payload of a known control frame. Header blocks are at most
/// [`MAX_HEADER_BLOCK`] decompressed, and deflate adds only a few bytes per
/// 16 KiB to incompressible data, so this leaves ample room.
pub const MAX_CONTROL_FRAME: usize = 2 * MAX_HEADER_BLOCK;

/// Header list of a SYN_STREAM, SYN_REPLY or HEADERS frame. Names are
/// lowercase; a header with several values keeps SPDY's raw form (values
/// joined by NUL).
pub type Headers = Vec<(String, String)>;

/// Control frame types.
pub mod frame_type {
    pub const SYN_STREAM: u16 = 1;
    pub const SYN_REPLY: u16 = 2;
    pub const RST_STREAM: u16 = 3;
    pub const SETTINGS: u16 = 4;
    pub const PING: u16 = 6;
    pub const GOAWAY: u16 = 7;
    pub const HEADERS: u16 = 8;
    pub const WINDOW_UPDATE: u16 = 9;
}

/// RST_STREAM status codes.
pub mod rst_status {
    pub const PROTOCOL_ERROR: u32 = 1;
    pub const INVALID_STREAM: u32 = 2;
    pub const REFUSED_STREAM: u32 = 3;
    pub const UNSUPPORTED_VERSION: u32 = 4;
    pub const CANCEL: u32 = 5;
    pub const INTERNAL_ERROR: u32 = 6;
    pub const FLOW_CONTROL_ERROR: u32 = 7;
    pub const STREAM_IN_USE: u32 = 8;
    pub const STREAM_ALREADY_CLOSED: u32 = 9;
    pub const INVALID_CREDENTIALS: u32 = 10;
    pub const FRAME_TOO_LARGE: u32 = 11;
}

/// GOAWAY status codes.
pub mod goaway_status {
    pub const OK: u32 = 0;
    pub const PROTOCOL_ERROR: u32 = 1;
    pub const INTERNAL_ERROR: u32 = 2;
}

/// Flag bits.
pub const FLAG_FIN: u8 = 0x01;
/// SYN_STREAM only: the sender will not receive on this stream.
pub const FLAG_UNIDIRECTIONAL: u8 = 0x02;

/// One SETTINGS entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Setting {
    /// Per-entry flags (1 = persist value, 2 = persisted).
    pub flags: u8,
    /// 24-bit setting id (4 = max concurrent streams, 7 = initial window).
    pub id: u32,
    pub value: u32,
}

/// A SPDY/3 frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    Data {
        stream_id: u32,
        fin: bool,
        data: Bytes,
    },
    SynStream {
        stream_id: u32,
        associated_to: u32,
        /// 0 (highest) to 7.
        priority: u8,
        fin: bool,
        unidirectional: bool,
        headers: Headers,
    },
    SynReply {
        stream_id: u32,
        fin: bool,
        headers: Headers,
    },
    RstStream {
        stream_id: u32,
        status: u32,
    },
    Settings {
        entries: Vec<Setting>,
    },
    Ping {
        id: u32,
    },
    GoAway {
        last_good_stream_id: u32,
        status: u32,
    },
    Headers {
        stream_id: u32,
        fin: bool,
        headers: Headers,
    },
    WindowUpdate {
        stream_id: u32,
        delta: u32,
    },
}

/// Why a frame could not be encoded or decoded. Any decode error leaves
/// the decoder (and its compression context) unusable: the session must
/// end.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum FrameError {
    #[error("control frame of unsupported SPDY version {0}")]
    UnsupportedVersion(u16),
    #[error("{kind} frame of {len} bytes exceeds the limit of {max}")]
    TooLarge {
        kind: &'static str,
        len: usize,
        max: usize,
    },
    #[error("invalid {0} frame: {1}")]
    Invalid(&'static str, &'static str),
    #[error("header block: {0}")]
    HeaderBlock(&'static str),
    #[error("header block decompresses to more than {MAX_HEADER_BLOCK} bytes")]
    HeaderBlockTooLarge,
    #[error("header block has more than {MAX_HEADERS} headers")]
    TooManyHeaders,
    #[error("header compression: {0}")]
    Compression(String),
}

fn check_stream_id(kind: &'static str, id: u32) -> Result<(), FrameError> {
    if id & 0x8000_0000 != 0 {
        return Err(FrameError::Invalid(kind, "stream id over 31 bits"));
    }
    Ok(())
}

/// Encodes frames; owns the compression context of one direction.
pub struct Encoder {
    deflate: Compress,
    /// Scratch for the uncompressed header block.
    block: Vec<u8>,
}

impl std::fmt::Debug for Encoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Encoder").finish_non_exhaustive()
    }
}

impl Default for Encoder {
    fn default() -> Self {
        Self::new()
    }
}

impl Encoder {
    pub fn new() -> Self {
        // Best compression, as spdystream (zlib.NewWriterLevelDict with
        // BestCompression); any level decodes the same.
        let mut deflate = Compress::new(Compression::best(), true);
        deflate
            .set_dictionary(&HEADER_DICTIONARY)
            .expect("a fresh deflate stream accepts a dictionary");
        Self {
            deflate,
            block: Vec::new(),
        }
    }

    /// Appends `frame` to `dst`. On error nothing is appended, but a
    /// header-carrying frame that failed after compression (never in
    /// practice: only oversized header blocks fail, before compressing)
    /// would leave the context out of step.
    pub fn encode(&mut self, frame: &Frame, dst: &mut BytesMut) -> Result<(), FrameError> {
        match frame {
            Frame::Data {
                stream_id,
                fin,
                data,
            } => {
                check_stream_id("DATA", *stream_id)?;
                if *stream_id == 0 {
                    return Err(FrameError::Invalid("DATA", "stream id 0"));
                }
                if data.len() > MAX_FRAME_LENGTH {
                    return Err(FrameError::TooLarge {
                        kind: "DATA",
                        len: data.len(),
                        max: MAX_FRAME_LENGTH,
                    });
                }
                dst.reserve(8 + data.len());
                dst.put_u32(*stream_id);
                dst.put_u32(flags_len(u8::from(*fin), data.len()));
                dst.put_slice(data);
            }
            Frame::SynStream {
                stream_id,
                associated_to,
                priority,
                fin,
                unidirectional,
                headers,
            } => {
                check_stream_id("SYN_STREAM", *stream_id)?;
                check_stream_id("SYN_STREAM", *associated_to)?;
                if *stream_id == 0 {
                    return Err(FrameError::Invalid("SYN_STREAM", "stream id 0"));
                }
                let block = self.compress_headers(headers)?;
                let mut flags = 0;
                if *fin {
                    flags |= FLAG_FIN;
                }
                if *unidirectional {
                    flags |= FLAG_UNIDIRECTIONAL;
                }
                control_header(dst, frame_type::SYN_STREAM, flags, 10 + block.len())?;
                dst.put_u32(*stream_id);
                dst.put_u32(*associated_to);
                dst.put_u8((priority & 0x7) << 5);
                dst.put_u8(0); // credential slot
                dst.put_slice(&block);
            }
            Frame::SynReply {
                stream_id,
                fin,
                headers,
            } => {
                self.encode_stream_headers(dst, frame_type::SYN_REPLY, *stream_id, *fin, headers)?
            }
            Frame::Headers {
                stream_id,
                fin,
                headers,
            } => self.encode_stream_headers(dst, frame_type::HEADERS, *stream_id, *fin, headers)?,
            Frame::RstStream { stream_id, status } => {
                check_stream_id("RST_STREAM", *stream_id)?;
                control_header(dst, frame_type::RST_STREAM, 0, 8)?;
                dst.put_u32(*stream_id);
                dst.put_u32(*status);
            }
            Frame::Settings { entries } => {
                let len = entries
                    .len()
                    .checked_mul(8)
                    .and_then(|n| n.checked_add(4))
                    .ok_or(FrameError::Invalid("SETTINGS", "too many entries"))?;
                control_header(dst, frame_type::SETTINGS, 0, len)?;
                dst.put_u32(entries.len() as u32);
                for e in entries {
                    dst.put_u32(u32::from(e.flags) << 24 | (e.id & 0x00ff_ffff));
                    dst.put_u32(e.value);
                }
            }
            Frame::Ping { id } => {
                control_header(dst, frame_type::PING, 0, 4)?;
                dst.put_u32(*id);
            }
            Frame::GoAway {
                last_good_stream_id,
                status,
            } => {
                check_stream_id("GOAWAY", *last_good_stream_id)?;
                control_header(dst, frame_type::GOAWAY, 0, 8)?;
                dst.put_u32(*last_good_stream_id);
                dst.put_u32(*status);
            }
            Frame::WindowUpdate { stream_id, delta } => {
                check_stream_id("WINDOW_UPDATE", *stream_id)?;
                control_header(dst, frame_type::WINDOW_UPDATE, 0, 8)?;
                dst.put_u32(*stream_id);
                dst.put_u32(delta & 0x7fff_ffff);
            }
        }
        Ok(())
    }

    fn encode_stream_headers(
        &mut self,
        dst: &mut BytesMut,
        ty: u16,
        stream_id: u32,
        fin: bool,
        headers: &Headers,
    ) -> Result<(), FrameError> {
        let kind = if ty == frame_type::SYN_REPLY {
            "SYN_REPLY"
        } else {
            "HEADERS"
        };
        check_stream_id(kind, stream_id)?;
        if stream_id == 0 {
            return Err(FrameError::Invalid(kind, "stream id 0"));
        }
        let block = self.compress_headers(headers)?;
        control_header(dst, ty, u8::from(fin), 4 + block.len())?;
        dst.put_u32(stream_id);
        dst.put_slice(&block);
        Ok(())
    }

    /// Serialises `headers` (lowercased names; repeated names merged into
    /// one NUL-joined value, since spdystream rejects duplicate names) and
    /// compresses the block with a sync flush.
    fn compress_headers(&mut self, headers: &Headers) -> Result<Vec<u8>, FrameError> {
        let mut merged: Vec<(String, String)> = Vec::with_capacity(headers.len());
        for (name, value) in headers {
            let name = name.to_ascii_lowercase();
            match merged.iter_mut().find(|(n, _)| *n == name) {
                Some((_, v)) => {
                    v.push('\0');
                    v.push_str(value);
                }
                None => merged.push((name, value.clone())),
            }
        }
        let block = &mut self.block;
        block.clear();
        block.put_u32(merged.len() as u32);
        for (name, value) in &merged {
            if name.len() > MAX_FRAME_LENGTH || value.len() > MAX_FRAME_LENGTH {
                return Err(FrameError::HeaderBlockTooLarge);
            }
            block.put_u32(name.len() as u32);
            block.put_slice(name.as_bytes());
            block.put_u32(value.len() as u32);
            block.put_slice(value.as_bytes());
        }
        if block.len() > MAX_FRAME_LENGTH / 2 {
            return Err(FrameError::HeaderBlockTooLarge);
        }

        let mut out = Vec::with_capacity(block.len() / 2 + 64);
        let mut input: &[u8] = block;
        loop {
            if out.capacity() - out.len() < 64 {
                out.reserve(out.capacity().max(256));
            }
            let before_in = self.deflate.total_in();
            let status = self
                .deflate
                .compress_vec(input, &mut out, FlushCompress::Sync)
                .map_err(|e| FrameError::Compression(e.to_string()))?;
            let consumed = (self.deflate.total_in() - before_in) as usize;
            input = &input[consumed..];
            match status {
                // The sync flush is complete once all input is in and
                // deflate left spare room in the output buffer.
                Status::Ok | Status::BufError if input.is_empty() && out.len() < out.capacity() => {
                    break;
                }
                Status::Ok | Status::BufError => {}
                Status::StreamEnd => {
                    return Err(FrameError::Compression("deflate stream ended".into()));
                }
            }
        }
        Ok(out)
    }
}

fn flags_len(flags: u8, len: usize) -> u32 {
    u32::from(flags) << 24 | (len as u32 & 0x00ff_ffff)
}

fn control_header(dst: &mut BytesMut, ty: u16, flags: u8, len: usize) -> Result<(), FrameError> {
    if len > MAX_FRAME_LENGTH {
        return Err(FrameError::TooLarge {
            kind: "control",
            len,
            max: MAX_FRAME_LENGTH,
        });
    }
    dst.reserve(8 + len);
    dst.put_u16(0x8000 | VERSION);
    dst.put_u16(ty);
    dst.put_u32(flags_len(flags, len));
    Ok(())
}

/// Decodes frames incrementally; owns the decompression context of one
/// direction.
pub struct Decoder {
    inflate: Decompress,
    max_data_frame: usize,
    /// Bytes still to drop of an unknown control frame being skipped.
    skip: usize,
}

impl std::fmt::Debug for Decoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Decoder")
            .field("max_data_frame", &self.max_data_frame)
            .field("skip", &self.skip)
            .finish_non_exhaustive()
    }
}

impl Default for Decoder {
    fn default() -> Self {
        Self::new(DEFAULT_MAX_DATA_FRAME)
    }
}

impl Decoder {
    /// A decoder that rejects DATA frames with more than `max_data_frame`
    /// payload bytes (clamped to the format's 16 MiB).
    pub fn new(max_data_frame: usize) -> Self {
        Self {
            inflate: Decompress::new(true),
            max_data_frame: max_data_frame.min(MAX_FRAME_LENGTH),
            skip: 0,
        }
    }

    /// Takes the next complete frame off the front of `buf`. `Ok(None)`:
    /// more bytes are needed (what is there stays in `buf`). Control
    /// frames of unknown type are consumed and skipped, as SPDY requires.
    pub fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<Frame>, FrameError> {
        loop {
            if self.skip > 0 {
                let n = self.skip.min(buf.len());
                buf.advance(n);
                self.skip -= n;
                if self.skip > 0 {
                    return Ok(None);
                }
            }
            if buf.len() < 8 {
                return Ok(None);
            }
            let first = u32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]);
            let flags = buf[4];
            let len = u32::from_be_bytes([0, buf[5], buf[6], buf[7]]) as usize;

            if first & 0x8000_0000 == 0 {
                let stream_id = first;
                if len > self.max_data_frame {
                    return Err(FrameError::TooLarge {
                        kind: "DATA",
                        len,
                        max: self.max_data_frame,
                    });
                }
                if stream_id == 0 {
                    return Err(FrameError::Invalid("DATA", "stream id 0"));
                }
                if buf.len() < 8 + len {
                    buf.reserve(8 + len - buf.len());
                    return Ok(None);
                }
                buf.advance(8);
                let data = buf.split_to(len).freeze();
                return Ok(Some(Frame::Data {
                    stream_id,
                    fin: flags & FLAG_FIN != 0,
                    data,
                }));
            }

            let version = ((first >> 16) & 0x7fff) as u16;
            let ty = (first & 0xffff) as u16;
            if version != VERSION {
                return Err(FrameError::UnsupportedVersion(version));
            }
            let known = matches!(
                ty,
                frame_type::SYN_STREAM
                    | frame_type::SYN_REPLY
                    | frame_type::RST_STREAM
                    | frame_type::SETTINGS
                    | frame_type::PING
                    | frame_type::GOAWAY
                    | frame_type::HEADERS
                    | frame_type::WINDOW_UPDATE
            );
            if !known {
                tracing::debug!(frame_type = ty, len, "skipping unknown SPDY control frame");
                buf.advance(8);
                self.skip = len;
                continue;
            }
            if len > MAX_CONTROL_FRAME {
                return Err(FrameError::TooLarge {
                    kind: "control",
                    len,
                    max: MAX_CONTROL_FRAME,
                });
            }
            if buf.len() < 8 + len {
                buf.reserve(8 + len - buf.len());
                return Ok(None);
            }
            buf.advance(8);
            let payload = buf.split_to(len);
            return self.control(ty, flags, &payload).map(Some);
        }
    }

    fn control(&mut self, ty: u16, flags: u8, p: &[u8]) -> Result<Frame, FrameError> {
        let fin = flags & FLAG_FIN != 0;
        let exact = |kind: &'static str, n: usize| {
            if p.len() == n {
                Ok(())
            } else {
                Err(FrameError::Invalid(kind, "wrong length"))
            }
        };
        Ok(match ty {
            frame_type::SYN_STREAM => {
                if p.len() < 10 {
                    return Err(FrameError::Invalid("SYN_STREAM", "too short"));
                }
                let stream_id = be32(&p[0..4]) & 0x7fff_ffff;
                let associated_to = be32(&p[4..8]) & 0x7fff_ffff;
                let priority = p[8] >> 5;
                // Decompress before validating the id: the block is part of
                // the shared zlib stream whatever the rest says.
                let headers = self.headers(&p[10..])?;
                if stream_id == 0 {
                    return Err(FrameError::Invalid("SYN_STREAM", "stream id 0"));
                }
                Frame::SynStream {
                    stream_id,
                    associated_to,
                    priority,
                    fin,
                    unidirectional: flags & FLAG_UNIDIRECTIONAL != 0,
                    headers,
                }
            }
            frame_type::SYN_REPLY | frame_type::HEADERS => {
                let kind = if ty == frame_type::SYN_REPLY {
                    "SYN_REPLY"
                } else {
                    "HEADERS"
                };
                if p.len() < 4 {
                    return Err(FrameError::Invalid(kind, "too short"));
                }
                let stream_id = be32(&p[0..4]) & 0x7fff_ffff;
                let headers = self.headers(&p[4..])?;
                if stream_id == 0 {
                    return Err(FrameError::Invalid(kind, "stream id 0"));
                }
                if ty == frame_type::SYN_REPLY {
                    Frame::SynReply {
                        stream_id,
                        fin,
                        headers,
                    }
                } else {
                    Frame::Headers {
                        stream_id,
                        fin,
                        headers,
                    }
                }
            }
            frame_type::RST_STREAM => {
                exact("RST_STREAM", 8)?;
                Frame::RstStream {
                    stream_id: be32(&p[0..4]) & 0x7fff_ffff,
                    status: be32(&p[4..8]),
                }
            }
            frame_type::SETTINGS => {
                if p.len() < 4 {
                    return Err(FrameError::Invalid("SETTINGS", "too short"));
                }
                let n = be32(&p[0..4]) as usize;
                if n.checked_mul(8).and_then(|b| b.checked_add(4)) != Some(p.len()) {
                    return Err(FrameError::Invalid(
                        "SETTINGS",
                        "length does not match count",
                    ));
                }
                let entries = p[4..]
                    .chunks_exact(8)
                    .map(|e| {
                        let fid = be32(&e[0..4]);
                        Setting {
                            flags: (fid >> 24) as u8,
                            id: fid & 0x00ff_ffff,
                            value: be32(&e[4..8]),
                        }
                    })
                    .collect();
                Frame::Settings { entries }
            }
            frame_type::PING => {
                exact("PING", 4)?;
                Frame::Ping { id: be32(p) }
            }
            frame_type::GOAWAY => {
                exact("GOAWAY", 8)?;
                Frame::GoAway {
                    last_good_stream_id: be32(&p[0..4]) & 0x7fff_ffff,
                    status: be32(&p[4..8]),
                }
            }
            frame_type::WINDOW_UPDATE => {
                exact("WINDOW_UPDATE", 8)?;
                Frame::WindowUpdate {
                    stream_id: be32(&p[0..4]) & 0x7fff_ffff,
                    delta: be32(&p[4..8]) & 0x7fff_ffff,
                }
            }
            _ => unreachable!("only known control frame types reach here"),
        })
    }

    /// Decompresses one header block (continuing the direction's zlib
    /// stream) and parses it.
    fn headers(&mut self, compressed: &[u8]) -> Result<Headers, FrameError> {
        let block = self.inflate_block(compressed)?;
        parse_header_block(&block)
    }

    fn inflate_block(&mut self, compressed: &[u8]) -> Result<Vec<u8>, FrameError> {
        // One spare byte over the cap tells "exactly at the cap" from "over".
        let hard = MAX_HEADER_BLOCK + 1;
        let mut out: Vec<u8> = Vec::with_capacity((compressed.len() * 4 + 64).min(hard));
        let mut input = compressed;
        loop {
            let before_in = self.inflate.total_in();
            let before_out = self.inflate.total_out();
            let result = self
                .inflate
                .decompress_vec(input, &mut out, FlushDecompress::Sync);
            let consumed = (self.inflate.total_in() - before_in) as usize;
            let produced = self.inflate.total_out() - before_out;
            input = input.get(consumed..).unwrap_or_default();
            if out.len() > MAX_HEADER_BLOCK {
                return Err(FrameError::HeaderBlockTooLarge);
            }
            match result {
                Ok(Status::StreamEnd) => {
                    // SPDY never ends the stream; nothing can follow it.
                    return Err(FrameError::Compression("zlib stream ended".into()));
                }
                Ok(Status::Ok | Status::BufError) => {
                    if input.is_empty() && out.len() < out.capacity() {
                        return Ok(out);
                    }
                    if out.len() == out.capacity() {
                        if out.capacity() >= hard {
                            return Err(FrameError::HeaderBlockTooLarge);
                        }
                        let grow = out.capacity().max(256).min(hard - out.capacity());
                        out.reserve_exact(grow);
                    } else if consumed == 0 && produced == 0 {
                        return Err(FrameError::Compression("no progress".into()));
                    }
                }
                Err(e) if e.needs_dictionary().is_some() => {
                    self.inflate
                        .set_dictionary(&HEADER_DICTIONARY)
                        .map_err(|e| FrameError::Compression(e.to_string()))?;
                }
                Err(e) => return Err(FrameError::Compression(e.to_string())),
            }
        }
    }
}

fn be32(b: &[u8]) -> u32 {
    u32::from_be_bytes([b[0], b[1], b[2], b[3]])
}

/// Parses an uncompressed header block. Names are lowercased (spdystream
/// lowercases too, after flagging uppercase as an error); values are kept
/// raw; invalid UTF-8 is replaced rather than refused.
pub fn parse_header_block(mut b: &[u8]) -> Result<Headers, FrameError> {
    fn take<'a>(b: &mut &'a [u8], n: usize) -> Result<&'a [u8], FrameError> {
        if b.len() < n {
            return Err(FrameError::HeaderBlock("truncated"));
        }
        let (head, tail) = b.split_at(n);
        *b = tail;
        Ok(head)
    }
    let count = be32(take(&mut b, 4)?) as usize;
    if count > MAX_HEADERS {
        return Err(FrameError::TooManyHeaders);
    }
    let mut headers = Vec::with_capacity(count);
    for _ in 0..count {
        let n = be32(take(&mut b, 4)?) as usize;
        let name = String::from_utf8_lossy(take(&mut b, n)?).to_ascii_lowercase();
        let n = be32(take(&mut b, 4)?) as usize;
        let value = String::from_utf8_lossy(take(&mut b, n)?).into_owned();
        headers.push((name, value));
    }
    if !b.is_empty() {
        return Err(FrameError::HeaderBlock("trailing bytes"));
    }
    Ok(headers)
}

#[cfg(test)]
mod tests;
