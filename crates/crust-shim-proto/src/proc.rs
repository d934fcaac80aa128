//! A process's start time as both sides record it next to a pid (in
//! records and pid files), so that a signal never reaches a process that
//! reused the pid: field 22 (`starttime`, clock ticks since boot) of
//! `/proc/<pid>/stat`.

/// The start time in the text of a `/proc/<pid>/stat` file. Fields are
/// counted after the command's closing paren, as the command may hold
/// spaces and parens itself.
pub fn start_time(stat: &str) -> Option<u64> {
    let rest = &stat[stat.rfind(')')? + 1..];
    // rest starts at field 3 (state): field 22 is the 20th from here.
    rest.split_whitespace().nth(19)?.parse().ok()
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_command_may_hold_parens_and_spaces() {
        let stat = "42 (a) b) c) S 1 42 42 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 987654 0 0";
        assert_eq!(super::start_time(stat), Some(987654));
        assert_eq!(super::start_time("42 (x) S 1"), None);
        assert_eq!(super::start_time("no paren"), None);
    }
}
