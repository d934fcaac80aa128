//! The stdio values of Create and Exec beyond plain FIFO paths.
//!
//! The Task API passes a process's stdio as strings. containerd's `ctr`
//! passes FIFO paths; crustd wants a CRI container's output written to its
//! log file in the CRI log format, which no FIFO path can ask for, so it
//! passes stdout = `crilog://<absolute path>` (stderr the same or empty)
//! and the shim writes both streams to that file.

use std::fmt;
use std::path::Path;

/// The scheme of a CRI log destination.
pub const LOG_SCHEME: &str = "crilog://";

/// The stdio value that sends output to the CRI log file at `path`.
/// `path` must be absolute: the shim refuses any other (it runs in another
/// directory than crustd).
pub fn log_uri(path: &Path) -> String {
    format!("{LOG_SCHEME}{}", path.display())
}

/// The log file a stdio value names: `None` when it is not a
/// [`LOG_SCHEME`] URI, an error when its path is not absolute.
pub fn parse_log_uri(value: &str) -> Result<Option<&Path>, NotAbsolute> {
    let Some(p) = value.strip_prefix(LOG_SCHEME) else {
        return Ok(None);
    };
    let path = Path::new(p);
    if path.is_absolute() {
        Ok(Some(path))
    } else {
        Err(NotAbsolute(p.to_owned()))
    }
}

/// A stdio path that is not absolute.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NotAbsolute(pub String);

impl fmt::Display for NotAbsolute {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "stdio path {:?} is not absolute", self.0)
    }
}

impl std::error::Error for NotAbsolute {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_uris_round_trip() {
        for p in ["/l", "/var/log/pods/ns_pod_uid/c/0.log", "/a b/ünï.log"] {
            let uri = log_uri(Path::new(p));
            assert_eq!(uri, format!("crilog://{p}"));
            assert_eq!(parse_log_uri(&uri), Ok(Some(Path::new(p))));
        }
    }

    #[test]
    fn log_uris_need_an_absolute_path() {
        for (uri, path) in [
            ("crilog://rel", "rel"),
            ("crilog://./x.log", "./x.log"),
            ("crilog://", ""),
        ] {
            let e = parse_log_uri(uri).unwrap_err();
            assert_eq!(e, NotAbsolute(path.to_owned()));
            assert_eq!(
                e.to_string(),
                format!("stdio path {path:?} is not absolute")
            );
        }
    }

    #[test]
    fn other_values_are_not_log_uris() {
        for v in [
            "",
            "/run/fifo",
            "file:///x",
            "crilog:/x",
            "CRILOG:///x",
            "rel",
        ] {
            assert_eq!(parse_log_uri(v), Ok(None), "{v}");
        }
    }
}
