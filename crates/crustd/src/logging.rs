//! tracing setup: human-readable text by default, JSON on request.
//!
//! Under systemd with stderr connected to the journal, text lines drop
//! the timestamp (journald stamps every line itself) and colours, and
//! start with a syslog priority prefix (`<4>` for WARN) that journald
//! strips and records, so `journalctl -u crust -p warning` works. JSON
//! lines are the same everywhere.

use std::os::fd::AsRawFd;

use crust_config::{LogConfig, LogFormat};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::format::{FormatEvent, FormatFields, Writer};
use tracing_subscriber::fmt::{FmtContext, format};
use tracing_subscriber::registry::LookupSpan;

pub fn init(log: &LogConfig) -> anyhow::Result<()> {
    let filter = EnvFilter::try_new(&log.level)
        .map_err(|e| anyhow::anyhow!("invalid log level {:?}: {e}", log.level))?;
    let journal = stderr_is_journal_stream();
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(!journal && std::io::IsTerminal::is_terminal(&std::io::stderr()));
    let result = match log.format {
        LogFormat::Text if journal => builder
            .event_format(JournalPriority(format().without_time()))
            .try_init(),
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder
            .json()
            .with_current_span(true)
            .with_span_list(false)
            .try_init(),
    };
    result.map_err(|e| anyhow::anyhow!("cannot set up logging: {e}"))
}

/// Whether stderr is the journal stream systemd connected: `JOURNAL_STREAM`
/// is set and names stderr's device and inode. Checking the inode matters:
/// the variable is inherited by children whose stderr a shell redirected
/// to a file (systemd.exec(5), "$JOURNAL_STREAM").
fn stderr_is_journal_stream() -> bool {
    let Some(value) = std::env::var_os("JOURNAL_STREAM") else {
        return false;
    };
    let stat = nix::sys::stat::fstat(std::io::stderr().as_raw_fd()).ok();
    journal_stream_matches(&value.to_string_lossy(), stat.map(|s| (s.st_dev, s.st_ino)))
}

/// `JOURNAL_STREAM` is `<device>:<inode>` in decimal; `stderr` is its
/// fstat(2) (None when that failed, e.g. stderr is closed).
fn journal_stream_matches(journal_stream: &str, stderr: Option<(u64, u64)>) -> bool {
    let Some((dev, ino)) = stderr else {
        return false;
    };
    let Some((want_dev, want_ino)) = journal_stream.trim().split_once(':') else {
        return false;
    };
    want_dev.parse::<u64>() == Ok(dev) && want_ino.parse::<u64>() == Ok(ino)
}

/// The syslog priority journald reads off the front of a line
/// (sd-daemon(3) prefixes).
fn syslog_priority(level: &Level) -> u8 {
    match *level {
        Level::ERROR => 3,
        Level::WARN => 4,
        Level::INFO => 6,
        _ => 7,
    }
}

/// Writes an event's priority prefix, then the event as `F` formats it.
struct JournalPriority<F>(F);

impl<S, N, F> FormatEvent<S, N> for JournalPriority<F>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
    F: FormatEvent<S, N>,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> std::fmt::Result {
        // The text formatter pads the level (" INFO"); after the prefix
        // that space would start every journal message.
        let mut line = String::new();
        self.0.format_event(ctx, Writer::new(&mut line), event)?;
        write!(
            writer,
            "<{}>{}",
            syslog_priority(event.metadata().level()),
            line.trim_start()
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn journal_stream_must_name_stderr_itself() {
        assert!(journal_stream_matches("8:12345", Some((8, 12345))));
        assert!(journal_stream_matches("8:12345\n", Some((8, 12345))));
        // Inherited from a parent whose stderr was the journal, but ours
        // is a file now.
        assert!(!journal_stream_matches("8:12345", Some((8, 999))));
        assert!(!journal_stream_matches("9:12345", Some((8, 12345))));
        assert!(!journal_stream_matches("8:12345", None));
        for bad in ["", "8", "8:", ":12345", "x:y", "8:12345:1", "-8:12345"] {
            assert!(!journal_stream_matches(bad, Some((8, 12345))), "{bad:?}");
        }
    }

    #[test]
    fn priorities_are_syslogs() {
        assert_eq!(syslog_priority(&Level::ERROR), 3);
        assert_eq!(syslog_priority(&Level::WARN), 4);
        assert_eq!(syslog_priority(&Level::INFO), 6);
        assert_eq!(syslog_priority(&Level::DEBUG), 7);
        assert_eq!(syslog_priority(&Level::TRACE), 7);
    }
}
