//! The single writer thread. It alone assigns sequence numbers and writes, so
//! a crash always leaves a gap-free prefix of each job's log (concurrent
//! inserts left holes after kill -9, see the design's measured.md). Each batch
//! holds the events, their checkpoint entries and the touched job summaries,
//! so projections and events commit together without transactions. After
//! `apply_batch` it hands the batch's acknowledgements to the flusher thread
//! (`log::flusher`), which calls the blocking `flush()` (never
//! `flush_async`, which hangs under concurrency in sled 0.34.7) and then
//! acknowledges, while this thread goes on with the next batch.
//!
//! The history index line of a blob event goes into the same batch as the
//! event, so the index cannot drift from the log. Imports (whole jobs with
//! their own seqs and times) and prunes (rewriting a finished job's chunks)
//! go through this thread too, each as one batch of its own.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Waker};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, oneshot};

use super::flusher::{flush_durably, FlushTarget, Flusher};
use super::runs::{self, StoredItem};
use super::spans::{Gap, Spans};
use super::thread::{self, RunQueueClock};
use super::{keys, PruneStats};

#[path = "import.rs"]
pub(super) mod import;
use crate::error::EngineError;
use crate::event::{Event, EventRecord, SCHEMA_VERSION};
use crate::job::JobId;
use crate::projection::{history, BlobState, JobState, JobSummary};
use import::ImportPart;

/// Most commands folded into one sled batch (and one flush).
const MAX_BATCH: usize = 1024;
/// Most events in one chunk (a copy's compact record is ~125 bytes, so 16
/// fit in `VALUE_BYTES` at once; 32 measured the same), and most bytes in
/// one chunk or run value (a lone record may be larger). Why: sled stores a node whose record is over
/// a quarter of its 512 KiB segment as a blob file and charges only the
/// pointer to its page cache, so such nodes are never evicted: with whole
/// writer batches as chunks (~60 KB) and runs of 512, a 1M-blob no-op run
/// peaked at 176 MiB RSS and kept 214 MB in blob files. A leaf holds at most
/// 17 values, so values of a few KiB keep every node inline and counted
/// (45 MiB, and 20-40% less writer CPU: no blob file per node rewrite).
const CHUNK_EVENTS: usize = 16;
pub(super) const VALUE_BYTES: usize = 6 << 10;
/// Commands waiting for the writer; a full queue slows producers down.
const QUEUE: usize = 8192;
/// A batch smaller than this with nobody waiting for it lingers up to
/// `COALESCE_MAX` to gather more: a sled batch has a fixed cost of ~0.4 ms
/// of writer CPU (sled rolls its I/O buffer twice per batch and often
/// starts a new 512 KiB segment). Copies onto a busy disk send ~20 outcomes
/// per 2 ms; lingering 2 ms made 500-600 batches of 10k copies and 0.19-0.27
/// s of writer CPU, 20 ms ~150 batches and 0.06 s. It parks rather than
/// polls (each wake-up cost ~0.1 ms of CPU on this VM), and a sender that
/// waits for its command unparks it.
const COALESCE_BELOW: usize = 256;
const COALESCE_MAX: Duration = Duration::from_millis(20);
/// Longest a batch without acknowledgements waits for a flush to be asked
/// for. Blob events
/// need no durability promise (a lost `BlobCopied` only means a re-copy on
/// replay), and a flush per batch made the writer the bottleneck on local
/// small files (flush is I/O that competes with the copies themselves).
const FLUSH_INTERVAL: Duration = Duration::from_millis(100);
/// Events after which a flush is due anyway: sled cannot evict dirty pages,
/// so a fast burst (a no-op run logging skips) would otherwise grow memory.
pub(super) const FLUSH_EVENTS: u64 = 8192;

pub(super) enum Cmd {
    Append {
        job: JobId,
        event: Event,
        ack: Option<oneshot::Sender<Result<u64, EngineError>>>,
        /// The blob's place among the attempt's listed blobs, when known: a
        /// run stops where the next place is missing, so the missing
        /// outcome (still being copied) finds a gap when it arrives.
        place: Option<u64>,
    },
    Sync(oneshot::Sender<Result<u64, EngineError>>),
    /// Part of a job from an export: records keep their seq and time
    /// (already upcast to the current schema). See `import`.
    Import {
        job: JobId,
        records: Vec<EventRecord>,
        part: ImportPart,
        ack: oneshot::Sender<Result<u64, EngineError>>,
    },
    /// Removes a job whose import was started and will not be finished.
    AbortImport {
        job: JobId,
        ack: oneshot::Sender<Result<u64, EngineError>>,
    },
    /// Removes a finished job's blob events and checkpoint entries (or, with
    /// `dry_run`, only counts them).
    Prune {
        job: JobId,
        dry_run: bool,
        by: String,
        ack: oneshot::Sender<Result<PruneStats, EngineError>>,
    },
    Shutdown,
}

/// Counters of the writer thread, for benchmarks and `--stats`.
#[derive(Debug, Default)]
pub struct WriterStats {
    pub events: AtomicU64,
    pub batches: AtomicU64,
    /// Time spent encoding and applying batches (not waiting for work).
    pub busy_ns: AtomicU64,
    /// Time the flusher thread spent in sled's `flush()` (and fsyncs): not
    /// part of `busy_ns`, the writer goes on meanwhile.
    pub flush_ns: AtomicU64,
    /// Flushes the flusher thread finished.
    pub flushes: AtomicU64,
    /// Part of `busy_ns` the writer waited for the flusher, with too much
    /// applied and not yet flushed.
    pub flush_wait_ns: AtomicU64,
    /// CPU time of the writer thread: `busy_ns` also counts time it waited
    /// for a core while copy threads ran.
    pub cpu_ns: AtomicU64,
    /// Part of `busy_ns` the writer was runnable but waiting for a core
    /// (0 where the kernel does not report it).
    pub wait_ns: AtomicU64,
    /// Copies and skips that got keys of their own instead of a place in a
    /// run (two sled keys each: the main per-blob cost when it is high).
    pub keyed: AtomicU64,
    /// Sends that found the writer's queue full, and the time their senders
    /// (copy workers, the planner) waited: whether the log held the copies
    /// up, which the writer's own busy share does not say.
    pub full_queue_waits: AtomicU64,
    pub full_queue_wait_ns: AtomicU64,
    /// Jobs whose summary and next seq the writer holds after its last
    /// batch: those with an attempt under way (the rest are read back when
    /// they next get an event), so a daemon's memory does not grow with
    /// the jobs it has run.
    pub cached_jobs: AtomicU64,
}

impl WriterStats {
    fn note_full_queue(&self, since: Instant) {
        self.full_queue_waits.fetch_add(1, Ordering::Relaxed);
        self.full_queue_wait_ns
            .fetch_add(since.elapsed().as_nanos() as u64, Ordering::Relaxed);
    }
}

pub(super) struct Writer {
    tx: mpsc::Sender<Cmd>,
    thread: Mutex<Option<JoinHandle<()>>>,
    /// The writer thread, unparked by senders that wait for their command
    /// (it may be lingering to gather a batch).
    waker: std::thread::Thread,
    /// First write error; once set every append fails, so producers stop
    /// instead of copying blobs whose outcome cannot be recorded.
    failed: Arc<Mutex<Option<String>>>,
    stats: Arc<WriterStats>,
}

impl Writer {
    pub(super) fn start(db: sled::Db, path: PathBuf) -> Result<Self, EngineError> {
        let mark_index = prepare_index(&db).map_err(|e| EngineError::corrupt(&path, e))?;
        import::abandon(&db).map_err(|e| EngineError::corrupt(&path, e))?;
        super::open_jobs::prepare(&db).map_err(|e| EngineError::corrupt(&path, e))?;
        let (tx, rx) = mpsc::channel(QUEUE);
        let failed = Arc::new(Mutex::new(None));
        let stats = Arc::new(WriterStats::default());
        // sled keeps its data in `db` inside the directory.
        let db_file = std::fs::File::open(path.join("db")).ok().map(Arc::new);
        let flusher = Flusher::start(FlushTarget {
            db: db.clone(),
            path: path.clone(),
            db_file: db_file.clone(),
            failed: failed.clone(),
            stats: stats.clone(),
        })?;
        let state = WriterState {
            db,
            path: path.clone(),
            seqs: HashMap::new(),
            summaries: HashMap::new(),
            last_flush: Instant::now(),
            unflushed: 0,
            db_file,
            flusher,
            mark_index,
            pending: Vec::new(),
            spans: HashMap::new(),
            clock: RunQueueClock::none(),
            failed: failed.clone(),
            stats: stats.clone(),
        };
        let thread = std::thread::Builder::new()
            .name("ferry-log-writer".into())
            .spawn(move || state.run(rx))
            .map_err(|e| EngineError::LogWrite(format!("cannot start the log writer: {e}")))?;
        Ok(Writer {
            tx,
            waker: thread.thread().clone(),
            thread: Mutex::new(Some(thread)),
            failed,
            stats,
        })
    }

    fn check(&self) -> Result<(), EngineError> {
        match self.failed.lock().map(|g| g.clone()) {
            Ok(None) => Ok(()),
            Ok(Some(msg)) => Err(EngineError::LogWrite(msg)),
            Err(_) => Err(EngineError::LogWrite("log writer state poisoned".into())),
        }
    }

    pub(super) async fn send(&self, cmd: Cmd) -> Result<(), EngineError> {
        let awaited = cmd.is_awaited();
        if let Some(cmd) = self.try_send(cmd)? {
            let waiting = Instant::now();
            self.tx.send(cmd).await.map_err(|_| closed())?;
            self.stats.note_full_queue(waiting);
        }
        self.sent(awaited);
        Ok(())
    }

    pub(super) fn send_blocking(&self, cmd: Cmd) -> Result<(), EngineError> {
        let awaited = cmd.is_awaited();
        if let Some(cmd) = self.try_send(cmd)? {
            let waiting = Instant::now();
            self.tx.blocking_send(cmd).map_err(|_| closed())?;
            self.stats.note_full_queue(waiting);
        }
        self.sent(awaited);
        Ok(())
    }

    /// Queues `cmd` if there is room; gives it back when the queue is full.
    fn try_send(&self, cmd: Cmd) -> Result<Option<Cmd>, EngineError> {
        self.check()?;
        match self.tx.try_send(cmd) {
            Ok(()) => Ok(None),
            Err(mpsc::error::TrySendError::Closed(_)) => Err(closed()),
            Err(mpsc::error::TrySendError::Full(cmd)) => Ok(Some(cmd)),
        }
    }

    /// Cuts a lingering writer short when someone waits for the command.
    fn sent(&self, awaited: bool) {
        if awaited {
            self.waker.unpark();
        }
    }

    pub(super) fn stats(&self) -> &WriterStats {
        &self.stats
    }

    pub(super) fn shutdown(&self) {
        let handle = self.thread.lock().ok().and_then(|mut g| g.take());
        if let Some(handle) = handle {
            // try_send: we may be inside a runtime, where blocking_send panics.
            // If the queue is full the thread still drains and ends once the
            // last sender is dropped.
            if self.tx.try_send(Cmd::Shutdown).is_ok() {
                self.waker.unpark();
                let _ = handle.join();
            }
        }
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// Keeps the first write error: every later append fails with it.
pub(super) fn note_failure(failed: &Mutex<Option<String>>, msg: &str) {
    if let Ok(mut g) = failed.lock() {
        g.get_or_insert_with(|| msg.to_string());
    }
}

fn closed() -> EngineError {
    EngineError::LogWrite("the log writer thread stopped".into())
}

struct WriterState {
    db: sled::Db,
    path: PathBuf,
    /// Next sequence number per job, loaded from the log on first use.
    seqs: HashMap<JobId, u64>,
    /// Summaries of jobs written in this process, so each batch re-encodes
    /// them instead of reading them back.
    summaries: HashMap<JobId, JobSummary>,
    failed: Arc<Mutex<Option<String>>>,
    stats: Arc<WriterStats>,
    last_flush: Instant,
    /// Events applied since the last flush.
    unflushed: u64,
    /// sled's data file: imports and prunes are fsynced through it (the
    /// flusher fsyncs job transitions through the same handle).
    db_file: Option<Arc<std::fs::File>>,
    /// Flushes applied batches and sends their acknowledgements.
    flusher: Flusher,
    /// A new log: the index marker goes in with the first batch.
    mark_index: bool,
    /// This batch's copies and skips, written as runs when it is complete.
    pending: Vec<Pending>,
    /// Where each job's attempt has runs so far: an outcome joins a run
    /// only in a gap between them, so an attempt's runs never overlap.
    spans: HashMap<(JobId, u32), Spans>,
    /// This thread's time waiting for a core (opened by the thread itself).
    clock: RunQueueClock,
}

pub(super) type Ack = oneshot::Sender<Result<u64, EngineError>>;

/// A copy or skip of the batch being written, waiting to go into a run:
/// where its record is among the batch's chunks (`chunk`, `index`), so the
/// run is encoded from the record itself, without copies of its strings.
struct Pending {
    attempt: u32,
    place: Option<u64>,
    chunk: usize,
    index: usize,
}

/// A batch's records per job, in seq order: they become that job's chunks.
pub(super) type Chunks = Vec<(JobId, Vec<EventRecord>)>;

impl Cmd {
    /// Someone waits for this command to be written.
    fn is_awaited(&self) -> bool {
        !matches!(self, Cmd::Append { ack: None, .. })
    }
}

/// Gathers more commands for a small batch nobody waits for, until it is
/// large enough, someone waits (their sender unparks this thread), or
/// `max` has passed.
fn linger(rx: &mut mpsc::Receiver<Cmd>, cmds: &mut Vec<Cmd>, max: Duration) {
    let deadline = Instant::now() + max;
    let mut seen = 0;
    // Set once woken before the time with no awaited command to be found:
    // it is queued behind a slot a sender is still writing, which `drain`
    // does not wait for, and the unpark is spent. Look again soon, not at
    // the deadline. (Not on any non-empty queue: under load new commands
    // arrive all the time, and 1 ms naps would wake the writer 20 times as
    // often.)
    let mut behind_a_slot = false;
    loop {
        if cmds.len() >= COALESCE_BELOW || cmds[seen..].iter().any(Cmd::is_awaited) {
            return;
        }
        seen = cmds.len();
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return;
        }
        let nap = if behind_a_slot {
            left.min(BEHIND_A_SLOT)
        } else {
            left
        };
        let slept = Instant::now();
        std::thread::park_timeout(nap);
        behind_a_slot |= slept.elapsed() < nap;
        drain(rx, cmds);
    }
}

/// How soon a lingering writer looks again at commands it could not take
/// yet (queued behind a sender mid-send).
const BEHIND_A_SLOT: Duration = Duration::from_millis(1);

/// Takes what is in the queue now, up to `MAX_BATCH`, without waiting.
///
/// Not `try_recv`: when a sender has claimed a slot but not yet written it
/// (a copy thread preempted mid-send, common with 16 of them on 2 cores),
/// tokio's `try_recv` parks this thread until that sender runs again. That
/// was 2-28 ms of a 10k-file copy's writer time on tmpfs (`perf` of its
/// context switches: 17 of ~40 inside a batch were in `drain`), asleep
/// while counted busy. Polling
/// stops at such a slot instead; its command comes with the next batch.
fn drain(rx: &mut mpsc::Receiver<Cmd>, cmds: &mut Vec<Cmd>) {
    let room = MAX_BATCH.saturating_sub(cmds.len());
    if room > 0 {
        // Nothing wakes through this waker: the writer waits in
        // `blocking_recv` or `park_timeout`, whose wake-ups are their own.
        let mut cx = Context::from_waker(Waker::noop());
        let _ = rx.poll_recv_many(&mut cx, cmds, room);
    }
}

impl WriterState {
    fn run(mut self, mut rx: mpsc::Receiver<Cmd>) {
        self.clock = RunQueueClock::open();
        let mut cmds = Vec::with_capacity(MAX_BATCH);
        while let Some(first) = rx.blocking_recv() {
            cmds.push(first);
            drain(&mut rx, &mut cmds);
            linger(&mut rx, &mut cmds, COALESCE_MAX);
            let stop = self.write(&mut cmds);
            if stop {
                break;
            }
        }
        // The flusher acknowledges what it holds; then nothing sent stays
        // unflushed at exit.
        self.flusher.stop();
        let _ = self.db.flush();
    }

    /// Writes one batch; returns true on shutdown.
    fn write(&mut self, cmds: &mut Vec<Cmd>) -> bool {
        let started = Instant::now();
        let waited = self.clock.waited_ns();
        let mut batch = sled::Batch::default();
        let mut acks: Vec<(Ack, u64)> = Vec::new();
        // Per job, this batch's events: stored as chunks of several records,
        // since a sled key costs far more than its bytes (see docs/EVENTS.md).
        let mut chunks: Chunks = Vec::new();
        let mut events = 0u64;
        // Imports and prunes each write a batch of their own, after this one.
        let mut exclusive: Vec<Cmd> = Vec::new();
        let mut stop = false;
        let mut transition = false;
        // Jobs whose attempt ended in this batch: their spans are dropped
        // once its runs are staged (a daemon runs attempt after attempt).
        let mut ended: Vec<JobId> = Vec::new();
        // Jobs with a transition in this batch (submitted, started, ended,
        // paused, ...): their cached summary and seq are dropped once it is
        // applied. A job under way reloads them with its next outcome; a
        // finished or queued one holds no memory.
        let mut moved: Vec<JobId> = Vec::new();
        // A failed flush fails every later write, like a failed batch.
        let mut error: Option<String> = self.failed.lock().ok().and_then(|g| g.clone());
        let mut handover = None;
        for cmd in cmds.drain(..) {
            match cmd {
                Cmd::Shutdown => stop = true,
                Cmd::Sync(ack) => acks.push((ack, 0)),
                cmd @ (Cmd::Import { .. } | Cmd::AbortImport { .. } | Cmd::Prune { .. }) => {
                    exclusive.push(cmd)
                }
                Cmd::Append {
                    job,
                    event,
                    ack,
                    place,
                } => {
                    if event.is_transition() {
                        transition = true;
                        moved.push(job);
                    }
                    if matches!(
                        event,
                        Event::JobFinished { .. } | Event::JobInterrupted { .. }
                    ) {
                        ended.push(job);
                    }
                    if error.is_some() {
                        if let Some(ack) = ack {
                            acks.push((ack, 0));
                        }
                        continue;
                    }
                    match self.stage(&mut batch, &mut chunks, job, event, place) {
                        Ok(seq) => {
                            events += 1;
                            if let Some(ack) = ack {
                                acks.push((ack, seq));
                            }
                        }
                        Err(e) => error = Some(e),
                    }
                }
            }
        }
        if error.is_none() {
            if let Err(e) = self.stage_runs(&mut batch, &chunks) {
                error = Some(e);
            }
        }
        // A late outcome of an ended attempt reads its floor from the log.
        self.spans.retain(|(j, _), _| !ended.contains(j));
        if error.is_none() {
            for (job, recs) in &chunks {
                let Some(summary) = self.summaries.get(job) else {
                    continue;
                };
                if let Err(e) = put_chunks(&mut batch, *job, recs) {
                    error = Some(e);
                }
                match rmp_serde::to_vec_named(summary) {
                    Ok(bytes) => batch.insert(keys::summary(*job).as_slice(), bytes),
                    Err(e) => error = Some(format!("cannot encode a summary: {e}")),
                }
                if moved.contains(job) {
                    super::open_jobs::stage(&mut batch, *job, summary);
                }
            }
        }
        if error.is_none() {
            // Flush before any acknowledgement (job transitions, syncs) and
            // at least every FLUSH_INTERVAL; sled's own thread flushes an idle
            // tail within 500 ms.
            self.unflushed += events;
            let must_flush = !acks.is_empty()
                || stop
                || self.last_flush.elapsed() >= FLUSH_INTERVAL
                || self.unflushed >= FLUSH_EVENTS;
            if self.mark_index && events > 0 {
                batch.insert(keys::index_marker().as_slice(), INDEX_VERSION.as_slice());
            }
            match self.db.apply_batch(batch) {
                Ok(()) => {
                    self.mark_index &= events == 0;
                    for job in &moved {
                        self.summaries.remove(job);
                        self.seqs.remove(job);
                    }
                    self.stats
                        .cached_jobs
                        .store(self.summaries.len() as u64, Ordering::Relaxed);
                    let waited = self.flusher.wait_room();
                    self.stats
                        .flush_wait_ns
                        .fetch_add(waited.as_nanos() as u64, Ordering::Relaxed);
                    // The acknowledgements go out from the flusher, after
                    // a flush that covers this batch (handed over below,
                    // once the counters include it).
                    handover = Some((std::mem::take(&mut acks), must_flush));
                    if must_flush {
                        self.last_flush = Instant::now();
                        self.unflushed = 0;
                    }
                }
                Err(e) => error = Some(format!("{} ({})", describe(&e), self.path.display())),
            }
        }
        self.stats.cpu_ns.store(thread::cpu_ns(), Ordering::Relaxed);
        self.stats.wait_ns.fetch_add(
            self.clock.waited_ns().saturating_sub(waited),
            Ordering::Relaxed,
        );
        self.stats.events.fetch_add(events, Ordering::Relaxed);
        self.stats.batches.fetch_add(1, Ordering::Relaxed);
        self.stats
            .busy_ns
            .fetch_add(started.elapsed().as_nanos() as u64, Ordering::Relaxed);
        if let Some((acks, flush)) = handover {
            // The records go too, to be freed there: their names were
            // allocated on the copy threads, and freeing them here (into
            // those threads' malloc arenas, under their locks) took ~11% of
            // this thread's CPU.
            self.flusher
                .applied(events, acks, transition, flush, std::mem::take(&mut chunks));
        }
        match &error {
            None => {
                for (ack, seq) in acks {
                    let _ = ack.send(Ok(seq));
                }
            }
            Some(msg) => {
                // Not an error line of its own: every caller gets this as
                // `EngineError::LogWrite` and reports it (once).
                tracing::debug!(error = %msg, "event log write failed");
                note_failure(&self.failed, msg);
                // The caches may now be ahead of the disk.
                self.forget_all();
                for (ack, _) in acks {
                    let _ = ack.send(Err(EngineError::LogWrite(msg.clone())));
                }
            }
        }
        for cmd in exclusive {
            match cmd {
                Cmd::Import {
                    job,
                    records,
                    part,
                    ack,
                } => {
                    let _ = ack.send(self.guarded(|w| w.import(job, records, part)));
                }
                Cmd::AbortImport { job, ack } => {
                    let _ = ack.send(self.guarded(|w| w.abort_import(job)));
                }
                Cmd::Prune {
                    job,
                    dry_run,
                    by,
                    ack,
                } => {
                    let _ = ack.send(self.guarded(|w| w.prune(job, dry_run, by)));
                }
                _ => {}
            }
        }
        stop
    }

    /// Runs an import or prune unless an earlier write failed; a sled error
    /// in it fails every later append, like any write error.
    fn guarded<T>(
        &mut self,
        f: impl FnOnce(&mut Self) -> Result<T, Exclusive>,
    ) -> Result<T, EngineError> {
        if let Ok(Some(msg)) = self.failed.lock().map(|g| g.clone()) {
            return Err(EngineError::LogWrite(msg));
        }
        match f(self) {
            Ok(v) => Ok(v),
            Err(Exclusive::Refused(e)) => Err(e),
            Err(Exclusive::Write(msg)) => {
                let msg = format!("{msg} ({})", self.path.display());
                note_failure(&self.failed, &msg);
                self.forget_all();
                Err(EngineError::LogWrite(msg))
            }
        }
    }

    /// Drops a job's caches after a failed import, so nothing half-staged
    /// is taken for the disk's state.
    fn forget(&mut self, job: JobId, e: Exclusive) -> Exclusive {
        self.seqs.remove(&job);
        self.summaries.remove(&job);
        self.pending.clear();
        self.spans.retain(|(j, _), _| *j != job);
        e
    }

    /// Drops every cache after a failed write: they may be ahead of the disk.
    fn forget_all(&mut self) {
        self.seqs.clear();
        self.summaries.clear();
        self.pending.clear();
        self.spans.clear();
    }

    /// Records `JobPruned` (the counts the blob events folded into, which
    /// marks the summary pruned), then removes the job's blob events
    /// (rewriting its chunks with the job-level events, original seqs kept)
    /// and its checkpoint entries; the history lines stay.
    ///
    /// In steps of [`PRUNE_STEP`] keys, each flushed: one batch for a big
    /// job held every removal in sled's memory (615 MB at 100k blobs). The
    /// event goes first, so a job cut off mid-prune is already pruned
    /// (never replayed) and the next prune finishes it.
    fn prune(&mut self, job: JobId, dry_run: bool, by: String) -> Result<PruneStats, Exclusive> {
        let summary = self.summary(job).map_err(Exclusive::Write)?;
        if summary.spec.is_none() {
            return Err(Exclusive::Refused(EngineError::UnknownJob(job.to_string())));
        }
        if !matches!(
            summary.state,
            JobState::Succeeded
                | JobState::CompletedWithFailures
                | JobState::Failed
                | JobState::Cancelled
        ) {
            return Err(Exclusive::Refused(EngineError::WrongState {
                job: job.to_string(),
                why: format!("is {}; only finished jobs are pruned", summary.state),
            }));
        }
        let was_pruned = summary.pruned;
        if !dry_run && !was_pruned {
            // Recorded before anything goes: a prune cut short is already
            // pruned (never replayed), with its counts.
            let counts = Box::new(summary.pruned_counts());
            let mut batch = sled::Batch::default();
            let mut chunks: Chunks = Vec::new();
            self.stage(
                &mut batch,
                &mut chunks,
                job,
                Event::JobPruned { counts, by },
                None,
            )
            .map_err(|e| self.forget(job, Exclusive::Write(e)))?;
            for (job, recs) in &chunks {
                put_chunks(&mut batch, *job, recs)
                    .map_err(|e| self.forget(*job, Exclusive::Write(e)))?;
            }
            let summary = self.summary(job).map_err(Exclusive::Write)?;
            let bytes = rmp_serde::to_vec_named(&*summary)
                .map_err(|e| Exclusive::Write(format!("cannot encode a summary: {e}")))?;
            batch.insert(keys::summary(job).as_slice(), bytes);
            super::open_jobs::stage(&mut batch, job, summary);
            self.commit(batch)?;
        }
        // What the prune takes from the job's checkpoint: every blob it
        // holds, in runs (which stay as history) or keys of their own (which
        // go). A job already pruned before has only keys left to count.
        let in_runs = if was_pruned {
            Default::default()
        } else {
            self.run_names(job).map_err(Exclusive::Write)?
        };
        // The next seq must not move back if the log's last record goes.
        self.next_seq(job).map_err(Exclusive::Write)?;
        let mut stats = PruneStats::default();
        let mut batch = sled::Batch::default();
        let mut staged = 0usize;
        let write = |e: sled::Error| Exclusive::Write(describe(&e));
        let db = self.db.clone();
        for kv in super::scan::touched(&db, db.scan_prefix(keys::event_prefix(job))) {
            let (k, v) = kv.map_err(write)?;
            let recs = super::chunk::decode(&k, &v)
                .map_err(|e| Exclusive::Write(format!("undecodable event chunk: {e}")))?;
            let before = recs.len();
            let kept: Vec<EventRecord> = recs
                .into_iter()
                .filter(|r| BlobState::from_event(r).is_none())
                .collect();
            if kept.len() == before {
                continue;
            }
            stats.events += (before - kept.len()) as u64;
            batch.remove(&k);
            stats.bytes += (k.len() + v.len()) as u64;
            staged += before;
            if let Some(first) = kept.first() {
                let chunk = super::chunk::encode(&kept).map_err(Exclusive::Write)?;
                let key = keys::event(job, first.seq);
                stats.bytes = stats.bytes.saturating_sub((key.len() + chunk.len()) as u64);
                batch.insert(key.as_slice(), chunk);
            }
            if staged >= PRUNE_STEP {
                self.prune_step(&mut batch, dry_run)?;
                staged = 0;
            }
        }
        stats.entries = in_runs.len() as u64;
        for kv in super::scan::touched(&db, db.scan_prefix(keys::blob_prefix(job))) {
            let (k, v) = kv.map_err(write)?;
            if !in_runs.contains(&name_hash(&k[keys::blob_prefix(job).len()..])) {
                stats.entries += 1;
            }
            stats.bytes += (k.len() + v.len()) as u64;
            batch.remove(k);
            staged += 1;
            if staged >= PRUNE_STEP {
                self.prune_step(&mut batch, dry_run)?;
                staged = 0;
            }
        }
        self.prune_step(&mut batch, dry_run)?;
        Ok(stats)
    }

    /// The names in a job's runs, as hashes: a checkpoint's blobs counted
    /// once each, in 8 bytes apiece (a 1M-blob job's names are ~100 MB).
    fn run_names(&self, job: JobId) -> Result<std::collections::HashSet<u64>, String> {
        let mut names = std::collections::HashSet::new();
        for kv in super::scan::touched(&self.db, self.db.scan_prefix(keys::run_prefix(job))) {
            let (_, v) = kv.map_err(|e| describe(&e))?;
            for item in runs::decode(&v)? {
                names.insert(name_hash(item.name.as_bytes()));
            }
        }
        Ok(names)
    }

    /// Writes (or, dry, drops) one step of a prune.
    fn prune_step(&mut self, batch: &mut sled::Batch, dry_run: bool) -> Result<(), Exclusive> {
        let step = std::mem::take(batch);
        if dry_run {
            return Ok(());
        }
        self.commit(step)
    }

    /// Applies and durably flushes one batch of its own.
    fn commit(&mut self, batch: sled::Batch) -> Result<(), Exclusive> {
        let result = self
            .db
            .apply_batch(batch)
            .and_then(|_| flush_durably(&self.db, self.db_file.as_deref(), true));
        self.last_flush = Instant::now();
        self.unflushed = 0;
        result.map_err(|e| Exclusive::Write(describe(&e)))
    }

    /// Assigns the event its sequence number, adds its checkpoint entry to the
    /// batch and folds it into the job's summary. The event itself joins the
    /// job's chunk for this batch, written in `write`.
    fn stage(
        &mut self,
        batch: &mut sled::Batch,
        chunks: &mut Chunks,
        job: JobId,
        event: Event,
        place: Option<u64>,
    ) -> Result<u64, String> {
        let seq = self.next_seq(job)?;
        let rec = EventRecord {
            v: SCHEMA_VERSION,
            job,
            seq,
            at: chrono::Utc::now(),
            event,
        };
        self.stage_record(batch, chunks, rec, place)?;
        Ok(seq)
    }

    /// Stages a record that has its seq and time: its checkpoint entry and
    /// history lines go into the batch, it is folded into the summary and
    /// joins its job's chunk.
    fn stage_record(
        &mut self,
        batch: &mut sled::Batch,
        chunks: &mut Chunks,
        rec: EventRecord,
        place: Option<u64>,
    ) -> Result<(), String> {
        let job = rec.job;
        let summary = self.summary(job)?;
        summary.apply(&rec);
        let attempt = summary.attempts.last().map_or(0, |a| a.attempt);
        let chunk = match chunks.iter().position(|(j, _)| *j == job) {
            Some(c) => c,
            None => {
                chunks.push((job, Vec::new()));
                chunks.len() - 1
            }
        };
        if runs::eligible(&rec.event) {
            self.pending.push(Pending {
                attempt,
                place,
                chunk,
                index: chunks[chunk].1.len(),
            });
        } else if let (Some((name, entry)), Some((_, state))) =
            (history::line(attempt, &rec), BlobState::from_event(&rec))
        {
            put_keyed(batch, job, name, entry.encode()?, &state)?;
        }
        self.seqs.insert(job, rec.seq + 1);
        chunks[chunk].1.push(rec);
        Ok(())
    }

    /// Writes this batch's copies and skips: per job and attempt in name
    /// order, as runs of up to [`runs::RUN_MAX`] in the gaps between the
    /// attempt's runs so far (see `log::spans`), the rest (inside a run's
    /// range) one key each.
    fn stage_runs(&mut self, batch: &mut sled::Batch, chunks: &Chunks) -> Result<(), String> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let job_of = |p: &Pending| chunks[p.chunk].0;
        let record = |p: &Pending| &chunks[p.chunk].1[p.index];
        let name = |p: &Pending| record(p).event.blob_name().unwrap_or_default();
        // Taken and given back emptied, so its capacity is reused.
        let mut pending = std::mem::take(&mut self.pending);
        // In listing order, which is name order (every store lists sorted),
        // so most comparisons are of integers in `Pending` itself: comparing
        // names through the records took 13-18% of the writer's CPU. A chunk
        // is one job's, so it stands for the job. Outcomes without a place
        // come last, by name. Any order is correct: an outcome out of name
        // order only starts a new run, or takes keys of its own.
        pending.sort_unstable_by(|a, b| {
            (a.chunk, a.attempt, a.place.is_none(), a.place)
                .cmp(&(b.chunk, b.attempt, b.place.is_none(), b.place))
                .then_with(|| (name(a), record(a).seq).cmp(&(name(b), record(b).seq)))
        });
        let mut run: Vec<StoredItem<&str>> = Vec::new();
        let mut items = pending.drain(..).peekable();
        while let Some((job, attempt)) = items.peek().map(|p| (job_of(p), p.attempt)) {
            let mut spans = self.spans(job, attempt)?;
            // Exclusive upper bound of the gap the open run fills.
            let mut bound: Option<String> = None;
            let mut last_place: Option<u64> = None;
            while let Some(p) = items.next_if(|p| (job_of(p), p.attempt) == (job, attempt)) {
                let rec = record(&p);
                let (name, line) = history::stored_outcome(attempt, rec)?
                    .ok_or("a run item that is not a copy or skip")?;
                let next_listed = match (last_place, p.place) {
                    (Some(a), Some(b)) => a.checked_add(1) == Some(b),
                    _ => true,
                };
                last_place = p.place;
                let extends = run.len() < runs::RUN_MAX
                    && next_listed
                    && run.last().is_some_and(|last| name > last.name())
                    && bound.as_deref().is_none_or(|b| name < b);
                if !extends {
                    close_run(batch, job, attempt, &mut run, &mut spans)?;
                    match spans.gap(name) {
                        Gap::Taken => {
                            self.stats.keyed.fetch_add(1, Ordering::Relaxed);
                            if let Some((_, state)) = BlobState::from_event(rec) {
                                put_keyed(batch, job, name, line.encode()?, &state)?;
                            }
                            continue;
                        }
                        Gap::Free(b) => bound = b,
                    }
                }
                run.push(StoredItem::new(name, rec.seq, line));
            }
            close_run(batch, job, attempt, &mut run, &mut spans)?;
            self.spans.insert((job, attempt), spans);
        }
        drop(items);
        self.pending = pending;
        Ok(())
    }

    /// What the writer knows of where `job`'s `attempt` has runs: cached,
    /// else everything up to its greatest run name in the log (an attempt
    /// this process did not start, or an import).
    fn spans(&mut self, job: JobId, attempt: u32) -> Result<Spans, String> {
        if let Some(s) = self.spans.remove(&(job, attempt)) {
            return Ok(s);
        }
        let last = self
            .db
            .scan_prefix(keys::run_attempt_prefix(job, attempt))
            .next_back()
            .transpose()
            .map_err(|e| describe(&e))?;
        let floor = match last {
            Some((k, _)) => keys::parse_run(&k)
                .map(|(_, name)| Some(name.to_string()))
                .ok_or_else(|| "a malformed run key".to_string())?,
            None => None,
        };
        Ok(Spans::above(floor))
    }

    fn next_seq(&mut self, job: JobId) -> Result<u64, String> {
        if let Some(s) = self.seqs.get(&job) {
            return Ok(*s);
        }
        let last = self
            .db
            .scan_prefix(keys::event_prefix(job))
            .next_back()
            .transpose()
            .map_err(|e| e.to_string())?;
        let next = match last {
            Some((k, v)) => {
                let chunk = super::chunk::decode(&k, &v)
                    .map_err(|e| format!("undecodable event chunk: {e}"))?;
                chunk
                    .last()
                    .map(|r| r.seq + 1)
                    .ok_or("an empty event chunk")?
            }
            None => 0,
        };
        self.seqs.insert(job, next);
        Ok(next)
    }

    fn summary(&mut self, job: JobId) -> Result<&mut JobSummary, String> {
        if !self.summaries.contains_key(&job) {
            let loaded = match self.db.get(keys::summary(job)).map_err(|e| e.to_string())? {
                Some(v) => {
                    rmp_serde::from_slice(&v).map_err(|e| format!("undecodable summary: {e}"))?
                }
                None => JobSummary::new(job),
            };
            self.summaries.insert(job, loaded);
        }
        self.summaries
            .get_mut(&job)
            .ok_or_else(|| "summary cache".to_string())
    }
}

/// Value of the index marker: the version of the history index's layout.
const INDEX_VERSION: [u8; 1] = [1];
/// A blob name's hash, for counting names without holding them. Equal
/// hashes of two names (about one in 2^64 per pair) would undercount by one.
fn name_hash(name: &[u8]) -> u64 {
    use std::hash::{BuildHasher, BuildHasherDefault};
    BuildHasherDefault::<std::collections::hash_map::DefaultHasher>::default().hash_one(name)
}

/// Keys (events or checkpoint entries) removed per step of a prune.
const PRUNE_STEP: usize = 16_384;
/// Lines per batch while building the index of an older log.
const BACKFILL_BATCH: usize = 16_384;

/// Makes sure the history index covers the log before the writer starts.
/// Returns true for a new, empty log (the writer sets the marker with its
/// first batch). A log from before the index existed (events but no
/// marker) gets its lines built from its events here, once.
fn prepare_index(db: &sled::Db) -> Result<bool, String> {
    let err = |e: sled::Error| describe(&e);
    if db.contains_key(keys::index_marker()).map_err(err)? {
        return Ok(false);
    }
    if db.first().map_err(err)?.is_none() {
        return Ok(true);
    }
    let mut batch = sled::Batch::default();
    let mut pending = 0usize;
    for job in super::scan::job_ids(db) {
        let job = job?;
        if job == keys::INDEX {
            continue;
        }
        let mut history = history::History::default();
        for chunk in super::scan::touched(db, db.scan_prefix(keys::event_prefix(job))) {
            let (k, v) = chunk.map_err(err)?;
            for rec in
                super::chunk::decode(&k, &v).map_err(|e| format!("undecodable event chunk: {e}"))?
            {
                history.apply(&rec);
            }
        }
        for ((job, name, seq), entry) in history.lines {
            batch.insert(keys::history(job, &name, seq), entry.encode()?);
            pending += 1;
            if pending == BACKFILL_BATCH {
                db.apply_batch(std::mem::take(&mut batch)).map_err(err)?;
                pending = 0;
            }
        }
    }
    batch.insert(keys::index_marker().as_slice(), INDEX_VERSION.as_slice());
    db.apply_batch(batch).map_err(err)?;
    db.flush().map_err(err)?;
    Ok(false)
}

/// A blob outcome as keys of its own: its history line and checkpoint entry.
fn put_keyed(
    batch: &mut sled::Batch,
    job: JobId,
    name: &str,
    line: Vec<u8>,
    state: &BlobState,
) -> Result<(), String> {
    let checkpoint =
        rmp_serde::to_vec_named(state).map_err(|e| format!("cannot encode a checkpoint: {e}"))?;
    batch.insert(keys::history(job, name, state.seq), line);
    batch.insert(keys::blob(job, name), checkpoint);
    Ok(())
}

/// Adds a run (if any) to the batch under its greatest name, in parts of
/// at most [`VALUE_BYTES`] (any split keeps an attempt's runs disjoint and
/// ordered), records its range in `spans` and empties it.
fn close_run(
    batch: &mut sled::Batch,
    job: JobId,
    attempt: u32,
    run: &mut Vec<StoredItem<&str>>,
    spans: &mut Spans,
) -> Result<(), String> {
    let (Some(first), Some(last)) = (run.first(), run.last()) else {
        return Ok(());
    };
    spans.take(first.name().to_string(), last.name().to_string());
    put_split(
        run,
        &|items| runs::encode_stored(items),
        &mut |items, value| {
            if let Some(last) = items.last() {
                batch.insert(keys::run(job, attempt, last.name()), value);
            }
        },
    )?;
    run.clear();
    Ok(())
}

/// Adds a job's records of one batch as chunks of at most [`CHUNK_EVENTS`]
/// records and [`VALUE_BYTES`], each under its first record's seq.
fn put_chunks(batch: &mut sled::Batch, job: JobId, recs: &[EventRecord]) -> Result<(), String> {
    for part in recs.chunks(CHUNK_EVENTS) {
        put_split(part, &super::chunk::encode, &mut |part, value| {
            if let Some(first) = part.first() {
                batch.insert(keys::event(job, first.seq).as_slice(), value);
            }
        })?;
    }
    Ok(())
}

/// Hands `items` to `put` encoded, halved until each part is at most
/// [`VALUE_BYTES`] or one item. A full chunk or run of ordinary names fits
/// at once, so halving is rare (long names or messages) and costs an encode
/// per level.
fn put_split<T>(
    items: &[T],
    encode: &impl Fn(&[T]) -> Result<Vec<u8>, String>,
    put: &mut impl FnMut(&[T], Vec<u8>),
) -> Result<(), String> {
    if items.is_empty() {
        return Ok(());
    }
    let value = encode(items)?;
    if value.len() <= VALUE_BYTES || items.len() == 1 {
        put(items, value);
        return Ok(());
    }
    let (a, b) = items.split_at(items.len() / 2);
    put_split(a, encode, put)?;
    put_split(b, encode, put)
}

/// Why an import or prune did not happen: refused (nothing written, the
/// writer goes on) or a write error (every later append fails too).
enum Exclusive {
    Refused(EngineError),
    Write(String),
}

/// sled's error as one readable line. sled hands out copies of an I/O error
/// it met earlier whose text is the original's Debug form (`Os { code: 28,
/// kind: StorageFull, .. }`); those are described like the original.
pub(super) fn describe(e: &sled::Error) -> String {
    let sled::Error::Io(io) = e else {
        return e.to_string();
    };
    match os_code(io) {
        Some(code) => format!("IO error: {}", std::io::Error::from_raw_os_error(code)),
        None => format!("IO error: {io}"),
    }
}

/// The OS error code of an I/O error, also where sled wrapped one in an
/// error of its own whose text is the original's Debug form.
pub(super) fn os_code(io: &std::io::Error) -> Option<i32> {
    io.raw_os_error().or_else(|| {
        io.to_string()
            .strip_prefix("Os { code: ")
            .and_then(|rest| rest.split(',').next())
            .and_then(|c| c.parse().ok())
    })
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::Ordering;
    use std::time::{Duration, Instant};

    use tokio::sync::{mpsc, oneshot};

    use super::{Cmd, MAX_BATCH};

    use crate::event::{Event, SkipReason};
    use crate::job::JobId;
    use crate::log::EventLog;

    fn outcome(i: u64) -> Cmd {
        Cmd::Append {
            job: JobId::CONTROL,
            event: Event::BlobSkipped {
                name: format!("b{i}"),
                reason: SkipReason::NotNewer,
                src_etag: None,
                detail: None,
            },
            ack: None,
            place: Some(i),
        }
    }

    #[test]
    fn given_a_lingering_writer_when_a_command_someone_waits_for_arrives_then_it_stops_lingering() {
        let (tx, mut rx) = mpsc::channel(16);
        let mut cmds = vec![outcome(0)];
        let writer = std::thread::current();
        let sender = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(20));
            let (ack, answer) = oneshot::channel();
            tx.blocking_send(Cmd::Sync(ack)).unwrap();
            // What `Writer::send` does for a command someone waits for.
            writer.unpark();
            answer
        });
        let started = Instant::now();
        super::linger(&mut rx, &mut cmds, Duration::from_secs(60));
        assert!(started.elapsed() < Duration::from_secs(30), "lingered on");
        assert_eq!(cmds.len(), 2);
        assert!(cmds[1].is_awaited());
        drop(sender.join().unwrap());
    }

    fn places(cmds: &[Cmd]) -> Vec<u64> {
        cmds.iter()
            .map(|c| match c {
                Cmd::Append { place: Some(p), .. } => *p,
                _ => panic!("not an outcome"),
            })
            .collect()
    }

    #[test]
    fn given_more_queued_than_a_batch_holds_when_drained_then_a_batch_is_taken_in_order_and_the_rest_waits(
    ) {
        let total = MAX_BATCH as u64 + 10;
        let (tx, mut rx) = mpsc::channel(2 * MAX_BATCH);
        for i in 0..total {
            tx.try_send(outcome(i)).unwrap();
        }
        drop(tx);
        let mut cmds = vec![outcome(total)];
        super::drain(&mut rx, &mut cmds);
        let want: Vec<u64> = std::iter::once(total)
            .chain(0..MAX_BATCH as u64 - 1)
            .collect();
        assert_eq!(places(&cmds), want);
        let mut rest = Vec::new();
        super::drain(&mut rx, &mut rest);
        assert_eq!(
            places(&rest),
            (MAX_BATCH as u64 - 1..total).collect::<Vec<_>>()
        );
        // An empty, closed queue gives nothing and does not block.
        super::drain(&mut rx, &mut rest);
        assert_eq!(rest.len(), 11);
    }

    #[test]
    fn given_a_lingering_writer_when_only_outcomes_arrive_then_it_gathers_them_until_the_time_is_up(
    ) {
        let (tx, mut rx) = mpsc::channel(16);
        let mut cmds = vec![outcome(0)];
        let sender = std::thread::spawn(move || {
            for i in 1..4 {
                tx.blocking_send(outcome(i)).unwrap();
            }
        });
        sender.join().unwrap();
        let started = Instant::now();
        super::linger(&mut rx, &mut cmds, Duration::from_millis(50));
        assert!(started.elapsed() >= Duration::from_millis(50));
        assert_eq!(cmds.len(), 4);
    }

    #[test]
    fn given_producers_faster_than_the_writer_when_the_queue_fills_then_their_wait_is_counted_and_nothing_lost(
    ) {
        let dir = tempfile::tempdir().unwrap();
        let log = EventLog::open(dir.path()).unwrap();
        let job = JobId::new();
        let (threads, each) = (4u64, 50_000u64);
        // Sending costs a fraction of what writing costs, so producers that
        // do nothing else fill the 8,192-command queue.
        let producers: Vec<_> = (0..threads)
            .map(|t| {
                let log = log.clone();
                std::thread::spawn(move || {
                    for i in 0..each {
                        let place = t * each + i;
                        let event = Event::BlobSkipped {
                            name: format!("b{place:07}"),
                            reason: SkipReason::NotNewer,
                            src_etag: None,
                            detail: None,
                        };
                        log.append_outcome_blocking(job, event, place).unwrap();
                    }
                })
            })
            .collect();
        for p in producers {
            p.join().unwrap();
        }
        log.close();
        let stats = log.writer_stats();
        assert!(stats.full_queue_waits.load(Ordering::Relaxed) > 0);
        assert!(stats.full_queue_wait_ns.load(Ordering::Relaxed) > 0);
        drop(log);
        let log = EventLog::open(dir.path()).unwrap();
        assert_eq!(log.events(job).count() as u64, threads * each);
        log.close();
    }

    #[test]
    fn io_errors_read_the_same_however_sled_copied_them() {
        let original = sled::Error::Io(std::io::Error::from_raw_os_error(28));
        let copy = original.clone();
        assert_eq!(
            super::describe(&original),
            "IO error: No space left on device (os error 28)"
        );
        assert_eq!(super::describe(&copy), super::describe(&original));
    }
}
