//! The `ferry` command line: parses arguments, calls the engine, prints
//! results, and maps failures to documented exit codes (see `exit.rs`).

mod args;
mod commands;
mod control;
mod control_stream;
mod exit;
mod progress;
mod redact;
mod signals;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    std::panic::set_hook(Box::new(|info| {
        let line = panic_line(info.payload());
        // `println!` panics when the reader of stdout has gone (`ferry
        // plugin check X | head -1`): the reader took what it wanted, as
        // for the commands that write through `?`.
        if line.contains("failed printing to stdout") && line.contains("Broken pipe") {
            std::process::exit(exit::OK.into());
        }
        eprintln!("{line}");
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
            let mut lines = text.lines().map(str::trim).filter(|l| !l.is_empty());
            let mut first = lines.next().unwrap_or("invalid arguments").to_string();
            // "the following required arguments were not provided:" names
            // them on the lines after it.
            if first.ends_with(':') {
                let named: Vec<&str> = lines.take_while(|l| !l.starts_with("Usage:")).collect();
                first = format!("{} {}", first, named.join(" "));
            }
            let first = first.strip_prefix("error: ").unwrap_or(&first);
            // clap quotes a stray argument, which may be a SAS given
            // without --src-sas/--dst-sas.
            let first = redact::redact(first);
            eprintln!("ferry: error: {first}; see `ferry --help`");
            return ExitCode::from(exit::USAGE);
        }
    };
    init_tracing(args.quiet);
    if ferry_engine::log::UNLOGGED_OUTCOMES {
        eprintln!(
            "ferry: warning: bench build (feature unlogged-outcomes): blob outcomes are not logged, \
             so no checkpoint, history or totals are kept; build without the feature for real use"
        );
    }
    match commands::dispatch(args) {
        Ok(code) => ExitCode::from(code),
        // `ferry events | head`: the reader took what it wanted.
        Err(e) if stdout_reader_gone(&e) => ExitCode::from(exit::OK),
        Err(e) => {
            eprintln!("ferry: error: {}", one_line(&e));
            ExitCode::from(exit::code_for(&e))
        }
    }
}

/// Whether `e` is a write to a stdout pipe whose reader has closed it.
/// Checked on stdout itself, so a broken connection elsewhere (a socket)
/// is still an error.
fn stdout_reader_gone(e: &anyhow::Error) -> bool {
    let pipe = Some(std::io::ErrorKind::BrokenPipe);
    // `--json` output fails inside serde_json, which wraps the io::Error.
    let broken_pipe = e.chain().any(|c| {
        c.downcast_ref::<std::io::Error>().map(std::io::Error::kind) == pipe
            || c.downcast_ref::<serde_json::Error>()
                .and_then(serde_json::Error::io_error_kind)
                == pipe
    });
    let mut fd = libc::pollfd {
        fd: libc::STDOUT_FILENO,
        events: 0,
        revents: 0,
    };
    // SAFETY: one pollfd we own; a zero timeout never blocks. A pipe whose
    // reader has gone reports POLLERR on its write end.
    let ready = unsafe { libc::poll(&mut fd, 1, 0) };
    broken_pipe && ready == 1 && fd.revents & libc::POLLERR != 0
}

/// The error and its causes on one line, credentials masked (a config
/// parser may quote a connection string it could not place).
fn one_line(e: &anyhow::Error) -> String {
    redact::redact(&format!("{e:#}").replace('\n', " "))
}

/// What the panic hook prints: the panic's message, credentials masked.
fn panic_line(payload: &(dyn std::any::Any + Send)) -> String {
    let msg = payload
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_default();
    format!(
        "ferry: internal error (a bug, please report it): {}",
        redact::redact(&msg).replace('\n', " ")
    )
}

fn init_tracing(quiet: bool) {
    use std::io::IsTerminal;
    // sled logs its own recovery chatter (through `log`) before ferry reports
    // the same failure as one `ferry: error:` line; keep it out by default
    // (RUST_LOG=sled=warn shows it). --quiet: errors only.
    let level = if quiet {
        "error,sled=off"
    } else {
        "warn,sled=off"
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(level));
    // Every line is masked before it reaches stderr: at debug/trace level
    // dependencies log URLs and headers.
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(redact::RedactingStderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_target(false)
        .init();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_panic_hook_masks_credentials_in_the_message() {
        let key = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==";
        let owned: Box<dyn std::any::Any + Send> = Box::new(format!(
            "request to http://h/c?sv=1&sig=abc%2Bdef failed\nwith AccountName=a;AccountKey={key}"
        ));
        let line = panic_line(owned.as_ref());
        assert_eq!(
            line,
            "ferry: internal error (a bug, please report it): request to http://h/c?sv=1&sig=<redacted> failed with AccountName=a;AccountKey=<redacted>"
        );
        let fixed: Box<dyn std::any::Any + Send> = Box::new("static sig=abcdefgh");
        assert!(panic_line(fixed.as_ref()).ends_with("static sig=<redacted>"));
    }

    #[test]
    fn error_lines_mask_credentials() {
        let e = anyhow::anyhow!(
            "config x.toml is not valid: invalid type: string \"BlobEndpoint=http://h;SharedAccessSignature=sv=1&sig=abc\""
        );
        assert_eq!(
            one_line(&e),
            "config x.toml is not valid: invalid type: string \"BlobEndpoint=http://h;SharedAccessSignature=<redacted>\""
        );
    }
}
