//! `csv_report`: dumps every outcome as CSV (RFC 4180): a header
//! `name,kind,bytes,at,attempt,detail`, then one record per outcome in log
//! order, CRLF line ends, fields quoted when they hold a comma, a quote, CR
//! or LF (quotes doubled). The summary is not part of the output. Rows are
//! appended to one buffer as batches arrive; it grows with the outcome
//! count by nature. Takes no config.

wit_bindgen::generate!({ path: "../../wit", world: "report-formatter" });

#[path = "../../common/config.rs"]
mod config;

use std::cell::RefCell;
use std::fmt::Write;

use exports::ferry::plugin::formatter::Guest;
use ferry::plugin::types::{Outcome, OutcomeKind, RunSummary};

const NAME: &str = "csv_report";
const HEADER: &str = "name,kind,bytes,at,attempt,detail\r\n";

thread_local! {
    /// The report so far; None outside begin..finish.
    static BUF: RefCell<Option<String>> = const { RefCell::new(None) };
}

struct Plugin;

impl Guest for Plugin {
    fn configure(config: Vec<(String, String)>) -> Result<(), String> {
        config::reject_unknown(NAME, &config, &[])
    }

    fn content_type() -> String {
        "text/csv".into()
    }

    fn file_extension() -> String {
        "csv".into()
    }

    fn begin(_summary: RunSummary) -> Result<(), String> {
        BUF.with(|b| *b.borrow_mut() = Some(String::from(HEADER)));
        Ok(())
    }

    fn add_outcomes(batch: Vec<Outcome>) -> Result<(), String> {
        BUF.with(|b| {
            let mut b = b.borrow_mut();
            let out = b
                .as_mut()
                .ok_or(format!("{NAME}: add-outcomes called before begin"))?;
            grow(
                out,
                batch
                    .iter()
                    .map(|o| o.name.len() + o.detail.len() + o.at.len() + 48)
                    .sum(),
            );
            for o in &batch {
                row(out, o);
            }
            Ok(())
        })
    }

    fn finish() -> Result<String, String> {
        BUF.with(|b| b.borrow_mut().take())
            .ok_or(format!("{NAME}: finish called before begin"))
    }
}

/// Makes room for `need` more bytes, growing by a quarter rather than
/// doubling: the buffer is the report, and near the memory cap a doubling
/// would fail long before the cap is used.
fn grow(out: &mut String, need: usize) {
    if out.capacity() - out.len() < need {
        out.reserve_exact(need.max(out.capacity() / 4).max(64 << 10));
    }
}

fn row(out: &mut String, o: &Outcome) {
    let kind = match o.kind {
        OutcomeKind::Copied => "copied",
        OutcomeKind::Skipped => "skipped",
        OutcomeKind::Failed => "failed",
    };
    field(out, &o.name);
    let _ = write!(out, ",{kind},{},", o.bytes);
    field(out, &o.at);
    let _ = write!(out, ",{},", o.attempt);
    field(out, &o.detail);
    out.push_str("\r\n");
}

/// Appends one field, quoted only when RFC 4180 requires it.
fn field(out: &mut String, s: &str) {
    if !s.bytes().any(|b| matches!(b, b',' | b'"' | b'\r' | b'\n')) {
        out.push_str(s);
        return;
    }
    out.push('"');
    let mut parts = s.split('"');
    if let Some(first) = parts.next() {
        out.push_str(first);
    }
    for part in parts {
        out.push_str("\"\"");
        out.push_str(part);
    }
    out.push('"');
}

export!(Plugin);

#[cfg(test)]
mod tests {
    use super::*;

    fn summary() -> RunSummary {
        RunSummary {
            job_id: "j".into(),
            source: "s".into(),
            destination: "d".into(),
            mode: "copy".into(),
            state: "succeeded".into(),
            attempts: 1,
            submitted_at: None,
            started_at: None,
            ended_at: None,
            listed: 0,
            copied: 0,
            copied_bytes: 0,
            skipped: 0,
            failed: 0,
            skipped_by_reason: vec![],
        }
    }

    fn outcome(name: &str, kind: OutcomeKind, bytes: u64, detail: &str) -> Outcome {
        Outcome {
            name: name.into(),
            kind,
            bytes,
            at: "2024-05-01T12:00:01Z".into(),
            offset_ms: 1000,
            detail: detail.into(),
            attempt: 2,
        }
    }

    #[test]
    fn dump() {
        Plugin::configure(vec![]).unwrap();
        Plugin::begin(summary()).unwrap();
        Plugin::add_outcomes(vec![
            outcome("a.txt", OutcomeKind::Copied, 12, ""),
            outcome("b,c.txt", OutcomeKind::Skipped, 0, "not-newer"),
        ])
        .unwrap();
        Plugin::add_outcomes(vec![outcome(
            "say \"hi\".txt",
            OutcomeKind::Failed,
            0,
            "line1\nline2",
        )])
        .unwrap();
        let out = Plugin::finish().unwrap();
        assert_eq!(
            out,
            "name,kind,bytes,at,attempt,detail\r\n\
             a.txt,copied,12,2024-05-01T12:00:01Z,2,\r\n\
             \"b,c.txt\",skipped,0,2024-05-01T12:00:01Z,2,not-newer\r\n\
             \"say \"\"hi\"\".txt\",failed,0,2024-05-01T12:00:01Z,2,\"line1\nline2\"\r\n"
        );
        assert!(Plugin::finish().is_err());
    }

    #[test]
    fn empty_and_config() {
        Plugin::begin(summary()).unwrap();
        assert_eq!(Plugin::finish().unwrap(), HEADER);
        assert!(Plugin::add_outcomes(vec![]).is_err());
        let e = Plugin::configure(vec![("delimiter".into(), ";".into())]).unwrap_err();
        assert!(e.contains("`delimiter`"), "{e}");
        assert_eq!(Plugin::content_type(), "text/csv");
        assert_eq!(Plugin::file_extension(), "csv");
    }
}
