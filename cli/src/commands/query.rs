//! jobs, show, events and verify-log: read-only views of the log.

use std::io::{BufWriter, Write};

use anyhow::Result;
use ferry_engine::projection::BlobState;
use ferry_engine::{Engine, EventRecord, JobId, JobState, JobSummary};
use indicatif::HumanBytes;
use serde_json::json;

use super::Output;
use crate::exit;

fn elapsed(s: &JobSummary) -> String {
    s.elapsed()
        .map(|d| format!("{:.1}s", d.num_milliseconds() as f64 / 1000.0))
        .unwrap_or_else(|| "-".into())
}

fn route(s: &JobSummary) -> String {
    s.spec
        .as_ref()
        .map(|sp| format!("{} -> {} ({})", sp.src, sp.dst, sp.mode))
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

fn summary_json(s: &JobSummary, running: &[JobId]) -> serde_json::Value {
    json!({
        "id": s.id,
        "state": state_of(s, running),
        "schedule": s.schedule,
        "spec": s.spec,
        "submitted_at": s.submitted_at,
        "attempts": s.attempts,
        "copied": s.copied,
        "copied_bytes": s.copied_bytes,
        "skipped": s.skipped,
        "failed": s.failed,
        "error": s.error,
        "elapsed_ms": s.elapsed().map(|d| d.num_milliseconds()),
        "skipped_by_reason": s.skipped_by_reason,
        "retries": s.retries(),
        "retries_by_cause": s.retries_by_cause,
    })
}

pub fn jobs(engine: &Engine, json: bool) -> Result<u8> {
    print_jobs(&engine.jobs()?, &[], json)
}

/// `running`: jobs a live daemon is running.
pub fn print_jobs(jobs: &[JobSummary], running: &[JobId], json: bool) -> Result<u8> {
    let mut out = BufWriter::new(std::io::stdout().lock());
    if json {
        let all: Vec<_> = jobs.iter().map(|s| summary_json(s, running)).collect();
        writeln!(out, "{}", serde_json::to_string_pretty(&all)?)?;
        return Ok(exit::OK);
    }
    writeln!(
        out,
        "{:<36}  {:<23}  {:>8}  {:>8}  {:>6}  {:>10}  {:>8}  ROUTE",
        "ID", "STATE", "COPIED", "SKIPPED", "FAILED", "BYTES", "ELAPSED"
    )?;
    for s in jobs {
        writeln!(
            out,
            "{:<36}  {:<23}  {:>8}  {:>8}  {:>6}  {:>10}  {:>8}  {}",
            s.id.to_string(),
            state_of(s, running).to_string(),
            s.copied,
            s.skipped,
            s.failed,
            HumanBytes(s.copied_bytes).to_string(),
            elapsed(s),
            route(s)
        )?;
    }
    Ok(exit::OK)
}

pub fn show(engine: &Engine, job: &str, json: bool, max_failures: usize) -> Result<u8> {
    let id = engine.resolve(job)?;
    let s = engine.summary(id)?;
    let failures = engine.failures(id)?;
    print_show(&s, &failures, &[], json, max_failures)
}

pub fn print_show(
    s: &JobSummary,
    failures: &[(String, BlobState)],
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
        v["failures_total"] = json!(failures.len());
        writeln!(out, "{}", serde_json::to_string_pretty(&v)?)?;
        return Ok(exit::OK);
    }
    writeln!(out, "job       {}", s.id)?;
    writeln!(out, "state     {}", state_of(s, running))?;
    if let Some(name) = &s.schedule {
        writeln!(out, "schedule  {name}")?;
    }
    if let Some((n, at)) = s.retry_planned {
        writeln!(
            out,
            "retry     {n} planned at {}",
            at.format("%Y-%m-%d %H:%M:%S UTC")
        )?;
    }
    if let Some(spec) = &s.spec {
        writeln!(out, "source    {}", spec.src)?;
        writeln!(out, "dest      {}", spec.dst)?;
        writeln!(out, "mode      {}", spec.mode)?;
        if let Some(p) = spec.parallel {
            writeln!(out, "parallel  {p}")?;
        }
    }
    if let Some(at) = s.submitted_at {
        writeln!(out, "submitted {}", at.format("%Y-%m-%d %H:%M:%S%.3f UTC"))?;
    }
    writeln!(
        out,
        "totals    copied {} ({}), skipped {}, failed {} (latest attempt), elapsed {}",
        s.copied,
        HumanBytes(s.copied_bytes),
        s.skipped,
        s.failed,
        elapsed(s)
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
    for a in &s.attempts {
        let t = &a.totals;
        let dur = a
            .ended_at
            .map(|e| {
                format!(
                    "{:.2}s",
                    (e - a.started_at).num_milliseconds() as f64 / 1000.0
                )
            })
            .unwrap_or_else(|| "-".into());
        writeln!(
            out,
            "attempt {} on {} x{} at {}: {} [{}] listed {}{}, copied {} ({}), skipped {}, failed {}, already done {}",
            a.attempt,
            a.worker,
            a.parallelism,
            a.started_at.format("%Y-%m-%d %H:%M:%S"),
            a.outcome.as_deref().unwrap_or("ended without a record (process died)"),
            dur,
            t.listed,
            if a.listing_completed { "" } else { " (listing incomplete)" },
            t.copied,
            HumanBytes(t.copied_bytes),
            t.skipped,
            t.failed,
            t.resumed
        )?;
    }
    if !failures.is_empty() {
        writeln!(out, "failed blobs ({}):", failures.len())?;
        for (name, st) in failures.iter().take(limit) {
            let kind = st.error_kind.map(|k| k.to_string()).unwrap_or_default();
            writeln!(
                out,
                "  {name:?} [{kind}] {}",
                st.message.as_deref().unwrap_or("")
            )?;
        }
        if failures.len() > limit {
            writeln!(
                out,
                "  ... {} more (--failures 0 lists all)",
                failures.len() - limit
            )?;
        }
    }
    Ok(exit::OK)
}

pub fn events(engine: &Engine, job: Option<&str>, json: bool) -> Result<u8> {
    let id = job.map(|j| engine.resolve(j)).transpose()?;
    print_events(engine.events(id)?.map(|r| r.map_err(Into::into)), json)
}

pub fn print_events(recs: impl Iterator<Item = Result<EventRecord>>, json: bool) -> Result<u8> {
    let mut out = BufWriter::new(std::io::stdout().lock());
    for rec in recs {
        let rec = rec?;
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
