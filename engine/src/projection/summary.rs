//! Job status and counts, folded from the job's events.

use std::fmt;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::event::{Event, EventRecord, Outcome, PrunedCounts, Totals};
use crate::job::{JobId, JobSpec};

/// Where a job is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum JobState {
    Queued,
    Running,
    Interrupted,
    Succeeded,
    CompletedWithFailures,
    Failed,
    /// Held by `ferry pause` until `ferry resume`.
    Paused,
    /// Stopped for good by `ferry cancel`.
    Cancelled,
}

impl JobState {
    /// Every state, in the order of a job's life.
    pub const ALL: [JobState; 8] = [
        JobState::Queued,
        JobState::Running,
        JobState::Interrupted,
        JobState::Succeeded,
        JobState::CompletedWithFailures,
        JobState::Failed,
        JobState::Paused,
        JobState::Cancelled,
    ];
}

impl fmt::Display for JobState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            JobState::Queued => "queued",
            JobState::Running => "running",
            JobState::Interrupted => "interrupted",
            JobState::Succeeded => "succeeded",
            JobState::CompletedWithFailures => "completed-with-failures",
            JobState::Failed => "failed",
            JobState::Paused => "paused",
            JobState::Cancelled => "cancelled",
        })
    }
}

/// One run of a job.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AttemptSummary {
    pub attempt: u32,
    pub worker: String,
    pub parallelism: u32,
    pub started_at: DateTime<Utc>,
    /// Sequence number of its `JobStarted`: events after it belong to it.
    #[serde(default)]
    pub started_seq: u64,
    pub ended_at: Option<DateTime<Utc>>,
    /// Counts of this attempt; `listed` is final once the listing completed.
    pub totals: Totals,
    pub listing_completed: bool,
    /// How it ended; `None` while running (or if the process died).
    pub outcome: Option<String>,
    /// The policy plugin it ran with, when not the submitted one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub plugin_sha256: Option<String>,
}

/// The job as `ferry jobs` / `ferry show` see it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobSummary {
    pub id: JobId,
    pub spec: Option<JobSpec>,
    pub state: JobState,
    pub submitted_at: Option<DateTime<Utc>>,
    pub attempts: Vec<AttemptSummary>,
    /// Blobs copied over all attempts (each durable copy counts once).
    pub copied: u64,
    pub copied_bytes: u64,
    pub skipped: u64,
    /// Failures of the latest attempt: a replay retries every earlier
    /// failure, so these are the ones still outstanding.
    pub failed: u64,
    /// Message of a job-level failure.
    pub error: Option<String>,
    /// Skips over all attempts by reason (bounded: a handful of reasons).
    #[serde(default)]
    pub skipped_by_reason: std::collections::BTreeMap<String, u64>,
    /// The schedule that submitted it, if any.
    #[serde(default)]
    pub schedule: Option<String>,
    /// The daemon's planned replay of a failed job: which retry, and when.
    #[serde(default)]
    pub retry_planned: Option<(u32, DateTime<Utc>)>,
    /// Replays the daemon has planned so far.
    #[serde(default)]
    pub retries_planned: u32,
    /// Retries over all attempts by cause (`503 ServerBusy`, `timeout`, ...):
    /// bounded by the handful of causes, not by blobs.
    #[serde(default)]
    pub retries_by_cause: std::collections::BTreeMap<String, u64>,
    /// `ferry prune` removed its per-blob events and checkpoint entries:
    /// the counts above are from before, the log keeps only job-level
    /// events (with their original seqs), and it cannot be replayed.
    #[serde(default)]
    pub pruned: bool,
    /// Sequence number of the last event folded in.
    pub last_seq: u64,
}

impl JobSummary {
    pub fn new(id: JobId) -> Self {
        JobSummary {
            id,
            spec: None,
            state: JobState::Queued,
            submitted_at: None,
            attempts: Vec::new(),
            copied: 0,
            copied_bytes: 0,
            skipped: 0,
            failed: 0,
            error: None,
            skipped_by_reason: Default::default(),
            retries_by_cause: Default::default(),
            schedule: None,
            retry_planned: None,
            retries_planned: 0,
            pruned: false,
            last_seq: 0,
        }
    }

    /// What its blob events folded into, for the `JobPruned` that replaces
    /// them.
    pub fn pruned_counts(&self) -> PrunedCounts {
        PrunedCounts {
            copied: self.copied,
            copied_bytes: self.copied_bytes,
            skipped: self.skipped,
            failed: self.failed,
            skipped_by_reason: self.skipped_by_reason.clone(),
            retries_by_cause: self.retries_by_cause.clone(),
            attempts: self.attempts.iter().map(|a| a.totals.clone()).collect(),
        }
    }

    /// Retries over all attempts.
    pub fn retries(&self) -> u64 {
        self.retries_by_cause.values().sum()
    }

    fn count_retries(&mut self, retries: &std::collections::BTreeMap<String, u32>) {
        let mut n = 0;
        for (cause, k) in retries {
            *self.retries_by_cause.entry(cause.clone()).or_default() += *k as u64;
            n += *k as u64;
        }
        if let Some(a) = self.attempts.last_mut() {
            a.totals.retries += n;
        }
    }

    /// Folds one event in. Pure: no I/O, no clock.
    pub fn apply(&mut self, rec: &EventRecord) {
        self.last_seq = rec.seq;
        match &rec.event {
            Event::JobSubmitted { spec, schedule } => {
                self.schedule = schedule.clone();
                self.spec = Some((**spec).clone());
                self.submitted_at = Some(rec.at);
                self.state = JobState::Queued;
            }
            Event::JobStarted {
                attempt,
                worker,
                parallelism,
                plugin_sha256,
            } => {
                self.state = JobState::Running;
                self.retry_planned = None;
                self.failed = 0;
                self.error = None;
                self.attempts.push(AttemptSummary {
                    attempt: *attempt,
                    worker: worker.clone(),
                    parallelism: *parallelism,
                    started_at: rec.at,
                    started_seq: rec.seq,
                    ended_at: None,
                    totals: Totals::default(),
                    listing_completed: false,
                    outcome: None,
                    plugin_sha256: plugin_sha256.clone(),
                });
            }
            Event::ListingCompleted {
                blobs,
                bytes,
                retries,
                ..
            } => {
                self.count_retries(retries);
                if let Some(a) = self.attempts.last_mut() {
                    a.totals.listed = *blobs;
                    a.totals.listed_bytes = *bytes;
                    a.listing_completed = true;
                }
            }
            Event::BlobCopied { bytes, retries, .. } => {
                self.count_retries(retries);
                self.copied += 1;
                self.copied_bytes += bytes;
                if let Some(a) = self.attempts.last_mut() {
                    a.totals.copied += 1;
                    a.totals.copied_bytes += bytes;
                }
            }
            Event::BlobSkipped { reason, .. } => {
                self.skipped += 1;
                *self
                    .skipped_by_reason
                    .entry(reason.to_string())
                    .or_default() += 1;
                if let Some(a) = self.attempts.last_mut() {
                    a.totals.skipped += 1;
                }
            }
            Event::BlobFailed { retries, .. } => {
                self.count_retries(retries);
                self.failed += 1;
                if let Some(a) = self.attempts.last_mut() {
                    a.totals.failed += 1;
                }
            }
            Event::JobInterrupted { reason, .. } => {
                // A pause or cancel recorded first keeps its state.
                if !matches!(self.state, JobState::Paused | JobState::Cancelled) {
                    self.state = JobState::Interrupted;
                }
                if let Some(a) = self.attempts.last_mut() {
                    a.ended_at = Some(rec.at);
                    a.outcome = Some(format!("interrupted: {reason}"));
                }
            }
            Event::JobFinished {
                outcome, totals, ..
            } => {
                self.state = match outcome {
                    Outcome::Succeeded => JobState::Succeeded,
                    Outcome::CompletedWithFailures => JobState::CompletedWithFailures,
                    Outcome::Failed { .. } => JobState::Failed,
                };
                if let Outcome::Failed { message } = outcome {
                    self.error = Some(message.clone());
                }
                if let Some(a) = self.attempts.last_mut() {
                    a.ended_at = Some(rec.at);
                    a.outcome = Some(outcome.to_string());
                    a.totals.resumed = totals.resumed;
                    if !a.listing_completed {
                        a.totals.listed = totals.listed;
                        a.totals.listed_bytes = totals.listed_bytes;
                    }
                }
            }
            Event::JobCancelled { reason, .. } => {
                self.state = JobState::Cancelled;
                self.retry_planned = None;
                self.error = Some(format!("cancelled: {reason}"));
                if let Some(a) = self.attempts.last_mut().filter(|a| a.ended_at.is_none()) {
                    a.ended_at = Some(rec.at);
                    a.outcome = Some(format!("cancelled: {reason}"));
                }
            }
            Event::JobPaused { .. } => {
                self.state = JobState::Paused;
            }
            Event::JobPruned { counts, .. } => {
                // Absolute, not added: blob events a prune cut short left
                // (folded before this) count once.
                self.copied = counts.copied;
                self.copied_bytes = counts.copied_bytes;
                self.skipped = counts.skipped;
                self.failed = counts.failed;
                self.skipped_by_reason = counts.skipped_by_reason.clone();
                self.retries_by_cause = counts.retries_by_cause.clone();
                for (a, totals) in self.attempts.iter_mut().zip(&counts.attempts) {
                    a.totals = totals.clone();
                }
                self.pruned = true;
            }
            Event::JobResumed { .. } => {
                // Back in the queue: its next attempt resumes from the
                // checkpoint if it has run before.
                self.state = JobState::Queued;
            }
            Event::JobRetryPlanned { retry, at } => {
                self.retry_planned = Some((*retry, *at));
                self.retries_planned = *retry;
            }
            Event::ScheduleAdded { .. }
            | Event::ScheduleRemoved { .. }
            | Event::ScheduleFired { .. }
            | Event::ScheduleSkipped { .. } => {}
        }
    }

    /// The state as seen by a process that holds the state dir's lock: a job
    /// still marked running was left by a process that died, so it is
    /// effectively interrupted.
    pub fn effective_state(&self) -> JobState {
        match self.state {
            JobState::Running => JobState::Interrupted,
            s => s,
        }
    }

    /// Time spent in attempts: each one's start to its end, the idle time
    /// between them left out (a job failed at night and replayed the next
    /// morning did not work for ten hours). An attempt without a recorded end
    /// counts up to `running_until` when given (the one a live process is
    /// running), else nothing: when its process died is not known.
    pub fn elapsed(&self, running_until: Option<DateTime<Utc>>) -> Option<chrono::Duration> {
        let last = self.attempts.len().checked_sub(1)?;
        let total = self
            .attempts
            .iter()
            .enumerate()
            .map(|(i, a)| {
                let end = match (a.ended_at, running_until) {
                    (Some(end), _) => end,
                    (None, Some(now)) if i == last => now,
                    (None, _) => a.started_at,
                };
                (end - a.started_at).max(chrono::Duration::zero())
            })
            .fold(chrono::Duration::zero(), |sum, d| sum + d);
        Some(total)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::ErrorKind;
    use crate::job::{Address, Mode};

    fn rec(job: JobId, seq: u64, event: Event) -> EventRecord {
        EventRecord {
            v: 1,
            job,
            seq,
            at: Utc::now(),
            event,
        }
    }

    /// A 10-byte copy of `name`.
    fn copied(name: &str) -> Event {
        copied_with(name, Default::default())
    }

    /// A 10-byte copy of `name` that took these retries.
    fn copied_with(name: &str, retries: std::collections::BTreeMap<String, u32>) -> Event {
        Event::BlobCopied {
            name: name.into(),
            bytes: 10,
            src_etag: "e".into(),
            reason: crate::event::CopyReason::New,
            method: crate::event::CopyMethod::Stream,
            ms: 1,
            tries: 1,
            detail: None,
            retries,
        }
    }

    fn started(attempt: u32) -> Event {
        Event::JobStarted {
            attempt,
            worker: "h:1".into(),
            parallelism: 4,
            plugin_sha256: None,
        }
    }

    #[test]
    fn given_a_failed_attempt_when_replayed_then_failures_reset_and_copies_accumulate() {
        let job = JobId::new();
        let spec = JobSpec {
            src: Address::Memory { name: "a".into() },
            dst: Address::Memory { name: "b".into() },
            mode: Mode::Full,
            parallel: None,
            block_size: None,
            copy_method: Default::default(),
            policy_plugin: None,
            plugin_failure: Default::default(),
            mounts: Vec::new(),
            check_md5: Default::default(),
        };
        let mut s = JobSummary::new(job);
        let events = [
            Event::JobSubmitted {
                spec: Box::new(spec),
                schedule: None,
            },
            started(1),
            copied("x"),
            Event::BlobFailed {
                name: "y".into(),
                error_kind: ErrorKind::Io,
                message: "m".into(),
                tries: 1,
                retries: Default::default(),
            },
            Event::JobFinished {
                attempt: 1,
                outcome: Outcome::CompletedWithFailures,
                totals: Totals::default(),
            },
        ];
        for (i, e) in events.into_iter().enumerate() {
            s.apply(&rec(job, i as u64, e));
        }
        assert_eq!(s.state, JobState::CompletedWithFailures);
        assert_eq!((s.copied, s.failed), (1, 1));

        s.apply(&rec(job, 5, started(2)));
        assert_eq!(s.effective_state(), JobState::Interrupted);
        assert_eq!(s.failed, 0);
        assert_eq!(s.attempts.len(), 2);
        assert_eq!(s.copied_bytes, 10);
        assert_eq!(s.last_seq, 5);
    }

    #[test]
    fn given_attempts_hours_apart_when_elapsed_then_only_their_own_time_counts() {
        let job = JobId::new();
        let t0 = Utc::now() - chrono::Duration::hours(12);
        let at = |mins: i64| t0 + chrono::Duration::minutes(mins);
        let finished = |attempt| Event::JobFinished {
            attempt,
            outcome: Outcome::CompletedWithFailures,
            totals: Totals::default(),
        };
        let mut s = JobSummary::new(job);
        // Attempt 1: 10 minutes; a night idle; attempt 2: 5 minutes; then a
        // third that died without a record.
        for (seq, (mins, event)) in [
            (0, started(1)),
            (10, finished(1)),
            (600, started(2)),
            (605, finished(2)),
            (700, started(3)),
        ]
        .into_iter()
        .enumerate()
        {
            s.apply(&EventRecord {
                at: at(mins),
                ..rec(job, seq as u64, event)
            });
        }
        assert_eq!(s.elapsed(None), Some(chrono::Duration::minutes(15)));
        // A live process runs attempt 3: it counts up to now.
        assert_eq!(
            s.elapsed(Some(at(720))),
            Some(chrono::Duration::minutes(35))
        );
        assert_eq!(JobSummary::new(job).elapsed(None), None);
    }

    #[test]
    fn given_a_prune_cut_short_when_folded_then_job_pruned_sets_the_counts_once() {
        let job = JobId::new();
        let finished = Event::JobFinished {
            attempt: 1,
            outcome: Outcome::Succeeded,
            totals: Totals::default(),
        };
        let mut whole = JobSummary::new(job);
        for (i, e) in [started(1), copied("a"), copied("b"), finished.clone()]
            .into_iter()
            .enumerate()
        {
            whole.apply(&rec(job, i as u64, e));
        }
        let pruned = Event::JobPruned {
            counts: Box::new(whole.pruned_counts()),
            by: "u@h".into(),
        };
        // Given what a prune cut short leaves (one blob event of two), and
        // what a finished one leaves (none).
        for kept in [vec![copied("b")], vec![]] {
            let mut s = JobSummary::new(job);
            s.apply(&rec(job, 0, started(1)));
            for e in kept {
                s.apply(&rec(job, 2, e));
            }
            s.apply(&rec(job, 3, finished.clone()));
            // When the JobPruned is folded.
            s.apply(&rec(job, 4, pruned.clone()));
            // Then the counts are the whole job's, once.
            assert!(s.pruned);
            assert_eq!((s.copied, s.copied_bytes), (2, 20));
            assert_eq!(s.attempts[0].totals, whole.attempts[0].totals);
            assert_eq!(s.state, JobState::Succeeded);
        }
    }

    #[test]
    fn given_retried_blobs_and_listing_when_folded_then_retries_are_counted_by_cause() {
        let job = JobId::new();
        let mut s = JobSummary::new(job);
        let causes = |pairs: &[(&str, u32)]| -> std::collections::BTreeMap<String, u32> {
            pairs.iter().map(|(c, n)| (c.to_string(), *n)).collect()
        };
        let events = [
            started(1),
            Event::ListingCompleted {
                attempt: 1,
                blobs: 2,
                bytes: 20,
                retries: causes(&[("timeout", 1)]),
            },
            copied_with("x", causes(&[("503 ServerBusy", 2), ("timeout", 1)])),
            Event::BlobFailed {
                name: "y".into(),
                error_kind: ErrorKind::Service,
                message: "m".into(),
                tries: 1,
                retries: causes(&[("503 ServerBusy", 5)]),
            },
        ];
        for (i, e) in events.into_iter().enumerate() {
            s.apply(&rec(job, i as u64, e));
        }
        assert_eq!(s.retries(), 9);
        assert_eq!(s.retries_by_cause.get("503 ServerBusy"), Some(&7));
        assert_eq!(s.retries_by_cause.get("timeout"), Some(&2));
        assert_eq!(s.attempts[0].totals.retries, 9);
    }
}
