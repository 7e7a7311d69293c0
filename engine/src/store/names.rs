//! Blob name rules shared by every backend: a name is a relative,
//! `/`-separated path that cannot escape the store root.

use super::StoreError;

/// Longest file name component most local filesystems accept.
pub const MAX_COMPONENT: usize = 255;

/// Checks a blob name; refuses anything that could land outside the root.
pub fn check(name: &str) -> Result<(), StoreError> {
    let bad = |why: &str| {
        Err(StoreError::InvalidName {
            name: name.to_string(),
            why: why.to_string(),
        })
    };
    if name.is_empty() {
        return bad("empty name");
    }
    if name.starts_with('/') {
        return bad("absolute names are refused");
    }
    if name.contains('\0') {
        return bad("contains a NUL byte");
    }
    // Azure cannot list them back in XML, and in messages and terminals
    // they do damage (escape sequences, line breaks): no backend takes them.
    if name.chars().any(char::is_control) {
        return bad("contains a control character; rename it");
    }
    for part in name.split('/') {
        match part {
            "" => return bad("empty path segment ('//' or trailing '/')"),
            "." | ".." => return bad("'.' and '..' segments are refused"),
            p if p.len() > MAX_COMPONENT => return bad("a path segment is longer than 255 bytes"),
            _ => {}
        }
    }
    Ok(())
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
        }
    }
}
