//! Exit codes. Documented in README.md ("Exit codes"); keep the two in step.

use ferry_engine::EngineError;

/// Everything worked.
pub const OK: u8 = 0;
/// The job ran to the end but some blobs failed; `ferry replay JOB` retries them.
pub const BLOBS_FAILED: u8 = 1;
/// Bad command line or input (missing source, bad address, bad option).
pub const USAGE: u8 = 2;
/// Another ferry process holds the state dir.
pub const STATE_LOCKED: u8 = 3;
/// The state dir is corrupt, unreadable or unwritable.
pub const STATE_BROKEN: u8 = 4;
/// No such job.
pub const UNKNOWN_JOB: u8 = 5;
/// The job failed as a whole (e.g. its source vanished), or the log could
/// not be written.
pub const JOB_FAILED: u8 = 6;
/// The job is in a state that does not allow the action (e.g. replay of a
/// job that already succeeded).
pub const WRONG_STATE: u8 = 7;
/// `verify-log` found a projection that differs from the replayed log.
pub const VERIFY_FAILED: u8 = 8;
/// A plugin could not be loaded, refused its configuration, or changed
/// since the job was submitted.
pub const PLUGIN: u8 = 9;
/// Stopped by SIGINT/SIGTERM; `ferry replay JOB` continues the job.
pub const INTERRUPTED: u8 = 130;

pub fn code_for(e: &anyhow::Error) -> u8 {
    let Some(engine) = e.chain().find_map(|c| c.downcast_ref::<EngineError>()) else {
        return USAGE;
    };
    match engine {
        EngineError::StateLocked { .. } => STATE_LOCKED,
        EngineError::StateCorrupt { .. } | EngineError::StateIo { .. } => STATE_BROKEN,
        EngineError::LogWrite(_) => JOB_FAILED,
        EngineError::UnknownJob(_) | EngineError::AmbiguousJob(_) => UNKNOWN_JOB,
        EngineError::InvalidInput(_) => USAGE,
        EngineError::WrongState { .. } => WRONG_STATE,
        EngineError::Store(_) => JOB_FAILED,
        EngineError::Plugin(_) => PLUGIN,
    }
}
