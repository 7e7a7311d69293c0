//! Long answers from a running daemon, streamed: `events` and `export` (every
//! event of a job or of the log) and `history` (every line under a folder).
//!
//! Why not one JSON answer like the other requests: the daemon built every
//! event of the log as one value and the client parsed it whole, so a
//! 1M-blob log cost both processes gigabytes. Here the daemon first sends a
//! header that says how many items follow (an export's header needs the
//! count), then the items a line each from a blocking thread through a
//! small queue:
//!
//! ```text
//! {"ok":HEADER}            or {"error":"...","code":C}
//! N lines, one item each   (an EventRecord, a HistoryLine)
//! {"ok":{"end":N}}         or {"error":"...","code":C} if reading failed
//! ```
//!
//! Events appended after the count are left out, so the header stays true.

use std::io::{BufRead, BufReader, Lines};
use std::marker::PhantomData;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use ferry_engine::daemon::Daemon;
use ferry_engine::JobId;
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::{json, Value};
use tokio::io::AsyncWriteExt;
use tokio::net::unix::OwnedWriteHalf;
use tokio::sync::mpsc::Sender;

use crate::control::{self, HistoryQuery, Request};

/// Lines the reading thread may run ahead of the socket.
const AHEAD: usize = 256;

/// The daemon's side: answers a streamed request on `write`.
pub async fn serve(d: Arc<Daemon>, req: Request, write: &mut OwnedWriteHalf) {
    let (tx, mut rx) = tokio::sync::mpsc::channel::<String>(AHEAD);
    let reader = tokio::task::spawn_blocking(move || match req {
        Request::Events { job } => events(&d, job, &tx),
        Request::History(q) => history(&d, q, &tx),
        _ => {
            let e = anyhow::anyhow!("this request is answered in one line, not streamed");
            let _ = tx.blocking_send(control::error_line(&e));
        }
    });
    while let Some(line) = rx.recv().await {
        if write.write_all(line.as_bytes()).await.is_err() {
            // The client went away; the reader stops at its next send.
            break;
        }
    }
    drop(rx);
    let _ = reader.await;
}

/// Whether the daemon streams its answer to `req`.
pub fn streamed(req: &Request) -> bool {
    matches!(req, Request::Events { .. } | Request::History(_))
}

/// Counts the events, then sends the header, each event and the end line.
fn events(d: &Daemon, job: Option<String>, tx: &Sender<String>) {
    let e = d.engine();
    let counted = (|| -> Result<(Option<JobId>, u64)> {
        let id = job.map(|j| e.resolve(&j)).transpose()?;
        let mut n = 0u64;
        for rec in e.events(id)? {
            rec?;
            n += 1;
        }
        Ok((id, n))
    })();
    let (id, n) = match counted {
        Ok(c) => c,
        Err(err) => {
            let _ = tx.blocking_send(control::error_line(&err));
            return;
        }
    };
    let items = match e.events(id) {
        Ok(evs) => evs.take(n as usize),
        Err(err) => {
            let _ = tx.blocking_send(control::error_line(&err.into()));
            return;
        }
    };
    send(tx, json!({ "events": n }), n, items);
}

/// Sorts the lines (in temp files when long), then sends the header, each
/// line and the end line.
fn history(d: &Daemon, q: HistoryQuery, tx: &Sender<String>) {
    let e = d.engine();
    let lines = (|| -> Result<_> {
        let address = e.history_address(&q.address)?;
        let lines = e.history(&address, q.limit)?;
        Ok((address, lines))
    })();
    match lines {
        Ok((address, lines)) => {
            let n = lines.len();
            send(tx, json!({ "address": address, "lines": n }), n, lines);
        }
        Err(err) => {
            let _ = tx.blocking_send(control::error_line(&err));
        }
    }
}

/// Sends `header`, the `n` items, and the end line (or an error line where
/// an item failed); stops early if the receiver is gone.
fn send<T: Serialize, E: Into<anyhow::Error>>(
    tx: &Sender<String>,
    header: Value,
    n: u64,
    items: impl Iterator<Item = Result<T, E>>,
) {
    if tx.blocking_send(control::ok_line(header)).is_err() {
        return;
    }
    let sent = (|| -> Result<()> {
        for item in items {
            let mut line = serde_json::to_string(&item.map_err(Into::into)?)?;
            line.push('\n');
            tx.blocking_send(line).context("the client went away")?;
        }
        Ok(())
    })();
    let last = match sent {
        Ok(()) => control::ok_line(json!({ "end": n })),
        Err(err) => control::error_line(&err),
    };
    let _ = tx.blocking_send(last);
}

/// The client's side: sends `req` and returns the daemon's header and the
/// items as they arrive.
pub fn call<T: DeserializeOwned>(sock: &Path, req: &Request) -> Result<(Value, Items<T>)> {
    // Per read: a long log keeps lines coming; counting or sorting comes
    // before the header.
    let mut lines = control::send(sock, req, Duration::from_secs(600))?.lines();
    let first = lines
        .next()
        .context("the daemon did not answer")?
        .context("the daemon did not answer")?;
    let header = control::answer_of(&first)?;
    let items = Items {
        lines,
        done: false,
        item: PhantomData,
    };
    Ok((header, items))
}

/// Items from the daemon, up to its end line.
pub struct Items<T> {
    lines: Lines<BufReader<UnixStream>>,
    done: bool,
    item: PhantomData<T>,
}

impl<T: DeserializeOwned> Iterator for Items<T> {
    type Item = Result<T>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        let line = match self.lines.next() {
            Some(Ok(l)) => l,
            Some(Err(e)) => {
                self.done = true;
                return Some(Err(anyhow::Error::new(e).context("reading from the daemon")));
            }
            None => {
                self.done = true;
                return Some(Err(anyhow::anyhow!(
                    "the daemon stopped before sending every line"
                )));
            }
        };
        // Items are records whose first field is neither `ok` nor `error`
        // (`{"v":` for events, `{"address":` for history lines): the last
        // line is the end or an error.
        if line.starts_with("{\"ok\":") || line.starts_with("{\"error\":") {
            self.done = true;
            return control::answer_of(&line).err().map(Err);
        }
        Some(
            serde_json::from_str::<T>(&line)
                .map_err(|e| anyhow::Error::new(e).context("a line from the daemon")),
        )
    }
}
