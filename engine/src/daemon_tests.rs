//! The daemon's view of a job it has taken, on the memory backend.

use chrono::Utc;

use super::*;
use crate::engine::tests::{fill, spec, unique};
use crate::job::Mode;
use crate::store::MemoryStore;

/// A daemon over a fresh state dir and one queued job of `blobs` blobs.
async fn given_a_queued_job(blobs: usize) -> (tempfile::TempDir, Arc<Daemon>, JobSummary) {
    let dir = tempfile::tempdir().unwrap();
    let engine = Arc::new(Engine::open(dir.path()).unwrap());
    let (src, dst) = (unique("daemon-src"), unique("daemon-dst"));
    fill(&MemoryStore::named(&src), blobs);
    let mut spec = spec(&src, &dst, Mode::Full);
    spec.parallel = Some(1);
    let job = engine.submit(spec).await.unwrap();
    let summary = engine.summary(job).unwrap();
    let d = Daemon::new(engine, DaemonOptions::default(), Arc::new(SystemClock));
    (dir, d, summary)
}

// One thread: the run task spawned by `start` cannot write `JobStarted`
// before the pause looks, which is the moment a busy machine can hit.
#[tokio::test(flavor = "current_thread")]
async fn given_a_job_taken_but_not_started_when_paused_then_it_was_running_and_ends_paused() {
    let (_dir, d, summary) = given_a_queued_job(50).await;
    let job = summary.id;

    d.start(&summary, false);
    assert_eq!(d.engine.summary(job).unwrap().state, JobState::Queued);
    assert_eq!(d.pause(job, "tester").await.unwrap(), JobState::Running);

    d.runs_ended().await;
    let after = d.engine.summary(job).unwrap();
    assert_eq!(after.effective_state(), JobState::Paused);
    // Not taken any more: the log's state again.
    assert_eq!(d.live_state(&after), JobState::Paused);
}

#[tokio::test(flavor = "current_thread")]
async fn given_a_job_taken_but_not_started_when_cancelled_then_it_stays_cancelled() {
    let (_dir, d, summary) = given_a_queued_job(50).await;
    let job = summary.id;

    d.start(&summary, false);
    assert_eq!(d.cancel(job, "tester").await.unwrap(), JobState::Running);

    d.runs_ended().await;
    let after = d.engine.summary(job).unwrap();
    assert_eq!(after.effective_state(), JobState::Cancelled);
    // Nothing left for the daemon to pick up again.
    assert!(d.engine.replay(job, RunOptions::default()).await.is_err());
}

#[tokio::test(flavor = "current_thread")]
async fn given_a_job_still_held_when_its_run_has_ended_then_the_log_state_wins() {
    let (_dir, d, summary) = given_a_queued_job(5).await;
    let job = summary.id;
    let opts = RunOptions::default();
    let held = Running::taking(&summary, &opts, Utc::now());
    d.running.lock().unwrap().insert(job, held);
    assert_eq!(d.live_state(&summary), JobState::Running);

    // The run ends; its task has not yet let go of the job.
    d.engine.run(job, opts).await.unwrap();
    let ended = d.engine.summary(job).unwrap();
    assert_eq!(ended.state, JobState::Succeeded);
    assert!(d.is_running(job));
    assert_eq!(d.live_state(&ended), JobState::Succeeded);
}
