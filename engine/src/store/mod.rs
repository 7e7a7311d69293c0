//! Blob stores: a minimal trait and one module per backend. Every backend
//! passes the same conformance suite (`store::conformance` in tests).

pub mod azure;
mod file_data;
mod local;
mod memory;
pub mod names;

use std::sync::Arc;

use bytes::Bytes;
use chrono::{DateTime, Utc};
use futures::stream::BoxStream;

use crate::config::{Account, Accounts};
use crate::error::EngineError;
use crate::event::{ErrorKind, SkipReason};
use crate::job::Address;

pub use local::{FolderCache, LocalStore, Positioned};
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
    /// HTTP properties and user metadata, where the backend has them
    /// (Azure); copied along with the content.
    pub props: Option<Arc<BlobProps>>,
    /// Permission bits, where the backend keeps them (local files): a
    /// copy that is skipped as current still takes a changed mode.
    pub mode: Option<u32>,
}

/// Properties a blob carries besides its content.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BlobProps {
    pub content_type: Option<String>,
    pub content_encoding: Option<String>,
    pub content_language: Option<String>,
    pub cache_control: Option<String>,
    pub content_disposition: Option<String>,
    pub metadata: Vec<(String, String)>,
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
    #[error("{what}: the service answered {}", answer(*.status, .code))]
    Service {
        what: String,
        status: u16,
        code: String,
        transient: bool,
    },
    #[error("{what}: {cause}")]
    Io { what: String, cause: std::io::Error },
    /// Not retried: a blob whose stored MD5 is wrong would be read again
    /// and again, and damage in transit past TCP's and TLS's checks is
    /// rare enough for the next run (or the daemon's replay) to retry.
    #[error("{name}: the bytes read do not match the source's MD5 (stored {expected}, read {read}); the copy was not kept. The blob may be damaged or its Content-MD5 wrong: check it, or copy it again with `ferry copy ... --check-md5 off`")]
    ContentMismatch {
        name: String,
        expected: String,
        read: String,
    },
}

/// The cause of an [`StoreError::Io`] whose transport failure (no
/// connection, or one that broke) the request pipeline already retried: of
/// kind `Other`, so a blob does not retry it again, yet still a sign that
/// the service cannot be reached (`transfer::outage`).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct RetriedTransport(pub String);

/// `503 ServerBusy`, or just `500` when the service gave no error code.
fn answer(status: u16, code: &str) -> String {
    if code.is_empty() {
        status.to_string()
    } else {
        format!("{status} {code}")
    }
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
            _ => StoreError::Io { what, cause: e },
        }
    }

    /// The error for `name` when the bytes read hash to `read` instead of
    /// the source's `expected` MD5; `None` when they match.
    pub fn mismatch(name: &str, expected: [u8; 16], read: [u8; 16]) -> Option<StoreError> {
        (expected != read).then(|| StoreError::ContentMismatch {
            name: name.to_string(),
            expected: hex::encode(expected),
            read: hex::encode(read),
        })
    }

    pub fn kind(&self) -> ErrorKind {
        match self {
            StoreError::NotFound { .. } => ErrorKind::NotFound,
            StoreError::PermissionDenied { .. } => ErrorKind::PermissionDenied,
            StoreError::InvalidName { .. } => ErrorKind::InvalidName,
            StoreError::SourceChanged { .. } => ErrorKind::SourceChanged,
            StoreError::Conflict { .. } => ErrorKind::DestinationConflict,
            StoreError::Service { .. } => ErrorKind::Service,
            StoreError::Io { .. } => ErrorKind::Io,
            StoreError::ContentMismatch { .. } => ErrorKind::ContentMismatch,
        }
    }

    /// Whether trying again may succeed without anyone changing anything.
    /// Why this error is worth another try of the whole blob, or `None`.
    pub fn fault(&self) -> Option<crate::retry::Fault> {
        if !self.is_transient() {
            return None;
        }
        let cause = match self {
            StoreError::SourceChanged { .. } => "source changed".to_string(),
            StoreError::Service { status, code, .. } => {
                format!("{status} {code}").trim().to_string()
            }
            StoreError::Io { cause, .. } => match cause.kind() {
                std::io::ErrorKind::TimedOut => "timeout".into(),
                std::io::ErrorKind::UnexpectedEof => "connection closed early".into(),
                std::io::ErrorKind::ConnectionReset => "connection reset".into(),
                k => format!("I/O: {k}"),
            },
            _ => "transient".into(),
        };
        Some(crate::retry::Fault::new(cause))
    }

    pub fn is_transient(&self) -> bool {
        match self {
            StoreError::SourceChanged { .. } => true,
            StoreError::Service { transient, .. } => *transient,
            StoreError::Io { cause, .. } => matches!(
                cause.kind(),
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

    /// Streams every blob under the root in the shared name order
    /// (`names::cmp`: UTF-16 code units, as Azure lists), without
    /// holding the whole listing in memory.
    fn list(&self) -> Listing;

    /// The listing a copy judges existing blobs by when this store is the
    /// destination: as [`BlobStore::list`], except that an entry the copy
    /// could not replace as it is (a local symbolic link) comes as
    /// [`Listed::Failed`] with the reason.
    fn list_existing(&self) -> Listing {
        self.list()
    }

    /// One blob's metadata, `None` if absent.
    async fn head(&self, name: &str) -> Result<Option<BlobMeta>, StoreError>;

    /// The blob's content. Where the backend can, the read is pinned to
    /// `meta.etag` (if not empty), so a blob that changes meanwhile fails.
    async fn read(&self, meta: &BlobMeta) -> Result<ByteStream, StoreError>;

    /// Writes a whole blob so that readers never see a partial one, and
    /// keeps `meta.modified` where the backend can.
    async fn write(&self, meta: &BlobMeta, data: ByteStream) -> Result<(), StoreError>;

    /// Gets a destination ready before the first write (e.g. creates the
    /// Azure container).
    async fn prepare_destination(&self) -> Result<(), StoreError> {
        Ok(())
    }

    /// Whether modification times are kept only to the second.
    /// Whether `list_existing` comes in the shared name order
    /// (`names::cmp`). An Azure account with a hierarchical namespace lists
    /// `A/x` before `A-B`; a merge against such a listing would take blobs
    /// that come "late" as absent, so it looks each name up instead.
    async fn lists_in_name_order(&self) -> bool {
        true
    }

    fn whole_second_times(&self) -> bool {
        false
    }

    /// The local backend, for the kernel-side copy fast path.
    fn as_local(&self) -> Option<&LocalStore> {
        None
    }

    /// The Azure backend, for server-side copies.
    fn as_azure(&self) -> Option<&azure::AzureStore> {
        None
    }
}

/// How to open stores: in-progress file naming and the accounts behind
/// account names.
pub struct OpenOptions<'a> {
    /// Names in-progress files (one tag per job, see [`LocalStore`]).
    pub temp_tag: &'a str,
    pub accounts: &'a Accounts,
    pub block_size: Option<u64>,
    /// How requests to remote stores are retried.
    pub retry: crate::retry::RetryPolicy,
}

/// Opens the store an address names.
pub fn open(addr: &Address, o: &OpenOptions<'_>) -> Result<Arc<dyn BlobStore>, EngineError> {
    Ok(match addr {
        Address::Local { path } => Arc::new(LocalStore::with_temp_tag(path, o.temp_tag)),
        Address::Memory { name } => Arc::new(MemoryStore::named(name)),
        Address::Azure {
            account,
            container,
            prefix,
        } => match o.accounts.get(account)? {
            Account::Azure(acct) => Arc::new(azure::AzureStore::open(
                acct,
                container,
                prefix,
                o.block_size,
                o.retry,
            )?),
            Account::Local(root) => {
                let path = root.join(container).join(prefix);
                Arc::new(LocalStore::with_temp_tag(path, o.temp_tag))
            }
        },
        Address::AzureUrl { url } => {
            let parsed = url::Url::parse(url)
                .map_err(|_| EngineError::InvalidInput(format!("{url} is not a valid URL")))?;
            Arc::new(azure::AzureStore::open_url(
                &parsed,
                o.accounts.url_sas(url),
                o.block_size,
                o.retry,
            )?)
        }
    })
}

#[cfg(test)]
pub(crate) mod conformance;
#[cfg(test)]
mod md5_tests;
