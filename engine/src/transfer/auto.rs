//! `--parallel auto`: the number of copies in flight follows throughput and
//! the service's throttling instead of staying fixed, like AzCopy's AUTO
//! concurrency.
//!
//! The attempt starts a pool of workers at a ceiling and lets only as many
//! copy at once as a [`Limiter`] has permits. Every [`WINDOW`] the
//! controller hands what completed (blobs, bytes) and how many request
//! tries the service throttled (429, 503 ServerBusy; counted by the request
//! pipeline into a [`Load`]) to a [`Tuner`], a pure state machine, and
//! applies its answer to the limiter.
//!
//! The tuner is AIMD-like: throttling above a small share cuts the
//! concurrency (back to where a probe came from, else x0.7) and caps later
//! probes below where it happened for a while; without throttling it probes
//! upwards and keeps a step only if throughput over the next second rose by
//! 10% and the second after confirms it, else it steps back and waits longer
//! before the next probe. The first probe doubles; each that gains nothing
//! makes the next one smaller (x1.41, then x1.25), so a gently rising curve
//! (Azurite's gains ~15% from 16 to 32 copies, ~5% per x1.25 step, which is
//! noise) is still climbed, and the search narrows near the top. It so settles near the knee of the
//! service's curve instead of sawing around it, and noise alone does not
//! ratchet it up a flat curve.

use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{Semaphore, SemaphorePermit};
use tokio::time::{Instant, MissedTickBehavior};
use tokio_util::sync::CancellationToken;

use super::Progress;
use crate::job::JobSpec;
use crate::retry::Load;

/// One measurement window. Long enough for hundreds of small blobs to
/// complete against a local service, short enough to react within seconds.
pub(crate) const WINDOW: Duration = Duration::from_millis(500);

/// A throttled share of request tries above this cuts the concurrency.
/// Not zero: a busy storage account sheds a little load now and then
/// whatever the client does.
const THROTTLED_SHARE: f64 = 0.02;
/// ... and only once this many tries were throttled (one or two say little).
const MIN_THROTTLED: u64 = 3;
/// Multiplicative decrease on throttling.
const DECREASE: f64 = 0.7;
/// Multiplicative increase of the first probe ...
const FIRST_STEP: f64 = 2.0;
/// ... and the smallest one, which probes shrink to (by square roots) as
/// they gain nothing, and which follows throttling.
const INCREASE: f64 = 1.25;
/// A probe is kept if throughput rose at least this much; less is noise.
const GAIN: f64 = 0.10;
/// A window is judged once this many blobs or bytes completed in it
/// (windows with less are pooled with the next): fewer make the rate noise.
const MIN_BLOBS: u64 = 20;
const MIN_BYTES: u64 = 16 << 20;
/// A rate is judged over at least this long: one window's rate swings by
/// 10-20% on a busy machine, which would pass for gains.
const MIN_SPAN: Duration = Duration::from_millis(1000);
/// A completed blob weighs as much as this many bytes in the rate: small
/// blobs cost a request each, large ones their bytes, and the rate should
/// move with either.
const BLOB_WEIGHT: f64 = 64.0 * 1024.0;
/// Judged windows to wait after a probe that gained nothing, doubled for
/// each such probe in a row up to `HOLD << MAX_DOUBLINGS`.
const HOLD: u32 = 4;
const MAX_DOUBLINGS: u32 = 3;
/// Judged windows a cap set by throttling holds; then higher levels are
/// probed again, as the service's room may have grown. Doubled (up to
/// `MAX_DOUBLINGS` times) each time that finds throttling again.
const THROTTLE_MEMORY: u32 = 60;

/// How many copies run at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Concurrency {
    Fixed(usize),
    Auto(Limits),
}

impl Concurrency {
    /// The run's choice wins over the job's; `--parallel auto` either way
    /// (the job's spec records it as [`JobSpec::PARALLEL_AUTO`]).
    pub(crate) fn choose(run: Option<usize>, run_auto: bool, spec: &JobSpec) -> Concurrency {
        if run_auto {
            return Concurrency::Auto(Limits::for_machine());
        }
        if let Some(n) = run {
            return Concurrency::Fixed(n.max(1));
        }
        if spec.parallel_auto() {
            return Concurrency::Auto(Limits::for_machine());
        }
        Concurrency::Fixed(
            spec.parallel
                .map(|p| p as usize)
                .unwrap_or_else(crate::default_parallelism),
        )
    }

    /// Copies at the start (what `JobStarted.parallelism` records).
    pub fn initial(&self) -> usize {
        match self {
            Concurrency::Fixed(n) => (*n).max(1),
            Concurrency::Auto(l) => l.start,
        }
    }

    /// Workers to start: as many as may ever copy at once.
    pub(crate) fn workers(&self) -> usize {
        match self {
            Concurrency::Fixed(n) => (*n).max(1),
            Concurrency::Auto(l) => l.max,
        }
    }
}

/// Where `--parallel auto` starts and the range it keeps to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub start: usize,
    pub min: usize,
    pub max: usize,
}

impl Limits {
    /// Starts at the fixed default (8 x cores, as the seed measured); up to
    /// 32 x cores, at most 256 (each idle worker costs a task or a thread).
    pub fn for_machine() -> Limits {
        let cores = std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1);
        let start = crate::default_parallelism();
        Limits {
            start,
            min: 1,
            max: (32 * cores).min(256).max(start),
        }
    }
}

/// What happened during one window (or several pooled).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Window {
    pub elapsed: Duration,
    /// Blobs and bytes copied.
    pub blobs: u64,
    pub bytes: u64,
    /// Request tries sent, and those the service throttled.
    pub requests: u64,
    pub throttled: u64,
}

impl Window {
    fn add(&mut self, w: Window) {
        self.elapsed += w.elapsed;
        self.blobs += w.blobs;
        self.bytes += w.bytes;
        self.requests += w.requests;
        self.throttled += w.throttled;
    }

    /// Work done per second, blobs and bytes together.
    fn rate(&self) -> f64 {
        let work = self.bytes as f64 + self.blobs as f64 * BLOB_WEIGHT;
        work / self.elapsed.as_secs_f64().max(1e-3)
    }

    fn throttling(&self) -> bool {
        self.throttled >= MIN_THROTTLED
            && self.throttled as f64 > THROTTLED_SHARE * self.requests.max(1) as f64
    }

    fn enough(&self) -> bool {
        self.elapsed >= MIN_SPAN && (self.blobs >= MIN_BLOBS || self.bytes >= MIN_BYTES)
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Phase {
    /// The next judged window measures the current level, then a probe.
    Measure,
    /// Raised from `from`, where the rate was `base`: the next judged
    /// window tells whether it helped.
    Probe { from: usize, base: f64 },
    /// The probe from `from` gained: one more judged window at this level
    /// must gain too before the next probe (a lucky window alone would
    /// ratchet the level up on a flat curve).
    Confirm { from: usize, base: f64 },
    /// Judged windows left before measuring again.
    Hold { left: u32 },
}

/// The decisions of `--parallel auto`, without I/O or clocks: fed one
/// window at a time, answers the concurrency for the next.
#[derive(Debug, Clone)]
pub struct Tuner {
    limits: Limits,
    current: usize,
    phase: Phase,
    /// Windows not judged yet (too little completed so far).
    pending: Window,
    /// The first window after a change is dropped: copies started under
    /// the old level (and their retries) still finish in it.
    settling: bool,
    /// Since throttling was seen, probes go no higher than this; with the
    /// judged windows since, so it is forgotten after `THROTTLE_MEMORY`.
    cap: Option<(usize, u32)>,
    /// How long a cap holds, in judged windows.
    memory: u32,
    /// The last cap ran out and nothing throttled since.
    forgot: bool,
    /// Probes in a row that gained nothing.
    failed_probes: u32,
    /// The next probe multiplies the level by this.
    step: f64,
    why: &'static str,
}

impl Tuner {
    pub fn new(limits: Limits) -> Tuner {
        let current = limits.start.clamp(limits.min.max(1), limits.max.max(1));
        Tuner {
            limits,
            current,
            phase: Phase::Measure,
            pending: Window::default(),
            settling: false,
            cap: None,
            memory: THROTTLE_MEMORY,
            forgot: false,
            failed_probes: 0,
            step: FIRST_STEP,
            why: "start",
        }
    }

    pub fn current(&self) -> usize {
        self.current
    }

    /// The last level judged good: the current one, or where an unjudged
    /// probe came from.
    pub fn settled(&self) -> usize {
        match self.phase {
            Phase::Probe { from, .. } | Phase::Confirm { from, .. } => from,
            Phase::Measure | Phase::Hold { .. } => self.current,
        }
    }

    /// Why the last change was made, for logs.
    pub fn why(&self) -> &'static str {
        self.why
    }

    /// Takes one window's figures; returns the concurrency from now on.
    pub fn next(&mut self, window: Window) -> usize {
        if std::mem::take(&mut self.settling) {
            return self.current;
        }
        self.pending.add(window);
        let throttling = self.pending.throttling();
        if !throttling && !self.pending.enough() {
            return self.current;
        }
        let judged = std::mem::take(&mut self.pending);
        if let Some((cap, age)) = self.cap {
            self.cap = (age + 1 < self.memory).then_some((cap, age + 1));
            self.forgot = self.cap.is_none();
        }
        if throttling {
            // A probe that brought throttling goes back to where it came
            // from, known to be fine, and later probes go at most half-way
            // to where it throttled (a bisection, so the knee is found in a
            // few probes); throttling at a level held for a while means the
            // service has less room now: cut, and probe no higher than
            // below it.
            let (cut, cap) = match self.phase {
                Phase::Probe { from, .. } | Phase::Confirm { from, .. } => {
                    (from, from + (self.current - from) / 2)
                }
                _ => ((self.current as f64 * DECREASE) as usize, self.current - 1),
            };
            let cap = self.cap.map_or(cap, |(c, _)| c.min(cap));
            self.cap = Some((cap, 0));
            // Throttled again once a cap was forgotten: the service's room
            // has not grown, so remember longer before the next try.
            if std::mem::take(&mut self.forgot) {
                self.memory = (self.memory * 2).min(THROTTLE_MEMORY << MAX_DOUBLINGS);
            }
            // The window after the cut is dropped (settling), which is
            // wait enough: the next one measures the new level. Near a
            // limit, probe in small steps.
            self.phase = Phase::Measure;
            self.step = INCREASE;
            return self.set(cut.min(self.current - 1), "throttled");
        }
        let rate = judged.rate();
        match self.phase {
            Phase::Hold { left } => {
                self.phase = if left > 1 {
                    Phase::Hold { left: left - 1 }
                } else {
                    Phase::Measure
                };
                self.current
            }
            Phase::Measure => self.probe(rate),
            Phase::Probe { from, base } if rate >= base * (1.0 + gain(from, self.current)) => {
                self.phase = Phase::Confirm { from, base };
                self.current
            }
            Phase::Confirm { from, base }
                if rate >= base * (1.0 + gain(from, self.current) / 2.0) =>
            {
                self.failed_probes = 0;
                self.probe(rate)
            }
            Phase::Probe { from, .. } | Phase::Confirm { from, .. } => {
                self.failed_probes += 1;
                self.step = self.step.sqrt().max(INCREASE);
                let left = HOLD << (self.failed_probes - 1).min(MAX_DOUBLINGS);
                self.phase = Phase::Hold { left };
                self.set(from, "no gain")
            }
        }
    }

    /// One step up from the current level, whose rate is `rate`, up to the
    /// cap that recent throttling set.
    fn probe(&mut self, rate: f64) -> usize {
        let mut up = ((self.current as f64 * self.step).ceil() as usize).max(self.current + 1);
        if let Some((cap, _)) = self.cap {
            up = up.min(cap);
        }
        up = up.min(self.limits.max);
        if up <= self.current {
            self.phase = Phase::Hold { left: HOLD };
            return self.current;
        }
        self.phase = Phase::Probe {
            from: self.current,
            base: rate,
        };
        self.set(up, "probe")
    }

    fn set(&mut self, n: usize, why: &'static str) -> usize {
        let n = n.clamp(self.limits.min.max(1), self.limits.max.max(1));
        if n != self.current {
            self.current = n;
            self.settling = true;
            self.why = why;
        }
        self.current
    }
}

/// The rise in throughput that makes a probe from `from` to `to` worth
/// keeping: `GAIN`, or less for a small step (near a limit), which could
/// never gain `GAIN` however well it went.
fn gain(from: usize, to: usize) -> f64 {
    let step = to as f64 / from.max(1) as f64 - 1.0;
    GAIN.min(step / 2.0)
}

/// Lets at most `limit` copies run at once; the limit may change while
/// copies run.
#[derive(Debug)]
pub(crate) struct Limiter {
    sem: Semaphore,
    /// Permits to retire as they come back: a lower limit takes effect as
    /// copies in flight end, without waiting for them here.
    debt: AtomicUsize,
    limit: Mutex<usize>,
}

/// A copy's place under the limit.
pub(crate) struct Permit<'a> {
    limiter: &'a Limiter,
    permit: Option<SemaphorePermit<'a>>,
}

impl Drop for Permit<'_> {
    fn drop(&mut self) {
        let Some(p) = self.permit.take() else { return };
        let owed = self
            .limiter
            .debt
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |d| d.checked_sub(1));
        if owed.is_ok() {
            p.forget();
        }
    }
}

impl Limiter {
    pub(crate) fn new(limit: usize) -> Limiter {
        Limiter {
            sem: Semaphore::new(limit),
            debt: AtomicUsize::new(0),
            limit: Mutex::new(limit),
        }
    }

    /// Waits for a place; `None` once `stop` is cancelled.
    pub(crate) async fn acquire(&self, stop: &CancellationToken) -> Option<Permit<'_>> {
        let permit = tokio::select! {
            biased;
            _ = stop.cancelled() => return None,
            p = self.sem.acquire() => p.ok()?,
        };
        Some(Permit {
            limiter: self,
            permit: Some(permit),
        })
    }

    pub(crate) fn set(&self, limit: usize) {
        // Poisoned only if a set panicked, which cannot leave it half done
        // in a way that matters more than carrying on.
        let mut cur = self.limit.lock().unwrap_or_else(|e| e.into_inner());
        if limit > *cur {
            let add = limit - *cur;
            let before = self
                .debt
                .fetch_update(Ordering::AcqRel, Ordering::Acquire, |d| {
                    Some(d.saturating_sub(add))
                })
                .unwrap_or(0);
            self.sem.add_permits(add - before.min(add));
        } else if limit < *cur {
            let cut = *cur - limit;
            let gone = self.sem.forget_permits(cut);
            self.debt.fetch_add(cut - gone, Ordering::AcqRel);
        }
        *cur = limit;
    }
}

/// Counts the tuner's changes over an attempt, for `--stats`.
#[derive(Debug, Default)]
pub struct AutoStats {
    on: AtomicBool,
    started: AtomicUsize,
    current: AtomicUsize,
    min: AtomicUsize,
    max: AtomicUsize,
    changes: AtomicU64,
}

/// How `--parallel auto` went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AutoSummary {
    pub started: usize,
    /// The last level judged good (the controller stops once the last
    /// blobs are in flight; a probe it had not judged by then is left out).
    pub settled: usize,
    pub min: usize,
    pub max: usize,
    pub changes: u64,
}

impl fmt::Display for AutoSummary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "parallel auto: started {}, settled {} (min {}, max {}), {} change{}",
            self.started,
            self.settled,
            self.min,
            self.max,
            self.changes,
            if self.changes == 1 { "" } else { "s" }
        )
    }
}

impl AutoStats {
    fn begin(&self, start: usize) {
        for a in [&self.started, &self.current, &self.min, &self.max] {
            a.store(start, Ordering::Relaxed);
        }
        self.changes.store(0, Ordering::Relaxed);
        self.on.store(true, Ordering::Release);
    }

    fn record(&self, n: usize) {
        self.current.store(n, Ordering::Relaxed);
        self.min.fetch_min(n, Ordering::Relaxed);
        self.max.fetch_max(n, Ordering::Relaxed);
        self.changes.fetch_add(1, Ordering::Relaxed);
    }

    /// The run ends in a probe not judged yet: report where it came from.
    fn settle(&self, n: usize) {
        self.current.store(n, Ordering::Relaxed);
    }

    /// `None` unless the attempt ran with `--parallel auto`.
    pub fn summary(&self) -> Option<AutoSummary> {
        if !self.on.load(Ordering::Acquire) {
            return None;
        }
        let g = |a: &AtomicUsize| a.load(Ordering::Relaxed);
        Some(AutoSummary {
            started: g(&self.started),
            settled: g(&self.current),
            min: g(&self.min),
            max: g(&self.max),
            changes: self.changes.load(Ordering::Relaxed),
        })
    }

    /// The level now (0 when not in auto mode).
    pub fn current(&self) -> usize {
        self.current.load(Ordering::Relaxed)
    }
}

/// The shared parts of one auto attempt.
pub(crate) struct Auto {
    pub limits: Limits,
    pub limiter: Arc<Limiter>,
    pub load: Arc<Load>,
}

impl Auto {
    pub(crate) fn new(limits: Limits) -> Auto {
        Auto {
            limits,
            limiter: Arc::new(Limiter::new(limits.start)),
            load: Arc::new(Load::default()),
        }
    }

    /// The controller: until `done`, each window's decision goes to the
    /// limiter (and to `progress.auto`).
    pub(crate) fn controller(
        &self,
        progress: Arc<Progress>,
        done: CancellationToken,
    ) -> impl std::future::Future<Output = ()> + Send + 'static {
        let (limits, limiter, load) = (self.limits, self.limiter.clone(), self.load.clone());
        async move {
            let mut tuner = Tuner::new(limits);
            progress.auto.begin(tuner.current());
            let mut tick = tokio::time::interval_at(Instant::now() + WINDOW, WINDOW);
            // A late tick (a busy runtime) stretches that window rather than
            // judging a burst of short ones.
            tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
            let mut last = Sample::of(&progress, &load);
            loop {
                tokio::select! {
                    biased;
                    _ = done.cancelled() => {
                        progress.auto.settle(tuner.settled());
                        return;
                    }
                    _ = tick.tick() => {}
                }
                let now = Sample::of(&progress, &load);
                let window = now.since(&last);
                last = now;
                // The tail: the listing is done and no more blobs are left
                // than copies in flight. Throughput falls there whatever the
                // level, which says nothing about the service: keep it.
                if tail(&progress, tuner.current()) {
                    progress.auto.settle(tuner.settled());
                    tracing::debug!(
                        parallel = tuner.current(),
                        settled = tuner.settled(),
                        "parallel auto: the last blobs are in flight; level kept"
                    );
                    return;
                }
                let before = tuner.current();
                let after = tuner.next(window);
                if after != before {
                    limiter.set(after);
                    progress.auto.record(after);
                    tracing::debug!(
                        from = before,
                        to = after,
                        why = tuner.why(),
                        blobs = window.blobs,
                        bytes = window.bytes,
                        requests = window.requests,
                        throttled = window.throttled,
                        "parallel auto: changed the number of parallel copies"
                    );
                }
            }
        }
    }
}

fn tail(p: &Progress, current: usize) -> bool {
    let g = |a: &AtomicU64| a.load(Ordering::Relaxed);
    if !p.listing_done.load(Ordering::Relaxed) {
        return false;
    }
    let settled = g(&p.copied) + g(&p.skipped) + g(&p.failed) + g(&p.resumed);
    g(&p.listed).saturating_sub(settled) <= current as u64
}

/// Counters at one instant.
struct Sample {
    at: Instant,
    blobs: u64,
    bytes: u64,
    requests: u64,
    throttled: u64,
}

impl Sample {
    fn of(p: &Progress, load: &Load) -> Sample {
        Sample {
            at: Instant::now(),
            blobs: p.copied.load(Ordering::Relaxed),
            bytes: p.copied_bytes.load(Ordering::Relaxed),
            requests: load.requests(),
            throttled: load.throttled(),
        }
    }

    fn since(&self, earlier: &Sample) -> Window {
        Window {
            elapsed: self.at.saturating_duration_since(earlier.at),
            blobs: self.blobs.saturating_sub(earlier.blobs),
            bytes: self.bytes.saturating_sub(earlier.bytes),
            requests: self.requests.saturating_sub(earlier.requests),
            throttled: self.throttled.saturating_sub(earlier.throttled),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: Limits = Limits {
        start: 16,
        min: 1,
        max: 64,
    };

    /// A simulated service: each copy in flight completes `per_copy` small
    /// blobs a window up to `peak` copies; above `peak` throughput stays
    /// flat (or sags a little) and, if `throttles`, the excess share of
    /// tries is answered 503. `noise` (0..1) jitters each window.
    struct Service {
        peak: usize,
        per_copy: f64,
        throttles: bool,
        noise: f64,
        rng: fastrand::Rng,
    }

    impl Service {
        fn new(peak: usize, throttles: bool) -> Service {
            Service {
                peak,
                per_copy: 10.0,
                throttles,
                noise: 0.0,
                rng: fastrand::Rng::with_seed(7),
            }
        }

        fn window(&mut self, c: usize) -> Window {
            let served = c.min(self.peak) as f64;
            let over = c.saturating_sub(self.peak) as f64;
            // Past the peak the service spends effort turning requests away.
            let jitter = 1.0 + self.noise * (self.rng.f64() * 2.0 - 1.0);
            let blobs = (served * self.per_copy * (1.0 - 0.01 * over) * jitter).max(0.0) as u64;
            let throttled = if self.throttles && c > self.peak {
                (blobs as f64 * over / served).ceil() as u64
            } else {
                0
            };
            Window {
                elapsed: WINDOW,
                blobs,
                bytes: blobs * 4096,
                requests: blobs + throttled,
                throttled,
            }
        }
    }

    /// Runs `windows` windows; returns the level in effect during each.
    fn run(tuner: &mut Tuner, service: &mut Service, windows: usize) -> Vec<usize> {
        (0..windows)
            .map(|_| {
                let c = tuner.current();
                tuner.next(service.window(c));
                c
            })
            .collect()
    }

    fn changes(levels: &[usize]) -> usize {
        levels.windows(2).filter(|w| w[0] != w[1]).count()
    }

    fn busy(throttled: u64) -> Window {
        Window {
            elapsed: WINDOW,
            blobs: 100,
            bytes: 100 * 4096,
            requests: 200,
            throttled,
        }
    }

    #[test]
    fn given_a_service_that_answers_503_above_k_when_tuned_then_it_settles_just_below_k() {
        for k in [6, 24, 40] {
            let mut service = Service::new(k, true);
            service.noise = 0.03;
            let mut tuner = Tuner::new(LIMITS);
            let levels = run(&mut tuner, &mut service, 400);
            let late = &levels[200..];
            let over = late.iter().filter(|&&c| c > k).count();
            let mean = late.iter().sum::<usize>() as f64 / late.len() as f64;
            // Above k only for the rare re-probe of a remembered limit.
            assert!(
                over * 10 <= late.len(),
                "k={k}: {over} windows above k: {late:?}"
            );
            assert!(mean >= 0.8 * k as f64, "k={k}: mean {mean}: {late:?}");
            assert!(
                *late.iter().max().unwrap() <= (k as f64 * 1.3) as usize + 1,
                "k={k}: {late:?}"
            );
            // No sawing: a handful of changes in 100 s.
            assert!(
                changes(late) <= 12,
                "k={k}: {} changes: {late:?}",
                changes(late)
            );
            let end = tuner.current();
            assert!(
                end <= k && end as f64 >= 0.7 * k as f64,
                "k={k}: ended at {end}: {late:?}"
            );
        }
    }

    #[test]
    fn given_a_service_whose_throughput_flattens_at_k_then_it_stops_climbing_near_k() {
        for k in [24, 40] {
            let mut service = Service::new(k, false);
            let mut tuner = Tuner::new(LIMITS);
            let levels = run(&mut tuner, &mut service, 300);
            let late = &levels[100..];
            // Where it settles: at most one accepted probe step past k
            // (16 -> 32 gains 38% against k = 24, so 32 is kept)...
            let settled = tuner.settled() as f64;
            assert!(
                settled >= 0.75 * k as f64 && settled <= 1.35 * k as f64,
                "k={k}: settled {settled}: {late:?}"
            );
            // ... and its occasional probes go no further than x1.25.
            assert!(
                late.iter()
                    .all(|&c| c as f64 >= 0.75 * k as f64
                        && c as f64 <= 1.25 * 1.35 * k as f64 + 1.0),
                "k={k}: {late:?}"
            );
            let mean = late.iter().sum::<usize>() as f64 / late.len() as f64;
            assert!(mean <= 1.4 * k as f64, "k={k}: mean {mean}: {late:?}");
            assert!(changes(late) <= 20, "k={k}: {late:?}");
        }
    }

    #[test]
    fn given_a_flat_curve_measured_with_noise_then_lucky_windows_do_not_ratchet_it_up() {
        for seed in 1..=5 {
            let mut service = Service::new(16, false);
            service.noise = 0.1;
            service.rng = fastrand::Rng::with_seed(seed);
            let mut tuner = Tuner::new(LIMITS);
            let levels = run(&mut tuner, &mut service, 600);
            let late = &levels[300..];
            let mean = late.iter().sum::<usize>() as f64 / late.len() as f64;
            assert!(mean <= 16.0 * 1.3, "seed {seed}: mean {mean}: {late:?}");
            assert!(late.iter().all(|&c| c <= 32), "seed {seed}: {late:?}");
        }
    }

    #[test]
    fn given_throttling_in_every_window_then_it_backs_off_to_the_floor_and_no_lower() {
        let mut tuner = Tuner::new(LIMITS);
        let mut levels = vec![];
        for _ in 0..50 {
            levels.push(tuner.next(busy(100)));
        }
        // x0.7 each judged window (every other window settles).
        assert_eq!(&levels[..4], &[11, 11, 7, 7]);
        assert!(levels.iter().all(|&c| c >= 1));
        assert_eq!(tuner.current(), 1);
        assert_eq!(tuner.why(), "throttled");
    }

    #[test]
    fn given_throughput_that_keeps_growing_then_it_climbs_to_the_ceiling_and_no_higher() {
        let mut tuner = Tuner::new(LIMITS);
        for _ in 0..100 {
            let c = tuner.current() as u64;
            tuner.next(Window {
                elapsed: WINDOW,
                blobs: c * 10,
                bytes: 0,
                requests: c * 10,
                throttled: 0,
            });
            assert!(tuner.current() <= LIMITS.max);
        }
        assert_eq!(tuner.current(), LIMITS.max);
    }

    #[test]
    fn given_a_probe_that_gains_nothing_then_it_steps_back_and_waits_longer_each_time() {
        let mut tuner = Tuner::new(LIMITS);
        let flat = busy(0);
        let mut levels = vec![];
        for _ in 0..120 {
            levels.push(tuner.next(flat));
        }
        // Measured at 16 (two windows), probe 32 (a window settling, two
        // judged), no gain: back to 16.
        assert_eq!(&levels[..6], &[16, 32, 32, 32, 16, 16]);
        // Each probe that gains nothing makes the next smaller: x2, x1.41,
        // then x1.25 from there on.
        let probes: Vec<(usize, usize)> = levels
            .windows(2)
            .enumerate()
            .filter(|(_, w)| w[0] == 16 && w[1] > 16)
            .map(|(i, w)| (i, w[1]))
            .collect();
        let sizes: Vec<usize> = probes.iter().map(|p| p.1).collect();
        assert!(sizes.len() >= 4, "{levels:?}");
        assert_eq!(&sizes[..3], &[32, 23, 20], "{levels:?}");
        assert!(sizes[3..].iter().all(|&c| c == 20), "{levels:?}");
        let probes: Vec<usize> = probes.iter().map(|p| p.0).collect();
        let gaps: Vec<usize> = probes.windows(2).map(|w| w[1] - w[0]).collect();
        assert!(gaps.windows(2).all(|g| g[1] >= g[0]), "{gaps:?}");
        assert!(gaps.last() > gaps.first(), "{gaps:?}");
    }

    #[test]
    fn given_a_probe_not_judged_yet_then_settled_is_where_it_came_from() {
        let mut tuner = Tuner::new(LIMITS);
        tuner.next(busy(0));
        assert_eq!(tuner.next(busy(0)), 32);
        assert_eq!((tuner.current(), tuner.settled()), (32, 16));
        // Gained, and confirmed: settled there.
        let rich = |blobs| Window { blobs, ..busy(0) };
        for _ in 0..3 {
            tuner.next(rich(200));
        }
        assert_eq!((tuner.current(), tuner.settled()), (32, 16), "confirming");
        tuner.next(rich(200));
        tuner.next(rich(200));
        assert_eq!(tuner.settled(), 32);
    }

    #[test]
    fn given_too_little_completed_then_windows_are_pooled_before_judging() {
        let mut tuner = Tuner::new(LIMITS);
        let thin = Window {
            elapsed: WINDOW,
            blobs: 5,
            bytes: 5 * 4096,
            requests: 5,
            throttled: 0,
        };
        for _ in 0..3 {
            assert_eq!(tuner.next(thin), 16);
        }
        // 20 blobs over four windows: measured, and a probe starts.
        assert_eq!(tuner.next(thin), 32);
        // Nothing completing at all changes nothing.
        let mut idle = Tuner::new(LIMITS);
        for _ in 0..100 {
            assert_eq!(
                idle.next(Window {
                    elapsed: WINDOW,
                    ..Window::default()
                }),
                16
            );
        }
    }

    #[test]
    fn given_a_few_throttled_tries_then_the_share_decides_not_their_number() {
        let mut tuner = Tuner::new(LIMITS);
        // 4 of 400 (1%) over a second: below the threshold.
        tuner.next(busy(2));
        tuner.next(busy(2));
        assert_eq!(tuner.current(), 32, "probed up");
        let mut tuner = Tuner::new(LIMITS);
        // 6 of 200 (3%): cut.
        assert_eq!(tuner.next(busy(6)), 11);
    }

    #[test]
    fn given_a_cut_then_the_next_window_still_throttled_by_old_tries_is_not_judged() {
        let mut tuner = Tuner::new(LIMITS);
        assert_eq!(tuner.next(busy(100)), 11);
        // Retries of requests sent at 16 still come back throttled.
        assert_eq!(tuner.next(busy(100)), 11);
        // Measured at 11 (over two windows): a probe, but below the 16
        // that throttled.
        assert_eq!(tuner.next(busy(0)), 11);
        assert_eq!(tuner.next(busy(0)), 14);
    }

    #[test]
    fn given_a_throttled_level_then_probes_stay_below_it_until_it_is_forgotten() {
        let mut tuner = Tuner::new(Limits {
            start: 10,
            min: 1,
            max: 64,
        });
        assert_eq!(tuner.next(busy(50)), 7);
        let mut seen = vec![];
        while seen.len() < 10 * THROTTLE_MEMORY as usize && seen.last().is_none_or(|&c| c <= 10) {
            let c = tuner.current() as u64;
            // Throughput grows with every copy: only the cap holds it.
            seen.push(tuner.next(Window {
                elapsed: WINDOW,
                blobs: c * 10,
                bytes: 0,
                requests: c * 10,
                throttled: 0,
            }));
        }
        let capped = &seen[..seen.len() - 1];
        // Judged windows span two windows: the cap held that long.
        assert!(capped.len() >= 2 * THROTTLE_MEMORY as usize, "{seen:?}");
        assert!(capped.iter().all(|&c| c <= 9), "{capped:?}");
        assert!(capped.contains(&9), "{capped:?}");
        assert!(seen.last() > Some(&10), "never probed again: {seen:?}");
    }

    #[test]
    fn limits_start_at_the_fixed_default_and_stay_within_256() {
        let l = Limits::for_machine();
        assert_eq!(l.start, crate::default_parallelism());
        assert!(
            l.min == 1 && l.start <= l.max && l.max <= 256.max(l.start),
            "{l:?}"
        );
    }

    #[test]
    fn the_run_choice_wins_over_the_job_spec() {
        let spec = |parallel| JobSpec {
            src: crate::job::Address::Memory { name: "a".into() },
            dst: crate::job::Address::Memory { name: "b".into() },
            mode: crate::job::Mode::Full,
            parallel,
            block_size: None,
            copy_method: Default::default(),
            policy_plugin: None,
            plugin_failure: Default::default(),
            mounts: Vec::new(),
            check_md5: Default::default(),
        };
        let auto = Concurrency::Auto(Limits::for_machine());
        let def = crate::default_parallelism();
        assert_eq!(
            Concurrency::choose(None, false, &spec(None)),
            Concurrency::Fixed(def)
        );
        assert_eq!(
            Concurrency::choose(None, false, &spec(Some(3))),
            Concurrency::Fixed(3)
        );
        assert_eq!(
            Concurrency::choose(None, false, &spec(Some(JobSpec::PARALLEL_AUTO))),
            auto
        );
        assert_eq!(
            Concurrency::choose(Some(5), false, &spec(Some(JobSpec::PARALLEL_AUTO))),
            Concurrency::Fixed(5)
        );
        assert_eq!(Concurrency::choose(None, true, &spec(Some(3))), auto);
        assert_eq!(auto.initial(), def);
        assert_eq!(auto.workers(), Limits::for_machine().max);
    }

    #[tokio::test]
    async fn a_lower_limit_retires_permits_as_copies_end_and_a_higher_one_pays_that_back_first() {
        let l = Limiter::new(4);
        let stop = CancellationToken::new();
        let mut held = vec![];
        for _ in 0..4 {
            held.push(l.acquire(&stop).await.unwrap());
        }
        l.set(2);
        // All four are in flight: two must not come back.
        held.pop();
        held.pop();
        assert_eq!(l.sem.available_permits(), 0);
        held.pop();
        assert_eq!(l.sem.available_permits(), 1);
        // Up to 3 with one still in flight: one more place.
        l.set(3);
        assert_eq!(l.sem.available_permits(), 2);
        held.pop();
        assert_eq!(l.sem.available_permits(), 3);
        // Down while idle: taken away at once.
        l.set(1);
        assert_eq!(l.sem.available_permits(), 1);
        let one = l.acquire(&stop).await.unwrap();
        stop.cancel();
        assert!(l.acquire(&stop).await.is_none(), "a stop ends the wait");
        drop(one);
    }

    #[tokio::test(start_paused = true)]
    async fn the_controller_cuts_the_limit_when_the_service_throttles_and_reports_it() {
        let auto = Auto::new(LIMITS);
        let progress = Arc::new(Progress::default());
        let done = CancellationToken::new();
        let task = tokio::spawn(auto.controller(progress.clone(), done.clone()));
        // Half-way into the first window, then a window at a time: each
        // window 100 blobs copied and half of 200 tries throttled.
        tokio::time::sleep(WINDOW / 2).await;
        for _ in 0..4 {
            progress.copied.fetch_add(100, Ordering::Relaxed);
            for i in 0..200 {
                auto.load.count(i % 2 == 0);
            }
            tokio::time::sleep(WINDOW).await;
        }
        done.cancel();
        task.await.unwrap();
        let s = progress.auto.summary().unwrap();
        // 16, cut to 11, a window settling, cut to 7.
        assert_eq!(
            s,
            AutoSummary {
                started: 16,
                settled: 7,
                min: 7,
                max: 16,
                changes: 2
            }
        );
        assert_eq!(auto.limiter.sem.available_permits(), 7);
        assert_eq!(
            s.to_string(),
            "parallel auto: started 16, settled 7 (min 7, max 16), 2 changes"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn the_controller_keeps_the_level_once_the_last_blobs_are_in_flight() {
        let auto = Auto::new(LIMITS);
        let progress = Arc::new(Progress::default());
        progress.listed.store(1000, Ordering::Relaxed);
        progress.copied.store(990, Ordering::Relaxed);
        progress.listing_done.store(true, Ordering::Relaxed);
        let done = CancellationToken::new();
        // Ends by itself: 10 blobs left, fewer than 16 copies.
        auto.controller(progress.clone(), done).await;
        assert_eq!(progress.auto.summary().unwrap().changes, 0);
    }
}
