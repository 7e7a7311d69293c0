//! The single writer thread. It alone assigns sequence numbers and writes, so
//! a crash always leaves a gap-free prefix of each job's log (concurrent
//! inserts left holes after kill -9, see the design's measured.md). Each batch
//! holds the events, their checkpoint entries and the touched job summaries,
//! so projections and events commit together without transactions. After
//! `apply_batch` it calls the blocking `flush()` (never `flush_async`, which
//! hangs under concurrency in sled 0.34.7), then acknowledges.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Instant;

use tokio::sync::{mpsc, oneshot};

use super::keys;
use crate::error::EngineError;
use crate::event::{Event, EventRecord, SCHEMA_VERSION};
use crate::job::JobId;
use crate::projection::{BlobState, JobSummary};

/// Most commands folded into one sled batch (and one flush).
const MAX_BATCH: usize = 1024;
/// Commands waiting for the writer; a full queue slows producers down.
const QUEUE: usize = 8192;

pub(super) enum Cmd {
    Append {
        job: JobId,
        event: Event,
        ack: Option<oneshot::Sender<Result<u64, EngineError>>>,
    },
    Sync(oneshot::Sender<Result<u64, EngineError>>),
    Shutdown,
}

/// Counters of the writer thread, for benchmarks and `--stats`.
#[derive(Debug, Default)]
pub struct WriterStats {
    pub events: AtomicU64,
    pub batches: AtomicU64,
    /// Time spent encoding, applying and flushing (not waiting for work).
    pub busy_ns: AtomicU64,
}

pub(super) struct Writer {
    tx: mpsc::Sender<Cmd>,
    thread: Mutex<Option<JoinHandle<()>>>,
    /// First write error; once set every append fails, so producers stop
    /// instead of copying blobs whose outcome cannot be recorded.
    failed: Arc<Mutex<Option<String>>>,
    stats: Arc<WriterStats>,
}

impl Writer {
    pub(super) fn start(db: sled::Db, path: PathBuf) -> Result<Self, EngineError> {
        let (tx, rx) = mpsc::channel(QUEUE);
        let failed = Arc::new(Mutex::new(None));
        let stats = Arc::new(WriterStats::default());
        let state = WriterState {
            db,
            path,
            seqs: HashMap::new(),
            summaries: HashMap::new(),
            failed: failed.clone(),
            stats: stats.clone(),
        };
        let thread = std::thread::Builder::new()
            .name("ferry-log-writer".into())
            .spawn(move || state.run(rx))
            .map_err(|e| EngineError::LogWrite(format!("cannot start the log writer: {e}")))?;
        Ok(Writer { tx, thread: Mutex::new(Some(thread)), failed, stats })
    }

    fn check(&self) -> Result<(), EngineError> {
        match self.failed.lock().map(|g| g.clone()) {
            Ok(None) => Ok(()),
            Ok(Some(msg)) => Err(EngineError::LogWrite(msg)),
            Err(_) => Err(EngineError::LogWrite("log writer state poisoned".into())),
        }
    }

    pub(super) async fn send(&self, cmd: Cmd) -> Result<(), EngineError> {
        self.check()?;
        self.tx.send(cmd).await.map_err(|_| closed())
    }

    pub(super) fn send_blocking(&self, cmd: Cmd) -> Result<(), EngineError> {
        self.check()?;
        self.tx.blocking_send(cmd).map_err(|_| closed())
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
}

type Ack = oneshot::Sender<Result<u64, EngineError>>;

impl WriterState {
    fn run(mut self, mut rx: mpsc::Receiver<Cmd>) {
        let mut cmds = Vec::with_capacity(MAX_BATCH);
        while let Some(first) = rx.blocking_recv() {
            cmds.push(first);
            while cmds.len() < MAX_BATCH {
                match rx.try_recv() {
                    Ok(c) => cmds.push(c),
                    Err(_) => break,
                }
            }
            let stop = self.write(&mut cmds);
            if stop {
                break;
            }
        }
        // Make sure nothing acknowledged-as-sent stays unflushed at exit.
        let _ = self.db.flush();
    }

    /// Writes one batch; returns true on shutdown.
    fn write(&mut self, cmds: &mut Vec<Cmd>) -> bool {
        let started = Instant::now();
        let mut batch = sled::Batch::default();
        let mut acks: Vec<(Ack, u64)> = Vec::new();
        let mut touched: Vec<JobId> = Vec::new();
        let mut events = 0u64;
        let mut stop = false;
        let mut error: Option<String> = None;
        for cmd in cmds.drain(..) {
            match cmd {
                Cmd::Shutdown => stop = true,
                Cmd::Sync(ack) => acks.push((ack, 0)),
                Cmd::Append { job, event, ack } => {
                    if error.is_some() {
                        if let Some(ack) = ack {
                            acks.push((ack, 0));
                        }
                        continue;
                    }
                    match self.stage(&mut batch, job, event) {
                        Ok(seq) => {
                            events += 1;
                            if !touched.contains(&job) {
                                touched.push(job);
                            }
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
            for job in &touched {
                match self.summaries.get(job).map(rmp_serde::to_vec_named) {
                    Some(Ok(bytes)) => batch.insert(keys::summary(*job).as_slice(), bytes),
                    Some(Err(e)) => error = Some(format!("cannot encode a summary: {e}")),
                    None => {}
                }
            }
        }
        if error.is_none() {
            if let Err(e) = self.db.apply_batch(batch).and_then(|_| self.db.flush().map(|_| ())) {
                error = Some(format!("{} ({})", e, self.path.display()));
            }
        }
        match &error {
            None => {
                for (ack, seq) in acks {
                    let _ = ack.send(Ok(seq));
                }
            }
            Some(msg) => {
                tracing::error!(error = %msg, "event log write failed");
                if let Ok(mut g) = self.failed.lock() {
                    g.get_or_insert_with(|| msg.clone());
                }
                // The caches may now be ahead of the disk.
                self.seqs.clear();
                self.summaries.clear();
                for (ack, _) in acks {
                    let _ = ack.send(Err(EngineError::LogWrite(msg.clone())));
                }
            }
        }
        self.stats.events.fetch_add(events, Ordering::Relaxed);
        self.stats.batches.fetch_add(1, Ordering::Relaxed);
        self.stats
            .busy_ns
            .fetch_add(started.elapsed().as_nanos() as u64, Ordering::Relaxed);
        stop
    }

    /// Adds one event (and the projections it changes) to the batch.
    fn stage(&mut self, batch: &mut sled::Batch, job: JobId, event: Event) -> Result<u64, String> {
        let seq = self.next_seq(job)?;
        let rec = EventRecord { v: SCHEMA_VERSION, job, seq, at: chrono::Utc::now(), event };
        let bytes = rmp_serde::to_vec_named(&rec).map_err(|e| format!("cannot encode an event: {e}"))?;
        batch.insert(keys::event(job, seq).as_slice(), bytes);
        if let Some((name, state)) = BlobState::from_event(&rec) {
            let v = rmp_serde::to_vec_named(&state).map_err(|e| format!("cannot encode a checkpoint: {e}"))?;
            batch.insert(keys::blob(job, name), v);
        }
        self.summary(job)?.apply(&rec);
        self.seqs.insert(job, seq + 1);
        Ok(seq)
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
            Some((k, _)) => keys::seq_of(&k).ok_or("a malformed event key")? + 1,
            None => 0,
        };
        self.seqs.insert(job, next);
        Ok(next)
    }

    fn summary(&mut self, job: JobId) -> Result<&mut JobSummary, String> {
        if !self.summaries.contains_key(&job) {
            let loaded = match self.db.get(keys::summary(job)).map_err(|e| e.to_string())? {
                Some(v) => rmp_serde::from_slice(&v).map_err(|e| format!("undecodable summary: {e}"))?,
                None => JobSummary::new(job),
            };
            self.summaries.insert(job, loaded);
        }
        self.summaries.get_mut(&job).ok_or_else(|| "summary cache".to_string())
    }
}
