//! Test support: a private Azurite for tests. Not part of the engine's API.
//!
//! Azurite comes from npm (`azurite@3.37.0`, installed by `scripts/test`
//! into `.tools/`). Tests fail, rather than skip, when it is missing, so a
//! green run means Azure was really tested.

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// Azurite's well-known development account key (public).
pub const DEV_KEY: &str =
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==";
pub const DEV_ACCOUNT: &str = "devstoreaccount1";

/// A running Azurite blob service on a free loopback port.
pub struct Azurite {
    pub port: u16,
    child: Child,
}

impl Azurite {
    /// The blob endpoint, e.g. `http://127.0.0.1:PORT/devstoreaccount1`.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}/{DEV_ACCOUNT}", self.port)
    }

    pub fn connection_string(&self) -> String {
        format!(
            "AccountName={DEV_ACCOUNT};AccountKey={DEV_KEY};BlobEndpoint={}",
            self.endpoint()
        )
    }

    /// Starts a new Azurite (in-memory persistence); killed on drop.
    pub fn start() -> Result<Azurite, String> {
        Self::start_with(false)
    }

    fn start_with(die_with_parent_thread: bool) -> Result<Azurite, String> {
        let bin = find()?;
        let mut last = String::new();
        for _ in 0..5 {
            let port = free_port()?;
            let mut cmd = Command::new(&bin);
            cmd.args(["--blobHost", "127.0.0.1", "--blobPort", &port.to_string()])
                .args([
                    "--inMemoryPersistence",
                    "--skipApiVersionCheck",
                    "--loose",
                    "--silent",
                    "--disableTelemetry",
                ])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null());
            if die_with_parent_thread {
                use std::os::unix::process::CommandExt as _;
                // SAFETY: prctl is async-signal-safe; it only sets the
                // child's death signal before exec.
                unsafe {
                    cmd.pre_exec(|| {
                        libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                        Ok(())
                    });
                }
            }
            let mut child = cmd
                .spawn()
                .map_err(|e| format!("cannot start {}: {e}", bin.display()))?;
            let deadline = Instant::now() + Duration::from_secs(30);
            loop {
                if TcpStream::connect_timeout(
                    &SocketAddr::from(([127, 0, 0, 1], port)),
                    Duration::from_millis(200),
                )
                .is_ok()
                {
                    return Ok(Azurite { port, child });
                }
                if let Ok(Some(status)) = child.try_wait() {
                    last = format!("azurite exited with {status} on port {port}");
                    break;
                }
                if Instant::now() > deadline {
                    let _ = child.kill();
                    last = format!("azurite did not listen on port {port} within 30 s");
                    break;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        Err(last)
    }

    /// One Azurite shared by all tests of this process. It is started from
    /// a thread that never ends, with PDEATHSIG set, so it dies with the
    /// test process however that ends.
    pub fn shared() -> &'static Azurite {
        static SHARED: OnceLock<Azurite> = OnceLock::new();
        SHARED.get_or_init(|| {
            let (tx, rx) = std::sync::mpsc::channel();
            std::thread::spawn(move || {
                let started = Azurite::start_with(true);
                let failed = started.is_err();
                let _ = tx.send(started);
                if !failed {
                    loop {
                        std::thread::park();
                    }
                }
            });
            match rx.recv() {
                Ok(Ok(a)) => a,
                Ok(Err(e)) => panic!("Azure tests need Azurite: {e}. Run ./scripts/test (it installs azurite@3.37.0 into .tools/) or set FERRY_AZURITE"),
                Err(_) => panic!("the Azurite starter thread died"),
            }
        })
    }
}

impl Drop for Azurite {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Where the Azurite launcher is: `$FERRY_AZURITE`, the project's
/// `.tools/node_modules/.bin/azurite-blob`, or `azurite-blob` on PATH.
pub fn find() -> Result<PathBuf, String> {
    if let Ok(p) = std::env::var("FERRY_AZURITE") {
        return Ok(PathBuf::from(p));
    }
    let local =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../.tools/node_modules/.bin/azurite-blob");
    if local.exists() {
        return Ok(local);
    }
    let on_path = std::env::var_os("PATH")
        .map(|p| {
            std::env::split_paths(&p)
                .map(|d| d.join("azurite-blob"))
                .find(|c| c.exists())
        })
        .unwrap_or_default();
    on_path.ok_or_else(|| {
        format!(
            "azurite-blob not found (looked in $FERRY_AZURITE, {}, PATH)",
            local.display()
        )
    })
}

fn free_port() -> Result<u16, String> {
    let l = TcpListener::bind("127.0.0.1:0").map_err(|e| format!("no free port: {e}"))?;
    l.local_addr().map(|a| a.port()).map_err(|e| e.to_string())
}
