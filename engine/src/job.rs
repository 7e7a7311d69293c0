//! Jobs: identity, spec and the checks a spec must pass before it is enqueued.

use std::borrow::Cow;
use std::fmt;
use std::path::{Component, Path, PathBuf};
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::config::{Account, Accounts};
use crate::error::EngineError;

/// A job's id: a UUIDv7, so ids sort by submission time and so do the log keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct JobId(pub Uuid);

impl JobId {
    /// The control stream: schedule events, which belong to no job. The nil
    /// UUID sorts before every v7 id, so it is never taken for a job.
    pub const CONTROL: JobId = JobId(Uuid::nil());

    pub fn new() -> Self {
        JobId(Uuid::now_v7())
    }

    pub fn as_bytes(&self) -> &[u8; 16] {
        self.0.as_bytes()
    }

    pub fn from_slice(b: &[u8]) -> Option<Self> {
        Uuid::from_slice(b).ok().map(JobId)
    }

    /// The random tail of the id: unique per job, used to name temporary files.
    pub fn tag(&self) -> String {
        let s = self.0.simple().to_string();
        s[s.len() - 12..].to_string()
    }
}

impl Default for JobId {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Display for JobId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// What to do with a blob that already exists at the destination.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Mode {
    /// Always overwrite.
    Full,
    /// Overwrite only if the source is newer.
    #[default]
    Incremental,
    /// Never overwrite.
    Never,
    /// Overwrite if size or content differ.
    IfDifferent,
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Mode::Full => "full",
            Mode::Incremental => "incremental",
            Mode::Never => "never",
            Mode::IfDifferent => "if-different",
        })
    }
}

impl FromStr for Mode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "full" | "always" => Ok(Mode::Full),
            "incremental" | "if-source-newer" => Ok(Mode::Incremental),
            "never" => Ok(Mode::Never),
            "if-different" => Ok(Mode::IfDifferent),
            _ => Err(format!(
                "unknown mode {s:?}; use full, incremental, never or if-different"
            )),
        }
    }
}

/// Where blobs live. Stored in the log, so it must never hold a secret:
/// accounts are referred to by their config name, container URLs without
/// their SAS.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Address {
    /// A folder on this machine, as an absolute path.
    Local { path: String },
    /// An in-process store (tests and benchmarks).
    Memory { name: String },
    /// `account:container/prefix`, the account named in the config.
    Azure {
        account: String,
        container: String,
        prefix: String,
    },
    /// A container URL (and optional prefix) whose SAS is given at run time.
    AzureUrl { url: String },
}

impl fmt::Display for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Address::Local { path } => f.write_str(path),
            Address::Memory { name } => write!(f, "memory:{name}"),
            Address::Azure {
                account,
                container,
                prefix,
            } if prefix.is_empty() => write!(f, "{account}:{container}"),
            Address::Azure {
                account,
                container,
                prefix,
            } => write!(f, "{account}:{container}/{prefix}"),
            Address::AzureUrl { url } => f.write_str(url),
        }
    }
}

/// An address as typed, with the SAS that came with a URL (kept out of the
/// address so it never reaches the log).
#[derive(Debug, Clone)]
pub struct ParsedAddress {
    pub address: Address,
    pub sas: Option<String>,
    /// The folder of the local account it names, which must exist whenever
    /// a job on it runs (`JobSpec::mounts`).
    pub root: Option<String>,
}

impl Address {
    /// Parses what a user typed: `http(s)://` container URLs (their SAS is
    /// split off), `account:container/prefix` for configured accounts, and
    /// plain paths for local folders. A local account's folder must exist
    /// (an unmounted share is refused).
    pub fn parse(input: &str, accounts: &Accounts) -> Result<ParsedAddress, EngineError> {
        Self::parse_with(input, accounts, true)
    }

    /// [`Address::parse`] for looking things up, where nothing is copied:
    /// a local account's folder may be missing (the history of a share
    /// that is not mounted now is still in the log).
    pub fn parse_for_lookup(
        input: &str,
        accounts: &Accounts,
    ) -> Result<ParsedAddress, EngineError> {
        Self::parse_with(input, accounts, false)
    }

    fn parse_with(
        input: &str,
        accounts: &Accounts,
        mounted: bool,
    ) -> Result<ParsedAddress, EngineError> {
        let plain = |address| {
            Ok(ParsedAddress {
                address,
                sas: None,
                root: None,
            })
        };
        if input.is_empty() {
            return Err(EngineError::InvalidInput(
                "empty address; give a folder, account:container or URL".into(),
            ));
        }
        if input.starts_with("https://") || input.starts_with("http://") {
            let mut url = url::Url::parse(input).map_err(|_| {
                EngineError::InvalidInput("invalid container URL; expected https://ACCOUNT.blob.core.windows.net/CONTAINER[/PREFIX]?SAS".into())
            })?;
            let sas = url.query().filter(|q| !q.is_empty()).map(str::to_string);
            url.set_query(None);
            url.set_fragment(None);
            let bare = url.as_str().trim_end_matches('/').to_string();
            if let Some(sas) = &sas {
                check_sas_expiry(&bare, sas)?;
            }
            return Ok(ParsedAddress {
                address: Address::AzureUrl { url: bare },
                sas,
                root: None,
            });
        }
        if let Some((account, rest)) = input.split_once(':') {
            if crate::config::valid_account_name(account) && !account.contains('/') {
                if accounts.is_known(account) {
                    if rest.split('/').any(|part| part == ".." || part == ".") {
                        return Err(EngineError::InvalidInput(format!(
                            "{input}: '.' and '..' are refused in an account address; \
                             name the folder or prefix under {account}: as it is"
                        )));
                    }
                    if let Account::Local(root) = accounts.get(account)? {
                        // An unmounted share: its copies would fill the
                        // local disk, and a backup from it would be empty.
                        let root = root.to_string_lossy().into_owned();
                        if mounted {
                            check_mount(&root)?;
                        }
                        let path = Path::new(&root).join(rest.trim_start_matches('/'));
                        let mut parsed = Self::parse_local(&path.to_string_lossy())?;
                        parsed.root = Some(root);
                        return Ok(parsed);
                    }
                    let (container, prefix) = rest
                        .trim_start_matches('/')
                        .split_once('/')
                        .unwrap_or((rest, ""));
                    check_container_name(container)?;
                    return plain(Address::Azure {
                        account: account.to_string(),
                        container: container.to_string(),
                        prefix: prefix.trim_matches('/').to_string(),
                    });
                }
                if !Path::new(input).exists() {
                    accounts.get(account)?;
                }
            }
        }
        Self::parse_local(input)
    }

    fn parse_local(input: &str) -> Result<ParsedAddress, EngineError> {
        let abs = std::path::absolute(input).map_err(|e| {
            EngineError::InvalidInput(format!("cannot resolve path {input:?}: {e}"))
        })?;
        let abs = normalize(&abs);
        let path = abs.to_str().ok_or_else(|| {
            EngineError::InvalidInput(format!(
                "path {} is not valid UTF-8; rename it or copy its parent",
                abs.display()
            ))
        })?;
        Ok(ParsedAddress {
            address: Address::Local {
                path: path.to_string(),
            },
            sas: None,
            root: None,
        })
    }

    pub fn local_path(&self) -> Option<&Path> {
        match self {
            Address::Local { path } => Some(Path::new(path)),
            _ => None,
        }
    }

    pub fn is_azure(&self) -> bool {
        matches!(self, Address::Azure { .. } | Address::AzureUrl { .. })
    }

    /// Whether `other` is a different place under this Azure container
    /// prefix (same account and container, prefix below this one), or
    /// below this container URL. Local folders are compared by `validate`
    /// on the real paths.
    fn contains(&self, other: &Address) -> bool {
        let under = |outer: &str, inner: &str| {
            outer != inner && (outer.is_empty() || inner.starts_with(&format!("{outer}/")))
        };
        match (self, other) {
            (
                Address::Azure {
                    account: a1,
                    container: c1,
                    prefix: p1,
                },
                Address::Azure {
                    account: a2,
                    container: c2,
                    prefix: p2,
                },
            ) => a1 == a2 && c1 == c2 && under(p1, p2),
            (Address::AzureUrl { url: u1 }, Address::AzureUrl { url: u2 }) => {
                !u1.is_empty() && under(u1, u2)
            }
            _ => false,
        }
    }
}

/// The smallest block `--block-size` takes.
pub const MIN_BLOCK_SIZE: u64 = 16 * 1024;

/// Azure's largest block (Put Block, Put Block From URL): 4,000 MiB.
pub const MAX_BLOCK_SIZE: u64 = 4000 << 20;

/// Refuses a SAS whose expiry (`se=`) has passed, before any request: the
/// service would only answer "authorization failure". A SAS without a
/// readable expiry is left for the service to judge.
pub fn check_sas_expiry(url: &str, sas: &str) -> Result<(), EngineError> {
    let query = sas.trim_start_matches('?');
    let Some((_, se)) = url::form_urlencoded::parse(query.as_bytes()).find(|(k, _)| k == "se")
    else {
        return Ok(());
    };
    let Some(expiry) = parse_sas_time(&se) else {
        return Ok(());
    };
    if expiry <= chrono::Utc::now() {
        return Err(EngineError::InvalidInput(format!(
            "the SAS for {url} expired at {}; create a new one",
            expiry.format("%Y-%m-%d %H:%M:%S UTC")
        )));
    }
    Ok(())
}

/// The ISO 8601 forms a SAS's `se`/`st` take: `2024-05-01T12:00:00Z`,
/// `2024-05-01T12:00Z` or `2024-05-01`.
fn parse_sas_time(s: &str) -> Option<chrono::DateTime<chrono::Utc>> {
    use chrono::{NaiveDate, NaiveDateTime, TimeZone, Utc};
    if let Ok(t) = chrono::DateTime::parse_from_rfc3339(s) {
        return Some(t.with_timezone(&Utc));
    }
    if let Ok(t) = NaiveDateTime::parse_from_str(s, "%Y-%m-%dT%H:%MZ") {
        return Some(Utc.from_utc_datetime(&t));
    }
    let day = NaiveDate::parse_from_str(s, "%Y-%m-%d").ok()?;
    Some(Utc.from_utc_datetime(&day.and_hms_opt(0, 0, 0)?))
}

/// Azure's container naming rules, checked before any request.
fn check_container_name(c: &str) -> Result<(), EngineError> {
    let ok = (3..=63).contains(&c.len())
        && c.chars()
            .all(|ch| ch.is_ascii_lowercase() || ch.is_ascii_digit() || ch == '-')
        && !c.starts_with('-')
        && !c.ends_with('-')
        && !c.contains("--");
    if ok {
        Ok(())
    } else {
        Err(EngineError::InvalidInput(format!(
            "invalid container name {c:?}: use 3-63 lowercase letters, digits and single hyphens"
        )))
    }
}

/// Removes `.` and resolves `..` as the kernel would: the parent of the
/// real folder when the path so far exists (`link/..` is the parent of
/// the link's target, not the folder holding the link), else lexically.
/// Links in a path without `..` are kept as typed, so a job names what the
/// user named.
fn normalize(p: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for c in p.components() {
        match c {
            Component::CurDir => {}
            Component::ParentDir => {
                if let Ok(real) = std::fs::canonicalize(&out) {
                    out = real;
                }
                out.pop();
            }
            other => out.push(other),
        }
    }
    out
}

/// Everything needed to run (and re-run) a job. Logged in `JobSubmitted`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobSpec {
    pub src: Address,
    pub dst: Address,
    pub mode: Mode,
    /// Parallel copies; `None` means the engine default (8 x cores), and
    /// [`JobSpec::PARALLEL_AUTO`] (0) `--parallel auto`.
    pub parallel: Option<u32>,
    /// Block size for large Azure blobs; `None` means 8 MiB.
    #[serde(default)]
    pub block_size: Option<u64>,
    /// Azure to Azure: copy server-side (default) or stream through ferry.
    #[serde(default)]
    pub copy_method: CopyMode,
    /// A WebAssembly overwrite policy for blobs present at both ends; it
    /// replaces the mode's rule for those blobs.
    #[serde(default)]
    pub policy_plugin: Option<PluginRef>,
    /// What a plugin failure at `decide` does to that blob.
    #[serde(default)]
    pub plugin_failure: PluginFailure,
    /// Folders that must exist whenever the job runs: the roots of the
    /// local accounts it names. The spec holds resolved paths, so without
    /// this a share unmounted after submit was recreated and filled on
    /// the local disk by every queued run and scheduled fire.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub mounts: Vec<String>,
    /// Whether bytes read from a source that knows their MD5 (an Azure
    /// blob's Content-MD5) must match it before the copy is kept. Left out
    /// of the record when on, so older logs and older readers agree.
    #[serde(default, skip_serializing_if = "Md5Check::is_default")]
    pub check_md5: Md5Check,
}

/// A plugin pinned by path and content hash, so a replay decides the same way.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PluginRef {
    pub path: String,
    pub sha256: String,
    /// `--plugin-config key=value` pairs (recorded in the log: not for secrets).
    pub config: Vec<(String, String)>,
}

/// What a plugin failure at `decide` means for the blob.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum PluginFailure {
    /// The blob fails (`BlobFailed` with error kind `plugin`); the job goes on.
    #[default]
    Fail,
    /// The blob is skipped with reason `plugin-failed`.
    Skip,
}

impl FromStr for PluginFailure {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "fail" => Ok(PluginFailure::Fail),
            "skip" => Ok(PluginFailure::Skip),
            _ => Err(format!(
                "unknown plugin failure action {s:?}; use fail or skip"
            )),
        }
    }
}

/// How Azure-to-Azure copies move data.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum CopyMode {
    /// Put Block From URL: the data never crosses this machine.
    #[default]
    Server,
    /// Download and upload through ferry.
    Stream,
}

impl FromStr for CopyMode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "server" => Ok(CopyMode::Server),
            "stream" => Ok(CopyMode::Stream),
            _ => Err(format!("unknown copy method {s:?}; use server or stream")),
        }
    }
}

/// What a copy does with the source's MD5, where the source knows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Md5Check {
    /// Bytes that do not match fail the blob (`content-mismatch`) and the
    /// destination is left as it was.
    #[default]
    Fail,
    /// Not checked: for sources whose stored MD5s are known to be wrong.
    Off,
}

impl Md5Check {
    fn is_default(&self) -> bool {
        *self == Md5Check::Fail
    }
}

impl FromStr for Md5Check {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "fail" => Ok(Md5Check::Fail),
            "off" => Ok(Md5Check::Off),
            _ => Err(format!("unknown MD5 check {s:?}; use fail or off")),
        }
    }
}

impl JobSpec {
    /// `parallel` of a job submitted with `--parallel auto`. Zero copies
    /// was never a valid setting, so every log ferry ever wrote still
    /// decodes and means what it meant, without a schema change; a ferry
    /// from before auto that runs such a job copies with one worker.
    pub const PARALLEL_AUTO: u32 = 0;

    /// Whether the job adapts its parallel copies (`--parallel auto`).
    pub fn parallel_auto(&self) -> bool {
        self.parallel == Some(Self::PARALLEL_AUTO)
    }

    /// What decides for blobs present at both ends: the mode, or the
    /// policy plugin (by file name) that replaces it.
    pub fn decided_by(&self) -> String {
        match self.policy_file() {
            None => self.mode.to_string(),
            Some(file) => format!("policy {file}"),
        }
    }

    /// The policy plugin's file name, if the job has one.
    pub fn policy_file(&self) -> Option<Cow<'_, str>> {
        let p = self.policy_plugin.as_ref()?;
        Some(
            Path::new(&p.path)
                .file_name()
                .map_or(p.path.as_str().into(), |f| f.to_string_lossy()),
        )
    }

    /// The first end that is a container URL (its SAS is never stored).
    pub fn container_url(&self) -> Option<&str> {
        [&self.src, &self.dst].into_iter().find_map(|a| match a {
            Address::AzureUrl { url } => Some(url.as_str()),
            _ => None,
        })
    }

    /// Checks what can be checked before enqueueing, so a bad job fails at
    /// submit time with a clear message instead of in a worker later.
    pub fn validate(&self) -> Result<(), EngineError> {
        // The plugin replaces the mode's rule; any other mode would be
        // recorded and shown but not followed (never would overwrite).
        if self.policy_plugin.is_some() && self.mode != Mode::Incremental {
            return Err(EngineError::InvalidInput(format!(
                "--mode {} and --policy both decide what to do with blobs at both ends; give one",
                self.mode
            )));
        }
        // A request per few bytes: --block-size 1 took 10 minutes for 33
        // small files, and could not be stopped promptly.
        for m in &self.mounts {
            check_mount(m)?;
        }
        if self.block_size.is_some_and(|b| b < MIN_BLOCK_SIZE) {
            return Err(EngineError::InvalidInput(
                "--block-size must be at least 16KiB".into(),
            ));
        }
        // Azure's largest block; a blob up to the block size is also held
        // whole in memory per copy, so larger could never work anyway.
        if self.block_size.is_some_and(|b| b > MAX_BLOCK_SIZE) {
            return Err(EngineError::InvalidInput(
                "--block-size must be at most 4000MiB (Azure's largest block)".into(),
            ));
        }
        if self.src == self.dst {
            return Err(EngineError::InvalidInput(format!(
                "source and destination are the same ({}); choose another destination",
                self.src
            )));
        }
        // Prefixes of one container nest like folders: a destination inside
        // the source would be listed (and copied) again on every run.
        if self.src.contains(&self.dst) {
            return Err(EngineError::InvalidInput(format!(
                "destination {} is inside the source {}; choose a destination outside it",
                self.dst, self.src
            )));
        }
        if self.dst.contains(&self.src) {
            return Err(EngineError::InvalidInput(format!(
                "source {} is inside the destination {}; copying would write over the source",
                self.src, self.dst
            )));
        }
        // A local source is checked whatever the destination: a missing
        // folder or a file is bad input, not a job that fails.
        if let Some(src) = self.src.local_path() {
            check_local_source(src)?;
        }
        // A local destination is checked whatever the source (an Azure
        // download into a file path made a job that could only fail).
        if let Some(dst) = self.dst.local_path() {
            check_local_destination(dst)?;
        }
        let (Some(src), Some(dst)) = (self.src.local_path(), self.dst.local_path()) else {
            return Ok(());
        };
        let src_real = std::fs::canonicalize(src).map_err(|e| {
            EngineError::InvalidInput(format!("cannot resolve source {}: {e}", src.display()))
        })?;
        let dst_real = canonicalize_lenient(dst);
        if src_real == dst_real {
            return Err(EngineError::InvalidInput(format!(
                "source and destination are the same folder ({}); choose another destination",
                src_real.display()
            )));
        }
        if dst_real.starts_with(&src_real) {
            return Err(EngineError::InvalidInput(format!(
                "destination {} is inside the source {}; choose a destination outside it",
                dst.display(),
                src.display()
            )));
        }
        if src_real.starts_with(&dst_real) {
            return Err(EngineError::InvalidInput(format!(
                "source {} is inside the destination {}; copying would write over the source",
                src.display(),
                dst.display()
            )));
        }
        // The same folder under two paths (a bind mount): paths do not
        // show it, the folder's device and inode do. A destination seen
        // inside the source this way was copied into itself on every run.
        if folder_above(&dst_real, &src_real) {
            return Err(EngineError::InvalidInput(format!(
                "destination {} is inside the source {} (the same folder under another path, e.g. a bind mount); choose a destination outside it",
                dst.display(),
                src.display()
            )));
        }
        if folder_above(&src_real, &dst_real) {
            return Err(EngineError::InvalidInput(format!(
                "source {} is inside the destination {} (the same folder under another path, e.g. a bind mount); copying would write over the source",
                src.display(),
                dst.display()
            )));
        }
        Ok(())
    }
}

/// Whether `outer` (as a folder: device and inode) is `inner` or one of
/// the folders above it that exist.
fn folder_above(inner: &Path, outer: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    let Ok(o) = std::fs::metadata(outer) else {
        return false;
    };
    inner
        .ancestors()
        .filter_map(|a| std::fs::metadata(a).ok())
        .any(|m| m.dev() == o.dev() && m.ino() == o.ino())
}

/// A local account's folder must be there: an unmounted share's copies
/// would fill the local disk, and a backup from it would be empty.
pub(crate) fn check_mount(root: &str) -> Result<(), EngineError> {
    match std::fs::metadata(root) {
        Ok(m) if m.is_dir() => Ok(()),
        Ok(_) => Err(EngineError::InvalidInput(format!(
            "the local account folder {root} is not a folder; fix local = in the config"
        ))),
        Err(_) => Err(EngineError::InvalidInput(format!(
            "the local account folder {root} does not exist (not mounted?); mount or create it, or fix local = in the config"
        ))),
    }
}

/// What a local destination must not be: a file, below a file, or a link
/// to nothing.
fn check_local_destination(dst: &Path) -> Result<(), EngineError> {
    let why = match std::fs::metadata(dst) {
        // A dangling link: every file would fail to create the folder.
        Err(e)
            if e.kind() == std::io::ErrorKind::NotFound
                && std::fs::symlink_metadata(dst).is_ok_and(|m| m.file_type().is_symlink()) =>
        {
            "is a symbolic link to a missing target; create its target or remove the link"
        }
        Ok(m) if !m.is_dir() => "exists and is not a folder; choose a folder path",
        // A file stands where one of its parent folders must be.
        Err(e) if e.kind() == std::io::ErrorKind::NotADirectory => {
            "is below a file, not a folder; choose a folder path"
        }
        _ => return Ok(()),
    };
    Err(EngineError::InvalidInput(format!(
        "destination {} {why}",
        dst.display()
    )))
}

/// A local source must be an existing folder.
fn check_local_source(src: &Path) -> Result<(), EngineError> {
    let src_meta = std::fs::metadata(src).map_err(|e| {
        EngineError::InvalidInput(match e.kind() {
            std::io::ErrorKind::NotFound => {
                format!("source {} does not exist; check the path", src.display())
            }
            _ => format!("cannot read source {}: {e}", src.display()),
        })
    })?;
    if !src_meta.is_dir() {
        return Err(EngineError::InvalidInput(format!(
            "source {} is not a folder; ferry copies folders (give the folder that holds it)",
            src.display()
        )));
    }
    Ok(())
}

/// Canonicalizes the longest existing ancestor and appends the rest, so a
/// destination that does not exist yet still compares correctly to the source.
pub(crate) fn canonicalize_lenient(p: &Path) -> PathBuf {
    let mut rest = Vec::new();
    let mut cur = p.to_path_buf();
    loop {
        if let Ok(real) = std::fs::canonicalize(&cur) {
            let mut out = real;
            for part in rest.iter().rev() {
                out.push(part);
            }
            return out;
        }
        match (cur.file_name().map(|n| n.to_os_string()), cur.parent()) {
            (Some(name), Some(parent)) => {
                rest.push(name);
                cur = parent.to_path_buf();
            }
            _ => return p.to_path_buf(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mode_parses_and_displays_round_trip() {
        for m in [
            Mode::Full,
            Mode::Incremental,
            Mode::Never,
            Mode::IfDifferent,
        ] {
            assert_eq!(m.to_string().parse::<Mode>().unwrap(), m);
        }
        assert!("sometimes".parse::<Mode>().is_err());
    }

    #[test]
    fn account_looking_address_is_refused_with_a_hint() {
        let err = Address::parse("prod:photos/2024", &Accounts::default())
            .unwrap_err()
            .to_string();
        assert!(err.contains("unknown account \"prod\""), "{err}");
    }

    #[test]
    fn container_urls_lose_their_sas_and_account_addresses_are_checked() {
        let p = Address::parse(
            "http://127.0.0.1:10000/devstoreaccount1/photos/2024?sv=1&sig=SECRET",
            &Accounts::default(),
        )
        .unwrap();
        assert_eq!(
            p.address,
            Address::AzureUrl {
                url: "http://127.0.0.1:10000/devstoreaccount1/photos/2024".into()
            }
        );
        assert_eq!(p.sas.as_deref(), Some("sv=1&sig=SECRET"));
        assert!(!p.address.to_string().contains("SECRET"));

        let dir = tempfile::tempdir().unwrap();
        let cfg = dir.path().join("ferry.toml");
        std::fs::write(
            &cfg,
            "[accounts.dev]\nconnection_string = \"UseDevelopmentStorage=true\"\n",
        )
        .unwrap();
        let accounts = Accounts::load(Some(&cfg), &|_| None).unwrap();
        let p = Address::parse("dev:photos/2024/", &accounts).unwrap();
        assert_eq!(
            p.address,
            Address::Azure {
                account: "dev".into(),
                container: "photos".into(),
                prefix: "2024".into()
            }
        );
        for bad in ["dev:Photos", "dev:ab", "dev:a--b"] {
            let err = Address::parse(bad, &accounts).unwrap_err().to_string();
            assert!(err.contains("invalid container name"), "{bad}: {err}");
        }
    }

    #[test]
    fn azure_prefixes_nest_like_folders() {
        let az = |c: &str, p: &str| Address::Azure {
            account: "dev".into(),
            container: c.into(),
            prefix: p.into(),
        };
        let spec = |src: Address, dst: Address| JobSpec {
            src,
            dst,
            mode: Mode::Full,
            parallel: None,
            block_size: None,
            copy_method: CopyMode::Server,
            policy_plugin: None,
            plugin_failure: Default::default(),
            mounts: Vec::new(),
            check_md5: Default::default(),
        };
        let err = |s: JobSpec| s.validate().unwrap_err().to_string();
        assert!(err(spec(az("c", ""), az("c", "backup"))).contains("inside the source"));
        assert!(err(spec(az("c", "a"), az("c", "a/b"))).contains("inside the source"));
        assert!(err(spec(az("c", "a/b"), az("c", "a"))).contains("inside the destination"));
        spec(az("c", "ab"), az("c", "abc")).validate().unwrap();
        spec(az("c", "a"), az("d", "a/b")).validate().unwrap();
        let url = |u: &str| Address::AzureUrl { url: u.into() };
        assert!(err(spec(url("http://h/acct/c"), url("http://h/acct/c/x"))).contains("inside"));
        spec(url("http://h/acct/c"), url("http://h/acct/cc"))
            .validate()
            .unwrap();
    }

    #[test]
    fn expired_sas_tokens_are_refused_before_any_request() {
        let no = Accounts::default();
        let err = Address::parse(
            "https://a.blob.core.windows.net/c?sv=2020-12-06&se=2020-01-01T00%3A00%3A00Z&sig=SECRET",
            &no,
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("expired at 2020-01-01 00:00:00 UTC"), "{err}");
        assert!(!err.contains("SECRET"), "{err}");
        for se in ["2020-01-01", "2020-01-01T10:00Z"] {
            assert!(
                check_sas_expiry("u", &format!("se={se}&sig=x")).is_err(),
                "{se}"
            );
        }
        for ok in ["se=2999-01-01T00:00:00Z&sig=x", "sig=x", "se=garbage&sig=x"] {
            check_sas_expiry("u", ok).unwrap();
        }
    }

    #[test]
    fn dot_dot_follows_links_as_the_kernel_does() {
        let d = tempfile::tempdir().unwrap();
        let real = d.path().canonicalize().unwrap();
        std::fs::create_dir_all(real.join("a/b")).unwrap();
        std::fs::create_dir_all(real.join("a/c")).unwrap();
        std::os::unix::fs::symlink("a/b", real.join("L")).unwrap();
        let no = Accounts::default();
        let parsed = |p: PathBuf| Address::parse(p.to_str().unwrap(), &no).unwrap().address;
        assert_eq!(
            parsed(real.join("L/../c")),
            Address::Local {
                path: real.join("a/c").to_string_lossy().into()
            }
        );
        // Without `..` the link stays as typed; missing parts resolve as text.
        assert_eq!(
            parsed(real.join("L/./x")),
            Address::Local {
                path: real.join("L/x").to_string_lossy().into()
            }
        );
        assert_eq!(
            parsed(real.join("new/../n")),
            Address::Local {
                path: real.join("n").to_string_lossy().into()
            }
        );
    }

    #[test]
    fn account_addresses_cannot_climb_out_with_dot_dot() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = dir.path().join("ferry.toml");
        let root = dir.path().join("nasroot");
        std::fs::write(
            &cfg,
            format!(
                "[accounts.nas]\nlocal = {:?}\n[accounts.dev]\nconnection_string = \"UseDevelopmentStorage=true\"\n",
                root.to_str().unwrap()
            ),
        )
        .unwrap();
        let accounts = Accounts::load(Some(&cfg), &|_| None).unwrap();
        // Its folder missing (a share not mounted), nothing under it is used.
        let err = Address::parse("nas:photos", &accounts)
            .unwrap_err()
            .to_string();
        assert!(err.contains("does not exist (not mounted?)"), "{err}");
        // Looking up its history needs no folder: the lines are in the log.
        let lookup = Address::parse_for_lookup("nas:photos", &accounts).unwrap();
        assert_eq!(
            lookup.address.local_path(),
            Some(root.join("photos").as_path())
        );
        std::fs::create_dir(&root).unwrap();
        for bad in [
            "nas:../../escaped",
            "nas:a/../../b",
            "nas:./a",
            "dev:c1/x/../y",
            "dev:c1/..",
        ] {
            let err = Address::parse(bad, &accounts).unwrap_err().to_string();
            assert!(err.contains("'..' are refused"), "{bad}: {err}");
        }
        let ok = Address::parse("nas:photos/2024", &accounts).unwrap();
        // Its folder goes with it, to be checked whenever a job runs.
        assert_eq!(ok.root.as_deref(), root.to_str());
        assert_eq!(
            ok.address.local_path(),
            Some(root.join("photos/2024").as_path())
        );
    }

    /// A full copy between two local folders.
    fn folders(src: &Path, dst: &Path) -> JobSpec {
        let no = Accounts::default();
        JobSpec {
            src: Address::parse(src.to_str().unwrap(), &no).unwrap().address,
            dst: Address::parse(dst.to_str().unwrap(), &no).unwrap().address,
            mode: Mode::Full,
            parallel: None,
            block_size: None,
            copy_method: CopyMode::Server,
            policy_plugin: None,
            plugin_failure: Default::default(),
            mounts: Vec::new(),
            check_md5: Default::default(),
        }
    }

    #[test]
    fn a_destination_inside_the_source_through_a_bind_mount_is_refused() {
        let d = tempfile::tempdir().unwrap();
        let (src, view) = (d.path().join("src"), d.path().join("view"));
        std::fs::create_dir_all(src.join("zz")).unwrap();
        std::fs::create_dir(&view).unwrap();
        let mounted = std::process::Command::new("mount")
            .arg("--bind")
            .arg(&src)
            .arg(&view)
            .stderr(std::process::Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if !mounted {
            eprintln!("skipped: bind mounts need root");
            return;
        }
        let inside = folders(&src, &view.join("zz/in")).validate();
        let outside = folders(&view.join("zz"), &src).validate();
        let _ = std::process::Command::new("umount").arg(&view).status();
        let inside = inside.unwrap_err().to_string();
        assert!(
            inside.contains("another path, e.g. a bind mount"),
            "{inside}"
        );
        let outside = outside.unwrap_err().to_string();
        assert!(outside.contains("inside the destination"), "{outside}");
    }

    #[test]
    fn destination_inside_source_is_refused() {
        let d = tempfile::tempdir().unwrap();
        let src = d.path().join("src");
        std::fs::create_dir(&src).unwrap();
        let spec = |dst: &Path| folders(&src, dst);
        let inside = spec(&src.join("new/deeper")).validate().unwrap_err();
        assert!(inside.to_string().contains("inside the source"), "{inside}");
        let same = spec(&src).validate().unwrap_err();
        assert!(same.to_string().contains("are the same"), "{same}");
        let parent = spec(d.path()).validate().unwrap_err();
        assert!(
            parent.to_string().contains("inside the destination"),
            "{parent}"
        );
        spec(&d.path().join("elsewhere")).validate().unwrap();
    }
}
