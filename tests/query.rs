//! `jobs` and `show`: what a user learns about jobs.

use std::fs;

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
