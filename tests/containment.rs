//! Containment: the local backend never writes outside its destination root
//! (not through a symbolic link inside it, not for a source name with `..`),
//! and plugins see nothing of the machine (no files, environment, clock or
//! network) and cannot hold a job past their deadline, even blocked in a
//! host call. Hostile plugins that only loop or trap are in `plugins.rs`.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use ferry_engine::store::azure::{auth, AzureStore};
use ferry_engine::store::BlobStore;
use ferry_engine::testkit::{Azurite, DEV_ACCOUNT, DEV_KEY};

use serde_json::Value;

use crate::util::*;

// ---------------------------------------------------------------- local

/// A backup of a home folder holding ferry's own state dir, and its
/// restore: the live log is never copied (torn) nor written over (the
/// restore destroyed it), and neither end may lie inside it.
#[test]
fn the_state_dir_inside_a_source_or_destination_is_never_copied_or_written() {
    let env = Env::new();
    let home = env.path("home");
    make_tree(&home, &[("docs/a.txt", b"a")]);
    let state = home.join(".local/share/ferry");
    let at = |f: &mut Ferry| {
        f.arg("--state").arg(&state);
    };
    let backup = env.path("backup");
    let mut f = env.ferry_no_state();
    at(&mut f);
    let out = f.arg("copy").arg(&home).arg(&backup).run().success();
    let job = out.summary().job;
    assert!(backup.join("docs/a.txt").exists());
    assert!(!backup.join(".local").exists(), "the live log was copied");
    let mut f = env.ferry_no_state();
    at(&mut f);
    let out = f.args(["events", &job, "--json"]).run().success();
    let skipped: Vec<Value> = parse_json_lines(&out.stdout)
        .into_iter()
        .filter(|e| ev_type(e) == "BlobSkipped")
        .collect();
    assert!(!skipped.is_empty());
    assert!(skipped.iter().all(|e| {
        let d = ev_data(e);
        d["reason"] == "ferry-state"
            && d["name"]
                .as_str()
                .unwrap()
                .starts_with(".local/share/ferry/")
    }));

    // A backup that holds a state dir (another tool's copy), restored over
    // the live one with --mode full.
    make_tree(
        &backup,
        &[
            (".local/share/ferry/lock", b"junk"),
            (".local/share/ferry/db/conf", b"junk"),
        ],
    );
    let mut f = env.ferry_no_state();
    at(&mut f);
    f.arg("copy")
        .arg(&backup)
        .arg(&home)
        .args(["--mode", "full"])
        .run()
        .success();
    assert_ne!(std::fs::read(state.join("db/conf")).unwrap(), b"junk");
    let mut f = env.ferry_no_state();
    at(&mut f);
    f.args(["verify-log"]).run().success();

    // Neither end inside the state dir.
    let other = env.path("other");
    make_tree(&other, &[("b.txt", b"b")]);
    for (src, dst) in [(other, state.join("x")), (state.clone(), env.path("y"))] {
        let mut f = env.ferry_no_state();
        at(&mut f);
        f.arg("copy")
            .arg(&src)
            .arg(&dst)
            .run()
            .error(2, "inside ferry's state dir");
    }
}

/// Everything under `root` (files, folders, links) with file contents, so a
/// write anywhere below shows.
fn everything(root: &Path) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let e = e.unwrap();
            let p = e.path();
            let rel = p.strip_prefix(root).unwrap().display().to_string();
            let ft = e.file_type().unwrap();
            let what = if ft.is_symlink() {
                format!("link -> {}", std::fs::read_link(&p).unwrap().display())
            } else if ft.is_dir() {
                stack.push(p.clone());
                "dir".to_string()
            } else {
                format!("file {:?}", std::fs::read(&p).unwrap())
            };
            out.push((rel, what));
        }
    }
    out.sort();
    out
}

/// A destination with links out of it: `dst/dirlink -> outside/`,
/// `dst/filelink -> outside/target.txt`, `dst/deep/dirlink2 -> outside/`;
/// and a source whose names go through them.
struct Trap {
    env: Env,
    outside: PathBuf,
}

fn trap() -> Trap {
    let env = Env::new();
    let outside = env.path("outside");
    make_tree(
        &outside,
        &[("target.txt", b"precious"), ("x.txt", b"old x")],
    );
    std::fs::create_dir_all(env.dst.join("deep")).unwrap();
    symlink(&outside, env.dst.join("dirlink")).unwrap();
    symlink(outside.join("target.txt"), env.dst.join("filelink")).unwrap();
    symlink(&outside, env.dst.join("deep/dirlink2")).unwrap();
    make_tree(
        &env.src,
        &[
            ("dirlink/x.txt", b"through a dir link"),
            ("dirlink/new/y.txt", b"a new folder through a dir link"),
            ("filelink", b"through a file link"),
            ("deep/dirlink2/z.txt", b"through a link further down"),
            ("fine.txt", b"an ordinary file"),
            ("deep/fine.txt", b"another ordinary file"),
        ],
    );
    // Sources newer than anything at the destination, so every mode copies.
    for n in list_files(&env.src) {
        set_mtime(&env.src.join(n), now_secs() + 3600, 0);
    }
    Trap { env, outside }
}

const THROUGH_LINKS: [&str; 4] = [
    "deep/dirlink2/z.txt",
    "dirlink/new/y.txt",
    "dirlink/x.txt",
    "filelink",
];

/// The copy from `src` into the trap's destination: the ordinary files land,
/// every name through a link fails as a destination conflict naming the
/// link, nothing outside changes and the links are left as they were.
fn assert_contained(t: &Trap, src: &str, extra: &[&str], fresh_outside: &[(String, String)]) {
    let mut f = t.env.ferry();
    f.arg("copy").arg(src).arg(&t.env.dst).args(extra);
    let out = f.run().code(1);
    let s = out.summary();
    // The ordinary files are copied (or, on a later run, skipped as done).
    assert_eq!((s.copied + s.skipped, s.failed), (2, 4), "{out:?}");
    assert_eq!(
        everything(&t.outside),
        fresh_outside,
        "ferry wrote outside its destination"
    );
    for (link, target) in [
        ("dirlink", t.outside.clone()),
        ("filelink", t.outside.join("target.txt")),
        ("deep/dirlink2", t.outside.clone()),
    ] {
        assert_eq!(
            std::fs::read_link(t.env.dst.join(link)).ok(),
            Some(target),
            "{link} was changed"
        );
    }
    assert_eq!(
        std::fs::read(t.env.dst.join("fine.txt")).unwrap(),
        b"an ordinary file"
    );
    assert_eq!(
        std::fs::read(t.env.dst.join("deep/fine.txt")).unwrap(),
        b"another ordinary file"
    );
    let events = t.env.events(Some(&s.job));
    let failed = of_type(&events, "BlobFailed");
    let names: Vec<&str> = failed.iter().map(|e| ev_name(e)).collect();
    assert_eq!(names.len(), 4, "{names:?}");
    for e in failed {
        let d = ev_data(e);
        assert_eq!(d["error_kind"], "destination-conflict", "{e}");
        let msg = d["message"].as_str().unwrap();
        assert!(msg.contains("symbolic link"), "{msg}");
        assert!(THROUGH_LINKS.contains(&ev_name(e)), "{e}");
    }
    assert!(temp_files(&t.env.dst).is_empty());
    assert!(temp_files(&t.outside).is_empty());
}

#[test]
fn a_local_destination_is_never_written_through_a_symbolic_link() {
    let t = trap();
    let outside = everything(&t.outside);
    // Local -> local (copy_file_range) in every mode that writes.
    for mode in ["full", "incremental", "if-different", "never"] {
        assert_contained(&t, t.env.src.to_str().unwrap(), &["--mode", mode], &outside);
    }
    // A replay does the same again.
    let job = t.env.jobs_json().last().unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    let s = t.env.ferry().args(["replay", &job]).run().code(1).summary();
    assert_eq!(s.failed, 4);
    assert_eq!(everything(&t.outside), outside);
}

#[test]
fn a_file_link_in_the_destination_is_not_judged_by_its_target() {
    // The link's target is newer than the source: judged by it, the
    // incremental run would skip the file as "not newer" and succeed
    // without the file's data anywhere in the destination.
    let env = Env::new();
    make_tree(&env.src, &[("report.txt", b"important v2")]);
    let other = env.path("other/x");
    write(&other, "unrelated");
    set_mtime(&other, now_secs() + 3600, 0);
    std::fs::create_dir_all(&env.dst).unwrap();
    symlink(&other, env.dst.join("report.txt")).unwrap();
    for mode in ["incremental", "never"] {
        let out = env.copy(&["--mode", mode]).run().code(1);
        let s = out.summary();
        assert_eq!(
            (s.copied, s.skipped, s.failed),
            (0, 0, 1),
            "{mode}: {out:?}"
        );
        let events = env.events(Some(&s.job));
        let failed = of_type(&events, "BlobFailed");
        assert_eq!(ev_data(failed[0])["error_kind"], "destination-conflict");
    }
    assert_eq!(std::fs::read(&other).unwrap(), b"unrelated");
    assert_eq!(
        std::fs::read_link(env.dst.join("report.txt")).unwrap(),
        other
    );
}

#[test]
fn a_streamed_copy_from_azure_is_never_written_through_a_symbolic_link() {
    let t = trap();
    let outside = everything(&t.outside);
    let azurite = Azurite::shared();
    let c = unique("links");
    let cs = azurite.connection_string();
    let mut f = t.env.ferry();
    f.env("AZURE_STORAGE_CONNECTION_STRING", &cs)
        .arg("copy")
        .arg(&t.env.src)
        .arg(format!("default:{c}"));
    f.run().success();
    // Azure -> local writes through a temp file and a rename (not O_TMPFILE).
    for mode in ["full", "incremental"] {
        let mut f = t.env.ferry();
        f.env("AZURE_STORAGE_CONNECTION_STRING", &cs)
            .arg("copy")
            .arg(format!("default:{c}"))
            .arg(&t.env.dst)
            .args(["--mode", mode]);
        let out = f.run().code(1);
        let s = out.summary();
        if mode == "full" {
            assert_eq!((s.failed, s.copied), (4, 2), "{out:?}");
        } else {
            // Listings read through a file link, so `filelink` may be
            // skipped as not newer than the file it points to: a read,
            // never a write.
            assert_eq!((s.copied, s.failed + s.skipped), (0, 6), "{out:?}");
            assert!(s.failed >= 3, "{out:?}");
        }
        assert_eq!(everything(&t.outside), outside, "written outside ({mode})");
        let events = t.env.events(Some(&s.job));
        for e in of_type(&events, "BlobFailed") {
            assert_eq!(ev_data(e)["error_kind"], "destination-conflict", "{e}");
            assert!(THROUGH_LINKS.contains(&ev_name(e)), "{e}");
        }
    }
    assert_eq!(
        std::fs::read_link(t.env.dst.join("dirlink")).unwrap(),
        t.outside
    );
    assert!(temp_files(&t.env.dst).is_empty());
}

/// A link planted where ferry puts its temp file (the name is predictable:
/// the blob's name and the job's tag) is neither truncated nor written
/// through. Azure -> local writes through a temp name.
#[test]
fn a_link_planted_at_the_temp_name_is_not_followed() {
    let env = Env::new();
    let azurite = Azurite::shared();
    let cs = azurite.connection_string();
    let outside = env.path("outside");
    make_tree(&outside, &[("victim.txt", b"precious")]);
    make_tree(
        &env.src,
        &[("a.txt", b"new content"), ("d/b.txt", b"new b")],
    );
    let c = unique("tmp");
    let mut f = env.ferry();
    f.env("AZURE_STORAGE_CONNECTION_STRING", &cs)
        .arg("copy")
        .arg(&env.src)
        .arg(format!("default:{c}"));
    f.run().success();
    let mut f = env.ferry();
    f.env("AZURE_STORAGE_CONNECTION_STRING", &cs)
        .arg("submit")
        .arg(format!("default:{c}"))
        .arg(&env.dst);
    let job = f.run().success().stdout.trim().to_string();
    let tag = &job.replace('-', "")[20..];
    std::fs::create_dir(env.dst.join("d")).unwrap();
    for name in ["a.txt", "d/b.txt"] {
        let (dir, base) = name.rsplit_once('/').unwrap_or(("", name));
        let planted = env.dst.join(dir).join(format!(".{base}.{tag}.ferry-tmp"));
        symlink(outside.join("victim.txt"), planted).unwrap();
    }
    let before = everything(&outside);
    let mut f = env.ferry();
    f.env("AZURE_STORAGE_CONNECTION_STRING", &cs).arg("run");
    let s = f.run().success().summary();
    assert_eq!(s.copied, 2);
    assert_eq!(
        everything(&outside),
        before,
        "written through a planted link"
    );
    assert_eq!(
        std::fs::read(env.dst.join("a.txt")).unwrap(),
        b"new content"
    );
    assert_eq!(std::fs::read(env.dst.join("d/b.txt")).unwrap(), b"new b");
    assert!(temp_files(&env.dst).is_empty());
    assert!(!std::fs::read_dir(&env.dst).unwrap().any(|e| e
        .unwrap()
        .file_type()
        .unwrap()
        .is_symlink()));
}

/// Raw HTTP, so the name reaches Azurite exactly as written (clients
/// normalise `..` away).
fn put_raw_blob(port: u16, container: &str, name: &str, sas: &str) -> String {
    let body = b"escaped";
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    write!(
        s,
        "PUT /{DEV_ACCOUNT}/{container}/{name}?{sas} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\
         x-ms-blob-type: BlockBlob\r\nx-ms-version: 2021-08-06\r\nContent-Length: {}\r\n\
         Connection: close\r\n\r\n",
        body.len()
    )
    .unwrap();
    s.write_all(body).unwrap();
    let mut rsp = String::new();
    s.read_to_string(&mut rsp).unwrap();
    rsp.lines().next().unwrap_or_default().to_string()
}

fn unique(tag: &str) -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    format!(
        "cont-{tag}-{:x}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

#[test]
fn blob_names_with_dot_dot_from_azure_fail_and_land_nowhere() {
    let azurite = Azurite::shared();
    let env = Env::new();
    let c = unique("dots");
    let account =
        ferry_engine::config::parse_connection_string("dev", &azurite.connection_string()).unwrap();
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(
            AzureStore::open(&account, &c, "", None, Default::default())
                .unwrap()
                .prepare_destination(),
        )
        .unwrap();
    let sas = auth::ServiceSas {
        account: DEV_ACCOUNT,
        container: &c,
        blob: None,
        permissions: "racwdl",
        start: None,
        expiry: chrono::Utc::now() + chrono::Duration::hours(1),
        protocol: None,
    }
    .token(&auth::AccountKey::from_base64(DEV_KEY).unwrap());
    // bad_input.rs has `a/../b` and `../up`; these climb further, hide the
    // dots in percent-encoding (the service decodes them) or mix in `.`.
    let evil = [
        "a/../../x.txt",
        "a/%2E%2E/%2E%2E/y.txt",
        "%2E%2E/%2E%2E/z.txt",
        "b/./../../w.txt",
    ];
    for name in evil.iter().chain(&["ok.txt"]) {
        let status = put_raw_blob(azurite.port, &c, name, &sas);
        assert!(status.contains(" 201 "), "PUT {name}: {status}");
    }
    // Azurite keeps the names as given: the listing has them.
    let mut f = env.ferry();
    f.env(
        "AZURE_STORAGE_CONNECTION_STRING",
        azurite.connection_string(),
    )
    .arg("copy")
    .arg(format!("default:{c}"))
    .arg(env.dst.join("inner"));
    let out = f.run().code(1);
    let s = out.summary();
    assert_eq!(s.copied, 1, "{out:?}");
    let events = env.events(Some(&s.job));
    let failed = of_type(&events, "BlobFailed");
    assert_eq!(failed.len(), evil.len(), "{failed:?}");
    for e in &failed {
        let name = ev_name(e);
        assert!(name.contains(".."), "{e}");
        assert_eq!(ev_data(e)["error_kind"], "invalid-name", "{e}");
    }
    // Nothing but ok.txt anywhere in the sandbox outside the state dir.
    let mut landed: Vec<String> = list_files(env.dir.path())
        .into_iter()
        .filter(|n| !n.starts_with("state/"))
        .collect();
    landed.sort();
    assert_eq!(landed, ["dst/inner/ok.txt"]);
}

// ---------------------------------------------------------------- plugins

/// WASI 0.2.0 interfaces, cut down to what the fixtures call: a component
/// may import fewer functions than the host offers, and the host's 0.2.x
/// satisfies 0.2.0 imports.
const WASI_IO: &str = "package wasi:io@0.2.0;
interface poll {
  resource pollable {
    block: func();
  }
}";
const WASI_CLOCKS: &str = "package wasi:clocks@0.2.0;
interface monotonic-clock {
  use wasi:io/poll@0.2.0.{pollable};
  type instant = u64;
  type duration = u64;
  now: func() -> instant;
  subscribe-duration: func(when: duration) -> pollable;
}
interface wall-clock {
  record datetime { seconds: u64, nanoseconds: u32 }
  now: func() -> datetime;
}";
const WASI_CLI: &str = "package wasi:cli@0.2.0;
interface environment {
  get-environment: func() -> list<tuple<string, string>>;
  get-arguments: func() -> list<string>;
  initial-cwd: func() -> option<string>;
}";
const WASI_FILESYSTEM: &str = "package wasi:filesystem@0.2.0;
interface types {
  resource descriptor;
}
interface preopens {
  use types.{descriptor};
  get-directories: func() -> list<tuple<descriptor, string>>;
}";
const WASI_SOCKETS: &str = "package wasi:sockets@0.2.0;
interface network {
  resource network;
  enum error-code {
    unknown, access-denied, not-supported, invalid-argument, out-of-memory,
    timeout, concurrency-conflict, not-in-progress, would-block, invalid-state,
    new-socket-limit, address-not-bindable, address-in-use, remote-unreachable,
    connection-refused, connection-reset, connection-aborted, datagram-too-large,
    name-unresolvable, temporary-resolver-failure, permanent-resolver-failure,
  }
  enum ip-address-family { ipv4, ipv6 }
}
interface tcp {
  resource tcp-socket;
}
interface udp {
  resource udp-socket;
}
interface tcp-create-socket {
  use network.{error-code, ip-address-family};
  use tcp.{tcp-socket};
  create-tcp-socket: func(address-family: ip-address-family) -> result<tcp-socket, error-code>;
}
interface udp-create-socket {
  use network.{error-code, ip-address-family};
  use udp.{udp-socket};
  create-udp-socket: func(address-family: ip-address-family) -> result<udp-socket, error-code>;
}";
const FIXTURE_WORLD: &str = "package ferry:fixture;
world probe {
  import wasi:cli/environment@0.2.0;
  import wasi:clocks/wall-clock@0.2.0;
  import wasi:clocks/monotonic-clock@0.2.0;
  import wasi:filesystem/preopens@0.2.0;
  import wasi:sockets/tcp-create-socket@0.2.0;
  import wasi:sockets/udp-create-socket@0.2.0;
  import wasi:io/poll@0.2.0;
  include ferry:plugin/overwrite-policy@0.1.0;
}";

/// A policy component from a core module in WAT that may import the WASI
/// functions above; `configure` answers ok, `decide` runs `decide_body`.
fn fixture(dir: &Path, name: &str, imports: &str, decide_body: &str) -> PathBuf {
    let wat = format!(
        r#"(module
  {imports}
  (memory (export "memory") 2)
  (global $bump (mut i32) (i32.const 4096))
  (func (export "cabi_realloc") (param i32 i32 i32 i32) (result i32)
    (local $p i32)
    (if (i32.gt_u (global.get $bump) (i32.const 100000)) (then (global.set $bump (i32.const 4096))))
    (local.set $p (i32.and (i32.add (global.get $bump) (i32.const 7)) (i32.const -8)))
    (global.set $bump (i32.add (local.get $p) (local.get 3)))
    (local.get $p))
  (data (i32.const 256) "sandboxed")
  (data (i32.const 272) "leaked:")
  (func (export "ferry:plugin/policy@0.1.0#configure") (param i32 i32) (result i32)
    (i32.store8 (i32.const 16) (i32.const 0)) (i32.const 16))
  (func (export "ferry:plugin/policy@0.1.0#decide") (param $args i32) (result i32)
    {decide_body})
)"#
    );
    let module = wat::parse_str(&wat).expect("fixture WAT");
    let mut resolve = wit_parser::Resolve::new();
    for (file, text) in [
        ("io.wit", WASI_IO),
        ("clocks.wit", WASI_CLOCKS),
        ("cli.wit", WASI_CLI),
        ("filesystem.wit", WASI_FILESYSTEM),
        ("sockets.wit", WASI_SOCKETS),
    ] {
        resolve.push_str(file, text).unwrap();
    }
    resolve
        .push_dir(Path::new(env!("CARGO_MANIFEST_DIR")).join("wit"))
        .unwrap();
    let pkg = resolve.push_str("fixture.wit", FIXTURE_WORLD).unwrap();
    let world = resolve.select_world(&[pkg], Some("probe")).unwrap();
    crate::plugins::write_component(dir, name, module, &resolve, world)
}

/// Two blobs at both ends with newer sources: the policy is asked twice.
fn both_ends(env: &Env, n: usize) {
    for i in 0..n {
        let name = format!("f{i:02}.txt");
        write(&env.src.join(&name), format!("new {i}"));
        write(&env.dst.join(&name), "old");
        set_mtime(&env.dst.join(&name), now_secs() - 3600, 0);
    }
}

const PROBE_IMPORTS: &str = r#"
  (import "wasi:cli/environment@0.2.0" "get-environment" (func $env (param i32)))
  (import "wasi:cli/environment@0.2.0" "get-arguments" (func $args (param i32)))
  (import "wasi:cli/environment@0.2.0" "initial-cwd" (func $cwd (param i32)))
  (import "wasi:clocks/wall-clock@0.2.0" "now" (func $wall (param i32)))
  (import "wasi:clocks/monotonic-clock@0.2.0" "now" (func $mono (result i64)))
  (import "wasi:filesystem/preopens@0.2.0" "get-directories" (func $dirs (param i32)))
  (import "wasi:sockets/tcp-create-socket@0.2.0" "create-tcp-socket" (func $tcp (param i32 i32)))
  (import "wasi:sockets/udp-create-socket@0.2.0" "create-udp-socket" (func $udp (param i32 i32)))
"#;

/// Asks the host for everything a sandbox must withhold and sets one bit per
/// thing it got: 1 environment variables, 2 arguments, 4 a working
/// directory, 8 a wall-clock time other than 0, 16 a monotonic time other
/// than 0, 32 a preopened directory (the only way to a file in WASI 0.2),
/// 64 a TCP socket, 128 a UDP socket. Answers skip("sandboxed") when it got
/// nothing, else overwrite("leaked:" + the bits, lowest first).
const PROBE_DECIDE: &str = r#"
    (local $leaks i32) (local $i i32)
    (call $env (i32.const 1024))
    (if (i32.load (i32.const 1028)) (then (local.set $leaks (i32.or (local.get $leaks) (i32.const 1)))))
    (call $args (i32.const 1024))
    (if (i32.load (i32.const 1028)) (then (local.set $leaks (i32.or (local.get $leaks) (i32.const 2)))))
    (call $cwd (i32.const 1024))
    (if (i32.load8_u (i32.const 1024)) (then (local.set $leaks (i32.or (local.get $leaks) (i32.const 4)))))
    (i64.store (i32.const 1024) (i64.const -1))
    (i32.store (i32.const 1032) (i32.const -1))
    (call $wall (i32.const 1024))
    (if (i32.or (i64.ne (i64.load (i32.const 1024)) (i64.const 0)) (i32.ne (i32.load (i32.const 1032)) (i32.const 0)))
      (then (local.set $leaks (i32.or (local.get $leaks) (i32.const 8)))))
    (if (i64.ne (call $mono) (i64.const 0)) (then (local.set $leaks (i32.or (local.get $leaks) (i32.const 16)))))
    (call $dirs (i32.const 1024))
    (if (i32.load (i32.const 1028)) (then (local.set $leaks (i32.or (local.get $leaks) (i32.const 32)))))
    (call $tcp (i32.const 0) (i32.const 1024))
    (if (i32.eqz (i32.load8_u (i32.const 1024))) (then (local.set $leaks (i32.or (local.get $leaks) (i32.const 64)))))
    (call $udp (i32.const 0) (i32.const 1024))
    (if (i32.eqz (i32.load8_u (i32.const 1024))) (then (local.set $leaks (i32.or (local.get $leaks) (i32.const 128)))))
    (if (i32.eqz (local.get $leaks))
      (then
        (i32.store8 (i32.const 16) (i32.const 1))
        (i32.store (i32.const 20) (i32.const 256))
        (i32.store (i32.const 24) (i32.const 9))
        (return (i32.const 16))))
    (loop $bits
      (i32.store8 (i32.add (i32.const 279) (local.get $i))
        (i32.add (i32.const 48) (i32.and (i32.shr_u (local.get $leaks) (local.get $i)) (i32.const 1))))
      (local.set $i (i32.add (local.get $i) (i32.const 1)))
      (br_if $bits (i32.lt_u (local.get $i) (i32.const 8))))
    (i32.store8 (i32.const 16) (i32.const 0))
    (i32.store (i32.const 20) (i32.const 272))
    (i32.store (i32.const 24) (i32.const 15))
    (i32.const 16)
"#;

#[test]
fn a_plugin_gets_no_files_environment_clock_or_network() {
    let env = Env::new();
    both_ends(&env, 2);
    let probe = fixture(env.dir.path(), "probe", PROBE_IMPORTS, PROBE_DECIDE);
    // It really imports what it probes.
    let check = env
        .ferry()
        .args(["plugin", "check"])
        .arg(&probe)
        .run()
        .success()
        .stdout;
    for import in [
        "wasi:cli/environment",
        "wasi:clocks/wall-clock",
        "wasi:clocks/monotonic-clock",
        "wasi:filesystem/preopens",
        "wasi:sockets/tcp-create-socket",
        "wasi:sockets/udp-create-socket",
    ] {
        assert!(check.contains(import), "{import} not imported: {check}");
    }
    assert!(check.contains("= skip (sandboxed)"), "{check}");
    // In a real job, with things to find in ferry's own environment.
    let mut f = env.copy(&["--policy", &format!("plugin:{}", probe.display())]);
    f.env("FERRY_PROBE_SECRET", "visible?")
        .env("HOME", env.dir.path());
    let s = f.run().success().summary();
    assert_eq!((s.copied, s.skipped), (0, 2));
    let events = env.events(Some(&s.job));
    for e in of_type(&events, "BlobSkipped") {
        assert_eq!(ev_data(e)["reason"], "policy", "{e}");
        assert_eq!(ev_data(e)["detail"], "sandboxed", "{e}");
    }
}

/// The probe's logic itself: with `leaks` forced, it reports them, so a
/// sandbox that granted something would be seen.
#[test]
fn the_sandbox_probe_reports_what_it_gets() {
    let env = Env::new();
    both_ends(&env, 1);
    // Same code with one check inverted (a monotonic time of 0 counts as a
    // leak): it must answer "leaked:00001000" (bit 16).
    let inverted = PROBE_DECIDE.replace(
        "(if (i64.ne (call $mono) (i64.const 0))",
        "(if (i64.eq (call $mono) (i64.const 0))",
    );
    assert_ne!(inverted, PROBE_DECIDE);
    let probe = fixture(env.dir.path(), "inverted", PROBE_IMPORTS, &inverted);
    let s = env
        .copy(&["--policy", &format!("plugin:{}", probe.display())])
        .run()
        .success()
        .summary();
    let events = env.events(Some(&s.job));
    let copied = of_type(&events, "BlobCopied");
    assert_eq!(copied.len(), 1);
    assert_eq!(ev_data(copied[0])["detail"], "leaked:00001000");
}

/// Runs `copy` with the fixture as policy on `n` blobs at both ends and
/// returns the run and how long it took.
fn run_hostile(name: &str, imports: &str, body: &str, n: usize) -> (Env, Summary, Duration) {
    let env = Env::new();
    both_ends(&env, n);
    let plugin = fixture(env.dir.path(), name, imports, body);
    let started = Instant::now();
    let out = env
        .copy(&[
            "--policy",
            &format!("plugin:{}", plugin.display()),
            "--parallel",
            "2",
        ])
        .spawn()
        .wait_timeout(Duration::from_secs(60))
        .code(1);
    (env, out.summary(), started.elapsed())
}

fn assert_all_failed_by_plugin(env: &Env, s: &Summary, n: u64, needles: &[&str]) {
    assert_eq!((s.copied, s.failed), (0, n), "{s:?}");
    let events = env.events(Some(&s.job));
    let failed = of_type(&events, "BlobFailed");
    assert_eq!(failed.len() as u64, n);
    for e in failed {
        assert_eq!(ev_data(e)["error_kind"], "plugin", "{e}");
        let msg = ev_data(e)["message"].as_str().unwrap();
        assert!(needles.iter().any(|n| msg.contains(n)), "{msg}");
    }
}

/// A guest that sleeps in a host call (an hour, on the monotonic clock,
/// again and again) uses no fuel while it waits, and an epoch deadline
/// cannot interrupt a host call: the host must not block at all. Time does
/// not pass in the sandbox, so a sleep returns at once and the loop ends on
/// fuel or the deadline.
#[test]
fn a_plugin_blocked_in_a_host_call_cannot_hold_the_job_past_its_deadline() {
    let imports = r#"
  (import "wasi:clocks/monotonic-clock@0.2.0" "subscribe-duration" (func $sleep (param i64) (result i32)))
  (import "wasi:io/poll@0.2.0" "[method]pollable.block" (func $block (param i32)))
  (import "wasi:io/poll@0.2.0" "[resource-drop]pollable" (func $drop (param i32)))
"#;
    let body = "(local $p i32)
    (loop $l
      (local.set $p (call $sleep (i64.const 3600000000000)))
      (call $block (local.get $p))
      (call $drop (local.get $p))
      (br $l))
    unreachable";
    let (env, s, took) = run_hostile("sleeper", imports, body, 2);
    assert_all_failed_by_plugin(&env, &s, 2, &["fuel", "time limit"]);
    // Two calls at once, each stopped within about 2 s.
    assert!(took < Duration::from_secs(10), "the job took {took:?}");
}

/// An infinite loop calling the host (cheap on fuel per iteration) stops
/// within the deadline too; a bare loop is in plugins.rs.
#[test]
fn a_plugin_spinning_on_host_calls_cannot_hold_the_job_past_its_deadline() {
    let imports = r#"
  (import "wasi:clocks/monotonic-clock@0.2.0" "now" (func $mono (result i64)))
"#;
    let body = "(loop $l (drop (call $mono)) (br $l)) unreachable";
    let (env, s, took) = run_hostile("spinner", imports, body, 2);
    assert_all_failed_by_plugin(&env, &s, 2, &["fuel", "time limit"]);
    assert!(took < Duration::from_secs(10), "the job took {took:?}");
}
