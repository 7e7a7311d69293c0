//! Audit and retention over the log: a blob's history across jobs (from the
//! history index), pruning old jobs' per-blob events, and importing a job
//! exported from another state dir.

use std::io::BufRead;

use chrono::{DateTime, Utc};
use serde::Deserialize;

use crate::archive_sum::ArchiveSum;
use crate::error::EngineError;
use crate::event::{Event, EventRecord, SCHEMA_VERSION};
use crate::job::{Address, JobId};
use crate::log::{self, keys, PruneStats};
use crate::newest::{HistoryLines, Newest};
use crate::projection::history::{self, Scope};
use crate::projection::{BlobState, HistoryLine, JobState, JobSummary, Side};
use crate::Engine;

/// The export format version `ferry export` writes: 2 ends the archive
/// with a checksum line (`archive_sum`). `import` reads 1 and 2.
pub const EXPORT_FORMAT: u32 = 2;
/// The first format with the checksum line.
const SUMMED_SINCE: u32 = 2;

/// Which finished jobs `prune` removes per-blob events from.
#[derive(Debug, Clone)]
pub struct PruneOptions {
    /// Jobs that ended before this.
    pub before: DateTime<Utc>,
    /// The newest N finished jobs are kept whatever their age.
    pub keep_last: usize,
    /// Count only.
    pub dry_run: bool,
    /// Who asked (`user@host`), recorded in each job's `JobPruned`.
    pub by: String,
}

/// What `prune` removed (or would remove).
#[derive(Debug, Clone, Default)]
pub struct PruneReport {
    pub jobs: Vec<JobId>,
    pub events: u64,
    pub entries: u64,
    pub bytes: u64,
}

/// What `import` loaded.
#[derive(Debug, Clone)]
pub struct ImportReport {
    pub job: JobId,
    pub events: u64,
    /// The archive held a pruned job's job-level events only.
    pub pruned: bool,
}

/// First line of an export archive.
#[derive(Debug, Deserialize)]
struct ExportHeader {
    ferry_export: u32,
    schema: u16,
    job: JobId,
    events: u64,
}

impl Engine {
    /// The normalized address of what a user typed for `ferry history`
    /// (see `projection::history::base`): an account address
    /// (`prod:photos/2024/a.jpg`), a local path (made absolute, `.`/`..`
    /// resolved without following links) or a container URL (its query,
    /// e.g. a SAS, dropped). An account no longer in the config is read as
    /// written, so the history of old jobs stays reachable.
    pub fn history_address(&self, input: &str) -> Result<String, EngineError> {
        if let Some(name) = input.strip_prefix("memory:") {
            return Ok(history::base(&Address::Memory { name: name.into() }));
        }
        match Address::parse_for_lookup(input, self.accounts()) {
            Ok(parsed) => Ok(history::base(&parsed.address)),
            Err(e) => {
                let Some((account, rest)) = input.split_once(':') else {
                    return Err(e);
                };
                if !crate::config::valid_account_name(account) || rest.is_empty() {
                    return Err(e);
                }
                let rest = rest.trim_matches('/');
                let (container, prefix) = rest.split_once('/').unwrap_or((rest, ""));
                Ok(history::base(&Address::Azure {
                    account: account.into(),
                    container: container.into(),
                    prefix: prefix.into(),
                }))
            }
        }
    }

    /// Every index line of `address` (normalized, see `history_address`)
    /// and of the names under it as a folder, newest first, at most
    /// `limit`: per job, the address is matched against its source and its
    /// destination and that job's lines are range-scanned. No events are
    /// read. With a limit only that many lines are held at a time; without
    /// one, long histories are sorted in temp files (see `newest`).
    pub fn history(
        &self,
        address: &str,
        limit: Option<usize>,
    ) -> Result<HistoryLines, EngineError> {
        let mut newest = Newest::new(limit);
        for job in self.log().job_ids()? {
            let Some(spec) = self.log().summary(job)?.and_then(|s| s.spec) else {
                continue;
            };
            for (side, at) in [(Side::Source, &spec.src), (Side::Destination, &spec.dst)] {
                let base = history::base(at);
                // (text, exact): the blob itself, and the names under it
                // as a folder.
                let selections = match history::scope(address, &base) {
                    None => continue,
                    Some(Scope::All) => vec![(String::new(), false)],
                    Some(Scope::Name(name)) => {
                        vec![(name.clone(), true), (format!("{name}/"), false)]
                    }
                };
                for (text, exact) in selections {
                    // The visitor cannot fail; a spill error waits here.
                    let mut spill = Ok(());
                    self.log()
                        .each_history(job, &text, exact, |name, seq, entry| {
                            if spill.is_ok() {
                                spill = newest.offer((entry.at, job, seq, side as u8), || {
                                    HistoryLine {
                                        address: history::blob_address(&base, name),
                                        side,
                                        job,
                                        seq,
                                        entry: entry.clone(),
                                    }
                                });
                            }
                        })?;
                    spill?;
                }
            }
        }
        newest.into_lines()
    }

    /// Removes the per-blob events and checkpoint entries of finished jobs
    /// that ended before `opts.before`, except the newest `keep_last`
    /// finished jobs. Job-level events (original seqs), summaries (marked
    /// pruned, counts kept) and history lines stay.
    pub async fn prune(&self, opts: &PruneOptions) -> Result<PruneReport, EngineError> {
        let finished: Vec<JobSummary> = self
            .jobs()?
            .into_iter()
            .filter(|s| {
                matches!(
                    s.state,
                    JobState::Succeeded
                        | JobState::CompletedWithFailures
                        | JobState::Failed
                        | JobState::Cancelled
                )
            })
            .collect();
        // Oldest first (ids are UUIDv7): the last `keep_last` are kept.
        let keep = finished.len().saturating_sub(opts.keep_last);
        let mut report = PruneReport::default();
        for (i, s) in finished.into_iter().enumerate() {
            let ended = s
                .attempts
                .iter()
                .filter_map(|a| a.ended_at)
                .max()
                .or(s.submitted_at);
            // A job already pruned is finished whatever the age or
            // --keep-last asked for (a prune cut short by a crash left some
            // of its blob events, and verify-log says to prune again).
            if !s.pruned && (i >= keep || ended.is_none_or(|t| t >= opts.before)) {
                continue;
            }
            // A pruned job is looked at again (cheap: its job-level events):
            // a prune cut off by a crash is finished here.
            let PruneStats {
                events,
                entries,
                bytes,
            } = self.log().prune(s.id, opts.dry_run, &opts.by).await?;
            if s.pruned && events == 0 && entries == 0 {
                continue;
            }
            report.jobs.push(s.id);
            report.events += events;
            report.entries += entries;
            report.bytes += bytes;
        }
        Ok(report)
    }

    /// Closes the log and rewrites it without the space removed keys left
    /// (see `log::compact`), keeping the state dir's lock throughout.
    pub fn compact(self) -> Result<log::CompactStats, EngineError> {
        let (dir, log, lock) = self.into_parts();
        log.close();
        drop(log);
        let stats = log::compact(&dir.join("db"));
        drop(lock);
        stats
    }

    /// Loads one job from an export archive (JSON lines: a header, then
    /// each `EventRecord`): refuses a job id this state dir has; checks the
    /// records are one run from seq 0 of that job (gaps only in a pruned
    /// job's job-level events); appends them through the log writer keeping
    /// seq and time, old schemas upcast, so summary, checkpoint and history
    /// index are built as for normal appends.
    pub async fn import(&self, archive: impl BufRead) -> Result<ImportReport, EngineError> {
        let bad = |line: usize, what: String| {
            EngineError::InvalidInput(format!("not a ferry export: line {line}: {what}"))
        };
        let mut lines = archive.lines().enumerate().map(|(i, l)| {
            l.map(|l| (i + 1, l)).map_err(|e| {
                EngineError::InvalidInput(format!("cannot read the export archive: {e}"))
            })
        });
        let (_, first) = lines
            .next()
            .transpose()?
            .ok_or_else(|| bad(1, "the file is empty".into()))?;
        let header: ExportHeader = serde_json::from_str(&first).map_err(|e| {
            bad(
                1,
                format!("expected a header {{\"ferry_export\":1,...}} ({e})"),
            )
        })?;
        if header.ferry_export == 0 || header.ferry_export > EXPORT_FORMAT {
            return Err(bad(
                1,
                format!(
                    "export format {} is not one this ferry reads (1 to {EXPORT_FORMAT}); upgrade ferry",
                    header.ferry_export
                ),
            ));
        }
        if header.schema > SCHEMA_VERSION {
            return Err(bad(
                1,
                format!(
                    "events of schema {}, newer than this ferry knows ({SCHEMA_VERSION}); upgrade ferry",
                    header.schema
                ),
            ));
        }
        let job = header.job;
        if job == JobId::CONTROL || job == keys::INDEX {
            return Err(bad(1, format!("{job} is a reserved id, not a job")));
        }
        if self.log().summary(job)?.is_some() {
            return Err(exists(job));
        }
        let mut import = Parts::new(self.log(), job);
        let mut gaps = false;
        let mut blob_events = false;
        let mut pruned_event = false;
        let mut last: Option<u64> = None;
        let mut sum = ArchiveSum::new();
        sum.update_line(&first);
        // The checksum line, once read: nothing but blank lines may follow.
        let mut sum_line: Option<(usize, String)> = None;
        for l in lines {
            let (n, text) = match l {
                Ok(l) => l,
                Err(e) => return Err(import.abort(e).await),
            };
            if ArchiveSum::is_sum_line(&text) && sum_line.is_none() {
                sum_line = Some((n, text));
                continue;
            }
            if sum_line.is_some() && !text.trim().is_empty() {
                let e = bad(n, "a line after the checksum line (edited?)".into());
                return Err(import.abort(e).await);
            }
            sum.update_line(&text);
            let checked = (|| {
                if text.trim().is_empty() {
                    return Ok(None);
                }
                let value: serde_json::Value =
                    serde_json::from_str(&text).map_err(|e| bad(n, e.to_string()))?;
                let rec = log::decode_json_record(value).map_err(|e| bad(n, e))?;
                if rec.job != job {
                    return Err(bad(n, format!("an event of job {}, not of {job}", rec.job)));
                }
                let expected = last.map_or(0, |s| s + 1);
                if rec.seq < expected || (last.is_none() && rec.seq != 0) {
                    return Err(bad(
                        n,
                        format!("seq {} where {expected} was expected", rec.seq),
                    ));
                }
                // The log keeps times as nanoseconds since 1970 in an i64
                // (the history index, compact chunks); ferry never stamps
                // others.
                if rec.at.timestamp_nanos_opt().is_none() {
                    return Err(bad(
                        n,
                        format!("a time outside 1677-2262 ({})", rec.at.to_rfc3339()),
                    ));
                }
                if rec.seq == 0 && !matches!(rec.event, Event::JobSubmitted { .. }) {
                    return Err(bad(n, "the first event is not JobSubmitted".into()));
                }
                Ok(Some(rec))
            })();
            let rec = match checked {
                Ok(Some(rec)) => rec,
                Ok(None) => continue,
                Err(e) => return Err(import.abort(e).await),
            };
            gaps |= rec.seq != last.map_or(0, |s| s + 1);
            blob_events |= BlobState::from_event(&rec).is_some();
            pruned_event |= matches!(rec.event, Event::JobPruned { .. });
            last = Some(rec.seq);
            import.push(rec).await?;
        }
        let summed = header.ferry_export >= SUMMED_SINCE;
        let problem = if let Some(e) = check_sum(summed, sum, sum_line) {
            Some(e)
        } else if import.count != header.events {
            Some(bad(
                1,
                format!(
                    "the header says {} events, the file holds {} ({})",
                    header.events,
                    import.count,
                    if import.count < header.events {
                        "cut short?"
                    } else {
                        "edited?"
                    }
                ),
            ))
        } else if import.count == 0 {
            Some(bad(1, "no events".into()))
        } else if pruned_event && blob_events {
            Some(bad(
                1,
                "a job pruned only in part (a prune cut short): run `ferry prune` where it was exported, then export it again".into(),
            ))
        } else if gaps && blob_events {
            Some(bad(
                1,
                "the events have gaps in their seqs but are not a pruned job's (they include blob events)".into(),
            ))
        } else {
            None
        };
        if let Some(e) = problem {
            return Err(import.abort(e).await);
        }
        let events = import.finish(gaps).await?;
        Ok(ImportReport {
            job,
            events,
            pruned: gaps,
        })
    }
}

/// Whether the checksum line is where the format puts it and matches the
/// bytes before it.
fn check_sum(summed: bool, sum: ArchiveSum, line: Option<(usize, String)>) -> Option<EngineError> {
    let bad = |line: usize, what: &str| {
        Some(EngineError::InvalidInput(format!(
            "not a ferry export: line {line}: {what}"
        )))
    };
    match (summed, line) {
        (false, None) => None,
        (false, Some((n, _))) => bad(n, "a checksum line in a format-1 archive (edited?)"),
        (true, None) => bad(1, "the checksum line at the end is missing (cut short?)"),
        (true, Some((n, text))) => match ArchiveSum::parse_line(&text) {
            None => bad(n, "an unreadable checksum line"),
            Some(expected) if expected != sum.hex() => bad(
                n,
                "the checksum does not match the lines before it: the archive was changed \
                 or damaged after export; export the job again",
            ),
            Some(_) => None,
        },
    }
}

/// An import on its way to the log, [`log::IMPORT_PART`] records at a time
/// (a 1M-blob job held whole took 1.8 GB).
struct Parts<'a> {
    log: &'a log::EventLog,
    job: JobId,
    pending: Vec<EventRecord>,
    /// Records taken so far.
    count: u64,
    /// Whether a part has been written (so there is something to undo).
    started: bool,
}

impl<'a> Parts<'a> {
    fn new(log: &'a log::EventLog, job: JobId) -> Self {
        Parts {
            log,
            job,
            pending: Vec::new(),
            count: 0,
            started: false,
        }
    }

    async fn push(&mut self, rec: EventRecord) -> Result<(), EngineError> {
        self.pending.push(rec);
        self.count += 1;
        if self.pending.len() >= log::IMPORT_PART {
            self.write(None).await?;
        }
        Ok(())
    }

    async fn write(&mut self, last: Option<bool>) -> Result<u64, EngineError> {
        let part = log::ImportPart {
            first: !self.started,
            last,
        };
        let records = std::mem::take(&mut self.pending);
        let n = self.log.import_part(self.job, records, part).await?;
        self.started = true;
        Ok(n)
    }

    /// Writes the rest and the summary; returns the events imported.
    async fn finish(mut self, pruned: bool) -> Result<u64, EngineError> {
        self.write(Some(pruned)).await?;
        Ok(self.count)
    }

    /// Undoes what was written and hands back `e`, the reason. If the undo
    /// fails too, the job stays marked and the next open removes it.
    async fn abort(self, e: EngineError) -> EngineError {
        if self.started {
            if let Err(undo) = self.log.abort_import(self.job).await {
                tracing::warn!(job = %self.job, error = %undo, "could not remove a half-imported job; the next start will");
            }
        }
        e
    }
}

fn exists(job: JobId) -> EngineError {
    EngineError::InvalidInput(format!(
        "job {job} already exists in this state dir; nothing imported"
    ))
}

#[cfg(test)]
#[path = "audit_tests.rs"]
pub(crate) mod tests;
