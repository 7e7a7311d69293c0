//! Blob stores: a minimal trait and one module per backend. Every backend
//! passes the same conformance suite (`store::conformance` in tests).

mod local;
mod memory;
pub mod names;

use std::sync::Arc;

use bytes::Bytes;
use chrono::{DateTime, Utc};
use futures::stream::BoxStream;

use crate::event::{ErrorKind, SkipReason};
use crate::job::Address;

pub use local::LocalStore;
pub use memory::MemoryStore;

/// What a listing says about one blob.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlobMeta {
    /// Path relative to the store root, `/`-separated, validated by [`names::check`].
    pub name: String,
    pub size: u64,
    pub modified: DateTime<Utc>,
    /// Changes whenever the content may have changed (local: mtime + size).
    pub etag: String,
    /// Content MD5 when the backend knows it without reading the blob.
    pub md5: Option<[u8; 16]>,
}

/// One item of a listing.
#[derive(Debug)]
pub enum Listed {
    Blob(BlobMeta),
    /// Something under the root that is not copied, and why.
    Skipped {
        name: String,
        reason: SkipReason,
    },
    /// An entry that could not be listed; the job records it and goes on.
    Failed {
        name: String,
        error: StoreError,
    },
}

/// Items in lexicographic (byte) order of name; an `Err` ends the listing.
pub type Listing = BoxStream<'static, Result<Listed, StoreError>>;
/// A blob's content in chunks.
pub type ByteStream = BoxStream<'static, Result<Bytes, StoreError>>;

/// Errors of a store operation.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{what} not found")]
    NotFound { what: String },
    #[error("{what}: permission denied")]
    PermissionDenied { what: String },
    #[error("invalid blob name {name:?}: {why}")]
    InvalidName { name: String, why: String },
    #[error("{name} changed while it was being copied; it will be copied again on the next run")]
    SourceChanged { name: String },
    #[error("{what}: {why}")]
    Conflict { what: String, why: String },
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
}

impl StoreError {
    /// Maps an I/O error on `what` (a path or name, never a secret).
    pub fn io(what: impl Into<String>, e: std::io::Error) -> Self {
        let what = what.into();
        match e.kind() {
            std::io::ErrorKind::NotFound => StoreError::NotFound { what },
            std::io::ErrorKind::PermissionDenied => StoreError::PermissionDenied { what },
            std::io::ErrorKind::IsADirectory | std::io::ErrorKind::NotADirectory => {
                StoreError::Conflict {
                    what,
                    why: e.to_string(),
                }
            }
            _ => StoreError::Io { what, source: e },
        }
    }

    pub fn kind(&self) -> ErrorKind {
        match self {
            StoreError::NotFound { .. } => ErrorKind::NotFound,
            StoreError::PermissionDenied { .. } => ErrorKind::PermissionDenied,
            StoreError::InvalidName { .. } => ErrorKind::InvalidName,
            StoreError::SourceChanged { .. } => ErrorKind::SourceChanged,
            StoreError::Conflict { .. } => ErrorKind::DestinationConflict,
            StoreError::Io { .. } => ErrorKind::Io,
        }
    }

    /// Whether trying again may succeed without anyone changing anything.
    pub fn is_transient(&self) -> bool {
        match self {
            StoreError::SourceChanged { .. } => true,
            StoreError::Io { source, .. } => matches!(
                source.kind(),
                std::io::ErrorKind::Interrupted
                    | std::io::ErrorKind::TimedOut
                    | std::io::ErrorKind::WouldBlock
                    | std::io::ErrorKind::ConnectionReset
                    | std::io::ErrorKind::ConnectionAborted
                    | std::io::ErrorKind::UnexpectedEof
            ),
            _ => false,
        }
    }
}

/// A place blobs are listed, read and written. Names are relative to the
/// store's root; implementations refuse names that would escape it.
#[async_trait::async_trait]
pub trait BlobStore: Send + Sync + 'static {
    /// Where this store points, for messages (never holds a secret).
    fn describe(&self) -> String;

    /// Streams every blob under the root in byte order of name, without
    /// holding the whole listing in memory.
    fn list(&self) -> Listing;

    /// One blob's metadata, `None` if absent.
    async fn head(&self, name: &str) -> Result<Option<BlobMeta>, StoreError>;

    /// The blob's content.
    async fn read(&self, name: &str) -> Result<ByteStream, StoreError>;

    /// Writes a whole blob so that readers never see a partial one, and
    /// keeps `meta.modified` where the backend can.
    async fn write(&self, meta: &BlobMeta, data: ByteStream) -> Result<(), StoreError>;

    /// The local backend, for the kernel-side copy fast path.
    fn as_local(&self) -> Option<&LocalStore> {
        None
    }
}

/// Opens the store an address names. `temp_tag` names in-progress files
/// (one tag per job, see [`LocalStore`]).
pub fn open(addr: &Address, temp_tag: &str) -> Result<Arc<dyn BlobStore>, StoreError> {
    match addr {
        Address::Local { path } => Ok(Arc::new(LocalStore::with_temp_tag(path, temp_tag))),
        Address::Memory { name } => Ok(Arc::new(MemoryStore::named(name))),
    }
}

#[cfg(test)]
pub(crate) mod conformance;
