//! ferry's engine: an event-sourced job engine for copying blob storage.
//!
//! The event log (in sled) is the only source of truth. Job status, checkpoints
//! and reports are projections folded from it; a killed job is resumed by
//! replaying the log and copying only what is not durably done.
//!
//! The engine never prints; callers (the `ferry` CLI) decide what to show.

pub mod archive_sum;
pub mod audit;
pub mod config;
pub mod daemon;
mod engine;
pub mod error;
pub mod event;
pub mod job;
mod jobctl;
pub mod log;
mod newest;
pub mod plugin;
mod plugin_tools;
pub mod policy;
pub mod projection;
pub mod report;
pub mod retry;
pub mod schedule;
pub mod store;
#[doc(hidden)]
pub mod testkit;
pub mod transfer;
mod verify;

pub use engine::{default_parallelism, Engine, RunOptions, DAEMON_WORKER_SUFFIX};
pub use error::EngineError;
pub use event::{Event, EventRecord};
pub use job::{Address, JobId, JobSpec, Mode};
pub use jobctl::actor;
pub use newest::HistoryLines;
pub use plugin_tools::PluginTools;
pub use projection::{JobState, JobSummary};
pub use transfer::{Progress, RunReport};
pub use verify::Verification;
