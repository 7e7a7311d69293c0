//! Retries with exponential backoff and full jitter (each wait is uniform in
//! `0..=min(cap, base * 2^n)`), so many workers hitting the same fault do not
//! retry in lockstep.

use std::future::Future;
use std::time::Duration;

/// How often and how long to retry transient failures.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Tries in total, including the first.
    pub max_tries: u32,
    pub base: Duration,
    pub cap: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_tries: 4,
            base: Duration::from_millis(50),
            cap: Duration::from_secs(5),
        }
    }
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

    /// Runs `op` until it succeeds, fails permanently, or runs out of tries.
    /// Returns the result and the number of tries made.
    pub async fn run<T, E, F, Fut>(
        &self,
        is_transient: impl Fn(&E) -> bool,
        mut op: F,
    ) -> (Result<T, E>, u32)
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, E>>,
    {
        let mut tries = 0;
        loop {
            tries += 1;
            match op().await {
                Ok(v) => return (Ok(v), tries),
                Err(e) if tries < self.max_tries && is_transient(&e) => {
                    tokio::time::sleep(self.delay(tries)).await;
                }
                Err(e) => return (Err(e), tries),
            }
        }
    }

    /// [`RetryPolicy::run`] for blocking copy threads.
    pub fn run_blocking<T, E>(
        &self,
        is_transient: impl Fn(&E) -> bool,
        mut op: impl FnMut() -> Result<T, E>,
    ) -> (Result<T, E>, u32) {
        let mut tries = 0;
        loop {
            tries += 1;
            match op() {
                Ok(v) => return (Ok(v), tries),
                Err(e) if tries < self.max_tries && is_transient(&e) => {
                    std::thread::sleep(self.delay(tries))
                }
                Err(e) => return (Err(e), tries),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};

    #[test]
    fn ceiling_doubles_and_is_capped() {
        let p = RetryPolicy {
            max_tries: 10,
            base: Duration::from_millis(100),
            cap: Duration::from_secs(1),
        };
        assert_eq!(p.ceiling(1), Duration::from_millis(100));
        assert_eq!(p.ceiling(2), Duration::from_millis(200));
        assert_eq!(p.ceiling(4), Duration::from_millis(800));
        assert_eq!(p.ceiling(5), Duration::from_secs(1));
        for n in 1..8 {
            assert!(p.delay(n) <= p.ceiling(n));
        }
    }

    #[tokio::test(start_paused = true)]
    async fn transient_errors_are_retried_up_to_max_tries_within_the_backoff_budget() {
        let p = RetryPolicy {
            max_tries: 3,
            base: Duration::from_secs(1),
            cap: Duration::from_secs(10),
        };
        let calls = AtomicU32::new(0);
        let start = tokio::time::Instant::now();
        let (res, tries) = p
            .run(
                |_: &&str| true,
                || async {
                    calls.fetch_add(1, Ordering::SeqCst);
                    Err::<(), _>("busy")
                },
            )
            .await;
        assert_eq!(res, Err("busy"));
        assert_eq!((tries, calls.load(Ordering::SeqCst)), (3, 3));
        // Waits were at most 1 s + 2 s of virtual time.
        assert!(start.elapsed() <= Duration::from_secs(3));
    }

    #[tokio::test(start_paused = true)]
    async fn permanent_errors_fail_after_one_try() {
        let p = RetryPolicy::default();
        let (res, tries) = p
            .run(|_: &&str| false, || async { Err::<(), _>("denied") })
            .await;
        assert_eq!((res, tries), (Err("denied"), 1));
    }

    #[tokio::test(start_paused = true)]
    async fn success_after_transient_failure_reports_tries() {
        let p = RetryPolicy::default();
        let calls = AtomicU32::new(0);
        let (res, tries) = p
            .run(
                |_: &&str| true,
                || async {
                    if calls.fetch_add(1, Ordering::SeqCst) < 2 {
                        Err("busy")
                    } else {
                        Ok(7)
                    }
                },
            )
            .await;
        assert_eq!((res, tries), (Ok(7), 3));
    }
}
