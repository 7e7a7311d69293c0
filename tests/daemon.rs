//! The daemon end to end: a schedule fires at a (controlled) time, its job
//! runs and completes, SIGTERM stops the daemon, a restart does not run the
//! fire again; overlapping fires are skipped with a reason; pause, resume
//! and cancel reach a running job through the control socket; failed jobs
//! are replayed with backoff; a job stopped by SIGTERM is picked up again.
//! The clock is set with FERRY_TEST_NOW (it then runs in real time), so no
//! test waits for a real schedule.

use std::time::{Duration, Instant};

use ferry_engine::testkit::{Azurite, DEV_ACCOUNT, DEV_KEY};
use serde_json::Value;

use crate::fault_proxy::{FaultProxy, Faults};
use crate::util::*;

/// Polls `f` every 50 ms until it returns Some, for at most `secs`.
fn wait_for<T>(secs: u64, what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn daemon(env: &Env, now: Option<&str>, extra: &[&str]) -> Running {
    let mut f = env.ferry();
    f.args(["daemon", "--quiet"]).args(extra);
    if let Some(t) = now {
        f.env("FERRY_TEST_NOW", t);
    }
    let d = f.spawn();
    // Up once the control socket answers.
    wait_for(60, "the daemon's socket", || {
        std::os::unix::net::UnixStream::connect(env.state.join("daemon.sock"))
            .ok()
            .map(|_| ())
    });
    d
}

/// SIGTERM, and the daemon must exit 0 within `secs`.
fn stop(d: Running, secs: u64) {
    d.signal(libc::SIGTERM);
    let out = d.wait_timeout(Duration::from_secs(secs));
    assert_eq!(out.code, Some(0), "{out:?}");
}

fn control_events(env: &Env) -> Vec<Value> {
    env.events(None)
        .into_iter()
        .filter(|e| e["job"] == "00000000-0000-0000-0000-000000000000")
        .collect()
}

fn state(env: &Env, job: &str) -> String {
    env.show_json(job)["state"].as_str().unwrap().to_string()
}

fn status(env: &Env) -> Value {
    let out = env.ferry().args(["status", "--json"]).run().success();
    serde_json::from_str(&out.stdout).unwrap()
}

/// Waits until the daemon runs `job` and its `attempt` has started.
fn running_attempt(env: &Env, job: &str, attempt: usize) {
    wait_for(60, "the job's attempt to start", || {
        let started = of_type(&env.events(Some(job)), "JobStarted").len();
        (status(env)["running"][0]["job"] == job && started == attempt).then_some(())
    });
}

/// A destination account behind a proxy that delays every request, so a
/// job runs long enough to be paused, cancelled or overlapped.
fn slow_remote(env: &Env, delay_ms: u64) -> FaultProxy {
    let azurite = Azurite::shared();
    let proxy = FaultProxy::start(
        &format!("http://127.0.0.1:{}", azurite.port),
        Faults {
            slow: 1.0,
            slow_for: Duration::from_millis(delay_ms),
            ..Faults::default()
        },
    );
    write(
        &env.state.join("ferry.toml"),
        format!(
            "[accounts.slow]\nconnection_string = \"AccountName={DEV_ACCOUNT};AccountKey={DEV_KEY};BlobEndpoint={}/{DEV_ACCOUNT}\"\n",
            proxy.base
        ),
    );
    proxy
}

fn files(env: &Env, n: usize) {
    for i in 0..n {
        write(&env.src.join(format!("f{i:04}.txt")), format!("file {i}"));
    }
}

#[test]
fn a_schedule_fires_its_job_runs_and_a_restart_does_not_run_it_again() {
    let env = Env::new();
    files(&env, 20);
    env.ferry()
        .args(["schedule", "add", "nightly", "0 30 23 * * Mon-Thu"])
        .arg(&env.src)
        .arg(&env.dst)
        .run()
        .success();
    let show = env
        .ferry()
        .args(["schedule", "show", "nightly", "--json"])
        .env("FERRY_TEST_NOW", "2026-11-27T12:00:00Z")
        .run()
        .success();
    let show: Value = serde_json::from_str(&show.stdout).unwrap();
    // From Friday noon: Mon, Tue, Wed, Thu, then Mon again.
    assert_eq!(
        show["next"],
        serde_json::json!([
            "2026-11-30T23:30:00Z",
            "2026-12-01T23:30:00Z",
            "2026-12-02T23:30:00Z",
            "2026-12-03T23:30:00Z",
            "2026-12-07T23:30:00Z"
        ])
    );

    // Two seconds before the schedule's first fire after now (real time): the
    // schedule was added now, so only fires after that are its own. (A fixed
    // date failed when the test ran later that evening.)
    let due = first_fire_after(chrono::Utc::now() + chrono::Duration::seconds(5));
    let at = |secs: i64| {
        (due + chrono::Duration::seconds(secs)).to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
    };
    let d = daemon(&env, Some(&at(-2)), &[]);
    let job = wait_for(60, "the scheduled job to succeed", || {
        let jobs = env.jobs_json();
        let j = jobs.first()?;
        (j["state"] == "succeeded").then(|| j["id"].as_str().unwrap().to_string())
    });
    assert_same_tree(&env.src, &env.dst);
    assert_eq!(env.show_json(&job)["schedule"], "nightly");
    stop(d, 15);

    // Restarted after the fire: nothing runs twice.
    let d = daemon(&env, Some(&at(5)), &[]);
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(
        env.jobs_json().len(),
        1,
        "the fire ran again after a restart"
    );
    stop(d, 15);
    let fired: Vec<Value> = control_events(&env)
        .into_iter()
        .filter(|e| ev_type(e) == "ScheduleFired")
        .collect();
    assert_eq!(fired.len(), 1);
    assert_eq!(ev_data(&fired[0])["due"], at(0));
    assert_eq!(ev_data(&fired[0])["job"], job.as_str());
    env.verify_log_ok(None);
}

/// The first Mon-Thu 23:30 UTC strictly after `t` (the schedule above).
fn first_fire_after(t: chrono::DateTime<chrono::Utc>) -> chrono::DateTime<chrono::Utc> {
    use chrono::{Datelike, TimeZone, Weekday};
    let mut day = t.date_naive();
    loop {
        let fire = chrono::Utc.from_utc_datetime(&day.and_hms_opt(23, 30, 0).unwrap());
        let weekday = day.weekday();
        if fire > t && !matches!(weekday, Weekday::Fri | Weekday::Sat | Weekday::Sun) {
            return fire;
        }
        day = day.succ_opt().unwrap();
    }
}

#[test]
fn an_overlapping_fire_is_skipped_with_a_reason() {
    let env = Env::new();
    let _proxy = slow_remote(&env, 40);
    files(&env, 60);
    let c = format!("overlap-{}", std::process::id());
    env.ferry()
        .args(["schedule", "add", "often", "* * * * * *", "--parallel", "1"])
        .arg(&env.src)
        .arg(format!("slow:{c}"))
        .run()
        .success();
    let d = daemon(&env, None, &["--jobs", "4"]);
    let skipped = wait_for(60, "a ScheduleSkipped", || {
        control_events(&env)
            .into_iter()
            .find(|e| ev_type(e) == "ScheduleSkipped")
    });
    let reason = ev_data(&skipped)["reason"].as_str().unwrap().to_string();
    assert!(reason.contains("still"), "{reason}");
    // Skip means one job at a time, however many fires passed.
    let running = status(&env)["running"].as_array().unwrap().len();
    assert!(running <= 1, "overlap skip ran {running} jobs at once");
    stop(d, 20);
}

#[test]
fn a_schedule_whose_source_is_gone_skips_its_fires_and_the_daemon_goes_on() {
    let env = Env::new();
    files(&env, 3);
    let gone = env.path("unmounted");
    make_tree(&gone, &[("f", b"x")]);
    for (name, src, dst) in [("nas", &gone, "d-nas"), ("fine", &env.src, "d-fine")] {
        env.ferry()
            .args(["schedule", "add", name, "* * * * * *"])
            .arg(src)
            .arg(env.path(dst))
            .run()
            .success();
    }
    std::fs::remove_dir_all(&gone).unwrap();
    let mut d = daemon(&env, None, &[]);
    let skipped = wait_for(60, "the gone source's fire skipped", || {
        control_events(&env)
            .into_iter()
            .find(|e| ev_type(e) == "ScheduleSkipped" && ev_data(e)["name"] == "nas")
    });
    let reason = ev_data(&skipped)["reason"].as_str().unwrap().to_string();
    assert!(reason.contains("does not exist"), "{reason}");
    // The other schedule's jobs run meanwhile, and the daemon stays up.
    wait_for(60, "the healthy schedule's job", || {
        env.jobs_json()
            .iter()
            .any(|j| j["state"] == "succeeded")
            .then_some(())
    });
    assert_same_tree(&env.src, &env.path("d-fine"));
    assert!(!d.has_exited(), "the daemon stopped");
    stop(d, 20);
    let nas_jobs = env
        .jobs_json()
        .into_iter()
        .filter(|j| j["schedule"] == "nas")
        .count();
    assert_eq!(nas_jobs, 0);
}

#[test]
fn pause_resume_and_cancel_reach_a_running_job() {
    let env = Env::new();
    let _proxy = slow_remote(&env, 30);
    files(&env, 300);
    let c = format!("ctl-{}", std::process::id());
    let d = daemon(&env, None, &["--jobs", "1"]);
    // Submitted through the daemon.
    let out = env
        .ferry()
        .args(["submit", "--parallel", "1"])
        .arg(&env.src)
        .arg(format!("slow:{c}"))
        .run()
        .success();
    let job = out.stdout.trim().to_string();
    // Its attempt started: a pause before `JobStarted` is also "running"
    // to the daemon but stops the start instead of interrupting a copy.
    running_attempt(&env, &job, 1);
    let out = env.ferry().args(["pause", &job, "--json"]).run().success();
    let paused: Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(paused["job"], job.as_str(), "{paused}");
    assert_eq!(
        (&paused["state"], &paused["was"]),
        (&"paused".into(), &"running".into())
    );
    assert!(paused["by"].as_str().unwrap().contains('@'), "{paused}");
    wait_for(60, "the pause", || {
        (state(&env, &job) == "paused" && status(&env)["running"].as_array()?.is_empty())
            .then_some(())
    });
    // A paused job is not started again by the daemon.
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(state(&env, &job), "paused");
    env.ferry().args(["resume", &job]).run().success();
    running_attempt(&env, &job, 2);
    // Resumed twice: it runs (the log alone reads it as interrupted).
    env.ferry()
        .args(["resume", &job])
        .run()
        .error(7, "is running under the daemon, not paused");
    env.ferry().args(["cancel", &job]).run().success();
    wait_for(60, "the cancel", || {
        (state(&env, &job) == "cancelled" && status(&env)["running"].as_array()?.is_empty())
            .then_some(())
    });
    // Cancelled for good: cancel again, resume and pause are refused.
    env.ferry()
        .args(["cancel", &job])
        .run()
        .error(7, "cancelled");
    env.ferry()
        .args(["resume", &job])
        .run()
        .error(7, "not paused");
    stop(d, 20);
    env.ferry()
        .args(["replay", &job])
        .run()
        .error(7, "cancelled");

    let events = env.events(Some(&job));
    let kinds: Vec<&str> = events.iter().map(ev_type).collect();
    for k in ["JobPaused", "JobResumed", "JobCancelled"] {
        assert!(kinds.contains(&k), "no {k}: {kinds:?}");
    }
    let reasons: Vec<&str> = of_type(&events, "JobInterrupted")
        .iter()
        .map(|e| ev_data(e)["reason"].as_str().unwrap())
        .collect();
    assert!(reasons[0].starts_with("paused by "), "{reasons:?}");
    assert!(reasons[1].starts_with("cancelled by "), "{reasons:?}");
    let by = ev_data(of_type(&events, "JobPaused")[0])["by"]
        .as_str()
        .unwrap();
    assert!(by.contains('@'), "{by}");
    env.verify_log_ok(Some(&job));
}

#[test]
fn a_failed_job_is_replayed_with_backoff_up_to_the_limit() {
    let env = Env::new();
    files(&env, 3);
    let gone = env.path("gone");
    std::fs::rename(&env.src, &gone).unwrap();
    // Submitted before the daemon starts, and the source removed before it
    // can list it: submitted through a running daemon, the first attempt
    // could copy the files before they were removed (it once did, on a
    // loaded machine) and the job succeed.
    let out = env
        .ferry()
        .arg("submit")
        .arg(&gone)
        .arg(&env.dst)
        .run()
        .success();
    let job = out.stdout.trim().to_string();
    std::fs::remove_dir_all(&gone).unwrap();
    let d = daemon(&env, None, &["--max-retries", "2", "--retry-delay", "0.2"]);
    wait_for(60, "three failed attempts", || {
        let s = env.show_json(&job);
        (s["attempts"].as_array()?.len() == 3 && s["state"] == "failed").then_some(())
    });
    // No fourth attempt.
    std::thread::sleep(Duration::from_millis(1200));
    stop(d, 15);
    let events = env.events(Some(&job));
    assert_eq!(of_type(&events, "JobStarted").len(), 3);
    let planned: Vec<u64> = of_type(&events, "JobRetryPlanned")
        .iter()
        .map(|e| ev_data(e)["retry"].as_u64().unwrap())
        .collect();
    assert_eq!(planned, vec![1, 2]);
}

#[test]
fn replay_beside_a_daemon_queues_the_job_and_the_daemon_replays_it() {
    let env = Env::new();
    files(&env, 3);
    let kept = env.path("kept");
    std::fs::rename(&env.src, &kept).unwrap();
    let job = env.submit(&kept, &env.dst);
    // Its first attempt fails by hand, outside any daemon (which would not
    // replay it on its own).
    let moved = env.path("moved");
    std::fs::rename(&kept, &moved).unwrap();
    assert_eq!(env.ferry().arg("run").run().code, Some(6));
    std::fs::rename(&moved, &kept).unwrap();
    assert_eq!(state(&env, &job), "failed");

    let d = daemon(&env, None, &[]);
    // Options of a run in this process are refused, not dropped.
    env.ferry()
        .args(["replay", &job, "--parallel", "2"])
        .run()
        .error(2, "--parallel applies to a replay run by this process");
    let out = env.ferry().args(["replay", &job[..8]]).run().success();
    assert!(
        out.stdout.contains("queued: the daemon replays it"),
        "{}",
        out.stdout
    );
    wait_for(60, "the replay to succeed", || {
        (state(&env, &job) == "succeeded").then_some(())
    });
    assert_eq!(std::fs::read_dir(&env.dst).unwrap().count(), 3);
    // Who asked is on the record; a succeeded job is not replayed again.
    let events = env.events(Some(&job));
    let asked = of_type(&events, "JobResumed");
    assert_eq!(asked.len(), 1, "{events:?}");
    assert!(ev_data(asked[0])["by"].as_str().unwrap().contains('@'));
    env.ferry()
        .args(["replay", &job])
        .run()
        .error(7, "already succeeded");
    // What still needs the state dir says a daemon holds it, and what to do.
    env.ferry()
        .arg("verify-log")
        .run()
        .error(3, "a ferry daemon holds state dir");
    let out = env.copy(&[]).run();
    assert_eq!(out.code, Some(3), "{out:?}");
    assert!(
        out.stderr.contains("`ferry submit` it for the daemon"),
        "{}",
        out.stderr
    );
    stop(d, 15);
}

#[test]
fn a_job_stopped_by_sigterm_is_picked_up_by_the_next_daemon() {
    let env = Env::new();
    let _proxy = slow_remote(&env, 30);
    files(&env, 200);
    let c = format!("pickup-{}", std::process::id());
    let d = daemon(&env, None, &["--jobs", "1"]);
    let out = env
        .ferry()
        .args(["submit", "--parallel", "2"])
        .arg(&env.src)
        .arg(format!("slow:{c}"))
        .run()
        .success();
    let job = out.stdout.trim().to_string();
    wait_for(60, "some progress", || {
        let s = status(&env);
        (s["running"][0]["totals"]["copied"].as_u64()? > 5).then_some(())
    });
    // Through the daemon, the running attempt reads as running, with time.
    let shown = env.ferry().args(["show", &job]).run().success().stdout;
    assert!(shown.contains("x2: running"), "{shown}");
    let listed = env.jobs_json();
    assert!(listed[0]["elapsed_ms"].as_i64().unwrap() > 0, "{listed:?}");
    let t = Instant::now();
    stop(d, 20);
    eprintln!("FIGURES daemon stop with a running job: {:?}", t.elapsed());
    assert_eq!(state(&env, &job), "interrupted");
    let d = daemon(&env, None, &["--jobs", "1"]);
    wait_for(60, "the job to finish", || {
        (state(&env, &job) == "succeeded").then_some(())
    });
    stop(d, 15);
    let events = env.events(Some(&job));
    assert_eq!(of_type(&events, "JobStarted").len(), 2);
    let copied = of_type(&events, "BlobCopied").len() + of_type(&events, "BlobSkipped").len();
    assert!(copied >= 200, "{copied}");
    env.verify_log_ok(Some(&job));
}

#[test]
fn a_second_signal_ends_the_daemon_at_once_and_the_next_resumes_its_job() {
    let env = Env::new();
    // Each request waits 3 s: the first signal cannot reach a blob boundary soon.
    let proxy = slow_remote(&env, 3000);
    files(&env, 6);
    let c = format!("twice-{}", std::process::id());
    let d = daemon(&env, None, &["--jobs", "1"]);
    let job = env
        .ferry()
        .args(["submit", "--parallel", "1"])
        .arg(&env.src)
        .arg(format!("slow:{c}"))
        .run()
        .success()
        .stdout
        .trim()
        .to_string();
    running_attempt(&env, &job, 1);
    d.signal(libc::SIGTERM);
    std::thread::sleep(Duration::from_millis(300));
    d.signal(libc::SIGTERM);
    let t = Instant::now();
    let out = d.wait_timeout(Duration::from_secs(20));
    assert_eq!(out.code, Some(0), "{out:?}");
    assert!(
        t.elapsed() < Duration::from_secs(2),
        "took {:?}",
        t.elapsed()
    );
    // The state dir is free at once, and the job was left as after a crash.
    assert_eq!(state(&env, &job), "interrupted");
    proxy.set_faults(Faults::default());
    let d = daemon(&env, None, &["--jobs", "1"]);
    wait_for(60, "the job to finish", || {
        (state(&env, &job) == "succeeded").then_some(())
    });
    stop(d, 15);
    env.verify_log_ok(Some(&job));
}

#[test]
fn events_and_export_through_the_daemon_match_the_local_ones_and_stream() {
    let env = Env::new();
    files(&env, 40);
    let job = env.copy(&[]).run().success().summary().job;
    let local_events = env
        .ferry()
        .args(["events", "--json"])
        .run()
        .success()
        .stdout;
    let local_export = env.path("local.jsonl");
    env.ferry()
        .args(["export", &job, "-o"])
        .arg(&local_export)
        .run()
        .success();
    let report = |format: &str| {
        env.ferry()
            .args(["report", &job, "--format", format])
            .run()
            .success()
            .stdout
    };
    let html = crate::plugins::shipped("html_report");
    let html = html.to_str().unwrap();
    let local_reports = [report("json"), report("markdown"), report(html)];
    assert!(
        local_reports[0].contains("\"copied\": 40"),
        "{}",
        local_reports[0]
    );

    let d = daemon(&env, None, &[]);
    // Reports are made here from what the daemon streams: the same text.
    assert_eq!(
        [report("json"), report("markdown"), report(html)],
        local_reports
    );
    // Checking a plugin needs no log either.
    let out = env.ferry().args(["plugin", "check", html]).run().success();
    assert!(out.stdout.contains("report-formatter"), "{}", out.stdout);
    env.ferry()
        .args(["report", "01a21c8e-0000-7000-8000-000000000000"])
        .run()
        .error(5, "no job");
    let out = env.ferry().args(["events", "--json"]).run().success();
    assert_eq!(out.stdout, local_events, "the same lines, in order");
    let filtered = env
        .ferry()
        .args(["events", &job, "--kind", "JobFinished"])
        .run()
        .success();
    assert_eq!(filtered.stdout.lines().count(), 1, "{}", filtered.stdout);
    let via_daemon = env.path("daemon.jsonl");
    env.ferry()
        .args(["export", &job, "-o"])
        .arg(&via_daemon)
        .run()
        .success();
    assert_eq!(
        std::fs::read(&via_daemon).unwrap(),
        std::fs::read(&local_export).unwrap(),
        "the header counts what follows; byte-identical to the local export"
    );
    // An unknown job is the usual one-line error with its code.
    env.ferry()
        .args(["events", "01a21c8e-0000-7000-8000-000000000000"])
        .run()
        .error(5, "no job");
    stop(d, 30);
}

#[test]
fn a_job_whose_plugin_changed_fails_on_the_record_and_the_daemon_goes_on() {
    let env = Env::new();
    files(&env, 3);
    let plugin = env.path("policy.wasm");
    std::fs::copy(crate::plugins::shipped("newer_or_bigger"), &plugin).unwrap();
    let policy = format!("plugin:{}", plugin.display());
    let submit = |dst: &str, extra: &[&str]| -> String {
        let out = env
            .ferry()
            .arg("submit")
            .arg(&env.src)
            .arg(env.path(dst))
            .args(extra)
            .run()
            .success();
        out.stdout.trim().to_string()
    };
    let changed = submit("a", &["--policy", &policy]);
    let plain = submit("b", &[]);
    // Another plugin under the same path: its hash is not the one recorded.
    std::fs::copy(crate::plugins::shipped("protect_prefix"), &plugin).unwrap();
    let d = daemon(&env, None, &["--max-retries", "1", "--retry-delay", "0.2"]);
    wait_for(60, "both jobs settled", || {
        let failed = env.show_json(&changed);
        (state(&env, &plain) == "succeeded"
            && failed["state"] == "failed"
            && failed["attempts"].as_array()?.len() == 2)
            .then_some(())
    });
    // The retry limit holds: it was started from the queue over and over
    // (thousands of times a second) before.
    std::thread::sleep(Duration::from_millis(1200));
    stop(d, 15);
    let events = env.events(Some(&changed));
    assert_eq!(of_type(&events, "JobStarted").len(), 2);
    let finished = of_type(&events, "JobFinished");
    let why = ev_data(finished[0])["outcome"]["message"].as_str().unwrap();
    assert!(why.contains("changed since the job was submitted"), "{why}");
}

#[test]
fn a_container_url_cannot_be_scheduled_and_its_submit_says_the_sas_is_not_kept() {
    let env = Env::new();
    files(&env, 1);
    let url =
        "http://127.0.0.1:9/devstoreaccount1/photos?sv=2022-11-02&sr=c&sp=rl&sig=c2lnbmF0dXJl";
    env.ferry()
        .args(["schedule", "add", "nightly", "0 0 1 * * *"])
        .arg(url)
        .arg(&env.dst)
        .run()
        .error(2, "ferry never stores a SAS");
    let out = env
        .ferry()
        .args(["schedule", "list", "--json"])
        .run()
        .success();
    assert!(!out.stdout.contains("nightly"), "{}", out.stdout);
    let out = env
        .ferry()
        .arg("submit")
        .arg(url)
        .arg(&env.dst)
        .run()
        .success();
    assert!(
        out.stderr.contains("the SAS is not stored"),
        "{}",
        out.stderr
    );
    assert!(!out.stderr.contains("c2lnbmF0dXJl"), "{}", out.stderr);
    // Through a daemon, which could never run it, it is refused.
    let d = daemon(&env, None, &[]);
    env.ferry()
        .arg("submit")
        .arg(url)
        .arg(&env.dst)
        .run()
        .error(2, "ferry never stores a SAS");
    stop(d, 15);
}
