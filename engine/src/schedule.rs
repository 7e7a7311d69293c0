//! Schedules: cron expressions that submit a job per fire, kept as events
//! in the log's control stream (`ScheduleAdded`, `ScheduleRemoved`,
//! `ScheduleFired`, `ScheduleSkipped`), so the audit shows who changed what
//! when. The decisions here are pure functions of their inputs and a `now`
//! passed in: the daemon owns the clock, tests pass fixed times.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, TimeDelta, Utc};
use chrono_tz::Tz;
use croner::errors::CronError;
use croner::parser::{CronParser, Seconds, Year};
use croner::Direction;
use serde::{Deserialize, Serialize};

use crate::event::{Event, EventRecord};
use crate::job::{JobId, JobSpec};
use crate::projection::JobState;

/// What to do when a schedule fires while its previous job is still
/// queued or running.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Overlap {
    /// Do not submit; record `ScheduleSkipped` with the reason.
    #[default]
    Skip,
    /// Submit; the new job waits in the queue behind the running one.
    Queue,
    /// Submit and run alongside (if the daemon has a free slot).
    Allow,
}

/// What to do with fires missed while no daemon was running.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum CatchUp {
    /// Run once for the latest missed fire (within the window).
    #[default]
    Latest,
    /// Run once per missed fire (within the window).
    All,
    /// Run none; wait for the next fire.
    None,
}

macro_rules! kebab_enum {
    ($t:ty, $what:literal, $($v:ident => $s:literal),+) => {
        impl fmt::Display for $t {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(match self { $(Self::$v => $s),+ })
            }
        }
        impl FromStr for $t {
            type Err = String;
            fn from_str(s: &str) -> Result<Self, String> {
                match s { $($s => Ok(Self::$v),)+ _ => Err(format!(
                    concat!("unknown ", $what, " {:?}; use one of: {}"),
                    s, [$($s),+].join(", ")
                )) }
            }
        }
    };
}
kebab_enum!(Overlap, "overlap policy", Skip => "skip", Queue => "queue", Allow => "allow");
kebab_enum!(CatchUp, "catch-up policy", Latest => "latest", All => "all", None => "none");

/// A schedule as added: everything needed to submit its jobs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ScheduleDef {
    pub name: String,
    /// Cron with seconds (6 fields) or without (5), day and month names allowed.
    pub cron: String,
    /// IANA zone the cron is read in (`Europe/Paris`); UTC when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tz: Option<String>,
    pub spec: JobSpec,
    #[serde(default)]
    pub overlap: Overlap,
    #[serde(default)]
    pub catch_up: CatchUp,
    /// Missed fires older than this (seconds) are not caught up.
    pub catch_up_window_secs: u64,
    /// Times the daemon replays a failed job of this schedule.
    pub max_retries: u32,
}

/// A schedule's state, folded from the control stream.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ScheduleState {
    pub def: ScheduleDef,
    pub added_at: DateTime<Utc>,
    /// Who added it (`user@host`).
    pub added_by: String,
    /// The latest fire acted on (fired or skipped): fires up to here are done.
    pub last_due: Option<DateTime<Utc>>,
    /// The job of the latest fire that submitted one.
    pub last_job: Option<JobId>,
    pub fired: u64,
    pub skipped: u64,
}

/// All live schedules by name.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Schedules {
    pub by_name: BTreeMap<String, ScheduleState>,
}

/// A fire acted on per call at most: on-time fires and caught-up missed
/// fires together, so a misconfigured grace or a long outage never turns
/// into thousands of submitted jobs at once.
pub const MAX_FIRES: usize = 100;

/// Missed fires counted one by one per kind for a skip summary. Past it the
/// summary says "at least N": counting 31 million fires of an every-second
/// cron down for a year would cost seconds for a number nobody needs exactly.
pub const COUNT_CAP: u64 = 100_000;

/// What to write instead, ending every cron error.
const CRON_HINT: &str = "use 6 fields with seconds, e.g. \"0 30 23 * * Mon-Thu\"";

/// Field names of the 6-field form, for saying which field is wrong.
const FIELDS: [&str; 6] = [
    "second",
    "minute",
    "hour",
    "day-of-month",
    "month",
    "day-of-week",
];

/// A parsed cron pattern and the zone it is read in.
#[derive(Debug, Clone)]
pub struct Cron {
    pattern: croner::Cron,
    tz: Tz,
}

impl Cron {
    /// 6 fields with seconds (`0 30 23 * * Mon-Thu`) or 5 without; day and
    /// month names allowed. Errors are one line naming the problem and what
    /// to do.
    pub fn parse(expr: &str, tz: Option<&str>) -> Result<Cron, String> {
        let tz = match tz {
            None => Tz::UTC,
            Some(name) => name.parse::<Tz>().map_err(|_| {
                format!("unknown time zone {name:?}; use an IANA name such as Europe/Paris or UTC")
            })?,
        };
        let invalid = |why: String| format!("invalid cron expression {expr:?}: {why}; {CRON_HINT}");
        let fields: Vec<&str> = expr.split_whitespace().collect();
        // croner would take a 7th field as a year; ferry's patterns repeat
        // every year, and a count error reads better than croner's.
        if fields.is_empty() {
            return Err(invalid("it is empty".into()));
        }
        if !fields[0].starts_with('@') && !(5..=6).contains(&fields.len()) {
            return Err(invalid(format!(
                "it has {} fields, not 6 (or 5 without seconds)",
                fields.len()
            )));
        }
        let pattern = parser()
            .parse(expr)
            .map_err(|e| invalid(explain(&fields, &e)))?;
        let cron = Cron { pattern, tz };
        // Valid fields can still name a date that never comes (`0 0 0 30 2 *`).
        // From a fixed instant croner searches far enough ahead to find any
        // yearly (or leap-yearly) date, so no fire there means none ever.
        if cron.next_after(DateTime::<Utc>::UNIX_EPOCH).is_none() {
            return Err(invalid("it never fires (no such date)".into()));
        }
        Ok(cron)
    }

    /// The zone the pattern is read in.
    pub fn zone(&self) -> Tz {
        self.tz
    }

    /// The first fire strictly after `t` (None if there is none).
    pub fn next_after(&self, t: DateTime<Utc>) -> Option<DateTime<Utc>> {
        // croner works in whole seconds: it drops `t`'s fraction and, when
        // exclusive, starts one second on, so the answer is always past `t`.
        self.find(t, false, Direction::Forward)
    }

    /// The next `n` fires strictly after `after`.
    pub fn upcoming(&self, after: DateTime<Utc>, n: usize) -> Vec<DateTime<Utc>> {
        let mut out = Vec::with_capacity(n.min(MAX_FIRES));
        let mut t = after;
        while out.len() < n {
            match self.next_after(t) {
                Some(next) => {
                    out.push(next);
                    t = next;
                }
                None => break,
            }
        }
        out
    }

    /// The first fire at or after `t`.
    fn next_at_or_after(&self, t: DateTime<Utc>) -> Option<DateTime<Utc>> {
        // With a fraction the whole second of `t` is before `t`: exclusive.
        self.find(t, t.timestamp_subsec_nanos() == 0, Direction::Forward)
    }

    /// The last fire at or before `t`.
    fn prev_at_or_before(&self, t: DateTime<Utc>) -> Option<DateTime<Utc>> {
        // Dropping `t`'s fraction only moves it back, so inclusive is right.
        self.find(t, true, Direction::Backward)
    }

    /// The last fire strictly before `t`.
    fn prev_before(&self, t: DateTime<Utc>) -> Option<DateTime<Utc>> {
        // With a fraction the whole second of `t` is before `t`: inclusive.
        self.find(t, t.timestamp_subsec_nanos() != 0, Direction::Backward)
    }

    fn find(&self, t: DateTime<Utc>, inclusive: bool, dir: Direction) -> Option<DateTime<Utc>> {
        let local = t.with_timezone(&self.tz);
        // Errors are "no fire within croner's search limit" (or a date out
        // of its range): for a schedule both mean there is none.
        let found = match dir {
            Direction::Forward => self.pattern.find_next_occurrence(&local, inclusive),
            Direction::Backward => self.pattern.find_previous_occurrence(&local, inclusive),
        };
        found.ok().map(|d| d.with_timezone(&Utc))
    }
}

/// The parser for ferry's dialect: seconds optional, no year field, and
/// day-of-month OR day-of-week when both are given (as Vixie cron does).
fn parser() -> CronParser {
    CronParser::builder()
        .seconds(Seconds::Optional)
        .year(Year::Disallowed)
        .build()
}

/// croner's reason, with the field it is about when one field alone fails:
/// its own messages say "Number out of bounds." without saying where.
fn explain(fields: &[&str], err: &CronError) -> String {
    let why = match err {
        CronError::EmptyPattern => "it is empty".to_string(),
        // croner's text here quotes the field upper-cased and after names
        // became numbers; the field named below is as the user wrote it.
        CronError::IllegalCharacters(_) => {
            "not a number, range, list, step or day or month name".to_string()
        }
        CronError::InvalidPattern(m) | CronError::ComponentError(m) => m.clone(),
        other => other.to_string(),
    };
    let why = why.trim().trim_end_matches('.').replace(['\n', '\r'], " ");
    let why = lower_first(&why);
    // croner reads only these nicknames and leaves any other `@word` to
    // fail as a field count.
    if fields.len() == 1 && fields[0].starts_with('@') {
        return "unknown nickname; use @yearly, @monthly, @weekly, @daily or @hourly".into();
    }
    // Each field tried alone, the others wildcards: the first that fails is
    // the one to name.
    if !(5..=6).contains(&fields.len()) {
        return why;
    }
    let names = &FIELDS[FIELDS.len() - fields.len()..];
    for (i, (field, name)) in fields.iter().zip(names).enumerate() {
        let alone: Vec<&str> = (0..fields.len())
            .map(|j| if j == i { *field } else { "*" })
            .collect();
        if parser().parse(&alone.join(" ")).is_err() {
            return format!("{name} field {field:?}: {why}");
        }
    }
    why
}

fn lower_first(s: &str) -> String {
    let mut c = s.chars();
    match c.next() {
        Some(f) => f.to_lowercase().chain(c).collect(),
        None => String::new(),
    }
}

impl ScheduleDef {
    /// The schedule's cron read in its zone.
    pub fn cron(&self) -> Result<Cron, String> {
        Cron::parse(&self.cron, self.tz.as_deref())
    }
}

/// Schedule names: 1-64 chars of letters, digits, '-', '_'.
pub fn check_name(name: &str) -> Result<(), String> {
    // ASCII only: names are typed in shells and shown in aligned tables.
    let ok = (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if ok {
        Ok(())
    } else {
        Err(format!(
            "invalid schedule name {name:?}; use 1 to 64 letters (a-z, A-Z), digits, '-' or '_'"
        ))
    }
}

/// What the daemon does about one fire (or a run of missed ones).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FireAction {
    /// Submit a job for the fire due at this instant.
    Fire(DateTime<Utc>),
    /// Record `ScheduleSkipped`: `due` is the newest fire it covers.
    Skip { due: DateTime<Utc>, reason: String },
}

/// A number of fires, exact or a lower bound when counting stopped at
/// [`COUNT_CAP`].
#[derive(Debug, Clone, Copy, Default)]
struct Count {
    n: u64,
    capped: bool,
}

impl Count {
    fn plus(self, o: Count) -> Count {
        Count {
            n: self.n + o.n,
            capped: self.capped || o.capped,
        }
    }
}

impl fmt::Display for Count {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.capped {
            write!(f, "at least {}", self.n)
        } else {
            write!(f, "{}", self.n)
        }
    }
}

/// Fires in `[lo, hi]`, counted one by one up to [`COUNT_CAP`].
fn count_fires(cron: &Cron, lo: DateTime<Utc>, hi: DateTime<Utc>) -> Count {
    let mut c = Count::default();
    let mut t = if lo <= hi {
        cron.next_at_or_after(lo)
    } else {
        None
    };
    while let Some(due) = t {
        if due > hi {
            break;
        }
        if c.n >= COUNT_CAP {
            c.capped = true;
            break;
        }
        c.n += 1;
        t = cron.next_after(due);
    }
    c
}

/// Fires in (since, now], since = `state.last_due`, else `state.added_at`,
/// and what to do with each.
///
/// A fire at most `grace` old is on time and always fires. Older ones were
/// missed (no daemon running): catch-up `latest` fires only the newest
/// missed fire, and only if it is within the window and no fire is on time
/// in this same call (that run already covers the missed period); `all`
/// fires every missed fire within the window; `none` fires none. Fires
/// older than `catch_up_window_secs` are never caught up.
///
/// At most [`MAX_FIRES`] fires per call, the newest ones. Every fire not
/// fired is summarised in ONE `Skip` (due = the newest fire it covers) whose
/// reason counts them by why, so the log stays bounded however long the
/// daemon was down. Fires are found by walking back from `now`; the skipped
/// ones are only counted, kind by kind, each count stopping at
/// [`COUNT_CAP`] ("at least N"), so an every-second cron down for a year
/// costs a few hundred thousand cron steps, not 31 million. Actions come
/// out oldest due first; the fired ones are always the newest, so the
/// `Skip` (if any) comes first.
pub fn due_fires(
    state: &ScheduleState,
    cron: &Cron,
    now: DateTime<Utc>,
    grace: std::time::Duration,
) -> Vec<FireAction> {
    let since = state.last_due.unwrap_or(state.added_at);
    if since >= now {
        return Vec::new();
    }
    let ago = |secs: TimeDelta| {
        now.checked_sub_signed(secs)
            .unwrap_or(DateTime::<Utc>::MIN_UTC)
    };
    let on_time_from = ago(TimeDelta::from_std(grace).unwrap_or(TimeDelta::MAX));
    let window_secs = state.def.catch_up_window_secs;
    let window_from = ago(i64::try_from(window_secs)
        .ok()
        .and_then(TimeDelta::try_seconds)
        .unwrap_or(TimeDelta::MAX));
    let catch_up = state.def.catch_up;

    // The fires to run are a run of the newest: walk back from `now` and
    // stop at the first one not to run.
    let mut fired: Vec<DateTime<Utc>> = Vec::new();
    let mut t = cron.prev_at_or_before(now);
    while let Some(due) = t {
        if due <= since || fired.len() >= MAX_FIRES {
            break;
        }
        let run = if due >= on_time_from {
            true
        } else if due < window_from {
            false
        } else {
            match catch_up {
                CatchUp::All => true,
                CatchUp::Latest => fired.is_empty(),
                CatchUp::None => false,
            }
        };
        if !run {
            break;
        }
        fired.push(due);
        t = cron.prev_before(due);
    }
    fired.reverse();

    let mut out = Vec::with_capacity(fired.len() + 1);
    // The newest fire not run; everything in (since, newest] is skipped.
    let newest = match fired.first() {
        Some(&oldest_fired) => cron.prev_before(oldest_fired),
        None => cron.prev_at_or_before(now),
    };
    if let Some(newest) = newest.filter(|&d| d > since) {
        let after_since = since + TimeDelta::nanoseconds(1);
        let just_before = |t: DateTime<Utc>| t - TimeDelta::nanoseconds(1);
        // Kinds by due, on time first: a window shorter than the grace
        // does not make an on-time fire late.
        let outside = count_fires(
            cron,
            after_since,
            just_before(window_from.min(on_time_from)).min(newest),
        );
        let not_caught_up = count_fires(
            cron,
            after_since.max(window_from),
            just_before(on_time_from).min(newest),
        );
        let over_limit = count_fires(cron, after_since.max(on_time_from), newest);
        out.push(FireAction::Skip {
            due: newest,
            reason: skip_reason(outside, not_caught_up, over_limit, catch_up, window_secs),
        });
    }
    out.extend(fired.into_iter().map(FireAction::Fire));
    out
}

/// One line for a skip summary, e.g. "3 missed fires not caught up
/// (catch-up: latest)".
fn skip_reason(
    outside: Count,
    not_caught_up: Count,
    over_limit: Count,
    catch_up: CatchUp,
    window_secs: u64,
) -> String {
    let fires = |c: Count| {
        if c.n == 1 && !c.capped {
            "fire"
        } else {
            "fires"
        }
    };
    let policy = match catch_up {
        CatchUp::All => format!("catch-up: all, at most {MAX_FIRES} at once"),
        other => format!("catch-up: {other}"),
    };
    let mut parts: Vec<(Count, String, &str)> = Vec::new();
    if outside.n > 0 {
        parts.push((
            outside,
            format!("outside the {window_secs} s catch-up window"),
            "missed ",
        ));
    }
    if not_caught_up.n > 0 {
        parts.push((
            not_caught_up,
            format!("not caught up ({policy})"),
            "missed ",
        ));
    }
    if over_limit.n > 0 {
        parts.push((
            over_limit,
            format!("over the limit of {MAX_FIRES} fires at once"),
            "",
        ));
    }
    match parts.as_slice() {
        [(c, why, missed)] => format!("{c} {missed}{} {why}", fires(*c)),
        _ => {
            let total = parts
                .iter()
                .fold(Count::default(), |a, (c, _, _)| a.plus(*c));
            let each: Vec<String> = parts
                .iter()
                .map(|(c, why, _)| format!("{c} {why}"))
                .collect();
            // On-time fires over the limit were not missed.
            let missed = if over_limit.n > 0 { "" } else { "missed " };
            format!(
                "{total} {missed}{} not run: {}",
                fires(total),
                each.join(", ")
            )
        }
    }
}

/// A schedule's previous job as a fire sees it.
#[derive(Debug, Clone, Copy)]
pub struct Previous {
    pub job: JobId,
    /// As the daemon sees it (a job it has taken is running).
    pub state: JobState,
    /// The daemon will run it again: an interrupted attempt of its own, or
    /// a planned retry.
    pub runs_again: bool,
}

/// Why a fire must not submit a job now: overlap `skip` and the schedule's
/// previous job is queued, running or paused, or will run again (an
/// interrupted job the daemon resumes, a failed one with a retry planned):
/// a new job would copy to the same place at the same time. Else None.
pub fn overlap_reason(overlap: Overlap, previous: Option<Previous>) -> Option<String> {
    let p = previous.filter(|_| overlap == Overlap::Skip)?;
    let job = p.job;
    match p.state {
        state @ (JobState::Queued | JobState::Running | JobState::Paused) => {
            Some(format!("previous run {job} is still {state}"))
        }
        JobState::Interrupted if p.runs_again => Some(format!(
            "previous run {job} was interrupted and will be resumed"
        )),
        JobState::Failed | JobState::CompletedWithFailures if p.runs_again => {
            Some(format!("previous run {job} has a retry planned"))
        }
        _ => None,
    }
}

/// Whether the daemon may start a job of this schedule now: `queue` waits
/// until no other job of the same schedule runs; `allow` and `skip` (whose
/// overlap was already settled at fire time) start at once.
pub fn may_start(overlap: Overlap, same_schedule_running: bool) -> bool {
    match overlap {
        Overlap::Queue => !same_schedule_running,
        Overlap::Allow | Overlap::Skip => true,
    }
}

impl Schedules {
    /// Folds one record; records other than schedule events are ignored.
    pub fn apply(&mut self, rec: &EventRecord) {
        match &rec.event {
            Event::ScheduleAdded { def, by } => {
                self.by_name.insert(
                    def.name.clone(),
                    ScheduleState {
                        def: (**def).clone(),
                        added_at: rec.at,
                        added_by: by.clone(),
                        last_due: None,
                        last_job: None,
                        fired: 0,
                        skipped: 0,
                    },
                );
            }
            Event::ScheduleRemoved { name, .. } => {
                self.by_name.remove(name);
            }
            Event::ScheduleFired { name, due, job } => {
                // A fire of a schedule removed since is history, not state.
                if let Some(s) = self.by_name.get_mut(name) {
                    s.last_due = s.last_due.max(Some(*due));
                    s.last_job = Some(*job);
                    s.fired += 1;
                }
            }
            Event::ScheduleSkipped { name, due, .. } => {
                if let Some(s) = self.by_name.get_mut(name) {
                    s.last_due = s.last_due.max(Some(*due));
                    s.skipped += 1;
                }
            }
            _ => {}
        }
    }

    /// The schedules after `recs`, in log order.
    pub fn fold<'a>(recs: impl IntoIterator<Item = &'a EventRecord>) -> Schedules {
        let mut s = Schedules::default();
        for rec in recs {
            s.apply(rec);
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use super::*;
    use crate::job::{Address, Mode};

    const HINT: &str = "use 6 fields with seconds, e.g. \"0 30 23 * * Mon-Thu\"";
    const GRACE: Duration = Duration::from_secs(60);
    const DAY: u64 = 86_400;
    const WEEK: u64 = 7 * DAY;

    fn at(s: &str) -> DateTime<Utc> {
        s.parse().expect("an RFC 3339 test date")
    }

    fn cron(expr: &str, tz: Option<&str>) -> Cron {
        Cron::parse(expr, tz).expect("a valid test cron")
    }

    fn def(name: &str, cron: &str, catch_up: CatchUp, window_secs: u64) -> ScheduleDef {
        ScheduleDef {
            name: name.into(),
            cron: cron.into(),
            tz: None,
            spec: JobSpec {
                src: Address::Memory { name: "a".into() },
                dst: Address::Memory { name: "b".into() },
                mode: Mode::Incremental,
                parallel: None,
                block_size: None,
                copy_method: Default::default(),
                policy_plugin: None,
                plugin_failure: Default::default(),
                mounts: Vec::new(),
                check_md5: Default::default(),
            },
            overlap: Overlap::Skip,
            catch_up,
            catch_up_window_secs: window_secs,
            max_retries: 0,
        }
    }

    /// A schedule added at `added_at` whose fires up to `last_due` are done.
    fn given(def: ScheduleDef, added_at: &str, last_due: Option<&str>) -> ScheduleState {
        ScheduleState {
            def,
            added_at: at(added_at),
            added_by: "ops@host".into(),
            last_due: last_due.map(at),
            last_job: None,
            fired: 0,
            skipped: 0,
        }
    }

    fn fire(due: &str) -> FireAction {
        FireAction::Fire(at(due))
    }

    fn skip(due: &str, reason: &str) -> FireAction {
        FireAction::Skip {
            due: at(due),
            reason: reason.into(),
        }
    }

    fn hourly(catch_up: CatchUp, window_secs: u64) -> ScheduleState {
        given(
            def("h", "0 0 * * * *", catch_up, window_secs),
            "2025-03-01T00:00:00Z",
            Some("2025-03-03T00:00:00Z"),
        )
    }

    fn when_due(st: &ScheduleState, now: &str, grace: Duration) -> Vec<FireAction> {
        let cron = st.def.cron().expect("a valid test cron");
        due_fires(st, &cron, at(now), grace)
    }

    // --- Cron ---

    #[test]
    fn given_mon_thu_2330_utc_when_asked_on_a_friday_then_next_monday_and_mon_to_thu_then_mon() {
        let c = cron("0 30 23 * * Mon-Thu", None);
        let friday = at("2025-03-07T12:00:00Z");
        assert_eq!(c.next_after(friday), Some(at("2025-03-10T23:30:00Z")));
        assert_eq!(
            c.upcoming(friday, 5),
            [
                "2025-03-10T23:30:00Z",
                "2025-03-11T23:30:00Z",
                "2025-03-12T23:30:00Z",
                "2025-03-13T23:30:00Z",
                "2025-03-17T23:30:00Z",
            ]
            .map(at)
        );
    }

    #[test]
    fn given_a_fire_time_when_next_after_it_then_the_next_one_strictly_after() {
        let c = cron("0 30 23 * * Mon-Thu", None);
        assert_eq!(
            c.next_after(at("2025-03-10T23:30:00Z")),
            Some(at("2025-03-11T23:30:00Z"))
        );
        // A fraction past a fire is past it too.
        let every_second = cron("* * * * * *", None);
        assert_eq!(
            every_second.next_after(at("2025-03-10T23:30:00.500Z")),
            Some(at("2025-03-10T23:30:01Z"))
        );
        assert!(c.upcoming(at("2025-03-10T00:00:00Z"), 0).is_empty());
    }

    #[test]
    fn given_day_and_month_names_in_any_case_when_parsed_then_they_mean_their_numbers() {
        let after = at("2025-03-07T12:00:00Z");
        assert_eq!(
            cron("0 0 9 1 Jan,Jul *", None).upcoming(after, 2),
            ["2025-07-01T09:00:00Z", "2026-01-01T09:00:00Z"].map(at)
        );
        assert_eq!(
            cron("0 0 12 * * sat,SUN", None).upcoming(after, 3),
            [
                "2025-03-08T12:00:00Z",
                "2025-03-09T12:00:00Z",
                "2025-03-15T12:00:00Z"
            ]
            .map(at)
        );
        assert_eq!(
            cron("0 0 0 * dec Fri", None).next_after(after),
            Some(at("2025-12-05T00:00:00Z"))
        );
    }

    #[test]
    fn given_five_fields_when_parsed_then_seconds_are_zero() {
        let after = at("2025-03-07T12:00:00Z");
        assert_eq!(
            cron("30 23 * * Mon-Thu", None).upcoming(after, 5),
            cron("0 30 23 * * Mon-Thu", None).upcoming(after, 5)
        );
        assert_eq!(
            cron("*/15 * * * *", None).next_after(at("2025-03-07T12:07:59Z")),
            Some(at("2025-03-07T12:15:00Z"))
        );
    }

    #[test]
    fn given_europe_paris_when_crossing_the_march_change_then_utc_instants_shift_by_an_hour() {
        // 2025-03-30 02:00 CET became 03:00 CEST.
        let after = at("2025-03-28T12:00:00Z");
        assert_eq!(
            cron("0 30 1 * * *", Some("Europe/Paris")).upcoming(after, 3),
            [
                "2025-03-29T00:30:00Z", // 01:30 CET (UTC+1)
                "2025-03-30T00:30:00Z", // 01:30 CET, before the change
                "2025-03-30T23:30:00Z", // 01:30 CEST (UTC+2)
            ]
            .map(at)
        );
        // 02:30 did not exist on the 30th: croner runs it as the gap ends.
        assert_eq!(
            cron("0 30 2 * * *", Some("Europe/Paris")).upcoming(after, 3),
            [
                "2025-03-29T01:30:00Z",
                "2025-03-30T01:00:00Z", // 03:00 CEST
                "2025-03-31T00:30:00Z",
            ]
            .map(at)
        );
    }

    #[test]
    fn given_europe_paris_when_crossing_the_october_change_then_a_fixed_time_runs_once() {
        // 2025-10-26 03:00 CEST became 02:00 CET: 02:30 happened twice.
        assert_eq!(
            cron("0 30 2 * * *", Some("Europe/Paris")).upcoming(at("2025-10-24T12:00:00Z"), 3),
            [
                "2025-10-25T00:30:00Z",
                "2025-10-26T00:30:00Z", // the first 02:30 only
                "2025-10-27T01:30:00Z",
            ]
            .map(at)
        );
    }

    #[test]
    fn given_utc_by_name_or_none_when_parsed_then_the_same_instants() {
        let after = at("2025-03-07T12:00:00Z");
        let named = cron("0 0 3 * * *", Some("UTC"));
        assert_eq!(named.zone(), Tz::UTC);
        assert_eq!(
            named.upcoming(after, 3),
            cron("0 0 3 * * *", None).upcoming(after, 3)
        );
        let mut d = def("d", "0 0 3 * * *", CatchUp::Latest, DAY);
        d.tz = Some("Asia/Tokyo".into());
        assert_eq!(
            d.cron().map(|c| c.next_after(after)),
            Ok(Some(at("2025-03-07T18:00:00Z"))) // 03:00 JST (UTC+9)
        );
    }

    #[test]
    fn given_an_out_of_range_field_when_parsed_then_one_line_naming_the_field() {
        assert_eq!(
            Cron::parse("0 61 * * * *", None).err(),
            Some(format!(
                "invalid cron expression \"0 61 * * * *\": minute field \"61\": number out of bounds; {HINT}"
            ))
        );
    }

    #[test]
    fn given_an_unknown_zone_when_parsed_then_one_line_naming_it() {
        assert_eq!(
            Cron::parse("0 30 23 * * Mon-Thu", Some("Mars/Base")).err(),
            Some(
                "unknown time zone \"Mars/Base\"; use an IANA name such as Europe/Paris or UTC"
                    .into()
            )
        );
        // Zone names are exact, as in the IANA database.
        assert!(Cron::parse("0 0 * * * *", Some("europe/paris")).is_err());
    }

    #[test]
    fn given_bad_expressions_when_parsed_then_each_error_is_one_line_saying_why_and_what_to_do() {
        let cases = [
            ("", "it is empty"),
            ("   ", "it is empty"),
            ("* * * *", "it has 4 fields, not 6 (or 5 without seconds)"),
            (
                "0 0 0 * * * 2025",
                "it has 7 fields, not 6 (or 5 without seconds)",
            ),
            (
                "0 0 12 * * Funday",
                "day-of-week field \"Funday\": not a number, range, list, step or day or month name",
            ),
            ("*/0 * * * *", "minute field \"*/0\": step cannot be zero"),
            ("0 0 25 * * *", "hour field \"25\": number out of bounds"),
            ("0 0 0 30 2 *", "it never fires (no such date)"),
            ("0 0 0 31 Apr *", "it never fires (no such date)"),
        ];
        for (expr, why) in cases {
            let err = Cron::parse(expr, None).expect_err(expr);
            assert_eq!(
                err,
                format!("invalid cron expression {expr:?}: {why}; {HINT}"),
                "{expr:?}"
            );
            assert!(!err.contains('\n'), "{err}");
        }
        // A newline in the input is quoted, not printed.
        let err = Cron::parse("0 0\n* * * * * *", None).expect_err("8 fields");
        assert!(!err.contains('\n'), "{err}");
    }

    #[test]
    fn given_names_when_checked_then_letters_digits_dash_underscore_up_to_64() {
        for ok in ["nightly", "a", "Backup_2-eu", &"x".repeat(64)] {
            assert_eq!(check_name(ok), Ok(()), "{ok:?}");
        }
        for bad in ["", "has space", "a/b", "dot.ted", "é", &"x".repeat(65)] {
            assert_eq!(
                check_name(bad),
                Err(format!(
                    "invalid schedule name {bad:?}; use 1 to 64 letters (a-z, A-Z), digits, '-' or '_'"
                )),
                "{bad:?}"
            );
        }
    }

    // --- due_fires ---

    #[test]
    fn given_a_fire_within_grace_when_due_then_it_fires() {
        let st = given(
            def("n", "0 0 2 * * *", CatchUp::None, 0),
            "2025-03-01T00:00:00Z",
            Some("2025-03-05T02:00:00Z"),
        );
        // Even catch-up none and a zero window: on time is not missed.
        assert_eq!(
            when_due(&st, "2025-03-06T02:00:05Z", GRACE),
            [fire("2025-03-06T02:00:00Z")]
        );
        // Exactly `grace` old is still on time.
        assert_eq!(
            when_due(&st, "2025-03-06T02:01:00Z", GRACE),
            [fire("2025-03-06T02:00:00Z")]
        );
        // Due exactly now.
        assert_eq!(
            when_due(&st, "2025-03-06T02:00:00Z", GRACE),
            [fire("2025-03-06T02:00:00Z")]
        );
    }

    #[test]
    fn given_no_fire_since_last_due_when_due_then_nothing() {
        let st = hourly(CatchUp::Latest, DAY);
        // The fire at last_due itself is done.
        assert!(when_due(&st, "2025-03-03T00:00:30Z", GRACE).is_empty());
        assert!(when_due(&st, "2025-03-03T00:59:59Z", GRACE).is_empty());
        // A clock behind last_due.
        assert!(when_due(&st, "2025-03-02T00:00:00Z", GRACE).is_empty());
    }

    #[test]
    fn given_no_last_due_when_due_then_fires_count_from_added_at() {
        let mut st = hourly(CatchUp::Latest, DAY);
        st.last_due = None;
        st.added_at = at("2025-03-03T01:30:00Z");
        assert_eq!(
            when_due(&st, "2025-03-03T02:00:01Z", GRACE),
            [fire("2025-03-03T02:00:00Z")]
        );
        // Added on a fire's second: that fire is not owed.
        st.added_at = at("2025-03-03T02:00:00Z");
        assert!(when_due(&st, "2025-03-03T02:00:01Z", GRACE).is_empty());
    }

    #[test]
    fn given_a_daily_schedule_down_3_days_with_latest_when_due_then_one_fire_and_one_summary() {
        let st = given(
            def("d", "0 0 2 * * *", CatchUp::Latest, WEEK),
            "2025-03-01T00:00:00Z",
            Some("2025-03-03T02:00:00Z"),
        );
        assert_eq!(
            when_due(&st, "2025-03-06T12:00:00Z", GRACE),
            [
                skip(
                    "2025-03-05T02:00:00Z",
                    "2 missed fires not caught up (catch-up: latest)"
                ),
                fire("2025-03-06T02:00:00Z"),
            ]
        );
    }

    #[test]
    fn given_hourly_down_3_days_with_latest_when_due_then_the_newest_fires_and_the_rest_are_counted(
    ) {
        // 72 fires missed, 03-03 01:00 to 03-06 00:00.
        let now = "2025-03-06T00:30:00Z";
        assert_eq!(
            when_due(&hourly(CatchUp::Latest, WEEK), now, GRACE),
            [
                skip(
                    "2025-03-05T23:00:00Z",
                    "71 missed fires not caught up (catch-up: latest)"
                ),
                fire("2025-03-06T00:00:00Z"),
            ]
        );
        // A 1-day window: 48 of them are older than 03-05 00:30.
        assert_eq!(
            when_due(&hourly(CatchUp::Latest, DAY), now, GRACE),
            [
                skip(
                    "2025-03-05T23:00:00Z",
                    "71 missed fires not run: 48 outside the 86400 s catch-up window, \
                     23 not caught up (catch-up: latest)"
                ),
                fire("2025-03-06T00:00:00Z"),
            ]
        );
    }

    #[test]
    fn given_latest_and_a_fire_on_time_when_due_then_that_fire_covers_the_missed_ones() {
        assert_eq!(
            when_due(
                &hourly(CatchUp::Latest, WEEK),
                "2025-03-06T00:00:10Z",
                GRACE
            ),
            [
                skip(
                    "2025-03-05T23:00:00Z",
                    "71 missed fires not caught up (catch-up: latest)"
                ),
                fire("2025-03-06T00:00:00Z"),
            ]
        );
    }

    #[test]
    fn given_latest_and_the_newest_missed_fire_outside_the_window_when_due_then_only_a_summary() {
        let st = given(
            def("d", "0 0 2 * * *", CatchUp::Latest, 3600),
            "2025-03-01T00:00:00Z",
            Some("2025-03-03T02:00:00Z"),
        );
        assert_eq!(
            when_due(&st, "2025-03-06T12:00:00Z", GRACE),
            [skip(
                "2025-03-06T02:00:00Z",
                "3 missed fires outside the 3600 s catch-up window"
            )]
        );
    }

    #[test]
    fn given_hourly_down_3_days_with_all_when_due_then_each_fire_in_the_window_and_older_summarised(
    ) {
        let got = when_due(&hourly(CatchUp::All, DAY), "2025-03-06T00:30:00Z", GRACE);
        let mut want = vec![skip(
            "2025-03-05T00:00:00Z",
            "48 missed fires outside the 86400 s catch-up window",
        )];
        let first = at("2025-03-05T01:00:00Z");
        want.extend((0..24).map(|h| FireAction::Fire(first + TimeDelta::hours(h))));
        assert_eq!(got, want);
    }

    #[test]
    fn given_all_and_more_than_100_missed_when_due_then_the_newest_100_fire() {
        let st = given(
            def("m", "0 * * * * *", CatchUp::All, DAY),
            "2025-03-01T00:00:00Z",
            Some("2025-03-03T00:00:00Z"),
        );
        // 300 fires missed, 00:01 to 05:00.
        let got = when_due(&st, "2025-03-03T05:00:30Z", Duration::from_secs(10));
        assert_eq!(got.len(), 1 + MAX_FIRES);
        assert_eq!(
            got[0],
            skip(
                "2025-03-03T03:20:00Z",
                "200 missed fires not caught up (catch-up: all, at most 100 at once)"
            )
        );
        assert_eq!(got[1], fire("2025-03-03T03:21:00Z"));
        assert_eq!(got[MAX_FIRES], fire("2025-03-03T05:00:00Z"));
    }

    #[test]
    fn given_hourly_down_3_days_with_none_when_due_then_only_a_summary() {
        assert_eq!(
            when_due(&hourly(CatchUp::None, WEEK), "2025-03-06T00:30:00Z", GRACE),
            [skip(
                "2025-03-06T00:00:00Z",
                "72 missed fires not caught up (catch-up: none)"
            )]
        );
        assert_eq!(
            when_due(&hourly(CatchUp::None, DAY), "2025-03-06T00:30:00Z", GRACE),
            [skip(
                "2025-03-06T00:00:00Z",
                "72 missed fires not run: 48 outside the 86400 s catch-up window, \
                 24 not caught up (catch-up: none)"
            )]
        );
    }

    #[test]
    fn given_missed_fires_across_the_october_change_when_caught_up_then_each_real_instant_once() {
        // Every half hour in Paris: 02:00 and 02:30 happen twice that night.
        let mut d = def("p", "0 */30 * * * *", CatchUp::All, DAY);
        d.tz = Some("Europe/Paris".into());
        let st = given(d, "2025-10-01T00:00:00Z", Some("2025-10-25T23:45:00Z"));
        assert_eq!(
            when_due(&st, "2025-10-26T02:10:00Z", GRACE),
            [
                fire("2025-10-26T00:00:00Z"), // 02:00 CEST
                fire("2025-10-26T00:30:00Z"), // 02:30 CEST
                fire("2025-10-26T01:00:00Z"), // 02:00 CET
                fire("2025-10-26T01:30:00Z"), // 02:30 CET
                fire("2025-10-26T02:00:00Z"), // 03:00 CET
            ]
        );
        // A fixed time in the repeated hour is owed once.
        let mut d = def("f", "0 30 2 * * *", CatchUp::All, WEEK);
        d.tz = Some("Europe/Paris".into());
        let st = given(d, "2025-10-01T00:00:00Z", Some("2025-10-25T00:30:00Z"));
        assert_eq!(
            when_due(&st, "2025-10-26T12:00:00Z", GRACE),
            [fire("2025-10-26T00:30:00Z")]
        );
    }

    #[test]
    fn given_a_nickname_when_parsed_then_croner_reads_it() {
        assert_eq!(
            cron("@daily", None).next_after(at("2025-03-07T12:00:00Z")),
            Some(at("2025-03-08T00:00:00Z"))
        );
        let err = Cron::parse("@sometimes", None).expect_err("unknown nickname");
        assert_eq!(
            err,
            format!(
                "invalid cron expression \"@sometimes\": unknown nickname; \
                 use @yearly, @monthly, @weekly, @daily or @hourly; {HINT}"
            )
        );
    }

    #[test]
    fn given_a_window_shorter_than_grace_when_due_then_on_time_still_fires() {
        assert_eq!(
            when_due(&hourly(CatchUp::None, 0), "2025-03-03T01:00:30Z", GRACE),
            [fire("2025-03-03T01:00:00Z")]
        );
        assert_eq!(
            when_due(&hourly(CatchUp::All, 0), "2025-03-03T01:05:00Z", GRACE),
            [skip(
                "2025-03-03T01:00:00Z",
                "1 missed fire outside the 0 s catch-up window"
            )]
        );
    }

    #[test]
    fn given_more_than_100_fires_on_time_when_due_then_the_newest_100_fire() {
        let st = given(
            def("s", "* * * * * *", CatchUp::All, DAY),
            "2025-03-01T00:00:00Z",
            Some("2025-03-03T00:00:00Z"),
        );
        let got = when_due(&st, "2025-03-03T00:05:00Z", Duration::from_secs(600));
        assert_eq!(got.len(), 1 + MAX_FIRES);
        assert_eq!(
            got[0],
            skip(
                "2025-03-03T00:03:20Z",
                "200 fires over the limit of 100 fires at once"
            )
        );
        assert_eq!(got[MAX_FIRES], fire("2025-03-03T00:05:00Z"));
    }

    #[test]
    fn given_an_every_second_cron_down_a_year_when_due_then_quick_and_bounded() {
        let st = given(
            def("s", "* * * * * *", CatchUp::Latest, 3600),
            "2024-03-01T00:00:00Z",
            None,
        );
        let started = Instant::now();
        let got = when_due(&st, "2025-03-01T00:00:00Z", GRACE);
        // Counting all 31.5 million would take minutes in a debug build;
        // the capped count takes well under a second.
        assert!(started.elapsed() < Duration::from_secs(20));
        // The 61 fires of the last minute are on time; one summary for the rest.
        assert_eq!(got.len(), 1 + 61);
        assert_eq!(
            got[0],
            skip(
                "2025-02-28T23:58:59Z",
                "at least 103540 missed fires not run: at least 100000 outside the \
                 3600 s catch-up window, 3540 not caught up (catch-up: latest)"
            )
        );
        assert_eq!(got[1], fire("2025-02-28T23:59:00Z"));
        assert_eq!(got[61], fire("2025-03-01T00:00:00Z"));
    }

    // --- overlap ---

    const STATES: [JobState; 8] = JobState::ALL;

    #[test]
    fn given_each_overlap_and_previous_state_when_fired_then_only_skip_of_a_live_job_refuses() {
        let job = JobId::new();
        let prev = |state, runs_again| {
            Some(Previous {
                job,
                state,
                runs_again,
            })
        };
        for overlap in [Overlap::Skip, Overlap::Queue, Overlap::Allow] {
            assert_eq!(overlap_reason(overlap, None), None, "{overlap}");
            for state in STATES {
                for runs_again in [false, true] {
                    let live = matches!(
                        state,
                        JobState::Queued | JobState::Running | JobState::Paused
                    ) || (runs_again
                        && matches!(
                            state,
                            JobState::Interrupted
                                | JobState::Failed
                                | JobState::CompletedWithFailures
                        ));
                    let got = overlap_reason(overlap, prev(state, runs_again));
                    assert_eq!(
                        got.is_some(),
                        overlap == Overlap::Skip && live,
                        "{overlap} {state} {runs_again}: {got:?}"
                    );
                    if let Some(reason) = got {
                        assert!(reason.contains(&job.to_string()), "{reason}");
                    }
                }
            }
        }
        assert_eq!(
            overlap_reason(Overlap::Skip, prev(JobState::Running, false)),
            Some(format!("previous run {job} is still running"))
        );
        assert_eq!(
            overlap_reason(Overlap::Skip, prev(JobState::Interrupted, true)),
            Some(format!(
                "previous run {job} was interrupted and will be resumed"
            ))
        );
    }

    #[test]
    fn given_each_overlap_when_asked_to_start_then_only_queue_waits_for_a_running_sibling() {
        let table = [
            (Overlap::Skip, false, true),
            (Overlap::Skip, true, true),
            (Overlap::Queue, false, true),
            (Overlap::Queue, true, false),
            (Overlap::Allow, false, true),
            (Overlap::Allow, true, true),
        ];
        for (overlap, running, want) in table {
            assert_eq!(may_start(overlap, running), want, "{overlap} {running}");
        }
    }

    // --- projection ---

    fn rec(seq: u64, at_: &str, event: Event) -> EventRecord {
        EventRecord {
            v: 1,
            job: JobId::CONTROL,
            seq,
            at: at(at_),
            event,
        }
    }

    #[test]
    fn given_schedule_events_when_folded_then_live_schedules_with_counters() {
        let (j1, j2) = (JobId::new(), JobId::new());
        let nightly = def("nightly", "0 0 2 * * *", CatchUp::Latest, DAY);
        let hourly = def("hourly", "0 0 * * * *", CatchUp::All, DAY);
        let events = [
            (
                "2025-03-01T10:00:00Z",
                Event::ScheduleAdded {
                    def: Box::new(nightly.clone()),
                    by: "ann@h".into(),
                },
            ),
            (
                "2025-03-01T10:05:00Z",
                Event::ScheduleAdded {
                    def: Box::new(hourly.clone()),
                    by: "bob@h".into(),
                },
            ),
            (
                "2025-03-02T02:00:01Z",
                Event::ScheduleFired {
                    name: "nightly".into(),
                    due: at("2025-03-02T02:00:00Z"),
                    job: j1,
                },
            ),
            (
                "2025-03-03T02:00:01Z",
                Event::ScheduleSkipped {
                    name: "nightly".into(),
                    due: at("2025-03-03T02:00:00Z"),
                    reason: "previous run is still running".into(),
                },
            ),
            // Fired out of order (an older due): last_due keeps the newest.
            (
                "2025-03-03T02:00:02Z",
                Event::ScheduleFired {
                    name: "nightly".into(),
                    due: at("2025-03-01T02:00:00Z"),
                    job: j2,
                },
            ),
            (
                "2025-03-03T03:00:00Z",
                Event::ScheduleRemoved {
                    name: "hourly".into(),
                    by: "bob@h".into(),
                },
            ),
            // After removal: ignored, not resurrected.
            (
                "2025-03-03T04:00:00Z",
                Event::ScheduleFired {
                    name: "hourly".into(),
                    due: at("2025-03-03T04:00:00Z"),
                    job: j1,
                },
            ),
            // Job events are not schedule events.
            (
                "2025-03-03T05:00:00Z",
                Event::JobPaused { by: "ann@h".into() },
            ),
        ];
        let recs: Vec<EventRecord> = events
            .into_iter()
            .enumerate()
            .map(|(i, (t, e))| rec(i as u64, t, e))
            .collect();

        let s = Schedules::fold(&recs);

        assert_eq!(s.by_name.len(), 1);
        assert_eq!(
            s.by_name.get("nightly"),
            Some(&ScheduleState {
                def: nightly.clone(),
                added_at: at("2025-03-01T10:00:00Z"),
                added_by: "ann@h".into(),
                last_due: Some(at("2025-03-03T02:00:00Z")),
                last_job: Some(j2),
                fired: 2,
                skipped: 1,
            })
        );

        // Added again under the same name: a fresh schedule.
        let mut again = s.clone();
        let mut weekly = nightly.clone();
        weekly.cron = "0 0 2 * * Sun".into();
        again.apply(&rec(
            8,
            "2025-03-04T00:00:00Z",
            Event::ScheduleAdded {
                def: Box::new(weekly.clone()),
                by: "cy@h".into(),
            },
        ));
        assert_eq!(
            again.by_name.get("nightly"),
            Some(&ScheduleState {
                def: weekly,
                added_at: at("2025-03-04T00:00:00Z"),
                added_by: "cy@h".into(),
                last_due: None,
                last_job: None,
                fired: 0,
                skipped: 0,
            })
        );
    }

    #[test]
    fn given_no_events_when_folded_then_no_schedules() {
        assert_eq!(Schedules::fold([]), Schedules::default());
    }
}
