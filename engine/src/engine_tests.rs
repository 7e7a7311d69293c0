//! Engine-level given/when/then tests on the memory backend.

use bytes::Bytes;
use chrono::Utc;

use super::*;
use crate::event::{Outcome, SkipReason};
use crate::job::{Address, Mode};
use crate::log::keys;
use crate::projection::{BlobState, Checkpoint};
use crate::store::{BlobMeta, MemoryStore};

pub(crate) fn fill(store: &MemoryStore, n: usize) {
    for i in 0..n {
        let data = Bytes::from(format!("blob {i}"));
        let meta = BlobMeta {
            name: format!("d{}/b{i:05}", i % 7),
            size: data.len() as u64,
            modified: Utc::now(),
            etag: format!("etag-{i}"),
            md5: None,
            props: None,
            mode: None,
        };
        store.insert(meta, data);
    }
}

pub(crate) fn spec(src: &str, dst: &str, mode: Mode) -> JobSpec {
    JobSpec {
        src: Address::Memory { name: src.into() },
        dst: Address::Memory { name: dst.into() },
        mode,
        parallel: Some(4),
        block_size: None,
        copy_method: Default::default(),
        policy_plugin: None,
        plugin_failure: Default::default(),
        mounts: Vec::new(),
        check_md5: Default::default(),
    }
}

pub(crate) fn unique(tag: &str) -> String {
    format!("{tag}-{}", JobId::new())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn given_a_copied_job_then_cached_projections_equal_a_fresh_replay_and_corruption_is_caught()
{
    let dir = tempfile::tempdir().unwrap();
    let engine = Engine::open(dir.path()).unwrap();
    let (src, dst) = (unique("src"), unique("dst"));
    fill(&MemoryStore::named(&src), 500);

    let job = engine
        .submit(spec(&src, &dst, Mode::Incremental))
        .await
        .unwrap();
    let report = engine.run(job, RunOptions::default()).await.unwrap();
    assert_eq!(report.outcome, Some(Outcome::Succeeded));
    assert_eq!(report.totals.copied, 500);
    assert_eq!(MemoryStore::named(&dst).len(), 500);

    let v = engine.verify(None).unwrap();
    assert!(v.problems.is_empty(), "{:?}", v.problems);
    assert_eq!((v.jobs, v.blobs), (1, 500));
    // Submitted, started, 500 copies, listing completed, finished.
    assert_eq!(v.events, 504);

    // When a checkpoint entry is tampered with, verification names it. (Its
    // seq is past every event's, so it wins over the blob's line in a run.)
    let forged = BlobState {
        status: crate::projection::BlobStatus::Failed,
        etag: None,
        seq: 10_000,
        error_kind: None,
        message: None,
    };
    let key = keys::blob(job, "d0/b00000");
    engine
        .log()
        .put_raw_for_tests(&key, &rmp_serde::to_vec_named(&forged).unwrap())
        .unwrap();
    let v = engine.verify(Some(job)).unwrap();
    assert_eq!(v.problems.len(), 1, "{:?}", v.problems);
    assert!(v.problems[0].contains("d0/b00000"), "{}", v.problems[0]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn given_an_unchanged_source_when_run_incrementally_then_every_blob_is_skipped_with_a_reason()
{
    let dir = tempfile::tempdir().unwrap();
    let engine = Engine::open(dir.path()).unwrap();
    let (src, dst) = (unique("src"), unique("dst"));
    fill(&MemoryStore::named(&src), 50);
    let first = engine
        .submit(spec(&src, &dst, Mode::Incremental))
        .await
        .unwrap();
    engine.run(first, RunOptions::default()).await.unwrap();

    let second = engine
        .submit(spec(&src, &dst, Mode::Incremental))
        .await
        .unwrap();
    let report = engine.run(second, RunOptions::default()).await.unwrap();
    assert_eq!((report.totals.copied, report.totals.skipped), (0, 50));
    let reasons: Vec<_> = engine
        .events(Some(second))
        .unwrap()
        .filter_map(|r| match r.unwrap().event {
            Event::BlobSkipped { reason, .. } => Some(reason),
            _ => None,
        })
        .collect();
    assert_eq!(reasons.len(), 50);
    assert!(reasons.iter().all(|r| *r == SkipReason::NotNewer));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn given_a_snapshot_sled_did_not_finish_when_reopened_then_the_log_is_whole() {
    let dir = tempfile::tempdir().unwrap();
    let (src, dst) = (unique("src"), unique("dst"));
    fill(&MemoryStore::named(&src), 20);
    let job = {
        let engine = Engine::open(dir.path()).unwrap();
        let job = engine
            .submit(spec(&src, &dst, Mode::Incremental))
            .await
            .unwrap();
        engine.run(job, RunOptions::default()).await.unwrap();
        job
    };
    // What a disk that filled while sled wrote its snapshot on open left:
    // an empty file under the highest snapshot name, which sled reads.
    let unfinished = dir.path().join("db/snap.FFFFFFFFFFFFFFFF.generating");
    std::fs::write(&unfinished, b"").unwrap();
    let engine = Engine::open(dir.path()).unwrap();
    let s = engine.summary(job).unwrap();
    assert_eq!((s.state, s.copied), (JobState::Succeeded, 20));
    assert!(!unfinished.exists());
    assert!(engine.verify(None).unwrap().problems.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn given_an_interrupted_attempt_when_replayed_then_only_the_rest_is_copied() {
    let dir = tempfile::tempdir().unwrap();
    let engine = Engine::open(dir.path()).unwrap();
    let (src, dst) = (unique("src"), unique("dst"));
    fill(&MemoryStore::named(&src), 3000);
    let job = engine.submit(spec(&src, &dst, Mode::Full)).await.unwrap();

    let opts = RunOptions {
        parallel: Some(1),
        ..Default::default()
    };
    let cancel = opts.cancel.clone();
    let progress = opts.progress.clone();
    let run = engine.run(job, opts);
    let stopper = async {
        while progress.copied.load(std::sync::atomic::Ordering::Relaxed) < 100 {
            tokio::task::yield_now().await;
        }
        cancel.cancel();
    };
    let (report, ()) = tokio::join!(run, stopper);
    let first = report.unwrap();
    assert_eq!(
        first.outcome, None,
        "the attempt is recorded as interrupted"
    );
    assert!(first.totals.copied >= 100 && first.totals.copied < 3000);
    assert_eq!(engine.summary(job).unwrap().state, JobState::Interrupted);

    let second = engine.replay(job, RunOptions::default()).await.unwrap();
    assert_eq!(second.outcome, Some(Outcome::Succeeded));
    assert_eq!(
        second.totals.resumed, first.totals.copied,
        "durable copies are not redone"
    );
    assert_eq!(second.totals.copied + first.totals.copied, 3000);
    assert!(engine.verify(Some(job)).unwrap().problems.is_empty());

    let again = engine.replay(job, RunOptions::default()).await.unwrap_err();
    assert!(matches!(again, EngineError::WrongState { .. }), "{again}");

    // A prune counts each blob of the checkpoint once, over both attempts'
    // runs and keys.
    let would = engine
        .prune(&crate::audit::PruneOptions {
            before: chrono::Utc::now() + chrono::Duration::seconds(1),
            keep_last: 0,
            dry_run: true,
            by: "test@host".into(),
        })
        .await
        .unwrap();
    assert_eq!((would.jobs, would.entries), (vec![job], 3000));
}

#[test]
fn a_second_engine_on_the_same_state_dir_is_refused_with_the_owner() {
    let dir = tempfile::tempdir().unwrap();
    let _first = Engine::open(dir.path()).unwrap();
    match Engine::open(dir.path()) {
        Err(EngineError::StateLocked { owner, .. }) => {
            assert!(
                owner.contains(&format!("pid {}", std::process::id())),
                "{owner}"
            )
        }
        Err(e) => panic!("wrong error: {e}"),
        Ok(_) => panic!("a second engine opened a locked state dir"),
    }
}

#[test]
fn unknown_and_ambiguous_job_ids_are_reported() {
    let dir = tempfile::tempdir().unwrap();
    let engine = Engine::open(dir.path()).unwrap();
    assert!(matches!(
        engine.resolve("0123abcd"),
        Err(EngineError::UnknownJob(_))
    ));
    assert!(matches!(
        engine.resolve("not-hex!"),
        Err(EngineError::UnknownJob(_))
    ));
}

/// A schema-1 record as schema 1 wrote it (`BlobFailed.attempts`, no
/// `retries`), for the upcasting test below.
#[derive(serde::Serialize)]
struct V1Record {
    v: u16,
    job: JobId,
    seq: u64,
    at: chrono::DateTime<Utc>,
    event: V1Event,
}

#[derive(serde::Serialize)]
#[serde(tag = "type", content = "data")]
enum V1Event {
    JobSubmitted {
        spec: Box<JobSpec>,
    },
    JobStarted {
        attempt: u32,
        worker: String,
        parallelism: u32,
    },
    BlobCopied {
        name: String,
        bytes: u64,
        src_etag: String,
        reason: crate::event::CopyReason,
        method: crate::event::CopyMethod,
        ms: u64,
        tries: u32,
    },
    BlobFailed {
        name: String,
        error_kind: crate::event::ErrorKind,
        message: String,
        attempts: u32,
    },
    JobFinished {
        attempt: u32,
        outcome: Outcome,
        totals: serde_json::Value,
    },
}

#[tokio::test]
async fn given_a_schema_1_log_when_read_then_it_replays_verifies_and_reports() {
    let dir = tempfile::tempdir().unwrap();
    let job = JobId::new();
    let at = Utc::now();
    let events = vec![
        V1Event::JobSubmitted {
            spec: Box::new(spec("old-src", "old-dst", Mode::Full)),
        },
        V1Event::JobStarted {
            attempt: 1,
            worker: "old-host:1".into(),
            parallelism: 8,
        },
        V1Event::BlobCopied {
            name: "a.txt".into(),
            bytes: 5,
            src_etag: "e1".into(),
            reason: crate::event::CopyReason::New,
            method: crate::event::CopyMethod::Stream,
            ms: 3,
            tries: 1,
        },
        V1Event::BlobFailed {
            name: "b.txt".into(),
            error_kind: crate::event::ErrorKind::PermissionDenied,
            message: "b.txt: permission denied".into(),
            attempts: 3,
        },
        V1Event::JobFinished {
            attempt: 1,
            outcome: Outcome::CompletedWithFailures,
            // Schema 1's totals had no `retries`.
            totals: serde_json::json!({"listed": 2, "listed_bytes": 9, "copied": 1,
                "copied_bytes": 5, "skipped": 0, "failed": 1, "resumed": 0}),
        },
    ];
    let recs: Vec<V1Record> = events
        .into_iter()
        .enumerate()
        .map(|(i, event)| V1Record {
            v: 1,
            job,
            seq: i as u64,
            at,
            event,
        })
        .collect();
    // The fixture: the chunk and the projections a schema-1 ferry wrote.
    {
        let engine = Engine::open(dir.path()).unwrap();
        let log = engine.log();
        log.put_raw_for_tests(
            &keys::event(job, 0),
            &rmp_serde::to_vec_named(&recs).unwrap(),
        )
        .unwrap();
        let mut summary = JobSummary::new(job);
        let mut cp = Checkpoint::default();
        for rec in crate::log::decode_chunk_for_tests(&rmp_serde::to_vec_named(&recs).unwrap()) {
            summary.apply(&rec);
            cp.apply(&rec);
        }
        log.put_raw_for_tests(
            &keys::summary(job),
            &rmp_serde::to_vec_named(&summary).unwrap(),
        )
        .unwrap();
        for (name, state) in &cp.blobs {
            log.put_raw_for_tests(
                &keys::blob(job, name),
                &rmp_serde::to_vec_named(state).unwrap(),
            )
            .unwrap();
        }
        // A log that old has no open-jobs index either.
        log.remove_raw_for_tests(&keys::open_marker()).unwrap();
        log.close();
    }
    let engine = Engine::open(dir.path()).unwrap();
    // Replays: the events come up as the current schema.
    let read: Vec<EventRecord> = engine
        .events(Some(job))
        .unwrap()
        .map(|r| r.unwrap())
        .collect();
    assert_eq!(read.len(), 5);
    assert!(read.iter().all(|r| r.v == crate::event::SCHEMA_VERSION));
    match &read[3].event {
        Event::BlobFailed { tries, .. } => assert_eq!(*tries, 3),
        other => panic!("{other:?}"),
    }
    // Verifies: the cached projections equal a fold of the upcast events.
    let v = engine.verify(Some(job)).unwrap();
    assert!(v.problems.is_empty(), "{:?}", v.problems);
    // Reports correctly.
    let mut f = crate::report::BuiltinFormatter::json(10);
    let report: serde_json::Value =
        serde_json::from_str(&engine.report(job, &mut f).unwrap()).unwrap();
    assert_eq!(report["summary"]["copied"], 1, "{report}");
    assert_eq!(report["summary"]["failed"], 1, "{report}");
    let (failures, _) = engine.failures(job, None).unwrap();
    assert_eq!(failures.len(), 1);
    assert_eq!(failures[0].0, "b.txt");
    // New attempts are written in the current schema after the old ones.
    let n = engine
        .log()
        .append_durable(job, Event::JobPaused { by: "t@h".into() })
        .await
        .unwrap();
    assert_eq!(n, 5);
    let raw = engine
        .log()
        .get_raw_for_tests(&keys::event(job, 5))
        .unwrap()
        .unwrap();
    assert_eq!(raw[..2], [0x94, 2], "new records go in compact chunks");
    let v = engine.verify(Some(job)).unwrap();
    assert!(v.problems.is_empty(), "{:?}", v.problems);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn given_many_jobs_run_and_queued_then_the_writer_holds_none_of_their_state() {
    use std::sync::atomic::Ordering;
    let dir = tempfile::tempdir().unwrap();
    let engine = Engine::open(dir.path()).unwrap();
    let src = unique("src");
    fill(&MemoryStore::named(&src), 30);
    // As a daemon's nights go by: job after job, each to its own place.
    for _ in 0..12 {
        let job = engine
            .submit(spec(&src, &unique("dst"), Mode::Full))
            .await
            .unwrap();
        let r = engine.run(job, RunOptions::default()).await.unwrap();
        assert_eq!(r.totals.copied, 30);
    }
    let queued = engine
        .submit(spec(&src, &unique("dst"), Mode::Full))
        .await
        .unwrap();
    let cached = engine
        .log()
        .writer_stats()
        .cached_jobs
        .load(Ordering::Relaxed);
    assert_eq!(
        cached, 0,
        "finished and queued jobs are read back when needed"
    );
    // What a daemon's tick reads: the one job not settled.
    assert_eq!(engine.log().open_job_ids().unwrap(), vec![queued]);
    assert_eq!(engine.next_queued().unwrap(), Some(queued));
    // Read back, they go on as before.
    let r = engine.run(queued, RunOptions::default()).await.unwrap();
    assert_eq!(r.totals.copied, 30);
    assert!(engine.open_jobs().unwrap().is_empty());
    assert_eq!(engine.jobs().unwrap().len(), 13);
    assert!(engine.verify(None).unwrap().problems.is_empty());
}

/// A formatter that fails at its first call.
struct Failing(bool);

impl crate::report::Formatter for Failing {
    fn content_type(&mut self) -> Result<String, String> {
        Err("no".into())
    }
    fn file_extension(&mut self) -> Result<String, String> {
        Err("no".into())
    }
    fn begin(&mut self, _: &crate::report::ReportSummary) -> Result<(), String> {
        Err("plugin f.wasm ran out of fuel".into())
    }
    fn add(&mut self, _: &[crate::report::Outcome]) -> Result<(), String> {
        Ok(())
    }
    fn finish(&mut self) -> Result<String, String> {
        Ok(String::new())
    }
    fn is_plugin(&self) -> bool {
        self.0
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn given_a_failing_formatter_then_a_plugins_failure_is_a_plugin_error() {
    let dir = tempfile::tempdir().unwrap();
    let engine = Engine::open(dir.path()).unwrap();
    let (src, dst) = (unique("src"), unique("dst"));
    fill(&MemoryStore::named(&src), 3);
    let job = engine
        .submit(spec(&src, &dst, Mode::Incremental))
        .await
        .unwrap();
    engine.run(job, RunOptions::default()).await.unwrap();
    // Exit 9 for a plugin, not 2 ("bad input") as before.
    let e = engine.report(job, &mut Failing(true)).unwrap_err();
    assert!(matches!(e, EngineError::Plugin(_)), "{e:?}");
    assert_eq!(e.to_string(), "report: plugin f.wasm ran out of fuel");
    let e = engine.report(job, &mut Failing(false)).unwrap_err();
    assert!(matches!(e, EngineError::InvalidInput(_)), "{e:?}");
}
