//! A fault-injecting HTTP proxy for tests: sits between ferry and Azurite
//! and, per request, answers 503 ServerBusy (with or without Retry-After),
//! 500 or 429 without forwarding, forwards and then resets the connection
//! mid-body, stalls past the client's timeout, or delays; or, like a service
//! at capacity, answers 503 ServerBusy to requests beyond a number in flight.
//! Counts what it did and the request body bytes it forwarded (to measure
//! re-sent data).

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::{Request, Response};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};

type Body = http_body_util::combinators::BoxBody<Bytes, std::io::Error>;

/// Probabilities (0..1) of each fault per request; the rest pass through.
#[derive(Clone, Copy, Debug, Default)]
pub struct Faults {
    /// 503 ServerBusy with `Retry-After: 1`... in milliseconds via
    /// `x-ms-retry-after-ms` (keeps tests fast).
    pub busy_retry_after: f64,
    /// 503 ServerBusy without any retry hint.
    pub busy: f64,
    /// 500 InternalError.
    pub internal: f64,
    /// 429 TooManyRequests.
    pub throttled: f64,
    /// Forwarded, then the connection is cut mid-body (the upstream did
    /// the work; the client never learns).
    pub reset: f64,
    /// No answer for `stall_for` (longer than the client's try timeout).
    pub stall: f64,
    /// Forwarded after `slow_for`.
    pub slow: f64,
    /// A blob's content (a GET answered 2xx) forwarded with one byte
    /// changed, as damage in transit would; other requests pass untouched
    /// and uncounted.
    pub corrupt: f64,
    pub stall_for: Duration,
    pub slow_for: Duration,
}

/// What the proxy did.
#[derive(Default, Debug)]
pub struct Counts {
    pub requests: AtomicU64,
    /// By fault name (`busy`, `reset`, ...).
    pub injected: Mutex<BTreeMap<&'static str, u64>>,
    /// Request body bytes forwarded upstream, by method.
    pub body_bytes: Mutex<BTreeMap<String, u64>>,
    /// Put Block requests forwarded (with their whole body).
    pub block_puts: AtomicU64,
    /// GETs of a byte range (`x-ms-range` or `Range`) forwarded.
    pub range_gets: AtomicU64,
    /// GETs of a blob's content (not listings, properties or account
    /// information) forwarded.
    pub blob_gets: AtomicU64,
    /// Requests being answered now, and the most ever let through at once.
    pub in_flight: AtomicU64,
    pub peak_in_flight: AtomicU64,
}

impl Counts {
    pub fn injected(&self) -> BTreeMap<&'static str, u64> {
        self.injected.lock().unwrap().clone()
    }

    pub fn total_injected(&self) -> u64 {
        self.injected().values().sum()
    }

    pub fn body_bytes(&self, method: &str) -> u64 {
        *self.body_bytes.lock().unwrap().get(method).unwrap_or(&0)
    }
}

pub struct FaultProxy {
    /// `http://127.0.0.1:PORT`: replace Azurite's scheme://host:port with it.
    pub base: String,
    pub counts: Arc<Counts>,
    faults: Arc<Mutex<Faults>>,
    limit: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

struct Shared {
    upstream: String,
    faults: Arc<Mutex<Faults>>,
    /// Requests in flight beyond this get 503 ServerBusy (0: no limit).
    limit: Arc<AtomicU64>,
    counts: Arc<Counts>,
    client: Client<HttpConnector, Full<Bytes>>,
}

impl FaultProxy {
    /// Starts a proxy to `upstream` (e.g. `http://127.0.0.1:10000`) on a
    /// free loopback port, on its own runtime thread.
    pub fn start(upstream: &str, faults: Faults) -> FaultProxy {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let addr: SocketAddr = listener.local_addr().unwrap();
        let counts = Arc::new(Counts::default());
        let faults = Arc::new(Mutex::new(faults));
        let limit = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let shared = Arc::new(Shared {
            upstream: upstream.trim_end_matches('/').to_string(),
            faults: faults.clone(),
            limit: limit.clone(),
            counts: counts.clone(),
            client: Client::builder(TokioExecutor::new()).build_http(),
        });
        let stop2 = stop.clone();
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(serve(listener, shared, stop2));
        });
        FaultProxy {
            base: format!("http://{addr}"),
            counts,
            faults,
            limit,
            stop,
            thread: Some(thread),
        }
    }

    /// Like a service at capacity: requests beyond `n` in flight are
    /// answered 503 ServerBusy without a retry hint (counted as
    /// `over_limit`); 0 lifts the limit.
    pub fn set_concurrency_limit(&self, n: u64) {
        self.limit.store(n, Ordering::SeqCst);
    }

    /// Changes the faults from now on (e.g. to none, for verifying).
    pub fn set_faults(&self, f: Faults) {
        *self.faults.lock().unwrap() = f;
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wake the accept loop.
        let _ = std::net::TcpStream::connect(self.base.trim_start_matches("http://"));
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

async fn serve(listener: std::net::TcpListener, shared: Arc<Shared>, stop: Arc<AtomicBool>) {
    let listener = tokio::net::TcpListener::from_std(listener).unwrap();
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        if stop.load(Ordering::SeqCst) {
            return;
        }
        let shared = shared.clone();
        tokio::spawn(async move {
            let svc = hyper::service::service_fn(move |req| handle(shared.clone(), req));
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), svc)
                .await;
        });
    }
}

fn full(b: impl Into<Bytes>) -> Body {
    Full::new(b.into())
        .map_err(|e: Infallible| match e {})
        .boxed()
}

fn pick(f: &Faults) -> Option<&'static str> {
    let r = fastrand::f64();
    let mut acc = 0.0;
    for (p, name) in [
        (f.busy_retry_after, "busy_retry_after"),
        (f.busy, "busy"),
        (f.internal, "internal"),
        (f.throttled, "throttled"),
        (f.reset, "reset"),
        (f.stall, "stall"),
        (f.slow, "slow"),
        (f.corrupt, "corrupt"),
    ] {
        acc += p;
        if r < acc {
            return Some(name);
        }
    }
    None
}

fn error_response(status: u16, code: &str, extra: Option<(&str, &str)>) -> Response<Body> {
    let body = format!(
        "<?xml version=\"1.0\" encoding=\"utf-8\"?><Error><Code>{code}</Code><Message>injected by the test proxy</Message></Error>"
    );
    let mut b = Response::builder()
        .status(status)
        .header("x-ms-error-code", code)
        .header("content-type", "application/xml");
    if let Some((k, v)) = extra {
        b = b.header(k, v);
    }
    b.body(full(body)).unwrap()
}

/// One request in flight, until dropped.
struct InFlight(Arc<Counts>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}

fn count_fault(counts: &Counts, name: &'static str) {
    *counts.injected.lock().unwrap().entry(name).or_default() += 1;
}

async fn handle(
    shared: Arc<Shared>,
    req: Request<Incoming>,
) -> Result<Response<Body>, std::io::Error> {
    shared.counts.requests.fetch_add(1, Ordering::Relaxed);
    let now = shared.counts.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
    let _in_flight = InFlight(shared.counts.clone());
    let limit = shared.limit.load(Ordering::SeqCst);
    if limit > 0 && now > limit {
        count_fault(&shared.counts, "over_limit");
        return Ok(error_response(503, "ServerBusy", None));
    }
    shared
        .counts
        .peak_in_flight
        .fetch_max(now, Ordering::SeqCst);
    let faults = *shared.faults.lock().unwrap();
    let fault = pick(&faults);
    if let Some(name) = fault.filter(|n| *n != "corrupt") {
        count_fault(&shared.counts, name);
    }
    match fault {
        Some("busy_retry_after") => {
            return Ok(error_response(
                503,
                "ServerBusy",
                Some(("x-ms-retry-after-ms", "50")),
            ))
        }
        Some("busy") => return Ok(error_response(503, "ServerBusy", None)),
        Some("internal") => return Ok(error_response(500, "InternalError", None)),
        Some("throttled") => return Ok(error_response(429, "TooManyRequests", None)),
        Some("stall") => {
            tokio::time::sleep(faults.stall_for).await;
            return Err(std::io::Error::other("stalled"));
        }
        Some("slow") => tokio::time::sleep(faults.slow_for).await,
        _ => {}
    }
    let (parts, body) = req.into_parts();
    let body = body
        .collect()
        .await
        .map_err(|e| std::io::Error::other(e.to_string()))?
        .to_bytes();
    *shared
        .counts
        .body_bytes
        .lock()
        .unwrap()
        .entry(parts.method.to_string())
        .or_default() += body.len() as u64;
    if parts
        .uri
        .query()
        .is_some_and(|q| q.split('&').any(|kv| kv == "comp=block"))
    {
        shared.counts.block_puts.fetch_add(1, Ordering::Relaxed);
    }
    if parts.method == hyper::Method::GET
        && (parts.headers.contains_key("x-ms-range") || parts.headers.contains_key("range"))
    {
        shared.counts.range_gets.fetch_add(1, Ordering::Relaxed);
    }
    let blob_get = parts.method == hyper::Method::GET
        && !parts
            .uri
            .query()
            .is_some_and(|q| q.contains("comp=") || q.contains("restype="));
    if blob_get {
        shared.counts.blob_gets.fetch_add(1, Ordering::Relaxed);
    }
    let path = parts
        .uri
        .path_and_query()
        .map(|p| p.as_str())
        .unwrap_or("/");
    let mut up = Request::builder()
        .method(parts.method.clone())
        .uri(format!("{}{path}", shared.upstream));
    for (k, v) in parts.headers.iter() {
        if !matches!(k.as_str(), "connection" | "transfer-encoding") {
            up = up.header(k, v);
        }
    }
    let up = up.body(Full::new(body)).map_err(std::io::Error::other)?;
    let rsp = shared
        .client
        .request(up)
        .await
        .map_err(|e| std::io::Error::other(e.to_string()))?;
    let (rparts, rbody) = rsp.into_parts();
    let mut bytes = rbody
        .collect()
        .await
        .map_err(|e| std::io::Error::other(e.to_string()))?
        .to_bytes();
    if fault == Some("corrupt") && blob_get && rparts.status.is_success() && !bytes.is_empty() {
        count_fault(&shared.counts, "corrupt");
        let mut changed = bytes.to_vec();
        let mid = changed.len() / 2;
        changed[mid] ^= 0x20;
        bytes = changed.into();
    }
    let mut out = Response::builder().status(rparts.status);
    for (k, v) in rparts.headers.iter() {
        if !matches!(
            k.as_str(),
            "connection" | "transfer-encoding" | "content-length"
        ) {
            out = out.header(k, v);
        }
    }
    if fault == Some("reset") {
        if bytes.len() < 2 {
            // Nothing to cut: drop the connection with no answer.
            return Err(std::io::Error::other("reset"));
        }
        // Promise the whole body, send half, then fail the stream.
        let half = bytes.slice(..bytes.len() / 2);
        let chunks: Vec<Result<Frame<Bytes>, std::io::Error>> = vec![
            Ok(Frame::data(half)),
            Err(std::io::Error::other("reset mid-body")),
        ];
        let body = StreamBody::new(futures::stream::iter(chunks)).boxed();
        return Ok(out
            .header("content-length", bytes.len().to_string())
            .body(body)
            .unwrap());
    }
    Ok(out.body(full(bytes)).unwrap())
}
