//! The daemon's view of a job it has taken, on the memory backend.

use bytes::Bytes;
use chrono::Utc;

use super::*;
use crate::job::{Address, JobSpec, Mode};
use crate::store::{BlobMeta, MemoryStore};

async fn queued_job(engine: &Engine, blobs: usize) -> JobSummary {
    let src = format!("daemon-src-{}", JobId::new());
    let store = MemoryStore::named(&src);
    for i in 0..blobs {
        let data = Bytes::from(format!("blob {i}"));
        let meta = BlobMeta {
            name: format!("b{i:04}"),
            size: data.len() as u64,
            modified: Utc::now(),
            etag: format!("etag-{i}"),
            md5: None,
            props: None,
        };
        store.insert(meta, data);
    }
    let spec = JobSpec {
        src: Address::Memory { name: src },
        dst: Address::Memory {
            name: format!("daemon-dst-{}", JobId::new()),
        },
        mode: Mode::Full,
        parallel: Some(1),
        block_size: None,
        copy_method: Default::default(),
        policy_plugin: None,
        plugin_failure: Default::default(),
    };
    let job = engine.submit(spec).await.unwrap();
    engine.summary(job).unwrap()
}

// One thread: the run task spawned by `start` cannot write `JobStarted`
// before the pause looks, which is the moment a busy machine can hit.
#[tokio::test(flavor = "current_thread")]
async fn given_a_job_taken_but_not_started_when_paused_then_it_was_running_and_ends_paused() {
    let dir = tempfile::tempdir().unwrap();
    let engine = Arc::new(Engine::open(dir.path()).unwrap());
    let summary = queued_job(&engine, 50).await;
    let job = summary.id;
    let d = Daemon::new(
        engine.clone(),
        DaemonOptions::default(),
        Arc::new(SystemClock),
    );

    d.start(&summary, false);
    assert_eq!(engine.summary(job).unwrap().state, JobState::Queued);
    assert_eq!(d.pause(job, "tester").await.unwrap(), JobState::Running);

    let mut tasks = std::mem::take(&mut *d.tasks.lock().unwrap());
    while tasks.join_next().await.is_some() {}
    let after = engine.summary(job).unwrap();
    assert_eq!(after.effective_state(), JobState::Paused);
    // Not taken any more: the log's state again.
    assert_eq!(d.live_state(&after), JobState::Paused);
}

#[tokio::test(flavor = "current_thread")]
async fn given_a_job_taken_but_not_started_when_cancelled_then_it_stays_cancelled() {
    let dir = tempfile::tempdir().unwrap();
    let engine = Arc::new(Engine::open(dir.path()).unwrap());
    let summary = queued_job(&engine, 50).await;
    let job = summary.id;
    let d = Daemon::new(
        engine.clone(),
        DaemonOptions::default(),
        Arc::new(SystemClock),
    );

    d.start(&summary, false);
    assert_eq!(d.cancel(job, "tester").await.unwrap(), JobState::Running);

    let mut tasks = std::mem::take(&mut *d.tasks.lock().unwrap());
    while tasks.join_next().await.is_some() {}
    let after = engine.summary(job).unwrap();
    assert_eq!(after.effective_state(), JobState::Cancelled);
    // Nothing left for the daemon to pick up again.
    assert!(engine.replay(job, RunOptions::default()).await.is_err());
}

#[tokio::test(flavor = "current_thread")]
async fn given_a_job_still_held_when_its_run_has_ended_then_the_log_state_wins() {
    let dir = tempfile::tempdir().unwrap();
    let engine = Arc::new(Engine::open(dir.path()).unwrap());
    let summary = queued_job(&engine, 5).await;
    let job = summary.id;
    let d = Daemon::new(
        engine.clone(),
        DaemonOptions::default(),
        Arc::new(SystemClock),
    );
    let opts = RunOptions::default();
    let held = Running {
        cancel: opts.cancel.clone(),
        stop_reason: opts.stop_reason.clone(),
        progress: opts.progress.clone(),
        started_at: Utc::now(),
        schedule: None,
        attempts_at_start: summary.attempts.len(),
    };
    d.running.lock().unwrap().insert(job, held);
    assert_eq!(d.live_state(&summary), JobState::Running);

    // The run ends; its task has not yet let go of the job.
    engine.run(job, opts).await.unwrap();
    let ended = engine.summary(job).unwrap();
    assert_eq!(ended.state, JobState::Succeeded);
    assert!(d.is_running(job));
    assert_eq!(d.live_state(&ended), JobState::Succeeded);
}
