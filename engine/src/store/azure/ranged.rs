//! Large downloads as parallel ranges, each written at its own offset of the
//! destination file, so neither a reorder buffer nor one sequential writer
//! stands between the network and the disk.

use std::collections::BTreeMap;
use std::ops::Range;
use std::sync::Arc;

use azure_storage_blob::models::BlobClientDownloadOptions;
use azure_storage_blob::BlobClient;
use futures::StreamExt;
use md5_simd::Md5;
use tokio::sync::mpsc;
use tokio::task::JoinSet;

use super::{errors, join_one, AzureStore};
use crate::store::{BlobMeta, Positioned, StoreError};

/// A range is this many blocks (`--block-size`, 8 MiB by default: 32 MiB
/// ranges). Measured against Azurite with 2 x 256 MiB: 4 MiB ranges (the
/// SDK's default partitions) made Azurite spend twice the CPU per byte of
/// 16-64 MiB ones and took 2.0 s against 0.9 s.
const BLOCKS_PER_RANGE: u64 = 4;
/// Blobs of fewer than this many blocks are one plain streamed GET: a
/// single range gains nothing from the positional path.
const MIN_BLOCKS: u64 = 2;
/// Ranges in flight per blob.
const IN_FLIGHT: usize = 4;
/// Bytes gathered before one positional write: the network yields chunks of
/// a few KiB, and a blocking-pool hop per chunk would cost more than the
/// copy. Not more: with 2 MiB writes the kernel's copy into the page cache
/// took 0.25 s or 0.95 s of system time for the same 512 MiB, about half
/// the runs each; with 256 KiB, 0.23-0.30 s in 11 runs of 11 (as rclone).
const WRITE_CHUNK: usize = 256 << 10;

impl AzureStore {
    /// The range size to download a blob of `size` bytes with, or `None`
    /// when one streamed GET is better.
    pub fn download_range(&self, size: u64) -> Option<u64> {
        let bs = self.block_size_for(size);
        (size >= MIN_BLOCKS * bs).then(|| BLOCKS_PER_RANGE * bs)
    }

    /// Downloads `meta` into `file` (an empty temp file the caller names
    /// only on success): ranges in parallel, pinned to the listed etag so a
    /// blob that changes midway fails instead of mixing versions, each range
    /// checked to arrive whole. With `md5`, the file is read back and
    /// hashed in order as ranges land, while later ones are still coming,
    /// and must match it.
    pub async fn read_into(
        &self,
        meta: &BlobMeta,
        range: u64,
        file: &Positioned,
        md5: Option<[u8; 16]>,
    ) -> Result<(), StoreError> {
        let full = self.full_name(&meta.name)?;
        let blob = Arc::new(self.client.blob_client(&full));
        let mut tasks = JoinSet::new();
        // Dropped on an early return, which aborts the hashing.
        let mut hashing = JoinSet::new();
        let landed = md5.map(|_| {
            let (tx, rx) = mpsc::unbounded_channel();
            hashing.spawn(hash_in_order(file.clone(), rx, meta.size));
            tx
        });
        let mut start = 0;
        while start < meta.size {
            let end = (start + range.max(1)).min(meta.size);
            if tasks.len() >= IN_FLIGHT {
                join_one(&mut tasks).await?;
            }
            let (this, blob, file) = (self.clone(), blob.clone(), file.clone());
            let (name, etag) = (meta.name.clone(), meta.etag.clone());
            let landed = landed.clone();
            tasks.spawn(crate::retry::inherit(async move {
                this.read_range(&blob, &name, &etag, start..end, file)
                    .await?;
                if let Some(tx) = landed {
                    // Only fails once hashing failed, which is reported below.
                    let _ = tx.send(start..end);
                }
                Ok(())
            }));
            start = end;
        }
        drop(landed);
        while !tasks.is_empty() {
            join_one(&mut tasks).await?;
        }
        let (Some(expected), Some(read)) = (md5, hashing.join_next().await) else {
            return Ok(());
        };
        let read =
            read.map_err(|e| StoreError::io(meta.name.clone(), std::io::Error::other(e)))??;
        match StoreError::mismatch(&meta.name, expected, read) {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    async fn read_range(
        &self,
        blob: &BlobClient,
        name: &str,
        etag: &str,
        range: Range<u64>,
        file: Positioned,
    ) -> Result<(), StoreError> {
        let len = (range.end - range.start) as usize;
        let opts = BlobClientDownloadOptions {
            if_match: (!etag.is_empty()).then(|| etag.to_string().into()),
            range: Some(range.clone().into()),
            // One GET for the whole range, streamed (no SDK partitions).
            parallel: std::num::NonZero::new(1),
            partition_size: std::num::NonZero::new(len.max(1)),
            ..Default::default()
        };
        let rsp = blob
            .download(Some(opts))
            .await
            .map_err(|e| self.err(&e, name))?;
        let mut body = rsp.body;
        let mut at = range.start;
        // One buffer per range, reused: a fresh one per write is fresh
        // memory to fault in and zero.
        let mut buf = Vec::with_capacity(WRITE_CHUNK.min(len));
        while let Some(chunk) = body.next().await {
            let chunk =
                chunk.map_err(|e| errors::map_body(&e, &self.what(name), &self.display_account))?;
            if at + (buf.len() + chunk.len()) as u64 > range.end {
                return Err(StoreError::SourceChanged { name: name.into() });
            }
            buf.extend_from_slice(&chunk);
            if buf.len() >= WRITE_CHUNK {
                (at, buf) = file.write_at(buf, at).await?;
                buf.clear();
            }
        }
        if !buf.is_empty() {
            (at, _) = file.write_at(buf, at).await?;
        }
        if at != range.end {
            return Err(StoreError::SourceChanged { name: name.into() });
        }
        Ok(())
    }
}

/// The MD5 of a file of `size` bytes whose ranges land in any order (sent
/// on `landed` once written): each is hashed as soon as every byte before
/// it is in.
async fn hash_in_order(
    file: Positioned,
    mut landed: mpsc::UnboundedReceiver<Range<u64>>,
    size: u64,
) -> Result<[u8; 16], StoreError> {
    let mut waiting = BTreeMap::new();
    let (mut md5, mut buf, mut at) = (Md5::new(), Vec::new(), 0);
    while at < size {
        let mut end = at;
        while let Some(next) = waiting.remove(&end) {
            end = next;
        }
        if end > at {
            (md5, buf) = file.hash(md5, buf, at..end).await?;
            at = end;
            continue;
        }
        match landed.recv().await {
            Some(r) => {
                waiting.insert(r.start, r.end);
            }
            // The download failed and says why.
            None => break,
        }
    }
    Ok(md5.finalize())
}
