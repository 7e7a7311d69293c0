//! submit, run, copy (= submit + run) and parallelism.

use std::fs;

use crate::util::*;

fn is_uuid(s: &str) -> bool {
    s.len() == 36
        && s.char_indices().all(|(i, c)| {
            if [8, 13, 18, 23].contains(&i) {
                c == '-'
            } else {
                c.is_ascii_hexdigit()
            }
        })
}

/// Submits `src -> dst` and returns the printed id.
fn submit(env: &Env, src: &std::path::Path, dst: &std::path::Path, extra: &[&str]) -> String {
    let out = env
        .ferry()
        .arg("submit")
        .arg(src)
        .arg(dst)
        .args(extra)
        .run()
        .success();
    assert!(out.stderr.is_empty(), "{}", out.stderr);
    assert!(
        out.stdout.ends_with('\n') && out.stdout.lines().count() == 1,
        "submit printed {:?}",
        out.stdout
    );
    let id = out.stdout.trim().to_string();
    assert!(
        is_uuid(&id),
        "submit printed {:?}, not a job id",
        out.stdout
    );
    id
}

#[test]
fn submit_prints_only_an_id_and_copies_nothing() {
    let env = Env::new();
    make_tree(&env.src, &[("a", b"1"), ("b/c", b"2")]);
    let dst = env.path("not-yet");
    let id = submit(
        &env,
        &env.src,
        &dst,
        &["--mode", "never", "--parallel", "3"],
    );
    assert!(!dst.exists(), "submit touched the destination");
    let jobs = env.jobs_json();
    assert_eq!(jobs.len(), 1);
    let j = &jobs[0];
    assert_eq!(j["id"], id.as_str());
    assert_eq!(j["state"], "queued");
    assert_eq!(j["attempts"].as_array().map(Vec::len), Some(0));
    assert_eq!(j["spec"]["mode"], "never");
    assert_eq!(j["spec"]["parallel"], 3);
    let events = env.events(Some(&id));
    assert_eq!(
        events.iter().map(ev_type).collect::<Vec<_>>(),
        ["JobSubmitted"]
    );
}

#[test]
fn run_works_queued_jobs_oldest_first_until_none_remain() {
    let env = Env::new();
    make_tree(&env.src, &[("a", b"1"), ("b/c", b"2")]);
    let src2 = env.path("src2");
    make_tree(&src2, &[("z", b"zz")]);
    let dst2 = env.path("dst2");
    let first = submit(&env, &env.src, &env.dst, &[]);
    let second = submit(&env, &src2, &dst2, &[]);
    assert!(env.jobs_json().iter().all(|j| j["state"] == "queued"));

    let out = env.ferry().arg("run").run().success();
    let ran = out.summaries();
    assert_eq!(
        ran.iter().map(|s| s.job.as_str()).collect::<Vec<_>>(),
        [first.as_str(), second.as_str()]
    );
    assert!(ran
        .iter()
        .all(|s| s.status == "succeeded" && s.attempt == 1));
    assert_same_tree(&env.src, &env.dst);
    assert_same_tree(&src2, &dst2);
    let jobs = env.jobs_json();
    assert!(jobs.iter().all(|j| j["state"] == "succeeded"), "{jobs:?}");

    // The first job finished before the second started.
    let finished: chrono::DateTime<chrono::Utc> = env.events(Some(&first)).last().unwrap()["at"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    let started: chrono::DateTime<chrono::Utc> = of_type(&env.events(Some(&second)), "JobStarted")
        [0]["at"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(
        finished <= started,
        "second job started at {started} before the first finished at {finished}"
    );

    let again = env.ferry().arg("run").run().success();
    assert_eq!(again.stdout.trim(), "no queued jobs");
}

#[test]
fn run_skips_jobs_that_are_not_queued_and_reports_the_worst_exit_code() {
    let env = Env::new();
    make_tree(&env.src, &[("x.txt", b"x"), ("y", b"y")]);
    fs::create_dir_all(env.dst.join("x.txt/inner")).unwrap();
    let failing = submit(&env, &env.src, &env.dst, &[]);
    let src2 = env.path("src2");
    make_tree(&src2, &[("ok", b"ok")]);
    let fine = submit(&env, &src2, &env.path("dst2"), &[]);
    let out = env.ferry().arg("run").run().code(1);
    let ran = out.summaries();
    assert_eq!(ran.len(), 2);
    assert_eq!(
        (ran[0].job.as_str(), ran[0].status.as_str()),
        (failing.as_str(), "completed with failures")
    );
    assert_eq!(
        (ran[1].job.as_str(), ran[1].status.as_str()),
        (fine.as_str(), "succeeded")
    );
    // A job with failures is not queued any more: run does not retry it.
    env.ferry().arg("run").run().success();
    assert_eq!(
        env.show_json(&failing)["attempts"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
}

#[test]
fn copy_is_submit_plus_run() {
    let env = Env::new();
    make_tree(&env.src, &[("a", b"1"), ("b/c", b"22"), ("d", b"")]);
    let dst2 = env.path("dst2");
    let copied = env.copy_ok(&["--mode", "full"]);
    let queued = submit(&env, &env.src, &dst2, &["--mode", "full"]);
    env.ferry().arg("run").run().success();
    assert_same_tree(&env.src, &env.dst);
    assert_same_tree(&env.src, &dst2);

    let shape = |job: &str| -> Vec<(String, String)> {
        let mut v: Vec<(String, String)> = env
            .events(Some(job))
            .iter()
            .map(|e| {
                (
                    ev_type(e).to_string(),
                    ev_data(e)["name"].as_str().unwrap_or("").to_string(),
                )
            })
            .collect();
        // Blob events of parallel workers may come in any order.
        v[2..].sort();
        v
    };
    assert_eq!(shape(&copied), shape(&queued));
    let (a, b) = (env.show_json(&copied), env.show_json(&queued));
    for k in ["state", "copied", "copied_bytes", "skipped", "failed"] {
        assert_eq!(a[k], b[k], "{k}");
    }
    assert_eq!(a["spec"]["mode"], b["spec"]["mode"]);
}

fn parallelism_of(env: &Env, job: &str, attempt: u64) -> u64 {
    let events = env.events(Some(job));
    let started = of_type(&events, "JobStarted");
    let s = started
        .iter()
        .find(|e| ev_data(e)["attempt"] == attempt)
        .expect("JobStarted of the attempt");
    ev_data(s)["parallelism"].as_u64().unwrap()
}

#[test]
fn parallel_is_recorded_and_defaults_to_eight_per_core() {
    let env = Env::new();
    make_tree(&env.src, &[("a", b"1")]);
    let default = env.copy_ok(&[]);
    assert_eq!(parallelism_of(&env, &default, 1), 8 * cores() as u64);
    assert_eq!(
        ev_data(&env.events(Some(&default))[0])["spec"]["parallel"],
        serde_json::Value::Null
    );

    let three = env.copy_ok(&["--parallel", "3"]);
    assert_eq!(parallelism_of(&env, &three, 1), 3);
    assert_eq!(ev_data(&env.events(Some(&three))[0])["spec"]["parallel"], 3);
    let show = env.show_json(&three);
    assert_eq!(show["attempts"][0]["parallelism"], 3);

    let one = env.copy_ok(&["--parallel", "1"]);
    assert_eq!(parallelism_of(&env, &one, 1), 1);
}

#[test]
fn run_and_replay_parallel_override_the_job_setting() {
    let env = Env::new();
    make_tree(&env.src, &[("x.txt", b"x"), ("y", b"y")]);
    fs::create_dir_all(env.dst.join("x.txt/inner")).unwrap();
    let id = submit(&env, &env.src, &env.dst, &["--parallel", "2"]);
    env.ferry().args(["run", "--parallel", "5"]).run().code(1);
    assert_eq!(parallelism_of(&env, &id, 1), 5);
    fs::remove_dir_all(env.dst.join("x.txt")).unwrap();
    env.ferry().args(["replay", &id]).run().success();
    assert_eq!(
        parallelism_of(&env, &id, 2),
        2,
        "replay without --parallel uses the job's setting"
    );
    assert_same_tree(&env.src, &env.dst);
}

#[test]
fn replay_with_parallel_overrides_for_that_attempt() {
    let env = Env::new();
    make_tree(&env.src, &[("x.txt", b"x")]);
    fs::create_dir_all(env.dst.join("x.txt/inner")).unwrap();
    let id = env.copy(&[]).run().code(1).summary().job;
    fs::remove_dir_all(env.dst.join("x.txt")).unwrap();
    env.ferry()
        .args(["replay", &id, "--parallel", "7"])
        .run()
        .success();
    assert_eq!(parallelism_of(&env, &id, 1), 8 * cores() as u64);
    assert_eq!(parallelism_of(&env, &id, 2), 7);
}

#[test]
fn a_queued_job_whose_store_cannot_open_fails_on_the_record_and_the_queue_goes_on() {
    let env = Env::new();
    make_tree(&env.src, &[("a", b"1")]);
    let config = env.state.join("ferry.toml");
    write(
        &config,
        "[accounts.az]\nconnection_string = \"UseDevelopmentStorage=true\"\n",
    );
    let first = submit(&env, &env.src, std::path::Path::new("az:photos"), &[]);
    let second = submit(&env, &env.src, &env.dst, &[]);
    // The account disappears from the config before the queue runs.
    write(&config, "");
    let out = env.ferry().arg("run").run().code(6);
    assert!(out.stderr.contains("unknown account \"az\""), "{out:?}");
    let shown = env.show_json(&first);
    assert_eq!(shown["state"], "failed");
    assert!(shown["error"].as_str().unwrap().contains("unknown account"));
    assert_eq!(env.show_json(&second)["state"], "succeeded");
    assert_same_tree(&env.src, &env.dst);
    // Recorded as an attempt, so `ferry replay` is the way back; by hand,
    // with the account still missing, it is refused and nothing recorded.
    env.ferry()
        .args(["replay", &first])
        .run()
        .error(2, "unknown account");
    assert_eq!(
        env.show_json(&first)["attempts"].as_array().unwrap().len(),
        1
    );
}
