//! Shared helpers: a temp dir per test, a `ferry` command builder, trees,
//! tree comparison, event-log parsing and polling.

#![allow(dead_code)]

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::OsStr;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use filetime::FileTime;
use serde_json::Value;
use tempfile::TempDir;

/// The binary under test.
pub const FERRY: &str = env!("CARGO_BIN_EXE_ferry");

/// One test's sandbox: `src/`, `dst/` and `state/` in a fresh temp dir.
pub struct Env {
    pub dir: TempDir,
    pub src: PathBuf,
    pub dst: PathBuf,
    pub state: PathBuf,
}

impl Env {
    pub fn new() -> Env {
        let dir = tempfile::Builder::new()
            .prefix("ferry-it-")
            .tempdir()
            .expect("temp dir");
        let src = dir.path().join("src");
        let dst = dir.path().join("dst");
        let state = dir.path().join("state");
        for d in [&src, &dst, &state] {
            fs::create_dir(d).unwrap();
        }
        Env {
            dir,
            src,
            dst,
            state,
        }
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    /// Copies `container` of account `dev` (Azurite, no proxy) down into a
    /// fresh folder of the sandbox, with `extra` flags; returns the folder.
    pub fn download(&self, container: &str, extra: &[&str]) -> PathBuf {
        let down = self.path(&format!("down-{container}"));
        self.ferry()
            .args(["copy", "--quiet"])
            .args(extra)
            .arg(format!("dev:{container}"))
            .arg(&down)
            .run()
            .success();
        down
    }

    /// `ferry --state STATE` with a clean environment (no FERRY_HOME,
    /// FERRY_CONFIG, Azure connection string or RUST_LOG).
    pub fn ferry(&self) -> Ferry {
        let mut f = self.ferry_no_state();
        f.cmd.arg("--state").arg(&self.state);
        f
    }

    /// `ferry` without `--state` (for tests of FERRY_HOME and the default).
    pub fn ferry_no_state(&self) -> Ferry {
        let mut cmd = Command::new(FERRY);
        cmd.current_dir(self.dir.path())
            .env_remove("FERRY_HOME")
            .env_remove("FERRY_CONFIG")
            .env_remove("AZURE_STORAGE_CONNECTION_STRING")
            .env_remove("RUST_LOG")
            .env_remove("NO_COLOR")
            .stdin(Stdio::null());
        Ferry { cmd }
    }

    /// `ferry copy SRC DST` plus extra args.
    pub fn copy(&self, extra: &[&str]) -> Ferry {
        let mut f = self.ferry();
        f.arg("copy").arg(&self.src).arg(&self.dst).args(extra);
        f
    }

    /// Runs `ferry copy SRC DST extra..`, expects exit 0, returns the job id.
    pub fn copy_ok(&self, extra: &[&str]) -> String {
        let out = self.copy(extra).run().success();
        out.summary().job
    }

    /// Every event of one job (or all jobs) as JSON values, via `events --json`.
    pub fn events(&self, job: Option<&str>) -> Vec<Value> {
        let mut f = self.ferry();
        f.arg("events");
        if let Some(j) = job {
            f.arg(j);
        }
        f.arg("--json");
        let out = f.run().success();
        assert!(
            out.stderr.is_empty(),
            "events printed to stderr: {}",
            out.stderr
        );
        parse_json_lines(&out.stdout)
    }

    pub fn jobs_json(&self) -> Vec<Value> {
        let out = self.ferry().args(["jobs", "--json"]).run().success();
        match serde_json::from_str(&out.stdout) {
            Ok(Value::Array(a)) => a,
            other => panic!("jobs --json is not a JSON array: {other:?}\n{}", out.stdout),
        }
    }

    /// `ferry submit SRC DST`; the id it printed.
    pub fn submit(
        &self,
        src: impl AsRef<std::ffi::OsStr>,
        dst: impl AsRef<std::ffi::OsStr>,
    ) -> String {
        self.ferry()
            .arg("submit")
            .arg(src)
            .arg(dst)
            .run()
            .success()
            .stdout
            .trim()
            .to_string()
    }

    pub fn show_json(&self, job: &str) -> Value {
        let out = self
            .ferry()
            .args(["show", job, "--json", "--failures", "0"])
            .run()
            .success();
        serde_json::from_str(&out.stdout)
            .unwrap_or_else(|e| panic!("show --json: {e}\n{}", out.stdout))
    }

    /// `verify-log` (of one job or all) must pass.
    pub fn verify_log_ok(&self, job: Option<&str>) {
        let mut f = self.ferry();
        f.arg("verify-log");
        if let Some(j) = job {
            f.arg(j);
        }
        let out = f.run().success();
        assert!(
            out.stdout.starts_with("log ok:"),
            "verify-log said: {}",
            out.stdout
        );
    }
}

/// A `ferry` command line being built.
pub struct Ferry {
    pub cmd: Command,
}

impl Ferry {
    pub fn arg(&mut self, a: impl AsRef<OsStr>) -> &mut Ferry {
        self.cmd.arg(a);
        self
    }

    pub fn args<I, S>(&mut self, args: I) -> &mut Ferry
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        self.cmd.args(args);
        self
    }

    pub fn env(&mut self, k: &str, v: impl AsRef<OsStr>) -> &mut Ferry {
        self.cmd.env(k, v);
        self
    }

    /// Runs it with this umask (the test's own is left alone).
    pub fn umask(&mut self, mask: u32) -> &mut Ferry {
        use std::os::unix::process::CommandExt;
        // SAFETY: umask(2) is async-signal-safe and touches only the child.
        unsafe {
            self.cmd.pre_exec(move || {
                libc::umask(mask as libc::mode_t);
                Ok(())
            });
        }
        self
    }

    fn describe(&self) -> String {
        let mut s = String::from("ferry");
        for a in self.cmd.get_args() {
            s.push(' ');
            s.push_str(&a.to_string_lossy());
        }
        s
    }

    /// Runs to the end and captures its output.
    pub fn run(&mut self) -> Out {
        let cmd = self.describe();
        let out = self
            .cmd
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .output()
            .expect("spawn ferry");
        Out::new(cmd, out)
    }

    /// Runs it under `setpriv` with CAP_DAC_OVERRIDE and CAP_DAC_READ_SEARCH
    /// dropped, so file permissions apply even when the tests run as root.
    pub fn run_without_dac_override(&mut self) -> Out {
        let cmd = format!("setpriv ... {}", self.describe());
        let mut sp = Command::new("setpriv");
        sp.args(["--bounding-set=-dac_override,-dac_read_search", "--"])
            .arg(self.cmd.get_program());
        sp.args(self.cmd.get_args());
        if let Some(dir) = self.cmd.get_current_dir() {
            sp.current_dir(dir);
        }
        for (k, v) in self.cmd.get_envs() {
            match v {
                Some(v) => sp.env(k, v),
                None => sp.env_remove(k),
            };
        }
        let out = sp.stdin(Stdio::null()).output().expect("spawn setpriv");
        Out::new(cmd, out)
    }

    /// Starts it in the background; the process is killed if the handle is
    /// dropped without `wait`.
    pub fn spawn(&mut self) -> Running {
        let child = self
            .cmd
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn ferry");
        Running {
            child: Some(child),
            cmd: self.describe(),
        }
    }
}

/// A ferry process running in the background.
pub struct Running {
    child: Option<Child>,
    pub cmd: String,
}

impl Running {
    pub fn pid(&self) -> i32 {
        self.child.as_ref().expect("child").id() as i32
    }

    pub fn signal(&self, sig: i32) {
        // SAFETY: kill(2) on our own child's pid, which we have not reaped, so
        // it cannot have been reused.
        let rc = unsafe { libc::kill(self.pid(), sig) };
        assert_eq!(
            rc,
            0,
            "kill({}, {sig}) failed: {}",
            self.pid(),
            std::io::Error::last_os_error()
        );
    }

    /// Whether it has exited. (std keeps the status, so `wait` still works;
    /// do not `signal` after this returned true.)
    pub fn has_exited(&mut self) -> bool {
        self.child
            .as_mut()
            .unwrap()
            .try_wait()
            .expect("try_wait")
            .is_some()
    }

    /// SIGKILL, then collect its output.
    pub fn kill(mut self) -> Out {
        self.child.as_mut().unwrap().kill().expect("kill");
        self.wait()
    }

    /// Waits for it to end (at most `timeout`, then it is killed and the test fails).
    pub fn wait_timeout(self, timeout: Duration) -> Out {
        let deadline = Instant::now() + timeout;
        let mut me = self;
        while !me.has_exited() {
            if Instant::now() > deadline {
                let out = me.kill();
                panic!(
                    "{} did not end within {timeout:?}; stderr: {}",
                    out.cmd, out.stderr
                );
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        me.wait()
    }

    pub fn wait(mut self) -> Out {
        let child = self.child.take().unwrap();
        let out = child.wait_with_output().expect("wait for ferry");
        Out::new(self.cmd.clone(), out)
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// A finished ferry run.
#[derive(Debug)]
pub struct Out {
    pub cmd: String,
    /// Exit code; `None` when killed by a signal.
    pub code: Option<i32>,
    pub signal: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

impl Out {
    fn new(cmd: String, out: Output) -> Out {
        let o = Out {
            cmd,
            code: out.status.code(),
            signal: out.status.signal(),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        };
        o.assert_no_panic();
        o
    }

    fn assert_no_panic(&self) {
        for bad in ["panicked", "internal error", "RUST_BACKTRACE"] {
            assert!(
                !self.stderr.contains(bad),
                "{} panicked:\n{}",
                self.cmd,
                self.stderr
            );
        }
    }

    pub fn code(self, want: i32) -> Out {
        assert_eq!(
            self.code,
            Some(want),
            "{} exited with {:?} (signal {:?}), expected {want}\nstdout: {}\nstderr: {}",
            self.cmd,
            self.code,
            self.signal,
            self.stdout,
            self.stderr
        );
        self
    }

    pub fn success(self) -> Out {
        self.code(0)
    }

    /// Exit `code` and exactly one stderr line, `ferry: error: ...`, containing `needle`.
    pub fn error(self, code: i32, needle: &str) -> Out {
        let out = self.code(code);
        let lines: Vec<&str> = out.stderr.lines().collect();
        assert_eq!(
            lines.len(),
            1,
            "{}: expected one stderr line, got:\n{}",
            out.cmd,
            out.stderr
        );
        assert!(
            lines[0].starts_with("ferry: error: "),
            "{}: stderr is not a ferry error: {}",
            out.cmd,
            lines[0]
        );
        assert!(
            lines[0].to_lowercase().contains(&needle.to_lowercase()),
            "{}: error {:?} does not mention {needle:?}",
            out.cmd,
            lines[0]
        );
        assert!(
            !out.stderr.contains('\x1b'),
            "escape codes in stderr: {:?}",
            out.stderr
        );
        out
    }

    /// The stdout summary line of copy/run/replay (the last line if several).
    pub fn summary(&self) -> Summary {
        let line = self
            .stdout
            .lines()
            .rev()
            .find(|l| l.starts_with("job "))
            .unwrap_or_else(|| {
                panic!("{}: no summary line in stdout: {:?}", self.cmd, self.stdout)
            });
        Summary::parse(line)
    }

    /// Every summary line printed (one per job `run` ran).
    pub fn summaries(&self) -> Vec<Summary> {
        self.stdout
            .lines()
            .filter(|l| l.starts_with("job "))
            .map(Summary::parse)
            .collect()
    }
}

/// `job <uuid> attempt N: <status>: copied C files (B), skipped S, failed F[, R already done] in T`
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Summary {
    pub job: String,
    pub attempt: u32,
    pub status: String,
    pub copied: u64,
    pub skipped: u64,
    pub failed: u64,
    pub resumed: u64,
    pub retries: u64,
}

impl Summary {
    pub fn parse(line: &str) -> Summary {
        Self::try_parse(line).unwrap_or_else(|| panic!("malformed summary line: {line:?}"))
    }

    fn try_parse(line: &str) -> Option<Summary> {
        let num = |s: &str| s.trim().parse::<u64>().ok();
        let rest = line.strip_prefix("job ")?;
        let (job, rest) = rest.split_once(' ')?;
        let (attempt, rest) = rest.strip_prefix("attempt ")?.split_once(": ")?;
        let (status, counts) = rest.rsplit_once(": copied ")?;
        let (copied, counts) = counts.split_once(" files (")?;
        let (_, counts) = counts.split_once("), skipped ")?;
        let (skipped, counts) = counts.split_once(", failed ")?;
        let (failed_etc, _) = counts.rsplit_once(" in ")?;
        // Optional tails: ", N already done", ", N retries".
        let mut parts = failed_etc.split(", ");
        let failed = parts.next()?;
        let (mut resumed, mut retries) = (0, 0);
        for part in parts {
            if let Some(n) = part.strip_suffix(" already done") {
                resumed = num(n)?;
            } else {
                retries = num(part.strip_suffix(" retries")?)?;
            }
        }
        (job.len() == 36).then_some(())?;
        Some(Summary {
            job: job.to_string(),
            attempt: attempt.parse().ok()?,
            status: status.to_string(),
            copied: num(copied)?,
            skipped: num(skipped)?,
            failed: num(failed)?,
            resumed,
            retries,
        })
    }
}

// ---------------------------------------------------------------- trees

/// Writes a file, creating its parents.
pub fn write(path: &Path, content: impl AsRef<[u8]>) {
    if let Some(p) = path.parent() {
        fs::create_dir_all(p).unwrap();
    }
    fs::write(path, content).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
}

/// Writes `root/name` for each entry.
pub fn make_tree(root: &Path, files: &[(&str, &[u8])]) {
    for (name, content) in files {
        write(&root.join(name), content);
    }
}

pub fn set_mtime(path: &Path, secs: i64, nanos: u32) {
    filetime::set_file_mtime(path, FileTime::from_unix_time(secs, nanos)).unwrap();
}

pub fn mtime(path: &Path) -> FileTime {
    FileTime::from_last_modification_time(&fs::metadata(path).unwrap())
}

/// Seconds since the epoch, now.
pub fn now_secs() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// What the tree comparison looks at for one file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileInfo {
    pub len: u64,
    pub mtime: (i64, u32),
    pub mode: u32,
    pub content: Vec<u8>,
}

/// Every regular file under `root` (names `/`-separated, relative), with
/// size, mtime, permission bits and content. Temp files are included.
pub fn snapshot(root: &Path) -> BTreeMap<String, FileInfo> {
    let mut out = BTreeMap::new();
    for name in list_files(root) {
        let path = root.join(&name);
        let m = fs::symlink_metadata(&path).unwrap();
        let t = FileTime::from_last_modification_time(&m);
        out.insert(
            name,
            FileInfo {
                len: m.len(),
                mtime: (t.unix_seconds(), t.nanoseconds()),
                mode: m.permissions().mode() & 0o7777,
                content: fs::read(&path).unwrap(),
            },
        );
    }
    out
}

/// Names of all regular files under `root`, sorted.
pub fn list_files(root: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for e in fs::read_dir(&dir).unwrap_or_else(|e| panic!("read_dir {}: {e}", dir.display())) {
            let e = e.unwrap();
            let ft = e.file_type().unwrap();
            if ft.is_dir() {
                stack.push(e.path());
            } else if ft.is_file() {
                let rel = e
                    .path()
                    .strip_prefix(root)
                    .unwrap()
                    .to_string_lossy()
                    .into_owned();
                out.push(rel);
            }
        }
    }
    out.sort();
    out
}

/// In-progress files (`.<name>.<tag>.ferry-tmp`) anywhere under `root`.
pub fn temp_files(root: &Path) -> Vec<String> {
    list_files(root)
        .into_iter()
        .filter(|n| n.ends_with(".ferry-tmp"))
        .collect()
}

/// Asserts two trees hold the same file names with the same bytes, sizes,
/// mtimes (to the nanosecond) and permission bits.
/// `dst` holds exactly `src`'s files with the same bytes (times are not
/// compared: a download's files are as new as the download). Returns how many.
pub fn assert_same_files(src: &Path, dst: &Path) -> usize {
    let names = list_files(src);
    assert_eq!(list_files(dst), names);
    for n in &names {
        let same = std::fs::read(src.join(n)).unwrap() == std::fs::read(dst.join(n)).unwrap();
        assert!(same, "{n} differs");
    }
    names.len()
}

pub fn assert_same_tree(src: &Path, dst: &Path) {
    let a = snapshot(src);
    let b = snapshot(dst);
    let missing: Vec<_> = a.keys().filter(|k| !b.contains_key(*k)).take(10).collect();
    let extra: Vec<_> = b.keys().filter(|k| !a.contains_key(*k)).take(10).collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "trees differ: {} vs {} files; missing in dst (first 10): {missing:?}; extra in dst: {extra:?}",
        a.len(),
        b.len()
    );
    for (name, fa) in &a {
        let fb = &b[name];
        assert_eq!(fa.len, fb.len, "size of {name}");
        assert!(fa.content == fb.content, "content of {name} differs");
        assert_eq!(fa.mtime, fb.mtime, "mtime of {name}");
        assert_eq!(fa.mode, fb.mode, "permissions of {name}");
    }
}

/// Asserts every file that exists under `dst` is byte-identical to its
/// source (no partial file under a real name) and that no temp file is left.
pub fn assert_dst_files_complete(src: &Path, dst: &Path) -> usize {
    let names = list_files(dst);
    assert!(
        temp_files(dst).is_empty(),
        "temp files left in dst: {:?}",
        temp_files(dst)
    );
    for name in &names {
        let a = fs::read(src.join(name))
            .unwrap_or_else(|e| panic!("{name} in dst but not in src: {e}"));
        let b = fs::read(dst.join(name)).unwrap();
        assert!(
            a == b,
            "{name} in dst is not identical to its source ({} vs {} bytes)",
            b.len(),
            a.len()
        );
    }
    names.len()
}

/// A shared, read-only tree of `BIG_DIRS` x `BIG_PER_DIR` small files, built
/// once (under the cargo target tmp dir, reused across runs). Tests only read
/// it, so any number of them may use it at once.
pub const BIG_DIRS: usize = 60;
pub const BIG_PER_DIR: usize = 100;
pub const BIG_FILES: usize = BIG_DIRS * BIG_PER_DIR;

pub fn big_tree() -> &'static Path {
    static TREE: OnceLock<PathBuf> = OnceLock::new();
    TREE.get_or_init(|| {
        let base = Path::new(env!("CARGO_TARGET_TMPDIR")).join("fixtures");
        fs::create_dir_all(&base).unwrap();
        let tree = base.join(format!("tree-{BIG_DIRS}x{BIG_PER_DIR}-v1"));
        if tree.is_dir() {
            return tree;
        }
        let partial = base.join(format!(".partial-{}", std::process::id()));
        let _ = fs::remove_dir_all(&partial);
        for d in 0..BIG_DIRS {
            let dir = partial.join(big_dir(d));
            fs::create_dir_all(&dir).unwrap();
            for f in 0..BIG_PER_DIR {
                let n = d * BIG_PER_DIR + f;
                let content = format!("file {n}\n").repeat(n % 17);
                fs::write(dir.join(format!("f{f:03}.txt")), content).unwrap();
            }
        }
        // Atomic publish; if another process won the race, use its tree.
        if fs::rename(&partial, &tree).is_err() {
            let _ = fs::remove_dir_all(&partial);
        }
        assert!(tree.is_dir());
        tree
    })
}

/// Name of the big tree's `i`th directory; listing order is directory order.
pub fn big_dir(i: usize) -> String {
    format!("d{i:03}")
}

// ---------------------------------------------------------------- events

pub fn parse_json_lines(text: &str) -> Vec<Value> {
    text.lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not a JSON line ({e}): {l}")))
        .collect()
}

pub fn ev_type(e: &Value) -> &str {
    e["event"]["type"]
        .as_str()
        .unwrap_or_else(|| panic!("event without type: {e}"))
}

pub fn ev_data(e: &Value) -> &Value {
    &e["event"]["data"]
}

pub fn ev_name(e: &Value) -> &str {
    ev_data(e)["name"]
        .as_str()
        .unwrap_or_else(|| panic!("event without name: {e}"))
}

pub fn of_type<'a>(events: &'a [Value], ty: &str) -> Vec<&'a Value> {
    events.iter().filter(|e| ev_type(e) == ty).collect()
}

/// Splits a job's events by attempt: the attempt an event belongs to is the
/// one whose `JobStarted` precedes it (0 before any start).
pub fn attempt_of_each(events: &[Value]) -> Vec<u64> {
    let mut current = 0;
    events
        .iter()
        .map(|e| {
            if ev_type(e) == "JobStarted" {
                current = ev_data(e)["attempt"].as_u64().unwrap();
            }
            current
        })
        .collect()
}

/// Names of blob events of one type in one attempt.
pub fn names_in_attempt(events: &[Value], ty: &str, attempt: u64) -> BTreeSet<String> {
    let attempts = attempt_of_each(events);
    let mut out = BTreeSet::new();
    for (e, a) in events.iter().zip(attempts) {
        if a == attempt && ev_type(e) == ty {
            assert!(
                out.insert(ev_name(e).to_string()),
                "{ty} twice for {} in attempt {attempt}",
                ev_name(e)
            );
        }
    }
    out
}

/// Asserts the events are one job's, with seqs 0, 1, 2, ... and no gap.
pub fn assert_gap_free(events: &[Value]) {
    assert!(!events.is_empty(), "no events");
    let job = events[0]["job"].as_str().unwrap();
    for (i, e) in events.iter().enumerate() {
        assert_eq!(
            e["job"].as_str(),
            Some(job),
            "event {i} belongs to another job"
        );
        assert_eq!(
            e["seq"].as_u64(),
            Some(i as u64),
            "seq gap at position {i}: {e}"
        );
        assert_eq!(
            e["v"].as_u64(),
            Some(ferry_engine::event::SCHEMA_VERSION as u64),
            "schema version of {e}"
        );
    }
}

// ---------------------------------------------------------------- polling

/// Polls `cond` until it holds; panics after `timeout` naming `what`.
pub fn wait_until(timeout: Duration, what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !cond() {
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting until {what}"
        );
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// Whether `dir` exists and has at least one entry.
pub fn has_entries(dir: &Path) -> bool {
    fs::read_dir(dir)
        .map(|mut r| r.next().is_some())
        .unwrap_or(false)
}

/// The number of CPUs ferry sees.
pub fn cores() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
}
