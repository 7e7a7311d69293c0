use chrono::TimeZone;

use super::*;
use crate::projection::BlobStatus;

/// `n` lines at times shuffled (several share a second, so job, seq and
/// side break ties), some with the optional fields the spill must keep.
fn lines(n: u64) -> Vec<HistoryLine> {
    let jobs = [JobId::new(), JobId::new(), JobId::new()];
    let mut rng = fastrand::Rng::with_seed(7);
    (0..n)
        .map(|i| HistoryLine {
            address: format!("/src/d{}/b{i:07}", i % 13),
            side: if i % 3 == 0 {
                Side::Destination
            } else {
                Side::Source
            },
            job: jobs[(i % 3) as usize],
            seq: i,
            entry: HistoryEntry {
                status: if i % 5 == 0 {
                    BlobStatus::Skipped
                } else {
                    BlobStatus::Copied
                },
                reason: (i % 5 == 0).then(|| "not-newer".to_string()),
                error_kind: None,
                message: (i % 7 == 0).then(|| format!("note {i}")),
                etag: (i % 2 == 0).then(|| format!("0x{i:x}")),
                attempt: (i % 4) as u32 + 1,
                at: Utc
                    .timestamp_opt(1_700_000_000 + rng.i64(0..(n as i64 / 4 + 1)), 0)
                    .unwrap(),
            },
        })
        .collect()
}

fn newest_first(mut all: Vec<HistoryLine>) -> Vec<HistoryLine> {
    all.sort_by_key(|l| Reverse(key(l)));
    all
}

fn gather(all: &[HistoryLine], limit: Option<usize>) -> HistoryLines {
    let mut newest = Newest::new(limit);
    for l in all {
        newest.offer(key(l), || l.clone()).unwrap();
    }
    newest.into_lines().unwrap()
}

#[test]
fn given_fewer_lines_than_a_run_then_they_come_back_newest_first_from_memory() {
    let all = lines(1000);
    let got = gather(&all, None);
    assert!(matches!(got.lines, Lines::Encoded(_)));
    assert_eq!(got.len(), 1000);
    let got: Vec<_> = got.map(Result::unwrap).collect();
    assert_eq!(got, newest_first(all));
}

#[test]
fn given_more_lines_than_a_run_then_spilled_runs_merge_back_newest_first_and_whole() {
    // Three full runs and a partial one.
    let all = lines(3 * RUN_LINES as u64 + 1234);
    let got = gather(&all, None);
    assert!(matches!(&got.lines, Lines::Merged(m) if m.runs.len() == 4));
    assert_eq!(got.len(), all.len() as u64);
    let got: Vec<_> = got.map(Result::unwrap).collect();
    // Every field back as it went in (etag, reason, message, attempt, side).
    assert_eq!(got, newest_first(all));
}

#[test]
fn given_more_runs_than_may_stay_open_then_they_are_merged_into_one_first() {
    let mut newest = Newest::new(None);
    let all = lines(5000);
    // Spill after every 10 lines by hand: 500 runs.
    for chunk in all.chunks(10) {
        for l in chunk {
            newest.offer(key(l), || l.clone()).unwrap();
        }
        newest.spill().unwrap();
        assert!(newest.spilled.len() <= MAX_RUNS + 1);
    }
    let got = newest.into_lines().unwrap();
    assert!(matches!(&got.lines, Lines::Merged(m) if m.runs.len() < MAX_RUNS));
    let got: Vec<_> = got.map(Result::unwrap).collect();
    assert_eq!(got, newest_first(all));
}

#[test]
fn given_a_limit_then_the_newest_that_many_come_back() {
    let all = lines(2000);
    let got: Vec<_> = gather(&all, Some(25)).map(Result::unwrap).collect();
    assert_eq!(got, newest_first(all.clone())[..25]);
    assert_eq!(gather(&all, Some(0)).count(), 0);
}

#[test]
fn a_run_cut_short_is_an_error_not_an_early_end() {
    let mut buf = Vec::new();
    for l in lines(3) {
        write_bytes(&mut buf, &encode(&l).unwrap()).unwrap();
    }
    buf.truncate(buf.len() - 5);
    let mut r = buf.as_slice();
    assert!(read_line(&mut r).unwrap().is_some());
    assert!(read_line(&mut r).unwrap().is_some());
    let err = read_line(&mut r).unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::UnexpectedEof);
    // At a line boundary the run simply ends.
    assert!(read_line(&mut [].as_slice()).unwrap().is_none());
}
