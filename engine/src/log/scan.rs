//! Long scans that let sled's cache evict as they go, and the walk from job to job.
//!
//! Why: sled's iterator keeps the leaf it is in and records one cache
//! access per leaf it moves to, and sled's LRU only evicts once one of its
//! 256 shards has gathered 64 accesses. A long scan therefore pages leaves
//! in far faster than they can leave: printing a 1M-blob job's events
//! peaked at 108 MB, two such jobs at 188 MB, and on up with the log. One
//! more read of each key through `get` records an access per key, so
//! eviction keeps up: 40 and 42 MB, with no measurable cost (0.82 s for
//! 1M events either way; a `get` of the key just read finds its leaf hot).

use sled::{IVec, Iter, Tree};

use super::keys;
use crate::job::JobId;

/// `iter` over `tree`, recording a cache access for every key it yields.
pub(super) fn touched(tree: &Tree, iter: Iter) -> Touched<'_> {
    Touched { tree, iter }
}

pub(super) struct Touched<'a> {
    tree: &'a Tree,
    iter: Iter,
}

impl Iterator for Touched<'_> {
    type Item = sled::Result<(IVec, IVec)>;

    fn next(&mut self) -> Option<Self::Item> {
        let item = self.iter.next()?;
        if let Ok((k, _)) = &item {
            // Only the access matters; a read error shows on the scan's
            // next step.
            let _ = self.tree.get(k);
        }
        Some(item)
    }
}

/// Every id that leads keys in `tree` (jobs, the control stream, the
/// index), in key order: one seek per id rather than a scan of every key.
pub(super) fn job_ids(tree: &Tree) -> impl Iterator<Item = Result<JobId, String>> + '_ {
    let mut from: Option<Vec<u8>> = Some(Vec::new());
    std::iter::from_fn(move || {
        let start = from.take()?;
        let (k, _) = match tree.range(start.as_slice()..).next()? {
            Ok(kv) => kv,
            Err(e) => return Some(Err(e.to_string())),
        };
        let Some(job) = k.get(..16).and_then(JobId::from_slice) else {
            return Some(Err("a key shorter than a job id".into()));
        };
        from = Some(keys::after_job(job).to_vec());
        Some(Ok(job))
    })
}
