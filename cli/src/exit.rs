//! Exit codes. Documented in README.md ("Exit codes"); keep the two in step.

use ferry_engine::EngineError;

/// Everything worked.
pub const OK: u8 = 0;
/// The job ran to the end but some blobs failed; `ferry replay JOB` retries them.
pub const BLOBS_FAILED: u8 = 1;
/// Bad command line or input (missing source, bad address, bad option).
pub const USAGE: u8 = 2;
/// Another ferry process holds the state dir.
pub const STATE_LOCKED: u8 = 3;
/// The state dir is corrupt, unreadable or unwritable (or the temp dir a
/// long `history` sorts in is).
pub const STATE_BROKEN: u8 = 4;
/// No such job.
pub const UNKNOWN_JOB: u8 = 5;
/// The job failed as a whole (e.g. its source vanished), or the log could
/// not be written.
pub const JOB_FAILED: u8 = 6;
/// The job is in a state that does not allow the action (e.g. replay of a
/// job that already succeeded).
pub const WRONG_STATE: u8 = 7;
/// `verify-log` found a projection that differs from the replayed log.
pub const VERIFY_FAILED: u8 = 8;
/// A plugin could not be loaded, refused its configuration, or changed
/// since the job was submitted.
pub const PLUGIN: u8 = 9;
/// Stopped by SIGINT/SIGTERM; `ferry replay JOB` continues the job.
pub const INTERRUPTED: u8 = 130;

pub fn code_for(e: &anyhow::Error) -> u8 {
    if let Some(p) = e.downcast_ref::<Printable>() {
        return p.code;
    }
    let Some(engine) = e.chain().find_map(|c| c.downcast_ref::<EngineError>()) else {
        return USAGE;
    };
    match engine {
        EngineError::StateLocked { .. } => STATE_LOCKED,
        EngineError::StateCorrupt { .. } | EngineError::StateIo { .. } => STATE_BROKEN,
        EngineError::TempSpace { .. } => STATE_BROKEN,
        EngineError::LogWrite(_) => JOB_FAILED,
        EngineError::UnknownJob(_) | EngineError::AmbiguousJob(_) => UNKNOWN_JOB,
        EngineError::InvalidInput(_) => USAGE,
        EngineError::WrongState { .. } => WRONG_STATE,
        EngineError::Store(_) => JOB_FAILED,
        EngineError::Plugin(_) => PLUGIN,
    }
}

/// An error whose text had control characters (a path or name as typed):
/// the same text made safe for a terminal, with the original's exit code.
#[derive(Debug)]
pub struct Printable {
    text: String,
    code: u8,
}

impl std::fmt::Display for Printable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.text)
    }
}

impl std::error::Error for Printable {}

/// An error with its exit code decided elsewhere (by the daemon that ran
/// the request), made safe to print.
pub fn coded(text: &str, code: u8) -> Printable {
    Printable {
        text: printable(text),
        code,
    }
}

/// Makes an error safe to print as one line: escape sequences, carriage
/// returns and other control characters in it (from paths and names as
/// typed) are shown escaped, not sent to the terminal.
pub fn printable_error(e: anyhow::Error) -> anyhow::Error {
    let text = format!("{e:#}");
    if !text.chars().any(char::is_control) {
        return e;
    }
    let code = code_for(&e);
    anyhow::Error::new(Printable {
        text: printable(&text),
        code,
    })
}

/// `s` with line breaks as spaces and other control characters escaped
/// (`\u{1b}`), so it prints as one line and cannot drive the terminal.
pub fn printable(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '\n' => out.push(' '),
            c if c.is_control() => out.extend(c.escape_default()),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn printable_errors_keep_their_exit_code_and_lose_control_characters() {
        let e: anyhow::Error = EngineError::WrongState {
            job: "j".into(),
            why: "a\x1b[31mb".into(),
        }
        .into();
        let p = printable_error(e);
        assert_eq!(code_for(&p), WRONG_STATE);
        let text = format!("{p:#}");
        assert!(!text.chars().any(char::is_control), "{text:?}");
        assert!(text.contains("a\\u{1b}[31mb"), "{text}");
        assert_eq!(printable("one\ntwo\rthree\t"), "one two\\rthree\\t");
        let plain = anyhow::anyhow!("nothing to escape");
        assert_eq!(code_for(&printable_error(plain)), USAGE);
    }
}
