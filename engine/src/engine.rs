//! The engine facade: opens a state dir, submits and runs jobs, and answers
//! questions from the log.

use std::fs::{File, OpenOptions, TryLockError};
use std::io::{Read, Seek, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use tokio_util::sync::CancellationToken;

use crate::config::Accounts;
use crate::error::EngineError;
use crate::event::{Event, EventRecord, Outcome};
use crate::job::PluginRef;
use crate::job::{Address, JobId, JobSpec};
use crate::log::EventLog;
use crate::plugin::{self, PluginHost, PolicyPlugin};
use crate::plugin_tools::PluginTools;
use crate::projection::{BlobState, BlobStatus, JobState, JobSummary};
use crate::report::{self, Formatter};
use crate::retry::RetryPolicy;
use crate::store;
use crate::transfer::{self, Attempt, AttemptEnd, Outage, Progress, RunReport};

/// How to run an attempt.
#[derive(Clone, Default)]
pub struct RunOptions {
    /// Parallel copies; overrides the job's own setting.
    pub parallel: Option<usize>,
    /// `--parallel auto`: adapt the parallel copies to throughput and
    /// throttling; overrides `parallel` and the job's setting.
    pub parallel_auto: bool,
    /// Cancelled on Ctrl-C/SIGTERM: in-flight copies finish, no new ones
    /// start, and the attempt is recorded as interrupted.
    pub cancel: CancellationToken,
    /// Live counters for a progress display.
    pub progress: Arc<Progress>,
    /// Overrides the config's `[retry]` section.
    pub retry: Option<RetryPolicy>,
    /// Use a policy plugin whose file changed since the job was submitted.
    pub allow_plugin_change: bool,
    /// Why `cancel` was cancelled, recorded in `JobInterrupted` (default:
    /// "stopped on request (signal)").
    pub stop_reason: Arc<std::sync::Mutex<Option<String>>>,
    /// Run by the daemon: marked in `JobStarted.worker`, so a restarted
    /// daemon knows which interrupted jobs were its own to pick up.
    pub by_daemon: bool,
}

/// Marks the worker of attempts a daemon ran.
pub const DAEMON_WORKER_SUFFIX: &str = " (daemon)";

/// An open state dir. Holds its lock for as long as it lives.
pub struct Engine {
    dir: PathBuf,
    log: EventLog,
    /// Credentials behind account names; never logged.
    accounts: Accounts,
    /// Held (flock) for the engine's lifetime: one process per state dir.
    _lock: File,
    /// Serialises "check a job's state, then append" between a start and
    /// pause/cancel/resume: a start checked as queued must not land after
    /// a pause, or the pause is lost (the job reads interrupted and the
    /// daemon replays it).
    pub(crate) transitions: tokio::sync::Mutex<()>,
}

/// The default parallelism: 8 copies per core, as the seed measured.
pub fn default_parallelism() -> usize {
    8 * std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
}

impl Engine {
    /// Opens (creating if needed) the state dir, taking its lock.
    pub fn open(dir: &Path) -> Result<Engine, EngineError> {
        let io = |source| EngineError::StateIo {
            path: dir.to_path_buf(),
            cause: source,
        };
        let made = std::fs::create_dir_all(dir);
        // A file in the way makes create_dir_all say only "File exists".
        if dir.exists() && !dir.is_dir() {
            return Err(EngineError::StateIo {
                path: dir.to_path_buf(),
                cause: std::io::Error::new(
                    std::io::ErrorKind::InvalidInput,
                    "it is a file, not a folder; give a folder path",
                ),
            });
        }
        made.map_err(io)?;
        let lock = take_lock(dir)?;
        let log = EventLog::open(&dir.join("db"))?;
        Ok(Engine {
            dir: dir.to_path_buf(),
            log,
            accounts: Accounts::default(),
            _lock: lock,
            transitions: tokio::sync::Mutex::new(()),
        })
    }

    /// Sets the accounts (from the config and environment) jobs may name.
    pub fn with_accounts(mut self, accounts: Accounts) -> Self {
        self.accounts = accounts;
        self
    }

    pub fn accounts(&self) -> &Accounts {
        &self.accounts
    }

    pub fn accounts_mut(&mut self) -> &mut Accounts {
        &mut self.accounts
    }

    pub fn state_dir(&self) -> &Path {
        &self.dir
    }

    pub fn log(&self) -> &EventLog {
        &self.log
    }

    /// The state dir, its log and its lock, for closing the log while the
    /// lock stays held (`compact`).
    pub(crate) fn into_parts(self) -> (PathBuf, EventLog, File) {
        (self.dir, self.log, self._lock)
    }

    /// Enqueues a schedule's job under the id its `ScheduleFired` named.
    pub async fn submit_scheduled(
        &self,
        id: JobId,
        spec: JobSpec,
        schedule: &str,
    ) -> Result<(), EngineError> {
        self.check_spec(&spec)?;
        let event = Event::JobSubmitted {
            spec: Box::new(spec),
            schedule: Some(schedule.to_string()),
        };
        self.log.append_durable(id, event).await?;
        Ok(())
    }

    /// Records a schedule's job that its checks refused after the fire was
    /// recorded, as submitted and at once cancelled with the reason, so the
    /// fire is settled and the reason is in the job's history.
    pub async fn submit_refused(
        &self,
        id: JobId,
        spec: JobSpec,
        schedule: &str,
        why: &str,
    ) -> Result<(), EngineError> {
        let submitted = Event::JobSubmitted {
            spec: Box::new(spec),
            schedule: Some(schedule.to_string()),
        };
        self.log.append_durable(id, submitted).await?;
        let cancelled = Event::JobCancelled {
            reason: format!("refused when its schedule fired: {why}"),
            by: "daemon".into(),
        };
        self.log.append_durable(id, cancelled).await?;
        Ok(())
    }

    /// A spec's own checks, and that neither end lies inside this state
    /// dir (the job would copy its own log, or write into it).
    pub fn check_spec(&self, spec: &JobSpec) -> Result<(), EngineError> {
        spec.validate()?;
        // Two config names for one storage account: `validate` compares
        // names, and a copy into a prefix of its own source under the other
        // name copied its copies again (8,201 copies of 5,100 blobs).
        if let (
            Address::Azure { account: a1, .. },
            Address::Azure {
                account: a2,
                container,
                prefix,
            },
        ) = (&spec.src, &spec.dst)
        {
            let endpoint = |name: &str| match self.accounts.get(name) {
                Ok(crate::config::Account::Azure(a)) => Some(a.endpoint.clone()),
                _ => None,
            };
            let first = endpoint(a1);
            if a1 != a2 && first.is_some() && first == endpoint(a2) {
                // The destination under the source's name: `validate` then
                // compares them as it does within one name.
                let dst = Address::Azure {
                    account: a1.clone(),
                    container: container.clone(),
                    prefix: prefix.clone(),
                };
                JobSpec {
                    dst,
                    ..spec.clone()
                }
                .validate()
                .map_err(|e| match e {
                    EngineError::InvalidInput(why) => EngineError::InvalidInput(format!(
                        "{a1}: and {a2}: are one storage account: {why}"
                    )),
                    other => other,
                })?;
            }
        }
        let state = std::fs::canonicalize(&self.dir).unwrap_or_else(|_| self.dir.clone());
        for (side, a) in [("source", &spec.src), ("destination", &spec.dst)] {
            let Address::Local { path } = a else {
                continue;
            };
            if crate::job::canonicalize_lenient(Path::new(path)).starts_with(&state) {
                return Err(EngineError::InvalidInput(format!(
                    "the {side} {path} is inside ferry's state dir {}; give a folder outside it",
                    state.display()
                )));
            }
        }
        Ok(())
    }

    /// Checks and enqueues a job; returns once `JobSubmitted` is durable.
    pub async fn submit(&self, spec: JobSpec) -> Result<JobId, EngineError> {
        self.check_spec(&spec)?;
        let id = JobId::new();
        self.log
            .append_durable(
                id,
                Event::JobSubmitted {
                    spec: Box::new(spec),
                    schedule: None,
                },
            )
            .await?;
        Ok(id)
    }

    /// Finds a job by its full id or a unique prefix of it.
    pub fn resolve(&self, text: &str) -> Result<JobId, EngineError> {
        let wanted = text.trim().to_ascii_lowercase().replace('-', "");
        if wanted.is_empty() || !wanted.chars().all(|c| c.is_ascii_hexdigit()) {
            return Err(EngineError::UnknownJob(text.to_string()));
        }
        let mut found = None;
        for id in self.log.job_ids()? {
            if id.0.simple().to_string().starts_with(&wanted) {
                if found.is_some() {
                    return Err(EngineError::AmbiguousJob(text.to_string()));
                }
                found = Some(id);
            }
        }
        found.ok_or_else(|| EngineError::UnknownJob(text.to_string()))
    }

    pub fn summary(&self, job: JobId) -> Result<JobSummary, EngineError> {
        self.log
            .summary(job)?
            .ok_or_else(|| EngineError::UnknownJob(job.to_string()))
    }

    /// Every job, oldest first.
    pub fn jobs(&self) -> Result<Vec<JobSummary>, EngineError> {
        self.log
            .job_ids()?
            .into_iter()
            .map(|id| self.summary(id))
            .collect()
    }

    /// Summaries of the jobs not settled (queued, running, interrupted,
    /// paused, ended with failures), oldest first: all a daemon needs to
    /// look at, read without touching the jobs settled long ago.
    pub fn open_jobs(&self) -> Result<Vec<JobSummary>, EngineError> {
        self.log
            .open_job_ids()?
            .into_iter()
            .map(|id| self.summary(id))
            .collect()
    }

    /// The oldest job still waiting to run.
    pub fn next_queued(&self) -> Result<Option<JobId>, EngineError> {
        for id in self.log.open_job_ids()? {
            if self.summary(id)?.state == JobState::Queued {
                return Ok(Some(id));
            }
        }
        Ok(None)
    }

    /// Runs a queued job's first attempt.
    pub async fn run(&self, job: JobId, opts: RunOptions) -> Result<RunReport, EngineError> {
        let summary = self.summary(job)?;
        if summary.state != JobState::Queued {
            return Err(EngineError::WrongState {
                job: job.to_string(),
                why: format!(
                    "is {}, not queued; use `ferry replay {job}` to resume it",
                    summary.effective_state()
                ),
            });
        }
        self.attempt(summary, opts, true).await
    }

    /// Resumes a job: a new attempt that copies only what is not durably done.
    pub async fn replay(&self, job: JobId, opts: RunOptions) -> Result<RunReport, EngineError> {
        let summary = self.summary(job)?;
        refuse_replay(&summary)?;
        // Asked for by hand, a plugin that changed or an account gone from
        // the config is refused, not recorded as a failed attempt (which
        // also turned an interrupted job failed): the user is there to fix
        // it, as for `ferry copy`.
        let record = opts.by_daemon;
        self.attempt(summary, opts, record).await
    }

    /// `record_refusal`: a store that cannot be opened (an account gone from
    /// the config, a container URL without its SAS) or a policy plugin that
    /// cannot load (changed, gone, refusing) fails the attempt on the
    /// record, so a queue or the daemon moves on and `ferry show` says why;
    /// else it is only returned.
    async fn attempt(
        &self,
        summary: JobSummary,
        opts: RunOptions,
        record_refusal: bool,
    ) -> Result<RunReport, EngineError> {
        let job = summary.id;
        // Also here: a pruned failed job paused and resumed is queued again.
        refuse_pruned(&summary)?;
        let spec = summary.spec.clone().ok_or_else(|| {
            EngineError::corrupt(&self.dir, format!("job {job} has no JobSubmitted event"))
        })?;
        let attempt = summary.attempts.len() as u32 + 1;
        let concurrency = transfer::Concurrency::choose(opts.parallel, opts.parallel_auto, &spec);
        let parallel = concurrency.initial();
        let tag = job.tag();
        let retry = opts.retry.unwrap_or_else(|| self.accounts.retry());
        let open = store::OpenOptions {
            temp_tag: &tag,
            accounts: &self.accounts,
            block_size: spec.block_size,
            retry,
        };
        let started = Instant::now();
        let mut worker = format!("{}:{}", hostname(), std::process::id());
        if opts.by_daemon {
            worker.push_str(DAEMON_WORKER_SUFFIX);
        }
        // A store that cannot be opened (an account gone from the config, a
        // container URL whose SAS was not given again, a local account's
        // folder gone: the spec holds the resolved path, which would be
        // recreated and filled) fails this attempt on the record when
        // `record_refusal`, so the queue moves on and `ferry show` says why.
        let opened = spec
            .mounts
            .iter()
            .try_for_each(|m| crate::job::check_mount(m))
            .and_then(|_| store::open(&spec.src, &open))
            .and_then(|src| Ok((src, store::open(&spec.dst, &open)?)));
        let (src, dst) = match opened {
            Ok(pair) => pair,
            Err(e @ (EngineError::Store(_) | EngineError::InvalidInput(_))) if record_refusal => {
                return self
                    .record_failed_start(&summary, attempt, worker, parallel, e, started)
                    .await;
            }
            Err(e) => return Err(e),
        };
        // A plugin that cannot load or refuses its configuration stops the
        // job before it starts.
        let (policy, plugin_sha256) = match &spec.policy_plugin {
            Some(r) => match self.load_policy(r, opts.allow_plugin_change) {
                Ok((p, changed)) => (Some(p), changed),
                Err(e @ EngineError::Plugin(_)) if record_refusal => {
                    return self
                        .record_failed_start(&summary, attempt, worker, parallel, e, started)
                        .await;
                }
                Err(e) => return Err(e),
            },
            None => (None, None),
        };
        let parallelism = parallel as u32;
        let started_event = Event::JobStarted {
            attempt,
            worker,
            parallelism,
            plugin_sha256,
        };
        self.append_start(&summary, started_event).await?;
        let state_names = [&spec.src, &spec.dst]
            .into_iter()
            .filter_map(|a| state_dir_under(a, &self.dir))
            .collect();
        let ctx = Arc::new(Attempt {
            log: self.log.clone(),
            job,
            attempt,
            spec,
            src,
            dst,
            progress: opts.progress.clone(),
            cancel: opts.cancel.clone(),
            retry,
            resuming: attempt > 1,
            policy,
            listing_retries: Default::default(),
            outage: Outage::new(concurrency.workers()),
            state_names,
        });
        let end = transfer::run(ctx, concurrency).await?;
        let totals = opts.progress.totals();
        let outcome = match end {
            AttemptEnd::Interrupted => {
                let reason = opts
                    .stop_reason
                    .lock()
                    .ok()
                    .and_then(|r| r.clone())
                    .unwrap_or_else(|| "stopped on request (signal)".to_string());
                self.log
                    .append_durable(job, Event::JobInterrupted { attempt, reason })
                    .await?;
                None
            }
            AttemptEnd::Finished(outcome) => {
                let event = Event::JobFinished {
                    attempt,
                    outcome: outcome.clone(),
                    totals: totals.clone(),
                };
                self.log.append_durable(job, event).await?;
                Some(outcome)
            }
        };
        Ok(RunReport {
            job,
            attempt,
            outcome,
            totals,
            elapsed: started.elapsed(),
        })
    }

    /// Appends `JobStarted` if the job is still as `seen` when the start was
    /// decided: opening stores and loading a plugin take time, and a pause
    /// or cancel recorded meanwhile wins.
    async fn append_start(&self, seen: &JobSummary, started: Event) -> Result<(), EngineError> {
        let job = seen.id;
        let _t = self.transitions.lock().await;
        let now = self.summary(job)?;
        if now.state != seen.state || now.attempts.len() != seen.attempts.len() {
            return Err(EngineError::WrongState {
                job: job.to_string(),
                why: format!(
                    "became {} while starting; not started",
                    now.effective_state()
                ),
            });
        }
        self.log.append_durable(job, started).await?;
        Ok(())
    }

    /// An attempt that failed before copying anything, recorded as such.
    async fn record_failed_start(
        &self,
        seen: &JobSummary,
        attempt: u32,
        worker: String,
        parallel: usize,
        e: EngineError,
        started: Instant,
    ) -> Result<RunReport, EngineError> {
        let started_event = Event::JobStarted {
            attempt,
            worker,
            parallelism: parallel as u32,
            plugin_sha256: None,
        };
        let job = seen.id;
        self.append_start(seen, started_event).await?;
        let outcome = Outcome::Failed {
            message: e.to_string(),
        };
        let finished = Event::JobFinished {
            attempt,
            outcome: outcome.clone(),
            totals: Default::default(),
        };
        self.log.append_durable(job, finished).await?;
        Ok(RunReport {
            job,
            attempt,
            outcome: Some(outcome),
            totals: Default::default(),
            elapsed: started.elapsed(),
        })
    }

    fn plugin_host(&self) -> Result<Arc<PluginHost>, EngineError> {
        self.plugin_tools().host()
    }

    /// Plugin checks and formatters, which need no log.
    pub fn plugin_tools(&self) -> PluginTools {
        PluginTools::for_state_dir(&self.dir)
    }

    /// Loads and configures a policy plugin for a new job, pinning its hash.
    pub fn prepare_policy(
        &self,
        path: &Path,
        config: Vec<(String, String)>,
    ) -> Result<PluginRef, EngineError> {
        let abs = std::path::absolute(path).map_err(|e| {
            EngineError::InvalidInput(format!("plugin path {}: {e}", path.display()))
        })?;
        let loaded = self.plugin_host()?.load(&abs)?;
        let sha256 = loaded.sha256.clone();
        PolicyPlugin::new(loaded, config.clone())?;
        Ok(PluginRef {
            path: abs.display().to_string(),
            sha256,
            config,
        })
    }

    /// The job's policy plugin, refusing one whose file changed unless allowed.
    /// Loads a job's policy plugin; with it, its SHA-256 if it is not the
    /// one the job was submitted with (then only with `allow_change`).
    fn load_policy(
        &self,
        r: &PluginRef,
        allow_change: bool,
    ) -> Result<(Arc<PolicyPlugin>, Option<String>), EngineError> {
        let loaded = self.plugin_host()?.load(Path::new(&r.path))?;
        // Judged on the bytes that were loaded, the ones that will run.
        let changed = (loaded.sha256 != r.sha256).then(|| loaded.sha256.clone());
        if let (Some(found), false) = (&changed, allow_change) {
            return Err(plugin::PluginError::Changed {
                path: r.path.clone(),
                expected: r.sha256.clone(),
                found: found.clone(),
            }
            .into());
        }
        Ok((PolicyPlugin::new(loaded, r.config.clone())?, changed))
    }

    /// Writes a job's report through `f`: the summary, then every blob
    /// outcome in log order, in batches (`report::render`).
    pub fn report(&self, job: JobId, f: &mut dyn Formatter) -> Result<String, EngineError> {
        let summary = self.summary(job)?;
        let mut read_error = None;
        let events = self
            .log
            .events(job)
            .map_while(|r| r.map_err(|e| read_error = Some(e)).ok());
        let text = report::render(&summary, events, f);
        match read_error {
            Some(e) => Err(e),
            None => text,
        }
    }

    /// Events of one job, or of every job (oldest job first).
    pub fn events(
        &self,
        job: Option<JobId>,
    ) -> Result<Box<dyn Iterator<Item = Result<EventRecord, EngineError>> + '_>, EngineError> {
        Ok(match job {
            Some(job) => {
                self.summary(job)?;
                Box::new(self.log.events(job))
            }
            // Everything: the control stream (schedules) first, then jobs.
            None => {
                let mut ids = vec![JobId::CONTROL];
                ids.extend(self.log.job_ids()?);
                Box::new(ids.into_iter().flat_map(move |id| self.log.events(id)))
            }
        })
    }

    /// Blobs whose latest state in the job is failed, with their errors.
    /// Blobs that failed in the latest attempt: a replay retries every
    /// earlier failure, so older ones were either fixed or failed again.
    /// At most `max` of them (the first by name), and how many there are:
    /// a job with a million failures is shown without holding them all.
    pub fn failures(
        &self,
        job: JobId,
        max: Option<usize>,
    ) -> Result<(Vec<(String, BlobState)>, u64), EngineError> {
        let since = self
            .summary(job)?
            .attempts
            .last()
            .map_or(0, |a| a.started_seq);
        let mut kept = Vec::new();
        let mut total = 0u64;
        // Failures always have keys of their own (see `log::runs`).
        for entry in self.log.keyed_blob_states(job) {
            let (name, state) = entry?;
            if state.status == BlobStatus::Failed && state.seq > since {
                total += 1;
                if max.is_none_or(|m| kept.len() < m) {
                    kept.push((name, state));
                }
            }
        }
        Ok((kept, total))
    }
}

/// The state dir's place under a local address's folder, as a blob name;
/// none if it is not under it (or either cannot be resolved).
fn state_dir_under(a: &Address, state: &Path) -> Option<String> {
    let Address::Local { path } = a else {
        return None;
    };
    let root = std::fs::canonicalize(Path::new(path)).ok()?;
    let state = std::fs::canonicalize(state).ok()?;
    let rel = state.strip_prefix(&root).ok()?;
    let name = rel.to_str()?.to_string();
    (!name.is_empty()).then_some(name)
}

/// A pruned job cannot run again: its per-blob events and checkpoint are
/// gone, so an attempt would copy everything again under an old job's name.
/// Why a job cannot be replayed, if it cannot: pruned, succeeded,
/// cancelled or paused.
pub(crate) fn refuse_replay(summary: &JobSummary) -> Result<(), EngineError> {
    let job = summary.id;
    refuse_pruned(summary)?;
    if summary.state == JobState::Succeeded {
        return Err(EngineError::WrongState {
            job: job.to_string(),
            why: "already succeeded; nothing to replay (submit a new job to copy again)".into(),
        });
    }
    if summary.state == JobState::Cancelled {
        return Err(EngineError::WrongState {
            job: job.to_string(),
            why: "was cancelled; submit a new job to copy again".into(),
        });
    }
    if summary.state == JobState::Paused {
        return Err(EngineError::WrongState {
            job: job.to_string(),
            why: format!("is paused; `ferry resume {job}` first"),
        });
    }
    Ok(())
}

fn refuse_pruned(summary: &JobSummary) -> Result<(), EngineError> {
    if summary.pruned {
        return Err(EngineError::WrongState {
            job: summary.id.to_string(),
            why: "was pruned (`ferry prune` removed its per-blob events and checkpoint), so it cannot be replayed; submit a new job to copy again".into(),
        });
    }
    Ok(())
}

fn take_lock(dir: &Path) -> Result<File, EngineError> {
    let path = dir.join("lock");
    let io = |source| EngineError::StateIo {
        path: path.clone(),
        cause: source,
    };
    let mut f = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .map_err(io)?;
    match f.try_lock() {
        Ok(()) => {
            // Who holds it, for the error a second process will print.
            let owner = format!(
                "pid {}, since {}",
                std::process::id(),
                chrono::Utc::now().format("%Y-%m-%d %H:%M:%S UTC")
            );
            f.set_len(0).map_err(io)?;
            f.rewind().map_err(io)?;
            f.write_all(owner.as_bytes()).map_err(io)?;
            Ok(f)
        }
        Err(TryLockError::WouldBlock) => {
            let mut owner = String::new();
            let _ = f.read_to_string(&mut owner);
            let owner = if owner.trim().is_empty() {
                "pid unknown".into()
            } else {
                owner.trim().to_string()
            };
            Err(EngineError::StateLocked {
                path: dir.to_path_buf(),
                owner,
            })
        }
        Err(TryLockError::Error(e)) => Err(io(e)),
    }
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "localhost".into())
}

#[cfg(test)]
#[path = "engine_tests.rs"]
pub(crate) mod tests;
