//! Given/when/then tests of `verify` on logs tampered with in ways only a
//! check of every stored line and entry against its event can see.

use crate::audit::tests::{run_with, two_jobs};
use crate::log::{keys, runs};
use crate::Engine;

/// `verify(None)`'s problems, which must name `name` with each of `what`.
fn problems(engine: &Engine) -> Vec<String> {
    engine.verify(None).unwrap().problems
}

fn names(problems: &[String], name: &str, what: &str) -> bool {
    problems
        .iter()
        .any(|p| p.contains(&format!("{name:?}")) && p.contains(what))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn given_a_run_line_also_stored_under_a_key_when_verified_then_it_is_named_twice_stored() {
    let dir = tempfile::tempdir().unwrap();
    let engine = Engine::open(dir.path()).unwrap();
    let (_, _, _, second) = two_jobs(&engine, 9).await;
    let (_, items, i) = run_with(&engine, second, "d1/b004");
    let it = &items[i];
    // Same event, same line: only counting lines per event can tell.
    let key = keys::history(second, &it.name, it.seq);
    let bytes = it.entry.encode().unwrap();
    engine.log().put_raw_for_tests(&key, &bytes).unwrap();

    let p = problems(&engine);
    assert_eq!(p.len(), 1, "{p:?}");
    assert!(names(&p, "d1/b004", "is stored twice"), "{p:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn given_a_run_item_pointing_at_another_event_when_verified_then_line_and_entry_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let engine = Engine::open(dir.path()).unwrap();
    let (_, _, _, second) = two_jobs(&engine, 9).await;
    let (key, mut items, i) = run_with(&engine, second, "d0/b003");
    let other = items.iter().position(|it| it.name != "d0/b003").unwrap();
    let own = items[i].seq;
    items[i].seq = items[other].seq;
    engine
        .log()
        .put_raw_for_tests(&key, &runs::encode(&items).unwrap())
        .unwrap();

    let p = problems(&engine);
    assert!(
        names(&p, "d0/b003", "checkpoint entry"),
        "the entry stands for no event of its blob: {p:?}"
    );
    // The smallest name first: the stray item and the event left without
    // a line are both of d0/b003; the stray's seq is the other blob's.
    assert!(
        p.iter().any(|l| l.contains("history line of \"d0/b003\"")
            && (l.contains(&format!("(seq {own}) is missing"))
                || l.contains("no event behind it"))),
        "{p:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn given_a_keyed_line_whose_blob_lost_its_entry_when_verified_then_the_entry_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let engine = Engine::open(dir.path()).unwrap();
    let (_, _, first, _) = two_jobs(&engine, 9).await;
    // As an out-of-order copy is stored: its line and its entry keyed.
    let (rk, mut items, j) = run_with(&engine, first, "d2/b005");
    let it = items.remove(j);
    let log = engine.log();
    log.put_raw_for_tests(
        &keys::history(first, &it.name, it.seq),
        &it.entry.encode().unwrap(),
    )
    .unwrap();
    let state = rmp_serde::to_vec_named(&it.state()).unwrap();
    log.put_raw_for_tests(&keys::blob(first, &it.name), &state)
        .unwrap();
    log.put_raw_for_tests(&rk, &runs::encode(&items).unwrap())
        .unwrap();
    assert!(problems(&engine).is_empty(), "{:?}", problems(&engine));

    // The line is still right; only the blob's newest entry is gone.
    log.remove_raw_for_tests(&keys::blob(first, &it.name))
        .unwrap();
    let p = problems(&engine);
    assert_eq!(p.len(), 1, "{p:?}");
    assert!(names(&p, "d2/b005", "checkpoint entry"), "{p:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn given_a_run_item_removed_when_verified_then_its_line_and_entry_are_missing() {
    let dir = tempfile::tempdir().unwrap();
    let engine = Engine::open(dir.path()).unwrap();
    let (_, _, first, _) = two_jobs(&engine, 9).await;
    let (rk, mut items, j) = run_with(&engine, first, "d1/b007");
    let gone = items.remove(j);
    engine
        .log()
        .put_raw_for_tests(&rk, &runs::encode(&items).unwrap())
        .unwrap();

    let p = problems(&engine);
    assert_eq!(p.len(), 2, "{p:?}");
    assert!(names(&p, "d1/b007", "checkpoint entry"), "{p:?}");
    assert!(
        names(&p, "d1/b007", &format!("(seq {}) is missing", gone.seq)),
        "{p:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn given_a_wrong_open_jobs_index_when_verified_then_the_job_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let engine = Engine::open(dir.path()).unwrap();
    let (_, _, first, _) = two_jobs(&engine, 3).await;
    let log = engine.log();
    assert!(problems(&engine).is_empty());

    // A finished job listed as open.
    log.put_raw_for_tests(&keys::open_job(first), b"").unwrap();
    let p = problems(&engine);
    assert_eq!(p.len(), 1, "{p:?}");
    assert!(
        p[0].contains(&format!("job {first}: the open-jobs index lists it")),
        "{p:?}"
    );
    log.remove_raw_for_tests(&keys::open_job(first)).unwrap();

    // A job that is no job at all.
    let stray = crate::job::JobId::new();
    log.put_raw_for_tests(&keys::open_job(stray), b"").unwrap();
    let p = problems(&engine);
    assert!(
        p.iter()
            .any(|l| l.contains(&format!("job {stray}: listed as open"))),
        "{p:?}"
    );
    log.remove_raw_for_tests(&keys::open_job(stray)).unwrap();
    assert!(problems(&engine).is_empty());
}
