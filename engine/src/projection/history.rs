//! The history index: for every blob event, one line under the blob's
//! source address and one under its destination address, so "what happened
//! to this blob (or folder), in every job" is a range scan instead of a scan
//! of every job's events.
//!
//! Addresses are normalized to one text form so that what a user types and
//! what a job recorded meet (see [`base`]): `prod:photos/2024/a.jpg` is the
//! job `prod:photos/2024` (account, container, prefix) plus the blob
//! `a.jpg`.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::event::{ErrorKind, Event, EventRecord};
use crate::job::{Address, JobId, JobSpec};
use crate::projection::BlobStatus;

/// Longest error message kept in an index line: the index stays small, and
/// the full message is in the job's events (unless pruned).
pub const MESSAGE_MAX: usize = 200;

/// Which end of the job the address was.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Side {
    Source,
    Destination,
}

impl std::fmt::Display for Side {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Side::Source => "source",
            Side::Destination => "destination",
        })
    }
}

/// One index line: what one blob event did at one address.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HistoryEntry {
    pub side: Side,
    pub status: BlobStatus,
    /// Why it was copied or skipped (`new`, `not-newer`, ...).
    #[serde(default)]
    pub reason: Option<String>,
    #[serde(default)]
    pub error_kind: Option<ErrorKind>,
    /// The error, cut to [`MESSAGE_MAX`] bytes.
    #[serde(default)]
    pub message: Option<String>,
    /// The source's etag the event was for.
    #[serde(default)]
    pub etag: Option<String>,
    /// The job's attempt (run) that wrote the event.
    pub attempt: u32,
    pub at: DateTime<Utc>,
}

/// One line with its key parts, as a query returns it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HistoryLine {
    pub address: String,
    pub job: JobId,
    pub seq: u64,
    #[serde(flatten)]
    pub entry: HistoryEntry,
}

/// The normalized text of an address, to which `/NAME` is appended for a
/// blob: `/abs/path` for a local folder (no trailing slash; the root is the
/// empty string), `account:container` or `account:container/prefix` for a
/// configured account, the bare container URL (no query, no trailing slash)
/// for a URL, `memory:NAME` for test stores.
pub fn base(address: &Address) -> String {
    match address {
        Address::Local { path } => path.trim_end_matches('/').to_string(),
        Address::Memory { name } => format!("memory:{}", name.trim_end_matches('/')),
        Address::Azure {
            account,
            container,
            prefix,
        } => {
            let prefix = prefix.trim_matches('/');
            if prefix.is_empty() {
                format!("{account}:{container}")
            } else {
                format!("{account}:{container}/{prefix}")
            }
        }
        Address::AzureUrl { url } => url.trim_end_matches('/').to_string(),
    }
}

/// The normalized address of blob `name` under `base` (see [`base`]).
pub fn blob_address(base: &str, name: &str) -> String {
    let mut s = String::with_capacity(base.len() + 1 + name.len());
    s.push_str(base);
    s.push('/');
    s.push_str(name.trim_start_matches('/'));
    s
}

/// The index lines one event adds: none for job-level events, two (source
/// and destination) for a blob event of a job whose spec is known.
pub fn lines(
    spec: Option<&JobSpec>,
    attempt: u32,
    rec: &EventRecord,
) -> Vec<(String, HistoryEntry)> {
    let Some(spec) = spec else {
        return Vec::new();
    };
    let (name, status, reason, error_kind, message, etag) = match &rec.event {
        Event::BlobCopied {
            name,
            src_etag,
            reason,
            ..
        } => (
            name,
            BlobStatus::Copied,
            Some(reason.to_string()),
            None,
            None,
            Some(src_etag.clone()),
        ),
        Event::BlobSkipped {
            name,
            reason,
            src_etag,
            ..
        } => (
            name,
            BlobStatus::Skipped,
            Some(reason.to_string()),
            None,
            None,
            src_etag.clone(),
        ),
        Event::BlobFailed {
            name,
            error_kind,
            message,
            ..
        } => (
            name,
            BlobStatus::Failed,
            None,
            Some(*error_kind),
            Some(cut(message)),
            None,
        ),
        _ => return Vec::new(),
    };
    let entry = |side| HistoryEntry {
        side,
        status,
        reason: reason.clone(),
        error_kind,
        message: message.clone(),
        etag: etag.clone(),
        attempt,
        at: rec.at,
    };
    vec![
        (blob_address(&base(&spec.src), name), entry(Side::Source)),
        (
            blob_address(&base(&spec.dst), name),
            entry(Side::Destination),
        ),
    ]
}

/// `message` cut to at most [`MESSAGE_MAX`] bytes at a character boundary.
fn cut(message: &str) -> String {
    if message.len() <= MESSAGE_MAX {
        return message.to_string();
    }
    let mut end = MESSAGE_MAX;
    while !message.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}...", &message[..end])
}

/// One job's index lines, folded from its events (pure: used by
/// `verify` to rebuild the index, and by tests). Tracks the spec and the
/// current attempt as the writer does from the job's summary.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct History {
    spec: Option<JobSpec>,
    attempt: u32,
    /// (address, job, seq) -> entry, in key order within one address.
    pub lines: BTreeMap<(String, JobId, u64), HistoryEntry>,
}

impl History {
    pub fn apply(&mut self, rec: &EventRecord) {
        match &rec.event {
            Event::JobSubmitted { spec, .. } => self.spec = Some((**spec).clone()),
            Event::JobStarted { attempt, .. } => self.attempt = *attempt,
            _ => {
                for (address, entry) in lines(self.spec.as_ref(), self.attempt, rec) {
                    self.lines.insert((address, rec.job, rec.seq), entry);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{CopyMethod, CopyReason, SkipReason};
    use crate::job::Mode;

    fn rec(job: JobId, seq: u64, event: Event) -> EventRecord {
        EventRecord {
            v: 2,
            job,
            seq,
            at: Utc::now(),
            event,
        }
    }

    fn spec(src: Address, dst: Address) -> JobSpec {
        JobSpec {
            src,
            dst,
            mode: Mode::Incremental,
            parallel: None,
            block_size: None,
            copy_method: Default::default(),
            policy_plugin: None,
            plugin_failure: Default::default(),
        }
    }

    fn copied(name: &str, etag: &str) -> Event {
        Event::BlobCopied {
            name: name.into(),
            bytes: 1,
            src_etag: etag.into(),
            reason: CopyReason::New,
            method: CopyMethod::Stream,
            ms: 0,
            tries: 1,
            detail: None,
            retries: Default::default(),
        }
    }

    #[test]
    fn given_an_azure_job_then_a_typed_blob_address_meets_its_lines() {
        let job = JobId::new();
        let mut h = History::default();
        let src = Address::Azure {
            account: "prod".into(),
            container: "photos".into(),
            prefix: "2024".into(),
        };
        let dst = Address::Local {
            path: "/backup/photos/".into(),
        };
        h.apply(&rec(
            job,
            0,
            Event::JobSubmitted {
                spec: Box::new(spec(src, dst)),
                schedule: None,
            },
        ));
        h.apply(&rec(
            job,
            1,
            Event::JobStarted {
                attempt: 1,
                worker: "h:1".into(),
                parallelism: 1,
            },
        ));
        h.apply(&rec(job, 2, copied("a.jpg", "e1")));

        let keys: Vec<_> = h.lines.keys().map(|(a, _, s)| (a.as_str(), *s)).collect();
        assert_eq!(
            keys,
            [("/backup/photos/a.jpg", 2), ("prod:photos/2024/a.jpg", 2)]
        );
        let src_line = &h.lines[&("prod:photos/2024/a.jpg".to_string(), job, 2)];
        assert_eq!(src_line.side, Side::Source);
        assert_eq!(src_line.status, BlobStatus::Copied);
        assert_eq!(src_line.etag.as_deref(), Some("e1"));
        assert_eq!(src_line.reason.as_deref(), Some("new"));
        assert_eq!(src_line.attempt, 1);
    }

    #[test]
    fn given_skips_and_failures_then_lines_carry_the_reason_and_the_cut_error() {
        let job = JobId::new();
        let mut h = History::default();
        let mem = |n: &str| Address::Memory { name: n.into() };
        h.apply(&rec(
            job,
            0,
            Event::JobSubmitted {
                spec: Box::new(spec(mem("s"), mem("d"))),
                schedule: None,
            },
        ));
        h.apply(&rec(
            job,
            1,
            Event::BlobSkipped {
                name: "x".into(),
                reason: SkipReason::NotNewer,
                src_etag: Some("e".into()),
                detail: None,
            },
        ));
        h.apply(&rec(
            job,
            2,
            Event::BlobFailed {
                name: "y".into(),
                error_kind: ErrorKind::Io,
                message: "é".repeat(150),
                tries: 1,
                retries: Default::default(),
            },
        ));
        let skip = &h.lines[&("memory:d/x".to_string(), job, 1)];
        assert_eq!(
            (skip.side, skip.status, skip.reason.as_deref()),
            (Side::Destination, BlobStatus::Skipped, Some("not-newer"))
        );
        let fail = &h.lines[&("memory:s/y".to_string(), job, 2)];
        assert_eq!(fail.error_kind, Some(ErrorKind::Io));
        let msg = fail.message.as_deref().unwrap();
        assert!(
            msg.len() <= MESSAGE_MAX + 3 && msg.ends_with("..."),
            "{msg}"
        );
        assert_eq!(h.lines.len(), 4);
    }

    #[test]
    fn given_job_level_events_or_no_spec_then_no_lines() {
        let job = JobId::new();
        let mut h = History::default();
        // A blob event before any spec (the control stream has none).
        h.apply(&rec(job, 0, copied("a", "e")));
        assert!(h.lines.is_empty());
    }

    #[test]
    fn bases_drop_trailing_slashes_and_empty_prefixes() {
        let az = |p: &str| Address::Azure {
            account: "a".into(),
            container: "c".into(),
            prefix: p.into(),
        };
        assert_eq!(base(&az("")), "a:c");
        assert_eq!(base(&az("x/y/")), "a:c/x/y");
        assert_eq!(
            base(&Address::Local { path: "/".into() }),
            "",
            "the root joins names as /NAME"
        );
        assert_eq!(blob_address("", "etc/x"), "/etc/x");
        assert_eq!(
            base(&Address::AzureUrl {
                url: "https://a.blob.core.windows.net/c/".into()
            }),
            "https://a.blob.core.windows.net/c"
        );
    }
}
