//! Transient and permanent faults between ferry and Azurite, injected by
//! the fault proxy: every blob still arrives and verifies, retries are
//! counted by cause in the job summary, and permanent errors fail at once.
//! Each test prints its figures (faults injected / survived) for
//! docs/OPERATIONS.md.

use std::path::Path;
use std::time::Duration;

use ferry_engine::testkit::{Azurite, DEV_ACCOUNT, DEV_KEY};
use serde_json::Value;

use crate::fault_proxy::{FaultProxy, Faults};
use crate::util::*;

/// The mix: 10% 503 (half with a retry hint), 2% resets, 5% slow,
/// plus a little 500, 429 and stalls past the 1 s try timeout.
fn mix() -> Faults {
    Faults {
        busy_retry_after: 0.05,
        busy: 0.05,
        internal: 0.01,
        throttled: 0.01,
        reset: 0.02,
        stall: 0.003,
        slow: 0.05,
        stall_for: Duration::from_secs(3),
        slow_for: Duration::from_millis(150),
        ..Faults::default()
    }
}

struct Setup {
    env: Env,
    proxy: FaultProxy,
}

/// A sandbox with accounts `dev` (Azurite directly), `flaky` (through the
/// fault proxy) and `flakybad` (through the proxy with a wrong key).
fn setup(faults: Faults) -> Setup {
    let azurite = Azurite::shared();
    let upstream = format!("http://127.0.0.1:{}", azurite.port);
    let proxy = FaultProxy::start(&upstream, faults);
    let env = Env::new();
    let wrong_key = "AAAAbm90IHRoZSByaWdodCBrZXkgYXQgYWxsIGZvciB0aGlzIGFjY291bnQ=";
    let cs = |endpoint: &str, key: &str| {
        format!("AccountName={DEV_ACCOUNT};AccountKey={key};BlobEndpoint={endpoint}/{DEV_ACCOUNT}")
    };
    let config = format!(
        "[accounts.dev]\nconnection_string = \"{}\"\n\n[accounts.flaky]\nconnection_string = \"{}\"\n\n[accounts.flakybad]\nconnection_string = \"{}\"\n\n[retry]\nmax_tries = 8\nbase_delay_ms = 20\nmax_delay_ms = 500\n",
        cs(&upstream, DEV_KEY),
        cs(&proxy.base, DEV_KEY),
        cs(&proxy.base, wrong_key),
    );
    write(&env.state.join("ferry.toml"), config);
    Setup { env, proxy }
}

fn container(tag: &str) -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    format!(
        "{tag}-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// 2,000 files: mostly 1-6 KiB, every 100th 200 KiB (four 64 KiB blocks).
fn tree(root: &Path) {
    for i in 0..2000u32 {
        let size = if i % 100 == 7 {
            200 * 1024
        } else {
            1024 + (i as usize * 37) % 5000
        };
        let data: Vec<u8> = (0..size)
            .map(|j| ((i as usize * 31 + j) % 251) as u8)
            .collect();
        write(&root.join(format!("d{:02}/f{i:04}.bin", i % 20)), data);
    }
}

fn show(env: &Env, job: &str) -> Value {
    env.show_json(job)
}

fn job_of(out: &Out) -> String {
    out.summary().job.clone()
}

/// Copies `container` back down directly (no proxy) and compares names
/// and bytes (Azure keeps whole-second times, so not mtimes).
fn verify(s: &Setup, container: &str) {
    let down = s.env.download(container, &["--block-size", "64K"]);
    assert_eq!(assert_same_files(&s.env.src, &down), 2000);
}

fn report(what: &str, s: &Setup, summary: &Value) {
    eprintln!(
        "FIGURES {what}: requests {}, PUT body bytes {}, injected {:?} (total {}), ferry retries {} by cause {}",
        s.proxy
            .counts
            .requests
            .load(std::sync::atomic::Ordering::Relaxed),
        s.proxy.counts.body_bytes("PUT"),
        s.proxy.counts.injected(),
        s.proxy.counts.total_injected(),
        summary["retries"],
        summary["retries_by_cause"]
    );
}

fn assert_retried(summary: &Value) {
    let causes = summary["retries_by_cause"].as_object().unwrap();
    assert!(summary["retries"].as_u64().unwrap() > 50, "{summary}");
    for cause in ["503 ServerBusy", "500 InternalError", "429 TooManyRequests"] {
        assert!(
            causes.contains_key(cause),
            "no {cause:?} retries: {causes:?}"
        );
    }
    assert!(
        causes.keys().any(|c| c.contains("timeout")),
        "no timeout retries: {causes:?}"
    );
    assert_eq!(summary["failed"], 0, "{summary}");
}

#[test]
fn an_upload_through_faults_delivers_every_blob() {
    let s = setup(mix());
    tree(&s.env.src);
    let c = container("up");
    let out = s
        .env
        .ferry()
        .args(["copy", "--try-timeout", "1", "--block-size", "64K"])
        .arg(&s.env.src)
        .arg(format!("flaky:{c}"))
        .run()
        .success();
    assert_eq!(out.summary().copied, 2000);
    let summary = show(&s.env, &job_of(&out));
    report("upload", &s, &summary);
    assert_retried(&summary);
    assert!(s.proxy.counts.total_injected() > 200);
    s.proxy.set_faults(Faults::default());
    verify(&s, &c);
    s.env.verify_log_ok(None);
}

#[test]
fn a_server_side_copy_through_faults_delivers_every_blob() {
    let s = setup(Faults::default());
    tree(&s.env.src);
    let (a, b) = (container("s2s-src"), container("s2s-dst"));
    // Seed the source directly, then copy Azure -> Azure through the proxy
    // (ferry's Put Block From URL and the service's reads of the source
    // both pass through it).
    s.env
        .ferry()
        .args(["copy", "--quiet", "--block-size", "64K"])
        .arg(&s.env.src)
        .arg(format!("dev:{a}"))
        .run()
        .success();
    s.proxy.set_faults(mix());
    let out = s
        .env
        .ferry()
        .args(["copy", "--try-timeout", "1", "--block-size", "64K"])
        .arg(format!("flaky:{a}"))
        .arg(format!("flaky:{b}"))
        .run()
        .success();
    assert_eq!(out.summary().copied, 2000);
    let summary = show(&s.env, &job_of(&out));
    report("server-side", &s, &summary);
    assert_retried(&summary);
    s.proxy.set_faults(Faults::default());
    verify(&s, &b);
}

#[test]
fn a_ranged_download_through_faults_delivers_every_blob() {
    let s = setup(Faults::default());
    // With 16 KiB blocks a 200 KiB blob comes down as four 64 KiB ranges
    // (the last one short), each written at its offset.
    for i in 0..60u32 {
        let data: Vec<u8> = (0..200 * 1024u32)
            .map(|j| ((i * 31 + j) % 251) as u8)
            .collect();
        write(&s.env.src.join(format!("d{}/f{i:02}.bin", i % 6)), data);
    }
    let c = container("down");
    s.env
        .ferry()
        .args(["copy", "--quiet"])
        .arg(&s.env.src)
        .arg(format!("dev:{c}"))
        .run()
        .success();
    s.proxy.set_faults(mix());
    let down = s.env.path("down");
    let out = s
        .env
        .ferry()
        .args(["copy", "--try-timeout", "1", "--block-size", "16K"])
        .arg(format!("flaky:{c}"))
        .arg(&down)
        .run()
        .success();
    assert_eq!(out.summary().copied, 60);
    let summary = show(&s.env, &job_of(&out));
    report("ranged download", &s, &summary);
    assert_eq!(summary["failed"], 0, "{summary}");
    assert!(summary["retries"].as_u64().unwrap() > 0, "{summary}");
    let ranges = s
        .proxy
        .counts
        .range_gets
        .load(std::sync::atomic::Ordering::Relaxed);
    assert!(
        ranges >= 240,
        "{ranges} range GETs: not downloaded in ranges"
    );
    assert_eq!(assert_same_files(&s.env.src, &down), 60);
    // No temp file of a failed try is left behind.
    assert!(temp_files(&down).is_empty(), "{:?}", temp_files(&down));
}

#[test]
fn permanent_errors_fail_at_once_without_retries() {
    let s = setup(Faults::default());
    make_tree(&s.env.src, &[("a.txt", b"a"), ("b.txt", b"b")]);
    let c = container("perm");
    // 403: a wrong key. The job cannot even prepare its destination.
    let out = s
        .env
        .ferry()
        .arg("copy")
        .arg(&s.env.src)
        .arg(format!("flakybad:{c}"))
        .run();
    let requests = s
        .proxy
        .counts
        .requests
        .load(std::sync::atomic::Ordering::Relaxed);
    assert_ne!(out.code, Some(0));
    assert!(
        out.stderr.contains("refused the request") || out.stdout.contains("refused the request"),
        "{out:?}"
    );
    // Create Container refused, then one List Blobs to tell "no create
    // permission" from "no access": two requests, neither retried.
    assert_eq!(requests, 2, "a 403 was retried");
    // 404: a source container that does not exist, read through the proxy.
    let out = s
        .env
        .ferry()
        .arg("copy")
        .arg(format!("flaky:nope-{c}"))
        .arg(s.env.path("down"))
        .run();
    assert_ne!(out.code, Some(0));
    let after = s
        .proxy
        .counts
        .requests
        .load(std::sync::atomic::Ordering::Relaxed);
    assert_eq!(after - requests, 1, "a 404 was retried");
}

#[test]
fn retry_settings_come_from_flags_and_bad_ones_are_refused() {
    // Every request busy: with --max-tries 2 each blob fails after one retry.
    let s = setup(Faults {
        busy: 1.0,
        ..Faults::default()
    });
    make_tree(&s.env.src, &[("a.txt", b"a")]);
    let c = container("tries");
    let out = s
        .env
        .ferry()
        .args(["copy", "--max-tries", "2", "--retry-for", "30"])
        .arg(&s.env.src)
        .arg(format!("flaky:{c}"))
        .run();
    assert_ne!(out.code, Some(0));
    // Create-container: 2 tries, then the job fails.
    let requests = s
        .proxy
        .counts
        .requests
        .load(std::sync::atomic::Ordering::Relaxed);
    assert_eq!(requests, 2, "{out:?}");
    s.env
        .ferry()
        .args(["copy", "--max-tries", "0"])
        .arg(&s.env.src)
        .arg(s.env.path("x"))
        .run()
        .error(2, "--max-tries");
    // Beyond the flags' ranges a deadline overflowed the clock: a panic.
    for (line, says) in [
        ("max_tries = 0", "max_tries must be 1 to 100"),
        (
            "try_timeout_secs = 9223372036854775807",
            "try_timeout_secs must be 1 to 86400",
        ),
        (
            "max_elapsed_secs = 18446744073709551615",
            "max_elapsed_secs must be 1 to 604800",
        ),
        ("max_tries = 4294967295", "max_tries must be 1 to 100"),
    ] {
        write(
            &s.env.state.join("ferry.toml"),
            format!("[retry]\n{line}\n"),
        );
        s.env
            .ferry()
            .arg("copy")
            .arg(&s.env.src)
            .arg(s.env.path("x"))
            .run()
            .error(2, says);
    }
}

#[test]
fn a_service_that_goes_away_stops_the_attempt_and_replay_finishes_it() {
    let Setup { env, proxy } = setup(Faults {
        slow: 1.0,
        slow_for: Duration::from_millis(25),
        ..Faults::default()
    });
    for i in 0..600 {
        write(&env.src.join(format!("f{i:04}.txt")), format!("file {i}"));
    }
    let c = container("outage");
    let running = env
        .ferry()
        .arg("copy")
        .arg(&env.src)
        .arg(format!("flaky:{c}"))
        .args(["--parallel", "4"])
        .spawn();
    std::thread::sleep(Duration::from_millis(1500));
    // The service goes away mid-job: connections refused from now on.
    drop(proxy);
    let gone = std::time::Instant::now();
    let out = running.wait_timeout(Duration::from_secs(180));
    let took = gone.elapsed();
    let out = out.error(6, "could not reach the service");
    // Blob by blob (8 tries each, up to ~1.6 s) the rest would take minutes.
    assert!(took < Duration::from_secs(60), "stopped after {took:?}");
    let job = out
        .stderr
        .split_whitespace()
        .nth(3)
        .unwrap()
        .trim_end_matches(':')
        .to_string();
    let summary = show(&env, &job);
    let copied = summary["copied"].as_u64().unwrap();
    assert!(copied > 0 && copied < 600, "{summary}");
    // Back (here: the account pointed at Azurite directly): the replay
    // copies what is left.
    let azurite = Azurite::shared();
    write(
        &env.state.join("ferry.toml"),
        format!(
            "[accounts.flaky]\nconnection_string = \"{direct}\"\n[accounts.dev]\nconnection_string = \"{direct}\"\n",
            direct = format_args!(
                "AccountName={DEV_ACCOUNT};AccountKey={DEV_KEY};BlobEndpoint=http://127.0.0.1:{}/{DEV_ACCOUNT}",
                azurite.port
            )
        ),
    );
    let replayed = env.ferry().args(["replay", &job]).run().success().summary();
    assert_eq!(replayed.resumed, copied, "only what was not done is copied");
    let down = env.download(&c, &[]);
    assert_eq!(assert_same_files(&env.src, &down), 600);
}

#[test]
fn if_different_reads_only_the_side_without_an_md5() {
    let s = setup(Faults::default());
    for i in 0..3 {
        write(&s.env.src.join(format!("f{i}.bin")), vec![i as u8; 100_000]);
    }
    let c = container("ifdiff");
    let upload = |extra: &[&str]| {
        let out = s
            .env
            .ferry()
            .arg("copy")
            .arg(&s.env.src)
            .arg(format!("flaky:{c}"))
            .args(extra)
            .run()
            .success();
        let sum = out.summary();
        (sum.copied, sum.skipped)
    };
    let gets = || {
        s.proxy
            .counts
            .blob_gets
            .load(std::sync::atomic::Ordering::Relaxed)
    };
    upload(&[]);
    let before = gets();
    // Same sizes, no MD5 on the local side: the local files are hashed and
    // compared with the blobs' Content-MD5; no blob is downloaded.
    assert_eq!(upload(&["--mode", "if-different"]), (0, 3));
    assert_eq!(gets() - before, 0, "blobs were downloaded to compare");
    // A changed file of the same size is still found different.
    write(&s.env.src.join("f1.bin"), vec![9u8; 100_000]);
    assert_eq!(upload(&["--mode", "if-different"]), (1, 2));
}

#[test]
fn bytes_that_do_not_match_the_blobs_md5_are_never_kept() {
    let s = setup(Faults::default());
    // A one-shot GET, and a download in 4 ranges of 4 x 64 KiB blocks that
    // is hashed as the ranges land.
    let big: Vec<u8> = (0..(1 << 20) + 123).map(|i| (i % 253) as u8).collect();
    make_tree(&s.env.src, &[("a.txt", b"hello"), ("big.bin", &big)]);
    let c = container("md5");
    s.env
        .ferry()
        .args(["copy", "--block-size", "64K"])
        .arg(&s.env.src)
        .arg(format!("dev:{c}"))
        .run()
        .success();
    s.proxy.set_faults(Faults {
        corrupt: 1.0,
        ..Faults::default()
    });
    let down = s.env.path("down");
    let copy = |from: String, to: &str, extra: &[&str]| {
        s.env
            .ferry()
            .args(["copy", "--block-size", "64K"])
            .arg(from)
            .arg(to)
            .args(extra)
            .run()
    };
    let out = copy(format!("flaky:{c}"), down.to_str().unwrap(), &[]).code(1);
    let job = job_of(&out);
    let events = s.env.events(Some(&job));
    let failed = of_type(&events, "BlobFailed");
    assert_eq!(failed.len(), 2, "{out:?}");
    for f in &failed {
        assert_eq!(ev_data(f)["error_kind"], "content-mismatch", "{f}");
        let msg = ev_data(f)["message"].as_str().unwrap();
        assert!(msg.contains("`ferry copy ... --check-md5 off`"), "{msg}");
    }
    // Neither a file nor a temp file is left.
    assert_eq!(list_files(&down), Vec::<String>::new());
    assert!(
        s.proxy.counts.injected()["corrupt"] >= 5,
        "{:?}",
        s.proxy.counts.injected()
    );
    // Streamed Azure to Azure: the destination is not written either.
    let c2 = container("md5s");
    copy(
        format!("flaky:{c}"),
        &format!("dev:{c2}"),
        &["--copy-method", "stream"],
    )
    .code(1);
    let out = copy(
        format!("dev:{c2}"),
        s.env.path("down2").to_str().unwrap(),
        &[],
    );
    assert_eq!(out.success().summary().copied, 0);
    // Turned off, the damaged bytes are taken as they come.
    let off = s.env.path("off");
    copy(
        format!("flaky:{c}"),
        off.to_str().unwrap(),
        &["--check-md5", "off"],
    )
    .success();
    assert_ne!(std::fs::read(off.join("big.bin")).unwrap(), big);
    // Undamaged again: a replay copies both and they verify.
    s.proxy.set_faults(Faults::default());
    s.env.ferry().args(["replay", &job]).run().success();
    assert_eq!(assert_same_files(&s.env.src, &down), 2);
}
