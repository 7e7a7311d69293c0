//! report and plugin check.

use std::io::Write;
use std::path::Path;

use anyhow::{Context, Result};
use ferry_engine::report::{BuiltinFormatter, Formatter};
use ferry_engine::{EventRecord, JobSummary, PluginTools};

use crate::control::{self, Access, Request};
use crate::{control_stream, exit};

/// `ferry report JOB`: from the log, or through the daemon that holds it
/// (the summary and the job's events streamed, the report made here).
pub fn report(
    state: &Path,
    job: &str,
    format: &str,
    // The file, and whether it may replace one that exists.
    output: Option<(&Path, bool)>,
    max_examples: usize,
    config: Vec<(String, String)>,
) -> Result<u8> {
    // `-o -` is stdout, as for `export`.
    let output = output.filter(|(path, _)| *path != Path::new("-"));
    if let Some((path, force)) = output {
        super::query::check_output_target(path, force)?;
    }
    // Built-in names in any case, as `events --kind` takes kinds.
    let builtin = format.to_ascii_lowercase();
    let named = if format.ends_with(".wasm") {
        format
    } else {
        builtin.as_str()
    };
    let mut f: Box<dyn Formatter> = match named {
        "text" => Box::new(BuiltinFormatter::text(max_examples)),
        "json" => Box::new(BuiltinFormatter::json(max_examples)),
        "markdown" | "md" => Box::new(BuiltinFormatter::markdown(max_examples)),
        path if path.ends_with(".wasm") => {
            let tools = PluginTools::for_state_dir(state);
            Box::new(tools.formatter_plugin(Path::new(path), config)?)
        }
        other => {
            anyhow::bail!("unknown report format {other:?}; use text, json, markdown or PATH.wasm")
        }
    };
    let text = match control::access(state)? {
        Access::Local(engine) => {
            let id = engine.resolve(job)?;
            engine.report(id, f.as_mut())?
        }
        Access::Daemon(sock) => {
            let show = Request::Show {
                job: job.to_string(),
                max: Some(0),
            };
            let v = control::call(&sock, &show)?;
            let summary: JobSummary = serde_json::from_value(v["summary"].clone())
                .with_context(|| "the daemon's answer is not valid")?;
            let events = Request::Events {
                job: Some(summary.id.to_string()),
            };
            let (_, recs) = control_stream::call::<EventRecord>(&sock, &events)?;
            let mut read_error = None;
            let recs = recs.map_while(|r| r.map_err(|e| read_error = Some(e)).ok());
            let text = ferry_engine::report::render(&summary, recs, f.as_mut());
            if let Some(e) = read_error {
                return Err(e);
            }
            text?
        }
    };
    match output {
        Some((path, force)) => {
            // Without --force, not even a file that appeared while the
            // report was made is replaced.
            let mut file = std::fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(force)
                .create_new(!force)
                .open(path)
                .with_context(|| format!("cannot write {}", path.display()))?;
            file.write_all(text.as_bytes())
                .with_context(|| format!("cannot write {}", path.display()))?;
        }
        None => {
            let mut out = std::io::stdout().lock();
            out.write_all(text.as_bytes())?;
            if !text.ends_with('\n') {
                writeln!(out)?;
            }
        }
    }
    Ok(exit::OK)
}

/// `ferry plugin check`: needs the state dir's plugin cache, not its log.
pub fn check(state: &Path, path: &Path, config: Vec<(String, String)>) -> Result<u8> {
    let tools = PluginTools::for_state_dir(state);
    let loaded = tools.load_plugin(path)?;
    let (imports, exports) = loaded.interfaces();
    println!("plugin   {}", loaded.path);
    println!("sha256   {}", loaded.sha256);
    println!(
        "world    {}",
        loaded.world().unwrap_or("none (not a ferry plugin)")
    );
    println!("imports  {}", imports.join(", "));
    println!("exports  {}", exports.join(", "));
    match loaded.world() {
        Some("overwrite-policy") => {
            let (decision, batches) = tools.dry_run_policy(loaded, config)?;
            println!("dry run  configure ok; decide(newer source) = {decision}");
            if batches {
                println!("batches  yes: decide-batch answers the same");
            } else {
                println!("batches  no: asked blob by blob (export policy-batch to be faster)");
            }
        }
        Some("report-formatter") => {
            let (ctype, ext, len) = tools.dry_run_formatter(loaded, config)?;
            println!("dry run  configure ok; {ctype} (.{ext}), {len} bytes for a sample report");
        }
        _ => {
            return Err(ferry_engine::EngineError::Plugin(
                ferry_engine::plugin::PluginError::WrongWorld {
                    path: path.display().to_string(),
                    expected: "overwrite-policy or ferry:plugin/report-formatter",
                    found: "no ferry world".into(),
                },
            )
            .into())
        }
    }
    Ok(exit::OK)
}
