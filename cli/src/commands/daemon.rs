//! `ferry daemon` (drain the queue, fire schedules, retry failures, serve
//! other ferry commands over the control socket) and `ferry status`.

use std::io::Write;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use chrono::{DateTime, Utc};
use ferry_engine::daemon::{
    self, Clock, Daemon, DaemonOptions, DaemonStatus, OffsetClock, SystemClock,
};
use ferry_engine::Engine;
use tokio_util::sync::CancellationToken;

use super::run::Ctx;
use crate::args::{DaemonArgs, Parallel};
use crate::control::{self, Access, Request};
use crate::exit;

/// The daemon's clock: real time, unless `FERRY_TEST_NOW` (RFC 3339) sets
/// where it starts, for tests that need a fire "in two seconds".
pub fn clock() -> Result<Arc<dyn Clock>> {
    match std::env::var("FERRY_TEST_NOW") {
        Ok(t) => {
            let at = DateTime::parse_from_rfc3339(&t)
                .with_context(|| format!("FERRY_TEST_NOW={t:?} is not an RFC 3339 time"))?;
            Ok(Arc::new(OffsetClock::starting_at(at.with_timezone(&Utc))))
        }
        Err(_) => Ok(Arc::new(SystemClock)),
    }
}

pub fn daemon(ctx: &Ctx, args: DaemonArgs) -> Result<u8> {
    let engine = ctx.engine(ctx.accounts()?)?;
    let (parallel, parallel_auto) = Parallel::split(args.parallel);
    let opts = DaemonOptions {
        max_jobs: args.jobs as usize,
        max_retries: args.max_retries,
        retry_delay: Duration::from_secs_f64(args.retry_delay),
        parallel,
        parallel_auto,
        ..DaemonOptions::default()
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    rt.block_on(async {
        let sock = control::socket_path(&ctx.state);
        // We hold the state dir's lock, so a socket file here is stale.
        let _ = std::fs::remove_file(&sock);
        let listener = tokio::net::UnixListener::bind(&sock)
            .with_context(|| format!("cannot create the control socket {}", sock.display()))?;
        restrict(&sock);
        let d = Daemon::new(Arc::new(engine), opts, clock()?);
        let server = tokio::spawn(control::serve(listener, d.clone()));
        let shutdown = CancellationToken::new();
        let stop = shutdown.clone();
        let quiet = ctx.out.quiet;
        tokio::spawn(async move {
            if crate::signals::wait().await.is_err() {
                return;
            }
            if !quiet {
                eprintln!(
                    "ferry: daemon stopping: running jobs stop at blob boundaries \
                     (signal again to quit now; the next daemon resumes them)"
                );
            }
            stop.cancel();
            if crate::signals::wait().await.is_ok() {
                eprintln!("ferry: quitting now; the next daemon resumes the running jobs");
                std::process::exit(exit::OK as i32);
            }
        });
        if !ctx.out.quiet {
            eprintln!(
                "ferry: daemon running (pid {}, up to {} jobs); SIGTERM or Ctrl-C stops it",
                std::process::id(),
                args.jobs
            );
        }
        let result = d.run(shutdown).await;
        server.abort();
        let _ = std::fs::remove_file(&sock);
        if !result? {
            // Their copies are still going: waiting for them (as dropping the
            // runtime would) kept copying after the socket was gone, while
            // the next command took the state dir for corrupt. Ending now
            // is a crash the log is made for: they resume on restart.
            eprintln!(
                "ferry: jobs did not reach a blob boundary in time; quitting, the next daemon resumes them"
            );
            std::process::exit(exit::OK as i32);
        }
        Ok(exit::OK)
    })
}

fn restrict(sock: &Path) {
    use std::os::unix::fs::PermissionsExt;
    let _ = std::fs::set_permissions(sock, std::fs::Permissions::from_mode(0o600));
}

pub fn status(state: &Path, json: bool) -> Result<u8> {
    let status: Option<DaemonStatus> = match control::access(state)? {
        Access::Daemon(sock) => Some(serde_json::from_value(control::call(
            &sock,
            &Request::Status,
        )?)?),
        Access::Local(engine) => {
            let s = offline(&engine)?;
            print(&s, false, json)?;
            return Ok(exit::OK);
        }
    };
    if let Some(s) = status {
        print(&s, true, json)?;
    }
    Ok(exit::OK)
}

/// `ferry status` on a state dir that does not exist: no daemon, nothing
/// queued (and the state dir is not made).
pub fn status_without_a_log(json: bool) -> Result<u8> {
    let now = clock()?.now();
    let s = DaemonStatus {
        pid: 0,
        started_at: now,
        now,
        max_jobs: 0,
        running: Vec::new(),
        queued: Vec::new(),
        retries_planned: Vec::new(),
        next_fires: Vec::new(),
    };
    print(&s, false, json)?;
    Ok(exit::OK)
}

/// What status can say with no daemon running.
fn offline(engine: &Engine) -> Result<DaemonStatus> {
    let now = clock()?.now();
    let (queued, retries_planned) = daemon::queue_of(&engine.open_jobs()?);
    Ok(DaemonStatus {
        pid: 0,
        started_at: now,
        now,
        max_jobs: 0,
        running: Vec::new(),
        queued,
        retries_planned,
        next_fires: daemon::next_fires(engine, now)?,
    })
}

fn print(s: &DaemonStatus, up: bool, json: bool) -> Result<()> {
    let mut out = std::io::stdout().lock();
    if json {
        let mut v = serde_json::to_value(s)?;
        v["daemon"] = serde_json::json!(if up { "running" } else { "stopped" });
        writeln!(out, "{}", serde_json::to_string_pretty(&v)?)?;
        return Ok(());
    }
    let fmt = |t: &DateTime<Utc>| t.format("%Y-%m-%d %H:%M:%S UTC").to_string();
    if up {
        writeln!(
            out,
            "daemon    running, pid {}, since {}, up to {} jobs",
            s.pid,
            fmt(&s.started_at),
            s.max_jobs
        )?;
    } else {
        writeln!(out, "daemon    not running (`ferry daemon` starts it)")?;
    }
    for r in &s.running {
        writeln!(
            out,
            "running   {}{}: listed {}, copied {}, skipped {}, failed {}, since {}",
            r.job,
            r.schedule
                .as_ref()
                .map(|n| format!(" ({n})"))
                .unwrap_or_default(),
            r.totals.listed,
            r.totals.copied,
            r.totals.skipped,
            r.totals.failed,
            fmt(&r.started_at)
        )?;
    }
    for j in &s.queued {
        writeln!(out, "queued    {j}")?;
    }
    for (j, n, at) in &s.retries_planned {
        writeln!(out, "retry     {j}: retry {n} at {}", fmt(at))?;
    }
    for (name, next) in &s.next_fires {
        let when = next.as_ref().map(fmt).unwrap_or_else(|| "never".into());
        writeln!(out, "schedule  {name}: next {when}")?;
    }
    Ok(())
}
