//! The open-jobs index: one empty key per job that is not settled (not
//! succeeded, cancelled or pruned), kept by the log writer with the job's
//! summary.
//!
//! Why: the daemon looks at the jobs every tick (5 s) and `ferry run` for
//! the next queued one. Reading every summary made each look cost ~8 µs
//! per job ever run, growing with the history (5,000 jobs: ~40 ms a tick).
//! Settled jobs never need the daemon again; the index lists the rest.

use super::keys;
use crate::job::JobId;
use crate::projection::{JobState, JobSummary};

/// Whether a job with this summary may still need running: queued,
/// running, interrupted, paused, or ended with failures (a daemon may
/// retry it).
pub fn is_open(s: &JobSummary) -> bool {
    !s.pruned && !matches!(s.state, JobState::Succeeded | JobState::Cancelled)
}

/// Puts the job's index key in or out of `batch` as its summary says.
pub(super) fn stage(batch: &mut sled::Batch, job: JobId, summary: &JobSummary) {
    if job == JobId::CONTROL || job == keys::INDEX {
        return;
    }
    if is_open(summary) {
        batch.insert(keys::open_job(job).as_slice(), b"".as_slice());
    } else {
        batch.remove(keys::open_job(job).as_slice());
    }
}

/// Builds the index from the summaries if the log has none yet.
pub(super) fn prepare(db: &sled::Db) -> Result<(), String> {
    let err = |e: sled::Error| e.to_string();
    if db.get(keys::open_marker()).map_err(err)?.is_some() {
        return Ok(());
    }
    let mut batch = sled::Batch::default();
    for job in super::scan::job_ids(db) {
        let job = job?;
        if let Some(v) = db.get(keys::summary(job)).map_err(err)? {
            let summary: JobSummary =
                rmp_serde::from_slice(&v).map_err(|e| format!("undecodable summary: {e}"))?;
            stage(&mut batch, job, &summary);
        }
    }
    batch.insert(keys::open_marker().as_slice(), b"".as_slice());
    db.apply_batch(batch).map_err(err)?;
    db.flush().map_err(err)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn summary(state: JobState, pruned: bool) -> JobSummary {
        JobSummary {
            state,
            pruned,
            ..JobSummary::new(JobId::new())
        }
    }

    #[test]
    fn given_a_log_from_before_the_index_when_prepared_then_exactly_the_unsettled_jobs_are_listed()
    {
        let dir = tempfile::tempdir().unwrap();
        let db = sled::Config::new().path(dir.path()).open().unwrap();
        let jobs = [
            (summary(JobState::Queued, false), true),
            (summary(JobState::Succeeded, false), false),
            (summary(JobState::Failed, false), true),
            (summary(JobState::Failed, true), false),
            (summary(JobState::Cancelled, false), false),
            (summary(JobState::Paused, false), true),
        ];
        for (s, _) in &jobs {
            let v = rmp_serde::to_vec_named(s).unwrap();
            db.insert(keys::summary(s.id), v).unwrap();
        }
        prepare(&db).unwrap();
        for (s, open) in &jobs {
            assert_eq!(
                db.get(keys::open_job(s.id)).unwrap().is_some(),
                *open,
                "{:?}",
                s.state
            );
        }
        // Built once: a key removed afterwards is not put back.
        db.remove(keys::open_job(jobs[0].0.id)).unwrap();
        prepare(&db).unwrap();
        assert!(db.get(keys::open_job(jobs[0].0.id)).unwrap().is_none());
    }
}
