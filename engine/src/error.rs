//! The engine's error type. Each variant says what the caller can do about it;
//! the CLI maps variants to exit codes.

use std::path::PathBuf;

use crate::store::StoreError;

/// Everything an engine call can fail with.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// Another process holds the state dir; wait for it or stop it.
    #[error("state dir {} is in use by another ferry process ({owner}); wait for it to finish or stop it", path.display())]
    StateLocked { path: PathBuf, owner: String },

    /// The state dir cannot be read as a ferry log; restore it or use another one.
    #[error("state dir {} is corrupt or unreadable ({detail}); restore it from a backup or use another --state dir", path.display())]
    StateCorrupt { path: PathBuf, detail: String },

    /// The state dir could not be created or opened (permissions, disk).
    // The cause is in the message, so it is not also a `source` (error
    // chains would print it twice).
    #[error("cannot use state dir {}: {cause}{}", path.display(), state_io_advice(cause))]
    StateIo {
        path: PathBuf,
        cause: std::io::Error,
    },

    /// Writing to the event log failed (disk full, I/O error); nothing after
    /// the last acknowledged event is durable.
    #[error(
        "event log write failed: {0}; free space or fix the state dir, then run the command again (a job it stopped resumes with `ferry replay JOB`)"
    )]
    LogWrite(String),

    /// No job has this id (or prefix).
    #[error("no job matches {0:?}; list jobs with `ferry jobs`")]
    UnknownJob(String),

    /// A job id prefix matched several jobs.
    #[error("job id prefix {0:?} is ambiguous; give more characters")]
    AmbiguousJob(String),

    /// A long listing (`history` without a limit) could not be sorted in
    /// temporary files (disk full, permissions); free space in the temp
    /// dir, point TMPDIR elsewhere, or ask for fewer lines.
    // The cause is in the message, as for `StateIo`.
    #[error("cannot sort the lines in temporary files under {} ({cause}); set TMPDIR to a writable folder with room, or use --limit", dir.display())]
    TempSpace { dir: PathBuf, cause: std::io::Error },

    /// The job spec is invalid (addresses, options); fix the input.
    #[error("{0}")]
    InvalidInput(String),

    /// The job is in a state that does not allow this action.
    #[error("job {job}: {why}")]
    WrongState { job: String, why: String },

    /// A store failed in a way that stops the whole job (e.g. the source root vanished).
    #[error(transparent)]
    Store(#[from] StoreError),

    /// A plugin could not be loaded, refused its configuration, or changed.
    #[error(transparent)]
    Plugin(#[from] crate::plugin::PluginError),
}

impl EngineError {
    pub(crate) fn corrupt(path: &std::path::Path, detail: impl std::fmt::Display) -> Self {
        EngineError::StateCorrupt {
            path: path.to_path_buf(),
            detail: detail.to_string(),
        }
    }
}

/// What to do about a state dir that cannot be used, by cause: a cause of
/// kind `InvalidInput` already says it.
fn state_io_advice(cause: &std::io::Error) -> &'static str {
    match cause.kind() {
        std::io::ErrorKind::InvalidInput => "",
        std::io::ErrorKind::PermissionDenied | std::io::ErrorKind::ReadOnlyFilesystem => {
            "; fix its permissions, then run the command again"
        }
        std::io::ErrorKind::StorageFull | std::io::ErrorKind::QuotaExceeded => {
            "; free space, then run the command again"
        }
        _ => "; free space or fix its permissions, then run the command again",
    }
}
