//! Given/when/then tests of the flusher: an acknowledgement means the event
//! is in the file, and a writer far ahead of the flusher waits for it
//! instead of losing or piling up events.

use std::path::Path;
use std::sync::atomic::Ordering;

use super::*;
use crate::event::SkipReason;

fn skipped(i: u64) -> Event {
    Event::BlobSkipped {
        name: format!("d/b{i:06}"),
        reason: SkipReason::NotNewer,
        src_etag: None,
        detail: None,
    }
}

/// Copies sled's files as they are on disk now, as a crash would leave them.
fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

#[tokio::test]
async fn given_outcomes_waiting_when_an_append_is_acknowledged_then_a_flush_covering_it_has_finished(
) {
    let dir = tempfile::tempdir().unwrap();
    let log = EventLog::open(dir.path()).unwrap();
    let job = JobId::new();
    let flushes = || log.writer_stats().flushes.load(Ordering::Relaxed);
    for round in 0..5u64 {
        for i in 0..500 {
            let place = round * 500 + i;
            log.append_outcome(job, skipped(place), place)
                .await
                .unwrap();
        }
        let before = flushes();
        log.append_durable(
            job,
            Event::JobInterrupted {
                attempt: 1,
                reason: "test".into(),
            },
        )
        .await
        .unwrap();
        assert!(
            flushes() > before,
            "round {round}: acknowledged before its flush finished"
        );
    }
    // What was acknowledged is in the files: a copy of them holds it.
    let copy = tempfile::tempdir().unwrap();
    copy_dir(dir.path(), copy.path());
    let copied = EventLog::open(copy.path()).unwrap();
    let events: Vec<EventRecord> = copied.events(job).map(Result::unwrap).collect();
    assert_eq!(events.len(), 2505);
    assert!(matches!(events[2504].event, Event::JobInterrupted { .. }));
    copied.close();
    log.close();
}

#[tokio::test]
async fn given_more_unflushed_events_than_allowed_when_appended_without_waiting_then_all_are_kept()
{
    let dir = tempfile::tempdir().unwrap();
    let job = JobId::new();
    let n = 2 * super::flusher::MAX_UNFLUSHED + 123;
    {
        let log = EventLog::open(dir.path()).unwrap();
        let appending = async {
            for i in 0..n {
                log.append_outcome(job, skipped(i), i).await.unwrap();
            }
            log.sync().await.unwrap();
        };
        // A writer waiting on a flusher that never frees room would hang.
        tokio::time::timeout(std::time::Duration::from_secs(120), appending)
            .await
            .expect("appends finish");
        let stats = log.writer_stats();
        assert_eq!(stats.events.load(Ordering::Relaxed), n);
        assert!(
            stats.flush_ns.load(Ordering::Relaxed) > 0,
            "the flusher flushed"
        );
        log.close();
    }
    let log = EventLog::open(dir.path()).unwrap();
    let seqs: Vec<u64> = log.events(job).map(|r| r.unwrap().seq).collect();
    assert_eq!(seqs.len() as u64, n);
    assert!(
        seqs.iter().enumerate().all(|(i, s)| *s == i as u64),
        "gap-free"
    );
    assert_eq!(log.blob_states(job).count() as u64, n);
    log.close();
}
