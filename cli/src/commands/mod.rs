//! One module per group of subcommands; `dispatch` picks one.

mod query;
mod report;
mod run;

use std::path::PathBuf;

use anyhow::{Context, Result};
use ferry_engine::Engine;

use crate::args::{Cli, Command, PluginCommand};

/// Runs the command; returns the exit code (errors map to codes in main).
pub fn dispatch(cli: Cli) -> Result<u8> {
    run(cli).map_err(crate::exit::printable_error)
}

fn run(cli: Cli) -> Result<u8> {
    let state = state_dir(cli.state)?;
    let out = Output { quiet: cli.quiet };
    let ctx = run::Ctx {
        state: state.clone(),
        config: cli.config,
        out,
    };
    match cli.command {
        Command::Copy(job) => run::copy(&ctx, job),
        Command::Submit(job) => run::submit(&ctx, job),
        Command::Run(args) => run::run_queue(&ctx, args),
        Command::Replay { job, run } => run::replay(&ctx, &job, run),
        Command::Jobs { json } => query::jobs(&open(&state)?, json),
        Command::Show {
            job,
            json,
            failures,
        } => query::show(&open(&state)?, &job, json, failures),
        Command::Events { job, json } => query::events(&open(&state)?, job.as_deref(), json),
        Command::VerifyLog { job } => query::verify(&open(&state)?, job.as_deref(), out),
        Command::Report {
            job,
            format,
            output,
            max_examples,
            plugin_config,
        } => report::report(
            &open(&state)?,
            &job,
            &format,
            output.as_deref(),
            max_examples,
            plugin_config,
        ),
        Command::Plugin(PluginCommand::Check {
            path,
            plugin_config,
        }) => report::check(&open(&state)?, &path, plugin_config),
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
