//! Run reports: one model shared by the built-in formatters (text, json,
//! markdown) and plugin formatters. The summary comes first, then the
//! outcomes stream in batches, so a report over a million blobs never holds
//! them all; built-in formats keep counts plus the first N examples.

mod builtin;

use chrono::{DateTime, Utc};
use serde::Serialize;

pub use builtin::BuiltinFormatter;

use crate::error::EngineError;
use crate::event::{Event, EventRecord};
use crate::projection::JobSummary;

/// Outcomes handed to a formatter per call.
pub const BATCH: usize = 1000;

/// A job's report through `f`: the summary, then every blob outcome of
/// `events` (the job's, in log order: read from the log, or streamed by a
/// daemon) in batches. The caller stops the events on a read error and
/// reports that error instead of the text.
pub fn render(
    summary: &JobSummary,
    events: impl Iterator<Item = EventRecord>,
    f: &mut dyn Formatter,
) -> Result<String, EngineError> {
    let plugin = f.is_plugin();
    let fail = |e: String| {
        if plugin {
            EngineError::Plugin(crate::plugin::PluginError::Report(e))
        } else {
            EngineError::InvalidInput(format!("report: {e}"))
        }
    };
    f.begin(&ReportSummary::from_job(summary)).map_err(fail)?;
    let mut stream = OutcomeStream::default();
    let mut batch = Vec::with_capacity(BATCH);
    for rec in events {
        if let Some(o) = stream.next(&rec) {
            batch.push(o);
            if batch.len() == BATCH {
                f.add(&batch).map_err(fail)?;
                batch.clear();
            }
        }
    }
    if !batch.is_empty() {
        f.add(&batch).map_err(fail)?;
    }
    f.finish().map_err(fail)
}

/// A job's totals, as every formatter sees them.
#[derive(Debug, Clone, Serialize)]
pub struct ReportSummary {
    pub job_id: String,
    pub source: String,
    pub destination: String,
    pub mode: String,
    pub state: String,
    pub attempts: u32,
    pub submitted_at: Option<DateTime<Utc>>,
    pub started_at: Option<DateTime<Utc>>,
    pub ended_at: Option<DateTime<Utc>>,
    pub listed: u64,
    pub copied: u64,
    pub copied_bytes: u64,
    pub skipped: u64,
    pub failed: u64,
    pub skipped_by_reason: Vec<(String, u64)>,
}

impl ReportSummary {
    pub fn from_job(s: &JobSummary) -> Self {
        let spec = s.spec.as_ref();
        ReportSummary {
            job_id: s.id.to_string(),
            source: spec.map(|p| p.src.to_string()).unwrap_or_default(),
            destination: spec.map(|p| p.dst.to_string()).unwrap_or_default(),
            mode: spec
                .map(crate::job::JobSpec::decided_by)
                .unwrap_or_default(),
            state: s.effective_state().to_string(),
            attempts: s.attempts.len() as u32,
            submitted_at: s.submitted_at,
            started_at: s.attempts.first().map(|a| a.started_at),
            ended_at: s.attempts.last().and_then(|a| a.ended_at),
            listed: s
                .attempts
                .iter()
                .map(|a| a.totals.listed)
                .max()
                .unwrap_or(0),
            copied: s.copied,
            copied_bytes: s.copied_bytes,
            skipped: s.skipped,
            failed: s.failed,
            skipped_by_reason: s
                .skipped_by_reason
                .iter()
                .map(|(k, v)| (k.clone(), *v))
                .collect(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum OutcomeKind {
    Copied,
    Skipped,
    Failed,
}

/// One blob's outcome, in log order.
#[derive(Debug, Clone, Serialize)]
pub struct Outcome {
    pub name: String,
    pub kind: OutcomeKind,
    pub bytes: u64,
    pub at: DateTime<Utc>,
    /// Milliseconds since the job's first start.
    pub offset_ms: u64,
    /// Skip reason or error message; empty for copies.
    pub detail: String,
    pub attempt: u32,
}

/// Turns blob events into outcomes, tracking the attempt and start time.
#[derive(Default)]
pub struct OutcomeStream {
    attempt: u32,
    first_start: Option<DateTime<Utc>>,
}

impl OutcomeStream {
    pub fn next(&mut self, rec: &EventRecord) -> Option<Outcome> {
        let (name, kind, bytes, detail) = match &rec.event {
            Event::JobStarted { attempt, .. } => {
                self.attempt = *attempt;
                self.first_start.get_or_insert(rec.at);
                return None;
            }
            Event::BlobCopied {
                name,
                bytes,
                detail,
                ..
            } => (
                name,
                OutcomeKind::Copied,
                *bytes,
                detail.clone().unwrap_or_default(),
            ),
            Event::BlobSkipped {
                name,
                reason,
                detail,
                ..
            } => match detail {
                Some(d) => (name, OutcomeKind::Skipped, 0, format!("{reason}: {d}")),
                None => (name, OutcomeKind::Skipped, 0, reason.to_string()),
            },
            Event::BlobFailed {
                name,
                error_kind,
                message,
                ..
            } => (
                name,
                OutcomeKind::Failed,
                0,
                format!("[{error_kind}] {message}"),
            ),
            _ => return None,
        };
        let offset_ms = self
            .first_start
            .map_or(0, |s| (rec.at - s).num_milliseconds().max(0) as u64);
        Some(Outcome {
            name: name.clone(),
            kind,
            bytes,
            at: rec.at,
            offset_ms,
            detail,
            attempt: self.attempt,
        })
    }
}

/// What every report format implements (built-in or plugin).
pub trait Formatter {
    fn content_type(&mut self) -> Result<String, String>;
    fn file_extension(&mut self) -> Result<String, String>;
    fn begin(&mut self, summary: &ReportSummary) -> Result<(), String>;
    fn add(&mut self, batch: &[Outcome]) -> Result<(), String>;
    fn finish(&mut self) -> Result<String, String>;
    /// Whether its failures are a plugin's (exit 9), not bad input.
    fn is_plugin(&self) -> bool {
        false
    }
}
