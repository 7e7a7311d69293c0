//! What ferry prints: `--quiet`, and plain output when not on a terminal.

use crate::util::*;

#[test]
fn quiet_prints_nothing_on_success() {
    let env = Env::new();
    make_tree(&env.src, &[("a", b"1"), ("b/c", b"2")]);
    for cmd in [&["--quiet", "copy"][..], &["copy", "-q"]] {
        let out = env
            .ferry()
            .args(cmd)
            .arg(&env.src)
            .arg(&env.dst)
            .args(["--mode", "full"])
            .run()
            .success();
        assert_eq!((out.stdout.as_str(), out.stderr.as_str()), ("", ""));
    }
    assert_same_tree(&env.src, &env.dst);
    assert_eq!(env.jobs_json().len(), 2);
    let out = env
        .ferry()
        .args(["--quiet", "submit"])
        .arg(&env.src)
        .arg(&env.dst)
        .run()
        .success();
    // Its result, the job id, is not chatter: `J=$(ferry submit -q ...)`.
    assert_eq!(out.stderr, "");
    assert_eq!(out.stdout.trim().len(), 36, "{}", out.stdout);
    // The second `run` finds nothing queued, and says nothing about it.
    for cmd in [
        &["--quiet", "run"][..],
        &["--quiet", "run"],
        &["--quiet", "verify-log"],
    ] {
        let out = env.ferry().args(cmd).run().success();
        assert_eq!(
            (out.stdout.as_str(), out.stderr.as_str()),
            ("", ""),
            "{}",
            out.cmd
        );
    }
    assert_eq!(env.jobs_json().len(), 3);
    assert!(env.jobs_json().iter().all(|j| j["state"] == "succeeded"));
}

#[test]
fn quiet_still_reports_errors_and_failures() {
    let env = Env::new();
    make_tree(&env.src, &[("x.txt", b"x")]);
    write(&env.dst.join("x.txt/inner"), b"");
    let out = env
        .ferry()
        .arg("--quiet")
        .arg("copy")
        .arg(&env.src)
        .arg(&env.dst)
        .run()
        .code(1);
    // Failed blobs are errors: one line, naming where to see them.
    assert_eq!(out.stdout, "");
    let lines: Vec<&str> = out.stderr.lines().collect();
    assert_eq!(lines.len(), 1, "{}", out.stderr);
    assert!(
        lines[0].contains("completed with failures")
            && lines[0].contains("failed 1")
            && lines[0].contains("`ferry show "),
        "{}",
        out.stderr
    );
    env.ferry()
        .arg("--quiet")
        .arg("copy")
        .arg(env.path("missing"))
        .arg(&env.dst)
        .run()
        .error(2, "does not exist");
}

#[test]
fn without_a_terminal_copy_prints_only_the_summary_line() {
    let env = Env::new();
    let mut files = Vec::new();
    for i in 0..23 {
        files.push((format!("d{}/f{i}", i % 3), format!("{i:>7}\n")));
    }
    for (n, c) in &files {
        write(&env.src.join(n), c);
    }
    let out = env.copy(&[]).run().success();
    assert!(
        out.stderr.is_empty(),
        "stderr not empty (progress bar?): {:?}",
        out.stderr
    );
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert_eq!(lines.len(), 1, "{:?}", out.stdout);
    assert!(
        !out.stdout.contains('\x1b') && !out.stdout.contains('\r'),
        "{:?}",
        out.stdout
    );
    let s = Summary::parse(lines[0]);
    assert_eq!(
        (
            s.attempt,
            s.status.as_str(),
            s.copied,
            s.skipped,
            s.failed,
            s.resumed
        ),
        (1, "succeeded", 23, 0, 0, 0)
    );
    assert!(
        lines[0].contains("copied 23 files (184 B), skipped 0, failed 0 in "),
        "{}",
        lines[0]
    );
    assert!(lines[0].ends_with('s'));
    assert!(!lines[0].contains("already done"));

    // Runs with nothing to do look the same.
    let again = env.copy(&[]).run().success();
    assert!(again.stderr.is_empty());
    assert_eq!(again.stdout.lines().count(), 1);
    assert!(
        again
            .stdout
            .contains("copied 0 files (0 B), skipped 23, failed 0 in "),
        "{}",
        again.stdout
    );
}

#[test]
fn replay_summary_counts_already_done_blobs() {
    let env = Env::new();
    make_tree(&env.src, &[("a", b"a"), ("b", b"b"), ("x.txt", b"x")]);
    write(&env.dst.join("x.txt/inner"), b"");
    let job = env.copy(&[]).run().code(1).summary().job;
    std::fs::remove_dir_all(env.dst.join("x.txt")).unwrap();
    let out = env.ferry().args(["replay", &job]).run().success();
    assert!(out.stderr.is_empty(), "{}", out.stderr);
    assert_eq!(out.stdout.lines().count(), 1);
    assert!(
        out.stdout.starts_with(&format!("job {job} attempt 2: succeeded: copied 1 files (1 B), skipped 0, failed 0, 2 already done in ")),
        "{}",
        out.stdout
    );
}

#[test]
fn a_source_that_lists_nothing_succeeds_with_a_warning() {
    let env = Env::new();
    std::fs::create_dir_all(env.src.join("only/empty/folders")).unwrap();
    let out = env.copy(&[]).run().success();
    assert_eq!(out.summary().copied, 0);
    let warning: Vec<&str> = out.stderr.lines().collect();
    assert_eq!(warning.len(), 1, "{}", out.stderr);
    assert!(
        warning[0].starts_with("ferry: warning: nothing to copy:")
            && warning[0].contains(env.src.to_str().unwrap()),
        "{}",
        out.stderr
    );
    // Nothing new to copy is not nothing listed: no warning.
    make_tree(&env.src, &[("a", b"a")]);
    env.copy(&[]).run().success();
    let again = env.copy(&[]).run().success();
    assert!(again.stderr.is_empty(), "{}", again.stderr);
    // --quiet stays quiet.
    std::fs::remove_file(env.src.join("a")).unwrap();
    let quiet = env.copy(&["--quiet"]).run().success();
    assert!(quiet.stderr.is_empty(), "{}", quiet.stderr);
}
