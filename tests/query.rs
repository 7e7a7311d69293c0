//! `jobs`, `show`, `events`, `export` and `report`: what a user learns
//! about jobs, with the filters, sorting and bounds of each.

use std::fs;
use std::time::Duration;

use crate::util::*;

/// A job with 2 copied (3 bytes), 1 skipped and 2 failed blobs.
fn job_with_failures(env: &Env) -> String {
    make_tree(
        &env.src,
        &[
            ("ok1", b"1"),
            ("ok2", b"22"),
            ("old", b"o"),
            ("bad1", b"x"),
            ("bad2", b"y"),
        ],
    );
    make_tree(
        &env.dst,
        &[("old", b"newer"), ("bad1/in", b""), ("bad2/in", b"")],
    );
    set_mtime(&env.src.join("old"), 1_500_000_000, 0);
    env.copy(&[]).run().code(1).summary().job
}

#[test]
fn jobs_lists_id_state_counts_and_bytes() {
    let env = Env::new();
    let failed = job_with_failures(&env);
    let src2 = env.path("src2");
    make_tree(&src2, &[("big", &[1u8; 2048])]);
    let ok = env
        .ferry()
        .arg("copy")
        .arg(&src2)
        .arg(env.path("dst2"))
        .run()
        .success()
        .summary()
        .job;

    let jobs = env.jobs_json();
    assert_eq!(jobs.len(), 2);
    assert_eq!(jobs[0]["id"], failed.as_str(), "jobs are not oldest first");
    assert_eq!(jobs[1]["id"], ok.as_str());
    let f = &jobs[0];
    assert_eq!(f["state"], "completed-with-failures");
    assert_eq!(
        [
            &f["copied"],
            &f["copied_bytes"],
            &f["skipped"],
            &f["failed"]
        ]
        .map(|v| v.as_u64().unwrap()),
        [2, 3, 1, 2]
    );
    assert_eq!(f["attempts"].as_array().unwrap().len(), 1);
    assert_eq!(f["spec"]["src"]["local"]["path"], env.src.to_str().unwrap());
    let o = &jobs[1];
    assert_eq!(o["state"], "succeeded");
    assert_eq!(
        [
            &o["copied"],
            &o["copied_bytes"],
            &o["skipped"],
            &o["failed"]
        ]
        .map(|v| v.as_u64().unwrap()),
        [1, 2048, 0, 0]
    );

    let text = env.ferry().arg("jobs").run().success().stdout;
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 3, "{text}");
    assert!(
        lines[0].starts_with("ID") && lines[0].contains("STATE") && lines[0].contains("BYTES"),
        "{text}"
    );
    let cols: Vec<&str> = lines[1].split_whitespace().collect();
    assert_eq!(
        &cols[..5],
        [failed.as_str(), "completed-with-failures", "2", "1", "2"],
        "{text}"
    );
    let cols: Vec<&str> = lines[2].split_whitespace().collect();
    assert_eq!(
        &cols[..5],
        [ok.as_str(), "succeeded", "1", "0", "0"],
        "{text}"
    );
    assert!(lines[2].contains("2.00 KiB"), "{text}");
    assert!(
        lines[2].contains(&format!("{} -> ", src2.display())),
        "{text}"
    );
}

#[test]
fn jobs_on_an_empty_state_dir_prints_an_empty_list() {
    let env = Env::new();
    assert!(env.jobs_json().is_empty());
    let text = env.ferry().arg("jobs").run().success().stdout;
    assert_eq!(text.lines().count(), 1, "only the header expected: {text}");
}

#[test]
fn a_state_dir_that_does_not_exist_is_not_made_by_reading_it() {
    let env = Env::new();
    let typo = env.path("stat");
    let at = |args: &[&str]| {
        let mut f = env.ferry_no_state();
        f.arg("--state").arg(&typo).args(args);
        f.run()
    };
    let out = at(&["jobs"]).success();
    assert!(out.stderr.contains("no ferry log in"), "{}", out.stderr);
    assert_eq!(at(&["jobs", "--json"]).success().stdout.trim(), "[]");
    at(&["events"]).success();
    let status = at(&["status", "--json"]).success();
    let status: serde_json::Value = serde_json::from_str(&status.stdout).unwrap();
    assert_eq!(status["daemon"], "stopped");
    at(&["show", "01a2"]).error(5, "there is no ferry log in");
    at(&["replay", "01a2"]).error(5, "check --state or FERRY_HOME");
    assert!(!typo.exists(), "a read made the state dir");
}

#[test]
fn show_gives_spec_attempts_and_failed_blobs_with_reasons() {
    let env = Env::new();
    let job = job_with_failures(&env);
    let v = env.show_json(&job);
    assert_eq!(v["id"], job.as_str());
    assert_eq!(v["state"], "completed-with-failures");
    assert_eq!(v["spec"]["mode"], "incremental");
    assert_eq!(v["spec"]["dst"]["local"]["path"], env.dst.to_str().unwrap());
    let attempts = v["attempts"].as_array().unwrap();
    assert_eq!(attempts.len(), 1);
    let a = &attempts[0];
    assert_eq!(a["attempt"], 1);
    assert_eq!(a["parallelism"], 8 * cores() as u64);
    assert_eq!(a["listing_completed"], true);
    assert_eq!(a["totals"]["listed"], 5);
    assert_eq!(a["totals"]["failed"], 2);
    assert!(
        a["outcome"]
            .as_str()
            .unwrap()
            .contains("completed with failures"),
        "{a}"
    );
    assert!(a["ended_at"].is_string());
    assert_eq!(v["failures_total"], 2);
    let failures = v["failures"].as_array().unwrap();
    let names: Vec<&str> = failures
        .iter()
        .map(|f| f["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["bad1", "bad2"]);
    for f in failures {
        assert_eq!(f["error_kind"], "destination-conflict", "{f}");
        assert!(
            f["message"].as_str().unwrap().contains("Is a directory"),
            "{f}"
        );
    }

    // --failures N limits the list, not the total.
    let out = env
        .ferry()
        .args(["show", &job, "--json", "--failures", "1"])
        .run()
        .success();
    let limited: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(limited["failures"].as_array().unwrap().len(), 1);
    assert_eq!(limited["failures_total"], 2);

    let text = env.ferry().args(["show", &job]).run().success().stdout;
    for needle in [
        format!("job       {job}"),
        "state     completed-with-failures".to_string(),
        format!("source    {}", env.src.display()),
        format!("dest      {}", env.dst.display()),
        "mode      incremental".to_string(),
        "failed blobs (2):".to_string(),
        "\"bad1\" [destination-conflict]".to_string(),
        "\"bad2\" [destination-conflict]".to_string(),
        "attempt 1 on ".to_string(),
    ] {
        assert!(text.contains(&needle), "show lacks {needle:?}:\n{text}");
    }
    let text = env
        .ferry()
        .args(["show", &job, "--failures", "1"])
        .run()
        .success()
        .stdout;
    assert!(text.contains("1 more (--failures 0 lists all)"), "{text}");
}

#[test]
fn show_after_a_successful_replay_lists_no_failures_and_both_attempts() {
    let env = Env::new();
    let job = job_with_failures(&env);
    fs::remove_dir_all(env.dst.join("bad1")).unwrap();
    fs::remove_dir_all(env.dst.join("bad2")).unwrap();
    env.ferry().args(["replay", &job]).run().success();
    let v = env.show_json(&job);
    assert_eq!(v["state"], "succeeded");
    assert_eq!(v["failed"], 0);
    assert_eq!(v["failures_total"], 0);
    assert_eq!(v["copied"], 4);
    let attempts = v["attempts"].as_array().unwrap();
    assert_eq!(
        attempts
            .iter()
            .map(|a| a["attempt"].as_u64().unwrap())
            .collect::<Vec<_>>(),
        [1, 2]
    );
    assert_eq!(attempts[1]["totals"]["copied"], 2);
    assert_eq!(
        attempts[1]["totals"]["resumed"], 3,
        "ok1, ok2 and old were done in attempt 1"
    );
    let text = env.ferry().args(["show", &job]).run().success().stdout;
    assert!(!text.contains("failed blobs"), "{text}");
}

#[test]
fn show_accepts_a_unique_prefix_of_the_id() {
    let env = Env::new();
    make_tree(&env.src, &[("a", b"1")]);
    let job = env.copy_ok(&[]);
    for prefix in [&job[..8], &job[..13], &job.replace('-', "")[..20]] {
        let v = env.show_json(prefix);
        assert_eq!(v["id"], job.as_str(), "prefix {prefix}");
    }
    let upper = job.to_uppercase();
    assert_eq!(env.show_json(&upper)["id"], job.as_str());
}

// ------------------------------------------------- jobs: filters and sorting

/// Job ids in listing order, comparable with an array of expected ids.
#[derive(Debug, Default)]
struct Ids(Vec<String>);

impl std::ops::Deref for Ids {
    type Target = Vec<String>;
    fn deref(&self) -> &Vec<String> {
        &self.0
    }
}

impl<const N: usize> PartialEq<[&String; N]> for Ids {
    fn eq(&self, other: &[&String; N]) -> bool {
        self.0.iter().eq(other.iter().copied())
    }
}

/// The ids `ferry jobs --json ARGS` lists, in its order.
fn job_ids(env: &Env, args: &[&str]) -> Ids {
    let out = env
        .ferry()
        .args(["jobs", "--json"])
        .args(args)
        .run()
        .success();
    let v: serde_json::Value = serde_json::from_str(&out.stdout)
        .unwrap_or_else(|e| panic!("jobs --json {args:?}: {e}\n{}", out.stdout));
    let ids = v
        .as_array()
        .unwrap_or_else(|| panic!("not an array: {v}"))
        .iter()
        .map(|j| j["id"].as_str().unwrap().to_string())
        .collect::<Vec<_>>();
    Ids(ids)
}

/// Submits SRC -> DST (a folder made with one file) and returns the job id.
fn submit(env: &Env, name: &str) -> String {
    let src = env.path(name);
    make_tree(&src, &[("f", b"f")]);
    let out = env
        .ferry()
        .arg("submit")
        .arg(&src)
        .arg(env.path(&format!("{name}-out")))
        .run()
        .success();
    out.stdout.trim().to_string()
}

/// Six jobs, one per state a user can filter on, submitted in this order:
/// completed-with-failures (2 copied, 3 bytes), succeeded (1 copied, 2048
/// bytes), failed, paused, cancelled, queued.
struct Mix {
    cwf: String,
    ok: String,
    failed: String,
    paused: String,
    cancelled: String,
    queued: String,
}

fn mix(env: &Env) -> Mix {
    let cwf = job_with_failures(env);
    let src2 = env.path("src2");
    make_tree(&src2, &[("big", &[1u8; 2048])]);
    let ok = env
        .ferry()
        .arg("copy")
        .arg(&src2)
        .arg(env.path("dst2"))
        .run()
        .success()
        .summary()
        .job;
    // Its source vanishes before it runs: the job fails as a whole.
    let failed = submit(env, "gone");
    fs::remove_dir_all(env.path("gone")).unwrap();
    env.ferry().arg("run").run().code(6);
    let paused = submit(env, "p");
    env.ferry().args(["pause", &paused]).run().success();
    let cancelled = submit(env, "c");
    env.ferry().args(["cancel", &cancelled]).run().success();
    let queued = submit(env, "q");
    Mix {
        cwf,
        ok,
        failed,
        paused,
        cancelled,
        queued,
    }
}

#[test]
fn jobs_filters_by_status_and_sorts_limits_and_reverses() {
    let env = Env::new();
    let m = mix(&env);
    let all = [&m.cwf, &m.ok, &m.failed, &m.paused, &m.cancelled, &m.queued];
    assert_eq!(job_ids(&env, &[]), all, "default: oldest first");

    // --status, repeatable or comma-separated, any case.
    assert_eq!(job_ids(&env, &["--status", "succeeded"]), [&m.ok]);
    assert_eq!(
        job_ids(&env, &["--status", "failed", "--status", "paused"]),
        [&m.failed, &m.paused]
    );
    assert_eq!(
        job_ids(&env, &["--status", "queued,Cancelled"]),
        [&m.cancelled, &m.queued]
    );
    assert_eq!(
        job_ids(&env, &["--status", "completed-with-failures"]),
        [&m.cwf]
    );
    assert!(job_ids(&env, &["--status", "running"]).is_empty());
    assert!(job_ids(&env, &["--status", "interrupted"]).is_empty());
    // The table is filtered the same way.
    let text = env
        .ferry()
        .args(["jobs", "--status", "paused"])
        .run()
        .success()
        .stdout;
    assert_eq!(text.lines().count(), 2, "{text}");
    assert!(
        text.lines().nth(1).unwrap().starts_with(&m.paused),
        "{text}"
    );

    // Sorting: ties keep submission order, also reversed.
    assert_eq!(
        job_ids(&env, &["--sort", "submitted", "--reverse"]),
        [&m.queued, &m.cancelled, &m.paused, &m.failed, &m.ok, &m.cwf]
    );
    assert_eq!(
        job_ids(&env, &["--sort", "copied", "--reverse"]),
        [&m.cwf, &m.ok, &m.failed, &m.paused, &m.cancelled, &m.queued]
    );
    assert_eq!(
        job_ids(&env, &["--sort", "bytes"]),
        [&m.failed, &m.paused, &m.cancelled, &m.queued, &m.cwf, &m.ok]
    );
    assert_eq!(
        job_ids(&env, &["--sort", "state"]),
        [&m.queued, &m.ok, &m.cwf, &m.failed, &m.paused, &m.cancelled]
    );
    // Jobs that never ran have no elapsed time and come first.
    let by_elapsed = env
        .ferry()
        .args(["jobs", "--json", "--sort", "elapsed"])
        .run()
        .success();
    let by_elapsed: Vec<serde_json::Value> = serde_json::from_str(&by_elapsed.stdout).unwrap();
    let ids: Vec<&str> = by_elapsed
        .iter()
        .map(|j| j["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids[..3], [&m.paused, &m.cancelled, &m.queued]);
    let ms: Vec<i64> = by_elapsed[3..]
        .iter()
        .map(|j| j["elapsed_ms"].as_i64().unwrap())
        .collect();
    assert!(ms.windows(2).all(|w| w[0] <= w[1]), "{ms:?}");

    // --limit cuts after sorting; filters, sort and limit combine.
    assert_eq!(job_ids(&env, &["--limit", "2"]), [&m.cwf, &m.ok]);
    assert_eq!(
        job_ids(&env, &["--sort", "bytes", "--reverse", "--limit", "1"]),
        [&m.ok]
    );
    assert_eq!(
        job_ids(
            &env,
            &[
                "--status",
                "paused,queued,failed",
                "--reverse",
                "--limit",
                "2"
            ]
        ),
        [&m.queued, &m.paused]
    );
    let text = env
        .ferry()
        .args(["jobs", "--limit", "3"])
        .run()
        .success()
        .stdout;
    assert_eq!(text.lines().count(), 4, "{text}");
}

#[test]
fn jobs_bad_filter_values_are_one_line_errors_naming_the_flag() {
    let env = Env::new();
    make_tree(&env.src, &[("a", b"1")]);
    env.copy_ok(&[]);
    for (args, needle) in [
        (&["--status", "done"][..], "--status \"done\""),
        (&["--status", "succeeded,nope"], "--status \"nope\""),
        (&["--since", "yesterday"], "--since \"yesterday\""),
        (&["--until", "3x"], "--until \"3x\""),
        (&["--since", "2026-02-30"], "--since"),
        (&["--since", "1h", "--until", "2h"], "--since"),
        (&["--sort", "size"], "--sort \"size\""),
        (&["--limit", "0"], "--limit"),
        (&["--limit", "-1"], "--limit"),
        (&["--limit", "many"], "--limit"),
    ] {
        let out = env.ferry().arg("jobs").args(args).run().error(2, needle);
        assert!(out.stdout.is_empty(), "{args:?} printed: {}", out.stdout);
    }
    // `--state` is the state dir: a state name there is taken for a
    // mistaken filter rather than creating a state dir called `failed`.
    env.ferry_no_state()
        .args(["jobs", "--state", "failed"])
        .run()
        .error(2, "--status failed");
    assert!(!env.path("failed").exists());
    // The states are named in the error.
    env.ferry()
        .args(["jobs", "--status", "done"])
        .run()
        .error(2, "completed-with-failures");
}

#[test]
fn jobs_since_and_until_take_rfc3339_dates_and_ages() {
    let env = Env::new();
    let a = submit(&env, "a");
    let b = submit(&env, "b");
    let jobs = env.jobs_json();
    let b_at = jobs[1]["submitted_at"].as_str().unwrap().to_string();
    assert!(
        jobs[0]["submitted_at"].as_str().unwrap() < b_at.as_str(),
        "{jobs:?}"
    );
    // --since is inclusive, --until exclusive.
    assert_eq!(job_ids(&env, &["--since", &b_at]), [&b]);
    assert_eq!(job_ids(&env, &["--until", &b_at]), [&a]);
    assert_eq!(job_ids(&env, &["--since", "1h"]), [&a, &b]);
    assert_eq!(
        job_ids(&env, &["--since", "90m", "--until", "2099-01-01"]),
        [&a, &b]
    );
    assert!(job_ids(&env, &["--until", "1h"]).is_empty());
    assert!(job_ids(&env, &["--until", "7d"]).is_empty());
    assert_eq!(job_ids(&env, &["--since", "2000-01-01"]), [&a, &b]);
    assert!(job_ids(&env, &["--until", "2000-01-01"]).is_empty());
    let tomorrow = (chrono::Utc::now() + chrono::Duration::days(1))
        .format("%Y-%m-%d")
        .to_string();
    assert!(job_ids(&env, &["--since", &tomorrow]).is_empty());
    assert_eq!(job_ids(&env, &["--until", &tomorrow]), [&a, &b]);
    // An RFC 3339 time in another zone is the same instant.
    let b_time = chrono::DateTime::parse_from_rfc3339(&b_at).unwrap();
    let b_paris = b_time
        .with_timezone(&chrono::FixedOffset::east_opt(3600).unwrap())
        .to_rfc3339_opts(chrono::SecondsFormat::Nanos, false);
    assert_eq!(job_ids(&env, &["--since", &b_paris]), [&b]);
}

#[test]
fn jobs_account_filter_matches_source_or_destination_accounts_not_local_paths_alone() {
    let env = Env::new();
    fs::create_dir(env.path("nas")).unwrap();
    write(
        &env.state.join("ferry.toml"),
        format!(
            "[accounts.prod]\nconnection_string = \"UseDevelopmentStorage=true\"\n\
             [accounts.backup]\nconnection_string = \"UseDevelopmentStorage=true\"\n\
             [accounts.nas]\nlocal = \"{}\"\n",
            env.path("nas").display()
        ),
    );
    make_tree(&env.src, &[("a", b"1")]);
    let sub = |src: &str, dst: &str| -> String {
        env.ferry()
            .args(["submit", src, dst])
            .run()
            .success()
            .stdout
            .trim()
            .to_string()
    };
    let src = env.src.to_str().unwrap();
    let up = sub(src, "prod:photos/2024");
    // (Both names are one emulator account: another container.)
    let across = sub("prod:photos", "backup:archive");
    let url = sub(src, "https://acct9.blob.core.windows.net/c");
    let to_nas = sub(src, "nas:copies");
    let local = sub(src, env.dst.to_str().unwrap());
    assert_eq!(job_ids(&env, &[]).len(), 5);
    assert_eq!(job_ids(&env, &["--account", "prod"]), [&up, &across]);
    assert_eq!(job_ids(&env, &["--account", "backup"]), [&across]);
    assert_eq!(job_ids(&env, &["--account", "acct9"]), [&url]);
    // A local account matches the jobs that named it.
    assert_eq!(job_ids(&env, &["--account", "nas"]), [&to_nas]);
    assert!(job_ids(&env, &["--account", "prodx"]).is_empty());
    assert!(
        job_ids(&env, &["--account", src]).is_empty(),
        "a local path is not an account ({local})"
    );
    assert_eq!(
        job_ids(&env, &["--account", "prod", "--reverse", "--limit", "1"]),
        [&across]
    );
    // Hand-submitted jobs have no schedule.
    assert!(job_ids(&env, &["--schedule", "nightly"]).is_empty());
}

/// While the daemon holds the state dir, jobs, show, events and export go
/// through its socket and the filters still apply; --schedule finds the
/// jobs a schedule submitted.
#[test]
fn filters_apply_to_answers_from_the_daemon_and_schedule_finds_its_jobs() {
    let env = Env::new();
    make_tree(&env.src, &[("a", b"1"), ("b", b"22")]);
    let hand = env.copy_ok(&[]);
    env.ferry()
        .args(["schedule", "add", "every-second", "* * * * * *"])
        .arg(&env.src)
        .arg(env.path("sched-dst"))
        .run()
        .success();
    let daemon = env.ferry().args(["daemon", "--quiet"]).spawn();
    let sock = env.state.join("daemon.sock");
    wait_until(Duration::from_secs(20), "the daemon's socket", || {
        std::os::unix::net::UnixStream::connect(&sock).is_ok()
    });
    let mut fired = Ids::default();
    wait_until(Duration::from_secs(20), "a scheduled job succeeded", || {
        fired = job_ids(
            &env,
            &["--schedule", "every-second", "--status", "succeeded"],
        );
        !fired.is_empty()
    });
    let job = fired[0].clone();
    assert!(!fired.contains(&hand));
    assert!(job_ids(&env, &["--schedule", "other"]).is_empty());
    assert_eq!(job_ids(&env, &["--limit", "1"]), [&hand]);
    env.ferry()
        .args(["jobs", "--status", "nope"])
        .run()
        .error(2, "--status");

    let text = env.ferry().args(["show", &job]).run().success().stdout;
    assert!(text.contains("schedule  every-second"), "{text}");
    assert!(text.contains("policy    built-in (incremental)"), "{text}");

    let out = env
        .ferry()
        .args(["events", &job, "--json", "--kind", "jobfinished,BlobCopied"])
        .run()
        .success();
    let evs = parse_json_lines(&out.stdout);
    let kinds: Vec<&str> = evs.iter().map(ev_type).collect();
    assert_eq!(
        kinds,
        ["BlobCopied", "BlobCopied", "JobFinished"],
        "{kinds:?}"
    );
    let out = env
        .ferry()
        .args(["events", &job, "--json", "--since", "2"])
        .run()
        .success();
    let evs = parse_json_lines(&out.stdout);
    assert!(!evs.is_empty() && evs.iter().all(|e| e["seq"].as_u64().unwrap() >= 2));
    assert_eq!(evs[0]["seq"], 2);

    let file = env.path("via-daemon.jsonl");
    env.ferry()
        .args(["export", &job, "-o"])
        .arg(&file)
        .run()
        .success();
    let lines = parse_json_lines(&fs::read_to_string(&file).unwrap());
    assert_eq!(lines[0]["job"], job.as_str());
    // The header, the events, the checksum line.
    assert_eq!(lines[0]["events"], (lines.len() - 2) as u64);
    assert!(lines.last().unwrap()["ferry_export_sha256"].is_string());
    env.ferry()
        .args(["export", &job, "-o"])
        .arg(&file)
        .run()
        .error(2, "--force");

    daemon.signal(libc::SIGTERM);
    let out = daemon.wait_timeout(Duration::from_secs(20));
    assert_eq!(out.code, Some(0), "{out:?}");
}

// ------------------------------------------------------------------ show

#[test]
fn show_lists_each_attempt_with_worker_times_counts_throughput_and_retries() {
    let env = Env::new();
    let job = job_with_failures(&env);
    fs::remove_dir_all(env.dst.join("bad1")).unwrap();
    fs::remove_dir_all(env.dst.join("bad2")).unwrap();
    env.ferry().args(["replay", &job]).run().success();
    let v = env.show_json(&job);
    assert_eq!(
        v["policy"],
        serde_json::json!({"kind": "built-in", "mode": "incremental"})
    );
    let attempts = v["attempts"].as_array().unwrap();
    assert_eq!(attempts.len(), 2);
    let mut workers = Vec::new();
    for (a, (copied, bytes, skipped, failed)) in attempts.iter().zip([(2, 3, 1, 2), (2, 2, 0, 0)]) {
        let t = &a["totals"];
        assert_eq!(
            [
                &t["copied"],
                &t["copied_bytes"],
                &t["skipped"],
                &t["failed"]
            ]
            .map(|v| v.as_u64().unwrap()),
            [copied, bytes, skipped, failed],
            "{a}"
        );
        assert_eq!(t["retries"], 0, "{a}");
        let worker = a["worker"].as_str().unwrap();
        let (host, pid) = worker.rsplit_once(':').unwrap();
        assert!(!host.is_empty() && pid.parse::<u32>().is_ok(), "{worker}");
        workers.push(worker.to_string());
        let start =
            chrono::DateTime::parse_from_rfc3339(a["started_at"].as_str().unwrap()).unwrap();
        let end = chrono::DateTime::parse_from_rfc3339(a["ended_at"].as_str().unwrap()).unwrap();
        let ms = (end - start).num_milliseconds();
        assert_eq!(a["duration_ms"], ms, "{a}");
        assert_eq!(
            a["bytes_per_sec"].as_u64().unwrap(),
            bytes * 1000 / ms.max(1) as u64,
            "{a}"
        );
    }
    assert_ne!(workers[0], workers[1], "two processes ran the two attempts");

    let text = env.ferry().args(["show", &job]).run().success().stdout;
    for needle in [
        "policy    built-in (incremental)".to_string(),
        format!("attempt 1 on {} x", workers[0]),
        format!("attempt 2 on {} x", workers[1]),
        "  blobs     listed 5, copied 2, skipped 1, failed 2, already done 0".to_string(),
        "  blobs     listed 5, copied 2, skipped 0, failed 0, already done 3".to_string(),
        "  bytes     3 B copied, 6 B listed, throughput ".to_string(),
        "  retries   0".to_string(),
    ] {
        assert!(text.contains(&needle), "show lacks {needle:?}:\n{text}");
    }
    assert_eq!(text.matches("  started   ").count(), 2, "{text}");
    assert_eq!(text.matches("  ended     20").count(), 2, "{text}");
    assert_eq!(text.matches("/s\n").count(), 2, "{text}");
}

#[test]
fn show_of_an_attempt_that_never_ended_has_no_end_and_no_throughput() {
    let env = Env::new();
    let running = env
        .ferry()
        .arg("copy")
        .arg(big_tree())
        .arg(&env.dst)
        .args(["--parallel", "1"])
        .spawn();
    wait_until(Duration::from_secs(20), "a file was copied", || {
        has_entries(&env.dst)
    });
    running.kill();
    let job = env.jobs_json()[0]["id"].as_str().unwrap().to_string();
    let v = env.show_json(&job);
    let a = &v["attempts"][0];
    assert!(
        a["ended_at"].is_null(),
        "the copy finished before the kill: {a}"
    );
    assert!(
        a["duration_ms"].is_null() && a["bytes_per_sec"].is_null(),
        "{a}"
    );
    let text = env.ferry().args(["show", &job]).run().success().stdout;
    assert!(text.contains("  ended     -\n"), "{text}");
    assert!(text.contains(", throughput -\n"), "{text}");
}

#[test]
fn show_names_a_policy_plugin_by_path_and_sha256() {
    let env = Env::new();
    make_tree(&env.src, &[("a", b"1")]);
    let plugin = crate::plugins::policy_fixture(
        env.dir.path(),
        "pinned",
        crate::plugins::CONFIGURE_OK,
        crate::plugins::CONFIGURE_OK,
    );
    let job = env
        .ferry()
        .arg("submit")
        .arg(&env.src)
        .arg(&env.dst)
        .arg("--policy")
        .arg(format!("plugin:{}", plugin.display()))
        .args(["--plugin-config", "keep=legal/", "--plugin-failure", "skip"])
        .run()
        .success()
        .stdout
        .trim()
        .to_string();
    let sum = std::process::Command::new("sha256sum")
        .arg(&plugin)
        .output()
        .unwrap();
    let sha = String::from_utf8(sum.stdout).unwrap();
    let sha = sha.split_whitespace().next().unwrap();
    assert_eq!(sha.len(), 64);
    let v = env.show_json(&job);
    let p = &v["policy"];
    assert_eq!(p["kind"], "plugin", "{p}");
    assert_eq!(p["path"], plugin.to_str().unwrap());
    assert_eq!(p["sha256"], sha);
    assert_eq!(p["on_failure"], "skip");
    assert_eq!(p["config"], serde_json::json!([["keep", "legal/"]]));
    let text = env.ferry().args(["show", &job]).run().success().stdout;
    let line = format!(
        "policy    plugin {} sha256 {sha} (on plugin failure: skip the blob)\n          config keep=legal/\n",
        plugin.display()
    );
    assert!(text.contains(&line), "show lacks {line:?}:\n{text}");
}

// ---------------------------------------------------------------- events

fn events_with(env: &Env, args: &[&str]) -> Vec<serde_json::Value> {
    let out = env
        .ferry()
        .arg("events")
        .args(args)
        .arg("--json")
        .run()
        .success();
    parse_json_lines(&out.stdout)
}

fn seqs(evs: &[serde_json::Value]) -> Vec<u64> {
    evs.iter().map(|e| e["seq"].as_u64().unwrap()).collect()
}

#[test]
fn events_since_a_sequence_number_or_a_time() {
    let env = Env::new();
    let a = job_with_failures(&env);
    make_tree(&env.path("src2"), &[("x", b"x")]);
    let b = env
        .ferry()
        .arg("copy")
        .arg(env.path("src2"))
        .arg(env.path("dst2"))
        .run()
        .success()
        .summary()
        .job;
    let all_a = env.events(Some(&a));
    let n = all_a.len() as u64;
    assert!(n >= 8, "{all_a:?}");
    assert_eq!(
        seqs(&events_with(&env, &[&a, "--since", "3"])),
        (3..n).collect::<Vec<_>>()
    );
    assert_eq!(
        seqs(&events_with(&env, &[&a, "--since", "0"])),
        (0..n).collect::<Vec<_>>()
    );
    assert!(events_with(&env, &[&a, "--since", &n.to_string()]).is_empty());
    let text = env
        .ferry()
        .args(["events", &a, "--since", "5"])
        .run()
        .success()
        .stdout;
    assert_eq!(text.lines().count() as u64, n - 5, "{text}");
    assert!(text.lines().all(|l| l.starts_with(&a)), "{text}");

    // A time: events at or after it, of every job or of one.
    let b_events = env.events(Some(&b));
    let b_at = b_events[0]["at"].as_str().unwrap();
    let since_b = events_with(&env, &["--since", b_at]);
    assert_eq!(since_b, b_events, "every event of b and none of a");
    let mid = all_a[4]["at"].as_str().unwrap();
    let want: Vec<&serde_json::Value> = all_a
        .iter()
        .filter(|e| e["at"].as_str().unwrap() >= mid)
        .collect();
    let got = events_with(&env, &[&a, "--since", mid]);
    assert_eq!(got.iter().collect::<Vec<_>>(), want);
    assert!(got.len() < all_a.len());
    assert_eq!(
        events_with(&env, &["--since", "1h"]).len(),
        all_a.len() + b_events.len()
    );
    assert!(events_with(&env, &["--since", "2099-01-01"]).is_empty());

    // A sequence number needs a job; bad values name the flag.
    env.ferry()
        .args(["events", "--since", "3"])
        .run()
        .error(2, "--since \"3\" is a sequence number");
    env.ferry()
        .args(["events", &a, "--since", "soon"])
        .run()
        .error(2, "--since \"soon\"");
    env.ferry()
        .args(["events", &a, "--since", "99999999999999999999999"])
        .run()
        .error(2, "--since");
}

#[test]
fn events_kind_filters_by_type_in_any_case_and_unknown_kinds_are_listed() {
    let env = Env::new();
    let job = job_with_failures(&env);
    let failed = events_with(&env, &[&job, "--kind", "BlobFailed"]);
    assert_eq!(failed.len(), 2);
    assert!(failed.iter().all(|e| ev_type(e) == "BlobFailed"));
    let some = events_with(
        &env,
        &[&job, "--kind", "blobfailed", "--kind", "JOBFINISHED"],
    );
    assert_eq!(
        some.iter().map(ev_type).collect::<Vec<_>>(),
        ["BlobFailed", "BlobFailed", "JobFinished"]
    );
    let done = events_with(&env, &[&job, "--kind", "BlobCopied,BlobSkipped"]);
    assert_eq!(done.len(), 3);
    // Combined with --since, over all jobs, and in text.
    let last = events_with(&env, &[&job, "--kind", "JobFinished", "--since", "1"]);
    assert_eq!(last.len(), 1);
    let submitted = events_with(&env, &["--kind", "jobsubmitted"]);
    assert_eq!(submitted.len(), 1);
    assert_eq!(submitted[0]["job"], job.as_str());
    let text = env
        .ferry()
        .args(["events", &job, "--kind", "BlobFailed"])
        .run()
        .success()
        .stdout;
    assert_eq!(text.lines().count(), 2, "{text}");
    assert!(text.lines().all(|l| l.contains(" BlobFailed ")), "{text}");

    let out = env
        .ferry()
        .args(["events", &job, "--kind", "BlobFailed,Oops"])
        .run()
        .error(2, "--kind \"Oops\" is not an event type");
    for kind in [
        "JobSubmitted",
        "BlobSkipped",
        "JobFinished",
        "ScheduleFired",
    ] {
        assert!(out.stderr.contains(kind), "{}", out.stderr);
    }
}

// ---------------------------------------------------------------- export

#[test]
fn export_writes_a_header_then_every_event_and_never_overwrites_without_force() {
    let env = Env::new();
    let job = job_with_failures(&env);
    let file = env.path("job.jsonl");
    // Left by an export that was killed (no process has that pid), and
    // one of a process that still runs (this one).
    let dead = env.path(".job.jsonl.999999999.ferry-export-tmp");
    let live = env.path(&format!(
        ".job.jsonl.{}.ferry-export-tmp",
        std::process::id()
    ));
    write(&dead, "half");
    write(&live, "half");
    let out = env
        .ferry()
        .args(["export", &job[..8], "-o"])
        .arg(&file)
        .run()
        .success();
    assert!(out.stdout.contains("exported"), "{}", out.stdout);
    assert!(!dead.exists(), "a dead export's temp file stayed");
    assert!(live.exists(), "a running export's temp file was removed");
    fs::remove_file(&live).unwrap();
    let text = fs::read_to_string(&file).unwrap();
    let (header, rest) = text.split_once('\n').unwrap();
    assert!(
        header.starts_with("{\"ferry_export\":2,\"schema\":"),
        "{header}"
    );
    // The last line sums every byte before it.
    let (body, sum_line) = rest.trim_end().rsplit_once('\n').unwrap();
    let body = format!("{body}\n");
    let sum: serde_json::Value = serde_json::from_str(sum_line).unwrap();
    let before = &text[..text.len() - sum_line.len() - 1];
    let summed = env.path("summed");
    write(&summed, before);
    let by_coreutils = std::process::Command::new("sha256sum")
        .arg(&summed)
        .output()
        .unwrap();
    let by_coreutils = String::from_utf8(by_coreutils.stdout).unwrap();
    assert_eq!(
        sum["ferry_export_sha256"].as_str(),
        by_coreutils.split_whitespace().next(),
        "{sum_line}"
    );
    let h: serde_json::Value = serde_json::from_str(header).unwrap();
    assert_eq!(h.as_object().unwrap().len(), 4, "{h}");
    assert_eq!(h["job"], job.as_str());
    // The body is exactly what `events --json` prints for the job.
    let events = env
        .ferry()
        .args(["events", &job, "--json"])
        .run()
        .success()
        .stdout;
    assert_eq!(body, events);
    let recs = parse_json_lines(&body);
    assert_eq!(h["events"], recs.len() as u64);
    assert_eq!(seqs(&recs), (0..recs.len() as u64).collect::<Vec<_>>());
    assert_eq!(
        h["schema"], recs[0]["v"],
        "new records have the current schema"
    );
    assert!(recs.iter().all(|r| r["job"] == job.as_str()));

    // `ferry import` loads it into another state dir as the same job.
    let other = env.path("state2");
    let there = || {
        let mut f = env.ferry_no_state();
        f.arg("--state").arg(&other);
        f
    };
    there().arg("import").arg(&file).run().success();
    let show = |mut f: Ferry| -> serde_json::Value {
        let out = f.args(["show", &job, "--json"]).run().success();
        serde_json::from_str(&out.stdout).unwrap()
    };
    assert_eq!(show(there()), show(env.ferry()));

    // A changed byte (a name, a count) or a lost end is caught on import,
    // and nothing of the job is written.
    let damaged = env.path("damaged.jsonl");
    let fresh = env.path("state3");
    let import_there = |file: &std::path::Path| {
        let mut f = env.ferry_no_state();
        f.arg("--state").arg(&fresh).arg("import").arg(file);
        f.run()
    };
    write(&damaged, text.replacen("\"copied\":", "\"copied\": ", 1));
    import_there(&damaged).error(2, "the checksum does not match");
    write(&damaged, before);
    import_there(&damaged).error(2, "checksum line at the end is missing (cut short?)");
    let mut f = env.ferry_no_state();
    f.arg("--state").arg(&fresh).arg("jobs");
    assert!(!f.run().success().stdout.contains(&job[..8]));
    import_there(&file).success();

    // An existing FILE stays as it was unless --force.
    write(&file, "precious");
    env.ferry()
        .args(["export", &job, "-o"])
        .arg(&file)
        .run()
        .error(2, "exists; pass --force");
    assert_eq!(fs::read_to_string(&file).unwrap(), "precious");
    env.ferry()
        .args(["export", &job, "--force", "-o"])
        .arg(&file)
        .run()
        .success();
    assert_eq!(fs::read_to_string(&file).unwrap(), text);

    // An unknown job writes nothing; no temp file is left anywhere.
    let none = env.path("none.jsonl");
    env.ferry()
        .args(["export", "0123abcd", "-o"])
        .arg(&none)
        .run()
        .code(5);
    assert!(!none.exists());
    let names: Vec<String> = fs::read_dir(env.dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(!names.iter().any(|n| n.contains("tmp")), "{names:?}");
    env.ferry()
        .args(["export", &job])
        .run()
        .error(2, "--output");
}

// ---------------------------------------------------------------- reports

#[test]
fn a_report_of_a_job_with_many_skips_is_bounded_with_exact_counts_in_every_format() {
    const N: usize = 10_000;
    let env = Env::new();
    // The destination already has every file (hard links: the same
    // mtime), so an incremental run skips them all as not newer, without
    // a first run to copy them.
    for d in 0..20 {
        let (src, dst) = (
            env.src.join(format!("d{d:02}")),
            env.dst.join(format!("d{d:02}")),
        );
        fs::create_dir(&src).unwrap();
        fs::create_dir(&dst).unwrap();
        for f in 0..N / 20 {
            let name = format!("f{f:04}");
            fs::write(src.join(&name), b"x").unwrap();
            fs::hard_link(src.join(&name), dst.join(&name)).unwrap();
        }
    }
    let job = env.copy_ok(&[]);
    let report = |format: &str, max: &str| -> String {
        env.ferry()
            .args(["report", &job, "--format", format, "--max-examples", max])
            .run()
            .success()
            .stdout
    };

    let text = report("text", "5");
    assert!(text.contains(&format!("skipped {N}, failed 0")), "{text}");
    assert!(text.contains(&format!("skipped not-newer: {N}")), "{text}");
    assert!(text.contains(&format!("... and {} more", N - 5)), "{text}");
    assert_eq!(text.matches("): not-newer").count(), 5, "{text}");
    assert!(text.len() < 2_000, "text report: {} bytes", text.len());
    // No examples: the section stays, as its count.
    let none = report("text", "0");
    assert!(
        none.contains(&format!("skipped blobs:\n  ... and {N} more")),
        "{none}"
    );

    // -o leaves a file that exists as it was, unless --force.
    let file = env.path("report.txt");
    write(&file, "precious");
    let to_file = |extra: &[&str]| {
        env.ferry()
            .args(["report", &job, "--max-examples", "5", "-o"])
            .arg(&file)
            .args(extra)
            .run()
    };
    to_file(&[]).error(2, "exists; pass --force");
    assert_eq!(fs::read_to_string(&file).unwrap(), "precious");
    to_file(&["--force"]).success();
    assert_eq!(fs::read_to_string(&file).unwrap(), text);
    // A folder is named as such; `-o -` is stdout.
    env.ferry()
        .args(["report", &job, "--force", "-o"])
        .arg(&env.dst)
        .run()
        .error(2, "is a folder; give the path of a file to write");
    let dash = env
        .ferry()
        .args(["report", &job, "--max-examples", "5", "-o", "-"])
        .run()
        .success();
    assert_eq!(dash.stdout, text);

    let json: serde_json::Value = serde_json::from_str(&report("json", "5")).unwrap();
    assert_eq!(json["summary"]["skipped"], N as u64);
    assert_eq!(
        json["summary"]["skipped_by_reason"],
        serde_json::json!([["not-newer", N]])
    );
    assert_eq!(json["skips"].as_array().unwrap().len(), 5);
    assert_eq!(json["skips_not_listed"], (N - 5) as u64);
    assert_eq!(json["skips"][0]["name"], "d00/f0000");
    assert_eq!(json["skips"][0]["detail"], "not-newer");
    assert!(json.to_string().len() < 4_000, "{json}");

    let md = report("markdown", "5");
    assert!(md.contains(&format!("| skipped | {N} |")), "{md}");
    assert!(md.contains(&format!("| not-newer | {N} |")), "{md}");
    assert_eq!(md.matches("| 1 | not-newer |").count(), 5, "{md}");
    assert!(
        md.contains(&format!("... and {} more skipped", N - 5)),
        "{md}"
    );
    assert!(md.len() < 3_000, "markdown report: {} bytes", md.len());

    // The default keeps 100 examples; 0 keeps none: still bounded.
    let text = report("text", "100");
    assert_eq!(text.matches("): not-newer").count(), 100);
    assert!(text.len() < 8_000, "text report: {} bytes", text.len());
    let none = report("markdown", "0");
    assert!(
        none.contains(&format!("## Skipped\n\n{N} skipped, none listed")),
        "{none}"
    );
    assert!(none.contains(&format!("| not-newer | {N} |")), "{none}");
}

#[test]
fn events_into_a_reader_that_stops_early_end_quietly_with_success() {
    use std::io::{BufRead, BufReader};
    use std::process::Stdio;
    let env = Env::new();
    // Well over a pipe's 64 KiB of event lines, so ferry is still writing
    // when the reader goes.
    let names: Vec<String> = (0..1500).map(|i| format!("d{}/f{i:04}", i % 10)).collect();
    let files: Vec<(&str, &[u8])> = names.iter().map(|n| (n.as_str(), &b"x"[..])).collect();
    make_tree(&env.src, &files);
    env.copy_ok(&[]);
    let src = env.src.to_str().unwrap().to_string();
    for (args, first_has) in [
        (vec!["events"], "JobSubmitted"),
        (vec!["events", "--json"], "JobSubmitted"),
        (vec!["history", src.as_str(), "--json"], "copied"),
    ] {
        let mut cmd = env.ferry();
        let mut child = cmd
            .args(&args)
            .cmd
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn ferry");
        let mut first = String::new();
        BufReader::new(child.stdout.take().expect("stdout"))
            .read_line(&mut first)
            .expect("first line");
        // The reader is gone (as `| head -1` goes).
        let out = child.wait_with_output().expect("wait");
        assert!(first.contains(first_has), "{args:?}: {first}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(0), "{args:?}: stderr: {stderr}");
        assert!(stderr.is_empty(), "{args:?}: {stderr}");
    }
    // A command that prints with `println!` (which panics on a closed
    // pipe): the reader is gone before it writes (loading the plugin takes
    // longer than dropping the pipe).
    let mut cmd = env.ferry();
    let mut child = cmd
        .args(["plugin", "check"])
        .arg(crate::plugins::shipped("csv_report"))
        .cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn ferry");
    drop(child.stdout.take());
    let out = child.wait_with_output().expect("wait");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "plugin check: stderr: {stderr}");
    assert!(stderr.is_empty(), "plugin check: {stderr}");
}
