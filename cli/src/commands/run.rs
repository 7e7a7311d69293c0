//! copy, submit, run and replay: the commands that change the log.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Result;
use ferry_engine::config::Accounts;
use ferry_engine::event::Outcome;
use ferry_engine::projection::JobState;
use ferry_engine::retry::RetryPolicy;
use ferry_engine::EngineError;
use ferry_engine::{Address, Engine, JobId, JobSpec, Mode, Progress, RunOptions, RunReport};
use indicatif::HumanBytes;
use tokio_util::sync::CancellationToken;

use super::{open, Output};
use crate::args::{JobArgs, Parallel, RetryArgs, RunArgs};
use crate::control::{self, Access, Request};
use crate::exit;
use crate::progress::ProgressView;

/// What the job commands need besides their own arguments.
pub struct Ctx {
    pub state: PathBuf,
    pub config: Option<PathBuf>,
    pub out: Output,
}

impl Ctx {
    /// The accounts: `--config`/`FERRY_CONFIG`, else `ferry.toml` in the
    /// state dir if there is one, plus `AZURE_STORAGE_CONNECTION_STRING`.
    pub(crate) fn accounts(&self) -> Result<Accounts> {
        let default = self.state.join("ferry.toml");
        let path = match &self.config {
            Some(p) => Some(p.clone()),
            None => default.is_file().then_some(default),
        };
        Ok(Accounts::load(path.as_deref(), &|k| std::env::var(k).ok())?)
    }

    /// Opens the state dir with the accounts loaded; `sas` pairs a job's
    /// container URLs with the SAS given for them this time.
    pub(crate) fn engine(&self, accounts: Accounts) -> Result<Engine> {
        Ok(open(&self.state)?.with_accounts(accounts))
    }
}

/// Parses the job's addresses; a container URL's SAS goes into `accounts`
/// (memory only), never into the spec.
pub(crate) fn spec_of(args: &JobArgs, accounts: &mut Accounts) -> Result<JobSpec> {
    let mut mounts = Vec::new();
    let mut addr = |input: &OsStr| -> Result<Address> {
        let input = input.to_str().ok_or_else(|| {
            EngineError::InvalidInput(format!(
                "path {} is not valid UTF-8; rename it or copy its parent",
                Path::new(input).display()
            ))
        })?;
        let parsed = Address::parse(input, accounts)?;
        if let (Address::AzureUrl { url }, Some(sas)) = (&parsed.address, &parsed.sas) {
            accounts.set_url_sas(url, sas);
        }
        mounts.extend(parsed.root);
        Ok(parsed.address)
    };
    let (src, dst) = (addr(&args.src)?, addr(&args.dst)?);
    mounts.dedup();
    Ok(JobSpec {
        src,
        dst,
        mode: if args.incremental {
            Mode::Incremental
        } else {
            args.mode
        },
        parallel: args.parallel.map(Parallel::for_spec),
        block_size: args.block_size,
        copy_method: args.copy_method,
        policy_plugin: None,
        plugin_failure: args.plugin_failure,
        mounts,
        check_md5: args.check_md5,
    })
}

/// Pins the policy plugin (hash) after checking it loads and configures.
pub(crate) fn with_policy(engine: &Engine, args: &JobArgs, mut spec: JobSpec) -> Result<JobSpec> {
    if let Some(path) = &args.policy {
        spec.policy_plugin = Some(engine.prepare_policy(path, args.plugin_config.clone())?);
    } else if !args.plugin_config.is_empty() {
        anyhow::bail!("--plugin-config needs --policy plugin:PATH.wasm");
    }
    Ok(spec)
}

/// Gives a job's container URLs the SAS passed to this run; refuses one
/// that has already expired.
fn attach_sas(accounts: &mut Accounts, spec: Option<&JobSpec>, args: &RunArgs) -> Result<()> {
    let Some(spec) = spec else { return Ok(()) };
    for (addr, sas) in [(&spec.src, &args.src_sas), (&spec.dst, &args.dst_sas)] {
        if let (Address::AzureUrl { url }, Some(sas)) = (addr, sas) {
            ferry_engine::job::check_sas_expiry(url, sas)?;
            accounts.set_url_sas(url, sas);
        }
    }
    Ok(())
}

/// `copy` runs the job right away, so a container URL needs its SAS now
/// (`submit` may leave it to `run`/`replay --src-sas/--dst-sas`). `how`
/// says how to give it.
fn require_sas(spec: &JobSpec, accounts: &Accounts, how: &str) -> Result<()> {
    for addr in [&spec.src, &spec.dst] {
        if let Address::AzureUrl { url } = addr {
            if accounts.url_sas(url).is_none() {
                return Err(EngineError::InvalidInput(format!(
                    "container URL {url} has no SAS; {how}"
                ))
                .into());
            }
        }
    }
    Ok(())
}

pub(crate) fn runtime() -> Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?)
}

pub fn submit(ctx: &Ctx, args: JobArgs) -> Result<u8> {
    let mut accounts = ctx.accounts()?;
    let spec = spec_of(&args, &mut accounts)?;
    let by_url = spec.container_url().is_some();
    let id = match control::access(&ctx.state)? {
        // The daemon would run it without the SAS (never stored), and fail.
        Access::Daemon(_) if by_url => {
            return Err(EngineError::InvalidInput(
                "a job on a container URL is run by `ferry copy` or `ferry run --src-sas/--dst-sas` (ferry never stores a SAS, so the daemon could not reach it); stop the daemon, or add an account with sas_url to ferry.toml and name it".into(),
            )
            .into());
        }
        Access::Local(engine) => {
            let engine = engine.with_accounts(accounts);
            let spec = with_policy(&engine, &args, spec)?;
            runtime()?.block_on(engine.submit(spec))?
        }
        Access::Daemon(_) if args.policy.is_some() => {
            return Err(EngineError::InvalidInput(
                "jobs with a policy plugin are submitted while the daemon is stopped (the plugin is checked and pinned by hash then)".into(),
            )
            .into());
        }
        Access::Daemon(sock) => {
            let v = control::call(
                &sock,
                &Request::Submit {
                    spec: Box::new(spec),
                },
            )?;
            serde_json::from_value(v)?
        }
    };
    // The command's result, not chatter: `J=$(ferry submit -q ...)`.
    println!("{id}");
    if by_url && !ctx.out.quiet {
        eprintln!(
            "ferry: note: the SAS is not stored; give it again to `ferry run` or `ferry replay` (--src-sas/--dst-sas, or FERRY_SRC_SAS/FERRY_DST_SAS)"
        );
    }
    Ok(exit::OK)
}

pub fn copy(ctx: &Ctx, args: JobArgs) -> Result<u8> {
    let out = ctx.out;
    let mut accounts = ctx.accounts()?;
    let spec = spec_of(&args, &mut accounts)?;
    require_sas(&spec, &accounts, "append it (URL?sv=...&sig=...)")?;
    let engine = ctx.engine(accounts)?;
    let spec = with_policy(&engine, &args, spec)?;
    let rt = runtime()?;
    rt.block_on(async {
        let cancel = CancellationToken::new();
        crate::signals::install(cancel.clone(), out.quiet);
        let id = engine.submit(spec).await?;
        let how = How {
            retry: args.retry,
            ..How::default()
        };
        let (report, progress) = attempt(&engine, id, how, cancel, out).await?;
        print_stats(&engine, args.stats, &report, &progress);
        Ok(code_of(&report))
    })
}

pub fn run_queue(ctx: &Ctx, args: RunArgs) -> Result<u8> {
    let out = ctx.out;
    let mut engine = ctx.engine(ctx.accounts()?)?;
    runtime()?.block_on(async {
        let cancel = CancellationToken::new();
        crate::signals::install(cancel.clone(), out.quiet);
        let mut worst = exit::OK;
        let mut ran = 0;
        while let Some(id) = engine.next_queued()? {
            if cancel.is_cancelled() {
                break;
            }
            let spec = engine.summary(id)?.spec;
            attach_sas(engine.accounts_mut(), spec.as_ref(), &args)?;
            let how = How {
                parallel: args.parallel,
                replay: false,
                allow_plugin_change: args.allow_plugin_change,
                retry: args.retry,
            };
            let (report, progress) = attempt(&engine, id, how, cancel.clone(), out).await?;
            print_stats(&engine, args.stats, &report, &progress);
            ran += 1;
            worst = worst.max(code_of(&report));
        }
        if ran == 0 && !out.quiet {
            // Interrupted jobs are not queued: replay takes them.
            let stopped = engine
                .open_jobs()?
                .iter()
                .filter(|s| s.effective_state() == JobState::Interrupted)
                .count();
            if stopped > 0 {
                println!(
                    "no queued jobs ({stopped} interrupted: `ferry jobs --status interrupted` lists them, `ferry replay JOB` resumes one)"
                );
            } else {
                println!("no queued jobs");
            }
        }
        Ok(worst)
    })
}

pub fn replay(ctx: &Ctx, job: &str, args: RunArgs) -> Result<u8> {
    let out = ctx.out;
    let mut engine = match control::access(&ctx.state)? {
        Access::Local(engine) => engine.with_accounts(ctx.accounts()?),
        Access::Daemon(sock) => return replay_by_daemon(ctx, &sock, job, &args),
    };
    let id = engine.resolve(job)?;
    let summary = engine.summary(id)?;
    attach_sas(engine.accounts_mut(), summary.spec.as_ref(), &args)?;
    // Checked before an attempt is recorded: without it the attempt could
    // only fail, and the job with it.
    let resumable = matches!(
        summary.effective_state(),
        JobState::Interrupted | JobState::Failed | JobState::CompletedWithFailures
    );
    if let (true, Some(spec)) = (resumable, &summary.spec) {
        require_sas(
            spec,
            engine.accounts(),
            "pass it again (--src-sas/--dst-sas, or FERRY_SRC_SAS/FERRY_DST_SAS)",
        )?;
    }
    runtime()?.block_on(async {
        let cancel = CancellationToken::new();
        crate::signals::install(cancel.clone(), out.quiet);
        let how = How {
            parallel: args.parallel,
            replay: true,
            allow_plugin_change: args.allow_plugin_change,
            retry: args.retry,
        };
        let (report, progress) = attempt(&engine, id, how, cancel, out).await?;
        print_stats(&engine, args.stats, &report, &progress);
        Ok(code_of(&report))
    })
}

/// `ferry replay` while a daemon holds the state dir: the job goes back in
/// its queue and the daemon replays it. Options for a run in this process
/// are refused rather than dropped (a SAS is not among them: it may come
/// from the environment, and the daemon refuses a container-URL job).
fn replay_by_daemon(ctx: &Ctx, sock: &std::path::Path, job: &str, args: &RunArgs) -> Result<u8> {
    let r = &args.retry;
    let this_process = [
        ("--parallel", args.parallel.is_some()),
        ("--stats", args.stats),
        ("--allow-plugin-change", args.allow_plugin_change),
        ("--max-tries", r.max_tries.is_some()),
        ("--try-timeout", r.try_timeout.is_some()),
        ("--retry-for", r.retry_for.is_some()),
    ];
    if let Some((flag, _)) = this_process.iter().find(|(_, given)| *given) {
        return Err(EngineError::InvalidInput(format!(
            "{flag} applies to a replay run by this process, but a daemon holds the state dir and would replay the job itself; leave {flag} out, or stop the daemon first"
        ))
        .into());
    }
    let req = Request::Replay {
        job: job.to_string(),
        by: ferry_engine::actor(),
    };
    let id: JobId = serde_json::from_value(control::call(sock, &req)?)?;
    if !ctx.out.quiet {
        println!("job {id} queued: the daemon replays it (follow it with `ferry show {id}`)");
    }
    Ok(exit::OK)
}

/// How to run one attempt.
#[derive(Default)]
struct How {
    parallel: Option<Parallel>,
    /// Resume (replay) rather than start.
    replay: bool,
    allow_plugin_change: bool,
    retry: RetryArgs,
}

/// The config's retry policy with the command line's overrides, if any.
fn retry_policy(engine: &Engine, args: RetryArgs) -> Result<Option<RetryPolicy>> {
    if args.max_tries.is_none() && args.try_timeout.is_none() && args.retry_for.is_none() {
        return Ok(None);
    }
    let mut p = engine.accounts().retry();
    if let Some(n) = args.max_tries {
        p.max_tries = n;
    }
    if let Some(s) = args.try_timeout {
        p.try_timeout = Duration::from_secs(s);
    }
    if let Some(s) = args.retry_for {
        p.max_elapsed = Duration::from_secs(s);
    }
    p.check()
        .map_err(|e| EngineError::InvalidInput(format!("retry options: {e}")))?;
    Ok(Some(p))
}

/// Runs one attempt; returns its report and live counters (which keep
/// what `--parallel auto` did).
async fn attempt(
    engine: &Engine,
    id: JobId,
    how: How,
    cancel: CancellationToken,
    out: Output,
) -> Result<(RunReport, Arc<Progress>)> {
    let retry = retry_policy(engine, how.retry)?;
    let progress = Arc::new(Progress::default());
    let view = (!out.quiet).then(|| ProgressView::start(progress.clone()));
    let (parallel, parallel_auto) = Parallel::split(how.parallel);
    let opts = RunOptions {
        parallel,
        parallel_auto,
        cancel,
        progress: progress.clone(),
        retry,
        allow_plugin_change: how.allow_plugin_change,
        ..RunOptions::default()
    };
    let report = if how.replay {
        engine.replay(id, opts).await
    } else {
        engine.run(id, opts).await
    };
    if let Some(view) = view {
        view.finish();
    }
    // The log failing mid-job: say which job to replay once it is fixed.
    let report = report.map_err(|e| match e {
        EngineError::LogWrite(_) => anyhow::Error::new(e).context(format!("job {id}")),
        e => e.into(),
    })?;
    if !out.quiet {
        println!("{}", summary_line(&report));
        warn_if_nothing_listed(engine, &report);
    } else if !matches!(report.outcome, Some(Outcome::Succeeded)) {
        // Quiet prints errors: a job that did not succeed is one.
        let hint = if report.totals.failed > 0 {
            format!("; `ferry show {}` lists the failures", report.job)
        } else {
            String::new()
        };
        eprintln!("ferry: {}{hint}", summary_line(&report));
    }
    Ok((report, progress))
}

/// Statistics for benchmarks: how busy the single log writer was, and the
/// parallel copies `--parallel auto` went through.
fn print_stats(engine: &Engine, enabled: bool, report: &RunReport, progress: &Progress) {
    if !enabled {
        return;
    }
    if let Some(auto) = progress.auto.summary() {
        eprintln!("{auto}");
    }
    let elapsed = report.elapsed;
    let s = engine.log().writer_stats();
    let events = s.events.load(std::sync::atomic::Ordering::Relaxed);
    let batches = s.batches.load(std::sync::atomic::Ordering::Relaxed);
    let busy = s.busy_ns.load(std::sync::atomic::Ordering::Relaxed) as f64 / 1e9;
    let flush = s.flush_ns.load(std::sync::atomic::Ordering::Relaxed) as f64 / 1e9;
    let cpu = s.cpu_ns.load(std::sync::atomic::Ordering::Relaxed) as f64 / 1e9;
    let wait = s.wait_ns.load(std::sync::atomic::Ordering::Relaxed) as f64 / 1e9;
    let flush_wait = s.flush_wait_ns.load(std::sync::atomic::Ordering::Relaxed) as f64 / 1e9;
    let keyed = s.keyed.load(std::sync::atomic::Ordering::Relaxed);
    let full = s
        .full_queue_waits
        .load(std::sync::atomic::Ordering::Relaxed);
    let full_wait = s
        .full_queue_wait_ns
        .load(std::sync::atomic::Ordering::Relaxed) as f64
        / 1e9;
    let wall = elapsed.as_secs_f64().max(1e-9);
    eprintln!(
        "log writer: {events} events in {batches} batches, busy {busy:.3}s (cpu {cpu:.3}s, waiting for a core {wait:.3}s, waiting for the flusher {flush_wait:.3}s) of {wall:.3}s ({:.1}% busy, {:.1}% cpu), {:.0} events/s while busy, {keyed} outcomes keyed (not in runs); flusher thread {flush:.3}s; senders waited for a full queue {full} times, {full_wait:.3}s",
        100.0 * busy / wall,
        100.0 * cpu / wall,
        events as f64 / busy.max(1e-9)
    );
}

/// A run that found nothing at all under its source is most often a
/// mistyped prefix, or a single blob's name (which matches nothing: a source
/// is a folder, container or prefix). It succeeded, so only a warning.
fn warn_if_nothing_listed(engine: &Engine, r: &RunReport) {
    let t = &r.totals;
    let nothing = t.listed + t.skipped + t.failed + t.resumed == 0;
    if !nothing || !matches!(r.outcome, Some(Outcome::Succeeded)) {
        return;
    }
    let Some(src) = engine
        .summary(r.job)
        .ok()
        .and_then(|s| s.spec)
        .map(|s| s.src)
    else {
        return;
    };
    eprintln!(
        "ferry: warning: nothing to copy: {} holds no blobs; a source is a folder, container or \
         prefix (a single blob's name matches nothing)",
        exit::printable(&src.to_string())
    );
}

fn summary_line(r: &RunReport) -> String {
    let t = &r.totals;
    let status = match &r.outcome {
        None => "interrupted (ferry replay continues it)".to_string(),
        Some(o) => exit::printable(&o.to_string()),
    };
    let mut resumed = if t.resumed > 0 {
        format!(", {} already done", t.resumed)
    } else {
        String::new()
    };
    if t.retries > 0 {
        resumed.push_str(&format!(", {} retries", t.retries));
    }
    format!(
        "job {} attempt {}: {status}: copied {} files ({}), skipped {}, failed {}{resumed} in {:.2}s",
        r.job,
        r.attempt,
        t.copied,
        HumanBytes(t.copied_bytes),
        t.skipped,
        t.failed,
        r.elapsed.as_secs_f64()
    )
}

fn code_of(r: &RunReport) -> u8 {
    match &r.outcome {
        None => exit::INTERRUPTED,
        Some(Outcome::Succeeded) => exit::OK,
        Some(Outcome::CompletedWithFailures) => exit::BLOBS_FAILED,
        Some(Outcome::Failed { message }) => {
            let message = exit::printable(message);
            eprintln!("ferry: error: job {} failed: {message}", r.job);
            exit::JOB_FAILED
        }
    }
}
