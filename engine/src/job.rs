//! Jobs: identity, spec and the checks a spec must pass before it is enqueued.

use std::fmt;
use std::path::{Component, Path, PathBuf};
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::error::EngineError;

/// A job's id: a UUIDv7, so ids sort by submission time and so do the log keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct JobId(pub Uuid);

impl JobId {
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

/// Where blobs live. Stored in the log, so it must never hold a secret.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Address {
    /// A folder on this machine, as an absolute path.
    Local { path: String },
    /// An in-process store (tests and benchmarks).
    Memory { name: String },
}

impl fmt::Display for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Address::Local { path } => f.write_str(path),
            Address::Memory { name } => write!(f, "memory:{name}"),
        }
    }
}

impl Address {
    /// Parses what a user typed. Plain paths are local folders; `name:rest`
    /// where `name` looks like an account is an account address, which needs a
    /// configured account.
    pub fn parse(input: &str) -> Result<Address, EngineError> {
        if input.is_empty() {
            return Err(EngineError::InvalidInput(
                "empty address; give a folder path".into(),
            ));
        }
        if let Some((account, _)) = input.split_once(':') {
            let looks_like_account = !account.is_empty()
                && !account.contains('/')
                && account
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
            if looks_like_account && !Path::new(input).exists() {
                return Err(EngineError::InvalidInput(format!(
                    "unknown account {account:?} in {input:?}; accounts are not configured yet (write ./{input} for a local path)"
                )));
            }
        }
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
        Ok(Address::Local {
            path: path.to_string(),
        })
    }

    pub fn local_path(&self) -> Option<&Path> {
        match self {
            Address::Local { path } => Some(Path::new(path)),
            Address::Memory { .. } => None,
        }
    }
}

/// Removes `.` and resolves `..` lexically (no symlinks followed).
fn normalize(p: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for c in p.components() {
        match c {
            Component::CurDir => {}
            Component::ParentDir => {
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
    /// Parallel copies; `None` means the engine default (8 x cores).
    pub parallel: Option<u32>,
}

impl JobSpec {
    /// Checks what can be checked before enqueueing, so a bad job fails at
    /// submit time with a clear message instead of in a worker later.
    pub fn validate(&self) -> Result<(), EngineError> {
        if self.parallel == Some(0) {
            return Err(EngineError::InvalidInput(
                "--parallel must be at least 1".into(),
            ));
        }
        let (Some(src), Some(dst)) = (self.src.local_path(), self.dst.local_path()) else {
            return Ok(());
        };
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
        if let Ok(m) = std::fs::metadata(dst) {
            if !m.is_dir() {
                return Err(EngineError::InvalidInput(format!(
                    "destination {} exists and is not a folder; choose a folder path",
                    dst.display()
                )));
            }
        }
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
        Ok(())
    }
}

/// Canonicalizes the longest existing ancestor and appends the rest, so a
/// destination that does not exist yet still compares correctly to the source.
fn canonicalize_lenient(p: &Path) -> PathBuf {
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
        let err = Address::parse("prod:photos/2024").unwrap_err().to_string();
        assert!(err.contains("unknown account \"prod\""), "{err}");
    }

    #[test]
    fn destination_inside_source_is_refused() {
        let d = tempfile::tempdir().unwrap();
        let src = d.path().join("src");
        std::fs::create_dir(&src).unwrap();
        let spec = |dst: &Path| JobSpec {
            src: Address::parse(src.to_str().unwrap()).unwrap(),
            dst: Address::parse(dst.to_str().unwrap()).unwrap(),
            mode: Mode::Full,
            parallel: None,
        };
        let inside = spec(&src.join("new/deeper")).validate().unwrap_err();
        assert!(inside.to_string().contains("inside the source"), "{inside}");
        let same = spec(&src).validate().unwrap_err();
        assert!(same.to_string().contains("same folder"), "{same}");
        let parent = spec(d.path()).validate().unwrap_err();
        assert!(
            parent.to_string().contains("inside the destination"),
            "{parent}"
        );
        spec(&d.path().join("elsewhere")).validate().unwrap();
    }
}
