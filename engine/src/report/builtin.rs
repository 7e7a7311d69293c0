//! The built-in report formats. Each keeps counts (skips by reason come
//! with the summary) and the first `max_examples` failures and skips, so
//! memory and the report's size do not grow with the job.

use std::fmt::Write as _;

use super::{Formatter, Outcome, OutcomeKind, ReportSummary};

/// Shared state of the built-in formats.
#[derive(Debug, Default)]
struct Collected {
    summary: Option<ReportSummary>,
    failures: Vec<Outcome>,
    more_failures: u64,
    skips: Vec<Outcome>,
    more_skips: u64,
    max_examples: usize,
}

impl Collected {
    fn new(max_examples: usize) -> Self {
        Collected {
            max_examples,
            ..Default::default()
        }
    }

    fn add(&mut self, batch: &[Outcome]) {
        for o in batch {
            let (kept, more) = match o.kind {
                OutcomeKind::Failed => (&mut self.failures, &mut self.more_failures),
                OutcomeKind::Skipped => (&mut self.skips, &mut self.more_skips),
                OutcomeKind::Copied => continue,
            };
            if kept.len() < self.max_examples {
                kept.push(o.clone());
            } else {
                *more += 1;
            }
        }
    }

    fn summary(&self) -> Result<&ReportSummary, String> {
        self.summary
            .as_ref()
            .ok_or_else(|| "finish before begin".to_string())
    }
}

fn time(t: Option<chrono::DateTime<chrono::Utc>>) -> String {
    t.map(|t| t.format("%Y-%m-%d %H:%M:%S UTC").to_string())
        .unwrap_or_else(|| "-".into())
}

#[derive(Debug, Clone, Copy)]
enum Style {
    Text,
    Json,
    Markdown,
}

/// A built-in report format: text for terminals, one JSON document, or
/// GitHub-flavoured Markdown. All three collect the same way.
pub struct BuiltinFormatter {
    style: Style,
    c: Collected,
}

impl BuiltinFormatter {
    /// Each keeps at most `max_examples` failures and as many skips.
    pub fn text(max_examples: usize) -> Self {
        BuiltinFormatter {
            style: Style::Text,
            c: Collected::new(max_examples),
        }
    }
    pub fn json(max_examples: usize) -> Self {
        BuiltinFormatter {
            style: Style::Json,
            c: Collected::new(max_examples),
        }
    }
    pub fn markdown(max_examples: usize) -> Self {
        BuiltinFormatter {
            style: Style::Markdown,
            c: Collected::new(max_examples),
        }
    }
}

impl Formatter for BuiltinFormatter {
    fn content_type(&mut self) -> Result<String, String> {
        Ok(match self.style {
            Style::Text => "text/plain",
            Style::Json => "application/json",
            Style::Markdown => "text/markdown",
        }
        .into())
    }
    fn file_extension(&mut self) -> Result<String, String> {
        Ok(match self.style {
            Style::Text => "txt",
            Style::Json => "json",
            Style::Markdown => "md",
        }
        .into())
    }
    fn begin(&mut self, s: &ReportSummary) -> Result<(), String> {
        self.c.summary = Some(s.clone());
        Ok(())
    }
    fn add(&mut self, batch: &[Outcome]) -> Result<(), String> {
        self.c.add(batch);
        Ok(())
    }
    fn finish(&mut self) -> Result<String, String> {
        match self.style {
            Style::Text => text(&self.c),
            Style::Json => json(&self.c),
            Style::Markdown => markdown(&self.c),
        }
    }
}

fn text(c: &Collected) -> Result<String, String> {
    let s = c.summary()?;
    let mut out = String::new();
    let _ = writeln!(out, "job {} ({})", s.job_id, s.state);
    let _ = writeln!(out, "  {} -> {} mode {}", s.source, s.destination, s.mode);
    let _ = writeln!(
        out,
        "  attempts {}, started {}, ended {}",
        s.attempts,
        time(s.started_at),
        time(s.ended_at)
    );
    let _ = writeln!(
        out,
        "  listed {}, copied {} ({} bytes), skipped {}, failed {}",
        s.listed, s.copied, s.copied_bytes, s.skipped, s.failed
    );
    for (reason, n) in &s.skipped_by_reason {
        let _ = writeln!(out, "  skipped {reason}: {n}");
    }
    // With --max-examples 0 the section is only its count.
    if !c.failures.is_empty() || c.more_failures > 0 {
        let _ = writeln!(out, "{}:", failures_title(s).to_lowercase());
        for f in &c.failures {
            let _ = writeln!(out, "  {:?} (attempt {}): {}", f.name, f.attempt, f.detail);
        }
        if c.more_failures > 0 {
            let _ = writeln!(out, "  ... and {} more", c.more_failures);
        }
    }
    if !c.skips.is_empty() || c.more_skips > 0 {
        let _ = writeln!(out, "skipped blobs:");
        for f in &c.skips {
            let _ = writeln!(out, "  {:?} (attempt {}): {}", f.name, f.attempt, f.detail);
        }
        if c.more_skips > 0 {
            let _ = writeln!(out, "  ... and {} more", c.more_skips);
        }
    }
    Ok(out)
}

fn json(c: &Collected) -> Result<String, String> {
    let v = serde_json::json!({
        "summary": c.summary()?,
        "failures": c.failures,
        "failures_not_listed": c.more_failures,
        "skips": c.skips,
        "skips_not_listed": c.more_skips,
    });
    serde_json::to_string_pretty(&v).map_err(|e| e.to_string())
}

fn markdown(c: &Collected) -> Result<String, String> {
    let s = c.summary()?;
    let mut out = format!("# ferry job `{}`\n\n", s.job_id);
    out.push_str("| | |\n|---|---|\n");
    for (k, v) in [
        ("source", md_cell(&s.source)),
        ("destination", md_cell(&s.destination)),
        ("mode", s.mode.clone()),
        ("state", s.state.clone()),
        ("attempts", s.attempts.to_string()),
        ("started", time(s.started_at)),
        ("ended", time(s.ended_at)),
        ("listed", s.listed.to_string()),
        ("copied", format!("{} ({} bytes)", s.copied, s.copied_bytes)),
        ("skipped", s.skipped.to_string()),
        ("failed", s.failed.to_string()),
    ] {
        let _ = writeln!(out, "| {k} | {v} |");
    }
    if !s.skipped_by_reason.is_empty() {
        out.push_str("\n## Skipped by reason\n\n| reason | blobs |\n|---|---|\n");
        for (r, n) in &s.skipped_by_reason {
            let _ = writeln!(out, "| {r} | {n} |");
        }
    }
    md_examples(
        &mut out,
        failures_title(s),
        "error",
        &c.failures,
        c.more_failures,
        "failures",
    );
    md_examples(
        &mut out,
        "Skipped",
        "reason",
        &c.skips,
        c.more_skips,
        "skipped",
    );
    Ok(out)
}

/// The failures listed are those of every attempt, while the counts are
/// the last attempt's: after a replay that copied them, "failed 0" above a
/// list of failures read as a contradiction.
fn failures_title(s: &ReportSummary) -> &'static str {
    if s.attempts > 1 {
        "Failures in any attempt (each may have been copied by a later one)"
    } else {
        "Failures"
    }
}

/// A markdown table of example blobs (failures or skips) and the count left out.
fn md_examples(
    out: &mut String,
    title: &str,
    column: &str,
    rows: &[Outcome],
    more: u64,
    more_word: &str,
) {
    if rows.is_empty() {
        if more > 0 {
            let _ = writeln!(out, "\n## {title}\n\n{more} {more_word}, none listed");
        }
        return;
    }
    let _ = write!(
        out,
        "\n## {title}\n\n| blob | attempt | {column} |\n|---|---|---|\n"
    );
    for f in rows {
        let _ = writeln!(
            out,
            "| {} | {} | {} |",
            md_cell(&f.name),
            f.attempt,
            md_cell(&f.detail)
        );
    }
    if more > 0 {
        let _ = writeln!(out, "\n... and {more} more {more_word}");
    }
}

/// Text for a markdown table cell, shown as written: markdown's inline
/// punctuation is backslash-escaped (a file named `*draft*` or `<b>x</b>`
/// would otherwise render as emphasis or HTML), `|` would end the cell.
fn md_cell(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '\\' | '`' | '*' | '_' | '[' | ']' | '<' | '>' | '|' | '~' | '#' | '!' | '&' => {
                out.push('\\');
                out.push(c);
            }
            // Shown as written (`\n`), so `a\nb` and `a b` stay apart.
            '\n' => out.push_str("\\\\n"),
            '\r' => out.push_str("\\\\r"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::md_cell;

    #[test]
    fn markdown_cells_show_names_as_written() {
        assert_eq!(md_cell("plain name.txt"), "plain name.txt");
        assert_eq!(md_cell("a|b"), "a\\|b");
        assert_eq!(md_cell("*draft*_v2_"), "\\*draft\\*\\_v2\\_");
        assert_eq!(md_cell("<b>x</b>"), "\\<b\\>x\\</b\\>");
        assert_eq!(md_cell("`tick` [l](u)"), "\\`tick\\` \\[l\\](u)");
        assert_eq!(md_cell("back\\slash\nline"), "back\\\\slash\\\\nline");
        assert_eq!(md_cell("&amp;.txt"), "\\&amp;.txt");
    }
}
