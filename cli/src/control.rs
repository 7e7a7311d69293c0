//! Talking to a running daemon. sled lets one process open a state dir, so
//! while `ferry daemon` holds it, other ferry commands (submit, cancel,
//! pause, resume, schedules, status, jobs, show, events, history) send their request over a
//! Unix socket in the state dir and the daemon does the work. One JSON line
//! each way (events and history come as a stream of lines: `control_stream`); the socket
//! is created 0600 in a dir only its owner can enter.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use ferry_engine::daemon::Daemon;
use ferry_engine::schedule::ScheduleDef;
use ferry_engine::{Engine, EngineError, JobSpec};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt};

use crate::exit;

#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "kebab-case")]
pub enum Request {
    Submit {
        spec: Box<JobSpec>,
    },
    Cancel {
        job: String,
        by: String,
    },
    Pause {
        job: String,
        by: String,
    },
    Resume {
        job: String,
        by: String,
    },
    /// `ferry replay JOB`: queued for the daemon to replay.
    Replay {
        job: String,
        by: String,
    },
    ScheduleAdd {
        def: Box<ScheduleDef>,
        by: String,
    },
    ScheduleRemove {
        name: String,
        by: String,
    },
    Schedules,
    Status,
    Jobs,
    Show {
        job: String,
        /// At most this many failures in the answer (all when absent).
        #[serde(default)]
        max: Option<usize>,
    },
    Events {
        job: Option<String>,
    },
    History(HistoryQuery),
}

/// `ferry history ADDRESS [--limit N]`, answered by the daemon.
#[derive(Debug, Serialize, Deserialize)]
pub struct HistoryQuery {
    pub address: String,
    pub limit: Option<usize>,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(untagged)]
enum Response {
    Ok { ok: Value },
    Err { error: String, code: u8 },
}

/// The daemon's socket in a state dir.
pub fn socket_path(state: &Path) -> PathBuf {
    state.join("daemon.sock")
}

/// Where a command's work happens.
pub enum Access {
    /// This process holds the state dir.
    Local(Engine),
    /// A daemon holds it; ask it.
    Daemon(PathBuf),
}

/// Opens the state dir, or finds the daemon that holds it. Any other
/// holder (a foreground `ferry copy`) is the usual "in use" error.
pub fn access(state: &Path) -> Result<Access> {
    match Engine::open(state) {
        Ok(e) => Ok(Access::Local(e)),
        Err(e @ EngineError::StateLocked { .. }) => {
            let sock = socket_path(state);
            if UnixStream::connect(&sock).is_ok() {
                Ok(Access::Daemon(sock))
            } else {
                Err(e.into())
            }
        }
        Err(e) => Err(e.into()),
    }
}

/// Sends one request to the daemon and returns its answer, or its error
/// with the exit code the daemon chose.
pub fn call(sock: &Path, req: &Request) -> Result<Value> {
    let mut answer = String::new();
    send(sock, req, Duration::from_secs(60))?
        .read_line(&mut answer)
        .context("the daemon did not answer")?;
    answer_of(&answer)
}

/// Connects and sends `req`; the daemon's lines are read from what it
/// returns, each read waiting at most `timeout`.
pub(crate) fn send(sock: &Path, req: &Request, timeout: Duration) -> Result<BufReader<UnixStream>> {
    let mut stream = UnixStream::connect(sock)
        .with_context(|| format!("cannot reach the daemon at {}", sock.display()))?;
    stream.set_read_timeout(Some(timeout))?;
    let mut line = serde_json::to_string(req)?;
    line.push('\n');
    stream.write_all(line.as_bytes())?;
    Ok(BufReader::new(stream))
}

/// One answer line: its value, or the daemon's error with its exit code.
pub(crate) fn answer_of(line: &str) -> Result<Value> {
    match serde_json::from_str::<Response>(line)
        .with_context(|| format!("the daemon's answer is not valid: {line:?}"))?
    {
        Response::Ok { ok } => Ok(ok),
        Response::Err { error, code } => Err(anyhow::Error::new(exit::coded(&error, code))),
    }
}

/// The line that answers with `ok`.
pub(crate) fn ok_line(ok: Value) -> String {
    line_of(&Response::Ok { ok })
}

/// The line that answers with `e` (or ends a stream with it).
pub(crate) fn error_line(e: &anyhow::Error) -> String {
    line_of(&Response::Err {
        error: format!("{e:#}").replace('\n', " "),
        code: exit::code_for(e),
    })
}

fn line_of(r: &Response) -> String {
    let mut text = serde_json::to_string(r).unwrap_or_default();
    text.push('\n');
    text
}

/// Serves requests until the listener is dropped (the daemon stops).
pub async fn serve(listener: tokio::net::UnixListener, daemon: Arc<Daemon>) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let daemon = daemon.clone();
        tokio::spawn(async move {
            let (read, mut write) = stream.into_split();
            let mut lines = tokio::io::BufReader::new(read).lines();
            let Ok(Some(line)) = lines.next_line().await else {
                return;
            };
            let response = match serde_json::from_str::<Request>(&line) {
                Ok(req) if crate::control_stream::streamed(&req) => {
                    crate::control_stream::serve(daemon, req, &mut write).await;
                    return;
                }
                Ok(req) => match handle(&daemon, req).await {
                    Ok(v) => ok_line(v),
                    Err(e) => error_line(&e),
                },
                Err(e) => line_of(&Response::Err {
                    error: format!("malformed request: {e}"),
                    code: exit::USAGE,
                }),
            };
            let _ = write.write_all(response.as_bytes()).await;
        });
    }
}

async fn handle(d: &Daemon, req: Request) -> Result<Value> {
    let e = d.engine();
    Ok(match req {
        Request::Submit { spec } => {
            let id = e.submit(*spec).await?;
            d.nudge();
            json!(id)
        }
        Request::Cancel { job, by } => json!(d.cancel(e.resolve(&job)?, &by).await?),
        Request::Pause { job, by } => json!(d.pause(e.resolve(&job)?, &by).await?),
        Request::Resume { job, by } => {
            d.resume(e.resolve(&job)?, &by).await?;
            Value::Null
        }
        Request::Replay { job, by } => {
            let id = e.resolve(&job)?;
            d.replay(id, &by).await?;
            json!(id)
        }
        Request::ScheduleAdd { def, by } => {
            e.add_schedule(*def, &by).await?;
            d.nudge();
            Value::Null
        }
        Request::ScheduleRemove { name, by } => {
            e.remove_schedule(&name, &by).await?;
            Value::Null
        }
        Request::Schedules => json!({
            "now": d.now(),
            "schedules": e.schedules()?,
        }),
        Request::Status => json!(d.status()?),
        Request::Jobs => json!({
            "jobs": e.jobs()?,
            "running": d.running_jobs(),
        }),
        // Streamed (`control_stream`), never answered as one value.
        Request::Events { .. } | Request::History(_) => {
            anyhow::bail!("this request is streamed, not answered here")
        }
        Request::Show { job, max } => {
            let id = e.resolve(&job)?;
            let (failures, total) = e.failures(id, max)?;
            json!({
                "summary": e.summary(id)?,
                "failures": failures,
                "failures_total": total,
                "running": d.running_jobs(),
            })
        }
    })
}
