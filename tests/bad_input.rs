//! The bad input matrix: one row per kind of bad input, each checked the
//! same way. A row names its inputs (`setup`), the command (`run`) and what
//! must come out (`expect`); `run_case` then checks, for every row:
//!
//! - the one-line `ferry: error: ...` naming what is wrong, or the failed
//!   blobs' recorded errors, and the documented exit code (`cli/src/exit.rs`);
//! - that nothing was lost or half-written: the source is untouched, every
//!   destination file is its old self or a complete copy, no `*.ferry-tmp`
//!   is left, and input rejected up front enqueued nothing (the log is
//!   byte-for-byte what it was);
//! - that no secret (account key, SAS signature) is printed.
//!
//! Rows run one after another within a group; a group reports every failed
//! row, not just the first. Azure rows share the process's Azurite and reach
//! it with a tiny HTTP/1.0 client, so they can make blobs ferry itself would
//! refuse to write (`a/../b`, `a//b`, names over 1,024 characters).

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::fs;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use ferry_engine::store::azure::auth;
use ferry_engine::testkit::{Azurite, DEV_ACCOUNT, DEV_KEY};

use crate::plugins::{policy_fixture, shipped, CONFIGURE_OK};
use crate::util::*;

/// A key that is valid base64 but not the account's.
const WRONG_KEY: &str = "AAAAbm90IHRoZSByaWdodCBrZXkgYXQgYWxsIGZvciB0aGlzIGFjY291bnQ=";
/// Put in a connection string that must be refused; must never be printed.
const NOT_BASE64_KEY: &str = "%%%n0t-base64-s3cret%%%";
/// How a bad `--parallel` is refused: the flag and the forms it takes.
const PARALLEL_FORMS: &str =
    "'--parallel <N|auto>': use a number of copies from 1 to 4096, or auto";
/// Service version of the requests the tests send themselves.
const X_MS_VERSION: &str = "2021-10-04";

// ---------------------------------------------------------------- rows

/// Where a job reads or writes, as typed and as the test inspects it.
struct Loc {
    arg: OsString,
    at: At,
}

enum At {
    Local(PathBuf),
    /// A container of the shared Azurite.
    Container(String),
    /// Nothing the test can look at (rejected before any store is opened).
    Nowhere,
}

impl Loc {
    fn local(p: &Path) -> Loc {
        Loc {
            arg: p.into(),
            at: At::Local(p.to_path_buf()),
        }
    }

    /// `account:container[/prefix]` of the shared Azurite.
    fn container(account: &str, container: &str, prefix: &str) -> Loc {
        let arg = if prefix.is_empty() {
            format!("{account}:{container}")
        } else {
            format!("{account}:{container}/{prefix}")
        };
        Loc {
            arg: arg.into(),
            at: At::Container(container.to_string()),
        }
    }

    fn nowhere(arg: impl Into<OsString>) -> Loc {
        Loc {
            arg: arg.into(),
            at: At::Nowhere,
        }
    }
}

/// How the row runs ferry.
enum Run {
    /// `ferry copy SRC DST` plus these arguments.
    Copy(&'static [&'static str]),
    /// Anything else; gets the row's source and destination.
    Custom(fn(&Sb, &Loc, &Loc) -> Out),
}

/// What must come out.
enum Expect {
    /// Rejected before anything was enqueued: one error line with this exit
    /// code; the log, the source and the destination are as they were.
    Refused { code: i32, needle: &'static str },
    /// The job ran and failed as a whole (exit 6): it is recorded as failed
    /// with the cause, and the destination is as it was.
    JobFailed { needle: &'static str },
    /// The job went on (exit 1): exactly these blobs failed, each `(name,
    /// error kind, text in its message)`, and `copied` blobs were copied.
    BlobsFailed { failed: Failed, copied: u64 },
    /// Some other one-line error with this code; the destination holds only
    /// old or complete files. The row's `check` does the rest.
    Error { code: i32, needle: &'static str },
    /// Every blob arrived (exit 0), as the source is after the run.
    CopiedAsNow { copied: u64 },
}

/// A victim changed after it was listed: the copy takes it as it is now
/// (the next try looks again), so both blobs land.
const VICTIM_TAKEN_AS_NOW: Expect = Expect::CopiedAsNow { copied: 2 };

/// The mid-copy rows: the victim fails as changed at its source while it
/// was copied, and the other blob lands.
const VICTIM_CHANGED: Expect = Expect::BlobsFailed {
    failed: &[(
        "z-victim",
        "source-changed",
        "changed while it was being copied",
    )],
    copied: 1,
};

struct Case {
    name: &'static str,
    /// Makes the inputs; returns the source and destination.
    setup: fn(&Sb) -> (Loc, Loc),
    run: Run,
    expect: Expect,
    /// The row changes the source on purpose (mid-copy rows).
    changes_src: bool,
    /// Row-specific checks, after the common ones.
    check: Option<fn(&Sb, &Out)>,
}

impl Case {
    fn new(name: &'static str, setup: fn(&Sb) -> (Loc, Loc), run: Run, expect: Expect) -> Case {
        Case {
            name,
            setup,
            run,
            expect,
            changes_src: false,
            check: None,
        }
    }

    fn check(mut self, f: fn(&Sb, &Out)) -> Case {
        self.check = Some(f);
        self
    }

    fn changes_src(mut self) -> Case {
        self.changes_src = true;
        self
    }
}

fn refused(code: i32, needle: &'static str) -> Expect {
    Expect::Refused { code, needle }
}

// ---------------------------------------------------------------- sandbox

/// One row's sandbox: an `Env`, and the shared Azurite when the row uses it
/// (then the state dir's `ferry.toml` names `dev` and, with a wrong key, `bad`).
struct Sb {
    env: Env,
    azurite: OnceLock<&'static Azurite>,
    /// tmpfs mounts to undo before the temp dir goes.
    mounts: std::cell::RefCell<Vec<PathBuf>>,
}

impl Drop for Sb {
    fn drop(&mut self) {
        for m in self.mounts.borrow().iter().rev() {
            let _ = std::process::Command::new("umount")
                .arg("-l")
                .arg(m)
                .status();
        }
    }
}

impl Sb {
    fn new() -> Sb {
        Sb {
            env: Env::new(),
            azurite: OnceLock::new(),
            mounts: Default::default(),
        }
    }

    fn ferry(&self) -> Ferry {
        self.env.ferry()
    }

    /// The shared Azurite; the first call writes the accounts config.
    fn az(&self) -> &'static Azurite {
        self.azurite.get_or_init(|| {
            let a = Azurite::shared();
            write(
                &self.env.state.join("ferry.toml"),
                format!(
                    "[accounts.dev]\nconnection_string = \"{}\"\n\n[accounts.bad]\nconnection_string = \"AccountName={DEV_ACCOUNT};AccountKey={WRONG_KEY};BlobEndpoint={}\"\n",
                    a.connection_string(),
                    a.endpoint()
                ),
            );
            a
        })
    }

    fn config(&self, text: &str) {
        write(&self.env.state.join("ferry.toml"), text);
    }

    /// `env.src` with these files.
    fn src(&self, files: &[(&str, &[u8])]) -> Loc {
        make_tree(&self.env.src, files);
        Loc::local(&self.env.src)
    }

    /// The (empty) `env.dst`.
    fn dst(&self) -> Loc {
        Loc::local(&self.env.dst)
    }

    /// A new container holding these blobs, as `dev:CONTAINER`.
    fn azure_src(&self, blobs: &[(&str, &[u8])]) -> Loc {
        let c = new_container_name();
        create_container(self.az(), &c);
        for (name, data) in blobs {
            put_blob(self.az(), &c, name, data);
        }
        Loc::container("dev", &c, "")
    }

    /// A container that does not exist yet, as `dev:CONTAINER`.
    fn azure_dst(&self) -> Loc {
        self.az();
        Loc::container("dev", &new_container_name(), "")
    }

    /// Mounts a tmpfs of `size` (e.g. "1m") on `dir`; undone on drop.
    fn tmpfs(&self, dir: &Path, size: &str) {
        fs::create_dir_all(dir).unwrap();
        let st = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir)
            .status()
            .expect("run mount");
        assert!(
            st.success(),
            "mounting a {size} tmpfs on {} failed: the disk-full rows need root (they run as root in CI)",
            dir.display()
        );
        self.mounts.borrow_mut().push(dir.to_path_buf());
    }

    /// The log as `events --json` prints it, or the code it failed with.
    fn state_fingerprint(&self) -> String {
        let out = self.ferry().args(["events", "--json"]).run();
        match out.code {
            Some(0) => out.stdout,
            code => format!("unreadable: exit {code:?}"),
        }
    }

    /// name -> (size, md5) of what a location holds; `None` if it does not exist.
    fn contents(&self, at: &At) -> Option<Tree> {
        match at {
            At::Local(p) => p.is_dir().then(|| local_tree(p)),
            At::Container(c) => {
                let az = self.az();
                list_blobs(az, c).map(|names| {
                    names
                        .into_iter()
                        .map(|n| {
                            let data = get_blob(az, c, &n);
                            (n, digest(&data))
                        })
                        .collect()
                })
            }
            At::Nowhere => None,
        }
    }
}

type Tree = BTreeMap<String, (u64, [u8; 16])>;

fn digest(data: &[u8]) -> (u64, [u8; 16]) {
    use md5::{Digest, Md5};
    (data.len() as u64, Md5::digest(data).into())
}

/// Every regular file under `root` (names made UTF-8 lossily, so
/// non-UTF-8 names still show up), temp files included.
fn local_tree(root: &Path) -> Tree {
    let mut out = Tree::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let Ok(rd) = fs::read_dir(&dir) else {
            // Unreadable folders (permission rows) are compared by name only.
            let rel = dir.strip_prefix(root).unwrap().to_string_lossy();
            out.insert(format!("{rel}/<unreadable>"), (0, [0; 16]));
            continue;
        };
        for e in rd {
            let e = e.unwrap();
            let path = e.path();
            let ft = e.file_type().unwrap();
            if ft.is_dir() {
                stack.push(path);
            } else if ft.is_file() {
                let rel = path
                    .strip_prefix(root)
                    .unwrap()
                    .to_string_lossy()
                    .into_owned();
                let value = match fs::read(&path) {
                    Ok(data) => digest(&data),
                    // Unreadable on purpose: compare its size only.
                    Err(_) => (fs::metadata(&path).unwrap().len(), [0xff; 16]),
                };
                out.insert(rel, value);
            }
        }
    }
    out
}

fn new_container_name() -> String {
    use std::sync::atomic::{AtomicU32, Ordering};
    static N: AtomicU32 = AtomicU32::new(0);
    format!(
        "bad-input-{:x}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

// ---------------------------------------------------------------- Azurite over raw HTTP

/// One HTTP/1.0 request (so the answer is never chunked); returns the status
/// and the body.
fn http(
    az: &Azurite,
    method: &str,
    target: &str,
    headers: &[(&str, String)],
    body: &[u8],
) -> (u16, Vec<u8>) {
    let mut s = TcpStream::connect(("127.0.0.1", az.port)).expect("connect to Azurite");
    s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    let mut req = format!(
        "{method} {target} HTTP/1.0\r\nHost: 127.0.0.1:{}\r\nContent-Length: {}\r\nx-ms-version: {X_MS_VERSION}\r\n",
        az.port,
        body.len()
    );
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes()).unwrap();
    s.write_all(body).unwrap();
    let mut resp = Vec::new();
    s.read_to_end(&mut resp).expect("read Azurite's answer");
    let split = resp
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or_else(|| panic!("no HTTP answer to {method} {target}"));
    let head = String::from_utf8_lossy(&resp[..split]);
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("bad status line: {head}"));
    (status, resp[split + 4..].to_vec())
}

/// A read/write/list/delete SAS for the container.
fn sas(container: &str) -> String {
    auth::ServiceSas {
        account: DEV_ACCOUNT,
        container,
        blob: None,
        permissions: "racwdl",
        start: None,
        expiry: chrono::Utc::now() + chrono::Duration::hours(2),
        protocol: None,
    }
    .token(&auth::AccountKey::from_base64(DEV_KEY).unwrap())
}

/// Percent-encodes a blob name for a request path, keeping `/` and `.`
/// as they are (so `a/../b` reaches the service as typed).
fn encode_name(name: &str) -> String {
    let mut out = String::new();
    for b in name.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~/".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn blob_target(container: &str, name: &str) -> String {
    format!(
        "/{DEV_ACCOUNT}/{container}/{}?{}",
        encode_name(name),
        sas(container)
    )
}

fn create_container(az: &Azurite, container: &str) {
    let url = url::Url::parse(&format!("{}/{container}?restype=container", az.endpoint())).unwrap();
    let date = chrono::Utc::now()
        .format("%a, %d %b %Y %H:%M:%S GMT")
        .to_string();
    let headers = vec![
        ("x-ms-date".to_string(), date.clone()),
        ("x-ms-version".to_string(), X_MS_VERSION.to_string()),
    ];
    let to_sign = auth::string_to_sign(
        DEV_ACCOUNT,
        &auth::SignedRequest {
            method: "PUT",
            url: &url,
            headers,
            content_length: Some(0),
        },
    );
    let sig = auth::AccountKey::from_base64(DEV_KEY)
        .unwrap()
        .sign(&to_sign);
    let (status, body) = http(
        az,
        "PUT",
        &format!("/{DEV_ACCOUNT}/{container}?restype=container"),
        &[
            ("x-ms-date", date),
            ("Authorization", format!("SharedKey {DEV_ACCOUNT}:{sig}")),
        ],
        b"",
    );
    assert_eq!(
        status,
        201,
        "create container {container}: {}",
        String::from_utf8_lossy(&body)
    );
}

fn put_blob(az: &Azurite, container: &str, name: &str, data: &[u8]) {
    let (status, body) = http(
        az,
        "PUT",
        &blob_target(container, name),
        &[("x-ms-blob-type", "BlockBlob".into())],
        data,
    );
    assert_eq!(
        status,
        201,
        "put blob {name:?}: {}",
        String::from_utf8_lossy(&body)
    );
}

fn delete_blob(az: &Azurite, container: &str, name: &str) {
    let (status, _) = http(az, "DELETE", &blob_target(container, name), &[], b"");
    assert_eq!(status, 202, "delete blob {name:?}");
}

fn get_blob(az: &Azurite, container: &str, name: &str) -> Vec<u8> {
    let (status, body) = http(az, "GET", &blob_target(container, name), &[], b"");
    assert_eq!(status, 200, "get blob {name:?}");
    body
}

/// Names of the container's blobs; `None` if the container does not exist.
fn list_blobs(az: &Azurite, container: &str) -> Option<Vec<String>> {
    let target = format!(
        "/{DEV_ACCOUNT}/{container}?restype=container&comp=list&{}",
        sas(container)
    );
    let (status, body) = http(az, "GET", &target, &[], b"");
    if status == 404 {
        return None;
    }
    let xml = String::from_utf8(body).unwrap();
    assert_eq!(status, 200, "list {container}: {xml}");
    let mut names = Vec::new();
    let mut rest = xml.as_str();
    while let Some(start) = rest.find("<Name>") {
        let after = &rest[start + 6..];
        let end = after.find("</Name>").unwrap();
        names.push(
            after[..end]
                .replace("&lt;", "<")
                .replace("&gt;", ">")
                .replace("&quot;", "\"")
                .replace("&apos;", "'")
                .replace("&amp;", "&"),
        );
        rest = &after[end..];
    }
    Some(names)
}

// ---------------------------------------------------------------- the runner

fn run_matrix(group: &str, cases: Vec<Case>) {
    let mut failures = Vec::new();
    let started = Instant::now();
    for case in &cases {
        let t = Instant::now();
        let res = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| run_case(case)));
        if let Err(p) = res {
            let msg = p
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_default();
            failures.push(format!("[{}] {msg}", case.name));
        }
        eprintln!("{group}/{}: {:?}", case.name, t.elapsed());
    }
    eprintln!("{group}: {} rows in {:?}", cases.len(), started.elapsed());
    assert!(
        failures.is_empty(),
        "{} of {} {group} rows failed:\n\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n\n")
    );
}

fn run_case(case: &Case) {
    let sb = Sb::new();
    let (src, dst) = (case.setup)(&sb);
    // Only rows refused up front compare the log (reading it opens the
    // state dir, which the disk-full row must find fresh).
    let state_before =
        matches!(case.expect, Expect::Refused { .. }).then(|| sb.state_fingerprint());
    let src_before = sb.contents(&src.at);
    let dst_before = sb.contents(&dst.at);

    let out = match &case.run {
        Run::Copy(extra) => sb
            .ferry()
            .arg("copy")
            .arg(&src.arg)
            .arg(&dst.arg)
            .args(*extra)
            .run(),
        Run::Custom(f) => f(&sb, &src, &dst),
    };
    assert_no_secrets(&out);
    for line in out.stderr.lines() {
        assert_eq!(line, line.trim_end(), "trailing whitespace in stderr");
    }

    let src_after = sb.contents(&src.at);
    if !case.changes_src {
        assert!(src_before == src_after, "the source changed");
    }
    let dst_after = sb.contents(&dst.at);
    if let At::Local(d) = &src.at {
        if d.is_dir() {
            assert!(temp_files(d).is_empty(), "temp files in the source");
        }
    }

    let out = match case.expect {
        Expect::Refused { code, needle } => {
            let out = out.error(code, needle);
            assert!(out.stdout.is_empty(), "stdout: {}", out.stdout);
            assert!(
                Some(sb.state_fingerprint()) == state_before,
                "the log changed (a job was enqueued or ran)"
            );
            assert!(dst_before == dst_after, "the destination changed");
            out
        }
        Expect::JobFailed { needle } => {
            let out = out.error(6, needle);
            assert!(dst_before == dst_after, "the destination changed");
            let jobs = sb.env.jobs_json();
            assert_eq!(jobs.len(), 1, "one job");
            assert_eq!(jobs[0]["state"], "failed");
            let recorded = jobs[0]["error"].as_str().unwrap_or_default();
            assert!(
                recorded.to_lowercase().contains(&needle.to_lowercase()),
                "the job's recorded error {recorded:?} lacks {needle:?}"
            );
            out
        }
        Expect::BlobsFailed { failed, copied } => {
            let out = out.code(1);
            assert!(out.stderr.is_empty(), "stderr: {}", out.stderr);
            let s = out.summary();
            assert_eq!(
                (s.status.as_str(), s.copied, s.failed),
                ("completed with failures", copied, failed.len() as u64),
                "{}",
                out.stdout
            );
            check_failed_blobs(&sb, &s.job, failed);
            assert_sound(&dst_before, &dst_after, &src_after);
            sb.env.verify_log_ok(Some(&s.job));
            out
        }
        Expect::CopiedAsNow { copied } => {
            let out = out.success();
            let s = out.summary();
            assert_eq!((s.copied, s.failed), (copied, 0), "{}", out.stdout);
            assert!(
                dst_after == src_after,
                "the destination is not the source as it is now"
            );
            sb.env.verify_log_ok(Some(&s.job));
            out
        }
        Expect::Error { code, needle } => {
            let out = out.error(code, needle);
            assert_sound(&dst_before, &dst_after, &src_after);
            out
        }
    };
    if let Some(check) = case.check {
        check(&sb, &out);
    }
}

/// The job's BlobFailed events are exactly `want`, with one-line,
/// printable messages; `show` prints them without raw control characters.
fn check_failed_blobs(sb: &Sb, job: &str, want: &[(&str, &str, &str)]) {
    let events = sb.env.events(Some(job));
    let got: BTreeMap<String, (String, String)> = of_type(&events, "BlobFailed")
        .iter()
        .map(|e| {
            let d = ev_data(e);
            (
                ev_name(e).to_string(),
                (
                    d["error_kind"].as_str().unwrap().to_string(),
                    d["message"].as_str().unwrap().to_string(),
                ),
            )
        })
        .collect();
    let names: Vec<&String> = got.keys().collect();
    assert_eq!(got.len(), want.len(), "failed blobs: {got:?}");
    for (name, kind, needle) in want {
        let (k, msg) = got
            .get(*name)
            .unwrap_or_else(|| panic!("{name:?} did not fail; failed: {names:?}"));
        assert_eq!(k, kind, "error kind of {name:?} ({msg})");
        assert!(
            msg.to_lowercase().contains(&needle.to_lowercase()),
            "the error of {name:?} does not mention {needle:?}: {msg}"
        );
        assert!(
            !msg.chars().any(char::is_control),
            "control characters in the error of {name:?}: {msg:?}"
        );
    }
    let show = sb.ferry().args(["show", job]).run().success();
    assert!(
        !show.stdout.chars().any(|c| c.is_control() && c != '\n'),
        "raw control characters in `ferry show`: {:?}",
        show.stdout
    );
}

/// Nothing lost or half-written: every destination file is either what it
/// was before or a complete copy of its source, nothing that was there is
/// gone, and no temp file is left.
fn assert_sound(before: &Option<Tree>, after: &Option<Tree>, src: &Option<Tree>) {
    let empty = Tree::new();
    let before = before.as_ref().unwrap_or(&empty);
    let after = after.as_ref().unwrap_or(&empty);
    let src = src.as_ref().unwrap_or(&empty);
    for name in before.keys() {
        assert!(
            after.contains_key(name),
            "{name:?} was lost from the destination"
        );
    }
    for (name, d) in after {
        assert!(
            !name.ends_with(".ferry-tmp"),
            "temp file left in the destination: {name:?}"
        );
        assert!(
            src.get(name) == Some(d) || before.get(name) == Some(d),
            "{name:?} in the destination is neither what it was nor a complete copy of its source"
        );
    }
}

fn assert_no_secrets(out: &Out) {
    let text = format!("{}{}", out.stdout, out.stderr);
    for (what, secret) in [
        ("account key", DEV_KEY),
        ("account key (start)", &DEV_KEY[..16]),
        ("wrong key", WRONG_KEY),
        ("refused key", NOT_BASE64_KEY),
    ] {
        assert!(!text.contains(secret), "the {what} was printed:\n{text}");
    }
    // A SAS signature: `sig=` and a value (`(sig=)` in a hint is fine).
    let signed = text.match_indices("sig=").any(|(i, _)| {
        text[i + 4..]
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphanumeric() || c == '%')
    });
    assert!(!signed, "a SAS signature was printed:\n{text}");
}

// ---------------------------------------------------------------- shared bits of rows

fn one_file(sb: &Sb) -> Loc {
    sb.src(&[("a.txt", b"a")])
}

/// The local source and the account destination `dev:photos`, for config
/// rows that must fail before any store is opened.
fn to_photos(sb: &Sb) -> (Loc, Loc) {
    (one_file(sb), Loc::nowhere("dev:photos"))
}

fn copy_with_config(sb: &Sb, src: &Loc, dst: &Loc) -> Out {
    let cfg = sb.env.path("other.toml");
    sb.ferry()
        .arg("--config")
        .arg(&cfg)
        .arg("copy")
        .arg(&src.arg)
        .arg(&dst.arg)
        .run()
}

/// A write lease (fcntl F_SETLEASE) on a file: whoever opens it blocks in
/// the kernel until the lease is released, and the holder sees the attempt.
/// This pins ferry at a known point without racing it.
struct Lease(fs::File);

/// Linux's F_SETSIG (asm-generic/fcntl.h), which the libc crate lacks.
const F_SETSIG: libc::c_int = 10;

impl Lease {
    fn take(path: &Path) -> Lease {
        use std::os::fd::AsRawFd;
        let f = fs::File::open(path).unwrap();
        let fd = f.as_raw_fd();
        // SAFETY: fcntl on a descriptor we own. The break notice goes out as
        // SIGURG, which is ignored by default (SIGIO would end the tests).
        unsafe {
            assert_eq!(libc::fcntl(fd, F_SETSIG, libc::SIGURG), 0);
            let rc = libc::fcntl(fd, libc::F_SETLEASE, libc::F_WRLCK);
            assert_eq!(rc, 0, "lease: {}", std::io::Error::last_os_error());
        }
        Lease(f)
    }

    /// Whether someone is waiting to open the file.
    fn wanted(&self) -> bool {
        use std::os::fd::AsRawFd;
        // SAFETY: as above. During a break the lease reads as its target type.
        unsafe { libc::fcntl(self.0.as_raw_fd(), libc::F_GETLEASE) == libc::F_RDLCK }
    }
}

/// Whether process `pid` has a thread called `name`.
fn has_thread(pid: i32, name: &str) -> bool {
    let Ok(rd) = fs::read_dir(format!("/proc/{pid}/task")) else {
        return false;
    };
    rd.flatten()
        .any(|t| fs::read_to_string(t.path().join("comm")).is_ok_and(|c| c.trim_end() == name))
}

/// A copy the test interferes with: `--parallel 1`, with `held` leased so
/// the one worker blocks opening it. Once it does and the listings are done
/// (no `ferry-list` thread left), `z-victim` is listed but not yet copied:
/// `meddle` runs, the lease goes, and ferry carries on.
fn copy_and_meddle(
    sb: &Sb,
    src: &Loc,
    dst: &Loc,
    held: &Path,
    extra: &[&str],
    meddle: &dyn Fn(),
) -> Out {
    let lease = Lease::take(held);
    let mut f = sb.ferry();
    f.arg("copy")
        .arg(&src.arg)
        .arg(&dst.arg)
        .args(["--parallel", "1"])
        .args(extra);
    let mut running = f.spawn();
    let pid = running.pid();
    let deadline = Instant::now() + Duration::from_secs(60);
    while !lease.wanted() || has_thread(pid, "ferry-list") {
        assert!(
            !running.has_exited(),
            "ferry ended without opening {}",
            held.display()
        );
        assert!(
            Instant::now() < deadline,
            "ferry never opened {}",
            held.display()
        );
        std::thread::sleep(Duration::from_millis(1));
    }
    meddle();
    drop(lease);
    running.wait_timeout(Duration::from_secs(120))
}

/// A local source: `a-held` (leased while the test meddles) and `z-victim`.
fn local_victim(sb: &Sb) -> (Loc, Loc) {
    let src = sb.src(&[("a-held", b"held"), ("z-victim", b"the victim")]);
    (src, sb.dst())
}

/// Copies `local_victim`, meddling with z-victim's path.
fn local_meddle(sb: &Sb, src: &Loc, dst: &Loc, meddle: fn(&Path)) -> Out {
    let held = sb.env.src.join("a-held");
    let victim = sb.env.src.join("z-victim");
    copy_and_meddle(sb, src, dst, &held, &[], &|| meddle(&victim))
}

/// An Azure source with `a-held` and `z-victim`, copied to a local folder
/// that has its own `a-held` of the same size: in if-different mode a worker
/// opens that one to compare, and blocks on its lease.
fn azure_victim(sb: &Sb) -> (Loc, Loc) {
    azure_victim_of(sb, b"the victim")
}

/// `azure_victim` with a victim big enough (300 KB at `azure_meddle`'s
/// 64 KiB blocks) to come down as parallel ranges written at their offsets.
fn azure_big_victim(sb: &Sb) -> (Loc, Loc) {
    let big: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
    azure_victim_of(sb, &big)
}

fn azure_victim_of(sb: &Sb, victim: &[u8]) -> (Loc, Loc) {
    let src = sb.azure_src(&[("a-held", b"new!"), ("z-victim", victim)]);
    write(&sb.env.dst.join("a-held"), "old!");
    (src, sb.dst())
}

/// Copies `azure_victim` (64 KiB blocks), meddling with the container.
fn azure_meddle(sb: &Sb, src: &Loc, dst: &Loc, meddle: fn(&Azurite, &str)) -> Out {
    let At::Container(c) = &src.at else {
        unreachable!()
    };
    let held = sb.env.dst.join("a-held");
    let extra = ["--mode", "if-different", "--block-size", "64K"];
    copy_and_meddle(sb, src, dst, &held, &extra, &|| meddle(sb.az(), c))
}

/// The Azure victim is rewritten while `a-held` holds the copy up: the
/// pinned download is refused (412), and the next try takes the blob as it
/// is now.
fn azure_victim_rewritten(name: &'static str, setup: fn(&Sb) -> (Loc, Loc)) -> Case {
    Case::new(
        name,
        setup,
        Run::Custom(|sb, src, dst| {
            azure_meddle(sb, src, dst, |az, c| {
                put_blob(az, c, "z-victim", b"the victim, rewritten")
            })
        }),
        VICTIM_TAKEN_AS_NOW,
    )
    .changes_src()
}

/// Both ends hold two files with newer sources (a policy plugin is asked
/// about them); `fresh.txt` is only at the source.
fn both_ends(sb: &Sb) -> (Loc, Loc) {
    let env = &sb.env;
    make_tree(
        &env.src,
        &[
            ("keep/a.txt", b"new a"),
            ("other/b.txt", b"new b"),
            ("fresh.txt", b"only here"),
        ],
    );
    make_tree(
        &env.dst,
        &[("keep/a.txt", b"old a"), ("other/b.txt", b"old b")],
    );
    for n in ["keep/a.txt", "other/b.txt"] {
        set_mtime(&env.dst.join(n), now_secs() - 3600, 0);
    }
    (Loc::local(&env.src), Loc::local(&env.dst))
}

fn copy_with_fixture(sb: &Sb, src: &Loc, dst: &Loc, name: &str, decide: &str) -> Out {
    let fixture = policy_fixture(sb.env.dir.path(), name, decide, CONFIGURE_OK);
    let mut policy = OsString::from("plugin:");
    policy.push(&fixture);
    sb.ferry()
        .arg("copy")
        .arg(&src.arg)
        .arg(&dst.arg)
        .arg("--policy")
        .arg(policy)
        .run()
}

fn copy_with_policy(sb: &Sb, src: &Loc, dst: &Loc, plugin: &Path) -> Out {
    let mut policy = OsString::from("plugin:");
    policy.push(plugin);
    sb.ferry()
        .arg("copy")
        .arg(&src.arg)
        .arg(&dst.arg)
        .arg("--policy")
        .arg(policy)
        .run()
}

fn have_setpriv() -> bool {
    std::process::Command::new("setpriv")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
}

fn copy_without_dac_override(sb: &Sb, src: &Loc, dst: &Loc) -> Out {
    assert!(have_setpriv(), "setpriv (util-linux) is needed");
    sb.ferry()
        .arg("copy")
        .arg(&src.arg)
        .arg(&dst.arg)
        .run_without_dac_override()
}

/// The id of the state dir's only job.
fn only_job(sb: &Sb) -> String {
    let jobs = sb.env.jobs_json();
    assert_eq!(jobs.len(), 1);
    jobs[0]["id"].as_str().unwrap().to_string()
}

/// Nothing was written outside the destination (for names that try to escape).
fn nothing_escaped(sb: &Sb, _: &Out) {
    let mut top: Vec<String> = fs::read_dir(sb.env.dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    top.sort();
    assert_eq!(top, ["dst", "src", "state"], "something landed outside dst");
    assert!(!sb.env.dst.join("b").exists() && !sb.env.dst.join("c").exists());
}

// ---------------------------------------------------------------- the rows

fn config_rows() -> Vec<Case> {
    vec![
        Case::new(
            "malformed TOML",
            |sb| {
                sb.config("[accounts.dev\nconnection_string = ");
                to_photos(sb)
            },
            Run::Copy(&[]),
            refused(2, "ferry.toml is not valid"),
        ),
        Case::new(
            "unknown field in ferry.toml",
            |sb| {
                sb.config("[accounts.dev]\nkey = \"x\"\n");
                to_photos(sb)
            },
            Run::Copy(&[]),
            refused(2, "unknown field `key`"),
        ),
        Case::new(
            "accounts is not a table",
            |sb| {
                sb.config("accounts = 5\n");
                to_photos(sb)
            },
            Run::Copy(&[]),
            refused(2, "is not valid"),
        ),
        Case::new(
            "--config names a missing file",
            to_photos,
            Run::Custom(copy_with_config),
            refused(2, "cannot read config"),
        ),
        Case::new(
            "account name with a space",
            |sb| {
                sb.config("[accounts.\"pro d\"]\nlocal = \"/tmp\"\n");
                to_photos(sb)
            },
            Run::Copy(&[]),
            refused(2, "must be ASCII letters, digits"),
        ),
        Case::new(
            "two credentials for one account",
            |sb| {
                sb.config(
                    "[accounts.dev]\nconnection_string = \"UseDevelopmentStorage=true\"\nsas_url_env = \"X\"\n",
                );
                to_photos(sb)
            },
            Run::Copy(&[]),
            refused(2, "give exactly one of"),
        ),
        Case::new(
            "unknown account name",
            |sb| {
                sb.config("[accounts.dev]\nconnection_string = \"UseDevelopmentStorage=true\"\n");
                (one_file(sb), Loc::nowhere("nope:photos"))
            },
            Run::Copy(&[]),
            refused(2, "unknown account \"nope\""),
        ),
        Case::new(
            "connection_string_env names an unset variable",
            |sb| {
                sb.config("[accounts.dev]\nconnection_string_env = \"FERRY_BAD_INPUT_UNSET_CS\"\n");
                to_photos(sb)
            },
            Run::Copy(&[]),
            refused(2, "FERRY_BAD_INPUT_UNSET_CS is not set"),
        ),
        Case::new(
            "sas_url_env names an unset variable",
            |sb| {
                sb.config("[accounts.dev]\nsas_url_env = \"FERRY_BAD_INPUT_UNSET_SAS\"\n");
                to_photos(sb)
            },
            Run::Copy(&[]),
            refused(2, "FERRY_BAD_INPUT_UNSET_SAS is not set"),
        ),
        Case::new(
            "malformed connection string",
            |sb| {
                sb.config("[accounts.dev]\nconnection_string = \"this is not one\"\n");
                to_photos(sb)
            },
            Run::Copy(&[]),
            refused(2, "malformed connection string"),
        ),
        Case::new(
            "account key that is not base64 (and is not echoed)",
            |sb| {
                sb.config(&format!(
                    "[accounts.dev]\nconnection_string = \"AccountName=a;AccountKey={NOT_BASE64_KEY}\"\n"
                ));
                to_photos(sb)
            },
            Run::Copy(&[]),
            refused(2, "not valid base64"),
        ),
        Case::new(
            "connection string without a key",
            |sb| {
                sb.config("[accounts.dev]\nconnection_string = \"AccountName=a\"\n");
                to_photos(sb)
            },
            Run::Copy(&[]),
            refused(2, "neither AccountKey nor SharedAccessSignature"),
        ),
        Case::new(
            "malformed AZURE_STORAGE_CONNECTION_STRING",
            |sb| (one_file(sb), Loc::nowhere("default:photos")),
            Run::Custom(|sb, src, dst| {
                sb.ferry()
                    .env("AZURE_STORAGE_CONNECTION_STRING", "garbage")
                    .arg("copy")
                    .arg(&src.arg)
                    .arg(&dst.arg)
                    .run()
            }),
            refused(2, "AZURE_STORAGE_CONNECTION_STRING: malformed"),
        ),
        Case::new(
            "SAS URL without a signature",
            |sb| {
                sb.config("[accounts.dev]\nsas_url = \"https://acct.blob.core.windows.net/?sv=2020-12-06\"\n");
                to_photos(sb)
            },
            Run::Copy(&[]),
            refused(2, "no signature"),
        ),
        Case::new(
            "account SAS URL that is a container's",
            |sb| {
                sb.config("[accounts.dev]\nsas_url = \"https://acct.blob.core.windows.net/photos?sv=2020-12-06&sr=c&sp=rl&sig=AAAA\"\n");
                to_photos(sb)
            },
            Run::Copy(&[]),
            refused(2, "names a container"),
        ),
        Case::new(
            "blob endpoint that is not http(s)",
            |sb| {
                sb.config("[accounts.dev]\nconnection_string = \"AccountName=a;AccountKey=a2V5;BlobEndpoint=ftp://x\"\n");
                to_photos(sb)
            },
            Run::Copy(&[]),
            refused(2, "must be http or https"),
        ),
        Case::new(
            "expired SAS on a container URL",
            |sb| {
                let expired = auth::ServiceSas {
                    account: DEV_ACCOUNT,
                    container: "photos",
                    blob: None,
                    permissions: "racwdl",
                    start: None,
                    expiry: chrono::Utc::now() - chrono::Duration::hours(1),
                    protocol: None,
                }
                .token(&auth::AccountKey::from_base64(DEV_KEY).unwrap());
                let url = format!("http://127.0.0.1:9/{DEV_ACCOUNT}/photos?{expired}");
                (one_file(sb), Loc::nowhere(url))
            },
            Run::Copy(&[]),
            refused(2, "expired"),
        ),
        Case::new(
            "expired SAS URL in ferry.toml",
            |sb| {
                let expired = auth::ServiceSas {
                    account: "acct",
                    container: "photos",
                    blob: None,
                    permissions: "rl",
                    start: None,
                    expiry: chrono::Utc::now() - chrono::Duration::days(2),
                    protocol: None,
                }
                .token(&auth::AccountKey::from_base64(DEV_KEY).unwrap());
                sb.config(&format!(
                    "[accounts.dev]\nsas_url = \"https://acct.blob.core.windows.net/?{expired}\"\n"
                ));
                to_photos(sb)
            },
            Run::Copy(&[]),
            refused(2, "expired at"),
        ),
        Case::new(
            "copy to a container URL without a SAS",
            |sb| {
                let url = format!("http://127.0.0.1:9/{DEV_ACCOUNT}/photos");
                (one_file(sb), Loc::nowhere(url))
            },
            Run::Copy(&[]),
            refused(2, "has no SAS"),
        ),
    ]
}

fn azure_rows() -> Vec<Case> {
    vec![
        Case::new(
            "invalid SAS signature",
            |sb| {
                let c = new_container_name();
                create_container(sb.az(), &c);
                let url = format!(
                    "{}/{c}?sv=2020-12-06&sr=c&sp=racwdl&se=2099-01-01T00%3A00%3A00Z&sig=AAAA",
                    sb.az().endpoint()
                );
                let dst = Loc {
                    arg: url.into(),
                    at: At::Container(c),
                };
                (one_file(sb), dst)
            },
            Run::Copy(&[]),
            Expect::JobFailed {
                needle: "refused the request",
            },
        ),
        Case::new(
            "wrong account key (destination)",
            |sb| {
                sb.az();
                (
                    one_file(sb),
                    Loc::container("bad", &new_container_name(), ""),
                )
            },
            Run::Copy(&[]),
            Expect::JobFailed {
                needle: "account \"bad\" refused the request",
            },
        ),
        Case::new(
            "wrong account key (source)",
            |sb| {
                let Loc { at, .. } = sb.azure_src(&[("a.txt", b"a")]);
                let At::Container(c) = at else { unreachable!() };
                (Loc::container("bad", &c, ""), sb.dst())
            },
            Run::Copy(&[]),
            Expect::JobFailed {
                needle: "check its key or SAS",
            },
        ),
        Case::new(
            "local source that is a file, to Azure",
            |sb| {
                let file = sb.env.path("one.bin");
                write(&file, "a file, not a folder");
                (Loc::local(&file), sb.azure_dst())
            },
            Run::Copy(&[]),
            refused(2, "not a folder"),
        ),
        Case::new(
            "source container that does not exist",
            |sb| (sb.azure_dst(), Loc::local(&sb.env.path("out"))),
            Run::Copy(&[]),
            Expect::JobFailed {
                needle: "the container (account \"dev\") not found",
            },
        ),
        Case::new(
            "container the service cannot list",
            |sb| {
                // Azurite cannot put a name with a control character into
                // its listing XML: it answers 500 without an error code.
                let src = sb.azure_src(&[("ok", b"ok")]);
                let At::Container(c) = &src.at else {
                    unreachable!()
                };
                put_blob(sb.az(), c, "bell\x07", b"x");
                // (The test cannot list it either: nothing to compare.)
                (Loc::nowhere(format!("dev:{c}")), sb.dst())
            },
            Run::Copy(&["--max-tries", "1"]),
            Expect::JobFailed {
                needle: "the service answered 500",
            },
        ),
        Case::new(
            "container name with capitals and '_'",
            |sb| {
                sb.az();
                (one_file(sb), Loc::nowhere("dev:Bad_Name"))
            },
            Run::Copy(&[]),
            refused(2, "invalid container name \"Bad_Name\""),
        ),
        Case::new(
            "container name too short",
            |sb| {
                sb.az();
                (one_file(sb), Loc::nowhere("dev:ab"))
            },
            Run::Copy(&[]),
            refused(2, "invalid container name \"ab\""),
        ),
        Case::new(
            "Azure source = destination",
            |sb| {
                let src = sb.azure_src(&[("a.txt", b"a")]);
                let dst = Loc {
                    arg: src.arg.clone(),
                    at: At::Nowhere,
                };
                (src, dst)
            },
            Run::Copy(&[]),
            refused(2, "are the same"),
        ),
        Case::new(
            "Azure destination inside the source",
            |sb| {
                let src = sb.azure_src(&[("a.txt", b"a")]);
                let At::Container(c) = &src.at else {
                    unreachable!()
                };
                let dst = Loc::container("dev", c, "backup");
                (src, dst)
            },
            Run::Copy(&[]),
            refused(2, "inside the source"),
        ),
        Case::new(
            "Azure source inside the destination",
            |sb| {
                let src = sb.azure_src(&[("sub/a.txt", b"a")]);
                let At::Container(c) = &src.at else {
                    unreachable!()
                };
                let inner = Loc {
                    arg: format!("dev:{c}/sub").into(),
                    at: At::Nowhere,
                };
                (inner, src)
            },
            Run::Copy(&[]),
            refused(2, "inside the destination"),
        ),
    ]
}

fn address_and_option_rows() -> Vec<Case> {
    vec![
        Case::new(
            "source = destination",
            |sb| (one_file(sb), Loc::nowhere(&sb.env.src)),
            Run::Copy(&[]),
            refused(2, "are the same"),
        ),
        Case::new(
            "source = destination, spelled differently",
            |sb| {
                let other = sb.env.dst.join("../src/.");
                (one_file(sb), Loc::nowhere(other))
            },
            Run::Copy(&[]),
            refused(2, "are the same"),
        ),
        Case::new(
            "destination inside the source",
            |sb| {
                let inside = sb.env.src.join("backup");
                (one_file(sb), Loc::local(&inside))
            },
            Run::Copy(&[]),
            refused(2, "inside the source"),
        ),
        Case::new(
            "destination inside the source through a symlink",
            |sb| {
                let link = sb.env.path("link");
                std::os::unix::fs::symlink(&sb.env.src, &link).unwrap();
                (one_file(sb), Loc::nowhere(link.join("x")))
            },
            Run::Copy(&[]),
            refused(2, "inside the source"),
        ),
        Case::new(
            "source inside the destination",
            |sb| (one_file(sb), Loc::nowhere(sb.env.dir.path())),
            Run::Copy(&[]),
            refused(2, "inside the destination"),
        ),
        Case::new(
            "missing source",
            |sb| (Loc::nowhere(sb.env.path("nope")), sb.dst()),
            Run::Copy(&[]),
            refused(2, "does not exist"),
        ),
        Case::new(
            "source path with terminal escapes",
            |sb| {
                let p = sb.env.path("nope\x1b[31mred\rcr");
                (Loc::nowhere(p), sb.dst())
            },
            Run::Copy(&[]),
            refused(2, "does not exist"),
        ),
        Case::new(
            "source path that is not UTF-8",
            |sb| {
                let mut p = sb.env.dir.path().as_os_str().to_owned();
                p.push(std::ffi::OsStr::from_bytes(b"/bad\xff\xfe"));
                fs::create_dir(&p).unwrap();
                write(&Path::new(&p).join("f"), "f");
                (Loc::local(Path::new(&p)), sb.dst())
            },
            Run::Copy(&[]),
            refused(2, "not valid UTF-8"),
        ),
        Case::new(
            "destination that is a dangling symbolic link",
            |sb| {
                let link = sb.env.path("dangling");
                std::os::unix::fs::symlink(sb.env.path("nowhere/dir"), &link).unwrap();
                (one_file(sb), Loc::local(&link))
            },
            Run::Copy(&[]),
            refused(2, "symbolic link to a missing target"),
        ),
        Case::new(
            "destination that is a file",
            |sb| {
                let file = sb.env.path("file");
                write(&file, "i am a file");
                (one_file(sb), Loc::local(&file))
            },
            Run::Copy(&[]),
            refused(2, "not a folder"),
        ),
        Case::new(
            "--parallel 0",
            |sb| (one_file(sb), sb.dst()),
            Run::Copy(&["--parallel", "0"]),
            refused(2, PARALLEL_FORMS),
        ),
        Case::new(
            "--parallel lots",
            |sb| (one_file(sb), sb.dst()),
            Run::Copy(&["--parallel", "lots"]),
            refused(2, PARALLEL_FORMS),
        ),
        Case::new(
            "run --parallel autox",
            |sb| (one_file(sb), sb.dst()),
            Run::Custom(|sb, _, _| sb.ferry().args(["run", "--parallel", "autox"]).run()),
            refused(2, PARALLEL_FORMS),
        ),
        Case::new(
            "daemon --parallel 0",
            |sb| (one_file(sb), sb.dst()),
            Run::Custom(|sb, _, _| sb.ferry().args(["daemon", "--parallel", "0"]).run()),
            refused(2, PARALLEL_FORMS),
        ),
        Case::new(
            "--parallel -1",
            |sb| (one_file(sb), sb.dst()),
            Run::Copy(&["--parallel", "-1"]),
            refused(2, "--parallel"),
        ),
        Case::new(
            "--block-size -1",
            |sb| (one_file(sb), sb.dst()),
            Run::Copy(&["--block-size", "-1"]),
            refused(2, "--block-size"),
        ),
        Case::new(
            "--block-size 0",
            |sb| (one_file(sb), sb.dst()),
            Run::Copy(&["--block-size", "0"]),
            refused(2, "invalid value '0' for '--block-size"),
        ),
        Case::new(
            "--block-size 1 (a request per byte)",
            |sb| (one_file(sb), sb.dst()),
            Run::Copy(&["--block-size", "1"]),
            refused(2, "at least 16KiB"),
        ),
        Case::new(
            "--block-size 1.5M",
            |sb| (one_file(sb), sb.dst()),
            Run::Copy(&["--block-size", "1.5M"]),
            refused(2, "invalid size unit"),
        ),
        Case::new(
            "--block-size above Azure's largest block",
            |sb| (one_file(sb), sb.dst()),
            Run::Copy(&["--block-size", "5G"]),
            refused(2, "at most 4000MiB"),
        ),
        Case::new(
            "--check-md5 with an unknown action",
            |sb| (one_file(sb), sb.dst()),
            Run::Copy(&["--check-md5", "maybe"]),
            refused(2, "unknown MD5 check \"maybe\"; use fail or off"),
        ),
        Case::new(
            "history --limit 0",
            |sb| (one_file(sb), sb.dst()),
            Run::Custom(|sb, src, _| {
                sb.ferry()
                    .arg("history")
                    .arg(&src.arg)
                    .args(["--limit", "0"])
                    .run()
            }),
            refused(2, "1 or more"),
        ),
        Case::new(
            "--block-size beyond 64 bits",
            |sb| (one_file(sb), sb.dst()),
            Run::Copy(&["--block-size", "99999999999G"]),
            refused(2, "too large"),
        ),
        Case::new(
            "bad cron expression",
            |sb| (one_file(sb), sb.dst()),
            Run::Custom(|sb, src, dst| {
                sb.ferry()
                    .args(["schedule", "add", "nightly", "0 61 * * * *"])
                    .arg(&src.arg)
                    .arg(&dst.arg)
                    .run()
            }),
            refused(2, "invalid cron expression \"0 61 * * * *\": minute field"),
        ),
        Case::new(
            "cron with too many fields",
            |sb| (one_file(sb), sb.dst()),
            Run::Custom(|sb, src, dst| {
                sb.ferry()
                    .args(["schedule", "add", "nightly", "0 0 0 * * * 2027"])
                    .arg(&src.arg)
                    .arg(&dst.arg)
                    .run()
            }),
            refused(2, "7 fields"),
        ),
        Case::new(
            "schedule in an unknown time zone",
            |sb| (one_file(sb), sb.dst()),
            Run::Custom(|sb, src, dst| {
                sb.ferry()
                    .args([
                        "schedule",
                        "add",
                        "nightly",
                        "0 30 23 * * Mon-Thu",
                        "--tz",
                        "Mars/Base",
                    ])
                    .arg(&src.arg)
                    .arg(&dst.arg)
                    .run()
            }),
            refused(2, "unknown time zone \"Mars/Base\""),
        ),
        Case::new(
            "schedule name with a slash",
            |sb| (one_file(sb), sb.dst()),
            Run::Custom(|sb, src, dst| {
                sb.ferry()
                    .args(["schedule", "add", "a/b", "0 30 23 * * *"])
                    .arg(&src.arg)
                    .arg(&dst.arg)
                    .run()
            }),
            refused(2, "schedule name"),
        ),
        Case::new(
            "--max-tries -1",
            |sb| (one_file(sb), sb.dst()),
            Run::Copy(&["--max-tries", "-1"]),
            refused(2, "--max-tries"),
        ),
        Case::new(
            "--try-timeout 0",
            |sb| (one_file(sb), sb.dst()),
            Run::Copy(&["--try-timeout", "0"]),
            refused(2, "--try-timeout"),
        ),
        Case::new(
            "--plugin-config without --policy",
            |sb| (one_file(sb), sb.dst()),
            Run::Copy(&["--plugin-config", "a=b"]),
            refused(2, "needs --policy"),
        ),
    ]
}

fn name_rows() -> Vec<Case> {
    vec![
        Case::new(
            "blob names with '..' segments",
            |sb| {
                let src = sb.azure_src(&[("a/../b", b"escape"), ("../up", b"up"), ("ok", b"ok")]);
                (src, sb.dst())
            },
            Run::Copy(&[]),
            Expect::BlobsFailed {
                failed: &[
                    ("a/../b", "invalid-name", "'..' segments are refused"),
                    ("../up", "invalid-name", "'..' segments are refused"),
                ],
                copied: 1,
            },
        )
        .check(nothing_escaped),
        Case::new(
            "blob names with '/' runs and a trailing '/'",
            |sb| {
                let src = sb.azure_src(&[("a//b", b"x"), ("trail/", b"y"), ("ok", b"ok")]);
                (src, sb.dst())
            },
            Run::Copy(&[]),
            Expect::BlobsFailed {
                failed: &[
                    ("a//b", "invalid-name", "empty path segment"),
                    ("trail/", "invalid-name", "empty path segment"),
                ],
                copied: 1,
            },
        ),
        Case::new(
            "blob names with '.' segments",
            |sb| {
                let src = sb.azure_src(&[("a/./c", b"x"), ("ok", b"ok")]);
                (src, sb.dst())
            },
            Run::Copy(&[]),
            Expect::BlobsFailed {
                failed: &[("a/./c", "invalid-name", "'.' and '..' segments")],
                copied: 1,
            },
        )
        .check(nothing_escaped),
        Case::new(
            "file names with control characters (local)",
            |sb| {
                let src = sb.src(&[
                    ("esc\x1b[31mred", b"e"),
                    ("ctl\x01x", b"c"),
                    ("line\nbreak", b"n"),
                    ("ok", b"ok"),
                ]);
                (src, sb.dst())
            },
            Run::Copy(&[]),
            Expect::BlobsFailed {
                failed: &[
                    ("esc\x1b[31mred", "invalid-name", "control character"),
                    ("ctl\x01x", "invalid-name", "control character"),
                    ("line\nbreak", "invalid-name", "control character"),
                ],
                copied: 1,
            },
        ),
        Case::new(
            "file names with control characters (to Azure)",
            |sb| {
                let src = sb.src(&[("tab\there", b"t"), ("del\x7f", b"d"), ("ok", b"ok")]);
                (src, sb.azure_dst())
            },
            Run::Copy(&[]),
            Expect::BlobsFailed {
                failed: &[
                    ("tab\there", "invalid-name", "control character"),
                    ("del\x7f", "invalid-name", "control character"),
                ],
                copied: 1,
            },
        ),
        Case::new(
            "local path over 1,024 characters to Azure",
            |sb| {
                write(&sb.env.src.join(long_local()), "long");
                write(&sb.env.src.join("ok"), "ok");
                (Loc::local(&sb.env.src), sb.azure_dst())
            },
            Run::Copy(&[]),
            Expect::BlobsFailed {
                failed: failed(vec![(
                    long_local(),
                    "invalid-name",
                    "at most 1,024 characters",
                )]),
                copied: 1,
            },
        ),
        Case::new(
            "blob name over 1,024 characters from Azure",
            |sb| {
                let src = sb.azure_src(&[(long_blob(), b"long"), ("ok", b"ok")]);
                (src, sb.dst())
            },
            Run::Copy(&[]),
            Expect::BlobsFailed {
                failed: failed(vec![(
                    long_blob(),
                    "invalid-name",
                    "at most 1,024 characters",
                )]),
                copied: 1,
            },
        ),
        Case::new(
            "blob name with a 300-byte segment",
            |sb| {
                let src = sb.azure_src(&[(long_segment(), b"seg"), ("ok", b"ok")]);
                (src, sb.dst())
            },
            Run::Copy(&[]),
            Expect::BlobsFailed {
                failed: failed(vec![(
                    long_segment(),
                    "invalid-name",
                    "longer than 255 bytes",
                )]),
                copied: 1,
            },
        ),
        Case::new(
            "file and folder names that are not UTF-8",
            |sb| {
                let src = sb.env.src.as_os_str().to_owned();
                let mut file = src.clone();
                file.push(std::ffi::OsStr::from_bytes(b"/bad\xffname"));
                write(Path::new(&file), "f");
                let mut dir = src;
                dir.push(std::ffi::OsStr::from_bytes(b"/dir\xfe"));
                write(&Path::new(&dir).join("inner"), "i");
                write(&sb.env.src.join("ok"), "ok");
                (Loc::local(&sb.env.src), sb.dst())
            },
            Run::Copy(&[]),
            Expect::BlobsFailed {
                failed: &[
                    ("bad\u{fffd}name", "invalid-name", "not valid UTF-8"),
                    ("dir\u{fffd}", "invalid-name", "not valid UTF-8"),
                ],
                copied: 1,
            },
        ),
    ]
}

/// A 1,100-character local path in five segments (each under 255 bytes).
fn long_local() -> &'static str {
    static S: OnceLock<String> = OnceLock::new();
    S.get_or_init(|| {
        let s = ["a", "b", "c", "d"]
            .iter()
            .map(|c| c.repeat(250))
            .chain(["e".repeat(96)])
            .collect::<Vec<_>>()
            .join("/");
        assert_eq!(s.len(), 1100);
        s
    })
}

/// A 1,203-character blob name: 600 one-letter folders and a file.
fn long_blob() -> &'static str {
    static S: OnceLock<String> = OnceLock::new();
    S.get_or_init(|| format!("{}end", "x/".repeat(600)))
}

/// One 300-byte segment: fine for Azure, too long for a local file name.
fn long_segment() -> &'static str {
    static S: OnceLock<String> = OnceLock::new();
    S.get_or_init(|| format!("seg/{}", "s".repeat(300)))
}

type Failed = &'static [(&'static str, &'static str, &'static str)];

/// A failure list built at run time (names computed by the rows).
fn failed(v: Vec<(&'static str, &'static str, &'static str)>) -> Failed {
    Box::leak(v.into_boxed_slice())
}

fn runtime_rows() -> Vec<Case> {
    vec![
        Case::new(
            "unreadable file: that blob fails, the job goes on",
            |sb| {
                let src = sb.src(&[("a", b"a"), ("secret", b"s3cret"), ("z/last", b"z")]);
                fs::set_permissions(sb.env.src.join("secret"), fs::Permissions::from_mode(0o000))
                    .unwrap();
                (src, sb.dst())
            },
            Run::Custom(copy_without_dac_override),
            Expect::BlobsFailed {
                failed: &[("secret", "permission-denied", "permission denied")],
                copied: 2,
            },
        ),
        Case::new(
            "unreadable destination folder: the job fails naming the destination",
            |sb| {
                let src = sb.src(&[("a", b"a")]);
                fs::create_dir_all(&sb.env.dst).unwrap();
                fs::set_permissions(&sb.env.dst, fs::Permissions::from_mode(0o000)).unwrap();
                (src, sb.dst())
            },
            Run::Custom(copy_without_dac_override),
            Expect::JobFailed {
                needle: "listing the destination",
            },
        ),
        Case::new(
            "unreadable folder: its subtree fails, the rest is copied",
            |sb| {
                let src = sb.src(&[("a", b"a"), ("locked/inner", b"i"), ("z", b"z")]);
                fs::set_permissions(sb.env.src.join("locked"), fs::Permissions::from_mode(0o000))
                    .unwrap();
                (src, sb.dst())
            },
            Run::Custom(copy_without_dac_override),
            Expect::BlobsFailed {
                failed: &[("locked/", "permission-denied", "permission denied")],
                copied: 2,
            },
        ),
        Case::new(
            "file vanishing mid-copy",
            local_victim,
            Run::Custom(|sb, src, dst| {
                local_meddle(sb, src, dst, |victim| fs::remove_file(victim).unwrap())
            }),
            Expect::BlobsFailed {
                failed: &[("z-victim", "not-found", "not found")],
                copied: 1,
            },
        )
        .changes_src(),
        Case::new(
            "file changed mid-copy",
            local_victim,
            Run::Custom(|sb, src, dst| {
                local_meddle(sb, src, dst, |victim| {
                    write(victim, "the victim, rewritten");
                })
            }),
            VICTIM_TAKEN_AS_NOW,
        )
        .changes_src(),
        Case::new(
            "blob deleted mid-copy",
            azure_victim,
            Run::Custom(|sb, src, dst| {
                azure_meddle(sb, src, dst, |az, c| delete_blob(az, c, "z-victim"))
            }),
            // The download is pinned with If-Match, and Azurite answers 412
            // for a blob that is gone (Azure itself answers 404: not-found).
            VICTIM_CHANGED,
        )
        .changes_src(),
        azure_victim_rewritten("source blob changed mid-copy (If-Match)", azure_victim),
        azure_victim_rewritten(
            "large source blob changed mid-download (ranges, If-Match)",
            azure_big_victim,
        ),
        Case::new(
            "disk full (1 MiB tmpfs destination)",
            |sb| {
                let big: Vec<u8> = (0..3_000_000u32).map(|i| (i % 253) as u8).collect();
                let mid: Vec<u8> = (0..600_000u32).map(|i| (i % 241) as u8).collect();
                let src = sb.src(&[
                    ("a.txt", b"a"),
                    ("big.bin", &big),
                    ("m600k", &mid),
                    ("z.txt", b"z"),
                ]);
                sb.tmpfs(&sb.env.dst, "1m");
                (src, sb.dst())
            },
            Run::Copy(&["--parallel", "1"]),
            Expect::BlobsFailed {
                failed: &[("big.bin", "io", "No space left on device")],
                copied: 3,
            },
        ),
        Case::new(
            "disk full, Azure source (stream writes)",
            |sb| {
                let big: Vec<u8> = (0..3_000_000u32).map(|i| (i % 253) as u8).collect();
                let src = sb.azure_src(&[("a.txt", b"a"), ("big.bin", &big), ("z.txt", b"z")]);
                sb.tmpfs(&sb.env.dst, "1m");
                (src, sb.dst())
            },
            Run::Copy(&["--parallel", "1"]),
            Expect::BlobsFailed {
                failed: &[("big.bin", "io", "No space left on device")],
                copied: 2,
            },
        ),
        Case::new(
            "disk full under the state dir",
            |sb| {
                for i in 0..3000 {
                    write(&sb.env.src.join(format!("d{}/f{i:04}", i % 10)), "x");
                }
                sb.tmpfs(&sb.env.state, "256k");
                (Loc::local(&sb.env.src), sb.dst())
            },
            Run::Copy(&[]),
            Expect::Error {
                code: 6,
                needle: "event log write failed: IO error: No space left on device",
            },
        )
        .check(|sb, _| {
            // The log cannot even be opened now: exit 4, saying why.
            sb.ferry()
                .arg("jobs")
                .run()
                .error(4, "No space left on device");
        }),
    ]
}

fn plugin_rows() -> Vec<Case> {
    vec![
        Case::new(
            "policy plugin that traps",
            both_ends,
            Run::Custom(|sb, src, dst| copy_with_fixture(sb, src, dst, "traps", "unreachable")),
            Expect::BlobsFailed {
                failed: &[
                    ("keep/a.txt", "plugin", "trapped"),
                    ("other/b.txt", "plugin", "trapped"),
                ],
                copied: 1,
            },
        ),
        Case::new(
            "policy plugin that loops",
            both_ends,
            Run::Custom(|sb, src, dst| {
                copy_with_fixture(sb, src, dst, "loops", "(loop $l (br $l)) (i32.const 0)")
            }),
            Expect::BlobsFailed {
                failed: &[
                    ("keep/a.txt", "plugin", "ran out of fuel"),
                    ("other/b.txt", "plugin", "ran out of fuel"),
                ],
                copied: 1,
            },
        ),
        Case::new(
            "policy plugin that eats memory",
            both_ends,
            Run::Custom(|sb, src, dst| {
                copy_with_fixture(
                    sb,
                    src,
                    dst,
                    "eats-memory",
                    "(loop $l (drop (memory.grow (i32.const 16))) (br $l)) (i32.const 0)",
                )
            }),
            Expect::BlobsFailed {
                failed: &[
                    ("keep/a.txt", "plugin", "memory"),
                    ("other/b.txt", "plugin", "memory"),
                ],
                copied: 1,
            },
        ),
        Case::new(
            "plugin with the wrong world",
            both_ends,
            Run::Custom(|sb, src, dst| copy_with_policy(sb, src, dst, &shipped("csv_report"))),
            refused(9, "implements report-formatter"),
        ),
        Case::new(
            "plugin that is not WebAssembly",
            both_ends,
            Run::Custom(|sb, src, dst| {
                let garbage = sb.env.path("garbage.wasm");
                write(&garbage, b"\0asm not really");
                copy_with_policy(sb, src, dst, &garbage)
            }),
            refused(9, "not a valid WebAssembly component"),
        ),
        Case::new(
            "plugin file that does not exist",
            both_ends,
            Run::Custom(|sb, src, dst| {
                copy_with_policy(sb, src, dst, &sb.env.path("missing.wasm"))
            }),
            refused(9, "cannot read plugin"),
        ),
    ]
}

fn state_and_job_rows() -> Vec<Case> {
    vec![
        Case::new(
            "unknown job id (show)",
            |sb| (one_file(sb), sb.dst()),
            Run::Custom(|sb, _, _| {
                sb.ferry()
                    .args(["show", "01234567-89ab-7def-8123-456789abcdef"])
                    .run()
            }),
            refused(5, "no job matches"),
        ),
        Case::new(
            "unknown job id (replay)",
            |sb| (one_file(sb), sb.dst()),
            Run::Custom(|sb, _, _| sb.ferry().args(["replay", "not-a-job"]).run()),
            refused(5, "no job matches"),
        ),
        Case::new(
            "ambiguous job id prefix",
            |sb| {
                let src = one_file(sb);
                sb.env.copy_ok(&[]);
                sb.env.copy_ok(&[]);
                (src, sb.dst())
            },
            Run::Custom(|sb, _, _| {
                let jobs = sb.env.jobs_json();
                let (a, b) = (
                    jobs[0]["id"].as_str().unwrap(),
                    jobs[1]["id"].as_str().unwrap(),
                );
                let common = a.chars().zip(b.chars()).take_while(|(x, y)| x == y).count();
                assert!(common >= 4, "{a} {b}");
                sb.ferry().args(["show", &a[..4]]).run()
            }),
            refused(5, "ambiguous"),
        ),
        Case::new(
            "replay of a finished job",
            |sb| {
                let src = one_file(sb);
                sb.env.copy_ok(&[]);
                (src, sb.dst())
            },
            Run::Custom(|sb, _, _| sb.ferry().arg("replay").arg(only_job(sb)).run()),
            refused(7, "already succeeded"),
        ),
        Case::new(
            "two ferry processes on one state dir",
            |sb| (one_file(sb), sb.dst()),
            Run::Custom(|sb, src, dst| {
                let holder = sb
                    .ferry()
                    .arg("copy")
                    .arg(big_tree())
                    .arg(sb.env.path("held"))
                    .args(["--parallel", "1"])
                    .spawn();
                let pid = holder.pid();
                let lock = sb.env.state.join("lock");
                wait_until(
                    Duration::from_secs(30),
                    "the first ferry holds the lock",
                    || fs::read_to_string(&lock).is_ok_and(|s| s.contains(&format!("pid {pid},"))),
                );
                holder.signal(libc::SIGSTOP);
                let out = sb.ferry().arg("copy").arg(&src.arg).arg(&dst.arg).run();
                sb.ferry().arg("jobs").run().error(3, &format!("pid {pid}"));
                let killed = holder.kill();
                assert_eq!(killed.signal, Some(libc::SIGKILL));
                out
            }),
            Expect::Error {
                code: 3,
                needle: "in use by another ferry process",
            },
        )
        .check(|sb, _| {
            // At most the first process's job exists; the second enqueued nothing.
            let jobs = serde_json::to_string(&sb.env.jobs_json()).unwrap();
            let dst = serde_json::to_string(&sb.env.dst).unwrap();
            assert!(
                !jobs.contains(&dst),
                "the refused copy was enqueued: {jobs}"
            );
            assert!(sb.env.jobs_json().len() <= 1);
        }),
        Case::new(
            "corrupt sled files",
            |sb| {
                let src = one_file(sb);
                sb.ferry()
                    .arg("copy")
                    .arg(&sb.env.src)
                    .arg(sb.env.path("first"))
                    .run()
                    .success();
                let mut n = 0;
                for e in fs::read_dir(sb.env.state.join("db")).unwrap() {
                    let p = e.unwrap().path();
                    if p.is_file() {
                        let garbage: Vec<u8> = (0..4096u32)
                            .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
                            .collect();
                        fs::write(&p, garbage).unwrap();
                        n += 1;
                    }
                }
                assert!(n > 0);
                (src, sb.dst())
            },
            Run::Copy(&[]),
            refused(4, "corrupt"),
        ),
        Case::new(
            "state dir that is a file",
            |sb| (one_file(sb), sb.dst()),
            Run::Custom(|sb, src, dst| {
                let file = sb.env.path("state-file");
                write(&file, "not a dir");
                sb.env
                    .ferry_no_state()
                    .arg("--state")
                    .arg(&file)
                    .arg("copy")
                    .arg(&src.arg)
                    .arg(&dst.arg)
                    .run()
            }),
            refused(4, "is a file, not a folder; give a folder path"),
        )
        // The advice is the one that fits: not "free space".
        .check(|_, out| assert!(!out.stderr.contains("free space"), "{}", out.stderr)),
        Case::new(
            "state dir without write permission",
            |sb| {
                let ro = sb.env.path("ro-state");
                fs::create_dir(&ro).unwrap();
                fs::set_permissions(&ro, fs::Permissions::from_mode(0o555)).unwrap();
                (one_file(sb), sb.dst())
            },
            Run::Custom(|sb, src, dst| {
                assert!(have_setpriv(), "setpriv (util-linux) is needed");
                sb.env
                    .ferry_no_state()
                    .arg("--state")
                    .arg(sb.env.path("ro-state"))
                    .arg("copy")
                    .arg(&src.arg)
                    .arg(&dst.arg)
                    .run_without_dac_override()
            }),
            refused(4, "permission denied"),
        )
        .check(|_, out| {
            assert!(
                out.stderr
                    .contains("; fix its permissions, then run the command again")
                    && !out.stderr.contains("free space"),
                "{}",
                out.stderr
            )
        }),
    ]
}

// ---------------------------------------------------------------- tests

#[test]
fn bad_config_and_accounts_are_refused_up_front() {
    run_matrix("config", config_rows());
}

#[test]
fn bad_azure_input_is_refused_or_fails_the_job_cleanly() {
    run_matrix("azure", azure_rows());
}

#[test]
fn bad_addresses_and_options_are_refused_up_front() {
    run_matrix("address", address_and_option_rows());
}

#[test]
fn bad_blob_names_fail_only_their_blobs() {
    run_matrix("names", name_rows());
}

#[test]
fn files_that_vanish_change_or_do_not_fit_fail_only_their_blobs() {
    run_matrix("runtime", runtime_rows());
}

#[test]
fn hostile_or_broken_plugins_are_contained() {
    run_matrix("plugins", plugin_rows());
}

#[test]
fn bad_state_dirs_and_job_ids_are_refused() {
    run_matrix("state", state_and_job_rows());
}

#[test]
fn the_matrix_has_at_least_40_rows() {
    let n = config_rows().len()
        + azure_rows().len()
        + address_and_option_rows().len()
        + name_rows().len()
        + runtime_rows().len()
        + plugin_rows().len()
        + state_and_job_rows().len();
    assert!(n >= 40, "only {n} rows");
}
