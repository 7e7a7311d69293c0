//! jobs, show, events, export and verify-log: read-only views of the log.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use chrono::{DateTime, NaiveDate, Utc};
use ferry_engine::archive_sum::ArchiveSum;
use ferry_engine::config::{Account, Accounts};
use ferry_engine::job::PluginRef;
use ferry_engine::projection::{AttemptSummary, BlobState};
use ferry_engine::{Address, Engine, EventRecord, JobId, JobSpec, JobState, JobSummary};
use indicatif::HumanBytes;
use serde::Serialize;
use serde_json::json;

use super::Output;
use crate::args::JobsArgs;
use crate::exit;

fn elapsed(s: &JobSummary, running: &[JobId]) -> String {
    elapsed_of(s, running)
        .map(|d| format!("{:.1}s", d.num_milliseconds() as f64 / 1000.0))
        .unwrap_or_else(|| "-".into())
}

/// Time spent in attempts so far: up to now for a job a live daemon is
/// running (its last attempt has no end yet), else as recorded.
fn elapsed_of(s: &JobSummary, running: &[JobId]) -> Option<chrono::Duration> {
    s.elapsed(running.contains(&s.id).then(Utc::now))
}

fn route(s: &JobSummary) -> String {
    s.spec
        .as_ref()
        .map(|sp| format!("{} -> {} ({})", sp.src, sp.dst, sp.decided_by()))
        .unwrap_or_default()
}

/// The state to show: a job a live daemon is running is running; any other
/// job still marked running was left by a process that died.
fn state_of(s: &JobSummary, running: &[JobId]) -> JobState {
    if running.contains(&s.id) {
        JobState::Running
    } else {
        s.effective_state()
    }
}

// ---------------------------------------------------------------- times

/// How to write a time on the command line, for error messages.
const TIME_FORMS: &str =
    "RFC 3339 (2026-11-01T12:00:00Z), a date (2026-11-01, UTC) or an age (90m, 36h, 7d)";

/// A point in time as `--since`/`--until` take it: RFC 3339, a date (its
/// first instant, UTC), or an age before `now` (`30s`, `90m`, `36h`, `7d`,
/// `2w`). `flag` names the option in the error.
pub fn parse_time(flag: &str, s: &str, now: DateTime<Utc>) -> Result<DateTime<Utc>> {
    let t = s.trim();
    if let Ok(at) = DateTime::parse_from_rfc3339(t) {
        return Ok(at.with_timezone(&Utc));
    }
    if let Ok(day) = NaiveDate::parse_from_str(t, "%Y-%m-%d") {
        if let Some(midnight) = day.and_hms_opt(0, 0, 0) {
            return Ok(midnight.and_utc());
        }
    }
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let secs_per: Option<i64> = match unit {
        "s" => Some(1),
        "m" => Some(60),
        "h" => Some(3600),
        "d" => Some(86_400),
        "w" => Some(7 * 86_400),
        _ => None,
    };
    if let (Ok(n), Some(per)) = (num.parse::<i64>(), secs_per) {
        // An age beyond chrono's range is as good as "ever": say so rather
        // than wrap around.
        let at = n
            .checked_mul(per)
            .and_then(chrono::Duration::try_seconds)
            .and_then(|age| now.checked_sub_signed(age));
        return match at {
            Some(at) => Ok(at),
            None => bail!("{flag} {s:?} is too far back"),
        };
    }
    bail!("{flag} {s:?} is not a time; use {TIME_FORMS}")
}

// ---------------------------------------------------------------- jobs

/// Every state, in the order `--sort state` uses (a job's life).
const STATES: [JobState; 8] = JobState::ALL;

fn state_names() -> String {
    STATES
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

/// `--state` is the global state dir flag, so `ferry jobs --state failed`
/// would open (and create) a state dir named `failed` and list nothing.
/// A state dir named like a job state that does not exist is taken for
/// that mistake.
pub fn refuse_state_name_as_dir(state: &Path) -> Result<()> {
    let Some(name) = state.to_str() else {
        return Ok(());
    };
    if STATES.iter().any(|s| s.to_string() == name) && !state.exists() {
        bail!("--state {name} names the state dir, and there is none; to list {name} jobs use --status {name}");
    }
    Ok(())
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SortKey {
    Submitted,
    Elapsed,
    Copied,
    Bytes,
    State,
}

/// Which jobs `ferry jobs` lists and in what order; parsed before the
/// state dir is opened, so a bad flag is the error whoever holds the dir.
#[derive(Debug)]
pub struct JobFilter {
    states: Vec<JobState>,
    since: Option<DateTime<Utc>>,
    until: Option<DateTime<Utc>>,
    account: Option<String>,
    /// The folder `account` stands for when it is a `local =` account:
    /// jobs keep the paths, and that folder as one of their mounts.
    account_root: Option<String>,
    schedule: Option<String>,
    sort: SortKey,
    reverse: bool,
    limit: Option<usize>,
}

impl JobFilter {
    pub fn parse(args: &JobsArgs) -> Result<JobFilter> {
        let now = Utc::now();
        let mut states = Vec::new();
        for s in &args.status {
            let lower = s.trim().to_ascii_lowercase();
            match STATES.iter().find(|st| st.to_string() == lower) {
                Some(st) => states.push(*st),
                None => bail!("--status {s:?} is not a job state; use {}", state_names()),
            }
        }
        let since = args
            .since
            .as_deref()
            .map(|s| parse_time("--since", s, now))
            .transpose()?;
        let until = args
            .until
            .as_deref()
            .map(|s| parse_time("--until", s, now))
            .transpose()?;
        if let (Some(a), Some(b)) = (since, until) {
            if a >= b {
                bail!("--since {a} is not before --until {b}: no job can match");
            }
        }
        let sort = match args.sort.as_deref().map(str::to_ascii_lowercase).as_deref() {
            None | Some("submitted") => SortKey::Submitted,
            Some("elapsed") => SortKey::Elapsed,
            Some("copied") => SortKey::Copied,
            Some("bytes") => SortKey::Bytes,
            Some("state") => SortKey::State,
            Some(_) => bail!(
                "--sort {:?} is not a sort key; use submitted, elapsed, copied, bytes or state",
                args.sort.as_deref().unwrap_or_default()
            ),
        };
        Ok(JobFilter {
            states,
            since,
            until,
            account: args.account.clone(),
            account_root: None,
            schedule: args.schedule.clone(),
            sort,
            reverse: args.reverse,
            limit: args.limit.map(|n| usize::try_from(n).unwrap_or(usize::MAX)),
        })
    }

    fn keeps(&self, s: &JobSummary, running: &[JobId]) -> bool {
        if !self.states.is_empty() && !self.states.contains(&state_of(s, running)) {
            return false;
        }
        // A job with no submission time (no JobSubmitted) matches no window.
        if self
            .since
            .is_some_and(|t| s.submitted_at.is_none_or(|at| at < t))
        {
            return false;
        }
        if self
            .until
            .is_some_and(|t| s.submitted_at.is_none_or(|at| at >= t))
        {
            return false;
        }
        if let Some(name) = &self.account {
            let Some(spec) = &s.spec else { return false };
            let in_root = |root: &String| spec.mounts.contains(root);
            if !names_account(&spec.src, name)
                && !names_account(&spec.dst, name)
                && !self.account_root.as_ref().is_some_and(in_root)
            {
                return false;
            }
        }
        if let Some(name) = &self.schedule {
            if s.schedule.as_deref() != Some(name.as_str()) {
                return false;
            }
        }
        true
    }

    /// Lets `--account` name a `local =` account of `accounts` too.
    pub fn with_local_accounts(mut self, accounts: &Accounts) -> Self {
        if let Some(Ok(Account::Local(root))) = self.account.as_deref().map(|n| accounts.get(n)) {
            self.account_root = Some(root.to_string_lossy().into_owned());
        }
        self
    }

    /// The jobs to list: filtered, sorted (ties stay oldest first), cut.
    pub fn apply(&self, jobs: Vec<JobSummary>, running: &[JobId]) -> Vec<JobSummary> {
        let mut kept: Vec<JobSummary> = jobs
            .into_iter()
            .filter(|s| self.keeps(s, running))
            .collect();
        let rank = |st: JobState| STATES.iter().position(|x| *x == st).unwrap_or(STATES.len());
        // Stable sorts on the key alone keep equal jobs in submission
        // (id) order, also when reversed.
        kept.sort_by(|a, b| {
            let ord = match self.sort {
                SortKey::Submitted => (a.submitted_at, a.id).cmp(&(b.submitted_at, b.id)),
                SortKey::Elapsed => elapsed_of(a, running).cmp(&elapsed_of(b, running)),
                SortKey::Copied => a.copied.cmp(&b.copied),
                SortKey::Bytes => a.copied_bytes.cmp(&b.copied_bytes),
                SortKey::State => rank(state_of(a, running)).cmp(&rank(state_of(b, running))),
            };
            if self.reverse {
                ord.reverse()
            } else {
                ord
            }
        });
        if let Some(n) = self.limit {
            kept.truncate(n);
        }
        kept
    }
}

/// Whether an address is in the storage account `name`: the config name of
/// `account:container`, or the account a container URL points at. Local
/// folders (also those behind a `local =` account) name no account.
fn names_account(a: &Address, name: &str) -> bool {
    match a {
        Address::Azure { account, .. } => account == name,
        Address::AzureUrl { url } => url_account(url).is_some_and(|acct| acct == name),
        Address::Local { .. } | Address::Memory { .. } => false,
    }
}

/// `acct` of `https://acct.blob.core.windows.net/c`, or of an emulator's
/// path-style `http://127.0.0.1:10000/acct/c` (as the engine reads them).
fn url_account(url: &str) -> Option<&str> {
    let rest = url.split_once("://")?.1;
    let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
    let host = if authority.starts_with('[') {
        authority
    } else {
        authority.split(':').next().unwrap_or(authority)
    };
    let path_style = host.starts_with('[')
        || host == "localhost"
        || host.chars().all(|c| c.is_ascii_digit() || c == '.');
    if path_style {
        path.split('/').find(|s| !s.is_empty())
    } else {
        host.split('.').next()
    }
}

/// An attempt with what `show` and `jobs --json` derive from it.
fn attempt_json(a: &AttemptSummary) -> serde_json::Value {
    let mut v = json!(a);
    v["duration_ms"] = json!(duration_ms(a));
    v["bytes_per_sec"] = json!(throughput(a));
    v
}

fn duration_ms(a: &AttemptSummary) -> Option<i64> {
    a.ended_at
        .map(|e| (e - a.started_at).num_milliseconds().max(0))
}

/// Bytes copied per second over the attempt's wall time; `None` until it
/// has ended. A sub-millisecond attempt counts as 1 ms so the rate stays
/// finite.
fn throughput(a: &AttemptSummary) -> Option<u64> {
    let ms = duration_ms(a)?.max(1) as u128;
    Some((a.totals.copied_bytes as u128 * 1000 / ms).min(u64::MAX as u128) as u64)
}

/// The overwrite rule a job runs with, for `show`.
fn policy_json(spec: &JobSpec) -> serde_json::Value {
    match &spec.policy_plugin {
        None => json!({"kind": "built-in", "mode": spec.mode}),
        Some(PluginRef {
            path,
            sha256,
            config,
        }) => json!({
            "kind": "plugin",
            "path": path,
            "sha256": sha256,
            "config": config,
            "on_failure": spec.plugin_failure,
        }),
    }
}

fn summary_json(s: &JobSummary, running: &[JobId]) -> serde_json::Value {
    json!({
        "id": s.id,
        "state": state_of(s, running),
        "schedule": s.schedule,
        "spec": s.spec,
        "policy": s.spec.as_ref().map(policy_json),
        "submitted_at": s.submitted_at,
        "attempts": s.attempts.iter().map(attempt_json).collect::<Vec<_>>(),
        "copied": s.copied,
        "copied_bytes": s.copied_bytes,
        "skipped": s.skipped,
        "failed": s.failed,
        "error": s.error,
        "elapsed_ms": elapsed_of(s, running).map(|d| d.num_milliseconds()),
        "skipped_by_reason": s.skipped_by_reason,
        "retries": s.retries(),
        "retries_by_cause": s.retries_by_cause,
        "pruned": s.pruned,
    })
}

pub fn jobs(engine: &Engine, json: bool, filter: &JobFilter) -> Result<u8> {
    print_jobs(engine.jobs()?, &[], json, filter)
}

/// `running`: jobs a live daemon is running.
pub fn print_jobs(
    jobs: Vec<JobSummary>,
    running: &[JobId],
    json: bool,
    filter: &JobFilter,
) -> Result<u8> {
    let jobs = filter.apply(jobs, running);
    let mut out = BufWriter::new(std::io::stdout().lock());
    if json {
        // One job's JSON at a time, formatted as the whole array would be:
        // all of them as values first took ~18 KB a job.
        use serde::ser::{SerializeSeq, Serializer};
        let mut ser = serde_json::Serializer::pretty(&mut out);
        let mut seq = ser.serialize_seq(Some(jobs.len()))?;
        for s in &jobs {
            seq.serialize_element(&summary_json(s, running))?;
        }
        seq.end()?;
        writeln!(out)?;
        out.flush()?;
        return Ok(exit::OK);
    }
    let state = |s: &JobSummary| {
        if s.pruned {
            format!("{} (pruned)", state_of(s, running))
        } else {
            state_of(s, running).to_string()
        }
    };
    // "completed-with-failures (pruned)" is wider than the usual column.
    let w = jobs
        .iter()
        .map(|s| state(s).len())
        .max()
        .unwrap_or(0)
        .max(23);
    writeln!(
        out,
        "{:<36}  {:<w$}  {:>8}  {:>8}  {:>6}  {:>10}  {:>8}  ROUTE",
        "ID", "STATE", "COPIED", "SKIPPED", "FAILED", "BYTES", "ELAPSED"
    )?;
    for s in &jobs {
        writeln!(
            out,
            "{:<36}  {:<w$}  {:>8}  {:>8}  {:>6}  {:>10}  {:>8}  {}",
            s.id.to_string(),
            state(s),
            s.copied,
            s.skipped,
            s.failed,
            HumanBytes(s.copied_bytes).to_string(),
            elapsed(s, running),
            route(s)
        )?;
    }
    out.flush()?;
    Ok(exit::OK)
}

// ---------------------------------------------------------------- show

pub fn show(engine: &Engine, job: &str, json: bool, max_failures: usize) -> Result<u8> {
    let id = engine.resolve(job)?;
    let s = engine.summary(id)?;
    let (failures, total) = engine.failures(id, (max_failures > 0).then_some(max_failures))?;
    print_show(&s, &failures, total, &[], json, max_failures)
}

fn time_ms(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%d %H:%M:%S%.3f UTC").to_string()
}

/// `live`: a daemon is running this attempt now.
fn print_attempt(out: &mut impl Write, a: &AttemptSummary, live: bool) -> Result<()> {
    let t = &a.totals;
    let unended = if live {
        "running"
    } else {
        "ended without a record (the process died, or could not write the log)"
    };
    writeln!(
        out,
        "attempt {} on {} x{}: {}",
        a.attempt,
        exit::printable(&a.worker),
        a.parallelism,
        a.outcome.as_deref().unwrap_or(unended),
    )?;
    writeln!(out, "  started   {}", time_ms(a.started_at))?;
    if let Some(sha) = &a.plugin_sha256 {
        writeln!(
            out,
            "  plugin    changed since submitted (--allow-plugin-change): ran sha256 {sha}"
        )?;
    }
    match (a.ended_at, duration_ms(a)) {
        (Some(end), Some(ms)) => writeln!(
            out,
            "  ended     {} ({:.2}s)",
            time_ms(end),
            ms as f64 / 1000.0
        )?,
        _ => writeln!(out, "  ended     -")?,
    }
    writeln!(
        out,
        "  blobs     listed {}{}, copied {}, skipped {}, failed {}, already done {}",
        t.listed,
        if a.listing_completed {
            ""
        } else {
            " (listing incomplete)"
        },
        t.copied,
        t.skipped,
        t.failed,
        t.resumed
    )?;
    let rate = throughput(a)
        .map(|r| format!("{}/s", HumanBytes(r)))
        .unwrap_or_else(|| "-".into());
    writeln!(
        out,
        "  bytes     {} copied, {} listed, throughput {rate}",
        HumanBytes(t.copied_bytes),
        HumanBytes(t.listed_bytes)
    )?;
    writeln!(out, "  retries   {}", t.retries)?;
    Ok(())
}

fn print_policy(out: &mut impl Write, spec: &JobSpec) -> Result<()> {
    match &spec.policy_plugin {
        None => writeln!(out, "policy    built-in ({})", spec.mode)?,
        Some(p) => {
            writeln!(
                out,
                "policy    plugin {} sha256 {} (on plugin failure: {})",
                exit::printable(&p.path),
                p.sha256,
                match spec.plugin_failure {
                    ferry_engine::job::PluginFailure::Fail => "fail the blob",
                    ferry_engine::job::PluginFailure::Skip => "skip the blob",
                }
            )?;
            if !p.config.is_empty() {
                let each: Vec<String> = p
                    .config
                    .iter()
                    .map(|(k, v)| exit::printable(&format!("{k}={v}")))
                    .collect();
                writeln!(out, "          config {}", each.join(", "))?;
            }
        }
    }
    Ok(())
}

pub fn print_show(
    s: &JobSummary,
    failures: &[(String, BlobState)],
    // All of them; `failures` may hold only the first `max_failures`.
    failures_total: u64,
    running: &[JobId],
    json: bool,
    max_failures: usize,
) -> Result<u8> {
    let limit = if max_failures == 0 {
        usize::MAX
    } else {
        max_failures
    };
    let mut out = BufWriter::new(std::io::stdout().lock());
    if json {
        let mut v = summary_json(s, running);
        v["failures"] = failures
            .iter()
            .take(limit)
            .map(|(name, st)| json!({"name": name, "error_kind": st.error_kind, "message": st.message}))
            .collect();
        v["failures_total"] = json!(failures_total);
        writeln!(out, "{}", serde_json::to_string_pretty(&v)?)?;
        out.flush()?;
        return Ok(exit::OK);
    }
    writeln!(out, "job       {}", s.id)?;
    let pruned = if s.pruned {
        " (pruned: its per-blob events and checkpoint were removed; counts are from before)"
    } else {
        ""
    };
    writeln!(out, "state     {}{pruned}", state_of(s, running))?;
    if let Some(name) = &s.schedule {
        writeln!(out, "schedule  {name}")?;
    }
    let waiting = matches!(s.state, JobState::Failed | JobState::CompletedWithFailures);
    if let (Some((n, at)), true) = (s.retry_planned, waiting) {
        writeln!(
            out,
            "retry     {n} planned at {}",
            at.format("%Y-%m-%d %H:%M:%S UTC")
        )?;
    }
    if let Some(spec) = &s.spec {
        writeln!(out, "source    {}", spec.src)?;
        writeln!(out, "dest      {}", spec.dst)?;
        writeln!(out, "mode      {}", spec.decided_by())?;
        print_policy(&mut out, spec)?;
        if spec.parallel_auto() {
            writeln!(out, "parallel  auto")?;
        } else if let Some(p) = spec.parallel {
            writeln!(out, "parallel  {p}")?;
        }
        if spec.check_md5 == ferry_engine::job::Md5Check::Off {
            writeln!(out, "md5       not checked (--check-md5 off)")?;
        }
    }
    if let Some(at) = s.submitted_at {
        writeln!(out, "submitted {}", time_ms(at))?;
    }
    writeln!(
        out,
        "totals    copied {} ({}), skipped {}, failed {} (latest attempt), elapsed {}",
        s.copied,
        HumanBytes(s.copied_bytes),
        s.skipped,
        s.failed,
        elapsed(s, running)
    )?;
    if let Some(e) = &s.error {
        writeln!(out, "error     {e}")?;
    }
    if s.retries() > 0 {
        let each: Vec<String> = s
            .retries_by_cause
            .iter()
            .map(|(c, n)| format!("{c}: {n}"))
            .collect();
        writeln!(out, "retries   {} ({})", s.retries(), each.join(", "))?;
    }
    let live = running.contains(&s.id);
    for (i, a) in s.attempts.iter().enumerate() {
        print_attempt(&mut out, a, live && i + 1 == s.attempts.len())?;
    }
    if failures_total > 0 {
        writeln!(out, "failed blobs ({failures_total}):")?;
        for (name, st) in failures.iter().take(limit) {
            let kind = st.error_kind.map(|k| k.to_string()).unwrap_or_default();
            writeln!(
                out,
                "  {name:?} [{kind}] {}",
                st.message.as_deref().unwrap_or("")
            )?;
        }
        let shown = failures.len().min(limit) as u64;
        if failures_total > shown {
            writeln!(
                out,
                "  ... {} more (--failures 0 lists all)",
                failures_total - shown
            )?;
        }
    }
    out.flush()?;
    Ok(exit::OK)
}

// ---------------------------------------------------------------- events

/// Every event type name, as stored (see `Event::kind`). A unit test checks
/// it against the event enum, so a new event cannot be left out.
const KINDS: [&str; 17] = [
    "JobSubmitted",
    "JobStarted",
    "ListingCompleted",
    "BlobCopied",
    "BlobSkipped",
    "BlobFailed",
    "JobInterrupted",
    "JobFinished",
    "JobPruned",
    "JobCancelled",
    "JobPaused",
    "JobResumed",
    "JobRetryPlanned",
    "ScheduleAdded",
    "ScheduleRemoved",
    "ScheduleFired",
    "ScheduleSkipped",
];

/// Which events `ferry events` prints; parsed before the state dir is
/// opened, like `JobFilter`.
#[derive(Debug, Default)]
pub struct EventFilter {
    since_seq: Option<u64>,
    since_time: Option<DateTime<Utc>>,
    kinds: Vec<&'static str>,
}

impl EventFilter {
    /// `since`: a sequence number (only with a job: sequence numbers are
    /// per job) or a time.
    pub fn parse(job: Option<&str>, since: Option<&str>, kinds: &[String]) -> Result<EventFilter> {
        let mut f = EventFilter::default();
        if let Some(s) = since {
            let t = s.trim();
            if !t.is_empty() && t.chars().all(|c| c.is_ascii_digit()) {
                if job.is_none() {
                    bail!("--since {s:?} is a sequence number, which is per job: give a JOB, or a time: {TIME_FORMS}");
                }
                f.since_seq = Some(
                    t.parse()
                        .with_context(|| format!("--since {s:?} is too large"))?,
                );
            } else {
                let at = parse_time("--since", s, Utc::now())
                    .map_err(|e| anyhow::anyhow!("{e}; or a sequence number with a JOB"))?;
                f.since_time = Some(at);
            }
        }
        for k in kinds {
            match KINDS.iter().find(|n| n.eq_ignore_ascii_case(k.trim())) {
                Some(n) => {
                    if !f.kinds.contains(n) {
                        f.kinds.push(n)
                    }
                }
                None => bail!(
                    "--kind {k:?} is not an event type; use {}",
                    KINDS.join(", ")
                ),
            }
        }
        Ok(f)
    }

    fn keeps(&self, rec: &EventRecord) -> bool {
        self.since_seq.is_none_or(|n| rec.seq >= n)
            && self.since_time.is_none_or(|t| rec.at >= t)
            && (self.kinds.is_empty() || self.kinds.contains(&rec.event.kind()))
    }
}

pub fn events(engine: &Engine, job: Option<&str>, json: bool, filter: &EventFilter) -> Result<u8> {
    let id = job.map(|j| engine.resolve(j)).transpose()?;
    print_events(
        engine.events(id)?.map(|r| r.map_err(Into::into)),
        json,
        filter,
    )
}

/// Prints records as they come (the log is read a chunk at a time), so
/// memory does not grow with the log.
pub fn print_events(
    recs: impl Iterator<Item = Result<EventRecord>>,
    json: bool,
    filter: &EventFilter,
) -> Result<u8> {
    let mut out = BufWriter::new(std::io::stdout().lock());
    for rec in recs {
        let rec = rec?;
        if !filter.keeps(&rec) {
            continue;
        }
        if json {
            serde_json::to_writer(&mut out, &rec)?;
            writeln!(out)?;
        } else {
            writeln!(
                out,
                "{} {:>6} {} {:<16} {}",
                rec.job,
                rec.seq,
                rec.at.format("%Y-%m-%dT%H:%M:%S%.3fZ"),
                rec.event.kind(),
                rec.event
            )?;
        }
    }
    out.flush()?;
    Ok(exit::OK)
}

// ---------------------------------------------------------------- export

/// First line of an export; fields in this order, so a file starts with
/// `{"ferry_export":`.
#[derive(Serialize)]
struct ExportHeader {
    ferry_export: u32,
    schema: u16,
    job: JobId,
    events: u64,
}

/// Refuses an existing FILE without `--force`, before any work.
pub fn check_output_target(output: &Path, force: bool) -> Result<()> {
    if output.is_dir() {
        bail!(
            "{} is a folder; give the path of a file to write",
            exit::printable(&output.display().to_string())
        );
    }
    if !force && output.symlink_metadata().is_ok() {
        bail!(
            "{} exists; pass --force to overwrite it",
            exit::printable(&output.display().to_string())
        );
    }
    Ok(())
}

pub fn export(engine: &Engine, job: &str, output: &Path, force: bool, out: Output) -> Result<u8> {
    let id = engine.resolve(job)?;
    // Counted first so the header can say how many follow; this process
    // holds the state dir, so nothing is appended in between.
    let mut n = 0u64;
    for rec in engine.events(Some(id))? {
        rec?;
        n += 1;
    }
    let recs = engine.events(Some(id))?.map(|r| r.map_err(Into::into));
    write_export(id, n, recs, output, force, out)
}

/// Writes the export to a temp file beside `output` and moves it into place
/// once complete, so a failed export leaves no half-written FILE (and with
/// no `--force`, never replaces one that appeared meanwhile).
pub fn write_export(
    job: JobId,
    n: u64,
    recs: impl Iterator<Item = Result<EventRecord>>,
    output: &Path,
    force: bool,
    out: Output,
) -> Result<u8> {
    if output == Path::new("-") {
        // The archive is the output: no "exported" line to mix into it.
        let mut w = BufWriter::new(std::io::stdout().lock());
        write_archive(&mut w, job, n, recs)?;
        w.flush()?;
        return Ok(exit::OK);
    }
    check_output_target(output, force)?;
    let shown = exit::printable(&output.display().to_string());
    let name = output
        .file_name()
        .with_context(|| format!("{shown} is not a file name"))?;
    let dir = match output.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    remove_dead_temps(&dir, name);
    let mut tmp_name = std::ffi::OsString::from(".");
    tmp_name.push(name);
    tmp_name.push(format!(".{}{EXPORT_TEMP}", std::process::id()));
    let tmp = dir.join(tmp_name);
    let file = File::options()
        .write(true)
        .create_new(true)
        .open(&tmp)
        .with_context(|| format!("cannot write {shown}"))?;
    let written = (|| -> Result<u64> {
        let mut w = BufWriter::new(file);
        let count = write_archive(&mut w, job, n, recs)?;
        let file = w.into_inner().map_err(|e| e.into_error())?;
        file.sync_all()?;
        Ok(count)
    })()
    .with_context(|| format!("cannot write {shown}"))
    .and_then(|count| {
        if force {
            std::fs::rename(&tmp, output)
        } else {
            // A hard link fails if the name exists: no clobbering even if
            // FILE was created after the check above.
            std::fs::hard_link(&tmp, output).and_then(|()| std::fs::remove_file(&tmp))
        }
        .map_err(|e| match e.kind() {
            std::io::ErrorKind::AlreadyExists => {
                anyhow::anyhow!("{shown} exists; pass --force to overwrite it")
            }
            _ => anyhow::Error::new(e).context(format!("cannot write {shown}")),
        })?;
        Ok(count)
    });
    let count = match written {
        Ok(c) => c,
        Err(e) => {
            let _ = std::fs::remove_file(&tmp);
            return Err(e);
        }
    };
    if !out.quiet {
        println!("exported {count} events of job {job} to {shown}");
    }
    Ok(exit::OK)
}

/// Ends the temp file of an export: `.FILE.PID.ferry-export-tmp`.
const EXPORT_TEMP: &str = ".ferry-export-tmp";

/// Removes temp files of exports to the same FILE whose process is gone (a
/// killed export leaves its temp file; before, they piled up). A process
/// that still runs keeps its own.
fn remove_dead_temps(dir: &Path, name: &std::ffi::OsStr) {
    use std::os::unix::ffi::OsStrExt;
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    let mut prefix = b".".to_vec();
    prefix.extend_from_slice(name.as_bytes());
    prefix.push(b'.');
    for entry in entries.flatten() {
        let file = entry.file_name();
        let pid = file
            .as_bytes()
            .strip_prefix(prefix.as_slice())
            .and_then(|rest| rest.strip_suffix(EXPORT_TEMP.as_bytes()))
            .and_then(|pid| std::str::from_utf8(pid).ok())
            .and_then(|pid| pid.parse::<libc::pid_t>().ok())
            .filter(|pid| *pid > 0);
        let Some(pid) = pid else {
            continue;
        };
        // SAFETY: signal 0 sends nothing; it only asks whether pid exists.
        let gone = unsafe { libc::kill(pid, 0) } != 0
            && std::io::Error::last_os_error().raw_os_error() == Some(libc::ESRCH);
        if gone {
            let _ = std::fs::remove_file(entry.path());
        }
    }
}

/// The archive: a header saying how many events follow, then each event,
/// one JSON object per line, then the checksum of all of it. Returns how
/// many events were written.
fn write_archive(
    w: &mut impl Write,
    job: JobId,
    n: u64,
    recs: impl Iterator<Item = Result<EventRecord>>,
) -> Result<u64> {
    let mut w = Summed {
        inner: w,
        sum: ArchiveSum::new(),
    };
    serde_json::to_writer(
        &mut w,
        &ExportHeader {
            // The version `ferry import` reads, so the two stay in step.
            ferry_export: ferry_engine::audit::EXPORT_FORMAT,
            schema: ferry_engine::event::SCHEMA_VERSION,
            job,
            events: n,
        },
    )?;
    writeln!(w)?;
    let mut count = 0u64;
    for rec in recs {
        serde_json::to_writer(&mut w, &rec?)?;
        writeln!(w)?;
        count += 1;
    }
    if count != n {
        bail!("the log of job {job} changed while it was exported ({n} events counted, {count} read); try again");
    }
    let Summed { inner, sum } = w;
    writeln!(inner, "{}", sum.line())?;
    Ok(count)
}

/// A writer that sums what goes through it.
struct Summed<'a, W> {
    inner: &'a mut W,
    sum: ArchiveSum,
}

impl<W: Write> Write for Summed<'_, W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.sum.update(&buf[..n]);
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

// ---------------------------------------------------------------- verify

pub fn verify(engine: &Engine, job: Option<&str>, out: Output) -> Result<u8> {
    let id = job.map(|j| engine.resolve(j)).transpose()?;
    let v = engine.verify(id)?;
    if let Some(first) = v.problems.first() {
        eprintln!(
            "ferry: verify-log: {first} ({} problem(s) in all)",
            v.problems.len()
        );
        return Ok(exit::VERIFY_FAILED);
    }
    if !out.quiet {
        println!(
            "log ok: {} jobs, {} events, {} checkpoint entries match a fresh replay",
            v.jobs, v.events, v.blobs
        );
    }
    Ok(exit::OK)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_list_every_event_type() {
        // serde names every variant when it meets an unknown one: the one
        // place that lists them all without constructing each.
        let err = serde_json::from_str::<ferry_engine::Event>(r#"{"type":"Nope","data":{}}"#)
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        let listed = err
            .split_once("expected one of ")
            .map(|(_, l)| l)
            .unwrap_or_default();
        let mut from_serde: Vec<&str> = listed
            .split(", ")
            .map(|s| s.split('`').nth(1).unwrap_or(s))
            .collect();
        from_serde.sort_unstable();
        let mut ours = KINDS.to_vec();
        ours.sort_unstable();
        assert_eq!(ours, from_serde, "serde said: {err}");
    }

    #[test]
    fn times_parse_in_every_form_and_bad_ones_name_the_flag() {
        let now = DateTime::parse_from_rfc3339("2026-11-10T12:00:00Z")
            .map(|t| t.with_timezone(&Utc))
            .unwrap();
        let at = |s: &str| parse_time("--since", s, now).map(|t| t.to_rfc3339());
        assert_eq!(at("2026-11-01").unwrap(), "2026-11-01T00:00:00+00:00");
        assert_eq!(
            at("2026-11-01T10:00:00+02:00").unwrap(),
            "2026-11-01T08:00:00+00:00"
        );
        assert_eq!(at("90m").unwrap(), "2026-11-10T10:30:00+00:00");
        assert_eq!(at("36h").unwrap(), "2026-11-09T00:00:00+00:00");
        assert_eq!(at("7d").unwrap(), "2026-11-03T12:00:00+00:00");
        for bad in ["yesterday", "7y", "", "-3d", "2026-13-01", "d"] {
            let e = at(bad).unwrap_err().to_string();
            assert!(e.starts_with("--since "), "{bad}: {e}");
        }
        assert!(at("99999999999999d")
            .unwrap_err()
            .to_string()
            .contains("too far back"));
    }

    #[test]
    fn url_accounts_are_read_from_the_host_or_an_emulators_path() {
        assert_eq!(
            url_account("https://acct.blob.core.windows.net/photos"),
            Some("acct")
        );
        assert_eq!(
            url_account("http://127.0.0.1:10000/devstoreaccount1/c"),
            Some("devstoreaccount1")
        );
        assert_eq!(url_account("http://localhost:10000/dev/c"), Some("dev"));
        assert_eq!(url_account("no-scheme"), None);
    }
}
