//! report and plugin check.

use std::io::Write;
use std::path::Path;

use anyhow::{Context, Result};
use ferry_engine::report::{BuiltinFormatter, Formatter};
use ferry_engine::Engine;

use crate::exit;

pub fn report(
    engine: &Engine,
    job: &str,
    format: &str,
    output: Option<&Path>,
    max_examples: usize,
    config: Vec<(String, String)>,
) -> Result<u8> {
    let id = engine.resolve(job)?;
    let mut plugin;
    let mut builtin: Box<dyn Formatter>;
    let f: &mut dyn Formatter = match format {
        "text" => {
            builtin = Box::new(BuiltinFormatter::text(max_examples));
            builtin.as_mut()
        }
        "json" => {
            builtin = Box::new(BuiltinFormatter::json(max_examples));
            builtin.as_mut()
        }
        "markdown" | "md" => {
            builtin = Box::new(BuiltinFormatter::markdown(max_examples));
            builtin.as_mut()
        }
        path if path.ends_with(".wasm") => {
            plugin = engine.formatter_plugin(Path::new(path), config)?;
            &mut plugin
        }
        other => {
            anyhow::bail!("unknown report format {other:?}; use text, json, markdown or PATH.wasm")
        }
    };
    let text = engine.report(id, f)?;
    match output {
        Some(path) => std::fs::write(path, text)
            .with_context(|| format!("cannot write {}", path.display()))?,
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

pub fn check(engine: &Engine, path: &Path, config: Vec<(String, String)>) -> Result<u8> {
    let loaded = engine.load_plugin(path)?;
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
            let (decision, batches) = engine.dry_run_policy(loaded, config)?;
            println!("dry run  configure ok; decide(newer source) = {decision}");
            if batches {
                println!("batches  yes: decide-batch answers the same");
            } else {
                println!("batches  no: asked blob by blob (export policy-batch to be faster)");
            }
        }
        Some("report-formatter") => {
            let (ctype, ext, len) = engine.dry_run_formatter(loaded, config)?;
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
