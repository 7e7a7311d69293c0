//! The event log as users see it: `events`, `events JOB --json`, `verify-log`.

use std::collections::BTreeMap;

use ferry_engine::log::keys;
use ferry_engine::projection::{BlobState, BlobStatus};
use ferry_engine::Engine;
use serde_json::Value;

use crate::util::*;

/// A tree whose copy has a copied, a skipped and a failed blob:
/// `a`, `c` copied; `b` skipped (destination newer); `x.txt` failed
/// (a directory stands where it must go).
fn mixed_job(env: &Env) -> String {
    make_tree(
        &env.src,
        &[("a", b"a"), ("b", b"b"), ("c", b"c"), ("x.txt", b"x")],
    );
    make_tree(
        &env.dst,
        &[("b", b"newer b"), ("x.txt/inner", b"in the way")],
    );
    set_mtime(&env.src.join("b"), 1_500_000_000, 0);
    let out = env.copy(&[]).run().code(1);
    out.summary().job
}

#[test]
fn every_step_of_a_job_is_an_event_in_order() {
    let env = Env::new();
    let job = mixed_job(&env);
    let events = env.events(Some(&job));
    assert_gap_free(&events);
    assert_eq!(events[0]["job"], job.as_str());

    let types: Vec<&str> = events.iter().map(ev_type).collect();
    assert_eq!(types[0], "JobSubmitted");
    assert_eq!(types[1], "JobStarted");
    assert_eq!(*types.last().unwrap(), "JobFinished");
    let count = |t: &str| types.iter().filter(|x| **x == t).count();
    assert_eq!(
        [
            count("JobSubmitted"),
            count("JobStarted"),
            count("ListingCompleted"),
            count("JobFinished"),
            count("JobInterrupted")
        ],
        [1, 1, 1, 1, 0],
        "{types:?}"
    );

    let submitted = ev_data(&events[0]);
    assert_eq!(
        submitted["spec"]["src"]["local"]["path"],
        env.src.to_str().unwrap()
    );
    assert_eq!(
        submitted["spec"]["dst"]["local"]["path"],
        env.dst.to_str().unwrap()
    );
    let started = ev_data(&events[1]);
    assert_eq!(started["attempt"], 1);
    let worker = started["worker"].as_str().unwrap();
    let (host, pid) = worker
        .rsplit_once(':')
        .unwrap_or_else(|| panic!("worker {worker:?} is not host:pid"));
    assert!(
        !host.is_empty() && pid.parse::<u32>().is_ok(),
        "worker {worker:?}"
    );
    let listing = ev_data(of_type(&events, "ListingCompleted")[0]);
    assert_eq!(
        (
            listing["attempt"].as_u64(),
            listing["blobs"].as_u64(),
            listing["bytes"].as_u64()
        ),
        (Some(1), Some(4), Some(4))
    );

    // Exactly one blob event per source file, with the right outcome.
    let mut blobs = BTreeMap::new();
    for e in events.iter().filter(|e| ev_type(e).starts_with("Blob")) {
        assert!(
            blobs.insert(ev_name(e).to_string(), e.clone()).is_none(),
            "two events for {}",
            ev_name(e)
        );
    }
    assert_eq!(
        blobs.keys().map(String::as_str).collect::<Vec<_>>(),
        ["a", "b", "c", "x.txt"]
    );
    assert_eq!(ev_type(&blobs["a"]), "BlobCopied");
    assert_eq!(ev_type(&blobs["c"]), "BlobCopied");
    let a = ev_data(&blobs["a"]);
    assert_eq!(
        (
            a["bytes"].as_u64(),
            a["reason"].as_str(),
            a["method"].as_str()
        ),
        (Some(1), Some("new"), Some("local-file"))
    );
    assert!(a["src_etag"].as_str().is_some_and(|s| !s.is_empty()));
    assert_eq!(ev_type(&blobs["b"]), "BlobSkipped");
    assert_eq!(ev_data(&blobs["b"])["reason"], "not-newer");
    assert_eq!(ev_type(&blobs["x.txt"]), "BlobFailed");
    let failed = ev_data(&blobs["x.txt"]);
    assert_eq!(failed["error_kind"], "destination-conflict");
    assert!(
        failed["message"].as_str().unwrap().contains("x.txt"),
        "{failed}"
    );
    assert_eq!(failed["tries"], 1);

    let finished = ev_data(events.last().unwrap());
    assert_eq!(finished["attempt"], 1);
    assert_eq!(finished["outcome"]["status"], "completed-with-failures");
    let t = &finished["totals"];
    assert_eq!(
        [
            &t["listed"],
            &t["copied"],
            &t["copied_bytes"],
            &t["skipped"],
            &t["failed"],
            &t["resumed"]
        ]
        .map(|v| v.as_u64().unwrap()),
        [4, 2, 2, 1, 1, 0]
    );
    // Timestamps never go backwards.
    let at: Vec<&str> = events.iter().map(|e| e["at"].as_str().unwrap()).collect();
    let parsed: Vec<chrono::DateTime<chrono::Utc>> =
        at.iter().map(|s| s.parse().unwrap()).collect();
    assert!(parsed.windows(2).all(|w| w[0] <= w[1]), "{at:?}");
}

#[test]
fn events_without_a_job_prints_every_job_oldest_first() {
    let env = Env::new();
    make_tree(&env.src, &[("one", b"1"), ("two", b"2")]);
    let first = env.copy_ok(&[]);
    let second = env.copy_ok(&[]);

    let all = env.events(None);
    let one = env.events(Some(&first));
    let two = env.events(Some(&second));
    assert_gap_free(&one);
    assert_gap_free(&two);
    assert!(one.iter().all(|e| e["job"] == first.as_str()));
    assert!(two.iter().all(|e| e["job"] == second.as_str()));
    let mut both = one.clone();
    both.extend(two.iter().cloned());
    assert_eq!(
        all, both,
        "events with no JOB is not the jobs' logs one after the other"
    );

    // A unique prefix selects the job too.
    let prefix = &second[..second.len() - 4];
    assert_eq!(env.events(Some(prefix)), two);

    // Text form: one line per event, each naming its job, seq and type.
    let text = env.ferry().arg("events").run().success();
    let lines: Vec<&str> = text.stdout.lines().collect();
    assert_eq!(lines.len(), all.len());
    for (line, e) in lines.iter().zip(&all) {
        assert!(line.starts_with(e["job"].as_str().unwrap()), "{line}");
        assert!(line.contains(ev_type(e)), "{line}");
    }
}

#[test]
fn verify_log_passes_after_runs() {
    let env = Env::new();
    let failed_job = mixed_job(&env);
    std::fs::remove_dir_all(env.dst.join("x.txt")).unwrap();
    env.ferry().args(["replay", &failed_job]).run().success();
    let ok_job = env.copy_ok(&["--mode", "full"]);
    env.verify_log_ok(None);
    env.verify_log_ok(Some(&failed_job));
    env.verify_log_ok(Some(&ok_job));
    let all = env.ferry().arg("verify-log").run().success();
    assert!(all.stdout.contains("2 jobs"), "{}", all.stdout);
}

/// Opens the state dir in-process (no ferry may be running) to tamper with
/// a cached projection, as a bug or a bad disk could.
fn tamper(env: &Env, job: &str, f: impl FnOnce(&Engine, ferry_engine::JobId)) {
    let engine = Engine::open(&env.state).expect("open state");
    let id = engine.resolve(job).unwrap();
    f(&engine, id);
    engine.log().close();
}

#[test]
fn verify_log_fails_when_a_checkpoint_entry_differs_from_the_log() {
    let env = Env::new();
    make_tree(&env.src, &[("a", b"a")]);
    let job = env.copy_ok(&[]);
    env.verify_log_ok(None);
    tamper(&env, &job, |engine, id| {
        let ghost = BlobState {
            status: BlobStatus::Copied,
            etag: Some("e".into()),
            seq: 2,
            error_kind: None,
            message: None,
        };
        let bytes = rmp_serde::to_vec_named(&ghost).unwrap();
        engine
            .log()
            .put_raw_for_tests(&keys::blob(id, "ghost"), &bytes)
            .unwrap();
    });
    let out = env.ferry().args(["verify-log", &job]).run().code(8);
    assert!(out.stderr.contains("ghost"), "{}", out.stderr);
    assert_eq!(out.stderr.lines().count(), 1, "{}", out.stderr);
}

#[test]
fn verify_log_fails_when_a_cached_summary_differs_from_the_log() {
    let env = Env::new();
    make_tree(&env.src, &[("a", b"a")]);
    let job = env.copy_ok(&[]);
    let other = env.copy_ok(&[]);
    tamper(&env, &job, |engine, id| {
        let mut s = engine.summary(id).unwrap();
        s.copied += 100;
        let bytes = rmp_serde::to_vec_named(&s).unwrap();
        engine
            .log()
            .put_raw_for_tests(&keys::summary(id), &bytes)
            .unwrap();
    });
    let out = env.ferry().arg("verify-log").run().code(8);
    assert!(
        out.stderr.contains("summary") && out.stderr.contains(&job),
        "{}",
        out.stderr
    );
    // The untouched job still verifies on its own.
    env.verify_log_ok(Some(&other));
    // The tampered projection is what `jobs` shows, the log is unchanged.
    let copied: Vec<Value> = env
        .jobs_json()
        .into_iter()
        .filter(|j| j["id"] == job.as_str())
        .collect();
    assert_eq!(copied[0]["copied"], 101);
    assert_eq!(of_type(&env.events(Some(&job)), "BlobCopied").len(), 1);
}
