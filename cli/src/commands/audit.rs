//! history, prune and import: audit and retention over the log.

use std::io::{BufReader, Write};
use std::path::Path;

use anyhow::{bail, Context, Result};
use chrono::{Duration, Utc};
use ferry_engine::audit::PruneOptions;
use ferry_engine::job::ParsedAddress;
use ferry_engine::projection::{BlobStatus, HistoryLine};
use ferry_engine::Address;
use indicatif::HumanBytes;

use super::run::{runtime, Ctx};
use super::Output;
use crate::control::{self, Access, HistoryQuery, Request};
use crate::control_stream;
use crate::exit;

/// `ferry history ADDRESS`: every job that copied, skipped or failed on a
/// blob (or on the blobs under a folder or prefix), newest first.
/// While a daemon holds the state dir it answers (with its accounts).
pub fn history(ctx: &Ctx, address: &str, json: bool, limit: Option<usize>) -> Result<u8> {
    match control::access(&ctx.state)? {
        Access::Local(engine) => {
            let engine = engine.with_accounts(ctx.accounts()?);
            let normalized = engine.history_address(address)?;
            let lines = engine.history(&normalized, limit)?;
            let n = lines.len();
            print_history(
                ctx,
                &normalized,
                n,
                lines.map(|l| l.map_err(Into::into)),
                json,
            )
        }
        Access::Daemon(sock) => {
            // A relative path is this command's, not the daemon's (which
            // runs in another folder): made absolute here.
            let address = match Address::parse_for_lookup(address, &ctx.accounts()?) {
                Ok(ParsedAddress {
                    address: Address::Local { path },
                    ..
                }) => path,
                _ => address.to_string(),
            };
            let req = Request::History(HistoryQuery {
                address: address.clone(),
                limit,
            });
            let (header, lines) = control_stream::call::<HistoryLine>(&sock, &req)?;
            let n = header["lines"]
                .as_u64()
                .with_context(|| format!("the daemon's answer is not valid: {header}"))?;
            let normalized = header["address"].as_str().unwrap_or(&address).to_string();
            print_history(ctx, &normalized, n, lines, json)
        }
    }
}

/// Prints `n` lines as they come: a folder's history can be millions.
fn print_history(
    ctx: &Ctx,
    normalized: &str,
    n: u64,
    lines: impl Iterator<Item = Result<HistoryLine>>,
    json: bool,
) -> Result<u8> {
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    if n == 0 && !json && !ctx.out.quiet {
        writeln!(
            out,
            "no job copied, skipped or failed anything at {}",
            exit::printable(normalized)
        )?;
    }
    for line in lines {
        let line = line?;
        if json {
            serde_json::to_writer(&mut out, &line)?;
            writeln!(out)?;
        } else {
            writeln!(out, "{}", history_line(&line))?;
        }
    }
    out.flush()?;
    Ok(exit::OK)
}

/// One line of `ferry history`: time, what happened (and why), which side
/// of the job the address was, job, attempt, source etag, address.
fn history_line(l: &HistoryLine) -> String {
    let e = &l.entry;
    let what = match (e.status, &e.reason, e.error_kind) {
        (BlobStatus::Copied, Some(r), _) => format!("copied ({r})"),
        (BlobStatus::Skipped, Some(r), _) => format!("skipped ({r})"),
        (BlobStatus::Failed, _, Some(k)) => format!("failed [{k}]"),
        (BlobStatus::Copied, ..) => "copied".into(),
        (BlobStatus::Skipped, ..) => "skipped".into(),
        (BlobStatus::Failed, ..) => "failed".into(),
    };
    let mut s = format!(
        "{}  {what:<24} {:<11}  job {} attempt {}  etag {}  {}",
        e.at.format("%Y-%m-%d %H:%M:%S%.3f"),
        l.side.to_string(),
        l.job,
        e.attempt,
        e.etag.as_deref().unwrap_or("-"),
        l.address,
    );
    if let Some(m) = &e.message {
        s.push_str(": ");
        s.push_str(m);
    }
    exit::printable(&s)
}

/// An age as `90d`, `36h`, `90m`, `45s` or `2w`.
pub fn parse_age(s: &str) -> Result<Duration> {
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (n, unit) = t.split_at(split);
    let n: i64 = match n.parse() {
        Ok(0) => bail!(
            "--older-than {s:?}: the age must be more than 0 (e.g. 1m for every finished job)"
        ),
        Ok(n) if n > 0 => n,
        _ => bail!("--older-than {s:?}: expected an age like 90d, 36h or 90m"),
    };
    let d = match unit {
        "s" => Duration::try_seconds(n),
        "m" => Duration::try_minutes(n),
        "h" => Duration::try_hours(n),
        "d" => Duration::try_days(n),
        "w" => Duration::try_weeks(n),
        _ => bail!("--older-than {s:?}: the unit must be s, m, h, d or w (e.g. 90d)"),
    };
    d.with_context(|| format!("--older-than {s:?} is too large"))
}

/// `ferry prune --older-than AGE [--keep-last N] [--dry-run]`.
pub fn prune(
    ctx: &Ctx,
    older_than: &str,
    keep_last: usize,
    dry_run: bool,
    compact: bool,
    out: Output,
) -> Result<u8> {
    let age = parse_age(older_than)?;
    let before = Utc::now()
        .checked_sub_signed(age)
        .with_context(|| format!("--older-than {older_than:?} is too large"))?;
    let engine = super::open(&ctx.state)?;
    let opts = PruneOptions {
        before,
        keep_last,
        dry_run,
        by: ferry_engine::actor(),
    };
    let report = runtime()?.block_on(engine.prune(&opts))?;
    let compacted = if compact {
        Some(engine.compact()?)
    } else {
        None
    };
    if out.quiet {
        return Ok(exit::OK);
    }
    let mut o = std::io::stdout().lock();
    for job in &report.jobs {
        writeln!(
            o,
            "{} job {job}",
            if dry_run { "would prune" } else { "pruned" }
        )?;
    }
    writeln!(
        o,
        "{} {} job(s): {} blob events, {} checkpoint entries, {} ({} bytes){}",
        if dry_run { "would prune" } else { "pruned" },
        report.jobs.len(),
        report.events,
        report.entries,
        HumanBytes(report.bytes),
        report.bytes,
        if dry_run {
            "; nothing was changed (--dry-run)"
        } else {
            ""
        }
    )?;
    if let Some(c) = compacted {
        writeln!(
            o,
            "compacted the log: {} keys, {} -> {} on disk",
            c.keys,
            HumanBytes(c.before),
            HumanBytes(c.after)
        )?;
    }
    Ok(exit::OK)
}

/// `ferry import FILE`: loads an export archive into this state dir.
pub fn import(ctx: &Ctx, file: &Path, out: Output) -> Result<u8> {
    let shown = exit::printable(&file.display().to_string());
    let f = std::fs::File::open(file).with_context(|| format!("cannot read {shown}"))?;
    let engine = super::open(&ctx.state)?;
    let report = runtime()?.block_on(engine.import(BufReader::new(f)))?;
    if !out.quiet {
        println!(
            "imported job {}: {} events{}",
            report.job,
            report.events,
            if report.pruned {
                " (a pruned job: job-level events only)"
            } else {
                ""
            }
        );
    }
    Ok(exit::OK)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ages_parse_in_their_units_and_nonsense_is_refused() {
        assert_eq!(parse_age("90d").unwrap(), Duration::days(90));
        assert_eq!(parse_age("36h").unwrap(), Duration::hours(36));
        assert_eq!(parse_age("90m").unwrap(), Duration::minutes(90));
        for bad in ["", "d", "0d", "-1d", "90", "90y", "1.5d"] {
            assert!(parse_age(bad).is_err(), "{bad}");
        }
    }
}
