//! Azure Blob Storage backend on Microsoft's `azure_storage_blob` 1.x crate.
//! A store is one container (and optional prefix) of one account. Requests
//! are signed by our own per-try policies (`auth`), since the crate has no
//! Shared Key support; SAS tokens are added to the request URL at send time
//! so client URLs (and anything that prints them) never hold a secret.

pub mod auth;
mod budget;
pub mod errors;
mod ranged;
mod retry;

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use azure_core::http::policies::{Policy, PolicyResult};
use azure_core::http::{ClientOptions, Context, Request, RetryOptions, Transport};
use azure_storage_blob::models::{
    BlobClientDownloadOptions, BlobClientGetPropertiesResultHeaders,
    BlobClientStartCopyFromUrlOptions, BlobClientStartCopyFromUrlResultHeaders,
    BlobContainerClientListBlobsOptions, BlockBlobClientCommitBlockListOptions,
    BlockBlobClientStageBlockFromUrlOptions, BlockBlobClientUploadOptions, BlockListType,
    BlockLookupList, CopyStatus, HttpRange, ListBlobsIncludeItem,
};
use azure_storage_blob::{BlobContainerClient, BlobContainerClientOptions};
use bytes::{Bytes, BytesMut};
use chrono::{DateTime, Utc};
use futures::StreamExt;
use md5_simd::Md5;
use tokio::task::JoinSet;

use super::{names, BlobMeta, BlobProps, BlobStore, ByteStream, Listed, Listing, StoreError};
use crate::config::{Auth, AzureAccount};
use crate::retry::RetryPolicy;

/// Default block size for uploads and server-side copies.
pub const DEFAULT_BLOCK_SIZE: u64 = 8 * 1024 * 1024;
/// Azure's limit of blocks per blob.
const MAX_BLOCKS: u64 = 50_000;
/// Blocks of one blob in flight at once.
const BLOCK_PARALLELISM: usize = 8;
/// Azure's limit on blob name length, in characters.
const MAX_NAME: usize = 1024;
/// Listing page size (Azure's maximum).
const PAGE: u32 = 5000;

/// How long a SAS that ferry signs for a server-side copy stays valid.
const COPY_SAS_HOURS: i64 = 24;
/// Longest a server-side Copy Blob may stay pending before the blob fails.
const COPY_PENDING_LIMIT: std::time::Duration = std::time::Duration::from_secs(600);

/// One container (and prefix) of an Azure account.
#[derive(Clone)]
pub struct AzureStore {
    /// `account:container/prefix` or the bare container URL, for messages.
    label: String,
    /// The storage account's name (signs requests and SAS tokens).
    account: String,
    /// The account as the user named it (config name, or the storage
    /// account for bare URLs): what error messages say.
    display_account: String,
    container: String,
    /// `""` or ending in `/`: names in this store are relative to it.
    prefix: String,
    client: Arc<BlobContainerClient>,
    /// Container URL without any query: base of source URLs for copies.
    container_url: url::Url,
    auth: Auth,
    block_size: u64,
    /// Shared by every clone, so by every worker writing to this store.
    upload_budget: budget::UploadBudget,
}

impl fmt::Debug for AzureStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "AzureStore({})", self.label)
    }
}

/// Adds a SAS query string to each request at send time.
#[derive(Clone)]
struct SasPolicy(Arc<String>);

impl fmt::Debug for SasPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SasPolicy(<redacted>)")
    }
}

#[async_trait::async_trait]
impl Policy for SasPolicy {
    async fn send(
        &self,
        ctx: &Context,
        request: &mut Request,
        next: &[Arc<dyn Policy>],
    ) -> PolicyResult {
        let url = request.url_mut();
        let query = match url.query() {
            Some(q) if !q.is_empty() => format!("{q}&{}", self.0),
            _ => self.0.to_string(),
        };
        url.set_query(Some(&query));
        forward(ctx, request, next).await
    }
}

/// Sets `Content-MD5` on uploads with a body, so the service verifies each
/// Put Blob / Put Block (and Azurite skips computing CRC64 itself).
#[derive(Debug)]
struct ContentMd5Policy;

#[async_trait::async_trait]
impl Policy for ContentMd5Policy {
    async fn send(
        &self,
        ctx: &Context,
        request: &mut Request,
        next: &[Arc<dyn Policy>],
    ) -> PolicyResult {
        let is_put = request.method() == azure_core::http::Method::Put;
        let has = request
            .headers()
            .iter()
            .any(|(n, _)| n.as_str().eq_ignore_ascii_case("content-md5"));
        if is_put && !has {
            if let azure_core::http::Body::Bytes(b) = request.body() {
                if !b.is_empty() {
                    let md5 = base64_encode(&md5_simd::digest(b));
                    request.insert_header("content-md5", md5);
                }
            }
        }
        forward(ctx, request, next).await
    }
}

pub(crate) async fn forward(
    ctx: &Context<'_>,
    request: &mut Request,
    next: &[Arc<dyn Policy>],
) -> PolicyResult {
    match next.split_first() {
        Some((first, rest)) => first.send(ctx, request, rest).await,
        None => Err(azure_core::Error::with_message(
            azure_core::error::ErrorKind::Other,
            "no transport in the pipeline",
        )),
    }
}

fn base64_encode(b: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(b)
}

/// An HTTP client per store: pooled connections belong to the runtime
/// that opened them, and a store lives within one runtime.
fn http_client(try_timeout: std::time::Duration) -> Result<Arc<reqwest::Client>, StoreError> {
    static PROVIDER: std::sync::Once = std::sync::Once::new();
    // ring as rustls' crypto provider: no C toolchain beyond cc.
    PROVIDER.call_once(|| {
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
    reqwest::Client::builder()
        .pool_max_idle_per_host(256)
        .connect_timeout(std::time::Duration::from_secs(10))
        // A body that stops arriving is a stall like a late response.
        .read_timeout(try_timeout)
        .build()
        .map(Arc::new)
        .map_err(|e| StoreError::io("HTTP client", std::io::Error::other(e.to_string())))
}

impl AzureStore {
    /// A store for `container/prefix` of a configured account.
    pub fn open(
        acct: &AzureAccount,
        container: &str,
        prefix: &str,
        block_size: Option<u64>,
        retry: RetryPolicy,
    ) -> Result<Self, StoreError> {
        let label = if prefix.is_empty() {
            format!("{}:{container}", acct.name)
        } else {
            format!("{}:{container}/{prefix}", acct.name)
        };
        let mut container_url = acct.endpoint.clone();
        container_url
            .path_segments_mut()
            .map_err(|_| StoreError::InvalidName {
                name: label.clone(),
                why: "endpoint cannot be a base URL".into(),
            })?
            .pop_if_empty()
            .push(container);
        Self::build(
            label,
            (acct.account.clone(), acct.name.clone()),
            container,
            prefix,
            container_url,
            acct.auth.clone(),
            (block_size, retry),
        )
    }

    /// A store for a bare container URL whose SAS came from the command line.
    pub fn open_url(
        url: &url::Url,
        sas: Option<&str>,
        block_size: Option<u64>,
        retry: RetryPolicy,
    ) -> Result<Self, StoreError> {
        let bad = |why: &str| StoreError::InvalidName {
            name: url.to_string(),
            why: why.into(),
        };
        let account = crate::config::account_from_endpoint(url)
            .ok_or_else(|| bad("cannot tell the account from the URL"))?;
        let mut segs: Vec<String> = url
            .path_segments()
            .map(|s| s.map(|x| x.to_string()).collect())
            .unwrap_or_default();
        segs.retain(|s| !s.is_empty());
        let path_style = segs.first() == Some(&account)
            && url
                .host_str()
                .is_some_and(|h| !h.starts_with(&format!("{account}.")));
        if path_style {
            segs.remove(0);
        }
        let container = segs
            .first()
            .cloned()
            .ok_or_else(|| bad("the URL names no container"))?;
        let container = percent_decode(&container);
        let prefix = segs[1..]
            .iter()
            .map(|s| percent_decode(s))
            .collect::<Vec<_>>()
            .join("/");
        let mut container_url = url.clone();
        container_url.set_query(None);
        {
            let mut p = container_url
                .path_segments_mut()
                .map_err(|_| bad("not a base URL"))?;
            p.clear();
            if path_style {
                p.push(&account);
            }
            p.push(&container);
        }
        let sas = sas.ok_or_else(|| StoreError::PermissionDenied {
            what: format!("{url}: no SAS for this container URL; pass it again (--src-sas/--dst-sas or FERRY_SRC_SAS/FERRY_DST_SAS)"),
        })?;
        let label = url.as_str().trim_end_matches('/').to_string();
        Self::build(
            label,
            (account.clone(), account),
            &container,
            &prefix,
            container_url,
            Auth::Sas(sas.to_string()),
            (block_size, retry),
        )
    }

    fn build(
        label: String,
        (account, display_account): (String, String),
        container: &str,
        prefix: &str,
        container_url: url::Url,
        auth: Auth,
        (block_size, retry): (Option<u64>, RetryPolicy),
    ) -> Result<Self, StoreError> {
        let mut options = ClientOptions::default();
        options.per_try_policies.push(Arc::new(ContentMd5Policy));
        match &auth {
            Auth::SharedKey(key) => {
                options
                    .per_try_policies
                    .push(Arc::new(auth::SharedKeyPolicy {
                        account: account.clone(),
                        key: key.clone(),
                    }))
            }
            // Per call, before the retries: added once, not once per try.
            Auth::Sas(sas) => options
                .per_call_policies
                .push(Arc::new(SasPolicy(Arc::new(sas.clone())))),
        }
        options
            .per_call_policies
            .push(Arc::new(retry::RetryRequests(retry)));
        options.transport = Some(Transport::new(http_client(retry.try_timeout)?));
        // ferry retries itself (and counts the retries); the SDK must not.
        options.retry = RetryOptions::none();
        let client = Arc::new(
            BlobContainerClient::new(
                container_url.clone(),
                None,
                Some(BlobContainerClientOptions {
                    client_options: options,
                    ..Default::default()
                }),
            )
            .map_err(|e| errors::map(&e, &label, &account))?,
        );
        let prefix = match prefix.trim_matches('/') {
            "" => String::new(),
            p => format!("{p}/"),
        };
        Ok(AzureStore {
            label,
            account,
            display_account,
            container: container.to_string(),
            prefix,
            client,
            container_url,
            auth,
            block_size: block_size.unwrap_or(DEFAULT_BLOCK_SIZE),
            upload_budget: budget::UploadBudget::new(block_size.unwrap_or(DEFAULT_BLOCK_SIZE)),
        })
    }

    fn full_name(&self, name: &str) -> Result<String, StoreError> {
        names::check_azure(name)?;
        let full = format!("{}{name}", self.prefix);
        if full.chars().count() > MAX_NAME {
            return Err(StoreError::InvalidName {
                name: name.to_string(),
                why: "Azure blob names are at most 1,024 characters".into(),
            });
        }
        Ok(full)
    }

    fn what(&self, name: &str) -> String {
        format!("{}/{name}", self.label.trim_end_matches('/'))
    }

    fn err(&self, e: &azure_core::Error, name: &str) -> StoreError {
        errors::map(e, &self.what(name), &self.display_account)
    }

    /// Block size for a blob of `size` bytes: the configured size, doubled
    /// until the blob fits in Azure's 50,000 blocks.
    pub fn block_size_for(&self, size: u64) -> u64 {
        let mut b = self.block_size.max(1);
        while size.div_ceil(b) > MAX_BLOCKS {
            b *= 2;
        }
        b
    }

    /// The blob's URL with a read SAS: the source of a server-side copy.
    fn source_url(&self, name: &str) -> Result<String, StoreError> {
        let full = self.full_name(name)?;
        let mut url = self.container_url.clone();
        {
            let mut p = url
                .path_segments_mut()
                .map_err(|_| StoreError::InvalidName {
                    name: name.into(),
                    why: "bad container URL".into(),
                })?;
            for seg in full.split('/') {
                p.push(seg);
            }
        }
        let sas = match &self.auth {
            Auth::Sas(s) => s.clone(),
            Auth::SharedKey(key) => auth::ServiceSas {
                account: &self.account,
                container: &self.container,
                blob: Some(&full),
                permissions: "r",
                start: Some(Utc::now() - chrono::Duration::minutes(15)),
                expiry: Utc::now() + chrono::Duration::hours(COPY_SAS_HOURS),
                protocol: None,
            }
            .token(key),
        };
        url.set_query(Some(&sas));
        Ok(url.to_string())
    }

    /// Creates the container if it does not exist. A container SAS may not
    /// create containers: then a listing proves the container is there.
    async fn ensure_container(&self) -> Result<(), StoreError> {
        let err = match self.client.create(None).await {
            Ok(_) => return Ok(()),
            Err(e) => errors::map(&e, &self.label, &self.display_account),
        };
        match err {
            StoreError::Conflict { .. } => Ok(()),
            StoreError::PermissionDenied { .. } => {
                let opts = BlobContainerClientListBlobsOptions {
                    maxresults: Some(1),
                    ..Default::default()
                };
                let listed = match self.client.list_blobs(Some(opts)) {
                    Ok(p) => match p.into_pages().next().await {
                        Some(Ok(_)) => true,
                        // A valid SAS without list (a write-only "drop box"):
                        // the container may well be there; the listing that
                        // follows says exactly which permission is missing.
                        Some(Err(e)) => {
                            e.http_status().is_some_and(|s| u16::from(s) == 403)
                                && matches!(e.kind(), azure_core::error::ErrorKind::HttpResponse {
                                error_code: Some(code), ..
                            } if code == "AuthorizationPermissionMismatch")
                        }
                        None => false,
                    },
                    Err(_) => false,
                };
                if listed {
                    Ok(())
                } else {
                    Err(err)
                }
            }
            other => Err(other),
        }
    }

    /// Server-side copy from another Azure store: Put Block From URL for
    /// each block (in parallel), then Put Block List with the source's
    /// properties. The data never crosses this machine; the source etag is
    /// pinned so a blob that changes meanwhile fails instead of mixing.
    pub async fn copy_from(&self, src: &AzureStore, meta: &BlobMeta) -> Result<(), StoreError> {
        let name = self.full_name(&meta.name)?;
        let source = src.source_url(&meta.name)?;
        let bs = self.block_size_for(meta.size);
        if meta.size <= bs {
            return self.copy_blob(&name, source, meta).await;
        }
        let blob = Arc::new(self.client.blob_client(&name).block_blob_client());
        let staged = self.staged_blocks(&blob, meta, bs).await;
        let mut ids = Vec::new();
        let mut tasks = JoinSet::new();
        let mut offset = 0u64;
        let mut index = 0u64;
        while offset < meta.size {
            let len = bs.min(meta.size - offset);
            let id = block_id(&meta.etag, bs, index);
            ids.push(id.clone());
            if staged.get(&id) == Some(&len) {
                offset += len;
                index += 1;
                continue;
            }
            let (blob, source, etag, this, n) = (
                blob.clone(),
                source.clone(),
                meta.etag.clone(),
                self.clone(),
                meta.name.clone(),
            );
            if tasks.len() >= BLOCK_PARALLELISM {
                join_one(&mut tasks).await?;
            }
            tasks.spawn(crate::retry::inherit(async move {
                let opts = BlockBlobClientStageBlockFromUrlOptions {
                    source_range: Some(HttpRange::new(offset, len)),
                    source_if_match: Some(etag.into()),
                    ..Default::default()
                };
                blob.stage_block_from_url(&id, len, source, Some(opts))
                    .await
                    .map(|_| ())
                    .map_err(|e| this.err(&e, &n))
            }));
            offset += len;
            index += 1;
        }
        while !tasks.is_empty() {
            join_one(&mut tasks).await?;
        }
        self.commit(&blob, ids, meta, meta.md5.map(|m| m.to_vec()))
            .await
    }

    /// A single-block blob in one request, Copy Blob (like rclone): Put Block
    /// From URL + Put Block List took two, and small-blob server-side copies
    /// were slower than rclone's. (Put Blob From URL would be one request
    /// too, but Azurite 3.37 answers it 501, or 500 under a SAS.) The source
    /// etag is pinned; properties and metadata come with the source. The
    /// service may finish it later ("pending"): it is polled, so a blob is
    /// recorded copied only once it is there, and given up after
    /// [`COPY_PENDING_LIMIT`].
    async fn copy_blob(
        &self,
        name: &str,
        source: String,
        meta: &BlobMeta,
    ) -> Result<(), StoreError> {
        let client = self.client.blob_client(name);
        let failed = |code: &str| StoreError::Service {
            what: self.what(&meta.name),
            status: 500,
            code: code.into(),
            transient: true,
        };
        let opts = BlobClientStartCopyFromUrlOptions {
            source_if_match: Some(meta.etag.clone().into()),
            ..Default::default()
        };
        let started = client
            .start_copy_from_url(source, Some(opts))
            .await
            .map_err(|e| self.err(&e, &meta.name))?;
        let mut status = started.copy_status().ok().flatten();
        let mut wait = std::time::Duration::from_millis(50);
        let since = std::time::Instant::now();
        while status == Some(CopyStatus::Pending) {
            if since.elapsed() > COPY_PENDING_LIMIT {
                return Err(failed("CopyStillPending"));
            }
            tokio::time::sleep(wait).await;
            wait = (wait * 2).min(std::time::Duration::from_secs(2));
            let props = client
                .get_properties(None)
                .await
                .map_err(|e| self.err(&e, &meta.name))?;
            status = props.copy_status().ok().flatten();
        }
        match status {
            Some(CopyStatus::Aborted) | Some(CopyStatus::Failed) => Err(failed("CopyFailed")),
            _ => Ok(()),
        }
    }

    /// Blocks staged but not committed (id -> size), left by an earlier try
    /// that died before Put Block List. Empty if none, or if the list cannot
    /// be had (then everything is sent, as before).
    async fn staged_blocks(
        &self,
        blob: &azure_storage_blob::BlockBlobClient,
        meta: &BlobMeta,
        bs: u64,
    ) -> HashMap<Vec<u8>, u64> {
        if meta.size <= bs {
            return HashMap::new();
        }
        let list = match blob.get_block_list(BlockListType::Uncommitted, None).await {
            Ok(r) => r.into_model().ok(),
            Err(_) => None,
        };
        let staged: HashMap<Vec<u8>, u64> = list
            .and_then(|l| l.uncommitted_blocks)
            .unwrap_or_default()
            .into_iter()
            .filter_map(|b| Some((b.name?, u64::try_from(b.size?).ok()?)))
            .collect();
        if !staged.is_empty() {
            tracing::debug!(blob = %meta.name, blocks = staged.len(), "found staged blocks");
        }
        staged
    }

    async fn commit(
        &self,
        blob: &azure_storage_blob::BlockBlobClient,
        ids: Vec<Vec<u8>>,
        meta: &BlobMeta,
        md5: Option<Vec<u8>>,
    ) -> Result<(), StoreError> {
        let list = BlockLookupList {
            latest: Some(ids),
            ..Default::default()
        };
        let body = list.try_into().map_err(|e| self.err(&e, &meta.name))?;
        let p = props_to_write(meta);
        let opts = BlockBlobClientCommitBlockListOptions {
            blob_content_md5: md5,
            blob_content_type: p.content_type,
            blob_content_encoding: p.content_encoding,
            blob_content_language: p.content_language,
            blob_cache_control: p.cache_control,
            blob_content_disposition: p.content_disposition,
            metadata: (!p.metadata.is_empty()).then(|| p.metadata.into_iter().collect()),
            ..Default::default()
        };
        blob.commit_block_list(body, Some(opts))
            .await
            .map(|_| ())
            .map_err(|e| self.err(&e, &meta.name))
    }
}

/// The metadata key a blob keeps its source file's modification time in
/// (RFC 3339, nanoseconds): the one rclone uses, so either tool restores
/// the other's times.
const MTIME_KEY: &str = "mtime";

/// What a blob written from `meta` carries: the source blob's properties
/// and metadata, or, from a source without them (a file), its
/// modification time, which Azure's own Last-Modified (the upload's time)
/// cannot keep.
fn props_to_write(meta: &BlobMeta) -> BlobProps {
    match meta.props.as_deref() {
        Some(p) => p.clone(),
        None => BlobProps {
            metadata: vec![(
                MTIME_KEY.to_string(),
                meta.modified
                    .to_rfc3339_opts(chrono::SecondsFormat::Nanos, true),
            )],
            ..BlobProps::default()
        },
    }
}

/// The modification time a blob keeps for its source file, if it has a
/// readable one: then that is the blob's time for comparisons and for the
/// file a download writes, so a restore has the files' own times and the
/// next incremental run in either direction finds them current.
fn kept_mtime(metadata: &[(String, String)]) -> Option<DateTime<Utc>> {
    let (_, v) = metadata
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(MTIME_KEY))?;
    DateTime::parse_from_rfc3339(v)
        .ok()
        .map(|t| t.with_timezone(&Utc))
}

/// Waits for one of a blob's parallel block or range tasks.
async fn join_one(tasks: &mut JoinSet<Result<(), StoreError>>) -> Result<(), StoreError> {
    match tasks.join_next().await {
        Some(Ok(r)) => r,
        Some(Err(e)) => Err(StoreError::io(
            "block or range task",
            std::io::Error::other(e),
        )),
        None => Ok(()),
    }
}

/// Block ids must all have the same length within a blob. They name the
/// source version and block size, so a later try (after a crash or a broken
/// connection) can recognise the blocks it already staged, and never mix in
/// blocks of another version of the source.
fn block_id(src_etag: &str, block_size: u64, index: u64) -> Vec<u8> {
    let mut h = Md5::new();
    h.update(src_etag.as_bytes());
    h.update(&block_size.to_le_bytes());
    let d = h.finalize();
    let key = u64::from_le_bytes([d[0], d[1], d[2], d[3], d[4], d[5], d[6], d[7]]);
    format!("ferry-{key:016x}-{index:08}").into_bytes()
}

fn percent_decode(s: &str) -> String {
    url::form_urlencoded::parse(format!("x={}", s.replace('+', "%2B")).as_bytes())
        .next()
        .map(|(_, v)| v.into_owned())
        .unwrap_or_else(|| s.to_string())
}

fn to_chrono(t: azure_core::time::OffsetDateTime) -> DateTime<Utc> {
    DateTime::from_timestamp_nanos(t.unix_timestamp_nanos() as i64)
}

#[async_trait::async_trait]
impl BlobStore for AzureStore {
    fn describe(&self) -> String {
        self.label.clone()
    }

    fn list(&self) -> Listing {
        let opts = BlobContainerClientListBlobsOptions {
            prefix: (!self.prefix.is_empty()).then(|| self.prefix.clone()),
            maxresults: Some(PAGE as i32),
            include: Some(vec![ListBlobsIncludeItem::Metadata]),
            ..Default::default()
        };
        let this = self.clone();
        let pages = match self.client.list_blobs(Some(opts)) {
            Ok(p) => p.into_pages(),
            Err(e) => {
                let err = errors::map(&e, &self.label, &self.display_account);
                return futures::stream::once(async move { Err(err) }).boxed();
            }
        };
        pages
            .map(move |page| {
                let items: Vec<Result<Listed, StoreError>> = match page.and_then(|p| p.into_model())
                {
                    Err(e) => vec![Err(errors::map(&e, &this.label, &this.display_account))],
                    Ok(page) => page
                        .blob_items
                        .into_iter()
                        .filter_map(|item| this.listed(item))
                        .map(Ok)
                        .collect(),
                };
                futures::stream::iter(items)
            })
            .flatten()
            .boxed()
    }

    async fn head(&self, name: &str) -> Result<Option<BlobMeta>, StoreError> {
        use azure_storage_blob::models::BlobClientGetPropertiesResultHeaders as H;
        let full = self.full_name(name)?;
        let rsp = match self.client.blob_client(&full).get_properties(None).await {
            Ok(r) => r,
            Err(e) => {
                return match self.err(&e, name) {
                    StoreError::NotFound { .. } => Ok(None),
                    other => Err(other),
                }
            }
        };
        let err = |e: azure_core::Error| self.err(&e, name);
        let metadata: Vec<(String, String)> = rsp.metadata().map_err(err)?.into_iter().collect();
        let modified = match kept_mtime(&metadata) {
            Some(t) => Some(t),
            None => rsp.last_modified().map_err(err)?.map(to_chrono),
        };
        Ok(Some(BlobMeta {
            name: name.to_string(),
            size: rsp.content_length().map_err(err)?.unwrap_or(0),
            modified: modified.unwrap_or_default(),
            etag: rsp
                .etag()
                .map_err(err)?
                .map(|e| e.to_string())
                .unwrap_or_default(),
            md5: rsp
                .content_md5()
                .map_err(err)?
                .and_then(|m| m.try_into().ok()),
            props: None,
            mode: None,
        }))
    }

    async fn read(&self, meta: &BlobMeta) -> Result<ByteStream, StoreError> {
        let name = meta.name.as_str();
        let full = self.full_name(name)?;
        let opts = BlobClientDownloadOptions {
            if_match: (!meta.etag.is_empty()).then(|| meta.etag.clone().into()),
            parallel: Some(sdk_default_parallel()),
            ..Default::default()
        };
        let rsp = self
            .client
            .blob_client(&full)
            .download(Some(opts))
            .await
            .map_err(|e| self.err(&e, name))?;
        let (this, n) = (self.clone(), name.to_string());
        Ok(rsp
            .body
            .map(move |c| {
                c.map_err(|e| errors::map_body(&e, &this.what(&n), &this.display_account))
            })
            .boxed())
    }

    async fn write(&self, meta: &BlobMeta, mut data: ByteStream) -> Result<(), StoreError> {
        let full = self.full_name(&meta.name)?;
        let blob = Arc::new(self.client.blob_client(&full).block_blob_client());
        let bs = self.block_size_for(meta.size);
        let p = props_to_write(meta);
        if meta.size <= bs {
            let _held = self.upload_budget.hold(meta.size).await;
            let mut buf = BytesMut::with_capacity(meta.size as usize);
            while let Some(chunk) = data.next().await {
                buf.extend_from_slice(&chunk?);
            }
            let body = buf.freeze();
            let opts = BlockBlobClientUploadOptions {
                blob_content_md5: Some(md5_simd::digest(&body).to_vec()),
                blob_content_type: p.content_type,
                blob_content_encoding: p.content_encoding,
                blob_content_language: p.content_language,
                blob_cache_control: p.cache_control,
                blob_content_disposition: p.content_disposition,
                metadata: (!p.metadata.is_empty())
                    .then(|| p.metadata.into_iter().collect::<HashMap<_, _>>()),
                parallel: std::num::NonZero::new(1),
                partition_size: std::num::NonZero::new(bs.max(1)),
                ..Default::default()
            };
            return blob
                .upload(body.into(), Some(opts))
                .await
                .map(|_| ())
                .map_err(|e| self.err(&e, &meta.name));
        }
        // Large: stage blocks as the data arrives, a few in flight at once;
        // blocks an interrupted earlier try staged are not sent again.
        let staged = self.staged_blocks(&blob, meta, bs).await;
        let mut whole = Md5::new();
        let mut ids = Vec::new();
        let mut tasks = JoinSet::new();
        // The block being filled, allocated at its size once its share of
        // the budget is held: growing one buffer by doubling, and freezing
        // blocks split off it, kept up to twice the block size alive per
        // block in flight (792 MiB for 3 uploads at 129 MiB blocks).
        let block_len = |sent: u64| bs.min(meta.size.saturating_sub(sent)).max(1) as usize;
        let mut held = self.upload_budget.hold(bs).await;
        let mut buf = BytesMut::with_capacity(block_len(0));
        let mut sent = 0u64;
        let mut ended = false;
        while !ended {
            let mut chunk = match data.next().await {
                Some(chunk) => chunk?,
                None => {
                    ended = true;
                    Bytes::new()
                }
            };
            loop {
                let take = (bs as usize - buf.len()).min(chunk.len());
                buf.extend_from_slice(&chunk.split_to(take));
                // Not full yet: wait for more, unless this is the last.
                let last = ended && !buf.is_empty();
                if (buf.len() as u64) < bs && !last {
                    break;
                }
                let block: Bytes = std::mem::take(&mut buf).freeze();
                sent += block.len() as u64;
                whole.update(&block);
                let id = block_id(&meta.etag, bs, ids.len() as u64);
                ids.push(id.clone());
                if staged.get(&id) != Some(&(block.len() as u64)) {
                    if tasks.len() >= BLOCK_PARALLELISM {
                        join_one(&mut tasks).await?;
                    }
                    let (blob, this, n) = (blob.clone(), self.clone(), meta.name.clone());
                    // Handed over before the next is taken: see `hold`.
                    let permit = held.take();
                    tasks.spawn(crate::retry::inherit(async move {
                        let _permit = permit;
                        let len = block.len() as u64;
                        blob.stage_block(&id, len, block.into(), None)
                            .await
                            .map(|_| ())
                            .map_err(|e| this.err(&e, &n))
                    }));
                }
                if ended {
                    break;
                }
                if held.is_none() {
                    held = self.upload_budget.hold(bs).await;
                }
                buf = BytesMut::with_capacity(block_len(sent));
            }
        }
        while !tasks.is_empty() {
            join_one(&mut tasks).await?;
        }
        self.commit(&blob, ids, meta, Some(whole.finalize().to_vec()))
            .await
    }

    async fn prepare_destination(&self) -> Result<(), StoreError> {
        self.ensure_container().await
    }

    fn as_azure(&self) -> Option<&AzureStore> {
        Some(self)
    }

    fn whole_second_times(&self) -> bool {
        true
    }

    async fn lists_in_name_order(&self) -> bool {
        // Asked once per attempt. Where the answer is refused (a container
        // SAS may not read account properties), the merge still catches an
        // order break once it shows.
        match self.client.get_account_info(None).await {
            Ok(r) => {
                use azure_storage_blob::models::BlobContainerClientGetAccountInfoResultHeaders;
                r.is_hierarchical_namespace_enabled().ok().flatten() != Some(true)
            }
            Err(e) => {
                tracing::debug!(store = %self.label, "account kind unknown: {e}");
                true
            }
        }
    }
}

impl AzureStore {
    /// A listing item from the service's, relative to the prefix.
    fn listed(&self, item: azure_storage_blob::models::BlobItem) -> Option<Listed> {
        let full = item.name?;
        let name = full.strip_prefix(&self.prefix).unwrap_or(&full).to_string();
        if let Err(error) = names::check_azure(&name) {
            return Some(Listed::Failed { name, error });
        }
        let p = item.properties.unwrap_or_default();
        let mut metadata: Vec<(String, String)> = item
            .metadata
            .map(|m| m.values.unwrap_or_default().into_iter().collect())
            .unwrap_or_default();
        metadata.sort();
        let props = BlobProps {
            content_type: p.content_type,
            content_encoding: p.content_encoding,
            content_language: p.content_language,
            cache_control: p.cache_control,
            content_disposition: p.content_disposition,
            metadata,
        };
        let modified = kept_mtime(&props.metadata)
            .or(p.last_modified.map(to_chrono))
            .unwrap_or_default();
        Some(Listed::Blob(BlobMeta {
            name,
            size: p.content_length.unwrap_or(0),
            modified,
            etag: p.etag.map(|e| e.to_string()).unwrap_or_default(),
            md5: p.content_md5.and_then(|m| m.try_into().ok()),
            props: Some(Arc::new(props)),
            mode: None,
        }))
    }
}

/// The SDK's own default for a download's parallel partitions
/// (`min(max(cores, 8), 96)`), computed once. Left unset, the SDK works it
/// out on every download through `available_parallelism`, which reads the
/// cgroup files (about 15 syscalls): a sixth of the syscalls of a small
/// blob's download.
fn sdk_default_parallel() -> std::num::NonZero<usize> {
    static PARALLEL: std::sync::OnceLock<std::num::NonZero<usize>> = std::sync::OnceLock::new();
    *PARALLEL.get_or_init(|| {
        let cores = std::thread::available_parallelism().map_or(1, std::num::NonZero::get);
        std::num::NonZero::new(cores.clamp(8, 96)).unwrap_or(std::num::NonZero::<usize>::MIN)
    })
}
