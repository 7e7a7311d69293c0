//! Checkpoint lookups: a name's entry is its own key or its line in the
//! first run of each attempt that may hold it, whichever is newer.
//!
//! Looked up alone ([`EventLog::blob_state`]), a name costs a seek per
//! attempt that has runs, so a resume asking for every listed blob paid
//! that per blob and per earlier attempt (~1.5 µs per blob already done
//! with one earlier attempt, at 1M blobs). A listing asks in name order, so
//! a cursor kept for the whole listing (the planner's; verify's) keeps,
//! per attempt, the run its last seek found and answers the next names from
//! it until they pass that run's greatest name. A 1M-blob no-op interrupted
//! after ~594,000 blobs: its replay took 4.2 s of user CPU and 5.9 s of wall
//! time with a seek per name, 2.6 s and 5.5 s with this cursor.
//!
//! Why that is the answer a seek would give: a seek for `from` finds the
//! first run whose greatest name is at or after `from`. For any `name`
//! between `from` and that run's greatest name, a run that came before it
//! and reached `name` would also have reached `from`, so the same run is
//! first. An attempt with no run at or after `from` has none at or after a
//! later name either, and the seek lands on the same next attempt.

use std::sync::Arc;

use crate::error::EngineError;
use crate::job::JobId;
use crate::projection::BlobState;

use super::{keys, runs, EventLog};

impl EventLog {
    /// Looks checkpoint entries up for names asked in ascending order,
    /// reading the runs of attempts before `below` only: the attempt under
    /// way has no outcome for a name not listed yet, as a listing names a
    /// blob once (`u32::MAX`: every attempt). Names asked out of order are
    /// still answered right, with a seek each.
    pub fn checkpoint_cursor(&self, job: JobId, below: u32) -> CheckpointCursor<'_> {
        CheckpointCursor {
            log: self,
            job,
            below,
            seen: Vec::new(),
        }
    }
}

/// See [`EventLog::checkpoint_cursor`].
pub struct CheckpointCursor<'a> {
    log: &'a EventLog,
    job: JobId,
    below: u32,
    /// Per attempt looked at, in attempt order: what its last seek found.
    seen: Vec<(u32, Seen)>,
}

/// What a seek from `from` in one attempt found.
struct Seen {
    from: String,
    found: Found,
}

enum Found {
    /// The attempt's first run whose greatest name is at or after `from`.
    Run {
        /// Its key, to record an access per name answered from it.
        key: Vec<u8>,
        greatest: String,
        items: Arc<Vec<runs::RunItem>>,
    },
    /// No such run; the next attempt with runs (if any).
    Next(Option<u32>),
}

impl Seen {
    /// Whether this answers for `name` as a new seek would.
    fn covers(&self, name: &str) -> bool {
        self.from.as_str() <= name
            && match &self.found {
                Found::Run { greatest, .. } => name <= greatest.as_str(),
                Found::Next(_) => true,
            }
    }
}

impl CheckpointCursor<'_> {
    /// `name`'s checkpoint entry: its own key or its line in a run,
    /// whichever is newer (as [`EventLog::blob_state`] answers).
    pub fn state(&mut self, name: &str) -> Result<Option<BlobState>, EngineError> {
        let mut found = self.log.keyed_blob_state(self.job, name)?;
        let mut attempt = Some(0u32);
        while let Some(a) = attempt.filter(|a| *a < self.below) {
            let slot = match self.seen.binary_search_by_key(&a, |(s, _)| *s) {
                Ok(i) if self.seen[i].1.covers(name) => i,
                Ok(i) => {
                    self.seen[i].1 = self.seek(a, name)?;
                    i
                }
                Err(i) => {
                    let seen = self.seek(a, name)?;
                    self.seen.insert(i, (a, seen));
                    i
                }
            };
            attempt = match &self.seen[slot].1.found {
                Found::Run { key, items, .. } => {
                    // A cache access per name, as a seek per name made: sled's
                    // LRU evicts only as fast as accesses are recorded (see
                    // `scan`). Without it a 1M-blob resume peaked at 72 MB
                    // (61 MB with one per run) instead of 52 MB; a `get` of a
                    // hot key costs far less than the seek it replaces.
                    let _ = self.log.tree().get(key);
                    if let Ok(i) = items.binary_search_by(|it| it.name.as_str().cmp(name)) {
                        found = runs::newer(found.take(), Some(items[i].state()));
                    }
                    a.checked_add(1)
                }
                Found::Next(next) => *next,
            };
        }
        Ok(found)
    }

    /// The first run of `attempt` whose greatest name is at or after `from`.
    fn seek(&self, attempt: u32, from: &str) -> Result<Seen, EngineError> {
        let start = keys::run(self.job, attempt, from);
        let end = keys::after_job(self.job);
        let log = self.log;
        let found = match log.tree().range(start.as_slice()..end.as_slice()).next() {
            None => Found::Next(None),
            Some(kv) => {
                let (k, v) = kv.map_err(|e| log.corrupt(e))?;
                match keys::parse_run(&k) {
                    // Past the job's runs: no later attempt has any.
                    None => Found::Next(None),
                    Some((a, _)) if a != attempt => Found::Next(Some(a)),
                    Some((_, greatest)) => Found::Run {
                        key: k.to_vec(),
                        greatest: greatest.to_string(),
                        items: log
                            .inner
                            .runs
                            .get_or_decode(&k, &v)
                            .map_err(|e| log.corrupt(e))?,
                    },
                }
            }
        };
        Ok(Seen {
            from: from.to_string(),
            found,
        })
    }
}
