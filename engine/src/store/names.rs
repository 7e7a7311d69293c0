//! Blob name rules shared by every backend: a name is a relative,
//! `/`-separated path that cannot escape the store root.

use std::cmp::Ordering;

use super::StoreError;

/// The order every store lists names in, and the merge of a source against
/// its destination compares them in: UTF-16 code units, as Azure lists a
/// container (flat namespace; Azurite too). Byte (UTF-8) order differs only
/// where the first differing characters are one in U+E000..U+FFFF (CJK
/// fullwidth forms, private use) and one above U+FFFF (emoji): UTF-16 puts
/// the latter first (surrogates). With byte order, such a destination blob
/// arrived "late" in the merge, was taken as absent, and `--mode never`
/// overwrote it.
pub fn cmp(a: &str, b: &str) -> Ordering {
    let (x, y) = (a.as_bytes(), b.as_bytes());
    let Some(i) = x.iter().zip(y).position(|(p, q)| p != q) else {
        return x.len().cmp(&y.len());
    };
    // The bytes before `i` are equal, so both differ at the same place in
    // a character: at its lead byte, or in continuation bytes of a lead
    // they share (then byte order is UTF-16 order).
    let high_bmp = |c: u8| c == 0xEE || c == 0xEF;
    let astral = |c: u8| c >= 0xF0;
    match (x[i], y[i]) {
        (p, q) if high_bmp(p) && astral(q) => Ordering::Greater,
        (p, q) if astral(p) && high_bmp(q) => Ordering::Less,
        (p, q) => p.cmp(&q),
    }
}

/// Longest file name component most local filesystems accept.
pub const MAX_COMPONENT: usize = 255;

/// Checks a blob name for a folder tree (local and in-memory stores):
/// refuses anything that could land outside the root or that a filesystem
/// cannot hold.
pub fn check(name: &str) -> Result<(), StoreError> {
    check_common(name)?;
    if name.starts_with('/') {
        return bad(name, "absolute names are refused");
    }
    for part in name.split('/') {
        match part {
            "" => return bad(name, "empty path segment ('//' or trailing '/')"),
            p if p.len() > MAX_COMPONENT => {
                return bad(name, "a path segment is longer than 255 bytes")
            }
            _ => {}
        }
    }
    Ok(())
}

/// Checks a blob name for Azure, which takes names a folder tree cannot
/// (`a//b`, a trailing `/`, segments over 255 bytes), so that Azure ->
/// Azure copies every blob; a local destination refuses those per blob.
/// The 1,024-character limit is checked on the full name by the store.
pub fn check_azure(name: &str) -> Result<(), StoreError> {
    // Azure stores `\` as `/`: `x\y.txt` from a local folder landed on the
    // blob `x/y.txt` and replaced that file's backup, every run.
    if name.contains('\\') {
        return bad(
            name,
            "contains a backslash, which Azure Blob Storage stores as '/' (it would land on another blob); rename it",
        );
    }
    check_common(name)
}

/// What no backend takes: an empty name, NUL and control characters, and
/// `.`/`..` segments (URL handling resolves them away, and on disk they
/// escape the root).
fn check_common(name: &str) -> Result<(), StoreError> {
    if name.is_empty() {
        return bad(name, "empty name");
    }
    if name.contains('\0') {
        return bad(name, "contains a NUL byte");
    }
    // Azure cannot list them back in XML, and in messages and terminals
    // they do damage (escape sequences, line breaks): no backend takes them.
    if name.chars().any(char::is_control) {
        return bad(name, "contains a control character; rename it");
    }
    if name.split('/').any(|part| part == "." || part == "..") {
        return bad(name, "'.' and '..' segments are refused");
    }
    Ok(())
}

fn bad(name: &str, why: &str) -> Result<(), StoreError> {
    Err(StoreError::InvalidName {
        name: name.to_string(),
        why: why.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_that_escape_or_are_malformed_are_refused() {
        for bad in [
            "",
            "/etc/passwd",
            "a/../../b",
            "..",
            "./a",
            "a//b",
            "a/",
            "a\0b",
            "esc\x1b[31m",
            "line\nbreak",
            "tab\there",
            "del\x7f",
            "c1\u{85}",
        ] {
            assert!(check(bad).is_err(), "{bad:?} should be refused");
        }
        let long = "x".repeat(256);
        assert!(check(&long).is_err());
        for good in ["a", "a/b c/d.txt", "ünï/ç ø", "a..b", ".hidden", "%23#?"] {
            check(good).unwrap();
            check_azure(good).unwrap();
        }
    }

    #[test]
    fn azure_takes_names_a_folder_tree_cannot_but_not_dot_segments() {
        let long_segment = format!("long/{}", "s".repeat(300));
        for ok in ["m//double", "m/trailing/", "/lead", long_segment.as_str()] {
            check_azure(ok).unwrap();
            assert!(check(ok).is_err(), "{ok:?} is no file path");
        }
        for bad in [
            "",
            "a/../b",
            "./a",
            "a/.",
            "a\0b",
            "line\nbreak",
            "x\\y.txt",
        ] {
            assert!(check_azure(bad).is_err(), "{bad:?} should be refused");
        }
        // A local folder may hold it; Azure would store it as `x/y.txt`.
        check("x\\y.txt").unwrap();
    }
}

#[cfg(test)]
mod order_tests {
    use super::cmp;
    use std::cmp::Ordering;

    #[test]
    fn names_compare_as_utf16_code_units() {
        let names = [
            "",
            "a",
            "a-b",
            "a/x",
            "ab",
            "z",
            "\u{d7ff}",
            "\u{1F600}x",
            "\u{e000}x",
            "\u{ff01}x",
            "\u{ffff}",
            "\u{10FFFF}",
            "é",
            "日本",
        ];
        for a in names {
            for b in names {
                let utf16 = a.encode_utf16().cmp(b.encode_utf16());
                assert_eq!(cmp(a, b), utf16, "{a:?} vs {b:?}");
            }
        }
        // Where it differs from byte order.
        assert_eq!(cmp("\u{1F600}", "\u{ff01}"), Ordering::Less);
        assert_eq!("\u{1F600}".cmp("\u{ff01}"), Ordering::Greater);
    }
}
