//! Azure Blob Storage end to end, on a private Azurite the tests start
//! themselves: every copy direction, tricky names, large blobs in blocks,
//! properties, incremental runs, resume after SIGKILL, errors and secrets.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ferry_engine::config::{parse_connection_string, AzureAccount};
use ferry_engine::store::azure::{auth, AzureStore};
use ferry_engine::store::{BlobMeta, BlobProps, BlobStore, Listed};
use ferry_engine::testkit::{Azurite, DEV_ACCOUNT, DEV_KEY};
use futures::StreamExt;

use crate::util::*;

/// A test sandbox whose state dir has a `ferry.toml` naming the Azurite
/// account `dev` (and a `bad` one with a wrong key).
struct Az {
    env: Env,
    azurite: &'static Azurite,
}

fn az() -> Az {
    let azurite = Azurite::shared();
    let env = Env::new();
    let wrong_key = "AAAAbm90IHRoZSByaWdodCBrZXkgYXQgYWxsIGZvciB0aGlzIGFjY291bnQ=";
    let config = format!(
        "[accounts.dev]\nconnection_string = \"{}\"\n\n[accounts.bad]\nconnection_string = \"AccountName={DEV_ACCOUNT};AccountKey={wrong_key};BlobEndpoint={}\"\n",
        azurite.connection_string(),
        azurite.endpoint()
    );
    write(&env.state.join("ferry.toml"), config);
    Az { env, azurite }
}

fn container(tag: &str) -> String {
    let id = uuid_like();
    format!("{tag}-{id}")
}

fn uuid_like() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    let n = N.fetch_add(1, Ordering::Relaxed);
    format!(
        "{:x}{:x}",
        std::process::id(),
        n * 7919 + now_secs() as u64 % 100_000
    )
}

impl Az {
    fn ferry(&self) -> Ferry {
        let mut f = self.env.ferry();
        f.cmd
            .env_remove("AZURE_STORAGE_CONNECTION_STRING")
            .env_remove("FERRY_CONFIG");
        f
    }

    fn copy(
        &self,
        src: impl AsRef<std::ffi::OsStr>,
        dst: impl AsRef<std::ffi::OsStr>,
        extra: &[&str],
    ) -> Out {
        let mut f = self.ferry();
        f.arg("copy").arg(src).arg(dst).args(extra);
        f.run()
    }

    /// Copies container `from` to `server` server-side and to `stream`
    /// through ferry.
    fn copy_both_ways(&self, from: &str, server: &str, stream: &str) {
        self.copy(format!("dev:{from}"), format!("dev:{server}"), &[])
            .success();
        let streamed = ["--copy-method", "stream"];
        self.copy(format!("dev:{from}"), format!("dev:{stream}"), &streamed)
            .success();
    }

    fn account(&self) -> AzureAccount {
        parse_connection_string("dev", &self.azurite.connection_string()).unwrap()
    }

    fn store(&self, container: &str) -> AzureStore {
        AzureStore::open(&self.account(), container, "", None, Default::default()).unwrap()
    }

    /// name -> (size, md5 of content) of every blob in a container.
    fn blobs(&self, container: &str) -> BTreeMap<String, (u64, [u8; 16])> {
        rt().block_on(async {
            let store = self.store(container);
            let mut out = BTreeMap::new();
            let mut list = store.list();
            while let Some(item) = list.next().await {
                if let Listed::Blob(m) = item.unwrap() {
                    let mut data = store.read(&m).await.unwrap();
                    let mut bytes = Vec::new();
                    while let Some(c) = data.next().await {
                        bytes.extend_from_slice(&c.unwrap());
                    }
                    out.insert(m.name.clone(), (m.size, md5(&bytes)));
                }
            }
            out
        })
    }

    fn count(&self, container: &str) -> usize {
        rt().block_on(async {
            let mut n = 0;
            let mut list = self.store(container).list();
            while let Some(item) = list.next().await {
                if let Ok(Listed::Blob(_)) = item {
                    n += 1;
                }
            }
            n
        })
    }

    /// A read/write/list container SAS, signed with the dev key.
    fn container_sas(&self, container: &str) -> String {
        self.container_sas_with(container, "racwdl")
    }

    fn container_sas_with(&self, container: &str, permissions: &str) -> String {
        auth::ServiceSas {
            account: DEV_ACCOUNT,
            container,
            blob: None,
            permissions,
            start: None,
            expiry: chrono::Utc::now() + chrono::Duration::hours(2),
            protocol: None,
        }
        .token(&auth::AccountKey::from_base64(DEV_KEY).unwrap())
    }
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

fn md5(b: &[u8]) -> [u8; 16] {
    use md5::{Digest, Md5};
    Md5::digest(b).into()
}

/// name -> (size, md5) of a local tree.
fn local_blobs(root: &Path) -> BTreeMap<String, (u64, [u8; 16])> {
    list_files(root)
        .into_iter()
        .map(|n| {
            let data = std::fs::read(root.join(&n)).unwrap();
            (n, (data.len() as u64, md5(&data)))
        })
        .collect()
}

/// Names that break naive code, a 1,024-character name, an empty file and
/// one file larger than the test block size (64 KiB).
fn tricky_tree(root: &Path) {
    let long = format!(
        "{}/{}/{}/{}/e",
        "a".repeat(255),
        "b".repeat(255),
        "c".repeat(255),
        "d".repeat(254)
    );
    assert_eq!(long.len(), 1024);
    let big: Vec<u8> = (0..300_000u32).map(|i| (i * 7 % 251) as u8).collect();
    make_tree(
        root,
        &[
            ("empty", b""),
            ("with space/a b.txt", b"spaces"),
            ("pct%41/h#sh?.txt", b"percent and hash"),
            ("ünïcødé/日本語.txt", "unicode".as_bytes()),
            (&long, b"long name"),
            ("nested/deeper/x.txt", b"x"),
            ("big/large.bin", &big),
        ],
    );
}

fn events_of(a: &Az, job: &str) -> Vec<serde_json::Value> {
    a.env.events(Some(job))
}

#[test]
fn every_direction_copies_tricky_names_and_large_blobs() {
    let a = az();
    tricky_tree(&a.env.src);
    let (c1, c2, c3) = (container("up"), container("s2s"), container("str"));
    let bs = ["--block-size", "64K"];

    // local -> Azure
    let out = a.copy(&a.env.src, format!("dev:{c1}"), &bs).success();
    assert_eq!(out.summary().copied, 7);
    assert_eq!(a.blobs(&c1), local_blobs(&a.env.src));

    // Azure -> local
    let down = a.env.path("down");
    a.copy(format!("dev:{c1}"), &down, &bs).success();
    assert_eq!(local_blobs(&down), local_blobs(&a.env.src));

    // Azure -> Azure, server-side (default) and streamed
    let s2s = a
        .copy(format!("dev:{c1}"), format!("dev:{c2}"), &bs)
        .success();
    let methods: Vec<String> = of_type(&events_of(&a, &s2s.summary().job), "BlobCopied")
        .iter()
        .map(|e| ev_data(e)["method"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(methods.len(), 7);
    assert!(methods.iter().all(|m| m == "server-side"), "{methods:?}");
    let streamed = a
        .copy(
            format!("dev:{c1}"),
            format!("dev:{c3}"),
            &["--copy-method", "stream", "--block-size", "64K"],
        )
        .success();
    let methods: Vec<String> = of_type(&events_of(&a, &streamed.summary().job), "BlobCopied")
        .iter()
        .map(|e| ev_data(e)["method"].as_str().unwrap().to_string())
        .collect();
    assert!(methods.iter().all(|m| m == "stream"), "{methods:?}");
    assert_eq!(a.blobs(&c2), local_blobs(&a.env.src));
    assert_eq!(a.blobs(&c3), local_blobs(&a.env.src));
    a.env.verify_log_ok(None);
}

#[test]
fn prefixes_select_and_place_blobs() {
    let a = az();
    make_tree(&a.env.src, &[("a.txt", b"a"), ("sub/b.txt", b"b")]);
    let c = container("pfx");
    a.copy(&a.env.src, format!("dev:{c}/backups/2024"), &[])
        .success();
    let names: Vec<String> = a.blobs(&c).into_keys().collect();
    assert_eq!(names, ["backups/2024/a.txt", "backups/2024/sub/b.txt"]);
    let down = a.env.path("down");
    a.copy(format!("dev:{c}/backups/2024/sub"), &down, &[])
        .success();
    assert_eq!(list_files(&down), ["b.txt"]);
    // `bad` names the same storage account (another key): a destination
    // inside the source under the other name is refused as under one name.
    let out = a
        .copy(
            format!("dev:{c}/backups"),
            format!("bad:{c}/backups/again"),
            &[],
        )
        .code(2);
    assert!(
        out.stderr.contains("are one storage account"),
        "{}",
        out.stderr
    );
    assert!(out.stderr.contains("inside the source"), "{}", out.stderr);
}

#[test]
fn incremental_runs_skip_unchanged_blobs_and_copy_exactly_the_changed_ones() {
    let a = az();
    for i in 0..100 {
        write(
            &a.env.src.join(format!("d{}/f{i:03}.txt", i % 5)),
            format!("file {i}"),
        );
    }
    let c = container("inc");
    a.copy(&a.env.src, format!("dev:{c}"), &[]).success();
    let again = a
        .copy(&a.env.src, format!("dev:{c}"), &["--mode", "incremental"])
        .success();
    let s = again.summary();
    assert_eq!((s.copied, s.skipped), (0, 100));
    let events = events_of(&a, &s.job);
    let skips = of_type(&events, "BlobSkipped");
    assert_eq!(skips.len(), 100);
    assert!(skips.iter().all(|e| ev_data(e)["reason"] == "not-newer"));

    // Change one file (newer than its upload): exactly it is copied.
    write(&a.env.src.join("d2/f007.txt"), "changed");
    set_mtime(&a.env.src.join("d2/f007.txt"), now_secs() + 60, 0);
    let third = a.copy(&a.env.src, format!("dev:{c}"), &[]).success();
    let copied: Vec<String> = of_type(&events_of(&a, &third.summary().job), "BlobCopied")
        .iter()
        .map(|e| ev_name(e).to_string())
        .collect();
    assert_eq!(copied, ["d2/f007.txt"]);

    // Azure -> Azure incremental: the second run copies nothing.
    let c2 = container("inc2");
    a.copy(format!("dev:{c}"), format!("dev:{c2}"), &[])
        .success();
    let s = a
        .copy(format!("dev:{c}"), format!("dev:{c2}"), &[])
        .success()
        .summary();
    assert_eq!((s.copied, s.skipped), (0, 100));
}

#[test]
fn file_times_survive_a_round_trip_through_azure_and_keep_both_directions_current() {
    let a = az();
    for (i, secs) in [
        (0, 1_000_000_000i64),
        (1, 1_300_000_000),
        (2, 1_600_000_000),
    ] {
        let f = a.env.src.join(format!("d/f{i}.txt"));
        write(&f, format!("file {i}"));
        set_mtime(&f, secs, 123_456_789);
    }
    // A large one, committed from blocks.
    let big = a.env.src.join("big.bin");
    write(&big, vec![7u8; 300_000]);
    set_mtime(&big, 1_500_000_000, 5);
    let c = container("times");
    let up = |extra: &[&str]| {
        let mut args = vec!["--block-size", "64K"];
        args.extend_from_slice(extra);
        a.copy(&a.env.src, format!("dev:{c}"), &args)
            .success()
            .summary()
    };
    up(&[]);
    let down = a.env.path("restored");
    let restore = || a.copy(format!("dev:{c}"), &down, &[]).success().summary();
    assert_eq!(restore().copied, 4);
    for f in ["d/f0.txt", "d/f1.txt", "d/f2.txt", "big.bin"] {
        assert_eq!(mtime(&down.join(f)), mtime(&a.env.src.join(f)), "{f}");
    }
    // Nothing changed: neither direction copies anything.
    let s = restore();
    assert_eq!((s.copied, s.skipped), (0, 4));
    let s = up(&[]);
    assert_eq!((s.copied, s.skipped), (0, 4));
    // A file edited since: exactly it goes up, and comes down with its time.
    write(&a.env.src.join("d/f1.txt"), "edited");
    set_mtime(&a.env.src.join("d/f1.txt"), 1_700_000_000, 0);
    assert_eq!(up(&[]).copied, 1);
    let s = restore();
    assert_eq!((s.copied, s.skipped), (1, 3));
    assert_eq!(
        std::fs::read_to_string(down.join("d/f1.txt")).unwrap(),
        "edited"
    );
    assert_eq!(mtime(&down.join("d/f1.txt")).unix_seconds(), 1_700_000_000);
    // Copied on to another container, server-side or streamed, the times
    // go along.
    let (server, stream) = (container("times-s"), container("times-t"));
    a.copy_both_ways(&c, &server, &stream);
    for other in [server, stream] {
        let there = a.env.path(&format!("from-{other}"));
        a.copy(format!("dev:{other}"), &there, &[]).success();
        assert_eq!(mtime(&there.join("big.bin")), mtime(&big), "{other}");
    }
}

#[test]
fn names_azure_lists_in_utf16_order_are_matched_and_never_overwritten() {
    let a = az();
    // Fullwidth forms and private use (U+E000..U+FFFF) against an emoji
    // (above U+FFFF): Azure lists the emoji first, byte order puts it last.
    let names = ["a", "\u{ff01}x", "\u{1F600}x", "\u{e000}x", "z"];
    for n in names {
        write(&a.env.src.join(n), format!("v1 {n}"));
    }
    let c = container("utf16");
    a.copy(&a.env.src, format!("dev:{c}"), &[]).success();
    let s = a
        .copy(&a.env.src, format!("dev:{c}"), &[])
        .success()
        .summary();
    assert_eq!((s.copied, s.skipped), (0, 5), "every blob was found");

    // Downloaded, edited there, then `--mode never` from the container:
    // nothing at the destination is replaced.
    let down = a.env.path("down");
    a.copy(format!("dev:{c}"), &down, &[]).success();
    for n in names {
        write(&down.join(n), "edited");
    }
    let s = a
        .copy(format!("dev:{c}"), &down, &["--mode", "never"])
        .success()
        .summary();
    assert_eq!((s.copied, s.skipped), (0, 5));
    for n in names {
        assert_eq!(
            std::fs::read_to_string(down.join(n)).unwrap(),
            "edited",
            "{n}"
        );
    }
}

#[test]
fn properties_and_metadata_survive_both_copy_methods() {
    let a = az();
    let (c1, c2, c3) = (container("meta"), container("meta-s"), container("meta-t"));
    let props = BlobProps {
        content_type: Some("image/jpeg".into()),
        content_encoding: Some("gzip".into()),
        content_language: Some("fr".into()),
        cache_control: Some("no-cache".into()),
        content_disposition: Some("inline; filename=\"x.jpg\"".into()),
        metadata: vec![
            ("camera".into(), "x100".into()),
            ("owner".into(), "ops".into()),
        ],
    };
    rt().block_on(async {
        let store = a.store(&c1);
        store.prepare_destination().await.unwrap();
        let meta = BlobMeta {
            name: "photo.jpg".into(),
            size: 5,
            modified: chrono::Utc::now(),
            etag: String::new(),
            md5: None,
            props: Some(Arc::new(props.clone())),
            mode: None,
        };
        store
            .write(
                &meta,
                futures::stream::once(async { Ok(bytes::Bytes::from_static(b"image")) }).boxed(),
            )
            .await
            .unwrap();
    });
    a.copy_both_ways(&c1, &c2, &c3);
    for c in [&c2, &c3] {
        let got = rt().block_on(async {
            let mut list = a.store(c).list();
            match list.next().await.unwrap().unwrap() {
                Listed::Blob(m) => m.props.map(|p| (*p).clone()),
                other => panic!("{other:?}"),
            }
        });
        assert_eq!(got.as_ref(), Some(&props), "properties in {c}");
    }
}

#[test]
fn azure_to_azure_copies_names_no_folder_could_hold() {
    let a = az();
    let (c1, c2, c3) = (container("odd"), container("odd-s"), container("odd-t"));
    let long = format!("long/{}", "s".repeat(300));
    let names = ["m//double", "m/trailing/", long.as_str(), "plain"];
    rt().block_on(async {
        let store = a.store(&c1);
        store.prepare_destination().await.unwrap();
        for name in names {
            let meta = BlobMeta {
                name: name.into(),
                size: name.len() as u64,
                modified: chrono::Utc::now(),
                etag: String::new(),
                md5: None,
                props: None,
                mode: None,
            };
            let body = bytes::Bytes::from(name.to_string());
            let data = futures::stream::once(async move { Ok(body) }).boxed();
            store.write(&meta, data).await.unwrap();
        }
        // A folder marker, as Storage Explorer and Data Lake make them.
        let marker = BlobMeta {
            name: "m/folder/".into(),
            size: 0,
            modified: chrono::Utc::now(),
            etag: String::new(),
            md5: None,
            props: None,
            mode: None,
        };
        let empty = futures::stream::once(async { Ok(bytes::Bytes::new()) }).boxed();
        store.write(&marker, empty).await.unwrap();
    });
    let want = a.blobs(&c1);
    assert_eq!(want.len(), 5, "{want:?}");
    a.copy_both_ways(&c1, &c2, &c3);
    assert_eq!(a.blobs(&c2), want);
    assert_eq!(a.blobs(&c3), want);
    // A folder cannot hold them: those fail one by one, the rest arrive;
    // the folder marker is skipped, not failed on every run.
    let out = a
        .copy(format!("dev:{c1}"), a.env.path("restore"), &[])
        .code(1);
    let s = out.summary();
    assert_eq!((s.copied, s.failed, s.skipped), (1, 3, 1), "{}", out.stderr);
    assert_eq!(list_files(&a.env.path("restore")), ["plain"]);
}

#[test]
fn an_azure_to_azure_copy_killed_midway_resumes_without_recopying() {
    let a = az();
    let (src_c, dst_c) = (container("kill-src"), container("kill-dst"));
    for i in 0..1500 {
        write(
            &a.env.src.join(format!("d{:02}/f{i:04}", i % 30)),
            format!("blob number {i}"),
        );
    }
    a.copy(&a.env.src, format!("dev:{src_c}"), &[]).success();

    let mut f = a.ferry();
    f.args([
        "copy",
        &format!("dev:{src_c}"),
        &format!("dev:{dst_c}"),
        "--parallel",
        "2",
    ]);
    let running = f.spawn();
    let deadline = Instant::now() + Duration::from_secs(60);
    while a.count(&dst_c) < 100 {
        assert!(Instant::now() < deadline, "no progress before the kill");
        std::thread::sleep(Duration::from_millis(20));
    }
    let killed = running.kill();
    assert_eq!(killed.signal, Some(libc::SIGKILL));

    let job = a.env.jobs_json().last().unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    a.ferry().args(["replay", &job]).run().success();
    assert_eq!(a.blobs(&dst_c), local_blobs(&a.env.src));

    let events = events_of(&a, &job);
    let first = names_in_attempt(&events, "BlobCopied", 1);
    let second = names_in_attempt(&events, "BlobCopied", 2);
    assert!(!first.is_empty());
    assert!(
        first.is_disjoint(&second),
        "blobs recorded as copied were copied again"
    );
    assert_eq!(
        first.len() + second.len() + count_skipped_in(&events, 2),
        1500
    );
    let seqs: Vec<u64> = events.iter().map(|e| e["seq"].as_u64().unwrap()).collect();
    assert_eq!(
        seqs,
        (0..seqs.len() as u64).collect::<Vec<_>>(),
        "gap-free log"
    );
    a.env.verify_log_ok(Some(&job));
}

fn count_skipped_in(events: &[serde_json::Value], attempt: u64) -> usize {
    names_in_attempt(events, "BlobSkipped", attempt).len()
}

#[test]
fn container_urls_take_their_sas_from_the_command_line_and_never_log_it() {
    let a = az();
    make_tree(&a.env.src, &[("one.txt", b"1"), ("two/three.txt", b"3")]);
    let c = container("sasurl");
    rt().block_on(a.store(&c).prepare_destination()).unwrap();
    let sas = a.container_sas(&c);
    let url = format!("{}/{c}", a.azurite.endpoint());
    let out = a.copy(&a.env.src, format!("{url}?{sas}"), &[]).success();
    assert_eq!(a.count(&c), 2);
    let job = out.summary().job;
    let sig = sas.rsplit("sig=").next().unwrap().to_string();

    // The log holds the bare URL only; a replay without the SAS says how to give it.
    let events = a.ferry().args(["events", "--json"]).run().success().stdout;
    assert!(events.contains(&url), "{events}");
    assert!(
        !events.contains(&sig) && !events.contains("sig="),
        "SAS in the log"
    );
    write(&a.env.src.join("new.txt"), "n");
    let job2 = {
        let mut f = a.ferry();
        f.args(["submit"])
            .arg(&a.env.src)
            .arg(format!("{url}?{sas}"));
        f.run().success().stdout.trim().to_string()
    };
    a.ferry()
        .args(["run"])
        .run()
        .error(6, "no SAS for this container URL");
    // A replay without it is refused before it records an attempt.
    let attempts = |j: &str| a.env.show_json(j)["attempts"].as_array().unwrap().len();
    let before = attempts(&job2);
    a.ferry()
        .args(["replay", &job2])
        .run()
        .error(2, "pass it again (--src-sas/--dst-sas");
    assert_eq!(attempts(&job2), before);
    a.ferry()
        .args(["replay", &job2, "--dst-sas", &sas])
        .run()
        .success();
    assert_eq!(a.count(&c), 3);
    let _ = job;
}

#[test]
fn a_write_only_sas_is_refused_naming_the_permissions_a_destination_needs() {
    let a = az();
    make_tree(&a.env.src, &[("one.txt", b"1"), ("two/three.txt", b"3")]);
    let c = container("dropbox");
    rt().block_on(a.store(&c).prepare_destination()).unwrap();
    let sas = a.container_sas_with(&c, "cw");
    let url = format!("{}/{c}?{sas}", a.azurite.endpoint());
    // Every mode lists the destination (the log says what each copy
    // replaced): the job fails on that, naming the permissions.
    for mode in ["incremental", "full"] {
        let out = a.copy(&a.env.src, &url, &["--mode", mode]).code(6);
        assert!(
            out.stderr.contains("listing the destination"),
            "{}",
            out.stderr
        );
        assert!(out.stderr.contains("sp=cwl"), "{}", out.stderr);
        assert!(!out.stderr.contains(&sas), "{}", out.stderr);
    }
    assert_eq!(a.count(&c), 0);
}

#[test]
fn no_secret_reaches_the_log_reports_logs_or_errors() {
    let a = az();
    make_tree(&a.env.src, &[("s.txt", b"secret-free")]);
    let c = container("sec");
    let mut outputs = String::new();
    let mut run = |f: &mut Ferry| {
        let o = f.env("RUST_LOG", "trace").run();
        outputs.push_str(&o.stdout);
        outputs.push_str(&o.stderr);
        o
    };
    run(a
        .ferry()
        .arg("copy")
        .arg(&a.env.src)
        .arg(format!("dev:{c}")));
    run(a
        .ferry()
        .arg("copy")
        .arg(format!("dev:{c}"))
        .arg(format!("dev:{c}-copy")));
    run(a
        .ferry()
        .arg("copy")
        .arg(&a.env.src)
        .arg(format!("bad:{c}")))
    .code(6);
    let sas = a.container_sas(&c);
    run(a
        .ferry()
        .arg("copy")
        .arg(format!("dev:{c}"))
        .arg(format!("{}/{c}-url?{sas}", a.azurite.endpoint())));
    run(a.ferry().args(["events", "--json"]));
    run(a.ferry().args(["jobs", "--json"]));
    for j in a.env.jobs_json() {
        run(a.ferry().args(["show", j["id"].as_str().unwrap()]));
    }
    assert!(
        outputs.contains("TRACE") || outputs.contains("DEBUG"),
        "trace logging was not on"
    );

    let mut haystack = outputs.into_bytes();
    for file in walk(&a.env.state) {
        if file.ends_with("ferry.toml") {
            continue; // the config holds the secret by design
        }
        haystack.extend(std::fs::read(&file).unwrap());
    }
    use base64::Engine as _;
    let key_bytes = base64::engine::general_purpose::STANDARD
        .decode(DEV_KEY)
        .unwrap();
    let sig = sas.rsplit("sig=").next().unwrap();
    let sig_decoded: String = url_decode(sig);
    for (what, needle) in [
        ("account key", DEV_KEY.as_bytes().to_vec()),
        (
            "account key (first 16 chars)",
            DEV_KEY.as_bytes()[..16].to_vec(),
        ),
        ("decoded key", key_bytes),
        (
            "connection string",
            a.azurite.connection_string().into_bytes(),
        ),
        ("SAS signature", sig.as_bytes().to_vec()),
        ("SAS signature (decoded)", sig_decoded.into_bytes()),
    ] {
        assert!(
            !haystack
                .windows(needle.len())
                .any(|w| w == needle.as_slice()),
            "the {what} appears in ferry's output or state"
        );
    }
}

fn url_decode(s: &str) -> String {
    url::form_urlencoded::parse(format!("x={s}").as_bytes())
        .next()
        .map(|(_, v)| v.into_owned())
        .unwrap_or_default()
}

fn walk(root: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.push(p);
            }
        }
    }
    out
}

#[test]
fn azure_errors_name_the_account_and_what_to_do() {
    let a = az();
    make_tree(&a.env.src, &[("f", b"f")]);
    let missing = container("missing");
    a.copy(format!("dev:{missing}"), a.env.path("out"), &[])
        .error(6, "not found");
    let out = a.copy(&a.env.src, format!("bad:{}", container("wrongkey")), &[]);
    let out = out.error(6, "account \"bad\" refused");
    assert!(
        out.stderr.contains("check its key or SAS"),
        "{}",
        out.stderr
    );
    a.copy(&a.env.src, "nope:container", &[])
        .error(2, "unknown account \"nope\"");
    a.copy(&a.env.src, "dev:Bad_Name", &[])
        .error(2, "invalid container name");
    let bad_sas = format!(
        "{}/{}?sv=2020-12-06&sr=c&sp=racwdl&se=2099-01-01T00%3A00%3A00Z&sig=AAAA",
        a.azurite.endpoint(),
        container("badsas")
    );
    a.copy(&a.env.src, bad_sas, &[]).error(6, "refused");
    let cfg = a.env.path("broken.toml");
    write(
        &cfg,
        "[accounts.x]\nconnection_string_env = \"FERRY_TEST_UNSET_VAR\"\n",
    );
    let mut f = a.ferry();
    f.args(["--config"])
        .arg(&cfg)
        .arg("copy")
        .arg(&a.env.src)
        .arg("x:cont");
    f.run().error(2, "FERRY_TEST_UNSET_VAR is not set");
}
