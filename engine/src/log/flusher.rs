//! The flusher thread: makes the writer's applied batches durable while the
//! writer stages the next ones. A flush on a disk busy with the copies took
//! up to ~40% of the writer's busy time, and the writer could take no
//! outcome meanwhile. Acknowledgements wait here for a flush that started
//! after their batch was applied, so an acknowledged event is as durable as
//! before; sled recovers a prefix of its applied batches, so a crash still
//! leaves a gap-free prefix of each job's log.

use std::fs::File;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::Instant;

use super::writer::{describe, note_failure, Ack, Chunks, WriterStats};
use crate::error::EngineError;

/// Events applied and not yet flushed past which the writer waits for the
/// flusher: sled cannot evict dirty pages, so a writer running far ahead of
/// a slow disk would grow memory. Two flushes' worth lets the writer fill
/// the next while one is written (the writer alone used to stop at one).
pub(super) const MAX_UNFLUSHED: u64 = 2 * super::writer::FLUSH_EVENTS;

pub(super) struct Flusher {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

struct Shared {
    queue: Mutex<Queue>,
    /// Wakes the flusher (a request or stop) and the writer (a flush done).
    changed: Condvar,
}

impl Shared {
    // A panic while holding the lock leaves a consistent queue (plain
    // fields), so a poisoned lock is still usable.
    fn lock(&self) -> MutexGuard<'_, Queue> {
        self.queue.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn wait<'a>(&self, q: MutexGuard<'a, Queue>) -> MutexGuard<'a, Queue> {
        self.changed.wait(q).unwrap_or_else(|p| p.into_inner())
    }
}

#[derive(Default)]
struct Queue {
    /// Acknowledgements of applied batches, sent after the next flush.
    acks: Vec<(Ack, u64)>,
    /// One of those batches holds a job transition: fsync the file too.
    transition: bool,
    /// A flush is wanted (periodic ones come without acknowledgements).
    requested: bool,
    /// Events applied and not covered by a finished flush.
    unflushed: u64,
    /// Records of applied batches, freed by this thread: the writer is
    /// the one thread every outcome passes through. Bounded like
    /// `unflushed`: a flush is asked for every `FLUSH_EVENTS` events.
    garbage: Vec<Chunks>,
    stop: bool,
}

/// What the flusher works with, moved into its thread.
pub(super) struct FlushTarget {
    pub(super) db: sled::Db,
    pub(super) path: PathBuf,
    /// sled's data file (shared with the writer, which fsyncs imports and
    /// prunes): job transitions are fsynced through it.
    pub(super) db_file: Option<Arc<File>>,
    /// The writer's first error, shared: set here when a flush fails, so
    /// every later append fails.
    pub(super) failed: Arc<Mutex<Option<String>>>,
    pub(super) stats: Arc<WriterStats>,
}

impl Flusher {
    pub(super) fn start(target: FlushTarget) -> Result<Self, EngineError> {
        let shared = Arc::new(Shared {
            queue: Mutex::new(Queue::default()),
            changed: Condvar::new(),
        });
        let theirs = shared.clone();
        let thread = std::thread::Builder::new()
            .name("ferry-log-flush".into())
            .spawn(move || run(&theirs, target))
            .map_err(|e| EngineError::LogWrite(format!("cannot start the log flusher: {e}")))?;
        Ok(Flusher {
            shared,
            thread: Some(thread),
        })
    }

    /// Waits while too much is applied and not yet flushed (asking for a
    /// flush meanwhile); returns the time it waited.
    pub(super) fn wait_room(&self) -> std::time::Duration {
        let waited = Instant::now();
        let mut q = self.shared.lock();
        while q.unflushed >= MAX_UNFLUSHED && !q.stop {
            q.requested = true;
            self.shared.changed.notify_all();
            q = self.shared.wait(q);
        }
        waited.elapsed()
    }

    /// Hands over a batch just applied: its events count as unflushed, and
    /// with `flush` (or any acknowledgement) a flush is asked for. The
    /// acknowledgements may go out before this returns, so the writer's
    /// counters must already include the batch.
    pub(super) fn applied(
        &self,
        events: u64,
        acks: Vec<(Ack, u64)>,
        transition: bool,
        flush: bool,
        records: Chunks,
    ) {
        let mut q = self.shared.lock();
        if !records.is_empty() {
            q.garbage.push(records);
        }
        q.unflushed += events;
        q.transition |= transition;
        q.requested |= flush || !acks.is_empty();
        q.acks.extend(acks);
        if q.requested {
            self.shared.changed.notify_all();
        }
    }

    /// Flushes what is left, acknowledges it and ends the thread.
    pub(super) fn stop(&mut self) {
        {
            let mut q = self.shared.lock();
            q.stop = true;
            self.shared.changed.notify_all();
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Flusher {
    fn drop(&mut self) {
        self.stop();
    }
}

fn run(shared: &Shared, target: FlushTarget) {
    loop {
        let (acks, transition, events, stop, garbage) = {
            let mut q = shared.lock();
            while !q.requested && !q.stop {
                q = shared.wait(q);
            }
            q.requested = false;
            let transition = std::mem::take(&mut q.transition);
            let garbage = std::mem::take(&mut q.garbage);
            (
                std::mem::take(&mut q.acks),
                transition,
                q.unflushed,
                q.stop,
                garbage,
            )
        };
        let result = flush(&target, transition);
        {
            let mut q = shared.lock();
            q.unflushed = q.unflushed.saturating_sub(events);
            shared.changed.notify_all();
        }
        match result {
            Ok(()) => {
                for (ack, seq) in acks {
                    let _ = ack.send(Ok(seq));
                }
            }
            Err(msg) => {
                tracing::debug!(error = %msg, "event log flush failed");
                note_failure(&target.failed, &msg);
                for (ack, _) in acks {
                    let _ = ack.send(Err(EngineError::LogWrite(msg.clone())));
                }
            }
        }
        drop(garbage);
        if stop {
            let q = shared.lock();
            // Anything handed over while this flush ran is flushed too.
            if q.acks.is_empty() && !q.requested {
                return;
            }
        }
    }
}

/// One flush, and an fsync when a batch held a job transition.
fn flush(target: &FlushTarget, transition: bool) -> Result<(), String> {
    if let Ok(Some(msg)) = target.failed.lock().map(|g| g.clone()) {
        return Err(msg);
    }
    let started = Instant::now();
    let result = flush_durably(&target.db, target.db_file.as_deref(), transition);
    // sled drops a written I/O buffer (512 KiB) through crossbeam's epoch
    // collector, deferred on the thread that rolled it: here, that thread
    // defers little else, so its bag of 64 filled with buffers (+30 MiB at
    // 1M blobs) until this hands them over to be freed.
    crossbeam_epoch::pin().flush();
    target
        .stats
        .flush_ns
        .fetch_add(started.elapsed().as_nanos() as u64, Ordering::Relaxed);
    target.stats.flushes.fetch_add(1, Ordering::Relaxed);
    result.map_err(|e| format!("{} ({})", describe(&e), target.path.display()))
}

/// sled's `flush()` (sync_file_range: it survives a killed process, not a
/// power cut), then with `fsync` an fsync of its data file.
pub(super) fn flush_durably(db: &sled::Db, file: Option<&File>, fsync: bool) -> sled::Result<()> {
    db.flush()?;
    match file {
        Some(f) if fsync => f.sync_all().map_err(sled::Error::Io),
        _ => Ok(()),
    }
}
