//! Schema evolution: records are stored as written and brought up to the
//! current schema when read, one step per version, so an old state dir
//! replays, verifies and reports with a new binary without a migration.
//!
//! Steps:
//! - 1 -> 2: `BlobFailed.attempts` became `tries` (as in `BlobCopied`);
//!   "attempt" is a job's run, not a blob's.

use rmpv::Value;

use crate::event::{EventRecord, SCHEMA_VERSION};

/// Decodes one stored event chunk, upcasting older records. Records whose
/// shape did not change decode directly; a chunk that does not (an old
/// shape) is read as generic MessagePack values, upcast, then decoded.
pub fn decode_chunk(bytes: &[u8]) -> Result<Vec<EventRecord>, String> {
    let direct = match rmp_serde::from_slice::<Vec<EventRecord>>(bytes) {
        Ok(mut recs) => {
            for r in &mut recs {
                if r.v > SCHEMA_VERSION {
                    return Err(newer(r.v as u64));
                }
                r.v = SCHEMA_VERSION;
            }
            return Ok(recs);
        }
        Err(e) => e,
    };
    let mut chunk = rmpv::decode::read_value(&mut &bytes[..]).map_err(|_| direct.to_string())?;
    let Value::Array(recs) = &mut chunk else {
        return Err(direct.to_string());
    };
    for rec in recs.iter_mut() {
        upcast(rec)?;
    }
    // Re-encoded and decoded the usual way: the typed decoder is the one
    // that knows the event enum's encoding.
    let mut upcast_bytes = Vec::with_capacity(bytes.len());
    rmpv::encode::write_value(&mut upcast_bytes, &chunk).map_err(|e| e.to_string())?;
    rmp_serde::from_slice(&upcast_bytes).map_err(|e| e.to_string())
}

fn newer(v: u64) -> String {
    format!("a record of schema {v}, newer than this ferry knows ({SCHEMA_VERSION}); upgrade ferry")
}

/// The value under `key` in a MessagePack map.
fn field<'a>(map: &'a mut Value, key: &str) -> Option<&'a mut Value> {
    match map {
        Value::Map(entries) => entries
            .iter_mut()
            .find(|(k, _)| k.as_str() == Some(key))
            .map(|(_, v)| v),
        _ => None,
    }
}

/// Brings one record (as a generic value) up to the current schema.
pub fn upcast(rec: &mut Value) -> Result<(), String> {
    let v = field(rec, "v")
        .and_then(|v| v.as_u64())
        .ok_or("a record without a schema version")?;
    if v > SCHEMA_VERSION as u64 {
        return Err(newer(v));
    }
    if v < 2 {
        v1_to_v2(rec);
    }
    if let Some(v) = field(rec, "v") {
        *v = Value::from(SCHEMA_VERSION);
    }
    Ok(())
}

fn v1_to_v2(rec: &mut Value) {
    let Some(event) = field(rec, "event") else {
        return;
    };
    if field(event, "type")
        .and_then(|t| t.as_str().map(str::to_string))
        .as_deref()
        != Some("BlobFailed")
    {
        return;
    }
    if let Some(Value::Map(data)) = field(event, "data") {
        for (k, _) in data.iter_mut() {
            if k.as_str() == Some("attempts") {
                *k = Value::from("tries");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::Event;
    use serde::Serialize;

    /// A schema-1 `BlobFailed`, encoded as schema 1 wrote it.
    #[derive(Serialize)]
    struct V1Record {
        v: u16,
        job: crate::job::JobId,
        seq: u64,
        at: chrono::DateTime<chrono::Utc>,
        event: V1Event,
    }

    #[derive(Serialize)]
    #[serde(tag = "type", content = "data")]
    enum V1Event {
        BlobFailed {
            name: String,
            error_kind: crate::event::ErrorKind,
            message: String,
            attempts: u32,
        },
    }

    #[test]
    fn given_a_schema_1_chunk_when_read_then_blob_failed_attempts_become_tries() {
        let rec = V1Record {
            v: 1,
            job: crate::job::JobId::new(),
            seq: 0,
            at: chrono::Utc::now(),
            event: V1Event::BlobFailed {
                name: "a".into(),
                error_kind: crate::event::ErrorKind::Io,
                message: "boom".into(),
                attempts: 4,
            },
        };
        let bytes = rmp_serde::to_vec_named(&vec![rec]).unwrap();
        let recs = decode_chunk(&bytes).unwrap();
        assert_eq!(recs[0].v, SCHEMA_VERSION);
        match &recs[0].event {
            Event::BlobFailed { tries, .. } => assert_eq!(*tries, 4),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_record_from_a_newer_schema_is_refused_with_a_clear_message() {
        let mut v = Value::Map(vec![(Value::from("v"), Value::from(SCHEMA_VERSION + 1))]);
        let e = upcast(&mut v).unwrap_err();
        assert!(e.contains("upgrade ferry"), "{e}");
    }
}
