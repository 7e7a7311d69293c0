//! Imports on the writer thread, part by part.
//!
//! Why parts: a whole export staged as one batch held every record and
//! every sled node it touched in memory, 1.8 GB for a 1M-blob job. Parts of
//! [`IMPORT_PART`] records are each written and flushed like any batch.
//! All or nothing still holds: the first part marks the job as being
//! imported (`keys::importing`), only the last writes its summary and
//! clears the mark, an import given up removes what it wrote, and a job
//! still marked when the log is opened (the process died) is removed then.

use super::{describe, put_chunks, Chunks, Exclusive, WriterState, INDEX_VERSION, PRUNE_STEP};
use crate::error::EngineError;
use crate::event::EventRecord;
use crate::job::JobId;
use crate::log::keys;
use crate::projection::JobSummary;

/// Records the engine sends per part (in unit tests a few, so every
/// import there crosses parts).
pub const IMPORT_PART: usize = if cfg!(test) { 8 } else { 8192 };

/// Where a part stands in its import.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ImportPart {
    /// Refused if the job exists; marks it as being imported.
    pub first: bool,
    /// The last part: `Some(pruned)` writes the summary (marked pruned for
    /// a pruned job's job-level events) and clears the mark.
    pub last: Option<bool>,
}

impl WriterState {
    /// Writes one part of an import through the same staging as appends,
    /// so its summary, checkpoint and history lines are exactly what
    /// appending the events would give. Returns the records written.
    pub(super) fn import(
        &mut self,
        job: JobId,
        records: Vec<EventRecord>,
        part: ImportPart,
    ) -> Result<u64, Exclusive> {
        let mut batch = sled::Batch::default();
        if part.first {
            let exists = self.seqs.contains_key(&job)
                || self
                    .db
                    .scan_prefix(job.as_bytes())
                    .next()
                    .transpose()
                    .map_err(|e| Exclusive::Write(describe(&e)))?
                    .is_some();
            if exists || job == keys::INDEX || job == JobId::CONTROL {
                return Err(Exclusive::Refused(EngineError::InvalidInput(format!(
                    "job {job} already exists in this state dir; nothing imported"
                ))));
            }
            self.summaries.insert(job, JobSummary::new(job));
            batch.insert(keys::importing(job).as_slice(), b"".as_slice());
        } else if !self.summaries.contains_key(&job) {
            return Err(Exclusive::Refused(EngineError::InvalidInput(format!(
                "job {job} is not being imported; nothing written"
            ))));
        }
        let n = records.len() as u64;
        let mut chunks: Chunks = Vec::new();
        for rec in records {
            self.stage_record(&mut batch, &mut chunks, rec, None)
                .map_err(|e| self.forget(job, Exclusive::Write(e)))?;
        }
        self.stage_runs(&mut batch, &chunks)
            .map_err(|e| self.forget(job, Exclusive::Write(e)))?;
        for (job, recs) in &chunks {
            put_chunks(&mut batch, *job, recs)
                .map_err(|e| self.forget(*job, Exclusive::Write(e)))?;
        }
        if let Some(pruned) = part.last {
            let summary = self
                .summaries
                .get_mut(&job)
                .ok_or_else(|| Exclusive::Write("summary cache".into()))?;
            // A `JobPruned` folded in marks it too (a pruned job that had
            // no blob events leaves no gaps).
            summary.pruned |= pruned;
            let bytes = rmp_serde::to_vec_named(summary)
                .map_err(|e| Exclusive::Write(format!("cannot encode a summary: {e}")))?;
            crate::log::open_jobs::stage(&mut batch, job, summary);
            batch.insert(keys::summary(job).as_slice(), bytes);
            batch.remove(keys::importing(job).as_slice());
            if self.mark_index {
                batch.insert(keys::index_marker().as_slice(), INDEX_VERSION.as_slice());
            }
        }
        self.commit(batch)?;
        if part.last.is_some() {
            self.mark_index = false;
            // Read back with the job's next event, like any job at rest.
            self.summaries.remove(&job);
            self.seqs.remove(&job);
        }
        self.stats
            .events
            .fetch_add(n, std::sync::atomic::Ordering::Relaxed);
        Ok(n)
    }

    /// Removes what an import given up wrote (the engine found the archive
    /// bad after sending parts). Returns the keys removed.
    pub(super) fn abort_import(&mut self, job: JobId) -> Result<u64, Exclusive> {
        let _ = self.forget(job, Exclusive::Write(String::new()));
        remove_marked(&self.db, job).map_err(|e| Exclusive::Write(describe(&e)))
    }
}

/// Removes every job left marked as being imported (at open).
pub(super) fn abandon(db: &sled::Db) -> Result<(), String> {
    let marked: Vec<JobId> = db
        .scan_prefix(keys::importing_prefix())
        .keys()
        .map(|k| {
            let k = k.map_err(|e| describe(&e))?;
            keys::indexed_job(&k).ok_or_else(|| "a malformed import mark".to_string())
        })
        .collect::<Result<_, _>>()?;
    for job in marked {
        tracing::warn!(%job, "removing a job whose import did not finish");
        remove_marked(db, job).map_err(|e| describe(&e))?;
    }
    Ok(())
}

/// Removes a marked job's keys in flushed steps, the mark last: cut short,
/// the next open finishes it.
fn remove_marked(db: &sled::Db, job: JobId) -> Result<u64, sled::Error> {
    let mut removed = 0u64;
    loop {
        let mut batch = sled::Batch::default();
        let mut n = 0usize;
        for k in db.scan_prefix(job.as_bytes()).keys().take(PRUNE_STEP) {
            batch.remove(k?);
            n += 1;
        }
        if n == 0 {
            break;
        }
        db.apply_batch(batch)?;
        db.flush()?;
        removed += n as u64;
    }
    db.remove(keys::importing(job))?;
    db.flush()?;
    Ok(removed)
}
