//! Retries with exponential backoff and full jitter (each wait is uniform in
//! `0..=min(cap, base * 2^n)`), so many workers hitting the same fault do not
//! retry in lockstep. A server's `Retry-After` is a floor on the wait; the
//! total time budget is a ceiling on all of them.
//!
//! Two layers use one policy: each HTTP request is retried where it is sent
//! (the Azure pipeline, with a per-try timeout), and a whole blob is retried
//! by its worker only for faults a request cannot recover from (a source
//! that changed, a body that broke off mid-stream). Every retry is counted by
//! cause in the [`RetryTally`] of the blob (or listing) it happened for, and
//! so reaches its event and the job summary.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How often and how long to retry transient failures.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Tries in total, including the first.
    pub max_tries: u32,
    pub base: Duration,
    pub cap: Duration,
    /// One HTTP request's try, from sending to the response headers (and
    /// between reads of a body): longer counts as a stall and is retried.
    pub try_timeout: Duration,
    /// All tries of one operation together; no retry starts past it.
    pub max_elapsed: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_tries: 6,
            base: Duration::from_millis(100),
            cap: Duration::from_secs(30),
            // An 8 MiB block at 100 KB/s still fits.
            try_timeout: Duration::from_secs(120),
            max_elapsed: Duration::from_secs(600),
        }
    }
}

impl RetryPolicy {
    /// Rejects settings that could never succeed, naming the field.
    pub fn check(&self) -> Result<(), String> {
        // The same ranges as the command-line flags: beyond them a deadline
        // overflows the clock (a panic, not a long wait).
        if !(1..=100).contains(&self.max_tries) {
            return Err("max_tries must be 1 to 100 (1 = no retries)".into());
        }
        if !(1..=86_400).contains(&self.try_timeout.as_secs()) {
            return Err("try_timeout_secs must be 1 to 86400 (a day)".into());
        }
        if !(1..=604_800).contains(&self.max_elapsed.as_secs()) {
            return Err("max_elapsed_secs must be 1 to 604800 (a week)".into());
        }
        if self.cap > Duration::from_secs(86_400) {
            return Err("max_delay_ms must be at most 86400000 (a day)".into());
        }
        if self.cap < self.base {
            return Err("max_delay_ms must not be below base_delay_ms".into());
        }
        Ok(())
    }
}

/// Why a failed try may be retried.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fault {
    /// Short and stable, e.g. `503 ServerBusy`, `timeout`, `connection reset`:
    /// the key retries are counted under.
    pub cause: String,
    /// The server's `Retry-After`: wait at least this long.
    pub retry_after: Option<Duration>,
}

impl Fault {
    pub fn new(cause: impl Into<String>) -> Fault {
        Fault {
            cause: cause.into(),
            retry_after: None,
        }
    }
}

/// Retries made, by cause.
#[derive(Debug, Default)]
pub struct RetryTally(Mutex<BTreeMap<String, u32>>);

impl RetryTally {
    pub fn record(&self, cause: &str) {
        if let Ok(mut m) = self.0.lock() {
            *m.entry(cause.to_string()).or_default() += 1;
        }
    }

    /// The counts so far, leaving the tally empty.
    pub fn take(&self) -> BTreeMap<String, u32> {
        self.0
            .lock()
            .map(|mut m| std::mem::take(&mut *m))
            .unwrap_or_default()
    }
}

/// Request tries an attempt sent and how many of them the service
/// throttled (429, 503 ServerBusy), over the whole attempt. `--parallel
/// auto` reads the counts each window: a throttled share above a few percent
/// means too many copies at once. Counted where each try's answer is
/// classified (the Azure request pipeline); local copies count nothing.
#[derive(Debug, Default)]
pub struct Load {
    requests: AtomicU64,
    throttled: AtomicU64,
}

impl Load {
    /// Request tries so far, throttled ones included.
    pub fn requests(&self) -> u64 {
        self.requests.load(Ordering::Relaxed)
    }

    /// Tries the service answered with a throttling status.
    pub fn throttled(&self) -> u64 {
        self.throttled.load(Ordering::Relaxed)
    }

    pub fn count(&self, throttled: bool) {
        self.requests.fetch_add(1, Ordering::Relaxed);
        if throttled {
            self.throttled.fetch_add(1, Ordering::Relaxed);
        }
    }
}

tokio::task_local! {
    /// The tally of the blob (or listing) the current task works for, so an
    /// HTTP pipeline deep inside the SDK can count its retries there.
    static TALLY: Arc<RetryTally>;
    /// The attempt's request counts, set only when something reads them
    /// (`--parallel auto`).
    static LOAD: Arc<Load>;
}

/// Runs `f` with `tally` as the current task's tally.
pub async fn counted<F: Future>(tally: Arc<RetryTally>, f: F) -> F::Output {
    TALLY.scope(tally, f).await
}

/// Runs `f` with `load` counting the current task's requests.
pub async fn measured<F: Future>(load: Arc<Load>, f: F) -> F::Output {
    LOAD.scope(load, f).await
}

/// Wraps `f` (about to be spawned) so it counts into the current tally and
/// load.
pub fn inherit<F: Future>(f: F) -> impl Future<Output = F::Output> {
    let tally = TALLY.try_with(Arc::clone).ok();
    let load = LOAD.try_with(Arc::clone).ok();
    async move {
        match (tally, load) {
            (Some(t), Some(l)) => TALLY.scope(t, LOAD.scope(l, f)).await,
            (Some(t), None) => TALLY.scope(t, f).await,
            (None, Some(l)) => LOAD.scope(l, f).await,
            (None, None) => f.await,
        }
    }
}

/// Counts a retry in the current task's tally, if it has one.
pub fn record(cause: &str) {
    let _ = TALLY.try_with(|t| t.record(cause));
}

/// Counts one request try (and whether it was throttled) in the current
/// task's load, if it has one.
pub fn record_request(throttled: bool) {
    let _ = LOAD.try_with(|l| l.count(throttled));
}

impl RetryPolicy {
    /// Upper bound of the wait before try `n + 1` (n = tries so far, from 1).
    pub fn ceiling(&self, n: u32) -> Duration {
        let exp = self
            .base
            .saturating_mul(1u32 << n.saturating_sub(1).min(20));
        exp.min(self.cap)
    }

    /// The jittered wait before try `n + 1`.
    pub fn delay(&self, n: u32) -> Duration {
        let ceil = self.ceiling(n).as_nanos() as u64;
        Duration::from_nanos(fastrand::u64(0..=ceil))
    }

    /// The wait before try `tries + 1` after `fault`, or `None` to give up:
    /// out of tries, or the wait would end past the time budget.
    pub fn next_wait(&self, tries: u32, elapsed: Duration, fault: &Fault) -> Option<Duration> {
        if tries >= self.max_tries {
            return None;
        }
        let wait = self.delay(tries).max(fault.retry_after.unwrap_or_default());
        (elapsed + wait < self.max_elapsed).then_some(wait)
    }

    /// Runs `op` until it succeeds, fails for good (`classify` says `None`),
    /// or runs out of tries or time. Each retry is counted in `tally`.
    /// Returns the result and the number of tries made.
    pub async fn run<T, E, F, Fut>(
        &self,
        classify: impl Fn(&E) -> Option<Fault>,
        tally: &RetryTally,
        mut op: F,
    ) -> (Result<T, E>, u32)
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, E>>,
    {
        let start = tokio::time::Instant::now();
        let mut tries = 0;
        loop {
            tries += 1;
            match op().await {
                Ok(v) => return (Ok(v), tries),
                Err(e) => {
                    let Some(fault) = classify(&e) else {
                        return (Err(e), tries);
                    };
                    let Some(wait) = self.next_wait(tries, start.elapsed(), &fault) else {
                        return (Err(e), tries);
                    };
                    tally.record(&fault.cause);
                    tokio::time::sleep(wait).await;
                }
            }
        }
    }

    /// [`RetryPolicy::run`] for blocking copy threads.
    pub fn run_blocking<T, E>(
        &self,
        classify: impl Fn(&E) -> Option<Fault>,
        tally: &RetryTally,
        mut op: impl FnMut() -> Result<T, E>,
    ) -> (Result<T, E>, u32) {
        let start = Instant::now();
        let mut tries = 0;
        loop {
            tries += 1;
            match op() {
                Ok(v) => return (Ok(v), tries),
                Err(e) => {
                    let Some(fault) = classify(&e) else {
                        return (Err(e), tries);
                    };
                    let Some(wait) = self.next_wait(tries, start.elapsed(), &fault) else {
                        return (Err(e), tries);
                    };
                    tally.record(&fault.cause);
                    std::thread::sleep(wait);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};

    fn policy(max_tries: u32, base_ms: u64, cap_ms: u64) -> RetryPolicy {
        RetryPolicy {
            max_tries,
            base: Duration::from_millis(base_ms),
            cap: Duration::from_millis(cap_ms),
            ..RetryPolicy::default()
        }
    }

    fn busy(_: &&str) -> Option<Fault> {
        Some(Fault::new("503 ServerBusy"))
    }

    #[test]
    fn ceiling_doubles_and_is_capped() {
        let p = policy(10, 100, 1000);
        assert_eq!(p.ceiling(1), Duration::from_millis(100));
        assert_eq!(p.ceiling(2), Duration::from_millis(200));
        assert_eq!(p.ceiling(4), Duration::from_millis(800));
        assert_eq!(p.ceiling(5), Duration::from_secs(1));
        for n in 1..8 {
            assert!(p.delay(n) <= p.ceiling(n));
        }
    }

    #[test]
    fn full_jitter_spreads_waits_over_the_whole_range() {
        let p = policy(10, 1000, 1000);
        let waits: Vec<Duration> = (0..2000).map(|_| p.delay(1)).collect();
        let low = waits
            .iter()
            .filter(|w| **w < Duration::from_millis(250))
            .count();
        let high = waits
            .iter()
            .filter(|w| **w > Duration::from_millis(750))
            .count();
        // Uniform: about 500 each; lockstep (no jitter) would put all in one.
        assert!(
            (350..650).contains(&low) && (350..650).contains(&high),
            "{low} {high}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn transient_errors_are_retried_up_to_max_tries_within_the_backoff_budget() {
        let p = policy(3, 1000, 10_000);
        let calls = AtomicU32::new(0);
        let tally = RetryTally::default();
        let start = tokio::time::Instant::now();
        let (res, tries) = p
            .run(busy, &tally, || async {
                calls.fetch_add(1, Ordering::SeqCst);
                Err::<(), _>("busy")
            })
            .await;
        assert_eq!(res, Err("busy"));
        assert_eq!((tries, calls.load(Ordering::SeqCst)), (3, 3));
        // Waits were at most 1 s + 2 s of virtual time.
        assert!(start.elapsed() <= Duration::from_secs(3));
        // Two retries (the third failure is not retried).
        assert_eq!(tally.take().get("503 ServerBusy"), Some(&2));
    }

    #[tokio::test(start_paused = true)]
    async fn permanent_errors_fail_after_one_try() {
        let p = RetryPolicy::default();
        let tally = RetryTally::default();
        let (res, tries) = p
            .run(|_: &&str| None, &tally, || async { Err::<(), _>("denied") })
            .await;
        assert_eq!((res, tries), (Err("denied"), 1));
        assert!(tally.take().is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn success_after_transient_failure_reports_tries() {
        let p = RetryPolicy::default();
        let calls = AtomicU32::new(0);
        let tally = RetryTally::default();
        let (res, tries) = p
            .run(busy, &tally, || async {
                if calls.fetch_add(1, Ordering::SeqCst) < 2 {
                    Err("busy")
                } else {
                    Ok(7)
                }
            })
            .await;
        assert_eq!((res, tries), (Ok(7), 3));
    }

    #[tokio::test(start_paused = true)]
    async fn retry_after_is_a_floor_on_the_wait() {
        // Backoff alone would wait at most 10 ms; the server asks for 30 s.
        let p = policy(2, 10, 10);
        let tally = RetryTally::default();
        let start = tokio::time::Instant::now();
        let calls = AtomicU32::new(0);
        let (res, _) = p
            .run(
                |_: &&str| {
                    Some(Fault {
                        cause: "503 ServerBusy".into(),
                        retry_after: Some(Duration::from_secs(30)),
                    })
                },
                &tally,
                || async {
                    if calls.fetch_add(1, Ordering::SeqCst) == 0 {
                        Err("busy")
                    } else {
                        Ok(())
                    }
                },
            )
            .await;
        assert_eq!(res, Ok(()));
        assert!(
            start.elapsed() >= Duration::from_secs(30),
            "{:?}",
            start.elapsed()
        );
    }

    #[tokio::test(start_paused = true)]
    async fn no_retry_starts_past_the_time_budget() {
        let p = RetryPolicy {
            max_elapsed: Duration::from_secs(5),
            ..policy(100, 1000, 1000)
        };
        let tally = RetryTally::default();
        let start = tokio::time::Instant::now();
        let (res, tries) = p.run(busy, &tally, || async { Err::<(), _>("busy") }).await;
        assert_eq!(res, Err("busy"));
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "{:?}",
            start.elapsed()
        );
        // 100 tries allowed, but each wait is up to 1 s within 5 s.
        assert!(tries > 1 && tries < 100, "{tries}");
        // A Retry-After beyond the budget means give up now.
        let long = Fault {
            cause: "429".into(),
            retry_after: Some(Duration::from_secs(60)),
        };
        assert_eq!(p.next_wait(1, Duration::ZERO, &long), None);
    }

    #[tokio::test]
    async fn the_task_tally_follows_spawned_work() {
        let tally = Arc::new(RetryTally::default());
        counted(tally.clone(), async {
            record("timeout");
            tokio::spawn(inherit(async { record("timeout") }))
                .await
                .unwrap();
            // Not inherited: counted nowhere.
            tokio::spawn(async { record("lost") }).await.unwrap();
        })
        .await;
        record("outside");
        let counts = tally.take();
        assert_eq!(counts.get("timeout"), Some(&2));
        assert_eq!(counts.len(), 1, "{counts:?}");
    }

    #[tokio::test]
    async fn the_task_load_follows_spawned_work_with_or_without_a_tally() {
        let load = Arc::new(Load::default());
        let tally = Arc::new(RetryTally::default());
        measured(load.clone(), async {
            record_request(false);
            counted(tally.clone(), async {
                tokio::spawn(inherit(async {
                    record_request(true);
                    record("503 ServerBusy");
                }))
                .await
                .unwrap();
            })
            .await;
            tokio::spawn(inherit(async { record_request(false) }))
                .await
                .unwrap();
            // Not inherited: counted nowhere.
            tokio::spawn(async { record_request(true) }).await.unwrap();
        })
        .await;
        record_request(true);
        assert_eq!((load.requests(), load.throttled()), (3, 1));
        assert_eq!(tally.take().get("503 ServerBusy"), Some(&1));
    }
}
