//! `ferry schedule add|list|show|remove`: schedules are events in the log,
//! added and removed here, fired by `ferry daemon`. With a daemon running
//! the request goes to it.

use std::io::Write;

use anyhow::Result;
use chrono::{DateTime, Utc};
use ferry_engine::schedule::{Cron, ScheduleDef, ScheduleState, Schedules};
use ferry_engine::{actor, EngineError};
use serde_json::json;

use super::daemon::clock;
use super::run::{self, Ctx};
use crate::args::{ScheduleAddArgs, ScheduleCommand};
use crate::control::{self, Access, Request};
use crate::exit;

pub fn schedule(ctx: &Ctx, cmd: ScheduleCommand) -> Result<u8> {
    match cmd {
        ScheduleCommand::Add(args) => add(ctx, *args),
        ScheduleCommand::Remove { name } => remove(ctx, &name),
        ScheduleCommand::List { json } => list(ctx, None, json),
        ScheduleCommand::Show { name, json } => list(ctx, Some(&name), json),
    }
}

fn add(ctx: &Ctx, args: ScheduleAddArgs) -> Result<u8> {
    let mut accounts = ctx.accounts()?;
    let spec = run::spec_of(&args.job, &mut accounts)?;
    // Its fires run unattended, and ferry never stores a SAS: such a
    // schedule could only fail (then sit on retries that fail too).
    if let Some(url) = spec.container_url() {
        return Err(EngineError::InvalidInput(format!(
            "a schedule cannot use the container URL {url}: ferry never stores a SAS, so its fires could not reach it; add an account with sas_url (or sas_url_env) to ferry.toml and name it (ACCOUNT:CONTAINER)"
        ))
        .into());
    }
    let def = ScheduleDef {
        name: args.name,
        cron: args.cron,
        tz: args.tz,
        spec,
        overlap: args.overlap,
        catch_up: args.catch_up,
        catch_up_window_secs: args.catch_up_window,
        max_retries: args.max_retries,
    };
    // Checked here too, so a bad cron is refused before anything else.
    def.cron().map_err(EngineError::InvalidInput)?;
    let name = def.name.clone();
    match control::access(&ctx.state)? {
        Access::Daemon(_) if args.job.policy.is_some() => {
            return Err(EngineError::InvalidInput(
                "a schedule with a policy plugin is added while the daemon is stopped (the plugin is checked and pinned by hash then)".into(),
            )
            .into());
        }
        Access::Daemon(sock) => {
            control::call(
                &sock,
                &Request::ScheduleAdd {
                    def: Box::new(def),
                    by: actor(),
                },
            )?;
        }
        Access::Local(engine) => {
            let engine = engine.with_accounts(accounts);
            let def = ScheduleDef {
                spec: run::with_policy(&engine, &args.job, def.spec)?,
                ..def
            };
            run::runtime()?.block_on(engine.add_schedule(def, &actor()))?;
        }
    }
    if !ctx.out.quiet {
        println!("schedule {name} added");
    }
    Ok(exit::OK)
}

fn remove(ctx: &Ctx, name: &str) -> Result<u8> {
    match control::access(&ctx.state)? {
        Access::Daemon(sock) => {
            control::call(
                &sock,
                &Request::ScheduleRemove {
                    name: name.to_string(),
                    by: actor(),
                },
            )?;
        }
        Access::Local(engine) => {
            run::runtime()?.block_on(engine.remove_schedule(name, &actor()))?;
        }
    }
    if !ctx.out.quiet {
        println!("schedule {name} removed");
    }
    Ok(exit::OK)
}

fn list(ctx: &Ctx, only: Option<&str>, json: bool) -> Result<u8> {
    let (now, all): (DateTime<Utc>, Schedules) = match control::access(&ctx.state)? {
        Access::Daemon(sock) => {
            let v = control::call(&sock, &Request::Schedules)?;
            (
                serde_json::from_value(v["now"].clone())?,
                serde_json::from_value(v["schedules"].clone())?,
            )
        }
        Access::Local(engine) => (clock()?.now(), engine.schedules()?),
    };
    let shown: Vec<&ScheduleState> = match only {
        Some(name) => vec![all.by_name.get(name).ok_or_else(|| {
            EngineError::InvalidInput(format!("no schedule {name:?}; see `ferry schedule list`"))
        })?],
        None => all.by_name.values().collect(),
    };
    let fires = if only.is_some() { 5 } else { 1 };
    let mut out = std::io::stdout().lock();
    if json {
        let v: Vec<_> = shown
            .iter()
            .map(|s| {
                let mut v = json!(s);
                v["next"] = json!(next(s, now, fires));
                v
            })
            .collect();
        let v = if only.is_some() {
            v[0].clone()
        } else {
            json!(v)
        };
        writeln!(out, "{}", serde_json::to_string_pretty(&v)?)?;
        return Ok(exit::OK);
    }
    let fmt = |t: &DateTime<Utc>| t.format("%Y-%m-%d %H:%M:%S UTC").to_string();
    for s in shown {
        let d = &s.def;
        writeln!(
            out,
            "{}  {:?} {}  {} -> {}  mode {}, overlap {}, catch-up {} ({} s), retries {}",
            d.name,
            d.cron,
            d.tz.as_deref().unwrap_or("UTC"),
            d.spec.src,
            d.spec.dst,
            d.spec.decided_by(),
            d.overlap,
            d.catch_up,
            d.catch_up_window_secs,
            d.max_retries
        )?;
        writeln!(
            out,
            "    added {} by {}; fired {}, skipped {}{}",
            fmt(&s.added_at),
            s.added_by,
            s.fired,
            s.skipped,
            s.last_job
                .map(|j| format!("; last job {j}"))
                .unwrap_or_default()
        )?;
        for t in next(s, now, fires) {
            writeln!(out, "    next  {}", fmt(&t))?;
        }
    }
    Ok(exit::OK)
}

fn next(s: &ScheduleState, now: DateTime<Utc>, n: usize) -> Vec<DateTime<Utc>> {
    s.def
        .cron()
        .map(|c: Cron| c.upcoming(now, n))
        .unwrap_or_default()
}
