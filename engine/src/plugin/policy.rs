//! Overwrite-policy plugins: a pool of instances leased per call, so `decide` runs in
//! parallel; an instance that trapped is dropped and made again.

use std::sync::{Arc, Mutex};

use wasmtime::component::HasSelf;
use wasmtime::Store;

use super::{arm, describe, HostState, LoadedPlugin, PluginError, POLICY_FUEL};
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

/// A configured, running instance.
type Live = (Store<HostState>, OverwritePolicy);

/// A policy plugin ready to instantiate (shared by all workers).
pub struct PolicyPlugin {
    loaded: LoadedPlugin,
    pre: OverwritePolicyPre<HostState>,
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
        let plugin = Arc::new(PolicyPlugin {
            loaded,
            pre,
            config,
            idle: Mutex::new(Vec::new()),
        });
        let first = plugin.start()?;
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
        let bindings = self.pre.instantiate(&mut store).map_err(|e| {
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
            Ok(Ok(())) => Ok((store, bindings)),
            Ok(Err(msg)) => Err(PluginError::Configure(msg, name)),
            Err(e) => Err(PluginError::Configure(describe(&e, &store), name)),
        }
    }

    /// One `decide` call; `Err` means the instance trapped and is unusable.
    fn call(
        &self,
        (store, bindings): &mut Live,
        src: &BlobMeta,
        dst: &BlobMeta,
        ctx: &JobContext,
    ) -> Result<PluginDecision, PluginError> {
        arm(store, POLICY_FUEL);
        match bindings
            .ferry_plugin_policy()
            .call_decide(&mut *store, &info(src), &info(dst), ctx)
        {
            Ok(wt::Decision::Overwrite(r)) => Ok(PluginDecision::Overwrite(r)),
            Ok(wt::Decision::Skip(r)) => Ok(PluginDecision::Skip(r)),
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

fn info(m: &BlobMeta) -> wt::BlobInfo {
    let props = m.props.as_deref();
    wt::BlobInfo {
        name: m.name.clone(),
        size: m.size,
        last_modified_ns: m.modified.timestamp_nanos_opt().unwrap_or(i64::MAX),
        etag: m.etag.clone(),
        content_md5: m.md5.map(|d| d.to_vec()),
        content_type: props.and_then(|p| p.content_type.clone()),
        metadata: props.map(|p| p.metadata.clone()).unwrap_or_default(),
    }
}
