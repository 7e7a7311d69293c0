//! How event chunks are stored. A chunk's key already holds its job and its
//! first record's seq, so the compact layout stores neither per record, and
//! keeps times as nanoseconds after the chunk's first instead of RFC 3339
//! text: ~125 bytes per `BlobCopied` instead of ~220. Encoding the job id
//! and the time as text was a tenth of the writer's time, and sled's cost
//! grows with the bytes it copies into each rewritten leaf.
//!
//! Layout 2 (compact): `[2, schema, first_at_ns, [[seq - first_seq,
//! at_ns - first_at_ns, event], ...]]`, the event with named fields as
//! before, so an added optional field still reads in old records.
//! Layout 1 (named): an array of whole records with named fields, as
//! written before layout 2; still read, and still written for a chunk with a
//! time outside 1677-2262 (nanoseconds in an i64 cannot hold it; import
//! refuses such records, so this only keeps encoding total).

use chrono::{DateTime, Utc};
use rmpv::Value;
use serde::ser::{SerializeSeq, SerializeTuple};
use serde::{Serialize, Serializer};

use super::{keys, upcast};
use crate::event::{Event, EventRecord, SAME_SHAPE_SINCE, SCHEMA_VERSION};
use crate::job::JobId;

/// The first element of a compact chunk. A named chunk's first element is a
/// map, never an integer, so one byte tells the layouts apart.
const COMPACT: u8 = 2;
/// MessagePack's marker of a 4-element array.
const FIXARRAY_4: u8 = 0x94;

/// Encodes consecutive records of one job (all of the current schema; the
/// key holds the job and the first seq).
pub(super) fn encode(recs: &[EventRecord]) -> Result<Vec<u8>, String> {
    let ns: Option<Vec<i64>> = recs.iter().map(|r| r.at.timestamp_nanos_opt()).collect();
    // A copy's record is ~125 bytes: most chunks are encoded without regrowth.
    let mut out = Vec::with_capacity(16 + recs.len() * 160);
    let result = match (ns, recs.first()) {
        (Some(ns), Some(first)) if recs.iter().all(|r| r.v == SCHEMA_VERSION) => {
            rmp_serde::encode::write_named(
                &mut out,
                &Compact {
                    first_seq: first.seq,
                    ns: &ns,
                    recs,
                },
            )
        }
        _ => rmp_serde::encode::write_named(&mut out, recs),
    };
    result.map_err(|e| format!("cannot encode events: {e}"))?;
    Ok(out)
}

/// Decodes the chunk stored under `key`, either layout, upcasting records
/// of an older schema.
pub fn decode(key: &[u8], bytes: &[u8]) -> Result<Vec<EventRecord>, String> {
    if bytes.get(..2) != Some(&[FIXARRAY_4, COMPACT]) {
        return upcast::decode_chunk(bytes);
    }
    let job = key
        .get(..16)
        .and_then(JobId::from_slice)
        .ok_or("an event key without a job id")?;
    let first_seq = keys::seq_of(key).ok_or("an event key without a seq")?;
    // The schema follows the two bytes checked above; read alone, so the
    // chunk is walked once.
    let v: u16 = rmp_serde::decode::from_read(&bytes[2..]).map_err(|e| e.to_string())?;
    if (SAME_SHAPE_SINCE..=SCHEMA_VERSION).contains(&v) {
        let (_, _, base, recs): (u8, u16, i64, Vec<(u64, i64, Event)>) =
            rmp_serde::from_slice(bytes).map_err(|e| e.to_string())?;
        return recs
            .into_iter()
            .map(|(dseq, dns, event)| record(job, first_seq, base, (dseq, dns), event))
            .collect();
    }
    if v > SCHEMA_VERSION {
        return Err(upcast::newer(v as u64));
    }
    // An older schema: each event is upcast as a generic value, then read.
    let (_, _, base, recs): (u8, u16, i64, Vec<(u64, i64, Value)>) =
        rmp_serde::from_slice(bytes).map_err(|e| e.to_string())?;
    recs.into_iter()
        .map(|(dseq, dns, event)| {
            let mut rec = Value::Map(vec![
                (Value::from("v"), Value::from(v)),
                (Value::from("event"), event),
            ]);
            upcast::upcast(&mut rec)?;
            let event = match rec {
                Value::Map(mut fields) => fields.pop().map(|(_, e)| e),
                _ => None,
            }
            .ok_or("an upcast record without its event")?;
            let mut bytes = Vec::new();
            rmpv::encode::write_value(&mut bytes, &event).map_err(|e| e.to_string())?;
            let event = rmp_serde::from_slice(&bytes).map_err(|e| e.to_string())?;
            record(job, first_seq, base, (dseq, dns), event)
        })
        .collect()
}

fn record(
    job: JobId,
    first_seq: u64,
    base: i64,
    (dseq, dns): (u64, i64),
    event: Event,
) -> Result<EventRecord, String> {
    let seq = first_seq
        .checked_add(dseq)
        .ok_or("a record's seq out of range")?;
    // Wrapping both ways: the difference of two i64 times may wrap, and
    // adding it back wrapped gives the time exactly.
    let at = DateTime::<Utc>::from_timestamp_nanos(base.wrapping_add(dns));
    Ok(EventRecord {
        v: SCHEMA_VERSION,
        job,
        seq,
        at,
        event,
    })
}

/// A compact chunk being encoded: borrowed records, their times in ns.
struct Compact<'a> {
    first_seq: u64,
    ns: &'a [i64],
    recs: &'a [EventRecord],
}

impl Serialize for Compact<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let base = self.ns.first().copied().unwrap_or(0);
        let mut t = s.serialize_tuple(4)?;
        t.serialize_element(&COMPACT)?;
        t.serialize_element(&SCHEMA_VERSION)?;
        t.serialize_element(&base)?;
        t.serialize_element(&Records { chunk: self, base })?;
        t.end()
    }
}

struct Records<'a> {
    chunk: &'a Compact<'a>,
    base: i64,
}

impl Serialize for Records<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let c = self.chunk;
        let mut seq = s.serialize_seq(Some(c.recs.len()))?;
        for (rec, ns) in c.recs.iter().zip(c.ns) {
            let dseq = rec.seq.wrapping_sub(c.first_seq);
            seq.serialize_element(&(dseq, ns.wrapping_sub(self.base), &rec.event))?;
        }
        seq.end()
    }
}

#[cfg(test)]
#[path = "chunk_tests.rs"]
mod tests;
