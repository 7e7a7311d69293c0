//! Crash loop: one job (local -> Azurite, through a slowing proxy that
//! counts the bytes sent) is killed with SIGKILL 20 times at random
//! moments and replayed after each. At the end the destination verifies,
//! every attempt's events are one gap-free run, cached projections equal a
//! fresh fold, and large blobs resumed from their staged blocks (re-sent
//! bytes are measured and printed as FIGURES for docs/OPERATIONS.md).

use std::time::{Duration, Instant};

use ferry_engine::testkit::{Azurite, DEV_ACCOUNT, DEV_KEY};

use crate::fault_proxy::{FaultProxy, Faults};
use crate::util::*;

const KILLS: usize = 20;
const SMALL: usize = 600;
const LARGE: usize = 4;
const LARGE_SIZE: usize = 3 << 20;

fn tree(root: &std::path::Path) -> u64 {
    let mut total = 0;
    for i in 0..SMALL {
        let data: Vec<u8> = (0..2048 + i).map(|j| ((i * 13 + j) % 251) as u8).collect();
        total += data.len() as u64;
        write(&root.join(format!("small/{i:03}.bin")), data);
    }
    for i in 0..LARGE {
        let data: Vec<u8> = (0..LARGE_SIZE)
            .map(|j| ((i * 7 + j / 3) % 253) as u8)
            .collect();
        total += data.len() as u64;
        write(&root.join(format!("large/{i}.bin")), data);
    }
    total
}

/// Which phase the log shows the job was in when it was killed.
fn phase(events: &[serde_json::Value], attempt: u64) -> &'static str {
    let mine: Vec<&serde_json::Value> = events
        .iter()
        .filter(|e| attempt_of(e, events) == attempt)
        .collect();
    let listed = mine.iter().any(|e| ev_type(e) == "ListingCompleted");
    let blobs = mine
        .iter()
        .filter(|e| ev_type(e).starts_with("Blob"))
        .count();
    match (listed, blobs) {
        (_, 0) => "starting or listing",
        (false, _) => "listing while copying",
        (true, _) if mine.iter().any(|e| ev_type(e) == "JobFinished") => "final events",
        _ => "copying",
    }
}

/// The attempt an event belongs to: the latest JobStarted at or before it.
fn attempt_of(e: &serde_json::Value, events: &[serde_json::Value]) -> u64 {
    let seq = e["seq"].as_u64().unwrap();
    events
        .iter()
        .filter(|x| ev_type(x) == "JobStarted" && x["seq"].as_u64().unwrap() <= seq)
        .map(|x| ev_data(x)["attempt"].as_u64().unwrap())
        .next_back()
        .unwrap_or(0)
}

#[test]
fn twenty_kills_then_replays_lose_nothing_and_resume_large_blobs_from_blocks() {
    let azurite = Azurite::shared();
    let upstream = format!("http://127.0.0.1:{}", azurite.port);
    // Every request 40 ms late: a run takes a few seconds, so kills land
    // in every phase.
    let proxy = FaultProxy::start(
        &upstream,
        Faults {
            slow: 1.0,
            slow_for: Duration::from_millis(40),
            ..Faults::default()
        },
    );
    let env = Env::new();
    let cs = |endpoint: &str| {
        format!(
            "AccountName={DEV_ACCOUNT};AccountKey={DEV_KEY};BlobEndpoint={endpoint}/{DEV_ACCOUNT}"
        )
    };
    write(
        &env.state.join("ferry.toml"),
        format!(
            "[accounts.dev]\nconnection_string = \"{}\"\n\n[accounts.slow]\nconnection_string = \"{}\"\n",
            cs(&upstream),
            cs(&proxy.base)
        ),
    );
    let total = tree(&env.src);
    let container = format!("crash-{}", std::process::id());
    let out = env
        .ferry()
        .args(["submit", "--block-size", "256K", "--parallel", "4"])
        .arg(&env.src)
        .arg(format!("slow:{container}"))
        .run()
        .success();
    let job = out.stdout.trim().to_string();

    let mut rng = fastrand::Rng::with_seed(0x5eed);
    let mut phases = std::collections::BTreeMap::<&str, u32>::new();
    let mut kills = 0;
    let mut runs = 0;
    while kills < KILLS {
        let mut f = env.ferry();
        if runs == 0 {
            f.args(["run", "--quiet"]);
        } else {
            f.args(["replay", "--quiet", &job]);
        }
        runs += 1;
        let mut running = f.spawn();
        // Every fourth kill early (start-up, listing), the rest anywhere.
        let wait = if kills % 4 == 0 {
            rng.u64(10..80)
        } else {
            rng.u64(100..700)
        };
        let until = Instant::now() + Duration::from_millis(wait);
        while Instant::now() < until && !running.has_exited() {
            std::thread::sleep(Duration::from_millis(2));
        }
        if running.has_exited() {
            // Finished before the kill: the job is done, nothing left to kill.
            let out = running.wait();
            assert_eq!(out.code, Some(0), "{out:?}");
            break;
        }
        let out = running.kill();
        assert_eq!(out.signal, Some(libc::SIGKILL), "{out:?}");
        kills += 1;
        let events = env.events(Some(&job));
        let attempt = events.iter().filter(|e| ev_type(e) == "JobStarted").count() as u64;
        *phases.entry(phase(&events, attempt)).or_default() += 1;
        // The log is consistent after every kill, not only at the end.
        env.verify_log_ok(Some(&job));
    }
    assert_eq!(kills, KILLS, "the job finished after {kills} kills");
    env.ferry()
        .args(["replay", "--quiet", &job])
        .run()
        .success();

    // The destination verifies: download it directly and compare bytes.
    let down = env.download(&container, &[]);
    assert_eq!(assert_same_files(&env.src, &down), SMALL + LARGE);

    // Each attempt is one gap-free run of sequence numbers, opened by its
    // JobStarted; the cached projections equal a fresh fold.
    let events = env.events(Some(&job));
    let seqs: Vec<u64> = events.iter().map(|e| e["seq"].as_u64().unwrap()).collect();
    assert_eq!(seqs, (0..seqs.len() as u64).collect::<Vec<_>>());
    let starts: Vec<u64> = events
        .iter()
        .filter(|e| ev_type(e) == "JobStarted")
        .map(|e| ev_data(e)["attempt"].as_u64().unwrap())
        .collect();
    assert_eq!(starts, (1..=starts.len() as u64).collect::<Vec<_>>());
    env.verify_log_ok(Some(&job));
    let show = env.show_json(&job);
    assert_eq!(show["state"], "succeeded", "{show}");

    // Bytes that reached the service (a body cut off by the kill never
    // does), so "re-sent" is data the service received twice.
    let sent = proxy.counts.body_bytes("PUT");
    let resent = sent.saturating_sub(total);
    let blocks = proxy
        .counts
        .block_puts
        .load(std::sync::atomic::Ordering::Relaxed);
    let needed = (LARGE * LARGE_SIZE.div_ceil(256 << 10)) as u64;
    eprintln!(
        "FIGURES crash loop: {kills} kills over {} attempts, phases {phases:?}; source {total} bytes, sent {sent} bytes, re-sent {resent} ({:.2}% of the source); Put Block {blocks} for {needed} blocks",
        starts.len(),
        100.0 * resent as f64 / total as f64
    );
    // Restarting large blobs from scratch after each kill would re-send
    // several MiB per kill; resuming from staged blocks re-sends at most
    // the blocks in flight.
    assert!(
        resent < total / 2,
        "re-sent {resent} of {total} bytes: large blobs did not resume from their blocks"
    );
}
