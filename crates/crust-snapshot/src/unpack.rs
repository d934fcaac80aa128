//! Unpacking an OCI layer tar into a directory, safely, as root.
//!
//! The stream is read strictly in order and never buffered beyond one entry's
//! metadata. Headers are parsed with the `tar` crate's `Header`, but the stream
//! is driven here so that extension records (PAX, GNU long names) have hard
//! size limits: a gzip bomb must not turn into a multi-gigabyte allocation.
//!
//! Confinement: every entry path is cleaned (leading `/` stripped, `.` and
//! empty components dropped, any `..` refused). Its parent directory is opened
//! with openat2(RESOLVE_IN_ROOT), so symlinks already in the layer are followed
//! only as if `dest` were `/`; nothing outside `dest` can be reached. The final
//! component is then created with *at() calls on that parent fd and is never
//! followed. Whatever already exists at the name is removed first (a directory
//! over a directory merges instead).

use std::ffi::{CStr, CString};
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};

use nix::dir::Dir;
use nix::errno::Errno;
use nix::fcntl::{AtFlags, OFlag, OpenHow, ResolveFlag, openat, openat2};
use nix::sys::stat::{
    FileStat, Mode, SFlag, UtimensatFlags, fchmod, fstatat, futimens, makedev, mkdirat, mknodat,
    utimensat,
};
use nix::sys::time::TimeSpec;
use nix::unistd::{Gid, Uid, UnlinkatFlags, fchown, fchownat, linkat, symlinkat, unlinkat};

use crate::sys;

/// Longest entry path (or link target) accepted, in bytes.
pub const MAX_PATH_LEN: usize = 4096;
/// Most entries (extension headers included) accepted in one layer.
pub const MAX_ENTRIES: u64 = 1_000_000;
/// Largest PAX extended header accepted (Go's archive/tar uses the same bound).
const MAX_PAX_LEN: u64 = 1 << 20;
/// Memory allowed for remembering directories whose mtimes are set at the end.
const MAX_DIR_BOOKKEEPING: usize = 64 << 20;
/// Deepest directory tree removed when an entry replaces a directory.
const MAX_REMOVE_DEPTH: usize = 1024;
const COPY_BUF: usize = 64 * 1024;
const BLOCK: u64 = 512;

const WHITEOUT_PREFIX: &[u8] = b".wh.";
const OPAQUE_MARKER: &[u8] = b".wh..wh..opq";
const OVERLAY_OPAQUE: &CStr = c"trusted.overlay.opaque";
/// overlayfs' private xattrs; a layer may only express opacity through the
/// `.wh..wh..opq` marker, never set redirects or metacopy origins itself.
const OVERLAY_XATTR_PREFIX: &[u8] = b"trusted.overlay.";

/// What one unpack did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct UnpackStats {
    /// Entries in the tar (extension headers not counted).
    pub entries: u64,
    /// Bytes of regular-file content written.
    pub bytes: u64,
}

/// Why an unpack failed. `path` is the entry's path as written in the tar.
#[derive(Debug, thiserror::Error)]
pub enum UnpackError {
    #[error("cannot open the unpack destination {}: {source}", dest.display())]
    Destination {
        dest: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("reading the layer stream {context}: {source}")]
    Read {
        context: String,
        #[source]
        source: io::Error,
    },
    #[error("malformed layer tar at header {index}: {reason}")]
    Malformed { index: u64, reason: String },
    #[error("layer entry {path:?} refused: {reason}")]
    Refused { path: String, reason: String },
    #[error("layer has more than {limit} entries; refusing to unpack it")]
    TooManyEntries { limit: u64 },
    #[error(
        "layer decompresses to more than {limit} bytes (registries.max_layer_uncompressed_bytes); refusing to unpack it"
    )]
    TooLarge { limit: u64 },
    #[error("layer entry {path:?} has unsupported tar type {kind}")]
    Unsupported { path: String, kind: String },
    #[error("layer entry {path:?}: {op}: {source}")]
    Fs {
        path: String,
        op: String,
        #[source]
        source: io::Error,
    },
}

fn refused(path: &str, reason: impl Into<String>) -> UnpackError {
    UnpackError::Refused {
        path: path.to_string(),
        reason: reason.into(),
    }
}

fn fs_err(path: &str, op: impl Into<String>, e: impl Into<io::Error>) -> UnpackError {
    UnpackError::Fs {
        path: path.to_string(),
        op: op.into(),
        source: e.into(),
    }
}

fn lossy(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// Unpacks an uncompressed OCI layer tar stream into `dest`, an existing
/// directory, converting OCI whiteouts to overlayfs form. Reads the stream to
/// its end (past the end-of-archive marker) so a caller hashing it sees every
/// byte.
///
/// Absolute entry paths are taken relative to `dest` (as OCI specifies);
/// paths with a `..` component are refused. On error the unpack stops and
/// `dest` holds a partial tree; callers unpack into a temp dir and discard it.
pub fn unpack_layer(reader: impl Read, dest: &Path) -> Result<UnpackStats, UnpackError> {
    unpack_limited(reader, dest, MAX_ENTRIES, u64::MAX)
}

/// [`unpack_layer`], refusing a stream longer than `max_bytes` (the layer's
/// uncompressed size: headers, content and padding) as soon as it reads
/// past it, so a decompression bomb stops before it fills the disk. The
/// limit covers the read to the stream's end too.
pub fn unpack_layer_capped(
    reader: impl Read,
    dest: &Path,
    max_bytes: u64,
) -> Result<UnpackStats, UnpackError> {
    unpack_limited(reader, dest, MAX_ENTRIES, max_bytes)
}

/// Counts what passes; reading past `limit` fails (and says so in `over`).
struct Capped<R> {
    inner: R,
    read: u64,
    limit: u64,
    over: bool,
}

impl<R: Read> Read for Capped<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.over {
            return Err(io::Error::other("layer size limit exceeded"));
        }
        // Ask for at most one byte past the limit: enough to know.
        let room = self.limit.saturating_sub(self.read).saturating_add(1);
        let want = buf.len().min(usize::try_from(room).unwrap_or(usize::MAX));
        let n = self.inner.read(&mut buf[..want])?;
        self.read += n as u64;
        if self.read > self.limit {
            self.over = true;
            return Err(io::Error::other("layer size limit exceeded"));
        }
        Ok(n)
    }
}

fn unpack_limited(
    reader: impl Read,
    dest: &Path,
    max_entries: u64,
    max_bytes: u64,
) -> Result<UnpackStats, UnpackError> {
    let root = nix::fcntl::open(
        dest,
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map(sys::own)
    .map_err(|e| UnpackError::Destination {
        dest: dest.to_path_buf(),
        source: e.into(),
    })?;
    let mut u = Unpacker {
        root,
        dirs: Vec::new(),
        dir_bytes: 0,
        stats: UnpackStats::default(),
        buf: vec![0; COPY_BUF],
        max_entries,
    };
    let mut capped = Capped {
        inner: reader,
        read: 0,
        limit: max_bytes,
        over: false,
    };
    match u.run(&mut capped) {
        Err(_) if capped.over => Err(UnpackError::TooLarge { limit: max_bytes }),
        Err(e) => Err(e),
        Ok(()) => Ok(u.stats),
    }
}

/// One entry's header, with PAX and GNU overrides applied.
struct Meta {
    path: Vec<u8>,
    shown: String,
    link: Option<Vec<u8>>,
    kind: u8,
    size: u64,
    mode: u32,
    uid: u32,
    gid: u32,
    atime: TimeSpec,
    mtime: TimeSpec,
    xattrs: Vec<(Vec<u8>, Vec<u8>)>,
    dev: Option<(u32, u32)>,
}

/// The PAX records that matter for unpacking.
#[derive(Default)]
struct Pax {
    path: Option<Vec<u8>>,
    linkpath: Option<Vec<u8>>,
    size: Option<u64>,
    uid: Option<u64>,
    gid: Option<u64>,
    mtime: Option<TimeSpec>,
    atime: Option<TimeSpec>,
    xattrs: Vec<(Vec<u8>, Vec<u8>)>,
    sparse: bool,
}

struct DirTime {
    path: Vec<u8>,
    atime: TimeSpec,
    mtime: TimeSpec,
}

struct Unpacker {
    root: OwnedFd,
    dirs: Vec<DirTime>,
    dir_bytes: usize,
    stats: UnpackStats,
    buf: Vec<u8>,
    max_entries: u64,
}

/// Fills `buf` completely; `Ok(false)` on a clean end of stream before any byte.
fn read_block(r: &mut impl Read, buf: &mut [u8]) -> io::Result<bool> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..]) {
            Ok(0) if n == 0 => return Ok(false),
            Ok(0) => {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "stream ended inside a tar header",
                ));
            }
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(true)
}

/// Reads and discards exactly `n` bytes.
fn skip(r: &mut impl Read, n: u64) -> io::Result<()> {
    let got = io::copy(&mut r.take(n), &mut io::sink())?;
    if got < n {
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            format!("stream ended {} bytes early", n - got),
        ));
    }
    Ok(())
}

fn padding(size: u64) -> u64 {
    (BLOCK - size % BLOCK) % BLOCK
}

/// Reads a small extension record (its size already checked) and its padding.
fn read_record(r: &mut impl Read, size: u64) -> io::Result<Vec<u8>> {
    let mut v = vec![0; size as usize];
    r.read_exact(&mut v)?;
    skip(r, padding(size))?;
    Ok(v)
}

/// An all-NUL or blank numeric field reads as 0, as GNU tar and Go read it
/// (tar::Header calls it an error).
fn or_zero(raw: &[u8], parsed: io::Result<u64>) -> io::Result<u64> {
    if raw.iter().all(|b| *b == 0 || *b == b' ') {
        Ok(0)
    } else {
        parsed
    }
}

fn checksum_ok(h: &tar::Header) -> bool {
    let Ok(want) = h.cksum() else { return false };
    let b = h.as_bytes();
    let fields = b[..148].iter().chain(&b[156..]);
    let unsigned: u32 = fields.clone().map(|x| *x as u32).sum::<u32>() + 8 * 32;
    // Some old tars summed signed bytes.
    let signed: i64 = fields.map(|x| *x as i8 as i64).sum::<i64>() + 8 * 32;
    want == unsigned || want as i64 == signed
}

/// Parses "secs[.frac]" (possibly negative) as PAX writes times.
fn parse_pax_time(v: &[u8]) -> Option<TimeSpec> {
    let s = std::str::from_utf8(v).ok()?;
    let (neg, s) = match s.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, s),
    };
    let (secs, frac) = s.split_once('.').unwrap_or((s, ""));
    let secs: i64 = secs.parse().ok()?;
    if !frac.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let mut digits: String = frac.chars().take(9).collect();
    while digits.len() < 9 {
        digits.push('0');
    }
    let nanos: i64 = digits.parse().ok()?;
    Some(if neg {
        if nanos == 0 {
            TimeSpec::new(-secs, 0)
        } else {
            TimeSpec::new(-secs - 1, 1_000_000_000 - nanos)
        }
    } else {
        TimeSpec::new(secs, nanos)
    })
}

/// Parses PAX records ("<len> <key>=<value>\n", len counting the whole
/// record). Values may hold any byte, newlines included (binary xattrs).
fn parse_pax(mut data: &[u8]) -> Result<Pax, String> {
    let mut pax = Pax::default();
    while !data.is_empty() {
        if data.iter().all(|b| *b == 0) {
            break;
        }
        let sp = data
            .iter()
            .take(20)
            .position(|b| *b == b' ')
            .ok_or("PAX record without a length")?;
        let len: usize = std::str::from_utf8(&data[..sp])
            .ok()
            .and_then(|s| s.parse().ok())
            .ok_or("PAX record length is not a number")?;
        if len <= sp + 1 || len > data.len() || data[len - 1] != b'\n' {
            return Err("PAX record length does not match its content".into());
        }
        let kv = &data[sp + 1..len - 1];
        data = &data[len..];
        let eq = kv
            .iter()
            .position(|b| *b == b'=')
            .ok_or("PAX record without '='")?;
        let (key, value) = (&kv[..eq], &kv[eq + 1..]);
        let num = |v: &[u8]| -> Result<u64, String> {
            std::str::from_utf8(v)
                .ok()
                .and_then(|s| s.parse().ok())
                .ok_or_else(|| format!("PAX {} is not a number", lossy(key)))
        };
        match key {
            b"path" => pax.path = Some(value.to_vec()),
            b"linkpath" => pax.linkpath = Some(value.to_vec()),
            b"size" => pax.size = Some(num(value)?),
            b"uid" => pax.uid = Some(num(value)?),
            b"gid" => pax.gid = Some(num(value)?),
            b"mtime" => pax.mtime = Some(parse_pax_time(value).ok_or("PAX mtime is not a time")?),
            b"atime" => pax.atime = Some(parse_pax_time(value).ok_or("PAX atime is not a time")?),
            _ if key.starts_with(b"GNU.sparse.") => pax.sparse = true,
            _ => {
                if let Some(name) = key.strip_prefix(b"SCHILY.xattr.") {
                    pax.xattrs.push((name.to_vec(), value.to_vec()));
                }
            }
        }
    }
    Ok(pax)
}

/// Cleans an entry path into components: leading `/`, empty and `.`
/// components dropped; `..` anywhere refused.
fn clean(raw: &[u8]) -> Result<Vec<&[u8]>, &'static str> {
    if raw.len() > MAX_PATH_LEN {
        return Err("path is longer than 4096 bytes");
    }
    if raw.contains(&0) {
        return Err("path contains a NUL byte");
    }
    let mut comps = Vec::new();
    for c in raw.split(|b| *b == b'/') {
        match c {
            b"" | b"." => {}
            b".." => return Err("path has a '..' component"),
            c => comps.push(c),
        }
    }
    Ok(comps)
}

fn cstr(b: &[u8]) -> CString {
    // Components come from `clean`, which refuses NUL bytes.
    CString::new(b).expect("component without NUL")
}

fn is_dir(st: &FileStat) -> bool {
    st.st_mode & libc::S_IFMT == libc::S_IFDIR
}

fn is_whiteout(st: &FileStat) -> bool {
    st.st_mode & libc::S_IFMT == libc::S_IFCHR && st.st_rdev == 0
}

fn lstat_at(dir: BorrowedFd<'_>, name: &CStr) -> nix::Result<Option<FileStat>> {
    match fstatat(Some(dir.as_raw_fd()), name, AtFlags::AT_SYMLINK_NOFOLLOW) {
        Ok(st) => Ok(Some(st)),
        Err(Errno::ENOENT) => Ok(None),
        Err(e) => Err(e),
    }
}

fn open_dir_at(dir: BorrowedFd<'_>, name: &CStr) -> nix::Result<OwnedFd> {
    openat(
        Some(dir.as_raw_fd()),
        name,
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map(sys::own)
}

/// Removes `name` in `parent` and everything under it, never following a
/// symlink (each level is opened O_NOFOLLOW relative to its parent fd).
fn remove_tree(parent: BorrowedFd<'_>, name: &CStr, depth: usize) -> io::Result<()> {
    match unlinkat(Some(parent.as_raw_fd()), name, UnlinkatFlags::NoRemoveDir) {
        Ok(()) | Err(Errno::ENOENT) => return Ok(()),
        Err(Errno::EISDIR) => {}
        Err(e) => return Err(e.into()),
    }
    if depth >= MAX_REMOVE_DEPTH {
        return Err(io::Error::other(format!(
            "directory tree deeper than {MAX_REMOVE_DEPTH} levels"
        )));
    }
    let fd = open_dir_at(parent, name)?;
    // Names first, then close the stream: one fd per level while recursing.
    let names: Vec<CString> = Dir::from(fd.try_clone()?)?
        .iter()
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_owned())
        .filter(|n| n.as_bytes() != b"." && n.as_bytes() != b"..")
        .collect();
    for n in &names {
        remove_tree(fd.as_fd(), n, depth + 1)?;
    }
    drop(fd);
    unlinkat(Some(parent.as_raw_fd()), name, UnlinkatFlags::RemoveDir)?;
    Ok(())
}

impl Unpacker {
    fn run(&mut self, mut r: impl Read) -> Result<(), UnpackError> {
        let mut hdr = tar::Header::new_old();
        let mut index: u64 = 0;
        let mut pax: Option<Pax> = None;
        let mut long_name: Option<Vec<u8>> = None;
        let mut long_link: Option<Vec<u8>> = None;
        let mut last = String::from("at the start");
        let read_err = |context: &str, e: io::Error| UnpackError::Read {
            context: context.to_string(),
            source: e,
        };
        loop {
            let more = read_block(&mut r, hdr.as_mut_bytes()).map_err(|e| read_err(&last, e))?;
            if !more {
                if pax.is_some() || long_name.is_some() || long_link.is_some() {
                    return Err(UnpackError::Malformed {
                        index,
                        reason: "stream ended after an extension header, before its entry".into(),
                    });
                }
                // No end-of-archive marker; GNU tar and Go accept that too.
                break;
            }
            index += 1;
            if hdr.as_bytes().iter().all(|b| *b == 0) {
                break;
            }
            // An entry has at most three headers (PAX, long name, long link);
            // global PAX headers count here too.
            if index > self.max_entries.saturating_mul(3) {
                return Err(UnpackError::TooManyEntries {
                    limit: self.max_entries,
                });
            }
            let malformed = |reason: String| UnpackError::Malformed { index, reason };
            if !checksum_ok(&hdr) {
                return Err(malformed(
                    "header checksum mismatch (not a tar stream, or corrupt)".into(),
                ));
            }
            let hsize = or_zero(&hdr.as_old().size, hdr.entry_size())
                .map_err(|e| malformed(e.to_string()))?;
            let kind = hdr.entry_type().as_byte();
            match kind {
                b'L' | b'K' => {
                    let slot = if kind == b'L' {
                        &mut long_name
                    } else {
                        &mut long_link
                    };
                    if slot.is_some() {
                        return Err(malformed("two GNU long-name headers for one entry".into()));
                    }
                    if hsize > MAX_PATH_LEN as u64 + 1 {
                        return Err(malformed(format!(
                            "GNU long name of {hsize} bytes; paths longer than {MAX_PATH_LEN} bytes are refused"
                        )));
                    }
                    let mut v = read_record(&mut r, hsize).map_err(|e| read_err(&last, e))?;
                    while v.last() == Some(&0) {
                        v.pop();
                    }
                    *slot = Some(v);
                    continue;
                }
                b'x' | b'g' => {
                    if hsize > MAX_PAX_LEN {
                        return Err(malformed(format!(
                            "PAX header of {hsize} bytes; at most {MAX_PAX_LEN} accepted"
                        )));
                    }
                    let v = read_record(&mut r, hsize).map_err(|e| read_err(&last, e))?;
                    // Global headers are ignored, as containerd and Docker do.
                    if kind == b'x' {
                        if pax.is_some() {
                            return Err(malformed("two PAX headers for one entry".into()));
                        }
                        pax = Some(parse_pax(&v).map_err(malformed)?);
                    }
                    continue;
                }
                _ => {}
            }

            self.stats.entries += 1;
            if self.stats.entries > self.max_entries {
                return Err(UnpackError::TooManyEntries {
                    limit: self.max_entries,
                });
            }
            let p = pax.take().unwrap_or_default();
            let meta = self.meta(&hdr, p, long_name.take(), long_link.take(), hsize, index)?;
            last = format!("in entry {:?}", meta.shown);
            let mut data = (&mut r).take(meta.size);
            self.entry(&meta, &mut data)?;
            // Whatever the handler did not consume (e.g. a hardlink's payload).
            let left = data.limit();
            skip(&mut data, left).map_err(|e| read_err(&last, e))?;
            skip(&mut r, padding(meta.size)).map_err(|e| read_err(&last, e))?;
            last = format!("after entry {:?}", meta.shown);
        }
        self.apply_dir_times()?;
        io::copy(&mut r, &mut io::sink())
            .map_err(|e| read_err("after the end of the archive", e))?;
        Ok(())
    }

    fn meta(
        &self,
        hdr: &tar::Header,
        pax: Pax,
        long_name: Option<Vec<u8>>,
        long_link: Option<Vec<u8>>,
        hsize: u64,
        index: u64,
    ) -> Result<Meta, UnpackError> {
        let path = pax
            .path
            .or(long_name)
            .unwrap_or_else(|| hdr.path_bytes().into_owned());
        let shown = lossy(&path);
        let malformed = |what: &str, e: io::Error| UnpackError::Malformed {
            index,
            reason: format!("entry {shown:?}: bad {what} field: {e}"),
        };
        if pax.sparse || hdr.entry_type().is_gnu_sparse() {
            return Err(UnpackError::Unsupported {
                path: shown,
                kind: "GNU sparse file".into(),
            });
        }
        let link = pax
            .linkpath
            .or(long_link)
            .or_else(|| hdr.link_name_bytes().map(|c| c.into_owned()));
        if link.as_ref().is_some_and(|l| l.len() > MAX_PATH_LEN) {
            return Err(refused(&shown, "link target is longer than 4096 bytes"));
        }
        let id =
            |pax: Option<u64>, field: io::Result<u64>, what: &str| -> Result<u32, UnpackError> {
                let v = match pax {
                    Some(v) => v,
                    None => field.map_err(|e| malformed(what, e))?,
                };
                // u32::MAX is chown's "leave unchanged"; nothing legitimate uses it.
                u32::try_from(v)
                    .ok()
                    .filter(|v| *v != u32::MAX)
                    .ok_or_else(|| refused(&shown, format!("{what} {v} is out of range")))
            };
        let old = hdr.as_old();
        let uid = id(pax.uid, or_zero(&old.uid, hdr.uid()), "uid")?;
        let gid = id(pax.gid, or_zero(&old.gid, hdr.gid()), "gid")?;
        let mode = or_zero(&old.mode, hdr.mode().map(u64::from))
            .map_err(|e| malformed("mode", e))? as u32
            & 0o7777;
        let mtime = match pax.mtime {
            Some(t) => t,
            None => {
                let secs = or_zero(&old.mtime, hdr.mtime()).map_err(|e| malformed("mtime", e))?;
                TimeSpec::new(i64::try_from(secs).unwrap_or(i64::MAX), 0)
            }
        };
        let mut kind = hdr.entry_type().as_byte();
        // Pre-POSIX tars mark directories with a trailing slash only.
        if kind == 0 && path.ends_with(b"/") {
            kind = b'5';
        }
        let dev = if matches!(kind, b'3' | b'4') {
            let major = hdr.device_major().map_err(|e| malformed("devmajor", e))?;
            let minor = hdr.device_minor().map_err(|e| malformed("devminor", e))?;
            match (major, minor) {
                (Some(a), Some(b)) => Some((a, b)),
                _ => return Err(refused(&shown, "device entry without device numbers")),
            }
        } else {
            None
        };
        Ok(Meta {
            path,
            shown,
            link,
            kind,
            size: pax.size.unwrap_or(hsize),
            mode,
            uid,
            gid,
            atime: pax.atime.unwrap_or(mtime),
            mtime,
            xattrs: pax.xattrs,
            dev,
        })
    }

    /// Opens `root`-relative `path` as a directory, symlinks confined to root.
    fn open_in_root(&self, path: &[u8]) -> nix::Result<OwnedFd> {
        let how = OpenHow::new()
            .flags(OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC)
            .resolve(ResolveFlag::RESOLVE_IN_ROOT | ResolveFlag::RESOLVE_NO_MAGICLINKS);
        let mut tries = 0;
        loop {
            // EAGAIN: a concurrent rename somewhere made the kernel unsure the
            // walk stayed inside root; it asks for a retry.
            match openat2(self.root.as_raw_fd(), path, how) {
                Err(Errno::EAGAIN) if tries < 32 => tries += 1,
                r => return r.map(sys::own),
            }
        }
    }

    /// Opens the directory `comps` (relative to root, symlinks confined),
    /// creating missing components as 0755 root-owned dirs when `create`.
    fn resolve_dir(
        &self,
        comps: &[&[u8]],
        create: bool,
        shown: &str,
    ) -> Result<OwnedFd, UnpackError> {
        if comps.is_empty() {
            return self
                .root
                .try_clone()
                .map_err(|e| fs_err(shown, "duplicating the root fd", e));
        }
        let explain = |e: Errno, at: &[u8]| -> UnpackError {
            let at = lossy(at);
            match e {
                Errno::ENOTDIR => refused(shown, format!("parent {at:?} is not a directory")),
                Errno::ELOOP => {
                    refused(shown, format!("too many symlinks resolving parent {at:?}"))
                }
                Errno::ENOENT => {
                    refused(shown, format!("parent {at:?} does not exist in this layer"))
                }
                Errno::ENOSYS => fs_err(shown, "openat2 (needs Linux 5.6 or later)", e),
                e => fs_err(shown, format!("opening parent {at:?}"), e),
            }
        };
        let joined = comps.join(&b'/');
        match self.open_in_root(&joined) {
            Ok(fd) => return Ok(fd),
            Err(Errno::ENOENT) if create => {}
            Err(e) => return Err(explain(e, &joined)),
        }
        let mut cur = self.root.try_clone().map_err(|e| fs_err(shown, "dup", e))?;
        for i in 0..comps.len() {
            let prefix = comps[..=i].join(&b'/');
            match self.open_in_root(&prefix) {
                Ok(fd) => {
                    cur = fd;
                    continue;
                }
                Err(Errno::ENOENT) => {}
                Err(e) => return Err(explain(e, &prefix)),
            }
            let c = cstr(comps[i]);
            match mkdirat(
                Some(cur.as_raw_fd()),
                c.as_c_str(),
                Mode::from_bits_truncate(0o755),
            ) {
                Ok(()) => {}
                // It exists yet did not resolve: a symlink to nothing inside the layer.
                Err(Errno::EEXIST) => {
                    return Err(refused(
                        shown,
                        format!(
                            "parent {:?} is a symlink that does not lead to a directory inside the layer",
                            lossy(&prefix)
                        ),
                    ));
                }
                Err(e) => {
                    return Err(fs_err(
                        shown,
                        format!("creating parent {:?}", lossy(&prefix)),
                        e,
                    ));
                }
            }
            let fd = open_dir_at(cur.as_fd(), &c).map_err(|e| {
                fs_err(shown, format!("opening new parent {:?}", lossy(&prefix)), e)
            })?;
            // Not subject to the process umask.
            fchmod(fd.as_raw_fd(), Mode::from_bits_truncate(0o755))
                .map_err(|e| fs_err(shown, "chmod of new parent", e))?;
            cur = fd;
        }
        Ok(cur)
    }

    /// Removes whatever is at `name` (a directory with its contents).
    fn clear(&self, parent: BorrowedFd<'_>, name: &CStr, shown: &str) -> Result<(), UnpackError> {
        remove_tree(parent, name, 0).map_err(|e| fs_err(shown, "removing what was there before", e))
    }

    fn entry(&mut self, m: &Meta, data: &mut impl Read) -> Result<(), UnpackError> {
        let shown = m.shown.as_str();
        let comps = clean(&m.path).map_err(|r| refused(shown, r))?;
        let Some((name, parents)) = comps.split_last() else {
            if m.kind != b'5' {
                return Err(refused(
                    shown,
                    "it names the layer root but is not a directory",
                ));
            }
            let root = self.root.try_clone().map_err(|e| fs_err(shown, "dup", e))?;
            self.set_meta_fd(root.as_fd(), m)?;
            return self.record_dir(Vec::new(), m);
        };
        let parent = self.resolve_dir(parents, true, shown)?;
        let parent = parent.as_fd();

        if let Some(target) = name.strip_prefix(WHITEOUT_PREFIX) {
            if *name == OPAQUE_MARKER {
                return sys::fsetxattr(parent, OVERLAY_OPAQUE, b"y")
                    .map_err(|e| fs_err(shown, "marking the directory opaque", e));
            }
            if target.starts_with(WHITEOUT_PREFIX) {
                // Other `.wh..wh.` names are AUFS bookkeeping; meaningless here.
                return Ok(());
            }
            if target.is_empty() || target == b"." || target == b".." {
                return Err(refused(shown, "whiteout names no file"));
            }
            return self.whiteout(parent, &cstr(target), shown);
        }

        let cname = cstr(name);
        let cname = cname.as_c_str();
        match m.kind {
            b'5' => self.dir(parent, cname, &comps, m),
            b'0' | 0 | b'7' => self.file(parent, cname, m, data),
            b'2' => self.symlink(parent, cname, m),
            b'1' => self.hardlink(parent, cname, m),
            b'3' | b'4' | b'6' => self.special(parent, cname, m),
            k => Err(UnpackError::Unsupported {
                path: shown.to_string(),
                kind: format!("{:?}", k as char),
            }),
        }
    }

    /// OCI whiteouts hide lower layers only: a same-layer entry at the name
    /// stays (a directory becomes opaque, which is exactly "lower content
    /// gone, this layer's content kept").
    fn whiteout(
        &mut self,
        parent: BorrowedFd<'_>,
        name: &CStr,
        shown: &str,
    ) -> Result<(), UnpackError> {
        match lstat_at(parent, name).map_err(|e| fs_err(shown, "stat", e))? {
            Some(st) if is_dir(&st) => {
                let d = open_dir_at(parent, name).map_err(|e| fs_err(shown, "open", e))?;
                sys::fsetxattr(d.as_fd(), OVERLAY_OPAQUE, b"y")
                    .map_err(|e| fs_err(shown, "marking the directory opaque", e))
            }
            Some(_) => Ok(()),
            None => mknodat(
                Some(parent.as_raw_fd()),
                name,
                SFlag::S_IFCHR,
                Mode::empty(),
                makedev(0, 0),
            )
            .map_err(|e| fs_err(shown, "creating the overlay whiteout (char device 0:0)", e)),
        }
    }

    fn dir(
        &mut self,
        parent: BorrowedFd<'_>,
        name: &CStr,
        comps: &[&[u8]],
        m: &Meta,
    ) -> Result<(), UnpackError> {
        let shown = m.shown.as_str();
        let mut opaque = false;
        match lstat_at(parent, name).map_err(|e| fs_err(shown, "stat", e))? {
            Some(st) if is_dir(&st) => {}
            existing => {
                if let Some(st) = existing {
                    // A same-layer whiteout then a dir: lower content stays hidden.
                    opaque = is_whiteout(&st);
                    self.clear(parent, name, shown)?;
                }
                mkdirat(
                    Some(parent.as_raw_fd()),
                    name,
                    Mode::from_bits_truncate(0o700),
                )
                .map_err(|e| fs_err(shown, "mkdir", e))?;
            }
        }
        let fd =
            open_dir_at(parent, name).map_err(|e| fs_err(shown, "opening the directory", e))?;
        self.set_meta_fd(fd.as_fd(), m)?;
        if opaque {
            sys::fsetxattr(fd.as_fd(), OVERLAY_OPAQUE, b"y")
                .map_err(|e| fs_err(shown, "marking the directory opaque", e))?;
        }
        self.record_dir(comps.join(&b'/'), m)
    }

    fn file(
        &mut self,
        parent: BorrowedFd<'_>,
        name: &CStr,
        m: &Meta,
        data: &mut impl Read,
    ) -> Result<(), UnpackError> {
        let shown = m.shown.as_str();
        // Unlink first, never truncate: the old name may be a hardlink to
        // another file, or a symlink.
        self.clear(parent, name, shown)?;
        let fd = openat(
            Some(parent.as_raw_fd()),
            name,
            OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
            Mode::from_bits_truncate(0o600),
        )
        .map(sys::own)
        .map_err(|e| fs_err(shown, "creating the file", e))?;
        let mut f = File::from(fd);
        let mut written: u64 = 0;
        loop {
            let n = match data.read(&mut self.buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    return Err(UnpackError::Read {
                        context: format!("in entry {shown:?}"),
                        source: e,
                    });
                }
            };
            f.write_all(&self.buf[..n])
                .map_err(|e| fs_err(shown, "writing the file", e))?;
            written += n as u64;
        }
        if written < m.size {
            return Err(UnpackError::Read {
                context: format!("in entry {shown:?}"),
                source: io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    format!("stream ended after {written} of {} bytes", m.size),
                ),
            });
        }
        self.stats.bytes += written;
        self.set_meta_fd(f.as_fd(), m)?;
        futimens(f.as_raw_fd(), &m.atime, &m.mtime).map_err(|e| fs_err(shown, "setting times", e))
    }

    fn symlink(
        &mut self,
        parent: BorrowedFd<'_>,
        name: &CStr,
        m: &Meta,
    ) -> Result<(), UnpackError> {
        let shown = m.shown.as_str();
        let target = match m.link.as_deref() {
            Some(t) if !t.is_empty() => t,
            _ => return Err(refused(shown, "symlink without a target")),
        };
        let target = CString::new(target)
            .map_err(|_| refused(shown, "symlink target contains a NUL byte"))?;
        self.clear(parent, name, shown)?;
        // The target is data: stored as is, never resolved here.
        symlinkat(target.as_c_str(), Some(parent.as_raw_fd()), name)
            .map_err(|e| fs_err(shown, "creating the symlink", e))?;
        fchownat(
            Some(parent.as_raw_fd()),
            name,
            Some(Uid::from_raw(m.uid)),
            Some(Gid::from_raw(m.gid)),
            AtFlags::AT_SYMLINK_NOFOLLOW,
        )
        .map_err(|e| fs_err(shown, "lchown", e))?;
        self.set_xattrs_path(parent, name, m)?;
        utimensat(
            Some(parent.as_raw_fd()),
            name,
            &m.atime,
            &m.mtime,
            UtimensatFlags::NoFollowSymlink,
        )
        .map_err(|e| fs_err(shown, "setting times", e))
    }

    fn hardlink(
        &mut self,
        parent: BorrowedFd<'_>,
        name: &CStr,
        m: &Meta,
    ) -> Result<(), UnpackError> {
        let shown = m.shown.as_str();
        let raw = m
            .link
            .as_deref()
            .ok_or_else(|| refused(shown, "hardlink without a target"))?;
        let tshown = lossy(raw);
        let tcomps =
            clean(raw).map_err(|r| refused(shown, format!("hardlink target {tshown:?}: {r}")))?;
        let Some((tname, tparents)) = tcomps.split_last() else {
            return Err(refused(shown, "hardlink to the layer root"));
        };
        let tparent = self
            .resolve_dir(tparents, false, shown)
            .map_err(|e| match e {
                UnpackError::Refused { reason, .. } => {
                    refused(shown, format!("hardlink target {tshown:?}: {reason}"))
                }
                e => e,
            })?;
        let tname = cstr(tname);
        let tst = match lstat_at(tparent.as_fd(), &tname)
            .map_err(|e| fs_err(shown, "stat of hardlink target", e))?
        {
            Some(st) => st,
            None => {
                return Err(refused(
                    shown,
                    format!("hardlink target {tshown:?} does not exist earlier in this layer"),
                ));
            }
        };
        if is_dir(&tst) {
            return Err(refused(
                shown,
                format!("hardlink target {tshown:?} is a directory"),
            ));
        }
        let existing = lstat_at(parent, name).map_err(|e| fs_err(shown, "stat", e))?;
        if existing.is_some_and(|st| st.st_dev == tst.st_dev && st.st_ino == tst.st_ino) {
            return Ok(());
        }
        self.clear(parent, name, shown)?;
        // Flags 0: a symlink target is linked itself, never followed.
        linkat(
            Some(tparent.as_raw_fd()),
            tname.as_c_str(),
            Some(parent.as_raw_fd()),
            name,
            AtFlags::empty(),
        )
        .map_err(|e| fs_err(shown, format!("hardlinking to {tshown:?}"), e))
    }

    fn special(
        &mut self,
        parent: BorrowedFd<'_>,
        name: &CStr,
        m: &Meta,
    ) -> Result<(), UnpackError> {
        let shown = m.shown.as_str();
        let (kind, dev) = match m.kind {
            b'3' => (SFlag::S_IFCHR, m.dev),
            b'4' => (SFlag::S_IFBLK, m.dev),
            _ => (SFlag::S_IFIFO, None),
        };
        let dev = dev.map(|(a, b)| makedev(a.into(), b.into())).unwrap_or(0);
        self.clear(parent, name, shown)?;
        mknodat(
            Some(parent.as_raw_fd()),
            name,
            kind,
            Mode::from_bits_truncate(0o600),
            dev,
        )
        .map_err(|e| fs_err(shown, "mknod", e))?;
        // O_PATH: a fifo or device must not be opened for I/O.
        let fd = openat(
            Some(parent.as_raw_fd()),
            name,
            OFlag::O_PATH | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
        .map(sys::own)
        .map_err(|e| fs_err(shown, "opening the node", e))?;
        fchownat(
            Some(fd.as_raw_fd()),
            c"",
            Some(Uid::from_raw(m.uid)),
            Some(Gid::from_raw(m.gid)),
            AtFlags::AT_EMPTY_PATH,
        )
        .map_err(|e| fs_err(shown, "chown", e))?;
        // chmod after chown; through /proc since fchmod refuses O_PATH fds.
        let proc = sys::proc_fd_path(fd.as_fd());
        nix::sys::stat::fchmodat(
            None,
            proc.as_c_str(),
            Mode::from_bits_truncate(m.mode),
            nix::sys::stat::FchmodatFlags::FollowSymlink,
        )
        .map_err(|e| fs_err(shown, "chmod", e))?;
        self.set_xattrs_path(parent, name, m)?;
        utimensat(
            Some(parent.as_raw_fd()),
            name,
            &m.atime,
            &m.mtime,
            UtimensatFlags::NoFollowSymlink,
        )
        .map_err(|e| fs_err(shown, "setting times", e))
    }

    /// chown, then chmod (chown clears setuid/setgid), then xattrs (chown also
    /// drops security.capability).
    fn set_meta_fd(&self, fd: BorrowedFd<'_>, m: &Meta) -> Result<(), UnpackError> {
        let shown = m.shown.as_str();
        fchown(
            fd.as_raw_fd(),
            Some(Uid::from_raw(m.uid)),
            Some(Gid::from_raw(m.gid)),
        )
        .map_err(|e| fs_err(shown, "chown", e))?;
        fchmod(fd.as_raw_fd(), Mode::from_bits_truncate(m.mode))
            .map_err(|e| fs_err(shown, "chmod", e))?;
        for (k, v) in wanted_xattrs(m) {
            let key = CString::new(k.as_slice())
                .map_err(|_| refused(shown, "xattr name contains a NUL byte"))?;
            match sys::fsetxattr(fd, &key, v) {
                Ok(()) => {}
                Err(e) if e.raw_os_error() == Some(libc::EOPNOTSUPP) => {}
                Err(e) => return Err(fs_err(shown, format!("setting xattr {:?}", lossy(k)), e)),
            }
        }
        Ok(())
    }

    /// Xattrs on a symlink or device node: via /proc/self/fd of an O_PATH fd.
    fn set_xattrs_path(
        &self,
        parent: BorrowedFd<'_>,
        name: &CStr,
        m: &Meta,
    ) -> Result<(), UnpackError> {
        let shown = m.shown.as_str();
        // The kernel allows user.* only on regular files and directories.
        let xattrs: Vec<_> = wanted_xattrs(m)
            .filter(|(k, _)| !k.starts_with(b"user."))
            .collect();
        if xattrs.is_empty() {
            return Ok(());
        }
        let fd = openat(
            Some(parent.as_raw_fd()),
            name,
            OFlag::O_PATH | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
        .map(sys::own)
        .map_err(|e| fs_err(shown, "opening for xattrs", e))?;
        let proc = sys::proc_fd_path(fd.as_fd());
        for (k, v) in xattrs {
            let key = CString::new(k.as_slice())
                .map_err(|_| refused(shown, "xattr name contains a NUL byte"))?;
            match sys::setxattr_path(&proc, &key, v) {
                Ok(()) => {}
                Err(e) if e.raw_os_error() == Some(libc::EOPNOTSUPP) => {}
                Err(e) => return Err(fs_err(shown, format!("setting xattr {:?}", lossy(k)), e)),
            }
        }
        Ok(())
    }

    fn record_dir(&mut self, path: Vec<u8>, m: &Meta) -> Result<(), UnpackError> {
        self.dir_bytes += path.len() + std::mem::size_of::<DirTime>();
        if self.dir_bytes > MAX_DIR_BOOKKEEPING {
            return Err(refused(
                &m.shown,
                "too many directories (their paths exceed 64 MiB in total)",
            ));
        }
        self.dirs.push(DirTime {
            path,
            atime: m.atime,
            mtime: m.mtime,
        });
        Ok(())
    }

    /// Directory times last: creating children changed them. In tar order,
    /// so a directory listed twice ends with its last header's times.
    fn apply_dir_times(&mut self) -> Result<(), UnpackError> {
        let dirs = std::mem::take(&mut self.dirs);
        for d in &dirs {
            let shown = lossy(&d.path);
            let comps = clean(&d.path).map_err(|r| refused(&shown, r))?;
            let Some((name, parents)) = comps.split_last() else {
                futimens(self.root.as_raw_fd(), &d.atime, &d.mtime)
                    .map_err(|e| fs_err(&shown, "setting times", e))?;
                continue;
            };
            // Replaced or removed by a later entry: nothing to do.
            let Ok(parent) = self.resolve_dir(parents, false, &shown) else {
                continue;
            };
            let name = cstr(name);
            match lstat_at(parent.as_fd(), &name) {
                Ok(Some(st)) if is_dir(&st) => {}
                _ => continue,
            }
            utimensat(
                Some(parent.as_raw_fd()),
                name.as_c_str(),
                &d.atime,
                &d.mtime,
                UtimensatFlags::NoFollowSymlink,
            )
            .map_err(|e| fs_err(&shown, "setting directory times", e))?;
        }
        Ok(())
    }
}

/// The entry's xattrs minus overlayfs' own namespace.
fn wanted_xattrs(m: &Meta) -> impl Iterator<Item = (&Vec<u8>, &Vec<u8>)> {
    m.xattrs
        .iter()
        .filter(|(k, _)| !k.is_empty() && !k.starts_with(OVERLAY_XATTR_PREFIX))
        .map(|(k, v)| (k, v))
}

#[cfg(test)]
mod tests;
