//! Given/when/then tests of runs: outcomes in name order share values,
//! late ones get keys of their own, and readers merge both.

use super::*;
use crate::event::{CopyMethod, CopyReason, SkipReason};
use crate::projection::BlobStatus;

fn started(attempt: u32) -> Event {
    Event::JobStarted {
        attempt,
        worker: "test:1".into(),
        parallelism: 2,
        plugin_sha256: None,
    }
}

fn skipped(name: &str) -> Event {
    Event::BlobSkipped {
        name: name.into(),
        reason: SkipReason::NotNewer,
        src_etag: Some(format!("etag-{name}")),
        detail: None,
    }
}

fn copied(name: &str) -> Event {
    Event::BlobCopied {
        name: name.into(),
        bytes: 1,
        src_etag: format!("etag2-{name}"),
        reason: CopyReason::Newer,
        method: CopyMethod::Stream,
        ms: 1,
        tries: 1,
        detail: None,
        retries: Default::default(),
    }
}

async fn write(log: &EventLog, job: JobId, events: impl IntoIterator<Item = Event>) {
    for e in events {
        log.append(job, e).await.unwrap();
    }
    log.sync().await.unwrap();
}

fn keyed(log: &EventLog, job: JobId) -> Vec<String> {
    log.keyed_blob_states(job).map(|r| r.unwrap().0).collect()
}

#[tokio::test]
async fn given_skips_in_name_order_when_logged_then_they_go_in_runs_and_read_back_like_keys() {
    let dir = tempfile::tempdir().unwrap();
    let log = EventLog::open(dir.path()).unwrap();
    let job = JobId::new();
    let n = 2 * runs::RUN_MAX + 7;
    let names: Vec<String> = (0..n).map(|i| format!("d/b{i:05}")).collect();
    write(&log, job, [started(1)]).await;
    write(&log, job, names.iter().map(|n| skipped(n))).await;

    assert!(keyed(&log, job).is_empty(), "no key per blob");
    let runs = log.scan_raw_for_tests(&keys::run_prefix(job)).len();
    assert!((3..=6).contains(&runs), "{runs} runs for {n} skips");
    for i in [0, runs::RUN_MAX - 1, runs::RUN_MAX, n - 1] {
        let state = log.blob_state(job, &names[i]).unwrap().unwrap();
        assert_eq!(state.status, BlobStatus::Skipped);
        assert_eq!(state.etag, Some(format!("etag-{}", names[i])));
        assert_eq!(state.seq, i as u64 + 1);
    }
    assert_eq!(log.blob_state(job, "d/b").unwrap(), None);
    assert_eq!(log.blob_state(job, "d/b99999").unwrap(), None);
    assert_eq!(log.blob_states(job).count(), n);
    let all = log.history(job, "", false).unwrap();
    assert_eq!(all.len(), n);
    assert!(all.windows(2).all(|w| w[0].0 < w[1].0), "name order");
    let one = log.history(job, &names[n / 2], true).unwrap();
    assert_eq!((one.len(), one[0].2.attempt), (1, 1));
    assert_eq!(log.history(job, "d/b0001", false).unwrap().len(), 10);
}

#[tokio::test]
async fn given_late_outcomes_and_a_second_attempt_when_read_then_keys_and_runs_merge_newest_first()
{
    let dir = tempfile::tempdir().unwrap();
    let job = JobId::new();
    {
        let log = EventLog::open(dir.path()).unwrap();
        write(&log, job, [started(1), skipped("m")]).await;
        // "a" arrives after "m" but lies in the gap below its run: a run too.
        write(&log, job, [skipped("z"), skipped("a")]).await;
        assert!(keyed(&log, job).is_empty());
        assert_eq!(log.scan_raw_for_tests(&keys::run_prefix(job)).len(), 3);
        let names: Vec<String> = log.blob_states(job).map(|r| r.unwrap().0).collect();
        assert_eq!(names, ["a", "m", "z"]);

        write(&log, job, [started(2), copied("m")]).await;
        let m = log.blob_state(job, "m").unwrap().unwrap();
        assert_eq!(
            (m.status, m.etag.as_deref()),
            (BlobStatus::Copied, Some("etag2-m"))
        );
        let lines = log.history(job, "m", true).unwrap();
        let statuses: Vec<_> = lines.iter().map(|l| (l.2.status, l.2.attempt)).collect();
        assert_eq!(
            statuses,
            [(BlobStatus::Skipped, 1), (BlobStatus::Copied, 2)]
        );
        log.close();
    }
    // Another process continuing attempt 2 knows only its greatest run name
    // from the log: "c", below it, gets keys of its own.
    let log = EventLog::open(dir.path()).unwrap();
    write(&log, job, [copied("c"), copied("n")]).await;
    assert_eq!(keyed(&log, job), ["c"]);
    let c = log.blob_state(job, "c").unwrap().unwrap();
    assert_eq!(c.status, BlobStatus::Copied);
    assert_eq!(log.blob_states(job).count(), 5);
    assert_eq!(log.history(job, "", false).unwrap().len(), 6);
    assert_eq!(log.blob_state(job, "a").unwrap().unwrap().seq, 3);
    assert_eq!(log.blob_state(job, "z").unwrap().unwrap().seq, 2);
    assert_eq!(log.blob_state(job, "n").unwrap().unwrap().seq, 7);
}

#[tokio::test]
async fn given_outcomes_far_out_of_order_when_logged_then_they_fill_gaps_and_read_back() {
    // Like 16 workers finishing work batches in any order.
    let dir = tempfile::tempdir().unwrap();
    let log = EventLog::open(dir.path()).unwrap();
    let job = JobId::new();
    let names: Vec<String> = (0..600).map(|i| format!("d/b{i:05}")).collect();
    write(&log, job, [started(1)]).await;
    for block in [3, 0, 5, 1, 4, 2].map(|b| &names[b * 100..(b + 1) * 100]) {
        write(&log, job, block.iter().map(|n| skipped(n))).await;
    }
    assert!(keyed(&log, job).is_empty(), "every block fits a gap");
    let states: Vec<(String, BlobState)> = log.blob_states(job).map(|r| r.unwrap()).collect();
    assert_eq!(states.len(), 600);
    assert!(states.iter().zip(&names).all(|((a, _), b)| a == b));
    for n in [&names[0], &names[99], &names[100], &names[350], &names[599]] {
        assert!(log.blob_state(job, n).unwrap().is_some(), "{n}");
    }
    assert_eq!(log.history(job, "d/b001", false).unwrap().len(), 100);
}

#[tokio::test]
async fn given_outcomes_with_places_when_logged_then_runs_follow_places_and_any_order_reads_back() {
    let dir = tempfile::tempdir().unwrap();
    let log = EventLog::open(dir.path()).unwrap();
    let job = JobId::new();
    write(&log, job, [started(1)]).await;
    // Places in name order (as every store lists), arriving shuffled: one
    // batch sorts them back into runs, so nothing needs keys of its own.
    let names: Vec<String> = (0..300).map(|i| format!("a/{i:04}")).collect();
    let mut order: Vec<usize> = (0..300).collect();
    order.reverse();
    order.swap(10, 200);
    for i in order {
        log.append_outcome(job, skipped(&names[i]), i as u64)
            .await
            .unwrap();
    }
    log.sync().await.unwrap();
    assert!(keyed(&log, job).is_empty(), "sorted by place into runs");
    let runs = log.scan_raw_for_tests(&keys::run_prefix(job)).len();
    assert!(
        runs <= 20,
        "{runs} runs for 300 skips in at most a few batches"
    );
    // Places against name order (a store that listed unsorted): the runs
    // break up, yet every outcome is stored once and found.
    let late: Vec<String> = (0..300).map(|i| format!("b/{i:04}")).collect();
    for (place, name) in late.iter().rev().enumerate() {
        log.append_outcome(job, copied(name), 300 + place as u64)
            .await
            .unwrap();
    }
    log.sync().await.unwrap();
    let states: Vec<(String, BlobState)> = log.blob_states(job).map(|r| r.unwrap()).collect();
    let all: Vec<&String> = names.iter().chain(&late).collect();
    assert_eq!(states.iter().map(|(n, _)| n).collect::<Vec<_>>(), all);
    for n in &late {
        let state = log.blob_state(job, n).unwrap().unwrap();
        assert_eq!(state.status, BlobStatus::Copied, "{n}");
        assert_eq!(log.history(job, n, false).unwrap().len(), 1, "{n}");
    }
}

#[tokio::test]
async fn given_long_names_when_logged_then_every_value_stays_small_and_reads_back() {
    // A run and a chunk of these would be ~120 KB: sled keeps a node that
    // large as a blob file and never evicts it from memory.
    let dir = tempfile::tempdir().unwrap();
    let log = EventLog::open(dir.path()).unwrap();
    let job = JobId::new();
    let names: Vec<String> = (0..64)
        .map(|i| format!("{i:03}{}", "x".repeat(900)))
        .collect();
    write(&log, job, [started(1)]).await;
    write(&log, job, names.iter().map(|n| skipped(n))).await;

    let chunks = log.scan_raw_for_tests(&keys::event_prefix(job));
    let runs = log.scan_raw_for_tests(&keys::run_prefix(job));
    for (k, v) in chunks.iter().chain(&runs) {
        assert!(
            v.len() <= writer::VALUE_BYTES,
            "{} bytes under {k:?}",
            v.len()
        );
    }
    assert!(runs.len() >= 10, "{} runs", runs.len());
    assert!(keyed(&log, job).is_empty(), "split runs are still runs");
    let seqs: Vec<u64> = log.events(job).map(|r| r.unwrap().seq).collect();
    assert_eq!(seqs, (0..=64).collect::<Vec<u64>>());
    for (i, name) in names.iter().enumerate() {
        let state = log.blob_state(job, name).unwrap().unwrap();
        assert_eq!(state.seq, i as u64 + 1, "{name:.8}");
    }
    assert_eq!(log.blob_states(job).count(), 64);
}

#[tokio::test]
async fn given_several_attempts_when_a_cursor_is_asked_in_any_order_then_it_answers_as_blob_state()
{
    let dir = tempfile::tempdir().unwrap();
    let log = EventLog::open(dir.path()).unwrap();
    let job = JobId::new();
    let names: Vec<String> = (0..900).map(|i| format!("d{}/b{i:04}", i / 300)).collect();
    let mut rng = fastrand::Rng::with_seed(11);
    // Attempts 1, 2 and 4 log a third of the names each, in blocks out of
    // order (runs in gaps, and keys where a name lands inside a run);
    // attempt 3 logs nothing, so seeks jump from 2 to 4.
    for attempt in 1..=4u32 {
        write(&log, job, [started(attempt)]).await;
        if attempt == 3 {
            continue;
        }
        let picked: Vec<&String> = names.iter().filter(|_| rng.u8(..3) == 0).collect();
        // Every other picked name first; the rest then land inside runs.
        for half in [0, 1] {
            let mine: Vec<&String> = picked.iter().skip(half).step_by(2).copied().collect();
            let mut blocks: Vec<&[&String]> = mine.chunks(40).collect();
            rng.shuffle(&mut blocks);
            for block in blocks {
                write(&log, job, block.iter().map(|n| copied(n))).await;
            }
        }
    }
    assert!(!keyed(&log, job).is_empty(), "some outcomes have keys");
    // The attempt under way (5) has outcomes too, for names the cursor is
    // not asked: a listing names a blob once.
    write(&log, job, [started(5), copied("e/late")]).await;

    // Names between, before and after the stored ones too.
    let mut asked: Vec<String> = names
        .iter()
        .flat_map(|n| [n.clone(), format!("{n}x")])
        .collect();
    asked.extend(["", "a", "d0/", "d2/b9999", "zzz"].map(String::from));
    asked.sort();
    let want = |n: &str| log.blob_state(job, n).unwrap();
    let mut cursor = log.checkpoint_cursor(job, 5);
    for n in &asked {
        assert_eq!(cursor.state(n).unwrap(), want(n), "{n} in order");
    }
    // Out of order: still right.
    rng.shuffle(&mut asked);
    let mut cursor = log.checkpoint_cursor(job, 5);
    for n in &asked {
        assert_eq!(cursor.state(n).unwrap(), want(n), "{n} out of order");
    }
    assert!(want("e/late").is_some());
    assert_eq!(log.checkpoint_cursor(job, 5).state("e/late").unwrap(), None);
    // Below attempt 2: only attempt 1's runs (and every key).
    let mut first = log.checkpoint_cursor(job, 2);
    let found = names
        .iter()
        .filter(|n| first.state(n).unwrap().is_some())
        .count();
    assert!(found > 0 && found < names.len(), "{found}");
}
