//! `ferry cancel|pause|resume JOB`: through the daemon when one holds the
//! state dir (it also stops the job if it is running it), else directly.

use anyhow::Result;
use ferry_engine::actor;

use super::run;
use crate::control::{self, Access, Request};
use crate::exit;

#[derive(Debug, Clone, Copy)]
pub enum Action {
    Cancel,
    Pause,
    Resume,
}

pub fn control(
    state: &std::path::Path,
    job: &str,
    action: Action,
    quiet: bool,
    json: bool,
) -> Result<u8> {
    let by = actor();
    // The state the job was in, and its full id.
    let (id, before): (String, Option<String>) = match control::access(state)? {
        Access::Daemon(sock) => {
            let (name, by) = (job.to_string(), by.clone());
            let job = name.clone();
            let req = match action {
                Action::Cancel => Request::Cancel { job, by },
                Action::Pause => Request::Pause { job, by },
                Action::Resume => Request::Resume { job, by },
            };
            let v = control::call(&sock, &req)?;
            let show = Request::Show {
                job: name.clone(),
                max: Some(0),
            };
            let id = match control::call(&sock, &show) {
                Ok(s) => s["summary"]["id"].as_str().unwrap_or(&name).to_string(),
                Err(_) => name,
            };
            (id, v.as_str().map(str::to_string))
        }
        Access::Local(engine) => {
            let id = engine.resolve(job)?;
            let rt = run::runtime()?;
            let before = match action {
                Action::Cancel => {
                    Some(rt.block_on(engine.cancel(id, &format!("cancelled by {by}"), &by))?)
                }
                Action::Pause => Some(rt.block_on(engine.pause(id, &by))?),
                Action::Resume => {
                    rt.block_on(engine.resume(id, &by))?;
                    None
                }
            };
            (id.to_string(), before.map(|s| s.to_string()))
        }
    };
    let done = match action {
        Action::Cancel => "cancelled",
        Action::Pause => "paused",
        Action::Resume => "queued",
    };
    if json {
        let v = serde_json::json!({"job": id, "state": done, "was": before.unwrap_or_else(|| "paused".into()), "by": by});
        println!("{v}");
    } else if !quiet {
        println!("job {id} {done}");
    }
    Ok(exit::OK)
}
