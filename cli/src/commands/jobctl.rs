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

pub fn control(state: &std::path::Path, job: &str, action: Action, quiet: bool) -> Result<u8> {
    let by = actor();
    match control::access(state)? {
        Access::Daemon(sock) => {
            let (job, by) = (job.to_string(), by.clone());
            let req = match action {
                Action::Cancel => Request::Cancel { job, by },
                Action::Pause => Request::Pause { job, by },
                Action::Resume => Request::Resume { job, by },
            };
            control::call(&sock, &req)?;
        }
        Access::Local(engine) => {
            let id = engine.resolve(job)?;
            let rt = run::runtime()?;
            match action {
                Action::Cancel => {
                    rt.block_on(engine.cancel(id, &format!("cancelled by {by}"), &by))?;
                }
                Action::Pause => {
                    rt.block_on(engine.pause(id, &by))?;
                }
                Action::Resume => rt.block_on(engine.resume(id, &by))?,
            }
        }
    }
    if !quiet {
        let done = match action {
            Action::Cancel => "cancelled",
            Action::Pause => "paused",
            Action::Resume => "resumed (queued)",
        };
        println!("job {job} {done}");
    }
    Ok(exit::OK)
}
