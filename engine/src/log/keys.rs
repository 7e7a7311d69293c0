//! Key layout of the one sled tree (see docs/EVENTS.md):
//! `job(16) ++ 0x00 ++ seq(u64 BE)` -> event chunk: the records of one writer
//!                                     batch, starting at that seq,
//! `job(16) ++ 0x01 ++ blob name`   -> checkpoint entry,
//! `job(16) ++ 0x02`                -> cached job summary.
//! Everything of a job shares its 16-byte prefix, and UUIDv7 ids make jobs
//! sort by submission time.
//!
//! The history index lives under the reserved id [`INDEX`] (all ones, after
//! every UUIDv7), so job scans skip it like the control stream:
//! `INDEX(16) ++ 0x01 ++ address ++ 0x00 ++ job(16) ++ seq(u64 BE)` -> one
//! [`crate::projection::HistoryEntry`]. Address first, so one blob's (or one
//! folder's) history is a range scan, oldest job first within an address.

use uuid::Uuid;

use crate::job::JobId;

/// The reserved 16-byte prefix of the history index; never a job.
pub const INDEX: JobId = JobId(Uuid::from_bytes([0xff; 16]));
/// Index kind byte of the per-blob history (leaves room for other indexes;
/// must stay below 0xff, which `after_job` uses).
pub const HISTORY: u8 = 0x01;
/// Ends the address in a history key: below `/`, so a blob's own lines sort
/// before the lines of names under it, and an exact scan never meets them.
pub const HISTORY_END: u8 = 0x00;

pub const EVENT: u8 = 0x00;
pub const BLOB: u8 = 0x01;
pub const SUMMARY: u8 = 0x02;

pub fn event(job: JobId, seq: u64) -> [u8; 25] {
    let mut k = [0u8; 25];
    k[..16].copy_from_slice(job.as_bytes());
    k[16] = EVENT;
    k[17..].copy_from_slice(&seq.to_be_bytes());
    k
}

pub fn event_prefix(job: JobId) -> [u8; 17] {
    prefix(job, EVENT)
}

pub fn blob(job: JobId, name: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(17 + name.len());
    k.extend_from_slice(job.as_bytes());
    k.push(BLOB);
    k.extend_from_slice(name.as_bytes());
    k
}

pub fn blob_prefix(job: JobId) -> [u8; 17] {
    prefix(job, BLOB)
}

pub fn summary(job: JobId) -> [u8; 17] {
    prefix(job, SUMMARY)
}

fn prefix(job: JobId, kind: u8) -> [u8; 17] {
    let mut k = [0u8; 17];
    k[..16].copy_from_slice(job.as_bytes());
    k[16] = kind;
    k
}

/// The smallest key greater than every key of `job`: where a scan for the
/// next job continues.
pub fn after_job(job: JobId) -> [u8; 17] {
    prefix(job, 0xff)
}

/// Index kind byte of the index's own metadata (below every index).
pub const META: u8 = 0x00;

/// Present once the history index covers every event in the log: a log
/// written before the index existed gets it built once when opened.
pub fn index_marker() -> [u8; 17] {
    prefix(INDEX, META)
}

/// The history key of one blob event at one address.
pub fn history(address: &str, job: JobId, seq: u64) -> Vec<u8> {
    let mut k = history_exact(address);
    k.extend_from_slice(job.as_bytes());
    k.extend_from_slice(&seq.to_be_bytes());
    k
}

/// Prefix of every history line of exactly `address`.
pub fn history_exact(address: &str) -> Vec<u8> {
    let mut k = history_prefix(address);
    k.push(HISTORY_END);
    k
}

/// Prefix of every history line whose address starts with `text` (a raw
/// string prefix: callers add the `/` for "names under this folder").
pub fn history_prefix(text: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(17 + text.len() + 25);
    k.extend_from_slice(INDEX.as_bytes());
    k.push(HISTORY);
    k.extend_from_slice(text.as_bytes());
    k
}

/// Splits a history key into (address, job, seq).
pub fn parse_history(key: &[u8]) -> Option<(&str, JobId, u64)> {
    let body = key
        .strip_prefix(INDEX.as_bytes())?
        .strip_prefix(&[HISTORY])?;
    let split = body.len().checked_sub(25)?;
    let (address, tail) = body.split_at(split);
    let (end, rest) = tail.split_first()?;
    if *end != HISTORY_END {
        return None;
    }
    let job = JobId::from_slice(&rest[..16])?;
    let seq = u64::from_be_bytes(rest[16..24].try_into().ok()?);
    Some((std::str::from_utf8(address).ok()?, job, seq))
}

/// The sequence number of an event key.
pub fn seq_of(key: &[u8]) -> Option<u64> {
    let b: [u8; 8] = key.get(17..25)?.try_into().ok()?;
    Some(u64::from_be_bytes(b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_keys_sort_by_sequence_number() {
        let j = JobId::new();
        assert!(event(j, 255) < event(j, 256));
        assert!(event(j, u64::MAX).as_slice() < blob(j, "").as_slice());
        assert!(blob(j, "zzz").as_slice() < summary(j).as_slice());
        assert!(summary(j).as_slice() < after_job(j).as_slice());
        assert_eq!(seq_of(&event(j, 77)), Some(77));
    }

    #[test]
    fn history_keys_sort_after_every_job_and_round_trip() {
        let j = JobId::new();
        let k = history("prod:photos/2024/a.jpg", j, 9);
        assert!(after_job(j).as_slice() < k.as_slice());
        assert!(k.as_slice() < after_job(INDEX).as_slice());
        assert_eq!(parse_history(&k), Some(("prod:photos/2024/a.jpg", j, 9)));
        // A blob's own lines come before the lines of names under it.
        assert!(history("a", j, u64::MAX) < history("a/b", JobId::CONTROL, 0));
        assert!(k.starts_with(&history_exact("prod:photos/2024/a.jpg")));
        assert!(!k.starts_with(&history_exact("prod:photos/2024/a")));
        assert!(k.starts_with(&history_prefix("prod:photos/2024/")));
    }
}
