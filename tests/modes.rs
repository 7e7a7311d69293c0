//! Overwrite modes: full, incremental (default), never, if-different.

use std::collections::BTreeSet;
use std::fs;

use serde_json::Value;

use crate::util::*;

const OLD: i64 = 1_500_000_000;
const NEW: i64 = 1_600_000_000;

/// One blob event per name of the job: name -> (type, reason).
fn outcomes(events: &[Value]) -> std::collections::BTreeMap<String, (String, String)> {
    let mut out = std::collections::BTreeMap::new();
    for e in events.iter().filter(|e| ev_type(e).starts_with("Blob")) {
        let reason = ev_data(e)["reason"].as_str().unwrap_or("").to_string();
        let prev = out.insert(ev_name(e).to_string(), (ev_type(e).to_string(), reason));
        assert!(prev.is_none(), "two events for {}", ev_name(e));
    }
    out
}

fn o(ty: &str, reason: &str) -> (String, String) {
    (ty.to_string(), reason.to_string())
}

/// src: `same` (old), `newer-src` (new), `older-src` (old), `fresh` (new, absent in dst);
/// dst: `same` (old), `newer-src` (old), `older-src` (new), all with other content.
fn conflict_tree(env: &Env) {
    make_tree(
        &env.src,
        &[
            ("same", b"src-same"),
            ("newer-src", b"src-newer"),
            ("older-src", b"src-older"),
            ("fresh", b"fresh"),
        ],
    );
    make_tree(
        &env.dst,
        &[
            ("same", b"dst-same"),
            ("newer-src", b"dst-newer"),
            ("older-src", b"dst-older-but-longer"),
        ],
    );
    for (name, src_t, dst_t) in [
        ("same", OLD, OLD),
        ("newer-src", NEW, OLD),
        ("older-src", OLD, NEW),
    ] {
        set_mtime(&env.src.join(name), src_t, 0);
        set_mtime(&env.dst.join(name), dst_t, 0);
    }
    set_mtime(&env.src.join("fresh"), NEW, 0);
}

fn read(env: &Env, name: &str) -> String {
    String::from_utf8(fs::read(env.dst.join(name)).unwrap()).unwrap()
}

#[test]
fn incremental_is_the_default_and_copies_only_when_the_source_is_newer() {
    let env = Env::new();
    conflict_tree(&env);
    let job = env.copy_ok(&[]);
    let events = env.events(Some(&job));
    assert_eq!(ev_data(&events[0])["spec"]["mode"], "incremental");
    let got = outcomes(&events);
    assert_eq!(got["same"], o("BlobSkipped", "not-newer"));
    assert_eq!(got["newer-src"], o("BlobCopied", "newer"));
    assert_eq!(got["older-src"], o("BlobSkipped", "not-newer"));
    assert_eq!(got["fresh"], o("BlobCopied", "new"));
    assert_eq!(read(&env, "same"), "dst-same");
    assert_eq!(read(&env, "newer-src"), "src-newer");
    assert_eq!(read(&env, "older-src"), "dst-older-but-longer");
    assert_eq!(read(&env, "fresh"), "fresh");
    assert_eq!(mtime(&env.dst.join("newer-src")).unix_seconds(), NEW);
    assert_eq!(mtime(&env.dst.join("older-src")).unix_seconds(), NEW);
}

#[test]
fn incremental_flag_is_the_same_as_mode_incremental() {
    let env = Env::new();
    conflict_tree(&env);
    let job = env.copy_ok(&["--incremental"]);
    let events = env.events(Some(&job));
    assert_eq!(ev_data(&events[0])["spec"]["mode"], "incremental");
    assert_eq!(read(&env, "older-src"), "dst-older-but-longer");
    assert_eq!(read(&env, "newer-src"), "src-newer");
}

#[test]
fn full_always_overwrites_even_a_newer_destination() {
    let env = Env::new();
    conflict_tree(&env);
    let job = env.copy_ok(&["--mode", "full"]);
    assert_same_tree(&env.src, &env.dst);
    let events = env.events(Some(&job));
    assert_eq!(ev_data(&events[0])["spec"]["mode"], "full");
    let got = outcomes(&events);
    assert_eq!(got.len(), 4);
    for (name, (ty, reason)) in &got {
        assert_eq!(ty, "BlobCopied", "{name}");
        // Full mode does not list the destination, so it cannot tell an
        // overwrite from a new blob; either label is accepted here.
        assert!(reason == "overwrite" || reason == "new", "{name}: {reason}");
    }
}

#[test]
fn never_skips_existing_blobs_and_copies_missing_ones() {
    let env = Env::new();
    conflict_tree(&env);
    let job = env.copy_ok(&["--mode", "never"]);
    let got = outcomes(&env.events(Some(&job)));
    assert_eq!(got["same"], o("BlobSkipped", "exists"));
    assert_eq!(got["newer-src"], o("BlobSkipped", "exists"));
    assert_eq!(got["older-src"], o("BlobSkipped", "exists"));
    assert_eq!(got["fresh"], o("BlobCopied", "new"));
    assert_eq!(read(&env, "same"), "dst-same");
    assert_eq!(read(&env, "newer-src"), "dst-newer");
    assert_eq!(read(&env, "older-src"), "dst-older-but-longer");
    assert_eq!(read(&env, "fresh"), "fresh");
}

#[test]
fn if_different_compares_size_then_content_not_mtime() {
    let env = Env::new();
    make_tree(
        &env.src,
        &[
            ("size-differs", b"short"),
            ("same-size-same-mtime", b"AAAA"),
            ("identical", b"same bytes"),
            ("absent", b"x"),
        ],
    );
    make_tree(
        &env.dst,
        &[
            ("size-differs", b"much longer"),
            ("same-size-same-mtime", b"BBBB"),
            ("identical", b"same bytes"),
        ],
    );
    for name in ["size-differs", "same-size-same-mtime"] {
        set_mtime(&env.src.join(name), OLD, 42);
        set_mtime(&env.dst.join(name), OLD, 42);
    }
    // Identical content, but the source is newer: still skipped.
    set_mtime(&env.src.join("identical"), NEW, 0);
    set_mtime(&env.dst.join("identical"), OLD, 0);

    let job = env.copy_ok(&["--mode", "if-different"]);
    let got = outcomes(&env.events(Some(&job)));
    assert_eq!(got["size-differs"], o("BlobCopied", "different"));
    assert_eq!(got["same-size-same-mtime"], o("BlobCopied", "different"));
    assert_eq!(got["identical"], o("BlobSkipped", "identical"));
    assert_eq!(got["absent"], o("BlobCopied", "new"));
    assert_eq!(read(&env, "size-differs"), "short");
    assert_eq!(read(&env, "same-size-same-mtime"), "AAAA");
    assert_eq!(read(&env, "absent"), "x");
    assert_eq!(
        mtime(&env.dst.join("identical")).unix_seconds(),
        OLD,
        "identical blob was rewritten"
    );
}

#[test]
fn mode_aliases_are_accepted() {
    let env = Env::new();
    make_tree(&env.src, &[("f", b"1")]);
    for (alias, mode) in [("always", "full"), ("if-source-newer", "incremental")] {
        let job = env.copy_ok(&["--mode", alias]);
        assert_eq!(ev_data(&env.events(Some(&job))[0])["spec"]["mode"], mode);
    }
}

#[test]
fn incremental_rerun_copies_nothing_then_exactly_the_changed_one_percent() {
    let env = Env::new();
    let mut names = Vec::new();
    for i in 0..500 {
        let name = format!("d{}/f{i:03}.txt", i % 7);
        write(&env.src.join(&name), format!("content {i}\n"));
        names.push(name);
    }
    let first = env.copy(&[]).run().success().summary();
    assert_eq!(first.copied, 500);

    // Unchanged tree: nothing copied, every file skipped as not newer.
    let second = env.copy(&[]).run().success().summary();
    assert_eq!((second.copied, second.skipped, second.failed), (0, 500, 0));
    let events = env.events(Some(&second.job));
    assert!(of_type(&events, "BlobCopied").is_empty());
    let skipped = of_type(&events, "BlobSkipped");
    assert_eq!(skipped.len(), 500);
    assert!(
        skipped.iter().all(|e| ev_data(e)["reason"] == "not-newer"),
        "a skip with another reason"
    );
    let skipped: BTreeSet<String> = skipped.iter().map(|e| ev_name(e).to_string()).collect();
    assert_eq!(skipped, names.iter().cloned().collect());

    // Change 1% of the files: rewrite and move the mtime into the future.
    let future = now_secs() + 3600;
    let changed: BTreeSet<String> = names.iter().step_by(100).cloned().collect();
    assert_eq!(changed.len(), 5);
    for name in &changed {
        write(&env.src.join(name), format!("changed {name}\n"));
        set_mtime(&env.src.join(name), future, 0);
    }
    let third = env.copy(&[]).run().success().summary();
    assert_eq!((third.copied, third.skipped), (5, 495));
    let events = env.events(Some(&third.job));
    assert_eq!(names_in_attempt(&events, "BlobCopied", 1), changed);
    assert!(of_type(&events, "BlobCopied")
        .iter()
        .all(|e| ev_data(e)["reason"] == "newer"));
    assert_same_tree(&env.src, &env.dst);
}
