//! The event log: one sled tree, one writer thread (see `writer`), and the
//! read side (scans of events, checkpoint entries, summaries and the history
//! index).

mod chunk;
mod cursor;
mod flusher;
#[cfg(test)]
mod flusher_tests;
pub mod keys;
mod lookup;
pub mod open_jobs;
pub(crate) mod runs;
#[cfg(test)]
mod runs_tests;
mod scan;
mod spans;
mod thread;
mod upcast;
mod writer;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::de::DeserializeOwned;

use crate::error::EngineError;
use crate::event::{Event, EventRecord};
use crate::job::JobId;
use crate::projection::{BlobState, HistoryEntry, JobSummary};

pub use cursor::CheckpointCursor;
pub use lookup::EventReader;
pub use writer::import::{ImportPart, IMPORT_PART};
pub use writer::WriterStats;
use writer::{Cmd, Writer};

/// sled's page cache.
const CACHE_BYTES: u64 = 16 << 20;

/// A bench build (feature `unlogged-outcomes`) drops blob outcomes before
/// they reach the writer: the bench measures what logging them costs a
/// copy. Checked in the code rather than compiled out, so both builds are
/// type-checked alike.
pub const UNLOGGED_OUTCOMES: bool = cfg!(feature = "unlogged-outcomes");

/// What a prune removed (or, dry, would remove) from one job.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct PruneStats {
    pub events: u64,
    /// Checkpoint entries.
    pub entries: u64,
    /// Bytes of keys and values removed (rewritten chunks count the
    /// difference). The files shrink later, as sled reuses the space.
    pub bytes: u64,
}

/// Handle to the log. Cloning is cheap; all clones share one writer thread.
#[derive(Clone)]
pub struct EventLog {
    inner: Arc<Inner>,
}

struct Inner {
    path: PathBuf,
    db: sled::Db,
    writer: Writer,
    runs: runs::RunCache,
}

impl EventLog {
    /// Opens (or creates) the log in `path`. The caller must hold the state
    /// dir's lock: sled allows one process per database.
    pub fn open(path: &Path) -> Result<Self, EngineError> {
        finish_compaction(path).map_err(|e| EngineError::StateIo {
            path: path.to_path_buf(),
            cause: e,
        })?;
        let db = open_sled(path)?;
        let writer = Writer::start(db.clone(), path.to_path_buf())?;
        Ok(EventLog {
            inner: Arc::new(Inner {
                path: path.to_path_buf(),
                db,
                writer,
                runs: runs::RunCache::default(),
            }),
        })
    }

    /// Appends an event without waiting for it to be durable. Blob events use
    /// this: a blob whose event is lost in a crash is copied again on replay.
    /// Waits only when the writer's queue is full (backpressure).
    pub async fn append(&self, job: JobId, event: Event) -> Result<(), EngineError> {
        self.send_append(job, event, None).await
    }

    /// [`EventLog::append`] for a blob's outcome, with the blob's place
    /// among the attempt's listed blobs (0, 1, 2, ... in listing order,
    /// counting only blobs that get an outcome): outcomes of consecutive
    /// places share runs, and a late one fills the gap left for it.
    pub async fn append_outcome(
        &self,
        job: JobId,
        event: Event,
        place: u64,
    ) -> Result<(), EngineError> {
        if UNLOGGED_OUTCOMES {
            return Ok(());
        }
        self.send_append(job, event, Some(place)).await
    }

    async fn send_append(
        &self,
        job: JobId,
        event: Event,
        place: Option<u64>,
    ) -> Result<(), EngineError> {
        self.inner
            .writer
            .send(Cmd::Append {
                job,
                event,
                ack: None,
                place,
            })
            .await
    }

    /// Blocking form of [`EventLog::append_outcome`], for copy threads
    /// outside the runtime.
    pub fn append_outcome_blocking(
        &self,
        job: JobId,
        event: Event,
        place: u64,
    ) -> Result<(), EngineError> {
        if UNLOGGED_OUTCOMES {
            return Ok(());
        }
        self.inner.writer.send_blocking(Cmd::Append {
            job,
            event,
            ack: None,
            place: Some(place),
        })
    }

    /// Appends an event and returns once it is flushed, with its sequence number.
    pub async fn append_durable(&self, job: JobId, event: Event) -> Result<u64, EngineError> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.inner
            .writer
            .send(Cmd::Append {
                job,
                event,
                ack: Some(tx),
                place: None,
            })
            .await?;
        rx.await.map_err(|_| writer_gone())?
    }

    /// Blocking form of [`EventLog::append_durable`] for callers outside a runtime.
    pub fn append_durable_blocking(&self, job: JobId, event: Event) -> Result<u64, EngineError> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.inner.writer.send_blocking(Cmd::Append {
            job,
            event,
            ack: Some(tx),
            place: None,
        })?;
        rx.blocking_recv().map_err(|_| writer_gone())?
    }

    /// Waits until everything sent so far is durable.
    pub async fn sync(&self) -> Result<(), EngineError> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.inner.writer.send(Cmd::Sync(tx)).await?;
        rx.await.map_err(|_| writer_gone())?.map(|_| ())
    }

    pub fn writer_stats(&self) -> &WriterStats {
        self.inner.writer.stats()
    }

    fn tree(&self) -> &sled::Db {
        &self.inner.db
    }

    fn corrupt(&self, detail: impl std::fmt::Display) -> EngineError {
        EngineError::corrupt(&self.inner.path, detail)
    }

    fn decode<T: DeserializeOwned>(&self, what: &str, bytes: &[u8]) -> Result<T, EngineError> {
        rmp_serde::from_slice(bytes).map_err(|e| self.corrupt(format!("undecodable {what}: {e}")))
    }

    /// Events of one job in sequence order. Chunks are decoded one at a
    /// time, so memory stays at one writer batch.
    pub fn events(
        &self,
        job: JobId,
    ) -> impl Iterator<Item = Result<EventRecord, EngineError>> + '_ {
        scan::touched(
            self.tree(),
            self.tree().scan_prefix(keys::event_prefix(job)),
        )
        .flat_map(move |kv| {
            let chunk: Result<Vec<EventRecord>, EngineError> =
                kv.map_err(|e| self.corrupt(e)).and_then(|(k, v)| {
                    chunk::decode(&k, &v)
                        .map_err(|e| self.corrupt(format!("undecodable event chunk: {e}")))
                });
            match chunk {
                Ok(recs) => recs.into_iter().map(Ok).collect::<Vec<_>>(),
                Err(e) => vec![Err(e)],
            }
        })
    }

    /// All job ids, oldest first (not the control stream). Jumps from job to
    /// job instead of scanning every key, so it costs one seek per job.
    pub fn job_ids(&self) -> Result<Vec<JobId>, EngineError> {
        let mut out = Vec::new();
        for job in scan::job_ids(self.tree()) {
            let job = job.map_err(|e| self.corrupt(e))?;
            if job != JobId::CONTROL && job != keys::INDEX {
                out.push(job);
            }
        }
        Ok(out)
    }

    /// Jobs not settled (see `open_jobs`), oldest first: what the daemon
    /// and `ferry run` look at, without reading every job ever run.
    pub fn open_job_ids(&self) -> Result<Vec<JobId>, EngineError> {
        self.tree()
            .scan_prefix(keys::open_prefix())
            .keys()
            .map(|k| {
                let k = k.map_err(|e| self.corrupt(e))?;
                keys::indexed_job(&k).ok_or_else(|| self.corrupt("a malformed open-jobs key"))
            })
            .collect()
    }

    /// Whether the open-jobs index lists `job`.
    pub fn listed_open(&self, job: JobId) -> Result<bool, EngineError> {
        Ok(self
            .tree()
            .get(keys::open_job(job))
            .map_err(|e| self.corrupt(e))?
            .is_some())
    }

    /// The cached summary of a job, `None` if the job does not exist.
    pub fn summary(&self, job: JobId) -> Result<Option<JobSummary>, EngineError> {
        match self
            .tree()
            .get(keys::summary(job))
            .map_err(|e| self.corrupt(e))?
        {
            Some(v) => Ok(Some(self.decode("summary", &v)?)),
            None => Ok(None),
        }
    }

    /// One blob's checkpoint entry in one job: its own key or its line in
    /// a run, whichever is newer. Many names in order: `checkpoint_cursor`.
    pub fn blob_state(&self, job: JobId, name: &str) -> Result<Option<BlobState>, EngineError> {
        self.checkpoint_cursor(job, u32::MAX).state(name)
    }

    /// Calls `visit` with each run that may hold `from` or names after it:
    /// per attempt, the runs from the first whose greatest name is at or
    /// after `from`, until `visit` returns false (it has seen past what it
    /// looks for).
    fn each_run(
        &self,
        job: JobId,
        from: &str,
        mut visit: impl FnMut(&[runs::RunItem]) -> bool,
    ) -> Result<(), EngineError> {
        let end = keys::after_job(job);
        let mut attempt = 0u32;
        loop {
            let start = keys::run(job, attempt, from);
            // The attempt to seek next; none once the job's keys run out.
            let mut next = None;
            for (i, kv) in self
                .tree()
                .range(start.as_slice()..end.as_slice())
                .enumerate()
            {
                let (k, v) = kv.map_err(|e| self.corrupt(e))?;
                if i > 0 {
                    // Past a point lookup's one run: a scan (see `scan`).
                    let _ = self.tree().get(&k);
                }
                let Some((a, _)) = keys::parse_run(&k) else {
                    break;
                };
                if a != attempt {
                    // No (more) runs of this attempt at or after `from`.
                    next = Some(a);
                    break;
                }
                let items = self
                    .inner
                    .runs
                    .get_or_decode(&k, &v)
                    .map_err(|e| self.corrupt(e))?;
                if !visit(&items) {
                    next = attempt.checked_add(1);
                    break;
                }
            }
            match next {
                Some(a) => attempt = a,
                None => break,
            }
        }
        Ok(())
    }

    /// All checkpoint entries of a job, in name order, the newer of a key
    /// and a run line for each name. A pruned job has none (its runs stay
    /// as history).
    // Only tests need every entry (or line) at once.
    #[cfg(test)]
    pub(crate) fn blob_states(
        &self,
        job: JobId,
    ) -> impl Iterator<Item = Result<(String, BlobState), EngineError>> + '_ {
        let all = self.all_blob_states(job);
        let (ok, err) = match all {
            Ok(map) => (Some(map), None),
            Err(e) => (None, Some(e)),
        };
        ok.into_iter()
            .flat_map(|m| m.into_iter().map(Ok))
            .chain(err.map(Err))
    }

    // Only tests need every entry (or line) at once.
    #[cfg(test)]
    fn all_blob_states(
        &self,
        job: JobId,
    ) -> Result<std::collections::BTreeMap<String, BlobState>, EngineError> {
        let mut all: std::collections::BTreeMap<String, BlobState> =
            self.keyed_blob_states(job).collect::<Result<_, _>>()?;
        if self.summary(job)?.is_some_and(|s| s.pruned) {
            return Ok(all);
        }
        self.each_run(job, "", |items| {
            for it in items {
                let state = it.state();
                match all.get_mut(&it.name) {
                    Some(s) if s.seq >= state.seq => {}
                    Some(s) => *s = state,
                    None => {
                        all.insert(it.name.clone(), state);
                    }
                }
            }
            true
        })?;
        Ok(all)
    }

    /// The checkpoint entries that have keys of their own (every failure,
    /// and copies and skips that were not written in runs), in name order.
    pub fn keyed_blob_states(
        &self,
        job: JobId,
    ) -> impl Iterator<Item = Result<(String, BlobState), EngineError>> + '_ {
        scan::touched(self.tree(), self.tree().scan_prefix(keys::blob_prefix(job))).map(move |kv| {
            let (k, v) = kv.map_err(|e| self.corrupt(e))?;
            let name = String::from_utf8(k[17..].to_vec())
                .map_err(|_| self.corrupt("a checkpoint key that is not UTF-8"))?;
            Ok((name, self.decode("checkpoint entry", &v)?))
        })
    }

    /// Writes one part of an imported job: `records` keep their seq and
    /// time (already upcast), and its summary, checkpoint and history lines
    /// are built exactly as appends would. The first part is refused if the
    /// job exists; until the last (`part.last`) the job is marked as being
    /// imported and removed at the next open if the import goes no further.
    /// Durable on return.
    pub async fn import_part(
        &self,
        job: JobId,
        records: Vec<EventRecord>,
        part: ImportPart,
    ) -> Result<u64, EngineError> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.inner
            .writer
            .send(Cmd::Import {
                job,
                records,
                part,
                ack: tx,
            })
            .await?;
        rx.await.map_err(|_| writer_gone())?
    }

    /// Removes what the parts of an import given up wrote. Durable on return.
    pub async fn abort_import(&self, job: JobId) -> Result<u64, EngineError> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.inner
            .writer
            .send(Cmd::AbortImport { job, ack: tx })
            .await?;
        rx.await.map_err(|_| writer_gone())?
    }

    /// Removes a finished job's blob events and checkpoint entries, keeping
    /// its job-level events, summary and history lines, and records
    /// `JobPruned` (the counts, `by` who asked) first; with
    /// `dry_run` only counts. Durable on return.
    pub async fn prune(
        &self,
        job: JobId,
        dry_run: bool,
        by: &str,
    ) -> Result<PruneStats, EngineError> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.inner
            .writer
            .send(Cmd::Prune {
                job,
                dry_run,
                by: by.to_string(),
                ack: tx,
            })
            .await?;
        rx.await.map_err(|_| writer_gone())?
    }

    /// Every history line of a job, keyed ones first, then run by run, in
    /// no overall order: for a check that looks each up, without holding
    /// all of them (a 1M-blob job's lines are ~250 MB as a sorted list).
    pub fn each_history_line(
        &self,
        job: JobId,
        mut visit: impl FnMut(&str, u64, &HistoryEntry),
    ) -> Result<(), EngineError> {
        self.each_keyed_line(&keys::history_prefix(job, ""), |name, seq, entry| {
            visit(name, seq, &entry)
        })?;
        self.each_run(job, "", |items| {
            for it in items {
                visit(&it.name, it.seq, &it.entry);
            }
            true
        })
    }

    /// The history lines with keys of their own under `prefix`, in key order.
    fn each_keyed_line(
        &self,
        prefix: &[u8],
        mut visit: impl FnMut(&str, u64, HistoryEntry),
    ) -> Result<(), EngineError> {
        for kv in scan::touched(self.tree(), self.tree().scan_prefix(prefix)) {
            let (k, v) = kv.map_err(|e| self.corrupt(e))?;
            let (_, name, seq) =
                keys::parse_history(&k).ok_or_else(|| self.corrupt("a malformed history key"))?;
            let entry = HistoryEntry::decode(&v)
                .map_err(|e| self.corrupt(format!("undecodable history line: {e}")))?;
            visit(name, seq, entry);
        }
        Ok(())
    }

    /// [`EventLog::each_history`]'s lines, sorted by name then seq.
    // Only tests need every entry (or line) at once.
    #[cfg(test)]
    pub(crate) fn history(
        &self,
        job: JobId,
        text: &str,
        exact: bool,
    ) -> Result<Vec<(String, u64, HistoryEntry)>, EngineError> {
        let mut lines = Vec::new();
        self.each_history(job, text, exact, |name, seq, entry| {
            lines.push((name.to_string(), seq, entry.clone()))
        })?;
        lines.sort_by(|a, b| (&a.0, a.1).cmp(&(&b.0, b.1)));
        Ok(lines)
    }

    /// History lines of one job, of the blob `text` (`exact`) or of every
    /// name starting with `text`, handed to `visit` one at a time in no
    /// overall order (a folder of a million blobs is ~250 MB of lines).
    /// Lines with keys of their own and lines in runs are merged.
    pub fn each_history(
        &self,
        job: JobId,
        text: &str,
        exact: bool,
        mut visit: impl FnMut(&str, u64, &HistoryEntry),
    ) -> Result<(), EngineError> {
        let prefix = if exact {
            keys::history_exact(job, text)
        } else {
            keys::history_prefix(job, text)
        };
        self.each_keyed_line(&prefix, |name, seq, entry| visit(name, seq, &entry))?;
        let wanted = |name: &str| {
            if exact {
                name == text
            } else {
                name.starts_with(text)
            }
        };
        self.each_run(job, text, |items| {
            for it in items {
                if wanted(&it.name) {
                    visit(&it.name, it.seq, &it.entry);
                }
            }
            // Runs are in name order: once one ends past `text` and
            // everything under it, later runs are too.
            items
                .last()
                .is_some_and(|last| last.name.as_str() <= text || wanted(&last.name))
        })
    }

    /// Raw keys and values under a prefix. Only for tests.
    #[cfg(test)]
    pub(crate) fn scan_raw_for_tests(&self, prefix: &[u8]) -> Vec<(Vec<u8>, Vec<u8>)> {
        self.tree()
            .scan_prefix(prefix)
            .filter_map(Result::ok)
            .map(|(k, v)| (k.to_vec(), v.to_vec()))
            .collect()
    }

    /// Overwrites a raw key. Only for tests that corrupt a projection on purpose.
    #[doc(hidden)]
    pub fn put_raw_for_tests(&self, key: &[u8], value: &[u8]) -> Result<(), EngineError> {
        self.inner.runs.clear();
        self.tree()
            .insert(key, value)
            .map_err(|e| self.corrupt(e))?;
        self.tree().flush().map_err(|e| self.corrupt(e))?;
        Ok(())
    }

    /// Reads a raw key. Only for tests that corrupt a projection on purpose.
    #[doc(hidden)]
    pub fn get_raw_for_tests(&self, key: &[u8]) -> Result<Option<Vec<u8>>, EngineError> {
        Ok(self
            .tree()
            .get(key)
            .map_err(|e| self.corrupt(e))?
            .map(|v| v.to_vec()))
    }

    /// Removes a raw key. Only for tests that corrupt a projection on purpose.
    #[doc(hidden)]
    pub fn remove_raw_for_tests(&self, key: &[u8]) -> Result<(), EngineError> {
        self.inner.runs.clear();
        self.tree().remove(key).map_err(|e| self.corrupt(e))?;
        self.tree().flush().map_err(|e| self.corrupt(e))?;
        Ok(())
    }

    /// Bytes sled holds on disk for this log (its files), for prune reports.
    pub fn size_on_disk(&self) -> Result<u64, EngineError> {
        self.tree().size_on_disk().map_err(|e| self.corrupt(e))
    }

    /// Stops the writer after it has drained its queue.
    pub fn close(&self) {
        self.inner.writer.shutdown();
    }
}

/// What `compact` did: bytes of sled's files before and after, keys copied.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct CompactStats {
    pub before: u64,
    pub after: u64,
    pub keys: u64,
}

/// Bytes of keys and values `compact` copies per batch.
const COMPACT_STEP: usize = 1 << 20;

/// Marks a finished copy inside `db.compact`: only then may it replace `db`.
const COMPACTED: &str = "ferry-compacted";

fn sibling(path: &Path, ext: &str) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(ext);
    PathBuf::from(name)
}

/// Rewrites the closed log at `path` into a fresh sled database holding only
/// the live keys, then swaps it in. sled reuses the space of removed keys
/// for new writes but does not give it back to the file system; after a
/// prune, this does. The caller holds the state dir's lock and no
/// `EventLog` on `path` is open. A crash at any point leaves the old log
/// or the finished copy, never neither (`finish_compaction` at open).
pub fn compact(path: &Path) -> Result<CompactStats, EngineError> {
    let io = |e: std::io::Error| EngineError::StateIo {
        path: path.to_path_buf(),
        cause: e,
    };
    let sled_err = |e: sled::Error| EngineError::corrupt(path, e);
    finish_compaction(path).map_err(io)?;
    let fresh = sibling(path, ".compact");
    let _ = std::fs::remove_dir_all(&fresh);
    let mut stats = CompactStats::default();
    {
        let old = open_sled(path)?;
        stats.before = old.size_on_disk().map_err(sled_err)?;
        let new = open_sled(&fresh)?;
        let mut batch = sled::Batch::default();
        let mut n = 0usize;
        for kv in scan::touched(&old, old.iter()) {
            let (k, v) = kv.map_err(sled_err)?;
            n += k.len() + v.len();
            batch.insert(k, v);
            stats.keys += 1;
            // Flushed in steps: sled keeps dirty pages in memory, and
            // rewrites a node for each batch that touches it. Steps of 1 MiB
            // (1M-blob log: 180 MB peak, 228 MiB written) against 16,384
            // keys (up to 96 MiB: 400 MB, 358 MiB, bigger than the log).
            if n >= COMPACT_STEP {
                new.apply_batch(std::mem::take(&mut batch))
                    .map_err(sled_err)?;
                new.flush().map_err(sled_err)?;
                n = 0;
            }
        }
        new.apply_batch(batch).map_err(sled_err)?;
        new.flush().map_err(sled_err)?;
        // Counted through `touched`: sled's own `len` walks the tree with a
        // plain scan, which held 89 MB of pages for a 1M-blob log.
        let mut copied = 0u64;
        for kv in scan::touched(&new, new.iter()) {
            kv.map_err(sled_err)?;
            copied += 1;
        }
        if copied != stats.keys {
            return Err(EngineError::corrupt(
                &fresh,
                "the compacted copy does not hold every key; the log was left as it was",
            ));
        }
        stats.after = new.size_on_disk().map_err(sled_err)?;
    }
    let marker = fresh.join(COMPACTED);
    std::fs::File::create(&marker)
        .and_then(|f| f.sync_all())
        .map_err(io)?;
    swap_in(path).map_err(io)?;
    Ok(stats)
}

/// Moves a finished compacted copy into place: `db` -> `db.old`,
/// `db.compact` -> `db`, then removes `db.old`.
fn swap_in(path: &Path) -> std::io::Result<()> {
    let (fresh, old) = (sibling(path, ".compact"), sibling(path, ".old"));
    if path.exists() {
        std::fs::rename(path, &old)?;
    }
    std::fs::rename(&fresh, path)?;
    std::fs::remove_file(path.join(COMPACTED))?;
    if let Some(dir) = path.parent() {
        std::fs::File::open(dir)?.sync_all()?;
    }
    match std::fs::remove_dir_all(&old) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

/// Completes or discards a compaction a crash cut short: a finished copy
/// (marked) replaces the log; an unfinished one is removed; a left-over
/// old log is removed once the new one is in place.
fn finish_compaction(path: &Path) -> std::io::Result<()> {
    let (fresh, old) = (sibling(path, ".compact"), sibling(path, ".old"));
    if fresh.join(COMPACTED).exists() {
        return swap_in(path);
    }
    if fresh.exists() {
        std::fs::remove_dir_all(&fresh)?;
    }
    if old.exists() && path.exists() {
        std::fs::remove_dir_all(&old)?;
    }
    Ok(())
}

fn writer_gone() -> EngineError {
    EngineError::LogWrite("the log writer thread stopped".into())
}

/// How long a log closed a moment ago in this process may stay locked.
const RELOCK_WAIT: Duration = Duration::from_secs(5);

/// Opens sled's database at `path`. sled's I/O threads finish the writes
/// they were handed, holding the file and its lock, after the last handle
/// is dropped; so reopening a log this process just closed (`prune
/// --compact`) can find it locked for a moment, and is retried. Another
/// process never gets this far: the state dir's own lock comes first.
fn open_sled(path: &Path) -> Result<sled::Db, EngineError> {
    remove_unfinished_snapshots(path)?;
    let deadline = Instant::now() + RELOCK_WAIT;
    loop {
        // sled caches up to 1 GiB of pages by default; the log is written
        // once and read in scans, so a small cache keeps memory flat.
        match sled::Config::new()
            .path(path)
            .cache_capacity(CACHE_BYTES)
            .open()
        {
            Err(sled::Error::Io(e))
                if e.to_string().starts_with("could not acquire lock")
                    && Instant::now() < deadline =>
            {
                std::thread::sleep(Duration::from_millis(10));
            }
            opened => return opened.map_err(|e| open_error(path, e)),
        }
    }
}

/// Removes snapshot files sled did not finish writing. sled 0.34 writes a
/// snapshot to `snap.LSN.generating`, then renames it; on open it reads the
/// highest-named `snap.*` file, `.generating` ones included. A disk that
/// filled (or a crash) mid-write left one, empty or cut short, and every
/// later open failed as "corrupted data": the whole log lost to a full
/// disk. Never half of a rename: the finished snapshot or the log itself
/// is what sled recovers from, and it writes a new one.
fn remove_unfinished_snapshots(path: &Path) -> Result<(), EngineError> {
    let entries = match std::fs::read_dir(path) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(open_error(path, sled::Error::Io(e))),
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if name.starts_with("snap.") && name.ends_with(".generating") {
            tracing::warn!(file = %name, "removing a snapshot sled did not finish writing");
            std::fs::remove_file(entry.path()).map_err(|e| open_error(path, sled::Error::Io(e)))?;
        }
    }
    Ok(())
}

fn open_error(path: &Path, e: sled::Error) -> EngineError {
    use std::io::ErrorKind as K;
    match e {
        // Past the wait: a process that gave up the state dir's lock is
        // still closing its log (a daemon stopping after its jobs). In use,
        // not corrupt: restoring a backup is the wrong advice.
        sled::Error::Io(io) if io.to_string().starts_with("could not acquire lock") => {
            EngineError::StateLocked {
                path: path.parent().unwrap_or(path).to_path_buf(),
                owner: "a process still closing its log".into(),
            }
        }
        sled::Error::Io(io) => {
            // sled may hand the OS error wrapped (its text the Debug form):
            // the plain one has the kind, and reads better.
            let io = match writer::os_code(&io) {
                Some(code) => std::io::Error::from_raw_os_error(code),
                None => io,
            };
            // The disk, not the log, is the problem: restoring a backup
            // (what "corrupt" advises) would not help.
            if matches!(
                io.kind(),
                K::PermissionDenied | K::StorageFull | K::QuotaExceeded | K::ReadOnlyFilesystem
            ) {
                EngineError::StateIo {
                    path: path.to_path_buf(),
                    cause: io,
                }
            } else {
                EngineError::corrupt(path, sled::Error::Io(io))
            }
        }
        // sled's Display of `Corruption` ends in " backtrace ()": noise.
        sled::Error::Corruption { at, .. } => EngineError::corrupt(
            path,
            match at {
                Some(at) => format!("sled found corrupted data at {at}"),
                None => "sled found corrupted data".to_string(),
            },
        ),
        other => EngineError::corrupt(path, other),
    }
}

/// Decodes one exported record (`serde_json` of an [`EventRecord`]),
/// upcasting an older schema as stored chunks are.
pub fn decode_json_record(value: serde_json::Value) -> Result<EventRecord, String> {
    upcast::decode_json_record(value)
}

/// Decodes a stored event chunk (upcasting old records), for fixtures.
#[cfg(test)]
pub(crate) fn decode_chunk_for_tests(bytes: &[u8]) -> Vec<EventRecord> {
    upcast::decode_chunk(bytes).unwrap()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_log_this_process_still_holds_is_opened_once_let_go() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db");
        let held = open_sled(&path).unwrap();
        let letting_go = std::thread::spawn(move || {
            // Real threads and a real file lock: as sled's I/O threads
            // hold a log just closed.
            std::thread::sleep(Duration::from_millis(200));
            drop(held);
        });
        let db = open_sled(&path).expect("opened once the other handle is gone");
        assert!(db.was_recovered());
        letting_go.join().unwrap();
    }

    #[test]
    fn a_log_locked_for_good_is_refused_after_the_wait() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db");
        let _held = open_sled(&path).unwrap();
        let started = Instant::now();
        let err = open_sled(&path).expect_err("refused");
        assert!(started.elapsed() >= RELOCK_WAIT);
        assert!(matches!(err, EngineError::StateLocked { .. }), "{err}");
        assert!(err.to_string().contains("in use"), "{err}");
    }
}
