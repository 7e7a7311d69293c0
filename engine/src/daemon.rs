//! The daemon: drains the queue with a bounded number of concurrent jobs,
//! fires schedules (a job per fire), replays failed jobs with backoff, and
//! picks up the jobs it was running when it last stopped. All its decisions
//! are recorded as events before they take effect, so a restart resumes
//! from the log, never from memory.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use crate::engine::DAEMON_WORKER_SUFFIX;
use crate::error::EngineError;
use crate::event::{Event, Totals};
use crate::job::JobId;
use crate::projection::{JobState, JobSummary};
use crate::schedule::{self, FireAction};
use crate::{Engine, Progress, RunOptions};

/// Wall-clock time, injectable so schedules can be tested without waiting.
pub trait Clock: Send + Sync {
    fn now(&self) -> DateTime<Utc>;
}

pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> DateTime<Utc> {
        Utc::now()
    }
}

/// Starts at a chosen instant and advances with real time: lets a test put
/// the daemon a few seconds before a fire (`FERRY_TEST_NOW`).
pub struct OffsetClock {
    offset: chrono::Duration,
}

impl OffsetClock {
    pub fn starting_at(t: DateTime<Utc>) -> OffsetClock {
        OffsetClock {
            offset: t - Utc::now(),
        }
    }
}

impl Clock for OffsetClock {
    fn now(&self) -> DateTime<Utc> {
        Utc::now() + self.offset
    }
}

#[derive(Debug, Clone)]
pub struct DaemonOptions {
    /// Jobs running at once.
    pub max_jobs: usize,
    /// Replays of a failed job (a schedule's own setting wins for its jobs).
    pub max_retries: u32,
    /// First retry delay; doubles per retry.
    pub retry_delay: Duration,
    /// Longest sleep between looks at the log.
    pub tick: Duration,
    /// A fire at most this late is on time (not a missed fire).
    pub grace: Duration,
    /// Parallel copies per job (default: the job's, else 8 x cores).
    pub parallel: Option<usize>,
    /// `--parallel auto` for every job; overrides `parallel`.
    pub parallel_auto: bool,
    /// How long a stop waits for running jobs to reach a blob boundary.
    pub stop_timeout: Duration,
}

impl Default for DaemonOptions {
    fn default() -> Self {
        DaemonOptions {
            max_jobs: 2,
            max_retries: 5,
            retry_delay: Duration::from_secs(30),
            tick: Duration::from_secs(5),
            grace: Duration::from_secs(60),
            parallel: None,
            parallel_auto: false,
            stop_timeout: Duration::from_secs(30),
        }
    }
}

/// A job this daemon is running.
struct Running {
    cancel: CancellationToken,
    stop_reason: Arc<Mutex<Option<String>>>,
    progress: Arc<Progress>,
    started_at: DateTime<Utc>,
    schedule: Option<String>,
    /// The job's attempts when this daemon took it: until its run writes
    /// `JobStarted` the log still says queued (or failed, for a retry), yet
    /// a pause or cancel then already reaches a running job.
    attempts_at_start: usize,
}

impl Running {
    /// The hold on job `s` whose run gets `opts`: its stop handles and
    /// progress are the run's own.
    fn taking(s: &JobSummary, opts: &RunOptions, at: DateTime<Utc>) -> Running {
        Running {
            cancel: opts.cancel.clone(),
            stop_reason: opts.stop_reason.clone(),
            progress: opts.progress.clone(),
            started_at: at,
            schedule: s.schedule.clone(),
            attempts_at_start: s.attempts.len(),
        }
    }
}

/// A planned replay: the job, which retry, when.
pub type PlannedRetry = (JobId, u32, DateTime<Utc>);
/// A schedule's name and its next fire (none if it never fires again).
pub type NextFire = (String, Option<DateTime<Utc>>);

/// What `ferry status` shows.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DaemonStatus {
    pub pid: u32,
    pub started_at: DateTime<Utc>,
    pub now: DateTime<Utc>,
    pub max_jobs: usize,
    pub running: Vec<RunningStatus>,
    pub queued: Vec<JobId>,
    pub retries_planned: Vec<PlannedRetry>,
    pub next_fires: Vec<NextFire>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunningStatus {
    pub job: JobId,
    pub schedule: Option<String>,
    pub started_at: DateTime<Utc>,
    pub totals: Totals,
}

pub struct Daemon {
    engine: Arc<Engine>,
    opts: DaemonOptions,
    clock: Arc<dyn Clock>,
    started_at: DateTime<Utc>,
    running: Mutex<HashMap<JobId, Running>>,
    /// Serialises "look at a job's state, then act on it" between the loop
    /// and control requests, so a pause cannot slip between a start
    /// decision and the start.
    ops: tokio::sync::Mutex<()>,
    wake: tokio::sync::Notify,
    tasks: Mutex<tokio::task::JoinSet<()>>,
    /// Jobs whose start returned an error without recording anything (the
    /// log could not be written, ...), and when to try again: started at
    /// once they spun the loop (4,000 warnings a second).
    held: Mutex<HashMap<JobId, DateTime<Utc>>>,
}

/// How long a job that could not start waits before the next try.
const COULD_NOT_RUN_WAIT: chrono::Duration = chrono::Duration::seconds(30);

impl Daemon {
    pub fn new(engine: Arc<Engine>, opts: DaemonOptions, clock: Arc<dyn Clock>) -> Arc<Daemon> {
        let started_at = clock.now();
        Arc::new(Daemon {
            engine,
            opts,
            clock,
            started_at,
            running: Mutex::new(HashMap::new()),
            ops: tokio::sync::Mutex::new(()),
            wake: tokio::sync::Notify::new(),
            tasks: Mutex::new(tokio::task::JoinSet::new()),
            held: Mutex::new(HashMap::new()),
        })
    }

    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    pub fn now(&self) -> DateTime<Utc> {
        self.clock.now()
    }

    /// Works until `shutdown`, then stops running jobs at blob boundaries
    /// (waiting at most `stop_timeout`) and returns whether they all
    /// stopped. Jobs that did not are still copying: the caller should end
    /// the process rather than wait for them (they resume on restart).
    pub async fn run(self: &Arc<Self>, shutdown: CancellationToken) -> Result<bool, EngineError> {
        tracing::info!(max_jobs = self.opts.max_jobs, "daemon started");
        loop {
            let next = self.tick().await?;
            let now = self.clock.now();
            let wait = (next - now)
                .to_std()
                .unwrap_or_default()
                .min(self.opts.tick);
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = tokio::time::sleep(wait) => {}
                _ = self.wake.notified() => {}
            }
        }
        self.stop_all("daemon stopping");
        let drained = tokio::time::timeout(self.opts.stop_timeout, self.runs_ended()).await;
        if drained.is_err() {
            tracing::warn!("jobs did not stop in time; they resume when the daemon restarts");
        }
        tracing::info!("daemon stopped");
        Ok(drained.is_ok())
    }

    /// Waits for every job run started so far to end.
    async fn runs_ended(&self) {
        let mut tasks = match self.tasks.lock() {
            Ok(mut t) => std::mem::take(&mut *t),
            Err(_) => return,
        };
        while tasks.join_next().await.is_some() {}
    }

    fn stop_all(&self, why: &str) {
        if let Ok(running) = self.running.lock() {
            for r in running.values() {
                if let Ok(mut reason) = r.stop_reason.lock() {
                    *reason = Some(why.to_string());
                }
                r.cancel.cancel();
            }
        }
    }

    fn is_running(&self, job: JobId) -> bool {
        self.running
            .lock()
            .map(|r| r.contains_key(&job))
            .unwrap_or(false)
    }

    /// A job's state as this process sees it: a job it is running is
    /// running, not "left running by a dead process", and not "queued"
    /// in the moment between taking it and its `JobStarted`.
    fn live_state(&self, s: &JobSummary) -> JobState {
        let taken = self
            .running
            .lock()
            .ok()
            .and_then(|r| r.get(&s.id).map(|x| x.attempts_at_start));
        match taken {
            // Equal counts: taken but not started yet (a start adds an attempt).
            Some(n) if s.state == JobState::Running || s.attempts.len() == n => JobState::Running,
            _ => s.effective_state(),
        }
    }

    /// One look at the log: fire schedules, plan retries, start jobs.
    /// Returns when to look again at the latest.
    async fn tick(self: &Arc<Self>) -> Result<DateTime<Utc>, EngineError> {
        let _ops = self.ops.lock().await;
        let now = self.clock.now();
        let mut next = now + chrono::Duration::from_std(self.opts.tick).unwrap_or_default();
        let schedules = self.engine.schedules()?;
        for (name, st) in &schedules.by_name {
            let cron = match st.def.cron() {
                Ok(c) => c,
                Err(e) => {
                    tracing::warn!(schedule = %name, "schedule has an invalid cron: {e}");
                    continue;
                }
            };
            // A fire recorded but whose job was never submitted (the
            // daemon died in between) is completed now, not fired again.
            if let Some(job) = st.last_job {
                if let Err(EngineError::UnknownJob(_)) = self.engine.summary(job) {
                    self.submit_fired(job, st, name).await?;
                }
            }
            // The previous job as of each fire: an earlier fire of this
            // same tick may have just submitted one.
            let mut last_job = st.last_job;
            for action in schedule::due_fires(st, &cron, now, self.opts.grace) {
                if let Some(job) = self.act(name, st, last_job, action).await? {
                    last_job = Some(job);
                }
            }
            if let Some(t) = cron.next_after(now) {
                next = next.min(t);
            }
        }
        // One read of the open jobs' summaries for planning and starting
        // (jobs fired above are in it; settled ones never start again). A
        // retry planned now starts at the next tick, which is due at its
        // time.
        let jobs = self.engine.open_jobs()?;
        for s in &jobs {
            if let Some(t) = self.plan_retry(s, &schedules, now).await? {
                next = next.min(t);
            }
        }
        self.start_jobs(&jobs, &schedules, now)?;
        Ok(next)
    }

    /// Records one fire's outcome; returns the job it submitted, if any.
    async fn act(
        &self,
        name: &str,
        st: &schedule::ScheduleState,
        last_job: Option<JobId>,
        action: FireAction,
    ) -> Result<Option<JobId>, EngineError> {
        let event = match action {
            FireAction::Skip { due, reason } => Event::ScheduleSkipped {
                name: name.to_string(),
                due,
                reason,
            },
            FireAction::Fire(due) => {
                let previous = match last_job {
                    Some(j) => match self.engine.summary(j) {
                        Ok(s) => {
                            let state = self.live_state(&s);
                            // What `start_jobs` will pick up again.
                            let runs_again = match state {
                                JobState::Interrupted => last_run_by_daemon(&s),
                                JobState::Failed | JobState::CompletedWithFailures => {
                                    s.retry_planned.is_some() && !s.pruned
                                }
                                _ => false,
                            };
                            Some(schedule::Previous {
                                job: j,
                                state,
                                runs_again,
                            })
                        }
                        Err(_) => None,
                    },
                    None => None,
                };
                // A spec that no longer passes its checks (the source gone,
                // a share not mounted) is a skipped fire with the reason, not
                // a daemon that stops: other schedules and jobs go on.
                let refused = self.engine.check_spec(&st.def.spec).err().map(|e| {
                    tracing::warn!(schedule = %name, "fire skipped: {e}");
                    format!("the job would be refused: {e}")
                });
                match refused.or_else(|| schedule::overlap_reason(st.def.overlap, previous)) {
                    Some(reason) => Event::ScheduleSkipped {
                        name: name.to_string(),
                        due,
                        reason,
                    },
                    None => {
                        // Fired first, then submitted: a crash in between is
                        // repaired on restart (see `tick`), never doubled.
                        let job = JobId::new();
                        let fired = Event::ScheduleFired {
                            name: name.to_string(),
                            due,
                            job,
                        };
                        self.engine
                            .log()
                            .append_durable(JobId::CONTROL, fired)
                            .await?;
                        self.submit_fired(job, st, name).await?;
                        tracing::info!(schedule = %name, %job, "schedule fired");
                        return Ok(Some(job));
                    }
                }
            }
        };
        self.engine
            .log()
            .append_durable(JobId::CONTROL, event)
            .await?;
        Ok(None)
    }

    /// Submits the job a recorded fire named. A spec refused now (its
    /// source went away after the fire was recorded) is submitted and
    /// cancelled with the reason, which settles the fire: the daemon would
    /// otherwise try again on every tick, or stop.
    async fn submit_fired(
        &self,
        job: JobId,
        st: &schedule::ScheduleState,
        name: &str,
    ) -> Result<(), EngineError> {
        match self
            .engine
            .submit_scheduled(job, st.def.spec.clone(), name)
            .await
        {
            Err(EngineError::InvalidInput(why)) => {
                tracing::warn!(schedule = %name, %job, "scheduled job refused: {why}");
                let spec = st.def.spec.clone();
                self.engine.submit_refused(job, spec, name, &why).await
            }
            other => other,
        }
    }

    /// Plans the next replay of a failed job this daemon ran. Returns when
    /// a planned retry is due.
    async fn plan_retry(
        &self,
        s: &JobSummary,
        schedules: &schedule::Schedules,
        now: DateTime<Utc>,
    ) -> Result<Option<DateTime<Utc>>, EngineError> {
        // A pruned job cannot be replayed (its checkpoint is gone).
        if !matches!(s.state, JobState::Failed | JobState::CompletedWithFailures)
            || !last_run_by_daemon(s)
            || s.pruned
        {
            return Ok(None);
        }
        if let Some((_, at)) = s.retry_planned {
            return Ok(Some(at));
        }
        let max = s
            .schedule
            .as_ref()
            .and_then(|n| schedules.by_name.get(n))
            .map(|st| st.def.max_retries)
            .unwrap_or(self.opts.max_retries);
        if s.retries_planned >= max {
            return Ok(None);
        }
        let retry = s.retries_planned + 1;
        let delay = self
            .opts
            .retry_delay
            .saturating_mul(1 << (retry - 1).min(16));
        let at = now + chrono::Duration::from_std(delay).unwrap_or_default();
        self.engine
            .log()
            .append_durable(s.id, Event::JobRetryPlanned { retry, at })
            .await?;
        Ok(Some(at))
    }

    fn start_jobs(
        self: &Arc<Self>,
        jobs: &[JobSummary],
        schedules: &schedule::Schedules,
        now: DateTime<Utc>,
    ) -> Result<(), EngineError> {
        for s in jobs {
            if self.running.lock().map(|r| r.len()).unwrap_or(usize::MAX) >= self.opts.max_jobs {
                break;
            }
            if self.is_running(s.id) {
                continue;
            }
            let held = self
                .held
                .lock()
                .is_ok_and(|h| h.get(&s.id).is_some_and(|until| *until > now));
            if held {
                continue;
            }
            let replay = match s.effective_state() {
                JobState::Queued => !s.attempts.is_empty(),
                JobState::Failed | JobState::CompletedWithFailures => match s.retry_planned {
                    Some((_, at)) if at <= now && !s.pruned => true,
                    _ => continue,
                },
                // Its own job, left by a stop or a crash.
                JobState::Interrupted if last_run_by_daemon(s) => true,
                _ => continue,
            };
            if let Some(name) = &s.schedule {
                let overlap = schedules
                    .by_name
                    .get(name)
                    .map(|st| st.def.overlap)
                    .unwrap_or_default();
                let same_running = self.running.lock().is_ok_and(|r| {
                    r.values()
                        .any(|x| x.schedule.as_deref() == Some(name.as_str()))
                });
                if !schedule::may_start(overlap, same_running) {
                    continue;
                }
            }
            self.start(s, replay);
        }
        Ok(())
    }

    fn start(self: &Arc<Self>, s: &JobSummary, replay: bool) {
        let job = s.id;
        let opts = RunOptions {
            parallel: self.opts.parallel,
            parallel_auto: self.opts.parallel_auto,
            by_daemon: true,
            ..RunOptions::default()
        };
        let running = Running::taking(s, &opts, self.clock.now());
        if let Ok(mut r) = self.running.lock() {
            r.insert(job, running);
        }
        let me = self.clone();
        let task = async move {
            let result = if replay {
                me.engine.replay(job, opts).await
            } else {
                me.engine.run(job, opts).await
            };
            match result {
                Ok(r) => {
                    tracing::info!(%job, outcome = ?r.outcome, "job ended");
                    if let Ok(mut h) = me.held.lock() {
                        h.remove(&job);
                    }
                }
                Err(e) => {
                    tracing::warn!(%job, "job could not run: {e}; trying again in 30 s");
                    let until = me.clock.now() + COULD_NOT_RUN_WAIT;
                    if let Ok(mut h) = me.held.lock() {
                        h.insert(job, until);
                    }
                }
            }
            if let Ok(mut r) = me.running.lock() {
                r.remove(&job);
            }
            me.wake.notify_one();
        };
        if let Ok(mut tasks) = self.tasks.lock() {
            // Finished tasks stay in the set until joined: a daemon that
            // runs for months would keep one per job it ever ran.
            while tasks.try_join_next().is_some() {}
            tasks.spawn(task);
        }
        tracing::info!(%job, replay, "job started");
    }

    /// Wakes the loop (a job was submitted or resumed).
    pub fn nudge(&self) {
        self.wake.notify_one();
    }

    /// Cancels a job; a running one stops at a blob boundary. Returns the
    /// state it was in (running, if this daemon was running it).
    pub async fn cancel(&self, job: JobId, by: &str) -> Result<JobState, EngineError> {
        let _ops = self.ops.lock().await;
        let was = self.live_state(&self.engine.summary(job)?);
        self.engine
            .cancel(job, &format!("cancelled by {by}"), by)
            .await?;
        self.stop(job, &format!("cancelled by {by}"));
        Ok(was)
    }

    /// Pauses a job; a running one stops at a blob boundary.
    pub async fn pause(&self, job: JobId, by: &str) -> Result<JobState, EngineError> {
        let _ops = self.ops.lock().await;
        let was = self.live_state(&self.engine.summary(job)?);
        self.engine.pause(job, by).await?;
        self.stop(job, &format!("paused by {by}"));
        Ok(was)
    }

    pub async fn resume(&self, job: JobId, by: &str) -> Result<(), EngineError> {
        let _ops = self.ops.lock().await;
        // The log reads a running job as interrupted (its process may have
        // died): this daemon knows better, and "use ferry replay" misled.
        if self.is_running(job) {
            return Err(EngineError::WrongState {
                job: job.to_string(),
                why: "is running under the daemon, not paused".into(),
            });
        }
        self.engine.resume(job, by).await?;
        self.nudge();
        Ok(())
    }

    /// Queues a job to be replayed by this daemon (`ferry replay` while it
    /// holds the state dir).
    pub async fn replay(&self, job: JobId, by: &str) -> Result<(), EngineError> {
        let _ops = self.ops.lock().await;
        self.engine
            .queue_replay(job, by, self.is_running(job))
            .await?;
        self.nudge();
        Ok(())
    }

    fn stop(&self, job: JobId, why: &str) {
        if let Ok(running) = self.running.lock() {
            if let Some(r) = running.get(&job) {
                if let Ok(mut reason) = r.stop_reason.lock() {
                    *reason = Some(why.to_string());
                }
                r.cancel.cancel();
            }
        }
    }

    /// The jobs this daemon is running now.
    pub fn running_jobs(&self) -> Vec<JobId> {
        self.running
            .lock()
            .map(|r| r.keys().copied().collect())
            .unwrap_or_default()
    }

    pub fn status(&self) -> Result<DaemonStatus, EngineError> {
        let now = self.clock.now();
        let running = self
            .running
            .lock()
            .map(|r| {
                r.iter()
                    .map(|(job, x)| RunningStatus {
                        job: *job,
                        schedule: x.schedule.clone(),
                        started_at: x.started_at,
                        totals: x.progress.totals(),
                    })
                    .collect()
            })
            .unwrap_or_default();
        let (queued, retries_planned) = queue_of(&self.engine.open_jobs()?);
        Ok(DaemonStatus {
            pid: std::process::id(),
            started_at: self.started_at,
            now,
            max_jobs: self.opts.max_jobs,
            running,
            queued,
            retries_planned,
            next_fires: next_fires(&self.engine, now)?,
        })
    }
}

/// Queued jobs and planned retries, oldest first.
pub fn queue_of(jobs: &[JobSummary]) -> (Vec<JobId>, Vec<PlannedRetry>) {
    let queued = jobs
        .iter()
        .filter(|s| s.state == JobState::Queued)
        .map(|s| s.id)
        .collect();
    // A plan of a job paused (or resumed, so queued) since is not pending.
    let retries = jobs
        .iter()
        .filter(|s| matches!(s.state, JobState::Failed | JobState::CompletedWithFailures))
        .filter_map(|s| s.retry_planned.map(|(n, at)| (s.id, n, at)))
        .collect();
    (queued, retries)
}

/// Each schedule's next fire after `now`.
pub fn next_fires(engine: &Engine, now: DateTime<Utc>) -> Result<Vec<NextFire>, EngineError> {
    Ok(engine
        .schedules()?
        .by_name
        .iter()
        .map(|(n, st)| {
            (
                n.clone(),
                st.def.cron().ok().and_then(|c| c.next_after(now)),
            )
        })
        .collect())
}

fn last_run_by_daemon(s: &JobSummary) -> bool {
    s.attempts
        .last()
        .is_some_and(|a| a.worker.ends_with(DAEMON_WORKER_SUFFIX))
}

#[cfg(test)]
#[path = "daemon_tests.rs"]
mod tests;
