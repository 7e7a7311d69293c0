//! Command-line syntax (clap derive).

use std::ffi::OsString;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};
use ferry_engine::job::{CopyMode, Md5Check, PluginFailure};
use ferry_engine::Mode;

const AFTER_HELP: &str = "\
Exit codes: 0 ok, 1 some blobs failed (ferry replay retries them), 2 bad input,
3 state dir in use by another ferry, 4 state dir corrupt or unreadable, 5 unknown job,
6 job failed, 7 job in the wrong state for this action, 8 verify-log found a difference,
9 a plugin could not load, refused its configuration, changed or failed a report,
130 interrupted (ferry replay continues).";

/// Back up and copy blob storage, with every step recorded in an event log.
#[derive(Debug, Parser)]
#[command(name = "ferry", version, after_help = AFTER_HELP)]
pub struct Cli {
    /// State dir holding the event log (default: $FERRY_HOME, else the per-user data dir).
    #[arg(long, global = true, value_name = "DIR", env = "FERRY_HOME")]
    pub state: Option<PathBuf>,

    /// Print nothing but errors.
    #[arg(long, short, global = true)]
    pub quiet: bool,

    /// Accounts config (default: $FERRY_CONFIG, else ferry.toml in the state dir).
    #[arg(long, global = true, value_name = "FILE", env = "FERRY_CONFIG")]
    pub config: Option<PathBuf>,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Copy SRC to DST now (submit + run in the foreground).
    Copy(JobArgs),
    /// Enqueue a copy job and print its id; `ferry run` works the queue.
    Submit(JobArgs),
    /// Run queued jobs until the queue is empty.
    Run(RunArgs),
    /// Resume a job: copy only what is not durably done.
    Replay {
        /// Job id (or a unique prefix of it).
        job: String,
        #[command(flatten)]
        run: RunArgs,
    },
    /// List jobs (oldest first unless --sort).
    Jobs {
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        filter: JobsArgs,
    },
    /// Show one job: spec, attempts, counts and failed blobs.
    Show {
        job: String,
        #[arg(long)]
        json: bool,
        /// Failed blobs to list (0 = all).
        #[arg(long, allow_negative_numbers = true, default_value_t = 50)]
        failures: usize,
    },
    /// Print the event log (all jobs, or one).
    Events {
        job: Option<String>,
        /// One JSON object per line.
        #[arg(long)]
        json: bool,
        /// Events from sequence number SEQ on (needs JOB), or at or after
        /// TIME: RFC 3339, a date (2026-11-01, UTC) or an age (90m, 36h, 7d).
        #[arg(long, value_name = "SEQ|TIME", allow_hyphen_values = true)]
        since: Option<String>,
        /// Only events of this type, e.g. BlobFailed (repeatable or
        /// comma-separated; any case).
        #[arg(long, value_name = "KIND", value_delimiter = ',')]
        kind: Vec<String>,
    },
    /// Write one job's events to FILE as JSON lines: a header, then each event.
    Export {
        job: String,
        /// The file to write, `-` for stdout (required; checked by ferry
        /// rather than clap, whose one-line error would not name it).
        #[arg(long, short, value_name = "FILE")]
        output: Option<PathBuf>,
        /// Replace FILE if it exists.
        #[arg(long)]
        force: bool,
    },
    /// Replay the log and check every cached projection against it.
    VerifyLog { job: Option<String> },
    /// Every job that copied, skipped or failed on a blob, or on the blobs
    /// under a folder or prefix, newest first (from the history index).
    History {
        /// As addresses are written: `prod:photos/2024/a.jpg`, `/data/src/a.txt`,
        /// `https://ACCOUNT.blob.core.windows.net/CONTAINER/NAME`.
        address: String,
        /// One JSON object per line.
        #[arg(long)]
        json: bool,
        /// At most N lines (the newest).
        #[arg(long, value_name = "N", value_parser = parse_lines)]
        limit: Option<usize>,
    },
    /// Remove old finished jobs' per-blob events and checkpoints; job-level
    /// events, summaries and history stay.
    Prune {
        /// Jobs that ended longer ago than this: 90d, 36h, 90m.
        #[arg(long, value_name = "AGE")]
        older_than: String,
        /// Keep the newest N finished jobs whatever their age.
        #[arg(
            long,
            value_name = "N",
            default_value_t = 0,
            allow_negative_numbers = true
        )]
        keep_last: usize,
        /// Only say what would be removed.
        #[arg(long)]
        dry_run: bool,
        /// Then rewrite the log without the freed space, so the state dir
        /// shrinks (copies every live key once).
        #[arg(long, conflicts_with = "dry_run")]
        compact: bool,
    },
    /// Load a job from an export archive (`ferry export`) into this state dir.
    Import {
        /// The archive: JSON lines, a header and then each event.
        file: PathBuf,
    },
    /// Write a job's report: text, json, markdown, or a formatter plugin (PATH.wasm).
    Report {
        job: String,
        /// text | json | markdown | PATH.wasm
        #[arg(long, default_value = "text")]
        format: String,
        /// Write to FILE instead of stdout.
        #[arg(long, short)]
        output: Option<PathBuf>,
        /// Replace FILE if it exists.
        #[arg(long, requires = "output")]
        force: bool,
        /// Failures, and skips, listed by the built-in formats (the rest are counted).
        #[arg(long, allow_negative_numbers = true, default_value_t = 100)]
        max_examples: usize,
        /// key=value passed to a formatter plugin's configure (repeatable).
        #[arg(long = "plugin-config", value_parser = parse_kv)]
        plugin_config: Vec<(String, String)>,
    },
    /// Inspect plugins.
    #[command(subcommand)]
    Plugin(PluginCommand),
    /// Cron schedules that submit a job per fire (run by `ferry daemon`).
    #[command(subcommand)]
    Schedule(ScheduleCommand),
    /// Run queued jobs, fire schedules and retry failed jobs until stopped.
    Daemon(DaemonArgs),
    /// What the daemon is doing: running jobs, the queue, next fires.
    Status {
        #[arg(long)]
        json: bool,
    },
    /// Cancel a job: it will not run again (a running one stops at a blob boundary).
    Cancel {
        job: String,
        #[arg(long)]
        json: bool,
    },
    /// Hold a job until `ferry resume` (a running one stops at a blob boundary).
    Pause {
        job: String,
        #[arg(long)]
        json: bool,
    },
    /// Put a paused job back in the queue.
    Resume {
        job: String,
        #[arg(long)]
        json: bool,
    },
}

/// Which jobs `ferry jobs` lists, and in what order.
#[derive(Debug, Args)]
pub struct JobsArgs {
    /// Only jobs in this state (repeatable): queued, running, interrupted,
    /// succeeded, completed-with-failures, failed, paused, cancelled.
    /// (`--state` is the state dir.)
    #[arg(long, value_name = "STATE", value_delimiter = ',')]
    pub status: Vec<String>,
    /// Submitted at or after TIME: RFC 3339, a date (2026-11-01, UTC) or an
    /// age (90m, 36h, 7d).
    #[arg(long, value_name = "TIME", allow_hyphen_values = true)]
    pub since: Option<String>,
    /// Submitted before TIME (same forms as --since).
    #[arg(long, value_name = "TIME", allow_hyphen_values = true)]
    pub until: Option<String>,
    /// Only jobs whose source or destination is in this storage account
    /// (its ferry.toml name, or the account of a container URL), or in this
    /// `local =` account when the job named it.
    #[arg(long, value_name = "NAME")]
    pub account: Option<String>,
    /// Only jobs submitted by this schedule.
    #[arg(long, value_name = "NAME")]
    pub schedule: Option<String>,
    /// submitted (default), elapsed, copied, bytes or state.
    #[arg(long, value_name = "KEY")]
    pub sort: Option<String>,
    /// Sort in descending order.
    #[arg(long)]
    pub reverse: bool,
    /// At most N jobs (the first N after sorting).
    #[arg(long, value_name = "N", allow_negative_numbers = true, value_parser = parse_limit)]
    pub limit: Option<u64>,
}

fn parse_lines(s: &str) -> Result<usize, String> {
    match s.trim().parse::<usize>() {
        Ok(n) if n > 0 => Ok(n),
        _ => Err(format!("{s:?} is not a number of lines (1 or more)")),
    }
}

fn parse_limit(s: &str) -> Result<u64, String> {
    match s.trim().parse::<u64>() {
        Ok(n) if n > 0 => Ok(n),
        _ => Err(format!("{s:?} is not a number of jobs (1 or more)")),
    }
}

#[derive(Debug, Subcommand)]
pub enum ScheduleCommand {
    /// Add a schedule: CRON (6 fields with seconds, or 5; UTC unless --tz) submits SRC -> DST.
    Add(Box<ScheduleAddArgs>),
    /// List schedules with their next fire.
    List {
        #[arg(long)]
        json: bool,
    },
    /// Show a schedule and its next 5 fires.
    Show {
        name: String,
        #[arg(long)]
        json: bool,
    },
    /// Remove a schedule (its past jobs stay in the log).
    Remove { name: String },
}

#[derive(Debug, Args)]
pub struct ScheduleAddArgs {
    /// Letters, digits, '-' and '_'.
    pub name: String,
    /// e.g. "0 30 23 * * Mon-Thu" (sec min hour day month weekday).
    pub cron: String,
    #[command(flatten)]
    pub job: JobArgs,
    /// IANA time zone the cron is read in, e.g. Europe/Paris (default UTC).
    #[arg(long)]
    pub tz: Option<String>,
    /// While the previous run is queued or running: skip (default), queue, or allow.
    #[arg(long, default_value = "skip")]
    pub overlap: ferry_engine::schedule::Overlap,
    /// Fires missed while no daemon ran: latest (default), all, or none.
    #[arg(long, default_value = "latest")]
    pub catch_up: ferry_engine::schedule::CatchUp,
    /// Missed fires older than this many seconds are not caught up.
    #[arg(
        long,
        value_name = "SECS",
        default_value_t = 86_400,
        allow_negative_numbers = true
    )]
    pub catch_up_window: u64,
    /// Times the daemon replays a failed job of this schedule.
    #[arg(long, default_value_t = 5, allow_negative_numbers = true, value_parser = clap::value_parser!(u32).range(0..=100))]
    pub max_retries: u32,
}

#[derive(Debug, Args)]
pub struct DaemonArgs {
    /// Jobs running at once.
    #[arg(long, default_value_t = 2, allow_negative_numbers = true, value_parser = clap::value_parser!(u32).range(1..=64))]
    pub jobs: u32,
    /// Replays of a failed job (schedules have their own --max-retries).
    #[arg(long, default_value_t = 5, allow_negative_numbers = true, value_parser = clap::value_parser!(u32).range(0..=100))]
    pub max_retries: u32,
    /// Seconds before the first replay of a failed job; doubles each time.
    #[arg(long, value_name = "SECS", default_value_t = 30.0, value_parser = parse_secs)]
    pub retry_delay: f64,
    /// Parallel copies per job, or auto (default: the job's, else 8 x cores).
    #[arg(long, value_name = "N|auto", allow_negative_numbers = true, value_parser = parse_parallel)]
    pub parallel: Option<Parallel>,
}

/// `--parallel`: a number of copies, or `auto` (adapts to throughput and
/// throttling).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Parallel {
    Fixed(u32),
    Auto,
}

impl Parallel {
    /// As run and daemon options take it: a fixed number, and whether auto.
    pub fn split(p: Option<Parallel>) -> (Option<usize>, bool) {
        match p {
            Some(Parallel::Fixed(n)) => (Some(n as usize), false),
            Some(Parallel::Auto) => (None, true),
            None => (None, false),
        }
    }

    /// As a job spec records it.
    pub fn for_spec(self) -> u32 {
        match self {
            Parallel::Fixed(n) => n,
            Parallel::Auto => ferry_engine::JobSpec::PARALLEL_AUTO,
        }
    }
}

/// Most parallel copies a user may ask for.
const MAX_PARALLEL: u32 = 4096;

fn parse_parallel(s: &str) -> Result<Parallel, String> {
    let t = s.trim();
    if t.eq_ignore_ascii_case("auto") {
        return Ok(Parallel::Auto);
    }
    match t.parse::<u32>() {
        Ok(n) if (1..=MAX_PARALLEL).contains(&n) => Ok(Parallel::Fixed(n)),
        _ => Err(format!(
            "use a number of copies from 1 to {MAX_PARALLEL}, or auto"
        )),
    }
}

fn parse_secs(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if v.is_finite() && (0.0..=86_400.0).contains(&v) => Ok(v),
        _ => Err(format!(
            "{s:?} is not a number of seconds between 0 and 86400"
        )),
    }
}

#[derive(Debug, Subcommand)]
pub enum PluginCommand {
    /// Which world a plugin implements, its imports, and a dry call.
    Check {
        path: PathBuf,
        /// key=value for its configure (repeatable).
        #[arg(long = "plugin-config", value_parser = parse_kv)]
        plugin_config: Vec<(String, String)>,
    },
}

#[derive(Debug, Args)]
pub struct JobArgs {
    /// Source: a folder, account:container[/prefix], or a container URL with a SAS.
    // OsString, so a path that is not UTF-8 gets ferry's message naming it
    // rather than clap's "invalid UTF-8 was detected in one or more arguments".
    pub src: OsString,
    /// Destination: a folder (created if missing), account:container[/prefix], or a container URL with a SAS.
    pub dst: OsString,
    /// What to do with blobs that exist at the destination.
    #[arg(long, default_value = "incremental", value_parser = parse_mode, conflicts_with = "policy")]
    pub mode: Mode,
    /// Shorthand for --mode incremental.
    #[arg(long, conflicts_with_all = ["mode", "policy"])]
    pub incremental: bool,
    /// Parallel copies (default: 8 x cores), or auto: start there and adapt
    /// to throughput and throttling (429/503).
    #[arg(long, value_name = "N|auto", allow_negative_numbers = true, value_parser = parse_parallel)]
    pub parallel: Option<Parallel>,
    /// Block size for large Azure blobs, 16KiB to 4000MiB, e.g. 8MiB, 4M (default 8 MiB,
    /// doubled to stay under 50,000 blocks); downloads of 2 blocks or more go
    /// as parallel ranges of 4 blocks.
    #[arg(long, allow_negative_numbers = true, value_parser = parse_size)]
    pub block_size: Option<u64>,
    /// Azure to Azure: `server` (Put Block From URL, default) or `stream` (through ferry).
    #[arg(long, default_value = "server", value_parser = parse_copy_mode)]
    pub copy_method: CopyMode,
    /// Print event-log writer statistics (events, batches, busy time), and
    /// what --parallel auto chose, to stderr.
    #[arg(long)]
    pub stats: bool,
    /// Overwrite policy plugin for blobs present at both ends: plugin:PATH.wasm
    #[arg(long, value_name = "plugin:PATH.wasm", value_parser = parse_policy)]
    pub policy: Option<PathBuf>,
    /// key=value passed to the policy plugin's configure (repeatable).
    #[arg(long = "plugin-config", value_parser = parse_kv)]
    pub plugin_config: Vec<(String, String)>,
    /// When the policy plugin fails on a blob: fail it (default) or skip it.
    #[arg(long, default_value = "fail", value_parser = parse_plugin_failure, requires = "policy")]
    pub plugin_failure: PluginFailure,
    /// Bytes read from a source that knows their MD5 (an Azure blob's
    /// Content-MD5) must match it, or the blob fails and its copy is not
    /// kept: `fail` (default) or `off` (for blobs whose stored MD5 is wrong).
    #[arg(long, value_name = "fail|off", default_value = "fail", value_parser = parse_md5_check)]
    pub check_md5: Md5Check,
    #[command(flatten)]
    pub retry: RetryArgs,
}

/// Retry settings for this run; each overrides ferry.toml's `[retry]`.
#[derive(Debug, Args, Clone, Copy, Default)]
pub struct RetryArgs {
    /// Tries per request, the first included (default 6; 1 = no retries).
    #[arg(long, allow_negative_numbers = true, value_parser = clap::value_parser!(u32).range(1..=100))]
    pub max_tries: Option<u32>,
    /// Seconds a request may go without an answer before it is retried (default 120).
    #[arg(long, allow_negative_numbers = true, value_name = "SECS", value_parser = clap::value_parser!(u64).range(1..=86_400))]
    pub try_timeout: Option<u64>,
    /// Seconds all tries of one request may take together (default 600).
    #[arg(long, allow_negative_numbers = true, value_name = "SECS", value_parser = clap::value_parser!(u64).range(1..=604_800))]
    pub retry_for: Option<u64>,
}

fn parse_policy(s: &str) -> Result<PathBuf, String> {
    match s.strip_prefix("plugin:") {
        Some(p) if !p.is_empty() => Ok(PathBuf::from(p)),
        _ => Err(format!(
            "{s:?} is not a policy; use plugin:PATH.wasm (built-in policies are --mode)"
        )),
    }
}

fn parse_kv(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
        _ => Err(format!("{s:?} is not key=value")),
    }
}

fn parse_plugin_failure(s: &str) -> Result<PluginFailure, String> {
    s.parse()
}

fn parse_md5_check(s: &str) -> Result<Md5Check, String> {
    s.parse()
}

#[derive(Debug, Args)]
pub struct RunArgs {
    /// Parallel copies for this run, or auto (default: the job's setting, else 8 x cores).
    #[arg(long, value_name = "N|auto", allow_negative_numbers = true, value_parser = parse_parallel)]
    pub parallel: Option<Parallel>,
    /// Print event-log writer statistics (events, batches, busy time), and
    /// what --parallel auto chose, to stderr.
    #[arg(long)]
    pub stats: bool,
    /// SAS for a source given as a container URL (never stored in the log).
    #[arg(long, env = "FERRY_SRC_SAS", hide_env_values = true)]
    pub src_sas: Option<String>,
    /// SAS for a destination given as a container URL (never stored in the log).
    #[arg(long, env = "FERRY_DST_SAS", hide_env_values = true)]
    pub dst_sas: Option<String>,
    /// Run with a policy plugin whose file changed since the job was submitted.
    #[arg(long)]
    pub allow_plugin_change: bool,
    #[command(flatten)]
    pub retry: RetryArgs,
}

/// Parses `65536`, `4K`, `8M`, `8MiB`, `1G` (binary units).
fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    if t.starts_with('-') {
        return Err(format!(
            "size {s:?} is negative; give a number of bytes, e.g. 8MiB"
        ));
    }
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: u64 = num
        .parse()
        .map_err(|_| format!("invalid size {s:?}; use e.g. 8MiB, 4M or 65536"))?;
    let mult = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" | "kib" => 1 << 10,
        "m" | "mb" | "mib" => 1 << 20,
        "g" | "gb" | "gib" => 1 << 30,
        _ => return Err(format!("invalid size unit in {s:?}; use K, M or G")),
    };
    match n.checked_mul(mult) {
        Some(0) => Err("size must be at least 1 byte".into()),
        Some(v) => Ok(v),
        None => Err(format!("size {s:?} is too large")),
    }
}

fn parse_copy_mode(s: &str) -> Result<CopyMode, String> {
    s.parse()
}

fn parse_mode(s: &str) -> Result<Mode, String> {
    s.parse()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parallel_is_a_number_of_copies_or_auto() {
        assert_eq!(parse_parallel("8"), Ok(Parallel::Fixed(8)));
        assert_eq!(parse_parallel("4096"), Ok(Parallel::Fixed(4096)));
        assert_eq!(parse_parallel("auto"), Ok(Parallel::Auto));
        assert_eq!(parse_parallel("AUTO"), Ok(Parallel::Auto));
        for bad in ["0", "-1", "4097", "lots", "", "8.5", "auto8"] {
            let e = parse_parallel(bad).unwrap_err();
            assert!(e.contains("1 to 4096, or auto"), "{bad}: {e}");
        }
    }
}
