//! Shared by the report formatters through `#[path]`: the capped list of
//! failed outcomes, the only per-blob data a formatter keeps.
#![allow(dead_code)]

/// Longest detail kept per failure (bytes, cut on a char boundary), so one
/// huge error message cannot blow the memory budget either.
pub const MAX_DETAIL: usize = 2000;

pub struct Failure {
    pub name: String,
    pub detail: String,
    pub at: String,
    pub attempt: u32,
}

/// At most `max` failures, in log order, plus a count of the rest.
pub struct Failures {
    pub max: usize,
    pub kept: Vec<Failure>,
    pub more: u64,
}

impl Failures {
    pub fn new(max: usize) -> Self {
        Failures {
            max,
            kept: Vec::new(),
            more: 0,
        }
    }

    pub fn push(&mut self, name: &str, detail: &str, at: &str, attempt: u32) {
        if self.kept.len() < self.max {
            self.kept.push(Failure {
                name: name.to_string(),
                detail: truncate(detail, MAX_DETAIL),
                at: at.to_string(),
                attempt,
            });
        } else {
            self.more += 1;
        }
    }

    pub fn total(&self) -> u64 {
        self.kept.len() as u64 + self.more
    }
}

/// `s` cut to at most `max` bytes on a char boundary, with "…" when cut.
pub fn truncate(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}
