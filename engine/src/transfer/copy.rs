//! Copy workers: take planned blobs, copy them (retrying transient faults),
//! and record each outcome.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Instant;

use futures::StreamExt;
use md5_simd::Md5;
use tokio_util::sync::CancellationToken;

use super::auto::Limiter;
use super::{Attempt, Progress, Work};
use crate::error::EngineError;
use crate::event::{CopyMethod, ErrorKind, Event, SkipReason};
use crate::job::{CopyMode, Md5Check, PluginFailure};
use crate::plugin::{JobContext, PluginDecision};
use crate::retry::{self, RetryTally};
use crate::store::{BlobMeta, BlobStore, ByteStream, FolderCache, LocalStore, StoreError};

enum Done {
    Copied { method: CopyMethod, bytes: u64 },
    Identical,
}

/// `limiter` (`--parallel auto`) caps how many workers copy at once; it is
/// taken per blob, so a lower limit takes hold within one blob's time.
pub(crate) async fn worker(
    ctx: Arc<Attempt>,
    rx: async_channel::Receiver<Vec<Work>>,
    stop: CancellationToken,
    limiter: Option<Arc<Limiter>>,
) -> Result<(), EngineError> {
    let mut policy = None;
    loop {
        // biased: once stopped, take no new batch even if some are queued.
        let mut batch = tokio::select! {
            biased;
            _ = stop.cancelled() => return Ok(()),
            w = rx.recv() => match w { Ok(w) => w, Err(_) => return Ok(()) },
        };
        let gated = gate(&ctx, &mut policy, &mut batch);
        for (work, gated) in batch.into_iter().zip(gated) {
            if stop.is_cancelled() {
                return Ok(());
            }
            if let Some(event) = gated {
                ctx.log.append_outcome(ctx.job, event, work.place).await?;
                continue;
            }
            let _permit = match limiter.as_deref() {
                Some(l) => match l.acquire(&stop).await {
                    Some(p) => Some(p),
                    None => return Ok(()),
                },
                None => None,
            };
            let started = Instant::now();
            let tally = Arc::new(RetryTally::default());
            // The source as a later try found it, if it changed: taken out
            // for each try, so the listing's metadata is never copied.
            let newer: Mutex<Option<BlobMeta>> = Mutex::new(None);
            let (res, tries) = retry::counted(
                tally.clone(),
                ctx.retry.run(StoreError::fault, &tally, || async {
                    let taken = newer.lock().unwrap_or_else(PoisonError::into_inner).take();
                    let meta = taken.as_ref().unwrap_or(&work.meta);
                    let res = copy_one(&ctx, &work, meta).await;
                    let keep = match &res {
                        Err(StoreError::SourceChanged { .. }) => {
                            refreshed(&ctx, meta).await.or(taken)
                        }
                        _ => taken,
                    };
                    *newer.lock().unwrap_or_else(PoisonError::into_inner) = keep;
                    res
                }),
            )
            .await;
            let mut work = work;
            if let Some(meta) = newer.into_inner().unwrap_or_else(PoisonError::into_inner) {
                work.meta = meta;
            }
            if ctx.outage.observe(&res) {
                stop.cancel();
            }
            let place = work.place;
            let event = outcome(&ctx.progress, work, res, (tries, tally.take()), started);
            ctx.log.append_outcome(ctx.job, event, place).await?;
        }
    }
}

/// Asks the job's plugin policy, in one go, about the blobs of a batch that
/// are present at both ends. Returns, per work, the event to record instead
/// of copying (a skip, or a contained plugin failure); `None` means copy,
/// with the plugin's reason kept in the work. `job` is the worker's job
/// context, built on first use (its strings once per worker, not per blob).
fn gate(ctx: &Attempt, job: &mut Option<JobContext>, batch: &mut [Work]) -> Vec<Option<Event>> {
    let mut gated: Vec<Option<Event>> = batch.iter().map(|_| None).collect();
    let Some(plugin) = &ctx.policy else {
        return gated;
    };
    let asked: Vec<(usize, BlobMeta)> = batch
        .iter_mut()
        .enumerate()
        .filter_map(|(i, w)| w.ask_plugin.take().map(|dst| (i, dst)))
        .collect();
    if asked.is_empty() {
        return gated;
    }
    let job = job.get_or_insert_with(|| job_context(ctx));
    let pairs: Vec<(&BlobMeta, &BlobMeta)> = asked
        .iter()
        .map(|(i, dst)| (&batch[*i].meta, dst))
        .collect();
    let decided = plugin.decide_all(&pairs, job);
    for ((i, _), decided) in asked.iter().zip(decided) {
        gated[*i] = settle(ctx, &mut batch[*i], decided);
    }
    gated
}

/// What one plugin answer means for its work: see [`gate`].
fn settle(
    ctx: &Attempt,
    work: &mut Work,
    decided: Result<PluginDecision, crate::plugin::PluginError>,
) -> Option<Event> {
    let p = &ctx.progress;
    let name = work.meta.name.clone();
    match decided {
        Ok(PluginDecision::Overwrite(reason)) => {
            work.detail = Some(reason);
            None
        }
        Ok(PluginDecision::Skip(reason)) => {
            Progress::add(&p.skipped, 1);
            let src_etag = Some(work.meta.etag.clone());
            Some(Event::BlobSkipped {
                name,
                reason: SkipReason::Policy,
                src_etag,
                detail: Some(reason),
            })
        }
        Err(e) if ctx.spec.plugin_failure == PluginFailure::Skip => {
            Progress::add(&p.skipped, 1);
            let src_etag = Some(work.meta.etag.clone());
            Some(Event::BlobSkipped {
                name,
                reason: SkipReason::PluginFailed,
                src_etag,
                detail: Some(e.to_string()),
            })
        }
        Err(e) => {
            Progress::add(&p.failed, 1);
            Some(Event::BlobFailed {
                name,
                error_kind: ErrorKind::Plugin,
                message: e.to_string(),
                tries: 1,
                retries: Default::default(),
            })
        }
    }
}

fn job_context(ctx: &Attempt) -> JobContext {
    JobContext {
        job_id: ctx.job.to_string(),
        attempt: ctx.attempt,
        source: ctx.spec.src.to_string(),
        destination: ctx.spec.dst.to_string(),
    }
}

/// A worker for local-to-local copies: a plain thread doing blocking file
/// I/O, which for small files costs far less than a runtime round trip per
/// file.
pub(crate) fn local_worker(
    ctx: Arc<Attempt>,
    rx: async_channel::Receiver<Vec<Work>>,
    stop: CancellationToken,
    src: LocalStore,
    dst: LocalStore,
    limiter: Option<Arc<Limiter>>,
) -> Result<(), EngineError> {
    let mut policy = None;
    while !stop.is_cancelled() {
        let Ok(mut batch) = rx.recv_blocking() else {
            return Ok(());
        };
        let gated = gate(&ctx, &mut policy, &mut batch);
        let mut folders = FolderCache::default();
        for (work, gated) in batch.into_iter().zip(gated) {
            if stop.is_cancelled() {
                return Ok(());
            }
            if let Some(event) = gated {
                ctx.log
                    .append_outcome_blocking(ctx.job, event, work.place)?;
                continue;
            }
            // The limiter is async; this thread may block on it (its
            // wake-ups need no runtime).
            let _permit = match limiter.as_deref() {
                Some(l) => match futures::executor::block_on(l.acquire(&stop)) {
                    Some(p) => Some(p),
                    None => return Ok(()),
                },
                None => None,
            };
            let started = Instant::now();
            let tally = RetryTally::default();
            let mut work = work;
            let (res, tries) = ctx.retry.run_blocking(StoreError::fault, &tally, || {
                if work.compare && dst.same_content(&src, &work.meta.name)? {
                    return Ok(Done::Identical);
                }
                let copied = dst.copy_file_via(&src, &work.meta, &mut folders);
                if let Err(StoreError::SourceChanged { .. }) = &copied {
                    // As in `refreshed`: the next try copies the file as it is now.
                    if let Some(fresh) = src.stat(&work.meta.name) {
                        work.meta = fresh;
                    }
                }
                Ok(Done::Copied {
                    method: CopyMethod::LocalFile,
                    bytes: copied?,
                })
            });
            let place = work.place;
            let event = outcome(&ctx.progress, work, res, (tries, tally.take()), started);
            ctx.log.append_outcome_blocking(ctx.job, event, place)?;
        }
    }
    Ok(())
}

/// Counts a copy's result and turns it into its event.
fn outcome(
    p: &Progress,
    work: Work,
    res: Result<Done, StoreError>,
    (tries, retries): (u32, BTreeMap<String, u32>),
    started: Instant,
) -> Event {
    let n: u32 = retries.values().sum();
    Progress::add(&p.retries, n as u64);
    let ms = started.elapsed().as_millis() as u64;
    let Work {
        meta,
        reason,
        detail,
        ..
    } = work;
    match res {
        Ok(Done::Copied { method, bytes }) => {
            Progress::add(&p.copied, 1);
            Progress::add(&p.copied_bytes, bytes);
            Event::BlobCopied {
                name: meta.name,
                bytes,
                src_etag: meta.etag,
                reason,
                method,
                ms,
                tries,
                detail,
                retries,
            }
        }
        Ok(Done::Identical) => {
            Progress::add(&p.skipped, 1);
            Event::BlobSkipped {
                name: meta.name,
                reason: SkipReason::Identical,
                src_etag: Some(meta.etag),
                detail: None,
            }
        }
        Err(e) => {
            Progress::add(&p.failed, 1);
            tracing::debug!(blob = %meta.name, error = %e, tries, "blob failed");
            Event::BlobFailed {
                name: meta.name,
                error_kind: e.kind(),
                message: e.to_string(),
                tries,
                retries,
            }
        }
    }
}

/// After a source changed under a copy (or since it was listed): the blob
/// as it is now, so the next try copies that version instead of failing
/// against the listing's again and again (a file still being appended to
/// would never be backed up). Properties the store does not report on a
/// head (Azure's) are kept from the listing.
async fn refreshed(ctx: &Attempt, meta: &BlobMeta) -> Option<BlobMeta> {
    let mut fresh = ctx.src.head(&meta.name).await.ok().flatten()?;
    if fresh.props.is_none() {
        fresh.props = meta.props.clone();
    }
    Some(fresh)
}

async fn copy_one(ctx: &Attempt, work: &Work, meta: &BlobMeta) -> Result<Done, StoreError> {
    if work.compare && same_content(ctx, meta, work.dst_md5).await? {
        return Ok(Done::Identical);
    }
    if ctx.spec.copy_method == CopyMode::Server {
        if let (Some(src), Some(dst)) = (ctx.src.as_azure(), ctx.dst.as_azure()) {
            dst.copy_from(src, meta).await?;
            return Ok(Done::Copied {
                method: CopyMethod::ServerSide,
                bytes: meta.size,
            });
        }
    }
    // What the bytes read must hash to (`--check-md5`).
    let md5 = meta.md5.filter(|_| ctx.spec.check_md5 == Md5Check::Fail);
    // Large Azure -> local: parallel ranges written at their offsets.
    if let (Some(src), Some(dst)) = (ctx.src.as_azure(), ctx.dst.as_local()) {
        if let Some(range) = src.download_range(meta.size) {
            dst.write_positioned(meta, |file| async move {
                src.read_into(meta, range, &file, md5).await
            })
            .await?;
            return Ok(Done::Copied {
                method: CopyMethod::Stream,
                bytes: meta.size,
            });
        }
    }
    let data = checked(ctx.src.read(meta).await?, meta, md5);
    ctx.dst.write(meta, data).await?;
    Ok(Done::Copied {
        method: CopyMethod::Stream,
        bytes: meta.size,
    })
}

/// `data` as it streams to the destination, with a last item that fails
/// the write before the destination's rename if the bytes are not what the
/// listing said: a blob that shrank or grew since, or that does not hash
/// to its `md5`.
fn checked(data: ByteStream, meta: &BlobMeta, md5: Option<[u8; 16]>) -> ByteStream {
    struct Reading {
        data: ByteStream,
        name: String,
        size: u64,
        seen: u64,
        /// The MD5 the bytes must hash to, and theirs so far.
        md5: Option<([u8; 16], Md5)>,
        ended: bool,
    }
    let start = Reading {
        data,
        name: meta.name.clone(),
        size: meta.size,
        seen: 0,
        md5: md5.map(|want| (want, Md5::new())),
        ended: false,
    };
    futures::stream::unfold(start, |mut r| async move {
        if r.ended {
            return None;
        }
        let last = match r.data.next().await {
            Some(Ok(b)) => {
                r.seen += b.len() as u64;
                if let Some((_, h)) = &mut r.md5 {
                    h.update(&b);
                }
                return Some((Ok(b), r));
            }
            Some(Err(e)) => Err(e),
            None if r.seen != r.size => Err(StoreError::SourceChanged {
                name: std::mem::take(&mut r.name),
            }),
            // Each `?` ends the stream cleanly: nothing to check, or a match.
            None => {
                let (want, h) = r.md5.take()?;
                Err(StoreError::mismatch(&r.name, want, h.finalize())?)
            }
        };
        r.ended = true;
        Some((last, r))
    })
    .boxed()
}

/// Whether the destination holds the source's bytes: a side whose MD5 is
/// known is not read (one of them is unknown, or the planner would have
/// decided).
async fn same_content(
    ctx: &Attempt,
    meta: &BlobMeta,
    dst_md5: Option<[u8; 16]>,
) -> Result<bool, StoreError> {
    // The destination's copy is read unpinned: only the source must not move.
    let dst_meta = BlobMeta {
        etag: String::new(),
        ..meta.clone()
    };
    match (meta.md5, dst_md5) {
        (None, Some(d)) => Ok(md5_of(ctx.src.as_ref(), meta).await? == d),
        (Some(s), None) => Ok(md5_of(ctx.dst.as_ref(), &dst_meta).await? == s),
        _ => {
            let (a, b) = tokio::try_join!(
                md5_of(ctx.src.as_ref(), meta),
                md5_of(ctx.dst.as_ref(), &dst_meta)
            )?;
            Ok(a == b)
        }
    }
}

async fn md5_of(store: &dyn BlobStore, meta: &BlobMeta) -> Result<[u8; 16], StoreError> {
    let mut data = store.read(meta).await?;
    let mut h = Md5::new();
    while let Some(chunk) = data.next().await {
        h.update(&chunk?);
    }
    Ok(h.finalize())
}
