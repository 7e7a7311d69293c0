use chrono::{DateTime, TimeZone, Utc};
use rmpv::Value;

use super::{decode, encode};
use crate::event::{CopyMethod, CopyReason, ErrorKind, Event, EventRecord, SCHEMA_VERSION};
use crate::job::JobId;
use crate::log::keys;

fn copied(name: &str) -> Event {
    Event::BlobCopied {
        name: name.into(),
        bytes: 4096,
        src_etag: "18ebd0222e1f9ced-1000".into(),
        reason: CopyReason::New,
        method: CopyMethod::LocalFile,
        ms: 0,
        tries: 1,
        detail: None,
        retries: [("503 ServerBusy".to_string(), 2)].into(),
    }
}

fn records(job: JobId, first: u64, at: DateTime<Utc>, n: u64) -> Vec<EventRecord> {
    (0..n)
        .map(|i| EventRecord {
            v: SCHEMA_VERSION,
            job,
            seq: first + i,
            // Times a little apart, one before the first (an import may
            // hold any order).
            at: at + chrono::Duration::nanoseconds(i as i64 * 1_234_567 - 5),
            event: copied(&format!("d00/f{i:05}.bin")),
        })
        .collect()
}

#[test]
fn given_records_when_encoded_compactly_then_they_read_back_exactly_in_far_fewer_bytes() {
    let job = JobId::new();
    let recs = records(job, 1_000, Utc::now(), 16);
    let bytes = encode(&recs).unwrap();
    assert_eq!(decode(&keys::event(job, 1_000), &bytes).unwrap(), recs);
    let named = rmp_serde::to_vec_named(&recs).unwrap();
    assert!(
        bytes.len() * 4 < named.len() * 3,
        "compact {} bytes, named {}",
        bytes.len(),
        named.len()
    );
}

#[test]
fn given_a_pruned_chunk_with_gaps_when_read_then_each_record_keeps_its_seq() {
    let job = JobId::new();
    let mut recs = records(job, 0, Utc::now(), 3);
    recs[1].seq = 40;
    recs[2].seq = 1_000_000;
    let bytes = encode(&recs).unwrap();
    assert_eq!(decode(&keys::event(job, 0), &bytes).unwrap(), recs);
}

#[test]
fn given_a_named_chunk_from_before_when_read_then_it_decodes_as_before() {
    let job = JobId::new();
    let recs = records(job, 7, Utc::now(), 4);
    let named = rmp_serde::to_vec_named(&recs).unwrap();
    assert_eq!(decode(&keys::event(job, 7), &named).unwrap(), recs);
}

#[test]
fn given_a_time_nanoseconds_cannot_hold_when_encoded_then_the_named_layout_keeps_it() {
    let job = JobId::new();
    let far = Utc.with_ymd_and_hms(2600, 1, 2, 3, 4, 5).unwrap();
    let mut recs = records(job, 0, Utc::now(), 2);
    recs[1].at = far;
    let bytes = encode(&recs).unwrap();
    assert_eq!(bytes, rmp_serde::to_vec_named(&recs).unwrap());
    assert_eq!(decode(&keys::event(job, 0), &bytes).unwrap(), recs);
}

/// A compact chunk as written by hand: layout 2 at any schema.
fn compact(schema: u16, events: Vec<Value>) -> Vec<u8> {
    let recs = events
        .into_iter()
        .enumerate()
        .map(|(i, e)| Value::Array(vec![Value::from(i as u64), Value::from(i as i64), e]))
        .collect();
    let chunk = Value::Array(vec![
        Value::from(2),
        Value::from(schema),
        Value::from(1_700_000_000_000_000_000i64),
        Value::Array(recs),
    ]);
    let mut bytes = Vec::new();
    rmpv::encode::write_value(&mut bytes, &chunk).unwrap();
    bytes
}

fn map(fields: Vec<(&str, Value)>) -> Value {
    Value::Map(
        fields
            .into_iter()
            .map(|(k, v)| (Value::from(k), v))
            .collect(),
    )
}

#[test]
fn given_a_compact_chunk_of_an_older_schema_when_read_then_its_events_are_upcast() {
    let job = JobId::new();
    let failed = map(vec![
        ("type", Value::from("BlobFailed")),
        (
            "data",
            map(vec![
                ("name", Value::from("a")),
                ("error_kind", Value::from("io")),
                ("message", Value::from("boom")),
                ("attempts", Value::from(3)),
            ]),
        ),
    ]);
    let recs = decode(&keys::event(job, 5), &compact(1, vec![failed])).unwrap();
    assert_eq!(
        (recs[0].job, recs[0].seq, recs[0].v),
        (job, 5, SCHEMA_VERSION)
    );
    assert_eq!(
        recs[0].at.timestamp_nanos_opt(),
        Some(1_700_000_000_000_000_000)
    );
    match &recs[0].event {
        Event::BlobFailed {
            tries, error_kind, ..
        } => assert_eq!((*tries, *error_kind), (3, ErrorKind::Io)),
        other => panic!("{other:?}"),
    }
}

#[test]
fn given_a_compact_chunk_of_a_newer_schema_when_read_then_it_asks_for_an_upgrade() {
    let e = decode(
        &keys::event(JobId::new(), 0),
        &compact(SCHEMA_VERSION + 1, vec![Value::Nil]),
    )
    .unwrap_err();
    assert!(e.contains("upgrade ferry"), "{e}");
}

#[test]
fn given_a_compact_chunk_of_schema_2_when_read_then_it_decodes_as_is() {
    // Schema 3 only added an event, so a version 2 chunk is read directly.
    let job = JobId::new();
    let recs = records(job, 0, Utc::now(), 4);
    let mut bytes = encode(&recs).unwrap();
    assert_eq!(
        bytes[2], SCHEMA_VERSION as u8,
        "the version follows the tag"
    );
    bytes[2] = 2;
    assert_eq!(decode(&keys::event(job, 0), &bytes).unwrap(), recs);
    // One newer than this ferry knows is refused, naming the fix.
    bytes[2] = SCHEMA_VERSION as u8 + 1;
    let e = decode(&keys::event(job, 0), &bytes).unwrap_err();
    assert!(e.contains("upgrade ferry"), "{e}");
}
