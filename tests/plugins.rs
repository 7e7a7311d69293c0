//! WebAssembly plugins through the CLI: the shipped policies and report
//! formatters (built by scripts/test into plugins/target), and hostile
//! fixtures (WAT turned into components here) that must be contained.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::util::*;

/// A shipped plugin, built by `scripts/test`.
pub(crate) fn shipped(name: &str) -> PathBuf {
    let p = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join(format!("plugins/target/wasm32-wasip2/release/{name}.wasm"));
    assert!(
        p.exists(),
        "{} is missing: build the plugins first (scripts/test does: cd plugins && cargo build --target wasm32-wasip2 --release)",
        p.display()
    );
    p
}

/// A policy component from WAT: `decide` gets its params by pointer (they
/// do not fit in 16 flat values) and returns a pointer to its result, per
/// the component model's canonical ABI. `$body` computes that pointer.
pub(crate) fn policy_fixture(
    dir: &Path,
    name: &str,
    decide_body: &str,
    configure_body: &str,
) -> PathBuf {
    fixture(dir, name, decide_body, configure_body, None)
}

/// A policy that also exports `policy-batch`: `decide-batch`'s params fit
/// in 16 flat values (the pairs list's pointer and length, then the job
/// context's seven) and it returns a pointer to its list's pointer and length.
fn batched_policy_fixture(dir: &Path, name: &str, decide_body: &str, batch_body: &str) -> PathBuf {
    fixture(dir, name, decide_body, CONFIGURE_OK, Some(batch_body))
}

fn fixture(
    dir: &Path,
    name: &str,
    decide_body: &str,
    configure_body: &str,
    batch_body: Option<&str>,
) -> PathBuf {
    let batch = batch_body.map_or(String::new(), |body| {
        format!(
            r#"(func (export "ferry:plugin/policy-batch@0.1.0#decide-batch")
    (param $pairs i32) (param $n i32) (param i32 i32 i32 i32 i32 i32 i32) (result i32)
    {body})"#
        )
    });
    let wat = format!(
        r#"(module
  (memory (export "memory") 2)
  (global $bump (mut i32) (i32.const 4096))
  (func (export "cabi_realloc") (param i32 i32 i32 i32) (result i32)
    (local $p i32)
    (if (i32.gt_u (global.get $bump) (i32.const 100000)) (then (global.set $bump (i32.const 4096))))
    (local.set $p (i32.and (i32.add (global.get $bump) (i32.const 7)) (i32.const -8)))
    (global.set $bump (i32.add (local.get $p) (local.get 3)))
    (local.get $p))
  (data (i32.const 64) "fixture says no")
  (func (export "ferry:plugin/policy@0.1.0#configure") (param i32 i32) (result i32)
    {configure_body})
  (func (export "ferry:plugin/policy@0.1.0#decide") (param $args i32) (result i32)
    {decide_body})
  {batch}
)"#
    );
    let module = wat::parse_str(&wat).expect("fixture WAT");
    let mut resolve = wit_parser::Resolve::new();
    let (pkg, _) = resolve
        .push_dir(Path::new(env!("CARGO_MANIFEST_DIR")).join("wit"))
        .unwrap();
    let world_name = match batch_body {
        Some(_) => "overwrite-policy-batched",
        None => "overwrite-policy",
    };
    let world = resolve.select_world(&[pkg], Some(world_name)).unwrap();
    write_component(dir, name, module, &resolve, world)
}

/// Makes a core module a component of `world` and writes it as NAME.wasm.
pub(crate) fn write_component(
    dir: &Path,
    name: &str,
    mut module: Vec<u8>,
    resolve: &wit_parser::Resolve,
    world: wit_parser::WorldId,
) -> PathBuf {
    wit_component::embed_component_metadata(
        &mut module,
        resolve,
        world,
        wit_component::StringEncoding::UTF8,
    )
    .unwrap();
    let component = wit_component::ComponentEncoder::default()
        .module(&module)
        .unwrap()
        .validate(true)
        .encode()
        .unwrap();
    let path = dir.join(format!("{name}.wasm"));
    std::fs::write(&path, component).unwrap();
    path
}

/// configure -> ok(): result<_, string> with discriminant 0 at address 16.
pub(crate) const CONFIGURE_OK: &str = "(i32.store8 (i32.const 16) (i32.const 0)) (i32.const 16)";
/// decide -> overwrite(""): variant case 0, empty string.
const OVERWRITE: &str = "(i32.store8 (i32.const 16) (i32.const 0)) (i32.store (i32.const 20) (i32.const 0)) (i32.store (i32.const 24) (i32.const 0)) (i32.const 16)";

/// Two files present at both ends, the sources newer: a policy is asked twice.
fn both_ends(env: &Env) {
    make_tree(
        &env.src,
        &[("keep/a.txt", b"new a"), ("other/b.txt", b"new b")],
    );
    make_tree(
        &env.dst,
        &[("keep/a.txt", b"old a"), ("other/b.txt", b"old b")],
    );
    for n in ["keep/a.txt", "other/b.txt"] {
        set_mtime(&env.dst.join(n), now_secs() - 3600, 0);
    }
}

fn policy_args(path: &Path) -> Vec<String> {
    vec!["--policy".into(), format!("plugin:{}", path.display())]
}

#[test]
fn protect_prefix_keeps_protected_blobs_and_records_the_plugins_reasons() {
    let env = Env::new();
    both_ends(&env);
    let mut args = policy_args(&shipped("protect_prefix"));
    args.extend(["--plugin-config".into(), "prefixes=keep/".into()]);
    let args: Vec<&str> = args.iter().map(|s| s.as_str()).collect();
    let out = env.copy(&args).run().success();
    assert_eq!(std::fs::read(env.dst.join("keep/a.txt")).unwrap(), b"old a");
    assert_eq!(
        std::fs::read(env.dst.join("other/b.txt")).unwrap(),
        b"new b"
    );
    let events = env.events(Some(&out.summary().job));
    let skip = of_type(&events, "BlobSkipped");
    assert_eq!(skip.len(), 1);
    assert_eq!(ev_data(skip[0])["reason"], "policy");
    assert_eq!(ev_data(skip[0])["detail"], "protected by prefix keep/");
    let copied = of_type(&events, "BlobCopied");
    assert_eq!(ev_data(copied[0])["detail"], "source newer");
    // The job pins the plugin by path and hash.
    let spec = &of_type(&events, "JobSubmitted")[0]["event"]["data"]["spec"];
    assert_eq!(spec["policy_plugin"]["sha256"].as_str().unwrap().len(), 64);
}

#[test]
fn a_mode_given_with_a_policy_is_refused_and_the_destination_left_alone() {
    let env = Env::new();
    both_ends(&env);
    let mut args = policy_args(&shipped("newer_or_bigger"));
    for mode in [
        ["--mode", "never"],
        ["--mode", "full"],
        ["--incremental", ""],
    ] {
        let mut a: Vec<&str> = args.iter().map(|s| s.as_str()).collect();
        a.extend(mode.iter().filter(|m| !m.is_empty()));
        env.copy(&a).run().error(2, "cannot be used with");
    }
    // The plugin would have overwritten it (the source is newer).
    assert_eq!(std::fs::read(env.dst.join("keep/a.txt")).unwrap(), b"old a");
    env.copy(&["--plugin-failure", "skip"])
        .run()
        .error(2, "--policy");
    assert!(env.jobs_json().is_empty(), "nothing was enqueued");
    // What decided is what `jobs` shows.
    args.push("-q".into());
    let a: Vec<&str> = args.iter().map(|s| s.as_str()).collect();
    env.copy(&a).run().success();
    let out = env.ferry().arg("jobs").run().success();
    assert!(
        out.stdout.contains("(policy newer_or_bigger.wasm)"),
        "{}",
        out.stdout
    );
}

#[test]
fn a_plugin_that_refuses_its_config_or_has_the_wrong_world_stops_the_job_before_it_starts() {
    let env = Env::new();
    both_ends(&env);
    let p = shipped("protect_prefix");
    let args = policy_args(&p);
    let args: Vec<&str> = args.iter().map(|s| s.as_str()).collect();
    env.copy(&args).run().error(9, "prefixes");
    let wrong = policy_args(&shipped("csv_report"));
    let wrong: Vec<&str> = wrong.iter().map(|s| s.as_str()).collect();
    env.copy(&wrong)
        .run()
        .error(9, "implements report-formatter");
    let refusing = policy_fixture(
        env.dir.path(),
        "refuses",
        OVERWRITE,
        "(i32.store8 (i32.const 16) (i32.const 1)) (i32.store (i32.const 20) (i32.const 64)) (i32.store (i32.const 24) (i32.const 15)) (i32.const 16)",
    );
    let args = policy_args(&refusing);
    let args: Vec<&str> = args.iter().map(|s| s.as_str()).collect();
    env.copy(&args).run().error(9, "fixture says no");
    let garbage = env.path("garbage.wasm");
    write(&garbage, b"\0asm not really");
    let args = policy_args(&garbage);
    let args: Vec<&str> = args.iter().map(|s| s.as_str()).collect();
    env.copy(&args)
        .run()
        .error(9, "not a valid WebAssembly component");
    assert!(env.jobs_json().is_empty(), "nothing was enqueued");
}

/// Hostile policies: each is contained to the blob it was asked about.
#[test]
fn looping_trapping_memory_eating_and_garbage_returning_policies_fail_only_their_blobs() {
    let cases = [
        (
            "loops",
            "(loop $l (br $l)) (i32.const 0)",
            "ran out of fuel",
        ),
        ("traps", "unreachable", "trapped"),
        (
            "eats-memory",
            "(loop $l (drop (memory.grow (i32.const 16))) (br $l)) (i32.const 0)",
            "memory",
        ),
        (
            "garbage",
            "(i32.store8 (i32.const 16) (i32.const 9)) (i32.const 16)",
            "failed",
        ),
        ("out-of-bounds", "(i32.const -16)", "failed"),
    ];
    for (name, body, needle) in cases {
        let env = Env::new();
        both_ends(&env);
        make_tree(&env.src, &[("fresh.txt", b"not at the destination")]);
        let fixture = policy_fixture(env.dir.path(), name, body, CONFIGURE_OK);
        let args = policy_args(&fixture);
        let args: Vec<&str> = args.iter().map(|s| s.as_str()).collect();
        let out = env.copy(&args).run().code(1);
        let s = out.summary();
        assert_eq!((s.copied, s.failed), (1, 2), "{name}: {out:?}");
        let events = env.events(Some(&s.job));
        for f in of_type(&events, "BlobFailed") {
            assert_eq!(ev_data(f)["error_kind"], "plugin", "{name}");
            let msg = ev_data(f)["message"].as_str().unwrap();
            assert!(msg.contains(needle), "{name}: {msg}");
        }
        // --plugin-failure skip records skips instead, and the job succeeds.
        let env2 = Env::new();
        both_ends(&env2);
        let mut args = policy_args(&fixture);
        args.extend(["--plugin-failure".into(), "skip".into()]);
        let args: Vec<&str> = args.iter().map(|s| s.as_str()).collect();
        let s = env2.copy(&args).run().success().summary();
        assert_eq!((s.copied, s.skipped, s.failed), (0, 2, 0), "{name}");
        let events = env2.events(Some(&s.job));
        assert!(of_type(&events, "BlobSkipped")
            .iter()
            .all(|e| ev_data(e)["reason"] == "plugin-failed"));
    }
}

#[test]
fn a_trapped_instance_is_replaced_and_later_blobs_are_decided() {
    let env = Env::new();
    // Traps when the source is 13 bytes long (src.size sits at offset 8).
    let body = format!("(if (i64.eq (i64.load offset=8 (local.get $args)) (i64.const 13)) (then unreachable)) {OVERWRITE}");
    let fixture = policy_fixture(env.dir.path(), "picky", &body, CONFIGURE_OK);
    let mut files = Vec::new();
    for i in 0..20 {
        let content = if i % 5 == 0 {
            "thirteen byte".to_string()
        } else {
            format!("file {i:02}")
        };
        files.push((format!("f{i:02}"), content));
    }
    for (n, c) in &files {
        write(&env.src.join(n), c);
        write(&env.dst.join(n), "old");
        set_mtime(&env.dst.join(n), now_secs() - 3600, 0);
    }
    let args = policy_args(&fixture);
    let mut args: Vec<&str> = args.iter().map(|s| s.as_str()).collect();
    args.extend(["--parallel", "1"]);
    let s = env.copy(&args).run().code(1).summary();
    assert_eq!((s.copied, s.failed), (16, 4));
}

/// decide-batch -> one skip("fixture says no") per pair: a decision is 12
/// bytes (case byte, string pointer, length), written from 110000 on, the
/// list's pointer and length at 109000 (above the fixture's bump allocator).
const BATCH_SKIPS: &str = "(local $i i32) (local $at i32)
    (block $done (loop $next
      (br_if $done (i32.ge_u (local.get $i) (local.get $n)))
      (local.set $at (i32.add (i32.const 110000) (i32.mul (local.get $i) (i32.const 12))))
      (i32.store8 (local.get $at) (i32.const 1))
      (i32.store offset=4 (local.get $at) (i32.const 64))
      (i32.store offset=8 (local.get $at) (i32.const 15))
      (local.set $i (i32.add (local.get $i) (i32.const 1)))
      (br $next)))
    (i32.store (i32.const 109000) (i32.const 110000))
    (i32.store (i32.const 109004) (local.get $n))
    (i32.const 109000)";

#[test]
fn a_batching_policy_answers_through_decide_batch() {
    let env = Env::new();
    both_ends(&env);
    // `decide` alone would overwrite both: the skips prove the batch path.
    let fixture = batched_policy_fixture(env.dir.path(), "batches", OVERWRITE, BATCH_SKIPS);
    let args = policy_args(&fixture);
    let args: Vec<&str> = args.iter().map(|s| s.as_str()).collect();
    let s = env.copy(&args).run().success().summary();
    assert_eq!((s.copied, s.skipped, s.failed), (0, 2, 0));
    let events = env.events(Some(&s.job));
    for e in of_type(&events, "BlobSkipped") {
        assert_eq!(ev_data(e)["reason"], "policy");
        assert_eq!(ev_data(e)["detail"], "fixture says no");
    }
    assert_eq!(std::fs::read(env.dst.join("keep/a.txt")).unwrap(), b"old a");
}

#[test]
fn a_failing_batch_is_asked_again_blob_by_blob() {
    let cases = [
        ("batch-traps", "unreachable".to_string()),
        (
            "batch-miscounts",
            "(i32.store (i32.const 109000) (i32.const 110000)) (i32.store (i32.const 109004) (i32.const 0)) (i32.const 109000)".to_string(),
        ),
    ];
    for (name, batch) in cases {
        let env = Env::new();
        both_ends(&env);
        let fixture = batched_policy_fixture(env.dir.path(), name, OVERWRITE, &batch);
        let args = policy_args(&fixture);
        let args: Vec<&str> = args.iter().map(|s| s.as_str()).collect();
        let out = env.copy(&args).run().success();
        let s = out.summary();
        assert_eq!((s.copied, s.failed), (2, 0), "{name}: {out:?}");
        assert!(
            out.stderr.contains("decide-batch failed") && out.stderr.contains("blob by blob"),
            "{name}: {}",
            out.stderr
        );
        assert_eq!(std::fs::read(env.dst.join("keep/a.txt")).unwrap(), b"new a");
    }
}

#[test]
fn a_queued_job_whose_plugin_changed_fails_and_the_queue_goes_on() {
    let env = Env::new();
    both_ends(&env);
    let plugin = env.path("policy.wasm");
    std::fs::copy(shipped("newer_or_bigger"), &plugin).unwrap();
    let policy = format!("plugin:{}", plugin.display());
    let changed = env
        .ferry()
        .arg("submit")
        .arg(&env.src)
        .arg(&env.dst)
        .args(["--policy", &policy])
        .run()
        .success()
        .stdout;
    let other = env.path("other");
    env.ferry()
        .arg("submit")
        .arg(&env.src)
        .arg(&other)
        .run()
        .success();
    std::fs::copy(shipped("protect_prefix"), &plugin).unwrap();
    let out = env.ferry().arg("run").run();
    assert_eq!(out.code, Some(6), "{out:?}");
    assert!(
        out.stdout.contains("changed since the job was submitted"),
        "{out:?}"
    );
    assert!(other.join("keep/a.txt").exists(), "the next job ran");
    let show = env.show_json(changed.trim());
    assert_eq!(show["state"], "failed", "{show}");
    assert_eq!(std::fs::read(env.dst.join("keep/a.txt")).unwrap(), b"old a");
}

#[test]
fn replay_refuses_a_plugin_that_changed_unless_allowed() {
    let env = Env::new();
    both_ends(&env);
    let plugin = env.path("policy.wasm");
    std::fs::copy(shipped("newer_or_bigger"), &plugin).unwrap();
    // A directory in the way makes one blob fail, so the job can be replayed.
    write(&env.src.join("blocked.txt"), "x");
    write(&env.dst.join("blocked.txt/inner"), "dir");
    let args = policy_args(&plugin);
    let args: Vec<&str> = args.iter().map(|s| s.as_str()).collect();
    let job = env.copy(&args).run().code(1).summary().job;
    std::fs::copy(shipped("protect_prefix"), &plugin).unwrap();
    env.ferry()
        .args(["replay", &job])
        .run()
        .error(9, "changed since the job was submitted");
    std::fs::remove_dir_all(env.dst.join("blocked.txt")).unwrap();
    // Allowed, the change is on the record: which code decided the attempt.
    let other = policy_fixture(env.dir.path(), "overwrites", OVERWRITE, CONFIGURE_OK);
    std::fs::copy(&other, &plugin).unwrap();
    env.ferry()
        .args(["replay", &job, "--allow-plugin-change"])
        .run()
        .success();
    let started = of_type(&env.events(Some(&job)), "JobStarted")
        .iter()
        .map(|e| ev_data(e)["plugin_sha256"].clone())
        .collect::<Vec<_>>();
    assert_eq!(started.len(), 2);
    assert!(started[0].is_null(), "{started:?}");
    assert_eq!(started[1].as_str().map(str::len), Some(64), "{started:?}");
    let show = env.ferry().args(["show", &job]).run().success().stdout;
    assert!(show.contains("plugin    changed since submitted"), "{show}");
}

/// A finished job with copies, skips (two reasons) and a failure.
fn reported_job(env: &Env) -> String {
    make_tree(
        &env.src,
        &[
            ("a.txt", b"aaa"),
            ("b.txt", b"bb"),
            ("c|d.txt", b"c"),
            ("old.txt", b"o"),
        ],
    );
    write(&env.dst.join("c|d.txt/inner"), "blocks");
    write(&env.dst.join("old.txt"), "newer at the destination");
    set_mtime(&env.src.join("old.txt"), now_secs() - 7200, 0);
    env.copy(&[]).run().code(1).summary().job
}

fn report(env: &Env, job: &str, format: &str) -> String {
    env.ferry()
        .args(["report", job, "--format", format])
        .run()
        .success()
        .stdout
}

#[test]
fn built_in_and_plugin_reports_share_one_model() {
    let env = Env::new();
    let job = reported_job(&env);
    let text = report(&env, &job, "text");
    assert!(
        text.contains("copied 2 (5 bytes), skipped 1, failed 1"),
        "{text}"
    );
    assert!(text.contains("skipped not-newer: 1"), "{text}");
    let json: serde_json::Value = serde_json::from_str(&report(&env, &job, "json")).unwrap();
    assert_eq!(json["summary"]["copied"], 2);
    assert_eq!(json["failures"][0]["name"], "c|d.txt");
    let md = report(&env, &job, "markdown");
    assert!(md.contains("| c\\|d.txt |"), "{md}");
    // Built-in names in any case.
    assert_eq!(report(&env, &job, "Markdown"), md);
    let md_plugin = report(&env, &job, shipped("markdown_report").to_str().unwrap());
    assert!(
        md_plugin.contains(&job) && md_plugin.contains("c\\|d.txt"),
        "{md_plugin}"
    );
    let csv = report(&env, &job, shipped("csv_report").to_str().unwrap());
    let rows: Vec<&str> = csv.lines().collect();
    assert_eq!(rows[0], "name,kind,bytes,at,attempt,detail");
    assert_eq!(rows.len(), 5, "{csv}");
    assert!(
        csv.contains("\"c|d.txt\"") || csv.contains("c|d.txt,failed"),
        "{csv}"
    );
    // -o writes the file, and bad formats are one-line errors.
    let out = env.path("r.json");
    env.ferry()
        .args(["report", &job, "--format", "json", "-o"])
        .arg(&out)
        .run()
        .success();
    assert!(std::fs::read_to_string(&out)
        .unwrap()
        .contains("\"failures\""));
    env.ferry()
        .args(["report", &job, "--format", "pdf"])
        .run()
        .error(2, "unknown report format");
}

#[test]
fn a_large_report_stays_bounded_in_the_built_in_formats() {
    let env = Env::new();
    for i in 0..3000 {
        write(&env.src.join(format!("d{}/f{i:04}", i % 10)), "x");
    }
    env.copy_ok(&[]);
    let job = env.copy_ok(&[]);
    let text = env
        .ferry()
        .args(["report", &job, "--max-examples", "5"])
        .run()
        .success()
        .stdout;
    assert!(text.contains("skipped not-newer: 3000"), "{text}");
    assert!(
        text.len() < 2000,
        "report grew with the job: {} bytes",
        text.len()
    );
}

#[test]
fn plugin_check_names_the_world_and_dry_runs_it() {
    let env = Env::new();
    let out = env
        .ferry()
        .args(["plugin", "check"])
        .arg(shipped("newer_or_bigger"))
        .run()
        .success()
        .stdout;
    assert!(out.contains("world    overwrite-policy"), "{out}");
    assert!(
        out.contains("decide(newer source) = overwrite (source newer)"),
        "{out}"
    );
    assert!(out.contains("batches  yes"), "{out}");
    // A batch answer that differs from decide's is refused.
    let liar = batched_policy_fixture(env.dir.path(), "liar", OVERWRITE, BATCH_SKIPS);
    let err = env
        .ferry()
        .args(["plugin", "check"])
        .arg(&liar)
        .run()
        .code(9)
        .stderr;
    assert!(err.contains("a batch answer must equal decide's"), "{err}");
    let out = env
        .ferry()
        .args(["plugin", "check"])
        .arg(shipped("html_report"))
        .run()
        .success()
        .stdout;
    assert!(
        out.contains("world    report-formatter") && out.contains("text/html (.html)"),
        "{out}"
    );
    env.ferry()
        .args(["plugin", "check"])
        .arg(shipped("protect_prefix"))
        .run()
        .error(9, "prefixes");
}

/// The compiled-plugin cache is checked before it is run: a damaged file
/// crashed the process (SIGSEGV), and another plugin's compilation under
/// this one's name ran that plugin's code.
#[test]
fn a_damaged_or_swapped_plugin_cache_is_compiled_afresh() {
    let env = Env::new();
    let check = |name: &str| {
        env.ferry()
            .args(["plugin", "check"])
            .arg(shipped(name))
            .run()
            .success()
            .stdout
    };
    let cache = env.state.join("plugin-cache");
    let files = || -> Vec<PathBuf> {
        let mut v: Vec<PathBuf> = std::fs::read_dir(&cache)
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        v.sort();
        v
    };
    let first = check("newer_or_bigger");
    let policy = files().pop().unwrap();
    check("html_report");
    let formatter = files().into_iter().find(|f| *f != policy).unwrap();

    let mut damaged = std::fs::read(&policy).unwrap();
    let mid = damaged.len() / 2;
    for b in &mut damaged[4096..mid] {
        *b = 0xAB;
    }
    std::fs::write(&policy, damaged).unwrap();
    assert_eq!(check("newer_or_bigger"), first);

    std::fs::copy(&formatter, &policy).unwrap();
    assert_eq!(check("newer_or_bigger"), first);
    assert!(first.contains("world    overwrite-policy"), "{first}");
}

/// The HTML report, loaded in headless Chromium: the charts and the
/// failure table must lay out with real sizes.
#[test]
fn the_html_report_renders_its_charts_and_failure_table_in_chromium() {
    let chromium = ["chromium", "chromium-browser"]
        .into_iter()
        .find(|c| {
            Command::new(c)
                .arg("--version")
                .output()
                .is_ok_and(|o| o.status.success())
        })
        .expect("chromium is needed for this test (scripts/test installs Debian's package)");
    let env = Env::new();
    let job = reported_job(&env);
    let html = report(&env, &job, shipped("html_report").to_str().unwrap());
    assert!(
        !html.contains("<script"),
        "the report must not need scripts"
    );
    // The probe measures what the browser laid out and puts it in the title.
    let probe = r#"<script>
      const h = [...document.querySelectorAll('#counts-chart rect.bar')].map(r => Math.round(r.getBBox().height));
      const rows = document.querySelectorAll('#failures tbody tr').length;
      const table = Math.round(document.getElementById('failures').getBoundingClientRect().height);
      const chart = Math.round(document.getElementById('bytes-chart').getBoundingClientRect().height);
      document.title = 'PROBE ' + JSON.stringify({h, rows, table, chart});
    </script>"#;
    let page = env.path("report.html");
    write(&page, html.replace("</body>", &format!("{probe}</body>")));
    let out = Command::new(chromium)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--no-first-run",
        ])
        .args([
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
        ])
        .arg(format!(
            "--user-data-dir={}",
            env.path("chromium-profile").display()
        ))
        .arg("--dump-dom")
        .arg(format!("file://{}", page.display()))
        .output()
        .unwrap();
    let dom = String::from_utf8_lossy(&out.stdout);
    let start = dom.find("PROBE ").unwrap_or_else(|| {
        panic!(
            "no probe result; stderr: {}",
            String::from_utf8_lossy(&out.stderr)
        )
    });
    let json = &dom[start + 6..dom[start..].find("</title>").unwrap() + start];
    let v: serde_json::Value = serde_json::from_str(&json.replace("&quot;", "\"")).unwrap();
    let heights: Vec<i64> = v["h"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_i64().unwrap())
        .collect();
    assert_eq!(heights.len(), 3, "{v}");
    assert!(
        heights[0] > heights[2] && heights[2] > 0,
        "copied (2) is taller than failed (1): {v}"
    );
    assert_eq!(v["rows"], 1, "{v}");
    assert!(
        v["table"].as_i64().unwrap() > 20 && v["chart"].as_i64().unwrap() > 20,
        "{v}"
    );
}
