//! `ferry events` and `ferry export` through a running daemon, streamed.
//!
//! Why not one JSON answer like the other requests: the daemon built every
//! event of the log as one value and the client parsed it whole, so a
//! 1M-blob log cost both processes gigabytes. Here the daemon counts the
//! events (an export's header says how many follow), then sends them a line
//! each from a blocking thread through a small queue:
//!
//! ```text
//! {"ok":{"events":N}}      or {"error":"...","code":C}
//! N lines, one EventRecord each
//! {"ok":{"end":N}}         or {"error":"...","code":C} if reading failed
//! ```
//!
//! Events appended after the count are left out, so the header stays true.

use std::io::{BufRead, BufReader, Lines};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use ferry_engine::daemon::Daemon;
use ferry_engine::{EventRecord, JobId};
use serde_json::json;
use tokio::io::AsyncWriteExt;
use tokio::net::unix::OwnedWriteHalf;

use crate::control::{self, Request};

/// Lines the reading thread may run ahead of the socket.
const AHEAD: usize = 256;

/// The daemon's side: answers an events request on `write`.
pub async fn serve(d: Arc<Daemon>, job: Option<String>, write: &mut OwnedWriteHalf) {
    let (tx, mut rx) = tokio::sync::mpsc::channel::<String>(AHEAD);
    let reader = tokio::task::spawn_blocking(move || read(&d, job, &tx));
    while let Some(line) = rx.recv().await {
        if write.write_all(line.as_bytes()).await.is_err() {
            // The client went away; the reader stops at its next send.
            break;
        }
    }
    drop(rx);
    let _ = reader.await;
}

/// Counts, then sends the header, each event and the end line (or an
/// error line) to `tx`; stops early if the receiver is gone.
fn read(d: &Daemon, job: Option<String>, tx: &tokio::sync::mpsc::Sender<String>) {
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
    if tx
        .blocking_send(control::ok_line(json!({ "events": n })))
        .is_err()
    {
        return;
    }
    let sent = (|| -> Result<()> {
        for rec in e.events(id)?.take(n as usize) {
            let mut line = serde_json::to_string(&rec?)?;
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

/// The client's side: asks for the events of `job` (or all) and returns how
/// many follow and the records as they arrive.
pub fn call(sock: &Path, job: Option<String>) -> Result<(u64, Records)> {
    // Per read: a long log keeps lines coming; the count pass comes first.
    let mut lines =
        control::send(sock, &Request::Events { job }, Duration::from_secs(600))?.lines();
    let first = lines
        .next()
        .context("the daemon did not answer")?
        .context("the daemon did not answer")?;
    let n = control::answer_of(&first)?["events"]
        .as_u64()
        .with_context(|| format!("the daemon's answer is not valid: {first:?}"))?;
    Ok((n, Records { lines, done: false }))
}

/// Event records from the daemon, up to its end line.
pub struct Records {
    lines: Lines<BufReader<UnixStream>>,
    done: bool,
}

impl Iterator for Records {
    type Item = Result<EventRecord>;

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
                    "the daemon stopped before sending every event"
                )));
            }
        };
        // An event line starts with its schema version; the last line
        // is the end or an error.
        if !line.starts_with("{\"v\":") {
            self.done = true;
            return control::answer_of(&line).err().map(Err);
        }
        Some(
            serde_json::from_str::<EventRecord>(&line)
                .map_err(|e| anyhow::Error::new(e).context("an event from the daemon")),
        )
    }
}
