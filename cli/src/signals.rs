//! Ctrl-C / SIGTERM / SIGHUP: the first asks the running job to stop at blob
//! boundaries (it is recorded as interrupted and can be replayed); the second
//! exits at once (the log is consistent at any point, so nothing is lost
//! that a replay cannot redo).

use tokio_util::sync::CancellationToken;

pub fn install(cancel: CancellationToken, quiet: bool) {
    tokio::spawn(async move {
        if wait().await.is_err() {
            return;
        }
        if !quiet {
            eprintln!("ferry: stopping after in-flight copies (press Ctrl-C again to quit now)");
        }
        cancel.cancel();
        if wait().await.is_ok() {
            eprintln!("ferry: quitting now; `ferry replay` continues the job");
            std::process::exit(crate::exit::INTERRUPTED as i32);
        }
    });
}

/// Waits for Ctrl-C, SIGTERM or SIGHUP. SIGHUP is what a closed terminal
/// or ssh session sends; left to its default it ended the process at once,
/// with no record of the attempt's end.
pub(crate) async fn wait() -> std::io::Result<()> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate())?;
    let mut hup = signal(SignalKind::hangup())?;
    tokio::select! {
        r = tokio::signal::ctrl_c() => r,
        _ = term.recv() => Ok(()),
        _ = hup.recv() => Ok(()),
    }
}
