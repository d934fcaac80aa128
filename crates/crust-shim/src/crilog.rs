//! Container logs in the CRI format, one record per line:
//! `<RFC3339Nano UTC> <stdout|stderr> <P|F> <content>\n`.
//!
//! Records follow containerd's CRI logger (`internal/cri/io/logger.go`):
//! a line ending in `\n` (or `\r\n`) is one `F` record without its line
//! ending; a line longer than [`MAX_LINE`] bytes is cut into `P` records of
//! exactly [`MAX_LINE`] bytes followed by the rest as an `F` record; output
//! that ends without a newline is written as a `P` record at EOF.
//!
//! Writes are synchronous: when the disk is slow the copier stops reading,
//! the pipe fills and the container blocks, so nothing buffers without bound.

use std::fs::File;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use crate::timefmt::push_rfc3339_nano;

/// Longest content of one record, as kubelet's `max_container_log_line_size`.
pub const MAX_LINE: usize = 16 * 1024;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stream {
    Stdout,
    Stderr,
}

impl Stream {
    fn name(self) -> &'static str {
        match self {
            Stream::Stdout => "stdout",
            Stream::Stderr => "stderr",
        }
    }
}

/// One container's log file. Shared by the copier thread (writes) and the
/// signal loop (reopens on SIGUSR1, after kubelet rotated the file).
pub struct CriLog {
    path: PathBuf,
    file: Mutex<File>,
}

impl CriLog {
    pub fn open(path: &Path) -> io::Result<Arc<CriLog>> {
        Ok(Arc::new(CriLog {
            path: path.to_owned(),
            file: Mutex::new(open_log(path)?),
        }))
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Opens the path again, so records go to a new file once the old one
    /// was renamed away.
    pub fn reopen(&self) -> io::Result<()> {
        let new = open_log(&self.path)?;
        *self.file.lock().unwrap_or_else(|e| e.into_inner()) = new;
        Ok(())
    }

    /// Writes one record with a single `write` where the kernel allows.
    fn write_record(&self, scratch: &mut Vec<u8>, stream: Stream, full: bool, content: &[u8]) {
        scratch.clear();
        push_rfc3339_nano(scratch, SystemTime::now());
        scratch.push(b' ');
        scratch.extend_from_slice(stream.name().as_bytes());
        scratch.extend_from_slice(if full { b" F " } else { b" P " });
        scratch.extend_from_slice(content);
        scratch.push(b'\n');
        let mut file = self.file.lock().unwrap_or_else(|e| e.into_inner());
        if let Err(e) = file.write_all(scratch) {
            // Keep draining the container's output, as containerd does.
            log::warn!("writing log {}: {e}", self.path.display());
        }
    }
}

/// Opens (creating) the log file without following a symlink anywhere on
/// the way: each directory from `/` down is opened relative to the one
/// above with O_NOFOLLOW, and the file itself with O_NOFOLLOW, so a symlink
/// planted in the pod's log directory (at the file, or in place of a
/// parent) is refused with ELOOP or ENOTDIR instead of sending the
/// container's output to wherever it points. crustd hands over a path with
/// the log directory's own symlinks (the host's, trusted) resolved.
fn open_log(path: &Path) -> io::Result<File> {
    let refuse = |why: &str| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("log path {}: {why}", path.display()),
        )
    };
    if !path.is_absolute() {
        return Err(refuse("not absolute"));
    }
    let name = match path.components().next_back() {
        Some(std::path::Component::Normal(name)) => name,
        _ => return Err(refuse("names no file")),
    };
    let mut dir = File::open("/")?;
    let parents = path.parent().map(Path::components).into_iter().flatten();
    for part in parents {
        match part {
            std::path::Component::RootDir => {}
            std::path::Component::Normal(part) => {
                dir = openat(
                    &dir,
                    part,
                    libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NOFOLLOW | libc::O_CLOEXEC,
                    0,
                )
                .map_err(|e| {
                    io::Error::new(
                        e.kind(),
                        format!(
                            "log path {}: component {part:?} is not a plain directory: {e}",
                            path.display()
                        ),
                    )
                })?;
            }
            _ => return Err(refuse("has . or .. components")),
        }
    }
    openat(
        &dir,
        name,
        libc::O_WRONLY | libc::O_CREAT | libc::O_APPEND | libc::O_NOFOLLOW | libc::O_CLOEXEC,
        0o640,
    )
    .map_err(|e| {
        io::Error::new(
            e.kind(),
            format!(
                "log file {} (not opened through a symlink): {e}",
                path.display()
            ),
        )
    })
}

fn openat(dir: &File, name: &std::ffi::OsStr, flags: i32, mode: libc::mode_t) -> io::Result<File> {
    use std::os::fd::{AsRawFd, FromRawFd};
    use std::os::unix::ffi::OsStrExt;
    let name = std::ffi::CString::new(name.as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "NUL in a log path"))?;
    // SAFETY: a valid dir fd, a NUL-terminated name; the result is a new fd
    // or -1.
    let fd = unsafe { libc::openat(dir.as_raw_fd(), name.as_ptr(), flags, mode as libc::c_uint) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: just returned to us, owned by nothing else.
    Ok(unsafe { File::from_raw_fd(fd) })
}

/// Cuts one stream's bytes into CRI records.
pub struct LineSplitter {
    stream: Stream,
    pending: Vec<u8>,
    scratch: Vec<u8>,
}

impl LineSplitter {
    pub fn new(stream: Stream) -> Self {
        LineSplitter {
            stream,
            pending: Vec::new(),
            scratch: Vec::new(),
        }
    }

    pub fn feed(&mut self, log: &CriLog, mut data: &[u8]) {
        while let Some(i) = data.iter().position(|&b| b == b'\n') {
            let mut line = &data[..i];
            if let Some(stripped) = line.strip_suffix(b"\r") {
                line = stripped;
            } else if line.is_empty() && self.pending.last() == Some(&b'\r') {
                self.pending.pop();
            }
            self.push(log, line);
            log.write_record(&mut self.scratch, self.stream, true, &self.pending);
            self.pending.clear();
            data = &data[i + 1..];
        }
        self.push(log, data);
        if self.pending.capacity() > 2 * MAX_LINE {
            self.pending.shrink_to(MAX_LINE);
        }
    }

    /// At EOF, what is left without a newline becomes a partial record.
    pub fn finish(&mut self, log: &CriLog) {
        if !self.pending.is_empty() {
            log.write_record(&mut self.scratch, self.stream, false, &self.pending);
            self.pending = Vec::new();
        }
        self.scratch = Vec::new();
    }

    /// Adds bytes of the current line, writing a `P` record each time the
    /// line grows past [`MAX_LINE`].
    fn push(&mut self, log: &CriLog, mut part: &[u8]) {
        while self.pending.len() + part.len() > MAX_LINE {
            let take = MAX_LINE - self.pending.len();
            self.pending.extend_from_slice(&part[..take]);
            log.write_record(&mut self.scratch, self.stream, false, &self.pending);
            self.pending.clear();
            part = &part[take..];
        }
        self.pending.extend_from_slice(part);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn records(chunks: &[&[u8]], stream: Stream) -> Vec<(String, String, String)> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.log");
        let log = CriLog::open(&path).unwrap();
        let mut s = LineSplitter::new(stream);
        for c in chunks {
            s.feed(&log, c);
        }
        s.finish(&log);
        let text = std::fs::read_to_string(&path).unwrap();
        text.lines()
            .map(|l| {
                let mut it = l.splitn(4, ' ');
                let ts = it.next().unwrap();
                assert!(ts.ends_with('Z') && ts.contains('T'), "{ts}");
                (
                    it.next().unwrap().to_owned(),
                    it.next().unwrap().to_owned(),
                    it.next().unwrap_or("").to_owned(),
                )
            })
            .collect()
    }

    fn rec(s: &str, t: &str, c: &str) -> (String, String, String) {
        (s.into(), t.into(), c.into())
    }

    #[test]
    fn full_lines_and_crlf() {
        let r = records(&[b"hello\nwor", b"ld\r\n\nlast"], Stream::Stdout);
        assert_eq!(
            r,
            vec![
                rec("stdout", "F", "hello"),
                rec("stdout", "F", "world"),
                rec("stdout", "F", ""),
                rec("stdout", "P", "last"),
            ]
        );
    }

    #[test]
    fn long_lines_split_like_containerd() {
        let long = vec![b'x'; 2 * MAX_LINE + 5];
        let mut data = long.clone();
        data.push(b'\n');
        let exact = vec![b'y'; MAX_LINE];
        let mut data2 = exact.clone();
        data2.push(b'\n');
        let r = records(&[&data[..7000], &data[7000..], &data2], Stream::Stderr);
        assert_eq!(r.len(), 4);
        assert_eq!((r[0].1.as_str(), r[0].2.len()), ("P", MAX_LINE));
        assert_eq!((r[1].1.as_str(), r[1].2.len()), ("P", MAX_LINE));
        assert_eq!((r[2].1.as_str(), r[2].2.len()), ("F", 5));
        assert_eq!((r[3].1.as_str(), r[3].2.len()), ("F", MAX_LINE));
        assert!(r.iter().all(|x| x.0 == "stderr"));
    }

    #[test]
    fn symlinks_at_the_file_or_a_parent_are_refused_at_open_and_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let host = dir.path().join("host-file");
        std::fs::write(&host, "host\n").unwrap();
        // At the file.
        let path = dir.path().join("c.log");
        std::os::unix::fs::symlink(&host, &path).unwrap();
        assert!(CriLog::open(&path).is_err());
        // In place of a parent.
        std::fs::create_dir(dir.path().join("real")).unwrap();
        std::os::unix::fs::symlink(dir.path().join("real"), dir.path().join("sub")).unwrap();
        assert!(CriLog::open(&dir.path().join("sub/0.log")).is_err());
        assert!(!dir.path().join("real/0.log").exists());
        assert!(CriLog::open(&dir.path().join("real/../real/0.log")).is_err());
        // A reopen after the file was replaced by a symlink keeps the old
        // file and writes nothing to the target.
        let path = dir.path().join("real/1.log");
        let log = CriLog::open(&path).unwrap();
        let meta = std::fs::metadata(&path).unwrap();
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(meta.permissions().mode() & 0o777 & !0o640, 0);
        std::fs::rename(&path, dir.path().join("real/1.log.1")).unwrap();
        std::os::unix::fs::symlink(&host, &path).unwrap();
        assert!(log.reopen().is_err());
        let mut s = LineSplitter::new(Stream::Stdout);
        s.feed(&log, b"after\n");
        assert_eq!(std::fs::read_to_string(&host).unwrap(), "host\n");
        assert!(
            std::fs::read_to_string(dir.path().join("real/1.log.1"))
                .unwrap()
                .ends_with(" stdout F after\n")
        );
    }

    #[test]
    fn reopen_follows_rotation() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.log");
        let log = CriLog::open(&path).unwrap();
        let mut s = LineSplitter::new(Stream::Stdout);
        s.feed(&log, b"one\n");
        std::fs::rename(&path, dir.path().join("c.log.1")).unwrap();
        log.reopen().unwrap();
        s.feed(&log, b"two\n");
        assert!(
            std::fs::read_to_string(&path)
                .unwrap()
                .ends_with(" stdout F two\n")
        );
        let old = std::fs::read_to_string(dir.path().join("c.log.1")).unwrap();
        assert!(old.ends_with(" stdout F one\n"));
    }
}
