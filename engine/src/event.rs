//! The event model. Names are past tense and pinned with `serde(rename)` so a
//! refactor cannot silently change what is on disk; every record carries a
//! schema version so old logs keep replaying.

use std::collections::BTreeMap;
use std::fmt;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::job::{JobId, JobSpec};
use crate::schedule::ScheduleDef;

/// Schema version written into every new record.
pub const SCHEMA_VERSION: u16 = 3;

/// The oldest schema whose records decode as the current shape: 3 only
/// added `JobPruned`, so version 2 records are read directly, without the
/// generic upcast (see `log::upcast`).
pub const SAME_SHAPE_SINCE: u16 = 2;

/// One entry of the log: an event of one job at a gap-free sequence number.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EventRecord {
    /// Schema version of `event` as written.
    pub v: u16,
    pub job: JobId,
    /// Position in the job's own log, starting at 0 with no gaps.
    pub seq: u64,
    pub at: DateTime<Utc>,
    pub event: Event,
}

/// Why a blob was copied.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum CopyReason {
    /// The destination did not have it.
    New,
    /// The source is newer than the destination (incremental).
    Newer,
    /// Size or content differ (if-different).
    Different,
    /// Full mode overwrites whatever is there.
    Overwrite,
    /// A plugin policy said so (its reason is in `detail`).
    Policy,
}

/// Why a blob was not copied.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SkipReason {
    /// Incremental: the destination is as new as the source or newer.
    NotNewer,
    /// Never mode: the destination exists.
    Exists,
    /// If-different: same size and content.
    Identical,
    /// Symlinked directories, links to nothing, sockets, devices: not
    /// regular files.
    NotRegularFile,
    /// A temporary file ferry left while writing (`.NAME.TAG.ferry-tmp`).
    FerryTempFile,
    /// Inside the state dir of the ferry running the job (its event log):
    /// never copied as it is written, never written over (schema 3).
    FerryState,
    /// A plugin policy said so (its reason is in `detail`).
    Policy,
    /// The plugin policy failed and the job runs with `--plugin-failure skip`.
    PluginFailed,
}

/// How the bytes moved.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum CopyMethod {
    /// Kernel-side file copy between two local folders (copy_file_range).
    LocalFile,
    /// Read from the source and written to the destination through ferry.
    Stream,
    /// Azure to Azure with Put Block From URL: the data never crossed ferry.
    ServerSide,
}

/// What kind of failure a blob hit; decides whether a replay may help.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ErrorKind {
    NotFound,
    PermissionDenied,
    InvalidName,
    SourceChanged,
    DestinationConflict,
    /// The storage service refused or failed the request.
    Service,
    /// A plugin trapped, ran out of fuel or time, or answered nonsense.
    Plugin,
    Io,
    /// The bytes read did not match the source's MD5 (`--check-md5`);
    /// nothing was written.
    ContentMismatch,
}

/// How a job attempt ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "status", rename_all = "kebab-case")]
pub enum Outcome {
    /// Every blob was copied or skipped.
    Succeeded,
    /// Some blobs failed; `ferry replay` retries only those.
    CompletedWithFailures,
    /// The job as a whole could not run (e.g. the source vanished).
    Failed { message: String },
}

/// Counts of one attempt.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Totals {
    pub listed: u64,
    pub listed_bytes: u64,
    pub copied: u64,
    pub copied_bytes: u64,
    pub skipped: u64,
    pub failed: u64,
    /// Blobs already durably done by an earlier attempt.
    pub resumed: u64,
    /// Retries of requests and blobs (records before it have none).
    #[serde(default)]
    pub retries: u64,
}

/// Everything that happens to a job.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", content = "data")]
pub enum Event {
    #[serde(rename = "JobSubmitted")]
    JobSubmitted {
        spec: Box<JobSpec>,
        /// The schedule whose fire submitted it (absent: submitted by hand).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        schedule: Option<String>,
    },
    #[serde(rename = "JobStarted")]
    JobStarted {
        attempt: u32,
        /// host:pid of the process that ran the attempt.
        worker: String,
        parallelism: u32,
        /// The policy plugin's SHA-256 when it is not the one the job was
        /// submitted with (`--allow-plugin-change`): which code decided
        /// this attempt's blobs (schema 3; absent otherwise).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        plugin_sha256: Option<String>,
    },
    #[serde(rename = "ListingCompleted")]
    ListingCompleted {
        attempt: u32,
        blobs: u64,
        bytes: u64,
        /// Retries while listing, by cause.
        #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
        retries: BTreeMap<String, u32>,
    },
    #[serde(rename = "BlobCopied")]
    BlobCopied {
        name: String,
        bytes: u64,
        src_etag: String,
        reason: CopyReason,
        method: CopyMethod,
        /// Wall time of the copy including retries.
        ms: u64,
        /// Tries it took (1 = first try).
        tries: u32,
        /// A plugin policy's reason (schema v1 records have none).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        detail: Option<String>,
        /// Retries it took, by cause (requests and whole-blob tries).
        #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
        retries: BTreeMap<String, u32>,
    },
    #[serde(rename = "BlobSkipped")]
    BlobSkipped {
        name: String,
        reason: SkipReason,
        src_etag: Option<String>,
        /// A plugin policy's reason or error (schema v1 records have none).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        detail: Option<String>,
    },
    #[serde(rename = "BlobFailed")]
    BlobFailed {
        name: String,
        error_kind: ErrorKind,
        message: String,
        /// Tries of the whole blob (1 = failed on the first). Named
        /// `attempts` in schema 1 (upcast on read): "attempt" is a job's run.
        tries: u32,
        /// Retries before giving up, by cause.
        #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
        retries: BTreeMap<String, u32>,
    },
    #[serde(rename = "JobInterrupted")]
    JobInterrupted { attempt: u32, reason: String },
    /// Cancelled: it will not run again. A running attempt stopped at a
    /// blob boundary first (its `JobInterrupted` comes before this).
    #[serde(rename = "JobCancelled")]
    JobCancelled { reason: String, by: String },
    /// Held: not started (queued) or stopped at a blob boundary (running)
    /// until `JobResumed`.
    #[serde(rename = "JobPaused")]
    JobPaused { by: String },
    #[serde(rename = "JobResumed")]
    JobResumed { by: String },
    /// The daemon will replay this failed job at `at` (retry `retry` of
    /// the schedule's or daemon's maximum).
    #[serde(rename = "JobRetryPlanned")]
    JobRetryPlanned { retry: u32, at: DateTime<Utc> },
    // Control stream (see `JobId::CONTROL`): schedules.
    #[serde(rename = "ScheduleAdded")]
    ScheduleAdded { def: Box<ScheduleDef>, by: String },
    #[serde(rename = "ScheduleRemoved")]
    ScheduleRemoved { name: String, by: String },
    /// A fire submitted `job`.
    #[serde(rename = "ScheduleFired")]
    ScheduleFired {
        name: String,
        due: DateTime<Utc>,
        job: JobId,
    },
    /// A fire did not submit a job (overlap, or a missed fire not caught up).
    #[serde(rename = "ScheduleSkipped")]
    ScheduleSkipped {
        name: String,
        due: DateTime<Utc>,
        reason: String,
    },
    #[serde(rename = "JobFinished")]
    JobFinished {
        attempt: u32,
        outcome: Outcome,
        totals: Totals,
    },
    /// `ferry prune` is removing the job's blob events and checkpoint.
    /// What they folded into is kept here, so the job's summary folds the
    /// same from what is left (and an export of the job carries it).
    #[serde(rename = "JobPruned")]
    JobPruned {
        counts: Box<PrunedCounts>,
        by: String,
    },
}

/// A pruned job's counts as its blob events had folded them.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct PrunedCounts {
    pub copied: u64,
    pub copied_bytes: u64,
    pub skipped: u64,
    /// Of the latest attempt, as `JobSummary::failed`.
    pub failed: u64,
    pub skipped_by_reason: BTreeMap<String, u64>,
    pub retries_by_cause: BTreeMap<String, u64>,
    /// Each attempt's totals, in attempt order.
    pub attempts: Vec<Totals>,
}

impl Event {
    /// The blob a blob event is about; none for job-level events.
    pub fn blob_name(&self) -> Option<&str> {
        match self {
            Event::BlobCopied { name, .. }
            | Event::BlobSkipped { name, .. }
            | Event::BlobFailed { name, .. } => Some(name),
            _ => None,
        }
    }

    /// The event's type name as stored.
    pub fn kind(&self) -> &'static str {
        match self {
            Event::JobSubmitted { .. } => "JobSubmitted",
            Event::JobStarted { .. } => "JobStarted",
            Event::ListingCompleted { .. } => "ListingCompleted",
            Event::BlobCopied { .. } => "BlobCopied",
            Event::BlobSkipped { .. } => "BlobSkipped",
            Event::BlobFailed { .. } => "BlobFailed",
            Event::JobInterrupted { .. } => "JobInterrupted",
            Event::JobFinished { .. } => "JobFinished",
            Event::JobPruned { .. } => "JobPruned",
            Event::JobCancelled { .. } => "JobCancelled",
            Event::JobPaused { .. } => "JobPaused",
            Event::JobResumed { .. } => "JobResumed",
            Event::JobRetryPlanned { .. } => "JobRetryPlanned",
            Event::ScheduleAdded { .. } => "ScheduleAdded",
            Event::ScheduleRemoved { .. } => "ScheduleRemoved",
            Event::ScheduleFired { .. } => "ScheduleFired",
            Event::ScheduleSkipped { .. } => "ScheduleSkipped",
        }
    }

    /// Job-level transitions are acknowledged only once durable; blob events are not.
    pub fn is_transition(&self) -> bool {
        matches!(
            self,
            Event::JobSubmitted { .. }
                | Event::JobStarted { .. }
                | Event::JobInterrupted { .. }
                | Event::JobFinished { .. }
                | Event::JobPruned { .. }
                | Event::JobCancelled { .. }
                | Event::JobPaused { .. }
                | Event::JobResumed { .. }
                | Event::JobRetryPlanned { .. }
                | Event::ScheduleAdded { .. }
                | Event::ScheduleRemoved { .. }
                | Event::ScheduleFired { .. }
                | Event::ScheduleSkipped { .. }
        )
    }
}

macro_rules! kebab_display {
    ($($t:ty),*) => {$(
        impl fmt::Display for $t {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                // serde already knows the stable kebab-case name.
                match serde_json::to_value(self) {
                    Ok(serde_json::Value::String(s)) => f.write_str(&s),
                    _ => write!(f, "{self:?}"),
                }
            }
        }
    )*};
}
kebab_display!(CopyMethod, ErrorKind);

// Reasons are turned to text once per blob (its history line), so they
// name themselves without going through serde; a test pins them to serde's.
impl CopyReason {
    pub fn as_str(self) -> &'static str {
        match self {
            CopyReason::New => "new",
            CopyReason::Newer => "newer",
            CopyReason::Different => "different",
            CopyReason::Overwrite => "overwrite",
            CopyReason::Policy => "policy",
        }
    }
}

impl SkipReason {
    pub fn as_str(self) -> &'static str {
        match self {
            SkipReason::NotNewer => "not-newer",
            SkipReason::Exists => "exists",
            SkipReason::Identical => "identical",
            SkipReason::NotRegularFile => "not-regular-file",
            SkipReason::FerryTempFile => "ferry-temp-file",
            SkipReason::FerryState => "ferry-state",
            SkipReason::Policy => "policy",
            SkipReason::PluginFailed => "plugin-failed",
        }
    }
}

impl fmt::Display for CopyReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Display for SkipReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Outcome::Succeeded => f.write_str("succeeded"),
            Outcome::CompletedWithFailures => f.write_str("completed with failures"),
            Outcome::Failed { message } => write!(f, "failed: {message}"),
        }
    }
}

impl fmt::Display for Event {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Event::JobSubmitted { spec, .. } => {
                write!(f, "{} -> {} ", spec.src, spec.dst)?;
                match spec.policy_file() {
                    Some(file) => write!(f, "policy={file}"),
                    None => write!(f, "mode={}", spec.mode),
                }
            }
            Event::JobStarted {
                attempt,
                worker,
                parallelism,
                plugin_sha256,
            } => {
                write!(
                    f,
                    "attempt={attempt} worker={worker} parallel={parallelism}"
                )?;
                match plugin_sha256 {
                    Some(sha) => write!(f, " plugin changed, now sha256 {sha}"),
                    None => Ok(()),
                }
            }
            Event::ListingCompleted {
                attempt,
                blobs,
                bytes,
                retries,
            } => {
                write!(f, "attempt={attempt} blobs={blobs} bytes={bytes}")?;
                write_retries(f, retries)
            }
            Event::BlobCopied {
                name,
                bytes,
                reason,
                method,
                ms,
                tries,
                retries,
                ..
            } => {
                write!(
                    f,
                    "{name:?} bytes={bytes} reason={reason} method={method} ms={ms} tries={tries}"
                )?;
                write_retries(f, retries)
            }
            Event::BlobSkipped {
                name,
                reason,
                detail: Some(d),
                ..
            } => write!(f, "{name:?} reason={reason}: {d}"),
            Event::BlobSkipped { name, reason, .. } => write!(f, "{name:?} reason={reason}"),
            Event::BlobFailed {
                name,
                error_kind,
                message,
                tries,
                retries,
            } => {
                write!(f, "{name:?} kind={error_kind} tries={tries}")?;
                write_retries(f, retries)?;
                write!(f, ": {message}")
            }
            Event::JobInterrupted { attempt, reason } => write!(f, "attempt={attempt}: {reason}"),
            Event::JobFinished {
                attempt,
                outcome,
                totals,
            } => write!(
                f,
                "attempt={attempt} {outcome}: copied={} skipped={} failed={} resumed={}",
                totals.copied, totals.skipped, totals.failed, totals.resumed
            ),
            Event::JobCancelled { reason, by } => write!(f, "by {by}: {reason}"),
            Event::JobPruned { counts, by } => write!(
                f,
                "by {by}, blob events and checkpoint removed; kept counts: copied={} bytes={} skipped={} failed={} attempts={}",
                counts.copied,
                counts.copied_bytes,
                counts.skipped,
                counts.failed,
                counts.attempts.len()
            ),
            Event::JobPaused { by } | Event::JobResumed { by } => write!(f, "by {by}"),
            Event::JobRetryPlanned { retry, at } => {
                write!(f, "retry {retry} at {}", at.format("%Y-%m-%d %H:%M:%S UTC"))
            }
            Event::ScheduleAdded { def, by } => write!(
                f,
                "{:?} cron={:?} tz={} by {by}: {} -> {}",
                def.name,
                def.cron,
                def.tz.as_deref().unwrap_or("UTC"),
                def.spec.src,
                def.spec.dst
            ),
            Event::ScheduleRemoved { name, by } => write!(f, "{name:?} by {by}"),
            Event::ScheduleFired { name, due, job } => write!(
                f,
                "{name:?} due {} -> job {job}",
                due.format("%Y-%m-%d %H:%M:%S UTC")
            ),
            Event::ScheduleSkipped { name, due, reason } => write!(
                f,
                "{name:?} due {}: {reason}",
                due.format("%Y-%m-%d %H:%M:%S UTC")
            ),
        }
    }
}

/// ` retries=3 (503 ServerBusy: 2, timeout: 1)`, or nothing.
fn write_retries(f: &mut fmt::Formatter<'_>, retries: &BTreeMap<String, u32>) -> fmt::Result {
    if retries.is_empty() {
        return Ok(());
    }
    let n: u32 = retries.values().sum();
    let each: Vec<String> = retries.iter().map(|(c, k)| format!("{c}: {k}")).collect();
    write!(f, " retries={n} ({})", each.join(", "))
}

#[cfg(test)]
mod tests {
    use super::{CopyReason, SkipReason};

    #[test]
    fn reasons_name_themselves_as_serde_writes_them() {
        use CopyReason as C;
        use SkipReason as S;
        for r in [C::New, C::Newer, C::Different, C::Overwrite, C::Policy] {
            assert_eq!(serde_json::to_value(r).unwrap(), r.as_str());
        }
        for r in [
            S::NotNewer,
            S::Exists,
            S::Identical,
            S::NotRegularFile,
            S::FerryTempFile,
            S::FerryState,
            S::Policy,
            S::PluginFailed,
        ] {
            assert_eq!(serde_json::to_value(r).unwrap(), r.as_str());
        }
    }
}
