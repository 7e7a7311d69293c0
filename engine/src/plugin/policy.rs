//! Overwrite-policy plugins: one instance per worker, so `decide` runs in
//! parallel; an instance that trapped is dropped and made again.

use std::sync::Arc;

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

/// What a policy is told about the job asking.
#[derive(Debug, Clone)]
pub struct JobContext {
    pub job_id: String,
    pub attempt: u32,
    pub source: String,
    pub destination: String,
}

/// A policy plugin ready to instantiate (shared by all workers).
pub struct PolicyPlugin {
    loaded: LoadedPlugin,
    pre: OverwritePolicyPre<HostState>,
    config: Vec<(String, String)>,
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
        });
        plugin.instance()?;
        Ok(plugin)
    }

    pub fn sha256(&self) -> &str {
        &self.loaded.sha256
    }

    /// A configured instance for one worker.
    pub fn instance(self: &Arc<Self>) -> Result<PolicyInstance, PluginError> {
        let mut inst = PolicyInstance {
            plugin: self.clone(),
            live: None,
        };
        inst.ensure()?;
        Ok(inst)
    }
}

/// One worker's instance.
pub struct PolicyInstance {
    plugin: Arc<PolicyPlugin>,
    live: Option<(Store<HostState>, OverwritePolicy)>,
}

impl PolicyInstance {
    fn ensure(&mut self) -> Result<(), PluginError> {
        if self.live.is_some() {
            return Ok(());
        }
        let p = &self.plugin;
        let mut store = p.loaded.new_store(POLICY_FUEL);
        let name = p.loaded.name.to_string();
        let bindings = p.pre.instantiate(&mut store).map_err(|e| {
            PluginError::Failed(
                name.clone(),
                format!("could not start: {}", describe(&e, &store)),
            )
        })?;
        arm(&mut store, POLICY_FUEL);
        match bindings
            .ferry_plugin_policy()
            .call_configure(&mut store, &p.config)
        {
            Ok(Ok(())) => {}
            Ok(Err(msg)) => return Err(PluginError::Configure(msg, name)),
            Err(e) => return Err(PluginError::Configure(describe(&e, &store), name)),
        }
        self.live = Some((store, bindings));
        Ok(())
    }

    /// Asks the plugin about a blob present at both ends. After a trap the
    /// instance is dropped; the next call makes a fresh one.
    pub fn decide(
        &mut self,
        src: &BlobMeta,
        dst: &BlobMeta,
        ctx: &JobContext,
    ) -> Result<PluginDecision, PluginError> {
        self.ensure()?;
        let name = self.plugin.loaded.name.to_string();
        let Some((store, bindings)) = self.live.as_mut() else {
            return Err(PluginError::Failed(name, "has no instance".into()));
        };
        arm(store, POLICY_FUEL);
        let ctx = wt::JobContext {
            job_id: ctx.job_id.clone(),
            attempt: ctx.attempt,
            source: ctx.source.clone(),
            destination: ctx.destination.clone(),
        };
        match bindings
            .ferry_plugin_policy()
            .call_decide(&mut *store, &info(src), &info(dst), &ctx)
        {
            Ok(wt::Decision::Overwrite(r)) => Ok(PluginDecision::Overwrite(r)),
            Ok(wt::Decision::Skip(r)) => Ok(PluginDecision::Skip(r)),
            Err(e) => {
                let why = describe(&e, store);
                self.live = None;
                Err(PluginError::Failed(name, why))
            }
        }
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
