//! `--parallel auto` end to end: against Azurite behind the fault proxy
//! playing a service at capacity (503 ServerBusy to every request beyond K
//! in flight), it backs off from its start of 8 x cores to about K and still
//! copies every blob; on local folders it copies like a fixed run; submit
//! records it and `run`/`show` honour it.

use std::path::Path;
use std::sync::atomic::Ordering;

use ferry_engine::testkit::{Azurite, DEV_ACCOUNT, DEV_KEY};

use crate::fault_proxy::{FaultProxy, Faults};
use crate::util::*;

/// Files the throttled upload copies.
const FILES: u32 = 3000;

/// `parallel auto: started S, settled T (min A, max B), N changes`.
#[derive(Debug)]
struct AutoLine {
    started: u64,
    settled: u64,
    min: u64,
    max: u64,
    changes: u64,
}

fn auto_line(stderr: &str) -> AutoLine {
    let line = stderr
        .lines()
        .find(|l| l.starts_with("parallel auto: "))
        .unwrap_or_else(|| panic!("no `parallel auto:` line in stderr: {stderr}"));
    let n: Vec<u64> = line
        .split(|c: char| !c.is_ascii_digit())
        .filter(|s| !s.is_empty())
        .map(|s| s.parse().unwrap())
        .collect();
    assert_eq!(n.len(), 5, "{line}");
    assert!(
        line.starts_with(&format!(
            "parallel auto: started {}, settled {} (min {}, max {}), {} change",
            n[0], n[1], n[2], n[3], n[4]
        )),
        "{line}"
    );
    AutoLine {
        started: n[0],
        settled: n[1],
        min: n[2],
        max: n[3],
        changes: n[4],
    }
}

/// `n` files of 2-4 KiB in 20 folders.
fn small_tree(root: &Path, n: u32) {
    for i in 0..n {
        let size = 2048 + (i as usize * 37) % 2048;
        let data: Vec<u8> = (0..size).map(|j| ((i as usize + j) % 251) as u8).collect();
        write(&root.join(format!("d{:02}/f{i:04}.bin", i % 20)), data);
    }
}

#[test]
fn auto_backs_off_from_a_service_that_answers_503_above_k_in_flight_and_copies_every_blob() {
    let azurite = Azurite::shared();
    let upstream = format!("http://127.0.0.1:{}", azurite.port);
    let proxy = FaultProxy::start(&upstream, Faults::default());
    let start = 8 * cores() as u64;
    // Well below the start, so auto must come down to it.
    let k = (start / 2).max(2);
    proxy.set_concurrency_limit(k);
    let env = Env::new();
    let cs = |endpoint: &str| {
        format!(
            "AccountName={DEV_ACCOUNT};AccountKey={DEV_KEY};BlobEndpoint={endpoint}/{DEV_ACCOUNT}"
        )
    };
    // Quick retries: a request turned away is retried within milliseconds,
    // as a real client would under ServerBusy without a hint.
    let config = format!(
        "[accounts.dev]\nconnection_string = \"{}\"\n\n[accounts.busy]\nconnection_string = \"{}\"\n\n[retry]\nmax_tries = 20\nbase_delay_ms = 20\nmax_delay_ms = 300\n",
        cs(&upstream),
        cs(&proxy.base),
    );
    write(&env.state.join("ferry.toml"), config);
    // Enough for a few seconds of copying: time to come down and probe.
    small_tree(&env.src, FILES);
    let container = format!("auto-{}", std::process::id());

    let out = env
        .ferry()
        .args(["copy", "--parallel", "auto", "--stats"])
        .arg(&env.src)
        .arg(format!("busy:{container}"))
        // Each change of level, for the figures below.
        .env("RUST_LOG", "warn,ferry_engine::transfer=debug")
        .run()
        .success();
    let summary = out.summary();
    assert_eq!(
        (summary.copied, summary.failed),
        (FILES as u64, 0),
        "{out:?}"
    );
    let auto = auto_line(&out.stderr);
    let peak = proxy.counts.peak_in_flight.load(Ordering::SeqCst);
    let turned_away = proxy.counts.injected().get("over_limit").copied();
    let requests = proxy.counts.requests.load(Ordering::SeqCst);
    let changes: Vec<&str> = out
        .stderr
        .lines()
        .filter(|l| l.contains("parallel auto: "))
        .collect();
    eprintln!(
        "FIGURES parallel auto vs a limit of {k}: {auto:?}, {requests} requests, {turned_away:?} turned away, peak in flight {peak}\n{}",
        changes.join("\n")
    );
    assert_eq!(auto.started, start);
    assert!(
        turned_away.unwrap_or(0) > 0,
        "the service never pushed back"
    );
    // It came down to the limit or below it, and ended near it, not back
    // at the start.
    assert!(auto.min <= k, "{auto:?} (limit {k})");
    assert!(auto.changes >= 2, "{auto:?}");
    assert!(auto.max <= start, "probed above the start: {auto:?}");
    assert!(
        auto.settled <= k + k / 4 + 1 && auto.settled >= 1,
        "{auto:?} (limit {k})"
    );
    let show = env.show_json(&summary.job);
    assert_eq!(show["attempts"][0]["parallelism"], start, "{show}");
    assert!(
        show["retries_by_cause"]
            .as_object()
            .is_some_and(|c| c.contains_key("503 ServerBusy")),
        "{show}"
    );

    // Every blob arrived intact: copy the container back directly.
    proxy.set_concurrency_limit(0);
    let down = env.download(&container, &[]);
    assert_eq!(assert_same_files(&env.src, &down), FILES as usize);
    env.verify_log_ok(None);
}

#[test]
fn auto_is_recorded_by_submit_honoured_by_run_and_copies_local_folders() {
    let env = Env::new();
    small_tree(&env.src, 2000);
    let submitted = env
        .ferry()
        .args(["submit", "--quiet", "--parallel", "auto"])
        .arg(&env.src)
        .arg(&env.dst)
        .run()
        .success();
    assert_eq!(submitted.stdout.trim().len(), 36, "the id: {submitted:?}");
    let jobs = env.jobs_json();
    let job = jobs[0]["id"].as_str().unwrap().to_string();
    // The spec records auto as parallel 0 (never a valid number of copies).
    assert_eq!(ev_data(&env.events(Some(&job))[0])["spec"]["parallel"], 0);
    let show = env.ferry().args(["show", &job]).run().success();
    assert!(show.stdout.contains("parallel  auto"), "{}", show.stdout);

    let out = env.ferry().args(["run", "--stats"]).run().success();
    assert_eq!(out.summary().copied, 2000);
    let auto = auto_line(&out.stderr);
    assert_eq!(auto.started, 8 * cores() as u64);
    assert!(
        auto.min >= 1 && auto.max <= 256.max(auto.started),
        "{auto:?}"
    );
    assert_same_tree(&env.src, &env.dst);

    // A fixed --parallel for the run wins over the job's auto.
    env.ferry()
        .args(["submit", "--quiet", "--parallel", "auto"])
        .arg(&env.src)
        .arg(env.path("third"))
        .run()
        .success();
    let fixed = env
        .ferry()
        .args(["run", "--stats", "--parallel", "3"])
        .run()
        .success();
    assert!(!fixed.stderr.contains("parallel auto"), "{}", fixed.stderr);
    let last = fixed.summary().job;
    assert_eq!(env.show_json(&last)["attempts"][0]["parallelism"], 3);
    assert_same_tree(&env.src, &env.path("third"));
}
