//! The bytes every upload of one store may hold in memory at once. Each
//! blob stages up to 8 blocks while filling the next, so without a shared
//! bound 16 workers on large files held 16 x 9 blocks: 1.1 GiB at 8 MiB
//! blocks, and 560 GiB at `--block-size 4000MiB`.

use std::sync::Arc;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Upload buffers of one store (one job's destination) together hold at
/// most this much, or two blocks where those are larger.
pub const UPLOAD_BUDGET: u64 = 256 << 20;

/// Permits are KiB: a block of 4000 MiB is 4,096,000 of them, within the
/// `u32` a semaphore takes at once.
const UNIT: u64 = 1 << 10;

#[derive(Clone)]
pub(super) struct UploadBudget {
    sem: Arc<Semaphore>,
    units: u32,
}

impl UploadBudget {
    /// A budget for blocks of `block_size` bytes.
    pub(super) fn new(block_size: u64) -> Self {
        Self::of(UPLOAD_BUDGET.max(block_size.saturating_mul(2)))
    }

    fn of(bytes: u64) -> Self {
        let units = u32::try_from(bytes.div_ceil(UNIT)).unwrap_or(u32::MAX);
        UploadBudget {
            sem: Arc::new(Semaphore::new(units as usize)),
            units,
        }
    }

    /// Waits until `bytes` more may be buffered; they stay counted until the
    /// returned permit drops. A buffer larger than the whole budget takes
    /// all of it, so it waits for the others instead of forever.
    ///
    /// Whoever holds a permit must be able to finish without another one
    /// (take the next only after handing this one to the task that sends
    /// it), or two writers could each hold half and wait for the rest.
    pub(super) async fn hold(&self, bytes: u64) -> Option<OwnedSemaphorePermit> {
        let units = u32::try_from(bytes.div_ceil(UNIT).max(1))
            .unwrap_or(u32::MAX)
            .min(self.units);
        // Never closed: an error cannot happen, and would only lift the bound.
        self.sem.clone().acquire_many_owned(units).await.ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn holds_wait_for_room_and_a_buffer_larger_than_the_budget_takes_all_of_it() {
        let budget = UploadBudget::new(1 << 20);
        let a = budget.hold(200 << 20).await.unwrap();
        // 56 MiB left: 100 MiB must wait for `a`.
        let waiting = budget.hold(100 << 20);
        tokio::pin!(waiting);
        assert!(futures::poll!(waiting.as_mut()).is_pending());
        drop(a);
        let b = waiting.await.unwrap();
        assert_eq!(b.num_permits(), 100 << 10);
        drop(b);
        let all = budget.hold(1 << 40).await.unwrap();
        assert_eq!(all.num_permits(), (UPLOAD_BUDGET / UNIT) as usize);
        assert!(futures::poll!(Box::pin(budget.hold(1))).is_pending());
    }

    /// Four blobs of 16 blocks each, at once, through a budget of two
    /// blocks: every one arrives whole (no writer waits forever holding
    /// part of the budget), and the budget was used.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn uploads_sharing_a_budget_of_two_blocks_all_finish() {
        use crate::store::{BlobMeta, BlobStore, Listed};
        use futures::StreamExt;
        let bs = 64 << 10;
        let mut store = crate::store::conformance::azurite_store(Some(bs)).await;
        store.upload_budget = UploadBudget::of(2 * bs);
        let watch = store.upload_budget.clone();
        let writes = (0..4u8).map(|i| {
            let store = store.clone();
            let data: Vec<u8> = (0..16 * bs).map(|j| (j as u8) ^ i).collect();
            async move {
                let meta = BlobMeta {
                    name: format!("b{i}"),
                    size: data.len() as u64,
                    modified: chrono::Utc::now(),
                    etag: format!("e{i}"),
                    md5: None,
                    props: None,
                    mode: None,
                };
                let chunks: Vec<Result<bytes::Bytes, _>> = data
                    .chunks(20_000)
                    .map(|c| Ok(bytes::Bytes::copy_from_slice(c)))
                    .collect();
                store
                    .write(&meta, futures::stream::iter(chunks).boxed())
                    .await
                    .map(|()| md5_simd::digest(&data))
            }
        });
        let mut lowest = usize::MAX;
        let all = tokio::time::timeout(
            std::time::Duration::from_secs(60),
            futures::future::join_all(writes),
        );
        tokio::pin!(all);
        let sums = loop {
            tokio::select! {
                done = &mut all => break done.expect("the uploads are stuck"),
                _ = tokio::time::sleep(std::time::Duration::from_millis(1)) => {
                    lowest = lowest.min(watch.sem.available_permits());
                }
            }
        };
        assert!(
            lowest < watch.units as usize / 2,
            "the budget was not used: {lowest}"
        );
        let mut listed = store.list();
        let mut n = 0;
        while let Some(item) = listed.next().await {
            let Listed::Blob(m) = item.unwrap() else {
                continue;
            };
            let i: usize = m.name[1..].parse().unwrap();
            assert_eq!(m.md5, Some(*sums[i].as_ref().unwrap()), "{}", m.name);
            n += 1;
        }
        assert_eq!(n, 4);
    }

    #[test]
    fn the_budget_holds_two_blocks_of_any_size() {
        let budget = UploadBudget::new(4000 << 20);
        assert_eq!(budget.units, (2 * 4000) << 10);
    }
}
