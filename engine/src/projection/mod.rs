//! Projections: pure folds over event records (no I/O). The log writer keeps
//! cached copies of them in sled, updated in the same batch as their events;
//! `verify` checks the cache against a fresh fold.

mod checkpoint;
pub mod history;
mod summary;

pub use checkpoint::{BlobState, BlobStatus, Checkpoint};
pub use history::{History, HistoryEntry, HistoryLine, Side};
pub use summary::{AttemptSummary, JobState, JobSummary};
