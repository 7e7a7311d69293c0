//! The conformance suite every backend passes: the same calls, the same
//! expectations, one `#[tokio::test]` per backend and check.

use bytes::Bytes;
use chrono::{TimeZone, Utc};
use futures::StreamExt;

use super::{BlobMeta, BlobStore, Listed, StoreError};

fn meta(name: &str, data: &[u8]) -> BlobMeta {
    BlobMeta {
        name: name.into(),
        size: data.len() as u64,
        modified: Utc.timestamp_opt(1_700_000_000, 123_456_789).unwrap(),
        etag: String::new(),
        md5: None,
        props: None,
        mode: None,
    }
}

async fn put(store: &dyn BlobStore, name: &str, data: &'static [u8]) {
    let body = futures::stream::once(async move { Ok(Bytes::from_static(data)) }).boxed();
    store.write(&meta(name, data), body).await.unwrap();
}

async fn get(store: &dyn BlobStore, name: &str) -> Result<Vec<u8>, StoreError> {
    let mut s = store.read(&meta(name, b"")).await?;
    let mut out = Vec::new();
    while let Some(c) = s.next().await {
        out.extend_from_slice(&c?);
    }
    Ok(out)
}

async fn names(store: &dyn BlobStore) -> Vec<String> {
    let mut l = store.list();
    let mut out = Vec::new();
    while let Some(item) = l.next().await {
        if let Listed::Blob(m) = item.unwrap() {
            out.push(m.name);
        }
    }
    out
}

/// Names chosen to break naive implementations: separators that sort around
/// '/', URL-special characters, unicode, a 1,024-character name.
fn tricky_names() -> Vec<String> {
    let long = format!(
        "{}/{}/{}/{}/{}",
        "a".repeat(255),
        "b".repeat(255),
        "c".repeat(255),
        "d".repeat(252),
        "end"
    );
    assert_eq!(long.len(), 1024);
    vec![
        "a-b".into(),
        "a/b".into(),
        "a.b".into(),
        "a0".into(),
        "with space/file name.txt".into(),
        "percent%20and#hash?q".into(),
        "ünïcødé/日本語.txt".into(),
        long,
    ]
}

pub async fn round_trip(store: &dyn BlobStore, keeps_mtime: bool) {
    put(store, "dir/one.txt", b"hello").await;
    assert_eq!(get(store, "dir/one.txt").await.unwrap(), b"hello");
    let head = store
        .head("dir/one.txt")
        .await
        .unwrap()
        .expect("head finds the blob");
    assert_eq!(head.size, 5);
    if keeps_mtime {
        assert_eq!(
            head.modified,
            meta("", b"").modified,
            "modification time is kept"
        );
        let mut listing = store.list();
        while let Some(item) = listing.next().await {
            if let Listed::Blob(m) = item.unwrap() {
                assert_eq!(m.modified, head.modified, "the listing has the kept time");
            }
        }
    }
    assert!(!head.etag.is_empty());
}

pub async fn zero_bytes_and_overwrite(store: &dyn BlobStore) {
    put(store, "empty", b"").await;
    assert_eq!(get(store, "empty").await.unwrap(), b"");
    assert_eq!(store.head("empty").await.unwrap().unwrap().size, 0);
    put(store, "x", b"first").await;
    let before = store.head("x").await.unwrap().unwrap().etag;
    put(store, "x", b"second!").await;
    assert_eq!(get(store, "x").await.unwrap(), b"second!");
    let after = store.head("x").await.unwrap().unwrap();
    assert_eq!(after.size, 7);
    assert_ne!(before, after.etag, "etag changes with content");
}

pub async fn missing_blobs(store: &dyn BlobStore) {
    assert!(store.head("nope").await.unwrap().is_none());
    assert!(matches!(
        get(store, "nope").await,
        Err(StoreError::NotFound { .. })
    ));
}

pub async fn lists_in_byte_order(store: &dyn BlobStore) {
    let mut expected = tricky_names();
    for n in &expected {
        let data: &'static [u8] = b"data";
        put(store, n, data).await;
    }
    expected.sort();
    assert_eq!(names(store).await, expected);
}

pub async fn refuses_escaping_names(store: &dyn BlobStore) {
    // Azure takes `/abs` and `a//b` as names (`names::check_azure`); a
    // folder tree cannot hold them. Dot segments no backend takes.
    let tree_only: &[&str] = if store.as_azure().is_some() {
        &[]
    } else {
        &["/abs", "a//b"]
    };
    for bad in ["../escape", "a/../../b", "./a"].iter().chain(tree_only) {
        let bad = *bad;
        let body = futures::stream::empty().boxed();
        let err = store.write(&meta(bad, b""), body).await.unwrap_err();
        assert!(
            matches!(err, StoreError::InvalidName { .. }),
            "{bad}: {err}"
        );
        assert!(matches!(
            store.head(bad).await,
            Err(StoreError::InvalidName { .. })
        ));
    }
}

macro_rules! suite {
    ($backend:ident, $keeps_mtime:expr, $make:expr) => {
        mod $backend {
            #[allow(unused_imports)]
            use super::*;
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn round_trip() {
                let (_guard, store) = $make;
                super::round_trip(&store, $keeps_mtime).await;
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn zero_bytes_and_overwrite() {
                let (_guard, store) = $make;
                super::zero_bytes_and_overwrite(&store).await;
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn missing_blobs() {
                let (_guard, store) = $make;
                super::missing_blobs(&store).await;
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn lists_in_byte_order() {
                let (_guard, store) = $make;
                super::lists_in_byte_order(&store).await;
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn refuses_escaping_names() {
                let (_guard, store) = $make;
                super::refuses_escaping_names(&store).await;
            }
        }
    };
}

suite!(
    memory,
    true,
    (
        (),
        super::super::MemoryStore::named(&uuid::Uuid::now_v7().to_string())
    )
);
suite!(local, true, {
    let dir = tempfile::tempdir().unwrap();
    let store = super::super::LocalStore::new(dir.path().join("root"));
    (dir, store)
});

/// A fresh container in the shared Azurite.
pub(crate) async fn azurite_store(block_size: Option<u64>) -> super::azure::AzureStore {
    let az = crate::testkit::Azurite::shared();
    let acct = crate::config::parse_connection_string("t", &az.connection_string()).unwrap();
    let container = format!("c{}", &uuid::Uuid::new_v4().simple().to_string()[..20]);
    let store =
        super::azure::AzureStore::open(&acct, &container, "", block_size, Default::default())
            .unwrap();
    store.prepare_destination().await.unwrap();
    store
}

// Azure's last-modified is the upload time; a file's time is kept in the
// blob's `mtime` metadata and read back from it.
suite!(azurite, true, ((), azurite_store(None).await));

#[tokio::test]
async fn local_listing_skips_temp_files_and_reports_special_entries() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    std::fs::write(root.join("real"), b"x").unwrap();
    std::fs::write(root.join(".real.0123456789ab.ferry-tmp"), b"partial").unwrap();
    std::fs::write(root.join(".mine.notatag.ferry-tmp"), b"a user's file").unwrap();
    std::os::unix::fs::symlink(root, root.join("loop")).unwrap();
    std::os::unix::fs::symlink(root.join("gone"), root.join("dangling")).unwrap();
    std::os::unix::fs::symlink(root.join("self"), root.join("self")).unwrap();
    let store = super::LocalStore::new(root);
    let mut l = store.list();
    let mut seen = Vec::new();
    while let Some(item) = l.next().await {
        seen.push(match item.unwrap() {
            Listed::Blob(m) => format!("blob {}", m.name),
            Listed::Skipped { name, reason } => format!("skipped {name} {reason}"),
            Listed::Failed { name, error } => format!("failed {name} {}", error.kind()),
        });
    }
    assert_eq!(
        seen,
        [
            "skipped .real.0123456789ab.ferry-tmp ferry-temp-file",
            "blob .mine.notatag.ferry-tmp",
            // Links to nothing have nothing to copy: skipped, not failed
            // on every run.
            "skipped dangling not-regular-file",
            "skipped loop not-regular-file",
            "blob real",
            "skipped self not-regular-file"
        ]
    );
}

/// Local-to-local copies: the kernel fast path, its atomic publication and
/// its checks.
mod local_copy {
    use std::os::unix::fs::PermissionsExt;

    use super::super::{BlobStore, LocalStore, StoreError};

    async fn listed(store: &LocalStore, name: &str) -> super::BlobMeta {
        store.head(name).await.unwrap().expect("listed")
    }

    fn entries(dir: &std::path::Path) -> Vec<String> {
        let mut v: Vec<_> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        v.sort();
        v
    }

    #[tokio::test]
    async fn copies_new_and_existing_files_atomically_keeping_mtime_and_mode() {
        let d = tempfile::tempdir().unwrap();
        let (src, dst) = (
            LocalStore::new(d.path().join("s")),
            LocalStore::with_temp_tag(d.path().join("d"), "t"),
        );
        std::fs::create_dir_all(d.path().join("s/sub")).unwrap();
        let file = d.path().join("s/sub/f.sh");
        std::fs::write(&file, b"#!/bin/sh\n").unwrap();
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o750)).unwrap();
        let meta = listed(&src, "sub/f.sh").await;

        assert_eq!(dst.copy_file_from(&src, &meta).unwrap(), 10);
        let copied = listed(&dst, "sub/f.sh").await;
        assert_eq!((copied.size, copied.modified), (meta.size, meta.modified));
        let mode = std::fs::metadata(d.path().join("d/sub/f.sh"))
            .unwrap()
            .permissions()
            .mode()
            & 0o777;
        assert_eq!(mode & 0o700, 0o700, "owner bits kept");

        // Overwrite (the name exists): replaced whole, no temp file left.
        std::fs::write(&file, b"#!/bin/sh\necho two\n").unwrap();
        let meta = listed(&src, "sub/f.sh").await;
        dst.copy_file_from(&src, &meta).unwrap();
        assert_eq!(
            std::fs::read(d.path().join("d/sub/f.sh")).unwrap(),
            b"#!/bin/sh\necho two\n"
        );
        assert_eq!(entries(&d.path().join("d/sub")), ["f.sh"]);
        assert_eq!(super::names(&dst).await, ["sub/f.sh"]);
    }

    #[tokio::test]
    async fn a_source_that_changed_since_listing_or_a_directory_in_the_way_fails_cleanly() {
        let d = tempfile::tempdir().unwrap();
        let (src, dst) = (
            LocalStore::new(d.path().join("s")),
            LocalStore::new(d.path().join("d")),
        );
        std::fs::create_dir_all(d.path().join("s")).unwrap();
        std::fs::write(d.path().join("s/a"), b"one").unwrap();
        let mut meta = listed(&src, "a").await;
        meta.size += 1;
        let err = dst.copy_file_from(&src, &meta).unwrap_err();
        assert!(matches!(err, StoreError::SourceChanged { .. }), "{err}");
        assert!(
            !d.path().join("d/a").exists(),
            "nothing published under the real name"
        );

        std::fs::create_dir_all(d.path().join("d/a/inner")).unwrap();
        let meta = listed(&src, "a").await;
        let err = dst.copy_file_from(&src, &meta).unwrap_err();
        assert!(matches!(err, StoreError::Conflict { .. }), "{err}");
        assert_eq!(
            entries(&d.path().join("d")),
            ["a"],
            "no temp file left behind"
        );
        assert!(d.path().join("d/a/inner").is_dir());
    }

    #[tokio::test]
    async fn same_content_compares_bytes() {
        let d = tempfile::tempdir().unwrap();
        let (a, b) = (
            LocalStore::new(d.path().join("a")),
            LocalStore::new(d.path().join("b")),
        );
        for (dir, body) in [("a", &b"same size 1"[..]), ("b", &b"same size 2"[..])] {
            std::fs::create_dir_all(d.path().join(dir)).unwrap();
            std::fs::write(d.path().join(dir).join("x"), body).unwrap();
            std::fs::write(d.path().join(dir).join("y"), b"identical").unwrap();
        }
        assert!(!a.same_content(&b, "x").unwrap());
        assert!(a.same_content(&b, "y").unwrap());
    }
}

/// Azure specifics: block uploads, server-side copies, properties.
mod azure_blocks {
    use std::sync::Arc;

    use super::super::{BlobProps, BlobStore, StoreError};
    use super::{azurite_store, get, meta};
    use bytes::Bytes;
    use futures::StreamExt;

    fn props() -> Arc<BlobProps> {
        Arc::new(BlobProps {
            content_type: Some("image/jpeg".into()),
            content_encoding: Some("identity".into()),
            content_language: Some("de-CH".into()),
            cache_control: Some("max-age=60".into()),
            content_disposition: Some("attachment".into()),
            metadata: vec![
                ("owner".into(), "ferry".into()),
                ("year".into(), "2024".into()),
            ],
        })
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn large_blobs_go_in_blocks_and_copy_server_side_with_their_properties() {
        let src = azurite_store(Some(64 * 1024)).await;
        let data: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
        let mut m = meta("big/file.bin", &data);
        m.props = Some(props());
        let body = futures::stream::iter(
            data.chunks(10_000)
                .map(|c| Ok(Bytes::copy_from_slice(c)))
                .collect::<Vec<_>>(),
        )
        .boxed();
        src.write(&m, body).await.unwrap();
        assert_eq!(get(&src, "big/file.bin").await.unwrap(), data);

        let listed = src.list().next().await.unwrap().unwrap();
        let super::super::Listed::Blob(listed) = listed else {
            panic!("not a blob")
        };
        assert_eq!(
            listed.md5,
            Some(md5_of(&data)),
            "the blob's MD5 is set on commit"
        );
        assert_eq!(
            listed.props.as_deref(),
            Some(&*props()),
            "properties round-trip"
        );

        let dst = azurite_store(Some(64 * 1024)).await;
        dst.copy_from(&src, &listed).await.unwrap();
        assert_eq!(get(&dst, "big/file.bin").await.unwrap(), data);
        let copied = dst.list().next().await.unwrap().unwrap();
        let super::super::Listed::Blob(copied) = copied else {
            panic!("not a blob")
        };
        assert_eq!(copied.props.as_deref(), Some(&*props()));
        assert_eq!(copied.size, data.len() as u64);

        // A source that changed since it was listed fails (If-Match), never mixes.
        let stale = super::super::BlobMeta {
            etag: "\"0x8D0000000000000\"".into(),
            ..listed.clone()
        };
        let err = dst.copy_from(&src, &stale).await.unwrap_err();
        assert!(matches!(err, StoreError::SourceChanged { .. }), "{err}");
        let err = match src.read(&stale).await {
            Ok(mut s) => s.next().await.and_then(|r| r.err()),
            Err(e) => Some(e),
        };
        assert!(
            matches!(err, Some(StoreError::SourceChanged { .. })),
            "{err:?}"
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn block_size_doubles_to_stay_under_50000_blocks() {
        let s = azurite_store(Some(4 * 1024 * 1024)).await;
        assert_eq!(s.block_size_for(1 << 30), 4 * 1024 * 1024);
        let huge = 50_000u64 * 4 * 1024 * 1024 + 1;
        assert_eq!(s.block_size_for(huge), 8 * 1024 * 1024);
    }

    fn md5_of(d: &[u8]) -> [u8; 16] {
        use md5::{Digest, Md5};
        Md5::digest(d).into()
    }
}
