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

impl Merge {
    pub fn new(list: Listing) -> Self {
        Merge {
            list: list.peekable(),
            done: false,
        }
    }

    /// The destination's entry for `name`, if it has one. Names must be
    /// asked for in ascending order. A destination that does not exist yet is
    /// empty; any other listing failure is returned (guessing "absent" could
    /// overwrite what the policy would keep).
    pub async fn find(&mut self, name: &str) -> Result<Option<BlobMeta>, StoreError> {
        loop {
            if self.done {
                return Ok(None);
            }
            let mut list = Pin::new(&mut self.list);
            let order = match list.as_mut().peek().await {
                None => {
                    self.done = true;
                    return Ok(None);
                }
                Some(Err(_)) => {
                    self.done = true;
                    return match list.next().await {
                        Some(Err(StoreError::NotFound { .. })) | None => Ok(None),
                        Some(Err(e)) => Err(e),
                        Some(Ok(_)) => Ok(None),
                    };
                }
                Some(Ok(Listed::Blob(m))) => m.name.as_str().cmp(name),
                Some(Ok(Listed::Failed { name, error })) => {
                    tracing::warn!(blob = %name, error = %error, "destination entry could not be listed");
                    Ordering::Less
                }
                Some(Ok(Listed::Skipped { .. })) => Ordering::Less,
            };
            match order {
                Ordering::Less => {
                    list.next().await;
                }
                Ordering::Equal => {
                    return Ok(match list.next().await {
                        Some(Ok(Listed::Blob(m))) => Some(m),
                        _ => None,
                    })
                }
                Ordering::Greater => return Ok(None),
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
        assert!(m.find("a").await.unwrap().is_some());
        assert!(m.find("b").await.unwrap().is_none());
        assert_eq!(m.find("b/c").await.unwrap().unwrap().name, "b/c");
        assert!(m.find("e").await.unwrap().is_none());
        assert!(m.find("f").await.unwrap().is_some());
        assert!(m.find("g").await.unwrap().is_none());
    }

    #[tokio::test]
    async fn a_missing_destination_is_empty() {
        let d = tempfile::tempdir().unwrap();
        let store = crate::store::LocalStore::new(d.path().join("nope"));
        let mut m = Merge::new(store.list());
        assert!(m.find("a").await.unwrap().is_none());
    }
}
