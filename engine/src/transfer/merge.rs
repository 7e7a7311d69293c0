//! Streaming merge-join of the destination listing against source names.
//! Both listings arrive in the stores' shared name order (`names::cmp`:
//! UTF-16 code units, as Azure lists), so each destination entry is looked
//! at once and nothing is held beyond one peeked item.
//!
//! A listing that breaks that order (an Azure account with a hierarchical
//! namespace lists `A/x` before `A-B`) is caught where an entry or a name
//! asked for goes backwards: from there on each name is looked up by
//! itself (a HEAD), with a warning, rather than taken as absent and
//! overwritten.

use std::cmp::Ordering;
use std::pin::Pin;
use std::sync::Arc;

use futures::stream::{Peekable, StreamExt};

use crate::store::{names, BlobMeta, BlobStore, Listed, Listing, StoreError};

pub(crate) struct Merge {
    list: Peekable<Listing>,
    done: bool,
    /// The destination, for lookups once the listing is out of order.
    store: Arc<dyn BlobStore>,
    /// The last destination entry passed and the last name asked for
    /// (empty: none yet; names are never empty).
    last_entry: String,
    last_asked: String,
    /// The order broke: every name is looked up by itself.
    by_name: bool,
}

/// What the destination holds under a name.
#[derive(Debug)]
pub(crate) enum Found {
    Absent,
    Blob(BlobMeta),
    /// Something the copy must not judge or replace (a symbolic link, an
    /// entry that could not be read): the blob fails with this error.
    Unusable(StoreError),
}

impl Merge {
    /// Takes the destination's [`BlobStore::list_existing`].
    ///
    /// [`BlobStore::list_existing`]: crate::store::BlobStore::list_existing
    pub async fn new(store: Arc<dyn BlobStore>) -> Self {
        let by_name = !store.lists_in_name_order().await;
        if by_name {
            tracing::info!(
                destination = %store.describe(),
                "the destination lists names in its own order (a hierarchical namespace): each blob is looked up by itself"
            );
        }
        Merge {
            list: store.list_existing().peekable(),
            done: false,
            store,
            last_entry: String::new(),
            last_asked: String::new(),
            by_name,
        }
    }

    /// Gives up the merge for lookups by name, once.
    fn out_of_order(&mut self, at: &str, after: &str) {
        if !self.by_name {
            tracing::warn!(
                destination = %self.store.describe(),
                "names listed out of order ({at:?} after {after:?}); each blob is now looked up at the destination by itself"
            );
        }
        self.by_name = true;
    }

    /// `store`, not `self`: the listing held in `self` is not `Sync`.
    async fn look_up(store: Arc<dyn BlobStore>, name: &str) -> Result<Found, StoreError> {
        Ok(match store.head(name).await? {
            Some(m) => Found::Blob(m),
            None => Found::Absent,
        })
    }

    /// The destination's entry for `name`. Names must be asked for in
    /// ascending order. A destination that does not exist yet is empty; any
    /// other failure of the whole listing is returned (guessing "absent"
    /// could overwrite what the policy would keep).
    pub async fn find(&mut self, name: &str) -> Result<Found, StoreError> {
        if !self.last_asked.is_empty() && names::cmp(name, &self.last_asked) != Ordering::Greater {
            let last = std::mem::take(&mut self.last_asked);
            self.out_of_order(name, &last);
        }
        // Buffers reused blob after blob: no allocation per name.
        self.last_asked.clear();
        self.last_asked.push_str(name);
        loop {
            if self.by_name {
                return Self::look_up(self.store.clone(), name).await;
            }
            if self.done {
                return Ok(Found::Absent);
            }
            let mut list = Pin::new(&mut self.list);
            let last = self.last_entry.as_str();
            // A peeked entry at or before the last one passed: the listing
            // is not in the shared order (its name, for the warning).
            let back = |entry: &str| {
                (!last.is_empty() && names::cmp(entry, last) != Ordering::Greater)
                    .then(|| entry.to_string())
            };
            let (order, backwards) = match list.as_mut().peek().await {
                None => {
                    self.done = true;
                    return Ok(Found::Absent);
                }
                Some(Err(_)) => {
                    self.done = true;
                    return match list.next().await {
                        Some(Err(StoreError::NotFound { .. })) | None => Ok(Found::Absent),
                        Some(Err(e)) => Err(e),
                        Some(Ok(_)) => Ok(Found::Absent),
                    };
                }
                Some(Ok(Listed::Blob(m))) => (names::cmp(&m.name, name), back(&m.name)),
                Some(Ok(Listed::Failed { name: entry, error })) => {
                    let order = names::cmp(entry, name);
                    // A link no source blob lands on is none of the copy's
                    // business; an unreadable folder may be.
                    if order == Ordering::Less && !matches!(error, StoreError::Conflict { .. }) {
                        tracing::warn!(blob = %entry, error = %error, "destination entry could not be listed");
                    }
                    (order, back(entry))
                }
                Some(Ok(Listed::Skipped { .. })) => (Ordering::Less, None),
            };
            if let Some(entry) = backwards {
                let last = self.last_entry.clone();
                self.out_of_order(&entry, &last);
                continue;
            }
            let passed = |last: &mut String, entry: &str| {
                last.clear();
                last.push_str(entry);
            };
            match order {
                Ordering::Less => match list.next().await {
                    Some(Ok(Listed::Blob(m))) => passed(&mut self.last_entry, &m.name),
                    Some(Ok(Listed::Failed { name, .. })) => passed(&mut self.last_entry, &name),
                    _ => {}
                },
                Ordering::Equal => {
                    return Ok(match list.next().await {
                        Some(Ok(Listed::Blob(m))) => {
                            passed(&mut self.last_entry, &m.name);
                            Found::Blob(m)
                        }
                        Some(Ok(Listed::Failed { name, error })) => {
                            passed(&mut self.last_entry, &name);
                            Found::Unusable(error)
                        }
                        _ => Found::Absent,
                    })
                }
                Ordering::Greater => return Ok(Found::Absent),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{BlobStore, MemoryStore};
    use bytes::Bytes;

    fn meta(name: &str) -> BlobMeta {
        BlobMeta {
            name: name.into(),
            size: 1,
            modified: chrono::Utc::now(),
            etag: "e".into(),
            md5: None,
            props: None,
            mode: None,
        }
    }

    #[tokio::test]
    async fn finds_matches_and_gaps_in_one_pass() {
        let store = MemoryStore::named("merge-test");
        for n in ["a", "b/c", "d", "f"] {
            store.insert(meta(n), Bytes::from_static(b"x"));
        }
        let mut m = Merge::new(Arc::new(store)).await;
        let found = |f: Found| match f {
            Found::Blob(m) => Some(m.name),
            Found::Absent => None,
            Found::Unusable(e) => panic!("{e}"),
        };
        assert_eq!(found(m.find("a").await.unwrap()).as_deref(), Some("a"));
        assert_eq!(found(m.find("b").await.unwrap()), None);
        assert_eq!(found(m.find("b/c").await.unwrap()).as_deref(), Some("b/c"));
        assert_eq!(found(m.find("e").await.unwrap()), None);
        assert_eq!(found(m.find("f").await.unwrap()).as_deref(), Some("f"));
        assert_eq!(found(m.find("g").await.unwrap()), None);
    }

    /// A memory store whose listing comes in the order given, as an
    /// account with a hierarchical namespace lists (`A/x` before `A-B`);
    /// `says_so`: it answers `lists_in_name_order` truthfully, as such an
    /// Azure account does.
    struct Misordered {
        store: MemoryStore,
        listed: Vec<&'static str>,
        says_so: bool,
    }

    #[async_trait::async_trait]
    impl BlobStore for Misordered {
        fn describe(&self) -> String {
            self.store.describe()
        }
        fn list(&self) -> Listing {
            let metas: Vec<_> = self
                .listed
                .iter()
                .map(|n| Ok(Listed::Blob(meta(n))))
                .collect();
            futures::stream::iter(metas).boxed()
        }
        async fn head(&self, name: &str) -> Result<Option<BlobMeta>, StoreError> {
            self.store.head(name).await
        }
        async fn read(&self, meta: &BlobMeta) -> Result<crate::store::ByteStream, StoreError> {
            self.store.read(meta).await
        }
        async fn write(
            &self,
            meta: &BlobMeta,
            data: crate::store::ByteStream,
        ) -> Result<(), StoreError> {
            self.store.write(meta, data).await
        }
        async fn lists_in_name_order(&self) -> bool {
            !self.says_so
        }
    }

    /// The names found asking in the shared order, against a listing
    /// that comes as `A, A/x, A-B, A-B/y, B`.
    async fn found_against_misordered(tag: &str, says_so: bool) -> (Vec<String>, bool) {
        let store = MemoryStore::named(tag);
        let listed = vec!["A", "A/x", "A-B", "A-B/y", "B"];
        for n in &listed {
            store.insert(meta(n), Bytes::from_static(b"x"));
        }
        let mut m = Merge::new(Arc::new(Misordered {
            store,
            listed,
            says_so,
        }))
        .await;
        let mut found = Vec::new();
        for name in ["A", "A-B", "A-B/y", "A/x", "B", "C"] {
            if let Found::Blob(b) = m.find(name).await.unwrap() {
                found.push(b.name);
            }
        }
        (found, m.by_name)
    }

    #[tokio::test]
    async fn a_listing_out_of_order_falls_back_to_lookups_and_misses_nothing_after() {
        let (found, by_name) = found_against_misordered("merge-misordered", false).await;
        // Names between `A` and `A/x` in the shared order come late in this
        // listing: taken as absent until the order break shows (at `A-B`
        // after `A/x`); from there each name is looked up. Why a store says
        // up front when it lists in another order (`lists_in_name_order`).
        assert_eq!(found, ["A", "A/x", "B"]);
        assert!(by_name);
    }

    #[tokio::test]
    async fn a_store_that_lists_in_its_own_order_is_looked_up_name_by_name() {
        let (found, _) = found_against_misordered("merge-hierarchical", true).await;
        assert_eq!(found, ["A", "A-B", "A-B/y", "A/x", "B"]);
    }

    #[tokio::test]
    async fn a_source_asking_out_of_order_is_answered_by_lookups() {
        let store = MemoryStore::named("merge-asked-out-of-order");
        for n in ["A", "A-B", "A/x"] {
            store.insert(meta(n), Bytes::from_static(b"x"));
        }
        let mut m = Merge::new(Arc::new(store)).await;
        let mut found = Vec::new();
        // A hierarchical source lists `A/x` before `A-B`.
        for name in ["A", "A/x", "A-B", "B"] {
            if let Found::Blob(b) = m.find(name).await.unwrap() {
                found.push(b.name);
            }
        }
        assert_eq!(found, ["A", "A/x", "A-B"]);
    }

    #[tokio::test]
    async fn names_beyond_the_basic_plane_merge_in_utf16_order() {
        let store = MemoryStore::named("merge-utf16");
        let names = ["a", "z", "\u{1F600}x", "\u{e000}x", "\u{ff01}x"];
        for n in names {
            store.insert(meta(n), Bytes::from_static(b"x"));
        }
        let listed: Vec<String> = store
            .list()
            .map(|l| match l.unwrap() {
                Listed::Blob(b) => b.name,
                other => panic!("{other:?}"),
            })
            .collect()
            .await;
        assert_eq!(listed, names, "listed as Azure lists them");
        let mut m = Merge::new(Arc::new(store)).await;
        for n in names {
            assert!(matches!(m.find(n).await.unwrap(), Found::Blob(_)), "{n}");
        }
        assert!(!m.by_name);
    }

    #[tokio::test]
    async fn a_missing_destination_is_empty() {
        let d = tempfile::tempdir().unwrap();
        let store = crate::store::LocalStore::new(d.path().join("nope"));
        let mut m = Merge::new(Arc::new(store)).await;
        assert!(matches!(m.find("a").await.unwrap(), Found::Absent));
    }

    #[tokio::test]
    async fn a_link_in_a_local_destination_is_unusable_not_its_target() {
        let d = tempfile::tempdir().unwrap();
        let dst = d.path().join("dst");
        std::fs::create_dir_all(&dst).unwrap();
        std::fs::write(d.path().join("elsewhere"), b"unrelated").unwrap();
        std::os::unix::fs::symlink(d.path().join("elsewhere"), dst.join("b")).unwrap();
        std::os::unix::fs::symlink(d.path().join("nowhere"), dst.join("c")).unwrap();
        std::fs::write(dst.join("d"), b"real").unwrap();
        let store = crate::store::LocalStore::new(&dst);
        let mut m = Merge::new(Arc::new(store.clone())).await;
        for name in ["b", "c"] {
            match m.find(name).await.unwrap() {
                Found::Unusable(e) => assert!(e.to_string().contains("symbolic link"), "{e}"),
                other => panic!("{name}: {other:?}"),
            }
        }
        assert!(matches!(m.find("d").await.unwrap(), Found::Blob(_)));
        // A source still reads through the link.
        let mut src = store.list();
        let first = src.next().await.unwrap().unwrap();
        assert!(
            matches!(first, Listed::Blob(ref b) if b.name == "b"),
            "{first:?}"
        );
    }
}
