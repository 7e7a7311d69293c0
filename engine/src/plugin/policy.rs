//! Overwrite-policy plugins: a pool of instances leased per call, so `decide` runs in
//! parallel; an instance that trapped is dropped and made again.

use std::sync::{Arc, Mutex};

use wasmtime::component::{ComponentExportIndex, ComponentType, Func, HasSelf, Lower, TypedFunc};
use wasmtime::Store;

use super::{arm, describe, HostState, LoadedPlugin, PluginError, POLICY_FUEL, POLICY_INTERFACE};
use crate::store::BlobMeta;

mod bindings {
    wasmtime::component::bindgen!({ path: "../wit", world: "overwrite-policy" });
}

use bindings::ferry::plugin::{host, types as wt};
use bindings::{OverwritePolicy, OverwritePolicyPre};

impl host::Host for HostState {
    fn log(&mut self, level: host::Level, message: String) {
        HostState::log(self, level as u8, &message);
    }
}

impl wt::Host for HostState {}

/// The answer of a policy plugin.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PluginDecision {
    Overwrite(String),
    Skip(String),
}

/// What a policy is told about the job asking: the WIT record itself, so a
/// call lowers it without first copying its strings.
pub use bindings::ferry::plugin::types::JobContext;

/// `blob-info` lowered straight from a [`BlobMeta`]'s fields: the generated
/// record owns its strings, so each call first copied them on the host and
/// then again into the guest (host malloc/free was ~15% of a `decide`).
#[derive(ComponentType, Lower)]
#[component(record)]
struct BlobInfoRef<'a> {
    name: &'a str,
    size: u64,
    #[component(name = "last-modified-ns")]
    last_modified_ns: i64,
    etag: &'a str,
    #[component(name = "content-md5")]
    content_md5: Option<&'a [u8]>,
    #[component(name = "content-type")]
    content_type: Option<&'a str>,
    metadata: &'a [(String, String)],
}

/// `job-context`, borrowed likewise.
#[derive(ComponentType, Lower)]
#[component(record)]
struct JobContextRef<'a> {
    #[component(name = "job-id")]
    job_id: &'a str,
    attempt: u32,
    source: &'a str,
    destination: &'a str,
}

type DecideParams<'a> = (BlobInfoRef<'a>, BlobInfoRef<'a>, JobContextRef<'a>);

/// A configured, running instance and its `decide` export.
type Live = (Store<HostState>, OverwritePolicy, Func);

/// A policy plugin ready to instantiate (shared by all workers).
pub struct PolicyPlugin {
    loaded: LoadedPlugin,
    pre: OverwritePolicyPre<HostState>,
    /// `ferry:plugin/policy#decide`, called through [`BlobInfoRef`]s.
    decide: ComponentExportIndex,
    config: Vec<(String, String)>,
    /// Instances not in a call. Workers lease one per `decide` instead of
    /// owning one each: a run with 16 workers on 2 cores then makes about
    /// as many instances as calls ever overlap (2-3), not 16, and each
    /// stays warm in cache. Measured: half the plugin CPU of one instance
    /// per worker on a 10k-blob incremental run.
    idle: Mutex<Vec<Live>>,
}

impl PolicyPlugin {
    /// Checks the world and links the imports; a first instance is made and
    /// configured so a bad plugin or configuration fails before the job.
    pub fn new(
        loaded: LoadedPlugin,
        config: Vec<(String, String)>,
    ) -> Result<Arc<Self>, PluginError> {
        let pre = loaded.link("overwrite-policy", |linker| {
            OverwritePolicy::add_to_linker::<HostState, HasSelf<HostState>>(linker, |s| s)
        })?;
        let pre = OverwritePolicyPre::new(pre).map_err(|e| loaded.invalid(e))?;
        let decide = loaded
            .export_index(POLICY_INTERFACE, "decide")
            .ok_or_else(|| loaded.invalid(wasmtime::Error::msg("no decide export")))?;
        let plugin = Arc::new(PolicyPlugin {
            loaded,
            pre,
            decide,
            config,
            idle: Mutex::new(Vec::new()),
        });
        let first = plugin.start()?;
        // The borrowed records must match the WIT's: checked once here, so
        // each call may skip the check.
        first
            .2
            .typed::<DecideParams<'_>, (wt::Decision,)>(&first.0)
            .map_err(|e| plugin.loaded.invalid(e))?;
        plugin.give_back(first);
        Ok(plugin)
    }

    pub fn sha256(&self) -> &str {
        &self.loaded.sha256
    }

    /// A configured instance owned by its caller.
    pub fn instance(self: &Arc<Self>) -> Result<PolicyInstance, PluginError> {
        Ok(PolicyInstance {
            plugin: self.clone(),
            live: Some(self.start()?),
        })
    }

    /// Asks the plugin about a blob present at both ends, on an idle pooled
    /// instance (made when none is idle). An instance that trapped is
    /// dropped, not pooled.
    pub fn decide(
        &self,
        src: &BlobMeta,
        dst: &BlobMeta,
        ctx: &JobContext,
    ) -> Result<PluginDecision, PluginError> {
        let leased = self.idle.lock().ok().and_then(|mut idle| idle.pop());
        let mut live = match leased {
            Some(live) => live,
            None => self.start()?,
        };
        let decided = self.call(&mut live, src, dst, ctx);
        if decided.is_ok() {
            self.give_back(live);
        }
        decided
    }

    fn give_back(&self, live: Live) {
        if let Ok(mut idle) = self.idle.lock() {
            idle.push(live);
        }
    }

    /// Instantiates and configures.
    fn start(&self) -> Result<Live, PluginError> {
        let mut store = self.loaded.new_store(POLICY_FUEL);
        let name = self.loaded.name.to_string();
        let started = self
            .pre
            .instance_pre()
            .instantiate(&mut store)
            .and_then(|instance| {
                let bindings = OverwritePolicy::new(&mut store, &instance)?;
                let decide = instance
                    .get_func(&mut store, self.decide)
                    .ok_or_else(|| wasmtime::Error::msg("no decide export"))?;
                Ok((bindings, decide))
            });
        let (bindings, decide) = started.map_err(|e| {
            PluginError::Failed(
                name.clone(),
                format!("could not start: {}", describe(&e, &store)),
            )
        })?;
        arm(&mut store, POLICY_FUEL);
        match bindings
            .ferry_plugin_policy()
            .call_configure(&mut store, &self.config)
        {
            Ok(Ok(())) => Ok((store, bindings, decide)),
            Ok(Err(msg)) => Err(PluginError::Configure(msg, name)),
            Err(e) => Err(PluginError::Configure(describe(&e, &store), name)),
        }
    }

    /// One `decide` call; `Err` means the instance trapped and is unusable.
    fn call(
        &self,
        (store, _, decide): &mut Live,
        src: &BlobMeta,
        dst: &BlobMeta,
        ctx: &JobContext,
    ) -> Result<PluginDecision, PluginError> {
        arm(store, POLICY_FUEL);
        let ctx = JobContextRef {
            job_id: &ctx.job_id,
            attempt: ctx.attempt,
            source: &ctx.source,
            destination: &ctx.destination,
        };
        // SAFETY: `new` checked these parameter and result types against
        // the component's `decide` (every instance is of that component).
        let typed: TypedFunc<DecideParams<'_>, (wt::Decision,)> =
            unsafe { TypedFunc::new_unchecked(*decide) };
        match typed.call(&mut *store, (info(src), info(dst), ctx)) {
            Ok((wt::Decision::Overwrite(r),)) => Ok(PluginDecision::Overwrite(r)),
            Ok((wt::Decision::Skip(r),)) => Ok(PluginDecision::Skip(r)),
            Err(e) => Err(PluginError::Failed(
                self.loaded.name.to_string(),
                describe(&e, store),
            )),
        }
    }
}

/// An instance owned by one caller (a dry run, a benchmark thread).
pub struct PolicyInstance {
    plugin: Arc<PolicyPlugin>,
    live: Option<Live>,
}

impl PolicyInstance {
    /// Asks the plugin about a blob present at both ends. After a trap the
    /// instance is dropped; the next call makes a fresh one.
    pub fn decide(
        &mut self,
        src: &BlobMeta,
        dst: &BlobMeta,
        ctx: &JobContext,
    ) -> Result<PluginDecision, PluginError> {
        let mut live = match self.live.take() {
            Some(live) => live,
            None => self.plugin.start()?,
        };
        let decided = self.plugin.call(&mut live, src, dst, ctx);
        if decided.is_ok() {
            self.live = Some(live);
        }
        decided
    }
}

fn info(m: &BlobMeta) -> BlobInfoRef<'_> {
    let props = m.props.as_deref();
    BlobInfoRef {
        name: &m.name,
        size: m.size,
        last_modified_ns: m.modified.timestamp_nanos_opt().unwrap_or(i64::MAX),
        etag: &m.etag,
        content_md5: m.md5.as_ref().map(|d| d.as_slice()),
        content_type: props.and_then(|p| p.content_type.as_deref()),
        metadata: props.map_or(&[], |p| p.metadata.as_slice()),
    }
}
