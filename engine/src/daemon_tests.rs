//! The daemon's view of a job it has taken, on the memory backend.

use chrono::Utc;

use super::*;
use crate::engine::tests::{fill, spec, unique};
use crate::job::{JobSpec, Mode};
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

/// A schedule `name` (daily at 03:00) copying the local folder `src`.
fn nightly(name: &str, src: &std::path::Path, dst: &std::path::Path) -> schedule::ScheduleDef {
    let local = |p: &std::path::Path| crate::job::Address::Local {
        path: p.to_string_lossy().into(),
    };
    schedule::ScheduleDef {
        name: name.into(),
        cron: "0 0 3 * * *".into(),
        tz: None,
        spec: JobSpec {
            src: local(src),
            dst: local(dst),
            ..spec("unused", "unused", Mode::Incremental)
        },
        overlap: Default::default(),
        catch_up: Default::default(),
        catch_up_window_secs: 3600,
        max_retries: 0,
    }
}

#[tokio::test(flavor = "current_thread")]
async fn given_a_recorded_fire_whose_source_is_gone_when_ticked_then_its_job_is_cancelled_with_why()
{
    let dir = tempfile::tempdir().unwrap();
    let engine = Arc::new(Engine::open(&dir.path().join("state")).unwrap());
    let src = dir.path().join("share");
    std::fs::create_dir_all(&src).unwrap();
    let def = nightly("nas", &src, &dir.path().join("backup"));
    engine.add_schedule(def, "tester").await.unwrap();
    // The daemon recorded the fire and died before submitting its job;
    // the share went away meanwhile.
    let job = JobId::new();
    let fired = Event::ScheduleFired {
        name: "nas".into(),
        due: Utc::now(),
        job,
    };
    engine
        .log()
        .append_durable(JobId::CONTROL, fired)
        .await
        .unwrap();
    std::fs::remove_dir(&src).unwrap();

    let d = Daemon::new(engine, DaemonOptions::default(), Arc::new(SystemClock));
    d.tick().await.unwrap();
    let s = d.engine.summary(job).unwrap();
    assert_eq!(s.state, JobState::Cancelled);
    let events: Vec<_> = d.engine.log().events(job).map(Result::unwrap).collect();
    let why = events
        .iter()
        .find_map(|r| match &r.event {
            Event::JobCancelled { reason, .. } => Some(reason.clone()),
            _ => None,
        })
        .unwrap();
    assert!(why.contains("does not exist"), "{why}");
    // Settled: the next tick leaves it alone.
    d.tick().await.unwrap();
    assert_eq!(d.engine.log().events(job).count(), events.len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn given_adds_of_one_name_at_once_then_exactly_one_is_taken() {
    let dir = tempfile::tempdir().unwrap();
    let engine = Arc::new(Engine::open(dir.path()).unwrap());
    let src = tempfile::tempdir().unwrap();
    for round in 0..10 {
        let name = format!("dup{round}");
        let adds: Vec<_> = (0..8)
            .map(|i| {
                let engine = engine.clone();
                let def = nightly(&name, src.path(), &dir.path().join(format!("to{i}")));
                tokio::spawn(async move { engine.add_schedule(def, "tester").await })
            })
            .collect();
        let results = futures::future::join_all(adds).await;
        let ok = results.iter().filter(|r| matches!(r, Ok(Ok(())))).count();
        assert_eq!(ok, 1, "round {round}: {results:?}");
    }
    assert_eq!(engine.schedules().unwrap().by_name.len(), 10);
}

#[test]
fn given_a_planned_retry_of_a_job_paused_since_then_status_lists_it_no_more() {
    let at = Utc::now();
    let job = |state| {
        let mut s = JobSummary::new(JobId::new());
        s.state = state;
        s.retry_planned = Some((1, at));
        s
    };
    let (failed, paused, resumed) = (
        job(JobState::Failed),
        job(JobState::Paused),
        job(JobState::Queued),
    );
    let (queued, retries) = queue_of(&[failed.clone(), paused, resumed.clone()]);
    assert_eq!(queued, vec![resumed.id]);
    assert_eq!(retries.len(), 1);
    assert_eq!(retries[0].0, failed.id);
}
