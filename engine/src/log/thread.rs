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

/// How far above the copy threads the log's threads ask to be scheduled.
///
/// An outcome reaches the disk through one serial path: the writer, sled's
/// I/O pool and the flusher. At equal priority the writer is one of ~18
/// runnable threads on a 2-core machine and waits for a core every time it
/// wakes (28 of its 35 busy points on 10k local small files); and it
/// sleeps on sled's pool queue lock while the pool thread holding it waits
/// behind copy threads (14 ms at a time, `perf` of its context switches).
/// Raised by 10, the writer's waits for a core fell from 20-35 ms to 3-7 ms
/// per 10k-file copy on tmpfs. What the rest of the machine gives up is
/// these threads' CPU, ~10% of one core at most.
const RAISE_BY: i32 = 10;

/// How far above the rest of the log's threads the writer asks to run.
/// It wakes them (sled's pool wakes all 7 idle threads for each segment
/// write) and, at its own level, they took the core from it mid-batch:
/// 5 more cut its busy share on tmpfs from ~18% to ~13% of wall (medians
/// of 6), its CPU being ~10%.
const WRITER_ABOVE: i32 = 5;

/// The log threads' scheduling priority, as `--stats` reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WriterPriority {
    /// Raised from the process's nice value: the log's threads to `to`,
    /// the writer to `writer` (above them where allowed).
    Raised { from: i32, to: i32, writer: i32 },
    /// Left at the nice value ferry was started with (positive: someone
    /// asked ferry to yield, the log included).
    LeftNiced { nice: i32 },
    /// The system refused (no `CAP_SYS_NICE`, and `RLIMIT_NICE` does not
    /// allow it): the log runs at the process's nice value.
    Refused { nice: i32 },
    /// The nice value could not be read.
    Unknown,
}

impl std::fmt::Display for WriterPriority {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            WriterPriority::Raised { from, to, writer } => write!(
                f,
                "nice {writer} (raised from {from}; sled's and the flusher threads nice {to})"
            ),
            WriterPriority::LeftNiced { nice } => {
                write!(f, "nice {nice} (as ferry was started; not raised)")
            }
            WriterPriority::Refused { nice } => write!(
                f,
                "nice {nice} (raising it needs CAP_SYS_NICE or an RLIMIT_NICE that allows it)"
            ),
            WriterPriority::Unknown => write!(f, "nice unknown"),
        }
    }
}

/// The calling thread's nice value (Linux keeps one per thread, and a new
/// thread starts with its creator's).
fn own_nice() -> Option<i32> {
    // SAFETY: gettid takes no arguments; getpriority reads a value the
    // kernel owns. getpriority may return -1 as a real value, so errno is
    // cleared first and checked after.
    unsafe {
        let tid = libc::gettid() as libc::id_t;
        *libc::__errno_location() = 0;
        let nice = libc::getpriority(libc::PRIO_PROCESS, tid);
        (*libc::__errno_location() == 0).then_some(nice)
    }
}

fn set_own_nice(nice: i32) -> bool {
    // SAFETY: setpriority on this thread's own id; no memory is passed.
    let rc = unsafe {
        libc::setpriority(
            libc::PRIO_PROCESS,
            libc::gettid() as libc::id_t,
            nice as libc::c_int,
        )
    };
    rc == 0 && own_nice() == Some(nice)
}

/// The calling thread raised `RAISE_BY` above what it had, until dropped:
/// threads it starts meanwhile (sled's, the writer, the flusher) keep the
/// raised priority. Someone who started ferry niced keeps their choice.
/// Never fails: without the privilege nothing changes and
/// [`Raised::priority`] says so.
pub(super) struct Raised {
    priority: WriterPriority,
}

impl Raised {
    pub(super) fn new() -> Self {
        let priority = match own_nice() {
            None => WriterPriority::Unknown,
            Some(from) if from > 0 => WriterPriority::LeftNiced { nice: from },
            Some(from) => {
                let to = (from - RAISE_BY).max(-20);
                if set_own_nice(to) {
                    WriterPriority::Raised {
                        from,
                        to,
                        writer: to,
                    }
                } else {
                    WriterPriority::Refused { nice: from }
                }
            }
        };
        Raised { priority }
    }

    pub(super) fn priority(&self) -> WriterPriority {
        self.priority
    }
}

impl Drop for Raised {
    fn drop(&mut self) {
        if let WriterPriority::Raised { from, .. } = self.priority {
            // Lowering a priority back needs no privilege.
            if !set_own_nice(from) {
                tracing::warn!("could not lower this thread back to nice {from}");
            }
        }
    }
}

/// Raises the calling thread (the writer, started from a raised thread)
/// `WRITER_ABOVE` further, when the log's threads were raised; the answer
/// is what `--stats` reports.
pub(super) fn raise_writer(log: WriterPriority) -> WriterPriority {
    match log {
        WriterPriority::Raised { from, to, .. } => {
            let want = (to - WRITER_ABOVE).max(-20);
            let writer = if set_own_nice(want) { want } else { to };
            WriterPriority::Raised { from, to, writer }
        }
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs `f` on a thread of its own, so no test leaves a nice value on
    /// a thread the harness reuses.
    fn on_own_thread<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
        std::thread::spawn(f).join().expect("test thread")
    }

    #[test]
    fn given_a_thread_at_the_default_priority_when_raised_then_threads_it_starts_run_higher_and_the_writer_higher_still(
    ) {
        let (before, priority, started, writer, during, after) = on_own_thread(|| {
            let before = own_nice();
            let raised = Raised::new();
            let during = own_nice();
            let started = std::thread::spawn(own_nice).join().expect("child");
            let priority = raised.priority();
            let writer = std::thread::spawn(move || (raise_writer(priority), own_nice()))
                .join()
                .expect("writer");
            drop(raised);
            (before, priority, started, writer, during, own_nice())
        });
        let before = before.expect("Linux reports a thread's nice value");
        assert!(before <= 0, "the test runs niced ({before}); cannot check");
        match priority {
            WriterPriority::Raised {
                from,
                to,
                writer: w,
            } => {
                assert_eq!((from, w), (before, to));
                assert_eq!(to, (before - RAISE_BY).max(-20));
                assert_eq!(during, Some(to), "the kernel's value is the one reported");
                assert_eq!(started, Some(to), "a thread started meanwhile inherits it");
                let above = (to - WRITER_ABOVE).max(-20);
                assert_eq!(
                    writer,
                    (
                        WriterPriority::Raised {
                            from,
                            to,
                            writer: above
                        },
                        Some(above)
                    )
                );
            }
            WriterPriority::Refused { nice } => {
                assert_eq!(nice, before);
                assert_eq!((during, started), (Some(before), Some(before)));
                assert_eq!(writer, (priority, Some(before)), "not raised alone either");
            }
            other => panic!("unexpected answer {other:?}"),
        }
        assert_eq!(
            after,
            Some(before),
            "dropping the guard restores the thread"
        );
    }

    #[test]
    fn given_ferry_started_niced_when_raised_then_the_nice_value_holds() {
        let (priority, during) = on_own_thread(|| {
            // Anyone may lower their own priority.
            assert!(set_own_nice(5));
            let raised = Raised::new();
            (raised.priority(), own_nice())
        });
        assert_eq!(priority, WriterPriority::LeftNiced { nice: 5 });
        assert_eq!(during, Some(5));
    }
}
