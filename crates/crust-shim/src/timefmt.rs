//! Timestamps: RFC 3339 with nanoseconds for CRI log lines, protobuf
//! `Timestamp`s for the Task API.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use containerd_shim_protos::protobuf::well_known_types::timestamp::Timestamp;

/// Appends `t` in UTC as Go's `time.RFC3339Nano` formats it (what containerd
/// writes in CRI logs): trailing zeros of the fraction are dropped, and the
/// fraction with its dot when it is zero.
pub fn push_rfc3339_nano(out: &mut Vec<u8>, t: SystemTime) {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or(Duration::ZERO);
    let secs = d.as_secs();
    let (year, month, day) = civil_from_days((secs / 86_400) as i64);
    let rem = secs % 86_400;
    let (h, m, s) = (rem / 3600, rem % 3600 / 60, rem % 60);
    let mut text = format!("{year:04}-{month:02}-{day:02}T{h:02}:{m:02}:{s:02}");
    let nanos = d.subsec_nanos();
    if nanos != 0 {
        let frac = format!("{nanos:09}");
        text.push('.');
        text.push_str(frac.trim_end_matches('0'));
    }
    text.push('Z');
    out.extend_from_slice(text.as_bytes());
}

/// Days since 1970-01-01 to a proleptic Gregorian (year, month, day);
/// Howard Hinnant's `civil_from_days`.
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

pub fn to_timestamp(t: SystemTime) -> Timestamp {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or(Duration::ZERO);
    Timestamp {
        seconds: d.as_secs() as i64,
        nanos: d.subsec_nanos() as i32,
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fmt(secs: u64, nanos: u32) -> String {
        let mut v = Vec::new();
        push_rfc3339_nano(&mut v, UNIX_EPOCH + Duration::new(secs, nanos));
        String::from_utf8(v).unwrap()
    }

    #[test]
    fn formats_like_go() {
        assert_eq!(fmt(0, 0), "1970-01-01T00:00:00Z");
        assert_eq!(
            fmt(1_475_713_029, 669_794_202),
            "2016-10-06T00:17:09.669794202Z"
        );
        assert_eq!(fmt(1_475_713_029, 500_000_000), "2016-10-06T00:17:09.5Z");
        assert_eq!(fmt(951_782_400, 10), "2000-02-29T00:00:00.00000001Z");
        assert_eq!(fmt(4_102_444_799, 0), "2099-12-31T23:59:59Z");
    }
}
