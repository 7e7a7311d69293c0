//! Shared by the report formatters through `#[path]`: number, size, time
//! and duration formatting, written by hand (no chrono, no serde).
#![allow(dead_code)]

use std::fmt::Write;

/// 1234567 -> "1,234,567".
pub fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// Binary units with one decimal: "0 B", "999 B", "1.5 KiB", "2.0 GiB".
pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 7] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"];
    if n < 1024 {
        return format!("{n} B");
    }
    // Tenths of the unit, computed in integers to stay exact for large n.
    let mut unit = 0;
    let mut scale: u128 = 1;
    while unit + 1 < UNITS.len() && (n as u128) >= scale * 1024 {
        scale *= 1024;
        unit += 1;
    }
    let tenths = ((n as u128) * 10 + scale / 2) / scale;
    format!("{}.{} {}", tenths / 10, tenths % 10, UNITS[unit])
}

/// Parses RFC 3339 (`2024-05-01T12:00:00Z`, `...T12:00:00.123+02:00`) into
/// milliseconds since the Unix epoch. None when it is not that shape.
pub fn parse_rfc3339_ms(s: &str) -> Option<i64> {
    let b = s.as_bytes();
    if b.len() < 20 {
        return None;
    }
    let num = |from: usize, len: usize| -> Option<i64> {
        let part = s.get(from..from + len)?;
        if !part.bytes().all(|c| c.is_ascii_digit()) {
            return None;
        }
        part.parse().ok()
    };
    let (year, month, day) = (num(0, 4)?, num(5, 2)?, num(8, 2)?);
    if b[4] != b'-' || b[7] != b'-' || !matches!(b[10], b'T' | b't' | b' ') {
        return None;
    }
    let (hour, minute, second) = (num(11, 2)?, num(14, 2)?, num(17, 2)?);
    if b[13] != b':' || b[16] != b':' {
        return None;
    }
    if !(1..=12).contains(&month)
        || !(1..=31).contains(&day)
        || hour > 23
        || minute > 59
        || second > 60
    {
        return None;
    }
    let mut i = 19;
    let mut millis = 0i64;
    if b.get(i) == Some(&b'.') {
        i += 1;
        let start = i;
        while i < b.len() && b[i].is_ascii_digit() {
            if i - start < 3 {
                millis = millis * 10 + i64::from(b[i] - b'0');
            }
            i += 1;
        }
        if i == start {
            return None;
        }
        for _ in (i - start)..3 {
            millis *= 10;
        }
    }
    let offset_min = match b.get(i)? {
        b'Z' | b'z' if i + 1 == b.len() => 0,
        sign @ (b'+' | b'-') if i + 6 == b.len() && b[i + 3] == b':' => {
            let m = num(i + 1, 2)? * 60 + num(i + 4, 2)?;
            if *sign == b'-' {
                -m
            } else {
                m
            }
        }
        _ => return None,
    };
    let days = days_from_civil(year, month, day);
    let secs = days * 86_400 + hour * 3600 + minute * 60 + second - offset_min * 60;
    Some(secs * 1000 + millis)
}

/// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = if y >= 0 { y } else { y - 399 } / 400;
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Milliseconds between two RFC 3339 times, when both parse and end >= start.
pub fn elapsed_ms(start: Option<&str>, end: Option<&str>) -> Option<u64> {
    let (s, e) = (parse_rfc3339_ms(start?)?, parse_rfc3339_ms(end?)?);
    u64::try_from(e - s).ok()
}

/// 950 -> "950 ms", 83_000 -> "1m 23s", 7_384_000 -> "2h 3m 4s".
pub fn human_duration(ms: u64) -> String {
    if ms < 1000 {
        return format!("{ms} ms");
    }
    if ms < 60_000 {
        return format!("{}.{} s", ms / 1000, (ms % 1000) / 100);
    }
    let secs = ms / 1000;
    let (d, h, m, s) = (secs / 86_400, secs / 3600 % 24, secs / 60 % 60, secs % 60);
    let mut out = String::new();
    if d > 0 {
        let _ = write!(out, "{d}d ");
    }
    if d > 0 || h > 0 {
        let _ = write!(out, "{h}h ");
    }
    let _ = write!(out, "{m}m {s}s");
    out
}

/// Average rate over a duration, e.g. "12.3 MiB/s"; None for a zero duration.
pub fn rate(bytes: u64, ms: u64) -> Option<String> {
    if ms == 0 {
        return None;
    }
    let per_sec = (bytes as u128 * 1000 / ms as u128).min(u64::MAX as u128) as u64;
    Some(format!("{}/s", human_bytes(per_sec)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers() {
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(1000), "1,000");
        assert_eq!(thousands(1234567), "1,234,567");
        assert_eq!(human_bytes(0), "0 B");
        assert_eq!(human_bytes(1023), "1023 B");
        assert_eq!(human_bytes(1536), "1.5 KiB");
        assert_eq!(human_bytes(2 * 1024 * 1024 * 1024), "2.0 GiB");
        assert_eq!(human_bytes(u64::MAX), "16.0 EiB");
    }

    #[test]
    fn times() {
        assert_eq!(parse_rfc3339_ms("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(
            parse_rfc3339_ms("2024-02-29T12:34:56.789Z"),
            Some(1_709_210_096_789)
        );
        assert_eq!(
            parse_rfc3339_ms("2024-02-29T14:34:56.789123+02:00"),
            Some(1_709_210_096_789)
        );
        assert_eq!(parse_rfc3339_ms("2024-02-29"), None);
        assert_eq!(parse_rfc3339_ms("2024-02-29T12:34:56"), None);
        assert_eq!(
            elapsed_ms(Some("2024-05-01T12:00:00Z"), Some("2024-05-01T12:01:23.5Z")),
            Some(83_500)
        );
        assert_eq!(elapsed_ms(Some("2024-05-01T12:00:00Z"), None), None);
        assert_eq!(human_duration(950), "950 ms");
        assert_eq!(human_duration(83_500), "1m 23s");
        assert_eq!(human_duration(7_384_000), "2h 3m 4s");
        assert_eq!(human_duration(12_500), "12.5 s");
        assert_eq!(rate(10 * 1024 * 1024, 2000).as_deref(), Some("5.0 MiB/s"));
    }
}
