//! The `ferry` command line: parses arguments, calls the engine, prints
//! results, and maps failures to documented exit codes (see `exit.rs`).

mod args;
mod commands;
mod control;
mod exit;
mod progress;
mod signals;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    std::panic::set_hook(Box::new(|info| {
        let msg = info
            .payload()
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| info.payload().downcast_ref::<String>().cloned())
            .unwrap_or_default();
        eprintln!("ferry: internal error (a bug, please report it): {msg}");
    }));
    let args = match args::Cli::try_parse() {
        Ok(a) => a,
        Err(e) => {
            if !e.use_stderr() {
                // --help and --version
                let _ = e.print();
                return ExitCode::from(exit::OK);
            }
            // One line, like every other error: clap's first line, minus its
            // own "error: " prefix.
            let text = e.to_string();
            let first = text.lines().next().unwrap_or("invalid arguments");
            let first = first.strip_prefix("error: ").unwrap_or(first);
            eprintln!("ferry: error: {first}; see `ferry --help`");
            return ExitCode::from(exit::USAGE);
        }
    };
    init_tracing();
    match commands::dispatch(args) {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("ferry: error: {}", one_line(&e));
            ExitCode::from(exit::code_for(&e))
        }
    }
}

/// The error and its causes on one line.
fn one_line(e: &anyhow::Error) -> String {
    format!("{e:#}").replace('\n', " ")
}

fn init_tracing() {
    use std::io::IsTerminal;
    // sled logs its own recovery chatter (through `log`) before ferry reports
    // the same failure as one `ferry: error:` line; keep it out by default
    // (RUST_LOG=sled=warn shows it).
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn,sled=off"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_target(false)
        .init();
}
