//! The WebAssembly plugin host (wasmtime, component model). Plugins are
//! compiled once per process and cached on disk, instantiated once per
//! worker, and sandboxed: WASI with nothing granted (no files, network,
//! environment; clocks frozen at 0), a fuel budget per call as the main
//! limit, an epoch deadline as a wall-clock backstop, and memory and stack
//! caps. A trap, timeout or bad answer is an error value, never a crash.

mod formatter;
mod policy;

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use sha2::{Digest, Sha256};
use wasmtime::component::{
    Component, ComponentExportIndex, InstancePre, Linker, Resource, ResourceTable,
};
use wasmtime::{Config, Engine, Store, StoreLimits, StoreLimitsBuilder, Trap};
use wasmtime_wasi::p2::bindings::clocks::monotonic_clock;
use wasmtime_wasi::p2::pipe::MemoryOutputPipe;
use wasmtime_wasi::p2::DynPollable;
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

pub use formatter::{FormatterInstance, FormatterPlugin};
pub use policy::{JobContext, PluginDecision, PolicyInstance, PolicyPlugin};

/// Epoch ticks are this long; a call's backstop is `DEADLINE_TICKS` of them.
const TICK: Duration = Duration::from_millis(100);
/// Wall-clock backstop per call (2 s): fuel stops loops long before; this
/// stops a guest whose host calls are slow (fuel counts only its own
/// instructions). Epochs measure wall time, so a short deadline would kill
/// ordinary calls on a loaded machine. An epoch cannot interrupt a host call
/// in progress, so no host call may block: see [`FrozenTime`].
const DEADLINE_TICKS: u64 = 20;
/// The interface a policy exports.
const POLICY_INTERFACE: &str = "ferry:plugin/policy@0.1.0";
/// The optional batched form of it.
const POLICY_BATCH_INTERFACE: &str = "ferry:plugin/policy-batch@0.1.0";
/// Instructions (roughly) a policy may spend per `decide`/`configure`.
pub const POLICY_FUEL: u64 = 50_000_000;
/// Instructions a formatter may spend per call (a batch is up to 1,000 outcomes).
pub const FORMATTER_FUEL: u64 = 2_000_000_000;
/// Linear memory a plugin instance may grow to.
pub const MEMORY_LIMIT: usize = 64 << 20;
/// Guest panic messages kept for error reports.
const STDERR_CAPTURE: usize = 16 << 10;

/// What can go wrong with a plugin; every variant is contained (the job or
/// the blob fails, the process does not).
#[derive(Debug, thiserror::Error)]
pub enum PluginError {
    #[error("cannot read plugin {path}: {why}")]
    Read { path: String, why: String },
    #[error("plugin {path} is not a valid WebAssembly component: {why}")]
    Invalid { path: String, why: String },
    #[error("plugin {path} implements {found}, not ferry:plugin/{expected}")]
    WrongWorld {
        path: String,
        expected: &'static str,
        found: String,
    },
    #[error("plugin {1} refused its configuration: {0}")]
    Configure(String, String),
    #[error("plugin {0} {1}")]
    Failed(String, String),
    /// A formatter failed while writing a report (the text names it).
    #[error("report: {0}")]
    Report(String),
    #[error("plugin {path} changed since the job was submitted (SHA-256 {expected} -> {found}); pass --allow-plugin-change to use the new one")]
    Changed {
        path: String,
        expected: String,
        found: String,
    },
}

/// Host-side state of one plugin instance.
pub(crate) struct HostState {
    /// The plugin's file name, for log lines.
    name: Arc<str>,
    wasi: WasiCtx,
    table: ResourceTable,
    limits: StoreLimits,
    /// The guest's stderr (a Rust guest's panic message lands here).
    stderr: MemoryOutputPipe,
}

impl WasiView for HostState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

/// Clocks frozen at zero: decisions must not depend on when they run.
struct FrozenWall;
impl wasmtime_wasi::HostWallClock for FrozenWall {
    fn resolution(&self) -> Duration {
        Duration::from_secs(1)
    }
    fn now(&self) -> Duration {
        Duration::ZERO
    }
}
struct FrozenMonotonic;
impl wasmtime_wasi::HostMonotonicClock for FrozenMonotonic {
    fn resolution(&self) -> u64 {
        1_000_000_000
    }
    fn now(&self) -> u64 {
        0
    }
}

/// `wasi:clocks/monotonic-clock` with time that does not pass: `now` is 0
/// and a subscription (a sleep) is ready at once. WASI's own version sleeps
/// for real in the host, where neither fuel nor the epoch deadline can stop
/// it, so a plugin asking for an hour's sleep would hold its worker for an
/// hour. Clocks, stdin (empty) and stdout/stderr (memory) are the only
/// things a plugin can wait on; with this, nothing blocks.
struct FrozenTime;

impl wasmtime::component::HasData for FrozenTime {
    type Data<'a> = &'a mut HostState;
}

/// A pollable that is always ready.
struct Ready;

#[async_trait::async_trait]
impl wasmtime_wasi::p2::Pollable for Ready {
    async fn ready(&mut self) {}
}

impl monotonic_clock::Host for &mut HostState {
    fn now(&mut self) -> wasmtime::Result<u64> {
        Ok(0)
    }

    fn resolution(&mut self) -> wasmtime::Result<u64> {
        Ok(1_000_000_000)
    }

    fn subscribe_instant(&mut self, _when: u64) -> wasmtime::Result<Resource<DynPollable>> {
        self.ready_now()
    }

    fn subscribe_duration(&mut self, _when: u64) -> wasmtime::Result<Resource<DynPollable>> {
        self.ready_now()
    }
}

impl HostState {
    fn new(name: Arc<str>) -> Self {
        let stderr = MemoryOutputPipe::new(STDERR_CAPTURE);
        // Nothing granted: no preopened dirs, env, args, network; frozen clocks.
        let wasi = WasiCtx::builder()
            .stderr(stderr.clone())
            .wall_clock(FrozenWall)
            .monotonic_clock(FrozenMonotonic)
            .allow_ip_name_lookup(false)
            .allow_tcp(false)
            .allow_udp(false)
            .build();
        let limits = StoreLimitsBuilder::new()
            .memory_size(MEMORY_LIMIT)
            .instances(16)
            .tables(64)
            .memories(16)
            .trap_on_grow_failure(true)
            .build();
        HostState {
            name,
            wasi,
            table: ResourceTable::new(),
            limits,
            stderr,
        }
    }

    fn ready_now(&mut self) -> wasmtime::Result<Resource<DynPollable>> {
        let ready = self.table.push(Ready)?;
        wasmtime_wasi::p2::subscribe(&mut self.table, ready)
    }

    pub(crate) fn log(&self, level: u8, message: &str) {
        let plugin = &*self.name;
        // A newline in it would start what reads as a line of ferry's own.
        let message = tidy(message, MAX_LOG_BYTES);
        match level {
            0 => tracing::trace!(plugin, "{message}"),
            1 => tracing::debug!(plugin, "{message}"),
            2 => tracing::info!(plugin, "{message}"),
            3 => tracing::warn!(plugin, "{message}"),
            _ => tracing::error!(plugin, "{message}"),
        }
    }
}

/// The process-wide wasmtime engine, with an epoch ticker thread.
pub struct PluginHost {
    engine: Engine,
    cache_dir: Option<PathBuf>,
}

impl fmt::Debug for PluginHost {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("PluginHost")
    }
}

impl PluginHost {
    /// The shared host; compiled plugins are cached under `cache_dir`.
    pub fn get(cache_dir: Option<&Path>) -> Result<Arc<PluginHost>, PluginError> {
        static ENGINE: OnceLock<Result<Engine, String>> = OnceLock::new();
        let engine = ENGINE
            .get_or_init(|| {
                let mut config = Config::new();
                config
                    .wasm_component_model(true)
                    .consume_fuel(true)
                    .epoch_interruption(true)
                    .max_wasm_stack(512 << 10);
                let engine = Engine::new(&config).map_err(|e| e.to_string())?;
                let ticker = engine.weak();
                std::thread::Builder::new()
                    .name("ferry-plugin-epoch".into())
                    .spawn(move || loop {
                        std::thread::sleep(TICK);
                        match ticker.upgrade() {
                            Some(e) => e.increment_epoch(),
                            None => break,
                        }
                    })
                    .map_err(|e| e.to_string())?;
                Ok(engine)
            })
            .clone()
            .map_err(|why| PluginError::Invalid {
                path: "<engine>".into(),
                why,
            })?;
        Ok(Arc::new(PluginHost {
            engine,
            cache_dir: cache_dir.map(Path::to_path_buf),
        }))
    }

    /// Reads, hashes and compiles (or loads the cached compilation of) a plugin.
    pub fn load(&self, path: &Path) -> Result<LoadedPlugin, PluginError> {
        let shown = path.display().to_string();
        let bytes = std::fs::read(path).map_err(|e| PluginError::Read {
            path: shown.clone(),
            why: e.to_string(),
        })?;
        let sha256 = hex::encode(Sha256::digest(&bytes));
        let cached = self
            .cache_dir
            .as_ref()
            .map(|d| d.join(format!("{sha256}-wasmtime-{}.cwasm", wasmtime_version())));
        let invalid = |e: wasmtime::Error| PluginError::Invalid {
            path: shown.clone(),
            why: format!("{e:#}").replace('\n', " "),
        };
        let from_cache = cached
            .as_ref()
            .and_then(|p| std::fs::read(p).ok())
            .and_then(|file| checked_compilation(file, &sha256));
        let component = match from_cache {
            // SAFETY: the bytes are what `precompile_component` of this
            // wasmtime version wrote (the version is in the file's name), as
            // the checksum written after them shows; a file cut short,
            // damaged or swapped for another plugin's is compiled afresh
            // (deserializing one crashed the process).
            Some(compiled) => match unsafe { Component::deserialize(&self.engine, &compiled) } {
                Ok(c) => c,
                Err(_) => Component::new(&self.engine, &bytes).map_err(invalid)?,
            },
            None => {
                let compiled = self.engine.precompile_component(&bytes).map_err(invalid)?;
                if let Some(p) = &cached {
                    if let Some(dir) = p.parent() {
                        let _ = std::fs::create_dir_all(dir);
                    }
                    // Per process: `plugin check` and `report` load plugins
                    // beside a daemon that holds the state dir.
                    let tmp = p.with_extension(format!("{}.tmp", std::process::id()));
                    let mut file = compiled.clone();
                    file.extend_from_slice(&cache_sum(&compiled, &sha256));
                    if std::fs::write(&tmp, &file).is_ok() {
                        let _ = std::fs::rename(&tmp, p);
                    }
                }
                // SAFETY: produced just now by this engine.
                unsafe { Component::deserialize(&self.engine, &compiled) }.map_err(invalid)?
            }
        };
        let name: Arc<str> = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or(shown.clone())
            .into();
        Ok(LoadedPlugin {
            engine: self.engine.clone(),
            component,
            sha256,
            path: shown,
            name,
        })
    }
}

/// The checksum a cached compilation ends with: of the plugin's hash and
/// the compiled bytes, so the file belongs to that plugin and is whole.
fn cache_sum(compiled: &[u8], plugin_sha256: &str) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(plugin_sha256.as_bytes());
    h.update(compiled);
    h.finalize().into()
}

/// The compiled bytes of a cache file whose checksum holds.
fn checked_compilation(mut file: Vec<u8>, plugin_sha256: &str) -> Option<Vec<u8>> {
    let at = file.len().checked_sub(32)?;
    let sum = file.split_off(at);
    (sum == cache_sum(&file, plugin_sha256)).then_some(file)
}

fn wasmtime_version() -> &'static str {
    "48.0.8"
}

/// A compiled plugin, not yet instantiated.
#[derive(Clone)]
pub struct LoadedPlugin {
    engine: Engine,
    component: Component,
    pub sha256: String,
    pub path: String,
    pub name: Arc<str>,
}

impl LoadedPlugin {
    /// A function exported by one of the component's interfaces.
    fn export_index(&self, interface: &str, func: &str) -> Option<ComponentExportIndex> {
        let (_, iface) = self.component.get_export(None, interface)?;
        let (_, f) = self.component.get_export(Some(&iface), func)?;
        Some(f)
    }

    /// Which world the component exports, from its type alone.
    pub fn world(&self) -> Option<&'static str> {
        let ty = self.component.component_type();
        let exports: Vec<String> = ty
            .exports(&self.engine)
            .map(|(n, _)| n.to_string())
            .collect();
        if exports
            .iter()
            .any(|n| n.starts_with("ferry:plugin/policy@"))
        {
            Some("overwrite-policy")
        } else if exports
            .iter()
            .any(|n| n.starts_with("ferry:plugin/formatter@"))
        {
            Some("report-formatter")
        } else {
            None
        }
    }

    /// The component's imports and exports, for `ferry plugin check`.
    pub fn interfaces(&self) -> (Vec<String>, Vec<String>) {
        let ty = self.component.component_type();
        (
            ty.imports(&self.engine)
                .map(|(n, _)| n.to_string())
                .collect(),
            ty.exports(&self.engine)
                .map(|(n, _)| n.to_string())
                .collect(),
        )
    }

    fn invalid(&self, e: wasmtime::Error) -> PluginError {
        PluginError::Invalid {
            path: self.path.clone(),
            why: format!("{e:#}").replace('\n', " "),
        }
    }

    /// Checks the component implements `world`, links the deny-all WASI
    /// context and the world's own imports (`add`), and pre-instantiates.
    fn link(
        &self,
        world: &'static str,
        add: impl FnOnce(&mut Linker<HostState>) -> wasmtime::Result<()>,
    ) -> Result<InstancePre<HostState>, PluginError> {
        if self.world() != Some(world) {
            let found = self.world().unwrap_or("no ferry world").to_string();
            return Err(PluginError::WrongWorld {
                path: self.path.clone(),
                expected: world,
                found,
            });
        }
        let mut linker = Linker::new(&self.engine);
        wasmtime_wasi::p2::add_to_linker_sync(&mut linker).map_err(|e| self.invalid(e))?;
        // Replace WASI's monotonic clock (whose sleeps block in the host).
        linker.allow_shadowing(true);
        monotonic_clock::add_to_linker::<HostState, FrozenTime>(&mut linker, |s| s)
            .map_err(|e| self.invalid(e))?;
        linker.allow_shadowing(false);
        add(&mut linker).map_err(|e| self.invalid(e))?;
        linker
            .instantiate_pre(&self.component)
            .map_err(|e| self.invalid(e))
    }

    fn new_store(&self, fuel: u64) -> Store<HostState> {
        let mut store = Store::new(&self.engine, HostState::new(self.name.clone()));
        store.limiter(|s| &mut s.limits);
        let _ = store.set_fuel(fuel);
        store.set_epoch_deadline(DEADLINE_TICKS);
        store
    }
}

/// A plugin's reason (recorded in the log per blob) is cut to this.
pub(crate) const MAX_REASON_BYTES: usize = 1024;
/// A plugin's log line is cut to this.
const MAX_LOG_BYTES: usize = 4096;

/// Plugin text made safe to record and print: control characters
/// (newlines that would forge lines of a report or log) escaped, and cut to
/// `max` bytes (a 5 MiB reason was stored in every event it decided).
pub(crate) fn tidy(text: &str, max: usize) -> String {
    let mut out = String::with_capacity(text.len().min(max));
    for c in text.chars() {
        if out.len() >= max {
            out.push_str(&format!(
                " ... ({} bytes cut)",
                text.len() - max.min(text.len())
            ));
            break;
        }
        if c.is_control() {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out
}

/// Refuels and re-arms the deadline before each call.
fn arm(store: &mut Store<HostState>, fuel: u64) {
    let _ = store.set_fuel(fuel);
    store.set_epoch_deadline(DEADLINE_TICKS);
}

/// Turns a wasmtime error from a call into a readable reason.
fn describe(err: &wasmtime::Error, store: &Store<HostState>) -> String {
    let stderr = String::from_utf8_lossy(&store.data().stderr.contents()).into_owned();
    // Advice for the guest's developer, not for ferry's user.
    let panic = stderr
        .lines()
        .filter(|l| !l.contains("RUST_BACKTRACE"))
        .collect::<Vec<_>>()
        .join(" ");
    let panic = tidy(panic.trim(), MAX_REASON_BYTES);
    let what = match err.downcast_ref::<Trap>() {
        Some(Trap::OutOfFuel) => "ran out of fuel (it loops or works too long)".to_string(),
        Some(Trap::Interrupt) => "exceeded its time limit".to_string(),
        Some(Trap::StackOverflow) => "overflowed its stack".to_string(),
        Some(Trap::UnreachableCodeReached) => "trapped (a panic or `unreachable`)".to_string(),
        Some(Trap::MemoryOutOfBounds) => "accessed memory out of bounds".to_string(),
        Some(t) => format!("trapped: {t}"),
        None => {
            let s = format!("{err:#}").replace('\n', " ");
            if s.contains("memory") && (s.contains("limit") || s.contains("grow")) {
                "exceeded its memory limit".to_string()
            } else {
                format!("failed: {s}")
            }
        }
    };
    if panic.is_empty() {
        what
    } else {
        format!("{what}: {panic}")
    }
}

#[cfg(test)]
mod tests {
    use super::tidy;

    #[test]
    fn plugin_text_is_one_line_and_bounded() {
        assert_eq!(
            tidy("keep\n2026-12-06T00:00:00Z ERROR forged\r\t", 100),
            "keep\\n2026-12-06T00:00:00Z ERROR forged\\r\\t"
        );
        let long = "é".repeat(3000);
        let cut = tidy(&long, 1024);
        assert!(
            cut.starts_with("éé") && cut.ends_with("(4976 bytes cut)"),
            "{cut}"
        );
        assert!(cut.len() < 1100, "{}", cut.len());
        assert_eq!(tidy("short", 1024), "short");
    }
}
