//! `ferry copy`: what lands in the destination, and where state is kept.

use std::fs;
use std::os::unix::fs::PermissionsExt;

use crate::util::*;

fn sample_tree(env: &Env) {
    make_tree(
        &env.src,
        &[
            ("top.txt", b"top level\n"),
            ("empty", b""),
            ("a/b/c/deep.bin", &[0u8, 1, 2, 255, 254, 0, 10, 13]),
            ("a/b/sibling.txt", b"sibling"),
            ("a/empty-too", b""),
            ("with space/file name with spaces.txt", b"spaces"),
            ("ünïcödé/日本語.txt", "こんにちは".as_bytes()),
            ("ünïcödé/emoji 🦀.md", b"crab"),
            (".hidden", b"dotfile"),
            ("x/y", &[7u8; 70_000]),
        ],
    );
    // Distinct mtimes with nanoseconds, some in the past, one in the future.
    set_mtime(&env.src.join("top.txt"), 1_600_000_000, 123_456_789);
    set_mtime(&env.src.join("empty"), 1_000_000_000, 1);
    set_mtime(&env.src.join("a/b/c/deep.bin"), 1_700_000_000, 999_999_999);
    set_mtime(
        &env.src.join("ünïcödé/日本語.txt"),
        now_secs() + 86_400,
        500,
    );
    fs::set_permissions(
        env.src.join("a/b/sibling.txt"),
        fs::Permissions::from_mode(0o600),
    )
    .unwrap();
    fs::set_permissions(env.src.join("x/y"), fs::Permissions::from_mode(0o755)).unwrap();
    // A 255-byte name (the longest a component may be).
    write(
        &env.src.join(format!("long/{}.txt", "n".repeat(251))),
        b"long name",
    );
}

#[test]
fn copies_nested_tree_with_empty_unicode_and_space_names_preserving_bytes_mtimes_and_modes() {
    let env = Env::new();
    sample_tree(&env);
    let out = env.copy(&[]).run().success();
    let s = out.summary();
    assert_eq!((s.attempt, s.status.as_str()), (1, "succeeded"));
    assert_eq!((s.copied, s.skipped, s.failed, s.resumed), (11, 0, 0, 0));
    assert_same_tree(&env.src, &env.dst);
    assert!(temp_files(&env.dst).is_empty());
    // Directories with only empty files and empty files themselves exist.
    assert_eq!(fs::metadata(env.dst.join("empty")).unwrap().len(), 0);

    let events = env.events(Some(&s.job));
    let copied = names_in_attempt(&events, "BlobCopied", 1);
    let expected: std::collections::BTreeSet<String> = list_files(&env.src).into_iter().collect();
    assert_eq!(copied, expected);
    for e in of_type(&events, "BlobCopied") {
        let d = ev_data(e);
        let len = fs::metadata(env.src.join(ev_name(e))).unwrap().len();
        assert_eq!(d["bytes"].as_u64(), Some(len), "{e}");
        assert_eq!(d["reason"], "new", "{e}");
        assert_eq!(d["tries"], 1, "{e}");
    }
}

#[test]
fn folders_it_creates_keep_the_source_folders_permissions() {
    let env = Env::new();
    let modes = [0o700, 0o750, 0o2750, 0o755, 0o777, 0o500];
    for m in modes {
        let dir = env.src.join(format!("d{m:o}"));
        write(&dir.join("inner/f"), "x");
        fs::set_permissions(&dir, fs::Permissions::from_mode(m)).unwrap();
    }
    env.copy(&[]).umask(0o022).run().success();
    for m in modes {
        let got = fs::metadata(env.dst.join(format!("d{m:o}")))
            .unwrap()
            .permissions()
            .mode()
            & 0o7777;
        // The owner keeps full access, or the copy could not fill it.
        assert_eq!(got, m | 0o700, "mode of d{m:o} is {got:o}");
        assert_eq!(
            fs::read(env.dst.join(format!("d{m:o}/inner/f"))).unwrap(),
            b"x"
        );
    }
    for m in modes {
        fs::set_permissions(
            env.src.join(format!("d{m:o}")),
            fs::Permissions::from_mode(0o755),
        )
        .unwrap();
    }
}

#[test]
fn permissions_are_copied_exactly_whatever_the_umask() {
    let env = Env::new();
    let modes = [
        0o600, 0o644, 0o664, 0o666, 0o700, 0o755, 0o775, 0o777, 0o400, 0o4755, 0o1777,
    ];
    for m in modes {
        let p = env.src.join(format!("f{m:o}"));
        write(&p, format!("{m:o}"));
        fs::set_permissions(&p, fs::Permissions::from_mode(m)).unwrap();
    }
    // umask 077 would strip group and other bits from newly created files.
    env.copy(&["--mode", "full"]).umask(0o077).run().success();
    for m in modes {
        let got = fs::metadata(env.dst.join(format!("f{m:o}")))
            .unwrap()
            .permissions()
            .mode()
            & 0o7777;
        assert_eq!(got, m, "mode of f{m:o} is {got:o}");
    }
    assert_same_tree(&env.src, &env.dst);
    // Overwriting an existing file takes the source's mode as well.
    for m in modes {
        fs::set_permissions(
            env.dst.join(format!("f{m:o}")),
            fs::Permissions::from_mode(0o600),
        )
        .unwrap();
    }
    env.copy(&["--mode", "full"]).umask(0o077).run().success();
    assert_same_tree(&env.src, &env.dst);
}

#[test]
fn creates_a_missing_destination_and_its_parents() {
    let env = Env::new();
    make_tree(&env.src, &[("a/f", b"1"), ("g", b"2")]);
    let dst = env.path("new/deeper/dst");
    env.ferry()
        .arg("copy")
        .arg(&env.src)
        .arg(&dst)
        .run()
        .success();
    assert_same_tree(&env.src, &dst);
}

#[test]
fn relative_paths_are_resolved_against_the_working_directory() {
    let env = Env::new();
    make_tree(&env.src, &[("f", b"rel")]);
    // current_dir is the temp dir, so "src" and "dst" are relative.
    let out = env
        .ferry()
        .args(["copy", "src", "./dst/../dst"])
        .run()
        .success();
    assert_same_tree(&env.src, &env.dst);
    let show = env.show_json(&out.summary().job);
    assert_eq!(
        show["spec"]["src"]["local"]["path"],
        env.src.to_str().unwrap()
    );
    assert_eq!(
        show["spec"]["dst"]["local"]["path"],
        env.dst.to_str().unwrap()
    );
}

#[test]
fn special_files_are_skipped_as_not_regular_and_the_job_still_succeeds() {
    let env = Env::new();
    make_tree(&env.src, &[("a.txt", b"a"), ("z.txt", b"z")]);
    let fifo = env.src.join("pipe");
    let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
    // SAFETY: mkfifo with a valid NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o644) }, 0);
    let out = env.copy(&[]).run().success();
    let events = env.events(Some(&out.summary().job));
    let skipped = of_type(&events, "BlobSkipped");
    assert_eq!(skipped.len(), 1, "{skipped:?}");
    assert_eq!(ev_name(skipped[0]), "pipe");
    assert_eq!(ev_data(skipped[0])["reason"], "not-regular-file");
    assert_eq!(list_files(&env.dst), ["a.txt", "z.txt"]);
}

#[test]
fn state_flag_selects_the_state_dir() {
    let env = Env::new();
    make_tree(&env.src, &[("f", b"1")]);
    let other = env.path("elsewhere");
    let out = env
        .ferry_no_state()
        .arg("--state")
        .arg(&other)
        .arg("copy")
        .arg(&env.src)
        .arg(&env.dst)
        .run()
        .success();
    let job = out.summary().job;
    assert!(other.join("db").is_dir(), "no log in --state dir");
    let listed = env
        .ferry_no_state()
        .arg("--state")
        .arg(&other)
        .args(["jobs", "--json"])
        .run()
        .success();
    assert!(listed.stdout.contains(&job));
    // The env's own state dir was not used.
    assert!(env.jobs_json().is_empty());
}

#[test]
fn ferry_home_selects_the_state_dir_and_the_flag_overrides_it() {
    let env = Env::new();
    make_tree(&env.src, &[("f", b"1")]);
    let home = env.path("home");
    let out = env
        .ferry_no_state()
        .env("FERRY_HOME", &home)
        .arg("copy")
        .arg(&env.src)
        .arg(&env.dst)
        .run()
        .success();
    let job = out.summary().job;
    assert!(home.join("db").is_dir(), "no log in FERRY_HOME");
    let via_env = env
        .ferry_no_state()
        .env("FERRY_HOME", &home)
        .args(["jobs", "--json"])
        .run()
        .success();
    assert!(via_env.stdout.contains(&job), "{}", via_env.stdout);

    // --state wins over FERRY_HOME.
    let flag = env
        .ferry_no_state()
        .env("FERRY_HOME", &home)
        .arg("--state")
        .arg(&env.state)
        .args(["jobs", "--json"])
        .run();
    let flag = flag.success();
    assert!(
        !flag.stdout.contains(&job),
        "--state did not override FERRY_HOME"
    );
    assert_eq!(env.jobs_json().len(), 0);
}

#[test]
fn without_flag_or_env_the_state_lives_in_the_user_data_dir() {
    let env = Env::new();
    make_tree(&env.src, &[("f", b"1")]);
    let xdg = env.path("xdg");
    env.ferry_no_state()
        .env("XDG_DATA_HOME", &xdg)
        .env("HOME", env.path("home"))
        .arg("copy")
        .arg(&env.src)
        .arg(&env.dst)
        .run()
        .success();
    assert!(
        xdg.join("ferry/db").is_dir(),
        "state not under $XDG_DATA_HOME/ferry"
    );
}

#[test]
fn copied_files_are_independent_of_the_source() {
    let env = Env::new();
    make_tree(&env.src, &[("f", b"original")]);
    env.copy_ok(&[]);
    write(&env.src.join("f"), b"changed!");
    assert_eq!(fs::read(env.dst.join("f")).unwrap(), b"original");
}

#[test]
fn stats_account_for_the_log_writer_and_its_wait_for_a_core() {
    let env = Env::new();
    let files: Vec<(String, Vec<u8>)> = (0..200)
        .map(|i| (format!("d{}/f{i:03}", i % 7), vec![i as u8; 64]))
        .collect();
    let refs: Vec<(&str, &[u8])> = files
        .iter()
        .map(|(n, b)| (n.as_str(), b.as_slice()))
        .collect();
    make_tree(&env.src, &refs);
    let out = env
        .ferry()
        .args(["copy", "--stats"])
        .arg(&env.src)
        .arg(&env.dst)
        .run()
        .success();
    let line = out
        .stderr
        .lines()
        .find(|l| l.starts_with("log writer: "))
        .unwrap_or_else(|| panic!("no writer line: {}", out.stderr));
    // The number right after `label` in the line.
    let num = |label: &str| -> f64 {
        let at = line
            .find(label)
            .unwrap_or_else(|| panic!("{label:?} in {line}"))
            + label.len();
        line[at..]
            .split(|c: char| !(c.is_ascii_digit() || c == '.'))
            .next()
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("a number after {label:?} in {line}"))
    };
    // Submitted, started, 200 copies, listing completed, finished.
    assert_eq!(num("log writer: "), 204.0, "{line}");
    // Waiting for a core is counted inside batches: part of busy.
    let (busy, wait, cpu) = (num("busy "), num("waiting for a core "), num("cpu "));
    assert!(wait <= busy && cpu >= 0.0, "{line}");
    // 204 commands never fill the writer's 8,192-command queue: nobody waited.
    assert_eq!(num("senders waited for a full queue "), 0.0, "{line}");
    assert_same_tree(&env.src, &env.dst);
}

#[test]
fn a_mode_change_reaches_a_copy_skipped_as_current() {
    let env = Env::new();
    make_tree(&env.src, &[("priv/key", b"secret"), ("open.txt", b"x")]);
    let key = env.src.join("priv/key");
    fs::set_permissions(&key, fs::Permissions::from_mode(0o644)).unwrap();
    env.copy(&[]).run().success();
    // Made private after its backup: no content or mtime change.
    fs::set_permissions(&key, fs::Permissions::from_mode(0o600)).unwrap();
    let s = env.copy(&[]).run().success().summary();
    assert_eq!((s.copied, s.skipped), (0, 2));
    let mode = fs::metadata(env.dst.join("priv/key"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600, "the backup stayed readable by all");
}
