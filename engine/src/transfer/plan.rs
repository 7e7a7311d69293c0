//! The planner: walks the source listing once, skips what a previous attempt
//! finished, asks the policy, and queues copies for the workers.

use futures::{FutureExt, StreamExt};
use tokio_util::sync::CancellationToken;

use super::merge::{Found, Merge};
use super::{Attempt, Progress, Work};
use crate::error::EngineError;
use crate::event::{CopyReason, Event, SkipReason};
use crate::policy::{self, Decision};
use crate::projection::BlobStatus;
use crate::store::{Listed, StoreError};

pub(crate) enum PlanError {
    /// A listing could not go on: the job fails with this message.
    Fatal(String),
    /// The log refused an event: nothing more can be recorded.
    Log(EngineError),
}

impl From<EngineError> for PlanError {
    fn from(e: EngineError) -> Self {
        PlanError::Log(e)
    }
}

/// Most blobs per batch handed to a worker.
const BATCH_BLOBS: usize = 32;
/// Bytes after which a batch goes out early, so large blobs still spread
/// over all workers.
const BATCH_BYTES: u64 = 256 * 1024;

/// Work goes to workers in small batches: one hand-off (and thread wake-up)
/// per batch instead of per blob. A batch leaves when full, or as soon as the
/// listing has nothing ready, so no worker waits on a half-full batch.
struct Batcher {
    tx: async_channel::Sender<Vec<Work>>,
    pending: Vec<Work>,
    bytes: u64,
}

impl Batcher {
    /// Adds one blob; false once every worker has gone.
    async fn push(&mut self, work: Work, stop: &CancellationToken) -> bool {
        self.bytes += work.meta.size;
        self.pending.push(work);
        if self.pending.len() >= BATCH_BLOBS || self.bytes >= BATCH_BYTES {
            return self.flush(stop).await;
        }
        true
    }

    async fn flush(&mut self, stop: &CancellationToken) -> bool {
        if self.pending.is_empty() {
            return true;
        }
        let batch = std::mem::take(&mut self.pending);
        self.bytes = 0;
        tokio::select! {
            biased;
            _ = stop.cancelled() => false,
            sent = self.tx.send(batch) => sent.is_ok(),
        }
    }
}

pub(crate) async fn plan(
    ctx: &Attempt,
    tx: async_channel::Sender<Vec<Work>>,
    stop: &CancellationToken,
) -> Result<(), PlanError> {
    let mut out = Batcher {
        tx,
        pending: Vec::with_capacity(BATCH_BLOBS),
        bytes: 0,
    };
    let p = &ctx.progress;
    // What earlier attempts finished, asked in listing order.
    let mut done = ctx
        .resuming
        .then(|| ctx.log.checkpoint_cursor(ctx.job, ctx.attempt));
    let mut src = ctx.src.list();
    let mut dst = if policy::needs_destination(ctx.spec.mode) {
        Some(Merge::new(ctx.dst.clone()).await)
    } else {
        None
    };
    let (mut blobs, mut bytes) = (0u64, 0u64);
    // Places of the listed blobs that get a copy or skip, for the log's runs
    // (`EventLog::append_outcome`); listing failures never join runs.
    let mut places = 0u64;
    let whole_seconds = ctx.src.whole_second_times() || ctx.dst.whole_second_times();
    let times = policy::Times::at(chrono::Utc::now(), whole_seconds);
    loop {
        let ready = src.next().now_or_never();
        let item = match ready {
            Some(item) => item,
            None => {
                if !out.flush(stop).await {
                    return Ok(());
                }
                tokio::select! {
                    biased;
                    _ = stop.cancelled() => return Ok(()),
                    item = src.next() => item,
                }
            }
        };
        // This ferry's own state dir is skipped as a listing's own skips are.
        let item = match item {
            Some(Ok(Listed::Blob(m))) if ctx.in_state_dir(&m.name) => Some(Ok(Listed::Skipped {
                name: m.name,
                reason: SkipReason::FerryState,
            })),
            // An empty blob named like a folder (`photos/`, as Storage
            // Explorer and Data Lake make them) is a folder marker: a folder
            // tree has no such file, and it failed every run.
            Some(Ok(Listed::Blob(m)))
                if m.name.ends_with('/') && m.size == 0 && ctx.dst.as_local().is_some() =>
            {
                Some(Ok(Listed::Skipped {
                    name: m.name,
                    reason: SkipReason::NotRegularFile,
                }))
            }
            other => other,
        };
        let meta = match item {
            None => break,
            Some(Err(e)) => {
                let message = format!("listing {} failed: {e}", ctx.src.describe());
                return Err(PlanError::Fatal(message));
            }
            Some(Ok(Listed::Failed { name, error })) => {
                ctx.log
                    .append(ctx.job, failed_unlisted(p, name, &error))
                    .await?;
                continue;
            }
            Some(Ok(Listed::Skipped { name, reason })) => {
                let state = match done.as_mut() {
                    Some(d) => d.state(&name)?,
                    None => None,
                };
                if state.is_some_and(|s| s.status == BlobStatus::Skipped) {
                    continue;
                }
                Progress::add(&p.skipped, 1);
                let event = Event::BlobSkipped {
                    name,
                    reason,
                    src_etag: None,
                    detail: None,
                };
                let place = places;
                places += 1;
                ctx.log.append_outcome(ctx.job, event, place).await?;
                continue;
            }
            Some(Ok(Listed::Blob(meta))) => meta,
        };
        blobs += 1;
        bytes += meta.size;
        Progress::add(&p.listed, 1);
        Progress::add(&p.listed_bytes, meta.size);
        if let Some(d) = done.as_mut() {
            if let Some(state) = d.state(&meta.name)? {
                if state.is_done_for(&meta.etag) {
                    Progress::add(&p.resumed, 1);
                    Progress::add(&p.resumed_bytes, meta.size);
                    continue;
                }
            }
        }
        let existing = match dst.as_mut() {
            Some(m) => match m.find(&meta.name).await.map_err(|e| {
                PlanError::Fatal(format!(
                    "listing the destination {} failed: {e}",
                    ctx.dst.describe()
                ))
            })? {
                Found::Blob(b) => Some(b),
                Found::Absent => None,
                Found::Unusable(error) => {
                    let event = failed_unlisted(p, meta.name, &error);
                    ctx.log.append(ctx.job, event).await?;
                    continue;
                }
            },
            None => None,
        };
        // A plugin policy decides for blobs present at both ends, in the
        // workers (one instance each), like the DML's overwrite callback.
        let place = places;
        places += 1;
        if ctx.policy.is_some() && existing.is_some() {
            let work = Work {
                place,
                meta,
                reason: CopyReason::Policy,
                compare: false,
                dst_md5: None,
                ask_plugin: existing,
                detail: None,
            };
            if !out.push(work, stop).await {
                return Ok(());
            }
            continue;
        }
        let work = match policy::decide(ctx.spec.mode, &meta, existing.as_ref(), times) {
            Decision::Skip(reason) => {
                if reason == SkipReason::NotNewer {
                    keep_mode(ctx, &meta, existing.as_ref()).await;
                }
                Progress::add(&p.skipped, 1);
                let event = Event::BlobSkipped {
                    name: meta.name,
                    reason,
                    src_etag: Some(meta.etag),
                    detail: None,
                };
                ctx.log.append_outcome(ctx.job, event, place).await?;
                continue;
            }
            Decision::Copy(reason) => Work {
                place,
                meta,
                reason,
                compare: false,
                dst_md5: None,
                ask_plugin: None,
                detail: None,
            },
            Decision::CompareContent => Work {
                place,
                meta,
                reason: CopyReason::Different,
                compare: true,
                dst_md5: existing.as_ref().and_then(|e| e.md5),
                ask_plugin: None,
                detail: None,
            },
        };
        if !out.push(work, stop).await {
            // Every worker has gone (they stop only on cancel or log failure).
            return Ok(());
        }
    }
    if !out.flush(stop).await {
        return Ok(());
    }
    p.listing_done
        .store(true, std::sync::atomic::Ordering::Relaxed);
    let retries = ctx.listing_retries.take();
    Progress::add(&p.retries, retries.values().map(|n| *n as u64).sum());
    let event = Event::ListingCompleted {
        attempt: ctx.attempt,
        blobs,
        bytes,
        retries,
    };
    ctx.log.append(ctx.job, event).await?;
    Ok(())
}

/// A blob that fails before any copy is tried: its entry in the source or
/// destination listing could not be used.
fn failed_unlisted(p: &Progress, name: String, error: &StoreError) -> Event {
    Progress::add(&p.failed, 1);
    Event::BlobFailed {
        name,
        error_kind: error.kind(),
        message: error.to_string(),
        tries: 1,
        retries: Default::default(),
    }
}

/// A copy skipped as current still takes the source's permission bits
/// (local to local): a file made private after its backup stayed readable
/// by all in the backup, since a mode change moves no mtime. Best effort:
/// a failure is a warning, the content is current.
async fn keep_mode(
    ctx: &Attempt,
    src: &crate::store::BlobMeta,
    dst: Option<&crate::store::BlobMeta>,
) {
    let (Some(mode), Some(old)) = (src.mode, dst.and_then(|d| d.mode)) else {
        return;
    };
    if mode == old || ctx.dst.as_local().is_none() {
        return;
    }
    let dst = ctx.dst.clone();
    let name = src.name.clone();
    let set = tokio::task::spawn_blocking(move || match dst.as_local() {
        Some(local) => local.set_mode(&name, mode),
        None => Ok(()),
    })
    .await
    .map_err(|e| e.to_string())
    .and_then(|r| r.map_err(|e| e.to_string()));
    if let Err(e) = set {
        tracing::warn!(blob = %src.name, "could not give the copy the source's mode: {e}");
    }
}
