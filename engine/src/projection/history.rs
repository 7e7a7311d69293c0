//! The history index: one line per blob event, under the job and the
//! blob's name, so "what happened to this blob (or folder), in every job"
//! is a range scan per job instead of a scan of every job's events. The
//! job's spec gives the two addresses a name stands for (its source and
//! its destination), so one line serves both.
//!
//! Addresses are normalized to one text form so that what a user types and
//! what a job recorded meet (see [`base`]): `prod:photos/2024/a.jpg` is the
//! job `prod:photos/2024` (account, container, prefix) plus the blob
//! `a.jpg`.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::event::{ErrorKind, Event, EventRecord};
use crate::job::{Address, JobId};
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

/// One index line: what one blob event did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HistoryEntry {
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

/// How a line is stored: positional, the status as a small integer, the
/// time as nanoseconds: about a third of the named form (~45 bytes instead
/// of ~140). New fields go at the end. Written with borrowed text (`&str`:
/// no copies per line), read into `String`s.
#[derive(Serialize, Deserialize)]
pub(crate) struct Stored<S = String>(
    u8,
    Option<S>,
    Option<ErrorKind>,
    Option<S>,
    Option<S>,
    u32,
    i64,
);

impl Stored<&str> {
    /// The stored bytes of this line.
    pub(crate) fn encode(&self) -> Result<Vec<u8>, String> {
        rmp_serde::to_vec(self).map_err(|e| format!("cannot encode a history line: {e}"))
    }
}

fn status_code(status: BlobStatus) -> u8 {
    match status {
        BlobStatus::Copied => 0,
        BlobStatus::Skipped => 1,
        BlobStatus::Failed => 2,
    }
}

fn nanos(at: &DateTime<Utc>) -> Result<i64, String> {
    at.timestamp_nanos_opt()
        .ok_or_else(|| "a time outside 1677-2262".to_string())
}

impl HistoryEntry {
    /// The stored bytes of this line.
    pub fn encode(&self) -> Result<Vec<u8>, String> {
        self.to_stored()?.encode()
    }

    /// A line from its stored bytes.
    pub fn decode(bytes: &[u8]) -> Result<HistoryEntry, String> {
        Self::from_stored(rmp_serde::from_slice(bytes).map_err(|e| e.to_string())?)
    }

    pub(crate) fn to_stored(&self) -> Result<Stored<&str>, String> {
        Ok(Stored(
            status_code(self.status),
            self.reason.as_deref(),
            self.error_kind,
            self.message.as_deref(),
            self.etag.as_deref(),
            self.attempt,
            nanos(&self.at)?,
        ))
    }

    pub(crate) fn from_stored(stored: Stored) -> Result<HistoryEntry, String> {
        let Stored(status, reason, error_kind, message, etag, attempt, at) = stored;
        Ok(HistoryEntry {
            status: match status {
                0 => BlobStatus::Copied,
                1 => BlobStatus::Skipped,
                2 => BlobStatus::Failed,
                n => return Err(format!("unknown status {n}")),
            },
            reason,
            error_kind,
            message,
            etag,
            attempt,
            at: DateTime::from_timestamp_nanos(at),
        })
    }
}

/// One line with its key parts, as a query returns it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HistoryLine {
    pub address: String,
    /// Which end of the job the address was.
    pub side: Side,
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

/// The stored index line of a copy or skip, borrowed from its event: the
/// log writer's form, with no copy of the name, reason or etag (it writes
/// one per blob). None for other events; [`line`] gives the same line owned.
pub(crate) fn stored_outcome(
    attempt: u32,
    rec: &EventRecord,
) -> Result<Option<(&str, Stored<&str>)>, String> {
    let Some((name, status, reason, etag)) = outcome(rec) else {
        return Ok(None);
    };
    let line = Stored(
        status_code(status),
        Some(reason),
        None,
        None,
        etag,
        attempt,
        nanos(&rec.at)?,
    );
    Ok(Some((name, line)))
}

/// A copy's or skip's name, status, reason and source etag, borrowed.
fn outcome(rec: &EventRecord) -> Option<(&str, BlobStatus, &'static str, Option<&str>)> {
    match &rec.event {
        Event::BlobCopied {
            name,
            src_etag,
            reason,
            ..
        } => Some((name, BlobStatus::Copied, reason.as_str(), Some(src_etag))),
        Event::BlobSkipped {
            name,
            reason,
            src_etag,
            ..
        } => Some((
            name,
            BlobStatus::Skipped,
            reason.as_str(),
            src_etag.as_deref(),
        )),
        _ => None,
    }
}

/// The index line a blob event adds (its blob's name and the entry);
/// none for job-level events. `attempt` is the job's current run.
pub fn line(attempt: u32, rec: &EventRecord) -> Option<(&str, HistoryEntry)> {
    let (name, status, reason, error_kind, message, etag) = match (outcome(rec), &rec.event) {
        (Some((name, status, reason, etag)), _) => (
            name,
            status,
            Some(reason.to_owned()),
            None,
            None,
            etag.map(str::to_owned),
        ),
        (
            None,
            Event::BlobFailed {
                name,
                error_kind,
                message,
                ..
            },
        ) => (
            name.as_str(),
            BlobStatus::Failed,
            None,
            Some(*error_kind),
            Some(cut(message)),
            None,
        ),
        _ => return None,
    };
    Some((
        name,
        HistoryEntry {
            status,
            reason,
            error_kind,
            message,
            etag,
            attempt,
            at: rec.at,
        },
    ))
}

/// Which of a job's lines a query address covers, given one of the job's
/// addresses (normalized, see [`base`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scope {
    /// The query is the job's address or a folder above it: every line.
    All,
    /// The query is a blob or folder under the job's address: the lines of
    /// this name and of the names under it.
    Name(String),
}

/// How the query address `query` relates to a job address `base` (both
/// normalized), with folder semantics: `prod:photos/20` covers neither
/// `prod:photos/2024` nor its blobs.
pub fn scope(query: &str, base: &str) -> Option<Scope> {
    if query == base || base.strip_prefix(query).is_some_and(|r| r.starts_with('/')) {
        return Some(Scope::All);
    }
    let name = query.strip_prefix(base)?.strip_prefix('/')?;
    (!name.is_empty()).then(|| Scope::Name(name.to_string()))
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

/// Index lines folded from events (pure: used by `verify` to rebuild the
/// index, and by tests). Tracks the current attempt as the writer does from
/// the job's summary.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct History {
    attempt: u32,
    /// (job, name, seq) -> entry, in key order.
    pub lines: BTreeMap<(JobId, String, u64), HistoryEntry>,
}

impl History {
    pub fn apply(&mut self, rec: &EventRecord) {
        if let Event::JobStarted { attempt, .. } = &rec.event {
            self.attempt = *attempt;
        }
        if let Some((name, entry)) = line(self.attempt, rec) {
            self.lines
                .insert((rec.job, name.to_string(), rec.seq), entry);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{CopyMethod, CopyReason, SkipReason};

    fn rec(job: JobId, seq: u64, event: Event) -> EventRecord {
        EventRecord {
            v: 2,
            job,
            seq,
            at: Utc::now(),
            event,
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
    fn given_an_azure_job_then_a_typed_blob_address_meets_its_line() {
        let src = Address::Azure {
            account: "prod".into(),
            container: "photos".into(),
            prefix: "2024".into(),
        };
        let dst = Address::Local {
            path: "/backup/photos/".into(),
        };
        let (src, dst) = (base(&src), base(&dst));
        // What `Address::parse("prod:photos/2024/a.jpg")` normalizes to.
        let typed = base(&Address::Azure {
            account: "prod".into(),
            container: "photos".into(),
            prefix: "2024/a.jpg".into(),
        });
        assert_eq!(typed, "prod:photos/2024/a.jpg");
        assert_eq!(scope(&typed, &src), Some(Scope::Name("a.jpg".into())));
        assert_eq!(scope(&typed, &dst), None);
        assert_eq!(blob_address(&src, "a.jpg"), typed);
        assert_eq!(blob_address(&dst, "a.jpg"), "/backup/photos/a.jpg");
        // Folders above the job's address take all of it; near misses none.
        assert_eq!(scope("prod:photos", &src), Some(Scope::All));
        assert_eq!(scope("prod:photos/2024", &src), Some(Scope::All));
        assert_eq!(scope("prod:photos/20", &src), None);
        assert_eq!(scope("prod:photos/2024x/a", &src), None);
        assert_eq!(scope("", ""), Some(Scope::All));
        assert_eq!(scope("/etc/x", ""), Some(Scope::Name("etc/x".into())));
    }

    #[test]
    fn given_copies_skips_and_failures_then_lines_carry_reason_etag_attempt_and_cut_error() {
        let job = JobId::new();
        let mut h = History::default();
        h.apply(&rec(
            job,
            0,
            Event::JobStarted {
                attempt: 2,
                worker: "h:1".into(),
                parallelism: 1,
                plugin_sha256: None,
            },
        ));
        h.apply(&rec(job, 1, copied("a.jpg", "e1")));
        h.apply(&rec(
            job,
            2,
            Event::BlobSkipped {
                name: "x".into(),
                reason: SkipReason::NotNewer,
                src_etag: Some("e".into()),
                detail: None,
            },
        ));
        h.apply(&rec(
            job,
            3,
            Event::BlobFailed {
                name: "y".into(),
                error_kind: ErrorKind::Io,
                message: "é".repeat(150),
                tries: 1,
                retries: Default::default(),
            },
        ));
        let copy = &h.lines[&(job, "a.jpg".to_string(), 1)];
        assert_eq!(
            (
                copy.status,
                copy.reason.as_deref(),
                copy.etag.as_deref(),
                copy.attempt
            ),
            (BlobStatus::Copied, Some("new"), Some("e1"), 2)
        );
        let skip = &h.lines[&(job, "x".to_string(), 2)];
        assert_eq!(
            (skip.status, skip.reason.as_deref()),
            (BlobStatus::Skipped, Some("not-newer"))
        );
        let fail = &h.lines[&(job, "y".to_string(), 3)];
        assert_eq!(fail.error_kind, Some(ErrorKind::Io));
        let msg = fail.message.as_deref().unwrap();
        assert!(
            msg.len() <= MESSAGE_MAX + 3 && msg.ends_with("..."),
            "{msg}"
        );
        assert_eq!(h.lines.len(), 3, "job-level events add no line");
        // Stored compactly, read back the same.
        for e in h.lines.values() {
            let bytes = e.encode().unwrap();
            assert!(bytes.len() < 50 || e.message.is_some(), "{}", bytes.len());
            assert_eq!(&HistoryEntry::decode(&bytes).unwrap(), e);
        }
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
