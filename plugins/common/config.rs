//! Shared by the guest crates through `#[path]` (no extra crate, so each
//! guest depends on wit-bindgen only). Config helpers.
#![allow(dead_code)]

/// Rejects any key not in `known`, naming it and listing what is accepted.
pub fn reject_unknown(
    plugin: &str,
    config: &[(String, String)],
    known: &[&str],
) -> Result<(), String> {
    for (key, _) in config {
        if !known.contains(&key.as_str()) {
            return Err(if known.is_empty() {
                format!("{plugin}: unknown config key `{key}` (this plugin takes no configuration)")
            } else {
                format!(
                    "{plugin}: unknown config key `{key}` (accepted: {})",
                    known.join(", ")
                )
            });
        }
    }
    Ok(())
}

/// The last value given for `key`, if any.
pub fn last<'a>(config: &'a [(String, String)], key: &str) -> Option<&'a str> {
    config
        .iter()
        .rev()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.as_str())
}

/// Parses an optional non-negative integer setting.
pub fn usize_or(
    plugin: &str,
    config: &[(String, String)],
    key: &str,
    default: usize,
) -> Result<usize, String> {
    match last(config, key) {
        None => Ok(default),
        Some(v) => v
            .trim()
            .parse::<usize>()
            .map_err(|_| format!("{plugin}: `{key}` must be a non-negative integer, got `{v}`")),
    }
}
