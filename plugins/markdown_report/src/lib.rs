//! `markdown_report`: formats a run report as Markdown (GitHub flavour):
//! a heading with the job id, a summary table, skips by reason and a table
//! of failures. Copied and skipped outcomes are only counted; failures are
//! kept up to `max-failures` (default 1000), the rest only counted.
//!
//! Config: `max-failures` = N (optional).

wit_bindgen::generate!({ path: "../../wit", world: "report-formatter" });

#[path = "../../common/config.rs"]
mod config;
#[path = "../../common/failures.rs"]
mod failures;
#[path = "../../common/text.rs"]
mod text;

use std::cell::RefCell;
use std::fmt::Write;

use exports::ferry::plugin::formatter::Guest;
use failures::Failures;
use ferry::plugin::types::{Outcome, OutcomeKind, RunSummary};
use text::{human_bytes, thousands};

const NAME: &str = "markdown_report";
const DEFAULT_MAX_FAILURES: usize = 1000;

struct State {
    max_failures: usize,
    run: Option<Run>,
}

/// One report in progress, from `begin` to `finish`.
struct Run {
    summary: RunSummary,
    copied: u64,
    skipped: u64,
    failures: Failures,
}

thread_local! {
    static STATE: RefCell<State> =
        const { RefCell::new(State { max_failures: DEFAULT_MAX_FAILURES, run: None }) };
}

struct Plugin;

impl Guest for Plugin {
    fn configure(config: Vec<(String, String)>) -> Result<(), String> {
        config::reject_unknown(NAME, &config, &["max-failures"])?;
        let max = config::usize_or(NAME, &config, "max-failures", DEFAULT_MAX_FAILURES)?;
        STATE.with(|s| s.borrow_mut().max_failures = max);
        Ok(())
    }

    fn content_type() -> String {
        "text/markdown".into()
    }

    fn file_extension() -> String {
        "md".into()
    }

    fn begin(summary: RunSummary) -> Result<(), String> {
        STATE.with(|s| {
            let mut s = s.borrow_mut();
            let failures = Failures::new(s.max_failures);
            s.run = Some(Run {
                summary,
                copied: 0,
                skipped: 0,
                failures,
            });
        });
        Ok(())
    }

    fn add_outcomes(batch: Vec<Outcome>) -> Result<(), String> {
        STATE.with(|s| {
            let mut s = s.borrow_mut();
            let run = s
                .run
                .as_mut()
                .ok_or(format!("{NAME}: add-outcomes called before begin"))?;
            for o in &batch {
                match o.kind {
                    OutcomeKind::Copied => run.copied += 1,
                    OutcomeKind::Skipped => run.skipped += 1,
                    OutcomeKind::Failed => run.failures.push(&o.name, &o.detail, &o.at, o.attempt),
                }
            }
            Ok(())
        })
    }

    fn finish() -> Result<String, String> {
        STATE.with(|s| {
            let run = s
                .borrow_mut()
                .run
                .take()
                .ok_or(format!("{NAME}: finish called before begin"))?;
            Ok(render(&run))
        })
    }
}

/// Escapes text for a Markdown table cell or heading: backslash before the
/// characters that are markup (the pipe above all), line breaks to spaces.
fn md(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        match c {
            '\\' | '|' | '`' | '*' | '_' | '<' | '>' | '[' | ']' | '&' | '#' | '~' => {
                out.push('\\');
                out.push(c);
            }
            '\r' | '\n' => out.push(' '),
            _ => out.push(c),
        }
    }
    out
}

fn render(run: &Run) -> String {
    let s = &run.summary;
    let mut out = String::with_capacity(4096 + run.failures.kept.len() * 128);
    let _ = writeln!(out, "# ferry report: job {}\n", md(&s.job_id));

    out.push_str("## Summary\n\n| Field | Value |\n| --- | --- |\n");
    let mut row = |k: &str, v: String| {
        let _ = writeln!(out, "| {k} | {v} |");
    };
    row("Source", md(&s.source));
    row("Destination", md(&s.destination));
    row("Mode", md(&s.mode));
    row("State", md(&s.state));
    row("Attempts", s.attempts.to_string());
    for (label, at) in [
        ("Submitted", &s.submitted_at),
        ("Started", &s.started_at),
        ("Ended", &s.ended_at),
    ] {
        if let Some(at) = at {
            row(label, md(at));
        }
    }
    let elapsed = text::elapsed_ms(s.started_at.as_deref(), s.ended_at.as_deref());
    if let Some(ms) = elapsed {
        row("Duration", text::human_duration(ms));
    }
    row("Listed", thousands(s.listed));
    row("Copied", thousands(s.copied));
    row(
        "Bytes copied",
        format!(
            "{} ({} bytes)",
            human_bytes(s.copied_bytes),
            thousands(s.copied_bytes)
        ),
    );
    if let Some(rate) = elapsed.and_then(|ms| text::rate(s.copied_bytes, ms)) {
        row("Average rate", rate);
    }
    row("Skipped", thousands(s.skipped));
    row("Failed", thousands(s.failed));
    let _ = writeln!(
        out,
        "\nOutcomes in the log: {} copied, {} skipped, {} failed.\n",
        thousands(run.copied),
        thousands(run.skipped),
        thousands(run.failures.total()),
    );

    out.push_str("## Skips by reason\n\n");
    if s.skipped_by_reason.is_empty() {
        out.push_str("No skips.\n\n");
    } else {
        let mut reasons: Vec<&(String, u64)> = s.skipped_by_reason.iter().collect();
        reasons.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        out.push_str("| Reason | Count |\n| --- | ---: |\n");
        for (reason, n) in reasons {
            let _ = writeln!(out, "| {} | {} |", md(reason), thousands(*n));
        }
        out.push('\n');
    }

    out.push_str("## Failures\n\n");
    let f = &run.failures;
    if f.total() == 0 {
        out.push_str("No failures.\n");
    } else {
        if !f.kept.is_empty() {
            out.push_str("| Name | Detail |\n| --- | --- |\n");
            for x in &f.kept {
                let _ = writeln!(out, "| {} | {} |", md(&x.name), md(&x.detail));
            }
        }
        if f.more > 0 {
            let _ = writeln!(
                out,
                "\n... and {} more (only the first {} are listed; see `max-failures`)",
                f.more, f.max
            );
        }
    }
    out
}

export!(Plugin);

#[cfg(test)]
mod tests {
    use super::*;

    fn summary() -> RunSummary {
        RunSummary {
            job_id: "job-1".into(),
            source: "s3://src".into(),
            destination: "azure://acct/dst".into(),
            mode: "copy".into(),
            state: "completed-with-failures".into(),
            attempts: 2,
            submitted_at: Some("2024-05-01T11:59:00Z".into()),
            started_at: Some("2024-05-01T12:00:00Z".into()),
            ended_at: Some("2024-05-01T12:01:23Z".into()),
            listed: 1500,
            copied: 1000,
            copied_bytes: 3 * 1024 * 1024,
            skipped: 400,
            failed: 100,
            skipped_by_reason: vec![("not-newer".into(), 300), ("protected".into(), 100)],
        }
    }

    fn outcome(name: &str, kind: OutcomeKind, detail: &str) -> Outcome {
        Outcome {
            name: name.into(),
            kind,
            bytes: 10,
            at: "2024-05-01T12:00:01Z".into(),
            offset_ms: 1000,
            detail: detail.into(),
            attempt: 1,
        }
    }

    fn run(config: &[(&str, &str)], batches: Vec<Vec<Outcome>>) -> String {
        Plugin::configure(
            config
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        )
        .unwrap();
        Plugin::begin(summary()).unwrap();
        for b in batches {
            Plugin::add_outcomes(b).unwrap();
        }
        Plugin::finish().unwrap()
    }

    #[test]
    fn report() {
        let out = run(
            &[],
            vec![
                vec![
                    outcome("a.txt", OutcomeKind::Copied, ""),
                    outcome(
                        "b|c.txt",
                        OutcomeKind::Failed,
                        "503 Server Busy\nretry later",
                    ),
                ],
                vec![outcome("d.txt", OutcomeKind::Skipped, "not-newer")],
            ],
        );
        println!("{out}");
        assert!(out.starts_with("# ferry report: job job-1\n"));
        assert!(out.contains("| Source | s3://src |"));
        assert!(out.contains("| Attempts | 2 |"));
        assert!(out.contains("| Listed | 1,500 |"));
        assert!(out.contains("| Bytes copied | 3.0 MiB (3,145,728 bytes) |"));
        assert!(out.contains("| Duration | 1m 23s |"));
        assert!(out.contains("| not-newer | 300 |"));
        assert!(out.contains("| b\\|c.txt | 503 Server Busy retry later |"));
        assert!(out.contains("1 copied, 1 skipped, 1 failed"));
        assert!(!out.contains("a.txt") && !out.contains("d.txt"));
        assert!(!out.contains("more"));
    }

    #[test]
    fn capped() {
        let batch: Vec<Outcome> = (0..5)
            .map(|i| outcome(&format!("f{i}"), OutcomeKind::Failed, "x"))
            .collect();
        let out = run(&[("max-failures", "2")], vec![batch]);
        assert!(out.contains("| f0 | x |") && out.contains("| f1 | x |"));
        assert!(!out.contains("| f2 |"));
        assert!(out.contains("\n... and 3 more"));
    }

    #[test]
    fn protocol_and_config() {
        assert!(Plugin::configure(vec![("max-failures".into(), "lots".into())]).is_err());
        let e = Plugin::configure(vec![("colour".into(), "1".into())]).unwrap_err();
        assert!(e.contains("`colour`"), "{e}");
        STATE.with(|s| s.borrow_mut().run = None);
        assert!(Plugin::finish().is_err());
        assert!(Plugin::add_outcomes(vec![]).is_err());
        assert_eq!(Plugin::content_type(), "text/markdown");
        assert_eq!(Plugin::file_extension(), "md");
    }
}
