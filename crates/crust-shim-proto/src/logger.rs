//! crust-shim as the log writer of a container that another shim runs.
//!
//! Other shims (containerd-shim-runc-v2 among them) take FIFO paths for a
//! container's stdio. crustd makes the stdout and stderr FIFOs and starts
//! crust-shim with their read ends on fd 3 and fd 4 and a pipe on fd 5
//! that it closes once it is ready. These are the fds containerd's shims
//! give a `binary://` logging binary, and its arguments are key-value
//! pairs in any order as a `binary://` URI's query arrives (Go map order),
//! so that the same contract could serve there; crust does not use that
//! path, as containerd 1.6's runc shim wires no stdin to such a logger.
//! The pairs are [`MODE`] and the keys below. crust-shim then writes the
//! CRI log file and serves the bundle's attach socket ([`crate::attach`])
//! exactly as it does for its own containers, reopens the log on SIGUSR1,
//! and exits when both streams end. It records itself in [`PID_FILE`] in
//! the bundle so that crustd can signal it for ReopenContainerLog. It is
//! a process of its own, so the output keeps flowing while crustd restarts.

use std::collections::BTreeMap;
use std::path::PathBuf;

/// The key and value that select logger mode.
pub const MODE_KEY: &str = "mode";
pub const MODE: &str = "cri-logger";
/// The container's bundle dir, where the attach socket and pid file go.
pub const BUNDLE_KEY: &str = "bundle";
/// The CRI log file; absent when the container has no log.
pub const LOG_KEY: &str = "log";
/// In the bundle: `<pid> <start time>\n`, the start time as field 22 of
/// `/proc/<pid>/stat`, so a signal never reaches a process that reused the pid.
pub const PID_FILE: &str = "cri-logger.pid";

/// The logger's fds, as containerd's shims pass them.
pub const STDOUT_FD: i32 = 3;
pub const STDERR_FD: i32 = 4;
pub const READY_FD: i32 = 5;

/// What the logger is asked to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoggerArgs {
    pub bundle: PathBuf,
    pub log: Option<PathBuf>,
}

/// The query pairs for a container's URI.
pub fn query(args: &LoggerArgs) -> Vec<(&'static str, String)> {
    let mut pairs = vec![
        (MODE_KEY, MODE.to_string()),
        (BUNDLE_KEY, args.bundle.display().to_string()),
    ];
    if let Some(log) = &args.log {
        pairs.push((LOG_KEY, log.display().to_string()));
    }
    pairs
}

/// Whether a shim's arguments are a logger invocation, and which: `None`
/// when they are not key-value pairs with `mode cri-logger`.
pub fn parse(args: &[String]) -> Option<Result<LoggerArgs, String>> {
    if !args.len().is_multiple_of(2) {
        return None;
    }
    let pairs: BTreeMap<&str, &str> = args
        .chunks(2)
        .map(|p| (p[0].as_str(), p[1].as_str()))
        .collect();
    if pairs.get(MODE_KEY) != Some(&MODE) {
        return None;
    }
    Some((|| {
        if let Some(unknown) = pairs
            .keys()
            .find(|k| ![MODE_KEY, BUNDLE_KEY, LOG_KEY].contains(k))
        {
            return Err(format!("unknown logger argument {unknown:?}"));
        }
        let absolute = |key: &str| -> Result<Option<PathBuf>, String> {
            match pairs.get(key) {
                None | Some(&"") => Ok(None),
                Some(p) if p.starts_with('/') => Ok(Some(PathBuf::from(p))),
                Some(p) => Err(format!("{key} {p:?} must be an absolute path")),
            }
        };
        Ok(LoggerArgs {
            bundle: absolute(BUNDLE_KEY)?.ok_or("the bundle dir is missing")?,
            log: absolute(LOG_KEY)?,
        })
    })())
}

/// The pid file's text.
pub fn pid_file(pid: u32, start_time: u64) -> String {
    format!("{pid} {start_time}\n")
}

/// `(pid, start time)` from the pid file's text.
pub fn parse_pid_file(text: &str) -> Option<(u32, u64)> {
    let mut it = text.split_whitespace();
    let pid = it.next()?.parse().ok().filter(|p| *p > 0)?;
    let start = it.next()?.parse().ok()?;
    Some((pid, start))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn pairs_round_trip_in_any_order() {
        let args = LoggerArgs {
            bundle: "/b".into(),
            log: Some("/l/0.log".into()),
        };
        let flat: Vec<String> = query(&args)
            .into_iter()
            .rev()
            .flat_map(|(k, v)| [k.to_string(), v])
            .collect();
        assert_eq!(parse(&flat), Some(Ok(args)));
    }

    #[test]
    fn shim_flags_are_not_a_logger() {
        assert_eq!(
            parse(&strings(&["-namespace", "k8s.io", "-id", "x", "start"])),
            None
        );
        assert_eq!(parse(&strings(&["-namespace", "k8s.io"])), None);
        assert_eq!(parse(&[]), None);
    }

    #[test]
    fn bad_logger_arguments_are_errors() {
        assert!(matches!(
            parse(&strings(&["mode", "cri-logger"])),
            Some(Err(_))
        ));
        assert!(matches!(
            parse(&strings(&["mode", "cri-logger", "bundle", "rel"])),
            Some(Err(_))
        ));
        assert!(matches!(
            parse(&strings(&["mode", "cri-logger", "bundle", "/b", "x", "y"])),
            Some(Err(_))
        ));
        assert_eq!(
            parse(&strings(&["log", "", "mode", "cri-logger", "bundle", "/b"])),
            Some(Ok(LoggerArgs {
                bundle: "/b".into(),
                log: None
            }))
        );
    }

    #[test]
    fn pid_files_never_name_pid_zero() {
        assert_eq!(parse_pid_file(&pid_file(42, 7)), Some((42, 7)));
        assert_eq!(parse_pid_file("0 7\n"), None);
        assert_eq!(parse_pid_file("42\n"), None);
    }
}
