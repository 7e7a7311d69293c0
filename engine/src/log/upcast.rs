//! Schema evolution: records are stored as written and brought up to the
//! current schema when read, one step per version, so an old state dir
//! replays, verifies and reports with a new binary without a migration.
//!
//! Steps:
//! - 1 -> 2: `BlobFailed.attempts` became `tries` (as in `BlobCopied`);
//!   "attempt" is a job's run, not a blob's.
//! - 2 -> 3: none (`JobPruned` was added); version 2 records decode
//!   directly ([`SAME_SHAPE_SINCE`]).

use rmpv::Value;

use crate::event::{EventRecord, SAME_SHAPE_SINCE, SCHEMA_VERSION};

/// Decodes one event chunk of the named layout (see `log::chunk`), upcasting older records. Records whose
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

/// Decodes one record as `serde_json` wrote it (an export line), upcasting
/// an older schema with the same steps as stored chunks.
pub fn decode_json_record(value: serde_json::Value) -> Result<EventRecord, String> {
    let v = value
        .get("v")
        .and_then(serde_json::Value::as_u64)
        .ok_or("a record without a schema version")?;
    if v > SCHEMA_VERSION as u64 {
        return Err(newer(v));
    }
    if v >= SAME_SHAPE_SINCE as u64 {
        let mut rec: EventRecord = serde_json::from_value(value).map_err(|e| e.to_string())?;
        rec.v = SCHEMA_VERSION;
        return Ok(rec);
    }
    // The steps work on MessagePack values; JSON maps onto them and back
    // without loss for what records hold (strings, integers, maps, lists).
    let mut rec = json_to_msgpack(value);
    upcast(&mut rec)?;
    serde_json::from_value(msgpack_to_json(rec)?).map_err(|e| e.to_string())
}

fn json_to_msgpack(v: serde_json::Value) -> Value {
    use serde_json::Value as J;
    match v {
        J::Null => Value::Nil,
        J::Bool(b) => Value::from(b),
        J::Number(n) => match (n.as_u64(), n.as_i64(), n.as_f64()) {
            (Some(u), _, _) => Value::from(u),
            (_, Some(i), _) => Value::from(i),
            (_, _, Some(f)) => Value::from(f),
            _ => Value::Nil,
        },
        J::String(s) => Value::from(s),
        J::Array(a) => Value::Array(a.into_iter().map(json_to_msgpack).collect()),
        J::Object(m) => Value::Map(
            m.into_iter()
                .map(|(k, v)| (Value::from(k), json_to_msgpack(v)))
                .collect(),
        ),
    }
}

fn msgpack_to_json(v: Value) -> Result<serde_json::Value, String> {
    use serde_json::Value as J;
    Ok(match v {
        Value::Nil => J::Null,
        Value::Boolean(b) => J::Bool(b),
        Value::Integer(i) => match (i.as_u64(), i.as_i64()) {
            (Some(u), _) => J::from(u),
            (_, Some(i)) => J::from(i),
            _ => return Err("an integer out of range".into()),
        },
        Value::F32(f) => J::from(f as f64),
        Value::F64(f) => J::from(f),
        Value::String(s) => J::String(s.into_str().ok_or("a string that is not UTF-8")?),
        Value::Array(a) => J::Array(
            a.into_iter()
                .map(msgpack_to_json)
                .collect::<Result<_, _>>()?,
        ),
        Value::Map(m) => {
            let mut out = serde_json::Map::new();
            for (k, v) in m {
                let k = k
                    .as_str()
                    .ok_or("a map key that is not a string")?
                    .to_string();
                out.insert(k, msgpack_to_json(v)?);
            }
            J::Object(out)
        }
        Value::Binary(_) | Value::Ext(..) => return Err("binary data in a JSON record".into()),
    })
}

pub(super) fn newer(v: u64) -> String {
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
    fn given_a_schema_1_json_record_when_imported_then_it_is_upcast() {
        let job = crate::job::JobId::new();
        let line = serde_json::json!({
            "v": 1, "job": job, "seq": 3, "at": "2026-01-02T03:04:05.123456789Z",
            "event": {"type": "BlobFailed", "data": {
                "name": "a", "error_kind": "io", "message": "boom", "attempts": 2}}
        });
        let rec = decode_json_record(line).unwrap();
        assert_eq!((rec.v, rec.job, rec.seq), (SCHEMA_VERSION, job, 3));
        assert_eq!(rec.at.to_rfc3339(), "2026-01-02T03:04:05.123456789+00:00");
        match &rec.event {
            Event::BlobFailed { tries, .. } => assert_eq!(*tries, 2),
            other => panic!("{other:?}"),
        }
        let newer = serde_json::json!({"v": SCHEMA_VERSION + 1});
        assert!(decode_json_record(newer)
            .unwrap_err()
            .contains("upgrade ferry"));
    }

    #[test]
    fn a_record_from_a_newer_schema_is_refused_with_a_clear_message() {
        let mut v = Value::Map(vec![(Value::from("v"), Value::from(SCHEMA_VERSION + 1))]);
        let e = upcast(&mut v).unwrap_err();
        assert!(e.contains("upgrade ferry"), "{e}");
    }
}
