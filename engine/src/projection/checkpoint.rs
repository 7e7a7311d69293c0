//! Per-blob state within one job: what a replay needs to skip durable work.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::event::{ErrorKind, Event, EventRecord};

/// The latest outcome of one blob in one job.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum BlobStatus {
    Copied,
    Skipped,
    Failed,
}

/// One checkpoint entry (stored under `job ++ 0x01 ++ name`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlobState {
    pub status: BlobStatus,
    /// Source etag when it was copied or skipped: a replay skips the blob only
    /// if the source still has this etag.
    pub etag: Option<String>,
    /// Sequence number of the event that set this state.
    pub seq: u64,
    pub error_kind: Option<ErrorKind>,
    pub message: Option<String>,
}

impl BlobState {
    /// Whether a replay seeing a source with `etag` may skip this blob.
    pub fn is_done_for(&self, etag: &str) -> bool {
        self.status != BlobStatus::Failed && self.etag.as_deref() == Some(etag)
    }

    /// The checkpoint entry an event sets, if it is a blob event.
    pub fn from_event(rec: &EventRecord) -> Option<(&str, BlobState)> {
        let state = |status, etag: Option<&String>| BlobState {
            status,
            etag: etag.cloned(),
            seq: rec.seq,
            error_kind: None,
            message: None,
        };
        match &rec.event {
            Event::BlobCopied { name, src_etag, .. } => {
                Some((name, state(BlobStatus::Copied, Some(src_etag))))
            }
            Event::BlobSkipped { name, src_etag, .. } => {
                Some((name, state(BlobStatus::Skipped, src_etag.as_ref())))
            }
            Event::BlobFailed {
                name,
                error_kind,
                message,
                ..
            } => Some((
                name,
                BlobState {
                    error_kind: Some(*error_kind),
                    message: Some(message.clone()),
                    ..state(BlobStatus::Failed, None)
                },
            )),
            _ => None,
        }
    }
}

/// A whole job's checkpoint, folded in memory (used by verification and tests;
/// the engine itself reads entries from sled one at a time).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Checkpoint {
    pub blobs: BTreeMap<String, BlobState>,
}

impl Checkpoint {
    pub fn apply(&mut self, rec: &EventRecord) {
        if let Some((name, state)) = BlobState::from_event(rec) {
            self.blobs.insert(name.to_string(), state);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{CopyMethod, CopyReason};
    use crate::job::JobId;

    fn rec(seq: u64, event: Event) -> EventRecord {
        EventRecord {
            v: 1,
            job: JobId::new(),
            seq,
            at: chrono::Utc::now(),
            event,
        }
    }

    #[test]
    fn given_failure_then_copy_the_blob_is_done_for_its_etag_only() {
        let mut cp = Checkpoint::default();
        cp.apply(&rec(
            1,
            Event::BlobFailed {
                name: "a".into(),
                error_kind: ErrorKind::Io,
                message: "boom".into(),
                tries: 3,
                retries: Default::default(),
            },
        ));
        assert!(!cp.blobs["a"].is_done_for("e1"));
        cp.apply(&rec(
            2,
            Event::BlobCopied {
                name: "a".into(),
                bytes: 1,
                src_etag: "e1".into(),
                reason: CopyReason::New,
                method: CopyMethod::Stream,
                ms: 0,
                tries: 1,
                detail: None,
                retries: Default::default(),
            },
        ));
        assert!(cp.blobs["a"].is_done_for("e1"));
        assert!(!cp.blobs["a"].is_done_for("e2"));
        assert_eq!(cp.blobs["a"].seq, 2);
    }
}
