//! Plugin costs: cold compile vs cached load, instantiate + configure, and
//! `decide` calls per second (one instance per thread, as workers do).
//!
//! cargo run --release -p ferry-engine --example plugin_bench -- POLICY.wasm [CALLS]

use std::time::Instant;

use ferry_engine::plugin::{JobContext, PluginHost, PolicyPlugin};
use ferry_engine::store::{BlobMeta, BlobProps};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let path = args
        .next()
        .ok_or("usage: plugin_bench POLICY.wasm [CALLS]")?;
    let calls: u64 = args
        .next()
        .map(|c| c.parse())
        .transpose()?
        .unwrap_or(1_000_000);
    let cache = tempfile_dir()?;
    let host = PluginHost::get(Some(&cache))?;

    let t = Instant::now();
    let loaded = host.load(path.as_ref())?;
    let cold = t.elapsed();
    let t = Instant::now();
    let loaded_again = host.load(path.as_ref())?;
    let cached = t.elapsed();
    drop(loaded_again);

    let t = Instant::now();
    let plugin = PolicyPlugin::new(loaded, Vec::new())?;
    let first = t.elapsed();
    let t = Instant::now();
    let n_inst = 100;
    for _ in 0..n_inst {
        plugin.instance()?;
    }
    let per_instance = t.elapsed() / n_inst;

    let src = BlobMeta {
        name: "photos/2024/06/IMG_0001.jpg".into(),
        size: 4_000_000,
        modified: chrono::Utc::now(),
        etag: "\"0x8DC0000000000001\"".into(),
        md5: Some([7; 16]),
        props: Some(std::sync::Arc::new(BlobProps {
            content_type: Some("image/jpeg".into()),
            metadata: vec![
                ("camera".into(), "x100".into()),
                ("owner".into(), "ops".into()),
                ("year".into(), "2024".into()),
            ],
            ..Default::default()
        })),
        mode: None,
    };
    let dst = BlobMeta {
        size: 3_000_000,
        modified: src.modified - chrono::Duration::hours(1),
        ..src.clone()
    };
    let ctx = JobContext {
        job_id: "bench".into(),
        attempt: 1,
        source: "prod:photos".into(),
        destination: "backup:photos".into(),
    };

    let mut rates = Vec::new();
    for threads in [1usize, 2] {
        // One instance per thread, made before the clock starts.
        let rate = calls_per_sec(threads, calls, || {
            let mut inst = plugin.instance().map_err(|e| e.to_string())?;
            let (src, dst, ctx) = (&src, &dst, &ctx);
            Ok(move || {
                inst.decide(src, dst, ctx)
                    .map(|_| ())
                    .map_err(|e| e.to_string())
            })
        })?;
        rates.push((threads, rate));
    }
    // The path a job takes: workers lease pooled instances per call.
    let pooled = calls_per_sec(2, calls, || {
        let (plugin, src, dst, ctx) = (&plugin, &src, &dst, &ctx);
        Ok(move || {
            plugin
                .decide(src, dst, ctx)
                .map(|_| ())
                .map_err(|e| e.to_string())
        })
    })?;
    // Batches of 32, as workers ask (one `decide-batch` call per batch if
    // the plugin exports it); the rate counts decisions, not calls.
    const BATCH: usize = 32;
    let batched = calls_per_sec(1, calls / BATCH as u64, || {
        let (plugin, ctx) = (&plugin, &ctx);
        let pairs = vec![(&src, &dst); BATCH];
        Ok(move || {
            plugin
                .decide_all(&pairs, ctx)
                .into_iter()
                .try_for_each(|d| d.map(|_| ()).map_err(|e| e.to_string()))
        })
    })? * BATCH as f64;
    println!("plugin {path}");
    println!(
        "cold start: compile {:.1} ms; cached load {:.2} ms",
        cold.as_secs_f64() * 1e3,
        cached.as_secs_f64() * 1e3
    );
    println!(
        "first instance + configure {:.2} ms; then {:.1} us per instance + configure",
        first.as_secs_f64() * 1e3,
        per_instance.as_secs_f64() * 1e6
    );
    for (threads, rate) in rates {
        println!(
            "decide: {threads} thread(s), one instance each: {:.0} calls/s ({:.2} us/call/thread)",
            rate,
            threads as f64 * 1e6 / rate
        );
    }
    println!("decide: 2 threads leasing pooled instances: {pooled:.0} calls/s");
    println!(
        "decide_all, 1 thread, batches of {BATCH} ({}): {batched:.0} decisions/s ({:.2} us each)",
        if plugin.batches() {
            "one decide-batch call each"
        } else {
            "no decide-batch export: one decide each"
        },
        1e6 / batched
    );
    let _ = std::fs::remove_dir_all(&cache);
    Ok(())
}

/// Calls per second over `threads` threads, each making its caller with
/// `make` and calling it `calls` times.
fn calls_per_sec<M, C>(threads: usize, calls: u64, make: M) -> Result<f64, String>
where
    M: Fn() -> Result<C, String> + Sync,
    C: FnMut() -> Result<(), String> + Send,
{
    let callers = (0..threads)
        .map(|_| make())
        .collect::<Result<Vec<_>, _>>()?;
    let t = Instant::now();
    std::thread::scope(|s| -> Result<(), String> {
        let handles: Vec<_> = callers
            .into_iter()
            .map(|mut call| {
                s.spawn(move || -> Result<(), String> {
                    for _ in 0..calls {
                        call()?;
                    }
                    Ok(())
                })
            })
            .collect();
        for h in handles {
            h.join().map_err(|_| "thread panicked".to_string())??;
        }
        Ok(())
    })?;
    Ok(calls as f64 * threads as f64 / t.elapsed().as_secs_f64())
}

fn tempfile_dir() -> std::io::Result<std::path::PathBuf> {
    let d = std::env::temp_dir().join(format!("ferry-plugin-bench-{}", std::process::id()));
    std::fs::create_dir_all(&d)?;
    Ok(d)
}
