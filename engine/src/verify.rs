//! `verify-log`: replays each job's events and checks every cached
//! projection against them (summaries, checkpoint entries, history lines),
//! one event and one stored entry at a time.
//!
//! Why not fold and compare maps: a job's checkpoint and history folded in
//! memory, next to the stored ones, peaked at ~620 MB for a million blobs.
//! Streaming passes prove the same equality with a bit per event:
//! - every stored history line (a key of its own or a run item) is the
//!   line of the blob event at its seq, and no two lines are of one event;
//!   as many lines as blob events then means one line per event;
//! - every stored checkpoint entry (a key, or a run item, which is a copy's
//!   or skip's line too) is what the event at its seq sets, so none is newer
//!   than its blob's latest event or made up;
//! - every event's own entry is stored (a run item) or its blob's entry is
//!   at least as new (looked up for the few events with keyed lines), so
//!   each blob's newest entry is its latest event's.
//!
//! A pruned job keeps few blob events (none unless a prune was cut short):
//! each is looked up. The open-jobs index must list exactly the jobs whose
//! summary is not settled.

use crate::error::EngineError;
use crate::job::JobId;
use crate::log::{open_jobs, CheckpointCursor, EventLog, EventReader};
use crate::projection::history;
use crate::projection::{BlobState, HistoryEntry, JobSummary};
use crate::Engine;

/// What `verify` checked and found.
#[derive(Debug, Default, Clone)]
pub struct Verification {
    pub jobs: u64,
    pub events: u64,
    /// Stored checkpoint entries checked (keys and run items).
    pub blobs: u64,
    /// History index lines checked.
    pub history: u64,
    pub problems: Vec<String>,
}

/// The first difference of one kind in one job: the smallest name (then
/// seq), as a sorted comparison would report it, whatever order the
/// passes find them in.
#[derive(Default)]
struct First(Option<(String, u64, &'static str)>);

impl First {
    fn note(&mut self, name: &str, seq: u64, what: &'static str) {
        if self
            .0
            .as_ref()
            .is_none_or(|(n, s, _)| (name, seq) < (n.as_str(), *s))
        {
            self.0 = Some((name.to_string(), seq, what));
        }
    }
}

impl Engine {
    /// Replays the log of each job (or one) and compares every cached
    /// projection with the fold: summaries, checkpoint entries and the
    /// history index. Returns the differences found.
    ///
    /// A pruned job keeps only job-level events (original seqs, so gaps are
    /// expected): its seqs must rise, its summary must agree on the
    /// job-level fields (the counts are from before pruning), and its
    /// history lines, which no longer have events behind them, are kept as
    /// they are.
    pub fn verify(&self, job: Option<JobId>) -> Result<Verification, EngineError> {
        let ids = match job {
            Some(j) => {
                self.summary(j)?;
                vec![j]
            }
            None => {
                // The control stream (schedules) too, when it exists: same
                // gap and summary checks (its summary folds nothing).
                let mut ids = self.log().job_ids()?;
                if self.log().summary(JobId::CONTROL)?.is_some() {
                    ids.insert(0, JobId::CONTROL);
                }
                ids
            }
        };
        let mut v = Verification::default();
        if job.is_none() {
            // `ids` is in key order (the control stream's nil id first).
            for open in self.log().open_job_ids()? {
                if ids.binary_search(&open).is_err() {
                    v.problems.push(format!(
                        "job {open}: listed as open (not settled) but not in the log"
                    ));
                }
            }
        }
        for id in ids {
            self.verify_job(id, &mut v)?;
        }
        Ok(v)
    }

    fn verify_job(&self, id: JobId, v: &mut Verification) -> Result<(), EngineError> {
        v.jobs += 1;
        let log = self.log();
        let stored = log.summary(id)?;
        let pruned = stored.as_ref().is_some_and(|s| s.pruned);
        let mut summary = JobSummary::new(id);
        let mut gap = None;
        let mut last: Option<u64> = None;
        let mut check = Check {
            log,
            id,
            events: log.event_reader(id),
            checkpoint: log.checkpoint_cursor(id, u32::MAX),
            attempts: Vec::new(),
            lined: Vec::new(),
            blob_events: 0,
            lines: 0,
            entries: 0,
            entry_diff: First::default(),
            line_diff: First::default(),
        };
        for (i, rec) in log.events(id).enumerate() {
            let rec = rec?;
            v.events += 1;
            let in_order = if pruned {
                last.map_or(rec.seq == 0, |l| rec.seq > l)
            } else {
                rec.seq == i as u64
            };
            if !in_order {
                gap = Some(format!(
                    "job {id}: event #{i} has seq {} (gap in the log)",
                    rec.seq
                ));
                break;
            }
            last = Some(rec.seq);
            summary.apply(&rec);
            let Some((name, state)) = BlobState::from_event(&rec) else {
                continue;
            };
            check.blob_events += 1;
            if pruned {
                check.newest_at_least(name, &state, true)?;
            }
        }
        v.problems.extend(gap);
        match &stored {
            Some(cached) if *cached == summary => {}
            Some(cached) if pruned && job_level(cached) == job_level(&summary) => {}
            Some(cached) => v.problems.push(format!(
                "job {id}: cached summary differs from the replay (cached state {}, {} copied; replay state {}, {} copied)",
                cached.state, cached.copied, summary.state, summary.copied
            )),
            None => v.problems.push(format!("job {id}: no cached summary")),
        }
        if let Some(cached) = stored.as_ref().filter(|_| id != JobId::CONTROL) {
            let listed = log.listed_open(id)?;
            if listed != open_jobs::is_open(cached) {
                let pruned = if cached.pruned { ", pruned" } else { "" };
                v.problems.push(format!(
                    "job {id}: the open-jobs index {} it, but it is {}{pruned}",
                    if listed { "lists" } else { "does not list" },
                    cached.state
                ));
            }
        }
        check.attempts = summary
            .attempts
            .iter()
            .map(|a| (a.started_seq, a.attempt))
            .collect();
        // Seqs past a gap were not folded: their lines are not counted.
        let folded = last.map_or(0, |l| l + 1);
        check.lined = vec![0; folded.div_ceil(64) as usize];
        check.keyed_entries()?;
        if !pruned {
            // A pruned job's lines outlive its blob events on purpose.
            check.keyed_lines()?;
            check.run_items()?;
            check.missing_lines(folded)?;
        }
        v.blobs += check.entries;
        v.history += check.lines;
        if let Some((name, _, _)) = check.entry_diff.0 {
            // Mid-prune a crash leaves some of both; pruning again
            // removes the rest.
            let hint = if pruned {
                " (an interrupted prune? run `ferry prune` again)"
            } else {
                ""
            };
            v.problems.push(format!(
                "job {id}: checkpoint entry for {name:?} differs from the replay{hint}"
            ));
        }
        v.problems
            .extend(check.line_diff.0.map(|(name, seq, what)| {
                format!("job {id}: history line of {name:?} (seq {seq}) {what}")
            }));
        Ok(())
    }
}

/// One job's stored projections, checked against its events.
struct Check<'a> {
    log: &'a EventLog,
    id: JobId,
    events: EventReader<'a>,
    /// Newest entries of names asked mostly in name order (run by run).
    checkpoint: CheckpointCursor<'a>,
    /// (seq of its `JobStarted`, attempt number) of each attempt, in order:
    /// a blob event's line names the attempt it came in.
    attempts: Vec<(u64, u32)>,
    /// A bit per folded seq: a stored line of that event was seen.
    lined: Vec<u64>,
    /// Blob events folded.
    blob_events: u64,
    /// Stored history lines seen.
    lines: u64,
    /// Stored checkpoint entries seen (keys and run items).
    entries: u64,
    entry_diff: First,
    line_diff: First,
}

impl Check<'_> {
    /// The blob's newest stored entry must be at least as new as `state`
    /// (an event of it), and equal when it is that event's.
    fn newest_at_least(
        &mut self,
        name: &str,
        state: &BlobState,
        keyed_only: bool,
    ) -> Result<(), EngineError> {
        let newest = if keyed_only {
            self.log.keyed_blob_state(self.id, name)?
        } else {
            self.checkpoint.state(name)?
        };
        match newest {
            Some(s) if s.seq > state.seq || s == *state => {}
            _ => self.entry_diff.note(name, 0, ""),
        }
        Ok(())
    }

    /// Keyed checkpoint entries: each what the event at its seq sets.
    fn keyed_entries(&mut self) -> Result<(), EngineError> {
        for entry in self.log.keyed_blob_states(self.id) {
            let (name, state) = entry?;
            self.entries += 1;
            let set = self.events.get(state.seq)?.and_then(BlobState::from_event);
            if set.is_none_or(|(n, s)| n != name || s != state) {
                self.entry_diff.note(&name, 0, "");
            }
        }
        Ok(())
    }

    /// The line and checkpoint entry that the event at `seq` gives, if it
    /// is a blob event of `name`.
    fn replay(
        &mut self,
        name: &str,
        seq: u64,
    ) -> Result<Option<(HistoryEntry, BlobState)>, EngineError> {
        let i = self
            .attempts
            .partition_point(|(started, _)| *started <= seq);
        let attempt = i.checked_sub(1).map_or(0, |i| self.attempts[i].1);
        let Some(rec) = self.events.get(seq)? else {
            return Ok(None);
        };
        Ok(history::line(attempt, rec)
            .zip(BlobState::from_event(rec))
            .filter(|((n, _), _)| *n == name)
            .map(|((_, line), (_, state))| (line, state)))
    }

    /// Checks one stored line. Returns the checkpoint entry its event sets
    /// if it is the line of a blob event of `name` (whatever its content).
    fn stored_line(
        &mut self,
        name: &str,
        seq: u64,
        line: &HistoryEntry,
    ) -> Result<Option<BlobState>, EngineError> {
        self.lines += 1;
        let Some((replayed, state)) = self.replay(name, seq)? else {
            self.line_diff.note(name, seq, "has no event behind it");
            return Ok(None);
        };
        if replayed != *line {
            self.line_diff.note(name, seq, "differs from the replay");
        }
        if let Some(word) = self.lined.get_mut((seq / 64) as usize) {
            let bit = 1u64 << (seq % 64);
            if *word & bit != 0 {
                self.line_diff.note(name, seq, "is stored twice");
            }
            *word |= bit;
        }
        // (Past a gap the seq was not folded, so it is not counted.)
        Ok(Some(state))
    }

    /// Lines with keys of their own (failures, out-of-order outcomes): the
    /// event's own checkpoint entry may have been overwritten since, so
    /// the blob's newest entry is looked up.
    fn keyed_lines(&mut self) -> Result<(), EngineError> {
        let mut error = None;
        let log = self.log;
        log.each_keyed_history_line(self.id, |name, seq, line| {
            if error.is_some() {
                return;
            }
            let checked = self
                .stored_line(name, seq, &line)
                .and_then(|state| match state {
                    Some(state) => self.newest_at_least(name, &state, false),
                    None => Ok(()),
                });
            error = checked.err();
        })?;
        error.map_or(Ok(()), Err)
    }

    /// Run items: each a copy's or skip's history line and checkpoint
    /// entry at once.
    fn run_items(&mut self) -> Result<(), EngineError> {
        let mut error = None;
        let log = self.log;
        log.each_run_item(self.id, |it| {
            self.entries += 1;
            match self.stored_line(&it.name, it.seq, &it.entry) {
                Ok(Some(state)) if state == it.state() => {}
                Ok(_) => self.entry_diff.note(&it.name, 0, ""),
                Err(e) => error = Some(e),
            }
            error.is_none()
        })?;
        error.map_or(Ok(()), Err)
    }

    /// Blob events no stored line was seen for: named, and their blob's
    /// entry looked up (the line's run item would have stood for it).
    fn missing_lines(&mut self, folded: u64) -> Result<(), EngineError> {
        let seen: u64 = self.lined.iter().map(|w| u64::from(w.count_ones())).sum();
        if seen == self.blob_events {
            return Ok(());
        }
        let log = self.log;
        for rec in log.events(self.id) {
            let rec = rec?;
            if rec.seq >= folded {
                break;
            }
            let Some((name, state)) = BlobState::from_event(&rec) else {
                continue;
            };
            if self.lined[(rec.seq / 64) as usize] & (1 << (rec.seq % 64)) == 0 {
                self.line_diff.note(name, rec.seq, "is missing");
                self.newest_at_least(name, &state, false)?;
            }
        }
        Ok(())
    }
}

/// The parts of a summary that only job-level events decide: what a pruned
/// job's remaining events must still fold to (its counts came from the
/// blob events that are gone).
fn job_level(s: &JobSummary) -> JobSummary {
    let mut s = s.clone();
    s.copied = 0;
    s.copied_bytes = 0;
    s.skipped = 0;
    s.failed = 0;
    s.skipped_by_reason.clear();
    s.retries_by_cause.clear();
    s.pruned = false;
    for a in &mut s.attempts {
        a.totals.copied = 0;
        a.totals.copied_bytes = 0;
        a.totals.skipped = 0;
        a.totals.failed = 0;
        a.totals.retries = 0;
    }
    s
}

#[cfg(test)]
#[path = "verify_tests.rs"]
mod tests;
