//! Key layout of the one sled tree (see docs/EVENTS.md):
//! `job(16) ++ 0x00 ++ seq(u64 BE)` -> event chunk: the records of one writer
//!                                     batch, starting at that seq,
//! `job(16) ++ 0x01 ++ blob name`   -> checkpoint entry,
//! `job(16) ++ 0x02`                -> cached job summary.
//! Everything of a job shares its 16-byte prefix, and UUIDv7 ids make jobs
//! sort by submission time.

use crate::job::JobId;

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
}
