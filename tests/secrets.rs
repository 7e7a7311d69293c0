//! Secrets never leave memory: a realistic session against Azurite with every
//! kind of credential (account key in a connection string, the implicit
//! `AZURE_STORAGE_CONNECTION_STRING`, a SAS URL account, a SAS connection
//! string, SAS container URLs on the command line and in `FERRY_DST_SAS`),
//! at `RUST_LOG=trace`, including failures, a replay, every query and
//! report, and the panic hook. Then every byte ferry wrote (the state dir
//! with sled's files and the plugin cache, reports, downloaded trees,
//! stdout and stderr of every command) is searched for each secret.

use std::os::fd::{FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::process::Stdio;

use base64::Engine as _;
use ferry_engine::store::azure::{auth, AzureStore};
use ferry_engine::store::BlobStore;
use ferry_engine::testkit::{Azurite, DEV_ACCOUNT, DEV_KEY};

use crate::util::*;

/// A wrong (but well-formed) key for the `bad` account: also a secret.
const WRONG_KEY: &str = "AAAAbm90IHRoZSByaWdodCBrZXkgYXQgYWxsIGZvciB0aGlzIGFjY291bnQ=";

/// One command's captured output, bytes as written.
struct Ran {
    cmd: String,
    code: Option<i32>,
    stdout: Vec<u8>,
    stderr: Vec<u8>,
}

impl Ran {
    fn text(&self) -> String {
        format!(
            "{} -> {:?}\nstdout: {}\nstderr (last 2000 bytes): {}",
            self.cmd,
            self.code,
            String::from_utf8_lossy(&self.stdout),
            String::from_utf8_lossy(&self.stderr[self.stderr.len().saturating_sub(2000)..])
        )
    }

    fn expect(&self, code: i32) -> &Ran {
        assert_eq!(self.code, Some(code), "{}", self.text());
        self
    }

    fn stdout(&self) -> String {
        String::from_utf8_lossy(&self.stdout).into_owned()
    }
}

/// The session: a sandbox, a config holding the secrets (outside the
/// sandbox, the one file allowed to hold them), and every output captured.
struct Session {
    env: Env,
    azurite: &'static Azurite,
    /// Holds ferry.toml; not scanned (it is the user's own secret store).
    config_dir: tempfile::TempDir,
    config: PathBuf,
    outputs: Vec<Ran>,
}

impl Session {
    /// `ferry --state STATE --config CONFIG` at trace level.
    fn ferry(&self) -> Ferry {
        self.ferry_with(&self.config)
    }

    fn ferry_with(&self, config: &Path) -> Ferry {
        let mut f = self.env.ferry();
        f.arg("--config").arg(config);
        f.env("RUST_LOG", "trace");
        f
    }

    fn run(&mut self, f: &mut Ferry) -> &Ran {
        // Named by its arguments, any SAS in them masked.
        let cmd = f
            .cmd
            .get_args()
            .skip(4)
            .map(|a| {
                let a = a.to_string_lossy();
                if a.contains("sig=") {
                    "<sas>".to_string()
                } else {
                    a.chars().take(60).collect()
                }
            })
            .collect::<Vec<_>>()
            .join(" ");
        let cmd = format!("#{} ferry {cmd}", self.outputs.len());
        let out = f
            .cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .output()
            .expect("spawn ferry");
        self.outputs.push(Ran {
            cmd,
            code: out.status.code(),
            stdout: out.stdout,
            stderr: out.stderr,
        });
        let ran = self.outputs.last().unwrap();
        let stderr = String::from_utf8_lossy(&ran.stderr);
        assert!(
            !stderr.contains("panicked") && !stderr.contains("internal error"),
            "{}",
            ran.text()
        );
        ran
    }

    fn sas(&self, container: &str, permissions: &str) -> String {
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

    fn url(&self, container: &str) -> String {
        format!("{}/{container}", self.azurite.endpoint())
    }

    /// Creates a container with the test's own client (not through ferry).
    fn create_container(&self, container: &str) {
        let account =
            ferry_engine::config::parse_connection_string("dev", &self.azurite.connection_string())
                .unwrap();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(
            AzureStore::open(&account, container, "", None, Default::default())
                .unwrap()
                .prepare_destination(),
        )
        .unwrap();
    }
}

fn unique(tag: &str) -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    format!(
        "sec-{tag}-{:x}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// The `sig=` value of a SAS query string, as it appears in the query
/// (percent-encoded).
fn sig_of(sas: &str) -> String {
    sas.split('&')
        .find_map(|p| p.strip_prefix("sig="))
        .expect("a SAS has sig=")
        .to_string()
}

fn percent_decode(s: &str) -> String {
    url::form_urlencoded::parse(format!("x={s}").as_bytes())
        .next()
        .map(|(_, v)| v.into_owned())
        .unwrap()
}

fn percent_encode(s: &str, lower: bool) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() {
            out.push(b as char);
        } else if lower {
            out.push_str(&format!("%{b:02x}"));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Every secret of the session, in each form it could leak in.
fn needles(keys: &[&str], sigs: &[String], conn_strings: &[String]) -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    for key in keys {
        out.push((
            format!("account key {}...", &key[..6]),
            key.as_bytes().to_vec(),
        ));
        // A key cut short (e.g. a log line truncated) still leaks most of it.
        out.push((
            format!("account key {}... (first 20 chars)", &key[..6]),
            key.as_bytes()[..20].to_vec(),
        ));
        out.push((
            format!("account key {}... (percent-encoded)", &key[..6]),
            percent_encode(key, false).into_bytes(),
        ));
        let raw = base64::engine::general_purpose::STANDARD
            .decode(key)
            .unwrap();
        out.push((format!("account key {}... (raw bytes)", &key[..6]), raw));
    }
    for sig in sigs {
        let decoded = percent_decode(sig);
        let label = format!("SAS signature {}...", &decoded[..6]);
        out.push((
            format!("{label} (as in the query)"),
            sig.as_bytes().to_vec(),
        ));
        out.push((format!("{label} (decoded)"), decoded.as_bytes().to_vec()));
        out.push((
            format!("{label} (lowercase percent-encoding)"),
            percent_encode(&decoded, true).into_bytes(),
        ));
        out.push((
            format!("{label} (raw bytes)"),
            base64::engine::general_purpose::STANDARD
                .decode(&decoded)
                .unwrap(),
        ));
    }
    for cs in conn_strings {
        out.push(("a connection string".into(), cs.as_bytes().to_vec()));
    }
    out
}

/// Finds many needles in one pass (the test runs unoptimised, so a naive
/// search per needle over megabytes of trace output takes minutes): needles
/// are indexed by their first two bytes.
struct Finder {
    needles: Vec<Vec<u8>>,
    by_prefix: Vec<Vec<usize>>,
}

impl Finder {
    fn new(needles: Vec<Vec<u8>>) -> Finder {
        let mut by_prefix = vec![Vec::new(); 1 << 16];
        for (i, n) in needles.iter().enumerate() {
            assert!(n.len() >= 2, "needle too short");
            by_prefix[usize::from(u16::from_le_bytes([n[0], n[1]]))].push(i);
        }
        Finder { needles, by_prefix }
    }

    /// (needle index, offset) of every match.
    fn find_all(&self, hay: &[u8]) -> Vec<(usize, usize)> {
        let mut out = Vec::new();
        for at in 0..hay.len().saturating_sub(1) {
            let candidates =
                &self.by_prefix[usize::from(u16::from_le_bytes([hay[at], hay[at + 1]]))];
            for &i in candidates {
                if hay[at..].starts_with(&self.needles[i]) {
                    out.push((i, at));
                }
            }
        }
        out
    }
}

/// Secrets ferry derives itself and never prints: a SAS it signs for a
/// server-side copy, a request's Shared Key signature, secret fields of a
/// connection string. Found by shape, since their values are not known here.
const SHAPES: [&str; 4] = [
    "sig=",
    "AccountKey=",
    "SharedAccessSignature=",
    "SharedKey devstoreaccount1:",
];

/// A shape match is a leak when a value follows it (not a redaction marker
/// such as azure_core's `REDACTED` or ferry's `<redacted>`).
fn shaped_leak(hay: &[u8], shape: &str, at: usize) -> Option<String> {
    let secret_char = |b: &u8| b.is_ascii_alphanumeric() || b"%+/=".contains(b);
    let start = at + shape.len();
    let value: Vec<u8> = hay[start..]
        .iter()
        .take_while(|b| secret_char(b))
        .copied()
        .collect();
    (value.len() >= 4 && value != b"REDACTED").then(|| {
        format!(
            "{shape}{}...",
            String::from_utf8_lossy(&value[..4.min(value.len())])
        )
    })
}

fn find(hay: &[u8], needle: &[u8]) -> bool {
    !Finder::new(vec![needle.to_vec()]).find_all(hay).is_empty()
}

/// Every regular file under `root`, recursively (symlinks not followed).
fn all_files(root: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let e = e.unwrap();
            let ft = e.file_type().unwrap();
            if ft.is_dir() {
                stack.push(e.path());
            } else if ft.is_file() {
                out.push(e.path());
            }
        }
    }
    out.sort();
    out
}

/// A pipe whose reading end is already closed: writing to it fails with
/// EPIPE (Rust ignores SIGPIPE), which makes `println!` panic.
fn broken_pipe() -> Stdio {
    let mut fds = [0; 2];
    // SAFETY: pipe(2) fills two new descriptors that we then own.
    let rc = unsafe { libc::pipe(fds.as_mut_ptr()) };
    assert_eq!(rc, 0, "pipe: {}", std::io::Error::last_os_error());
    // SAFETY: both descriptors were just created and are owned here only.
    let (read, write) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    drop(read);
    Stdio::from(write)
}

#[test]
fn no_secret_survives_a_full_session_in_any_byte_ferry_writes() {
    let azurite = Azurite::shared();
    let env = Env::new();
    make_tree(
        &env.src,
        &[
            ("a.txt", b"alpha"),
            ("dir/b.txt", b"bravo"),
            ("dir/sub/c.bin", &[7u8; 3000]),
        ],
    );
    let config_dir = tempfile::tempdir().unwrap();
    let config = config_dir.path().join("ferry.toml");
    let mut s = Session {
        env,
        azurite,
        config_dir,
        config,
        outputs: Vec::new(),
    };

    let up = unique("up"); // local -> azure (key)
    let s2s = unique("s2s"); // azure -> azure server-side (key -> key)
    let viasas = unique("url"); // azure -> SAS container URL
    let ro = unique("ro"); // destination with a read-only SAS: blobs fail
    let sascs = unique("cs"); // SAS connection string account
    let boom = unique("boom"); // the panic path
    for c in [&viasas, &ro, &sascs, &boom] {
        s.create_container(c);
    }
    let sas_read_up = s.sas(&up, "rl");
    let sas_url = s.sas(&viasas, "racwdl");
    let sas_ro = s.sas(&ro, "rl");
    let sas_ro_fixed = s.sas(&ro, "racwdl");
    let sas_cs = s.sas(&sascs, "racwdl");
    let sas_boom = s.sas(&boom, "racwdl");
    let dev_cs = azurite.connection_string();
    let bad_cs = format!(
        "AccountName={DEV_ACCOUNT};AccountKey={WRONG_KEY};BlobEndpoint={}",
        azurite.endpoint()
    );
    let sas_account_cs = format!(
        "BlobEndpoint={};SharedAccessSignature={sas_cs}",
        azurite.endpoint()
    );
    write(
        &s.config,
        format!(
            "[accounts.dev]\nconnection_string = \"{dev_cs}\"\n\n\
             [accounts.bad]\nconnection_string = \"{bad_cs}\"\n\n\
             [accounts.sasurl]\nsas_url = \"{}?{sas_read_up}\"\n\n\
             [accounts.sascs]\nconnection_string = \"{sas_account_cs}\"\n",
            azurite.endpoint()
        ),
    );

    // local -> Azure with the account key.
    let src = s.env.src.clone();
    let mut f = s.ferry();
    f.arg("copy").arg(&src).arg(format!("dev:{up}"));
    let job_up = Summary::parse(
        s.run(&mut f)
            .expect(0)
            .stdout()
            .lines()
            .find(|l| l.starts_with("job "))
            .unwrap(),
    )
    .job;
    // Azure -> Azure server-side: ferry signs a read SAS for each source blob.
    let mut f = s.ferry();
    f.args(["copy", &format!("dev:{up}"), &format!("dev:{s2s}")]);
    s.run(&mut f).expect(0);
    // Azure -> a SAS container URL, streamed (the SAS rides on each request).
    let mut f = s.ferry();
    f.args([
        "copy",
        &format!("dev:{s2s}"),
        &format!("{}?{sas_url}", s.url(&viasas)),
        "--copy-method",
        "stream",
    ]);
    s.run(&mut f).expect(0);
    // Azure -> local through AZURE_STORAGE_CONNECTION_STRING.
    let down1 = s.env.path("down-default");
    let mut f = s.ferry();
    f.env("AZURE_STORAGE_CONNECTION_STRING", &dev_cs)
        .arg("copy")
        .arg(format!("default:{up}"))
        .arg(&down1);
    s.run(&mut f).expect(0);
    // Azure -> local through a SAS URL account.
    let down2 = s.env.path("down-sasurl");
    let mut f = s.ferry();
    f.arg("copy").arg(format!("sasurl:{up}")).arg(&down2);
    s.run(&mut f).expect(0);
    assert_same_content(&s.env.src, &down1);
    assert_same_content(&s.env.src, &down2);
    // local -> a SAS connection string account.
    let mut f = s.ferry();
    f.arg("copy").arg(&src).arg(format!("sascs:{sascs}"));
    s.run(&mut f).expect(0);

    // A wrong key fails the job (the service's refusal, not its text).
    let mut f = s.ferry();
    f.arg("copy")
        .arg(&src)
        .arg(format!("bad:{}", unique("bad")));
    let bad = s.run(&mut f).expect(6);
    assert!(
        String::from_utf8_lossy(&bad.stderr).contains("refused"),
        "{}",
        bad.text()
    );
    // A SAS that may only read: every blob fails with the service's 403,
    // recorded in the log; a replay with a better SAS (from the
    // environment) finishes the job.
    let mut f = s.ferry();
    f.arg("copy")
        .arg(&src)
        .arg(format!("{}?{sas_ro}", s.url(&ro)));
    let failing = s.run(&mut f).expect(1).stdout();
    let job_ro = Summary::parse(failing.lines().find(|l| l.starts_with("job ")).unwrap()).job;
    let mut f = s.ferry();
    f.env("FERRY_DST_SAS", &sas_ro_fixed)
        .args(["replay", &job_ro]);
    s.run(&mut f).expect(0);
    // A replay of a finished job, and of a URL job without its SAS: errors.
    let mut f = s.ferry();
    f.args(["replay", &job_up]);
    s.run(&mut f).expect(7);
    let mut f = s.ferry();
    f.arg("submit")
        .arg(&src)
        .arg(format!("{}?{sas_url}", s.url(&viasas)));
    s.run(&mut f).expect(0);
    let mut f = s.ferry();
    f.arg("run");
    s.run(&mut f).expect(6);
    let mut f = s.ferry();
    f.args(["run", "--dst-sas", &sas_url]);
    s.run(&mut f).expect(0);

    // A schedule of a SAS container URL is refused (its fires could not
    // have the SAS), without quoting it.
    let mut f = s.ferry();
    f.args(["schedule", "add", "nightly", "0 0 3 * * *"])
        .arg(&src)
        .arg(format!("{}?{sas_url}", s.url(&viasas)));
    s.run(&mut f).expect(2);
    let mut f = s.ferry();
    f.args(["schedule", "list", "--json"]);
    s.run(&mut f).expect(0);

    // Mistakes that put a secret where ferry quotes the input back: a SAS
    // given as a stray argument (no --dst-sas), an account written as a bare
    // connection string or SAS URL (the parser quotes the value it could not
    // place), the help with a SAS in the environment, and an endpoint that
    // does not answer.
    let mut f = s.ferry();
    f.args(["replay", &job_ro, &sas_ro_fixed]);
    s.run(&mut f).expect(2);
    for (name, value) in [("bare-cs", &dev_cs), ("bare-sas", &sas_account_cs)] {
        let broken = s.config_dir.path().join(format!("{name}.toml"));
        write(&broken, format!("[accounts]\ndev = \"{value}\"\n"));
        let mut f = s.ferry_with(&broken);
        f.arg("copy").arg(&src).arg(format!("dev:{up}"));
        let out = s.run(&mut f).expect(2);
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("is not valid"),
            "{}",
            out.text()
        );
    }
    let mut f = s.ferry();
    f.env("FERRY_DST_SAS", &sas_url)
        .env("FERRY_SRC_SAS", &sas_url)
        .args(["replay", "--help"]);
    s.run(&mut f).expect(0);
    let mut f = s.ferry();
    f.arg("copy")
        .arg(&src)
        .arg(format!(
            "http://127.0.0.1:1/{DEV_ACCOUNT}/{viasas}?{sas_url}"
        ))
        .args(["--max-tries", "1"]);
    s.run(&mut f).expect(6);

    // Every read-only view, and reports to files (one through a plugin, so
    // the plugin cache is written too).
    let reports = s.env.path("reports");
    std::fs::create_dir(&reports).unwrap();
    let jobs: Vec<String> = s
        .env
        .jobs_json()
        .iter()
        .map(|j| j["id"].as_str().unwrap().to_string())
        .collect();
    assert!(jobs.len() >= 8, "{jobs:?}");
    for args in [
        vec!["events"],
        vec!["events", "--json"],
        vec!["jobs"],
        vec!["jobs", "--json"],
        vec!["verify-log"],
    ] {
        let mut f = s.ferry();
        f.args(args);
        s.run(&mut f).expect(0);
    }
    let markdown_plugin = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("plugins/target/wasm32-wasip2/release/markdown_report.wasm");
    assert!(
        markdown_plugin.exists(),
        "build the plugins first (scripts/test)"
    );
    for job in &jobs {
        for args in [vec!["show", job], vec!["show", job, "--json"]] {
            let mut f = s.ferry();
            f.args(args);
            s.run(&mut f).expect(0);
        }
    }
    // Reports of the jobs with errors in them (service refusals, a job that
    // could not start), and of one that went well.
    let mut reported: Vec<String> = s
        .env
        .jobs_json()
        .iter()
        .filter(|j| j["state"] != "succeeded")
        .map(|j| j["id"].as_str().unwrap().to_string())
        .collect();
    assert!(reported.len() >= 2, "{reported:?}");
    reported.extend([job_ro.clone(), job_up.clone()]);
    for job in &reported {
        for format in [
            "json",
            "markdown",
            "text",
            markdown_plugin.to_str().unwrap(),
        ] {
            let ext = if format.ends_with(".wasm") {
                "plugin.md"
            } else {
                format
            };
            let mut f = s.ferry();
            if format.ends_with(".wasm") {
                // Compiling the plugin at trace level writes ~550 MB of
                // Cranelift's own chatter (no secret goes near it).
                f.env("RUST_LOG", "trace,cranelift_codegen=off");
            }
            f.args(["report", job, "--format", format, "-o"])
                .arg(reports.join(format!("{job}.{ext}")));
            s.run(&mut f).expect(0);
        }
    }
    // The failures are in the log and the reports, with what the service said.
    let mut f = s.ferry();
    f.args(["events", &job_ro, "--json"]);
    let failures = s.run(&mut f).stdout();
    assert!(
        failures.contains("BlobFailed") && failures.contains("refused the request"),
        "{failures}"
    );

    // The panic hook: stdout is a pipe nobody reads, so the summary's
    // println! panics after the copy, with the SAS in memory. The hook
    // takes that for a reader that went away (`| head`): it ends quietly
    // with success. (Its masking of other panics: `cli/src/main.rs` tests.)
    let mut f = s.ferry();
    f.arg("copy")
        .arg(&src)
        .arg(format!("{}?{sas_boom}", s.url(&boom)));
    let out = f
        .cmd
        .stdin(Stdio::null())
        .stdout(broken_pipe())
        .stderr(Stdio::piped())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(
        !stderr.contains("internal error") && !stderr.contains("Broken pipe"),
        "the panic hook reported a closed stdout: {stderr}"
    );
    s.outputs.push(Ran {
        cmd: "copy with a broken stdout".into(),
        code: out.status.code(),
        stdout: Vec::new(),
        stderr: out.stderr,
    });

    // Trace logging was really on, down to the HTTP stack.
    let all_stderr: Vec<u8> = s
        .outputs
        .iter()
        .flat_map(|o| o.stderr.iter().copied())
        .collect();
    let stderr_text = String::from_utf8_lossy(&all_stderr);
    assert!(
        stderr_text.contains("TRACE") && stderr_text.contains("DEBUG"),
        "trace logging was not on"
    );

    // What ferry wrote: every file in the sandbox (state dir, reports,
    // downloaded trees), and every command's stdout and stderr.
    let mut haystacks: Vec<(String, Vec<u8>)> = Vec::new();
    let files = all_files(s.env.dir.path());
    for file in &files {
        haystacks.push((file.display().to_string(), std::fs::read(file).unwrap()));
    }
    for o in &s.outputs {
        haystacks.push((format!("stdout of {}", o.cmd), o.stdout.clone()));
        haystacks.push((format!("stderr of {}", o.cmd), o.stderr.clone()));
    }
    let state_files: Vec<&PathBuf> = files
        .iter()
        .filter(|f| f.starts_with(&s.env.state))
        .collect();
    let state_bytes: u64 = state_files
        .iter()
        .map(|f| std::fs::metadata(f).unwrap().len())
        .sum();
    assert!(
        state_files.iter().any(|f| f.ends_with("db")),
        "sled's data file was not scanned: {state_files:?}"
    );
    assert!(
        state_files
            .iter()
            .any(|f| f.to_string_lossy().contains("plugin-cache")
                && f.to_string_lossy().ends_with(".cwasm")),
        "the plugin cache was not scanned: {state_files:?}"
    );
    assert!(
        files.iter().filter(|f| f.starts_with(&reports)).count() == reported.len() * 4,
        "reports missing"
    );
    let total: usize = haystacks.iter().map(|(_, h)| h.len()).sum();
    let output_bytes: usize = s
        .outputs
        .iter()
        .map(|o| o.stdout.len() + o.stderr.len())
        .sum();
    eprintln!(
        "secrets: scanned {} files ({} in the state dir, {state_bytes} bytes), {} command outputs ({output_bytes} bytes), {total} bytes in all",
        files.len(),
        state_files.len(),
        s.outputs.len() * 2,
    );
    assert!(files.len() >= 25, "only {} files scanned", files.len());
    assert!(state_bytes >= 100_000, "only {state_bytes} state bytes");
    assert!(
        output_bytes >= 100_000,
        "only {output_bytes} bytes of output at trace level"
    );

    let keys = [DEV_KEY, WRONG_KEY];
    let sigs: Vec<String> = [
        &sas_read_up,
        &sas_url,
        &sas_ro,
        &sas_ro_fixed,
        &sas_cs,
        &sas_boom,
    ]
    .iter()
    .map(|s| sig_of(s))
    .collect();
    let needles = needles(
        &keys,
        &sigs,
        &[dev_cs.clone(), bad_cs.clone(), sas_account_cs.clone()],
    );

    // The search finds what it looks for, in every form: a positive control
    // over the secrets as the test handed them to ferry.
    let mut control = std::fs::read(&s.config).unwrap();
    for sas in [&sas_url, &sas_ro, &sas_ro_fixed, &sas_boom] {
        control.extend_from_slice(sas.as_bytes());
    }
    for (_, needle) in needles.iter().filter(|(w, _)| {
        !(w.contains("raw bytes") || w.contains("percent") || w.contains("decoded"))
    }) {
        assert!(find(&control, needle), "the search is broken");
    }
    for (what, needle) in &needles {
        let mut hay = b"some log line: ".to_vec();
        hay.extend_from_slice(needle);
        assert!(find(&hay, needle), "{what}: the search is broken");
    }
    let shapes = Finder::new(SHAPES.iter().map(|s| s.as_bytes().to_vec()).collect());
    let shaped = shapes
        .find_all(&control)
        .into_iter()
        .filter_map(|(i, at)| shaped_leak(&control, SHAPES[i], at))
        .count();
    assert!(shaped >= 6, "the shape search is broken: {shaped}");
    assert!(shaped_leak(b"sig=REDACTED&", "sig=", 0).is_none());

    let finder = Finder::new(
        needles
            .iter()
            .map(|(_, n)| n.clone())
            .chain(SHAPES.iter().map(|s| s.as_bytes().to_vec()))
            .collect(),
    );
    let mut leaks = Vec::new();
    for (where_, hay) in &haystacks {
        for (i, at) in finder.find_all(hay) {
            match needles.get(i) {
                Some((what, _)) => leaks.push(format!("{what} in {where_} at byte {at}")),
                None => {
                    if let Some(l) = shaped_leak(hay, SHAPES[i - needles.len()], at) {
                        leaks.push(format!("{l} in {where_} at byte {at}"));
                    }
                }
            }
        }
    }
    assert!(
        leaks.is_empty(),
        "{} secret(s) leaked:\n{}",
        leaks.len(),
        leaks.join("\n")
    );
    drop(s.config_dir);
}

/// Same names and bytes (mtimes differ after a round trip through Azure).
fn assert_same_content(a: &Path, b: &Path) {
    assert_eq!(list_files(a), list_files(b));
    for n in list_files(a) {
        assert_eq!(
            std::fs::read(a.join(&n)).unwrap(),
            std::fs::read(b.join(&n)).unwrap(),
            "{n}"
        );
    }
}
