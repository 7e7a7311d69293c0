//! SIGINT / SIGTERM / SIGHUP: the first signal stops the job at blob boundaries,
//! records it as interrupted and exits 130; `ferry replay` completes it.

use std::time::Duration;

use crate::util::*;

const LONG: Duration = Duration::from_secs(120);

fn interrupt_and_replay(sig: i32) {
    let env = Env::new();
    let src = big_tree();
    let child = env
        .ferry()
        .arg("copy")
        .arg(src)
        .arg(&env.dst)
        .args(["--parallel", "1"])
        .spawn();
    let some = env.dst.join(big_dir(3));
    wait_until(LONG, "the copy is under way", || some.exists());
    child.signal(sig);
    let out = child.wait_timeout(LONG).code(130);
    assert!(
        out.stderr.contains("stopping after in-flight copies"),
        "{}",
        out.stderr
    );
    let s = out.summary();
    assert_eq!(
        (s.attempt, s.status.as_str(), s.failed),
        (1, "interrupted (ferry replay continues it)", 0)
    );
    assert!(s.copied > 0 && (s.copied as usize) < BIG_FILES, "{s:?}");

    // Every file under a real name is complete; no temp file is left.
    let present = assert_dst_files_complete(src, &env.dst);
    assert_eq!(present as u64, s.copied, "files in dst vs copies reported");

    let events = env.events(Some(&s.job));
    assert_gap_free(&events);
    let last = events.last().unwrap();
    assert_eq!(ev_type(last), "JobInterrupted", "last event: {last}");
    assert_eq!(ev_data(last)["attempt"], 1);
    assert!(
        ev_data(last)["reason"]
            .as_str()
            .is_some_and(|r| r.contains("signal")),
        "{last}"
    );
    assert!(of_type(&events, "JobFinished").is_empty());
    // The log and the destination agree: each copied event is a file there.
    let copied1 = names_in_attempt(&events, "BlobCopied", 1);
    assert_eq!(copied1.len() as u64, s.copied);
    assert_eq!(copied1, list_files(&env.dst).into_iter().collect());
    assert_eq!(env.show_json(&s.job)["state"], "interrupted");

    let replay = env
        .ferry()
        .args(["replay", &s.job])
        .run()
        .success()
        .summary();
    assert_eq!((replay.attempt, replay.status.as_str()), (2, "succeeded"));
    assert_eq!(
        replay.resumed, s.copied,
        "attempt-1 copies must count as already done"
    );
    assert_eq!(
        (replay.copied, replay.skipped),
        ((BIG_FILES as u64) - s.copied, 0)
    );
    assert_same_tree(src, &env.dst);
    let events = env.events(Some(&s.job));
    assert_gap_free(&events);
    assert!(copied1.is_disjoint(&names_in_attempt(&events, "BlobCopied", 2)));
    env.verify_log_ok(None);
}

#[test]
fn sigint_stops_at_blob_boundaries_exits_130_and_replay_completes() {
    interrupt_and_replay(libc::SIGINT);
}

#[test]
fn sigterm_stops_at_blob_boundaries_exits_130_and_replay_completes() {
    interrupt_and_replay(libc::SIGTERM);
}

#[test]
fn sighup_of_a_closed_terminal_stops_like_sigterm() {
    interrupt_and_replay(libc::SIGHUP);
}

#[test]
fn sigint_during_run_stops_the_queue() {
    let env = Env::new();
    let src = big_tree();
    let first = env
        .ferry()
        .arg("submit")
        .arg(src)
        .arg(&env.dst)
        .args(["--parallel", "1"])
        .run()
        .success();
    let first = first.stdout.trim().to_string();
    let small = env.path("small");
    make_tree(&small, &[("a", b"a")]);
    let second = env
        .ferry()
        .arg("submit")
        .arg(&small)
        .arg(env.path("dst2"))
        .run()
        .success();
    let second = second.stdout.trim().to_string();

    let child = env.ferry().arg("run").spawn();
    let some = env.dst.join(big_dir(3));
    wait_until(LONG, "the first job is under way", || some.exists());
    child.signal(libc::SIGINT);
    let out = child.wait_timeout(LONG).code(130);
    assert_eq!(
        out.summaries().len(),
        1,
        "run went on after the signal: {}",
        out.stdout
    );
    assert_eq!(env.show_json(&first)["state"], "interrupted");
    assert_eq!(
        env.show_json(&second)["state"],
        "queued",
        "the next job must stay queued"
    );
    assert!(!env.path("dst2").exists());
}
