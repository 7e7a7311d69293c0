//! Reads for checks that walk a whole job without holding it: keyed
//! entries and lines, every run item, and events by seq.
//!
//! Why: `verify-log` used to fold a job's checkpoint and history into maps
//! and load the stored ones next to them; at a million blobs that peaked
//! at ~620 MB. Checked one event and one stored entry at a time, it needs
//! what one chunk and one run hold.

use crate::error::EngineError;
use crate::event::EventRecord;
use crate::job::JobId;
use crate::projection::{BlobState, HistoryEntry};

use super::{chunk, keys, runs, EventLog};

/// Decoded chunks kept by an [`EventReader`]: consecutive lookups of a
/// check in name order mostly land in the same few chunks.
const CHUNK_SLOTS: usize = 8;

impl EventLog {
    /// The checkpoint entry `name` has under a key of its own.
    pub fn keyed_blob_state(
        &self,
        job: JobId,
        name: &str,
    ) -> Result<Option<BlobState>, EngineError> {
        match self
            .tree()
            .get(keys::blob(job, name))
            .map_err(|e| self.corrupt(e))?
        {
            Some(v) => Ok(Some(self.decode("checkpoint entry", &v)?)),
            None => Ok(None),
        }
    }

    /// Every history line of a job that has a key of its own, in key
    /// order.
    pub fn each_keyed_history_line(
        &self,
        job: JobId,
        visit: impl FnMut(&str, u64, HistoryEntry),
    ) -> Result<(), EngineError> {
        self.each_keyed_line(&keys::history_prefix(job, ""), visit)
    }

    /// Calls `visit` with every run item of a job (name, seq and line), run
    /// by run; stops early when `visit` returns false.
    pub fn each_run_item(
        &self,
        job: JobId,
        mut visit: impl FnMut(&runs::RunItem) -> bool,
    ) -> Result<(), EngineError> {
        let mut going = true;
        self.each_run(job, "", |items| {
            going = items.iter().all(&mut visit);
            going
        })
    }

    /// Reads events of `job` by seq.
    pub fn event_reader(&self, job: JobId) -> EventReader<'_> {
        EventReader {
            log: self,
            job,
            chunks: Vec::new(),
        }
    }
}

/// Looks events up by seq, keeping the last few decoded chunks.
pub struct EventReader<'a> {
    log: &'a EventLog,
    job: JobId,
    /// (first seq, records) of recently decoded chunks, newest last.
    chunks: Vec<(u64, Vec<EventRecord>)>,
}

impl EventReader<'_> {
    /// The event at `seq`, if the job has one.
    pub fn get(&mut self, seq: u64) -> Result<Option<&EventRecord>, EngineError> {
        let cached = self.chunks.iter().position(|(first, recs)| {
            *first <= seq && recs.last().is_some_and(|last| last.seq >= seq)
        });
        let slot = match cached {
            Some(i) => i,
            None => {
                // The chunk holding `seq` is the last one starting at or
                // before it (chunks of a job cover disjoint seq ranges).
                let from = keys::event(self.job, 0);
                let to = keys::event(self.job, seq);
                let Some(kv) = self
                    .log
                    .tree()
                    .range(from.as_slice()..=to.as_slice())
                    .next_back()
                else {
                    return Ok(None);
                };
                let (k, v) = kv.map_err(|e| self.log.corrupt(e))?;
                let first = keys::seq_of(&k)
                    .ok_or_else(|| self.log.corrupt("an event key without a seq"))?;
                let recs = chunk::decode(&k, &v)
                    .map_err(|e| self.log.corrupt(format!("undecodable event chunk: {e}")))?;
                if self.chunks.len() == CHUNK_SLOTS {
                    self.chunks.remove(0);
                }
                self.chunks.push((first, recs));
                self.chunks.len() - 1
            }
        };
        let recs = &self.chunks[slot].1;
        Ok(recs
            .binary_search_by_key(&seq, |r| r.seq)
            .ok()
            .map(|i| &recs[i]))
    }
}
