//! Given/when/then tests of the history index, prune and import, on the
//! memory backend.

use bytes::Bytes;
use chrono::Utc;

use super::*;
use crate::event::Outcome;
use crate::job::{JobSpec, Mode};
use crate::log::runs;
use crate::projection::{BlobStatus, Side};
use crate::store::{BlobMeta, MemoryStore};
use crate::RunOptions;

fn fill(store: &MemoryStore, n: usize) {
    for i in 0..n {
        let data = Bytes::from(format!("blob {i}"));
        let meta = BlobMeta {
            name: format!("d{}/b{i:03}", i % 3),
            size: data.len() as u64,
            modified: Utc::now(),
            etag: format!("etag-{i}"),
            md5: None,
            props: None,
            mode: None,
        };
        store.insert(meta, data);
    }
}

fn spec(src: &str, dst: &str) -> JobSpec {
    JobSpec {
        src: Address::Memory { name: src.into() },
        dst: Address::Memory { name: dst.into() },
        mode: Mode::Incremental,
        parallel: Some(2),
        block_size: None,
        copy_method: Default::default(),
        policy_plugin: None,
        plugin_failure: Default::default(),
        mounts: Vec::new(),
        check_md5: Default::default(),
    }
}

fn unique(tag: &str) -> String {
    format!("{tag}-{}", JobId::new())
}

/// Two jobs over the same stores: the first copies `n` blobs, the second
/// skips them all (nothing is newer).
pub(crate) async fn two_jobs(engine: &Engine, n: usize) -> (String, String, JobId, JobId) {
    let (src, dst) = (unique("src"), unique("dst"));
    fill(&MemoryStore::named(&src), n);
    let first = engine.submit(spec(&src, &dst)).await.unwrap();
    let r = engine.run(first, RunOptions::default()).await.unwrap();
    assert_eq!(r.outcome, Some(Outcome::Succeeded));
    let second = engine.submit(spec(&src, &dst)).await.unwrap();
    let r = engine.run(second, RunOptions::default()).await.unwrap();
    assert_eq!(r.totals.skipped, n as u64);
    (src, dst, first, second)
}

/// The run holding `name` in `job`, with its key, and the item's index.
pub(crate) fn run_with(
    engine: &Engine,
    job: JobId,
    name: &str,
) -> (Vec<u8>, Vec<runs::RunItem>, usize) {
    for (k, v) in engine.log().scan_raw_for_tests(&keys::run_prefix(job)) {
        let items = runs::decode(&v).unwrap();
        if let Some(i) = items.iter().position(|it| it.name == name) {
            return (k, items, i);
        }
    }
    panic!("{name} is in no run of {job}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn given_two_jobs_when_a_blobs_history_is_asked_then_both_sides_are_listed_newest_first() {
    let dir = tempfile::tempdir().unwrap();
    let engine = Engine::open(dir.path()).unwrap();
    let (src, dst, first, second) = two_jobs(&engine, 30).await;

    let at_src = engine
        .history(&format!("memory:{src}/d0/b000"), None)
        .unwrap()
        .all();
    let seen: Vec<_> = at_src
        .iter()
        .map(|l| (l.job, l.side, l.entry.status))
        .collect();
    assert_eq!(
        seen,
        [
            (second, Side::Source, BlobStatus::Skipped),
            (first, Side::Source, BlobStatus::Copied)
        ]
    );
    assert_eq!(at_src[0].entry.reason.as_deref(), Some("not-newer"));
    assert_eq!(at_src[1].entry.reason.as_deref(), Some("new"));
    assert_eq!(at_src[1].entry.etag.as_deref(), Some("etag-0"));
    assert_eq!(at_src[1].entry.attempt, 1);

    // The destination side of the same blob, found by its own address.
    let at_dst = engine
        .history(&format!("memory:{dst}/d0/b000"), None)
        .unwrap()
        .all();
    assert_eq!(at_dst.len(), 2);
    assert!(at_dst.iter().all(|l| l.side == Side::Destination));

    // A folder: every blob under it (10 of 30), both jobs; limit cuts.
    let folder = engine
        .history(&format!("memory:{src}/d1"), None)
        .unwrap()
        .all();
    assert_eq!(folder.len(), 20);
    assert!(folder
        .iter()
        .all(|l| l.address.starts_with(&format!("memory:{src}/d1/"))));
    assert!(folder.windows(2).all(|w| w[0].entry.at >= w[1].entry.at));
    assert_eq!(folder[0].job, second);
    let few = engine
        .history(&format!("memory:{src}/d1"), Some(3))
        .unwrap()
        .all();
    assert_eq!(few.len(), 3);
    assert_eq!(
        few,
        folder[..3],
        "the limit keeps the newest lines, in order"
    );
    assert!(engine
        .history(&format!("memory:{src}/d1"), Some(0))
        .unwrap()
        .all()
        .is_empty());
    // A name prefix that is not a folder matches nothing.
    assert!(engine
        .history(&format!("memory:{src}/d"), None)
        .unwrap()
        .all()
        .is_empty());

    let v = engine.verify(None).unwrap();
    assert!(v.problems.is_empty(), "{:?}", v.problems);
    assert_eq!(v.history, 2 * 30, "one line per blob event");
    // Jobs are listed without the index's reserved prefix.
    assert_eq!(engine.jobs().unwrap().len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn given_a_tampered_history_index_when_verified_then_the_first_difference_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let engine = Engine::open(dir.path()).unwrap();
    let (src, _dst, first, _) = two_jobs(&engine, 6).await;
    let address = format!("memory:{src}/d2/b002");
    let line = engine.history(&address, None).unwrap().all().pop().unwrap();
    assert_eq!(line.job, first);
    // The second job skipped every blob in listing order: its lines are in runs.
    let (run_key, items, i) = run_with(&engine, engine.jobs().unwrap()[1].id, "d2/b002");
    let put_run = |items: &[runs::RunItem]| {
        let bytes = runs::encode(items).unwrap();
        engine.log().put_raw_for_tests(&run_key, &bytes).unwrap();
    };
    let second = engine.jobs().unwrap()[1].id;

    // A changed line in a run.
    let mut forged = items.clone();
    forged[i].entry.status = BlobStatus::Failed;
    put_run(&forged);
    let v = engine.verify(Some(second)).unwrap();
    assert_eq!(v.problems.len(), 2, "line and checkpoint: {:?}", v.problems);
    assert!(
        v.problems
            .iter()
            .any(|p| p.contains("history line") && p.contains("differs") && p.contains("d2/b002")),
        "{:?}",
        v.problems
    );

    // A line missing from a run.
    let mut short = items.clone();
    short.remove(i);
    put_run(&short);
    let v = engine.verify(None).unwrap();
    assert!(
        v.problems
            .iter()
            .any(|p| p.contains("history line") && p.contains("missing")),
        "{:?}",
        v.problems
    );
    put_run(&items);
    assert!(engine.verify(None).unwrap().problems.is_empty());

    // A line with a key of its own, changed.
    let key = keys::history(first, "d2/b002", line.seq);
    let keyed = engine.log().get_raw_for_tests(&key).unwrap();
    let (k, original) = match keyed {
        Some(bytes) => (key.clone(), bytes),
        None => {
            // The first job's copy went into a run: give it a key as an
            // out-of-order copy would have, and take it out of the run.
            let (rk, mut its, j) = run_with(&engine, first, "d2/b002");
            let it = its.remove(j);
            let bytes = it.entry.encode().unwrap();
            engine.log().put_raw_for_tests(&key, &bytes).unwrap();
            let state = rmp_serde::to_vec_named(&it.state()).unwrap();
            engine
                .log()
                .put_raw_for_tests(&keys::blob(first, "d2/b002"), &state)
                .unwrap();
            match its.is_empty() {
                true => engine.log().remove_raw_for_tests(&rk).unwrap(),
                false => engine
                    .log()
                    .put_raw_for_tests(&rk, &runs::encode(&its).unwrap())
                    .unwrap(),
            }
            assert!(engine.verify(None).unwrap().problems.is_empty());
            (key.clone(), bytes)
        }
    };
    let mut forged = line.entry.clone();
    forged.status = BlobStatus::Failed;
    let bytes = forged.encode().unwrap();
    engine.log().put_raw_for_tests(&k, &bytes).unwrap();
    let v = engine.verify(Some(first)).unwrap();
    assert_eq!(v.problems.len(), 1, "{:?}", v.problems);
    assert!(
        v.problems[0].contains("differs") && v.problems[0].contains("d2/b002"),
        "{}",
        v.problems[0]
    );

    // A missing line.
    engine.log().remove_raw_for_tests(&k).unwrap();
    let v = engine.verify(None).unwrap();
    assert!(v.problems[0].contains("missing"), "{:?}", v.problems);

    // A line no event is behind.
    engine.log().put_raw_for_tests(&k, &original).unwrap();
    assert!(engine.verify(None).unwrap().problems.is_empty());
    let stray = keys::history(first, "d2/b002", 999);
    engine.log().put_raw_for_tests(&stray, &original).unwrap();
    let v = engine.verify(Some(first)).unwrap();
    assert!(
        v.problems[0].contains("no event behind it"),
        "{:?}",
        v.problems
    );
}

#[test]
fn given_a_compaction_cut_short_when_opened_then_the_old_log_or_the_finished_copy_is_used() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("db");
    // Unfinished copy: discarded, the log is kept.
    std::fs::create_dir_all(dir.path().join("db.compact")).unwrap();
    drop(Engine::open(dir.path()).unwrap());
    assert!(db.exists() && !dir.path().join("db.compact").exists());
    // Finished copy, old log already moved aside: the copy is put in place.
    std::fs::rename(&db, dir.path().join("db.compact")).unwrap();
    std::fs::File::create(dir.path().join("db.compact").join("ferry-compacted")).unwrap();
    std::fs::create_dir_all(dir.path().join("db.old")).unwrap();
    drop(Engine::open(dir.path()).unwrap());
    assert!(db.exists() && !dir.path().join("db.old").exists());
    assert!(!db.join("ferry-compacted").exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn given_a_log_from_before_the_index_when_opened_then_its_history_is_built_once() {
    let dir = tempfile::tempdir().unwrap();
    let (address, first, line) = {
        let engine = Engine::open(dir.path()).unwrap();
        let (src, _dst, first, second) = two_jobs(&engine, 6).await;
        let address = format!("memory:{src}/d0/b000");
        let line = engine.history(&address, None).unwrap().all().pop().unwrap();
        // What an older ferry left: events and keyed checkpoint entries,
        // no index and no runs (they came after it).
        let log = engine.log();
        for job in [first, second] {
            for (k, v) in log.scan_raw_for_tests(&keys::run_prefix(job)) {
                for it in runs::decode(&v).unwrap() {
                    let state = rmp_serde::to_vec_named(&it.state()).unwrap();
                    log.put_raw_for_tests(&keys::blob(job, &it.name), &state)
                        .unwrap();
                }
                log.remove_raw_for_tests(&k).unwrap();
            }
            for (k, _) in log.scan_raw_for_tests(&keys::history_prefix(job, "")) {
                log.remove_raw_for_tests(&k).unwrap();
            }
        }
        log.remove_raw_for_tests(&keys::index_marker()).unwrap();
        assert!(!engine.verify(None).unwrap().problems.is_empty());
        log.close();
        (address, first, line)
    };
    let engine = Engine::open(dir.path()).unwrap();
    assert_eq!(
        engine.history(&address, None).unwrap().all().pop(),
        Some(line)
    );
    assert_eq!(engine.history(&address, None).unwrap().all().len(), 2);
    let v = engine.verify(Some(first)).unwrap();
    assert!(v.problems.is_empty(), "{:?}", v.problems);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn given_old_finished_jobs_when_pruned_then_only_job_level_events_summary_and_history_stay() {
    let dir = tempfile::tempdir().unwrap();
    let engine = Engine::open(dir.path()).unwrap();
    let (src, _dst, first, second) = two_jobs(&engine, 40).await;
    let before_summary = engine.summary(first).unwrap();
    let before_history = engine
        .history(&format!("memory:{src}"), None)
        .unwrap()
        .all();
    // Copies that finished out of name order have keys, the rest are in
    // runs: the checkpoint's 40 blobs are counted once each either way.
    let keyed = engine.log().keyed_blob_states(first).count() as u64;
    assert!(keyed < 40, "{keyed} keyed: the test needs runs");
    let now = Utc::now() + chrono::Duration::seconds(1);

    // Dry run: counts, changes nothing.
    let dry = PruneOptions {
        before: now,
        keep_last: 1,
        dry_run: true,
        by: "test@host".into(),
    };
    let would = engine.prune(&dry).await.unwrap();
    assert_eq!(would.jobs, [first], "the newest finished job is kept");
    assert_eq!((would.events, would.entries), (40, 40));
    assert!(would.bytes > 40 * 20, "{}", would.bytes);
    assert!(!engine.summary(first).unwrap().pruned);
    assert_eq!(engine.events(Some(first)).unwrap().count(), 44);

    // Nothing is old enough.
    let young = PruneOptions {
        before: before_summary.submitted_at.unwrap(),
        keep_last: 0,
        dry_run: false,
        by: "test@host".into(),
    };
    assert!(engine.prune(&young).await.unwrap().jobs.is_empty());

    let done = engine
        .prune(&PruneOptions {
            dry_run: false,
            ..dry.clone()
        })
        .await
        .unwrap();
    assert_eq!(
        (done.jobs.clone(), done.events, done.entries),
        (vec![first], 40, 40)
    );
    assert_eq!(done.bytes, would.bytes);

    let kept: Vec<_> = engine
        .events(Some(first))
        .unwrap()
        .map(|r| {
            let r = r.unwrap();
            (r.seq, r.event.kind())
        })
        .collect();
    assert_eq!(
        kept,
        [
            (0, "JobSubmitted"),
            (1, "JobStarted"),
            (kept[2].0, "ListingCompleted"),
            (43, "JobFinished"),
            (44, "JobPruned")
        ],
        "original seqs"
    );
    let after = engine.summary(first).unwrap();
    assert!(after.pruned);
    assert_eq!((after.copied, after.state), (40, JobState::Succeeded));
    // The summary folds the same from what is left: the counts ride on
    // `JobPruned`, with who asked.
    let mut folded = crate::projection::JobSummary::new(first);
    for r in engine.events(Some(first)).unwrap() {
        folded.apply(&r.unwrap());
    }
    assert_eq!(folded, after);
    assert_eq!(
        (after.attempts[0].totals.copied, after.copied_bytes),
        (
            before_summary.attempts[0].totals.copied,
            before_summary.copied_bytes
        )
    );
    let by = engine.events(Some(first)).unwrap().last().unwrap().unwrap();
    assert!(
        matches!(&by.event, crate::event::Event::JobPruned { by, .. } if by == "test@host"),
        "{by:?}"
    );
    assert_eq!(engine.log().blob_states(first).count(), 0);
    assert_eq!(
        engine
            .history(&format!("memory:{src}"), None)
            .unwrap()
            .all(),
        before_history
    );
    assert_eq!(engine.events(Some(second)).unwrap().count(), 44);

    let v = engine.verify(None).unwrap();
    assert!(v.problems.is_empty(), "{:?}", v.problems);
    let e = engine
        .replay(first, RunOptions::default())
        .await
        .unwrap_err();
    assert!(
        matches!(e, EngineError::WrongState { .. }) && e.to_string().contains("pruned"),
        "{e}"
    );
    // Pruning again removes nothing.
    let again = engine
        .prune(&PruneOptions {
            dry_run: false,
            ..dry.clone()
        })
        .await
        .unwrap();
    assert!(again.jobs.is_empty());

    // Compacted: the same log in fewer bytes, reopened as it was.
    let stats = engine.compact().unwrap();
    assert!(stats.keys > 0 && stats.after > 0, "{stats:?}");
    assert!(!dir.path().join("db.compact").exists() && !dir.path().join("db.old").exists());
    let engine = Engine::open(dir.path()).unwrap();
    assert_eq!(engine.summary(first).unwrap(), after);
    assert_eq!(
        engine
            .history(&format!("memory:{src}"), None)
            .unwrap()
            .all(),
        before_history
    );
    assert!(engine.verify(None).unwrap().problems.is_empty());

    // A forged summary of a pruned job is still caught (job-level fields).
    let mut forged = after.clone();
    forged.state = JobState::Failed;
    engine
        .log()
        .put_raw_for_tests(
            &keys::summary(first),
            &rmp_serde::to_vec_named(&forged).unwrap(),
        )
        .unwrap();
    let v = engine.verify(Some(first)).unwrap();
    assert!(v.problems[0].contains("cached summary"), "{:?}", v.problems);
}

/// The job's events as `ferry export` writes them.
fn export(engine: &Engine, job: JobId) -> String {
    let recs: Vec<EventRecord> = engine
        .events(Some(job))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    let mut out = serde_json::json!({
        "ferry_export": 1, "schema": crate::event::SCHEMA_VERSION, "job": job, "events": recs.len()
    })
    .to_string();
    for r in &recs {
        out.push('\n');
        out.push_str(&serde_json::to_string(r).unwrap());
    }
    out.push('\n');
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn given_an_export_when_imported_elsewhere_then_summary_checkpoint_and_history_match() {
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let from = Engine::open(a.path()).unwrap();
    let (src, _dst, first, second) = two_jobs(&from, 20).await;
    let archive = export(&from, first);

    let to = Engine::open(b.path()).unwrap();
    let r = to.import(archive.as_bytes()).await.unwrap();
    assert_eq!((r.job, r.events, r.pruned), (first, 24, false));
    assert_eq!(to.summary(first).unwrap(), from.summary(first).unwrap());
    let cp = |e: &Engine| {
        e.log()
            .blob_states(first)
            .collect::<Result<Vec<_>, _>>()
            .unwrap()
    };
    assert_eq!(cp(&to), cp(&from));
    let only_first = |lines: Vec<HistoryLine>| {
        lines
            .into_iter()
            .filter(|l| l.job == first)
            .collect::<Vec<_>>()
    };
    let address = format!("memory:{src}");
    assert_eq!(
        to.history(&address, None).unwrap().all(),
        only_first(from.history(&address, None).unwrap().all())
    );
    let evs = |e: &Engine| {
        e.events(Some(first))
            .unwrap()
            .collect::<Result<Vec<_>, _>>()
            .unwrap()
    };
    assert_eq!(evs(&to), evs(&from));
    assert!(to.verify(None).unwrap().problems.is_empty());

    // Again: refused, nothing changes.
    let e = to.import(archive.as_bytes()).await.unwrap_err();
    assert!(
        matches!(e, EngineError::InvalidInput(_)) && e.to_string().contains("already exists"),
        "{e}"
    );
    // A gap (a blob event missing) is refused.
    let whole = export(&from, second);
    let mut lines: Vec<&str> = whole.lines().collect();
    lines.remove(5);
    let cut = lines.join("\n").replace("\"events\":24", "\"events\":23");
    let e = to.import(cut.as_bytes()).await.unwrap_err();
    assert!(e.to_string().contains("gaps"), "{e}");
    // A header that miscounts is refused.
    let short = export(&from, second).replace("\"events\":24", "\"events\":25");
    let e = to.import(short.as_bytes()).await.unwrap_err();
    assert!(e.to_string().contains("cut short"), "{e}");
    assert!(to.summary(second).is_err());
    // Both were found bad after parts of them were written: nothing stays.
    const { assert!(24 > crate::log::IMPORT_PART, "the test must cross parts") };
    assert!(to.log().scan_raw_for_tests(second.as_bytes()).is_empty());
    assert!(to
        .log()
        .scan_raw_for_tests(&keys::importing_prefix())
        .is_empty());
    assert!(to.verify(None).unwrap().problems.is_empty());

    // A pruned job's export imports as pruned.
    from.prune(&PruneOptions {
        before: Utc::now() + chrono::Duration::seconds(1),
        keep_last: 1,
        dry_run: false,
        by: "test@host".into(),
    })
    .await
    .unwrap();
    let c = tempfile::tempdir().unwrap();
    let third = Engine::open(c.path()).unwrap();
    let r = third.import(export(&from, first).as_bytes()).await.unwrap();
    assert_eq!((r.events, r.pruned), (5, true));
    // With its counts: what `show` and `jobs` say here is what they said there.
    let imported = third.summary(first).unwrap();
    assert!(imported.pruned);
    assert_eq!(imported, from.summary(first).unwrap());
    assert!(imported.copied > 0, "{imported:?}");
    assert!(third.verify(None).unwrap().problems.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn given_an_import_cut_off_after_a_part_when_reopened_then_the_job_is_gone() {
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let from = Engine::open(a.path()).unwrap();
    let (_, _, first, _) = two_jobs(&from, 20).await;
    let recs: Vec<EventRecord> = from
        .events(Some(first))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    {
        let to = Engine::open(b.path()).unwrap();
        let part = crate::log::ImportPart {
            first: true,
            last: None,
        };
        to.log()
            .import_part(first, recs[..8].to_vec(), part)
            .await
            .unwrap();
        // What a process killed here leaves: the part, durable, and the mark.
        assert!(!to.log().scan_raw_for_tests(first.as_bytes()).is_empty());
        to.log().close();
    }
    let to = Engine::open(b.path()).unwrap();
    assert!(to.log().scan_raw_for_tests(first.as_bytes()).is_empty());
    assert!(to
        .log()
        .scan_raw_for_tests(&keys::importing_prefix())
        .is_empty());
    assert!(to.jobs().unwrap().is_empty());
    // And it can be imported whole now.
    let r = to.import(export(&from, first).as_bytes()).await.unwrap();
    assert_eq!(r.events, 24);
    assert!(to.verify(None).unwrap().problems.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn given_a_prune_cut_short_then_any_prune_finishes_it_and_its_export_is_refused_meanwhile() {
    let dir = tempfile::tempdir().unwrap();
    let engine = Engine::open(dir.path()).unwrap();
    let (_, _, first, second) = two_jobs(&engine, 20).await;
    // What a prune killed after its first step leaves: the JobPruned
    // recorded, the blob events not yet removed.
    let counts = Box::new(engine.summary(first).unwrap().pruned_counts());
    engine
        .log()
        .append_durable(
            first,
            Event::JobPruned {
                counts,
                by: "test@host".into(),
            },
        )
        .await
        .unwrap();
    assert!(engine.summary(first).unwrap().pruned);

    // Half pruned, it does not import elsewhere.
    let b = tempfile::tempdir().unwrap();
    let other = Engine::open(b.path()).unwrap();
    let e = other
        .import(export(&engine, first).as_bytes())
        .await
        .unwrap_err();
    assert!(e.to_string().contains("pruned only in part"), "{e}");

    // A prune whose age and --keep-last take no job still finishes it.
    let done = engine
        .prune(&PruneOptions {
            before: Utc::now() - chrono::Duration::days(30),
            keep_last: 10,
            dry_run: false,
            by: "test@host".into(),
        })
        .await
        .unwrap();
    assert_eq!((done.jobs, done.events), (vec![first], 20));
    assert_eq!(engine.events(Some(second)).unwrap().count(), 24);
    assert!(engine.verify(None).unwrap().problems.is_empty());
    let r = other
        .import(export(&engine, first).as_bytes())
        .await
        .unwrap();
    assert!(r.pruned);
    assert_eq!(
        other.summary(first).unwrap(),
        engine.summary(first).unwrap()
    );
}
