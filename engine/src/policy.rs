//! Built-in overwrite policies: what to do with a blob given the destination's
//! copy of it (if any). Pure functions of listing metadata.

use crate::event::{CopyReason, SkipReason};
use crate::job::Mode;
use crate::store::BlobMeta;
use chrono::{DateTime, Utc};

/// What the planner does with one listed blob.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    Copy(CopyReason),
    Skip(SkipReason),
    /// Same size and no MD5 on both sides: a worker must compare content.
    CompareContent,
}

/// How [`decide`] compares times.
#[derive(Debug, Clone, Copy)]
pub struct Times {
    /// One side keeps times only to the second (Azure's last-modified), so
    /// times are compared at that precision; otherwise a file written and
    /// uploaded within the same second would look newer than its upload
    /// forever.
    pub whole_seconds: bool,
    /// Destination times after this are not taken as newer than the
    /// source: a copy dated 2099 (a wrong clock, a camera's firmware) kept
    /// every later edit of its source from being copied, since each edit's
    /// time was older.
    pub trusted_until: DateTime<Utc>,
}

impl Times {
    /// A day past `now`: beyond any clock skew between machines that keep
    /// time, so an upload-time destination (Azure's Last-Modified, later
    /// than its source) is never doubted.
    pub fn at(now: DateTime<Utc>, whole_seconds: bool) -> Times {
        Times {
            whole_seconds,
            trusted_until: now + chrono::Duration::days(1),
        }
    }
}

/// Decides from listings alone; asked for every source blob.
pub fn decide(mode: Mode, src: &BlobMeta, dst: Option<&BlobMeta>, times: Times) -> Decision {
    let Some(dst) = dst else {
        return Decision::Copy(CopyReason::New);
    };
    match mode {
        Mode::Full => Decision::Copy(CopyReason::Overwrite),
        Mode::Never => Decision::Skip(SkipReason::Exists),
        Mode::Incremental => {
            let order = if times.whole_seconds {
                src.modified.timestamp().cmp(&dst.modified.timestamp())
            } else {
                src.modified.cmp(&dst.modified)
            };
            match order {
                std::cmp::Ordering::Greater => Decision::Copy(CopyReason::Newer),
                // The same time, at the precision both keep, and another
                // size: changed since (a file appended to within the second
                // of its upload, whose copy stayed short forever).
                std::cmp::Ordering::Equal if src.size != dst.size => {
                    Decision::Copy(CopyReason::Different)
                }
                // A destination dated in the future: an older source time
                // is a change, not an older version.
                std::cmp::Ordering::Less if dst.modified > times.trusted_until => {
                    Decision::Copy(CopyReason::Different)
                }
                // A newer destination is never replaced.
                _ => Decision::Skip(SkipReason::NotNewer),
            }
        }
        Mode::IfDifferent => {
            if src.size != dst.size {
                Decision::Copy(CopyReason::Different)
            } else {
                match (src.md5, dst.md5) {
                    (Some(a), Some(b)) if a == b => Decision::Skip(SkipReason::Identical),
                    (Some(_), Some(_)) => Decision::Copy(CopyReason::Different),
                    _ => Decision::CompareContent,
                }
            }
        }
    }
}

/// Whether `mode` needs the destination listing. Every mode does: even
/// full mode lists it, so the log says `new` or `overwrite` truthfully.
pub fn needs_destination(_mode: Mode) -> bool {
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::Duration;

    fn times(whole_seconds: bool) -> Times {
        Times::at(Utc::now(), whole_seconds)
    }

    fn meta(size: u64, age_s: i64, md5: Option<[u8; 16]>) -> BlobMeta {
        BlobMeta {
            name: "a".into(),
            size,
            modified: Utc::now() - Duration::seconds(age_s),
            etag: "e".into(),
            md5,
            props: None,
            mode: None,
        }
    }

    #[test]
    fn incremental_copies_a_size_change_within_the_same_second_but_not_onto_a_newer_copy() {
        let t = chrono::DateTime::parse_from_rfc3339("2026-12-06T10:00:00.300Z")
            .unwrap()
            .with_timezone(&Utc);
        let at = |ms: i64, size: u64| BlobMeta {
            modified: t + Duration::milliseconds(ms),
            ..meta(size, 0, None)
        };
        // Uploaded at .300 (Azure keeps 10:00:00), appended at .700.
        let (uploaded, appended) = (at(0, 3), at(400, 11));
        assert_eq!(
            decide(Mode::Incremental, &appended, Some(&uploaded), times(true)),
            Decision::Copy(CopyReason::Different)
        );
        // Same size in that second: taken as the copy (as before).
        assert_eq!(
            decide(Mode::Incremental, &at(400, 3), Some(&uploaded), times(true)),
            Decision::Skip(SkipReason::NotNewer)
        );
        // Exact times: the same mtime and another size is a change; a newer
        // destination of another size stays.
        assert_eq!(
            decide(Mode::Incremental, &at(0, 5), Some(&at(0, 3)), times(false)),
            Decision::Copy(CopyReason::Different)
        );
        assert_eq!(
            decide(
                Mode::Incremental,
                &at(0, 5),
                Some(&at(2000, 3)),
                times(false)
            ),
            Decision::Skip(SkipReason::NotNewer)
        );
    }

    #[test]
    fn a_destination_dated_in_the_future_does_not_hide_an_edit() {
        // Given a copy kept with its source's time of 2099 (a wrong clock)
        let future = meta(2, -(80 * 365 * 86_400), None);
        // when the source is edited (same size, dated now)
        let edited = meta(2, 0, None);
        // then incremental copies it,
        assert_eq!(
            decide(Mode::Incremental, &edited, Some(&future), times(false)),
            Decision::Copy(CopyReason::Different)
        );
        // and an unchanged source of that time stays skipped.
        assert_eq!(
            decide(Mode::Incremental, &future, Some(&future), times(true)),
            Decision::Skip(SkipReason::NotNewer)
        );
        // A destination an hour ahead (clock skew, an upload time) is
        // still taken as newer.
        assert_eq!(
            decide(
                Mode::Incremental,
                &edited,
                Some(&meta(2, -3600, None)),
                times(true)
            ),
            Decision::Skip(SkipReason::NotNewer)
        );
    }

    #[test]
    fn each_mode_decides_from_listing_metadata() {
        let old = meta(1, 100, None);
        let new = meta(1, 0, None);
        assert_eq!(
            decide(Mode::Incremental, &new, None, times(false)),
            Decision::Copy(CopyReason::New)
        );
        assert_eq!(
            decide(Mode::Incremental, &new, Some(&old), times(false)),
            Decision::Copy(CopyReason::Newer)
        );
        assert_eq!(
            decide(Mode::Incremental, &old, Some(&new), times(false)),
            Decision::Skip(SkipReason::NotNewer)
        );
        assert_eq!(
            decide(Mode::Full, &old, Some(&new), times(false)),
            Decision::Copy(CopyReason::Overwrite)
        );
        assert_eq!(
            decide(Mode::Never, &new, Some(&old), times(false)),
            Decision::Skip(SkipReason::Exists)
        );
        assert_eq!(
            decide(
                Mode::IfDifferent,
                &meta(2, 0, None),
                Some(&old),
                times(false)
            ),
            Decision::Copy(CopyReason::Different)
        );
        assert_eq!(
            decide(Mode::IfDifferent, &new, Some(&old), times(false)),
            Decision::CompareContent
        );
        let (a, b) = (meta(1, 0, Some([1; 16])), meta(1, 0, Some([1; 16])));
        assert_eq!(
            decide(Mode::IfDifferent, &a, Some(&b), times(false)),
            Decision::Skip(SkipReason::Identical)
        );
        let c = meta(1, 0, Some([2; 16]));
        assert_eq!(
            decide(Mode::IfDifferent, &a, Some(&c), times(false)),
            Decision::Copy(CopyReason::Different)
        );
    }
}
