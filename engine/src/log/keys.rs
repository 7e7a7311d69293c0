//! Key layout of the one sled tree (see docs/EVENTS.md):
//! `job(16) ++ 0x00 ++ seq(u64 BE)` -> event chunk: the records of one writer
//!                                     batch, starting at that seq,
//! `job(16) ++ 0x01 ++ blob name`   -> checkpoint entry,
//! `job(16) ++ 0x02`                -> cached job summary.
//! Everything of a job shares its 16-byte prefix, and UUIDv7 ids make jobs
//! sort by submission time.
//!
//! `job(16) ++ 0x03 ++ blob name ++ 0x00 ++ seq(u64 BE)` -> one history
//!                                     line (what the blob event at seq did).
//!
//! The history index is per job, keyed by blob name: a job lists (and so
//! logs) its blobs in name order, so its lines are written nearly in key
//! order, like its events. (Address-first keys across jobs were measured:
//! every run dirtied pages all over the index, a no-op 100k-blob run took
//! 4x the time and 10x the memory.) A query maps the address to each job's
//! source or destination and range-scans that job. [`INDEX`] (all ones,
//! after every UUIDv7) holds the index's marker; job scans skip it like
//! the control stream.
//!
//! `job(16) ++ 0x04 ++ attempt(u32 BE) ++ greatest name` -> a run: the
//!                                     checkpoint entries and history lines
//!                                     of many copies and skips of one
//!                                     attempt, in name order (`log::runs`).

use uuid::Uuid;

use crate::job::JobId;

/// Reserved id for the index's own metadata; never a job.
pub const INDEX: JobId = JobId(Uuid::from_bytes([0xff; 16]));
/// Ends the name in a history key: below `/`, so a blob's own lines sort
/// before the lines of names under it, and an exact scan never meets them.
pub const HISTORY_END: u8 = 0x00;

pub const EVENT: u8 = 0x00;
pub const BLOB: u8 = 0x01;
pub const SUMMARY: u8 = 0x02;
pub const HISTORY: u8 = 0x03;
/// Runs: many blob outcomes of one attempt in one value (see `log::runs`).
pub const RUN: u8 = 0x04;

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

/// Kind byte of the index's own metadata under [`INDEX`].
pub const META: u8 = 0x00;

/// Present once the history index covers every event in the log: a log
/// written before the index existed gets it built once when opened.
pub fn index_marker() -> [u8; 17] {
    prefix(INDEX, META)
}

/// Kind bytes, under [`INDEX`], of keys that each name one job
/// (`INDEX ++ kind ++ job`): jobs being imported, and the open-jobs index
/// (see `log::open_jobs`); and of the open-jobs index's marker.
pub const IMPORTING: u8 = 0x01;
pub const OPEN: u8 = 0x02;
pub const OPEN_MARK: u8 = 0x03;

fn index_job(kind: u8, job: JobId) -> [u8; 33] {
    let mut k = [0u8; 33];
    k[..17].copy_from_slice(&prefix(INDEX, kind));
    k[17..].copy_from_slice(job.as_bytes());
    k
}

/// The job an `INDEX ++ kind ++ job` key names.
pub fn indexed_job(key: &[u8]) -> Option<JobId> {
    key.get(17..).and_then(JobId::from_slice)
}

/// Present while `job` is imported part by part: a job still marked when
/// the log is opened (the import died) is removed.
pub fn importing(job: JobId) -> [u8; 33] {
    index_job(IMPORTING, job)
}

/// Prefix of every [`importing`] mark.
pub fn importing_prefix() -> [u8; 17] {
    prefix(INDEX, IMPORTING)
}

/// Present while `job` is not settled.
pub fn open_job(job: JobId) -> [u8; 33] {
    index_job(OPEN, job)
}

/// Prefix of every [`open_job`] key.
pub fn open_prefix() -> [u8; 17] {
    prefix(INDEX, OPEN)
}

/// Present once the open-jobs index covers every job (a log from before it
/// gets it built once when opened).
pub fn open_marker() -> [u8; 17] {
    prefix(INDEX, OPEN_MARK)
}

/// The history key of the blob event at `seq` on blob `name` of `job`.
pub fn history(job: JobId, name: &str, seq: u64) -> Vec<u8> {
    let mut k = history_exact(job, name);
    k.extend_from_slice(&seq.to_be_bytes());
    k
}

/// Prefix of every history line of exactly blob `name` in `job`.
pub fn history_exact(job: JobId, name: &str) -> Vec<u8> {
    let mut k = history_prefix(job, name);
    k.push(HISTORY_END);
    k
}

/// Prefix of every history line of `job` whose name starts with `text` (a
/// raw string prefix: callers add the `/` for "names under this folder").
pub fn history_prefix(job: JobId, text: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(17 + text.len() + 9);
    k.extend_from_slice(&prefix(job, HISTORY));
    k.extend_from_slice(text.as_bytes());
    k
}

/// Splits a history key into (job, name, seq).
/// A run of one attempt, keyed by the greatest name in it, so the run that
/// may hold `name` is the first at or after `run(job, attempt, name)`.
pub fn run(job: JobId, attempt: u32, last: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(21 + last.len());
    k.extend_from_slice(&prefix(job, RUN));
    k.extend_from_slice(&attempt.to_be_bytes());
    k.extend_from_slice(last.as_bytes());
    k
}

/// The keys of one attempt's runs.
pub fn run_attempt_prefix(job: JobId, attempt: u32) -> [u8; 21] {
    let mut k = [0u8; 21];
    k[..17].copy_from_slice(&prefix(job, RUN));
    k[17..].copy_from_slice(&attempt.to_be_bytes());
    k
}

/// The keys of all of a job's runs.
pub fn run_prefix(job: JobId) -> [u8; 17] {
    prefix(job, RUN)
}

/// The attempt and greatest name of a run key.
pub fn parse_run(key: &[u8]) -> Option<(u32, &str)> {
    if *key.get(16)? != RUN {
        return None;
    }
    let attempt = u32::from_be_bytes(key.get(17..21)?.try_into().ok()?);
    Some((attempt, std::str::from_utf8(&key[21..]).ok()?))
}

pub fn parse_history(key: &[u8]) -> Option<(JobId, &str, u64)> {
    let job = JobId::from_slice(key.get(..16)?)?;
    if *key.get(16)? != HISTORY {
        return None;
    }
    let body = &key[17..];
    let split = body.len().checked_sub(9)?;
    let (name, tail) = body.split_at(split);
    if tail[0] != HISTORY_END {
        return None;
    }
    let seq = u64::from_be_bytes(tail[1..9].try_into().ok()?);
    Some((job, std::str::from_utf8(name).ok()?, seq))
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
    fn history_keys_sort_within_their_job_and_round_trip() {
        let j = JobId::new();
        let k = history(j, "2024/a.jpg", 9);
        assert!(summary(j).as_slice() < k.as_slice());
        assert!(k.as_slice() < after_job(j).as_slice());
        assert_eq!(parse_history(&k), Some((j, "2024/a.jpg", 9)));
        // A blob's own lines come before the lines of names under it.
        assert!(history(j, "a", u64::MAX) < history(j, "a/b", 0));
        assert!(k.starts_with(&history_exact(j, "2024/a.jpg")));
        assert!(!k.starts_with(&history_exact(j, "2024/a")));
        assert!(k.starts_with(&history_prefix(j, "2024/")));
        assert!(index_marker().as_slice() > after_job(j).as_slice());
    }

    #[test]
    fn run_keys_sort_by_attempt_then_last_name_inside_their_job() {
        let j = JobId::new();
        let k = run(j, 2, "d1/b");
        assert!(history(j, "zzz", u64::MAX) < k);
        assert!(k.as_slice() < after_job(j).as_slice());
        assert!(run(j, 1, "zzz") < run(j, 2, ""));
        assert!(run(j, 2, "d1/a") < k && k < run(j, 2, "d1/c"));
        assert!(k.starts_with(&run_attempt_prefix(j, 2)));
        assert!(k.starts_with(&run_prefix(j)));
        assert_eq!(parse_run(&k), Some((2, "d1/b")));
        assert_eq!(parse_run(&history(j, "x", 1)), None);
    }
}
