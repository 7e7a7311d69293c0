//! The copy pipeline of one attempt: a planner streams the source listing
//! (merge-joined with the destination's), decides each blob and feeds a
//! bounded queue; a pool of workers copies and records outcomes. With
//! `--parallel auto` a controller (`auto.rs`) sets how many of the workers
//! copy at once.

mod auto;
mod copy;
mod merge;
mod outage;
pub(crate) use outage::Outage;
mod plan;

pub use auto::{AutoStats, AutoSummary, Concurrency, Limits};

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::error::EngineError;
use crate::event::{CopyReason, Outcome, Totals};
use crate::job::{JobId, JobSpec};
use crate::log::EventLog;
use crate::retry::RetryPolicy;
use crate::store::{BlobMeta, BlobStore};

/// Batches planned but not yet taken by a worker (at most 32 blobs each).
/// Bounds memory: the planner waits when workers fall behind.
const WORK_QUEUE: usize = 48;

/// Live counters of the running attempt, read by progress displays.
#[derive(Debug, Default)]
pub struct Progress {
    pub listed: AtomicU64,
    pub listed_bytes: AtomicU64,
    pub listing_done: AtomicBool,
    pub copied: AtomicU64,
    pub copied_bytes: AtomicU64,
    pub skipped: AtomicU64,
    pub failed: AtomicU64,
    pub resumed: AtomicU64,
    pub resumed_bytes: AtomicU64,
    pub retries: AtomicU64,
    /// What `--parallel auto` did (nothing in a fixed attempt).
    pub auto: AutoStats,
}

impl Progress {
    pub fn totals(&self) -> Totals {
        let g = |a: &AtomicU64| a.load(Ordering::Relaxed);
        Totals {
            listed: g(&self.listed),
            listed_bytes: g(&self.listed_bytes),
            copied: g(&self.copied),
            copied_bytes: g(&self.copied_bytes),
            skipped: g(&self.skipped),
            failed: g(&self.failed),
            resumed: g(&self.resumed),
            retries: g(&self.retries),
        }
    }

    fn add(a: &AtomicU64, n: u64) {
        a.fetch_add(n, Ordering::Relaxed);
    }
}

/// What one `run`/`replay` did.
#[derive(Debug, Clone)]
pub struct RunReport {
    pub job: JobId,
    pub attempt: u32,
    /// `None` when the attempt was interrupted.
    pub outcome: Option<Outcome>,
    pub totals: Totals,
    pub elapsed: Duration,
}

/// One blob for a worker.
#[derive(Debug)]
pub(crate) struct Work {
    /// Its place among the attempt's blobs with an outcome, in listing
    /// order: lets the log keep consecutive outcomes in one run.
    pub place: u64,
    pub meta: BlobMeta,
    pub reason: CopyReason,
    /// Same size, unknown hashes: compare content before deciding.
    pub compare: bool,
    /// The destination's content MD5, when it has one: then only the
    /// source is read to compare (an Azure destination's copy was
    /// downloaded in full to learn what its Content-MD5 said).
    pub dst_md5: Option<[u8; 16]>,
    /// The destination's copy, when a plugin policy must decide first.
    pub ask_plugin: Option<BlobMeta>,
    /// The plugin's reason for a copy, recorded in `BlobCopied`.
    pub detail: Option<String>,
}

/// Everything the planner and workers of one attempt share.
pub(crate) struct Attempt {
    pub log: EventLog,
    pub job: JobId,
    pub attempt: u32,
    pub spec: JobSpec,
    pub src: Arc<dyn BlobStore>,
    pub dst: Arc<dyn BlobStore>,
    pub progress: Arc<Progress>,
    /// Requested by the user (signal): stop taking new blobs.
    pub cancel: CancellationToken,
    pub retry: RetryPolicy,
    /// Earlier attempts exist, so look blobs up in the checkpoint.
    pub resuming: bool,
    /// The job's plugin policy, if any (workers make their own instances).
    pub policy: Option<Arc<crate::plugin::PolicyPlugin>>,
    /// Retries made by listing requests, by cause.
    pub listing_retries: Arc<crate::retry::RetryTally>,
    /// Set by `run`: stops the attempt when the service cannot be reached.
    pub(crate) outage: outage::Outage,
    /// Where this ferry's state dir lies inside a local source or
    /// destination, as a blob name (`.local/share/ferry`): names under it
    /// are skipped. Copying the live log gives a torn copy, and writing
    /// over it (restoring a home folder) destroyed it.
    pub state_names: Vec<String>,
}

impl Attempt {
    /// Whether `name` lies in this ferry's state dir.
    pub(crate) fn in_state_dir(&self, name: &str) -> bool {
        self.state_names.iter().any(|s| {
            name.strip_prefix(s.as_str())
                .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
        })
    }
}

/// How an attempt ended.
pub(crate) enum AttemptEnd {
    Finished(Outcome),
    Interrupted,
}

/// Runs the pipeline to its end. Errors are only those that make recording
/// impossible (the log failed); everything else is an outcome.
pub(crate) async fn run(
    ctx: Arc<Attempt>,
    concurrency: Concurrency,
) -> Result<AttemptEnd, EngineError> {
    if let Err(e) = ctx.dst.prepare_destination().await {
        let message = format!("preparing {} failed: {e}", ctx.dst.describe());
        return Ok(AttemptEnd::Finished(Outcome::Failed { message }));
    }
    // Stops workers on cancel and on fatal planner errors alike.
    let stop = ctx.cancel.child_token();
    let (tx, rx) = async_channel::bounded(WORK_QUEUE);
    let mut workers = JoinSet::new();
    let local = ctx.src.as_local().cloned().zip(ctx.dst.as_local().cloned());
    let auto = match concurrency {
        Concurrency::Auto(limits) => Some(auto::Auto::new(limits)),
        Concurrency::Fixed(_) => None,
    };
    let limiter = auto.as_ref().map(|a| a.limiter.clone());
    for _ in 0..concurrency.workers() {
        let (ctx, rx, stop, limiter) = (ctx.clone(), rx.clone(), stop.clone(), limiter.clone());
        match (local.clone(), &auto) {
            (Some((src, dst)), _) => {
                workers.spawn_blocking(move || copy::local_worker(ctx, rx, stop, src, dst, limiter))
            }
            // The requests of an auto attempt count into its load.
            (None, Some(a)) => workers.spawn(crate::retry::measured(
                a.load.clone(),
                copy::worker(ctx, rx, stop, limiter),
            )),
            (None, None) => workers.spawn(copy::worker(ctx, rx, stop, limiter)),
        };
    }
    drop(rx);
    // The controller ends with the workers, or with this future if dropped.
    let controller_done = CancellationToken::new();
    let _stop_controller = controller_done.clone().drop_guard();
    let controller = auto
        .as_ref()
        .map(|a| tokio::spawn(a.controller(ctx.progress.clone(), controller_done.clone())));
    // Listing requests (pages, container checks) count into the listing's
    // tally, recorded with ListingCompleted.
    let planning = crate::retry::counted(ctx.listing_retries.clone(), plan::plan(&ctx, tx, &stop));
    let planned = match &auto {
        Some(a) => crate::retry::measured(a.load.clone(), planning).await,
        None => planning.await,
    };
    if planned.is_err() {
        stop.cancel();
    }
    let mut log_error = None;
    while let Some(joined) = workers.join_next().await {
        match joined {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                stop.cancel();
                log_error.get_or_insert(e);
            }
            Err(e) => {
                stop.cancel();
                log_error.get_or_insert(EngineError::LogWrite(format!("a copy worker died: {e}")));
            }
        }
    }
    controller_done.cancel();
    if let Some(c) = controller {
        // A controller that panicked only stopped tuning; the copies are
        // what matters.
        let _ = c.await;
    }
    if let Some(e) = log_error {
        return Err(e);
    }
    match planned {
        Err(plan::PlanError::Log(e)) => Err(e),
        Err(plan::PlanError::Fatal(message)) => {
            Ok(AttemptEnd::Finished(Outcome::Failed { message }))
        }
        Ok(()) if ctx.cancel.is_cancelled() => Ok(AttemptEnd::Interrupted),
        Ok(()) => Ok(AttemptEnd::Finished(
            if let Some(message) = ctx.outage.message() {
                Outcome::Failed {
                    message: message.to_string(),
                }
            } else if ctx.progress.failed.load(Ordering::Relaxed) > 0 {
                Outcome::CompletedWithFailures
            } else {
                Outcome::Succeeded
            },
        )),
    }
}
