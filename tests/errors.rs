//! Bad input and broken state: one `ferry: error:` line, the documented exit
//! code, never a panic (every `Out` checks stderr for panics).

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

use crate::util::*;

/// A rejected copy enqueues nothing and creates no destination.
fn assert_nothing_enqueued(env: &Env) {
    assert!(env.jobs_json().is_empty(), "a rejected job was enqueued");
}

#[test]
fn missing_source_is_bad_input() {
    let env = Env::new();
    env.ferry()
        .arg("copy")
        .arg(env.path("nope"))
        .arg(&env.dst)
        .run()
        .error(2, "does not exist");
    env.ferry()
        .arg("submit")
        .arg(env.path("nope"))
        .arg(&env.dst)
        .run()
        .error(2, "does not exist");
    assert_nothing_enqueued(&env);
}

#[test]
fn destination_inside_source_is_bad_input() {
    let env = Env::new();
    make_tree(&env.src, &[("a", b"1")]);
    env.ferry()
        .arg("copy")
        .arg(&env.src)
        .arg(env.src.join("backup"))
        .run()
        .error(2, "inside the source");
    // Also when spelled with `..` or through a symlink to the source.
    let link = env.path("link-to-src");
    std::os::unix::fs::symlink(&env.src, &link).unwrap();
    env.ferry()
        .arg("copy")
        .arg(&env.src)
        .arg(link.join("x"))
        .run()
        .error(2, "inside the source");
    env.ferry()
        .arg("copy")
        .arg(&env.src)
        .arg(env.dst.join("../src/y"))
        .run()
        .error(2, "inside the source");
    assert!(!env.src.join("backup").exists());
    assert_nothing_enqueued(&env);
}

#[test]
fn source_inside_destination_is_bad_input() {
    let env = Env::new();
    make_tree(&env.src, &[("a", b"1")]);
    env.ferry()
        .arg("copy")
        .arg(&env.src)
        .arg(env.dir.path())
        .run()
        .error(2, "inside the destination");
    env.ferry()
        .arg("copy")
        .arg(&env.src)
        .arg(&env.src)
        .run()
        .error(2, "are the same");
    assert_nothing_enqueued(&env);
}

#[test]
fn destination_that_is_a_file_is_bad_input() {
    let env = Env::new();
    make_tree(&env.src, &[("a", b"1")]);
    let file = env.path("file");
    write(&file, b"i am a file");
    env.ferry()
        .arg("copy")
        .arg(&env.src)
        .arg(&file)
        .run()
        .error(2, "not a folder");
    assert_eq!(fs::read(&file).unwrap(), b"i am a file");
    assert_nothing_enqueued(&env);
}

#[test]
fn source_that_is_a_file_is_bad_input() {
    let env = Env::new();
    let file = env.src.join("single.txt");
    write(&file, b"1");
    env.ferry()
        .arg("copy")
        .arg(&file)
        .arg(&env.dst)
        .run()
        .error(2, "not a folder");
    assert_nothing_enqueued(&env);
}

#[test]
fn account_address_without_config_is_bad_input() {
    let env = Env::new();
    make_tree(&env.src, &[("a", b"1")]);
    env.ferry()
        .arg("copy")
        .arg(&env.src)
        .arg("prod:photos/2024")
        .run()
        .error(2, "unknown account \"prod\"");
    env.ferry()
        .arg("copy")
        .arg("backup:x")
        .arg(&env.dst)
        .run()
        .error(2, "unknown account");
    assert_nothing_enqueued(&env);
}

/// clap rejects these before ferry runs: exit 2 and one `ferry: error:`
/// line carrying clap's message and a pointer to --help, no panic.
fn assert_usage_error(out: Out, needle: &str) {
    let out = out.code(2);
    assert_eq!(out.stderr.lines().count(), 1, "{}: {}", out.cmd, out.stderr);
    let first = out.stderr.lines().next().unwrap_or("");
    assert!(
        first.starts_with("ferry: error: ") && first.ends_with("see `ferry --help`"),
        "{}: {}",
        out.cmd,
        out.stderr
    );
    assert!(
        first.contains(needle),
        "{}: {first:?} lacks {needle:?}",
        out.cmd
    );
    assert!(out.stdout.is_empty());
}

#[test]
fn parallel_zero_is_bad_input() {
    let env = Env::new();
    make_tree(&env.src, &[("a", b"1")]);
    assert_usage_error(env.copy(&["--parallel", "0"]).run(), "--parallel");
    assert_usage_error(env.copy(&["--parallel", "-3"]).run(), "-3");
    assert_usage_error(env.copy(&["--parallel", "5000"]).run(), "--parallel");
    assert_usage_error(env.copy(&["--parallel", "lots"]).run(), "--parallel");
    assert_usage_error(
        env.ferry().args(["run", "--parallel", "0"]).run(),
        "--parallel",
    );
    assert!(
        !env.state.join("db").exists(),
        "state opened for a command line clap rejects"
    );
}

#[test]
fn unknown_mode_is_bad_input() {
    let env = Env::new();
    make_tree(&env.src, &[("a", b"1")]);
    assert_usage_error(
        env.copy(&["--mode", "sometimes"]).run(),
        "unknown mode \"sometimes\"",
    );
    assert_usage_error(
        env.copy(&["--mode", "full", "--incremental"]).run(),
        "cannot be used with",
    );
    assert_usage_error(env.ferry().arg("frobnicate").run(), "frobnicate");
    assert_usage_error(env.ferry().arg("copy").arg(&env.src).run(), "required");
    assert!(!env.dst.join("a").exists());
}

#[test]
fn unknown_job_is_exit_5_for_every_command_that_takes_one() {
    let env = Env::new();
    make_tree(&env.src, &[("a", b"1")]);
    env.copy_ok(&[]);
    for id in [
        "01234567-89ab-7def-8123-456789abcdef",
        "ffff",
        "not-a-job",
        "",
    ] {
        for cmd in [
            &["show", id][..],
            &["replay", id],
            &["events", id],
            &["events", id, "--json"],
            &["verify-log", id],
        ] {
            let out = env.ferry().args(cmd).run();
            out.error(5, "no job matches");
        }
    }
}

#[test]
fn ambiguous_prefix_is_exit_5() {
    let env = Env::new();
    make_tree(&env.src, &[("a", b"1")]);
    let a = env.copy_ok(&[]);
    let b = env.copy_ok(&[]);
    // UUIDv7 ids made close together share their leading timestamp digits.
    let common = a.chars().zip(b.chars()).take_while(|(x, y)| x == y).count();
    assert!(common >= 4, "{a} {b}");
    env.ferry()
        .args(["show", &a[..4]])
        .run()
        .error(5, "ambiguous");
}

#[test]
fn replay_of_a_succeeded_job_is_refused_with_exit_7() {
    let env = Env::new();
    make_tree(&env.src, &[("a", b"1")]);
    let job = env.copy_ok(&[]);
    let before = env.events(Some(&job)).len();
    env.ferry()
        .args(["replay", &job])
        .run()
        .error(7, "already succeeded");
    assert_eq!(
        env.events(Some(&job)).len(),
        before,
        "a refused replay wrote events"
    );
}

#[test]
fn state_dir_locked_by_a_running_ferry_is_exit_3_naming_its_pid() {
    let env = Env::new();
    let big = big_tree();
    let copy = env
        .ferry()
        .arg("copy")
        .arg(big)
        .arg(&env.dst)
        .args(["--parallel", "1"])
        .spawn();
    let first_dir = env.dst.join(big_dir(0));
    wait_until(
        Duration::from_secs(60),
        "the copy has written files",
        || has_entries(&first_dir),
    );
    // Freeze it so it holds the lock for as long as this test needs.
    copy.signal(libc::SIGSTOP);
    for cmd in [&["jobs"][..], &["events"], &["verify-log"], &["run"]] {
        env.ferry()
            .args(cmd)
            .run()
            .error(3, &format!("pid {}", copy.pid()));
    }
    env.ferry()
        .arg("copy")
        .arg(big)
        .arg(env.path("dst2"))
        .run()
        .error(3, "in use by another ferry");
    assert!(!env.path("dst2").exists());
    let out = copy.kill();
    assert_eq!(out.signal, Some(libc::SIGKILL));
    // Once it is gone the state dir is usable again.
    assert_eq!(env.jobs_json()[0]["state"], "interrupted");
}

#[test]
fn corrupt_state_dir_is_exit_4() {
    let env = Env::new();
    make_tree(&env.src, &[("a", b"1")]);
    env.copy_ok(&[]);
    let db = env.state.join("db");
    let mut n = 0;
    for e in fs::read_dir(&db).unwrap() {
        let p = e.unwrap().path();
        if p.is_file() {
            let garbage: Vec<u8> = (0..4096u32)
                .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
                .collect();
            fs::write(&p, garbage).unwrap();
            n += 1;
        }
    }
    assert!(n > 0, "no files under {}", db.display());
    for cmd in [
        &["jobs"][..],
        &["events", "--json"],
        &["verify-log"],
        &["run"],
    ] {
        let out = env.ferry().args(cmd).run().error(4, "corrupt");
        assert!(!out.stderr.contains("backtrace"), "{}", out.stderr);
    }
    env.copy(&[]).run().error(4, "corrupt");
}

#[test]
fn state_dir_that_is_a_file_is_exit_4() {
    let env = Env::new();
    make_tree(&env.src, &[("a", b"1")]);
    let file = env.path("state-file");
    write(&file, b"not a dir");
    env.ferry_no_state()
        .arg("--state")
        .arg(&file)
        .args(["jobs"])
        .run()
        .error(4, "state dir");
    env.ferry_no_state()
        .arg("--state")
        .arg(&file)
        .arg("copy")
        .arg(&env.src)
        .arg(&env.dst)
        .run()
        .error(4, "state dir");
    assert!(!env.dst.join("a").exists());
}

fn have_setpriv() -> bool {
    std::process::Command::new("setpriv")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
}

#[test]
fn unreadable_source_file_fails_that_blob_and_the_job_goes_on() {
    assert!(
        have_setpriv(),
        "setpriv (util-linux) is needed to drop root's DAC override"
    );
    let env = Env::new();
    make_tree(
        &env.src,
        &[("a", b"a"), ("secret", b"s3cret"), ("z/last", b"z")],
    );
    fs::set_permissions(env.src.join("secret"), fs::Permissions::from_mode(0o000)).unwrap();
    let out = env.copy(&[]).run_without_dac_override().code(1);
    let s = out.summary();
    assert_eq!(
        (s.status.as_str(), s.copied, s.failed),
        ("completed with failures", 2, 1)
    );
    assert!(out.stderr.is_empty(), "{}", out.stderr);
    assert_eq!(fs::read(env.dst.join("a")).unwrap(), b"a");
    assert_eq!(fs::read(env.dst.join("z/last")).unwrap(), b"z");
    assert!(!env.dst.join("secret").exists());
    assert!(temp_files(&env.dst).is_empty());

    let events = env.events(Some(&s.job));
    let failed = of_type(&events, "BlobFailed");
    assert_eq!(failed.len(), 1);
    assert_eq!(ev_name(failed[0]), "secret");
    assert_eq!(ev_data(failed[0])["error_kind"], "permission-denied");
    let show = env.show_json(&s.job);
    assert_eq!(show["failures"][0]["error_kind"], "permission-denied");

    // Fix the permission; a replay copies just that blob.
    fs::set_permissions(env.src.join("secret"), fs::Permissions::from_mode(0o644)).unwrap();
    let replay = env
        .ferry()
        .args(["replay", &s.job])
        .run()
        .success()
        .summary();
    assert_eq!((replay.copied, replay.resumed), (1, 2));
    assert_same_tree(&env.src, &env.dst);
}

#[test]
fn vanished_source_after_submit_fails_the_job_with_exit_6() {
    let env = Env::new();
    make_tree(&env.src, &[("a", b"1")]);
    let id = env.submit(&env.src, &env.dst);
    fs::remove_dir_all(&env.src).unwrap();
    let out = env.ferry().arg("run").run().code(6);
    assert!(
        out.stderr
            .lines()
            .any(|l| l.starts_with("ferry: error: ") && l.contains("failed")),
        "{}",
        out.stderr
    );
    let v = env.show_json(&id);
    assert_eq!(v["state"], "failed");
    assert!(
        v["error"].as_str().is_some_and(|e| e.contains("listing")),
        "{v}"
    );
}

#[test]
fn missing_arguments_are_named_on_the_one_error_line() {
    let env = Env::new();
    let out = env.ferry().arg("copy").run().code(2);
    assert_eq!(out.stderr.lines().count(), 1, "{}", out.stderr);
    assert!(out.stderr.contains("<SRC> <DST>"), "{}", out.stderr);
    let out = env.ferry().args(["schedule", "add", "n"]).run().code(2);
    assert!(out.stderr.contains("<CRON> <SRC> <DST>"), "{}", out.stderr);
}

#[test]
fn a_replay_whose_account_left_the_config_is_refused_without_an_attempt() {
    let env = Env::new();
    make_tree(&env.src, &[("a.txt", b"a")]);
    let config = env.state.join("ferry.toml");
    write(
        &config,
        "[accounts.dev]\nconnection_string = \"UseDevelopmentStorage=true\"\n",
    );
    let job = env
        .ferry()
        .arg("submit")
        .arg(&env.src)
        .arg("dev:photos")
        .run()
        .success()
        .stdout
        .trim()
        .to_string();
    write(&config, "");
    // By hand: refused as `ferry copy` would be, nothing recorded.
    env.ferry()
        .args(["replay", &job])
        .run()
        .error(2, "unknown account \"dev\"");
    assert!(env.show_json(&job)["attempts"]
        .as_array()
        .unwrap()
        .is_empty());
    // From the queue: a failed attempt on the record, so the queue moves on.
    let out = env.ferry().arg("run").run();
    assert_eq!(out.code, Some(6), "{out:?}");
    let show = env.show_json(&job);
    assert_eq!(show["attempts"].as_array().unwrap().len(), 1, "{show}");
    assert_eq!(show["state"], "failed");
}

/// A source with `a.txt`, and a local account `nas` on a folder of its own
/// (a share, mounted).
fn nas_account() -> (Env, std::path::PathBuf) {
    let env = Env::new();
    make_tree(&env.src, &[("a.txt", b"a")]);
    let root = env.path("nas");
    std::fs::create_dir(&root).unwrap();
    write(
        &env.state.join("ferry.toml"),
        format!("[accounts.nas]\nlocal = {:?}\n", root.to_str().unwrap()),
    );
    (env, root)
}

#[test]
fn a_local_account_folder_gone_after_submit_is_not_recreated() {
    let (env, root) = nas_account();
    env.submit(&env.src, "nas:photos");
    // The share is unmounted before the queue runs.
    std::fs::remove_dir(&root).unwrap();
    let out = env.ferry().arg("run").run();
    assert_eq!(out.code, Some(6), "{out:?}");
    assert!(
        out.stdout.contains("does not exist (not mounted?)"),
        "{out:?}"
    );
    assert!(!root.exists(), "the account folder was made and written");
}

#[test]
fn the_history_of_a_local_account_is_found_while_its_share_is_unmounted() {
    let (env, root) = nas_account();
    env.ferry()
        .arg("copy")
        .arg(&env.src)
        .arg("nas:photos")
        .run()
        .success();
    std::fs::rename(&root, env.path("elsewhere")).unwrap();
    // Not a copy: nothing needs the folder, and the lines are in the log.
    let out = env
        .ferry()
        .args(["history", "nas:photos/a.txt", "--json"])
        .run()
        .success();
    let lines: Vec<serde_json::Value> = out
        .stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 1, "{}", out.stdout);
    assert!(!root.exists(), "a lookup made the account folder");
}

#[test]
fn negative_numbers_are_invalid_values_not_unknown_arguments() {
    let env = Env::new();
    let cases: [(&[&str], &str); 4] = [
        (
            &["prune", "--older-than", "1d", "--keep-last", "-1"],
            "invalid value '-1' for '--keep-last <N>'",
        ),
        (
            &["daemon", "--max-retries", "-1"],
            "invalid value '-1' for '--max-retries <MAX_RETRIES>'",
        ),
        (&["jobs", "--since", "-5m"], "-5m"),
        (&["events", "--since", "-1"], "-1"),
    ];
    for (args, needle) in cases {
        let out = env.ferry().args(args).run().code(2);
        assert!(out.stderr.contains(needle), "{args:?}: {}", out.stderr);
        assert!(
            !out.stderr.contains("unexpected argument"),
            "{args:?}: {}",
            out.stderr
        );
    }
}

#[test]
fn a_download_into_a_file_path_is_refused_before_any_job() {
    let env = Env::new();
    write(
        &env.state.join("ferry.toml"),
        "[accounts.dev]\nconnection_string = \"UseDevelopmentStorage=true\"\n",
    );
    let file = env.path("a-file");
    write(&file, "not a folder");
    env.ferry()
        .arg("copy")
        .arg("dev:photos")
        .arg(&file)
        .run()
        .error(2, "exists and is not a folder");
    assert!(env.jobs_json().is_empty(), "a job was recorded");
    assert_eq!(fs::read_to_string(&file).unwrap(), "not a folder");
}
