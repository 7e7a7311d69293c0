//! Job control and schedules as log operations: cancel, pause, resume,
//! schedule add/remove. Each checks the job's (or schedule's) state folded
//! from the log and appends one durable event naming who asked. A job that
//! is running in this process is stopped by its runner (the daemon), which
//! records the event first and then cancels the attempt at a blob boundary.

use chrono::{DateTime, Utc};

use crate::error::EngineError;
use crate::event::Event;
use crate::job::JobId;
use crate::projection::JobState;
use crate::schedule::{self, ScheduleDef, Schedules};
use crate::Engine;

/// `user@host`, for the audit trail of who changed what.
pub fn actor() -> String {
    let user = std::env::var("USER")
        .or_else(|_| std::env::var("LOGNAME"))
        .ok()
        .filter(|u| !u.is_empty())
        .unwrap_or_else(|| user_name(own_uid()));
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "localhost".into());
    format!("{user}@{host}")
}

/// The passwd name of `uid`, else `uidN`.
fn user_name(uid: u32) -> String {
    std::fs::read_to_string("/etc/passwd")
        .ok()
        .and_then(|p| {
            p.lines().find_map(|l| {
                let f: Vec<&str> = l.split(':').collect();
                (f.get(2) == Some(&uid.to_string().as_str())).then(|| f[0].to_string())
            })
        })
        .unwrap_or_else(|| format!("uid{uid}"))
}

fn own_uid() -> u32 {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata("/proc/self")
        .map(|m| m.uid())
        .unwrap_or(0)
}

impl Engine {
    /// Cancels a job that has not succeeded: it will not run again.
    pub async fn cancel(
        &self,
        job: JobId,
        reason: &str,
        by: &str,
    ) -> Result<JobState, EngineError> {
        let _t = self.transitions.lock().await;
        let state = self.summary(job)?.effective_state();
        if matches!(state, JobState::Succeeded | JobState::Cancelled) {
            return Err(EngineError::WrongState {
                job: job.to_string(),
                why: format!("is {state}; only unfinished jobs can be cancelled"),
            });
        }
        let event = Event::JobCancelled {
            reason: reason.to_string(),
            by: by.to_string(),
        };
        self.log().append_durable(job, event).await?;
        Ok(state)
    }

    /// Holds a job: a queued one is not started, a running one stops at a
    /// blob boundary, a failed one is not retried, until `resume`.
    pub async fn pause(&self, job: JobId, by: &str) -> Result<JobState, EngineError> {
        let _t = self.transitions.lock().await;
        let summary = self.summary(job)?;
        // Its checkpoint is gone, so it can never run again: a pause (and a
        // resume after) would park it in a queue nothing takes it from.
        if summary.pruned {
            return Err(EngineError::WrongState {
                job: job.to_string(),
                why: "was pruned (its checkpoint is gone), so it cannot run again".into(),
            });
        }
        let state = summary.effective_state();
        if matches!(
            state,
            JobState::Succeeded | JobState::Cancelled | JobState::Paused
        ) {
            return Err(EngineError::WrongState {
                job: job.to_string(),
                why: format!(
                    "is {state}; only queued, running, interrupted or failed jobs can be paused"
                ),
            });
        }
        let event = Event::JobPaused { by: by.to_string() };
        self.log().append_durable(job, event).await?;
        Ok(state)
    }

    /// Puts a paused job back in the queue; if it ran before, its next
    /// attempt resumes from the checkpoint.
    pub async fn resume(&self, job: JobId, by: &str) -> Result<(), EngineError> {
        let _t = self.transitions.lock().await;
        let state = self.summary(job)?.effective_state();
        if state != JobState::Paused {
            return Err(EngineError::WrongState {
                job: job.to_string(),
                why: format!("is {state}, not paused; `ferry resume` only undoes `ferry pause` (use `ferry replay` to resume an interrupted job)"),
            });
        }
        let event = Event::JobResumed { by: by.to_string() };
        self.log().append_durable(job, event).await?;
        Ok(())
    }

    /// Puts a job back in the queue to be replayed by the daemon that holds
    /// the state dir (`ferry replay` beside a daemon), recorded as
    /// `JobResumed` naming who asked. `running`: the daemon is running it.
    pub async fn queue_replay(
        &self,
        job: JobId,
        by: &str,
        running: bool,
    ) -> Result<(), EngineError> {
        let _t = self.transitions.lock().await;
        let summary = self.summary(job)?;
        crate::engine::refuse_replay(&summary)?;
        let refuse = |why: String| {
            Err(EngineError::WrongState {
                job: job.to_string(),
                why,
            })
        };
        if running {
            return refuse("is running under the daemon; follow it with `ferry show`".into());
        }
        if summary.effective_state() == JobState::Queued {
            return refuse("is already queued; the daemon takes it in turn".into());
        }
        if let Some(url) = summary.spec.as_ref().and_then(|s| s.container_url()) {
            return Err(EngineError::InvalidInput(format!(
                "job {job} copies {url}, a container URL whose SAS ferry never stores, so the daemon could not reach it; stop the daemon and `ferry replay {job} --src-sas/--dst-sas`"
            )));
        }
        let event = Event::JobResumed { by: by.to_string() };
        self.log().append_durable(job, event).await?;
        Ok(())
    }

    /// The live schedules, folded from the control stream.
    pub fn schedules(&self) -> Result<Schedules, EngineError> {
        let recs = self
            .log()
            .events(JobId::CONTROL)
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Schedules::fold(recs.iter()))
    }

    /// Adds a schedule; its name must be new and its cron valid.
    pub async fn add_schedule(&self, def: ScheduleDef, by: &str) -> Result<(), EngineError> {
        schedule::check_name(&def.name).map_err(EngineError::InvalidInput)?;
        def.cron().map_err(EngineError::InvalidInput)?;
        def.spec.validate()?;
        // Held from the check to the append: two adds of one name at once
        // (through a daemon) would both find it free.
        let _t = self.transitions.lock().await;
        if self.schedules()?.by_name.contains_key(&def.name) {
            return Err(EngineError::InvalidInput(format!(
                "schedule {:?} already exists; remove it first (`ferry schedule remove {}`)",
                def.name, def.name
            )));
        }
        let event = Event::ScheduleAdded {
            def: Box::new(def),
            by: by.to_string(),
        };
        self.log().append_durable(JobId::CONTROL, event).await?;
        Ok(())
    }

    pub async fn remove_schedule(&self, name: &str, by: &str) -> Result<(), EngineError> {
        let _t = self.transitions.lock().await;
        if !self.schedules()?.by_name.contains_key(name) {
            return Err(EngineError::InvalidInput(format!(
                "no schedule {name:?}; see `ferry schedule list`"
            )));
        }
        let event = Event::ScheduleRemoved {
            name: name.to_string(),
            by: by.to_string(),
        };
        self.log().append_durable(JobId::CONTROL, event).await?;
        Ok(())
    }

    /// The next `n` fires of a schedule after `now`.
    pub fn next_fires(
        &self,
        name: &str,
        now: DateTime<Utc>,
        n: usize,
    ) -> Result<Vec<DateTime<Utc>>, EngineError> {
        let all = self.schedules()?;
        let s = all.by_name.get(name).ok_or_else(|| {
            EngineError::InvalidInput(format!("no schedule {name:?}; see `ferry schedule list`"))
        })?;
        let cron = s.def.cron().map_err(EngineError::InvalidInput)?;
        Ok(cron.upcoming(now, n))
    }
}
