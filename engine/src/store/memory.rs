//! An in-process backend for tests and benchmarks. Stores with the same name
//! share their blobs within a process, so an `Address::Memory` can be opened
//! twice (once per job) and see the same data.

use std::collections::{BTreeMap, HashMap};
use std::ops::Bound;
use std::sync::{Arc, Mutex, OnceLock};

use bytes::{Bytes, BytesMut};
use futures::StreamExt;

use super::{names, BlobMeta, BlobStore, ByteStream, Listed, Listing, StoreError};

type Blobs = Arc<Mutex<BTreeMap<Key, (BlobMeta, Bytes)>>>;

/// A name kept in the listing order every store shares (`names::cmp`).
#[derive(Clone, PartialEq, Eq)]
struct Key(String);

impl Ord for Key {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        super::names::cmp(&self.0, &other.0)
    }
}

impl PartialOrd for Key {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

/// Listing page: how many entries are copied out per lock.
const PAGE: usize = 1000;

/// A map from name to blob, kept in memory.
#[derive(Clone, Default)]
pub struct MemoryStore {
    name: String,
    blobs: Blobs,
}

fn registry() -> &'static Mutex<HashMap<String, Blobs>> {
    static REG: OnceLock<Mutex<HashMap<String, Blobs>>> = OnceLock::new();
    REG.get_or_init(Default::default)
}

impl MemoryStore {
    /// The process-wide store called `name` (created empty on first use).
    pub fn named(name: &str) -> Self {
        let blobs = match registry().lock() {
            Ok(mut reg) => reg.entry(name.to_string()).or_default().clone(),
            Err(_) => Blobs::default(),
        };
        MemoryStore {
            name: name.to_string(),
            blobs,
        }
    }

    /// Inserts a blob directly (test and benchmark set-up).
    pub fn insert(&self, meta: BlobMeta, data: Bytes) {
        if let Ok(mut b) = self.blobs.lock() {
            b.insert(Key(meta.name.clone()), (meta, data));
        }
    }

    pub fn len(&self) -> usize {
        self.blobs.lock().map(|b| b.len()).unwrap_or(0)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn poisoned(&self) -> StoreError {
        StoreError::io(
            self.describe(),
            std::io::Error::other("memory store lock poisoned"),
        )
    }
}

pub(crate) fn etag_of(data: &[u8]) -> String {
    hex::encode(&md5_simd::digest(data)[..8])
}

#[async_trait::async_trait]
impl BlobStore for MemoryStore {
    fn describe(&self) -> String {
        format!("memory:{}", self.name)
    }

    fn list(&self) -> Listing {
        let blobs = self.blobs.clone();
        // Pages of PAGE entries: the lock is held briefly and the listing is
        // never copied whole.
        futures::stream::unfold(
            Some(Bound::Unbounded),
            move |after: Option<Bound<String>>| {
                let blobs = blobs.clone();
                async move {
                    let after = after?;
                    let page: Vec<BlobMeta> = match blobs.lock() {
                        Ok(b) => b
                            .range((after.map(Key), Bound::Unbounded))
                            .take(PAGE)
                            .map(|(_, (m, _))| m.clone())
                            .collect(),
                        Err(_) => return None,
                    };
                    let next = if page.len() == PAGE {
                        page.last().map(|m| Bound::Excluded(m.name.clone()))
                    } else {
                        None
                    };
                    Some((
                        futures::stream::iter(page.into_iter().map(|m| Ok(Listed::Blob(m)))),
                        next,
                    ))
                }
            },
        )
        .flatten()
        .boxed()
    }

    async fn head(&self, name: &str) -> Result<Option<BlobMeta>, StoreError> {
        names::check(name)?;
        let b = self.blobs.lock().map_err(|_| self.poisoned())?;
        Ok(b.get(&Key(name.to_string())).map(|(m, _)| m.clone()))
    }

    async fn read(&self, meta: &BlobMeta) -> Result<ByteStream, StoreError> {
        let name = meta.name.as_str();
        names::check(name)?;
        let data = {
            let b = self.blobs.lock().map_err(|_| self.poisoned())?;
            b.get(&Key(name.to_string()))
                .map(|(_, d)| d.clone())
                .ok_or_else(|| StoreError::NotFound {
                    what: format!("{}/{name}", self.describe()),
                })?
        };
        Ok(futures::stream::once(async move { Ok(data) }).boxed())
    }

    async fn write(&self, meta: &BlobMeta, mut data: ByteStream) -> Result<(), StoreError> {
        names::check(&meta.name)?;
        let mut buf = BytesMut::new();
        while let Some(chunk) = data.next().await {
            buf.extend_from_slice(&chunk?);
        }
        let data = buf.freeze();
        let stored = BlobMeta {
            name: meta.name.clone(),
            size: data.len() as u64,
            modified: meta.modified,
            etag: etag_of(&data),
            md5: None,
            props: meta.props.clone(),
            mode: meta.mode,
        };
        self.insert(stored, data);
        Ok(())
    }
}
