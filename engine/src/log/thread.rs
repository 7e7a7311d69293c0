//! What the log writer reads about its own thread (Linux): its CPU time and
//! the time it waited for a core.

use std::fs::File;
use std::os::unix::fs::FileExt;

/// CPU time consumed by the calling thread so far.
pub(super) fn cpu_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes into the timespec we own.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    if rc == 0 {
        ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
    } else {
        0
    }
}

/// Reads the time this thread spent runnable but waiting for a core
/// (`/proc/thread-self/schedstat`, second field), so `--stats` can tell a
/// writer that is slow from one that is kept off the CPU.
pub(super) struct RunQueueClock(Option<File>);

impl RunQueueClock {
    /// Opens the calling thread's schedstat; it must be read from this thread.
    pub(super) fn open() -> Self {
        RunQueueClock(File::open("/proc/thread-self/schedstat").ok())
    }

    /// Before the thread opens its own.
    pub(super) fn none() -> Self {
        RunQueueClock(None)
    }

    /// Nanoseconds waited for a core so far; 0 where the kernel does not say.
    pub(super) fn waited_ns(&self) -> u64 {
        let Some(f) = &self.0 else { return 0 };
        let mut buf = [0u8; 96];
        let n = f.read_at(&mut buf, 0).unwrap_or(0);
        std::str::from_utf8(&buf[..n])
            .ok()
            .and_then(|s| s.split_whitespace().nth(1))
            .and_then(|w| w.parse().ok())
            .unwrap_or(0)
    }
}
