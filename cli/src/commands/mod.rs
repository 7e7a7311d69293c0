//! One module per group of subcommands; `dispatch` picks one.

mod audit;
mod daemon;
mod jobctl;
mod query;
mod report;
mod run;
mod schedule;

use std::path::PathBuf;

use anyhow::{Context, Result};
use ferry_engine::projection::BlobState;
use ferry_engine::{Engine, EventRecord, JobId, JobSummary};

use crate::args::{Cli, Command, PluginCommand, ScheduleCommand};
use crate::control::{self, Access, Request};
use crate::control_stream;

/// Runs the command; returns the exit code (errors map to codes in main).
pub fn dispatch(cli: Cli) -> Result<u8> {
    run(cli).map_err(crate::exit::printable_error)
}

fn run(cli: Cli) -> Result<u8> {
    let state = state_dir(cli.state)?;
    let out = Output { quiet: cli.quiet };
    // Nothing has run with this state dir: commands that only read (or act
    // on a job that exists) answer so without making it (a mistyped
    // --state made an empty state dir and answered "no jobs").
    if !state.exists() {
        if let Some(code) = without_a_log(&cli.command, &state, out)? {
            return Ok(code);
        }
    }
    let ctx = run::Ctx {
        state: state.clone(),
        config: cli.config,
        out,
    };
    let alone = needs_the_state_dir(&cli.command);
    // A closure, so that errors returned early with `?` are seen below too.
    let result = (|| match cli.command {
        Command::Copy(job) => run::copy(&ctx, job),
        Command::Submit(job) => run::submit(&ctx, job),
        Command::Schedule(cmd) => schedule::schedule(&ctx, cmd),
        Command::Daemon(args) => daemon::daemon(&ctx, args),
        Command::Status { json } => daemon::status(&state, json),
        Command::Cancel { job, json } => {
            jobctl::control(&state, &job, jobctl::Action::Cancel, out.quiet, json)
        }
        Command::Pause { job, json } => {
            jobctl::control(&state, &job, jobctl::Action::Pause, out.quiet, json)
        }
        Command::Resume { job, json } => {
            jobctl::control(&state, &job, jobctl::Action::Resume, out.quiet, json)
        }
        Command::Run(args) => run::run_queue(&ctx, args),
        Command::Replay { job, run } => run::replay(&ctx, &job, run),
        Command::Jobs { json, filter } => {
            let mut filter = query::JobFilter::parse(&filter)?;
            // A config that does not load only leaves local accounts unmatched.
            if let Ok(accounts) = ctx.accounts() {
                filter = filter.with_local_accounts(&accounts);
            }
            query::refuse_state_name_as_dir(&state)?;
            match control::access(&state)? {
                Access::Local(engine) => query::jobs(&engine, json, &filter),
                Access::Daemon(sock) => {
                    // Filtered here: the daemon answers with every job.
                    let v = control::call(&sock, &Request::Jobs)?;
                    let jobs: Vec<JobSummary> = serde_json::from_value(v["jobs"].clone())?;
                    let running: Vec<JobId> = serde_json::from_value(v["running"].clone())?;
                    query::print_jobs(jobs, &running, json, &filter)
                }
            }
        }
        Command::Show {
            job,
            json,
            failures,
        } => match control::access(&state)? {
            Access::Local(engine) => query::show(&engine, &job, json, failures),
            Access::Daemon(sock) => {
                let max = (failures > 0).then_some(failures);
                let v = control::call(&sock, &Request::Show { job, max })?;
                let summary: JobSummary = serde_json::from_value(v["summary"].clone())?;
                let fails: Vec<(String, BlobState)> =
                    serde_json::from_value(v["failures"].clone())?;
                let total = v["failures_total"].as_u64().unwrap_or(fails.len() as u64);
                let running: Vec<JobId> = serde_json::from_value(v["running"].clone())?;
                query::print_show(&summary, &fails, total, &running, json, failures)
            }
        },
        Command::Events {
            job,
            json,
            since,
            kind,
        } => {
            let filter = query::EventFilter::parse(job.as_deref(), since.as_deref(), &kind)?;
            match control::access(&state)? {
                Access::Local(engine) => query::events(&engine, job.as_deref(), json, &filter),
                Access::Daemon(sock) => {
                    // Filtered here: the daemon streams every event.
                    let (_, recs) = control_stream::call(&sock, &Request::Events { job })?;
                    query::print_events(recs, json, &filter)
                }
            }
        }
        Command::Export { job, output, force } => {
            let output = output.context("ferry export needs --output FILE (-o FILE)")?;
            query::check_output_target(&output, force)?;
            match control::access(&state)? {
                Access::Local(engine) => query::export(&engine, &job, &output, force, out),
                Access::Daemon(sock) => {
                    let req = Request::Events { job: Some(job) };
                    let (header, recs) = control_stream::call::<EventRecord>(&sock, &req)?;
                    let n = header["events"]
                        .as_u64()
                        .with_context(|| format!("the daemon's answer is not valid: {header}"))?;
                    let mut recs = recs.peekable();
                    let id = match recs.peek() {
                        Some(Ok(r)) => r.job,
                        Some(Err(_)) => match recs.next() {
                            Some(Err(e)) => return Err(e),
                            _ => anyhow::bail!("the job has no events"),
                        },
                        None => anyhow::bail!("the job has no events"),
                    };
                    query::write_export(id, n, recs, &output, force, out)
                }
            }
        }
        Command::VerifyLog { job } => query::verify(&open(&state)?, job.as_deref(), out),
        Command::History {
            address,
            json,
            limit,
        } => audit::history(&ctx, &address, json, limit),
        Command::Prune {
            older_than,
            keep_last,
            dry_run,
            compact,
        } => audit::prune(&ctx, &older_than, keep_last, dry_run, compact, out),
        Command::Import { file } => audit::import(&ctx, &file, out),
        Command::Report {
            job,
            format,
            output,
            force,
            max_examples,
            plugin_config,
        } => report::report(
            &state,
            &job,
            &format,
            output.as_deref().map(|o| (o, force)),
            max_examples,
            plugin_config,
        ),
        Command::Plugin(PluginCommand::Check {
            path,
            plugin_config,
        }) => report::check(&state, &path, plugin_config),
    })();
    match alone {
        Some(advice) => result.map_err(|e| held_by_daemon(e, &state, advice)),
        None => result,
    }
}

/// For commands that cannot go through a daemon, what to do when one holds
/// the state dir.
fn needs_the_state_dir(command: &Command) -> Option<&'static str> {
    Some(match command {
        Command::Copy(_) => "`ferry copy` runs the job in this process: `ferry submit` it for the daemon instead, or stop the daemon",
        Command::Run(_) => "the daemon already works the queue (follow it with `ferry status`)",
        Command::Daemon(_) => "one daemon per state dir",
        Command::VerifyLog { .. } => "`ferry verify-log` needs the daemon stopped",
        Command::Prune { .. } => "`ferry prune` needs the daemon stopped",
        Command::Import { .. } => "`ferry import` needs the daemon stopped",
        _ => return None,
    })
}

/// The "in use" error, when the holder is a daemon: says so, and what to do
/// instead of "wait for it to finish" (a daemon does not finish).
fn held_by_daemon(e: anyhow::Error, state: &std::path::Path, advice: &str) -> anyhow::Error {
    let owner = e.chain().find_map(|c| match c.downcast_ref() {
        Some(ferry_engine::EngineError::StateLocked { owner, .. }) => Some(owner.clone()),
        _ => None,
    });
    match owner {
        Some(owner)
            if std::os::unix::net::UnixStream::connect(control::socket_path(state)).is_ok() =>
        {
            crate::exit::coded(
                &format!(
                    "a ferry daemon holds state dir {} ({owner}); {advice}; stop it with SIGTERM (or its service) when you need to",
                    state.display()
                ),
                crate::exit::STATE_LOCKED,
            )
            .into()
        }
        _ => e,
    }
}

/// What a command answers when its state dir does not exist; `None` for
/// commands that create it (copy, submit, run, import, ...).
fn without_a_log(command: &Command, state: &std::path::Path, out: Output) -> Result<Option<u8>> {
    let note = || {
        if !out.quiet {
            eprintln!(
                "ferry: note: no ferry log in {} (nothing has run with it; check --state or FERRY_HOME)",
                state.display()
            );
        }
    };
    let unknown = |job: &str| -> Result<Option<u8>> {
        Err(
            anyhow::Error::new(ferry_engine::EngineError::UnknownJob(job.to_string())).context(
                format!(
                    "there is no ferry log in {} (check --state or FERRY_HOME)",
                    state.display()
                ),
            ),
        )
    };
    match command {
        Command::Jobs { json, filter } => {
            let filter = query::JobFilter::parse(filter)?;
            query::refuse_state_name_as_dir(state)?;
            note();
            query::print_jobs(Vec::new(), &[], *json, &filter).map(Some)
        }
        Command::Events { job: None, .. }
        | Command::History { .. }
        | Command::VerifyLog { job: None }
        | Command::Prune { .. }
        | Command::Schedule(ScheduleCommand::List { json: false }) => {
            note();
            Ok(Some(crate::exit::OK))
        }
        Command::Status { json } => {
            note();
            daemon::status_without_a_log(*json).map(Some)
        }
        Command::Schedule(ScheduleCommand::List { json: true }) => {
            note();
            println!("[]");
            Ok(Some(crate::exit::OK))
        }
        Command::Schedule(
            ScheduleCommand::Show { name, .. } | ScheduleCommand::Remove { name },
        ) => Err(ferry_engine::EngineError::InvalidInput(format!(
            "no schedule named {name:?}: there is no ferry log in {} (check --state or FERRY_HOME)",
            state.display()
        ))
        .into()),
        Command::Events { job: Some(job), .. }
        | Command::VerifyLog { job: Some(job) }
        | Command::Show { job, .. }
        | Command::Export { job, .. }
        | Command::Report { job, .. }
        | Command::Cancel { job, .. }
        | Command::Pause { job, .. }
        | Command::Resume { job, .. }
        | Command::Replay { job, .. } => unknown(job),
        _ => Ok(None),
    }
}

/// How much to print.
#[derive(Debug, Clone, Copy)]
pub struct Output {
    pub quiet: bool,
}

fn state_dir(flag: Option<PathBuf>) -> Result<PathBuf> {
    if let Some(dir) = flag {
        return Ok(dir);
    }
    let base = dirs::data_dir()
        .context("no per-user data dir on this system; set FERRY_HOME or pass --state DIR")?;
    Ok(base.join("ferry"))
}

fn open(state: &std::path::Path) -> Result<Engine> {
    Ok(Engine::open(state)?)
}
