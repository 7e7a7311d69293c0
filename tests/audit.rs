//! history, verify-log over the history index, prune and import, end to end.

use std::time::Duration;

use ferry_engine::log::keys;
use ferry_engine::{Engine, JobId};
use serde_json::Value;

use crate::util::*;

/// Three jobs on `src/`: a.txt and b.txt copied (new); nothing newer
/// (skipped); a.txt changed (copied, newer). c.txt fails every time: the
/// destination has a folder of that name.
fn three_jobs(env: &Env) -> [String; 3] {
    make_tree(
        &env.src,
        &[("a.txt", b"a1"), ("sub/b.txt", b"b"), ("c.txt", b"c")],
    );
    std::fs::create_dir(env.dst.join("c.txt")).unwrap();
    let old = now_secs() - 100;
    set_mtime(&env.src.join("a.txt"), old, 0);
    let first = env.copy(&[]).run().code(1).summary().job;
    let second = env.copy(&[]).run().code(1).summary().job;
    write(&env.src.join("a.txt"), "a2");
    set_mtime(&env.src.join("a.txt"), old + 50, 0);
    let third = env.copy(&[]).run().code(1).summary().job;
    [first, second, third]
}

fn history(env: &Env, address: &str, extra: &[&str]) -> Vec<Value> {
    let out = env
        .ferry()
        .arg("history")
        .arg(address)
        .arg("--json")
        .args(extra)
        .run()
        .success();
    parse_json_lines(&out.stdout)
}

fn full_id(env: &Env, job: &str) -> String {
    env.show_json(job)["id"].as_str().unwrap().to_string()
}

#[test]
fn history_lists_every_job_on_a_blob_newest_first_with_reason_etag_and_side() {
    let env = Env::new();
    let jobs = three_jobs(&env);
    let ids: Vec<String> = jobs.iter().map(|j| full_id(&env, j)).collect();

    let a = env.src.join("a.txt");
    let lines = history(&env, a.to_str().unwrap(), &[]);
    let seen: Vec<(&str, &str, &str, &str)> = lines
        .iter()
        .map(|l| {
            (
                l["job"].as_str().unwrap(),
                l["status"].as_str().unwrap(),
                l["reason"].as_str().unwrap(),
                l["side"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        seen,
        [
            (ids[2].as_str(), "copied", "newer", "source"),
            (ids[1].as_str(), "skipped", "not-newer", "source"),
            (ids[0].as_str(), "copied", "new", "source"),
        ]
    );
    // The source etag each time: the change shows.
    assert_eq!(lines[1]["etag"], lines[2]["etag"]);
    assert_ne!(lines[0]["etag"], lines[1]["etag"]);
    assert!(lines.iter().all(|l| l["attempt"] == 1));

    // The same blob at the destination, and a failure with its error.
    let at_dst = history(&env, env.dst.join("a.txt").to_str().unwrap(), &[]);
    assert_eq!(at_dst.len(), 3);
    assert!(at_dst.iter().all(|l| l["side"] == "destination"));
    let c = history(&env, env.dst.join("c.txt").to_str().unwrap(), &[]);
    assert_eq!(c.len(), 3);
    assert!(c.iter().all(|l| l["status"] == "failed"
        && l["error_kind"] == "destination-conflict"
        && l["message"].as_str().unwrap().contains("c.txt")));

    // A folder, a relative path, --limit, and the text form.
    let all = history(&env, "src", &[]);
    assert_eq!(all.len(), 9, "3 blobs x 3 jobs");
    assert_eq!(history(&env, "src/sub", &["--limit", "2"]).len(), 2);
    let text = env
        .ferry()
        .args(["history", "src/a.txt"])
        .run()
        .success()
        .stdout;
    let first = text.lines().next().unwrap();
    for want in ["copied (newer)", "source", &ids[2], "attempt 1"] {
        assert!(first.contains(want), "{want:?} not in {first:?}");
    }
    // An account address nobody configured still reads as one.
    let none = env
        .ferry()
        .args(["history", "prod:photos/2024/a.jpg"])
        .run()
        .success()
        .stdout;
    assert!(none.contains("prod:photos/2024/a.jpg"), "{none}");
    env.verify_log_ok(None);
}

/// Overwrites `victim` with the stored value of `donor` in the state dir
/// (no ferry process may hold it).
fn transplant(env: &Env, donor: &[u8], victim: &[u8]) {
    let engine = Engine::open(&env.state).unwrap();
    let bytes = engine.log().get_raw_for_tests(donor).unwrap().unwrap();
    engine.log().put_raw_for_tests(victim, &bytes).unwrap();
    engine.log().close();
}

#[test]
fn verify_log_names_a_corrupt_history_line_summary_or_checkpoint_entry() {
    let env = Env::new();
    let jobs = three_jobs(&env);
    let [first, second, _] = [0, 1, 2].map(|i| JobId(full_id(&env, &jobs[i]).parse().unwrap()));
    // c.txt fails in every job (a folder is in the way): failures keep keys
    // of their own, where copies and skips in name order go into runs.
    let c = env.src.join("c.txt").to_str().unwrap().to_string();
    let seq_of = |job: JobId| {
        history(&env, &c, &[])
            .iter()
            .find(|l| l["job"] == job.to_string())
            .map(|l| l["seq"].as_u64().unwrap())
            .unwrap()
    };
    let (s1, s2) = (seq_of(first), seq_of(second));
    let line1 = keys::history(first, "c.txt", s1);
    let line2 = keys::history(second, "c.txt", s2);
    env.verify_log_ok(None);

    // The first job's line now says what the second job did.
    let engine = Engine::open(&env.state).unwrap();
    let saved = engine.log().get_raw_for_tests(&line1).unwrap().unwrap();
    engine.log().close();
    drop(engine);
    transplant(&env, &line2, &line1);
    verify_fails(&env, "history line of");
    verify_fails(&env, "c.txt\" (seq");
    let out = env.ferry().arg("verify-log").arg(&jobs[0]).run().code(8);
    assert!(out.stderr.contains(&first.to_string()), "{}", out.stderr);
    {
        let engine = Engine::open(&env.state).unwrap();
        engine.log().put_raw_for_tests(&line1, &saved).unwrap();
        engine.log().close();
    }
    env.verify_log_ok(None);

    // A summary, then a checkpoint entry.
    let saved = {
        let engine = Engine::open(&env.state).unwrap();
        let s = engine
            .log()
            .get_raw_for_tests(&keys::summary(first))
            .unwrap();
        engine.log().close();
        s.unwrap()
    };
    transplant(&env, &keys::summary(second), &keys::summary(first));
    verify_fails(&env, "cached summary");
    {
        let engine = Engine::open(&env.state).unwrap();
        engine
            .log()
            .put_raw_for_tests(&keys::summary(first), &saved)
            .unwrap();
        engine.log().close();
    }
    // An entry no event is behind.
    transplant(
        &env,
        &keys::blob(first, "c.txt"),
        &keys::blob(first, "nothing.txt"),
    );
    verify_fails(&env, "checkpoint entry for \"nothing.txt\"");
}

/// `verify-log` exits 8 with one line naming `what`.
fn verify_fails(env: &Env, what: &str) {
    let out = env.ferry().arg("verify-log").run().code(8);
    assert!(
        out.stderr.starts_with("ferry: verify-log: ") && out.stderr.contains(what),
        "{}",
        out.stderr
    );
    assert_eq!(out.stderr.lines().count(), 1, "{}", out.stderr);
}

#[test]
fn prune_keeps_job_level_events_summary_and_history_and_refuses_replay() {
    let env = Env::new();
    let jobs = three_jobs(&env);
    let before = env.events(Some(&jobs[0])).len();
    assert_eq!(before, 7, "submitted, started, 3 blobs, listing, finished");
    let a = env.src.join("a.txt").to_str().unwrap().to_string();
    let history_before = history(&env, &a, &[]);
    let show_before = env.show_json(&jobs[0]);
    std::thread::sleep(Duration::from_millis(1100));

    // Nothing is a day old.
    let out = env
        .ferry()
        .args(["prune", "--older-than", "1d"])
        .run()
        .success();
    assert!(out.stdout.contains("pruned 0 job(s)"), "{}", out.stdout);
    let out = env
        .ferry()
        .args([
            "prune",
            "--older-than",
            "1s",
            "--keep-last",
            "1",
            "--dry-run",
        ])
        .run()
        .success();
    // Every blob of the two jobs' checkpoints, whether in runs (kept as
    // history) or keys of their own (failures, late copies).
    let entries = |out: &str, verb: &str| -> u32 {
        let head = format!("{verb} 2 job(s): 6 blob events, ");
        let rest = out.split(&head).nth(1).unwrap_or_else(|| panic!("{out}"));
        let n: u32 = rest.split(' ').next().unwrap().parse().unwrap();
        assert!(
            rest.starts_with(&format!("{n} checkpoint entries")),
            "{out}"
        );
        n
    };
    let would = entries(&out.stdout, "would prune");
    assert_eq!(would, 6, "{}", out.stdout);
    assert_eq!(env.events(Some(&jobs[0])).len(), before, "dry run");

    let out = env
        .ferry()
        .args(["prune", "--older-than", "1s", "--keep-last", "1"])
        .run()
        .success();
    assert_eq!(entries(&out.stdout, "pruned"), would, "{}", out.stdout);
    let kept = env.events(Some(&jobs[0]));
    let kinds: Vec<(u64, &str)> = kept
        .iter()
        .map(|e| (e["seq"].as_u64().unwrap(), ev_type(e)))
        .collect();
    assert_eq!(
        kinds,
        [
            (0, "JobSubmitted"),
            (1, "JobStarted"),
            (kinds[2].0, "ListingCompleted"),
            (6, "JobFinished"),
            (7, "JobPruned")
        ]
    );
    // The counts the removed events folded into, recorded with who pruned.
    let pruned = &kept[4]["event"]["data"];
    assert_eq!(
        pruned["counts"]["copied"], show_before["copied"],
        "{pruned}"
    );
    assert!(pruned["by"].as_str().unwrap().contains('@'), "{pruned}");
    assert_eq!(
        env.events(Some(&jobs[2])).len(),
        before,
        "the newest is kept"
    );
    let show = env.show_json(&jobs[0]);
    assert_eq!(show["copied"], show_before["copied"]);
    // Said where the job is looked at, not only when a replay is refused.
    assert_eq!(
        (show["pruned"].clone(), show_before["pruned"].clone()),
        (true.into(), false.into())
    );
    let table = env.ferry().arg("jobs").run().success().stdout;
    assert_eq!(table.matches("(pruned)").count(), 2, "{table}");
    assert_eq!(history(&env, &a, &[]), history_before);
    env.verify_log_ok(None);

    // Exported and imported elsewhere, the pruned job keeps its counts.
    let file = env.path("pruned.ferry-export");
    env.ferry()
        .args(["export", &jobs[0], "-o"])
        .arg(&file)
        .run()
        .success();
    let other = env.path("state-pruned");
    let mut f = env.ferry_no_state();
    f.arg("--state").arg(&other).arg("import").arg(&file);
    assert!(f.run().success().stdout.contains("a pruned job"));
    let mut f = env.ferry_no_state();
    f.arg("--state")
        .arg(&other)
        .args(["show", &jobs[0], "--json"]);
    let there: Value = serde_json::from_str(&f.run().success().stdout).unwrap();
    assert_eq!(there, env.show_json(&jobs[0]));
    assert_eq!(there["copied"], show_before["copied"]);

    env.ferry()
        .args(["replay", &jobs[0]])
        .run()
        .error(7, "pruned");
    // Nor can it be paused into a queue nothing takes it from.
    env.ferry()
        .args(["pause", &jobs[0]])
        .run()
        .error(7, "was pruned");

    // Compacting rewrites the log; it reads the same afterwards.
    let out = env
        .ferry()
        .args([
            "prune",
            "--older-than",
            "1s",
            "--keep-last",
            "1",
            "--compact",
        ])
        .run()
        .success();
    assert!(out.stdout.contains("pruned 0 job(s)"), "{}", out.stdout);
    assert!(out.stdout.contains("compacted the log:"), "{}", out.stdout);
    assert_eq!(env.show_json(&jobs[0])["copied"], show_before["copied"]);
    assert_eq!(history(&env, &a, &[]), history_before);
    assert_eq!(env.events(Some(&jobs[2])).len(), before);
    env.verify_log_ok(None);
}

/// The archive `ferry export` writes: a header line, then each event as
/// `ferry events --json` prints it.
fn archive(env: &Env, job: &str) -> String {
    let events = env.events(Some(job));
    let mut text = serde_json::json!({
        "ferry_export": 1,
        "schema": 2,
        "job": events[0]["job"],
        "events": events.len(),
    })
    .to_string();
    for e in &events {
        text.push('\n');
        text.push_str(&e.to_string());
    }
    text.push('\n');
    text
}

#[test]
fn an_imported_job_shows_verifies_and_has_the_same_history_as_the_original() {
    let env = Env::new();
    let jobs = three_jobs(&env);
    let file = env.path("job.ferry-export");
    write(&file, archive(&env, &jobs[0]));
    let other = env.path("state2");
    let there = || {
        let mut f = env.ferry_no_state();
        f.arg("--state").arg(&other);
        f
    };

    let out = there().arg("import").arg(&file).run().success();
    assert!(out.stdout.contains("imported job"), "{}", out.stdout);
    assert!(out.stdout.contains("7 events"), "{}", out.stdout);

    let show = |f: &mut Ferry| -> Value {
        let out = f
            .args(["show", &jobs[0], "--json", "--failures", "0"])
            .run()
            .success();
        serde_json::from_str(&out.stdout).unwrap()
    };
    assert_eq!(show(&mut there()), show(&mut env.ferry()));
    let a = env.src.join("a.txt").to_str().unwrap().to_string();
    let mine: Vec<Value> = history(&env, &a, &[])
        .into_iter()
        .filter(|l| full_id(&env, &jobs[0]) == l["job"].as_str().unwrap())
        .collect();
    let theirs = parse_json_lines(
        &there()
            .args(["history", &a, "--json"])
            .run()
            .success()
            .stdout,
    );
    assert_eq!(theirs, mine);
    let out = there().arg("verify-log").run().success();
    assert!(
        out.stdout.starts_with("log ok: 1 jobs, 7 events"),
        "{}",
        out.stdout
    );

    there()
        .arg("import")
        .arg(&file)
        .run()
        .error(2, "already exists");
    write(&file, "not an archive\n");
    there()
        .arg("import")
        .arg(&file)
        .run()
        .error(2, "not a ferry export");

    // A time the log cannot hold (nanoseconds in an i64) is refused up front,
    // naming its line, and nothing is written.
    let far: Vec<String> = archive(&env, &jobs[0])
        .lines()
        .enumerate()
        .map(|(i, l)| {
            let mut v: Value = serde_json::from_str(l).unwrap();
            if i == 3 {
                v["at"] = "2600-01-02T03:04:05Z".into();
            }
            v.to_string()
        })
        .collect();
    write(&file, far.join("\n"));
    let fresh = env.path("state-far");
    let mut f = env.ferry_no_state();
    f.arg("--state").arg(&fresh).arg("import").arg(&file);
    f.run().error(
        2,
        "line 4: a time outside 1677-2262 (2600-01-02T03:04:05+00:00)",
    );
    let mut f = env.ferry_no_state();
    f.arg("--state").arg(&fresh).arg("jobs");
    assert!(!f.run().success().stdout.contains(&jobs[0]));

    // The same job as a schema-1 ferry would have exported it (BlobFailed
    // had `attempts`): upcast on import, it reads the same.
    let old: Vec<String> = archive(&env, &jobs[0])
        .lines()
        .map(|l| {
            let mut v: Value = serde_json::from_str(l).unwrap();
            if v.get("v").is_some() {
                v["v"] = 1.into();
                if ev_type(&v) == "BlobFailed" {
                    let data = v["event"]["data"].as_object_mut().unwrap();
                    let tries = data.remove("tries").unwrap();
                    data.insert("attempts".into(), tries);
                }
            }
            v.to_string()
        })
        .collect();
    assert!(old.iter().any(|l| l.contains("\"attempts\"")));
    write(&file, old.join("\n"));
    let third = env.path("state3");
    let mut f = env.ferry_no_state();
    f.arg("--state").arg(&third).arg("import").arg(&file);
    f.run().success();
    let mut f = env.ferry_no_state();
    f.arg("--state").arg(&third);
    assert_eq!(show(&mut f), show(&mut env.ferry()));

    // What `ferry export` writes imports the same way.
    let exported = env.path("real.ferry-export");
    env.ferry()
        .args(["export", &jobs[1], "-o"])
        .arg(&exported)
        .run()
        .success();
    // `-o -` writes the same archive to stdout, and nothing else.
    let piped = env
        .ferry()
        .args(["export", &jobs[1], "-o", "-"])
        .run()
        .success()
        .stdout;
    assert_eq!(piped, std::fs::read_to_string(&exported).unwrap());
    assert!(!env.path("-").exists());
    there().arg("import").arg(&exported).run().success();
    let out = there()
        .args(["show", &jobs[1], "--json", "--failures", "0"])
        .run()
        .success();
    let mine = env.show_json(&jobs[1]);
    assert_eq!(serde_json::from_str::<Value>(&out.stdout).unwrap(), mine);
    let out = there().arg("verify-log").run().success();
    assert!(
        out.stdout.starts_with("log ok: 2 jobs, 14 events"),
        "{}",
        out.stdout
    );
}

#[test]
fn while_a_daemon_holds_the_state_dir_history_goes_through_it_and_prune_waits() {
    let env = Env::new();
    let jobs = three_jobs(&env);
    // What the state dir answers by itself, to compare with the daemon's
    // streamed answers byte for byte: every line, a limit, the text form,
    // nothing found, and a folder under which nothing ran.
    let queries: [&[&str]; 6] = [
        &["src", "--json"],
        &["src", "--json", "--limit", "2"],
        &["src"],
        &["src/sub/b.txt"],
        &["src/nothing-here"],
        &["src/nothing-here", "--json"],
    ];
    let ask = |q: &[&str]| env.ferry().arg("history").args(q).run().success().stdout;
    let local: Vec<String> = queries.iter().map(|q| ask(q)).collect();
    assert_eq!(parse_json_lines(&local[0]).len(), 9);
    assert!(local[4].starts_with("no job copied, skipped or failed anything at "));
    assert_eq!(local[5], "");

    // Started in another folder: the relative queries are the command's.
    let elsewhere = env.path("elsewhere");
    std::fs::create_dir(&elsewhere).unwrap();
    let mut daemon = env.ferry();
    daemon.cmd.current_dir(&elsewhere);
    let d = daemon.args(["daemon", "--quiet"]).spawn();
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while std::os::unix::net::UnixStream::connect(env.state.join("daemon.sock")).is_err() {
        assert!(std::time::Instant::now() < deadline, "the daemon's socket");
        std::thread::sleep(Duration::from_millis(50));
    }
    for (q, want) in queries.iter().zip(&local) {
        assert_eq!(&ask(q), want, "ferry history {q:?} through the daemon");
    }
    let lines = history(&env, "src/a.txt", &[]);
    assert_eq!(lines.len(), 3, "{lines:?}");
    assert_eq!(lines[0]["job"], full_id_while_daemon(&env, &jobs[2]));
    env.ferry()
        .args(["prune", "--older-than", "1d"])
        .run()
        .error(3, "`ferry prune` needs the daemon stopped");
    d.signal(libc::SIGTERM);
    let out = d.wait_timeout(Duration::from_secs(20));
    assert_eq!(out.code, Some(0), "{out:?}");
}

/// The full id of `job` from `ferry show --json` (answered by the daemon).
fn full_id_while_daemon(env: &Env, job: &str) -> Value {
    env.show_json(job)["id"].clone()
}
