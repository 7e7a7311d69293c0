//! Runs: the checkpoint entries and history lines of many copies and skips
//! of one attempt in one sled value, in name order.
//!
//! Why: a sled key costs 5-7 µs of writer CPU and its share of memory until
//! flushed, whatever its size. One checkpoint key and one history key per
//! blob made the log writer the bottleneck (a 100k-blob no-op run: 1.4 s of
//! writer CPU, 205 MB peak RSS; without per-blob keys 0.15 s and 36 MB).
//! The planner logs skips in listing (name) order and workers finish copies
//! nearly in that order, so each writer batch sorts its outcomes per job and
//! attempt and writes those above the attempt's greatest name so far as one
//! run. Runs of an attempt are then disjoint and ordered, and the only run
//! that can hold a name is the first whose greatest name is at or after it:
//! one seek per attempt. Outcomes that arrive out of order (a large blob
//! finishing late), failures (their full message is kept) and everything
//! of older logs stay one key each, so readers merge both, newest seq wins.

use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};

use crate::event::Event;
use crate::projection::history::{HistoryEntry, Stored};
use crate::projection::BlobState;

/// Most outcomes in one run (~4 KB): a lookup decodes a whole run, and
/// sled keeps small values' nodes inline and evictable (see the writer's
/// `VALUE_BYTES`).
pub(crate) const RUN_MAX: usize = 64;

/// One outcome in a run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunItem {
    pub name: String,
    pub seq: u64,
    pub entry: HistoryEntry,
}

impl RunItem {
    /// The checkpoint entry this outcome stands for (copies and skips carry
    /// nothing a history line lacks).
    pub fn state(&self) -> BlobState {
        BlobState {
            status: self.entry.status,
            etag: self.entry.etag.clone(),
            seq: self.seq,
            error_kind: None,
            message: None,
        }
    }
}

/// Whether an event's outcome may go into a run.
pub(super) fn eligible(event: &Event) -> bool {
    matches!(event, Event::BlobCopied { .. } | Event::BlobSkipped { .. })
}

/// A run's item as stored: written borrowed from its event (`&str`), read
/// owned.
#[derive(Serialize, Deserialize)]
pub(crate) struct StoredItem<S = String>(S, u64, Stored<S>);

impl<'a> StoredItem<&'a str> {
    pub(crate) fn new(name: &'a str, seq: u64, line: Stored<&'a str>) -> Self {
        StoredItem(name, seq, line)
    }

    pub(crate) fn name(&self) -> &'a str {
        self.0
    }
}

/// Encodes items given in name order.
pub(crate) fn encode_stored(items: &[StoredItem<&str>]) -> Result<Vec<u8>, String> {
    // A copy's item is ~75 bytes with its name: most runs fit at once.
    let guess: usize = items.iter().map(|i| i.0.len() + 72).sum();
    let mut out = Vec::with_capacity(guess);
    rmp_serde::encode::write(&mut out, items).map_err(|e| format!("cannot encode a run: {e}"))?;
    Ok(out)
}

/// [`encode_stored`] for owned items (tests write runs by hand).
#[cfg(test)]
pub(crate) fn encode(items: &[RunItem]) -> Result<Vec<u8>, String> {
    let stored = items
        .iter()
        .map(|i| Ok(StoredItem(i.name.as_str(), i.seq, i.entry.to_stored()?)))
        .collect::<Result<Vec<_>, String>>()?;
    encode_stored(&stored)
}

pub(crate) fn decode(bytes: &[u8]) -> Result<Vec<RunItem>, String> {
    let stored: Vec<StoredItem> =
        rmp_serde::from_slice(bytes).map_err(|e| format!("undecodable run: {e}"))?;
    let items = stored
        .into_iter()
        .map(|StoredItem(name, seq, s)| {
            Ok(RunItem {
                name,
                seq,
                entry: HistoryEntry::from_stored(s)?,
            })
        })
        .collect::<Result<Vec<_>, String>>()?;
    if items.windows(2).any(|w| w[0].name >= w[1].name) {
        return Err("a run out of name order".into());
    }
    Ok(items)
}

/// The last few decoded runs: a replay looks names up in listing order, so
/// consecutive lookups land in the same run (one per attempt).
#[derive(Default)]
pub(super) struct RunCache {
    slots: Mutex<Vec<Slot>>,
}

/// A run's key and its decoded items.
type Slot = (Vec<u8>, Arc<Vec<RunItem>>);

const CACHE_SLOTS: usize = 8;

impl RunCache {
    pub(super) fn get_or_decode(
        &self,
        key: &[u8],
        value: &[u8],
    ) -> Result<Arc<Vec<RunItem>>, String> {
        if let Ok(slots) = self.slots.lock() {
            if let Some((_, items)) = slots.iter().find(|(k, _)| k == key) {
                return Ok(items.clone());
            }
        }
        let items = Arc::new(decode(value)?);
        if let Ok(mut slots) = self.slots.lock() {
            if slots.len() == CACHE_SLOTS {
                slots.remove(0);
            }
            slots.push((key.to_vec(), items.clone()));
        }
        Ok(items)
    }

    /// Forgets everything (a prune or import changed what is stored).
    pub(super) fn clear(&self) {
        if let Ok(mut slots) = self.slots.lock() {
            slots.clear();
        }
    }
}

/// The newer of two checkpoint entries of one blob.
pub(super) fn newer(a: Option<BlobState>, b: Option<BlobState>) -> Option<BlobState> {
    match (a, b) {
        (Some(a), Some(b)) => Some(if b.seq > a.seq { b } else { a }),
        (a, b) => a.or(b),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::projection::BlobStatus;

    fn item(name: &str, seq: u64) -> RunItem {
        RunItem {
            name: name.into(),
            seq,
            entry: HistoryEntry {
                status: BlobStatus::Skipped,
                reason: Some("not-newer".into()),
                error_kind: None,
                message: None,
                etag: Some(format!("e{seq}")),
                attempt: 1,
                at: chrono::DateTime::from_timestamp_nanos(1_700_000_000_123_456_789),
            },
        }
    }

    #[test]
    fn a_run_round_trips_and_stands_for_checkpoint_entries() {
        let items = vec![item("a", 3), item("b/c", 1)];
        let back = decode(&encode(&items).unwrap()).unwrap();
        assert_eq!(back, items);
        let s = back[1].state();
        assert_eq!(s.status, BlobStatus::Skipped);
        assert_eq!(s.etag.as_deref(), Some("e1"));
        assert_eq!(s.seq, 1);
    }

    #[test]
    fn a_run_out_of_name_order_is_refused() {
        let bytes = encode(&[item("b", 1), item("a", 2)]).unwrap();
        assert!(decode(&bytes).unwrap_err().contains("order"));
    }

    #[test]
    fn the_newer_entry_wins() {
        let (a, b) = (item("x", 4).state(), item("x", 9).state());
        assert_eq!(newer(Some(a.clone()), Some(b.clone())), Some(b.clone()));
        assert_eq!(newer(Some(b.clone()), Some(a.clone())), Some(b));
        assert_eq!(newer(None, Some(a.clone())), Some(a));
        assert_eq!(newer(None, None), None);
    }
}
