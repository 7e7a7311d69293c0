//! The log writer's cost per blob outcome, alone: `cargo bench -p
//! ferry-engine --bench log_writer [-- BLOBS [PRODUCERS [WORK_US]]]`.
//!
//! Producer threads append `BlobCopied` outcomes as copy threads do (each
//! takes the next place from a shared counter, so outcomes reach the writer
//! slightly out of order), then the writer's own counters are printed: CPU
//! per event is what issue 8's "the log is never the bottleneck" target
//! turns on, without the copies' noise around it.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use ferry_engine::event::{CopyMethod, CopyReason, Event};
use ferry_engine::job::{Address, JobId, JobSpec, Mode};
use ferry_engine::log::EventLog;

fn main() {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    let blobs: u64 = args.first().and_then(|a| a.parse().ok()).unwrap_or(100_000);
    let producers: u64 = args.get(1).and_then(|a| a.parse().ok()).unwrap_or(16);
    // CPU each producer spends per outcome first, as a copy would: without
    // it the queue stays full and the writer spends its time waking
    // producers, which copies never make it do.
    let work =
        std::time::Duration::from_micros(args.get(2).and_then(|a| a.parse().ok()).unwrap_or(20));
    let dir = tempfile::Builder::new()
        .prefix("ferry-writer-bench")
        .tempdir_in(std::env::var_os("BENCH_DIR").unwrap_or_else(|| "/dev/shm".into()))
        .or_else(|_| tempfile::tempdir())
        .expect("temp dir");
    let log = EventLog::open(dir.path()).expect("open log");
    let job = JobId::new();
    let spec = JobSpec {
        src: Address::Local {
            path: "/src".into(),
        },
        dst: Address::Local {
            path: "/dst".into(),
        },
        mode: Mode::Incremental,
        parallel: None,
        block_size: None,
        copy_method: Default::default(),
        policy_plugin: None,
        plugin_failure: Default::default(),
        mounts: Vec::new(),
        check_md5: Default::default(),
    };
    log.append_durable_blocking(
        job,
        Event::JobSubmitted {
            spec: Box::new(spec),
            schedule: None,
        },
    )
    .expect("submit");
    log.append_durable_blocking(
        job,
        Event::JobStarted {
            attempt: 1,
            worker: "bench:1".into(),
            parallelism: producers as u32,
            plugin_sha256: None,
        },
    )
    .expect("start");
    let next = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let threads: Vec<_> = (0..producers)
        .map(|_| {
            let (log, next) = (log.clone(), next.clone());
            std::thread::spawn(move || loop {
                let spin = Instant::now();
                while spin.elapsed() < work {
                    std::hint::spin_loop();
                }
                let place = next.fetch_add(1, Ordering::Relaxed);
                if place >= blobs {
                    break;
                }
                let event = Event::BlobCopied {
                    name: format!("d{:03}/f{place:07}.bin", place / 500),
                    bytes: 4096,
                    src_etag: format!("18ebd0222e1f{place:04x}-1000"),
                    reason: CopyReason::New,
                    method: CopyMethod::LocalFile,
                    ms: 0,
                    tries: 1,
                    detail: None,
                    retries: Default::default(),
                };
                log.append_outcome_blocking(job, event, place)
                    .expect("append");
            })
        })
        .collect();
    for t in threads {
        t.join().expect("producer");
    }
    tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime")
        .block_on(log.sync())
        .expect("sync");
    let wall = started.elapsed().as_secs_f64();
    let s = log.writer_stats();
    let events = s.events.load(Ordering::Relaxed);
    let cpu = s.cpu_ns.load(Ordering::Relaxed) as f64 / 1e9;
    let busy = s.busy_ns.load(Ordering::Relaxed) as f64 / 1e9;
    println!(
        "{blobs} outcomes from {producers} producers: writer CPU {:.3} s ({:.2} µs per event), busy {busy:.3} s (flusher thread {:.3} s), {} batches, {} keyed, wall {wall:.3} s",
        cpu,
        cpu * 1e6 / events as f64,
        s.flush_ns.load(Ordering::Relaxed) as f64 / 1e9,
        s.batches.load(Ordering::Relaxed),
        s.keyed.load(Ordering::Relaxed),
    );
    if let Some(stat) = writer_schedstat() {
        println!("writer schedstat (run ns, runqueue wait ns, slices): {stat}");
    }
    log.close();
}

/// The writer thread's line of `/proc/self/task/TID/schedstat`.
fn writer_schedstat() -> Option<String> {
    for task in std::fs::read_dir("/proc/self/task").ok()? {
        let path = task.ok()?.path();
        let comm = std::fs::read_to_string(path.join("comm")).ok()?;
        if comm.trim() == "ferry-log-write" {
            return std::fs::read_to_string(path.join("schedstat"))
                .ok()
                .map(|s| s.trim().to_string());
        }
    }
    None
}
