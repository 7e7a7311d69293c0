//! Streaming merge-join of the destination listing against source names.
//! Both listings arrive in byte order of name, so each destination entry is
//! looked at once and nothing is held beyond one peeked item.

use std::cmp::Ordering;
use std::pin::Pin;

use futures::stream::{Peekable, StreamExt};

use crate::store::{BlobMeta, Listed, Listing, StoreError};

pub(crate) struct Merge {
    list: Peekable<Listing>,
    done: bool,
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
    pub fn new(list: Listing) -> Self {
        Merge {
            list: list.peekable(),
            done: false,
        }
    }

    /// The destination's entry for `name`. Names must be asked for in
    /// ascending order. A destination that does not exist yet is empty; any
    /// other failure of the whole listing is returned (guessing "absent"
    /// could overwrite what the policy would keep).
    pub async fn find(&mut self, name: &str) -> Result<Found, StoreError> {
        loop {
            if self.done {
                return Ok(Found::Absent);
            }
            let mut list = Pin::new(&mut self.list);
            let order = match list.as_mut().peek().await {
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
                Some(Ok(Listed::Blob(m))) => m.name.as_str().cmp(name),
                Some(Ok(Listed::Failed { name: entry, error })) => {
                    let order = entry.as_str().cmp(name);
                    // A link no source blob lands on is none of the copy's
                    // business; an unreadable folder may be.
                    if order == Ordering::Less && !matches!(error, StoreError::Conflict { .. }) {
                        tracing::warn!(blob = %entry, error = %error, "destination entry could not be listed");
                    }
                    order
                }
                Some(Ok(Listed::Skipped { .. })) => Ordering::Less,
            };
            match order {
                Ordering::Less => {
                    list.next().await;
                }
                Ordering::Equal => {
                    return Ok(match list.next().await {
                        Some(Ok(Listed::Blob(m))) => Found::Blob(m),
                        Some(Ok(Listed::Failed { error, .. })) => Found::Unusable(error),
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
        }
    }

    #[tokio::test]
    async fn finds_matches_and_gaps_in_one_pass() {
        let store = MemoryStore::named("merge-test");
        for n in ["a", "b/c", "d", "f"] {
            store.insert(meta(n), Bytes::from_static(b"x"));
        }
        let mut m = Merge::new(store.list());
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

    #[tokio::test]
    async fn a_missing_destination_is_empty() {
        let d = tempfile::tempdir().unwrap();
        let store = crate::store::LocalStore::new(d.path().join("nope"));
        let mut m = Merge::new(store.list_existing());
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
        let mut m = Merge::new(store.list_existing());
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
