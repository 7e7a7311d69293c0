//! Resuming: a killed job is replayed from its log, copying only what is not
//! durably done; a job with failed blobs replays just those.

use std::collections::BTreeSet;
use std::fs;
use std::time::Duration;

use serde_json::Value;

use crate::util::*;

const LONG: Duration = Duration::from_secs(120);

/// Checks a job killed during attempt 1 and then replayed to success.
/// Returns the names BlobCopied in attempt 1.
fn check_replayed_job(
    env: &Env,
    src: &std::path::Path,
    job: &str,
    replay: &Summary,
) -> BTreeSet<String> {
    assert_eq!(
        (replay.attempt, replay.status.as_str(), replay.failed),
        (2, "succeeded", 0),
        "{replay:?}"
    );
    // The destination is the source, and nothing else (no temp files).
    assert_same_tree(src, &env.dst);
    assert!(temp_files(&env.dst).is_empty());

    let events = env.events(Some(job));
    assert_gap_free(&events);
    let attempts = attempt_of_each(&events);
    let starts: Vec<(usize, u64)> = events
        .iter()
        .enumerate()
        .filter(|(_, e)| ev_type(e) == "JobStarted")
        .map(|(i, e)| (i, ev_data(e)["attempt"].as_u64().unwrap()))
        .collect();
    assert_eq!(
        starts.iter().map(|s| s.1).collect::<Vec<_>>(),
        [1, 2],
        "JobStarted events: {starts:?}"
    );
    assert_eq!((ev_type(&events[0]), starts[0].0), ("JobSubmitted", 1));
    let second_start = starts[1].0;
    // Attempt 1 never finished; everything it logged comes before attempt 2.
    for (i, e) in events.iter().enumerate() {
        let ty = ev_type(e);
        if matches!(ty, "ListingCompleted" | "JobFinished" | "JobInterrupted") {
            let a = ev_data(e)["attempt"].as_u64().unwrap();
            assert_eq!(
                a, attempts[i],
                "{ty} of attempt {a} logged during attempt {}",
                attempts[i]
            );
            assert!(
                a == 2 || i < second_start,
                "attempt-1 event after attempt 2 started: {e}"
            );
        }
    }
    assert!(of_type(&events, "JobFinished")
        .iter()
        .all(|e| ev_data(e)["attempt"] == 2));
    let last = events.last().unwrap();
    assert_eq!(ev_type(last), "JobFinished");
    assert_eq!(ev_data(last)["outcome"]["status"], "succeeded");
    let listing2: Vec<&Value> = events
        .iter()
        .filter(|e| ev_type(e) == "ListingCompleted" && ev_data(e)["attempt"] == 2)
        .collect();
    assert_eq!(listing2.len(), 1);
    let all: BTreeSet<String> = list_files(src).into_iter().collect();
    assert_eq!(
        ev_data(listing2[0])["blobs"].as_u64(),
        Some(all.len() as u64)
    );

    let copied1 = names_in_attempt(&events, "BlobCopied", 1);
    let copied2 = names_in_attempt(&events, "BlobCopied", 2);
    let skipped2 = names_in_attempt(&events, "BlobSkipped", 2);
    assert!(
        names_in_attempt(&events, "BlobFailed", 1).is_empty()
            && names_in_attempt(&events, "BlobFailed", 2).is_empty()
    );
    let twice: Vec<_> = copied1.intersection(&copied2).take(5).collect();
    assert!(
        twice.is_empty(),
        "copied again although durably done in attempt 1: {twice:?}"
    );
    // Skips in attempt 2 are files renamed into place whose event was lost.
    assert!(skipped2
        .iter()
        .all(|n| !copied1.contains(n) && !copied2.contains(n)));
    let covered: BTreeSet<String> = copied1
        .iter()
        .chain(&copied2)
        .chain(&skipped2)
        .cloned()
        .collect();
    let missing: Vec<_> = all.difference(&covered).take(5).collect();
    assert!(missing.is_empty(), "never copied nor skipped: {missing:?}");
    assert_eq!(covered.len(), all.len());
    // The replay's counts agree with the log: attempt-1 copies are "already done".
    assert_eq!(replay.resumed, copied1.len() as u64, "{replay:?}");
    assert_eq!(
        (replay.copied, replay.skipped),
        (copied2.len() as u64, skipped2.len() as u64)
    );

    env.verify_log_ok(Some(job));
    env.verify_log_ok(None);
    let show = env.show_json(job);
    assert_eq!(show["state"], "succeeded");
    assert_eq!(
        show["copied"].as_u64(),
        Some((copied1.len() + copied2.len()) as u64)
    );
    copied1
}

/// The job's state while no process runs it: interrupted, attempt 1 open.
fn assert_left_interrupted(env: &Env, job: &str) {
    let jobs = env.jobs_json();
    assert_eq!(jobs.len(), 1);
    assert_eq!(jobs[0]["id"], job);
    assert_eq!(
        jobs[0]["state"], "interrupted",
        "a job whose process died must show as interrupted"
    );
    let show = env.show_json(job);
    assert_eq!(show["state"], "interrupted");
    assert_eq!(show["attempts"][0]["outcome"], Value::Null);
    let text = env.ferry().args(["show", job]).run().success().stdout;
    assert!(
        text.contains("ended without a record (the process died"),
        "{text}"
    );
    // `run` does not pick it up: it is not queued, and says what will.
    assert_eq!(
        env.ferry().arg("run").run().success().stdout.trim(),
        "no queued jobs (1 interrupted: `ferry jobs --status interrupted` lists them, `ferry replay JOB` resumes one)"
    );
}

#[test]
fn sigkill_mid_copy_then_replay_copies_only_what_is_not_durably_done() {
    let env = Env::new();
    let src = big_tree();
    let child = env
        .ferry()
        .arg("copy")
        .arg(src)
        .arg(&env.dst)
        .args(["--parallel", "2"])
        .spawn();
    // About half the tree (dirs are copied in order).
    let half = env.dst.join(big_dir(BIG_DIRS / 2));
    wait_until(LONG, "half the tree is copied", || half.exists());
    let killed = child.kill();
    assert_eq!(
        killed.signal,
        Some(libc::SIGKILL),
        "ferry ended before it was killed: {killed:?}"
    );
    assert!(killed.stdout.is_empty(), "{}", killed.stdout);

    let job = env.jobs_json()[0]["id"].as_str().unwrap().to_string();
    assert_left_interrupted(&env, &job);
    let before = list_files(&env.dst).len();
    assert!(before < BIG_FILES, "everything was copied before the kill");

    let replay = env
        .ferry()
        .args(["replay", &job[..8]])
        .run()
        .success()
        .summary();
    let copied1 = check_replayed_job(&env, src, &job, &replay);
    // Blob events are flushed in batches, so the newest copies of attempt 1
    // may be lost (they are redone); older ones must have survived, or the
    // checks above prove nothing about skipping durable work.
    assert!(!copied1.is_empty(), "no copy of attempt 1 was durable");
    // A second replay is refused: the job succeeded.
    env.ferry()
        .args(["replay", &job])
        .run()
        .error(7, "already succeeded");
}

#[test]
fn sigkill_during_listing_then_replay_completes_the_job() {
    let env = Env::new();
    let src = big_tree();
    let child = env
        .ferry()
        .arg("copy")
        .arg(src)
        .arg(&env.dst)
        .args(["--parallel", "2"])
        .spawn();
    // The first file (or its temp file) appears long before the listing is
    // done: listing feeds a bounded queue that 2 workers drain.
    let first_dir = env.dst.join(big_dir(0));
    wait_until(LONG, "the first file appears", || has_entries(&first_dir));
    let killed = child.kill();
    assert_eq!(
        killed.signal,
        Some(libc::SIGKILL),
        "ferry ended before it was killed: {killed:?}"
    );

    let job = env.jobs_json()[0]["id"].as_str().unwrap().to_string();
    let events = env.events(Some(&job));
    assert_gap_free(&events);
    assert!(
        !events.iter().any(|e| ev_type(e) == "ListingCompleted"),
        "attempt 1 completed its listing before the kill"
    );
    assert!(!events.iter().any(|e| ev_type(e) == "JobFinished"));
    assert_left_interrupted(&env, &job);

    let replay = env.ferry().args(["replay", &job]).run().success().summary();
    check_replayed_job(&env, src, &job, &replay);
}

#[test]
fn replay_after_blob_failures_copies_exactly_the_failed_blobs() {
    let env = Env::new();
    let mut files = Vec::new();
    for i in 0..40 {
        files.push((
            format!("dir{}/file{i:02}.txt", i % 4),
            format!("content {i}"),
        ));
    }
    for (n, c) in &files {
        write(&env.src.join(n), c);
    }
    // Directories stand where three of the files must go: renames onto them fail.
    let conflicts: BTreeSet<String> = ["dir0/file00.txt", "dir1/file13.txt", "dir3/file39.txt"]
        .map(String::from)
        .into();
    for c in &conflicts {
        write(&env.dst.join(c).join("inner"), b"blocker");
    }

    let out = env.copy(&[]).run().code(1);
    let first = out.summary();
    assert_eq!(
        (first.status.as_str(), first.copied, first.failed),
        ("completed with failures", 37, 3)
    );
    let events = env.events(Some(&first.job));
    let failed: BTreeSet<String> = of_type(&events, "BlobFailed")
        .iter()
        .map(|e| ev_name(e).to_string())
        .collect();
    assert_eq!(failed, conflicts);
    for e in of_type(&events, "BlobFailed") {
        assert_eq!(ev_data(e)["error_kind"], "destination-conflict", "{e}");
    }
    assert!(
        temp_files(&env.dst).is_empty(),
        "failed copies left temp files"
    );
    assert_eq!(
        env.show_json(&first.job)["state"],
        "completed-with-failures"
    );

    // Replay while the conflicts remain: they fail again, nothing else is copied.
    let again = env
        .ferry()
        .args(["replay", &first.job])
        .run()
        .code(1)
        .summary();
    assert_eq!(
        (again.attempt, again.copied, again.failed, again.resumed),
        (2, 0, 3, 37)
    );

    for c in &conflicts {
        fs::remove_dir_all(env.dst.join(c)).unwrap();
    }
    let replay = env
        .ferry()
        .args(["replay", &first.job])
        .run()
        .success()
        .summary();
    assert_eq!((replay.attempt, replay.status.as_str()), (3, "succeeded"));
    assert_eq!((replay.copied, replay.failed, replay.resumed), (3, 0, 37));
    let events = env.events(Some(&first.job));
    assert_gap_free(&events);
    assert_eq!(names_in_attempt(&events, "BlobCopied", 3), conflicts);
    assert!(names_in_attempt(&events, "BlobSkipped", 3).is_empty());
    assert_same_tree(&env.src, &env.dst);
    env.verify_log_ok(Some(&first.job));
    let show = env.show_json(&first.job);
    assert_eq!(
        (
            show["state"].as_str(),
            show["failed"].as_u64(),
            show["copied"].as_u64()
        ),
        (Some("succeeded"), Some(0), Some(40))
    );
}

#[test]
fn replay_recopies_a_blob_whose_source_changed_since_it_was_copied() {
    let env = Env::new();
    make_tree(&env.src, &[("a", b"a"), ("b", b"b"), ("x.txt", b"x")]);
    write(&env.dst.join("x.txt/inner"), b"");
    let job = env.copy(&[]).run().code(1).summary().job;
    fs::remove_dir_all(env.dst.join("x.txt")).unwrap();
    // `a` changed after attempt 1 copied it: its etag no longer matches.
    write(&env.src.join("a"), b"changed a");
    set_mtime(&env.src.join("a"), now_secs() + 60, 0);
    let replay = env.ferry().args(["replay", &job]).run().success().summary();
    assert_eq!((replay.copied, replay.resumed), (2, 1));
    let events = env.events(Some(&job));
    assert_eq!(
        names_in_attempt(&events, "BlobCopied", 2),
        ["a", "x.txt"].map(String::from).into()
    );
    assert_same_tree(&env.src, &env.dst);
}

#[test]
fn failures_listed_by_show_are_those_of_the_latest_attempt() {
    let env = Env::new();
    make_tree(
        &env.src,
        &[("ok.txt", b"fine"), ("gone.txt", b"will be removed")],
    );
    write(&env.dst.join("gone.txt").join("inner"), b"blocker");
    let first = env.copy(&[]).run().code(1).summary();
    let show = env.show_json(&first.job);
    assert_eq!(show["failures_total"], 1, "{show}");
    assert_eq!(show["failures"][0]["name"], "gone.txt");

    // The failing source file is removed: the replay succeeds and the old
    // failure no longer counts as outstanding.
    fs::remove_file(env.src.join("gone.txt")).unwrap();
    env.ferry().args(["replay", &first.job]).run().success();
    let show = env.show_json(&first.job);
    assert_eq!(
        (show["failed"].as_u64(), show["failures_total"].as_u64()),
        (Some(0), Some(0)),
        "{show}"
    );
}
